//! The operator's views of a serving gateway: `GET /api/v1/certificates`
//! on the admin API and the Prometheus endpoint (`GET /metrics`), over real
//! sockets on 127.0.0.1.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;

use control::proto::InstanceMeta;
use gateway::control_server::{ControlStore, SessionEvent};
use gateway::control_store::GatewayControl;
use gateway::metrics::CountingControl;
use gateway::{enroll_client, ops, pki, util};

use common::{Fixture, NAME, fixture, meta};

/// Enrolls `m`; returns the request body (for a replay) and the certificate PEM.
async fn enroll(f: &Fixture, m: &InstanceMeta) -> (String, String) {
    let (_key, csr) = enroll_client::generate_key_and_csr().expect("csr");
    let body = enroll_client::build_request(
        &f.bootstrap_pem,
        &csr,
        m,
        util::now_unix(),
        &enroll_client::new_nonce().expect("nonce"),
    )
    .expect("build");
    let (status, text) = enroll_client::post(f.srv.enroll_addr, NAME, &f.ca_pem, &body)
        .await
        .expect("https");
    let resp = enroll_client::parse_response(status, &text).expect("enrolled");
    (body, resp.certificate_pem)
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
    let (status, _) = enroll_client::post(f.srv.enroll_addr, NAME, &f.ca_pem, &body1)
        .await
        .expect("https");
    assert_eq!(status, 409);

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
    assert_eq!(control.authorize(&der1), Ok("i-1".to_string()));
    let der2 = pki::first_cert_der(&pem2).expect("der");
    assert!(control.authorize(&der2).is_err(), "revoked");
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
