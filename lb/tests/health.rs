//! The health checkers against real peers in this process: TCP listeners,
//! HTTP and HTTPS servers on 127.0.0.1, scripts in a temporary directory,
//! and the monitor's task running them with a delay loop of milliseconds.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use control::lb::{
    CheckTiming, HealthCheck, LbProtocol, Liveness, RealServer, Scheduler, UrlCheck, VirtualServer,
};
use lb::health::probe::{self, md5_hex};
use lb::health::{
    HealthEvent, HealthKey, HostNet, HttpProbe, MiscProbe, Monitor, MonitorHandle, ProbeOutcome,
    ProbeSpec,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

const T: Duration = Duration::from_millis(500);

fn ok() -> ProbeOutcome {
    ProbeOutcome::ok()
}

fn reason(o: ProbeOutcome) -> String {
    match o {
        ProbeOutcome::Failure { reason } => reason,
        other => panic!("expected a failure, got {other:?}"),
    }
}

/// A directory under the system's temporary one, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "lb-health-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }

    /// An executable `sh` script `name` with `body`.
    fn script(&self, name: &str, body: &str) -> String {
        use std::os::unix::fs::PermissionsExt;
        let p = self.0.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).expect("write script");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        p.display().to_string()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------- TCP

#[tokio::test]
async fn tcp_check_passes_on_a_listener_and_fails_once_it_is_closed() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let target = listener.local_addr().expect("addr");
    let spec = ProbeSpec::Tcp { target, timeout: T };
    assert_eq!(probe::run(&spec, &HostNet).await, ok());
    drop(listener);
    assert_eq!(
        reason(probe::run(&spec, &HostNet).await),
        format!("connect {target}: connection refused")
    );
}

#[tokio::test]
async fn tcp_check_times_out_on_a_listener_that_takes_no_more() {
    // Backlog 0 with its queue filled: the next SYN is dropped and the
    // connect hangs until the check's timeout.
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    let listener = sock.listen(0).expect("listen");
    let target = listener.local_addr().expect("addr");
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(s)) = tokio::time::timeout(
            Duration::from_millis(100),
            tokio::net::TcpStream::connect(target),
        )
        .await
        {
            fillers.push(s);
        }
    }
    let spec = ProbeSpec::Tcp {
        target,
        timeout: Duration::from_millis(150),
    };
    let started = Instant::now();
    assert_eq!(
        reason(probe::run(&spec, &HostNet).await),
        format!("connect {target}: timeout after 150 ms")
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

// ---------------------------------------------------------------- HTTP

/// One answer per connection: `answer` whole, then the connection closed.
/// Returns the address and the request heads seen.
async fn http_server(answer: Vec<u8>) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (answer, log) = (answer.clone(), log.clone());
            tokio::spawn(async move { answer_one(stream, &answer, &log).await });
        }
    });
    (addr, seen)
}

/// Reads a request head from `io`, logs it and writes `answer`.
async fn answer_one<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: S,
    answer: &[u8],
    log: &Mutex<Vec<String>>,
) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match io.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    log.lock()
        .expect("log")
        .push(String::from_utf8_lossy(&head).into_owned());
    let _ = io.write_all(answer).await;
    let _ = io.shutdown().await;
}

fn answer(status: &str, body: &[u8]) -> Vec<u8> {
    let mut a = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    a.extend_from_slice(body);
    a
}

fn url(path: &str, status_code: Vec<u16>, digest: Option<String>) -> UrlCheck {
    UrlCheck {
        path: path.into(),
        status_code,
        digest,
    }
}

fn http_spec(target: SocketAddr, urls: Vec<UrlCheck>) -> ProbeSpec {
    ProbeSpec::Http(HttpProbe {
        target,
        timeout: T,
        tls: false,
        virtualhost: None,
        urls,
    })
}

