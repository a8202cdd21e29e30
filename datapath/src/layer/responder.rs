//! Local responders: ARP requests are answered here for every address the
//! switch knows (remote ports, the router's gateway address, and virtual
//! servers' addresses, with the router's MAC) and never flooded; ICMP echo requests to a router address get their reply here.
//! Default action: pass (anything not for a responder goes on).

use std::fmt;
use std::net::Ipv4Addr;

use control::MacAddr;
use geneve::{arp, ethernet, icmpv4, ipv4};

use super::{Ctx, DropReason, Recorder, Step, SwitchName, TepName, Verdict, Why as LayerWhy};
use crate::counters::Counters;
use crate::queue::Output;
use crate::tables::{Location, SwitchIdx, Tables};

/// Why the responder decided as it did.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Why {
    /// Neither an ARP request nor an echo request to a router address.
    NotForUs,
    ArpMalformed,
    /// ARP replies are switched like any unicast frame.
    ArpReply,
    /// An ARP request (`who`), and what became of it.
    Arp {
        who: WhoHas,
        outcome: ArpOutcome,
    },
    /// An echo request to router address `dst`, answered.
    Echo {
        dst: Ipv4Addr,
    },
    /// To router address `dst`, but not an echo request.
    NotEcho {
        dst: Ipv4Addr,
    },
    /// The echo reply could not be built.
    EchoFailed,
}

/// `ARP who-has {target} tell {sender}`, asked on `switch`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WhoHas {
    target: Ipv4Addr,
    sender: Ipv4Addr,
    switch: SwitchIdx,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum ArpOutcome {
    /// The port's own address (a probe or gratuitous ARP).
    Own,
    /// Answered: the router's gateway address.
    Gateway { mac: MacAddr },
    /// Answered with the router's MAC: a virtual server's address (the
    /// load balancer takes the connection on its way to the router).
    Vip { mac: MacAddr },
    /// Answered: a port behind `tep` (or the local port).
    Port { mac: MacAddr, at: Location },
    /// Nobody on the switch owns it.
    Unknown,
    /// The reply did not fit the port queue.
    TxFull,
}

pub(crate) fn process<R: Recorder>(
    t: &Tables,
    ctx: &mut Ctx<'_>,
    out: &mut Output,
    c: &mut Counters,
    rec: &mut R,
) -> Step {
    match ctx.ethertype {
        ethernet::ETHERTYPE_ARP => arp_request(t, ctx, out, c, rec),
        ethernet::ETHERTYPE_IPV4 => echo_to_router(t, ctx, out, c, rec),
        _ => {
            rec.note(|| LayerWhy::Responder(Why::NotForUs));
            Step::Next
        }
    }
}

fn arp_request<R: Recorder>(
    t: &Tables,
    ctx: &mut Ctx<'_>,
    out: &mut Output,
    c: &mut Counters,
    rec: &mut R,
) -> Step {
    let Ok(a) = arp::Packet::new_checked(&ctx.frame[ethernet::HEADER_LEN..]) else {
        rec.note(|| LayerWhy::Responder(Why::ArpMalformed));
        return Step::Done(Verdict::Drop(DropReason::Malformed));
    };
    if a.operation() != arp::OP_REQUEST {
        rec.note(|| LayerWhy::Responder(Why::ArpReply));
        return Step::Next;
    }
    let target = a.target_ip();
    let who = WhoHas {
        target,
        sender: a.sender_ip(),
        switch: ctx.switch,
    };
    let mut done = |v, outcome| {
        rec.note(|| LayerWhy::Responder(Why::Arp { who, outcome }));
        Step::Done(v)
    };
    if t.port.is_some_and(|p| p.ip == target) {
        // A gratuitous ARP or probe for our own address: nobody to tell.
        return done(Verdict::Absorbed, ArpOutcome::Own);
    }
    let sw = &t.switches[usize::from(ctx.switch)];
    let (mac, outcome) = match t.router_of(ctx.switch) {
        Some(r) if sw.gateway_ip == target => (r.mac, ArpOutcome::Gateway { mac: r.mac }),
        Some(r) if t.is_vip(target) && sw.subnet.contains(&target) => {
            (r.mac, ArpOutcome::Vip { mac: r.mac })
        }
        _ => match t.neighbor(ctx.switch, target) {
            Some(n) => (
                n.mac,
                ArpOutcome::Port {
                    mac: n.mac,
                    at: n.at,
                },
            ),
            None => {
                let v = Verdict::Drop(DropReason::ArpUnknownTarget);
                return done(v, ArpOutcome::Unknown);
            }
        },
    };
    let (to_mac, to_ip) = (ctx.src.0, a.sender_ip());
    let pushed = out.port.push_with(to_ip, |buf| {
        arp::emit_reply_frame(buf, mac.0, target, to_mac, to_ip).ok()
    });
    if !pushed {
        return done(Verdict::Drop(DropReason::TxFull), ArpOutcome::TxFull);
    }
    c.port_tx.add(arp::FRAME_LEN);
    done(Verdict::Replied, outcome)
}

