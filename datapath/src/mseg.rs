//! Filtered micro-segmentation as a firewall-only pipeline: the host's
//! frames between its NIC and its stack walk [`MSEG_IN`] (a frame the NIC
//! received) or [`MSEG_OUT`] (a frame the host sends) — the firewall layer,
//! then the forward layer — with the overlay pipeline's layer code, walk,
//! counters and trace recorder. Sans-IO like [`crate::Pipeline`]: frames
//! (behind their virtio-net header) and `now` in, a [`Verdict`] and the
//! reject answers in the caller's [`Output`] out. No allocation per frame.
//!
//! The queues keep the overlay's meaning seen from the host: `port` is
//! toward the host stack, `underlay` is out of the NIC. A reject of a frame
//! the host sent is answered on `port`; a reject of a frame the NIC
//! received is answered on `underlay`. A passed frame is not copied into a
//! queue: [`Verdict::Delivered`] (to the host) or [`Verdict::Forwarded`]
//! (out of the NIC) tells the caller to send the buffer it received, its
//! virtio-net header included, so GRO'd and TSO super-frames pass whole.

use std::fmt;
use std::sync::Arc;

use control::MacAddr;
use firewall::{Dir, Firewall};

use crate::counters::Counters;
use crate::layer::{self, Commit, Ctx, MSEG_IN, MSEG_OUT, Recorder, Why};
use crate::offload::VIRTIO_NET_HDR_LEN;
use crate::queue::Output;
use crate::tables::Tables;
use crate::trace::{OutputKind, Trace, TraceOutput, Tracer, summarize};
use crate::verdict::{DropReason, Verdict};

/// Room for one reject answer (TCP RST or ICMP error quoting the packet):
/// the slot size of the micro-segmentation [`Output`] ([`Microseg::output`]).
pub const ANSWER_BUF: usize = crate::pipeline::ANSWER_BUF;

/// What the micro-segmentation pipeline counts besides the layer and drop
/// counters (published as `mseg_*`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MsegCounters {
    /// Frames from the NIC passed to the host / dropped / rejected.
    pub in_passed: u64,
    pub in_dropped: u64,
    pub in_rejected: u64,
    /// Frames from the host passed to the NIC / dropped / rejected.
    pub out_passed: u64,
    pub out_dropped: u64,
    pub out_rejected: u64,
    /// Unicast frames the NIC received for another MAC.
    pub in_not_for_us: u64,
    /// Rejected frames no answer could be built for (e.g. to a broadcast).
    pub answer_unbuildable: u64,
    /// Frames shorter than their virtio-net header.
    pub short: u64,
}

impl MsegCounters {
    /// `(name, value)` pairs, `mseg_` prefixed.
    pub fn named(&self) -> [(&'static str, u64); 9] {
        let c = self;
        [
            ("mseg_in_passed", c.in_passed),
            ("mseg_in_dropped", c.in_dropped),
            ("mseg_in_rejected", c.in_rejected),
            ("mseg_out_passed", c.out_passed),
            ("mseg_out_dropped", c.out_dropped),
            ("mseg_out_rejected", c.out_rejected),
            ("mseg_in_not_for_us", c.in_not_for_us),
            ("mseg_answer_unbuildable", c.answer_unbuildable),
            ("mseg_short", c.short),
        ]
    }
}

/// What [`Microseg::set_tables`] did with the config's firewall section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyChange {
    /// A new policy is in force; `removed` connections it no longer allows.
    Applied { rules: usize, removed: usize },
    /// The same policy as before.
    Unchanged,
    /// The config has no firewall section: the running policy stays.
    KeptRunning,
    /// No firewall section and none before: the failure policy decides.
    NoPolicy,
}

/// A frame the NIC received for another MAC: not the host's, not judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotForHost {
    pub dst: MacAddr,
    pub nic: MacAddr,
}

impl fmt::Display for NotForHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unicast to {} is not for this host (NIC MAC {}): ignored",
            self.dst, self.nic
        )
    }
}

/// The micro-segmentation datapath of one host.
#[derive(Debug)]
pub struct Microseg {
    tables: Arc<Tables>,
    fw: Firewall,
    nic_mac: [u8; 6],
    counters: Counters,
    mseg: MsegCounters,
}

