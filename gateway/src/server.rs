//! The gateway's listeners:
//!
//! * enrollment, HTTPS (default `0.0.0.0:8443`): server-auth TLS with the
//!   gateway certificate: `POST /api/v1/enroll` ([`crate::enroll`]), and,
//!   when the installer is served, `GET /factory_default/...` (the same tree
//!   as the install listeners, so the install script fetches everything after
//!   itself over TLS verified against the CA);
//! * installer, plain HTTP (`--listen-install`, default port 8080 on every IP
//!   address in the gateway certificate's SAN), no token, GET only:
//!   - `GET /factory_default/`                        supported `<distro>_<arch>` list
//!   - `GET /factory_default/<distro>_<arch>/<file>`  `install_nsx_vm_agent.sh`
//!     (templated per request), `nsx-agent`, `nsxcli`, `ca.pem`,
//!     `bootstrap.key`, `SHA256SUMS` ([`crate::install`]);
//! * admin REST API, plain HTTP on loopback (default `127.0.0.1:8080`),
//!   every request needs `Authorization: Bearer <admin.token>`:
//!   - `GET  /api/v1/state`                  the desired state (JSON)
//!   - `PUT  /api/v1/state`                  replace it (JSON or YAML body; same validation as `apply`)
//!   - `GET  /api/v1/switches`, `GET /api/v1/routers`
//!   - `GET  /api/v1/routers/{t0}/nat-rules` the tier-0's NAT rules (SNAT, public IPs)
//!   - `GET  /api/v1/load-balancers`         the virtual servers, each with where it is balanced
//!     and its checked real servers' health
//!   - `GET  /api/v1/instances`              inventory with placement, session and the agent's latest status
//!   - `GET  /api/v1/instances/{id}`         one instance, the same view
//!   - `GET  /api/v1/instances/{id}/config`  the desired config pushed to it
//!   - `PATCH /api/v1/instances/{id}`        `{"tags": {"nsx:network": "web", "x": null}}` merge (null removes)
//!   - `POST /api/v1/instances/{id}/revoke`
//!   - `GET  /api/v1/certificates`           issued client certificates and revocations
//! * metrics, plain HTTP on loopback (default `127.0.0.1:9465`, no token):
//!   `GET /metrics`, OpenMetrics text ([`crate::metrics`]).
//!
//! Each connection serves one request ([`bounded_http::serve_one`], on
//! hyper) with a deadline for reading it ([`REQUEST_TIMEOUT`]) and size
//! limits ([`MAX_HEAD`] and each listener's body cap); the response has its
//! own, generous write bounds ([`WRITE_TIMEOUT`] in total,
//! [`WRITE_STALL_TIMEOUT`] without progress), so a large download on a slow
//! link is not cut off.
//!
//! Connection limits ([`HttpLimits`], one [`crate::conn_limit`] limiter per
//! listener, the install listeners sharing one) are checked right after
//! `accept`, before the TLS handshake or any HTTP: at most
//! [`MAX_CONNECTIONS`] open per listener and, on the enrollment and
//! installer listeners, [`MAX_CONNECTIONS_PER_PEER`] per source address
//! (the loopback admin API and metrics endpoint have the total cap only).
//! A connection over a limit is closed at once; a failing `accept`
//! (EMFILE) pauses the loop briefly. Those, requests the HTTP layer
//! refuses itself (by listener) and failed TLS handshakes on the
//! enrollment listener are counted for the metrics
//! ([`crate::metrics::Counters`]).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bounded_http::{Limits, Request, Response, serve_one};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::conn_limit::{self, ConnLimiter, Gate};
use crate::control_server::HandshakeFailure;
use crate::enroll;
use crate::gateway::{Gateway, GatewayError};
use crate::install::{self, Content, InstallError, Installer, Ports, Via};
use crate::metrics::{self, HttpListener, Listener, Metrics, TlsListener};
use crate::pki::{self, PkiError};
use crate::state::{self, StateError};
use crate::store::StoreError;
use crate::util;

