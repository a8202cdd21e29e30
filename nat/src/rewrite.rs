//! In-place translation of an IPv4 packet held in `&mut [u8]` (from its
//! header on): new source and/or destination address and port (or ICMP
//! query identifier), with every checksum updated incrementally (RFC 1624)
//! instead of recomputed, and the translation of an ICMP error's outer
//! header and quoted packet (RFC 5508 section 4.2).
//!
//! Checksums, as Linux's nf_nat keeps them:
//! * the IPv4 header checksum for address changes;
//! * TCP and UDP: the pseudo-header addresses and the ports. A UDP
//!   checksum of 0 (none) stays 0; an update that yields 0 is stored as
//!   0xffff (RFC 768). With [`L4Csum::Partial`] (checksum offload: the
//!   field holds the folded pseudo-header sum, not a checksum) only
//!   address changes touch it, as the uncomplemented sum;
//! * ICMP queries: the identifier (ICMP has no pseudo header);
//! * ICMP errors: the outer IPv4 header, then in the quoted packet its
//!   header checksum, its transport checksum when the quote holds the field
//!   (TCP: 18 bytes, UDP and ICMP: 8; a truncated quote's transport
//!   checksum cannot be verified, but the incremental update is what the
//!   full packet's would be), and every one of those changes in the ICMP
//!   checksum too.
//!
//! A packet is checked before the first byte is written: on error it is
//! left as it was. Nothing here panics, whatever the bytes.

use std::net::{Ipv4Addr, SocketAddrV4};

use geneve::checksum::{update16, update32};
use geneve::{icmpv4, ipv4, tcp, udp};

use crate::packet::{PROTO_ICMP, PROTO_TCP, PROTO_UDP, is_query_type};

/// What the transport checksum field holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum L4Csum {
    /// A finished checksum.
    #[default]
    Complete,
    /// The folded pseudo-header sum, the rest left to the NIC or to the
    /// datapath's software offload (virtio-net `NEEDS_CSUM`, Linux
    /// `CHECKSUM_PARTIAL`). Applies to TCP and UDP only.
    Partial,
}

/// New endpoints for a packet's source and destination (for an ICMP query
/// the port is the identifier; it has one, so when both are given the
/// destination's wins).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Rewrite {
    pub src: Option<SocketAddrV4>,
    pub dst: Option<SocketAddrV4>,
}

/// The translation of an ICMP error: the outer addresses, and the quoted
/// packet's endpoints (ports or ICMP identifier included).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ErrorRewrite {
    pub outer_src: Option<Ipv4Addr>,
    pub outer_dst: Option<Ipv4Addr>,
    pub inner_src: Option<SocketAddrV4>,
    pub inner_dst: Option<SocketAddrV4>,
}

/// A packet's whole translation, as the NAT decides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Translation {
    Packet(Rewrite),
    IcmpError(ErrorRewrite),
}

/// Why a packet cannot be rewritten (it is left unchanged).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum RewriteError {
    #[error("malformed or truncated packet")]
    Malformed,
    #[error("ipv4 fragment")]
    Fragment,
    #[error("protocol {0} has no ports to rewrite")]
    Unsupported(u8),
}

/// Carries out `t` on `pkt`.
#[inline]
pub fn apply(pkt: &mut [u8], t: &Translation, csum: L4Csum) -> Result<(), RewriteError> {
    match t {
        Translation::Packet(rw) => rewrite(pkt, rw, csum),
        Translation::IcmpError(rw) => rewrite_icmp_error(pkt, rw),
    }
}

#[inline(always)]
fn rd16(b: &[u8], at: usize) -> Result<u16, RewriteError> {
    match b.get(at..at + 2) {
        Some(&[x, y]) => Ok(u16::from_be_bytes([x, y])),
        _ => Err(RewriteError::Malformed),
    }
}

#[inline(always)]
fn rd32(b: &[u8], at: usize) -> Result<u32, RewriteError> {
    match b.get(at..at + 4) {
        Some(&[w, x, y, z]) => Ok(u32::from_be_bytes([w, x, y, z])),
        _ => Err(RewriteError::Malformed),
    }
}

