//! ARP reply, ICMP echo reply and ICMP error frame builders, checked field
//! by field (with checksums verified), and their refusal cases.

mod common;

use std::net::Ipv4Addr;

use common::{GUEST_MAC, GW_MAC, csum_ok, echo_request_frame, udp_frame};
use geneve::{arp, ethernet, icmpv4, ipv4};

const GUEST_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 99, 9);
const GW_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 99, 1);
const REMOTE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 100, 3);

#[test]
fn arp_reply_frame() {
    let mut buf = [0xaau8; 64];
    let n = arp::emit_reply_frame(&mut buf, GW_MAC, GW_IP, GUEST_MAC, GUEST_IP).expect("fits");
    assert_eq!(n, arp::FRAME_LEN);
    assert_eq!(n, 42);
    let eth = ethernet::Frame::new_checked(&buf[..n]).expect("eth");
    assert_eq!(eth.dst(), GUEST_MAC);
    assert_eq!(eth.src(), GW_MAC);
    assert_eq!(eth.ethertype(), ethernet::ETHERTYPE_ARP);
    let a = arp::Packet::new_checked(eth.payload()).expect("arp");
    assert_eq!(a.operation(), arp::OP_REPLY);
    assert_eq!(a.sender_mac(), GW_MAC);
    assert_eq!(a.sender_ip(), GW_IP);
    assert_eq!(a.target_mac(), GUEST_MAC);
    assert_eq!(a.target_ip(), GUEST_IP);
    assert_eq!(&eth.payload()[..8], &[0, 1, 8, 0, 6, 4, 0, 2]);
    assert_eq!(buf[42], 0xaa, "nothing written past the frame");
}

#[test]
fn arp_request_view() {
    let mut buf = [0u8; 42];
    arp::emit_reply_frame(&mut buf, GUEST_MAC, GUEST_IP, ethernet::BROADCAST, GW_IP).expect("fits");
    let mut p = arp::Packet::new_unchecked(&mut buf[14..]);
    p.set_operation(arp::OP_REQUEST);
    p.set_target_mac([0; 6]);
    let p = arp::Packet::new_checked(&buf[14..]).expect("arp");
    assert_eq!(
        (p.operation(), p.sender_ip(), p.target_ip()),
        (arp::OP_REQUEST, GUEST_IP, GW_IP)
    );
}

#[test]
fn icmp_echo_reply_frame() {
    let data: Vec<u8> = (0..56).collect();
    let req = echo_request_frame(
        GUEST_MAC, GW_MAC, GUEST_IP, GW_IP, 63, 56060, 7079, 938, &data,
    );
    let mut buf = [0u8; 200];
    let n = icmpv4::emit_echo_reply_frame(&mut buf, &req, GW_MAC).expect("reply");
    assert_eq!(n, req.len());
    let eth = ethernet::Frame::new_checked(&buf[..n]).expect("eth");
    assert_eq!(
        (eth.dst(), eth.src(), eth.ethertype()),
        (GUEST_MAC, GW_MAC, ethernet::ETHERTYPE_IPV4)
    );
    let ip = ipv4::Packet::new_checked(eth.payload()).expect("ip");
    assert_eq!((ip.src(), ip.dst()), (GW_IP, GUEST_IP));
    assert_eq!(
        (ip.ttl(), ip.protocol(), ip.ident()),
        (64, ipv4::PROTO_ICMP, 56060)
    );
    assert!(ip.dont_frag());
    assert_eq!(ip.total_len(), 84);
    assert!(ip.verify_checksum());
    let icmp = icmpv4::Packet::new_checked(ip.payload()).expect("icmp");
    assert_eq!((icmp.msg_type(), icmp.code()), (icmpv4::TYPE_ECHO_REPLY, 0));
    assert_eq!((icmp.echo_ident(), icmp.echo_seq()), (7079, 938));
    assert_eq!(icmp.data(), &data[..]);
    assert!(icmp.verify_checksum());
}

