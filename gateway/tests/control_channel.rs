//! The control channel over real TLS 1.3 on 127.0.0.1: a throwaway root CA,
//! a server certificate for `nsx-gw.test`, client certificates whose CN is
//! the instance id, an in-memory [`ControlStore`], and clients that either
//! drive a real [`control::AgentSession`] or write raw frames.
//!
//! Heartbeats run at 100 ms so dead-peer detection is quick; the whole file
//! runs in a few seconds.

#![allow(clippy::unwrap_used)] // test fixtures; a failure is a test failure

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use control::{
    AgentMsg, AgentOut, AgentSession, AgentSessionConfig, CloseReason, Decoder, GatewayConfig,
    GatewayMsg, InstanceConfig, InstanceMeta, LocalPort, LogicalSwitch, MacAddr, encode,
};
use gateway::control_server::{
    self, ControlStore, HandshakeFailure, ServerOptions, SessionEvent, StoreRefusal, TransportEvent,
};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

const HB_MS: u64 = 100;
const SERVER_NAME: &str = "nsx-gw.test";

type ClientTls = tokio_rustls::client::TlsStream<TcpStream>;

fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(tracing_subscriber::EnvFilter::new("gateway=debug"))
        .try_init();
}

// ---------------------------------------------------------------------------
// PKI
// ---------------------------------------------------------------------------

struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

struct Leaf {
    cert_pem: String,
    key_pem: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    fn leaf(&self, cn: &str, sans: &[&str], eku: ExtendedKeyUsagePurpose) -> Leaf {
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(sans).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![eku];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    fn client(&self, instance_id: &str) -> Leaf {
        self.leaf(instance_id, &[], ExtendedKeyUsagePurpose::ClientAuth)
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca_pem: &str) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    roots
}

/// What an agent uses: trust the installed root CA only, present its cert.
fn client_tls(ca_pem: &str, leaf: &Leaf) -> Arc<rustls::ClientConfig> {
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
    let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots(ca_pem))
        .with_client_auth_cert(chain, key)
        .unwrap();
    Arc::new(cfg)
}

fn client_tls_without_cert(ca_pem: &str) -> Arc<rustls::ClientConfig> {
    let cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots(ca_pem))
        .with_no_client_auth();
    Arc::new(cfg)
}

async fn dial(addr: SocketAddr, cfg: Arc<rustls::ClientConfig>) -> std::io::Result<ClientTls> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from(SERVER_NAME).unwrap();
    tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await
}

// ---------------------------------------------------------------------------
// In-memory store
// ---------------------------------------------------------------------------

#[derive(Default)]
struct Inner {
    /// id -> (tep_id, version, config)
    instances: HashMap<String, (u32, u64, Option<InstanceConfig>)>,
    revoked: HashSet<String>,
    metas: HashMap<String, InstanceMeta>,
    events: Vec<(String, SessionEvent)>,
    /// What [`ControlStore::transport`] reported.
    transport: Transport,
}

/// Totals of the transport events.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Transport {
    handshake_timeouts: u64,
    handshake_errors: u64,
    frames_received: u64,
    bytes_received: usize,
    bytes_sent: usize,
}

struct MemStore {
    inner: Mutex<Inner>,
    changes: watch::Sender<u64>,
}

impl MemStore {
    fn new() -> Arc<MemStore> {
        Arc::new(MemStore {
            inner: Mutex::new(Inner::default()),
            changes: watch::channel(0).0,
        })
    }

    fn bump(&self) {
        self.changes.send_modify(|v| *v += 1);
    }

    fn enroll(&self, id: &str, tep_id: u32, config: Option<InstanceConfig>) {
        self.inner
            .lock()
            .unwrap()
            .instances
            .insert(id.into(), (tep_id, 1, config));
    }

    fn set_desired(&self, id: &str, version: u64, config: Option<InstanceConfig>) {
        if let Some(e) = self.inner.lock().unwrap().instances.get_mut(id) {
            e.1 = version;
            e.2 = config;
        }
        self.bump();
    }

    fn revoke(&self, id: &str) {
        self.inner.lock().unwrap().revoked.insert(id.into());
        self.bump();
    }

    fn events(&self, id: &str) -> Vec<SessionEvent> {
        self.inner
            .lock()
            .unwrap()
            .events
            .iter()
            .filter(|(i, _)| i == id)
            .map(|(_, e)| e.clone())
            .collect()
    }

    fn transport(&self) -> Transport {
        self.inner.lock().unwrap().transport.clone()
    }

