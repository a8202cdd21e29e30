//! The agent's end of the control channel: dials the gateway on TCP 5555
//! with mutual TLS 1.3 (the gateway must chain to the root CA the agent was
//! installed with; the agent presents the certificate it got at
//! enrollment), and drives [`control::AgentSession`]. Configs the session
//! accepts are handed to the agent's main loop as [`ApplyRequest`]s, which
//! validates, applies (one table swap, or a rebuild of the host plumbing on
//! a mode change) and persists them, and answers with the outcome (ack or
//! nack). The client never waits for that answer inline: an apply runs
//! beside the session, so heartbeats keep flowing while it lasts, and
//! configs that arrive meanwhile queue in the session. An apply outlives a
//! lost connection; its outcome is recorded when it comes. The gateway never
//! dials the agent; on any failure the client backs off (capped, jittered,
//! 30 s at most) and dials again, while the datapath keeps forwarding with
//! the last applied config. The delay starts again from its base only after
//! a session that stayed established for 30 s ([`Backoff::session_ended`]):
//! a gateway that drops every session right after `Welcome` is redialled
//! at the capped rate, not twice a second.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// What the client publishes for `status` (the API's type).
pub use agent_api::GatewayStatus;
use control::framing::{self, Decoder};
use control::proto::{GatewayMsg, Message};
use control::session::{AgentOut, AgentSession, ApplyRefused, Backoff, Jitter, SplitMix64};
use control::{InstanceConfig, InstanceMeta};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use crate::config::GatewaySettings;
use crate::dp::ctl::Published;

/// How often counters flow up to the gateway (and once after each apply).
const STATUS_EVERY: Duration = Duration::from_secs(10);

/// The counter summary sent in `Status`: port and underlay traffic, total
/// drops and each non-zero drop reason.
fn counter_summary(published: &Mutex<Published>) -> std::collections::BTreeMap<String, u64> {
    let mut m = std::collections::BTreeMap::new();
    if let Ok(s) = published.lock() {
        let c = &s.counters;
        m.insert("port_rx_packets".into(), c.port_rx.packets);
        m.insert("port_tx_packets".into(), c.port_tx.packets);
        m.insert("underlay_rx_packets".into(), c.underlay_rx.packets);
        m.insert("underlay_tx_packets".into(), c.underlay_tx.packets);
        m.insert("drops".into(), c.total_drops());
        for r in datapath::DropReason::ALL {
            let n = c.dropped(r);
            if n > 0 {
                m.insert(format!("drop_{}", r.name()), n);
            }
        }
        for (name, n) in &s.firewall {
            if *n > 0 {
                m.insert(name.clone(), *n);
            }
        }
    }
    m
}

/// A config for the main loop to apply; `reply` carries the outcome.
#[derive(Debug)]
pub struct ApplyRequest {
    pub version: u64,
    pub tep_id: u32,
    pub config: Option<InstanceConfig>,
    pub reply: oneshot::Sender<Result<(), ApplyError>>,
}

/// Why a config was not applied (the running one stays); its `Display` is
/// the reason of the gateway's `Nack`.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The config does not compile into forwarding tables.
    #[error(transparent)]
    Tables(#[from] datapath::TablesError),
    /// The overlay port could not be re-addressed.
    #[error(transparent)]
    Host(#[from] crate::host::HostError),
    #[error("datapath thread is gone")]
    DatapathGone,
    /// The main loop went away before answering.
    #[error("agent is stopping")]
    Stopping,
    /// The main loop has earlier requests still queued (never expected:
    /// the session has one apply at a time).
    #[error("another apply is still queued")]
    Busy,
}

/// The apply in progress: its version and where its outcome arrives.
#[derive(Debug)]
struct InFlight {
    version: u64,
    outcome: oneshot::Receiver<Result<(), ApplyError>>,
}

/// Resolves when the apply in flight (if any) has an outcome; never
/// otherwise. Cancel-safe: the receiver is only borrowed.
async fn apply_done(in_flight: &mut Option<InFlight>) -> (u64, Result<(), ApplyRefused>) {
    let Some(f) = in_flight else {
        return std::future::pending().await;
    };
    let result = (&mut f.outcome)
        .await
        .unwrap_or(Err(ApplyError::Stopping))
        .map_err(ApplyRefused::new);
    let version = f.version;
    *in_flight = None;
    (version, result)
}

/// Hands an apply's outcome to the session and says what happened.
fn finish_apply(
    session: &mut AgentSession,
    version: u64,
    result: Result<(), ApplyRefused>,
) -> Vec<AgentOut> {
    if let Err(e) = &result {
        tracing::warn!(version, error = %e, "config refused (nack)");
    }
    session.applied(version, result)
}

#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("{what}: {reason}")]
    Bad { what: String, reason: String },
}

