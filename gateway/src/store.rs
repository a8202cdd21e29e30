//! The gateway's persistent store: embedded SQLite (rusqlite, bundled).
//!
//! * Schema migrations: a `schema_version` table; missing migrations are
//!   applied in one transaction when the store is opened (idempotent).
//! * Every change is one transaction, and every committed change that can
//!   affect any instance's config bumps one global monotonic `version`
//!   (desired state applied, instance enrolled, retagged or revoked). The
//!   desired state also has its own `desired_version`.
//! * Placement and IPAM ([`Store::desired_config_for`]): the instance tag
//!   `nsx:network` names a switch tag -> overlay port on that switch with the
//!   lowest free address (never network, broadcast or the gateway IP);
//!   `default`, absent or unknown -> micro-segmentation (no port). A load
//!   balancer's virtual address is never handed out.
//!   Allocations are keyed by instance and survive restarts; they are
//!   re-evaluated inside every transaction that changes instances or the
//!   desired state, and a moved or revoked instance releases its address.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::Path;

use control::model::{InstanceConfig, LocalPort, RemotePort};
use control::proto::{InstanceMeta, Role};
use control::validate::MAX_TEP_ID;
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde::Serialize;

use crate::dfw_resolve::Resolved;
pub use crate::instance::InstanceRecord;
use crate::lb_resolve::{HealthView, LbPlan};
use crate::state::{self, DesiredState, RouterSpec, SwitchSpec};
use crate::tier0_resolve::{self, EdgePlan};

/// Schema migrations, in order; `schema_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT INTO meta (key, value) VALUES ('version', 0), ('desired_version', 0);

CREATE TABLE bootstrap_keys (
    id         TEXT PRIMARY KEY,
    public_key BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    retired_at INTEGER
);

CREATE TABLE instances (
    id               TEXT PRIMARY KEY,
    hostname         TEXT NOT NULL,
    os               TEXT NOT NULL,
    image_id         TEXT NOT NULL,
    tags             TEXT NOT NULL,
    underlay_ip      TEXT NOT NULL,
    nic_mac          TEXT NOT NULL,
    cert_serial      TEXT NOT NULL,
    cert_fingerprint TEXT NOT NULL UNIQUE,
    tep_id           INTEGER NOT NULL UNIQUE CHECK (tep_id BETWEEN 1 AND 2147483647),
    enrolled_at      INTEGER NOT NULL,
    revoked_at       INTEGER
);

CREATE TABLE enroll_nonces (
    nonce      TEXT PRIMARY KEY,
    expires_at INTEGER NOT NULL
);

CREATE TABLE switches (
    pos        INTEGER NOT NULL,
    name       TEXT PRIMARY KEY,
    tag        TEXT NOT NULL UNIQUE,
    vni        INTEGER NOT NULL UNIQUE,
    subnet     TEXT NOT NULL,
    gateway_ip TEXT NOT NULL
);

CREATE TABLE routers (
    pos      INTEGER NOT NULL,
    name     TEXT PRIMARY KEY,
    mac      TEXT NOT NULL,
    switches TEXT NOT NULL,
    routes   TEXT NOT NULL
);

CREATE TABLE ip_allocations (
    instance_id  TEXT PRIMARY KEY REFERENCES instances(id),
    switch       TEXT NOT NULL,
    ip           TEXT NOT NULL,
    allocated_at INTEGER NOT NULL,
    UNIQUE (switch, ip)
);
"#,
    // v2: per-instance config versions, so an instance's version only moves
    // when its own config does (see `desired_config_for`).
    r#"
CREATE TABLE config_versions (
    instance_id TEXT PRIMARY KEY REFERENCES instances(id),
    config_hash TEXT NOT NULL,
    version     INTEGER NOT NULL
);
"#,
    // v3: control-session state per instance, written by the running
    // gateway, read by `get instances` (possibly another process).
    r#"
CREATE TABLE sessions (
    instance_id   TEXT PRIMARY KEY REFERENCES instances(id),
    state         TEXT NOT NULL,
    since         INTEGER NOT NULL,
    acked_version INTEGER,
    last_error    TEXT
);
"#,
    // v4: the desired state's distributed firewall (one JSON document; no
    // row = no `firewall` section).
    r#"
CREATE TABLE firewall (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    spec TEXT NOT NULL
);
"#,
    // v5: a switch's DHCP options (JSON; NULL = defaults).
    r#"
ALTER TABLE switches ADD COLUMN dhcp TEXT;
"#,
    // v6: the north-south edge: what each agent enrolled as, and the
    // desired state's tier-0 (one JSON document; no row = no `tier0`).
    r#"
ALTER TABLE instances ADD COLUMN role TEXT NOT NULL DEFAULT 'instance';
CREATE TABLE tier0 (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    spec TEXT NOT NULL
);
"#,
    // v7: the desired state's load balancers (one JSON list; no row = no
    // `load_balancers` section).
    r#"
CREATE TABLE load_balancers (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    spec TEXT NOT NULL
);
"#,
];

/// The schema version this gateway writes (number of migrations).
pub const SCHEMA_VERSION: usize = MIGRATIONS.len();

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("the database schema is version {found}, newer than this gateway ({known})")]
    SchemaTooNew { found: usize, known: usize },
    #[error("corrupt store: {0}")]
    Corrupt(String),
    #[error("replayed enrollment request")]
    Replayed,
    #[error("instance already enrolled; the bootstrap key is not accepted again")]
    AlreadyEnrolled,
    #[error("unknown instance {0:?}")]
    UnknownInstance(String),
    #[error("no tunnel-endpoint id left")]
    TepIdsExhausted,
    #[error(
        "an edge is already enrolled (instance {0:?}); a gateway has at most one edge: revoke it first (nsx-gateway instance revoke {0})"
    )]
    EdgeTaken(String),
    #[error("{0}")]
    Invalid(#[from] control::validate::Problems),
    #[error(
        "the desired state changed while this change was prepared (desired_version {base} is now {now}); nothing changed: try again"
    )]
    DesiredMoved { base: u64, now: u64 },
}

type Result<T> = std::result::Result<T, StoreError>;

fn corrupt(what: &str, value: &str) -> StoreError {
    StoreError::Corrupt(format!("{what}: {value:?}"))
}

/// A bootstrap public key as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BootstrapKeyRow {
    pub id: String,
    #[serde(skip)]
    pub public_key: Vec<u8>,
    pub created_at: u64,
    pub retired_at: Option<u64>,
}

impl BootstrapKeyRow {
    pub fn is_active(&self) -> bool {
        self.retired_at.is_none()
    }
}

/// The client certificate an instance got at enrollment (the store keeps
/// its serial and fingerprint, not the certificate itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertificateRecord {
    pub instance_id: String,
    /// Serial number, lower-case hex.
    pub serial: String,
    /// SHA-256 of the DER, lower-case hex (what the control channel checks).
    pub fingerprint: String,
    /// Issue time = enrollment time (Unix seconds).
    pub issued_at: u64,
    pub revoked_at: Option<u64>,
}

