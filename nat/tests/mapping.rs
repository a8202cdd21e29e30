//! Mapping and filtering behaviour (RFC 4787, RFC 5382, RFC 5508 REQ-1):
//! endpoint-independent mapping, endpoint-independent vs address-dependent
//! filtering, tens of thousands of concurrent mappings on one external
//! address, exhaustion and a full table, ICMP identifiers as ports, paired
//! pooling.

mod common;

use std::collections::HashSet;
use std::net::SocketAddrV4;

use common::*;
use nat::{Dir, DropReason, Filtering, NatConfig, PortRange, Verdict};

#[test]
fn endpoint_independent_mapping_reuses_the_external_port() {
    let mut nat = nat_with(64, pool_cfg());
    let mut a = udp_packet(ip("10.0.0.1"), 5000, ip("198.51.100.1"), 53, 20);
    let mut b = udp_packet(ip("10.0.0.1"), 5000, ip("198.51.100.2"), 3478, 20);
    assert!(pass(&mut nat, Dir::Out, &mut a, T0));
    assert!(pass(&mut nat, Dir::Out, &mut b, T0));
    // Same internal endpoint, two remotes: one external endpoint (and the
    // internal port is kept, being free).
    assert_eq!(src_of(&a), sa("203.0.113.1:5000"));
    assert_eq!(src_of(&b), src_of(&a));
    assert_eq!(nat.mappings(), 1);
    assert_eq!(nat.len(), 2);
    // Both remotes' answers reach the internal endpoint.
    for (rem, port) in [("198.51.100.1", 53), ("198.51.100.2", 3478)] {
        let mut r = udp_packet(ip(rem), port, ip(POOL), 5000, 8);
        assert!(pass(&mut nat, Dir::In, &mut r, T0 + S));
        assert_eq!(dst_of(&r), sa("10.0.0.1:5000"));
    }
    // TCP too: two connections from one socket, one external port.
    let mut s1 = tcp_packet(ip("10.0.0.1"), 6000, ip("198.51.100.1"), 443, 0x02, 0);
    let mut s2 = tcp_packet(ip("10.0.0.1"), 6000, ip("198.51.100.2"), 443, 0x02, 0);
    assert!(pass(&mut nat, Dir::Out, &mut s1, T0));
    assert!(pass(&mut nat, Dir::Out, &mut s2, T0));
    assert_eq!(src_of(&s1), src_of(&s2));
    // Another internal endpoint wanting the same port gets another one.
    let mut c = udp_packet(ip("10.0.0.2"), 5000, ip("198.51.100.1"), 53, 20);
    assert!(pass(&mut nat, Dir::Out, &mut c, T0));
    assert_eq!(*src_of(&c).ip(), ip(POOL));
    assert_ne!(src_of(&c).port(), 5000);
    assert!(src_of(&c).port() >= 1024);
}

#[test]
fn endpoint_independent_filtering_lets_any_remote_in() {
    let mut nat = nat_with(64, pool_cfg());
    let mut a = udp_packet(ip("10.0.0.1"), 5000, ip("198.51.100.1"), 3478, 20);
    assert!(pass(&mut nat, Dir::Out, &mut a, T0));
    let ext = src_of(&a);
    // A remote never contacted reaches the mapping.
    let mut r = udp_packet(ip("192.0.2.77"), 9999, *ext.ip(), ext.port(), 8);
    assert!(pass(&mut nat, Dir::In, &mut r, T0 + S));
    assert_eq!(dst_of(&r), sa("10.0.0.1:5000"));
    // And the inside's answer to it uses the same mapping.
    let mut back = udp_packet(ip("10.0.0.1"), 5000, ip("192.0.2.77"), 9999, 8);
    assert!(pass(&mut nat, Dir::Out, &mut back, T0 + S));
    assert_eq!(src_of(&back), ext);
    assert_eq!(nat.mappings(), 1);
    let v = nat
        .sessions(T0 + S)
        .find(|v| v.remote == sa("192.0.2.77:9999"));
    assert!(v.is_some_and(|v| v.inbound));
    // Nothing mapped at another port: dropped.
    let mut stray = udp_packet(ip("192.0.2.77"), 9999, *ext.ip(), ext.port() + 1, 8);
    dropped(&mut nat, Dir::In, &mut stray, T0, DropReason::NoMapping);
    // A TCP SYN from anywhere to a TCP mapping (simultaneous open / hole punching).
    let mut syn = tcp_packet(ip("10.0.0.1"), 7000, ip("198.51.100.1"), 7000, 0x02, 0);
    assert!(pass(&mut nat, Dir::Out, &mut syn, T0));
    let text = src_of(&syn);
    let mut syn_in = tcp_packet(ip("192.0.2.8"), 7000, *text.ip(), text.port(), 0x02, 0);
    assert!(pass(&mut nat, Dir::In, &mut syn_in, T0));
    assert_eq!(dst_of(&syn_in), sa("10.0.0.1:7000"));
    // A RST from anywhere opens nothing.
    let mut rst = tcp_packet(ip("192.0.2.9"), 7000, *text.ip(), text.port(), 0x04, 0);
    dropped(&mut nat, Dir::In, &mut rst, T0, DropReason::NoMapping);
    assert_eq!(nat.counters().drops(DropReason::NoMapping), 2);
}

