//! The gateway's end of the control channel: TCP 5555, TLS 1.3, client
//! certificate required (see `control/PROTOCOL.md`).
//!
//! [`serve`] accepts connections and runs each in its own task, so one
//! misbehaving client can only end its own connection:
//!
//! 0. Right after `accept`, the connection limits
//!    ([`ServerOptions::connections`]: [`MAX_CONNECTIONS`] in total,
//!    [`MAX_CONNECTIONS_PER_PEER`] per source address; an agent holds one
//!    session) are checked by [`crate::conn_limit::Gate`]: a connection
//!    over one is closed before any TLS, and a failing `accept` (EMFILE)
//!    pauses the loop briefly instead of spinning; both are reported to
//!    [`ControlStore::transport`] ([`TransportEvent::Accept`]).
//! 1. TLS handshake, bounded by [`ServerOptions::tls_handshake_timeout`]. The
//!    [`server_tls`] config requires a client certificate that chains to the
//!    root CA (rustls' `WebPkiClientVerifier`), so a certificate from another
//!    CA, or none, fails here.
//! 2. The instance is identified from the certificate alone
//!    ([`ControlStore::authorize`]); unknown or revoked certificates get a
//!    `Reject` naming the reason and the connection is closed.
//! 3. A [`control::GatewaySession`] is driven: frames are read through a
//!    bounded [`control::Decoder`] (a frame error is answered with `Reject`
//!    and closes the connection), `Hello` goes to [`ControlStore::hello`]
//!    and then `accept`, the session's timers (handshake timeout, heartbeats,
//!    dead peer after 3 silent intervals) run from `next_timeout()`, and
//!    every change signalled by [`ControlStore::changes`] re-reads
//!    [`ControlStore::desired`] and pushes newer versions (stop-and-wait and
//!    coalescing are the session's job). A change notification also checks
//!    [`ControlStore::is_revoked`]: a revoked instance's session is closed at
//!    once with `Reject{"certificate revoked"}`.
//! 4. Outgoing frames go through a small bounded queue to a writer task, so
//!    a client that stops reading can never block the reader, the timers or
//!    revocation; a full queue or a write that stalls for
//!    [`ServerOptions::write_timeout`] ends that connection.
//!
//! Only one session per instance is live: when a second connection of the
//! same instance is established (an agent that reconnected before the gateway
//! noticed the old connection was dead), the older one is closed, and only
//! the live one reports `Disconnected`.
//!
//! The gateway never dials an agent. Everything that ends a connection is
//! logged with its reason (`tracing`, target `gateway::control_server`).
//! Failed TLS handshakes and the bytes of the frames read and written are
//! reported to [`ControlStore::transport`] (the metrics).
//!
//! The [`ControlStore`] methods are called from the async runtime and must be
//! quick (an in-memory cache or one short SQLite transaction); `desired` is
//! called once per live session on every change notification.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use control::proto::Message;
use control::{
    AgentMsg, CloseReason, Decoder, GatewayConfig, GatewayOut, GatewaySession, GatewayState,
    InstanceConfig, InstanceMeta, MAX_FRAME, StatusReport, encode,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, error, info, warn};

use crate::conn_limit::{AcceptEvent, ConnGuard, ConnLimiter, Gate, Limits};

/// The well-known control-channel port.
pub const CONTROL_PORT: u16 = 5555;

/// Default cap on the control channel's open connections (sessions and
/// handshakes in progress), all peers together.
pub const MAX_CONNECTIONS: usize = 4096;

/// Default cap on the control channel's open connections from one source
/// address: an agent holds one session (two for a moment when it
/// reconnects before the old one is noticed dead).
pub const MAX_CONNECTIONS_PER_PEER: usize = 8;

