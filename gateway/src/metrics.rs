//! The gateway's Prometheus endpoint (`nsx-gateway serve --listen-metrics`,
//! default `127.0.0.1:9465`, `off` to disable): `GET /metrics` in the
//! OpenMetrics text format, rendered by a [`prometheus_client`]
//! [`Collector`] built per scrape.
//!
//! Two sources:
//!
//! * the store, read at scrape time on the blocking pool: the inventory
//!   (instances by mode and by recorded session state), the global and
//!   desired-state versions, and each instance's desired config version
//!   (from a [`ConfigSnapshot`] rebuilt only when the store version moved,
//!   the same computation the control channel uses) against the version it
//!   acked;
//! * the load balancers' health view, kept in memory by this process
//!   ([`crate::health`]), for the real servers the snapshot's state checks;
//! * each agent's latest `Status` report, kept in memory by this process
//!   ([`crate::agent_status`]): the config version it runs, whether it
//!   reports an error, and how old the report is;
//! * [`Counters`], event counters kept by this process: enrollment
//!   decisions (counted where `POST /api/v1/enroll` is answered), installer
//!   requests (where `/factory_default/...` is answered, [`crate::install`]),
//!   requests the HTTP layer refuses itself on each listener (where
//!   [`bounded_http::serve_one`] answers them),
//!   failed TLS handshakes on the enrollment listener ([`crate::server`]) and
//!   on the control channel, connections closed over a connection limit and
//!   failed `accept` calls on every listener ([`crate::conn_limit`]), and the control channel as seen through the
//!   [`ControlStore`] seam ([`CountingControl`]): certificate checks, Hellos,
//!   acks, nacks, status reports, sessions established and closed, the live
//!   sessions, TLS handshake failures and frame bytes
//!   ([`ControlStore::transport`]).
//!
//! | family | type | labels |
//! |---|---|---|
//! | `nsx_gateway_build_info` | info | `version` |
//! | `nsx_gateway_uptime_seconds` | gauge | |
//! | `nsx_gateway_store_up` | gauge (0/1) | (0: the store could not be read; the store families are then absent) |
//! | `nsx_gateway_instances` | gauge | `mode` = `overlay` \| `micro-segmentation` \| `pending` \| `edge` \| `revoked` |
//! | `nsx_gateway_instance_sessions` | gauge | `state` = `ESTABLISHED` \| `DISCONNECTED` \| `never` (non-revoked instances, as recorded in the store) |
//! | `nsx_gateway_sessions_established` | gauge | (live control sessions of this process) |
//! | `nsx_gateway_store_version`, `nsx_gateway_desired_state_version` | gauge | |
//! | `nsx_gateway_instance_desired_config_version`, `nsx_gateway_instance_acked_config_version` | gauge | `instance_id` (non-revoked; acked once the agent acked one) |
//! | `nsx_gateway_instances_config_behind` | gauge | (non-revoked instances whose acked version is not the desired one) |
//! | `nsx_gateway_instance_applied_config_version`, `nsx_gateway_instance_status_age_seconds`, `nsx_gateway_instance_agent_error` | gauge | `instance_id` (non-revoked instances that sent a `Status` since the gateway started: the version the agent says it runs, seconds since its report, 1 if the report carries an error) |
//! | `nsx_gateway_instances_agent_error`, `nsx_gateway_instances_without_status` | gauge | (non-revoked instances whose latest report carries an error; that sent none since the gateway started) |
//! | `nsx_gateway_enrollments_accepted` | counter | |
//! | `nsx_gateway_enrollments_refused` | counter | `reason` (every reason, zeros included) |
//! | `nsx_gateway_control_connections` | counter | `result` = `accepted` \| `refused` (client certificate checks after the TLS handshake) |
//! | `nsx_gateway_control_messages_received` | counter | `type` = `hello` \| `ack` \| `nack` \| `status` \| `health` |
//! | `nsx_gateway_control_sessions_established`, `nsx_gateway_control_sessions_closed` | counter | |
//! | `nsx_gateway_installer_requests` | counter | `file` = a served name ([`install::File`]) \| `other` (the list, unknown paths, wrong methods), `status` = the HTTP status answered (only pairs seen so far) |
//! | `nsx_gateway_http_requests_refused` | counter | `listener` = `enroll` \| `install` \| `admin` \| `metrics`, `reason` = a [`Refusal`] label (`bad_request` 400, `length_required` 411, `body_too_large` 413, `headers_too_large` 431, `timeout` 408); all 20 pairs, zeros included |
//! | `nsx_gateway_tls_handshake_failures` | counter | `listener` = `enroll` \| `control`, `reason` = `timeout` \| `error`; all 4 pairs, zeros included |
//! | `nsx_gateway_control_bytes_received`, `nsx_gateway_control_bytes_sent` | counter | (control-channel frame bytes, length prefix included, TLS overhead not: added once per frame read, once per batch of frames written) |
//! | `nsx_gateway_connections_rejected` | counter | `listener` = `enroll` \| `install` \| `admin` \| `metrics` \| `control`, `reason` = `total` \| `per_peer` (closed right after accept by [`crate::conn_limit`]); all 10 pairs, zeros included |
//! | `nsx_gateway_accept_errors` | counter | `listener` (failed `accept` calls: EMFILE and the like); all 5, zeros included |
//! | `nsx_gateway_lb_real_server_up` | gauge (0/1) | `virtual_server` (`TCP 10.64.1.2:10000`), `real_server` (`192.168.1.100:8089`): every real server with a checker in the desired state; 0 while the edge's checker says down ([`crate::health`]) |
//! | `nsx_gateway_lb_health_transitions` | counter | the same labels: liveness changes since the gateway started |
//! | `nsx_gateway_lb_health_reports_ignored` | counter | health reports from a session that is not the edge's |
//!
//! Cardinality: the `instance_id` families are the only per-instance ones,
//! five series per non-revoked instance at most (desired, acked, applied,
//! status age, error), so 5 000 instances make about 25 000 series. The
//! `lb_` families have two series per checked real server of the desired
//! state (bounded by the config, not by what the edge reports). The
//! counters an agent reports are not exported (the admin API shows them).
//!
//! Not counted: connections the HTTP layer closes without answering (the
//! peer hung up, an I/O error), and the bytes of a control frame that does
//! not decode (it ends the connection; the `Reject` sent is counted).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use control::{InstanceConfig, InstanceMeta};
use metrics_text::{Emit, Labels, by_label, by_labels, label_set};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;
use tokio::sync::watch;

