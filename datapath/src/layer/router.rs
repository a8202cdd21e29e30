//! Distributed router, run by the sending agent: longest-prefix match over
//! the router's connected switches and static routes, TTL - 1 (ICMP time
//! exceeded at 0), MTU check (ICMP fragmentation needed for DF packets),
//! MAC rewrite (router MAC -> destination port MAC), and on to the
//! destination switch's VNI. Frames not addressed to the router pass.

use std::fmt;
use std::net::Ipv4Addr;

use control::MacAddr;
use geneve::icmpv4;
use ipnet::Ipv4Net;

use super::{
    Ctx, DropReason, Recorder, Step, SwitchName, Target, TepName, Verdict, Why as LayerWhy,
};
use crate::counters::Counters;
use crate::queue::Output;
use crate::tables::{EdgeRoute, Location, Route, Router, SwitchIdx, Tables, TepIdx};

/// Why the router decided as it did.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Why {
    /// Not addressed to the router.
    NotForRouter,
    /// No router on the frame's switch.
    NoRouter {
        switch: SwitchIdx,
    },
    /// To router `switch`'s router, but not IPv4.
    NotIpv4 {
        switch: SwitchIdx,
    },
    NoRoute {
        switch: SwitchIdx,
        dst: Ipv4Addr,
    },
    /// The route to the destination, and what became of the packet.
    Routed {
        via: Via,
        outcome: Outcome,
    },
    /// No route of the tier-1's: to the tier-0 on the edge.
    ToEdge {
        switch: SwitchIdx,
        dst: Ipv4Addr,
        ttl: u8,
        edge: EdgeRoute,
        outcome: Outcome,
    },
}

/// The matched route of the router on `switch`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Via {
    switch: SwitchIdx,
    prefix: Ipv4Net,
    egress: SwitchIdx,
    gateway: Option<Ipv4Addr>,
    next_hop: Ipv4Addr,
    ttl: u8,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Outcome {
    /// Forwarded to the next hop's port `mac` behind `tep`, rewritten from `router_mac`.
    Forward {
        mac: MacAddr,
        router_mac: MacAddr,
        tep: TepIdx,
    },
    /// TTL ran out (`sent`: the ICMP time exceeded went to the port).
    TtlExceeded {
        sent: bool,
    },
    /// DF and `len` bytes over the overlay MTU (`sent`: the ICMP error went out).
    FragNeeded {
        len: usize,
        sent: bool,
    },
    /// No DF and `len` bytes over the overlay MTU.
    TooBig {
        len: usize,
    },
    NoNeighbor,
    /// The next hop is the local port.
    Hairpin,
}

pub(crate) fn process<R: Recorder>(
    t: &Tables,
    ctx: &mut Ctx<'_>,
    out: &mut Output,
    c: &mut Counters,
    rec: &mut R,
) -> Step {
    if !ctx.to_router {
        rec.note(|| LayerWhy::Router(Why::NotForRouter));
        return Step::Next;
    }
    let switch = ctx.switch;
    let mut drop = |r, why| {
        rec.note(|| LayerWhy::Router(why));
        Step::Done(Verdict::Drop(r))
    };
    let Some(router) = t.router_of(switch) else {
        return drop(DropReason::ToRouter, Why::NoRouter { switch });
    };
    let Some(ip) = ctx.ipv4 else {
        return drop(DropReason::ToRouter, Why::NotIpv4 { switch });
    };
    let dst = ctx.route_dst();
    let ttl = ip.ttl.saturating_sub(ctx.hops);
    let Some((route, next_hop)) = t.route(router, dst) else {
        if let (true, Some(edge)) = (router.to_edge, t.edge) {
            return to_edge(t, router, edge, ctx, out, c, rec, ttl);
        }
        return drop(DropReason::NoRoute, Why::NoRoute { switch, dst });
    };
    let Route {
        prefix,
        switch: egress,
        next_hop: gateway,
    } = *route;
    let via = Via {
        switch,
        prefix,
        egress,
        gateway,
        next_hop,
        ttl,
    };
    let mut routed = |r, outcome| drop(r, Why::Routed { via, outcome });
    if let Err((r, outcome)) = limits(t, router, ctx, out, c, ttl) {
        return routed(r, outcome);
    }
    let Some(neighbor) = t.neighbor(egress, next_hop) else {
        return routed(DropReason::NoNeighbor, Outcome::NoNeighbor);
    };
    let Location::Remote(tep) = neighbor.at else {
        return routed(DropReason::Hairpin, Outcome::Hairpin);
    };
    ctx.rewrite = Some((neighbor.mac, router.mac));
    ctx.hops = ctx.hops.saturating_add(1);
    ctx.switch = egress;
    ctx.target = Some(Target::Unicast {
        tep,
        vni: t.switches[usize::from(egress)].vni,
    });
    let outcome = Outcome::Forward {
        mac: neighbor.mac,
        router_mac: router.mac,
        tep,
    };
    rec.note(|| LayerWhy::Router(Why::Routed { via, outcome }));
    Step::Next
}