#[inline(always)]
fn wr16(b: &mut [u8], at: usize, v: u16) -> Result<(), RewriteError> {
    let f = b.get_mut(at..at + 2).ok_or(RewriteError::Malformed)?;
    f.copy_from_slice(&v.to_be_bytes());
    Ok(())
}

#[inline(always)]
fn wr32(b: &mut [u8], at: usize, v: u32) -> Result<(), RewriteError> {
    let f = b.get_mut(at..at + 4).ok_or(RewriteError::Malformed)?;
    f.copy_from_slice(&v.to_be_bytes());
    Ok(())
}

/// Offsets of the IPv4 header fields.
const IP_CSUM: usize = 10;
const IP_SRC: usize = 12;
const IP_DST: usize = 16;

/// Where the transport fields of a packet are (offsets into the packet).
#[derive(Debug, Clone, Copy)]
struct Ports {
    /// Source and destination port (ICMP: the identifier, twice).
    src: usize,
    dst: usize,
    /// The checksum field; `None` for a UDP checksum of 0 (none).
    csum: Option<usize>,
    /// Whether the pseudo header (the addresses) is in that checksum.
    pseudo: bool,
}

/// The transport fields of a packet of protocol `proto` whose transport
/// header starts at `l4` and runs `len` bytes (checked to hold them).
#[inline(always)]
fn ports(b: &[u8], proto: u8, l4: usize, len: usize) -> Result<Ports, RewriteError> {
    let seg = b.get(l4..l4 + len).ok_or(RewriteError::Malformed)?;
    match proto {
        PROTO_TCP => {
            tcp::Packet::new_checked(seg).map_err(|_| RewriteError::Malformed)?;
            Ok(Ports {
                src: l4,
                dst: l4 + 2,
                csum: Some(l4 + 16),
                pseudo: true,
            })
        }
        PROTO_UDP => {
            let u = udp::Packet::new_checked(seg).map_err(|_| RewriteError::Malformed)?;
            Ok(Ports {
                src: l4,
                dst: l4 + 2,
                csum: (u.checksum() != 0).then_some(l4 + 6),
                pseudo: true,
            })
        }
        PROTO_ICMP => {
            let m = icmpv4::Packet::new_checked(seg).map_err(|_| RewriteError::Malformed)?;
            if !is_query_type(m.msg_type()) {
                return Err(RewriteError::Unsupported(proto));
            }
            Ok(Ports {
                src: l4 + 4,
                dst: l4 + 4,
                csum: Some(l4 + 2),
                pseudo: false,
            })
        }
        _ => Err(RewriteError::Unsupported(proto)),
    }
}

/// Ones-complement sum folded to 16 bits (end-around carries); `x` below
/// 2^48.
#[allow(
    clippy::cast_possible_truncation,
    reason = "three folds leave at most 16 bits"
)]
#[inline(always)]
fn fold16(x: u64) -> u16 {
    let x = (x & 0xffff) + (x >> 16);
    let x = (x & 0xffff) + (x >> 16);
    let x = (x & 0xffff) + (x >> 16);
    x as u16
}

/// The RFC 1624 delta of a 32-bit field changing from `old` to `new`:
/// `~old + new`, word by word, unfolded.
#[inline(always)]
fn delta32(old: u32, new: u32) -> u64 {
    u64::from(!(old >> 16) & 0xffff)
        + u64::from(!old & 0xffff)
        + u64::from(new >> 16)
        + u64::from(new & 0xffff)
}

/// A checksum after changes summing to `delta`: `~(~c + delta)` (RFC 1624
/// equation 3, all changes at once; the same result as one update per
/// word).
#[inline(always)]
fn apply_delta(c: u16, delta: u64) -> u16 {
    !fold16(u64::from(!c) + delta)
}

