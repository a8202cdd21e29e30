//! `Firewall::judge` against `Firewall::process`: for random sequences of
//! packets (TCP handshakes, data, FINs and RSTs of a few connections with
//! plausible and random sequence numbers, UDP, ICMP queries and errors,
//! fragments, other ethertypes, garbage) under random policies, table
//! sizes, `tcp_strict` and time steps long enough to expire connections,
//! `judge` predicts exactly the verdict `process` then returns, and it
//! changes nothing: counters, rule hits, the packet log and the connection
//! table are the same before and after it.

#![allow(clippy::unwrap_used)]

use std::net::Ipv4Addr;
use std::sync::Arc;

use control::{
    Action, AddrRef, DefaultRule, FirewallConfig, L2Rule, L2RuleSet, PortRange, Protocol, Rule,
    RuleSet, Service,
};
use firewall::{Dir, FailurePolicy, Firewall, FlowView, Policy};
use proptest::prelude::*;

const ME: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const PEERS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(10, 0, 0, 2),
    Ipv4Addr::new(10, 0, 0, 3),
    Ipv4Addr::new(192, 168, 7, 9),
];
const SEC: u64 = 1_000_000_000;

fn eth(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, frag: u16, l4: &[u8]) -> Vec<u8> {
    let mut h = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, proto, 0, 0];
    let total = u16::try_from(20 + l4.len()).expect("test packets are short");
    h[2..4].copy_from_slice(&total.to_be_bytes());
    h[6..8].copy_from_slice(&frag.to_be_bytes());
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    h.extend_from_slice(l4);
    eth(0x0800, &h)
}

/// One packet of the sequence; `out` = sent by the instance.
#[derive(Debug, Clone)]
enum Pkt {
    /// Segment `step` of connection `conn` (0 SYN, 1 SYN-ACK, 2 ACK, 3 data,
    /// 4 FIN, 5 RST, 6 random flags/seq).
    Tcp {
        conn: u8,
        step: u8,
        flags: u8,
        seq: u32,
    },
    Udp {
        peer: u8,
        sport: u16,
        dport: u16,
        reply: bool,
    },
    Echo {
        peer: u8,
        reply: bool,
    },
    /// An ICMP error about UDP between us and `peer`.
    IcmpError {
        peer: u8,
        sport: u16,
        dport: u16,
    },
    Fragment {
        peer: u8,
    },
    Ethertype(u16),
    Garbage(Vec<u8>),
}

/// Connection `conn`: (peer, our port, their port, we initiate).
fn conn(c: u8) -> (Ipv4Addr, u16, u16, bool) {
    match c % 4 {
        0 => (PEERS[0], 40000, 22, false),
        1 => (PEERS[1], 40001, 80, true),
        2 => (PEERS[2], 40002, 443, true),
        _ => (PEERS[0], 40003, 22, true),
    }
}

