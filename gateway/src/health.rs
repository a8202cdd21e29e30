//! The load balancers' health view: the verdicts of the edge's health
//! checkers as the gateway holds them, one per checked real server. Every
//! config the gateway builds reads it ([`Health::view`], through
//! [`crate::gateway::Gateway::config_snapshot`] and
//! [`crate::gateway::Gateway::desired_config_for`]); the admin API
//! ([`json`]) and the metrics ([`rows`]) show it.
//!
//! * Only the edge's reports count: the session's instance must be the
//!   enrolled, non-revoked instance with role `edge` ([`Store::edge_id`]).
//!   A report from any other session is ignored, logged (at debug) and
//!   counted (`nsx_gateway_lb_health_reports_ignored_total`): most are
//!   dropped before they are queued, by the control store
//!   ([`crate::control_store`]) against its cached snapshot, the rest
//!   here against the store.
//! * Only verdicts on a real server with a `check` in the current desired
//!   state are kept (others are ignored); verdicts on servers the state no
//!   longer checks are dropped when the next report arrives or the next
//!   config snapshot is built ([`Health::prune`]).
//! * A full report replaces the view: a server it does not name is up.
//! * When a liveness changes, the store version is bumped under the
//!   store's lock together with the view ([`Health::apply`]), so a snapshot
//!   of one version is always built with one view, and the sessions are
//!   woken as after an `apply`: every agent carrying the virtual server
//!   gets its new config.
//! * Memory only. When the edge's session ends its last verdicts stay (a
//!   dead edge must not bring failed servers back); a restarted gateway
//!   starts with every server up until the edge reconnects and sends its
//!   full report.
//!
//! Reports are applied on a thread of their own ([`spawn_applier`]), in
//! batches: the reports that arrive while one batch is applied make the
//! next one, with one version bump. Bursts coalesce without any waiting.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};

use control::lb::{HealthKey, HealthReport, Liveness, RealServer, VirtualServer};

use crate::gateway::Gateway;
use crate::lb_resolve::HealthView;
use crate::state::DesiredState;
use crate::store::{Store, StoreError};

/// Longest `reason` kept (bytes): the views show it, the configs never
/// carry it.
pub const MAX_REASON: usize = 512;

/// The reason of a server a full report no longer names.
pub const NOT_REPORTED: &str = "not in the edge's full report";

/// One checked real server's standing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub liveness: Liveness,
    /// What the last check found, as the edge put it.
    pub reason: String,
    /// When the liveness last changed (Unix seconds).
    pub since: u64,
    /// Liveness changes since the gateway started.
    pub transitions: u64,
}

impl Verdict {
    /// Sets the liveness and the reason; a change of liveness moves
    /// `since` and counts a transition.
    fn set(&mut self, key: &HealthKey, liveness: Liveness, reason: &str, now: u64) {
        if self.liveness != liveness {
            tracing::info!(
                real_server = %key, from = ?self.liveness, to = ?liveness, reason,
                "lb health: verdict changed"
            );
            self.liveness = liveness;
            self.since = now;
            self.transitions += 1;
        }
        let reason = truncate(reason, MAX_REASON);
        if self.reason != reason {
            self.reason = reason.to_string();
        }
    }
}

/// `s` cut to at most `max` bytes, on a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default()
}

/// The verdicts and the view the configs are built from (the verdicts
/// that are not up: up and absent are the same to an agent).
#[derive(Debug, Clone, Default)]
pub struct Verdicts {
    by_key: HashMap<HealthKey, Verdict>,
    view: Arc<HealthView>,
}

