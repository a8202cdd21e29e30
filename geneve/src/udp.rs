//! UDP header view (RFC 768), IPv4 checksum verification and header emit.

use core::net::Ipv4Addr;

use crate::checksum;
use crate::ipv4::PROTO_UDP;

/// Length of the UDP header.
pub const HEADER_LEN: usize = 8;

mod field {
    use core::ops::Range;
    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
    pub const LENGTH: Range<usize> = 4..6;
    pub const CHECKSUM: Range<usize> = 6..8;
}

/// Errors of the UDP view and emitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Buffer shorter than the 8-byte header.
    #[error("udp packet shorter than {HEADER_LEN} bytes")]
    Truncated,
    /// Length field below 8.
    #[error("udp length field {0} below header length")]
    BadLength(u16),
    /// Length field larger than the buffer.
    #[error("udp length field {length} exceeds buffer length {len}")]
    LengthOverrun {
        /// Length field.
        length: u16,
        /// Buffer length.
        len: usize,
    },
    /// Output buffer too small.
    #[error("output buffer too short: need {need}, have {have}")]
    BufferTooShort {
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// Header plus payload would exceed 65535 bytes.
    #[error("udp datagram of {0} bytes exceeds 65535")]
    TooLong(usize),
}

/// Zero-copy view of a UDP datagram.
///
/// Accessors on a view made with [`Packet::new_unchecked`] panic if the
/// buffer is too short; [`Packet::new_checked`] rules that out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps `buffer` without validation.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps `buffer`, checking that the length field is at least 8 and
    /// fits in the buffer (the buffer may be longer).
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let p = Self { buffer };
        let len = p.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let length = p.len();
        if usize::from(length) < HEADER_LEN {
            return Err(Error::BadLength(length));
        }
        if usize::from(length) > len {
            return Err(Error::LengthOverrun { length, len });
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

    /// Source port.
    pub fn src_port(&self) -> u16 {
        self.be16(field::SRC_PORT)
    }

    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        self.be16(field::DST_PORT)
    }

    /// Length field (header + payload).
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u16 {
        self.be16(field::LENGTH)
    }

    /// Checksum field.
    pub fn checksum(&self) -> u16 {
        self.be16(field::CHECKSUM)
    }

    /// Payload: bytes 8 up to the length field.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..usize::from(self.len())]
    }

    /// Verifies the checksum against the IPv4 pseudo header. A zero
    /// checksum field means "no checksum" and verifies.
    pub fn verify_checksum_v4(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        if self.checksum() == 0 {
            return true;
        }
        let len = self.len();
        let data = &self.buffer.as_ref()[..usize::from(len)];
        let s = checksum::sum(data, checksum::pseudo_header_v4(src, dst, PROTO_UDP, len));
        checksum::fold(s) == 0
    }
}

impl<'a> Packet<&'a [u8]> {
    /// The payload with the lifetime of the underlying buffer.
    pub fn into_payload(self) -> &'a [u8] {
        let end = usize::from(self.len());
        &self.buffer[HEADER_LEN..end]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the source port.
    pub fn set_src_port(&mut self, port: u16) {
        self.buffer.as_mut()[field::SRC_PORT].copy_from_slice(&port.to_be_bytes());
    }

    /// Sets the destination port.
    pub fn set_dst_port(&mut self, port: u16) {
        self.buffer.as_mut()[field::DST_PORT].copy_from_slice(&port.to_be_bytes());
    }

    /// Sets the length field.
    pub fn set_len(&mut self, len: u16) {
        self.buffer.as_mut()[field::LENGTH].copy_from_slice(&len.to_be_bytes());
    }

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, csum: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&csum.to_be_bytes());
    }

    /// Computes and stores the checksum over the pseudo header and the
    /// datagram (up to the length field); a computed 0 is stored as 0xffff.
    pub fn fill_checksum_v4(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let len = self.len();
        let data = &self.buffer.as_ref()[..usize::from(len)];
        let c = checksum::fold(checksum::sum(
            data,
            checksum::pseudo_header_v4(src, dst, PROTO_UDP, len),
        ));
        self.set_checksum(if c == 0 { 0xffff } else { c });
    }

    /// Mutable payload (bytes 8 up to the length field).
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = usize::from(self.len());
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }
}

/// Writes an 8-byte UDP header for `payload_len` bytes of payload with a
/// zero checksum. Returns 8.
pub fn emit_header(
    buf: &mut [u8],
    src_port: u16,
    dst_port: u16,
    payload_len: usize,
) -> Result<usize, Error> {
    let have = buf.len();
    let Some(hdr) = buf.get_mut(..HEADER_LEN) else {
        return Err(Error::BufferTooShort {
            need: HEADER_LEN,
            have,
        });
    };
    let total = payload_len.saturating_add(HEADER_LEN);
    let Ok(total16) = u16::try_from(total) else {
        return Err(Error::TooLong(total));
    };
    let mut p = Packet::new_unchecked(hdr);
    p.set_src_port(src_port);
    p.set_dst_port(dst_port);
    p.set_len(total16);
    p.set_checksum(0);
    Ok(HEADER_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_checksum() {
        let src = Ipv4Addr::new(10, 0, 0, 1);
        let dst = Ipv4Addr::new(10, 0, 0, 2);
        let mut b = [0u8; 13];
        b[8..].copy_from_slice(b"hello");
        emit_header(&mut b, 1234, 6081, 5).expect("fits");
        let mut p = Packet::new_checked(&mut b[..]).expect("valid");
        assert!(p.verify_checksum_v4(src, dst));
        p.fill_checksum_v4(src, dst);
        assert_ne!(p.checksum(), 0);
        assert!(p.verify_checksum_v4(src, dst));
        assert!(!p.verify_checksum_v4(src, Ipv4Addr::new(10, 0, 0, 3)));
        assert_eq!(p.src_port(), 1234);
        assert_eq!(p.dst_port(), 6081);
        assert_eq!(p.payload(), b"hello");
    }

    #[test]
    fn errors() {
        let mut b = [0u8; 10];
        assert_eq!(Packet::new_checked(&b[..7]), Err(Error::Truncated));
        b[5] = 7;
        assert_eq!(Packet::new_checked(&b[..]), Err(Error::BadLength(7)));
        b[5] = 11;
        assert_eq!(
            Packet::new_checked(&b[..]),
            Err(Error::LengthOverrun {
                length: 11,
                len: 10
            })
        );
        assert_eq!(emit_header(&mut b, 1, 2, 65528), Err(Error::TooLong(65536)));
        assert_eq!(
            emit_header(&mut b[..7], 1, 2, 0),
            Err(Error::BufferTooShort { need: 8, have: 7 })
        );
    }
}
