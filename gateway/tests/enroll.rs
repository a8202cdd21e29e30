//! Enrollment end to end over real TLS on 127.0.0.1, and the admin REST API.

mod common;

use agent::gw::enroll::{self, EnrollError};
use control::proto::InstanceMeta;
use gateway::pki::{self, BootstrapKey};
use gateway::{ops, util};

use common::{Fixture, fixture, meta};

/// A signed body, built by the agent's own enrollment code.
fn body(key_pem: &str, m: &InstanceMeta, now: u64) -> String {
    common::enroll_body(key_pem, m, now).0
}

/// Posts with the agent's client and returns (status, error message).
async fn refused(f: &Fixture, body: &str) -> (u16, String) {
    match f.submit(body).await {
        Err(EnrollError::Refused { status, message }) => (status, message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn enrollment_end_to_end() {
    let f = fixture("enroll").await;
    let now = util::now_unix();
    let mut versions = f.gw.subscribe();
    let v0 = *versions.borrow();

    // Success.
    let m1 = meta("i-0001", "web", 11);
    let ok_body = body(&f.bootstrap_pem, &m1, now);
    let resp = f.submit(&ok_body).await.expect("enrolled");
    assert_eq!(resp.instance_id, "i-0001");
    assert_eq!(resp.tep_id, 1);
    assert_eq!(resp.ca_pem, f.ca_pem);
    let der = pki::first_cert_der(&resp.certificate_pem).expect("cert");
    let (_, x) = x509_parser::parse_x509_certificate(&der).expect("x509");
    let cn: Vec<&str> = x
        .subject()
        .iter_common_name()
        .filter_map(|c| c.as_str().ok())
        .collect();
    assert_eq!(cn, ["i-0001"]);
    assert!(!x.is_ca());
    let eku = x.extended_key_usage().expect("eku").expect("present");
    assert!(eku.value.client_auth);
    let ca_der = pki::first_cert_der(&f.ca_pem).expect("ca");
    let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).expect("ca");
    x.verify_signature(Some(ca.public_key()))
        .expect("signed by the root CA");
    let fp = pki::cert_fingerprint(&der);
    assert!(!f.gw.is_revoked(&fp).expect("q"));
    assert!(
        *versions.borrow_and_update() > v0,
        "enrollment bumps the watched version"
    );

    // Replay of the very same request.
    let (st, err) = refused(&f, &ok_body).await;
    assert_eq!((st, err.as_str()), (409, "replayed enrollment request"));

    // A fresh request for the enrolled instance.
    let (st, err) = refused(&f, &body(&f.bootstrap_pem, &m1, now)).await;
    assert_eq!(
        (st, err.as_str()),
        (
            409,
            "instance already enrolled; the bootstrap key is not accepted again"
        )
    );

    // A wrong bootstrap key.
    let wrong = BootstrapKey::generate().expect("key");
    let (st, err) = refused(
        &f,
        &body(&wrong.private_pem, &meta("i-0002", "web", 12), now),
    )
    .await;
    assert_eq!(st, 403);
    assert!(err.starts_with("unknown bootstrap key"), "{err}");

    // Stale and future timestamps.
    let (st, err) = refused(
        &f,
        &body(&f.bootstrap_pem, &meta("i-0002", "web", 12), now - 400),
    )
    .await;
    assert_eq!(st, 403);
    assert!(err.starts_with("stale enrollment request"), "{err}");
    let (st, _) = refused(
        &f,
        &body(&f.bootstrap_pem, &meta("i-0002", "web", 12), now + 400),
    )
    .await;
    assert_eq!(st, 403);

    // Bad signature: the payload altered after signing, or signed by
    // another key under the real key id.
    let good = body(&f.bootstrap_pem, &meta("i-0002", "web", 12), now);
    let mut req: serde_json::Value = serde_json::from_str(&good).expect("json");
    let payload = req["payload"]
        .as_str()
        .expect("payload")
        .replace("i-0002", "i-0666");
    req["payload"] = payload.into();
    let (st, err) = refused(&f, &req.to_string()).await;
    assert_eq!(st, 403);
    assert!(err.starts_with("bad signature"), "{err}");
    let mut forged: serde_json::Value =
        serde_json::from_str(&body(&wrong.private_pem, &meta("i-0002", "web", 12), now))
            .expect("json");
    forged["key_id"] = BootstrapKey::from_pem(&f.bootstrap_pem)
        .expect("k")
        .key_id
        .into();
    let (st, err) = refused(&f, &forged.to_string()).await;
    assert_eq!(st, 403);
    assert!(err.starts_with("bad signature"), "{err}");

    // Oversized body.
    let big = format!("{{\"payload\": \"{}\"}}", "a".repeat(70 * 1024));
    let (st, err) = refused(&f, &big).await;
    assert_eq!(st, 413);
    assert!(err.contains("exceeds the limit of 65536 bytes"), "{err}");

    // Bad JSON, bad CSR, bad metadata.
    let (st, err) = refused(&f, "{not json").await;
    assert_eq!(st, 400);
    assert!(err.starts_with("malformed enrollment request"), "{err}");
    let bad_csr = enroll::build_request(
        f.bootstrap_pem.as_bytes(),
        std::path::Path::new("bootstrap.key"),
        "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
        &meta("i-0003", "web", 13),
        control::proto::Role::Instance,
        now,
        &enroll::new_nonce().expect("nonce"),
    )
    .expect("build");
    let (st, err) = refused(&f, &bad_csr).await;
    assert_eq!(st, 400);
    assert!(err.starts_with("bad CSR"), "{err}");
    let mut bad_meta = meta("i-0003", "web", 13);
    bad_meta.underlay_ip = "127.0.0.1".parse().expect("ip");
    let (st, err) = refused(&f, &body(&f.bootstrap_pem, &bad_meta, now)).await;
    assert_eq!(st, 400);
    assert!(err.contains("underlay_ip"), "{err}");

    // Rotation: the old key is refused as retired, the new one works.
    let new_id = ops::rotate_bootstrap(&f.dir).expect("rotate");
    let (st, err) = refused(&f, &body(&f.bootstrap_pem, &meta("i-0002", "web", 12), now)).await;
    assert_eq!((st, err.as_str()), (403, "bootstrap key retired"));
    let new_pem = std::fs::read_to_string(f.dir.join("bootstrap.key")).expect("read");
    assert_eq!(BootstrapKey::from_pem(&new_pem).expect("k").key_id, new_id);
    let r2 = f
        .submit(&body(&new_pem, &meta("i-0002", "web", 12), now))
        .await
        .expect("enrolled with the new key");
    assert_eq!(r2.tep_id, 2);

    // Wrong path / method.
    let (st, _) = f.enroll_request("GET", "/api/v1/enroll", b"").await;
    assert_eq!(st, 405);

    // A client that trusts another CA refuses this gateway (rogue gateway).
    let other = pki::generate_ca("other").expect("ca");
    let e = f
        .submit_trusting(&other.cert_pem, &ok_body)
        .await
        .expect_err("must not trust");
    assert!(
        matches!(&e, EnrollError::Transport { reason, .. } if reason.starts_with("TLS")),
        "{e}"
    );

    // The gateway keeps serving after all of the above.
    f.submit(&body(&new_pem, &meta("i-0004", "app", 14), now))
        .await
        .expect("status 200");
}

async fn admin(
    f: &Fixture,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, serde_json::Value) {
    let (status, _, body) = common::http(f.srv.api_addr, method, path, token, body).await;
    (
        status,
        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
    )
}

#[tokio::test]
async fn admin_api() {
    let f = fixture("admin").await;
    let tok = Some(f.token.as_str());
    let (st, v) = admin(&f, "GET", "/api/v1/instances", None, "").await;
    assert_eq!(st, 401, "{v}");
    let (st, _) = admin(&f, "GET", "/api/v1/instances", Some("wrong"), "").await;
    assert_eq!(st, 401);

    // Invalid state: every problem listed, nothing stored.
    let bad = r#"{"switches": [{"name": "a", "tag": "web", "vni": 0, "subnet": "10.1.0.0/24", "gateway_ip": "10.2.0.1"},
                              {"name": "b", "tag": "web", "vni": 5, "subnet": "10.3.0.0/24", "gateway_ip": "10.3.0.1"}]}"#;
    let (st, v) = admin(&f, "PUT", "/api/v1/state", tok, bad).await;
    assert_eq!(st, 422, "{v}");
    let paths: Vec<&str> = v["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .filter_map(|p| p["path"].as_str())
        .collect();
    assert_eq!(
        paths,
        [
            "switches[0].gateway_ip",
            "switches[0].vni",
            "switches[1].tag"
        ]
    );
    let (_, v) = admin(&f, "GET", "/api/v1/state", tok, "").await;
    assert_eq!(v["desired_version"], 0);

    // 1,200 overlapping switches: one problem per switch, the first 100
    // listed and the rest counted (was 719,400 problems, 114 MB).
    let mut many = String::from("switches:\n");
    for i in 0..1200 {
        many.push_str(&format!(
            "  - {{name: ls{i}, tag: t{i}, vni: {}, subnet: 10.0.0.0/24, gateway_ip: 10.0.0.1}}\n",
            i + 1
        ));
    }
    many.push_str("routers: [{name: t1, mac: 02:50:56:00:00:01, switches: [");
    many.push_str(
        &(0..1200)
            .map(|i| format!("ls{i}"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    many.push_str("]}]\n");
    let (st, v) = admin(&f, "PUT", "/api/v1/state", tok, &many).await;
    assert_eq!(st, 422, "{v}");
    assert_eq!(v["problems"].as_array().map(Vec::len), Some(100), "{v}");
    assert_eq!(v["more_problems"], 1099, "{v}");
    assert_eq!(
        v["error"],
        "1199 problem(s) in desired state (the first 100 listed ... and 1099 more problems)"
    );
    // A 64 KiB anchor aliased 1,000 times: refused while parsing.
    let aliased = format!(
        "firewall: {{ip_sets: [{{name: s, addrs: [&a \"{}\"{}]}}]}}\n",
        "A".repeat(64 * 1024),
        ", *a".repeat(1000)
    );
    let (st, _, text) = common::http(f.srv.api_addr, "PUT", "/api/v1/state", tok, &aliased).await;
    assert_eq!(st, 400, "{text}");
    assert!(
        text.contains("longer than the limit of 1024 bytes"),
        "{text}"
    );
    assert!(text.len() < 1024, "{text}");

    // Valid state (YAML body), then enroll an instance and retag it.
    let sample = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/state.sample.yaml"))
        .expect("sample");
    let (st, v) = admin(&f, "PUT", "/api/v1/state", tok, &sample).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["changed"], true);
    let (_, v) = admin(&f, "GET", "/api/v1/switches", tok, "").await;
    assert_eq!(v.as_array().map(Vec::len), Some(2));

    let mut versions = f.gw.subscribe();
    let resp = f
        .submit(&body(
            &f.bootstrap_pem,
            &meta("i-9", "default", 9),
            util::now_unix(),
        ))
        .await
        .expect("enrolled");
    let (_, v) = admin(&f, "GET", "/api/v1/instances", tok, "").await;
    assert_eq!(v[0]["mode"], "micro-segmentation");
    versions.borrow_and_update();

    let (st, v) = admin(
        &f,
        "PATCH",
        "/api/v1/instances/i-9",
        tok,
        r#"{"tags": {"nsx:network": "app"}}"#,
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        (v["switch"].as_str(), v["ip"].as_str()),
        (Some("app-ls"), Some("192.168.99.2"))
    );
    assert!(
        versions.has_changed().expect("open"),
        "retag notifies the control channel"
    );
    let (_, v) = admin(&f, "GET", "/api/v1/instances/i-9/config", tok, "").await;
    assert_eq!(v["config"]["port"]["ip"], "192.168.99.2");
    assert_eq!(v["config"]["tep_id"], resp.tep_id);
    let (st, _) = admin(
        &f,
        "PATCH",
        "/api/v1/instances/ghost",
        tok,
        r#"{"tags": {}}"#,
    )
    .await;
    assert_eq!(st, 404);

    // Revoke.
    let fp = pki::cert_fingerprint(&pki::first_cert_der(&resp.certificate_pem).expect("der"));
    let (st, v) = admin(&f, "POST", "/api/v1/instances/i-9/revoke", tok, "").await;
    assert_eq!((st, &v["revoked"]), (200, &serde_json::Value::Bool(true)));
    assert!(f.gw.is_revoked(&fp).expect("q"));
    let (_, v) = admin(&f, "GET", "/api/v1/instances/i-9/config", tok, "").await;
    assert!(v["config"].is_null());
    let (st, _) = admin(&f, "GET", "/api/v1/nothing", tok, "").await;
    assert_eq!(st, 404);
}