/// What the control channel needs from the gateway's store. Implemented by
/// the gateway runtime (SQLite store + change notification); the tests use
/// an in-memory implementation.
pub trait ControlStore: Send + Sync + 'static {
    /// The instance id for a verified client certificate (DER of the leaf),
    /// if it belongs to an enrolled, non-revoked instance; why not otherwise
    /// (for example [`StoreRefusal::UnknownCertificate`],
    /// [`StoreRefusal::Revoked`]). The reason is sent to the agent in a
    /// `Reject`.
    fn authorize(&self, cert_der: &[u8]) -> Result<String, StoreRefusal>;

    /// A valid `Hello` from `instance_id` (the id from its certificate, which
    /// the session has checked against `meta.instance_id`): records the
    /// metadata (tags may re-place the instance) and returns
    /// `(tep_id, version, desired config)`; `None` config =
    /// micro-segmentation. An error refuses the session (its `Display` is
    /// the `Reject` reason).
    fn hello(
        &self,
        instance_id: &str,
        meta: &InstanceMeta,
    ) -> Result<(u32, u64, Option<InstanceConfig>), StoreRefusal>;

    /// The instance's current `(version, desired config)`. The version
    /// should only change when this instance's config does (otherwise every
    /// change re-sends every agent its unchanged config).
    fn desired(&self, instance_id: &str) -> Result<(u64, Option<InstanceConfig>), StoreRefusal>;

    /// What happened on the instance's session (for `get instances`).
    fn report(&self, instance_id: &str, event: SessionEvent);

    /// A receiver whose value changes whenever anything that may affect
    /// some instance's desired state, or a revocation, happens (for example
    /// the store's global version). Subscribed to once per connection.
    fn changes(&self) -> watch::Receiver<u64>;

    /// True once the instance has been revoked.
    fn is_revoked(&self, instance_id: &str) -> bool;

    /// Health checkers' verdicts from the instance's session (whether it
    /// is the edge, the only one whose reports count, is the store's to
    /// check). Called from the async runtime: must not block. Ignored by
    /// default.
    fn health(&self, instance_id: &str, report: control::lb::HealthReport) {
        let _ = (instance_id, report);
    }

    /// A connection-level event, for metrics: a failed TLS handshake, a
    /// frame read, frames written. Called from the async runtime, once per
    /// frame read and once per batch written: must be quick (an atomic
    /// add). Ignored by default.
    fn transport(&self, event: TransportEvent) {
        let _ = event;
    }
}

metrics_text::label_set! {
    /// Why a TLS handshake failed (the `reason` label of
    /// `nsx_gateway_tls_handshake_failures_total`).
    pub enum HandshakeFailure {
        /// Not completed within the deadline.
        Timeout = "timeout",
        /// Refused or broken: not TLS, no or an untrusted client certificate,
        /// the peer hung up, an I/O error.
        Error = "error",
    }
}

/// Connection-level events reported to [`ControlStore::transport`]. Frame
/// sizes include the 4-byte length prefix, not the TLS overhead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportEvent {
    /// A connection failed its TLS handshake (a shutdown during the
    /// handshake is not reported).
    HandshakeFailed(HandshakeFailure),
    /// One complete frame of `bytes` was read and decoded (a frame that
    /// does not decode is not reported: it ends the connection).
    FrameReceived { bytes: usize },
    /// Frames of `bytes` in total were written (one write of the frames
    /// queued at that moment, or a `Reject` before closing).
    FramesSent { bytes: usize },
    /// The accept step: a connection over a limit closed before its TLS
    /// handshake, or a failed `accept` (EMFILE, ...).
    Accept(AcceptEvent),
}

/// Session events reported to [`ControlStore::report`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// The session is established (Welcome and the first Snapshot are on
    /// their way).
    Connected {
        peer: SocketAddr,
        protocol_version: u32,
        agent_version: String,
        /// What the agent said it runs in its Hello.
        applied_version: Option<u64>,
    },
    /// The agent runs `version`.
    Acked(u64),
    /// The agent refused `version` (it keeps its previous config).
    Nacked {
        version: u64,
        reason: String,
        resync: bool,
    },
    /// Periodic status and counters from the agent.
    Status(StatusReport),
    /// The established session ended (not reported for a connection that
    /// was replaced by a newer one of the same instance).
    Disconnected { reason: String },
}

