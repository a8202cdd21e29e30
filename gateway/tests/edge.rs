//! The gateway's side of the north-south edge (issue 14): the edge's
//! enrollment (its role, at most one edge), the `tier0` section of the
//! desired state, the public IPs of `nsx:publicip` tags, and the configs
//! they resolve to (the edge's, and each instance's link to it). Store
//! tests without a network, and one over the real enrollment listener,
//! admin API and control channel with the agent library's own client as
//! the edge.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agent::config::GatewaySettings;
use agent::dp::ctl::Published;
use agent::gw::enroll::{self, EnrollError};
use agent::gw::gwclient::{self, ApplyRequest};
use control::model::{
    EdgeLink, InstanceConfig, LogicalRouter, LogicalSwitch, MacAddr, PublicIp, RemotePort, Snat,
    Tier0, Uplink,
};
use control::proto::Role;
use gateway::state::{self, DesiredState};
use gateway::store::{Store, StoreError};
use gateway::{pki, util};
use tokio::sync::mpsc;

mod common;

use common::{store_enroll, try_store_enroll, valid_config};

/// Two switches on the tier-1 `t1`, one (`db-ls`) on no router, and a
/// tier-0 with only its uplink given.
const STATE: &str = r#"
switches:
  - {name: web-ls, tag: web, vni: 0x238c, subnet: 192.168.100.0/24, gateway_ip: 192.168.100.1}
  - {name: app-ls, tag: app, vni: 0x2388, subnet: 192.168.99.0/24, gateway_ip: 192.168.99.1}
  - {name: db-ls, tag: db, vni: 0x2390, subnet: 10.9.0.0/24, gateway_ip: 10.9.0.1}
routers:
  - {name: t1, mac: "02:50:56:56:44:52", switches: [web-ls, app-ls]}
tier0:
  uplink:
    address: 203.0.113.2/24
    secondary: [203.0.113.10, 203.0.113.11, 203.0.113.12]
    gateway: 203.0.113.1
"#;

/// [`STATE`] without its tier-0.
fn without_tier0() -> String {
    STATE[..STATE.find("tier0:").expect("tier0")].to_string()
}

fn parse(text: &str) -> DesiredState {
    state::parse(text).expect("state parses")
}

fn version(s: &mut Store, id: &str) -> u64 {
    s.desired_config_for(id).expect("config").0
}

fn patch(s: &mut Store, id: &str, tags: &[(&str, Option<&str>)]) -> Result<(), StoreError> {
    let p: BTreeMap<String, Option<String>> = tags
        .iter()
        .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
        .collect();
    s.patch_tags(id, &p, 2000).map(|_| ())
}

/// The problems of a refusal as `path: message` lines.
fn refusal(e: StoreError) -> Vec<String> {
    match e {
        StoreError::Invalid(p) => p.list().iter().map(ToString::to_string).collect(),
        other => panic!("expected problems, got {other:?}"),
    }
}

fn web(n: u8) -> RemotePort {
    RemotePort {
        switch: "web-ls".into(),
        ip: format!("192.168.100.{}", n + 1).parse().expect("ip"),
        mac: MacAddr([0x06, 0, 0, 0, 0, n]),
        tep_ip: format!("10.0.0.{n}").parse().expect("ip"),
        tep_id: u32::from(n),
    }
}

/// vm1 (web-ls), vm2 (app-ls), vm3 (db-ls, on no router), ms
/// (micro-segmentation), then the edge, under [`STATE`].
fn seeded() -> Store {
    let mut s = Store::open_in_memory().expect("open");
    s.apply_state(&parse(STATE), 1000).expect("apply");
    store_enroll(&mut s, "vm1", &[("nsx:network", "web")], 1, Role::Instance);
    store_enroll(&mut s, "vm2", &[("nsx:network", "app")], 2, Role::Instance);
    store_enroll(&mut s, "vm3", &[("nsx:network", "db")], 3, Role::Instance);
    store_enroll(&mut s, "ms", &[], 4, Role::Instance);
    // Its own tags would place it: an edge has no overlay port.
    store_enroll(&mut s, "edge-1", &[("nsx:network", "web")], 5, Role::Edge);
    s
}

