//! Property tests: Geneve emit/parse round trip, TCP header and options
//! emit/parse round trip, never-panic on arbitrary bytes for every view,
//! parser and builder, TTL decrement keeps the IPv4 checksum valid, and
//! RFC 1624 incremental update equals recompute.

mod common;

use std::net::Ipv4Addr;

use geneve::outer::{self, Encap, OVERHEAD};
use geneve::tcp::{self, SackBlocks, TcpOption};
use geneve::{checksum, geneve as gnv, ipv4, udp};
use proptest::prelude::*;

/// An owned TCP option to generate: SACK and unknown kinds carry bytes.
#[derive(Debug, Clone)]
enum Opt {
    Nop,
    Mss(u16),
    Ws(u8),
    SackPermitted,
    Sack(Vec<u8>),
    Ts(u32, u32),
    Unknown(u8, Vec<u8>),
}

impl Opt {
    fn as_option(&self) -> TcpOption<'_> {
        match self {
            Opt::Nop => TcpOption::NoOperation,
            Opt::Mss(m) => TcpOption::MaxSegmentSize(*m),
            Opt::Ws(s) => TcpOption::WindowScale(*s),
            Opt::SackPermitted => TcpOption::SackPermitted,
            Opt::Sack(b) => TcpOption::Sack(SackBlocks::new(b).expect("1..=4 blocks")),
            Opt::Ts(v, e) => TcpOption::Timestamps {
                value: *v,
                echo: *e,
            },
            Opt::Unknown(k, d) => TcpOption::Unknown { kind: *k, data: d },
        }
    }
}