#[test]
fn icmp_echo_reply_refusals() {
    let req = echo_request_frame(GUEST_MAC, GW_MAC, GUEST_IP, GW_IP, 64, 1, 1, 1, b"abcd");
    let mut buf = [0u8; 200];
    let r = |buf: &mut [u8], f: &[u8]| icmpv4::emit_echo_reply_frame(buf, f, GW_MAC);

    assert_eq!(
        r(&mut buf, &req[..10]),
        Err(icmpv4::Error::Ethernet(ethernet::Error::Truncated))
    );
    assert_eq!(
        r(&mut buf, &req[..30]),
        Err(icmpv4::Error::Ipv4(ipv4::Error::Truncated))
    );
    assert_eq!(
        r(&mut buf[..req.len() - 1], &req),
        Err(icmpv4::Error::BufferTooShort {
            need: req.len(),
            have: req.len() - 1
        })
    );

    let mut bad = req.clone();
    bad[12] = 0x86;
    bad[13] = 0xdd;
    assert_eq!(r(&mut buf, &bad), Err(icmpv4::Error::NotIpv4(0x86dd)));

    let mut bad = req.clone();
    bad[14 + 10] ^= 1;
    assert_eq!(r(&mut buf, &bad), Err(icmpv4::Error::BadChecksum));

    let mut bad = req.clone();
    bad[34 + 8] ^= 1; // ICMP data
    assert_eq!(r(&mut buf, &bad), Err(icmpv4::Error::BadChecksum));

    let udp = udp_frame(GUEST_IP, GW_IP, 1000, 2000, 64, b"x");
    assert_eq!(
        r(&mut buf, &udp),
        Err(icmpv4::Error::NotIcmp(ipv4::PROTO_UDP))
    );

    let mut reply = [0u8; 200];
    let n = r(&mut reply, &req).expect("reply");
    let reply = reply[..n].to_vec();
    let mut back = [0u8; 200];
    assert_eq!(r(&mut back, &reply), Err(icmpv4::Error::NotEchoRequest(0)));

    let bcast = echo_request_frame(
        GUEST_MAC,
        ethernet::BROADCAST,
        GUEST_IP,
        Ipv4Addr::BROADCAST,
        64,
        1,
        1,
        1,
        b"",
    );
    assert_eq!(
        r(&mut buf, &bcast),
        Err(icmpv4::Error::MulticastDestination)
    );

    let zero_src = echo_request_frame(
        GUEST_MAC,
        GW_MAC,
        Ipv4Addr::UNSPECIFIED,
        GW_IP,
        64,
        1,
        1,
        1,
        b"",
    );
    assert_eq!(r(&mut buf, &zero_src), Err(icmpv4::Error::BadSource));

    let mut frag = req.clone();
    frag[14 + 6] |= 0x20; // MF
    ipv4::Packet::new_unchecked(&mut frag[14..]).fill_checksum();
    assert_eq!(r(&mut buf, &frag), Err(icmpv4::Error::Fragmented));

    let mut short_icmp = req.clone();
    short_icmp.truncate(14 + 20 + 4);
    let mut ip = ipv4::Packet::new_unchecked(&mut short_icmp[14..]);
    ip.set_total_len(24);
    ip.fill_checksum();
    assert_eq!(r(&mut buf, &short_icmp), Err(icmpv4::Error::Truncated));
}

fn check_error_frame(
    out: &[u8],
    offending: &[u8],
    icmp_type: u8,
    code: u8,
    rest: u32,
    quote_len: usize,
) {
    let eth = ethernet::Frame::new_checked(out).expect("eth");
    assert_eq!(
        (eth.dst(), eth.src(), eth.ethertype()),
        (GUEST_MAC, GW_MAC, ethernet::ETHERTYPE_IPV4)
    );
    let ip = ipv4::Packet::new_checked(eth.payload()).expect("ip");
    assert_eq!(
        (ip.src(), ip.dst(), ip.ttl(), ip.protocol()),
        (GW_IP, GUEST_IP, 64, ipv4::PROTO_ICMP)
    );
    assert!(ip.verify_checksum());
    assert_eq!(usize::from(ip.total_len()), 20 + 8 + quote_len);
    assert!(usize::from(ip.total_len()) <= 576);
    let icmp = icmpv4::Packet::new_checked(ip.payload()).expect("icmp");
    assert_eq!(
        (icmp.msg_type(), icmp.code(), icmp.rest_of_header()),
        (icmp_type, code, rest)
    );
    assert!(icmp.verify_checksum());
    assert!(csum_ok(ip.payload()));
    assert_eq!(icmp.data(), &offending[14..14 + quote_len]);
}

#[test]
fn icmp_time_exceeded_frame() {
    let off = udp_frame(GUEST_IP, REMOTE_IP, 33434, 33435, 1, &[7u8; 32]);
    let mut buf = [0u8; 1600];
    let n = icmpv4::emit_error_frame(
        &mut buf,
        &off,
        GW_MAC,
        GW_IP,
        icmpv4::TYPE_TIME_EXCEEDED,
        icmpv4::CODE_TTL_EXCEEDED,
        0,
    )
    .expect("error frame");
    // Small datagram: quoted whole.
    check_error_frame(&buf[..n], &off, 11, 0, 0, off.len() - 14);
    assert_eq!(&buf[34 + 4..34 + 8], &[0, 0, 0, 0]);
}

