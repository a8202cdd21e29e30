//! Tests of the grammar: every command, prefixes, `--json`, suggestions,
//! usage errors, `?`, completion, `help`, and no panic on any prefix of any
//! command.

use super::*;

fn p(line: &str) -> Command {
    match parse(Mode::Agent, line) {
        Ok(Some(p)) => p.command,
        other => panic!("{line:?}: {other:?}"),
    }
}

fn pg(line: &str) -> Command {
    match parse(Mode::Gateway, line) {
        Ok(Some(p)) => p.command,
        other => panic!("{line:?}: {other:?}"),
    }
}

fn err(mode: Mode, line: &str) -> Error {
    match parse(mode, line) {
        Err(e) => e,
        other => panic!("{line:?} parsed: {other:?}"),
    }
}

#[test]
fn every_agent_command_parses() {
    assert_eq!(p("get gateway connection status"), Command::GatewayStatus);
    assert_eq!(p("get vm-network-mode"), Command::VmNetworkMode);
    assert_eq!(p("get interfaces"), Command::Interfaces);
    assert_eq!(p("get logical-switches"), Command::Switches);
    assert_eq!(
        p("get logical-switch web-ls mac-table"),
        Command::SwitchTable {
            switch: "web-ls".into(),
            table: SwitchTable::Mac
        }
    );
    assert_eq!(
        p("get logical-switch 0x238c arp-table"),
        Command::SwitchTable {
            switch: "0x238c".into(),
            table: SwitchTable::Arp
        }
    );
    assert_eq!(p("get logical-routers"), Command::Routers);
    assert_eq!(
        p("get logical-router t1 forwarding"),
        Command::Forwarding {
            router: "t1".into()
        }
    );
    assert_eq!(p("get tunnels"), Command::Tunnels);
    assert_eq!(p("get firewall rules"), Command::Firewall(FwView::Rules));
    assert_eq!(
        p("get firewall addrsets"),
        Command::Firewall(FwView::Addrsets)
    );
    assert_eq!(p("get firewall flows"), Command::Firewall(FwView::Flows));
    assert_eq!(p("get firewall stats"), Command::Firewall(FwView::Stats));
    assert_eq!(p("get firewall rule 1006"), Command::FirewallRule(1006));
    assert_eq!(p("get statistics"), Command::Statistics);
    assert_eq!(p("get version"), Command::Version);
    assert_eq!(p("get config version"), Command::ConfigVersion);
    assert_eq!(p("help"), Command::Help(vec![]));
    assert_eq!(
        p("help get logical"),
        Command::Help(vec!["get".into(), "logical".into()])
    );
    assert_eq!(p("exit"), Command::Exit);
    assert_eq!(p("quit"), Command::Exit);
}

#[test]
fn trace_commands() {
    let Command::Trace(t) = p("trace port icmp src 192.168.100.3 dst 192.168.99.9 ttl 64") else {
        panic!()
    };
    assert_eq!(t.from, TraceFrom::Port);
    assert_eq!(t.packet.proto, packet::Proto::Icmp);
    assert_eq!(t.packet.dst, Ipv4Addr::new(192, 168, 99, 9));
    let Command::Trace(t) = p(
        "trace underlay from 10.99.3.12 vni 0x2388 tcp src 192.168.99.9 dst 192.168.100.3 sport 40000 dport 22 flags S",
    ) else {
        panic!()
    };
    assert_eq!(
        t.from,
        TraceFrom::Underlay {
            tep: Ipv4Addr::new(10, 99, 3, 12),
            vni: 0x2388
        }
    );
    assert_eq!(
        (t.packet.sport, t.packet.dport, t.packet.flags),
        (40000, 22, 0x02)
    );
    // Micro-segmentation: a frame as the NIC receives it, no tunnel.
    let Command::Trace(t) = p("trace underlay udp src 10.99.3.12 dst 10.99.3.11 dport 53") else {
        panic!()
    };
    assert_eq!(t.from, TraceFrom::Nic);
    // Both forms are offered after `trace underlay`.
    let q = question(Mode::Agent, "trace underlay ?").unwrap();
    assert!(
        q.starts_with("  from ") && q.contains("\n  icmp ") && !q.contains("<cr>"),
        "{q}"
    );
    assert_eq!(
        complete(Mode::Agent, "trace underlay ", &NoNames).1,
        vec!["from ", "arp ", "icmp ", "tcp ", "udp "]
    );
    assert_eq!(
        err(Mode::Agent, "trace underlay").render(),
        format!(
            "% Missing packet: arp, icmp, tcp or udp\n\
             Usage: trace underlay from <tep-ip> vni <vni> {PACKET_USAGE}\n       trace underlay {PACKET_USAGE}\n"
        )
    );
}

