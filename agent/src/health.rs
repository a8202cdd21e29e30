//! The edge's health checkers (`lb::health`), run in the health-check
//! namespace (`host::probe`) and reported to the gateway. [`Checks`] owns
//! the monitor: the applied config's `tier0.health_checks` go in, the
//! checkers' verdicts come out into the [`Board`], which the control
//! client sends up: every verdict when a session starts (`full`), then
//! each change as it happens. The gateway gives the verdicts to every
//! datapath balancing the server (and to this one).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use control::lb::{HealthKey, HealthReport, HealthVerdict, VirtualServer};
use lb::health::{HealthEvent, HostNet, Monitor, MonitorHandle};
use tokio::sync::{Notify, mpsc};

use crate::host;

/// The verdicts the gateway has yet to hear, and all of them.
#[derive(Debug, Default)]
pub struct Board {
    state: Mutex<BoardState>,
    changed: Notify,
}

#[derive(Debug, Default)]
struct BoardState {
    /// Checks run here (the edge): only then does the client report.
    active: bool,
    current: BTreeMap<HealthKey, HealthVerdict>,
    dirty: BTreeSet<HealthKey>,
    /// The next report must be full: the board just became active (a
    /// session may have started before the checks did, and the gateway
    /// still holds the previous run's verdicts), or servers were dropped
    /// (a change report cannot say "gone").
    full_pending: bool,
}

impl Board {
    fn lock(&self) -> MutexGuard<'_, BoardState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A checker's verdict.
    pub fn record(&self, ev: HealthEvent) {
        let mut st = self.lock();
        st.dirty.insert(ev.key);
        st.current.insert(
            ev.key,
            HealthVerdict {
                key: ev.key,
                liveness: ev.liveness,
                reason: ev.reason,
            },
        );
        drop(st);
        self.changed.notify_one();
    }

    /// Keeps only the verdicts of `keys` (the servers still checked); the
    /// board reports from now on.
    fn retain(&self, keys: &BTreeSet<HealthKey>) {
        let mut st = self.lock();
        let before = st.current.len();
        st.current.retain(|k, _| keys.contains(k));
        if !st.active || st.current.len() != before {
            st.active = true;
            st.full_pending = true;
            drop(st);
            self.changed.notify_one();
        }
    }

    /// Every verdict (a session starts); `None` off the edge.
    pub fn full(&self) -> Option<HealthReport> {
        let mut st = self.lock();
        if !st.active {
            return None;
        }
        st.dirty.clear();
        st.full_pending = false;
        Some(HealthReport {
            full: true,
            verdicts: st.current.values().cloned().collect(),
        })
    }

    /// What the gateway has yet to hear, if anything: every verdict when
    /// a full report is pending, else the verdicts changed since the last
    /// report.
    pub fn changes(&self) -> Option<HealthReport> {
        let mut st = self.lock();
        if st.full_pending {
            drop(st);
            return self.full();
        }
        if st.dirty.is_empty() {
            return None;
        }
        let dirty = std::mem::take(&mut st.dirty);
        let verdicts = dirty
            .iter()
            .filter_map(|k| st.current.get(k).cloned())
            .collect();
        Some(HealthReport {
            full: false,
            verdicts,
        })
    }

    /// Resolves when a verdict changed (or the set did).
    pub async fn changed(&self) {
        self.changed.notified().await;
    }
}

/// The edge's checkers.
pub struct Checks {
    handle: MonitorHandle,
    board: Arc<Board>,
    /// The address the namespace holds now.
    address: Mutex<Option<std::net::Ipv4Addr>>,
}

