//! The packet path must not allocate: a counting global allocator wraps
//! the system one, and a warmed-up loop of new sessions (new mappings with
//! port allocation, existing mappings, static 1:1), established packets
//! both ways, hairpinned packets, ICMP errors both ways, drops of every
//! kind, judgements with their `Display`-free inspection, the sweep and
//! the listing must count zero allocations.

mod common;

use alloc_count::allocs;
use common::*;
use std::net::SocketAddrV4;

use nat::rewrite::{self, L4Csum, Rewrite};
use nat::{Dir, Filtering, Nat, NatConfig, PortRange};

#[global_allocator]
static GLOBAL: alloc_count::Counting = alloc_count::Counting;

#[test]
fn steady_state_loop_does_not_allocate() {
    let cfg = NatConfig {
        filtering: Filtering::AddressDependent,
        port_range: PortRange {
            first: 10_000,
            last: 10_200,
        },
        statics: vec![static_entry("198.51.100.10", "10.0.0.10")],
        ..pool_cfg()
    };
    let mut nat = Nat::with_seed(4096, cfg, 3).unwrap();
    // Packets prepared up front; the loop copies them into a fixed buffer.
    let outbound: Vec<Vec<u8>> = (0..64u32)
        .map(|i| {
            let port = u16::try_from(20_000 + i).unwrap();
            match i % 4 {
                0 => tcp_packet(inside(1 + i % 8), port, ip("192.0.2.1"), 443, 0x02, 1400),
                1 => udp_packet(inside(1 + i % 8), port, ip("192.0.2.1"), 53, 100),
                2 => icmp_echo(inside(1 + i % 8), ip("192.0.2.1"), 8, port, 56),
                _ => udp_packet(ip("10.0.0.10"), port, ip("192.0.2.2"), 123, 48),
            }
        })
        .collect();
    let hairpin = udp_packet(ip("10.0.0.1"), 30_000, ip("198.51.100.10"), 161, 20);
    let to_public = tcp_packet(ip("192.0.2.9"), 5555, ip("198.51.100.10"), 22, 0x02, 0);
    let unsolicited = udp_packet(ip("192.0.2.77"), 9, ip(POOL), 10_001, 8);
    let exhausting: Vec<Vec<u8>> = (0..300u32)
        .map(|i| udp_packet(inside(100 + i), 40_000, ip("192.0.2.3"), 53, 0))
        .collect();
    let fragment = {
        let mut f = udp_packet(ip("10.0.0.1"), 1, ip("192.0.2.1"), 2, 8);
        f[6] = 0x20;
        f
    };
    let mut buf = vec![0u8; 2048];
    let mut err_buf = vec![0u8; 2048];
    let mut run = |nat: &mut Nat, rounds: u64, t: u64| {
        for r in 0..rounds {
            let now = t + r * S;
            for p in &outbound {
                let b = &mut buf[..p.len()];
                b.copy_from_slice(p);
                let d = nat.judge(Dir::Out, b, now);
                let _ = d.is_hairpin();
                nat.process(Dir::Out, b, now);
                // An ICMP error about it from beyond the uplink, then its
                // answer (established both ways).
                let n = b.len();
                let m = icmp_error_into(
                    &mut err_buf,
                    ip("192.0.2.254"),
                    *src_of(b).ip(),
                    3,
                    4,
                    b,
                    48,
                );
                nat.process(Dir::In, &mut err_buf[..m], now);
                let (s, sp, d, dp) = tuple(b);
                let swap = Rewrite {
                    src: Some(SocketAddrV4::new(d, dp)),
                    dst: Some(SocketAddrV4::new(s, sp)),
                };
                rewrite::rewrite(b, &swap, L4Csum::Complete).unwrap();
                nat.process(Dir::In, &mut buf[..n], now);
                // The inside host's error about what it got.
                let got = &buf[..n];
                let (host, peer) = (*dst_of(got).ip(), *src_of(got).ip());
                let m = icmp_error_into(&mut err_buf, host, peer, 3, 3, got, 48);
                nat.process(Dir::Out, &mut err_buf[..m], now);
            }
            for p in [&hairpin, &to_public, &unsolicited, &fragment] {
                let b = &mut buf[..p.len()];
                b.copy_from_slice(p);
                nat.process(Dir::Out, b, now);
                b.copy_from_slice(p);
                nat.process(Dir::In, b, now);
            }
            for p in &exhausting {
                let b = &mut buf[..p.len()];
                b.copy_from_slice(p);
                nat.process(Dir::Out, b, now);
            }
            nat.tick(now);
            let _ = nat.sessions(now).take(10).count();
            let _ = nat.pool_usage().count();
        }
    };
    run(&mut nat, 5, T0); // warm-up
    let before = allocs();
    run(&mut nat, 200, T0 + 10 * S);
    // Time passes: everything expires (the sweep, and lookups meeting
    // dead sessions) and is created again.
    assert!(nat.expire(T0 + 50_000 * S, nat.len() / 2) > 0);
    run(&mut nat, 50, T0 + 100_000 * S);
    let after = allocs();
    assert_eq!(after - before, 0, "the packet path allocated");
    assert!(nat.counters().created > 0);
    assert!(nat.counters().drops(nat::DropReason::Exhausted) > 0);
    assert!(nat.counters().hairpinned > 0);
    assert!(nat.counters().expired > 0);
}
