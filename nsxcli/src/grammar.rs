//! The command grammar: one table of commands ([`SPECS`]) drives parsing,
//! `?` help, Tab completion, `help` and "did you mean" suggestions, so
//! they can never disagree. Pure: no I/O; live names (switches, routers,
//! rule ids) come in through [`Names`].
//!
//! A command is a sequence of [`Tok`]s: keywords (unique prefixes accepted,
//! like a network device: `get log-sw` is not, `get vm` is), arguments
//! (validated here: IPs, VNIs, rule ids) and, last, a free-order tail
//! (a packet description, capture options, help words) parsed by its own
//! module. `--json` may appear anywhere in a `get`, `trace` or `capture`.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use crate::error::Error;
use crate::packet::{self, PacketSpec};

/// Which API the shell talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The local nsx-agent (unix socket).
    Agent,
    /// The gateway's admin REST API (`--gateway`).
    Gateway,
}

/// What an argument is, for validation and completion of live names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArgKind {
    /// Capture file path.
    File,
    /// An IPv4 address (completed from the ARP table).
    Ip,
    /// A MAC address (completed from the ARP table).
    Mac,
    /// A non-negative number.
    Number,
    /// A logical router name.
    Router,
    /// A firewall rule id.
    RuleId,
    /// A logical switch name or VNI.
    Switch,
    /// A remote tunnel endpoint's underlay IP.
    Tep,
    /// A VNI (decimal or 0x hex).
    Vni,
    /// A virtual server: `ip:port`, or `tcp/ip:port` / `udp/ip:port`.
    VirtualServer,
    /// Any word (help topics).
    Word,
}

/// One element of a command.
#[derive(Debug, Clone, Copy)]
pub enum Tok {
    /// A keyword and its one-line help.
    Kw(&'static str, &'static str),
    /// An argument: kind, placeholder, help.
    Arg(ArgKind, &'static str, &'static str),
    /// The rest of the line: `capture` options.
    CaptureOpts,
    /// The rest of the line: a packet description ([`packet`]).
    Packet,
    /// The rest of the line: any words (`help` topics).
    Words,
}

impl Tok {
    fn is_tail(&self) -> bool {
        matches!(self, Tok::CaptureOpts | Tok::Packet | Tok::Words)
    }
}

/// The commands, in the order `help` lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Id {
    CapturePort,
    CaptureSwitch,
    CaptureUnderlay,
    Certificates,
    ConfigVersion,
    DhcpLeases,
    DhcpServer,
    Exit,
    FwAddrsets,
    FwFlows,
    FwRule,
    FwRules,
    FwStats,
    GatewayStatus,
    Help,
    Instances,
    Interfaces,
    LoadBalancer,
    LoadBalancerRate,
    LoadBalancerStats,
    LoadBalancers,
    NatRules,
    NatSessions,
    RouterForwarding,
    Routers,
    Statistics,
    SwitchArpTable,
    SwitchMacTable,
    Switches,
    TraceNic,
    TracePort,
    TraceUnderlay,
    Tunnels,
    Version,
    VmNetworkMode,
}

/// One command of the table.
#[derive(Debug)]
pub struct Spec {
    id: Id,
    agent: bool,
    gateway: bool,
    /// The command's elements.
    pub toks: &'static [Tok],
    /// One-line usage (`get logical-switch <name|vni> mac-table`).
    pub usage: &'static str,
    /// What it shows or does.
    pub help: &'static str,
}

impl Spec {
    fn in_mode(&self, mode: Mode) -> bool {
        match mode {
            Mode::Agent => self.agent,
            Mode::Gateway => self.gateway,
        }
    }
}

const GET: Tok = Tok::Kw("get", "Show information");
const GET_GW: Tok = Tok::Kw("get", "Show gateway information");
const SWITCH_ARG: Tok = Tok::Arg(ArgKind::Switch, "<name|vni>", "Logical switch name or VNI");
const ROUTER_ARG: Tok = Tok::Arg(ArgKind::Router, "<name>", "Logical router name");
const FIREWALL: Tok = Tok::Kw("firewall", "Distributed firewall");
const TRACE: Tok = Tok::Kw(
    "trace",
    "Trace a synthetic packet through the datapath (nothing is sent)",
);
const CAPTURE: Tok = Tok::Kw("capture", "Capture the packets the agent sees");
const UNDERLAY: Tok = Tok::Kw("underlay", "A packet arriving from the underlay");
const LS: Tok = Tok::Kw("logical-switch", "One logical switch's tables");
const LR: Tok = Tok::Kw("logical-router", "One logical router's tables");
const LSS: Tok = Tok::Kw("logical-switches", "Logical switches");
const LRS: Tok = Tok::Kw("logical-routers", "Distributed logical routers");
const LBS: Tok = Tok::Kw("load-balancers", "Virtual servers (L4 load balancer)");
const LB: Tok = Tok::Kw("load-balancer", "One virtual server in detail");
const VS_ARG: Tok = Tok::Arg(
    ArgKind::VirtualServer,
    "<vip:port>",
    "Virtual server: ip:port, or udp/ip:port",
);
const DHCP: Tok = Tok::Kw("dhcp", "The switches' DHCP servers (answered by the agent)");