/// Default cap on the open connections of each listener (the install
/// listeners together), all peers together.
pub const MAX_CONNECTIONS: usize = 512;
/// Default cap on the open connections from one source address on the
/// enrollment listener and on the install listeners (together).
pub const MAX_CONNECTIONS_PER_PEER: usize = 64;
/// Deadline for the TLS handshake and for reading a request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest admin API body.
pub const MAX_ADMIN_BODY: usize = 1 << 20;
/// Largest body read on the metrics listener (a scrape has none; anything
/// bigger is refused before routing).
pub const MAX_METRICS_BODY: usize = 4096;
/// Largest body read on an install listener (GET only).
pub const MAX_INSTALL_BODY: usize = 4096;
/// Largest request head (request line and headers), every listener.
pub const MAX_HEAD: usize = 16 * 1024;
/// Longest a response write may make no progress: a client that stopped
/// reading is dropped.
pub const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest writing one whole response may take (a 60 MB binary over a slow
/// link); independent of the request-reading deadline.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(600);

/// The HTTP limits of a listener whose request bodies may be `max_body`
/// bytes.
pub fn limits(max_body: usize) -> Limits {
    Limits {
        max_head: MAX_HEAD,
        max_body: Some(max_body),
        read_timeout: REQUEST_TIMEOUT,
        write_timeout: WRITE_TIMEOUT,
        stall_timeout: WRITE_STALL_TIMEOUT.max(REQUEST_TIMEOUT),
    }
}

/// Connection limits of the public HTTP listeners ([`start_configured`];
/// the control channel's are
/// [`crate::control_server::ServerOptions::connections`]). The loopback
/// admin API and metrics endpoint have [`MAX_CONNECTIONS`] each, no
/// per-peer cap (every client is 127.0.0.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// The enrollment listener (8443).
    pub enroll: conn_limit::Limits,
    /// The plain-HTTP install listeners (8080), all of them together.
    pub install: conn_limit::Limits,
}

impl Default for HttpLimits {
    fn default() -> Self {
        let each = conn_limit::Limits {
            total: MAX_CONNECTIONS,
            per_peer: MAX_CONNECTIONS_PER_PEER,
        };
        HttpLimits {
            enroll: each,
            install: each,
        }
    }
}

/// Errors starting or running the servers.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Gateway(#[from] GatewayError),
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("signal handling: {0}")]
    Signal(std::io::Error),
    #[error("installer: {0}")]
    Install(#[from] InstallError),
}

/// Running listeners (tasks end when dropped via [`Server::shutdown`]).
#[derive(Debug)]
pub struct Server {
    pub enroll_addr: SocketAddr,
    pub api_addr: SocketAddr,
    /// The bound plain-HTTP install listeners (empty: none).
    pub install_addrs: Vec<SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
}

/// Which plain-HTTP install listeners to open (`--listen-install`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstallListen {
    /// `off`: none (the tree is still answered on the enrollment listener).
    Off,
    /// Not given: port 8080 on every IP address in the gateway
    /// certificate's SAN; an address that cannot be bound is skipped with a
    /// warning.
    Default,
    /// These addresses; each must bind (startup error otherwise).
    Explicit(Vec<SocketAddr>),
}

/// The installer's part of [`start_with_installer`].
#[derive(Debug)]
pub struct InstallSetup {
    pub listen: InstallListen,
    /// What is served ([`Content::load`]).
    pub content: Content,
    /// The control channel's port (`@NSX_CONTROL_PORT@`).
    pub control_port: u16,
}

impl Server {
    /// Stops accepting.
    pub fn shutdown(self) {
        for t in self.tasks {
            t.abort();
        }
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })
}

