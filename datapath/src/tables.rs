//! Forwarding tables compiled from a validated [`control::InstanceConfig`].
//!
//! A [`Tables`] is immutable once built: the agent builds a new one off the
//! packet path and swaps it in whole, so the pipeline never sees a partly
//! applied config. Indices (`SwitchIdx`, `TepIdx`) are positions in this
//! snapshot's vectors and mean nothing across snapshots.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::Ipv4Addr;
use std::sync::Arc;

use control::{InstanceConfig, MacAddr};
use ipnet::Ipv4Net;

pub type SwitchIdx = u16;
pub type RouterIdx = u16;
pub type TepIdx = u16;

/// Most endpoints a broadcast is replicated to (head-end replication bound).
pub const MAX_FLOOD: usize = 64;

/// Host facts the config does not carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalHost {
    /// This instance's underlay (tunnel source) address.
    pub underlay_ip: Ipv4Addr,
    /// MAC of the local port (the NIC's MAC unless the config sets one).
    pub port_mac: MacAddr,
    /// Largest IPv4 packet the overlay carries (underlay MTU -
    /// [`geneve::outer::MTU_OVERHEAD`], 58).
    pub overlay_mtu: u16,
    /// The I/O shell sends through a kernel UDP socket, which writes the
    /// outer IPv4/UDP headers and the UDP checksum itself: skip computing it.
    pub kernel_udp: bool,
    /// Prefix length of `underlay_ip`'s subnet (the edge's downlink: its
    /// connected subnet is routed by the tier-0).
    pub underlay_prefix_len: u8,
    /// MAC of the underlay interface (the bridge, which took the NIC's):
    /// the edge's downlink frames go out from it.
    pub underlay_mac: MacAddr,
}

/// Where a MAC on a switch lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// The local port.
    Local,
    /// Behind a remote tunnel endpoint.
    Remote(TepIdx),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Switch {
    pub name: String,
    pub vni: u32,
    pub subnet: Ipv4Net,
    pub gateway_ip: Ipv4Addr,
    pub router: Option<RouterIdx>,
    /// Distinct remote endpoints with a port on this switch (flood list).
    pub flood: Vec<TepIdx>,
    /// What the switch's DHCP server hands out besides the address.
    pub dhcp: DhcpServer,
}

/// A switch's DHCP options, compiled (`layer::dhcp`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpServer {
    pub lease_secs: u32,
    pub dns: Vec<Ipv4Addr>,
    pub domain: Option<String>,
    /// Option 121: (destination, prefix length, next hop).
    pub routes: Vec<(Ipv4Addr, u8, Ipv4Addr)>,
}

