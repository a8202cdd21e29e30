//! The edge's uplink, both ways. In (`uplink-in`, the entry of a frame the
//! uplink NIC received): the Ethernet and IPv4 headers are checked once;
//! ARP requests for the uplink's addresses (primary, secondaries: the cloud
//! maps elastic IPs to these) are answered and their senders learned, ARP
//! replies learned; unicast IPv4 to the uplink's MAC passes to NAT and the
//! tier-0. Default: drop (`not_for_edge`). Out (`uplink-out`, a frame the
//! tier-0 routed to the uplink): the next hop's MAC from the ARP cache (an
//! ARP request on a miss, paced, and the frame dropped as `arp_pending`),
//! then the copy with the rewrites: MACs, TTL minus the routers passed, NAT.
//! `downlink-out` is the same code for the tier-0's other interface
//! ([`Iface`]): its own ARP cache, MAC (the underlay bridge's), address
//! (the underlay one) and output queue. The downlink's way in is
//! [`super::downlink`].

use std::fmt;
use std::net::Ipv4Addr;

use control::MacAddr;
use geneve::{arp, ethernet};

use super::{Ctx, DropReason, Recorder, Step, Verdict, Why as LayerWhy};
use crate::counters::{Counters, PacketBytes};
use crate::edge::Iface;
use crate::offload::{MAX_SEGMENTS, Plan, finish_csum};
use crate::queue::{Output, TxQueue};
use crate::tables::{Tables, Tier0};

/// Why an uplink layer decided as it did.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Why {
    /// The entry both edge interfaces share refused the frame.
    Refused(Refused),
    /// An ARP request for `target`, from `sender` at `mac`.
    ArpRequest {
        target: Ipv4Addr,
        sender: Ipv4Addr,
        mac: MacAddr,
        answered: bool,
    },
    /// An ARP reply (or one not for us): `sender` is at `mac`.
    ArpLearned { sender: Ipv4Addr, mac: MacAddr },
    /// IPv4 for the tier-0.
    Pass { src: Ipv4Addr, dst: Ipv4Addr },
    /// Out: nothing routed the frame to the interface.
    NotRouted(Iface),
    /// Out: sent to `next_hop` at `mac`.
    Sent {
        iface: Iface,
        next_hop: Ipv4Addr,
        mac: MacAddr,
        copies: u16,
    },
    /// Out: `next_hop`'s MAC is unknown (`asked`: an ARP request went out).
    Unresolved {
        iface: Iface,
        next_hop: Ipv4Addr,
        asked: bool,
    },
    /// Out: the interface's queue was full.
    TxFull(Iface),
}

/// The interface's output queue and transmit counter.
pub(crate) fn tx<'a>(
    out: &'a mut Output,
    c: &'a mut Counters,
    iface: Iface,
) -> (&'a mut TxQueue, &'a mut PacketBytes) {
    match iface {
        Iface::Uplink => (&mut out.port, &mut c.port_tx),
        Iface::Downlink => (&mut out.downlink, &mut c.downlink_tx),
        Iface::Probe => (&mut out.probe, &mut c.probe_tx),
    }
}

/// The tier-0's MAC and address on the interface (its ARP's sender).
pub(crate) fn own(t0: &Tier0, iface: Iface) -> (MacAddr, Ipv4Addr) {
    match iface {
        Iface::Uplink => (t0.uplink_mac, t0.primary()),
        Iface::Downlink => (t0.downlink_mac, t0.downlink_ip()),
        // No address of its own on the health-check port: its ARP asks
        // from the uplink's primary, as its ICMP comes from it.
        Iface::Probe => (t0.mac, t0.primary()),
    }
}

