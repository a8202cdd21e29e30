//! `trace`: one frame through the live pipeline's decisions, recorded layer
//! by layer, with nothing sent and no state changed (like `ovn-trace` or
//! NSX Traceflow).
//!
//! [`Pipeline::trace`] runs the packet path's own walk ([`layer::walk`],
//! the same layer list and the same layer code: [`EGRESS`] from the port,
//! [`INGRESS`] from the underlay, then [`layer::ANSWER`] for the answer to a
//! rejected ingress frame) with a recorder instead of the packet path's
//! [`layer::Commit`], against scratch [`Counters`] and a scratch [`Output`]
//! allocated for the call (tracing is an operator command, not the packet
//! path). The recorder judges with the live firewall
//! ([`Firewall::judge`], which reads the connection table and policy) and
//! never commits; it keeps the reason each layer gives, and a step's
//! `detail` is that reason's `Display`. So the verdict is the one the
//! packet path would reach for the same frame at the same moment, the text
//! is what the layer decided on, and the pipeline, its counters and its
//! connections are left exactly as they were.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use control::MacAddr;
use firewall::{Dir, Firewall, FwDrop, FwVerdict};
use geneve::{arp, ethernet, icmpv4, ipv4, tcp};

use crate::counters::Counters;
use crate::edge::Iface;
use crate::layer::{
    self, Ctx, EDGE_FROM_DOWNLINK, EDGE_FROM_OVERLAY, EDGE_FROM_PROBE, EDGE_FROM_UPLINK, EGRESS,
    INGRESS, LayerId, Recorder, Step, Why,
};
use crate::pipeline::{ANSWER_BUF, Pipeline};
use crate::queue::Output;
use crate::tables::{MAX_FLOOD, Tables};
use crate::verdict::Verdict;

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
    /// The edge: an Ethernet frame its downlink received (see
    /// [`Pipeline::from_downlink`]).
    Downlink,
    /// The edge: an Ethernet frame from its health-check port (see
    /// [`Pipeline::from_probe`]).
    Probe,
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
    /// The edge: a frame out of the downlink.
    Downlink,
}

impl OutputKind {
    pub fn name(self) -> &'static str {
        match self {
            OutputKind::Underlay => "underlay",
            OutputKind::Port => "port",
            OutputKind::Downlink => "downlink",
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
    pub firewall_drop: Option<FwDrop>,
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
        let mut rec = Tracer::new(t, self.firewall());
        rec.edge = self.edge();
        rec.lb = self.lb();
        let mut ctx = Ctx::new(data);
        let edge = t.tier0.is_some();
        let (dir, layers, packet) = match from {
            TraceFrom::Port if edge => {
                ctx.came_in = Some(Iface::Uplink);
                (Dir::In, &EDGE_FROM_UPLINK[..], summarize(data))
            }
            TraceFrom::Port => (Dir::Out, &EGRESS[..], summarize(data)),
            TraceFrom::Downlink => {
                ctx.came_in = Some(Iface::Downlink);
                (Dir::In, &EDGE_FROM_DOWNLINK[..], summarize(data))
            }
            TraceFrom::Probe => {
                ctx.came_in = Some(Iface::Probe);
                (Dir::In, &EDGE_FROM_PROBE[..], summarize(data))
            }
            TraceFrom::Underlay(src) => {
                ctx.outer_src = src;
                let packet = match geneve::geneve::parse(data) {
                    Ok(p) => summarize(p.payload),
                    Err(e) => format!("Geneve from {src}: {e}"),
                };
                if edge {
                    (Dir::Out, &EDGE_FROM_OVERLAY[..], packet)
                } else {
                    (Dir::In, &INGRESS[..], packet)
                }
            }
        };
        let verdict = layer::walk(t, dir, layers, &mut ctx, &mut out, &mut c, now_ns, &mut rec);
        if let Some(kind) = ctx.reject {
            // As `Pipeline::from_underlay`: the answer goes back to the sender.
            let mut scratch = vec![0u8; ANSWER_BUF];
            rec.prefix = "reject answer: ";
            crate::pipeline::answer(
                t,
                kind,
                ctx.frame,
                ctx.switch,
                &mut scratch,
                &mut out,
                &mut c,
                now_ns,
                &mut rec,
            );
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

/// The trace's recorder: judges with the firewall without committing, and
/// turns each layer's reason into its step.
pub(crate) struct Tracer<'a> {
    t: &'a Tables,
    fw: Option<&'a Firewall>,
    /// The edge's state, read only.
    pub(crate) edge: Option<&'a crate::edge::EdgeState>,
    pub(crate) lb: Option<&'a crate::lbstate::LbState>,
    /// The firewall's decision in words, while its layer finishes.
    decision: Option<String>,
    pub(crate) firewall_drop: Option<FwDrop>,
    /// The current layer's reason.
    why: Option<Why>,
    /// Put before every detail (the answer to a reject is marked).
    pub(crate) prefix: &'static str,
    pub(crate) steps: Vec<TraceStep>,
}

impl<'a> Tracer<'a> {
    pub(crate) fn new(t: &'a Tables, fw: Option<&'a Firewall>) -> Tracer<'a> {
        Tracer {
            t,
            fw,
            edge: None,
            lb: None,
            decision: None,
            firewall_drop: None,
            why: None,
            prefix: "",
            steps: Vec::new(),
        }
    }
}

impl Recorder for Tracer<'_> {
    fn firewall(
        &mut self,
        dir: Dir,
        view: impl FnOnce() -> Result<firewall::packet::Packet, firewall::packet::ParseError>,
        now_ns: u64,
    ) -> Option<FwVerdict> {
        let fw = self.fw?;
        let parsed = view();
        let d = fw.judge(dir, &parsed, now_ns);
        self.firewall_drop = match d.verdict {
            FwVerdict::Pass => None,
            FwVerdict::Drop(r) => Some(r),
            FwVerdict::Reject(_) => Some(FwDrop::Rule),
        };
        self.decision = Some(d.describe(fw).to_string());
        Some(d.verdict)
    }

