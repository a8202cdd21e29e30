//! The load balancer, asked from the control side and answered by the
//! overlay loop between batches (`load-balancers`, and every metrics
//! scrape). The engine's view becomes the local API's types here:
//! `ipvsadm -Ln`'s facts, a real server's state in the words the view
//! prints. Building an answer allocates; that happens on request only,
//! never per packet.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::mpsc::Sender;

use agent_api::{
    LbRates, LbRealServerView, LbServiceView, LbStats, LbTemplate, LoadBalancersReply,
};
use control::lb::{ForwardKind, LbProtocol, LbService, Liveness};
use datapath::lbstate::LbState;
use lb::engine::{Rates, RealView, ServiceView, Stats};

/// Which virtual server (`None`: all of them, without templates).
pub type LbQuery = Option<(LbProtocol, SocketAddrV4)>;

/// A request with the channel its answer goes to (`None`: no balancer).
#[derive(Debug)]
pub struct LbRequest {
    pub query: LbQuery,
    pub reply: Sender<Option<LoadBalancersReply>>,
}

/// Answers `q` from the thread that owns the balancer.
pub fn answer(
    lb: Option<&LbState>,
    services: &[LbService],
    edge: bool,
    q: LbQuery,
    now_ns: u64,
) -> Option<LoadBalancersReply> {
    let lb = lb?;
    let view = lb.view(now_ns);
    let wanted = |s: &ServiceView| {
        q.is_none_or(|(p, ep)| s.protocol == p && s.vip == *ep.ip() && s.port == ep.port())
    };
    let mut out = LoadBalancersReply {
        role: if edge { "edge" } else { "distributed" }.into(),
        services: Vec::new(),
        connections: u64::try_from(view.connections).unwrap_or(u64::MAX),
        capacity: u64::try_from(view.capacity).unwrap_or(u64::MAX),
        drops: view
            .drops
            .iter()
            .map(|d| (d.reason.to_string(), d.count))
            .collect(),
    };
    for s in view.services.iter().filter(|s| wanted(s)) {
        let cfg = services
            .iter()
            .find(|c| c.vs.protocol == s.protocol && c.vs.vip == s.vip && c.vs.port == s.port);
        let mut v = service(s, cfg);
        if q.is_some() {
            v.persistence = lb
                .engine()
                .templates(now_ns)
                .filter(|t| *t.vip.ip() == s.vip && t.vip.port() == s.port)
                .map(|t| LbTemplate {
                    client: t.client,
                    server: t.server,
                    connections: u64::from(t.connections),
                    expires_in_s: t
                        .expires_in_secs
                        .unwrap_or(u64::from(s.persistence_timeout.unwrap_or(0))),
                })
                .collect();
            // Servers gone from the config, listed while connections remain.
            let vip = SocketAddrV4::new(s.vip, s.port);
            for d in view
                .detached
                .iter()
                .filter(|d| d.protocol == s.protocol.number() && d.vip == vip && !d.sorry)
            {
                v.real_servers.push(real(&d.server, "removed"));
            }
        }
        out.services.push(v);
    }
    Some(out)
}

fn service(s: &ServiceView, cfg: Option<&LbService>) -> LbServiceView {
    let mut real_servers: Vec<LbRealServerView> = s
        .real_servers
        .iter()
        .map(|r| {
            let (configured, live) = configured(r, cfg);
            LbRealServerView {
                checker: configured
                    .and_then(|rs| rs.check.as_ref())
                    .map(|c| c.kind().to_string()),
                ..real(r, state_of(r, live))
            }
        })
        .collect();
    // Failed their check and not inhibited: out of the pool, listed for
    // the API (ipvsadm's layout leaves them out).
    if let Some(c) = cfg {
        for (rs, _) in
            c.vs.real_servers
                .iter()
                .zip(&c.live)
                .filter(|(_, l)| **l == Liveness::Down)
        {
            if !real_servers
                .iter()
                .any(|r| r.ip == rs.ip && r.port == rs.port)
            {
                real_servers.push(down(rs, c.vs.kind));
            }
        }
    }
    if let Some(sorry) = s.sorry_server.as_ref().filter(|_| s.sorry_active) {
        real_servers.push(real(sorry, "sorry"));
    }
    LbServiceView {
        protocol: s.protocol.upper().into(),
        vip: s.vip,
        port: s.port,
        scheduler: s.scheduler.name().into(),
        kind: match s.kind {
            ForwardKind::Nat => "nat",
            ForwardKind::Fnat => "fnat",
        }
        .into(),
        persistence_timeout: s.persistence_timeout,
        persistence_mask: (s.persistence_granularity < 32)
            .then(|| Ipv4Addr::from(control::lb::client_mask(s.persistence_granularity))),
        quorum_lost: !s.quorum_up,
        sorry_server: s
            .sorry_server
            .as_ref()
            .map(|r| SocketAddrV4::new(r.ip, r.port)),
        stats: stats(&s.stats),
        rates: rates(&s.rates),
        real_servers,
        persistence: Vec::new(),
    }
}

/// A listed real server's entry in the config, and its health verdict.
fn configured<'a>(
    r: &RealView,
    cfg: Option<&'a LbService>,
) -> (Option<&'a control::lb::RealServer>, Option<Liveness>) {
    let Some(c) = cfg else {
        return (None, None);
    };
    match c
        .vs
        .real_servers
        .iter()
        .position(|x| x.ip == r.ip && x.port == r.port)
    {
        Some(i) => (c.vs.real_servers.get(i), c.live.get(i).copied()),
        None => (None, None),
    }
}

/// A listed real server's state: drained at weight 0, inhibited when its
/// check failed (`inhibit_on_failure` keeps it listed), up otherwise.
fn state_of(r: &RealView, live: Option<Liveness>) -> &'static str {
    match live {
        Some(Liveness::Down) => "inhibited",
        _ if r.weight == 0 => "drain",
        _ => "up",
    }
}

/// A configured real server out of the pool since its check failed.
fn down(rs: &control::lb::RealServer, kind: ForwardKind) -> LbRealServerView {
    LbRealServerView {
        ip: rs.ip,
        port: rs.port,
        forward: kind.ipvsadm().into(),
        weight: 0,
        config_weight: rs.weight,
        state: "down".into(),
        active: 0,
        inactive: 0,
        stats: LbStats::default(),
        rates: LbRates::default(),
        checker: rs.check.as_ref().map(|c| c.kind().into()),
        check: None,
    }
}

fn real(r: &RealView, state: &str) -> LbRealServerView {
    LbRealServerView {
        ip: r.ip,
        port: r.port,
        forward: r.forward.into(),
        weight: r.weight,
        config_weight: r.configured_weight,
        state: state.into(),
        active: u64::from(r.active),
        inactive: u64::from(r.inactive),
        stats: stats(&r.stats),
        rates: rates(&r.rates),
        checker: None,
        check: None,
    }
}

fn stats(s: &Stats) -> LbStats {
    LbStats {
        conns: s.conns,
        in_packets: s.inpkts,
        out_packets: s.outpkts,
        in_bytes: s.inbytes,
        out_bytes: s.outbytes,
    }
}

fn rates(r: &Rates) -> LbRates {
    LbRates {
        cps: r.cps,
        in_pps: r.inpps,
        out_pps: r.outpps,
        in_bps: r.inbps,
        out_bps: r.outbps,
    }
}
