//! Validation of an [`InstanceConfig`]: every problem is reported, each with
//! the path of the offending field (`switches[1].vni: 0x1000000 exceeds 24 bits`),
//! so an operator can fix a file in one pass. A config that passes is safe
//! to compile into datapath tables. The list returned is capped at
//! [`MAX_PROBLEMS`] (the rest are counted, "... and N more problems"), and
//! every check is O(n log n) or better in the size of the config, so a
//! hostile config costs time and memory in proportion to its size.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::model::{DhcpOptions, InstanceConfig, MacAddr};

/// Largest 24-bit VNI.
pub const MAX_VNI: u32 = 0x00ff_ffff;
/// Largest 31-bit tunnel-endpoint id (the top bit of the option is reserved).
pub const MAX_TEP_ID: u32 = 0x7fff_ffff;

/// Most problems a [`Problems`] lists; the rest are only counted.
pub const MAX_PROBLEMS: usize = 100;

/// One problem in a config, with the path of the field it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl Problem {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// The problems found in one config (never empty when returned as an
/// error): the first [`MAX_PROBLEMS`] in the order found, and how many more
/// there were.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Problems {
    list: Vec<Problem>,
    more: usize,
}

impl Problems {
    /// Keeps the first [`MAX_PROBLEMS`] of `all` and counts the rest.
    pub fn new(mut all: Vec<Problem>) -> Self {
        let more = all.len().saturating_sub(MAX_PROBLEMS);
        all.truncate(MAX_PROBLEMS);
        all.shrink_to_fit();
        Problems { list: all, more }
    }

    /// `Ok` when `all` is empty, else `Err` with them ([`Problems::new`]).
    pub fn result(all: Vec<Problem>) -> Result<(), Problems> {
        if all.is_empty() {
            Ok(())
        } else {
            Err(Problems::new(all))
        }
    }

    /// The problems listed (at most [`MAX_PROBLEMS`]).
    pub fn list(&self) -> &[Problem] {
        &self.list
    }

    /// How many problems were found beyond those listed.
    pub fn more(&self) -> usize {
        self.more
    }

    /// How many problems were found in all.
    pub fn total(&self) -> usize {
        self.list.len().saturating_add(self.more)
    }

    /// The problems listed, by value.
    pub fn into_list(self) -> Vec<Problem> {
        self.list
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} problem(s) in config:", self.total())?;
        for p in &self.list {
            write!(f, "\n  {p}")?;
        }
        if self.more > 0 {
            write!(f, "\n  ... and {} more problems", self.more)?;
        }
        Ok(())
    }
}

/// The problems found so far, and the checks every part of a config
/// shares (the tier-0's in [`crate::tier0`] too).
#[derive(Default)]
pub(crate) struct Collector(pub(crate) Vec<Problem>);

impl Collector {
    pub(crate) fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    pub(crate) fn unicast_mac(&mut self, path: &str, mac: MacAddr) {
        if mac.is_multicast() || mac.is_zero() {
            self.add(path, format!("{mac} is not a unicast MAC address"));
        }
    }

    /// A tunnel-endpoint id: 31 bits and not 0. Whether it is.
    pub(crate) fn tep_id(&mut self, path: &str, id: u32) -> bool {
        let ok = id != 0 && id <= MAX_TEP_ID;
        if !ok {
            self.add(path, format!("{id} is outside 1..={MAX_TEP_ID} (31 bits)"));
        }
        ok
    }

    /// Another host's tunnel-endpoint id: a tunnel-endpoint id, not this
    /// instance's `own`.
    pub(crate) fn peer_tep_id(&mut self, path: &str, id: u32, own: u32) {
        if self.tep_id(path, id) && id == own {
            self.add(path, format!("{id} is this instance's own tep_id"));
        }
    }

    /// A tunnel endpoint's underlay address: unicast, not loopback.
    pub(crate) fn tep_ip(&mut self, path: &str, ip: Ipv4Addr) {
        if ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() || ip.is_loopback() {
            self.add(path, format!("{ip} is not a unicast underlay address"));
        }
    }
}

/// Checks `cfg`: the problems found, capped as [`Problems::new`] does.
pub fn validate(cfg: &InstanceConfig) -> Result<(), Problems> {
    Problems::result(all_problems(cfg))
}

