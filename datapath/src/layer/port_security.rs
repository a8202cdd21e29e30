//! SpoofGuard: a frame from the local port must carry the port's MAC as its
//! source, and its IPv4 source or ARP sender must be the port's address.
//! Only IPv4 and ARP are switched; anything else is dropped and counted.
//! Default action: drop.

use geneve::{arp, ethernet};

use super::{Ctx, Step, Verdict};
use crate::counters::DropReason;
use crate::offload::{MAX_SEGMENTS, Plan};
use crate::tables::Tables;

pub(crate) fn process(t: &Tables, ctx: &mut Ctx<'_>) -> Step {
    let drop = |r| Step::Done(Verdict::Drop(r));
    let Some(port) = t.port else {
        return drop(DropReason::NoPort);
    };
    if let Err(r) = ctx.parse_l2_l3() {
        return drop(r);
    }
    ctx.switch = port.switch;
    if let Some(gso) = ctx.offload.gso {
        match Plan::new(ctx.frame, gso) {
            Some(plan) if plan.count <= MAX_SEGMENTS => ctx.segments = Some(plan),
            _ => return drop(DropReason::BadOffload),
        }
    }
    if ctx.src != port.mac {
        return drop(DropReason::SpoofedSrcMac);
    }
    match ctx.ethertype {
        ethernet::ETHERTYPE_IPV4 => match ctx.ipv4 {
            Some(ip) if ip.src == port.ip => Step::Next,
            _ => drop(DropReason::SpoofedSrcIp),
        },
        ethernet::ETHERTYPE_ARP => {
            let Ok(a) = arp::Packet::new_checked(&ctx.frame[ethernet::HEADER_LEN..]) else {
                return drop(DropReason::Malformed);
            };
            let sender_ok = a.sender_ip() == port.ip || a.sender_ip().is_unspecified();
            if a.sender_mac() != port.mac.0 || !sender_ok {
                return drop(DropReason::SpoofedArp);
            }
            Step::Next
        }
        _ => drop(DropReason::UnsupportedEthertype),
    }
}
