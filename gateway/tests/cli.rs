//! The `nsx-gateway` binary: init, refusal to overwrite, apply (valid,
//! unchanged, invalid), get (table and JSON), bootstrap rotate, revoke.

use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nsx-gateway"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run nsx-gateway")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn cli_round_trip() {
    let dir = std::env::temp_dir().join(format!("nsx-gw-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let d = dir.to_str().expect("utf-8 path");
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/state.sample.yaml");

    let o = run(&[
        "init",
        "--dir",
        d,
        "--name",
        "nsx-gw.vmware.local",
        "--ip",
        "127.0.0.1",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("CA SHA-256 fingerprint: "),
        "{}",
        text(&o)
    );
    let o = run(&["init", "--dir", d, "--name", "nsx-gw.vmware.local"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("use --force"), "{}", text(&o));

    let o = run(&["apply", "-f", sample, "--dir", d]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("applied: desired_version 1"),
        "{}",
        text(&o)
    );
    let o = run(&["apply", "-f", sample, "--dir", d]);
    assert!(
        text(&o).contains("unchanged: desired_version 1"),
        "{}",
        text(&o)
    );

    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "switches:\n  - {name: a, tag: default, vni: 0x1000000, subnet: 10.0.0.1/24, gateway_ip: 10.0.1.1}\n",
    )
    .expect("write");
    let o = run(&["apply", "-f", bad.to_str().expect("utf-8"), "--dir", d]);
    assert!(!o.status.success());
    let t = text(&o);
    for want in [
        "switches[0].vni",
        "switches[0].subnet",
        "switches[0].gateway_ip",
        "switches[0].tag",
    ] {
        assert!(t.contains(want), "missing {want}: {t}");
    }

    let o = run(&["get", "switches", "--dir", d]);
    assert!(text(&o).contains("web-ls  web  0x238c"), "{}", text(&o));
    let o = run(&["get", "routers", "--json", "--dir", d]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v[0]["switches"][1], "app-ls");
    let o = run(&["get", "instances", "--dir", d]);
    assert!(text(&o).starts_with("ID  HOSTNAME  MODE"), "{}", text(&o));

    let o = run(&["bootstrap", "rotate", "--dir", d]);
    assert!(text(&o).contains("older keys are retired"), "{}", text(&o));
    let o = run(&["instance", "revoke", "nobody", "--dir", d]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("unknown instance \"nobody\""),
        "{}",
        text(&o)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
