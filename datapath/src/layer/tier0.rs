//! The edge's tier-0 router: longest-prefix match over the uplink's
//! connected subnet, the downlink's (the underlay subnet), static routes,
//! the default route and the tier-1s' switch subnets (the overlay); TTL - 1
//! (ICMP time exceeded at 0), MTU of the way out (the uplink's, the
//! underlay's, or the overlay's: ICMP fragmentation needed for DF packets,
//! which is how PMTU discovery works across the edge); ICMP echo to the
//! tier-0's own addresses answered. Its own ICMP comes from the address of
//! the interface the packet came in on (the uplink's primary address from
//! the overlay) and goes back the way the packet came: out of the uplink or
//! the downlink, or into the overlay through the sender's tier-1. Routed to
//! the uplink or the downlink, the frame goes on to `uplink-out` /
//! `downlink-out`; into the overlay, to the tier-1 (`router`) and `encap`.
//! It routes with the destination NAT gave the packet (from the overlay
//! only what came on the transit segment reaches it: decap refuses the
//! rest on the edge). Dropped: routing
//! between the uplink and the downlink, or back out of the interface a
//! frame came in on (`no_route`: only the overlay is routed to and from
//! them); from the downlink to the overlay untranslated while the tier-0
//! source-NATs toward the downlink (`downlink_policy`); and traffic to the
//! downlink's (underlay) address from outside the overlay, which is the
//! host's own (`not_for_edge`).

use std::fmt;
use std::net::Ipv4Addr;

use control::MacAddr;
use geneve::icmpv4;
use ipnet::Ipv4Net;

use super::{Ctx, DropReason, Recorder, Step, Verdict, Why as LayerWhy};
use crate::counters::Counters;
use crate::edge::Iface;
use crate::queue::Output;
use crate::tables::{Location, RouterIdx, T0Hop, T0Origin, Tables, TepIdx, Tier0};

/// Why the tier-0 decided as it did.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Why {
    NotIpv4,
    /// To one of the tier-0's own addresses.
    Own {
        dst: Ipv4Addr,
        answered: Option<bool>,
    },
    NoRoute {
        dst: Ipv4Addr,
    },
    /// Received on interface `from` and routed out of `to` (the uplink or
    /// the downlink): not routed.
    Unrouted {
        from: Iface,
        to: Iface,
        dst: Ipv4Addr,
        prefix: Ipv4Net,
    },
    /// From the downlink to the overlay, not an answer NAT translated,
    /// while the overlay is source-NATed toward the downlink.
    DownlinkPolicy {
        src: Ipv4Addr,
        dst: Ipv4Addr,
    },
    /// To the downlink's (underlay) address from outside the overlay: the
    /// host's own traffic.
    HostOwn {
        dst: Ipv4Addr,
    },
    Routed {
        dst: Ipv4Addr,
        prefix: Ipv4Net,
        origin: T0Origin,
        hop: T0Hop,
        ttl: u8,
        outcome: Outcome,
    },
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Outcome {
    Forward,
    /// TTL ran out (`sent`: the ICMP time exceeded went back).
    TtlExceeded {
        sent: bool,
    },
    /// DF and `len` bytes over the way out's `mtu`.
    FragNeeded {
        len: usize,
        mtu: u16,
        sent: bool,
    },
    TooBig {
        len: usize,
        mtu: u16,
    },
}

