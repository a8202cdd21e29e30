//! The edge's NAT (the `nat` engine, `EdgeState::nat`): a packet from the
//! overlay on the transit segment is source-translated (the SNAT pool, or
//! the instance's public IP 1:1), and a packet to one of our external
//! addresses from inside is hairpinned (destination and source); a packet
//! from the uplink is translated back (a session, or a public IP: the
//! destination becomes the instance, the source stays the client's), and
//! an ICMP error is translated inside and out (the quoted packet too). The
//! decision is judged here and committed on the packet path only
//! (`trace` judges); the rewrite is applied when the frame is copied out
//! (`layer::rewrite_routed`), so the tier-0 and the tier-1 route on the
//! translated destination ([`super::Ctx::route_dst`]). Packets the NAT
//! cannot take are counted drops: no mapping, filtered, exhausted,
//! untranslatable. Default: pass untranslated (from the overlay to the
//! overlay).
//!
//! The downlink (hosts on the underlay subnet) has its own instance of the
//! engine (`EdgeState::downlink_nat`, while the tier-0 has
//! `underlay_snat`): what the overlay sends there is source-translated to
//! the underlay address, and what comes back to that address translated
//! back; the interface is the one the tier-0 will route the packet to (out)
//! or the one it came in on (in). Without `underlay_snat` traffic between
//! the overlay and the downlink passes untranslated; from the downlink, only
//! packets to the underlay address are the NAT's (to an overlay address
//! they go on untranslated, and the tier-0's policy decides).

use std::fmt;
use std::net::Ipv4Addr;

use ::nat::{Decision, Dir, Translation, Verdict as NatVerdict};

use super::{Ctx, DropReason, Recorder, Step, Verdict, Why as LayerWhy};
use crate::edge::Iface;
use crate::tables::{T0Hop, Tables};

/// The destination a translation routes to (unchanged if it keeps it).
pub(crate) fn route_dst(t: &Translation, dst: Ipv4Addr) -> Ipv4Addr {
    match t {
        Translation::Packet(rw) => rw.dst.map_or(dst, |d| *d.ip()),
        Translation::IcmpError(e) => e.outer_dst.unwrap_or(dst),
    }
}

/// Why the NAT decided as it did.
#[derive(Debug, Clone)]
pub(crate) enum Why {
    /// No tier-0 here, or not IPv4.
    NotEdge,
    /// The load balancer translated it (a virtual server's connection).
    Balanced,
    /// From the overlay to the overlay: nothing to translate.
    Inside,
    /// An echo request to one of the uplink's own addresses (not a public IP).
    ToTier0,
    /// Between the overlay and the downlink without `underlay_snat`, or
    /// from the overlay to the downlink's own address.
    Underlay,
    /// From the downlink to an address that is not the downlink's NAT's.
    NotToDownlinkNat,
    /// From the overlay to the health checkers: nothing to translate.
    HealthCheck,
    /// No NAT state for the interface (its configuration was refused).
    NoState,
    /// From the overlay to where the tier-0 has no route: nothing to
    /// translate.
    Unrouted,
    /// The engine's decision.
    Decided(Box<Decision>),
}

