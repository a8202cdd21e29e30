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
use std::time::{Duration, Instant};

use agent_api::{
    ArpEntry, ArpTableReply, CaptureReply, CapturedFrame, ConfigReply, CountersReply, DhcpLease,
    DhcpReply, DhcpRoute, DhcpServer, FirewallStats, GatewayStatus, Interface, InterfacesReply,
    LayerCounters, LinkState, MacEntry, MacTableReply, Mode, PortAddress, Request, Route,
    RouteKind, Router, RoutersReply, SshStatus, StatusReply, Switch, SwitchRef, SwitchesReply,
    TextReply, TraceFrom, TraceOutput, TraceStep, Traffic, TunnelCounters, VersionReply,
};
use datapath::tables::SwitchIdx;
use datapath::{DropReason, LayerId, Location, Tables, Verdict};
use serde::Serialize;
use serde_json::{Map, Value};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::config::{AgentConfig, HostSettings};
use crate::dp::ctl::{Ctl, Published, TraceInput, TraceRequest};
use crate::dp::dataloop::capture::{self, CapturePoint, CaptureRequest};
use crate::dp::fwctl::{FwQuery, FwReply, FwRequest};
use crate::dp::io::Waker;
use crate::dp::natctl::{self, NatQuery, NatReply, NatRequest};

pub use agent_api::{API_VERSION, OverlayStatus, ReloadStatus};

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
    /// The edge's health checkers (`get load-balancer` shows their last
    /// results); `None` off the edge.
    pub checks: Option<lb::health::MonitorHandle>,
}

/// How long a firewall query may wait for the datapath thread.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// Slow-changing facts about the agent.
#[derive(Debug, Clone)]
pub struct Status {
    pub config_path: String,
    /// `overlay` or `micro-segmentation`.
    pub mode: &'static str,
    pub nic: String,
    pub underlay_ip: Ipv4Addr,
    pub underlay_mtu: u32,
    pub overlay: Option<OverlayStatus>,
    pub last_reload: Option<ReloadStatus>,
    pub config: AgentConfig,
    /// The desired state the datapath runs.
    pub desired: control::InstanceConfig,
    pub tables: Arc<Tables>,
}

