//! Offload metadata that comes with a frame from the port, and the software
//! work it implies. With TX checksum offload and TSO left on for the
//! instance's interface, the kernel hands the agent (through the AF_PACKET
//! virtio-net header) frames whose L4 checksum is only partial and TCP/UDP
//! super-frames up to 64 KiB. The encapsulation layer finishes the checksum
//! and cuts super-frames into MTU-sized segments, each a complete, valid
//! packet — what a NIC does in hardware, done once per segment in userspace
//! instead of once per segment in the instance's stack and the veth.

use geneve::{checksum, ethernet, ipv4, tcp, udp};

use crate::narrow::{len16, wrap16, wrap32};

/// Most segments one super-frame may produce (64 KiB at an MSS of 512).
pub const MAX_SEGMENTS: usize = 128;

/// Length of `struct virtio_net_hdr` (the prefix `PACKET_VNET_HDR` adds).
pub const VIRTIO_NET_HDR_LEN: usize = 10;

const F_NEEDS_CSUM: u8 = 1;
const GSO_NONE: u8 = 0;
const GSO_TCPV4: u8 = 1;
const GSO_UDP_L4: u8 = 5;
const GSO_ECN: u8 = 0x80;

/// A partial L4 checksum to finish: the field at `start + offset` holds the
/// pseudo-header sum; the checksum covers `start..` to the end of the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CsumPartial {
    pub start: u16,
    pub offset: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GsoKind {
    Tcp4,
    Udp4,
}

/// A super-frame to segment into payloads of `size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gso {
    pub kind: GsoKind,
    pub size: u16,
}

/// Offload state of one frame from the port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Offload {
    pub csum: Option<CsumPartial>,
    pub gso: Option<Gso>,
}

/// Metadata that does not describe something we can finish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OffloadError {
    #[error("virtio-net header shorter than {VIRTIO_NET_HDR_LEN} bytes")]
    Short,
    #[error("unsupported GSO type {0:#x}")]
    GsoType(u8),
    #[error("GSO size 0")]
    GsoSize,
}

impl Offload {
    pub const NONE: Offload = Offload {
        csum: None,
        gso: None,
    };

    /// Decodes a `struct virtio_net_hdr` (host byte order, as AF_PACKET writes it).
    pub fn from_virtio_net_hdr(h: &[u8]) -> Result<Offload, OffloadError> {
        let h: &[u8; VIRTIO_NET_HDR_LEN] = h
            .get(..VIRTIO_NET_HDR_LEN)
            .and_then(|s| s.try_into().ok())
            .ok_or(OffloadError::Short)?;
        let u16_at = |i: usize| u16::from_ne_bytes([h[i], h[i + 1]]);
        let csum = (h[0] & F_NEEDS_CSUM != 0).then(|| CsumPartial {
            start: u16_at(6),
            offset: u16_at(8),
        });
        let kind = match h[1] & !GSO_ECN {
            GSO_NONE => None,
            GSO_TCPV4 => Some(GsoKind::Tcp4),
            GSO_UDP_L4 => Some(GsoKind::Udp4),
            other => return Err(OffloadError::GsoType(other)),
        };
        let gso = match kind {
            None => None,
            Some(kind) => {
                let size = u16_at(4);
                if size == 0 {
                    return Err(OffloadError::GsoSize);
                }
                Some(Gso { kind, size })
            }
        };
        Ok(Offload { csum, gso })
    }
}

/// Finishes a partial checksum in place. `None` if it points outside the frame.
pub fn finish_csum(frame: &mut [u8], c: CsumPartial) -> Option<()> {
    let start = usize::from(c.start);
    let at = start.checked_add(usize::from(c.offset))?;
    if at + 2 > frame.len() || start > frame.len() {
        return None;
    }
    let sum = checksum::fold(checksum::sum(&frame[start..], 0));
    frame[at..at + 2].copy_from_slice(&sum.to_be_bytes());
    Some(())
}

/// How a super-frame splits: computed once, then each segment is emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    kind: GsoKind,
    size: usize,
    ip_off: usize,
    ip_hl: usize,
    /// Offset of the payload (end of the L4 header).
    payload_off: usize,
    payload_len: usize,
    pub count: usize,
}

