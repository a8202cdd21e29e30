//! Logical switch: looks the destination MAC up on the frame's switch.
//! Router MAC -> the router layer; a remote port's MAC -> unicast to its
//! endpoint; broadcast, multicast and unknown unicast -> head-end
//! replication to the switch's endpoints. Default action: flood.

use super::{Ctx, Step, Target, Verdict};
use crate::counters::DropReason;
use crate::tables::{Location, Tables};

pub(crate) fn process(t: &Tables, ctx: &mut Ctx<'_>) -> Step {
    let drop = |r| Step::Done(Verdict::Drop(r));
    if t.router_of(ctx.switch).is_some_and(|r| r.mac == ctx.dst) {
        ctx.to_router = true;
        return Step::Next;
    }
    let sw = &t.switches[usize::from(ctx.switch)];
    if ctx.wire_l3_len() > usize::from(t.host.overlay_mtu) {
        return drop(DropReason::TooBig);
    }
    let location = if ctx.dst.is_multicast() {
        None
    } else {
        t.lookup_mac(ctx.switch, ctx.dst)
    };
    match location {
        Some(Location::Local) => drop(DropReason::Hairpin),
        Some(Location::Remote(tep)) => {
            ctx.target = Some(Target::Unicast { tep, vni: sw.vni });
            Step::Next
        }
        None if sw.flood.is_empty() => drop(DropReason::FloodNoEndpoints),
        None => {
            ctx.target = Some(Target::Flood { switch: ctx.switch });
            Step::Next
        }
    }
}
