//! Geneve encapsulation: copies the frame behind the outer headers in an
//! underlay queue slot, applies the router's rewrite (MACs, TTL - 1), and
//! writes outer IPv4 (DF, TTL 64) + UDP (source port from the inner flow,
//! checksum computed) + Geneve with the VMware option carrying our
//! tunnel-endpoint id. Floods are replicated head-end, one copy per endpoint;
//! super-frames are cut into segments and partial checksums finished here.

use std::fmt;

use geneve::outer::{self, Encap, OVERHEAD};

use super::{Ctx, DropReason, Recorder, Step, Target, TepName, Verdict, Why as LayerWhy};
use crate::counters::Counters;
use crate::offload::{Plan, finish_csum};
use crate::queue::Output;
use crate::tables::{Tables, TepIdx};

/// Why encapsulation decided as it did: where the frame was going, and
/// the drop if it went nowhere.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Why {
    target: Option<Target>,
    drop: Option<DropReason>,
}

pub(crate) fn process<R: Recorder>(
    t: &Tables,
    ctx: &mut Ctx<'_>,
    out: &mut Output,
    c: &mut Counters,
    rec: &mut R,
) -> Step {
    let target = ctx.target;
    let mut done = |v: Verdict| {
        let drop = match v {
            Verdict::Drop(r) => Some(r),
            _ => None,
        };
        rec.note(|| LayerWhy::Encap(Why { target, drop }));
        Step::Done(v)
    };
    let copies = match target {
        Some(Target::Unicast { tep, vni }) => emit_all(t, ctx, out, c, tep, vni),
        Some(Target::Flood { switch }) => {
            let sw = &t.switches[usize::from(switch)];
            sw.flood
                .iter()
                .map(|&tep| emit_all(t, ctx, out, c, tep, sw.vni))
                .sum()
        }
        None => return done(Verdict::Drop(DropReason::NoRoute)),
    };
    if copies == 0 {
        return done(Verdict::Drop(DropReason::TxFull));
    }
    done(Verdict::Encapsulated { copies })
}

impl Why {
    /// `vni 0x2388 to 10.99.3.251 (tep 251)`; a flood lists every endpoint.
    pub(crate) fn write(&self, t: &Tables, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let vni = match self.target {
            Some(Target::Unicast { vni, .. }) => vni,
            Some(Target::Flood { switch }) => {
                t.switches.get(usize::from(switch)).map_or(0, |s| s.vni)
            }
            None => 0,
        };
        if let Some(r) = self.drop {
            return write!(f, "vni {vni:#x}: drop ({})", r.name());
        }
        match self.target {
            Some(Target::Unicast { tep, .. }) => write!(f, "vni {vni:#x} to {}", TepName(t, tep)),
            Some(Target::Flood { switch }) => {
                let flood = t
                    .switches
                    .get(usize::from(switch))
                    .map_or(&[][..], |s| &s.flood[..]);
                write!(
                    f,
                    "vni {vni:#x} replicated to {} endpoint(s): ",
                    flood.len()
                )?;
                for (i, &tep) in flood.iter().enumerate() {
                    let sep = if i == 0 { "" } else { ", " };
                    write!(f, "{sep}{}", TepName(t, tep))?;
                }
                Ok(())
            }
            None => f.write_str("pass"),
        }
    }
}

/// One packet per segment of a super-frame, or the frame itself.
fn emit_all(
    t: &Tables,
    ctx: &Ctx<'_>,
    out: &mut Output,
    c: &mut Counters,
    tep: TepIdx,
    vni: u32,
) -> u16 {
    match ctx.segments {
        Some(plan) => (0..plan.count)
            .map(|i| u16::from(emit(t, ctx, out, c, tep, vni, Some((&plan, i)))))
            .sum(),
        None => u16::from(emit(t, ctx, out, c, tep, vni, None)),
    }
}

fn emit(
    t: &Tables,
    ctx: &Ctx<'_>,
    out: &mut Output,
    c: &mut Counters,
    tep: TepIdx,
    vni: u32,
    segment: Option<(&Plan, usize)>,
) -> bool {
    let frame = ctx.frame;
    encapsulate(t, out, c, tep, vni, |room| {
        let len = match segment {
            Some((plan, i)) => plan.emit(frame, i, room)?,
            None => {
                let inner = room.get_mut(..frame.len())?;
                inner.copy_from_slice(frame);
                if let Some(partial) = ctx.offload.csum {
                    finish_csum(inner, partial)?;
                }
                frame.len()
            }
        };
        if let Some((dst, src)) = ctx.rewrite {
            super::rewrite_routed(&mut room[..len], dst, src, ctx.hops, ctx.nat.as_ref())?;
        }
        Some(len)
    })
}

/// Queues the inner frame `fill` writes (into the room behind the outer
/// headers; it returns the frame's length) as a Geneve packet to endpoint
/// `tep` on `vni`, counted per endpoint. False when the queue is full or
/// `fill` gave up.
pub(crate) fn encapsulate(
    t: &Tables,
    out: &mut Output,
    c: &mut Counters,
    tep: TepIdx,
    vni: u32,
    fill: impl FnOnce(&mut [u8]) -> Option<usize>,
) -> bool {
    let Some(remote) = t.teps.get(usize::from(tep)) else {
        return false;
    };
    let mut total = 0;
    let pushed = out.underlay.push_with(remote.ip, |buf| {
        let len = fill(buf.get_mut(OVERHEAD..)?)?;
        let inner = buf.get(OVERHEAD..OVERHEAD + len)?;
        let encap = Encap {
            src: t.host.underlay_ip,
            dst: remote.ip,
            src_port: outer::flow_src_port(inner),
            vni,
            tep_id: t.tep_id,
        };
        total = if t.host.kernel_udp {
            outer::emit_for_udp_socket(buf, &encap, len).ok()?
        } else {
            outer::emit(buf, &encap, len).ok()?
        };
        Some(total)
    });
    if pushed {
        c.underlay_tx.add(total);
        if let Some(tc) = c.tunnels.get_mut(usize::from(tep)) {
            tc.tx.add(total);
        }
    }
    pushed
}
