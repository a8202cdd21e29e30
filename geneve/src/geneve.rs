//! Geneve (RFC 8926) header view, option TLV iterator, the VMware
//! tunnel-endpoint option, receiver-side validation ([`parse`]) and emit.
//!
//! Header layout (RFC 8926 §3.4), network byte order:
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! |Ver|  Opt Len  |O|C|    Rsvd.  |          Protocol Type        |
//! |        Virtual Network Identifier (VNI)       |    Reserved   |
//! |                    Variable-Length Options                    |
//! ```
//!
//! Option TLV (§3.5): `Option Class (16) | Type (8) | R (3) | Length (5)`,
//! then `Length * 4` bytes of data. The high bit of Type marks the option
//! as critical.

use crate::ethernet;

/// IANA UDP port of Geneve.
pub const GENEVE_PORT: u16 = 6081;
/// Protocol type of an encapsulated Ethernet frame (Transparent Ethernet
/// Bridging).
pub const PROTO_ETHERNET: u16 = 0x6558;
/// Option class of the VMware option.
pub const VMWARE_OPT_CLASS: u16 = 0x0104;
/// Option type of the VMware tunnel-endpoint-id option (critical).
pub const VMWARE_OPT_TYPE: u8 = 0x80;
/// Length of the fixed Geneve header.
pub const HEADER_LEN: usize = 8;
/// Length of the VMware option TLV (4-byte option header + 4 data bytes).
pub const VMWARE_OPT_LEN: usize = 8;
/// What we put in front of the inner frame: the fixed header and our one
/// option, 8 + 8 = 16.
pub const ENCAP_HEADER_LEN: usize = HEADER_LEN + VMWARE_OPT_LEN;
/// Length of an option TLV header.
pub const OPT_HEADER_LEN: usize = 4;
/// Largest VNI (24 bits).
pub const MAX_VNI: u32 = 0x00ff_ffff;
/// Largest tunnel endpoint id carried in the VMware option (31 bits).
pub const MAX_TEP_ID: u32 = 0x7fff_ffff;
/// Bit of the option type marking a critical option.
pub const OPT_TYPE_CRITICAL: u8 = 0x80;

mod field {
    use core::ops::Range;
    pub const VER_OPTLEN: usize = 0;
    pub const FLAGS: usize = 1;
    pub const PROTOCOL: Range<usize> = 2..4;
    pub const VNI: Range<usize> = 4..7;
    pub const RESERVED: usize = 7;
}

const FLAG_OAM: u8 = 0x80;
const FLAG_CRITICAL: u8 = 0x40;

/// Typed reasons a received Geneve packet is dropped (or an emit refused).
///
/// The datapath keeps one counter per variant, see [`ALL_REASONS`] and
/// [`Error::index`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Shorter than the fixed header, or the inner payload is shorter than
    /// an Ethernet header (or, on emit, the output buffer is too small).
    #[error("geneve packet truncated")]
    Truncated,
    /// Version field is not 0.
    #[error("geneve version {0} not supported")]
    BadVersion(u8),
    /// The header's option length runs past the end of the packet.
    #[error("geneve options length {opt_len} exceeds the {available} bytes available")]
    OptionsOverrun {
        /// Options length in bytes from the header.
        opt_len: usize,
        /// Bytes after the fixed header.
        available: usize,
    },
    /// An option TLV runs past the options area, or the area ends inside an
    /// option header.
    #[error("geneve option length inconsistent with the options area")]
    BadOptionLength,
    /// A critical option this receiver does not understand.
    #[error("unknown critical geneve option class {class:#06x} type {typ:#04x}")]
    UnknownCriticalOption {
        /// Option class.
        class: u16,
        /// Option type.
        typ: u8,
    },
    /// Protocol type other than Ethernet (0x6558).
    #[error("geneve protocol type {0:#06x} not supported")]
    BadProtocol(u16),
    /// A critical option is present but the C bit is clear.
    #[error("critical geneve option present without the C flag")]
    MissingCriticalFlag,
    /// VMware option with data length other than 4 bytes, top bit of the
    /// tep id set, or present more than once (also: tep id out of range on
    /// emit).
    #[error("malformed vmware geneve option")]
    BadVmwareOption,
    /// VNI does not fit in 24 bits (emit only).
    #[error("vni {0:#x} does not fit in 24 bits")]
    VniTooLarge(u32),
}

