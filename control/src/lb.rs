//! The L4 load balancer's desired state: virtual servers as keepalived
//! describes them (seed 004), in the shape the gateway's `load_balancers:`
//! section, `nsx-gateway lb import` and the agents' configs share. Plain
//! data with serde; the keepalived.conf reader and the schedulers live in
//! the `lb` crate, validation in [`check`].

use std::fmt;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::validate::Problem;

/// The transport a virtual server balances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LbProtocol {
    Tcp,
    Udp,
}

impl LbProtocol {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            LbProtocol::Tcp => 6,
            LbProtocol::Udp => 17,
        }
    }

    /// The protocol of IP protocol number `n`, if one is balanced.
    pub fn from_number(n: u8) -> Option<LbProtocol> {
        [LbProtocol::Tcp, LbProtocol::Udp]
            .into_iter()
            .find(|p| p.number() == n)
    }

    /// `TCP` / `UDP`, as `ipvsadm -Ln` prints it.
    pub fn upper(self) -> &'static str {
        match self {
            LbProtocol::Tcp => "TCP",
            LbProtocol::Udp => "UDP",
        }
    }
}

/// The IPVS schedulers (`lb_algo` / `lvs_sched`), with IPVS's semantics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheduler {
    /// Round robin over servers with a weight above 0.
    Rr,
    /// Weighted round robin (IPVS's gcd stepping).
    Wrr,
    /// Least connections (active x 256 + inactive).
    Lc,
    /// Weighted least connections.
    Wlc,
    /// Source hashing (client address).
    Sh,
    /// Destination hashing (the virtual address).
    Dh,
    /// Locality-based least connections.
    Lblc,
    /// Locality-based least connections with replication.
    Lblcr,
    /// Shortest expected delay.
    Sed,
    /// Never queue.
    Nq,
    /// Maglev consistent hashing.
    Mh,
}

impl Scheduler {
    pub const ALL: [Scheduler; 11] = [
        Scheduler::Rr,
        Scheduler::Wrr,
        Scheduler::Lc,
        Scheduler::Wlc,
        Scheduler::Sh,
        Scheduler::Dh,
        Scheduler::Lblc,
        Scheduler::Lblcr,
        Scheduler::Sed,
        Scheduler::Nq,
        Scheduler::Mh,
    ];

    /// The name keepalived and ipvsadm use.
    pub fn name(self) -> &'static str {
        match self {
            Scheduler::Rr => "rr",
            Scheduler::Wrr => "wrr",
            Scheduler::Lc => "lc",
            Scheduler::Wlc => "wlc",
            Scheduler::Sh => "sh",
            Scheduler::Dh => "dh",
            Scheduler::Lblc => "lblc",
            Scheduler::Lblcr => "lblcr",
            Scheduler::Sed => "sed",
            Scheduler::Nq => "nq",
            Scheduler::Mh => "mh",
        }
    }

    pub fn from_name(s: &str) -> Option<Scheduler> {
        Scheduler::ALL.into_iter().find(|x| x.name() == s)
    }

    /// Hash schedulers keep a client (or destination) on one server by
    /// themselves; the seed requires `persistence_timeout` for the others.
    pub fn is_hashing(self) -> bool {
        matches!(self, Scheduler::Sh | Scheduler::Dh | Scheduler::Mh)
    }
}

