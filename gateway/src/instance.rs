//! The inventory record of an enrolled instance ([`InstanceRecord`], the
//! edge included) and the placement its tags ask for. One level below both the store, which
//! reads and writes records, and the firewall's resolution
//! ([`crate::dfw_resolve`]), which matches groups against them.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use control::model::MacAddr;
use control::proto::Role;
use serde::Serialize;

use crate::state::{DEFAULT_NETWORK, NETWORK_TAG};

/// An enrolled instance with its current placement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceRecord {
    pub id: String,
    pub hostname: String,
    pub os: String,
    pub image_id: String,
    pub tags: BTreeMap<String, String>,
    pub underlay_ip: Ipv4Addr,
    pub nic_mac: MacAddr,
    pub cert_serial: String,
    pub cert_fingerprint: String,
    pub tep_id: u32,
    /// What it enrolled as: an instance or the edge (at most one edge is
    /// enrolled and not revoked).
    pub role: Role,
    pub enrolled_at: u64,
    pub revoked_at: Option<u64>,
    /// The switch the instance has a port on (overlay mode), if any.
    pub switch: Option<String>,
    pub ip: Option<Ipv4Addr>,
    /// Control session: `ESTABLISHED`, `DISCONNECTED`, or `None` (never connected).
    pub session: Option<String>,
    /// The last config version the agent acked.
    pub acked_version: Option<u64>,
    /// Why the last session ended or the last config was nacked.
    pub last_error: Option<String>,
}

impl InstanceRecord {
    /// `overlay`, `micro-segmentation`, `pending` (tagged for an unknown
    /// switch or its subnet is full), `edge` or `revoked`.
    pub fn mode(&self) -> &'static str {
        if self.revoked_at.is_some() {
            "revoked"
        } else if self.role == Role::Edge {
            "edge"
        } else if self.switch.is_some() {
            "overlay"
        } else if wanted_tag(&self.tags).is_some() {
            "pending"
        } else {
            "micro-segmentation"
        }
    }

    /// True for the enrolled edge (not revoked).
    pub fn is_edge(&self) -> bool {
        self.role == Role::Edge && self.revoked_at.is_none()
    }

    /// The switch tag this instance is placed by; `None` for
    /// micro-segmentation and for the edge, which has no overlay port
    /// whatever its tags say.
    pub fn wanted_switch_tag(&self) -> Option<&str> {
        if self.role == Role::Edge {
            None
        } else {
            wanted_tag(&self.tags)
        }
    }
}

/// The switch tag an instance asks for, `None` for micro-segmentation.
pub(crate) fn wanted_tag(tags: &BTreeMap<String, String>) -> Option<&str> {
    match tags.get(NETWORK_TAG).map(|s| s.trim()) {
        None | Some("") | Some(DEFAULT_NETWORK) => None,
        Some(t) => Some(t),
    }
}
