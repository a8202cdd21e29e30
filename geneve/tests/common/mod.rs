//! Helpers shared by the integration tests: hand-built frames.
#![allow(dead_code)]

use std::net::Ipv4Addr;

use geneve::{MacAddr, checksum, ethernet, icmpv4, ipv4};

pub const GUEST_MAC: MacAddr = [0x02, 0x42, 0xac, 0x11, 0x00, 0x02];
pub const GW_MAC: MacAddr = [0x02, 0x00, 0x5e, 0x00, 0x00, 0x01];

/// Ethernet + IPv4 + ICMP echo request with `data` as echo payload.
#[allow(clippy::too_many_arguments)]
pub fn echo_request_frame(
    src_mac: MacAddr,
    dst_mac: MacAddr,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ttl: u8,
    ident: u16,
    echo_id: u16,
    seq: u16,
    data: &[u8],
) -> Vec<u8> {
    let icmp_len = 8 + data.len();
    let mut f = vec![0u8; 14 + 20 + icmp_len];
    ethernet::emit_header(&mut f, dst_mac, src_mac, ethernet::ETHERTYPE_IPV4).expect("eth");
    ipv4::emit_header(
        &mut f[14..],
        src,
        dst,
        ipv4::PROTO_ICMP,
        icmp_len,
        ttl,
        true,
        ident,
    )
    .expect("ip");
    let mut icmp = icmpv4::Packet::new_unchecked(&mut f[34..]);
    icmp.set_msg_type(icmpv4::TYPE_ECHO_REQUEST);
    icmp.set_code(0);
    icmp.set_echo_ident(echo_id);
    icmp.set_echo_seq(seq);
    icmp.data_mut().copy_from_slice(data);
    icmp.fill_checksum();
    f
}

/// Ethernet + IPv4 + UDP frame with a valid UDP checksum.
pub fn udp_frame(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    ttl: u8,
    payload: &[u8],
) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let mut f = vec![0u8; 14 + 20 + udp_len];
    ethernet::emit_header(&mut f, GW_MAC, GUEST_MAC, ethernet::ETHERTYPE_IPV4).expect("eth");
    ipv4::emit_header(
        &mut f[14..],
        src,
        dst,
        ipv4::PROTO_UDP,
        udp_len,
        ttl,
        true,
        0x1234,
    )
    .expect("ip");
    geneve::udp::emit_header(&mut f[34..], sport, dport, payload.len()).expect("udp");
    f[42..].copy_from_slice(payload);
    let mut u = geneve::udp::Packet::new_unchecked(&mut f[34..]);
    u.fill_checksum_v4(src, dst);
    f
}

/// Whether the ones-complement sum over `data` verifies.
pub fn csum_ok(data: &[u8]) -> bool {
    checksum::fold(checksum::sum(data, 0)) == 0
}

/// A Geneve header (8 bytes) with the given first two bytes, protocol and
/// VNI, followed by `options` and then `payload`.
pub fn geneve_packet(
    ver: u8,
    flags: u8,
    protocol: u16,
    vni: u32,
    options: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    assert_eq!(options.len() % 4, 0);
    let words = u8::try_from(options.len() / 4).expect("test options are short");
    let mut v = vec![(ver << 6) | words, flags];
    v.extend_from_slice(&protocol.to_be_bytes());
    v.extend_from_slice(&vni.to_be_bytes()[1..]);
    v.push(0);
    v.extend_from_slice(options);
    v.extend_from_slice(payload);
    v
}

/// An option TLV.
pub fn opt(class: u16, typ: u8, data: &[u8]) -> Vec<u8> {
    assert_eq!(data.len() % 4, 0);
    let mut v = class.to_be_bytes().to_vec();
    v.push(typ);
    v.push(u8::try_from(data.len() / 4).expect("test option data is short"));
    v.extend_from_slice(data);
    v
}

/// A minimal valid inner Ethernet frame.
pub fn inner_frame() -> Vec<u8> {
    let mut f = vec![0u8; 60];
    ethernet::emit_header(&mut f, GW_MAC, GUEST_MAC, ethernet::ETHERTYPE_IPV4).expect("eth");
    f
}
