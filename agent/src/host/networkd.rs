//! systemd-networkd (the back end of netplan, and of cloud-init on Ubuntu's
//! and Debian's cloud images) follows the NIC's configuration to the bridge
//! while the agent holds the NIC, and gives it back on restore.
//!
//! networkd is told the way an operator would tell it: files in its
//! runtime directory, then `networkctl reload`.
//! - `00-nsx-agent-NIC.network` leaves the NIC (now a port of the bridge)
//!   unmanaged, so networkd's DHCP client no longer renews onto it.
//! - `00-nsx-agent-BRIDGE.network` is the NIC's own `.network` file (with
//!   its drop-ins) matched to the bridge instead, plus
//!   `KeepConfiguration=yes`, so networkd keeps the addresses and routes
//!   the agent moved (without it they are foreign to networkd, which
//!   flushes them and leases the address anew), and the NIC's DHCPv4 IAID
//!   when its client identifier is DUID-based (the IAID is derived from the
//!   interface, so the bridge would otherwise be a new client to the
//!   server). With the address already there, networkd asks for it again
//!   (INIT-REBOOT) and renews it on the bridge.
//!
//! Both names sort before netplan's and cloud-init's files: networkd takes
//! the first file, in lexical order, whose `[Match]` fits. The reload comes
//! once the bridge holds the NIC's addresses: the NIC turning unmanaged
//! makes networkd flush what it configured there, which is then nothing.
//!
//! Restore (after the NIC has its addresses back) removes both files and
//! gives the NIC's own file a drop-in, `KeepConfiguration=dhcp`, before the
//! reload, so networkd keeps the address the agent put back and renews it
//! instead of flushing it first. The drop-in lives in `/run` (gone at the
//! next boot; it is what netplan's `critical: true` sets); the next take
//! removes it.
//!
//! Only a networkd running in the agent's network namespace is told: its
//! state files do not say which namespace they describe.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::procs;

/// networkd's runtime configuration directory (netplan writes there too).
const RUNTIME_DIR: &str = "/run/systemd/network";
/// networkd's per-link state files, by ifindex.
const LINKS_DIR: &str = "/run/systemd/netif/links";
/// Our files' name prefix: sorts before `10-netplan-*`, `10-cloud-init-*`.
const PREFIX: &str = "00-nsx-agent-";
/// The drop-in restore gives the NIC's own file.
const RESTORE_DROPIN: &str = "90-nsx-agent-restore.conf";
/// `/proc/PID/comm` of systemd-networkd (15 characters at most).
const NETWORKD_COMM: &str = "systemd-network";
/// How long `networkctl reload` may take.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(10);

/// What the agent told networkd, recorded in the host state before the
/// files are written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkdRec {
    /// The `.network` file networkd had chosen for the NIC.
    pub nic_network: PathBuf,
    /// The files written for the NIC and the bridge (removed on restore).
    pub files: Vec<PathBuf>,
}

/// A hand-over to do: the record and the files' contents.
#[derive(Debug, Clone)]
pub struct Plan {
    pub rec: NetworkdRec,
    texts: Vec<String>,
}

/// The hand-over for `nic` (`ifindex`) to `bridge`, if a networkd in our
/// network namespace manages the NIC.
pub fn find(nic: &str, ifindex: u32, bridge: &str) -> Option<Plan> {
    if !procs::runs_in_our_netns(NETWORKD_COMM) {
        return None;
    }
    let link = state_vars(&read(format!("{LINKS_DIR}/{ifindex}"))?);
    let network = PathBuf::from(link.get("NETWORK_FILE").filter(|f| !f.is_empty())?);
    let Some(main) = read(&network) else {
        tracing::warn!(nic, file = %network.display(), "systemd-networkd manages the NIC, but its .network file cannot be read; not handing it to the bridge");
        return None;
    };
    let dropins: Vec<String> = link
        .get("NETWORK_FILE_DROPINS")
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter(|p| !p.ends_with(RESTORE_DROPIN))
        .filter_map(read)
        .collect();
    let iaid = link
        .get("DHCP_LEASE")
        .and_then(read)
        .and_then(|lease| state_vars(&lease).get("CLIENTID").and_then(|c| iaid_of(c)));
    let dir = Path::new(RUNTIME_DIR);
    let plan = Plan {
        rec: NetworkdRec {
            nic_network: network.clone(),
            files: vec![
                dir.join(format!("{PREFIX}{nic}.network")),
                dir.join(format!("{PREFIX}{bridge}.network")),
            ],
        },
        texts: vec![
            nic_network(nic, bridge),
            bridge_network(bridge, &network, &main, &dropins, iaid),
        ],
    };
    tracing::info!(nic, file = %network.display(), ?iaid, "systemd-networkd manages the NIC; it will manage the bridge instead");
    Some(plan)
}