/// Usage of the packet description shared by both traces.
pub const PACKET_USAGE: &str = "<arp|icmp|tcp|udp> src <ip> dst <ip> [sport <port>] [dport <port>] \
     [flags <SAFRPU>] [type <n>] [code <n>] [ttl <n>] [size <bytes>] [df] [smac <mac>] [dmac <mac>]";

macro_rules! spec {
    ($id:ident, $agent:expr, $gw:expr, [$($tok:expr),* $(,)?], $usage:expr, $help:expr) => {
        Spec { id: Id::$id, agent: $agent, gateway: $gw, toks: &[$($tok),*], usage: $usage, help: $help }
    };
}

/// Every command, agent and gateway mode, in the order `help` lists them.
#[rustfmt::skip]
pub static SPECS: &[Spec] = &[
    spec!(GatewayStatus, true, false,
        [GET, Tok::Kw("gateway", "The Public Cloud Gateway"),
         Tok::Kw("connection", "The control connection to the gateway"),
         Tok::Kw("status", "Peer, state and connection time")],
        "get gateway connection status",
        "Control connection to the Public Cloud Gateway: peer, state, connection time"),
    spec!(VmNetworkMode, true, false,
        [GET, Tok::Kw("vm-network-mode", "Overlay or micro-segmentation, and the NIC")],
        "get vm-network-mode",
        "This instance's network mode (overlay or micro-segmentation) and NIC"),
    spec!(Interfaces, true, false,
        [GET, Tok::Kw("interfaces", "Interfaces the agent built or took over")],
        "get interfaces",
        "NIC, tunnel endpoint and overlay interfaces: MAC, MTU, addresses, state, counters"),
    spec!(Switches, true, false, [GET, LSS], "get logical-switches",
        "Logical switches: VNI, subnet, gateway, router, local port, remote endpoints"),
    spec!(SwitchMacTable, true, false,
        [GET, LS, SWITCH_ARG, Tok::Kw("mac-table", "MAC address table")],
        "get logical-switch <name|vni> mac-table",
        "MAC address table of a logical switch: local or remote (tunnel endpoint)"),
    spec!(SwitchArpTable, true, false,
        [GET, LS, SWITCH_ARG, Tok::Kw("arp-table", "ARP table (IP to MAC)")],
        "get logical-switch <name|vni> arp-table",
        "ARP table of a logical switch: IP, MAC, where it lives"),
    spec!(Routers, true, false, [GET, LRS], "get logical-routers",
        "Distributed logical routers: MAC and attached switches"),
    spec!(RouterForwarding, true, false,
        [GET, LR, ROUTER_ARG, Tok::Kw("forwarding", "Forwarding table, in lookup order")],
        "get logical-router <name> forwarding",
        "Forwarding table of a logical router (longest prefix first)"),
    spec!(DhcpServer, true, false,
        [GET, DHCP, Tok::Kw("server", "One switch's DHCP server"), SWITCH_ARG],
        "get dhcp server <name|vni>",
        "DHCP server of a logical switch: server id, mask, router, DNS, domain, lease time, MTU, routes"),
    spec!(DhcpLeases, true, false,
        [GET, DHCP, Tok::Kw("leases", "The port's DHCP lease")],
        "get dhcp leases",
        "The port's DHCP lease: address, MAC, state, expiry"),
    spec!(NatSessions, true, false,
        [GET, Tok::Kw("nat", "The edge's NAT (tier-0)"),
         Tok::Kw("sessions", "NAT sessions: counts, port pools, the first 100")],
        "get nat sessions",
        "The edge's NAT: sessions by protocol, port-pool use per SNAT address, drops, and the first 100 sessions"),
    spec!(LoadBalancers, true, false,
        [GET, LBS],
        "get load-balancers",
        "Virtual servers balanced here, ipvsadm -Ln layout: scheduler, persistence, real servers, weights, connections"),
    spec!(LoadBalancerStats, true, false,
        [GET, LBS, Tok::Kw("--stats", "Totals: connections, packets, bytes (ipvsadm -Ln --stats)")],
        "get load-balancers --stats",
        "Virtual servers with connection, packet and byte totals (ipvsadm -Ln --stats)"),
    spec!(LoadBalancerRate, true, false,
        [GET, LBS, Tok::Kw("--rate", "Rates: connections, packets, bytes per second (ipvsadm -Ln --rate)")],
        "get load-balancers --rate",
        "Virtual servers with connection, packet and byte rates (ipvsadm -Ln --rate)"),
    spec!(LoadBalancer, true, false,
        [GET, LB, VS_ARG],
        "get load-balancer <vip:port>",
        "One virtual server: real servers with health state, weights and connections, persistence templates"),
    spec!(Tunnels, true, false,
        [GET, Tok::Kw("tunnels", "Geneve tunnels to remote endpoints")],
        "get tunnels",
        "Remote tunnel endpoints: packets, bytes, last seen"),
    spec!(FwRules, true, false,
        [GET, FIREWALL, Tok::Kw("rules", "Rules in force (vsipioctl getrules)")],
        "get firewall rules",
        "Firewall rules in force, in the vsipioctl getrules format"),
    spec!(FwRule, true, false,
        [GET, FIREWALL, Tok::Kw("rule", "One rule and its hit counters"),
         Tok::Arg(ArgKind::RuleId, "<rule-id>", "Firewall rule id")],
        "get firewall rule <rule-id>",
        "One firewall rule and its hit counters"),
    spec!(FwAddrsets, true, false,
        [GET, FIREWALL, Tok::Kw("addrsets", "Address sets (vsipioctl getaddrsets)")],
        "get firewall addrsets",
        "Firewall address sets, in the vsipioctl getaddrsets format"),
    spec!(FwFlows, true, false,
        [GET, FIREWALL, Tok::Kw("flows", "Connections (vsipioctl getflows)")],
        "get firewall flows",
        "Firewall connection table, in the vsipioctl getflows format"),
    spec!(FwStats, true, false,
        [GET, FIREWALL, Tok::Kw("stats", "Rule hits and firewall counters")],
        "get firewall stats",
        "Firewall rule hits (packets, bytes, sessions) and counters"),
    spec!(Statistics, true, false,
        [GET, Tok::Kw("statistics", "Datapath counters")],
        "get statistics",
        "Datapath counters: port and underlay traffic, layers, tunnels, every drop reason"),
    spec!(Version, true, false,
        [GET, Tok::Kw("version", "Software versions")],
        "get version",
        "nsxcli, nsx-agent and API versions"),
    spec!(ConfigVersion, true, false,
        [GET, Tok::Kw("config", "Configuration"),
         Tok::Kw("version", "Version of the configuration in force")],
        "get config version",
        "Version of the configuration the datapath runs, and where it comes from"),
    spec!(TracePort, true, false,
        [TRACE, Tok::Kw("port", "A packet sent by this instance's port (or host)"), Tok::Packet],
        "trace port <packet>",
        "Trace a packet from this instance's port through every layer (nothing is sent)"),
    spec!(TraceUnderlay, true, false,
        [TRACE, UNDERLAY,
         Tok::Kw("from", "The sending tunnel endpoint"),
         Tok::Arg(ArgKind::Tep, "<tep-ip>", "Underlay IP of the sending endpoint"),
         Tok::Kw("vni", "The tunnel's VNI"),
         Tok::Arg(ArgKind::Vni, "<vni>", "VNI (decimal or 0x hex)"),
         Tok::Packet],
        "trace underlay from <tep-ip> vni <vni> <packet>",
        "Trace a packet arriving from a tunnel endpoint (inner frame) through every layer"),
    spec!(TraceNic, true, false,
        [TRACE, UNDERLAY, Tok::Packet],
        "trace underlay <packet>",
        "Micro-segmentation mode: trace a packet as the NIC receives it through the firewall"),
    spec!(CapturePort, true, false,
        [CAPTURE, Tok::Kw("port", "Ethernet frames of this instance's overlay port"),
         Tok::CaptureOpts],
        "capture port [count <n>] [file <path>] [timeout <seconds>] [snaplen <bytes>]",
        "Capture the port's frames (to a pcap file or one line per packet)"),
    spec!(CaptureUnderlay, true, false,
        [CAPTURE, Tok::Kw("underlay", "Geneve packets on the underlay (outer IPv4)"),
         Tok::CaptureOpts],
        "capture underlay [count <n>] [file <path>] [timeout <seconds>] [snaplen <bytes>]",
        "Capture the tunnel packets (outer and inner headers)"),
    spec!(CaptureSwitch, true, false,
        [CAPTURE, Tok::Kw("switch", "Ethernet frames on one logical switch"), SWITCH_ARG,
         Tok::CaptureOpts],
        "capture switch <name|vni> [count <n>] [file <path>] [timeout <seconds>] [snaplen <bytes>]",
        "Capture the frames of one logical switch (inner frames)"),
    spec!(Instances, false, true,
        [GET_GW, Tok::Kw("instances", "Enrolled instances")],
        "get instances",
        "Instances: id, name, mode, switch, IP, connection state, version acked"),
    spec!(Switches, false, true, [GET_GW, LSS], "get logical-switches",
        "Logical switches: tag, VNI, subnet, gateway, ports"),
    spec!(Routers, false, true, [GET_GW, LRS], "get logical-routers",
        "Logical routers: MAC, switches, static routes"),
    spec!(NatRules, false, true,
        [GET_GW, LR, Tok::Arg(ArgKind::Router, "<t0>", "The tier-0 router's name"),
         Tok::Kw("nat-rules", "NAT rules: SNAT, and a DNAT+SNAT pair per public IP")],
        "get logical-router <t0> nat-rules",
        "NAT rules of the tier-0: the SNAT of the overlay, and each public IP's DNAT+SNAT with its instance"),
    spec!(LoadBalancers, false, true, [GET_GW, LBS], "get load-balancers",
        "Virtual servers of the desired state: scheduler, forwarding, persistence, where balanced, real servers, how many are down"),
    spec!(LoadBalancer, false, true,
        [GET_GW, LB, VS_ARG],
        "get load-balancer <vip:port>",
        "One virtual server of the desired state: its settings, each real server's checker and the last health check result (state, since, reason)"),
    spec!(Certificates, false, true,
        [GET_GW, Tok::Kw("certificates", "Instance certificates and revocations")],
        "get certificates",
        "Instance certificates (serial, fingerprint, expiry) and revocations"),
    spec!(Help, true, true,
        [Tok::Kw("help", "Commands and their usage"), Tok::Words],
        "help [<command>]",
        "This list, or the usage of the commands starting with <command>"),
    spec!(Exit, true, true, [Tok::Kw("exit", "Leave the shell")], "exit", "Leave the shell"),
    spec!(Exit, true, true, [Tok::Kw("quit", "Leave the shell")], "quit", "Leave the shell"),
];