pub(crate) fn process_in<R: Recorder>(
    t: &Tables,
    ctx: &mut Ctx<'_>,
    out: &mut Output,
    c: &mut Counters,
    now_ns: u64,
    rec: &mut R,
) -> Step {
    fn done<R: Recorder>(rec: &mut R, v: Verdict, why: Why) -> Step {
        rec.note(|| LayerWhy::Uplink(why));
        Step::Done(v)
    }
    let (t0, entered) = match entry(t, ctx, Iface::Uplink) {
        Ok(ok) => ok,
        Err(e) => return done(rec, Verdict::Drop(e.reason()), Why::Refused(e)),
    };
    match entered {
        Entered::Arp(a) => {
            let (sender, mac, target) = (a.sender_ip(), MacAddr(a.sender_mac()), a.target_ip());
            let from_subnet = t0.uplink.contains(&sender) && !mac.is_multicast();
            if from_subnet && let Some(edge) = rec.edge_mut() {
                // Learn from requests and replies alike (RFC 826's merge).
                if a.operation() == arp::OP_REPLY
                    || edge.neighbors.lookup(sender, now_ns).is_some()
                    || t0.owns(target)
                {
                    edge.neighbors.learn(sender, mac, now_ns);
                }
            }
            if a.operation() == arp::OP_REQUEST {
                let answered = t0.owns(target)
                    && from_subnet
                    && arp_reply(out, c, Iface::Uplink, t0.uplink_mac, target, mac, sender);
                let v = if answered {
                    Verdict::Replied
                } else {
                    Verdict::Absorbed
                };
                return done(
                    rec,
                    v,
                    Why::ArpRequest {
                        target,
                        sender,
                        mac,
                        answered,
                    },
                );
            }
            done(rec, Verdict::Absorbed, Why::ArpLearned { sender, mac })
        }
        Entered::Ipv4 { src, dst } => {
            rec.note(|| LayerWhy::Uplink(Why::Pass { src, dst }));
            Step::Next
        }
    }
}

/// Why an edge interface's entry refused a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// No tier-0 in the tables (not an edge).
    NoTier0,
    /// A broken Ethernet, IPv4 or ARP header.
    Malformed,
    /// Segmentation metadata that cannot be honoured.
    BadOffload,
    /// Unicast to a MAC other than the interface's.
    OtherMac(Iface, MacAddr),
    /// Neither IPv4 nor ARP.
    Ethertype(u16),
    /// IPv4 to a group address.
    Group(Ipv4Addr),
}

impl Refused {
    pub(crate) fn reason(self) -> DropReason {
        match self {
            Refused::Malformed => DropReason::Malformed,
            Refused::BadOffload => DropReason::BadOffload,
            Refused::NoTier0
            | Refused::OtherMac(..)
            | Refused::Ethertype(_)
            | Refused::Group(_) => DropReason::NotForEdge,
        }
    }

    pub(crate) fn write(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Refused::NoTier0 => f.write_str("no tier-0 here: drop (not_for_edge)"),
            Refused::Malformed => f.write_str("malformed frame: drop (malformed)"),
            Refused::BadOffload => {
                f.write_str("offload metadata cannot be honoured: drop (bad_offload)")
            }
            Refused::OtherMac(i, m) => write!(
                f,
                "unicast to {m}, not the {}'s MAC: drop (not_for_edge)",
                i.name()
            ),
            Refused::Ethertype(e) => write!(f, "ethertype {e:#06x}: drop (not_for_edge)"),
            Refused::Group(d) => write!(f, "IPv4 to group address {d}: drop (not_for_edge)"),
        }
    }
}

/// What an edge interface's entry let in.
pub(crate) enum Entered<'f> {
    Arp(arp::Packet<&'f [u8]>),
    /// Unicast IPv4 for the tier-0.
    Ipv4 {
        src: Ipv4Addr,
        dst: Ipv4Addr,
    },
}

