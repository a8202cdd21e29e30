//! Idle timeouts per session state (RFC 4787 REQ-5/6, RFC 5382 REQ-5,
//! RFC 5508 REQ-2), time passed in: a session lives exactly its state's
//! timeout past its last packet (outbound or inbound), and a mapping
//! lives while it has a session.

mod common;

use common::*;
use nat::{Dir, DropReason, Nat, NatConfig, SessionState, Timeouts};

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const FIN: u8 = 0x01;
const RST: u8 = 0x04;

/// Sweeps the whole table at `now` and returns how many sessions are left.
fn sweep(nat: &mut Nat, now: u64) -> usize {
    nat.expire(now, usize::MAX);
    nat.len()
}

fn state(nat: &Nat, now: u64) -> SessionState {
    nat.sessions(now).next().expect("a session").state
}

#[test]
fn udp_lives_300_s_refreshed_both_ways() {
    let mut nat = nat_with(16, pool_cfg());
    let mut o = udp_packet(ip("10.0.0.1"), 5000, ip("198.51.100.1"), 53, 0);
    assert!(pass(&mut nat, Dir::Out, &mut o, T0));
    assert_eq!(sweep(&mut nat, T0 + 299 * S), 1);
    // An inbound packet refreshes it (REQ-6 allows; the brief asks for it).
    let mut i = udp_packet(ip("198.51.100.1"), 53, ip(POOL), 5000, 0);
    assert!(pass(&mut nat, Dir::In, &mut i, T0 + 200 * S));
    assert_eq!(sweep(&mut nat, T0 + 499 * S), 1);
    let idle = nat.sessions(T0 + 499 * S).next().unwrap().idle_secs;
    assert!((298..=299).contains(&idle), "{idle}");
    assert_eq!(sweep(&mut nat, T0 + 501 * S), 0);
    assert_eq!(nat.mappings(), 0, "the mapping ended with its last session");
    assert_eq!(nat.pool_usage().next().unwrap().used, [0, 0, 0]);
    let mut late = udp_packet(ip("198.51.100.1"), 53, ip(POOL), 5000, 0);
    dropped(
        &mut nat,
        Dir::In,
        &mut late,
        T0 + 502 * S,
        DropReason::NoMapping,
    );
    assert_eq!(nat.counters().expired, 1);
}

#[test]
fn tcp_transitory_established_closing() {
    let mut nat = nat_with(16, pool_cfg());
    let send = |nat: &mut Nat, dir, flags, now| {
        let mut p = match dir {
            Dir::Out => tcp_packet(ip("10.0.0.1"), 5000, ip("198.51.100.1"), 443, flags, 0),
            Dir::In => tcp_packet(ip("198.51.100.1"), 443, ip(POOL), 5000, flags, 0),
        };
        assert!(pass(nat, dir, &mut p, now));
    };
    // A SYN nobody answers: 240 s.
    send(&mut nat, Dir::Out, SYN, T0);
    assert_eq!(state(&nat, T0), SessionState::TcpSynOut);
    assert_eq!(sweep(&mut nat, T0 + 239 * S), 1);
    assert_eq!(sweep(&mut nat, T0 + 241 * S), 0);
    // Answered: established, 7440 s (2 h 4 min).
    let t = T0 + 1000 * S;
    send(&mut nat, Dir::Out, SYN, t);
    send(&mut nat, Dir::In, SYN | ACK, t);
    assert_eq!(state(&nat, t), SessionState::TcpEstablished);
    assert_eq!(sweep(&mut nat, t + 7439 * S), 1);
    send(&mut nat, Dir::Out, ACK, t + 7439 * S);
    let t = t + 7439 * S;
    assert_eq!(sweep(&mut nat, t + 7439 * S), 1);
    // FIN one way: still established (half-closed connections may last).
    send(&mut nat, Dir::Out, FIN | ACK, t);
    assert_eq!(state(&nat, t), SessionState::TcpEstablished);
    assert_eq!(sweep(&mut nat, t + 7000 * S), 1);
    // FIN both ways: transitory again.
    let t = t + 7000 * S;
    send(&mut nat, Dir::In, FIN | ACK, t);
    assert_eq!(state(&nat, t), SessionState::TcpClosing);
    assert_eq!(sweep(&mut nat, t + 239 * S), 1);
    assert_eq!(sweep(&mut nat, t + 241 * S), 0);
    // A RST on an established connection: transitory.
    let t = t + 1000 * S;
    send(&mut nat, Dir::Out, SYN, t);
    send(&mut nat, Dir::In, SYN | ACK, t);
    send(&mut nat, Dir::In, RST, t + S);
    assert_eq!(state(&nat, t + S), SessionState::TcpClosing);
    assert_eq!(sweep(&mut nat, t + 242 * S), 0);
}