/// Writes the plan's files and reloads networkd. Never fails the caller:
/// if networkd cannot be told, the files are taken back and it is logged.
pub async fn hand_over(plan: &Plan) {
    remove_restore_dropin(&plan.rec.nic_network);
    for (path, text) in plan.rec.files.iter().zip(&plan.texts) {
        if let Err(error) = write_atomic(path, text) {
            tracing::warn!(file = %path.display(), %error, "cannot write a systemd-networkd file; networkd keeps managing the NIC");
            remove_files(&plan.rec.files);
            return;
        }
    }
    match reload().await {
        Ok(()) => {
            tracing::info!(files = ?plan.rec.files, "systemd-networkd manages the bridge now")
        }
        Err(error) => {
            tracing::warn!(%error, "networkctl reload failed; networkd keeps managing the NIC");
            remove_files(&plan.rec.files);
        }
    }
}

/// Gives the NIC back to networkd's own file (see the module comment).
/// Nothing happens unless one of our files was there.
pub async fn give_back(rec: &NetworkdRec) {
    if !remove_files(&rec.files) {
        return;
    }
    if let Some(name) = rec.nic_network.file_name() {
        let dir = Path::new(RUNTIME_DIR).join(format!("{}.d", name.to_string_lossy()));
        let dropin = dir.join(RESTORE_DROPIN);
        let text = "# Written by nsx-agent on restore: keep the DHCP address it gave back\n\
                    # to the NIC and renew it, instead of flushing it first.\n\
                    [Network]\nKeepConfiguration=dhcp\n";
        if let Err(error) = std::fs::create_dir_all(&dir).and_then(|()| write_atomic(&dropin, text))
        {
            tracing::warn!(file = %dropin.display(), %error, "cannot write the restore drop-in; networkd may lease the NIC's address anew");
        }
    }
    match reload().await {
        Ok(()) => {
            tracing::info!(file = %rec.nic_network.display(), "systemd-networkd manages the NIC again")
        }
        Err(error) => {
            tracing::warn!(%error, "networkctl reload failed; run it to give the NIC back to systemd-networkd")
        }
    }
}

/// The NIC's file while it is a port of the bridge.
fn nic_network(nic: &str, bridge: &str) -> String {
    format!(
        "# Written by nsx-agent: {nic} is a port of {bridge}, which has its addresses.\n\
         [Match]\nName={nic}\n\n[Link]\nUnmanaged=yes\n"
    )
}

/// The bridge's file: the NIC's file and drop-ins without their `[Match]`
/// sections, matched to the bridge, keeping what the agent moved.
fn bridge_network(
    bridge: &str,
    source: &Path,
    main: &str,
    dropins: &[String],
    iaid: Option<u32>,
) -> String {
    let mut out = format!(
        "# Written by nsx-agent: {} for {bridge}, which holds the NIC.\n[Match]\nName={bridge}\n\n",
        source.display()
    );
    for text in std::iter::once(main).chain(dropins.iter().map(String::as_str)) {
        out.push_str(&without_match(text));
        out.push('\n');
    }
    out.push_str("[Network]\nKeepConfiguration=yes\n");
    if let Some(iaid) = iaid {
        out.push_str(&format!("\n[DHCPv4]\nIAID={iaid}\n"));
    }
    out
}

