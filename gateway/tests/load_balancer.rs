//! Issue 15 on the gateway's side: the `load_balancers` section of the
//! desired state (apply, validation with paths, nothing changed on a
//! refusal), the services it compiles into (the distributed ones to every
//! overlay instance, the uplink's and full-NAT ones to the edge), IPAM
//! skipping virtual addresses, re-versioning by health, the admin API, and
//! `nsx-gateway lb import` of a keepalived.conf.

mod common;

use common::{run_cli as run, store_enroll, valid_config};

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::process::Output;

use control::lb::{ForwardKind, LbProtocol, Liveness};
use control::model::InstanceConfig;
use control::proto::Role;
use gateway::lb_resolve::{HealthKey, HealthView};
use gateway::ops;
use gateway::state::{self, DesiredState};
use gateway::store::{Store, StoreError};

const NET: &str = r#"
switches:
  - {name: web-ls, tag: web, vni: 0x238c, subnet: 192.168.100.0/24, gateway_ip: 192.168.100.1}
  - {name: app-ls, tag: app, vni: 0x2388, subnet: 192.168.99.0/24, gateway_ip: 192.168.99.1}
routers:
  - {name: t1, mac: "02:50:56:56:44:52", switches: [web-ls, app-ls]}
tier0:
  uplink: {address: 203.0.113.2/24, secondary: [203.0.113.10, 203.0.113.11], gateway: 203.0.113.1}
"#;

/// A distributed one (inside web-ls, at its two lowest free addresses'
/// first), one off every subnet, one on the uplink and a full-NAT one;
/// the first and the third have a health checker on a real server.
const LBS: &str = r#"
load_balancers:
  - vip: 192.168.100.2
    port: 80
    scheduler: rr
    persistence_timeout: 10
    real_servers: [{ip: 192.168.99.20, port: 8080}, {ip: 192.168.99.21, port: 8080, weight: 2, check: {type: tcp}}]
  - {vip: 10.64.1.2, port: 10000, scheduler: sh, real_servers: [{ip: 192.168.99.22, port: 8089}]}
  - {vip: 203.0.113.10, port: 443, scheduler: mh, real_servers: [{ip: 192.168.100.30, port: 8443, check: {type: http, ssl: true, urls: [{path: /}]}}]}
  - {vip: 10.64.1.3, port: 53, protocol: udp, scheduler: sh, kind: fnat, real_servers: [{ip: 192.168.99.23, port: 53}]}
"#;

fn parse(text: &str) -> DesiredState {
    state::parse(text).expect("state parses")
}

fn keys(cfg: &InstanceConfig) -> Vec<String> {
    cfg.load_balancers.iter().map(|s| s.vs.key()).collect()
}

fn refusal(e: StoreError) -> Vec<String> {
    match e {
        StoreError::Invalid(p) => p.list().iter().map(ToString::to_string).collect(),
        other => panic!("expected problems, got {other:?}"),
    }
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().expect("ip")
}

/// vm1 on web-ls, vm2 on app-ls, vm3 in micro-segmentation, and the edge.
fn populated() -> Store {
    let mut s = Store::open_in_memory().expect("store");
    s.apply_state(&parse(&format!("{NET}{LBS}")), 1000)
        .expect("applies");
    store_enroll(&mut s, "vm1", &[("nsx:network", "web")], 1, Role::Instance);
    store_enroll(&mut s, "vm2", &[("nsx:network", "app")], 2, Role::Instance);
    store_enroll(&mut s, "vm3", &[], 3, Role::Instance);
    store_enroll(&mut s, "edge", &[], 9, Role::Edge);
    s
}

