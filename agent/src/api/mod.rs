//! The agent's local API for nsxcli and scripts: a unix socket (mode 0600)
//! speaking newline-delimited JSON. A request is
//! `{"api_version":1,"cmd":"status"}`; every reply carries `api_version` and
//! either the data or `{"error": "..."}`. `agent/API.md` is the contract:
//! every command, argument and reply field. Commands: `status`,
//! `counters`, `config`, `version`; the forwarding state (`mac-table`,
//! `arp-table`, `switches`, `routers`) and the host's `interfaces`; the
//! firewall's `getrules`, `getaddrsets`, `getflows` (each with a `text`
//! field in the seed's `vsipioctl` format) and `firewall-stats`; `trace`
//! (a frame through the live decisions, nothing sent or changed) and
//! `capture` (a bounded capture in the datapath thread). Unknown commands
//! and unknown arguments are errors, as is every bad argument, with a
//! message saying which and why. New commands and fields are added without
//! changing existing ones; a client asking for a newer version gets an
//! error.

pub mod metrics;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use datapath::tables::SwitchIdx;
use datapath::{DropReason, LayerId, Location, Tables, Verdict};
use serde::Serialize;
use serde_json::{Map, Value, json};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::config::{AgentConfig, HostSettings};
use crate::dp::ctl::{Ctl, Published, TraceInput, TraceReply, TraceRequest, dst_mac};
use crate::dp::dataloop::capture::{CapturePoint, CaptureReply, CaptureRequest};
use crate::dp::fwctl::{FwQuery, FwReply, FwRequest};
use crate::dp::io::Waker;
use crate::gw::gwclient::GatewayStatus;
use crate::host::sshd::SshStatus;

pub const API_VERSION: u32 = 1;
/// Longest request line accepted.
const MAX_REQUEST: usize = 64 * 1024;

/// State the API reports, shared with the control side.
#[derive(Debug)]
pub struct Shared {
    pub started: Instant,
    pub published: Arc<Mutex<Published>>,
    pub status: Mutex<Status>,
    /// The gateway connection, when the agent has one.
    pub gateway: Option<Arc<Mutex<Option<GatewayStatus>>>>,
    /// The datapath thread's control channel (firewall queries).
    pub datapath: Mutex<Option<(Sender<Ctl>, Arc<Waker>)>>,
    /// Overlay mode's underlay ssh (`status` reports it as `ssh`).
    pub ssh: Arc<Mutex<SshStatus>>,
}

/// How long a firewall query may wait for the datapath thread.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// Slow-changing facts about the agent.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub config_path: String,
    pub mode: &'static str,
    pub nic: String,
    pub underlay_ip: Ipv4Addr,
    pub underlay_mtu: u32,
    pub overlay: Option<OverlayStatus>,
    pub last_reload: Option<ReloadStatus>,
    #[serde(skip)]
    pub config: AgentConfig,
    /// The desired state the datapath runs.
    #[serde(skip)]
    pub desired: control::InstanceConfig,
    #[serde(skip)]
    pub tables: Arc<Tables>,
}

