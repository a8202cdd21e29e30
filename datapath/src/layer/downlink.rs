//! The edge's downlink, the way in (`downlink-in`): the entry of a frame
//! the filtered AF_PACKET socket on the underlay bridge received (see
//! [`crate::bpf`] for what the kernel lets through; this layer checks the
//! same again, so the filter is only a pre-selection). The Ethernet and
//! IPv4 headers are checked once. ARP whose target is the downlink's
//! address is learned (requests and replies: RFC 826's merge) and never
//! answered: the address is the host's, and the kernel answers for it.
//! Unicast IPv4 to the bridge's MAC passes to NAT and the tier-0 when it
//! goes to an overlay subnet behind the tier-0, or, with `underlay_snat`,
//! to the downlink's address (what the downlink's SNAT may have to
//! translate back). Default: drop (`not_for_edge`): the host's own
//! traffic is the kernel's.

use std::fmt;
use std::net::Ipv4Addr;

use control::MacAddr;

use super::uplink::{Entered, Refused};
use super::{Ctx, DropReason, Recorder, Step, Verdict, Why as LayerWhy};
use crate::edge::Iface;
use crate::tables::Tables;

/// Why `downlink-in` decided as it did.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Why {
    /// The entry both edge interfaces share refused the frame (the bridge
    /// is promiscuous: unicast to other MACs reaches the socket).
    Refused(Refused),
    /// ARP about `target` from `sender` at `mac` (`learned`: it went into
    /// the downlink's ARP cache).
    Arp {
        target: Ipv4Addr,
        sender: Ipv4Addr,
        mac: MacAddr,
        learned: bool,
    },
    /// IPv4 neither to the overlay nor to the downlink's NAT: the host's.
    NotOurs { dst: Ipv4Addr },
    /// IPv4 for the tier-0.
    Pass { src: Ipv4Addr, dst: Ipv4Addr },
}

pub(crate) fn process_in<R: Recorder>(
    t: &Tables,
    ctx: &mut Ctx<'_>,
    now_ns: u64,
    rec: &mut R,
) -> Step {
    fn done<R: Recorder>(rec: &mut R, v: Verdict, why: Why) -> Step {
        rec.note(|| LayerWhy::Downlink(why));
        Step::Done(v)
    }
    let (t0, entered) = match super::uplink::entry(t, ctx, Iface::Downlink) {
        Ok(ok) => ok,
        Err(e) => return done(rec, Verdict::Drop(e.reason()), Why::Refused(e)),
    };
    match entered {
        Entered::Arp(a) => {
            let (sender, mac, target) = (a.sender_ip(), MacAddr(a.sender_mac()), a.target_ip());
            let me = t0.downlink_ip();
            // Decided without the cache, so `trace` (which has no cache to
            // write) says what the packet path does.
            let learned = target == me
                && sender != me
                && t0.downlink.contains(&sender)
                && !mac.is_multicast()
                && !mac.is_zero();
            if learned && let Some(edge) = rec.edge_mut() {
                edge.downlink.learn(sender, mac, now_ns);
            }
            done(
                rec,
                Verdict::Absorbed,
                Why::Arp {
                    target,
                    sender,
                    mac,
                    learned,
                },
            )
        }
        Entered::Ipv4 { src, dst } => {
            if t0.overlay_subnets().any(|n| n.contains(&dst))
                || (t0.underlay_snat && dst == t0.downlink_ip())
            {
                rec.note(|| LayerWhy::Downlink(Why::Pass { src, dst }));
                Step::Next
            } else {
                done(
                    rec,
                    Verdict::Drop(DropReason::NotForEdge),
                    Why::NotOurs { dst },
                )
            }
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
                mac,
                learned,
            } => {
                write!(f, "ARP about {target} from {sender} ({mac})")?;
                if learned {
                    f.write_str(": learned on the downlink (the kernel answers)")
                } else {
                    f.write_str(": not for the downlink's address, ignored")
                }
            }
            Why::NotOurs { dst } => write!(
                f,
                "IPv4 to {dst}: neither the overlay nor the downlink's NAT, the host's: \
                 drop (not_for_edge)"
            ),
            Why::Pass { src, dst } => write!(f, "IPv4 {src} > {dst}: to the tier-0"),
        }
    }
}
