//! Runs one [`ProbeSpec`]: a TCP connect, HTTP(S) GETs, or a script, each
//! bounded in time (and an answer body in size), through a [`Net`] that
//! opens the sockets and commands in the network namespace the real
//! servers are reached from. The outcome's reason is short and names what
//! failed (`connect 192.168.1.100:8089: connection refused`).

use std::io;
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use control::lb::UrlCheck;
use md5::{Digest, Md5};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::net::{TcpSocket, TcpStream};
use tokio::process::Command;

use super::schedule::{HttpProbe, MiscProbe, ProbeOutcome, ProbeSpec};

/// The largest answer body an HTTP check reads; a larger one fails it.
pub const MAX_BODY: usize = 1 << 20;

/// keepalived's `User-Agent`.
const USER_AGENT: &str = "KeepAliveClient";

/// Where probes run: sockets and commands in the network namespace the
/// real servers are reached from.
pub trait Net: Send + Sync {
    /// A new IPv4 TCP socket, not yet connected.
    fn tcp_socket(&self) -> io::Result<TcpSocket>;

    /// `program` with `args`, to be spawned (the probe sets its standard
    /// streams, process group and kill-on-drop).
    fn command(&self, program: &str, args: &[String]) -> Command;
}

/// This process's own network namespace.
#[derive(Debug, Clone, Copy, Default)]
pub struct HostNet;

impl Net for HostNet {
    fn tcp_socket(&self) -> io::Result<TcpSocket> {
        TcpSocket::new_v4()
    }

    fn command(&self, program: &str, args: &[String]) -> Command {
        let mut cmd = Command::new(program);
        cmd.args(args);
        cmd
    }
}

/// Why a probe failed; its text is the outcome's reason.
#[derive(Debug, thiserror::Error)]
pub enum ProbeFailure {
    #[error("connect {target}: {}", short(.source))]
    Connect {
        target: SocketAddr,
        source: io::Error,
    },
    #[error("connect {target}: {}", timed_out(*.after))]
    ConnectTimeout { target: SocketAddr, after: Duration },
    #[error("GET {path}: {failure}")]
    Get { path: String, failure: GetFailure },
    #[error("misc_path is empty")]
    NoScript,
    #[error("cannot run {program}: {}", short(.source))]
    Spawn { program: String, source: io::Error },
    #[error("waiting for {program}: {}", short(.source))]
    Wait { program: String, source: io::Error },
    #[error("{}", timed_out(*.0))]
    ScriptTimeout(Duration),
    #[error("exit status {0}")]
    Exit(i32),
    #[error("killed by signal {0}")]
    Signal(i32),
}

/// Why one url of an HTTP check failed.
#[derive(Debug, thiserror::Error)]
pub enum GetFailure {
    #[error("{}", timed_out(*.0))]
    Timeout(Duration),
    #[error("TLS configuration: {0}")]
    TlsConfig(String),
    #[error("TLS handshake: {}", short(.0))]
    Tls(io::Error),
    #[error("{0}")]
    Http(#[from] bounded_http::ClientError),
    #[error("HTTP status {status} not in {accepted}")]
    Status { status: u16, accepted: String },
    #[error("digest mismatch: body MD5 {got}, expected {want}")]
    Digest { got: String, want: String },
}

/// Runs `spec` once.
pub async fn run(spec: &ProbeSpec, net: &dyn Net) -> ProbeOutcome {
    let result = match spec {
        ProbeSpec::Tcp { target, timeout } => connect(net, *target, *timeout).await.map(|_| None),
        ProbeSpec::Http(h) => http(net, h).await.map(|()| None),
        ProbeSpec::Misc(m) => misc(net, m).await,
    };
    match result {
        Ok(weight) => ProbeOutcome::Success { weight },
        Err(e) => ProbeOutcome::failure(e.to_string()),
    }
}

/// A connection to `target` within `timeout`.
async fn connect(
    net: &dyn Net,
    target: SocketAddr,
    timeout: Duration,
) -> Result<TcpStream, ProbeFailure> {
    let refused = |source| ProbeFailure::Connect { target, source };
    let socket = net.tcp_socket().map_err(refused)?;
    match tokio::time::timeout(timeout, socket.connect(target)).await {
        Ok(connected) => connected.map_err(refused),
        Err(_) => Err(ProbeFailure::ConnectTimeout {
            target,
            after: timeout,
        }),
    }
}

/// Every url of `h` in turn, each on a new connection.
async fn http(net: &dyn Net, h: &HttpProbe) -> Result<(), ProbeFailure> {
    let host = match &h.virtualhost {
        Some(v) => v.clone(),
        None => h.target.to_string(),
    };
    for url in &h.urls {
        let stream = connect(net, h.target, h.timeout).await?;
        let checked = match tokio::time::timeout(h.timeout, get(stream, h, &host, &url.path)).await
        {
            Ok(reply) => reply.and_then(|r| judge(url, &r)),
            Err(_) => Err(GetFailure::Timeout(h.timeout)),
        };
        checked.map_err(|failure| ProbeFailure::Get {
            path: url.path.clone(),
            failure,
        })?;
    }
    Ok(())
}

/// `GET path` on `stream` (over TLS for `SSL_GET`).
async fn get(
    stream: TcpStream,
    h: &HttpProbe,
    host: &str,
    path: &str,
) -> Result<bounded_http::Reply, GetFailure> {
    let req = bounded_http::client::request(
        "GET",
        path,
        host,
        &[("User-Agent", USER_AGENT)],
        Vec::new(),
    )?;
    let reply = if h.tls {
        let config = tls_config().map_err(GetFailure::TlsConfig)?;
        let name = server_name(h.virtualhost.as_deref(), h.target);
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, stream)
            .await
            .map_err(GetFailure::Tls)?;
        bounded_http::client::send(tls, req, MAX_BODY).await?
    } else {
        bounded_http::client::send(stream, req, MAX_BODY).await?
    };
    Ok(reply)
}

