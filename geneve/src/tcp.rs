//! TCP header view (RFC 9293) and its options: end of list, no-operation,
//! maximum segment size (RFC 9293), window scale and timestamps (RFC 7323),
//! SACK-permitted and SACK (RFC 2018). Checksum over the IPv4 pseudo header
//! and header emit with options.
//!
//! A TCP segment has no length field: the view's buffer is the whole
//! segment (the IPv4 payload), so the payload runs to the buffer's end.

use core::net::Ipv4Addr;

use crate::checksum;
use crate::ipv4::PROTO_TCP;

/// Length of a header without options.
pub const HEADER_LEN: usize = 20;
/// Largest header length the data offset can express (15 words).
pub const MAX_HEADER_LEN: usize = 60;
/// Most option bytes a header can carry.
pub const MAX_OPTIONS_LEN: usize = MAX_HEADER_LEN - HEADER_LEN;

/// FIN: no more data from the sender.
pub const FIN: u8 = 0x01;
/// SYN: synchronize sequence numbers.
pub const SYN: u8 = 0x02;
/// RST: reset the connection.
pub const RST: u8 = 0x04;
/// PSH: push function.
pub const PSH: u8 = 0x08;
/// ACK: the acknowledgment number is significant.
pub const ACK: u8 = 0x10;
/// URG: the urgent pointer is significant.
pub const URG: u8 = 0x20;
/// ECE: ECN echo (RFC 3168).
pub const ECE: u8 = 0x40;
/// CWR: congestion window reduced (RFC 3168).
pub const CWR: u8 = 0x80;

mod field {
    use core::ops::Range;
    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
    pub const SEQ: Range<usize> = 4..8;
    pub const ACK: Range<usize> = 8..12;
    pub const DATA_OFF: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: Range<usize> = 14..16;
    pub const CHECKSUM: Range<usize> = 16..18;
    pub const URGENT: Range<usize> = 18..20;
}

/// Option kinds.
mod kind {
    pub const END: u8 = 0;
    pub const NOP: u8 = 1;
    pub const MSS: u8 = 2;
    pub const WINDOW_SCALE: u8 = 3;
    pub const SACK_PERMITTED: u8 = 4;
    pub const SACK: u8 = 5;
    pub const TIMESTAMPS: u8 = 8;
}

/// Length of one SACK block (left and right edge).
const SACK_BLOCK_LEN: usize = 8;
/// Most SACK blocks that fit in the option space (2 + 4 * 8 = 34 bytes).
const MAX_SACK_BLOCKS: usize = 4;

/// Errors of the TCP view, the options iterator and the emitters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Buffer shorter than the 20-byte header.
    #[error("tcp segment shorter than {HEADER_LEN} bytes")]
    Truncated,
    /// Data offset below 5 words (header length in bytes given).
    #[error("tcp header length {0} below minimum")]
    BadHeaderLength(usize),
    /// Data offset says the header is longer than the buffer.
    #[error("tcp header length {header_len} exceeds segment length {len}")]
    HeaderOverrun {
        /// Header length from the data offset.
        header_len: usize,
        /// Buffer length.
        len: usize,
    },
    /// An option kind with no room left for its length byte.
    #[error("tcp option {kind} has no length byte")]
    OptionTruncated {
        /// Option kind.
        kind: u8,
    },
    /// An option length below 2, or not the length its kind requires.
    #[error("tcp option {kind} has bad length {len}")]
    BadOptionLength {
        /// Option kind.
        kind: u8,
        /// Length byte.
        len: u8,
    },
    /// An option longer than what is left of the options area.
    #[error("tcp option {kind} of length {len} exceeds the {left} bytes left")]
    OptionOverrun {
        /// Option kind.
        kind: u8,
        /// Length byte.
        len: u8,
        /// Bytes left in the options area.
        left: usize,
    },
    /// Options longer than the 40 bytes a header can carry.
    #[error("tcp options of {0} bytes exceed {MAX_OPTIONS_LEN}")]
    OptionsTooLong(usize),
    /// Output buffer too small.
    #[error("output buffer too short: need {need}, have {have}")]
    BufferTooShort {
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        have: usize,
    },
}