/// The entry both edge interfaces share (`uplink-in`, `downlink-in`): the
/// Ethernet and IPv4 headers read once, a super-frame's segments planned;
/// unicast to a MAC other than the interface's, IPv4 to a group address
/// and anything but IPv4 and ARP refused. Returns the tier-0 and what
/// came in.
pub(crate) fn entry<'t, 'f>(
    t: &'t Tables,
    ctx: &mut Ctx<'f>,
    iface: Iface,
) -> Result<(&'t Tier0, Entered<'f>), Refused> {
    let t0 = t.tier0.as_ref().ok_or(Refused::NoTier0)?;
    ctx.parse_l2_l3().map_err(|_| Refused::Malformed)?;
    if let Some(gso) = ctx.offload.gso {
        match Plan::new(ctx.frame, gso) {
            Some(plan) if plan.count <= MAX_SEGMENTS => ctx.segments = Some(plan),
            _ => return Err(Refused::BadOffload),
        }
    }
    let (mac, _) = own(t0, iface);
    if ctx.dst != mac && ctx.dst != MacAddr::BROADCAST {
        return Err(Refused::OtherMac(iface, ctx.dst));
    }
    match ctx.ethertype {
        ethernet::ETHERTYPE_ARP => {
            let frame: &'f [u8] = ctx.frame;
            let body = frame.get(ethernet::HEADER_LEN..).unwrap_or_default();
            let a = arp::Packet::new_checked(body).map_err(|_| Refused::Malformed)?;
            Ok((t0, Entered::Arp(a)))
        }
        ethernet::ETHERTYPE_IPV4 => match ctx.ipv4 {
            Some(ip)
                if ip.dst.is_broadcast() || ip.dst.is_multicast() || ctx.dst.is_multicast() =>
            {
                Err(Refused::Group(ip.dst))
            }
            Some(ip) => Ok((
                t0,
                Entered::Ipv4 {
                    src: ip.src,
                    dst: ip.dst,
                },
            )),
            None => Err(Refused::Malformed),
        },
        et => Err(Refused::Ethertype(et)),
    }
}

pub(crate) fn arp_reply(
    out: &mut Output,
    c: &mut Counters,
    iface: Iface,
    our_mac: MacAddr,
    our_ip: Ipv4Addr,
    to_mac: MacAddr,
    to_ip: Ipv4Addr,
) -> bool {
    send(out, c, iface, |buf| {
        arp::emit_reply_frame(buf, our_mac.0, our_ip, to_mac.0, to_ip).ok()
    })
}

/// An ARP request for `target` out of `iface`, from the tier-0's MAC and
/// address there.
pub(crate) fn arp_request(
    out: &mut Output,
    c: &mut Counters,
    t0: &Tier0,
    iface: Iface,
    target: Ipv4Addr,
) -> bool {
    let (our_mac, our_ip) = own(t0, iface);
    send(out, c, iface, |buf| {
        arp::emit_request_frame(buf, our_mac.0, our_ip, target).ok()
    })
}

/// Queues the frame `build` writes (its length, `None`: nothing) out of
/// `iface`, counted. Returns whether it was queued.
pub(crate) fn send(
    out: &mut Output,
    c: &mut Counters,
    iface: Iface,
    build: impl FnOnce(&mut [u8]) -> Option<usize>,
) -> bool {
    let (q, counter) = tx(out, c, iface);
    let mut len = 0;
    let pushed = q.push_with(Ipv4Addr::UNSPECIFIED, |buf| {
        len = build(buf)?;
        Some(len)
    });
    if pushed {
        counter.add(len);
    }
    pushed
}

