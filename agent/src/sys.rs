//! Small conversions for the C calls of the host plumbing and the socket
//! loops, and for clock readings, named so each one's reason is said once.

/// `size_of::<T>()` as the `socklen_t` that socket calls take for `T`.
#[allow(
    clippy::cast_possible_truncation,
    reason = "the C structs passed to socket calls are a few hundred bytes"
)]
#[must_use]
pub const fn socklen_of<T>() -> libc::socklen_t {
    std::mem::size_of::<T>() as libc::socklen_t
}

/// A libc constant declared `c_int` that the kernel's structs hold in 16
/// bits (address families, `ETH_P_*` protocol numbers).
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "address families and ETH_P_* numbers are small non-negative constants"
)]
#[must_use]
pub const fn c_u16(v: libc::c_int) -> u16 {
    v as u16
}

/// `d` in nanoseconds as a `u64`, saturating (a `u64` of nanoseconds
/// lasts 584 years, so only a nonsense duration saturates).
#[must_use]
pub fn saturating_nanos(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