/// A parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `capture ...`
    Capture(Capture),
    /// `get certificates` (gateway)
    Certificates,
    /// `get config version`
    ConfigVersion,
    /// `get dhcp leases`
    DhcpLeases,
    /// `get dhcp server <name|vni>`
    DhcpServer { switch: String },
    /// `exit` / `quit`
    Exit,
    /// `get firewall rules|addrsets|flows|stats`
    Firewall(FwView),
    /// `get firewall rule <id>`
    FirewallRule(u32),
    /// `get logical-router <name> forwarding`
    Forwarding { router: String },
    /// `get gateway connection status`
    GatewayStatus,
    /// `help [words]`
    Help(Vec<String>),
    /// `get instances` (gateway)
    Instances,
    /// `get interfaces`
    Interfaces,
    /// `get logical-router <t0> nat-rules` (gateway)
    NatRules { router: String },
    /// `get load-balancers [--stats|--rate]` (the gateway has the
    /// desired state's list only: `Pool`)
    LoadBalancers(crate::format::LbView),
    /// `get load-balancer <vip:port>` (the agent's or the gateway's view
    /// of one virtual server; `vip` as typed, checked by
    /// `agent_api::parse_virtual_server`)
    LoadBalancer { vip: String },
    /// `get nat sessions` (the edge)
    NatSessions,
    /// `get logical-routers`
    Routers,
    /// `get statistics`
    Statistics,
    /// `get logical-switch <name|vni> mac-table|arp-table`
    SwitchTable { switch: String, table: SwitchTable },
    /// `get logical-switches`
    Switches,
    /// `trace ...`
    Trace(Trace),
    /// `get tunnels`
    Tunnels,
    /// `get version`
    Version,
    /// `get vm-network-mode`
    VmNetworkMode,
}