#[derive(Debug, Clone, Serialize)]
pub struct OverlayStatus {
    pub netns: String,
    pub interface: String,
    pub mtu: u32,
    pub ip: Ipv4Addr,
    pub mac: String,
    pub switch: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReloadStatus {
    pub ok: bool,
    pub at_unix: u64,
    pub message: String,
}

impl ReloadStatus {
    pub fn new(ok: bool, message: String) -> ReloadStatus {
        let at_unix = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        ReloadStatus {
            ok,
            at_unix,
            message,
        }
    }
}

/// Binds the socket (replacing a stale one) with mode 0600.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serves connections forever.
pub async fn serve(listener: UnixListener, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(handle(stream, Arc::clone(&shared)));
            }
            Err(e) => {
                tracing::warn!(error = %e, "api accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

async fn handle(stream: UnixStream, shared: Arc<Shared>) {
    let (r, mut w) = stream.into_split();
    let mut reader = BufReader::new(r);
    let mut line = String::new();
    loop {
        line.clear();
        // Bounded read: a line longer than MAX_REQUEST is refused, not buffered.
        match (&mut reader)
            .take(MAX_REQUEST as u64 + 1)
            .read_line(&mut line)
            .await
        {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let reply = if line.len() > MAX_REQUEST {
            error("request too long")
        } else {
            let cancel = Arc::new(AtomicBool::new(false));
            tokio::select! {
                v = answer_cancellable(line.trim_end(), &shared, &cancel) => v,
                () = hangup(&mut reader) => {
                    // The client went away (nsxcli interrupted): a capture
                    // it armed ends now instead of holding the datapath's one
                    // capture slot until its count or timeout.
                    cancel.store(true, Ordering::Relaxed);
                    return;
                }
            }
        };
        let mut bytes = reply.to_string().into_bytes();
        bytes.push(b'\n');
        if w.write_all(&bytes).await.is_err() || line.len() > MAX_REQUEST {
            return;
        }
    }
}

/// Resolves when the client closes its end (EOF or an error) while its
/// request runs; bytes it sent meanwhile (a pipelined request) stay buffered
/// for the next `read_line`.
async fn hangup<R: AsyncBufRead + Unpin>(r: &mut R) {
    match r.fill_buf().await {
        Ok([]) | Err(_) => {}
        Ok(_) => std::future::pending().await,
    }
}

fn error(msg: &str) -> Value {
    json!({ "api_version": API_VERSION, "error": msg })
}

/// Every command and the arguments it takes (besides `api_version` and
/// `cmd`), in the order `unknown command` lists them.
const COMMANDS: &[(&str, &[&str])] = &[
    ("status", &[]),
    ("counters", &[]),
    ("config", &[]),
    ("version", &[]),
    ("interfaces", &[]),
    ("switches", &[]),
    ("mac-table", &[]),
    ("arp-table", &["switch"]),
    ("routers", &[]),
    ("getrules", &[]),
    ("getaddrsets", &[]),
    ("getflows", &[]),
    ("firewall-stats", &[]),
    ("trace", &["from", "frame_hex", "src_tep", "vni"]),
    ("capture", &["point", "count", "timeout_ms", "snaplen"]),
];

/// Answers one request line; `cancel` ends a `capture` it started early
/// (set when the client goes away).
async fn answer_cancellable(line: &str, shared: &Shared, cancel: &Arc<AtomicBool>) -> Value {
    let mut req: Map<String, Value> = match serde_json::from_str(line) {
        Ok(Value::Object(m)) => m,
        Ok(_) => return error("bad request: expected a JSON object"),
        Err(e) => return error(&format!("bad request: {e}")),
    };
    let version = match req.remove("api_version") {
        None => return error("bad request: missing field `api_version`"),
        Some(v) => match v.as_u64() {
            Some(n) => n,
            None => return error("bad request: `api_version` must be a non-negative integer"),
        },
    };
    if version > u64::from(API_VERSION) {
        return error(&format!(
            "api_version {version} not supported (this agent speaks {API_VERSION})"
        ));
    }
    let cmd = match req.remove("cmd") {
        Some(Value::String(c)) => c,
        Some(_) => return error("bad request: `cmd` must be a string"),
        None => return error("bad request: missing field `cmd`"),
    };
    let Some((_, known)) = COMMANDS.iter().find(|(c, _)| *c == cmd) else {
        let names: Vec<&str> = COMMANDS.iter().map(|(c, _)| *c).collect();
        return error(&format!(
            "unknown command {cmd:?} (known: {})",
            names.join(", ")
        ));
    };
    if let Some(arg) = req.keys().find(|k| !known.contains(&k.as_str())) {
        let takes = if known.is_empty() {
            "it takes none".to_string()
        } else {
            format!("known: {}", known.join(", "))
        };
        return error(&format!("unknown argument {arg:?} for {cmd} ({takes})"));
    }
    let args = &req;
    let mut v = match cmd.as_str() {
        "status" => status(shared),
        "counters" => counters(shared),
        "config" => config(shared),
        "version" => json!({
            "agent": "nsx-agent",
            "version": env!("CARGO_PKG_VERSION"),
            "api_version": API_VERSION,
        }),
        "interfaces" => interfaces(shared, Path::new(SYS_CLASS_NET)),
        "switches" => switches(shared),
        "mac-table" => mac_table(shared),
        "arp-table" => arp_table(shared, args),
        "routers" => routers(shared),
        "trace" => trace(shared, args).await,
        "capture" => capture(shared, args, cancel).await,
        "getrules" => rules(shared, false),
        "getaddrsets" => rules(shared, true),
        "getflows" => match query(shared, FwQuery::Flows).await {
            Ok(FwReply::Flows(text)) => json!({ "text": text }),
            Ok(_) => error("no firewall is configured"),
            Err(e) => error(&e),
        },
        "firewall-stats" => match query(shared, FwQuery::Stats).await {
            Ok(FwReply::Stats(s)) => serde_json::to_value(&*s).unwrap_or_else(|_| json!({})),
            Ok(_) => error("no firewall is configured"),
            Err(e) => error(&e),
        },
        _ => error("command not implemented"),
    };
    if let Value::Object(m) = &mut v {
        m.insert("api_version".into(), json!(API_VERSION));
    }
    v
}

fn status(shared: &Shared) -> Value {
    let Ok(st) = shared.status.lock() else {
        return error("status unavailable");
    };
    let mut v = serde_json::to_value(&*st).unwrap_or_else(|_| json!({}));
    if let Value::Object(m) = &mut v {
        m.insert("agent".into(), json!("nsx-agent"));
        m.insert("version".into(), json!(env!("CARGO_PKG_VERSION")));
        m.insert("pid".into(), json!(std::process::id()));
        m.insert("uptime_s".into(), json!(shared.started.elapsed().as_secs()));
        m.insert("config_version".into(), json!(st.tables.version));
        m.insert("tep_id".into(), json!(st.tables.tep_id));
        let gw = shared
            .gateway
            .as_ref()
            .and_then(|g| g.lock().ok().and_then(|g| g.clone()));
        m.insert("gateway".into(), json!(gw));
        let ssh = shared.ssh.lock().ok().map(|s| s.clone());
        m.insert("ssh".into(), json!(ssh));
    }
    v
}

fn counters(shared: &Shared) -> Value {
    let Ok(s) = shared.published.lock().map(|s| s.clone()) else {
        return error("counters unavailable");
    };
    let c = &s.counters;
    let drops: serde_json::Map<String, Value> = DropReason::ALL
        .iter()
        .map(|r| (r.name().to_string(), json!(c.dropped(*r))))
        .collect();
    let layers: Vec<Value> = LayerId::ALL
        .iter()
        .map(|l| {
            let lc = c.layers[*l as usize];
            json!({"name": l.name(), "seen": lc.seen, "passed": lc.passed,
                   "handled": lc.handled, "dropped": lc.dropped})
        })
        .collect();
    let now = shared.started.elapsed().as_nanos() as u64;
    let tunnels: Vec<Value> = c
        .tunnels
        .iter()
        .map(|t| {
            json!({"tep_ip": t.tep_ip, "tep_id": t.tep_id,
                   "tx_packets": t.tx.packets, "tx_bytes": t.tx.bytes,
                   "rx_packets": t.rx.packets, "rx_bytes": t.rx.bytes,
                   "last_rx_ago_ms": (t.last_rx_ns != 0)
                       .then(|| now.saturating_sub(t.last_rx_ns) / 1_000_000)})
        })
        .collect();
    json!({
        "config_version": s.config_version,
        "drops": drops,
        "total_drops": c.total_drops(),
        "layers": layers,
        "tunnels": tunnels,
        "port": {"rx_packets": c.port_rx.packets, "rx_bytes": c.port_rx.bytes,
                 "tx_packets": c.port_tx.packets, "tx_bytes": c.port_tx.bytes},
        "underlay": {"rx_packets": c.underlay_rx.packets, "rx_bytes": c.underlay_rx.bytes,
                     "tx_packets": c.underlay_tx.packets, "tx_bytes": c.underlay_tx.bytes},
        "io": s.io,
    })
}

/// `getrules` / `getaddrsets` from the policy the datapath runs.
fn rules(shared: &Shared, addrsets: bool) -> Value {
    let Ok(st) = shared.status.lock() else {
        return error("tables unavailable");
    };
    match &st.tables.firewall {
        None => error("no firewall is configured"),
        Some(p) if addrsets => json!({ "text": firewall::show::getaddrsets(p.config()) }),
        Some(p) => json!({ "text": firewall::show::getrules(p) }),
    }
}

/// Asks the datapath thread and waits (bounded) for its answer.
pub async fn query(shared: &Shared, q: FwQuery) -> Result<FwReply, String> {
    ask(
        shared,
        |reply| Ctl::Fw(FwRequest { query: q, reply }),
        QUERY_TIMEOUT,
    )
    .await
}

/// Sends the control message `make` builds around a reply channel to the
/// datapath thread and waits up to `timeout` for the answer.
async fn ask<T: Send + 'static>(
    shared: &Shared,
    make: impl FnOnce(Sender<T>) -> Ctl,
    timeout: Duration,
) -> Result<T, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    {
        let guard = shared.datapath.lock().map_err(|_| "datapath unavailable")?;
        let Some((ctl, waker)) = guard.as_ref() else {
            return Err("the datapath is not running".into());
        };
        ctl.send(make(tx))
            .map_err(|_| "the datapath thread is gone")?;
        waker.wake();
    }
    tokio::task::spawn_blocking(move || rx.recv_timeout(timeout))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|_| "the datapath thread did not answer in time".to_string())
}

fn config(shared: &Shared) -> Value {
    let Ok(st) = shared.status.lock() else {
        return error("config unavailable");
    };
    json!({ "host": st.config.host, "gateway": st.config.gateway, "desired": st.desired })
}

fn mac_table(shared: &Shared) -> Value {
    let Ok(st) = shared.status.lock() else {
        return error("tables unavailable");
    };
    let t = &st.tables;
    let mut rows: Vec<Value> = t
        .mac_table()
        .map(|(s, mac, loc)| {
            let sw = &t.switches[usize::from(s)];
            let (location, tep) = match loc {
                Location::Local => ("local", None),
                Location::Remote(i) => ("remote", t.teps.get(usize::from(i)).map(|r| r.ip)),
            };
            json!({"switch": sw.name, "vni": sw.vni, "mac": mac.to_string(),
                   "location": location, "tep_ip": tep})
        })
        .collect();
    rows.sort_by_key(|v| (v["vni"].as_u64(), v["mac"].as_str().map(str::to_owned)));
    json!({ "entries": rows })
}

// --- forwarding state -------------------------------------------------------

/// The tables the datapath runs (a cheap clone of the snapshot's `Arc`).
fn tables(shared: &Shared) -> Result<Arc<Tables>, Value> {
    shared
        .status
        .lock()
        .map(|st| Arc::clone(&st.tables))
        .map_err(|_| error("tables unavailable"))
}

fn switches(shared: &Shared) -> Value {
    let t = match tables(shared) {
        Ok(t) => t,
        Err(e) => return e,
    };
    let rows: Vec<Value> = t
        .switches
        .iter()
        .enumerate()
        .map(|(i, sw)| {
            let router = sw
                .router
                .and_then(|r| t.routers.get(usize::from(r)))
                .map(|r| r.name.clone());
            let port = t
                .port
                .filter(|p| usize::from(p.switch) == i)
                .map(|p| json!({"ip": p.ip, "mac": p.mac.to_string()}));
            let endpoints: Vec<Ipv4Addr> = sw
                .flood
                .iter()
                .filter_map(|&tep| t.teps.get(usize::from(tep)).map(|r| r.ip))
                .collect();
            json!({"name": sw.name, "vni": sw.vni, "subnet": sw.subnet.to_string(),
                   "gateway_ip": sw.gateway_ip, "router": router, "local_port": port,
                   "endpoints": endpoints})
        })
        .collect();
    json!({ "switches": rows })
}

fn routers(shared: &Shared) -> Value {
    let t = match tables(shared) {
        Ok(t) => t,
        Err(e) => return e,
    };
    let name = |s: SwitchIdx| t.switches.get(usize::from(s)).map(|s| s.name.clone());
    let rows: Vec<Value> = t
        .routers
        .iter()
        .map(|r| {
            let routes: Vec<Value> = r
                .routes
                .iter()
                .map(|rt| {
                    let kind = if rt.next_hop.is_some() {
                        "static"
                    } else {
                        "connected"
                    };
                    json!({"prefix": rt.prefix.to_string(), "switch": name(rt.switch),
                           "next_hop": rt.next_hop, "kind": kind})
                })
                .collect();
            let switches: Vec<Option<String>> = r.switches.iter().map(|&s| name(s)).collect();
            json!({"name": r.name, "mac": r.mac.to_string(), "switches": switches,
                   "routes": routes})
        })
        .collect();
    json!({ "routers": rows })
}

/// A switch named by its name or VNI (a JSON number, or a string in
/// decimal or `0x` hex).
fn resolve_switch(t: &Tables, v: &Value) -> Result<SwitchIdx, String> {
    let by_vni = |vni: u32| t.switch_by_vni(vni);
    let found = match v {
        Value::String(s) => t
            .switches
            .iter()
            .position(|sw| sw.name == *s)
            .and_then(|i| SwitchIdx::try_from(i).ok())
            .or_else(|| {
                parse_number(s)
                    .and_then(|n| u32::try_from(n).ok())
                    .and_then(by_vni)
            }),
        Value::Number(n) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .and_then(by_vni),
        _ => return Err("switch must be a switch name or a VNI".into()),
    };
    found.ok_or_else(|| {
        let shown = match v {
            Value::String(s) => format!("{s:?}"),
            other => other.to_string(),
        };
        let known: Vec<&str> = t.switches.iter().map(|s| s.name.as_str()).collect();
        format!("unknown switch {shown} (known: {})", known.join(", "))
    })
}

/// A non-negative integer in decimal or `0x` hex.
fn parse_number(s: &str) -> Option<u64> {
    let s = s.trim();
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

fn arp_table(shared: &Shared, args: &Map<String, Value>) -> Value {
    let t = match tables(shared) {
        Ok(t) => t,
        Err(e) => return e,
    };
    let only = match args.get("switch") {
        None => None,
        Some(v) => match resolve_switch(&t, v) {
            Ok(s) => Some(s),
            Err(e) => return error(&e),
        },
    };
    let wanted = |s: SwitchIdx| only.is_none_or(|o| o == s);
    let mut rows: Vec<(u32, Ipv4Addr, Value)> = Vec::new();
    for (si, ip, n) in t.arp_table() {
        let Some(sw) = t.switches.get(usize::from(si)).filter(|_| wanted(si)) else {
            continue;
        };
        let (location, tep) = match n.at {
            Location::Local => ("local", None),
            Location::Remote(i) => ("remote", t.teps.get(usize::from(i)).map(|r| r.ip)),
        };
        rows.push((
            sw.vni,
            ip,
            json!({"switch": sw.name, "vni": sw.vni, "ip": ip, "mac": n.mac.to_string(),
                   "location": location, "tep_ip": tep}),
        ));
    }
    for (i, sw) in t.switches.iter().enumerate() {
        let Ok(si) = SwitchIdx::try_from(i) else {
            continue;
        };
        if let Some(r) = t.router_of(si).filter(|_| wanted(si)) {
            rows.push((
                sw.vni,
                sw.gateway_ip,
                json!({"switch": sw.name, "vni": sw.vni, "ip": sw.gateway_ip,
                       "mac": r.mac.to_string(), "location": "router", "tep_ip": null}),
            ));
        }
    }
    rows.sort_by_key(|(vni, ip, _)| (*vni, *ip));
    json!({ "entries": rows.into_iter().map(|(_, _, v)| v).collect::<Vec<_>>() })
}

// --- interfaces ---------------------------------------------------------------

/// Where the kernel lists the interfaces of the agent's namespace.
const SYS_CLASS_NET: &str = "/sys/class/net";

/// The agent's interfaces for its mode: (name, role, netns).
fn interface_roles(host: &HostSettings, mode: &str) -> Vec<(String, &'static str, Option<String>)> {
    let mut v = vec![
        (host.nic.clone(), "nic", None),
        (host.vtep_if.clone(), "vtep", None),
    ];
    if mode == "overlay" {
        v.push((host.overlay_if.clone(), "overlay", Some(host.netns.clone())));
        v.push((host.overlay_peer.clone(), "overlay-peer", None));
    } else {
        v.push((host.fw_if.clone(), "fw", None));
        v.push((host.fw_peer.clone(), "fw-peer", None));
    }
    v
}

/// One interface of the agent's namespace, from sysfs under `root`;
/// `None` when it does not exist.
fn sys_interface(root: &Path, name: &str) -> Option<Map<String, Value>> {
    // Names come from the config; never let one walk out of `root`.
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return None;
    }
    let dir = root.join(name);
    if !dir.is_dir() {
        return None;
    }
    let read = |f: &str| {
        std::fs::read_to_string(dir.join(f))
            .ok()
            .map(|s| s.trim().to_string())
    };
    let num = |f: &str| read(f).and_then(|s| s.parse::<u64>().ok());
    let up = match read("operstate").as_deref() {
        Some("up") => true,
        // Devices without carrier reporting (bridges, lo): the admin flag.
        Some("unknown") => read("flags")
            .and_then(|f| u64::from_str_radix(f.trim_start_matches("0x"), 16).ok())
            .is_some_and(|f| f & 1 != 0),
        _ => false,
    };
    let mut m = Map::new();
    m.insert("mac".into(), json!(read("address")));
    m.insert("mtu".into(), json!(num("mtu")));
    m.insert("state".into(), json!(if up { "up" } else { "down" }));
    for (key, file) in [
        ("rx_packets", "statistics/rx_packets"),
        ("rx_bytes", "statistics/rx_bytes"),
        ("tx_packets", "statistics/tx_packets"),
        ("tx_bytes", "statistics/tx_bytes"),
    ] {
        m.insert(key.into(), json!(num(file)));
    }
    Some(m)
}

/// IPv4 addresses per interface of the agent's namespace (`a.b.c.d/len`).
fn ipv4_addresses() -> HashMap<String, Vec<String>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return out;
    };
    for a in addrs {
        let (Some(ip), Some(mask)) = (
            a.address.as_ref().and_then(|s| s.as_sockaddr_in()),
            a.netmask.as_ref().and_then(|s| s.as_sockaddr_in()),
        ) else {
            continue;
        };
        let len = u32::from(mask.ip()).count_ones();
        out.entry(a.interface_name)
            .or_default()
            .push(format!("{}/{len}", ip.ip()));
    }
    out
}

