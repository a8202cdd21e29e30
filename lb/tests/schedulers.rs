//! The schedulers through the whole balancer: distribution, stickiness and
//! the least-connection family following the connections it holds, held
//! to IPVS's semantics (linear-scan models of IPVS's choices where the
//! sequence matters).

#![allow(clippy::unwrap_used)] // test fixtures

mod common;

use std::net::SocketAddrV4;
use std::ops::Range;

use common::*;
use control::lb::{ForwardKind, Scheduler};
use lb::engine::{Balancer, How};

fn service(sched: Scheduler, weights: &[u32]) -> Balancer {
    let rs = reals(u32::try_from(weights.len()).unwrap(), |i| {
        weights[i as usize]
    });
    balancer(4096, &[svc(vs(80, sched, ForwardKind::Nat, rs))])
}

/// The real servers of connections opened (to ESTABLISHED) from `clients`
/// to port 80, in order.
fn opened(b: &mut Balancer, clients: Range<u32>) -> Vec<SocketAddrV4> {
    clients
        .map(|i| open_tcp(b, client(i), 1, 80, T0).unwrap())
        .collect()
}

/// The real servers SYNs from `clients` to port 80 go to, in order.
fn synned(b: &mut Balancer, clients: Range<u32>) -> Vec<SocketAddrV4> {
    clients
        .map(|i| syn_to(b, client(i), 40000, 80, T0).unwrap())
        .collect()
}

/// Real servers by position.
fn servers(positions: &[u32]) -> Vec<SocketAddrV4> {
    positions.iter().map(|&i| server(i)).collect()
}

#[test]
fn rr_splits_evenly() {
    let mut b = service(Scheduler::Rr, &[1, 1]);
    let got = synned(&mut b, 0..1000);
    let t = tally(got.iter().copied());
    assert_eq!(t.len(), 2);
    for n in t.values() {
        assert!((499..=501).contains(n), "{t:?}");
    }
    // Strict alternation, in configuration order.
    assert_eq!(got[0], server(0));
    assert_eq!(got[1], server(1));
    assert_eq!(got[2], server(0));
}

#[test]
fn wrr_three_to_one() {
    let mut b = service(Scheduler::Wrr, &[3, 1]);
    let got = synned(&mut b, 0..1000);
    let t = tally(got.iter().copied());
    assert!((749..=751).contains(&t[&server(0)]), "{t:?}");
    assert!((249..=251).contains(&t[&server(1)]), "{t:?}");
    assert_eq!(got[..4], servers(&[0, 0, 0, 1]));
}

#[test]
fn sh_keeps_a_client_on_one_server() {
    let mut b = service(Scheduler::Sh, &[1, 2, 1, 1]);
    let mut firsts = Vec::new();
    for c in 0..200 {
        let first = syn_to(&mut b, client(c * 37), 30000, 80, T0).unwrap();
        for port in 30001..30006 {
            assert_eq!(syn_to(&mut b, client(c * 37), port, 80, T0), Some(first));
        }
        firsts.push(first);
    }
    let t = tally(firsts);
    assert_eq!(t.len(), 4, "{t:?}");
    // Weight 2 takes about twice the buckets: more clients.
    assert!(t[&server(1)] > t[&server(0)], "{t:?}");
}

#[test]
fn dh_keeps_a_destination_on_one_server() {
    let rs = reals(4, |_| 1);
    let mut other = vs(80, Scheduler::Dh, ForwardKind::Nat, rs.clone());
    other.vip = ip("10.64.1.3");
    let mut b = balancer(
        4096,
        &[svc(vs(80, Scheduler::Dh, ForwardKind::Nat, rs)), svc(other)],
    );
    let first = syn_to(&mut b, client(1), 1000, 80, T0).unwrap();
    for c in 2..300 {
        assert_eq!(syn_to(&mut b, client(c), 1000, 80, T0), Some(first));
    }
    // The other destination hashes on its own (and stays there).
    let mut syn = tcp_packet(client(1), 1001, ip("10.64.1.3"), 80, SYN, 0);
    fwd(&mut b, &mut syn, T0);
    let second = dst_of(&syn);
    for c in 2..50 {
        let mut syn = tcp_packet(client(c), 1001, ip("10.64.1.3"), 80, SYN, 0);
        fwd(&mut b, &mut syn, T0);
        assert_eq!(dst_of(&syn), second);
    }
}