/// The two tables of a logical switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwitchTable {
    Arp,
    Mac,
}

/// The firewall's views.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FwView {
    Addrsets,
    Flows,
    Rules,
    Stats,
}

/// Where a traced packet enters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TraceFrom {
    /// Received by the NIC (micro-segmentation mode: no tunnels).
    Nic,
    /// Sent by this instance's overlay port (or, in micro-segmentation
    /// mode, by the host out of its NIC).
    Port,
    /// Received in a tunnel from `tep` with `vni`.
    Underlay { tep: Ipv4Addr, vni: u32 },
}

/// `trace`'s arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    pub from: TraceFrom,
    pub packet: PacketSpec,
}

/// Where a capture taps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CapturePoint {
    Port,
    /// A logical switch (name or VNI as typed).
    Switch(String),
    Underlay,
}

/// `capture`'s arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capture {
    pub point: CapturePoint,
    /// Frames to capture (1..=10000); the agent's default (100) if `None`.
    pub count: Option<u32>,
    /// Write a pcap here instead of printing one line per packet.
    pub file: Option<PathBuf>,
    /// Milliseconds (1..=60000); the agent's default (10 s) if `None`.
    pub timeout_ms: Option<u32>,
    /// Bytes kept per frame.
    pub snaplen: Option<u32>,
}

/// A parsed line: the command and whether `--json` was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub command: Command,
    pub json: bool,
}

/// What can follow a prefix of a command (for `?` and Tab).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// The command is complete here (`<cr>`).
    End,
    /// A keyword.
    Keyword {
        word: &'static str,
        help: &'static str,
    },
    /// A value to type.
    Value {
        kind: ArgKind,
        placeholder: &'static str,
        help: &'static str,
    },
}

/// Live names for completion (switch names, router names, rule ids, ...).
pub trait Names {
    /// Candidates for an argument of `kind` (may be empty).
    fn names(&self, kind: ArgKind) -> Vec<String>;
}

/// No live names (tests, `?` help).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoNames;

impl Names for NoNames {
    fn names(&self, _kind: ArgKind) -> Vec<String> {
        Vec::new()
    }
}

/// Splits a line into words (whitespace separated).
#[must_use]
pub fn words(line: &str) -> Vec<String> {
    line.split_whitespace().map(str::to_string).collect()
}

/// Where matching the words against the table ended.
#[derive(Debug)]
struct Walked<'w> {
    /// Commands still matching.
    cands: Vec<&'static Spec>,
    /// Argument values in order.
    args: Vec<String>,
    /// The tail words, if a tail element was reached before the last word.
    tail: Option<(&'static Spec, &'w [String])>,
}

