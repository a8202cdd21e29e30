//! Small conversions for the C calls of the host plumbing and the socket
//! loops, named so each cast's reason is said once.

/// `size_of::<T>()` as the `socklen_t` that socket calls take for `T`.
#[allow(
    clippy::cast_possible_truncation,
    reason = "the C structs passed to socket calls are a few hundred bytes"
)]
#[must_use]
pub const fn socklen_of<T>() -> libc::socklen_t {
    std::mem::size_of::<T>() as libc::socklen_t
}
