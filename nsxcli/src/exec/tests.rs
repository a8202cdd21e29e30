//! Tests of the command runner against a fake API: the seed session, every
//! get in text and JSON, trace MAC resolution (overlay and
//! micro-segmentation), capture lines and files, gateway commands,
//! completion names.

use std::collections::HashMap;

use serde_json::Map;

use super::*;
use crate::format::tests::{fixture, golden};
use crate::grammar::parse;

/// Canned replies by command; records every request.
#[derive(Default)]
struct Fake {
    replies: HashMap<&'static str, Result<Value, Error>>,
    calls: Vec<(String, Map<String, Value>)>,
}

impl Fake {
    fn agent() -> Fake {
        let mut f = Fake::default();
        for (cmd, file) in [
            ("status", "status"),
            ("interfaces", "interfaces"),
            ("switches", "switches"),
            ("mac-table", "mac_table"),
            ("arp-table", "arp_table"),
            ("routers", "routers"),
            ("dhcp", "dhcp"),
            ("counters", "counters"),
            ("getrules", "getrules"),
            ("getaddrsets", "getaddrsets"),
            ("getflows", "getflows"),
            ("firewall-stats", "firewall_stats"),
        ] {
            f.replies.insert(cmd, Ok(fixture(file)));
        }
        f.replies.insert(
            "version",
            Ok(json!({"api_version": 1, "agent": "nsx-agent", "version": "0.1.0"})),
        );
        f.replies.insert(
            "trace",
            Ok(json!({"api_version": 1, "steps": [
                {"layer": "port-security", "result": "next", "detail": "06:17:1e:54:96:3a / 192.168.100.3 is the port's own: pass"},
                {"layer": "firewall", "result": "next", "detail": "new connection, rule 1006 (domain-c25) accept"},
                {"layer": "switch", "result": "next", "detail": "web-ls (vni 0x238c): dst MAC 02:50:56:56:44:52 is router t1: to the router"},
                {"layer": "router", "result": "next", "detail": "router t1: 192.168.99.9 192.168.99.0/24 connected via app-ls, ttl 64 -> 63"},
                {"layer": "encap", "result": "done", "detail": "vni 0x2388 to 10.99.3.251 (tep 251)"}],
                "verdict": "encapsulated", "drop_reason": null,
                "outputs": [{"kind": "underlay", "dst": "10.99.3.251", "vni": 9096, "len": 142}]})),
        );
        f
    }

    fn calls_of(&self, cmd: &str) -> Vec<&Map<String, Value>> {
        self.calls
            .iter()
            .filter(|(c, _)| c == cmd)
            .map(|(_, a)| a)
            .collect()
    }
}

impl Api for Fake {
    fn call(&mut self, req: &Request) -> Result<Value, Error> {
        let cmd = req.name();
        // The request as it goes on the wire, without `cmd`.
        let mut args = match serde_json::to_value(req) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        };
        args.remove("cmd");
        self.calls.push((cmd.to_string(), args));
        let mut reply = self
            .replies
            .get(cmd)
            .cloned()
            .unwrap_or_else(|| Err(Error::Api(format!("unknown command {cmd:?}"))));
        // A capture's link type follows its point, as the agent's does.
        if let (
            Request::Capture {
                point: agent_api::CapturePoint::Underlay,
                ..
            },
            Ok(v),
        ) = (req, &mut reply)
        {
            v["linktype"] = json!(101);
        }
        reply
    }
}

/// The seed's status with the fields of `patch` replaced.
fn status_with(patch: Value) -> Value {
    let mut s = fixture("status");
    if let (Value::Object(m), Value::Object(p)) = (&mut s, patch) {
        m.extend(p);
    }
    s
}

fn run(api: &mut Fake, line: &str) -> Result<Outcome, Error> {
    let p = parse(Mode::Agent, line)?.expect("a command");
    agent(api, &p, Tz::UTC)
}

fn text(api: &mut Fake, line: &str) -> String {
    run(api, line)
        .unwrap_or_else(|e| panic!("{line}: {e}"))
        .text
}

