//! The pipeline's layers and the walk over them. Each layer is a small
//! module with one job, a default action, and its own counters. The order
//! of layers is data: [`EGRESS`] and [`INGRESS`] list them, and [`walk`]
//! goes down the list, keeping each layer's counters.
//!
//! A layer returns its [`Step`] and tells a [`Recorder`] why ([`Why`], one
//! structured reason per decision point, taken from what the layer looked
//! at). The packet path walks with [`Commit`], which carries the
//! firewall's decisions out and drops the reasons unbuilt (they are
//! closures it never calls, so they cost nothing); `trace` walks the same
//! code with a recorder that keeps them and commits nothing
//! ([`crate::trace`]).

use std::fmt;
use std::net::Ipv4Addr;

use ::firewall::packet::{Packet as FwPacket, ParseError as FwParseError};
use ::firewall::{Dir, Firewall, FwVerdict};
use control::MacAddr;

pub(crate) use crate::verdict::{DropReason, LayerId, Verdict};

use crate::counters::Counters;
use crate::edge::{EdgeState, Iface};
use crate::lbstate::{LbState, Way};
use crate::offload::{Offload, Plan};
use crate::queue::Output;
use crate::tables::{SwitchIdx, Tables, TepIdx};

pub(crate) mod decap;
pub(crate) mod deliver;
pub(crate) mod dhcp;
pub(crate) mod downlink;
pub(crate) mod encap;
pub(crate) mod firewall;
pub(crate) mod forward;
pub(crate) mod lb;
pub(crate) mod nat;
pub(crate) mod port_security;
pub(crate) mod probe;
pub(crate) mod responder;
pub(crate) mod router;
pub(crate) mod source_guard;
pub(crate) mod switch;
pub(crate) mod tier0;
pub(crate) mod uplink;

/// Frames from the local port toward the network, in order.
pub const EGRESS: [LayerId; 8] = [
    LayerId::PortSecurity,
    LayerId::Dhcp,
    LayerId::Firewall,
    LayerId::Lb,
    LayerId::Responder,
    LayerId::Switch,
    LayerId::Router,
    LayerId::Encap,
];

/// Geneve packets from the underlay toward the local port, in order.
pub const INGRESS: [LayerId; 4] = [
    LayerId::Decap,
    LayerId::Lb,
    LayerId::Firewall,
    LayerId::Deliver,
];

/// Micro-segmentation, a frame the NIC received (for the host): judged,
/// then passed to the host.
pub const MSEG_IN: [LayerId; 2] = [LayerId::Firewall, LayerId::Forward];

/// Micro-segmentation, a frame the host sends: judged, then passed out of
/// the NIC.
pub const MSEG_OUT: [LayerId; 2] = [LayerId::Firewall, LayerId::Forward];

/// The edge, a frame the uplink received: NAT (the destination back to
/// the instance), the tier-0, then the tier-1 and encapsulation into the
/// overlay.
pub const EDGE_FROM_UPLINK: [LayerId; 6] = [
    LayerId::UplinkIn,
    LayerId::Lb,
    LayerId::Nat,
    LayerId::Tier0,
    LayerId::Router,
    LayerId::Encap,
];

/// The edge, Geneve from an instance's tier-1 on the transit segment: NAT,
/// the tier-0, then out of the uplink or the downlink, or back into the
/// overlay (a public IP reached from inside: hairpinning).
pub const EDGE_FROM_OVERLAY: [LayerId; 9] = [
    LayerId::Decap,
    LayerId::Lb,
    LayerId::Nat,
    LayerId::Tier0,
    LayerId::UplinkOut,
    LayerId::DownlinkOut,
    LayerId::ProbeOut,
    LayerId::Router,
    LayerId::Encap,
];

/// The edge, a frame from its health-check port (the checkers'
/// namespace): the tier-0 routes it into the overlay, untranslated.
pub const EDGE_FROM_PROBE: [LayerId; 4] = [
    LayerId::ProbeIn,
    LayerId::Tier0,
    LayerId::Router,
    LayerId::Encap,
];

/// The edge, a frame its downlink (the underlay bridge) received from a
/// host on the underlay subnet: NAT, the tier-0, then the tier-1 and
/// encapsulation into the overlay.
pub const EDGE_FROM_DOWNLINK: [LayerId; 5] = [
    LayerId::DownlinkIn,
    LayerId::Nat,
    LayerId::Tier0,
    LayerId::Router,
    LayerId::Encap,
];

