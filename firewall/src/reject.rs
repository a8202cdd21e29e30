//! Building the answer to a rejected packet, addressed back to its sender:
//! a TCP RST for TCP (RFC 9293 §3.10.7.1: from the segment's ACK, or
//! RST+ACK acknowledging it), an ICMP destination unreachable (port
//! unreachable for UDP, administratively prohibited otherwise) for the
//! rest. MACs and addresses are the offending frame's, swapped, so the
//! answer looks as if the destination itself refused. Writes into the
//! caller's buffer; never allocates or panics.

use geneve::ethernet::{self, ETHERTYPE_IPV4};
use geneve::icmpv4;
use geneve::ipv4;
use geneve::tcp;

use crate::flow::TcpMeta;

/// ICMP destination unreachable.
const ICMP_UNREACHABLE: u8 = 3;
/// Code: port unreachable.
pub const CODE_PORT_UNREACHABLE: u8 = 3;
/// Code: communication administratively prohibited (RFC 1812).
pub const CODE_ADMIN_PROHIBITED: u8 = 13;

const RST_FRAME_LEN: usize = ethernet::HEADER_LEN + ipv4::MIN_HEADER_LEN + tcp::HEADER_LEN;
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
    #[error("offending TCP segment is a RST, truncated or malformed")]
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
            // The firewall only rejects segments it parsed, so a bad data
            // offset does not reach here from the pipeline.
            let seg =
                tcp::Packet::new_checked(ip.payload()).map_err(|_| RejectError::NoAnswerToRst)?;
            let flags = seg.flags();
            if flags & TcpMeta::RST != 0 {
                return Err(RejectError::NoAnswerToRst);
            }
            let payload = seg.payload().len();
            let (seq, ack) = (seg.seq_number(), seg.ack_number());
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
                tcp::HEADER_LEN,
                ANSWER_TTL,
                true,
                0,
            )
            .map_err(|_| RejectError::Buffer)?;
            let rst = tcp::Repr {
                src_port: seg.dst_port(),
                dst_port: seg.src_port(),
                seq_number: rst_seq,
                ack_number: rst_ack,
                flags: rst_flags,
                window: 0,
                urgent: 0,
                options: &[],
            };
            let l4 = &mut l3[ipv4::MIN_HEADER_LEN..];
            rst.emit(l4).map_err(|_| RejectError::Buffer)?;
            tcp::Packet::new_unchecked(l4).fill_checksum_v4(src, dst);
            Ok(RST_FRAME_LEN)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    const A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    /// A→B segment with 4 bytes of options (NOP x4) and `payload` bytes.
    fn segment(flags: u8, payload: usize) -> Vec<u8> {
        let tcp_len = 24 + payload;
        let mut f = vec![0u8; 14 + 20 + tcp_len];
        ethernet::emit_header(
            &mut f,
            [2, 0, 0, 0, 0, 2],
            [2, 0, 0, 0, 0, 1],
            ETHERTYPE_IPV4,
        )
        .unwrap();
        ipv4::emit_header(&mut f[14..], A, B, ipv4::PROTO_TCP, tcp_len, 64, true, 1).unwrap();
        let t = &mut f[34..];
        t[0..2].copy_from_slice(&40000u16.to_be_bytes());
        t[2..4].copy_from_slice(&22u16.to_be_bytes());
        t[4..8].copy_from_slice(&1000u32.to_be_bytes());
        t[8..12].copy_from_slice(&500u32.to_be_bytes());
        t[12] = 6 << 4;
        t[13] = flags;
        t[20..24].fill(1);
        f
    }

    #[test]
    fn rst_answers_are_valid_and_acknowledge_the_segment() {
        let mut out = [0u8; 128];
        // No ACK: RST+ACK acknowledging SEQ + payload + FIN.
        let n = build(RejectKind::TcpRst, &segment(TcpMeta::FIN, 100), &mut out).unwrap();
        let ip = ipv4::Packet::new_checked(&out[14..n]).unwrap();
        assert_eq!((ip.src(), ip.dst()), (B, A));
        let rst = tcp::Packet::new_checked(ip.payload()).unwrap();
        assert!(rst.verify_checksum_v4(B, A));
        assert_eq!((rst.src_port(), rst.dst_port()), (22, 40000));
        assert_eq!(rst.flags(), TcpMeta::RST | TcpMeta::ACK);
        assert_eq!((rst.seq_number(), rst.ack_number()), (0, 1101));
        assert_eq!((rst.header_len(), rst.window()), (20, 0));
        // ACK set: RST from its acknowledgment number.
        let n = build(RejectKind::TcpRst, &segment(TcpMeta::ACK, 10), &mut out).unwrap();
        let ip = ipv4::Packet::new_checked(&out[14..n]).unwrap();
        let rst = tcp::Packet::new_checked(ip.payload()).unwrap();
        assert_eq!(rst.flags(), TcpMeta::RST);
        assert_eq!((rst.seq_number(), rst.ack_number()), (500, 0));
    }

    #[test]
    fn no_answer_to_a_rst_or_a_malformed_segment() {
        let mut out = [0u8; 128];
        assert_eq!(
            build(RejectKind::TcpRst, &segment(TcpMeta::RST, 0), &mut out),
            Err(RejectError::NoAnswerToRst)
        );
        // A data offset below 5 words or past the segment's end.
        for doff in [4u8, 15] {
            let mut f = segment(TcpMeta::SYN, 0);
            f[34 + 12] = doff << 4;
            assert_eq!(
                build(RejectKind::TcpRst, &f, &mut out),
                Err(RejectError::NoAnswerToRst),
                "data offset {doff}"
            );
        }
        assert_eq!(
            build(
                RejectKind::TcpRst,
                &segment(TcpMeta::SYN, 0),
                &mut out[..53]
            ),
            Err(RejectError::Buffer)
        );
    }
}