impl Plan {
    /// Checks that `frame` is an IPv4 TCP/UDP packet matching `gso`.
    pub fn new(frame: &[u8], gso: Gso) -> Option<Plan> {
        let eth = ethernet::Frame::new_checked(frame).ok()?;
        if eth.ethertype() != ethernet::ETHERTYPE_IPV4 {
            return None;
        }
        let ip = ipv4::Packet::new_checked(eth.payload()).ok()?;
        let ip_off = ethernet::HEADER_LEN;
        let ip_hl = ip.header_len();
        let l4 = ip.payload();
        let l4_hl = match (gso.kind, ip.protocol()) {
            (GsoKind::Tcp4, ipv4::PROTO_TCP) => tcp::Packet::new_checked(l4).ok()?.header_len(),
            (GsoKind::Udp4, ipv4::PROTO_UDP) => udp::HEADER_LEN,
            _ => return None,
        };
        if l4.len() < l4_hl || ip.more_frags() || ip.frag_offset() != 0 {
            return None;
        }
        let payload_off = ip_off + ip_hl + l4_hl;
        let payload_len = ip_off + usize::from(ip.total_len()) - payload_off;
        let size = usize::from(gso.size);
        let count = payload_len.div_ceil(size).max(1);
        Some(Plan {
            kind: gso.kind,
            size,
            ip_off,
            ip_hl,
            payload_off,
            payload_len,
            count,
        })
    }

    /// IPv4 length of the largest segment (what must fit the overlay MTU).
    pub fn max_ip_len(&self) -> usize {
        self.payload_off - self.ip_off + self.size.min(self.payload_len)
    }

