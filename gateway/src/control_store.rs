//! The store as the control server sees it: [`ControlStore`] over the
//! shared [`Gateway`]. Identity comes from the client certificate alone
//! (its fingerprint, recorded at enrollment); the desired state is the
//! store's per-instance config and version; the change feed is the store's
//! global version (changes made by the CLI in another process included).
//! Tags reported in an agent's Hello do not re-place it: placement follows
//! the inventory (enrollment, then the admin API), which an instance cannot
//! rewrite about itself. Session events go to the store (for `get
//! instances`, also read by other processes); an agent's `Status` is kept
//! in memory only ([`crate::agent_status`]); the edge's `Health` reports go
//! to the health view's applier thread ([`crate::health`]), those of any
//! other instance are dropped and counted before they are queued. Configs
//! are built with that view ([`Gateway::config_snapshot`]).

use std::sync::{Arc, Mutex, mpsc};

use control::{InstanceConfig, InstanceMeta};
use tokio::sync::watch;

use crate::control_server::{ControlStore, SessionEvent, StoreRefusal};
use crate::gateway::Gateway;
use crate::pki;
use crate::store::ConfigSnapshot;

/// [`ControlStore`] backed by the gateway's store.
#[derive(Debug)]
pub struct GatewayControl {
    gw: Arc<Gateway>,
    /// What every instance's config is built from at the current store
    /// version, read in one pass when the version moves: a change fanned out
    /// to N sessions costs one read, not N; no configs are kept.
    cache: Mutex<Option<Arc<ConfigSnapshot>>>,
    /// Session events go to a writer thread: `report` is called on the
    /// async workers and must never wait for the store's lock.
    events: mpsc::Sender<(String, SessionEvent)>,
    /// Health reports go to the health view's applier thread, for the
    /// same reason (`None`: it could not be started).
    health: Option<crate::health::Reports>,
}

impl GatewayControl {
    pub fn new(gw: Arc<Gateway>) -> GatewayControl {
        let (tx, rx) = mpsc::channel::<(String, SessionEvent)>();
        let writer = Arc::clone(&gw);
        let spawned = std::thread::Builder::new()
            .name("session-recorder".into())
            .spawn(move || {
                while let Ok((id, event)) = rx.recv() {
                    record(&writer, &id, event);
                }
            });
        if let Err(e) = spawned {
            tracing::error!(
                "cannot start the session recorder: {e}; session state will not be recorded"
            );
        }
        let health = crate::health::spawn_applier(Arc::clone(&gw))
            .inspect_err(|e| {
                tracing::error!(
                    "cannot start the health view's applier: {e}; the edge's health reports will be ignored"
                );
            })
            .ok();
        GatewayControl {
            gw,
            cache: Mutex::new(None),
            events: tx,
            health,
        }
    }
}

impl GatewayControl {
    /// True when the cached snapshot says `instance_id` is not the
    /// enrolled edge: its health reports are dropped before they are
    /// queued, so no other instance can fill the applier's queue or make
    /// it read the store. Never waits: while a snapshot is being built, or
    /// before the first one, the applier decides. A report from the edge
    /// always comes after a config built from a snapshot that made it the
    /// edge, and the cache holds that one or a newer one.
    fn surely_not_the_edge(&self, instance_id: &str) -> bool {
        match self.cache.try_lock() {
            Ok(cache) => cache
                .as_ref()
                .is_some_and(|snap| snap.edge_id() != Some(instance_id)),
            Err(_) => false,
        }
    }
}

/// Writes one session event into the store (for `get instances`).
fn record(gw: &Gateway, instance_id: &str, event: SessionEvent) {
    let now = crate::util::now_unix();
    let (state, acked, error): (Option<&str>, Option<u64>, Option<String>) = match &event {
        SessionEvent::Connected { .. } => (Some("ESTABLISHED"), None, None),
        SessionEvent::Acked(v) => (None, Some(*v), None),
        SessionEvent::Nacked {
            version, reason, ..
        } => {
            tracing::warn!(instance = instance_id, version, %reason, "config nacked");
            (
                None,
                None,
                Some(format!("nack of version {version}: {reason}")),
            )
        }
        // Kept in memory by `report`, never queued here.
        SessionEvent::Status(_) => return,
        SessionEvent::Disconnected { reason } => (Some("DISCONNECTED"), None, Some(reason.clone())),
    };
    if !matches!(event, SessionEvent::Acked(_)) {
        tracing::info!(instance = instance_id, ?event, "control session");
    }
    let r = gw
        .store()
        .record_session(instance_id, state, acked, error.as_deref(), now);
    if let Err(e) = r {
        tracing::warn!(instance = instance_id, "cannot record session state: {e}");
    }
}

