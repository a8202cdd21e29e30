//! What the balancer shows, as plain data (serde `Serialize`): the
//! virtual servers in configuration order with their real servers, the
//! way `ipvsadm -Ln` lists them (address, port, forward kind, effective
//! weight, ActiveConn, InActConn), with `--stats` counters and `--rate`
//! rates; servers removed from the configuration that still carry
//! connections; drops by reason; the persistence templates and the
//! connections (`ipvsadm -Lnc`). Built on demand (these allocate; the
//! packet path does not).

use std::net::{Ipv4Addr, SocketAddrV4};

use control::lb::{ForwardKind, LbProtocol, Scheduler};
use serde::Serialize;

use super::decision::DropReason;
use super::sched::NONE;
use super::state::ConnState;
use super::stats::{Rates, Stats};
use super::table::FNAT;
use super::{Balancer, Dest, idle_ticks, key_parts, tick_of};

/// One real server (or sorry server).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RealView {
    pub ip: Ipv4Addr,
    pub port: u16,
    /// `Masq` / `FullNat`, as `ipvsadm -Ln`'s Forward column.
    pub forward: &'static str,
    /// The weight it is scheduled with now (0: drained, down, removed).
    pub weight: u32,
    pub configured_weight: u32,
    /// ActiveConn (ESTABLISHED TCP) and InActConn (everything else).
    pub active: u32,
    pub inactive: u32,
    /// Persistence templates naming it.
    pub persistent: u32,
    pub stats: Stats,
    pub rates: Rates,
}

/// One virtual server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceView {
    pub protocol: LbProtocol,
    pub vip: Ipv4Addr,
    pub port: u16,
    pub scheduler: Scheduler,
    pub kind: ForwardKind,
    pub persistence_timeout: Option<u32>,
    pub persistence_granularity: u8,
    /// Full NAT's source address.
    pub snat_ip: Option<Ipv4Addr>,
    pub quorum: u32,
    pub hysteresis: u32,
    /// The total weight of live servers, and whether the quorum holds.
    pub live_weight: u64,
    pub quorum_up: bool,
    /// In configuration order; servers down without `inhibit_on_failure`
    /// are not listed (keepalived removes them).
    pub real_servers: Vec<RealView>,
    pub sorry_server: Option<RealView>,
    /// Whether new connections go to the sorry server now.
    pub sorry_active: bool,
    pub stats: Stats,
    pub rates: Rates,
}

/// A server removed from the configuration that still has connections
/// or templates (it is freed at a later configuration once it has none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DetachedView {
    /// Its former virtual server: protocol number, address and port.
    pub protocol: u8,
    pub vip: SocketAddrV4,
    pub sorry: bool,
    pub server: RealView,
}

impl DetachedView {
    /// Its former virtual server as operators name it: `TCP 10.0.0.1:80`.
    pub fn service(&self) -> String {
        let proto = LbProtocol::from_number(self.protocol).map_or("IP", LbProtocol::upper);
        format!("{proto} {}", self.vip)
    }
}

/// Drops of one reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DropCount {
    pub reason: &'static str,
    pub count: u64,
}

/// The balancer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LbView {
    pub services: Vec<ServiceView>,
    pub detached: Vec<DetachedView>,
    pub connections: usize,
    pub capacity: usize,
    pub templates: usize,
    /// Connections made, expired; of the made ones, to a sorry server.
    pub created: u64,
    pub expired: u64,
    pub sorry_connections: u64,
    pub templates_created: u64,
    pub templates_expired: u64,
    pub icmp_errors: u64,
    pub drops: Vec<DropCount>,
    pub memory_bytes: usize,
}

/// One persistence template (`ipvsadm -Lnc`'s NONE entries).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TemplateView {
    pub protocol: u8,
    /// The client address, masked, and the mask's length.
    pub client: Ipv4Addr,
    pub mask: u8,
    pub vip: SocketAddrV4,
    pub server: SocketAddrV4,
    /// Connections using it.
    pub connections: u32,
    /// Seconds until it expires (`None` while connections use it).
    pub expires_in_secs: Option<u64>,
    /// Replaced (its server can no longer take new connections) and
    /// waiting for its last connection to end.
    pub retired: bool,
}

/// One connection (`ipvsadm -Lnc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ConnView {
    pub protocol: u8,
    pub client: SocketAddrV4,
    pub vip: SocketAddrV4,
    /// Full NAT: the source the real server sees.
    pub snat: Option<SocketAddrV4>,
    pub real: SocketAddrV4,
    pub state: ConnState,
    pub expires_in_secs: u64,
}

fn sa(ip: u32, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::from(ip), port)
}