#[test]
fn the_edge_and_the_instances_get_their_configs() {
    let mut s = seeded();
    let edge = s.instance("edge-1").expect("read").expect("enrolled");
    assert_eq!(
        (edge.role, edge.mode(), edge.switch),
        (Role::Edge, "edge", None)
    );

    let t0 = Tier0 {
        name: "t0".into(),
        mac: "02:50:56:00:0f:00".parse().expect("mac"),
        transit_vni: 0xfffff0,
        tier1s: vec!["t1".into()],
        uplink: Uplink {
            address: "203.0.113.2/24".parse().expect("net"),
            secondary: ["203.0.113.10", "203.0.113.11", "203.0.113.12"]
                .iter()
                .map(|a| a.parse().expect("ip"))
                .collect(),
            gateway: Some("203.0.113.1".parse().expect("ip")),
            mtu: None,
        },
        routes: vec![],
        snat: Snat::default(),
        public_ips: vec![],
        underlay_snat: true,
        health_check_ip: Tier0::DEFAULT_HEALTH_CHECK_IP,
        health_checks: Vec::new(),
    };
    let sw = |name: &str, vni: u32, net: &str, gw: &str| LogicalSwitch {
        name: name.into(),
        vni,
        subnet: net.parse().expect("net"),
        gateway_ip: gw.parse().expect("ip"),
        dhcp: None,
    };
    let cfg = valid_config(&mut s, "edge-1");
    assert_eq!(
        cfg,
        InstanceConfig {
            version: cfg.version,
            tep_id: 5,
            switches: vec![
                sw("web-ls", 0x238c, "192.168.100.0/24", "192.168.100.1"),
                sw("app-ls", 0x2388, "192.168.99.0/24", "192.168.99.1"),
            ],
            routers: vec![LogicalRouter {
                name: "t1".into(),
                mac: "02:50:56:56:44:52".parse().expect("mac"),
                switches: vec!["web-ls".into(), "app-ls".into()],
                routes: vec![],
            }],
            remote_ports: vec![
                RemotePort {
                    switch: "app-ls".into(),
                    ip: "192.168.99.2".parse().expect("ip"),
                    ..web(2)
                },
                RemotePort {
                    ip: "192.168.100.2".parse().expect("ip"),
                    ..web(1)
                },
            ],
            tier0: Some(Box::new(t0.clone())),
            ..InstanceConfig::default()
        }
    );

    let link = EdgeLink {
        tep_ip: "10.0.0.5".parse().expect("ip"),
        tep_id: 5,
        transit_vni: 0xfffff0,
        mac: t0.mac,
        tier1s: vec!["t1".into()],
    };
    for id in ["vm1", "vm2"] {
        let c = valid_config(&mut s, id);
        assert_eq!(c.edge.as_ref(), Some(&link), "{id}");
        assert!(c.tier0.is_none(), "{id}");
        assert!(
            !c.remote_ports.iter().any(|p| p.tep_id == 5),
            "the edge has no port: {c:?}"
        );
    }
    // On a switch of no tier-1, or without a port: no edge link.
    for id in ["vm3", "ms"] {
        assert_eq!(valid_config(&mut s, id).edge, None, "{id}");
    }
}