    /// Writes segment `i` of `frame` into `out` and returns its length.
    pub fn emit(&self, frame: &[u8], i: usize, out: &mut [u8]) -> Option<usize> {
        if i >= self.count {
            return None;
        }
        let start = self.payload_off + i * self.size;
        let chunk_len = self.size.min(self.payload_len - i * self.size);
        let len = self.payload_off + chunk_len;
        let out = out.get_mut(..len)?;
        out[..self.payload_off].copy_from_slice(&frame[..self.payload_off]);
        out[self.payload_off..].copy_from_slice(frame.get(start..start + chunk_len)?);

        let l4_off = self.ip_off + self.ip_hl;
        let l4_len = len - l4_off;
        let (src, dst);
        {
            let mut ip = ipv4::Packet::new_unchecked(&mut out[self.ip_off..]);
            ip.set_total_len(len16(self.ip_hl + l4_len));
            ip.set_ident(ip.ident().wrapping_add(wrap16(i)));
            ip.fill_checksum();
            (src, dst) = (ip.src(), ip.dst());
        }
        let l4 = &mut out[l4_off..];
        let last = i + 1 == self.count;
        match self.kind {
            GsoKind::Tcp4 => {
                let mut seg = tcp::Packet::new_checked(l4).ok()?;
                seg.set_seq_number(seg.seq_number().wrapping_add(wrap32(i * self.size)));
                let mut flags = seg.flags();
                if !last {
                    flags &= !(tcp::FIN | tcp::PSH); // only on the last segment
                }
                if i != 0 {
                    flags &= !tcp::CWR; // only on the first
                }
                seg.set_flags(flags);
                seg.fill_checksum_v4(src, dst);
            }
            GsoKind::Udp4 => {
                let mut dgram = udp::Packet::new_unchecked(l4);
                dgram.set_len(len16(l4_len));
                dgram.fill_checksum_v4(src, dst);
            }
        }
        Some(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn tcp_super_frame(payload: usize) -> Vec<u8> {
        let (src, dst) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        let mut f = vec![0u8; 14 + 20 + 20 + payload];
        ethernet::emit_header(&mut f, [2; 6], [4; 6], ethernet::ETHERTYPE_IPV4).unwrap();
        ipv4::emit_header(
            &mut f[14..],
            src,
            dst,
            ipv4::PROTO_TCP,
            20 + payload,
            64,
            true,
            100,
        )
        .unwrap();
        let tcp = &mut f[34..];
        tcp[4..8].copy_from_slice(&1000u32.to_be_bytes());
        tcp[12] = 5 << 4;
        tcp[13] = 0x18 | 0x01; // PSH ACK FIN
        for (b, v) in tcp[20..].iter_mut().zip((0..=u8::MAX).cycle()) {
            *b = v;
        }
        f
    }

    #[test]
    fn tcp_segments_are_valid_and_cover_the_payload() {
        let f = tcp_super_frame(3000);
        let plan = Plan::new(
            &f,
            Gso {
                kind: GsoKind::Tcp4,
                size: 1400,
            },
        )
        .unwrap();
        assert_eq!(plan.count, 3);
        assert_eq!(plan.max_ip_len(), 1440);
        let mut joined = Vec::new();
        for i in 0..3 {
            let mut out = vec![0u8; 2000];
            let n = plan.emit(&f, i, &mut out).unwrap();
            let ip = ipv4::Packet::new_checked(&out[14..n]).unwrap();
            assert!(ip.verify_checksum());
            assert_eq!(ip.ident(), 100 + u16::try_from(i).unwrap());
            let tcp = ip.payload();
            let pseudo = checksum::pseudo_header_v4(
                ip.src(),
                ip.dst(),
                6,
                u16::try_from(tcp.len()).unwrap(),
            );
            assert_eq!(
                checksum::fold(checksum::sum(tcp, pseudo)),
                0,
                "tcp checksum"
            );
            let seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
            assert_eq!(seq, 1000 + 1400 * u32::try_from(i).unwrap());
            assert_eq!(tcp[13] & 0x09 != 0, i == 2, "FIN/PSH only last");
            joined.extend_from_slice(&tcp[20..]);
        }
        assert_eq!(joined, f[54..].to_vec());
        assert!(plan.emit(&f, 3, &mut [0u8; 2000]).is_none());
    }

    #[test]
    fn tcp_super_frame_with_a_bad_data_offset_is_refused() {
        let gso = Gso {
            kind: GsoKind::Tcp4,
            size: 1400,
        };
        for doff in [0u8, 2, 4, 15] {
            let mut f = tcp_super_frame(3000);
            f[34 + 12] = doff << 4;
            if doff == 15 {
                // 60 bytes of header, but only 20 of the frame before the cut.
                f.truncate(34 + 59);
                let total = u16::try_from(f.len() - 14).unwrap();
                ipv4::Packet::new_unchecked(&mut f[14..]).set_total_len(total);
            }
            assert_eq!(Plan::new(&f, gso), None, "data offset {doff}");
        }
    }

    #[test]
    fn partial_checksum_is_finished() {
        let mut f = tcp_super_frame(100);
        let ip = ipv4::Packet::new_checked(&f[14..]).unwrap();
        let pseudo = checksum::pseudo_header_v4(ip.src(), ip.dst(), 6, 120);
        let partial = !checksum::fold(pseudo); // what the kernel leaves in the field
        f[34 + 16..34 + 18].copy_from_slice(&partial.to_be_bytes());
        finish_csum(
            &mut f,
            CsumPartial {
                start: 34,
                offset: 16,
            },
        )
        .unwrap();
        assert_eq!(checksum::fold(checksum::sum(&f[34..], pseudo)), 0);
        assert!(
            finish_csum(
                &mut f,
                CsumPartial {
                    start: 34,
                    offset: 9999
                }
            )
            .is_none()
        );
    }

    #[test]
    fn virtio_header_decodes() {
        let mut h = [0u8; 10];
        h[0] = 1;
        h[1] = 1;
        h[4..6].copy_from_slice(&1448u16.to_ne_bytes());
        h[6..8].copy_from_slice(&34u16.to_ne_bytes());
        h[8..10].copy_from_slice(&16u16.to_ne_bytes());
        let o = Offload::from_virtio_net_hdr(&h).unwrap();
        assert_eq!(
            o.csum,
            Some(CsumPartial {
                start: 34,
                offset: 16
            })
        );
        assert_eq!(
            o.gso,
            Some(Gso {
                kind: GsoKind::Tcp4,
                size: 1448
            })
        );
        h[1] = 4; // TCPv6
        assert_eq!(
            Offload::from_virtio_net_hdr(&h),
            Err(OffloadError::GsoType(4))
        );
        assert_eq!(
            Offload::from_virtio_net_hdr(&h[..4]),
            Err(OffloadError::Short)
        );
    }
}
