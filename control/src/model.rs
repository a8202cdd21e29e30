//! Desired-state types shared by the agent's config file and (later) the
//! gateway's config push. Plain data with serde; no behaviour beyond parsing
//! MAC addresses. Validation lives in [`mod@crate::validate`].

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Everything one instance's datapath needs, as the gateway would push it.
///
/// `Default` is the empty config (tep_id 0, which validation refuses):
/// a literal names what it sets and ends in `..InstanceConfig::default()`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceConfig {
    /// Monotonic version of this desired state (0 for a hand-written file).
    #[serde(default)]
    pub version: u64,
    /// This instance's tunnel-endpoint id (31 bits), carried in the VMware
    /// Geneve option of every packet it sends.
    pub tep_id: u32,
    /// Logical switches this instance takes part in (its own and, for
    /// distributed routing, every switch its routers attach).
    #[serde(default)]
    pub switches: Vec<LogicalSwitch>,
    /// Distributed logical routers.
    #[serde(default)]
    pub routers: Vec<LogicalRouter>,
    /// This instance's own port (absent: micro-segmentation mode).
    pub port: Option<LocalPort>,
    /// Ports on other instances, reachable through their tunnel endpoints.
    #[serde(default)]
    pub remote_ports: Vec<RemotePort>,
    /// Distributed firewall for this instance (absent: not filtered; the
    /// gateway always sends one, `allow_all` when it has no rules).
    #[serde(default)]
    pub firewall: Option<crate::firewall::FirewallConfig>,
    /// The north-south edge this instance's tier-1 routers send packets for
    /// destinations outside the overlay to (absent: they are dropped
    /// `no_route`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edge: Option<EdgeLink>,
    /// Only on the edge itself: the tier-0 router it runs (uplink,
    /// routes, SNAT, public IPs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier0: Option<Box<Tier0>>,
    /// Virtual servers this datapath balances: on an instance, those
    /// reachable from the overlay (balanced at the sending agent); on the
    /// edge, those on the uplink's addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub load_balancers: Vec<crate::lb::LbService>,
}

/// How an instance reaches the edge: the tier-0's tunnel endpoint and its
/// side of the transit segment between the tier-1 routers and the tier-0.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeLink {
    /// Underlay IP of the edge's tunnel endpoint (on the downlink).
    pub tep_ip: Ipv4Addr,
    /// The edge's tunnel-endpoint id.
    pub tep_id: u32,
    /// VNI of the transit segment (tier-1 to tier-0).
    pub transit_vni: u32,
    /// The tier-0's MAC on the transit segment.
    pub mac: MacAddr,
    /// Tier-1 routers (names in `routers`) attached to the tier-0: their
    /// packets for non-overlay destinations go to the edge.
    pub tier1s: Vec<String>,
}

/// The tier-0 router on the edge.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tier0 {
    pub name: String,
    /// The tier-0's MAC on the transit segment and on the uplink.
    pub mac: MacAddr,
    /// VNI of the transit segment (tier-1 to tier-0).
    pub transit_vni: u32,
    /// Tier-1 routers (names in `routers`) attached to this tier-0.
    pub tier1s: Vec<String>,
    pub uplink: Uplink,
    /// Static routes; each next hop is on the uplink's subnet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<StaticRoute>,
    #[serde(default)]
    pub snat: Snat,
    /// 1:1 NAT of instances tagged `nsx:publicip`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub public_ips: Vec<PublicIp>,
    /// Whether overlay traffic routed out of the downlink (to hosts on the
    /// edge's underlay subnet that run no agent) is source-NATed to the
    /// edge's underlay address, with ports from
    /// [`Tier0::DOWNLINK_NAT_PORTS`]. Default: on (the underlay hosts need
    /// no route to the overlay, and only answers to what the overlay opened
    /// come back in). Off: they see the instances' overlay addresses, and
    /// may reach the instances themselves with a route to the overlay
    /// subnets via the edge's underlay address.
    #[serde(
        default = "Tier0::default_underlay_snat",
        skip_serializing_if = "is_true"
    )]
    pub underlay_snat: bool,
    /// The source address of the edge's health checks (the checkers run
    /// in a namespace of the edge host whose only interface is a port of
    /// the tier-0). Real servers answer it through their tier-1 and the
    /// tier-0, so it must be outside every overlay subnet, the uplink's
    /// and the underlay's; their firewalls must let it in.
    #[serde(
        default = "Tier0::default_health_check_ip",
        skip_serializing_if = "Tier0::is_default_health_check_ip"
    )]
    pub health_check_ip: Ipv4Addr,
    /// Every virtual server with health checkers, wherever it is
    /// balanced. The edge runs the checkers (from `health_check_ip`) and
    /// reports their verdicts to the gateway, which gives them to every
    /// datapath balancing the server.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub health_checks: Vec<crate::lb::VirtualServer>,
}