/// How the firewall's answer to a rejected ingress packet goes back to its
/// sender: switched, routed and encapsulated like a frame from the port.
pub(crate) const ANSWER: [LayerId; 3] = [LayerId::Switch, LayerId::Router, LayerId::Encap];

/// What a layer decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Hand the frame to the next layer.
    Next,
    /// The frame is finished.
    Done(Verdict),
}

/// IPv4 fields the layers look at, read once by port security or decap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ipv4Meta {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ttl: u8,
    pub protocol: u8,
    pub dont_frag: bool,
    pub total_len: u16,
    /// First byte of the L4 header (ICMP type), 0 if absent.
    pub l4_first: u8,
}

/// Where the encapsulation layer sends the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    Unicast { tep: TepIdx, vni: u32 },
    Flood { switch: SwitchIdx },
}

/// Per-frame state carried between layers.
#[derive(Debug)]
pub(crate) struct Ctx<'a> {
    /// The Ethernet frame being processed (inner frame on ingress).
    pub frame: &'a [u8],
    pub dst: MacAddr,
    pub src: MacAddr,
    pub ethertype: u16,
    pub ipv4: Option<Ipv4Meta>,
    /// Logical switch the frame is on.
    pub switch: SwitchIdx,
    /// Set by the switch layer when the frame is addressed to the router MAC.
    pub to_router: bool,
    /// Rewrite the routed frame's MACs (dst, src) and decrement its TTL.
    pub rewrite: Option<(MacAddr, MacAddr)>,
    pub target: Option<Target>,
    /// Underlay source of an ingress packet.
    pub outer_src: Ipv4Addr,
    /// Checksum/segmentation work the frame still needs (egress only).
    pub offload: Offload,
    /// How a super-frame splits (set by port security when `offload.gso` is).
    pub segments: Option<Plan>,
    /// Set by the firewall on ingress: answer the sender (RST / unreachable).
    pub reject: Option<::firewall::RejectKind>,
    /// Set by the firewall when it rejected the frame (either direction).
    pub rejected: bool,
    /// The entry checked the Ethernet header (and the IPv4 header, when
    /// [`Ctx::ipv4`] is set) of `frame`, which does not change after it.
    pub l2_checked: bool,
    /// Routers the frame has passed (its TTL goes down by as many).
    pub hops: u8,
    /// Edge: the frame came from a tier-1 on the transit segment.
    pub transit: bool,
    /// Edge: the interface the frame came in on (`None`: the overlay).
    pub came_in: Option<Iface>,
    /// Edge: the tier-0 routed it out of this interface to this next hop.
    pub out_to: Option<(Iface, Ipv4Addr)>,
    /// Edge: the translation NAT decided on, applied when the frame is copied out.
    pub nat: Option<::nat::Translation>,
}

