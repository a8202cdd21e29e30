//! Reading what the NAT needs from an IPv4 packet ([`parse`]): protocol,
//! addresses, ports (or the ICMP query identifier), TCP flags, and for an
//! ICMP error the tuple of the packet it quotes. Zero-copy over the
//! `geneve` wire views; never panics, whatever the bytes.
//!
//! Fragments are refused ([`ParseError::Fragment`]): a non-first fragment
//! carries no ports, and translating only the first would pass a datagram
//! that cannot be completed. Reassembly, if wanted, belongs before the NAT.

use std::net::Ipv4Addr;

use geneve::{checksum, icmpv4, ipv4, tcp, udp};

/// Protocol numbers the NAT translates.
pub const PROTO_ICMP: u8 = ipv4::PROTO_ICMP;
pub const PROTO_TCP: u8 = ipv4::PROTO_TCP;
pub const PROTO_UDP: u8 = ipv4::PROTO_UDP;

/// A protocol's name in views and reasons: `tcp`, `udp`, `icmp`, else `ip`.
pub fn proto_name(p: u8) -> &'static str {
    match p {
        PROTO_ICMP => "icmp",
        PROTO_TCP => "tcp",
        PROTO_UDP => "udp",
        _ => "ip",
    }
}

/// A flow's addresses and ports as one packet carries them. For an ICMP
/// query both ports are its identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tuple {
    pub proto: u8,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
}

/// What the transport header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum L4 {
    /// TCP with its flags byte.
    Tcp {
        flags: u8,
    },
    Udp,
    /// An ICMP query or reply with an identifier (echo, timestamp,
    /// information, address mask).
    IcmpQuery {
        icmp_type: u8,
    },
    /// An ICMP error (destination unreachable, source quench, redirect,
    /// time exceeded, parameter problem) quoting the packet `inner`, as
    /// that packet was sent (so it travels against the error).
    IcmpError {
        inner: Tuple,
    },
}

/// One packet, read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Parsed {
    pub tuple: Tuple,
    pub l4: L4,
}

/// Why a packet cannot be translated as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum ParseError {
    /// Truncated or inconsistent headers, or an ICMP error whose checksum
    /// or quoted IPv4 header checksum does not verify (RFC 5508 REQ-3).
    #[error("malformed packet")]
    Malformed,
    /// An IPv4 fragment (or an ICMP error quoting a non-first one).
    #[error("ipv4 fragment")]
    Fragment,
    /// A protocol or ICMP type the NAT does not translate.
    #[error("protocol {proto} (icmp type {icmp_type:?}) is not translated")]
    Unsupported { proto: u8, icmp_type: Option<u8> },
}

/// ICMP types that carry an identifier in bytes 4..6: echo reply/request,
/// timestamp, information and address mask, requests and replies.
pub fn is_query_type(t: u8) -> bool {
    matches!(t, 0 | 8 | 13 | 14 | 15 | 16 | 17 | 18)
}

/// ICMP query types that ask (and so may open a session).
pub fn is_request_type(t: u8) -> bool {
    matches!(t, 8 | 13 | 15 | 17)
}

/// Reads `pkt` (an IPv4 packet, from its header on; bytes past the total
/// length are ignored).
#[inline(always)]
pub fn parse(pkt: &[u8]) -> Result<Parsed, ParseError> {
    let ip = ipv4::Packet::new_checked(pkt).map_err(|_| ParseError::Malformed)?;
    if ip.more_frags() || ip.frag_offset() != 0 {
        return Err(ParseError::Fragment);
    }
    let proto = ip.protocol();
    let (src, dst) = (ip.src(), ip.dst());
    let l4 = ip.payload();
    let (sport, dport, l4) = match proto {
        PROTO_TCP => {
            let t = tcp::Packet::new_checked(l4).map_err(|_| ParseError::Malformed)?;
            let flags = t.flags();
            (t.src_port(), t.dst_port(), L4::Tcp { flags })
        }
        PROTO_UDP => {
            let u = udp::Packet::new_checked(l4).map_err(|_| ParseError::Malformed)?;
            (u.src_port(), u.dst_port(), L4::Udp)
        }
        PROTO_ICMP => {
            let m = icmpv4::Packet::new_checked(l4).map_err(|_| ParseError::Malformed)?;
            let t = m.msg_type();
            if is_query_type(t) {
                let id = m.echo_ident();
                (id, id, L4::IcmpQuery { icmp_type: t })
            } else if icmpv4::is_error_type(t) {
                if !m.verify_checksum() {
                    return Err(ParseError::Malformed);
                }
                let inner = quoted(m.data())?;
                (0, 0, L4::IcmpError { inner })
            } else {
                return Err(ParseError::Unsupported {
                    proto,
                    icmp_type: Some(t),
                });
            }
        }
        _ => {
            return Err(ParseError::Unsupported {
                proto,
                icmp_type: None,
            });
        }
    };
    Ok(Parsed {
        tuple: Tuple {
            proto,
            src,
            dst,
            sport,
            dport,
        },
        l4,
    })
}