use crate::agent_status::AgentStatus;
use crate::conn_limit::{AcceptEvent, Over};
use crate::control_server::{
    ControlStore, HandshakeFailure, SessionEvent, StoreRefusal, TransportEvent,
};
use crate::enroll::EnrollError;
use crate::gateway::Gateway;
use crate::install;
use crate::store::{ConfigSnapshot, InstanceRecord, StoreError};
use bounded_http::Refusal;

/// The media type of the text [`prometheus_client`] encodes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Instance modes ([`InstanceRecord::mode`]).
pub const MODES: [&str; 5] = [
    "overlay",
    "micro-segmentation",
    "pending",
    "edge",
    "revoked",
];

/// Recorded session states (`sessions.state`; `never` = no session yet).
pub const SESSION_STATES: [&str; 3] = ["ESTABLISHED", "DISCONNECTED", "never"];

/// Why enrollments are refused: one label value per [`EnrollError`] variant.
pub const REFUSAL_REASONS: [&str; 11] = [
    "bad_request",
    "unknown_key",
    "key_retired",
    "bad_signature",
    "stale",
    "replayed",
    "already_enrolled",
    "bad_instance",
    "bad_csr",
    "internal",
    "edge_taken",
];

/// The `reason` label of a refused enrollment (an index into [`REFUSAL_REASONS`]).
fn refusal_index(e: &EnrollError) -> usize {
    match e {
        EnrollError::BadRequest(_) => 0,
        EnrollError::UnknownKey(_) => 1,
        EnrollError::KeyRetired => 2,
        EnrollError::BadSignature => 3,
        EnrollError::Stale(_) => 4,
        EnrollError::Replayed => 5,
        EnrollError::AlreadyEnrolled => 6,
        EnrollError::BadInstance(_) => 7,
        EnrollError::BadCsr(_) => 8,
        EnrollError::Internal(_) => 9,
        EnrollError::EdgeTaken(_) => 10,
    }
}

label_set! {
    /// The listeners whose HTTP layer ([`bounded_http::serve_one`]) may refuse
    /// a request (the `listener` label of `nsx_gateway_http_requests_refused`).
    pub enum HttpListener {
        /// HTTPS enrollment (and the installer tree over TLS), 8443.
        Enroll = "enroll",
        /// The plain-HTTP installer listeners.
        Install = "install",
        /// The loopback admin API.
        Admin = "admin",
        /// This endpoint.
        Metrics = "metrics",
    }
}

label_set! {
    /// The TLS listeners (the `listener` label of
    /// `nsx_gateway_tls_handshake_failures`).
    pub enum TlsListener {
        /// HTTPS enrollment, 8443 (server-auth TLS).
        Enroll = "enroll",
        /// The control channel, 5555 (mutual TLS 1.3).
        Control = "control",
    }
}

label_set! {
    /// Every listener of the gateway (the `listener` label of
    /// `nsx_gateway_connections_rejected` and `nsx_gateway_accept_errors`).
    pub enum Listener {
        /// HTTPS enrollment, 8443.
        Enroll = "enroll",
        /// The plain-HTTP installer listeners (8080), together.
        Install = "install",
        /// The loopback admin API.
        Admin = "admin",
        /// The metrics endpoint.
        Metrics = "metrics",
        /// The control channel, 5555.
        Control = "control",
    }
}

impl From<HttpListener> for Listener {
    fn from(l: HttpListener) -> Listener {
        match l {
            HttpListener::Enroll => Listener::Enroll,
            HttpListener::Install => Listener::Install,
            HttpListener::Admin => Listener::Admin,
            HttpListener::Metrics => Listener::Metrics,
        }
    }
}

