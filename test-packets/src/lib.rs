//! Test support for the packet engines (`nat`, `lb`): the one set of test
//! packets (IPv4 from the header on, every checksum filled: TCP, UDP,
//! ICMP queries and errors), readers of their addresses and ports,
//! from-scratch checksum checks, and the deterministic shuffle the
//! benches visit flows in. Their tests and benches use it as a
//! dev-dependency; `nat`'s unit tests too.
//!
//! A builder panics on a buffer too small or a length that does not fit:
//! it is called with constants, and a panic is the test's failure.

#![forbid(unsafe_code)]
// Fixtures: a panic is the test's failure, and every length is a test's
// constant far below 64 KiB.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::net::{Ipv4Addr, SocketAddrV4};

use geneve::{checksum, icmpv4, ipv4, tcp, udp};

pub fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

pub fn sa(s: &str) -> SocketAddrV4 {
    s.parse().unwrap()
}

fn ip_header(buf: &mut [u8], src: Ipv4Addr, dst: Ipv4Addr, proto: u8, payload: usize) {
    ipv4::emit_header(buf, src, dst, proto, payload, 64, true, 0x1234).unwrap();
}

/// A TCP segment with `flags` and `payload` bytes of data (a pattern).
pub fn tcp_packet(
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
    flags: u8,
    payload: usize,
) -> Vec<u8> {
    let mut b = vec![0u8; 40 + payload];
    ip_header(&mut b, src, dst, ipv4::PROTO_TCP, 20 + payload);
    for (i, x) in b[40..].iter_mut().enumerate() {
        *x = (i * 7 + 3) as u8;
    }
    let mut t = tcp::Packet::new_unchecked(&mut b[20..]);
    t.set_src_port(sport);
    t.set_dst_port(dport);
    t.set_seq_number(0x0102_0304);
    t.set_ack_number(if flags & tcp::ACK != 0 {
        0x0a0b_0c0d
    } else {
        0
    });
    t.set_header_len(20);
    t.set_flags(flags);
    t.set_window(65535);
    t.fill_checksum_v4(src, dst);
    b
}

/// A UDP datagram with `payload` bytes of data and its checksum filled.
pub fn udp_packet(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, payload: usize) -> Vec<u8> {
    let mut b = vec![0u8; 28 + payload];
    ip_header(&mut b, src, dst, ipv4::PROTO_UDP, 8 + payload);
    for (i, x) in b[28..].iter_mut().enumerate() {
        *x = (i * 13 + 1) as u8;
    }
    udp::emit_header(&mut b[20..], sport, dport, payload).unwrap();
    udp::Packet::new_unchecked(&mut b[20..]).fill_checksum_v4(src, dst);
    b
}

/// An ICMP query message of `icmp_type` with identifier `id`.
pub fn icmp_echo(src: Ipv4Addr, dst: Ipv4Addr, icmp_type: u8, id: u16, payload: usize) -> Vec<u8> {
    let mut b = vec![0u8; 28 + payload];
    ip_header(&mut b, src, dst, ipv4::PROTO_ICMP, 8 + payload);
    for (i, x) in b[28..].iter_mut().enumerate() {
        *x = (i * 5 + 2) as u8;
    }
    let mut m = icmpv4::Packet::new_unchecked(&mut b[20..]);
    m.set_msg_type(icmp_type);
    m.set_code(0);
    m.set_echo_ident(id);
    m.set_echo_seq(9);
    m.fill_checksum();
    b
}

/// An ICMP error from `src` to `dst` quoting the first `quote` bytes of
/// `orig` (fragmentation needed, 3/4, carries an MTU of 1400).
pub fn icmp_error(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    icmp_type: u8,
    code: u8,
    orig: &[u8],
    quote: usize,
) -> Vec<u8> {
    let mut b = vec![0u8; 28 + quote.min(orig.len())];
    let n = icmp_error_into(&mut b, src, dst, icmp_type, code, orig, quote);
    b.truncate(n);
    b
}

/// [`icmp_error`] written into `buf` (no allocation); returns its length.
pub fn icmp_error_into(
    buf: &mut [u8],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    icmp_type: u8,
    code: u8,
    orig: &[u8],
    quote: usize,
) -> usize {
    let q = &orig[..quote.min(orig.len())];
    let b = &mut buf[..28 + q.len()];
    ip_header(b, src, dst, ipv4::PROTO_ICMP, 8 + q.len());
    b[28..].copy_from_slice(q);
    let mut m = icmpv4::Packet::new_unchecked(&mut b[20..]);
    m.set_msg_type(icmp_type);
    m.set_code(code);
    m.set_rest_of_header(if icmp_type == 3 && code == 4 { 1400 } else { 0 });
    m.fill_checksum();
    b.len()
}

/// Recomputes the ICMP checksum of an ICMP packet (after a test edits it).
pub fn refill_icmp(b: &mut [u8]) {
    let hl = usize::from(b[0] & 0x0f) * 4;
    icmpv4::Packet::new_unchecked(&mut b[hl..]).fill_checksum();
}

/// The ports of a transport header `l4` of protocol `proto` (ICMP: the
/// identifier twice).
fn ports(proto: u8, l4: &[u8]) -> (u16, u16) {
    if proto == ipv4::PROTO_ICMP {
        let id = u16::from_be_bytes([l4[4], l4[5]]);
        (id, id)
    } else {
        (
            u16::from_be_bytes([l4[0], l4[1]]),
            u16::from_be_bytes([l4[2], l4[3]]),
        )
    }
}

