//! The host-state file: the NIC's original configuration plus the names of
//! everything `setup` builds, saved in `state_dir/host-state.json` before the
//! host is changed, so that `teardown` can restore the host from the file
//! alone (e.g. in a fresh process after the agent was SIGKILLed).
//!
//! Writes are crash-safe: temp file, fsync, rename, fsync of the directory.
//!
//! `state_dir/host.lock` (an exclusive `flock`, held by the process for as
//! long as it runs) keeps a second agent from "recovering" — i.e. tearing
//! down — the plumbing of one that is still alive.
//!
//! The NIC's DHCP clients the agent moved to the bridge are recorded too
//! (`dhcp`, optional and additive like `ssh`), so a restore from the file
//! alone starts them for the NIC again; so is what systemd-networkd was
//! told (`networkd`), and the dhcpcd manager told about the bridge
//! (`dhcpcd_manager`), so such a restore gives either the NIC back.
//!
//! In overlay mode the file also records the underlay ssh pieces (`ssh`:
//! the sshd listeners the agent started and its `inet` nf_tables table),
//! rewritten as they change, so `nsx-agent cleanup` after a crash stops
//! them too. The key is optional and additive (no format version bump): an
//! older agent ignores it, and the table it would leave behind names the
//! bridge by ifindex, so it matches nothing once the bridge is gone.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use serde::{Deserialize, Serialize};

use super::dhcp::DhcpRec;
use super::dhcpcd_mgr::DhcpcdMgrRec;
use super::networkd::NetworkdRec;
use super::{HostError, NicInfo};

/// File name of the saved state inside `state_dir`.
pub const STATE_FILE: &str = "host-state.json";

/// Largest state file [`load`] reads and [`save`] writes (16 MiB): far
/// above any real NIC's record (an address or route takes a few hundred
/// bytes), small enough that a file this agent did not write is refused
/// rather than read whole into memory.
const MAX_STATE_BYTES: u64 = 16 << 20;

/// Lock file name inside `state_dir`.
const LOCK_FILE: &str = "host.lock";

/// The lock this process holds, with the directory it was taken in.
static LOCK: Mutex<Option<(PathBuf, Flock<File>)>> = Mutex::new(None);

/// Format version of files without filtered micro-segmentation plumbing.
const VERSION: u32 = 1;
/// Format version of files with it (`fw`). An agent that only knows
/// version 1 refuses such a file instead of restoring the NIC while leaving
/// the drop-everything ingress chain on it.
const VERSION_FW: u32 = 2;

/// What `setup` changed, and how to undo it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostState {
    pub version: u32,
    /// The NIC exactly as found before setup.
    pub nic: NicInfo,
    /// Bridge that took the NIC's addresses and routes.
    pub vtep_if: String,
    /// Overlay netns (None in micro-segmentation mode: no netns, no veth).
    pub netns: Option<String>,
    /// Overlay interface inside `netns`.
    pub overlay_if: String,
    /// Agent-side end of the overlay veth (main netns).
    pub overlay_peer: String,
    /// Seconds since the Unix epoch when the NIC was recorded; used to age
    /// finite address lifetimes on restore.
    pub recorded_unix: u64,
    /// Filtered micro-segmentation plumbing (None otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fw: Option<FwState>,
    /// Overlay mode's underlay ssh (None when nothing of it is running).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<SshState>,
    /// The NIC's DHCP clients, moved to the bridge (see `host::dhcp`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dhcp: Vec<DhcpRec>,
    /// What systemd-networkd was told (see `host::networkd`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub networkd: Option<NetworkdRec>,
    /// The dhcpcd manager told to run DHCP on the bridge instead of the
    /// NIC (see `host::dhcpcd_mgr`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhcpcd_manager: Option<DhcpcdMgrRec>,
}

/// What overlay mode's underlay ssh adds to the host (see `crate::host::sshd`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SshState {
    /// The `inet` nf_tables table refusing TCP 22 on the bridge, recorded
    /// before it is written (ours by name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nft_table: Option<String>,
    /// The sshd listeners the agent started and has not reaped.
    #[serde(default)]
    pub sshds: Vec<ProcRec>,
}

impl SshState {
    pub fn is_empty(&self) -> bool {
        self.nft_table.is_none() && self.sshds.is_empty()
    }
}

/// A process the agent started, identified beyond its pid (pids are
/// reused): its start time and a string its command line contains.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcRec {
    pub pid: u32,
    /// `/proc/PID/stat` field 22 (clock ticks after boot).
    pub start_time: u64,
    /// What `/proc/PID/cmdline` contains (e.g. `ListenAddress=IP:PORT`).
    pub marker: String,
}