/// Zero-copy view of a TCP segment.
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
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps `buffer` (the whole segment), checking that it holds the fixed
    /// header and that the data offset is at least 5 words and fits in it.
    /// Options are checked as they are read (see [`Packet::options`]); the
    /// checksum is not verified.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let p = Self { buffer };
        let len = p.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let header_len = p.header_len();
        if header_len < HEADER_LEN {
            return Err(Error::BadHeaderLength(header_len));
        }
        if header_len > len {
            return Err(Error::HeaderOverrun { header_len, len });
        }
        Ok(p)
    }

    /// Returns the wrapped buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    fn be16(&self, r: core::ops::Range<usize>) -> u16 {
        let b = &self.buffer.as_ref()[r];
        u16::from_be_bytes([b[0], b[1]])
    }

    #[inline]
    fn be32(&self, r: core::ops::Range<usize>) -> u32 {
        let b = &self.buffer.as_ref()[r];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    /// Source port.
    #[inline]
    pub fn src_port(&self) -> u16 {
        self.be16(field::SRC_PORT)
    }

    /// Destination port.
    #[inline]
    pub fn dst_port(&self) -> u16 {
        self.be16(field::DST_PORT)
    }

    /// Sequence number.
    #[inline]
    pub fn seq_number(&self) -> u32 {
        self.be32(field::SEQ)
    }

    /// Acknowledgment number.
    #[inline]
    pub fn ack_number(&self) -> u32 {
        self.be32(field::ACK)
    }

    /// Header length in bytes (data offset * 4).
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::DATA_OFF] >> 4) * 4
    }

    /// The four bits after the data offset (reserved, and AE of RFC 9768).
    #[inline]
    pub fn reserved(&self) -> u8 {
        self.buffer.as_ref()[field::DATA_OFF] & 0x0f
    }

    /// The flags byte (CWR ECE URG ACK PSH RST SYN FIN; see [`SYN`] etc.).
    #[inline]
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// Window field (unscaled).
    #[inline]
    pub fn window(&self) -> u16 {
        self.be16(field::WINDOW)
    }

    /// Checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        self.be16(field::CHECKSUM)
    }

    /// Urgent pointer.
    #[inline]
    pub fn urgent(&self) -> u16 {
        self.be16(field::URGENT)
    }

    /// The header bytes (including options).
    #[inline]
    pub fn header(&self) -> &[u8] {
        &self.buffer.as_ref()[..self.header_len()]
    }

    /// The options area: bytes 20 up to the header length.
    #[inline]
    pub fn options_area(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.header_len()]
    }

    /// The options, parsed as they are iterated.
    #[inline]
    pub fn options(&self) -> Options<'_> {
        Options::new(self.options_area())
    }

    /// Payload: from the header length to the end of the buffer.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }

    /// Verifies the checksum against the IPv4 pseudo header. A segment
    /// longer than 65535 bytes does not verify.
    #[inline]
    pub fn verify_checksum_v4(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        let data = self.buffer.as_ref();
        let Ok(len) = u16::try_from(data.len()) else {
            return false;
        };
        let s = checksum::sum(data, checksum::pseudo_header_v4(src, dst, PROTO_TCP, len));
        checksum::fold(s) == 0
    }
}