    fn note(&mut self, why: impl FnOnce() -> Why) {
        self.why = Some(why());
    }

    fn judged(&mut self, answer: layer::firewall::Answer) {
        if let Some(decision) = self.decision.take() {
            let why = layer::firewall::Why::Judged { decision, answer };
            self.why = Some(Why::Firewall(why));
        }
    }

    fn edge(&self) -> Option<&crate::edge::EdgeState> {
        self.edge
    }

    fn edge_mut(&mut self) -> Option<&mut crate::edge::EdgeState> {
        None
    }

    fn lb(&self) -> Option<&crate::lbstate::LbState> {
        self.lb
    }

    fn lb_mut(&mut self) -> Option<&mut crate::lbstate::LbState> {
        None
    }

    fn step(&mut self, layer: LayerId, step: Step) {
        let mut detail = self.prefix.to_string();
        match self.why.take() {
            Some(why) => {
                let _ = write!(detail, "{}", why.show(self.t));
            }
            None => detail.push('?'),
        }
        self.steps.push(TraceStep {
            layer,
            result: match step {
                Step::Next => StepResult::Next,
                Step::Done(_) => StepResult::Done,
            },
            detail,
        });
    }
}

pub(crate) fn outputs(out: &Output) -> Vec<TraceOutput> {
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
    for (kind, q) in [
        (OutputKind::Port, &out.port),
        (OutputKind::Downlink, &out.downlink),
    ] {
        for (frame, _) in q.iter() {
            let dst = frame.get(..6).map_or_else(String::new, |m| {
                let mut mac = [0u8; 6];
                mac.copy_from_slice(m);
                MacAddr(mac).to_string()
            });
            v.push(TraceOutput {
                kind,
                dst,
                vni: None,
                len: frame.len(),
                summary: summarize(frame),
            });
        }
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
        ipv4::PROTO_TCP => match tcp::Packet::new_checked(l4) {
            Ok(t) => {
                let (sp, dp, flags) = (t.src_port(), t.dst_port(), t.flags());
                let (seq, ack) = (t.seq_number(), t.ack_number());
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
            Err(_) => s.push_str("tcp, truncated"),
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
