//! The distributed firewall through the store: persistence of the
//! `firewall` section, resolution in every config (overlay and
//! micro-segmentation), snapshot vs one-by-one agreement, and retagging
//! (the admin API's `patch_tags`) moving group membership, so that exactly
//! the affected instances get a new version, also through the control
//! server's cached snapshot (`GatewayControl::desired`).

use std::collections::BTreeMap;

use control::firewall::{AddrRef, FirewallConfig};
use control::model::InstanceConfig;
use gateway::control_server::ControlStore;
use gateway::control_store::GatewayControl;
use gateway::gateway::Gateway;
use gateway::ops;
use gateway::state;
use gateway::store::Store;

mod common;

const STATE: &str = r#"
switches:
  - {name: web-ls, tag: web-net, vni: 100, subnet: 192.168.100.0/24, gateway_ip: 192.168.100.1}
firewall:
  groups:
    - {name: web, match: {tags: {role: web}}}
    - {name: db, match: {tags: {role: db}}}
  sections:
    - name: domain-c25
      applied_to: [web, db]
      rules:
        - {id: 1006, sources: [group:web], destinations: [group:db], services: [{protocol: tcp, port: 22}], action: accept, log: true}
  default_rule: {id: 1002, action: reject, log: true}
"#;

fn enroll(s: &mut Store, id: &str, tags: &[(&str, &str)], n: u8) {
    common::store_enroll(s, id, tags, n, control::proto::Role::Instance);
}

/// A (role=web, overlay), B (role=db, micro-segmentation), C (role=other).
fn populate(s: &mut Store) {
    s.apply_state(&state::parse(STATE).expect("parse"), 1)
        .expect("apply");
    enroll(s, "A", &[("role", "web"), ("nsx:network", "web-net")], 1);
    enroll(s, "B", &[("role", "db")], 2);
    enroll(s, "C", &[("role", "other")], 3);
}

fn fw(cfg: &Option<InstanceConfig>) -> &FirewallConfig {
    cfg.as_ref()
        .and_then(|c| c.firewall.as_ref())
        .expect("every config carries a firewall")
}

fn addrs(cfg: &Option<InstanceConfig>, set: &str) -> Vec<String> {
    fw(cfg)
        .addrsets
        .iter()
        .find(|s| s.name == set)
        .map(|s| s.addrs.iter().map(ToString::to_string).collect())
        .unwrap_or_else(|| panic!("no addrset {set}"))
}

fn retag(s: &mut Store, id: &str, role: &str) {
    let patch = BTreeMap::from([("role".to_string(), Some(role.to_string()))]);
    s.patch_tags(id, &patch, 2000).expect("patch");
}

