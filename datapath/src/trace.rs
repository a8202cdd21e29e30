//! `trace`: one frame through the live pipeline's decisions, recorded layer
//! by layer, with nothing sent and no state changed (like `ovn-trace` or
//! NSX Traceflow).
//!
//! [`Pipeline::trace`] walks the same layer list as the packet path
//! ([`EGRESS`] from the port, [`INGRESS`] from the underlay, then
//! [`ANSWER`] for the answer to a rejected ingress frame) and calls the same
//! layer functions, against scratch [`Counters`] and a scratch [`Output`]
//! allocated for the call (tracing is an operator command, not the packet
//! path). The firewall layer is the one exception: its decision comes from
//! [`Firewall::explain`], which reads the live connection table and policy
//! without touching them. So the verdict is the one the packet path would
//! reach for the same frame at the same moment, and the pipeline, its
//! counters and its connections are left exactly as they were.
//!
//! Each step's `detail` is one line re-deriving, from the same tables, what
//! the layer looked at and why it decided as it did: the port-security
//! check, the responder's answer, the firewall rule or connection, the
//! switch's MAC lookup, the router's route, TTL and rewrite, the
//! encapsulation's VNI and endpoints, decapsulation and delivery.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use control::MacAddr;
use firewall::{Dir, Firewall, Verdict as FwVerdict};
use geneve::{arp, ethernet, icmpv4, ipv4};

use crate::counters::{Counters, DropReason};
use crate::layer::{
    self, ANSWER, Ctx, EGRESS, INGRESS, Ipv4Meta, LayerId, Step, Target, Verdict, decap, deliver,
    encap, port_security, responder, router, switch,
};
use crate::pipeline::{ANSWER_BUF, Pipeline};
use crate::queue::Output;
use crate::tables::{Location, MAX_FLOOD, SwitchIdx, Tables};

/// Output slots are at least this big, like the agent's (its largest
/// underlay datagram), so a frame that fits there fits here.
const MIN_SLOT: usize = 9216;

/// Where the traced frame enters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceFrom {
    /// An Ethernet frame the instance sends on its port.
    Port,
    /// A Geneve UDP payload received from this underlay address.
    Underlay(Ipv4Addr),
}

/// How a layer's step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepResult {
    /// Handed on to the next layer.
    Next,
    /// The frame is finished here.
    Done,
}

impl StepResult {
    pub fn name(self) -> &'static str {
        match self {
            StepResult::Next => "next",
            StepResult::Done => "done",
        }
    }
}

/// One layer's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceStep {
    pub layer: LayerId,
    pub result: StepResult,
    /// One line: what the layer saw and decided.
    pub detail: String,
}

/// Which queue an output went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    /// A Geneve packet to a remote endpoint.
    Underlay,
    /// A frame to the local port (a delivery, reply or error).
    Port,
}

impl OutputKind {
    pub fn name(self) -> &'static str {
        match self {
            OutputKind::Underlay => "underlay",
            OutputKind::Port => "port",
        }
    }
}

/// A packet the frame would have produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceOutput {
    pub kind: OutputKind,
    /// Underlay: the remote endpoint's address; port: the frame's
    /// destination MAC.
    pub dst: String,
    /// Underlay: the Geneve VNI.
    pub vni: Option<u32>,
    /// Bytes: the outer IPv4 packet (underlay) or the Ethernet frame (port).
    pub len: usize,
    /// The (inner) frame in one line, tcpdump-like.
    pub summary: String,
}

/// The record of one traced frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    /// The input in one line (for the underlay: its inner frame).
    pub packet: String,
    pub steps: Vec<TraceStep>,
    /// What the packet path would return.
    pub verdict: Verdict,
    /// The firewall's own reason when it dropped or rejected the frame.
    pub firewall_drop: Option<firewall::DropReason>,
    pub outputs: Vec<TraceOutput>,
}

