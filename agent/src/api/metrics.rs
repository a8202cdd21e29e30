//! The agent's Prometheus endpoint: `GET /metrics` on `[host]
//! metrics_listen` (default `127.0.0.1:9464`, loopback; `""` turns it off),
//! OpenMetrics text (`application/openmetrics-text; version=1.0.0`), which
//! Prometheus scrapes natively.
//!
//! Nothing is counted here: every scrape copies the counters the datapath
//! thread publishes every 200 ms ([`crate::dp::ctl::Published`]), the
//! gateway connection's status and the sshd supervisor's status
//! ([`crate::host::sshd`], `ssh` in `ctl status`), and asks the datapath thread for the
//! firewall's rule hits and the load balancer's view (the same bounded
//! queries as the API's `firewall-stats` and `load-balancers`), then renders them through a [`prometheus_client`]
//! [`Collector`] built for that scrape. So the packet path pays nothing for
//! metrics, label sets that disappear (a removed tunnel or rule) disappear
//! from the output, and counters are the datapath's own cumulative values
//! (they restart from 0 when the plumbing is rebuilt for a mode change,
//! which Prometheus treats as a counter reset). Values are at most one
//! publish period (200 ms) old; firewall and load balancer values are live.
//!
//! Metric families (all `nsx_agent_*`, every one with `# HELP` and `# TYPE`;
//! counters carry the `_total` suffix in samples):
//!
//! | family | type | labels |
//! |---|---|---|
//! | `nsx_agent_build_info` | info | `version` |
//! | `nsx_agent_mode` | gauge (1 = current) | `mode` = `overlay` \| `micro-segmentation` |
//! | `nsx_agent_uptime_seconds` | gauge | |
//! | `nsx_agent_config_version` | gauge | (the config the datapath runs) |
//! | `nsx_agent_port_packets`, `nsx_agent_port_bytes` | counter | `direction` = `rx` (from the instance) \| `tx` (to it) |
//! | `nsx_agent_underlay_packets`, `nsx_agent_underlay_bytes` | counter | `direction` |
//! | `nsx_agent_tunnel_packets`, `nsx_agent_tunnel_bytes` | counter | `tep_ip`, `tep_id`, `direction` |
//! | `nsx_agent_tunnel_last_rx_age_seconds` | gauge | `tep_ip`, `tep_id` (endpoints heard from) |
//! | `nsx_agent_drops` | counter | `reason` (every pipeline drop reason, zeros included) |
//! | `nsx_agent_layer_frames` | counter | `layer`, `result` = `seen` \| `passed` \| `handled` \| `dropped` |
//! | `nsx_agent_io_events` | counter | `event` (the I/O shell's counters) |
//! | `nsx_agent_firewall_enabled`, `nsx_agent_firewall_stats_ok`, `nsx_agent_firewall_policy_loaded` | gauge | |
//! | `nsx_agent_firewall_rule_packets`, `_bytes`, `_sessions` | counter | `rule_id`, `ruleset` |
//! | `nsx_agent_firewall_drops` | counter | `reason` (every firewall drop reason) |
//! | `nsx_agent_firewall_conntrack_entries`, `nsx_agent_firewall_conntrack_capacity` | gauge | |
//! | `nsx_agent_firewall_{management,fast_path,related}_packets`, `nsx_agent_firewall_rejects`, `nsx_agent_firewall_recheck_removed`, `nsx_agent_firewall_log_rate_limited` | counter | |
//! | `nsx_agent_gateway_configured`, `nsx_agent_gateway_connected` | gauge (0/1) | |
//! | `nsx_agent_gateway_state` | gauge (1 = current) | `state` = `CONNECTING` \| `HELLO_SENT` \| `ESTABLISHED` \| `CLOSED` |
//! | `nsx_agent_gateway_state_since_seconds` | gauge (Unix time) | |
//! | `nsx_agent_gateway_applied_config_version`, `nsx_agent_gateway_protocol_version` | gauge | (once known) |
//! | `nsx_agent_ssh_enabled` | gauge (0/1) | (overlay mode with an sshd binary and a port configured; 0 while the supervisor has not looked yet) |
//! | `nsx_agent_sshd_up` | gauge (0/1: running and listening) | `listener` = `underlay` \| `overlay` (configured ones, port != 0, while enabled) |
//! | `nsx_agent_sshd_restarts` | counter | `listener` (as `nsx_agent_sshd_up`) |
//! | `nsx_agent_ssh_port22_blocked` | gauge (0/1) | (the underlay port-22 refusal table is in place) |
//!
//! The server is hyper through [`bounded_http::serve_one`]: one request per
//! connection (`Connection: close`), request head at most [`MAX_HEAD`]
//! bytes (431), read within [`READ_TIMEOUT`] (408), malformed ones 400,
//! the answer written within [`WRITE_TIMEOUT`], at most [`MAX_CONNECTIONS`]
//! at once (more are closed at once). `GET /metrics` only: other paths get
//! 404, other methods 405; a request body is never read.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bounded_http::{Limits, Request, Response, serve_one};
use datapath::{Counters, DropReason, LayerId};
use metrics_text::{Emit, Labels};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use crate::api::{self, Shared};
use crate::config::HostSettings;
use crate::dp::fwctl::{FwQuery, FwReply};
use crate::host::sshd::{SshStatus, SshdStatus};
use agent_api::FirewallStats;
use agent_api::GatewayStatus;
use agent_api::IoCounters;

/// Largest request head accepted (request line and headers).
pub const MAX_HEAD: usize = 8 * 1024;
/// Time allowed to read a request head.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed to write a response.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more are closed without an answer.
pub const MAX_CONNECTIONS: usize = 8;
/// The endpoint's HTTP limits: no request body is read (a scrape has
/// none); the whole answer is written within [`WRITE_TIMEOUT`].
pub const LIMITS: Limits = Limits {
    max_head: MAX_HEAD,
    max_body: None,
    read_timeout: READ_TIMEOUT,
    write_timeout: WRITE_TIMEOUT,
    stall_timeout: WRITE_TIMEOUT,
};
/// The media type of the text [`prometheus_client`] encodes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The gateway connection states (`GatewayStatus::state`).
const GATEWAY_STATES: [&str; 4] = ["CONNECTING", "HELLO_SENT", "ESTABLISHED", "CLOSED"];
/// The agent's modes (`Status::mode`).
const MODES: [&str; 3] = ["overlay", "micro-segmentation", "edge"];
/// The sshd supervisor's listeners (`SshStatus::underlay`, `::overlay`).
const SSH_LISTENERS: [&str; 2] = ["underlay", "overlay"];

/// The gateway connection as a scrape sees it.
#[derive(Debug, Clone)]
pub enum GatewayView {
    /// No `[gateway]` section: the desired state is the config file's.
    NotConfigured,
    /// Configured; `None` until the control client published a first state.
    Configured(Option<GatewayStatus>),
}

/// The firewall as a scrape sees it.
#[derive(Debug, Clone)]
pub enum FirewallView {
    /// No firewall in this configuration.
    Off,
    /// The datapath thread did not answer (stopping, busy past the bounded wait).
    Unavailable,
    Stats(Box<FirewallStats>),
}