/// Why [`server_tls`] could not build a TLS config.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    #[error("cannot read {what} PEM: {source}")]
    Pem {
        what: &'static str,
        source: rustls::pki_types::pem::Error,
    },
    #[error("no certificate in the {0} PEM")]
    NoCertificate(&'static str),
    #[error("root CA certificate not usable: {0}")]
    BadCa(rustls::Error),
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("TLS server configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// Why a client certificate has no usable common name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertNameError {
    #[error("certificate does not parse: {0}")]
    Parse(String),
    #[error("certificate subject has no common name")]
    NoCommonName,
    #[error("certificate common name is not a string")]
    NotAString,
}

/// Why the [`ControlStore`] refuses a certificate or a Hello, or cannot
/// answer a lookup. Its `Display` is the reason the agent reads in the
/// `Reject`, so it names the problem without internals.
#[derive(Debug, thiserror::Error)]
pub enum StoreRefusal {
    #[error("unknown certificate")]
    UnknownCertificate,
    #[error("certificate revoked")]
    Revoked,
    #[error("unknown instance {0:?}")]
    UnknownInstance(String),
    /// The certificate names no instance (see [`certificate_common_name`]).
    #[error(transparent)]
    Certificate(#[from] CertNameError),
    /// The store could not be read (the details are logged by the store).
    #[error("gateway store unavailable")]
    Unavailable,
    /// A lookup failed in the store.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Why the writer side of a session failed; ends the session (logged as
/// its transport reason, stored as the instance's `last_error`). Never
/// carries a message itself: a config can be megabytes, and every failed
/// session would log and store it again.
#[derive(Debug, thiserror::Error)]
enum SendError {
    /// `summary` is the message's [`Message::summary`] (type, versions,
    /// scale), `source` says how large it was.
    #[error("cannot encode {summary} for instance {instance}: {source}")]
    Encode {
        summary: String,
        instance: String,
        source: control::framing::FrameError,
    },
    #[error("writer gone")]
    WriterGone,
    #[error("agent is not reading (send queue full)")]
    QueueFull,
    #[error("write failed: {0}")]
    Write(std::io::Error),
    #[error("write stalled for {0} ms")]
    Stalled(u64),
    #[error("shutdown failed: {0}")]
    Shutdown(std::io::Error),
}

/// The writer task of one connection.
type Writer = tokio::task::JoinHandle<Result<(), SendError>>;

/// Why a connection ended before a session started (logged).
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("TLS handshake not completed within {0} ms")]
    HandshakeTimeout(u64),
    #[error("TLS handshake failed: {0}")]
    Handshake(std::io::Error),
    #[error("no client certificate")]
    NoClientCertificate,
    #[error("certificate refused: {0}")]
    Unauthorized(StoreRefusal),
    #[error("gateway shutting down")]
    Shutdown,
}

/// Tunables of [`serve_with`]; [`Default`] is what [`serve`] uses.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Protocol versions, heartbeat interval (announced in Welcome) and the
    /// Hello deadline.
    pub session: GatewayConfig,
    /// Time allowed for the TLS handshake after accept.
    pub tls_handshake_timeout: Duration,
    /// A queued frame that cannot be written within this ends the connection.
    pub write_timeout: Duration,
    /// Largest frame payload accepted from an agent.
    pub max_frame: usize,
    /// Frames queued for the writer before the agent counts as not reading.
    pub send_queue: usize,
    /// On close: time to flush the last frames (the Reject) and let the peer
    /// read them before the socket is dropped.
    pub linger: Duration,
    /// On shutdown: time allowed for connection tasks to finish.
    pub shutdown_grace: Duration,
    /// Open connections allowed, in total and per source address; checked
    /// right after accept, before the TLS handshake.
    pub connections: Limits,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            session: GatewayConfig::default(),
            tls_handshake_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(10),
            max_frame: MAX_FRAME,
            send_queue: 64,
            linger: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(3),
            connections: Limits {
                total: MAX_CONNECTIONS,
                per_peer: MAX_CONNECTIONS_PER_PEER,
            },
        }
    }
}

/// The TLS config of the control listener: TLS 1.3 only (ring provider),
/// the gateway's certificate chain and key, and a client certificate
/// required and verified against the root CA `ca_pem`.
pub fn server_tls(
    ca_pem: &[u8],
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<ServerConfig, TlsConfigError> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        let cert = cert.map_err(|source| TlsConfigError::Pem {
            what: "root CA",
            source,
        })?;
        roots.add(cert).map_err(TlsConfigError::BadCa)?;
    }
    if roots.is_empty() {
        return Err(TlsConfigError::NoCertificate("root CA"));
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|source| TlsConfigError::Pem {
            what: "gateway certificate",
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsConfigError::NoCertificate("gateway certificate"));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|source| TlsConfigError::Pem {
        what: "gateway key",
        source,
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build()?;
    let cfg = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    Ok(cfg)
}

/// The subject common name of a DER certificate (the instance id of an
/// enrolled agent's certificate).
pub fn certificate_common_name(der: &[u8]) -> Result<String, CertNameError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| CertNameError::Parse(e.to_string()))?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .ok_or(CertNameError::NoCommonName)?;
    cn.as_str()
        .map(str::to_string)
        .map_err(|_| CertNameError::NotAString)
}