/// Rewrites `pkt`'s source and/or destination endpoint.
#[inline]
pub fn rewrite(pkt: &mut [u8], rw: &Rewrite, csum: L4Csum) -> Result<(), RewriteError> {
    let (hl, total, proto) = {
        let ip = ipv4::Packet::new_checked(&*pkt).map_err(|_| RewriteError::Malformed)?;
        if ip.more_frags() || ip.frag_offset() != 0 {
            return Err(RewriteError::Fragment);
        }
        (ip.header_len(), usize::from(ip.total_len()), ip.protocol())
    };
    let mut p = ports(pkt, proto, hl, total - hl)?;
    let partial = csum == L4Csum::Partial && proto != PROTO_ICMP;
    if partial {
        // Any value is a sum to update, 0 included.
        p.csum = Some(hl + if proto == PROTO_TCP { 16 } else { 6 });
    }
    // Address changes (IPv4 header and pseudo header) and port changes,
    // summed once, applied to each checksum once.
    let (mut d_addr, mut d_port) = (0u64, 0u64);
    for (new, addr_at, port_at) in [(rw.src, IP_SRC, p.src), (rw.dst, IP_DST, p.dst)] {
        let Some(new) = new else { continue };
        let (old_ip, new_ip) = (rd32(pkt, addr_at)?, u32::from(*new.ip()));
        let (old_port, new_port) = (rd16(pkt, port_at)?, new.port());
        d_addr += delta32(old_ip, new_ip);
        d_port += u64::from(!old_port) + u64::from(new_port);
        wr32(pkt, addr_at, new_ip)?;
        wr16(pkt, port_at, new_port)?;
    }
    wr16(pkt, IP_CSUM, apply_delta(rd16(pkt, IP_CSUM)?, d_addr))?;
    if let Some(at) = p.csum {
        let c = rd16(pkt, at)?;
        let c = if partial {
            // The uncomplemented pseudo-header sum: addresses only.
            !apply_delta(!c, d_addr)
        } else {
            let pseudo = if p.pseudo { d_addr } else { 0 };
            let c = apply_delta(c, pseudo + d_port);
            if proto == PROTO_UDP && c == 0 {
                0xffff
            } else {
                c
            }
        };
        wr16(pkt, at, c)?;
    }
    Ok(())
}

/// Writes 16-bit words inside an ICMP message, keeping its checksum (at
/// `csum`) in step with each.
struct Icmp<'a> {
    b: &'a mut [u8],
    csum: usize,
}

impl Icmp<'_> {
    #[inline(always)]
    fn set16(&mut self, at: usize, new: u16) -> Result<(), RewriteError> {
        let old = rd16(self.b, at)?;
        let c = update16(rd16(self.b, self.csum)?, old, new);
        wr16(self.b, at, new)?;
        wr16(self.b, self.csum, c)
    }

    fn set32(&mut self, at: usize, new: u32) -> Result<(), RewriteError> {
        let [a, b, c, d] = new.to_be_bytes();
        self.set16(at, u16::from_be_bytes([a, b]))?;
        self.set16(at + 2, u16::from_be_bytes([c, d]))
    }
}

