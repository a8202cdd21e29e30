//! Processes the agent started that may outlive it (overlay mode's sshd
//! listeners, when the agent is SIGKILLed): recorded as pid + start time +
//! a marker their command line contains, so a reused pid is never
//! signalled, and stopped with SIGTERM, a bounded wait, then SIGKILL. Such
//! a process is no longer our child (it was re-parented), so it is watched
//! through `/proc`, not `waitpid`.
//!
//! Also what the host module asks of other processes: their name, and
//! whether they share the agent's network namespace.

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::state::ProcRec;

/// How long SIGKILL may take to show.
const KILL_WAIT: Duration = Duration::from_secs(2);
/// How often a stopping process is looked at.
const POLL: Duration = Duration::from_millis(50);

/// State (field 3) and start time (field 22) from `/proc/PID/stat`.
fn stat(pid: u32) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain anything.
    let rest = text.get(text.rfind(')')? + 1..)?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

/// `/proc/PID/cmdline` with its NULs as spaces.
fn cmdline(pid: u32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(String::from_utf8_lossy(&raw).replace('\0', " "))
}

/// `/proc/PID/comm` (at most 15 characters of the name).
pub fn comm(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|c| c.trim().to_string())
}

/// Whether `pid` is in the calling thread's network namespace.
pub fn same_netns(pid: u32) -> bool {
    match (
        std::fs::read_link(format!("/proc/{pid}/ns/net")),
        std::fs::read_link("/proc/thread-self/ns/net"),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// The pids under `/proc`.
pub fn pids() -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
}

/// Whether a process named `name` (its `comm`) runs in the calling
/// thread's network namespace.
pub fn runs_in_our_netns(name: &str) -> bool {
    pids().any(|pid| comm(pid).as_deref() == Some(name) && same_netns(pid))
}

/// A record of the running process `pid` (`None` if it is gone).
pub fn record(pid: u32, marker: &str) -> Option<ProcRec> {
    let (_, start_time) = stat(pid)?;
    Some(ProcRec {
        pid,
        start_time,
        marker: marker.to_string(),
    })
}

/// Whether the recorded process still exists (not a zombie) with its
/// recorded start time.
fn alive(rec: &ProcRec) -> bool {
    rec.pid > 1
        && matches!(stat(rec.pid), Some((state, start)) if start == rec.start_time && !matches!(state, 'Z' | 'X' | 'x'))
}

/// Whether the recorded process still runs and is the one recorded (same
/// start time, its command line still carries the marker).
pub fn is_ours(rec: &ProcRec) -> bool {
    alive(rec) && cmdline(rec.pid).is_some_and(|c| c.contains(&rec.marker))
}

/// Stops a recorded process that is not our child: SIGTERM, up to `grace`
/// for it to go, then SIGKILL. Returns whether it is gone (true too when
/// it was gone already or the pid belongs to someone else now).
pub async fn stop(rec: &ProcRec, grace: Duration) -> bool {
    if !is_ours(rec) {
        return true;
    }
    let Ok(raw) = i32::try_from(rec.pid) else {
        return true;
    };
    let pid = Pid::from_raw(raw);
    tracing::info!(pid = rec.pid, marker = %rec.marker, "stopping a process an earlier run left");
    for (sig, wait) in [(Signal::SIGTERM, grace), (Signal::SIGKILL, KILL_WAIT)] {
        if let Err(e) = kill(pid, sig) {
            tracing::debug!(pid = rec.pid, error = %e, "kill {sig}");
        }
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            if !alive(rec) {
                return true;
            }
            tokio::time::sleep(POLL).await;
        }
    }
    let gone = !alive(rec);
    if !gone {
        tracing::warn!(pid = rec.pid, marker = %rec.marker, "process survived SIGKILL");
    }
    gone
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_recorded_and_recognized() {
        let me = std::process::id();
        let marker = cmdline(me).expect("own cmdline");
        let rec = record(me, marker.split(' ').next().unwrap_or("")).expect("own stat");
        assert!(is_ours(&rec));
        // Another start time, or a marker the command line lacks: not ours.
        let other = ProcRec {
            start_time: rec.start_time + 1,
            ..rec.clone()
        };
        assert!(!is_ours(&other));
        let other = ProcRec {
            marker: "ListenAddress=192.0.2.1:1".into(),
            ..rec.clone()
        };
        assert!(!is_ours(&other));
        // pids 0 and 1 are never ours.
        for pid in [0, 1] {
            assert!(!is_ours(&ProcRec { pid, ..rec.clone() }));
        }
    }

    #[tokio::test]
    async fn stopping_a_gone_process_is_a_no_op() {
        let rec = ProcRec {
            pid: u32::MAX,
            start_time: 1,
            marker: "x".into(),
        };
        assert!(stop(&rec, Duration::from_millis(10)).await);
    }
}
