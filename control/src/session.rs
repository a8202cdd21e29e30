//! The control-channel state machines, sans-IO (the quinn-proto shape): no
//! sockets, clocks or threads. The shell feeds events in — a connection came
//! up, a decoded message, a frame error, a timer tick, an apply finished —
//! and gets back a list of outputs to act on in order: messages to encode
//! and send, config to apply, session events to log, and at most one
//! `Close` per connection. Time is always a caller-supplied
//! [`std::time::Instant`]; [`AgentSession::next_timeout`] and
//! [`GatewaySession::next_timeout`] say when the next `on_tick` is due.
//!
//! This file owns:
//! * [`AgentSession`]: one per agent process, living across reconnects
//!   (Connecting -> HelloSent -> Established -> Closed -> Connecting ...);
//!   it remembers the applied config version and the [`ConnectionStatus`]
//!   shown by `nsxcli get gateway connection status`.
//! * [`GatewaySession`]: one per accepted connection (AwaitingHello ->
//!   HelloReceived -> Established -> Closed).
//! * [`Backoff`]: the agent's capped, jittered exponential reconnect delay.
//! * [`CloseReason`]: why a session ended, and [`ApplyRefused`]: why the
//!   shell could not apply a config (this module's error types).
//!
//! Config flow is stop-and-wait: the gateway has at most one Snapshot/Update
//! in flight per agent and coalesces newer desired states while it waits
//! (every message carries the whole config, so skipping versions is safe).

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::framing::FrameError;
use crate::model::InstanceConfig;
use crate::proto::{
    AgentMsg, DEFAULT_HEARTBEAT_MS, GatewayMsg, InstanceMeta, MAX_HEARTBEAT_MS, MIN_HEARTBEAT_MS,
    Message, SUPPORTED_VERSIONS, StatusReport, negotiate,
};
use crate::validate::validate;

/// Heartbeat intervals without any received message after which the peer
/// is declared dead.
pub const MISSED_HEARTBEATS: u32 = 3;

/// Default time allowed from connection to an established session.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Config messages an agent holds while an apply is in progress. A
/// conforming gateway never has more than one in flight.
pub const MAX_QUEUED_CONFIGS: usize = 8;

/// Why a session ended. Every `Close` output carries one; its `Display` is
/// the line to log and the agent's `last_error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CloseReason {
    #[error("no common protocol version (ours {ours:?}, peer offers {theirs:?})")]
    NoCommonVersion { ours: Vec<u32>, theirs: Vec<u32> },
    #[error("rejected by gateway: {0}")]
    Rejected(String),
    #[error("peer dead: nothing received for {missed} heartbeat intervals ({silent_ms} ms)")]
    PeerDead { missed: u32, silent_ms: u64 },
    #[error("handshake not completed within {0} ms")]
    HandshakeTimeout(u64),
    #[error("protocol violation: {0}")]
    Protocol(String),
    #[error("bad frame: {0}")]
    Frame(#[from] FrameError),
    #[error("connection lost: {0}")]
    Transport(String),
    /// Closed by this side (shutdown, revocation, ...).
    #[error("closed locally: {0}")]
    Local(String),
}

/// The shell could not apply a config; the old one stays in force. The text
/// is the reason the `Nack` carries, so it should say what failed (for
/// example `netlink: EPERM`); the shell builds it from its own error type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ApplyRefused(pub String);

impl ApplyRefused {
    /// The refusal whose reason is `err`'s `Display`.
    pub fn new(err: impl fmt::Display) -> Self {
        ApplyRefused(err.to_string())
    }
}

/// Heartbeat bookkeeping shared by both sides: a heartbeat goes out every
/// `interval` (fixed cadence); any received message proves liveness.
#[derive(Debug, Clone)]
struct Liveness {
    interval: Duration,
    last_rx: Instant,
    next_hb: Instant,
    seq: u64,
}

enum Beat {
    Idle,
    Send(u64),
    Dead(CloseReason),
}

impl Liveness {
    fn new(interval: Duration, now: Instant) -> Self {
        Liveness {
            interval,
            last_rx: now,
            next_hb: now + interval,
            seq: 0,
        }
    }

    fn dead_at(&self) -> Instant {
        self.last_rx + self.interval * MISSED_HEARTBEATS
    }

    fn next_timeout(&self) -> Instant {
        self.dead_at().min(self.next_hb)
    }