/// What filtered micro-segmentation adds: the firewall veth (a bridge port
/// and the agent's end) and the nf_tables table that keeps the bridge and
/// the NIC apart. The NIC's bridge-port flags (learning, flooding, locked)
/// need no record: they vanish when the NIC leaves the bridge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FwState {
    /// Bridge-side end of the firewall veth.
    pub fw_if: String,
    /// The agent's end.
    pub fw_peer: String,
    /// The `bridge` family nf_tables table that drops traffic between the
    /// bridge and the NIC (ours by name).
    pub nft_table: String,
}

impl HostState {
    pub fn new(
        nic: NicInfo,
        vtep_if: &str,
        netns: Option<&str>,
        overlay_if: &str,
        overlay_peer: &str,
    ) -> Self {
        HostState {
            version: VERSION,
            nic,
            vtep_if: vtep_if.to_string(),
            netns: netns.map(str::to_string),
            overlay_if: overlay_if.to_string(),
            overlay_peer: overlay_peer.to_string(),
            recorded_unix: now_unix(),
            fw: None,
            ssh: None,
            dhcp: Vec::new(),
            networkd: None,
            dhcpcd_manager: None,
        }
    }

    /// Adds the filtered micro-segmentation record (and the file version
    /// that goes with it).
    pub fn with_fw(mut self, fw: Option<FwState>) -> Self {
        self.version = if fw.is_some() { VERSION_FW } else { VERSION };
        self.fw = fw;
        self
    }
}

/// Seconds since the Unix epoch (0 if the clock is before 1970).
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Path of the state file for `state_dir`.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(STATE_FILE)
}

fn io_err(step: &'static str, path: &Path, source: std::io::Error) -> HostError {
    HostError::Io {
        step,
        target: path.display().to_string(),
        source,
    }
}

/// Takes `state_dir/host.lock` for the rest of this process's life
/// (re-entrant within the process). Fails if another live process holds it.
pub fn lock(state_dir: &Path) -> Result<(), HostError> {
    let mut held = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    if held.as_ref().is_some_and(|(dir, _)| dir == state_dir) {
        return Ok(());
    }
    fs::create_dir_all(state_dir).map_err(|e| io_err("create state dir", state_dir, e))?;
    let p = state_dir.join(LOCK_FILE);
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&p)
        .map_err(|e| io_err("open host lock", &p, e))?;
    match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
        Ok(l) => {
            *held = Some((state_dir.to_path_buf(), l));
            Ok(())
        }
        Err((_, Errno::EWOULDBLOCK)) => Err(HostError::State {
            path: p,
            reason: "locked by another running agent; stop it first".into(),
        }),
        Err((_, e)) => Err(io_err("lock host state", &p, std::io::Error::from(e))),
    }
}

/// Reads the state file; `Ok(None)` if there is none. Anything else that
/// is not a state file this agent could have written (not a regular file,
/// larger than [`MAX_STATE_BYTES`], empty, truncated, not JSON, not a host
/// state, an unknown format version) is a [`HostError::State`] naming the
/// file and the problem.
pub fn load(state_dir: &Path) -> Result<Option<HostState>, HostError> {
    let p = path(state_dir);
    let bad = |reason: String| HostError::State {
        path: p.clone(),
        reason,
    };
    let md = match fs::metadata(&p) {
        Ok(md) => md,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("inspect host state", &p, e)),
    };
    if !md.is_file() {
        let kind = if md.is_dir() {
            "a directory"
        } else {
            "a special file"
        };
        return Err(bad(format!("not a regular file but {kind}")));
    }
    let too_big = || {
        bad(format!(
            "larger than {MAX_STATE_BYTES} bytes: not a state file this agent wrote"
        ))
    };
    if md.len() > MAX_STATE_BYTES {
        return Err(too_big());
    }
    let mut bytes = Vec::new();
    File::open(&p)
        .and_then(|f| f.take(MAX_STATE_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| io_err("read host state", &p, e))?;
    if u64::try_from(bytes.len()).map_or(true, |n| n > MAX_STATE_BYTES) {
        return Err(too_big());
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(bad(format!("empty ({} bytes)", bytes.len())));
    }
    let st: HostState = serde_json::from_slice(&bytes).map_err(|e| {
        if e.is_eof() {
            bad(format!(
                "truncated after {} bytes (the JSON ends early: {e})",
                bytes.len()
            ))
        } else {
            bad(format!("not valid JSON host state: {e}"))
        }
    })?;
    if st.version != VERSION && st.version != VERSION_FW {
        return Err(HostError::State {
            path: p,
            reason: format!(
                "format version {} is not supported (expected {VERSION} or {VERSION_FW})",
                st.version
            ),
        });
    }
    Ok(Some(st))
}