/// Stable snake_case names of all [`Error`] variants, indexed by
/// [`Error::index`] (for counter tables).
pub const ALL_REASONS: [&str; 9] = [
    "truncated",
    "bad_version",
    "options_overrun",
    "bad_option_length",
    "unknown_critical_option",
    "bad_protocol",
    "missing_critical_flag",
    "bad_vmware_option",
    "vni_too_large",
];

impl Error {
    /// Index of this variant in [`ALL_REASONS`].
    #[must_use]
    pub const fn index(&self) -> usize {
        match self {
            Error::Truncated => 0,
            Error::BadVersion(_) => 1,
            Error::OptionsOverrun { .. } => 2,
            Error::BadOptionLength => 3,
            Error::UnknownCriticalOption { .. } => 4,
            Error::BadProtocol(_) => 5,
            Error::MissingCriticalFlag => 6,
            Error::BadVmwareOption => 7,
            Error::VniTooLarge(_) => 8,
        }
    }

    /// Stable snake_case name of this variant (e.g. `"bad_version"`).
    #[must_use]
    pub const fn reason(&self) -> &'static str {
        ALL_REASONS[self.index()]
    }
}

/// One option TLV.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opt<'a> {
    /// Option class.
    pub class: u16,
    /// Option type (high bit = critical).
    pub typ: u8,
    /// `typ & 0x80`.
    pub critical: bool,
    /// Option data (`Length * 4` bytes).
    pub data: &'a [u8],
}

impl Opt<'_> {
    /// Whether this is the VMware tunnel-endpoint option.
    #[must_use]
    pub fn is_vmware(&self) -> bool {
        self.class == VMWARE_OPT_CLASS && self.typ == VMWARE_OPT_TYPE
    }

    /// Decodes the VMware option's tep id (4 data bytes, big-endian, top
    /// bit clear).
    pub fn vmware_tep_id(&self) -> Result<u32, Error> {
        let &[a, b, c, d] = self.data else {
            return Err(Error::BadVmwareOption);
        };
        let v = u32::from_be_bytes([a, b, c, d]);
        if v > MAX_TEP_ID {
            return Err(Error::BadVmwareOption);
        }
        Ok(v)
    }
}

/// Iterator over the option TLVs of an options area.
///
/// Yields `Err(Error::BadOptionLength)` once (then ends) if an option runs
/// past the area or the area ends inside an option header.
#[derive(Debug, Clone)]
pub struct Options<'a> {
    rest: &'a [u8],
}

impl<'a> Options<'a> {
    /// Iterates over the TLVs in `area` (the options area only).
    #[must_use]
    pub const fn new(area: &'a [u8]) -> Self {
        Self { rest: area }
    }
}

impl<'a> Iterator for Options<'a> {
    type Item = Result<Opt<'a>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let rest = core::mem::take(&mut self.rest);
        let [c0, c1, typ, len, tail @ ..] = rest else {
            return Some(Err(Error::BadOptionLength));
        };
        let data_len = usize::from(len & 0x1f) * 4;
        if data_len > tail.len() {
            return Some(Err(Error::BadOptionLength));
        }
        let (data, next) = tail.split_at(data_len);
        self.rest = next;
        Some(Ok(Opt {
            class: u16::from_be_bytes([*c0, *c1]),
            typ: *typ,
            critical: typ & OPT_TYPE_CRITICAL != 0,
            data,
        }))
    }
}

