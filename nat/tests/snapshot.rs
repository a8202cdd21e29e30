//! Snapshot and restore across a planned restart: the sessions, their
//! mappings and port bitmaps come back, traffic continues on the same
//! external endpoints, and entries the new configuration would not produce
//! or that clash are skipped.

mod common;

use std::collections::HashSet;

use common::*;
use nat::{Dir, Nat, NatConfig, SessionView};

fn cfg() -> NatConfig {
    NatConfig {
        statics: vec![static_entry("198.51.100.10", "10.0.0.10")],
        ..pool_cfg()
    }
}

/// A NAT with one session of each kind.
fn busy() -> Nat {
    let mut nat = nat_with(64, cfg());
    let mut ps = vec![
        (
            Dir::Out,
            tcp_packet(ip("10.0.0.1"), 40000, ip("192.0.2.1"), 443, 0x02, 0),
        ),
        (
            Dir::In,
            tcp_packet(ip("192.0.2.1"), 443, ip(POOL), 40000, 0x12, 0),
        ),
        (
            Dir::Out,
            udp_packet(ip("10.0.0.2"), 40000, ip("192.0.2.1"), 53, 0),
        ),
        (
            Dir::Out,
            icmp_echo(ip("10.0.0.3"), ip("192.0.2.1"), 8, 5, 0),
        ),
        (
            Dir::In,
            udp_packet(ip("192.0.2.2"), 9, ip("198.51.100.10"), 161, 0),
        ),
        (Dir::In, udp_packet(ip("192.0.2.3"), 9, ip(POOL), 40000, 0)),
        (
            Dir::Out,
            udp_packet(ip("10.0.0.4"), 41000, ip("198.51.100.10"), 161, 0),
        ),
    ];
    for (dir, p) in &mut ps {
        assert!(pass(&mut nat, *dir, p, T0));
    }
    nat
}

fn views(nat: &Nat, now: u64) -> HashSet<SessionView> {
    nat.sessions(now).collect()
}

#[test]
fn round_trip_keeps_sessions_mappings_and_ports() {
    let old = busy();
    let saved = old.snapshot(T0 + 10 * S);
    assert_eq!(saved.len(), old.len());
    // The new process: another seed, another clock.
    let t1 = 5 * T0;
    let mut new = Nat::with_seed(64, cfg(), 99).unwrap();
    assert_eq!(new.restore(&saved, t1), saved.len());
    assert_eq!(views(&new, t1), views(&old, T0 + 10 * S));
    assert_eq!(new.mappings(), old.mappings());
    assert_eq!(new.sessions_by_proto(), old.sessions_by_proto());
    assert_eq!(
        new.pool_usage().next().unwrap().used,
        old.pool_usage().next().unwrap().used
    );
    assert_eq!(new.counters().restored, saved.len() as u64);
    // Traffic continues: the answer to the TCP connection, an inbound to
    // the public IP, the EIF-admitted remote.
    let mut a = tcp_packet(ip("192.0.2.1"), 443, ip(POOL), 40000, 0x10, 10);
    assert!(pass(&mut new, Dir::In, &mut a, t1));
    assert_eq!(dst_of(&a), sa("10.0.0.1:40000"));
    let mut b = udp_packet(ip("192.0.2.3"), 9, ip(POOL), 40000, 0);
    assert!(pass(&mut new, Dir::In, &mut b, t1));
    assert_eq!(dst_of(&b), sa("10.0.0.2:40000"));
    // A restored mapping's port is taken: another insider asking for it
    // gets another one.
    let mut c = udp_packet(ip("10.0.0.9"), 40000, ip("192.0.2.1"), 53, 0);
    assert!(pass(&mut new, Dir::Out, &mut c, t1));
    assert_ne!(src_of(&c).port(), 40000);
    // Restoring again: every entry clashes with itself, nothing added.
    assert_eq!(new.restore(&saved, t1), 0);
    // Idle times carried over: the UDP session restored 10 s idle expires
    // 290 s after the restart (the other one was refreshed at t1).
    let udp = |n: &Nat| {
        n.sessions(t1)
            .filter(|v| v.inside == sa("10.0.0.2:40000"))
            .count()
    };
    new.expire(t1 + 289 * S, usize::MAX);
    assert_eq!(udp(&new), 2);
    new.expire(t1 + 291 * S, usize::MAX);
    assert_eq!(udp(&new), 1);
}

#[test]
fn restore_skips_what_the_configuration_no_longer_produces() {
    let old = busy();
    let saved = old.snapshot(T0);
    // The public IP is gone and the port range shrank below 40000.
    let mut c = pool_cfg();
    c.port_range.last = 39999;
    let mut new = Nat::with_seed(64, c, 7).unwrap();
    let n = new.restore(&saved, T0);
    // Left: the ICMP session (identifiers are not in the port range).
    assert_eq!(n, 1, "{:?}", new.sessions(T0).collect::<Vec<_>>());
    assert_eq!(new.sessions_by_proto(), [0, 0, 1]);
    // An internal address that gained a static entry: its pool sessions
    // (two: to 192.0.2.1 and from 192.0.2.3) are not restored.
    let mut c = cfg();
    c.statics.push(static_entry("198.51.100.20", "10.0.0.2"));
    let mut new = Nat::with_seed(64, c, 7).unwrap();
    assert_eq!(new.restore(&saved, T0), saved.len() - 2);
    assert!(new.sessions(T0).all(|v| *v.inside.ip() != ip("10.0.0.2")));
    // Expired entries and a full table are skipped too.
    let mut small = Nat::with_seed(2, cfg(), 7).unwrap();
    let mut stale = saved.clone();
    for s in &mut stale {
        if s.proto == 1 {
            s.idle_ns = 61 * S;
        }
    }
    assert_eq!(small.restore(&stale, T0), 2);
    assert!(small.sessions(T0).all(|v| v.proto != 1));
}

#[test]
fn snapshot_leaves_out_expired_sessions() {
    let nat = busy();
    // After 61 s the ICMP session is past its timeout (not swept).
    let saved = nat.snapshot(T0 + 61 * S);
    assert_eq!(saved.len(), nat.len() - 1);
    assert!(saved.iter().all(|s| s.proto != 1));
}
