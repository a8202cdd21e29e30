//! Static 1:1 NAT ("public IPs"), hairpinning (RFC 4787 REQ-9, RFC 5382
//! REQ-8) and configuration changes that must reach existing sessions.

mod common;

use common::*;
use nat::{Dir, DropReason, Found, How, NatConfig};

fn cfg() -> NatConfig {
    NatConfig {
        statics: vec![
            static_entry("198.51.100.10", "10.0.0.10"),
            static_entry("198.51.100.11", "10.0.0.11"),
        ],
        ..pool_cfg()
    }
}

#[test]
fn public_ip_both_ways_ports_kept_any_remote() {
    let mut nat = nat_with(64, cfg());
    // Outbound from the private address: the public one, same port, even
    // below the pool's port range.
    let mut o = tcp_packet(ip("10.0.0.10"), 22, ip("192.0.2.5"), 5555, 0x12, 0);
    assert!(pass(&mut nat, Dir::Out, &mut o, T0));
    assert_eq!(src_of(&o), sa("198.51.100.10:22"));
    assert_eq!(nat.mappings(), 0, "no port allocation");
    // Inbound from anyone to the public address: the private one, same port.
    for (rem, proto) in [("192.0.2.99", 6u8), ("192.0.2.100", 17)] {
        let mut i = if proto == 6 {
            tcp_packet(ip(rem), 40000, ip("198.51.100.10"), 443, 0x02, 0)
        } else {
            udp_packet(ip(rem), 40000, ip("198.51.100.10"), 443, 10)
        };
        assert!(pass(&mut nat, Dir::In, &mut i, T0));
        assert_eq!(dst_of(&i), sa("10.0.0.10:443"));
        assert_eq!(src_of(&i), sa(&format!("{rem}:40000")));
    }
    // It answers pings.
    let mut ping = icmp_echo(ip("192.0.2.99"), ip("198.51.100.10"), 8, 77, 16);
    assert!(pass(&mut nat, Dir::In, &mut ping, T0));
    assert_eq!(dst_of(&ping), sa("10.0.0.10:77"));
    let mut pong = icmp_echo(ip("10.0.0.10"), ip("192.0.2.99"), 0, 77, 16);
    assert!(pass(&mut nat, Dir::Out, &mut pong, T0));
    assert_eq!(src_of(&pong), sa("198.51.100.10:77"));
    let views: Vec<_> = nat.sessions(T0).collect();
    assert_eq!(views.len(), 4);
    assert!(views.iter().all(|v| v.is_static));
    assert_eq!(
        nat.lookup_external(6, sa("198.51.100.10:8080")),
        Some(sa("10.0.0.10:8080"))
    );
    assert!(nat.is_external(ip("198.51.100.11")));
    assert!(!nat.is_external(ip("10.0.0.10")));
}

#[test]
fn static_entry_takes_precedence_over_the_pool() {
    let mut nat = nat_with(64, pool_cfg());
    let mut p = udp_packet(ip("10.0.0.10"), 5000, ip("192.0.2.5"), 53, 0);
    assert!(pass(&mut nat, Dir::Out, &mut p, T0));
    assert_eq!(src_of(&p), sa("203.0.113.1:5000"));
    // The entry appears: the pool session is cut, the next packet goes out
    // from the public address.
    assert_eq!(nat.set_config(cfg()), Ok(1));
    assert_eq!(nat.mappings(), 0);
    assert_eq!(nat.pool_usage().next().unwrap().used, [0, 0, 0]);
    let mut p = udp_packet(ip("10.0.0.10"), 5000, ip("192.0.2.5"), 53, 0);
    assert!(pass(&mut nat, Dir::Out, &mut p, T0 + S));
    assert_eq!(src_of(&p), sa("198.51.100.10:5000"));
    let mut late = udp_packet(ip("192.0.2.5"), 53, ip(POOL), 5000, 0);
    dropped(&mut nat, Dir::In, &mut late, T0 + S, DropReason::NoMapping);
}

#[test]
fn removing_or_changing_a_static_entry_cuts_its_sessions() {
    let mut nat = nat_with(64, cfg());
    for host in ["10.0.0.10", "10.0.0.11"] {
        let mut p = udp_packet(ip(host), 5000, ip("192.0.2.5"), 53, 0);
        assert!(pass(&mut nat, Dir::Out, &mut p, T0));
    }
    // .10 moves to another public address, .11 loses its entry.
    let mut c = pool_cfg();
    c.statics = vec![static_entry("198.51.100.20", "10.0.0.10")];
    assert_eq!(nat.set_config(c), Ok(2));
    assert_eq!(nat.counters().removed_config, 2);
    let mut old = udp_packet(ip("192.0.2.5"), 53, ip("198.51.100.10"), 5000, 0);
    dropped(&mut nat, Dir::In, &mut old, T0, DropReason::NoMapping);
    let mut new = udp_packet(ip("192.0.2.5"), 53, ip("198.51.100.20"), 5000, 0);
    assert!(pass(&mut nat, Dir::In, &mut new, T0));
    assert_eq!(dst_of(&new), sa("10.0.0.10:5000"));
    // .11 is judged anew: the pool.
    let mut p = udp_packet(ip("10.0.0.11"), 5000, ip("192.0.2.5"), 53, 0);
    assert!(pass(&mut nat, Dir::Out, &mut p, T0));
    assert_eq!(src_of(&p), sa("203.0.113.1:5000"));
    // A refused configuration changes nothing.
    let before = nat.len();
    assert!(nat.set_config(NatConfig::with_pool(vec![])).is_err());
    assert_eq!(nat.len(), before);
}