/// IPVS's least-load choice by linear scan: (weight, active, inactive).
fn model(kind: Scheduler, s: &[(u32, u32, u32)]) -> Option<usize> {
    let oh = |x: &(u32, u32, u32)| -> u64 {
        match kind {
            Scheduler::Lc | Scheduler::Wlc => u64::from(x.1) * 256 + u64::from(x.2),
            _ => u64::from(x.1) + 1,
        }
    };
    let mut least: Option<usize> = None;
    for (i, x) in s.iter().enumerate() {
        if x.0 == 0 {
            continue;
        }
        if kind == Scheduler::Nq && x.1 == 0 {
            return Some(i);
        }
        let better = match least {
            None => true,
            Some(l) => {
                let y = &s[l];
                if kind == Scheduler::Lc {
                    oh(x) < oh(y)
                } else {
                    oh(y) * u64::from(x.0) > oh(x) * u64::from(y.0)
                }
            }
        };
        if better {
            least = Some(i);
        }
    }
    least
}

/// Opens, closes and re-opens connections at random and checks every
/// choice against the model fed with the balancer's own counts.
fn follows_model(kind: Scheduler, weights: &[u32]) {
    let mut b = service(kind, weights);
    let n = weights.len();
    let mut open: Vec<(u32, SocketAddrV4)> = Vec::new();
    let mut x = 99u64;
    let mut next_client = 0u32;
    for step in 0..600 {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let close = !open.is_empty() && (x >> 33).is_multiple_of(3);
        if close {
            let i = usize::try_from((x >> 40) % open.len() as u64).unwrap();
            let (c, real) = open.swap_remove(i);
            close_tcp(&mut b, client(c), 5000, 80, real, T0);
            continue;
        }
        let v = b.view(T0);
        let counts: Vec<(u32, u32, u32)> = v.services[0]
            .real_servers
            .iter()
            .map(|r| (r.weight, r.active, r.inactive))
            .collect();
        assert_eq!(counts.len(), n);
        let want = model(kind, &counts).map(|i| server(u32::try_from(i).unwrap()));
        next_client += 1;
        let got = open_tcp(&mut b, client(next_client), 5000, 80, T0);
        assert_eq!(got, want, "{kind} step {step} counts {counts:?}");
        open.push((next_client, got.unwrap()));
    }
}

#[test]
fn lc_follows_open_connections() {
    // Open three: one each; close the second's: it is least loaded (its
    // closed connection counts 1, the others' open ones 256): it gets the
    // next; then the first again.
    let mut b = service(Scheduler::Lc, &[1, 1, 1]);
    let a = open_tcp(&mut b, client(1), 1, 80, T0).unwrap();
    let bb = open_tcp(&mut b, client(2), 1, 80, T0).unwrap();
    let c = open_tcp(&mut b, client(3), 1, 80, T0).unwrap();
    assert_eq!([a, bb, c], [server(0), server(1), server(2)]);
    close_tcp(&mut b, client(2), 1, 80, bb, T0);
    assert_eq!(open_tcp(&mut b, client(4), 1, 80, T0), Some(server(1)));
    assert_eq!(open_tcp(&mut b, client(5), 1, 80, T0), Some(server(0)));
    follows_model(Scheduler::Lc, &[1, 1, 1, 0, 1]);
}

#[test]
fn wlc_follows_weights_and_connections() {
    let mut b = service(Scheduler::Wlc, &[1, 3]);
    let got = opened(&mut b, 0..400);
    let t = tally(got);
    assert!((99..=101).contains(&t[&server(0)]), "{t:?}");
    follows_model(Scheduler::Wlc, &[1, 3, 2, 0, 5]);
}

#[test]
fn sed_and_nq() {
    follows_model(Scheduler::Sed, &[1, 2, 4, 0, 1]);
    follows_model(Scheduler::Nq, &[1, 2, 4, 0, 1]);
    // nq: every idle server first, in order, whatever its weight.
    let mut b = service(Scheduler::Nq, &[1, 5, 1]);
    let got = opened(&mut b, 0..3);
    assert_eq!(got, servers(&[0, 1, 2]));
    // Then sed: (active + 1) / weight: the weight-5 server.
    assert_eq!(open_tcp(&mut b, client(9), 1, 80, T0), Some(server(1)));
}

#[test]
fn lblc_stays_until_overloaded() {
    let mut b = service(Scheduler::Lblc, &[2, 2, 2]);
    let got = opened(&mut b, 0..6);
    // A up to 3 active (more than its weight 2 while B has none): then wlc
    // picks B, which becomes the entry.
    assert_eq!(got, servers(&[0, 0, 0, 1, 1, 1]));
    // B is overloaded at 3 too: C next.
    assert_eq!(open_tcp(&mut b, client(7), 1, 80, T0), Some(server(2)));
    // Nobody is underloaded any more (active * 2 < weight for none): the
    // entry (C) stays, however loaded.
    for i in 8..14 {
        assert_eq!(open_tcp(&mut b, client(i), 1, 80, T0), Some(server(2)));
    }
}