impl Microseg {
    /// `fw` is built by the caller (capacity, failure policy, management
    /// exemptions); its policy follows the tables' firewall section.
    pub fn new(tables: Arc<Tables>, fw: Firewall, nic_mac: [u8; 6]) -> Microseg {
        let mut m = Microseg {
            tables: Arc::clone(&tables),
            fw,
            nic_mac,
            counters: Counters::default(),
            mseg: MsegCounters::default(),
        };
        m.set_tables(tables);
        m
    }

    /// Output queues for one receive batch of `slots` frames: at most one
    /// answer per frame.
    pub fn output(slots: usize) -> Output {
        Output::new(slots, ANSWER_BUF)
    }

    /// A new config: its firewall policy (if it has one and it changed) is
    /// swapped in; without one the running policy stays.
    pub fn set_tables(&mut self, tables: Arc<Tables>) -> PolicyChange {
        let change = match &tables.firewall {
            Some(policy) if !self.fw.policy().is_some_and(|p| Arc::ptr_eq(p, policy)) => {
                let removed = self.fw.set_policy(Arc::clone(policy));
                PolicyChange::Applied {
                    rules: policy.rules().len(),
                    removed,
                }
            }
            Some(_) => PolicyChange::Unchanged,
            None if self.fw.policy().is_some() => PolicyChange::KeptRunning,
            None => PolicyChange::NoPolicy,
        };
        self.tables = tables;
        change
    }

    pub fn tables(&self) -> &Arc<Tables> {
        &self.tables
    }

    pub fn firewall(&self) -> &Firewall {
        &self.fw
    }

