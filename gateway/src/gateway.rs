//! The shared runtime handle of a serving gateway: the store (behind a
//! mutex; every operation is short), the loaded CA, the admin token and the
//! change notification.
//!
//! The seam for the control channel (5555): [`Gateway::subscribe`] gives a
//! `watch` of the global store version — it moves on every committed change
//! that can affect any instance's config (made in this process, or by the
//! CLI in another process, picked up by [`Gateway::watch_store`]); on each
//! change a session calls [`Gateway::desired_config_for`] for its instance
//! (and [`Gateway::is_revoked`] for its certificate) and pushes the result
//! if its version is newer than what the agent acked. That version is per
//! instance: it only moves when the instance's own config changes.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use control::model::InstanceConfig;
use tokio::sync::watch;

use crate::agent_status::AgentStatuses;
use crate::metrics::Counters;
use crate::pki::{Ca, PkiError, files};
use crate::store::{InstanceRecord, Store, StoreError};
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
    started: Instant,
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
        let store = Store::open(&dir.join(files::DB))?;
        Ok(Self::from_parts(store, ca, token)?)
    }

    /// Builds a gateway from already opened parts.
    pub fn from_parts(
        store: Store,
        ca: Ca,
        admin_token: String,
    ) -> Result<Arc<Gateway>, StoreError> {
        let (version_tx, _) = watch::channel(store.version()?);
        Ok(Arc::new(Gateway {
            store: Mutex::new(store),
            ca,
            admin_token,
            version_tx,
            counters: Counters::default(),
            statuses: AgentStatuses::default(),
            started: Instant::now(),
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
        self.version_tx.send_if_modified(|cur| {
            if v > *cur {
                *cur = v;
                true
            } else {
                false
            }
        });
    }

    /// Polls the store for changes committed by other processes (the CLI's
    /// `apply`, `instance revoke`) every `period`, forever.
    pub async fn watch_store(self: Arc<Self>, period: Duration) {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.notify_changed();
        }
    }

    /// See [`Store::desired_config_for`].
    pub fn desired_config_for(
        &self,
        instance_id: &str,
    ) -> Result<(u64, Option<InstanceConfig>), StoreError> {
        self.store().desired_config_for(instance_id)
    }

    /// See [`Store::is_revoked`]: true for a revoked or unknown certificate.
    pub fn is_revoked(&self, cert_fingerprint: &str) -> Result<bool, StoreError> {
        self.store().is_revoked(cert_fingerprint)
    }
}