pub(crate) fn process<R: Recorder>(
    t: &Tables,
    ctx: &mut Ctx<'_>,
    out: &mut Output,
    c: &mut Counters,
    rec: &mut R,
) -> Step {
    let mut done = |r, why| {
        rec.note(|| LayerWhy::Tier0(why));
        Step::Done(Verdict::Drop(r))
    };
    let Some(t0) = &t.tier0 else {
        return done(DropReason::NotForEdge, Why::NotIpv4);
    };
    let Some(ip) = ctx.ipv4 else {
        return done(DropReason::NotForEdge, Why::NotIpv4);
    };
    let dst = ctx.route_dst();
    let underlay = dst == t0.downlink_ip();
    if underlay && !ctx.transit {
        return done(DropReason::NotForEdge, Why::HostOwn { dst });
    }
    if t0.owns(dst) || underlay {
        if ip.protocol == geneve::ipv4::PROTO_ICMP && ip.l4_first == icmpv4::TYPE_ECHO_REQUEST {
            let answered = echo_reply(t, t0, ctx, out, c);
            rec.note(|| {
                LayerWhy::Tier0(Why::Own {
                    dst,
                    answered: Some(answered),
                })
            });
            return Step::Done(if answered {
                Verdict::Replied
            } else {
                Verdict::Drop(DropReason::TxFull)
            });
        }
        return done(
            DropReason::ToRouter,
            Why::Own {
                dst,
                answered: None,
            },
        );
    }
    let Some(route) = t0.route(dst) else {
        return done(DropReason::NoRoute, Why::NoRoute { dst });
    };
    let (prefix, origin, hop) = (route.prefix, route.origin, route.hop);
    let to = match hop {
        T0Hop::Uplink(_) => Some(Iface::Uplink),
        T0Hop::Downlink(_) => Some(Iface::Downlink),
        T0Hop::Probe => Some(Iface::Probe),
        T0Hop::Tier1(_) => None,
    };
    if let (Some(from), Some(to)) = (ctx.came_in, to) {
        return done(
            DropReason::NoRoute,
            Why::Unrouted {
                from,
                to,
                dst,
                prefix,
            },
        );
    }
    if ctx.came_in == Some(Iface::Downlink) && t0.underlay_snat && ctx.nat.is_none() {
        return done(
            DropReason::DownlinkPolicy,
            Why::DownlinkPolicy { src: ip.src, dst },
        );
    }
    let ttl = ip.ttl.saturating_sub(ctx.hops);
    let mut routed = |r, outcome| {
        done(
            r,
            Why::Routed {
                dst,
                prefix,
                origin,
                hop,
                ttl,
                outcome,
            },
        )
    };
    if ttl <= 1 {
        let sent = icmp_error(t, t0, ctx, out, c, icmpv4::TYPE_TIME_EXCEEDED, 0, 0);
        return routed(DropReason::TtlExceeded, Outcome::TtlExceeded { sent });
    }
    let mtu = match hop {
        T0Hop::Uplink(_) => t0.uplink_mtu,
        T0Hop::Downlink(_) => t0.downlink_mtu,
        T0Hop::Tier1(_) | T0Hop::Probe => t.host.overlay_mtu,
    };
    let len = ctx.wire_l3_len();
    if len > usize::from(mtu) {
        if ip.dont_frag {
            let code = icmpv4::CODE_FRAG_NEEDED;
            let sent = icmp_error(
                t,
                t0,
                ctx,
                out,
                c,
                icmpv4::TYPE_DEST_UNREACH,
                code,
                u32::from(mtu),
            );
            return routed(
                DropReason::FragNeeded,
                Outcome::FragNeeded { len, mtu, sent },
            );
        }
        return routed(DropReason::TooBig, Outcome::TooBig { len, mtu });
    }
    ctx.hops = ctx.hops.saturating_add(1);
    match hop {
        T0Hop::Uplink(nh) => ctx.out_to = Some((Iface::Uplink, nh.unwrap_or(dst))),
        T0Hop::Downlink(nh) => ctx.out_to = Some((Iface::Downlink, nh.unwrap_or(dst))),
        T0Hop::Probe => ctx.out_to = Some((Iface::Probe, dst)),
        T0Hop::Tier1(ri) => {
            let first = t
                .routers
                .get(usize::from(ri))
                .and_then(|r| r.switches.first().copied());
            if let Some(si) = first {
                ctx.switch = si;
            }
            ctx.to_router = true;
        }
    }
    rec.note(|| {
        LayerWhy::Tier0(Why::Routed {
            dst,
            prefix,
            origin,
            hop,
            ttl,
            outcome: Outcome::Forward,
        })
    });
    Step::Next
}

/// An echo reply from the tier-0, back the way the request came.
fn echo_reply(t: &Tables, t0: &Tier0, ctx: &Ctx<'_>, out: &mut Output, c: &mut Counters) -> bool {
    let mac = super::uplink::own(t0, ctx.came_in.unwrap_or(Iface::Uplink)).0;
    let build = |buf: &mut [u8]| icmpv4::emit_echo_reply_frame(buf, ctx.frame, mac.0).ok();
    answer(t, t0, ctx, out, c, build)
}

/// An ICMP error from the tier-0 about the frame, back the way it came (it
/// quotes the packet as its sender sent it): from the address of the
/// interface it came in on, the uplink's primary address from the overlay.
#[allow(clippy::too_many_arguments)]
pub(crate) fn icmp_error(
    t: &Tables,
    t0: &Tier0,
    ctx: &Ctx<'_>,
    out: &mut Output,
    c: &mut Counters,
    icmp_type: u8,
    code: u8,
    rest: u32,
) -> bool {
    let (mac, from) = super::uplink::own(t0, ctx.came_in.unwrap_or(Iface::Uplink));
    let build = |buf: &mut [u8]| {
        icmpv4::emit_error_frame(buf, ctx.frame, mac.0, from, icmp_type, code, rest).ok()
    };
    answer(t, t0, ctx, out, c, build)
}

/// Sends what `build` writes (an Ethernet frame answering `ctx.frame`)
/// back to the frame's sender: out of the uplink or the downlink to the
/// MAC it came from, or into the overlay to the sender's port.
fn answer(
    t: &Tables,
    t0: &Tier0,
    ctx: &Ctx<'_>,
    out: &mut Output,
    c: &mut Counters,
    build: impl FnOnce(&mut [u8]) -> Option<usize>,
) -> bool {
    if let Some(iface) = ctx.came_in {
        return super::uplink::send(out, c, iface, build);
    }
    let Some(src) = ctx.ipv4.map(|ip| ip.src) else {
        return false;
    };
    let Some((router_mac, mac, tep, vni)) = overlay_port(t, t0, src) else {
        return false;
    };
    super::encap::encapsulate(t, out, c, tep, vni, |buf| {
        let len = build(buf)?;
        let mut eth = geneve::ethernet::Frame::new_checked(&mut buf[..len]).ok()?;
        eth.set_dst(mac.0);
        eth.set_src(router_mac.0);
        Some(len)
    })
}