pub(crate) fn process<R: Recorder>(
    t: &Tables,
    ctx: &mut Ctx<'_>,
    now_ns: u64,
    rec: &mut R,
) -> Step {
    let (Some(t0), Some(ip)) = (&t.tier0, ctx.ipv4) else {
        rec.note(|| LayerWhy::Nat(Why::NotEdge));
        return Step::Next;
    };
    if ctx.nat.is_some() {
        rec.note(|| LayerWhy::Nat(Why::Balanced));
        return Step::Next;
    }
    let dir = if ctx.came_in.is_some() {
        Dir::In
    } else {
        Dir::Out
    };
    // The interface whose NAT decides: the one the packet came in on, or
    // (from the overlay) the one the tier-0 routes it to.
    let out_hop = match dir {
        Dir::Out => t0.route(ip.dst).map(|r| r.hop),
        Dir::In => None,
    };
    let iface =
        if ctx.came_in == Some(Iface::Downlink) || matches!(out_hop, Some(T0Hop::Downlink(_))) {
            Iface::Downlink
        } else {
            Iface::Uplink
        };
    if iface == Iface::Downlink {
        if !t0.underlay_snat || (dir == Dir::Out && ip.dst == t0.downlink_ip()) {
            rec.note(|| LayerWhy::Nat(Why::Underlay));
            return Step::Next;
        }
        if dir == Dir::In && ip.dst != t0.downlink_ip() {
            rec.note(|| LayerWhy::Nat(Why::NotToDownlinkNat));
            return Step::Next;
        }
    }
    if iface == Iface::Uplink
        && ip.protocol == geneve::ipv4::PROTO_ICMP
        && ip.l4_first == geneve::icmpv4::TYPE_ECHO_REQUEST
        && t0.owns(ip.dst)
        && !t0.is_public(ip.dst)
    {
        // A ping of the uplink's own address, from outside or from an
        // instance: the tier-0 answers it.
        rec.note(|| LayerWhy::Nat(Why::ToTier0));
        return Step::Next;
    }
    if dir == Dir::Out && !t0.owns(ip.dst) && matches!(out_hop, Some(T0Hop::Tier1(_))) {
        rec.note(|| LayerWhy::Nat(Why::Inside));
        return Step::Next;
    }
    if dir == Dir::Out && out_hop.is_none() && !t0.owns(ip.dst) {
        // Nowhere to go: the tier-0 drops it (`no_route`); no session or
        // port is spent on it.
        rec.note(|| LayerWhy::Nat(Why::Unrouted));
        return Step::Next;
    }
    if dir == Dir::Out && matches!(out_hop, Some(T0Hop::Probe)) {
        // A real server answering the edge's health checks.
        rec.note(|| LayerWhy::Nat(Why::HealthCheck));
        return Step::Next;
    }
    let pkt = ctx
        .frame
        .get(geneve::ethernet::HEADER_LEN..)
        .unwrap_or_default();
    let Some(d) = rec
        .edge()
        .and_then(|e| e.nat_of(iface))
        .map(|n| n.judge(dir, pkt, now_ns))
    else {
        // The tables have a tier-0 but the edge has no NAT state: never
        // let an untranslated overlay address out.
        rec.note(|| LayerWhy::Nat(Why::NoState));
        return Step::Done(Verdict::Drop(DropReason::NatUntranslatable));
    };
    let verdict = match rec.edge_mut().and_then(|e| e.nat_of_mut(iface)) {
        Some(n) => n.commit(&d, now_ns),
        None => d.verdict,
    };
    rec.note(|| LayerWhy::Nat(Why::Decided(Box::new(d))));
    match verdict {
        NatVerdict::Translate(tr) => {
            ctx.nat = Some(tr);
            Step::Next
        }
        NatVerdict::Drop(r) => Step::Done(Verdict::Drop(drop_reason(r))),
    }
}

fn drop_reason(r: ::nat::DropReason) -> DropReason {
    use ::nat::DropReason as N;
    match r {
        N::NoMapping => DropReason::NatNoMapping,
        N::Filtered => DropReason::NatFiltered,
        N::Exhausted | N::TableFull => DropReason::NatExhausted,
        N::Fragment | N::Malformed | N::Unsupported => DropReason::NatUntranslatable,
    }
}

impl Why {
    pub(crate) fn write(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Why::NotEdge => f.write_str("not translated: pass"),
            Why::Balanced => f.write_str("balanced by the load balancer: not translated again"),
            Why::Inside => f.write_str("overlay to overlay: not translated: pass"),
            Why::HealthCheck => f.write_str("to the health checkers: not translated: pass"),
            Why::Unrouted => f.write_str("no route at the tier-0: not translated: pass"),
            Why::NoState => {
                f.write_str("no NAT state for the interface: drop (nat_untranslatable)")
            }
            Why::ToTier0 => f.write_str("echo request to the tier-0's own address: pass"),
            Why::Underlay => f.write_str(
                "overlay and downlink without underlay_snat, or the downlink's own address: \
                 not translated: pass",
            ),
            Why::NotToDownlinkNat => f.write_str(
                "from the downlink, not to its NAT's address: not translated: pass (the tier-0's \
                 policy decides)",
            ),
            Why::Decided(d) => {
                write!(f, "{d}")?;
                if let NatVerdict::Drop(r) = d.verdict {
                    write!(f, ": drop ({})", drop_reason(r).name())?;
                }
                Ok(())
            }
        }
    }
}