/// Serves the control channel on `listener` with default options until
/// `shutdown` becomes `true`; then closes every session
/// (`Reject{"gateway shutting down"}`) and returns. A dropped `shutdown`
/// sender is not a shutdown.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    store: Arc<dyn ControlStore>,
    shutdown: watch::Receiver<bool>,
) {
    serve_with(listener, tls, store, shutdown, ServerOptions::default()).await;
}

/// [`serve`] with explicit [`ServerOptions`].
pub async fn serve_with(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    store: Arc<dyn ControlStore>,
    mut shutdown: watch::Receiver<bool>,
    opts: ServerOptions,
) {
    let ctx = Arc::new(Ctx {
        acceptor: TlsAcceptor::from(tls),
        store,
        opts,
        live: Mutex::new(HashMap::new()),
        next_conn: AtomicU64::new(1),
    });
    match listener.local_addr() {
        Ok(a) => info!(addr = %a, "control channel listening"),
        Err(e) => warn!(error = %e, "control channel listening (address unknown)"),
    }
    let mut tasks = JoinSet::new();
    let mut gate = Gate::new(ConnLimiter::new(ctx.opts.connections));
    let report = {
        let store = Arc::clone(&ctx.store);
        move |e| store.transport(TransportEvent::Accept(e))
    };
    loop {
        tokio::select! {
            () = shutdown_requested(&mut shutdown) => break,
            (tcp, peer, place) = gate.accept(&listener, &report) => {
                let conn_id = ctx.next_conn.fetch_add(1, Ordering::Relaxed);
                tasks.spawn(connection(ctx.clone(), tcp, peer, conn_id, shutdown.clone(), place));
            }
            Some(res) = tasks.join_next(), if !tasks.is_empty() => reap(res),
        }
    }
    info!(
        sessions = tasks.len(),
        "control channel shutting down: closing sessions"
    );
    let grace = ctx.opts.shutdown_grace;
    let drained = tokio::time::timeout(grace, async {
        while let Some(res) = tasks.join_next().await {
            reap(res);
        }
    })
    .await;
    if drained.is_err() {
        warn!(
            left = tasks.len(),
            "control channel: connections still open after the grace period; aborting them"
        );
        tasks.shutdown().await;
    }
}

fn reap(res: Result<(), tokio::task::JoinError>) {
    if let Err(e) = res
        && e.is_panic()
    {
        error!(error = %e, "control channel: a connection task panicked (only that connection is lost)");
    }
}

