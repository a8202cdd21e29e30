//! The `nsx-gateway` binary: init, refusal to overwrite, apply (valid,
//! unchanged, invalid), get (table and JSON), bootstrap rotate, revoke;
//! serve's connection-limit flags checked at start.

use std::process::Output;

mod common;

use common::run_cli as run;

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

/// `apply` of a file with several firewall errors lists every one with its
/// path, exits non-zero, and leaves the stored desired state as it was.
#[test]
fn apply_lists_every_firewall_problem_and_changes_nothing() {
    let dir = std::env::temp_dir().join(format!("nsx-gw-cli-fw-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let d = dir.to_str().expect("utf-8 path");
    let o = run(&["init", "--dir", d, "--name", "gw.local"]);
    assert!(o.status.success(), "{}", text(&o));

    let switches = "switches:\n  - {name: web-ls, tag: web, vni: 100, subnet: 192.168.100.0/24, gateway_ip: 192.168.100.1}\n";
    let good = dir.join("good.yaml");
    std::fs::write(
        &good,
        format!(
            "{switches}firewall:
  groups:
    - {{name: web, match: {{tags: {{role: web}}}}}}
    - {{name: db, match: {{tags: {{role: db}}}}}}
  sections:
    - name: s1
      rules:
        - {{id: 1006, sources: [group:web], destinations: [group:db], services: [{{protocol: tcp, port: 22}}], action: accept}}
  default_rule: {{id: 1002, action: reject}}
"
        ),
    )
    .expect("write");
    let g = good.to_str().expect("utf-8");
    let o = run(&["apply", "-f", g, "--dir", d]);
    assert!(
        text(&o).contains("applied: desired_version 1"),
        "{}",
        text(&o)
    );
    let get = || {
        let o = run(&["get", "switches", "--json", "--dir", d]);
        assert!(o.status.success(), "{}", text(&o));
        o.stdout
    };
    let switches_before = get();

    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "switches: []
firewall:
  ip_sets:
    - {name: s1, addrs: [10.0.0.1/24]}
  groups:
    - {name: web, match: {tags: {role: web}, colour: blue}}
    - {name: on-ls, match: {switch: web-ls}}
  sections:
    - name: s1
      applied_to: [web, dbz]
      rules:
        - {id: 1006, sources: [group:web], destinations: [group:dbz], services: [{protocol: tcp, port: \"90-80\"}], action: accept}
        - {id: 1006, services: [{protocol: icmp, port: 5}], action: accept}
  l2_sections:
    - name: s1-l2
      rules: [{id: 1001, action: reject}]
  timeouts: {tcp_established: 0}
",
    )
    .expect("write");
    let o = run(&["apply", "-f", bad.to_str().expect("utf-8"), "--dir", d]);
    assert!(!o.status.success(), "{}", text(&o));
    let t = text(&o);
    for want in [
        "firewall.ip_sets[0].addrs[0]: 10.0.0.1/24 has host bits set",
        "firewall.groups[0].match.colour: unknown criterion \"colour\"",
        "firewall.groups[1].match.switch[0]: unknown switch \"web-ls\"",
        "firewall.sections[0].applied_to[1]: unknown group \"dbz\"",
        "firewall.sections[0].rules[0].destinations[0]: unknown group \"dbz\"",
        "firewall.sections[0].rules[0].services[0].port: range 90-80 is reversed",
        "firewall.sections[0].rules[1].id: rule id 1006 is already used",
        "firewall.sections[0].rules[1].services[0].port: protocol icmp has no ports",
        "firewall.l2_sections[0].rules[0].action: L2 rules can only accept or drop",
        "firewall.timeouts.tcp_established: 0 s is outside",
    ] {
        assert!(t.contains(want), "missing {want:?} in:\n{t}");
    }

    // Nothing changed: the same switches, and the good file is still
    // exactly what is stored (re-applying it changes nothing).
    assert_eq!(get(), switches_before);
    let o = run(&["apply", "-f", g, "--dir", d]);
    assert!(
        text(&o).contains("unchanged: desired_version 1"),
        "{}",
        text(&o)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `serve` refuses connection limits that make no sense before it opens
/// anything (the store directory does not even exist): a per-peer limit
/// of 0, or one above its listener's total (given, or the default total),
/// each named by its flags and values.
#[test]
fn serve_refuses_connection_limits_that_cannot_work() {
    let dir = std::env::temp_dir().join(format!("nsx-gw-cli-limits-{}", std::process::id()));
    let d = dir.to_str().expect("utf-8 path");
    let serve = |extra: &[&str]| {
        let mut args = vec!["serve", "--dir", d, "--listen-metrics", "off"];
        args.extend_from_slice(extra);
        run(&args)
    };
    for flag in [
        "--max-connections",
        "--max-connections-per-peer",
        "--control-max-connections",
        "--control-max-connections-per-peer",
    ] {
        let o = serve(&[flag, "0"]);
        assert!(!o.status.success(), "{flag} 0: {}", text(&o));
        assert!(text(&o).contains(flag), "{}", text(&o));
        assert!(text(&o).contains("must be at least 1"), "{}", text(&o));
    }
    let o = serve(&[
        "--max-connections",
        "10",
        "--max-connections-per-peer",
        "11",
    ]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains(
            "--max-connections 10 and --max-connections-per-peer 11: \
             the per-peer connection limit (11) is greater than the total (10)"
        ),
        "{}",
        text(&o)
    );
    // Only the total given, below the default per-peer limit of 8.
    let o = serve(&["--control-max-connections", "4"]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains(
            "--control-max-connections 4 and --control-max-connections-per-peer 8: \
             the per-peer connection limit (8) is greater than the total (4)"
        ),
        "{}",
        text(&o)
    );
    assert!(!dir.exists(), "nothing created");
}
