//! The server side of enrollment (`POST /api/v1/enroll` on 8443), the
//! seed's "publish SE credentials" step.
//!
//! Request body (at most [`MAX_BODY`] bytes):
//! `{"payload": "<exact JSON text>", "signature": "<base64 DER
//! ECDSA-P256-SHA256 over the payload bytes>", "key_id": "<bootstrap key id>"}`
//! with payload `{"csr_pem", "instance": {instance_id, hostname, os,
//! image_id, tags, underlay_ip, nic_mac}, "timestamp": <unix secs>,
//! "nonce": "<32 hex>", "role": "edge"}` (`role` absent: an instance).
//!
//! Checks, in order: the key id is the active bootstrap key (403), the
//! signature is valid (403), the timestamp is within [`MAX_SKEW_SECS`] (403),
//! the nonce was never seen (409), the instance is not enrolled (409), an
//! edge is the only one not revoked (409), the metadata and the CSR are
//! sound (400), and so is the public IP its tags claim, if the state has a
//! tier-0 (400). The certificate's subject and
//! extensions are the gateway's choice (CN = instance id, clientAuth, one
//! year), never the CSR's. Success returns
//! `{"certificate_pem", "ca_pem", "instance_id", "tep_id"}`.

use base64::Engine as _;
use control::proto::{InstanceMeta, Role};

use crate::gateway::Gateway;
use crate::pki::{self, PkiError};
use crate::store::{NewInstance, StoreError};

/// Largest accepted request body.
pub const MAX_BODY: usize = 64 * 1024;
/// Largest accepted distance between the request timestamp and the gateway clock.
pub const MAX_SKEW_SECS: u64 = 300;
/// How long a nonce is remembered (longer than the freshness window on both sides).
pub const NONCE_TTL_SECS: u64 = 2 * MAX_SKEW_SECS + 60;

// The wire types are the agent<->gateway contract and live in `control`.
pub use control::proto::{EnrollPayload, EnrollRequest, EnrollResponse};

/// Why an enrollment was refused; [`EnrollError::status`] gives the HTTP code.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error("malformed enrollment request: {0}")]
    BadRequest(String),
    #[error("unknown bootstrap key {0:?}")]
    UnknownKey(String),
    #[error("bootstrap key retired")]
    KeyRetired,
    #[error("bad signature: the payload is not signed by the bootstrap key")]
    BadSignature,
    #[error(
        "stale enrollment request: timestamp is {0} s away from the gateway clock (limit {MAX_SKEW_SECS} s)"
    )]
    Stale(u64),
    #[error("replayed enrollment request")]
    Replayed,
    #[error("instance already enrolled; the bootstrap key is not accepted again")]
    AlreadyEnrolled,
    #[error(
        "an edge is already enrolled (instance {0:?}); a gateway has at most one edge: revoke it first (nsx-gateway instance revoke {0})"
    )]
    EdgeTaken(String),
    #[error("invalid instance metadata: {0}")]
    BadInstance(String),
    #[error("bad CSR: {0}")]
    BadCsr(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl EnrollError {
    pub fn status(&self) -> u16 {
        match self {
            EnrollError::BadRequest(_) | EnrollError::BadInstance(_) | EnrollError::BadCsr(_) => {
                400
            }
            EnrollError::UnknownKey(_)
            | EnrollError::KeyRetired
            | EnrollError::BadSignature
            | EnrollError::Stale(_) => 403,
            EnrollError::Replayed | EnrollError::AlreadyEnrolled | EnrollError::EdgeTaken(_) => 409,
            EnrollError::Internal(_) => 500,
        }
    }
}

impl From<StoreError> for EnrollError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Replayed => EnrollError::Replayed,
            StoreError::AlreadyEnrolled => EnrollError::AlreadyEnrolled,
            StoreError::EdgeTaken(id) => EnrollError::EdgeTaken(id),
            StoreError::Invalid(p) => EnrollError::BadInstance(
                p.list()
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
            other => EnrollError::Internal(other.to_string()),
        }
    }
}

fn check_text(errs: &mut Vec<String>, field: &str, v: &str, max: usize) {
    if v.trim().is_empty() {
        errs.push(format!("{field} must not be empty"));
    } else if v.len() > max {
        errs.push(format!("{field} is longer than {max} bytes"));
    } else if v.chars().any(char::is_control) {
        errs.push(format!("{field} contains control characters"));
    }
}

