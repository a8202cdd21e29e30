//! ICMPv4 (RFC 792) message view plus builders for complete echo-reply and
//! error frames (Ethernet + IPv4 + ICMP) sent back to a guest.

use core::net::Ipv4Addr;

use crate::MacAddr;
use crate::checksum;
use crate::ethernet;
use crate::ipv4;

/// Echo reply.
pub const TYPE_ECHO_REPLY: u8 = 0;
/// Destination unreachable.
pub const TYPE_DEST_UNREACH: u8 = 3;
/// Source quench (deprecated, but an error type).
pub const TYPE_SOURCE_QUENCH: u8 = 4;
/// Redirect.
pub const TYPE_REDIRECT: u8 = 5;
/// Echo request.
pub const TYPE_ECHO_REQUEST: u8 = 8;
/// Time exceeded.
pub const TYPE_TIME_EXCEEDED: u8 = 11;
/// Parameter problem.
pub const TYPE_PARAM_PROBLEM: u8 = 12;
/// Destination unreachable code: fragmentation needed and DF set.
pub const CODE_FRAG_NEEDED: u8 = 4;
/// Destination unreachable code: port unreachable.
pub const CODE_PORT_UNREACH: u8 = 3;
/// Time exceeded code: TTL exceeded in transit.
pub const CODE_TTL_EXCEEDED: u8 = 0;
/// Length of the ICMP header (type, code, checksum, rest of header).
pub const HEADER_LEN: usize = 8;
/// TTL of the IPv4 packets the builders emit.
pub const REPLY_TTL: u8 = 64;
/// Maximum IPv4 total length of an emitted error (RFC 1812 §4.3.2.3).
pub const MAX_ERROR_IP_LEN: usize = 576;
/// Maximum bytes of the offending datagram quoted in an error
/// (576 - 20 byte IPv4 header - 8 byte ICMP header).
pub const MAX_QUOTE_LEN: usize = MAX_ERROR_IP_LEN - ipv4::MIN_HEADER_LEN - HEADER_LEN;

const FRAME_OVERHEAD: usize = ethernet::HEADER_LEN + ipv4::MIN_HEADER_LEN + HEADER_LEN;

mod field {
    use core::ops::Range;
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Range<usize> = 2..4;
    pub const REST: Range<usize> = 4..8;
    pub const ECHO_IDENT: Range<usize> = 4..6;
    pub const ECHO_SEQ: Range<usize> = 6..8;
}

/// Whether `msg_type` is an ICMP error message type (3, 4, 5, 11, 12), about
/// which no ICMP error may be sent.
#[must_use]
pub fn is_error_type(msg_type: u8) -> bool {
    matches!(
        msg_type,
        TYPE_DEST_UNREACH
            | TYPE_SOURCE_QUENCH
            | TYPE_REDIRECT
            | TYPE_TIME_EXCEEDED
            | TYPE_PARAM_PROBLEM
    )
}