/// Event counters of a serving gateway (cumulative since its start).
#[derive(Debug, Default)]
pub struct Counters {
    enroll_accepted: AtomicU64,
    enroll_refused: [AtomicU64; REFUSAL_REASONS.len()],
    control_accepted: AtomicU64,
    control_refused: AtomicU64,
    hellos: AtomicU64,
    acks: AtomicU64,
    nacks: AtomicU64,
    status_reports: AtomicU64,
    health_reports: AtomicU64,
    /// Health reports from a session that is not the edge's.
    health_ignored: AtomicU64,
    established: AtomicU64,
    closed: AtomicU64,
    /// Instances with a live (established) session in this process.
    live: Mutex<HashSet<String>>,
    /// Installer requests by (`file` label, status); bounded: at most
    /// `INSTALLER_FILES` x the few statuses the installer answers.
    installer: Mutex<BTreeMap<(&'static str, u16), u64>>,
    /// Requests refused by the HTTP layer, by [`HttpListener`] x [`Refusal`].
    http_refused: [[AtomicU64; Refusal::ALL.len()]; HttpListener::ALL.len()],
    /// Failed TLS handshakes, by [`TlsListener`] x [`HandshakeFailure`].
    tls_failed: [[AtomicU64; HandshakeFailure::ALL.len()]; TlsListener::ALL.len()],
    control_bytes_received: AtomicU64,
    control_bytes_sent: AtomicU64,
    /// Connections closed right after accept, by [`Listener`] x [`Over`].
    conn_rejected: [[AtomicU64; Over::ALL.len()]; Listener::ALL.len()],
    /// Failed `accept` calls, by [`Listener`].
    accept_errors: [AtomicU64; Listener::ALL.len()],
}

/// The `file` label of an installer request not for one of the served
/// files (the list, an unknown path).
pub const INSTALLER_OTHER: &str = "other";

/// A copy of [`Counters`] for one scrape.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CounterValues {
    pub enroll_accepted: u64,
    pub enroll_refused: [u64; REFUSAL_REASONS.len()],
    pub control_accepted: u64,
    pub control_refused: u64,
    pub hellos: u64,
    pub acks: u64,
    pub nacks: u64,
    pub status_reports: u64,
    pub health_reports: u64,
    pub health_ignored: u64,
    pub established: u64,
    pub closed: u64,
    pub live_sessions: u64,
    /// Installer requests: (`file`, `status`, count), sorted.
    pub installer: Vec<(&'static str, u16, u64)>,
    /// Refused HTTP requests, `[HttpListener::index()][Refusal::index()]`.
    pub http_refused: [[u64; Refusal::ALL.len()]; HttpListener::ALL.len()],
    /// Failed TLS handshakes, `[TlsListener::index()][HandshakeFailure::index()]`.
    pub tls_failed: [[u64; HandshakeFailure::ALL.len()]; TlsListener::ALL.len()],
    pub control_bytes_received: u64,
    pub control_bytes_sent: u64,
    /// Connections over a limit, `[Listener::index()][Over::index()]`.
    pub conn_rejected: [[u64; Over::ALL.len()]; Listener::ALL.len()],
    /// Failed `accept` calls, `[Listener::index()]`.
    pub accept_errors: [u64; Listener::ALL.len()],
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

fn add(c: &AtomicU64, n: usize) {
    c.fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
}

/// The current values of a table of counters.
fn load_table<const R: usize, const C: usize>(t: &[[AtomicU64; C]; R]) -> [[u64; C]; R] {
    let mut out = [[0; C]; R];
    for (row, counters) in out.iter_mut().zip(t) {
        for (v, c) in row.iter_mut().zip(counters) {
            *v = c.load(Ordering::Relaxed);
        }
    }
    out
}

impl Counters {
    /// Counts one enrollment decision.
    pub fn enrollment<T>(&self, outcome: &Result<T, EnrollError>) {
        match outcome {
            Ok(_) => bump(&self.enroll_accepted),
            Err(e) => {
                if let Some(c) = self.enroll_refused.get(refusal_index(e)) {
                    bump(c);
                }
            }
        }
    }

    /// Counts one answered installer request for `file` (`None`: the list
    /// or no file) with `status`.
    pub fn installer_request(&self, file: Option<install::File>, status: u16) {
        let label = file.map_or(INSTALLER_OTHER, install::File::name);
        let mut m = self.installer.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry((label, status)).or_default() += 1;
    }

    /// Counts one request the HTTP layer of `listener` refused.
    pub fn http_refused(&self, listener: HttpListener, why: Refusal) {
        if let Some(c) = self
            .http_refused
            .get(listener.index())
            .and_then(|row| row.get(why.index()))
        {
            bump(c);
        }
    }

    /// Counts one failed TLS handshake on `listener`.
    pub fn tls_handshake_failed(&self, listener: TlsListener, why: HandshakeFailure) {
        if let Some(c) = self
            .tls_failed
            .get(listener.index())
            .and_then(|row| row.get(why.index()))
        {
            bump(c);
        }
    }

    /// Counts a connection-level event of the control channel.
    pub fn control_transport(&self, event: TransportEvent) {
        match event {
            TransportEvent::HandshakeFailed(why) => {
                self.tls_handshake_failed(TlsListener::Control, why);
            }
            TransportEvent::FrameReceived { bytes } => add(&self.control_bytes_received, bytes),
            TransportEvent::FramesSent { bytes } => add(&self.control_bytes_sent, bytes),
            TransportEvent::Accept(e) => self.accept_event(Listener::Control, e),
        }
    }

    /// Counts what the accept step of `listener` reports: a connection
    /// closed over a limit, a failed `accept`.
    pub fn accept_event(&self, listener: Listener, event: AcceptEvent) {
        let c = match event {
            AcceptEvent::Rejected(over) => self
                .conn_rejected
                .get(listener.index())
                .and_then(|row| row.get(over.index())),
            AcceptEvent::Failed => self.accept_errors.get(listener.index()),
        };
        if let Some(c) = c {
            bump(c);
        }
    }

    fn live(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        // A set of ids stays consistent even if a holder panicked.
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts `n` health reports ignored (not from the edge).
    pub fn health_reports_ignored(&self, n: usize) {
        if n > 0 {
            add(&self.health_ignored, n);
        }
    }

    /// Counts a control-channel session event of `instance_id`.
    pub fn session_event(&self, instance_id: &str, event: &SessionEvent) {
        match event {
            SessionEvent::Connected { .. } => {
                bump(&self.established);
                self.live().insert(instance_id.to_string());
            }
            SessionEvent::Acked(_) => bump(&self.acks),
            SessionEvent::Nacked { .. } => bump(&self.nacks),
            SessionEvent::Status(_) => bump(&self.status_reports),
            SessionEvent::Disconnected { .. } => {
                bump(&self.closed);
                self.live().remove(instance_id);
            }
        }
    }

    /// The current values.
    pub fn values(&self) -> CounterValues {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut refused = [0; REFUSAL_REASONS.len()];
        for (out, c) in refused.iter_mut().zip(&self.enroll_refused) {
            *out = get(c);
        }
        CounterValues {
            enroll_accepted: get(&self.enroll_accepted),
            enroll_refused: refused,
            control_accepted: get(&self.control_accepted),
            control_refused: get(&self.control_refused),
            hellos: get(&self.hellos),
            acks: get(&self.acks),
            nacks: get(&self.nacks),
            status_reports: get(&self.status_reports),
            health_reports: get(&self.health_reports),
            health_ignored: get(&self.health_ignored),
            established: get(&self.established),
            closed: get(&self.closed),
            live_sessions: self.live().len() as u64,
            installer: self
                .installer
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .map(|(&(file, status), &n)| (file, status, n))
                .collect(),
            http_refused: load_table(&self.http_refused),
            tls_failed: load_table(&self.tls_failed),
            control_bytes_received: get(&self.control_bytes_received),
            control_bytes_sent: get(&self.control_bytes_sent),
            conn_rejected: load_table(&self.conn_rejected),
            accept_errors: self.accept_errors.each_ref().map(get),
        }
    }
}

/// A [`ControlStore`] that counts what passes through it into the
/// gateway's [`Counters`] and delegates everything to `inner`.
#[derive(Debug)]
pub struct CountingControl<S> {
    inner: S,
    gw: Arc<Gateway>,
}

impl<S: ControlStore> CountingControl<S> {
    pub fn new(inner: S, gw: Arc<Gateway>) -> CountingControl<S> {
        CountingControl { inner, gw }
    }
}

impl<S: ControlStore> ControlStore for CountingControl<S> {
    fn authorize(&self, cert_der: &[u8]) -> Result<String, StoreRefusal> {
        let r = self.inner.authorize(cert_der);
        let c = self.gw.counters();
        bump(if r.is_ok() {
            &c.control_accepted
        } else {
            &c.control_refused
        });
        r
    }

    fn hello(
        &self,
        instance_id: &str,
        meta: &InstanceMeta,
    ) -> Result<(u32, u64, Option<InstanceConfig>), StoreRefusal> {
        bump(&self.gw.counters().hellos);
        self.inner.hello(instance_id, meta)
    }

    fn desired(&self, instance_id: &str) -> Result<(u64, Option<InstanceConfig>), StoreRefusal> {
        self.inner.desired(instance_id)
    }

    fn report(&self, instance_id: &str, event: SessionEvent) {
        self.gw.counters().session_event(instance_id, &event);
        self.inner.report(instance_id, event);
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.inner.changes()
    }

    fn is_revoked(&self, instance_id: &str) -> bool {
        self.inner.is_revoked(instance_id)
    }

    fn health(&self, instance_id: &str, report: control::lb::HealthReport) {
        bump(&self.gw.counters().health_reports);
        self.inner.health(instance_id, report);
    }

    fn transport(&self, event: TransportEvent) {
        self.gw.counters().control_transport(event);
        self.inner.transport(event);
    }
}

/// What the store says at scrape time.
#[derive(Debug, Clone)]
pub struct StoreView {
    pub version: u64,
    pub desired_version: u64,
    pub instances: Vec<InstanceRecord>,
    /// Desired config version per non-revoked instance.
    pub desired: HashMap<String, u64>,
    /// The latest `Status` per instance that sent one (memory, not store).
    pub agents: HashMap<String, AgentSummary>,
    /// Every checked real server with its health (memory, not store).
    pub lb_health: Vec<crate::health::Row>,
}

/// What the metrics show of an agent's latest `Status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentSummary {
    pub applied_version: Option<u64>,
    pub age_seconds: u64,
    pub error: bool,
}

impl AgentSummary {
    /// The summary of `s` at `now`.
    pub fn of(s: &AgentStatus, now: std::time::Instant) -> AgentSummary {
        AgentSummary {
            applied_version: s.applied_version,
            age_seconds: s.age_seconds(now),
            error: s.last_error.is_some(),
        }
    }
}

/// Everything one scrape reports.
#[derive(Debug, Clone)]
pub struct Scrape {
    pub version: &'static str,
    pub uptime_s: f64,
    /// `Err(message)` when the store could not be read.
    pub store: Result<StoreView, String>,
    pub counters: CounterValues,
}

/// The metrics endpoint's state: the gateway and the last config snapshot
/// (rebuilt only when the store version moves).
#[derive(Debug)]
pub struct Metrics {
    gw: Arc<Gateway>,
    snapshot: Mutex<Option<Arc<ConfigSnapshot>>>,
}

impl Metrics {
    pub fn new(gw: Arc<Gateway>) -> Metrics {
        Metrics {
            gw,
            snapshot: Mutex::new(None),
        }
    }

    /// Reads the store and the counters (blocking: call it off the async
    /// workers).
    pub fn collect(&self) -> Scrape {
        let store = self.store_view().map_err(|e| {
            tracing::warn!("metrics: cannot read the store: {e}");
            e.to_string()
        });
        Scrape {
            version: env!("CARGO_PKG_VERSION"),
            uptime_s: self.gw.started().elapsed().as_secs_f64(),
            store,
            counters: self.gw.counters().values(),
        }
    }

    fn store_view(&self) -> Result<StoreView, StoreError> {
        let (version, desired_version, instances) = {
            let store = self.gw.store();
            (
                store.version()?,
                store.desired_version()?,
                store.instances()?,
            )
        };
        let snapshot = {
            let mut cache = self.snapshot.lock().unwrap_or_else(|p| p.into_inner());
            match cache.as_ref() {
                Some(s) if s.global == version => Arc::clone(s),
                stale => {
                    let previous = stale.map(Arc::clone);
                    let built = Arc::new(self.gw.config_snapshot(previous.as_deref())?);
                    *cache = Some(Arc::clone(&built));
                    built
                }
            }
        };
        let desired = instances
            .iter()
            .filter(|i| i.revoked_at.is_none())
            .filter_map(|i| Some((i.id.clone(), snapshot.version_of(&i.id)?)))
            .collect();
        let now = std::time::Instant::now();
        let agents = self
            .gw
            .agent_statuses()
            .all()
            .iter()
            .map(|(id, s)| (id.clone(), AgentSummary::of(s, now)))
            .collect();
        let lb_health = crate::health::rows(snapshot.state(), &self.gw.health().verdicts());
        Ok(StoreView {
            version,
            desired_version,
            instances,
            desired,
            agents,
            lb_health,
        })
    }

    /// One scrape's OpenMetrics text.
    pub fn render(&self) -> Result<String, fmt::Error> {
        render(self.collect())
    }
}

/// Renders a scrape as OpenMetrics text (ends with `# EOF`).
pub fn render(scrape: Scrape) -> Result<String, fmt::Error> {
    metrics_text::render(GatewayCollector(scrape))
}

/// The per-scrape collector.
#[derive(Debug)]
struct GatewayCollector(Scrape);

impl Collector for GatewayCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let s = &self.0;
        let c = &s.counters;
        {
            let mut m = encoder.encode_descriptor(
                "nsx_gateway_build",
                "The gateway binary (always 1).",
                None,
                MetricType::Info,
            )?;
            m.encode_info(&vec![("version", s.version.to_string())])?;
        }
        let mut e = Emit(&mut encoder);
        e.gauge(
            "nsx_gateway_uptime_seconds",
            "Seconds since the gateway started serving.",
            s.uptime_s,
        )?;
        e.gauge(
            "nsx_gateway_store_up",
            "1 if this scrape could read the store (the inventory and version families need it).",
            u64::from(s.store.is_ok()),
        )?;
        if let Ok(st) = &s.store {
            encode_store(&mut e, st)?;
        }
        e.gauge(
            "nsx_gateway_sessions_established",
            "Control sessions established with this gateway process now.",
            c.live_sessions,
        )?;
        e.counter(
            "nsx_gateway_enrollments_accepted",
            "Enrollments that issued a certificate.",
            c.enroll_accepted,
        )?;
        let refused: Vec<(Labels, u64)> = REFUSAL_REASONS
            .iter()
            .zip(c.enroll_refused)
            .map(|(r, n)| (vec![("reason", r.to_string())], n))
            .collect();
        e.counters(
            "nsx_gateway_enrollments_refused",
            "Enrollment requests refused, by reason (every reason, zeros included).",
            &refused,
        )?;
        e.counters(
            "nsx_gateway_control_connections",
            "Control-channel connections whose client certificate was checked: accepted (an enrolled, non-revoked instance) or refused.",
            &[
                (vec![("result", "accepted".to_string())], c.control_accepted),
                (vec![("result", "refused".to_string())], c.control_refused),
            ],
        )?;
        e.counters(
            "nsx_gateway_control_messages_received",
            "Control-channel messages from agents that reached the gateway's store: Hello, config ack, config nack, status report, health report.",
            &[
                (vec![("type", "hello".to_string())], c.hellos),
                (vec![("type", "ack".to_string())], c.acks),
                (vec![("type", "nack".to_string())], c.nacks),
                (vec![("type", "status".to_string())], c.status_reports),
                (vec![("type", "health".to_string())], c.health_reports),
            ],
        )?;
        e.counter(
            "nsx_gateway_lb_health_reports_ignored",
            "Health reports ignored because the session that sent them is not the edge's.",
            c.health_ignored,
        )?;
        e.counter(
            "nsx_gateway_control_sessions_established",
            "Control sessions established (Hello accepted).",
            c.established,
        )?;
        e.counter(
            "nsx_gateway_control_sessions_closed",
            "Established control sessions that ended.",
            c.closed,
        )?;
        let installer: Vec<(Labels, u64)> = c
            .installer
            .iter()
            .map(|(file, status, n)| {
                (
                    vec![("file", file.to_string()), ("status", status.to_string())],
                    *n,
                )
            })
            .collect();
        e.counters(
            "nsx_gateway_installer_requests",
            "Installer requests (/factory_default/...) answered, by file (other: the list or an unknown path) and HTTP status.",
            &installer,
        )?;
        let refused =
            by_labels::<HttpListener, Refusal, _>(("listener", "reason"), &c.http_refused);
        e.counters(
            "nsx_gateway_http_requests_refused",
            "Requests the HTTP layer answered with an error before any handler saw them, by listener and reason (bad_request 400, length_required 411, body_too_large 413, headers_too_large 431, timeout 408).",
            &refused,
        )?;
        let tls =
            by_labels::<TlsListener, HandshakeFailure, _>(("listener", "reason"), &c.tls_failed);
        e.counters(
            "nsx_gateway_tls_handshake_failures",
            "TLS handshakes that failed (error: refused or broken, e.g. not TLS, an untrusted or missing client certificate, a peer that hung up) or did not complete in time (timeout), by listener (enroll: 8443, control: 5555).",
            &tls,
        )?;
        let rejected = by_labels::<Listener, Over, _>(("listener", "reason"), &c.conn_rejected);
        e.counters(
            "nsx_gateway_connections_rejected",
            "Connections closed right after accept, before any TLS or HTTP, because a connection limit was reached: total (the listener's cap) or per_peer (the cap per source address), by listener (enroll: 8443, install: 8080, admin, metrics, control: 5555).",
            &rejected,
        )?;
        let accept_errors = by_label::<Listener, _>("listener", &c.accept_errors);
        e.counters(
            "nsx_gateway_accept_errors",
            "Failed accept calls by listener (EMFILE: out of file descriptors, ...); the listener pauses (10 ms doubling to 1 s) and keeps accepting.",
            &accept_errors,
        )?;
        e.counter(
            "nsx_gateway_control_bytes_received",
            "Bytes of the control-channel frames received from agents (length prefix included, TLS overhead not).",
            c.control_bytes_received,
        )?;
        e.counter(
            "nsx_gateway_control_bytes_sent",
            "Bytes of the control-channel frames written to agents (length prefix included, TLS overhead not).",
            c.control_bytes_sent,
        )
    }
}