impl<'a> Packet<&'a [u8]> {
    /// The payload with the lifetime of the underlying buffer.
    #[inline]
    pub fn into_payload(self) -> &'a [u8] {
        let start = self.header_len();
        &self.buffer[start..]
    }

    /// The options with the lifetime of the underlying buffer.
    #[inline]
    pub fn into_options(self) -> Options<'a> {
        let end = self.header_len();
        Options::new(&self.buffer[HEADER_LEN..end])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the source port.
    #[inline]
    pub fn set_src_port(&mut self, port: u16) {
        self.buffer.as_mut()[field::SRC_PORT].copy_from_slice(&port.to_be_bytes());
    }

    /// Sets the destination port.
    #[inline]
    pub fn set_dst_port(&mut self, port: u16) {
        self.buffer.as_mut()[field::DST_PORT].copy_from_slice(&port.to_be_bytes());
    }

    /// Sets the sequence number.
    #[inline]
    pub fn set_seq_number(&mut self, seq: u32) {
        self.buffer.as_mut()[field::SEQ].copy_from_slice(&seq.to_be_bytes());
    }

    /// Sets the acknowledgment number.
    #[inline]
    pub fn set_ack_number(&mut self, ack: u32) {
        self.buffer.as_mut()[field::ACK].copy_from_slice(&ack.to_be_bytes());
    }

    /// Sets the header length in bytes (rounded down to a multiple of 4, at
    /// most 60); the reserved bits are cleared.
    #[inline]
    pub fn set_header_len(&mut self, header_len: usize) {
        let words = (header_len / 4).min(MAX_HEADER_LEN / 4);
        // `words` is at most 15: the conversion cannot fail, and the shift
        // stays within the byte.
        let words = u8::try_from(words).unwrap_or(15);
        self.buffer.as_mut()[field::DATA_OFF] = words << 4;
    }

    /// Sets the flags byte.
    #[inline]
    pub fn set_flags(&mut self, flags: u8) {
        self.buffer.as_mut()[field::FLAGS] = flags;
    }

    /// Sets the window field.
    #[inline]
    pub fn set_window(&mut self, window: u16) {
        self.buffer.as_mut()[field::WINDOW].copy_from_slice(&window.to_be_bytes());
    }

    /// Sets the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, csum: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&csum.to_be_bytes());
    }

    /// Sets the urgent pointer.
    #[inline]
    pub fn set_urgent(&mut self, urgent: u16) {
        self.buffer.as_mut()[field::URGENT].copy_from_slice(&urgent.to_be_bytes());
    }

    /// Computes and stores the checksum over the IPv4 pseudo header and the
    /// whole buffer. A segment longer than 65535 bytes is left unchanged.
    #[inline]
    pub fn fill_checksum_v4(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        let Ok(len) = u16::try_from(self.buffer.as_ref().len()) else {
            return;
        };
        self.set_checksum(0);
        let sum = checksum::sum(
            self.buffer.as_ref(),
            checksum::pseudo_header_v4(src, dst, PROTO_TCP, len),
        );
        self.set_checksum(checksum::fold(sum));
    }

    /// Mutable options area (bytes 20 up to the header length).
    #[inline]
    pub fn options_area_mut(&mut self) -> &mut [u8] {
        let end = self.header_len();
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }

    /// Mutable payload (header length to the end of the buffer).
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = self.header_len();
        &mut self.buffer.as_mut()[start..]
    }
}

/// The blocks of a SACK option: `(left edge, right edge)` pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SackBlocks<'a> {
    /// 8 to 32 bytes, a multiple of 8 (checked by the parser).
    data: &'a [u8],
}

impl<'a> SackBlocks<'a> {
    /// Wraps the data of a SACK option: 1 to 4 blocks of 8 bytes.
    #[inline]
    pub fn new(data: &'a [u8]) -> Option<Self> {
        let n = data.len() / SACK_BLOCK_LEN;
        (data.len().is_multiple_of(SACK_BLOCK_LEN) && (1..=MAX_SACK_BLOCKS).contains(&n))
            .then_some(Self { data })
    }

    /// Number of blocks.
    #[allow(clippy::len_without_is_empty)] // never empty
    #[inline]
    pub fn len(&self) -> usize {
        self.data.len() / SACK_BLOCK_LEN
    }