fn frame(p: &Pkt) -> (Dir, Vec<u8>) {
    match p {
        Pkt::Tcp {
            conn: c,
            step,
            flags,
            seq,
        } => {
            let (peer, my_port, their_port, we_open) = conn(*c);
            const C_ISN: u32 = 1000;
            const S_ISN: u32 = 5000;
            // (from initiator?, flags, seq, ack)
            let (from_init, fl, sq, ak) = match step % 7 {
                0 => (true, 0x02, C_ISN, 0),
                1 => (false, 0x12, S_ISN, C_ISN + 1),
                2 => (true, 0x10, C_ISN + 1, S_ISN + 1),
                3 => (*flags & 1 == 0, 0x18, C_ISN + 1, S_ISN + 1),
                4 => (*flags & 1 == 0, 0x11, C_ISN + 1, S_ISN + 1),
                5 => (*flags & 1 == 0, 0x04, C_ISN + 1, 0),
                _ => (*flags & 1 == 0, *flags, *seq, seq.wrapping_add(7)),
            };
            let out = from_init == we_open;
            let (src, dst, sport, dport) = if out {
                (ME, peer, my_port, their_port)
            } else {
                (peer, ME, their_port, my_port)
            };
            let mut t = vec![0u8; 20];
            t[0..2].copy_from_slice(&sport.to_be_bytes());
            t[2..4].copy_from_slice(&dport.to_be_bytes());
            t[4..8].copy_from_slice(&sq.to_be_bytes());
            t[8..12].copy_from_slice(&ak.to_be_bytes());
            t[12] = 5 << 4;
            t[13] = fl;
            t[14..16].copy_from_slice(&64240u16.to_be_bytes());
            if step % 7 == 3 {
                t.extend_from_slice(&[0xab; 100]);
            }
            let dir = if out { Dir::Out } else { Dir::In };
            (dir, ipv4(src, dst, 6, 0x4000, &t))
        }
        Pkt::Udp {
            peer,
            sport,
            dport,
            reply,
        } => {
            let peer = PEERS[usize::from(*peer) % PEERS.len()];
            let mut u = vec![0u8; 12];
            let (src, dst, sp, dp, dir) = if *reply {
                (peer, ME, *dport, *sport, Dir::In)
            } else {
                (ME, peer, *sport, *dport, Dir::Out)
            };
            u[0..2].copy_from_slice(&sp.to_be_bytes());
            u[2..4].copy_from_slice(&dp.to_be_bytes());
            u[4..6].copy_from_slice(&12u16.to_be_bytes());
            (dir, ipv4(src, dst, 17, 0, &u))
        }
        Pkt::Echo { peer, reply } => {
            let peer = PEERS[usize::from(*peer) % PEERS.len()];
            let mut i = vec![8u8, 0, 0, 0, 0x12, 0x34, 0, 1];
            let (src, dst, dir) = if *reply {
                i[0] = 0;
                (peer, ME, Dir::In)
            } else {
                (ME, peer, Dir::Out)
            };
            (dir, ipv4(src, dst, 1, 0, &i))
        }
        Pkt::IcmpError { peer, sport, dport } => {
            let peer = PEERS[usize::from(*peer) % PEERS.len()];
            // The peer says our UDP datagram to it was unreachable.
            let mut quoted = ipv4(ME, peer, 17, 0, &[0u8; 8]);
            let q = quoted.split_off(14);
            let mut i = vec![3u8, 3, 0, 0, 0, 0, 0, 0];
            let mut q = q;
            q[20..22].copy_from_slice(&sport.to_be_bytes());
            q[22..24].copy_from_slice(&dport.to_be_bytes());
            i.extend_from_slice(&q);
            (Dir::In, ipv4(peer, ME, 1, 0, &i))
        }
        Pkt::Fragment { peer } => {
            let peer = PEERS[usize::from(*peer) % PEERS.len()];
            (Dir::In, ipv4(peer, ME, 17, 0x0010, &[0u8; 16]))
        }
        Pkt::Ethertype(et) => (Dir::Out, eth(*et, &[0u8; 46])),
        Pkt::Garbage(b) => (Dir::In, b.clone()),
    }
}

fn pkt() -> impl Strategy<Value = Pkt> {
    prop_oneof![
        6 => (0u8..4, 0u8..7, any::<u8>(), any::<u32>())
            .prop_map(|(conn, step, flags, seq)| Pkt::Tcp { conn, step, flags, seq }),
        2 => (0u8..3, prop_oneof![Just(53u16), Just(5000u16)], prop_oneof![Just(53u16), Just(123u16)], any::<bool>())
            .prop_map(|(peer, sport, dport, reply)| Pkt::Udp { peer, sport, dport, reply }),
        1 => (0u8..3, any::<bool>()).prop_map(|(peer, reply)| Pkt::Echo { peer, reply }),
        1 => (0u8..3, prop_oneof![Just(53u16), Just(5000u16)], prop_oneof![Just(53u16), Just(123u16)])
            .prop_map(|(peer, sport, dport)| Pkt::IcmpError { peer, sport, dport }),
        1 => (0u8..3).prop_map(|peer| Pkt::Fragment { peer }),
        1 => prop_oneof![Just(0x0806u16), Just(0x86ddu16), Just(0x88ccu16)].prop_map(Pkt::Ethertype),
        1 => proptest::collection::vec(any::<u8>(), 0..64).prop_map(Pkt::Garbage),
    ]
}

