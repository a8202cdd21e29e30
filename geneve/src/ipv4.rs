//! IPv4 header view (RFC 791), checksum handling, TTL decrement with
//! incremental checksum update (RFC 1624) and option-less header emit.

use core::net::Ipv4Addr;

use crate::checksum;

/// Protocol number of ICMP.
pub const PROTO_ICMP: u8 = 1;
/// Protocol number of TCP.
pub const PROTO_TCP: u8 = 6;
/// Protocol number of UDP.
pub const PROTO_UDP: u8 = 17;
/// Length of a header without options.
pub const MIN_HEADER_LEN: usize = 20;
/// Largest value of the total length field.
pub const MAX_TOTAL_LEN: usize = 0xffff;

mod field {
    use core::ops::Range;
    pub const VER_IHL: usize = 0;
    pub const TOS: usize = 1;
    pub const LENGTH: Range<usize> = 2..4;
    pub const IDENT: Range<usize> = 4..6;
    pub const FLG_OFF: Range<usize> = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Range<usize> = 10..12;
    pub const SRC: Range<usize> = 12..16;
    pub const DST: Range<usize> = 16..20;
}

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const OFFSET_MASK: u16 = 0x1fff;

/// Errors of the IPv4 view and emitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Buffer shorter than 20 bytes.
    #[error("ipv4 packet shorter than {MIN_HEADER_LEN} bytes")]
    Truncated,
    /// Version field is not 4.
    #[error("ipv4 version field is {0}")]
    BadVersion(u8),
    /// IHL below 5 (header length in bytes given).
    #[error("ipv4 header length {0} below minimum")]
    BadHeaderLength(usize),
    /// IHL says the header is longer than the buffer.
    #[error("ipv4 header length {header_len} exceeds buffer length {len}")]
    HeaderOverrun {
        /// Header length from IHL.
        header_len: usize,
        /// Buffer length.
        len: usize,
    },
    /// Total length smaller than the header length.
    #[error("ipv4 total length {total_len} below header length {header_len}")]
    BadTotalLength {
        /// Total length field.
        total_len: usize,
        /// Header length from IHL.
        header_len: usize,
    },
    /// Total length larger than the buffer.
    #[error("ipv4 total length {total_len} exceeds buffer length {len}")]
    TotalLengthOverrun {
        /// Total length field.
        total_len: usize,
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
    #[error("ipv4 packet of {0} bytes exceeds 65535")]
    TooLong(usize),
}

/// Zero-copy view of an IPv4 packet.
///
/// Accessors on a view made with [`Packet::new_unchecked`] panic if the
/// buffer is too short for the field they read; [`Packet::new_checked`]
/// rules that out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps `buffer` without validation.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps `buffer`, validating version, header length and total length
    /// against the buffer. The buffer may be longer than the total length
    /// (e.g. Ethernet padding). The checksum is not verified.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let p = Self { buffer };
        let len = p.buffer.as_ref().len();
        if len < MIN_HEADER_LEN {
            return Err(Error::Truncated);
        }
        if p.version() != 4 {
            return Err(Error::BadVersion(p.version()));
        }
        let header_len = p.header_len();
        if header_len < MIN_HEADER_LEN {
            return Err(Error::BadHeaderLength(header_len));
        }
        if header_len > len {
            return Err(Error::HeaderOverrun { header_len, len });
        }
        let total_len = usize::from(p.total_len());
        if total_len < header_len {
            return Err(Error::BadTotalLength {
                total_len,
                header_len,
            });
        }
        if total_len > len {
            return Err(Error::TotalLengthOverrun { total_len, len });
        }
        Ok(p)
    }

    /// Wraps `buffer` holding a packet quoted in an ICMP error (RFC 792:
    /// its header and at least the first 8 payload bytes, usually not the
    /// whole datagram): validates version and header length against the
    /// buffer, but not the total length, which describes the original
    /// datagram. Use [`Packet::quoted_payload`] for the bytes after the
    /// header, not [`Packet::payload`].
    pub fn new_checked_quoted(buffer: T) -> Result<Self, Error> {
        let p = Self { buffer };
        let len = p.buffer.as_ref().len();
        if len < MIN_HEADER_LEN {
            return Err(Error::Truncated);
        }
        if p.version() != 4 {
            return Err(Error::BadVersion(p.version()));
        }
        let header_len = p.header_len();
        if header_len < MIN_HEADER_LEN {
            return Err(Error::BadHeaderLength(header_len));
        }
        if header_len > len {
            return Err(Error::HeaderOverrun { header_len, len });
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

    fn ip(&self, r: core::ops::Range<usize>) -> Ipv4Addr {
        let b = &self.buffer.as_ref()[r];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    /// Version field.
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in bytes (IHL * 4).
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// Type of service / DSCP+ECN byte.
    pub fn tos(&self) -> u8 {
        self.buffer.as_ref()[field::TOS]
    }

    /// Total length field.
    pub fn total_len(&self) -> u16 {
        self.be16(field::LENGTH)
    }

    /// Identification field.
    pub fn ident(&self) -> u16 {
        self.be16(field::IDENT)
    }

    /// Don't-fragment flag.
    pub fn dont_frag(&self) -> bool {
        self.be16(field::FLG_OFF) & FLAG_DF != 0
    }

    /// More-fragments flag.
    pub fn more_frags(&self) -> bool {
        self.be16(field::FLG_OFF) & FLAG_MF != 0
    }

    /// Fragment offset in 8-byte units (as carried in the header).
    pub fn frag_offset(&self) -> u16 {
        self.be16(field::FLG_OFF) & OFFSET_MASK
    }

    /// Time to live.
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// Protocol field.
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    /// Header checksum field.
    pub fn checksum(&self) -> u16 {
        self.be16(field::CHECKSUM)
    }

    /// Source address.
    pub fn src(&self) -> Ipv4Addr {
        self.ip(field::SRC)
    }

    /// Destination address.
    pub fn dst(&self) -> Ipv4Addr {
        self.ip(field::DST)
    }

    /// Whether the header checksum is correct.
    pub fn verify_checksum(&self) -> bool {
        let hdr = &self.buffer.as_ref()[..self.header_len()];
        checksum::fold(checksum::sum(hdr, 0)) == 0
    }

    /// The header bytes (including options).
    pub fn header(&self) -> &[u8] {
        &self.buffer.as_ref()[..self.header_len()]
    }

    /// The bytes after the header, to the end of the buffer (for a quoted
    /// packet, [`Packet::new_checked_quoted`], whose total length may run
    /// past the buffer).
    pub fn quoted_payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }

    /// The payload: bytes from the header length up to the total length.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..usize::from(self.total_len())]
    }
}

