//! Golden-sequence tests of the session state machines, with a manual clock.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::*;
use crate::framing::{Decoder, encode};
use crate::model::MacAddr;

const ID: &str = "i-0abc";

fn meta() -> InstanceMeta {
    InstanceMeta {
        instance_id: ID.into(),
        hostname: "web-1".into(),
        os: "linux".into(),
        image_id: "ami-1".into(),
        tags: BTreeMap::from([("nsx:network".into(), "web".into())]),
        underlay_ip: Ipv4Addr::new(10, 0, 0, 11),
        nic_mac: MacAddr([2, 0x50, 0x56, 0, 0, 1]),
    }
}

/// A config that passes validation.
fn cfg(tep_id: u32) -> Option<InstanceConfig> {
    Some(InstanceConfig {
        tep_id,
        ..InstanceConfig::default()
    })
}

fn with_version(c: Option<InstanceConfig>, v: u64) -> Option<InstanceConfig> {
    c.map(|mut c| {
        c.version = v;
        c
    })
}

struct Clock(Instant);

impl Clock {
    fn at(&self, ms: u64) -> Instant {
        self.0 + Duration::from_millis(ms)
    }
}

fn clock() -> Clock {
    Clock(Instant::now())
}

fn agent(t: &Clock, applied: Option<u64>) -> AgentSession {
    AgentSession::new(
        AgentSessionConfig::new("gw:5555", "0.1.0", meta()),
        applied,
        t.at(0),
    )
}

fn welcome(hb: u64) -> GatewayMsg {
    GatewayMsg::Welcome {
        version: 1,
        instance_id: ID.into(),
        tep_id: 7,
        heartbeat_ms: hb,
    }
}

/// An agent with an established session (heartbeat 1000 ms) at t=0.
fn established_agent(t: &Clock, applied: Option<u64>) -> AgentSession {
    let mut a = agent(t, applied);
    a.on_connected(t.at(0));
    let out = a.on_message(welcome(1000), t.at(0));
    assert!(matches!(out[..], [AgentOut::Established { .. }]));
    a
}

fn close_reason<T: std::fmt::Debug>(out: &[T]) -> String {
    format!("{out:?}")
}

// ----------------------------- agent -----------------------------------

#[test]
fn agent_handshake_golden() {
    let t = clock();
    let mut a = agent(&t, Some(4));
    assert_eq!(a.status().state.as_str(), "CONNECTING");
    assert_eq!(a.next_timeout(), None);
    let out = a.on_connected(t.at(5));
    assert_eq!(
        out,
        vec![AgentOut::Send(AgentMsg::Hello {
            versions: vec![1, 2],
            agent_version: "0.1.0".into(),
            instance: meta(),
            applied_version: Some(4),
        })]
    );
    assert_eq!(a.state(), AgentState::HelloSent);
    assert_eq!(a.next_timeout(), Some(t.at(5) + DEFAULT_HANDSHAKE_TIMEOUT));
    let out = a.on_message(welcome(1000), t.at(10));
    assert_eq!(
        out,
        vec![AgentOut::Established {
            protocol_version: 1,
            tep_id: 7,
            heartbeat_ms: 1000
        }]
    );
    let st = a.status();
    assert_eq!(st.state.as_str(), "ESTABLISHED");
    assert_eq!(st.peer, "gw:5555");
    assert_eq!(st.since, t.at(10));
    assert_eq!(st.protocol_version, Some(1));
    assert_eq!(st.last_error, None);
}

#[test]
fn agent_rejected_for_no_common_version_keeps_reason() {
    let t = clock();
    let mut a = agent(&t, None);
    a.on_connected(t.at(0));
    let out = a.on_message(
        GatewayMsg::Reject {
            reason: "no common protocol version (ours [2], peer offers [1])".into(),
        },
        t.at(1),
    );
    assert!(matches!(
        &out[..],
        [AgentOut::Close { reason: CloseReason::Rejected(r) }] if r.contains("no common protocol version")
    ));
    let st = a.status();
    assert_eq!(st.state, AgentState::Closed);
    assert!(
        st.last_error
            .unwrap()
            .starts_with("rejected by gateway: no common")
    );
}

#[test]
fn agent_refuses_welcome_with_version_it_did_not_offer() {
    let t = clock();
    let mut a = agent(&t, None);
    a.on_connected(t.at(0));
    let out = a.on_message(
        GatewayMsg::Welcome {
            version: 9,
            instance_id: ID.into(),
            tep_id: 7,
            heartbeat_ms: 1000,
        },
        t.at(1),
    );
    assert!(close_reason(&out).contains("gateway chose protocol version 9"));
    assert_eq!(a.state(), AgentState::Closed);
}

#[test]
fn agent_refuses_bad_welcome_fields() {
    let t = clock();
    for (w, needle) in [
        (
            GatewayMsg::Welcome {
                version: 1,
                instance_id: "i-other".into(),
                tep_id: 7,
                heartbeat_ms: 1000,
            },
            "identifies us as",
        ),
        (welcome(0), "heartbeat_ms 0"),
        (welcome(MAX_HEARTBEAT_MS + 1), "heartbeat_ms"),
    ] {
        let mut a = agent(&t, None);
        a.on_connected(t.at(0));
        let out = a.on_message(w, t.at(1));
        assert!(close_reason(&out).contains(needle), "{out:?}");
    }
}

#[test]
fn agent_config_before_welcome_is_a_protocol_violation() {
    let t = clock();
    let mut a = agent(&t, None);
    a.on_connected(t.at(0));
    let out = a.on_message(
        GatewayMsg::Snapshot {
            version: 1,
            config: None,
        },
        t.at(1),
    );
    assert!(matches!(
        &out[..],
        [AgentOut::Close { reason: CloseReason::Protocol(r) }] if r == "expected Welcome, got Snapshot"
    ));
}

#[test]
fn agent_second_welcome_is_a_protocol_violation() {
    let t = clock();
    let mut a = established_agent(&t, None);
    let out = a.on_message(welcome(1000), t.at(1));
    assert!(matches!(
        &out[..],
        [AgentOut::Close {
            reason: CloseReason::Protocol(_)
        }]
    ));
}

#[test]
fn agent_snapshot_apply_ack_golden() {
    let t = clock();
    let mut a = established_agent(&t, None);
    let out = a.on_message(
        GatewayMsg::Snapshot {
            version: 3,
            config: cfg(7),
        },
        t.at(1),
    );
    // The config's own version field is set to the message's version.
    assert_eq!(
        out,
        vec![AgentOut::Apply {
            version: 3,
            config: with_version(cfg(7), 3)
        }]
    );
    assert_eq!(a.applied_version(), None);
    let out = a.applied(3, Ok(()));
    assert_eq!(out, vec![AgentOut::Send(AgentMsg::Ack { version: 3 })]);
    assert_eq!(a.applied_version(), Some(3));
    assert_eq!(a.status().applied_version, Some(3));
}