#[test]
fn capture_commands() {
    assert_eq!(
        p("capture port"),
        Command::Capture(Capture {
            point: CapturePoint::Port,
            count: None,
            file: None,
            timeout_ms: None,
            snaplen: None
        })
    );
    assert_eq!(
        p("capture underlay count 5 file /tmp/u.pcap timeout 2.5 snaplen 200"),
        Command::Capture(Capture {
            point: CapturePoint::Underlay,
            count: Some(5),
            file: Some(PathBuf::from("/tmp/u.pcap")),
            timeout_ms: Some(2500),
            snaplen: Some(200)
        })
    );
    assert_eq!(
        p("capture switch web-ls timeout 1 count 3"),
        Command::Capture(Capture {
            point: CapturePoint::Switch("web-ls".into()),
            count: Some(3),
            file: None,
            timeout_ms: Some(1000),
            snaplen: None
        })
    );
}

#[test]
fn gateway_commands_and_modes() {
    assert_eq!(pg("get instances"), Command::Instances);
    assert_eq!(pg("get logical-switches"), Command::Switches);
    assert_eq!(pg("get logical-routers"), Command::Routers);
    assert_eq!(pg("get certificates"), Command::Certificates);
    assert_eq!(
        pg("get logical-router t0 nat-rules"),
        Command::NatRules {
            router: "t0".into()
        }
    );
    assert_eq!(
        pg("get logical-router t0 nat"),
        Command::NatRules {
            router: "t0".into()
        }
    );
    // NAT rules are the gateway's; the agent's router has forwarding.
    assert!(matches!(
        err(Mode::Agent, "get logical-router t0 nat-rules"),
        Error::UnknownCommand { .. } | Error::Usage { .. }
    ));
    assert_eq!(pg("exit"), Command::Exit);
    // Agent commands are unknown in gateway mode and the other way round.
    assert!(matches!(
        err(Mode::Gateway, "get tunnels"),
        Error::UnknownCommand { .. }
    ));
    assert!(matches!(
        err(Mode::Agent, "get instances"),
        Error::UnknownCommand { .. }
    ));
}

#[test]
fn load_balancer_commands_in_both_modes() {
    use crate::format::LbView;
    let one = |vip: &str| Command::LoadBalancer { vip: vip.into() };
    for (mode, parse_in) in [(Mode::Agent, p as fn(&str) -> Command), (Mode::Gateway, pg)] {
        assert_eq!(
            parse_in("get load-balancers"),
            Command::LoadBalancers(LbView::Pool),
            "{mode:?}"
        );
        assert_eq!(
            parse_in("get load-balancer 10.64.1.2:7000"),
            one("10.64.1.2:7000")
        );
        assert_eq!(
            parse_in("get load-balancer UDP/10.64.1.3:53"),
            one("UDP/10.64.1.3:53")
        );
        let parsed = parse(mode, "get load-balancer 10.64.1.2:7000 --json")
            .unwrap()
            .unwrap();
        assert!(parsed.json, "{mode:?}");
        for bad in ["10.64.1.2", "sctp/10.64.1.2:7000", "10.64.1.2:0", "web:80"] {
            let e = err(mode, &format!("get load-balancer {bad}"));
            assert_eq!(e.exit_code(), 2, "{mode:?} {bad}: {e:?}");
            assert!(
                e.render()
                    .ends_with("\nUsage: get load-balancer <vip:port>\n"),
                "{}",
                e.render()
            );
        }
        assert_eq!(
            err(mode, "get load-balancer 10.64.1.2").render(),
            "% Invalid <vip:port> \"10.64.1.2\": \"10.64.1.2\" is not a virtual server \
             (ip:port, or udp/ip:port)\nUsage: get load-balancer <vip:port>\n"
        );
        assert!(matches!(
            err(mode, "get load-balancer"),
            Error::Usage { .. }
        ));
    }
    // The ipvsadm counters are the agent's.
    assert_eq!(
        p("get load-balancers --stats"),
        Command::LoadBalancers(LbView::Stats)
    );
    assert_eq!(
        p("get load-balancers --rate"),
        Command::LoadBalancers(LbView::Rate)
    );
    for line in ["get load-balancers --stats", "get load-balancers --rate"] {
        assert_eq!(
            err(Mode::Gateway, line).render(),
            format!(
                "% Unexpected \"{}\" after \"get load-balancers\"\nUsage: get load-balancers\n",
                line.rsplit(' ').next().unwrap()
            )
        );
    }
}