impl<'a> Ctx<'a> {
    pub fn new(frame: &'a [u8]) -> Ctx<'a> {
        Ctx {
            frame,
            dst: MacAddr::default(),
            src: MacAddr::default(),
            ethertype: 0,
            ipv4: None,
            switch: 0,
            to_router: false,
            rewrite: None,
            target: None,
            outer_src: Ipv4Addr::UNSPECIFIED,
            offload: Offload::NONE,
            segments: None,
            reject: None,
            rejected: false,
            l2_checked: false,
            hops: 0,
            transit: false,
            came_in: None,
            out_to: None,
            nat: None,
        }
    }

    /// The IPv4 destination to route on: NAT's translation if it made one.
    pub fn route_dst(&self) -> Ipv4Addr {
        let dst = self.ipv4.map_or(Ipv4Addr::UNSPECIFIED, |ip| ip.dst);
        self.nat.as_ref().map_or(dst, |n| nat::route_dst(n, dst))
    }

    /// IPv4 length of the largest packet this frame becomes on the overlay
    /// (a super-frame's largest segment).
    pub fn wire_l3_len(&self) -> usize {
        match &self.segments {
            Some(plan) => plan.max_ip_len(),
            None => self
                .frame
                .len()
                .saturating_sub(geneve::ethernet::HEADER_LEN),
        }
    }

    /// The pipeline's entry: reads the Ethernet header (and the IPv4
    /// header if present) into the context, checked once for every layer.
    pub fn parse_l2_l3(&mut self) -> Result<(), DropReason> {
        self.l2_checked = false;
        let eth =
            geneve::ethernet::Frame::new_checked(self.frame).map_err(|_| DropReason::Malformed)?;
        self.dst = MacAddr(eth.dst());
        self.src = MacAddr(eth.src());
        self.ethertype = eth.ethertype();
        self.l2_checked = true;
        if self.ethertype == geneve::ethernet::ETHERTYPE_IPV4 {
            let ip = geneve::ipv4::Packet::new_checked(eth.payload())
                .map_err(|_| DropReason::Malformed)?;
            self.ipv4 = Some(Ipv4Meta {
                src: ip.src(),
                dst: ip.dst(),
                ttl: ip.ttl(),
                protocol: ip.protocol(),
                dont_frag: ip.dont_frag(),
                total_len: ip.total_len(),
                l4_first: ip.payload().first().copied().unwrap_or(0),
            });
        }
        Ok(())
    }

    /// The firewall's view of the frame (L2 to L4) over the headers the
    /// entry already checked: only the L4 header is read here, so each
    /// header is parsed once. A frame the entry could not read (a runt
    /// micro-segmentation passes to the firewall) is parsed whole, and
    /// the firewall counts it malformed.
    ///
    /// A translation already decided ([`Ctx::nat`]: the balancer's, on an
    /// instance's way in) is applied to the view, so the firewall judges
    /// the packet the instance will receive: a real server's answer with
    /// the virtual server's address, the connection the instance opened.
    #[inline(always)]
    pub fn fw_view(&self) -> Result<FwPacket, FwParseError> {
        use geneve::{ethernet::Frame, ipv4};
        if !self.l2_checked {
            return ::firewall::packet::parse(self.frame);
        }
        let eth = Frame::new_unchecked(self.frame);
        let mut view = match self.ipv4 {
            Some(_) => {
                let ip = ipv4::Packet::new_unchecked(eth.payload());
                ::firewall::packet::from_checked(&eth, Some(&ip))
            }
            None => ::firewall::packet::from_checked(&eth, None),
        };
        if let (
            Some(tr),
            Ok(FwPacket {
                class: ::firewall::packet::Class::Ipv4(info),
                ..
            }),
        ) = (&self.nat, &mut view)
        {
            translate_tuple(&mut info.tuple, tr);
        }
        view
    }
}

/// Why a layer decided as it did: the layer's own reason.
#[derive(Debug, Clone)]
pub(crate) enum Why {
    PortSecurity(port_security::Why),
    Dhcp(dhcp::Why),
    Firewall(firewall::Why),
    Responder(responder::Why),
    Switch(switch::Why),
    Router(router::Why),
    Encap(encap::Why),
    Decap(decap::Why),
    Deliver(deliver::Why),
    Forward(forward::Why),
    Uplink(uplink::Why),
    Downlink(downlink::Why),
    Nat(nat::Why),
    Tier0(tier0::Why),
    Lb(lb::Why),
    Probe(probe::Why),
}

impl Why {
    /// The reason in one line, with names from `t` (the tables it was
    /// decided on).
    pub(crate) fn show<'a>(&'a self, t: &'a Tables) -> Shown<'a> {
        Shown { why: self, t }
    }
}

/// [`Why::show`].
pub(crate) struct Shown<'a> {
    why: &'a Why,
    t: &'a Tables,
}

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.t;
        match self.why {
            Why::PortSecurity(w) => w.write(t, f),
            Why::Dhcp(w) => w.write(t, f),
            Why::Firewall(w) => w.write(f),
            Why::Responder(w) => w.write(t, f),
            Why::Switch(w) => w.write(t, f),
            Why::Router(w) => w.write(t, f),
            Why::Encap(w) => w.write(t, f),
            Why::Decap(w) => w.write(t, f),
            Why::Deliver(w) => w.write(t, f),
            Why::Forward(w) => w.write(f),
            Why::Uplink(w) => w.write(f),
            Why::Downlink(w) => w.write(f),
            Why::Probe(w) => w.write(f),
            Why::Nat(w) => w.write(f),
            Why::Tier0(w) => w.write(t, f),
            Why::Lb(w) => w.write(f),
        }
    }
}