fn config(variant: u8, strict: bool, limit: Option<u32>) -> FirewallConfig {
    let tcp = |port| Service {
        port: Some(PortRange::single(port)),
        ..Service::any_of(Protocol::Number(6))
    };
    let rule = |id, direction, services: Vec<Service>, action| Rule {
        id,
        direction,
        sources: vec![],
        destinations: vec![],
        services,
        action,
        log: id % 2 == 0,
    };
    let default = match variant % 3 {
        0 => Action::Accept,
        1 => Action::Drop,
        _ => Action::Reject,
    };
    let mut rules = vec![
        rule(22, control::Direction::In, vec![tcp(22)], Action::Accept),
        rule(80, control::Direction::Out, vec![tcp(80)], Action::Reject),
        rule(
            53,
            control::Direction::Out,
            vec![Service::any_of(Protocol::Number(17))],
            Action::Accept,
        ),
    ];
    if variant & 4 != 0 {
        rules.push(Rule {
            destinations: vec![AddrRef::Net("192.168.7.0/24".parse().unwrap())],
            ..rule(9, control::Direction::InOut, vec![], Action::Drop)
        });
    }
    let l2 = if variant & 8 != 0 {
        vec![L2RuleSet {
            name: "l2".into(),
            rules: vec![L2Rule {
                id: 7,
                direction: control::Direction::InOut,
                ethertype: Some(0x88cc),
                sources: vec![],
                destinations: vec![],
                action: Action::Drop,
                log: false,
            }],
        }]
    } else {
        vec![]
    };
    FirewallConfig {
        rulesets: vec![RuleSet {
            name: "s".into(),
            rules,
        }],
        l2_rulesets: l2,
        default_rule: DefaultRule {
            id: 1,
            action: default,
            log: true,
        },
        tcp_strict: strict,
        max_flows: limit,
        ..FirewallConfig::allow_all()
    }
}

type State = (firewall::FwCounters, Vec<firewall::RuleHits>, Vec<FlowView>);

/// Everything `judge` must leave alone (the packet log is checked by
/// draining it).
fn state(fw: &Firewall) -> State {
    let mut flows: Vec<FlowView> = fw.conntrack().iter().collect();
    flows.sort_by_key(|f| f.id);
    (fw.counters().clone(), fw.hits().to_vec(), flows)
}

fn logged(fw: &mut Firewall) -> usize {
    let mut n = 0;
    fw.log_mut().drain(|_| n += 1);
    n
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn judge_predicts_process_and_changes_nothing(
        variant in 0u8..16,
        strict in any::<bool>(),
        capacity in 1usize..8,
        limit in proptest::option::of(1u32..6),
        policy in proptest::bool::weighted(0.85),
        fail_open in any::<bool>(),
        steps in proptest::collection::vec((pkt(), prop_oneof![6 => Just(0u64), 1 => 0u64..400]), 1..60),
    ) {
        let failure = if fail_open { FailurePolicy::FailOpen } else { FailurePolicy::FailClosed };
        let mut fw = Firewall::new(capacity, failure);
        if policy {
            fw.set_policy(Arc::new(Policy::compile(&config(variant, strict, limit)).unwrap()));
        }
        let mut now = 0u64;
        for (p, dt) in &steps {
            now += dt * SEC / 4;
            let (dir, f) = frame(p);
            logged(&mut fw);
            let before = state(&fw);
            let parsed = firewall::packet::parse(&f);
            let judged = fw.judge(dir, &parsed, now);
            let (predicted, why) = (judged.verdict, judged.describe(&fw).to_string());
            prop_assert!(!why.is_empty());
            prop_assert_eq!(&before, &state(&fw), "judge changed state");
            prop_assert_eq!(logged(&mut fw), 0, "judge logged");
            let actual = fw.process(dir, &f, now);
            prop_assert_eq!(predicted, actual, "{:?} {:?}: {}", p, dir, why);
        }
    }
}
