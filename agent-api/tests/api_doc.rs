//! `agent/API.md` against the types: every command of [`Request`] has its
//! row in the commands table and every row is a command; a row's
//! arguments are the command's; every field of a sample reply (at any
//! depth) is named in its row or in a section the row links to, and every
//! field the row names exists. In the reply column a bare `name` is a
//! field, a quoted `"value"` a value.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use agent_api::*;
use serde::Serialize;
use serde_json::{Value, json};

fn doc() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../agent/API.md");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The backticked words of `text` that are names (`[a-z_][a-z0-9_]*`).
fn names(text: &str) -> BTreeSet<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|w| {
            let mut c = w.chars();
            c.next().is_some_and(|f| f.is_ascii_lowercase() || f == '_')
                && c.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        })
        .map(str::to_string)
        .collect()
}

/// `## name` sections by name.
fn sections(doc: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut cur: Option<(String, String)> = None;
    for line in doc.lines() {
        if let Some(h) = line.strip_prefix("## ") {
            if let Some((n, t)) = cur.take() {
                out.insert(n, t);
            }
            cur = Some((h.trim().to_lowercase(), String::new()));
        } else if let Some((_, t)) = cur.as_mut() {
            t.push_str(line);
            t.push('\n');
        }
    }
    if let Some((n, t)) = cur {
        out.insert(n, t);
    }
    out
}

/// The commands table: command -> (arguments cell, reply cell).
fn table(doc: &str) -> BTreeMap<String, (String, String)> {
    let mut out = BTreeMap::new();
    for line in doc.lines().filter(|l| l.starts_with("| `")) {
        // Cells split at `|`, not at an escaped `\|`.
        let mut cells: Vec<String> = vec![String::new()];
        let mut prev = ' ';
        for c in line
            .trim()
            .trim_start_matches('|')
            .trim_end_matches('|')
            .chars()
        {
            match c {
                '|' if prev != '\\' => cells.push(String::new()),
                c => cells.last_mut().unwrap().push(c),
            }
            prev = c;
        }
        let cells: Vec<&str> = cells.iter().map(|c| c.trim()).collect();
        assert_eq!(cells.len(), 3, "a row has cmd | arguments | reply: {line}");
        for cmd in cells[0].split('/') {
            let cmd = cmd.trim().trim_matches('`').to_string();
            out.insert(cmd, (cells[1].to_string(), cells[2].to_string()));
        }
    }
    out
}

/// Every object key in `v`, at any depth (not inside `drops`, `dhcp` or
/// `desired`).
fn keys(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                out.insert(k.clone());
                // `drops` and `dhcp` of `counters` map reason and message
                // type names to counts (data);
                // `desired` of `config` is the config file's desired state,
                // documented with the file (docs/agent.sample.toml).
                if k != "drops" && k != "dhcp" && k != "desired" {
                    keys(x, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| keys(x, out)),
        _ => {}
    }
}

fn reply<T: Serialize>(body: T) -> Value {
    serde_json::from_str(&encode_reply(&body)).unwrap()
}

fn mac() -> control::MacAddr {
    control::MacAddr([2, 0, 0, 0, 0, 1])
}

fn ssh() -> SshStatus {
    let l = SshdStatus {
        state: "running".into(),
        listen: Some("10.99.3.11:8888".into()),
        netns: Some("nsx-root".into()),
        pid: Some(812),
        restarts: 1,
        last_error: Some("exited".into()),
        reason: Some("x".into()),
    };
    SshStatus {
        state: "on".into(),
        reason: Some("x".into()),
        underlay: Some(l.clone()),
        overlay: Some(l),
        port22_blocked_on_underlay: Some(true),
    }
}

