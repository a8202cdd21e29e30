//! The shared runtime handle of a serving gateway: the store (behind a
//! mutex; every operation is short), the loaded CA, the admin token, the
//! change notification and the load balancers' health view
//! ([`crate::health`]), which every config built here reads.
//!
//! The seam for the control channel (5555): [`Gateway::subscribe`] gives a
//! `watch` of the global store version — it moves on every committed change
//! that can affect any instance's config (made in this process, or by the
//! CLI in another process, picked up by [`Gateway::watch_store`]); on each
//! change a session calls [`Gateway::desired_config_for`] for its instance
//! (and [`Gateway::is_revoked`] for its certificate) and pushes the result
//! if its version is newer than what the agent acked. That version is per
//! instance: it only moves when the instance's own config changes.
//!
//! Changes from another process are noticed at once: an inotify watch on
//! the store's directory wakes [`Gateway::watch_store`] on every write to
//! the database or its WAL (and when a writer closes them, after its
//! commit); a poll stays as the fallback (no inotify, a lost event, a
//! writer that has not closed yet when its commit lands).

use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use control::model::InstanceConfig;
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, poll};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use tokio::sync::{mpsc, watch};

use crate::agent_status::AgentStatuses;
use crate::health::Health;
use crate::metrics::Counters;
use crate::pki::{Ca, PkiError, files};
use crate::store::{ConfigSnapshot, InstanceRecord, Store, StoreError};
use crate::util;

/// Errors opening the gateway.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{0} is empty: the admin token must not be empty")]
    EmptyToken(std::path::PathBuf),
}

/// The shared gateway state.
#[derive(Debug)]
pub struct Gateway {
    store: Mutex<Store>,
    ca: Ca,
    admin_token: String,
    version_tx: watch::Sender<u64>,
    /// Event counters for the metrics endpoint ([`crate::metrics`]).
    counters: Counters,
    /// Each agent's latest `Status` (memory only: see [`crate::agent_status`]).
    statuses: AgentStatuses,
    /// The edge's health verdicts (memory only: see [`crate::health`]).
    health: Health,
    started: Instant,
    /// The database file, watched for other processes' commits (`None`:
    /// a store not opened from a directory, e.g. in memory).
    db: Option<PathBuf>,
}

impl Gateway {
    /// Opens an initialised gateway directory.
    pub fn open(dir: &Path) -> Result<Arc<Gateway>, GatewayError> {
        let ca = Ca::load(dir)?;
        let tp = dir.join(files::ADMIN_TOKEN);
        let token = std::fs::read_to_string(&tp).map_err(|source| GatewayError::Io {
            path: tp.clone(),
            source,
        })?;
        let token = token.trim().to_string();
        if token.is_empty() {
            return Err(GatewayError::EmptyToken(tp));
        }
        let db = dir.join(files::DB);
        let store = Store::open(&db)?;
        Ok(Self::assemble(store, ca, token, Some(db))?)
    }

    /// Builds a gateway from already opened parts.
    pub fn from_parts(
        store: Store,
        ca: Ca,
        admin_token: String,
    ) -> Result<Arc<Gateway>, StoreError> {
        Self::assemble(store, ca, admin_token, None)
    }

    fn assemble(
        store: Store,
        ca: Ca,
        admin_token: String,
        db: Option<PathBuf>,
    ) -> Result<Arc<Gateway>, StoreError> {
        let (version_tx, _) = watch::channel(store.version()?);
        Ok(Arc::new(Gateway {
            store: Mutex::new(store),
            ca,
            admin_token,
            version_tx,
            counters: Counters::default(),
            statuses: AgentStatuses::default(),
            health: Health::default(),
            started: Instant::now(),
            db,
        }))
    }

    /// Locks the store. A panic while holding the lock cannot leave the
    /// database half-written (every change is a transaction), so a poisoned
    /// lock is simply taken over.
    pub fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn ca(&self) -> &Ca {
        &self.ca
    }

    /// Enrollment and control-channel event counters (metrics).
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The latest `Status` report of each agent since this gateway started.
    pub fn agent_statuses(&self) -> &AgentStatuses {
        &self.statuses
    }

    /// The load balancers' health view.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Instances as the admin API shows them: [`crate::ops::instances_json`]
    /// plus `agent_status`, the agent's latest report (`null` when none
    /// arrived since this gateway started).
    pub fn instances_json(&self, list: &[InstanceRecord]) -> serde_json::Value {
        let mut v = crate::ops::instances_json(list);
        let now = Instant::now();
        if let Some(items) = v.as_array_mut() {
            for (item, rec) in items.iter_mut().zip(list) {
                let status = self.statuses.get(&rec.id).map(|s| s.view(now));
                if let Some(o) = item.as_object_mut() {
                    o.insert(
                        "agent_status".into(),
                        serde_json::to_value(status).unwrap_or_default(),
                    );
                }
            }
        }
        v
    }

    /// When this handle was opened (the gateway's start).
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Constant-time check of a presented admin token.
    pub fn admin_token_ok(&self, presented: &str) -> bool {
        util::ct_eq(presented.as_bytes(), self.admin_token.as_bytes())
    }

