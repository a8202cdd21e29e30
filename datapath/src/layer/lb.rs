//! The L4 load balancer ([`crate::lbstate::LbState`] around the `lb`
//! engine). On an instance it runs at the sending agent (distributed, as
//! OVN and Cilium balance): after the firewall on the way out, a
//! connection to a virtual server gets its real server (the one it has, a
//! persistence template's, or the scheduler's pick) and the destination
//! is rewritten (full-NAT: the source too); the router then routes on the
//! real server's address ([`super::Ctx::route_dst`]). On the way in,
//! before the firewall, a real server's answer gets the virtual server's
//! address back as its source, so the firewall and the instance see the
//! connection they opened. On the edge it balances the uplink's virtual
//! servers (clients outside) and full-NAT ones, before the NAT. The
//! translation rides in [`super::Ctx::nat`], applied when the frame is
//! copied out, as the edge's NAT does. Default: pass (not a virtual
//! server, not an answer of a balanced connection).

use std::fmt;

use super::{Ctx, Recorder, Step, Verdict, Why as LayerWhy};
use crate::lbstate::{Outcome, Way};

/// Why the balancer decided as it did.
#[derive(Debug, Clone)]
pub(crate) enum Why {
    /// Not IPv4.
    Off,
    /// Not to a virtual address (nor from a real server's).
    NotOurs,
    /// The engine's outcome.
    Decided(Box<Outcome>),
}

#[inline(never)]
pub(crate) fn process<R: Recorder>(way: Way, ctx: &mut Ctx<'_>, now_ns: u64, rec: &mut R) -> Step {
    let (Some(ip), Some(lb)) = (ctx.ipv4, rec.lb()) else {
        rec.note(|| LayerWhy::Lb(Why::Off));
        return Step::Next;
    };
    let pkt = ctx
        .frame
        .get(geneve::ethernet::HEADER_LEN..)
        .unwrap_or_default();
    // The balancer's addresses first (a lookup or two), so other traffic
    // pays no parse. They include those of servers and services gone from
    // the config whose connections remain.
    if !lb.may_be_ours(way, &ip, pkt) {
        rec.note(|| LayerWhy::Lb(Why::NotOurs));
        return Step::Next;
    }
    let outcome = match rec.lb_mut() {
        Some(lb) => lb.process(way, pkt, now_ns),
        None => match rec.lb() {
            Some(lb) => lb.peek(way, pkt, now_ns),
            None => return Step::Next,
        },
    };
    let step = match outcome.verdict {
        Ok(Some(tr)) => {
            ctx.nat = Some(tr);
            Step::Next
        }
        Ok(None) => Step::Next,
        Err(reason) => Step::Done(Verdict::Drop(reason)),
    };
    rec.note(|| LayerWhy::Lb(Why::Decided(Box::new(outcome))));
    step
}

impl Why {
    pub(crate) fn write(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Why::Off => f.write_str("not IPv4: pass"),
            Why::NotOurs => f.write_str("not to a virtual address, nor from a real server: pass"),
            Why::Decided(o) => write!(f, "{o}"),
        }
    }
}
