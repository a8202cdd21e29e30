//! Golden-bytes test built from an NSX Cloud capture (tcpdump -vv):
//! `10.99.3.251.49289 > 10.99.3.248.6081: Geneve, Flags [C], vni 0x238c,
//! options [class VMware (0x104) type 0x80(C) len 8]` carrying an 84-byte
//! ICMP echo request 192.168.99.9 > 192.168.100.3 (id 7079, seq 938).

mod common;

use std::net::Ipv4Addr;

use geneve::outer::{self, Encap, OVERHEAD};
use geneve::{geneve as gnv, ipv4, udp};

const TEP_ID: u32 = 0x0000_1f2e;
const PINNED_PORT: u16 = 59768;

fn golden() -> (Vec<u8>, Vec<u8>) {
    let data: Vec<u8> = (0..56u8)
        .map(|i| if i < 8 { 0xa0 + i } else { i + 8 })
        .collect();
    let inner = common::echo_request_frame(
        common::GUEST_MAC,
        common::GW_MAC,
        Ipv4Addr::new(192, 168, 99, 9),
        Ipv4Addr::new(192, 168, 100, 3),
        63,
        56060,
        7079,
        938,
        &data,
    );
    assert_eq!(inner.len(), 14 + 84);
    let mut buf = vec![0u8; OVERHEAD + inner.len() + 7];
    buf[OVERHEAD..OVERHEAD + inner.len()].copy_from_slice(&inner);
    let encap = Encap {
        src: Ipv4Addr::new(10, 99, 3, 251),
        dst: Ipv4Addr::new(10, 99, 3, 248),
        src_port: 49289,
        vni: 0x238c,
        tep_id: TEP_ID,
    };
    let len = outer::emit(&mut buf, &encap, inner.len()).expect("emit");
    assert_eq!(len, OVERHEAD + inner.len());
    buf.truncate(len);
    (buf, inner)
}

#[test]
fn golden_outer_headers() {
    let (pkt, _) = golden();
    let ip = ipv4::Packet::new_checked(&pkt[..]).expect("ipv4");
    assert_eq!(ip.total_len(), 142);
    assert_eq!(pkt.len(), 142);
    assert_eq!(ip.version(), 4);
    assert_eq!(ip.header_len(), 20);
    assert_eq!(ip.tos(), 0);
    assert!(ip.dont_frag());
    assert!(!ip.more_frags());
    assert_eq!(ip.frag_offset(), 0);
    assert_eq!(ip.ttl(), 64);
    assert_eq!(ip.protocol(), ipv4::PROTO_UDP);
    assert_eq!(ip.src(), Ipv4Addr::new(10, 99, 3, 251));
    assert_eq!(ip.dst(), Ipv4Addr::new(10, 99, 3, 248));
    assert!(ip.verify_checksum());
    // Flags/fragment bytes: DF only.
    assert_eq!(&pkt[6..8], &[0x40, 0x00]);

    let u = udp::Packet::new_checked(ip.payload()).expect("udp");
    assert_eq!(u.src_port(), 49289);
    assert_eq!(u.dst_port(), 6081);
    assert_eq!(u.dst_port(), gnv::GENEVE_PORT);
    assert_eq!(u.len(), 142 - 20);
    assert_ne!(u.checksum(), 0, "checksum must be computed, not omitted");
    assert!(u.verify_checksum_v4(ip.src(), ip.dst()));

    // RFC 8926 §3.4: Ver(2)=0 OptLen(6)=2 | O=0 C=1 Rsvd(6)=0 | 0x6558 |
    // VNI 0x00238c | Rsvd 0; option: class 0x0104, type 0x80, R=0 len=1,
    // data = tep id.
    let expected: [u8; 16] = [
        0x02, 0x40, 0x65, 0x58, // ver/optlen, flags, protocol
        0x00, 0x23, 0x8c, 0x00, // vni, reserved
        0x01, 0x04, 0x80, 0x01, // option class, type, R/length
        0x00, 0x00, 0x1f, 0x2e, // tep id
    ];
    assert_eq!(&u.payload()[..16], &expected);
    assert_eq!(&pkt[28..44], &expected);
}