/// Everything one scrape reports, copied out of the agent's shared state.
#[derive(Debug, Clone)]
pub struct Scrape {
    pub version: &'static str,
    pub mode: &'static str,
    pub uptime_s: f64,
    /// The pipeline clock now (ns since the agent started), for tunnel ages.
    pub now_ns: u64,
    pub config_version: u64,
    pub counters: Counters,
    pub io: IoCounters,
    pub gateway: GatewayView,
    pub firewall: FirewallView,
    /// Overlay mode's sshd supervisor (`ssh` in `ctl status`).
    pub ssh: SshStatus,
    /// The edge's NAT (published with the counters; `None` off the edge).
    pub nat: Option<agent_api::NatSummary>,
    /// The load balancer, asked for this scrape (`None` without virtual
    /// servers, or when the datapath thread did not answer).
    pub lb: Option<agent_api::LoadBalancersReply>,
}

/// Copies the current state for one scrape (asks the datapath thread for
/// the firewall's statistics, bounded by the API's query timeout).
pub async fn collect(shared: &Shared) -> Scrape {
    let (counters, io, config_version, nat) = match shared.published.lock() {
        Ok(s) => (s.counters.clone(), s.io, s.config_version, s.nat.clone()),
        Err(_) => (Counters::default(), IoCounters::default(), 0, None),
    };
    let mode = shared.status.lock().map_or("overlay", |st| st.mode);
    let gateway = match &shared.gateway {
        None => GatewayView::NotConfigured,
        Some(g) => GatewayView::Configured(g.lock().ok().and_then(|g| g.clone())),
    };
    let ssh = shared
        .ssh
        .lock()
        .map_or_else(|_| SshStatus::off("status unavailable"), |s| s.clone());
    let firewall = match api::query(shared, FwQuery::Stats).await {
        Ok(FwReply::Stats(s)) => FirewallView::Stats(s),
        Ok(FwReply::Off) => FirewallView::Off,
        Ok(_) => FirewallView::Unavailable,
        Err(e) => {
            tracing::debug!("metrics: firewall statistics unavailable: {e}");
            FirewallView::Unavailable
        }
    };
    let lb = api::lb_query(shared, None).await.unwrap_or_else(|e| {
        tracing::debug!("metrics: load balancer statistics unavailable: {e}");
        None
    });
    let elapsed = shared.started.elapsed();
    Scrape {
        version: env!("CARGO_PKG_VERSION"),
        mode,
        uptime_s: elapsed.as_secs_f64(),
        now_ns: u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX),
        config_version,
        counters,
        io,
        gateway,
        firewall,
        ssh,
        nat,
        lb,
    }
}

/// The load balancer's families: per virtual server (`vip` =
/// `10.64.1.2:10000`, `protocol` = `TCP`) and real server (`real_server` = `ip:port`,
/// empty for the virtual server's totals): connections, packets and bytes
/// by direction (in = from clients, out = from real servers), the
/// connections held now (active / inactive), and drops by reason. The
/// label sets are bounded by the configuration.
fn lb_families(e: &mut Emit<'_, '_>, lb: &agent_api::LoadBalancersReply) -> fmt::Result {
    let mut conns = Vec::new();
    let mut packets = Vec::new();
    let mut bytes = Vec::new();
    let mut held = Vec::new();
    for sv in &lb.services {
        let vip = format!("{}:{}", sv.vip, sv.port);
        let rows = std::iter::once((String::new(), &sv.stats, None)).chain(
            sv.real_servers
                .iter()
                .map(|r| (format!("{}:{}", r.ip, r.port), &r.stats, Some(r))),
        );
        for (rs, st, r) in rows {
            let l = |extra: Option<(&'static str, &str)>| {
                let mut l = vec![
                    ("vip", vip.clone()),
                    ("protocol", sv.protocol.clone()),
                    ("real_server", rs.clone()),
                ];
                if let Some((k, v)) = extra {
                    l.push((k, v.to_string()));
                }
                l
            };
            conns.push((l(None), st.conns));
            packets.push((l(Some(("direction", "in"))), st.in_packets));
            packets.push((l(Some(("direction", "out"))), st.out_packets));
            bytes.push((l(Some(("direction", "in"))), st.in_bytes));
            bytes.push((l(Some(("direction", "out"))), st.out_bytes));
            if let Some(r) = r {
                held.push((l(Some(("state", "active"))), r.active));
                held.push((l(Some(("state", "inactive"))), r.inactive));
            }
        }
    }
    e.counters(
        "nsx_agent_lb_connections",
        "Connections the load balancer scheduled, per virtual server (real_server empty: its total) and real server.",
        &conns,
    )?;
    e.counters(
        "nsx_agent_lb_packets",
        "Packets of balanced connections: in = from clients, out = from real servers.",
        &packets,
    )?;
    e.counters(
        "nsx_agent_lb_bytes",
        "Bytes (IPv4 total length) of balanced connections, as nsx_agent_lb_packets.",
        &bytes,
    )?;
    e.gauges(
        "nsx_agent_lb_open_connections",
        "Connections held per real server: active (ESTABLISHED TCP) and inactive (ipvsadm's ActiveConn / InActConn).",
        &held,
    )?;
    e.counters(
        "nsx_agent_lb_drops",
        "Packets to virtual servers the load balancer dropped, by reason.",
        &lb.drops
            .iter()
            .map(|(r, n)| (vec![("reason", r.clone())], *n))
            .collect::<Vec<_>>(),
    )
}

/// Renders a scrape as OpenMetrics text (ends with `# EOF`).
pub fn render(scrape: Scrape) -> Result<String, fmt::Error> {
    metrics_text::render(AgentCollector(scrape))
}

fn flag(b: bool) -> u64 {
    u64::from(b)
}

/// The per-scrape collector: owns its copy of the state.
#[derive(Debug)]
struct AgentCollector(Scrape);

