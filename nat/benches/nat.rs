//! NAT cost per packet:
//! * `new_session`: judge + commit of a flow's first packet (UDP), new
//!   mapping and port allocation included, with the internal port free
//!   (kept) or taken (probed), or on an existing mapping (a new remote of
//!   an internal endpoint); sessions accumulate up to 100k in a table
//!   of 128k (load 0 to 0.76; between batches, untimed, everything
//!   expires);
//! * `established`: an established TCP flow's 1400-byte packet, lookup,
//!   state update and in-place rewrite of its headers (`process`), out
//!   and in, with 1k and 100k sessions in the table, flows visited in
//!   random order (each packet's 40 header bytes are copied from a
//!   compact array into a ring of 64 buffers, half a ring ahead: ~2 ns of
//!   the figure, and a cache miss of its own at 100k);
//! * `rewrite`: the header rewrite alone.
//!
//! Prints the tables' memory per session at full capacity.

#![allow(clippy::unwrap_used)] // benchmark fixtures are constants

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use nat::rewrite::{self, L4Csum, Rewrite};
use nat::{Dir, Nat, NatConfig};
use test_packets::{shuffle, src_of, tcp_packet, udp_packet};

const NOW: u64 = 1_000_000_000_000;
/// Packet buffers of the established-flow benchmark.
const RING: usize = 64;

fn pool() -> NatConfig {
    NatConfig::with_pool((1..=4).map(|i| Ipv4Addr::new(203, 0, 113, i)).collect())
}

fn inside(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(0x0a00_0000 + u32::try_from(i).unwrap())
}

fn new_session(c: &mut Criterion) {
    const CAP: usize = 1 << 17;
    const BATCH: usize = 100_000;
    let mut g = c.benchmark_group("new_session");
    g.throughput(Throughput::Elements(1));
    for name in ["port_kept", "port_probed", "mapping_reused"] {
        // Distinct flows: each its own internal endpoint, whose port is free
        // (kept) or asked for by all (one per pool address keeps it, the
        // rest probe); or 64 remotes per internal endpoint (one new mapping
        // per 64 sessions).
        let mut pkts: Vec<Vec<u8>> = (0..BATCH)
            .map(|i| {
                let port = 1024 + u16::try_from(i % 60000).unwrap();
                let remote = |k| Ipv4Addr::from(0xc000_0200 + u32::try_from(k).unwrap());
                match name {
                    "port_kept" => udp_packet(inside(i / 4 + 1), port, remote(1), 53, 32),
                    "port_probed" => udp_packet(inside(i + 1), 40000, remote(1), 53, 32),
                    _ => udp_packet(inside(i / 64 + 1), 40000, remote(i % 64), 53, 32),
                }
            })
            .collect();
        shuffle(&mut pkts);
        // One contiguous array in that order, read front to back: a packet
        // to process is in cache (the datapath just received it).
        let stride = 64;
        let flat: Vec<u8> = pkts
            .iter()
            .flat_map(|p| {
                p.iter()
                    .copied()
                    .chain(std::iter::repeat_n(0, stride - p.len()))
            })
            .collect();
        let len = pkts[0].len();
        let mut nat = Nat::with_seed(CAP, pool(), 7).unwrap();
        let mut now = NOW;
        g.bench_function(BenchmarkId::new("udp", name), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    // Untimed: everything expires, the table is empty again.
                    now += 100_000_000_000_000;
                    nat.expire(now, usize::MAX);
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(BATCH);
                    let start = Instant::now();
                    for p in flat.chunks_exact(stride).take(n) {
                        let d = nat.judge(Dir::Out, black_box(&p[..len]), now);
                        black_box(nat.commit(&d, now));
                    }
                    total += start.elapsed();
                    left -= n as u64;
                }
                total
            });
        });
    }
    g.finish();
}

