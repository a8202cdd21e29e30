//! The per-instance engine on hand-built frames with a manual clock: the
//! failure policy before any ruleset, management traffic that no rule can
//! block, L2 rules, idle timeouts, a full table (new connections dropped
//! and counted, established ones unaffected), invalid TCP, and the
//! established fast path skipping rule evaluation.

#![allow(clippy::unwrap_used)]

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;

use control::{
    Action, AddrRef, DefaultRule, FirewallConfig, L2Rule, L2RuleSet, PortRange, Protocol, Rule,
    RuleSet, Service, Timeouts,
};
use firewall::{Dir, FailurePolicy, Firewall, FwDrop, FwVerdict, Policy, RejectKind};

const ME: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const PEER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const GW: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 254);
const SEC: u64 = 1_000_000_000;

fn eth(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, l4: &[u8]) -> Vec<u8> {
    let mut h = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, proto, 0, 0];
    let total = u16::try_from(20 + l4.len()).expect("test packets are short");
    h[2..4].copy_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    h.extend_from_slice(l4);
    eth(0x0800, &h)
}

fn tcp(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    flags: u8,
    seq: u32,
    ack: u32,
) -> Vec<u8> {
    let mut t = vec![0u8; 20];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[8..12].copy_from_slice(&ack.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = flags;
    t[14..16].copy_from_slice(&64240u16.to_be_bytes());
    ipv4(src, dst, 6, &t)
}

fn udp(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16) -> Vec<u8> {
    let mut u = vec![0u8; 12];
    u[0..2].copy_from_slice(&sport.to_be_bytes());
    u[2..4].copy_from_slice(&dport.to_be_bytes());
    u[4..6].copy_from_slice(&12u16.to_be_bytes());
    ipv4(src, dst, 17, &u)
}

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

/// Outbound allowed to anything; inbound only tcp/22; default drop.
fn config() -> FirewallConfig {
    FirewallConfig {
        rulesets: vec![RuleSet {
            name: "s".into(),
            rules: vec![
                Rule {
                    id: 10,
                    direction: control::Direction::Out,
                    sources: vec![],
                    destinations: vec![],
                    services: vec![],
                    action: Action::Accept,
                    log: false,
                },
                Rule {
                    id: 22,
                    direction: control::Direction::In,
                    sources: vec![AddrRef::Net("10.0.0.0/24".parse().unwrap())],
                    destinations: vec![],
                    services: vec![Service {
                        port: Some(PortRange::single(22)),
                        ..Service::any_of(Protocol::Number(6))
                    }],
                    action: Action::Accept,
                    log: false,
                },
            ],
        }],
        default_rule: DefaultRule {
            id: 1,
            action: Action::Drop,
            log: false,
        },
        ..FirewallConfig::allow_all()
    }
}

fn firewall(cfg: FirewallConfig, capacity: usize) -> Firewall {
    let mut fw = Firewall::new(capacity, FailurePolicy::FailClosed);
    fw.set_policy(Arc::new(Policy::compile(&cfg).unwrap()));
    fw
}

fn drops(fw: &Firewall, r: FwDrop) -> u64 {
    fw.counters().drops[r as usize]
}

#[test]
fn fail_closed_passes_only_management() {
    let mut fw = Firewall::new(64, FailurePolicy::FailClosed);
    fw.set_management(vec![SocketAddrV4::new(GW, 5555)]);
    let out = tcp(ME, PEER, 40000, 22, SYN, 1, 0);
    assert_eq!(
        fw.process(Dir::Out, &out, 0),
        FwVerdict::Drop(FwDrop::FailClosed)
    );
    // ARP, DHCP, and the agent's own gateway connection pass.
    assert_eq!(
        fw.process(Dir::In, &eth(0x0806, &[0; 28]), 0),
        FwVerdict::Pass
    );
    assert_eq!(
        fw.process(
            Dir::Out,
            &udp(Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, 68, 67),
            0
        ),
        FwVerdict::Pass
    );
    assert_eq!(
        fw.process(Dir::Out, &tcp(ME, GW, 41000, 5555, SYN, 1, 0), 0),
        FwVerdict::Pass
    );
    assert_eq!(
        fw.process(Dir::In, &tcp(GW, ME, 5555, 41000, SYN | ACK, 9, 2), 0),
        FwVerdict::Pass
    );
    // ...but not another port of the gateway.
    assert!(matches!(
        fw.process(Dir::Out, &tcp(ME, GW, 41001, 22, SYN, 1, 0), 0),
        FwVerdict::Drop(_)
    ));
    assert_eq!(drops(&fw, FwDrop::FailClosed), 2);

    // Even a deny-all ruleset never blocks management.
    let deny_all = FirewallConfig {
        default_rule: DefaultRule {
            id: 1,
            action: Action::Drop,
            log: false,
        },
        ..FirewallConfig::allow_all()
    };
    fw.set_policy(Arc::new(Policy::compile(&deny_all).unwrap()));
    assert_eq!(
        fw.process(Dir::Out, &tcp(ME, GW, 41002, 5555, SYN, 1, 0), 0),
        FwVerdict::Pass
    );
    assert_eq!(fw.process(Dir::Out, &out, 0), FwVerdict::Drop(FwDrop::Rule));

    let mut open = Firewall::new(64, FailurePolicy::FailOpen);
    assert_eq!(open.process(Dir::Out, &out, 0), FwVerdict::Pass);
}

#[test]
fn established_replies_take_the_fast_path_and_others_are_judged() {
    let mut fw = firewall(config(), 64);
    // Outbound UDP opens a connection; the reply comes back although no
    // inbound rule allows UDP.
    assert_eq!(
        fw.process(Dir::Out, &udp(ME, PEER, 5000, 53), 0),
        FwVerdict::Pass
    );
    assert_eq!(
        fw.process(Dir::In, &udp(PEER, ME, 53, 5000), 1),
        FwVerdict::Pass
    );
    assert_eq!(fw.counters().fast_path, 1);
    // Unsolicited inbound UDP falls to the default rule.
    assert_eq!(
        fw.process(Dir::In, &udp(PEER, ME, 53, 5001), 2),
        FwVerdict::Drop(FwDrop::Rule)
    );
    let hits = fw.hits();
    let rules = fw.policy().unwrap().rules();
    let h = |id: u32| hits[rules.iter().position(|r| r.id == id).unwrap()];
    assert_eq!(
        (h(10).sessions, h(10).packets),
        (1, 2),
        "reply counted on rule 10"
    );
    assert_eq!(h(1).sessions, 1, "default rule hit");
}

#[test]
fn idle_timeouts_follow_the_manual_clock() {
    let mut cfg = config();
    cfg.timeouts = Timeouts {
        udp_first_packet: 5,
        udp_single: 5,
        udp_multiple: 10,
        tcp_established: 30,
        ..Timeouts::default()
    };
    let mut fw = firewall(cfg, 64);
    fw.process(Dir::Out, &udp(ME, PEER, 5000, 53), 0);
    fw.process(Dir::In, &udp(PEER, ME, 53, 5000), SEC);
    // Both directions seen: udp_multiple (10 s) from the last packet.
    assert_eq!(
        fw.process(Dir::In, &udp(PEER, ME, 53, 5000), 10 * SEC),
        FwVerdict::Pass
    );
    assert_eq!(
        fw.process(Dir::In, &udp(PEER, ME, 53, 5000), 21 * SEC),
        FwVerdict::Drop(FwDrop::Rule),
        "expired: the reply is a new, unsolicited datagram"
    );
    // TCP: established, idle 29 s passes, 31 s more is gone.
    fw.process(Dir::In, &tcp(PEER, ME, 40000, 22, SYN, 100, 0), 0);
    fw.process(Dir::Out, &tcp(ME, PEER, 22, 40000, SYN | ACK, 500, 101), 0);
    fw.process(Dir::In, &tcp(PEER, ME, 40000, 22, ACK, 101, 501), 0);
    assert_eq!(
        fw.process(Dir::Out, &tcp(ME, PEER, 22, 40000, ACK, 501, 101), 29 * SEC),
        FwVerdict::Pass
    );
    let n = fw.conntrack().len();
    fw.tick(61 * SEC);
    for _ in 0..64 {
        fw.tick(61 * SEC);
    }
    assert!(fw.conntrack().len() < n, "the sweep reclaimed idle entries");
}

#[test]
fn full_table_drops_new_connections_but_not_established_ones() {
    let mut cfg = config();
    cfg.max_flows = Some(2);
    let mut fw = firewall(cfg, 64);
    for port in [1000, 1001] {
        assert_eq!(
            fw.process(Dir::Out, &udp(ME, PEER, port, 53), 0),
            FwVerdict::Pass
        );
    }
    assert_eq!(
        fw.process(Dir::Out, &udp(ME, PEER, 1002, 53), 0),
        FwVerdict::Drop(FwDrop::TableFull)
    );
    assert_eq!(drops(&fw, FwDrop::TableFull), 1);
    for port in [1000, 1001] {
        assert_eq!(
            fw.process(Dir::In, &udp(PEER, ME, 53, port), 1),
            FwVerdict::Pass
        );
        assert_eq!(
            fw.process(Dir::Out, &udp(ME, PEER, port, 53), 2),
            FwVerdict::Pass
        );
    }
}

#[test]
fn invalid_tcp_is_dropped_and_counted() {
    let mut fw = firewall(config(), 64);
    fw.process(Dir::In, &tcp(PEER, ME, 40000, 22, SYN, 100, 0), 0);
    fw.process(Dir::Out, &tcp(ME, PEER, 22, 40000, SYN | ACK, 500, 101), 0);
    fw.process(Dir::In, &tcp(PEER, ME, 40000, 22, ACK, 101, 501), 0);
    // Data far outside the window.
    let mut seg = tcp(PEER, ME, 40000, 22, ACK, 101 + 0x4000_0000, 501);
    seg.extend_from_slice(&[0u8; 100]);
    let total = u16::try_from(seg.len() - 14).unwrap();
    seg[16..18].copy_from_slice(&total.to_be_bytes());
    let v = fw.process(Dir::In, &seg, 1);
    assert_eq!(v, FwVerdict::Drop(FwDrop::Invalid));
    // The refusal is counted on the connection too (getflows), by the
    // commit of the judged decision.
    let flow = fw.conntrack().iter().next().unwrap();
    assert_eq!((flow.dropped_orig, flow.dropped_reply), (1, 0));
    // SYN+FIN on a new connection is not a valid opening; no rule can make it one.
    let v = fw.process(Dir::In, &tcp(PEER, ME, 40001, 22, SYN | 0x01, 1, 0), 2);
    assert!(matches!(v, FwVerdict::Drop(_)), "{v:?}");
    // Garbage is a counted drop, never a panic.
    assert_eq!(
        fw.process(Dir::In, &ipv4(PEER, ME, 6, &[0; 4]), 3),
        FwVerdict::Drop(FwDrop::Malformed)
    );
    let syn = tcp(PEER, ME, 1, 22, SYN, 1, 0);
    for n in 0..syn.len() {
        let _ = fw.process(Dir::In, &syn[..n], 4);
    }
}

#[test]
fn reject_rules_answer_and_l2_rules_drop() {
    let mut cfg = config();
    cfg.default_rule.action = Action::Reject;
    cfg.l2_rulesets = vec![L2RuleSet {
        name: "s_L2".into(),
        rules: vec![L2Rule {
            id: 5,
            direction: control::Direction::InOut,
            ethertype: Some(0x88cc), // LLDP
            sources: vec![],
            destinations: vec![],
            action: Action::Drop,
            log: false,
        }],
    }];
    let mut fw = firewall(cfg, 64);
    assert_eq!(
        fw.process(Dir::In, &tcp(PEER, ME, 40000, 23, SYN, 1, 0), 0),
        FwVerdict::Reject(RejectKind::TcpRst)
    );
    assert_eq!(
        fw.process(Dir::In, &udp(PEER, ME, 1, 9), 0),
        FwVerdict::Reject(RejectKind::IcmpUnreachable(3))
    );
    assert_eq!(
        fw.process(Dir::In, &eth(0x88cc, &[0; 30]), 0),
        FwVerdict::Drop(FwDrop::L2Rule)
    );
    // Answers are well-formed frames addressed back to the sender.
    let mut buf = [0u8; 128];
    let syn = tcp(PEER, ME, 40000, 23, SYN, 1, 0);
    let n = firewall::reject::build(RejectKind::TcpRst, &syn, &mut buf).unwrap();
    assert_eq!(n, 54);
    assert_eq!(&buf[0..6], &syn[6..12], "to the sender's MAC");
    assert_eq!(&buf[26..30], &ME.octets(), "from the destination's address");
    assert_eq!(buf[47], 0x14, "RST+ACK");
    assert_eq!(
        u32::from_be_bytes(buf[42..46].try_into().unwrap()),
        2,
        "acks the SYN"
    );
}

#[test]
fn a_rule_change_records_the_rule_that_admits_each_connection_now() {
    let mut fw = firewall(config(), 64);
    fw.process(Dir::Out, &udp(ME, PEER, 5000, 53), 0);
    assert_eq!(fw.conntrack().iter().next().unwrap().rule_id, 10);
    let mut cfg = config();
    cfg.rulesets[0].rules.insert(
        0,
        Rule {
            id: 53,
            direction: control::Direction::Out,
            sources: vec![],
            destinations: vec![],
            services: vec![Service {
                port: Some(PortRange::single(53)),
                ..Service::any_of(Protocol::Number(17))
            }],
            action: Action::Accept,
            log: false,
        },
    );
    assert_eq!(fw.set_policy(Arc::new(Policy::compile(&cfg).unwrap())), 0);
    assert_eq!(fw.conntrack().iter().next().unwrap().rule_id, 53);
}