#[test]
fn the_section_applies_and_reaches_the_instances_and_the_edge() {
    let mut s = populated();
    let st = s.desired_state().expect("state");
    assert_eq!(st.load_balancers.len(), 4, "stored and read back");
    assert_eq!(st, parse(&format!("{NET}{LBS}")));

    // Every overlay instance balances the distributed ones, as written.
    for id in ["vm1", "vm2"] {
        let cfg = valid_config(&mut s, id);
        assert_eq!(
            keys(&cfg),
            ["TCP 192.168.100.2:80", "TCP 10.64.1.2:10000"],
            "{id}"
        );
        assert_eq!(cfg.load_balancers[0].vs, st.load_balancers[0]);
        assert!(cfg.load_balancers.iter().all(|s| s.live.is_empty()));
    }
    // No overlay port, nothing to balance.
    assert!(valid_config(&mut s, "vm3").load_balancers.is_empty());
    // The edge: the uplink's, and full-NAT with the uplink's address as SNAT.
    let edge = valid_config(&mut s, "edge");
    assert_eq!(keys(&edge), ["TCP 203.0.113.10:443", "UDP 10.64.1.3:53"]);
    let fnat = &edge.load_balancers[1].vs;
    assert_eq!(fnat.kind, ForwardKind::Fnat);
    assert_eq!(fnat.snat_ip, Some(ip("203.0.113.2")));
    // And it checks every virtual server with a checker, wherever it is
    // balanced, as the state gives it.
    let t0 = edge.tier0.as_ref().expect("the edge's tier0");
    assert_eq!(
        t0.health_checks,
        [st.load_balancers[0].clone(), st.load_balancers[2].clone()]
    );
    assert_eq!(t0.health_check_ip, ip("100.64.0.1"));
    // The vip 192.168.100.2 was skipped: vm1 got the next address.
    let vm1 = s.instance("vm1").expect("read").expect("vm1");
    assert_eq!(vm1.ip, Some(ip("192.168.100.3")));

    // Removing the section takes them away again, and only the configs
    // that had some move.
    let before: Vec<u64> = ["vm1", "vm3", "edge"]
        .iter()
        .map(|id| s.desired_config_for(id).expect("cfg").0)
        .collect();
    s.apply_state(&parse(NET), 2000).expect("applies");
    let after: Vec<u64> = ["vm1", "vm3", "edge"]
        .iter()
        .map(|id| s.desired_config_for(id).expect("cfg").0)
        .collect();
    assert!(
        after[0] > before[0] && after[2] > before[2],
        "{before:?} {after:?}"
    );
    assert_eq!(after[1], before[1], "vm3 had none");
    assert!(valid_config(&mut s, "vm1").load_balancers.is_empty());
}

#[test]
fn ipam_never_hands_out_a_virtual_address() {
    let mut s = Store::open_in_memory().expect("store");
    let vips = r#"
load_balancers:
  - {vip: 192.168.100.2, port: 80, scheduler: sh, real_servers: [{ip: 192.168.99.20, port: 80}]}
  - {vip: 192.168.100.3, port: 80, scheduler: sh, real_servers: [{ip: 192.168.99.20, port: 80}]}
  - {vip: 192.168.100.5, port: 80, scheduler: sh, real_servers: [{ip: 192.168.99.20, port: 80}]}
"#;
    s.apply_state(&parse(&format!("{NET}{vips}")), 1000)
        .expect("applies");
    for (n, id) in ["a", "b", "c"].iter().enumerate() {
        let n = u8::try_from(n).expect("small") + 1;
        store_enroll(&mut s, id, &[("nsx:network", "web")], n, Role::Instance);
    }
    let got: Vec<Option<Ipv4Addr>> = ["a", "b", "c"]
        .iter()
        .map(|id| s.instance(id).expect("read").expect("there").ip)
        .collect();
    assert_eq!(
        got,
        [
            Some(ip("192.168.100.4")),
            Some(ip("192.168.100.6")),
            Some(ip("192.168.100.7"))
        ]
    );
}