impl CertificateRecord {
    /// End of validity: certificates are issued at enrollment for
    /// [`crate::pki::CLIENT_VALIDITY_DAYS`] days
    /// ([`crate::pki::Ca::sign_client_csr`]).
    pub fn not_after_unix(&self) -> u64 {
        let days = u64::try_from(crate::pki::CLIENT_VALIDITY_DAYS).unwrap_or(0);
        self.issued_at.saturating_add(days * 86_400)
    }
}

/// What the gateway records when an instance enrolls.
#[derive(Debug, Clone)]
pub struct NewInstance {
    pub meta: InstanceMeta,
    pub cert_serial: String,
    pub cert_fingerprint: String,
    /// What the agent enrolls as (the edge: at most one).
    pub role: Role,
}

/// The resolved tier-0 ([`Store::tier0_view`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tier0View {
    pub tier0: control::model::Tier0,
    pub nat_rules: Vec<tier0_resolve::NatRule>,
    /// The enrolled edge's instance id (`None`: no edge yet, the rules are
    /// in force nowhere).
    pub edge: Option<String>,
}

/// The outcome of applying a desired state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ApplyOutcome {
    pub changed: bool,
    pub desired_version: u64,
    pub version: u64,
}

/// The store: one SQLite connection.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
}

impl Store {
    /// Opens (creating if needed) the database at `path` and applies migrations.
    pub fn open(path: &Path) -> Result<Store> {
        let conn = Connection::open(path)?;
        Self::init(conn)
    }

    /// An in-memory store (tests).
    pub fn open_in_memory() -> Result<Store> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(mut conn: Connection) -> Result<Store> {
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // WAL lets the CLI read while `serve` writes; in-memory ignores it.
        let _: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        migrate(&mut conn)?;
        Ok(Store { conn })
    }

