//! Building the answer to a rejected packet, addressed back to its sender:
//! a TCP RST for TCP (RFC 9293 §3.10.7.1: from the segment's ACK, or
//! RST+ACK acknowledging it), an ICMP destination unreachable (port
//! unreachable for UDP, administratively prohibited otherwise) for the
//! rest. MACs and addresses are the offending frame's, swapped, so the
//! answer looks as if the destination itself refused. Writes into the
//! caller's buffer; never allocates or panics.

use geneve::checksum;
use geneve::ethernet::{self, ETHERTYPE_IPV4};
use geneve::icmpv4;
use geneve::ipv4;

use crate::flow::TcpMeta;

/// ICMP destination unreachable.
const ICMP_UNREACHABLE: u8 = 3;
/// Code: port unreachable.
pub const CODE_PORT_UNREACHABLE: u8 = 3;
/// Code: communication administratively prohibited (RFC 1812).
pub const CODE_ADMIN_PROHIBITED: u8 = 13;

const TCP_HEADER_LEN: usize = 20;
const RST_FRAME_LEN: usize = ethernet::HEADER_LEN + ipv4::MIN_HEADER_LEN + TCP_HEADER_LEN;
/// TTL of the answers (what a Linux host uses).
const ANSWER_TTL: u8 = 64;

/// What to send back for a rejected packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectKind {
    TcpRst,
    /// ICMP destination unreachable with this code.
    IcmpUnreachable(u8),
}

/// Why no answer was built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RejectError {
    #[error("offending frame is not a complete IPv4 packet")]
    NotIpv4,
    #[error("offending TCP segment is a RST or truncated")]
    NoAnswerToRst,
    #[error("ICMP answer refused: {0}")]
    Icmp(#[from] icmpv4::Error),
    #[error("buffer too short")]
    Buffer,
}

/// Writes the answer to `offending` (an Ethernet + IPv4 frame) into `out`
/// and returns its length.
pub fn build(kind: RejectKind, offending: &[u8], out: &mut [u8]) -> Result<usize, RejectError> {
    let eth = ethernet::Frame::new_checked(offending).map_err(|_| RejectError::NotIpv4)?;
    if eth.ethertype() != ETHERTYPE_IPV4 {
        return Err(RejectError::NotIpv4);
    }
    let ip = ipv4::Packet::new_checked(eth.payload()).map_err(|_| RejectError::NotIpv4)?;
    match kind {
        RejectKind::IcmpUnreachable(code) => Ok(icmpv4::emit_error_frame(
            out,
            offending,
            eth.dst(),
            ip.dst(),
            ICMP_UNREACHABLE,
            code,
            0,
        )?),
        RejectKind::TcpRst => {
            if ethernet::is_multicast(&eth.dst()) || ethernet::is_multicast(&eth.src()) {
                return Err(RejectError::NotIpv4);
            }
            let seg = ip.payload();
            let hdr = seg
                .get(..TCP_HEADER_LEN)
                .ok_or(RejectError::NoAnswerToRst)?;
            let flags = hdr[13];
            if flags & TcpMeta::RST != 0 {
                return Err(RejectError::NoAnswerToRst);
            }
            let doff = usize::from(hdr[12] >> 4) * 4;
            let payload = seg.len().saturating_sub(doff);
            let seq = u32::from_be_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]);
            let ack = u32::from_be_bytes([hdr[8], hdr[9], hdr[10], hdr[11]]);
            // RFC 9293: if the segment has ACK, RST with seq = SEG.ACK;
            // otherwise RST+ACK with seq 0, ack = SEG.SEQ + SEG.LEN.
            let (rst_seq, rst_ack, rst_flags) = if flags & TcpMeta::ACK != 0 {
                (ack, 0, TcpMeta::RST)
            } else {
                let syn_fin =
                    u32::from(flags & TcpMeta::SYN != 0) + u32::from(flags & TcpMeta::FIN != 0);
                let len = u32::try_from(payload).unwrap_or(u32::MAX);
                (
                    0,
                    seq.wrapping_add(len).wrapping_add(syn_fin),
                    TcpMeta::RST | TcpMeta::ACK,
                )
            };
            let frame = out.get_mut(..RST_FRAME_LEN).ok_or(RejectError::Buffer)?;
            // Ethernet: back to the sender.
            frame[0..6].copy_from_slice(&eth.src());
            frame[6..12].copy_from_slice(&eth.dst());
            frame[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
            let (src, dst) = (ip.dst(), ip.src());
            let l3 = &mut frame[ethernet::HEADER_LEN..];
            ipv4::emit_header(
                &mut l3[..ipv4::MIN_HEADER_LEN],
                src,
                dst,
                ipv4::PROTO_TCP,
                TCP_HEADER_LEN,
                ANSWER_TTL,
                true,
                0,
            )
            .map_err(|_| RejectError::Buffer)?;
            let tcp = &mut l3[ipv4::MIN_HEADER_LEN..];
            tcp[0..2].copy_from_slice(&hdr[2..4]);
            tcp[2..4].copy_from_slice(&hdr[0..2]);
            tcp[4..8].copy_from_slice(&rst_seq.to_be_bytes());
            tcp[8..12].copy_from_slice(&rst_ack.to_be_bytes());
            tcp[12] = 5 << 4;
            tcp[13] = rst_flags;
            tcp[14..20].fill(0);
            let sum = checksum::sum(
                tcp,
                checksum::pseudo_header_v4(src, dst, ipv4::PROTO_TCP, TCP_HEADER_LEN as u16),
            );
            tcp[16..18].copy_from_slice(&checksum::fold(sum).to_be_bytes());
            Ok(RST_FRAME_LEN)
        }
    }
}