/// A reply of every command, every optional part present.
fn samples() -> BTreeMap<&'static str, Value> {
    let ip = Ipv4Addr::new(10, 99, 3, 11);
    let net: ipnet::Ipv4Net = "192.168.100.0/24".parse().unwrap();
    let text = || reply(TextReply { text: "x".into() });
    let traffic = Traffic::default();
    let desired: control::InstanceConfig =
        serde_json::from_value(json!({"version": 1, "tep_id": 1, "switches": [], "routers": []}))
            .unwrap();
    let mut m = BTreeMap::new();
    m.insert(
        "status",
        reply(StatusReply {
            agent: "nsx-agent".into(),
            version: "0.1.0".into(),
            pid: 1,
            uptime_s: 1,
            config_path: "/etc/nsx-agent/agent.toml".into(),
            mode: Mode::Overlay,
            nic: "eth0".into(),
            underlay_ip: ip,
            underlay_mtu: 1500,
            overlay: Some(OverlayStatus {
                netns: "nsx-root".into(),
                interface: "nsx-eth0".into(),
                mtu: 1442,
                ip,
                mac: mac(),
                switch: "web-ls".into(),
            }),
            config_version: 1,
            tep_id: 1,
            last_reload: Some(ReloadStatus::new(true, "ok".into())),
            gateway: Some(GatewayStatus {
                state: "ESTABLISHED".into(),
                peer: "10.99.3.2:5555".into(),
                name: Some("nsx-gw.vmware.local:5555".into()),
                address: Some("10.99.3.2:5555".into()),
                since_unix: 1,
                last_error: Some("x".into()),
                applied_version: Some(1),
                protocol_version: Some(1),
            }),
            ssh: Some(ssh()),
        }),
    );
    m.insert(
        "counters",
        reply(CountersReply {
            config_version: 1,
            drops: [("unknown_tunnel".to_string(), 1)].into(),
            total_drops: 1,
            layers: vec![LayerCounters {
                name: "switch".into(),
                seen: 1,
                passed: 1,
                handled: 0,
                dropped: 0,
            }],
            tunnels: vec![TunnelCounters {
                tep_ip: ip,
                tep_id: 1,
                tx_packets: 1,
                tx_bytes: 1,
                rx_packets: 1,
                rx_bytes: 1,
                last_rx_ago_ms: Some(1),
            }],
            port: traffic,
            underlay: traffic,
            downlink: traffic,
            io: IoCounters::default(),
            dhcp: [("discover".to_string(), 1)].into(),
            // Documented with nat-sessions, whose summary it is.
            nat: None,
        }),
    );
    m.insert(
        "config",
        reply(ConfigReply {
            host: serde_json::Map::new(),
            gateway: Some(serde_json::Map::new()),
            desired,
        }),
    );
    m.insert(
        "version",
        reply(VersionReply {
            agent: "nsx-agent".into(),
            version: "0.1.0".into(),
        }),
    );
    m.insert(
        "interfaces",
        reply(InterfacesReply {
            interfaces: vec![Interface {
                name: "eth0".into(),
                role: Role::Nic,
                netns: Some("x".into()),
                mac: Some("02:00:00:00:00:01".into()),
                mtu: Some(1500),
                ipv4: vec!["10.99.3.11/24".into()],
                state: LinkState::Up,
                rx_packets: Some(1),
                rx_bytes: Some(1),
                tx_packets: Some(1),
                tx_bytes: Some(1),
            }],
        }),
    );
    m.insert(
        "switches",
        reply(SwitchesReply {
            switches: vec![Switch {
                name: "web-ls".into(),
                vni: 9100,
                subnet: net,
                gateway_ip: ip,
                router: Some("t1".into()),
                local_port: Some(PortAddress { ip, mac: mac() }),
                endpoints: vec![ip],
            }],
        }),
    );
    m.insert(
        "mac-table",
        reply(MacTableReply {
            entries: vec![MacEntry {
                switch: "web-ls".into(),
                vni: 9100,
                mac: mac(),
                location: Location::Remote,
                tep_ip: Some(ip),
            }],
        }),
    );
    m.insert(
        "arp-table",
        reply(ArpTableReply {
            entries: vec![ArpEntry {
                switch: "web-ls".into(),
                vni: 9100,
                ip,
                mac: mac(),
                location: Location::Remote,
                tep_ip: Some(ip),
            }],
        }),
    );
    m.insert(
        "routers",
        reply(RoutersReply {
            routers: vec![Router {
                name: "t1".into(),
                mac: mac(),
                switches: vec!["web-ls".into()],
                routes: vec![Route {
                    prefix: net,
                    switch: "web-ls".into(),
                    next_hop: Some(ip),
                    kind: RouteKind::Static,
                }],
            }],
        }),
    );
    m.insert(
        "dhcp",
        reply(DhcpReply {
            servers: vec![DhcpServer {
                switch: "web-ls".into(),
                vni: 1,
                server_id: ip,
                subnet_mask: ip,
                router: Some(ip),
                dns_servers: vec![ip],
                domain_name: Some("corp.example".into()),
                lease_time: 86_400,
                mtu: 1442,
                routes: vec![DhcpRoute {
                    prefix: "10.20.0.0/16".into(),
                    next_hop: ip,
                }],
            }],
            leases: vec![DhcpLease {
                switch: "web-ls".into(),
                ip,
                mac: mac(),
                state: "bound".into(),
                bound_ago_s: Some(1),
                expires_in_s: Some(86_399),
            }],
        }),
    );
    let stats =
        json!({"conns": 1, "in_packets": 2, "out_packets": 2, "in_bytes": 120, "out_bytes": 120});
    let rates = json!({"cps": 0, "in_pps": 0, "out_pps": 0, "in_bps": 0, "out_bps": 0});
    let lb: LoadBalancersReply = serde_json::from_value(json!({
        "role": "distributed",
        "services": [{
            "protocol": "TCP", "vip": "10.64.1.2", "port": 10000, "scheduler": "rr",
            "kind": "nat", "persistence_timeout": 10, "persistence_mask": "255.255.255.0",
            "quorum_lost": false, "sorry_server": "192.168.1.200:8089",
            "stats": stats, "rates": rates,
            "real_servers": [{
                "ip": "192.168.1.100", "port": 8089, "forward": "Masq", "weight": 1,
                "config_weight": 1, "state": "up", "active": 1, "inactive": 0,
                "stats": stats, "rates": rates
            }],
            "persistence": [{
                "client": "10.64.1.5", "server": "192.168.1.100:8089",
                "connections": 1, "expires_in_s": 10
            }]
        }],
        "connections": 1, "capacity": 65536, "drops": {"no_server": 0}
    }))
    .unwrap();
    m.insert("load-balancers", reply(lb));
    m.insert(
        "nat-sessions",
        reply(NatSessionsReply {
            summary: NatSummary {
                sessions: 1,
                capacity: 2,
                mappings: 1,
                by_protocol: ["tcp", "udp", "icmp"].map(|p| (p.to_string(), 1)).into(),
                drops: [
                    "no_mapping",
                    "filtered",
                    "exhausted",
                    "table_full",
                    "fragment",
                    "malformed",
                    "unsupported",
                ]
                .map(|r| (r.to_string(), 0))
                .into(),
                pools: vec![NatPool {
                    ip,
                    used: [("tcp".to_string(), 1)].into(),
                    size: [("tcp".to_string(), 64_512)].into(),
                    failures: [("tcp".to_string(), 0)].into(),
                }],
                ..NatSummary::default()
            },
            sessions: vec![NatSession {
                protocol: "tcp".into(),
                inside: "192.168.100.3:40000".parse().unwrap(),
                outside: "203.0.113.2:40000".parse().unwrap(),
                remote: "198.51.100.7:80".parse().unwrap(),
                state: "ESTABLISHED".into(),
                idle_s: 1,
                is_static: false,
                inbound: false,
                hairpin: false,
            }],
            truncated: false,
        }),
    );
    m.insert("getrules", text());
    m.insert("getaddrsets", text());
    m.insert("getflows", text());
    m.insert(
        "firewall-stats",
        reply(FirewallStats {
            policy_loaded: true,
            flows: 1,
            flow_capacity: 1,
            rules: vec![RuleStats {
                id: 1006,
                ruleset: "domain-c25".into(),
                action: "accept".into(),
                packets: 1,
                bytes: 1,
                sessions: 1,
            }],
            drops: vec![("fw_rule".into(), 1)],
            management: 1,
            fast_path: 1,
            related: 1,
            rejects: 1,
            recheck_removed: 1,
            log_rate_limited: 1,
        }),
    );
    m.insert(
        "trace",
        reply(TraceReply {
            from: "port".into(),
            packet: "x".into(),
            steps: vec![TraceStep {
                layer: "encap".into(),
                result: "done".into(),
                detail: "x".into(),
            }],
            verdict: "dropped".into(),
            drop_reason: Some("firewall".into()),
            firewall_drop_reason: Some("fw_rule".into()),
            outputs: vec![TraceOutput {
                kind: "underlay".into(),
                dst: "10.99.3.12".into(),
                vni: Some(9100),
                len: 1,
                summary: "x".into(),
            }],
        }),
    );
    m.insert(
        "capture",
        reply(CaptureReply {
            point: "port".into(),
            linktype: 1,
            ended: "count".into(),
            frames: vec![CapturedFrame {
                ts_ns: 1,
                dir: "rx".into(),
                point: "port".into(),
                orig_len: 1,
                data_hex: "00".into(),
            }],
            truncated: 0,
        }),
    );
    m
}

