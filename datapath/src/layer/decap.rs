//! Geneve decapsulation: the sender must be a known tunnel endpoint; the
//! header and options are validated (version, lengths, critical options —
//! each failure its own drop reason); the VMware option must be present and
//! its endpoint id must match the sender; the VNI selects the logical
//! switch; the inner source must be a port behind the sender
//! ([`super::source_guard`]). Default action: drop.

use std::fmt;
use std::net::Ipv4Addr;

use control::MacAddr;

use super::source_guard::{self, Spoof};
use super::{Ctx, DropReason, Recorder, Step, TepName, Verdict, Why as LayerWhy};
use crate::counters::Counters;
use crate::tables::{Location, SwitchIdx, Tables, TepIdx};

/// Why decapsulation decided as it did: a packet from underlay address
/// `src` (endpoint `tep` when known).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Why {
    src: Ipv4Addr,
    tep: Option<TepIdx>,
    what: What,
}

#[derive(Debug, Clone, Copy)]
enum What {
    /// Onto `switch`; the inner frame goes `inner_src` > `inner_dst`.
    Pass {
        switch: SwitchIdx,
        inner_src: MacAddr,
        inner_dst: MacAddr,
    },
    UnknownTunnel,
    Geneve(geneve::GeneveError),
    /// No VMware option: the sender's endpoint id cannot be checked.
    MissingVmwareOption,
    /// The VMware option claims another endpoint id.
    TepIdMismatch {
        claimed: u32,
    },
    /// On the edge: a VNI other than the transit segment's (the tier-0
    /// takes only what a tier-1 routed to it).
    NotTransit {
        vni: u32,
    },
    UnknownVni {
        vni: u32,
    },
    Malformed,
    /// The inner source is not a port behind the sender.
    SpoofedSource(Spoof),
    /// On the transit segment from tier-1 `inner_src`, IPv4 source `ip`.
    Transit {
        inner_src: MacAddr,
        ip: Ipv4Addr,
    },
    /// On the transit segment, but not from a tier-1 (by MAC) with a
    /// source behind the sender, or not to the tier-0.
    TransitRefused {
        inner_src: MacAddr,
        inner_dst: MacAddr,
        ip: Option<Ipv4Addr>,
    },
}

pub(crate) fn process<R: Recorder>(
    t: &Tables,
    ctx: &mut Ctx<'_>,
    c: &mut Counters,
    now_ns: u64,
    rec: &mut R,
) -> Step {
    let src = ctx.outer_src;
    let tep = t.tep_by_ip(src);
    let mut note = |what| rec.note(|| LayerWhy::Decap(Why { src, tep, what }));
    let Some(tep) = tep else {
        note(What::UnknownTunnel);
        return Step::Done(Verdict::Drop(DropReason::UnknownTunnel));
    };
    if let Some(tc) = c.tunnels.get_mut(usize::from(tep)) {
        tc.rx.add(ctx.frame.len());
        tc.last_rx_ns = now_ns;
    }
    let parsed = match geneve::geneve::parse(ctx.frame) {
        Ok(p) => p,
        Err(e) => {
            note(What::Geneve(e));
            return Step::Done(Verdict::Drop(DropReason::from_geneve(&e)));
        }
    };
    // Without the option a spoofer of a known underlay address would skip
    // the id check, so its absence is a drop of its own.
    let Some(claimed) = parsed.tep_id else {
        note(What::MissingVmwareOption);
        return Step::Done(Verdict::Drop(DropReason::GeneveMissingVmwareOption));
    };
    if claimed != t.teps[usize::from(tep)].id {
        note(What::TepIdMismatch { claimed });
        return Step::Done(Verdict::Drop(DropReason::TepIdMismatch));
    }
    if let Some(t0) = &t.tier0
        && parsed.vni == t0.transit_vni
    {
        ctx.frame = parsed.payload;
        if let Err(r) = ctx.parse_l2_l3() {
            note(What::Malformed);
            return Step::Done(Verdict::Drop(r));
        }
        return transit(t, t0, ctx, tep, note);
    }
    if t.tier0.is_some() {
        note(What::NotTransit { vni: parsed.vni });
        return Step::Done(Verdict::Drop(DropReason::NotForEdge));
    }
    let Some(switch) = t.switch_by_vni(parsed.vni) else {
        note(What::UnknownVni { vni: parsed.vni });
        return Step::Done(Verdict::Drop(DropReason::UnknownVni));
    };
    ctx.frame = parsed.payload;
    ctx.switch = switch;
    if let Err(r) = ctx.parse_l2_l3() {
        note(What::Malformed);
        return Step::Done(Verdict::Drop(r));
    }
    if let Err(spoof) = source_guard::check(t, ctx, tep) {
        note(What::SpoofedSource(spoof));
        return Step::Done(Verdict::Drop(DropReason::SpoofedInnerSrc));
    }
    note(What::Pass {
        switch,
        inner_src: ctx.src,
        inner_dst: ctx.dst,
    });
    Step::Next
}

