//! The load balancers of the desired state (`load_balancers:`): virtual
//! servers in [`control::lb`]'s model (the fields keepalived's keywords
//! map to; `nsx-gateway lb import` writes them from a keepalived.conf),
//! where each is balanced, and the gateway's rules on them.
//!
//! Where: a virtual server whose address is one of the tier-0 uplink's
//! (its primary or a secondary address), and every full-NAT one, is
//! balanced at the edge; any other is balanced by the agent of the
//! instance that sends to it (distributed: no hop through a balancer).
//! Full-NAT needs the edge because the real server sees the balancer's
//! SNAT address (default: the uplink's primary address), which must route
//! back to it.
//!
//! Rules, each problem at its path (`load_balancers[0].vip`):
//! [`control::lb::check`]; a virtual address is no switch's `gateway_ip`
//! nor its subnet's network or broadcast address; inside a switch's subnet
//! it is reachable only when distributed and the switch is on a router
//! (the sending agent answers ARP for it there; an instance reaches an
//! address of its subnet on the switch, never through the edge);
//! `kind: fnat` needs a `tier0`, and so do health checkers (the edge runs
//! them), whose source address (`tier0.health_check_ip`) is no virtual,
//! real or sorry server's; `snat_ip` only with `fnat`, and then one
//! of the uplink's addresses; an edge virtual server on a SNAT pool
//! address keeps its port out of the SNAT's port range (the answers to a
//! mapping on that port would be taken for it). A virtual address inside
//! a switch's subnet is never handed to an instance (IPAM skips it), and
//! a state whose virtual address an instance holds already is refused
//! ([`placed_conflicts`], run by `apply` against the placement). Linear
//! in the state: the switches are indexed once.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;

use control::lb::{ForwardKind, VirtualServer};
use control::validate::Problem;
use ipnet::Ipv4Net;

use crate::instance::InstanceRecord;
use crate::state::DesiredState;

/// The path of the section: the keepalived reader's name for its virtual
/// servers, so `lb import` finds the file:line of a problem at
/// `load_balancers[i]...` ([`lb::keepalived::Loaded::diagnose`]).
pub const BASE: &str = lb::keepalived::BASE;

/// Where a virtual server is balanced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Balanced {
    /// By the agent of every instance with an overlay port, for what that
    /// instance sends.
    Instances,
    /// By the edge, for what reaches it (its uplink, or the overlay's
    /// traffic routed to it).
    Edge,
}

impl Balanced {
    pub fn as_str(self) -> &'static str {
        match self {
            Balanced::Instances => "instances",
            Balanced::Edge => "edge",
        }
    }
}

/// The tier-0 uplink's addresses, primary first (none without a `tier0`).
pub fn uplink_addrs(st: &DesiredState) -> Vec<Ipv4Addr> {
    st.tier0
        .as_ref()
        .map_or_else(Vec::new, |t0| t0.uplink.addrs().collect())
}

/// Where `vs` is balanced, given the uplink's addresses.
pub fn balanced_at(vs: &VirtualServer, uplink: &[Ipv4Addr]) -> Balanced {
    if vs.kind == ForwardKind::Fnat || uplink.contains(&vs.vip) {
        Balanced::Edge
    } else {
        Balanced::Instances
    }
}

/// Every virtual address of `st` (IPAM hands none of them out).
pub fn vips(st: &DesiredState) -> HashSet<Ipv4Addr> {
    st.load_balancers.iter().map(|v| v.vip).collect()
}

/// True when some real server of `vs` has a health checker (the edge
/// runs it, wherever `vs` is balanced).
pub fn has_checks(vs: &VirtualServer) -> bool {
    vs.checked().next().is_some()
}

/// The switches indexed for the virtual addresses' rules, built once per
/// check (lookups cost the number of distinct prefix lengths, at most 33).
struct Switches<'a> {
    st: &'a DesiredState,
    /// Each switch's `gateway_ip`, network and broadcast address, with
    /// what it is there (switches in the state's order).
    reserved: HashMap<Ipv4Addr, Vec<(usize, &'static str)>>,
    /// The switches by subnet (subnets may overlap across routers).
    by_subnet: HashMap<Ipv4Net, Vec<usize>>,
    prefix_lens: Vec<u8>,
    routed: HashSet<&'a str>,
}