impl Verdicts {
    /// Merges one report from the edge, keeping only the verdicts on
    /// `checked` servers; returns how many it ignored.
    pub fn merge(
        &mut self,
        report: &HealthReport,
        checked: &HashSet<HealthKey>,
        now: u64,
    ) -> usize {
        if report.full {
            let named: HashSet<&HealthKey> = report.verdicts.iter().map(|v| &v.key).collect();
            for (key, v) in &mut self.by_key {
                if !named.contains(key) {
                    v.set(key, Liveness::Up, NOT_REPORTED, now);
                }
            }
        }
        let mut ignored = 0;
        for v in &report.verdicts {
            if !checked.contains(&v.key) {
                ignored += 1;
                continue;
            }
            self.by_key
                .entry(v.key)
                .or_insert_with(|| Verdict {
                    liveness: Liveness::Up,
                    reason: String::new(),
                    since: now,
                    transitions: 0,
                })
                .set(&v.key, v.liveness, &v.reason, now);
        }
        self.refresh_view();
        ignored
    }

    /// Drops the verdicts on servers not in `checked`.
    pub fn retain(&mut self, checked: &HashSet<HealthKey>) {
        let before = self.by_key.len();
        self.by_key.retain(|k, _| checked.contains(k));
        if self.by_key.len() != before {
            self.refresh_view();
        }
    }

    fn refresh_view(&mut self) {
        let view: HealthView = self
            .by_key
            .iter()
            .filter(|(_, v)| v.liveness != Liveness::Up)
            .map(|(k, v)| (*k, v.liveness))
            .collect();
        if *self.view != view {
            self.view = Arc::new(view);
        }
    }

    /// What the configs are built from.
    pub fn view(&self) -> &Arc<HealthView> {
        &self.view
    }

    pub fn get(&self, key: &HealthKey) -> Option<&Verdict> {
        self.by_key.get(key)
    }
}

/// What [`Health::apply`] did with a batch of reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    /// A liveness changed: the store version was bumped.
    pub changed: bool,
    /// Reports from a session that is not the edge's.
    pub ignored_reports: usize,
    /// Verdicts on servers the state does not check.
    pub ignored_verdicts: usize,
}

/// The gateway's one health view (in [`Gateway`]).
#[derive(Debug, Default)]
pub struct Health {
    verdicts: Mutex<Verdicts>,
}

impl Health {
    /// Locks the verdicts; always after the store's lock when both are
    /// held. A poisoned lock is taken over: every change replaces the whole.
    fn lock(&self) -> MutexGuard<'_, Verdicts> {
        self.verdicts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The view to build configs with. Read it while holding the store's
    /// lock, so it is the view of the store's version
    /// ([`Gateway::config_snapshot`]).
    pub fn view(&self) -> Arc<HealthView> {
        Arc::clone(self.lock().view())
    }

    /// A copy of the verdicts, for the views.
    pub fn verdicts(&self) -> Verdicts {
        self.lock().clone()
    }

    /// Drops the verdicts on servers `st` does not check (configs never
    /// read them: [`crate::lb_resolve::service`]).
    pub fn prune(&self, st: &DesiredState) {
        let mut v = self.lock();
        if !v.by_key.is_empty() {
            v.retain(&checked_keys(st));
        }
    }

    /// Applies `batch` (instance id, report) in order, with `store` locked
    /// by the caller: reports from any instance but the edge are ignored,
    /// the others merged against the desired state; when the view changed,
    /// the store version is bumped (the caller then wakes the sessions).
    /// On a store error nothing changes.
    pub fn apply(
        &self,
        store: &mut Store,
        batch: &[(String, HealthReport)],
        now: u64,
    ) -> Result<Applied, StoreError> {
        let edge = store.edge_id()?;
        let mut out = Applied::default();
        let from_edge: Vec<&HealthReport> = batch
            .iter()
            .filter_map(|(id, report)| {
                if edge.as_deref() == Some(id.as_str()) {
                    return Some(report);
                }
                tracing::debug!(
                    instance = %id, verdicts = report.verdicts.len(),
                    "lb health: report ignored: only the edge reports health"
                );
                out.ignored_reports += 1;
                None
            })
            .collect();
        if from_edge.is_empty() {
            return Ok(out);
        }
        let checked = checked_keys(&store.desired_state()?);
        let mut current = self.lock();
        let mut next = current.clone();
        next.retain(&checked);
        for report in from_edge {
            out.ignored_verdicts += next.merge(report, &checked, now);
        }
        out.changed = next.view != current.view;
        if out.changed {
            store.bump_version()?;
        }
        *current = next;
        Ok(out)
    }
}