#[test]
fn address_dependent_filtering_admits_only_contacted_addresses() {
    let cfg = NatConfig {
        filtering: Filtering::AddressDependent,
        ..pool_cfg()
    };
    let mut nat = nat_with(64, cfg);
    let mut a = udp_packet(ip("10.0.0.1"), 5000, ip("198.51.100.1"), 3478, 20);
    assert!(pass(&mut nat, Dir::Out, &mut a, T0));
    let ext = src_of(&a);
    // The contacted address, from another port: in (address-dependent).
    let mut r = udp_packet(ip("198.51.100.1"), 3479, *ext.ip(), ext.port(), 8);
    assert!(pass(&mut nat, Dir::In, &mut r, T0 + S));
    assert_eq!(dst_of(&r), sa("10.0.0.1:5000"));
    // Another address: filtered, counted.
    let mut other = udp_packet(ip("192.0.2.77"), 3478, *ext.ip(), ext.port(), 8);
    dropped(&mut nat, Dir::In, &mut other, T0 + S, DropReason::Filtered);
    assert_eq!(nat.counters().drops(DropReason::Filtered), 1);
    // Once the inside sent to it, it is admitted.
    let mut open = udp_packet(ip("10.0.0.1"), 5000, ip("192.0.2.77"), 1, 8);
    assert!(pass(&mut nat, Dir::Out, &mut open, T0 + 2 * S));
    let mut again = udp_packet(ip("192.0.2.77"), 3478, *ext.ip(), ext.port(), 8);
    assert!(pass(&mut nat, Dir::In, &mut again, T0 + 2 * S));
    // Switching to endpoint-independent filtering applies at once.
    let mut cfg = nat.config().clone();
    cfg.filtering = Filtering::EndpointIndependent;
    assert_eq!(nat.set_config(cfg), Ok(0));
    let mut third = udp_packet(ip("192.0.2.99"), 1, *ext.ip(), ext.port(), 8);
    assert!(pass(&mut nat, Dir::In, &mut third, T0 + 3 * S));
}

#[test]
fn turning_address_dependent_filtering_on_applies_to_existing_mappings() {
    let mut nat = nat_with(64, pool_cfg());
    let mut a = udp_packet(ip("10.0.0.1"), 5000, ip("198.51.100.1"), 3478, 20);
    assert!(pass(&mut nat, Dir::Out, &mut a, T0));
    let ext = src_of(&a);
    let cfg = NatConfig {
        filtering: Filtering::AddressDependent,
        ..pool_cfg()
    };
    assert_eq!(nat.set_config(cfg), Ok(0));
    let mut ok = udp_packet(ip("198.51.100.1"), 1, *ext.ip(), ext.port(), 8);
    assert!(pass(&mut nat, Dir::In, &mut ok, T0 + S));
    let mut no = udp_packet(ip("192.0.2.77"), 1, *ext.ip(), ext.port(), 8);
    dropped(&mut nat, Dir::In, &mut no, T0 + S, DropReason::Filtered);
}