/// Checks `cfg` and returns every problem found, uncapped (for callers that
/// add their own checks before capping; at most a few per field of `cfg`).
pub fn all_problems(cfg: &InstanceConfig) -> Vec<Problem> {
    let mut c = Collector::default();

    c.tep_id("tep_id", cfg.tep_id);

    // Switches: unique names and VNIs, sane subnets.
    let mut switch_by_name: HashMap<&str, (usize, Ipv4Net, Ipv4Addr)> = HashMap::new();
    let mut vnis: HashMap<u32, usize> = HashMap::new();
    for (i, s) in cfg.switches.iter().enumerate() {
        let p = format!("switches[{i}]");
        if s.name.trim().is_empty() {
            c.add(format!("{p}.name"), "must not be empty");
        } else if switch_by_name
            .insert(&s.name, (i, s.subnet, s.gateway_ip))
            .is_some()
        {
            c.add(
                format!("{p}.name"),
                format!("duplicate switch name {:?}", s.name),
            );
        }
        if s.vni > MAX_VNI {
            c.add(format!("{p}.vni"), format!("{:#x} exceeds 24 bits", s.vni));
        } else if let Some(j) = vnis.insert(s.vni, i) {
            c.add(
                format!("{p}.vni"),
                format!("{:#x} is already used by switches[{j}]", s.vni),
            );
        }
        if s.subnet.prefix_len() > 30 {
            c.add(
                format!("{p}.subnet"),
                format!(
                    "{} leaves no room for hosts (prefix longer than /30)",
                    s.subnet
                ),
            );
        }
        if s.subnet.network() != s.subnet.addr() {
            c.add(
                format!("{p}.subnet"),
                format!(
                    "{} has host bits set (did you mean {}?)",
                    s.subnet,
                    s.subnet.trunc()
                ),
            );
        }
        check_host_ip(&mut c, &format!("{p}.gateway_ip"), s.gateway_ip, &s.subnet);
        if let Some(d) = &s.dhcp {
            check_dhcp(&mut c, &format!("{p}.dhcp"), d, &s.subnet);
        }
    }

    // Routers.
    let mut router_of_switch: HashMap<&str, usize> = HashMap::new();
    let mut router_names = HashSet::new();
    for (i, r) in cfg.routers.iter().enumerate() {
        let p = format!("routers[{i}]");
        if r.name.trim().is_empty() {
            c.add(format!("{p}.name"), "must not be empty");
        } else if !router_names.insert(r.name.as_str()) {
            c.add(
                format!("{p}.name"),
                format!("duplicate router name {:?}", r.name),
            );
        }
        c.unicast_mac(&format!("{p}.mac"), r.mac);
        // Problems of the switch list by position, so the overlaps found by
        // the sweep below land in the order the list is written.
        let mut found: Vec<(usize, String)> = Vec::new();
        let mut attached: Vec<Attached> = Vec::new();
        for (j, sw) in r.switches.iter().enumerate() {
            match switch_by_name.get(sw.as_str()) {
                None => found.push((j, format!("unknown switch {sw:?}"))),
                Some(&(si, net, _)) => {
                    if let Some(other) = router_of_switch.insert(sw.as_str(), i) {
                        if other != i {
                            found.push((
                                j,
                                format!("switch {sw:?} is already attached to routers[{other}]"),
                            ));
                        } else {
                            found.push((j, format!("switch {sw:?} is listed twice")));
                        }
                        continue;
                    }
                    attached.push(Attached { j, si, net });
                }
            }
        }
        let blocks = sweep_overlaps(&attached, &mut found);
        found.sort_by_key(|&(j, _)| j);
        for (j, message) in found {
            c.add(format!("{p}.switches[{j}]"), message);
        }
        for (j, route) in r.routes.iter().enumerate() {
            let rp = format!("{p}.routes[{j}]");
            if route.prefix.network() != route.prefix.addr() {
                c.add(
                    format!("{rp}.prefix"),
                    format!("{} has host bits set", route.prefix),
                );
            }
            if !blocks.contains(route.next_hop) {
                c.add(
                    format!("{rp}.next_hop"),
                    format!(
                        "{} is not on any switch attached to this router",
                        route.next_hop
                    ),
                );
            }
        }
    }

    // Addresses in use per switch: (switch, ip) and (switch, mac) must be unique.
    let mut ips: HashMap<(&str, Ipv4Addr), String> = HashMap::new();
    let mut macs: HashMap<(&str, MacAddr), String> = HashMap::new();

    if let Some(port) = &cfg.port {
        match switch_by_name.get(port.switch.as_str()) {
            None => c.add("port.switch", format!("unknown switch {:?}", port.switch)),
            Some(&(_, net, gw)) => {
                check_host_ip(&mut c, "port.ip", port.ip, &net);
                if port.ip == gw {
                    c.add("port.ip", format!("{} is the switch's gateway_ip", port.ip));
                }
                ips.insert((port.switch.as_str(), port.ip), "port".into());
                if let Some(mac) = port.mac {
                    macs.insert((port.switch.as_str(), mac), "port".into());
                }
            }
        }
        if let Some(mac) = port.mac {
            c.unicast_mac("port.mac", mac);
        }
    }

    for (i, rp) in cfg.remote_ports.iter().enumerate() {
        let p = format!("remote_ports[{i}]");
        match switch_by_name.get(rp.switch.as_str()) {
            None => c.add(
                format!("{p}.switch"),
                format!("unknown switch {:?}", rp.switch),
            ),
            Some(&(_, net, gw)) => {
                check_host_ip(&mut c, &format!("{p}.ip"), rp.ip, &net);
                if rp.ip == gw {
                    c.add(
                        format!("{p}.ip"),
                        format!("{} is the switch's gateway_ip", rp.ip),
                    );
                }
                if let Some(prev) = ips.insert((rp.switch.as_str(), rp.ip), p.clone()) {
                    c.add(
                        format!("{p}.ip"),
                        format!(
                            "{} on switch {:?} is already used by {prev}",
                            rp.ip, rp.switch
                        ),
                    );
                }
                if let Some(prev) = macs.insert((rp.switch.as_str(), rp.mac), p.clone()) {
                    c.add(
                        format!("{p}.mac"),
                        format!(
                            "{} on switch {:?} is already used by {prev}",
                            rp.mac, rp.switch
                        ),
                    );
                }
            }
        }
        c.unicast_mac(&format!("{p}.mac"), rp.mac);
        c.peer_tep_id(&format!("{p}.tep_id"), rp.tep_id, cfg.tep_id);
        c.tep_ip(&format!("{p}.tep_ip"), rp.tep_ip);
    }

    if let Some(fw) = &cfg.firewall {
        crate::firewall::validate_firewall(fw, "firewall", &mut c.0);
    }
    crate::tier0::check(cfg, &mut c);
    crate::lb::check_services(&cfg.load_balancers, "load_balancers", &mut c.0);
    for (i, s) in cfg.load_balancers.iter().enumerate() {
        if s.vs.kind == crate::lb::ForwardKind::Fnat
            && s.vs.snat_ip.is_none()
            && cfg.tier0.is_none()
        {
            c.add(
                format!("load_balancers[{i}].snat_ip"),
                "full NAT needs a source address: snat_ip, or the edge's uplink (tier0)",
            );
        }
    }
    if !cfg.load_balancers.is_empty() && cfg.port.is_none() && cfg.tier0.is_none() {
        c.add(
            "load_balancers",
            "virtual servers are balanced by an instance's overlay port or by the edge: \
             micro-segmentation (no port, no tier0) balances nothing",
        );
    }
    c.0
}