fn established(c: &mut Criterion) {
    let mut g = c.benchmark_group("established");
    g.throughput(Throughput::Elements(1));
    for n in [1_000usize, 100_000] {
        let mut nat = Nat::with_seed(n + n / 8, pool(), 7).unwrap();
        let remote = Ipv4Addr::new(192, 0, 2, 1);
        // Flows opened and answered, then their data packets (out) and
        // the answers' (in), as templates.
        let mut outs = Vec::with_capacity(n);
        let mut ins = Vec::with_capacity(n);
        for i in 0..n {
            let (src, sport) = (inside(i / 16 + 1), 40000 + u16::try_from(i % 16).unwrap());
            let mut syn = tcp_packet(src, sport, remote, 443, 0x02, 0);
            assert!(matches!(
                nat.process(Dir::Out, &mut syn, NOW),
                nat::Verdict::Translate(_)
            ));
            let ext = src_of(&syn);
            let mut sa = tcp_packet(remote, 443, *ext.ip(), ext.port(), 0x12, 0);
            assert!(matches!(
                nat.process(Dir::In, &mut sa, NOW),
                nat::Verdict::Translate(_)
            ));
            outs.push(tcp_packet(src, sport, remote, 443, 0x10, 1400));
            ins.push(tcp_packet(remote, 443, *ext.ip(), ext.port(), 0x10, 1400));
        }
        let mut order: Vec<usize> = (0..n).collect();
        shuffle(&mut order);
        for (dir, tpl) in [(Dir::Out, &outs), (Dir::In, &ins)] {
            // Each flow's 40 header bytes, compact, copied into a ring of
            // packet buffers half a ring ahead of their processing (a
            // datapath's packet is in cache, written well before it is read).
            let heads: Vec<[u8; 40]> = tpl.iter().map(|p| p[..40].try_into().unwrap()).collect();
            let mut bufs: Vec<Vec<u8>> = (0..RING).map(|_| tpl[0].clone()).collect();
            for (j, b) in bufs.iter_mut().enumerate().take(RING / 2) {
                b[..40].copy_from_slice(&heads[order[j]]);
            }
            let name = match dir {
                Dir::Out => "tcp_1400_out",
                Dir::In => "tcp_1400_in",
            };
            // Buffer `i % RING` is processed; the flow at `ahead` is loaded
            // into the buffer half a ring on (no division by `n` per packet).
            let (mut i, mut ahead) = (0usize, RING / 2);
            g.bench_function(BenchmarkId::new(name, n), |b| {
                b.iter(|| {
                    black_box(nat.process(dir, black_box(&mut bufs[i % RING]), NOW));
                    let slot = (i + RING / 2) % RING;
                    let head: &mut [u8; 40] = (&mut bufs[slot][..40]).try_into().unwrap();
                    *head = heads[order[ahead]];
                    ahead = if ahead + 1 == n { 0 } else { ahead + 1 };
                    i += 1;
                });
            });
        }
        println!(
            "memory: {} sessions capacity, {} bytes per session",
            nat.capacity(),
            nat.memory_bytes() / nat.capacity()
        );
    }
    g.finish();
}

fn rewrite_only(c: &mut Criterion) {
    let tpl = tcp_packet(
        Ipv4Addr::new(10, 0, 0, 1),
        40000,
        Ipv4Addr::new(192, 0, 2, 1),
        443,
        0x10,
        1400,
    );
    let mut buf = tpl.clone();
    let rw = Rewrite {
        src: Some("203.0.113.1:40001".parse().unwrap()),
        dst: None,
    };
    c.bench_function("rewrite/tcp_1400_snat", |b| {
        b.iter(|| {
            buf[..40].copy_from_slice(&tpl[..40]);
            black_box(rewrite::rewrite(black_box(&mut buf), &rw, L4Csum::Complete)).unwrap();
        });
    });
}

criterion_group!(benches, new_session, established, rewrite_only);
criterion_main!(benches);
