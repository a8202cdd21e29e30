//! The last desired state the agent applied, kept on disk so a restart
//! forwards at once, before (or without) the gateway answering. Written
//! atomically (temp file, fsync, rename) after every successful apply.

use std::io::Write;
use std::path::{Path, PathBuf};

use control::InstanceConfig;
use serde::{Deserialize, Serialize};

const FILE: &str = "desired.json";

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
    let p = path(state_dir);
    let io = |source| PersistError::Io {
        path: p.clone(),
        source,
    };
    std::fs::create_dir_all(state_dir).map_err(io)?;
    let tmp = state_dir.join(format!("{FILE}.tmp"));
    let bytes = serde_json::to_vec_pretty(applied).map_err(|e| io(std::io::Error::other(e)))?;
    {
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(&bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, &p).map_err(io)?;
    Ok(())
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