impl Pipeline {
    /// Runs `data` (an Ethernet frame from the port, or a Geneve UDP
    /// payload from the underlay) through the current decisions as of
    /// `now_ns`, recording each layer's, without sending anything or
    /// changing any state (see the module docs).
    pub fn trace(&self, from: TraceFrom, data: &[u8], now_ns: u64) -> Trace {
        let t = &**self.tables();
        let mut c = Counters::default();
        let mut out = Output::new(MAX_FLOOD + 2, data.len().max(MIN_SLOT));
        let mut rec = Recorder::default();
        let mut ctx = Ctx::new(data);
        let (layers, dir, packet) = match from {
            TraceFrom::Port => (&EGRESS[..], Dir::Out, summarize(data)),
            TraceFrom::Underlay(src) => {
                ctx.outer_src = src;
                let packet = match geneve::geneve::parse(data) {
                    Ok(p) => summarize(p.payload),
                    Err(e) => format!("Geneve from {src}: {e}"),
                };
                (&INGRESS[..], Dir::In, packet)
            }
        };
        let walk = Walk {
            t,
            fw: self.firewall(),
            dir,
            now_ns,
            prefix: "",
        };
        let verdict = walk.run(layers, &mut ctx, &mut out, &mut c, &mut rec);
        if let Some(kind) = ctx.reject {
            // As `Pipeline::from_underlay`: the answer goes back to the sender.
            let mut scratch = vec![0u8; ANSWER_BUF];
            match firewall::reject::build(kind, ctx.frame, &mut scratch) {
                Ok(n) => {
                    let mut answer = Ctx::new(&scratch[..n]);
                    if answer.parse_l2_l3().is_ok() {
                        answer.switch = ctx.switch;
                        let walk = Walk {
                            prefix: "reject answer: ",
                            ..walk
                        };
                        walk.run(&ANSWER, &mut answer, &mut out, &mut c, &mut rec);
                    }
                }
                Err(e) => rec.steps.push(TraceStep {
                    layer: LayerId::Firewall,
                    result: StepResult::Done,
                    detail: format!("reject answer: none built ({e})"),
                }),
            }
        }
        Trace {
            packet,
            steps: rec.steps,
            verdict,
            firewall_drop: rec.firewall_drop,
            outputs: outputs(&out),
        }
    }
}

/// A Geneve UDP payload as `src_tep` would send `inner` on `vni`, with the
/// VMware option carrying that endpoint's id (0 if it is not one we know),
/// for tracing a frame "from the underlay".
pub fn geneve_payload(
    t: &Tables,
    src_tep: Ipv4Addr,
    vni: u32,
    inner: &[u8],
) -> Result<Vec<u8>, geneve::GeneveError> {
    let tep_id = t
        .tep_by_ip(src_tep)
        .and_then(|i| t.teps.get(usize::from(i)))
        .map_or(0, |tep| tep.id);
    let hdr = geneve::geneve::ENCAP_HEADER_LEN;
    let mut buf = vec![0u8; hdr + inner.len()];
    geneve::geneve::emit_vmware(&mut buf[..hdr], vni, tep_id)?;
    buf[hdr..].copy_from_slice(inner);
    Ok(buf)
}

#[derive(Debug, Default)]
struct Recorder {
    steps: Vec<TraceStep>,
    firewall_drop: Option<firewall::DropReason>,
}

/// What the walk needs besides the frame.
#[derive(Debug, Clone, Copy)]
struct Walk<'a> {
    t: &'a Tables,
    fw: Option<&'a Firewall>,
    dir: Dir,
    now_ns: u64,
    /// Put before every detail (the answer to a reject is marked).
    prefix: &'static str,
}

/// The context as it was when a layer started.
#[derive(Debug, Clone, Copy)]
struct Before {
    switch: SwitchIdx,
    ipv4: Option<Ipv4Meta>,
    port_len: usize,
    underlay_len: usize,
}