/// A frame on the transit segment (edge only): a tier-1 routed it to the
/// tier-0, so its source MAC is that tier-1's, its destination the
/// tier-0's, and its IPv4 source a port of the tier-1's switches behind
/// the sending endpoint.
fn transit(
    t: &Tables,
    t0: &crate::tables::Tier0,
    ctx: &mut Ctx<'_>,
    tep: TepIdx,
    mut note: impl FnMut(What),
) -> Step {
    let src_ip = ctx.ipv4.map(|ip| ip.src);
    let router = t0.tier1_with_mac(t, ctx.src);
    let behind = match (router, src_ip) {
        (Some(ri), Some(ip)) => t
            .routed_source(ri, ip)
            .is_some_and(|n| n.at == Location::Remote(tep)),
        _ => false,
    };
    if !behind || ctx.dst != t0.mac {
        note(What::TransitRefused {
            inner_src: ctx.src,
            inner_dst: ctx.dst,
            ip: src_ip,
        });
        return Step::Done(Verdict::Drop(DropReason::SpoofedInnerSrc));
    }
    if let Some(si) = router
        .and_then(|ri| t.routers.get(usize::from(ri)))
        .and_then(|r| r.switches.first().copied())
    {
        ctx.switch = si;
    }
    ctx.transit = true;
    note(What::Transit {
        inner_src: ctx.src,
        ip: src_ip.unwrap_or(Ipv4Addr::UNSPECIFIED),
    });
    Step::Next
}

impl Why {
    pub(crate) fn write(&self, t: &Tables, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let src = self.src;
        let from = From(t, src, self.tep);
        match self.what {
            What::Pass {
                switch,
                inner_src,
                inner_dst,
            } => {
                let (vni, sw) = t
                    .switches
                    .get(usize::from(switch))
                    .map_or((0, "?"), |s| (s.vni, s.name.as_str()));
                write!(
                    f,
                    "Geneve from {from}, vni {vni:#x} -> {sw}; inner {inner_src} > {inner_dst}"
                )
            }
            What::UnknownTunnel => {
                write!(
                    f,
                    "{src} is not a known tunnel endpoint: drop (unknown_tunnel)"
                )
            }
            What::Geneve(e) => write!(
                f,
                "Geneve from {from}: {e}: drop ({})",
                DropReason::from_geneve(&e).name()
            ),
            What::MissingVmwareOption => write!(
                f,
                "Geneve from {from}: no VMware option, the endpoint id cannot be checked: \
                 drop (geneve_missing_vmware_option)"
            ),
            What::TepIdMismatch { claimed } => write!(
                f,
                "Geneve from {from}: the VMware option says tep {claimed}: \
                 drop (tep_id_mismatch)"
            ),
            What::NotTransit { vni } => write!(
                f,
                "Geneve from {from}: vni {vni:#x} is not the transit segment: drop (not_for_edge)"
            ),
            What::UnknownVni { vni } => write!(
                f,
                "Geneve from {from}: vni {vni:#x} is no switch here: drop (unknown_vni)"
            ),
            What::Malformed => {
                write!(
                    f,
                    "Geneve from {from}: malformed inner frame: drop (malformed)"
                )
            }
            What::SpoofedSource(spoof) => spoof.write(t, &from, f),
            What::Transit { inner_src, ip } => {
                let vni = t.tier0.as_ref().map_or(0, |t0| t0.transit_vni);
                write!(
                    f,
                    "Geneve from {from}, transit vni {vni:#x}; routed by tier-1 {inner_src} from {ip}"
                )
            }
            What::TransitRefused {
                inner_src,
                inner_dst,
                ip,
            } => {
                write!(
                    f,
                    "Geneve from {from} on the transit segment: {inner_src} > {inner_dst}"
                )?;
                if let Some(ip) = ip {
                    write!(f, " from {ip}")?;
                }
                f.write_str(
                    " is not a tier-1 routing a port behind the sender to the tier-0: \
                     drop (spoofed_inner_src)",
                )
            }
        }
    }
}

/// The sending endpoint by name, or its address when unknown.
struct From<'a>(&'a Tables, Ipv4Addr, Option<TepIdx>);

impl fmt::Display for From<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.2 {
            Some(i) => write!(f, "{}", TepName(self.0, i)),
            None => write!(f, "{}", self.1),
        }
    }
}
