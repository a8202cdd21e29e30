#![allow(clippy::unwrap_used)]
use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::Instant;
use firewall::{Conntrack, Dir, L4, TcpMeta, Tuple};
fn seg(flags: u8, seq: u32, ack: u32, window: u16) -> L4 { L4::Tcp(TcpMeta { flags, seq, ack, window, wscale: Some(7), payload_len: 0 }) }
fn client(i: usize) -> Tuple { Tuple { proto: 6, src: Ipv4Addr::from(0x0a00_0000 + (i / 50_000) as u32), dst: Ipv4Addr::new(10, 255, 0, 1), sport: 10_000 + (i % 50_000) as u16, dport: 443 } }
fn main() {
    let n: usize = std::env::args().nth(1).map(|s| s.parse().unwrap()).unwrap_or(1_000_000);
    let now = 1_000_000_000_000u64;
    let mut ct = Conntrack::new(n);
    let ack_orig = seg(TcpMeta::ACK, 1001, 5001, 502);
    let ack_reply = seg(TcpMeta::ACK, 5001, 1001, 509);
    let mut packets = Vec::new();
    for i in 0..n {
        let c = client(i);
        ct.insert(&c, Dir::Out, 1006, &seg(TcpMeta::SYN, 1000, 0, 64240), 60, now).unwrap();
        let hit = ct.lookup(&c.reverse(), now).unwrap();
        ct.track(hit, &seg(TcpMeta::SYN | TcpMeta::ACK, 5000, 1001, 65160), 60, now).unwrap();
        let hit = ct.lookup(&c, now).unwrap();
        ct.track(hit, &ack_orig, 52, now).unwrap();
        packets.push(if i % 2 == 0 { (c, ack_orig) } else { (c.reverse(), ack_reply) });
    }
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for i in (1..packets.len()).rev() { x ^= x >> 12; x ^= x << 25; x ^= x >> 27; let j = (x.wrapping_mul(0x2545_f491_4f6c_dd1d) % (i as u64 + 1)) as usize; packets.swap(i, j); }
    let total = 2_000_000usize;
    for variant in ["plain", "batch", "batch2", "plain", "batch", "batch2"] {
        let mut best = f64::MAX;
        for _ in 0..5 {
            let t0 = Instant::now();
            let mut ok = 0usize;
            let mut i = 0;
            let mut done = 0;
            while done < total {
                let b = 32;
                if i + b > packets.len() { i = 0; }
                let batch = &packets[i..i + b];
                i += b; done += b;
                match variant {
                    "batch" => for (t, _) in batch { ct.prefetch(black_box(t)); },
                    "batch2" => { for (t, _) in batch { ct.prefetch_tag(black_box(t)); } for (t, _) in batch { ct.prefetch(black_box(t)); } },
                    _ => {}
                }
                for (t, l4) in batch { let hit = ct.lookup(t, now).unwrap(); ok += usize::from(ct.track(hit, l4, 1500, now).is_ok()); }
            }
            assert_eq!(ok, total);
            best = best.min(t0.elapsed().as_nanos() as f64 / total as f64);
        }
        println!("{n} {variant}: {best:.1} ns/packet (min of 5)");
    }
}