#[test]
fn every_command_is_documented_and_every_documented_command_exists() {
    let doc = doc();
    let rows = table(&doc);
    let documented: BTreeSet<&str> = rows.keys().map(String::as_str).collect();
    let commands: BTreeSet<&str> = COMMANDS.iter().map(|(c, _)| *c).collect();
    assert_eq!(documented, commands, "agent/API.md's commands table");
}

#[test]
fn documented_arguments_are_the_commands() {
    let rows = table(&doc());
    for (cmd, args) in COMMANDS {
        let (cell, _) = &rows[*cmd];
        let documented = names(cell);
        let actual: BTreeSet<String> = args.iter().map(|a| a.to_string()).collect();
        assert_eq!(documented, actual, "arguments of {cmd}");
    }
}

#[test]
fn documented_reply_fields_are_the_serialized_ones() {
    let doc = doc();
    let rows = table(&doc);
    let sections = sections(&doc);
    let samples = samples();
    for (cmd, args) in COMMANDS {
        let sample = samples
            .get(cmd)
            .unwrap_or_else(|| panic!("no sample reply for {cmd}"));
        let mut fields = BTreeSet::new();
        keys(sample, &mut fields);
        let (_, reply) = &rows[*cmd];
        let mut documented = names(reply);
        // Sections the row links to: `[ssh](#ssh)`.
        for link in reply.split("](#").skip(1) {
            let name = link.split(')').next().unwrap_or("");
            let text = sections
                .get(name)
                .unwrap_or_else(|| panic!("{cmd} links to a missing section #{name}"));
            documented.extend(names(text));
        }
        // `api_version` is every reply's, described above the table.
        let undocumented: Vec<&String> = fields
            .difference(&documented)
            .filter(|f| *f != "api_version")
            .collect();
        assert!(
            undocumented.is_empty(),
            "{cmd}: fields not in agent/API.md: {undocumented:?}"
        );
        let args: BTreeSet<String> = args.iter().map(|a| a.to_string()).collect();
        let unknown: Vec<String> = names(reply)
            .into_iter()
            .filter(|n| !fields.contains(n) && !args.contains(n))
            .collect();
        assert!(
            unknown.is_empty(),
            "{cmd}: agent/API.md names fields the reply does not have: {unknown:?} \
             (write values quoted: `\"local\"`)"
        );
    }
}
