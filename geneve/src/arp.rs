//! ARP for Ethernet/IPv4 only (RFC 826): packet view and reply-frame builder.

use core::net::Ipv4Addr;

use crate::MacAddr;
use crate::ethernet;

/// ARP request operation.
pub const OP_REQUEST: u16 = 1;
/// ARP reply operation.
pub const OP_REPLY: u16 = 2;
/// Hardware type Ethernet.
pub const HTYPE_ETHERNET: u16 = 1;
/// Length of an Ethernet/IPv4 ARP packet.
pub const PACKET_LEN: usize = 28;
/// Length of a complete Ethernet + ARP frame (without padding to 60).
pub const FRAME_LEN: usize = ethernet::HEADER_LEN + PACKET_LEN;

mod field {
    use core::ops::Range;
    pub const HTYPE: Range<usize> = 0..2;
    pub const PTYPE: Range<usize> = 2..4;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: Range<usize> = 6..8;
    pub const SHA: Range<usize> = 8..14;
    pub const SPA: Range<usize> = 14..18;
    pub const THA: Range<usize> = 18..24;
    pub const TPA: Range<usize> = 24..28;
}

/// Errors of the ARP view and builder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Buffer shorter than a 28-byte Ethernet/IPv4 ARP packet.
    #[error("arp packet shorter than {PACKET_LEN} bytes")]
    Truncated,
    /// Hardware type other than Ethernet (1).
    #[error("unsupported arp hardware type {0:#06x}")]
    BadHardwareType(u16),
    /// Protocol type other than IPv4 (0x0800).
    #[error("unsupported arp protocol type {0:#06x}")]
    BadProtocolType(u16),
    /// Address lengths other than 6 / 4.
    #[error("unsupported arp address lengths hlen={hlen} plen={plen}")]
    BadAddressLength {
        /// Hardware address length field.
        hlen: u8,
        /// Protocol address length field.
        plen: u8,
    },
    /// Output buffer too small.
    #[error("output buffer too short: need {need}, have {have}")]
    BufferTooShort {
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        have: usize,
    },
}