#[test]
fn prefixes_json_and_blank() {
    assert_eq!(p("get vm"), Command::VmNetworkMode);
    assert_eq!(p("  get   gateway conn stat  "), Command::GatewayStatus);
    assert_eq!(p("get fire st"), Command::Firewall(FwView::Stats));
    assert_eq!(p("get firewall flow"), Command::Firewall(FwView::Flows));
    let parsed = parse(Mode::Agent, "get --json logical-switches")
        .unwrap()
        .unwrap();
    assert!(parsed.json);
    assert_eq!(parsed.command, Command::Switches);
    assert!(!parse(Mode::Agent, "get tunnels").unwrap().unwrap().json);
    assert_eq!(parse(Mode::Agent, "   ").unwrap(), None);
    assert!(matches!(
        err(Mode::Agent, "help --json"),
        Error::Usage { .. }
    ));
    assert!(matches!(err(Mode::Agent, "--json"), Error::Usage { .. }));
}

#[test]
fn unknown_commands_suggest_the_closest() {
    assert_eq!(
        err(Mode::Agent, "get logical-swtich web-ls mac-table"),
        Error::UnknownCommand {
            line: "get logical-swtich".into(),
            suggestion: Some("get logical-switch".into())
        }
    );
    assert_eq!(
        err(Mode::Agent, "gte version"),
        Error::UnknownCommand {
            line: "gte".into(),
            suggestion: Some("get".into())
        }
    );
    assert_eq!(
        err(Mode::Agent, "get firewall flwos"),
        Error::UnknownCommand {
            line: "get firewall flwos".into(),
            suggestion: Some("get firewall flows".into())
        }
    );
    assert_eq!(
        err(Mode::Agent, "xyzzy"),
        Error::UnknownCommand {
            line: "xyzzy".into(),
            suggestion: None
        }
    );
    assert_eq!(err(Mode::Agent, "get logical-swtich").exit_code(), 2);
}

#[test]
fn bad_arguments_give_the_usage() {
    let e = err(Mode::Agent, "get firewall rule abc");
    assert_eq!(
        e.render(),
        "% Invalid <rule-id> \"abc\": not a rule id (a number)\nUsage: get firewall rule <rule-id>\n"
    );
    let e = err(Mode::Agent, "get logical-switch web-ls");
    assert_eq!(
        e.render(),
        "% Incomplete command \"get logical-switch web-ls\"\n\
         Usage: get logical-switch <name|vni> mac-table\n       get logical-switch <name|vni> arp-table\n"
    );
    let e = err(Mode::Agent, "get version now");
    assert_eq!(
        e.render(),
        "% Unexpected \"now\" after \"get version\"\nUsage: get version\n"
    );
    let e = err(Mode::Agent, "capture port count 0");
    assert_eq!(
        e.render(),
        "% Invalid count \"0\": 1..=10000\n\
         Usage: capture port [count <n>] [file <path>] [timeout <seconds>] [snaplen <bytes>]\n"
    );
    for bad in [
        "capture port count",
        "capture port colour red",
        "capture port count 1 count 2",
        "capture port timeout 61",
        "capture port timeout nan",
        "capture port snaplen 1",
        "trace port",
        "trace port icmp src 1.2.3 dst 1.2.3.4",
        "trace port icmp src 1.2.3.4",
        "trace port tcp src 1.2.3.4 dst 1.2.3.5",
        "trace port icmp src 1.2.3.4 dst 1.2.3.5 dport 22",
        "trace port icmp src 1.2.3.4 dst 1.2.3.5 ttl 0",
        "trace port icmp src 1.2.3.4 dst 1.2.3.5 ttl",
        "trace port ip src 1.2.3.4 dst 1.2.3.5",
        "trace port tcp src 1.2.3.4 dst 1.2.3.5 dport 22 flags Q",
        "trace underlay from 10.99.3.300 vni 1 icmp src 1.2.3.4 dst 1.2.3.5",
        "trace underlay from 10.99.3.12 vni 0 icmp src 1.2.3.4 dst 1.2.3.5",
        "trace underlay from 10.99.3.12 vni 0x1000000 icmp src 1.2.3.4 dst 1.2.3.5",
        "trace underlay from 10.99.3.12",
        "get logical-",
    ] {
        let e = err(Mode::Agent, bad);
        assert_eq!(e.exit_code(), 2, "{bad}: {e:?}");
        if !bad.starts_with("get logical-") {
            assert!(
                matches!(&e, Error::Usage { usage, .. } if !usage.is_empty()),
                "{bad}: {e:?}"
            );
        }
    }
    let e = err(Mode::Agent, "trace port tcp src 1.2.3.4 dst 1.2.3.5");
    assert_eq!(
        e.render(),
        format!("% Missing \"dport <port>\" for tcp\nUsage: trace port {PACKET_USAGE}\n")
    );
}