impl<'a> Switches<'a> {
    fn new(st: &'a DesiredState) -> Switches<'a> {
        let mut reserved: HashMap<Ipv4Addr, Vec<(usize, &'static str)>> = HashMap::new();
        let mut by_subnet: HashMap<Ipv4Net, Vec<usize>> = HashMap::new();
        for (k, sw) in st.switches.iter().enumerate() {
            reserved
                .entry(sw.gateway_ip)
                .or_default()
                .push((k, "gateway_ip"));
            if sw.subnet.prefix_len() < 31 {
                let net = sw.subnet.network();
                reserved
                    .entry(net)
                    .or_default()
                    .push((k, "network address"));
                let bcast = sw.subnet.broadcast();
                reserved
                    .entry(bcast)
                    .or_default()
                    .push((k, "broadcast address"));
            }
            by_subnet.entry(sw.subnet.trunc()).or_default().push(k);
        }
        let mut prefix_lens: Vec<u8> = by_subnet.keys().map(Ipv4Net::prefix_len).collect();
        prefix_lens.sort_unstable();
        prefix_lens.dedup();
        let routed = st
            .routers
            .iter()
            .flat_map(|r| r.switches.iter().map(String::as_str))
            .collect();
        Switches {
            st,
            reserved,
            by_subnet,
            prefix_lens,
            routed,
        }
    }

    /// The switches whose subnet holds `ip`, in the state's order.
    fn holding(&self, ip: Ipv4Addr) -> Vec<usize> {
        let mut out: Vec<usize> = self
            .prefix_lens
            .iter()
            .filter_map(|&len| Ipv4Net::new(ip, len).ok())
            .filter_map(|net| self.by_subnet.get(&net.trunc()))
            .flatten()
            .copied()
            .collect();
        out.sort_unstable();
        out
    }

    /// Where `vs`'s address cannot be: a switch's own address, or inside
    /// a switch's subnet where nothing would reach it.
    fn vip_problems(&self, vs: &VirtualServer, at: Balanced, p: &str, out: &mut Vec<Problem>) {
        let switch = |k: usize| self.st.switches.get(k).map_or("?", |s| s.name.as_str());
        if let Some(hits) = self.reserved.get(&vs.vip) {
            for &(k, what) in hits {
                out.push(Problem::new(
                    format!("{p}.vip"),
                    format!(
                        "{} is the {what} of switches[{k}] ({}), not free for a virtual server",
                        vs.vip,
                        switch(k)
                    ),
                ));
            }
            return;
        }
        for k in self.holding(vs.vip) {
            let why = match at {
                Balanced::Edge => {
                    "it is balanced at the edge, and an instance reaches an address of a \
                     switch's subnet on that switch, never through the edge; give it an \
                     address outside every switch's subnet"
                }
                Balanced::Instances if !self.routed.contains(switch(k)) => {
                    "the switch is on no router, so no agent answers ARP for it there \
                     (nor routes to it from elsewhere)"
                }
                Balanced::Instances => continue,
            };
            out.push(Problem::new(
                format!("{p}.vip"),
                format!(
                    "{} is inside the subnet of switches[{k}] ({}), where nothing reaches it: {why}",
                    vs.vip,
                    switch(k)
                ),
            ));
        }
    }
}

/// Checks `st.load_balancers`, adding every problem to `out`.
pub fn validate(st: &DesiredState, out: &mut Vec<Problem>) {
    control::lb::check(&st.load_balancers, BASE, out);
    if st.load_balancers.is_empty() {
        return;
    }
    let uplink = uplink_addrs(st);
    let switches = Switches::new(st);
    // The tier-0's SNAT: its addresses (the uplink's primary when the
    // pool is empty) and its ports.
    let snat = st.tier0.as_ref().map(|t0| {
        let pool: HashSet<Ipv4Addr> = t0.snat_pool().collect();
        (pool, t0.snat.port_min..=t0.snat.port_max)
    });
    for (i, vs) in st.load_balancers.iter().enumerate() {
        let p = format!("{BASE}[{i}]");
        let at = balanced_at(vs, &uplink);
        switches.vip_problems(vs, at, &p, out);
        if let Some((pool, ports)) = &snat
            && pool.contains(&vs.vip)
            && ports.contains(&vs.port)
        {
            out.push(Problem::new(
                format!("{p}.port"),
                format!(
                    "{} is in the tier-0's SNAT port range ({}-{}) on its SNAT address {}: \
                     answers to the overlay's connections mapped to that port would be taken \
                     for the virtual server; use a port outside the range or an uplink \
                     address out of the SNAT pool",
                    vs.port,
                    ports.start(),
                    ports.end(),
                    vs.vip
                ),
            ));
        }
        checker_problems(vs, st, &p, out);
        match (vs.kind, &st.tier0, vs.snat_ip) {
            (ForwardKind::Fnat, None, _) => out.push(Problem::new(
                format!("{p}.kind"),
                "full-NAT (fnat) is balanced at the edge, so it needs a tier0 section \
                 (the real servers answer the edge's SNAT address)",
            )),
            (ForwardKind::Nat, _, Some(_)) => out.push(Problem::new(
                format!("{p}.snat_ip"),
                "only full-NAT (kind: fnat) rewrites the source; leave snat_ip out",
            )),
            (ForwardKind::Fnat, Some(_), Some(snat)) if !uplink.contains(&snat) => {
                let listed: Vec<String> = uplink.iter().map(ToString::to_string).collect();
                out.push(Problem::new(
                    format!("{p}.snat_ip"),
                    format!(
                        "{snat} is not an address of the tier-0's uplink ({}): the real servers' \
                         answers must come back to the edge",
                        listed.join(", ")
                    ),
                ));
            }
            _ => {}
        }
    }
}

/// The health checkers' rules for `vs` (at `p`): they run on the edge, so
/// the state needs a `tier0` (one problem per virtual server, at its first
/// checked real server); and the checks' source address
/// (`tier0.health_check_ip`) is none of `vs`'s addresses (the answers to
/// the checks and that server's own traffic would be taken for each other).
fn checker_problems(vs: &VirtualServer, st: &DesiredState, p: &str, out: &mut Vec<Problem>) {
    let Some(t0) = &st.tier0 else {
        if let Some(j) = vs.real_servers.iter().position(|rs| rs.check.is_some()) {
            out.push(Problem::new(
                format!("{p}.real_servers[{j}].check"),
                "health checks run on the edge: the state needs a tier0 section",
            ));
        }
        return;
    };
    let ip = t0.health_check_ip();
    let taken = |field: String, what: &str| {
        Problem::new(
            field,
            format!(
                "{ip} is the tier-0's health_check_ip (the source of the edge's health checks), \
                 not free for {what}; give one of them another address"
            ),
        )
    };
    if vs.vip == ip {
        out.push(taken(format!("{p}.vip"), "a virtual server"));
    }
    for (j, rs) in vs.real_servers.iter().enumerate() {
        if rs.ip == ip {
            out.push(taken(format!("{p}.real_servers[{j}].ip"), "a real server"));
        }
    }
    if vs.sorry_server.is_some_and(|s| s.ip == ip) {
        out.push(taken(format!("{p}.sorry_server.ip"), "a sorry server"));
    }
}

/// The virtual addresses of `st` that an instance of `all` (not revoked)
/// holds, each at `load_balancers[i].vip`.
pub fn placed_conflicts(st: &DesiredState, all: &[InstanceRecord]) -> Vec<Problem> {
    if st.load_balancers.is_empty() {
        return Vec::new();
    }
    let held: HashMap<Ipv4Addr, &InstanceRecord> = all
        .iter()
        .filter(|r| r.revoked_at.is_none())
        .filter_map(|r| r.ip.map(|ip| (ip, r)))
        .collect();
    st.load_balancers
        .iter()
        .enumerate()
        .filter_map(|(i, vs)| {
            let r = held.get(&vs.vip)?;
            Some(Problem::new(
                format!("{BASE}[{i}].vip"),
                format!(
                    "{} is already the address of instance {:?} on switch {}; pick a free address \
                     (IPAM never hands out a virtual address)",
                    vs.vip,
                    r.id,
                    r.switch.as_deref().unwrap_or("-")
                ),
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{parse, validate as validate_state};

    const BASE_STATE: &str = r#"
switches:
  - {name: web-ls, tag: web, vni: 100, subnet: 192.168.100.0/24, gateway_ip: 192.168.100.1}
routers:
  - {name: t1, mac: "02:50:56:56:44:52", switches: [web-ls]}
"#;
    const TIER0: &str = "tier0:\n  uplink: {address: 203.0.113.2/24, secondary: [203.0.113.10], gateway: 203.0.113.1}\n";

    /// Every problem of the state `text`, as listed.
    fn problems(text: &str) -> Vec<String> {
        let st = parse(text).expect("parses");
        validate_state(&st)
            .expect_err("invalid")
            .into_list()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    fn vs(line: &str) -> String {
        format!(
            "  - {{{line}, persistence_timeout: 60, real_servers: [{{ip: 192.168.100.20, port: 8080}}]}}\n"
        )
    }

    #[test]
    fn where_each_virtual_server_is_balanced() {
        let text = format!(
            "{BASE_STATE}{TIER0}load_balancers:\n{}{}{}{}",
            vs("vip: 192.168.100.50, port: 80"),
            vs("vip: 10.99.0.1, port: 80"),
            vs("vip: 203.0.113.10, port: 443"),
            vs("vip: 10.99.0.2, port: 80, kind: fnat"),
        );
        let st = parse(&text).expect("parses");
        validate_state(&st).expect("valid");
        let up = uplink_addrs(&st);
        let at: Vec<Balanced> = st
            .load_balancers
            .iter()
            .map(|v| balanced_at(v, &up))
            .collect();
        assert_eq!(
            at,
            [
                Balanced::Instances,
                Balanced::Instances,
                Balanced::Edge,
                Balanced::Edge
            ]
        );
    }

    #[test]
    fn unreachable_and_snat_colliding_virtual_addresses_are_refused() {
        let lone = "  - {name: lone-ls, tag: lone, vni: 101, subnet: 10.50.0.0/24, gateway_ip: 10.50.0.1}\n";
        let state = BASE_STATE.replace("routers:", &format!("{lone}routers:"));
        let text = format!(
            "{state}{TIER0}load_balancers:\n{}{}{}{}{}{}",
            vs("vip: 192.168.100.50, port: 80, kind: fnat"),
            vs("vip: 10.50.0.9, port: 80"),
            vs("vip: 203.0.113.2, port: 8080"),
            vs("vip: 203.0.113.2, port: 443"),
            vs("vip: 203.0.113.10, port: 8080"),
            vs("vip: 192.168.100.51, port: 80"),
        );
        assert_eq!(
            problems(&text),
            [
                "load_balancers[0].vip: 192.168.100.50 is inside the subnet of switches[0] (web-ls), where nothing reaches it: it is balanced at the edge, and an instance reaches an address of a switch's subnet on that switch, never through the edge; give it an address outside every switch's subnet",
                "load_balancers[1].vip: 10.50.0.9 is inside the subnet of switches[1] (lone-ls), where nothing reaches it: the switch is on no router, so no agent answers ARP for it there (nor routes to it from elsewhere)",
                "load_balancers[2].port: 8080 is in the tier-0's SNAT port range (1024-65535) on its SNAT address 203.0.113.2: answers to the overlay's connections mapped to that port would be taken for the virtual server; use a port outside the range or an uplink address out of the SNAT pool",
            ]
        );
        // The pool and the range as given: the primary is free, the pool's
        // address from port_min on is not.
        let pooled = TIER0.replace(
            "gateway: 203.0.113.1}\n",
            "gateway: 203.0.113.1}\n  snat: {pool: [203.0.113.10], port_min: 20000}\n",
        );
        let text = format!(
            "{BASE_STATE}{pooled}load_balancers:\n{}{}{}",
            vs("vip: 203.0.113.2, port: 8080"),
            vs("vip: 203.0.113.10, port: 19999, protocol: udp"),
            vs("vip: 203.0.113.10, port: 20000, protocol: udp"),
        );
        let got = problems(&text);
        assert_eq!(got.len(), 1, "{got:#?}");
        assert!(
            got[0].starts_with("load_balancers[2].port: 20000 is in the tier-0's SNAT port range (20000-65535) on its SNAT address 203.0.113.10"),
            "{got:#?}"
        );
    }

    #[test]
    fn health_checkers_need_a_tier0_and_an_address_of_their_own() {
        let checked = "  - {vip: 10.99.0.1, port: 80, scheduler: sh, real_servers: [{ip: 192.168.100.20, port: 8080}, {ip: 192.168.100.21, port: 8080, check: {type: tcp}}, {ip: 192.168.100.22, port: 8080, check: {type: tcp}}]}\n";
        assert_eq!(
            problems(&format!("{BASE_STATE}load_balancers:\n{checked}")),
            [
                "load_balancers[0].real_servers[1].check: health checks run on the edge: the state needs a tier0 section"
            ]
        );
        let with_tier0 = format!("{BASE_STATE}{TIER0}load_balancers:\n{checked}");
        validate_state(&parse(&with_tier0).expect("parses")).expect("valid with a tier0");

        // The checks' source address (default 100.64.0.1, or as given) is
        // nobody else's, checkers or not.
        let taken = "  - {vip: 100.64.0.1, port: 80, scheduler: sh, real_servers: [{ip: 192.168.100.20, port: 8080}]}\n  - {vip: 10.99.0.2, port: 80, scheduler: sh, sorry_server: {ip: 100.64.0.1, port: 80}, real_servers: [{ip: 100.64.0.1, port: 8080}]}\n";
        let got = problems(&format!("{BASE_STATE}{TIER0}load_balancers:\n{taken}"));
        let paths: Vec<&str> = got
            .iter()
            .map(|p| p.split(": ").next().unwrap_or(""))
            .collect();
        assert_eq!(
            paths,
            [
                "load_balancers[0].vip",
                "load_balancers[1].real_servers[0].ip",
                "load_balancers[1].sorry_server.ip"
            ],
            "{got:#?}"
        );
        assert!(
            got[1].ends_with(
                "100.64.0.1 is the tier-0's health_check_ip (the source of the edge's health checks), not free for a real server; give one of them another address"
            ),
            "{got:#?}"
        );
        let moved = TIER0.replace("}\n", "}\n  health_check_ip: 100.64.0.9\n");
        let text = format!("{BASE_STATE}{moved}load_balancers:\n{taken}");
        validate_state(&parse(&text).expect("parses")).expect("valid once moved");
        let text = text.replace("ip: 100.64.0.1, port: 8080", "ip: 100.64.0.9, port: 8080");
        assert_eq!(
            problems(&text).len(),
            1,
            "the address given is checked: {:#?}",
            problems(&text)
        );
    }

    #[test]
    fn every_load_balancer_problem_has_its_path() {
        let text = format!(
            "{BASE_STATE}load_balancers:\n{}{}{}{}{}",
            vs("vip: 192.168.100.1, port: 80"),
            vs("vip: 192.168.100.255, port: 80, kind: fnat"),
            vs("vip: 10.99.0.1, port: 80, snat_ip: 10.0.0.1"),
            "  - {vip: 10.99.0.2, port: 0, scheduler: rr, real_servers: [{ip: 10.99.0.2, port: 80, weight: 70000}]}\n",
            vs("vip: 192.168.100.0, port: 80"),
        );
        let got = problems(&text);
        assert_eq!(
            got,
            [
                "load_balancers[3].port: port 0 is not a port",
                "load_balancers[3].persistence_timeout: required with lb_algo rr (only sh, dh and mh keep a client on one server by themselves)",
                "load_balancers[3].real_servers[0].ip: a real server cannot be the virtual address itself",
                "load_balancers[3].real_servers[0].weight: 70000 is above the largest weight (65535)",
                "load_balancers[0].vip: 192.168.100.1 is the gateway_ip of switches[0] (web-ls), not free for a virtual server",
                "load_balancers[1].vip: 192.168.100.255 is the broadcast address of switches[0] (web-ls), not free for a virtual server",
                "load_balancers[1].kind: full-NAT (fnat) is balanced at the edge, so it needs a tier0 section (the real servers answer the edge's SNAT address)",
                "load_balancers[2].snat_ip: only full-NAT (kind: fnat) rewrites the source; leave snat_ip out",
                "load_balancers[4].vip: 192.168.100.0 is the network address of switches[0] (web-ls), not free for a virtual server",
            ],
            "{got:#?}"
        );
        // With a tier0, full-NAT is fine; a SNAT address off the uplink is not.
        let text = format!(
            "{BASE_STATE}{TIER0}load_balancers:\n{}{}",
            vs("vip: 10.99.0.3, port: 80, kind: fnat"),
            vs("vip: 10.99.0.4, port: 80, kind: fnat, snat_ip: 10.0.0.1"),
        );
        assert_eq!(
            problems(&text),
            [
                "load_balancers[1].snat_ip: 10.0.0.1 is not an address of the tier-0's uplink (203.0.113.2, 203.0.113.10): the real servers' answers must come back to the edge"
            ]
        );
    }
}
