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
use crate::tables::{Location, Route, Router, SwitchIdx, Tables, TepIdx};

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
    let Some((route, next_hop)) = t.route(router, ip.dst) else {
        return drop(
            DropReason::NoRoute,
            Why::NoRoute {
                switch,
                dst: ip.dst,
            },
        );
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
        ttl: ip.ttl,
    };
    let mut routed = |r, outcome| drop(r, Why::Routed { via, outcome });
    if ip.ttl <= 1 {
        let sent = icmp_error(t, router, ctx, out, c, icmpv4::TYPE_TIME_EXCEEDED, 0, 0);
        return routed(DropReason::TtlExceeded, Outcome::TtlExceeded { sent });
    }
    let mtu = t.host.overlay_mtu;
    let len = ctx.wire_l3_len();
    if len > usize::from(mtu) {
        if ip.dont_frag {
            let code = icmpv4::CODE_FRAG_NEEDED;
            let sent = icmp_error(
                t,
                router,
                ctx,
                out,
                c,
                icmpv4::TYPE_DEST_UNREACH,
                code,
                u32::from(mtu),
            );
            return routed(DropReason::FragNeeded, Outcome::FragNeeded { len, sent });
        }
        return routed(DropReason::TooBig, Outcome::TooBig { len });
    }
    let Some(neighbor) = t.neighbor(egress, next_hop) else {
        return routed(DropReason::NoNeighbor, Outcome::NoNeighbor);
    };
    let Location::Remote(tep) = neighbor.at else {
        return routed(DropReason::Hairpin, Outcome::Hairpin);
    };
    ctx.rewrite = Some((neighbor.mac, router.mac));
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
                    Outcome::TtlExceeded { sent } => write!(
                        f,
                        ", ttl {ttl}: drop (ttl_exceeded){}",
                        if sent {
                            "; ICMP time exceeded sent to the port"
                        } else {
                            ""
                        }
                    ),
                    Outcome::FragNeeded { len, sent } => write!(
                        f,
                        ": {len} bytes with DF exceed the overlay MTU {mtu}: drop (frag_needed){}",
                        if sent {
                            "; ICMP fragmentation needed sent to the port"
                        } else {
                            ""
                        }
                    ),
                    Outcome::TooBig { len } => write!(
                        f,
                        ": {len} bytes exceed the overlay MTU {mtu} (no DF): drop (too_big)"
                    ),
                    Outcome::NoNeighbor => write!(
                        f,
                        ": no port owns next hop {next_hop} on {egress}: drop (no_neighbor)"
                    ),
                    Outcome::Hairpin => {
                        write!(f, ": next hop {next_hop} is the local port: drop (hairpin)")
                    }
                }
            }
        }
    }
}