#[test]
fn ambiguous_prefix() {
    assert_eq!(
        err(Mode::Agent, "get logical-sw"),
        Error::Usage {
            message: "Ambiguous command \"get logical-sw\": logical-switches, logical-switch"
                .into(),
            usage: vec![]
        }
    );
}

#[test]
fn question_lists_what_can_follow() {
    assert_eq!(
        question(Mode::Agent, "?").unwrap(),
        "  get             Show information\n\
         \x20 trace           Trace a synthetic packet through the datapath (nothing is sent)\n\
         \x20 capture         Capture the packets the agent sees\n\
         \x20 help            Commands and their usage\n\
         \x20 exit            Leave the shell\n\
         \x20 quit            Leave the shell\n"
    );
    assert_eq!(
        question(Mode::Agent, "get logical-switch web-ls ?").unwrap(),
        "  mac-table       MAC address table\n  arp-table       ARP table (IP to MAC)\n"
    );
    assert_eq!(
        question(Mode::Agent, "get logical-switch ?").unwrap(),
        "  <name|vni>      Logical switch name or VNI\n"
    );
    assert_eq!(question(Mode::Agent, "get version ?").unwrap(), "  <cr>\n");
    assert_eq!(
        question(Mode::Agent, "get log?").unwrap(),
        "  logical-switches  Logical switches\n\
         \x20 logical-switch    One logical switch's tables\n\
         \x20 logical-routers   Distributed logical routers\n\
         \x20 logical-router    One logical router's tables\n"
    );
    let g = question(Mode::Agent, "get ?").unwrap();
    assert!(
        g.starts_with("  gateway           The Public Cloud Gateway\n"),
        "{g}"
    );
    assert!(g.contains("\n  firewall          Distributed firewall\n"));
    assert_eq!(g.lines().count(), 16);
    assert!(
        g.contains("\n  load-balancers    Virtual servers (L4 load balancer)\n"),
        "{g}"
    );
    assert_eq!(
        question(Mode::Agent, "get load-balancers ?").unwrap(),
        "  --stats         Totals: connections, packets, bytes (ipvsadm -Ln --stats)\n\
         \x20 --rate          Rates: connections, packets, bytes per second (ipvsadm -Ln --rate)\n\
         \x20 <cr>\n"
    );
    assert_eq!(
        question(Mode::Agent, "trace port ?").unwrap(),
        "  arp             ARP request: who has <dst>, tell <src>\n\
         \x20 icmp            ICMP echo request (or another type/code)\n\
         \x20 tcp             TCP segment (SYN unless flags say otherwise)\n\
         \x20 udp             UDP datagram\n"
    );
    let t = question(Mode::Agent, "trace port icmp src 1.2.3.4 dst 1.2.3.5 ?").unwrap();
    assert!(
        t.contains("  ttl ") && t.ends_with("  <cr>\n") && !t.contains("dport"),
        "{t}"
    );
    assert_eq!(
        question(Mode::Agent, "trace port icmp src ?").unwrap(),
        "  <ip>            Source IPv4 address\n"
    );
    let c = question(Mode::Agent, "capture port count 5 ?").unwrap();
    assert!(
        c.contains("  file ") && !c.contains("  count ") && c.ends_with("  <cr>\n"),
        "{c}"
    );
    assert_eq!(
        question(Mode::Gateway, "get ?").unwrap(),
        "  instances         Enrolled instances\n\
         \x20 logical-switches  Logical switches\n\
         \x20 logical-routers   Distributed logical routers\n\
         \x20 logical-router    One logical router's tables\n\
         \x20 load-balancers    Virtual servers (L4 load balancer)\n\
         \x20 load-balancer     One virtual server in detail\n\
         \x20 certificates      Instance certificates and revocations\n"
    );
    // The gateway lists the desired state: no ipvsadm counters.
    assert_eq!(
        question(Mode::Gateway, "get load-balancers ?").unwrap(),
        "  <cr>\n"
    );
    assert_eq!(
        question(Mode::Gateway, "get load-balancer ?").unwrap(),
        "  <vip:port>      Virtual server: ip:port, or udp/ip:port\n"
    );
    assert!(matches!(
        question(Mode::Agent, "get zz?"),
        Err(Error::UnknownCommand { .. })
    ));
    assert!(matches!(
        question(Mode::Agent, "gte ?"),
        Err(Error::UnknownCommand { .. })
    ));
}