/// Where the layers' reasons go, and how the firewall's decisions are
/// taken: judged and committed on the packet path, judged only in a trace.
pub(crate) trait Recorder {
    /// The firewall's verdict on a frame it sees as `view` makes it
    /// (`None`: no firewall configured, and `view` is not called).
    fn firewall(
        &mut self,
        dir: Dir,
        view: impl FnOnce() -> Result<FwPacket, FwParseError>,
        now_ns: u64,
    ) -> Option<FwVerdict>;
    /// Why the current layer decides as it does (built only if wanted).
    fn note(&mut self, why: impl FnOnce() -> Why);
    /// The firewall layer is done with the verdict [`Recorder::firewall`]
    /// gave; a reject's answer went to `answer`.
    fn judged(&mut self, answer: firewall::Answer);
    /// The current layer's step is final.
    fn step(&mut self, layer: LayerId, step: Step);
    /// The edge's state, to read (the packet path and `trace`).
    fn edge(&self) -> Option<&EdgeState>;
    /// The edge's state, to change: the packet path only (`trace` changes
    /// nothing).
    fn edge_mut(&mut self) -> Option<&mut EdgeState>;
    /// The load balancer, to read (`trace` peeks at its decisions).
    fn lb(&self) -> Option<&LbState>;
    /// The load balancer, to change: the packet path only.
    fn lb_mut(&mut self) -> Option<&mut LbState>;
}

/// The packet path's recorder: the firewall's decisions are carried out,
/// reasons are never built.
#[derive(Debug)]
pub(crate) struct Commit<'a> {
    pub fw: Option<&'a mut Firewall>,
    pub edge: Option<&'a mut EdgeState>,
    pub lb: Option<&'a mut LbState>,
}

impl Recorder for Commit<'_> {
    #[inline(always)]
    fn firewall(
        &mut self,
        dir: Dir,
        view: impl FnOnce() -> Result<FwPacket, FwParseError>,
        now_ns: u64,
    ) -> Option<FwVerdict> {
        let fw = self.fw.as_deref_mut()?;
        Some(fw.process_parsed(dir, &view(), now_ns))
    }

    #[inline(always)]
    fn note(&mut self, _why: impl FnOnce() -> Why) {}

    #[inline(always)]
    fn judged(&mut self, _answer: firewall::Answer) {}

    #[inline(always)]
    fn step(&mut self, _layer: LayerId, _step: Step) {}

    #[inline(always)]
    fn edge(&self) -> Option<&EdgeState> {
        self.edge.as_deref()
    }

    #[inline(always)]
    fn edge_mut(&mut self) -> Option<&mut EdgeState> {
        self.edge.as_deref_mut()
    }

    #[inline(always)]
    fn lb(&self) -> Option<&LbState> {
        self.lb.as_deref()
    }

    #[inline(always)]
    fn lb_mut(&mut self) -> Option<&mut LbState> {
        self.lb.as_deref_mut()
    }
}

/// Runs `ctx` down `layers`, counting per layer; the first layer that
/// decides ends the walk. `dir` is the frame's direction as the firewall
/// sees it (`in`: toward the instance or host).
#[allow(clippy::too_many_arguments)]
pub(crate) fn walk<R: Recorder>(
    t: &Tables,
    dir: Dir,
    layers: &[LayerId],
    ctx: &mut Ctx<'_>,
    out: &mut Output,
    c: &mut Counters,
    now_ns: u64,
    rec: &mut R,
) -> Verdict {
    for &id in layers {
        // The balancer is a layer only while there is one (virtual
        // servers configured, or connections left of removed ones):
        // otherwise it is not walked, counted or traced.
        if id == LayerId::Lb && rec.lb().is_none() {
            continue;
        }
        c.layers[id as usize].seen += 1;
        let step = match id {
            LayerId::PortSecurity => port_security::process(t, ctx, rec),
            LayerId::Dhcp => dhcp::process(t, ctx, out, c, now_ns, rec),
            LayerId::Firewall => firewall::process(dir, ctx, out, c, now_ns, rec),
            LayerId::Responder => responder::process(t, ctx, out, c, rec),
            LayerId::Switch => switch::process(t, ctx, rec),
            LayerId::Router => router::process(t, ctx, out, c, rec),
            LayerId::Encap => encap::process(t, ctx, out, c, rec),
            LayerId::Decap => decap::process(t, ctx, c, now_ns, rec),
            LayerId::Deliver => deliver::process(t, ctx, out, c, rec),
            LayerId::Forward => forward::process(dir, ctx, c, rec),
            LayerId::UplinkIn => uplink::process_in(t, ctx, out, c, now_ns, rec),
            LayerId::Nat => nat::process(t, ctx, now_ns, rec),
            LayerId::Tier0 => tier0::process(t, ctx, out, c, rec),
            LayerId::UplinkOut => uplink::process_out(Iface::Uplink, t, ctx, out, c, now_ns, rec),
            LayerId::DownlinkIn => downlink::process_in(t, ctx, now_ns, rec),
            LayerId::DownlinkOut => {
                uplink::process_out(Iface::Downlink, t, ctx, out, c, now_ns, rec)
            }
            LayerId::Lb => lb::process(lb_way(dir, ctx), ctx, now_ns, rec),
            LayerId::ProbeIn => probe::process_in(t, ctx, out, c, now_ns, rec),
            LayerId::ProbeOut => uplink::process_out(Iface::Probe, t, ctx, out, c, now_ns, rec),
        };
        rec.step(id, step);
        let lc = &mut c.layers[id as usize];
        match step {
            Step::Next => lc.passed += 1,
            Step::Done(v) => {
                match v {
                    Verdict::Drop(reason) => {
                        lc.dropped += 1;
                        c.drop(reason);
                    }
                    _ => lc.handled += 1,
                }
                return v;
            }
        }
    }
    // Every list ends in a layer that always decides; reaching here is a
    // wiring bug, surfaced as a counted drop rather than a panic.
    c.drop(DropReason::NoRoute);
    Verdict::Drop(DropReason::NoRoute)
}