#[test]
fn a_virtual_address_an_instance_holds_is_refused_and_nothing_changes() {
    let mut s = Store::open_in_memory().expect("store");
    s.apply_state(&parse(NET), 1000).expect("applies");
    store_enroll(&mut s, "vm1", &[("nsx:network", "web")], 1, Role::Instance);
    let held = s.instance("vm1").expect("read").expect("vm1").ip;
    assert_eq!(held, Some(ip("192.168.100.2")));
    let (state, dv, v) = (
        s.desired_state().expect("state"),
        s.desired_version().expect("dv"),
        s.version().expect("v"),
    );
    let got = refusal(
        s.apply_state(&parse(&format!("{NET}{LBS}")), 2000)
            .expect_err("refused"),
    );
    assert_eq!(
        got,
        [
            "load_balancers[0].vip: 192.168.100.2 is already the address of instance \"vm1\" on switch web-ls; pick a free address (IPAM never hands out a virtual address)"
        ]
    );
    // Also listed beside the state's own problems, in one pass.
    let bad = format!("{NET}{LBS}").replace("port: 10000", "port: 0");
    let got = refusal(s.apply_state(&parse(&bad), 2000).expect_err("refused"));
    assert_eq!(got.len(), 2, "{got:#?}");
    assert!(
        got[0].starts_with("load_balancers[1].port: port 0"),
        "{got:#?}"
    );
    assert!(
        got[1].starts_with("load_balancers[0].vip: 192.168.100.2 is already"),
        "{got:#?}"
    );
    // The dry run says the same, and keeps nothing either.
    let got = refusal(
        s.check_state(&parse(&format!("{NET}{LBS}")), 2000)
            .expect_err("refused"),
    );
    assert_eq!(got.len(), 1);
    assert_eq!(s.desired_state().expect("state"), state);
    assert_eq!(s.desired_version().expect("dv"), dv);
    assert_eq!(s.version().expect("v"), v);
    assert_eq!(s.instance("vm1").expect("read").expect("vm1").ip, held);
}

#[test]
fn an_invalid_section_is_refused_with_paths_and_nothing_changes() {
    let mut s = populated();
    let (state, dv) = (
        s.desired_state().expect("state"),
        s.desired_version().expect("dv"),
    );
    let no_t0 = NET[..NET.find("tier0:").expect("tier0")].to_string();
    let bad = format!(
        "{no_t0}{}",
        LBS.replace("vip: 10.64.1.2,", "vip: 192.168.99.1,")
            .replace("weight: 2", "weight: 65536")
    );
    let got = refusal(s.apply_state(&parse(&bad), 2000).expect_err("refused"));
    assert_eq!(
        got,
        [
            "load_balancers[0].real_servers[1].weight: 65536 is above the largest weight (65535)",
            "load_balancers[0].real_servers[1].check: health checks run on the edge: the state needs a tier0 section",
            "load_balancers[1].vip: 192.168.99.1 is the gateway_ip of switches[1] (app-ls), not free for a virtual server",
            "load_balancers[2].real_servers[0].check: health checks run on the edge: the state needs a tier0 section",
            "load_balancers[3].kind: full-NAT (fnat) is balanced at the edge, so it needs a tier0 section (the real servers answer the edge's SNAT address)",
        ]
    );
    assert_eq!(s.desired_state().expect("state"), state);
    assert_eq!(s.desired_version().expect("dv"), dv);
    // A public IP on a virtual address is refused where the tag is set.
    let p: BTreeMap<String, Option<String>> =
        BTreeMap::from([("nsx:publicip".to_string(), Some("203.0.113.10".to_string()))]);
    let got = refusal(s.patch_tags("vm1", &p, 3000).expect_err("refused"));
    assert_eq!(
        got,
        [
            "tags[\"nsx:publicip\"]: 203.0.113.10 is the virtual address of load_balancers[2], not free for a public IP"
        ]
    );
}