    fn tick(&mut self, now: Instant) -> Beat {
        if now >= self.dead_at() {
            let silent = now.saturating_duration_since(self.last_rx);
            return Beat::Dead(CloseReason::PeerDead {
                missed: MISSED_HEARTBEATS,
                silent_ms: u64::try_from(silent.as_millis()).unwrap_or(u64::MAX),
            });
        }
        if now >= self.next_hb {
            self.seq += 1;
            self.next_hb += self.interval;
            if self.next_hb <= now {
                // The shell ticked late; do not burst to catch up.
                self.next_hb = now + self.interval;
            }
            return Beat::Send(self.seq);
        }
        Beat::Idle
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

// ---------------------------------------------------------------------------
// Agent side
// ---------------------------------------------------------------------------

/// Static settings of an [`AgentSession`].
#[derive(Debug, Clone)]
pub struct AgentSessionConfig {
    /// The gateway as dialled, e.g. `nsx-gw.vmware.local:5555` (for status).
    pub peer: String,
    /// Protocol versions offered in `Hello`.
    pub versions: Vec<u32>,
    /// This agent's software version.
    pub agent_version: String,
    /// Inventory sent in `Hello`.
    pub instance: InstanceMeta,
    /// Time allowed from `on_connected` to `Welcome`.
    pub handshake_timeout: Duration,
}

impl AgentSessionConfig {
    /// Settings with the default versions and handshake timeout.
    pub fn new(
        peer: impl Into<String>,
        agent_version: impl Into<String>,
        instance: InstanceMeta,
    ) -> Self {
        AgentSessionConfig {
            peer: peer.into(),
            versions: SUPPORTED_VERSIONS.to_vec(),
            agent_version: agent_version.into(),
            instance,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }
}

/// Where the agent's connection to the gateway stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AgentState {
    /// Dialling (or waiting to redial after a backoff).
    Connecting,
    /// Transport up, `Hello` sent, waiting for `Welcome`.
    HelloSent,
    /// `Welcome` received: config and heartbeats flow.
    Established,
    /// The last connection ended; see `last_error`.
    Closed,
}

impl AgentState {
    /// The name nsxcli prints (`CONNECTING`, `HELLO_SENT`, `ESTABLISHED`, `CLOSED`).
    pub fn as_str(self) -> &'static str {
        match self {
            AgentState::Connecting => "CONNECTING",
            AgentState::HelloSent => "HELLO_SENT",
            AgentState::Established => "ESTABLISHED",
            AgentState::Closed => "CLOSED",
        }
    }
}

impl fmt::Display for AgentState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What `nsxcli get gateway connection status` shows. `since` is the
/// monotonic time of the last state change (for `ESTABLISHED`: the
/// connection time); the shell converts it to wall-clock for display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionStatus {
    pub state: AgentState,
    /// `host:port` of the gateway.
    pub peer: String,
    pub since: Instant,
    /// Why the last connection ended or the last apply failed; kept across
    /// reconnects so an operator can see why the agent was down.
    pub last_error: Option<String>,
    /// Version of the config the datapath runs.
    pub applied_version: Option<u64>,
    /// Negotiated protocol version of the current session.
    pub protocol_version: Option<u32>,
}

/// What the agent shell must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentOut {
    /// Encode and send.
    Send(AgentMsg),
    /// Validate-and-swap this config into the datapath (it already passed
    /// [`validate`]; `config.version` is set to `version`), persist it,
    /// then call [`AgentSession::applied`]. `None` = micro-segmentation
    /// mode (no overlay port).
    Apply {
        version: u64,
        config: Option<InstanceConfig>,
    },
    /// `Welcome` received: reset the reconnect backoff, log.
    Established {
        protocol_version: u32,
        tep_id: u32,
        heartbeat_ms: u64,
    },
    /// Drop the connection and log `reason`; then back off and redial.
    Close { reason: CloseReason },
}

/// The agent's end of the control channel. One per agent process; it
/// outlives connections and carries the applied config version between them.
///
/// Shell loop: [`on_connecting`](Self::on_connecting) when a dial starts,
/// [`on_connected`](Self::on_connected) when TLS is up, then
/// [`on_message`](Self::on_message) per decoded frame,
/// [`on_frame_error`](Self::on_frame_error) on a decode error,
/// [`on_disconnected`](Self::on_disconnected) on EOF/IO error,
/// [`on_tick`](Self::on_tick) at [`next_timeout`](Self::next_timeout), and
/// [`applied`](Self::applied) after each `Apply`.
#[derive(Debug)]
pub struct AgentSession {
    cfg: AgentSessionConfig,
    state: AgentState,
    since: Instant,
    last_error: Option<String>,
    applied: Option<u64>,
    /// `Apply` emitted, `applied()` not yet called.
    applying: Option<u64>,
    /// Config messages received while an apply was in progress.
    queue: VecDeque<GatewayMsg>,
    hello_deadline: Option<Instant>,
    live: Option<Liveness>,
    protocol_version: Option<u32>,
}

impl AgentSession {
    /// A session for an agent that runs config `applied_version` (from its
    /// persisted state; `None` if it runs none). Starts in `Connecting`.
    pub fn new(cfg: AgentSessionConfig, applied_version: Option<u64>, now: Instant) -> Self {
        AgentSession {
            cfg,
            state: AgentState::Connecting,
            since: now,
            last_error: None,
            applied: applied_version,
            applying: None,
            queue: VecDeque::new(),
            hello_deadline: None,
            live: None,
            protocol_version: None,
        }
    }

    pub fn state(&self) -> AgentState {
        self.state
    }

    /// Version of the config the datapath runs.
    pub fn applied_version(&self) -> Option<u64> {
        self.applied
    }

    /// Snapshot for nsxcli.
    pub fn status(&self) -> ConnectionStatus {
        ConnectionStatus {
            state: self.state,
            peer: self.cfg.peer.clone(),
            since: self.since,
            last_error: self.last_error.clone(),
            applied_version: self.applied,
            protocol_version: self.protocol_version,
        }
    }

