//! Distributed router, run by the sending agent: longest-prefix match over
//! the router's connected switches and static routes, TTL - 1 (ICMP time
//! exceeded at 0), MTU check (ICMP fragmentation needed for DF packets),
//! MAC rewrite (router MAC -> destination port MAC), and on to the
//! destination switch's VNI. Frames not addressed to the router pass.

use geneve::icmpv4;

use super::{Ctx, Step, Target, Verdict};
use crate::counters::{Counters, DropReason};
use crate::queue::Output;
use crate::tables::{Location, Router, Tables};

pub(crate) fn process(t: &Tables, ctx: &mut Ctx<'_>, out: &mut Output, c: &mut Counters) -> Step {
    if !ctx.to_router {
        return Step::Next;
    }
    let drop = |r| Step::Done(Verdict::Drop(r));
    let (Some(ip), Some(router)) = (ctx.ipv4, t.router_of(ctx.switch)) else {
        return drop(DropReason::ToRouter);
    };
    let Some((egress, next_hop)) = t.route(router, ip.dst) else {
        return drop(DropReason::NoRoute);
    };
    if ip.ttl <= 1 {
        icmp_error(t, router, ctx, out, c, icmpv4::TYPE_TIME_EXCEEDED, 0, 0);
        return drop(DropReason::TtlExceeded);
    }
    let mtu = t.host.overlay_mtu;
    if ctx.wire_l3_len() > usize::from(mtu) {
        if ip.dont_frag {
            let code = icmpv4::CODE_FRAG_NEEDED;
            icmp_error(
                t,
                router,
                ctx,
                out,
                c,
                icmpv4::TYPE_DEST_UNREACH,
                code,
                u32::from(mtu),
            );
            return drop(DropReason::FragNeeded);
        }
        return drop(DropReason::TooBig);
    }
    let Some(neighbor) = t.neighbor(egress, next_hop) else {
        return drop(DropReason::NoNeighbor);
    };
    let Location::Remote(tep) = neighbor.at else {
        return drop(DropReason::Hairpin);
    };
    ctx.rewrite = Some((neighbor.mac, router.mac));
    ctx.switch = egress;
    ctx.target = Some(Target::Unicast {
        tep,
        vni: t.switches[usize::from(egress)].vni,
    });
    Step::Next
}

/// Sends an ICMP error from the router's address on the sender's switch back
/// to the local port. Failure to build one (e.g. the offending packet is
/// itself an ICMP error) only means no error is sent.
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
) {
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
}