#[test]
fn without_a_tier0_or_an_edge_the_configs_are_as_before() {
    let mut s = Store::open_in_memory().expect("open");
    s.apply_state(&parse(&without_tier0()), 1000)
        .expect("apply");
    store_enroll(&mut s, "vm1", &[("nsx:network", "web")], 1, Role::Instance);
    store_enroll(&mut s, "vm2", &[("nsx:network", "app")], 2, Role::Instance);
    let before = valid_config(&mut s, "vm1");
    let json = serde_json::to_string(&before).expect("json");
    assert!(
        !json.contains("\"edge\"") && !json.contains("\"tier0\""),
        "{json}"
    );
    // An edge without a tier-0: nothing changes for the instances, and the
    // edge's config is its tep_id alone.
    let v1 = version(&mut s, "vm1");
    let tep = store_enroll(&mut s, "edge-1", &[], 5, Role::Edge);
    assert_eq!(valid_config(&mut s, "vm1"), before);
    assert_eq!(version(&mut s, "vm1"), v1);
    let e = valid_config(&mut s, "edge-1");
    assert_eq!(
        (
            e.tep_id,
            e.switches.len(),
            e.remote_ports.len(),
            &e.firewall,
            &e.tier0
        ),
        (tep, 0, 0, &None, &None)
    );

    // A tier-0 and no edge: no link either.
    let mut s = Store::open_in_memory().expect("open");
    s.apply_state(&parse(STATE), 1000).expect("apply");
    store_enroll(&mut s, "vm1", &[("nsx:network", "web")], 1, Role::Instance);
    store_enroll(&mut s, "vm3", &[("nsx:network", "db")], 3, Role::Instance);
    assert_eq!(valid_config(&mut s, "vm1").edge, None);
    // The edge enrolls: exactly the configs behind the tier-0 move.
    let (v1, v3) = (version(&mut s, "vm1"), version(&mut s, "vm3"));
    store_enroll(&mut s, "edge-1", &[], 5, Role::Edge);
    assert!(valid_config(&mut s, "vm1").edge.is_some());
    assert!(version(&mut s, "vm1") > v1);
    assert_eq!(version(&mut s, "vm3"), v3);
    // Revoked: the link goes, and another edge may enroll.
    assert!(s.revoke("edge-1", 3000).expect("revoke"));
    assert_eq!(valid_config(&mut s, "vm1").edge, None);
    let tep = store_enroll(&mut s, "edge-2", &[], 6, Role::Edge);
    assert_eq!(
        valid_config(&mut s, "vm1").edge.map(|e| e.tep_id),
        Some(tep)
    );
}

#[test]
fn a_second_edge_is_refused_and_changes_nothing() {
    let mut s = seeded();
    let v = s.version().expect("v");
    let e = try_store_enroll(&mut s, "edge-2", &[], 6, Role::Edge).expect_err("a second edge");
    assert_eq!(
        e.to_string(),
        "an edge is already enrolled (instance \"edge-1\"); a gateway has at most one edge: \
         revoke it first (nsx-gateway instance revoke edge-1)"
    );
    assert_eq!(s.version().expect("v"), v);
    assert!(s.instance("edge-2").expect("read").is_none());
    assert!(!s.nonce_seen(&format!("{:032x}", 6), 1000).expect("q"));
    // The same edge again is an enrolled instance, as for any instance.
    let e = try_store_enroll(&mut s, "edge-1", &[], 7, Role::Edge).expect_err("again");
    assert!(matches!(e, StoreError::AlreadyEnrolled), "{e}");
    // Instances still enroll.
    store_enroll(&mut s, "vm9", &[("nsx:network", "web")], 9, Role::Instance);
}

fn public_ips(s: &mut Store) -> Vec<(String, String, String)> {
    valid_config(s, "edge-1")
        .tier0
        .expect("tier0")
        .public_ips
        .into_iter()
        .map(|p: PublicIp| {
            (
                p.public_ip.to_string(),
                p.private_ip.to_string(),
                p.instance,
            )
        })
        .collect()
}

#[test]
fn a_public_ip_tag_reversions_the_edge_alone() {
    let mut s = seeded();
    let snap = s.config_snapshot(None).expect("snapshot");
    let ids = ["vm1", "vm2", "vm3", "ms"];
    let others: Vec<u64> = ids.iter().map(|i| snap.version_of(i).expect("v")).collect();
    let mut edge_v = snap.version_of("edge-1").expect("v");
    let mut prev = snap;
    for (tag, want) in [
        (
            Some("203.0.113.10"),
            vec![("203.0.113.10", "192.168.100.2", "vm1")],
        ),
        (
            Some("203.0.113.11"),
            vec![("203.0.113.11", "192.168.100.2", "vm1")],
        ),
        (None, vec![]),
    ] {
        patch(&mut s, "vm1", &[("nsx:publicip", tag)]).expect("patched");
        let snap = s.config_snapshot(Some(&prev)).expect("snapshot");
        let v = snap.version_of("edge-1").expect("v");
        assert!(v > edge_v, "{tag:?}: the edge's config moves");
        edge_v = v;
        let now: Vec<u64> = ids.iter().map(|i| snap.version_of(i).expect("v")).collect();
        assert_eq!(now, others, "{tag:?}: no other config moves");
        let want: Vec<(String, String, String)> = want
            .iter()
            .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
            .collect();
        assert_eq!(public_ips(&mut s), want, "{tag:?}");
        prev = snap;
    }
}