#[tokio::test]
async fn http_get_checks_the_status_and_sends_keepalived_s_request() {
    let (addr, seen) = http_server(answer("200 OK", b"fine")).await;
    let spec = http_spec(addr, vec![url("/health", vec![], None)]);
    assert_eq!(probe::run(&spec, &HostNet).await, ok());
    let head = seen.lock().expect("log")[0].clone();
    assert!(head.starts_with("GET /health HTTP/1.1\r\n"), "{head}");
    assert!(head.contains(&format!("\r\nHost: {addr}\r\n")), "{head}");
    assert!(
        head.contains("\r\nUser-Agent: KeepAliveClient\r\n"),
        "{head}"
    );
    // Another status is accepted only when listed.
    let spec = http_spec(addr, vec![url("/", vec![301], None)]);
    assert_eq!(
        reason(probe::run(&spec, &HostNet).await),
        "GET /: HTTP status 200 not in 301"
    );
    let (addr, seen) = http_server(answer("500 Internal Server Error", b"")).await;
    let ProbeSpec::Http(mut h) = http_spec(addr, vec![url("/a", vec![], None)]) else {
        unreachable!()
    };
    h.virtualhost = Some("www.example.test".into());
    assert_eq!(
        reason(probe::run(&ProbeSpec::Http(h), &HostNet).await),
        "GET /a: HTTP status 500 not in 200-299"
    );
    let head = seen.lock().expect("log")[0].clone();
    assert!(head.contains("\r\nHost: www.example.test\r\n"), "{head}");
}

#[tokio::test]
async fn http_get_compares_the_body_digest_of_every_url() {
    let body = b"<html>it works</html>";
    let (addr, seen) = http_server(answer("200 OK", body)).await;
    let right = md5_hex(body);
    assert_eq!(right.len(), 32);
    let spec = http_spec(
        addr,
        vec![
            url("/one", vec![], Some(right.clone())),
            url("/two", vec![200], Some(right.clone())),
        ],
    );
    assert_eq!(probe::run(&spec, &HostNet).await, ok());
    assert_eq!(seen.lock().expect("log").len(), 2, "one connection per url");
    let wrong = md5_hex(b"something else");
    let spec = http_spec(
        addr,
        vec![
            url("/one", vec![], Some(right)),
            url("/two", vec![], Some(wrong.clone())),
        ],
    );
    assert_eq!(
        reason(probe::run(&spec, &HostNet).await),
        format!(
            "GET /two: digest mismatch: body MD5 {}, expected {wrong}",
            md5_hex(body)
        )
    );
}

#[tokio::test]
async fn http_get_bounds_the_body_and_the_wait() {
    let big = vec![b'x'; probe::MAX_BODY + 1];
    let (addr, _) = http_server(answer("200 OK", &big)).await;
    let r = reason(probe::run(&http_spec(addr, vec![url("/", vec![], None)]), &HostNet).await);
    assert!(r.starts_with("GET /: response body:"), "{r}");
    // A server that accepts and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let ProbeSpec::Http(mut h) = http_spec(addr, vec![url("/slow", vec![], None)]) else {
        unreachable!()
    };
    h.timeout = Duration::from_millis(100);
    let started = Instant::now();
    assert_eq!(
        reason(probe::run(&ProbeSpec::Http(h), &HostNet).await),
        "GET /slow: timeout after 100 ms"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    hold.abort();
    // Nothing listening.
    drop(hold);
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = closed.local_addr().expect("addr");
    drop(closed);
    let r = reason(probe::run(&http_spec(addr, vec![url("/", vec![], None)]), &HostNet).await);
    assert_eq!(r, format!("connect {addr}: connection refused"));
}

/// An HTTPS server with a self-signed certificate for `name`, answering
/// `answer`; returns its address and the SNI each handshake carried.
async fn https_server(
    name: &str,
    answer: Vec<u8>,
) -> (SocketAddr, Arc<Mutex<Vec<Option<String>>>>) {
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    let cert = rcgen::generate_simple_self_signed(vec![name.to_owned()]).expect("cert");
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der()));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(vec![cert.cert.der().clone()], key)
    .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let snis = Arc::new(Mutex::new(Vec::new()));
    let log = snis.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (acceptor, answer, log) = (acceptor.clone(), answer.clone(), log.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let sni = tls.get_ref().1.server_name().map(str::to_owned);
                log.lock().expect("log").push(sni);
                answer_one(tls, &answer, &Mutex::new(Vec::new())).await;
            });
        }
    });
    (addr, snis)
}