/// Translates an ICMP error in place: its outer addresses, and in the
/// quoted packet the source and/or destination endpoint, with all the
/// checksums (see the module docs).
pub fn rewrite_icmp_error(pkt: &mut [u8], rw: &ErrorRewrite) -> Result<(), RewriteError> {
    let (hl, total) = {
        let ip = ipv4::Packet::new_checked(&*pkt).map_err(|_| RewriteError::Malformed)?;
        if ip.more_frags() || ip.frag_offset() != 0 {
            return Err(RewriteError::Fragment);
        }
        if ip.protocol() != PROTO_ICMP {
            return Err(RewriteError::Unsupported(ip.protocol()));
        }
        let m = icmpv4::Packet::new_checked(ip.payload()).map_err(|_| RewriteError::Malformed)?;
        if !icmpv4::is_error_type(m.msg_type()) {
            return Err(RewriteError::Malformed);
        }
        (ip.header_len(), usize::from(ip.total_len()))
    };
    let pkt = pkt.get_mut(..total).ok_or(RewriteError::Malformed)?;
    // The quoted packet: its header (any options) and 8 bytes of transport.
    let q = hl + icmpv4::HEADER_LEN;
    let (qhl, qproto) = {
        let quote = pkt.get(q..).ok_or(RewriteError::Malformed)?;
        let qi = ipv4::Packet::new_checked_quoted(quote).map_err(|_| RewriteError::Malformed)?;
        if qi.frag_offset() != 0 {
            return Err(RewriteError::Fragment);
        }
        (qi.header_len(), qi.protocol())
    };
    let ql4 = q + qhl;
    let qlen = total.checked_sub(ql4).filter(|&n| n >= 8);
    let Some(qlen) = qlen else {
        return Err(RewriteError::Malformed);
    };
    // The quoted transport checksum, when the quote holds it.
    let (qsrc_port, qdst_port, qcsum, qpseudo) = match qproto {
        PROTO_TCP => (ql4, ql4 + 2, (qlen >= 18).then_some(ql4 + 16), true),
        PROTO_UDP => {
            let c = rd16(pkt, ql4 + 6)?;
            (ql4, ql4 + 2, (c != 0).then_some(ql4 + 6), true)
        }
        PROTO_ICMP => {
            let t = pkt.get(ql4).copied().unwrap_or(u8::MAX);
            if !is_query_type(t) {
                return Err(RewriteError::Unsupported(qproto));
            }
            (ql4 + 4, ql4 + 4, Some(ql4 + 2), false)
        }
        other => return Err(RewriteError::Unsupported(other)),
    };
    // Outer header: the IPv4 checksum only (ICMP has no pseudo header).
    let mut ip_csum = rd16(pkt, IP_CSUM)?;
    for (new, at) in [(rw.outer_src, IP_SRC), (rw.outer_dst, IP_DST)] {
        if let Some(new) = new {
            let new = u32::from(new);
            ip_csum = update32(ip_csum, rd32(pkt, at)?, new);
            wr32(pkt, at, new)?;
        }
    }
    wr16(pkt, IP_CSUM, ip_csum)?;
    let mut icmp = Icmp {
        b: pkt,
        csum: hl + 2,
    };
    for (new, addr_at, port_at) in [
        (rw.inner_src, q + IP_SRC, qsrc_port),
        (rw.inner_dst, q + IP_DST, qdst_port),
    ] {
        let Some(new) = new else { continue };
        let (old_ip, new_ip) = (rd32(icmp.b, addr_at)?, u32::from(*new.ip()));
        let (old_port, new_port) = (rd16(icmp.b, port_at)?, new.port());
        let qip_csum = update32(rd16(icmp.b, q + IP_CSUM)?, old_ip, new_ip);
        icmp.set16(q + IP_CSUM, qip_csum)?;
        icmp.set32(addr_at, new_ip)?;
        if let Some(at) = qcsum {
            let mut c = rd16(icmp.b, at)?;
            if qpseudo {
                c = update32(c, old_ip, new_ip);
            }
            c = update16(c, old_port, new_port);
            if qproto == PROTO_UDP && c == 0 {
                c = 0xffff;
            }
            icmp.set16(at, c)?;
        }
        icmp.set16(port_at, new_port)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_packets::*;

    fn ep(s: &str, port: u16) -> Option<SocketAddrV4> {
        Some(SocketAddrV4::new(ip(s), port))
    }

    #[test]
    fn snat_tcp_udp_icmp_keep_checksums() {
        let rw = Rewrite {
            src: ep("203.0.113.7", 40000),
            dst: None,
        };
        for mut p in [
            tcp_packet(ip("10.0.0.1"), 1000, ip("1.1.1.1"), 443, 0x18, 1400),
            udp_packet(ip("10.0.0.1"), 1000, ip("1.1.1.1"), 53, 33),
            icmp_echo(ip("10.0.0.1"), ip("1.1.1.1"), 8, 1000, 56),
        ] {
            rewrite(&mut p, &rw, L4Csum::Complete).unwrap();
            assert_eq!(tuple(&p).0, ip("203.0.113.7"));
            assert_eq!(tuple(&p).1, 40000);
            assert!(all_checksums_ok(&p), "{p:x?}");
        }
    }

    #[test]
    fn dnat_and_both() {
        let mut p = tcp_packet(ip("1.1.1.1"), 443, ip("203.0.113.7"), 40000, 0x12, 0);
        let rw = Rewrite {
            src: ep("203.0.113.8", 5555),
            dst: ep("10.0.0.1", 1000),
        };
        rewrite(&mut p, &rw, L4Csum::Complete).unwrap();
        assert_eq!(tuple(&p), (ip("203.0.113.8"), 5555, ip("10.0.0.1"), 1000));
        assert!(all_checksums_ok(&p));
    }

    #[test]
    fn udp_zero_checksum_stays_zero() {
        let mut p = udp_packet(ip("10.0.0.1"), 1000, ip("1.1.1.1"), 53, 10);
        p[26] = 0;
        p[27] = 0;
        let rw = Rewrite {
            src: ep("203.0.113.7", 40000),
            dst: None,
        };
        rewrite(&mut p, &rw, L4Csum::Complete).unwrap();
        assert_eq!(&p[26..28], &[0, 0]);
        assert!(all_checksums_ok(&p));
    }

    #[test]
    fn udp_result_zero_becomes_ffff() {
        // The one new source port that makes the computed checksum 0.
        let orig = udp_packet(ip("10.0.0.1"), 1000, ip("1.1.1.1"), 53, 2);
        let mut hits = 0;
        for port in 1..=u16::MAX {
            let mut p = orig.clone();
            let rw = Rewrite {
                src: ep("203.0.113.7", port),
                dst: None,
            };
            rewrite(&mut p, &rw, L4Csum::Complete).unwrap();
            assert_ne!(&p[26..28], &[0, 0], "port {port}");
            if p[26..28] == [0xff, 0xff] {
                hits += 1;
                assert!(all_checksums_ok(&p));
            }
        }
        assert_eq!(hits, 1);
    }

    #[test]
    fn partial_checksum_updates_pseudo_sum_only() {
        use geneve::checksum::{fold, pseudo_header_v4};
        let mut p = tcp_packet(ip("10.0.0.1"), 1000, ip("1.1.1.1"), 443, 0x10, 100);
        // As the kernel hands it over with NEEDS_CSUM: the pseudo-header sum.
        let partial = !fold(pseudo_header_v4(ip("10.0.0.1"), ip("1.1.1.1"), 6, 120));
        p[36..38].copy_from_slice(&partial.to_be_bytes());
        let rw = Rewrite {
            src: ep("203.0.113.7", 40000),
            dst: None,
        };
        rewrite(&mut p, &rw, L4Csum::Partial).unwrap();
        let want = !fold(pseudo_header_v4(ip("203.0.113.7"), ip("1.1.1.1"), 6, 120));
        assert_eq!(u16::from_be_bytes([p[36], p[37]]), want);
        assert!(ipv4::Packet::new_checked(&p[..]).unwrap().verify_checksum());
    }

    #[test]
    fn refuses_without_writing() {
        let rw = Rewrite {
            src: ep("203.0.113.7", 40000),
            dst: None,
        };
        let mut p = udp_packet(ip("10.0.0.1"), 1000, ip("1.1.1.1"), 53, 10);
        p[7] = 1; // a non-first fragment
        let before = p.clone();
        assert_eq!(
            rewrite(&mut p, &rw, L4Csum::Complete),
            Err(RewriteError::Fragment)
        );
        assert_eq!(p, before);
        let mut short = udp_packet(ip("10.0.0.1"), 1000, ip("1.1.1.1"), 53, 10);
        short[2..4].copy_from_slice(&25u16.to_be_bytes()); // UDP header cut
        let before = short.clone();
        assert_eq!(
            rewrite(&mut short, &rw, L4Csum::Complete),
            Err(RewriteError::Malformed)
        );
        assert_eq!(short, before);
    }

    #[test]
    fn icmp_error_inbound_translation() {
        // We sent 203.0.113.7:40000 -> 8.8.8.8:53 (translated from 10.0.0.1:1000).
        let sent = udp_packet(ip("203.0.113.7"), 40000, ip("8.8.8.8"), 53, 20);
        for quote in [28, 48] {
            let mut e = icmp_error(ip("192.0.2.1"), ip("203.0.113.7"), 3, 4, &sent, quote);
            let rw = ErrorRewrite {
                outer_dst: Some(ip("10.0.0.1")),
                inner_src: ep("10.0.0.1", 1000),
                ..ErrorRewrite::default()
            };
            rewrite_icmp_error(&mut e, &rw).unwrap();
            assert_eq!(tuple(&e).2, ip("10.0.0.1"));
            assert_eq!(quoted_tuple(&e), (ip("10.0.0.1"), 1000, ip("8.8.8.8"), 53));
            assert!(all_checksums_ok(&e), "quote {quote}");
            if quote == 48 {
                // The whole datagram is quoted: its UDP checksum verifies too,
                // exactly as if the original had been sent untranslated.
                let orig = udp_packet(ip("10.0.0.1"), 1000, ip("8.8.8.8"), 53, 20);
                assert_eq!(&e[28..], &orig[..]);
            }
        }
    }

    #[test]
    fn icmp_error_quoting_tcp_and_echo() {
        let sent = tcp_packet(ip("203.0.113.7"), 40000, ip("8.8.8.8"), 443, 0x02, 0);
        let orig = tcp_packet(ip("10.0.0.1"), 1000, ip("8.8.8.8"), 443, 0x02, 0);
        let rw = ErrorRewrite {
            outer_dst: Some(ip("10.0.0.1")),
            inner_src: ep("10.0.0.1", 1000),
            ..ErrorRewrite::default()
        };
        let mut e = icmp_error(ip("192.0.2.1"), ip("203.0.113.7"), 11, 0, &sent, 40);
        rewrite_icmp_error(&mut e, &rw).unwrap();
        assert_eq!(&e[28..], &orig[..]);
        assert!(all_checksums_ok(&e));
        // 8 bytes of TCP: ports only, the checksum is not in the quote.
        let mut e = icmp_error(ip("192.0.2.1"), ip("203.0.113.7"), 11, 0, &sent, 28);
        rewrite_icmp_error(&mut e, &rw).unwrap();
        assert_eq!(&e[28..48], &orig[..20]);
        assert_eq!(&e[48..56], &orig[20..28]);
        assert!(all_checksums_ok(&e));
        // An echo request quoted: the identifier and the echo checksum.
        let sent = icmp_echo(ip("203.0.113.7"), ip("8.8.8.8"), 8, 40000, 8);
        let orig = icmp_echo(ip("10.0.0.1"), ip("8.8.8.8"), 8, 1000, 8);
        let mut e = icmp_error(ip("192.0.2.1"), ip("203.0.113.7"), 3, 1, &sent, 36);
        rewrite_icmp_error(&mut e, &rw).unwrap();
        assert_eq!(&e[28..], &orig[..]);
        assert!(all_checksums_ok(&e));
    }

    #[test]
    fn icmp_error_outbound_translation() {
        // 8.8.8.8:53 -> 10.0.0.1:1000 (was to 203.0.113.7:40000); 10.0.0.1 answers
        // port unreachable.
        let got = udp_packet(ip("8.8.8.8"), 53, ip("10.0.0.1"), 1000, 20);
        let mut e = icmp_error(ip("10.0.0.1"), ip("8.8.8.8"), 3, 3, &got, 48);
        let rw = ErrorRewrite {
            outer_src: Some(ip("203.0.113.7")),
            inner_dst: ep("203.0.113.7", 40000),
            ..ErrorRewrite::default()
        };
        rewrite_icmp_error(&mut e, &rw).unwrap();
        let seen = udp_packet(ip("8.8.8.8"), 53, ip("203.0.113.7"), 40000, 20);
        assert_eq!(&e[28..], &seen[..]);
        assert_eq!(tuple(&e).0, ip("203.0.113.7"));
        assert!(all_checksums_ok(&e));
    }
}