/// Zero-copy view of a Geneve header (the UDP payload).
///
/// Accessors on a view made with [`Header::new_unchecked`] panic if the
/// buffer is shorter than what they read; [`Header::new_checked`] guarantees
/// the fixed header and the options area are present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Header<T> {
    /// Wraps `buffer` without validation.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps `buffer`, checking only that the fixed header and the options
    /// area it announces fit. Semantic checks are in [`parse`].
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let h = Self { buffer };
        let len = h.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let opt_len = h.opt_len_bytes();
        if opt_len > len - HEADER_LEN {
            return Err(Error::OptionsOverrun {
                opt_len,
                available: len - HEADER_LEN,
            });
        }
        Ok(h)
    }

    /// Returns the wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Version (2 bits).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_OPTLEN] >> 6
    }

    /// Length of the options area in bytes (Opt Len field * 4).
    pub fn opt_len_bytes(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_OPTLEN] & 0x3f) * 4
    }

    /// OAM (O) flag.
    pub fn oam(&self) -> bool {
        self.buffer.as_ref()[field::FLAGS] & FLAG_OAM != 0
    }

    /// Critical-options-present (C) flag.
    pub fn critical(&self) -> bool {
        self.buffer.as_ref()[field::FLAGS] & FLAG_CRITICAL != 0
    }

    /// The 6 reserved flag bits.
    pub fn reserved_flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS] & 0x3f
    }

    /// Protocol type of the payload.
    pub fn protocol(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::PROTOCOL];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// Virtual network identifier (24 bits).
    pub fn vni(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::VNI];
        u32::from_be_bytes([0, b[0], b[1], b[2]])
    }

    /// The reserved byte after the VNI.
    pub fn reserved(&self) -> u8 {
        self.buffer.as_ref()[field::RESERVED]
    }

    /// The raw options area.
    pub fn options_area(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..HEADER_LEN + self.opt_len_bytes()]
    }

    /// Iterator over the option TLVs.
    pub fn options(&self) -> Options<'_> {
        Options::new(self.options_area())
    }

    /// The encapsulated payload (after the options).
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN + self.opt_len_bytes()..]
    }
}

impl<'a> Header<&'a [u8]> {
    /// The payload with the lifetime of the underlying buffer.
    pub fn into_payload(self) -> &'a [u8] {
        let start = HEADER_LEN + self.opt_len_bytes();
        &self.buffer[start..]
    }

    /// The option iterator with the lifetime of the underlying buffer.
    pub fn into_options(self) -> Options<'a> {
        let end = HEADER_LEN + self.opt_len_bytes();
        Options::new(&self.buffer[HEADER_LEN..end])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Header<T> {
    /// Sets the version (low 2 bits used).
    pub fn set_version(&mut self, v: u8) {
        let b = &mut self.buffer.as_mut()[field::VER_OPTLEN];
        *b = (*b & 0x3f) | ((v & 0x03) << 6);
    }

    /// Sets the options length in bytes (stored as `bytes / 4`, 6 bits; so
    /// at most 252, and rounded down to a multiple of 4).
    pub fn set_opt_len_bytes(&mut self, bytes: usize) {
        // At most 0x3f: the conversion cannot fail.
        let words = u8::try_from((bytes / 4).min(0x3f)).unwrap_or(0x3f);
        let b = &mut self.buffer.as_mut()[field::VER_OPTLEN];
        *b = (*b & 0xc0) | words;
    }

    /// Sets the OAM flag.
    pub fn set_oam(&mut self, on: bool) {
        self.set_flag(FLAG_OAM, on);
    }

    /// Sets the critical-options-present flag.
    pub fn set_critical(&mut self, on: bool) {
        self.set_flag(FLAG_CRITICAL, on);
    }

    /// Sets the 6 reserved flag bits (low 6 bits of `v`).
    pub fn set_reserved_flags(&mut self, v: u8) {
        let b = &mut self.buffer.as_mut()[field::FLAGS];
        *b = (*b & 0xc0) | (v & 0x3f);
    }

    fn set_flag(&mut self, mask: u8, on: bool) {
        let b = &mut self.buffer.as_mut()[field::FLAGS];
        if on {
            *b |= mask;
        } else {
            *b &= !mask;
        }
    }

    /// Sets the protocol type.
    pub fn set_protocol(&mut self, proto: u16) {
        self.buffer.as_mut()[field::PROTOCOL].copy_from_slice(&proto.to_be_bytes());
    }

    /// Sets the VNI (low 24 bits of `vni`).
    pub fn set_vni(&mut self, vni: u32) {
        let b = vni.to_be_bytes();
        self.buffer.as_mut()[field::VNI].copy_from_slice(&b[1..]);
    }

    /// Sets the reserved byte after the VNI.
    pub fn set_reserved(&mut self, v: u8) {
        self.buffer.as_mut()[field::RESERVED] = v;
    }

    /// Mutable options area.
    pub fn options_area_mut(&mut self) -> &mut [u8] {
        let end = HEADER_LEN + self.opt_len_bytes();
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }

    /// Mutable payload (after the options).
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = HEADER_LEN + self.opt_len_bytes();
        &mut self.buffer.as_mut()[start..]
    }
}