/// Zero-copy view of an Ethernet/IPv4 ARP packet (starting after the
/// Ethernet header).
///
/// Accessors on a view made with [`Packet::new_unchecked`] panic if the
/// buffer is shorter than [`PACKET_LEN`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps `buffer` without validation.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps `buffer`, checking length, hardware/protocol types and address
    /// lengths.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let p = Self { buffer };
        if p.buffer.as_ref().len() < PACKET_LEN {
            return Err(Error::Truncated);
        }
        if p.hardware_type() != HTYPE_ETHERNET {
            return Err(Error::BadHardwareType(p.hardware_type()));
        }
        if p.protocol_type() != ethernet::ETHERTYPE_IPV4 {
            return Err(Error::BadProtocolType(p.protocol_type()));
        }
        let b = p.buffer.as_ref();
        if b[field::HLEN] != 6 || b[field::PLEN] != 4 {
            return Err(Error::BadAddressLength {
                hlen: b[field::HLEN],
                plen: b[field::PLEN],
            });
        }
        Ok(p)
    }

    /// Returns the wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn be16(&self, r: core::ops::Range<usize>) -> u16 {
        let b = &self.buffer.as_ref()[r];
        u16::from_be_bytes([b[0], b[1]])
    }

    fn mac(&self, r: core::ops::Range<usize>) -> MacAddr {
        let mut m = [0u8; 6];
        m.copy_from_slice(&self.buffer.as_ref()[r]);
        m
    }

    fn ip(&self, r: core::ops::Range<usize>) -> Ipv4Addr {
        let b = &self.buffer.as_ref()[r];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    /// Hardware type field.
    pub fn hardware_type(&self) -> u16 {
        self.be16(field::HTYPE)
    }

    /// Protocol type field.
    pub fn protocol_type(&self) -> u16 {
        self.be16(field::PTYPE)
    }

    /// Operation ([`OP_REQUEST`], [`OP_REPLY`], ...).
    pub fn operation(&self) -> u16 {
        self.be16(field::OPER)
    }

    /// Sender hardware address.
    pub fn sender_mac(&self) -> MacAddr {
        self.mac(field::SHA)
    }

    /// Sender protocol address.
    pub fn sender_ip(&self) -> Ipv4Addr {
        self.ip(field::SPA)
    }

    /// Target hardware address.
    pub fn target_mac(&self) -> MacAddr {
        self.mac(field::THA)
    }

    /// Target protocol address.
    pub fn target_ip(&self) -> Ipv4Addr {
        self.ip(field::TPA)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Writes the fixed Ethernet/IPv4 fields (htype, ptype, hlen, plen).
    pub fn set_ethernet_ipv4(&mut self) {
        let b = self.buffer.as_mut();
        b[field::HTYPE].copy_from_slice(&HTYPE_ETHERNET.to_be_bytes());
        b[field::PTYPE].copy_from_slice(&ethernet::ETHERTYPE_IPV4.to_be_bytes());
        b[field::HLEN] = 6;
        b[field::PLEN] = 4;
    }

    /// Sets the operation.
    pub fn set_operation(&mut self, op: u16) {
        self.buffer.as_mut()[field::OPER].copy_from_slice(&op.to_be_bytes());
    }

    /// Sets the sender hardware address.
    pub fn set_sender_mac(&mut self, mac: MacAddr) {
        self.buffer.as_mut()[field::SHA].copy_from_slice(&mac);
    }

    /// Sets the sender protocol address.
    pub fn set_sender_ip(&mut self, ip: Ipv4Addr) {
        self.buffer.as_mut()[field::SPA].copy_from_slice(&ip.octets());
    }

    /// Sets the target hardware address.
    pub fn set_target_mac(&mut self, mac: MacAddr) {
        self.buffer.as_mut()[field::THA].copy_from_slice(&mac);
    }

    /// Sets the target protocol address.
    pub fn set_target_ip(&mut self, ip: Ipv4Addr) {
        self.buffer.as_mut()[field::TPA].copy_from_slice(&ip.octets());
    }
}

/// Writes a complete Ethernet + ARP reply frame ([`FRAME_LEN`] bytes) into
/// `buf`: "`our_ip` is at `our_mac`", sent to `to_mac` / `to_ip`.
///
/// Returns the frame length. The frame is not padded to the 60-byte
/// Ethernet minimum.
pub fn emit_reply_frame(
    buf: &mut [u8],
    our_mac: MacAddr,
    our_ip: Ipv4Addr,
    to_mac: MacAddr,
    to_ip: Ipv4Addr,
) -> Result<usize, Error> {
    let Some(frame) = buf.get_mut(..FRAME_LEN) else {
        return Err(Error::BufferTooShort {
            need: FRAME_LEN,
            have: buf.len(),
        });
    };
    let (eth, arp) = frame.split_at_mut(ethernet::HEADER_LEN);
    let mut eth = ethernet::Frame::new_unchecked(eth);
    eth.set_dst(to_mac);
    eth.set_src(our_mac);
    eth.set_ethertype(ethernet::ETHERTYPE_ARP);
    let mut p = Packet::new_unchecked(arp);
    p.set_ethernet_ipv4();
    p.set_operation(OP_REPLY);
    p.set_sender_mac(our_mac);
    p.set_sender_ip(our_ip);
    p.set_target_mac(to_mac);
    p.set_target_ip(to_ip);
    Ok(FRAME_LEN)
}

/// Writes a broadcast Ethernet frame with an ARP request into `buf`:
/// "who has `target`? tell `our_ip` (`our_mac`)". Returns the frame length
/// (not padded to the 60-byte Ethernet minimum).
pub fn emit_request_frame(
    buf: &mut [u8],
    our_mac: MacAddr,
    our_ip: Ipv4Addr,
    target: Ipv4Addr,
) -> Result<usize, Error> {
    let Some(frame) = buf.get_mut(..FRAME_LEN) else {
        return Err(Error::BufferTooShort {
            need: FRAME_LEN,
            have: buf.len(),
        });
    };
    let (eth, arp) = frame.split_at_mut(ethernet::HEADER_LEN);
    let mut eth = ethernet::Frame::new_unchecked(eth);
    eth.set_dst([0xff; 6]);
    eth.set_src(our_mac);
    eth.set_ethertype(ethernet::ETHERTYPE_ARP);
    let mut p = Packet::new_unchecked(arp);
    p.set_ethernet_ipv4();
    p.set_operation(OP_REQUEST);
    p.set_sender_mac(our_mac);
    p.set_sender_ip(our_ip);
    p.set_target_mac([0; 6]);
    p.set_target_ip(target);
    Ok(FRAME_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors() {
        let mut b = [0u8; 28];
        assert_eq!(Packet::new_checked(&b[..27]), Err(Error::Truncated));
        assert_eq!(Packet::new_checked(&b[..]), Err(Error::BadHardwareType(0)));
        b[1] = 1;
        assert_eq!(Packet::new_checked(&b[..]), Err(Error::BadProtocolType(0)));
        b[2] = 8;
        assert_eq!(
            Packet::new_checked(&b[..]),
            Err(Error::BadAddressLength { hlen: 0, plen: 0 })
        );
        b[4] = 6;
        b[5] = 4;
        assert!(Packet::new_checked(&b[..]).is_ok());
        assert_eq!(
            emit_reply_frame(
                &mut [0u8; 41],
                [0; 6],
                Ipv4Addr::UNSPECIFIED,
                [0; 6],
                Ipv4Addr::UNSPECIFIED
            ),
            Err(Error::BufferTooShort { need: 42, have: 41 })
        );
    }
}