    /// The option's data bytes.
    #[inline]
    pub fn as_bytes(&self) -> &'a [u8] {
        self.data
    }

    /// The blocks in order.
    #[inline]
    pub fn iter(&self) -> impl Iterator<Item = (u32, u32)> + 'a {
        self.data.chunks_exact(SACK_BLOCK_LEN).map(|b| {
            (
                u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
                u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
            )
        })
    }
}

/// One TCP option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpOption<'a> {
    /// Kind 0: end of the option list (the rest of the area is padding).
    EndOfList,
    /// Kind 1: padding between options.
    NoOperation,
    /// Kind 2: maximum segment size (SYN only).
    MaxSegmentSize(u16),
    /// Kind 3: window scale shift count (SYN only; RFC 7323 caps its use at 14).
    WindowScale(u8),
    /// Kind 4: SACK permitted (SYN only).
    SackPermitted,
    /// Kind 5: selective acknowledgment blocks.
    Sack(SackBlocks<'a>),
    /// Kind 8: timestamps.
    Timestamps {
        /// TSval: the sender's clock.
        value: u32,
        /// TSecr: the echoed TSval of the peer.
        echo: u32,
    },
    /// Any other kind, with its data (after kind and length).
    Unknown {
        /// Option kind.
        kind: u8,
        /// Option data.
        data: &'a [u8],
    },
}

impl TcpOption<'_> {
    /// The option's kind byte.
    #[inline]
    pub const fn kind(&self) -> u8 {
        match self {
            TcpOption::EndOfList => kind::END,
            TcpOption::NoOperation => kind::NOP,
            TcpOption::MaxSegmentSize(_) => kind::MSS,
            TcpOption::WindowScale(_) => kind::WINDOW_SCALE,
            TcpOption::SackPermitted => kind::SACK_PERMITTED,
            TcpOption::Sack(_) => kind::SACK,
            TcpOption::Timestamps { .. } => kind::TIMESTAMPS,
            TcpOption::Unknown { kind, .. } => *kind,
        }
    }

    /// Bytes the option takes on the wire.
    #[inline]
    pub fn buffer_len(&self) -> usize {
        match self {
            TcpOption::EndOfList | TcpOption::NoOperation => 1,
            TcpOption::MaxSegmentSize(_) => 4,
            TcpOption::WindowScale(_) => 3,
            TcpOption::SackPermitted => 2,
            TcpOption::Sack(b) => 2 + b.as_bytes().len(),
            TcpOption::Timestamps { .. } => 10,
            TcpOption::Unknown { data, .. } => 2 + data.len(),
        }
    }

    /// Writes the option at the start of `buf`; returns its length.
    #[inline]
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, Error> {
        let need = self.buffer_len();
        let have = buf.len();
        let Some(out) = buf.get_mut(..need) else {
            return Err(Error::BufferTooShort { need, have });
        };
        out[0] = self.kind();
        if need == 1 {
            return Ok(1);
        }
        let Ok(len) = u8::try_from(need) else {
            return Err(Error::OptionsTooLong(need));
        };
        out[1] = len;
        let data = &mut out[2..];
        match self {
            TcpOption::MaxSegmentSize(mss) => data.copy_from_slice(&mss.to_be_bytes()),
            TcpOption::WindowScale(shift) => data[0] = *shift,
            TcpOption::Sack(b) => data.copy_from_slice(b.as_bytes()),
            TcpOption::Timestamps { value, echo } => {
                data[..4].copy_from_slice(&value.to_be_bytes());
                data[4..].copy_from_slice(&echo.to_be_bytes());
            }
            TcpOption::Unknown { data: d, .. } => data.copy_from_slice(d),
            TcpOption::EndOfList | TcpOption::NoOperation | TcpOption::SackPermitted => {}
        }
        Ok(need)
    }
}