impl ControlStore for GatewayControl {
    fn authorize(&self, cert_der: &[u8]) -> Result<String, StoreRefusal> {
        let fp = pki::cert_fingerprint(cert_der);
        match self.gw.store().instance_for_cert(&fp) {
            Ok(Some(rec)) if rec.revoked_at.is_none() => Ok(rec.id),
            Ok(Some(_)) => Err(StoreRefusal::Revoked),
            Ok(None) => Err(StoreRefusal::UnknownCertificate),
            Err(e) => {
                tracing::error!("store: {e}");
                Err(StoreRefusal::Unavailable)
            }
        }
    }

    fn hello(
        &self,
        instance_id: &str,
        meta: &InstanceMeta,
    ) -> Result<(u32, u64, Option<InstanceConfig>), StoreRefusal> {
        let rec = self
            .gw
            .store()
            .instance(instance_id)?
            .ok_or_else(|| StoreRefusal::UnknownInstance(instance_id.into()))?;
        if rec.underlay_ip != meta.underlay_ip {
            // A new DHCP lease moved the instance's tunnel endpoint: the
            // peers get it with the next config (a unicast address only,
            // as at enrollment).
            let u = meta.underlay_ip;
            if u.is_unspecified() || u.is_loopback() || u.is_multicast() || u.is_broadcast() {
                tracing::warn!(
                    instance = instance_id, enrolled = %rec.underlay_ip, now = %u,
                    "agent reports an underlay address that is not unicast; keeping the recorded one"
                );
            } else {
                let changed = self.gw.store().set_underlay_ip(instance_id, u)?;
                if changed {
                    tracing::info!(
                        instance = instance_id, old = %rec.underlay_ip, new = %u,
                        "the instance's underlay address changed; its peers get the new tunnel endpoint"
                    );
                    self.gw.notify_changed();
                }
            }
        }
        let (version, config) = self.desired(instance_id)?;
        Ok((rec.tep_id, version, config))
    }

    fn desired(&self, instance_id: &str) -> Result<(u64, Option<InstanceConfig>), StoreRefusal> {
        let current = self.gw.store().version()?;
        // Sessions asking at the same time wait for one read, not N.
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let snapshot = match cache.as_ref() {
            Some(snap) if snap.global == current => Arc::clone(snap),
            stale => {
                let previous = stale.map(Arc::clone);
                let built = self.gw.config_snapshot(previous.as_deref())?;
                let built = Arc::new(built);
                *cache = Some(Arc::clone(&built));
                built
            }
        };
        drop(cache);
        Ok(snapshot.config_for(instance_id))
    }

    fn report(&self, instance_id: &str, event: SessionEvent) {
        // A status report only replaces the instance's entry in memory.
        if let SessionEvent::Status(report) = event {
            self.gw.agent_statuses().record(instance_id, report);
            return;
        }
        // Never blocks: an unbounded queue to the recorder thread.
        let _ = self.events.send((instance_id.to_string(), event));
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.gw.subscribe()
    }

    fn health(&self, instance_id: &str, report: control::lb::HealthReport) {
        if self.surely_not_the_edge(instance_id) {
            self.gw.counters().health_reports_ignored(1);
            tracing::debug!(
                instance = instance_id,
                verdicts = report.verdicts.len(),
                "lb health: report ignored: only the edge reports health"
            );
            return;
        }
        // Never blocks: an unbounded queue to the applier thread, which
        // checks the sender again against the store.
        if let Some(tx) = &self.health {
            let _ = tx.send((instance_id.to_string(), report));
        }
    }

    fn is_revoked(&self, instance_id: &str) -> bool {
        match self.gw.store().instance(instance_id) {
            Ok(Some(rec)) => rec.revoked_at.is_some(),
            Ok(None) => true,
            Err(e) => {
                tracing::error!("store: {e}");
                false
            }
        }
    }
}
