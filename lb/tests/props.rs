//! Random traffic and configuration changes: no panic, whatever the
//! bytes; `peek` says what `forward` does; the per-server counts always
//! add up to the connections held; every translated packet's checksums
//! verify; a reply, and the real server's ICMP error, always find their
//! connection while nothing could have ended it (no time passed, no
//! packet that might reopen its port pair), configuration changes
//! included, and go back to the client as it sent the packet.

#![allow(clippy::unwrap_used)] // test fixtures

mod common;

use common::*;
use control::lb::{ForwardKind, LbProtocol, LbService, Liveness, Scheduler};
use lb::engine::{Balancer, L4Csum, Verdict, apply};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    /// A client packet: client, source port, virtual server, TCP flags, UDP.
    Fwd(u8, u8, u8, u8, bool),
    /// A real server's packet: server, destination (a client or the SNAT
    /// address), destination port, TCP flags, UDP.
    Rev(u8, u8, u16, u8, bool),
    /// The reply to the last translated client packet.
    Reply(u8),
    /// The real server's port unreachable about the last translated
    /// client packet, quoting at least 28 bytes of it (more: this many),
    /// with one byte changed if given; each way.
    IcmpError(u8, Option<(usize, u8)>),
    /// Random bytes, each way.
    Raw(Vec<u8>),
    /// The last packet with one byte changed, each way.
    Mutate(usize, u8),
    /// Time passes (seconds) and the sweep runs.
    Tick(u16),
    /// A new configuration: scheduler, kind and liveness bits.
    Config(u8, bool, u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (any::<u8>(), 0u8..4, 0u8..4, any::<u8>(), any::<bool>())
            .prop_map(|(a, b, c, d, e)| Op::Fwd(a % 16, b, c, d, e)),
        3 => (0u8..6, any::<u8>(), any::<u16>(), any::<u8>(), any::<bool>())
            .prop_map(|(a, b, c, d, e)| Op::Rev(a, b % 16, c % 2048, d, e)),
        6 => any::<u8>().prop_map(Op::Reply),
        3 => (any::<u8>(), proptest::option::of((0usize..80, any::<u8>())))
            .prop_map(|(q, c)| Op::IcmpError(q, c)),
        1 => proptest::collection::vec(any::<u8>(), 0..80).prop_map(Op::Raw),
        3 => (0usize..80, any::<u8>()).prop_map(|(i, b)| Op::Mutate(i, b)),
        2 => (0u16..400).prop_map(Op::Tick),
        1 => (any::<u8>(), any::<bool>(), any::<u8>()).prop_map(|(a, b, c)| Op::Config(a, b, c)),
    ]
}

fn config(sched: u8, fnat: bool, live: u8) -> Vec<LbService> {
    let kind = if fnat {
        ForwardKind::Fnat
    } else {
        ForwardKind::Nat
    };
    let sched = Scheduler::ALL[usize::from(sched) % Scheduler::ALL.len()];
    let n = 2 + u32::from(live % 4);
    let liveness: Vec<Liveness> = (0..n)
        .map(|i| match (live >> i) & 3 {
            0 => Liveness::Down,
            1 => Liveness::Weight(0),
            _ => Liveness::Up,
        })
        .collect();
    let mut tcp = vs(80, sched, kind, reals(n, |i| i + 1));
    tcp.persistence_timeout = (live & 1 == 1).then_some(30);
    tcp.persistence_granularity = 24 + (live % 9);
    tcp.quorum = u32::from(live % 3);
    tcp.hysteresis = u32::from(live % 2);
    tcp.sorry_server = (live & 4 == 4).then(|| endpoint("192.168.9.9:80"));
    let mut udp = vs(53, sched, kind, reals(n, |_| 1));
    udp.protocol = LbProtocol::Udp;
    let mut other = vs(443, Scheduler::Mh, ForwardKind::Nat, reals(3, |_| 1));
    other.inhibit_on_failure = true;
    vec![
        with_live(tcp, liveness.clone()),
        with_live(udp, liveness),
        svc(other),
    ]
}

const VPORTS: [u16; 4] = [80, 53, 443, 9];

/// The per-server counts add up to the connections held.
fn counts_add_up(b: &Balancer) {
    let v = b.view(T0);
    let mut sum = 0u64;
    for s in &v.services {
        for r in s.real_servers.iter().chain(&s.sorry_server) {
            sum += u64::from(r.active) + u64::from(r.inactive);
        }
    }
    for d in &v.detached {
        sum += u64::from(d.server.active) + u64::from(d.server.inactive);
    }
    assert_eq!(sum, b.len() as u64, "counts vs connections");
}

