//! Balancer cost per packet, at 1,000 real servers:
//! * `first_packet/<scheduler>`: a connection's first packet (a TCP SYN),
//!   `forward` (lookup miss, virtual server lookup, the scheduler's pick,
//!   the connection and its counters written, the scheduler's structures
//!   updated) plus the in-place rewrite; every flow a new client, up to
//!   50k connections accumulating in a table of 128k (between batches,
//!   untimed, everything expires). `wlc_fnat` adds the SNAT port
//!   allocation; `rr_persist` a persistence template per client.
//! * `established/{forward,reverse}_<n>`: an established TCP flow's
//!   1400-byte packet, lookup, state update, counters and rewrite, with
//!   `n` connections in the table, flows in random order (each packet's
//!   40 header bytes are copied from a compact array into a ring of 64
//!   buffers: ~2 ns of the figure).
//! * `maglev/rebuild_1000`: a Maglev table for 1,000 servers (equal
//!   weights; `weighted`: weights 1..=10); `set_services_mh_1000`: the
//!   whole configuration swap of such a virtual server whose weights
//!   changed.
//!
//! Prints the memory per connection at full capacity.

#![allow(clippy::unwrap_used)] // benchmark fixtures are constants

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use control::lb::{ForwardKind, LbService, Scheduler};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use geneve::tcp;
use lb::engine::maglev::Maglev;
use lb::engine::{Balancer, L4Csum, Verdict, apply};
use test_packets::{shuffle, tcp_packet};

const NOW: u64 = 1_000_000_000_000;
const RING: usize = 64;
const SERVERS: u32 = 1000;

#[path = "../tests/common/mod.rs"]
mod common;

/// The benches' virtual server: VIP:80, `n` real servers of weights 1..=4.
fn service(sched: Scheduler, kind: ForwardKind, persist: bool, n: u32) -> LbService {
    let mut v = common::vs(80, sched, kind, common::reals(n, |i| 1 + i % 4));
    v.persistence_timeout = persist.then_some(300);
    common::svc(v)
}

fn vip() -> Ipv4Addr {
    common::ip(common::VIP)
}

fn client(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(0x0b00_0000 + u32::try_from(i).unwrap())
}

fn first_packet(c: &mut Criterion) {
    const CAP: usize = 1 << 17;
    const BATCH: usize = 50_000;
    let mut g = c.benchmark_group("first_packet");
    g.throughput(Throughput::Elements(1));
    // 40-byte SYNs (no payload), one per new client, in one flat array.
    let flat: Vec<u8> = (0..BATCH)
        .flat_map(|i| tcp_packet(client(i), 40_000, vip(), 80, tcp::SYN, 0))
        .collect();
    let mut cases: Vec<(String, LbService)> = Scheduler::ALL
        .iter()
        .map(|&s| {
            (
                s.name().to_string(),
                service(s, ForwardKind::Nat, false, SERVERS),
            )
        })
        .collect();
    cases.push((
        "wlc_fnat".into(),
        service(Scheduler::Wlc, ForwardKind::Fnat, false, SERVERS),
    ));
    cases.push((
        "rr_persist".into(),
        service(Scheduler::Rr, ForwardKind::Nat, true, SERVERS),
    ));
    for (name, svc) in cases {
        let mut b = Balancer::with_seed(CAP, 7);
        b.set_services(std::slice::from_ref(&svc), NOW).unwrap();
        let mut ring = vec![[0u8; 40]; RING];
        let mut now = NOW;
        g.bench_function(BenchmarkId::from_parameter(&name), |bch| {
            bch.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let n = usize::try_from(left.min(BATCH as u64)).unwrap();
                    let t = Instant::now();
                    for i in 0..n {
                        let buf = &mut ring[i % RING];
                        buf.copy_from_slice(&flat[i * 40..i * 40 + 40]);
                        let d = b.forward(buf, now);
                        if let Verdict::Translate(tr) = &d.verdict {
                            apply(buf, tr, L4Csum::Complete).unwrap();
                        }
                        black_box(&d);
                    }
                    total += t.elapsed();
                    left -= n as u64;
                    // Untimed: everything expires (SYN_RECV: 60 s; templates 300 s).
                    now += 1000 * 1_000_000_000;
                    b.expire(now, usize::MAX);
                    b.expire(now, usize::MAX);
                    assert_eq!(b.len(), 0);
                }
                total
            });
        });
        assert_eq!(b.drops(lb::engine::DropReason::TableFull), 0);
    }
    g.finish();
}