/// Resolves once `rx` reads `true`; never if its sender is dropped first.
async fn shutdown_requested(rx: &mut watch::Receiver<bool>) {
    loop {
        if *rx.borrow_and_update() {
            return;
        }
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Shared by all connection tasks.
struct Ctx {
    acceptor: TlsAcceptor,
    store: Arc<dyn ControlStore>,
    opts: ServerOptions,
    /// The live (established) connection of each instance and how to kick it.
    live: Mutex<HashMap<String, (u64, Arc<Notify>)>>,
    next_conn: AtomicU64,
}

impl Ctx {
    fn live(&self) -> MutexGuard<'_, HashMap<String, (u64, Arc<Notify>)>> {
        // The map stays consistent even if a holder panicked.
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }
}

type Tls = tokio_rustls::server::TlsStream<TcpStream>;

/// One accepted TCP connection, from TLS handshake to close; its place in
/// the connection limits goes with it.
async fn connection(
    ctx: Arc<Ctx>,
    tcp: TcpStream,
    peer: SocketAddr,
    conn_id: u64,
    mut shutdown: watch::Receiver<bool>,
    _place: ConnGuard,
) {
    if let Err(e) = tcp.set_nodelay(true) {
        debug!(%peer, error = %e, "control: set_nodelay failed");
    }
    // Subscribe before authorizing, so a revocation racing the handshake is
    // still noticed.
    let mut changes = ctx.store.changes();
    changes.borrow_and_update();
    let tls = match handshake(&ctx, tcp, &mut shutdown).await {
        Ok(tls) => tls,
        Err(e) => {
            warn!(%peer, reason = %e, "control: connection refused");
            return;
        }
    };
    let cert = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.as_ref().to_vec());
    let auth = match &cert {
        Some(der) => ctx
            .store
            .authorize(der)
            .map_err(ConnectionError::Unauthorized),
        None => Err(ConnectionError::NoClientCertificate),
    };
    let instance_id = match auth {
        Ok(id) => id,
        Err(e) => {
            warn!(%peer, reason = %e, "control: connection refused");
            let reason = match e {
                ConnectionError::Unauthorized(r) => r.to_string(),
                other => other.to_string(),
            };
            refuse(&ctx, tls, &reason).await;
            return;
        }
    };
    debug!(%peer, instance = %instance_id, "control: TLS up");
    let (rd, wr) = tokio::io::split(tls);
    let (tx, rx) = mpsc::channel(ctx.opts.send_queue.max(4));
    let writer = tokio::spawn(write_loop(
        wr,
        rx,
        ctx.opts.write_timeout,
        Arc::clone(&ctx.store),
    ));
    let mut conn = Conn {
        session: GatewaySession::new(
            ctx.opts.session.clone(),
            instance_id.clone(),
            Instant::now(),
        ),
        ctx: ctx.clone(),
        id: instance_id,
        peer,
        conn_id,
        tx: Some(tx),
        kick: Arc::new(Notify::new()),
        registered: false,
        pushed: None,
        closed: None,
    };
    let rd = conn.run(rd, writer, changes, shutdown).await;
    conn.finish(rd).await;
}

async fn handshake(
    ctx: &Ctx,
    tcp: TcpStream,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<Tls, ConnectionError> {
    let limit = ctx.opts.tls_handshake_timeout;
    let failed = |why| ctx.store.transport(TransportEvent::HandshakeFailed(why));
    tokio::select! {
        r = tokio::time::timeout(limit, ctx.acceptor.accept(tcp)) => match r {
            Ok(Ok(tls)) => Ok(tls),
            Ok(Err(e)) => {
                failed(HandshakeFailure::Error);
                Err(ConnectionError::Handshake(e))
            }
            Err(_) => {
                failed(HandshakeFailure::Timeout);
                Err(ConnectionError::HandshakeTimeout(millis(limit)))
            }
        },
        () = shutdown_requested(shutdown) => Err(ConnectionError::Shutdown),
    }
}

/// Sends `Reject{reason}` (best effort, bounded) and closes the connection.
async fn refuse(ctx: &Ctx, mut tls: Tls, reason: &str) {
    let mut s = GatewaySession::new(ctx.opts.session.clone(), "", Instant::now());
    let mut bytes = Vec::new();
    for out in s.refuse(reason, Instant::now()) {
        if let GatewayOut::Send(m) = out
            && let Ok(frame) = encode(&m)
        {
            bytes.extend(frame);
        }
    }
    let _ = tokio::time::timeout(ctx.opts.linger, async {
        tls.write_all(&bytes).await?;
        ctx.store
            .transport(TransportEvent::FramesSent { bytes: bytes.len() });
        tls.shutdown().await?;
        // Let the peer read the Reject before the socket goes.
        let mut sink = [0u8; 1024];
        while tls.read(&mut sink).await? > 0 {}
        Ok::<(), std::io::Error>(())
    })
    .await;
}

/// Writes queued frames in order, reporting the bytes of each successful
/// write to `store`; returns when the queue is closed (after a TLS
/// close_notify) or on the first failure, with its reason.
async fn write_loop<W: AsyncWrite>(
    mut wr: WriteHalf<W>,
    mut rx: mpsc::Receiver<Vec<u8>>,
    limit: Duration,
    store: Arc<dyn ControlStore>,
) -> Result<(), SendError> {
    let stalled = || SendError::Stalled(millis(limit));
    while let Some(frame) = rx.recv().await {
        let mut batch = frame;
        while let Ok(more) = rx.try_recv() {
            batch.extend(more);
        }
        match tokio::time::timeout(limit, async {
            wr.write_all(&batch).await?;
            wr.flush().await
        })
        .await
        {
            Ok(Ok(())) => store.transport(TransportEvent::FramesSent { bytes: batch.len() }),
            Ok(Err(e)) => return Err(SendError::Write(e)),
            Err(_) => return Err(stalled()),
        }
    }
    match tokio::time::timeout(limit, wr.shutdown()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(SendError::Shutdown(e)),
        Err(_) => Err(stalled()),
    }
}

/// One authenticated connection driving its [`GatewaySession`].
struct Conn {
    session: GatewaySession,
    ctx: Arc<Ctx>,
    id: String,
    peer: SocketAddr,
    conn_id: u64,
    /// Frames to the writer task; `None` once the writer is gone.
    tx: Option<mpsc::Sender<Vec<u8>>>,
    /// Notified when a newer connection of the same instance took over.
    kick: Arc<Notify>,
    /// This connection is the instance's live one in `ctx.live`.
    registered: bool,
    /// Newest desired version handed to the session.
    pushed: Option<u64>,
    closed: Option<CloseReason>,
}

/// A future that never resolves when `deadline` is `None`.
async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}