impl DhcpServer {
    fn new(o: Option<&control::DhcpOptions>) -> DhcpServer {
        let o = o.cloned().unwrap_or_default();
        DhcpServer {
            lease_secs: o
                .lease_time
                .unwrap_or(control::DhcpOptions::DEFAULT_LEASE_SECS),
            dns: o.dns_servers,
            domain: o.domain_name,
            routes: o
                .routes
                .iter()
                .map(|r| (r.prefix.network(), r.prefix.prefix_len(), r.next_hop))
                .collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub prefix: Ipv4Net,
    pub switch: SwitchIdx,
    /// `None` for a connected subnet (next hop = destination).
    pub next_hop: Option<Ipv4Addr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Router {
    pub name: String,
    pub mac: MacAddr,
    pub switches: Vec<SwitchIdx>,
    /// Connected subnets and static routes, longest prefix first.
    pub routes: Vec<Route>,
    /// A tier-1 attached to the tier-0: what no route covers goes to the
    /// edge ([`Tables::edge`]).
    pub to_edge: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tep {
    pub ip: Ipv4Addr,
    pub id: u32,
    /// The endpoint is a north-south edge: besides its own ports' addresses
    /// it may carry routed frames from any *outside* source (an inner IPv4
    /// source no port on the router's switches owns). The ingress source
    /// guard (`layer::source_guard`) honours it; an address some port owns
    /// must still come from that port's endpoint. Set for the endpoint of
    /// the config's [`control::EdgeLink`].
    pub edge: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Port {
    pub switch: SwitchIdx,
    pub ip: Ipv4Addr,
    pub mac: MacAddr,
}

/// A neighbour on a switch: an address and where its MAC lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neighbor {
    pub mac: MacAddr,
    pub at: Location,
}

/// The compiled, immutable forwarding state.
#[derive(Debug, Clone)]
pub struct Tables {
    pub version: u64,
    pub tep_id: u32,
    pub host: LocalHost,
    pub port: Option<Port>,
    pub switches: Vec<Switch>,
    pub routers: Vec<Router>,
    pub teps: Vec<Tep>,
    pub(crate) vni_to_switch: FxMap<u32, SwitchIdx>,
    pub(crate) tep_by_ip: FxMap<Ipv4Addr, TepIdx>,
    pub(crate) macs: FxMap<(SwitchIdx, MacAddr), Location>,
    pub(crate) neighbors: FxMap<(SwitchIdx, Ipv4Addr), Neighbor>,
    /// The same ports by router: (router, address) for every port on a
    /// switch attached to a router, where a routed frame from that address
    /// comes from (the ingress source guard).
    pub(crate) routed_sources: FxMap<(RouterIdx, Ipv4Addr), Neighbor>,
    /// The compiled firewall policy (`None`: the config has no firewall
    /// section and traffic is not filtered).
    pub firewall: Option<Arc<firewall::Policy>>,
    /// An instance's way to the edge (tier-1 routers' default route).
    pub edge: Option<EdgeRoute>,
    /// On the edge: its tier-0 router.
    pub tier0: Option<Tier0>,
    /// The virtual servers this datapath balances (shared with the
    /// balancer, which swaps them in when the pointer changes).
    pub lb: Arc<[control::lb::LbService]>,
    /// Their virtual addresses, answered in ARP with the router's MAC on
    /// a routed switch whose subnet holds them.
    pub(crate) vips: FxMap<Ipv4Addr, ()>,
}

/// Where an instance's tier-1 routers send what no route of theirs covers:
/// the transit segment to the tier-0 on the edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EdgeRoute {
    /// The edge's endpoint (marked [`Tep::edge`]).
    pub tep: TepIdx,
    pub transit_vni: u32,
    /// The tier-0's MAC on the transit segment.
    pub mac: MacAddr,
}

/// What a tier-0 route leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum T0Hop {
    /// Out of the uplink to this next hop (`None`: the destination itself,
    /// the uplink's connected subnet).
    Uplink(Option<Ipv4Addr>),
    /// Into the overlay, through tier-1 router `RouterIdx` (a connected
    /// subnet of one of its switches).
    Tier1(RouterIdx),
    /// Out of the downlink (the edge's underlay interface) to this next
    /// hop (`None`: the destination itself). Only the connected underlay
    /// subnet is routed there: there are no static routes via the downlink.
    Downlink(Option<Ipv4Addr>),
    /// Out of the health-check port to the checkers (the tier-0's
    /// `health_check_ip`, a /32).
    Probe,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct T0Route {
    pub prefix: Ipv4Net,
    pub hop: T0Hop,
    /// Where the route came from, for `trace` and the API.
    pub origin: T0Origin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum T0Origin {
    Connected,
    Static,
    Default,
    Tier1,
    /// The health checkers' address.
    HealthCheck,
}

/// The edge's tier-0 router, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tier0 {
    pub name: String,
    /// MAC on the transit segment.
    pub mac: MacAddr,
    /// MAC on the uplink (the uplink NIC's own: a cloud network only
    /// accepts frames from the MAC it gave the NIC).
    pub uplink_mac: MacAddr,
    pub transit_vni: u32,
    /// The uplink's subnet and primary address.
    pub uplink: Ipv4Net,
    /// Every address the uplink answers ARP for: the primary, then the
    /// secondaries.
    pub addresses: Vec<Ipv4Addr>,
    pub uplink_mtu: u16,
    /// The downlink: the edge's underlay address with its subnet, the
    /// bridge's MAC and the underlay MTU.
    pub downlink: Ipv4Net,
    pub downlink_mac: MacAddr,
    pub downlink_mtu: u16,
    /// Overlay traffic out of the downlink is source-NATed to the
    /// downlink's address ([`control::Tier0::underlay_snat`]).
    pub underlay_snat: bool,
    /// Longest prefix first.
    pub routes: Vec<T0Route>,
    /// The attached tier-1 routers.
    pub tier1s: Vec<RouterIdx>,
    /// The NAT's configuration (pool, ports, filtering, timeouts, public
    /// IPs as static 1:1 entries), checked when the tables are built.
    pub nat: nat::NatConfig,
    /// Sessions the NAT holds at most.
    pub nat_capacity: usize,
    /// With `underlay_snat`: the downlink's NAT (the same engine, its own
    /// instance: the underlay address, [`control::Tier0::DOWNLINK_NAT_PORTS`],
    /// the uplink SNAT's filtering and timeouts, no public IPs).
    pub downlink_nat: Option<nat::NatConfig>,
    /// Sessions the downlink's NAT holds at most.
    pub downlink_nat_capacity: usize,
    /// The health checkers' address, behind the health-check port.
    pub health_check_ip: Ipv4Addr,
}

/// Most sessions of the downlink's NAT (at most the uplink's): its TCP and
/// UDP mappings are bounded by the 4536 ports of
/// [`control::Tier0::DOWNLINK_NAT_PORTS`] anyway.
pub const DOWNLINK_NAT_SESSIONS: usize = 1 << 14;

impl Tier0 {
    /// The uplink's primary address: the source of the tier-0's own ICMP.
    pub fn primary(&self) -> Ipv4Addr {
        self.uplink.addr()
    }

    /// Whether `ip` is a public IP (a static 1:1 entry of the NAT).
    pub fn is_public(&self, ip: Ipv4Addr) -> bool {
        self.nat.statics.iter().any(|s| s.public == ip)
    }

    pub fn owns(&self, ip: Ipv4Addr) -> bool {
        self.addresses.contains(&ip)
    }

    /// The downlink's (underlay) address: the source of the downlink's ARP
    /// and of its SNAT.
    pub fn downlink_ip(&self) -> Ipv4Addr {
        self.downlink.addr()
    }

    /// The overlay subnets behind the tier-0 (its tier-1s' switches).
    pub fn overlay_subnets(&self) -> impl Iterator<Item = Ipv4Net> + '_ {
        self.routes
            .iter()
            .filter(|r| matches!(r.hop, T0Hop::Tier1(_)))
            .map(|r| r.prefix)
    }

    /// Longest-prefix match.
    pub fn route(&self, dst: Ipv4Addr) -> Option<&T0Route> {
        self.routes.iter().find(|r| r.prefix.contains(&dst))
    }

    /// The tier-1 router whose MAC is `mac`.
    pub fn tier1_with_mac(&self, t: &Tables, mac: MacAddr) -> Option<RouterIdx> {
        self.tier1s
            .iter()
            .copied()
            .find(|&ri| t.routers.get(usize::from(ri)).is_some_and(|r| r.mac == mac))
    }
}

/// Why a config could not be compiled (it should have failed validation).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TablesError {
    #[error("config is invalid: {0}")]
    Invalid(#[from] control::Problems),
    #[error("firewall rules do not compile: {0}")]
    Firewall(#[from] firewall::classify::CompileError),
    #[error("tier0 NAT: {0}")]
    Nat(#[from] nat::ConfigError),
    #[error("load balancer: {0}")]
    Lb(#[from] lb::engine::Error),
    #[error("too many {what} ({count}; at most {max})")]
    TooMany {
        what: &'static str,
        count: usize,
        max: usize,
    },
}

impl Tables {
    /// Validates and compiles `cfg` for this host.
    pub fn build(cfg: &InstanceConfig, host: LocalHost) -> Result<Tables, TablesError> {
        control::validate(cfg)?;
        for (what, count) in [
            ("switches", cfg.switches.len()),
            ("routers", cfg.routers.len()),
            ("remote ports", cfg.remote_ports.len()),
        ] {
            if count > usize::from(u16::MAX) {
                return Err(TablesError::TooMany {
                    what,
                    count,
                    max: usize::from(u16::MAX),
                });
            }
        }
        // The counts are checked above, so numbering with the index types
        // covers every switch, router and tunnel endpoint.
        let sw_idx: HashMap<&str, SwitchIdx> = cfg
            .switches
            .iter()
            .zip(0..=SwitchIdx::MAX)
            .map(|(s, i)| (s.name.as_str(), i))
            .collect();
        let mut switches: Vec<Switch> = cfg
            .switches
            .iter()
            .map(|s| Switch {
                name: s.name.clone(),
                vni: s.vni,
                subnet: s.subnet,
                gateway_ip: s.gateway_ip,
                router: None,
                flood: Vec::new(),
                dhcp: DhcpServer::new(s.dhcp.as_ref()),
            })
            .collect();
        let vni_to_switch = switches
            .iter()
            .zip(0..=SwitchIdx::MAX)
            .map(|(s, i)| (s.vni, i))
            .collect();

        let mut routers = Vec::with_capacity(cfg.routers.len());
        for (r, ri) in cfg.routers.iter().zip(0..=RouterIdx::MAX) {
            let attached: Vec<SwitchIdx> = r
                .switches
                .iter()
                .filter_map(|n| sw_idx.get(n.as_str()).copied())
                .collect();
            let mut routes: Vec<Route> = attached
                .iter()
                .map(|&si| Route {
                    prefix: switches[usize::from(si)].subnet,
                    switch: si,
                    next_hop: None,
                })
                .collect();
            for sr in &r.routes {
                // Validation guarantees the next hop is on an attached switch.
                if let Some(&si) = attached
                    .iter()
                    .find(|&&si| switches[usize::from(si)].subnet.contains(&sr.next_hop))
                {
                    routes.push(Route {
                        prefix: sr.prefix,
                        switch: si,
                        next_hop: Some(sr.next_hop),
                    });
                }
            }
            // Longest prefix first; connected before static on a tie (stable sort).
            routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.prefix_len()));
            for &si in &attached {
                switches[usize::from(si)].router = Some(ri);
            }
            routers.push(Router {
                name: r.name.clone(),
                mac: r.mac,
                switches: attached,
                routes,
                to_edge: false,
            });
        }

        let mut teps: Vec<Tep> = Vec::new();
        let mut tep_by_ip: FxMap<Ipv4Addr, TepIdx> = FxMap::default();
        let mut macs: FxMap<(SwitchIdx, MacAddr), Location> = FxMap::default();
        let mut neighbors: FxMap<(SwitchIdx, Ipv4Addr), Neighbor> = FxMap::default();

        let port = cfg.port.as_ref().and_then(|p| {
            let si = *sw_idx.get(p.switch.as_str())?;
            Some(Port {
                switch: si,
                ip: p.ip,
                mac: p.mac.unwrap_or(host.port_mac),
            })
        });
        if let Some(p) = port {
            macs.insert((p.switch, p.mac), Location::Local);
            neighbors.insert(
                (p.switch, p.ip),
                Neighbor {
                    mac: p.mac,
                    at: Location::Local,
                },
            );
        }

        for rp in &cfg.remote_ports {
            let Some(&si) = sw_idx.get(rp.switch.as_str()) else {
                continue;
            };
            let ti = match tep_by_ip.get(&rp.tep_ip) {
                Some(&ti) => ti,
                None => {
                    // At most one endpoint per remote port (counted above).
                    let ti = TepIdx::try_from(teps.len()).map_err(|_| TablesError::TooMany {
                        what: "tunnel endpoints",
                        count: teps.len() + 1,
                        max: usize::from(TepIdx::MAX),
                    })?;
                    teps.push(Tep {
                        ip: rp.tep_ip,
                        id: rp.tep_id,
                        edge: false,
                    });
                    tep_by_ip.insert(rp.tep_ip, ti);
                    ti
                }
            };
            let at = Location::Remote(ti);
            macs.insert((si, rp.mac), at);
            neighbors.insert((si, rp.ip), Neighbor { mac: rp.mac, at });
            let flood = &mut switches[usize::from(si)].flood;
            if !flood.contains(&ti) && flood.len() < MAX_FLOOD {
                flood.push(ti);
            }
        }

        // Subnets of one router's switches do not overlap and every port is
        // inside its switch's subnet (validation), so an address is at most
        // one port per router.
        let routed_sources = neighbors
            .iter()
            .filter_map(|(&(si, ip), &n)| {
                let ri = switches.get(usize::from(si))?.router?;
                Some(((ri, ip), n))
            })
            .collect();

        let firewall = match &cfg.firewall {
            Some(fw) => Some(Arc::new(firewall::Policy::compile(fw)?)),
            None => None,
        };

        let router_idx = |name: &str| {
            cfg.routers
                .iter()
                .zip(0..=RouterIdx::MAX)
                .find(|(r, _)| r.name == name)
                .map(|(_, i)| i)
        };
        let edge = match &cfg.edge {
            Some(e) => {
                let tep = match tep_by_ip.get(&e.tep_ip) {
                    Some(&ti) => ti,
                    None => {
                        let ti =
                            TepIdx::try_from(teps.len()).map_err(|_| TablesError::TooMany {
                                what: "tunnel endpoints",
                                count: teps.len() + 1,
                                max: usize::from(TepIdx::MAX),
                            })?;
                        teps.push(Tep {
                            ip: e.tep_ip,
                            id: e.tep_id,
                            edge: true,
                        });
                        tep_by_ip.insert(e.tep_ip, ti);
                        ti
                    }
                };
                if let Some(tep) = teps.get_mut(usize::from(tep)) {
                    tep.edge = true;
                }
                for name in &e.tier1s {
                    if let Some(ri) = router_idx(name) {
                        routers[usize::from(ri)].to_edge = true;
                    }
                }
                Some(EdgeRoute {
                    tep,
                    transit_vni: e.transit_vni,
                    mac: e.mac,
                })
            }
            None => None,
        };
        let tier0 = match cfg.tier0.as_deref() {
            Some(t0) => Some(compile_tier0(t0, host, &routers, &switches, router_idx)?),
            None => None,
        };

        // What the balancer takes, checked here so its swap never fails.
        lb::engine::check_services(&cfg.load_balancers, tier0.as_ref().map(Tier0::primary))?;
        let lb: Arc<[control::lb::LbService]> = cfg.load_balancers.clone().into();
        let vips = lb.iter().map(|s| (s.vs.vip, ())).collect();
        Ok(Tables {
            lb,
            vips,
            firewall,
            version: cfg.version,
            tep_id: cfg.tep_id,
            host,
            port,
            switches,
            routers,
            teps,
            vni_to_switch,
            tep_by_ip,
            macs,
            neighbors,
            routed_sources,
            edge,
            tier0,
        })
    }

    /// True when `ip` is a virtual server's address here.
    pub fn is_vip(&self, ip: Ipv4Addr) -> bool {
        self.vips.contains_key(&ip)
    }

    pub fn switch_by_vni(&self, vni: u32) -> Option<SwitchIdx> {
        self.vni_to_switch.get(&vni).copied()
    }

    pub fn tep_by_ip(&self, ip: Ipv4Addr) -> Option<TepIdx> {
        self.tep_by_ip.get(&ip).copied()
    }

    pub fn lookup_mac(&self, switch: SwitchIdx, mac: MacAddr) -> Option<Location> {
        self.macs.get(&(switch, mac)).copied()
    }

    pub fn neighbor(&self, switch: SwitchIdx, ip: Ipv4Addr) -> Option<Neighbor> {
        self.neighbors.get(&(switch, ip)).copied()
    }

    /// The port owning `ip` on one of router `router`'s switches: where a
    /// routed frame from `ip` was sent from.
    pub fn routed_source(&self, router: RouterIdx, ip: Ipv4Addr) -> Option<Neighbor> {
        self.routed_sources.get(&(router, ip)).copied()
    }

    /// The router attached to `switch` if `mac` is its MAC (the source MAC
    /// of a frame routed by the sender's distributed router).
    pub fn router_with_mac(&self, switch: SwitchIdx, mac: MacAddr) -> Option<RouterIdx> {
        let ri = self.switches.get(usize::from(switch))?.router?;
        (self.routers.get(usize::from(ri))?.mac == mac).then_some(ri)
    }

    /// The router attached to `switch`, if any.
    pub fn router_of(&self, switch: SwitchIdx) -> Option<&Router> {
        let ri = self.switches.get(usize::from(switch))?.router?;
        self.routers.get(usize::from(ri))
    }

    /// If `ip` is a gateway address of a switch attached to `router`, that switch.
    pub fn router_ip(&self, router: &Router, ip: Ipv4Addr) -> Option<SwitchIdx> {
        router
            .switches
            .iter()
            .copied()
            .find(|&si| self.switches[usize::from(si)].gateway_ip == ip)
    }

    /// Longest-prefix match in `router`: the route and the
    /// next-hop address.
    pub fn route<'r>(&self, router: &'r Router, dst: Ipv4Addr) -> Option<(&'r Route, Ipv4Addr)> {
        router
            .routes
            .iter()
            .find(|r| r.prefix.contains(&dst))
            .map(|r| (r, r.next_hop.unwrap_or(dst)))
    }

    /// Rows of the L2 table: (switch, MAC, location), for the local API.
    pub fn mac_table(&self) -> impl Iterator<Item = (SwitchIdx, MacAddr, Location)> + '_ {
        self.macs.iter().map(|(&(s, m), &l)| (s, m, l))
    }

    /// Rows of the ARP table (the addresses the responder answers for, the
    /// router's gateway addresses aside): (switch, IPv4, neighbour), for the
    /// local API.
    pub fn arp_table(&self) -> impl Iterator<Item = (SwitchIdx, Ipv4Addr, Neighbor)> + '_ {
        self.neighbors.iter().map(|(&(s, ip), &n)| (s, ip, n))
    }
}