/// Binds the plain-HTTP install listeners of `listen`. Explicit addresses
/// must bind; default ones (port 8080 on the SAN's IPs) are skipped with a
/// warning when they cannot be.
async fn bind_install(
    listen: &InstallListen,
    content: &Content,
) -> Result<Vec<(TcpListener, SocketAddr)>, ServeError> {
    let mut out = Vec::new();
    let bound = |l: &TcpListener, addr: SocketAddr| {
        l.local_addr()
            .map_err(|source| ServeError::Bind { addr, source })
    };
    match listen {
        InstallListen::Off => {}
        InstallListen::Explicit(addrs) => {
            for &addr in addrs {
                let l = bind(addr).await?;
                let a = bound(&l, addr)?;
                out.push((l, a));
            }
        }
        InstallListen::Default => {
            let ips = &content.identity().ips;
            if ips.is_empty() {
                tracing::warn!(
                    "the installer is not served over plain HTTP: the gateway certificate has no IP address in its SAN (pass --listen-install ADDR:PORT, or init --ip)"
                );
            }
            for ip in ips {
                let addr = SocketAddr::new(*ip, install::DEFAULT_INSTALL_PORT);
                match bind(addr).await.and_then(|l| Ok((bound(&l, addr)?, l))) {
                    Ok((a, l)) => out.push((l, a)),
                    Err(e) => tracing::warn!(
                        "installer: skipping {addr} (from the gateway certificate's SAN): {e}"
                    ),
                }
            }
            if out.is_empty() && !ips.is_empty() {
                tracing::warn!(
                    "the installer is not served over plain HTTP: no SAN address could be bound on port {} (pass --listen-install ADDR:PORT)",
                    install::DEFAULT_INSTALL_PORT
                );
            }
        }
    }
    Ok(out)
}

/// Binds the enrollment and admin API listeners and spawns their accept
/// loops (no installer: see [`start_with_installer`]).
pub async fn start(
    gw: Arc<Gateway>,
    tls: Arc<rustls::ServerConfig>,
    enroll_addr: SocketAddr,
    api_addr: SocketAddr,
) -> Result<Server, ServeError> {
    start_configured(gw, tls, enroll_addr, api_addr, None, HttpLimits::default()).await
}

/// [`start`], plus the installer: its plain-HTTP listeners (bound after
/// the admin API's) and `GET /factory_default/...` on the enrollment
/// listener.
pub async fn start_with_installer(
    gw: Arc<Gateway>,
    tls: Arc<rustls::ServerConfig>,
    enroll_addr: SocketAddr,
    api_addr: SocketAddr,
    install: InstallSetup,
) -> Result<Server, ServeError> {
    start_configured(
        gw,
        tls,
        enroll_addr,
        api_addr,
        Some(install),
        HttpLimits::default(),
    )
    .await
}

