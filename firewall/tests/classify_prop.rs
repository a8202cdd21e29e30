//! Property test: the compiled classifier decides exactly like the linear
//! reference evaluator, over random rulesets (overlapping CIDRs of every
//! length, address sets with IPv6 members and host bits, port ranges,
//! source ports, ICMP types and codes, directions, also configs validation
//! would reject) and random packets biased to hit what the rules name.
//! Every classification is also checked not to allocate.

#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use alloc_count::allocs;
use control::{
    Action, AddrRef, AddrSet, DefaultRule, Direction, FirewallConfig, L2Rule, L2RuleSet, MacAddr,
    PortRange, Protocol, Rule, RuleSet, Service,
};
use firewall::{Dir, Policy, Tuple, reference};
use ipnet::IpNet;
use proptest::prelude::*;

#[global_allocator]
static GLOBAL: alloc_count::Counting = alloc_count::Counting;

/// Addresses rules and packets are built around, so they meet often.
const IPS: [[u8; 4]; 12] = [
    [10, 1, 2, 3],
    [10, 1, 2, 4],
    [10, 1, 2, 200],
    [10, 1, 3, 1],
    [10, 2, 0, 1],
    [10, 200, 0, 1],
    [192, 168, 1, 1],
    [192, 168, 1, 2],
    [192, 168, 110, 10],
    [172, 16, 5, 5],
    [172, 31, 0, 9],
    [8, 8, 8, 8],
];
const LENS: [u8; 12] = [0, 1, 7, 8, 9, 12, 16, 23, 24, 25, 31, 32];
const PORTS: [u16; 10] = [0, 22, 53, 67, 68, 80, 443, 1024, 8080, 65535];
const PROTOS: [u8; 6] = [6, 17, 1, 58, 47, 0];
const ICMP_TYPES: [u8; 4] = [0, 3, 8, 11];
const SETS: usize = 5;

fn ip() -> impl Strategy<Value = Ipv4Addr> {
    prop_oneof![
        4 => prop::sample::select(&IPS[..]).prop_map(Ipv4Addr::from),
        2 => (prop::sample::select(&IPS[..]), 0u32..512)
            .prop_map(|(b, off)| Ipv4Addr::from(u32::from(Ipv4Addr::from(b)).wrapping_add(off))),
        1 => any::<u32>().prop_map(Ipv4Addr::from),
    ]
}

/// An IPv4 network around the pool (sometimes with host bits set), or IPv6.
fn net() -> impl Strategy<Value = IpNet> {
    prop_oneof![
        8 => (ip(), prop::sample::select(&LENS[..]), any::<bool>()).prop_map(|(a, len, trunc)| {
            let n = IpNet::new(IpAddr::V4(a), len).unwrap();
            if trunc { n.trunc() } else { n }
        }),
        1 => (any::<u128>(), prop::sample::select(&[0u8, 32, 64, 128][..]))
            .prop_map(|(a, len)| IpNet::new(IpAddr::V6(Ipv6Addr::from(a)), len).unwrap().trunc()),
    ]
}

fn addr_ref() -> impl Strategy<Value = AddrRef> {
    prop_oneof![
        net().prop_map(AddrRef::Net),
        (0..SETS).prop_map(|i| AddrRef::AddrSet(format!("set-{i}"))),
    ]
}

fn port() -> impl Strategy<Value = u16> {
    prop_oneof![
        3 => prop::sample::select(&PORTS[..]),
        1 => prop::sample::select(&PORTS[..]).prop_map(|p| p.wrapping_add(1)),
        1 => any::<u16>(),
    ]
}

fn range() -> impl Strategy<Value = PortRange> {
    prop_oneof![
        3 => port().prop_map(PortRange::single),
        2 => (port(), port()).prop_map(|(a, b)| PortRange { first: a.min(b), last: a.max(b) }),
        // Reversed: never matches.
        1 => (port(), port()).prop_map(|(a, b)| PortRange { first: a, last: b }),
    ]
}

fn protocol() -> impl Strategy<Value = Protocol> {
    prop_oneof![
        2 => Just(Protocol::Any),
        5 => prop::sample::select(&PROTOS[..]).prop_map(Protocol::Number),
    ]
}

fn service() -> impl Strategy<Value = Service> {
    // Mostly the shapes validation accepts, sometimes any combination.
    let valid = (
        protocol(),
        proptest::option::of(range()),
        proptest::option::weighted(0.3, range()),
        proptest::option::of(prop::sample::select(&ICMP_TYPES[..])),
        proptest::option::of(0u8..4),
    )
        .prop_map(|(protocol, port, source_port, icmp_type, code)| {
            let ports = protocol.has_ports();
            let icmp_type = icmp_type.filter(|_| protocol.is_icmp());
            Service {
                protocol,
                port: port.filter(|_| ports),
                source_port: source_port.filter(|_| ports),
                icmp_type,
                icmp_code: code.filter(|_| icmp_type.is_some()),
            }
        });
    let wild = (
        protocol(),
        proptest::option::of(range()),
        proptest::option::of(range()),
        proptest::option::of(prop::sample::select(&ICMP_TYPES[..])),
        proptest::option::of(0u8..4),
    )
        .prop_map(
            |(protocol, port, source_port, icmp_type, icmp_code)| Service {
                protocol,
                port,
                source_port,
                icmp_type,
                icmp_code,
            },
        );
    prop_oneof![6 => valid, 1 => wild]
}

fn direction() -> impl Strategy<Value = Direction> {
    prop_oneof![
        Just(Direction::In),
        Just(Direction::Out),
        Just(Direction::InOut)
    ]
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        Just(Action::Accept),
        Just(Action::Drop),
        Just(Action::Reject)
    ]
}