#[test]
fn icmp_frag_needed_frame() {
    let off = udp_frame(GUEST_IP, REMOTE_IP, 5000, 6000, 64, &[0x5a; 1472]);
    let mut buf = [0u8; 1600];
    let mtu: u16 = 1442;
    let n = icmpv4::emit_error_frame(
        &mut buf,
        &off,
        GW_MAC,
        GW_IP,
        icmpv4::TYPE_DEST_UNREACH,
        icmpv4::CODE_FRAG_NEEDED,
        u32::from(mtu),
    )
    .expect("error frame");
    // Large datagram: quote limited to 576 bytes of emitted IP.
    check_error_frame(&buf[..n], &off, 3, 4, u32::from(mtu), icmpv4::MAX_QUOTE_LEN);
    assert_eq!(n, 14 + 576);
    // Next-hop MTU in the low 16 bits of the rest-of-header field.
    assert_eq!(&buf[34 + 4..34 + 8], &[0, 0, 0x05, 0xa2]);

    // A smaller output buffer shrinks the quote but keeps header + 8.
    let mut small = [0u8; 14 + 20 + 8 + 28];
    let n = icmpv4::emit_error_frame(&mut small, &off, GW_MAC, GW_IP, 3, 4, 1442).expect("small");
    check_error_frame(&small[..n], &off, 3, 4, 1442, 28);
    let mut tiny = [0u8; 14 + 20 + 8 + 27];
    assert_eq!(
        icmpv4::emit_error_frame(&mut tiny, &off, GW_MAC, GW_IP, 3, 4, 1442),
        Err(icmpv4::Error::BufferTooShort { need: 70, have: 69 })
    );
}

#[test]
fn icmp_error_refusals() {
    let mut buf = [0u8; 1600];
    let e = |buf: &mut [u8], f: &[u8]| icmpv4::emit_error_frame(buf, f, GW_MAC, GW_IP, 11, 0, 0);

    // Never about an ICMP error.
    let req = echo_request_frame(
        GUEST_MAC,
        GW_MAC,
        GUEST_IP,
        REMOTE_IP,
        1,
        1,
        1,
        1,
        b"abcdabcd",
    );
    let n = e(&mut buf, &req).expect("echo request may be answered with an error");
    let err_frame = buf[..n].to_vec();
    let mut again = [0u8; 1600];
    // err_frame goes GW -> GUEST; make it look like it came from the guest
    // so only the "is an ICMP error" rule applies.
    let mut as_guest = err_frame.clone();
    as_guest[..6].copy_from_slice(&GW_MAC);
    as_guest[6..12].copy_from_slice(&GUEST_MAC);
    assert_eq!(
        e(&mut again, &as_guest),
        Err(icmpv4::Error::OffendingIcmpError(11))
    );
    for t in [3u8, 4, 5, 11, 12] {
        let mut f = req.clone();
        f[34] = t;
        assert_eq!(e(&mut again, &f), Err(icmpv4::Error::OffendingIcmpError(t)));
    }

    // Not the first fragment.
    let mut frag = udp_frame(GUEST_IP, REMOTE_IP, 1, 2, 1, &[0; 16]);
    frag[14 + 7] = 0x10;
    assert_eq!(e(&mut buf, &frag), Err(icmpv4::Error::NotFirstFragment));
    // First fragment (MF set, offset 0) is fine.
    let mut first = udp_frame(GUEST_IP, REMOTE_IP, 1, 2, 1, &[0; 16]);
    first[14 + 6] |= 0x20;
    assert!(e(&mut buf, &first).is_ok());

    // Broadcast / multicast destinations (L3 and L2).
    let b = udp_frame(GUEST_IP, Ipv4Addr::BROADCAST, 68, 67, 1, &[0; 8]);
    assert_eq!(e(&mut buf, &b), Err(icmpv4::Error::MulticastDestination));
    let m = udp_frame(
        GUEST_IP,
        Ipv4Addr::new(224, 0, 0, 251),
        5353,
        5353,
        1,
        &[0; 8],
    );
    assert_eq!(e(&mut buf, &m), Err(icmpv4::Error::MulticastDestination));
    let mut l2 = udp_frame(GUEST_IP, REMOTE_IP, 1, 2, 1, &[0; 8]);
    l2[..6].copy_from_slice(&ethernet::BROADCAST);
    assert_eq!(e(&mut buf, &l2), Err(icmpv4::Error::MulticastDestination));

    // Unanswerable source.
    let z = udp_frame(Ipv4Addr::UNSPECIFIED, REMOTE_IP, 68, 67, 1, &[0; 8]);
    assert_eq!(e(&mut buf, &z), Err(icmpv4::Error::BadSource));

    // Malformed input.
    assert_eq!(
        e(&mut buf, &[0u8; 5]),
        Err(icmpv4::Error::Ethernet(ethernet::Error::Truncated))
    );
    let mut arp_frame = [0u8; 42];
    arp::emit_reply_frame(&mut arp_frame, GUEST_MAC, GUEST_IP, GW_MAC, GW_IP).expect("arp");
    assert_eq!(
        e(&mut buf, &arp_frame),
        Err(icmpv4::Error::NotIpv4(ethernet::ETHERTYPE_ARP))
    );
}
