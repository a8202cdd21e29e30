//! Wire messages of the agent <-> gateway control channel (TCP 5555 inside
//! TLS 1.3). This file owns the message vocabulary and the protocol-version
//! constants; framing lives in [`crate::framing`] and the rules about which
//! message may follow which in [`crate::session`].
//!
//! Every message is a JSON object whose `"type"` field names the variant
//! (`{"type":"Heartbeat","seq":7}`). There is one enum per direction:
//! [`AgentMsg`] (agent -> gateway) and [`GatewayMsg`] (gateway -> agent), so
//! a peer that sends a message of the other direction gets an "unknown
//! message type" error rather than a silent misinterpretation.
//!
//! Config is always sent whole: both [`GatewayMsg::Snapshot`] and
//! [`GatewayMsg::Update`] carry the complete [`InstanceConfig`] of the
//! instance. `Update` adds `from_version` so the agent can detect that it
//! missed something (and ask for a resync) instead of silently diverging.
//!
//! The enrollment body and answer (HTTPS 8443) are here too, so the agent
//! and the gateway share one definition of that contract.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::model::{InstanceConfig, MacAddr};

/// The protocol version this build speaks best.
pub const PROTOCOL_VERSION: u32 = 2;

/// Every protocol version this build speaks (ascending). Sent in `Hello` by
/// the agent; intersected with the gateway's list to pick the highest
/// common version.
/// Version 2 adds [`AgentMsg::Health`] (the edge's health checkers).
pub const SUPPORTED_VERSIONS: &[u32] = &[1, PROTOCOL_VERSION];

/// The first protocol version with [`AgentMsg::Health`].
pub const HEALTH_VERSION: u32 = 2;

/// Largest JSON payload of one frame, in bytes (the 4-byte length prefix
/// excluded). Checked on encode and, on decode, from the length prefix
/// before anything is buffered.
pub const MAX_FRAME: usize = 4 << 20;

/// Default heartbeat interval the gateway proposes in `Welcome`.
pub const DEFAULT_HEARTBEAT_MS: u64 = 1_000;
/// Smallest heartbeat interval an agent accepts in `Welcome`.
pub const MIN_HEARTBEAT_MS: u64 = 50;
/// Largest heartbeat interval an agent accepts in `Welcome`.
pub const MAX_HEARTBEAT_MS: u64 = 300_000;

/// What an instance says about itself in `Hello`. The gateway identifies the
/// instance from its client certificate; `instance_id` must match it, the
/// rest is inventory (tags drive placement).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceMeta {
    pub instance_id: String,
    pub hostname: String,
    pub os: String,
    pub image_id: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    pub underlay_ip: Ipv4Addr,
    pub nic_mac: MacAddr,
}

/// Periodic status flowing up: what is applied and a named-counter summary
/// (e.g. `"rx_packets"`, `"dropped_spoofguard"`). Counter names are free-form
/// so the datapath can add counters without a protocol bump.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusReport {
    pub applied_version: Option<u64>,
    #[serde(default)]
    pub counters: BTreeMap<String, u64>,
    /// The agent's last local error (failed apply, datapath trouble), if any.
    #[serde(default)]
    pub last_error: Option<String>,
}

/// Agent -> gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
pub enum AgentMsg {
    /// First message on a connection.
    Hello {
        /// Protocol versions the agent speaks.
        versions: Vec<u32>,
        /// The agent's software version (informational).
        agent_version: String,
        instance: InstanceMeta,
        /// Version of the config the agent is running (persisted across
        /// restarts), `None` if it runs none.
        applied_version: Option<u64>,
    },
    /// `version` was validated and applied.
    Ack {
        version: u64,
    },
    /// `version` was not applied; the agent keeps its previous config.
    /// `resync: true` means the agent could not use the message at all
    /// (an `Update` whose `from_version` is not what it runs) and asks for
    /// a full `Snapshot`.
    Nack {
        version: u64,
        reason: String,
        #[serde(default)]
        resync: bool,
    },
    Heartbeat {
        seq: u64,
    },
    Status(StatusReport),
    /// The edge's health checkers' verdicts (protocol version 2 and up;
    /// only the edge sends it).
    Health(crate::lb::HealthReport),
}

