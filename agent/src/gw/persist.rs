//! What the agent keeps on disk across restarts: the last desired state it
//! applied (so a restart forwards at once, before or without the gateway
//! answering; written after every successful apply) and the firewall's
//! connection table (written on a planned stop, read and removed on the
//! next start: "state follows the VM"). Both written atomically (temp file,
//! fsync, rename).

use std::path::{Path, PathBuf};

use control::InstanceConfig;
use firewall::conntrack::SavedFlow;
use serde::{Deserialize, Serialize};

const FILE: &str = "desired.json";
const FLOWS_FILE: &str = "conntrack.json";
const NAT_FILE: &str = "nat-sessions.json";

/// What was applied: the gateway's version, this instance's tunnel-endpoint
/// id, and the config (`None` = micro-segmentation mode).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub version: u64,
    pub tep_id: u32,
    pub config: Option<InstanceConfig>,
}

#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a valid saved config ({reason}); ignoring it")]
    Corrupt { path: PathBuf, reason: String },
}

fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE)
}

/// The saved state, if any. A corrupt or invalid file is an error the
/// caller logs and treats as absent (the gateway will resend).
pub fn load(state_dir: &Path) -> Result<Option<Applied>, PersistError> {
    let p = path(state_dir);
    let text = match std::fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(PersistError::Io { path: p, source }),
    };
    let applied: Applied = serde_json::from_str(&text).map_err(|e| PersistError::Corrupt {
        path: p.clone(),
        reason: e.to_string(),
    })?;
    if let Some(cfg) = &applied.config {
        control::validate(cfg).map_err(|e| PersistError::Corrupt {
            path: p.clone(),
            reason: e.to_string(),
        })?;
    }
    Ok(Some(applied))
}

/// Saves `applied` atomically.
pub fn save(state_dir: &Path, applied: &Applied) -> Result<(), PersistError> {
    write_atomic(state_dir, FILE, applied)
}

/// Saves the connection table (mode 0600: it names every peer).
pub fn save_flows(state_dir: &Path, flows: &[SavedFlow]) -> Result<(), PersistError> {
    write_atomic(state_dir, FLOWS_FILE, &flows)
}

/// Saves the edge's NAT sessions (mode 0600: they name every peer).
pub fn save_nat(state_dir: &Path, saved: &SavedNat) -> Result<(), PersistError> {
    write_atomic(state_dir, NAT_FILE, saved)
}

/// Takes the saved NAT sessions, as [`take_flows`] takes the connections.
pub fn take_nat(state_dir: &Path) -> Result<SavedNat, PersistError> {
    take(state_dir, NAT_FILE)
}

/// The edge's NAT sessions across a planned restart: the uplink's NAT and
/// the downlink's (`underlay_snat`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedNat {
    #[serde(default)]
    pub uplink: Vec<nat::SavedSession>,
    #[serde(default)]
    pub downlink: Vec<nat::SavedSession>,
}

impl SavedNat {
    pub fn is_empty(&self) -> bool {
        self.uplink.is_empty() && self.downlink.is_empty()
    }

    pub fn len(&self) -> usize {
        self.uplink.len() + self.downlink.len()
    }
}

/// Takes the saved connection table: reads it and removes the file, so a
/// table is restored at most once (a later crash must not resurrect it).
/// A corrupt file is an error the caller logs (and it is removed too).
pub fn take_flows(state_dir: &Path) -> Result<Vec<SavedFlow>, PersistError> {
    take(state_dir, FLOWS_FILE)
}

fn take<T: serde::de::DeserializeOwned + Default>(
    state_dir: &Path,
    name: &str,
) -> Result<T, PersistError> {
    let p = state_dir.join(name);
    let text = match std::fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(T::default()),
        Err(source) => return Err(PersistError::Io { path: p, source }),
    };
    let _ = std::fs::remove_file(&p);
    serde_json::from_str(&text).map_err(|e| PersistError::Corrupt {
        path: p,
        reason: e.to_string(),
    })
}

fn write_atomic<T: Serialize + ?Sized>(
    state_dir: &Path,
    name: &str,
    value: &T,
) -> Result<(), PersistError> {
    let p = state_dir.join(name);
    let io = |source| PersistError::Io {
        path: p.clone(),
        source,
    };
    std::fs::create_dir_all(state_dir).map_err(io)?;
    let bytes = serde_json::to_vec(value).map_err(|e| io(std::io::Error::other(e)))?;
    crate::fsutil::write_private_atomic(&p, &bytes).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let dir = std::env::temp_dir().join(format!("nsx-persist-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(load(&dir).unwrap(), None);
        let a = Applied {
            version: 7,
            tep_id: 3,
            config: None,
        };
        save(&dir, &a).unwrap();
        assert_eq!(load(&dir).unwrap(), Some(a));
        std::fs::write(dir.join(FILE), b"{garbage").unwrap();
        assert!(matches!(load(&dir), Err(PersistError::Corrupt { .. })));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