#[tokio::test]
async fn ssl_get_accepts_a_self_signed_certificate_and_sends_the_virtualhost_as_sni() {
    let body = b"secure";
    let (addr, snis) = https_server("www.example.test", answer("200 OK", body)).await;
    let h = |virtualhost: Option<&str>, digest: String| {
        ProbeSpec::Http(HttpProbe {
            target: addr,
            timeout: T,
            tls: true,
            virtualhost: virtualhost.map(str::to_owned),
            urls: vec![url("/", vec![], Some(digest))],
        })
    };
    assert_eq!(
        probe::run(&h(Some("www.example.test"), md5_hex(body)), &HostNet).await,
        ok()
    );
    assert_eq!(probe::run(&h(None, md5_hex(body)), &HostNet).await, ok());
    assert_eq!(
        *snis.lock().expect("log"),
        [Some("www.example.test".to_owned()), None],
        "the name as SNI, none for an address"
    );
    let r = reason(probe::run(&h(None, md5_hex(b"other")), &HostNet).await);
    assert!(r.starts_with("GET /: digest mismatch"), "{r}");
    // A plain HTTP server (answering before any request) is no TLS server.
    let plain = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let plain_addr = plain.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = plain.accept().await {
            let _ = s.write_all(&answer("400 Bad Request", b"")).await;
        }
    });
    let ProbeSpec::Http(mut p) = h(None, md5_hex(b"")) else {
        unreachable!()
    };
    p.target = plain_addr;
    let r = reason(probe::run(&ProbeSpec::Http(p), &HostNet).await);
    assert!(r.starts_with("GET /: TLS handshake:"), "{r}");
}

// ---------------------------------------------------------------- MISC

fn misc_spec(program: String, args: &[&str], dynamic: bool) -> ProbeSpec {
    ProbeSpec::Misc(MiscProbe {
        program,
        args: args.iter().map(|a| (*a).to_owned()).collect(),
        timeout: Duration::from_secs(10),
        dynamic,
    })
}

#[tokio::test]
async fn misc_check_exit_codes_with_and_without_misc_dynamic() {
    let dir = TempDir::new();
    let exit = dir.script("exit.sh", "exit \"$1\"");
    let run = |code: &'static str, dynamic: bool| {
        let spec = misc_spec(exit.clone(), &[code], dynamic);
        async move { probe::run(&spec, &HostNet).await }
    };
    assert_eq!(run("0", false).await, ok());
    assert_eq!(reason(run("1", false).await), "exit status 1");
    assert_eq!(reason(run("5", false).await), "exit status 5");
    assert_eq!(run("0", true).await, ok());
    assert_eq!(reason(run("1", true).await), "exit status 1");
    assert_eq!(
        run("5", true).await,
        ProbeOutcome::Success { weight: Some(3) }
    );
    assert_eq!(
        run("2", true).await,
        ProbeOutcome::Success { weight: Some(0) }
    );
    assert_eq!(
        run("255", true).await,
        ProbeOutcome::Success { weight: Some(253) }
    );
    let missing = misc_spec("/nonexistent/check".into(), &[], false);
    assert_eq!(
        reason(probe::run(&missing, &HostNet).await),
        "cannot run /nonexistent/check: no such file or directory"
    );
    let empty = misc_spec(String::new(), &[], false);
    assert_eq!(
        reason(probe::run(&empty, &HostNet).await),
        "misc_path is empty"
    );
}