/// Errors of the ICMPv4 view and builders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// ICMP message shorter than 8 bytes.
    #[error("icmp message shorter than {HEADER_LEN} bytes")]
    Truncated,
    /// Input frame's Ethernet header is invalid.
    #[error("input frame: {0}")]
    Ethernet(#[from] ethernet::Error),
    /// Input frame is not IPv4.
    #[error("input frame has ethertype {0:#06x}, not ipv4")]
    NotIpv4(u16),
    /// Input frame's IPv4 header is invalid.
    #[error("input frame: {0}")]
    Ipv4(#[from] ipv4::Error),
    /// Input packet is not ICMP.
    #[error("input packet has protocol {0}, not icmp")]
    NotIcmp(u8),
    /// Input ICMP message is not an echo request.
    #[error("input icmp type {0} is not an echo request")]
    NotEchoRequest(u8),
    /// Input IPv4 header or ICMP checksum does not verify.
    #[error("input checksum does not verify")]
    BadChecksum,
    /// Echo request is a fragment (reassembly is not supported).
    #[error("input packet is a fragment")]
    Fragmented,
    /// Offending packet is itself an ICMP error: never answer it.
    #[error("offending packet is an icmp error (type {0})")]
    OffendingIcmpError(u8),
    /// Offending packet is not the first fragment.
    #[error("offending packet is not the first fragment")]
    NotFirstFragment,
    /// Input was sent to a broadcast or multicast address (L2 or L3).
    #[error("input sent to a broadcast or multicast destination")]
    MulticastDestination,
    /// Input source cannot be answered (unspecified, loopback, broadcast or
    /// multicast IPv4 source, or group-bit Ethernet source).
    #[error("input source address cannot be answered")]
    BadSource,
    /// Output buffer too small.
    #[error("output buffer too short: need {need}, have {have}")]
    BufferTooShort {
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        have: usize,
    },
}

/// Zero-copy view of an ICMPv4 message (starting at the ICMP type byte and
/// running to the end of the buffer).
///
/// Accessors on a view made with [`Packet::new_unchecked`] panic if the
/// buffer is shorter than 8 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps `buffer` without validation.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps `buffer`, checking it holds the 8-byte header.
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

    fn be16(&self, r: core::ops::Range<usize>) -> u16 {
        let b = &self.buffer.as_ref()[r];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// Message type.
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    /// Message code.
    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    /// Checksum field.
    pub fn checksum(&self) -> u16 {
        self.be16(field::CHECKSUM)
    }

    /// Whether the checksum over the whole buffer verifies.
    pub fn verify_checksum(&self) -> bool {
        checksum::fold(checksum::sum(self.buffer.as_ref(), 0)) == 0
    }

    /// The 4-byte "rest of header" field as a big-endian u32.
    pub fn rest_of_header(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::REST];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    /// Echo identifier.
    pub fn echo_ident(&self) -> u16 {
        self.be16(field::ECHO_IDENT)
    }

    /// Echo sequence number.
    pub fn echo_seq(&self) -> u16 {
        self.be16(field::ECHO_SEQ)
    }

    /// Bytes after the 8-byte header (echo data, or the quoted datagram of
    /// an error).
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

impl<'a> Packet<&'a [u8]> {
    /// The data after the header with the lifetime of the underlying buffer.
    pub fn into_data(self) -> &'a [u8] {
        &self.buffer[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the message type.
    pub fn set_msg_type(&mut self, t: u8) {
        self.buffer.as_mut()[field::TYPE] = t;
    }

    /// Sets the message code.
    pub fn set_code(&mut self, c: u8) {
        self.buffer.as_mut()[field::CODE] = c;
    }

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, csum: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&csum.to_be_bytes());
    }

    /// Sets the "rest of header" field.
    pub fn set_rest_of_header(&mut self, v: u32) {
        self.buffer.as_mut()[field::REST].copy_from_slice(&v.to_be_bytes());
    }

    /// Sets the echo identifier.
    pub fn set_echo_ident(&mut self, v: u16) {
        self.buffer.as_mut()[field::ECHO_IDENT].copy_from_slice(&v.to_be_bytes());
    }

    /// Sets the echo sequence number.
    pub fn set_echo_seq(&mut self, v: u16) {
        self.buffer.as_mut()[field::ECHO_SEQ].copy_from_slice(&v.to_be_bytes());
    }

    /// Mutable data after the header.
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }

    /// Recomputes and stores the checksum over the whole buffer.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::fold(checksum::sum(self.buffer.as_ref(), 0));
        self.set_checksum(c);
    }
}

fn unanswerable_source(ip: Ipv4Addr) -> bool {
    ip.is_unspecified() || ip.is_loopback() || ip.is_broadcast() || ip.is_multicast()
}

fn group_destination(ip: Ipv4Addr) -> bool {
    ip.is_broadcast() || ip.is_multicast()
}

/// Writes Ethernet + option-less IPv4 headers for an emitted ICMP message
/// into `frame` (which must be exactly the frame length).
fn emit_l2_l3(
    frame: &mut [u8],
    eth_dst: MacAddr,
    eth_src: MacAddr,
    ip_src: Ipv4Addr,
    ip_dst: Ipv4Addr,
    dont_frag: bool,
    ident: u16,
) -> Result<(), Error> {
    let (eth, rest) = frame.split_at_mut(ethernet::HEADER_LEN.min(frame.len()));
    ethernet::emit_header(eth, eth_dst, eth_src, ethernet::ETHERTYPE_IPV4)?;
    let icmp_len = rest.len().saturating_sub(ipv4::MIN_HEADER_LEN);
    ipv4::emit_header(
        rest,
        ip_src,
        ip_dst,
        ipv4::PROTO_ICMP,
        icmp_len,
        REPLY_TTL,
        dont_frag,
        ident,
    )?;
    Ok(())
}