/// Whether `reply` passes `url`'s status and digest.
fn judge(url: &UrlCheck, reply: &bounded_http::Reply) -> Result<(), GetFailure> {
    let accepted = if url.status_code.is_empty() {
        (200..=299).contains(&reply.status)
    } else {
        url.status_code.contains(&reply.status)
    };
    if !accepted {
        return Err(GetFailure::Status {
            status: reply.status,
            accepted: ranges(&url.status_code),
        });
    }
    if let Some(want) = &url.digest {
        let got = md5_hex(&reply.body);
        if !got.eq_ignore_ascii_case(want) {
            return Err(GetFailure::Digest {
                got,
                want: want.clone(),
            });
        }
    }
    Ok(())
}

/// The MD5 of `body`, lowercase hex (keepalived's `digest`, `genhash`).
pub fn md5_hex(body: &[u8]) -> String {
    Md5::digest(body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Status codes as ranges (`200-204,301`); none: `200-299`.
fn ranges(codes: &[u16]) -> String {
    if codes.is_empty() {
        return "200-299".into();
    }
    let mut sorted = codes.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while let Some(&first) = sorted.get(i) {
        let mut last = first;
        while sorted.get(i + 1) == Some(&(last + 1)) {
            last += 1;
            i += 1;
        }
        out.push(if first == last {
            first.to_string()
        } else {
            format!("{first}-{last}")
        });
        i += 1;
    }
    out.join(",")
}

/// The TLS name of an `SSL_GET`: the `virtualhost` (without a port) when it
/// is a DNS name (sent as SNI), else the address (no SNI).
fn server_name(virtualhost: Option<&str>, target: SocketAddr) -> ServerName<'static> {
    let host = virtualhost.map(|v| match v.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => v,
    });
    host.and_then(|h| ServerName::try_from(h.to_owned()).ok())
        .unwrap_or_else(|| ServerName::from(target.ip()))
}

/// The client configuration of every `SSL_GET`: ring, no client
/// certificate, and any server certificate accepted.
fn tls_config() -> Result<Arc<ClientConfig>, String> {
    static CONFIG: OnceLock<Result<Arc<ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let verifier = Arc::new(AcceptAnyCertificate(provider.clone()));
            ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map(|b| {
                    Arc::new(
                        b.dangerous()
                            .with_custom_certificate_verifier(verifier)
                            .with_no_client_auth(),
                    )
                })
                .map_err(|e| format!("TLS configuration: {e}"))
        })
        .clone()
}

/// keepalived's `SSL_GET` verifies no certificate: any chain and name is
/// accepted. The handshake signature is still checked (the server holds
/// the key of the certificate it sent).
#[derive(Debug)]
pub(crate) struct AcceptAnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl AcceptAnyCertificate {
    /// With the ring provider's signature algorithms.
    #[cfg(test)]
    pub(crate) fn ring() -> AcceptAnyCertificate {
        AcceptAnyCertificate(Arc::new(rustls::crypto::ring::default_provider()))
    }
}

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The script of `m`, killed (with its process group) past its timeout.
/// Returns the weight a `misc_dynamic` exit sets.
async fn misc(net: &dyn Net, m: &MiscProbe) -> Result<Option<u32>, ProbeFailure> {
    if m.program.is_empty() {
        return Err(ProbeFailure::NoScript);
    }
    let mut cmd = net.command(&m.program, &m.args);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    let program = || m.program.clone();
    let mut child = cmd.spawn().map_err(|source| ProbeFailure::Spawn {
        program: program(),
        source,
    })?;
    match tokio::time::timeout(m.timeout, child.wait()).await {
        Ok(Ok(status)) => exit_verdict(status, m.dynamic),
        Ok(Err(source)) => Err(ProbeFailure::Wait {
            program: program(),
            source,
        }),
        Err(_) => {
            kill_group(child.id());
            // The leader itself, and reaped (kill_on_drop would leave a
            // zombie until the runtime's next reap).
            let _ = child.kill().await;
            Err(ProbeFailure::ScriptTimeout(m.timeout))
        }
    }
}