/// Result of validating a received Geneve packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parsed<'a> {
    /// Virtual network identifier.
    pub vni: u32,
    /// OAM flag.
    pub oam: bool,
    /// Tunnel endpoint id from the VMware option, if present.
    pub tep_id: Option<u32>,
    /// The inner Ethernet frame (at least 14 bytes).
    pub payload: &'a [u8],
}

/// Full receiver validation of a Geneve UDP payload.
///
/// Checks, in order: fixed header present (`Truncated`), version 0
/// (`BadVersion`), options area within the packet (`OptionsOverrun`), then
/// per option in order: TLV fits (`BadOptionLength`), a critical option
/// requires the C flag (`MissingCriticalFlag`), the VMware option (class
/// 0x0104 type 0x80) must carry exactly a 31-bit tep id and appear at most
/// once (`BadVmwareOption`), any other critical option is
/// `UnknownCriticalOption`, other non-critical options are skipped; then
/// protocol 0x6558 (`BadProtocol`) and an inner payload of at least an
/// Ethernet header (`Truncated`). Reserved bits are ignored. No allocation.
pub fn parse(udp_payload: &[u8]) -> Result<Parsed<'_>, Error> {
    if udp_payload.len() < HEADER_LEN {
        return Err(Error::Truncated);
    }
    // Check the version before the options length: the length field of
    // another version means nothing.
    let version = Header::new_unchecked(udp_payload).version();
    if version != 0 {
        return Err(Error::BadVersion(version));
    }
    let hdr = Header::new_checked(udp_payload)?;
    let c_flag = hdr.critical();
    let mut tep_id = None;
    for opt in hdr.options() {
        let opt = opt?;
        if opt.critical && !c_flag {
            return Err(Error::MissingCriticalFlag);
        }
        if opt.is_vmware() {
            if tep_id.is_some() {
                return Err(Error::BadVmwareOption);
            }
            tep_id = Some(opt.vmware_tep_id()?);
        } else if opt.critical {
            return Err(Error::UnknownCriticalOption {
                class: opt.class,
                typ: opt.typ,
            });
        }
    }
    if hdr.protocol() != PROTO_ETHERNET {
        return Err(Error::BadProtocol(hdr.protocol()));
    }
    let payload = hdr.into_payload();
    if payload.len() < ethernet::HEADER_LEN {
        return Err(Error::Truncated);
    }
    Ok(Parsed {
        vni: hdr.vni(),
        oam: hdr.oam(),
        tep_id,
        payload,
    })
}

/// High-level representation of the Geneve header we send: Ethernet
/// payload, optional VMware option, no other options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// Virtual network identifier (24 bits).
    pub vni: u32,
    /// OAM flag.
    pub oam: bool,
    /// Tep id for the VMware option (31 bits); `None` emits no option.
    pub tep_id: Option<u32>,
}

impl Repr {
    /// Validates and extracts the representation from a received packet
    /// (see [`parse`]).
    pub fn parse(udp_payload: &[u8]) -> Result<Self, Error> {
        let p = parse(udp_payload)?;
        Ok(Self {
            vni: p.vni,
            oam: p.oam,
            tep_id: p.tep_id,
        })
    }

    /// Length of the header this emits: 8, or 16 with the VMware option.
    #[must_use]
    pub const fn buffer_len(&self) -> usize {
        match self.tep_id {
            Some(_) => ENCAP_HEADER_LEN,
            None => HEADER_LEN,
        }
    }