fn interfaces(shared: &Shared, root: &Path) -> Value {
    let (host, mode, overlay, prefix_len) = {
        let Ok(st) = shared.status.lock() else {
            return error("status unavailable");
        };
        let prefix_len = st
            .tables
            .port
            .and_then(|p| st.tables.switches.get(usize::from(p.switch)))
            .map(|s| s.subnet.prefix_len());
        (
            st.config.host.clone(),
            st.mode,
            st.overlay.clone(),
            prefix_len,
        )
    };
    let addrs = ipv4_addresses();
    let roles = interface_roles(&host, mode);
    let mut rows = Vec::new();
    for (name, role, netns) in &roles {
        let mut m = match netns {
            // In another namespace: what the agent configured, and the
            // state of its veth peer (a veth has carrier only while both
            // ends are up).
            Some(_) => {
                let peer = roles
                    .iter()
                    .find(|(_, r, _)| *r == "overlay-peer")
                    .and_then(|(n, _, _)| sys_interface(root, n));
                let state = match &peer {
                    None => "absent",
                    Some(p) if p.get("state") == Some(&json!("up")) => "up",
                    Some(_) => "down",
                };
                let mut m = Map::new();
                m.insert("mac".into(), json!(overlay.as_ref().map(|o| &o.mac)));
                m.insert("mtu".into(), json!(overlay.as_ref().map(|o| o.mtu)));
                let ips: Vec<String> = match (&overlay, prefix_len) {
                    (Some(o), Some(len)) => vec![format!("{}/{len}", o.ip)],
                    _ => Vec::new(),
                };
                m.insert("ipv4".into(), json!(ips));
                m.insert("state".into(), json!(state));
                for key in ["rx_packets", "rx_bytes", "tx_packets", "tx_bytes"] {
                    m.insert(key.into(), Value::Null);
                }
                m
            }
            None => match sys_interface(root, name) {
                Some(mut m) => {
                    m.insert(
                        "ipv4".into(),
                        json!(addrs.get(name).cloned().unwrap_or_default()),
                    );
                    m
                }
                None => {
                    let mut m = Map::new();
                    for key in [
                        "mac",
                        "mtu",
                        "rx_packets",
                        "rx_bytes",
                        "tx_packets",
                        "tx_bytes",
                    ] {
                        m.insert(key.into(), Value::Null);
                    }
                    m.insert("ipv4".into(), json!([]));
                    m.insert("state".into(), json!("absent"));
                    m
                }
            },
        };
        m.insert("name".into(), json!(name));
        m.insert("role".into(), json!(role));
        m.insert("netns".into(), json!(netns));
        rows.push(Value::Object(m));
    }
    json!({ "interfaces": rows })
}

