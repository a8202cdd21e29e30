//! One type per reply (the fields `agent/API.md` documents). Optional
//! facts are `Option` and travel as `null` unless the field says it is
//! left out. Clients ignore fields they do not know (replies are only
//! ever extended).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use control::{InstanceConfig, MacAddr};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The agent's network mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    #[serde(rename = "overlay")]
    Overlay,
    #[serde(rename = "micro-segmentation")]
    MicroSegmentation,
    /// The north-south edge (tier-0 on the uplink).
    #[serde(rename = "edge")]
    Edge,
}

impl Mode {
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Mode::Overlay => "overlay",
            Mode::MicroSegmentation => "micro-segmentation",
            Mode::Edge => "edge",
        }
    }
}

/// `version`: the agent's name and version (`api_version` is the
/// envelope's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionReply {
    pub agent: String,
    pub version: String,
}

/// `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReply {
    pub agent: String,
    pub version: String,
    pub pid: u32,
    pub uptime_s: u64,
    pub config_path: String,
    pub mode: Mode,
    pub nic: String,
    pub underlay_ip: Ipv4Addr,
    pub underlay_mtu: u32,
    /// The overlay port (null until the instance is placed on a switch).
    pub overlay: Option<OverlayStatus>,
    pub config_version: u64,
    pub tep_id: u32,
    pub last_reload: Option<ReloadStatus>,
    /// Null without `[gateway]`.
    pub gateway: Option<GatewayStatus>,
    /// Overlay mode's sshds.
    pub ssh: Option<SshStatus>,
}

/// `status` → `overlay`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverlayStatus {
    pub netns: String,
    pub interface: String,
    pub mtu: u32,
    pub ip: Ipv4Addr,
    pub mac: MacAddr,
    pub switch: String,
}

/// `status` → `last_reload`: the last SIGHUP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadStatus {
    pub ok: bool,
    pub at_unix: u64,
    pub message: String,
}

impl ReloadStatus {
    /// A reload outcome at the current wall-clock time.
    #[must_use]
    pub fn new(ok: bool, message: String) -> ReloadStatus {
        let at_unix = std::time::SystemTime::now()
            .duration_since(std::time::SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        ReloadStatus {
            ok,
            at_unix,
            message,
        }
    }
}

/// `status` → `gateway`: the control connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayStatus {
    /// `CONNECTING`, `HELLO_SENT`, `ESTABLISHED` or `CLOSED`.
    pub state: String,
    /// The control address as configured (`[gateway] control`).
    pub peer: String,
    /// The gateway by name, as the agent dials it: the control address's
    /// host if it is a name, else the name the gateway's certificate must
    /// carry (`server_name`), with the control port.
    #[serde(default)]
    pub name: Option<String>,
    /// The address the connection reached (`IP:PORT`); null before the
    /// first one.
    #[serde(default)]
    pub address: Option<String>,
    /// Wall-clock time (Unix seconds) of the last state change; for
    /// ESTABLISHED, the connection time.
    pub since_unix: u64,
    pub last_error: Option<String>,
    pub applied_version: Option<u64>,
    pub protocol_version: Option<u32>,
}

/// `status` → `ssh`: the sshds overlay mode starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SshStatus {
    /// `on` | `off` (`starting` for a moment after the agent starts).
    pub state: String,
    /// Why it is off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub underlay: Option<SshdStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlay: Option<SshdStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port22_blocked_on_underlay: Option<bool>,
}

impl SshStatus {
    /// Before the supervisor has looked (a moment after the API starts).
    #[must_use]
    pub fn starting() -> SshStatus {
        SshStatus {
            state: "starting".into(),
            reason: None,
            underlay: None,
            overlay: None,
            port22_blocked_on_underlay: None,
        }
    }

    #[must_use]
    pub fn off(reason: impl Into<String>) -> SshStatus {
        SshStatus {
            state: "off".into(),
            reason: Some(reason.into()),
            underlay: None,
            overlay: None,
            port22_blocked_on_underlay: None,
        }
    }
}