fn echo_to_router<R: Recorder>(
    t: &Tables,
    ctx: &mut Ctx<'_>,
    out: &mut Output,
    c: &mut Counters,
    rec: &mut R,
) -> Step {
    let mut note = |why| rec.note(|| LayerWhy::Responder(why));
    let (Some(ip), Some(router)) = (ctx.ipv4, t.router_of(ctx.switch)) else {
        note(Why::NotForUs);
        return Step::Next;
    };
    if ctx.dst != router.mac || t.router_ip(router, ip.dst).is_none() {
        note(Why::NotForUs);
        return Step::Next;
    }
    if ip.protocol != ipv4::PROTO_ICMP || ip.l4_first != icmpv4::TYPE_ECHO_REQUEST {
        note(Why::NotEcho { dst: ip.dst });
        return Step::Done(Verdict::Drop(DropReason::ToRouter));
    }
    let mut len = 0;
    let pushed = out.port.push_with(ip.src, |buf| {
        len = icmpv4::emit_echo_reply_frame(buf, ctx.frame, router.mac.0).ok()?;
        Some(len)
    });
    if !pushed {
        note(Why::EchoFailed);
        return Step::Done(Verdict::Drop(DropReason::Malformed));
    }
    c.port_tx.add(len);
    note(Why::Echo { dst: ip.dst });
    Step::Done(Verdict::Replied)
}

impl Why {
    pub(crate) fn write(&self, t: &Tables, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Why::NotForUs => f.write_str("not for a local responder: pass"),
            Why::ArpMalformed => f.write_str("malformed ARP: drop"),
            Why::ArpReply => f.write_str("ARP reply: switched like any unicast frame"),
            Why::Arp { who, outcome } => {
                let sw = SwitchName(t, who.switch);
                write!(f, "ARP who-has {} tell {}: ", who.target, who.sender)?;
                match outcome {
                    ArpOutcome::Own => {
                        f.write_str("the port's own address (probe or gratuitous ARP): absorbed")
                    }
                    ArpOutcome::Gateway { mac } => {
                        let name = t.router_of(who.switch).map_or("?", |r| r.name.as_str());
                        write!(
                            f,
                            "gateway of router {name} on {sw}, is-at {mac}; reply sent to the port"
                        )
                    }
                    ArpOutcome::Vip { mac } => write!(
                        f,
                        "a virtual server's address on {sw}, is-at {mac} (the router's: the load \
                         balancer takes it on the way); reply sent to the port"
                    ),
                    ArpOutcome::Port {
                        mac,
                        at: Location::Remote(tep),
                    } => write!(
                        f,
                        "port on {sw} behind {}, is-at {mac}; reply sent to the port",
                        TepName(t, tep)
                    ),
                    ArpOutcome::Port {
                        mac,
                        at: Location::Local,
                    } => write!(f, "the local port, is-at {mac}; reply sent to the port"),
                    ArpOutcome::Unknown => write!(
                        f,
                        "no port on {sw} owns it (never flooded): drop (arp_unknown_target)"
                    ),
                    ArpOutcome::TxFull => write!(f, "drop ({})", DropReason::TxFull.name()),
                }
            }
            Why::Echo { dst } => write!(
                f,
                "ICMP echo request to router address {dst}: echo reply sent to the port"
            ),
            Why::NotEcho { dst } => write!(
                f,
                "to router address {dst} but not an ICMP echo request: drop (to_router)"
            ),
            Why::EchoFailed => write!(f, "drop ({})", DropReason::Malformed.name()),
        }
    }
}
