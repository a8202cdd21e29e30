//! Golden tests of the formatters from the canned replies in
//! `nsxcli/testdata` (the seed's exact lines included); no panic on odd
//! replies.

use serde::de::DeserializeOwned;
use serde_json::json;

use super::*;
use crate::client::decode;

/// A canned reply from `nsxcli/testdata`.
pub(crate) fn fixture(name: &str) -> Value {
    let path = format!("{}/testdata/{name}.json", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A canned reply from `nsxcli/testdata` as its type.
pub(crate) fn typed<T: DeserializeOwned>(name: &str) -> T {
    decode(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The seed's status with its gateway part replaced by `gw`.
fn status_with(gw: Value) -> StatusReply {
    let mut s = fixture("status");
    s["gateway"] = gw;
    decode(&s).unwrap()
}

/// Compares with `testdata/golden/NAME.txt`; `NSXCLI_UPDATE_GOLDEN=1`
/// rewrites the file instead (review the diff).
pub(crate) fn golden(name: &str, got: &str) {
    let path = format!("{}/testdata/golden/{name}.txt", env!("CARGO_MANIFEST_DIR"));
    if std::env::var_os("NSXCLI_UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(format!("{}/testdata/golden", env!("CARGO_MANIFEST_DIR"))).unwrap();
        std::fs::write(&path, got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!(
        got, want,
        "golden {name} differs (NSXCLI_UPDATE_GOLDEN=1 to rewrite)"
    );
}

#[test]
fn seed_gateway_connection_status() {
    // Exactly the seed's three lines.
    assert_eq!(
        gateway_status(&typed("status"), Tz::UTC),
        "Public Cloud Gateway : nsx-gw.vmware.local:5555\n\
         Connection Status : ESTABLISHED\n\
         Connection Time : Fri Dec 22 05:22:18 2017\n"
    );
}

#[test]
fn gateway_status_other_states() {
    let s = status_with(json!({"state": "CONNECTING", "peer": "10.99.3.2:5555",
        "since_unix": 1513920138u64, "last_error": "connection refused", "applied_version": null,
        "protocol_version": null}));
    assert_eq!(
        gateway_status(&s, Tz::UTC),
        "Public Cloud Gateway : 10.99.3.2:5555\n\
         Connection Status : CONNECTING\n\
         Status Since : Fri Dec 22 05:22:18 2017\n\
         Last Error : connection refused\n"
    );
    let s = status_with(
        json!({"state": "HELLO_SENT", "peer": "10.99.3.2:5555", "since_unix": 0, "last_error": null,
        "applied_version": null, "protocol_version": null}),
    );
    assert_eq!(
        gateway_status(&s, Tz::UTC),
        "Public Cloud Gateway : 10.99.3.2:5555\nConnection Status : HELLO_SENT\nStatus Since : -\n"
    );
    assert_eq!(
        gateway_status(&status_with(json!(null)), Tz::UTC),
        "Public Cloud Gateway : not configured (static config)\n"
    );
    // Garbage never panics: it is refused when read.
    assert!(decode::<StatusReply>(&json!([1, 2])).is_err());
    assert!(decode::<StatusReply>(&json!({"gateway": {"since_unix": "x", "state": 3}})).is_err());
}

#[test]
fn the_gateway_by_the_name_dialed_then_the_address_reached() {
    // The seed shows the name the agent dialed; the address follows it.
    let s = status_with(json!({"state": "ESTABLISHED", "peer": "10.99.3.2:5555",
        "name": "nsx-gw.vmware.local:5555", "address": "10.99.3.2:5555",
        "since_unix": 1513920138u64, "last_error": null, "applied_version": 7,
        "protocol_version": 1}));
    assert_eq!(
        gateway_status(&s, Tz::UTC),
        "Public Cloud Gateway : nsx-gw.vmware.local:5555 (10.99.3.2:5555)\n\
         Connection Status : ESTABLISHED\n\
         Connection Time : Fri Dec 22 05:22:18 2017\n"
    );
    // Not connected yet: the name alone.
    let s = status_with(json!({"state": "CONNECTING", "peer": "10.99.3.2:5555",
        "name": "nsx-gw.vmware.local:5555", "address": null, "since_unix": 0,
        "last_error": null, "applied_version": null, "protocol_version": null}));
    assert!(
        gateway_status(&s, Tz::UTC)
            .starts_with("Public Cloud Gateway : nsx-gw.vmware.local:5555\nConnection Status")
    );
}

#[test]
fn seed_vm_network_mode() {
    assert_eq!(
        vm_network_mode(&typed("status")),
        "VM-Network-Mode : overlay\nInterface : eth0\n"
    );
    assert_eq!(
        vm_network_mode(&StatusReply {
            mode: agent_api::Mode::MicroSegmentation,
            nic: "ens5".into(),
            ..typed("status")
        }),
        "VM-Network-Mode : micro-segmentation\nInterface : ens5\n"
    );
}

#[test]
fn goldens() {
    golden("interfaces", &interfaces(&typed("interfaces")));
    golden("switches", &switches(&typed("switches")));
    golden("dhcp_server", &dhcp_server(&typed("dhcp")));
    golden("dhcp_leases", &dhcp_leases(&typed("dhcp")));
    golden("nat_sessions", &nat_sessions(&typed("nat_sessions")));
    let sws: SwitchesReply = typed("switches");
    let web = find_switch(&sws, "web-ls").unwrap();
    golden("mac_table", &mac_table(&typed("mac_table"), web));
    golden("arp_table", &arp_table(&typed("arp_table"), web));
    golden("routers", &routers(&typed("routers")));
    let rs: RoutersReply = typed("routers");
    golden("forwarding", &forwarding(find_router(&rs, "t1").unwrap()));
    golden("tunnels", &tunnels(&typed("status"), &typed("counters")));
    golden("statistics", &statistics(&typed("counters")));
    golden("firewall_stats", &firewall_stats(&typed("firewall_stats")));
    golden(
        "firewall_rule",
        &firewall_rule(&typed("getrules"), &typed("firewall_stats"), 1006).unwrap(),
    );
    golden(
        "version",
        &version(
            &decode(&json!({"api_version": 1, "agent": "nsx-agent", "version": "0.1.0"})).unwrap(),
            "0.1.0",
        ),
    );
    golden("config_version", &config_version(&typed("status"), Tz::UTC));
}

#[test]
fn vsipioctl_texts_verbatim() {
    for name in ["getrules", "getaddrsets", "getflows"] {
        let f = fixture(name);
        assert_eq!(text(&typed(name)), f["text"].as_str().unwrap());
    }
    assert!(text(&typed("getflows")).contains(
        "558a796d00000000 Active tcp 0800 1 1006 0 0  172.16.10.12:Unknown(44194) 172.16.10.11:ssh(22) 2413 EST 3017 2957 19 18\n"
    ));
    let t = |s: &str| TextReply { text: s.into() };
    assert_eq!(text(&t("x")), "x\n");
    assert_eq!(text(&t("")), "");
    assert!(matches!(
        decode::<TextReply>(&json!({})),
        Err(Error::BadReply { .. })
    ));
}

#[test]
fn lookups() {
    let sws: SwitchesReply = typed("switches");
    assert_eq!(find_switch(&sws, "0x2388").unwrap().name, "app-ls");
    assert_eq!(find_switch(&sws, "9100").unwrap().name, "web-ls");
    assert_eq!(
        find_switch(&sws, "db-ls").unwrap_err(),
        Error::Failed("Unknown logical switch \"db-ls\" (known: web-ls, app-ls)".into())
    );
    assert_eq!(
        find_switch(
            &SwitchesReply {
                switches: Vec::new()
            },
            "x"
        )
        .unwrap_err(),
        Error::Failed("Unknown logical switch \"x\" (known: none)".into())
    );
    assert_eq!(
        find_router(&typed("routers"), "t2").unwrap_err(),
        Error::Failed("Unknown logical router \"t2\" (known: t1)".into())
    );
    assert_eq!(
        firewall_rule(&typed("getrules"), &typed("firewall_stats"), 7).unwrap_err(),
        Error::Failed("No firewall rule 7 (rules: 1006, 1002)".into())
    );
    // A rule with several lines (one per service) and no stats row.
    let no_rows = FirewallStats {
        rules: Vec::new(),
        ..typed("firewall_stats")
    };
    assert_eq!(
        firewall_rule(&typed("getrules"), &no_rows, 1003).unwrap(),
        "rule 1003 at 5 inout protocol udp from any to any port 67 accept;\n\
         rule 1003 at 6 inout protocol udp from any to any port 68 accept;\n"
    );
}

#[test]
fn trace_steps_and_verdicts() {
    let r = json!({"api_version": 1, "steps": [
        {"layer": "port-security", "result": "next", "detail": "06:17:1e:54:96:3a / 192.168.100.3 is the port's: pass"},
        {"layer": "firewall", "result": "next", "detail": "firewall: new connection, rule 1006 (domain-c25) accept"},
        {"layer": "router", "result": "next", "detail": ""},
        {"layer": "encap", "result": "done", "detail": "vni 0x2388 to 10.99.3.12 (tep 2)"}],
        "verdict": "encapsulated", "drop_reason": null,
        "outputs": [{"kind": "underlay", "dst": "10.99.3.12", "vni": 9096, "len": 142}]});
    let r: TraceReply = decode(&r).unwrap();
    assert_eq!(
        trace(&r),
        [
            " 1. port-security: 06:17:1e:54:96:3a / 192.168.100.3 is the port's: pass",
            " 2. firewall: new connection, rule 1006 (domain-c25) accept",
            " 3. router: next",
            " 4. encap: vni 0x2388 to 10.99.3.12 (tep 2)",
            "Verdict : encapsulated",
            "Output : underlay 10.99.3.12 vni 0x2388, 142 bytes\n",
        ]
        .join("\n")
    );
    let r = json!({"steps": [{"layer": "port-security", "result": "done", "detail": "spoofed source IP 1.2.3.4: drop (spoofed_src_ip)"}],
        "verdict": "dropped", "drop_reason": "spoofed_src_ip", "outputs": []});
    let r: TraceReply = decode(&r).unwrap();
    assert_eq!(
        trace(&r),
        " 1. port-security: spoofed source IP 1.2.3.4: drop (spoofed_src_ip)\nVerdict : dropped (spoofed_src_ip)\n"
    );
    assert!(decode::<TraceReply>(&json!(null)).is_err());
}

#[test]
fn gateway_views() {
    let instances = json!([
        {"id": "vm1", "hostname": "vm1", "mode": "overlay", "switch": "web-ls", "ip": "192.168.100.2",
         "session": "ESTABLISHED", "acked_version": 5, "tags": {"nsx:network": "web"},
         "agent_status": {"applied_version": 5, "last_error": null, "age_seconds": 4,
                          "received_at_unix": 1513920138u64, "counters": {"drops": 2}}},
        {"id": "vm2", "hostname": "ip-10-99-3-12", "mode": "micro-segmentation", "switch": null, "ip": null,
         "session": null, "acked_version": null},
        {"id": "vm3", "hostname": "vm3", "mode": "micro-segmentation", "switch": null, "ip": null,
         "session": "ESTABLISHED", "acked_version": 6,
         "agent_status": {"applied_version": 6, "age_seconds": 125,
                          "last_error": "apply of version 7 failed:\nhost plumbing: nsx-vtep0.0 exists with another MAC"}}]);
    golden("gw_instances", &gw_instances(&instances));
    let sws = json!([
        {"name": "web-ls", "tag": "web", "vni": 9100, "subnet": "192.168.100.0/24", "gateway_ip": "192.168.100.1"},
        {"name": "app-ls", "tag": "app", "vni": 9096, "subnet": "192.168.99.0/24", "gateway_ip": "192.168.99.1"}]);
    golden("gw_switches", &gw_switches(&sws, &instances));
    let rs = json!([{"name": "t1", "mac": "02:50:56:56:44:52", "switches": ["web-ls", "app-ls"],
        "routes": [{"prefix": "10.0.0.0/8", "next_hop": "192.168.99.254"}]}]);
    golden("gw_routers", &gw_routers(&rs));
    let certs = json!({"certificates": [
        {"instance_id": "vm1", "serial": "1f2e3d", "fingerprint": "ab".repeat(32), "not_after_unix": 1545456138u64, "revoked_at_unix": null},
        {"instance_id": "vm2", "serial": "4c5b6a", "fingerprint": "cd".repeat(32), "not_after_unix": 1545456138u64, "revoked_at_unix": 1513920138u64}],
        "revocations": [{"instance_id": "vm2", "serial": "4c5b6a", "fingerprint": "cd".repeat(32), "revoked_at_unix": 1513920138u64}]});
    golden("gw_certificates", &gw_certificates(&certs, Tz::UTC));
    // As `GET /api/v1/routers/t0/nat-rules` answers (gateway/tests/edge.rs).
    let nat = json!({"router": "t0", "edge": "edge-1",
        "uplink": {"address": "203.0.113.2/24", "secondary": ["203.0.113.10", "203.0.113.11"],
                   "gateway": "203.0.113.1"},
        "snat": {"pool": [], "filtering": "endpoint_independent", "port_min": 1024,
                 "port_max": 65535, "max_sessions": 262144},
        "rules": [
            {"id": 1, "action": "DNAT", "match_sources": ["any"], "match_destinations": ["203.0.113.10"],
             "translated": ["192.168.100.3"], "instance": "vm3"},
            {"id": 2, "action": "SNAT", "match_sources": ["192.168.100.3"], "match_destinations": ["any"],
             "translated": ["203.0.113.10"], "instance": "vm3"},
            {"id": 3, "action": "SNAT", "match_sources": ["192.168.100.0/24", "192.168.99.0/24"],
             "match_destinations": ["any"], "translated": ["203.0.113.2"], "translated_ports": "1024-65535"}]});
    golden("gw_nat_rules", &gw_nat_rules(&nat));
    let none =
        json!({"router": "t0", "edge": null, "uplink": {"address": "203.0.113.2/24"}, "rules": []});
    assert_eq!(
        gw_nat_rules(&none),
        "Logical Router : t0 (tier-0)\nEdge : none enrolled (the rules are in force nowhere yet)\n\
         Uplink : 203.0.113.2/24\nRule Count : 0\n"
    );
    assert!(
        gw_certificates(&json!({"certificates": []}), Tz::UTC).ends_with("Revocations : none\n")
    );
    let _ = gw_certificates(&json!({"revocations": ["x", 1]}), Tz::UTC);
}

#[test]
fn nothing_panics_on_odd_replies() {
    // The agent's odd replies are refused when read (never formatted);
    // the gateway's views take any JSON.
    for v in [
        json!(null),
        json!([]),
        json!("x"),
        json!({"interfaces": 3, "switches": [1, null, "x"], "entries": {}, "routers": [[]],
               "tunnels": [{"last_rx_ago_ms": -1}], "drops": [1], "layers": "x", "rules": [{}]}),
    ] {
        assert!(decode::<InterfacesReply>(&v).is_err());
        assert!(decode::<SwitchesReply>(&v).is_err());
        assert!(decode::<MacTableReply>(&v).is_err());
        assert!(decode::<ArpTableReply>(&v).is_err());
        assert!(decode::<RoutersReply>(&v).is_err());
        assert!(decode::<Router>(&v).is_err());
        assert!(decode::<StatusReply>(&v).is_err());
        assert!(decode::<CountersReply>(&v).is_err());
        assert!(decode::<FirewallStats>(&v).is_err());
        assert!(decode::<TextReply>(&v).is_err());
        assert!(decode::<agent_api::Reply<VersionReply>>(&v).is_err());
        assert!(decode::<TraceReply>(&v).is_err());
        let _ = gw_instances(&v);
        let _ = gw_switches(&v, &v);
        let _ = gw_routers(&v);
        let _ = gw_certificates(&v, Tz::UTC);
        let _ = gw_nat_rules(&v);
    }
}

#[test]
fn cells() {
    assert_eq!(cell(&json!(null)), "-");
    assert_eq!(cell(&json!("")), "-");
    assert_eq!(cell(&json!(true)), "yes");
    assert_eq!(cell(&json!(["a", 1])), "a, 1");
    assert_eq!(cell(&json!([])), "-");
    assert_eq!(vni(&json!(9100)), "0x238c");
    assert_eq!(vni(&json!(null)), "-");
    assert_eq!(ago(Some(412)), "0.4 s ago");
    assert_eq!(ago(Some(61_000)), "1 min ago");
    assert_eq!(ago(Some(7_200_000)), "2 h ago");
    assert_eq!(ago(None), "never");
}