#[test]
fn agent_micro_segmentation_snapshot_applies_none() {
    let t = clock();
    let mut a = established_agent(&t, None);
    let out = a.on_message(
        GatewayMsg::Snapshot {
            version: 1,
            config: None,
        },
        t.at(1),
    );
    assert_eq!(
        out,
        vec![AgentOut::Apply {
            version: 1,
            config: None
        }]
    );
}

#[test]
fn agent_resnapshot_of_applied_version_acks_without_apply() {
    let t = clock();
    let mut a = established_agent(&t, Some(5));
    let out = a.on_message(
        GatewayMsg::Snapshot {
            version: 5,
            config: cfg(7),
        },
        t.at(1),
    );
    assert_eq!(out, vec![AgentOut::Send(AgentMsg::Ack { version: 5 })]);
}

#[test]
fn agent_older_snapshot_is_applied_gateway_is_authoritative() {
    let t = clock();
    let mut a = established_agent(&t, Some(9));
    let out = a.on_message(
        GatewayMsg::Snapshot {
            version: 5,
            config: cfg(7),
        },
        t.at(1),
    );
    assert!(matches!(out[..], [AgentOut::Apply { version: 5, .. }]));
    a.applied(5, Ok(()));
    assert_eq!(a.applied_version(), Some(5));
}

#[test]
fn agent_in_order_update_is_applied() {
    let t = clock();
    let mut a = established_agent(&t, Some(3));
    let out = a.on_message(
        GatewayMsg::Update {
            from_version: 3,
            version: 4,
            config: cfg(7),
        },
        t.at(1),
    );
    assert!(matches!(out[..], [AgentOut::Apply { version: 4, .. }]));
    assert_eq!(
        a.applied(4, Ok(())),
        vec![AgentOut::Send(AgentMsg::Ack { version: 4 })]
    );
}

