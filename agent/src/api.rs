//! The agent's local API for nsxcli and scripts: a unix socket (mode 0600)
//! speaking newline-delimited JSON. A request is
//! `{"api_version":1,"cmd":"status"}`; every reply carries `api_version` and
//! either the data or `{"error": "..."}`. Commands: `status`, `counters`,
//! `config`, `mac-table`, and the firewall's `getrules`, `getaddrsets`,
//! `getflows` (each with a `text` field in the seed's `vsipioctl` format)
//! and `firewall-stats` (rule hits and drop counters). New commands and
//! fields are added without changing existing ones; a client asking for a
//! newer version gets an error.

use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use datapath::{DropReason, LayerId, Location, Tables};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::config::AgentConfig;
use crate::dataloop::{Ctl, Snapshot};
use crate::fwctl::{FwQuery, FwReply, FwRequest};
use crate::gwclient::GatewayStatus;
use crate::io::Waker;

pub const API_VERSION: u32 = 1;
/// Longest request line accepted.
const MAX_REQUEST: usize = 64 * 1024;

/// State the API reports, shared with the control side.
#[derive(Debug)]
pub struct Shared {
    pub started: Instant,
    pub snapshot: Arc<Mutex<Snapshot>>,
    pub status: Mutex<Status>,
    /// The gateway connection, when the agent has one.
    pub gateway: Option<Arc<Mutex<Option<GatewayStatus>>>>,
    /// The datapath thread's control channel (firewall queries).
    pub datapath: Mutex<Option<(Sender<Ctl>, Arc<Waker>)>>,
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

#[derive(Debug, Deserialize)]
struct Request {
    api_version: u32,
    cmd: String,
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
            answer(line.trim_end(), &shared).await
        };
        let mut bytes = reply.to_string().into_bytes();
        bytes.push(b'\n');
        if w.write_all(&bytes).await.is_err() || line.len() > MAX_REQUEST {
            return;
        }
    }
}

fn error(msg: &str) -> Value {
    json!({ "api_version": API_VERSION, "error": msg })
}

/// Answers one request line.
pub async fn answer(line: &str, shared: &Shared) -> Value {
    let req: Request = match serde_json::from_str(line) {
        Ok(r) => r,
        Err(e) => return error(&format!("bad request: {e}")),
    };
    if req.api_version > API_VERSION {
        return error(&format!(
            "api_version {} not supported (this agent speaks {API_VERSION})",
            req.api_version
        ));
    }
    let mut v = match req.cmd.as_str() {
        "status" => status(shared),
        "counters" => counters(shared),
        "config" => config(shared),
        "mac-table" => mac_table(shared),
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
        other => {
            return error(&format!(
                "unknown command {other:?} (known: status, counters, config, mac-table, \
                 getrules, getaddrsets, getflows, firewall-stats)"
            ));
        }
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
    }
    v
}

fn counters(shared: &Shared) -> Value {
    let Ok(s) = shared.snapshot.lock().map(|s| s.clone()) else {
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
    let (tx, rx) = std::sync::mpsc::channel();
    {
        let guard = shared.datapath.lock().map_err(|_| "datapath unavailable")?;
        let Some((ctl, waker)) = guard.as_ref() else {
            return Err("the datapath is not running".into());
        };
        ctl.send(Ctl::Fw(FwRequest {
            query: q,
            reply: tx,
        }))
        .map_err(|_| "the datapath thread is gone")?;
        waker.wake();
    }
    tokio::task::spawn_blocking(move || rx.recv_timeout(QUERY_TIMEOUT))
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