impl Collector for AgentCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let s = &self.0;
        let c = &s.counters;
        let mut e = Emit(&mut encoder);
        e.info(
            "nsx_agent_build",
            "The agent binary (always 1).",
            &vec![("version", s.version.to_string())],
        )?;
        let modes: Vec<(Labels, u64)> = MODES
            .iter()
            .map(|m| (vec![("mode", m.to_string())], flag(*m == s.mode)))
            .collect();
        e.gauges(
            "nsx_agent_mode",
            "The agent's mode (1 for the current one).",
            &modes,
        )?;
        e.gauge(
            "nsx_agent_uptime_seconds",
            "Seconds since the agent started.",
            s.uptime_s,
        )?;
        e.gauge(
            "nsx_agent_config_version",
            "Version of the config the datapath runs.",
            s.config_version,
        )?;

        // Port, underlay, tunnels.
        let dir = |rx: u64, tx: u64| -> Vec<(Labels, u64)> {
            vec![
                (vec![("direction", "rx".to_string())], rx),
                (vec![("direction", "tx".to_string())], tx),
            ]
        };
        e.counters(
            "nsx_agent_port_packets",
            "Frames of the instance's overlay port: rx = received from the instance, tx = delivered to it (replies included).",
            &dir(c.port_rx.packets, c.port_tx.packets),
        )?;
        e.counters(
            "nsx_agent_port_bytes",
            "Bytes of the instance's overlay port (Ethernet frames), by direction.",
            &dir(c.port_rx.bytes, c.port_tx.bytes),
        )?;
        let dhcp: Vec<(Labels, u64)> = c
            .dhcp
            .by_type()
            .iter()
            .map(|(t, n)| (vec![("type", (*t).to_string())], *n))
            .collect();
        e.counters(
            "nsx_agent_dhcp_messages",
            "DHCP messages of the switch's server on the port, by type: discover, request, inform, release, decline, other (received from the instance), offer, ack, nak (sent to it).",
            &dhcp,
        )?;
        if s.mode == "edge" {
            let by_if = |up_rx: u64, up_tx: u64, dn_rx: u64, dn_tx: u64| -> Vec<(Labels, u64)> {
                [
                    ("uplink", "rx", up_rx),
                    ("uplink", "tx", up_tx),
                    ("downlink", "rx", dn_rx),
                    ("downlink", "tx", dn_tx),
                ]
                .into_iter()
                .map(|(i, d, n)| {
                    (
                        vec![("interface", i.to_string()), ("direction", d.to_string())],
                        n,
                    )
                })
                .collect()
            };
            e.counters(
                "nsx_agent_edge_packets",
                "The edge's packets by interface: uplink = plain IP toward the internet (Ethernet frames), downlink = the underlay: Geneve with the instances and plain IP with hosts on the underlay subnet.",
                &by_if(
                    c.port_rx.packets,
                    c.port_tx.packets,
                    c.underlay_rx.packets + c.downlink_rx.packets,
                    c.underlay_tx.packets + c.downlink_tx.packets,
                ),
            )?;
            e.counters(
                "nsx_agent_edge_bytes",
                "The edge's bytes by interface and direction (as nsx_agent_edge_packets).",
                &by_if(
                    c.port_rx.bytes,
                    c.port_tx.bytes,
                    c.underlay_rx.bytes + c.downlink_rx.bytes,
                    c.underlay_tx.bytes + c.downlink_tx.bytes,
                ),
            )?;
        }
        if let Some(n) = &s.nat {
            let one = |k: &'static str, v: &str, n: u64| -> (Labels, u64) {
                (vec![(k, v.to_string())], n)
            };
            e.gauges(
                "nsx_agent_nat_sessions",
                "The edge's NAT sessions, by protocol.",
                &n.by_protocol
                    .iter()
                    .map(|(p, v)| one("protocol", p, *v))
                    .collect::<Vec<_>>(),
            )?;
            e.gauge(
                "nsx_agent_nat_capacity_sessions",
                "Most NAT sessions the edge's table holds.",
                n.capacity,
            )?;
            e.counters(
                "nsx_agent_nat_packets",
                "Packets the edge's NAT translated: out = from the overlay (hairpinned included), in = from the uplink.",
                &[one("direction", "out", n.translated_out), one("direction", "in", n.translated_in)],
            )?;
            e.counters(
                "nsx_agent_nat_drops",
                "Packets the edge's NAT dropped, by reason (exhausted: no free port; table_full: no session slot).",
                &n.drops.iter().map(|(r, v)| one("reason", r, *v)).collect::<Vec<_>>(),
            )?;
            let mut used = Vec::new();
            let mut size = Vec::new();
            let mut failures = Vec::new();
            for p in &n.pools {
                for (proto, v) in &p.used {
                    let l = vec![("snat_ip", p.ip.to_string()), ("protocol", proto.clone())];
                    used.push((l.clone(), *v));
                    size.push((l.clone(), p.size.get(proto).copied().unwrap_or(0)));
                    failures.push((l, p.failures.get(proto).copied().unwrap_or(0)));
                }
            }
            e.gauges(
                "nsx_agent_nat_ports_used",
                "External ports (ICMP: identifiers) held by live mappings, per SNAT address and protocol.",
                &used,
            )?;
            e.gauges(
                "nsx_agent_nat_ports",
                "External ports a SNAT address can hand out, per protocol.",
                &size,
            )?;
            e.counters(
                "nsx_agent_nat_allocation_failures",
                "New mappings refused for want of a free port, per SNAT address and protocol.",
                &failures,
            )?;
        }
        if let Some(lb) = &s.lb {
            lb_families(&mut e, lb)?;
        }
        e.counters(
            "nsx_agent_underlay_packets",
            "Geneve packets on the underlay: rx = received (before validation), tx = built and sent.",
            &dir(c.underlay_rx.packets, c.underlay_tx.packets),
        )?;
        e.counters(
            "nsx_agent_underlay_bytes",
            "Bytes of Geneve packets on the underlay, by direction.",
            &dir(c.underlay_rx.bytes, c.underlay_tx.bytes),
        )?;
        let tunnel = |t: &datapath::TunnelCounters, d: &str| -> Labels {
            vec![
                ("tep_ip", t.tep_ip.to_string()),
                ("tep_id", t.tep_id.to_string()),
                ("direction", d.to_string()),
            ]
        };
        let mut pk = Vec::with_capacity(c.tunnels.len() * 2);
        let mut by = Vec::with_capacity(c.tunnels.len() * 2);
        for t in &c.tunnels {
            pk.push((tunnel(t, "rx"), t.rx.packets));
            pk.push((tunnel(t, "tx"), t.tx.packets));
            by.push((tunnel(t, "rx"), t.rx.bytes));
            by.push((tunnel(t, "tx"), t.tx.bytes));
        }
        e.counters(
            "nsx_agent_tunnel_packets",
            "Geneve packets per remote tunnel endpoint and direction.",
            &pk,
        )?;
        e.counters(
            "nsx_agent_tunnel_bytes",
            "Geneve bytes per remote tunnel endpoint and direction.",
            &by,
        )?;
        let ages: Vec<(Labels, f64)> = c
            .tunnels
            .iter()
            .filter(|t| t.last_rx_ns != 0)
            .map(|t| {
                (
                    vec![
                        ("tep_ip", t.tep_ip.to_string()),
                        ("tep_id", t.tep_id.to_string()),
                    ],
                    s.now_ns.saturating_sub(t.last_rx_ns) as f64 / 1e9,
                )
            })
            .collect();
        e.gauges(
            "nsx_agent_tunnel_last_rx_age_seconds",
            "Seconds since the last packet from each remote tunnel endpoint (endpoints heard from).",
            &ages,
        )?;

        // Drops, layers, I/O.
        let drops: Vec<(Labels, u64)> = DropReason::ALL
            .iter()
            .map(|r| (vec![("reason", r.name().to_string())], c.dropped(*r)))
            .collect();
        e.counters(
            "nsx_agent_drops",
            "Frames the pipeline dropped, by reason (firewall drops are broken down in nsx_agent_firewall_drops_total).",
            &drops,
        )?;
        let mut layers = Vec::with_capacity(LayerId::ALL.len() * 4);
        for l in LayerId::ALL {
            let lc = c.layers.get(l as usize).copied().unwrap_or_default();
            for (result, v) in [
                ("seen", lc.seen),
                ("passed", lc.passed),
                ("handled", lc.handled),
                ("dropped", lc.dropped),
            ] {
                layers.push((
                    vec![("layer", l.name().to_string()), ("result", result.into())],
                    v,
                ));
            }
        }
        e.counters(
            "nsx_agent_layer_frames",
            "Frames each pipeline layer saw, passed on, handled itself (replies, encapsulations, deliveries) or dropped.",
            &layers,
        )?;
        e.counters(
            "nsx_agent_io_events",
            "Counters of the datapath's I/O shell (kernel drops, truncations, failed sends, receive batches, GRO segments).",
            &io_events(&s.io),
        )?;

        // Firewall.
        encode_firewall(&mut e, &s.firewall)?;

        // Control channel.
        let (configured, status) = match &s.gateway {
            GatewayView::NotConfigured => (false, None),
            GatewayView::Configured(st) => (true, st.as_ref()),
        };
        e.gauge(
            "nsx_agent_gateway_configured",
            "1 if the agent takes its desired state from a gateway ([gateway] section).",
            flag(configured),
        )?;
        e.gauge(
            "nsx_agent_gateway_connected",
            "1 while the control channel to the gateway is ESTABLISHED.",
            flag(status.is_some_and(|g| g.state == "ESTABLISHED")),
        )?;
        if configured {
            let current = status.map_or("CONNECTING", |g| g.state.as_str());
            let states: Vec<(Labels, u64)> = GATEWAY_STATES
                .iter()
                .map(|st| (vec![("state", st.to_string())], flag(*st == current)))
                .collect();
            e.gauges(
                "nsx_agent_gateway_state",
                "State of the control channel (1 for the current one).",
                &states,
            )?;
        }
        if let Some(g) = status {
            e.gauge(
                "nsx_agent_gateway_state_since_seconds",
                "Unix time of the control channel's last state change (the connection time when ESTABLISHED).",
                g.since_unix,
            )?;
            if let Some(v) = g.applied_version {
                e.gauge(
                    "nsx_agent_gateway_applied_config_version",
                    "Version of the last gateway config the agent applied (and acked).",
                    v,
                )?;
            }
            if let Some(v) = g.protocol_version {
                e.gauge(
                    "nsx_agent_gateway_protocol_version",
                    "Control protocol version negotiated with the gateway.",
                    u64::from(v),
                )?;
            }
        }

        // Overlay mode's sshds.
        encode_ssh(&mut e, &s.ssh)
    }
}

