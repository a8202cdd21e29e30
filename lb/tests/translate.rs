//! What the balancer writes into packets: NAT and full NAT both ways, the
//! SNAT port allocation (collision-free, found again by the reverse
//! lookup), ICMP errors in both directions (outer header and quote, every
//! checksum verified from scratch), and the limits: reply 5-tuple
//! conflicts, a full table, memory per connection.

#![allow(clippy::unwrap_used)] // test fixtures

mod common;

use std::collections::HashSet;
use std::net::SocketAddrV4;

use common::*;
use control::lb::{ForwardKind, LbProtocol, Scheduler};
use lb::engine::{Balancer, DropReason, How, Verdict};

#[test]
fn nat_rewrites_destination_and_back() {
    let cfg = vs(80, Scheduler::Rr, ForwardKind::Nat, reals(1, |_| 1));
    let mut b = balancer(10, &[svc(cfg)]);
    let mut p = tcp_packet(client(1), 4000, ip(VIP), 80, SYN, 0);
    let d = fwd(&mut b, &mut p, T0);
    assert_eq!(tuple(&p), (client(1), 4000, ip("192.168.1.1"), 8080));
    assert_eq!(d.snat, None);
    let mut r = tcp_packet(ip("192.168.1.1"), 8080, client(1), 4000, SYN | ACK, 0);
    rev(&mut b, &mut r, T0);
    assert_eq!(tuple(&r), (ip(VIP), 80, client(1), 4000));
    let text = d.to_string();
    assert!(text.contains("real server 192.168.1.1:8080"), "{text}");
}

#[test]
fn fnat_ports_are_unique_and_found_back() {
    let mut cfg = vs(80, Scheduler::Rr, ForwardKind::Fnat, reals(1, |_| 1));
    cfg.protocol = LbProtocol::Udp;
    let mut b = balancer(10_000, &[svc(cfg.clone())]);
    let mut seen = HashSet::new();
    let mut sent = Vec::new();
    // 5000 clients all from port 40000 to the one real server.
    for i in 0..5000 {
        let mut p = udp_packet(client(i), 40000, ip(VIP), 80, 8);
        let d = fwd(&mut b, &mut p, T0);
        assert!(matches!(d.verdict, Verdict::Translate(_)), "{i}: {d}");
        let s = src_of(&p);
        assert_eq!(*s.ip(), ip(SNAT));
        assert!(s.port() >= 1024);
        assert!(seen.insert(s.port()), "port {} given twice", s.port());
        assert_eq!(dst_of(&p), sa("192.168.1.1:8080"));
        assert_eq!(d.snat, Some(s));
        sent.push((i, s));
    }
    // The first kept its port (free then); the others could not.
    assert_eq!(sent[0].1.port(), 40000);
    // Replies to each SNAT endpoint go back to their client.
    for (i, s) in sent {
        let mut r = udp_packet(ip("192.168.1.1"), 8080, *s.ip(), s.port(), 8);
        rev(&mut b, &mut r, T0);
        assert_eq!(tuple(&r), (ip(VIP), 80, client(i), 40000));
    }
    // Another real server: the SNAT ports are per real server.
    let mut cfg2 = cfg;
    cfg2.real_servers = reals(2, |_| 1);
    b.set_services(&[svc(cfg2)], T0).unwrap();
    let mut p = udp_packet(client(90_000), 40000, ip(VIP), 80, 8);
    fwd(&mut b, &mut p, T0);
    assert_eq!(dst_of(&p), SocketAddrV4::new(reals(2, |_| 1)[1].ip, 8080));
    assert_eq!(src_of(&p).port(), 40000);
}