impl fmt::Display for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How packets reach the real servers (`lb_kind` / `lvs_method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ForwardKind {
    /// Only the destination is rewritten: the real server sees the client's
    /// address, and its replies are un-NATed on the way back.
    Nat,
    /// Source and destination are rewritten (the seed's MARK 0x4000 +
    /// MASQUERADE; `FNAT` in DPVS's keepalived): the real server sees the
    /// balancer's SNAT address.
    Fnat,
}

impl ForwardKind {
    /// `Masq` / `FullNat`, as `ipvsadm -Ln`'s Forward column.
    pub fn ipvsadm(self) -> &'static str {
        match self {
            ForwardKind::Nat => "Masq",
            ForwardKind::Fnat => "FullNat",
        }
    }
}

/// An address and port (a sorry server, a check's target).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    pub ip: Ipv4Addr,
    pub port: u16,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.ip, self.port)
    }
}

/// keepalived's checker defaults (keepalived.conf(5)).
pub mod defaults {
    /// `delay_loop`, seconds.
    pub const DELAY_LOOP: u32 = 60;
    /// `connect_timeout`, seconds.
    pub const CONNECT_TIMEOUT: u32 = 5;
    /// `retry` (keepalived's `nb_get_retry`) and `delay_before_retry`
    /// defaults differ by checker (keepalived 2's: 1 retry after 1 s for
    /// TCP_CHECK, 1 after 3 s for HTTP_GET/SSL_GET, none for MISC_CHECK):
    /// see `lb::health::defaults`.
    /// A real server's weight when absent.
    pub const WEIGHT: u32 = 1;
    /// `persistence_timeout` when given without a value (IPVS's default).
    pub const PERSISTENCE_TIMEOUT: u32 = 360;
}

/// One URL an `HTTP_GET` / `SSL_GET` checker fetches.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UrlCheck {
    pub path: String,
    /// Accepted status codes (empty: any 2xx, keepalived's default).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub status_code: Vec<u16>,
    /// MD5 of the body, lowercase hex (`digest`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

/// A health checker and its timing.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields, tag = "type", rename_all = "snake_case")]
pub enum HealthCheck {
    /// `TCP_CHECK`: a connect.
    Tcp {
        #[serde(flatten)]
        timing: CheckTiming,
    },
    /// `HTTP_GET` (`ssl: false`) / `SSL_GET` (`ssl: true`).
    Http {
        #[serde(default)]
        ssl: bool,
        urls: Vec<UrlCheck>,
        /// `virtualhost`: the Host header (default: the server's address).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        virtualhost: Option<String>,
        #[serde(flatten)]
        timing: CheckTiming,
    },
    /// `MISC_CHECK`: a script; exit 0 = up. With `misc_dynamic`, exit 2..=255
    /// sets the weight to (code - 2).
    Misc {
        path: String,
        /// `misc_timeout`, seconds (default: the delay loop).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout: Option<u32>,
        #[serde(default)]
        dynamic: bool,
        #[serde(flatten)]
        timing: CheckTiming,
    },
}

impl HealthCheck {
    pub fn timing(&self) -> &CheckTiming {
        match self {
            HealthCheck::Tcp { timing }
            | HealthCheck::Http { timing, .. }
            | HealthCheck::Misc { timing, .. } => timing,
        }
    }

    /// keepalived's checker name.
    pub fn kind(&self) -> &'static str {
        match self {
            HealthCheck::Tcp { .. } => "TCP_CHECK",
            HealthCheck::Http { ssl: false, .. } => "HTTP_GET",
            HealthCheck::Http { ssl: true, .. } => "SSL_GET",
            HealthCheck::Misc { .. } => "MISC_CHECK",
        }
    }
}

/// When and how a checker runs; absent fields take keepalived's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckTiming {
    /// Where to connect (default: the real server's address and port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_ip: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_port: Option<u16>,
    /// Seconds (default [`defaults::CONNECT_TIMEOUT`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<u32>,
    /// Failed attempts in a row before the server is marked down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<u32>,
    /// Seconds between retries (default: the checker's, see
    /// `lb::health::defaults`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_before_retry: Option<u32>,
    /// Seconds between checks (default: the virtual server's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_loop: Option<u32>,
}

/// A real server behind a virtual server.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RealServer {
    pub ip: Ipv4Addr,
    pub port: u16,
    /// 0 drains: established connections continue, none are added.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Overrides the virtual server's `inhibit_on_failure`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inhibit_on_failure: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<HealthCheck>,
}

fn default_weight() -> u32 {
    defaults::WEIGHT
}

impl RealServer {
    /// A real server at `ip:port` with what serde gives an entry that
    /// names only those: weight [`defaults::WEIGHT`], no checker, the
    /// virtual server's `inhibit_on_failure`.
    pub fn new(ip: Ipv4Addr, port: u16) -> RealServer {
        RealServer {
            ip,
            port,
            weight: default_weight(),
            inhibit_on_failure: None,
            check: None,
        }
    }

    pub fn endpoint(&self) -> Endpoint {
        Endpoint {
            ip: self.ip,
            port: self.port,
        }
    }
}

/// A virtual server: `virtual_server IP PORT { ... }`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VirtualServer {
    pub vip: Ipv4Addr,
    pub port: u16,
    #[serde(default = "default_protocol")]
    pub protocol: LbProtocol,
    #[serde(default = "default_scheduler")]
    pub scheduler: Scheduler,
    #[serde(default = "default_kind")]
    pub kind: ForwardKind,
    /// Seconds a client address stays on its real server after its last
    /// connection ends (IPVS templates); absent: no persistence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistence_timeout: Option<u32>,
    /// Prefix length of the client mask persistence groups by (32: one
    /// address).
    #[serde(
        default = "default_granularity",
        skip_serializing_if = "is_default_granularity"
    )]
    pub persistence_granularity: u8,
    /// Seconds between health checks (default [`defaults::DELAY_LOOP`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_loop: Option<u32>,
    /// Minimum total weight of live servers; below it the sorry server
    /// takes over (default 1).
    #[serde(default = "default_quorum", skip_serializing_if = "is_one")]
    pub quorum: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub hysteresis: u32,
    /// A failed server stays listed with weight 0 instead of being removed.
    #[serde(default, skip_serializing_if = "is_false")]
    pub inhibit_on_failure: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sorry_server: Option<Endpoint>,
    /// Full-NAT's source address (default: the balancer's own: the edge's
    /// uplink address, or the tier-0's transit address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snat_ip: Option<Ipv4Addr>,
    #[serde(default)]
    pub real_servers: Vec<RealServer>,
}

fn default_protocol() -> LbProtocol {
    LbProtocol::Tcp
}
fn default_scheduler() -> Scheduler {
    Scheduler::Wlc
}
fn default_kind() -> ForwardKind {
    ForwardKind::Nat
}
fn default_granularity() -> u8 {
    32
}
fn is_default_granularity(g: &u8) -> bool {
    *g == 32
}
fn default_quorum() -> u32 {
    1
}
fn is_one(v: &u32) -> bool {
    *v == 1
}
fn is_zero(v: &u32) -> bool {
    *v == 0
}
fn is_false(b: &bool) -> bool {
    !*b
}

impl VirtualServer {
    /// A virtual server with what serde gives an entry that names only
    /// these four: NAT, no persistence (granularity /32), quorum 1, no
    /// hysteresis, sorry server, SNAT address or real servers. Set the
    /// rest with `..VirtualServer::new(..)`.
    pub fn new(
        vip: Ipv4Addr,
        port: u16,
        protocol: LbProtocol,
        scheduler: Scheduler,
    ) -> VirtualServer {
        VirtualServer {
            vip,
            port,
            protocol,
            scheduler,
            kind: default_kind(),
            persistence_timeout: None,
            persistence_granularity: default_granularity(),
            delay_loop: None,
            quorum: default_quorum(),
            hysteresis: 0,
            inhibit_on_failure: false,
            sorry_server: None,
            snat_ip: None,
            real_servers: Vec::new(),
        }
    }

    /// `TCP 10.64.1.2:10000`: how operators name a virtual server.
    pub fn key(&self) -> String {
        format!("{} {}:{}", self.protocol.upper(), self.vip, self.port)
    }

    pub fn endpoint(&self) -> Endpoint {
        Endpoint {
            ip: self.vip,
            port: self.port,
        }
    }

    /// The effective delay loop, seconds.
    pub fn delay_loop(&self) -> u32 {
        self.delay_loop.unwrap_or(defaults::DELAY_LOOP)
    }

    /// The health key of `rs` (one of this server's real servers) if it
    /// has a checker; `None`: it is not checked.
    pub fn check_key(&self, rs: &RealServer) -> Option<HealthKey> {
        rs.check.as_ref().map(|_| HealthKey::of(self, rs))
    }

    /// The real servers with a checker, with their health keys, in order.
    pub fn checked(&self) -> impl Iterator<Item = (&RealServer, HealthKey)> {
        self.real_servers
            .iter()
            .filter_map(|rs| Some((rs, self.check_key(rs)?)))
    }
}

/// The agent's view of one virtual server: its config plus the gateway's
/// health verdicts, one per real server (same order).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LbService {
    #[serde(flatten)]
    pub vs: VirtualServer,
    /// The weight each real server is scheduled with now (0: up but
    /// draining, or down and inhibited), same order as `real_servers`;
    /// empty: every server at its configured weight.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub live: Vec<Liveness>,
}

/// One real server's standing, as the health checks decided it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Liveness {
    /// Scheduled at the configured weight.
    Up,
    /// Scheduled at this weight (`misc_dynamic`).
    Weight(u32),
    /// Failed: no new connections; listed with weight 0 when inhibited,
    /// otherwise not listed. Established connections continue.
    Down,
}

/// The client mask of a persistence granularity (a prefix length):
/// `0.0.0.0` for 0 (every client one group), all ones from 32 on (one
/// address). The engine groups templates by it; the views print it.
#[must_use]
pub fn client_mask(len: u8) -> u32 {
    u32::MAX
        .checked_shl(32_u32.saturating_sub(u32::from(len)))
        .unwrap_or(0)
}

/// One real server of one virtual server, as a health checker names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthKey {
    pub protocol: LbProtocol,
    pub vip: Ipv4Addr,
    pub port: u16,
    pub real_ip: Ipv4Addr,
    pub real_port: u16,
}

impl HealthKey {
    /// The key of `rs` behind `vs`.
    pub fn of(vs: &VirtualServer, rs: &RealServer) -> HealthKey {
        HealthKey {
            protocol: vs.protocol,
            vip: vs.vip,
            port: vs.port,
            real_ip: rs.ip,
            real_port: rs.port,
        }
    }
}

impl fmt::Display for HealthKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}:{} -> {}:{}",
            self.protocol.upper(),
            self.vip,
            self.port,
            self.real_ip,
            self.real_port
        )
    }
}

/// One health checker verdict, as the edge reports it to the gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthVerdict {
    #[serde(flatten)]
    pub key: HealthKey,
    pub liveness: Liveness,
    /// What the last check found (`"connect 10.0.0.5:80: connection
    /// refused"`), for the views.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// The edge's health checkers' verdicts, agent -> gateway
/// ([`crate::AgentMsg::Health`]). `full`: every real server the edge
/// checks, replacing what the gateway held (sent when a session starts);
/// otherwise only the verdicts that changed.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthReport {
    #[serde(default)]
    pub full: bool,
    #[serde(default)]
    pub verdicts: Vec<HealthVerdict>,
}