// --- trace ----------------------------------------------------------------------

/// How long a trace may wait for the datapath thread.
const TRACE_TIMEOUT: Duration = Duration::from_secs(2);

/// Lower-case hex of `bytes`.
fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

/// Bytes of a hex string (either case; whitespace and `:` between
/// digits are ignored).
fn from_hex(s: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(s.len() / 2);
    let mut high: Option<u8> = None;
    for (i, c) in s.char_indices() {
        if c.is_ascii_whitespace() || c == ':' {
            continue;
        }
        let n = c
            .to_digit(16)
            .ok_or_else(|| format!("not a hex digit at offset {i}"))? as u8;
        match high.take() {
            None => high = Some(n),
            Some(h) => out.push((h << 4) | n),
        }
    }
    if high.is_some() {
        return Err("odd number of hex digits".into());
    }
    Ok(out)
}

fn arg_str<'a>(args: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, String> {
    match args.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("{key} must be a string")),
    }
}

/// An integer argument in `range` (`default` when absent).
fn arg_int(
    args: &Map<String, Value>,
    key: &str,
    range: std::ops::RangeInclusive<u64>,
    default: u64,
) -> Result<u64, String> {
    let n = match args.get(key) {
        None => return Ok(default),
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => parse_number(s),
        Some(_) => None,
    };
    match n {
        Some(n) if range.contains(&n) => Ok(n),
        _ => Err(format!(
            "{key} must be an integer from {} to {}",
            range.start(),
            range.end()
        )),
    }
}

/// The trace request `args` describe, for an agent in `mode`.
fn trace_input(args: &Map<String, Value>, mode: &str) -> Result<TraceInput, String> {
    let from = arg_str(args, "from")?.ok_or("from is required: \"port\" or \"underlay\"")?;
    let hex = arg_str(args, "frame_hex")?.ok_or("frame_hex is required")?;
    let frame = from_hex(hex).map_err(|e| format!("frame_hex: {e}"))?;
    if frame.is_empty() {
        return Err("frame_hex is empty".into());
    }
    let src_tep = arg_str(args, "src_tep")?;
    let has_vni = args.contains_key("vni");
    match from {
        "port" => {
            if src_tep.is_some() || has_vni {
                return Err("src_tep and vni are only for from \"underlay\"".into());
            }
            Ok(TraceInput::Port(frame))
        }
        "underlay" if mode == "overlay" => {
            let (Some(src), true) = (src_tep, has_vni) else {
                return Err(
                    "from \"underlay\" needs src_tep (the sending endpoint's underlay IP) and vni"
                        .into(),
                );
            };
            let src_tep = src
                .parse::<Ipv4Addr>()
                .map_err(|_| format!("src_tep {src:?} is not an IPv4 address"))?;
            let vni = arg_int(args, "vni", 0..=u64::from(geneve::geneve::MAX_VNI), 0)?;
            Ok(TraceInput::Underlay {
                src_tep,
                vni: u32::try_from(vni).map_err(|_| "vni out of range")?,
                frame,
            })
        }
        "underlay" => {
            if src_tep.is_some() || has_vni {
                return Err(
                    "this agent runs micro-segmentation: from \"underlay\" is a frame \
                            as the NIC receives it, without src_tep or vni"
                        .into(),
                );
            }
            Ok(TraceInput::Nic(frame))
        }
        other => Err(format!("from {other:?} must be \"port\" or \"underlay\"")),
    }
}

async fn trace(shared: &Shared, args: &Map<String, Value>) -> Value {
    let mode = match shared.status.lock() {
        Ok(st) => st.mode,
        Err(_) => return error("status unavailable"),
    };
    let input = match trace_input(args, mode) {
        Ok(i) => i,
        Err(e) => return error(&e),
    };
    let frame = match &input {
        TraceInput::Port(f) | TraceInput::Nic(f) | TraceInput::Underlay { frame: f, .. } => {
            f.clone()
        }
    };
    let from = arg_str(args, "from")
        .ok()
        .flatten()
        .unwrap_or_default()
        .to_string();
    let reply = ask(
        shared,
        |reply| Ctl::Trace(TraceRequest { input, reply }),
        TRACE_TIMEOUT,
    )
    .await;
    match reply {
        Ok(Ok(r)) => render_trace(r, &from, &frame),
        Ok(Err(e)) | Err(e) => error(&e),
    }
}

fn verdict_name(v: Verdict) -> &'static str {
    match v {
        Verdict::Delivered => "delivered",
        Verdict::Encapsulated { .. } => "encapsulated",
        Verdict::Replied => "replied",
        Verdict::Absorbed => "absorbed",
        Verdict::Drop(_) => "dropped",
    }
}