/// Gateway -> agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
pub enum GatewayMsg {
    /// Answer to `Hello`: the session is up.
    Welcome {
        /// The chosen protocol version (highest common one).
        version: u32,
        /// The instance as the gateway identified it (from its certificate).
        instance_id: String,
        /// The instance's tunnel-endpoint id.
        tep_id: u32,
        /// Heartbeat interval both sides use; 3 missed intervals = dead.
        heartbeat_ms: u64,
    },
    /// The instance's whole desired state at `version`. `config: None`
    /// means micro-segmentation mode: no overlay port.
    Snapshot {
        version: u64,
        config: Option<InstanceConfig>,
    },
    /// The whole desired state at `version`, valid only on top of
    /// `from_version` (the version the gateway believes the agent runs).
    Update {
        from_version: u64,
        version: u64,
        config: Option<InstanceConfig>,
    },
    Heartbeat {
        seq: u64,
    },
    /// The gateway refuses or ends the session; it closes the connection
    /// right after.
    Reject {
        reason: String,
    },
}

/// A message type that can cross the wire: serde plus the list of its
/// `"type"` tags, which lets the decoder tell "unknown type" from
/// "known type, bad fields".
pub trait Message: Serialize + DeserializeOwned {
    /// Every `"type"` tag of this enum.
    const TYPES: &'static [&'static str];
    /// The `"type"` tag of this value.
    fn type_name(&self) -> &'static str;
    /// What errors and logs say about this message: its type, versions and
    /// how much it carries, never its contents (a config can be megabytes,
    /// a peer's strings anything). Bounded: numbers and fixed words only.
    fn summary(&self) -> String;
}

/// "config with 2 switches, ..., 3 address sets of 300000 addresses, 12
/// rules" (or "no config"): the scale of a config, for [`Message::summary`].
pub fn config_summary(config: Option<&InstanceConfig>) -> String {
    let Some(c) = config else {
        return "no config".into();
    };
    let (sets, addrs, rules) = c.firewall.as_ref().map_or((0, 0, 0), |fw| {
        (
            fw.addrsets.len(),
            fw.addrsets.iter().map(|s| s.addrs.len()).sum::<usize>(),
            fw.rulesets.iter().map(|r| r.rules.len()).sum::<usize>()
                + fw.l2_rulesets.iter().map(|r| r.rules.len()).sum::<usize>(),
        )
    });
    format!(
        "config with {} switches, {} routers, {} remote ports, {sets} address sets of {addrs} addresses, {rules} rules",
        c.switches.len(),
        c.routers.len(),
        c.remote_ports.len(),
    )
}

impl Message for AgentMsg {
    const TYPES: &'static [&'static str] =
        &["Hello", "Ack", "Nack", "Heartbeat", "Status", "Health"];

    fn type_name(&self) -> &'static str {
        match self {
            AgentMsg::Hello { .. } => "Hello",
            AgentMsg::Ack { .. } => "Ack",
            AgentMsg::Nack { .. } => "Nack",
            AgentMsg::Heartbeat { .. } => "Heartbeat",
            AgentMsg::Status(_) => "Status",
            AgentMsg::Health(_) => "Health",
        }
    }

    fn summary(&self) -> String {
        match self {
            AgentMsg::Hello {
                applied_version, ..
            } => match applied_version {
                Some(v) => format!("Hello (running version {v})"),
                None => "Hello (running no config)".into(),
            },
            AgentMsg::Ack { version } => format!("Ack of version {version}"),
            AgentMsg::Nack {
                version,
                reason,
                resync,
            } => format!(
                "Nack of version {version} (reason of {} bytes, resync {resync})",
                reason.len()
            ),
            AgentMsg::Heartbeat { seq } => format!("Heartbeat {seq}"),
            AgentMsg::Status(r) => format!("Status ({} counters)", r.counters.len()),
            AgentMsg::Health(r) => format!(
                "Health ({} verdicts{})",
                r.verdicts.len(),
                if r.full { ", full" } else { "" }
            ),
        }
    }
}