/// Matches `words` against the table. A keyword (exact, or a unique
/// prefix) wins over a tail element at the same position.
fn walk(mode: Mode, words: &[String]) -> Result<Walked<'_>, Error> {
    let mut cands: Vec<&'static Spec> = SPECS.iter().filter(|s| s.in_mode(mode)).collect();
    let mut args = Vec::new();
    for (pos, word) in words.iter().enumerate() {
        let kws = keywords_at(&cands, pos);
        let pre: Vec<&str> = kws
            .iter()
            .copied()
            .filter(|k| k.starts_with(word.as_str()))
            .collect();
        let chosen = if kws.iter().any(|k| k == word) {
            Some(word.as_str())
        } else if let [one] = pre.as_slice() {
            Some(*one)
        } else {
            None
        };
        if let Some(kw) = chosen {
            cands.retain(|s| matches!(s.toks.get(pos), Some(Tok::Kw(k, _)) if *k == kw));
            continue;
        }
        if let Some(spec) = tail_at(&cands, pos) {
            return Ok(Walked {
                cands: vec![spec],
                args,
                tail: Some((spec, &words[pos..])),
            });
        }
        if pre.len() > 1 {
            return Err(Error::Usage {
                message: format!(
                    "Ambiguous command \"{}\": {}",
                    join(&words[..=pos]),
                    pre.join(", ")
                ),
                usage: Vec::new(),
            });
        }
        let arg_specs: Vec<&'static Spec> = cands
            .iter()
            .copied()
            .filter(|s| matches!(s.toks.get(pos), Some(Tok::Arg(..))))
            .collect();
        if let Some(Tok::Arg(kind, placeholder, _)) =
            arg_specs.first().and_then(|s| s.toks.get(pos))
        {
            if let Err(why) = check_arg(*kind, word) {
                return Err(Error::Usage {
                    message: format!("Invalid {placeholder} \"{word}\": {why}"),
                    usage: usages(&arg_specs),
                });
            }
            args.push(word.clone());
            cands = arg_specs;
            continue;
        }
        if kws.is_empty() {
            // Every remaining command ended before this word.
            return Err(Error::Usage {
                message: format!("Unexpected \"{word}\" after \"{}\"", join(&words[..pos])),
                usage: usages(&cands),
            });
        }
        let suggestion = closest(word, &kws).map(|k| {
            let mut s = words[..pos].to_vec();
            s.push(k.to_string());
            join(&s)
        });
        return Err(Error::UnknownCommand {
            line: join(&words[..=pos]),
            suggestion,
        });
    }
    Ok(Walked {
        cands,
        args,
        tail: None,
    })
}

fn tail_at(cands: &[&'static Spec], pos: usize) -> Option<&'static Spec> {
    cands
        .iter()
        .copied()
        .find(|s| s.toks.get(pos).is_some_and(Tok::is_tail))
}

/// Distinct keywords at `pos`, in table order.
fn keywords_at(cands: &[&'static Spec], pos: usize) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for s in cands {
        if let Some(Tok::Kw(k, _)) = s.toks.get(pos)
            && !out.contains(k)
        {
            out.push(k);
        }
    }
    out
}

fn usages(specs: &[&'static Spec]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in specs {
        if !out.iter().any(|u| u == s.usage) {
            out.push(s.usage.to_string());
        }
    }
    out
}

fn join(words: &[String]) -> String {
    words.join(" ")
}

/// Validates an argument value.
fn check_arg(kind: ArgKind, word: &str) -> Result<(), String> {
    match kind {
        ArgKind::Ip | ArgKind::Tep => word
            .parse::<Ipv4Addr>()
            .map(|_| ())
            .map_err(|_| "not an IPv4 address".into()),
        ArgKind::Vni => parse_vni(word).map(|_| ()),
        ArgKind::RuleId => word
            .parse::<u32>()
            .map(|_| ())
            .map_err(|_| "not a rule id (a number)".into()),
        ArgKind::Number => parse_u32(word).map(|_| ()),
        ArgKind::Mac => packet::parse_mac(word).map(|_| ()),
        ArgKind::VirtualServer => agent_api::parse_virtual_server(word).map(|_| ()),
        ArgKind::File | ArgKind::Router | ArgKind::Switch | ArgKind::Word => Ok(()),
    }
}

/// Seconds -> whole milliseconds, rounded; `s` is finite and within
/// 0.001..=60 (checked by the caller), so the result is 1..=60000.
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "s is 0.001..=60: the rounded milliseconds fit u32"
)]
fn secs_to_ms(s: f64) -> u32 {
    (s * 1000.0).round() as u32
}

/// A number, decimal or `0x` hex.
pub fn parse_u32(word: &str) -> Result<u32, String> {
    let r = match word.strip_prefix("0x").or_else(|| word.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => word.parse::<u32>(),
    };
    r.map_err(|_| format!("not a number: {word:?}"))
}

/// A 24-bit VNI, decimal or `0x` hex.
pub fn parse_vni(word: &str) -> Result<u32, String> {
    match parse_u32(word) {
        Ok(v) if (1..=0x00ff_ffff).contains(&v) => Ok(v),
        _ => Err("a VNI is 1..=0xffffff (decimal or 0x hex)".into()),
    }
}

