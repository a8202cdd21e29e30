//! Parsing an Ethernet frame down to what the firewall decides on: the L2
//! header, and for IPv4 the [`Tuple`] and [`L4`] details (TCP flags and
//! sequence numbers, ICMP type and the tuple quoted in an ICMP error).
//! Frames the firewall must always let through (ARP, DHCP, IPv6 neighbour
//! discovery) are recognised here as [`Class::Management`]. Zero-copy over
//! the caller's buffer; never panics.

use std::net::Ipv4Addr;

use geneve::ethernet::{self, ETHERTYPE_IPV4};
use geneve::ipv4;
use geneve::tcp::{self, TcpOption};

use crate::flow::{L4, TcpMeta, Tuple};

pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;

/// A parsed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub ethertype: u16,
    pub class: Class,
}

/// What kind of traffic a frame is, for the firewall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// ARP, DHCPv4/v6, IPv6 neighbour/router discovery: never filtered.
    Management,
    /// An IPv4 packet with its tuple and L4 details.
    Ipv4(Ipv4Info),
    /// A non-first IPv4 fragment (no L4 header to match on).
    Fragment,
    /// Any other frame (IPv6 beyond discovery, other ethertypes): L2 rules only.
    Other,
}

/// The IPv4 part of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Info {
    pub tuple: Tuple,
    pub l4: L4,
    /// IPv4 total length (bytes counted against rules and flows).
    pub len: u16,
}

impl Packet {
    /// The ICMP (type, code) of an ICMP packet, for rules with `icmptype`.
    pub fn icmp(&self) -> Option<(u8, u8)> {
        match &self.class {
            Class::Ipv4(info) => info.icmp(),
            _ => None,
        }
    }
}

impl Ipv4Info {
    /// The ICMP (type, code) of an ICMP packet, for rules with `icmptype`.
    #[inline]
    pub fn icmp(&self) -> Option<(u8, u8)> {
        match self.l4 {
            L4::IcmpQuery { ty, code } | L4::IcmpError { ty, code, .. } => Some((ty, code)),
            _ => None,
        }
    }
}

/// Why a frame could not be parsed (a counted drop).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("frame shorter than an Ethernet header")]
    Ethernet,
    #[error("malformed IPv4 header")]
    Ipv4,
    #[error("truncated or malformed L4 header")]
    L4,
}

/// Parses `frame` (Ethernet II).
pub fn parse(frame: &[u8]) -> Result<Packet, ParseError> {
    let eth = ethernet::Frame::new_checked(frame).map_err(|_| ParseError::Ethernet)?;
    let ethertype = eth.ethertype();
    let class = match ethertype {
        ETHERTYPE_IPV4 => parse_ipv4(eth.payload())?,
        ETHERTYPE_ARP => Class::Management,
        ETHERTYPE_IPV6 => classify_ipv6(eth.payload()),
        _ => Class::Other,
    };
    Ok(packet(&eth, ethertype, class))
}

/// The firewall's view of a frame whose Ethernet header, and IPv4 header
/// when `ethertype` is IPv4, the caller has already checked (`ip`: the
/// IPv4 view, `None` when the frame is not IPv4): the pipeline's entry
/// reads the headers once and hands them here, so the frame is parsed
/// once. Equal to [`parse`] of the same frame.
pub fn from_checked(
    eth: &ethernet::Frame<&[u8]>,
    ip: Option<&ipv4::Packet<&[u8]>>,
) -> Result<Packet, ParseError> {
    let ethertype = eth.ethertype();
    let class = match (ethertype, ip) {
        (ETHERTYPE_IPV4, Some(ip)) => ipv4_class(ip)?,
        (ETHERTYPE_IPV4, None) => parse_ipv4(eth.payload())?,
        (ETHERTYPE_ARP, _) => Class::Management,
        (ETHERTYPE_IPV6, _) => classify_ipv6(eth.payload()),
        _ => Class::Other,
    };
    Ok(packet(eth, ethertype, class))
}

/// The parsed frame, from its Ethernet header and class.
#[inline(always)]
fn packet(eth: &ethernet::Frame<&[u8]>, ethertype: u16, class: Class) -> Packet {
    Packet {
        src_mac: eth.src(),
        dst_mac: eth.dst(),
        ethertype,
        class,
    }
}

fn parse_ipv4(l3: &[u8]) -> Result<Class, ParseError> {
    let ip = ipv4::Packet::new_checked(l3).map_err(|_| ParseError::Ipv4)?;
    ipv4_class(&ip)
}