    /// When [`on_tick`](Self::on_tick) must next be called (`None`: no timer).
    pub fn next_timeout(&self) -> Option<Instant> {
        match self.state {
            AgentState::HelloSent => self.hello_deadline,
            AgentState::Established => self.live.as_ref().map(Liveness::next_timeout),
            AgentState::Connecting | AgentState::Closed => None,
        }
    }

    fn is_open(&self) -> bool {
        matches!(self.state, AgentState::HelloSent | AgentState::Established)
    }

    /// A dial attempt starts (after the backoff delay).
    pub fn on_connecting(&mut self, now: Instant) {
        if !self.is_open() {
            self.state = AgentState::Connecting;
            self.since = now;
        }
    }

    /// The dial itself failed (TCP connect, TLS handshake): no session
    /// existed, but an operator needs to see why the agent is not connected.
    /// Records the reason; the state stays `Connecting` (the shell retries).
    pub fn on_dial_failed(&mut self, reason: impl Into<String>, now: Instant) {
        if !self.is_open() {
            self.state = AgentState::Connecting;
            self.since = now;
            self.last_error = Some(reason.into());
        }
    }

    /// The transport (TLS) is up: sends `Hello`.
    pub fn on_connected(&mut self, now: Instant) -> Vec<AgentOut> {
        self.state = AgentState::HelloSent;
        self.since = now;
        self.queue.clear();
        self.live = None;
        self.protocol_version = None;
        self.hello_deadline = Some(now + self.cfg.handshake_timeout);
        vec![AgentOut::Send(AgentMsg::Hello {
            versions: self.cfg.versions.clone(),
            agent_version: self.cfg.agent_version.clone(),
            instance: self.cfg.instance.clone(),
            applied_version: self.applied,
        })]
    }

    /// A decoded message from the gateway.
    pub fn on_message(&mut self, msg: GatewayMsg, now: Instant) -> Vec<AgentOut> {
        if !self.is_open() {
            return Vec::new();
        }
        if let Some(live) = &mut self.live {
            live.last_rx = now;
        }
        match (self.state, msg) {
            (_, GatewayMsg::Reject { reason }) => {
                self.close_with(CloseReason::Rejected(reason), now)
            }
            (
                AgentState::HelloSent,
                GatewayMsg::Welcome {
                    version,
                    instance_id,
                    tep_id,
                    heartbeat_ms,
                },
            ) => self.on_welcome(version, &instance_id, tep_id, heartbeat_ms, now),
            (AgentState::HelloSent, other) => self.close_with(
                CloseReason::Protocol(format!("expected Welcome, got {}", other.type_name())),
                now,
            ),
            (_, GatewayMsg::Welcome { .. }) => self.close_with(
                CloseReason::Protocol("Welcome on an established session".into()),
                now,
            ),
            (_, GatewayMsg::Heartbeat { .. }) => Vec::new(),
            (_, m @ (GatewayMsg::Snapshot { .. } | GatewayMsg::Update { .. })) => {
                if self.applying.is_some() {
                    if self.queue.len() >= MAX_QUEUED_CONFIGS {
                        return self.close_with(
                            CloseReason::Protocol(format!(
                                "more than {MAX_QUEUED_CONFIGS} config messages while an apply is in progress"
                            )),
                            now,
                        );
                    }
                    self.queue.push_back(m);
                    Vec::new()
                } else {
                    self.on_config(m)
                }
            }
        }
    }

    fn on_welcome(
        &mut self,
        version: u32,
        instance_id: &str,
        tep_id: u32,
        heartbeat_ms: u64,
        now: Instant,
    ) -> Vec<AgentOut> {
        if !self.cfg.versions.contains(&version) {
            return self.close_with(
                CloseReason::Protocol(format!(
                    "gateway chose protocol version {version}, we offered {:?}",
                    self.cfg.versions
                )),
                now,
            );
        }
        if instance_id != self.cfg.instance.instance_id {
            return self.close_with(
                CloseReason::Protocol(format!(
                    "gateway identifies us as {instance_id:?}, we are {:?}",
                    self.cfg.instance.instance_id
                )),
                now,
            );
        }
        if !(MIN_HEARTBEAT_MS..=MAX_HEARTBEAT_MS).contains(&heartbeat_ms) {
            return self.close_with(
                CloseReason::Protocol(format!(
                    "heartbeat_ms {heartbeat_ms} outside {MIN_HEARTBEAT_MS}..={MAX_HEARTBEAT_MS}"
                )),
                now,
            );
        }
        self.state = AgentState::Established;
        self.since = now;
        self.hello_deadline = None;
        self.protocol_version = Some(version);
        self.live = Some(Liveness::new(Duration::from_millis(heartbeat_ms), now));
        vec![AgentOut::Established {
            protocol_version: version,
            tep_id,
            heartbeat_ms,
        }]
    }