/// Most DNS servers option 6 carries here (RFC 2132 allows 63).
const MAX_DNS_SERVERS: usize = 8;
/// Most option 121 routes (each takes up to 9 of the option's 255 bytes).
const MAX_DHCP_ROUTES: usize = 16;

/// A switch's DHCP options: they must fit their options and make sense on
/// the switch (next hops on its subnet).
fn check_dhcp(c: &mut Collector, p: &str, d: &DhcpOptions, subnet: &Ipv4Net) {
    if d.dns_servers.len() > MAX_DNS_SERVERS {
        c.add(
            format!("{p}.dns_servers"),
            format!("{} servers; at most {MAX_DNS_SERVERS}", d.dns_servers.len()),
        );
    }
    for (i, a) in d.dns_servers.iter().enumerate() {
        if a.is_unspecified() || a.is_broadcast() || a.is_multicast() {
            c.add(
                format!("{p}.dns_servers[{i}]"),
                format!("{a} is not a unicast address"),
            );
        }
    }
    if let Some(name) = &d.domain_name {
        let ok = !name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !ok {
            c.add(
                format!("{p}.domain_name"),
                format!("{name:?} is not a domain name (dot-separated labels of letters, digits and '-')"),
            );
        }
    }
    if let Some(l) = d.lease_time
        && l < DhcpOptions::MIN_LEASE_SECS
    {
        c.add(
            format!("{p}.lease_time"),
            format!("{l} s is shorter than {} s", DhcpOptions::MIN_LEASE_SECS),
        );
    }
    if d.routes.len() > MAX_DHCP_ROUTES {
        c.add(
            format!("{p}.routes"),
            format!("{} routes; at most {MAX_DHCP_ROUTES}", d.routes.len()),
        );
    }
    for (i, r) in d.routes.iter().enumerate() {
        if r.prefix.network() != r.prefix.addr() {
            c.add(
                format!("{p}.routes[{i}].prefix"),
                format!(
                    "{} has host bits set (did you mean {}?)",
                    r.prefix,
                    r.prefix.trunc()
                ),
            );
        }
        if !subnet.contains(&r.next_hop) {
            c.add(
                format!("{p}.routes[{i}].next_hop"),
                format!("{} is not on the switch's subnet {subnet}", r.next_hop),
            );
        }
    }
}