/// The class of a checked IPv4 packet (inlined into both entries, so
/// [`parse`] stays one straight function).
#[inline(always)]
fn ipv4_class(ip: &ipv4::Packet<&[u8]>) -> Result<Class, ParseError> {
    if ip.frag_offset() != 0 {
        return Ok(Class::Fragment);
    }
    let proto = ip.protocol();
    let (src, dst) = (ip.src(), ip.dst());
    let l4 = ip.payload();
    let mut tuple = Tuple {
        proto,
        src,
        dst,
        sport: 0,
        dport: 0,
    };
    let l4_meta = match proto {
        ipv4::PROTO_TCP => {
            let (sport, dport, meta) = parse_tcp(l4)?;
            tuple.sport = sport;
            tuple.dport = dport;
            L4::Tcp(meta)
        }
        ipv4::PROTO_UDP => {
            let (sport, dport) = ports(l4)?;
            if is_dhcp(sport, dport) {
                return Ok(Class::Management);
            }
            tuple.sport = sport;
            tuple.dport = dport;
            L4::Udp
        }
        ipv4::PROTO_ICMP => parse_icmp(l4, &mut tuple)?,
        _ => L4::Other,
    };
    Ok(Class::Ipv4(Ipv4Info {
        tuple,
        l4: l4_meta,
        len: ip.total_len(),
    }))
}

fn ports(l4: &[u8]) -> Result<(u16, u16), ParseError> {
    match l4.get(..4) {
        Some(b) => Ok((
            u16::from_be_bytes([b[0], b[1]]),
            u16::from_be_bytes([b[2], b[3]]),
        )),
        None => Err(ParseError::L4),
    }
}

/// DHCPv4 client/server traffic (67 <-> 68).
fn is_dhcp(sport: u16, dport: u16) -> bool {
    matches!((sport, dport), (68, 67) | (67, 68))
}

fn parse_tcp(seg: &[u8]) -> Result<(u16, u16, TcpMeta), ParseError> {
    let t = tcp::Packet::new_checked(seg).map_err(|_| ParseError::L4)?;
    let flags = t.flags();
    let wscale = if flags & TcpMeta::SYN != 0 {
        window_scale(t.options())
    } else {
        None
    };
    let meta = TcpMeta {
        flags,
        seq: t.seq_number(),
        ack: t.ack_number(),
        window: t.window(),
        wscale,
        payload_len: u32::try_from(t.payload().len()).unwrap_or(u32::MAX),
    };
    Ok((t.src_port(), t.dst_port(), meta))
}

/// The window-scale option of a SYN's options, if present (capped at 14,
/// RFC 7323). A malformed option list ends the search; a window-scale
/// option of the wrong length is passed over, as Linux does.
fn window_scale(mut opts: tcp::Options<'_>) -> Option<u8> {
    opts.find_map(|o| match o {
        Ok(TcpOption::WindowScale(shift)) => Some(shift.min(14)),
        _ => None,
    })
}

fn parse_icmp(l4: &[u8], tuple: &mut Tuple) -> Result<L4, ParseError> {
    let hdr = l4.get(..8).ok_or(ParseError::L4)?;
    let (ty, code) = (hdr[0], hdr[1]);
    if geneve::icmpv4::is_error_type(ty) {
        let inner = quoted_tuple(&l4[8..]).ok_or(ParseError::L4)?;
        return Ok(L4::IcmpError { ty, code, inner });
    }
    let ident = u16::from_be_bytes([hdr[4], hdr[5]]);
    tuple.sport = ident;
    tuple.dport = ident;
    Ok(L4::IcmpQuery { ty, code })
}

/// The tuple of the datagram quoted in an ICMP error (its IPv4 header and
/// at least the first 8 bytes of its payload).
fn quoted_tuple(q: &[u8]) -> Option<Tuple> {
    let first = *q.first()?;
    let ihl = usize::from(first & 0x0f) * 4;
    if first >> 4 != 4 || ihl < ipv4::MIN_HEADER_LEN {
        return None;
    }
    let hdr = q.get(..ihl)?;
    let proto = hdr[9];
    let src = Ipv4Addr::new(hdr[12], hdr[13], hdr[14], hdr[15]);
    let dst = Ipv4Addr::new(hdr[16], hdr[17], hdr[18], hdr[19]);
    let l4 = q.get(ihl..)?;
    let (sport, dport) = match proto {
        ipv4::PROTO_TCP | ipv4::PROTO_UDP => ports(l4).ok()?,
        ipv4::PROTO_ICMP => {
            let h = l4.get(..8)?;
            if geneve::icmpv4::is_error_type(h[0]) {
                return None;
            }
            let ident = u16::from_be_bytes([h[4], h[5]]);
            (ident, ident)
        }
        _ => (0, 0),
    };
    Some(Tuple {
        proto,
        src,
        dst,
        sport,
        dport,
    })
}