struct Fixed;
impl Names for Fixed {
    fn names(&self, kind: ArgKind) -> Vec<String> {
        match kind {
            ArgKind::Switch => vec!["web-ls".into(), "app-ls".into(), "0x238c".into()],
            ArgKind::Router => vec!["t1".into()],
            ArgKind::RuleId => vec!["1006".into(), "1002".into()],
            ArgKind::Ip => vec!["192.168.100.2".into()],
            _ => vec![],
        }
    }
}

#[test]
fn completion_of_commands_and_names() {
    assert_eq!(
        complete(Mode::Agent, "get logical-sw", &NoNames),
        (
            4,
            vec!["logical-switches ".into(), "logical-switch ".into()]
        )
    );
    assert_eq!(
        complete(Mode::Agent, "get vm", &NoNames),
        (4, vec!["vm-network-mode ".into()])
    );
    assert_eq!(
        complete(Mode::Agent, "g", &NoNames),
        (0, vec!["get ".into()])
    );
    assert_eq!(
        complete(Mode::Agent, "get logical-switch ", &Fixed),
        (
            19,
            vec!["web-ls ".into(), "app-ls ".into(), "0x238c ".into()]
        )
    );
    assert_eq!(
        complete(Mode::Agent, "get logical-switch w", &Fixed),
        (19, vec!["web-ls ".into()])
    );
    assert_eq!(
        complete(Mode::Agent, "get logical-switch web-ls m", &Fixed),
        (26, vec!["mac-table ".into()])
    );
    assert_eq!(
        complete(Mode::Agent, "get logical-router ", &Fixed),
        (19, vec!["t1 ".into()])
    );
    assert_eq!(
        complete(Mode::Agent, "get firewall rule 10", &Fixed),
        (18, vec!["1006 ".into(), "1002 ".into()])
    );
    assert_eq!(
        complete(Mode::Agent, "trace port icmp src 1", &Fixed),
        (20, vec!["192.168.100.2 ".into()])
    );
    assert_eq!(
        complete(Mode::Agent, "trace port t", &Fixed),
        (11, vec!["tcp ".into()])
    );
    assert_eq!(
        complete(Mode::Agent, "capture port co", &Fixed),
        (13, vec!["count ".into()])
    );
    assert_eq!(
        complete(Mode::Agent, "get tunnels --j", &Fixed),
        (12, vec!["--json ".into()])
    );
    // Nothing to offer after a bad word; never a panic.
    assert_eq!(complete(Mode::Agent, "gte ", &Fixed), (4, vec![]));
    assert_eq!(complete(Mode::Agent, "get ünï", &Fixed), (4, vec![]));
    assert_eq!(
        complete(Mode::Gateway, "get c", &Fixed),
        (4, vec!["certificates ".into()])
    );
}

