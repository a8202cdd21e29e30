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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tep {
    pub ip: Ipv4Addr,
    pub id: u32,
    /// The endpoint is a north-south edge: besides its own ports' addresses
    /// it may carry routed frames from any *outside* source (an inner IPv4
    /// source no port on the router's switches owns). The ingress source
    /// guard (`layer::source_guard`) honours it; an address some port owns
    /// must still come from that port's endpoint. Hook for the edge: nothing
    /// in the config model sets it yet, so it is always `false`.
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
}

/// Why a config could not be compiled (it should have failed validation).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TablesError {
    #[error("config is invalid: {0}")]
    Invalid(#[from] control::Problems),
    #[error("firewall rules do not compile: {0}")]
    Firewall(#[from] firewall::classify::CompileError),
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

        Ok(Tables {
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
        })
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