impl Status {
    fn mode(&self) -> Mode {
        match self.mode {
            "overlay" => Mode::Overlay,
            "edge" => Mode::Edge,
            _ => Mode::MicroSegmentation,
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
            agent_api::encode_error("request too long")
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
        let mut bytes = reply.into_bytes();
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

/// Why a command has no answer; its `Display` is the reply's `error`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A lock around the named state was poisoned (a thread panicked).
    #[error("{0} unavailable")]
    Unavailable(&'static str),
    /// A firewall command on an agent without a firewall policy.
    #[error("no firewall is configured")]
    NoFirewall,
    /// `nat-sessions` to an agent that is not the edge.
    #[error("no NAT here: this agent is not the edge (it has no tier0)")]
    NoNat,
    /// A command argument that does not say what it should.
    #[error("{0}")]
    BadArgument(String),
    /// `load-balancers` to an agent whose datapath balances nothing.
    #[error("no load balancer here: no virtual server is configured for this agent")]
    NoLoadBalancer,
    /// The datapath thread has not started (or has stopped).
    #[error("the datapath is not running")]
    DatapathNotRunning,
    /// The datapath thread's control channel is closed.
    #[error("the datapath thread is gone")]
    DatapathGone,
    /// The datapath thread did not answer within the command's timeout.
    #[error("the datapath thread did not answer in time")]
    DatapathTimeout,
    /// The task waiting for the datapath thread failed.
    #[error(transparent)]
    Wait(#[from] tokio::task::JoinError),
    /// The config could not be shown as JSON objects.
    #[error("config unavailable: {0}")]
    Config(String),
    /// A switch argument that names no switch.
    #[error("unknown switch {switch} (known: {known})")]
    UnknownSwitch { switch: String, known: String },
    /// A switch resolved a moment ago is no longer in the tables.
    #[error("switch vanished")]
    SwitchVanished,
    /// A trace's arguments do not fit the agent's mode.
    #[error("{0}")]
    TraceArgs(&'static str),
    /// The datapath thread refused a trace.
    #[error(transparent)]
    Trace(#[from] crate::dp::ctl::TraceError),
    /// The datapath thread refused a capture.
    #[error(transparent)]
    Capture(#[from] capture::CaptureError),
    /// A capture argument beyond what this platform can hold.
    #[error("{0} out of range")]
    OutOfRange(&'static str),
}

/// One command's answer: its reply, or why there is none.
type Answer<T> = Result<T, ApiError>;

/// The reply line of an answer.
fn line<T: Serialize>(a: Answer<T>) -> String {
    match a {
        Ok(body) => agent_api::encode_reply(&body),
        Err(e) => agent_api::encode_error(&e.to_string()),
    }
}

/// Answers one request line (the reply line, without its newline);
/// `cancel` ends a `capture` it started early (set when the client goes
/// away).
async fn answer_cancellable(text: &str, shared: &Shared, cancel: &Arc<AtomicBool>) -> String {
    let req = match agent_api::parse_request(text) {
        Ok(r) => r,
        Err(e) => return agent_api::encode_error(&e.0),
    };
    match req {
        Request::Status => line(status(shared)),
        Request::Counters => line(counters(shared)),
        Request::Config => line(config(shared)),
        Request::Version => line(Ok(VersionReply {
            agent: "nsx-agent".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        })),
        Request::Interfaces => line(interfaces(shared, Path::new(SYS_CLASS_NET))),
        Request::Switches => line(switches(shared)),
        Request::MacTable => line(mac_table(shared)),
        Request::ArpTable { switch } => line(arp_table(shared, switch.as_ref())),
        Request::Routers => line(routers(shared)),
        Request::Dhcp { switch } => line(dhcp(shared, switch.as_ref())),
        Request::Trace {
            from,
            frame_hex,
            src_tep,
            vni,
        } => line(trace(shared, from, frame_hex.0, src_tep, vni).await),
        Request::Capture {
            point,
            count,
            timeout_ms,
            snaplen,
        } => line(capture(shared, &point, count, timeout_ms, snaplen, cancel).await),
        Request::NatSessions { limit } => {
            let limit = limit.map_or(natctl::DEFAULT_LISTED, |l| {
                usize::try_from(l).unwrap_or(usize::MAX)
            });
            line(match nat_query(shared, NatQuery::List(limit)).await {
                Ok(NatReply::Listed {
                    summary,
                    sessions,
                    truncated,
                }) => Ok(agent_api::NatSessionsReply {
                    summary: *summary,
                    sessions,
                    truncated,
                }),
                Ok(_) => Err(ApiError::NoNat),
                Err(e) => Err(e),
            })
        }
        Request::LoadBalancers { vip } => line(load_balancers(shared, vip.as_deref()).await),
        Request::GetRules => line(rules(shared, false)),
        Request::GetAddrSets => line(rules(shared, true)),
        Request::GetFlows => line(match query(shared, FwQuery::Flows).await {
            Ok(FwReply::Flows(text)) => Ok(TextReply { text }),
            Ok(_) => Err(ApiError::NoFirewall),
            Err(e) => Err(e),
        }),
        Request::FirewallStats => line(match query(shared, FwQuery::Stats).await {
            Ok(FwReply::Stats(s)) => Ok::<FirewallStats, _>(*s),
            Ok(_) => Err(ApiError::NoFirewall),
            Err(e) => Err(e),
        }),
    }
}

fn status(shared: &Shared) -> Answer<StatusReply> {
    let st = shared
        .status
        .lock()
        .map_err(|_| ApiError::Unavailable("status"))?;
    let gateway = shared
        .gateway
        .as_ref()
        .and_then(|g| g.lock().ok().and_then(|g| g.clone()))
        .map(|mut g| {
            g.name = st.config.gateway.as_ref().map(|s| s.control_name());
            g
        });
    Ok(StatusReply {
        agent: "nsx-agent".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        pid: std::process::id(),
        uptime_s: shared.started.elapsed().as_secs(),
        config_path: st.config_path.clone(),
        mode: st.mode(),
        nic: st.nic.clone(),
        underlay_ip: st.underlay_ip,
        underlay_mtu: st.underlay_mtu,
        overlay: st.overlay.clone(),
        config_version: st.tables.version,
        tep_id: st.tables.tep_id,
        last_reload: st.last_reload.clone(),
        gateway,
        ssh: shared.ssh.lock().ok().map(|s| s.clone()),
    })
}

fn traffic(rx: datapath::PacketBytes, tx: datapath::PacketBytes) -> Traffic {
    Traffic {
        rx_packets: rx.packets,
        rx_bytes: rx.bytes,
        tx_packets: tx.packets,
        tx_bytes: tx.bytes,
    }
}

fn counters(shared: &Shared) -> Answer<CountersReply> {
    let s = shared
        .published
        .lock()
        .map(|s| s.clone())
        .map_err(|_| ApiError::Unavailable("counters"))?;
    let c = &s.counters;
    let drops = DropReason::ALL
        .iter()
        .map(|r| (r.name().to_string(), c.dropped(*r)))
        .collect();
    let layers = LayerId::ALL
        .iter()
        .map(|l| {
            let lc = c.layers[*l as usize];
            LayerCounters {
                name: l.name().into(),
                seen: lc.seen,
                passed: lc.passed,
                handled: lc.handled,
                dropped: lc.dropped,
            }
        })
        .collect();
    let now = u64::try_from(shared.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
    let tunnels = c
        .tunnels
        .iter()
        .map(|t| TunnelCounters {
            tep_ip: t.tep_ip,
            tep_id: t.tep_id,
            tx_packets: t.tx.packets,
            tx_bytes: t.tx.bytes,
            rx_packets: t.rx.packets,
            rx_bytes: t.rx.bytes,
            last_rx_ago_ms: (t.last_rx_ns != 0)
                .then(|| now.saturating_sub(t.last_rx_ns) / 1_000_000),
        })
        .collect();
    Ok(CountersReply {
        config_version: s.config_version,
        drops,
        total_drops: c.total_drops(),
        layers,
        tunnels,
        port: traffic(c.port_rx, c.port_tx),
        underlay: traffic(c.underlay_rx, c.underlay_tx),
        downlink: traffic(c.downlink_rx, c.downlink_tx),
        io: s.io,
        dhcp: c
            .dhcp
            .by_type()
            .iter()
            .map(|(t, n)| ((*t).to_string(), *n))
            .collect(),
        nat: s.nat.clone(),
    })
}

/// `getrules` / `getaddrsets` from the policy the datapath runs.
fn rules(shared: &Shared, addrsets: bool) -> Answer<TextReply> {
    let st = shared
        .status
        .lock()
        .map_err(|_| ApiError::Unavailable("tables"))?;
    let text = match &st.tables.firewall {
        None => return Err(ApiError::NoFirewall),
        Some(p) if addrsets => firewall::show::getaddrsets(p.config()),
        Some(p) => firewall::show::getrules(p),
    };
    Ok(TextReply { text })
}

/// `load-balancers`: the balancer's view, one virtual server or all.
async fn load_balancers(
    shared: &Shared,
    vip: Option<&str>,
) -> Result<agent_api::LoadBalancersReply, ApiError> {
    let query = match vip {
        Some(v) => Some(
            agent_api::parse_virtual_server(v)
                .map_err(|e| ApiError::BadArgument(format!("vip: {e}")))?,
        ),
        None => None,
    };
    let reply = lb_query(shared, query)
        .await?
        .ok_or(ApiError::NoLoadBalancer)?;
    if query.is_some() && reply.services.is_empty() {
        return Err(ApiError::BadArgument(format!(
            "vip: no virtual server {} here",
            vip.unwrap_or_default()
        )));
    }
    let mut reply = reply;
    if let (Some(_), Some(checks)) = (query, &shared.checks) {
        add_checks(&mut reply, &checks.snapshot());
    }
    Ok(reply)
}

/// Gives each real server of `reply` its checker's view, if the edge
/// checks it.
fn add_checks(reply: &mut agent_api::LoadBalancersReply, checks: &[lb::health::CheckView]) {
    for s in &mut reply.services {
        for rs in &mut s.real_servers {
            let found = checks.iter().find(|c| {
                c.key.protocol.upper() == s.protocol
                    && c.key.vip == s.vip
                    && c.key.port == s.port
                    && c.key.real_ip == rs.ip
                    && c.key.real_port == rs.port
            });
            rs.check = found.map(check_view);
        }
    }
}

fn check_view(c: &lb::health::CheckView) -> agent_api::LbCheckView {
    agent_api::LbCheckView {
        liveness: match c.liveness {
            control::lb::Liveness::Down => "down".into(),
            control::lb::Liveness::Up => "up".into(),
            control::lb::Liveness::Weight(w) => format!("up, weight {w}"),
        },
        last_result: c.last_result.clone(),
        last_check_ms_ago: c
            .last_check_age
            .map(|a| u64::try_from(a.as_millis()).unwrap_or(u64::MAX)),
        failures: c.failures,
        transitions: c.transitions,
        running: c.running,
    }
}

/// Asks the datapath thread's load balancer (`None`: it has none).
pub async fn lb_query(
    shared: &Shared,
    query: crate::dp::lbctl::LbQuery,
) -> Result<Option<agent_api::LoadBalancersReply>, ApiError> {
    ask(
        shared,
        |reply| Ctl::Lb(crate::dp::lbctl::LbRequest { query, reply }),
        QUERY_TIMEOUT,
    )
    .await
}

/// Asks the datapath thread's NAT (the edge's).
pub async fn nat_query(shared: &Shared, q: NatQuery) -> Result<NatReply, ApiError> {
    ask(
        shared,
        |reply| Ctl::Nat(NatRequest { query: q, reply }),
        QUERY_TIMEOUT,
    )
    .await
}

pub async fn query(shared: &Shared, q: FwQuery) -> Result<FwReply, ApiError> {
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
) -> Result<T, ApiError> {
    let (tx, rx) = std::sync::mpsc::channel();
    {
        let guard = shared
            .datapath
            .lock()
            .map_err(|_| ApiError::Unavailable("datapath"))?;
        let Some((ctl, waker)) = guard.as_ref() else {
            return Err(ApiError::DatapathNotRunning);
        };
        ctl.send(make(tx)).map_err(|_| ApiError::DatapathGone)?;
        waker.wake();
    }
    tokio::task::spawn_blocking(move || rx.recv_timeout(timeout))
        .await?
        .map_err(|_| ApiError::DatapathTimeout)
}

/// A serializable value as a JSON object (the config sections).
fn object<T: Serialize>(v: &T) -> Answer<Map<String, Value>> {
    match serde_json::to_value(v) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::Config("not an object".into())),
        Err(e) => Err(ApiError::Config(e.to_string())),
    }
}

fn config(shared: &Shared) -> Answer<ConfigReply> {
    let st = shared
        .status
        .lock()
        .map_err(|_| ApiError::Unavailable("config"))?;
    Ok(ConfigReply {
        host: object(&st.config.host)?,
        gateway: st.config.gateway.as_ref().map(object).transpose()?,
        desired: st.desired.clone(),
    })
}

/// A datapath location as the API shows it, with the endpoint's IP.
fn location(t: &Tables, loc: Location) -> (agent_api::Location, Option<Ipv4Addr>) {
    match loc {
        Location::Local => (agent_api::Location::Local, None),
        Location::Remote(i) => (
            agent_api::Location::Remote,
            t.teps.get(usize::from(i)).map(|r| r.ip),
        ),
    }
}

fn mac_table(shared: &Shared) -> Answer<MacTableReply> {
    let t = tables(shared)?;
    let mut entries: Vec<MacEntry> = t
        .mac_table()
        .map(|(s, mac, loc)| {
            let sw = &t.switches[usize::from(s)];
            let (location, tep_ip) = location(&t, loc);
            MacEntry {
                switch: sw.name.clone(),
                vni: sw.vni,
                mac,
                location,
                tep_ip,
            }
        })
        .collect();
    entries.sort_by_key(|e| (e.vni, e.mac.to_string()));
    Ok(MacTableReply { entries })
}

// --- forwarding state -------------------------------------------------------

/// The tables the datapath runs (a cheap clone of the status's `Arc`).
fn tables(shared: &Shared) -> Answer<Arc<Tables>> {
    shared
        .status
        .lock()
        .map(|st| Arc::clone(&st.tables))
        .map_err(|_| ApiError::Unavailable("tables"))
}

fn switches(shared: &Shared) -> Answer<SwitchesReply> {
    let t = tables(shared)?;
    let switches = t
        .switches
        .iter()
        .enumerate()
        .map(|(i, sw)| Switch {
            name: sw.name.clone(),
            vni: sw.vni,
            subnet: sw.subnet,
            gateway_ip: sw.gateway_ip,
            router: sw
                .router
                .and_then(|r| t.routers.get(usize::from(r)))
                .map(|r| r.name.clone()),
            local_port: t
                .port
                .filter(|p| usize::from(p.switch) == i)
                .map(|p| PortAddress {
                    ip: p.ip,
                    mac: p.mac,
                }),
            endpoints: sw
                .flood
                .iter()
                .filter_map(|&tep| t.teps.get(usize::from(tep)).map(|r| r.ip))
                .collect(),
        })
        .collect();
    Ok(SwitchesReply { switches })
}

/// `dhcp`: what each switch's DHCP server hands out (from the tables the
/// datapath runs) and the port's lease (from the datapath's counters).
fn dhcp(shared: &Shared, switch: Option<&SwitchRef>) -> Answer<DhcpReply> {
    let t = tables(shared)?;
    let only = switch.map(|s| resolve_switch(&t, s)).transpose()?;
    let wanted = |s: SwitchIdx| only.is_none_or(|o| o == s);
    let servers = t
        .switches
        .iter()
        .zip(0..=SwitchIdx::MAX)
        .filter(|(_, si)| wanted(*si))
        .map(|(sw, si)| DhcpServer {
            switch: sw.name.clone(),
            vni: sw.vni,
            server_id: sw.gateway_ip,
            subnet_mask: sw.subnet.netmask(),
            router: t.router_of(si).map(|_| sw.gateway_ip),
            dns_servers: sw.dhcp.dns.clone(),
            domain_name: sw.dhcp.domain.clone(),
            lease_time: sw.dhcp.lease_secs,
            mtu: t.host.overlay_mtu,
            routes: sw
                .dhcp
                .routes
                .iter()
                .map(|(dst, len, via)| DhcpRoute {
                    prefix: format!("{dst}/{len}"),
                    next_hop: *via,
                })
                .collect(),
        })
        .collect();
    let bound_at = shared
        .published
        .lock()
        .map(|s| s.counters.dhcp.bound_at_ns)
        .map_err(|_| ApiError::Unavailable("counters"))?;
    let now = u64::try_from(shared.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
    let leases = t
        .port
        .filter(|p| wanted(p.switch))
        .and_then(|p| {
            let sw = t.switches.get(usize::from(p.switch))?;
            let ago = (bound_at != 0).then(|| now.saturating_sub(bound_at) / 1_000_000_000);
            Some(DhcpLease {
                switch: sw.name.clone(),
                ip: p.ip,
                mac: p.mac,
                state: if ago.is_some() { "bound" } else { "free" }.into(),
                bound_ago_s: ago,
                expires_in_s: ago.map(|a| u64::from(sw.dhcp.lease_secs).saturating_sub(a)),
            })
        })
        .into_iter()
        .collect();
    Ok(DhcpReply { servers, leases })
}

fn routers(shared: &Shared) -> Answer<RoutersReply> {
    let t = tables(shared)?;
    let name = |s: SwitchIdx| {
        t.switches
            .get(usize::from(s))
            .map(|s| s.name.clone())
            .unwrap_or_default()
    };
    let mut routers: Vec<Router> = t
        .routers
        .iter()
        .map(|r| Router {
            name: r.name.clone(),
            mac: r.mac,
            switches: r.switches.iter().map(|&s| name(s)).collect(),
            routes: r
                .routes
                .iter()
                .map(|rt| Route {
                    prefix: rt.prefix,
                    switch: name(rt.switch),
                    next_hop: rt.next_hop,
                    kind: if rt.next_hop.is_some() {
                        RouteKind::Static
                    } else {
                        RouteKind::Connected
                    },
                })
                .chain(
                    t.edge
                        .filter(|_| r.to_edge)
                        .and_then(|e| t.teps.get(usize::from(e.tep)))
                        .map(|tep| Route {
                            prefix: ipnet::Ipv4Net::default(),
                            switch: "transit".into(),
                            next_hop: Some(tep.ip),
                            kind: RouteKind::Edge,
                        }),
                )
                .collect(),
        })
        .collect();
    if let Some(t0) = &t.tier0 {
        use datapath::tables::{T0Hop, T0Origin};
        routers.push(Router {
            name: t0.name.clone(),
            mac: t0.mac,
            switches: vec!["uplink".into(), "downlink".into(), "health-check".into()],
            routes: t0
                .routes
                .iter()
                .map(|rt| {
                    let (switch, next_hop) = match rt.hop {
                        T0Hop::Uplink(nh) => ("uplink".to_string(), nh),
                        T0Hop::Downlink(nh) => ("downlink".to_string(), nh),
                        T0Hop::Probe => ("health-check".to_string(), None),
                        T0Hop::Tier1(ri) => (
                            t.routers
                                .get(usize::from(ri))
                                .map(|r| r.name.clone())
                                .unwrap_or_default(),
                            None,
                        ),
                    };
                    Route {
                        prefix: rt.prefix,
                        switch,
                        next_hop,
                        kind: match rt.origin {
                            // The checkers' address: connected on their port.
                            T0Origin::Connected | T0Origin::HealthCheck => RouteKind::Connected,
                            T0Origin::Static => RouteKind::Static,
                            T0Origin::Default => RouteKind::Default,
                            T0Origin::Tier1 => RouteKind::Tier1,
                        },
                    }
                })
                .collect(),
        });
    }
    Ok(RoutersReply { routers })
}

/// A switch named by its name or VNI (a JSON number, or a string in
/// decimal or `0x` hex).
fn resolve_switch(t: &Tables, r: &SwitchRef) -> Answer<SwitchIdx> {
    let by_name = match r {
        SwitchRef::Name(s) => t
            .switches
            .iter()
            .position(|sw| sw.name == *s)
            .and_then(|i| SwitchIdx::try_from(i).ok()),
        SwitchRef::Vni(_) => None,
    };
    by_name
        .or_else(|| r.vni().and_then(|vni| t.switch_by_vni(vni)))
        .ok_or_else(|| {
            let known: Vec<&str> = t.switches.iter().map(|s| s.name.as_str()).collect();
            ApiError::UnknownSwitch {
                switch: r.to_string(),
                known: known.join(", "),
            }
        })
}

fn arp_table(shared: &Shared, switch: Option<&SwitchRef>) -> Answer<ArpTableReply> {
    let t = tables(shared)?;
    let only = switch.map(|s| resolve_switch(&t, s)).transpose()?;
    let wanted = |s: SwitchIdx| only.is_none_or(|o| o == s);
    let mut entries: Vec<ArpEntry> = Vec::new();
    for (si, ip, n) in t.arp_table() {
        let Some(sw) = t.switches.get(usize::from(si)).filter(|_| wanted(si)) else {
            continue;
        };
        let (location, tep_ip) = location(&t, n.at);
        entries.push(ArpEntry {
            switch: sw.name.clone(),
            vni: sw.vni,
            ip,
            mac: n.mac,
            location,
            tep_ip,
        });
    }
    for (i, sw) in t.switches.iter().enumerate() {
        let Ok(si) = SwitchIdx::try_from(i) else {
            continue;
        };
        if let Some(r) = t.router_of(si).filter(|_| wanted(si)) {
            entries.push(ArpEntry {
                switch: sw.name.clone(),
                vni: sw.vni,
                ip: sw.gateway_ip,
                mac: r.mac,
                location: agent_api::Location::Router,
                tep_ip: None,
            });
        }
    }
    entries.sort_by_key(|e| (e.vni, e.ip));
    Ok(ArpTableReply { entries })
}

// --- interfaces ---------------------------------------------------------------

/// Where the kernel lists the interfaces of the agent's namespace.
const SYS_CLASS_NET: &str = "/sys/class/net";

/// The agent's interfaces for its mode: (name, role, netns).
fn interface_roles(
    host: &HostSettings,
    mode: Mode,
) -> Vec<(String, agent_api::Role, Option<String>)> {
    use agent_api::Role;
    let mut v = vec![
        (host.nic.clone(), Role::Nic, None),
        (host.vtep_if.clone(), Role::Vtep, None),
    ];
    if mode == Mode::Overlay {
        v.push((
            host.overlay_if.clone(),
            Role::Overlay,
            Some(host.netns.clone()),
        ));
        v.push((host.overlay_peer.clone(), Role::OverlayPeer, None));
    } else if mode == Mode::Edge {
        v.push((host.uplink.clone(), Role::Uplink, None));
    } else {
        v.push((host.fw_if.clone(), Role::Fw, None));
        v.push((host.fw_peer.clone(), Role::FwPeer, None));
    }
    v
}

/// An interface with no facts (absent, or in another namespace).
fn blank(name: &str, role: agent_api::Role, netns: Option<String>) -> Interface {
    Interface {
        name: name.into(),
        role,
        netns,
        mac: None,
        mtu: None,
        ipv4: Vec::new(),
        state: LinkState::Absent,
        rx_packets: None,
        rx_bytes: None,
        tx_packets: None,
        tx_bytes: None,
    }
}

/// One interface of the agent's namespace, from sysfs under `root`;
/// `None` when it does not exist.
fn sys_interface(root: &Path, name: &str, role: agent_api::Role) -> Option<Interface> {
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
    Some(Interface {
        mac: read("address"),
        mtu: read("mtu").and_then(|s| s.parse().ok()),
        state: if up { LinkState::Up } else { LinkState::Down },
        rx_packets: num("statistics/rx_packets"),
        rx_bytes: num("statistics/rx_bytes"),
        tx_packets: num("statistics/tx_packets"),
        tx_bytes: num("statistics/tx_bytes"),
        ..blank(name, role, None)
    })
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

fn interfaces(shared: &Shared, root: &Path) -> Answer<InterfacesReply> {
    let (host, mode, overlay, prefix_len) = {
        let st = shared
            .status
            .lock()
            .map_err(|_| ApiError::Unavailable("status"))?;
        let prefix_len = st
            .tables
            .port
            .and_then(|p| st.tables.switches.get(usize::from(p.switch)))
            .map(|s| s.subnet.prefix_len());
        (
            st.config.host.clone(),
            st.mode(),
            st.overlay.clone(),
            prefix_len,
        )
    };
    let addrs = ipv4_addresses();
    let roles = interface_roles(&host, mode);
    let mut interfaces = Vec::new();
    for (name, role, netns) in &roles {
        let row = match netns {
            // In another namespace: what the agent configured, and the
            // state of its veth peer (a veth has carrier only while both
            // ends are up).
            Some(_) => {
                let peer = roles
                    .iter()
                    .find(|(_, r, _)| *r == agent_api::Role::OverlayPeer)
                    .and_then(|(n, r, _)| sys_interface(root, n, *r));
                let state = match &peer {
                    None => LinkState::Absent,
                    Some(p) if p.state == LinkState::Up => LinkState::Up,
                    Some(_) => LinkState::Down,
                };
                Interface {
                    mac: overlay.as_ref().map(|o| o.mac.to_string()),
                    mtu: overlay.as_ref().map(|o| o.mtu),
                    ipv4: match (&overlay, prefix_len) {
                        (Some(o), Some(len)) => vec![format!("{}/{len}", o.ip)],
                        _ => Vec::new(),
                    },
                    state,
                    ..blank(name, *role, netns.clone())
                }
            }
            None => match sys_interface(root, name, *role) {
                Some(i) => Interface {
                    ipv4: addrs.get(name).cloned().unwrap_or_default(),
                    ..i
                },
                None => blank(name, *role, None),
            },
        };
        interfaces.push(row);
    }
    Ok(InterfacesReply { interfaces })
}

// --- trace ----------------------------------------------------------------------

/// How long a trace may wait for the datapath thread.
const TRACE_TIMEOUT: Duration = Duration::from_secs(2);

/// The datapath's trace input for a request, for an agent in `mode`.
fn trace_input(
    mode: Mode,
    from: TraceFrom,
    frame: Vec<u8>,
    src_tep: Option<Ipv4Addr>,
    vni: Option<u32>,
) -> Answer<TraceInput> {
    let tunnel = src_tep.is_some() || vni.is_some();
    match (from, mode) {
        (TraceFrom::Port, _) => {
            if tunnel {
                return Err(ApiError::TraceArgs(
                    "src_tep and vni are only for from \"underlay\"",
                ));
            }
            Ok(TraceInput::Port(frame))
        }
        (TraceFrom::Underlay, Mode::Overlay | Mode::Edge) => {
            let (Some(src_tep), Some(vni)) = (src_tep, vni) else {
                return Err(ApiError::TraceArgs(
                    "from \"underlay\" needs src_tep (the sending endpoint's underlay IP) and vni",
                ));
            };
            Ok(TraceInput::Underlay {
                src_tep,
                vni,
                frame,
            })
        }
        (TraceFrom::Underlay, Mode::MicroSegmentation) => {
            if tunnel {
                return Err(ApiError::TraceArgs(
                    "this agent runs micro-segmentation: from \"underlay\" is a frame \
                     as the NIC receives it, without src_tep or vni",
                ));
            }
            Ok(TraceInput::Nic(frame))
        }
    }
}

async fn trace(
    shared: &Shared,
    from: TraceFrom,
    frame: Vec<u8>,
    src_tep: Option<Ipv4Addr>,
    vni: Option<u32>,
) -> Answer<agent_api::TraceReply> {
    let mode = match shared.status.lock() {
        Ok(st) => st.mode(),
        Err(_) => return Err(ApiError::Unavailable("status")),
    };
    let input = trace_input(mode, from, frame.clone(), src_tep, vni)?;
    let reply = ask(
        shared,
        |reply| Ctl::Trace(TraceRequest { input, reply }),
        TRACE_TIMEOUT,
    )
    .await;
    match reply {
        Ok(Ok(r)) => Ok(render_trace(r, from, &frame)),
        Ok(Err(e)) => Err(e.into()),
        Err(e) => Err(e),
    }
}

fn verdict_name(v: Verdict) -> &'static str {
    match v {
        Verdict::Delivered => "delivered",
        Verdict::Forwarded => "forwarded",
        Verdict::Encapsulated { .. } => "encapsulated",
        Verdict::Replied => "replied",
        Verdict::Absorbed => "absorbed",
        Verdict::Drop(_) => "dropped",
    }
}

fn render_trace(
    r: crate::dp::ctl::TraceReply,
    from: TraceFrom,
    frame: &[u8],
) -> agent_api::TraceReply {
    use crate::dp::ctl::TraceReply as Dp;
    let from = from.name().to_string();
    match r {
        Dp::Walked(t) => agent_api::TraceReply {
            from,
            packet: t.packet,
            steps: t
                .steps
                .into_iter()
                .map(|s| TraceStep {
                    layer: s.layer.name().into(),
                    result: s.result.name().into(),
                    detail: s.detail,
                })
                .collect(),
            verdict: verdict_name(t.verdict).into(),
            drop_reason: match t.verdict {
                Verdict::Drop(r) => Some(r.name().into()),
                _ => None,
            },
            firewall_drop_reason: t.firewall_drop.map(|r| r.name().into()),
            outputs: t
                .outputs
                .into_iter()
                .map(|o| TraceOutput {
                    kind: o.kind.name().into(),
                    dst: o.dst,
                    vni: o.vni,
                    len: o.len as u64,
                    summary: o.summary,
                })
                .collect(),
        },
        Dp::NotForHost(e) => agent_api::TraceReply {
            from,
            packet: datapath::trace::summarize(frame),
            steps: vec![TraceStep {
                layer: "nic".into(),
                result: "done".into(),
                detail: e.to_string(),
            }],
            verdict: "dropped".into(),
            drop_reason: Some(DropReason::NotForPort.name().into()),
            firewall_drop_reason: None,
            outputs: vec![],
        },
    }
}

// --- capture --------------------------------------------------------------------

/// Extra wait beyond a capture's own timeout (the datapath thread checks
/// its deadline once per poll round).
const CAPTURE_GRACE: Duration = Duration::from_secs(3);
/// pcap link types of the frames a capture returns.
const LINKTYPE_ETHERNET: u32 = 1;
const LINKTYPE_RAW: u32 = 101;

/// Where the datapath captures for `point`, and the point's normalized name.
fn capture_point(t: &Tables, point: &agent_api::CapturePoint) -> Answer<(CapturePoint, String)> {
    Ok(match point {
        agent_api::CapturePoint::Port => (CapturePoint::Port, "port".into()),
        agent_api::CapturePoint::Underlay => (CapturePoint::Underlay, "underlay".into()),
        agent_api::CapturePoint::Switch(sw) => {
            let si = resolve_switch(t, &SwitchRef::Name(sw.clone()))?;
            let sw = t
                .switches
                .get(usize::from(si))
                .ok_or(ApiError::SwitchVanished)?;
            (CapturePoint::Switch(sw.vni), format!("switch:{}", sw.name))
        }
    })
}

async fn capture(
    shared: &Shared,
    point: &agent_api::CapturePoint,
    count: Option<u32>,
    timeout_ms: Option<u32>,
    snaplen: Option<u32>,
    cancel: &Arc<AtomicBool>,
) -> Answer<CaptureReply> {
    use agent_api::request::capture as limits;
    let t = tables(shared)?;
    let (point, name) = capture_point(&t, point)?;
    let count = usize::try_from(count.unwrap_or(limits::COUNT_DEFAULT))
        .map_err(|_| ApiError::OutOfRange("count"))?;
    let timeout =
        Duration::from_millis(u64::from(timeout_ms.unwrap_or(limits::TIMEOUT_MS_DEFAULT)));
    let snaplen = usize::try_from(snaplen.unwrap_or(limits::SNAPLEN_DEFAULT))
        .map_err(|_| ApiError::OutOfRange("snaplen"))?;
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
        Ok(Ok(r)) => Ok(render_capture(&r, name)),
        Ok(Err(e)) => Err(e.into()),
        Err(e) => Err(e),
    }
}

fn render_capture(r: &capture::CaptureReply, point: String) -> CaptureReply {
    let linktype = match r.point {
        CapturePoint::Underlay => LINKTYPE_RAW,
        CapturePoint::Port | CapturePoint::Switch(_) => LINKTYPE_ETHERNET,
    };
    CaptureReply {
        point,
        linktype,
        ended: r.ended.name().into(),
        frames: r
            .records
            .iter()
            .map(|f| CapturedFrame {
                ts_ns: f.ts_unix_ns,
                dir: f.dir.name().into(),
                point: f.at.name().into(),
                orig_len: f.orig_len as u64,
                data_hex: agent_api::hex::encode(r.data(f)),
            })
            .collect(),
        truncated: r.truncated,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::path::PathBuf;
    use std::sync::mpsc::channel;

    use control::{InstanceConfig, LocalPort, LogicalRouter, LogicalSwitch, MacAddr, RemotePort};
    use datapath::{LocalHost, Pipeline};
    use serde_json::json;

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
                    dhcp: None,
                },
                LogicalSwitch {
                    name: "ls-app".into(),
                    vni: 0x2388,
                    subnet: "192.168.99.0/24".parse().unwrap(),
                    gateway_ip: "192.168.99.1".parse().unwrap(),
                    dhcp: None,
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
            ..InstanceConfig::default()
        };
        let host = LocalHost {
            underlay_ip: UNDERLAY,
            port_mac: VM1_MAC,
            overlay_mtu: 1442,
            kernel_udp: true,
            underlay_prefix_len: 24,
            underlay_mac: VM1_MAC,
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
                        Ctl::Lb(r) => {
                            let _ = r.reply.send(r.query.is_none().then(lb_view));
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
                    mac: VM1_MAC,
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
            checks: None,
        }
    }

    /// The fake datapath's load balancer: no virtual server, 5 drops.
    fn lb_view() -> agent_api::LoadBalancersReply {
        agent_api::LoadBalancersReply {
            role: "distributed".into(),
            services: Vec::new(),
            connections: 3,
            capacity: 100,
            drops: [("no_server".to_string(), 5)].into(),
        }
    }

    #[test]
    fn the_edge_gives_each_checked_server_its_last_result() {
        let rs = |ip: &str, port| agent_api::LbRealServerView {
            ip: ip.parse().unwrap(),
            port,
            forward: "Masq".into(),
            weight: 1,
            config_weight: 1,
            state: "up".into(),
            active: 0,
            inactive: 0,
            stats: Default::default(),
            rates: Default::default(),
            checker: None,
            check: None,
        };
        let mut reply = agent_api::LoadBalancersReply {
            services: vec![agent_api::LbServiceView {
                protocol: "TCP".into(),
                vip: "10.64.1.2".parse().unwrap(),
                port: 10000,
                scheduler: "rr".into(),
                kind: "nat".into(),
                persistence_timeout: None,
                persistence_mask: None,
                quorum_lost: false,
                sorry_server: None,
                stats: Default::default(),
                rates: Default::default(),
                real_servers: vec![rs("192.168.1.100", 8089), rs("192.168.1.101", 18089)],
                persistence: Vec::new(),
            }],
            ..lb_view()
        };
        let key = |port| control::lb::HealthKey {
            protocol: control::lb::LbProtocol::Tcp,
            vip: "10.64.1.2".parse().unwrap(),
            port,
            real_ip: "192.168.1.101".parse().unwrap(),
            real_port: 18089,
        };
        let view = |port| lb::health::CheckView {
            key: key(port),
            kind: "HTTP_GET",
            liveness: control::lb::Liveness::Down,
            last_result: Some("status 404".into()),
            last_check_age: Some(Duration::from_millis(1500)),
            failures: 2,
            transitions: 1,
            running: false,
        };
        // The same real server behind another port is another checker.
        add_checks(&mut reply, &[view(10001), view(10000)]);
        let servers = &reply.services[0].real_servers;
        assert_eq!(servers[0].check, None, "not checked");
        let c = servers[1].check.as_ref().expect("checked");
        assert_eq!(
            (c.liveness.as_str(), c.last_result.as_deref()),
            ("down", Some("status 404"))
        );
        assert_eq!((c.last_check_ms_ago, c.failures), (Some(1500), 2));
    }

    #[tokio::test]
    async fn a_scrape_asks_the_datapath_for_the_load_balancer() {
        let s = shared("overlay", true);
        let scrape = metrics::collect(&s).await;
        assert_eq!(scrape.lb, Some(lb_view()), "the whole view, asked");
        let text = metrics::render(scrape).expect("render");
        assert!(
            text.contains("nsx_agent_lb_drops_total{reason=\"no_server\"} 5"),
            "{text}"
        );
        // No datapath to ask: no load balancer families.
        let text =
            metrics::render(metrics::collect(&shared("overlay", false)).await).expect("render");
        assert!(!text.contains("nsx_agent_lb_"), "{text}");
    }

    async fn answer(line: &str, s: &Shared) -> Value {
        serde_json::from_str(&answer_cancellable(line, s, &Arc::default()).await).unwrap()
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
        for (c, _) in agent_api::COMMANDS {
            let v = cmd(&s, c, json!({})).await;
            assert_ne!(v["error"], "command not implemented", "{c}");
        }
    }

    #[tokio::test]
    async fn status_shows_the_gateway_by_name_and_the_address_reached() {
        let mut s = shared("overlay", false);
        {
            let mut st = s.status.lock().unwrap();
            st.config.gateway = Some(
                toml::from_str(
                    "control = \"10.99.3.2:5555\"\nenroll = \"10.99.3.2:8443\"\n\
                     ca = \"/ca.pem\"\nbootstrap_key = \"/b.key\"",
                )
                .unwrap(),
            );
        }
        s.gateway = Some(Arc::new(Mutex::new(Some(GatewayStatus {
            state: "ESTABLISHED".into(),
            peer: "10.99.3.2:5555".into(),
            name: None,
            address: Some("10.99.3.2:5555".into()),
            since_unix: 1_513_920_138,
            last_error: None,
            applied_version: Some(3),
            protocol_version: Some(1),
        }))));
        let v = cmd(&s, "status", json!({})).await;
        assert_eq!(v["gateway"]["name"], "nsx-gw.vmware.local:5555", "{v}");
        assert_eq!(v["gateway"]["address"], "10.99.3.2:5555");
        assert_eq!(v["gateway"]["peer"], "10.99.3.2:5555", "unchanged");
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
    async fn dhcp_shows_each_switchs_server_and_the_ports_lease() {
        let s = shared("overlay", false);
        let v = cmd(&s, "dhcp", json!({})).await;
        let servers: Vec<(&str, &str, u64)> = v["servers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["switch"].as_str().unwrap(),
                    r["server_id"].as_str().unwrap(),
                    r["lease_time"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            servers,
            [
                ("ls-web", "192.168.100.1", 86_400),
                ("ls-app", "192.168.99.1", 86_400)
            ],
            "{v}"
        );
        assert_eq!(v["servers"][0]["subnet_mask"], "255.255.255.0");
        assert_eq!(v["servers"][0]["router"], "192.168.100.1");
        let lease = &v["leases"][0];
        assert_eq!(lease["ip"], "192.168.100.3", "{v}");
        assert_eq!(lease["state"], "free", "nothing acknowledged yet");
        assert_eq!(lease["expires_in_s"], Value::Null);
        // Only the switch asked for; the port is not on ls-app.
        let v = cmd(&s, "dhcp", json!({"switch": "ls-app"})).await;
        assert_eq!(v["servers"].as_array().unwrap().len(), 1);
        assert_eq!(v["leases"], json!([]));
        let v = cmd(&s, "dhcp", json!({"switch": "nope"})).await;
        assert!(v["error"].as_str().unwrap().contains("nope"), "{v}");
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
        let v = serde_json::to_value(interfaces(&s, &root).unwrap()).unwrap();
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
        let v =
            serde_json::to_value(interfaces(&s, Path::new("/nonexistent/nsx")).unwrap()).unwrap();
        let states: Vec<&Value> = v["interfaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| &r["state"])
            .collect();
        assert!(states.iter().all(|s| **s == "absent"), "{states:?}");

        let s = shared("micro-segmentation", false);
        let v =
            serde_json::to_value(interfaces(&s, Path::new("/nonexistent/nsx")).unwrap()).unwrap();
        let roles: Vec<&str> = v["interfaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["role"].as_str().unwrap())
            .collect();
        assert_eq!(roles, ["nic", "vtep", "fw", "fw-peer"]);
        assert!(
            sys_interface(Path::new("/sys/class/net"), "../etc", agent_api::Role::Nic).is_none()
        );
    }

    fn icmp_frame() -> String {
        // vm1 -> vm3 echo request, as the seed's ping.
        let mut f = vec![0u8; 14 + 20 + 8];
        geneve::ethernet::emit_header(&mut f, VM3_MAC.0, VM1_MAC.0, 0x0800).unwrap();
        geneve::ipv4::emit_header(&mut f[14..], VM1_IP, VM3_IP, 1, 8, 64, true, 1).unwrap();
        f[34] = 8;
        agent_api::hex::encode(&f)
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
                "dhcp",
                "firewall",
                "responder",
                "switch",
                "router",
                "encap"
            ]
        );
        assert_eq!(v["steps"][6]["detail"], "vni 0x238c to 10.99.3.44 (tep 44)");
        assert_eq!(v["steps"][6]["result"], "done");
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
        let hex = agent_api::hex::encode(&f).to_uppercase();
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
            json!({"from": "underlay", "frame_hex": agent_api::hex::encode(&f), "src_tep": "10.99.3.7",
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
}