impl Tier0 {
    /// [`Tier0::health_check_ip`] when absent: the first address of
    /// RFC 6598's shared space, which NSX also uses for its tier-0/tier-1
    /// links.
    pub const DEFAULT_HEALTH_CHECK_IP: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 1);

    fn default_health_check_ip() -> Ipv4Addr {
        Tier0::DEFAULT_HEALTH_CHECK_IP
    }

    fn is_default_health_check_ip(ip: &Ipv4Addr) -> bool {
        *ip == Tier0::DEFAULT_HEALTH_CHECK_IP
    }

    /// The downlink SNAT's ports (inclusive): above Linux's ephemeral range
    /// (`net.ipv4.ip_local_port_range`, 32768-60999 by default), so the
    /// edge host's own connections from its underlay address never take
    /// one; the agent drops these ports in the kernel's input path so the
    /// kernel does not answer what is the datapath's.
    pub const DOWNLINK_NAT_PORTS: (u16, u16) = (61000, 65535);

    fn default_underlay_snat() -> bool {
        true
    }

    /// The addresses the uplink's SNAT takes ([`Snat::pool_or`] with the
    /// uplink's primary address).
    pub fn snat_pool(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.snat.pool_or(self.uplink.address.addr())
    }
}

fn is_true(b: &bool) -> bool {
    *b
}

/// The tier-0's uplink: plain IP toward the cloud's NAT and the internet.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Uplink {
    /// The uplink's primary address, with its subnet.
    pub address: ipnet::Ipv4Net,
    /// Secondary addresses on the uplink's subnet: the cloud maps elastic
    /// IPs to these (public IPs and SNAT pool addresses come from them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secondary: Vec<Ipv4Addr>,
    /// Next hop of the default route (absent: no default route).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv4Addr>,
    /// The uplink's IP MTU (default 1500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u16>,
}

impl Uplink {
    pub const DEFAULT_MTU: u16 = 1500;
    pub const MIN_MTU: u16 = 576;

    /// The uplink's addresses: the primary, then the secondaries.
    pub fn addrs(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        std::iter::once(self.address.addr()).chain(self.secondary.iter().copied())
    }
}

/// Source NAT of overlay traffic leaving by the uplink.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Snat {
    /// SNAT addresses (the uplink's primary or secondary addresses);
    /// empty: the uplink's primary address.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pool: Vec<Ipv4Addr>,
    /// Inbound filtering (RFC 4787 section 5); mapping is always
    /// endpoint-independent.
    pub filtering: NatFiltering,
    /// External ports handed out (inclusive).
    pub port_min: u16,
    pub port_max: u16,
    /// Idle timeouts, seconds.
    pub timeouts: NatTimeouts,
    /// Most NAT sessions at once.
    pub max_sessions: u32,
}

impl Default for Snat {
    fn default() -> Snat {
        Snat {
            pool: Vec::new(),
            filtering: NatFiltering::default(),
            port_min: 1024,
            port_max: 65535,
            timeouts: NatTimeouts::default(),
            max_sessions: Snat::DEFAULT_MAX_SESSIONS,
        }
    }
}

impl Snat {
    pub const DEFAULT_MAX_SESSIONS: u32 = 1 << 18;
    /// Most sessions a config may ask for.
    pub const MAX_SESSIONS: u32 = 1 << 22;

    /// The addresses SNAT takes: the pool, or `primary` (the uplink's
    /// primary address) when the pool is empty.
    pub fn pool_or(&self, primary: Ipv4Addr) -> impl Iterator<Item = Ipv4Addr> + '_ {
        let primary = self.pool.is_empty().then_some(primary);
        self.pool.iter().copied().chain(primary)
    }
}

/// RFC 4787 section 5 filtering behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NatFiltering {
    /// Any remote host may send to a live mapping (RFC 4787 REQ-8's
    /// recommendation for transparency).
    #[default]
    EndpointIndependent,
    /// Only remote addresses the mapping has sent to.
    AddressDependent,
}

/// Per-state idle timeouts of NAT sessions, seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatTimeouts {
    /// RFC 5382 REQ-5: at least 2 h 4 min.
    pub tcp_established: u32,
    /// SYN sent, or FIN/RST seen: RFC 5382 REQ-5, at least 4 min.
    pub tcp_transitory: u32,
    /// RFC 4787 REQ-5: at least 2 min, 5 min recommended.
    pub udp: u32,
    /// RFC 5508 REQ-1: at least 60 s.
    pub icmp: u32,
}