/// Source, source port, destination, destination port of a packet (ICMP:
/// identifier twice).
pub fn tuple(b: &[u8]) -> (Ipv4Addr, u16, Ipv4Addr, u16) {
    let p = ipv4::Packet::new_checked(b).unwrap();
    let (s, d) = ports(p.protocol(), p.payload());
    (p.src(), s, p.dst(), d)
}

/// The source endpoint of a packet.
pub fn src_of(b: &[u8]) -> SocketAddrV4 {
    let (ip, port, _, _) = tuple(b);
    SocketAddrV4::new(ip, port)
}

/// The destination endpoint of a packet.
pub fn dst_of(b: &[u8]) -> SocketAddrV4 {
    let (_, _, ip, port) = tuple(b);
    SocketAddrV4::new(ip, port)
}

/// The quoted packet of an ICMP error: source, source port, destination,
/// destination port (ICMP: identifier twice).
pub fn quoted_tuple(b: &[u8]) -> (Ipv4Addr, u16, Ipv4Addr, u16) {
    let hl = usize::from(b[0] & 0x0f) * 4;
    let q = &b[hl + 8..];
    let qhl = usize::from(q[0] & 0x0f) * 4;
    let src = Ipv4Addr::new(q[12], q[13], q[14], q[15]);
    let dst = Ipv4Addr::new(q[16], q[17], q[18], q[19]);
    let (s, d) = ports(q[9], &q[qhl..]);
    (src, s, dst, d)
}

/// Whether the L4 checksum of an IPv4 packet `b` (whole, not a quote)
/// verifies, computed from scratch. UDP's 0 (none) verifies.
pub fn l4_ok(b: &[u8]) -> bool {
    let p = ipv4::Packet::new_checked_quoted(b).unwrap();
    let total = usize::from(p.total_len()).min(b.len());
    let l4 = &b[p.header_len()..total];
    let len = l4.len() as u16;
    match p.protocol() {
        ipv4::PROTO_TCP => {
            let s = checksum::pseudo_header_v4(p.src(), p.dst(), 6, len);
            checksum::fold(checksum::sum(l4, s)) == 0
        }
        ipv4::PROTO_UDP => {
            let c = u16::from_be_bytes([l4[6], l4[7]]);
            let s = checksum::pseudo_header_v4(p.src(), p.dst(), 17, len);
            c == 0 || checksum::fold(checksum::sum(l4, s)) == 0
        }
        ipv4::PROTO_ICMP => checksum::fold(checksum::sum(l4, 0)) == 0,
        _ => true,
    }
}

/// Whether every checksum of `b` verifies from scratch: the IPv4 header and
/// the L4 checksum; for an ICMP error also the quoted IPv4 header and, when
/// the quote holds the whole original packet, its L4 checksum.
pub fn all_checksums_ok(b: &[u8]) -> bool {
    let p = ipv4::Packet::new_checked(b).unwrap();
    if !p.verify_checksum() || !l4_ok(b) {
        return false;
    }
    if p.protocol() == ipv4::PROTO_ICMP && icmpv4::is_error_type(p.payload()[0]) {
        let q = &p.payload()[8..];
        let qp = ipv4::Packet::new_checked_quoted(q).unwrap();
        if checksum::fold(checksum::sum(qp.header(), 0)) != 0 {
            return false;
        }
        if usize::from(qp.total_len()) == q.len() {
            return l4_ok(q);
        }
    }
    true
}

/// Shuffles `v` the same way every run (xorshift64*: the benches visit
/// their flows in random order without a `rand` dependency).
pub fn shuffle<T>(v: &mut [T]) {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for i in (1..v.len()).rev() {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let j = usize::try_from(x.wrapping_mul(0x2545_f491_4f6c_dd1d) % (i as u64 + 1)).unwrap();
        v.swap(i, j);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_packets_verify_and_read_back() {
        let (a, b) = (ip("10.0.0.1"), ip("192.0.2.7"));
        let t = tcp_packet(a, 1000, b, 80, tcp::SYN, 11);
        assert!(all_checksums_ok(&t));
        assert_eq!(tuple(&t), (a, 1000, b, 80));
        let u = udp_packet(a, 53, b, 5353, 3);
        assert!(all_checksums_ok(&u));
        assert_eq!(
            (src_of(&u), dst_of(&u)),
            (sa("10.0.0.1:53"), sa("192.0.2.7:5353"))
        );
        let e = icmp_echo(a, b, 8, 77, 4);
        assert!(all_checksums_ok(&e));
        assert_eq!(tuple(&e), (a, 77, b, 77));
        let err = icmp_error(b, a, 3, 4, &u, u.len());
        assert!(all_checksums_ok(&err));
        assert_eq!(quoted_tuple(&err), (a, 53, b, 5353));
        assert_eq!(&err[28..], &u[..]);
        let mut bad = t.clone();
        bad[45] ^= 1;
        assert!(!all_checksums_ok(&bad));
    }

    #[test]
    fn shuffle_is_a_fixed_permutation() {
        let mut v: Vec<u32> = (0..100).collect();
        shuffle(&mut v);
        let mut w: Vec<u32> = (0..100).collect();
        shuffle(&mut w);
        assert_eq!(v, w);
        assert_ne!(v, (0..100).collect::<Vec<_>>());
        v.sort_unstable();
        assert_eq!(v, (0..100).collect::<Vec<_>>());
    }
}