#[test]
fn sixty_thousand_concurrent_mappings_on_one_address_never_collide() {
    const N: u32 = 64_512; // the whole default range
    let mut nat = nat_with(N as usize + 16, pool_cfg());
    let mut seen = HashSet::new();
    for i in 0..N {
        // Every internal endpoint asks for the same port: one keeps it, the
        // rest are probed.
        let mut p = udp_packet(inside(i + 1), 40000, ip("198.51.100.1"), 53, 0);
        assert!(pass(&mut nat, Dir::Out, &mut p, T0), "mapping {i}");
        let ext = src_of(&p);
        assert_eq!(*ext.ip(), ip(POOL));
        assert!(ext.port() >= 1024);
        assert!(
            seen.insert(ext.port()),
            "port {} handed out twice",
            ext.port()
        );
    }
    assert_eq!(nat.mappings(), N as usize);
    let pool = nat.pool_usage().next().unwrap();
    assert_eq!(pool.used[1], N);
    assert_eq!(pool.size[1], N);
    // The views agree: every outside endpoint once.
    let outs: HashSet<SocketAddrV4> = nat.sessions(T0).map(|v| v.outside).collect();
    assert_eq!(outs.len(), N as usize);
    // One more: exhausted, counted against the address; TCP is unaffected.
    let mut p = udp_packet(inside(N + 1), 40000, ip("198.51.100.1"), 53, 0);
    dropped(&mut nat, Dir::Out, &mut p, T0, DropReason::Exhausted);
    assert_eq!(nat.pool_usage().next().unwrap().failures, [0, 1, 0]);
    let mut t = tcp_packet(inside(N + 1), 40000, ip("198.51.100.1"), 443, 0x02, 0);
    assert!(pass(&mut nat, Dir::Out, &mut t, T0));
    assert_eq!(src_of(&t), sa("203.0.113.1:40000"));
}

#[test]
fn exhaustion_is_counted_and_existing_flows_still_translate() {
    let cfg = NatConfig {
        port_range: PortRange {
            first: 20000,
            last: 20003,
        },
        ..pool_cfg()
    };
    let mut nat = nat_with(64, cfg);
    let mut exts = Vec::new();
    for i in 1..=4 {
        let mut p = udp_packet(inside(i), 5000, ip("198.51.100.1"), 53, 0);
        assert!(pass(&mut nat, Dir::Out, &mut p, T0));
        exts.push(src_of(&p));
    }
    for i in 5..=7 {
        let mut p = udp_packet(inside(i), 5000, ip("198.51.100.1"), 53, 0);
        dropped(&mut nat, Dir::Out, &mut p, T0, DropReason::Exhausted);
    }
    assert_eq!(nat.counters().drops(DropReason::Exhausted), 3);
    let u = nat.pool_usage().next().unwrap();
    assert_eq!((u.used[1], u.size[1], u.failures[1]), (4, 4, 3));
    // The four mapped endpoints still work both ways, new remotes included
    // (their mapping exists: no port needed).
    for (i, ext) in (1..=4).zip(&exts) {
        let mut o = udp_packet(inside(i), 5000, ip("198.51.100.2"), 53, 0);
        assert!(pass(&mut nat, Dir::Out, &mut o, T0 + S));
        assert_eq!(src_of(&o), *ext);
        let mut r = udp_packet(ip("198.51.100.1"), 53, *ext.ip(), ext.port(), 4);
        assert!(pass(&mut nat, Dir::In, &mut r, T0 + S));
        assert_eq!(dst_of(&r), SocketAddrV4::new(inside(i), 5000));
    }
    // The judgement says which address ran out.
    let p = udp_packet(inside(9), 5000, ip("198.51.100.1"), 53, 0);
    let d = nat.judge(Dir::Out, &p, T0);
    assert_eq!(d.why, Some(nat::Why::Exhausted { ext_ip: ip(POOL) }));
    assert!(d.to_string().contains("no free port on 203.0.113.1"), "{d}");
}

#[test]
fn full_table_refuses_new_sessions_only() {
    let mut nat = nat_with(3, pool_cfg());
    let mut first = Vec::new();
    for i in 1..=3 {
        let mut p = udp_packet(inside(i), 5000, ip("198.51.100.1"), 53, 0);
        assert!(pass(&mut nat, Dir::Out, &mut p, T0));
        first.push(src_of(&p));
    }
    let mut p = udp_packet(inside(4), 5000, ip("198.51.100.1"), 53, 0);
    // The judgement alone (a trace) already says so.
    let d = nat.judge(Dir::Out, &p, T0);
    assert_eq!(d.verdict, Verdict::Drop(DropReason::TableFull), "{d}");
    dropped(&mut nat, Dir::Out, &mut p, T0, DropReason::TableFull);
    // A new remote of an existing mapping also needs a session.
    let mut p = udp_packet(inside(1), 5000, ip("198.51.100.9"), 53, 0);
    dropped(&mut nat, Dir::Out, &mut p, T0, DropReason::TableFull);
    assert_eq!(nat.counters().drops(DropReason::TableFull), 2);
    for (i, ext) in (1..=3).zip(&first) {
        let mut r = udp_packet(ip("198.51.100.1"), 53, *ext.ip(), ext.port(), 0);
        assert!(pass(&mut nat, Dir::In, &mut r, T0 + S));
        assert_eq!(dst_of(&r), SocketAddrV4::new(inside(i), 5000));
    }
}