/// Every real server of `st` with a checker, with its virtual server and
/// its key ([`VirtualServer::checked`]), in the state's order.
pub fn checked(
    st: &DesiredState,
) -> impl Iterator<Item = (&VirtualServer, &RealServer, HealthKey)> {
    st.load_balancers
        .iter()
        .flat_map(|vs| vs.checked().map(move |(rs, key)| (vs, rs, key)))
}

/// The keys of [`checked`].
pub fn checked_keys(st: &DesiredState) -> HashSet<HealthKey> {
    checked(st).map(|(_, _, key)| key).collect()
}

/// `health` of a checked real server in `GET /api/v1/load-balancers`:
/// `state` (`up`, `down`, `weight` with `weight`), and once the edge
/// reported it, `reason` and `since` (when the state last changed, Unix
/// seconds).
pub fn json(verdict: Option<&Verdict>) -> serde_json::Value {
    let Some(v) = verdict else {
        return serde_json::json!({"state": "up"});
    };
    let mut out = serde_json::json!({"reason": v.reason, "since": v.since});
    let state = match v.liveness {
        Liveness::Up => "up",
        Liveness::Down => "down",
        Liveness::Weight(w) => {
            out["weight"] = w.into();
            "weight"
        }
    };
    out["state"] = state.into();
    out
}

/// One checked real server in the metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// `TCP 10.64.1.2:10000`.
    pub virtual_server: String,
    /// `192.168.1.100:8089`.
    pub real_server: String,
    /// Not down (a weight, 0 included, is up).
    pub up: bool,
    pub transitions: u64,
}

/// The metrics' rows: every checked real server of `st` (so the series
/// are bounded by the config).
pub fn rows(st: &DesiredState, verdicts: &Verdicts) -> Vec<Row> {
    checked(st)
        .map(|(vs, rs, key)| {
            let v = verdicts.get(&key);
            Row {
                virtual_server: vs.key(),
                real_server: rs.endpoint().to_string(),
                up: v.is_none_or(|v| v.liveness != Liveness::Down),
                transitions: v.map_or(0, |v| v.transitions),
            }
        })
        .collect()
}

/// Where the control server hands the edge's reports: `(instance id,
/// report)`.
pub type Reports = mpsc::Sender<(String, HealthReport)>;

/// Starts the thread that applies the reports sent on the returned
/// channel to `gw`'s view, in batches (all those waiting when the previous
/// batch is done); it ends when every sender is dropped.
pub fn spawn_applier(gw: Arc<Gateway>) -> std::io::Result<Reports> {
    let (tx, rx) = mpsc::channel::<(String, HealthReport)>();
    std::thread::Builder::new()
        .name("lb-health".into())
        .spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut batch = vec![first];
                batch.extend(rx.try_iter());
                apply_batch(&gw, &batch);
            }
        })?;
    Ok(tx)
}