#[test]
fn golden_parse_round_trip() {
    let (pkt, inner) = golden();
    let p = gnv::parse(&pkt[28..]).expect("parse");
    assert_eq!(p.vni, 0x238c);
    assert!(!p.oam);
    assert_eq!(p.tep_id, Some(TEP_ID));
    assert_eq!(p.payload, &inner[..]);

    let h = gnv::Header::new_checked(&pkt[28..]).expect("header");
    assert_eq!(h.version(), 0);
    assert_eq!(h.opt_len_bytes(), 8);
    assert!(h.critical());
    assert!(!h.oam());
    assert_eq!(h.protocol(), gnv::PROTO_ETHERNET);
    let opts: Vec<_> = h.options().collect();
    assert_eq!(opts.len(), 1);
    let o = opts[0].expect("option");
    assert_eq!(
        (o.class, o.typ, o.critical),
        (geneve::VMWARE_OPT_CLASS, geneve::VMWARE_OPT_TYPE, true)
    );
    assert_eq!(o.data, &TEP_ID.to_be_bytes());

    // The inner packet is untouched and still the capture's echo request.
    let ip = ipv4::Packet::new_checked(&p.payload[14..]).expect("inner ip");
    assert_eq!((ip.total_len(), ip.ttl(), ip.ident()), (84, 63, 56060));
    let icmp = geneve::icmpv4::Packet::new_checked(ip.payload()).expect("icmp");
    assert_eq!((icmp.echo_ident(), icmp.echo_seq()), (7079, 938));
    assert!(icmp.verify_checksum());
}

#[test]
fn emit_errors() {
    let encap = Encap {
        src: Ipv4Addr::new(10, 0, 0, 1),
        dst: Ipv4Addr::new(10, 0, 0, 2),
        src_port: 50000,
        vni: 1,
        tep_id: 1,
    };
    let mut buf = vec![0u8; 100];
    assert_eq!(
        outer::emit(&mut buf, &encap, 57),
        Err(outer::Error::BufferTooShort {
            need: 101,
            have: 100
        })
    );
    assert_eq!(
        outer::emit(&mut buf, &encap, usize::MAX),
        Err(outer::Error::TooLong(usize::MAX))
    );
    let mut big = vec![0u8; 70000];
    assert_eq!(
        outer::emit(&mut big, &encap, 65535 - OVERHEAD + 1),
        Err(outer::Error::TooLong(65536))
    );
    assert_eq!(outer::emit(&mut big, &encap, 65535 - OVERHEAD), Ok(65535));
    let bad_vni = Encap {
        vni: 1 << 24,
        ..encap
    };
    assert_eq!(
        outer::emit(&mut buf, &bad_vni, 14),
        Err(outer::Error::Geneve(gnv::Error::VniTooLarge(1 << 24)))
    );
    let bad_tep = Encap {
        tep_id: 0x8000_0000,
        ..encap
    };
    assert_eq!(
        outer::emit(&mut buf, &bad_tep, 14),
        Err(outer::Error::Geneve(gnv::Error::BadVmwareOption))
    );
}

#[test]
fn flow_src_port_properties() {
    let a = common::udp_frame(
        Ipv4Addr::new(192, 168, 1, 2),
        Ipv4Addr::new(10, 1, 1, 1),
        40000,
        53,
        64,
        b"q",
    );
    let b = common::udp_frame(
        Ipv4Addr::new(192, 168, 1, 2),
        Ipv4Addr::new(10, 1, 1, 1),
        40001,
        53,
        64,
        b"q",
    );
    let a2 = common::udp_frame(
        Ipv4Addr::new(192, 168, 1, 2),
        Ipv4Addr::new(10, 1, 1, 1),
        40000,
        53,
        7,
        b"other",
    );
    let pa = outer::flow_src_port(&a);
    assert!(pa >= 49152);
    // Stable: same flow, different TTL/payload -> same port.
    assert_eq!(pa, outer::flow_src_port(&a2));
    // Pinned value: FNV-1a over (src, dst, proto, ports), deterministic
    // across processes and builds; a change here changes underlay hashing.
    assert_eq!(pa, PINNED_PORT);
    assert_ne!(
        pa,
        outer::flow_src_port(&b),
        "ports should participate in the hash"
    );
    for n in 0..a.len() {
        assert!(outer::flow_src_port(&a[..n]) >= 49152);
    }
}