#[test]
fn agent_out_of_order_update_nacks_with_resync() {
    let t = clock();
    let mut a = established_agent(&t, Some(3));
    let out = a.on_message(
        GatewayMsg::Update {
            from_version: 5,
            version: 6,
            config: cfg(7),
        },
        t.at(1),
    );
    match &out[..] {
        [
            AgentOut::Send(AgentMsg::Nack {
                version: 6,
                reason,
                resync: true,
            }),
        ] => assert!(reason.contains("running version 3"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(a.applied_version(), Some(3));
    // With nothing applied, any Update needs a resync.
    let mut b = established_agent(&t, None);
    let out = b.on_message(
        GatewayMsg::Update {
            from_version: 1,
            version: 2,
            config: cfg(7),
        },
        t.at(1),
    );
    assert!(close_reason(&out).contains("running version none"));
    // An update that does not advance is refused too.
    let out = a.on_message(
        GatewayMsg::Update {
            from_version: 3,
            version: 3,
            config: cfg(7),
        },
        t.at(2),
    );
    assert!(matches!(
        out[..],
        [AgentOut::Send(AgentMsg::Nack { resync: true, .. })]
    ));
}

#[test]
fn agent_failed_apply_nacks_and_keeps_old_version() {
    let t = clock();
    let mut a = established_agent(&t, Some(1));
    a.on_message(
        GatewayMsg::Snapshot {
            version: 2,
            config: cfg(7),
        },
        t.at(1),
    );
    let out = a.applied(2, Err(ApplyRefused("netlink: EPERM".into())));
    assert_eq!(
        out,
        vec![AgentOut::Send(AgentMsg::Nack {
            version: 2,
            reason: "netlink: EPERM".into(),
            resync: false
        })]
    );
    assert_eq!(a.applied_version(), Some(1));
    assert!(a.status().last_error.unwrap().contains("EPERM"));
}

#[test]
fn agent_invalid_config_nacked_without_apply() {
    let t = clock();
    let mut a = established_agent(&t, Some(1));
    let out = a.on_message(
        GatewayMsg::Snapshot {
            version: 2,
            config: cfg(0), // tep_id 0 is invalid
        },
        t.at(1),
    );
    match &out[..] {
        [
            AgentOut::Send(AgentMsg::Nack {
                version: 2,
                reason,
                resync: false,
            }),
        ] => assert!(reason.contains("tep_id"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(a.applied_version(), Some(1));
}

#[test]
fn agent_queues_config_while_applying() {
    let t = clock();
    let mut a = established_agent(&t, Some(1));
    let out = a.on_message(
        GatewayMsg::Update {
            from_version: 1,
            version: 2,
            config: cfg(7),
        },
        t.at(1),
    );
    assert!(matches!(out[..], [AgentOut::Apply { version: 2, .. }]));
    // Pipelined update on top of 2 arrives before the apply finished.
    let out = a.on_message(
        GatewayMsg::Update {
            from_version: 2,
            version: 3,
            config: cfg(7),
        },
        t.at(2),
    );
    assert!(out.is_empty());
    let out = a.applied(2, Ok(()));
    assert_eq!(out.len(), 2);
    assert_eq!(out[0], AgentOut::Send(AgentMsg::Ack { version: 2 }));
    assert!(matches!(out[1], AgentOut::Apply { version: 3, .. }));
}

#[test]
fn agent_queue_overflow_closes() {
    let t = clock();
    let mut a = established_agent(&t, None);
    let snap = |v| GatewayMsg::Snapshot {
        version: v,
        config: None,
    };
    a.on_message(snap(1), t.at(1));
    for v in 0..u64::try_from(MAX_QUEUED_CONFIGS).unwrap() {
        assert!(a.on_message(snap(v + 2), t.at(1)).is_empty());
    }
    let out = a.on_message(snap(100), t.at(1));
    assert!(close_reason(&out).contains("while an apply is in progress"));
}

#[test]
fn agent_applied_with_wrong_version_is_ignored() {
    let t = clock();
    let mut a = established_agent(&t, None);
    assert!(a.applied(8, Ok(())).is_empty());
    assert_eq!(a.applied_version(), None);
    assert!(a.status().last_error.unwrap().contains("internal"));
}

#[test]
fn agent_heartbeat_cadence_and_dead_after_exactly_three_intervals() {
    let t = clock();
    let mut a = established_agent(&t, None);
    assert_eq!(a.next_timeout(), Some(t.at(1000)));
    assert!(a.on_tick(t.at(999)).is_empty());
    assert_eq!(
        a.on_tick(t.at(1000)),
        vec![AgentOut::Send(AgentMsg::Heartbeat { seq: 1 })]
    );
    assert!(a.on_tick(t.at(1500)).is_empty());
    assert_eq!(
        a.on_tick(t.at(2000)),
        vec![AgentOut::Send(AgentMsg::Heartbeat { seq: 2 })]
    );
    // Nothing received since t=0: still alive 1 ms before 3 intervals...
    assert_eq!(
        a.on_tick(t.at(2999)),
        Vec::<AgentOut>::new(),
        "not dead at 2999 ms"
    );
    assert_eq!(a.state(), AgentState::Established);
    // ...dead at exactly 3 intervals.
    let out = a.on_tick(t.at(3000));
    assert_eq!(
        out,
        vec![AgentOut::Close {
            reason: CloseReason::PeerDead {
                missed: 3,
                silent_ms: 3000
            }
        }]
    );
    assert_eq!(a.state(), AgentState::Closed);
    assert_eq!(
        a.status().last_error.as_deref(),
        Some("peer dead: nothing received for 3 heartbeat intervals (3000 ms)")
    );
    assert_eq!(a.next_timeout(), None);
}

#[test]
fn agent_any_received_message_proves_liveness() {
    let t = clock();
    let mut a = established_agent(&t, None);
    a.on_message(GatewayMsg::Heartbeat { seq: 1 }, t.at(2500));
    a.on_tick(t.at(3000)); // heartbeat, not death
    assert_eq!(a.state(), AgentState::Established);
    assert!(
        a.on_tick(t.at(5499))
            .iter()
            .all(|o| !matches!(o, AgentOut::Close { .. }))
    );
    assert!(matches!(
        a.on_tick(t.at(5500))[..],
        [AgentOut::Close {
            reason: CloseReason::PeerDead { .. }
        }]
    ));
}

#[test]
fn agent_late_tick_sends_one_heartbeat_not_a_burst() {
    let t = clock();
    let mut a = established_agent(&t, None);
    a.on_message(GatewayMsg::Heartbeat { seq: 1 }, t.at(2000));
    assert_eq!(a.on_tick(t.at(2500)).len(), 1);
    assert!(a.on_tick(t.at(2600)).is_empty());
    assert_eq!(a.next_timeout(), Some(t.at(3500)));
}

#[test]
fn agent_handshake_timeout() {
    let t = clock();
    let mut a = agent(&t, None);
    a.on_connected(t.at(0));
    assert!(a.on_tick(t.at(9_999)).is_empty());
    assert_eq!(
        a.on_tick(t.at(10_000)),
        vec![AgentOut::Close {
            reason: CloseReason::HandshakeTimeout(10_000)
        }]
    );
}

#[test]
fn agent_frame_error_closes_once() {
    let t = clock();
    let mut a = established_agent(&t, None);
    let err = FrameError::TooLarge {
        len: 5 << 20,
        max: 4 << 20,
    };
    let out = a.on_frame_error(err.clone(), t.at(1));
    assert_eq!(
        out,
        vec![AgentOut::Close {
            reason: CloseReason::Frame(err.clone())
        }]
    );
    assert!(
        a.status()
            .last_error
            .unwrap()
            .starts_with("bad frame: frame of 5242880 bytes exceeds")
    );
    // Already closed: nothing more.
    assert!(a.on_frame_error(err, t.at(2)).is_empty());
    assert!(a.on_disconnected("eof", t.at(2)).is_empty());
    assert!(
        a.on_message(GatewayMsg::Heartbeat { seq: 1 }, t.at(2))
            .is_empty()
    );
}

#[test]
fn agent_reconnect_cycle_carries_applied_version() {
    let t = clock();
    let mut a = established_agent(&t, None);
    a.on_message(
        GatewayMsg::Snapshot {
            version: 2,
            config: cfg(7),
        },
        t.at(1),
    );
    // Connection drops while the shell is applying.
    let out = a.on_disconnected("connection reset", t.at(2));
    assert_eq!(
        out,
        vec![AgentOut::Close {
            reason: CloseReason::Transport("connection reset".into())
        }]
    );
    // The apply completes anyway: recorded, nothing sent.
    assert!(a.applied(2, Ok(())).is_empty());
    assert_eq!(a.applied_version(), Some(2));
    a.on_connecting(t.at(700));
    let st = a.status();
    assert_eq!((st.state, st.since), (AgentState::Connecting, t.at(700)));
    assert!(st.last_error.unwrap().contains("connection reset"));
    let out = a.on_connected(t.at(800));
    assert!(matches!(
        &out[..],
        [AgentOut::Send(AgentMsg::Hello {
            applied_version: Some(2),
            ..
        })]
    ));
    a.on_message(welcome(1000), t.at(810));
    assert_eq!(a.status().since, t.at(810));
}

#[test]
fn agent_status_report_only_when_established() {
    let t = clock();
    let mut a = agent(&t, Some(1));
    assert!(a.status_report(BTreeMap::new()).is_empty());
    a.on_connected(t.at(0));
    a.on_message(welcome(1000), t.at(0));
    let counters = BTreeMap::from([("rx_packets".to_string(), 10u64)]);
    assert_eq!(
        a.status_report(counters.clone()),
        vec![AgentOut::Send(AgentMsg::Status(StatusReport {
            applied_version: Some(1),
            counters,
            last_error: None
        }))]
    );
}

#[test]
fn agent_local_close() {
    let t = clock();
    let mut a = established_agent(&t, None);
    assert_eq!(
        a.close("shutdown", t.at(1)),
        vec![AgentOut::Close {
            reason: CloseReason::Local("shutdown".into())
        }]
    );
}

// ----------------------------- backoff ---------------------------------

#[test]
fn backoff_ceilings_double_and_cap() {
    let mut b = Backoff::new(Backoff::DEFAULT_BASE, Backoff::DEFAULT_CAP, Jitter::Full);
    let mut ceilings = Vec::new();
    for _ in 0..10 {
        ceilings.push(u64::try_from(b.ceiling().as_millis()).unwrap());
        // rand = u64::MAX % (c+1) is below c; use c itself to hit the top.
        let c = *ceilings.last().unwrap();
        assert_eq!(u64::try_from(b.next_delay(c).as_millis()).unwrap(), c);
    }
    assert_eq!(
        ceilings,
        [
            500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000
        ]
    );
    for _ in 0..100 {
        b.next_delay(0);
    }
    assert_eq!(b.ceiling(), Duration::from_secs(30)); // no overflow
    b.reset();
    assert_eq!(b.attempt(), 0);
    assert_eq!(b.ceiling(), Duration::from_millis(500));
}

#[test]
fn backoff_jitter_bounds() {
    let mut full = Backoff::new(
        Duration::from_millis(500),
        Duration::from_secs(30),
        Jitter::Full,
    );
    assert_eq!(full.next_delay(0), Duration::ZERO);
    let mut equal = Backoff::default();
    assert_eq!(equal.next_delay(0), Duration::from_millis(250));
    assert_eq!(equal.next_delay(0), Duration::from_millis(500));
    let mut rng = SplitMix64::new(42);
    let mut e = Backoff::default();
    for _ in 0..50 {
        let ceil = e.ceiling();
        let d = e.next_delay(rng.next_u64());
        assert!(d >= ceil / 2 && d <= ceil, "{d:?} vs {ceil:?}");
    }
}

#[test]
fn backoff_is_deterministic_per_seed_and_differs_across_seeds() {
    let run = |seed| {
        let mut rng = SplitMix64::new(seed);
        let mut b = Backoff::default();
        (0..8)
            .map(|_| b.next_delay(rng.next_u64()))
            .collect::<Vec<_>>()
    };
    assert_eq!(run(1), run(1));
    assert_ne!(run(1), run(2));
}

/// Drives one connection of `a` from `start_ms`: Hello, Welcome 5 ms later,
/// then the gateway's heartbeat every second (and the agent's ticks) until
/// the gateway drops the connection at `end_ms`. Returns when the session
/// reached `Established`, as the shell sees it (the `Established` output).
fn session_until_dropped(a: &mut AgentSession, t: &Clock, start_ms: u64, end_ms: u64) -> Instant {
    a.on_connecting(t.at(start_ms));
    a.on_connected(t.at(start_ms));
    let out = a.on_message(welcome(1000), t.at(start_ms + 5));
    assert!(matches!(out[..], [AgentOut::Established { .. }]), "{out:?}");
    let established_at = t.at(start_ms + 5);
    let mut now = start_ms + 5;
    let mut seq = 0;
    while now + 1000 < end_ms {
        now += 1000;
        seq += 1;
        assert!(
            a.on_message(GatewayMsg::Heartbeat { seq }, t.at(now))
                .is_empty()
        );
        a.on_tick(t.at(now));
        assert_eq!(a.state(), AgentState::Established, "alive at {now} ms");
    }
    let out = a.on_disconnected("closed by the gateway", t.at(end_ms));
    assert!(matches!(out[..], [AgentOut::Close { .. }]), "{out:?}");
    established_at
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap()
}

/// Issue 13: a gateway that accepts the session and drops it right away
/// (its config for us cannot be framed) must not be redialled twice a
/// second. Sessions that die young keep growing the delay up to the cap;
/// only one that stayed established for 30 s starts again from the base.
#[test]
fn backoff_grows_across_sessions_that_die_right_after_established() {
    let t = clock();
    let mut a = agent(&t, None);
    let mut b = Backoff::new(Backoff::DEFAULT_BASE, Backoff::DEFAULT_CAP, Jitter::Full);
    let mut now = 0;
    let mut ceilings = Vec::new();
    let mut dials_in_first_minute = 0;
    for _ in 0..10 {
        if now < 60_000 {
            dials_in_first_minute += 1;
        }
        let up = session_until_dropped(&mut a, &t, now, now + 20);
        now += 20;
        b.session_ended(Some(up), t.at(now));
        ceilings.push(ms(b.ceiling()));
        // The top of the range: the slowest redial jitter allows.
        now += ms(b.next_delay(ms(b.ceiling())));
    }
    assert_eq!(
        ceilings,
        [
            500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000
        ]
    );
    assert!(
        dials_in_first_minute <= 8,
        "{dials_in_first_minute} dials in the first minute"
    );

    // Stayed up just short of 30 s: still a failure.
    let up = session_until_dropped(&mut a, &t, now, now + 29_000);
    now += 29_000;
    b.session_ended(Some(up), t.at(now));
    assert_eq!(b.ceiling(), Backoff::DEFAULT_CAP);
    now += ms(b.next_delay(0));

    // Healthy for 30 s (heartbeats answered all along): from the base again.
    let up = session_until_dropped(&mut a, &t, now, now + 30_010);
    now += 30_010;
    b.session_ended(Some(up), t.at(now));
    assert_eq!(b.attempt(), 0);
    assert_eq!(b.ceiling(), Backoff::DEFAULT_BASE);

    // A failed dial (never established) counts as a failed attempt.
    b.next_delay(0);
    b.session_ended(None, t.at(now + 100_000));
    assert_eq!(b.attempt(), 1);
}

#[test]
fn backoff_healthy_threshold_is_configurable() {
    let t = clock();
    let mut b = Backoff::default().with_healthy_after(Duration::from_secs(5));
    assert_eq!(b.healthy_after(), Duration::from_secs(5));
    b.next_delay(0);
    b.next_delay(0);
    b.session_ended(Some(t.at(0)), t.at(4_999));
    assert_eq!(b.attempt(), 2);
    b.session_ended(Some(t.at(0)), t.at(5_000));
    assert_eq!(b.attempt(), 0);
    // A clock that went backwards is not a healthy session.
    b.next_delay(0);
    b.session_ended(Some(t.at(10_000)), t.at(0));
    assert_eq!(b.attempt(), 1);
}

/// The worst-case frame of a config is the real encoding of an `Update`
/// carrying it, at least as large as the `Snapshot` the session sends
/// first, and the config comes back unchanged.
#[test]
fn worst_case_frame_is_the_largest_config_message() {
    let c = with_version(cfg(7), 42);
    let (back, len) = GatewaySession::worst_case_frame(c.clone());
    assert_eq!(back, c);
    let len = len.expect("small config fits");
    let update = encode(&GatewayMsg::Update {
        from_version: u64::MAX,
        version: u64::MAX,
        config: with_version(c.clone(), u64::MAX),
    })
    .unwrap();
    assert_eq!(len, update.len());
    let snapshot = encode(&GatewayMsg::Snapshot {
        version: 42,
        config: c.clone(),
    })
    .unwrap();
    assert!(snapshot.len() < len);
    assert_eq!(GatewaySession::worst_case_frame(None).0, None);

    // Over the limit: the framing error the shell would hit, config back.
    let mut big = c.clone();
    if let Some(cfg) = &mut big {
        cfg.firewall = Some(crate::firewall::FirewallConfig {
            addrsets: vec![crate::firewall::AddrSet {
                name: "ipset-big".into(),
                addrs: (0..300_000u32)
                    .map(|i| {
                        ipnet::IpNet::from(std::net::IpAddr::V4(Ipv4Addr::from(i | 0x0a00_0000)))
                    })
                    .collect(),
            }],
            ..crate::firewall::FirewallConfig::allow_all()
        });
    }
    let (back, len) = GatewaySession::worst_case_frame(big.clone());
    assert_eq!(back, big);
    assert!(
        matches!(len, Err(FrameError::TooLarge { len, max }) if len > max && max == crate::proto::MAX_FRAME),
        "{len:?}"
    );
}

// ----------------------------- gateway ---------------------------------

fn gateway(t: &Clock) -> GatewaySession {
    GatewaySession::new(GatewayConfig::default(), ID, t.at(0))
}

fn hello(versions: Vec<u32>, applied: Option<u64>) -> AgentMsg {
    AgentMsg::Hello {
        versions,
        agent_version: "0.1.0".into(),
        instance: meta(),
        applied_version: applied,
    }
}

/// A gateway session that accepted the agent and had snapshot `version` acked.
fn established_gateway(t: &Clock, version: u64) -> GatewaySession {
    let mut g = gateway(t);
    g.on_message(hello(vec![1], None), t.at(0));
    let out = g.accept(7, version, cfg(7), t.at(0));
    assert_eq!(out.len(), 2);
    g.on_message(AgentMsg::Ack { version }, t.at(0));
    assert_eq!(g.acked_version(), Some(version));
    g
}

#[test]
fn gateway_handshake_golden() {
    let t = clock();
    let mut g = gateway(&t);
    assert_eq!(g.next_timeout(), Some(t.at(10_000)));
    let out = g.on_message(hello(vec![1, 2], Some(3)), t.at(1));
    assert_eq!(
        out,
        vec![GatewayOut::Hello {
            instance: meta(),
            agent_version: "0.1.0".into(),
            applied_version: Some(3),
            protocol_version: 2,
        }]
    );
    assert_eq!(g.state(), GatewayState::HelloReceived);
    assert_eq!(g.agent_applied_version(), Some(3));
    let out = g.accept(7, 5, cfg(7), t.at(2));
    assert_eq!(
        out,
        vec![
            GatewayOut::Send(GatewayMsg::Welcome {
                version: 2,
                instance_id: ID.into(),
                tep_id: 7,
                heartbeat_ms: DEFAULT_HEARTBEAT_MS,
            }),
            // Always a Snapshot first, even though the agent runs 3.
            GatewayOut::Send(GatewayMsg::Snapshot {
                version: 5,
                config: cfg(7),
            }),
        ]
    );
    assert_eq!(g.in_flight(), Some(5));
    assert_eq!(
        g.on_message(AgentMsg::Ack { version: 5 }, t.at(3)),
        vec![GatewayOut::Acked { version: 5 }]
    );
    assert_eq!(g.acked_version(), Some(5));
    assert_eq!(g.in_flight(), None);
    // A second accept is ignored.
    assert!(g.accept(7, 6, cfg(7), t.at(4)).is_empty());
}

#[test]
fn gateway_rejects_no_common_version_with_reason() {
    let t = clock();
    let mut g = gateway(&t);
    let out = g.on_message(hello(vec![7, 8], None), t.at(1));
    let reason = "no common protocol version (ours [1, 2], peer offers [7, 8])";
    assert_eq!(
        out,
        vec![
            GatewayOut::Send(GatewayMsg::Reject {
                reason: reason.into()
            }),
            GatewayOut::Close {
                reason: CloseReason::NoCommonVersion {
                    ours: vec![1, 2],
                    theirs: vec![7, 8]
                }
            },
        ]
    );
    assert_eq!(g.state(), GatewayState::Closed);
    // Closed: everything is ignored.
    assert!(g.on_message(hello(vec![1], None), t.at(2)).is_empty());
    assert!(g.push(9, None).is_empty());
    assert!(g.close("x", t.at(2)).is_empty());
}

#[test]
fn gateway_rejects_hello_for_another_instance() {
    let t = clock();
    let mut g = GatewaySession::new(GatewayConfig::default(), "i-cert", t.at(0));
    let out = g.on_message(hello(vec![1], None), t.at(1));
    assert!(close_reason(&out).contains("certificate is for \\\"i-cert\\\""));
    assert!(matches!(
        out[0],
        GatewayOut::Send(GatewayMsg::Reject { .. })
    ));
}

#[test]
fn gateway_requires_hello_first_and_nothing_before_welcome() {
    let t = clock();
    let mut g = gateway(&t);
    let out = g.on_message(AgentMsg::Heartbeat { seq: 1 }, t.at(1));
    assert!(close_reason(&out).contains("expected Hello, got Heartbeat"));
    let mut g = gateway(&t);
    g.on_message(hello(vec![1], None), t.at(1));
    let out = g.on_message(AgentMsg::Ack { version: 1 }, t.at(2));
    assert!(close_reason(&out).contains("Ack before Welcome"));
    let mut g = established_gateway(&t, 1);
    let out = g.on_message(hello(vec![1], None), t.at(2));
    assert!(close_reason(&out).contains("Hello on an established session"));
}

#[test]
fn gateway_refuse_sends_reason_verbatim() {
    let t = clock();
    let mut g = gateway(&t);
    g.on_message(hello(vec![1], None), t.at(1));
    let out = g.refuse("instance revoked", t.at(2));
    assert_eq!(
        out,
        vec![
            GatewayOut::Send(GatewayMsg::Reject {
                reason: "instance revoked".into()
            }),
            GatewayOut::Close {
                reason: CloseReason::Local("instance revoked".into())
            },
        ]
    );
}

#[test]
fn gateway_push_sends_update_from_acked_version() {
    let t = clock();
    let mut g = established_gateway(&t, 5);
    assert_eq!(
        g.push(6, cfg(7)),
        vec![GatewayOut::Send(GatewayMsg::Update {
            from_version: 5,
            version: 6,
            config: cfg(7),
        })]
    );
    assert_eq!(g.in_flight(), Some(6));
}

#[test]
fn gateway_coalesces_pushes_while_in_flight() {
    let t = clock();
    let mut g = established_gateway(&t, 1);
    assert_eq!(g.push(2, cfg(7)).len(), 1);
    assert!(g.push(3, cfg(8)).is_empty());
    assert!(g.push(4, cfg(9)).is_empty());
    let out = g.on_message(AgentMsg::Ack { version: 2 }, t.at(1));
    assert_eq!(
        out,
        vec![
            GatewayOut::Acked { version: 2 },
            GatewayOut::Send(GatewayMsg::Update {
                from_version: 2,
                version: 4,
                config: cfg(9),
            }),
        ]
    );
}

#[test]
fn gateway_ignores_stale_push() {
    let t = clock();
    let mut g = established_gateway(&t, 5);
    assert!(g.push(5, cfg(7)).is_empty());
    assert!(g.push(4, cfg(7)).is_empty());
}

#[test]
fn gateway_push_before_accept_is_sent_as_snapshot() {
    let t = clock();
    let mut g = gateway(&t);
    g.on_message(hello(vec![1], None), t.at(0));
    assert!(g.push(9, cfg(9)).is_empty());
    // The shell's (older) read of the store loses to the newer push.
    let out = g.accept(7, 8, cfg(8), t.at(1));
    assert_eq!(
        out[1],
        GatewayOut::Send(GatewayMsg::Snapshot {
            version: 9,
            config: cfg(9)
        })
    );
}

#[test]
fn gateway_resync_nack_answers_with_snapshot_of_latest() {
    let t = clock();
    let mut g = established_gateway(&t, 5);
    g.push(6, cfg(7));
    g.push(7, cfg(8)); // coalesced
    let out = g.on_message(
        AgentMsg::Nack {
            version: 6,
            reason: "update 5->6 does not apply to running version 4; resync requested".into(),
            resync: true,
        },
        t.at(1),
    );
    assert_eq!(
        out,
        vec![
            GatewayOut::Nacked {
                version: 6,
                reason: "update 5->6 does not apply to running version 4; resync requested".into(),
                resync: true
            },
            GatewayOut::Send(GatewayMsg::Snapshot {
                version: 7,
                config: cfg(8)
            }),
        ]
    );
    assert_eq!(g.nacked().map(|(v, _)| v), Some(6));
    g.on_message(AgentMsg::Ack { version: 7 }, t.at(2));
    assert_eq!(g.nacked(), None);
    assert_eq!(g.acked_version(), Some(7));
}

#[test]
fn gateway_apply_nack_is_not_retried_until_next_push() {
    let t = clock();
    let mut g = established_gateway(&t, 5);
    g.push(6, cfg(7));
    let out = g.on_message(
        AgentMsg::Nack {
            version: 6,
            reason: "bad".into(),
            resync: false,
        },
        t.at(1),
    );
    assert_eq!(
        out,
        vec![GatewayOut::Nacked {
            version: 6,
            reason: "bad".into(),
            resync: false
        }]
    );
    assert_eq!(g.nacked(), Some((6, "bad")));
    assert_eq!(g.acked_version(), Some(5));
    // The agent still runs 5, so the next update builds on 5.
    assert_eq!(
        g.push(7, cfg(7)),
        vec![GatewayOut::Send(GatewayMsg::Update {
            from_version: 5,
            version: 7,
            config: cfg(7)
        })]
    );
}

#[test]
fn gateway_nacked_first_snapshot_then_push_is_snapshot() {
    let t = clock();
    let mut g = gateway(&t);
    g.on_message(hello(vec![1], None), t.at(0));
    g.accept(7, 1, cfg(0), t.at(0));
    g.on_message(
        AgentMsg::Nack {
            version: 1,
            reason: "invalid".into(),
            resync: false,
        },
        t.at(1),
    );
    // Agent runs nothing: no base for an Update.
    assert!(matches!(
        g.push(2, cfg(7))[..],
        [GatewayOut::Send(GatewayMsg::Snapshot { version: 2, .. })]
    ));
}

#[test]
fn gateway_unsolicited_ack_or_nack_closes() {
    let t = clock();
    let mut g = established_gateway(&t, 5);
    let out = g.on_message(AgentMsg::Ack { version: 9 }, t.at(1));
    assert!(close_reason(&out).contains("Ack for version 9, but nothing is in flight"));
    let mut g = established_gateway(&t, 5);
    g.push(6, None);
    let out = g.on_message(
        AgentMsg::Nack {
            version: 5,
            reason: String::new(),
            resync: false,
        },
        t.at(1),
    );
    assert!(close_reason(&out).contains("version 6 is in flight"));
}

#[test]
fn gateway_forwards_status() {
    let t = clock();
    let mut g = established_gateway(&t, 1);
    let r = StatusReport {
        applied_version: Some(1),
        counters: BTreeMap::from([("tx".into(), 3)]),
        last_error: None,
    };
    assert_eq!(
        g.on_message(AgentMsg::Status(r.clone()), t.at(1)),
        vec![GatewayOut::Status(r)]
    );
}

fn report() -> crate::lb::HealthReport {
    let key: crate::lb::HealthKey = serde_json::from_str(
        r#"{"protocol":"tcp","vip":"10.64.1.2","port":10000,"real_ip":"192.168.1.100","real_port":8089}"#,
    )
    .unwrap();
    crate::lb::HealthReport {
        full: true,
        verdicts: vec![crate::lb::HealthVerdict {
            key,
            liveness: crate::lb::Liveness::Down,
            reason: "connect 192.168.1.100:8089: connection refused".into(),
        }],
    }
}

#[test]
fn health_goes_up_only_on_a_version_2_session() {
    let t = clock();
    // Version 2: forwarded.
    let mut g = gateway(&t);
    g.on_message(hello(vec![1, 2], None), t.at(0));
    g.accept(7, 1, cfg(7), t.at(0));
    assert_eq!(
        g.on_message(AgentMsg::Health(report()), t.at(1)),
        vec![GatewayOut::Health(report())]
    );
    // Too many verdicts: the session goes.
    let mut big = report();
    big.verdicts = vec![big.verdicts[0].clone(); crate::lb::HealthReport::MAX_VERDICTS + 1];
    let out = g.on_message(AgentMsg::Health(big), t.at(2));
    assert!(close_reason(&out).contains("at most 65536"), "{out:?}");
    // Version 1: a protocol error.
    let mut g = established_gateway(&t, 1);
    let out = g.on_message(AgentMsg::Health(report()), t.at(1));
    assert!(
        close_reason(&out).contains("Health needs protocol version 2"),
        "{out:?}"
    );
    assert_eq!(g.state(), GatewayState::Closed);
    // The agent sends it only when the session speaks version 2.
    let a = established_agent(&t, None);
    assert_eq!(a.health_report(report()), None, "version 1 session");
    let mut a = agent(&t, None);
    a.on_connected(t.at(0));
    a.on_message(
        GatewayMsg::Welcome {
            version: 2,
            instance_id: ID.into(),
            tep_id: 7,
            heartbeat_ms: 1000,
        },
        t.at(0),
    );
    assert_eq!(
        a.health_report(report()),
        Some(AgentOut::Send(AgentMsg::Health(report())))
    );
    // The wire form round-trips.
    let j = serde_json::to_string(&AgentMsg::Health(report())).unwrap();
    assert!(
        j.starts_with(r#"{"type":"Health","full":true,"verdicts":[{"protocol":"tcp""#),
        "{j}"
    );
    assert_eq!(
        serde_json::from_str::<AgentMsg>(&j).unwrap(),
        AgentMsg::Health(report())
    );
}

#[test]
fn gateway_heartbeats_and_dead_after_exactly_three_intervals() {
    let t = clock();
    let mut g = established_gateway(&t, 1);
    assert_eq!(
        g.on_tick(t.at(1000)),
        vec![GatewayOut::Send(GatewayMsg::Heartbeat { seq: 1 })]
    );
    g.on_message(AgentMsg::Heartbeat { seq: 1 }, t.at(1200));
    g.on_tick(t.at(2000));
    g.on_tick(t.at(3000));
    g.on_tick(t.at(4000));
    assert_eq!(g.state(), GatewayState::Established);
    // 3 intervals after the last receive (1200): 4200.
    let out = g.on_tick(t.at(4199));
    assert!(out.iter().all(|o| !matches!(o, GatewayOut::Close { .. })));
    assert_eq!(
        g.on_tick(t.at(4200)),
        vec![GatewayOut::Close {
            reason: CloseReason::PeerDead {
                missed: 3,
                silent_ms: 3000
            }
        }]
    );
}

#[test]
fn gateway_handshake_timeout_when_no_hello() {
    let t = clock();
    let mut g = gateway(&t);
    assert!(g.on_tick(t.at(9_999)).is_empty());
    let out = g.on_tick(t.at(10_000));
    assert!(matches!(
        out[..],
        [
            GatewayOut::Send(GatewayMsg::Reject { .. }),
            GatewayOut::Close {
                reason: CloseReason::HandshakeTimeout(10_000)
            }
        ]
    ));
}

#[test]
fn gateway_close_for_revocation() {
    let t = clock();
    let mut g = established_gateway(&t, 1);
    let out = g.close("certificate revoked", t.at(5));
    assert_eq!(
        out,
        vec![
            GatewayOut::Send(GatewayMsg::Reject {
                reason: "certificate revoked".into()
            }),
            GatewayOut::Close {
                reason: CloseReason::Local("certificate revoked".into())
            },
        ]
    );
    assert_eq!(g.next_timeout(), None);
}

#[test]
fn gateway_garbage_and_oversized_frames_close_with_reason() {
    let t = clock();
    for bytes in [
        // Length prefix of 5 MiB.
        (5u32 << 20).to_be_bytes().to_vec(),
        // A well-framed non-JSON payload.
        [&3u32.to_be_bytes()[..], b"\x00\x01\x02"].concat(),
        // A message type from the wrong direction.
        [&16u32.to_be_bytes()[..], br#"{"type":"Reject"}"#].concat(),
    ] {
        let mut g = gateway(&t);
        let mut d = Decoder::<AgentMsg>::new();
        d.push(&bytes);
        let err = d.next().unwrap_err();
        let out = g.on_frame_error(err.clone(), t.at(1));
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(
            out[1],
            GatewayOut::Close {
                reason: CloseReason::Frame(err)
            }
        );
        assert_eq!(g.state(), GatewayState::Closed);
    }
}

// ------------------------- both, over the wire -------------------------

/// Carries outputs between the two sessions through the real codec.
struct Pair {
    a: AgentSession,
    g: GatewaySession,
    to_gw: Decoder<AgentMsg>,
    to_agent: Decoder<GatewayMsg>,
    /// Every message type that crossed, in order, prefixed "a>" or "g>".
    log: Vec<String>,
    /// Configs the agent shell "applied".
    datapath: Option<(u64, Option<InstanceConfig>)>,
    fail_next_apply: bool,
}

impl Pair {
    fn new(t: &Clock, applied: Option<u64>) -> Self {
        Pair {
            a: agent(t, applied),
            g: gateway(t),
            to_gw: Decoder::new(),
            to_agent: Decoder::new(),
            log: Vec::new(),
            datapath: None,
            fail_next_apply: false,
        }
    }

    fn agent_outs(&mut self, outs: Vec<AgentOut>) {
        for o in outs {
            match o {
                AgentOut::Send(m) => {
                    self.log.push(format!("a>{}", m.type_name()));
                    self.to_gw.push(&encode(&m).unwrap());
                }
                AgentOut::Apply { version, config } => {
                    let res = if std::mem::take(&mut self.fail_next_apply) {
                        Err(ApplyRefused("injected".into()))
                    } else {
                        self.datapath = Some((version, config));
                        Ok(())
                    };
                    let more = self.a.applied(version, res);
                    self.agent_outs(more);
                }
                AgentOut::Established { .. } | AgentOut::Close { .. } => {}
            }
        }
    }

    fn gateway_outs(&mut self, outs: Vec<GatewayOut>, now: Instant) {
        for o in outs {
            match o {
                GatewayOut::Send(m) => {
                    self.log.push(format!("g>{}", m.type_name()));
                    self.to_agent.push(&encode(&m).unwrap());
                }
                GatewayOut::Hello { .. } => {
                    let more = self.g.accept(7, 10, cfg(7), now);
                    self.gateway_outs(more, now);
                }
                _ => {}
            }
        }
    }

    /// Delivers everything in flight until both sides are quiet.
    fn run(&mut self, now: Instant) {
        loop {
            let mut moved = false;
            while let Some(m) = self.to_gw.next().unwrap() {
                moved = true;
                let outs = self.g.on_message(m, now);
                self.gateway_outs(outs, now);
            }
            while let Some(m) = self.to_agent.next().unwrap() {
                moved = true;
                let outs = self.a.on_message(m, now);
                self.agent_outs(outs);
            }
            if !moved {
                break;
            }
        }
    }
}

#[test]
fn end_to_end_handshake_snapshot_updates() {
    let t = clock();
    let mut p = Pair::new(&t, None);
    let outs = p.a.on_connected(t.at(0));
    p.agent_outs(outs);
    p.run(t.at(0));
    assert_eq!(p.log, ["a>Hello", "g>Welcome", "g>Snapshot", "a>Ack"]);
    assert_eq!(p.a.applied_version(), Some(10));
    assert_eq!(p.datapath, Some((10, with_version(cfg(7), 10))));
    p.log.clear();
    let outs = p.g.push(11, cfg(8));
    p.gateway_outs(outs, t.at(1));
    p.run(t.at(1));
    assert_eq!(p.log, ["g>Update", "a>Ack"]);
    assert_eq!(p.g.acked_version(), Some(11));
    assert_eq!(p.datapath, Some((11, with_version(cfg(8), 11))));
}

#[test]
fn end_to_end_failed_apply_then_recovery() {
    let t = clock();
    let mut p = Pair::new(&t, None);
    let outs = p.a.on_connected(t.at(0));
    p.agent_outs(outs);
    p.run(t.at(0));
    p.log.clear();
    p.fail_next_apply = true;
    let outs = p.g.push(11, cfg(8));
    p.gateway_outs(outs, t.at(1));
    p.run(t.at(1));
    assert_eq!(p.log, ["g>Update", "a>Nack"]);
    assert_eq!(p.g.nacked(), Some((11, "injected")));
    assert_eq!(p.a.applied_version(), Some(10));
    p.log.clear();
    let outs = p.g.push(12, cfg(9));
    p.gateway_outs(outs, t.at(2));
    p.run(t.at(2));
    assert_eq!(p.log, ["g>Update", "a>Ack"]);
    assert_eq!(p.a.applied_version(), Some(12));
}

#[test]
fn end_to_end_out_of_order_update_resyncs() {
    let t = clock();
    let mut p = Pair::new(&t, None);
    let outs = p.a.on_connected(t.at(0));
    p.agent_outs(outs);
    p.run(t.at(0));
    p.log.clear();
    // Desynchronise: the agent's datapath is rolled back behind the
    // gateway's back (e.g. restored from an older persisted file).
    p.a.applied = Some(9);
    let outs = p.g.push(11, cfg(8));
    p.gateway_outs(outs, t.at(1));
    p.run(t.at(1));
    assert_eq!(p.log, ["g>Update", "a>Nack", "g>Snapshot", "a>Ack"]);
    assert_eq!(p.a.applied_version(), Some(11));
    assert_eq!(p.g.acked_version(), Some(11));
}

#[test]
fn end_to_end_reconnect_with_current_version_acks_without_apply() {
    let t = clock();
    let mut p = Pair::new(&t, Some(10));
    let outs = p.a.on_connected(t.at(0));
    p.agent_outs(outs);
    p.run(t.at(0));
    assert_eq!(p.log, ["a>Hello", "g>Welcome", "g>Snapshot", "a>Ack"]);
    assert_eq!(p.datapath, None, "no apply for the version already running");
    assert_eq!(p.g.acked_version(), Some(10));
}

#[test]
fn end_to_end_version_mismatch() {
    let t = clock();
    let mut p = Pair::new(&t, None);
    p.a = AgentSession::new(
        AgentSessionConfig {
            versions: vec![3, 4],
            ..AgentSessionConfig::new("gw:5555", "9.0", meta())
        },
        None,
        t.at(0),
    );
    let outs = p.a.on_connected(t.at(0));
    p.agent_outs(outs);
    p.run(t.at(0));
    assert_eq!(p.log, ["a>Hello", "g>Reject"]);
    assert_eq!(p.g.state(), GatewayState::Closed);
    assert_eq!(p.a.state(), AgentState::Closed);
    assert_eq!(
        p.a.status().last_error.as_deref(),
        Some("rejected by gateway: no common protocol version (ours [1, 2], peer offers [3, 4])")
    );
}

// ------------------------- property tests ------------------------------

mod prop {
    use proptest::prelude::*;

    use super::*;
    use crate::framing::prop::{agent_msg, gateway_msg};

    #[derive(Debug, Clone)]
    #[allow(clippy::large_enum_variant)] // test-only event list
    enum AgentEv {
        Connected,
        Msg(GatewayMsg),
        Applied(bool),
        Tick(u64),
        Disconnected,
    }

    fn agent_ev() -> impl Strategy<Value = AgentEv> {
        prop_oneof![
            1 => Just(AgentEv::Connected),
            6 => gateway_msg().prop_map(AgentEv::Msg),
            2 => Just(GatewayMsg::Welcome { version: 1, instance_id: ID.into(), tep_id: 7, heartbeat_ms: 1000 }).prop_map(AgentEv::Msg),
            2 => any::<bool>().prop_map(AgentEv::Applied),
            3 => (0u64..5000).prop_map(AgentEv::Tick),
            1 => Just(AgentEv::Disconnected),
        ]
    }

    #[derive(Debug, Clone)]
    enum GwEv {
        Msg(AgentMsg),
        Accept(u64),
        Push(u64),
        Tick(u64),
    }

    fn gw_ev() -> impl Strategy<Value = GwEv> {
        prop_oneof![
            4 => agent_msg().prop_map(GwEv::Msg),
            2 => (0u64..4).prop_map(|v| GwEv::Msg(AgentMsg::Ack { version: v })),
            1 => Just(GwEv::Msg(AgentMsg::Hello {
                versions: vec![1],
                agent_version: "x".into(),
                instance: meta(),
                applied_version: None,
            })),
            1 => (0u64..4).prop_map(GwEv::Accept),
            2 => (0u64..6).prop_map(GwEv::Push),
            2 => (0u64..5000).prop_map(GwEv::Tick),
        ]
    }

    proptest! {
        /// Any event sequence: no panic, at most one Close per connection,
        /// nothing sent after it, at most one Apply outstanding.
        #[test]
        fn agent_survives_any_sequence(evs in proptest::collection::vec(agent_ev(), 0..40)) {
            let t = clock();
            let mut a = agent(&t, None);
            let mut now = 0u64;
            let mut closed = true; // not connected yet
            let mut pending: Option<u64> = None;
            for ev in evs {
                let out = match ev {
                    AgentEv::Connected => { closed = false; a.on_connected(t.at(now)) }
                    AgentEv::Msg(m) => a.on_message(m, t.at(now)),
                    AgentEv::Applied(ok) => match pending.take() {
                        Some(v) => a.applied(v, if ok { Ok(()) } else { Err(ApplyRefused("e".into())) }),
                        None => a.applied(0, Ok(())),
                    },
                    AgentEv::Tick(d) => { now += d; a.on_tick(t.at(now)) }
                    AgentEv::Disconnected => a.on_disconnected("eof", t.at(now)),
                };
                for o in out {
                    match o {
                        AgentOut::Close { .. } => { prop_assert!(!closed, "second Close"); closed = true; }
                        AgentOut::Send(_) | AgentOut::Established { .. } => prop_assert!(!closed, "output after Close"),
                        AgentOut::Apply { version, .. } => {
                            prop_assert!(pending.is_none(), "two Applies outstanding");
                            pending = Some(version);
                        }
                    }
                }
            }
        }

        /// Any event sequence: no panic, at most one config message in flight,
        /// nothing after Close.
        #[test]
        fn gateway_survives_any_sequence(evs in proptest::collection::vec(gw_ev(), 0..40)) {
            let t = clock();
            let mut g = gateway(&t);
            let mut now = 0u64;
            let mut closed = false;
            let mut in_flight = 0i32;
            for ev in evs {
                let out = match ev {
                    GwEv::Msg(m) => g.on_message(m, t.at(now)),
                    GwEv::Accept(v) => g.accept(7, v, None, t.at(now)),
                    GwEv::Push(v) => g.push(v, None),
                    GwEv::Tick(d) => { now += d; g.on_tick(t.at(now)) }
                };
                for o in out {
                    prop_assert!(!closed, "output after Close: {:?}", o);
                    match o {
                        GatewayOut::Close { .. } => closed = true,
                        GatewayOut::Send(GatewayMsg::Snapshot { .. } | GatewayMsg::Update { .. }) => {
                            in_flight += 1;
                            prop_assert!(in_flight <= 1, "two configs in flight");
                        }
                        GatewayOut::Acked { .. } | GatewayOut::Nacked { .. } => in_flight -= 1,
                        _ => {}
                    }
                }
                prop_assert_eq!(g.in_flight().is_some(), in_flight == 1 && !closed);
            }
        }
    }
}

#[test]
fn agent_dial_failure_is_recorded_without_a_session() {
    let t = clock();
    let mut a = agent(&t, Some(3));
    a.on_connecting(t.at(0));
    a.on_dial_failed(
        "TLS handshake: invalid peer certificate: BadSignature",
        t.at(10),
    );
    let st = a.status();
    assert_eq!(st.state, AgentState::Connecting);
    assert_eq!(st.since, t.at(10));
    assert!(st.last_error.unwrap().contains("BadSignature"));
    assert_eq!(
        st.applied_version,
        Some(3),
        "the applied config is untouched"
    );
    // A dial failure while a session is up is not possible; if reported, it
    // does not disturb the session.
    a.on_connecting(t.at(20));
    a.on_connected(t.at(30));
    a.on_message(welcome(1000), t.at(40));
    a.on_dial_failed("late report", t.at(50));
    assert_eq!(a.status().state, AgentState::Established);
}