#[test]
fn the_seed_session() {
    let mut f = Fake::agent();
    assert_eq!(
        text(&mut f, "get gateway connection status"),
        "Public Cloud Gateway : nsx-gw.vmware.local:5555\n\
         Connection Status : ESTABLISHED\n\
         Connection Time : Fri Dec 22 05:22:18 2017\n"
    );
    assert_eq!(
        text(&mut f, "get vm-network-mode"),
        "VM-Network-Mode : overlay\nInterface : eth0\n"
    );
    assert_eq!(f.calls_of("status").len(), 2);
}

#[test]
fn every_get_has_text_and_json() {
    let mut f = Fake::agent();
    for line in [
        "get gateway connection status",
        "get vm-network-mode",
        "get interfaces",
        "get logical-switches",
        "get logical-switch web-ls mac-table",
        "get logical-switch 0x238c arp-table",
        "get logical-routers",
        "get logical-router t1 forwarding",
        "get dhcp server web-ls",
        "get dhcp leases",
        "get tunnels",
        "get firewall rules",
        "get firewall rule 1006",
        "get firewall addrsets",
        "get firewall flows",
        "get firewall stats",
        "get statistics",
        "get version",
        "get config version",
    ] {
        let t = text(&mut f, line);
        assert!(!t.is_empty() && t.ends_with('\n'), "{line}: {t:?}");
        let j = text(&mut f, &format!("{line} --json"));
        let v: Value =
            serde_json::from_str(&j).unwrap_or_else(|e| panic!("{line} --json: {e}: {j}"));
        assert!(v.is_object(), "{line} --json");
    }
}

#[test]
fn switch_tables_filter_and_resolve_by_vni() {
    let mut f = Fake::agent();
    let t = text(&mut f, "get logical-switch 9100 arp-table");
    assert!(t.starts_with("Logical Switch : web-ls (VNI 0x238c)\n"));
    assert!(!t.contains("192.168.99.9"));
    assert_eq!(
        f.calls_of("arp-table")[0].get("switch"),
        Some(&json!("web-ls"))
    );
    let j: Value =
        serde_json::from_str(&text(&mut f, "get logical-switch web-ls mac-table --json")).unwrap();
    assert_eq!(j["switch"], "web-ls");
    assert_eq!(j["entries"].as_array().map(Vec::len), Some(3));
    assert_eq!(
        run(&mut f, "get logical-switch db-ls mac-table").unwrap_err(),
        Error::Failed("Unknown logical switch \"db-ls\" (known: web-ls, app-ls)".into())
    );
}

#[test]
fn api_errors_pass_through() {
    let mut f = Fake::agent();
    f.replies.insert(
        "getflows",
        Err(Error::Api("no firewall is configured".into())),
    );
    let e = run(&mut f, "get firewall flows").unwrap_err();
    assert_eq!(e.render(), "% no firewall is configured\n");
    assert_eq!(e.exit_code(), 1);
}

#[test]
fn version_falls_back_to_status() {
    let mut f = Fake::agent();
    f.replies.remove("version");
    assert_eq!(
        text(&mut f, "get version"),
        format!("nsxcli : {VERSION}\nnsx-agent : 0.1.0\nAPI Version : 1\n")
    );
}

fn sent_frame(f: &Fake) -> Vec<u8> {
    let a = f.calls_of("trace");
    let hex = a
        .last()
        .and_then(|a| a.get("frame_hex"))
        .and_then(Value::as_str)
        .unwrap();
    agent_api::hex::decode(hex).unwrap()
}

#[test]
fn trace_port_routed_uses_the_router_mac() {
    let mut f = Fake::agent();
    let t = text(
        &mut f,
        "trace port icmp src 192.168.100.3 dst 192.168.99.9 ttl 64",
    );
    golden("trace_port", &t);
    let frame = sent_frame(&f);
    assert_eq!(
        &frame[0..6],
        &[0x02, 0x50, 0x56, 0x56, 0x44, 0x52],
        "router MAC"
    );
    assert_eq!(
        &frame[6..12],
        &[0x06, 0x17, 0x1e, 0x54, 0x96, 0x3a],
        "the port's MAC"
    );
    assert_eq!(f.calls_of("trace")[0].get("from"), Some(&json!("port")));
    let ip = geneve::ipv4::Packet::new_checked(&frame[14..]).unwrap();
    assert!(ip.verify_checksum());
}