/// The tier-0's routing table: connected uplink subnet, the downlink's
/// connected subnet (the underlay's; not for a /0 or /32 underlay
/// address, which has no subnet to speak of), static routes, the default
/// route, and every tier-1's connected switches (overlay).
fn compile_tier0(
    t0: &control::Tier0,
    host: LocalHost,
    routers: &[Router],
    switches: &[Switch],
    router_idx: impl Fn(&str) -> Option<RouterIdx>,
) -> Result<Tier0, TablesError> {
    let tier1s: Vec<RouterIdx> = t0.tier1s.iter().filter_map(|n| router_idx(n)).collect();
    let uplink = t0.uplink.address;
    let mut routes = vec![T0Route {
        prefix: uplink.trunc(),
        hop: T0Hop::Uplink(None),
        origin: T0Origin::Connected,
    }];
    let downlink = Ipv4Net::new(host.underlay_ip, host.underlay_prefix_len)
        .unwrap_or_else(|_| Ipv4Net::from(host.underlay_ip));
    if (1..32).contains(&downlink.prefix_len()) {
        routes.push(T0Route {
            prefix: downlink.trunc(),
            hop: T0Hop::Downlink(None),
            origin: T0Origin::Connected,
        });
    }
    for &ri in &tier1s {
        for &si in &routers[usize::from(ri)].switches {
            routes.push(T0Route {
                prefix: switches[usize::from(si)].subnet,
                hop: T0Hop::Tier1(ri),
                origin: T0Origin::Tier1,
            });
        }
    }
    routes.push(T0Route {
        prefix: Ipv4Net::from(t0.health_check_ip),
        hop: T0Hop::Probe,
        origin: T0Origin::HealthCheck,
    });
    routes.extend(t0.routes.iter().map(|r| T0Route {
        prefix: r.prefix,
        hop: T0Hop::Uplink(Some(r.next_hop)),
        origin: T0Origin::Static,
    }));
    if let Some(gw) = t0.uplink.gateway {
        routes.push(T0Route {
            prefix: Ipv4Net::default(),
            hop: T0Hop::Uplink(Some(gw)),
            origin: T0Origin::Default,
        });
    }
    routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.prefix_len()));
    let addresses: Vec<Ipv4Addr> = t0.uplink.addrs().collect();
    let s = &t0.snat;
    let nat = nat::NatConfig {
        pool: t0.snat_pool().collect(),
        port_range: nat::PortRange {
            first: s.port_min,
            last: s.port_max,
        },
        filtering: match s.filtering {
            control::NatFiltering::EndpointIndependent => nat::Filtering::EndpointIndependent,
            control::NatFiltering::AddressDependent => nat::Filtering::AddressDependent,
        },
        timeouts: nat::Timeouts {
            tcp_transitory: s.timeouts.tcp_transitory,
            tcp_established: s.timeouts.tcp_established,
            udp: s.timeouts.udp,
            icmp: s.timeouts.icmp,
        },
        statics: t0
            .public_ips
            .iter()
            .map(|p| nat::StaticNat {
                public: p.public_ip,
                private: p.private_ip,
            })
            .collect(),
    };
    nat.validate()?;
    let nat_capacity = usize::try_from(s.max_sessions).unwrap_or(usize::MAX);
    let downlink_nat = t0.underlay_snat.then(|| {
        let (first, last) = control::Tier0::DOWNLINK_NAT_PORTS;
        nat::NatConfig {
            pool: vec![host.underlay_ip],
            port_range: nat::PortRange { first, last },
            statics: Vec::new(),
            ..nat.clone()
        }
    });
    if let Some(d) = &downlink_nat {
        d.validate()?;
    }
    Ok(Tier0 {
        name: t0.name.clone(),
        mac: t0.mac,
        uplink_mac: host.port_mac,
        transit_vni: t0.transit_vni,
        uplink,
        addresses,
        uplink_mtu: t0.uplink.mtu.unwrap_or(control::Uplink::DEFAULT_MTU),
        downlink,
        downlink_mac: host.underlay_mac,
        downlink_mtu: host
            .overlay_mtu
            .saturating_add(u16::try_from(geneve::outer::MTU_OVERHEAD).unwrap_or(u16::MAX)),
        underlay_snat: t0.underlay_snat,
        routes,
        tier1s,
        nat,
        nat_capacity,
        downlink_nat,
        downlink_nat_capacity: nat_capacity.min(DOWNLINK_NAT_SESSIONS),
        health_check_ip: t0.health_check_ip,
    })
}

/// `HashMap` with a small multiplicative hasher: the keys are trusted config
/// (no flooding risk from packets, which only look keys up), and SipHash
/// would dominate the per-packet lookup cost.
pub(crate) type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// The rustc "Fx" hash: one rotate, xor and multiply per word.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct FxHasher(u64);

const FX_SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(FX_SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(w));
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_u16(&mut self, i: u16) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}
