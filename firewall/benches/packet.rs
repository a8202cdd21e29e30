//! Per-frame cost of the firewall's wire work: parsing an Ethernet + IPv4 +
//! TCP frame into what the firewall decides on (a SYN with the options Linux
//! sends, and a data segment), and building the TCP RST that rejects it.

#![allow(clippy::unwrap_used)] // benchmark fixtures are constants

use std::hint::black_box;
use std::net::Ipv4Addr;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use firewall::{RejectKind, packet, reject};
use geneve::{ethernet, ipv4};

/// Ethernet + IPv4 + TCP with `opts` (a multiple of 4 bytes) and `payload` bytes.
fn tcp_frame(flags: u8, opts: &[u8], payload: usize) -> Vec<u8> {
    let tcp_len = 20 + opts.len();
    let mut f = vec![0u8; 14 + 20 + tcp_len + payload];
    ethernet::emit_header(
        &mut f,
        [2, 0, 0, 0, 0, 2],
        [2, 0, 0, 0, 0, 1],
        ethernet::ETHERTYPE_IPV4,
    )
    .unwrap();
    ipv4::emit_header(
        &mut f[14..],
        Ipv4Addr::new(10, 0, 0, 1),
        Ipv4Addr::new(10, 0, 0, 2),
        ipv4::PROTO_TCP,
        tcp_len + payload,
        64,
        true,
        1,
    )
    .unwrap();
    let tcp = &mut f[34..];
    tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
    tcp[2..4].copy_from_slice(&22u16.to_be_bytes());
    tcp[4..8].copy_from_slice(&1000u32.to_be_bytes());
    tcp[12] = u8::try_from(tcp_len / 4).unwrap() << 4;
    tcp[13] = flags;
    tcp[14..16].copy_from_slice(&64240u16.to_be_bytes());
    tcp[20..tcp_len].copy_from_slice(opts);
    f
}

fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("fw_packet");
    g.throughput(Throughput::Elements(1));
    // MSS 1460, SACK permitted, timestamps, NOP, window scale 7 (Linux's SYN).
    let syn_opts = [
        2, 4, 5, 180, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7,
    ];
    let syn = tcp_frame(0x02, &syn_opts, 0);
    let data = tcp_frame(0x10, &[], 1400);
    g.bench_function("parse_tcp_syn_options", |b| {
        b.iter(|| packet::parse(black_box(&syn)))
    });
    g.bench_function("parse_tcp_data_1400", |b| {
        b.iter(|| packet::parse(black_box(&data)))
    });
    let mut out = [0u8; 128];
    g.bench_function("reject_tcp_rst", |b| {
        b.iter(|| reject::build(RejectKind::TcpRst, black_box(&syn), &mut out))
    });
    g.finish();
}

criterion_group!(packet_benches, benches);
criterion_main!(packet_benches);