#[test]
fn hairpin_to_a_public_ip_both_ways() {
    let mut nat = nat_with(64, cfg());
    // A (pool) connects to B's public address.
    let syn = tcp_packet(ip("10.0.0.1"), 40000, ip("198.51.100.10"), 443, 0x02, 0);
    let d = nat.judge(Dir::Out, &syn, T0);
    assert!(d.is_hairpin(), "{d}");
    let [Some(a), Some(b)] = d.halves else {
        panic!("two halves: {d}")
    };
    assert_eq!(
        a.found,
        Found::New {
            how: How::Allocated { preserved: true },
            state: nat::SessionState::TcpSynOut,
            renewed: false
        }
    );
    assert!(matches!(
        b.found,
        Found::New {
            how: How::Static,
            ..
        }
    ));
    let mut syn = syn;
    assert!(pass(&mut nat, Dir::Out, &mut syn, T0));
    // B sees A's external endpoint (REQ-9a), at its own private address.
    assert_eq!(src_of(&syn), sa("203.0.113.1:40000"));
    assert_eq!(dst_of(&syn), sa("10.0.0.10:443"));
    // B's answer goes back the same way: from B's public address to A.
    let mut ack = tcp_packet(ip("10.0.0.10"), 443, ip("203.0.113.1"), 40000, 0x12, 0);
    assert!(pass(&mut nat, Dir::Out, &mut ack, T0 + S));
    assert_eq!(src_of(&ack), sa("198.51.100.10:443"));
    assert_eq!(dst_of(&ack), sa("10.0.0.1:40000"));
    assert_eq!(nat.counters().hairpinned, 2);
    // Both sessions are established now.
    let est = nat
        .sessions(T0 + S)
        .filter(|v| v.state == nat::SessionState::TcpEstablished && v.hairpin)
        .count();
    assert_eq!(est, 2);
    // An ICMP echo hairpinned to the public address, and its reply.
    let mut ping = icmp_echo(ip("10.0.0.1"), ip("198.51.100.10"), 8, 9, 8);
    assert!(pass(&mut nat, Dir::Out, &mut ping, T0));
    let from = src_of(&ping);
    assert_eq!(dst_of(&ping).ip(), &ip("10.0.0.10"));
    let mut pong = icmp_echo(ip("10.0.0.10"), *from.ip(), 0, dst_of(&ping).port(), 8);
    assert!(pass(&mut nat, Dir::Out, &mut pong, T0));
    assert_eq!(src_of(&pong).ip(), &ip("198.51.100.10"));
    assert_eq!(dst_of(&pong), sa("10.0.0.1:9"));
}

#[test]
fn hairpin_to_a_pool_mapping() {
    let mut nat = nat_with(64, pool_cfg());
    // B has a mapping (it talked to a STUN server).
    let mut b = udp_packet(ip("10.0.0.2"), 6000, ip("192.0.2.1"), 3478, 0);
    assert!(pass(&mut nat, Dir::Out, &mut b, T0));
    let b_ext = src_of(&b);
    assert_eq!(nat.lookup_external(17, b_ext), Some(sa("10.0.0.2:6000")));
    assert_eq!(nat.lookup_external(17, sa("203.0.113.1:1")), None);
    // A sends to B's external endpoint: B gets it from A's external endpoint.
    let mut a = udp_packet(ip("10.0.0.1"), 7000, *b_ext.ip(), b_ext.port(), 4);
    assert!(pass(&mut nat, Dir::Out, &mut a, T0));
    assert_eq!(dst_of(&a), sa("10.0.0.2:6000"));
    let a_ext = src_of(&a);
    assert_eq!(a_ext, sa("203.0.113.1:7000"));
    let mut back = udp_packet(ip("10.0.0.2"), 6000, *a_ext.ip(), a_ext.port(), 4);
    assert!(pass(&mut nat, Dir::Out, &mut back, T0));
    assert_eq!(src_of(&back), b_ext);
    assert_eq!(dst_of(&back), sa("10.0.0.1:7000"));
    // To an external endpoint nothing is mapped at: dropped, no session left.
    let before = nat.len();
    let mut lost = udp_packet(ip("10.0.0.1"), 7001, ip(POOL), 9, 4);
    dropped(&mut nat, Dir::Out, &mut lost, T0, DropReason::NoMapping);
    assert_eq!(nat.len(), before);
    // To its own external endpoint: refused.
    let mut own = udp_packet(ip("10.0.0.1"), 7000, *a_ext.ip(), a_ext.port(), 4);
    dropped(&mut nat, Dir::Out, &mut own, T0, DropReason::Unsupported);
}