/// Levenshtein distance (for suggestions).
#[must_use]
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The keyword closest to `word`, if it is close enough to be a typo.
fn closest<'k>(word: &str, kws: &[&'k str]) -> Option<&'k str> {
    let best = kws
        .iter()
        .map(|k| (edit_distance(word, k), *k))
        .min_by_key(|(d, _)| *d)?;
    let limit = (word.chars().count().max(best.1.len()) / 2).max(2);
    (best.0 <= limit).then_some(best.1)
}

/// Parses one line. `Ok(None)` for an empty line.
pub fn parse(mode: Mode, line: &str) -> Result<Option<Parsed>, Error> {
    let mut ws = words(line);
    let before = ws.len();
    ws.retain(|w| w != "--json");
    let json = ws.len() != before;
    if ws.is_empty() {
        if json {
            return Err(Error::usage("--json needs a command", "get ... --json"));
        }
        return Ok(None);
    }
    let w = walk(mode, &ws)?;
    let spec = match w.tail {
        Some((spec, _)) => Some(spec),
        None => w
            .cands
            .iter()
            .copied()
            .find(|s| s.toks.len() == ws.len())
            .or_else(|| tail_at(&w.cands, ws.len())),
    };
    let Some(spec) = spec else {
        return Err(Error::Usage {
            message: format!("Incomplete command \"{}\"", join(&ws)),
            usage: usages(&w.cands),
        });
    };
    let tail: &[String] = w.tail.map_or(&[], |(_, t)| t);
    let command = build(spec, &w.args, tail)?;
    if json && matches!(command, Command::Help(_) | Command::Exit) {
        return Err(Error::usage(
            "--json applies to get, trace and capture",
            spec.usage,
        ));
    }
    Ok(Some(Parsed { command, json }))
}

fn arg(args: &[String], i: usize) -> String {
    args.get(i).cloned().unwrap_or_default()
}

fn build(spec: &'static Spec, args: &[String], tail: &[String]) -> Result<Command, Error> {
    let usage_err = |m: String| Error::usage(m, spec.usage);
    Ok(match spec.id {
        Id::GatewayStatus => Command::GatewayStatus,
        Id::VmNetworkMode => Command::VmNetworkMode,
        Id::Interfaces => Command::Interfaces,
        Id::Switches => Command::Switches,
        Id::SwitchMacTable => Command::SwitchTable {
            switch: arg(args, 0),
            table: SwitchTable::Mac,
        },
        Id::SwitchArpTable => Command::SwitchTable {
            switch: arg(args, 0),
            table: SwitchTable::Arp,
        },
        Id::Routers => Command::Routers,
        Id::RouterForwarding => Command::Forwarding {
            router: arg(args, 0),
        },
        Id::DhcpServer => Command::DhcpServer {
            switch: arg(args, 0),
        },
        Id::DhcpLeases => Command::DhcpLeases,
        Id::NatSessions => Command::NatSessions,
        Id::LoadBalancers => Command::LoadBalancers(crate::format::LbView::Pool),
        Id::LoadBalancerStats => Command::LoadBalancers(crate::format::LbView::Stats),
        Id::LoadBalancerRate => Command::LoadBalancers(crate::format::LbView::Rate),
        Id::LoadBalancer => Command::LoadBalancer { vip: arg(args, 0) },
        Id::Tunnels => Command::Tunnels,
        Id::FwRules => Command::Firewall(FwView::Rules),
        Id::FwAddrsets => Command::Firewall(FwView::Addrsets),
        Id::FwFlows => Command::Firewall(FwView::Flows),
        Id::FwStats => Command::Firewall(FwView::Stats),
        Id::FwRule => Command::FirewallRule(
            arg(args, 0)
                .parse()
                .map_err(|_| usage_err("Invalid rule id".into()))?,
        ),
        Id::Statistics => Command::Statistics,
        Id::Version => Command::Version,
        Id::ConfigVersion => Command::ConfigVersion,
        Id::TracePort => Command::Trace(Trace {
            from: TraceFrom::Port,
            packet: packet::parse(tail).map_err(|m| Error::Usage {
                message: m,
                usage: vec![format!("trace port {PACKET_USAGE}")],
            })?,
        }),
        Id::TraceUnderlay => {
            let tep = arg(args, 0)
                .parse()
                .map_err(|_| usage_err("Invalid <tep-ip>".into()))?;
            let vni = parse_vni(&arg(args, 1)).map_err(usage_err)?;
            Command::Trace(Trace {
                from: TraceFrom::Underlay { tep, vni },
                packet: packet::parse(tail).map_err(|m| Error::Usage {
                    message: m,
                    usage: vec![format!(
                        "trace underlay from <tep-ip> vni <vni> {PACKET_USAGE}"
                    )],
                })?,
            })
        }
        Id::TraceNic => Command::Trace(Trace {
            from: TraceFrom::Nic,
            packet: packet::parse(tail).map_err(|m| Error::Usage {
                message: m,
                usage: vec![
                    format!("trace underlay from <tep-ip> vni <vni> {PACKET_USAGE}"),
                    format!("trace underlay {PACKET_USAGE}"),
                ],
            })?,
        }),
        Id::CapturePort => Command::Capture(capture_opts(CapturePoint::Port, tail, spec)?),
        Id::CaptureUnderlay => Command::Capture(capture_opts(CapturePoint::Underlay, tail, spec)?),
        Id::CaptureSwitch => Command::Capture(capture_opts(
            CapturePoint::Switch(arg(args, 0)),
            tail,
            spec,
        )?),
        Id::Instances => Command::Instances,
        Id::NatRules => Command::NatRules {
            router: arg(args, 0),
        },
        Id::Certificates => Command::Certificates,
        Id::Help => Command::Help(tail.to_vec()),
        Id::Exit => Command::Exit,
    })
}