fn encode_store(e: &mut Emit<'_, '_>, st: &StoreView) -> fmt::Result {
    let mut modes: HashMap<&str, u64> = HashMap::new();
    let mut sessions: HashMap<&str, u64> = HashMap::new();
    for i in &st.instances {
        *modes.entry(i.mode()).or_default() += 1;
        if i.revoked_at.is_none() {
            let state = match i.session.as_deref() {
                None => "never",
                Some(s) => s,
            };
            *sessions.entry(state).or_default() += 1;
        }
    }
    let by = |names: &[&str], counts: &HashMap<&str, u64>, key: &'static str| {
        names
            .iter()
            .map(|n| {
                (
                    vec![(key, n.to_string())],
                    counts.get(n).copied().unwrap_or(0),
                )
            })
            .collect::<Vec<(Labels, u64)>>()
    };
    let mut session_rows = by(&SESSION_STATES, &sessions, "state");
    // A state this build does not know still shows (never silently lost).
    let mut other: Vec<_> = sessions
        .iter()
        .filter(|(k, _)| !SESSION_STATES.contains(k))
        .map(|(k, v)| (vec![("state", k.to_string())], *v))
        .collect();
    other.sort();
    session_rows.extend(other);
    e.gauges(
        "nsx_gateway_instances",
        "Enrolled instances by mode (pending: tagged for a switch that does not exist or is full).",
        &by(&MODES, &modes, "mode"),
    )?;
    e.gauges(
        "nsx_gateway_instance_sessions",
        "Non-revoked instances by their control session's recorded state (never: not connected since enrolling).",
        &session_rows,
    )?;
    e.gauge(
        "nsx_gateway_store_version",
        "The store's global version (moves on every change that can affect a config).",
        st.version,
    )?;
    e.gauge(
        "nsx_gateway_desired_state_version",
        "Version of the desired state (switches, routers, firewall).",
        st.desired_version,
    )?;
    let live: Vec<&InstanceRecord> = st
        .instances
        .iter()
        .filter(|i| i.revoked_at.is_none())
        .collect();
    let desired: Vec<(Labels, u64)> = live
        .iter()
        .filter_map(|i| Some((vec![("instance_id", i.id.clone())], *st.desired.get(&i.id)?)))
        .collect();
    let acked: Vec<(Labels, u64)> = live
        .iter()
        .filter_map(|i| Some((vec![("instance_id", i.id.clone())], i.acked_version?)))
        .collect();
    let behind = live
        .iter()
        .filter(|i| i.acked_version != st.desired.get(&i.id).copied())
        .count() as u64;
    e.gauges(
        "nsx_gateway_instance_desired_config_version",
        "Version of the config the gateway wants each instance to run.",
        &desired,
    )?;
    e.gauges(
        "nsx_gateway_instance_acked_config_version",
        "Version of the last config each instance acked.",
        &acked,
    )?;
    e.gauge(
        "nsx_gateway_instances_config_behind",
        "Non-revoked instances that have not acked their desired config version.",
        behind,
    )?;
    encode_agents(e, &live, &st.agents)?;
    encode_lb_health(e, &st.lb_health)
}