    /// A receiver of the global version; it changes on every committed
    /// change that may affect any instance's config.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version_tx.subscribe()
    }

    /// Re-reads the store version and notifies subscribers if it moved.
    /// Call after every change made through this handle.
    pub fn notify_changed(&self) {
        let v = match self.store().version() {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!("cannot read store version: {e}");
                return;
            }
        };
        let moved = self.version_tx.send_if_modified(|cur| {
            if v > *cur {
                *cur = v;
                true
            } else {
                false
            }
        });
        if moved {
            tracing::info!(
                version = v,
                "store version moved: sessions look up their configs"
            );
        }
    }

    /// Notices changes committed by other processes (the CLI's `apply`,
    /// `instance revoke`), forever: at once through an inotify watch on the
    /// database's directory, and by polling every `period` as the fallback.
    pub async fn watch_store(self: Arc<Self>, period: Duration) {
        let mut inotify = match self.db.as_deref().map(spawn_store_watch) {
            Some(Ok(rx)) => Some(rx),
            Some(Err(e)) => {
                tracing::warn!(error = %e, ?period, "store: no inotify watch, polling only");
                None
            }
            None => None,
        };
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let mut woken = false;
            match &mut inotify {
                Some(rx) => {
                    tokio::select! {
                        _ = tick.tick() => {}
                        r = rx.recv() => match r {
                            Some(()) => woken = true,
                            None => {
                                tracing::warn!(?period, "store: inotify watch ended, polling only");
                                inotify = None;
                            }
                        },
                    }
                }
                None => {
                    tick.tick().await;
                }
            }
            self.notify_changed();
            if woken {
                // The gateway's own commits wake the watch too: at most one
                // store read per gap (events meanwhile wait in the channel).
                tokio::time::sleep(WATCH_MIN_GAP).await;
            }
        }
    }

    /// [`Store::desired_config_for_with`] the health view: what the
    /// control channel pushes.
    pub fn desired_config_for(
        &self,
        instance_id: &str,
    ) -> Result<(u64, Option<InstanceConfig>), StoreError> {
        let mut store = self.store();
        let view = self.health.view();
        store.desired_config_for_with(instance_id, &view)
    }

    /// [`Store::config_snapshot_with`] the health view, read under the
    /// store's lock (the view only changes with a version bump under that
    /// lock, so a snapshot of one version always has one view); then the
    /// verdicts on servers the state no longer checks are dropped.
    pub fn config_snapshot(
        &self,
        previous: Option<&ConfigSnapshot>,
    ) -> Result<ConfigSnapshot, StoreError> {
        let mut store = self.store();
        let view = self.health.view();
        let snapshot = store.config_snapshot_with(previous, &view)?;
        self.health.prune(snapshot.state());
        Ok(snapshot)
    }

    /// See [`Store::is_revoked`]: true for a revoked or unknown certificate.
    pub fn is_revoked(&self, cert_fingerprint: &str) -> Result<bool, StoreError> {
        self.store().is_revoked(cert_fingerprint)
    }
}

/// The least time between two store reads the inotify watch causes.
const WATCH_MIN_GAP: Duration = Duration::from_millis(10);

/// How often the watch thread looks whether its gateway is gone.
const WATCH_ALIVE_CHECK_MS: u16 = 1000;

/// Starts an inotify watch on the directory of `db` on a thread of its
/// own: one message on the returned channel per burst of events that touch
/// the database, its WAL or shared-memory file (`gateway.db*`), or an
/// overflowed event queue (anything may have changed). The thread ends
/// (and the channel closes) within a second of the receiver being dropped,
/// or on a read error, which it logs.
fn spawn_store_watch(db: &Path) -> std::io::Result<mpsc::Receiver<()>> {
    let dir = match db.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = db
        .file_name()
        .map(|n| n.as_bytes().to_vec())
        .unwrap_or_default();
    let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
    inotify.add_watch(
        dir,
        AddWatchFlags::IN_MODIFY
            | AddWatchFlags::IN_CLOSE_WRITE
            | AddWatchFlags::IN_CREATE
            | AddWatchFlags::IN_MOVED_TO,
    )?;
    let (tx, rx) = mpsc::channel(1);
    std::thread::Builder::new()
        .name("store-watch".into())
        .spawn(move || {
            if let Err(e) = store_watch_loop(&inotify, &name, &tx) {
                tracing::warn!(error = %e, "store: inotify watch failed");
            }
        })?;
    Ok(rx)
}

fn store_watch_loop(inotify: &Inotify, name: &[u8], tx: &mpsc::Sender<()>) -> nix::Result<()> {
    let touches_db = |n: &OsStr| !name.is_empty() && n.as_bytes().starts_with(name);
    while !tx.is_closed() {
        let mut fds = [PollFd::new(inotify.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, WATCH_ALIVE_CHECK_MS) {
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => return Err(e),
        }
        let mut hit = false;
        loop {
            match inotify.read_events() {
                Ok(events) => {
                    hit |= events.iter().any(|e| {
                        e.mask.contains(AddWatchFlags::IN_Q_OVERFLOW)
                            || e.name.as_deref().is_some_and(touches_db)
                    });
                }
                Err(Errno::EAGAIN) => break,
                Err(Errno::EINTR) => {}
                Err(e) => return Err(e),
            }
        }
        if hit {
            // Full: a wake-up is already pending, which covers this burst.
            let _ = tx.try_send(());
        }
    }
    Ok(())
}
