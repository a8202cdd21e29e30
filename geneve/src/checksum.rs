//! Internet checksum (RFC 1071) helpers: partial sums, folding, the IPv4
//! pseudo header and RFC 1624 incremental updates.

use core::net::Ipv4Addr;

/// Ones-complement partial sum of `data` (big-endian 16-bit words) added to
/// `initial`.
///
/// An odd trailing byte is treated as if padded with a zero byte. The result
/// is a carry-folded, *not* complemented, 16-bit sum held in a `u32`, so it
/// can be fed back as `initial` for the next chunk or handed to [`fold`].
/// Chaining only works when every chunk except the last has even length.
#[must_use]
#[inline]
pub fn sum(data: &[u8], initial: u32) -> u32 {
    if data.len() < LONG {
        return sum_short(data, initial);
    }
    // The ones-complement sum does not depend on byte order (RFC 1071,
    // 2(B)): summing little-endian words gives the byte-swapped sum, so the
    // words are added as they lie in memory (no swap per word, which lets
    // the compiler vectorise the loop) and the folded result is swapped
    // once. 32-bit words go into four 64-bit accumulators: 2^32 words
    // cannot overflow one.
    let mut acc = [0u64; 4];
    let mut blocks = data.chunks_exact(16);
    for b in &mut blocks {
        for (a, w) in acc.iter_mut().zip(b.chunks_exact(4)) {
            *a += u64::from(u32::from_le_bytes([w[0], w[1], w[2], w[3]]));
        }
    }
    let mut rest: u64 = 0;
    let mut quads = blocks.remainder().chunks_exact(4);
    for q in &mut quads {
        rest += u64::from(u32::from_le_bytes([q[0], q[1], q[2], q[3]]));
    }
    let mut words = quads.remainder().chunks_exact(2);
    for w in &mut words {
        rest += u64::from(u16::from_le_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        // Big-endian, an odd byte is the high half of a word padded with
        // zero; little-endian, the low half.
        rest += u64::from(*last);
    }
    let le = acc.iter().fold(u128::from(rest), |t, a| t + u128::from(*a));
    let swapped = u64::from(fold_carries128(le).swap_bytes());
    u32::from(fold_carries(swapped + u64::from(initial)))
}

/// From this length on, [`sum`] takes the vectorised loop; below it
/// (headers) the plain one costs less than the final folding.
const LONG: usize = 64;

/// [`sum`] of a short slice: big-endian 32-bit words into one 64-bit
/// accumulator (the same ones-complement result as 16-bit words, with half
/// the additions).
#[inline]
fn sum_short(data: &[u8], initial: u32) -> u32 {
    let mut acc = u64::from(initial);
    let mut quads = data.chunks_exact(4);
    for q in &mut quads {
        acc += u64::from(u32::from_be_bytes([q[0], q[1], q[2], q[3]]));
    }
    let mut words = quads.remainder().chunks_exact(2);
    for w in &mut words {
        acc += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        acc += u64::from(*last) << 8;
    }
    u32::from(fold_carries(acc))
}

/// Folds a 128-bit accumulator into 16 bits (end-around carry).
#[allow(
    clippy::cast_possible_truncation,
    reason = "the loop only ends once acc <= 0xffff"
)]
fn fold_carries128(mut acc: u128) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// Folds the carries of a 64-bit accumulator into 16 bits (end-around carry).
#[allow(
    clippy::cast_possible_truncation,
    reason = "the loop only ends once acc <= 0xffff"
)]
fn fold_carries(mut acc: u64) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// Folds a partial sum and complements it: the value to store in a checksum
/// field (or, when summing over data that includes a correct checksum, `0`).
#[must_use]
pub fn fold(sum: u32) -> u16 {
    !fold_carries(u64::from(sum))
}

/// Partial sum of the IPv4 pseudo header used by UDP and TCP checksums.
#[must_use]
pub fn pseudo_header_v4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: u16) -> u32 {
    let s = src.octets();
    let d = dst.octets();
    let words = [
        u16::from_be_bytes([s[0], s[1]]),
        u16::from_be_bytes([s[2], s[3]]),
        u16::from_be_bytes([d[0], d[1]]),
        u16::from_be_bytes([d[2], d[3]]),
        u16::from(proto),
        len,
    ];
    let acc = words.iter().map(|&w| u64::from(w)).sum();
    u32::from(fold_carries(acc))
}

