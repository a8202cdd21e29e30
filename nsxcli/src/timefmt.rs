//! Wall-clock formatting without a date crate: C `ctime` (`Fri Dec 22
//! 05:22:18 2017`, as the seed's `Connection Time`), capture timestamps
//! (`05:22:18.123456`) and ISO dates, in UTC, a fixed offset or the box's
//! local time zone (libc `localtime_r`, which honours `TZ`, through
//! [`audited::local_utc_offset`]).

const WEEKDAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// The time zone times are shown in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tz {
    /// The box's local time zone (`TZ`, else `/etc/localtime`).
    Local,
    /// A fixed offset east of UTC, in seconds (tests).
    Fixed(i64),
}

impl Tz {
    /// UTC.
    pub const UTC: Tz = Tz::Fixed(0);

    /// Offset east of UTC (seconds) in effect at `unix`.
    #[must_use]
    pub fn offset(self, unix: i64) -> i64 {
        match self {
            Tz::Fixed(o) => o,
            Tz::Local => local_offset(unix),
        }
    }
}

/// `localtime_r`'s `tm_gmtoff` for `unix` (0 if the C library cannot tell).
fn local_offset(unix: i64) -> i64 {
    audited::local_utc_offset(unix).unwrap_or(0)
}

/// A broken-down civil time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Civil {
    year: i64,
    month: u32, // 1..=12
    day: u32,   // 1..=31
    hour: u32,
    min: u32,
    sec: u32,
    weekday: usize, // 0 = Sunday
}

/// Days since 1970-01-01 -> (year, month, day) (H. Hinnant's algorithm).
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "month and day are 1..=12 and 1..=31 by construction"
)]
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let d = doy - (153 * mp + 2) / 5 + 1; // [1, 31]
    let m = if mp < 10 { mp + 3 } else { mp - 9 }; // [1, 12]
    let y = if m <= 2 { y + 1 } else { y };
    // Both are in range by construction.
    (y, m as u32, d as u32)
}

#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "rem_euclid keeps seconds of day in 0..86400 and weekday in 0..7"
)]
fn civil(unix: i64, offset: i64) -> Civil {
    let t = unix.saturating_add(offset);
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400) as u32;
    let (year, month, day) = civil_from_days(days);
    Civil {
        year,
        month,
        day,
        hour: secs / 3600,
        min: secs / 60 % 60,
        sec: secs % 60,
        // 1970-01-01 was a Thursday.
        weekday: (days + 4).rem_euclid(7) as usize,
    }
}

/// C `ctime` without the newline: `Fri Dec 22 05:22:18 2017` (day of month
/// padded with a space, like `ctime`'s `%3d`).
#[must_use]
pub fn ctime(unix: i64, tz: Tz) -> String {
    let c = civil(unix, tz.offset(unix));
    format!(
        "{} {} {:>2} {:02}:{:02}:{:02} {}",
        WEEKDAYS[c.weekday % 7],
        MONTHS[(c.month as usize + 11) % 12],
        c.day,
        c.hour,
        c.min,
        c.sec,
        c.year
    )
}

/// `HH:MM:SS.uuuuuu` of a Unix time in nanoseconds (capture lines).
#[must_use]
pub fn clock_us(ts_ns: u64, tz: Tz) -> String {
    let secs = i64::try_from(ts_ns / 1_000_000_000).unwrap_or(i64::MAX);
    let us = ts_ns % 1_000_000_000 / 1000;
    let c = civil(secs, tz.offset(secs));
    format!("{:02}:{:02}:{:02}.{us:06}", c.hour, c.min, c.sec)
}

/// `YYYY-MM-DD HH:MM:SS` (certificate dates).
#[must_use]
pub fn date_time(unix: i64, tz: Tz) -> String {
    let c = civil(unix, tz.offset(unix));
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        c.year, c.month, c.day, c.hour, c.min, c.sec
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_connection_time() {
        // The seed's "Connection Time : Fri Dec 22 05:22:18 2017" (UTC).
        assert_eq!(ctime(1_513_920_138, Tz::UTC), "Fri Dec 22 05:22:18 2017");
    }

    #[test]
    fn ctime_pads_the_day_and_handles_offsets_and_epoch() {
        assert_eq!(ctime(0, Tz::UTC), "Thu Jan  1 00:00:00 1970");
        assert_eq!(ctime(951_782_400, Tz::UTC), "Tue Feb 29 00:00:00 2000");
        assert_eq!(ctime(0, Tz::Fixed(9 * 3600)), "Thu Jan  1 09:00:00 1970");
        assert_eq!(ctime(-1, Tz::UTC), "Wed Dec 31 23:59:59 1969");
        // Never panics at the extremes.
        let _ = ctime(i64::MAX, Tz::UTC);
        let _ = ctime(i64::MIN, Tz::Fixed(-3600));
    }

    #[test]
    fn clock_and_date() {
        assert_eq!(
            clock_us(1_513_920_138_123_456_789, Tz::UTC),
            "05:22:18.123456"
        );
        assert_eq!(date_time(1_513_920_138, Tz::UTC), "2017-12-22 05:22:18");
        let _ = clock_us(u64::MAX, Tz::UTC);
    }

    #[test]
    fn civil_round_trip_over_four_centuries() {
        // Every 1000th day from 1600 to 2400 is a valid date and days
        // advance monotonically.
        let mut last = (i64::MIN, 0, 0);
        for days in (-135_000..158_000).step_by(1000) {
            let d = civil_from_days(days);
            assert!((1..=12).contains(&d.1) && (1..=31).contains(&d.2));
            assert!(d > last);
            last = d;
        }
    }
}