impl HealthReport {
    /// Most verdicts the gateway takes in one report (more closes the
    /// session). In practice the frame bounds a report first: a verdict
    /// is at least about 90 bytes of JSON (more with its reason), so a
    /// [`crate::MAX_FRAME`] of 4 MiB holds at most about 45,000, and a
    /// report that does not fit fails to encode. A report that may be
    /// larger (a full one of an edge with many checked servers) is sent
    /// in parts: [`HealthReport::chunks`].
    pub const MAX_VERDICTS: usize = 65536;

    /// This report in parts of at most `max` verdicts each (`max` 0 is
    /// taken as 1), in order: a full report's first part is full (it
    /// replaces what the gateway held) and the others are not (they add
    /// to it), so the parts sent in order leave the gateway holding what
    /// the whole report would. Always at least one part (a full report
    /// of no verdicts still says "nothing is down").
    pub fn chunks(self, max: usize) -> impl Iterator<Item = HealthReport> {
        let max = max.max(1);
        let mut full = self.full;
        let mut first = true;
        let mut verdicts = self.verdicts.into_iter().peekable();
        std::iter::from_fn(move || {
            if !first && verdicts.peek().is_none() {
                return None;
            }
            first = false;
            let part = HealthReport {
                full,
                verdicts: verdicts.by_ref().take(max).collect(),
            };
            full = false;
            Some(part)
        })
    }
}