fn check_translated(pkt: &mut [u8], v: &Verdict) {
    if let Verdict::Translate(t) = v {
        let before_ok = geneve::ipv4::Packet::new_checked(&*pkt).is_ok_and(|p| p.verify_checksum());
        if apply(pkt, t, L4Csum::Complete).is_ok() && before_ok {
            assert!(
                geneve::ipv4::Packet::new_checked(&*pkt)
                    .unwrap()
                    .verify_checksum(),
                "IPv4 checksum broken"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_traffic(ops in proptest::collection::vec(op(), 1..200)) {
        let mut b = Balancer::with_seed(64, 3);
        b.set_services(&config(0, false, 0xff), T0).unwrap();
        let mut now = T0;
        let mut last: Vec<u8> = tcp_packet(client(1), 1, ip(VIP), 80, SYN, 0);
        // The last translated client packet: as sent, as translated.
        let mut last_translated: Option<(Vec<u8>, Vec<u8>)> = None;
        // Nothing since could have ended its connection.
        let mut fresh = false;
        for o in ops {
            match o {
                Op::Fwd(c, sp, v, flags, udp) => {
                    let vport = VPORTS[usize::from(v)];
                    let mut p = if udp {
                        udp_packet(client(u32::from(c)), 1000 + u16::from(sp), ip(VIP), vport, 10)
                    } else {
                        tcp_packet(client(u32::from(c)), 1000 + u16::from(sp), ip(VIP), vport, flags, 10)
                    };
                    let sent = p.clone();
                    let peeked = b.peek(&p, now);
                    let d = b.forward(&p, now);
                    prop_assert_eq!(peeked.verdict, d.verdict);
                    prop_assert_eq!(peeked.real, d.real);
                    prop_assert_eq!(peeked.how, d.how);
                    if let Verdict::Translate(t) = d.verdict {
                        apply(&mut p, &t, L4Csum::Complete).unwrap();
                        prop_assert!(all_checksums_ok(&p));
                        last_translated = Some((sent, p.clone()));
                        fresh = true;
                    } else {
                        // A SYN refused on a closed connection's port pair
                        // removes that connection first.
                        fresh = false;
                    }
                    last = p;
                }
                Op::Rev(r, c, port, flags, udp) => {
                    let rs = reals(6, |_| 1);
                    let src = rs[usize::from(r)].ip;
                    let dst = if c == 0 { ip(SNAT) } else { client(u32::from(c)) };
                    let mut p = if udp {
                        udp_packet(src, 8080, dst, 1000 + port, 10)
                    } else {
                        tcp_packet(src, 8080, dst, 1000 + port, flags, 10)
                    };
                    let d = b.reverse(&p, now);
                    check_translated(&mut p, &d.verdict);
                    last = p;
                }
                Op::Reply(flags) => {
                    if let Some((sent, got)) = &last_translated {
                        let mut p = got.clone();
                        turn_around(&mut p, flags);
                        let d = b.reverse(&p, now);
                        // Its connection is there unless it expired or ended.
                        prop_assert!(!fresh || matches!(d.verdict, Verdict::Translate(_)), "{}", d);
                        if let Verdict::Translate(t) = d.verdict {
                            apply(&mut p, &t, L4Csum::Complete).unwrap();
                            prop_assert_eq!(tuple(&p).0, ip(VIP));
                            prop_assert_eq!((src_of(&p), dst_of(&p)), (dst_of(sent), src_of(sent)));
                        }
                        last = p;
                    }
                }
                Op::IcmpError(more, change) => {
                    if let Some((sent, got)) = &last_translated {
                        let quote = 28 + usize::from(more) % (got.len() - 27);
                        let (real, local) = (dst_of(got), src_of(got));
                        let mut e = icmp_error(*real.ip(), *local.ip(), 3, 3, got, quote);
                        if let Some((i, x)) = change {
                            let n = e.len();
                            e[i % n] = x;
                        }
                        let mut p = e.clone();
                        let d = b.reverse(&p, now);
                        if change.is_none() {
                            prop_assert!(!fresh || matches!(d.verdict, Verdict::Translate(_)), "{}", d);
                            if let Verdict::Translate(t) = d.verdict {
                                apply(&mut p, &t, L4Csum::Complete).unwrap();
                                prop_assert!(all_checksums_ok(&p));
                                prop_assert_eq!(tuple(&p).2, tuple(sent).0);
                                prop_assert_eq!(quoted_tuple(&p), tuple(sent));
                            }
                        } else {
                            check_translated(&mut p, &d.verdict);
                        }
                        let mut p = e;
                        let d = b.forward(&p, now);
                        check_translated(&mut p, &d.verdict);
                    }
                }
                Op::Raw(bytes) => {
                    fresh = false;
                    let mut p = bytes.clone();
                    let d = b.forward(&p, now);
                    check_translated(&mut p, &d.verdict);
                    let mut p = bytes;
                    let d = b.reverse(&p, now);
                    check_translated(&mut p, &d.verdict);
                }
                Op::Mutate(i, x) => {
                    fresh = false;
                    let mut p = last.clone();
                    if let Some(y) = p.get_mut(i) {
                        *y = x;
                    }
                    let q = p.clone();
                    let d = b.forward(&p, now);
                    check_translated(&mut p, &d.verdict);
                    let mut p = q;
                    let d = b.reverse(&p, now);
                    check_translated(&mut p, &d.verdict);
                }
                Op::Tick(secs) => {
                    fresh = false;
                    now += u64::from(secs) * S;
                    b.tick(now);
                    b.estimate(now);
                }
                Op::Config(s, f, l) => {
                    b.set_default_snat_ip(Some(ip(SNAT)));
                    b.set_services(&config(s, f, l), now).unwrap();
                }
            }
            counts_add_up(&b);
            let _ = b.templates(now).count();
            let _ = b.connections(now).count();
        }
        // Everything ends: nothing is left held.
        b.expire(now + 100_000 * S, 1 << 20);
        b.expire(now + 100_000 * S, 1 << 20);
        prop_assert_eq!(b.len(), 0);
        prop_assert_eq!(b.templates_len(), 0);
        counts_add_up(&b);
        let v = b.view(now);
        for s in &v.services {
            for r in &s.real_servers {
                prop_assert_eq!(r.persistent, 0);
            }
        }
    }
}