fn bad(what: impl Into<String>, reason: impl ToString) -> TlsSetupError {
    TlsSetupError::Bad {
        what: what.into(),
        reason: reason.to_string(),
    }
}

/// TLS 1.3 client config: trusts only `ca_pem`, presents `cert_pem`/`key_pem`.
pub fn client_tls(
    ca_pem: &[u8],
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<rustls::ClientConfig, TlsSetupError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        let cert = cert.map_err(|e| bad("root CA", e))?;
        roots.add(cert).map_err(|e| bad("root CA", e))?;
    }
    if roots.is_empty() {
        return Err(bad("root CA", "no certificate in the file"));
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| bad("agent certificate", e))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| bad("agent key", e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| bad("TLS", e))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| bad("agent certificate/key", e))
}

/// Runs the control client until the process ends.
#[allow(clippy::too_many_arguments)] // one per concern the client reports or serves
pub async fn run(
    settings: GatewaySettings,
    tls: Arc<rustls::ClientConfig>,
    meta: InstanceMeta,
    applied: Option<u64>,
    apply_tx: mpsc::Sender<ApplyRequest>,
    status: Arc<Mutex<Option<GatewayStatus>>>,
    counters: Arc<Mutex<Published>>,
    health: Arc<crate::health::Board>,
) {
    let cfg = control::session::AgentSessionConfig::new(
        settings.control.clone(),
        env!("CARGO_PKG_VERSION"),
        meta,
    );
    let mut session = AgentSession::new(cfg, applied, Instant::now());
    let mut backoff = Backoff::new(Backoff::DEFAULT_BASE, Backoff::DEFAULT_CAP, Jitter::Equal);
    let seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        ^ u64::from(std::process::id());
    let mut rng = SplitMix64::new(seed);
    let mut tep_id = 0u32;
    let mut in_flight: Option<InFlight> = None;
    let connector = tokio_rustls::TlsConnector::from(tls);
    loop {
        session.on_connecting(Instant::now());
        publish(&session, &status);
        let established_at = match connect(&settings, &connector).await {
            Ok(stream) => {
                connected_to(&status, stream.get_ref().0.peer_addr().ok());
                let mut conn = Conn {
                    session: &mut session,
                    apply_tx: &apply_tx,
                    in_flight: &mut in_flight,
                    status: &status,
                    counters: &counters,
                    tep_id: &mut tep_id,
                    health: &health,
                };
                conn.drive(stream).await
            }
            Err(e) => {
                tracing::warn!(gateway = %settings.control, error = %e, "cannot reach the gateway");
                session.on_dial_failed(e.to_string(), Instant::now());
                None
            }
        };
        backoff.session_ended(established_at, Instant::now());
        publish(&session, &status);
        let delay = backoff.next_delay(rng.next_u64());
        tracing::info!(
            delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            attempt = backoff.attempt(),
            "reconnecting to the gateway"
        );
        // An apply still running finishes meanwhile: record its outcome, so
        // the next Hello names the version the datapath runs.
        let redial = tokio::time::sleep(delay);
        tokio::pin!(redial);
        loop {
            tokio::select! {
                () = &mut redial => break,
                (version, result) = apply_done(&mut in_flight) => {
                    // No connection: nothing to send.
                    let _ = finish_apply(&mut session, version, result);
                    publish(&session, &status);
                }
            }
        }
    }
}

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

/// Why a dial failed; the agent's `last_error` while it retries.
#[derive(Debug, thiserror::Error)]
enum DialError {
    #[error("server name {name:?}: {reason}")]
    ServerName { name: String, reason: String },
    #[error("connect {addr}: timed out")]
    ConnectTimeout { addr: String },
    #[error("connect {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("TLS handshake with {addr}: timed out")]
    TlsTimeout { addr: String },
    #[error("TLS handshake with {addr}: {source}")]
    Tls {
        addr: String,
        source: std::io::Error,
    },
}