    /// Snapshot or Update, with no apply in progress.
    fn on_config(&mut self, msg: GatewayMsg) -> Vec<AgentOut> {
        match msg {
            GatewayMsg::Snapshot { version, config } => {
                if self.applied == Some(version) {
                    // Already running it (e.g. resync after reconnect).
                    return vec![AgentOut::Send(AgentMsg::Ack { version })];
                }
                // Newer, or older (the gateway is authoritative, e.g. its
                // store was restored from a backup): apply.
                self.start_apply(version, config)
            }
            GatewayMsg::Update {
                from_version,
                version,
                config,
            } => {
                if self.applied != Some(from_version) || version <= from_version {
                    let have = match self.applied {
                        Some(v) => v.to_string(),
                        None => "none".into(),
                    };
                    return vec![AgentOut::Send(AgentMsg::Nack {
                        version,
                        reason: format!(
                            "update {from_version}->{version} does not apply to running version {have}; resync requested"
                        ),
                        resync: true,
                    })];
                }
                self.start_apply(version, config)
            }
            // on_message only routes Snapshot/Update here.
            _ => Vec::new(),
        }
    }

    fn start_apply(&mut self, version: u64, config: Option<InstanceConfig>) -> Vec<AgentOut> {
        let config = config.map(|mut c| {
            c.version = version;
            c
        });
        if let Some(c) = &config
            && let Err(problems) = validate(c)
        {
            let reason = format!("version {version} rejected: {problems}");
            self.last_error = Some(reason.clone());
            return vec![AgentOut::Send(AgentMsg::Nack {
                version,
                reason,
                resync: false,
            })];
        }
        self.applying = Some(version);
        vec![AgentOut::Apply { version, config }]
    }

    /// The shell finished an `Apply`: `Ok` once the datapath runs it (and it
    /// is persisted), `Err(refused)` if it was refused (the old config stays).
    /// The shell may take its time: heartbeats, ticks and further messages
    /// keep flowing meanwhile (configs queue, at most [`MAX_QUEUED_CONFIGS`]).
    /// Sends Ack/Nack if the session is still up; the applied version is
    /// recorded even if the connection dropped meanwhile. A call for a
    /// version that is not being applied is ignored (and noted in
    /// `last_error`).
    pub fn applied(&mut self, version: u64, result: Result<(), ApplyRefused>) -> Vec<AgentOut> {
        if self.applying != Some(version) {
            self.last_error = Some(format!(
                "internal: applied({version}) reported while {:?} was being applied",
                self.applying
            ));
            return Vec::new();
        }
        self.applying = None;
        let established = self.state == AgentState::Established;
        let mut out = Vec::new();
        match result {
            Ok(()) => {
                self.applied = Some(version);
                if established {
                    out.push(AgentOut::Send(AgentMsg::Ack { version }));
                }
            }
            Err(ApplyRefused(reason)) => {
                self.last_error = Some(format!("apply of version {version} failed: {reason}"));
                if established {
                    out.push(AgentOut::Send(AgentMsg::Nack {
                        version,
                        reason,
                        resync: false,
                    }));
                }
            }
        }
        while self.applying.is_none() {
            let Some(m) = self.queue.pop_front() else {
                break;
            };
            out.extend(self.on_config(m));
        }
        out
    }

    /// Timer: handshake timeout, heartbeats, dead-peer detection.
    pub fn on_tick(&mut self, now: Instant) -> Vec<AgentOut> {
        match self.state {
            AgentState::HelloSent => match self.hello_deadline {
                Some(d) if now >= d => {
                    let ms = millis(self.cfg.handshake_timeout);
                    self.close_with(CloseReason::HandshakeTimeout(ms), now)
                }
                _ => Vec::new(),
            },
            AgentState::Established => {
                let Some(live) = &mut self.live else {
                    return Vec::new();
                };
                match live.tick(now) {
                    Beat::Idle => Vec::new(),
                    Beat::Send(seq) => vec![AgentOut::Send(AgentMsg::Heartbeat { seq })],
                    Beat::Dead(r) => self.close_with(r, now),
                }
            }
            AgentState::Connecting | AgentState::Closed => Vec::new(),
        }
    }

    /// Periodic status report (sent only on an established session).
    pub fn status_report(
        &self,
        counters: std::collections::BTreeMap<String, u64>,
    ) -> Vec<AgentOut> {
        if self.state != AgentState::Established {
            return Vec::new();
        }
        vec![AgentOut::Send(AgentMsg::Status(StatusReport {
            applied_version: self.applied,
            counters,
            last_error: self.last_error.clone(),
        }))]
    }

    /// The edge's health checkers' verdicts: sent only on an established
    /// session whose protocol version knows the message
    /// ([`crate::proto::HEALTH_VERSION`]); `None` when it cannot be sent
    /// (the caller sends a full report when the next session starts).
    pub fn health_report(&self, report: crate::lb::HealthReport) -> Option<AgentOut> {
        (self.state == AgentState::Established
            && self
                .protocol_version
                .is_some_and(|v| v >= crate::proto::HEALTH_VERSION))
        .then_some(AgentOut::Send(AgentMsg::Health(report)))
    }

    /// The decoder failed: the connection must go.
    pub fn on_frame_error(&mut self, err: FrameError, now: Instant) -> Vec<AgentOut> {
        self.close_if_open(CloseReason::Frame(err), now)
    }

