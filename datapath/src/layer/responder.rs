//! Local responders: ARP requests are answered here for every address the
//! switch knows (remote ports and the router's gateway address) and never
//! flooded; ICMP echo requests to a router address get their reply here.
//! Default action: pass (anything not for a responder goes on).

use geneve::{arp, ethernet, icmpv4, ipv4};

use super::{Ctx, Step, Verdict};
use crate::counters::{Counters, DropReason};
use crate::queue::Output;
use crate::tables::Tables;

pub(crate) fn process(t: &Tables, ctx: &mut Ctx<'_>, out: &mut Output, c: &mut Counters) -> Step {
    match ctx.ethertype {
        ethernet::ETHERTYPE_ARP => arp_request(t, ctx, out, c),
        ethernet::ETHERTYPE_IPV4 => echo_to_router(t, ctx, out, c),
        _ => Step::Next,
    }
}

fn arp_request(t: &Tables, ctx: &mut Ctx<'_>, out: &mut Output, c: &mut Counters) -> Step {
    let Ok(a) = arp::Packet::new_checked(&ctx.frame[ethernet::HEADER_LEN..]) else {
        return Step::Done(Verdict::Drop(DropReason::Malformed));
    };
    if a.operation() != arp::OP_REQUEST {
        return Step::Next; // replies are switched like any unicast frame
    }
    let target = a.target_ip();
    if t.port.is_some_and(|p| p.ip == target) {
        // A gratuitous ARP or probe for our own address: nobody to tell.
        return Step::Done(Verdict::Absorbed);
    }
    let sw = &t.switches[usize::from(ctx.switch)];
    let mac = match t.router_of(ctx.switch) {
        Some(r) if sw.gateway_ip == target => r.mac,
        _ => match t.neighbor(ctx.switch, target) {
            Some(n) => n.mac,
            None => return Step::Done(Verdict::Drop(DropReason::ArpUnknownTarget)),
        },
    };
    let (to_mac, to_ip) = (ctx.src.0, a.sender_ip());
    let pushed = out.port.push_with(to_ip, |buf| {
        arp::emit_reply_frame(buf, mac.0, target, to_mac, to_ip).ok()
    });
    if !pushed {
        return Step::Done(Verdict::Drop(DropReason::TxFull));
    }
    c.port_tx.add(arp::FRAME_LEN);
    Step::Done(Verdict::Replied)
}

fn echo_to_router(t: &Tables, ctx: &mut Ctx<'_>, out: &mut Output, c: &mut Counters) -> Step {
    let (Some(ip), Some(router)) = (ctx.ipv4, t.router_of(ctx.switch)) else {
        return Step::Next;
    };
    if ctx.dst != router.mac || t.router_ip(router, ip.dst).is_none() {
        return Step::Next;
    }
    if ip.protocol != ipv4::PROTO_ICMP || ip.l4_first != icmpv4::TYPE_ECHO_REQUEST {
        return Step::Done(Verdict::Drop(DropReason::ToRouter));
    }
    let mut len = 0;
    let pushed = out.port.push_with(ip.src, |buf| {
        len = icmpv4::emit_echo_reply_frame(buf, ctx.frame, router.mac.0).ok()?;
        Some(len)
    });
    if !pushed {
        return Step::Done(Verdict::Drop(DropReason::Malformed));
    }
    c.port_tx.add(len);
    Step::Done(Verdict::Replied)
}