#[test]
fn lblcr_grows_its_set() {
    let mut b = service(Scheduler::Lblcr, &[2, 2, 2]);
    let got = opened(&mut b, 0..7);
    // A until overloaded, then B joins the set and, less loaded, takes the
    // next ones until it is as loaded as A; then the set's least loaded (A,
    // first of equals) is overloaded: C joins.
    assert_eq!(got, servers(&[0, 0, 0, 1, 1, 1, 2]));
    // The set {A, B, C}: its least loaded is C.
    assert_eq!(open_tcp(&mut b, client(8), 1, 80, T0), Some(server(2)));
}

#[test]
fn mh_moves_few_flows_when_a_server_goes() {
    let rs = reals(10, |_| 1);
    let mut cfg = vs(80, Scheduler::Mh, ForwardKind::Nat, rs.clone());
    let mut b = balancer(40_000, &[svc(cfg.clone())]);
    let before: Vec<_> = (0..10_000)
        .map(|i| syn_to(&mut b, client(i * 3), 1, 80, T0).unwrap())
        .collect();
    let t = tally(before.iter().copied());
    assert_eq!(t.len(), 10);
    for n in t.values() {
        // 1000 each, give or take the hash's spread.
        assert!((850..=1150).contains(n), "{t:?}");
    }
    let gone = SocketAddrV4::new(rs[4].ip, 8080);
    cfg.real_servers.remove(4);
    b.set_services(&[svc(cfg)], T0).unwrap();
    let mut moved = 0;
    for (i, was) in before.iter().enumerate() {
        let i = u32::try_from(i).unwrap();
        let now = syn_to(&mut b, client(i * 3), 2, 80, T0).unwrap();
        assert_ne!(now, gone);
        if now != *was {
            moved += 1;
        }
    }
    assert!(moved <= 1200, "{moved} of 10000 flows moved");
    assert!(moved >= t[&gone], "the removed server's flows move");
    // The first connections stay where they were (client 4's too, on
    // whichever server it was).
    let mut ack = tcp_packet(client(3 * 4), 1, ip(VIP), 80, ACK, 0);
    assert_eq!(b.forward(&ack, T0).real, Some(before[4]));
    fwd(&mut b, &mut ack, T0);
    assert_eq!(dst_of(&ack), before[4]);
}

#[test]
fn weight_zero_is_never_picked() {
    for sched in Scheduler::ALL {
        let mut b = service(sched, &[0, 1, 0, 1]);
        for i in 0..200 {
            let got = syn_to(&mut b, client(i * 11), 1, 80, T0).unwrap();
            assert!(got == server(1) || got == server(3), "{sched}: {got}");
        }
        let mut b = service(sched, &[0, 0]);
        assert_eq!(syn_to(&mut b, client(1), 1, 80, T0), None, "{sched}");
        assert_eq!(b.drops(lb::engine::DropReason::NoServer), 1);
    }
}

#[test]
fn scheduler_state_survives_a_new_configuration() {
    let rs = reals(3, |_| 1);
    let cfg = vs(80, Scheduler::Rr, ForwardKind::Nat, rs[..2].to_vec());
    let mut b = balancer(100, &[svc(cfg.clone())]);
    assert_eq!(syn_to(&mut b, client(1), 1, 80, T0), Some(server(0)));
    // Same servers: rr continues where it was, not from the start.
    b.set_services(&[svc(cfg.clone())], T0).unwrap();
    assert_eq!(syn_to(&mut b, client(2), 1, 80, T0), Some(server(1)));
    assert_eq!(syn_to(&mut b, client(3), 1, 80, T0), Some(server(0)));
    // A third server added: after the last pick (0) comes 1, then the new one.
    let mut more = cfg;
    more.real_servers = rs;
    b.set_services(&[svc(more)], T0).unwrap();
    assert_eq!(syn_to(&mut b, client(4), 1, 80, T0), Some(server(1)));
    assert_eq!(syn_to(&mut b, client(5), 1, 80, T0), Some(server(2)));
    // peek says how.
    let syn = tcp_packet(client(6), 1, ip(VIP), 80, SYN, 0);
    let d = b.peek(&syn, T0);
    assert!(matches!(
        d.how,
        Some(How::Scheduled {
            scheduler: Scheduler::Rr,
            template: false,
            ..
        })
    ));
    assert_eq!(d.real, Some(server(0)));
    assert_eq!(b.peek(&syn, T0), d, "peek changes nothing");
}
