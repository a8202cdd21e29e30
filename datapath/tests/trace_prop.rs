//! Issue 6, test 3: `trace` tells the truth. For random frames — valid
//! ICMP, TCP, UDP and ARP to random addresses in and out of the seed
//! topology, random TTLs, sizes and MACs, Geneve from known and unknown
//! endpoints with right and wrong VNIs and endpoint ids, and garbage —
//! under configs with and without a firewall, `Pipeline::trace` predicts
//! exactly what `from_port` / `from_underlay` on the same pipeline then
//! does: the verdict, the drop reason, the firewall's own drop reason, and
//! the packets queued (kind, destination, length). And tracing changes
//! nothing: counters, firewall counters and the connection table are the
//! same before and after it. Frames are run as sequences, so connections
//! opened by earlier frames are traced on their fast path.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::Ipv4Addr;
use std::sync::Arc;

use common::*;
use control::{
    Action, DefaultRule, FirewallConfig, MacAddr, PortRange, Protocol, Rule, RuleSet, Service,
};
use datapath::{OutputKind, Pipeline, Tables, TraceFrom, Verdict};
use geneve::{checksum, ethernet, ipv4};
use proptest::prelude::*;

/// 0: no firewall; 1: default reject, tcp/22 from vm3 to vm1 accepted;
/// 2: default accept, udp/53 out rejected; 3: as 1 with `tcp_strict`.
fn firewall_config(variant: u8) -> Option<FirewallConfig> {
    match variant % 4 {
        0 => None,
        2 => Some(FirewallConfig {
            rulesets: vec![RuleSet {
                name: "domain-c25".into(),
                rules: vec![Rule {
                    id: 1010,
                    direction: control::Direction::Out,
                    sources: vec![],
                    destinations: vec![],
                    services: vec![Service {
                        port: Some(PortRange::single(53)),
                        ..Service::any_of(Protocol::Number(17))
                    }],
                    action: Action::Reject,
                    log: false,
                }],
            }],
            default_rule: DefaultRule {
                id: 1002,
                action: Action::Accept,
                log: false,
            },
            ..FirewallConfig::allow_all()
        }),
        v => Some(FirewallConfig {
            tcp_strict: v == 3,
            ..ssh_policy(true, true)
        }),
    }
}

fn pipeline(variant: u8, capacity: usize) -> Pipeline {
    let (mut cfg, host) = config_for(VM1, 1500);
    cfg.firewall = firewall_config(variant);
    Pipeline::with_flow_capacity(Arc::new(Tables::build(&cfg, host).unwrap()), capacity)
}

/// Addresses in and out of the topology.
fn addr() -> BoxedStrategy<Ipv4Addr> {
    prop_oneof![
        Just(VM1.ip),
        Just(VM2.ip),
        Just(VM3.ip),
        Just(gw_web()),
        Just(Ipv4Addr::new(192, 168, 99, 1)),
        (0u8..=255).prop_map(|x| Ipv4Addr::new(192, 168, 100, x)),
        (0u8..=255).prop_map(|x| Ipv4Addr::new(192, 168, 99, x)),
        any::<u32>().prop_map(Ipv4Addr::from),
    ]
    .boxed()
}

fn mac() -> BoxedStrategy<MacAddr> {
    prop_oneof![
        Just(VM1.mac),
        Just(VM2.mac),
        Just(VM3.mac),
        Just(ROUTER_MAC),
        Just(MacAddr::BROADCAST),
        Just(MacAddr([0x01, 0x00, 0x5e, 0, 0, 1])),
        any::<[u8; 6]>().prop_map(MacAddr),
    ]
    .boxed()
}

/// The L3/L4 content of a frame.
#[derive(Debug, Clone)]
enum Body {
    Icmp {
        ty: u8,
        payload: usize,
    },
    /// `conn` picks one of a few port pairs (22 is the allowed one) and a
    /// plausible handshake step, or random flags and sequence numbers.
    Tcp {
        sport: u16,
        dport: u16,
        flags: u8,
        seq: u32,
        ack: u32,
        payload: usize,
    },
    Udp {
        sport: u16,
        dport: u16,
        payload: usize,
    },
    Arp {
        request: bool,
        target: Ipv4Addr,
    },
    Ethertype(u16),
    Garbage(Vec<u8>),
}

#[derive(Debug, Clone)]
struct Frame {
    src_mac: MacAddr,
    dst_mac: MacAddr,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ttl: u8,
    df: bool,
    body: Body,
}