/// Incrementally updates checksum `old_csum` after the 16-bit word `old` of
/// the covered data changed to `new` (RFC 1624, equation 3:
/// `HC' = ~(~HC + ~m + m')`).
///
/// The result equals a full recompute except in the degenerate case where
/// the updated data is entirely zero (then this yields `0x0000` where a
/// recompute yields `0xffff`; both are the same value in ones-complement).
#[must_use]
pub fn update16(old_csum: u16, old: u16, new: u16) -> u16 {
    let acc = u64::from(!old_csum) + u64::from(!old) + u64::from(new);
    !fold_carries(acc)
}

/// [`update16`] for a 32-bit field (an IPv4 address) that changed from `old`
/// to `new`: both of its 16-bit words, in one step.
#[must_use]
pub fn update32(old_csum: u16, old: u32, new: u32) -> u16 {
    let [o0, o1, o2, o3] = old.to_be_bytes();
    let [n0, n1, n2, n3] = new.to_be_bytes();
    let acc = u64::from(!old_csum)
        + u64::from(!u16::from_be_bytes([o0, o1]))
        + u64::from(!u16::from_be_bytes([o2, o3]))
        + u64::from(u16::from_be_bytes([n0, n1]))
        + u64::from(u16::from_be_bytes([n2, n3]));
    !fold_carries(acc)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 1071's definition, word by word: the reference [`sum`] must
    /// equal.
    fn reference_sum(data: &[u8], initial: u32) -> u32 {
        let mut acc = u64::from(initial);
        for w in data.chunks(2) {
            let hi = u64::from(w[0]) << 8;
            acc += hi | w.get(1).map_or(0, |b| u64::from(*b));
        }
        u32::from(fold_carries(acc))
    }

    #[test]
    fn the_fast_sum_is_rfc1071s_for_every_length_and_alignment() {
        let mut data = [0u8; 600];
        for (i, b) in data.iter_mut().enumerate() {
            *b = (i.wrapping_mul(151) ^ 0xa5).to_le_bytes()[0];
        }
        let ones = [0xffu8; 300];
        for buf in [&data[..], &ones[..]] {
            for start in 0..4 {
                for len in 0..buf.len() - start {
                    let d = &buf[start..start + len];
                    for initial in [0, 1, 0xffff, 0x1_2345] {
                        assert_eq!(
                            fold(sum(d, initial)),
                            fold(reference_sum(d, initial)),
                            "start {start} len {len} initial {initial:#x}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3 example bytes.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(sum(&data, 0), 0xddf2);
        assert_eq!(fold(sum(&data, 0)), !0xddf2);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(sum(&[0x12, 0x34, 0x56], 0), 0x1234 + 0x5600);
    }

    #[test]
    fn chaining_matches_single_pass() {
        let data: [u8; 7] = [1, 2, 3, 4, 5, 6, 7];
        assert_eq!(sum(&data[4..], sum(&data[..4], 0)), sum(&data, 0));
    }

    #[test]
    fn large_initial_does_not_overflow() {
        let _ = fold(sum(&[0xff; 64], u32::MAX));
    }

    #[test]
    fn incremental_update_matches_recompute() {
        let mut hdr = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        let c = fold(sum(&hdr, 0));
        assert_eq!(c, 0xb861);
        hdr[8] = 0x3f;
        let c2 = update16(c, 0x4011, 0x3f11);
        assert_eq!(c2, fold(sum(&hdr[..10], sum(&[0, 0], sum(&hdr[12..], 0)))));
    }

    #[test]
    fn update32_is_two_update16() {
        let c = 0x1c46;
        let (old, new) = (0xc0a8_0001_u32, 0x0a01_0203_u32);
        let two = update16(update16(c, 0xc0a8, 0x0a01), 0x0001, 0x0203);
        assert_eq!(update32(c, old, new), two);
        let mut hdr = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        let c = fold(sum(&hdr, 0));
        hdr[12..16].copy_from_slice(&new.to_be_bytes());
        hdr[10..12].copy_from_slice(&update32(c, old, new).to_be_bytes());
        assert_eq!(fold(sum(&hdr, 0)), 0);
    }
}