/// Checks the metadata an instance reports about itself.
pub fn validate_meta(m: &InstanceMeta) -> Result<(), EnrollError> {
    let mut errs = Vec::new();
    let id = &m.instance_id;
    if id.is_empty()
        || id.len() > 128
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
    {
        errs.push(format!(
            "instance.instance_id {id:?} must be 1-128 characters of [A-Za-z0-9-_.:]"
        ));
    }
    check_text(&mut errs, "instance.hostname", &m.hostname, 253);
    check_text(&mut errs, "instance.os", &m.os, 256);
    check_text(&mut errs, "instance.image_id", &m.image_id, 256);
    if m.tags.len() > 64 {
        errs.push("instance.tags has more than 64 entries".into());
    }
    for (k, v) in &m.tags {
        check_text(&mut errs, &format!("instance.tags key {k:?}"), k, 128);
        if v.len() > 256 || v.chars().any(char::is_control) {
            errs.push(format!(
                "instance.tags[{k:?}] must be at most 256 printable bytes"
            ));
        }
    }
    let u = m.underlay_ip;
    if u.is_unspecified() || u.is_loopback() || u.is_multicast() || u.is_broadcast() {
        errs.push(format!("instance.underlay_ip {u} is not a unicast address"));
    }
    if m.nic_mac.is_multicast() || m.nic_mac.is_zero() {
        errs.push(format!(
            "instance.nic_mac {} is not a unicast MAC",
            m.nic_mac
        ));
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(EnrollError::BadInstance(errs.join("; ")))
    }
}

/// Handles one enrollment request body at time `now` (unix seconds).
pub fn handle(gw: &Gateway, body: &[u8], now: u64) -> Result<EnrollResponse, EnrollError> {
    if body.len() > MAX_BODY {
        return Err(EnrollError::BadRequest(format!(
            "body exceeds {MAX_BODY} bytes"
        )));
    }
    let req: EnrollRequest =
        serde_json::from_slice(body).map_err(|e| EnrollError::BadRequest(e.to_string()))?;

    // 1. The bootstrap key (ids are lower-case hex).
    let key_id = req.key_id.trim().to_ascii_lowercase();
    let key = gw
        .store()
        .bootstrap_key(&key_id)?
        .ok_or_else(|| EnrollError::UnknownKey(key_id.chars().take(64).collect()))?;
    if !key.is_active() {
        return Err(EnrollError::KeyRetired);
    }
    // 2. The signature over the exact payload bytes.
    let sig = base64::engine::general_purpose::STANDARD
        .decode(req.signature.trim())
        .map_err(|_| EnrollError::BadSignature)?;
    if !pki::verify_bootstrap_signature(&key.public_key, req.payload.as_bytes(), &sig) {
        return Err(EnrollError::BadSignature);
    }
    // 3. Only now is the payload trusted enough to parse.
    let p: EnrollPayload = serde_json::from_str(&req.payload)
        .map_err(|e| EnrollError::BadRequest(format!("payload: {e}")))?;
    let skew = now.abs_diff(p.timestamp);
    if skew > MAX_SKEW_SECS {
        return Err(EnrollError::Stale(skew));
    }
    if p.nonce.len() != 32 || !p.nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(EnrollError::BadRequest(
            "nonce must be 32 hex characters".into(),
        ));
    }
    let nonce = p.nonce.to_ascii_lowercase();
    {
        let store = gw.store();
        if store.nonce_seen(&nonce, now)? {
            return Err(EnrollError::Replayed);
        }
        if store.instance_exists(&p.instance.instance_id)? {
            return Err(EnrollError::AlreadyEnrolled);
        }
        // Before a certificate is signed; the store checks again.
        if p.role == Role::Edge
            && let Some(edge) = store.edge_id()?
        {
            return Err(EnrollError::EdgeTaken(edge));
        }
    }
    validate_meta(&p.instance)?;
    // 4. The CSR: signature verified by rcgen; subject and extensions overridden.
    let issued = gw
        .ca()
        .sign_client_csr(&p.csr_pem, &p.instance.instance_id, now)
        .map_err(|e| match e {
            PkiError::Csr(e) => EnrollError::BadCsr(e.to_string()),
            other => EnrollError::Internal(other.to_string()),
        })?;
    // 5. Record atomically (re-checks nonce and instance inside the transaction).
    let tep_id = gw.store().enroll(
        &NewInstance {
            meta: p.instance.clone(),
            cert_serial: issued.serial_hex.clone(),
            cert_fingerprint: issued.fingerprint.clone(),
            role: p.role,
        },
        &nonce,
        now + NONCE_TTL_SECS,
        now,
    )?;
    gw.notify_changed();
    tracing::info!(instance = %p.instance.instance_id, tep_id, role = %p.role, "enrolled");
    Ok(EnrollResponse {
        certificate_pem: issued.pem,
        ca_pem: gw.ca().cert_pem().to_string(),
        instance_id: p.instance.instance_id,
        tep_id,
    })
}