/// Checks a set of virtual servers; every problem is pushed with its path
/// under `base` (e.g. `load_balancers`).
pub fn check<'a>(
    vss: impl IntoIterator<Item = &'a VirtualServer>,
    base: &str,
    out: &mut Vec<Problem>,
) {
    let mut seen = std::collections::HashSet::new();
    for (i, vs) in vss.into_iter().enumerate() {
        let p = format!("{base}[{i}]");
        if !seen.insert((vs.protocol, vs.vip, vs.port)) {
            out.push(Problem::new(
                &p,
                format!("virtual server {} is declared twice", vs.key()),
            ));
        }
        check_host(vs.vip, vs.port, &p, "vip", "a virtual address", out);
        if vs.persistence_timeout.is_none() && !vs.scheduler.is_hashing() {
            out.push(Problem::new(
                format!("{p}.persistence_timeout"),
                format!(
                    "required with lb_algo {} (only sh, dh and mh keep a client on one server by themselves)",
                    vs.scheduler
                ),
            ));
        }
        if vs.persistence_timeout == Some(0) {
            out.push(Problem::new(
                format!("{p}.persistence_timeout"),
                "0 seconds keeps nothing; leave it out",
            ));
        }
        if vs.persistence_granularity == 0 || vs.persistence_granularity > 32 {
            out.push(Problem::new(
                format!("{p}.persistence_granularity"),
                format!(
                    "/{} is not a client mask (1..=32)",
                    vs.persistence_granularity
                ),
            ));
        }
        if vs.delay_loop == Some(0) {
            out.push(Problem::new(
                format!("{p}.delay_loop"),
                "must be at least 1 second",
            ));
        }
        if vs.real_servers.is_empty() && vs.sorry_server.is_none() {
            out.push(Problem::new(
                format!("{p}.real_servers"),
                "a virtual server needs a real server or a sorry server",
            ));
        }
        if vs.real_servers.len() > MAX_REAL_SERVERS {
            out.push(Problem::new(
                format!("{p}.real_servers"),
                format!(
                    "{} real servers, at most {MAX_REAL_SERVERS}",
                    vs.real_servers.len()
                ),
            ));
        }
        if let Some(sorry) = vs.sorry_server {
            let sp = format!("{p}.sorry_server");
            check_host(sorry.ip, sorry.port, &sp, "ip", "a sorry server", out);
            if sorry.ip == vs.vip {
                out.push(Problem::new(
                    format!("{sp}.ip"),
                    "a sorry server cannot be the virtual address itself",
                ));
            }
        }
        let mut rs_seen = std::collections::HashSet::new();
        for (j, rs) in vs.real_servers.iter().enumerate() {
            let rp = format!("{p}.real_servers[{j}]");
            if !rs_seen.insert((rs.ip, rs.port)) {
                out.push(Problem::new(
                    &rp,
                    format!("real server {}:{} is listed twice", rs.ip, rs.port),
                ));
            }
            check_host(rs.ip, rs.port, &rp, "ip", "a real server", out);
            if rs.ip == vs.vip {
                out.push(Problem::new(
                    format!("{rp}.ip"),
                    "a real server cannot be the virtual address itself",
                ));
            }
            if rs.weight > MAX_WEIGHT {
                out.push(Problem::new(
                    format!("{rp}.weight"),
                    format!("{} is above the largest weight ({MAX_WEIGHT})", rs.weight),
                ));
            }
            if let Some(c) = &rs.check {
                check_health(c, &format!("{rp}.check"), out);
            }
        }
    }
}

