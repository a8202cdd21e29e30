//! Criterion benchmarks: Geneve receive validation of a 1400-byte packet,
//! outer-header emit (including the UDP checksum) for a 1400-byte inner
//! frame, and the Internet checksum alone (every TCP segment the agent
//! cuts from a TSO super-frame is summed once).

use std::hint::black_box;
use std::net::Ipv4Addr;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use geneve::geneve::{ENCAP_HEADER_LEN, parse};
use geneve::outer::{self, Encap, OVERHEAD};
use geneve::{checksum, ethernet, udp};

const INNER_LEN: usize = 1400;

fn encap() -> Encap {
    Encap {
        src: Ipv4Addr::new(10, 99, 3, 251),
        dst: Ipv4Addr::new(10, 99, 3, 248),
        src_port: 49289,
        vni: 0x238c,
        tep_id: 7,
    }
}

fn inner() -> Vec<u8> {
    let mut f: Vec<u8> = (0..=u8::MAX).cycle().take(INNER_LEN).collect();
    ethernet::emit_header(
        &mut f,
        [2, 0, 0, 0, 0, 1],
        [2, 0, 0, 0, 0, 2],
        ethernet::ETHERTYPE_IPV4,
    )
    .expect("ethernet header");
    f
}

fn bench_parse(c: &mut Criterion) {
    // A 1400-byte Geneve UDP payload (16-byte header + option + inner).
    let mut buf = vec![0u8; OVERHEAD + INNER_LEN - ENCAP_HEADER_LEN];
    let inner_len = buf.len() - OVERHEAD;
    buf[OVERHEAD..].copy_from_slice(&inner()[..inner_len]);
    outer::emit(&mut buf, &encap(), inner_len).expect("emit");
    let udp_payload = &buf[28..];
    assert_eq!(udp_payload.len(), 1400);

    let mut g = c.benchmark_group("geneve");
    g.throughput(Throughput::Bytes(1400));
    g.bench_function("parse_1400", |b| b.iter(|| parse(black_box(udp_payload))));
    g.bench_function("udp_verify_and_parse_1400", |b| {
        b.iter(|| {
            let u = udp::Packet::new_checked(black_box(&buf[20..])).expect("udp");
            assert!(u.verify_checksum_v4(encap().src, encap().dst));
            parse(u.into_payload()).is_ok()
        })
    });
    g.finish();
}

fn bench_checksum(c: &mut Criterion) {
    let mut g = c.benchmark_group("checksum");
    for len in [20usize, 1400, 8960] {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 + 3).to_le_bytes()[0]).collect();
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function(format!("sum_{len}"), |b| {
            b.iter(|| checksum::sum(black_box(&data), black_box(0x1234)))
        });
    }
    g.finish();
}

fn bench_emit(c: &mut Criterion) {
    let mut buf = vec![0u8; OVERHEAD + INNER_LEN];
    buf[OVERHEAD..].copy_from_slice(&inner());
    let e = encap();
    let mut g = c.benchmark_group("outer");
    g.throughput(Throughput::Bytes(INNER_LEN as u64));
    g.bench_function("emit_1400", |b| {
        b.iter(|| outer::emit(black_box(&mut buf), black_box(&e), INNER_LEN))
    });
    g.finish();
    c.bench_function("outer/flow_src_port", |b| {
        b.iter(|| outer::flow_src_port(black_box(&buf[OVERHEAD..])))
    });
}

criterion_group!(benches, bench_parse, bench_emit, bench_checksum);
criterion_main!(benches);
