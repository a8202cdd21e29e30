//! Store, init, apply, IPAM and placement tests (no network).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use control::model::{LocalPort, MacAddr, RemotePort};
use control::proto::InstanceMeta;
use gateway::ops::{self, OpsError};
use gateway::state;
use gateway::store::{NewInstance, SCHEMA_VERSION, Store, StoreError};

const SEED: &str = r#"
switches:
  - {name: web-ls, tag: web, vni: 0x238c, subnet: 192.168.100.0/24, gateway_ip: 192.168.100.1}
  - {name: app-ls, tag: app, vni: 0x2388, subnet: 192.168.99.0/24, gateway_ip: 192.168.99.1}
  - {name: db-ls, tag: db, vni: 0x2390, subnet: 10.9.0.0/24, gateway_ip: 10.9.0.1}
routers:
  - {name: t1, mac: "02:50:56:56:44:52", switches: [web-ls, app-ls]}
"#;

fn tempdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("nsx-gw-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn meta(id: &str, network: Option<&str>, n: u8) -> InstanceMeta {
    let mut tags = BTreeMap::new();
    if let Some(net) = network {
        tags.insert("nsx:network".to_string(), net.to_string());
    }
    InstanceMeta {
        instance_id: id.into(),
        hostname: format!("{id}.example"),
        os: "debian-12".into(),
        image_id: "ami-1".into(),
        tags,
        underlay_ip: format!("10.0.0.{n}").parse().expect("ip"),
        nic_mac: MacAddr([0x06, 0, 0, 0, 0, n]),
    }
}

fn enroll(s: &mut Store, id: &str, network: Option<&str>, n: u8) -> u32 {
    s.enroll(
        &NewInstance {
            meta: meta(id, network, n),
            cert_serial: format!("serial-{id}"),
            cert_fingerprint: format!("fp-{id}"),
            role: control::proto::Role::Instance,
        },
        &format!("{n:032x}"),
        u64::MAX / 4,
        1000,
    )
    .expect("enroll")
}

fn placement(s: &Store, id: &str) -> (Option<String>, Option<String>) {
    let i = s.instance(id).expect("read").expect("exists");
    (i.switch, i.ip.map(|x| x.to_string()))
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).expect("stat").permissions().mode() & 0o777
}