fn encode_ssh(e: &mut Emit<'_, '_>, ssh: &SshStatus) -> fmt::Result {
    // `on` is published only by a supervisor that runs (overlay mode, an
    // sshd binary, a port configured); `starting` counts as off until then.
    let enabled = ssh.state == "on";
    e.gauge(
        "nsx_agent_ssh_enabled",
        "1 if the agent runs its own sshds (overlay mode with an sshd binary and a port configured).",
        flag(enabled),
    )?;
    // Only the listeners that are configured (port != 0), and only while
    // the feature is on: at most the two fixed label values.
    let listeners: Vec<(&str, &SshdStatus)> = if enabled {
        SSH_LISTENERS
            .iter()
            .zip([&ssh.underlay, &ssh.overlay])
            .filter_map(|(name, l)| l.as_ref().map(|l| (*name, l)))
            .filter(|(_, l)| l.state != "off")
            .collect()
    } else {
        Vec::new()
    };
    let lab = |name: &str| -> Labels { vec![("listener", name.to_string())] };
    let up: Vec<(Labels, u64)> = listeners
        .iter()
        .map(|(name, l)| (lab(name), flag(l.state == "running")))
        .collect();
    e.gauges(
        "nsx_agent_sshd_up",
        "1 while the agent's sshd for this listener runs and listens (underlay: <underlay IP>:ssh_underlay_port, overlay: <port IP>:ssh_overlay_port).",
        &up,
    )?;
    let restarts: Vec<(Labels, u64)> = listeners
        .iter()
        .map(|(name, l)| (lab(name), u64::from(l.restarts)))
        .collect();
    e.counters(
        "nsx_agent_sshd_restarts",
        "Times the supervisor restarted this listener's sshd (it exited, or did not listen in time).",
        &restarts,
    )?;
    e.gauge(
        "nsx_agent_ssh_port22_blocked",
        "1 while new TCP connections to port 22 arriving on the underlay are refused (the agent's underlay sshd listens).",
        flag(ssh.port22_blocked_on_underlay == Some(true)),
    )
}

/// The I/O shell's counters by name (every numeric field of [`IoCounters`]).
fn io_events(io: &IoCounters) -> Vec<(Labels, u64)> {
    let mut out = Vec::new();
    if let Ok(serde_json::Value::Object(m)) = serde_json::to_value(io) {
        for (k, v) in m {
            if let Some(n) = v.as_u64() {
                out.push((vec![("event", k)], n));
            }
        }
    }
    out
}

fn encode_firewall(e: &mut Emit<'_, '_>, fw: &FirewallView) -> fmt::Result {
    let stats = match fw {
        FirewallView::Stats(s) => Some(&**s),
        _ => None,
    };
    e.gauge(
        "nsx_agent_firewall_enabled",
        "1 if the configuration has a distributed firewall (unknown counts as 1 when the datapath did not answer).",
        flag(!matches!(fw, FirewallView::Off)),
    )?;
    e.gauge(
        "nsx_agent_firewall_stats_ok",
        "1 if the datapath answered this scrape's firewall query (0 when it did not or there is no firewall).",
        flag(stats.is_some()),
    )?;
    let Some(s) = stats else {
        return Ok(());
    };
    e.gauge(
        "nsx_agent_firewall_policy_loaded",
        "1 once the firewall has a ruleset (before that its failure policy decides).",
        flag(s.policy_loaded),
    )?;
    // One series per (rule id, ruleset), summed should a policy repeat one.
    let mut rules: BTreeMap<(u32, &str), (u64, u64, u64)> = BTreeMap::new();
    for r in &s.rules {
        let h = rules.entry((r.id, r.ruleset.as_str())).or_default();
        h.0 = h.0.saturating_add(r.packets);
        h.1 = h.1.saturating_add(r.bytes);
        h.2 = h.2.saturating_add(r.sessions);
    }
    let lab = |(id, rs): &(u32, &str)| -> Labels {
        vec![("rule_id", id.to_string()), ("ruleset", rs.to_string())]
    };
    let pick = |f: fn(&(u64, u64, u64)) -> u64| -> Vec<(Labels, u64)> {
        rules.iter().map(|(k, v)| (lab(k), f(v))).collect()
    };
    e.counters(
        "nsx_agent_firewall_rule_packets",
        "Packets that hit each firewall rule (new connections and their fast-path packets).",
        &pick(|h| h.0),
    )?;
    e.counters(
        "nsx_agent_firewall_rule_bytes",
        "Bytes that hit each firewall rule.",
        &pick(|h| h.1),
    )?;
    e.counters(
        "nsx_agent_firewall_rule_sessions",
        "Connections each firewall rule decided.",
        &pick(|h| h.2),
    )?;
    let mut drops: BTreeMap<&str, u64> = BTreeMap::new();
    for (name, n) in &s.drops {
        let d = drops.entry(name.as_str()).or_default();
        *d = d.saturating_add(*n);
    }
    let drops: Vec<(Labels, u64)> = drops
        .into_iter()
        .map(|(k, v)| (vec![("reason", k.to_string())], v))
        .collect();
    e.counters(
        "nsx_agent_firewall_drops",
        "Packets the firewall dropped or rejected, by reason (every reason, zeros included).",
        &drops,
    )?;
    e.gauge(
        "nsx_agent_firewall_conntrack_entries",
        "Connections the firewall tracks now.",
        s.flows,
    )?;
    e.gauge(
        "nsx_agent_firewall_conntrack_capacity",
        "Most connections the firewall can track ([host] max_flows).",
        s.flow_capacity,
    )?;
    e.counter(
        "nsx_agent_firewall_management_packets",
        "Management frames (ARP, DHCP, ND, the agent's own gateway traffic) passed without rules.",
        s.management,
    )?;
    e.counter(
        "nsx_agent_firewall_fast_path_packets",
        "Packets passed on the established-connection fast path.",
        s.fast_path,
    )?;
    e.counter(
        "nsx_agent_firewall_related_packets",
        "ICMP errors passed as related to a tracked connection.",
        s.related,
    )?;
    e.counter(
        "nsx_agent_firewall_rejects",
        "Reject answers (TCP RST or ICMP unreachable) the firewall sent.",
        s.rejects,
    )?;
    e.counter(
        "nsx_agent_firewall_recheck_removed",
        "Connections removed because a new policy no longer accepts them.",
        s.recheck_removed,
    )?;
    e.counter(
        "nsx_agent_firewall_log_rate_limited",
        "Packet-log records suppressed by the log's rate limit.",
        s.log_rate_limited,
    )
}