async fn connect(
    settings: &GatewaySettings,
    connector: &tokio_rustls::TlsConnector,
) -> Result<Tls, DialError> {
    let addr = || settings.control.clone();
    let name =
        ServerName::try_from(settings.server_name.clone()).map_err(|e| DialError::ServerName {
            name: settings.server_name.clone(),
            reason: e.to_string(),
        })?;
    let tcp = tokio::time::timeout(
        Duration::from_secs(5),
        TcpStream::connect(&settings.control),
    )
    .await
    .map_err(|_| DialError::ConnectTimeout { addr: addr() })?
    .map_err(|source| DialError::Connect {
        addr: addr(),
        source,
    })?;
    let _ = tcp.set_nodelay(true);
    let peer: Option<SocketAddr> = tcp.peer_addr().ok();
    let tls = tokio::time::timeout(Duration::from_secs(5), connector.connect(name, tcp))
        .await
        .map_err(|_| DialError::TlsTimeout { addr: addr() })?
        .map_err(|source| DialError::Tls {
            addr: addr(),
            source,
        })?;
    tracing::info!(gateway = %settings.control, ?peer, "TLS session up");
    Ok(tls)
}

/// One connection's worth of the client's state.
struct Conn<'a> {
    session: &'a mut AgentSession,
    apply_tx: &'a mpsc::Sender<ApplyRequest>,
    /// Outlives the connection: an apply is not cancelled by a reconnect.
    in_flight: &'a mut Option<InFlight>,
    status: &'a Mutex<Option<GatewayStatus>>,
    counters: &'a Mutex<Published>,
    tep_id: &'a mut u32,
    /// The edge's health checkers' verdicts, reported as they change.
    health: &'a crate::health::Board,
}

