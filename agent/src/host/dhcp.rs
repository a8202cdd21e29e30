//! The NIC's DHCP client follows its address: while the agent holds the
//! NIC, the client that managed it runs for the bridge instead, and
//! restore gives it back to the NIC.
//!
//! Clients are found under `/proc` in the agent's network namespace:
//! `dhclient` (isc-dhcp-client) by its command line, whose interface
//! arguments are the ones naming an existing link; `dhcpcd` by its command
//! line too, or, since dhcpcd 9 rewrites it (privilege separation), by its
//! title (`dhcpcd: eth0 [ip4]`), whose own options are then lost: it is
//! started again as `dhcpcd [-4|-6] IF` (its config file still applies).
//! A client that manages exactly the NIC is moved: recorded in the host
//! state ([`DhcpRec`], before anything changes), stopped (SIGTERM, bounded
//! wait, SIGKILL; neither dhclient nor a `persistent` dhcpcd deconfigures
//! on SIGTERM, and the record holds the NIC's configuration anyway), and
//! started for the bridge with the same program and options, the NIC's name
//! replaced by the bridge's (pid and lease files stay the same; the bridge
//! carries the NIC's MAC, so the server sees the same client). A client
//! that manages other interfaces too, or all of them (dhclient without an
//! interface), is left alone and logged; dhcpcd's manager mode is told
//! through its control socket instead (`host::dhcpcd_mgr`).
//! systemd-networkd (and netplan, which drives it) is told through its
//! own files instead (`host::networkd`).
//!
//! Restore stops whatever DHCP client runs for the bridge (it goes away)
//! and starts the recorded command lines for the NIC again, unless a client
//! for the NIC already runs. Started clients get their own process group
//! and null stdio; a reaper thread collects the process we spawned (the
//! clients daemonize, so it exits once they have a lease or time out).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::procs;
use super::state::ProcRec;

/// How long a stopped client gets to exit on SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(3);
/// How many times [`stop_for`] looks again for clients of the interface.
const SWEEP_ROUNDS: usize = 4;

/// The clients we know how to move.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Client {
    Dhclient,
    Dhcpcd,
}

impl Client {
    fn from_comm(comm: &str) -> Option<Client> {
        match comm {
            "dhclient" => Some(Client::Dhclient),
            "dhcpcd" => Some(Client::Dhcpcd),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Client::Dhclient => "dhclient",
            Client::Dhcpcd => "dhcpcd",
        }
    }
}

/// A DHCP client moved from the NIC to the bridge: how to start it for
/// either.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DhcpRec {
    pub client: Client,
    /// The executable (`/proc/PID/exe` of the client found).
    pub program: PathBuf,
    /// Its arguments for the NIC (as found).
    pub nic_args: Vec<String>,
    /// Its arguments for the bridge.
    pub bridge_args: Vec<String>,
}

/// A running DHCP client in our network namespace.
#[derive(Debug, Clone)]
struct Running {
    client: Client,
    proc: ProcRec,
    program: PathBuf,
    /// Arguments after argv[0] (reconstructed from the title for dhcpcd).
    args: Vec<String>,
    /// The existing links among its arguments.
    ifaces: Vec<String>,
    /// dhclient without interfaces, dhcpcd's manager: every interface.
    all: bool,
}