    /// The transport failed or the gateway closed it (`reason` for the log).
    pub fn on_disconnected(&mut self, reason: impl Into<String>, now: Instant) -> Vec<AgentOut> {
        self.close_if_open(CloseReason::Transport(reason.into()), now)
    }

    /// The shell ends the session (shutdown).
    pub fn close(&mut self, reason: impl Into<String>, now: Instant) -> Vec<AgentOut> {
        self.close_if_open(CloseReason::Local(reason.into()), now)
    }

    fn close_if_open(&mut self, reason: CloseReason, now: Instant) -> Vec<AgentOut> {
        if self.is_open() {
            self.close_with(reason, now)
        } else {
            Vec::new()
        }
    }

    fn close_with(&mut self, reason: CloseReason, now: Instant) -> Vec<AgentOut> {
        self.state = AgentState::Closed;
        self.since = now;
        self.last_error = Some(reason.to_string());
        self.live = None;
        self.hello_deadline = None;
        self.queue.clear();
        self.protocol_version = None;
        vec![AgentOut::Close { reason }]
    }
}

// ---------------------------------------------------------------------------
// Reconnect backoff
// ---------------------------------------------------------------------------

/// How a [`Backoff`] spreads delays below its ceiling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jitter {
    /// Uniform in `0..=ceiling`.
    Full,
    /// Uniform in `ceiling/2..=ceiling`: never hammers, still spreads.
    Equal,
}

/// Capped exponential reconnect delay with jitter. The ceiling doubles per
/// attempt from `base` up to `cap`; randomness and time are injected per
/// call so tests are deterministic. When a connection ends, tell it
/// [`session_ended`](Self::session_ended): only a session that stayed
/// established for [`healthy_after`](Self::healthy_after) starts the delay
/// again from `base`. Reaching `Established` alone proves nothing: a gateway
/// that accepts and then cannot deliver (a config over the frame limit) or
/// drops the session at once would otherwise be redialled twice a second.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    jitter: Jitter,
    attempt: u32,
    healthy_after: Duration,
}

impl Default for Backoff {
    /// 500 ms base, 30 s cap, equal jitter.
    fn default() -> Self {
        Backoff::new(Self::DEFAULT_BASE, Self::DEFAULT_CAP, Jitter::Equal)
    }
}

impl Backoff {
    pub const DEFAULT_BASE: Duration = Duration::from_millis(500);
    pub const DEFAULT_CAP: Duration = Duration::from_secs(30);
    /// How long a session must stay established to count as healthy.
    pub const DEFAULT_HEALTHY_AFTER: Duration = Duration::from_secs(30);

    /// A backoff with [`DEFAULT_HEALTHY_AFTER`](Self::DEFAULT_HEALTHY_AFTER).
    pub fn new(base: Duration, cap: Duration, jitter: Jitter) -> Self {
        Backoff {
            base,
            cap,
            jitter,
            attempt: 0,
            healthy_after: Self::DEFAULT_HEALTHY_AFTER,
        }
    }

    /// The same backoff with another healthy-session threshold.
    pub fn with_healthy_after(mut self, healthy_after: Duration) -> Self {
        self.healthy_after = healthy_after;
        self
    }

    /// How long a session must stay established before the delay starts
    /// again from `base`.
    pub fn healthy_after(&self) -> Duration {
        self.healthy_after
    }

    /// Failed attempts since the last reset.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The un-jittered delay for the next attempt: `min(cap, base * 2^attempt)`.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32 << self.attempt.min(31);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// Delay before the next dial; `rand` is a uniformly random `u64`.
    pub fn next_delay(&mut self, rand: u64) -> Duration {
        let ceil = millis(self.ceiling());
        self.attempt = self.attempt.saturating_add(1);
        let ms = match self.jitter {
            Jitter::Full => rand % (ceil + 1),
            Jitter::Equal => {
                let half = ceil / 2;
                half + rand % (ceil - half + 1)
            }
        };
        Duration::from_millis(ms)
    }

    /// A connection ended at `now`. `established_at` is when its session
    /// reached `Established` (`None`: the dial or the handshake failed).
    /// Only a session that stayed established for at least
    /// [`healthy_after`](Self::healthy_after) resets the delay; anything
    /// shorter counts as one more failed attempt.
    pub fn session_ended(&mut self, established_at: Option<Instant>, now: Instant) {
        if established_at.is_some_and(|t| now.saturating_duration_since(t) >= self.healthy_after) {
            self.reset();
        }
    }

    /// Start again from `base`. A shell calls
    /// [`session_ended`](Self::session_ended), which decides whether to;
    /// calling this when a session reaches `Established` brings back the
    /// redial storm this type exists to prevent.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// A tiny seedable PRNG (SplitMix64) for shells that have no RNG crate;
/// seed it from something per-process (pid, boot time) so agents started
/// together do not reconnect in lockstep.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

// ---------------------------------------------------------------------------
// Gateway side
// ---------------------------------------------------------------------------

/// Static settings of a [`GatewaySession`].
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Protocol versions the gateway speaks.
    pub versions: Vec<u32>,
    /// Heartbeat interval announced in `Welcome`.
    pub heartbeat_ms: u64,
    /// Time allowed from accept to `Established` (Hello + shell's accept).
    pub handshake_timeout: Duration,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            versions: SUPPORTED_VERSIONS.to_vec(),
            heartbeat_ms: DEFAULT_HEARTBEAT_MS,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }
}

