//! The gateway's listeners:
//!
//! * enrollment, HTTPS (default `0.0.0.0:8443`): server-auth TLS with the
//!   gateway certificate, only `POST /api/v1/enroll` ([`crate::enroll`]);
//! * admin REST API, plain HTTP on loopback (default `127.0.0.1:8080`),
//!   every request needs `Authorization: Bearer <admin.token>`:
//!   - `GET  /api/v1/state`                  the desired state (JSON)
//!   - `PUT  /api/v1/state`                  replace it (JSON or YAML body; same validation as `apply`)
//!   - `GET  /api/v1/switches`, `GET /api/v1/routers`
//!   - `GET  /api/v1/instances`              inventory with placement
//!   - `GET  /api/v1/instances/{id}/config`  the desired config pushed to it
//!   - `PATCH /api/v1/instances/{id}`        `{"tags": {"nsx:network": "web", "x": null}}` merge (null removes)
//!   - `POST /api/v1/instances/{id}/revoke`
//!   - `GET  /api/v1/certificates`           issued client certificates and revocations
//! * metrics, plain HTTP on loopback (default `127.0.0.1:9465`, no token):
//!   `GET /metrics`, OpenMetrics text ([`crate::metrics`]).
//!
//! Each connection serves one request with a deadline and size limits;
//! connections beyond [`MAX_CONNECTIONS`] per listener are dropped.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::enroll;
use crate::gateway::{Gateway, GatewayError};
use crate::http::{Request, Response, serve_one};
use crate::metrics::{self, Metrics};
use crate::pki::{self, PkiError};
use crate::state::{self, StateError};
use crate::store::StoreError;
use crate::{ops, util};

/// Concurrent connections per listener.
pub const MAX_CONNECTIONS: usize = 512;
/// Deadline for the TLS handshake and for reading a request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest admin API body.
pub const MAX_ADMIN_BODY: usize = 1 << 20;
/// Largest body read on the metrics listener (a scrape has none; anything
/// bigger is refused before routing).
pub const MAX_METRICS_BODY: usize = 4096;

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
}

/// Running listeners (tasks end when dropped via [`Server::shutdown`]).
#[derive(Debug)]
pub struct Server {
    pub enroll_addr: SocketAddr,
    pub api_addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
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

/// Binds both listeners and spawns their accept loops.
pub async fn start(
    gw: Arc<Gateway>,
    tls: Arc<rustls::ServerConfig>,
    enroll_addr: SocketAddr,
    api_addr: SocketAddr,
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

    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let egw = gw.clone();
    let enroll_task = tokio::spawn(accept_loop(el, move |tcp, peer| {
        let acceptor = acceptor.clone();
        let gw = egw.clone();
        async move {
            let tls = match tokio::time::timeout(REQUEST_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::info!(%peer, "enrollment TLS handshake failed: {e}");
                    return;
                }
                Err(_) => {
                    tracing::info!(%peer, "enrollment TLS handshake timed out");
                    return;
                }
            };
            serve_one(tls, enroll::MAX_BODY, REQUEST_TIMEOUT, |req| {
                blocking(move || enroll_route(&gw, req, peer))
            })
            .await;
        }
    }));
    let agw = gw.clone();
    let api_task = tokio::spawn(accept_loop(al, move |tcp, _peer| {
        let gw = agw.clone();
        async move {
            serve_one(tcp, MAX_ADMIN_BODY, REQUEST_TIMEOUT, |req| {
                blocking(move || admin_route(&gw, req))
            })
            .await;
        }
    }));
    let watch_task = tokio::spawn(gw.clone().watch_store(Duration::from_millis(500)));
    tracing::info!(%enroll_addr, %api_addr, "nsx-gateway serving");
    Ok(Server {
        enroll_addr,
        api_addr,
        tasks: vec![enroll_task, api_task, watch_task],
    })
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
    let state = Arc::new(Metrics::new(gw));
    let task = tokio::spawn(accept_loop(listener, move |tcp, _peer| {
        let state = state.clone();
        async move {
            serve_one(tcp, MAX_METRICS_BODY, REQUEST_TIMEOUT, |req| async move {
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
                    Ok(text) => Response::with_body(200, metrics::CONTENT_TYPE, text.into_bytes()),
                    Err(e) => {
                        tracing::error!("metrics: cannot encode: {e}");
                        Response::error(500, "cannot encode metrics")
                    }
                })
                .await
            })
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

async fn accept_loop<F, Fut>(listener: TcpListener, handle: F)
where
    F: Fn(tokio::net::TcpStream, SocketAddr) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "too many connections; dropping");
            continue;
        };
        let fut = handle(tcp, peer);
        tokio::spawn(async move {
            fut.await;
            drop(permit);
        });
    }
}

/// `nsx-gateway serve`: opens the directory, serves until SIGINT/SIGTERM.
///
/// `metrics_addr`: the metrics endpoint (`None`: none).
pub async fn run(
    dir: &Path,
    enroll_addr: SocketAddr,
    api_addr: SocketAddr,
    control_addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
) -> Result<(), ServeError> {
    let gw = Gateway::open(dir)?;
    let tls = pki::enroll_server_config(dir)?;
    let server = start(gw.clone(), tls, enroll_addr, api_addr).await?;
    let metrics_task = match metrics_addr {
        Some(addr) => Some(start_metrics(gw.clone(), addr).await?.1),
        None => None,
    };
    // The control channel: mutual TLS 1.3 on 5555.
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
    tracing::info!(%control_addr, "control channel listening");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let store: Arc<dyn crate::control_server::ControlStore> = Arc::new(
        metrics::CountingControl::new(crate::control_store::GatewayControl::new(gw.clone()), gw),
    );
    let control = tokio::spawn(crate::control_server::serve(
        listener,
        Arc::new(ctls),
        store,
        stop_rx,
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
    match e {
        StoreError::UnknownInstance(_) => Response::error(404, e.to_string()),
        StoreError::Invalid(p) => problems_response(&p),
        other => {
            tracing::error!("store: {other}");
            Response::error(500, other.to_string())
        }
    }
}

fn problems_response(p: &control::validate::Problems) -> Response {
    Response::json(
        422,
        &serde_json::json!({
            "error": format!("{} problem(s) in desired state", p.0.len()),
            "problems": p.0.iter().map(|x| serde_json::json!({"path": x.path, "message": x.message})).collect::<Vec<_>>(),
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
        ("GET", ["api", "v1", "instances"]) => match gw.store().instances() {
            Ok(list) => ok(ops::instances_json(&list)),
            Err(e) => store_error(e),
        },
        ("GET", ["api", "v1", "instances", id]) => match gw.store().instance(id) {
            Ok(Some(i)) => ok(ops::instances_json(std::slice::from_ref(&i))
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
                    ok(ops::instances_json(std::slice::from_ref(&i))
                        .get(0)
                        .cloned()
                        .unwrap_or_default())
                }
                Err(e) => store_error(e),
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