    /// The schema version (number of migrations applied).
    pub fn schema_version(&self) -> Result<usize> {
        let v: i64 = self.conn.query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_version",
            [],
            |r| r.get(0),
        )?;
        usize::try_from(v).map_err(|_| corrupt("schema_version", &v.to_string()))
    }

    /// The global version: bumped by every committed change that can affect
    /// any instance's config.
    pub fn version(&self) -> Result<u64> {
        meta_get(&self.conn, "version")
    }

    /// The version of the desired state alone.
    pub fn desired_version(&self) -> Result<u64> {
        meta_get(&self.conn, "desired_version")
    }

    // ----- bootstrap keys -------------------------------------------------

    /// Adds `id` as the active bootstrap key and retires every other one.
    pub fn add_bootstrap_key(&mut self, id: &str, public_key: &[u8], now: u64) -> Result<()> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "UPDATE bootstrap_keys SET retired_at = ?1 WHERE retired_at IS NULL AND id != ?2",
            params![to_i64(now), id],
        )?;
        tx.execute(
            "INSERT OR IGNORE INTO bootstrap_keys (id, public_key, created_at) VALUES (?1, ?2, ?3)",
            params![id, public_key, to_i64(now)],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The bootstrap key `id`, active or retired.
    pub fn bootstrap_key(&self, id: &str) -> Result<Option<BootstrapKeyRow>> {
        Ok(self
            .conn
            .query_row(
                "SELECT id, public_key, created_at, retired_at FROM bootstrap_keys WHERE id = ?1",
                [id],
                bootstrap_row,
            )
            .optional()?)
    }

    /// Every bootstrap key, oldest first.
    pub fn bootstrap_keys(&self) -> Result<Vec<BootstrapKeyRow>> {
        let mut st = self.conn.prepare(
            "SELECT id, public_key, created_at, retired_at FROM bootstrap_keys ORDER BY created_at, id",
        )?;
        let rows = st.query_map([], bootstrap_row)?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    // ----- desired state --------------------------------------------------

    /// The current desired state.
    pub fn desired_state(&self) -> Result<DesiredState> {
        load_state(&self.conn)
    }

    /// The current desired state with its `desired_version`, read in one
    /// transaction: the base of a change applied with
    /// [`Store::apply_state_on`].
    pub fn desired_state_versioned(&mut self) -> Result<(DesiredState, u64)> {
        let tx = self.conn.transaction()?;
        let st = load_state(&tx)?;
        let version = meta_get(&tx, "desired_version")?;
        Ok((st, version))
    }

    /// The tier-0 as the edge gets it (defaults filled in, the public IPs
    /// of the instances' tags) with its NAT rules and the enrolled edge's
    /// id; `None` without a `tier0` section.
    pub fn tier0_view(&self) -> Result<Option<Tier0View>> {
        let st = load_state(&self.conn)?;
        if st.tier0.is_none() {
            return Ok(None);
        }
        let all = load_instances(&self.conn, None)?;
        let plan = EdgePlan::compile(&st, &all);
        Ok(plan.tier0().map(|t0| Tier0View {
            nat_rules: tier0_resolve::nat_rules(t0, &st),
            tier0: t0.clone(),
            edge: plan.edge().map(|e| e.id.clone()),
        }))
    }

    /// Validates `new` and replaces the desired state with it in one
    /// transaction. Nothing is written if it is invalid or identical, or if
    /// some instance's config under it could not be delivered (too large
    /// for one control-channel frame: [`crate::deliver`]); either is
    /// [`StoreError::Invalid`] with the paths to blame.
    pub fn apply_state(&mut self, new: &DesiredState, now: u64) -> Result<ApplyOutcome> {
        self.apply_or_check(new, now, None, true)
    }

    /// [`Store::apply_state`] of a state made from the one at
    /// `desired_version` `base` ([`Store::desired_state_versioned`]):
    /// refused with [`StoreError::DesiredMoved`], nothing written, when
    /// the desired state moved since (another change would be silently
    /// undone).
    pub fn apply_state_on(
        &mut self,
        new: &DesiredState,
        now: u64,
        base: u64,
    ) -> Result<ApplyOutcome> {
        self.apply_or_check(new, now, Some(base), true)
    }

    /// Everything [`Store::apply_state`] checks, the placement and the
    /// deliverability of every config included, without keeping anything
    /// (its transaction is rolled back): `Ok` with what applying would
    /// give (`changed`, and the versions it would reach), or the same
    /// refusal.
    pub fn check_state(&mut self, new: &DesiredState, now: u64) -> Result<ApplyOutcome> {
        self.apply_or_check(new, now, None, false)
    }

    /// Applies (`commit`) or checks `new`; with `base`, only over the
    /// desired state at that `desired_version`.
    fn apply_or_check(
        &mut self,
        new: &DesiredState,
        now: u64,
        base: Option<u64>,
        commit: bool,
    ) -> Result<ApplyOutcome> {
        if let Err(problems) = state::validate(new) {
            if problems.more() > 0 {
                return Err(problems.into());
            }
            // One pass shows every problem: the public IP claims the new
            // tier0 would refuse too, judged against the instances as
            // placed now (the new placement needs a valid state).
            let mut all = problems.into_list();
            if new.tier0.is_some() || !new.load_balancers.is_empty() {
                let placed = load_instances(&self.conn, None)?;
                if new.tier0.is_some() {
                    let t0 = new.tier0.as_ref().map(|spec| spec.to_model(new));
                    let (_, claims) = tier0_resolve::resolve_claims(t0.as_ref(), new, &placed);
                    all.extend(claims);
                }
                all.extend(crate::load_balancer::placed_conflicts(new, &placed));
            }
            return Err(StoreError::Invalid(control::validate::Problems::new(all)));
        }
        // With a base, immediate: no other writer between its check and
        // the commit.
        let behavior = match base {
            Some(_) => rusqlite::TransactionBehavior::Immediate,
            None => rusqlite::TransactionBehavior::Deferred,
        };
        let tx = self.conn.transaction_with_behavior(behavior)?;
        if let Some(base) = base {
            let now = meta_get(&tx, "desired_version")?;
            if now != base {
                return Err(StoreError::DesiredMoved { base, now });
            }
        }
        let old = load_state(&tx)?;
        if old == *new {
            let out = ApplyOutcome {
                changed: false,
                desired_version: meta_get(&tx, "desired_version")?,
                version: meta_get(&tx, "version")?,
            };
            return Ok(out);
        }
        tx.execute("DELETE FROM switches", [])?;
        tx.execute("DELETE FROM routers", [])?;
        tx.execute("DELETE FROM firewall", [])?;
        if let Some(fw) = &new.firewall {
            tx.execute(
                "INSERT INTO firewall (id, spec) VALUES (1, ?1)",
                [to_json(fw)?],
            )?;
        }
        tx.execute("DELETE FROM tier0", [])?;
        if let Some(t0) = &new.tier0 {
            tx.execute(
                "INSERT INTO tier0 (id, spec) VALUES (1, ?1)",
                [to_json(t0)?],
            )?;
        }
        tx.execute("DELETE FROM load_balancers", [])?;
        if !new.load_balancers.is_empty() {
            tx.execute(
                "INSERT INTO load_balancers (id, spec) VALUES (1, ?1)",
                [to_json(&new.load_balancers)?],
            )?;
        }
        for (pos, s) in new.switches.iter().enumerate() {
            tx.execute(
                "INSERT INTO switches (pos, name, tag, vni, subnet, gateway_ip, dhcp) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    to_i64(pos as u64),
                    s.name,
                    s.tag,
                    i64::from(s.vni),
                    s.subnet.to_string(),
                    s.gateway_ip.to_string(),
                    s.dhcp.as_ref().map(to_json).transpose()?
                ],
            )?;
        }
        for (pos, r) in new.routers.iter().enumerate() {
            tx.execute(
                "INSERT INTO routers (pos, name, mac, switches, routes) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    to_i64(pos as u64),
                    r.name,
                    r.mac.to_string(),
                    to_json(&r.switches)?,
                    to_json(&r.routes)?
                ],
            )?;
        }
        reconcile_placement(&tx, now)?;
        let placed = load_instances(&tx, None)?;
        if new.tier0.is_some() || old.tier0.is_some() {
            check_claims(new, &placed)?;
        }
        check_vips(new, &placed)?;
        check_deliverable(new, &placed)?;
        meta_bump(&tx, "desired_version")?;
        meta_bump(&tx, "version")?;
        let out = ApplyOutcome {
            changed: true,
            desired_version: meta_get(&tx, "desired_version")?,
            version: meta_get(&tx, "version")?,
        };
        if commit {
            tx.commit()?;
        }
        Ok(out)
    }

    // ----- instances ------------------------------------------------------

    /// True if `nonce` was seen by an enrollment and has not expired.
    pub fn nonce_seen(&self, nonce: &str, now: u64) -> Result<bool> {
        Ok(self
            .conn
            .query_row(
                "SELECT 1 FROM enroll_nonces WHERE nonce = ?1 AND expires_at >= ?2",
                params![nonce, to_i64(now)],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// True if an instance with this id was ever enrolled (revoked included).
    pub fn instance_exists(&self, id: &str) -> Result<bool> {
        Ok(self
            .conn
            .query_row("SELECT 1 FROM instances WHERE id = ?1", [id], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// The id of the enrolled (not revoked) edge, if any.
    pub fn edge_id(&self) -> Result<Option<String>> {
        enrolled_edge(&self.conn)
    }

    /// Records an enrollment in one transaction: consumes `nonce` (kept
    /// until `nonce_expires_at`), refuses a replay or an already enrolled
    /// instance, assigns the next tunnel-endpoint id and places the instance.
    /// Returns the tep_id.
    pub fn enroll(
        &mut self,
        new: &NewInstance,
        nonce: &str,
        nonce_expires_at: u64,
        now: u64,
    ) -> Result<u32> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "DELETE FROM enroll_nonces WHERE expires_at < ?1",
            [to_i64(now)],
        )?;
        let inserted = tx.execute(
            "INSERT OR IGNORE INTO enroll_nonces (nonce, expires_at) VALUES (?1, ?2)",
            params![nonce, to_i64(nonce_expires_at)],
        )?;
        if inserted == 0 {
            return Err(StoreError::Replayed);
        }
        let exists = tx
            .query_row(
                "SELECT 1 FROM instances WHERE id = ?1",
                [&new.meta.instance_id],
                |_| Ok(()),
            )
            .optional()?
            .is_some();
        if exists {
            return Err(StoreError::AlreadyEnrolled);
        }
        if new.role == Role::Edge
            && let Some(edge) = enrolled_edge(&tx)?
        {
            return Err(StoreError::EdgeTaken(edge));
        }
        let max: i64 = tx.query_row("SELECT COALESCE(MAX(tep_id), 0) FROM instances", [], |r| {
            r.get(0)
        })?;
        let tep_id = u32::try_from(max + 1)
            .ok()
            .filter(|t| *t <= MAX_TEP_ID)
            .ok_or(StoreError::TepIdsExhausted)?;
        let m = &new.meta;
        tx.execute(
            "INSERT INTO instances (id, hostname, os, image_id, tags, underlay_ip, nic_mac,
                 cert_serial, cert_fingerprint, tep_id, enrolled_at, role)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            params![
                m.instance_id,
                m.hostname,
                m.os,
                m.image_id,
                to_json(&m.tags)?,
                m.underlay_ip.to_string(),
                m.nic_mac.to_string(),
                new.cert_serial,
                new.cert_fingerprint,
                i64::from(tep_id),
                to_i64(now),
                new.role.as_str()
            ],
        )?;
        reconcile_placement(&tx, now)?;
        // A public IP the instance claims in its own tags is checked as a
        // PATCH of them is (only once the state has a tier-0: without one
        // the tag means nothing yet, and `apply` checks it then).
        if m.tags.contains_key(tier0_resolve::PUBLICIP_TAG) {
            let st = load_state(&tx)?;
            if st.tier0.is_some() {
                let path = tier0_resolve::tag_path("instance.");
                check_claim(&tx, &st, &m.instance_id, &path)?;
            }
        }
        meta_bump(&tx, "version")?;
        tx.commit()?;
        Ok(tep_id)
    }

    /// Every instance, in enrollment order, with its placement.
    pub fn instances(&self) -> Result<Vec<InstanceRecord>> {
        load_instances(&self.conn, None)
    }

    /// One instance.
    pub fn instance(&self, id: &str) -> Result<Option<InstanceRecord>> {
        Ok(load_instances(&self.conn, Some(id))?.into_iter().next())
    }

    /// Every issued client certificate, in enrollment order, revoked ones
    /// included.
    pub fn certificates(&self) -> Result<Vec<CertificateRecord>> {
        let mut st = self.conn.prepare(
            "SELECT id, cert_serial, cert_fingerprint, enrolled_at, revoked_at
             FROM instances ORDER BY tep_id",
        )?;
        let rows = st.query_map([], |r| {
            Ok(CertificateRecord {
                instance_id: r.get(0)?,
                serial: r.get(1)?,
                fingerprint: r.get(2)?,
                issued_at: to_u64(r.get(3)?),
                revoked_at: r.get::<_, Option<i64>>(4)?.map(to_u64),
            })
        })?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// The instance holding the certificate with this SHA-256 fingerprint.
    pub fn instance_for_cert(&self, fingerprint: &str) -> Result<Option<InstanceRecord>> {
        let id: Option<String> = self
            .conn
            .query_row(
                "SELECT id FROM instances WHERE cert_fingerprint = ?1",
                [fingerprint],
                |r| r.get(0),
            )
            .optional()?;
        match id {
            Some(id) => self.instance(&id),
            None => Ok(None),
        }
    }

    /// True unless the certificate belongs to an enrolled, non-revoked
    /// instance: a revoked certificate and one the store does not know are
    /// both refused by the control channel.
    pub fn is_revoked(&self, cert_fingerprint: &str) -> Result<bool> {
        Ok(!matches!(
            self.instance_for_cert(cert_fingerprint)?,
            Some(InstanceRecord {
                revoked_at: None,
                ..
            })
        ))
    }

    /// Merges `patch` into the instance's tags (`None` removes a tag) and
    /// re-places it. Returns the updated record; bumps the version if
    /// anything changed.
    pub fn patch_tags(
        &mut self,
        id: &str,
        patch: &BTreeMap<String, Option<String>>,
        now: u64,
    ) -> Result<InstanceRecord> {
        let tx = self.conn.transaction()?;
        let tags_json: Option<String> = tx
            .query_row("SELECT tags FROM instances WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()?;
        let tags_json = tags_json.ok_or_else(|| StoreError::UnknownInstance(id.into()))?;
        let mut tags: BTreeMap<String, String> =
            serde_json::from_str(&tags_json).map_err(|_| corrupt("tags", &tags_json))?;
        let before = tags.clone();
        for (k, v) in patch {
            match v {
                Some(v) => tags.insert(k.clone(), v.clone()),
                None => tags.remove(k),
            };
        }
        if tags != before {
            tx.execute(
                "UPDATE instances SET tags = ?1 WHERE id = ?2",
                params![to_json(&tags)?, id],
            )?;
            reconcile_placement(&tx, now)?;
            // A public IP claim set, or kept while the placement changes,
            // must hold; the error drops the transaction (nothing changes).
            let touched = [tier0_resolve::PUBLICIP_TAG, state::NETWORK_TAG]
                .iter()
                .any(|k| patch.contains_key(*k));
            if touched && tags.contains_key(tier0_resolve::PUBLICIP_TAG) {
                let st = load_state(&tx)?;
                check_claim(&tx, &st, id, &tier0_resolve::tag_path(""))?;
            }
            meta_bump(&tx, "version")?;
        }
        tx.commit()?;
        self.instance(id)?
            .ok_or_else(|| StoreError::UnknownInstance(id.into()))
    }

    /// Marks the instance revoked (its certificate is refused from now on)
    /// and releases its address. Returns false if it already was revoked.
    /// Records what the control server saw of an instance's session:
    /// a new `state` (with the time), an acked version, or an error. Only the
    /// fields given change.
    pub fn record_session(
        &mut self,
        id: &str,
        state: Option<&str>,
        acked_version: Option<u64>,
        last_error: Option<&str>,
        now: u64,
    ) -> Result<()> {
        let now = to_i64(now);
        self.conn.execute(
            "INSERT INTO sessions (instance_id, state, since, acked_version, last_error)
             VALUES (?1, COALESCE(?2, 'DISCONNECTED'), ?5, ?3, ?4)
             ON CONFLICT(instance_id) DO UPDATE SET
                 state = COALESCE(?2, state),
                 since = CASE WHEN ?2 IS NOT NULL THEN ?5 ELSE since END,
                 acked_version = COALESCE(?3, acked_version),
                 last_error = COALESCE(?4, last_error)",
            rusqlite::params![id, state, acked_version.map(to_i64), last_error, now],
        )?;
        Ok(())
    }

    /// Records the instance's new underlay address (its tunnel endpoint,
    /// which a new DHCP lease may change) as its agent reports it in a
    /// Hello. Returns whether it changed; bumps the version then, so every
    /// peer gets the new endpoint.
    pub fn set_underlay_ip(&mut self, id: &str, ip: std::net::Ipv4Addr) -> Result<bool> {
        let tx = self.conn.transaction()?;
        let n = tx.execute(
            "UPDATE instances SET underlay_ip = ?1 WHERE id = ?2 AND underlay_ip != ?1",
            params![ip.to_string(), id],
        )?;
        if n == 0 {
            return Ok(false);
        }
        meta_bump(&tx, "version")?;
        tx.commit()?;
        Ok(true)
    }

    pub fn revoke(&mut self, id: &str, now: u64) -> Result<bool> {
        let tx = self.conn.transaction()?;
        let revoked: Option<Option<i64>> = tx
            .query_row(
                "SELECT revoked_at FROM instances WHERE id = ?1",
                [id],
                |r| r.get(0),
            )
            .optional()?;
        match revoked {
            None => Err(StoreError::UnknownInstance(id.into())),
            Some(Some(_)) => Ok(false),
            Some(None) => {
                tx.execute(
                    "UPDATE instances SET revoked_at = ?1 WHERE id = ?2",
                    params![to_i64(now), id],
                )?;
                reconcile_placement(&tx, now)?;
                meta_bump(&tx, "version")?;
                tx.commit()?;
                Ok(true)
            }
        }
    }

    // ----- the seam for the control channel -------------------------------

    /// The desired config of one instance and its version. `None` for an
    /// unknown or revoked instance.
    ///
    /// The version is per instance and only moves when this instance's
    /// config changes: it is the global version at which the config last
    /// changed (recorded with a hash of the config in `config_versions`), so
    /// it is monotonic, survives restarts, and a change elsewhere does not
    /// re-send every agent its unchanged config. The config holds
    /// the instance's tep_id, its port (overlay mode) or none
    /// (micro-segmentation), the switches it must know (its own and every
    /// switch attached to a router on it), those routers, every other
    /// non-revoked overlay instance's port on those switches, and its
    /// distributed firewall resolved from the desired state and the
    /// inventory ([`crate::dfw_resolve`]; allow-all without a `firewall`
    /// section).
    /// A compact snapshot from which every instance's `(version, config)`
    /// can be built ([`ConfigSnapshot::config_for`]): one read of the state
    /// and the inventory instead of one per instance (what a change fan-out
    /// needs), and no config kept in memory. Versions follow the same rule
    /// as [`Store::desired_config_for`]: an instance's version moves only
    /// when its config does. `previous` lets unchanged configs keep their
    /// version by a fast in-memory hash; only changed ones are hashed with
    /// SHA-256 and their version records written.
    pub fn config_snapshot(&mut self, previous: Option<&ConfigSnapshot>) -> Result<ConfigSnapshot> {
        self.config_snapshot_with(previous, &HealthView::new())
    }

    /// [`Store::config_snapshot`] with the load balancers' real servers
    /// as `health` finds them ([`crate::lb_resolve`]). A change of health
    /// re-versions exactly the configs carrying the virtual servers it
    /// touches, once the global version has moved past their last
    /// version ([`Store::bump_version`]). The serving gateway gives this
    /// and [`Store::desired_config_for_with`] the same view, its one
    /// [`crate::health::Health`] ([`crate::gateway::Gateway::config_snapshot`]):
    /// each records the hash of the config it built, so configs built with
    /// two views would move an instance's version back and forth.
    pub fn config_snapshot_with(
        &mut self,
        previous: Option<&ConfigSnapshot>,
        health: &HealthView,
    ) -> Result<ConfigSnapshot> {
        let tx = self.conn.transaction()?;
        let global = meta_get(&tx, "version")?;
        let state = load_state(&tx)?;
        let all = load_instances(&tx, None)?;
        let mut known: HashMap<String, (String, u64)> = HashMap::new();
        {
            let mut q =
                tx.prepare("SELECT instance_id, config_hash, version FROM config_versions")?;
            let mut rows = q.query([])?;
            while let Some(r) = rows.next()? {
                known.insert(r.get(0)?, (r.get(1)?, to_u64(r.get(2)?)));
            }
        }
        let mut versions = HashMap::with_capacity(all.len());
        let mut index = HashMap::with_capacity(all.len());
        let by_switch = index_by_switch(&all);
        // Group memberships and address sets: once per snapshot.
        let dfw = Resolved::compile(&state, &all);
        // The tier-0, its public IPs and the edge: once per snapshot too.
        let plan = EdgePlan::compile(&state, &all);
        // And the load balancers with their health.
        let lbs = LbPlan::compile(&state, health);
        for (i, me) in all.iter().enumerate() {
            index.insert(me.id.clone(), i);
            let Some(cfg) =
                build_config_from(me, &state, &all, Some(&by_switch), &dfw, &plan, &lbs)
            else {
                versions.insert(me.id.clone(), (global, 0));
                continue;
            };
            let quick = quick_hash(&cfg);
            // Unchanged since the previous snapshot: same version, no SHA-256.
            if let Some(&(v, h)) = previous.and_then(|p| p.versions.get(&me.id))
                && h == quick
                && known.get(&me.id).is_some_and(|(_, kv)| *kv == v)
            {
                versions.insert(me.id.clone(), (v, quick));
                continue;
            }
            let hash = crate::util::sha256_hex(to_json(&cfg)?.as_bytes());
            let version = match known.get(&me.id) {
                Some((h, v)) if *h == hash => *v,
                _ => {
                    tx.execute(
                        "INSERT INTO config_versions (instance_id, config_hash, version) VALUES (?1, ?2, ?3)
                         ON CONFLICT (instance_id) DO UPDATE SET config_hash = ?2, version = ?3",
                        params![me.id, hash, to_i64(global)],
                    )?;
                    global
                }
            };
            versions.insert(me.id.clone(), (version, quick));
        }
        tx.commit()?;
        Ok(ConfigSnapshot {
            global,
            state,
            all,
            index,
            by_switch,
            dfw,
            plan,
            lbs,
            versions,
        })
    }

    /// Bumps the global version for a change of configs the store does
    /// not hold (the load balancers' health view): the next
    /// [`Store::config_snapshot_with`] gives the configs that changed this
    /// version. Returns it.
    pub fn bump_version(&mut self) -> Result<u64> {
        let tx = self.conn.transaction()?;
        meta_bump(&tx, "version")?;
        let v = meta_get(&tx, "version")?;
        tx.commit()?;
        Ok(v)
    }

    /// One instance's `(version, config)`, the way [`Store::config_snapshot`]
    /// builds it (load balancers with an empty health view: see
    /// [`Store::config_snapshot_with`]); `None` for an unknown or revoked
    /// instance.
    pub fn desired_config_for(
        &mut self,
        instance_id: &str,
    ) -> Result<(u64, Option<InstanceConfig>)> {
        self.desired_config_for_with(instance_id, &HealthView::new())
    }

    /// [`Store::desired_config_for`] with the load balancers' real servers
    /// as `health` finds them: the same view as the snapshots', or the
    /// versions flap ([`Store::config_snapshot_with`]).
    pub fn desired_config_for_with(
        &mut self,
        instance_id: &str,
        health: &HealthView,
    ) -> Result<(u64, Option<InstanceConfig>)> {
        // One transaction: a consistent snapshot, and the version record.
        let tx = self.conn.transaction()?;
        let global = meta_get(&tx, "version")?;
        let Some(cfg) = build_config(&tx, instance_id, health)? else {
            return Ok((global, None));
        };
        let hash = crate::util::sha256_hex(to_json(&cfg)?.as_bytes());
        let known: Option<(String, i64)> = tx
            .query_row(
                "SELECT config_hash, version FROM config_versions WHERE instance_id = ?1",
                [instance_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let version = match known {
            Some((h, v)) if h == hash => to_u64(v),
            _ => {
                tx.execute(
                    "INSERT INTO config_versions (instance_id, config_hash, version) VALUES (?1, ?2, ?3)
                     ON CONFLICT (instance_id) DO UPDATE SET config_hash = ?2, version = ?3",
                    params![instance_id, hash, to_i64(global)],
                )?;
                global
            }
        };
        tx.commit()?;
        Ok((version, Some(InstanceConfig { version, ..cfg })))
    }
}

/// What every instance's config is built from at one store version: the
/// desired state, the inventory and each instance's `(version, quick hash)`.
/// O(instances) in memory; configs are built on demand.
#[derive(Debug, Clone)]
pub struct ConfigSnapshot {
    /// The store version this snapshot is of.
    pub global: u64,
    state: DesiredState,
    all: Vec<InstanceRecord>,
    index: HashMap<String, usize>,
    by_switch: HashMap<String, Vec<usize>>,
    /// The firewall compiled against `all` (groups resolved to addresses).
    dfw: Resolved,
    /// The edge and its tier-0 resolved against `all`.
    plan: EdgePlan,
    /// The load balancers with the health view of the snapshot.
    lbs: LbPlan,
    versions: HashMap<String, (u64, u64)>,
}

impl ConfigSnapshot {
    /// The desired state the configs are built from.
    pub fn state(&self) -> &DesiredState {
        &self.state
    }

    /// The enrolled (not revoked) edge's instance id at this snapshot.
    pub fn edge_id(&self) -> Option<&str> {
        self.plan.edge().map(|e| e.id.as_str())
    }

    /// The config version of `instance_id` at this snapshot (`None`:
    /// unknown instance), without building its config.
    pub fn version_of(&self, instance_id: &str) -> Option<u64> {
        self.index.get(instance_id)?;
        Some(
            self.versions
                .get(instance_id)
                .map_or(self.global, |&(v, _)| v),
        )
    }

    /// The `(version, config)` of `instance_id` (`None` config: unknown,
    /// revoked; micro-segmentation has a config without a port).
    pub fn config_for(&self, instance_id: &str) -> (u64, Option<InstanceConfig>) {
        let Some(me) = self.index.get(instance_id).map(|&i| &self.all[i]) else {
            return (self.global, None);
        };
        let version = self
            .versions
            .get(instance_id)
            .map_or(self.global, |&(v, _)| v);
        let cfg = build_config_from(
            me,
            &self.state,
            &self.all,
            Some(&self.by_switch),
            &self.dfw,
            &self.plan,
            &self.lbs,
        );
        (version, cfg.map(|c| InstanceConfig { version, ..c }))
    }
}

/// A fast in-memory fingerprint of a config (not persisted: SipHash keys
/// are fixed per process only through `DefaultHasher::new`).
fn quick_hash(cfg: &InstanceConfig) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    cfg.hash(&mut h);
    h.finish()
}

/// The config of `instance_id` with version 0 (`None`: unknown or revoked),
/// its load balancers with `health`.
fn build_config(
    tx: &Transaction<'_>,
    instance_id: &str,
    health: &HealthView,
) -> Result<Option<InstanceConfig>> {
    let Some(me) = load_instances(tx, Some(instance_id))?.into_iter().next() else {
        return Ok(None);
    };
    if me.revoked_at.is_some() {
        return Ok(None);
    }
    let st = load_state(tx)?;
    // Other instances matter for the ports of an overlay instance (and of
    // the edge), the firewall's group memberships, and the tier-0's public
    // IPs and the edge's endpoint.
    let overlay = me.switch.is_some() && me.ip.is_some();
    let all = if overlay || st.firewall.is_some() || st.tier0.is_some() || me.role == Role::Edge {
        load_instances(tx, None)?
    } else {
        Vec::new()
    };
    let dfw = Resolved::compile(&st, &all);
    let plan = EdgePlan::compile(&st, &all);
    let lbs = LbPlan::compile(&st, health);
    Ok(build_config_from(&me, &st, &all, None, &dfw, &plan, &lbs))
}

/// Refuses ([`StoreError::Invalid`]) a desired state under which some
/// instance's config could not be sent to it ([`crate::deliver`]): the part
/// every instance gets (so a state applied before any agent enrolled is
/// checked too), then each instance's config. `all`: the instances as
/// placed in `apply_state`'s transaction, so the configs checked are
/// exactly those the new state produces; the caller's error drops the
/// transaction, so nothing of the state is kept.
fn check_deliverable(st: &DesiredState, all: &[InstanceRecord]) -> Result<()> {
    let by_switch = index_by_switch(all);
    let dfw = Resolved::compile(st, all);
    let plan = EdgePlan::compile(st, all);
    let lbs = LbPlan::compile(st, &HealthView::new());
    let mut check = crate::deliver::Check::new(st);
    // What every instance gets, enrolled yet or not: if that cannot be
    // framed, no instance's config can (and none is worth encoding).
    let common = InstanceConfig {
        tep_id: MAX_TEP_ID,
        firewall: Some(dfw.common_firewall()),
        ..InstanceConfig::default()
    };
    if !check.common_config(common) {
        return check.finish().map_err(StoreError::Invalid);
    }
    for me in all {
        if let Some(cfg) = build_config_from(me, st, all, Some(&by_switch), &dfw, &plan, &lbs)
            && !check.config(&me.id, cfg)
        {
            break;
        }
    }
    check.finish().map_err(StoreError::Invalid)
}

/// The id of the enrolled (not revoked) edge, if any.
fn enrolled_edge(conn: &Connection) -> Result<Option<String>> {
    Ok(conn
        .query_row(
            "SELECT id FROM instances WHERE role = 'edge' AND revoked_at IS NULL ORDER BY tep_id LIMIT 1",
            [],
            |r| r.get(0),
        )
        .optional()?)
}

/// Refuses ([`StoreError::Invalid`], at `path`) instance `id`'s public IP
/// claim under `st` if it is invalid or another instance claims the
/// address ([`tier0_resolve::check_claim_of`]). Runs inside the
/// transaction that changed the tags, after placement.
fn check_claim(tx: &Transaction<'_>, st: &DesiredState, id: &str, path: &str) -> Result<()> {
    let all = load_instances(tx, None)?;
    let t0 = st.tier0.as_ref().map(|spec| spec.to_model(st));
    let problems = tier0_resolve::check_claim_of(id, path, t0.as_ref(), st, &all);
    Ok(control::validate::Problems::result(problems)?)
}

/// Refuses ([`StoreError::Invalid`]) a desired state under which some
/// instance's public IP claim would be invalid, each problem at
/// `instances["ID"].tags["nsx:publicip"]`; `all` as placed in
/// `apply_state`'s transaction.
fn check_claims(st: &DesiredState, all: &[InstanceRecord]) -> Result<()> {
    let t0 = st.tier0.as_ref().map(|spec| spec.to_model(st));
    let (_, problems) = tier0_resolve::resolve_claims(t0.as_ref(), st, all);
    Ok(control::validate::Problems::result(problems)?)
}

/// Refuses ([`StoreError::Invalid`]) a desired state one of whose load
/// balancers' virtual addresses an instance holds, at
/// `load_balancers[i].vip`; `all` as placed in `apply_state`'s
/// transaction (placement never hands a virtual address out, but keeps
/// what instances held before).
fn check_vips(st: &DesiredState, all: &[InstanceRecord]) -> Result<()> {
    let problems = crate::load_balancer::placed_conflicts(st, all);
    Ok(control::validate::Problems::result(problems)?)
}

/// Positions in `all` of the instances placed on each switch.
fn index_by_switch(all: &[InstanceRecord]) -> HashMap<String, Vec<usize>> {
    let mut by: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, r) in all.iter().enumerate() {
        if let Some(sw) = &r.switch {
            by.entry(sw.clone()).or_default().push(i);
        }
    }
    by
}

/// The config of `me` (version 0) from preloaded state and instances;
/// with `by_switch`, only the instances on the relevant switches are
/// visited (O(ports) instead of O(instances)). `dfw` is the desired
/// state's firewall compiled against `all` ([`Resolved::compile`]); every
/// config, overlay or micro-segmentation, carries its firewall. `lbs` is
/// the load balancers with a health view ([`LbPlan::compile`]): an
/// overlay instance balances the distributed ones, the edge its own.
fn build_config_from(
    me: &InstanceRecord,
    st: &DesiredState,
    all: &[InstanceRecord],
    by_switch: Option<&HashMap<String, Vec<usize>>>,
    dfw: &Resolved,
    plan: &EdgePlan,
    lbs: &LbPlan,
) -> Option<InstanceConfig> {
    if me.revoked_at.is_some() {
        return None;
    }
    if me.role == Role::Edge {
        return Some(build_edge_config(me, st, all, by_switch, plan, lbs));
    }
    let mut cfg = InstanceConfig {
        tep_id: me.tep_id,
        firewall: Some(dfw.firewall_for(me)),
        ..InstanceConfig::default()
    };
    let (Some(my_switch), Some(my_ip)) = (me.switch.clone(), me.ip) else {
        return Some(cfg);
    };
    let routers: Vec<&RouterSpec> = st
        .routers
        .iter()
        .filter(|r| r.switches.contains(&my_switch))
        .collect();
    let mut names: HashSet<&str> = HashSet::from([my_switch.as_str()]);
    for r in &routers {
        names.extend(r.switches.iter().map(String::as_str));
    }
    cfg.switches = st
        .switches
        .iter()
        .filter(|s| names.contains(s.name.as_str()))
        .map(SwitchSpec::to_model)
        .collect();
    cfg.routers = routers.iter().map(|r| r.to_model()).collect();
    cfg.port = Some(LocalPort {
        switch: my_switch.clone(),
        ip: my_ip,
        mac: Some(me.nic_mac),
    });
    cfg.remote_ports = remote_ports(me, &names, all, by_switch);
    cfg.edge = plan.link_for(&cfg.routers);
    cfg.load_balancers = lbs.for_instances().to_vec();
    Some(cfg)
}

/// The ports of every other non-revoked instance placed on the switches
/// `names`, sorted by switch and address.
fn remote_ports(
    me: &InstanceRecord,
    names: &HashSet<&str>,
    all: &[InstanceRecord],
    by_switch: Option<&HashMap<String, Vec<usize>>>,
) -> Vec<RemotePort> {
    let candidates: Box<dyn Iterator<Item = &InstanceRecord>> = match by_switch {
        Some(by) => Box::new(
            names
                .iter()
                .filter_map(|n| by.get(*n))
                .flatten()
                .filter_map(|&i| all.get(i)),
        ),
        None => Box::new(all.iter()),
    };
    let mut out = Vec::new();
    for other in candidates {
        if other.id == me.id || other.revoked_at.is_some() {
            continue;
        }
        if let (Some(sw), Some(ip)) = (&other.switch, other.ip)
            && names.contains(sw.as_str())
        {
            out.push(RemotePort {
                switch: sw.clone(),
                ip,
                mac: other.nic_mac,
                tep_ip: other.underlay_ip,
                tep_id: other.tep_id,
            });
        }
    }
    out.sort_by(|a, b| (&a.switch, a.ip).cmp(&(&b.switch, b.ip)));
    out
}

/// The edge's config (version 0): the tier-0 resolved by `plan` (with its
/// public IPs and the virtual servers it health-checks), its tier-1s and
/// their switches, and every instance port on those switches;
/// no port, no firewall (the DFW stays at the instances); the load
/// balancers on the uplink's addresses and the full-NAT ones. Without a
/// `tier0` section: nothing but its tep_id.
fn build_edge_config(
    me: &InstanceRecord,
    st: &DesiredState,
    all: &[InstanceRecord],
    by_switch: Option<&HashMap<String, Vec<usize>>>,
    plan: &EdgePlan,
    lbs: &LbPlan,
) -> InstanceConfig {
    let mut cfg = InstanceConfig {
        tep_id: me.tep_id,
        ..InstanceConfig::default()
    };
    let Some(t0) = plan.tier0() else {
        return cfg;
    };
    let routers: Vec<&RouterSpec> = st
        .routers
        .iter()
        .filter(|r| t0.tier1s.contains(&r.name))
        .collect();
    let names: HashSet<&str> = routers
        .iter()
        .flat_map(|r| r.switches.iter().map(String::as_str))
        .collect();
    cfg.switches = st
        .switches
        .iter()
        .filter(|s| names.contains(s.name.as_str()))
        .map(SwitchSpec::to_model)
        .collect();
    cfg.routers = routers.iter().map(|r| r.to_model()).collect();
    cfg.remote_ports = remote_ports(me, &names, all, by_switch);
    cfg.tier0 = Some(Box::new(t0.clone()));
    cfg.load_balancers = lbs.for_edge().to_vec();
    cfg
}

// ----- helpers -------------------------------------------------------------

fn migrate(conn: &mut Connection) -> Result<()> {
    let tx = conn.transaction()?;
    tx.execute(
        "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
        [],
    )?;
    let current: i64 = tx.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM schema_version",
        [],
        |r| r.get(0),
    )?;
    let current =
        usize::try_from(current).map_err(|_| corrupt("schema_version", &current.to_string()))?;
    if current > MIGRATIONS.len() {
        return Err(StoreError::SchemaTooNew {
            found: current,
            known: MIGRATIONS.len(),
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        tx.execute_batch(sql)?;
        tx.execute(
            "INSERT INTO schema_version (version, applied_at) VALUES (?1, ?2)",
            params![to_i64((i + 1) as u64), to_i64(crate::util::now_unix())],
        )?;
    }
    tx.commit()?;
    Ok(())
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn to_json<T: Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn meta_get(conn: &Connection, key: &str) -> Result<u64> {
    let v: i64 = conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))?;
    Ok(to_u64(v))
}

fn meta_bump(tx: &Transaction<'_>, key: &str) -> Result<()> {
    tx.execute("UPDATE meta SET value = value + 1 WHERE key = ?1", [key])?;
    Ok(())
}

fn bootstrap_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<BootstrapKeyRow> {
    Ok(BootstrapKeyRow {
        id: r.get(0)?,
        public_key: r.get(1)?,
        created_at: to_u64(r.get(2)?),
        retired_at: r.get::<_, Option<i64>>(3)?.map(to_u64),
    })
}

fn load_state(conn: &Connection) -> Result<DesiredState> {
    let mut switches = Vec::new();
    {
        let mut st = conn.prepare(
            "SELECT name, tag, vni, subnet, gateway_ip, dhcp FROM switches ORDER BY pos",
        )?;
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            let vni: i64 = r.get(2)?;
            let subnet: String = r.get(3)?;
            let gw: String = r.get(4)?;
            let dhcp: Option<String> = r.get(5)?;
            switches.push(SwitchSpec {
                name: r.get(0)?,
                tag: r.get(1)?,
                vni: u32::try_from(vni).map_err(|_| corrupt("vni", &vni.to_string()))?,
                subnet: subnet.parse().map_err(|_| corrupt("subnet", &subnet))?,
                gateway_ip: gw.parse().map_err(|_| corrupt("gateway_ip", &gw))?,
                dhcp: dhcp
                    .map(|d| serde_json::from_str(&d).map_err(|_| corrupt("dhcp", &d)))
                    .transpose()?,
            });
        }
    }
    let mut routers = Vec::new();
    {
        let mut st =
            conn.prepare("SELECT name, mac, switches, routes FROM routers ORDER BY pos")?;
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            let mac: String = r.get(1)?;
            let sw: String = r.get(2)?;
            let routes: String = r.get(3)?;
            routers.push(RouterSpec {
                name: r.get(0)?,
                mac: mac.parse().map_err(|_| corrupt("router mac", &mac))?,
                switches: serde_json::from_str(&sw).map_err(|_| corrupt("router switches", &sw))?,
                routes: serde_json::from_str(&routes)
                    .map_err(|_| corrupt("router routes", &routes))?,
            });
        }
    }
    let firewall: Option<String> = conn
        .query_row("SELECT spec FROM firewall WHERE id = 1", [], |r| r.get(0))
        .optional()?;
    let firewall = match firewall {
        Some(text) => Some(
            serde_json::from_str(&text)
                .map_err(|e| StoreError::Corrupt(format!("firewall: {e}")))?,
        ),
        None => None,
    };
    let tier0: Option<String> = conn
        .query_row("SELECT spec FROM tier0 WHERE id = 1", [], |r| r.get(0))
        .optional()?;
    let tier0 = match tier0 {
        Some(text) => Some(
            serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(format!("tier0: {e}")))?,
        ),
        None => None,
    };
    let load_balancers: Option<String> = conn
        .query_row("SELECT spec FROM load_balancers WHERE id = 1", [], |r| {
            r.get(0)
        })
        .optional()?;
    let load_balancers = match load_balancers {
        Some(text) => serde_json::from_str(&text)
            .map_err(|e| StoreError::Corrupt(format!("load_balancers: {e}")))?,
        None => Vec::new(),
    };
    Ok(DesiredState {
        switches,
        routers,
        firewall,
        tier0,
        load_balancers,
    })
}

fn load_instances(conn: &Connection, only: Option<&str>) -> Result<Vec<InstanceRecord>> {
    let sql = "SELECT i.id, i.hostname, i.os, i.image_id, i.tags, i.underlay_ip, i.nic_mac,
                      i.cert_serial, i.cert_fingerprint, i.tep_id, i.enrolled_at, i.revoked_at,
                      a.switch, a.ip, s.state, s.acked_version, s.last_error, i.role
               FROM instances i LEFT JOIN ip_allocations a ON a.instance_id = i.id
                    LEFT JOIN sessions s ON s.instance_id = i.id
               WHERE (?1 IS NULL OR i.id = ?1)
               ORDER BY i.tep_id";
    let mut st = conn.prepare(sql)?;
    let mut rows = st.query([only])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let tags: String = r.get(4)?;
        let underlay: String = r.get(5)?;
        let mac: String = r.get(6)?;
        let tep: i64 = r.get(9)?;
        let ip: Option<String> = r.get(13)?;
        let role: String = r.get(17)?;
        out.push(InstanceRecord {
            id: r.get(0)?,
            hostname: r.get(1)?,
            os: r.get(2)?,
            image_id: r.get(3)?,
            tags: serde_json::from_str(&tags).map_err(|_| corrupt("tags", &tags))?,
            underlay_ip: underlay
                .parse()
                .map_err(|_| corrupt("underlay_ip", &underlay))?,
            nic_mac: mac.parse().map_err(|_| corrupt("nic_mac", &mac))?,
            cert_serial: r.get(7)?,
            cert_fingerprint: r.get(8)?,
            tep_id: u32::try_from(tep).map_err(|_| corrupt("tep_id", &tep.to_string()))?,
            role: Role::from_name(&role).ok_or_else(|| corrupt("role", &role))?,
            enrolled_at: to_u64(r.get(10)?),
            revoked_at: r.get::<_, Option<i64>>(11)?.map(to_u64),
            switch: r.get(12)?,
            ip: match ip {
                Some(s) => Some(s.parse().map_err(|_| corrupt("allocated ip", &s))?),
                None => None,
            },
            session: r.get(14)?,
            acked_version: r.get::<_, Option<i64>>(15)?.map(to_u64),
            last_error: r.get(16)?,
        });
    }
    Ok(out)
}