impl Conn {
    /// Runs until the session is closed; returns the read half for the linger.
    async fn run<R: AsyncRead>(
        &mut self,
        mut rd: ReadHalf<R>,
        mut writer: Writer,
        mut changes: watch::Receiver<u64>,
        mut shutdown: watch::Receiver<bool>,
    ) -> (ReadHalf<R>, Option<Writer>) {
        let mut decoder = Decoder::<AgentMsg>::with_max(self.ctx.opts.max_frame);
        let mut buf = vec![0u8; 8 * 1024];
        let mut watching = true;
        let mut writer_done = false;
        let kick = self.kick.clone();
        while self.closed.is_none() {
            let deadline = self.session.next_timeout();
            tokio::select! {
                () = shutdown_requested(&mut shutdown) => {
                    let outs = self.session.close("gateway shutting down", Instant::now());
                    self.handle(outs);
                }
                () = kick.notified() => {
                    let outs = self
                        .session
                        .close("replaced by a newer connection of this instance", Instant::now());
                    self.handle(outs);
                }
                r = changes.changed(), if watching => match r {
                    Ok(()) => {
                        changes.borrow_and_update();
                        self.on_change().await;
                    }
                    Err(_) => {
                        warn!(instance = %self.id, "control: store change notifications ended");
                        watching = false;
                    }
                },
                r = rd.read(&mut buf) => {
                    let now = Instant::now();
                    match r {
                        Ok(0) => {
                            let outs = self.session.on_disconnected("connection closed by the agent", now);
                            self.handle(outs);
                        }
                        Ok(n) => {
                            decoder.push(buf.get(..n).unwrap_or_default());
                            self.drain_decoder(&mut decoder, now);
                        }
                        Err(e) => {
                            let outs = self.session.on_disconnected(format!("read failed: {e}"), now);
                            self.handle(outs);
                        }
                    }
                }
                () = sleep_until_opt(deadline) => {
                    let outs = self.session.on_tick(Instant::now());
                    self.handle(outs);
                }
                r = &mut writer, if !writer_done => {
                    writer_done = true;
                    self.tx = None;
                    let reason = match r {
                        Ok(Ok(())) => "writer ended".to_string(),
                        Ok(Err(e)) => e.to_string(),
                        Err(e) => format!("writer task failed: {e}"),
                    };
                    let outs = self.session.on_disconnected(reason, Instant::now());
                    self.handle(outs);
                }
            }
        }
        (rd, (!writer_done).then_some(writer))
    }

    fn drain_decoder(&mut self, decoder: &mut Decoder<AgentMsg>, now: Instant) {
        while self.closed.is_none() {
            let before = decoder.buffered();
            match decoder.next() {
                Ok(Some(msg)) => {
                    // The frame (prefix + payload) is what the decoder consumed.
                    let bytes = before.saturating_sub(decoder.buffered());
                    self.ctx
                        .store
                        .transport(TransportEvent::FrameReceived { bytes });
                    let outs = self.session.on_message(msg, now);
                    self.handle(outs);
                }
                Ok(None) => break,
                Err(e) => {
                    let outs = self.session.on_frame_error(e, now);
                    self.handle(outs);
                }
            }
        }
    }

