//! The distributed firewall as a pipeline layer: right after port security
//! on the way out (direction `out`), right after decapsulation on the way
//! in (`in`), so it sees exactly what the instance sends and receives.
//! Decisions come from [`firewall::Firewall`] through the recorder (judged
//! and committed on the packet path, judged only in a trace); a reject on
//! the way out is answered straight to the port here, one on the way in is
//! flagged in the context for the driver to send back through the switch,
//! router and encapsulation layers.

use std::fmt;

use ::firewall::{Dir, FwVerdict, RejectError};

use super::{Ctx, DropReason, Recorder, Step, Verdict, Why as LayerWhy};
use crate::counters::Counters;
use crate::queue::Output;

/// Why the firewall layer decided as it did.
#[derive(Debug, Clone)]
pub(crate) enum Why {
    /// The config has no firewall section.
    Absent,
    /// The firewall's decision, as [`firewall::Decision::describe`] put it
    /// when it was taken, and where a reject's answer went.
    Judged { decision: String, answer: Answer },
    /// A reject's answer could not be built (the offending frame allows none).
    NoAnswer(RejectError),
}

/// Where the answer to a rejected frame went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    None,
    /// Straight to the port (a frame the instance sent).
    Port,
    /// Back through the overlay to the sender (a frame from the underlay).
    Sender,
}

pub(crate) fn process<R: Recorder>(
    dir: Dir,
    ctx: &mut Ctx<'_>,
    out: &mut Output,
    c: &mut Counters,
    now_ns: u64,
    rec: &mut R,
) -> Step {
    let Some(v) = rec.firewall(dir, || ctx.fw_view(), now_ns) else {
        rec.note(|| LayerWhy::Firewall(Why::Absent));
        return Step::Next;
    };
    let (step, answer) = match v {
        FwVerdict::Pass => (Step::Next, Answer::None),
        FwVerdict::Drop(_) => (
            Step::Done(Verdict::Drop(DropReason::Firewall)),
            Answer::None,
        ),
        FwVerdict::Reject(kind) => {
            ctx.rejected = true;
            let answer = match dir {
                Dir::Out => {
                    let dst = ctx
                        .ipv4
                        .map(|ip| ip.src)
                        .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED);
                    let mut len = 0;
                    let sent = out.port.push_with(dst, |buf| {
                        len = ::firewall::reject::build(kind, ctx.frame, buf).ok()?;
                        Some(len)
                    });
                    if sent {
                        c.port_tx.add(len);
                        Answer::Port
                    } else {
                        Answer::None
                    }
                }
                Dir::In => {
                    ctx.reject = Some(kind);
                    Answer::Sender
                }
            };
            (Step::Done(Verdict::Drop(DropReason::Firewall)), answer)
        }
    };
    rec.judged(answer);
    step
}

impl Why {
    /// The decision's text, and where the answer went.
    pub(crate) fn write(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Why::Judged { decision, answer } => {
                f.write_str(decision)?;
                match answer {
                    Answer::Port => f.write_str(", sent to the port"),
                    Answer::Sender => f.write_str(", sent back to the sender"),
                    Answer::None => Ok(()),
                }
            }
            Why::NoAnswer(e) => write!(f, "none built ({e})"),
            Why::Absent => f.write_str("no firewall configured: pass"),
        }
    }
}