/// Re-evaluates every instance's placement inside `tx`: keeps each valid
/// allocation, releases those of revoked, moved or micro-segmented
/// instances (or whose switch changed under them), and gives every
/// unplaced overlay instance the lowest free address of its switch.
/// Instances are served in enrollment order, so results are deterministic.
fn reconcile_placement(tx: &Transaction<'_>, now: u64) -> Result<()> {
    let st = load_state(tx)?;
    let by_tag: HashMap<&str, &SwitchSpec> =
        st.switches.iter().map(|s| (s.tag.as_str(), s)).collect();
    let instances = load_instances(tx, None)?;
    let vips = crate::load_balancer::vips(&st);

    let mut used: HashMap<String, HashSet<Ipv4Addr>> = HashMap::new();
    let mut to_place: Vec<(&InstanceRecord, &SwitchSpec)> = Vec::new();
    for inst in &instances {
        let target = if inst.revoked_at.is_some() {
            None
        } else {
            inst.wanted_switch_tag()
                .and_then(|t| by_tag.get(t).copied())
        };
        let keep = match (&inst.switch, inst.ip, target) {
            (Some(sw), Some(ip), Some(t)) => {
                *sw == t.name
                    && t.is_assignable(ip)
                    && used.entry(sw.clone()).or_default().insert(ip)
            }
            _ => false,
        };
        if !keep && inst.switch.is_some() {
            tx.execute(
                "DELETE FROM ip_allocations WHERE instance_id = ?1",
                [&inst.id],
            )?;
        }
        if let (false, Some(t)) = (keep, target) {
            to_place.push((inst, t));
        }
    }
    for (inst, sw) in to_place {
        let used = used.entry(sw.name.clone()).or_default();
        let Some(ip) = lowest_free(sw, used, &vips) else {
            tracing::warn!(instance = %inst.id, switch = %sw.name, "switch subnet is full; instance left unplaced");
            continue;
        };
        used.insert(ip);
        tx.execute(
            "INSERT INTO ip_allocations (instance_id, switch, ip, allocated_at) VALUES (?1, ?2, ?3, ?4)",
            params![inst.id, sw.name, ip.to_string(), to_i64(now)],
        )?;
    }
    Ok(())
}

/// The lowest address of `sw` that is assignable, not `used`, and not a
/// load balancer's virtual address.
fn lowest_free(
    sw: &SwitchSpec,
    used: &HashSet<Ipv4Addr>,
    vips: &HashSet<Ipv4Addr>,
) -> Option<Ipv4Addr> {
    let first = u32::from(sw.subnet.network()).checked_add(1)?;
    let last = u32::from(sw.subnet.broadcast()).checked_sub(1)?;
    (first..=last)
        .map(Ipv4Addr::from)
        .find(|ip| sw.is_assignable(*ip) && !used.contains(ip) && !vips.contains(ip))
}