fn render_trace(r: TraceReply, from: &str, frame: &[u8]) -> Value {
    match r {
        TraceReply::Overlay(t) => {
            let steps: Vec<Value> = t
                .steps
                .iter()
                .map(|s| {
                    json!({"layer": s.layer.name(), "result": s.result.name(),
                                "detail": s.detail})
                })
                .collect();
            let outputs: Vec<Value> = t
                .outputs
                .iter()
                .map(|o| {
                    json!({"kind": o.kind.name(), "dst": o.dst, "vni": o.vni,
                                "len": o.len, "summary": o.summary})
                })
                .collect();
            let drop_reason = match t.verdict {
                Verdict::Drop(r) => Some(r.name()),
                _ => None,
            };
            json!({"from": from, "packet": t.packet, "steps": steps,
                   "verdict": verdict_name(t.verdict), "drop_reason": drop_reason,
                   "firewall_drop_reason": t.firewall_drop.map(|r| r.name()),
                   "outputs": outputs})
        }
        TraceReply::Microseg(m) => {
            use firewall::{Dir, Verdict as Fw};
            let layer = if m.verdict.is_some() {
                "firewall"
            } else {
                "nic"
            };
            // `port` = toward the host stack, `underlay` = out of the NIC.
            let (onward, back) = match m.dir {
                Dir::In => ("port", "underlay"),
                Dir::Out => ("underlay", "port"),
            };
            let output = |kind: &str, f: &[u8]| {
                json!({"kind": kind, "dst": dst_mac(f), "vni": null, "len": f.len(),
                       "summary": datapath::trace::summarize(f)})
            };
            let (verdict, drop_reason, fw_reason, outputs) = match m.verdict {
                None => ("dropped", Some(DropReason::NotForPort.name()), None, vec![]),
                Some(Fw::Pass) => {
                    let v = if m.dir == Dir::In {
                        "delivered"
                    } else {
                        "forwarded"
                    };
                    (v, None, None, vec![output(onward, frame)])
                }
                Some(Fw::Drop(r)) => ("dropped", Some("firewall"), Some(r.name()), vec![]),
                Some(Fw::Reject(_)) => {
                    let answer = m.answer.as_deref().map(|a| output(back, a));
                    (
                        "dropped",
                        Some("firewall"),
                        Some(firewall::DropReason::Rule.name()),
                        answer.into_iter().collect(),
                    )
                }
            };
            json!({"from": from, "packet": datapath::trace::summarize(frame),
                   "steps": [{"layer": layer, "result": "done", "detail": m.detail}],
                   "verdict": verdict, "drop_reason": drop_reason,
                   "firewall_drop_reason": fw_reason, "outputs": outputs})
        }
    }
}

// --- capture --------------------------------------------------------------------

/// Extra wait beyond a capture's own timeout (the datapath thread checks
/// its deadline once per poll round).
const CAPTURE_GRACE: Duration = Duration::from_secs(3);
/// pcap link types of the frames a capture returns.
const LINKTYPE_ETHERNET: u32 = 1;
const LINKTYPE_RAW: u32 = 101;

/// The capture `args` describe: (point, its normalized name, count,
/// timeout, snaplen).
fn capture_args(
    t: &Tables,
    args: &Map<String, Value>,
) -> Result<(CapturePoint, String, usize, Duration, usize), String> {
    let point = arg_str(args, "point")?
        .ok_or("point is required: \"port\", \"underlay\" or \"switch:<name or vni>\"")?;
    let (point, name) = match point {
        "port" => (CapturePoint::Port, "port".to_string()),
        "underlay" => (CapturePoint::Underlay, "underlay".to_string()),
        p => match p.strip_prefix("switch:") {
            Some(sw) => {
                let si = resolve_switch(t, &Value::String(sw.to_string()))?;
                let sw = t.switches.get(usize::from(si)).ok_or("switch vanished")?;
                (CapturePoint::Switch(sw.vni), format!("switch:{}", sw.name))
            }
            None => {
                return Err(format!(
                    "point {p:?} must be \"port\", \"underlay\" or \"switch:<name or vni>\""
                ));
            }
        },
    };
    let count = arg_int(args, "count", 1..=10_000, 100)?;
    let timeout_ms = arg_int(args, "timeout_ms", 1..=60_000, 10_000)?;
    let snaplen = arg_int(args, "snaplen", 1..=65_535, 65_535)?;
    Ok((
        point,
        name,
        usize::try_from(count).map_err(|_| "count out of range")?,
        Duration::from_millis(timeout_ms),
        usize::try_from(snaplen).map_err(|_| "snaplen out of range")?,
    ))
}

async fn capture(shared: &Shared, args: &Map<String, Value>, cancel: &Arc<AtomicBool>) -> Value {
    let t = match tables(shared) {
        Ok(t) => t,
        Err(e) => return e,
    };
    let (point, name, count, timeout, snaplen) = match capture_args(&t, args) {
        Ok(a) => a,
        Err(e) => return error(&e),
    };
    let reply = ask(
        shared,
        |reply| {
            Ctl::Capture(CaptureRequest {
                point,
                count,
                snaplen,
                timeout,
                cancel: Arc::clone(cancel),
                reply,
            })
        },
        timeout + CAPTURE_GRACE,
    )
    .await;
    match reply {
        Ok(Ok(r)) => render_capture(&r, &name),
        Ok(Err(e)) | Err(e) => error(&e),
    }
}