impl Walk<'_> {
    /// `Pipeline::run` with the firewall explained instead of run.
    fn run(
        &self,
        layers: &[LayerId],
        ctx: &mut Ctx<'_>,
        out: &mut Output,
        c: &mut Counters,
        rec: &mut Recorder,
    ) -> Verdict {
        let t = self.t;
        for &id in layers {
            let before = Before {
                switch: ctx.switch,
                ipv4: ctx.ipv4,
                port_len: out.port.len(),
                underlay_len: out.underlay.len(),
            };
            let mut why = None;
            let step = match id {
                LayerId::PortSecurity => port_security::process(t, ctx),
                LayerId::Firewall => match self.fw {
                    None => Step::Next,
                    Some(fw) => {
                        let (v, text) = fw.explain(self.dir, ctx.frame, self.now_ns);
                        rec.firewall_drop = match v {
                            FwVerdict::Pass => None,
                            FwVerdict::Drop(r) => Some(r),
                            FwVerdict::Reject(_) => Some(firewall::DropReason::Rule),
                        };
                        why = Some(text);
                        layer::firewall::apply(v, self.dir, ctx, out, c)
                    }
                },
                LayerId::Responder => responder::process(t, ctx, out, c),
                LayerId::Switch => switch::process(t, ctx),
                LayerId::Router => router::process(t, ctx, out, c),
                LayerId::Encap => encap::process(t, ctx, out, c),
                LayerId::Decap => decap::process(t, ctx, c, self.now_ns),
                LayerId::Deliver => deliver::process(t, ctx, out, c),
            };
            let detail = match id {
                LayerId::Firewall => firewall_detail(why, ctx, &before, out),
                _ => describe(t, id, step, &before, ctx, out),
            };
            rec.steps.push(TraceStep {
                layer: id,
                result: match step {
                    Step::Next => StepResult::Next,
                    Step::Done(_) => StepResult::Done,
                },
                detail: format!("{}{detail}", self.prefix),
            });
            if let Step::Done(v) = step {
                return v;
            }
        }
        Verdict::Drop(DropReason::NoRoute)
    }
}

fn firewall_detail(why: Option<String>, ctx: &Ctx<'_>, before: &Before, out: &Output) -> String {
    let Some(mut why) = why else {
        return "no firewall configured: pass".into();
    };
    if out.port.len() > before.port_len {
        why.push_str(", sent to the port");
    } else if ctx.reject.is_some() {
        why.push_str(", sent back to the sender");
    }
    why
}

/// The detail line of a layer other than the firewall.
fn describe(
    t: &Tables,
    id: LayerId,
    step: Step,
    before: &Before,
    ctx: &Ctx<'_>,
    out: &Output,
) -> String {
    match id {
        LayerId::PortSecurity => port_security_detail(t, step, ctx),
        LayerId::Responder => responder_detail(t, step, before, ctx),
        LayerId::Switch => switch_detail(t, step, ctx),
        LayerId::Router => router_detail(t, step, before, ctx, out),
        LayerId::Encap => encap_detail(t, step, ctx, before, out),
        LayerId::Decap => decap_detail(t, step, ctx),
        LayerId::Deliver => deliver_detail(t, step, ctx),
        LayerId::Firewall => String::new(),
    }
}

fn drop_of(step: Step) -> Option<DropReason> {
    match step {
        Step::Done(Verdict::Drop(r)) => Some(r),
        _ => None,
    }
}

fn switch_name(t: &Tables, s: SwitchIdx) -> String {
    match t.switches.get(usize::from(s)) {
        Some(sw) => format!("{} (vni {:#x})", sw.name, sw.vni),
        None => format!("switch #{s}"),
    }
}

fn tep_name(t: &Tables, tep: u16) -> String {
    match t.teps.get(usize::from(tep)) {
        Some(r) => format!("{} (tep {})", r.ip, r.id),
        None => format!("endpoint #{tep}"),
    }
}

fn port_security_detail(t: &Tables, step: Step, ctx: &Ctx<'_>) -> String {
    let Some(port) = t.port else {
        return "no local port (micro-segmentation mode, or no config yet): drop".into();
    };
    match drop_of(step) {
        None => match ctx.ipv4 {
            Some(ip) => format!(
                "source MAC {} and IPv4 source {} are port {}'s on {}: pass",
                ctx.src,
                ip.src,
                port.ip,
                switch_name(t, port.switch)
            ),
            None => format!(
                "ARP sender {} is port {}'s on {}: pass",
                ctx.src,
                port.ip,
                switch_name(t, port.switch)
            ),
        },
        Some(DropReason::Malformed) => "malformed Ethernet, IPv4 or ARP header: drop".into(),
        Some(DropReason::BadOffload) => "offload metadata cannot be honoured: drop".into(),
        Some(DropReason::SpoofedSrcMac) => format!(
            "source MAC {} is not the port's {}: drop (spoofed_src_mac)",
            ctx.src, port.mac
        ),
        Some(DropReason::SpoofedSrcIp) => format!(
            "IPv4 source {} is not the port's {}: drop (spoofed_src_ip)",
            ctx.ipv4.map_or(Ipv4Addr::UNSPECIFIED, |ip| ip.src),
            port.ip
        ),
        Some(DropReason::SpoofedArp) => {
            let (mac, ip) = arp_sender(ctx.frame);
            format!(
                "ARP sender {mac} / {ip} is not the port's {} / {}: drop (spoofed_arp)",
                port.mac, port.ip
            )
        }
        Some(DropReason::UnsupportedEthertype) => format!(
            "ethertype {:#06x} is neither IPv4 nor ARP: drop",
            ctx.ethertype
        ),
        Some(r) => format!("drop ({})", r.name()),
    }
}