fn opt() -> impl Strategy<Value = Opt> {
    prop_oneof![
        Just(Opt::Nop),
        any::<u16>().prop_map(Opt::Mss),
        any::<u8>().prop_map(Opt::Ws),
        Just(Opt::SackPermitted),
        (1usize..=4)
            .prop_flat_map(|n| proptest::collection::vec(any::<u8>(), n * 8))
            .prop_map(Opt::Sack),
        (any::<u32>(), any::<u32>()).prop_map(|(v, e)| Opt::Ts(v, e)),
        // Kinds with no meaning here: 6, 7 and 9..=255 (obsolete, experimental, ...).
        (
            prop_oneof![6u8..=7, 9u8..=255],
            proptest::collection::vec(any::<u8>(), 0..12)
        )
            .prop_map(|(k, d)| Opt::Unknown(k, d)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn emit_parse_round_trip(
        vni in 0u32..=0x00ff_ffff,
        tep_id in 0u32..=0x7fff_ffff,
        inner in proptest::collection::vec(any::<u8>(), 14..2000),
        src in any::<u32>(),
        dst in any::<u32>(),
    ) {
        let (src, dst) = (Ipv4Addr::from(src), Ipv4Addr::from(dst));
        let mut buf = vec![0u8; OVERHEAD + inner.len()];
        buf[OVERHEAD..].copy_from_slice(&inner);
        let encap = Encap { src, dst, src_port: outer::flow_src_port(&inner), vni, tep_id };
        let n = outer::emit(&mut buf, &encap, inner.len()).expect("emit");
        prop_assert_eq!(n, buf.len());
        let ip = ipv4::Packet::new_checked(&buf[..]).expect("ip");
        prop_assert!(ip.verify_checksum());
        prop_assert_eq!(usize::from(ip.total_len()), n);
        let u = udp::Packet::new_checked(ip.payload()).expect("udp");
        prop_assert!(u.verify_checksum_v4(src, dst));
        prop_assert_ne!(u.checksum(), 0);
        prop_assert!(u.src_port() >= 49152);
        let p = gnv::parse(u.payload()).expect("parse");
        prop_assert_eq!(p.vni, vni);
        prop_assert_eq!(p.tep_id, Some(tep_id));
        prop_assert!(!p.oam);
        prop_assert_eq!(p.payload, &inner[..]);
    }

    #[test]
    fn repr_round_trip(
        vni in 0u32..=0x00ff_ffff,
        oam in any::<bool>(),
        tep_id in proptest::option::of(0u32..=0x7fff_ffff),
    ) {
        let r = gnv::Repr { vni, oam, tep_id };
        let mut buf = [0u8; 16 + 14];
        let n = r.emit(&mut buf).expect("emit");
        prop_assert_eq!(n, r.buffer_len());
        let len = n + 14;
        prop_assert_eq!(gnv::Repr::parse(&buf[..len]), Ok(r));
    }

    #[test]
    fn tcp_emit_parse_round_trip(
        src_port in any::<u16>(),
        dst_port in any::<u16>(),
        seq_number in any::<u32>(),
        ack_number in any::<u32>(),
        flags in any::<u8>(),
        window in any::<u16>(),
        urgent in any::<u16>(),
        owned in proptest::collection::vec(opt(), 0..6)
            .prop_filter("fits in 40 bytes", |v| {
                v.iter().map(|o| o.as_option().buffer_len()).sum::<usize>() <= tcp::MAX_OPTIONS_LEN
            }),
        payload in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let options: Vec<TcpOption<'_>> = owned.iter().map(Opt::as_option).collect();
        let repr = tcp::Repr {
            src_port, dst_port, seq_number, ack_number, flags, window, urgent,
            options: &options,
        };
        let hl = repr.header_len();
        let mut buf = vec![0u8; hl + payload.len()];
        prop_assert_eq!(repr.emit(&mut buf), Ok(hl));
        buf[hl..].copy_from_slice(&payload);
        let mut p = tcp::Packet::new_checked(&mut buf[..]).expect("emitted header is valid");
        p.fill_checksum_v4(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        prop_assert!(p.verify_checksum_v4(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)));
        let p = tcp::Packet::new_checked(&buf[..]).expect("valid");
        prop_assert_eq!(
            (p.src_port(), p.dst_port(), p.seq_number(), p.ack_number()),
            (src_port, dst_port, seq_number, ack_number)
        );
        prop_assert_eq!((p.flags(), p.window(), p.urgent()), (flags, window, urgent));
        prop_assert_eq!(p.header_len(), hl);
        prop_assert_eq!(p.payload(), &payload[..]);
        // The options read back in order; padding (if any) reads as end of list.
        let back: Vec<_> = p.options().collect::<Result<_, _>>().expect("options parse");
        let opt_len: usize = options.iter().map(TcpOption::buffer_len).sum();
        let mut want = options.clone();
        if !opt_len.is_multiple_of(4) {
            want.push(TcpOption::EndOfList);
        }
        prop_assert_eq!(back, want);
    }

    #[test]
    fn tcp_arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..128)) {
        geneve::fuzz_tcp(&data);
        // And the same bytes behind a valid fixed header, as its options.
        let mut seg = vec![0u8; 20];
        let hl = (20 + data.len().min(40)) & !3;
        seg[12] = u8::try_from(hl / 4).unwrap() << 4;
        seg.extend_from_slice(&data);
        geneve::fuzz_tcp(&seg);
        if let Ok(p) = tcp::Packet::new_checked(&seg[..]) {
            prop_assert_eq!(p.options_area().len(), hl - 20);
            for o in p.options() {
                let _ = o.map(|o| o.buffer_len());
            }
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        geneve::fuzz_all(&data);
    }

    #[test]
    fn mutated_valid_packets_never_panic(
        inner in proptest::collection::vec(any::<u8>(), 14..200),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        cut in any::<usize>(),
    ) {
        // Start from a valid encapsulated packet so mutations reach deep
        // into the parsers, then corrupt bytes and truncate.
        let mut buf = vec![0u8; OVERHEAD + inner.len()];
        buf[OVERHEAD..].copy_from_slice(&inner);
        let encap = Encap {
            src: Ipv4Addr::new(10, 0, 0, 1),
            dst: Ipv4Addr::new(10, 0, 0, 2),
            src_port: 50000,
            vni: 5,
            tep_id: 6,
        };
        outer::emit(&mut buf, &encap, inner.len()).expect("emit");
        for (i, v) in flips {
            let i = i % buf.len();
            buf[i] ^= v;
        }
        let keep = cut % (buf.len() + 1);
        geneve::fuzz_all(&buf[..keep]);
        geneve::fuzz_all(&buf[20..keep.max(20)]);
        geneve::fuzz_all(&buf[28..keep.max(28)]);
        let _ = gnv::parse(&buf[28..keep.max(28)]);
    }

    #[test]
    fn structured_frames_never_panic(
        payload in proptest::collection::vec(any::<u8>(), 0..600),
        ttl in any::<u8>(),
        hdr_byte in any::<u8>(),
        icmp_type in any::<u8>(),
    ) {
        // Valid Ethernet+IPv4 frames with arbitrary content drive the ICMP
        // builders past their early validation.
        let mut f = common::echo_request_frame(
            common::GUEST_MAC, common::GW_MAC,
            Ipv4Addr::new(192, 168, 1, 2), Ipv4Addr::new(192, 168, 1, 1),
            ttl, 1, 2, 3, &payload,
        );
        f[34] = icmp_type;
        let idx = 14 + usize::from(hdr_byte % 20);
        geneve::fuzz_all(&f);
        f[idx] ^= hdr_byte;
        geneve::fuzz_all(&f);
    }

    #[test]
    fn decrement_ttl_keeps_checksum(
        ttl in any::<u8>(),
        proto in any::<u8>(),
        src in any::<u32>(),
        dst in any::<u32>(),
        ident in any::<u16>(),
        df in any::<bool>(),
        payload_len in 0usize..100,
    ) {
        let mut b = vec![0u8; 20 + payload_len];
        ipv4::emit_header(&mut b, Ipv4Addr::from(src), Ipv4Addr::from(dst), proto, payload_len, ttl, df, ident)
            .expect("emit");
        let mut p = ipv4::Packet::new_checked(&mut b[..]).expect("valid");
        prop_assert!(p.verify_checksum());
        let new = p.decrement_ttl();
        prop_assert_eq!(new, ttl.saturating_sub(1));
        prop_assert_eq!(p.ttl(), new);
        prop_assert!(p.verify_checksum());
        let incremental = p.checksum();
        p.fill_checksum();
        prop_assert_eq!(p.checksum(), incremental);
    }

    #[test]
    fn update16_equals_recompute(
        mut data in proptest::collection::vec(any::<u8>(), 2..128),
        idx in any::<usize>(),
        new in any::<u16>(),
    ) {
        if data.len() % 2 == 1 {
            data.push(0);
        }
        let words = data.len() / 2;
        let w = idx % words;
        let old_csum = checksum::fold(checksum::sum(&data, 0));
        let old = u16::from_be_bytes([data[2 * w], data[2 * w + 1]]);
        data[2 * w..2 * w + 2].copy_from_slice(&new.to_be_bytes());
        // The only divergence is the all-zero data case (0x0000 vs 0xffff,
        // both ones-complement zero); see checksum::update16.
        prop_assume!(data.iter().any(|&b| b != 0));
        let recomputed = checksum::fold(checksum::sum(&data, 0));
        prop_assert_eq!(checksum::update16(old_csum, old, new), recomputed);
    }

    #[test]
    fn checksum_sum_is_chainable(
        a in proptest::collection::vec(any::<u8>(), 0..64).prop_map(|mut v| { v.truncate(v.len() & !1); v }),
        b in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let whole: Vec<u8> = a.iter().chain(b.iter()).copied().collect();
        prop_assert_eq!(
            checksum::fold(checksum::sum(&b, checksum::sum(&a, 0))),
            checksum::fold(checksum::sum(&whole, 0))
        );
    }
}