#[test]
fn a_change_of_health_re_versions_only_the_configs_it_touches() {
    let mut s = populated();
    let ids = ["vm1", "vm2", "vm3", "edge"];
    let versions = |snap: &gateway::store::ConfigSnapshot| -> Vec<u64> {
        ids.iter()
            .map(|id| snap.version_of(id).expect("known"))
            .collect()
    };
    let first = s.config_snapshot(None).expect("snapshot");
    let v0 = versions(&first);

    // An edge real server goes down: only the edge's config moves.
    let edge_rs = HealthKey {
        vip: ip("203.0.113.10"),
        port: 443,
        protocol: LbProtocol::Tcp,
        real_ip: ip("192.168.100.30"),
        real_port: 8443,
    };
    let mut health = HealthView::from([(edge_rs, Liveness::Down)]);
    let g1 = s.bump_version().expect("bump");
    let second = s
        .config_snapshot_with(Some(&first), &health)
        .expect("snapshot");
    let v1 = versions(&second);
    assert_eq!(&v1[..3], &v0[..3], "the instances' configs did not change");
    assert_eq!(v1[3], g1);
    let (_, edge) = second.config_for("edge");
    assert_eq!(edge.expect("edge").load_balancers[0].live, [Liveness::Down]);

    // A distributed one: every overlay instance, not the others.
    health.insert(
        HealthKey {
            vip: ip("192.168.100.2"),
            port: 80,
            protocol: LbProtocol::Tcp,
            real_ip: ip("192.168.99.21"),
            real_port: 8080,
        },
        Liveness::Weight(1),
    );
    let g2 = s.bump_version().expect("bump");
    let third = s
        .config_snapshot_with(Some(&second), &health)
        .expect("snapshot");
    let v2 = versions(&third);
    assert_eq!(v2, [g2, g2, v1[2], v1[3]]);
    let (_, vm2) = third.config_for("vm2");
    let vm2 = vm2.expect("vm2");
    control::validate(&vm2).expect("validates with verdicts");
    assert_eq!(
        vm2.load_balancers[0].live,
        [Liveness::Up, Liveness::Weight(1)]
    );
    assert!(vm2.load_balancers[1].live.is_empty());
}

// ----- the admin API -------------------------------------------------------

#[tokio::test]
async fn the_admin_api_takes_and_shows_the_section() {
    let f = common::fixture("lb-api").await;
    let (st, v) = f
        .admin("PUT", "/api/v1/state", &format!("{NET}{LBS}"))
        .await;
    assert_eq!(st, 200, "{v}");
    let (st, v) = f.admin("GET", "/api/v1/load-balancers", "").await;
    assert_eq!(st, 200, "{v}");
    let at: Vec<(&str, &str)> = v
        .as_array()
        .expect("a list")
        .iter()
        .map(|x| {
            (
                x["vip"].as_str().unwrap_or("?"),
                x["balanced_at"].as_str().unwrap_or("?"),
            )
        })
        .collect();
    assert_eq!(
        at,
        [
            ("192.168.100.2", "instances"),
            ("10.64.1.2", "instances"),
            ("203.0.113.10", "edge"),
            ("10.64.1.3", "edge")
        ]
    );
    common::enroll_instance(&f, &common::meta("i-1", "web", 1)).await;
    let (st, v) = f.admin("GET", "/api/v1/instances/i-1/config", "").await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["config"]["load_balancers"][1]["vip"], "10.64.1.2");

    // Refused with paths; the section stays.
    let bad = format!("{NET}{LBS}").replace(
        "scheduler: rr\n",
        "scheduler: rr\n    persistence_granularity: 33\n",
    );
    let (st, v) = f.admin("PUT", "/api/v1/state", &bad).await;
    assert_eq!(st, 422, "{v}");
    assert_eq!(
        v["problems"][0]["path"],
        "load_balancers[0].persistence_granularity"
    );
    let (_, after) = f.admin("GET", "/api/v1/load-balancers", "").await;
    assert_eq!(after.as_array().map(Vec::len), Some(4));
}

// ----- nsx-gateway lb import ----------------------------------------------