fn arp_sender(frame: &[u8]) -> (MacAddr, Ipv4Addr) {
    match frame
        .get(ethernet::HEADER_LEN..)
        .and_then(|b| arp::Packet::new_checked(b).ok())
    {
        Some(a) => (MacAddr(a.sender_mac()), a.sender_ip()),
        None => (MacAddr::default(), Ipv4Addr::UNSPECIFIED),
    }
}

fn responder_detail(t: &Tables, step: Step, before: &Before, ctx: &Ctx<'_>) -> String {
    let sw = switch_name(t, before.switch);
    if ctx.ethertype == ethernet::ETHERTYPE_ARP {
        let a = ctx
            .frame
            .get(ethernet::HEADER_LEN..)
            .and_then(|b| arp::Packet::new_checked(b).ok());
        let Some(a) = a else {
            return "malformed ARP: drop".into();
        };
        if a.operation() != arp::OP_REQUEST {
            return "ARP reply: switched like any unicast frame".into();
        }
        let target = a.target_ip();
        let who = format!("ARP who-has {target} tell {}", a.sender_ip());
        return match step {
            Step::Done(Verdict::Absorbed) => {
                format!("{who}: the port's own address (probe or gratuitous ARP): absorbed")
            }
            Step::Done(Verdict::Replied) => {
                let owner = match t.router_of(before.switch) {
                    Some(r) if t.switches[usize::from(before.switch)].gateway_ip == target => {
                        format!("gateway of router {} on {sw}, is-at {}", r.name, r.mac)
                    }
                    _ => match t.neighbor(before.switch, target) {
                        Some(n) => match n.at {
                            Location::Remote(tep) => {
                                format!("port on {sw} behind {}, is-at {}", tep_name(t, tep), n.mac)
                            }
                            Location::Local => format!("the local port, is-at {}", n.mac),
                        },
                        None => "known address".into(),
                    },
                };
                format!("{who}: {owner}; reply sent to the port")
            }
            Step::Done(Verdict::Drop(DropReason::ArpUnknownTarget)) => {
                format!("{who}: no port on {sw} owns it (never flooded): drop (arp_unknown_target)")
            }
            Step::Done(Verdict::Drop(r)) => format!("{who}: drop ({})", r.name()),
            _ => format!("{who}: pass"),
        };
    }
    match (step, ctx.ipv4) {
        (Step::Done(Verdict::Replied), Some(ip)) => format!(
            "ICMP echo request to router address {}: echo reply sent to the port",
            ip.dst
        ),
        (Step::Done(Verdict::Drop(DropReason::ToRouter)), Some(ip)) => format!(
            "to router address {} but not an ICMP echo request: drop (to_router)",
            ip.dst
        ),
        (Step::Done(Verdict::Drop(r)), _) => format!("drop ({})", r.name()),
        _ => "not for a local responder: pass".into(),
    }
}