fn read(path: impl AsRef<Path>) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// Parent pid (field 4 of `/proc/PID/stat`).
fn ppid(pid: u32) -> Option<u32> {
    let text = read(format!("/proc/{pid}/stat"))?;
    let rest = text.get(text.rfind(')')? + 1..)?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

fn argv(pid: u32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let v: Vec<String> = raw
        .split(|b| *b == 0)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    // A trailing NUL leaves one empty element; a title may have several.
    let end = v.iter().rposition(|s| !s.is_empty()).map_or(0, |i| i + 1);
    Some(v.into_iter().take(end).collect())
}

/// The DHCP clients running in the calling thread's network namespace
/// (dhcpcd's helper processes left out). `links`: the names of the links
/// in that namespace.
fn running(links: &[String]) -> Vec<Running> {
    let mut out = Vec::new();
    for pid in procs::pids() {
        let Some(client) = procs::comm(pid).as_deref().and_then(Client::from_comm) else {
            continue;
        };
        // dhcpcd's privilege-separation helpers are its children.
        if ppid(pid)
            .and_then(procs::comm)
            .is_some_and(|c| Client::from_comm(&c) == Some(client))
        {
            continue;
        }
        if !procs::same_netns(pid) {
            continue;
        }
        let (Some(argv), Ok(program)) = (argv(pid), std::fs::read_link(format!("/proc/{pid}/exe")))
        else {
            continue;
        };
        let Some(proc) = procs::record(pid, client.name()) else {
            continue;
        };
        if let Some(r) = parse(client, &argv, links) {
            out.push(Running {
                client,
                proc,
                program,
                args: r.0,
                ifaces: r.1,
                all: r.2,
            });
        }
    }
    out
}

/// (arguments after argv[0], interfaces, manages all interfaces) of a
/// client's command line or dhcpcd title.
fn parse(
    client: Client,
    argv: &[String],
    links: &[String],
) -> Option<(Vec<String>, Vec<String>, bool)> {
    let is_link = |s: &str| links.iter().any(|l| l == s);
    let first = argv.first()?;
    if client == Client::Dhcpcd && first.starts_with("dhcpcd:") {
        // "dhcpcd: eth0 [ip4] [ip6]", "dhcpcd: [manager] [ip4]": the whole
        // title may also be one argv element.
        let words: Vec<&str> = argv
            .iter()
            .flat_map(|a| a.split_whitespace())
            .skip(1)
            .collect();
        let ifaces: Vec<String> = words
            .iter()
            .filter(|w| is_link(w))
            .map(|w| (*w).to_string())
            .collect();
        let (v4, v6) = (words.contains(&"[ip4]"), words.contains(&"[ip6]"));
        let mut args = Vec::new();
        match (v4, v6) {
            (true, false) => args.push("-4".to_string()),
            (false, true) => args.push("-6".to_string()),
            _ => {}
        }
        args.extend(ifaces.iter().cloned());
        let all = words.contains(&"[manager]") || ifaces.is_empty();
        return Some((args, ifaces, all));
    }
    let args: Vec<String> = argv.get(1..).unwrap_or_default().to_vec();
    let ifaces: Vec<String> = args.iter().filter(|a| is_link(a)).cloned().collect();
    // Release / exit requests are short-lived commands, not the client.
    if args
        .iter()
        .any(|a| matches!(a.as_str(), "-r" | "-x" | "-k" | "--release" | "--exit"))
    {
        return None;
    }
    let all = ifaces.is_empty();
    Some((args, ifaces, all))
}

/// Arguments with `from` (a standalone argument) replaced by `to`.
fn retarget(args: &[String], from: &str, to: &str) -> Vec<String> {
    args.iter()
        .map(|a| if a == from { to.to_string() } else { a.clone() })
        .collect()
}

/// The clients that manage exactly `nic`, as records to move (and the
/// processes to stop). Clients managing more than the NIC are logged and
/// left alone.
pub fn find(nic: &str, bridge: &str, links: &[String]) -> Vec<DhcpRec> {
    // A client of a bridge that is gone (a previous run's) is still one of
    // the bridge's, not one of every interface.
    let links = with(links, bridge);
    let mut out = Vec::new();
    for r in running(&links) {
        if r.all || !r.ifaces.iter().any(|i| i == nic) {
            // dhcpcd's manager is told through its control socket instead
            // (`host::dhcpcd_mgr`).
            if r.all && r.client != Client::Dhcpcd {
                tracing::warn!(
                    client = r.client.name(),
                    pid = r.proc.pid,
                    nic,
                    "a DHCP client manages every interface; not moving it (it may need to be told about {bridge})"
                );
            }
            continue;
        }
        if r.ifaces.len() > 1 {
            tracing::warn!(
                client = r.client.name(), pid = r.proc.pid, nic, ifaces = ?r.ifaces,
                "a DHCP client manages the NIC and other interfaces; not moving it"
            );
            continue;
        }
        let rec = DhcpRec {
            client: r.client,
            program: r.program.clone(),
            bridge_args: retarget(&r.args, nic, bridge),
            nic_args: r.args.clone(),
        };
        tracing::info!(client = r.client.name(), pid = r.proc.pid, nic, args = ?rec.nic_args, "DHCP client found for the NIC");
        out.push(rec);
    }
    out
}

/// A dhcpcd in manager mode (every interface) running in our network
/// namespace: its pid and the address-family flag its title shows (`-4`
/// for `[ip4]` alone, `-6` for `[ip6]` alone).
pub fn dhcpcd_manager(links: &[String]) -> Option<(u32, Option<String>)> {
    running(links)
        .into_iter()
        .find(|r| r.client == Client::Dhcpcd && r.all)
        .map(|r| {
            let family = r
                .args
                .iter()
                .find(|a| matches!(a.as_str(), "-4" | "-6"))
                .cloned();
            (r.proc.pid, family)
        })
}

/// `links` plus `name`.
fn with(links: &[String], name: &str) -> Vec<String> {
    let mut v = links.to_vec();
    if !v.iter().any(|l| l == name) {
        v.push(name.to_string());
    }
    v
}

/// Stops every DHCP client that manages exactly `ifname` in our namespace
/// (SIGTERM, bounded wait, SIGKILL), and looks again afterwards: the
/// clients daemonize once they have a lease, so one started a moment ago
/// may fork its daemon just before it goes (bounded: [`SWEEP_ROUNDS`]).
pub async fn stop_for(ifname: &str, links: &[String]) {
    let links = with(links, ifname);
    for _ in 0..SWEEP_ROUNDS {
        let procs_: Vec<ProcRec> = running(&links)
            .into_iter()
            .filter(|r| !r.all && r.ifaces.len() == 1 && r.ifaces.iter().any(|i| i == ifname))
            .map(|r| {
                tracing::info!(
                    client = r.client.name(),
                    pid = r.proc.pid,
                    ifname,
                    "stopping the DHCP client"
                );
                r.proc
            })
            .collect();
        if procs_.is_empty() {
            return;
        }
        for p in &procs_ {
            if !procs::stop(p, STOP_GRACE).await {
                tracing::warn!(pid = p.pid, ifname, "DHCP client survived SIGKILL");
            }
        }
    }
    tracing::warn!(
        ifname,
        "DHCP clients for it kept appearing; gave up stopping them"
    );
}

/// Which end a record is started for.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    Nic,
    Bridge,
}