#[test]
fn trace_port_same_switch_uses_the_arp_table() {
    let mut f = Fake::agent();
    text(
        &mut f,
        "trace port tcp src 192.168.100.3 dst 192.168.100.2 dport 22",
    );
    assert_eq!(&sent_frame(&f)[0..6], &[0x06, 0x17, 0x1e, 0x54, 0x96, 0x2c]);
    // The gateway IP is in the ARP table as the router.
    text(
        &mut f,
        "trace port icmp src 192.168.100.3 dst 192.168.100.1",
    );
    assert_eq!(&sent_frame(&f)[0..6], &[0x02, 0x50, 0x56, 0x56, 0x44, 0x52]);
    // ARP goes to broadcast without asking anything.
    let before = f.calls.len();
    text(&mut f, "trace port arp src 192.168.100.3 dst 192.168.100.9");
    assert_eq!(&sent_frame(&f)[0..6], &[0xff; 6]);
    assert_eq!(f.calls.len() - before, 2, "status + trace");
    // Unknown neighbour on the subnet: say so, with the way out.
    assert_eq!(
        run(
            &mut f,
            "trace port udp src 192.168.100.3 dst 192.168.100.77 dport 53"
        )
        .unwrap_err(),
        Error::Failed("No ARP entry for 192.168.100.77 on web-ls; give dmac <mac>".into())
    );
    // Given MACs win.
    text(
        &mut f,
        "trace port udp src 192.168.100.3 dst 192.168.100.77 dport 53 dmac 0a:0b:0c:0d:0e:0f smac 02:00:00:00:00:01",
    );
    assert_eq!(
        &sent_frame(&f)[0..12],
        &[10, 11, 12, 13, 14, 15, 2, 0, 0, 0, 0, 1]
    );
}

#[test]
fn trace_underlay_resolves_inner_macs() {
    let mut f = Fake::agent();
    let t = text(
        &mut f,
        "trace underlay from 10.99.3.251 vni 0x238c icmp src 192.168.99.9 dst 192.168.100.3 ttl 63",
    );
    assert!(
        t.starts_with("From : tunnel from 10.99.3.251, vni 0x238c\n"),
        "{t}"
    );
    let a = f.calls_of("trace")[0].clone();
    assert_eq!(a.get("from"), Some(&json!("underlay")));
    assert_eq!(a.get("src_tep"), Some(&json!("10.99.3.251")));
    assert_eq!(a.get("vni"), Some(&json!(0x238c)));
    let frame = sent_frame(&f);
    assert_eq!(
        &frame[0..6],
        &[0x06, 0x17, 0x1e, 0x54, 0x96, 0x3a],
        "the local port"
    );
    assert_eq!(
        &frame[6..12],
        &[0x02, 0x50, 0x56, 0x56, 0x44, 0x52],
        "routed by the sender"
    );
    assert_eq!(
        run(
            &mut f,
            "trace underlay from 10.99.3.251 vni 77 icmp src 1.1.1.1 dst 2.2.2.2"
        )
        .unwrap_err(),
        Error::Failed("Unknown logical switch \"77\" (known: web-ls, app-ls)".into())
    );
}

#[test]
fn trace_without_an_overlay_port() {
    let mut f = Fake::agent();
    f.replies.insert(
        "status",
        Ok(status_with(json!({"mode": "overlay", "overlay": null}))),
    );
    assert!(matches!(
        run(&mut f, "trace port icmp src 1.1.1.1 dst 2.2.2.2"),
        Err(Error::Failed(m)) if m.contains("no overlay port")
    ));
    // Overlay mode needs the tunnel.
    let e = run(
        &mut Fake::agent(),
        "trace underlay icmp src 1.1.1.1 dst 2.2.2.2",
    )
    .unwrap_err();
    assert_eq!(e.exit_code(), 2, "{e:?}");
}

