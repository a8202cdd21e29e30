//! The workspace's few unsafe calls that crates without any other unsafe
//! need, each behind one small safe function whose `// JUSTIFICATION:`
//! says why there is no safe alternative and whose `// SAFETY:` says why
//! the call is sound. The crates calling them (`firewall`, `nsxcli`) can
//! then `#![forbid(unsafe_code)]`; new unsafe code goes here, reviewed on
//! its own, or stays in `agent` (sockets, ioctls) with the same comments.
//!
//! * [`prefetch`]: a CPU cache prefetch hint (conntrack's batched lookups).
//! * [`local_utc_offset`]: the local time zone's offset at an instant
//!   (`localtime_r`, which honours `TZ`).
//! * [`hostname`]: the kernel's host name (`gethostname`).

/// Asks the CPU to start loading the cache line holding `*p` into all
/// cache levels, without waiting for it. Only a hint: nothing is read
/// into the program and nothing changes if the line is already cached.
/// On architectures without a stable prefetch intrinsic this is a plain
/// load whose value is discarded through [`std::hint::black_box`].
#[inline]
pub fn prefetch<T: Copy>(p: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        // JUSTIFICATION: a prefetch instruction retires at once, so the CPU
        // keeps a whole batch of misses in flight. The safe alternative, a
        // plain load consumed by `black_box` (used on other architectures),
        // blocks retirement once the reorder buffer fills: 103 ns instead of
        // 65 ns per packet at 1M connections in batches of 32
        // (firewall/benches/conntrack.rs, batched_prefetch_lookup_track).
        // SAFETY: `_mm_prefetch` is only a hint to the cache hierarchy: it
        // never faults and never reads into the program; the address comes
        // from a live reference anyway. SSE is part of the x86_64 baseline.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                std::ptr::from_ref(p).cast::<i8>(),
            );
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    std::hint::black_box(*p);
}

/// The local time zone's offset east of UTC, in seconds, in effect at
/// `unix` (seconds since the epoch), as the C library's `localtime_r`
/// reports it (`TZ`, else `/etc/localtime`). `None` if the C library
/// cannot convert that instant.
#[must_use]
pub fn local_utc_offset(unix: i64) -> Option<i64> {
    // time_t is 64 bits on every target the workspace builds for (64-bit
    // Linux); the conversion only fails on a 32-bit time_t, for instants
    // past 2038, which the C library could not convert either.
    let t = libc::time_t::try_from(unix).ok()?;
    // JUSTIFICATION: the offset depends on the time zone database and on
    // `TZ`; the C library is the one reader of both that every box has,
    // and std has no binding for it.
    // SAFETY: `tm` is plain old data for which all-zero bytes are a valid
    // value; `localtime_r` (the re-entrant form: no shared static buffer)
    // only reads `t` and writes into the `tm` we own, and its result is
    // checked for null before `tm` is read.
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&raw const t, &raw mut tm).is_null() {
            return None;
        }
        Some(tm.tm_gmtoff)
    }
}

/// The host name as `gethostname` returns it, if it is non-empty UTF-8.
#[must_use]
pub fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // JUSTIFICATION: the system call is the kernel's own answer where
    // `/proc/sys/kernel/hostname` is not mounted; std has no binding.
    // SAFETY: the buffer is ours and its length is passed; gethostname
    // writes at most that many bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    // POSIX leaves a truncated name possibly unterminated: stop at the end.
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    let h = std::str::from_utf8(&buf[..end]).ok()?;
    (!h.is_empty()).then(|| h.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefetch_is_only_a_hint() {
        let v = [1u64, 2, 3];
        prefetch(&v[1]);
        prefetch(&v);
        assert_eq!(v, [1, 2, 3]);
    }

    #[test]
    fn local_offset_is_within_a_day() {
        let o = local_utc_offset(1_700_000_000).unwrap();
        assert!(o.abs() < 86_400, "{o}");
    }

    #[test]
    fn hostname_is_the_kernels() {
        let h = hostname().unwrap();
        if let Ok(k) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
            assert_eq!(h, k.trim());
        }
    }
}
