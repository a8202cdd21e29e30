//! The edge's health-check port, the way in (`probe-in`): the entry of a
//! frame from the namespace where the edge's health checkers open their
//! connections (a veth whose other end holds the tier-0's
//! `health_check_ip`). The namespace routes everything out of its one
//! interface without a gateway, so it asks ARP for every real server: the
//! tier-0 answers any address but the checkers' own with its MAC (proxy
//! ARP), and learns the checkers' MAC. IPv4 passes to the tier-0 only from
//! the health-check address (`spoofed_src_ip` otherwise); the tier-0 routes it
//! into the overlay and nowhere else. The way out is `probe-out`
//! ([`super::uplink::process_out`] for [`Iface::Probe`]).

use std::fmt;
use std::net::Ipv4Addr;

use control::MacAddr;
use geneve::arp;

use super::uplink::{Entered, Refused};
use super::{Ctx, DropReason, Recorder, Step, Verdict, Why as LayerWhy};
use crate::counters::Counters;
use crate::edge::Iface;
use crate::queue::Output;
use crate::tables::Tables;

/// Why `probe-in` decided as it did.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Why {
    Refused(Refused),
    /// ARP from the checkers (`answered`: a request for another address,
    /// answered with the tier-0's MAC).
    Arp {
        target: Ipv4Addr,
        sender: Ipv4Addr,
        answered: bool,
    },
    /// ARP or IPv4 from an address other than the health-check address.
    NotChecker {
        src: Ipv4Addr,
    },
    /// IPv4 for the tier-0.
    Pass {
        src: Ipv4Addr,
        dst: Ipv4Addr,
    },
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
        rec.note(|| LayerWhy::Probe(why));
        Step::Done(v)
    }
    let (t0, entered) = match super::uplink::entry(t, ctx, Iface::Probe) {
        Ok(ok) => ok,
        Err(e) => return done(rec, Verdict::Drop(e.reason()), Why::Refused(e)),
    };
    let me = t0.health_check_ip;
    match entered {
        Entered::Arp(a) => {
            let (sender, mac, target) = (a.sender_ip(), MacAddr(a.sender_mac()), a.target_ip());
            if sender != me || mac.is_multicast() || mac.is_zero() {
                return done(
                    rec,
                    Verdict::Drop(DropReason::SpoofedSrcIp),
                    Why::NotChecker { src: sender },
                );
            }
            if let Some(edge) = rec.edge_mut() {
                edge.probe.learn(sender, mac, now_ns);
            }
            let answered = a.operation() == arp::OP_REQUEST
                && target != me
                && super::uplink::arp_reply(out, c, Iface::Probe, t0.mac, target, mac, sender);
            let v = if answered {
                Verdict::Replied
            } else {
                Verdict::Absorbed
            };
            done(
                rec,
                v,
                Why::Arp {
                    target,
                    sender,
                    answered,
                },
            )
        }
        Entered::Ipv4 { src, dst } => {
            if src != me {
                return done(
                    rec,
                    Verdict::Drop(DropReason::SpoofedSrcIp),
                    Why::NotChecker { src },
                );
            }
            rec.note(|| LayerWhy::Probe(Why::Pass { src, dst }));
            Step::Next
        }
    }
}

impl Why {
    pub(crate) fn write(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Why::Refused(r) => r.write(f),
            Why::Arp {
                target,
                sender,
                answered,
            } => {
                write!(f, "ARP about {target} from the checkers ({sender})")?;
                if answered {
                    f.write_str(": answered with the tier-0's MAC")
                } else {
                    f.write_str(": learned")
                }
            }
            Why::NotChecker { src } => write!(
                f,
                "from {src}, not the health-check address: drop (spoofed_src_ip)"
            ),
            Why::Pass { src, dst } => write!(f, "IPv4 {src} > {dst}: to the tier-0"),
        }
    }
}