fn established(c: &mut Criterion) {
    let mut g = c.benchmark_group("established");
    g.throughput(Throughput::Elements(1));
    for n in [1_000usize, 100_000] {
        let mut b = Balancer::with_seed(1 << 17, 9);
        let svc = service(Scheduler::Wlc, ForwardKind::Fnat, false, SERVERS);
        b.set_services(&[svc], NOW).unwrap();
        // n flows: SYN forward, SYN-ACK back, ACK forward: established.
        let mut fwd_hdrs = Vec::with_capacity(n * 40);
        let mut rev_hdrs = Vec::with_capacity(n * 40);
        for i in 0..n {
            let mut p = tcp_packet(client(i), 40_000, vip(), 80, tcp::SYN, 0);
            let d = b.forward(&p, NOW);
            let Verdict::Translate(t) = d.verdict else {
                panic!("{d}")
            };
            apply(&mut p, &t, L4Csum::Complete).unwrap();
            let real = d.real.unwrap();
            let snat = d.snat.unwrap();
            let back = tcp_packet(
                *real.ip(),
                real.port(),
                *snat.ip(),
                snat.port(),
                tcp::ACK,
                1360,
            );
            let d = b.reverse(&back, NOW);
            assert!(matches!(d.verdict, Verdict::Translate(_)));
            let ack = tcp_packet(client(i), 40_000, vip(), 80, tcp::ACK, 1360);
            b.forward(&ack, NOW);
            fwd_hdrs.extend_from_slice(&ack[..40]);
            rev_hdrs.extend_from_slice(&back[..40]);
        }
        let mut order: Vec<usize> = (0..n).collect();
        shuffle(&mut order);
        let mut ring = vec![vec![0u8; 1400]; RING];
        for (name, hdrs, forward) in [("forward", &fwd_hdrs, true), ("reverse", &rev_hdrs, false)] {
            let mut k = 0usize;
            g.bench_function(BenchmarkId::new(name, n), |bch| {
                bch.iter(|| {
                    let i = order[k % n];
                    let buf = &mut ring[k % RING];
                    k += 1;
                    buf[..40].copy_from_slice(&hdrs[i * 40..i * 40 + 40]);
                    let d = if forward {
                        b.forward(buf, NOW)
                    } else {
                        b.reverse(buf, NOW)
                    };
                    if let Verdict::Translate(tr) = &d.verdict {
                        apply(buf, tr, L4Csum::Complete).unwrap();
                    }
                    black_box(d.verdict);
                });
            });
        }
    }
    g.finish();
}

fn maglev(c: &mut Criterion) {
    let mut g = c.benchmark_group("maglev");
    g.sample_size(10);
    let equal: Vec<(u32, u16, u32)> = (0..SERVERS).map(|i| (0xc0a8_0100 + i, 8080, 1)).collect();
    let weighted: Vec<(u32, u16, u32)> = (0..SERVERS)
        .map(|i| (0xc0a8_0100 + i, 8080, 1 + i % 10))
        .collect();
    g.bench_function("rebuild_1000", |b| {
        b.iter(|| black_box(Maglev::new(&equal)))
    });
    g.bench_function("rebuild_1000_weighted", |b| {
        b.iter(|| black_box(Maglev::new(&weighted)))
    });
    let mut bal = Balancer::with_seed(1024, 1);
    let mut a = service(Scheduler::Mh, ForwardKind::Nat, false, SERVERS);
    a.vs.real_servers = common::reals(SERVERS, |_| 1);
    let mut z = a.clone();
    z.vs.real_servers[500].weight = 0;
    let mut flip = false;
    g.bench_function("set_services_mh_1000", |b| {
        b.iter(|| {
            flip = !flip;
            let s = if flip { &a } else { &z };
            bal.set_services(std::slice::from_ref(s), NOW).unwrap();
        })
    });
    g.finish();
}

fn memory(_: &mut Criterion) {
    let b = Balancer::with_seed(1 << 20, 1);
    println!(
        "memory: {} bytes for {} connections: {:.1} bytes per connection",
        b.memory_bytes(),
        b.capacity(),
        b.memory_bytes() as f64 / b.capacity() as f64
    );
}

criterion_group!(benches, memory, first_packet, established, maglev);
criterion_main!(benches);