#[tokio::test]
async fn misc_check_past_its_timeout_is_killed_with_what_it_started() {
    let dir = TempDir::new();
    let pidfile = dir.path("child.pid");
    let slow = dir.script(
        "slow.sh",
        &format!("sleep 30 &\necho $! > {}\nwait", pidfile.display()),
    );
    let spec = ProbeSpec::Misc(MiscProbe {
        program: slow,
        args: vec![],
        timeout: Duration::from_millis(300),
        dynamic: false,
    });
    let started = Instant::now();
    assert_eq!(
        reason(probe::run(&spec, &HostNet).await),
        "timeout after 300 ms"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    let pid = std::fs::read_to_string(&pidfile).expect("the script wrote its child's pid");
    let stat = Path::new("/proc").join(pid.trim()).join("stat");
    let deadline = Instant::now() + Duration::from_secs(5);
    // Gone, or a zombie waiting for init to reap it.
    while let Ok(s) = std::fs::read_to_string(&stat) {
        if s.split(") ")
            .nth(1)
            .is_some_and(|rest| rest.starts_with('Z'))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the script's sleep survived: {s}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------- monitor

fn server(port: u16, check: HealthCheck) -> RealServer {
    RealServer {
        check: Some(check),
        ..RealServer::new(Ipv4Addr::LOCALHOST, port)
    }
}

async fn next_event(rx: &mut mpsc::Receiver<HealthEvent>) -> HealthEvent {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("an event in time")
        .expect("the monitor runs")
}

#[tokio::test]
async fn the_monitor_runs_due_checks_and_reports_changes_of_standing() {
    let dir = TempDir::new();
    let flag = dir.path("up");
    let script = dir.script("flag.sh", &format!("test -e {}", flag.display()));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let tcp_port = listener.local_addr().expect("addr").port();
    let mut vs = VirtualServer::new(
        Ipv4Addr::new(10, 64, 1, 2),
        80,
        LbProtocol::Tcp,
        Scheduler::Sh,
    );
    vs.delay_loop = Some(2); // 2 units of 25 ms
    let tcp = HealthCheck::Tcp {
        timing: CheckTiming {
            retry: Some(2),
            delay_before_retry: Some(1),
            ..CheckTiming::default()
        },
    };
    let misc = HealthCheck::Misc {
        path: script,
        timeout: Some(40), // 1 s: the loop's 50 ms is short for a busy machine
        dynamic: false,
        timing: CheckTiming::default(),
    };
    vs.real_servers = vec![server(tcp_port, tcp), server(1, misc)];
    let tcp_key = HealthKey::of(&vs, &vs.real_servers[0]);
    let misc_key = HealthKey::of(&vs, &vs.real_servers[1]);

    let handle = MonitorHandle::new(Monitor::with_second(Duration::from_millis(25)));
    assert!(handle.update(std::slice::from_ref(&vs)).is_empty());
    let (tx, mut rx) = mpsc::channel(16);
    let runner = handle.clone();
    let task = tokio::spawn(async move { runner.run(Arc::new(HostNet), tx).await });

    // No flag: the script fails, and with MISC_CHECK's retry 0 at once.
    let e = next_event(&mut rx).await;
    assert_eq!((e.key, e.liveness), (misc_key, Liveness::Down), "{e:?}");
    assert_eq!(e.reason, "MISC_CHECK failed: exit status 1");
    std::fs::write(&flag, b"").expect("flag");
    let e = next_event(&mut rx).await;
    assert_eq!(
        (e.key, e.liveness, e.reason.as_str()),
        (misc_key, Liveness::Up, "MISC_CHECK ok")
    );

    // The listener closes: down after 3 failed connects.
    let view = handle.snapshot();
    let tcp_view = view.iter().find(|v| v.key == tcp_key).expect("tcp checked");
    assert_eq!(
        (tcp_view.kind, tcp_view.liveness),
        ("TCP_CHECK", Liveness::Up)
    );
    drop(listener);
    let e = next_event(&mut rx).await;
    assert_eq!((e.key, e.liveness), (tcp_key, Liveness::Down), "{e:?}");
    assert!(
        e.reason
            .starts_with("TCP_CHECK failed 3 times: connect 127.0.0.1:"),
        "{e:?}"
    );
    let view = handle.snapshot();
    let tcp_view = view.iter().find(|v| v.key == tcp_key).expect("tcp checked");
    assert!(
        tcp_view.failures >= 3 && tcp_view.transitions == 1,
        "{tcp_view:?}"
    );
    assert!(tcp_view.last_check_age.is_some());

    // The TCP server is taken out of the configuration while checks run.
    vs.real_servers.truncate(1);
    vs.real_servers[0].check = None;
    let events = handle.update(std::slice::from_ref(&vs));
    assert_eq!(events.len(), 1, "the down server is up without its checker");
    assert_eq!((events[0].key, events[0].liveness), (tcp_key, Liveness::Up));
    assert!(handle.snapshot().is_empty());
    assert_eq!(handle.liveness(&misc_key), None);

    // The receiver gone, the task ends.
    drop(rx);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("run ends when its events have nowhere to go")
        .expect("no panic");
}
