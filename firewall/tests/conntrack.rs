//! Connection table behaviour with a manual clock: idle timeouts per state
//! (just below / just above each), table and instance limits, the
//! incremental sweep, rule re-checks, ICMP-related lookups, snapshot and
//! restore (including hand-edited input), and a model check of random
//! insert/lookup/track/remove sequences against a `HashMap`.

#![allow(clippy::unwrap_used)] // test fixtures; a failure is a test failure

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;

use firewall::conntrack::{Conntrack, FlowView, Full, Invalid, SavedFlow, State};
use firewall::tcp::{Peer, TcpInvalid, TcpState};
use firewall::{Dir, FlowKey, L4, TcpMeta, Tuple};
use proptest::prelude::*;

const SEC: u64 = 1_000_000_000;
/// Margin around a timeout: larger than the table's 2-tick (~34 ms) slack.
const MARGIN: u64 = 50_000_000;
/// A clock that does not start at zero.
const T0: u64 = 1_000 * SEC;

const S: u8 = TcpMeta::SYN;
const A: u8 = TcpMeta::ACK;
const F: u8 = TcpMeta::FIN;
const R: u8 = TcpMeta::RST;

fn tuple(proto: u8, src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Tuple {
    Tuple {
        proto,
        src: Ipv4Addr::from(src),
        dst: Ipv4Addr::from(dst),
        sport,
        dport,
    }
}

/// Client 10.0.0.9:40000 -> server 10.0.0.1:22 (the key is stored reversed).
fn ssh() -> Tuple {
    tuple(6, [10, 0, 0, 9], 40000, [10, 0, 0, 1], 22)
}

fn udp(i: u16) -> Tuple {
    tuple(17, [10, 0, 0, 2], 5000 + i, [10, 0, 0, 3], 53)
}

fn tcp(flags: u8, seq: u32, ack: u32, window: u16, len: u32) -> L4 {
    L4::Tcp(TcpMeta {
        flags,
        seq,
        ack,
        window,
        wscale: None,
        payload_len: len,
    })
}

fn timeouts() -> control::Timeouts {
    control::Timeouts {
        tcp_first_packet: 11,
        tcp_opening: 12,
        tcp_established: 13,
        tcp_closing: 14,
        tcp_fin_wait: 15,
        tcp_closed: 16,
        udp_first_packet: 21,
        udp_single: 22,
        udp_multiple: 23,
        icmp_first_packet: 31,
        icmp_error_reply: 32,
        other_first_packet: 41,
        other_multiple: 42,
    }
}

fn table(capacity: usize) -> Conntrack {
    let mut ct = Conntrack::with_seed(capacity, 42);
    ct.set_timeouts(timeouts());
    ct
}

/// Sends `l4` along `t` (which must be tracked) at `now`.
fn send(ct: &mut Conntrack, t: &Tuple, l4: L4, now: u64) -> Result<State, Invalid> {
    let hit = ct.lookup(t, now).expect("tracked");
    ct.track(hit, &l4, 100, now)
}

/// The entry for `t`, last touched at `last`, survives until just before
/// `secs` of idleness and is gone just after.
fn assert_timeout(ct: &mut Conntrack, t: &Tuple, last: u64, secs: u64, what: &str) {
    assert!(
        ct.lookup(t, last + secs * SEC - MARGIN).is_some(),
        "{what}: expired before {secs} s"
    );
    let expired = ct.stats().removed_expired;
    assert!(
        ct.lookup(t, last + secs * SEC + MARGIN).is_none(),
        "{what}: alive after {secs} s"
    );
    assert_eq!(ct.stats().removed_expired, expired + 1, "{what}");
}

#[test]
fn udp_timeouts_follow_the_pseudo_state() {
    let mut ct = table(16);
    let t = udp(1);

    ct.insert(&t, Dir::Out, 7, &L4::Udp, 60, T0).unwrap();
    assert_eq!(ct.iter().next().unwrap().state, State::UdpFirst);
    assert_timeout(&mut ct, &t, T0, 21, "udp first packet");
    assert!(ct.is_empty());

    ct.insert(&t, Dir::Out, 7, &L4::Udp, 60, T0).unwrap();
    assert_eq!(send(&mut ct, &t, L4::Udp, T0 + SEC), Ok(State::UdpSingle));
    assert_eq!(
        send(&mut ct, &t, L4::Udp, T0 + 2 * SEC),
        Ok(State::UdpSingle)
    );
    assert_timeout(&mut ct, &t, T0 + 2 * SEC, 22, "udp single");

    ct.insert(&t, Dir::Out, 7, &L4::Udp, 60, T0).unwrap();
    assert_eq!(
        send(&mut ct, &t.reverse(), L4::Udp, T0 + SEC),
        Ok(State::UdpMultiple)
    );
    assert_eq!(
        send(&mut ct, &t, L4::Udp, T0 + 3 * SEC),
        Ok(State::UdpMultiple)
    );
    assert_timeout(&mut ct, &t, T0 + 3 * SEC, 23, "udp multiple");
}

#[test]
fn tcp_timeouts_follow_the_state() {
    let c = ssh();
    let s = c.reverse();
    // (from server?, segment, state reached, its timeout)
    let script = [
        (false, tcp(S, 1000, 0, 64240, 0), TcpState::SynSent, 11),
        (
            true,
            tcp(S | A, 5000, 1001, 65160, 0),
            TcpState::SynRecv,
            12,
        ),
        (
            false,
            tcp(A, 1001, 5001, 64240, 0),
            TcpState::Established,
            13,
        ),
        (
            false,
            tcp(F | A, 1001, 5001, 64240, 0),
            TcpState::FinWait,
            14,
        ),
        (true, tcp(A, 5001, 1002, 65160, 0), TcpState::CloseWait, 14),
        (
            true,
            tcp(F | A, 5001, 1002, 65160, 0),
            TcpState::LastAck,
            14,
        ),
        (false, tcp(A, 1002, 5002, 64240, 0), TcpState::TimeWait, 15),
        (true, tcp(R, 5002, 0, 0, 0), TcpState::Close, 16),
    ];
    for n in 1..=script.len() {
        let mut ct = table(16);
        let mut now = T0;
        for (i, (reply, l4, state, _)) in script[..n].iter().enumerate() {
            now += SEC;
            let got = if i == 0 {
                ct.insert(&c, Dir::Out, 1, l4, 60, now).unwrap();
                State::Tcp(TcpState::SynSent)
            } else {
                send(&mut ct, if *reply { &s } else { &c }, *l4, now).unwrap()
            };
            assert_eq!(got, State::Tcp(*state));
        }
        let (_, _, state, secs) = script[n - 1];
        assert_timeout(&mut ct, &c, now, secs, state.name());
    }
}

#[test]
fn icmp_and_other_protocols() {
    let mut ct = table(16);
    // Echo: the identifier is both "ports".
    let echo = tuple(1, [10, 0, 0, 9], 0x1234, [8, 8, 8, 8], 0x1234);
    let q = L4::IcmpQuery { ty: 8, code: 0 };
    ct.insert(&echo, Dir::Out, 1, &q, 84, T0).unwrap();
    assert_eq!(send(&mut ct, &echo, q, T0 + SEC), Ok(State::IcmpFirst));
    assert_timeout(&mut ct, &echo, T0 + SEC, 31, "icmp request");
    ct.insert(&echo, Dir::Out, 1, &q, 84, T0).unwrap();
    let reply = L4::IcmpQuery { ty: 0, code: 0 };
    assert_eq!(
        send(&mut ct, &echo.reverse(), reply, T0),
        Ok(State::IcmpReplied)
    );
    assert_timeout(&mut ct, &echo, T0, 32, "icmp replied");

    let gre = tuple(47, [10, 0, 0, 9], 0, [10, 0, 0, 1], 0);
    ct.insert(&gre, Dir::In, 2, &L4::Other, 100, T0).unwrap();
    assert_eq!(send(&mut ct, &gre, L4::Other, T0), Ok(State::OtherFirst));
    assert_timeout(&mut ct, &gre, T0, 41, "other first");
    ct.insert(&gre, Dir::In, 2, &L4::Other, 100, T0).unwrap();
    assert_eq!(
        send(&mut ct, &gre.reverse(), L4::Other, T0),
        Ok(State::OtherMultiple)
    );
    assert_timeout(&mut ct, &gre, T0, 42, "other multiple");
}

#[test]
fn timeouts_changed_later_apply_to_existing_entries() {
    let mut ct = table(4);
    ct.insert(&udp(1), Dir::Out, 1, &L4::Udp, 1, T0).unwrap();
    ct.set_timeouts(control::Timeouts {
        udp_first_packet: 5,
        ..timeouts()
    });
    assert_timeout(&mut ct, &udp(1), T0, 5, "shortened");
}

#[test]
fn full_table_refuses_new_connections_and_keeps_tracking_old_ones() {
    let mut ct = table(4);
    for i in 0..4 {
        ct.insert(&udp(i), Dir::Out, 1, &L4::Udp, 10, T0).unwrap();
    }
    assert_eq!(
        ct.insert(&udp(4), Dir::Out, 1, &L4::Udp, 10, T0),
        Err(Full::Capacity(4))
    );
    assert_eq!(ct.stats().full_capacity, 1);
    // Known connections go on, and re-committing one is not a new entry.
    for i in 0..4 {
        assert_eq!(
            send(&mut ct, &udp(i).reverse(), L4::Udp, T0),
            Ok(State::UdpMultiple)
        );
    }
    ct.insert(&udp(2), Dir::Out, 9, &L4::Udp, 10, T0).unwrap();
    assert_eq!(ct.len(), 4);
    // Room again once one goes.
    let hit = ct.lookup(&udp(0), T0).unwrap();
    ct.remove(hit.id);
    ct.remove(hit.id); // already gone: no-op
    assert_eq!(ct.stats().removed_explicit, 1);
    ct.insert(&udp(4), Dir::Out, 1, &L4::Udp, 10, T0).unwrap();
    assert_eq!(ct.len(), 4);
}

#[test]
fn full_table_reclaims_expired_entries_the_sweep_has_not_reached() {
    // Two buckets per entry at this size: the 8-bucket reclaim scan from
    // the new key's home covers the whole table.
    let mut ct = table(2);
    ct.insert(&udp(0), Dir::Out, 1, &L4::Udp, 10, T0).unwrap();
    ct.insert(&udp(1), Dir::Out, 1, &L4::Udp, 10, T0 + 10 * SEC)
        .unwrap();
    // udp(0) idle 22 s > 21 s, udp(1) still alive.
    let now = T0 + 22 * SEC;
    ct.insert(&udp(2), Dir::Out, 1, &L4::Udp, 10, now).unwrap();
    assert_eq!(ct.stats().removed_expired, 1);
    assert!(ct.lookup(&udp(0), now).is_none());
    assert!(ct.lookup(&udp(1), now).is_some());
    assert_eq!(
        ct.insert(&udp(3), Dir::Out, 1, &L4::Udp, 10, now),
        Err(Full::Capacity(2))
    );

    // A limit lowered below the count: one reclaimed entry is not room.
    ct.set_limit(Some(1));
    let later = T0 + 35 * SEC; // udp(1) expired, udp(2) refreshed
    send(&mut ct, &udp(2), L4::Udp, later).unwrap();
    assert_eq!(
        ct.insert(&udp(3), Dir::Out, 1, &L4::Udp, 10, later),
        Err(Full::Limit(1))
    );
    assert_eq!(ct.len(), 1);
}

#[test]
fn instance_limit() {
    let mut ct = table(10);
    ct.set_limit(Some(2));
    assert_eq!(ct.limit(), 2);
    ct.insert(&udp(0), Dir::Out, 1, &L4::Udp, 10, T0).unwrap();
    ct.insert(&udp(1), Dir::Out, 1, &L4::Udp, 10, T0).unwrap();
    assert_eq!(
        ct.insert(&udp(2), Dir::Out, 1, &L4::Udp, 10, T0),
        Err(Full::Limit(2))
    );
    assert_eq!(ct.stats().full_limit, 1);
    assert_eq!(send(&mut ct, &udp(1), L4::Udp, T0), Ok(State::UdpSingle));
    // Lowering below the current count removes nothing.
    ct.set_limit(Some(1));
    assert_eq!(ct.len(), 2);
    // The limit never exceeds the capacity.
    ct.set_limit(Some(1000));
    assert_eq!(ct.limit(), 10);
    for i in 2..10 {
        ct.insert(&udp(i), Dir::Out, 1, &L4::Udp, 10, T0).unwrap();
    }
    assert_eq!(
        ct.insert(&udp(10), Dir::Out, 1, &L4::Udp, 10, T0),
        Err(Full::Capacity(10))
    );
    ct.set_limit(None);
    assert_eq!(ct.limit(), 10);
}

#[test]
fn expire_visits_at_most_budget_buckets() {
    let mut ct = table(100);
    for i in 0..60 {
        ct.insert(&udp(i), Dir::Out, 1, &L4::Udp, 10, T0).unwrap();
    }
    // 20 of them stay active.
    for i in 0..20 {
        send(&mut ct, &udp(i), L4::Udp, T0 + 15 * SEC).unwrap();
    }
    let now = T0 + 30 * SEC; // udp_first_packet = 21 s, udp_single = 22 s
    assert_eq!(ct.expire(now, 0), 0);
    let mut removed = 0;
    let mut calls = 0;
    while ct.len() > 20 {
        let r = ct.expire(now, 5);
        assert!(r <= 5);
        removed += r;
        calls += 1;
        assert!(calls < 1000, "sweep does not progress");
    }
    assert_eq!(removed, 40);
    assert_eq!(ct.stats().removed_expired, 40);
    // A full pass over ~126 buckets at 5 per call.
    assert!((40 / 5..=2 * 126 / 5 + 2).contains(&calls), "{calls} calls");
    // Everything left is alive; another full sweep removes nothing.
    assert_eq!(ct.expire(now, 10_000), 0);
    for i in 0..20 {
        assert!(ct.lookup(&udp(i), now).is_some());
    }
}

#[test]
fn retain_rechecks_each_connection_once() {
    let mut ct = table(64);
    for i in 0..30 {
        ct.insert(&udp(i), Dir::Out, u32::from(i % 3), &L4::Udp, 10, T0)
            .unwrap();
    }
    let mut seen = HashSet::new();
    let removed = ct.retain(|v| {
        assert!(seen.insert(v.id), "flow {} seen twice", v.id);
        v.rule_id != 2
    });
    assert_eq!(seen.len(), 30);
    assert_eq!(removed, 10);
    assert_eq!(ct.len(), 20);
    assert_eq!(ct.stats().removed_recheck, 10);
    assert!(ct.iter().all(|v| v.rule_id != 2));
    assert_eq!(ct.retain(|_| false), 20);
    assert!(ct.is_empty());
    assert_eq!(ct.retain(|_| false), 0);
}

fn established(ct: &mut Conntrack, now: u64) {
    let c = ssh();
    ct.insert(&c, Dir::Out, 1006, &tcp(S, 1000, 0, 64240, 0), 60, now)
        .unwrap();
    send(ct, &c.reverse(), tcp(S | A, 5000, 1001, 65160, 0), now).unwrap();
    send(ct, &c, tcp(A, 1001, 5001, 64240, 0), now).unwrap();
}

#[test]
fn icmp_errors_find_their_connection_from_either_side() {
    let mut ct = table(16);
    established(&mut ct, T0);
    let before = ct.iter().next().unwrap();

    // A router reports the client's packet (client -> server): the error
    // travels toward the client, i.e. in the reply direction.
    let hit = ct.related(&ssh(), T0 + SEC).unwrap();
    assert!(hit.reply);
    // The server's packet reported: the error goes to the server.
    let hit = ct.related(&ssh().reverse(), T0 + SEC).unwrap();
    assert!(!hit.reply);
    // Nothing changed: no state, counters or last-seen update.
    assert_eq!(ct.get(hit.id), Some(before));

    let other = tuple(6, [10, 0, 0, 9], 40001, [10, 0, 0, 1], 22);
    assert!(ct.related(&other, T0).is_none());
    // An expired connection has no related traffic.
    assert!(ct.related(&ssh(), T0 + 14 * SEC).is_none());
    assert!(ct.is_empty());
}

#[test]
fn tcp_connection_counters_and_view() {
    let mut ct = table(16);
    established(&mut ct, T0);
    let c = ssh();
    send(
        &mut ct,
        &c,
        tcp(A | TcpMeta::PSH, 1001, 5001, 64240, 100),
        T0 + SEC,
    )
    .unwrap();
    let v = ct.iter().next().unwrap();
    assert_eq!(v.tuple, c, "the initiator's tuple as first seen");
    assert_eq!(v.dir, Dir::Out);
    assert_eq!(v.rule_id, 1006);
    assert_eq!(v.state, State::Tcp(TcpState::Established));
    assert_eq!(v.state_name(), "EST");
    assert_eq!(v.proto(), 6);
    assert_eq!((v.packets_orig, v.bytes_orig), (3, 260));
    assert_eq!((v.packets_reply, v.bytes_reply), (1, 100));
    assert_eq!(v.created_ns, T0);
    assert!(v.last_seen_ns <= T0 + SEC && T0 + SEC - v.last_seen_ns < 1 << 24);

    // An invalid segment changes nothing but the connection's count of
    // refused packets (getflows columns 7 and 8) and says why.
    let hit = ct.lookup(&c, T0 + 2 * SEC).unwrap();
    assert_eq!(
        ct.track(
            hit,
            &tcp(A, 1101 + 10_000_000, 5001, 64240, 10),
            50,
            T0 + 2 * SEC
        ),
        Err(Invalid::Tcp(TcpInvalid::SeqAboveWindow))
    );
    assert_eq!(
        ct.track(hit, &L4::Udp, 50, T0 + 2 * SEC),
        Err(Invalid::Mismatch)
    );
    assert_eq!(
        ct.get(hit.id),
        Some(FlowView {
            dropped_orig: 1,
            ..v
        })
    );
}

#[test]
fn counters_carry_past_32_bits() {
    let mut ct = table(4);
    ct.insert(&udp(0), Dir::In, 1, &L4::Udp, u32::MAX, T0)
        .unwrap();
    for _ in 0..3 {
        let hit = ct.lookup(&udp(0), T0).unwrap();
        ct.track(hit, &L4::Udp, u32::MAX, T0).unwrap();
    }
    let v = ct.iter().next().unwrap();
    assert_eq!(v.bytes_orig, 4 * u64::from(u32::MAX));
    assert_eq!(v.packets_orig, 4);
}

#[test]
fn refused_connection_is_removed_at_once() {
    let mut ct = table(16);
    let c = ssh();
    ct.insert(&c, Dir::Out, 1, &tcp(S, 1000, 0, 64240, 0), 60, T0)
        .unwrap();
    // A RST that does not acknowledge the SYN is invalid.
    assert_eq!(
        send(&mut ct, &c.reverse(), tcp(R | A, 0, 7, 0, 0), T0),
        Err(Invalid::Tcp(TcpInvalid::RstOutOfWindow))
    );
    assert_eq!(
        send(&mut ct, &c.reverse(), tcp(R | A, 0, 1001, 0, 0), T0),
        Ok(State::Tcp(TcpState::Close))
    );
    assert!(ct.is_empty());
    assert_eq!(ct.stats().removed_rst, 1);
}

#[test]
fn port_reuse_starts_a_new_flow_in_the_old_entry() {
    let mut ct = table(16);
    established(&mut ct, T0);
    let c = ssh();
    let s = c.reverse();
    send(&mut ct, &c, tcp(F | A, 1001, 5001, 64240, 0), T0).unwrap();
    send(&mut ct, &s, tcp(F | A, 5001, 1002, 65160, 0), T0).unwrap();
    send(&mut ct, &c, tcp(A, 1002, 5002, 64240, 0), T0).unwrap();
    let old = ct.iter().next().unwrap();
    assert_eq!(old.state_name(), "TIME_WAIT");

    let later = T0 + 5 * SEC;
    assert_eq!(
        send(&mut ct, &c, tcp(S, 77_000, 0, 64240, 0), later),
        Ok(State::Tcp(TcpState::SynSent))
    );
    let new = ct.iter().next().unwrap();
    assert_ne!(new.id, old.id);
    assert_eq!(new.created_ns, later);
    assert_eq!((new.packets_orig, new.packets_reply), (1, 0));
    assert_eq!(new.rule_id, old.rule_id);
    assert_eq!(ct.stats().reopened, 1);
    assert_eq!(
        send(&mut ct, &s, tcp(S | A, 9, 77_001, 65160, 0), later),
        Ok(State::Tcp(TcpState::SynRecv))
    );
}

#[test]
fn entry_ids_survive_entries_moving() {
    // A tiny table: every insert and removal shifts runs around.
    let mut ct = Conntrack::with_seed(40, 7);
    let id = ct.insert(&udp(0), Dir::Out, 1, &L4::Udp, 1, T0).unwrap();
    for i in 1..40 {
        ct.insert(&udp(i), Dir::Out, 1, &L4::Udp, 1, T0).unwrap();
    }
    for i in 1..20 {
        let hit = ct.lookup(&udp(i), T0).unwrap();
        ct.remove(hit.id);
    }
    let hit = firewall::Hit { id, reply: true };
    assert_eq!(ct.track(hit, &L4::Udp, 1, T0), Ok(State::UdpMultiple));
    assert_eq!(ct.rule_id(id), 1);
    ct.remove(id);
    assert_eq!(ct.track(hit, &L4::Udp, 1, T0), Err(Invalid::Gone));
    assert_eq!(ct.rule_id(id), 0);
    assert!(ct.get(id).is_none());
}

#[test]
fn flow_ids_are_unique() {
    let mut ct = table(500);
    for i in 0..500 {
        ct.insert(&udp(i), Dir::Out, 1, &L4::Udp, 1, T0).unwrap();
    }
    let ids: HashSet<u64> = ct.iter().map(|v| v.id).collect();
    assert_eq!(ids.len(), 500);
}

#[test]
fn memory_per_entry_is_under_128_bytes() {
    for cap in [1_000, 100_000] {
        let ct = Conntrack::new(cap);
        let per = ct.memory_bytes() / cap;
        assert!(per <= 128, "{per} bytes per entry at capacity {cap}");
    }
}

/// Default timeouts: an established ssh flow, a closing one, a UDP flow
/// answered a second ago and a fresh ICMP query.
fn mixed_table(now: u64) -> Conntrack {
    let mut ct = Conntrack::with_seed(64, 42);
    established(&mut ct, now - 100 * SEC);
    send(
        &mut ct,
        &ssh(),
        tcp(A, 1001, 5001, 64240, 1000),
        now - 3 * SEC,
    )
    .unwrap();
    let c2 = tuple(6, [10, 0, 0, 9], 40002, [10, 0, 0, 1], 80);
    ct.insert(
        &c2,
        Dir::Out,
        1007,
        &tcp(S, 1, 0, 1000, 0),
        60,
        now - 50 * SEC,
    )
    .unwrap();
    send(
        &mut ct,
        &c2.reverse(),
        tcp(S | A, 2, 2, 1000, 0),
        now - 49 * SEC,
    )
    .unwrap();
    send(&mut ct, &c2, tcp(A, 2, 3, 1000, 0), now - 48 * SEC).unwrap();
    send(&mut ct, &c2, tcp(F | A, 2, 3, 1000, 0), now - 2 * SEC).unwrap();
    ct.insert(
        &udp(1).reverse(),
        Dir::In,
        1008,
        &L4::Udp,
        80,
        now - 10 * SEC,
    )
    .unwrap();
    send(&mut ct, &udp(1), L4::Udp, now - SEC).unwrap();
    let echo = tuple(1, [10, 0, 0, 9], 77, [10, 0, 0, 1], 77);
    ct.insert(
        &echo,
        Dir::Out,
        1009,
        &L4::IcmpQuery { ty: 8, code: 0 },
        84,
        now,
    )
    .unwrap();
    ct
}

#[test]
fn snapshot_restore_round_trip() {
    let then = 5_000 * SEC;
    let ct = mixed_table(then);
    let saved = ct.snapshot(then);
    assert_eq!(saved.len(), 4);
    let json = serde_json::to_string_pretty(&saved).unwrap();
    let back: Vec<SavedFlow> = serde_json::from_str(&json).unwrap();
    assert_eq!(back, saved);

    // A new process: different clock, different table size and seed.
    let now = 123 * SEC;
    let mut ct2 = Conntrack::with_seed(1000, 99);
    assert_eq!(ct2.restore(&back, now), 4);
    assert_eq!(ct2.stats().restored, 4);
    let views: HashMap<u64, _> = ct.iter().map(|v| (v.id, v)).collect();
    for v2 in ct2.iter() {
        let v = views[&v2.id];
        assert_eq!(
            (v2.tuple, v2.dir, v2.rule_id, v2.state),
            (v.tuple, v.dir, v.rule_id, v.state)
        );
        assert_eq!(
            (
                v2.packets_orig,
                v2.bytes_orig,
                v2.packets_reply,
                v2.bytes_reply
            ),
            (v.packets_orig, v.bytes_orig, v.packets_reply, v.bytes_reply)
        );
        assert_eq!(now - v2.created_ns, then - v.created_ns, "age");
        let idle = |seen: u64, at: u64| at.cast_signed() - seen.cast_signed();
        let drift = idle(v2.last_seen_ns, now) - idle(v.last_seen_ns, then);
        assert!(drift.abs() < 2 << 24, "idle drift {drift} ns");
    }
    // Same snapshot again: all duplicates.
    assert_eq!(ct2.restore(&back, now), 0);

    // TCP carries on where it was, windows included.
    let c = ssh();
    assert_eq!(
        send(&mut ct2, &c, tcp(A, 2001, 5001, 64240, 100), now),
        Ok(State::Tcp(TcpState::Established))
    );
    assert_eq!(
        send(
            &mut ct2,
            &c,
            tcp(A, 2101 + 1_000_000, 5001, 64240, 100),
            now
        ),
        Err(Invalid::Tcp(TcpInvalid::SeqAboveWindow))
    );
    let c2 = tuple(6, [10, 0, 0, 9], 40002, [10, 0, 0, 1], 80);
    assert_eq!(
        send(&mut ct2, &c2.reverse(), tcp(A, 3, 3, 1000, 0), now),
        Ok(State::Tcp(TcpState::CloseWait))
    );
    // Idle time keeps counting from the saved value: the UDP flow was idle
    // 1 s of its 60 (udp_multiple).
    assert!(ct2.lookup(&udp(1), now + 58 * SEC + SEC / 2).is_some());
    assert!(ct2.lookup(&udp(1), now + 59 * SEC + SEC / 2).is_none());

    // New connections get ids distinct from the restored ones.
    ct2.insert(&udp(9), Dir::Out, 1, &L4::Udp, 1, now).unwrap();
    let ids: HashSet<u64> = ct2.iter().map(|v| v.id).collect();
    assert_eq!(ids.len(), ct2.len());
}

#[test]
fn restore_skips_what_does_not_hold_together() {
    let then = 5_000 * SEC;
    let saved = mixed_table(then).snapshot(then);
    let tcp_flow = saved
        .iter()
        .find(|f| f.state == State::Tcp(TcpState::Established))
        .unwrap()
        .clone();
    let udp_flow = saved.iter().find(|f| f.proto == 17).unwrap().clone();

    // Not even the right shape: serde says no.
    assert!(serde_json::from_str::<Vec<SavedFlow>>("garbage").is_err());
    assert!(serde_json::from_str::<Vec<SavedFlow>>(r#"[{"id": 1}]"#).is_err());
    let mut v = serde_json::to_value(&tcp_flow).unwrap();
    v["surprise"] = 1.into();
    assert!(serde_json::from_value::<SavedFlow>(v).is_err());
    let mut v = serde_json::to_value(&tcp_flow).unwrap();
    v["state"] = "tcp_sideways".into();
    assert!(serde_json::from_value::<SavedFlow>(v).is_err());

    let edit = |base: &SavedFlow, f: &dyn Fn(&mut SavedFlow)| {
        let mut x = base.clone();
        x.id ^= 0x5555;
        x.sport = x.sport.wrapping_add(1000);
        f(&mut x);
        x
    };
    let bad = vec![
        edit(&tcp_flow, &|x| x.proto = 17),
        edit(&tcp_flow, &|x| x.tcp = None),
        edit(&udp_flow, &|x| {
            x.tcp = Some([Peer::UNSEEN; 2]);
        }),
        edit(&udp_flow, &|x| x.state = State::IcmpFirst),
        edit(&udp_flow, &|x| x.idle_ns = x.age_ns + 1),
        edit(&udp_flow, &|x| x.idle_ns = 24 * SEC),
        // Same connection as tcp_flow, different id.
        edit(&tcp_flow, &|x| x.sport = tcp_flow.sport),
        // Same id as tcp_flow, different connection.
        edit(&tcp_flow, &|x| x.id = tcp_flow.id),
    ];
    let odd_but_usable = vec![
        // Window scale out of range: clamped (the connection turns liberal).
        edit(&tcp_flow, &|x| {
            if let Some(p) = &mut x.tcp {
                p[0].scale = 200;
            }
        }),
        // Older than this clock: created at 0.
        edit(&udp_flow, &|x| x.age_ns = u64::MAX),
        // Counters past 48 bits wrap.
        edit(&udp_flow, &|x| {
            x.id ^= 1;
            x.sport ^= 1;
            x.bytes_orig = u64::MAX;
        }),
    ];
    let mut ct = table(64);
    let mut all = vec![tcp_flow.clone()];
    all.extend(bad);
    all.extend(odd_but_usable.clone());
    assert_eq!(ct.restore(&all, SEC), 1 + odd_but_usable.len());
    for f in &odd_but_usable[1..] {
        let t = Tuple {
            proto: f.proto,
            src: f.src,
            dst: f.dst,
            sport: f.sport,
            dport: f.dport,
        };
        assert_eq!(send(&mut ct, &t, L4::Udp, SEC), Ok(State::UdpMultiple));
    }

    // A full table takes what fits.
    let mut small = table(2);
    let many: Vec<SavedFlow> = (0..5u16)
        .map(|i| edit(&udp_flow, &|x| x.sport = 100 + i))
        .map(|mut x| {
            x.id = 1000 + u64::from(x.sport);
            x
        })
        .collect();
    assert_eq!(small.restore(&many, SEC), 2);
}

fn arb_state() -> impl Strategy<Value = State> {
    prop_oneof![
        (0u8..9).prop_map(|c| State::Tcp(TcpState::from_code(c).unwrap())),
        Just(State::UdpFirst),
        Just(State::UdpSingle),
        Just(State::UdpMultiple),
        Just(State::IcmpFirst),
        Just(State::IcmpReplied),
        Just(State::OtherFirst),
        Just(State::OtherMultiple),
    ]
}

fn arb_peer() -> impl Strategy<Value = Peer> {
    (
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
        any::<u8>(),
        any::<bool>(),
    )
        .prop_map(|(end, maxend, maxwin, scale, fin)| Peer {
            end,
            maxend,
            maxwin,
            scale,
            fin,
        })
}

fn arb_saved() -> impl Strategy<Value = SavedFlow> {
    (
        (
            any::<u64>(),
            prop_oneof![Just(1u8), Just(6), Just(17), any::<u8>()],
            0u32..4,
            0u16..4,
            any::<bool>(),
            any::<u32>(),
        ),
        arb_state(),
        proptest::option::of([arb_peer(), arb_peer()]),
        [any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>()],
        (any::<u64>(), 0u64..100 * SEC),
    )
        .prop_map(
            |((id, proto, ip, port, out, rule_id), state, tcp, counters, (age, idle))| SavedFlow {
                id,
                proto,
                src: Ipv4Addr::from(0x0a00_0000 + ip),
                dst: Ipv4Addr::from(0x0a00_0001),
                sport: 1000 + port,
                dport: 80,
                dir: if out { Dir::Out } else { Dir::In },
                rule_id,
                state,
                tcp,
                packets_orig: counters[0],
                bytes_orig: counters[1],
                packets_reply: counters[2],
                bytes_reply: counters[3],
                dropped_orig: rule_id.rotate_left(7),
                dropped_reply: rule_id,
                age_ns: age,
                idle_ns: idle,
            },
        )
}

fn arb_l4() -> impl Strategy<Value = L4> {
    prop_oneof![
        (
            any::<u8>(),
            any::<u32>(),
            any::<u32>(),
            any::<u16>(),
            0u32..70_000
        )
            .prop_map(|(flags, seq, ack, window, payload_len)| L4::Tcp(TcpMeta {
                flags,
                seq,
                ack,
                window,
                wscale: None,
                payload_len,
            })),
        Just(L4::Udp),
        Just(L4::Other),
    ]
}

#[derive(Debug, Clone)]
enum Op {
    Insert {
        k: u16,
        rev: bool,
        rule: u32,
    },
    Lookup {
        k: u16,
        rev: bool,
    },
    Track {
        k: u16,
        rev: bool,
    },
    Remove {
        k: u16,
        rev: bool,
    },
    /// Track through the id the last insert returned (possibly stale).
    TrackLast,
}

fn arb_op() -> impl Strategy<Value = Op> {
    let k = 0u16..24;
    prop_oneof![
        (k.clone(), any::<bool>(), 0u32..4).prop_map(|(k, rev, rule)| Op::Insert { k, rev, rule }),
        (k.clone(), any::<bool>()).prop_map(|(k, rev)| Op::Lookup { k, rev }),
        (k.clone(), any::<bool>()).prop_map(|(k, rev)| Op::Track { k, rev }),
        (k, any::<bool>()).prop_map(|(k, rev)| Op::Remove { k, rev }),
        Just(Op::TrackLast),
    ]
}

/// Key `k` of a small space where many share addresses and ports.
fn model_tuple(k: u16, rev: bool) -> Tuple {
    let t = tuple(
        17,
        [10, 0, 0, u8::try_from(k % 3).unwrap()],
        1000 + k % 4,
        [10, 0, 1, u8::try_from(k / 12).unwrap()],
        53,
    );
    if rev { t.reverse() } else { t }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn agrees_with_a_hashmap_model(
        cap in 1usize..30,
        seed in any::<u64>(),
        ops in proptest::collection::vec(arb_op(), 1..200),
    ) {
        let mut ct = Conntrack::with_seed(cap, seed);
        // key -> (initiator's tuple, rule)
        let mut model: HashMap<FlowKey, (Tuple, u32)> = HashMap::new();
        let mut last: Option<(firewall::EntryId, FlowKey)> = None;
        for op in ops {
            match op {
                Op::Insert { k, rev, rule } => {
                    let t = model_tuple(k, rev);
                    let key = t.key().0;
                    let got = ct.insert(&t, Dir::Out, rule, &L4::Udp, 1, T0);
                    if model.contains_key(&key) || model.len() < cap {
                        let id = got.unwrap();
                        model.insert(key, (t, rule));
                        last = Some((id, key));
                    } else {
                        prop_assert_eq!(got, Err(Full::Capacity(cap)));
                    }
                }
                Op::Lookup { k, rev } => {
                    let t = model_tuple(k, rev);
                    let hit = ct.lookup(&t, T0);
                    match model.get(&t.key().0) {
                        Some((init, rule)) => {
                            let hit = hit.unwrap();
                            prop_assert_eq!(hit.reply, *init != t);
                            prop_assert_eq!(ct.rule_id(hit.id), *rule);
                        }
                        None => prop_assert!(hit.is_none()),
                    }
                }
                Op::Track { k, rev } => {
                    let t = model_tuple(k, rev);
                    if let Some(hit) = ct.lookup(&t, T0) {
                        prop_assert!(ct.track(hit, &L4::Udp, 1, T0).is_ok());
                    }
                }
                Op::Remove { k, rev } => {
                    let t = model_tuple(k, rev);
                    if let Some(hit) = ct.lookup(&t, T0) {
                        ct.remove(hit.id);
                    }
                    model.remove(&t.key().0);
                }
                Op::TrackLast => {
                    if let Some((id, key)) = last {
                        let hit = firewall::Hit { id, reply: false };
                        let got = ct.track(hit, &L4::Udp, 1, T0);
                        if model.contains_key(&key) {
                            prop_assert!(got.is_ok());
                        } else {
                            prop_assert_eq!(got, Err(Invalid::Gone));
                        }
                    }
                }
            }
            prop_assert_eq!(ct.len(), model.len());
        }
        let got: HashMap<FlowKey, (Tuple, u32)> = ct
            .iter()
            .map(|v| (v.tuple.key().0, (v.tuple, v.rule_id)))
            .collect();
        prop_assert_eq!(got, model);
    }

    #[test]
    fn restoring_anything_never_panics(
        flows in proptest::collection::vec(arb_saved(), 0..20),
        packets in proptest::collection::vec((0u32..4, 0u16..4, any::<bool>(), arb_l4()), 0..30),
        now in any::<u64>(),
    ) {
        let mut ct = table(8);
        let n = ct.restore(&flows, now);
        prop_assert!(n <= 8 && n == ct.len());
        for (ip, port, rev, l4) in packets {
            let t = tuple(6, [10, 0, 0, u8::try_from(ip).unwrap()], 1000 + port, [10, 0, 0, 1], 80);
            let t = if rev { t.reverse() } else { t };
            for t in [t, Tuple { proto: 17, ..t }] {
                if let Some(hit) = ct.lookup(&t, now) {
                    let _ = ct.track(hit, &l4, 40, now);
                }
            }
        }
        let _ = ct.snapshot(now);
        ct.expire(now.wrapping_add(1 << 40), 100);
    }
}

/// A connection saved moments after it opened: its idle time, kept in
/// 16.8 ms ticks, must not round past its exact age, or the restore
/// refuses it as inconsistent (e2e 33 lost its stream that way).
#[test]
fn a_young_connection_survives_snapshot_and_restore() {
    let t = udp(7);
    let mut ct = Conntrack::with_seed(64, 1);
    // Opened just before a tick boundary, saved 49 ms later, 3 ticks on.
    let opened = T0 + (1 << 24) - 1_000;
    ct.insert(&t, Dir::Out, 7, &L4::Udp, 60, opened).unwrap();
    let saved = ct.snapshot(opened + 49_000_000);
    assert_eq!(saved.len(), 1);
    assert!(saved[0].idle_ns <= saved[0].age_ns, "{:?}", saved[0]);
    let mut ct2 = Conntrack::with_seed(64, 2);
    assert_eq!(ct2.restore(&saved, 5 * SEC), 1);
    // A file written before the clamp (idle rounded one tick past the
    // age) still restores; one idle far longer than old does not.
    let mut rounded = saved.clone();
    rounded[0].idle_ns = rounded[0].age_ns + 1_000_000;
    assert_eq!(Conntrack::with_seed(64, 3).restore(&rounded, 5 * SEC), 1);
    rounded[0].idle_ns = rounded[0].age_ns + SEC;
    assert_eq!(Conntrack::with_seed(64, 4).restore(&rounded, 5 * SEC), 0);
}