// ----- the HTTP endpoint ----------------------------------------------------

/// A running metrics endpoint; [`MetricsServer::stop`] closes it (and so
/// does dropping it, without waiting).
#[derive(Debug)]
pub struct MetricsServer {
    task: JoinHandle<()>,
}

impl MetricsServer {
    /// Stops accepting, ends every open connection and waits until the
    /// listening socket is closed (so the next start can bind it again).
    pub async fn stop(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds `[host] metrics_listen` and serves it; `Ok(None)` when turned off.
pub async fn start(
    host: &HostSettings,
    shared: Arc<Shared>,
) -> std::io::Result<Option<MetricsServer>> {
    let Some(addr) = host.metrics_addr() else {
        return Ok(None);
    };
    let listener = bind(addr)?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "metrics endpoint listening (GET /metrics)");
    let task = tokio::spawn(serve(listener, shared));
    Ok(Some(MetricsServer { task }))
}

/// A listening socket with `SO_REUSEADDR` (a restart need not wait for the
/// previous run's connections in TIME_WAIT).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let sock = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    sock.set_reuseaddr(true)?;
    sock.bind(addr)?;
    sock.listen(64)
}

/// Accepts connections until aborted; each is served in its own task,
/// at most [`MAX_CONNECTIONS`] at once (owned here: aborting ends them).
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, peer)) => {
                    if conns.len() >= MAX_CONNECTIONS {
                        tracing::debug!(%peer, "metrics: too many connections; closing");
                        continue;
                    }
                    conns.spawn(handle(stream, Arc::clone(&shared)));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Metrics,
    /// Status and message of an error answer.
    Error(u16, String),
}

/// Decides the answer to a request: `GET /metrics` or an error.
pub fn route(req: &Request) -> Route {
    if req.path != "/metrics" {
        return Route::Error(
            404,
            format!("no such endpoint {:?} (try /metrics)", req.path),
        );
    }
    if req.method != "GET" {
        return Route::Error(405, format!("method {} not allowed (use GET)", req.method));
    }
    Route::Metrics
}

/// An error answer: one line of text (with `Allow: GET` on a 405).
pub fn error_response(status: u16, message: &str) -> Response {
    let resp = Response::text(status, message);
    if status == 405 {
        resp.header("Allow", "GET")
    } else {
        resp
    }
}