    /// Polls until the transport totals match `pred`; returns them.
    async fn wait_transport(
        &self,
        within: Duration,
        pred: impl Fn(&Transport) -> bool,
    ) -> Transport {
        let deadline = Instant::now() + within;
        loop {
            let t = self.transport();
            if pred(&t) || Instant::now() >= deadline {
                return t;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Polls until some event of `id` matches `pred`.
    async fn wait_event(
        &self,
        id: &str,
        within: Duration,
        pred: impl Fn(&SessionEvent) -> bool,
    ) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if self.events(id).iter().any(&pred) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl ControlStore for MemStore {
    fn authorize(&self, cert_der: &[u8]) -> Result<String, StoreRefusal> {
        let cn = control_server::certificate_common_name(cert_der)?;
        let inner = self.inner.lock().unwrap();
        if inner.revoked.contains(&cn) {
            return Err(StoreRefusal::Revoked);
        }
        if !inner.instances.contains_key(&cn) {
            return Err(StoreRefusal::UnknownInstance(cn));
        }
        Ok(cn)
    }

    fn hello(
        &self,
        instance_id: &str,
        meta: &InstanceMeta,
    ) -> Result<(u32, u64, Option<InstanceConfig>), StoreRefusal> {
        let mut inner = self.inner.lock().unwrap();
        inner.metas.insert(instance_id.into(), meta.clone());
        inner
            .instances
            .get(instance_id)
            .cloned()
            .ok_or_else(|| StoreRefusal::UnknownInstance(instance_id.into()))
    }

    fn desired(&self, instance_id: &str) -> Result<(u64, Option<InstanceConfig>), StoreRefusal> {
        let inner = self.inner.lock().unwrap();
        let (_, v, c) = inner
            .instances
            .get(instance_id)
            .ok_or_else(|| StoreRefusal::UnknownInstance(instance_id.into()))?;
        Ok((*v, c.clone()))
    }

    fn report(&self, instance_id: &str, event: SessionEvent) {
        self.inner
            .lock()
            .unwrap()
            .events
            .push((instance_id.into(), event));
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn is_revoked(&self, instance_id: &str) -> bool {
        self.inner.lock().unwrap().revoked.contains(instance_id)
    }

    fn transport(&self, event: TransportEvent) {
        let t = &mut self.inner.lock().unwrap().transport;
        match event {
            TransportEvent::HandshakeFailed(HandshakeFailure::Timeout) => t.handshake_timeouts += 1,
            TransportEvent::HandshakeFailed(HandshakeFailure::Error) => t.handshake_errors += 1,
            TransportEvent::FrameReceived { bytes } => {
                t.frames_received += 1;
                t.bytes_received += bytes;
            }
            TransportEvent::FramesSent { bytes } => t.bytes_sent += bytes,
            TransportEvent::Accept(_) => {}
        }
    }
}

/// A config that passes `control::validate`.
fn config(tep_id: u32, host: u8) -> Option<InstanceConfig> {
    Some(InstanceConfig {
        tep_id,
        switches: vec![LogicalSwitch {
            name: "web".into(),
            vni: 5001,
            subnet: "10.1.0.0/24".parse().unwrap(),
            gateway_ip: Ipv4Addr::new(10, 1, 0, 1),
            dhcp: None,
        }],
        port: Some(LocalPort {
            switch: "web".into(),
            ip: Ipv4Addr::new(10, 1, 0, host),
            mac: None,
        }),
        ..InstanceConfig::default()
    })
}

fn meta(id: &str) -> InstanceMeta {
    InstanceMeta {
        instance_id: id.into(),
        hostname: format!("{id}-host"),
        os: "linux".into(),
        image_id: "ami-1".into(),
        tags: BTreeMap::from([("nsx:network".into(), "web".into())]),
        underlay_ip: Ipv4Addr::new(10, 0, 0, 11),
        nic_mac: MacAddr([2, 0x50, 0x56, 0, 0, 1]),
    }
}

fn hello(id: &str, versions: Vec<u32>) -> AgentMsg {
    AgentMsg::Hello {
        versions,
        agent_version: "test".into(),
        instance: meta(id),
        applied_version: None,
    }
}

// ---------------------------------------------------------------------------
// Gateway under test
// ---------------------------------------------------------------------------

struct Harness {
    addr: SocketAddr,
    ca: Ca,
    store: Arc<MemStore>,
    shutdown: watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
}

async fn start() -> Harness {
    start_with(Duration::from_secs(2)).await
}

/// A gateway whose TLS and Hello deadlines are `handshake_timeout`.
async fn start_with(handshake_timeout: Duration) -> Harness {
    init_logs();
    let ca = Ca::new("nsx test root");
    let srv = ca.leaf(
        "nsx-gw.test",
        &[SERVER_NAME],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let tls = control_server::server_tls(
        ca.pem.as_bytes(),
        srv.cert_pem.as_bytes(),
        srv.key_pem.as_bytes(),
    )
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let store = MemStore::new();
    let (shutdown, shutdown_rx) = watch::channel(false);
    let opts = ServerOptions {
        session: GatewayConfig {
            heartbeat_ms: HB_MS,
            handshake_timeout,
            ..GatewayConfig::default()
        },
        tls_handshake_timeout: handshake_timeout,
        linger: Duration::from_millis(500),
        shutdown_grace: Duration::from_secs(2),
        ..ServerOptions::default()
    };
    let server = tokio::spawn(control_server::serve_with(
        listener,
        Arc::new(tls),
        store.clone(),
        shutdown_rx,
        opts,
    ));
    Harness {
        addr,
        ca,
        store,
        shutdown,
        server,
    }
}

impl Harness {
    fn tls_for(&self, id: &str) -> Arc<rustls::ClientConfig> {
        client_tls(&self.ca.pem, &self.ca.client(id))
    }

    async fn raw(&self, id: &str) -> Raw {
        Raw::new(dial(self.addr, self.tls_for(id)).await.unwrap())
    }

    async fn agent(&self, id: &str) -> Agent {
        Agent::spawn(dial(self.addr, self.tls_for(id)).await.unwrap(), id)
    }
}

// ---------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------

/// A client writing and reading raw frames.
struct Raw {
    s: ClientTls,
    dec: Decoder<GatewayMsg>,
}

impl Raw {
    fn new(s: ClientTls) -> Raw {
        Raw {
            s,
            dec: Decoder::new(),
        }
    }

    async fn send(&mut self, m: &AgentMsg) {
        self.send_bytes(&encode(m).unwrap()).await;
    }

    async fn send_bytes(&mut self, b: &[u8]) {
        self.s.write_all(b).await.unwrap();
        self.s.flush().await.unwrap();
    }

    /// The next message; `Ok(None)` on EOF, `Err` on a TLS/IO/frame error.
    /// Panics if nothing happens within `within`.
    async fn recv(&mut self, within: Duration) -> Result<Option<GatewayMsg>, String> {
        let deadline = tokio::time::Instant::now() + within;
        let mut buf = [0u8; 4096];
        loop {
            if let Some(m) = self.dec.next().map_err(|e| e.to_string())? {
                return Ok(Some(m));
            }
            let r = tokio::time::timeout_at(deadline, self.s.read(&mut buf))
                .await
                .expect("gateway said nothing in time");
            match r {
                Ok(0) => return Ok(None),
                Ok(n) => self.dec.push(&buf[..n]),
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    /// Reads until the gateway closes; returns the Reject reason, if any.
    async fn expect_reject_and_close(&mut self) -> String {
        let mut reason = None;
        loop {
            match self.recv(Duration::from_secs(1)).await {
                Ok(Some(GatewayMsg::Reject { reason: r })) => reason = Some(r),
                Ok(Some(GatewayMsg::Heartbeat { .. })) => {}
                Ok(Some(other)) => panic!("unexpected {other:?}"),
                Ok(None) | Err(_) => break,
            }
        }
        reason.expect("no Reject before close")
    }

    /// Hello -> Welcome + Snapshot -> Ack.
    async fn establish(&mut self, id: &str) -> (u32, u64) {
        self.send(&hello(id, vec![1])).await;
        let tep = match self.recv(Duration::from_secs(1)).await {
            Ok(Some(GatewayMsg::Welcome {
                version,
                instance_id,
                tep_id,
                heartbeat_ms,
            })) => {
                assert_eq!(
                    (version, instance_id.as_str(), heartbeat_ms),
                    (1, id, HB_MS)
                );
                tep_id
            }
            other => panic!("expected Welcome, got {other:?}"),
        };
        let version = match self.recv(Duration::from_secs(1)).await {
            Ok(Some(GatewayMsg::Snapshot { version, .. })) => version,
            other => panic!("expected Snapshot, got {other:?}"),
        };
        self.send(&AgentMsg::Ack { version }).await;
        (tep, version)
    }
}

#[derive(Debug)]
enum AgentEvent {
    Established { tep_id: u32 },
    Applied(u64, Option<Box<InstanceConfig>>),
    Closed(CloseReason),
}

/// A client driving a real `AgentSession` (applies every config at once).
struct Agent {
    events: mpsc::UnboundedReceiver<AgentEvent>,
    task: tokio::task::JoinHandle<()>,
}

impl Agent {
    fn spawn(stream: ClientTls, id: &str) -> Agent {
        let (tx, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(run_agent(stream, meta(id), tx));
        Agent { events, task }
    }

    async fn next(&mut self, within: Duration) -> AgentEvent {
        tokio::time::timeout(within, self.events.recv())
            .await
            .expect("no agent event in time")
            .expect("agent task ended")
    }

    /// Established, then the first snapshot applied; returns its version.
    async fn established(&mut self) -> (u32, u64) {
        let tep = match self.next(Duration::from_secs(2)).await {
            AgentEvent::Established { tep_id } => tep_id,
            other => panic!("expected Established, got {other:?}"),
        };
        match self.next(Duration::from_secs(2)).await {
            AgentEvent::Applied(v, _) => (tep, v),
            other => panic!("expected Applied, got {other:?}"),
        }
    }

    /// Asserts nothing happens for `d`.
    async fn quiet_for(&mut self, d: Duration) {
        if let Ok(ev) = tokio::time::timeout(d, self.events.recv()).await {
            panic!("unexpected agent event {ev:?}");
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run_agent(
    stream: ClientTls,
    meta: InstanceMeta,
    events: mpsc::UnboundedSender<AgentEvent>,
) {
    let cfg = AgentSessionConfig::new(format!("{SERVER_NAME}:5555"), "test", meta);
    let mut s = AgentSession::new(cfg, None, Instant::now());
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut dec = Decoder::<GatewayMsg>::new();
    let mut buf = vec![0u8; 16 * 1024];
    let mut outs: VecDeque<AgentOut> = s.on_connected(Instant::now()).into();
    loop {
        while let Some(out) = outs.pop_front() {
            match out {
                AgentOut::Send(m) => {
                    let frame = encode(&m).unwrap();
                    let ok = wr.write_all(&frame).await.is_ok() && wr.flush().await.is_ok();
                    if !ok {
                        outs.extend(s.on_disconnected("write failed", Instant::now()));
                    }
                }
                AgentOut::Apply { version, config } => {
                    let _ = events.send(AgentEvent::Applied(version, config.map(Box::new)));
                    outs.extend(s.applied(version, Ok(())));
                }
                AgentOut::Established { tep_id, .. } => {
                    let _ = events.send(AgentEvent::Established { tep_id });
                }
                AgentOut::Close { reason } => {
                    let _ = events.send(AgentEvent::Closed(reason));
                    return;
                }
            }
        }
        let deadline = s.next_timeout();
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = rd.read(&mut buf) => {
                let now = Instant::now();
                match r {
                    Ok(0) => outs.extend(s.on_disconnected("EOF", now)),
                    Ok(n) => {
                        dec.push(&buf[..n]);
                        loop {
                            match dec.next() {
                                Ok(Some(m)) => outs.extend(s.on_message(m, now)),
                                Ok(None) => break,
                                Err(e) => {
                                    outs.extend(s.on_frame_error(e, now));
                                    break;
                                }
                            }
                        }
                    }
                    Err(e) => outs.extend(s.on_disconnected(e.to_string(), now)),
                }
            }
            () = sleep => outs.extend(s.on_tick(Instant::now())),
        }
    }
}

const SECOND: Duration = Duration::from_secs(1);

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

/// (1) Hello -> Welcome + Snapshot; the ack is recorded; metadata is stored.
#[tokio::test]
async fn hello_gets_welcome_and_snapshot_and_ack_is_recorded() {
    let h = start().await;
    h.store.enroll("i-1", 7, config(7, 10));

    let mut raw = h.raw("i-1").await;
    let (tep, version) = raw.establish("i-1").await;
    assert_eq!((tep, version), (7, 1));
    assert!(
        h.store
            .wait_event("i-1", SECOND, |e| *e == SessionEvent::Acked(1))
            .await
    );
    let events = h.store.events("i-1");
    assert!(
        matches!(&events[0], SessionEvent::Connected { protocol_version: 1, agent_version, applied_version: None, .. } if agent_version == "test"),
        "{events:?}"
    );
    let stored = h.store.inner.lock().unwrap().metas.get("i-1").cloned();
    assert_eq!(stored, Some(meta("i-1")));

    // The same through a real AgentSession (a second instance).
    h.store.enroll("i-2", 8, None);
    let mut agent = h.agent("i-2").await;
    let (tep, v) = agent.established().await;
    assert_eq!((tep, v), (8, 1));
    assert!(
        h.store
            .wait_event("i-2", SECOND, |e| *e == SessionEvent::Acked(1))
            .await
    );
}

/// (2) A desired-state change reaches the affected agent as an Update and
/// is acked within 1 s; unaffected agents hear nothing.
#[tokio::test]
async fn desired_change_is_pushed_and_acked_within_1s() {
    let h = start().await;
    h.store.enroll("i-1", 7, config(7, 10));
    h.store.enroll("i-2", 8, config(8, 11));
    let mut a1 = h.agent("i-1").await;
    let mut a2 = h.agent("i-2").await;
    a1.established().await;
    a2.established().await;
    assert!(
        h.store
            .wait_event("i-2", SECOND, |e| *e == SessionEvent::Acked(1))
            .await
    );

    let t0 = Instant::now();
    h.store.set_desired("i-1", 2, config(7, 20));
    match a1.next(SECOND).await {
        AgentEvent::Applied(2, Some(c)) => {
            assert_eq!(c.version, 2);
            assert_eq!(c.port.map(|p| p.ip), Some(Ipv4Addr::new(10, 1, 0, 20)));
        }
        other => panic!("expected Applied(2), got {other:?}"),
    }
    assert!(
        h.store
            .wait_event("i-1", SECOND, |e| *e == SessionEvent::Acked(2))
            .await
    );
    let took = t0.elapsed();
    println!("change -> ack in {} ms", took.as_millis());
    assert!(took < SECOND, "took {took:?}");

    // Retag to micro-segmentation: config None.
    h.store.set_desired("i-1", 3, None);
    assert!(matches!(
        a1.next(SECOND).await,
        AgentEvent::Applied(3, None)
    ));
    assert!(
        h.store
            .wait_event("i-1", SECOND, |e| *e == SessionEvent::Acked(3))
            .await
    );

    // i-2's desired version never changed: nothing sent to it (heartbeats aside).
    a2.quiet_for(Duration::from_millis(300)).await;
    assert!(!h.store.events("i-2").contains(&SessionEvent::Acked(2)));
}

/// (3) Revocation closes the session within 1 s; reconnects are refused.
#[tokio::test]
async fn revoke_closes_within_1s_and_reconnect_is_refused() {
    let h = start().await;
    h.store.enroll("i-1", 7, config(7, 10));
    h.store.enroll("i-2", 8, config(8, 11));
    let mut a1 = h.agent("i-1").await;
    let mut a2 = h.agent("i-2").await;
    a1.established().await;
    a2.established().await;

    let t0 = Instant::now();
    h.store.revoke("i-1");
    match a1.next(SECOND).await {
        AgentEvent::Closed(CloseReason::Rejected(r)) => assert_eq!(r, "certificate revoked"),
        other => panic!("expected a Reject, got {other:?}"),
    }
    let took = t0.elapsed();
    println!("revoke -> session closed in {} ms", took.as_millis());
    assert!(took < SECOND, "took {took:?}");
    assert!(
        h.store
            .wait_event("i-1", SECOND, |e| matches!(e, SessionEvent::Disconnected { reason } if reason.contains("certificate revoked")))
            .await
    );

    // Reconnect: the TLS handshake succeeds (the chain is valid), the
    // certificate is refused, with the reason.
    let mut raw = h.raw("i-1").await;
    assert_eq!(raw.expect_reject_and_close().await, "certificate revoked");

    // The other instance is unaffected.
    h.store.set_desired("i-2", 2, config(8, 12));
    assert!(matches!(a2.next(SECOND).await, AgentEvent::Applied(2, _)));
}

/// (4) Certificates from another CA, no client certificate, plaintext
/// garbage: refused during the handshake. An agent trusting another CA
/// refuses this gateway.
#[tokio::test]
async fn foreign_ca_and_missing_client_cert_are_refused() {
    let h = start().await;
    h.store.enroll("i-1", 7, config(7, 10));
    let rogue = Ca::new("rogue root");

    // Client certificate (for an enrolled id!) from another CA.
    let cfg = client_tls(&h.ca.pem, &rogue.client("i-1"));
    assert_refused(h.addr, cfg, "i-1").await;

    // No client certificate.
    assert_refused(h.addr, client_tls_without_cert(&h.ca.pem), "i-1").await;

    // Plaintext garbage instead of a ClientHello.
    let mut tcp = TcpStream::connect(h.addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 1024];
    let closed = tokio::time::timeout(SECOND, async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "plaintext connection not closed");

    // The agent side: a gateway that does not chain to the agent's root CA.
    let cfg = client_tls(&rogue.pem, &h.ca.client("i-1"));
    let err = dial(h.addr, cfg).await.expect_err("rogue gateway accepted");
    assert!(err.to_string().contains("certificate"), "{err}");

    // None of that reached the store; a good client still works.
    assert!(h.store.events("i-1").is_empty());
    let mut agent = h.agent("i-1").await;
    agent.established().await;
}

/// In TLS 1.3 the client finishes first; the refusal shows on the first read.
async fn assert_refused(addr: SocketAddr, cfg: Arc<rustls::ClientConfig>, id: &str) {
    let s = match dial(addr, cfg).await {
        Ok(s) => s,
        Err(_) => return,
    };
    let mut raw = Raw::new(s);
    let _ = raw.s.write_all(&encode(&hello(id, vec![1])).unwrap()).await;
    let _ = raw.s.flush().await;
    match raw.recv(SECOND).await {
        Ok(Some(m)) => panic!("refused client got {m:?}"),
        Ok(None) => {}
        Err(e) => println!("refused as expected: {e}"),
    }
}

/// (5) Garbage, oversized frames and wrong protocol versions: that
/// connection gets a Reject with the reason and is closed; another agent
/// keeps working throughout.
#[tokio::test]
async fn bad_frames_close_only_that_connection() {
    let h = start().await;
    h.store.enroll("i-good", 7, config(7, 10));
    h.store.enroll("i-bad", 9, config(9, 30));
    let mut good = h.agent("i-good").await;
    good.established().await;

    let mut framed_garbage = 5u32.to_be_bytes().to_vec();
    framed_garbage.extend_from_slice(b"hello");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("framed garbage", framed_garbage, "not valid JSON"),
        (
            "oversized length prefix",
            vec![0xff, 0xff, 0xff, 0xff],
            "exceeds the limit",
        ),
        (
            "unframed garbage",
            b"\x16\x03\x01\x02\x00 definitely not a frame".to_vec(),
            "exceeds the limit",
        ),
        (
            "unknown type",
            encode_json(br#"{"type":"Bogus"}"#),
            "unknown message type",
        ),
        (
            "wrong protocol version",
            encode(&hello("i-bad", vec![99])).unwrap(),
            "no common protocol version",
        ),
        (
            "Hello for another instance",
            encode(&hello("i-good", vec![1])).unwrap(),
            "certificate is for",
        ),
    ];
    for (what, bytes, expect) in cases {
        let mut raw = h.raw("i-bad").await;
        raw.send_bytes(&bytes).await;
        let reason = raw.expect_reject_and_close().await;
        println!("{what}: rejected with {reason:?}");
        assert!(reason.contains(expect), "{what}: {reason}");
    }

    // A bad frame after the session is established closes it too.
    let mut raw = h.raw("i-bad").await;
    raw.establish("i-bad").await;
    raw.send_bytes(&[0, 0, 0, 2, b'{', b'}']).await;
    let reason = raw.expect_reject_and_close().await;
    assert!(reason.contains("no \"type\" field"), "{reason}");

    // The good agent never noticed, and still gets and acks updates.
    h.store.set_desired("i-good", 2, config(7, 11));
    match good.next(SECOND).await {
        AgentEvent::Applied(2, _) => {}
        other => panic!("good agent: {other:?}"),
    }
    assert!(
        h.store
            .wait_event("i-good", SECOND, |e| *e == SessionEvent::Acked(2))
            .await
    );
    assert!(
        !h.store
            .events("i-good")
            .iter()
            .any(|e| matches!(e, SessionEvent::Disconnected { .. }))
    );
}

fn encode_json(payload: &[u8]) -> Vec<u8> {
    let mut v = u32::try_from(payload.len()).unwrap().to_be_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

/// (6) Heartbeats: the gateway sends them every interval; a client that
/// goes silent is declared dead after 3 intervals; a live one stays.
#[tokio::test]
async fn silent_client_is_dead_after_3_heartbeat_intervals() {
    let h = start().await;
    h.store.enroll("i-silent", 7, config(7, 10));
    h.store.enroll("i-live", 8, config(8, 11));
    let mut live = h.agent("i-live").await;
    live.established().await;

    let mut raw = h.raw("i-silent").await;
    raw.establish("i-silent").await;
    let t0 = Instant::now();
    let mut heartbeats = 0;
    let end = loop {
        match raw.recv(Duration::from_secs(2)).await {
            Ok(Some(GatewayMsg::Heartbeat { .. })) => heartbeats += 1,
            Ok(Some(m)) => panic!("unexpected {m:?}"),
            Ok(None) => break "EOF".to_string(),
            Err(e) => break e,
        }
    };
    let silent = t0.elapsed();
    println!(
        "silent client closed ({end}) after {} ms, {heartbeats} heartbeats",
        silent.as_millis()
    );
    let dead_after = Duration::from_millis(3 * HB_MS);
    assert!(
        silent >= dead_after - Duration::from_millis(20),
        "{silent:?}"
    );
    assert!(
        silent < dead_after + Duration::from_millis(400),
        "{silent:?}"
    );
    assert!(heartbeats >= 2, "{heartbeats} heartbeats");
    assert!(
        h.store
            .wait_event("i-silent", SECOND, |e| matches!(e, SessionEvent::Disconnected { reason } if reason.contains("peer dead")))
            .await
    );

    // The heartbeating agent outlives many intervals.
    live.quiet_for(Duration::from_millis(6 * HB_MS)).await;
}

/// A second connection of the same instance replaces the first; only the
/// live connection reports Disconnected.
#[tokio::test]
async fn newer_connection_replaces_older() {
    let h = start().await;
    h.store.enroll("i-1", 7, config(7, 10));
    let mut first = h.agent("i-1").await;
    first.established().await;
    let mut second = h.agent("i-1").await;
    second.established().await;
    match first.next(SECOND).await {
        AgentEvent::Closed(CloseReason::Rejected(r)) => assert!(r.contains("replaced"), "{r}"),
        other => panic!("expected a Reject, got {other:?}"),
    }
    second.quiet_for(Duration::from_millis(200)).await;
    let disconnects = |h: &Harness| {
        h.store
            .events("i-1")
            .iter()
            .filter(|e| matches!(e, SessionEvent::Disconnected { .. }))
            .count()
    };
    assert_eq!(disconnects(&h), 0);
    drop(second);
    assert!(
        h.store
            .wait_event("i-1", SECOND, |e| matches!(
                e,
                SessionEvent::Disconnected { .. }
            ))
            .await
    );
    assert_eq!(disconnects(&h), 1);
}

/// Shutdown closes every session with a reason and `serve` returns.
#[tokio::test]
async fn shutdown_closes_sessions() {
    let h = start().await;
    h.store.enroll("i-1", 7, config(7, 10));
    let mut a = h.agent("i-1").await;
    a.established().await;
    h.shutdown.send(true).unwrap();
    match a.next(SECOND).await {
        AgentEvent::Closed(CloseReason::Rejected(r)) => assert_eq!(r, "gateway shutting down"),
        other => panic!("expected a Reject, got {other:?}"),
    }
    tokio::time::timeout(Duration::from_secs(3), h.server)
        .await
        .expect("serve did not return")
        .unwrap();
}

/// Status and Nack from the agent reach the store.
#[tokio::test]
async fn status_and_nack_are_reported() {
    let h = start().await;
    h.store.enroll("i-1", 7, config(7, 10));
    let mut raw = h.raw("i-1").await;
    raw.establish("i-1").await;
    let status = control::StatusReport {
        applied_version: Some(1),
        counters: BTreeMap::from([("rx_packets".to_string(), 42)]),
        last_error: None,
    };
    raw.send(&AgentMsg::Status(status.clone())).await;
    assert!(
        h.store
            .wait_event("i-1", SECOND, |e| *e
                == SessionEvent::Status(status.clone()))
            .await
    );

    h.store.set_desired("i-1", 2, config(7, 20));
    loop {
        match raw.recv(SECOND).await {
            Ok(Some(GatewayMsg::Update {
                from_version: 1,
                version: 2,
                ..
            })) => break,
            Ok(Some(GatewayMsg::Heartbeat { .. })) => {}
            other => panic!("expected Update 1->2, got {other:?}"),
        }
    }
    raw.send(&AgentMsg::Nack {
        version: 2,
        reason: "no room".into(),
        resync: false,
    })
    .await;
    let nacked = SessionEvent::Nacked {
        version: 2,
        reason: "no room".into(),
        resync: false,
    };
    assert!(h.store.wait_event("i-1", SECOND, |e| *e == nacked).await);

    // An Ack for a version that is not in flight is a protocol violation.
    raw.send(&AgentMsg::Ack { version: 9 }).await;
    let reason = raw.expect_reject_and_close().await;
    assert!(reason.contains("Ack for version 9"), "{reason}");
}

/// A TCP connection that never starts TLS, and a TLS connection that never
/// sends Hello, are closed at their deadlines.
#[tokio::test]
async fn idle_connections_time_out() {
    let h = start_with(Duration::from_millis(300)).await;
    h.store.enroll("i-1", 7, config(7, 10));

    let t0 = Instant::now();
    let mut tcp = TcpStream::connect(h.addr).await.unwrap();
    let mut buf = [0u8; 64];
    let r = tokio::time::timeout(SECOND, tcp.read(&mut buf)).await;
    assert!(
        matches!(r, Ok(Ok(0) | Err(_))),
        "idle TCP not closed: {r:?}"
    );
    assert!(
        t0.elapsed() >= Duration::from_millis(280),
        "{:?}",
        t0.elapsed()
    );

    let mut raw = h.raw("i-1").await;
    let reason = raw.expect_reject_and_close().await;
    assert!(reason.contains("handshake not completed"), "{reason}");
}

/// Every frame read is reported with its exact size, every byte written
/// too; failed TLS handshakes are reported as errors or timeouts; a
/// certificate refused after the handshake is not a handshake failure (its
/// Reject is bytes sent).
#[tokio::test]
async fn transport_events_count_frame_bytes_and_handshake_failures() {
    let h = start_with(Duration::from_millis(300)).await;
    h.store.enroll("i-1", 7, config(7, 10));

    // A session: Hello and Ack in, Welcome, Snapshot and heartbeats out.
    let mut raw = h.raw("i-1").await;
    let (_, version) = raw.establish("i-1").await;
    let mut received = 0;
    while let Ok(Some(GatewayMsg::Heartbeat { .. })) = raw.recv(Duration::from_millis(250)).await {
        received += 1;
        if received == 2 {
            break;
        }
    }
    let sent_by_agent = encode(&hello("i-1", vec![1])).unwrap().len()
        + encode(&AgentMsg::Ack { version }).unwrap().len();
    let t = h
        .store
        .wait_transport(SECOND, |t| t.frames_received == 2)
        .await;
    assert_eq!(t.frames_received, 2, "{t:?}");
    assert_eq!(t.bytes_received, sent_by_agent, "{t:?}");
    // Welcome + Snapshot + 2 heartbeats at least, counted once written.
    let t = h.store.wait_transport(SECOND, |t| t.bytes_sent > 100).await;
    assert!(t.bytes_sent > 100, "{t:?}");
    assert_eq!((t.handshake_errors, t.handshake_timeouts), (0, 0), "{t:?}");
    drop(raw);

    // A certificate refused after the handshake: a Reject is sent.
    let before = h.store.transport();
    let mut unknown = h.raw("i-unknown").await;
    let reason = unknown.expect_reject_and_close().await;
    assert!(reason.contains("unknown instance"), "{reason}");
    let reject = encode(&GatewayMsg::Reject { reason }).unwrap().len();
    let t = h
        .store
        .wait_transport(SECOND, |t| t.bytes_sent >= before.bytes_sent + reject)
        .await;
    assert!(t.bytes_sent >= before.bytes_sent + reject, "{t:?}");
    assert_eq!(t.handshake_errors, 0, "{t:?}");

    // Plaintext instead of a ClientHello, a client certificate from another
    // CA: errors.
    let mut tcp = TcpStream::connect(h.addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 256];
    let _ = tokio::time::timeout(SECOND, async {
        while matches!(tcp.read(&mut buf).await, Ok(n) if n > 0) {}
    })
    .await;
    let rogue = Ca::new("rogue root");
    assert_refused(h.addr, client_tls(&h.ca.pem, &rogue.client("i-1")), "i-1").await;
    let t = h
        .store
        .wait_transport(SECOND, |t| t.handshake_errors == 2)
        .await;
    assert_eq!((t.handshake_errors, t.handshake_timeouts), (2, 0), "{t:?}");

    // A TCP connection that never starts TLS: a timeout (300 ms here).
    let _idle = TcpStream::connect(h.addr).await.unwrap();
    let t = h
        .store
        .wait_transport(SECOND, |t| t.handshake_timeouts == 1)
        .await;
    assert_eq!((t.handshake_errors, t.handshake_timeouts), (2, 1), "{t:?}");
}