/// [`start`] (`install` `None`) or [`start_with_installer`], with the
/// given connection limits.
pub async fn start_configured(
    gw: Arc<Gateway>,
    tls: Arc<rustls::ServerConfig>,
    enroll_addr: SocketAddr,
    api_addr: SocketAddr,
    install: Option<InstallSetup>,
    conns: HttpLimits,
) -> Result<Server, ServeError> {
    if !api_addr.ip().is_loopback() {
        tracing::warn!(%api_addr, "the admin API listens on a non-loopback address (plain HTTP, bearer token)");
    }
    let el = bind(enroll_addr).await?;
    let al = bind(api_addr).await?;
    let enroll_addr = el.local_addr().map_err(|source| ServeError::Bind {
        addr: enroll_addr,
        source,
    })?;
    let api_addr = al.local_addr().map_err(|source| ServeError::Bind {
        addr: api_addr,
        source,
    })?;
    let (installer, install_listeners) = match install {
        None => (None, Vec::new()),
        Some(setup) => {
            let listeners = bind_install(&setup.listen, &setup.content).await?;
            let ports = Ports {
                install: listeners.first().map(|(_, a)| a.port()),
                enroll: enroll_addr.port(),
                control: setup.control_port,
            };
            (
                Some(Arc::new(Installer::new(setup.content, ports))),
                listeners,
            )
        }
    };
    let install_addrs: Vec<SocketAddr> = install_listeners.iter().map(|(_, a)| *a).collect();
    let mut tasks = Vec::new();

    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let egw = gw.clone();
    let einst = installer.clone();
    let admit = Admission::new(conns.enroll, &gw, Listener::Enroll);
    tasks.push(tokio::spawn(accept_loop(el, admit, move |tcp, peer| {
        let acceptor = acceptor.clone();
        let gw = egw.clone();
        let inst = einst.clone();
        async move {
            let local = tcp.local_addr().unwrap_or(enroll_addr);
            let tls = match tokio::time::timeout(REQUEST_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::info!(%peer, "enrollment TLS handshake failed: {e}");
                    gw.counters()
                        .tls_handshake_failed(TlsListener::Enroll, HandshakeFailure::Error);
                    return;
                }
                Err(_) => {
                    tracing::info!(%peer, "enrollment TLS handshake timed out");
                    gw.counters()
                        .tls_handshake_failed(TlsListener::Enroll, HandshakeFailure::Timeout);
                    return;
                }
            };
            let counting = gw.clone();
            serve_one(
                tls,
                &limits(enroll::MAX_BODY),
                |req| {
                    blocking(move || match inst {
                        Some(inst) if install::is_installer_path(&req.path) => {
                            install_route(&gw, &inst, &req, peer, local, Via::Enroll)
                        }
                        _ => enroll_route(&gw, req, peer),
                    })
                },
                |why| counting.counters().http_refused(HttpListener::Enroll, why),
            )
            .await;
        }
    })));
    let agw = gw.clone();
    let admit = Admission::new(
        conn_limit::Limits::total_only(MAX_CONNECTIONS),
        &gw,
        Listener::Admin,
    );
    tasks.push(tokio::spawn(accept_loop(al, admit, move |tcp, _peer| {
        let gw = agw.clone();
        async move {
            let counting = gw.clone();
            serve_one(
                tcp,
                &limits(MAX_ADMIN_BODY),
                |req| blocking(move || admin_route(&gw, req)),
                |why| counting.counters().http_refused(HttpListener::Admin, why),
            )
            .await;
        }
    })));
    if let Some(inst) = &installer {
        // One limiter for all install listeners: a peer's connections
        // count together whichever address it dials.
        let admit = Admission::new(conns.install, &gw, Listener::Install);
        for (listener, addr) in install_listeners {
            let igw = gw.clone();
            let inst = inst.clone();
            tasks.push(tokio::spawn(accept_loop(
                listener,
                admit.clone(),
                move |tcp, peer| {
                    let gw = igw.clone();
                    let inst = inst.clone();
                    async move {
                        let local = tcp.local_addr().unwrap_or(addr);
                        let counting = gw.clone();
                        serve_one(
                            tcp,
                            &limits(MAX_INSTALL_BODY),
                            |req| {
                                blocking(move || {
                                    install_route(&gw, &inst, &req, peer, local, Via::Install)
                                })
                            },
                            |why| counting.counters().http_refused(HttpListener::Install, why),
                        )
                        .await;
                    }
                },
            )));
            tracing::info!(%addr, "installer listening (GET /factory_default/...)");
        }
    }
    tasks.push(tokio::spawn(
        gw.clone().watch_store(Duration::from_millis(500)),
    ));
    tracing::info!(%enroll_addr, %api_addr, ?install_addrs, "nsx-gateway serving");
    Ok(Server {
        enroll_addr,
        api_addr,
        install_addrs,
        tasks,
    })
}

/// Answers an installer request and counts it.
fn install_route(
    gw: &Gateway,
    inst: &Installer,
    req: &Request,
    peer: SocketAddr,
    local: SocketAddr,
    via: Via,
) -> Response {
    let (resp, file) = inst.respond(&req.method, &req.path, local, via);
    gw.counters().installer_request(file, resp.status);
    tracing::debug!(
        %peer,
        %local,
        ?via,
        method = %req.method,
        path = %req.path,
        status = resp.status,
        bytes = resp.body.len(),
        "installer request"
    );
    resp
}