fn body() -> BoxedStrategy<Body> {
    let tcp_ports = prop_oneof![
        Just((40000u16, 22u16)),
        Just((22u16, 40000u16)),
        Just((40001u16, 80u16)),
        (any::<u16>(), any::<u16>()),
    ];
    let tcp_step = prop_oneof![
        Just((0x02u8, 1000u32, 0u32)),
        Just((0x12u8, 5000u32, 1001u32)),
        Just((0x10u8, 1001u32, 5001u32)),
        Just((0x18u8, 1001u32, 5001u32)),
        Just((0x18u8, 5001u32, 1001u32)),
        Just((0x11u8, 1001u32, 5001u32)),
        Just((0x04u8, 1001u32, 0u32)),
        (any::<u8>(), any::<u32>(), any::<u32>()),
    ];
    prop_oneof![
        3 => (prop_oneof![Just(8u8), Just(0u8), Just(3u8), any::<u8>()], 0usize..1600)
            .prop_map(|(ty, payload)| Body::Icmp { ty, payload }),
        4 => (tcp_ports, tcp_step, prop_oneof![3 => Just(0usize), 1 => 0usize..1600])
            .prop_map(|((sport, dport), (flags, seq, ack), payload)| Body::Tcp {
                sport, dport, flags, seq, ack, payload,
            }),
        2 => (prop_oneof![Just(5000u16), any::<u16>()], prop_oneof![Just(53u16), Just(123u16), any::<u16>()], 0usize..1600)
            .prop_map(|(sport, dport, payload)| Body::Udp { sport, dport, payload }),
        2 => (any::<bool>(), addr()).prop_map(|(request, target)| Body::Arp { request, target }),
        1 => prop_oneof![Just(0x86ddu16), Just(0x88ccu16), any::<u16>()].prop_map(Body::Ethertype),
        1 => proptest::collection::vec(any::<u8>(), 0..80).prop_map(Body::Garbage),
    ]
    .boxed()
}

/// Mostly the instance's own (or a remote port's) addresses, so frames get
/// past port security and decap often enough.
fn frame(own_mac: MacAddr, own_ip: Ipv4Addr) -> BoxedStrategy<Frame> {
    (
        prop_oneof![4 => Just(own_mac), 1 => mac()],
        mac(),
        prop_oneof![4 => Just(own_ip), 1 => addr()],
        addr(),
        prop_oneof![Just(64u8), Just(1u8), Just(2u8), Just(0u8), any::<u8>()],
        any::<bool>(),
        body(),
    )
        .prop_map(|(src_mac, dst_mac, src, dst, ttl, df, body)| Frame {
            src_mac,
            dst_mac,
            src,
            dst,
            ttl,
            df,
            body,
        })
        .boxed()
}

fn build(f: &Frame) -> Vec<u8> {
    let eth = |ethertype: u16, payload: &[u8]| {
        let mut b = vec![0u8; 14 + payload.len()];
        ethernet::emit_header(&mut b, f.dst_mac.0, f.src_mac.0, ethertype).unwrap();
        b[14..].copy_from_slice(payload);
        b
    };
    let ip = |proto: u8, l4: &[u8]| {
        let mut p = vec![0u8; 20 + l4.len()];
        ipv4::emit_header(&mut p, f.src, f.dst, proto, l4.len(), f.ttl, f.df, 7).unwrap();
        p[20..].copy_from_slice(l4);
        eth(ethernet::ETHERTYPE_IPV4, &p)
    };
    match &f.body {
        Body::Icmp { ty, payload } => {
            let mut l4 = vec![0u8; 8 + payload];
            l4[0] = *ty;
            l4[4..6].copy_from_slice(&7079u16.to_be_bytes());
            let c = checksum::fold(checksum::sum(&l4, 0));
            l4[2..4].copy_from_slice(&c.to_be_bytes());
            ip(ipv4::PROTO_ICMP, &l4)
        }
        Body::Tcp {
            sport,
            dport,
            flags,
            seq,
            ack,
            payload,
        } => {
            let mut l4 = vec![0u8; 20 + payload];
            l4[0..2].copy_from_slice(&sport.to_be_bytes());
            l4[2..4].copy_from_slice(&dport.to_be_bytes());
            l4[4..8].copy_from_slice(&seq.to_be_bytes());
            l4[8..12].copy_from_slice(&ack.to_be_bytes());
            l4[12] = 5 << 4;
            l4[13] = *flags;
            l4[14..16].copy_from_slice(&65535u16.to_be_bytes());
            ip(ipv4::PROTO_TCP, &l4)
        }
        Body::Udp {
            sport,
            dport,
            payload,
        } => {
            let mut l4 = vec![0u8; 8 + payload];
            l4[0..2].copy_from_slice(&sport.to_be_bytes());
            l4[2..4].copy_from_slice(&dport.to_be_bytes());
            l4[4..6].copy_from_slice(&u16::try_from(8 + *payload).unwrap().to_be_bytes());
            ip(ipv4::PROTO_UDP, &l4)
        }
        Body::Arp { request, target } => {
            let mut a = vec![0u8; 28];
            a[0..2].copy_from_slice(&1u16.to_be_bytes());
            a[2..4].copy_from_slice(&0x0800u16.to_be_bytes());
            a[4] = 6;
            a[5] = 4;
            a[6..8].copy_from_slice(&(if *request { 1u16 } else { 2 }).to_be_bytes());
            a[8..14].copy_from_slice(&f.src_mac.0);
            a[14..18].copy_from_slice(&f.src.octets());
            a[24..28].copy_from_slice(&target.octets());
            eth(ethernet::ETHERTYPE_ARP, &a)
        }
        Body::Ethertype(et) => eth(*et, &[0u8; 46]),
        Body::Garbage(g) => g.clone(),
    }
}