fn switch_detail(t: &Tables, step: Step, ctx: &Ctx<'_>) -> String {
    let sw = switch_name(t, ctx.switch);
    let dst = ctx.dst;
    if ctx.to_router {
        let r = t.router_of(ctx.switch).map_or("?", |r| r.name.as_str());
        return format!("{sw}: dst MAC {dst} is router {r}: to the router");
    }
    let kind = if dst == MacAddr::BROADCAST {
        "broadcast"
    } else if dst.is_multicast() {
        "multicast"
    } else {
        "unknown unicast"
    };
    match (step, ctx.target) {
        (Step::Next, Some(Target::Unicast { tep, .. })) => {
            format!(
                "{sw}: dst MAC {dst} -> remote port behind {}",
                tep_name(t, tep)
            )
        }
        (Step::Next, Some(Target::Flood { switch })) => {
            let n = t
                .switches
                .get(usize::from(switch))
                .map_or(0, |s| s.flood.len());
            format!("{sw}: dst MAC {dst} is {kind}: flood to {n} endpoint(s)")
        }
        (_, _) => match drop_of(step) {
            Some(DropReason::Hairpin) => {
                format!("{sw}: dst MAC {dst} is the local port itself: drop (hairpin)")
            }
            Some(DropReason::TooBig) => format!(
                "{sw}: {} bytes of IPv4 exceed the overlay MTU {}: drop (too_big)",
                ctx.wire_l3_len(),
                t.host.overlay_mtu
            ),
            Some(DropReason::FloodNoEndpoints) => format!(
                "{sw}: dst MAC {dst} is {kind}, but no remote endpoint is on the switch: \
                 drop (flood_no_endpoints)"
            ),
            Some(r) => format!("{sw}: drop ({})", r.name()),
            None => format!("{sw}: pass"),
        },
    }
}

fn router_detail(t: &Tables, step: Step, before: &Before, ctx: &Ctx<'_>, out: &Output) -> String {
    if !ctx.to_router {
        return "not addressed to the router: pass".into();
    }
    let Some(router) = t.router_of(before.switch) else {
        return format!(
            "no router on {}: drop (to_router)",
            switch_name(t, before.switch)
        );
    };
    let name = &router.name;
    let Some(ip) = before.ipv4 else {
        return format!("{name}: not IPv4: drop (to_router)");
    };
    let Some(route) = router.routes.iter().find(|r| r.prefix.contains(&ip.dst)) else {
        return format!("{name}: no route to {}: drop (no_route)", ip.dst);
    };
    let egress = t
        .switches
        .get(usize::from(route.switch))
        .map_or("?", |s| s.name.as_str());
    let via = match route.next_hop {
        None => format!("{} connected via {egress}", route.prefix),
        Some(nh) => format!("{} via {nh} on {egress} (static)", route.prefix),
    };
    let next_hop = route.next_hop.unwrap_or(ip.dst);
    let head = format!("{name} {via}");
    let sent = out.port.len() > before.port_len;
    match drop_of(step) {
        None => {
            let (dst_mac, src_mac) = ctx.rewrite.unwrap_or_default();
            let at = match ctx.target {
                Some(Target::Unicast { tep, .. }) => format!(" behind {}", tep_name(t, tep)),
                _ => String::new(),
            };
            format!(
                "{head}, ttl {} -> {}, next hop {next_hop} is {dst_mac}{at}; \
                 MAC rewrite {src_mac} -> {dst_mac}",
                ip.ttl,
                ip.ttl.saturating_sub(1)
            )
        }
        Some(DropReason::TtlExceeded) => format!(
            "{head}, ttl {}: drop (ttl_exceeded){}",
            ip.ttl,
            if sent {
                "; ICMP time exceeded sent to the port"
            } else {
                ""
            }
        ),
        Some(DropReason::FragNeeded) => format!(
            "{head}: {} bytes with DF exceed the overlay MTU {}: drop (frag_needed){}",
            ctx.wire_l3_len(),
            t.host.overlay_mtu,
            if sent {
                "; ICMP fragmentation needed sent to the port"
            } else {
                ""
            }
        ),
        Some(DropReason::TooBig) => format!(
            "{head}: {} bytes exceed the overlay MTU {} (no DF): drop (too_big)",
            ctx.wire_l3_len(),
            t.host.overlay_mtu
        ),
        Some(DropReason::NoNeighbor) => {
            format!("{head}: no port owns next hop {next_hop} on {egress}: drop (no_neighbor)")
        }
        Some(DropReason::Hairpin) => {
            format!("{head}: next hop {next_hop} is the local port: drop (hairpin)")
        }
        Some(r) => format!("{head}: drop ({})", r.name()),
    }
}

