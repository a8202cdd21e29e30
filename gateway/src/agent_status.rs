//! What each agent last said about itself: the latest `Status` report per
//! instance (applied config version, counter summary, last local error) and
//! when it arrived. Kept in memory by the serving gateway only: reports come
//! every few seconds from every agent, so writing them to the store would
//! cost a transaction each for data that is stale a minute later. A restart
//! of the gateway forgets them until each agent's next report, and the CLI
//! of another process (`nsx-gateway get instances`) does not see them; the
//! admin API, `nsxcli --gateway` and the metrics endpoint do.
//!
//! A report is trusted only as far as the agent is: it is the instance's
//! own claim, bounded here ([`MAX_COUNTERS`], [`MAX_ERROR_LEN`]) so a
//! misbehaving agent cannot make the gateway hold more than a few KiB for
//! it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use control::StatusReport;
use serde::Serialize;

/// Most counters kept from one report (the rest are dropped, by name order).
pub const MAX_COUNTERS: usize = 256;
/// Longest counter name kept (longer ones are dropped).
pub const MAX_COUNTER_NAME: usize = 64;
/// Longest `last_error` kept, in bytes (cut at a character boundary).
pub const MAX_ERROR_LEN: usize = 1024;

/// The latest report of one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentStatus {
    /// The config version the agent runs (`None`: none applied).
    pub applied_version: Option<u64>,
    /// Named counters of the agent's datapath (`port_rx_packets`, `drops`,
    /// `drop_<reason>`, the firewall's `fw_*`).
    pub counters: BTreeMap<String, u64>,
    /// The agent's last error since it started (a refused or failed apply,
    /// a lost connection), if any; the agent never clears it.
    pub last_error: Option<String>,
    /// When the report arrived (Unix seconds, the gateway's clock).
    pub received_unix: u64,
    /// When the report arrived (monotonic: the age shown is this one's).
    pub received: Instant,
}

/// An [`AgentStatus`] as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusView {
    pub applied_version: Option<u64>,
    pub last_error: Option<String>,
    pub received_at_unix: u64,
    /// Seconds since the report arrived.
    pub age_seconds: u64,
    pub counters: BTreeMap<String, u64>,
}

impl AgentStatus {
    /// Keeps `report`, bounded, as received at `now` / `now_unix`.
    pub fn new(report: StatusReport, now: Instant, now_unix: u64) -> AgentStatus {
        let counters = report
            .counters
            .into_iter()
            .filter(|(k, _)| !k.is_empty() && k.len() <= MAX_COUNTER_NAME)
            .take(MAX_COUNTERS)
            .collect();
        AgentStatus {
            applied_version: report.applied_version,
            counters,
            last_error: report.last_error.map(|e| truncate(e, MAX_ERROR_LEN)),
            received_unix: now_unix,
            received: now,
        }
    }

    /// Whole seconds since the report arrived.
    pub fn age_seconds(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.received).as_secs()
    }

    /// The admin API's view at `now`.
    pub fn view(&self, now: Instant) -> StatusView {
        StatusView {
            applied_version: self.applied_version,
            last_error: self.last_error.clone(),
            received_at_unix: self.received_unix,
            age_seconds: self.age_seconds(now),
            counters: self.counters.clone(),
        }
    }
}

/// `s` cut to at most `max` bytes at a character boundary.
fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// The latest report per instance (instance id -> status).
#[derive(Debug, Default)]
pub struct AgentStatuses {
    latest: Mutex<HashMap<String, AgentStatus>>,
}

impl AgentStatuses {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, AgentStatus>> {
        // Each entry is replaced whole: a panicked holder leaves it consistent.
        self.latest.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces what `instance_id` last reported.
    pub fn record(&self, instance_id: &str, report: StatusReport) {
        let status = AgentStatus::new(report, Instant::now(), crate::util::now_unix());
        self.lock().insert(instance_id.to_string(), status);
    }

    /// What `instance_id` last reported, if anything since the gateway started.
    pub fn get(&self, instance_id: &str) -> Option<AgentStatus> {
        self.lock().get(instance_id).cloned()
    }

    /// Every instance's latest report.
    pub fn all(&self) -> HashMap<String, AgentStatus> {
        self.lock().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_is_kept_bounded() {
        let mut counters: BTreeMap<String, u64> =
            (0..1000).map(|i| (format!("c{i:04}"), i)).collect();
        counters.insert("x".repeat(MAX_COUNTER_NAME + 1), 1);
        counters.insert(String::new(), 1);
        let report = StatusReport {
            applied_version: Some(7),
            counters,
            last_error: Some("é".repeat(MAX_ERROR_LEN)),
        };
        let t0 = Instant::now();
        let s = AgentStatus::new(report, t0, 1_700_000_000);
        assert_eq!(s.counters.len(), MAX_COUNTERS);
        assert_eq!(s.counters.keys().next().map(String::as_str), Some("c0000"));
        let e = s.last_error.as_deref().unwrap_or_default();
        assert_eq!(e.len(), MAX_ERROR_LEN);
        assert!(e.chars().all(|c| c == 'é'));
        let v = s.view(t0 + std::time::Duration::from_millis(4_500));
        assert_eq!((v.age_seconds, v.received_at_unix), (4, 1_700_000_000));
        assert_eq!(v.applied_version, Some(7));
    }

    #[test]
    fn the_latest_report_replaces_the_previous_one() {
        let st = AgentStatuses::default();
        assert_eq!(st.get("i-1"), None);
        st.record(
            "i-1",
            StatusReport {
                applied_version: Some(1),
                counters: BTreeMap::from([("drops".to_string(), 3)]),
                last_error: Some("apply of version 2 failed: x".into()),
            },
        );
        st.record(
            "i-1",
            StatusReport {
                applied_version: Some(2),
                counters: BTreeMap::new(),
                last_error: None,
            },
        );
        let s = st.get("i-1").expect("kept");
        assert_eq!((s.applied_version, s.last_error), (Some(2), None));
        assert!(s.counters.is_empty());
        assert_eq!(st.all().len(), 1);
    }
}
