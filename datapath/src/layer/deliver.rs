//! Delivery to the local port: only frames on the port's switch whose
//! destination is the port's MAC (or a group address) reach the instance.
//! TCP segments continuing the last queued frame's stream are merged into it
//! when the output coalesces. Default action: drop.

use super::{Ctx, Step, Verdict};
use crate::counters::{Counters, DropReason};
use crate::queue::Output;
use crate::tables::Tables;

pub(crate) fn process(t: &Tables, ctx: &mut Ctx<'_>, out: &mut Output, c: &mut Counters) -> Step {
    let drop = |r| Step::Done(Verdict::Drop(r));
    let Some(port) = t.port else {
        return drop(DropReason::NotForPort);
    };
    if ctx.switch != port.switch || (ctx.dst != port.mac && !ctx.dst.is_multicast()) {
        return drop(DropReason::NotForPort);
    }
    let frame = ctx.frame;
    if out.coalesce && crate::coalesce::try_append(&mut out.port, frame) {
        c.port_tx.add(frame.len());
        return Step::Done(Verdict::Delivered);
    }
    let pushed = out.port.push_with(port.ip, |buf| {
        buf.get_mut(..frame.len())?.copy_from_slice(frame);
        Some(frame.len())
    });
    if !pushed {
        return drop(DropReason::TxFull);
    }
    c.port_tx.add(frame.len());
    Step::Done(Verdict::Delivered)
}
