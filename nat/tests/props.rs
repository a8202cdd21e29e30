//! Property tests: rewriting and the engine never panic on arbitrary
//! bytes (and a refused rewrite leaves the packet as it was); incremental
//! checksum updates equal a full recomputation; translating an ICMP
//! error's quote equals translating the quoted packet itself; and random
//! traffic keeps the tables consistent (no external endpoint twice,
//! endpoint-independent mapping, counts that add up).

#![allow(clippy::unwrap_used)] // test fixtures

mod common;

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddrV4};

use common::*;
use geneve::checksum;
use nat::rewrite::{self, ErrorRewrite, L4Csum, Rewrite, Translation};
use nat::{Dir, Filtering, Nat, NatConfig, PortRange, Verdict};
use proptest::prelude::*;

fn endpoint() -> impl Strategy<Value = SocketAddrV4> {
    (any::<u32>(), any::<u16>()).prop_map(|(ip, port)| SocketAddrV4::new(Ipv4Addr::from(ip), port))
}

fn rewrite_strategy() -> impl Strategy<Value = Rewrite> {
    (
        proptest::option::of(endpoint()),
        proptest::option::of(endpoint()),
    )
        .prop_map(|(src, dst)| Rewrite { src, dst })
}

fn error_rewrite_strategy() -> impl Strategy<Value = ErrorRewrite> {
    (
        proptest::option::of(any::<u32>()),
        proptest::option::of(any::<u32>()),
        proptest::option::of(endpoint()),
        proptest::option::of(endpoint()),
    )
        .prop_map(|(s, d, is, id)| ErrorRewrite {
            outer_src: s.map(Ipv4Addr::from),
            outer_dst: d.map(Ipv4Addr::from),
            inner_src: is,
            inner_dst: id,
        })
}

/// A valid packet: TCP, UDP (checksum or none) or an ICMP query.
fn packet() -> impl Strategy<Value = Vec<u8>> {
    (
        0u8..4,
        any::<u32>(),
        any::<u32>(),
        any::<u16>(),
        any::<u16>(),
        0usize..64,
        any::<u8>(),
    )
        .prop_map(|(kind, s, d, sp, dp, len, flags)| {
            let (s, d) = (Ipv4Addr::from(s), Ipv4Addr::from(d));
            match kind {
                0 => tcp_packet(s, sp, d, dp, flags, len),
                1 => udp_packet(s, sp, d, dp, len),
                2 => {
                    let mut p = udp_packet(s, sp, d, dp, len);
                    p[26] = 0;
                    p[27] = 0;
                    p
                }
                _ => icmp_echo(s, d, [8, 0, 13, 14][usize::from(flags & 3)], sp, len),
            }
        })
}

/// The transport checksum a full recomputation gives (UDP: 0 stays 0, a
/// computed 0 is 0xffff).
fn recomputed_l4(p: &[u8]) -> u16 {
    let hl = usize::from(p[0] & 0x0f) * 4;
    let (src, dst) = (
        Ipv4Addr::new(p[12], p[13], p[14], p[15]),
        Ipv4Addr::new(p[16], p[17], p[18], p[19]),
    );
    let proto = p[9];
    let mut l4 = p[hl..].to_vec();
    let at = match proto {
        6 => 16,
        17 => 6,
        _ => 2,
    };
    if proto == 17 && l4[6..8] == [0, 0] {
        return 0;
    }
    l4[at] = 0;
    l4[at + 1] = 0;
    let len = u16::try_from(l4.len()).unwrap();
    let init = if proto == 1 {
        0
    } else {
        checksum::pseudo_header_v4(src, dst, proto, len)
    };
    let c = checksum::fold(checksum::sum(&l4, init));
    if proto == 17 && c == 0 { 0xffff } else { c }
}