/// The families of the load balancers' health view: two series per
/// checked real server.
fn encode_lb_health(e: &mut Emit<'_, '_>, rows: &[crate::health::Row]) -> fmt::Result {
    let labels = |r: &crate::health::Row| -> Labels {
        vec![
            ("virtual_server", r.virtual_server.clone()),
            ("real_server", r.real_server.clone()),
        ]
    };
    let up: Vec<(Labels, u64)> = rows.iter().map(|r| (labels(r), u64::from(r.up))).collect();
    e.gauges(
        "nsx_gateway_lb_real_server_up",
        "1 unless the edge's health checker says the real server is down (every real server with a checker in the desired state; up until the edge reports).",
        &up,
    )?;
    let transitions: Vec<(Labels, u64)> = rows.iter().map(|r| (labels(r), r.transitions)).collect();
    e.counters(
        "nsx_gateway_lb_health_transitions",
        "Changes of a checked real server's health verdict (up, down, a dynamic weight) since the gateway started.",
        &transitions,
    )
}

/// The families of the agents' latest `Status` reports (non-revoked
/// instances only).
fn encode_agents(
    e: &mut Emit<'_, '_>,
    live: &[&InstanceRecord],
    agents: &HashMap<String, AgentSummary>,
) -> fmt::Result {
    let reported: Vec<(&str, &AgentSummary)> = live
        .iter()
        .filter_map(|i| Some((i.id.as_str(), agents.get(&i.id)?)))
        .collect();
    let per = |f: &dyn Fn(&AgentSummary) -> Option<u64>| -> Vec<(Labels, u64)> {
        reported
            .iter()
            .filter_map(|(id, a)| Some((vec![("instance_id", id.to_string())], f(a)?)))
            .collect()
    };
    e.gauges(
        "nsx_gateway_instance_applied_config_version",
        "Version of the config each agent says it runs (its latest status report).",
        &per(&|a| a.applied_version),
    )?;
    e.gauges(
        "nsx_gateway_instance_status_age_seconds",
        "Seconds since each agent's latest status report arrived.",
        &per(&|a| Some(a.age_seconds)),
    )?;
    e.gauges(
        "nsx_gateway_instance_agent_error",
        "1 if each agent's latest status report carries an error (see the admin API for the text).",
        &per(&|a| Some(u64::from(a.error))),
    )?;
    e.gauge(
        "nsx_gateway_instances_agent_error",
        "Non-revoked instances whose latest status report carries an error.",
        reported.iter().filter(|(_, a)| a.error).count() as u64,
    )?;
    e.gauge(
        "nsx_gateway_instances_without_status",
        "Non-revoked instances that sent no status report since the gateway started.",
        live.len().saturating_sub(reported.len()) as u64,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render_values(v: CounterValues) -> String {
        render(Scrape {
            version: "0",
            uptime_s: 1.0,
            store: Err("no store".into()),
            counters: v,
        })
        .expect("render")
    }

    #[test]
    fn refusals_handshake_failures_and_control_bytes_are_rendered() {
        let c = Counters::default();
        let text = render_values(c.values());
        // Every pair is listed from the start, zeros included.
        for l in HttpListener::ALL {
            for r in Refusal::ALL {
                let series = format!(
                    "nsx_gateway_http_requests_refused_total{{listener=\"{}\",reason=\"{}\"}} 0\n",
                    l.label(),
                    r.label()
                );
                assert!(text.contains(&series), "{series} in {text}");
            }
        }
        for l in TlsListener::ALL {
            for r in HandshakeFailure::ALL {
                let series = format!(
                    "nsx_gateway_tls_handshake_failures_total{{listener=\"{}\",reason=\"{}\"}} 0\n",
                    l.label(),
                    r.label()
                );
                assert!(text.contains(&series), "{series} in {text}");
            }
        }
        assert_eq!(
            text.matches("nsx_gateway_http_requests_refused_total{")
                .count(),
            HttpListener::ALL.len() * Refusal::ALL.len()
        );
        assert_eq!(
            text.matches("nsx_gateway_tls_handshake_failures_total{")
                .count(),
            4
        );

        c.http_refused(HttpListener::Enroll, Refusal::BodyTooLarge);
        c.http_refused(HttpListener::Enroll, Refusal::BodyTooLarge);
        c.http_refused(HttpListener::Admin, Refusal::LengthRequired);
        c.http_refused(HttpListener::Install, Refusal::Timeout);
        c.http_refused(HttpListener::Metrics, Refusal::HeadersTooLarge);
        c.tls_handshake_failed(TlsListener::Enroll, HandshakeFailure::Timeout);
        c.tls_handshake_failed(TlsListener::Enroll, HandshakeFailure::Error);
        c.tls_handshake_failed(TlsListener::Enroll, HandshakeFailure::Error);
        // The control channel's events arrive through the ControlStore seam.
        c.control_transport(TransportEvent::HandshakeFailed(HandshakeFailure::Timeout));
        c.control_transport(TransportEvent::FrameReceived { bytes: 100 });
        c.control_transport(TransportEvent::FrameReceived { bytes: 20 });
        c.control_transport(TransportEvent::FramesSent { bytes: 3000 });
        let v = c.values();
        assert_eq!(
            v.http_refused[HttpListener::Enroll.index()][Refusal::BodyTooLarge.index()],
            2
        );
        assert_eq!(
            (v.control_bytes_received, v.control_bytes_sent),
            (120, 3000)
        );
        let text = render_values(v);
        for line in [
            "# TYPE nsx_gateway_http_requests_refused counter\n",
            "# TYPE nsx_gateway_tls_handshake_failures counter\n",
            "# TYPE nsx_gateway_control_bytes_received counter\n",
            "# TYPE nsx_gateway_control_bytes_sent counter\n",
            "nsx_gateway_http_requests_refused_total{listener=\"enroll\",reason=\"body_too_large\"} 2\n",
            "nsx_gateway_http_requests_refused_total{listener=\"enroll\",reason=\"length_required\"} 0\n",
            "nsx_gateway_http_requests_refused_total{listener=\"admin\",reason=\"length_required\"} 1\n",
            "nsx_gateway_http_requests_refused_total{listener=\"install\",reason=\"timeout\"} 1\n",
            "nsx_gateway_http_requests_refused_total{listener=\"metrics\",reason=\"headers_too_large\"} 1\n",
            "nsx_gateway_tls_handshake_failures_total{listener=\"enroll\",reason=\"timeout\"} 1\n",
            "nsx_gateway_tls_handshake_failures_total{listener=\"enroll\",reason=\"error\"} 2\n",
            "nsx_gateway_tls_handshake_failures_total{listener=\"control\",reason=\"timeout\"} 1\n",
            "nsx_gateway_tls_handshake_failures_total{listener=\"control\",reason=\"error\"} 0\n",
            "nsx_gateway_control_bytes_received_total 120\n",
            "nsx_gateway_control_bytes_sent_total 3000\n",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }

    #[test]
    fn label_sets_are_fixed_and_indexed_in_order() {
        for (i, l) in HttpListener::ALL.iter().enumerate() {
            assert_eq!(l.index(), i);
        }
        for (i, l) in TlsListener::ALL.iter().enumerate() {
            assert_eq!(l.index(), i);
        }
        for (i, f) in HandshakeFailure::ALL.iter().enumerate() {
            assert_eq!(f.index(), i);
        }
        for (i, l) in Listener::ALL.iter().enumerate() {
            assert_eq!(l.index(), i);
        }
        for (i, o) in Over::ALL.iter().enumerate() {
            assert_eq!(o.index(), i);
        }
        for l in HttpListener::ALL {
            assert_eq!(Listener::from(l).label(), l.label());
        }
    }

    #[test]
    fn connections_over_a_limit_and_accept_errors_are_rendered() {
        let c = Counters::default();
        let text = render_values(c.values());
        for l in Listener::ALL {
            for r in Over::ALL {
                let series = format!(
                    "nsx_gateway_connections_rejected_total{{listener=\"{}\",reason=\"{}\"}} 0\n",
                    l.label(),
                    r.label()
                );
                assert!(text.contains(&series), "{series} in {text}");
            }
            let series = format!(
                "nsx_gateway_accept_errors_total{{listener=\"{}\"}} 0\n",
                l.label()
            );
            assert!(text.contains(&series), "{series} in {text}");
        }
        assert_eq!(
            text.matches("nsx_gateway_connections_rejected_total{")
                .count(),
            10
        );
        c.accept_event(Listener::Enroll, AcceptEvent::Rejected(Over::PerPeer));
        c.accept_event(Listener::Enroll, AcceptEvent::Rejected(Over::PerPeer));
        c.accept_event(Listener::Install, AcceptEvent::Rejected(Over::Total));
        c.accept_event(Listener::Admin, AcceptEvent::Failed);
        // The control channel's arrive through the ControlStore seam.
        c.control_transport(TransportEvent::Accept(AcceptEvent::Rejected(Over::Total)));
        c.control_transport(TransportEvent::Accept(AcceptEvent::Failed));
        c.control_transport(TransportEvent::Accept(AcceptEvent::Failed));
        let text = render_values(c.values());
        for line in [
            "# TYPE nsx_gateway_connections_rejected counter\n",
            "# TYPE nsx_gateway_accept_errors counter\n",
            "nsx_gateway_connections_rejected_total{listener=\"enroll\",reason=\"per_peer\"} 2\n",
            "nsx_gateway_connections_rejected_total{listener=\"enroll\",reason=\"total\"} 0\n",
            "nsx_gateway_connections_rejected_total{listener=\"install\",reason=\"total\"} 1\n",
            "nsx_gateway_connections_rejected_total{listener=\"control\",reason=\"total\"} 1\n",
            "nsx_gateway_connections_rejected_total{listener=\"control\",reason=\"per_peer\"} 0\n",
            "nsx_gateway_accept_errors_total{listener=\"admin\"} 1\n",
            "nsx_gateway_accept_errors_total{listener=\"control\"} 2\n",
            "nsx_gateway_accept_errors_total{listener=\"enroll\"} 0\n",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }

    #[test]
    fn installer_requests_are_counted_by_file_and_status() {
        let c = Counters::default();
        c.installer_request(Some(install::File::Agent), 200);
        c.installer_request(Some(install::File::Agent), 200);
        c.installer_request(None, 404);
        c.installer_request(Some(install::File::Script), 503);
        let v = c.values();
        assert_eq!(
            v.installer,
            [
                ("install_nsx_vm_agent.sh", 503, 1),
                ("nsx-agent", 200, 2),
                ("other", 404, 1)
            ]
        );
        let text = render(Scrape {
            version: "0",
            uptime_s: 1.0,
            store: Err("no store".into()),
            counters: v,
        })
        .expect("render");
        assert!(
            text.contains("# TYPE nsx_gateway_installer_requests counter\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "nsx_gateway_installer_requests_total{file=\"nsx-agent\",status=\"200\"} 2\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "nsx_gateway_installer_requests_total{file=\"other\",status=\"404\"} 1\n"
            ),
            "{text}"
        );
    }
}