/// Binds the metrics listener and spawns its accept loop: `GET /metrics`
/// only (404 for other paths, 405 for other methods), no body accepted.
/// Returns the bound address and the task (abort it to stop).
pub async fn start_metrics(
    gw: Arc<Gateway>,
    addr: SocketAddr,
) -> Result<(SocketAddr, JoinHandle<()>), ServeError> {
    if !addr.ip().is_loopback() {
        tracing::warn!(%addr, "the metrics endpoint listens on a non-loopback address (no authentication)");
    }
    let listener = bind(addr).await?;
    let bound = listener
        .local_addr()
        .map_err(|source| ServeError::Bind { addr, source })?;
    let state = Arc::new(Metrics::new(gw.clone()));
    let admit = Admission::new(
        conn_limit::Limits::total_only(MAX_CONNECTIONS),
        &gw,
        Listener::Metrics,
    );
    let task = tokio::spawn(accept_loop(listener, admit, move |tcp, _peer| {
        let state = state.clone();
        let gw = gw.clone();
        async move {
            serve_one(
                tcp,
                &limits(MAX_METRICS_BODY),
                |req| async move {
                    if req.path != "/metrics" {
                        return Response::error(
                            404,
                            format!("no such endpoint {} (try /metrics)", req.path),
                        );
                    }
                    if req.method != "GET" {
                        return Response::error(405, "use GET").header("Allow", "GET");
                    }
                    blocking(move || match state.render() {
                        Ok(text) => {
                            Response::with_body(200, metrics::CONTENT_TYPE, text.into_bytes())
                        }
                        Err(e) => {
                            tracing::error!("metrics: cannot encode: {e}");
                            Response::error(500, "cannot encode metrics")
                        }
                    })
                    .await
                },
                |why| gw.counters().http_refused(HttpListener::Metrics, why),
            )
            .await;
        }
    }));
    tracing::info!(addr = %bound, "metrics endpoint listening (GET /metrics)");
    Ok((bound, task))
}

/// Runs a handler (store transactions with fsync, CSR signing) on the
/// blocking pool so it never stalls the async workers.
async fn blocking(f: impl FnOnce() -> Response + Send + 'static) -> Response {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        tracing::error!("request handler failed: {e}");
        Response::error(500, "internal error")
    })
}

/// How a listener admits connections: its limiter, and where what the
/// accept step reports is counted.
#[derive(Debug, Clone)]
struct Admission {
    limiter: Arc<ConnLimiter>,
    gw: Arc<Gateway>,
    which: Listener,
}

impl Admission {
    fn new(limits: conn_limit::Limits, gw: &Arc<Gateway>, which: Listener) -> Admission {
        Admission {
            limiter: ConnLimiter::new(limits),
            gw: Arc::clone(gw),
            which,
        }
    }
}

/// Accepts connections on `listener` within `admit`'s limits (the excess
/// closed at once, before `handle` sees it, and counted with the failed
/// accepts) and serves each admitted one in its own task, which holds its
/// place until it ends.
async fn accept_loop<F, Fut>(listener: TcpListener, admit: Admission, handle: F)
where
    F: Fn(tokio::net::TcpStream, SocketAddr) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let Admission { limiter, gw, which } = admit;
    let mut gate = Gate::new(limiter);
    let report = |e| gw.counters().accept_event(which, e);
    loop {
        let (tcp, peer, place) = gate.accept(&listener, &report).await;
        let fut = handle(tcp, peer);
        tokio::spawn(async move {
            fut.await;
            drop(place);
        });
    }
}

/// What `nsx-gateway serve` listens on and serves.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub enroll_addr: SocketAddr,
    pub api_addr: SocketAddr,
    pub control_addr: SocketAddr,
    /// The metrics endpoint (`None`: none).
    pub metrics_addr: Option<SocketAddr>,
    /// The plain-HTTP install listeners.
    pub install: InstallListen,
    /// Where the installer's binaries are read from.
    pub dist: install::DistDir,
    /// Connection limits of the enrollment and install listeners.
    pub http_limits: HttpLimits,
    /// Connection limits of the control channel.
    pub control_limits: conn_limit::Limits,
}

