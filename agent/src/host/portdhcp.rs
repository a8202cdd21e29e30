//! Overlay mode with `port_dhcp = true`: the port's address comes from the
//! distribution's DHCP client, which the agent runs inside the overlay
//! namespace as the seed's instances do (`dhclient nsx-eth0` in
//! `nsx-root`), answered by the agent's own DHCP server (the datapath's
//! `dhcp` layer). The agent then configures neither the address nor the
//! default route of the port itself.
//!
//! The client is ISC `dhclient` or busybox `udhcpc`, whichever is
//! installed (in that order), started detached in its own mount namespace
//! where `state_dir/overlay-resolv.conf` is bind-mounted over
//! `/etc/resolv.conf`, so the DNS settings it receives never touch the
//! host's; its pid and lease files live in `state_dir` too, and its
//! errors (a failed bind, say) in `state_dir/port-dhcp.log`. It is found
//! again by its network namespace (no record needed): `stop` signals every
//! DHCP client in the overlay namespace (SIGTERM, bounded wait, SIGKILL)
//! before the namespace goes, and `ensure` starts one unless one runs.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{netns, procs};

/// The clients tried, in order: (name, where it is installed).
const CLIENTS: &[(&str, &[&str])] = &[
    ("dhclient", &["/usr/sbin/dhclient", "/sbin/dhclient"]),
    (
        "udhcpc",
        &["/usr/sbin/udhcpc", "/sbin/udhcpc", "/usr/bin/udhcpc"],
    ),
];
/// How long a stopped client gets before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// The resolver file the client writes (bind-mounted over /etc/resolv.conf
/// for it).
pub fn resolv_conf(state_dir: &Path) -> PathBuf {
    state_dir.join("overlay-resolv.conf")
}

/// The installed client: (name, executable).
fn client() -> Option<(&'static str, &'static str)> {
    CLIENTS.iter().find_map(|(name, paths)| {
        paths
            .iter()
            .find(|p| Path::new(p).is_file())
            .map(|p| (*name, *p))
    })
}

/// The DHCP clients running in network namespace `netns`.
fn running(netns_name: &str) -> Vec<u32> {
    let Ok(want) = std::fs::metadata(netns::path(netns_name)) else {
        return Vec::new();
    };
    use std::os::unix::fs::MetadataExt;
    let ino = want.ino();
    procs::pids()
        .filter(|pid| {
            procs::comm(*pid).is_some_and(|c| CLIENTS.iter().any(|(n, _)| *n == c))
                && std::fs::metadata(format!("/proc/{pid}/ns/net")).is_ok_and(|m| m.ino() == ino)
        })
        .collect()
}

/// Starts the client for `ifname` in `netns` unless one runs there. Never
/// fails the caller: no client installed, or one that cannot start, is
/// logged (the port then has no address until one runs).
pub fn ensure(netns_name: &str, ifname: &str, state_dir: &Path) {
    if !running(netns_name).is_empty() {
        tracing::info!(
            netns = netns_name,
            "a DHCP client already runs for the port"
        );
        return;
    }
    let Some((name, exe)) = client() else {
        tracing::error!(
            "port_dhcp: neither dhclient nor udhcpc is installed; the port has no address"
        );
        return;
    };
    let resolv = resolv_conf(state_dir);
    if !resolv.exists()
        && let Err(error) = std::fs::write(&resolv, "# written by the overlay port's DHCP client\n")
    {
        tracing::warn!(file = %resolv.display(), %error, "cannot create the port's resolv.conf");
        return;
    }
    let args: Vec<String> = match name {
        "dhclient" => vec![
            "-4".into(),
            "-pf".into(),
            state_dir.join("port-dhclient.pid").display().to_string(),
            "-lf".into(),
            state_dir.join("port-dhclient.leases").display().to_string(),
            ifname.into(),
        ],
        _ => vec![
            "-i".into(),
            ifname.into(),
            "-b".into(),
            "-R".into(),
            "-p".into(),
            state_dir.join("port-udhcpc.pid").display().to_string(),
        ],
    };
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg(r#"mount --bind "$1" /etc/resolv.conf && shift && exec nsenter --net="$@""#)
        .arg("sh")
        .arg(&resolv)
        .arg(netns::path(netns_name))
        .arg(exe)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file(state_dir));
    {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
    }
    match cmd.spawn() {
        Ok(mut child) => {
            tracing::info!(
                client = name,
                netns = netns_name,
                ifname,
                "DHCP client started for the port"
            );
            // Reaps it once it has daemonized (or ended).
            let _ = std::thread::Builder::new()
                .name("port-dhcp-reaper".into())
                .spawn(move || child.wait());
        }
        Err(error) => tracing::warn!(client = name, %error, "cannot start the port's DHCP client"),
    }
}

/// Where the client's (and its wrapper's) errors go: `state_dir/port-dhcp.log`,
/// truncated at each start (nothing, if it cannot be created).
fn log_file(state_dir: &Path) -> Stdio {
    let path = state_dir.join("port-dhcp.log");
    match std::fs::File::create(&path) {
        Ok(f) => Stdio::from(f),
        Err(error) => {
            tracing::warn!(file = %path.display(), %error, "cannot create the port DHCP client's log");
            Stdio::null()
        }
    }
}

/// Stops every DHCP client in `netns` (before the namespace goes, or to
/// start afresh after the port's address changed).
pub async fn stop(netns_name: &str) {
    for pid in running(netns_name) {
        let Some(rec) = procs::record(pid, "") else {
            continue;
        };
        tracing::info!(pid, netns = netns_name, "stopping the port's DHCP client");
        if !procs::stop(&rec, STOP_GRACE).await {
            tracing::warn!(pid, "the port's DHCP client survived SIGKILL");
        }
    }
}
