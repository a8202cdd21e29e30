//! The operator's views of a serving gateway: `GET /api/v1/certificates`
//! on the admin API and the Prometheus endpoint (`GET /metrics`), over real
//! sockets on 127.0.0.1.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use agent::gw::enroll::EnrollError;
use control::proto::InstanceMeta;
use control::{AgentMsg, Decoder, GatewayMsg, encode};
use gateway::control_server::{ControlStore, ServerOptions, SessionEvent, StoreRefusal};
use gateway::control_store::GatewayControl;
use gateway::metrics::CountingControl;
use gateway::{ops, pki, util};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::{Fixture, NAME, fixture, meta};

/// Enrolls `m`; returns the request body (for a replay) and the certificate PEM.
async fn enroll(f: &Fixture, m: &InstanceMeta) -> (String, String) {
    let (body, cert, _key) = enroll_with_key(f, m).await;
    (body, cert)
}

/// [`enroll`], also returning the instance's private key (PEM).
async fn enroll_with_key(f: &Fixture, m: &InstanceMeta) -> (String, String, String) {
    let (body, key) = common::enroll_body(&f.bootstrap_pem, m, util::now_unix());
    let resp = f.submit(&body).await.expect("enrolled");
    (body, resp.certificate_pem, key)
}

/// One plain HTTP/1.1 request without a body; returns (status, head, body).
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> (u16, String, String) {
    common::http(addr, method, path, token, "").await
}

/// `name{labels}` -> value; checks every line is a comment (`# HELP`,
/// `# TYPE`, final `# EOF`) or a sample of an announced `nsx_gateway_`
/// family, and that no series repeats.
fn parse(text: &str) -> (HashMap<String, String>, HashMap<String, f64>) {
    let mut types = HashMap::new();
    let mut samples = HashMap::new();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.last(), Some(&"# EOF"));
    for line in &lines[..lines.len() - 1] {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest.split_once(' ').expect("TYPE name type");
            types.insert(name.to_string(), ty.to_string());
            continue;
        }
        if line.starts_with("# HELP nsx_gateway_") {
            continue;
        }
        assert!(!line.starts_with('#'), "unexpected comment {line}");
        let (series, value) = line.rsplit_once(' ').expect("series value");
        let name = series.split('{').next().expect("name");
        assert!(
            types
                .keys()
                .any(|f| name == f || name == format!("{f}_total") || name == format!("{f}_info")),
            "sample of an unannounced family: {line}"
        );
        assert!(name.starts_with("nsx_gateway_"), "{line}");
        let v: f64 = value.parse().expect("value");
        assert!(
            samples.insert(series.to_string(), v).is_none(),
            "duplicate {series}"
        );
    }
    for f in types.keys() {
        assert!(
            text.contains(&format!("# HELP {f} ")),
            "{f} has no HELP line"
        );
    }
    (types, samples)
}