impl Default for NatTimeouts {
    fn default() -> NatTimeouts {
        NatTimeouts {
            tcp_established: 7440,
            tcp_transitory: 240,
            udp: 300,
            icmp: 60,
        }
    }
}

/// A public IP: the cloud maps an elastic IP to `public_ip` (a secondary
/// address of the uplink), and the tier-0 translates it 1:1 to the
/// instance's overlay address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublicIp {
    pub public_ip: Ipv4Addr,
    /// The instance's overlay address (a port on a tier-1's switch).
    pub private_ip: Ipv4Addr,
    /// Whose it is (the instance's name), for the operator.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub instance: String,
}

/// A logical switch: one L2 broadcast domain, one VNI.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogicalSwitch {
    pub name: String,
    /// 24-bit Geneve virtual network identifier.
    pub vni: u32,
    pub subnet: Ipv4Net,
    /// The address of the router port on this switch (the instances' default gateway).
    pub gateway_ip: Ipv4Addr,
    /// What the switch's DHCP server hands out besides the address (every
    /// agent answers DHCP on its own port; absent: defaults).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhcp: Option<DhcpOptions>,
}

/// DHCP options of a logical switch (RFC 2132; 121 is RFC 3442).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DhcpOptions {
    /// Option 6.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_servers: Vec<Ipv4Addr>,
    /// Option 15.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain_name: Option<String>,
    /// Option 51, seconds (default [`DhcpOptions::DEFAULT_LEASE_SECS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_time: Option<u32>,
    /// Option 121: classless static routes (the default route via the
    /// switch's gateway is added to them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<StaticRoute>,
}

impl DhcpOptions {
    /// A day, as NSX's segment DHCP.
    pub const DEFAULT_LEASE_SECS: u32 = 86_400;
    /// Shortest lease accepted.
    pub const MIN_LEASE_SECS: u32 = 60;
}

/// A distributed router: attached to switches, the same virtual MAC on every agent.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogicalRouter {
    pub name: String,
    pub mac: MacAddr,
    /// Names of the attached switches; the router owns each switch's `gateway_ip`.
    pub switches: Vec<String>,
    #[serde(default)]
    pub routes: Vec<StaticRoute>,
}

/// A static route of a logical router; the next hop must sit on an attached switch.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticRoute {
    pub prefix: Ipv4Net,
    pub next_hop: Ipv4Addr,
}

/// This instance's port on a logical switch.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalPort {
    pub switch: String,
    pub ip: Ipv4Addr,
    /// The port's MAC. `nsx-eth0` takes the NIC's MAC; when this is absent
    /// the agent fills in the NIC's MAC.
    #[serde(default)]
    pub mac: Option<MacAddr>,
}

/// A port on another instance.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemotePort {
    pub switch: String,
    pub ip: Ipv4Addr,
    pub mac: MacAddr,
    /// Underlay IP of the instance's tunnel endpoint.
    pub tep_ip: Ipv4Addr,
    /// That endpoint's tunnel-endpoint id.
    pub tep_id: u32,
}

/// An Ethernet MAC address, written `aa:bb:cc:dd:ee:ff` in files.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);

    /// True for group (multicast or broadcast) addresses.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 1 == 1
    }

    pub fn is_zero(&self) -> bool {
        self.0 == [0; 6]
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why a MAC address string did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid MAC address {0:?}: expected six hex bytes like 02:50:56:00:00:01")]
pub struct MacParseError(pub String);

impl FromStr for MacAddr {
    type Err = MacParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for byte in out.iter_mut() {
            let part = parts.next().ok_or_else(|| MacParseError(s.to_string()))?;
            if part.len() != 2 {
                return Err(MacParseError(s.to_string()));
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| MacParseError(s.to_string()))?;
        }
        if parts.next().is_some() {
            return Err(MacParseError(s.to_string()));
        }
        Ok(MacAddr(out))
    }
}

impl Serialize for MacAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_round_trip() {
        let m: MacAddr = "06:17:1e:54:96:3a".parse().unwrap();
        assert_eq!(m.to_string(), "06:17:1e:54:96:3a");
        assert!(!m.is_multicast());
        assert!(MacAddr::BROADCAST.is_multicast());
    }

    #[test]
    fn mac_rejects_garbage() {
        for bad in [
            "",
            "06:17:1e:54:96",
            "06:17:1e:54:96:3a:00",
            "0g:17:1e:54:96:3a",
            "6:17:1e:54:96:3a0",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
    }
}
