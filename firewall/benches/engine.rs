//! Per-packet cost of the firewall engine (`Firewall::process`: parse,
//! decide, track): a packet of an established UDP flow and of an
//! established TCP connection (the fast path), and a new UDP flow the
//! default rule drops (classification, rule hit, no entry).

#![allow(clippy::unwrap_used)] // benchmark fixtures are constants

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::sync::Arc;

use control::{Action, DefaultRule, FirewallConfig};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use firewall::{Dir, FailurePolicy, Firewall, Policy};

const ME: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const PEER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

/// An Ethernet + IPv4 frame carrying `l4` (protocol `proto`).
fn frame(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, l4: &[u8]) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
    let mut h = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, proto, 0, 0];
    h[2..4].copy_from_slice(&u16::try_from(20 + l4.len()).unwrap().to_be_bytes());
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    f.extend_from_slice(&h);
    f.extend_from_slice(l4);
    f
}

fn udp(sport: u16, dport: u16) -> Vec<u8> {
    let mut u = vec![0u8; 8 + 1358];
    u[0..2].copy_from_slice(&sport.to_be_bytes());
    u[2..4].copy_from_slice(&dport.to_be_bytes());
    let len = u16::try_from(u.len()).unwrap();
    u[4..6].copy_from_slice(&len.to_be_bytes());
    frame(ME, PEER, 17, &u)
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
    let mut t = vec![0u8; 20 + 1340];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[8..12].copy_from_slice(&ack.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = flags;
    t[14..16].copy_from_slice(&65535u16.to_be_bytes());
    if flags & 0x02 != 0 {
        t.truncate(20);
    }
    frame(src, dst, 6, &t)
}

fn firewall(default: Action) -> Firewall {
    let mut fw = Firewall::new(1 << 16, FailurePolicy::FailClosed);
    let cfg = FirewallConfig {
        default_rule: DefaultRule {
            id: 2,
            action: default,
            log: false,
        },
        ..FirewallConfig::allow_all()
    };
    fw.set_policy(Arc::new(Policy::compile(&cfg).unwrap()));
    fw
}

fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("engine");
    g.throughput(Throughput::Elements(1));

    let mut fw = firewall(Action::Accept);
    let established = udp(40000, 5201);
    fw.process(Dir::Out, &established, 1);
    g.bench_function("udp_established", |b| {
        b.iter(|| fw.process(Dir::Out, black_box(&established), 1))
    });

    // A TCP connection after its handshake; the same data segment again
    // and again (a retransmission as far as tracking goes: it passes).
    let mut fw = firewall(Action::Accept);
    fw.process(Dir::Out, &tcp(ME, PEER, 40000, 22, 0x02, 1000, 0), 1);
    fw.process(Dir::In, &tcp(PEER, ME, 22, 40000, 0x12, 5000, 1001), 1);
    fw.process(Dir::Out, &tcp(ME, PEER, 40000, 22, 0x10, 1001, 5001), 1);
    let data = tcp(ME, PEER, 40000, 22, 0x10, 1001, 5001);
    g.bench_function("tcp_established", |b| {
        b.iter(|| fw.process(Dir::Out, black_box(&data), 1))
    });

    let mut fw = firewall(Action::Drop);
    let refused = udp(40001, 53);
    g.bench_function("udp_new_dropped", |b| {
        b.iter(|| fw.process(Dir::Out, black_box(&refused), 1))
    });
    g.finish();
}

criterion_group!(engine_benches, benches);
criterion_main!(engine_benches);