impl Message for GatewayMsg {
    const TYPES: &'static [&'static str] =
        &["Welcome", "Snapshot", "Update", "Heartbeat", "Reject"];

    fn type_name(&self) -> &'static str {
        match self {
            GatewayMsg::Welcome { .. } => "Welcome",
            GatewayMsg::Snapshot { .. } => "Snapshot",
            GatewayMsg::Update { .. } => "Update",
            GatewayMsg::Heartbeat { .. } => "Heartbeat",
            GatewayMsg::Reject { .. } => "Reject",
        }
    }

    fn summary(&self) -> String {
        match self {
            GatewayMsg::Welcome { version, .. } => format!("Welcome (protocol {version})"),
            GatewayMsg::Snapshot { version, config } => format!(
                "Snapshot of version {version} ({})",
                config_summary(config.as_ref())
            ),
            GatewayMsg::Update {
                from_version,
                version,
                config,
            } => format!(
                "Update {from_version}->{version} ({})",
                config_summary(config.as_ref())
            ),
            GatewayMsg::Heartbeat { seq } => format!("Heartbeat {seq}"),
            GatewayMsg::Reject { reason } => format!("Reject (reason of {} bytes)", reason.len()),
        }
    }
}

/// Highest version present in both lists, if any.
pub fn negotiate(ours: &[u32], theirs: &[u32]) -> Option<u32> {
    ours.iter().copied().filter(|v| theirs.contains(v)).max()
}

// ---------------------------------------------------------------------------
// Enrollment (HTTPS 8443, `POST /api/v1/enroll`): the body and the answer.
// ---------------------------------------------------------------------------

/// The outer request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// The exact JSON text of an [`EnrollPayload`]; the signature covers these bytes.
    pub payload: String,
    /// Base64 (standard, padded) ASN.1 DER ECDSA-P256-SHA256 signature.
    pub signature: String,
    /// Id of the bootstrap key that signed (SHA-256 of its raw public key, 64 hex characters).
    pub key_id: String,
}

/// The signed payload.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollPayload {
    pub csr_pem: String,
    pub instance: InstanceMeta,
    pub timestamp: u64,
    /// 32 lower- or upper-case hex characters, never reused.
    pub nonce: String,
    /// What the agent enrolls as; absent = [`Role::Instance`] (what every
    /// agent before the edge role sent), so it is only written for an edge.
    #[serde(default, skip_serializing_if = "Role::is_instance")]
    pub role: Role,
}

/// What an enrolling agent is: an ordinary instance, or the edge (the
/// agent on the gateway host with an uplink, running the tier-0 router).
/// A gateway has at most one edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    #[default]
    Instance,
    Edge,
}

impl Role {
    /// True for the default role (not written in an enrollment payload).
    pub fn is_instance(&self) -> bool {
        *self == Role::Instance
    }

