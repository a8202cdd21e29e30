//! Writes the firewall's packet log (rules `with log`) to a file in NSX's
//! `dfwpktlogs.log` line format, rotated by size (`FILE`, `FILE.1`, ...).
//! Runs on the control side: the datapath thread only fills a ring that is
//! moved into the shared [`Published`]; this task takes it once a second.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use firewall::pktlog::LogRecord;

use crate::dp::ctl::Published;

/// Rotate when the file reaches this size...
const ROTATE_BYTES: u64 = 10 << 20;
/// ...keeping this many old files.
const KEEP: usize = 3;
const EVERY: Duration = Duration::from_secs(1);

/// Maps the datapath clock (ns since `epoch`) to wall-clock time.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub epoch: Instant,
    pub epoch_wall: SystemTime,
}

impl Clock {
    /// RFC 3339 UTC with milliseconds, as NSX logs.
    pub fn format(&self, now_ns: u64) -> String {
        let at_mono = self.epoch + Duration::from_nanos(now_ns);
        let wall = self
            .epoch_wall
            .checked_add(at_mono.saturating_duration_since(self.epoch))
            .unwrap_or(self.epoch_wall);
        let d = wall
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let secs = d.as_secs();
        let (days, rem) = (secs / 86_400, secs % 86_400);
        let (y, m, dd) = civil_from_days(days);
        format!(
            "{y:04}-{m:02}-{dd:02}T{:02}:{:02}:{:02}.{:03}Z",
            rem / 3600,
            rem / 60 % 60,
            rem % 60,
            d.subsec_millis()
        )
    }
}

/// Days since 1970-01-01 to (year, month, day) (Howard Hinnant's algorithm).
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap,
    reason = "days are u64 seconds / 86400 (< 2^48, fit i64); month and day are 1..=12 and 1..=31 by construction"
)]
fn civil_from_days(days: u64) -> (i64, u32, u32) {
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Takes pending records once a second and appends them to `path`.
/// `ruleset_of(rule index)` names the ruleset of a record's rule.
pub async fn run(
    path: PathBuf,
    published: Arc<Mutex<Published>>,
    clock: Clock,
    ruleset_of: impl Fn(u32) -> String + Send + 'static,
) {
    let mut tick = tokio::time::interval(EVERY);
    loop {
        tick.tick().await;
        let (records, lost) = match published.lock() {
            Ok(mut s) => (
                std::mem::take(&mut s.fw_log),
                std::mem::take(&mut s.fw_log_lost),
            ),
            Err(_) => return,
        };
        if lost > 0 {
            tracing::warn!(lost, "packet log fell behind; records dropped");
        }
        if records.is_empty() {
            continue;
        }
        if let Err(e) = append(&path, &records, &clock, &ruleset_of) {
            tracing::warn!(path = %path.display(), error = %e, "cannot write the packet log");
        }
    }
}

fn append(
    path: &Path,
    records: &[LogRecord],
    clock: &Clock,
    ruleset_of: &impl Fn(u32) -> String,
) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if std::fs::metadata(path).is_ok_and(|m| m.len() >= ROTATE_BYTES) {
        rotate(path);
    }
    let mut text = String::new();
    for r in records {
        let line = r
            .line(&clock.format(r.now_ns), &ruleset_of(r.rule))
            .to_string();
        text.push_str(&line);
        text.push('\n');
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    f.write_all(text.as_bytes())
}

/// `FILE.(KEEP-1)` -> `FILE.KEEP` ... `FILE` -> `FILE.1`; the oldest goes.
fn rotate(path: &Path) {
    let name = |i: usize| PathBuf::from(format!("{}.{i}", path.display()));
    let _ = std::fs::remove_file(name(KEEP));
    for i in (1..KEEP).rev() {
        let _ = std::fs::rename(name(i), name(i + 1));
    }
    let _ = std::fs::rename(path, name(1));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_417), (2025, 11, 25));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn rotation_keeps_three() {
        let dir = std::env::temp_dir().join(format!("nsx-pktlog-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("dfwpktlogs.log");
        for i in 0..5 {
            std::fs::write(&p, format!("{i}")).unwrap();
            rotate(&p);
        }
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["dfwpktlogs.log.1", "dfwpktlogs.log.2", "dfwpktlogs.log.3"]
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("dfwpktlogs.log.1")).unwrap(),
            "4"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