#[test]
fn icmp_query_lives_60_s() {
    let mut nat = nat_with(16, pool_cfg());
    let mut p = icmp_echo(ip("10.0.0.1"), ip("198.51.100.1"), 8, 3, 8);
    assert!(pass(&mut nat, Dir::Out, &mut p, T0));
    assert_eq!(state(&nat, T0), SessionState::Icmp);
    assert_eq!(sweep(&mut nat, T0 + 59 * S), 1);
    assert_eq!(sweep(&mut nat, T0 + 61 * S), 0);
}

#[test]
fn configured_timeouts_apply_to_existing_sessions() {
    let mut nat = nat_with(16, pool_cfg());
    let mut p = udp_packet(ip("10.0.0.1"), 5000, ip("198.51.100.1"), 53, 0);
    assert!(pass(&mut nat, Dir::Out, &mut p, T0));
    let cfg = NatConfig {
        timeouts: Timeouts {
            udp: 600,
            ..Timeouts::default()
        },
        ..pool_cfg()
    };
    assert_eq!(nat.set_config(cfg.clone()), Ok(0));
    assert_eq!(sweep(&mut nat, T0 + 599 * S), 1);
    assert_eq!(sweep(&mut nat, T0 + 601 * S), 0);
    // Below the RFC minimum: refused.
    let low = NatConfig {
        timeouts: Timeouts {
            udp: 60,
            ..Timeouts::default()
        },
        ..cfg
    };
    assert!(nat.set_config(low).is_err());
}

#[test]
fn a_session_past_its_timeout_is_gone_before_the_sweep() {
    let mut nat = nat_with(16, pool_cfg());
    let mut p = udp_packet(ip("10.0.0.1"), 5000, ip("198.51.100.1"), 53, 0);
    assert!(pass(&mut nat, Dir::Out, &mut p, T0));
    let ext = src_of(&p);
    // Not swept yet: inbound is refused (the mapping has no other session),
    // and the dead session is removed on sight.
    let mut i = udp_packet(ip("198.51.100.1"), 53, *ext.ip(), ext.port(), 0);
    dropped(
        &mut nat,
        Dir::In,
        &mut i,
        T0 + 301 * S,
        DropReason::NoMapping,
    );
    assert_eq!(nat.len(), 0);
    // Outbound after the timeout starts it afresh.
    let mut p = udp_packet(ip("10.0.0.1"), 5000, ip("198.51.100.1"), 53, 0);
    assert!(pass(&mut nat, Dir::Out, &mut p, T0 + 400 * S));
    let mut p2 = udp_packet(ip("10.0.0.1"), 5000, ip("198.51.100.1"), 53, 0);
    assert!(pass(&mut nat, Dir::Out, &mut p2, T0 + 800 * S));
    assert_eq!(src_of(&p2), ext);
    let d = nat.judge(
        Dir::Out,
        &udp_packet(ip("10.0.0.1"), 5000, ip("198.51.100.1"), 53, 0),
        T0 + 1200 * S,
    );
    assert!(d.to_string().contains("replacing an expired one"), "{d}");
    assert_eq!(nat.len(), 1);
}