#[tokio::test]
async fn certificates_and_metrics() {
    let f = fixture("certs").await;
    let tok = Some(f.token.as_str());
    let sample = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/state.sample.yaml"))
        .expect("sample");
    let st = ops::apply_file(&f.dir, &{
        let p = f.dir.join("state.yaml");
        std::fs::write(&p, sample).expect("write");
        p
    });
    assert!(st.is_ok(), "{st:?}");
    f.gw.notify_changed();

    let (body1, pem1) = enroll(&f, &meta("i-1", "web", 11)).await;
    let (_, pem2) = enroll(&f, &meta("i-2", "default", 12)).await;
    // A replay is refused (and counted).
    let e = f.submit(&body1).await.expect_err("a replay");
    assert!(matches!(e, EnrollError::Refused { status: 409, .. }), "{e}");

    // --- GET /api/v1/certificates
    let (st, _, _) = http(f.srv.api_addr, "GET", "/api/v1/certificates", None).await;
    assert_eq!(st, 401, "the admin token is required");
    let (st, _, _) = http(f.srv.api_addr, "POST", "/api/v1/instances/i-2/revoke", tok).await;
    assert_eq!(st, 200);
    let (st, _, body) = http(f.srv.api_addr, "GET", "/api/v1/certificates", tok).await;
    assert_eq!(st, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    let certs = v["certificates"].as_array().expect("certificates");
    assert_eq!(certs.len(), 2, "{v}");
    for (c, pem, id) in [(&certs[0], &pem1, "i-1"), (&certs[1], &pem2, "i-2")] {
        let der = pki::first_cert_der(pem).expect("der");
        let (_, x) = x509_parser::parse_x509_certificate(&der).expect("x509");
        assert_eq!(c["instance_id"], id);
        assert_eq!(c["fingerprint"], pki::cert_fingerprint(&der));
        assert_eq!(
            c["serial"].as_str(),
            Some(util::hex(x.raw_serial()).as_str()),
            "{c}"
        );
        assert_eq!(
            c["not_after_unix"].as_i64(),
            Some(x.validity().not_after.timestamp()),
            "not_after_unix is the certificate's notAfter"
        );
    }
    assert!(certs[0]["revoked_at_unix"].is_null());
    assert!(certs[1]["revoked_at_unix"].as_u64().is_some_and(|t| t > 0));
    let revs = v["revocations"].as_array().expect("revocations");
    assert_eq!(revs.len(), 1);
    assert_eq!(revs[0]["instance_id"], "i-2");
    assert_eq!(revs[0]["fingerprint"], certs[1]["fingerprint"]);
    assert_eq!(revs[0]["revoked_at_unix"], certs[1]["revoked_at_unix"]);

    // --- the control channel's counters, through the ControlStore seam
    let control = CountingControl::new(GatewayControl::new(f.gw.clone()), f.gw.clone());
    let der1 = pki::first_cert_der(&pem1).expect("der");
    assert_eq!(control.authorize(&der1).ok(), Some("i-1".to_string()));
    let der2 = pki::first_cert_der(&pem2).expect("der");
    assert!(
        matches!(control.authorize(&der2), Err(StoreRefusal::Revoked)),
        "revoked"
    );
    control.report(
        "i-1",
        SessionEvent::Connected {
            peer: "127.0.0.1:1".parse().expect("peer"),
            protocol_version: 1,
            agent_version: "test".into(),
            applied_version: None,
        },
    );
    let (desired, _) = control.desired("i-1").expect("desired");
    control.report("i-1", SessionEvent::Acked(desired));

    // --- GET /metrics
    let (st, head, text) = http(f.metrics, "GET", "/metrics", None).await;
    assert_eq!(st, 200, "{text}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text"),
        "{head}"
    );
    let (types, m) = parse(&text);
    for (family, ty) in [
        ("nsx_gateway_build", "info"),
        ("nsx_gateway_instances", "gauge"),
        ("nsx_gateway_instance_sessions", "gauge"),
        ("nsx_gateway_sessions_established", "gauge"),
        ("nsx_gateway_store_version", "gauge"),
        ("nsx_gateway_desired_state_version", "gauge"),
        ("nsx_gateway_instance_desired_config_version", "gauge"),
        ("nsx_gateway_instance_acked_config_version", "gauge"),
        ("nsx_gateway_instances_config_behind", "gauge"),
        ("nsx_gateway_enrollments_accepted", "counter"),
        ("nsx_gateway_enrollments_refused", "counter"),
        ("nsx_gateway_control_connections", "counter"),
        ("nsx_gateway_control_messages_received", "counter"),
        ("nsx_gateway_control_sessions_established", "counter"),
        ("nsx_gateway_control_sessions_closed", "counter"),
    ] {
        assert_eq!(types.get(family).map(String::as_str), Some(ty), "{family}");
    }
    let g = |k: &str| m.get(k).copied();
    assert_eq!(g("nsx_gateway_store_up"), Some(1.0));
    assert_eq!(g(r#"nsx_gateway_instances{mode="overlay"}"#), Some(1.0));
    assert_eq!(g(r#"nsx_gateway_instances{mode="revoked"}"#), Some(1.0));
    assert_eq!(
        g(r#"nsx_gateway_instances{mode="micro-segmentation"}"#),
        Some(0.0)
    );
    assert_eq!(g("nsx_gateway_enrollments_accepted_total"), Some(2.0));
    assert_eq!(
        g(r#"nsx_gateway_enrollments_refused_total{reason="replayed"}"#),
        Some(1.0)
    );
    assert_eq!(
        g(r#"nsx_gateway_enrollments_refused_total{reason="bad_csr"}"#),
        Some(0.0)
    );
    let version = f.gw.store().version().expect("version") as f64;
    assert_eq!(g("nsx_gateway_store_version"), Some(version));
    assert_eq!(g("nsx_gateway_desired_state_version"), Some(1.0));
    assert_eq!(
        g(r#"nsx_gateway_control_connections_total{result="accepted"}"#),
        Some(1.0)
    );
    assert_eq!(
        g(r#"nsx_gateway_control_connections_total{result="refused"}"#),
        Some(1.0)
    );
    assert_eq!(
        g(r#"nsx_gateway_control_messages_received_total{type="ack"}"#),
        Some(1.0)
    );
    assert_eq!(g("nsx_gateway_sessions_established"), Some(1.0));
    assert_eq!(
        g("nsx_gateway_control_sessions_established_total"),
        Some(1.0)
    );
    assert_eq!(
        g(r#"nsx_gateway_instance_desired_config_version{instance_id="i-1"}"#),
        Some(desired as f64)
    );
    assert_eq!(
        g(r#"nsx_gateway_instance_desired_config_version{instance_id="i-2"}"#),
        None,
        "revoked instances have no desired config"
    );
    // The ack is recorded by a writer thread: wait (bounded) for it.
    let mut acked = None;
    for _ in 0..100 {
        let (_, _, text) = http(f.metrics, "GET", "/metrics", None).await;
        acked = parse(&text)
            .1
            .get(r#"nsx_gateway_instance_acked_config_version{instance_id="i-1"}"#)
            .copied();
        if acked.is_some() {
            let behind = parse(&text).1["nsx_gateway_instances_config_behind"];
            assert_eq!(behind, 0.0);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(acked, Some(desired as f64));

    control.report(
        "i-1",
        SessionEvent::Disconnected {
            reason: "test".into(),
        },
    );
    let (_, _, text) = http(f.metrics, "GET", "/metrics", None).await;
    let (_, m) = parse(&text);
    assert_eq!(m["nsx_gateway_sessions_established"], 0.0);
    assert_eq!(m["nsx_gateway_control_sessions_closed_total"], 1.0);

    // Only GET /metrics.
    let (st, _, _) = http(f.metrics, "GET", "/", None).await;
    assert_eq!(st, 404);
    let (st, head, _) = http(f.metrics, "POST", "/metrics", None).await;
    assert_eq!(st, 405);
    assert!(head.contains("\r\nAllow: GET\r\n"), "{head}");
}

/// Sends `raw` on `s` (a write error is fine: the server may stop
/// reading), then reads to the end; returns the status answered.
async fn refused_status<S>(mut s: S, raw: &[u8]) -> u16
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let _ = s.write_all(raw).await;
    let _ = s.flush().await;
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out);
    text.split(' ')
        .nth(1)
        .and_then(|x| x.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"))
}

/// Writes plaintext where a TLS ClientHello is expected; waits for the close.
async fn not_tls(addr: SocketAddr) {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(b"GET / HTTP/1.0\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 256];
    let closed = tokio::time::timeout(Duration::from_secs(2), async {
        while matches!(tcp.read(&mut buf).await, Ok(n) if n > 0) {}
    })
    .await;
    assert!(closed.is_ok(), "plaintext connection to {addr} not closed");
}

/// Scrapes until `pred` holds for the samples (bounded); returns them.
async fn scrape_until(
    f: &Fixture,
    what: &str,
    pred: impl Fn(&HashMap<String, f64>) -> bool,
) -> HashMap<String, f64> {
    for _ in 0..100 {
        let (_, _, text) = http(f.metrics, "GET", "/metrics", None).await;
        let (_, m) = parse(&text);
        if pred(&m) {
            return m;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, _, text) = http(f.metrics, "GET", "/metrics", None).await;
    panic!("{what}: not seen in\n{text}");
}

/// What the HTTP layer refuses itself, failed TLS handshakes (enrollment
/// listener and control channel) and control-channel bytes show in
/// `/metrics`.
#[tokio::test]
async fn refusals_handshake_failures_and_control_bytes_are_counted() {
    let f = fixture("refusals").await;
    let (_, _, text) = http(f.metrics, "GET", "/metrics", None).await;
    let (types, m) = parse(&text);
    for family in [
        "nsx_gateway_http_requests_refused",
        "nsx_gateway_tls_handshake_failures",
        "nsx_gateway_control_bytes_received",
        "nsx_gateway_control_bytes_sent",
    ] {
        assert_eq!(
            types.get(family).map(String::as_str),
            Some("counter"),
            "{family}"
        );
    }
    let refused = |listener: &str, reason: &str| {
        format!(
            r#"nsx_gateway_http_requests_refused_total{{listener="{listener}",reason="{reason}"}}"#
        )
    };
    let tls_failed = |listener: &str, reason: &str| {
        format!(
            r#"nsx_gateway_tls_handshake_failures_total{{listener="{listener}",reason="{reason}"}}"#
        )
    };
    for l in ["enroll", "install", "admin", "metrics"] {
        for r in [
            "bad_request",
            "length_required",
            "body_too_large",
            "headers_too_large",
            "timeout",
        ] {
            assert_eq!(m.get(&refused(l, r)), Some(&0.0), "{l} {r}");
        }
    }
    assert_eq!(
        m.get("nsx_gateway_control_bytes_received_total"),
        Some(&0.0)
    );

    // --- the HTTP layer's refusals, one listener each
    // A 70 KiB enrollment body over TLS (the limit is 64 KiB).
    let cfg = pki::client_config_trusting(&f.ca_pem).expect("client config");
    let tcp = TcpStream::connect(f.srv.enroll_addr)
        .await
        .expect("connect");
    let tls = tokio_rustls::TlsConnector::from(cfg)
        .connect(ServerName::try_from(NAME).expect("name"), tcp)
        .await
        .expect("TLS");
    let body = vec![b'x'; 70 * 1024];
    let mut raw = format!(
        "POST /api/v1/enroll HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(&body);
    assert_eq!(refused_status(tls, &raw).await, 413);
    // Chunked and an oversized head on the admin API (before the token check).
    let tcp = TcpStream::connect(f.srv.api_addr).await.expect("connect");
    let chunked = b"PUT /api/v1/state HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    assert_eq!(refused_status(tcp, chunked).await, 411);
    let tcp = TcpStream::connect(f.srv.api_addr).await.expect("connect");
    let big = format!(
        "GET /api/v1/state HTTP/1.1\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(20 * 1024)
    );
    assert_eq!(refused_status(tcp, big.as_bytes()).await, 431);
    // Garbage on the metrics endpoint.
    let tcp = TcpStream::connect(f.metrics).await.expect("connect");
    assert_eq!(refused_status(tcp, b"hello there\r\n\r\n").await, 400);
    // Plaintext on the enrollment listener: its TLS handshake fails.
    not_tls(f.srv.enroll_addr).await;

    let m = scrape_until(
        &f,
        "the HTTP refusals and the enrollment handshake failure",
        |m| m.get(&tls_failed("enroll", "error")) == Some(&1.0),
    )
    .await;
    for (l, r) in [
        ("enroll", "body_too_large"),
        ("admin", "length_required"),
        ("admin", "headers_too_large"),
        ("metrics", "bad_request"),
    ] {
        assert_eq!(m.get(&refused(l, r)), Some(&1.0), "{l} {r}");
    }
    let total: f64 = m
        .iter()
        .filter(|(k, _)| k.starts_with("nsx_gateway_http_requests_refused_total{"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(total, 4.0, "nothing else counted");
    assert_eq!(m.get(&tls_failed("enroll", "timeout")), Some(&0.0));
    assert_eq!(m.get(&tls_failed("control", "error")), Some(&0.0));

    // --- the control channel, counted through CountingControl
    let (_, cert_pem, key_pem) = enroll_with_key(&f, &meta("i-1", "web", 11)).await;
    let opts = ServerOptions {
        tls_handshake_timeout: Duration::from_millis(200),
        ..ServerOptions::default()
    };
    let (control_addr, _stop) = common::control_channel(&f, opts).await;

    // A session: Hello -> Welcome + Snapshot -> Ack.
    let client = common::agent_tls(&f, &cert_pem, &key_pem);
    let tcp = TcpStream::connect(control_addr).await.expect("connect");
    let mut agent = tokio_rustls::TlsConnector::from(client)
        .connect(ServerName::try_from(NAME).expect("name"), tcp)
        .await
        .expect("control TLS handshake");
    let hello = common::hello_frame(meta("i-1", "web", 11));
    agent.write_all(&hello).await.expect("hello");
    let mut dec = Decoder::<GatewayMsg>::new();
    let mut buf = [0u8; 4096];
    let mut got = Vec::new();
    let mut read_bytes = 0;
    let snapshot_version = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            while let Some(msg) = dec.next().expect("frame") {
                if let GatewayMsg::Snapshot { version, .. } = msg {
                    return version;
                }
                got.push(msg);
            }
            let n = agent.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed after {got:?}");
            read_bytes += n;
            dec.push(&buf[..n]);
        }
    })
    .await
    .expect("Welcome and Snapshot in time");
    assert!(
        matches!(got.first(), Some(GatewayMsg::Welcome { .. })),
        "{got:?}"
    );
    let ack = encode(&AgentMsg::Ack {
        version: snapshot_version,
    })
    .expect("encode");
    agent.write_all(&ack).await.expect("ack");
    agent.flush().await.expect("flush");
    let sent = (hello.len() + ack.len()) as f64;
    let m = scrape_until(&f, "the Hello and the Ack", |m| {
        m.get("nsx_gateway_control_bytes_received_total") == Some(&sent)
    })
    .await;
    let out = m["nsx_gateway_control_bytes_sent_total"];
    assert!(
        out >= read_bytes as f64 && out > 0.0,
        "{out} < {read_bytes}"
    );
    assert_eq!(
        m.get(r#"nsx_gateway_control_messages_received_total{type="hello"}"#),
        Some(&1.0)
    );

    // Failed control handshakes: not TLS (error), never started (timeout).
    not_tls(control_addr).await;
    let _idle = TcpStream::connect(control_addr).await.expect("connect");
    let m = scrape_until(&f, "the control handshake failures", |m| {
        m.get(&tls_failed("control", "error")) == Some(&1.0)
            && m.get(&tls_failed("control", "timeout")) == Some(&1.0)
    })
    .await;
    assert_eq!(m.get(&tls_failed("enroll", "error")), Some(&1.0));
    drop(agent);
}

/// An agent's latest `Status` (applied version, counters, last error, its
/// age) shows in the admin API, list and per-instance view, and in
/// `/metrics`; a newer report replaces it.
#[tokio::test]
async fn agent_status_shows_in_the_admin_api_and_metrics() {
    let f = fixture("agent-status").await;
    let tok = Some(f.token.as_str());
    let (_, pem1) = enroll(&f, &meta("i-1", "default", 11)).await;
    let _ = enroll(&f, &meta("i-2", "default", 12)).await;
    let control = CountingControl::new(GatewayControl::new(f.gw.clone()), f.gw.clone());
    let der1 = pki::first_cert_der(&pem1).expect("der");
    assert_eq!(control.authorize(&der1).ok(), Some("i-1".to_string()));

    // Nothing reported yet: null in the API, no per-instance series.
    let (st, _, body) = http(f.srv.api_addr, "GET", "/api/v1/instances", tok).await;
    assert_eq!(st, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert!(v[0]["agent_status"].is_null(), "{v}");
    let m = scrape_until(&f, "no status yet", |m| {
        m.get("nsx_gateway_instances_without_status") == Some(&2.0)
    })
    .await;
    assert_eq!(m.get("nsx_gateway_instances_agent_error"), Some(&0.0));
    assert!(
        !m.keys().any(|k| k.contains("instance_status_age")),
        "{m:?}"
    );

    control.report(
        "i-1",
        SessionEvent::Status(control::StatusReport {
            applied_version: Some(3),
            counters: [
                ("drops".to_string(), 5),
                ("port_rx_packets".to_string(), 40),
            ]
            .into(),
            last_error: Some("apply of version 4 failed: no room".into()),
        }),
    );
    for path in ["/api/v1/instances", "/api/v1/instances/i-1"] {
        let (st, _, body) = http(f.srv.api_addr, "GET", path, tok).await;
        assert_eq!(st, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        let s = if v.is_array() {
            assert!(v[1]["agent_status"].is_null(), "i-2 reported nothing: {v}");
            &v[0]["agent_status"]
        } else {
            &v["agent_status"]
        };
        assert_eq!(s["applied_version"], 3, "{path}: {v}");
        assert_eq!(s["last_error"], "apply of version 4 failed: no room");
        assert_eq!(s["counters"]["drops"], 5);
        assert_eq!(s["counters"]["port_rx_packets"], 40);
        assert!(s["age_seconds"].as_u64().is_some_and(|a| a < 5), "{s}");
        let at = s["received_at_unix"].as_u64().expect("received_at_unix");
        assert!(util::now_unix().abs_diff(at) < 5, "{s}");
    }
    let m = scrape_until(&f, "i-1's status", |m| {
        m.get("nsx_gateway_instances_without_status") == Some(&1.0)
    })
    .await;
    let g = |k: &str| m.get(k).copied();
    assert_eq!(
        g(r#"nsx_gateway_instance_applied_config_version{instance_id="i-1"}"#),
        Some(3.0)
    );
    assert_eq!(
        g(r#"nsx_gateway_instance_agent_error{instance_id="i-1"}"#),
        Some(1.0)
    );
    assert!(
        g(r#"nsx_gateway_instance_status_age_seconds{instance_id="i-1"}"#).is_some_and(|a| a < 5.0)
    );
    assert_eq!(
        g(r#"nsx_gateway_instance_agent_error{instance_id="i-2"}"#),
        None
    );
    assert_eq!(g("nsx_gateway_instances_agent_error"), Some(1.0));
    assert_eq!(
        g(r#"nsx_gateway_control_messages_received_total{type="status"}"#),
        Some(1.0)
    );

    // The next report replaces it whole: the error is gone.
    control.report(
        "i-1",
        SessionEvent::Status(control::StatusReport {
            applied_version: Some(4),
            counters: Default::default(),
            last_error: None,
        }),
    );
    let (_, _, body) = http(f.srv.api_addr, "GET", "/api/v1/instances/i-1", tok).await;
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["agent_status"]["applied_version"], 4, "{v}");
    assert!(v["agent_status"]["last_error"].is_null(), "{v}");
    let m = scrape_until(&f, "the error cleared", |m| {
        m.get("nsx_gateway_instances_agent_error") == Some(&0.0)
    })
    .await;
    assert_eq!(
        m.get(r#"nsx_gateway_instance_agent_error{instance_id="i-1"}"#),
        Some(&0.0)
    );
}