#[test]
fn public_ip_conflicts_are_refused_with_their_paths_and_change_nothing() {
    let mut s = seeded();
    patch(&mut s, "vm1", &[("nsx:publicip", Some("203.0.113.10"))]).expect("vm1's public IP");
    let path = "tags[\"nsx:publicip\"]";
    type Case<'a> = (&'a str, &'a [(&'a str, Option<&'a str>)], String);
    let cases: [Case; 7] = [
        (
            "vm2",
            &[("nsx:publicip", Some("203.0.113.10"))],
            format!("{path}: 203.0.113.10 is already the public IP of instance \"vm1\""),
        ),
        (
            "vm2",
            &[("nsx:publicip", Some("198.51.100.7"))],
            format!(
                "{path}: 198.51.100.7 is not a secondary address of the tier-0's uplink \
                 (tier0.uplink.secondary: 203.0.113.10, 203.0.113.11, 203.0.113.12)"
            ),
        ),
        (
            "vm2",
            &[("nsx:publicip", Some("elastic"))],
            format!(
                "{path}: \"elastic\" is not an IPv4 address (a public IP is a secondary \
                 address of the tier-0's uplink)"
            ),
        ),
        (
            "ms",
            &[("nsx:publicip", Some("203.0.113.11"))],
            format!(
                "{path}: instance \"ms\" has no overlay port (mode micro-segmentation): a \
                 public IP is translated to an overlay address"
            ),
        ),
        (
            "vm3",
            &[("nsx:publicip", Some("203.0.113.11"))],
            format!(
                "{path}: instance \"vm3\" is on switch \"db-ls\", which no tier-1 of the \
                 tier-0 \"t0\" attaches (tier1s: t1)"
            ),
        ),
        (
            "edge-1",
            &[("nsx:publicip", Some("203.0.113.11"))],
            format!(
                "{path}: instance \"edge-1\" has no overlay port (mode edge): a public IP is \
                 translated to an overlay address"
            ),
        ),
        // Leaving the overlay while keeping the public IP.
        (
            "vm1",
            &[("nsx:network", Some("default"))],
            format!(
                "{path}: instance \"vm1\" has no overlay port (mode micro-segmentation): a \
                 public IP is translated to an overlay address"
            ),
        ),
    ];
    let v = s.version().expect("v");
    let records = s.instances().expect("instances");
    let edge_cfg = valid_config(&mut s, "edge-1");
    for (id, tags, want) in &cases {
        let got = refusal(patch(&mut s, id, tags).expect_err("refused"));
        assert_eq!(got, std::slice::from_ref(want), "{id} {tags:?}");
        assert_eq!(s.version().expect("v"), v, "{id} {tags:?}: nothing changed");
        assert_eq!(s.instances().expect("instances"), records, "{id} {tags:?}");
    }
    assert_eq!(valid_config(&mut s, "edge-1"), edge_cfg);

    // A SNAT pool address is not a public IP.
    let pooled = STATE.replace(
        "    gateway: 203.0.113.1\n",
        "    gateway: 203.0.113.1\n  snat: {pool: [203.0.113.12]}\n",
    );
    s.apply_state(&parse(&pooled), 1000).expect("apply");
    let got =
        refusal(patch(&mut s, "vm2", &[("nsx:publicip", Some("203.0.113.12"))]).expect_err("pool"));
    assert_eq!(
        got,
        [format!(
            "{path}: 203.0.113.12 is a SNAT pool address (tier0.snat.pool), not free for a public IP"
        )]
    );

    // A state under which vm1's public IP would not hold is refused whole.
    let dv = s.desired_version().expect("dv");
    let st = s.desired_state().expect("state");
    let shrunk = STATE.replace(
        "[203.0.113.10, 203.0.113.11, 203.0.113.12]",
        "[203.0.113.11]",
    );
    let got = refusal(s.apply_state(&parse(&shrunk), 1000).expect_err("shrunk"));
    assert_eq!(
        got,
        [
            "instances[\"vm1\"].tags[\"nsx:publicip\"]: 203.0.113.10 is not a secondary address of \
          the tier-0's uplink (tier0.uplink.secondary: 203.0.113.11)"
        ]
    );
    // With other problems in the state too, one refusal lists them all.
    let both = shrunk.replace("    gateway: 203.0.113.1\n", "    gateway: 198.51.100.1\n");
    let got = refusal(s.apply_state(&parse(&both), 1000).expect_err("both"));
    let paths: Vec<&str> = got
        .iter()
        .map(|p| p.split(": ").next().unwrap_or(""))
        .collect();
    assert_eq!(
        paths,
        [
            "tier0.uplink.gateway",
            "instances[\"vm1\"].tags[\"nsx:publicip\"]"
        ],
        "{got:#?}"
    );
    let got = refusal(
        s.apply_state(&parse(&without_tier0()), 1000)
            .expect_err("no tier0"),
    );
    assert_eq!(
        got,
        [
            "instances[\"vm1\"].tags[\"nsx:publicip\"]: 203.0.113.10: the desired state has no \
          tier0 section, so there is no uplink to take public IPs from"
        ]
    );
    assert_eq!(s.desired_version().expect("dv"), dv);
    assert_eq!(s.desired_state().expect("state"), st);

    // An instance claiming a taken public IP in its own tags is not enrolled.
    let e = try_store_enroll(
        &mut s,
        "vm8",
        &[("nsx:network", "web"), ("nsx:publicip", "203.0.113.10")],
        8,
        Role::Instance,
    )
    .expect_err("taken");
    assert_eq!(
        refusal(e),
        [
            "instance.tags[\"nsx:publicip\"]: 203.0.113.10 is already the public IP of instance \"vm1\""
        ]
    );
    assert!(s.instance("vm8").expect("read").is_none());
    // A free one is taken at enrollment.
    store_enroll(
        &mut s,
        "vm8",
        &[("nsx:network", "web"), ("nsx:publicip", "203.0.113.11")],
        8,
        Role::Instance,
    );
    assert_eq!(
        public_ips(&mut s),
        [
            ("203.0.113.10".into(), "192.168.100.2".into(), "vm1".into()),
            ("203.0.113.11".into(), "192.168.100.3".into(), "vm8".into())
        ]
    );
}