/// Capture options: keyword, placeholder, help.
const CAPTURE_KEYS: [(&str, ArgKind, &str, &str); 4] = [
    (
        "count",
        ArgKind::Number,
        "<1-10000>",
        "Frames to capture (default 100)",
    ),
    (
        "file",
        ArgKind::File,
        "<path>",
        "Write a pcap file (tcpdump, tshark)",
    ),
    (
        "timeout",
        ArgKind::Number,
        "<1-60>",
        "Seconds to wait at most (default 10)",
    ),
    (
        "snaplen",
        ArgKind::Number,
        "<bytes>",
        "Bytes kept per frame (default 65535)",
    ),
];

fn capture_opts(point: CapturePoint, tail: &[String], spec: &Spec) -> Result<Capture, Error> {
    let err = |m: String| Error::usage(m, spec.usage);
    let mut c = Capture {
        point,
        count: None,
        file: None,
        timeout_ms: None,
        snaplen: None,
    };
    let mut i = 0;
    while i < tail.len() {
        let key = tail[i].as_str();
        let Some((name, ..)) = CAPTURE_KEYS.iter().find(|(k, ..)| *k == key) else {
            return Err(err(format!("Unknown capture option \"{key}\"")));
        };
        let Some(value) = tail.get(i + 1) else {
            return Err(err(format!("\"{name}\" needs a value")));
        };
        let seen = match *name {
            "count" => c.count.is_some(),
            "file" => c.file.is_some(),
            "timeout" => c.timeout_ms.is_some(),
            _ => c.snaplen.is_some(),
        };
        if seen {
            return Err(err(format!("\"{name}\" given twice")));
        }
        match *name {
            "count" => match parse_u32(value) {
                Ok(n) if (1..=10_000).contains(&n) => c.count = Some(n),
                _ => return Err(err(format!("Invalid count \"{value}\": 1..=10000"))),
            },
            "file" => c.file = Some(PathBuf::from(value)),
            "timeout" => match value.parse::<f64>() {
                Ok(s) if s.is_finite() && (0.001..=60.0).contains(&s) => {
                    c.timeout_ms = Some(secs_to_ms(s));
                }
                _ => {
                    return Err(err(format!(
                        "Invalid timeout \"{value}\": 0.001..=60 seconds"
                    )));
                }
            },
            _ => match parse_u32(value) {
                Ok(n) if (14..=65_535).contains(&n) => c.snaplen = Some(n),
                _ => return Err(err(format!("Invalid snaplen \"{value}\": 14..=65535"))),
            },
        }
        i += 2;
    }
    Ok(c)
}

fn capture_next(tail: &[String]) -> Vec<Next> {
    if tail.len() % 2 == 1
        && let Some((_, kind, placeholder, help)) = CAPTURE_KEYS
            .iter()
            .find(|(k, ..)| Some(*k) == tail.last().map(String::as_str))
    {
        return vec![Next::Value {
            kind: *kind,
            placeholder,
            help,
        }];
    }
    let mut out: Vec<Next> = CAPTURE_KEYS
        .iter()
        .filter(|(k, ..)| !tail.iter().step_by(2).any(|w| w == k))
        .map(|(word, _, _, help)| Next::Keyword { word, help })
        .collect();
    out.push(Next::End);
    out
}

/// What can follow the words `tail` of a tail element.
fn tail_next(tok: &Tok, tail: &[String]) -> Vec<Next> {
    match tok {
        Tok::Packet => packet::next(tail),
        Tok::CaptureOpts => capture_next(tail),
        Tok::Words => vec![
            Next::Value {
                kind: ArgKind::Word,
                placeholder: "<command>",
                help: "Show the usage of the commands starting with these words",
            },
            Next::End,
        ],
        Tok::Kw(..) | Tok::Arg(..) => Vec::new(),
    }
}

/// What can follow the complete words `ws`.
pub fn next(mode: Mode, ws: &[String]) -> Result<Vec<Next>, Error> {
    let w = walk(mode, ws)?;
    if let Some((spec, tail)) = w.tail {
        return Ok(spec
            .toks
            .last()
            .map_or_else(Vec::new, |t| tail_next(t, tail)));
    }
    let pos = ws.len();
    let mut out: Vec<Next> = Vec::new();
    let mut end = false;
    for s in &w.cands {
        match s.toks.get(pos) {
            None => end = true,
            Some(Tok::Kw(word, help)) => {
                if !out
                    .iter()
                    .any(|n| matches!(n, Next::Keyword { word: x, .. } if x == word))
                {
                    out.push(Next::Keyword { word, help });
                }
            }
            Some(Tok::Arg(kind, placeholder, help)) => {
                if !out
                    .iter()
                    .any(|n| matches!(n, Next::Value { placeholder: p, .. } if p == placeholder))
                {
                    out.push(Next::Value {
                        kind: *kind,
                        placeholder,
                        help,
                    });
                }
            }
            Some(tok) => {
                for n in tail_next(tok, &[]) {
                    if n == Next::End {
                        end = true;
                    } else if !out.contains(&n) {
                        out.push(n);
                    }
                }
            }
        }
    }
    if end {
        out.push(Next::End);
    }
    Ok(out)
}

