//! The pipeline's narrowing conversions, each named for why it cannot lose
//! anything that matters: lengths within one frame into 16-bit header
//! fields, and counts into the modular arithmetic of sequence numbers and
//! IPv4 identifications. Free in release builds (a plain cast); debug
//! builds check the length bound.

/// A length or offset within one frame as a 16-bit header field. Frames,
/// merged ones included ([`crate::queue::MAX_MERGED`]), hold at most 65535
/// bytes from the IPv4 header on, so every length the pipeline writes fits.
#[inline(always)]
#[allow(
    clippy::cast_possible_truncation,
    reason = "lengths within a frame are below 64 KiB (debug-asserted)"
)]
pub(crate) fn len16(n: usize) -> u16 {
    debug_assert!(n <= usize::from(u16::MAX), "{n} does not fit 16 bits");
    n as u16
}

/// `n` modulo 2^16, for IPv4 identification arithmetic (which wraps).
#[inline(always)]
#[allow(
    clippy::cast_possible_truncation,
    reason = "identifications wrap at 2^16"
)]
pub(crate) fn wrap16(n: usize) -> u16 {
    n as u16
}

/// `n` modulo 2^32, for TCP sequence-number arithmetic (which wraps).
#[inline(always)]
#[allow(
    clippy::cast_possible_truncation,
    reason = "sequence numbers wrap at 2^32"
)]
pub(crate) fn wrap32(n: usize) -> u32 {
    n as u32
}