#[test]
fn trace_in_micro_segmentation_mode() {
    let mut f = Fake::agent();
    f.replies.insert(
        "status",
        Ok(status_with(
            json!({"mode": "micro-segmentation", "nic": "eth0", "overlay": null}),
        )),
    );
    let t = text(
        &mut f,
        "trace port tcp src 10.99.3.11 dst 10.99.3.12 dport 22",
    );
    assert!(
        t.starts_with("From : this host, out of eth0 (micro-segmentation)\n"),
        "{t}"
    );
    assert_eq!(
        &sent_frame(&f)[0..12],
        &[2, 0, 0, 0, 0, 1, 6, 0x17, 0x1e, 0x54, 0x96, 0x3a]
    );
    assert_eq!(f.calls_of("trace")[0].get("from"), Some(&json!("port")));
    let t = text(
        &mut f,
        "trace underlay udp src 10.99.3.12 dst 10.99.3.11 dport 53",
    );
    assert!(
        t.starts_with("From : the underlay, into eth0 (micro-segmentation)\n"),
        "{t}"
    );
    assert_eq!(
        &sent_frame(&f)[0..12],
        &[6, 0x17, 0x1e, 0x54, 0x96, 0x3a, 2, 0, 0, 0, 0, 1]
    );
    let a = f.calls_of("trace")[1].clone();
    assert_eq!(a.get("from"), Some(&json!("underlay")));
    assert!(a.get("src_tep").is_none() && a.get("vni").is_none());
    let e = run(
        &mut f,
        "trace underlay from 10.99.3.12 vni 5 icmp src 1.1.1.1 dst 2.2.2.2",
    )
    .unwrap_err();
    assert_eq!(e.exit_code(), 2, "{e:?}");
}

fn capture_reply() -> Value {
    let frame = crate::packet::parse(
        &"icmp src 192.168.100.3 dst 192.168.99.9"
            .split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>(),
    )
    .unwrap()
    .build(
        [6, 0x17, 0x1e, 0x54, 0x96, 0x3a],
        [2, 0x50, 0x56, 0x56, 0x44, 0x52],
    )
    .unwrap();
    let hex = agent_api::hex::encode(&frame);
    json!({"api_version": 1, "point": "port", "linktype": 1, "ended": "count", "truncated": 0,
        "frames": [
        {"ts_ns": 1_513_920_138_000_001_000u64, "dir": "tx", "point": "port", "orig_len": 98,
         "data_hex": hex},
        {"ts_ns": 1_513_920_138_000_002_000u64, "dir": "rx", "point": "port", "orig_len": 98,
         "data_hex": hex}]})
}

#[test]
fn capture_lines_and_file() {
    let mut f = Fake::agent();
    f.replies.insert("capture", Ok(capture_reply()));
    let t = text(&mut f, "capture port count 2 timeout 3");
    golden("capture_port", &t);
    let a = f.calls_of("capture")[0].clone();
    assert_eq!(a.get("point"), Some(&json!("port")));
    assert_eq!(a.get("count"), Some(&json!(2)));
    assert_eq!(a.get("timeout_ms"), Some(&json!(3000)));
    let o = run(&mut f, "capture switch web-ls file /tmp/x.pcap").unwrap();
    assert_eq!(
        o.text,
        "2 packets captured to /tmp/x.pcap (pcap, linktype ETHERNET)\n"
    );
    let (path, bytes) = o.file.unwrap();
    assert_eq!(path, PathBuf::from("/tmp/x.pcap"));
    assert_eq!(&bytes[20..24], &1u32.to_le_bytes());
    assert_eq!(bytes.len(), 24 + 2 * (16 + 98));
    assert_eq!(
        f.calls_of("capture")[1].get("point"),
        Some(&json!("switch:web-ls"))
    );
    let o = run(&mut f, "capture underlay file u.pcap snaplen 128").unwrap();
    let (_, bytes) = o.file.unwrap();
    assert_eq!(&bytes[16..24], &[128, 0, 0, 0, 101, 0, 0, 0]);
    assert!(o.text.contains("linktype RAW (IPv4)"));
}