/// How a frame enters.
#[derive(Debug, Clone)]
enum Input {
    Port(Frame),
    /// From an endpoint (`tep`: 0 = vm2, 1 = vm3, else unknown) on `vni`
    /// (0 = web, 1 = app, else that number), with the right endpoint id
    /// unless `bad_id`; or `garbage` instead of a Geneve header.
    Underlay {
        tep: u8,
        vni: u32,
        bad_id: bool,
        garbage: Option<Vec<u8>>,
        inner: Frame,
    },
}

/// One segment of an ssh connection vm3 -> vm1:22 (the allowed one) in
/// the right direction with plausible sequence numbers, so connections get
/// opened, used and closed and later frames take the fast path.
fn conversation() -> BoxedStrategy<Input> {
    (0u8..7, 0usize..200)
        .prop_map(|(step, len)| {
            // (from vm3?, flags, seq, ack, payload)
            let (in_, flags, seq, ack, payload) = match step {
                0 => (true, 0x02, 1000, 0, 0),
                1 => (false, 0x12, 5000, 1001, 0),
                2 => (true, 0x10, 1001, 5001, 0),
                3 => (true, 0x18, 1001, 5001, len),
                4 => (false, 0x18, 5001, 1001, len),
                5 => (true, 0x11, 1001, 5001, 0),
                _ => (false, 0x04, 5001, 0, 0),
            };
            let body = Body::Tcp {
                sport: if in_ { 40000 } else { 22 },
                dport: if in_ { 22 } else { 40000 },
                flags,
                seq,
                ack,
                payload,
            };
            let (from, to) = if in_ { (VM3, VM1) } else { (VM1, VM3) };
            let f = Frame {
                src_mac: from.mac,
                dst_mac: to.mac,
                src: from.ip,
                dst: to.ip,
                ttl: 64,
                df: true,
                body,
            };
            if in_ {
                Input::Underlay {
                    tep: 1,
                    vni: 0,
                    bad_id: false,
                    garbage: None,
                    inner: f,
                }
            } else {
                Input::Port(f)
            }
        })
        .boxed()
}

fn input() -> BoxedStrategy<Input> {
    prop_oneof![
        2 => conversation(),
        3 => frame(VM1.mac, VM1.ip).prop_map(Input::Port),
        2 => (
            prop_oneof![3 => Just(1u8), 2 => Just(0u8), 1 => Just(2u8)],
            prop_oneof![3 => Just(0u32), 2 => Just(1u32), 1 => 0u32..0x100_0000],
            proptest::bool::weighted(0.1),
            proptest::option::weighted(0.1, proptest::collection::vec(any::<u8>(), 0..40)),
            // Inner frames mostly from vm3 to vm1 (or vm2 routed to vm1).
            prop_oneof![
                3 => frame(VM3.mac, VM3.ip).prop_map(|mut f| { f.dst_mac = VM1.mac; f.dst = VM1.ip; f }),
                1 => frame(VM3.mac, VM3.ip),
                1 => frame(ROUTER_MAC, VM2.ip).prop_map(|mut f| { f.dst_mac = VM1.mac; f.dst = VM1.ip; f }),
            ],
        )
            .prop_map(|(tep, vni, bad_id, garbage, inner)| Input::Underlay {
                tep,
                vni,
                bad_id,
                garbage,
                inner,
            }),
    ]
    .boxed()
}