    /// A change notification: revocation first, then the desired state.
    /// The store work (SQLite, config building) runs on the blocking pool:
    /// a change reaches every session at once, and the async workers must
    /// keep serving reads and heartbeats meanwhile, or busy sessions would
    /// be declared dead.
    async fn on_change(&mut self) {
        if self.session.state() == GatewayState::Closed {
            return;
        }
        let (store, id) = (Arc::clone(&self.ctx.store), self.id.clone());
        let established = self.session.state() == GatewayState::Established;
        let looked_up = tokio::task::spawn_blocking(move || {
            let revoked = store.is_revoked(&id);
            let desired = (!revoked && established).then(|| store.desired(&id));
            (revoked, desired)
        })
        .await;
        let Ok((revoked, desired)) = looked_up else {
            warn!(instance = %self.id, "control: desired-state lookup failed");
            return;
        };
        if revoked {
            let outs = self.session.close("certificate revoked", Instant::now());
            self.handle(outs);
            return;
        }
        let Some(desired) = desired else {
            return;
        };
        if self.session.state() != GatewayState::Established {
            return;
        }
        match desired {
            Ok((version, config)) => {
                if self.pushed.is_none_or(|p| version > p) {
                    self.pushed = Some(version);
                    let outs = self.session.push(version, config);
                    self.handle(outs);
                }
            }
            Err(e) => {
                warn!(instance = %self.id, error = %e, "control: cannot read desired state");
            }
        }
    }

    /// Acts on session outputs in order (accepting a Hello adds more).
    fn handle(&mut self, outs: Vec<GatewayOut>) {
        let mut queue: VecDeque<GatewayOut> = outs.into();
        while let Some(out) = queue.pop_front() {
            match out {
                GatewayOut::Send(msg) => {
                    if let Err(e) = self.send(&msg) {
                        queue.extend(self.session.on_disconnected(e.to_string(), Instant::now()));
                    }
                }
                GatewayOut::Health(report) => {
                    debug!(instance = %self.id, verdicts = report.verdicts.len(), full = report.full, "control: health report");
                    self.ctx.store.health(&self.id, report);
                }
                GatewayOut::Hello {
                    instance,
                    agent_version,
                    applied_version,
                    protocol_version,
                } => {
                    let now = Instant::now();
                    match self.ctx.store.hello(&self.id, &instance) {
                        Ok((tep_id, version, config)) => {
                            self.pushed = Some(version);
                            queue.extend(self.session.accept(tep_id, version, config, now));
                            if self.session.state() == GatewayState::Established {
                                self.register();
                                info!(
                                    instance = %self.id,
                                    peer = %self.peer,
                                    protocol_version,
                                    %agent_version,
                                    ?applied_version,
                                    version,
                                    "control: session established"
                                );
                                self.ctx.store.report(
                                    &self.id,
                                    SessionEvent::Connected {
                                        peer: self.peer,
                                        protocol_version,
                                        agent_version,
                                        applied_version,
                                    },
                                );
                            }
                        }
                        Err(reason) => {
                            warn!(instance = %self.id, %reason, "control: Hello refused by the store");
                            queue.extend(self.session.refuse(reason.to_string(), now));
                        }
                    }
                }
                GatewayOut::Acked { version } => {
                    debug!(instance = %self.id, version, "control: acked");
                    self.ctx
                        .store
                        .report(&self.id, SessionEvent::Acked(version));
                }
                GatewayOut::Nacked {
                    version,
                    reason,
                    resync,
                } => {
                    warn!(instance = %self.id, version, %reason, resync, "control: nacked");
                    self.ctx.store.report(
                        &self.id,
                        SessionEvent::Nacked {
                            version,
                            reason,
                            resync,
                        },
                    );
                }
                GatewayOut::Status(report) => {
                    self.ctx
                        .store
                        .report(&self.id, SessionEvent::Status(report));
                }
                GatewayOut::Close { reason } => {
                    if self.closed.is_none() {
                        self.closed = Some(reason);
                    }
                }
            }
        }
    }