    /// Writes the header (and option) into `buf[..self.buffer_len()]`,
    /// returning the number of bytes written. The payload is not touched.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, Error> {
        if self.vni > MAX_VNI {
            return Err(Error::VniTooLarge(self.vni));
        }
        if self.tep_id.is_some_and(|t| t > MAX_TEP_ID) {
            return Err(Error::BadVmwareOption);
        }
        let len = self.buffer_len();
        let Some(out) = buf.get_mut(..len) else {
            return Err(Error::Truncated);
        };
        let mut hdr = Header::new_unchecked(&mut *out);
        hdr.set_version(0);
        hdr.set_opt_len_bytes(len - HEADER_LEN);
        hdr.set_oam(self.oam);
        hdr.set_critical(self.tep_id.is_some());
        hdr.set_reserved_flags(0);
        hdr.set_protocol(PROTO_ETHERNET);
        hdr.set_vni(self.vni);
        hdr.set_reserved(0);
        if let Some(tep) = self.tep_id {
            let opt = &mut out[HEADER_LEN..ENCAP_HEADER_LEN];
            opt[0..2].copy_from_slice(&VMWARE_OPT_CLASS.to_be_bytes());
            opt[2] = VMWARE_OPT_TYPE;
            opt[3] = 1; // R bits 0, length 1 word
            opt[4..8].copy_from_slice(&tep.to_be_bytes());
        }
        Ok(len)
    }
}

/// Writes exactly [`ENCAP_HEADER_LEN`] bytes: the Geneve header (version 0,
/// C set, O clear, protocol 0x6558, `vni`) and the VMware option carrying
/// `tep_id`. Returns 16.
///
/// Errors: `VniTooLarge` if `vni > 0xffffff`, `BadVmwareOption` if
/// `tep_id > 0x7fffffff`, `Truncated` if `buf` is shorter than 16 bytes.
pub fn emit_vmware(buf: &mut [u8], vni: u32, tep_id: u32) -> Result<usize, Error> {
    Repr {
        vni,
        oam: false,
        tep_id: Some(tep_id),
    }
    .emit(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_consistent() {
        let all = [
            Error::Truncated,
            Error::BadVersion(1),
            Error::OptionsOverrun {
                opt_len: 4,
                available: 0,
            },
            Error::BadOptionLength,
            Error::UnknownCriticalOption {
                class: 1,
                typ: 0x80,
            },
            Error::BadProtocol(0x0800),
            Error::MissingCriticalFlag,
            Error::BadVmwareOption,
            Error::VniTooLarge(1 << 24),
        ];
        assert_eq!(all.len(), ALL_REASONS.len());
        for (i, e) in all.iter().enumerate() {
            assert_eq!(e.index(), i);
            assert_eq!(e.reason(), ALL_REASONS[i]);
        }
    }

    #[test]
    fn emit_vmware_bytes() {
        let mut b = [0u8; 16];
        assert_eq!(emit_vmware(&mut b, 0x238c, 0x0102_0304), Ok(16));
        assert_eq!(
            b,
            [
                0x02, 0x40, 0x65, 0x58, 0x00, 0x23, 0x8c, 0x00, 0x01, 0x04, 0x80, 0x01, 1, 2, 3, 4
            ]
        );
        assert_eq!(
            emit_vmware(&mut b, 1 << 24, 0),
            Err(Error::VniTooLarge(1 << 24))
        );
        assert_eq!(
            emit_vmware(&mut b, 0, 0x8000_0000),
            Err(Error::BadVmwareOption)
        );
        assert_eq!(emit_vmware(&mut b[..15], 0, 0), Err(Error::Truncated));
    }

    #[test]
    fn repr_without_option() {
        let mut b = [0u8; 22];
        let r = Repr {
            vni: 7,
            oam: true,
            tep_id: None,
        };
        assert_eq!(r.emit(&mut b), Ok(8));
        assert_eq!(Repr::parse(&b), Ok(r));
    }
}