/// TTL (ICMP time exceeded at 1) and the overlay MTU (ICMP fragmentation
/// needed for DF packets) of a packet the router forwards with `ttl` left.
fn limits(
    t: &Tables,
    router: &Router,
    ctx: &Ctx<'_>,
    out: &mut Output,
    c: &mut Counters,
    ttl: u8,
) -> Result<(), (DropReason, Outcome)> {
    if ttl <= 1 {
        let sent = icmp_error(t, router, ctx, out, c, icmpv4::TYPE_TIME_EXCEEDED, 0, 0);
        return Err((DropReason::TtlExceeded, Outcome::TtlExceeded { sent }));
    }
    let mtu = t.host.overlay_mtu;
    let len = ctx.wire_l3_len();
    if len <= usize::from(mtu) {
        return Ok(());
    }
    if !ctx.ipv4.is_some_and(|ip| ip.dont_frag) {
        return Err((DropReason::TooBig, Outcome::TooBig { len }));
    }
    let code = icmpv4::CODE_FRAG_NEEDED;
    let rest = u32::from(mtu);
    let sent = icmp_error(
        t,
        router,
        ctx,
        out,
        c,
        icmpv4::TYPE_DEST_UNREACH,
        code,
        rest,
    );
    Err((DropReason::FragNeeded, Outcome::FragNeeded { len, sent }))
}

/// What no route of a tier-1 covers goes to the tier-0 on the edge, over
/// the transit segment: TTL and MTU checked as for any route, MACs
/// rewritten to the tier-0's.
#[allow(clippy::too_many_arguments)]
fn to_edge<R: Recorder>(
    t: &Tables,
    router: &Router,
    edge: EdgeRoute,
    ctx: &mut Ctx<'_>,
    out: &mut Output,
    c: &mut Counters,
    rec: &mut R,
    ttl: u8,
) -> Step {
    let switch = ctx.switch;
    let dst = ctx.route_dst();
    let mut done = |r, outcome| {
        rec.note(|| {
            LayerWhy::Router(Why::ToEdge {
                switch,
                dst,
                ttl,
                edge,
                outcome,
            })
        });
        Step::Done(Verdict::Drop(r))
    };
    if let Err((r, outcome)) = limits(t, router, ctx, out, c, ttl) {
        return done(r, outcome);
    }
    ctx.rewrite = Some((edge.mac, router.mac));
    ctx.hops = ctx.hops.saturating_add(1);
    ctx.target = Some(Target::Unicast {
        tep: edge.tep,
        vni: edge.transit_vni,
    });
    let outcome = Outcome::Forward {
        mac: edge.mac,
        router_mac: router.mac,
        tep: edge.tep,
    };
    rec.note(|| {
        LayerWhy::Router(Why::ToEdge {
            switch,
            dst,
            ttl,
            edge,
            outcome,
        })
    });
    Step::Next
}

/// Sends an ICMP error from the router's address on the sender's switch back
/// to the local port. Failure to build one (e.g. the offending packet is
/// itself an ICMP error) only means no error is sent. Returns whether one was.
#[allow(clippy::too_many_arguments)]
fn icmp_error(
    t: &Tables,
    router: &Router,
    ctx: &Ctx<'_>,
    out: &mut Output,
    c: &mut Counters,
    icmp_type: u8,
    code: u8,
    rest: u32,
) -> bool {
    if let Some(t0) = &t.tier0 {
        // On the edge the frame came in on the uplink, the downlink or the
        // health-check port (or from the overlay, hairpinned): the tier-0
        // sends the error back the way it came. (A TTL of 2 from outside
        // passes the tier-0 and runs out here.)
        return super::tier0::icmp_error(t, t0, ctx, out, c, icmp_type, code, rest);
    }
    let from = t.switches[usize::from(ctx.switch)].gateway_ip;
    let mut len = 0;
    let pushed = out.port.push_with(from, |buf| {
        len = icmpv4::emit_error_frame(buf, ctx.frame, router.mac.0, from, icmp_type, code, rest)
            .ok()?;
        Some(len)
    });
    if pushed {
        c.port_tx.add(len);
    }
    pushed
}