/// `nsx-gateway serve`: opens the directory, serves until SIGINT/SIGTERM.
pub async fn run(dir: &Path, opts: ServeOptions) -> Result<(), ServeError> {
    let ServeOptions {
        enroll_addr,
        api_addr,
        control_addr,
        metrics_addr,
        install,
        dist,
        http_limits,
        control_limits,
    } = opts;
    let gw = Gateway::open(dir)?;
    let tls = pki::enroll_server_config(dir)?;
    let content = Content::load(dir, &dist)?;
    // The control channel: mutual TLS 1.3 on 5555 (bound first: the
    // install script is told its port).
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read(&path).map_err(|source| ServeError::Bind {
            addr: control_addr,
            source: std::io::Error::new(source.kind(), format!("{}: {source}", path.display())),
        })
    };
    let ctls = crate::control_server::server_tls(
        &read(pki::files::CA_CERT)?,
        &read(pki::files::GATEWAY_CERT)?,
        &read(pki::files::GATEWAY_KEY)?,
    )
    .map_err(|e| ServeError::Bind {
        addr: control_addr,
        source: std::io::Error::other(e.to_string()),
    })?;
    let listener = bind(control_addr).await?;
    let control_bound = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: control_addr,
        source,
    })?;
    let control_port = control_bound.port();
    let server = start_configured(
        gw.clone(),
        tls,
        enroll_addr,
        api_addr,
        Some(InstallSetup {
            listen: install,
            content,
            control_port,
        }),
        http_limits,
    )
    .await?;
    let metrics_task = match metrics_addr {
        Some(addr) => Some(start_metrics(gw.clone(), addr).await?.1),
        None => None,
    };
    tracing::info!(control_addr = %control_bound, "control channel listening");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let store: Arc<dyn crate::control_server::ControlStore> = Arc::new(
        metrics::CountingControl::new(crate::control_store::GatewayControl::new(gw.clone()), gw),
    );
    let control = tokio::spawn(crate::control_server::serve_with(
        listener,
        Arc::new(ctls),
        store,
        stop_rx,
        crate::control_server::ServerOptions {
            connections: control_limits,
            ..Default::default()
        },
    ));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(ServeError::Signal)?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.map_err(ServeError::Signal)?,
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), control).await;
    server.shutdown();
    if let Some(t) = metrics_task {
        t.abort();
    }
    Ok(())
}

fn enroll_route(gw: &Gateway, req: Request, peer: SocketAddr) -> Response {
    if req.path != "/api/v1/enroll" {
        return Response::error(404, format!("no such endpoint {}", req.path));
    }
    if req.method != "POST" {
        return Response::error(405, "use POST");
    }
    let outcome = enroll::handle(gw, &req.body, util::now_unix());
    gw.counters().enrollment(&outcome);
    match outcome {
        Ok(r) => Response::json(200, &serde_json::to_value(&r).unwrap_or_default()),
        Err(e) => {
            tracing::info!(%peer, "enrollment refused: {e}");
            Response::error(e.status(), e.to_string())
        }
    }
}

fn store_error(e: StoreError) -> Response {
    store_error_in(e, "desired state")
}

/// [`store_error`], problems said to be in `what`.
fn store_error_in(e: StoreError, what: &str) -> Response {
    match e {
        StoreError::UnknownInstance(_) => Response::error(404, e.to_string()),
        StoreError::Invalid(p) => problems_response_in(&p, what),
        other => {
            tracing::error!("store: {other}");
            Response::error(500, other.to_string())
        }
    }
}

/// 422 with the problems listed (at most [`control::validate::MAX_PROBLEMS`])
/// and `more_problems`, how many more were found.
fn problems_response(p: &control::validate::Problems) -> Response {
    problems_response_in(p, "desired state")
}

/// [`problems_response`], the problems said to be in `what`.
fn problems_response_in(p: &control::validate::Problems, what: &str) -> Response {
    let error = if p.more() > 0 {
        format!(
            "{} problem(s) in {what} (the first {} listed ... and {} more problems)",
            p.total(),
            p.list().len(),
            p.more()
        )
    } else {
        format!("{} problem(s) in {what}", p.total())
    };
    Response::json(
        422,
        &serde_json::json!({
            "error": error,
            "problems": p.list().iter().map(|x| serde_json::json!({"path": x.path, "message": x.message})).collect::<Vec<_>>(),
            "more_problems": p.more(),
        }),
    )
}