fn encap_detail(t: &Tables, step: Step, ctx: &Ctx<'_>, before: &Before, out: &Output) -> String {
    let built: Vec<String> = out
        .underlay
        .iter()
        .skip(before.underlay_len)
        .map(|(_, dst)| match t.tep_by_ip(dst) {
            Some(i) => tep_name(t, i),
            None => dst.to_string(),
        })
        .collect();
    let vni = match ctx.target {
        Some(Target::Unicast { vni, .. }) => vni,
        Some(Target::Flood { switch }) => t.switches.get(usize::from(switch)).map_or(0, |s| s.vni),
        None => 0,
    };
    match step {
        Step::Done(Verdict::Encapsulated { .. }) => match ctx.target {
            Some(Target::Flood { .. }) => format!(
                "vni {vni:#x} replicated to {} endpoint(s): {}",
                built.len(),
                built.join(", ")
            ),
            _ => format!("vni {vni:#x} to {}", built.join(", ")),
        },
        Step::Done(Verdict::Drop(r)) => format!("vni {vni:#x}: drop ({})", r.name()),
        _ => "pass".into(),
    }
}

fn decap_detail(t: &Tables, step: Step, ctx: &Ctx<'_>) -> String {
    let src = ctx.outer_src;
    let tep = t.tep_by_ip(src);
    let from = match tep {
        Some(i) => tep_name(t, i),
        None => src.to_string(),
    };
    match drop_of(step) {
        None => {
            let (vni, sw) = t
                .switches
                .get(usize::from(ctx.switch))
                .map_or((0, "?"), |s| (s.vni, s.name.as_str()));
            format!(
                "Geneve from {from}, vni {vni:#x} -> {sw}; inner {} > {}",
                ctx.src, ctx.dst
            )
        }
        Some(DropReason::UnknownTunnel) => {
            format!("{src} is not a known tunnel endpoint: drop (unknown_tunnel)")
        }
        Some(DropReason::TepIdMismatch) => {
            let claimed = geneve::geneve::parse(ctx.frame)
                .ok()
                .and_then(|p| p.tep_id)
                .unwrap_or(0);
            format!(
                "Geneve from {from}: the VMware option says tep {claimed}: \
                 drop (tep_id_mismatch)"
            )
        }
        Some(DropReason::UnknownVni) => {
            let vni = geneve::geneve::parse(ctx.frame).map_or(0, |p| p.vni);
            format!("Geneve from {from}: vni {vni:#x} is no switch here: drop (unknown_vni)")
        }
        Some(DropReason::Malformed) => {
            format!("Geneve from {from}: malformed inner frame: drop (malformed)")
        }
        Some(r) => {
            let why = geneve::geneve::parse(ctx.frame)
                .err()
                .map_or_else(String::new, |e| format!(" {e}:"));
            format!("Geneve from {from}:{why} drop ({})", r.name())
        }
    }
}

fn deliver_detail(t: &Tables, step: Step, ctx: &Ctx<'_>) -> String {
    let Some(port) = t.port else {
        return "no local port: drop (not_for_port)".into();
    };
    match step {
        Step::Done(Verdict::Delivered) => format!(
            "to the port {} ({}) on {}",
            port.ip,
            port.mac,
            switch_name(t, port.switch)
        ),
        Step::Done(Verdict::Drop(DropReason::NotForPort)) => format!(
            "dst MAC {} on {} is not the port {} on {}: drop (not_for_port)",
            ctx.dst,
            switch_name(t, ctx.switch),
            port.mac,
            switch_name(t, port.switch)
        ),
        Step::Done(Verdict::Drop(r)) => format!("drop ({})", r.name()),
        _ => "pass".into(),
    }
}

fn outputs(out: &Output) -> Vec<TraceOutput> {
    let mut v = Vec::new();
    for (pkt, dst) in out.underlay.iter() {
        let geneve = pkt
            .get(geneve::outer::OVERHEAD - geneve::geneve::ENCAP_HEADER_LEN..)
            .and_then(|g| geneve::geneve::parse(g).ok());
        v.push(TraceOutput {
            kind: OutputKind::Underlay,
            dst: dst.to_string(),
            vni: geneve.map(|g| g.vni),
            len: pkt.len(),
            summary: geneve.map_or_else(|| "?".into(), |g| summarize(g.payload)),
        });
    }
    for (frame, _) in out.port.iter() {
        let dst = frame.get(..6).map_or_else(String::new, |m| {
            let mut mac = [0u8; 6];
            mac.copy_from_slice(m);
            MacAddr(mac).to_string()
        });
        v.push(TraceOutput {
            kind: OutputKind::Port,
            dst,
            vni: None,
            len: frame.len(),
            summary: summarize(frame),
        });
    }
    v
}