/// Exit 0: up at the configured weight; with `dynamic`, 2..=255: up at
/// `code - 2`; anything else fails.
fn exit_verdict(status: ExitStatus, dynamic: bool) -> Result<Option<u32>, ProbeFailure> {
    match (status.code(), status.signal()) {
        (Some(0), _) => Ok(None),
        (Some(code @ 2..=255), _) if dynamic => Ok(u32::try_from(code - 2).ok()),
        (Some(code), _) => Err(ProbeFailure::Exit(code)),
        (None, Some(sig)) => Err(ProbeFailure::Signal(sig)),
        // Neither an exit nor a signal cannot be on Unix.
        (None, None) => Err(ProbeFailure::Exit(-1)),
    }
}

/// SIGKILL to the process group `pid` leads (what the script started
/// dies with it).
fn kill_group(pid: Option<u32>) {
    let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) else {
        return;
    };
    let pgrp = nix::unistd::Pid::from_raw(pid);
    if let Err(e) = nix::sys::signal::killpg(pgrp, nix::sys::signal::Signal::SIGKILL) {
        tracing::debug!(pid, error = %e, "killing a timed-out check script's group");
    }
}

/// `timeout after 5 s` (or `after 30 ms` below a second, in tests).
fn timed_out(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("timeout after {} s", d.as_secs())
    } else {
        format!("timeout after {} ms", d.as_millis())
    }
}

/// An I/O error without its `(os error N)` tail, lowercase:
/// `connection refused`.
fn short(e: &io::Error) -> String {
    let s = e.to_string();
    let s = match s.find(" (os error") {
        Some(i) => &s[..i],
        None => &s[..],
    };
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_ranges_read_as_written() {
        assert_eq!(ranges(&[]), "200-299");
        assert_eq!(ranges(&[204, 200, 201, 202, 203, 301, 200]), "200-204,301");
        assert_eq!(ranges(&[404]), "404");
    }

    #[test]
    fn judging_status_and_digest() {
        let url = |codes: Vec<u16>, digest: Option<&str>| UrlCheck {
            path: "/".into(),
            status_code: codes,
            digest: digest.map(str::to_owned),
        };
        let reply = |status, body: &[u8]| bounded_http::Reply {
            status,
            body: body.to_vec(),
        };
        let judged = |u, r| judge(&u, &r).map_err(|e| e.to_string());
        assert_eq!(judged(url(vec![], None), reply(204, b"")), Ok(()));
        assert_eq!(
            judged(url(vec![], None), reply(500, b"")),
            Err("HTTP status 500 not in 200-299".into())
        );
        assert_eq!(
            judged(url(vec![301, 302], None), reply(200, b"")),
            Err("HTTP status 200 not in 301-302".into())
        );
        // md5("hello") = 5d41402abc4b2a76b9719d911017c592
        let good = Some("5D41402ABC4B2A76B9719D911017C592");
        assert_eq!(judged(url(vec![], good), reply(200, b"hello")), Ok(()));
        let err = judged(url(vec![], good), reply(200, b"hellO")).expect_err("mismatch");
        assert!(err.starts_with("digest mismatch"), "{err}");
    }

    #[test]
    fn sni_is_the_virtualhost_when_it_is_a_name() {
        let target: SocketAddr = "10.0.0.5:443".parse().expect("addr");
        let name = |v| format!("{:?}", server_name(v, target));
        assert!(name(Some("www.example.com")).contains("www.example.com"));
        assert!(name(Some("www.example.com:8443")).contains("\"www.example.com\""));
        assert!(name(Some("10.9.9.9")).contains("IpAddress"));
        assert!(name(None).contains("IpAddress"));
        assert!(name(Some("not a name")).contains("IpAddress"));
    }

    #[test]
    fn short_reasons() {
        let e = io::Error::from_raw_os_error(111);
        assert_eq!(short(&e), "connection refused");
        assert_eq!(timed_out(Duration::from_secs(5)), "timeout after 5 s");
        assert_eq!(timed_out(Duration::from_millis(40)), "timeout after 40 ms");
    }

    #[test]
    fn any_certificate_is_accepted() {
        let v = AcceptAnyCertificate::ring();
        let junk = CertificateDer::from(vec![1u8, 2, 3]);
        let name = ServerName::try_from("x.test").expect("name");
        assert!(
            v.verify_server_cert(&junk, &[], &name, &[], UnixTime::now())
                .is_ok()
        );
        assert!(!v.supported_verify_schemes().is_empty());
        assert!(tls_config().is_ok());
    }
}
