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

/// `d` in nanoseconds as a `u64`, saturating (a `u64` of nanoseconds
/// lasts 584 years, so only a nonsense duration saturates).
#[must_use]
pub fn saturating_nanos(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