/// Checks that `ip:port` (at `{p}.{ip_field}` and `{p}.port`) can name
/// `what` (a virtual address, a real server, a sorry server): a port that
/// is not 0, an address that is not 0.0.0.0, broadcast or multicast.
fn check_host(
    ip: Ipv4Addr,
    port: u16,
    p: &str,
    ip_field: &str,
    what: &str,
    out: &mut Vec<Problem>,
) {
    if port == 0 {
        out.push(Problem::new(format!("{p}.port"), "port 0 is not a port"));
    }
    if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() {
        out.push(Problem::new(
            format!("{p}.{ip_field}"),
            format!("{ip} cannot be {what}"),
        ));
    }
}

/// Checks the services of an agent's config: the virtual servers, and one
/// liveness per real server when the gateway sends them.
pub fn check_services(svcs: &[LbService], base: &str, out: &mut Vec<Problem>) {
    check(svcs.iter().map(|s| &s.vs), base, out);
    for (i, s) in svcs.iter().enumerate() {
        if !s.live.is_empty() && s.live.len() != s.vs.real_servers.len() {
            out.push(Problem::new(
                format!("{base}[{i}].live"),
                format!(
                    "{} verdicts for {} real servers",
                    s.live.len(),
                    s.vs.real_servers.len()
                ),
            ));
        }
    }
}