/// Seconds left of `timeout` ticks for something seen at `seen`.
fn left_secs(seen: u32, timeout: u32, now: u32) -> u64 {
    let left = timeout.saturating_sub(idle_ticks(seen, now));
    nat::clock::ns_of_ticks(left) / 1_000_000_000
}

fn real_view(d: &Dest) -> RealView {
    RealView {
        ip: Ipv4Addr::from(d.ip),
        port: d.port,
        forward: d.kind.ipvsadm(),
        weight: d.weight,
        configured_weight: d.conf_weight,
        active: d.active,
        inactive: d.inactive,
        persistent: d.persist,
        stats: d.stats,
        rates: d.est.rates(),
    }
}

impl Balancer {
    /// Everything shown, at `now_ns`.
    pub fn view(&self, now_ns: u64) -> LbView {
        let _ = now_ns;
        let services = self
            .services
            .iter()
            .map(|s| {
                let vs = &s.vs;
                let reals = s
                    .members
                    .iter()
                    .filter_map(|m| self.dests.get(m.dest as usize))
                    .map(real_view)
                    .collect();
                let sorry = s.sorry.and_then(|d| self.dests.get(d as usize));
                let schedulable = s.members.iter().any(|m| m.weight > 0);
                ServiceView {
                    protocol: vs.protocol,
                    vip: vs.vip,
                    port: vs.port,
                    scheduler: vs.scheduler,
                    kind: vs.kind,
                    persistence_timeout: vs.persistence_timeout,
                    persistence_granularity: vs.persistence_granularity,
                    snat_ip: (vs.kind == ForwardKind::Fnat).then(|| Ipv4Addr::from(s.snat)),
                    quorum: vs.quorum,
                    hysteresis: vs.hysteresis,
                    live_weight: s.live_weight,
                    quorum_up: s.quorum_up,
                    real_servers: reals,
                    sorry_server: sorry.map(real_view),
                    sorry_active: sorry.is_some() && (!s.quorum_up || !schedulable),
                    stats: s.stats,
                    rates: s.est.rates(),
                }
            })
            .collect();
        let detached = self
            .dests
            .iter()
            .filter(|d| !d.free && d.svc == NONE)
            .map(|d| {
                let (proto, ip, port) = key_parts(d.svc_key);
                DetachedView {
                    protocol: proto,
                    vip: sa(ip, port),
                    sorry: d.sorry,
                    server: real_view(d),
                }
            })
            .collect();
        let c = &self.counters;
        LbView {
            services,
            detached,
            connections: self.conns.len(),
            capacity: self.conns.capacity(),
            templates: self.tmpls.len(),
            created: c.created,
            expired: c.expired,
            sorry_connections: c.sorry_conns,
            templates_created: c.templates_created,
            templates_expired: c.templates_expired,
            icmp_errors: c.icmp_errors,
            drops: DropReason::ALL
                .iter()
                .map(|&r| DropCount {
                    reason: r.name(),
                    count: c.drops[r as usize],
                })
                .collect(),
            memory_bytes: self.memory_bytes(),
        }
    }

    /// The persistence templates, in no particular order.
    pub fn templates(&self, now_ns: u64) -> impl Iterator<Item = TemplateView> + '_ {
        let now = tick_of(now_ns);
        self.tmpls
            .slots()
            .iter()
            .filter(|t| t.in_use())
            .map(move |t| {
                let server = self
                    .dests
                    .get(t.dest as usize)
                    .map_or(sa(0, 0), |d| sa(d.ip, d.port));
                let mask = self
                    .by_key
                    .get(&super::svc_key(t.proto, t.vip, t.vport))
                    .and_then(|&i| self.services.get(i as usize))
                    .map_or(32, |s| s.vs.persistence_granularity);
                TemplateView {
                    protocol: t.proto,
                    client: Ipv4Addr::from(t.client),
                    mask,
                    vip: sa(t.vip, t.vport),
                    server,
                    connections: t.refs,
                    expires_in_secs: (t.refs == 0).then(|| left_secs(t.seen, t.timeout, now)),
                    retired: !t.indexed(),
                }
            })
    }

    /// The connections, in no particular order.
    pub fn connections(&self, now_ns: u64) -> impl Iterator<Item = ConnView> + '_ {
        let now = tick_of(now_ns);
        self.conns.iter().map(move |c| ConnView {
            protocol: c.proto,
            client: sa(c.client_ip, c.client_port),
            vip: sa(c.vip, c.vport),
            snat: (c.flags & FNAT != 0).then(|| sa(c.local_ip, c.local_port)),
            real: sa(c.real_ip, c.real_port),
            state: ConnState::from_code(c.state),
            expires_in_secs: left_secs(c.seen, self.timeout_of(c.state), now),
        })
    }
}