/// Where one gateway-side connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum GatewayState {
    AwaitingHello,
    /// Hello accepted; waiting for the shell's [`GatewaySession::accept`].
    HelloReceived,
    Established,
    Closed,
}

/// What the gateway shell must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GatewayOut {
    /// Encode and send.
    Send(GatewayMsg),
    /// A valid Hello: update inventory from `instance` (tags drive
    /// placement), then call [`GatewaySession::accept`] with the instance's
    /// desired state (or [`GatewaySession::refuse`]).
    Hello {
        instance: InstanceMeta,
        agent_version: String,
        applied_version: Option<u64>,
        protocol_version: u32,
    },
    /// The agent runs `version`.
    Acked { version: u64 },
    /// The agent refused `version` and keeps its previous config.
    Nacked {
        version: u64,
        reason: String,
        resync: bool,
    },
    /// Status from the agent.
    Status(StatusReport),
    /// Health verdicts from the agent (the gateway checks that it is the
    /// edge).
    Health(crate::lb::HealthReport),
    /// Drop the connection (after sending what precedes) and log `reason`.
    Close { reason: CloseReason },
}

/// The gateway's end of one control connection. `instance_id` is the
/// identity taken from the verified client certificate; the Hello must
/// agree with it.
#[derive(Debug)]
pub struct GatewaySession {
    cfg: GatewayConfig,
    instance_id: String,
    state: GatewayState,
    since: Instant,
    hello_deadline: Instant,
    live: Option<Liveness>,
    protocol_version: Option<u32>,
    /// What the agent runs, as far as we know (Hello, then acks).
    agent_applied: Option<u64>,
    acked: Option<u64>,
    nacked: Option<(u64, String)>,
    in_flight: Option<u64>,
    /// Newest desired state known for this instance.
    latest: Option<(u64, Option<InstanceConfig>)>,
    /// `latest` has been sent (or deliberately not resent after a Nack).
    latest_sent: bool,
    /// Next config goes out as a Snapshot (session start, resync).
    force_snapshot: bool,
}

impl GatewaySession {
    /// A session for a connection whose client certificate names `instance_id`.
    pub fn new(cfg: GatewayConfig, instance_id: impl Into<String>, now: Instant) -> Self {
        GatewaySession {
            hello_deadline: now + cfg.handshake_timeout,
            cfg,
            instance_id: instance_id.into(),
            state: GatewayState::AwaitingHello,
            since: now,
            live: None,
            protocol_version: None,
            agent_applied: None,
            acked: None,
            nacked: None,
            in_flight: None,
            latest: None,
            latest_sent: false,
            force_snapshot: true,
        }
    }

    pub fn state(&self) -> GatewayState {
        self.state
    }

    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// Time of the last state change.
    pub fn since(&self) -> Instant {
        self.since
    }

    pub fn protocol_version(&self) -> Option<u32> {
        self.protocol_version
    }

    /// Last version the agent acked on this connection.
    pub fn acked_version(&self) -> Option<u64> {
        self.acked
    }

    /// Last refused version and why (cleared by a later Ack).
    pub fn nacked(&self) -> Option<(u64, &str)> {
        self.nacked.as_ref().map(|(v, r)| (*v, r.as_str()))
    }

    /// The version sent and not yet acked or nacked.
    pub fn in_flight(&self) -> Option<u64> {
        self.in_flight
    }

    /// What the agent runs as far as the gateway knows (from Hello, then acks).
    pub fn agent_applied_version(&self) -> Option<u64> {
        self.agent_applied
    }

    /// When [`on_tick`](Self::on_tick) must next be called.
    pub fn next_timeout(&self) -> Option<Instant> {
        match self.state {
            GatewayState::AwaitingHello | GatewayState::HelloReceived => Some(self.hello_deadline),
            GatewayState::Established => self.live.as_ref().map(Liveness::next_timeout),
            GatewayState::Closed => None,
        }
    }