/// The tuple of the packet quoted in an ICMP error: its IPv4 header (checksum
/// verified) and at least the first 8 bytes of its transport header.
#[inline(never)]
pub fn quoted(data: &[u8]) -> Result<Tuple, ParseError> {
    let ip = ipv4::Packet::new_checked_quoted(data).map_err(|_| ParseError::Malformed)?;
    if checksum::fold(checksum::sum(ip.header(), 0)) != 0 {
        return Err(ParseError::Malformed);
    }
    if ip.frag_offset() != 0 {
        return Err(ParseError::Fragment);
    }
    let proto = ip.protocol();
    let l4 = ip.quoted_payload();
    let be16 = |at: usize| l4.get(at..at + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    if l4.len() < 8 {
        return Err(ParseError::Malformed);
    }
    let (sport, dport) = match proto {
        PROTO_TCP | PROTO_UDP => (be16(0), be16(2)),
        PROTO_ICMP => {
            let t = l4.first().copied().unwrap_or(u8::MAX);
            if !is_query_type(t) {
                // An error about an error is never sent (RFC 1122 3.2.2).
                return Err(ParseError::Unsupported {
                    proto,
                    icmp_type: Some(t),
                });
            }
            (be16(4), be16(4))
        }
        _ => {
            return Err(ParseError::Unsupported {
                proto,
                icmp_type: None,
            });
        }
    };
    let (Some(sport), Some(dport)) = (sport, dport) else {
        return Err(ParseError::Malformed);
    };
    Ok(Tuple {
        proto,
        src: ip.src(),
        dst: ip.dst(),
        sport,
        dport,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_packets::*;

    #[test]
    fn reads_tcp_udp_icmp() {
        let p = tcp_packet(ip("10.0.0.1"), 1000, ip("1.1.1.1"), 443, 0x02, 0);
        let r = parse(&p).unwrap();
        assert_eq!(r.tuple.sport, 1000);
        assert_eq!(r.tuple.dport, 443);
        assert_eq!(r.l4, L4::Tcp { flags: 0x02 });
        let p = udp_packet(ip("10.0.0.1"), 53, ip("1.1.1.1"), 5353, 10);
        assert_eq!(parse(&p).unwrap().l4, L4::Udp);
        let p = icmp_echo(ip("10.0.0.1"), ip("1.1.1.1"), 8, 77, 4);
        let r = parse(&p).unwrap();
        assert_eq!((r.tuple.sport, r.tuple.dport), (77, 77));
        assert_eq!(r.l4, L4::IcmpQuery { icmp_type: 8 });
    }

    #[test]
    fn reads_icmp_error_quote() {
        let orig = udp_packet(ip("203.0.113.1"), 4000, ip("8.8.8.8"), 53, 100);
        let e = icmp_error(ip("192.0.2.1"), ip("203.0.113.1"), 3, 4, &orig, 28);
        let r = parse(&e).unwrap();
        let L4::IcmpError { inner } = r.l4 else {
            panic!("not an error: {r:?}")
        };
        assert_eq!(inner.src, ip("203.0.113.1"));
        assert_eq!((inner.sport, inner.dport), (4000, 53));
        // A bad ICMP checksum or quoted header checksum is malformed.
        let mut bad = e.clone();
        bad[22] ^= 1;
        assert_eq!(parse(&bad), Err(ParseError::Malformed));
        let mut bad = e.clone();
        // Quoted header checksum (the ICMP checksum refilled: only the quote is wrong).
        bad[28 + 10] ^= 0x10;
        refill_icmp(&mut bad);
        assert_eq!(parse(&bad), Err(ParseError::Malformed));
        // An error about an error is not translated.
        let err2 = icmp_error(ip("192.0.2.1"), ip("203.0.113.1"), 11, 0, &e, 36);
        assert!(matches!(
            parse(&err2),
            Err(ParseError::Unsupported { proto: 1, .. })
        ));
    }

    #[test]
    fn refuses_fragments_and_others() {
        let mut p = udp_packet(ip("10.0.0.1"), 53, ip("1.1.1.1"), 5353, 10);
        p[6] = 0x20; // MF
        assert_eq!(parse(&p), Err(ParseError::Fragment));
        p[6] = 0x00;
        p[7] = 0x10; // offset
        assert_eq!(parse(&p), Err(ParseError::Fragment));
        let mut p = udp_packet(ip("10.0.0.1"), 53, ip("1.1.1.1"), 5353, 10);
        p[9] = 47; // GRE
        assert!(matches!(
            parse(&p),
            Err(ParseError::Unsupported { proto: 47, .. })
        ));
        assert_eq!(parse(&p[..10]), Err(ParseError::Malformed));
    }
}