/// IPv6: neighbour/router discovery (ICMPv6 133..=137) and DHCPv6
/// (546 <-> 547) are management; everything else is `Other`. Only a
/// directly following ICMPv6/UDP header is recognised (no extension
/// headers), which is how discovery and DHCPv6 are sent.
fn classify_ipv6(l3: &[u8]) -> Class {
    const ICMPV6: u8 = 58;
    let Some(next) = l3.get(6).copied() else {
        return Class::Other;
    };
    let Some(l4) = l3.get(40..) else {
        return Class::Other;
    };
    match next {
        ICMPV6 if l4.first().is_some_and(|t| (133..=137).contains(t)) => Class::Management,
        ipv4::PROTO_UDP => match ports(l4) {
            Ok((546, 547) | (547, 546)) => Class::Management,
            _ => Class::Other,
        },
        _ => Class::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eth(ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 14];
        f[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        f[12..14].copy_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn ipv4(proto: u8, l4: &[u8]) -> Vec<u8> {
        let mut h = vec![0u8; 20];
        h[0] = 0x45;
        let total = u16::try_from(20 + l4.len()).unwrap();
        h[2..4].copy_from_slice(&total.to_be_bytes());
        h[8] = 64;
        h[9] = proto;
        h[12..16].copy_from_slice(&[10, 0, 0, 1]);
        h[16..20].copy_from_slice(&[10, 0, 0, 2]);
        h.extend_from_slice(l4);
        h
    }

    #[test]
    fn tcp_syn_with_window_scale() {
        let mut tcp = vec![0u8; 24];
        tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
        tcp[2..4].copy_from_slice(&22u16.to_be_bytes());
        tcp[4..8].copy_from_slice(&1000u32.to_be_bytes());
        tcp[12] = 6 << 4;
        tcp[13] = TcpMeta::SYN;
        tcp[14..16].copy_from_slice(&64240u16.to_be_bytes());
        tcp[20..24].copy_from_slice(&[1, 3, 3, 7]);
        let p = parse(&eth(ETHERTYPE_IPV4, &ipv4(6, &tcp))).unwrap();
        let Class::Ipv4(info) = p.class else {
            panic!("{p:?}")
        };
        assert_eq!((info.tuple.sport, info.tuple.dport), (40000, 22));
        let L4::Tcp(m) = info.l4 else { panic!() };
        assert_eq!((m.seq, m.wscale, m.payload_len), (1000, Some(7), 0));
    }

    #[test]
    fn window_scale_edge_cases() {
        let ws = |opts: &[u8]| window_scale(tcp::Options::new(opts));
        assert_eq!(ws(&[1, 3, 3, 7]), Some(7));
        // Capped at 14 (RFC 7323).
        assert_eq!(ws(&[3, 3, 15, 0]), Some(14));
        // A window scale of the wrong length is passed over.
        assert_eq!(ws(&[3, 4, 9, 9, 3, 3, 5, 0]), Some(5));
        // End of list ends the search.
        assert_eq!(ws(&[0, 3, 3, 7]), None);
        // A malformed option (length 1, or past the end) ends it too.
        assert_eq!(ws(&[8, 1, 3, 3, 7]), None);
        assert_eq!(ws(&[8, 10, 3, 3, 7]), None);
        assert_eq!(ws(&[2]), None);
    }

    #[test]
    fn icmp_error_quotes_inner_tuple() {
        let mut udp = vec![0u8; 8];
        udp[0..2].copy_from_slice(&5000u16.to_be_bytes());
        udp[2..4].copy_from_slice(&53u16.to_be_bytes());
        let inner = ipv4(17, &udp);
        let mut icmp = vec![3, 3, 0, 0, 0, 0, 0, 0];
        icmp.extend_from_slice(&inner);
        let p = parse(&eth(ETHERTYPE_IPV4, &ipv4(1, &icmp))).unwrap();
        let Class::Ipv4(Ipv4Info {
            l4: L4::IcmpError { ty, inner, .. },
            ..
        }) = p.class
        else {
            panic!("{p:?}")
        };
        assert_eq!(
            (ty, inner.sport, inner.dport, inner.proto),
            (3, 5000, 53, 17)
        );
    }

    #[test]
    fn management_and_garbage() {
        let arp = eth(ETHERTYPE_ARP, &[0; 28]);
        assert_eq!(parse(&arp).unwrap().class, Class::Management);
        let mut dhcp = vec![0u8; 8];
        dhcp[0..2].copy_from_slice(&68u16.to_be_bytes());
        dhcp[2..4].copy_from_slice(&67u16.to_be_bytes());
        let f = eth(ETHERTYPE_IPV4, &ipv4(17, &dhcp));
        assert_eq!(parse(&f).unwrap().class, Class::Management);
        let mut ns = vec![0u8; 40];
        ns[6] = 58;
        ns.push(135);
        assert_eq!(
            parse(&eth(ETHERTYPE_IPV6, &ns)).unwrap().class,
            Class::Management
        );
        assert_eq!(parse(&[0u8; 5]), Err(ParseError::Ethernet));
        // TCP header claiming more options than present.
        let mut tcp = vec![0u8; 20];
        tcp[12] = 15 << 4;
        assert_eq!(
            parse(&eth(ETHERTYPE_IPV4, &ipv4(6, &tcp))),
            Err(ParseError::L4)
        );
        // Every truncation of a valid frame parses or errors, never panics.
        let f = eth(ETHERTYPE_IPV4, &ipv4(1, &[3, 3, 0, 0, 0, 0, 0, 0, 0x45]));
        for n in 0..f.len() {
            let _ = parse(&f[..n]);
        }
    }
}