/// The firewall's tuple as `tr` leaves the packet (ports of TCP and UDP;
/// an ICMP error's outer addresses).
#[cold]
#[inline(never)]
fn translate_tuple(tuple: &mut ::firewall::flow::Tuple, tr: &::nat::Translation) {
    match tr {
        ::nat::Translation::Packet(rw) => {
            if let Some(src) = rw.src {
                tuple.src = *src.ip();
                if tuple.proto != geneve::ipv4::PROTO_ICMP {
                    tuple.sport = src.port();
                }
            }
            if let Some(dst) = rw.dst {
                tuple.dst = *dst.ip();
                if tuple.proto != geneve::ipv4::PROTO_ICMP {
                    tuple.dport = dst.port();
                }
            }
        }
        ::nat::Translation::IcmpError(e) => {
            tuple.src = e.outer_src.unwrap_or(tuple.src);
            tuple.dst = e.outer_dst.unwrap_or(tuple.dst);
        }
    }
}

/// Which way a frame meets the balancer: on an instance, what the port
/// sends goes to virtual servers and what the underlay brings may be a
/// real server's answer; on the edge, the uplink brings clients and the
/// overlay brings both (answers, and full-NAT clients inside).
fn lb_way(dir: Dir, ctx: &Ctx<'_>) -> Way {
    if ctx.transit {
        Way::Either
    } else if ctx.came_in == Some(Iface::Uplink) || dir == Dir::Out {
        Way::ToVip
    } else {
        Way::FromServer
    }
}

/// A routed frame copied out: new MACs, TTL - `hops` (incremental
/// checksum), and NAT's translation.
pub(crate) fn rewrite_routed(
    frame: &mut [u8],
    dst: MacAddr,
    src: MacAddr,
    hops: u8,
    nat: Option<&::nat::Translation>,
) -> Option<()> {
    let mut eth = geneve::ethernet::Frame::new_checked(frame).ok()?;
    eth.set_dst(dst.0);
    eth.set_src(src.0);
    {
        let mut ip = geneve::ipv4::Packet::new_checked(eth.payload_mut()).ok()?;
        for _ in 0..hops {
            ip.decrement_ttl();
        }
    }
    if let Some(n) = nat {
        ::nat::rewrite::apply(eth.payload_mut(), n, ::nat::L4Csum::Complete).ok()?;
    }
    Some(())
}

/// `web (vni 0x238c)`.
pub(crate) struct SwitchName<'a>(pub &'a Tables, pub SwitchIdx);

impl fmt::Display for SwitchName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.switches.get(usize::from(self.1)) {
            Some(sw) => write!(f, "{} (vni {:#x})", sw.name, sw.vni),
            None => write!(f, "switch #{}", self.1),
        }
    }
}

/// `10.99.3.44 (tep 44)`.
pub(crate) struct TepName<'a>(pub &'a Tables, pub TepIdx);

impl fmt::Display for TepName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.teps.get(usize::from(self.1)) {
            Some(r) => write!(f, "{} (tep {})", r.ip, r.id),
            None => write!(f, "endpoint #{}", self.1),
        }
    }
}