/// A switch attached to a router: its position in the router's list, its
/// index in `switches`, its subnet.
struct Attached {
    j: usize,
    si: usize,
    net: Ipv4Net,
}

/// The address space a router's switches cover: disjoint `(first, last)`
/// address ranges in ascending order.
struct Blocks(Vec<(u32, u32)>);

impl Blocks {
    fn contains(&self, ip: Ipv4Addr) -> bool {
        let ip = u32::from(ip);
        let after = self.0.partition_point(|&(first, _)| first <= ip);
        after > 0 && self.0.get(after - 1).is_some_and(|&(_, last)| ip <= last)
    }
}

/// Finds the overlapping subnets of one router's switches in O(n log n):
/// sorted by network start (a larger block before a smaller one at the same
/// start), each subnet either starts a new block or lies inside the current
/// one, as CIDR blocks nest or are disjoint. Each subnet inside a block is
/// reported once, against the subnet that starts the block, under whichever
/// of the two comes later in the router's list (so one overlapping pair
/// reads as it always did). Returns the blocks.
fn sweep_overlaps(attached: &[Attached], found: &mut Vec<(usize, String)>) -> Blocks {
    let mut order: Vec<&Attached> = attached.iter().collect();
    order.sort_by_key(|a| (u32::from(a.net.network()), a.net.prefix_len(), a.j));
    let mut blocks: Vec<(u32, u32, &Attached)> = Vec::new();
    for a in order {
        let (first, last) = (u32::from(a.net.network()), u32::from(a.net.broadcast()));
        match blocks.last() {
            Some(&(_, block_last, cover)) if first <= block_last => {
                let (later, earlier) = if a.j > cover.j {
                    (a, cover)
                } else {
                    (cover, a)
                };
                found.push((
                    later.j,
                    format!(
                        "subnet {} of switches[{}] overlaps {} of switches[{}] on the same router",
                        later.net, later.si, earlier.net, earlier.si
                    ),
                ));
            }
            _ => blocks.push((first, last, a)),
        }
    }
    Blocks(
        blocks
            .into_iter()
            .map(|(first, last, _)| (first, last))
            .collect(),
    )
}