/// Iterator over a TCP options area, yielding each option or the error that
/// makes it unreadable.
///
/// End of list is yielded once and ends the iteration. An option whose
/// length byte is missing, below 2 or past the end of the area is an error
/// that also ends it. A known kind with the wrong length (say a window scale
/// of length 4) is an error too, but the length is trusted to step over it
/// and iteration goes on, as TCP stacks do. Unknown kinds are skipped by
/// their length. Never panics.
#[derive(Debug, Clone)]
pub struct Options<'a> {
    rest: &'a [u8],
}

impl<'a> Options<'a> {
    /// Iterates over `area` (the bytes after the fixed header).
    #[inline]
    pub const fn new(area: &'a [u8]) -> Self {
        Self { rest: area }
    }
}

impl<'a> Iterator for Options<'a> {
    type Item = Result<TcpOption<'a>, Error>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let (&k, after) = self.rest.split_first()?;
        match k {
            kind::END => {
                self.rest = &[];
                return Some(Ok(TcpOption::EndOfList));
            }
            kind::NOP => {
                self.rest = after;
                return Some(Ok(TcpOption::NoOperation));
            }
            _ => {}
        }
        let left = self.rest.len();
        let Some(&len) = after.first() else {
            self.rest = &[];
            return Some(Err(Error::OptionTruncated { kind: k }));
        };
        let n = usize::from(len);
        if n < 2 {
            self.rest = &[];
            return Some(Err(Error::BadOptionLength { kind: k, len }));
        }
        let Some((opt, rest)) = self.rest.split_at_checked(n) else {
            self.rest = &[];
            return Some(Err(Error::OptionOverrun { kind: k, len, left }));
        };
        self.rest = rest;
        let data = &opt[2..];
        let bad = Error::BadOptionLength { kind: k, len };
        Some(match (k, data) {
            (kind::MSS, &[a, b]) => Ok(TcpOption::MaxSegmentSize(u16::from_be_bytes([a, b]))),
            (kind::WINDOW_SCALE, &[shift]) => Ok(TcpOption::WindowScale(shift)),
            (kind::SACK_PERMITTED, &[]) => Ok(TcpOption::SackPermitted),
            (kind::SACK, d) => SackBlocks::new(d).map(TcpOption::Sack).ok_or(bad),
            (kind::TIMESTAMPS, &[a, b, c, d, e, f, g, h]) => Ok(TcpOption::Timestamps {
                value: u32::from_be_bytes([a, b, c, d]),
                echo: u32::from_be_bytes([e, f, g, h]),
            }),
            (kind::MSS | kind::WINDOW_SCALE | kind::SACK_PERMITTED | kind::TIMESTAMPS, _) => {
                Err(bad)
            }
            (_, data) => Ok(TcpOption::Unknown { kind: k, data }),
        })
    }
}

/// The fields of a TCP header to emit, options included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr<'a> {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Sequence number.
    pub seq_number: u32,
    /// Acknowledgment number.
    pub ack_number: u32,
    /// Flags byte (see [`SYN`] etc.).
    pub flags: u8,
    /// Window field.
    pub window: u16,
    /// Urgent pointer.
    pub urgent: u16,
    /// Options, written in order; the area is padded with zero bytes
    /// (end of list) to a multiple of 4.
    pub options: &'a [TcpOption<'a>],
}