#[test]
fn firewall_section_is_stored_and_resolved_into_every_config() {
    let dir = std::env::temp_dir().join(format!("nsx-gw-dfw-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let db = dir.join("gateway.db");
    let want = state::parse(STATE).expect("parse");
    {
        let mut s = Store::open(&db).expect("open");
        populate(&mut s);
    }
    let mut s = Store::open(&db).expect("reopen");
    assert_eq!(s.desired_state().expect("state"), want, "survives a reopen");
    assert!(!s.apply_state(&want, 3).expect("apply").changed);

    // Overlay A: group web = its port IP and its underlay IP; micro-seg B:
    // group db = its underlay IP. Both carry the rule; C carries none.
    let (_, a) = s.desired_config_for("A").expect("A");
    assert!(a.as_ref().is_some_and(|c| c.port.is_some()));
    assert_eq!(addrs(&a, "grp-web"), ["10.0.0.1/32", "192.168.100.2/32"]);
    assert_eq!(addrs(&a, "grp-db"), ["10.0.0.2/32"]);
    let r = &fw(&a).rulesets[0].rules[0];
    assert_eq!(r.sources, [AddrRef::AddrSet("grp-web".into())]);
    let (_, b) = s.desired_config_for("B").expect("B");
    assert!(b.as_ref().is_some_and(|c| c.port.is_none()));
    assert_eq!(fw(&b).rulesets[0].rules[0].id, 1006);
    let (_, c) = s.desired_config_for("C").expect("C");
    assert!(fw(&c).rulesets.is_empty() && fw(&c).addrsets.is_empty());
    assert_eq!(fw(&c).default_rule.id, 1002);
    for cfg in [&a, &b, &c] {
        control::validate(cfg.as_ref().expect("config")).expect("passes the agent's validation");
    }

    // Without the section: allow-all everywhere, and versions move.
    let v_c = s.desired_config_for("C").expect("C").0;
    let mut plain = want.clone();
    plain.firewall = None;
    assert!(s.apply_state(&plain, 4).expect("apply").changed);
    let (v, c) = s.desired_config_for("C").expect("C");
    assert_eq!(fw(&c), &FirewallConfig::allow_all());
    assert!(v > v_c);
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn retag_moves_group_membership_and_bumps_only_affected_versions() {
    let mut s = Store::open_in_memory().expect("open");
    populate(&mut s);
    let first = s.config_snapshot(None).expect("snapshot");
    let (va, a) = first.config_for("A");
    let (vb, b) = first.config_for("B");
    let (vc, c) = first.config_for("C");
    assert_eq!(addrs(&b, "grp-web"), ["10.0.0.1/32", "192.168.100.2/32"]);
    assert_eq!(addrs(&b, "grp-db"), ["10.0.0.2/32"]);

    // A: role web -> db.
    retag(&mut s, "A", "db");
    let second = s.config_snapshot(Some(&first)).expect("snapshot");
    let (va2, a2) = second.config_for("A");
    let (vb2, b2) = second.config_for("B");
    let (vc2, c2) = second.config_for("C");
    assert!(
        va2 > va && vb2 > vb,
        "A and B changed: {va}->{va2}, {vb}->{vb2}"
    );
    assert_ne!(a2, a);
    assert_ne!(b2, b);
    assert!(
        addrs(&b2, "grp-web").is_empty(),
        "nobody is in web any more"
    );
    assert_eq!(
        addrs(&b2, "grp-db"),
        ["10.0.0.1/32", "10.0.0.2/32", "192.168.100.2/32"]
    );
    assert_eq!(fw(&a2), fw(&b2), "A and B now have the same firewall");
    assert_eq!(vc2, vc, "C is not affected");
    assert_eq!(c2, c);

    // The one-by-one path agrees with the snapshot.
    for id in ["A", "B", "C"] {
        assert_eq!(
            s.desired_config_for(id).expect("one"),
            second.config_for(id),
            "{id}"
        );
    }

    // A retag that changes nothing relevant to the firewall keeps versions.
    let patch = BTreeMap::from([("owner".to_string(), Some("ops".to_string()))]);
    s.patch_tags("C", &patch, 2001).expect("patch");
    let third = s.config_snapshot(Some(&second)).expect("snapshot");
    for id in ["A", "B", "C"] {
        assert_eq!(third.config_for(id).0, second.config_for(id).0, "{id}");
    }

    // Revoked instances are members of nothing.
    s.revoke("A", 2002).expect("revoke");
    let (vb4, b4) = s.desired_config_for("B").expect("B");
    assert!(vb4 > vb2);
    assert_eq!(addrs(&b4, "grp-db"), ["10.0.0.2/32"]);
}

/// The control server's view (`GatewayControl`, the cached per-version
/// snapshot every session reads): after a retag through the store, the
/// affected instances see a new version and the others keep theirs.
#[test]
fn control_server_sees_retag_for_affected_instances_only() {
    let dir = std::env::temp_dir().join(format!("nsx-gw-dfw-ctl-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    ops::init(&dir, "gw.local", &[], false).expect("init");
    let gw = Gateway::open(&dir).expect("open");
    populate(&mut gw.store());
    let ctl = GatewayControl::new(gw.clone());
    let before: Vec<(u64, Option<InstanceConfig>)> = ["A", "B", "C"]
        .iter()
        .map(|id| ctl.desired(id).expect("desired"))
        .collect();
    retag(&mut gw.store(), "A", "db");
    let after: Vec<(u64, Option<InstanceConfig>)> = ["A", "B", "C"]
        .iter()
        .map(|id| ctl.desired(id).expect("desired"))
        .collect();
    assert!(after[0].0 > before[0].0, "A");
    assert!(after[1].0 > before[1].0, "B");
    assert_eq!(after[2], before[2], "C");
    assert_eq!(after[0].1.as_ref().map(|c| c.version), Some(after[0].0));
    assert_eq!(
        addrs(&after[1].1, "grp-db"),
        ["10.0.0.1/32", "10.0.0.2/32", "192.168.100.2/32"]
    );
    drop(ctl);
    drop(gw);
    let _ = std::fs::remove_dir_all(&dir);
}