impl<'a> Packet<&'a [u8]> {
    /// The payload (header length to total length) with the lifetime of the
    /// underlying buffer.
    pub fn into_payload(self) -> &'a [u8] {
        let range = self.header_len()..usize::from(self.total_len());
        &self.buffer[range]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets version 4 and the header length in bytes (rounded down to a
    /// multiple of 4, at most 60).
    pub fn set_version_and_header_len(&mut self, header_len: usize) {
        // At most 15: the conversion cannot fail.
        let ihl = u8::try_from((header_len / 4).min(15)).unwrap_or(15);
        self.buffer.as_mut()[field::VER_IHL] = 0x40 | ihl;
    }

    /// Sets the type of service byte.
    pub fn set_tos(&mut self, tos: u8) {
        self.buffer.as_mut()[field::TOS] = tos;
    }

    /// Sets the total length field.
    pub fn set_total_len(&mut self, len: u16) {
        self.buffer.as_mut()[field::LENGTH].copy_from_slice(&len.to_be_bytes());
    }

    /// Sets the identification field.
    pub fn set_ident(&mut self, ident: u16) {
        self.buffer.as_mut()[field::IDENT].copy_from_slice(&ident.to_be_bytes());
    }

    /// Sets flags and fragment offset: DF as given, MF clear, offset 0.
    pub fn set_dont_frag_unfragmented(&mut self, dont_frag: bool) {
        let v = if dont_frag { FLAG_DF } else { 0 };
        self.buffer.as_mut()[field::FLG_OFF].copy_from_slice(&v.to_be_bytes());
    }

    /// Sets the time to live (checksum not updated).
    pub fn set_ttl(&mut self, ttl: u8) {
        self.buffer.as_mut()[field::TTL] = ttl;
    }

    /// Sets the protocol field.
    pub fn set_protocol(&mut self, proto: u8) {
        self.buffer.as_mut()[field::PROTOCOL] = proto;
    }

    /// Sets the source address (checksum not updated).
    pub fn set_src(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&addr.octets());
    }

    /// Sets the destination address (checksum not updated).
    pub fn set_dst(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&addr.octets());
    }

    /// Sets the header checksum field.
    pub fn set_checksum(&mut self, csum: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&csum.to_be_bytes());
    }

    /// Recomputes and stores the header checksum.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let csum = checksum::fold(checksum::sum(self.header(), 0));
        self.set_checksum(csum);
    }

    /// Decrements the TTL by one and updates the header checksum
    /// incrementally (RFC 1624). Returns the new TTL.
    ///
    /// A TTL of 0 is left unchanged (and 0 returned); the caller should
    /// drop the packet (and send Time Exceeded) when this returns 0.
    pub fn decrement_ttl(&mut self) -> u8 {
        let ttl = self.ttl();
        if ttl == 0 {
            return 0;
        }
        let proto = self.protocol();
        let old = u16::from_be_bytes([ttl, proto]);
        let new = u16::from_be_bytes([ttl - 1, proto]);
        let csum = checksum::update16(self.checksum(), old, new);
        self.set_ttl(ttl - 1);
        self.set_checksum(csum);
        ttl - 1
    }

    /// Mutable payload (header length up to total length).
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let range = self.header_len()..usize::from(self.total_len());
        &mut self.buffer.as_mut()[range]
    }
}