impl Outcome {
    /// The text of a TTL or MTU drop (nothing for the other outcomes).
    fn write_limit(&self, f: &mut fmt::Formatter<'_>, ttl: u8, mtu: u16) -> fmt::Result {
        let sent = |sent: bool, what: &'static str| if sent { what } else { "" };
        match *self {
            Outcome::TtlExceeded { sent: s } => write!(
                f,
                ", ttl {ttl}: drop (ttl_exceeded){}",
                sent(s, "; ICMP time exceeded sent to the port")
            ),
            Outcome::FragNeeded { len, sent: s } => write!(
                f,
                ": {len} bytes with DF exceed the overlay MTU {mtu}: drop (frag_needed){}",
                sent(s, "; ICMP fragmentation needed sent to the port")
            ),
            Outcome::TooBig { len } => write!(
                f,
                ": {len} bytes exceed the overlay MTU {mtu} (no DF): drop (too_big)"
            ),
            Outcome::Forward { .. } | Outcome::NoNeighbor | Outcome::Hairpin => Ok(()),
        }
    }
}

impl Why {
    pub(crate) fn write(&self, t: &Tables, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = |switch| t.router_of(switch).map_or("?", |r| r.name.as_str());
        match *self {
            Why::NotForRouter => f.write_str("not addressed to the router: pass"),
            Why::NoRouter { switch } => write!(
                f,
                "no router on {}: drop (to_router)",
                SwitchName(t, switch)
            ),
            Why::NotIpv4 { switch } => write!(f, "{}: not IPv4: drop (to_router)", name(switch)),
            Why::NoRoute { switch, dst } => {
                write!(f, "{}: no route to {dst}: drop (no_route)", name(switch))
            }
            Why::ToEdge {
                switch,
                dst,
                ttl,
                edge,
                outcome,
            } => {
                write!(
                    f,
                    "{} 0.0.0.0/0 to the tier-0 for {dst} (no overlay route) on transit vni {:#x}",
                    name(switch),
                    edge.transit_vni
                )?;
                match outcome {
                    Outcome::Forward {
                        mac,
                        router_mac,
                        tep,
                    } => write!(
                        f,
                        ", ttl {ttl} -> {}, tier-0 {mac} behind {}; MAC rewrite {router_mac} -> {mac}",
                        ttl.saturating_sub(1),
                        TepName(t, tep)
                    ),
                    other => other.write_limit(f, ttl, t.host.overlay_mtu),
                }
            }
            Why::Routed { via, outcome } => {
                let egress = t
                    .switches
                    .get(usize::from(via.egress))
                    .map_or("?", |s| s.name.as_str());
                write!(f, "{} {}", name(via.switch), via.prefix)?;
                match via.gateway {
                    None => write!(f, " connected via {egress}")?,
                    Some(nh) => write!(f, " via {nh} on {egress} (static)")?,
                }
                let (mtu, next_hop, ttl) = (t.host.overlay_mtu, via.next_hop, via.ttl);
                match outcome {
                    Outcome::Forward {
                        mac,
                        router_mac,
                        tep,
                    } => write!(
                        f,
                        ", ttl {ttl} -> {}, next hop {next_hop} is {mac} behind {}; \
                         MAC rewrite {router_mac} -> {mac}",
                        ttl.saturating_sub(1),
                        TepName(t, tep)
                    ),
                    Outcome::NoNeighbor => write!(
                        f,
                        ": no port owns next hop {next_hop} on {egress}: drop (no_neighbor)"
                    ),
                    Outcome::Hairpin => {
                        write!(f, ": next hop {next_hop} is the local port: drop (hairpin)")
                    }
                    other => other.write_limit(f, ttl, mtu),
                }
            }
        }
    }
}
