//! Micro-segmentation's last layer: a frame the firewall passed goes on
//! unchanged, to the host (from the NIC) or out of the NIC (from the host).
//! Nothing is copied: the verdict tells the I/O shell to send the frame it
//! received as it is. Always decides.

use std::fmt;

use ::firewall::Dir;

use super::{Ctx, Recorder, Step, Verdict, Why as LayerWhy};
use crate::counters::Counters;

/// Where the frame went.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Why {
    ToHost,
    OutOfNic,
}

pub(crate) fn process<R: Recorder>(
    dir: Dir,
    ctx: &mut Ctx<'_>,
    c: &mut Counters,
    rec: &mut R,
) -> Step {
    let (verdict, why) = match dir {
        Dir::In => {
            c.port_tx.add(ctx.frame.len());
            (Verdict::Delivered, Why::ToHost)
        }
        Dir::Out => {
            c.underlay_tx.add(ctx.frame.len());
            (Verdict::Forwarded, Why::OutOfNic)
        }
    };
    rec.note(|| LayerWhy::Forward(why));
    Step::Done(verdict)
}

impl Why {
    pub(crate) fn write(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Why::ToHost => "passed to the host",
            Why::OutOfNic => "passed out of the NIC",
        })
    }
}