    /// The role's name as written on the wire and in the gateway's store.
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Instance => "instance",
            Role::Edge => "edge",
        }
    }

    /// The role of a name written by [`Role::as_str`].
    pub fn from_name(name: &str) -> Option<Role> {
        match name {
            "instance" => Some(Role::Instance),
            "edge" => Some(Role::Edge),
            _ => None,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollResponse {
    pub certificate_pem: String,
    pub ca_pem: String,
    pub instance_id: String,
    pub tep_id: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiate_picks_highest_common() {
        assert_eq!(negotiate(&[1, 2, 3], &[2, 3, 4]), Some(3));
        assert_eq!(negotiate(&[1], &[2]), None);
        assert_eq!(negotiate(&[], &[1]), None);
    }

    #[test]
    fn json_shape_is_tagged() {
        let m = AgentMsg::Heartbeat { seq: 7 };
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"type":"Heartbeat","seq":7}"#
        );
        let s = AgentMsg::Status(StatusReport {
            applied_version: Some(3),
            ..Default::default()
        });
        let j = serde_json::to_string(&s).unwrap();
        assert!(
            j.starts_with(r#"{"type":"Status","applied_version":3"#),
            "{j}"
        );
        let g: GatewayMsg =
            serde_json::from_str(r#"{"type":"Snapshot","version":4,"config":null}"#).unwrap();
        assert_eq!(
            g,
            GatewayMsg::Snapshot {
                version: 4,
                config: None
            }
        );
    }

    #[test]
    fn nack_resync_defaults_to_false() {
        let m: AgentMsg =
            serde_json::from_str(r#"{"type":"Nack","version":2,"reason":"x"}"#).unwrap();
        assert_eq!(
            m,
            AgentMsg::Nack {
                version: 2,
                reason: "x".into(),
                resync: false
            }
        );
    }

    /// Summaries say what a message is and how big, never what it carries.
    #[test]
    fn summaries_are_short_for_huge_messages() {
        let huge = "x".repeat(5 << 20);
        let config = InstanceConfig {
            version: 3,
            tep_id: 1,
            firewall: Some(crate::firewall::FirewallConfig {
                addrsets: vec![crate::firewall::AddrSet {
                    name: huge.clone(),
                    addrs: vec!["10.0.0.0/8".parse().unwrap(); 1000],
                }],
                ..crate::firewall::FirewallConfig::allow_all()
            }),
            ..InstanceConfig::default()
        };
        let g = GatewayMsg::Update {
            from_version: 2,
            version: 3,
            config: Some(config),
        };
        assert_eq!(
            g.summary(),
            "Update 2->3 (config with 0 switches, 0 routers, 0 remote ports, 1 address sets of 1000 addresses, 0 rules)"
        );
        let r = GatewayMsg::Reject {
            reason: huge.clone(),
        };
        assert_eq!(r.summary(), format!("Reject (reason of {} bytes)", 5 << 20));
        let n = AgentMsg::Nack {
            version: 4,
            reason: huge,
            resync: false,
        };
        assert!(n.summary().len() < 100, "{}", n.summary());
        let s = GatewayMsg::Snapshot {
            version: 1,
            config: None,
        };
        assert_eq!(s.summary(), "Snapshot of version 1 (no config)");
    }

    /// The role is backward compatible: a payload without it is an
    /// instance's, and an instance's payload does not carry it.
    #[test]
    fn enroll_role_defaults_to_instance() {
        let meta = r#"{"instance_id":"i","hostname":"h","os":"linux","image_id":"x","underlay_ip":"10.0.0.1","nic_mac":"06:00:00:00:00:01"}"#;
        let old = format!(r#"{{"csr_pem":"C","instance":{meta},"timestamp":1,"nonce":"n"}}"#);
        let p: EnrollPayload = serde_json::from_str(&old).unwrap();
        assert_eq!(p.role, Role::Instance);
        assert!(!serde_json::to_string(&p).unwrap().contains("role"));
        let edge = EnrollPayload {
            role: Role::Edge,
            ..p
        };
        let text = serde_json::to_string(&edge).unwrap();
        assert!(text.ends_with(r#","role":"edge"}"#), "{text}");
        let back: EnrollPayload = serde_json::from_str(&text).unwrap();
        assert_eq!(back.role, Role::Edge);
        let bad = old.replace(r#""nonce":"n""#, r#""nonce":"n","role":"router""#);
        assert!(serde_json::from_str::<EnrollPayload>(&bad).is_err());
        for r in [Role::Instance, Role::Edge] {
            assert_eq!(Role::from_name(r.as_str()), Some(r));
        }
    }

    #[test]
    fn type_names_are_listed() {
        for m in [
            AgentMsg::Ack { version: 1 },
            AgentMsg::Heartbeat { seq: 1 },
            AgentMsg::Status(StatusReport::default()),
        ] {
            assert!(AgentMsg::TYPES.contains(&m.type_name()));
        }
        let r = GatewayMsg::Reject { reason: "x".into() };
        assert!(GatewayMsg::TYPES.contains(&r.type_name()));
    }
}