/// Writes a 20-byte option-less IPv4 header (TOS 0, no fragmentation other
/// than the DF flag) with the checksum filled, for `payload_len` bytes of
/// payload. Returns 20.
#[allow(clippy::too_many_arguments)]
pub fn emit_header(
    buf: &mut [u8],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    payload_len: usize,
    ttl: u8,
    dont_frag: bool,
    ident: u16,
) -> Result<usize, Error> {
    let have = buf.len();
    let Some(hdr) = buf.get_mut(..MIN_HEADER_LEN) else {
        return Err(Error::BufferTooShort {
            need: MIN_HEADER_LEN,
            have,
        });
    };
    let total = payload_len.saturating_add(MIN_HEADER_LEN);
    let Ok(total16) = u16::try_from(total) else {
        return Err(Error::TooLong(total));
    };
    let mut p = Packet::new_unchecked(hdr);
    p.set_version_and_header_len(MIN_HEADER_LEN);
    p.set_tos(0);
    p.set_total_len(total16);
    p.set_ident(ident);
    p.set_dont_frag_unfragmented(dont_frag);
    p.set_ttl(ttl);
    p.set_protocol(proto);
    p.set_src(src);
    p.set_dst(dst);
    p.fill_checksum();
    Ok(MIN_HEADER_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> [u8; 24] {
        let mut b = [0u8; 24];
        emit_header(
            &mut b,
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 2),
            PROTO_UDP,
            4,
            64,
            true,
            7,
        )
        .expect("fits");
        b
    }

    #[test]
    fn emit_parse() {
        let b = sample();
        let p = Packet::new_checked(&b[..]).expect("valid");
        assert_eq!(p.version(), 4);
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.total_len(), 24);
        assert_eq!(p.ident(), 7);
        assert!(p.dont_frag());
        assert!(!p.more_frags());
        assert_eq!(p.frag_offset(), 0);
        assert_eq!(p.ttl(), 64);
        assert_eq!(p.protocol(), PROTO_UDP);
        assert_eq!(p.src(), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(p.dst(), Ipv4Addr::new(10, 0, 0, 2));
        assert!(p.verify_checksum());
        assert_eq!(p.payload().len(), 4);
    }

    #[test]
    fn errors() {
        let good = sample();
        assert_eq!(Packet::new_checked(&good[..19]), Err(Error::Truncated));
        let mut b = good;
        b[0] = 0x65;
        assert_eq!(Packet::new_checked(&b[..]), Err(Error::BadVersion(6)));
        b[0] = 0x44;
        assert_eq!(Packet::new_checked(&b[..]), Err(Error::BadHeaderLength(16)));
        b[0] = 0x47;
        assert_eq!(
            Packet::new_checked(&b[..]),
            Err(Error::HeaderOverrun {
                header_len: 28,
                len: 24
            })
        );
        let mut b = good;
        b[3] = 19;
        assert_eq!(
            Packet::new_checked(&b[..]),
            Err(Error::BadTotalLength {
                total_len: 19,
                header_len: 20
            })
        );
        b[3] = 25;
        assert_eq!(
            Packet::new_checked(&b[..]),
            Err(Error::TotalLengthOverrun {
                total_len: 25,
                len: 24
            })
        );
        assert_eq!(
            emit_header(
                &mut [0u8; 19],
                Ipv4Addr::UNSPECIFIED,
                Ipv4Addr::UNSPECIFIED,
                0,
                0,
                0,
                false,
                0
            ),
            Err(Error::BufferTooShort { need: 20, have: 19 })
        );
        assert_eq!(
            emit_header(
                &mut [0u8; 20],
                Ipv4Addr::UNSPECIFIED,
                Ipv4Addr::UNSPECIFIED,
                0,
                65516,
                0,
                false,
                0
            ),
            Err(Error::TooLong(65536))
        );
    }

    #[test]
    fn decrement_ttl_keeps_checksum() {
        let mut b = sample();
        let mut p = Packet::new_checked(&mut b[..]).expect("valid");
        for expected in (0..64).rev() {
            assert_eq!(p.decrement_ttl(), expected);
            assert!(p.verify_checksum());
        }
        assert_eq!(p.decrement_ttl(), 0);
        assert!(p.verify_checksum());
    }

    #[test]
    fn quoted_ignores_total_length() {
        let b = sample();
        // A quote: the header and 2 of the 4 payload bytes.
        let q = Packet::new_checked_quoted(&b[..22]).expect("valid quote");
        assert_eq!(q.total_len(), 24);
        assert_eq!(q.quoted_payload().len(), 2);
        assert!(Packet::new_checked(&b[..22]).is_err());
        assert_eq!(Packet::new_checked_quoted(&b[..19]), Err(Error::Truncated));
        let mut bad = b;
        bad[0] = 0x46;
        assert_eq!(
            Packet::new_checked_quoted(&bad[..22]),
            Err(Error::HeaderOverrun {
                header_len: 24,
                len: 22
            })
        );
    }
}