/// An Ethernet frame in one line, tcpdump-like:
/// `06:17:1e:54:96:3a > 02:50:56:56:44:52, 192.168.100.3 > 192.168.99.9: icmp echo request id 7079 seq 938, ttl 64, 98 bytes`.
pub fn summarize(frame: &[u8]) -> String {
    let Ok(eth) = ethernet::Frame::new_checked(frame) else {
        return format!("{} bytes, shorter than an Ethernet header", frame.len());
    };
    let mut s = format!("{} > {}, ", MacAddr(eth.src()), MacAddr(eth.dst()));
    let payload = eth.payload();
    match eth.ethertype() {
        ethernet::ETHERTYPE_ARP => match arp::Packet::new_checked(payload) {
            Ok(a) if a.operation() == arp::OP_REQUEST => {
                let _ = write!(s, "ARP who-has {} tell {}", a.target_ip(), a.sender_ip());
            }
            Ok(a) => {
                let _ = write!(
                    s,
                    "ARP reply {} is-at {}",
                    a.sender_ip(),
                    MacAddr(a.sender_mac())
                );
            }
            Err(_) => s.push_str("ARP, malformed"),
        },
        ethernet::ETHERTYPE_IPV4 => match ipv4::Packet::new_checked(payload) {
            Ok(ip) => {
                let _ = write!(s, "{} > {}: ", ip.src(), ip.dst());
                l4_summary(&mut s, ip.protocol(), ip.payload(), ip.frag_offset() != 0);
                let _ = write!(s, ", ttl {}", ip.ttl());
            }
            Err(_) => s.push_str("IPv4, malformed header"),
        },
        other => {
            let _ = write!(s, "ethertype {other:#06x}");
        }
    }
    let _ = write!(s, ", {} bytes", frame.len());
    s
}

fn l4_summary(s: &mut String, proto: u8, l4: &[u8], fragment: bool) {
    let be16 = |at: usize| l4.get(at..at + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    let be32 = |at: usize| {
        l4.get(at..at + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    if fragment {
        let _ = write!(s, "proto {proto} fragment");
        return;
    }
    match proto {
        ipv4::PROTO_ICMP => match (l4.first(), l4.get(1)) {
            (Some(&ty), Some(&code)) => {
                let name = match ty {
                    icmpv4::TYPE_ECHO_REQUEST => "echo request",
                    icmpv4::TYPE_ECHO_REPLY => "echo reply",
                    icmpv4::TYPE_DEST_UNREACH => "destination unreachable",
                    icmpv4::TYPE_TIME_EXCEEDED => "time exceeded",
                    _ => "type",
                };
                let _ = write!(s, "icmp {name}");
                match ty {
                    icmpv4::TYPE_ECHO_REQUEST | icmpv4::TYPE_ECHO_REPLY => {
                        if let (Some(id), Some(seq)) = (be16(4), be16(6)) {
                            let _ = write!(s, " id {id} seq {seq}");
                        }
                    }
                    icmpv4::TYPE_DEST_UNREACH | icmpv4::TYPE_TIME_EXCEEDED => {
                        let _ = write!(s, " code {code}");
                    }
                    _ => {
                        let _ = write!(s, " {ty} code {code}");
                    }
                }
            }
            _ => s.push_str("icmp, truncated"),
        },
        ipv4::PROTO_TCP => match (be16(0), be16(2), l4.get(13), be32(4), be32(8)) {
            (Some(sp), Some(dp), Some(&flags), Some(seq), Some(ack)) => {
                let mut f = String::new();
                for (bit, c) in [
                    (0x02, 'S'),
                    (0x01, 'F'),
                    (0x04, 'R'),
                    (0x08, 'P'),
                    (0x10, '.'),
                ] {
                    if flags & bit != 0 {
                        f.push(c);
                    }
                }
                if f.is_empty() {
                    f.push_str("none");
                }
                let _ = write!(s, "tcp {sp} > {dp} [{f}] seq {seq} ack {ack}");
            }
            _ => s.push_str("tcp, truncated"),
        },
        ipv4::PROTO_UDP => match (be16(0), be16(2)) {
            (Some(sp), Some(dp)) => {
                let _ = write!(s, "udp {sp} > {dp}");
            }
            _ => s.push_str("udp, truncated"),
        },
        p => {
            let _ = write!(s, "proto {p}");
        }
    }
}