#[test]
fn an_invalid_tier0_section_is_refused_whole() {
    let mut s = seeded();
    let dv = s.desired_version().expect("dv");
    let v = s.version().expect("v");
    let st = s.desired_state().expect("state");
    let edge_cfg = valid_config(&mut s, "edge-1");
    let bad = STATE.replace(
        "    gateway: 203.0.113.1\n",
        "    gateway: 198.51.100.1\n    mtu: 70000\n  transit_vni: 0x2388\n  tier1s: [t1, t2]\n  \
         routes: [{prefix: 0.0.0.0/0, next_hop: 203.0.113.2}]\n  snat: {pool: [203.0.113.99], \
         filtering: address_dependent, port_min: 2000, port_max: 1000, max_sessions: 0}\n",
    );
    // `mtu: 70000` is not a u16: refused as it is read.
    let e = state::parse(&bad).expect_err("mtu");
    assert!(e.to_string().contains("tier0.uplink.mtu"), "{e}");
    let bad = bad.replace("mtu: 70000", "mtu: 100");
    let got = refusal(s.apply_state(&parse(&bad), 1000).expect_err("invalid"));
    let paths: Vec<&str> = got
        .iter()
        .map(|p| p.split(':').next().unwrap_or(""))
        .collect();
    assert_eq!(
        paths,
        [
            "tier0.transit_vni",
            "tier0.tier1s[1]",
            "tier0.uplink.gateway",
            "tier0.uplink.mtu",
            "tier0.routes[0].next_hop",
            "tier0.snat.pool[0]",
            "tier0.snat.port_min",
            "tier0.snat.max_sessions",
        ],
        "{got:#?}"
    );
    assert!(
        got[0].ends_with("0x2388 is already used by switches[1]"),
        "{got:#?}"
    );
    assert_eq!(s.desired_version().expect("dv"), dv);
    assert_eq!(s.version().expect("v"), v);
    assert_eq!(s.desired_state().expect("state"), st);
    assert_eq!(valid_config(&mut s, "edge-1"), edge_cfg);
}