/// Most real servers in one virtual server.
pub const MAX_REAL_SERVERS: usize = 65_535;

/// IPVS's largest weight.
pub const MAX_WEIGHT: u32 = 65535;

/// Most status codes one url accepts (every HTTP status, 100-599, once).
pub const MAX_STATUS_CODES: usize = 500;

fn check_health(c: &HealthCheck, p: &str, out: &mut Vec<Problem>) {
    let t = c.timing();
    if t.connect_timeout == Some(0) {
        out.push(Problem::new(
            format!("{p}.connect_timeout"),
            "must be at least 1 second",
        ));
    }
    if t.delay_loop == Some(0) {
        out.push(Problem::new(
            format!("{p}.delay_loop"),
            "must be at least 1 second",
        ));
    }
    if t.connect_port == Some(0) {
        out.push(Problem::new(
            format!("{p}.connect_port"),
            "port 0 is not a port",
        ));
    }
    match c {
        HealthCheck::Http {
            urls, virtualhost, ..
        } => {
            if urls.is_empty() {
                out.push(Problem::new(
                    format!("{p}.urls"),
                    format!("{} needs at least one url", c.kind()),
                ));
            }
            if let Some(v) = virtualhost
                && (v.is_empty() || v.chars().any(|ch| breaks_a_header(ch) || ch == '/'))
            {
                out.push(Problem::new(
                    format!("{p}.virtualhost"),
                    format!("{v:?} is not a host name (no spaces, control characters or '/')"),
                ));
            }
            for (k, u) in urls.iter().enumerate() {
                if !u.path.starts_with('/') {
                    out.push(Problem::new(
                        format!("{p}.urls[{k}].path"),
                        format!("{:?} is not an absolute path", u.path),
                    ));
                } else if u.path.chars().any(breaks_a_header) {
                    out.push(Problem::new(
                        format!("{p}.urls[{k}].path"),
                        format!(
                            "{:?} has spaces or control characters (write them %-encoded)",
                            u.path
                        ),
                    ));
                }
                if u.status_code.len() > MAX_STATUS_CODES {
                    out.push(Problem::new(
                        format!("{p}.urls[{k}].status_code"),
                        format!("{} codes, at most {MAX_STATUS_CODES}", u.status_code.len()),
                    ));
                } else if let Some(code) = u.status_code.iter().find(|c| !(100..=599).contains(*c))
                {
                    out.push(Problem::new(
                        format!("{p}.urls[{k}].status_code"),
                        format!("{code} is not an HTTP status"),
                    ));
                }
                if let Some(d) = &u.digest
                    && (d.len() != 32 || !d.bytes().all(|b| b.is_ascii_hexdigit()))
                {
                    out.push(Problem::new(
                        format!("{p}.urls[{k}].digest"),
                        "an MD5 digest is 32 hex digits",
                    ));
                }
            }
        }
        HealthCheck::Misc { path, timeout, .. } => {
            if path.trim().is_empty() {
                out.push(Problem::new(format!("{p}.path"), "the script is empty"));
            }
            if *timeout == Some(0) {
                out.push(Problem::new(
                    format!("{p}.timeout"),
                    "must be at least 1 second",
                ));
            }
        }
        HealthCheck::Tcp { .. } => {}
    }
}