/// Builds the echo reply frame for a complete Ethernet + IPv4 + ICMP echo
/// request frame.
///
/// The reply goes from `our_mac` to the request's Ethernet source; IPv4
/// addresses are swapped, TTL is [`REPLY_TTL`], the identification and DF
/// flag are copied from the request, IP options are not carried over. The
/// ICMP identifier, sequence number and data are echoed and all checksums
/// filled. Returns the frame length.
///
/// The request is fully re-validated (IPv4 header and ICMP checksums
/// included); fragments and requests sent to a broadcast/multicast IPv4
/// address are refused.
pub fn emit_echo_reply_frame(
    buf: &mut [u8],
    request_frame: &[u8],
    our_mac: MacAddr,
) -> Result<usize, Error> {
    let eth = ethernet::Frame::new_checked(request_frame)?;
    if eth.ethertype() != ethernet::ETHERTYPE_IPV4 {
        return Err(Error::NotIpv4(eth.ethertype()));
    }
    let ip = ipv4::Packet::new_checked(eth.payload())?;
    if !ip.verify_checksum() {
        return Err(Error::BadChecksum);
    }
    if ip.protocol() != ipv4::PROTO_ICMP {
        return Err(Error::NotIcmp(ip.protocol()));
    }
    if ip.more_frags() || ip.frag_offset() != 0 {
        return Err(Error::Fragmented);
    }
    if group_destination(ip.dst()) {
        return Err(Error::MulticastDestination);
    }
    if unanswerable_source(ip.src()) || ethernet::is_multicast(&eth.src()) {
        return Err(Error::BadSource);
    }
    let icmp = Packet::new_checked(ip.payload())?;
    if icmp.msg_type() != TYPE_ECHO_REQUEST {
        return Err(Error::NotEchoRequest(icmp.msg_type()));
    }
    if !icmp.verify_checksum() {
        return Err(Error::BadChecksum);
    }
    let icmp_in = ip.payload();
    let l3_start = ethernet::HEADER_LEN + ipv4::MIN_HEADER_LEN;
    let need = l3_start + icmp_in.len();
    let have = buf.len();
    let Some(frame) = buf.get_mut(..need) else {
        return Err(Error::BufferTooShort { need, have });
    };
    emit_l2_l3(
        frame,
        eth.src(),
        our_mac,
        ip.dst(),
        ip.src(),
        ip.dont_frag(),
        ip.ident(),
    )?;
    let icmp_out = &mut frame[l3_start..];
    icmp_out.copy_from_slice(icmp_in);
    let mut out = Packet::new_unchecked(icmp_out);
    out.set_msg_type(TYPE_ECHO_REPLY);
    out.set_code(0);
    out.fill_checksum();
    Ok(need)
}

/// Builds an ICMP error frame (e.g. time exceeded, fragmentation needed)
/// about `offending_frame` (a complete Ethernet + IPv4 frame), addressed
/// back to its sender.
///
/// Ethernet: `our_mac` to the offending source MAC. IPv4: `our_ip` to the
/// offending source address, TTL [`REPLY_TTL`], DF clear, ident 0. ICMP:
/// `icmp_type`/`code`, `rest_of_header` stored big-endian (for
/// fragmentation-needed pass the next-hop MTU as `u32`; for time exceeded
/// pass 0), then as much of the offending IPv4 datagram (header included)
/// as keeps the emitted IPv4 packet within 576 bytes (RFC 1812), further
/// limited by `buf`, but never less than its header plus 8 payload bytes
/// (or the whole datagram if shorter). Returns the frame length.
///
/// Refuses (RFC 1122 §3.2.2 / RFC 1812 §4.3.2.7) when the offending packet is
/// an ICMP error, a non-first fragment, sent to an L2 or L3
/// broadcast/multicast destination, or from an unanswerable source. The
/// offending IPv4 header checksum is not verified (the caller has).
pub fn emit_error_frame(
    buf: &mut [u8],
    offending_frame: &[u8],
    our_mac: MacAddr,
    our_ip: Ipv4Addr,
    icmp_type: u8,
    code: u8,
    rest_of_header: u32,
) -> Result<usize, Error> {
    let eth = ethernet::Frame::new_checked(offending_frame)?;
    if eth.ethertype() != ethernet::ETHERTYPE_IPV4 {
        return Err(Error::NotIpv4(eth.ethertype()));
    }
    let ip = ipv4::Packet::new_checked(eth.payload())?;
    if ethernet::is_multicast(&eth.dst()) || group_destination(ip.dst()) {
        return Err(Error::MulticastDestination);
    }
    if unanswerable_source(ip.src()) || ethernet::is_multicast(&eth.src()) {
        return Err(Error::BadSource);
    }
    if ip.frag_offset() != 0 {
        return Err(Error::NotFirstFragment);
    }
    if ip.protocol() == ipv4::PROTO_ICMP {
        match ip.payload().first() {
            Some(&t) if is_error_type(t) => return Err(Error::OffendingIcmpError(t)),
            Some(_) => {}
            // Cannot tell whether it is an error: do not answer.
            None => return Err(Error::Truncated),
        }
    }
    let datagram = &eth.payload()[..usize::from(ip.total_len())];
    let min_quote = datagram.len().min(ip.header_len() + 8);
    let have = buf.len();
    let quote_len = datagram
        .len()
        .min(MAX_QUOTE_LEN)
        .min(have.saturating_sub(FRAME_OVERHEAD));
    if quote_len < min_quote {
        return Err(Error::BufferTooShort {
            need: FRAME_OVERHEAD + min_quote,
            have,
        });
    }
    let need = FRAME_OVERHEAD + quote_len;
    let Some(frame) = buf.get_mut(..need) else {
        return Err(Error::BufferTooShort { need, have });
    };
    emit_l2_l3(frame, eth.src(), our_mac, our_ip, ip.src(), false, 0)?;
    let mut out = Packet::new_unchecked(&mut frame[ethernet::HEADER_LEN + ipv4::MIN_HEADER_LEN..]);
    out.set_msg_type(icmp_type);
    out.set_code(code);
    out.set_rest_of_header(rest_of_header);
    out.data_mut().copy_from_slice(&datagram[..quote_len]);
    out.fill_checksum();
    Ok(need)
}
