//! The distributed firewall as a pipeline layer: right after port security
//! on the way out (direction `out`), right after decapsulation on the way
//! in (`in`), so it sees exactly what the instance sends and receives.
//! Decisions come from [`firewall::Firewall`]; a reject on the way out is
//! answered straight to the port here, one on the way in is flagged in the
//! context for the driver to send back through the switch, router and
//! encapsulation layers.

use firewall::{Dir, Firewall, Verdict as FwVerdict};

use super::{Ctx, Step, Verdict};
use crate::counters::{Counters, DropReason};
use crate::queue::Output;

pub(crate) fn process(
    fw: Option<&mut Firewall>,
    dir: Dir,
    ctx: &mut Ctx<'_>,
    out: &mut Output,
    c: &mut Counters,
    now_ns: u64,
) -> Step {
    let Some(fw) = fw else {
        return Step::Next;
    };
    let v = fw.process(dir, ctx.frame, now_ns);
    apply(v, dir, ctx, out, c)
}

/// Carries out the firewall's verdict (shared with [`crate::trace`], which
/// gets its verdict from [`Firewall::explain`]).
#[inline]
pub(crate) fn apply(
    v: FwVerdict,
    dir: Dir,
    ctx: &mut Ctx<'_>,
    out: &mut Output,
    c: &mut Counters,
) -> Step {
    match v {
        FwVerdict::Pass => Step::Next,
        FwVerdict::Drop(_) => Step::Done(Verdict::Drop(DropReason::Firewall)),
        FwVerdict::Reject(kind) => {
            match dir {
                Dir::Out => {
                    let dst = ctx
                        .ipv4
                        .map(|ip| ip.src)
                        .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED);
                    let mut len = 0;
                    if out.port.push_with(dst, |buf| {
                        len = firewall::reject::build(kind, ctx.frame, buf).ok()?;
                        Some(len)
                    }) {
                        c.port_tx.add(len);
                    }
                }
                Dir::In => ctx.reject = Some(kind),
            }
            Step::Done(Verdict::Drop(DropReason::Firewall))
        }
    }
}