fn admin_route(gw: &Gateway, req: Request) -> Response {
    let token = req
        .header("authorization")
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim);
    match token {
        Some(t) if gw.admin_token_ok(t) => {}
        _ => {
            return Response::error(
                401,
                "missing or wrong admin token (Authorization: Bearer <admin.token>)",
            );
        }
    }
    let segs: Vec<&str> = req.path.trim_end_matches('/').split('/').skip(1).collect();
    let now = util::now_unix();
    let ok = |v: serde_json::Value| Response::json(200, &v);
    match (req.method.as_str(), segs.as_slice()) {
        ("GET", ["api", "v1", "state"]) => {
            let r = {
                let store = gw.store();
                store
                    .desired_state()
                    .and_then(|s| Ok((s, store.desired_version()?)))
            };
            match r {
                Ok((s, v)) => ok(serde_json::json!({ "desired_version": v, "state": s })),
                Err(e) => store_error(e),
            }
        }
        ("PUT", ["api", "v1", "state"]) => {
            let Ok(text) = std::str::from_utf8(&req.body) else {
                return Response::error(400, "body is not UTF-8");
            };
            let st = match state::parse_and_validate(text) {
                Ok(s) => s,
                Err(StateError::Parse(m)) => return Response::error(400, m),
                Err(StateError::Invalid(p)) => return problems_response(&p),
            };
            let r = gw.store().apply_state(&st, now);
            match r {
                Ok(out) => {
                    gw.notify_changed();
                    ok(serde_json::to_value(out).unwrap_or_default())
                }
                Err(e) => store_error(e),
            }
        }
        ("GET", ["api", "v1", "switches"]) => match gw.store().desired_state() {
            Ok(s) => ok(serde_json::to_value(s.switches).unwrap_or_default()),
            Err(e) => store_error(e),
        },
        ("GET", ["api", "v1", "routers"]) => match gw.store().desired_state() {
            Ok(s) => ok(serde_json::to_value(s.routers).unwrap_or_default()),
            Err(e) => store_error(e),
        },
        ("GET", ["api", "v1", "load-balancers"]) => {
            let st = gw.store().desired_state();
            match st {
                Ok(s) => ok(load_balancers_json(&s, &gw.health().verdicts())),
                Err(e) => store_error(e),
            }
        }
        ("GET", ["api", "v1", "routers", name, "nat-rules"]) => match gw.store().tier0_view() {
            Ok(Some(v)) if v.tier0.name == *name => ok(nat_rules_json(&v)),
            Ok(Some(v)) => Response::error(
                404,
                format!(
                    "{name:?} is not the tier-0 router (NAT rules are the tier-0's; it is {:?})",
                    v.tier0.name
                ),
            ),
            Ok(None) => Response::error(
                404,
                format!("no tier-0 router {name:?}: the desired state has no tier0 section"),
            ),
            Err(e) => store_error(e),
        },
        ("GET", ["api", "v1", "instances"]) => match gw.store().instances() {
            Ok(list) => ok(gw.instances_json(&list)),
            Err(e) => store_error(e),
        },
        ("GET", ["api", "v1", "instances", id]) => match gw.store().instance(id) {
            Ok(Some(i)) => ok(gw
                .instances_json(std::slice::from_ref(&i))
                .get(0)
                .cloned()
                .unwrap_or_default()),
            Ok(None) => Response::error(404, format!("unknown instance {id:?}")),
            Err(e) => store_error(e),
        },
        ("GET", ["api", "v1", "instances", id, "config"]) => match gw.desired_config_for(id) {
            Ok((v, cfg)) => ok(serde_json::json!({"version": v, "config": cfg})),
            Err(e) => store_error(e),
        },
        ("PATCH", ["api", "v1", "instances", id]) => {
            #[derive(serde::Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Patch {
                tags: std::collections::BTreeMap<String, Option<String>>,
            }
            let patch: Patch = match serde_json::from_slice(&req.body) {
                Ok(p) => p,
                Err(e) => {
                    return Response::error(400, format!("expected {{\"tags\": {{...}}}}: {e}"));
                }
            };
            if let Some((k, _)) = patch.tags.iter().find(|(k, v)| {
                k.is_empty() || k.len() > 128 || v.as_ref().is_some_and(|v| v.len() > 256)
            }) {
                return Response::error(
                    400,
                    format!("tag {k:?}: keys are 1-128 bytes, values at most 256"),
                );
            }
            let r = gw.store().patch_tags(id, &patch.tags, now);
            match r {
                Ok(i) => {
                    gw.notify_changed();
                    ok(gw
                        .instances_json(std::slice::from_ref(&i))
                        .get(0)
                        .cloned()
                        .unwrap_or_default())
                }
                Err(e) => store_error_in(e, "the instance's tags"),
            }
        }
        ("POST", ["api", "v1", "instances", id, "revoke"]) => {
            let r = gw.store().revoke(id, now);
            match r {
                Ok(changed) => {
                    gw.notify_changed();
                    ok(serde_json::json!({"instance_id": id, "revoked": true, "changed": changed}))
                }
                Err(e) => store_error(e),
            }
        }
        ("GET", ["api", "v1", "certificates"]) => match gw.store().certificates() {
            Ok(certs) => ok(certificates_json(&certs)),
            Err(e) => store_error(e),
        },
        (_, ["api", "v1", ..]) => {
            Response::error(404, format!("no route {} {}", req.method, req.path))
        }
        _ => Response::error(404, format!("no such endpoint {}", req.path)),
    }
}