fn prepare(i: &Input) -> (TraceFrom, Vec<u8>) {
    match i {
        Input::Port(f) => (TraceFrom::Port, build(f)),
        Input::Underlay {
            tep,
            vni,
            bad_id,
            garbage,
            inner,
        } => {
            let (src, id) = match tep {
                0 => (VM2.underlay, VM2.tep_id),
                1 => (VM3.underlay, VM3.tep_id),
                _ => (Ipv4Addr::new(10, 99, 3, 77), 77),
            };
            let vni = match vni {
                0 => VNI_WEB,
                1 => VNI_APP,
                v => *v,
            };
            let payload = match garbage {
                Some(g) => g.clone(),
                None => {
                    let who = Vm {
                        underlay: src,
                        ..VM3
                    };
                    geneve_from(&who, vni, if *bad_id { id + 1 } else { id }, &build(inner))
                }
            };
            (TraceFrom::Underlay(src), payload)
        }
    }
}

/// (kind, destination, length) of everything queued.
fn queued(out: &datapath::Output) -> Vec<(OutputKind, String, usize)> {
    let mut v: Vec<_> = out
        .underlay
        .iter()
        .map(|(p, dst)| (OutputKind::Underlay, dst.to_string(), p.len()))
        .collect();
    for (kind, q) in [
        (OutputKind::Port, &out.port),
        (OutputKind::Downlink, &out.downlink),
    ] {
        for (f, _) in q.iter() {
            v.push((
                kind,
                MacAddr(f[..6].try_into().unwrap()).to_string(),
                f.len(),
            ));
        }
    }
    v
}

/// Firewall state the trace must leave alone.
type FwState = Option<(
    firewall::FwCounters,
    Vec<firewall::RuleHits>,
    Vec<firewall::FlowView>,
)>;

fn fw_state(p: &Pipeline) -> FwState {
    p.firewall().map(|fw| {
        let mut flows: Vec<_> = fw.conntrack().iter().collect();
        flows.sort_by_key(|f| f.id);
        (fw.counters().clone(), fw.hits().to_vec(), flows)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn trace_verdict_is_what_the_datapath_does(
        variant in 0u8..4,
        capacity in prop_oneof![Just(2usize), Just(64usize)],
        steps in proptest::collection::vec((input(), prop_oneof![8 => Just(0u64), 1 => 0u64..120]), 1..40),
    ) {
        let mut p = pipeline(variant, capacity);
        let mut out = output();
        let mut now = 1u64;
        for (input, dt) in &steps {
            now += dt * 1_000_000_000;
            let (from, data) = prepare(input);
            let counters = p.counters().clone();
            let fw = fw_state(&p);
            let trace = p.trace(from, &data, now);
            prop_assert_eq!(&counters, p.counters(), "trace changed counters");
            prop_assert_eq!(&fw, &fw_state(&p), "trace changed the firewall");
            prop_assert!(!trace.steps.is_empty());

            out.clear();
            let actual = match from {
                TraceFrom::Port => p.from_port(&data, now, &mut out),
                TraceFrom::Underlay(src) => p.from_underlay(src, &data, now, &mut out),
                TraceFrom::Downlink => p.from_downlink(&data, now, &mut out),
                TraceFrom::Probe => p.from_probe(&data, now, &mut out),
            };
            let details: Vec<&str> = trace.steps.iter().map(|s| s.detail.as_str()).collect();
            prop_assert_eq!(trace.verdict, actual, "{:?}\n{:#?}", input, details);
            let traced: Vec<_> = trace
                .outputs
                .iter()
                .map(|o| (o.kind, o.dst.clone(), o.len))
                .collect();
            prop_assert_eq!(traced, queued(&out), "{:#?}", details);

            // The firewall's own reason: the counter `process` bumped.
            let bumped = match (&fw, fw_state(&p)) {
                (Some((before, ..)), Some((after, ..))) => firewall::FwDrop::ALL
                    .into_iter()
                    .find(|r| after.drops[*r as usize] != before.drops[*r as usize]),
                _ => None,
            };
            prop_assert_eq!(trace.firewall_drop, bumped, "{:#?}", details);
            if let Verdict::Drop(datapath::DropReason::Firewall) = actual {
                prop_assert!(trace.firewall_drop.is_some());
            }
        }
    }
}