fn out(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

const KEEPALIVED: &str = r#"! the seed's balancer, and a web pool
global_defs {
    router_id LVS_1
}
include conf.d/*.conf
"#;

const SEED: &str = "virtual_server 10.64.1.2 10000 { delay_loop 20 lb_algo rr lb_kind NAT persistent_timeout 10 protocol TCP real_server 192.168.1.100 8089 { weight 1 } real_server 192.168.1.101 18089 { weight 1 } }\n";

const WEB: &str = r#"virtual_server 192.168.100.50 80 {
    lb_algo sh
    real_server 192.168.99.20 8080 {
        weight 2
        HTTP_GET {
            url { path /healthz status_code 200 }
        }
    }
}
"#;

#[test]
fn lb_import_of_a_good_file_and_of_broken_ones() {
    let dir = std::env::temp_dir().join(format!("nsx-gw-lb-import-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let d = dir.to_str().expect("utf-8 path");
    let o = run(&["init", "--dir", d, "--name", "gw.local"]);
    assert!(o.status.success(), "{:?}", out(&o));
    let net = dir.join("net.yaml");
    std::fs::write(&net, NET).expect("write");
    let o = run(&["apply", "-f", net.to_str().expect("utf-8"), "--dir", d]);
    assert!(o.status.success(), "{:?}", out(&o));

    let ka = dir.join("keepalived");
    std::fs::create_dir_all(ka.join("conf.d")).expect("mkdir");
    std::fs::write(ka.join("keepalived.conf"), KEEPALIVED).expect("write");
    std::fs::write(ka.join("conf.d/10-seed.conf"), SEED).expect("write");
    std::fs::write(ka.join("conf.d/20-web.conf"), WEB).expect("write");
    let file = ka.join("keepalived.conf");
    let f = file.to_str().expect("utf-8");
    let store = || Store::open(&dir.join("gateway.db")).expect("store");

    // A dry run prints the section and changes nothing.
    let o = run(&["lb", "import", f, "--dry-run", "--dir", d]);
    let (stdout, stderr) = out(&o);
    assert!(o.status.success(), "{stderr}");
    assert!(stdout.starts_with("load_balancers:\n"), "{stdout}");
    assert!(
        stderr.contains(&format!(
            "{f}:2: ignored: global_defs (global settings (router id, e-mail, script security) have no use here)"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("applying would change the desired state"),
        "{stderr}"
    );
    assert!(
        store()
            .desired_state()
            .expect("state")
            .load_balancers
            .is_empty()
    );
    let dv = store().desired_version().expect("dv");

    // The import: what it prints is what is stored, and applies.
    let o = run(&["lb", "import", f, "--dir", d]);
    let (stdout, stderr) = out(&o);
    assert!(o.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("applied: desired_version {}", dv + 1)),
        "{stderr}"
    );
    let printed = state::parse(&stdout).expect("the section parses as a state");
    let st = store().desired_state().expect("state");
    assert_eq!(st.load_balancers, printed.load_balancers);
    assert_eq!(st.switches.len(), 2, "the rest of the state is kept");
    let keys: Vec<String> = st.load_balancers.iter().map(|v| v.key()).collect();
    assert_eq!(keys, ["TCP 10.64.1.2:10000", "TCP 192.168.100.50:80"]);
    assert_eq!(st.load_balancers[0].persistence_timeout, Some(10));
    let o = run(&["lb", "import", f, "--dir", d]);
    assert!(out(&o).1.contains("unchanged"), "{:?}", out(&o));

    // Broken: every problem at its file:line, exit status 1, nothing changed.
    let web = ka.join("conf.d/20-web.conf");
    std::fs::write(
        &web,
        "virtual_server 192.168.100.1 80 {\n    lb_algo rr\n    real_server 192.168.99.20 8080 { weight -1 }\n    real_server 192.168.99.300 80\n}\ninclude ../keepalived.conf\nvrrp_foo x { }\n",
    )
    .expect("write");
    let w = web.to_str().expect("utf-8");
    let o = run(&["lb", "import", f, "--dir", d]);
    let (_, stderr) = out(&o);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("5 error(s), nothing changed"), "{stderr}");
    for want in [
        format!("{w}:1: persistence_timeout: required with lb_algo rr"),
        format!("{w}:3: weight: -1 is negative (0-65535)"),
        format!("{w}:4: real_server: \"192.168.99.300\" is not an IPv4 address"),
        format!("{w}:6: include loop: {f} -> {w} -> "),
        format!("{w}:7: unknown section \"vrrp_foo\""),
    ] {
        assert!(stderr.contains(&want), "missing {want:?} in {stderr}");
    }
    assert_eq!(store().desired_state().expect("state"), st);
    assert_eq!(store().desired_version().expect("dv"), dv + 1);

    // Valid keepalived, refused by the gateway: still at its file:line.
    std::fs::write(
        &web,
        "virtual_server 192.168.100.1 80 {\n    lb_algo sh\n    real_server 192.168.99.20 8080\n}\n",
    )
    .expect("write");
    let o = run(&["lb", "import", f, "--dir", d]);
    let (_, stderr) = out(&o);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{w}:1: vip: 192.168.100.1 is the gateway_ip of switches[0] (web-ls), not free for a virtual server"
        )),
        "{stderr}"
    );
    assert_eq!(store().desired_state().expect("state"), st);

    // Without --dir it must be a dry run.
    let o = run(&["lb", "import", f]);
    assert!(!o.status.success());
    let _ = std::fs::remove_dir_all(&dir);
}

/// The stored desired state and both versions: what a refused import must
/// leave as it was.
fn snapshot(dir: &std::path::Path) -> (DesiredState, u64, u64) {
    let s = Store::open(&dir.join("gateway.db")).expect("store");
    (
        s.desired_state().expect("state"),
        s.desired_version().expect("dv"),
        s.version().expect("v"),
    )
}

/// What `lb import` refused, every line of it.
fn import_refusal(dir: &std::path::Path, file: &std::path::Path, dry_run: bool) -> String {
    match ops::lb_import(Some(dir), file, dry_run) {
        Ok(r) => panic!("{} imported: {}", file.display(), r.yaml),
        Err(e) => e.to_string(),
    }
}

/// Files that are no keepalived.conf with virtual servers, or cannot be
/// read: each refused with the file named (at its line where there is
/// one), dry run or not, and the stored state untouched.
#[test]
fn lb_import_refuses_empty_unreadable_and_undecodable_files() {
    let dir = std::env::temp_dir().join(format!("nsx-gw-lb-bad-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    ops::init(&dir, "gw.local", &[], false).expect("init");
    Store::open(&dir.join("gateway.db"))
        .expect("store")
        .apply_state(&parse(&format!("{NET}{LBS}")), 1000)
        .expect("applies");
    let before = snapshot(&dir);
    let ka = dir.join("ka");
    std::fs::create_dir_all(ka.join("conf.d")).expect("mkdir");
    let put = |name: &str, bytes: &[u8]| {
        let p = ka.join(name);
        std::fs::write(&p, bytes).expect("write");
        p
    };
    let vs = "virtual_server 10.64.9.1 80 { lb_algo sh real_server 192.168.99.20 80 }\n";
    let cases: Vec<(std::path::PathBuf, String)> = vec![
        (
            put("empty.conf", b""),
            "empty.conf: no virtual_server: importing it would remove every load balancer".into(),
        ),
        (
            put("vrrp.conf", b"vrrp_instance VI_1 {\n state MASTER\n}\n"),
            "vrrp.conf:1: ignored: vrrp_instance".into(),
        ),
        (
            put("nothing-matched.conf", b"include conf.d/*.conf\n"),
            "nothing-matched.conf: no virtual_server".into(),
        ),
        (ka.clone(), "cannot read".to_string() + " " + &ka.display().to_string() + ": is a directory"),
        (ka.join("absent.conf"), "absent.conf: no such file".into()),
        (
            put("dir-included.conf", format!("{vs}include conf.d\n").as_bytes()),
            format!("dir-included.conf:2: cannot read {}: is a directory", ka.join("conf.d").display()),
        ),
        (
            put(
                "latin1.conf",
                b"# r\xe9sum\xe9 in a comment reads\nvirtual_server 10.64.9.1 80 { lb_algo sh real_server 192.168.99.20 80 {\n MISC_CHECK { misc_path \"/opt/v\xe9rifier\" } } }\n",
            ),
            "latin1.conf:3: \"/opt/v\u{fffd}rifier\" is not UTF-8 text".into(),
        ),
    ];
    for (file, want) in &cases {
        for dry_run in [false, true] {
            let got = import_refusal(&dir, file, dry_run);
            assert!(
                got.contains(want.as_str()),
                "{}: {want:?} not in {got}",
                file.display()
            );
        }
    }
    assert_eq!(snapshot(&dir), before, "nothing changed");
    // The comment alone does not stop a file.
    let latin1_comment = put(
        "ok.conf",
        &[b"# r\xe9sum\xe9\n".as_slice(), vs.as_bytes()].concat(),
    );
    let r = ops::lb_import(Some(&dir), &latin1_comment, false).expect("imports");
    assert!(r.outcome.expect("applied").changed);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `lb import` beside a serving gateway (as `apply` is run): the running
/// gateway notices a good import at once, while a refused one and a dry
/// run leave its state, its version and its agents' configs as they were.
#[tokio::test]
async fn lb_import_beside_a_running_gateway() {
    let f = common::fixture("lb-import-live").await;
    let watcher = tokio::spawn(
        f.gw.clone()
            .watch_store(std::time::Duration::from_secs(3600)),
    );
    let mut changes = f.gw.subscribe();
    let (st, v) = f.admin("PUT", "/api/v1/state", NET).await;
    assert_eq!(st, 200, "{v}");
    common::enroll_instance(&f, &common::meta("i-1", "web", 1)).await;
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    changes.borrow_and_update();

    let import = |file: std::path::PathBuf, dry_run: bool| {
        let dir = f.dir.clone();
        tokio::task::spawn_blocking(move || ops::lb_import(Some(&dir), &file, dry_run))
    };
    let good = f.dir.join("good.conf");
    std::fs::write(&good, SEED).expect("write");
    let bad = f.dir.join("bad.conf");
    std::fs::write(
        &bad,
        "virtual_server 192.168.100.1 80 { lb_algo sh real_server 192.168.99.20 80 }\n",
    )
    .expect("write");

    // Refused (the VIP is web-ls's gateway), and a dry run of a good file.
    let before = snapshot(&f.dir);
    let (_, cfg_before) = f.admin("GET", "/api/v1/instances/i-1/config", "").await;
    let e = import(bad, false)
        .await
        .expect("task")
        .expect_err("refused");
    assert!(
        e.to_string()
            .contains("bad.conf:1: vip: 192.168.100.1 is the gateway_ip"),
        "{e}"
    );
    let r = import(good.clone(), true)
        .await
        .expect("task")
        .expect("checks");
    assert!(r.outcome.expect("checked against the gateway").changed);
    let quiet =
        tokio::time::timeout(std::time::Duration::from_millis(500), changes.changed()).await;
    assert!(quiet.is_err(), "the gateway saw no change");
    assert_eq!(snapshot(&f.dir), before);
    let (_, cfg_after) = f.admin("GET", "/api/v1/instances/i-1/config", "").await;
    assert_eq!(cfg_after, cfg_before);

    // The import itself: noticed, and in the instance's config.
    let r = import(good, false).await.expect("task").expect("imports");
    let applied = r.outcome.expect("applied");
    assert!(applied.changed);
    let seen = tokio::time::timeout(std::time::Duration::from_secs(10), changes.changed()).await;
    assert!(matches!(seen, Ok(Ok(()))), "the gateway noticed the import");
    assert!(*changes.borrow_and_update() >= applied.version);
    let (_, cfg) = f.admin("GET", "/api/v1/instances/i-1/config", "").await;
    assert_eq!(cfg["config"]["load_balancers"][0]["vip"], "10.64.1.2");
    watcher.abort();
}
