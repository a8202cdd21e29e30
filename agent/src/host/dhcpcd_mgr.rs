//! dhcpcd in manager mode (`dhcpcd -b`, Debian's and Ubuntu's
//! `dhcpcd.service`, title `dhcpcd: [manager] [ip4] [ip6]`) follows the
//! NIC's address: the agent tells it through its control socket, the way
//! `dhcpcd -x IF` / `dhcpcd -n IF` would, and never stops or restarts it
//! (it manages other interfaces too).
//!
//! What dhcpcd 9.4.1 (Debian 12) was measured to do, and so the steps:
//! * the agent deleting the leased address from the NIC makes the manager
//!   rebind on the NIC at once and put the address (and its routes) back
//!   there, on what is by then a bridge port; so before the move the NIC
//!   is stopped with `-p -x NIC` (`-p`: persistent, the address and routes
//!   stay for the agent to move);
//! * a bridge is ignored by default ("ignoring due to interface type and
//!   no config"); after the move `-n BRIDGE` starts DHCP on it (the bridge
//!   has the NIC's MAC, so the server sees the same client);
//! * the agent's own veths in the namespace (the overlay port's peer, the
//!   firewall pair) are not ignored: the manager runs DHCP on them, then
//!   gives them an IPv4LL address and a 169.254.0.0/16 route; so after the
//!   build each gets `-x IF` (no `-p`: what it configured goes);
//! * on restore, `-p -x BRIDGE` before the bridge goes, `-n NIC` once the
//!   NIC has its addresses back (the manager also takes the NIC up again by
//!   itself when it leaves the bridge: it sees it depart and come back);
//! * the client `dhcpcd -x IF` of 9.4.1 signals the pid file of IF (a
//!   manager has none: "not running"), and with several interfaces it
//!   signals the manager's own pid (SIGTERM: the manager exits), so the
//!   agent writes to the socket itself, as the client does (arguments
//!   NUL-separated, one write);
//! * with privilege separation, 9.4.1 forgets a control client only once
//!   it has written it a reply, so a command without one (`-x`, `-n`)
//!   leaves every later command refused ("cannot handle another client");
//!   each of ours is therefore followed, in the same write, by
//!   `--version` (commands are `\n`-terminated), whose reply also tells
//!   that the manager took them;
//! * 9.4.1 picks the interfaces of `-n` from an `optind` that re-reading
//!   its own command line has overwritten (fixed upstream later): with a
//!   manager command line longer than ours, `-n IF` rebinds every
//!   interface, inactive ones too; the interface name is therefore
//!   repeated ([`PAD`] times), so every index from there on names it.
//!
//! Recorded in the host state (`dhcpcd_manager`, optional) before anything
//! changes, so `nsx-agent cleanup` after a SIGKILL gives the NIC back from
//! the file alone.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// Where dhcpcd puts its manager's control socket (9/10; 7/8).
const SOCKETS: [&str; 4] = [
    "/run/dhcpcd/sock",
    "/var/run/dhcpcd/sock",
    "/run/dhcpcd.sock",
    "/var/run/dhcpcd.sock",
];
/// How long a command (connect, write, the reply) may take.
const TIMEOUT: Duration = Duration::from_secs(3);
/// How many times `-n` names its interface (see the module comment).
const PAD: usize = 32;

/// A dhcpcd manager told to run DHCP on the bridge instead of the NIC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DhcpcdMgrRec {
    /// Its control socket.
    pub socket: PathBuf,
    /// `-4` / `-6` when it runs one address family only (its title shows
    /// it): given with `-n`, which reads the interface's options anew.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
}

/// A command failed; logged by the callers, never fatal.
#[derive(Debug, thiserror::Error)]
enum CtlError {
    #[error("dhcpcd control socket {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("dhcpcd control socket {path}: no answer within {TIMEOUT:?}")]
    Timeout { path: PathBuf },
}

/// The dhcpcd manager of our network namespace, if one runs and its
/// control socket is found, and `nic_dhcp` says the NIC's configuration is
/// dhcpcd's (routes of protocol dhcp): a manager may leave the NIC alone
/// (`denyinterfaces`), and then the agent leaves the manager alone.
pub fn find(nic: &str, links: &[String], nic_dhcp: bool) -> Option<DhcpcdMgrRec> {
    let (pid, family) = super::dhcp::dhcpcd_manager(links)?;
    if !nic_dhcp {
        tracing::info!(
            pid,
            nic,
            "dhcpcd runs in manager mode but the NIC has no DHCP routes; leaving it alone"
        );
        return None;
    }
    let Some(socket) = SOCKETS.iter().map(Path::new).find(|p| is_socket(p)) else {
        tracing::warn!(pid, nic, sockets = ?SOCKETS, "dhcpcd runs in manager mode but its control socket is not found; not telling it about the bridge");
        return None;
    };
    tracing::info!(pid, nic, socket = %socket.display(), ?family, "dhcpcd manager found for the NIC");
    Some(DhcpcdMgrRec {
        socket: socket.to_path_buf(),
        family,
    })
}

fn is_socket(p: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(p).is_ok_and(|m| m.file_type().is_socket())
}

