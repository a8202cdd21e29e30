//! Issue 13: a desired state under which some instance's config cannot be
//! delivered (larger than one control-channel frame) is refused by `apply`,
//! by file (`nsx-gateway apply`) and by the admin API (`PUT
//! /api/v1/state`, 422), like any invalid state: every problem with the
//! path of the part of the state to blame, and nothing applied (state,
//! desired version, store version and every instance's config unchanged).

mod common;

use std::process::Command;

use control::MAX_FRAME;
use gateway::state::DesiredState;
use gateway::store::{Store, StoreError};
use gateway::util;

use common::{Fixture, fixture, meta};

const SWITCHES: &str = r#""switches": [{"name": "web-ls", "tag": "web", "vni": 100, "subnet": "192.168.100.0/24", "gateway_ip": "192.168.100.1"}]"#;

/// `n` distinct IPv4 host addresses in 10.0.0.0/8, as JSON strings.
fn addrs(n: u32) -> String {
    (0..n)
        .map(|i| {
            let [_, b, c, d] = (0x0a00_0000 | i).to_be_bytes();
            format!("\"10.{b}.{c}.{d}\"")
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Everything `apply` could change, as the operator and the agents see it.
async fn observed(f: &Fixture) -> (serde_json::Value, u64, Vec<serde_json::Value>) {
    let (st, state) = f.admin("GET", "/api/v1/state", "").await;
    assert_eq!(st, 200, "{state}");
    let mut configs = Vec::new();
    for id in ["i-1", "i-2"] {
        let (st, v) = f
            .admin("GET", &format!("/api/v1/instances/{id}/config"), "")
            .await;
        assert_eq!(st, 200, "{v}");
        configs.push(v);
    }
    let version = f.gw.store().version().expect("version");
    (state, version, configs)
}

/// An overlay instance (i-1 on web-ls) and a micro-segmentation one (i-2):
/// both get a firewall, so both configs carry the address sets.
async fn enrolled(tag: &str) -> Fixture {
    let f = fixture(tag).await;
    let good = format!(
        r#"{{{SWITCHES}, "firewall": {{"ip_sets": [{{"name": "small", "addrs": [{}]}}],
           "sections": [{{"name": "s1", "rules": [{{"id": 1006, "sources": ["ipset:small"], "action": "accept"}}]}}]}}}}"#,
        addrs(10)
    );
    let (st, v) = f.admin("PUT", "/api/v1/state", &good).await;
    assert_eq!(st, 200, "{v}");
    for (id, net, n) in [("i-1", "web", 1), ("i-2", "default", 2)] {
        let body = common::enroll_body(&f.bootstrap_pem, &meta(id, net, n), util::now_unix()).0;
        f.submit(&body).await.expect("enrolled");
    }
    f
}

/// `nsx-gateway apply -f` of a state with a 300000-address IP set (a 5 MB
/// config, as in the issue) in a section applied to the switch web-ls:
/// refused, naming the IP set's path, the one instance on web-ls and the
/// sizes (the micro-segmentation instance does not get the rule and is not
/// named); nothing changes.
#[tokio::test]
async fn apply_file_refuses_an_ip_set_too_large_to_deliver() {
    let f = enrolled("deliver-cli").await;
    let before = observed(&f).await;

    let huge = format!(
        r#"{{{SWITCHES}, "firewall": {{"ip_sets": [{{"name": "small", "addrs": ["10.0.0.1"]}}, {{"name": "big", "addrs": [{}]}}],
           "sections": [{{"name": "s1", "applied_to": ["switch:web-ls"],
                          "rules": [{{"id": 1006, "sources": ["ipset:big"], "destinations": ["ipset:small"], "action": "accept"}}]}}]}}}}"#,
        addrs(300_000)
    );
    let file = f.dir.join("huge.json");
    std::fs::write(&file, &huge).expect("write");
    let o = Command::new(env!("CARGO_BIN_EXE_nsx-gateway"))
        .args(["apply", "-f"])
        .arg(&file)
        .arg("--dir")
        .arg(&f.dir)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run nsx-gateway");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!o.status.success(), "{text}");
    for want in [
        "1 problem(s)",
        "firewall.ip_sets[1]: address set \"ipset-big\" of ip set \"big\" (300000 addresses) is ",
        "makes the config of instance \"i-1\" a control message of ",
        &format!("over the frame limit of {MAX_FRAME} bytes"),
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    assert!(!text.contains("i-2"), "{text}");
    assert!(
        text.len() < 4096,
        "a short refusal, not the config: {text:.600}"
    );

    assert_eq!(observed(&f).await, before, "nothing was applied");
}