/// One sshd listener of [`SshStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SshdStatus {
    /// `off` | `starting` | `running` | `restarting` | `stopped`.
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// The overlay listener's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    pub restarts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Why it is off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl SshdStatus {
    /// A listener that is not configured (`ssh_<kind>_port = 0`) or cannot run.
    #[must_use]
    pub fn off(reason: impl Into<String>) -> SshdStatus {
        SshdStatus {
            state: "off".into(),
            listen: None,
            netns: None,
            pid: None,
            restarts: 0,
            last_error: None,
            reason: Some(reason.into()),
        }
    }
}

/// `counters`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountersReply {
    pub config_version: u64,
    /// Every drop reason → its count.
    pub drops: BTreeMap<String, u64>,
    pub total_drops: u64,
    pub layers: Vec<LayerCounters>,
    pub tunnels: Vec<TunnelCounters>,
    pub port: Traffic,
    pub underlay: Traffic,
    /// The edge's downlink (its filtered socket on the underlay bridge);
    /// zero elsewhere.
    #[serde(default)]
    pub downlink: Traffic,
    pub io: IoCounters,
    /// The switch's DHCP server on the port: message type → count, the
    /// client's (`discover`, `request`, `inform`, `release`, `decline`,
    /// `other`) and the server's (`offer`, `ack`, `nak`).
    #[serde(default)]
    pub dhcp: BTreeMap<String, u64>,
    /// The edge's NAT (null on an instance).
    #[serde(default)]
    pub nat: Option<NatSummary>,
}

/// The edge's NAT at a glance.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NatSummary {
    /// Live sessions, and the most the table holds.
    pub sessions: u64,
    pub capacity: u64,
    /// Live endpoint-independent mappings.
    pub mappings: u64,
    /// Sessions by protocol (`tcp`, `udp`, `icmp`).
    pub by_protocol: BTreeMap<String, u64>,
    pub translated_out: u64,
    pub translated_in: u64,
    pub hairpinned: u64,
    pub icmp_errors: u64,
    pub created: u64,
    pub expired: u64,
    pub removed_config: u64,
    pub restored: u64,
    /// NAT drop reason → count (`no_mapping`, `filtered`, `exhausted`,
    /// `table_full`, `fragment`, `malformed`, `unsupported`).
    pub drops: BTreeMap<String, u64>,
    /// Per SNAT address.
    pub pools: Vec<NatPool>,
}

/// One SNAT address's port pools, by protocol (`tcp`, `udp`, `icmp`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NatPool {
    pub ip: Ipv4Addr,
    pub used: BTreeMap<String, u64>,
    pub size: BTreeMap<String, u64>,
    /// New mappings refused for want of a free port.
    pub failures: BTreeMap<String, u64>,
}

/// `nat-sessions`: the summary and a bounded listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NatSessionsReply {
    pub summary: NatSummary,
    pub sessions: Vec<NatSession>,
    /// More sessions than listed.
    pub truncated: bool,
}

/// One NAT session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NatSession {
    pub protocol: String,
    /// The instance's endpoint (ICMP: address:identifier).
    pub inside: std::net::SocketAddrV4,
    /// What the outside sees of it.
    pub outside: std::net::SocketAddrV4,
    pub remote: std::net::SocketAddrV4,
    pub state: String,
    pub idle_s: u64,
    /// A public IP's 1:1 session.
    #[serde(rename = "static")]
    pub is_static: bool,
    /// Opened from outside.
    pub inbound: bool,
    pub hairpin: bool,
}

/// `load-balancers`: the virtual servers this datapath balances, as
/// `ipvsadm -Ln` lists them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadBalancersReply {
    /// `distributed` (an instance: the virtual servers reachable from the
    /// overlay, balanced here for this instance's own connections) or
    /// `edge`.
    pub role: String,
    pub services: Vec<LbServiceView>,
    /// Balanced connections held, and the table's capacity.
    pub connections: u64,
    pub capacity: u64,
    /// Packets not balanced, by reason (`no_server`, `table_full`,
    /// `no_connection`, `ports_exhausted`, `malformed`).
    pub drops: BTreeMap<String, u64>,
}