/// Whether `ch` would break the request line or a header it is written
/// into (whitespace ends a word there, a control character a line).
fn breaks_a_header(ch: char) -> bool {
    ch.is_whitespace() || ch.is_control()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_masks_of_prefix_lengths() {
        assert_eq!(client_mask(32), u32::MAX);
        assert_eq!(client_mask(24), 0xffff_ff00);
        assert_eq!(client_mask(1), 0x8000_0000);
        assert_eq!(client_mask(0), 0);
        assert_eq!(client_mask(40), u32::MAX);
        let view = |len| Ipv4Addr::from(client_mask(len));
        assert_eq!(view(24), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(view(32), Ipv4Addr::BROADCAST);
        assert_eq!(view(1), Ipv4Addr::new(128, 0, 0, 0));
    }

    #[test]
    fn a_service_reads_as_a_virtual_server_with_its_liveness() {
        let s: LbService = serde_json::from_str(
            r#"{"vip":"10.64.1.2","port":10000,"scheduler":"rr","persistence_timeout":10,
                "real_servers":[{"ip":"192.168.1.100","port":8089}],"live":["up"]}"#,
        )
        .unwrap();
        assert_eq!(s.vs.real_servers[0].weight, 1);
        assert_eq!(s.live, vec![Liveness::Up]);
        let back = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<LbService>(&back).unwrap(), s);
        let bad = serde_json::from_str::<LbService>(
            r#"{"vip":"10.64.1.2","port":1,"scheduler":"sh","oops":1}"#,
        );
        assert!(bad.is_err(), "unknown fields are refused");
        let w: Liveness = serde_json::from_str(r#"{"weight":3}"#).unwrap();
        assert_eq!(w, Liveness::Weight(3));
    }

    #[test]
    fn a_protocol_reads_back_from_its_number() {
        for p in [LbProtocol::Tcp, LbProtocol::Udp] {
            assert_eq!(LbProtocol::from_number(p.number()), Some(p));
        }
        assert_eq!(LbProtocol::from_number(1), None);
    }

    #[test]
    fn a_sorry_server_is_checked_as_a_real_server_is() {
        let ip = Ipv4Addr::new(10, 64, 1, 2);
        let mut vs = VirtualServer::new(ip, 80, LbProtocol::Tcp, Scheduler::Sh);
        let mut problems = |sorry: Endpoint| {
            vs.sorry_server = Some(sorry);
            let mut out = Vec::new();
            check([&vs], "lb", &mut out);
            out.iter().map(ToString::to_string).collect::<Vec<_>>()
        };
        assert_eq!(
            problems(Endpoint {
                ip: Ipv4Addr::UNSPECIFIED,
                port: 0
            }),
            [
                "lb[0].sorry_server.port: port 0 is not a port",
                "lb[0].sorry_server.ip: 0.0.0.0 cannot be a sorry server"
            ]
        );
        assert_eq!(
            problems(Endpoint { ip, port: 8080 }),
            ["lb[0].sorry_server.ip: a sorry server cannot be the virtual address itself"]
        );
        let fine = Endpoint {
            ip: Ipv4Addr::new(10, 0, 0, 9),
            port: 8080,
        };
        assert!(problems(fine).is_empty());
    }

    #[test]
    fn the_constructors_give_what_serde_gives_the_fields_left_out() {
        let vs: VirtualServer = serde_json::from_str(
            r#"{"vip":"10.64.1.2","port":80,"protocol":"udp","scheduler":"mh"}"#,
        )
        .unwrap();
        let ip = Ipv4Addr::new(10, 64, 1, 2);
        assert_eq!(
            vs,
            VirtualServer::new(ip, 80, LbProtocol::Udp, Scheduler::Mh)
        );
        let rs: RealServer = serde_json::from_str(r#"{"ip":"10.64.1.2","port":8080}"#).unwrap();
        assert_eq!(rs, RealServer::new(ip, 8080));
    }

    /// The problems of one checker on a real server (paths
    /// under `lb[0].real_servers[0].check`, that prefix dropped).
    fn http_problems(c: HealthCheck) -> Vec<String> {
        let ip = Ipv4Addr::new(10, 64, 1, 2);
        let mut vs = VirtualServer::new(ip, 80, LbProtocol::Tcp, Scheduler::Sh);
        vs.real_servers.push(RealServer {
            check: Some(c),
            ..RealServer::new(Ipv4Addr::new(10, 0, 0, 9), 8080)
        });
        let mut out = Vec::new();
        check([&vs], "lb", &mut out);
        out.iter()
            .map(|p| {
                let s = p.to_string();
                s.strip_prefix("lb[0].real_servers[0].check.")
                    .unwrap_or(&s)
                    .to_string()
            })
            .collect()
    }

    fn http(path: &str, status_code: Vec<u16>, virtualhost: Option<&str>) -> HealthCheck {
        HealthCheck::Http {
            ssl: false,
            urls: vec![UrlCheck {
                path: path.into(),
                status_code,
                digest: None,
            }],
            virtualhost: virtualhost.map(str::to_string),
            timing: CheckTiming::default(),
        }
    }

    #[test]
    fn a_url_path_or_virtualhost_that_would_break_the_request_is_refused() {
        let fine = http("/health?x=%20", vec![200], Some("www.example.com:8080"));
        assert_eq!(http_problems(fine), Vec::<String>::new());
        for path in ["/a b", "/a\tb", "/a\r\nX-Evil: 1", "/\u{7f}", "/a\u{a0}b"] {
            let got = http_problems(http(path, vec![], None));
            assert_eq!(got.len(), 1, "{path:?}: {got:?}");
            assert!(
                got[0].starts_with("urls[0].path: ") && got[0].contains("control characters"),
                "{path:?}: {got:?}"
            );
        }
        for host in ["www.example.com/x", "a b", "a\r\nX: y", ""] {
            let got = http_problems(http("/", vec![], Some(host)));
            assert_eq!(got.len(), 1, "{host:?}: {got:?}");
            assert!(
                got[0].starts_with("virtualhost: ") && got[0].contains("not a host name"),
                "{host:?}: {got:?}"
            );
        }
    }

    #[test]
    fn a_checker_loop_of_0_seconds_is_refused() {
        let timing = CheckTiming {
            delay_loop: Some(0),
            ..CheckTiming::default()
        };
        assert_eq!(
            http_problems(HealthCheck::Tcp { timing }),
            ["delay_loop: must be at least 1 second"]
        );
        let timing = CheckTiming {
            delay_loop: Some(1),
            ..CheckTiming::default()
        };
        assert!(http_problems(HealthCheck::Tcp { timing }).is_empty());
    }

    #[test]
    fn at_most_500_status_codes_are_accepted() {
        let every: Vec<u16> = (100..=599).collect();
        assert_eq!(every.len(), MAX_STATUS_CODES);
        assert!(http_problems(http("/", every.clone(), None)).is_empty());
        let mut more = every;
        more.push(200);
        assert_eq!(
            http_problems(http("/", more, None)),
            ["urls[0].status_code: 501 codes, at most 500"]
        );
        assert_eq!(
            http_problems(http("/", vec![200, 600], None)),
            ["urls[0].status_code: 600 is not an HTTP status"]
        );
    }

    #[test]
    fn a_report_goes_in_parts_that_add_up_to_it() {
        let verdict = |i: u16| HealthVerdict {
            key: HealthKey {
                protocol: LbProtocol::Tcp,
                vip: Ipv4Addr::new(10, 64, 1, 2),
                port: 80,
                real_ip: Ipv4Addr::new(10, 0, 0, 9),
                real_port: i,
            },
            liveness: Liveness::Down,
            reason: String::new(),
        };
        let full = HealthReport {
            full: true,
            verdicts: (1..=7).map(verdict).collect(),
        };
        let parts: Vec<HealthReport> = full.clone().chunks(3).collect();
        let shape: Vec<(bool, usize)> = parts.iter().map(|p| (p.full, p.verdicts.len())).collect();
        assert_eq!(shape, [(true, 3), (false, 3), (false, 1)]);
        let again: Vec<HealthVerdict> = parts.into_iter().flat_map(|p| p.verdicts).collect();
        assert_eq!(again, full.verdicts);
        // Small enough: itself.
        assert_eq!(
            full.clone().chunks(7).collect::<Vec<_>>(),
            std::slice::from_ref(&full)
        );
        // A full report of nothing still goes (it clears the gateway's).
        let empty = HealthReport {
            full: true,
            verdicts: Vec::new(),
        };
        assert_eq!(empty.clone().chunks(3).collect::<Vec<_>>(), [empty]);
        // Changes are never full; 0 is taken as 1.
        let changes = HealthReport {
            full: false,
            verdicts: full.verdicts[..2].to_vec(),
        };
        let parts: Vec<HealthReport> = changes.chunks(0).collect();
        assert_eq!(parts.len(), 2);
        assert!(parts.iter().all(|p| !p.full && p.verdicts.len() == 1));
    }
}
