//! Ethernet II frame view (no VLAN tag parsing) and header emit.

use crate::MacAddr;

/// EtherType of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// EtherType of ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// EtherType of IPv6.
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
/// EtherType of an 802.1Q VLAN tag.
pub const ETHERTYPE_VLAN: u16 = 0x8100;
/// Length of an untagged Ethernet II header.
pub const HEADER_LEN: usize = 14;
/// The broadcast MAC address.
pub const BROADCAST: MacAddr = [0xff; 6];

mod field {
    use core::ops::Range;
    pub const DST: Range<usize> = 0..6;
    pub const SRC: Range<usize> = 6..12;
    pub const ETHERTYPE: Range<usize> = 12..14;
}

/// Errors of the Ethernet view and emitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Buffer shorter than the 14-byte header.
    #[error("ethernet frame shorter than {HEADER_LEN} bytes")]
    Truncated,
}

/// Whether `mac` is a group (multicast) address; broadcast included.
#[must_use]
pub fn is_multicast(mac: &MacAddr) -> bool {
    mac[0] & 0x01 != 0
}

/// Writes an Ethernet II header into `buf[..14]`.
///
/// The caller is expected to pass a buffer of at least [`HEADER_LEN`] bytes;
/// a shorter one is reported as [`Error::Truncated`] and left untouched.
pub fn emit_header(
    buf: &mut [u8],
    dst: MacAddr,
    src: MacAddr,
    ethertype: u16,
) -> Result<(), Error> {
    let mut frame = Frame::new_checked(buf)?;
    frame.set_dst(dst);
    frame.set_src(src);
    frame.set_ethertype(ethertype);
    Ok(())
}

/// Zero-copy view of an Ethernet II frame.
///
/// Accessors on a view made with [`Frame::new_unchecked`] panic if the buffer
/// is shorter than [`HEADER_LEN`]; [`Frame::new_checked`] rules that out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Wraps `buffer` without validation.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps `buffer`, checking it holds a full header.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(Self { buffer })
    }

    /// Returns the wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn mac(&self, r: core::ops::Range<usize>) -> MacAddr {
        let mut m = [0u8; 6];
        m.copy_from_slice(&self.buffer.as_ref()[r]);
        m
    }

    /// Destination MAC address.
    pub fn dst(&self) -> MacAddr {
        self.mac(field::DST)
    }

    /// Source MAC address.
    pub fn src(&self) -> MacAddr {
        self.mac(field::SRC)
    }

    /// EtherType.
    pub fn ethertype(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::ETHERTYPE];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// Everything after the 14-byte header (including any trailing padding).
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

impl<'a> Frame<&'a [u8]> {
    /// The payload with the lifetime of the underlying buffer.
    pub fn into_payload(self) -> &'a [u8] {
        &self.buffer[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    /// Sets the destination MAC address.
    pub fn set_dst(&mut self, mac: MacAddr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&mac);
    }

    /// Sets the source MAC address.
    pub fn set_src(&mut self, mac: MacAddr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&mac);
    }

    /// Sets the EtherType.
    pub fn set_ethertype(&mut self, ethertype: u16) {
        self.buffer.as_mut()[field::ETHERTYPE].copy_from_slice(&ethertype.to_be_bytes());
    }

    /// Mutable payload (everything after the header).
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let mut buf = [0u8; 20];
        emit_header(&mut buf, BROADCAST, [2, 0, 0, 0, 0, 1], ETHERTYPE_ARP).expect("fits");
        let f = Frame::new_checked(&buf[..]).expect("valid");
        assert_eq!(f.dst(), BROADCAST);
        assert_eq!(f.src(), [2, 0, 0, 0, 0, 1]);
        assert_eq!(f.ethertype(), ETHERTYPE_ARP);
        assert_eq!(f.payload().len(), 6);
    }

    #[test]
    fn short() {
        assert_eq!(Frame::new_checked(&[0u8; 13][..]), Err(Error::Truncated));
        assert_eq!(
            emit_header(&mut [0u8; 13], BROADCAST, BROADCAST, 0),
            Err(Error::Truncated)
        );
    }

    #[test]
    fn multicast() {
        assert!(is_multicast(&BROADCAST));
        assert!(is_multicast(&[0x01, 0x00, 0x5e, 0, 0, 1]));
        assert!(!is_multicast(&[0x02, 0, 0, 0, 0, 1]));
    }
}