#[test]
fn init_writes_private_files_and_refuses_to_overwrite() {
    let dir = tempdir("init");
    let r = ops::init(
        &dir,
        "nsx-gw.vmware.local",
        &["127.0.0.1".parse().expect("ip")],
        false,
    )
    .expect("init");
    assert_eq!(mode(&dir), 0o700);
    for f in [
        "ca.pem",
        "ca.key",
        "gateway.pem",
        "gateway.key",
        "bootstrap.key",
        "admin.token",
        "gateway.db",
    ] {
        assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
    }
    assert_eq!(r.ca_fingerprint.len(), 32 * 3 - 1);
    let ca_before = std::fs::read(dir.join("ca.pem")).expect("read");
    let e = ops::init(&dir, "nsx-gw.vmware.local", &[], false).expect_err("must refuse");
    assert!(matches!(e, OpsError::CaExists(_)), "{e}");
    assert!(e.to_string().contains("--force"), "{e}");
    assert_eq!(std::fs::read(dir.join("ca.pem")).expect("read"), ca_before);
    // --force replaces it; the old bootstrap key is retired.
    let r2 = ops::init(&dir, "nsx-gw.vmware.local", &[], true).expect("force");
    assert_ne!(r2.ca_fingerprint, r.ca_fingerprint);
    let s = ops::open_store(&dir).expect("store");
    let keys = s.bootstrap_keys().expect("keys");
    assert_eq!(keys.len(), 2);
    assert_eq!(keys.iter().filter(|k| k.is_active()).count(), 1);
    assert!(
        s.bootstrap_key(&r.bootstrap_key_id)
            .expect("k")
            .is_some_and(|k| !k.is_active())
    );
    // Bad names are refused.
    assert!(ops::init(&tempdir("badname"), "bad name!", &[], false).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_switchs_dhcp_options_are_stored_and_reach_its_instances() {
    let dir = tempdir("dhcp");
    std::fs::create_dir_all(&dir).expect("dir");
    let db = dir.join("gateway.db");
    let with_dhcp = SEED.replace(
        "gateway_ip: 192.168.100.1}",
        "gateway_ip: 192.168.100.1, dhcp: {dns_servers: [10.0.0.53], domain_name: corp.example, lease_time: 600}}",
    );
    let st = state::parse(&with_dhcp).expect("parse");
    let mut s = Store::open(&db).expect("open");
    s.apply_state(&st, 1).expect("apply");
    enroll(&mut s, "i-dhcp", Some("web"), 7);
    drop(s);
    // Across a reopen: stored, not only held in memory.
    let mut s = Store::open(&db).expect("reopen");
    let got = s.desired_state().expect("state");
    assert_eq!(got.switches[0].dhcp, st.switches[0].dhcp);
    assert!(got.switches[1].dhcp.is_none());
    let dhcp = got.switches[0].dhcp.clone().expect("dhcp");
    assert_eq!(dhcp.lease_time, Some(600));
    let (_, cfg) = s.desired_config_for("i-dhcp").expect("config");
    let cfg = cfg.expect("placed");
    let web = cfg
        .switches
        .iter()
        .find(|w| w.name == "web-ls")
        .expect("web-ls");
    assert_eq!(web.dhcp.as_ref(), Some(&dhcp));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn migrations_are_idempotent() {
    let dir = tempdir("migr");
    std::fs::create_dir_all(&dir).expect("dir");
    let db = dir.join("gateway.db");
    let mut s = Store::open(&db).expect("open");
    assert_eq!(s.schema_version().expect("v"), SCHEMA_VERSION);
    s.apply_state(&state::parse(SEED).expect("parse"), 1)
        .expect("apply");
    let v = s.version().expect("v");
    drop(s);
    for _ in 0..2 {
        let s = Store::open(&db).expect("reopen");
        assert_eq!(s.schema_version().expect("v"), SCHEMA_VERSION);
        assert_eq!(s.version().expect("v"), v);
        assert_eq!(s.desired_state().expect("state").switches.len(), 3);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn apply_lists_every_problem_and_leaves_store_untouched() {
    let dir = tempdir("apply");
    ops::init(&dir, "gw.local", &[], false).expect("init");
    let good = dir.join("good.yaml");
    std::fs::write(&good, SEED).expect("write");
    let out = ops::apply_file(&dir, &good).expect("apply");
    assert!(out.changed);
    assert_eq!(out.desired_version, 1);
    // Same file again: nothing changes, no version bump.
    let again = ops::apply_file(&dir, &good).expect("apply");
    assert!(!again.changed);
    assert_eq!((again.desired_version, again.version), (1, out.version));

    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        r#"
switches:
  - {name: web-ls, tag: web, vni: 0x238c, subnet: 192.168.100.0/24, gateway_ip: 192.168.100.1}
  - {name: app-ls, tag: web, vni: 0x238c, subnet: 192.168.100.0/25, gateway_ip: 192.168.100.0}
routers:
  - {name: t1, mac: "ff:ff:ff:ff:ff:ff", switches: [web-ls, app-ls, ghost]}
"#,
    )
    .expect("write");
    let e = ops::apply_file(&dir, &bad).expect_err("invalid");
    let text = e.to_string();
    for want in [
        "switches[1].tag",
        "switches[1].vni",
        "switches[1].gateway_ip",
        "routers[0].mac",
        "routers[0].switches[1]",
        "routers[0].switches[2]",
    ] {
        assert!(text.contains(want), "missing {want} in:\n{text}");
    }
    let s = ops::open_store(&dir).expect("store");
    assert_eq!(s.desired_version().expect("v"), 1);
    assert_eq!(s.version().expect("v"), out.version);
    assert_eq!(
        s.desired_state().expect("st"),
        state::parse(SEED).expect("seed")
    );

    // get prints aligned tables and JSON.
    let t = ops::get(&dir, ops::Kind::Switches, false).expect("get");
    assert!(t.starts_with("NAME    TAG  VNI     SUBNET"), "{t}");
    assert!(
        t.contains("web-ls  web  0x238c  192.168.100.0/24  192.168.100.1"),
        "{t}"
    );
    let j: serde_json::Value =
        serde_json::from_str(&ops::get(&dir, ops::Kind::Routers, true).expect("json"))
            .expect("valid");
    assert_eq!(j[0]["name"], "t1");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ipam_is_stable_across_reopen_and_retag_moves_and_frees() {
    let dir = tempdir("ipam");
    std::fs::create_dir_all(&dir).expect("dir");
    let db = dir.join("gateway.db");
    {
        let mut s = Store::open(&db).expect("open");
        s.apply_state(&state::parse(SEED).expect("parse"), 1)
            .expect("apply");
        enroll(&mut s, "vm1", Some("web"), 11);
        enroll(&mut s, "vm2", Some("web"), 12);
        enroll(&mut s, "vm3", Some("app"), 13);
        enroll(&mut s, "vm4", Some("default"), 14);
        enroll(&mut s, "vm5", None, 15);
        enroll(&mut s, "vm6", Some("nosuch"), 16);
        assert_eq!(
            placement(&s, "vm1"),
            (Some("web-ls".into()), Some("192.168.100.2".into()))
        );
        assert_eq!(
            placement(&s, "vm2"),
            (Some("web-ls".into()), Some("192.168.100.3".into()))
        );
        assert_eq!(
            placement(&s, "vm3"),
            (Some("app-ls".into()), Some("192.168.99.2".into()))
        );
        assert_eq!(placement(&s, "vm4"), (None, None));
        assert_eq!(
            s.instance("vm4").expect("r").expect("e").mode(),
            "micro-segmentation"
        );
        assert_eq!(
            s.instance("vm5").expect("r").expect("e").mode(),
            "micro-segmentation"
        );
        assert_eq!(s.instance("vm6").expect("r").expect("e").mode(), "pending");
    }
    let mut s = Store::open(&db).expect("reopen");
    // Re-applying the same state and reopening keeps every address.
    s.apply_state(&state::parse(SEED).expect("parse"), 2)
        .expect("apply");
    assert_eq!(
        placement(&s, "vm2"),
        (Some("web-ls".into()), Some("192.168.100.3".into()))
    );

    // Retag vm1 web -> app: moves, frees .2 on web.
    let v0 = s.version().expect("v");
    let patch = BTreeMap::from([("nsx:network".to_string(), Some("app".to_string()))]);
    let rec = s.patch_tags("vm1", &patch, 3).expect("retag");
    assert_eq!(rec.switch.as_deref(), Some("app-ls"));
    assert_eq!(
        rec.ip.map(|x| x.to_string()).as_deref(),
        Some("192.168.99.3")
    );
    assert!(s.version().expect("v") > v0);
    // The freed web address goes to the next instance placed there.
    let patch = BTreeMap::from([("nsx:network".to_string(), Some("web".to_string()))]);
    let rec = s.patch_tags("vm4", &patch, 4).expect("retag");
    assert_eq!(
        rec.ip.map(|x| x.to_string()).as_deref(),
        Some("192.168.100.2")
    );
    // Back to micro-segmentation by removing the tag.
    let patch = BTreeMap::from([("nsx:network".to_string(), None)]);
    let rec = s.patch_tags("vm4", &patch, 5).expect("untag");
    assert_eq!((rec.switch, rec.ip), (None, None));
    // A no-op patch does not bump the version.
    let v1 = s.version().expect("v");
    s.patch_tags("vm4", &patch, 6).expect("noop");
    assert_eq!(s.version().expect("v"), v1);
    assert!(matches!(
        s.patch_tags("ghost", &patch, 6),
        Err(StoreError::UnknownInstance(_))
    ));
    // Revocation releases the address.
    assert!(s.revoke("vm2", 7).expect("revoke"));
    assert!(!s.revoke("vm2", 8).expect("again"));
    assert_eq!(placement(&s, "vm2"), (None, None));
    assert!(s.is_revoked("fp-vm2").expect("q"));
    assert!(!s.is_revoked("fp-vm3").expect("q"));
    assert!(s.is_revoked("fp-unknown").expect("q"));
    // Removing a switch releases its allocations; restoring re-places.
    let mut st = state::parse(SEED).expect("parse");
    st.routers.clear();
    st.switches.retain(|x| x.name != "app-ls");
    s.apply_state(&st, 9).expect("apply");
    assert_eq!(placement(&s, "vm3"), (None, None));
    assert_eq!(s.instance("vm3").expect("r").expect("e").mode(), "pending");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn enrollment_bookkeeping() {
    let mut s = Store::open_in_memory().expect("open");
    assert_eq!(enroll(&mut s, "vm1", None, 1), 1);
    assert_eq!(enroll(&mut s, "vm2", None, 2), 2);
    // Same nonce: replay.
    let e = s
        .enroll(
            &NewInstance {
                meta: meta("vm3", None, 3),
                cert_serial: "s".into(),
                cert_fingerprint: "fp-vm3".into(),
                role: control::proto::Role::Instance,
            },
            &format!("{:032x}", 1),
            u64::MAX / 4,
            1000,
        )
        .expect_err("replay");
    assert!(matches!(e, StoreError::Replayed));
    // Enrolled id: refused, and the failed attempt leaves nothing behind.
    let e = s
        .enroll(
            &NewInstance {
                meta: meta("vm1", None, 9),
                cert_serial: "s".into(),
                cert_fingerprint: "fp-other".into(),
                role: control::proto::Role::Instance,
            },
            &format!("{:032x}", 99),
            u64::MAX / 4,
            1000,
        )
        .expect_err("again");
    assert!(matches!(e, StoreError::AlreadyEnrolled));
    assert!(!s.nonce_seen(&format!("{:032x}", 99), 1000).expect("q"));
    assert_eq!(s.instances().expect("list").len(), 2);
}

#[test]
fn desired_config_for_the_seed_picture() {
    let mut s = Store::open_in_memory().expect("open");
    s.apply_state(&state::parse(SEED).expect("parse"), 1)
        .expect("apply");
    let t1 = enroll(&mut s, "vm1", Some("web"), 11);
    let t2 = enroll(&mut s, "vm2", Some("web"), 12);
    let t3 = enroll(&mut s, "vm3", Some("app"), 13);
    enroll(&mut s, "vm-db", Some("db"), 14);
    enroll(&mut s, "vm-micro", Some("default"), 15);

    let (v, cfg) = s.desired_config_for("vm1").expect("cfg");
    let cfg = cfg.expect("known");
    assert_eq!(v, s.version().expect("v"));
    assert_eq!(cfg.version, v);
    assert_eq!(cfg.tep_id, t1);
    assert_eq!(
        cfg.port,
        Some(LocalPort {
            switch: "web-ls".into(),
            ip: "192.168.100.2".parse().expect("ip"),
            mac: Some(MacAddr([6, 0, 0, 0, 0, 11])),
        })
    );
    let names: Vec<&str> = cfg.switches.iter().map(|x| x.name.as_str()).collect();
    assert_eq!(names, ["web-ls", "app-ls"]);
    assert_eq!(cfg.switches[0].vni, 0x238c);
    assert_eq!(cfg.switches[1].vni, 0x2388);
    assert_eq!(cfg.routers.len(), 1);
    assert_eq!(cfg.routers[0].name, "t1");
    assert_eq!(
        cfg.remote_ports,
        vec![
            RemotePort {
                switch: "app-ls".into(),
                ip: "192.168.99.2".parse().expect("ip"),
                mac: MacAddr([6, 0, 0, 0, 0, 13]),
                tep_ip: "10.0.0.13".parse().expect("ip"),
                tep_id: t3,
            },
            RemotePort {
                switch: "web-ls".into(),
                ip: "192.168.100.3".parse().expect("ip"),
                mac: MacAddr([6, 0, 0, 0, 0, 12]),
                tep_ip: "10.0.0.12".parse().expect("ip"),
                tep_id: t2,
            },
        ]
    );
    control::validate(&cfg).expect("the pushed config passes the agent's validation");

    // vm3 (app) sees both switches and both web instances.
    let (_, c3) = s.desired_config_for("vm3").expect("cfg");
    let c3 = c3.expect("known");
    assert_eq!(c3.remote_ports.len(), 2);
    control::validate(&c3).expect("valid");
    // The db instance has no router: only its own switch, nobody else.
    let (_, cdb) = s.desired_config_for("vm-db").expect("cfg");
    let cdb = cdb.expect("known");
    assert_eq!(cdb.switches.len(), 1);
    assert!(cdb.routers.is_empty() && cdb.remote_ports.is_empty());
    // Micro-segmentation: tep_id only.
    let (_, cm) = s.desired_config_for("vm-micro").expect("cfg");
    let cm = cm.expect("known");
    assert!(cm.port.is_none() && cm.switches.is_empty() && cm.remote_ports.is_empty());
    // Unknown instance.
    assert!(s.desired_config_for("ghost").expect("cfg").1.is_none());

    // Versions are per instance: asking again changes nothing.
    let (v_db, _) = s.desired_config_for("vm-db").expect("cfg");
    let (v1, _) = s.desired_config_for("vm1").expect("cfg");
    assert_eq!(s.desired_config_for("vm1").expect("cfg").0, v1);

    // Any change that affects a config produces a higher version for that
    // instance (and only for it); a revoked instance disappears from the
    // others' remote ports and gets no config.
    s.revoke("vm2", 5).expect("revoke");
    let (v2, cfg) = s.desired_config_for("vm1").expect("cfg");
    assert!(v2 > v1);
    assert_eq!(cfg.expect("known").remote_ports.len(), 1);
    assert!(s.desired_config_for("vm2").expect("cfg").1.is_none());
    assert_eq!(
        s.desired_config_for("vm-db").expect("cfg").0,
        v_db,
        "db is not affected"
    );
    // A desired-state change that touches vm1's switches bumps it, not db's.
    let mut st = state::parse(SEED).expect("parse");
    st.switches[1].gateway_ip = "192.168.99.254".parse().expect("ip");
    s.apply_state(&st, 6).expect("apply");
    let (v3, cfg) = s.desired_config_for("vm1").expect("cfg");
    assert!(v3 > v2);
    assert_eq!(
        cfg.expect("known").switches[1].gateway_ip.to_string(),
        "192.168.99.254"
    );
    assert_eq!(s.desired_config_for("vm-db").expect("cfg").0, v_db);
}

#[test]
fn session_state_is_recorded_for_get_instances() {
    let mut s = Store::open_in_memory().expect("open");
    enroll(&mut s, "vm1", None, 1);
    let rec = |s: &Store| s.instance("vm1").expect("read").expect("vm1");
    assert_eq!(rec(&s).session, None);
    s.record_session("vm1", Some("ESTABLISHED"), None, None, 10)
        .expect("record");
    s.record_session("vm1", None, Some(7), None, 11)
        .expect("record");
    let r = rec(&s);
    assert_eq!(
        (r.session.as_deref(), r.acked_version),
        (Some("ESTABLISHED"), Some(7))
    );
    s.record_session("vm1", Some("DISCONNECTED"), None, Some("peer dead"), 12)
        .expect("record");
    let r = rec(&s);
    assert_eq!(r.session.as_deref(), Some("DISCONNECTED"));
    assert_eq!(r.acked_version, Some(7), "the acked version is kept");
    assert_eq!(r.last_error.as_deref(), Some("peer dead"));
}

#[test]
fn config_snapshot_matches_one_by_one() {
    let mut s = Store::open_in_memory().expect("open");
    s.apply_state(&state::parse(SEED).expect("parse"), 1)
        .expect("apply");
    for (id, net, n) in [
        ("vm1", Some("web"), 11),
        ("vm2", Some("web"), 12),
        ("vm3", Some("app"), 13),
        ("vm-db", Some("db"), 14),
        ("vm-micro", Some("default"), 15),
    ] {
        enroll(&mut s, id, net, n);
    }
    let ids = ["vm1", "vm2", "vm3", "vm-db", "vm-micro", "nobody"];
    let check = |s: &mut Store, snap: &gateway::store::ConfigSnapshot| {
        for id in ids {
            let one = s.desired_config_for(id).expect("one");
            let all = snap.config_for(id);
            if one.1.is_none() {
                assert_eq!(all.1, None, "{id}");
            } else {
                assert_eq!(all, one, "{id}");
            }
        }
    };
    let first = s.config_snapshot(None).expect("snapshot");
    check(&mut s, &first);
    // Revoking vm2 changes the configs of its neighbours only; the snapshot
    // that reuses the previous one agrees with the one-by-one path.
    s.revoke("vm2", 2000).expect("revoke");
    let second = s.config_snapshot(Some(&first)).expect("snapshot");
    check(&mut s, &second);
    assert!(
        second.config_for("vm1").0 > first.config_for("vm1").0,
        "vm1 lost a neighbour"
    );
    assert_eq!(
        second.config_for("vm-db").0,
        first.config_for("vm-db").0,
        "vm-db is unaffected"
    );
    assert_eq!(second.config_for("vm2").1, None, "revoked");
}

#[test]
fn a_new_underlay_address_reaches_the_peers() {
    let mut s = Store::open_in_memory().expect("open");
    s.apply_state(&state::parse(SEED).expect("parse"), 1)
        .expect("apply");
    enroll(&mut s, "vm1", Some("web"), 11);
    enroll(&mut s, "vm2", Some("web"), 12);
    let tep_of_vm2 = |s: &mut Store| {
        let (_, cfg) = s.desired_config_for("vm1").expect("cfg");
        cfg.expect("known")
            .remote_ports
            .iter()
            .find(|p| p.mac == MacAddr([6, 0, 0, 0, 0, 12]))
            .map(|p| p.tep_ip)
    };
    assert_eq!(tep_of_vm2(&mut s), Some("10.0.0.12".parse().expect("ip")));
    let v = s.version().expect("v");
    // The same address changes nothing.
    assert!(
        !s.set_underlay_ip("vm2", "10.0.0.12".parse().expect("ip"))
            .expect("set")
    );
    assert_eq!(s.version().expect("v"), v);
    assert!(
        s.set_underlay_ip("vm2", "10.0.0.42".parse().expect("ip"))
            .expect("set")
    );
    assert!(
        s.version().expect("v") > v,
        "the version moves, so peers are pushed"
    );
    assert_eq!(tep_of_vm2(&mut s), Some("10.0.0.42".parse().expect("ip")));
    let rec = s.instance("vm2").expect("read").expect("exists");
    assert_eq!(
        rec.underlay_ip,
        "10.0.0.42".parse::<std::net::Ipv4Addr>().expect("ip")
    );
    // An unknown instance changes nothing.
    assert!(
        !s.set_underlay_ip("nope", "10.0.0.43".parse().expect("ip"))
            .expect("set")
    );
}

/// A change made from a read state is applied only over that state: when
/// another change landed in between (a PUT while `lb import` prepared its
/// own), it is refused and nothing of it is written.
#[test]
fn a_change_over_a_moved_state_is_refused() {
    let mut s = Store::open_in_memory().expect("store");
    let seed = state::parse(SEED).expect("seed");
    s.apply_state(&seed, 1000).expect("seed");
    let (read, base) = s.desired_state_versioned().expect("read");
    assert_eq!((&read, base), (&seed, 1));

    // Someone else's change lands after the read.
    let mut theirs = seed.clone();
    theirs.routers[0].switches.pop();
    s.apply_state(&theirs, 1001).expect("theirs");
    let version = s.version().expect("v");

    let mut mine = read;
    mine.switches.pop();
    match s.apply_state_on(&mine, 1002, base) {
        Err(StoreError::DesiredMoved { base: 1, now: 2 }) => {}
        other => panic!("not refused: {other:?}"),
    }
    assert_eq!(s.desired_state().expect("st"), theirs, "theirs kept");
    assert_eq!(s.desired_version().expect("v"), 2);
    assert_eq!(s.version().expect("v"), version);

    // Made again from the state as it is now, it applies.
    let (mut mine, base) = s.desired_state_versioned().expect("read");
    mine.switches.pop();
    let out = s.apply_state_on(&mine, 1003, base).expect("applies");
    assert!(out.changed);
    assert_eq!(out.desired_version, 3);
    assert_eq!(s.desired_state().expect("st"), mine);
}