fn l4_field(p: &[u8]) -> u16 {
    let hl = usize::from(p[0] & 0x0f) * 4;
    let at = hl
        + match p[9] {
            6 => 16,
            17 => 6,
            _ => 2,
        };
    u16::from_be_bytes([p[at], p[at + 1]])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn rewrite_never_panics_and_refusals_change_nothing(
        bytes in proptest::collection::vec(any::<u8>(), 0..120),
        rw in rewrite_strategy(),
        erw in error_rewrite_strategy(),
        partial in any::<bool>(),
    ) {
        let csum = if partial { L4Csum::Partial } else { L4Csum::Complete };
        for t in [Translation::Packet(rw), Translation::IcmpError(erw)] {
            let mut b = bytes.clone();
            if rewrite::apply(&mut b, &t, csum).is_err() {
                prop_assert_eq!(&b, &bytes);
            }
        }
    }

    #[test]
    fn rewrite_of_damaged_packets_never_panics(
        p in packet(),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
        cut in any::<usize>(),
        rw in rewrite_strategy(),
        erw in error_rewrite_strategy(),
    ) {
        let mut e = icmp_error(ip("192.0.2.1"), ip("203.0.113.1"), 3, 4, &p, 28 + cut % 40);
        let mut p = p;
        for (at, x) in &flips {
            let n = p.len();
            p[at % n] ^= x;
            let n = e.len();
            e[at % n] ^= x;
        }
        p.truncate(cut % (p.len() + 1));
        let _ = rewrite::rewrite(&mut p, &rw, L4Csum::Complete);
        let _ = rewrite::rewrite_icmp_error(&mut e, &erw);
    }

    #[test]
    fn incremental_checksums_equal_full_recomputation(
        p in packet(),
        rw in rewrite_strategy(),
    ) {
        let mut q = p.clone();
        rewrite::rewrite(&mut q, &rw, L4Csum::Complete).unwrap();
        let ip = geneve::ipv4::Packet::new_checked(&q[..]).unwrap();
        prop_assert!(ip.verify_checksum());
        let mut h = q[..20].to_vec();
        h[10] = 0;
        h[11] = 0;
        prop_assert_eq!(ip.checksum(), checksum::fold(checksum::sum(&h, 0)));
        let hl = 20;
        let degenerate = q[9] == 1 && q[hl..].iter().enumerate().all(|(i, &b)| b == 0 || i == 2 || i == 3);
        if !degenerate {
            // (An ICMP message all zero but its checksum is the one case where
            // RFC 1624's update, like Linux's, gives 0x0000 for 0xffff.)
            prop_assert_eq!(l4_field(&q), recomputed_l4(&q));
            prop_assert!(all_checksums_ok(&q));
        }
        if let Some(src) = rw.src {
            prop_assert_eq!(*src.ip(), Ipv4Addr::new(q[12], q[13], q[14], q[15]));
        }
    }

    #[test]
    fn translating_a_quote_equals_translating_the_packet(
        p in packet(),
        quote in 28usize..200,
        inner_src in proptest::option::of(endpoint()),
        inner_dst in proptest::option::of(endpoint()),
        outer in proptest::option::of(any::<u32>()),
    ) {
        let mut e = icmp_error(ip("192.0.2.1"), ip("203.0.113.1"), 3, 4, &p, quote);
        let erw = ErrorRewrite {
            outer_src: None,
            outer_dst: outer.map(Ipv4Addr::from),
            inner_src,
            inner_dst,
        };
        rewrite::rewrite_icmp_error(&mut e, &erw).unwrap();
        let mut want = p.clone();
        let rw = Rewrite { src: inner_src, dst: inner_dst };
        rewrite::rewrite(&mut want, &rw, L4Csum::Complete).unwrap();
        let q = quote.min(p.len());
        // A quote that ends inside the TCP checksum holds half of it: left
        // alone, like a quote without it.
        let q = if p[9] == 6 && q == 37 { 36 } else { q };
        prop_assert_eq!(&e[28..28 + q], &want[..q]);
        prop_assert!(all_checksums_ok(&e));
    }

    #[test]
    fn engine_never_panics_on_arbitrary_bytes(
        bytes in proptest::collection::vec(any::<u8>(), 0..100),
        damaged in packet(),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
    ) {
        let mut nat = nat_with(16, NatConfig {
            statics: vec![static_entry("198.51.100.10", "10.0.0.10")],
            ..pool_cfg()
        });
        let mut d = damaged;
        for (at, x) in &flips {
            let n = d.len();
            d[at % n] ^= x;
        }
        for mut b in [bytes.clone(), d.clone(), icmp_error(ip("1.2.3.4"), ip(POOL), 3, 4, &d, 40)] {
            for dir in [Dir::Out, Dir::In] {
                let _ = nat.judge(dir, &b, T0).to_string();
                let _ = nat.process(dir, &mut b, T0);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn random_traffic_keeps_the_tables_consistent(
        ops in proptest::collection::vec((0u8..6, 0u32..6, 0u16..4, 0u32..4, 0u16..3, any::<u16>()), 1..300),
        adf in any::<bool>(),
    ) {
        let cfg = NatConfig {
            pool: vec![ip("203.0.113.1"), ip("203.0.113.2")],
            port_range: PortRange { first: 2000, last: 2005 },
            filtering: if adf { Filtering::AddressDependent } else { Filtering::EndpointIndependent },
            statics: vec![static_entry("198.51.100.10", "10.0.0.5")],
            ..pool_cfg()
        };
        let mut nat = Nat::with_seed(40, cfg, 1).unwrap();
        let mut now = T0;
        for (op, host, port, rem, proto, x) in ops {
            let src = inside(host);
            let sport = 2000 + port;
            let dst = Ipv4Addr::from(0xc633_6400 + rem); // 198.51.100.0 + rem
            let mk = |s, sp, d, dp| match proto {
                0 => udp_packet(s, sp, d, dp, 0),
                1 => tcp_packet(s, sp, d, dp, [0x02, 0x12, 0x10, 0x11, 0x04][usize::from(x % 5)], 0),
                _ => icmp_echo(s, d, if x % 2 == 0 { 8 } else { 0 }, sp, 0),
            };
            match op {
                0 | 1 => {
                    let mut p = mk(src, sport, dst, 53);
                    let _ = nat.process(Dir::Out, &mut p, now);
                }
                2 => {
                    let to = if x % 3 == 0 { ip("198.51.100.10") } else { ip("203.0.113.1") };
                    let mut p = mk(dst, 53, to, 2000 + x % 8);
                    let _ = nat.process(Dir::In, &mut p, now);
                }
                3 => {
                    // Hairpin toward one of our addresses.
                    let to = if x % 2 == 0 { ip("198.51.100.10") } else { ip("203.0.113.2") };
                    let mut p = mk(src, sport, to, 2000 + x % 8);
                    let _ = nat.process(Dir::Out, &mut p, now);
                }
                4 => now += u64::from(x) * S / 64,
                _ => {
                    nat.expire(now, usize::from(x % 16));
                }
            }
            // Invariants.
            let views: Vec<_> = nat.sessions(now).collect();
            let mut by_inside: HashMap<(u8, SocketAddrV4), SocketAddrV4> = HashMap::new();
            let mut by_outside: HashMap<(u8, SocketAddrV4), SocketAddrV4> = HashMap::new();
            let mut keys = HashSet::new();
            let mut per_proto = [0u32; 3];
            for v in &views {
                prop_assert!(keys.insert((v.proto, v.outside, v.remote)), "outside 5-tuple twice");
                per_proto[match v.proto { 6 => 0, 17 => 1, _ => 2 }] += 1;
                let o = *by_inside.entry((v.proto, v.inside)).or_insert(v.outside);
                prop_assert_eq!(o, v.outside, "one internal endpoint, two mappings");
                let i = *by_outside.entry((v.proto, v.outside)).or_insert(v.inside);
                prop_assert_eq!(i, v.inside, "one external endpoint, two internal ones");
                if v.is_static {
                    prop_assert_eq!(v.outside.port(), v.inside.port());
                } else {
                    prop_assert!(v.proto == 1 || (2000..=2005).contains(&v.outside.port()));
                }
            }
            prop_assert_eq!(per_proto, nat.sessions_by_proto());
            let pool_ports = by_outside.keys().filter(|(_, o)| o.ip().octets()[0] == 203).count();
            let used: u32 = nat.pool_usage().map(|u| u.used.iter().sum::<u32>()).sum();
            prop_assert_eq!(used as usize, pool_ports);
            prop_assert_eq!(nat.mappings(), pool_ports);
        }
        // Everything expires in the end, and every port comes back.
        nat.expire(now + 10_000 * S, usize::MAX);
        prop_assert_eq!(nat.len(), 0);
        prop_assert_eq!(nat.mappings(), 0);
        prop_assert!(nat.pool_usage().all(|u| u.used == [0, 0, 0]));
        let _ = Verdict::Drop(nat::DropReason::NoMapping);
    }
}