struct FakeGw(HashMap<&'static str, Result<Value, Error>>);

impl GwApi for FakeGw {
    fn get(&mut self, path: &str) -> Result<Value, Error> {
        self.0.get(path).cloned().unwrap_or_else(|| {
            Err(Error::Api(format!(
                "The gateway does not serve GET {path} (HTTP 404)"
            )))
        })
    }
}

#[test]
fn gateway_commands() {
    let mut g = FakeGw(HashMap::new());
    g.0.insert(
        "/api/v1/instances",
        Ok(
            json!([{"id": "vm1", "hostname": "vm1", "mode": "overlay", "switch": "web-ls",
                   "ip": "192.168.100.2", "session": "ESTABLISHED", "acked_version": 3}]),
        ),
    );
    g.0.insert(
        "/api/v1/switches",
        Ok(json!([{"name": "web-ls", "tag": "web", "vni": 9100, "subnet": "192.168.100.0/24", "gateway_ip": "192.168.100.1"}])),
    );
    let run = |g: &mut FakeGw, line: &str| {
        let p = parse(Mode::Gateway, line).unwrap().unwrap();
        gateway(g, &p, Tz::UTC)
    };
    let t = run(&mut g, "get instances").unwrap().text;
    assert!(
        t.starts_with("ID   Name  Mode     Switch  IP             Connection   Version Acked  Version Applied  Last Status  Agent Error\n"),
        "{t}"
    );
    let t = run(&mut g, "get logical-switches").unwrap().text;
    assert!(
        t.contains("web-ls  web  0x238c  192.168.100.0/24  192.168.100.1      1\n"),
        "{t}"
    );
    let j: Value =
        serde_json::from_str(&run(&mut g, "get instances --json").unwrap().text).unwrap();
    assert_eq!(j[0]["id"], "vm1");
    let e = run(&mut g, "get certificates").unwrap_err();
    assert_eq!(
        e.render(),
        "% The gateway does not serve GET /api/v1/certificates (HTTP 404); this gateway has no certificates endpoint yet (upgrade nsx-gateway)\n"
    );
    assert!(
        run(&mut g, "help")
            .unwrap()
            .text
            .contains("get certificates")
    );
    g.0.insert(
        "/api/v1/routers/t0/nat-rules",
        Ok(json!({"router": "t0", "edge": "edge-1",
                  "uplink": {"address": "203.0.113.2/24", "secondary": ["203.0.113.10"]},
                  "rules": [{"id": 1, "action": "SNAT", "match_sources": ["192.168.100.0/24"],
                             "match_destinations": ["any"], "translated": ["203.0.113.2"],
                             "translated_ports": "1024-65535"}]})),
    );
    let t = run(&mut g, "get logical-router t0 nat-rules").unwrap().text;
    assert!(
        t.starts_with("Logical Router : t0 (tier-0)\nEdge : edge-1\n"),
        "{t}"
    );
    assert!(
        t.ends_with(
            "   1  SNAT    192.168.100.0/24  any                203.0.113.2  1024-65535  -\n"
        ),
        "{t}"
    );
    // A typed name stays one path segment.
    let e = run(&mut g, "get logical-router a/b?c nat-rules").unwrap_err();
    assert!(
        e.render()
            .contains("GET /api/v1/routers/a%2Fb%3Fc/nat-rules (HTTP 404)"),
        "{}",
        e.render()
    );
}

#[test]
fn gateway_load_balancers() {
    let mut g = FakeGw(HashMap::new());
    let run = |g: &mut FakeGw, line: &str| {
        let p = parse(Mode::Gateway, line).unwrap().unwrap();
        gateway(g, &p, Tz::UTC)
    };
    // A gateway from before the load balancer.
    assert_eq!(
        run(&mut g, "get load-balancers").unwrap_err().render(),
        "% The gateway does not serve GET /api/v1/load-balancers (HTTP 404); \
         this gateway has no load-balancers endpoint yet (upgrade nsx-gateway)\n"
    );
    let all = fixture("gw_load_balancers");
    g.0.insert("/api/v1/load-balancers", Ok(all.clone()));
    golden(
        "gw_load_balancers",
        &run(&mut g, "get load-balancers").unwrap().text,
    );
    let j: Value =
        serde_json::from_str(&run(&mut g, "get load-balancers --json").unwrap().text).unwrap();
    assert_eq!(j, all);
    golden(
        "gw_load_balancer",
        &run(&mut g, "get load-balancer 10.64.1.2:7000")
            .unwrap()
            .text,
    );
    golden(
        "gw_load_balancer_edge",
        &run(&mut g, "get load-balancer udp/10.64.1.3:53")
            .unwrap()
            .text,
    );
    // --json: that virtual server's object, as the gateway sent it.
    let j: Value = serde_json::from_str(
        &run(&mut g, "get load-balancer udp/10.64.1.2:7000 --json")
            .unwrap()
            .text,
    )
    .unwrap();
    assert_eq!(j, all[4]);
    for line in [
        "get load-balancer 10.64.1.9:7000",
        "get load-balancer 10.64.1.9:7000 --json",
    ] {
        let e = run(&mut g, line).unwrap_err();
        assert_eq!(
            e.render(),
            "% no virtual server TCP 10.64.1.9:7000 in the gateway's state\n"
        );
        assert_eq!(e.exit_code(), crate::error::EXIT_FAILED);
    }
    // The protocol is part of the name: TCP 10.64.1.3:53 is not there.
    assert_eq!(
        run(&mut g, "get load-balancer 10.64.1.3:53")
            .unwrap_err()
            .to_string(),
        "no virtual server TCP 10.64.1.3:53 in the gateway's state"
    );
    // The agent's ipvsadm counters are not the gateway's.
    let stats = Parsed {
        command: Command::LoadBalancers(LbView::Stats),
        json: false,
    };
    assert!(matches!(
        gateway(&mut g, &stats, Tz::UTC),
        Err(Error::Failed(m)) if m.contains("instance command")
    ));
    // An argument the grammar did not check is a usage error here too.
    let bad = Parsed {
        command: Command::LoadBalancer { vip: "web".into() },
        json: false,
    };
    assert_eq!(
        gateway(&mut g, &bad, Tz::UTC).unwrap_err().exit_code(),
        crate::error::EXIT_USAGE
    );
    assert!(
        run(&mut g, "help get load")
            .unwrap()
            .text
            .contains("get load-balancer <vip:port>\n    One virtual server of the desired state")
    );
}

#[test]
fn names_for_completion() {
    let mut f = Fake::agent();
    assert_eq!(
        agent_names(&mut f, ArgKind::Switch),
        vec!["web-ls", "app-ls", "0x238c", "0x2388"]
    );
    assert_eq!(agent_names(&mut f, ArgKind::Vni), vec!["0x238c", "0x2388"]);
    assert_eq!(agent_names(&mut f, ArgKind::Router), vec!["t1"]);
    assert_eq!(agent_names(&mut f, ArgKind::RuleId), vec!["1006", "1002"]);
    assert_eq!(
        agent_names(&mut f, ArgKind::Tep),
        vec!["10.99.3.44", "10.99.3.69", "10.99.3.251"]
    );
    assert_eq!(agent_names(&mut f, ArgKind::Ip).len(), 4);
    assert!(agent_names(&mut f, ArgKind::File).is_empty());
    let mut empty = Fake::default();
    assert!(agent_names(&mut empty, ArgKind::Switch).is_empty());
}

#[test]
fn subnets() {
    // Off-subnet destinations go to the router: the switch's subnet is an
    // `Ipv4Net` (a malformed one is refused when the reply is read).
    let net: ipnet::Ipv4Net = "192.168.100.0/24".parse().unwrap();
    assert!(net.contains(&Ipv4Addr::new(192, 168, 100, 7)));
    assert!(!net.contains(&Ipv4Addr::new(192, 168, 99, 7)));
    let all: ipnet::Ipv4Net = "0.0.0.0/0".parse().unwrap();
    assert!(all.contains(&Ipv4Addr::new(1, 2, 3, 4)));
    assert!("junk".parse::<ipnet::Ipv4Net>().is_err());
    assert!("1.2.3.4/33".parse::<ipnet::Ipv4Net>().is_err());
    let bad = json!({"api_version": 1, "switches": [{"name": "x", "vni": 1, "subnet": "junk",
        "gateway_ip": "1.2.3.4", "router": null, "local_port": null, "endpoints": []}]});
    assert!(matches!(
        decode::<SwitchesReply>(&bad),
        Err(Error::BadReply { .. })
    ));
}
