//! The coarse clock the connection tables of the `nat` and `lb` engines
//! keep last-seen times in: `u32` ticks of `2^TICK_SHIFT` ns (~16.8 ms),
//! wrapping every ~2.3 years, so an entry's time costs 4 bytes. Idle times
//! are wrapping differences; one above [`MAX_IDLE_TICKS`] is a clock that
//! went backwards and counts as 0.

/// Last-seen times are kept in ticks of `2^TICK_SHIFT` ns (~16.8 ms).
pub const TICK_SHIFT: u32 = 24;
/// Idle times above this many ticks are a clock that went backwards.
pub const MAX_IDLE_TICKS: u32 = 1 << 31;

/// The tick of `now_ns` (monotonic nanoseconds).
#[allow(
    clippy::cast_possible_truncation,
    reason = "the tick clock wraps every 2^32 ticks; idle times are wrapping differences"
)]
#[inline]
pub fn tick_of(now_ns: u64) -> u32 {
    (now_ns >> TICK_SHIFT) as u32
}

/// Ticks since `seen` (0 if the clock went backwards).
#[inline]
pub fn idle_ticks(seen: u32, now: u32) -> u32 {
    let d = now.wrapping_sub(seen);
    if d > MAX_IDLE_TICKS { 0 } else { d }
}

/// `secs` in ticks, rounded up (at most [`MAX_IDLE_TICKS`] - 1).
pub fn ticks_of_secs(secs: u32) -> u32 {
    let t = (u64::from(secs) * 1_000_000_000).div_ceil(1 << TICK_SHIFT);
    u32::try_from(t).map_or(MAX_IDLE_TICKS - 1, |t| t.min(MAX_IDLE_TICKS - 1))
}

/// Nanoseconds of `ticks`.
pub fn ns_of_ticks(ticks: u32) -> u64 {
    u64::from(ticks) << TICK_SHIFT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_wrap_and_round_up() {
        assert_eq!(idle_ticks(10, 5), 0);
        assert_eq!(idle_ticks(u32::MAX, 1), 2);
        assert_eq!(ticks_of_secs(1), 60);
        assert_eq!(ticks_of_secs(u32::MAX), MAX_IDLE_TICKS - 1);
        assert_eq!(tick_of(ns_of_ticks(7)), 7);
    }
}