    /// A decoded message from the agent.
    pub fn on_message(&mut self, msg: AgentMsg, now: Instant) -> Vec<GatewayOut> {
        if let Some(live) = &mut self.live {
            live.last_rx = now;
        }
        match (self.state, msg) {
            (GatewayState::Closed, _) => Vec::new(),
            (
                GatewayState::AwaitingHello,
                AgentMsg::Hello {
                    versions,
                    agent_version,
                    instance,
                    applied_version,
                },
            ) => self.on_hello(versions, agent_version, instance, applied_version, now),
            (GatewayState::AwaitingHello, other) => self.reject(
                CloseReason::Protocol(format!("expected Hello, got {}", other.type_name())),
                now,
            ),
            (GatewayState::HelloReceived, other) => self.reject(
                CloseReason::Protocol(format!("{} before Welcome", other.type_name())),
                now,
            ),
            (GatewayState::Established, AgentMsg::Hello { .. }) => self.reject(
                CloseReason::Protocol("Hello on an established session".into()),
                now,
            ),
            (GatewayState::Established, AgentMsg::Heartbeat { .. }) => Vec::new(),
            (GatewayState::Established, AgentMsg::Status(r)) => vec![GatewayOut::Status(r)],
            (GatewayState::Established, AgentMsg::Health(r)) => {
                if self
                    .protocol_version
                    .is_none_or(|v| v < crate::proto::HEALTH_VERSION)
                {
                    return self.reject(
                        CloseReason::Protocol("Health needs protocol version 2 or later".into()),
                        now,
                    );
                }
                if r.verdicts.len() > crate::lb::HealthReport::MAX_VERDICTS {
                    return self.reject(
                        CloseReason::Protocol(format!(
                            "Health with {} verdicts (at most {})",
                            r.verdicts.len(),
                            crate::lb::HealthReport::MAX_VERDICTS
                        )),
                        now,
                    );
                }
                vec![GatewayOut::Health(r)]
            }
            (GatewayState::Established, AgentMsg::Ack { version }) => {
                if self.in_flight != Some(version) {
                    return self.reject(self.unsolicited("Ack", version), now);
                }
                self.in_flight = None;
                self.acked = Some(version);
                self.agent_applied = Some(version);
                self.nacked = None;
                // Once acked, the config is never sent again on this session
                // (a resync concerns an in-flight version; a newer push
                // replaces it): release it, so a gateway with many agents
                // does not hold one full config per session.
                if let Some((v, config)) = &mut self.latest
                    && *v == version
                    && self.latest_sent
                {
                    *config = None;
                }
                let mut out = vec![GatewayOut::Acked { version }];
                out.extend(self.pump());
                out
            }
            (
                GatewayState::Established,
                AgentMsg::Nack {
                    version,
                    reason,
                    resync,
                },
            ) => {
                if self.in_flight != Some(version) {
                    return self.reject(self.unsolicited("Nack", version), now);
                }
                self.in_flight = None;
                self.nacked = Some((version, reason.clone()));
                if resync {
                    self.force_snapshot = true;
                    self.latest_sent = false;
                }
                let mut out = vec![GatewayOut::Nacked {
                    version,
                    reason,
                    resync,
                }];
                out.extend(self.pump());
                out
            }
        }
    }

    fn unsolicited(&self, what: &str, version: u64) -> CloseReason {
        let expected = match self.in_flight {
            Some(v) => format!("version {v} is in flight"),
            None => "nothing is in flight".into(),
        };
        CloseReason::Protocol(format!("{what} for version {version}, but {expected}"))
    }

    fn on_hello(
        &mut self,
        versions: Vec<u32>,
        agent_version: String,
        instance: InstanceMeta,
        applied_version: Option<u64>,
        now: Instant,
    ) -> Vec<GatewayOut> {
        if instance.instance_id != self.instance_id {
            let r = format!(
                "Hello names instance {:?} but the certificate is for {:?}",
                instance.instance_id, self.instance_id
            );
            return self.reject(CloseReason::Protocol(r), now);
        }
        let Some(v) = negotiate(&self.cfg.versions, &versions) else {
            let r = CloseReason::NoCommonVersion {
                ours: self.cfg.versions.clone(),
                theirs: versions,
            };
            return self.reject(r, now);
        };
        self.protocol_version = Some(v);
        self.agent_applied = applied_version;
        self.state = GatewayState::HelloReceived;
        self.since = now;
        vec![GatewayOut::Hello {
            instance,
            agent_version,
            applied_version,
            protocol_version: v,
        }]
    }

    /// Completes the handshake: `Welcome`, then a `Snapshot` of the
    /// instance's desired state at `version` (`config: None` =
    /// micro-segmentation). Ignored unless a Hello is waiting.
    pub fn accept(
        &mut self,
        tep_id: u32,
        version: u64,
        config: Option<InstanceConfig>,
        now: Instant,
    ) -> Vec<GatewayOut> {
        let (GatewayState::HelloReceived, Some(pv)) = (self.state, self.protocol_version) else {
            return Vec::new();
        };
        self.state = GatewayState::Established;
        self.since = now;
        self.live = Some(Liveness::new(
            Duration::from_millis(self.cfg.heartbeat_ms),
            now,
        ));
        self.store_latest(version, config);
        self.force_snapshot = true;
        self.latest_sent = false;
        let mut out = vec![GatewayOut::Send(GatewayMsg::Welcome {
            version: pv,
            instance_id: self.instance_id.clone(),
            tep_id,
            heartbeat_ms: self.cfg.heartbeat_ms,
        })];
        out.extend(self.pump());
        out
    }