/// `GET /api/v1/routers/{t0}/nat-rules`: the tier-0's uplink and the NAT
/// rules its desired state gives, and which edge runs them.
pub fn nat_rules_json(v: &crate::store::Tier0View) -> serde_json::Value {
    let t0 = &v.tier0;
    serde_json::json!({
        "router": t0.name,
        "edge": v.edge,
        "uplink": t0.uplink,
        "snat": {"pool": t0.snat.pool, "filtering": t0.snat.filtering,
                 "port_min": t0.snat.port_min, "port_max": t0.snat.port_max,
                 "max_sessions": t0.snat.max_sessions},
        "rules": v.nat_rules,
    })
}

/// `GET /api/v1/load-balancers`: the desired state's virtual servers as
/// the state gives them, each with `balanced_at` (`instances`: by the
/// sending agents; `edge`), and each real server with a checker with its
/// `health` from `verdicts` ([`crate::health::json`]).
pub fn load_balancers_json(
    st: &crate::state::DesiredState,
    verdicts: &crate::health::Verdicts,
) -> serde_json::Value {
    let uplink = crate::load_balancer::uplink_addrs(st);
    serde_json::Value::Array(
        st.load_balancers
            .iter()
            .map(|vs| {
                let mut v = serde_json::to_value(vs).unwrap_or(serde_json::Value::Null);
                if let Some(o) = v.as_object_mut() {
                    let at = crate::load_balancer::balanced_at(vs, &uplink);
                    o.insert("balanced_at".into(), at.as_str().into());
                }
                let listed = v.get_mut("real_servers").and_then(|r| r.as_array_mut());
                for (rs, item) in vs.real_servers.iter().zip(listed.into_iter().flatten()) {
                    if let (Some(key), Some(o)) = (vs.check_key(rs), item.as_object_mut()) {
                        let verdict = verdicts.get(&key);
                        o.insert("health".into(), crate::health::json(verdict));
                    }
                }
                v
            })
            .collect(),
    )
}

/// `GET /api/v1/certificates`: every issued client certificate (revoked
/// ones included, with `revoked_at_unix`) and the revocation list.
pub fn certificates_json(certs: &[crate::store::CertificateRecord]) -> serde_json::Value {
    let all: Vec<serde_json::Value> = certs
        .iter()
        .map(|c| {
            serde_json::json!({
                "instance_id": c.instance_id,
                "serial": c.serial,
                "fingerprint": c.fingerprint,
                "not_after_unix": c.not_after_unix(),
                "revoked_at_unix": c.revoked_at,
            })
        })
        .collect();
    let revoked: Vec<serde_json::Value> = certs
        .iter()
        .filter_map(|c| {
            Some(serde_json::json!({
                "instance_id": c.instance_id,
                "serial": c.serial,
                "fingerprint": c.fingerprint,
                "revoked_at_unix": c.revoked_at?,
            }))
        })
        .collect();
    serde_json::json!({ "certificates": all, "revocations": revoked })
}
