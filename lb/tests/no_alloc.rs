//! The packet path must not allocate: a counting global allocator wraps
//! the system one, and a warmed-up loop over virtual servers of every
//! scheduler (NAT and full NAT, with and without persistence, UDP, a
//! sorry server below quorum) of new connections, established packets
//! both ways, ICMP errors both ways, drops (no connection, table full),
//! passes, `peek`, the sweep (connections and templates expiring), the
//! rate estimator and the template and connection listings must count
//! zero allocations. Every packet is built before the count starts and
//! changed in place in fixed buffers.

#![allow(clippy::unwrap_used)] // test fixtures

mod common;

use alloc_count::allocs;
use common::*;
use control::lb::{ForwardKind, LbProtocol, Liveness, Scheduler};
use lb::engine::{Balancer, DropReason, L4Csum, Verdict, apply};

#[global_allocator]
static GLOBAL: alloc_count::Counting = alloc_count::Counting;

#[test]
fn steady_state_loop_does_not_allocate() {
    let mut services = Vec::new();
    for (i, sched) in Scheduler::ALL.into_iter().enumerate() {
        let port = 1000 + u16::try_from(i).unwrap();
        let kind = if i % 2 == 0 {
            ForwardKind::Nat
        } else {
            ForwardKind::Fnat
        };
        let mut v = vs(port, sched, kind, reals(5, |w| w + 1));
        if i % 3 == 0 {
            v.persistence_timeout = Some(5);
        }
        if i == 4 {
            v.protocol = LbProtocol::Udp;
        }
        services.push(svc(v));
    }
    // Below quorum: the sorry server takes everything.
    let mut sorry = vs(2000, Scheduler::Rr, ForwardKind::Nat, reals(2, |_| 1));
    sorry.quorum = 5;
    sorry.sorry_server = Some(endpoint("192.168.9.9:80"));
    services.push(with_live(sorry, vec![Liveness::Up, Liveness::Down]));
    // First packets, per service and client, built now.
    let firsts: Vec<Vec<u8>> = services
        .iter()
        .enumerate()
        .flat_map(|(k, s)| {
            let (port, udp) = (s.vs.port, s.vs.protocol == LbProtocol::Udp);
            (0..20u32).map(move |c| {
                let cl = client(c + 100 * u32::try_from(k).unwrap());
                if udp {
                    udp_packet(cl, 1, ip(VIP), port, 40)
                } else {
                    tcp_packet(cl, 1, ip(VIP), port, SYN, 60)
                }
            })
        })
        .collect();
    let strays: Vec<Vec<u8>> = vec![
        tcp_packet(client(9999), 1, ip(VIP), 1000, ACK, 0),
        tcp_packet(client(9999), 1, ip(VIP), 1, SYN, 0),
        udp_packet(client(9999), 1, ip("192.0.2.1"), 53, 10),
    ];
    let mut b = Balancer::with_seed(300, 7);
    b.set_services(&services, T0).unwrap();
    let mut buf = vec![0u8; 2048];
    let mut back = vec![0u8; 2048];
    let mut err = vec![0u8; 2048];
    let mut run = |b: &mut Balancer, rounds: u64, t: u64| {
        for r in 0..rounds {
            let now = t + r * S;
            let sport = 10_000 + u16::try_from(r % 50).unwrap();
            for p in &firsts {
                let n = p.len();
                let tcp = p[9] == 6;
                buf[..n].copy_from_slice(p);
                set_sport_flags(&mut buf[..n], sport, SYN);
                let _ = b.peek(&buf[..n], now);
                let d = b.forward(&buf[..n], now);
                let Verdict::Translate(t) = d.verdict else {
                    continue;
                };
                apply(&mut buf[..n], &t, L4Csum::Complete).unwrap();
                // The real server's answer, and its port unreachable about
                // what it received.
                back[..n].copy_from_slice(&buf[..n]);
                turn_around(&mut back[..n], 0x12);
                let (rs, _, ls, _) = tuple(&back[..n]);
                let m = icmp_error_into(&mut err, rs, ls, 3, 3, &buf[..n], 28);
                if let Verdict::Translate(t) = b.reverse(&back[..n], now).verdict {
                    apply(&mut back[..n], &t, L4Csum::Complete).unwrap();
                }
                if let Verdict::Translate(t) = b.reverse(&err[..m], now).verdict {
                    apply(&mut err[..m], &t, L4Csum::Complete).unwrap();
                }
                // The client's frag-needed about the answer.
                let m = icmp_error_into(&mut err, p_src(p), ip(VIP), 3, 4, &back[..n], 28);
                if let Verdict::Translate(t) = b.forward(&err[..m], now).verdict {
                    apply(&mut err[..m], &t, L4Csum::Complete).unwrap();
                }
                // The client's ACK (established), or a RST now and then.
                if tcp {
                    buf[..n].copy_from_slice(p);
                    let flags = if r % 4 == 0 { 0x04 } else { 0x10 };
                    set_sport_flags(&mut buf[..n], sport, flags);
                    if let Verdict::Translate(t) = b.forward(&buf[..n], now).verdict {
                        apply(&mut buf[..n], &t, L4Csum::Complete).unwrap();
                    }
                }
            }
            for p in &strays {
                let _ = b.forward(p, now);
            }
            b.tick(now);
            b.estimate(now);
            let _ = b.templates(now).take(10).count();
            let _ = b.connections(now).take(10).count();
        }
    };
    run(&mut b, 60, T0); // warm-up: the table fills, templates come and go
    let before = allocs();
    run(&mut b, 200, T0 + 100 * S);
    // Time passes: everything expires (the sweep, and lookups meeting
    // expired connections) and is made again.
    b.expire(T0 + 5000 * S, 1_000_000);
    run(&mut b, 50, T0 + 5000 * S);
    let after = allocs();
    assert_eq!(after - before, 0, "the packet path allocated");
    let v = b.view(T0);
    assert!(v.created > 1000);
    assert!(v.icmp_errors > 1000);
    assert!(v.templates_expired > 0);
    assert!(v.sorry_connections > 0);
    assert!(b.drops(DropReason::NoConnection) > 0);
    assert!(b.drops(DropReason::TableFull) > 0, "the table filled up");
}

fn p_src(p: &[u8]) -> std::net::Ipv4Addr {
    tuple(p).0
}
