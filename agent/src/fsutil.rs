//! Private, atomic file writes for the agent's state directory: the
//! enrolled key and certificate, the last applied config, the saved
//! connection table and the host state all go through
//! [`write_private_atomic`], so a crash leaves either the old file or the new
//! one, never a torn one, and nothing is ever readable by others.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` as mode 0600: into `<path>.tmp` first, fsynced,
/// renamed over `path`, then the directory fsynced so the rename survives a
/// power loss. The parent directory must exist. A failed write leaves at most
/// the temporary file behind (overwritten by the next attempt).
pub fn write_private_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = tmp_path(path);
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => sync_dir(dir),
        _ => Ok(()),
    }
}

/// Fsyncs directory `dir`, so a rename or removal in it is durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// `<path>.tmp` (the name plus `.tmp`, so `agent.crt` and `agent.key` get
/// distinct temporary files).
fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn writes_private_and_replaces_whole() {
        let dir = std::env::temp_dir().join(format!("nsx-fsutil-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("agent.key");
        write_private_atomic(&p, b"one").unwrap();
        write_private_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(
            !dir.join("agent.key.tmp").exists(),
            "no temporary file left"
        );
        assert!(write_private_atomic(&dir.join("missing/x"), b"x").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
