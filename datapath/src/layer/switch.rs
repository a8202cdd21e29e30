//! Logical switch: looks the destination MAC up on the frame's switch.
//! Router MAC -> the router layer; a remote port's MAC -> unicast to its
//! endpoint; broadcast, multicast and unknown unicast -> head-end
//! replication to the switch's endpoints. Default action: flood.

use std::fmt;

use control::MacAddr;

use super::{
    Ctx, DropReason, Recorder, Step, SwitchName, Target, TepName, Verdict, Why as LayerWhy,
};
use crate::tables::{Location, SwitchIdx, Tables, TepIdx};

/// Why the switch decided as it did: frame to `dst` on `switch`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Why {
    switch: SwitchIdx,
    dst: MacAddr,
    what: What,
}

#[derive(Debug, Clone, Copy)]
enum What {
    ToRouter,
    Unicast(TepIdx),
    Flood,
    /// The local port itself.
    Hairpin,
    /// `len` bytes of IPv4 exceed the overlay MTU.
    TooBig {
        len: usize,
    },
    /// Flood, but no remote endpoint is on the switch.
    NoEndpoints,
}

pub(crate) fn process<R: Recorder>(t: &Tables, ctx: &mut Ctx<'_>, rec: &mut R) -> Step {
    let (switch, dst) = (ctx.switch, ctx.dst);
    let mut note = |what| rec.note(|| LayerWhy::Switch(Why { switch, dst, what }));
    if t.router_of(switch).is_some_and(|r| r.mac == dst) {
        ctx.to_router = true;
        note(What::ToRouter);
        return Step::Next;
    }
    let sw = &t.switches[usize::from(switch)];
    let len = ctx.wire_l3_len();
    if len > usize::from(t.host.overlay_mtu) {
        note(What::TooBig { len });
        return Step::Done(Verdict::Drop(DropReason::TooBig));
    }
    let location = if dst.is_multicast() {
        None
    } else {
        t.lookup_mac(switch, dst)
    };
    match location {
        Some(Location::Local) => {
            note(What::Hairpin);
            Step::Done(Verdict::Drop(DropReason::Hairpin))
        }
        Some(Location::Remote(tep)) => {
            ctx.target = Some(Target::Unicast { tep, vni: sw.vni });
            note(What::Unicast(tep));
            Step::Next
        }
        None if sw.flood.is_empty() => {
            note(What::NoEndpoints);
            Step::Done(Verdict::Drop(DropReason::FloodNoEndpoints))
        }
        None => {
            ctx.target = Some(Target::Flood { switch });
            note(What::Flood);
            Step::Next
        }
    }
}

impl Why {
    pub(crate) fn write(&self, t: &Tables, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Why { switch, dst, what } = *self;
        let sw = SwitchName(t, switch);
        let kind = if dst == MacAddr::BROADCAST {
            "broadcast"
        } else if dst.is_multicast() {
            "multicast"
        } else {
            "unknown unicast"
        };
        match what {
            What::ToRouter => {
                let r = t.router_of(switch).map_or("?", |r| r.name.as_str());
                write!(f, "{sw}: dst MAC {dst} is router {r}: to the router")
            }
            What::Unicast(tep) => write!(
                f,
                "{sw}: dst MAC {dst} -> remote port behind {}",
                TepName(t, tep)
            ),
            What::Flood => {
                let n = t
                    .switches
                    .get(usize::from(switch))
                    .map_or(0, |s| s.flood.len());
                write!(f, "{sw}: dst MAC {dst} is {kind}: flood to {n} endpoint(s)")
            }
            What::Hairpin => {
                write!(
                    f,
                    "{sw}: dst MAC {dst} is the local port itself: drop (hairpin)"
                )
            }
            What::TooBig { len } => write!(
                f,
                "{sw}: {len} bytes of IPv4 exceed the overlay MTU {}: drop (too_big)",
                t.host.overlay_mtu
            ),
            What::NoEndpoints => write!(
                f,
                "{sw}: dst MAC {dst} is {kind}, but no remote endpoint is on the switch: \
                 drop (flood_no_endpoints)"
            ),
        }
    }
}