/// `dhcpcd -p -x IF`: the manager stops DHCP on `ifname` and leaves its
/// address and routes where they are.
pub async fn release(rec: &DhcpcdMgrRec, ifname: &str) {
    let args = ["dhcpcd", "-p", "-x", ifname];
    tell(rec, &args, ifname).await;
}

/// `dhcpcd -x IF`: the manager stops DHCP on `ifname` and removes what it
/// configured there (the agent's own veths: a manager runs DHCP, then
/// IPv4LL, on every new one).
pub async fn leave(rec: &DhcpcdMgrRec, ifname: &str) {
    tell(rec, &["dhcpcd", "-x", ifname], ifname).await;
}

/// `dhcpcd [-4|-6] -n IF`: the manager (re)starts DHCP on `ifname`.
pub async fn take(rec: &DhcpcdMgrRec, ifname: &str) {
    tell(rec, &rebind_args(rec, ifname), ifname).await;
}

fn rebind_args<'a>(rec: &'a DhcpcdMgrRec, ifname: &'a str) -> Vec<&'a str> {
    let mut args = vec!["dhcpcd"];
    args.extend(rec.family.as_deref());
    args.push("-n");
    args.extend(std::iter::repeat_n(ifname, PAD));
    args
}

async fn tell(rec: &DhcpcdMgrRec, args: &[&str], ifname: &str) {
    match command(&rec.socket, args).await {
        Ok(()) => {
            tracing::info!(ifname, command = ?args.iter().take(4).collect::<Vec<_>>(), "dhcpcd manager told")
        }
        Err(error) => tracing::warn!(ifname, %error, "cannot tell the dhcpcd manager"),
    }
}

/// The bytes of one write: `args` NUL-separated, the last one
/// `\n`-terminated (the end of a command), then `--version`, which the
/// manager answers.
fn message(args: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, a) in args.iter().enumerate() {
        out.extend_from_slice(a.as_bytes());
        if i + 1 == args.len() {
            out.push(b'\n');
        }
        out.push(0);
    }
    out.extend_from_slice(b"--version\0");
    out
}

/// Sends one command and waits (bounded) for the manager's answer.
async fn command(path: &Path, args: &[&str]) -> Result<(), CtlError> {
    let io = |source| CtlError::Io {
        path: path.to_path_buf(),
        source,
    };
    let run = async {
        let mut s = UnixStream::connect(path).await.map_err(io)?;
        s.write_all(&message(args)).await.map_err(io)?;
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).await.map_err(io)?;
        if n == 0 {
            return Err(io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed without an answer",
            )));
        }
        Ok(())
    };
    tokio::time::timeout(TIMEOUT, run)
        .await
        .map_err(|_| CtlError::Timeout {
            path: path.to_path_buf(),
        })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_is_one_line_then_version() {
        let m = message(&["dhcpcd", "-p", "-x", "eth0"]);
        assert_eq!(m, b"dhcpcd\0-p\0-x\0eth0\n\0--version\0".to_vec());
    }

    #[test]
    fn rebind_names_the_interface_from_every_index_on() {
        let rec = DhcpcdMgrRec {
            socket: "/run/dhcpcd/sock".into(),
            family: Some("-4".into()),
        };
        let args = rebind_args(&rec, "nsx-vtep0.0");
        assert_eq!(&args[..3], &["dhcpcd", "-4", "-n"]);
        assert_eq!(args.len(), 3 + PAD);
        assert!(args[3..].iter().all(|a| *a == "nsx-vtep0.0"));
        // Within the manager's read buffer (1024 bytes) for any name.
        let long = "a".repeat(15);
        assert!(message(&rebind_args(&rec, &long)).len() < 1024);
        let all = DhcpcdMgrRec {
            family: None,
            ..rec
        };
        assert_eq!(&rebind_args(&all, "eth0")[..3], &["dhcpcd", "-n", "eth0"]);
    }

    #[test]
    fn records_round_trip_and_family_is_optional() {
        let rec: DhcpcdMgrRec =
            serde_json::from_str(r#"{"socket":"/run/dhcpcd/sock"}"#).expect("parse");
        assert_eq!(rec.family, None);
        let json = serde_json::to_string(&rec).expect("json");
        assert!(!json.contains("family"), "{json}");
    }

    #[tokio::test]
    async fn a_manager_that_does_not_answer_times_out() {
        let dir = std::env::temp_dir().join(format!("nsx-dhcpcd-mgr-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("sock");
        let _ = std::fs::remove_file(&path);
        let listener = tokio::net::UnixListener::bind(&path).expect("bind");
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut buf = vec![0u8; 1024];
            let n = s.read(&mut buf).await.expect("read");
            buf.truncate(n);
            // No answer; the connection ends when the client gives up.
            let mut rest = [0u8; 16];
            while s.read(&mut rest).await.is_ok_and(|n| n > 0) {}
            buf
        });
        let err = command(&path, &["dhcpcd", "-n", "eth0"])
            .await
            .expect_err("no answer");
        assert!(matches!(err, CtlError::Timeout { .. }), "{err}");
        let got = server.await.expect("server");
        assert_eq!(got, b"dhcpcd\0-n\0eth0\n\0--version\0".to_vec());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