// ----- over the wire -------------------------------------------------------

/// The next apply request within `within`.
async fn next_apply(applies: &mut mpsc::Receiver<ApplyRequest>, within: Duration) -> ApplyRequest {
    tokio::time::timeout(within, applies.recv())
        .await
        .expect("an apply request in time")
        .expect("the client is running")
}

fn publics(a: &ApplyRequest) -> Vec<String> {
    a.config
        .as_ref()
        .and_then(|c| c.tier0.as_ref())
        .map(|t| {
            t.public_ips
                .iter()
                .map(|p| format!("{} -> {} ({})", p.public_ip, p.private_ip, p.instance))
                .collect()
        })
        .unwrap_or_default()
}

/// How long a tag change may take to reach the edge's agent here: far
/// more than it takes (the promise is 1 s at the edge; this is a loaded
/// 2-core machine running debug builds).
const PUSH_BOUND: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_enrolls_and_gets_public_ip_changes_at_once() {
    let f = common::fixture("edge").await;
    f.gw.store()
        .apply_state(&parse(STATE), util::now_unix())
        .expect("apply");
    let (control, _stop) = common::control_channel(&f, Default::default()).await;
    common::enroll_instance(&f, &common::meta("vm1", "web", 1)).await;

    // The edge: the agent library's enrollment in the edge role and its
    // control client, as `nsx-agent run` with `[host] uplink` does.
    let m = common::meta("edge-1", "web", 50);
    let settings = GatewaySettings {
        control: control.to_string(),
        enroll: f.srv.enroll_addr.to_string(),
        server_name: common::NAME.into(),
        ca: f.dir.join(pki::files::CA_CERT),
        bootstrap_key: f.dir.join(pki::files::BOOTSTRAP_KEY),
        instance_id: Some("edge-1".into()),
        image_id: None,
        tags: m.tags.clone(),
    };
    let identity = enroll::enroll_as(&settings, &f.dir.join("edge-state"), &m, Role::Edge)
        .await
        .expect("the edge enrolls");

    // A second edge: refused, clearly; the same edge again: enrolled already.
    let now = util::now_unix();
    let (other, _) = common::enroll_body_as(
        &f.bootstrap_pem,
        &common::meta("edge-2", "web", 51),
        Role::Edge,
        now,
    );
    match f.submit(&other).await {
        Err(EnrollError::Refused { status, message }) => {
            assert_eq!(status, 409);
            assert!(
                message.starts_with("an edge is already enrolled (instance \"edge-1\")"),
                "{message}"
            );
        }
        other => panic!("a second edge must be refused: {other:?}"),
    }
    let (again, _) = common::enroll_body_as(&f.bootstrap_pem, &m, Role::Edge, now);
    match f.submit(&again).await {
        Err(EnrollError::Refused { status, message }) => {
            assert_eq!(status, 409);
            assert!(message.contains("already enrolled"), "{message}");
        }
        other => panic!("the edge is enrolled already: {other:?}"),
    }
    let (st, v) = f.admin("GET", "/api/v1/instances/edge-1", "").await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        (&v["role"], &v["mode"], &v["switch"]),
        (&"edge".into(), &"edge".into(), &serde_json::Value::Null)
    );
    let samples = common::scrape(&f).await;
    assert_eq!(
        samples.get("nsx_gateway_enrollments_refused_total{reason=\"edge_taken\"}"),
        Some(&1.0),
        "{samples:?}"
    );
    assert_eq!(
        samples.get("nsx_gateway_instances{mode=\"edge\"}"),
        Some(&1.0)
    );

    let tls = gwclient::client_tls(f.ca_pem.as_bytes(), &identity.cert_pem, &identity.key_pem)
        .expect("client TLS");
    let (apply_tx, mut applies) = mpsc::channel(4);
    let client = tokio::spawn(gwclient::run(
        settings,
        Arc::new(tls),
        m,
        None,
        apply_tx,
        Arc::new(Mutex::new(None)),
        Arc::new(Mutex::new(Published::default())),
        Default::default(),
    ));
    let first = next_apply(&mut applies, PUSH_BOUND).await;
    let cfg = first.config.as_ref().expect("a config");
    assert_eq!(cfg.tier0.as_ref().map(|t| t.name.as_str()), Some("t0"));
    assert_eq!(cfg.remote_ports.len(), 1, "vm1's port: {cfg:?}");
    assert!(publics(&first).is_empty());
    first.reply.send(Ok(())).expect("client waits");

    // Set, change, remove: each reaches the edge at once.
    for (tag, want) in [
        (
            "\"203.0.113.10\"",
            vec!["203.0.113.10 -> 192.168.100.2 (vm1)"],
        ),
        (
            "\"203.0.113.11\"",
            vec!["203.0.113.11 -> 192.168.100.2 (vm1)"],
        ),
        ("null", vec![]),
    ] {
        let body = format!("{{\"tags\": {{\"nsx:publicip\": {tag}}}}}");
        let t = Instant::now();
        let (st, v) = f.admin("PATCH", "/api/v1/instances/vm1", &body).await;
        assert_eq!(st, 200, "{v}");
        let a = next_apply(&mut applies, PUSH_BOUND).await;
        let took = t.elapsed();
        assert_eq!(publics(&a), want, "{tag}");
        eprintln!(
            "nsx:publicip={tag}: at the edge's agent {} ms after the PATCH",
            took.as_millis()
        );
        a.reply.send(Ok(())).expect("client waits");
        if tag.starts_with("\"203.0.113.10") {
            let (st, v) = f.admin("GET", "/api/v1/routers/t0/nat-rules", "").await;
            assert_eq!(st, 200, "{v}");
            assert_eq!(v["edge"], "edge-1");
            let rules: Vec<String> = v["rules"]
                .as_array()
                .expect("rules")
                .iter()
                .map(|r| {
                    format!(
                        "{} {} {} {} -> {} {}",
                        r["id"],
                        r["action"],
                        r["match_sources"],
                        r["match_destinations"],
                        r["translated"],
                        r["instance"]
                    )
                })
                .collect();
            assert_eq!(
                rules,
                [
                    r#"1 "DNAT" ["any"] ["203.0.113.10"] -> ["192.168.100.2"] "vm1""#,
                    r#"2 "SNAT" ["192.168.100.2"] ["any"] -> ["203.0.113.10"] "vm1""#,
                    r#"3 "SNAT" ["192.168.100.0/24","192.168.99.0/24"] ["any"] -> ["203.0.113.2"] null"#,
                ]
            );
            assert_eq!(v["rules"][2]["translated_ports"], "1024-65535");
            let (st, v) = f.admin("GET", "/api/v1/routers/t1/nat-rules", "").await;
            assert_eq!(st, 404, "{v}");
            assert!(
                v["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("is not the tier-0")),
                "{v}"
            );
        }
    }

    // A conflict: 422 with its path; the tags and the edge's config stay.
    let (st, v) = f
        .admin(
            "PATCH",
            "/api/v1/instances/vm1",
            r#"{"tags": {"nsx:publicip": "198.51.100.7"}}"#,
        )
        .await;
    assert_eq!(st, 422, "{v}");
    assert_eq!(v["error"], "1 problem(s) in the instance's tags");
    assert_eq!(v["problems"][0]["path"], "tags[\"nsx:publicip\"]");
    let (_, v) = f.admin("GET", "/api/v1/instances/vm1", "").await;
    assert!(v["tags"].get("nsx:publicip").is_none(), "{v}");
    assert!(
        tokio::time::timeout(Duration::from_millis(500), applies.recv())
            .await
            .is_err(),
        "a refused change pushes nothing"
    );

    // An invalid tier0 section over the API: 422, every problem, nothing stored.
    let (_, before) = f.admin("GET", "/api/v1/state", "").await;
    let bad = STATE.replace(
        "gateway: 203.0.113.1",
        "gateway: 198.51.100.1\n    mtu: 100",
    );
    let (st, v) = f.admin("PUT", "/api/v1/state", &bad).await;
    assert_eq!(st, 422, "{v}");
    let paths: Vec<&str> = v["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .filter_map(|p| p["path"].as_str())
        .collect();
    assert_eq!(paths, ["tier0.uplink.gateway", "tier0.uplink.mtu"]);
    let (_, after) = f.admin("GET", "/api/v1/state", "").await;
    assert_eq!(before, after);
    client.abort();
}
