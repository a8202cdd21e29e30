//! Shared by the integration tests that run a serving gateway on 127.0.0.1:
//! a fresh gateway directory with enrollment, admin API and metrics
//! listening on ephemeral ports, instance inventory, one-shot HTTP,
//! enrollment through the agent's own client (`agent::gw::enroll`), and the
//! control channel: the server over the gateway's store or a probe around
//! it, an agent's TLS client config and its Hello. And for the tests on a
//! bare [`Store`]: enrollments recorded directly, configs read back
//! validated; for the CLI's: the `nsx-gateway` binary run.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use agent::gw::enroll::{self, Endpoint, EnrollError};
use control::model::{InstanceConfig, MacAddr};
use control::proto::{EnrollResponse, InstanceMeta, Role};
use gateway::gateway::Gateway;
use gateway::store::{NewInstance, Store, StoreError};
use gateway::{ops, pki, server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const NAME: &str = "nsx-gw.test.local";

/// A serving gateway; its directory goes when the fixture is dropped.
pub struct Fixture {
    pub dir: PathBuf,
    pub gw: Arc<Gateway>,
    pub srv: server::Server,
    pub metrics: SocketAddr,
    pub ca_pem: String,
    pub bootstrap_pem: String,
    pub token: String,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `nsx-gateway init` in a temp directory named after `tag`, then serve.
pub async fn fixture(tag: &str) -> Fixture {
    let dir = std::env::temp_dir().join(format!("nsx-gw-it-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    ops::init(&dir, NAME, &["127.0.0.1".parse().expect("ip")], false).expect("init");
    let gw = Gateway::open(&dir).expect("open");
    let tls = pki::enroll_server_config(&dir).expect("tls");
    let lo: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let srv = server::start(gw.clone(), tls, lo, lo).await.expect("start");
    let (metrics, _task) = server::start_metrics(gw.clone(), lo)
        .await
        .expect("metrics");
    assemble(dir, gw, srv, metrics)
}

/// The fixture of a started gateway: its credentials read from `dir`.
fn assemble(dir: PathBuf, gw: Arc<Gateway>, srv: server::Server, metrics: SocketAddr) -> Fixture {
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).expect("read");
    Fixture {
        ca_pem: read("ca.pem"),
        bootstrap_pem: read("bootstrap.key"),
        token: read("admin.token").trim().to_string(),
        dir,
        gw,
        srv,
        metrics,
    }
}

/// Inventory of a test instance tagged `nsx:network = net`.
pub fn meta(id: &str, net: &str, n: u8) -> InstanceMeta {
    InstanceMeta {
        instance_id: id.into(),
        hostname: format!("{id}.example"),
        os: "debian-12".into(),
        image_id: "ami-0abc".into(),
        tags: BTreeMap::from([("nsx:network".to_string(), net.to_string())]),
        underlay_ip: format!("10.0.0.{n}").parse().expect("ip"),
        nic_mac: MacAddr([6, 0x17, 0x1e, 0x54, 0x96, n]),
    }
}

/// A signed enrollment body for `m`, built by the agent's code with a fresh
/// key, CSR and nonce; returns the body and the instance's private key (PEM).
pub fn enroll_body(bootstrap_pem: &str, m: &InstanceMeta, now: u64) -> (String, String) {
    enroll_body_as(bootstrap_pem, m, Role::Instance, now)
}

/// [`enroll_body`] in `role`.
pub fn enroll_body_as(
    bootstrap_pem: &str,
    m: &InstanceMeta,
    role: Role,
    now: u64,
) -> (String, String) {
    let (key, csr) = enroll::new_key_and_csr().expect("csr");
    let body = enroll::build_request(
        bootstrap_pem.as_bytes(),
        std::path::Path::new("bootstrap.key"),
        &csr,
        m,
        role,
        now,
        &enroll::new_nonce().expect("nonce"),
    )
    .expect("build");
    (body, key)
}

impl Fixture {
    /// One request to the admin API with the fixture's token: the status
    /// and the body as JSON (`Null` when it is not JSON).
    pub async fn admin(&self, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
        let (status, _, body) = http(
            self.srv.api_addr,
            method,
            path,
            Some(self.token.as_str()),
            body,
        )
        .await;
        (
            status,
            serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
        )
    }

    /// The gateway's enrollment address, as the agent's config names it.
    pub fn enroll_addr(&self) -> String {
        self.srv.enroll_addr.to_string()
    }

    /// Posts an enrollment body with the agent's client, trusting `ca_pem`.
    pub async fn submit_trusting(
        &self,
        ca_pem: &str,
        body: &str,
    ) -> Result<EnrollResponse, EnrollError> {
        let addr = self.enroll_addr();
        let ca_path = self.dir.join("ca.pem");
        let endpoint = Endpoint {
            addr: &addr,
            server_name: NAME,
            ca_pem: ca_pem.as_bytes(),
            ca_path: &ca_path,
        };
        enroll::submit(&endpoint, body).await
    }

    /// Posts an enrollment body with the agent's client.
    pub async fn submit(&self, body: &str) -> Result<EnrollResponse, EnrollError> {
        self.submit_trusting(&self.ca_pem, body).await
    }

    /// One request to the enrollment listener with the agent's client.
    pub async fn enroll_request(&self, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
        let addr = self.enroll_addr();
        let ca_path = self.dir.join("ca.pem");
        let endpoint = Endpoint {
            addr: &addr,
            server_name: NAME,
            ca_pem: self.ca_pem.as_bytes(),
            ca_path: &ca_path,
        };
        enroll::request(&endpoint, method, path, body)
            .await
            .expect("https round trip")
    }
}

/// One plain HTTP/1.1 request; returns (status, head, body).
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    let (head, body) = out.split_once("\r\n\r\n").expect("response");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|x| x.parse().ok())
        .expect("status");
    (status, head.to_string(), body.to_string())
}

/// Like [`fixture`], with the installer: binaries from `dist`, plain-HTTP
/// install listeners per `listen`, and `control_port` as the control
/// channel's port in the script (no control listener runs). A startup
/// error is returned (and the directory removed).
pub async fn fixture_with_installer(
    tag: &str,
    dist: gateway::install::DistDir,
    listen: server::InstallListen,
    control_port: u16,
) -> Result<Fixture, server::ServeError> {
    fixture_configured(
        tag,
        dist,
        listen,
        control_port,
        server::HttpLimits::default(),
    )
    .await
}

/// [`fixture_with_installer`] with the given connection limits.
pub async fn fixture_configured(
    tag: &str,
    dist: gateway::install::DistDir,
    listen: server::InstallListen,
    control_port: u16,
    limits: server::HttpLimits,
) -> Result<Fixture, server::ServeError> {
    let dir = std::env::temp_dir().join(format!("nsx-gw-it-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    ops::init(&dir, NAME, &["127.0.0.1".parse().expect("ip")], false).expect("init");
    let started = async {
        let gw = Gateway::open(&dir)?;
        let tls = pki::enroll_server_config(&dir)?;
        let content = gateway::install::Content::load(&dir, &dist)?;
        let lo: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let srv = server::start_configured(
            gw.clone(),
            tls,
            lo,
            lo,
            Some(server::InstallSetup {
                listen,
                content,
                control_port,
            }),
            limits,
        )
        .await?;
        let (metrics, _task) = server::start_metrics(gw.clone(), lo).await?;
        Ok::<_, server::ServeError>((gw, srv, metrics))
    }
    .await;
    let (gw, srv, metrics) = match started {
        Ok(x) => x,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
    };
    Ok(assemble(dir, gw, srv, metrics))
}

/// One request over any stream (plain TCP or TLS), binary-safe; returns
/// (status, head, body).
pub async fn request_on<S>(mut s: S, method: &str, path: &str) -> (u16, String, Vec<u8>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let req = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    // A TLS peer may close without close_notify after a full response.
    if let Err(e) = s.read_to_end(&mut out).await {
        assert!(
            !out.is_empty() && e.kind() == std::io::ErrorKind::UnexpectedEof,
            "read: {e}"
        );
    }
    let end = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("response head");
    let head = String::from_utf8(out[..end].to_vec()).expect("head");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|x| x.parse().ok())
        .expect("status");
    (status, head, out[end + 4..].to_vec())
}

/// One HTTPS request to the enrollment listener, verified against `ca_pem`
/// for [`NAME`].
pub async fn https_get(
    addr: SocketAddr,
    ca_pem: &str,
    method: &str,
    path: &str,
) -> (u16, String, Vec<u8>) {
    let cfg = pki::client_config_trusting(ca_pem).expect("client config");
    let name = rustls::pki_types::ServerName::try_from(NAME).expect("name");
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let tls = tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await
        .expect("TLS handshake verified against the CA");
    request_on(tls, method, path).await
}

/// One plain HTTP request, binary-safe.
pub async fn http_get(addr: SocketAddr, method: &str, path: &str) -> (u16, String, Vec<u8>) {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    request_on(tcp, method, path).await
}

/// Serves the control channel of `f`'s gateway (counted into its metrics,
/// as `nsx-gateway serve` does) on 127.0.0.1 with `opts`; returns its
/// address and the sender that stops it (dropping it does not).
pub async fn control_channel(
    f: &Fixture,
    opts: gateway::control_server::ServerOptions,
) -> (SocketAddr, tokio::sync::watch::Sender<bool>) {
    let store = Arc::new(gateway::metrics::CountingControl::new(
        gateway::control_store::GatewayControl::new(f.gw.clone()),
        f.gw.clone(),
    ));
    control_channel_with(f, store, opts).await
}

/// [`control_channel`] over any store (a probe around the gateway's own).
pub async fn control_channel_with(
    f: &Fixture,
    store: Arc<dyn gateway::control_server::ControlStore>,
    opts: gateway::control_server::ServerOptions,
) -> (SocketAddr, tokio::sync::watch::Sender<bool>) {
    use gateway::control_server;
    let read = |name: &str| std::fs::read(f.dir.join(name)).expect("read");
    let tls = control_server::server_tls(
        &read(pki::files::CA_CERT),
        &read(pki::files::GATEWAY_CERT),
        &read(pki::files::GATEWAY_KEY),
    )
    .expect("control TLS");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(control_server::serve_with(
        listener,
        Arc::new(tls),
        store,
        stop_rx,
        opts,
    ));
    (addr, stop)
}

/// The frame of an agent's first message: a Hello for `instance` offering
/// this build's protocol version, nothing applied yet.
pub fn hello_frame(instance: InstanceMeta) -> Vec<u8> {
    control::encode(&control::AgentMsg::Hello {
        versions: vec![control::PROTOCOL_VERSION],
        agent_version: "test".into(),
        instance,
        applied_version: None,
    })
    .expect("encode")
}

/// An agent's TLS 1.3 client config for the control channel: its
/// certificate and key (PEM), trusting `f`'s root CA.
pub fn agent_tls(f: &Fixture, cert_pem: &str, key_pem: &str) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .expect("chain");
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("key");
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(f.ca_pem.as_bytes()) {
        roots.add(c.expect("ca")).expect("root");
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .expect("TLS 1.3")
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .expect("client cert");
    Arc::new(cfg)
}

/// Enrolls `m` through the enrollment listener; returns the certificate
/// and the private key (PEM).
pub async fn enroll_instance(f: &Fixture, m: &InstanceMeta) -> (String, String) {
    let (body, key) = enroll_body(&f.bootstrap_pem, m, gateway::util::now_unix());
    let resp = f.submit(&body).await.expect("enrolled");
    (resp.certificate_pem, key)
}

/// The samples of one `GET /metrics` (`name{labels}` -> value).
pub async fn scrape(f: &Fixture) -> std::collections::HashMap<String, f64> {
    let (status, _, body) = http(f.metrics, "GET", "/metrics", None, "").await;
    assert_eq!(status, 200, "{body}");
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, v) = l.rsplit_once(' ')?;
            Some((series.to_string(), v.parse().ok()?))
        })
        .collect()
}