/// Starts each recorded client for `target` (`ifname`), unless one of its
/// kind already manages that interface. Never fails the caller: a client
/// that cannot start is logged.
pub fn start(recs: &[DhcpRec], target: Target, ifname: &str, links: &[String]) {
    if recs.is_empty() {
        return;
    }
    let now = running(&with(links, ifname));
    for rec in recs {
        if now
            .iter()
            .any(|r| r.client == rec.client && r.ifaces.iter().any(|i| i == ifname))
        {
            tracing::info!(
                client = rec.client.name(),
                ifname,
                "a DHCP client already runs for it"
            );
            continue;
        }
        let args = match target {
            Target::Nic => &rec.nic_args,
            Target::Bridge => &rec.bridge_args,
        };
        let mut cmd = Command::new(&rec.program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        match cmd.spawn() {
            Ok(mut child) => {
                tracing::info!(
                    client = rec.client.name(),
                    pid = child.id(),
                    ifname,
                    ?args,
                    "DHCP client started"
                );
                // Reaps it once it has daemonized (or ends).
                let _ = std::thread::Builder::new()
                    .name("dhcp-reaper".into())
                    .spawn(move || child.wait());
            }
            Err(error) => {
                tracing::warn!(client = rec.client.name(), program = %rec.program.display(), ifname, %error, "cannot start the DHCP client");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| (*x).to_string()).collect()
    }

    #[test]
    fn dhclient_interfaces_are_the_link_arguments() {
        let links = v(&["lo", "eth0", "eth1"]);
        let argv = v(&[
            "/sbin/dhclient",
            "-4",
            "-v",
            "-i",
            "-pf",
            "/run/dhclient.eth0.pid",
            "-lf",
            "/var/lib/dhcp/dhclient.eth0.leases",
            "-I",
            "-df",
            "/var/lib/dhcp/dhclient6.eth0.leases",
            "eth0",
        ]);
        let (args, ifaces, all) = parse(Client::Dhclient, &argv, &links).expect("parsed");
        assert_eq!(ifaces, v(&["eth0"]));
        assert!(!all);
        let moved = retarget(&args, "eth0", "nsx-vtep0.0");
        assert_eq!(moved.last().map(String::as_str), Some("nsx-vtep0.0"));
        // Paths naming the NIC stay (same pid and lease files).
        assert!(moved.contains(&"/run/dhclient.eth0.pid".to_string()));
        let (_, ifaces, all) =
            parse(Client::Dhclient, &v(&["dhclient", "-v"]), &links).expect("parsed");
        assert!(ifaces.is_empty() && all);
        let (_, ifaces, _) =
            parse(Client::Dhclient, &v(&["dhclient", "eth0", "eth1"]), &links).expect("parsed");
        assert_eq!(ifaces.len(), 2);
        assert!(parse(Client::Dhclient, &v(&["dhclient", "-r", "eth0"]), &links).is_none());
    }

    #[test]
    fn dhcpcd_titles_give_back_the_family() {
        let links = v(&["lo", "eth0"]);
        let (args, ifaces, all) =
            parse(Client::Dhcpcd, &v(&["dhcpcd: eth0 [ip4]"]), &links).expect("parsed");
        assert_eq!(
            (args, ifaces, all),
            (v(&["-4", "eth0"]), v(&["eth0"]), false)
        );
        let (args, _, _) = parse(
            Client::Dhcpcd,
            &v(&["dhcpcd:", "eth0", "[ip4]", "[ip6]"]),
            &links,
        )
        .expect("parsed");
        assert_eq!(args, v(&["eth0"]));
        let (_, _, all) = parse(
            Client::Dhcpcd,
            &v(&["dhcpcd: [manager] [ip4] [ip6]"]),
            &links,
        )
        .expect("parsed");
        assert!(all);
        // Without privilege separation the command line is kept.
        let (args, ifaces, _) = parse(
            Client::Dhcpcd,
            &v(&["/usr/sbin/dhcpcd", "-4", "-w", "eth0"]),
            &links,
        )
        .expect("parsed");
        assert_eq!((args, ifaces), (v(&["-4", "-w", "eth0"]), v(&["eth0"])));
    }

    #[test]
    fn records_serialize_with_lowercase_client_names() {
        let rec = DhcpRec {
            client: Client::Dhcpcd,
            program: "/usr/sbin/dhcpcd".into(),
            nic_args: v(&["-4", "eth0"]),
            bridge_args: v(&["-4", "nsx-vtep0.0"]),
        };
        let json = serde_json::to_string(&rec).expect("json");
        assert!(json.contains("\"client\":\"dhcpcd\""), "{json}");
        assert_eq!(serde_json::from_str::<DhcpRec>(&json).expect("parse"), rec);
    }
}
