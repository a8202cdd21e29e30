//! Desired-state types shared by the agent's config file and (later) the
//! gateway's config push. Plain data with serde; no behaviour beyond parsing
//! MAC addresses. Validation lives in [`mod@crate::validate`].

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Everything one instance's datapath needs, as the gateway would push it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