// ----- a bare store, and the CLI ---------------------------------------------

/// Inventory of a store test's instance: `tags` as given, underlay
/// 10.0.0.`n`, NIC MAC 06:00:00:00:00:`n`.
pub fn store_meta(id: &str, tags: &[(&str, &str)], n: u8) -> InstanceMeta {
    InstanceMeta {
        instance_id: id.into(),
        hostname: format!("{id}.example"),
        os: "debian-12".into(),
        image_id: "ami-1".into(),
        tags: tags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        underlay_ip: format!("10.0.0.{n}").parse().expect("ip"),
        nic_mac: MacAddr([0x06, 0, 0, 0, 0, n]),
    }
}

/// Records the enrollment of [`store_meta`]`(id, tags, n)` as `role`, as
/// the enrollment handler does once its checks pass; its tep_id.
pub fn try_store_enroll(
    s: &mut Store,
    id: &str,
    tags: &[(&str, &str)],
    n: u8,
    role: Role,
) -> Result<u32, StoreError> {
    s.enroll(
        &NewInstance {
            meta: store_meta(id, tags, n),
            cert_serial: format!("serial-{id}"),
            cert_fingerprint: format!("fp-{id}"),
            role,
        },
        &format!("{n:032x}"),
        u64::MAX / 4,
        1000,
    )
}

/// [`try_store_enroll`], which must succeed.
pub fn store_enroll(s: &mut Store, id: &str, tags: &[(&str, &str)], n: u8, role: Role) -> u32 {
    try_store_enroll(s, id, tags, n, role).expect("enroll")
}

/// The desired config of `id`, which must exist and validate as an agent
/// validates it.
pub fn valid_config(s: &mut Store, id: &str) -> InstanceConfig {
    let (_, cfg) = s.desired_config_for(id).expect("config");
    let cfg = cfg.expect("a config");
    control::validate(&cfg).unwrap_or_else(|p| panic!("the config of {id} validates: {p}"));
    cfg
}

/// Runs the `nsx-gateway` binary of this build with `args`.
pub fn run_cli(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_nsx-gateway"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run nsx-gateway")
}
