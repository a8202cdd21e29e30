//! Delivery to the local port: only frames on the port's switch whose
//! destination is the port's MAC (or a group address) reach the instance.
//! TCP segments continuing the last queued frame's stream are merged into it
//! when the output coalesces. Default action: drop.

use std::fmt;

use control::MacAddr;

use super::{Ctx, DropReason, Recorder, Step, SwitchName, Verdict, Why as LayerWhy};
use crate::counters::Counters;
use crate::queue::Output;
use crate::tables::{Port, SwitchIdx, Tables};

/// Why delivery decided as it did.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Why {
    NoPort,
    Delivered(Port),
    /// To `dst` on `switch`: not the port.
    NotForPort {
        dst: MacAddr,
        switch: SwitchIdx,
        port: Port,
    },
    TxFull,
    /// The balancer's translation could not be applied.
    Untranslatable,
}

pub(crate) fn process<R: Recorder>(
    t: &Tables,
    ctx: &mut Ctx<'_>,
    out: &mut Output,
    c: &mut Counters,
    rec: &mut R,
) -> Step {
    let mut done = |v, why| {
        rec.note(|| LayerWhy::Deliver(why));
        Step::Done(v)
    };
    let Some(port) = t.port else {
        return done(Verdict::Drop(DropReason::NotForPort), Why::NoPort);
    };
    if ctx.switch != port.switch || (ctx.dst != port.mac && !ctx.dst.is_multicast()) {
        let why = Why::NotForPort {
            dst: ctx.dst,
            switch: ctx.switch,
            port,
        };
        return done(Verdict::Drop(DropReason::NotForPort), why);
    }
    let frame = ctx.frame;
    if let Some(tr) = &ctx.nat {
        return match push_translated(out, port.ip, frame, tr) {
            Ok(()) => {
                c.port_tx.add(frame.len());
                done(Verdict::Delivered, Why::Delivered(port))
            }
            Err(DropReason::TxFull) => done(Verdict::Drop(DropReason::TxFull), Why::TxFull),
            Err(r) => done(Verdict::Drop(r), Why::Untranslatable),
        };
    }
    if out.coalesce && crate::coalesce::try_append(&mut out.port, frame) {
        c.port_tx.add(frame.len());
        return done(Verdict::Delivered, Why::Delivered(port));
    }
    let pushed = out.port.push_with(port.ip, |buf| {
        buf.get_mut(..frame.len())?.copy_from_slice(frame);
        Some(frame.len())
    });
    if !pushed {
        return done(Verdict::Drop(DropReason::TxFull), Why::TxFull);
    }
    c.port_tx.add(frame.len());
    done(Verdict::Delivered, Why::Delivered(port))
}

impl Why {
    pub(crate) fn write(&self, t: &Tables, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Why::NoPort => f.write_str("no local port: drop (not_for_port)"),
            Why::Delivered(port) => write!(
                f,
                "to the port {} ({}) on {}",
                port.ip,
                port.mac,
                SwitchName(t, port.switch)
            ),
            Why::NotForPort { dst, switch, port } => write!(
                f,
                "dst MAC {dst} on {} is not the port {} on {}: drop (not_for_port)",
                SwitchName(t, switch),
                port.mac,
                SwitchName(t, port.switch)
            ),
            Why::TxFull => write!(f, "drop ({})", DropReason::TxFull.name()),
            Why::Untranslatable => write!(
                f,
                "the translation does not apply: drop ({})",
                DropReason::LbUntranslatable.name()
            ),
        }
    }
}

/// A translated frame (a real server's answer, given the virtual server's
/// address back by the balancer) is rewritten in its slot and never
/// merged: the queued stream holds frames as the port receives them. Out
/// of line, so the common delivery stays as it was.
#[cold]
#[inline(never)]
fn push_translated(
    out: &mut Output,
    to: std::net::Ipv4Addr,
    frame: &[u8],
    tr: &::nat::Translation,
) -> Result<(), DropReason> {
    let mut untranslatable = false;
    let pushed = out.port.push_with(to, |buf| {
        let slot = buf.get_mut(..frame.len())?;
        slot.copy_from_slice(frame);
        let ip = slot.get_mut(geneve::ethernet::HEADER_LEN..)?;
        untranslatable = ::nat::rewrite::apply(ip, tr, ::nat::L4Csum::Complete).is_err();
        (!untranslatable).then_some(frame.len())
    });
    match (pushed, untranslatable) {
        (true, _) => Ok(()),
        (false, true) => Err(DropReason::LbUntranslatable),
        (false, false) => Err(DropReason::TxFull),
    }
}