/// The answer to a line ending in `?`: what can follow (`get ?`) or which
/// keywords start with the partial word (`get log?`).
pub fn question(mode: Mode, line: &str) -> Result<String, Error> {
    let body = line.trim_end().strip_suffix('?').unwrap_or(line);
    let mut ws = words(body);
    ws.retain(|w| w != "--json");
    let partial = if body.is_empty() || body.ends_with(char::is_whitespace) {
        None
    } else {
        ws.pop()
    };
    let mut items = next(mode, &ws)?;
    if let Some(p) = &partial {
        items.retain(|n| match n {
            Next::Keyword { word, .. } => word.starts_with(p.as_str()),
            Next::Value { .. } | Next::End => false,
        });
        if items.is_empty() {
            return Err(Error::UnknownCommand {
                line: join(&[join(&ws), p.clone()]).trim().to_string(),
                suggestion: None,
            });
        }
    }
    Ok(render_next(&items))
}

/// `?` output: one line per item, keyword/placeholder and help.
#[must_use]
pub fn render_next(items: &[Next]) -> String {
    let width = items
        .iter()
        .map(|n| match n {
            Next::Keyword { word, .. } => word.len(),
            Next::Value { placeholder, .. } => placeholder.len(),
            Next::End => 4,
        })
        .max()
        .unwrap_or(0)
        .max(14);
    let mut out = String::new();
    for n in items {
        let line = match n {
            Next::Keyword { word, help } => format!("  {word:<width$}  {help}"),
            Next::Value {
                placeholder, help, ..
            } => format!("  {placeholder:<width$}  {help}"),
            Next::End => "  <cr>".to_string(),
        };
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Tab completion of `line` (the text left of the cursor): the byte offset
/// where the replaced word starts and the candidates (each followed by a
/// space). Never fails: a line that does not parse has no candidates.
pub fn complete(mode: Mode, line: &str, names: &dyn Names) -> (usize, Vec<String>) {
    let start = line.rfind(char::is_whitespace).map_or(0, |i| {
        i + line[i..].chars().next().map_or(1, char::len_utf8)
    });
    let partial = &line[start..];
    let mut ws = words(&line[..start]);
    ws.retain(|w| w != "--json");
    let Ok(items) = next(mode, &ws) else {
        return (start, Vec::new());
    };
    let mut out: Vec<String> = Vec::new();
    for n in items {
        let cands = match n {
            Next::Keyword { word, .. } => vec![word.to_string()],
            Next::Value { kind, .. } => names.names(kind),
            Next::End => Vec::new(),
        };
        for c in cands {
            if c.starts_with(partial) && !out.contains(&c) {
                out.push(c);
            }
        }
    }
    if partial.starts_with('-') && "--json".starts_with(partial) && !ws.is_empty() {
        out.push("--json".to_string());
    }
    (start, out.into_iter().map(|c| c + " ").collect())
}

/// `help` / `help <words>`: the commands (matching the words) with usage
/// and one line of help each.
pub fn help(mode: Mode, topic: &[String]) -> Result<String, Error> {
    let specs: Vec<&Spec> = SPECS
        .iter()
        .filter(|s| s.in_mode(mode))
        .filter(|s| {
            topic.iter().enumerate().all(|(i, w)| match s.toks.get(i) {
                Some(Tok::Kw(k, _)) => k.starts_with(w.as_str()),
                Some(Tok::Arg(..)) => true,
                Some(_) | None => false,
            })
        })
        .collect();
    if specs.is_empty() {
        let kws: Vec<&str> = SPECS
            .iter()
            .filter(|s| s.in_mode(mode))
            .filter_map(|s| match s.toks.first() {
                Some(Tok::Kw(k, _)) => Some(*k),
                _ => None,
            })
            .collect();
        let first = topic.first().map_or("", String::as_str);
        return Err(Error::UnknownCommand {
            line: join(topic),
            suggestion: closest(first, &kws).map(str::to_string),
        });
    }
    let mut out = String::new();
    let mut last = "";
    for s in specs {
        if s.usage == last {
            continue;
        }
        last = s.usage;
        out.push_str(s.usage);
        out.push('\n');
        out.push_str("    ");
        out.push_str(s.help);
        out.push('\n');
    }
    if topic.is_empty() {
        out.push_str(match mode {
            Mode::Agent => {
                "\n<packet>: <arp|icmp|tcp|udp> src <ip> dst <ip> [sport <port>] [dport <port>]\n    \
                 [flags <SAFRPU>] [type <n>] [code <n>] [ttl <n>] [size <bytes>] [df] [smac <mac>] [dmac <mac>]\n\
                 Add --json to a get, trace or capture for the API's JSON.\n"
            }
            Mode::Gateway => "\nAdd --json to a get for the API's JSON.\n",
        });
        out.push_str("Type \"<command> ?\" for what can follow, Tab to complete.\n");
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