impl Checks {
    /// Starts the monitor in the health-check namespace (made by
    /// `host::probe::setup`), its verdicts going to `board`. The monitor
    /// runs on a thread of its own inside the namespace, so its sockets
    /// and the scripts it forks are the namespace's.
    pub fn start(board: Arc<Board>) -> Checks {
        let handle = MonitorHandle::new(Monitor::new());
        let (tx, mut rx) = mpsc::channel::<HealthEvent>(256);
        let runner = handle.clone();
        tokio::spawn(async move {
            let ran = host::probe::run_inside(move || async move {
                runner.run(Arc::new(HostNet), tx).await;
                Ok(())
            })
            .await;
            if let Err(e) = ran {
                tracing::error!(error = %e, "health checks: cannot run in their namespace");
            }
        });
        let to_board = Arc::clone(&board);
        tokio::spawn(async move {
            while let Some(ev) = rx.recv().await {
                tracing::info!(server = %ev.key, liveness = ?ev.liveness, reason = %ev.reason, "health check");
                to_board.record(ev);
            }
        });
        Checks {
            handle,
            board,
            address: Mutex::new(None),
        }
    }

    /// The checkers, for the views.
    pub fn handle(&self) -> &MonitorHandle {
        &self.handle
    }

    /// Follows an applied config: the namespace's address, and the virtual
    /// servers whose real servers are checked.
    pub async fn configure(&self, tier0: Option<&control::Tier0>) {
        let (ip, vss): (_, &[VirtualServer]) = match tier0 {
            Some(t0) => (Some(t0.health_check_ip), &t0.health_checks),
            None => (None, &[]),
        };
        let had = *self.address.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(ip) = ip
            && had != Some(ip)
        {
            match host::probe::set_address(ip).await {
                Ok(()) => *self.address.lock().unwrap_or_else(|e| e.into_inner()) = Some(ip),
                Err(e) => {
                    tracing::error!(error = %e, %ip, "health checks: cannot address their namespace")
                }
            }
        }
        for ev in self.handle.update(vss) {
            self.board.record(ev);
        }
        let keys = vss
            .iter()
            .flat_map(|vs| vs.checked().map(|(_, k)| k))
            .collect();
        self.board.retain(&keys);
    }
}

impl std::fmt::Debug for Checks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checks")
            .field("board", &self.board)
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use control::lb::{LbProtocol, Liveness};

    use super::*;

    fn key(last: u8) -> HealthKey {
        HealthKey {
            protocol: LbProtocol::Tcp,
            vip: "10.64.1.2".parse().unwrap(),
            port: 80,
            real_ip: std::net::Ipv4Addr::new(192, 168, 1, last),
            real_port: 80,
        }
    }

    fn down(last: u8) -> HealthEvent {
        HealthEvent {
            key: key(last),
            liveness: Liveness::Down,
            reason: "connection refused".into(),
        }
    }

    #[test]
    fn off_the_edge_nothing_is_reported() {
        let b = Board::default();
        assert_eq!(b.full(), None);
        assert_eq!(b.changes(), None);
    }

    #[test]
    fn the_first_report_after_the_checks_start_is_full() {
        // A session that started before the checks had nothing to send;
        // the gateway may hold the previous run's verdicts, so the first
        // report must replace them.
        let b = Board::default();
        b.retain(&BTreeSet::from([key(1), key(2)]));
        let r = b.changes().expect("a report");
        assert!(r.full);
        assert!(r.verdicts.is_empty());
        assert_eq!(b.changes(), None, "then nothing until a change");
        b.record(down(1));
        let r = b.changes().expect("the change");
        assert!(!r.full);
        assert_eq!(r.verdicts.len(), 1);
        assert_eq!(r.verdicts[0].key, key(1));
        assert_eq!(r.verdicts[0].liveness, Liveness::Down);
    }

    #[test]
    fn a_server_no_longer_checked_makes_the_next_report_full() {
        let b = Board::default();
        b.retain(&BTreeSet::from([key(1), key(2)]));
        b.record(down(1));
        b.record(down(2));
        assert!(b.full().is_some());
        b.retain(&BTreeSet::from([key(2)]));
        let r = b.changes().expect("a report");
        assert!(r.full, "a change report cannot say a server is gone");
        assert_eq!(
            r.verdicts.iter().map(|v| v.key).collect::<Vec<_>>(),
            [key(2)]
        );
        // Unchanged set: no report.
        b.retain(&BTreeSet::from([key(2)]));
        assert_eq!(b.changes(), None);
    }
}