#[test]
fn icmp_identifiers_are_mapped_like_ports() {
    let mut nat = nat_with(64, pool_cfg());
    // Two inside hosts ping the same remote with the same identifier.
    let mut a = icmp_echo(ip("10.0.0.1"), ip("198.51.100.1"), 8, 7, 32);
    let mut b = icmp_echo(ip("10.0.0.2"), ip("198.51.100.1"), 8, 7, 32);
    assert!(pass(&mut nat, Dir::Out, &mut a, T0));
    assert!(pass(&mut nat, Dir::Out, &mut b, T0));
    let (ia, ib) = (src_of(&a), src_of(&b));
    assert_eq!((*ia.ip(), *ib.ip()), (ip(POOL), ip(POOL)));
    assert_eq!(ia.port(), 7, "the first keeps its identifier");
    assert_ne!(ia.port(), ib.port());
    // The replies go back to the right host, with the original identifier.
    for (ext, host) in [(ia, "10.0.0.1"), (ib, "10.0.0.2")] {
        let mut r = icmp_echo(ip("198.51.100.1"), ip(POOL), 0, ext.port(), 32);
        assert!(pass(&mut nat, Dir::In, &mut r, T0 + S));
        assert_eq!(dst_of(&r), SocketAddrV4::new(ip(host), 7));
    }
    // An unsolicited echo reply, or an echo request to a pool address: no.
    let mut r = icmp_echo(ip("198.51.100.1"), ip(POOL), 0, 999, 8);
    dropped(&mut nat, Dir::In, &mut r, T0, DropReason::NoMapping);
    let mut q = icmp_echo(ip("198.51.100.1"), ip(POOL), 8, ia.port(), 8);
    dropped(&mut nat, Dir::In, &mut q, T0, DropReason::NoMapping);
    // An echo reply from the inside with no session opens nothing.
    let mut r = icmp_echo(ip("10.0.0.3"), ip("198.51.100.1"), 0, 5, 8);
    dropped(&mut nat, Dir::Out, &mut r, T0, DropReason::NoMapping);
    assert_eq!(nat.sessions_by_proto(), [0, 0, 2]);
}

#[test]
fn paired_pooling_keeps_an_internal_address_on_one_external_address() {
    let cfg = NatConfig::with_pool(vec![
        ip("203.0.113.1"),
        ip("203.0.113.2"),
        ip("203.0.113.3"),
    ]);
    let mut nat = nat_with(4096, cfg);
    let mut used = HashSet::new();
    for host in 1..=64 {
        let mut ext = None;
        for (k, port) in (0..8u16).map(|k| (k, 1000 + k)) {
            let dst = if k % 2 == 0 {
                "198.51.100.1"
            } else {
                "198.51.100.2"
            };
            let mut p = if k % 3 == 0 {
                tcp_packet(inside(host), port, ip(dst), 443, 0x02, 0)
            } else {
                udp_packet(inside(host), port, ip(dst), 53, 0)
            };
            assert!(pass(&mut nat, Dir::Out, &mut p, T0));
            let got = *src_of(&p).ip();
            assert_eq!(*ext.get_or_insert(got), got, "host {host} moved address");
        }
        used.insert(ext.unwrap());
    }
    assert_eq!(used.len(), 3, "all pool addresses in use");
}

#[test]
fn fragments_and_other_protocols_are_dropped_and_counted() {
    let mut nat = nat_with(64, pool_cfg());
    let mut f = udp_packet(ip("10.0.0.1"), 5000, ip("198.51.100.1"), 53, 20);
    f[6] = 0x20; // more fragments
    dropped(&mut nat, Dir::Out, &mut f, T0, DropReason::Fragment);
    let mut g = udp_packet(ip("10.0.0.1"), 5000, ip("198.51.100.1"), 53, 20);
    g[9] = 47;
    dropped(&mut nat, Dir::Out, &mut g, T0, DropReason::Unsupported);
    let mut m = vec![0x45, 0, 0];
    dropped(&mut nat, Dir::In, &mut m, T0, DropReason::Malformed);
    let c = nat.counters();
    assert_eq!(
        (
            c.drops(DropReason::Fragment),
            c.drops(DropReason::Unsupported),
            c.drops(DropReason::Malformed)
        ),
        (1, 1, 1)
    );
    assert_eq!(nat.len(), 0);
    assert!(matches!(
        nat.judge(Dir::Out, &f, T0).verdict,
        Verdict::Drop(DropReason::Fragment)
    ));
}