    pub fn firewall_mut(&mut self) -> &mut Firewall {
        &mut self.fw
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    pub fn mseg_counters(&self) -> &MsegCounters {
        &self.mseg
    }

    /// Housekeeping between batches (reclaims idle connections).
    pub fn tick(&mut self, now_ns: u64) {
        self.fw.tick(now_ns);
    }

    /// A frame (behind its virtio-net header) the NIC received. Unicast to
    /// another MAC is dropped unjudged (`not_for_port`).
    pub fn from_nic(&mut self, buf: &[u8], now_ns: u64, out: &mut Output) -> Verdict {
        self.run(Dir::In, buf, now_ns, out)
    }

    /// A frame (behind its virtio-net header) the host sends.
    pub fn from_host(&mut self, buf: &[u8], now_ns: u64, out: &mut Output) -> Verdict {
        self.run(Dir::Out, buf, now_ns, out)
    }

    fn run(&mut self, dir: Dir, buf: &[u8], now_ns: u64, out: &mut Output) -> Verdict {
        let Some(frame) = buf.get(VIRTIO_NET_HDR_LEN..) else {
            self.mseg.short += 1;
            self.counters.drop(DropReason::Malformed);
            return Verdict::Drop(DropReason::Malformed);
        };
        match dir {
            Dir::In => self.counters.underlay_rx.add(frame.len()),
            Dir::Out => self.counters.port_rx.add(frame.len()),
        }
        if dir == Dir::In && !for_host(frame, &self.nic_mac) {
            self.mseg.in_not_for_us += 1;
            self.counters.drop(DropReason::NotForPort);
            return Verdict::Drop(DropReason::NotForPort);
        }
        let mut ctx = Ctx::new(frame);
        // The entry: the firewall's view and the IPv4 source (for the
        // answer's queue entry), read once. A frame whose headers do not
        // parse is still judged (the firewall counts it malformed).
        let _ = ctx.parse_l2_l3();
        let answers = out.port.len();
        let mut rec = Commit {
            edge: None,
            fw: Some(&mut self.fw),
            lb: None,
        };
        let layers = match dir {
            Dir::In => &MSEG_IN[..],
            Dir::Out => &MSEG_OUT[..],
        };
        let v = layer::walk(
            &self.tables,
            dir,
            layers,
            &mut ctx,
            out,
            &mut self.counters,
            now_ns,
            &mut rec,
        );
        let m = &mut self.mseg;
        match (dir, v) {
            (Dir::In, Verdict::Drop(_)) if ctx.rejected => {
                m.in_rejected += 1;
                if let Some(kind) = ctx.reject {
                    let mut len = 0;
                    let sent = out
                        .underlay
                        .push_with(std::net::Ipv4Addr::UNSPECIFIED, |b| {
                            len = firewall::reject::build(kind, frame, b).ok()?;
                            Some(len)
                        });
                    if sent {
                        self.counters.underlay_tx.add(len);
                    } else {
                        m.answer_unbuildable += 1;
                    }
                }
            }
            (Dir::Out, Verdict::Drop(_)) if ctx.rejected => {
                m.out_rejected += 1;
                if out.port.len() == answers {
                    m.answer_unbuildable += 1;
                }
            }
            (Dir::In, Verdict::Drop(_)) => m.in_dropped += 1,
            (Dir::Out, Verdict::Drop(_)) => m.out_dropped += 1,
            (Dir::In, _) => m.in_passed += 1,
            (Dir::Out, _) => m.out_passed += 1,
        }
        v
    }

    /// Runs `frame` (without virtio-net header; `In`: as the NIC receives
    /// it, `Out`: as the host sends it) through the same walk with the
    /// trace's recorder, judging without committing: nothing is sent and
    /// no state changes. Outputs: the passed frame itself, or the reject's
    /// answer.
    pub fn trace(&self, dir: Dir, frame: &[u8], now_ns: u64) -> Result<Trace, NotForHost> {
        if dir == Dir::In && !for_host(frame, &self.nic_mac) {
            let mut dst = [0u8; 6];
            if let Some(d) = frame.get(..6) {
                dst.copy_from_slice(d);
            }
            return Err(NotForHost {
                dst: MacAddr(dst),
                nic: MacAddr(self.nic_mac),
            });
        }
        let t = &*self.tables;
        let mut c = Counters::default();
        let mut out = Microseg::output(2);
        let mut rec = Tracer::new(t, Some(&self.fw));
        let mut ctx = Ctx::new(frame);
        let _ = ctx.parse_l2_l3();
        let layers = match dir {
            Dir::In => &MSEG_IN[..],
            Dir::Out => &MSEG_OUT[..],
        };
        let verdict = layer::walk(t, dir, layers, &mut ctx, &mut out, &mut c, now_ns, &mut rec);
        let mut outputs = Vec::new();
        let mut push = |kind, f: &[u8]| {
            let mut dst = [0u8; 6];
            if let Some(d) = f.get(..6) {
                dst.copy_from_slice(d);
            }
            outputs.push(TraceOutput {
                kind,
                dst: MacAddr(dst).to_string(),
                vni: None,
                len: f.len(),
                summary: summarize(f),
            });
        };
        match verdict {
            Verdict::Delivered => push(OutputKind::Port, frame),
            Verdict::Forwarded => push(OutputKind::Underlay, frame),
            _ => {}
        }
        if let Some(kind) = ctx.reject {
            let mut buf = vec![0u8; ANSWER_BUF];
            match firewall::reject::build(kind, frame, &mut buf) {
                Ok(n) => push(OutputKind::Underlay, &buf[..n]),
                Err(e) => {
                    rec.prefix = "reject answer: ";
                    rec.note(|| Why::Firewall(layer::firewall::Why::NoAnswer(e)));
                    rec.step(
                        crate::verdict::LayerId::Firewall,
                        layer::Step::Done(Verdict::Drop(DropReason::Firewall)),
                    );
                }
            }
        }
        for (f, _) in out.port.iter() {
            push(OutputKind::Port, f);
        }
        Ok(Trace {
            packet: summarize(frame),
            steps: rec.steps,
            verdict,
            firewall_drop: rec.firewall_drop,
            outputs,
        })
    }
}

/// Whether a frame the NIC received is addressed to the host: its MAC or a
/// group address (broadcast, multicast).
pub fn for_host(frame: &[u8], mac: &[u8; 6]) -> bool {
    match frame.get(..6) {
        Some(dst) => dst[0] & 1 != 0 || dst == mac,
        // Too short to tell: let the firewall count it as malformed.
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_unicast_and_group_frames_are_for_the_host() {
        let mac = [6, 0, 0, 0, 0, 1];
        let mut f = [0u8; 14];
        f[..6].copy_from_slice(&mac);
        assert!(for_host(&f, &mac));
        f[..6].copy_from_slice(&[0xff; 6]);
        assert!(for_host(&f, &mac));
        f[..6].copy_from_slice(&[0x01, 0x00, 0x5e, 0, 0, 1]);
        assert!(for_host(&f, &mac));
        f[..6].copy_from_slice(&[6, 0, 0, 0, 0, 2]);
        assert!(!for_host(&f, &mac));
        assert!(for_host(&[1, 2], &mac));
    }
}