impl Repr<'_> {
    /// Header length: 20 plus the options rounded up to a multiple of 4.
    #[inline]
    pub fn header_len(&self) -> usize {
        let opts: usize = self.options.iter().map(TcpOption::buffer_len).sum();
        HEADER_LEN + opts.next_multiple_of(4)
    }

    /// Writes the header at the start of `buf` with a zero checksum (fill it
    /// with [`Packet::fill_checksum_v4`] once the payload is in place).
    /// Returns the header length.
    #[inline]
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, Error> {
        let header_len = self.header_len();
        if header_len > MAX_HEADER_LEN {
            return Err(Error::OptionsTooLong(header_len - HEADER_LEN));
        }
        let have = buf.len();
        let Some(hdr) = buf.get_mut(..header_len) else {
            return Err(Error::BufferTooShort {
                need: header_len,
                have,
            });
        };
        let mut p = Packet::new_unchecked(&mut *hdr);
        p.set_src_port(self.src_port);
        p.set_dst_port(self.dst_port);
        p.set_seq_number(self.seq_number);
        p.set_ack_number(self.ack_number);
        p.set_header_len(header_len);
        p.set_flags(self.flags);
        p.set_window(self.window);
        p.set_checksum(0);
        p.set_urgent(self.urgent);
        let mut area = &mut hdr[HEADER_LEN..];
        for o in self.options {
            let n = o.emit(area)?;
            area = &mut area[n..];
        }
        area.fill(kind::END);
        Ok(header_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    const SRC: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const DST: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    /// Linux's SYN options: MSS, SACK permitted, timestamps, NOP, window scale.
    const LINUX_SYN_OPTS: [u8; 20] = [
        2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7,
    ];

    fn syn() -> [u8; 44] {
        let mut b = [0u8; 44];
        b[0..2].copy_from_slice(&40000u16.to_be_bytes());
        b[2..4].copy_from_slice(&22u16.to_be_bytes());
        b[4..8].copy_from_slice(&1000u32.to_be_bytes());
        b[12] = 10 << 4;
        b[13] = SYN;
        b[14..16].copy_from_slice(&64240u16.to_be_bytes());
        b[20..40].copy_from_slice(&LINUX_SYN_OPTS);
        b[40..].copy_from_slice(b"data");
        b
    }

    fn opts(area: &[u8]) -> Vec<Result<TcpOption<'_>, Error>> {
        Options::new(area).collect()
    }

    #[test]
    fn linux_syn_parses() {
        let b = syn();
        let p = Packet::new_checked(&b[..]).expect("valid");
        assert_eq!((p.src_port(), p.dst_port()), (40000, 22));
        assert_eq!((p.seq_number(), p.ack_number()), (1000, 0));
        assert_eq!(p.header_len(), 40);
        assert_eq!(p.flags(), SYN);
        assert_eq!(p.window(), 64240);
        assert_eq!((p.urgent(), p.reserved()), (0, 0));
        assert_eq!(p.payload(), b"data");
        assert_eq!(p.options_area(), &LINUX_SYN_OPTS);
        assert_eq!(
            opts(p.options_area()),
            [
                Ok(TcpOption::MaxSegmentSize(1460)),
                Ok(TcpOption::SackPermitted),
                Ok(TcpOption::Timestamps { value: 1, echo: 0 }),
                Ok(TcpOption::NoOperation),
                Ok(TcpOption::WindowScale(7)),
            ]
        );
    }

    #[test]
    fn header_errors() {
        let b = syn();
        assert_eq!(Packet::new_checked(&b[..19]), Err(Error::Truncated));
        let mut short = b;
        short[12] = 4 << 4;
        assert_eq!(
            Packet::new_checked(&short[..]),
            Err(Error::BadHeaderLength(16))
        );
        assert_eq!(
            Packet::new_checked(&b[..39]),
            Err(Error::HeaderOverrun {
                header_len: 40,
                len: 39
            })
        );
        // A header exactly as long as the buffer is fine: no payload.
        assert_eq!(
            Packet::new_checked(&b[..40]).map(|p| p.payload().len()),
            Ok(0)
        );
    }

    #[test]
    fn option_errors() {
        // Kind without a length byte.
        assert_eq!(opts(&[2]), [Err(Error::OptionTruncated { kind: 2 })]);
        // Length below 2 ends the list.
        assert_eq!(
            opts(&[30, 1, 3, 3, 7]),
            [Err(Error::BadOptionLength { kind: 30, len: 1 })]
        );
        // Past the end of the area.
        assert_eq!(
            opts(&[1, 8, 10, 0, 0]),
            [
                Ok(TcpOption::NoOperation),
                Err(Error::OptionOverrun {
                    kind: 8,
                    len: 10,
                    left: 4
                })
            ]
        );
        // A known kind with the wrong length is stepped over.
        assert_eq!(
            opts(&[3, 4, 7, 7, 3, 3, 9, 0]),
            [
                Err(Error::BadOptionLength { kind: 3, len: 4 }),
                Ok(TcpOption::WindowScale(9)),
                Ok(TcpOption::EndOfList),
            ]
        );
        // Five SACK blocks: more than the option space allows.
        let mut five_blocks = [0u8; 42];
        five_blocks[..2].copy_from_slice(&[5, 42]);
        for bad in [
            &[2, 3, 0][..],
            &[4, 3, 0],
            &[8, 9, 0, 0, 0, 0, 0, 0, 0],
            &[5, 2],
            &[5, 9, 0, 0, 0, 0, 0, 0, 0],
            &five_blocks,
        ] {
            let got = opts(bad);
            assert!(
                matches!(got[..], [Err(Error::BadOptionLength { .. })]),
                "{bad:?}: {got:?}"
            );
        }
    }

    #[test]
    fn unknown_sack_and_end_of_list() {
        let area = [
            254, 4, 0xab, 0xcd, // unknown (experimental) kind
            5, 18, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, // two SACK blocks
            0, 3, 3, 7, // end of list, then padding that is not read
        ];
        let got = opts(&area);
        assert_eq!(got.len(), 3);
        assert_eq!(
            got[0],
            Ok(TcpOption::Unknown {
                kind: 254,
                data: &[0xab, 0xcd]
            })
        );
        let Ok(TcpOption::Sack(blocks)) = got[1] else {
            panic!("sack: {:?}", got[1]);
        };
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks.iter().collect::<Vec<_>>(), [(1, 2), (3, 4)]);
        assert_eq!(got[2], Ok(TcpOption::EndOfList));
    }

    #[test]
    fn emit_parse_and_checksum() {
        let sack = [0, 0, 0, 5, 0, 0, 0, 9];
        let options = [
            TcpOption::MaxSegmentSize(1402),
            TcpOption::WindowScale(7),
            TcpOption::Sack(SackBlocks::new(&sack).expect("one block")),
        ];
        let r = Repr {
            src_port: 5201,
            dst_port: 40000,
            seq_number: 7,
            ack_number: 9,
            flags: ACK | PSH,
            window: 502,
            urgent: 0,
            options: &options,
        };
        // 4 + 3 + 10 = 17 option bytes, padded to 20.
        assert_eq!(r.header_len(), 40);
        let mut b = [0xffu8; 45];
        assert_eq!(r.emit(&mut b), Ok(40));
        b[40..].copy_from_slice(b"hello");
        let mut p = Packet::new_checked(&mut b[..]).expect("valid");
        p.fill_checksum_v4(SRC, DST);
        assert!(p.verify_checksum_v4(SRC, DST));
        assert!(!p.verify_checksum_v4(SRC, Ipv4Addr::new(10, 0, 0, 3)));
        assert_eq!(p.flags(), ACK | PSH);
        assert_eq!(p.payload(), b"hello");
        let got: Vec<_> = p.options().collect();
        assert_eq!(
            got,
            [
                Ok(options[0]),
                Ok(options[1]),
                Ok(options[2]),
                Ok(TcpOption::EndOfList)
            ]
        );
        assert_eq!(
            r.emit(&mut b[..39]),
            Err(Error::BufferTooShort { need: 40, have: 39 })
        );
        let many = [TcpOption::Timestamps { value: 1, echo: 2 }; 5];
        let r = Repr {
            options: &many,
            ..r
        };
        assert_eq!(r.emit(&mut [0u8; 80]), Err(Error::OptionsTooLong(52)));
    }
}