/// `text` without its `[Match]` sections.
fn without_match(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_match = false;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('[') && t.ends_with(']') {
            in_match = t.eq_ignore_ascii_case("[Match]");
        }
        if !in_match {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The IAID in a DUID-based DHCPv4 client identifier (RFC 4361: type 255,
/// 4 bytes of IAID, the DUID), as networkd writes it in a lease: hex.
fn iaid_of(clientid: &str) -> Option<u32> {
    let hex = clientid.strip_prefix("ff")?;
    u32::from_str_radix(hex.get(..8)?, 16).ok()
}

/// `KEY=VALUE` lines of a networkd state file (values unquoted).
fn state_vars(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
        .collect()
}

fn read(path: impl AsRef<Path>) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// Removes `files`; true if any was there.
fn remove_files(files: &[PathBuf]) -> bool {
    let mut any = false;
    for f in files {
        match std::fs::remove_file(f) {
            Ok(()) => any = true,
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(error) => {
                any = true;
                tracing::warn!(file = %f.display(), %error, "cannot remove a systemd-networkd file of ours");
            }
        }
    }
    any
}

fn remove_restore_dropin(nic_network: &Path) {
    if let Some(name) = nic_network.file_name() {
        let dropin = Path::new(RUNTIME_DIR)
            .join(format!("{}.d", name.to_string_lossy()))
            .join(RESTORE_DROPIN);
        remove_files(&[dropin]);
    }
}

fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("nsx-tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// `networkctl reload`, bounded by [`RELOAD_TIMEOUT`].
async fn reload() -> Result<(), String> {
    let mut child = Command::new("networkctl")
        .arg("reload")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run networkctl: {e}"))?;
    let deadline = Instant::now() + RELOAD_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => return Err(format!("networkctl reload: {status}")),
            Ok(None) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "networkctl reload took more than {RELOAD_TIMEOUT:?}"
                ));
            }
            Err(e) => return Err(format!("networkctl reload: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NETPLAN: &str = "[Match]\nPermanentMACAddress=02:00:00:00:00:01\nName=eth0\n\n\
                           [Network]\nDHCP=ipv4\nLinkLocalAddressing=ipv6\n\n\
                           [DHCP]\nRouteMetric=100\nUseMTU=true\n";

    #[test]
    fn the_bridge_gets_the_nics_settings_but_not_its_match() {
        let text = bridge_network(
            "nsx-vtep0.0",
            Path::new("/run/systemd/network/10-netplan-eth0.network"),
            NETPLAN,
            &["[Match]\nName=eth0\n[DHCPv4]\nUseDomains=true\n".into()],
            Some(0x35fd_0150),
        );
        let matches: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("Name=") || l.contains("MACAddress"))
            .collect();
        assert_eq!(matches, ["Name=nsx-vtep0.0"]);
        for want in [
            "DHCP=ipv4",
            "RouteMetric=100",
            "UseDomains=true",
            "KeepConfiguration=yes",
            "IAID=905773392",
        ] {
            assert!(text.lines().any(|l| l == want), "{want} in\n{text}");
        }
        // Ours come last, so they win over the NIC's own settings.
        let keep = text.find("KeepConfiguration=yes").expect("keep");
        assert!(keep > text.find("UseDomains=true").expect("drop-in"));
    }

    #[test]
    fn the_nic_is_left_unmanaged() {
        let text = nic_network("eth0", "nsx-vtep0.0");
        assert!(text.contains("[Match]\nName=eth0\n"));
        assert!(text.contains("[Link]\nUnmanaged=yes\n"));
    }

    #[test]
    fn only_duid_client_ids_carry_an_iaid() {
        assert_eq!(
            iaid_of("ff35fd015000020000ab110033bdebf95e192c"),
            Some(0x35fd_0150)
        );
        // Type 1: the MAC, which the bridge shares with the NIC.
        assert_eq!(iaid_of("01020000000001"), None);
        assert_eq!(iaid_of("ff12"), None);
        assert_eq!(iaid_of("ffzzzzzzzz00"), None);
        assert_eq!(iaid_of(""), None);
    }

    #[test]
    fn state_files_are_read_as_networkd_writes_them() {
        let vars = state_vars(
            "# This is private data. Do not parse.\nADMIN_STATE=configured\n\
             NETWORK_FILE=/run/systemd/network/10-netplan-eth0.network\n\
             NETWORK_FILE_DROPINS=\"/etc/systemd/network/10-netplan-eth0.network.d/a.conf\"\n\
             DHCP_LEASE=/run/systemd/netif/leases/2\n",
        );
        assert_eq!(
            vars.get("NETWORK_FILE").map(String::as_str),
            Some("/run/systemd/network/10-netplan-eth0.network")
        );
        assert_eq!(
            vars.get("NETWORK_FILE_DROPINS").map(String::as_str),
            Some("/etc/systemd/network/10-netplan-eth0.network.d/a.conf")
        );
        assert!(!vars.contains_key("# This is private data. Do not parse."));
    }

    #[test]
    fn match_sections_go_wherever_they_are() {
        let text = "[Network]\nDHCP=yes\n[match]\nName=eth0\n[Route]\nGateway=10.0.0.1\n";
        assert_eq!(
            without_match(text),
            "[Network]\nDHCP=yes\n[Route]\nGateway=10.0.0.1\n"
        );
    }
}
