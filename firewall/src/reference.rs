//! The obviously-correct evaluator: the firewall's matching semantics as a
//! plain loop straight over a [`FirewallConfig`], with address-set
//! membership found by walking the set's members. Far too slow for the
//! datapath (linear in rules and members); it exists so that tests can hold
//! the compiled classifier ([`crate::classify`]) equal to it.
//!
//! An address set that is not defined matches nothing here; the compiler
//! rejects such a config, as does `control::validate_firewall`.

use std::net::{IpAddr, Ipv4Addr};

use control::{Action, AddrRef, FirewallConfig, L2Rule, Rule, Service};

use crate::flow::{Dir, Tuple};

/// The L3/L4 decision for the first packet of a new flow: (rule id, action,
/// log) of the first rule that matches, else of the default rule. `icmp` =
/// `Some((type, code))` for ICMP/ICMPv6 packets.
pub fn evaluate(
    cfg: &FirewallConfig,
    dir: Dir,
    t: &Tuple,
    icmp: Option<(u8, u8)>,
) -> (u32, Action, bool) {
    cfg.rulesets
        .iter()
        .flat_map(|rs| &rs.rules)
        .find(|r| rule_matches(cfg, r, dir, t, icmp))
        .map_or(
            (
                cfg.default_rule.id,
                cfg.default_rule.action,
                cfg.default_rule.log,
            ),
            |r| (r.id, r.action, r.log),
        )
}

/// The L2 decision: (rule id, action, log) of the first L2 rule that
/// matches, `None` when none does.
pub fn evaluate_l2(
    cfg: &FirewallConfig,
    dir: Dir,
    src: [u8; 6],
    dst: [u8; 6],
    ethertype: u16,
) -> Option<(u32, Action, bool)> {
    cfg.l2_rulesets
        .iter()
        .flat_map(|rs| &rs.rules)
        .find(|r| l2_rule_matches(r, dir, src, dst, ethertype))
        .map(|r| (r.id, r.action, r.log))
}

/// True when `r` matches a packet going `dir` with tuple `t`.
pub fn rule_matches(
    cfg: &FirewallConfig,
    r: &Rule,
    dir: Dir,
    t: &Tuple,
    icmp: Option<(u8, u8)>,
) -> bool {
    dir.matches(r.direction)
        && addrs_match(cfg, &r.sources, t.src)
        && addrs_match(cfg, &r.destinations, t.dst)
        && (r.services.is_empty() || r.services.iter().any(|s| service_matches(s, t, icmp)))
}

/// True when `s` matches: protocol (`any` = all), destination port, source
/// port, ICMP type and code, each only when given. A service naming an ICMP
/// type or code never matches a packet without ICMP details.
pub fn service_matches(s: &Service, t: &Tuple, icmp: Option<(u8, u8)>) -> bool {
    s.protocol.number().is_none_or(|p| p == t.proto)
        && s.port.is_none_or(|r| r.contains(t.dport))
        && s.source_port.is_none_or(|r| r.contains(t.sport))
        && s.icmp_type
            .is_none_or(|ty| icmp.is_some_and(|(x, _)| x == ty))
        && s.icmp_code
            .is_none_or(|code| icmp.is_some_and(|(_, x)| x == code))
}

/// True when `refs` is empty ("any") or `ip` is in one of them.
fn addrs_match(cfg: &FirewallConfig, refs: &[AddrRef], ip: Ipv4Addr) -> bool {
    let ip = IpAddr::V4(ip);
    refs.is_empty()
        || refs.iter().any(|r| match r {
            AddrRef::Net(net) => net.contains(&ip),
            AddrRef::AddrSet(name) => cfg
                .addrsets
                .iter()
                .find(|s| s.name == *name)
                .is_some_and(|s| s.addrs.iter().any(|net| net.contains(&ip))),
        })
}

fn l2_rule_matches(r: &L2Rule, dir: Dir, src: [u8; 6], dst: [u8; 6], ethertype: u16) -> bool {
    dir.matches(r.direction)
        && r.ethertype.is_none_or(|e| e == ethertype)
        && (r.sources.is_empty() || r.sources.iter().any(|m| m.0 == src))
        && (r.destinations.is_empty() || r.destinations.iter().any(|m| m.0 == dst))
}
