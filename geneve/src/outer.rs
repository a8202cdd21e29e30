//! Emit of the outer IPv4 + UDP + Geneve (+ VMware option) headers in front
//! of an inner Ethernet frame already placed in the buffer, and the flow
//! hash used as the outer UDP source port.

use core::net::Ipv4Addr;

use crate::geneve::{self, ENCAP_HEADER_LEN, GENEVE_PORT};
use crate::{ethernet, ipv4, udp};

/// Bytes of outer headers in front of the inner Ethernet frame: IPv4 20 +
/// UDP 8 + Geneve 8 + VMware option 8 = 44. The one definition of the
/// encapsulation overhead; everything else derives from it.
pub const OVERHEAD: usize = ipv4::MIN_HEADER_LEN + udp::HEADER_LEN + ENCAP_HEADER_LEN;
/// What the overlay costs of the underlay MTU: [`OVERHEAD`] plus the inner
/// Ethernet header 14 = 58 (the overlay MTU is the underlay MTU - 58:
/// 1500 -> 1442, 9001 -> 8943). The MTU counts the IPv4 packet, so the
/// inner frame's Ethernet header is overhead too.
pub const MTU_OVERHEAD: usize = OVERHEAD + ethernet::HEADER_LEN;
/// TTL of the outer IPv4 header.
pub const OUTER_TTL: u8 = 64;
/// Lowest outer UDP source port chosen by [`flow_src_port`].
pub const SRC_PORT_MIN: u16 = 49152;

const UDP_START: usize = ipv4::MIN_HEADER_LEN;
/// Offset of the Geneve header (the outer UDP payload) in an outer packet:
/// IPv4 20 + UDP 8 = 28.
pub const GENEVE_START: usize = UDP_START + udp::HEADER_LEN;

/// Errors of [`emit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// `buf` cannot hold `OVERHEAD + inner_len` bytes.
    #[error("buffer too short: need {need}, have {have}")]
    BufferTooShort {
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// The outer IPv4 packet would exceed 65535 bytes.
    #[error("encapsulated packet of {0} bytes exceeds 65535")]
    TooLong(usize),
    /// VNI or tep id out of range.
    #[error(transparent)]
    Geneve(#[from] geneve::Error),
}

/// Parameters of the outer headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encap {
    /// Outer source address (our underlay IP).
    pub src: Ipv4Addr,
    /// Outer destination address (the remote TEP's underlay IP).
    pub dst: Ipv4Addr,
    /// Outer UDP source port (see [`flow_src_port`]).
    pub src_port: u16,
    /// Virtual network identifier (24 bits).
    pub vni: u32,
    /// Our tunnel endpoint id for the VMware option (31 bits).
    pub tep_id: u32,
}

/// Writes outer IPv4 + UDP + Geneve + VMware option into `buf[..OVERHEAD]`
/// in front of the inner Ethernet frame already at
/// `buf[OVERHEAD..OVERHEAD + inner_len]`. Returns `OVERHEAD + inner_len`.
///
/// IPv4: version 4, IHL 5, TOS 0, ident 0, DF, TTL 64, protocol UDP,
/// checksum filled. UDP: `encap.src_port` to 6081, checksum computed over
/// the pseudo header and the whole datagram (0 stored as 0xffff).
pub fn emit(buf: &mut [u8], encap: &Encap, inner_len: usize) -> Result<usize, Error> {
    emit_with(buf, encap, inner_len, true)
}

/// Like [`emit`] but leaves the UDP checksum 0: for a sender that hands
/// `buf[UDP payload..]` to a kernel UDP socket, which builds the outer
/// IPv4/UDP headers itself and checksums (or offloads) the datagram.
/// The headers are still written, so the packet stays inspectable.
pub fn emit_for_udp_socket(
    buf: &mut [u8],
    encap: &Encap,
    inner_len: usize,
) -> Result<usize, Error> {
    emit_with(buf, encap, inner_len, false)
}

fn emit_with(
    buf: &mut [u8],
    encap: &Encap,
    inner_len: usize,
    udp_csum: bool,
) -> Result<usize, Error> {
    let total = inner_len
        .checked_add(OVERHEAD)
        .ok_or(Error::TooLong(usize::MAX))?;
    if total > ipv4::MAX_TOTAL_LEN {
        return Err(Error::TooLong(total));
    }
    let have = buf.len();
    let Some(pkt) = buf.get_mut(..total) else {
        return Err(Error::BufferTooShort { need: total, have });
    };
    geneve::emit_vmware(&mut pkt[GENEVE_START..], encap.vni, encap.tep_id)?;
    let udp_len = total - UDP_START;
    // Lengths were checked above, so these cannot fail; map defensively.
    udp::emit_header(
        &mut pkt[UDP_START..],
        encap.src_port,
        GENEVE_PORT,
        udp_len - udp::HEADER_LEN,
    )
    .map_err(|_| Error::TooLong(total))?;
    if udp_csum {
        udp::Packet::new_unchecked(&mut pkt[UDP_START..]).fill_checksum_v4(encap.src, encap.dst);
    }
    ipv4::emit_header(
        pkt,
        encap.src,
        encap.dst,
        ipv4::PROTO_UDP,
        udp_len,
        OUTER_TTL,
        true,
        0,
    )
    .map_err(|_| Error::TooLong(total))?;
    debug_assert_eq!(GENEVE_START + ENCAP_HEADER_LEN, OVERHEAD);
    Ok(total)
}

const FNV_OFFSET: u32 = 0x811c_9dc5;
const FNV_PRIME: u32 = 0x0100_0193;

fn fnv1a(mut h: u32, bytes: &[u8]) -> u32 {
    for &b in bytes {
        h ^= u32::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// Stable hash of the inner flow mapped into `49152..=65535`, for the outer
/// UDP source port (so underlay ECMP spreads flows but keeps each in order).
///
/// For IPv4: source/destination address and protocol, plus the ports for
/// TCP/UDP first fragments (later fragments hash without ports). Otherwise
/// (or if the IPv4 header is unusable) the Ethernet destination, source and
/// EtherType, as far as present. FNV-1a: deterministic across processes.
/// Never panics.
#[must_use]
pub fn flow_src_port(inner_frame: &[u8]) -> u16 {
    let h = ipv4_flow_hash(inner_frame).unwrap_or_else(|| {
        fnv1a(
            FNV_OFFSET,
            inner_frame
                .get(..ethernet::HEADER_LEN)
                .unwrap_or(inner_frame),
        )
    });
    let folded = (h ^ (h >> 16)) & 0x3fff;
    SRC_PORT_MIN | folded as u16
}

fn ipv4_flow_hash(frame: &[u8]) -> Option<u32> {
    let eth = ethernet::Frame::new_checked(frame).ok()?;
    if eth.ethertype() != ethernet::ETHERTYPE_IPV4 {
        return None;
    }
    let ip = eth.payload();
    let hdr = ip.get(..ipv4::MIN_HEADER_LEN)?;
    if hdr[0] >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(hdr[0] & 0x0f) * 4;
    let proto = hdr[9];
    let frag_offset = u16::from_be_bytes([hdr[6], hdr[7]]) & 0x1fff;
    let mut h = fnv1a(FNV_OFFSET, &hdr[12..20]);
    h = fnv1a(h, &[proto]);
    let has_ports = (proto == ipv4::PROTO_TCP || proto == ipv4::PROTO_UDP) && frag_offset == 0;
    if has_ports
        && ihl >= ipv4::MIN_HEADER_LEN
        && let Some(ports) = ip.get(ihl..ihl + 4)
    {
        h = fnv1a(h, ports);
    }
    Some(h)
}