/// Writes the state file atomically (temp + fsync + rename + dir fsync).
pub fn save(state_dir: &Path, st: &HostState) -> Result<(), HostError> {
    fs::create_dir_all(state_dir).map_err(|e| io_err("create state dir", state_dir, e))?;
    let p = path(state_dir);
    let mut json = serde_json::to_vec_pretty(st).map_err(|e| HostError::State {
        path: p.clone(),
        reason: format!("cannot serialize: {e}"),
    })?;
    json.push(b'\n');
    if u64::try_from(json.len()).map_or(true, |n| n > MAX_STATE_BYTES) {
        return Err(HostError::State {
            path: p,
            reason: format!(
                "the state would take {} bytes, more than the {MAX_STATE_BYTES} a load reads back; not written",
                json.len()
            ),
        });
    }
    crate::fsutil::write_private_atomic(&p, &json).map_err(|e| io_err("write state file", &p, e))
}

/// Removes the state file (missing is fine).
pub fn remove(state_dir: &Path) -> Result<(), HostError> {
    let p = path(state_dir);
    match fs::remove_file(&p) {
        Ok(()) => {
            crate::fsutil::sync_dir(state_dir).map_err(|e| io_err("fsync state dir", state_dir, e))
        }
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("remove host state", &p, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::{AddrRec, RouteRec};
    use std::net::Ipv4Addr;

    fn sample() -> HostState {
        let nic = NicInfo {
            name: "eth0".into(),
            ifindex: 2,
            mac: [6, 0, 0, 0, 0, 1],
            mtu: 9001,
            was_up: true,
            addrs: vec![AddrRec {
                ip: Ipv4Addr::new(10, 0, 0, 5),
                prefix_len: 24,
                peer: None,
                broadcast: Some(Ipv4Addr::new(10, 0, 0, 255)),
                label: Some("eth0".into()),
                scope: 0,
                flags: 0,
                valid_lft: Some(3600),
                preferred_lft: Some(3600),
                proto: None,
                metric: None,
            }],
            routes: vec![RouteRec {
                dst: Ipv4Addr::UNSPECIFIED,
                prefix_len: 0,
                gateway: Some(Ipv4Addr::new(10, 0, 0, 1)),
                prefsrc: Some(Ipv4Addr::new(10, 0, 0, 5)),
                metric: Some(100),
                table: 254,
                scope: 0,
                protocol: 16,
                tos: 0,
                kind: 1,
                onlink: false,
                pref: None,
                expires: None,
                hoplimit: None,
                mtu: None,
            }],
            addrs6: Vec::new(),
            routes6: Vec::new(),
        };
        HostState::new(
            nic,
            "nsx-vtep0.0",
            Some("nsx-root"),
            "nsx-eth0",
            "nsx-eth0-peer",
        )
    }

    #[test]
    fn save_load_remove_roundtrip() {
        let dir = std::env::temp_dir().join(format!("host-state-test-{}", std::process::id()));
        let st = sample();
        save(&dir, &st).expect("save");
        assert_eq!(load(&dir).expect("load"), Some(st));
        assert!(!dir.join(format!("{STATE_FILE}.tmp")).exists());
        remove(&dir).expect("remove");
        assert_eq!(load(&dir).expect("load after remove"), None);
        remove(&dir).expect("second remove is fine");
        let _ = fs::remove_dir(&dir);
    }

    #[test]
    fn filtered_state_roundtrips_as_version_2() {
        let dir = std::env::temp_dir().join(format!("host-state-fw-{}", std::process::id()));
        let mut st = sample().with_fw(Some(FwState {
            fw_if: "nsx-fw0".into(),
            fw_peer: "nsx-fw0-peer".into(),
            nft_table: "nsx-agent-eth0".into(),
        }));
        st.netns = None;
        assert_eq!(st.version, VERSION_FW);
        save(&dir, &st).expect("save");
        assert_eq!(load(&dir).expect("load"), Some(st));
        // A version-1 file (no `fw` key) still loads.
        let v1 = sample();
        save(&dir, &v1).expect("save v1");
        let text = fs::read_to_string(path(&dir)).expect("read");
        assert!(!text.contains("\"fw\""), "{text}");
        assert_eq!(load(&dir).expect("load v1"), Some(v1));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn ssh_record_is_optional_and_roundtrips() {
        let dir = std::env::temp_dir().join(format!("host-state-ssh-{}", std::process::id()));
        let mut st = sample();
        st.ssh = Some(SshState {
            nft_table: Some("nsx-agent-ssh-eth0".into()),
            sshds: vec![ProcRec {
                pid: 42,
                start_time: 1234,
                marker: "ListenAddress=10.0.0.5:8888".into(),
            }],
        });
        save(&dir, &st).expect("save");
        assert_eq!(load(&dir).expect("load"), Some(st.clone()));
        assert_eq!(st.version, VERSION);
        // Without it, the key is absent (older agents read the file as before).
        st.ssh = None;
        save(&dir, &st).expect("save");
        let text = fs::read_to_string(path(&dir)).expect("read");
        assert!(!text.contains("\"ssh\""), "{text}");
        assert!(SshState::default().is_empty());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn ipv6_records_are_optional_and_roundtrip() {
        use crate::host::{Addr6Rec, Route6Rec};
        let dir = std::env::temp_dir().join(format!("host-state-v6-{}", std::process::id()));
        let mut st = sample();
        // Without IPv6 the keys are absent (files read as before).
        save(&dir, &st).expect("save");
        let text = fs::read_to_string(path(&dir)).expect("read");
        assert!(
            !text.contains("addrs6") && !text.contains("routes6"),
            "{text}"
        );
        st.nic.addrs6 = vec![Addr6Rec {
            ip: "2001:db8::5".parse().expect("ip"),
            prefix_len: 64,
            peer: None,
            broadcast: None,
            label: None,
            scope: 0,
            flags: 0x100,
            valid_lft: Some(1800),
            preferred_lft: Some(900),
            proto: Some(3),
            metric: Some(1024),
        }];
        st.nic.routes6 = vec![Route6Rec {
            dst: "::".parse().expect("ip"),
            prefix_len: 0,
            gateway: Some("fe80::1".parse().expect("ip")),
            prefsrc: None,
            metric: Some(1024),
            table: 254,
            scope: 0,
            protocol: 9,
            tos: 0,
            kind: 1,
            onlink: false,
            pref: Some(0),
            expires: Some(1700),
            hoplimit: Some(64),
            mtu: None,
        }];
        save(&dir, &st).expect("save");
        assert_eq!(load(&dir).expect("load"), Some(st.clone()));
        assert_eq!(st.version, VERSION);
        let _ = fs::remove_dir_all(&dir);
    }

    /// Files written by earlier agents (before IPv6, and with the IPv6
    /// records of the first agent that had them) load into today's records.
    #[test]
    fn files_of_earlier_agents_still_load() {
        let dir = std::env::temp_dir().join(format!("host-state-old-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("mkdir");
        let v4_nic = r#""name": "eth0", "ifindex": 2, "mac": [6, 0, 0, 0, 0, 1], "mtu": 9001, "was_up": true,
            "addrs": [{"ip": "10.0.0.5", "prefix_len": 24, "peer": null, "broadcast": "10.0.0.255",
                "label": "eth0", "scope": 0, "flags": 0, "valid_lft": 3600, "preferred_lft": 3600}],
            "routes": [{"dst": "0.0.0.0", "prefix_len": 0, "gateway": "10.0.0.1", "prefsrc": "10.0.0.5",
                "metric": 100, "table": 254, "scope": 0, "protocol": 16, "tos": 0, "kind": 1, "onlink": false}]"#;
        let rest = r#""vtep_if": "nsx-vtep0.0", "netns": "nsx-root", "overlay_if": "nsx-eth0",
            "overlay_peer": "nsx-eth0-peer", "recorded_unix": 1700000000"#;
        let mut want = sample();
        want.recorded_unix = 1_700_000_000;
        fs::write(
            path(&dir),
            format!(r#"{{"version": 1, "nic": {{{v4_nic}}}, {rest}}}"#),
        )
        .expect("write");
        assert_eq!(
            load(&dir).expect("load a file without IPv6"),
            Some(want.clone())
        );
        let v6 = r#""addrs6": [{"ip": "2001:db8::5", "prefix_len": 64, "peer": null, "scope": 0,
                "flags": 256, "valid_lft": 1800, "preferred_lft": 900, "proto": 3}],
            "routes6": [{"dst": "::", "prefix_len": 0, "gateway": "fe80::1", "prefsrc": null,
                "metric": 1024, "table": 254, "protocol": 9, "kind": 1, "onlink": false, "pref": 0,
                "expires": 1700, "hoplimit": 64, "mtu": null}]"#;
        fs::write(
            path(&dir),
            format!(r#"{{"version": 1, "nic": {{{v4_nic}, {v6}}}, {rest}}}"#),
        )
        .expect("write");
        let st = load(&dir).expect("load a file with IPv6").expect("some");
        assert_eq!(st.nic.addrs, want.nic.addrs);
        assert_eq!(st.nic.addrs6.len(), 1);
        assert_eq!(st.nic.addrs6[0].proto, Some(3));
        assert_eq!(st.nic.addrs6[0].broadcast, None);
        let r = &st.nic.routes6[0];
        assert_eq!((r.scope, r.tos, r.protocol), (0, 0, 9));
        assert_eq!(
            (r.expires, r.hoplimit, r.pref),
            (Some(1700), Some(64), Some(0))
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn lock_is_reentrant_in_process() {
        let dir = std::env::temp_dir().join(format!("host-state-lock-{}", std::process::id()));
        lock(&dir).expect("first lock");
        lock(&dir).expect("same process may lock again");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn garbage_is_a_state_error() {
        let dir = std::env::temp_dir().join(format!("host-state-bad-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("mkdir");
        fs::write(path(&dir), "{not json").expect("write");
        let err = load(&dir).expect_err("must fail");
        assert!(matches!(err, HostError::State { .. }), "{err}");
        let _ = fs::remove_file(path(&dir));
        let _ = fs::remove_dir(&dir);
    }

    /// `load` of a file written as `contents` fails with a state error that
    /// names the file and says `why`.
    fn refused(dir: &Path, contents: &[u8], why: &str) {
        fs::write(path(dir), contents).expect("write");
        let err = load(dir).expect_err("a bad state file must not load");
        let text = err.to_string();
        assert!(matches!(err, HostError::State { .. }), "{text}");
        assert!(
            text.contains(&path(dir).display().to_string()),
            "names the file: {text}"
        );
        assert!(text.contains(why), "says {why:?}: {text}");
    }

    /// A state file that is truncated, empty, garbage, or not JSON of a
    /// host state is an error naming the file and the problem: never a
    /// panic, never taken for "no state file".
    #[test]
    fn bad_state_files_are_errors_naming_the_file() {
        let dir = std::env::temp_dir().join(format!("host-state-bad2-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("mkdir");
        save(&dir, &sample()).expect("save");
        let good = fs::read(path(&dir)).expect("read");
        for cut in [1, good.len() / 3, good.len() / 2, good.len() - 3] {
            refused(&dir, &good[..cut], "truncated");
        }
        refused(&dir, b"", "empty");
        refused(&dir, b" \n\t\n", "empty");
        refused(&dir, b"\xff\xfe\x00garbage", "not valid JSON");
        refused(&dir, b"null", "not valid JSON");
        refused(&dir, b"{}", "missing field");
        refused(&dir, b"[1, 2, 3]", "not valid JSON");
        // Trailing bytes after a complete state are garbage too.
        let mut trailing = good.clone();
        trailing.extend_from_slice(b"}}");
        refused(&dir, &trailing, "not valid JSON");
        let _ = fs::remove_dir_all(&dir);
    }

    /// A file larger than any state this agent writes is refused without
    /// being read whole, and `save` never writes one that `load` would
    /// refuse.
    #[test]
    fn oversized_state_files_are_refused() {
        let dir = std::env::temp_dir().join(format!("host-state-big-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("mkdir");
        let f = File::create(path(&dir)).expect("create");
        f.set_len(MAX_STATE_BYTES + 1).expect("sparse file");
        drop(f);
        let err = load(&dir).expect_err("an oversized file must not load");
        let text = err.to_string();
        assert!(matches!(err, HostError::State { .. }), "{text}");
        assert!(text.contains(&path(&dir).display().to_string()), "{text}");
        assert!(text.contains("larger than"), "{text}");
        fs::remove_file(path(&dir)).expect("rm");

        let mut st = sample();
        st.nic.name = "x".repeat(usize::try_from(MAX_STATE_BYTES).expect("usize"));
        let err = save(&dir, &st).expect_err("an oversized state must not be saved");
        assert!(matches!(err, HostError::State { .. }), "{err}");
        assert!(!path(&dir).exists(), "nothing written");
        let _ = fs::remove_dir_all(&dir);
    }

    /// Something other than a file at the state file's path is an error
    /// naming it, not "no state file".
    #[test]
    fn a_directory_in_place_of_the_state_file_is_an_error() {
        let dir = std::env::temp_dir().join(format!("host-state-dir-{}", std::process::id()));
        fs::create_dir_all(path(&dir)).expect("mkdir");
        let err = load(&dir).expect_err("a directory is not a state file");
        let text = err.to_string();
        assert!(text.contains(&path(&dir).display().to_string()), "{text}");
        assert!(text.contains("not a regular file"), "{text}");
        let _ = fs::remove_dir_all(&dir);
    }
}