#[test]
fn help_lists_commands() {
    let h = help(Mode::Agent, &[]).unwrap();
    assert!(h.starts_with(
        "get gateway connection status\n    Control connection to the Public Cloud Gateway: peer, state, connection time\n"
    ));
    for s in SPECS.iter().filter(|s| s.agent) {
        assert!(h.contains(s.usage), "{}", s.usage);
    }
    let h = help(Mode::Agent, &["get".into(), "fire".into()]).unwrap();
    assert_eq!(
        h.lines().filter(|l| l.starts_with("get firewall")).count(),
        5
    );
    assert!(!h.contains("Tab to complete"));
    let h = help(Mode::Gateway, &[]).unwrap();
    assert!(h.contains("get certificates\n") && !h.contains("get tunnels"));
    assert_eq!(
        help(Mode::Agent, &["gt".into()]),
        Err(Error::UnknownCommand {
            line: "gt".into(),
            suggestion: Some("get".into())
        })
    );
}

#[test]
fn edit_distances() {
    assert_eq!(edit_distance("", "abc"), 3);
    assert_eq!(edit_distance("logical-swtich", "logical-switch"), 2);
    assert_eq!(edit_distance("get", "get"), 0);
    assert_eq!(edit_distance("kitten", "sitting"), 3);
}

#[test]
fn vni_and_numbers() {
    assert_eq!(parse_vni("0x238c"), Ok(0x238c));
    assert_eq!(parse_vni("9100"), Ok(9100));
    assert!(parse_vni("0").is_err());
    assert!(parse_vni("0x1000000").is_err());
    assert!(parse_vni("web").is_err());
    assert_eq!(parse_u32("0XFF"), Ok(255));
}

#[test]
fn no_input_panics() {
    // Every prefix of every usage line, with odd additions, in both modes.
    let mut lines: Vec<String> = Vec::new();
    for s in SPECS {
        let ws: Vec<&str> = s.usage.split_whitespace().collect();
        for n in 0..=ws.len() {
            let l = ws[..n].join(" ");
            lines.push(l.clone());
            lines.push(format!("{l} ?"));
            lines.push(format!("{l}?"));
            lines.push(format!("{l} --json"));
            lines.push(format!("{l} \u{fffd} x"));
        }
    }
    for mode in [Mode::Agent, Mode::Gateway] {
        for l in &lines {
            let _ = parse(mode, l);
            let _ = question(mode, l);
            let _ = complete(mode, l, &Fixed);
            let _ = help(mode, &words(l));
        }
    }
}

mod prop {
    use proptest::prelude::*;

    use super::*;

    /// Words from the grammar and the packet language, plus junk.
    fn word() -> impl Strategy<Value = String> {
        prop_oneof![
            proptest::sample::select(vec![
                "get",
                "trace",
                "capture",
                "help",
                "exit",
                "logical-switch",
                "logical-sw",
                "web-ls",
                "0x238c",
                "mac-table",
                "arp-table",
                "firewall",
                "rule",
                "1006",
                "port",
                "underlay",
                "from",
                "vni",
                "icmp",
                "tcp",
                "udp",
                "arp",
                "src",
                "dst",
                "10.0.0.1",
                "dport",
                "22",
                "flags",
                "S",
                "size",
                "df",
                "count",
                "file",
                "timeout",
                "snaplen",
                "--json",
                "?",
                "get?",
            ])
            .prop_map(str::to_string),
            "[ -~]{0,12}",
            "\\PC{0,6}",
        ]
    }

    proptest! {
        #[test]
        fn any_line_is_handled_without_panic(ws in proptest::collection::vec(word(), 0..12),
                                             trailing in "[ ?\t]{0,2}") {
            let line = ws.join(" ") + &trailing;
            for mode in [Mode::Agent, Mode::Gateway] {
                let _ = parse(mode, &line);
                let _ = question(mode, &line);
                let (start, cands) = complete(mode, &line, &NoNames);
                prop_assert!(start <= line.len());
                prop_assert!(line.is_char_boundary(start));
                for c in cands {
                    prop_assert!(c.ends_with(' '));
                }
            }
        }
    }
}