/// Applies one batch to `gw`, counts what was ignored and wakes the
/// sessions when the view changed.
fn apply_batch(gw: &Gateway, batch: &[(String, HealthReport)]) {
    let now = crate::util::now_unix();
    let applied = {
        let mut store = gw.store();
        gw.health().apply(&mut store, batch, now)
    };
    match applied {
        Ok(a) => {
            gw.counters().health_reports_ignored(a.ignored_reports);
            if a.ignored_verdicts > 0 {
                tracing::debug!(
                    verdicts = a.ignored_verdicts,
                    "lb health: verdicts on servers the state does not check ignored"
                );
            }
            if a.changed {
                gw.notify_changed();
            }
        }
        Err(e) => tracing::warn!(
            reports = batch.len(),
            "lb health: reports not applied (the store failed): {e}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use control::lb::{HealthVerdict, LbProtocol};

    fn key(real: u8) -> HealthKey {
        HealthKey {
            protocol: LbProtocol::Tcp,
            vip: [10, 64, 1, 2].into(),
            port: 10000,
            real_ip: [192, 168, 1, real].into(),
            real_port: 8089,
        }
    }

    fn report(full: bool, verdicts: &[(u8, Liveness)]) -> HealthReport {
        HealthReport {
            full,
            verdicts: verdicts
                .iter()
                .map(|&(real, liveness)| HealthVerdict {
                    key: key(real),
                    liveness,
                    reason: format!("checked {real}"),
                })
                .collect(),
        }
    }

    fn view(v: &Verdicts) -> Vec<(u8, Liveness)> {
        let mut out: Vec<(u8, Liveness)> = v
            .view()
            .iter()
            .map(|(k, l)| (k.real_ip.octets()[3], *l))
            .collect();
        out.sort_by_key(|(real, _)| *real);
        out
    }

    #[test]
    fn changes_merge_and_a_full_report_replaces() {
        let checked: HashSet<HealthKey> = [key(1), key(2), key(3)].into();
        let mut v = Verdicts::default();
        let ignored = v.merge(
            &report(
                true,
                &[(1, Liveness::Down), (2, Liveness::Up), (9, Liveness::Down)],
            ),
            &checked,
            100,
        );
        assert_eq!(ignored, 1, "192.168.1.9 is not checked");
        assert_eq!(view(&v), [(1, Liveness::Down)], "up is absent");
        let one = v.get(&key(1)).expect("kept");
        assert_eq!((one.since, one.transitions), (100, 1));
        assert_eq!(one.reason, "checked 1");
        let two = v.get(&key(2)).expect("kept");
        assert_eq!((two.since, two.transitions), (100, 0), "never left up");

        // A change: only what it names moves.
        v.merge(&report(false, &[(3, Liveness::Weight(3))]), &checked, 200);
        assert_eq!(view(&v), [(1, Liveness::Down), (3, Liveness::Weight(3))]);
        // The same liveness again: no transition, `since` stays.
        v.merge(&report(false, &[(1, Liveness::Down)]), &checked, 300);
        assert_eq!(
            v.get(&key(1)).map(|x| (x.since, x.transitions)),
            Some((100, 1))
        );

        // A full report not naming 1: it is up again.
        v.merge(&report(true, &[(3, Liveness::Weight(3))]), &checked, 400);
        assert_eq!(view(&v), [(3, Liveness::Weight(3))]);
        let one = v.get(&key(1)).expect("still listed");
        assert_eq!(
            (
                one.liveness,
                one.since,
                one.transitions,
                one.reason.as_str()
            ),
            (Liveness::Up, 400, 2, NOT_REPORTED)
        );
    }

    #[test]
    fn servers_no_longer_checked_are_dropped() {
        let mut v = Verdicts::default();
        let all: HashSet<HealthKey> = [key(1), key(2)].into();
        v.merge(
            &report(false, &[(1, Liveness::Down), (2, Liveness::Down)]),
            &all,
            1,
        );
        let before = Arc::clone(v.view());
        v.retain(&all);
        assert!(Arc::ptr_eq(&before, v.view()), "nothing dropped, same view");
        v.retain(&[key(2)].into());
        assert_eq!(view(&v), [(2, Liveness::Down)]);
        assert!(v.get(&key(1)).is_none());
    }

    #[test]
    fn the_views_show_state_weight_reason_and_since() {
        let mut v = Verdicts::default();
        let checked: HashSet<HealthKey> = [key(1), key(2)].into();
        let mut r = report(false, &[(1, Liveness::Weight(3)), (2, Liveness::Down)]);
        r.verdicts[1].reason = format!("x{}", "é".repeat(MAX_REASON));
        v.merge(&r, &checked, 7);
        assert_eq!(
            json(v.get(&key(1))),
            serde_json::json!({"state": "weight", "weight": 3, "reason": "checked 1", "since": 7})
        );
        let down = json(v.get(&key(2)));
        assert_eq!(down["state"], "down");
        let reason = down["reason"].as_str().expect("reason");
        assert_eq!(reason.len(), MAX_REASON - 1, "cut on a character boundary");
        assert_eq!(json(None), serde_json::json!({"state": "up"}));
    }
}
