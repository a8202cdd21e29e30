//! Geneve decapsulation: the sender must be a known tunnel endpoint; the
//! header and options are validated (version, lengths, critical options —
//! each failure its own drop reason); the VMware option's endpoint id must
//! match the sender; the VNI selects the logical switch. Default action: drop.

use super::{Ctx, Step, Verdict};
use crate::counters::{Counters, DropReason};
use crate::tables::Tables;

pub(crate) fn process(t: &Tables, ctx: &mut Ctx<'_>, c: &mut Counters, now_ns: u64) -> Step {
    let drop = |r| Step::Done(Verdict::Drop(r));
    let Some(tep) = t.tep_by_ip(ctx.outer_src) else {
        return drop(DropReason::UnknownTunnel);
    };
    if let Some(tc) = c.tunnels.get_mut(usize::from(tep)) {
        tc.rx.add(ctx.frame.len());
        tc.last_rx_ns = now_ns;
    }
    let parsed = match geneve::geneve::parse(ctx.frame) {
        Ok(p) => p,
        Err(e) => return drop(DropReason::from_geneve(&e)),
    };
    if parsed
        .tep_id
        .is_some_and(|id| id != t.teps[usize::from(tep)].id)
    {
        return drop(DropReason::TepIdMismatch);
    }
    let Some(switch) = t.switch_by_vni(parsed.vni) else {
        return drop(DropReason::UnknownVni);
    };
    ctx.frame = parsed.payload;
    ctx.switch = switch;
    if let Err(r) = ctx.parse_l2_l3() {
        return drop(r);
    }
    Step::Next
}