fn rule() -> impl Strategy<Value = Rule> {
    (
        direction(),
        prop::collection::vec(addr_ref(), 0..3),
        prop::collection::vec(addr_ref(), 0..3),
        prop::collection::vec(service(), 0..3),
        action(),
        any::<bool>(),
    )
        .prop_map(
            |(direction, sources, destinations, services, action, log)| Rule {
                id: 0, // numbered once the rulesets are built
                direction,
                sources,
                destinations,
                services,
                action,
                log,
            },
        )
}

const MACS: [[u8; 6]; 4] = [
    [2, 0, 0, 0, 0, 1],
    [2, 0, 0, 0, 0, 2],
    [6, 0, 0, 0, 0, 3],
    [0xff; 6],
];
const ETHERTYPES: [u16; 3] = [0x0800, 0x0806, 0x86dd];

fn mac() -> impl Strategy<Value = [u8; 6]> {
    prop::sample::select(&MACS[..])
}

fn l2_rule() -> impl Strategy<Value = L2Rule> {
    (
        direction(),
        proptest::option::of(prop::sample::select(&ETHERTYPES[..])),
        prop::collection::vec(mac().prop_map(MacAddr), 0..3),
        prop::collection::vec(mac().prop_map(MacAddr), 0..3),
        prop_oneof![Just(Action::Accept), Just(Action::Drop)],
        any::<bool>(),
    )
        .prop_map(
            |(direction, ethertype, sources, destinations, action, log)| L2Rule {
                id: 0,
                direction,
                ethertype,
                sources,
                destinations,
                action,
                log,
            },
        )
}

fn config() -> impl Strategy<Value = FirewallConfig> {
    (
        prop::collection::vec(prop::collection::vec(net(), 0..5), SETS),
        prop::collection::vec(prop::collection::vec(rule(), 0..10), 0..4),
        prop::collection::vec(prop::collection::vec(l2_rule(), 0..3), 0..2),
        action(),
        any::<bool>(),
    )
        .prop_map(|(sets, rulesets, l2_rulesets, action, log)| {
            let mut id = 100;
            let mut next = || {
                id += 1;
                id
            };
            FirewallConfig {
                addrsets: sets
                    .into_iter()
                    .enumerate()
                    .map(|(i, addrs)| AddrSet {
                        name: format!("set-{i}"),
                        addrs,
                    })
                    .collect(),
                l2_rulesets: l2_rulesets
                    .into_iter()
                    .enumerate()
                    .map(|(i, rules)| L2RuleSet {
                        name: format!("l2-{i}"),
                        rules: rules
                            .into_iter()
                            .map(|r| L2Rule { id: next(), ..r })
                            .collect(),
                    })
                    .collect(),
                rulesets: rulesets
                    .into_iter()
                    .enumerate()
                    .map(|(i, rules)| RuleSet {
                        name: format!("rs-{i}"),
                        rules: rules
                            .into_iter()
                            .map(|r| Rule { id: next(), ..r })
                            .collect(),
                    })
                    .collect(),
                default_rule: DefaultRule { id: 1, action, log },
                ..FirewallConfig::allow_all()
            }
        })
}

/// A packet: direction, tuple, ICMP details.
fn packet() -> impl Strategy<Value = (Dir, Tuple, Option<(u8, u8)>)> {
    (
        prop_oneof![Just(Dir::In), Just(Dir::Out)],
        prop_oneof![
            6 => prop::sample::select(&PROTOS[..]),
            1 => any::<u8>(),
        ],
        ip(),
        ip(),
        port(),
        port(),
        (prop::sample::select(&ICMP_TYPES[..]), 0u8..4),
        0u8..8,
    )
        .prop_map(|(dir, proto, src, dst, sport, dport, (ty, code), roll)| {
            // ICMP details for ICMP packets (mostly), rarely for others.
            let icmp = match (proto, roll) {
                (1 | 58, 0) => None,
                (1 | 58, _) | (_, 7) => Some((ty, code)),
                _ => None,
            };
            let t = Tuple {
                proto,
                src,
                dst,
                sport,
                dport,
            };
            (dir, t, icmp)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn classify_equals_reference(
        cfg in config(),
        packets in prop::collection::vec(packet(), 64),
    ) {
        let p = Policy::compile(&cfg).unwrap();
        for (dir, t, icmp) in &packets {
            let before = allocs();
            let m = p.classify(*dir, t, *icmp);
            prop_assert_eq!(allocs(), before, "classify allocated");
            let want = reference::evaluate(&cfg, *dir, t, *icmp);
            prop_assert_eq!((m.rule_id, m.action, m.log), want, "{:?} {:?} {:?}", dir, t, icmp);
            let r = &p.rules()[m.rule as usize];
            prop_assert_eq!((r.id, r.action, r.log), want);
        }
    }

    #[test]
    fn classify_l2_equals_reference(
        cfg in config(),
        frames in prop::collection::vec(
            (prop_oneof![Just(Dir::In), Just(Dir::Out)], mac(), mac(), prop::sample::select(&ETHERTYPES[..])),
            16,
        ),
    ) {
        let p = Policy::compile(&cfg).unwrap();
        for (dir, src, dst, et) in frames {
            let before = allocs();
            let got = p.classify_l2(dir, src, dst, et);
            prop_assert_eq!(allocs(), before, "classify_l2 allocated");
            let want = reference::evaluate_l2(&cfg, dir, src, dst, et);
            prop_assert_eq!(got.map(|m| (m.rule_id, m.action, m.log)), want);
            if let Some(m) = got {
                prop_assert_eq!(p.rules()[m.rule as usize].id, m.rule_id);
            }
        }
    }
}