/// One virtual server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LbServiceView {
    /// `TCP` or `UDP`.
    pub protocol: String,
    pub vip: Ipv4Addr,
    pub port: u16,
    pub scheduler: String,
    /// `nat` or `fnat`.
    pub kind: String,
    /// Seconds; absent: not persistent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistence_timeout: Option<u32>,
    /// Client mask of persistence (absent: one address, /32).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistence_mask: Option<Ipv4Addr>,
    /// Live weight below quorum: new connections go to the sorry server.
    pub quorum_lost: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sorry_server: Option<std::net::SocketAddrV4>,
    pub stats: LbStats,
    pub rates: LbRates,
    pub real_servers: Vec<LbRealServerView>,
    /// Persistence templates (only when one virtual server was asked for).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub persistence: Vec<LbTemplate>,
}

/// One real server of a virtual server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LbRealServerView {
    pub ip: Ipv4Addr,
    pub port: u16,
    /// `Masq` (NAT) or `FullNat`, ipvsadm's Forward column.
    pub forward: String,
    /// The weight it is scheduled with now.
    pub weight: u32,
    /// The configured weight.
    pub config_weight: u32,
    /// `up`; `drain` (weight 0); `inhibited` (failed its check, kept in
    /// the pool at weight 0: `inhibit_on_failure`); `down` (failed its
    /// check, out of the pool); `removed` (no longer configured, listed
    /// while its connections remain); `sorry` (the sorry server, in the
    /// pool while quorum is lost). `ipvsadm -Ln` lists the pool: all but
    /// `down` and `removed`.
    pub state: String,
    pub active: u64,
    pub inactive: u64,
    pub stats: LbStats,
    pub rates: LbRates,
    /// Its health checker as configured: `TCP_CHECK`, `HTTP_GET`,
    /// `SSL_GET` or `MISC_CHECK` (absent: not checked, always up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checker: Option<String>,
    /// The checker as the edge (which runs the checks) last saw it: only
    /// in the edge's answer for one virtual server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<LbCheckView>,
}

/// A real server's health checker, on the edge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LbCheckView {
    /// `up` or `down`, as the checker holds it.
    pub liveness: String,
    /// `ok`, `ok, weight 3` or the last failure (`connection refused`,
    /// `status 404`, ...); absent before the first check finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_result: Option<String>,
    /// Milliseconds since the last check finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_check_ms_ago: Option<u64>,
    /// Failed attempts in a row.
    pub failures: u32,
    /// Changes of standing since the checker started.
    pub transitions: u64,
    /// A check is in flight.
    pub running: bool,
}

/// Totals since the virtual server was configured (ipvsadm `--stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LbStats {
    pub conns: u64,
    pub in_packets: u64,
    pub out_packets: u64,
    pub in_bytes: u64,
    pub out_bytes: u64,
}

/// Rates over the last estimation interval (ipvsadm `--rate`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LbRates {
    pub cps: u64,
    pub in_pps: u64,
    pub out_pps: u64,
    pub in_bps: u64,
    pub out_bps: u64,
}

/// One persistence template: a client (masked) kept on one real server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LbTemplate {
    pub client: Ipv4Addr,
    pub server: std::net::SocketAddrV4,
    /// Connections using it now.
    pub connections: u64,
    /// Seconds until it expires (counting from its last connection's end).
    pub expires_in_s: u64,
}

/// One pipeline layer's counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerCounters {
    pub name: String,
    pub seen: u64,
    pub passed: u64,
    pub handled: u64,
    pub dropped: u64,
}

/// One tunnel (remote endpoint).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelCounters {
    pub tep_ip: Ipv4Addr,
    pub tep_id: u32,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// Null: nothing received yet.
    pub last_rx_ago_ms: Option<u64>,
}

/// Packets and bytes both ways.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Traffic {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
}