#[test]
fn fnat_default_snat_address() {
    let mut cfg = vs(80, Scheduler::Rr, ForwardKind::Fnat, reals(1, |_| 1));
    cfg.snat_ip = None;
    let mut b = Balancer::with_seed(10, 1);
    let err = b.set_services(&[svc(cfg.clone())], T0).unwrap_err();
    assert!(err.to_string().contains("SNAT"), "{err}");
    b.set_default_snat_ip(Some(ip("198.51.100.1")));
    b.set_services(&[svc(cfg)], T0).unwrap();
    let mut p = tcp_packet(client(1), 5, ip(VIP), 80, SYN, 0);
    fwd(&mut b, &mut p, T0);
    // Port 5 is below the SNAT range: another one is allocated.
    assert_eq!(*src_of(&p).ip(), ip("198.51.100.1"));
    assert!(src_of(&p).port() >= 1024);
    let first = src_of(&p);
    // A new default applies to new connections at once; the existing one
    // keeps its SNAT endpoint both ways.
    b.set_default_snat_ip(Some(ip("198.51.100.2")));
    let mut p = tcp_packet(client(2), 5000, ip(VIP), 80, SYN, 0);
    fwd(&mut b, &mut p, T0);
    assert_eq!(src_of(&p), sa("198.51.100.2:5000"));
    let mut p = tcp_packet(client(1), 5, ip(VIP), 80, ACK, 0);
    fwd(&mut b, &mut p, T0);
    assert_eq!(src_of(&p), first);
    let mut r = tcp_packet(ip("192.168.1.1"), 8080, *first.ip(), first.port(), ACK, 0);
    rev(&mut b, &mut r, T0);
    assert_eq!(dst_of(&r), SocketAddrV4::new(client(1), 5));
}

#[test]
fn icmp_errors_both_ways() {
    for kind in [ForwardKind::Nat, ForwardKind::Fnat] {
        let mut cfg = vs(53, Scheduler::Rr, kind, reals(1, |_| 1));
        cfg.protocol = LbProtocol::Udp;
        let mut b = balancer(10, &[svc(cfg)]);
        let real = sa("192.168.1.1:8080");
        let mut q = udp_packet(client(1), 5353, ip(VIP), 53, 20);
        fwd(&mut b, &mut q, T0);
        let local = src_of(&q);
        // What the real server received: it answers port unreachable
        // (quoting it whole), from itself to the local endpoint.
        let got = q.clone();
        let mut e = icmp_error(*real.ip(), *local.ip(), 3, 3, &got, got.len());
        let d = rev(&mut b, &mut e, T0);
        assert!(matches!(d.how, Some(How::IcmpError(_))), "{kind:?}: {d}");
        let (s, _, dd, _) = tuple_ip(&e);
        assert_eq!((s, dd), (ip(VIP), client(1)), "{kind:?}");
        assert_eq!(
            quoted_tuple(&e),
            (client(1), 5353, ip(VIP), 53),
            "{kind:?}: the quote is what the client sent"
        );
        // Quoted whole: its UDP checksum verifies too (checked by rev).
        let sent = udp_packet(client(1), 5353, ip(VIP), 53, 20);
        assert_eq!(&e[28..], &sent[..], "{kind:?}");
        // The client's error about a reply (fragmentation needed), 8 bytes
        // of UDP quoted: back to the real server.
        let mut reply = udp_packet(*real.ip(), 8080, *local.ip(), local.port(), 1400);
        rev(&mut b, &mut reply, T0);
        assert_eq!(src_of(&reply), sa(&format!("{VIP}:53")));
        let mut e = icmp_error(client(1), ip(VIP), 3, 4, &reply, 28);
        let d = fwd(&mut b, &mut e, T0);
        assert!(matches!(d.verdict, Verdict::Translate(_)), "{kind:?}: {d}");
        let (s, _, dd, _) = tuple_ip(&e);
        assert_eq!((s, dd), (*local.ip(), *real.ip()), "{kind:?}");
        assert_eq!(
            quoted_tuple(&e),
            (*real.ip(), 8080, *local.ip(), local.port()),
            "{kind:?}"
        );
        assert_eq!(b.view(T0).icmp_errors, 2);
        // About no connection: dropped to the virtual address, passed back.
        let stray = udp_packet(ip(VIP), 53, client(2), 1, 10);
        let e = icmp_error(client(2), ip(VIP), 3, 3, &stray, 28);
        assert_eq!(
            b.forward(&e, T0).verdict,
            Verdict::Drop(DropReason::NoConnection)
        );
    }
}