async fn handle(s: TcpStream, shared: Arc<Shared>) {
    serve_one(
        s,
        &LIMITS,
        |req| async move {
            match route(&req) {
                Route::Metrics => match render(collect(&shared).await) {
                    Ok(text) => Response::with_body(200, CONTENT_TYPE, text),
                    Err(e) => {
                        tracing::warn!("metrics: cannot encode: {e}");
                        error_response(500, "cannot encode metrics")
                    }
                },
                Route::Error(status, msg) => error_response(status, &msg),
            }
        },
        |_| {},
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_api::RuleStats;
    use datapath::{PacketBytes, TunnelCounters};
    use std::collections::{HashMap, HashSet};

    /// One parsed sample: name, labels, value.
    type Sample = (String, BTreeMap<String, String>, f64);

    /// Parses OpenMetrics text strictly enough for the tests: every line is
    /// `# HELP name text`, `# TYPE name type`, `# EOF` (last), or
    /// `name{k="v",...} value`; every sample belongs to a family announced
    /// by HELP and TYPE (counters' samples end in `_total`, infos' in `_info`).
    fn parse(text: &str) -> (HashMap<String, String>, Vec<Sample>) {
        let mut types = HashMap::new();
        let mut helps = HashSet::new();
        let mut samples = Vec::new();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.last(), Some(&"# EOF"), "ends with # EOF");
        for line in &lines[..lines.len() - 1] {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').expect("HELP name text");
                assert!(!help.trim().is_empty(), "{line}");
                assert!(
                    helps.insert(name.to_string()),
                    "one HELP per family: {line}"
                );
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, ty) = rest.split_once(' ').expect("TYPE name type");
                assert!(helps.contains(name), "HELP before TYPE: {line}");
                assert!(["counter", "gauge", "info"].contains(&ty), "{line}");
                types.insert(name.to_string(), ty.to_string());
                continue;
            }
            assert!(!line.starts_with('#'), "unexpected comment {line}");
            let (series, value) = line.rsplit_once(' ').expect("name value");
            let value: f64 = value.parse().expect("numeric value");
            let (name, labels) = match series.split_once('{') {
                None => (series.to_string(), BTreeMap::new()),
                Some((n, rest)) => {
                    let body = rest.strip_suffix('}').expect("closing brace");
                    (n.to_string(), parse_labels(body))
                }
            };
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
                "{line}"
            );
            let family = types
                .keys()
                .find(|f| {
                    name == **f
                        || (types[*f] == "counter" && name == format!("{f}_total"))
                        || (types[*f] == "info" && name == format!("{f}_info"))
                })
                .unwrap_or_else(|| panic!("sample of an unannounced family: {line}"));
            assert!(family.starts_with("nsx_agent"), "{line}");
            samples.push((name, labels, value));
        }
        let mut seen = HashSet::new();
        for (n, l, _) in &samples {
            assert!(
                seen.insert((n.clone(), l.clone())),
                "duplicate series {n}{l:?}"
            );
        }
        (types, samples)
    }

    fn parse_labels(body: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let mut rest = body;
        while !rest.is_empty() {
            let (k, v) = rest.split_once("=\"").expect("k=\"v\"");
            let mut val = String::new();
            let mut chars = v.char_indices();
            let end = loop {
                let (i, ch) = chars.next().expect("closing quote");
                match ch {
                    '\\' => {
                        let (_, esc) = chars.next().expect("escape");
                        val.push(if esc == 'n' { '\n' } else { esc });
                    }
                    '"' => break i,
                    c => val.push(c),
                }
            };
            out.insert(k.to_string(), val);
            rest = v[end + 1..].strip_prefix(',').unwrap_or(&v[end + 1..]);
        }
        out
    }

    fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        samples
            .iter()
            .find(|(n, l, _)| {
                n == name
                    && l.len() == labels.len()
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(v))
            })
            .map(|s| s.2)
    }

    fn canned() -> Scrape {
        let pb = |packets, bytes| PacketBytes { packets, bytes };
        let mut c = Counters {
            port_rx: pb(10, 980),
            port_tx: pb(9, 882),
            underlay_tx: pb(10, 1480),
            ..Counters::default()
        };
        c.drops[DropReason::SpoofedSrcIp as usize] = 3;
        c.drops[DropReason::Firewall as usize] = 2;
        c.layers[LayerId::Encap as usize].seen = 10;
        c.layers[LayerId::Encap as usize].handled = 10;
        c.tunnels = vec![
            TunnelCounters {
                tep_ip: "10.99.3.12".parse().unwrap(),
                tep_id: 2,
                tx: PacketBytes {
                    packets: 7,
                    bytes: 700,
                },
                rx: PacketBytes {
                    packets: 5,
                    bytes: 500,
                },
                last_rx_ns: 1_000_000_000,
            },
            TunnelCounters {
                tep_ip: "10.99.3.13".parse().unwrap(),
                tep_id: 3,
                tx: PacketBytes::default(),
                rx: PacketBytes::default(),
                last_rx_ns: 0,
            },
        ];
        let rule = |id, ruleset: &str, packets| RuleStats {
            id,
            ruleset: ruleset.into(),
            action: "accept".into(),
            packets,
            bytes: packets * 100,
            sessions: 1,
        };
        Scrape {
            version: "9.9.9",
            mode: "overlay",
            uptime_s: 12.5,
            now_ns: 3_500_000_000,
            config_version: 42,
            counters: c,
            io: IoCounters {
                batches: 17,
                ..IoCounters::default()
            },
            gateway: GatewayView::Configured(Some(GatewayStatus {
                state: "ESTABLISHED".into(),
                peer: "10.99.3.2:5555".into(),
                name: None,
                address: None,
                since_unix: 1_700_000_000,
                last_error: None,
                applied_version: Some(42),
                protocol_version: Some(1),
            })),
            firewall: FirewallView::Stats(Box::new(FirewallStats {
                policy_loaded: true,
                flows: 4,
                flow_capacity: 262_144,
                rules: vec![
                    rule(1006, "domain-c25", 12),
                    rule(1002, "domain-c25", 3),
                    // A quote and a backslash in a label value are escaped.
                    rule(7, "odd \"name\\", 1),
                ],
                drops: vec![("fw_rule".into(), 2), ("fw_table_full".into(), 0)],
                management: 5,
                fast_path: 30,
                related: 0,
                rejects: 2,
                recheck_removed: 0,
                log_rate_limited: 0,
            })),
            ssh: SshStatus {
                state: "on".into(),
                reason: None,
                underlay: Some(sshd_status("running", "10.99.3.11:8888", 2)),
                overlay: Some(sshd_status("restarting", "192.168.100.3:22", 1)),
                port22_blocked_on_underlay: Some(true),
            },
            nat: None,
            lb: None,
        }
    }

    #[test]
    fn the_edge_shows_its_nat_and_interfaces() {
        let mut s = canned();
        s.mode = "edge";
        let m = |v: &[(&str, u64)]| -> std::collections::BTreeMap<String, u64> {
            v.iter().map(|(k, n)| ((*k).to_string(), *n)).collect()
        };
        s.nat = Some(agent_api::NatSummary {
            sessions: 3,
            capacity: 100,
            by_protocol: m(&[("tcp", 2), ("udp", 1), ("icmp", 0)]),
            translated_out: 10,
            translated_in: 9,
            drops: m(&[("exhausted", 4)]),
            pools: vec![agent_api::NatPool {
                ip: "203.0.113.2".parse().unwrap(),
                used: m(&[("udp", 80)]),
                size: m(&[("udp", 80)]),
                failures: m(&[("udp", 4)]),
            }],
            ..Default::default()
        });
        let text = render(s).unwrap();
        for want in [
            "nsx_agent_mode{mode=\"edge\"} 1",
            "nsx_agent_nat_sessions{protocol=\"tcp\"} 2",
            "nsx_agent_nat_drops_total{reason=\"exhausted\"} 4",
            "nsx_agent_nat_ports_used{snat_ip=\"203.0.113.2\",protocol=\"udp\"} 80",
            "nsx_agent_nat_allocation_failures_total{snat_ip=\"203.0.113.2\",protocol=\"udp\"} 4",
            "nsx_agent_edge_packets_total{interface=\"uplink\",direction=\"rx\"}",
        ] {
            assert!(text.contains(want), "{want} missing in\n{text}");
        }
    }

    /// One configured listener as the supervisor publishes it.
    fn sshd_status(state: &'static str, listen: &str, restarts: u32) -> SshdStatus {
        SshdStatus {
            state: state.into(),
            listen: Some(listen.into()),
            netns: None,
            pid: (state == "running").then_some(4242),
            restarts,
            last_error: (restarts > 0).then(|| "exited (signal: 9 (SIGKILL))".into()),
            reason: None,
        }
    }

    #[test]
    fn renders_every_family_with_types_and_labels() {
        let text = render(canned()).expect("render");
        let (types, samples) = parse(&text);
        for (family, ty) in [
            ("nsx_agent_build", "info"),
            ("nsx_agent_mode", "gauge"),
            ("nsx_agent_uptime_seconds", "gauge"),
            ("nsx_agent_config_version", "gauge"),
            ("nsx_agent_port_packets", "counter"),
            ("nsx_agent_port_bytes", "counter"),
            ("nsx_agent_underlay_packets", "counter"),
            ("nsx_agent_underlay_bytes", "counter"),
            ("nsx_agent_tunnel_packets", "counter"),
            ("nsx_agent_tunnel_bytes", "counter"),
            ("nsx_agent_tunnel_last_rx_age_seconds", "gauge"),
            ("nsx_agent_drops", "counter"),
            ("nsx_agent_layer_frames", "counter"),
            ("nsx_agent_io_events", "counter"),
            ("nsx_agent_firewall_enabled", "gauge"),
            ("nsx_agent_firewall_stats_ok", "gauge"),
            ("nsx_agent_firewall_policy_loaded", "gauge"),
            ("nsx_agent_firewall_rule_packets", "counter"),
            ("nsx_agent_firewall_rule_bytes", "counter"),
            ("nsx_agent_firewall_rule_sessions", "counter"),
            ("nsx_agent_firewall_drops", "counter"),
            ("nsx_agent_firewall_conntrack_entries", "gauge"),
            ("nsx_agent_firewall_conntrack_capacity", "gauge"),
            ("nsx_agent_firewall_management_packets", "counter"),
            ("nsx_agent_firewall_fast_path_packets", "counter"),
            ("nsx_agent_firewall_related_packets", "counter"),
            ("nsx_agent_firewall_rejects", "counter"),
            ("nsx_agent_firewall_recheck_removed", "counter"),
            ("nsx_agent_firewall_log_rate_limited", "counter"),
            ("nsx_agent_gateway_configured", "gauge"),
            ("nsx_agent_gateway_connected", "gauge"),
            ("nsx_agent_gateway_state", "gauge"),
            ("nsx_agent_gateway_state_since_seconds", "gauge"),
            ("nsx_agent_gateway_applied_config_version", "gauge"),
            ("nsx_agent_gateway_protocol_version", "gauge"),
            ("nsx_agent_ssh_enabled", "gauge"),
            ("nsx_agent_sshd_up", "gauge"),
            ("nsx_agent_sshd_restarts", "counter"),
            ("nsx_agent_ssh_port22_blocked", "gauge"),
        ] {
            assert_eq!(types.get(family).map(String::as_str), Some(ty), "{family}");
        }
        let v = |n: &str, l: &[(&str, &str)]| value(&samples, n, l);
        assert_eq!(
            v("nsx_agent_build_info", &[("version", "9.9.9")]),
            Some(1.0)
        );
        assert_eq!(v("nsx_agent_mode", &[("mode", "overlay")]), Some(1.0));
        assert_eq!(
            v("nsx_agent_mode", &[("mode", "micro-segmentation")]),
            Some(0.0)
        );
        assert_eq!(v("nsx_agent_config_version", &[]), Some(42.0));
        assert_eq!(
            v("nsx_agent_port_packets_total", &[("direction", "rx")]),
            Some(10.0)
        );
        assert_eq!(
            v("nsx_agent_port_bytes_total", &[("direction", "tx")]),
            Some(882.0)
        );
        assert_eq!(
            v("nsx_agent_underlay_packets_total", &[("direction", "tx")]),
            Some(10.0)
        );
        let t = |d| [("tep_ip", "10.99.3.12"), ("tep_id", "2"), ("direction", d)];
        assert_eq!(v("nsx_agent_tunnel_packets_total", &t("tx")), Some(7.0));
        assert_eq!(v("nsx_agent_tunnel_bytes_total", &t("rx")), Some(500.0));
        assert_eq!(
            v(
                "nsx_agent_tunnel_last_rx_age_seconds",
                &[("tep_ip", "10.99.3.12"), ("tep_id", "2")]
            ),
            Some(2.5)
        );
        assert_eq!(
            v(
                "nsx_agent_tunnel_last_rx_age_seconds",
                &[("tep_ip", "10.99.3.13"), ("tep_id", "3")]
            ),
            None,
            "never heard from: no age"
        );
        // Every drop reason, zeros included.
        let drops: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.0 == "nsx_agent_drops_total")
            .collect();
        assert_eq!(drops.len(), DropReason::ALL.len());
        assert_eq!(
            v("nsx_agent_drops_total", &[("reason", "spoofed_src_ip")]),
            Some(3.0)
        );
        assert_eq!(
            v("nsx_agent_drops_total", &[("reason", "no_route")]),
            Some(0.0)
        );
        assert_eq!(
            samples
                .iter()
                .filter(|s| s.0 == "nsx_agent_layer_frames_total")
                .count(),
            LayerId::ALL.len() * 4
        );
        assert_eq!(
            v(
                "nsx_agent_layer_frames_total",
                &[("layer", "encap"), ("result", "handled")]
            ),
            Some(10.0)
        );
        assert_eq!(
            v("nsx_agent_io_events_total", &[("event", "batches")]),
            Some(17.0)
        );
        assert_eq!(
            v("nsx_agent_io_events_total", &[("event", "port_rx_dropped")]),
            Some(0.0)
        );
        let r = |id, rs| [("rule_id", id), ("ruleset", rs)];
        assert_eq!(
            v(
                "nsx_agent_firewall_rule_packets_total",
                &r("1006", "domain-c25")
            ),
            Some(12.0)
        );
        assert_eq!(
            v(
                "nsx_agent_firewall_rule_bytes_total",
                &r("1002", "domain-c25")
            ),
            Some(300.0)
        );
        assert_eq!(
            v(
                "nsx_agent_firewall_rule_sessions_total",
                &r("7", "odd \"name\\")
            ),
            Some(1.0)
        );
        assert_eq!(
            v("nsx_agent_firewall_drops_total", &[("reason", "fw_rule")]),
            Some(2.0)
        );
        assert_eq!(v("nsx_agent_firewall_conntrack_entries", &[]), Some(4.0));
        assert_eq!(
            v("nsx_agent_firewall_conntrack_capacity", &[]),
            Some(262_144.0)
        );
        assert_eq!(v("nsx_agent_firewall_rejects_total", &[]), Some(2.0));
        assert_eq!(v("nsx_agent_gateway_connected", &[]), Some(1.0));
        assert_eq!(
            v("nsx_agent_gateway_state", &[("state", "ESTABLISHED")]),
            Some(1.0)
        );
        assert_eq!(
            v("nsx_agent_gateway_state", &[("state", "CONNECTING")]),
            Some(0.0)
        );
        assert_eq!(
            v("nsx_agent_gateway_applied_config_version", &[]),
            Some(42.0)
        );
    }

    #[test]
    fn without_gateway_or_firewall() {
        let mut s = canned();
        s.gateway = GatewayView::NotConfigured;
        s.firewall = FirewallView::Off;
        s.mode = "micro-segmentation";
        let (types, samples) = parse(&render(s).expect("render"));
        let v = |n: &str, l: &[(&str, &str)]| value(&samples, n, l);
        assert_eq!(v("nsx_agent_gateway_configured", &[]), Some(0.0));
        assert_eq!(v("nsx_agent_gateway_connected", &[]), Some(0.0));
        assert!(!types.contains_key("nsx_agent_gateway_state"));
        assert_eq!(v("nsx_agent_firewall_enabled", &[]), Some(0.0));
        assert_eq!(v("nsx_agent_firewall_stats_ok", &[]), Some(0.0));
        assert!(!types.contains_key("nsx_agent_firewall_rule_packets"));
        assert_eq!(
            v("nsx_agent_mode", &[("mode", "micro-segmentation")]),
            Some(1.0)
        );

        // A configured gateway not reached yet, and a busy datapath.
        let mut s = canned();
        s.gateway = GatewayView::Configured(None);
        s.firewall = FirewallView::Unavailable;
        let (_, samples) = parse(&render(s).expect("render"));
        let v = |n: &str, l: &[(&str, &str)]| value(&samples, n, l);
        assert_eq!(v("nsx_agent_gateway_connected", &[]), Some(0.0));
        assert_eq!(
            v("nsx_agent_gateway_state", &[("state", "CONNECTING")]),
            Some(1.0)
        );
        assert_eq!(v("nsx_agent_firewall_enabled", &[]), Some(1.0));
        assert_eq!(v("nsx_agent_firewall_stats_ok", &[]), Some(0.0));
    }

    /// The `listener` label values of a family's samples.
    fn listeners(samples: &[Sample], name: &str) -> Vec<String> {
        samples
            .iter()
            .filter(|s| s.0 == name)
            .map(|s| s.1.get("listener").cloned().unwrap_or_default())
            .collect()
    }

    #[test]
    fn ssh_supervisor_families() {
        // On: both listeners configured, the underlay one listening (and
        // port 22 refused), the overlay one waiting for its restart.
        let (types, samples) = parse(&render(canned()).expect("render"));
        let v = |n: &str, l: &[(&str, &str)]| value(&samples, n, l);
        assert_eq!(types["nsx_agent_sshd_restarts"], "counter");
        assert_eq!(v("nsx_agent_ssh_enabled", &[]), Some(1.0));
        assert_eq!(
            v("nsx_agent_sshd_up", &[("listener", "underlay")]),
            Some(1.0)
        );
        assert_eq!(
            v("nsx_agent_sshd_up", &[("listener", "overlay")]),
            Some(0.0)
        );
        assert_eq!(
            v("nsx_agent_sshd_restarts_total", &[("listener", "underlay")]),
            Some(2.0)
        );
        assert_eq!(
            v("nsx_agent_sshd_restarts_total", &[("listener", "overlay")]),
            Some(1.0)
        );
        assert_eq!(v("nsx_agent_ssh_port22_blocked", &[]), Some(1.0));

        // ssh_underlay_port = 0: only the overlay listener, nothing refused.
        let mut s = canned();
        s.ssh.underlay = Some(SshdStatus::off("ssh_underlay_port = 0"));
        s.ssh.overlay = Some(sshd_status("running", "192.168.100.3:22", 0));
        s.ssh.port22_blocked_on_underlay = Some(false);
        let (_, samples) = parse(&render(s).expect("render"));
        let v = |n: &str, l: &[(&str, &str)]| value(&samples, n, l);
        assert_eq!(v("nsx_agent_ssh_enabled", &[]), Some(1.0));
        assert_eq!(listeners(&samples, "nsx_agent_sshd_up"), ["overlay"]);
        assert_eq!(
            listeners(&samples, "nsx_agent_sshd_restarts_total"),
            ["overlay"]
        );
        assert_eq!(
            v("nsx_agent_sshd_up", &[("listener", "overlay")]),
            Some(1.0)
        );
        assert_eq!(
            v("nsx_agent_sshd_restarts_total", &[("listener", "overlay")]),
            Some(0.0)
        );
        assert_eq!(v("nsx_agent_ssh_port22_blocked", &[]), Some(0.0));

        // Off (no sshd binary, micro-segmentation) and not looked at yet:
        // the families are announced, without listener samples.
        for ssh in [
            SshStatus::off("no sshd at /nonexistent"),
            SshStatus::off("not in overlay mode"),
            SshStatus::starting(),
        ] {
            let mut s = canned();
            s.ssh = ssh;
            let (types, samples) = parse(&render(s).expect("render"));
            let v = |n: &str, l: &[(&str, &str)]| value(&samples, n, l);
            assert_eq!(v("nsx_agent_ssh_enabled", &[]), Some(0.0));
            assert_eq!(v("nsx_agent_ssh_port22_blocked", &[]), Some(0.0));
            assert_eq!(types["nsx_agent_sshd_up"], "gauge");
            assert_eq!(types["nsx_agent_sshd_restarts"], "counter");
            assert!(listeners(&samples, "nsx_agent_sshd_up").is_empty());
            assert!(listeners(&samples, "nsx_agent_sshd_restarts_total").is_empty());
        }

        // Stopping (a mode change, SIGTERM): still on, both stopped, the
        // block gone; the restart counts stay.
        let mut s = canned();
        s.ssh.underlay = Some(sshd_status("stopped", "10.99.3.11:8888", 2));
        s.ssh.overlay = Some(sshd_status("stopped", "192.168.100.3:22", 1));
        s.ssh.port22_blocked_on_underlay = Some(false);
        let (_, samples) = parse(&render(s).expect("render"));
        let v = |n: &str, l: &[(&str, &str)]| value(&samples, n, l);
        for l in SSH_LISTENERS {
            assert_eq!(v("nsx_agent_sshd_up", &[("listener", l)]), Some(0.0), "{l}");
        }
        assert_eq!(
            v("nsx_agent_sshd_restarts_total", &[("listener", "underlay")]),
            Some(2.0)
        );
        assert_eq!(v("nsx_agent_ssh_port22_blocked", &[]), Some(0.0));
    }

    /// The answer to `raw`, routed as the endpoint routes (a canned body
    /// for `/metrics`), through the endpoint's HTTP limits.
    async fn answer(raw: &'static [u8]) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let serve = serve_one(
            server,
            &LIMITS,
            |req| async move {
                match route(&req) {
                    Route::Metrics => Response::text(200, "metrics"),
                    Route::Error(status, msg) => error_response(status, &msg),
                }
            },
            |_| {},
        );
        let talk = async move {
            client.write_all(raw).await.expect("write");
            let mut out = Vec::new();
            client.read_to_end(&mut out).await.expect("read");
            String::from_utf8_lossy(&out).into_owned()
        };
        tokio::join!(serve, talk).1
    }

    #[tokio::test]
    async fn routes() {
        let status = |out: &str| out.split(' ').nth(1).unwrap_or_default().to_string();
        let cases: [(&'static [u8], &str); 8] = [
            (b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", "200"),
            (b"GET /metrics?x=1 HTTP/1.0\r\n\r\n", "200"),
            (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "404"),
            (b"POST /metrics HTTP/1.1\r\n\r\n", "405"),
            (b"garbage\r\n\r\n", "400"),
            (b"GET /metrics SPDY/3\r\n\r\n", "400"),
            (&[0xff, 0xfe, b'\r', b'\n', b'\r', b'\n'], "400"),
            (&[b'a'; MAX_HEAD + 10], "431"),
        ];
        for (raw, want) in cases {
            let out = answer(raw).await;
            assert_eq!(
                status(&out),
                want,
                "{:?}: {out}",
                String::from_utf8_lossy(raw)
            );
        }
        let r = answer(b"POST /metrics HTTP/1.1\r\nContent-Length: 1\r\n\r\nx").await;
        assert!(r.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"), "{r}");
        assert!(r.contains("\r\nAllow: GET\r\n"), "{r}");
        assert!(
            r.ends_with("\r\n\r\nmethod POST not allowed (use GET)\n"),
            "{r}"
        );
    }
}