fn check_host_ip(c: &mut Collector, path: &str, ip: Ipv4Addr, net: &Ipv4Net) {
    if !net.contains(&ip) {
        c.add(path, format!("{ip} is outside the switch subnet {net}"));
    } else if net.prefix_len() <= 30 && (ip == net.network() || ip == net.broadcast()) {
        c.add(
            path,
            format!("{ip} is the network or broadcast address of {net}"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;

    fn good() -> InstanceConfig {
        InstanceConfig {
            version: 1,
            tep_id: 1,
            switches: vec![
                LogicalSwitch {
                    name: "web".into(),
                    vni: 0x238c,
                    subnet: "192.168.100.0/24".parse().unwrap(),
                    gateway_ip: "192.168.100.1".parse().unwrap(),
                    dhcp: None,
                },
                LogicalSwitch {
                    name: "app".into(),
                    vni: 0x2388,
                    subnet: "192.168.99.0/24".parse().unwrap(),
                    gateway_ip: "192.168.99.1".parse().unwrap(),
                    dhcp: None,
                },
            ],
            routers: vec![LogicalRouter {
                name: "t1".into(),
                mac: "02:50:56:00:00:01".parse().unwrap(),
                switches: vec!["web".into(), "app".into()],
                routes: vec![StaticRoute {
                    prefix: "10.0.0.0/8".parse().unwrap(),
                    next_hop: "192.168.99.254".parse().unwrap(),
                }],
            }],
            port: Some(LocalPort {
                switch: "web".into(),
                ip: "192.168.100.3".parse().unwrap(),
                mac: None,
            }),
            remote_ports: vec![RemotePort {
                switch: "app".into(),
                ip: "192.168.99.9".parse().unwrap(),
                mac: "06:00:00:00:00:09".parse().unwrap(),
                tep_ip: "10.99.3.251".parse().unwrap(),
                tep_id: 2,
            }],
            ..InstanceConfig::default()
        }
    }

    fn paths(cfg: &InstanceConfig) -> Vec<String> {
        match validate(cfg) {
            Ok(()) => vec![],
            Err(p) => p.into_list().into_iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn good_config_passes() {
        assert_eq!(paths(&good()), Vec::<String>::new());
    }

    #[test]
    fn dhcp_options_are_checked_with_their_paths() {
        let mut cfg = good();
        cfg.switches[0].dhcp = Some(DhcpOptions {
            dns_servers: vec!["10.0.0.53".parse().unwrap()],
            domain_name: Some("corp.example".into()),
            lease_time: Some(600),
            routes: vec![StaticRoute {
                prefix: "10.20.0.0/16".parse().unwrap(),
                next_hop: cfg.switches[0].gateway_ip,
            }],
        });
        assert_eq!(paths(&cfg), Vec::<String>::new());
        cfg.switches[0].dhcp = Some(DhcpOptions {
            dns_servers: vec!["0.0.0.0".parse().unwrap()],
            domain_name: Some("bad domain".into()),
            lease_time: Some(5),
            routes: vec![StaticRoute {
                prefix: "10.20.0.1/16".parse().unwrap(),
                next_hop: "172.16.0.1".parse().unwrap(),
            }],
        });
        let got = paths(&cfg);
        let want = [
            "switches[0].dhcp.dns_servers[0]:",
            "switches[0].dhcp.domain_name:",
            "switches[0].dhcp.lease_time:",
            "switches[0].dhcp.routes[0].prefix:",
            "switches[0].dhcp.routes[0].next_hop:",
        ];
        assert_eq!(got.len(), want.len(), "{got:?}");
        for (g, w) in got.iter().zip(want) {
            assert!(g.starts_with(w), "{g} should start with {w}");
        }
    }

    #[test]
    fn vni_too_large_reports_path() {
        let mut cfg = good();
        cfg.switches[1].vni = 0x100_0000;
        assert_eq!(
            paths(&cfg),
            vec!["switches[1].vni: 0x1000000 exceeds 24 bits"]
        );
    }

    #[test]
    fn every_problem_is_reported() {
        let mut cfg = good();
        cfg.tep_id = 0;
        cfg.switches[0].gateway_ip = "10.0.0.1".parse().unwrap();
        cfg.switches[1].vni = 0x238c;
        cfg.routers[0].switches.push("nope".into());
        cfg.routers[0].routes[0].next_hop = "172.16.0.1".parse().unwrap();
        cfg.port.as_mut().unwrap().ip = "192.168.100.0".parse().unwrap();
        cfg.remote_ports[0].mac = MacAddr::BROADCAST;
        cfg.remote_ports[0].tep_id = 0x8000_0000;
        let got = paths(&cfg);
        let want_prefixes = [
            "tep_id:",
            "switches[0].gateway_ip:",
            "switches[1].vni:",
            "routers[0].switches[2]:",
            "routers[0].routes[0].next_hop:",
            "port.ip:",
            "remote_ports[0].mac:",
            "remote_ports[0].tep_id:",
        ];
        for w in want_prefixes {
            assert!(
                got.iter().any(|g| g.starts_with(w)),
                "missing {w} in {got:#?}"
            );
        }
        assert_eq!(got.len(), want_prefixes.len(), "{got:#?}");
    }

    #[test]
    fn duplicate_addresses_are_reported() {
        let mut cfg = good();
        let mut dup = cfg.remote_ports[0].clone();
        dup.tep_id = 3;
        cfg.remote_ports.push(dup);
        let got = paths(&cfg);
        assert!(
            got.iter().any(|g| g.starts_with("remote_ports[1].ip:")),
            "{got:?}"
        );
        assert!(
            got.iter().any(|g| g.starts_with("remote_ports[1].mac:")),
            "{got:?}"
        );
    }

    #[test]
    fn switch_on_two_routers_is_rejected() {
        let mut cfg = good();
        let mut r2 = cfg.routers[0].clone();
        r2.name = "t1b".into();
        r2.routes.clear();
        r2.switches = vec!["web".into()];
        cfg.routers.push(r2);
        let got = paths(&cfg);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].starts_with("routers[1].switches[0]:"), "{got:?}");
    }

    /// `n` switches, all on one router, the i-th with subnet `subnet(i)`.
    fn one_router(n: usize, subnet: impl Fn(usize) -> Ipv4Net) -> InstanceConfig {
        let switches: Vec<LogicalSwitch> = (0..n)
            .map(|i| {
                let net = subnet(i);
                LogicalSwitch {
                    name: format!("ls{i}"),
                    vni: u32::try_from(i + 1).unwrap(),
                    subnet: net,
                    gateway_ip: net.hosts().next().unwrap(),
                    dhcp: None,
                }
            })
            .collect();
        InstanceConfig {
            version: 1,
            tep_id: 1,
            routers: vec![LogicalRouter {
                name: "t1".into(),
                mac: "02:50:56:00:00:01".parse().unwrap(),
                switches: switches.iter().map(|s| s.name.clone()).collect(),
                routes: vec![],
            }],
            switches,
            ..InstanceConfig::default()
        }
    }

    #[test]
    fn overlapping_switches_are_reported_once_each_and_capped() {
        // 1,200 copies of one subnet: 1,199 switches overlap the first; the
        // pairwise check reported 719,400 problems.
        let cfg = one_router(1200, |_| "10.0.0.0/24".parse().unwrap());
        let p = validate(&cfg).expect_err("overlaps");
        assert_eq!(p.total(), 1199, "one problem per overlapping switch");
        assert_eq!(p.list().len(), MAX_PROBLEMS);
        assert_eq!(p.more(), 1199 - MAX_PROBLEMS);
        assert_eq!(
            p.list()[0].to_string(),
            "routers[0].switches[1]: subnet 10.0.0.0/24 of switches[1] overlaps 10.0.0.0/24 of switches[0] on the same router"
        );
        assert_eq!(p.list()[99].path, "routers[0].switches[100]");
        let text = p.to_string();
        assert!(text.starts_with("1199 problem(s) in config:\n"), "{text}");
        assert!(text.ends_with("\n  ... and 1099 more problems"), "{text}");
        assert_eq!(text.lines().count(), 1 + MAX_PROBLEMS + 1);
    }

    #[test]
    fn an_overlapping_pair_reads_as_before() {
        // The container listed second: reported under the second, as the
        // pairwise check did.
        let nets = ["10.0.1.0/24", "10.0.0.0/16", "10.1.0.0/24"];
        let cfg = one_router(3, |i| nets[i].parse().unwrap());
        assert_eq!(
            paths(&cfg),
            vec![
                "routers[0].switches[1]: subnet 10.0.0.0/16 of switches[1] overlaps 10.0.1.0/24 of switches[0] on the same router"
            ]
        );
    }

    #[test]
    fn few_problems_are_listed_without_a_count() {
        let mut cfg = good();
        cfg.switches[1].vni = 0x100_0000;
        let p = validate(&cfg).expect_err("invalid");
        assert_eq!((p.total(), p.more()), (1, 0));
        assert!(!p.to_string().contains("more problems"), "{p}");
    }

    proptest::proptest! {
        /// The sweep finds exactly the switches the pairwise check finds,
        /// each reported pair does overlap, and a route's next hop is on an
        /// attached switch exactly when some attached subnet holds it.
        #[test]
        fn sweep_matches_the_pairwise_check(
            nets in proptest::collection::vec((0u32..4096, 20u8..=30), 1..40),
            hops in proptest::collection::vec(0u32..4096, 0..20),
        ) {
            let base = u32::from(Ipv4Addr::new(10, 0, 0, 0));
            let subnet = |(off, len): (u32, u8)| {
                Ipv4Net::new(Ipv4Addr::from(base + (off << 4)), len).unwrap().trunc()
            };
            let mut cfg = one_router(nets.len(), |i| subnet(nets[i]));
            let hop = |h: u32| Ipv4Addr::from(base + (h << 4) + 1);
            cfg.routers[0].routes = hops
                .iter()
                .map(|&h| StaticRoute { prefix: "0.0.0.0/0".parse().unwrap(), next_hop: hop(h) })
                .collect();
            let all = all_problems(&cfg);
            let nets: Vec<Ipv4Net> = cfg.switches.iter().map(|s| s.subnet).collect();
            let overlaps = |a: &Ipv4Net, b: &Ipv4Net| a.contains(&b.network()) || b.contains(&a.network());
            let mut reported = HashSet::new();
            let mut count = 0;
            for p in all.iter().filter(|p| p.message.contains(" overlaps ")) {
                count += 1;
                // "subnet N of switches[A] overlaps M of switches[B] on the same router"
                let idx: Vec<usize> = p
                    .message
                    .split("switches[")
                    .skip(1)
                    .map(|t| t.split(']').next().unwrap().parse().unwrap())
                    .collect();
                let (a, b) = (idx[0], idx[1]);
                proptest::prop_assert!(a > b && overlaps(&nets[a], &nets[b]), "{p}");
                proptest::prop_assert_eq!(&p.path, &format!("routers[0].switches[{a}]"));
                reported.insert(a);
                reported.insert(b);
            }
            let pairwise: HashSet<usize> = (0..nets.len())
                .filter(|&i| (0..nets.len()).any(|j| j != i && overlaps(&nets[i], &nets[j])))
                .collect();
            proptest::prop_assert_eq!(reported, pairwise);
            proptest::prop_assert!(count < nets.len());
            for (k, &h) in hops.iter().enumerate() {
                let on_switch = nets.iter().any(|n| n.contains(&hop(h)));
                let flagged = all.iter().any(|p| p.path == format!("routers[0].routes[{k}].next_hop"));
                proptest::prop_assert_eq!(on_switch, !flagged, "hop {}", hop(h));
            }
        }
    }

    #[test]
    fn virtual_servers_need_a_port_or_the_edge_to_balance_them() {
        let mut cfg = good();
        cfg.load_balancers = vec![
            serde_json::from_str(
                r#"{"vip":"192.168.100.50","port":80,"scheduler":"sh",
                    "real_servers":[{"ip":"192.168.99.9","port":8080}]}"#,
            )
            .unwrap(),
        ];
        assert!(validate(&cfg).is_ok());
        cfg.port = None;
        let p = validate(&cfg).unwrap_err().into_list();
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].path, "load_balancers");
        assert!(p[0].message.contains("micro-segmentation"), "{}", p[0]);
    }

    #[test]
    fn full_nat_needs_a_source_address() {
        let mut cfg = good();
        let mut s: crate::lb::LbService = serde_json::from_str(
            r#"{"vip":"192.168.100.50","port":80,"scheduler":"sh","kind":"fnat",
                "real_servers":[{"ip":"192.168.99.9","port":8080}]}"#,
        )
        .unwrap();
        cfg.load_balancers = vec![s.clone()];
        assert_eq!(
            paths(&cfg),
            [
                "load_balancers[0].snat_ip: full NAT needs a source address: snat_ip, or the edge's uplink (tier0)"
            ]
        );
        s.vs.snat_ip = Some("192.168.100.51".parse().unwrap());
        cfg.load_balancers = vec![s];
        assert!(validate(&cfg).is_ok());
    }
}
