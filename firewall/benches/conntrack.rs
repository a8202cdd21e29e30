//! Connection-table cost per packet: an established TCP connection's lookup
//! plus state/counter update (`lookup` + `track`) with 1k, 100k and 1M
//! connections in a table of exactly that capacity (full: load 0.8), keys
//! precomputed and visited in random order, half the packets in each
//! direction; the same in batches of 32 packets, each batch prefetched
//! ([`Conntrack::prefetch`]) before it is processed, as a batched datapath
//! would; and the cost of a miss (a new connection's first lookup).
//! Prints the table's memory per entry.

#![allow(clippy::unwrap_used)] // benchmark fixtures are constants

use std::hint::black_box;
use std::net::Ipv4Addr;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use firewall::{Conntrack, Dir, L4, TcpMeta, Tuple};

/// A fixture number as the narrower type it is used as (each fits by
/// construction; a bench that outgrows one stops at once).
fn fit<T: TryFrom<U>, U>(v: U) -> T {
    T::try_from(v).ok().unwrap()
}

const SIZES: [usize; 3] = [1_000, 100_000, 1_000_000];
const NOW: u64 = 1_000_000_000_000;
/// Packets per batch in the batched variant (the agent reads up to 64).
const BATCH: usize = 32;

fn seg(flags: u8, seq: u32, ack: u32, window: u16) -> L4 {
    L4::Tcp(TcpMeta {
        flags,
        seq,
        ack,
        window,
        wscale: Some(7),
        payload_len: 0,
    })
}

/// Client `i` of many hosts talking to one server.
fn client(i: usize) -> Tuple {
    Tuple {
        proto: 6,
        src: Ipv4Addr::from(0x0a00_0000 + fit::<u32, _>(i / 50_000)),
        dst: Ipv4Addr::new(10, 255, 0, 1),
        sport: 10_000 + fit::<u16, _>(i % 50_000),
        dport: 443,
    }
}

/// xorshift64*: a deterministic shuffle without a rand dependency.
fn shuffle<T>(v: &mut [T]) {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for i in (1..v.len()).rev() {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let j = fit(x.wrapping_mul(0x2545_f491_4f6c_dd1d) % (fit::<u64, _>(i) + 1));
        v.swap(i, j);
    }
}

/// A full table of `n` established connections and the packets to send:
/// `(tuple, segment)`, in random order, alternating direction.
fn setup(n: usize) -> (Conntrack, Vec<(Tuple, L4)>) {
    let mut ct = Conntrack::new(n);
    let ack_orig = seg(TcpMeta::ACK, 1001, 5001, 502);
    let ack_reply = seg(TcpMeta::ACK, 5001, 1001, 509);
    let mut packets = Vec::with_capacity(n);
    for i in 0..n {
        let c = client(i);
        ct.insert(
            &c,
            Dir::Out,
            1006,
            &seg(TcpMeta::SYN, 1000, 0, 64240),
            60,
            NOW,
        )
        .unwrap();
        let hit = ct.lookup(&c.reverse(), NOW).unwrap();
        ct.track(
            hit,
            &seg(TcpMeta::SYN | TcpMeta::ACK, 5000, 1001, 65160),
            60,
            NOW,
        )
        .unwrap();
        let hit = ct.lookup(&c, NOW).unwrap();
        ct.track(hit, &ack_orig, 52, NOW).unwrap();
        packets.push(if i % 2 == 0 {
            (c, ack_orig)
        } else {
            (c.reverse(), ack_reply)
        });
    }
    shuffle(&mut packets);
    (ct, packets)
}

fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("conntrack");
    g.throughput(Throughput::Elements(1));
    for n in SIZES {
        let (mut ct, packets) = setup(n);
        eprintln!(
            "conntrack: {n} flows, capacity {}, {} bytes total, {} bytes per entry",
            ct.capacity(),
            ct.memory_bytes(),
            ct.memory_bytes() / ct.capacity()
        );
        let mut i = 0;
        g.bench_function(BenchmarkId::new("established_lookup_track", n), |b| {
            b.iter(|| {
                let (t, l4) = &packets[i];
                i = if i + 1 == packets.len() { 0 } else { i + 1 };
                let hit = ct.lookup(black_box(t), NOW).unwrap();
                ct.track(hit, l4, 1500, NOW)
            })
        });
        // The agent's shape: a batch of packets, all prefetched first.
        let mut i = 0;
        g.throughput(Throughput::Elements(fit(BATCH)));
        g.bench_function(BenchmarkId::new("batched_prefetch_lookup_track", n), |b| {
            b.iter(|| {
                let start = i;
                i = if i + 2 * BATCH > packets.len() {
                    0
                } else {
                    i + BATCH
                };
                let batch = &packets[start..start + BATCH];
                for (t, _) in batch {
                    ct.prefetch(black_box(t));
                }
                let mut ok = 0;
                for (t, l4) in batch {
                    let hit = ct.lookup(t, NOW).unwrap();
                    ok += usize::from(ct.track(hit, l4, 1500, NOW).is_ok());
                }
                ok
            })
        });
        g.throughput(Throughput::Elements(1));
        // Same addresses, unused ports: every lookup misses.
        let misses: Vec<Tuple> = packets
            .iter()
            .map(|(t, _)| Tuple {
                sport: t.sport ^ 0x8000,
                dport: t.dport ^ 0x8000,
                ..*t
            })
            .collect();
        let mut i = 0;
        g.bench_function(BenchmarkId::new("lookup_miss", n), |b| {
            b.iter(|| {
                let t = &misses[i];
                i = if i + 1 == misses.len() { 0 } else { i + 1 };
                ct.lookup(black_box(t), NOW)
            })
        });
        assert_eq!(ct.len(), n);
    }
    g.finish();
}

criterion_group!(conntrack_benches, benches);
criterion_main!(conntrack_benches);