    /// Queues one frame for the writer.
    fn send(&mut self, msg: &control::GatewayMsg) -> Result<(), SendError> {
        let frame = encode_frame(msg, &self.id)?;
        let Some(tx) = &self.tx else {
            return Err(SendError::WriterGone);
        };
        match tx.try_send(frame) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.tx = None;
                Err(SendError::QueueFull)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.tx = None;
                Err(SendError::WriterGone)
            }
        }
    }

    /// Makes this the instance's live connection, closing an older one.
    fn register(&mut self) {
        let old = self
            .ctx
            .live()
            .insert(self.id.clone(), (self.conn_id, self.kick.clone()));
        self.registered = true;
        if let Some((old_id, old_kick)) = old
            && old_id != self.conn_id
        {
            info!(instance = %self.id, "control: a newer connection replaces the existing session");
            old_kick.notify_one();
        }
    }

    /// Logs and reports the close, flushes the last frames, lingers briefly
    /// so the agent can read them, then drops the connection.
    async fn finish<R: AsyncRead>(mut self, (mut rd, writer): (ReadHalf<R>, Option<Writer>)) {
        let reason = self
            .closed
            .take()
            .unwrap_or_else(|| CloseReason::Local("connection task ended".into()));
        match &reason {
            CloseReason::Transport(_) | CloseReason::Local(_) => {
                info!(instance = %self.id, peer = %self.peer, %reason, "control: session closed");
            }
            _ => warn!(instance = %self.id, peer = %self.peer, %reason, "control: session closed"),
        }
        if self.registered {
            let mut live = self.ctx.live();
            let current = live.get(&self.id).is_some_and(|(c, _)| *c == self.conn_id);
            if current {
                live.remove(&self.id);
            }
            drop(live);
            if current {
                self.ctx.store.report(
                    &self.id,
                    SessionEvent::Disconnected {
                        reason: reason.to_string(),
                    },
                );
            }
        }
        // Closing the queue makes the writer flush and send close_notify.
        self.tx = None;
        let Some(mut writer) = writer else {
            return;
        };
        let linger = self.ctx.opts.linger;
        let flushed = tokio::time::timeout(linger, async {
            if let Ok(Err(e)) = (&mut writer).await {
                debug!(instance = %self.id, error = %e, "control: final flush failed");
            }
            let mut sink = [0u8; 1024];
            while matches!(rd.read(&mut sink).await, Ok(n) if n > 0) {}
        })
        .await;
        if flushed.is_err() {
            writer.abort();
        }
    }
}

/// One frame for `instance`, or why not (a summary of the message, never
/// the message).
fn encode_frame(msg: &control::GatewayMsg, instance: &str) -> Result<Vec<u8>, SendError> {
    encode(msg).map_err(|source| SendError::Encode {
        summary: msg.summary(),
        instance: instance.to_string(),
        source,
    })
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use control::firewall::{AddrSet, FirewallConfig};
    use control::{GatewayMsg, MAX_FRAME};

    use super::*;

    /// Issue 13: the error of a message over the frame limit says what it
    /// was (type, version, scale, instance) and how large, in a few hundred
    /// bytes: it is logged and stored as `last_error` on every failed
    /// session, and used to carry the whole message (5 MB a line).
    #[test]
    fn encode_error_of_a_huge_message_stays_short() {
        let addrs = (0..400_000u32)
            .map(|i| ipnet::IpNet::from(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | i))))
            .collect();
        let msg = GatewayMsg::Snapshot {
            version: 7,
            config: Some(InstanceConfig {
                version: 7,
                tep_id: 3,
                firewall: Some(FirewallConfig {
                    addrsets: vec![AddrSet {
                        name: "ipset-big".into(),
                        addrs,
                    }],
                    ..FirewallConfig::allow_all()
                }),
                ..InstanceConfig::default()
            }),
        };
        let Err(e) = encode_frame(&msg, "i-0abc") else {
            panic!("a 6 MB message must not fit a frame");
        };
        let text = e.to_string();
        assert!(text.len() < 512, "{} bytes: {:.600}", text.len(), text);
        for want in [
            "Snapshot of version 7",
            "400000 addresses",
            "instance i-0abc",
            &format!("exceeds the limit of {MAX_FRAME} bytes"),
        ] {
            assert!(text.contains(want), "{want:?} missing in {text}");
        }
    }
}