/// Counters of the agent's I/O loop itself (syscall failures, truncation).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IoCounters {
    /// Frames from the instance the kernel dropped because the agent's
    /// socket buffer was full (`PACKET_STATISTICS`).
    pub port_rx_dropped: u64,
    pub port_rx_truncated: u64,
    pub port_tx_failed: u64,
    pub underlay_tx_failed: u64,
    pub underlay_rx_truncated: u64,
    /// Datagrams that arrived coalesced by UDP GRO (counted per datagram).
    pub underlay_rx_gro_segments: u64,
    pub rx_errors: u64,
    pub batches: u64,
    /// The edge's downlink: frames not sent, and frames too big for the
    /// receive buffer.
    #[serde(default)]
    pub downlink_tx_failed: u64,
    #[serde(default)]
    pub downlink_rx_truncated: u64,
    /// The edge's health-check port: the same two.
    #[serde(default)]
    pub probe_tx_failed: u64,
    #[serde(default)]
    pub probe_rx_truncated: u64,
}

/// `config`: the config file's `[host]` and `[gateway]` sections as the
/// agent read them (keys as in `docs/agent.sample.toml`) and the desired
/// state the datapath runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigReply {
    pub host: Map<String, Value>,
    pub gateway: Option<Map<String, Value>>,
    pub desired: InstanceConfig,
}

/// Where an address or MAC lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Location {
    /// The instance's own port.
    Local,
    /// Behind a remote tunnel endpoint (`tep_ip`).
    Remote,
    /// A router's gateway address (`arp-table` only).
    Router,
}

/// `mac-table`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MacTableReply {
    pub entries: Vec<MacEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MacEntry {
    pub switch: String,
    pub vni: u32,
    pub mac: MacAddr,
    pub location: Location,
    pub tep_ip: Option<Ipv4Addr>,
}

/// `arp-table`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArpTableReply {
    pub entries: Vec<ArpEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArpEntry {
    pub switch: String,
    pub vni: u32,
    pub ip: Ipv4Addr,
    pub mac: MacAddr,
    pub location: Location,
    /// Null unless `remote`.
    pub tep_ip: Option<Ipv4Addr>,
}

/// `dhcp`: the switches' DHCP servers and the port's lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DhcpReply {
    pub servers: Vec<DhcpServer>,
    /// The port's lease (empty without a port, or when another switch was asked for).
    pub leases: Vec<DhcpLease>,
}

/// What a switch's DHCP server hands out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DhcpServer {
    pub switch: String,
    pub vni: u32,
    /// The server identifier (option 54): the switch's gateway address.
    pub server_id: Ipv4Addr,
    pub subnet_mask: Ipv4Addr,
    /// Option 3; null when no router is attached to the switch.
    pub router: Option<Ipv4Addr>,
    pub dns_servers: Vec<Ipv4Addr>,
    pub domain_name: Option<String>,
    /// Seconds.
    pub lease_time: u32,
    /// Option 26: the overlay MTU.
    pub mtu: u16,
    /// Option 121, `prefix` via `next_hop`.
    pub routes: Vec<DhcpRoute>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DhcpRoute {
    pub prefix: String,
    pub next_hop: Ipv4Addr,
}

/// The port's address as the DHCP server hands it out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DhcpLease {
    pub switch: String,
    pub ip: Ipv4Addr,
    pub mac: MacAddr,
    /// `"bound"` (acknowledged, not released since) or `"free"`.
    pub state: String,
    /// Seconds since the last ACK (null unless bound).
    pub bound_ago_s: Option<u64>,
    /// Seconds left of the lease (null unless bound; 0 once it ran out).
    pub expires_in_s: Option<u64>,
}

/// `interfaces`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfacesReply {
    pub interfaces: Vec<Interface>,
}

/// What an interface is to the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Nic,
    Vtep,
    Overlay,
    OverlayPeer,
    Fw,
    FwPeer,
    /// The edge's uplink (its tier-0 holds the addresses).
    Uplink,
}

/// Whether an interface is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkState {
    Up,
    Down,
    Absent,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    pub role: Role,
    /// Null: the agent's namespace.
    pub netns: Option<String>,
    /// As the kernel shows it (not always an Ethernet MAC).
    pub mac: Option<String>,
    pub mtu: Option<u32>,
    /// `a.b.c.d/len`.
    pub ipv4: Vec<String>,
    pub state: LinkState,
    pub rx_packets: Option<u64>,
    pub rx_bytes: Option<u64>,
    pub tx_packets: Option<u64>,
    pub tx_bytes: Option<u64>,
}