/// `uplink-out` / `downlink-out`: a frame the tier-0 routed to `iface`
/// goes out of it; any other passes.
pub(crate) fn process_out<R: Recorder>(
    iface: Iface,
    t: &Tables,
    ctx: &mut Ctx<'_>,
    out: &mut Output,
    c: &mut Counters,
    now_ns: u64,
    rec: &mut R,
) -> Step {
    let routed = ctx
        .out_to
        .and_then(|(to, next_hop)| (to == iface).then_some(next_hop));
    let (Some(t0), Some(next_hop)) = (&t.tier0, routed) else {
        rec.note(|| LayerWhy::Uplink(Why::NotRouted(iface)));
        return Step::Next;
    };
    let mac = rec
        .edge()
        .and_then(|e| e.neighbors_of(iface).lookup(next_hop, now_ns));
    let Some(mac) = mac else {
        // `trace` has no cache to record the request in: it asks whether
        // one would go out.
        let may = match rec.edge_mut() {
            Some(e) => e.neighbors_of_mut(iface).may_request(next_hop, now_ns),
            None => rec
                .edge()
                .is_some_and(|e| e.neighbors_of(iface).would_request(next_hop, now_ns)),
        };
        let asked = may && arp_request(out, c, t0, iface, next_hop);
        rec.note(|| {
            LayerWhy::Uplink(Why::Unresolved {
                iface,
                next_hop,
                asked,
            })
        });
        return Step::Done(Verdict::Drop(DropReason::ArpPending));
    };
    let src = own(t0, iface).0;
    let copies: u16 = match ctx.segments {
        Some(plan) => (0..plan.count)
            .map(|i| u16::from(emit(iface, ctx, out, c, mac, src, Some((&plan, i)))))
            .sum(),
        None => u16::from(emit(iface, ctx, out, c, mac, src, None)),
    };
    if copies == 0 {
        rec.note(|| LayerWhy::Uplink(Why::TxFull(iface)));
        return Step::Done(Verdict::Drop(DropReason::TxFull));
    }
    rec.note(|| {
        LayerWhy::Uplink(Why::Sent {
            iface,
            next_hop,
            mac,
            copies,
        })
    });
    Step::Done(Verdict::Forwarded)
}

fn emit(
    iface: Iface,
    ctx: &Ctx<'_>,
    out: &mut Output,
    c: &mut Counters,
    dst: MacAddr,
    src: MacAddr,
    segment: Option<(&Plan, usize)>,
) -> bool {
    let frame = ctx.frame;
    // Only the uplink's queue has slots to merge into.
    let coalesce = out.coalesce && iface == Iface::Uplink;
    let (q, counter) = tx(out, c, iface);
    let mut len = 0;
    let pushed = q.push_with(Ipv4Addr::UNSPECIFIED, |buf| {
        len = match segment {
            Some((plan, i)) => plan.emit(frame, i, buf)?,
            None => {
                let f = buf.get_mut(..frame.len())?;
                f.copy_from_slice(frame);
                if let Some(partial) = ctx.offload.csum {
                    finish_csum(f, partial)?;
                }
                frame.len()
            }
        };
        super::rewrite_routed(&mut buf[..len], dst, src, ctx.hops, ctx.nat.as_ref())?;
        Some(len)
    });
    if pushed {
        counter.add(len);
        if coalesce {
            // A TCP segment continuing the last one's stream joins it: the
            // uplink NIC gets one TSO super-frame per run (its virtio-net
            // header says so), not one frame per segment.
            q.merge_last(crate::coalesce::try_append);
        }
    }
    pushed
}

impl Why {
    pub(crate) fn write(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Why::Refused(r) => r.write(f),
            Why::ArpRequest {
                target,
                sender,
                mac,
                answered,
            } => {
                write!(f, "ARP who-has {target} tell {sender} ({mac})")?;
                if answered {
                    f.write_str(": an uplink address, answered")
                } else {
                    f.write_str(": not ours, ignored")
                }
            }
            Why::ArpLearned { sender, mac } => write!(f, "ARP reply: {sender} is at {mac}"),
            Why::Pass { src, dst } => write!(f, "IPv4 {src} > {dst}: to the tier-0"),
            Why::NotRouted(i) => write!(f, "not routed to the {}: pass", i.name()),
            Why::Sent {
                iface,
                next_hop,
                mac,
                copies,
            } => write!(
                f,
                "out of the {} to next hop {next_hop} at {mac} ({copies} frame(s))",
                iface.name()
            ),
            Why::Unresolved {
                iface,
                next_hop,
                asked,
            } => write!(
                f,
                "{} next hop {next_hop}: MAC unknown{}: drop (arp_pending)",
                iface.name(),
                if asked { ", ARP request sent" } else { "" }
            ),
            Why::TxFull(i) => write!(f, "{} queue full: drop (tx_full)", i.name()),
        }
    }
}