/// Outer addresses of any IPv4 packet (ports unread).
fn tuple_ip(b: &[u8]) -> (std::net::Ipv4Addr, u16, std::net::Ipv4Addr, u16) {
    let p = geneve::ipv4::Packet::new_checked(b).unwrap();
    (p.src(), 0, p.dst(), 0)
}

#[test]
fn nat_reply_conflict_is_refused() {
    // Two virtual servers, one real server, one client endpoint: NAT could
    // not tell the replies apart.
    let a = vs(80, Scheduler::Rr, ForwardKind::Nat, reals(1, |_| 1));
    let mut c = a.clone();
    c.port = 81;
    let mut b = balancer(10, &[svc(a), svc(c)]);
    assert!(syn_to(&mut b, client(1), 7, 80, T0).is_some());
    assert_eq!(syn_to(&mut b, client(1), 7, 81, T0), None);
    assert_eq!(b.drops(DropReason::Conflict), 1);
    // Once the first has expired, the second may go.
    assert!(syn_to(&mut b, client(1), 7, 81, T0 + 61 * S).is_some());
    assert_eq!(b.len(), 1);
}

#[test]
fn full_table_is_a_counted_drop() {
    let cfg = vs(80, Scheduler::Wlc, ForwardKind::Fnat, reals(3, |_| 1));
    let mut b = balancer(100, &[svc(cfg)]);
    let mut ok = 0;
    for i in 0..150 {
        if syn_to(&mut b, client(i), 1, 80, T0).is_some() {
            ok += 1;
        }
    }
    assert_eq!(ok, 100);
    assert_eq!(b.drops(DropReason::TableFull), 50);
    assert_eq!(b.len(), 100);
    // Existing connections still pass; new ones once some expire.
    let mut p = tcp_packet(client(5), 1, ip(VIP), 80, ACK, 0);
    assert!(matches!(
        fwd(&mut b, &mut p, T0).verdict,
        Verdict::Translate(_)
    ));
    assert_eq!(syn_to(&mut b, client(500), 1, 80, T0 + 30 * S), None);
    b.tick(T0 + 61 * S);
    assert!(syn_to(&mut b, client(500), 1, 80, T0 + 61 * S).is_some());
}

#[test]
fn full_template_table_is_a_counted_drop() {
    let mut cfg = vs(80, Scheduler::Rr, ForwardKind::Nat, reals(2, |_| 1));
    cfg.persistence_timeout = Some(600);
    let mut b = balancer(10, &[svc(cfg)]);
    for i in 0..10 {
        let r = open_tcp(&mut b, client(i), 1, 80, T0).unwrap();
        // Templates outlive their connections.
        let mut rst = tcp_packet(client(i), 1, ip(VIP), 80, RST, 0);
        fwd(&mut b, &mut rst, T0);
        let _ = r;
    }
    b.tick(T0 + 20 * S);
    assert_eq!((b.len(), b.templates_len()), (0, 10));
    assert_eq!(syn_to(&mut b, client(99), 1, 80, T0 + 20 * S), None);
    assert_eq!(b.drops(DropReason::TableFull), 1);
    // A client with a template still gets in.
    assert!(syn_to(&mut b, client(3), 2, 80, T0 + 20 * S).is_some());
}

#[test]
fn memory_per_connection_at_most_128_bytes() {
    for cap in [1_000, 100_000, 1 << 20] {
        let b = Balancer::with_seed(cap, 1);
        let per = b.memory_bytes() as f64 / cap as f64;
        println!(
            "capacity {cap}: {} bytes, {per:.1} per connection",
            b.memory_bytes()
        );
        assert!(per <= 128.0, "{per} bytes per connection");
        assert!(per >= 100.0, "{per}: the count must include every table");
    }
}