/// `switches`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchesReply {
    pub switches: Vec<Switch>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Switch {
    pub name: String,
    pub vni: u32,
    pub subnet: Ipv4Net,
    pub gateway_ip: Ipv4Addr,
    pub router: Option<String>,
    pub local_port: Option<PortAddress>,
    /// Remote tunnel-endpoint IPs on the switch (the flood list).
    pub endpoints: Vec<Ipv4Addr>,
}

/// The local port on a switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortAddress {
    pub ip: Ipv4Addr,
    pub mac: MacAddr,
}

/// `routers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutersReply {
    pub routers: Vec<Router>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Router {
    pub name: String,
    pub mac: MacAddr,
    /// Switch names.
    pub switches: Vec<String>,
    /// In lookup order (longest prefix first).
    pub routes: Vec<Route>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RouteKind {
    Connected,
    Static,
    /// A tier-1's way to the tier-0 on the edge (what no route covers).
    Edge,
    /// The tier-0's default route.
    Default,
    /// The tier-0's route to a tier-1's switch.
    Tier1,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub prefix: Ipv4Net,
    /// The switch the route leads to; for the tier-0: `uplink`, or the
    /// tier-1's name; for a tier-1's way to the edge: `transit`.
    pub switch: String,
    /// Null: connected.
    pub next_hop: Option<Ipv4Addr>,
    pub kind: RouteKind,
}

/// `getrules`, `getaddrsets`, `getflows`: a text view printed as is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TextReply {
    pub text: String,
}

/// `firewall-stats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirewallStats {
    pub policy_loaded: bool,
    pub flows: u64,
    pub flow_capacity: u64,
    pub rules: Vec<RuleStats>,
    /// `[name, count]` for every firewall drop reason.
    pub drops: Vec<(String, u64)>,
    pub management: u64,
    pub fast_path: u64,
    pub related: u64,
    pub rejects: u64,
    pub recheck_removed: u64,
    pub log_rate_limited: u64,
}

/// One rule's hits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleStats {
    pub id: u32,
    pub ruleset: String,
    pub action: String,
    pub packets: u64,
    pub bytes: u64,
    pub sessions: u64,
}

/// `trace`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceReply {
    /// `port` | `underlay`, as asked.
    #[serde(default)]
    pub from: String,
    /// The frame in one line, tcpdump-like.
    #[serde(default)]
    pub packet: String,
    pub steps: Vec<TraceStep>,
    /// `delivered` | `encapsulated` | `replied` | `absorbed` | `dropped`
    /// (micro-segmentation also `forwarded`).
    pub verdict: String,
    /// A `counters` drop name, or null.
    pub drop_reason: Option<String>,
    /// The firewall's own `fw_*` reason when it dropped or rejected.
    pub firewall_drop_reason: Option<String>,
    pub outputs: Vec<TraceOutput>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceStep {
    pub layer: String,
    /// `next` | `done`.
    pub result: String,
    /// One line: what the layer saw and decided.
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceOutput {
    /// `underlay` | `port`.
    pub kind: String,
    /// Underlay: the endpoint's IP; port: the frame's destination MAC.
    pub dst: String,
    /// Underlay only.
    pub vni: Option<u32>,
    pub len: u64,
    /// The (inner) frame in one line.
    #[serde(default)]
    pub summary: String,
}

/// `capture`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureReply {
    /// Normalized: `port`, `underlay`, `switch:<name>`.
    pub point: String,
    /// pcap link type: 1 = Ethernet, 101 = raw IPv4.
    pub linktype: u32,
    /// `count` | `timeout` | `buffer_full` | `stopped` | `cancelled`.
    pub ended: String,
    pub frames: Vec<CapturedFrame>,
    /// Frames cut at `snaplen`.
    pub truncated: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapturedFrame {
    /// Unix time, ns.
    pub ts_ns: u64,
    /// `rx` | `tx`, relative to the agent.
    pub dir: String,
    /// Where it was seen: `port` | `underlay`.
    pub point: String,
    /// Length on the wire.
    pub orig_len: u64,
    /// The bytes as seen, at most `snaplen`, in hex.
    pub data_hex: String,
}