/// The same through the admin API, where the body is at most 1 MiB: an
/// IP set of 60000 addresses copied into four groups and referenced on
/// its own makes a 5 MB config. 422 with the problems, nothing changes;
/// the state that fits is still accepted afterwards.
#[tokio::test]
async fn put_state_refuses_a_config_too_large_to_deliver() {
    let f = enrolled("deliver-api").await;
    let before = observed(&f).await;

    let groups: Vec<String> = (1..=4)
        .map(|i| format!(r#"{{"name": "g{i}", "match": {{"ip_sets": ["big"]}}}}"#))
        .collect();
    let body = format!(
        r#"{{{SWITCHES}, "firewall": {{"ip_sets": [{{"name": "big", "addrs": [{}]}}], "groups": [{}],
           "sections": [{{"name": "s1", "rules": [{{"id": 1006, "sources": ["group:g1", "group:g2", "group:g3", "group:g4"], "destinations": ["ipset:big"], "action": "accept"}}]}}]}}}}"#,
        addrs(60_000),
        groups.join(",")
    );
    assert!(body.len() < 1 << 20, "fits the admin API's body limit");
    let (st, v) = f.admin("PUT", "/api/v1/state", &body).await;
    assert_eq!(st, 422, "{v:.600}");
    let problems = v["problems"].as_array().expect("problems");
    assert_eq!(problems.len(), 1, "{v}");
    let (path, message) = (
        problems[0]["path"].as_str().expect("path"),
        problems[0]["message"].as_str().expect("message"),
    );
    // Five 1 MB address sets with the same addresses: the largest (the
    // longest name) is blamed, the next ones are named with their paths.
    // The rule applies to all: every instance, enrolled or to come.
    assert_eq!(path, "firewall.ip_sets[0]", "{message}");
    for want in [
        "address set \"ipset-big\" of ip set \"big\" (60000 addresses)",
        "makes the config of every instance (the rules without applied_to) a control message of ",
        &format!("over the frame limit of {MAX_FRAME} bytes"),
        "its next largest parts: address set \"grp-g1\" of group \"g1\", with its ip_sets big (60000 addresses) at firewall.groups[0]",
        "at firewall.groups[1]",
    ] {
        assert!(message.contains(want), "missing {want:?} in {message}");
    }
    assert_eq!(observed(&f).await, before, "nothing was applied");

    // One group fewer and no direct reference (3 MB): delivered.
    let fits = body
        .replace(r#", "group:g4""#, "")
        .replace(r#""destinations": ["ipset:big"], "#, "");
    let (st, v) = f.admin("PUT", "/api/v1/state", &fits).await;
    assert_eq!(st, 200, "{v:.600}");
    assert_eq!(v["changed"], true);
}

/// Before any agent enrolled (the usual order: state first, then the
/// installs), a rule for every instance with a set too large to deliver is
/// refused all the same; one applied to nobody yet is not.
#[test]
fn a_state_applied_before_any_enrollment_is_checked_too() {
    let mut s = Store::open_in_memory().expect("store");
    let huge = |applied_to: &str| {
        format!(
            r#"{{"firewall": {{"ip_sets": [{{"name": "big", "addrs": [{}]}}], "groups": [{{"name": "web", "match": {{"tags": {{"role": ["web"]}}}}}}],
               "sections": [{{"name": "s1", {applied_to} "rules": [{{"id": 1006, "sources": ["ipset:big"], "action": "accept"}}]}}]}}}}"#,
            addrs(300_000)
        )
    };
    let st: DesiredState = serde_json::from_str(&huge("")).expect("state");
    match s.apply_state(&st, 1) {
        Err(StoreError::Invalid(problems)) => {
            let ps = problems.list();
            assert_eq!(ps.len(), 1, "{ps:?}");
            assert_eq!(ps[0].path, "firewall.ip_sets[0]");
            assert!(
                ps[0].message.contains("the config of every instance"),
                "{}",
                ps[0].message
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(s.desired_version().expect("v"), 0);
    assert_eq!(s.desired_state().expect("state"), DesiredState::default());

    let st: DesiredState = serde_json::from_str(&huge(r#""applied_to": ["web"],"#)).expect("state");
    assert!(s.apply_state(&st, 2).expect("nobody gets it yet").changed);
}