impl Conn<'_> {
    /// Runs one connection. Returns when its session reached
    /// `Established`, if it did (the backoff's measure of a healthy session).
    async fn drive(&mut self, stream: Tls) -> Option<Instant> {
        let mut next_status = Instant::now() + STATUS_EVERY;
        let (mut rd, mut wr) = tokio::io::split(stream);
        let mut decoder: Decoder<GatewayMsg> = Decoder::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut outs: VecDeque<AgentOut> = self.session.on_connected(Instant::now()).into();
        let mut established = None;
        loop {
            while let Some(out) = outs.pop_front() {
                match out {
                    AgentOut::Send(msg) => {
                        let bytes = match framing::encode(&msg) {
                            Ok(b) => b,
                            Err(e) => {
                                // A summary, never the message itself.
                                let why = format!("cannot encode {}: {e}", msg.summary());
                                outs.extend(self.session.close(why, Instant::now()));
                                continue;
                            }
                        };
                        // tokio-rustls may buffer: flush so the frame leaves now.
                        let sent = match wr.write_all(&bytes).await {
                            Ok(()) => wr.flush().await,
                            Err(e) => Err(e),
                        };
                        if let Err(e) = sent {
                            self.session
                                .on_disconnected(format!("write: {e}"), Instant::now());
                            return established;
                        }
                    }
                    AgentOut::Apply { version, config } => {
                        outs.extend(self.start_apply(version, config))
                    }
                    AgentOut::Established {
                        protocol_version,
                        tep_id,
                        heartbeat_ms,
                    } => {
                        *self.tep_id = tep_id;
                        established = Some(Instant::now());
                        tracing::info!(
                            protocol_version,
                            tep_id,
                            heartbeat_ms,
                            "gateway session established"
                        );
                        publish(self.session, self.status);
                        // Every verdict once, then each change.
                        if let Some(full) = self.health.full() {
                            outs.extend(health_outs(self.session, full));
                        }
                    }
                    AgentOut::Close { reason } => {
                        tracing::warn!(%reason, "gateway session closed");
                        let _ = wr.shutdown().await;
                        return established;
                    }
                }
            }
            if Instant::now() >= next_status {
                outs.extend(self.session.status_report(counter_summary(self.counters)));
                next_status = Instant::now() + STATUS_EVERY;
                if !outs.is_empty() {
                    continue;
                }
            }
            let wait = self
                .session
                .next_timeout()
                .map_or(Duration::from_secs(1), |t| {
                    t.saturating_duration_since(Instant::now())
                })
                .min(next_status.saturating_duration_since(Instant::now()));
            tokio::select! {
                read = rd.read(&mut buf) => match read {
                    Ok(0) => {
                        outs.extend(self.session.on_disconnected("closed by the gateway", Instant::now()));
                        if outs.is_empty() { return established; }
                    }
                    Ok(n) => {
                        decoder.push(buf.get(..n).unwrap_or_default());
                        loop {
                            match decoder.next() {
                                Ok(Some(msg)) => outs.extend(self.session.on_message(msg, Instant::now())),
                                Ok(None) => break,
                                Err(e) => {
                                    outs.extend(self.session.on_frame_error(e, Instant::now()));
                                    break;
                                }
                            }
                        }
                    }
                    Err(e) => {
                        outs.extend(self.session.on_disconnected(format!("read: {e}"), Instant::now()));
                        if outs.is_empty() { return established; }
                    }
                },
                (version, result) = apply_done(self.in_flight) => {
                    outs.extend(finish_apply(self.session, version, result));
                    publish(self.session, self.status);
                    // The gateway hears what is applied (or failed) now,
                    // not at the next period.
                    next_status = Instant::now();
                }
                () = self.health.changed() => {
                    if let Some(r) = self.health.changes() {
                        outs.extend(health_outs(self.session, r));
                    }
                }
                () = tokio::time::sleep(wait) => outs.extend(self.session.on_tick(Instant::now())),
            }
        }
    }

    /// Hands a config to the main loop and returns at once; the outcome
    /// arrives through [`apply_done`]. The session emits one `Apply` at a
    /// time, so the channel never holds more than one request.
    fn start_apply(&mut self, version: u64, config: Option<InstanceConfig>) -> Vec<AgentOut> {
        let (reply, outcome) = oneshot::channel();
        let req = ApplyRequest {
            version,
            tep_id: *self.tep_id,
            config,
            reply,
        };
        match self.apply_tx.try_send(req) {
            Ok(()) => {
                *self.in_flight = Some(InFlight { version, outcome });
                Vec::new()
            }
            Err(e) => {
                let why = match e {
                    mpsc::error::TrySendError::Closed(_) => ApplyError::Stopping,
                    mpsc::error::TrySendError::Full(_) => ApplyError::Busy,
                };
                finish_apply(self.session, version, Err(ApplyRefused::new(why)))
            }
        }
    }
}

/// Verdicts per `Health` message: about 1 MiB of JSON with short reasons,
/// well inside a frame (`control::MAX_FRAME`, 4 MiB).
const HEALTH_CHUNK: usize = 8192;

/// `report` as the messages the session sends: in parts of at most
/// [`HEALTH_CHUNK`] verdicts (a full report's first part is the full one),
/// so tens of thousands of checked servers never make a frame too big
/// to encode, which would close the session again at every reconnect.
fn health_outs(
    session: &AgentSession,
    report: control::lb::HealthReport,
) -> impl Iterator<Item = AgentOut> + '_ {
    report
        .chunks(HEALTH_CHUNK)
        .filter_map(|part| session.health_report(part))
}

/// Copies the session's status for the API.
fn publish(session: &AgentSession, status: &Mutex<Option<GatewayStatus>>) {
    let s = session.status();
    let ago = Instant::now().saturating_duration_since(s.since);
    let since_unix = SystemTime::now()
        .checked_sub(ago)
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    if let Ok(mut st) = status.lock() {
        let address = st.as_ref().and_then(|g| g.address.clone());
        *st = Some(GatewayStatus {
            state: s.state.as_str().to_string(),
            peer: s.peer,
            // The API adds the configured name.
            name: None,
            address,
            since_unix,
            last_error: s.last_error,
            applied_version: s.applied_version,
            protocol_version: s.protocol_version,
        });
    }
}

/// Records the address the latest connection reached (`status` shows it
/// after the gateway's name).
fn connected_to(status: &Mutex<Option<GatewayStatus>>, addr: Option<SocketAddr>) {
    if let Ok(mut st) = status.lock()
        && let Some(g) = st.as_mut()
    {
        g.address = addr.map(|a| a.to_string());
    }
}