    /// The frame `config` would need at worst: it is encoded, with
    /// [`crate::framing::encode`] (the codec and [`crate::proto::MAX_FRAME`]
    /// the shell sends with), in the larger of the two messages a session
    /// carries a config in, an `Update`, with every version at its widest
    /// (`u64::MAX`). `Ok(len)`: this config can be delivered at any version.
    /// `Err`: what the shell would hit sending it (`TooLarge` with the
    /// size). The config is handed back as it came (no copy is made).
    pub fn worst_case_frame(
        config: Option<InstanceConfig>,
    ) -> (Option<InstanceConfig>, Result<usize, FrameError>) {
        let version = config.as_ref().map(|c| c.version);
        let mut msg = GatewayMsg::Update {
            from_version: u64::MAX,
            version: u64::MAX,
            config: config.map(|c| InstanceConfig {
                version: u64::MAX,
                ..c
            }),
        };
        let len = crate::framing::encode(&msg).map(|frame| frame.len());
        let config = match &mut msg {
            GatewayMsg::Update { config, .. } => config.take(),
            _ => None,
        };
        let config = config
            .zip(version)
            .map(|(c, version)| InstanceConfig { version, ..c });
        (config, len)
    }

    /// Refuses the Hello (unknown or revoked instance, ...): Reject + Close.
    pub fn refuse(&mut self, reason: impl Into<String>, now: Instant) -> Vec<GatewayOut> {
        if self.state == GatewayState::Closed {
            return Vec::new();
        }
        self.reject(CloseReason::Local(reason.into()), now)
    }

    /// The instance's desired state changed to `version`. Sent at once as
    /// an `Update` if nothing is in flight, else coalesced: only the newest
    /// pending version is sent after the Ack/Nack. Versions not newer than
    /// the newest known one are ignored.
    pub fn push(&mut self, version: u64, config: Option<InstanceConfig>) -> Vec<GatewayOut> {
        if self.state == GatewayState::Closed || !self.store_latest(version, config) {
            return Vec::new();
        }
        self.latest_sent = false;
        self.pump()
    }

    /// Keeps `(version, config)` if newer than what we have.
    fn store_latest(&mut self, version: u64, config: Option<InstanceConfig>) -> bool {
        if matches!(&self.latest, Some((v, _)) if *v >= version) {
            return false;
        }
        self.latest = Some((version, config));
        true
    }

    /// Sends the newest desired state if nothing is in flight.
    fn pump(&mut self) -> Vec<GatewayOut> {
        if self.state != GatewayState::Established || self.in_flight.is_some() || self.latest_sent {
            return Vec::new();
        }
        let Some((version, config)) = self.latest.clone() else {
            return Vec::new();
        };
        let msg = match self.agent_applied {
            Some(from_version) if !self.force_snapshot && from_version < version => {
                GatewayMsg::Update {
                    from_version,
                    version,
                    config,
                }
            }
            _ => GatewayMsg::Snapshot { version, config },
        };
        self.force_snapshot = false;
        self.latest_sent = true;
        self.in_flight = Some(version);
        vec![GatewayOut::Send(msg)]
    }

    /// Timer: handshake timeout, heartbeats, dead-peer detection.
    pub fn on_tick(&mut self, now: Instant) -> Vec<GatewayOut> {
        match self.state {
            GatewayState::AwaitingHello | GatewayState::HelloReceived => {
                if now >= self.hello_deadline {
                    let ms = millis(self.cfg.handshake_timeout);
                    self.reject(CloseReason::HandshakeTimeout(ms), now)
                } else {
                    Vec::new()
                }
            }
            GatewayState::Established => {
                let Some(live) = &mut self.live else {
                    return Vec::new();
                };
                match live.tick(now) {
                    Beat::Idle => Vec::new(),
                    Beat::Send(seq) => vec![GatewayOut::Send(GatewayMsg::Heartbeat { seq })],
                    // No Reject: nobody is listening.
                    Beat::Dead(r) => self.close_with(r, now),
                }
            }
            GatewayState::Closed => Vec::new(),
        }
    }

    /// The decoder failed: Reject (best effort, tells the agent why) + Close.
    pub fn on_frame_error(&mut self, err: FrameError, now: Instant) -> Vec<GatewayOut> {
        if self.state == GatewayState::Closed {
            return Vec::new();
        }
        self.reject(CloseReason::Frame(err), now)
    }

    /// The transport failed or the agent closed it.
    pub fn on_disconnected(&mut self, reason: impl Into<String>, now: Instant) -> Vec<GatewayOut> {
        if self.state == GatewayState::Closed {
            return Vec::new();
        }
        self.close_with(CloseReason::Transport(reason.into()), now)
    }

    /// Ends the session from the gateway (revocation, shutdown): Reject + Close.
    pub fn close(&mut self, reason: impl Into<String>, now: Instant) -> Vec<GatewayOut> {
        if self.state == GatewayState::Closed {
            return Vec::new();
        }
        self.reject(CloseReason::Local(reason.into()), now)
    }

    fn reject(&mut self, reason: CloseReason, now: Instant) -> Vec<GatewayOut> {
        // A locally chosen reason goes out verbatim ("instance revoked").
        let text = match &reason {
            CloseReason::Local(s) => s.clone(),
            r => r.to_string(),
        };
        let mut out = vec![GatewayOut::Send(GatewayMsg::Reject { reason: text })];
        out.extend(self.close_with(reason, now));
        out
    }

    fn close_with(&mut self, reason: CloseReason, now: Instant) -> Vec<GatewayOut> {
        self.state = GatewayState::Closed;
        self.since = now;
        self.live = None;
        self.in_flight = None;
        vec![GatewayOut::Close { reason }]
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
