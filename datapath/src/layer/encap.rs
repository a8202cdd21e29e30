//! Geneve encapsulation: copies the frame behind the outer headers in an
//! underlay queue slot, applies the router's rewrite (MACs, TTL - 1), and
//! writes outer IPv4 (DF, TTL 64) + UDP (source port from the inner flow,
//! checksum computed) + Geneve with the VMware option carrying our
//! tunnel-endpoint id. Floods are replicated head-end, one copy per endpoint;
//! super-frames are cut into segments and partial checksums finished here.

use geneve::outer::{self, Encap, OVERHEAD};
use geneve::{ethernet, ipv4};

use super::{Ctx, Step, Target, Verdict};
use crate::counters::{Counters, DropReason};
use crate::offload::{Plan, finish_csum};
use crate::queue::Output;
use crate::tables::{Tables, TepIdx};

pub(crate) fn process(t: &Tables, ctx: &mut Ctx<'_>, out: &mut Output, c: &mut Counters) -> Step {
    let copies = match ctx.target {
        Some(Target::Unicast { tep, vni }) => emit_all(t, ctx, out, c, tep, vni),
        Some(Target::Flood { switch }) => {
            let sw = &t.switches[usize::from(switch)];
            sw.flood
                .iter()
                .map(|&tep| emit_all(t, ctx, out, c, tep, sw.vni))
                .sum()
        }
        None => return Step::Done(Verdict::Drop(DropReason::NoRoute)),
    };
    if copies == 0 {
        return Step::Done(Verdict::Drop(DropReason::TxFull));
    }
    Step::Done(Verdict::Encapsulated { copies })
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
    let Some(remote) = t.teps.get(usize::from(tep)) else {
        return false;
    };
    let frame = ctx.frame;
    let mut total = 0;
    let pushed = out.underlay.push_with(remote.ip, |buf| {
        let room = buf.get_mut(OVERHEAD..)?;
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
        let inner = &mut room[..len];
        if let Some((dst, src)) = ctx.rewrite {
            rewrite(inner, dst.0, src.0)?;
        }
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

/// Routed frame: new MACs and TTL - 1 (incremental checksum update).
fn rewrite(inner: &mut [u8], dst: [u8; 6], src: [u8; 6]) -> Option<()> {
    let mut eth = ethernet::Frame::new_checked(inner).ok()?;
    eth.set_dst(dst);
    eth.set_src(src);
    let mut ip = ipv4::Packet::new_checked(eth.payload_mut()).ok()?;
    ip.decrement_ttl();
    Some(())
}