/// The overlay port owning `ip` behind one of the tier-0's tier-1s: the
/// tier-1's MAC, the port's MAC, its endpoint and its switch's VNI.
fn overlay_port(t: &Tables, t0: &Tier0, ip: Ipv4Addr) -> Option<(MacAddr, MacAddr, TepIdx, u32)> {
    t0.tier1s.iter().find_map(|&ri: &RouterIdx| {
        let router = t.routers.get(usize::from(ri))?;
        let (route, _) = t.route(router, ip)?;
        let n = t.neighbor(route.switch, ip)?;
        let Location::Remote(tep) = n.at else {
            return None;
        };
        let vni = t.switches.get(usize::from(route.switch))?.vni;
        Some((router.mac, n.mac, tep, vni))
    })
}

impl Why {
    pub(crate) fn write(&self, t: &Tables, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = t.tier0.as_ref().map_or("tier-0", |t0| t0.name.as_str());
        match *self {
            Why::NotIpv4 => write!(f, "{name}: not IPv4: drop (not_for_edge)"),
            Why::Own { dst, answered } => match answered {
                Some(true) => write!(f, "{name}: echo request to its address {dst}: answered"),
                Some(false) => write!(f, "{name}: echo request to {dst}: no room: drop (tx_full)"),
                None => write!(
                    f,
                    "{name}: to its address {dst}, not an echo request: drop (to_router)"
                ),
            },
            Why::NoRoute { dst } => write!(f, "{name}: no route to {dst}: drop (no_route)"),
            Why::Unrouted {
                from,
                to,
                dst,
                prefix,
            } => {
                if from == to {
                    write!(
                        f,
                        "{name}: {dst} matches {prefix} out of the {} it came in on: drop (no_route)",
                        to.name()
                    )
                } else {
                    write!(
                        f,
                        "{name}: {dst} matches {prefix} out of the {}, in from the {}: only the \
                         overlay is routed to and from them: drop (no_route)",
                        to.name(),
                        from.name()
                    )
                }
            }
            Why::DownlinkPolicy { src, dst } => write!(
                f,
                "{name}: {src} > {dst} from the downlink, not an answer to the overlay's \
                 traffic, while the overlay is source-NATed toward the downlink \
                 (underlay_snat): drop (downlink_policy)"
            ),
            Why::HostOwn { dst } => write!(
                f,
                "{name}: to the downlink's address {dst}, the host's own: drop (not_for_edge)"
            ),
            Why::Routed {
                dst,
                prefix,
                origin,
                hop,
                ttl,
                outcome,
            } => {
                write!(f, "{name} {prefix}")?;
                match (origin, hop) {
                    (_, T0Hop::Tier1(ri)) => {
                        let t1 = t
                            .routers
                            .get(usize::from(ri))
                            .map_or("?", |r| r.name.as_str());
                        write!(f, " via tier-1 {t1}")?
                    }
                    (T0Origin::Default, T0Hop::Uplink(Some(nh))) => {
                        write!(f, " default via {nh} on the uplink")?
                    }
                    (_, T0Hop::Uplink(Some(nh))) => write!(f, " via {nh} on the uplink (static)")?,
                    (_, T0Hop::Uplink(None)) => write!(f, " connected on the uplink ({dst})")?,
                    (_, T0Hop::Downlink(Some(nh))) => write!(f, " via {nh} on the downlink")?,
                    (_, T0Hop::Downlink(None)) => write!(f, " connected on the downlink ({dst})")?,
                    (_, T0Hop::Probe) => write!(f, " the health checkers, on their port")?,
                }
                match outcome {
                    Outcome::Forward => write!(f, ", ttl {ttl} -> {}", ttl.saturating_sub(1)),
                    Outcome::TtlExceeded { sent } => write!(
                        f,
                        ", ttl {ttl}: drop (ttl_exceeded){}",
                        if sent {
                            "; ICMP time exceeded sent back"
                        } else {
                            ""
                        }
                    ),
                    Outcome::FragNeeded { len, mtu, sent } => write!(
                        f,
                        ": {len} bytes with DF exceed the MTU {mtu}: drop (frag_needed){}",
                        if sent {
                            "; ICMP fragmentation needed sent back"
                        } else {
                            ""
                        }
                    ),
                    Outcome::TooBig { len, mtu } => {
                        write!(
                            f,
                            ": {len} bytes exceed the MTU {mtu} (no DF): drop (too_big)"
                        )
                    }
                }
            }
        }
    }
}