fn render_capture(r: &CaptureReply, name: &str) -> Value {
    let linktype = match r.point {
        CapturePoint::Underlay => LINKTYPE_RAW,
        CapturePoint::Port | CapturePoint::Switch(_) => LINKTYPE_ETHERNET,
    };
    let frames: Vec<Value> = r
        .records
        .iter()
        .map(|f| {
            json!({"ts_ns": f.ts_unix_ns, "dir": f.dir.name(), "point": f.at.name(),
                   "orig_len": f.orig_len, "data_hex": to_hex(r.data(f))})
        })
        .collect();
    json!({"point": name, "linktype": linktype, "ended": r.ended.name(),
           "frames": frames, "truncated": r.truncated})
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::path::PathBuf;
    use std::sync::mpsc::channel;

    use control::{InstanceConfig, LocalPort, LogicalRouter, LogicalSwitch, MacAddr, RemotePort};
    use datapath::{LocalHost, Pipeline};

    use super::*;
    use crate::dp::dataloop::capture::{Capture, CaptureDir};
    use crate::dp::io::Waker;

    const ROUTER_MAC: MacAddr = MacAddr([0x02, 0x50, 0x56, 0x56, 0x44, 0x52]);
    const VM1_MAC: MacAddr = MacAddr([0x06, 0x17, 0x1e, 0x54, 0x96, 0x3a]);
    const VM3_MAC: MacAddr = MacAddr([0x06, 0x17, 0x1e, 0x54, 0x96, 0x44]);
    const VM1_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 100, 3);
    const VM3_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 100, 4);
    const UNDERLAY: Ipv4Addr = Ipv4Addr::new(10, 99, 3, 248);

    /// The seed's picture as vm1 sees it: ls-web (vm1 here, vm3 remote),
    /// ls-app (vm2 remote), router t1 with a static route.
    fn seed() -> (InstanceConfig, LocalHost) {
        let cfg = InstanceConfig {
            version: 7,
            tep_id: 248,
            switches: vec![
                LogicalSwitch {
                    name: "ls-web".into(),
                    vni: 0x238c,
                    subnet: "192.168.100.0/24".parse().unwrap(),
                    gateway_ip: "192.168.100.1".parse().unwrap(),
                },
                LogicalSwitch {
                    name: "ls-app".into(),
                    vni: 0x2388,
                    subnet: "192.168.99.0/24".parse().unwrap(),
                    gateway_ip: "192.168.99.1".parse().unwrap(),
                },
            ],
            routers: vec![LogicalRouter {
                name: "t1".into(),
                mac: ROUTER_MAC,
                switches: vec!["ls-web".into(), "ls-app".into()],
                routes: vec![control::StaticRoute {
                    prefix: "10.20.0.0/16".parse().unwrap(),
                    next_hop: "192.168.99.9".parse().unwrap(),
                }],
            }],
            port: Some(LocalPort {
                switch: "ls-web".into(),
                ip: VM1_IP,
                mac: None,
            }),
            remote_ports: vec![
                RemotePort {
                    switch: "ls-app".into(),
                    ip: "192.168.99.9".parse().unwrap(),
                    mac: MacAddr([0x06, 0x17, 0x1e, 0x54, 0x96, 0x09]),
                    tep_ip: "10.99.3.251".parse().unwrap(),
                    tep_id: 251,
                },
                RemotePort {
                    switch: "ls-web".into(),
                    ip: VM3_IP,
                    mac: VM3_MAC,
                    tep_ip: "10.99.3.44".parse().unwrap(),
                    tep_id: 44,
                },
            ],
            firewall: None,
        };
        let host = LocalHost {
            underlay_ip: UNDERLAY,
            port_mac: VM1_MAC,
            overlay_mtu: 1442,
            kernel_udp: true,
        };
        (cfg, host)
    }

    /// A `Shared` for the seed config; with `datapath`, a thread answering
    /// traces with a real pipeline and captures with one port frame.
    fn shared(mode: &'static str, datapath: bool) -> Shared {
        let (cfg, host) = seed();
        let tables = Arc::new(Tables::build(&cfg, host).unwrap());
        let dp = datapath.then(|| {
            let (tx, rx) = channel::<Ctl>();
            let t = Arc::clone(&tables);
            std::thread::spawn(move || {
                let p = Pipeline::new(t);
                let mut cap = Capture::default();
                while let Ok(msg) = rx.recv() {
                    match msg {
                        Ctl::Trace(r) => {
                            let _ = r.reply.send(crate::dp::dataloop::trace(&p, r.input, 1));
                        }
                        Ctl::Capture(r) => {
                            cap.set_tables(Some(0x238c), UNDERLAY);
                            cap.arm(r, 0);
                            cap.port(CaptureDir::Rx, &[0xab; 60], 5);
                            cap.poll(u64::MAX);
                        }
                        _ => {}
                    }
                }
            });
            (tx, Arc::new(Waker::new().unwrap()))
        });
        Shared {
            started: Instant::now(),
            published: Arc::new(Mutex::new(Published::default())),
            status: Mutex::new(Status {
                config_path: "/etc/nsx-agent.toml".into(),
                mode,
                nic: "eth0".into(),
                underlay_ip: UNDERLAY,
                underlay_mtu: 1500,
                overlay: Some(OverlayStatus {
                    netns: "nsx-root".into(),
                    interface: "nsx-eth0".into(),
                    mtu: 1442,
                    ip: VM1_IP,
                    mac: VM1_MAC.to_string(),
                    switch: "ls-web".into(),
                }),
                last_reload: None,
                config: AgentConfig {
                    host: HostSettings::default(),
                    gateway: None,
                    instance: Some(cfg.clone()),
                },
                desired: cfg,
                tables,
            }),
            gateway: None,
            datapath: Mutex::new(dp),
            ssh: Arc::new(Mutex::new(SshStatus::off("not in overlay mode"))),
        }
    }

    async fn answer(line: &str, s: &Shared) -> Value {
        answer_cancellable(line, s, &Arc::default()).await
    }

    async fn ask_line(s: &Shared, line: Value) -> Value {
        answer(&line.to_string(), s).await
    }

    async fn cmd(s: &Shared, cmd: &str, args: Value) -> Value {
        let mut req = json!({"api_version": 1, "cmd": cmd});
        if let (Value::Object(m), Value::Object(a)) = (&mut req, args) {
            m.extend(a);
        }
        ask_line(s, req).await
    }

    fn err(v: &Value) -> &str {
        v["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error in {v}"))
    }

    #[tokio::test]
    async fn requests_are_checked_strictly() {
        let s = shared("overlay", false);
        let v = answer("{\"api_version\":1", &s).await;
        assert!(err(&v).starts_with("bad request:"));
        assert_eq!(
            err(&answer("[1]", &s).await),
            "bad request: expected a JSON object"
        );
        let v = ask_line(&s, json!({"cmd": "status"})).await;
        assert_eq!(err(&v), "bad request: missing field `api_version`");
        let v = ask_line(&s, json!({"api_version": 2, "cmd": "status"})).await;
        assert_eq!(err(&v), "api_version 2 not supported (this agent speaks 1)");
        let v = cmd(&s, "frobnicate", json!({})).await;
        assert!(err(&v).starts_with("unknown command \"frobnicate\" (known: status, counters,"));
        let v = cmd(&s, "switches", json!({"verbose": true})).await;
        assert_eq!(
            err(&v),
            "unknown argument \"verbose\" for switches (it takes none)"
        );
        let v = cmd(&s, "arp-table", json!({"vni": 1})).await;
        assert_eq!(
            err(&v),
            "unknown argument \"vni\" for arp-table (known: switch)"
        );
        assert_eq!(v["api_version"], 1);
        // Every known command answers something other than "not implemented".
        for (c, _) in COMMANDS {
            let v = cmd(&s, c, json!({})).await;
            assert_ne!(v["error"], "command not implemented", "{c}");
        }
    }

    #[tokio::test]
    async fn version_switches_routers() {
        let s = shared("overlay", false);
        let v = cmd(&s, "version", json!({})).await;
        assert_eq!(v["agent"], "nsx-agent");
        assert_eq!(v["api_version"], 1);
        assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));

        // The supervisor's view of the sshds, as it is.
        let v = cmd(&s, "status", json!({})).await;
        assert_eq!(
            v["ssh"],
            json!({"state": "off", "reason": "not in overlay mode"})
        );

        let v = cmd(&s, "switches", json!({})).await;
        assert_eq!(
            v["switches"],
            json!([
                {"name": "ls-web", "vni": 0x238c, "subnet": "192.168.100.0/24",
                 "gateway_ip": "192.168.100.1", "router": "t1",
                 "local_port": {"ip": "192.168.100.3", "mac": "06:17:1e:54:96:3a"},
                 "endpoints": ["10.99.3.44"]},
                {"name": "ls-app", "vni": 0x2388, "subnet": "192.168.99.0/24",
                 "gateway_ip": "192.168.99.1", "router": "t1", "local_port": null,
                 "endpoints": ["10.99.3.251"]},
            ])
        );

        let v = cmd(&s, "routers", json!({})).await;
        assert_eq!(
            v["routers"],
            json!([{"name": "t1", "mac": "02:50:56:56:44:52", "switches": ["ls-web", "ls-app"],
            "routes": [
                {"prefix": "192.168.100.0/24", "switch": "ls-web", "next_hop": null,
                 "kind": "connected"},
                {"prefix": "192.168.99.0/24", "switch": "ls-app", "next_hop": null,
                 "kind": "connected"},
                {"prefix": "10.20.0.0/16", "switch": "ls-app",
                 "next_hop": "192.168.99.9", "kind": "static"},
            ]}])
        );
    }

    #[tokio::test]
    async fn arp_table_filters_by_name_or_vni() {
        let s = shared("overlay", false);
        let v = cmd(&s, "arp-table", json!({})).await;
        let rows = v["entries"].as_array().unwrap();
        let short: Vec<(String, String, String)> = rows
            .iter()
            .map(|r| {
                (
                    r["switch"].as_str().unwrap().into(),
                    r["ip"].as_str().unwrap().into(),
                    r["location"].as_str().unwrap().into(),
                )
            })
            .collect();
        let want = [
            ("ls-app", "192.168.99.1", "router"),
            ("ls-app", "192.168.99.9", "remote"),
            ("ls-web", "192.168.100.1", "router"),
            ("ls-web", "192.168.100.3", "local"),
            ("ls-web", "192.168.100.4", "remote"),
        ];
        let want: Vec<(String, String, String)> = want
            .iter()
            .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
            .collect();
        assert_eq!(short, want);
        assert_eq!(
            rows[4],
            json!({"switch": "ls-web", "vni": 0x238c, "ip": "192.168.100.4",
                   "mac": "06:17:1e:54:96:44", "location": "remote", "tep_ip": "10.99.3.44"})
        );
        for sel in [
            json!("ls-web"),
            json!(0x238c),
            json!("0x238c"),
            json!("9100"),
        ] {
            let v = cmd(&s, "arp-table", json!({ "switch": sel })).await;
            assert_eq!(v["entries"].as_array().unwrap().len(), 3, "{sel}");
        }
        let v = cmd(&s, "arp-table", json!({"switch": "x"})).await;
        assert_eq!(err(&v), "unknown switch \"x\" (known: ls-web, ls-app)");
        let v = cmd(&s, "arp-table", json!({"switch": 5})).await;
        assert_eq!(err(&v), "unknown switch 5 (known: ls-web, ls-app)");
        let v = cmd(&s, "arp-table", json!({"switch": [1]})).await;
        assert_eq!(err(&v), "switch must be a switch name or a VNI");
    }

    /// A fake `/sys/class/net`: the NIC up with counters, the overlay
    /// peer up, no bridge.
    fn fake_sys(tag: &str) -> PathBuf {
        let root = std::env::temp_dir().join(format!("nsx-api-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for (name, files) in [
            (
                "eth0",
                &[
                    ("address", "06:17:1e:54:96:3a\n"),
                    ("mtu", "1500\n"),
                    ("operstate", "up\n"),
                    ("statistics/rx_packets", "10\n"),
                    ("statistics/rx_bytes", "1000\n"),
                    ("statistics/tx_packets", "20\n"),
                    ("statistics/tx_bytes", "2000\n"),
                ][..],
            ),
            (
                "nsx-eth0-peer",
                &[
                    ("address", "aa:bb:cc:dd:ee:ff\n"),
                    ("mtu", "1442\n"),
                    ("operstate", "up\n"),
                ][..],
            ),
        ] {
            std::fs::create_dir_all(root.join(name).join("statistics")).unwrap();
            for (f, text) in files {
                std::fs::write(root.join(name).join(f), text).unwrap();
            }
        }
        root
    }

    #[test]
    fn interfaces_read_sysfs_and_never_fail_on_absent_ones() {
        let s = shared("overlay", false);
        let root = fake_sys("ifs");
        let v = interfaces(&s, &root);
        let rows = v["interfaces"].as_array().unwrap();
        let by = |n: &str| rows.iter().find(|r| r["name"] == n).unwrap().clone();
        let eth0 = by("eth0");
        assert_eq!(eth0["role"], "nic");
        assert_eq!(eth0["netns"], Value::Null);
        assert_eq!(eth0["state"], "up");
        assert_eq!(eth0["mtu"], 1500);
        assert_eq!(eth0["mac"], "06:17:1e:54:96:3a");
        assert_eq!(
            (&eth0["rx_packets"], &eth0["tx_bytes"]),
            (&json!(10), &json!(2000))
        );
        let vtep = by("nsx-vtep0.0");
        assert_eq!(vtep["state"], "absent");
        assert_eq!(vtep["mtu"], Value::Null);
        assert_eq!(vtep["ipv4"], json!([]));
        let peer = by("nsx-eth0-peer");
        assert_eq!(peer["role"], "overlay-peer");
        assert_eq!(peer["rx_packets"], Value::Null, "no statistics files");
        let overlay = by("nsx-eth0");
        assert_eq!(overlay["netns"], "nsx-root");
        assert_eq!(overlay["state"], "up", "from the peer's carrier");
        assert_eq!(overlay["ipv4"], json!(["192.168.100.3/24"]));
        assert_eq!(overlay["mtu"], 1442);
        std::fs::remove_dir_all(&root).unwrap();
        let v = interfaces(&s, Path::new("/nonexistent/nsx"));
        let states: Vec<&Value> = v["interfaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| &r["state"])
            .collect();
        assert!(states.iter().all(|s| **s == "absent"), "{states:?}");

        let s = shared("micro-segmentation", false);
        let v = interfaces(&s, Path::new("/nonexistent/nsx"));
        let roles: Vec<&str> = v["interfaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["role"].as_str().unwrap())
            .collect();
        assert_eq!(roles, ["nic", "vtep", "fw", "fw-peer"]);
        assert!(sys_interface(Path::new("/sys/class/net"), "../etc").is_none());
    }

    fn icmp_frame() -> String {
        // vm1 -> vm3 echo request, as the seed's ping.
        let mut f = vec![0u8; 14 + 20 + 8];
        geneve::ethernet::emit_header(&mut f, VM3_MAC.0, VM1_MAC.0, 0x0800).unwrap();
        geneve::ipv4::emit_header(&mut f[14..], VM1_IP, VM3_IP, 1, 8, 64, true, 1).unwrap();
        f[34] = 8;
        to_hex(&f)
    }

    #[tokio::test]
    async fn trace_runs_through_the_datapath_thread() {
        let s = shared("overlay", true);
        let v = cmd(
            &s,
            "trace",
            json!({"from": "port", "frame_hex": icmp_frame()}),
        )
        .await;
        assert_eq!(v["verdict"], "encapsulated", "{v}");
        assert_eq!(v["drop_reason"], Value::Null);
        assert_eq!(v["from"], "port");
        let layers: Vec<&str> = v["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["layer"].as_str().unwrap())
            .collect();
        assert_eq!(
            layers,
            [
                "port-security",
                "firewall",
                "responder",
                "switch",
                "router",
                "encap"
            ]
        );
        assert_eq!(v["steps"][5]["detail"], "vni 0x238c to 10.99.3.44 (tep 44)");
        assert_eq!(v["steps"][5]["result"], "done");
        assert_eq!(
            v["outputs"],
            json!([{"kind": "underlay", "dst": "10.99.3.44", "vni": 0x238c, "len": 86,
                    "summary": "06:17:1e:54:96:3a > 06:17:1e:54:96:44, 192.168.100.3 > \
                                192.168.100.4: icmp echo request id 0 seq 0, ttl 64, 42 bytes"}])
        );

        // From the underlay: vm3's reply arrives and is delivered.
        let mut f = vec![0u8; 14 + 20 + 8];
        geneve::ethernet::emit_header(&mut f, VM1_MAC.0, VM3_MAC.0, 0x0800).unwrap();
        geneve::ipv4::emit_header(&mut f[14..], VM3_IP, VM1_IP, 1, 8, 64, true, 1).unwrap();
        let hex = to_hex(&f).to_uppercase();
        let v = cmd(
            &s,
            "trace",
            json!({"from": "underlay", "frame_hex": hex, "src_tep": "10.99.3.44", "vni": 9100}),
        )
        .await;
        assert_eq!(v["verdict"], "delivered", "{v}");
        assert_eq!(v["outputs"][0]["kind"], "port");
        let v = cmd(
            &s,
            "trace",
            json!({"from": "underlay", "frame_hex": to_hex(&f), "src_tep": "10.99.3.7",
                   "vni": "0x238c"}),
        )
        .await;
        assert_eq!(v["verdict"], "dropped");
        assert_eq!(v["drop_reason"], "unknown_tunnel");
    }

    #[tokio::test]
    async fn trace_arguments_are_checked() {
        let s = shared("overlay", true);
        let hex = icmp_frame();
        for (args, want) in [
            (
                json!({"frame_hex": hex}),
                "from is required: \"port\" or \"underlay\"",
            ),
            (json!({"from": "port"}), "frame_hex is required"),
            (
                json!({"from": "side", "frame_hex": hex}),
                "from \"side\" must be \"port\" or \"underlay\"",
            ),
            (
                json!({"from": "port", "frame_hex": "abc"}),
                "frame_hex: odd number of hex digits",
            ),
            (
                json!({"from": "port", "frame_hex": "zz"}),
                "frame_hex: not a hex digit at offset 0",
            ),
            (
                json!({"from": "port", "frame_hex": ""}),
                "frame_hex is empty",
            ),
            (
                json!({"from": "port", "frame_hex": 7}),
                "frame_hex must be a string",
            ),
            (
                json!({"from": "port", "frame_hex": hex, "vni": 1}),
                "src_tep and vni are only for from \"underlay\"",
            ),
            (
                json!({"from": "underlay", "frame_hex": hex, "vni": 1}),
                "from \"underlay\" needs src_tep (the sending endpoint's underlay IP) and vni",
            ),
            (
                json!({"from": "underlay", "frame_hex": hex, "src_tep": "x", "vni": 1}),
                "src_tep \"x\" is not an IPv4 address",
            ),
            (
                json!({"from": "underlay", "frame_hex": hex, "src_tep": "10.0.0.1",
                       "vni": 16_777_216}),
                "vni must be an integer from 0 to 16777215",
            ),
        ] {
            let v = cmd(&s, "trace", args.clone()).await;
            assert_eq!(err(&v), want, "{args}");
        }
        let s = shared("micro-segmentation", false);
        let v = cmd(
            &s,
            "trace",
            json!({"from": "underlay", "frame_hex": hex, "src_tep": "10.0.0.1", "vni": 1}),
        )
        .await;
        assert!(err(&v).starts_with("this agent runs micro-segmentation"));
        let v = cmd(&s, "trace", json!({"from": "port", "frame_hex": hex})).await;
        assert_eq!(err(&v), "the datapath is not running");
    }

    #[tokio::test]
    async fn capture_arguments_and_reply() {
        let s = shared("overlay", true);
        for (args, want) in [
            (
                json!({}),
                "point is required: \"port\", \"underlay\" or \"switch:<name or vni>\"",
            ),
            (
                json!({"point": "eth0"}),
                "point \"eth0\" must be \"port\", \"underlay\" or \"switch:<name or vni>\"",
            ),
            (
                json!({"point": "switch:nope"}),
                "unknown switch \"nope\" (known: ls-web, ls-app)",
            ),
            (
                json!({"point": "port", "count": 0}),
                "count must be an integer from 1 to 10000",
            ),
            (
                json!({"point": "port", "count": 10_001}),
                "count must be an integer from 1 to 10000",
            ),
            (
                json!({"point": "port", "timeout_ms": 0}),
                "timeout_ms must be an integer from 1 to 60000",
            ),
            (
                json!({"point": "port", "snaplen": -1}),
                "snaplen must be an integer from 1 to 65535",
            ),
        ] {
            let v = cmd(&s, "capture", args.clone()).await;
            assert_eq!(err(&v), want, "{args}");
        }
        let v = cmd(
            &s,
            "capture",
            json!({"point": "switch:9100", "count": 1, "snaplen": 16}),
        )
        .await;
        assert_eq!(v["point"], "switch:ls-web", "{v}");
        assert_eq!(v["linktype"], 1);
        assert_eq!(v["ended"], "count");
        assert_eq!(v["truncated"], 1);
        let f = &v["frames"][0];
        assert_eq!(f["dir"], "rx");
        assert_eq!(f["point"], "port");
        assert_eq!(f["orig_len"], 60);
        assert_eq!(f["data_hex"], "ab".repeat(16));
        assert!(f["ts_ns"].as_u64().unwrap() > 1_600_000_000_000_000_000);
        let v = cmd(
            &s,
            "capture",
            json!({"point": "underlay", "count": 1, "timeout_ms": 1}),
        )
        .await;
        assert_eq!(v["linktype"], 101);
        assert_eq!(v["ended"], "timeout");
        assert_eq!(v["frames"], json!([]));
    }

    #[tokio::test]
    async fn a_client_that_hangs_up_cancels_its_capture() {
        use crate::dp::dataloop::capture::Ended;
        let s = shared("overlay", false);
        let (tx, rx) = channel::<Ctl>();
        let (ended_tx, ended_rx) = channel::<Ended>();
        let (armed_tx, armed_rx) = channel::<()>();
        // A datapath thread that arms the capture and polls it the way the
        // loop does (its deadline a minute away), reporting how it ended.
        std::thread::spawn(move || {
            let Ok(Ctl::Capture(r)) = rx.recv() else {
                return;
            };
            let (mine, done) = channel();
            let CaptureRequest {
                point,
                count,
                snaplen,
                timeout,
                cancel,
                reply,
            } = r;
            let mut cap = Capture::default();
            cap.set_tables(Some(0x238c), UNDERLAY);
            let req = CaptureRequest {
                point,
                count,
                snaplen,
                timeout,
                cancel,
                reply: mine,
            };
            cap.arm(req, 0);
            let _ = armed_tx.send(());
            for round in 1..=500u64 {
                cap.poll(round);
                if let Ok(Ok(res)) = done.try_recv() {
                    let _ = ended_tx.send(res.ended);
                    let _ = reply.send(Ok(res));
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        *s.datapath.lock().unwrap() = Some((tx, Arc::new(Waker::new().unwrap())));
        let (mut client, server) = UnixStream::pair().unwrap();
        let conn = tokio::spawn(handle(server, Arc::new(s)));
        client
            .write_all(b"{\"api_version\":1,\"cmd\":\"capture\",\"point\":\"port\",\"count\":5,\"timeout_ms\":60000}\n")
            .await
            .unwrap();
        // Hang up once the capture runs (before that there is nothing to cancel).
        let armed =
            tokio::task::spawn_blocking(move || armed_rx.recv_timeout(Duration::from_secs(10)))
                .await
                .unwrap();
        assert_eq!(armed, Ok(()), "the capture reached the datapath");
        drop(client); // nsxcli interrupted
        let ended =
            tokio::task::spawn_blocking(move || ended_rx.recv_timeout(Duration::from_secs(10)))
                .await
                .unwrap();
        assert_eq!(ended, Ok(Ended::Cancelled));
        tokio::time::timeout(Duration::from_secs(10), conn)
            .await
            .expect("the connection task ends")
            .unwrap();
    }

    #[test]
    fn hex_round_trips() {
        let b: Vec<u8> = (0..=255).collect();
        assert_eq!(from_hex(&to_hex(&b)).unwrap(), b);
        assert_eq!(from_hex("0a:0B 0c\n").unwrap(), vec![10, 11, 12]);
        assert!(from_hex("é0").is_err());
    }
}
