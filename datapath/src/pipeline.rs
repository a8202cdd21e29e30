//! The pipeline driver: walks the ordered layers for one frame, keeps each
//! layer's counters, and owns the current [`Tables`] snapshot. Pure state
//! machine: frames, the underlay source address and `now` in; verdicts and
//! queued output frames out. No I/O, no locks, no allocation per frame.

use std::net::Ipv4Addr;
use std::sync::Arc;

use crate::counters::DropReason;
use crate::counters::{Counters, TunnelCounters};
use crate::layer::{
    Ctx, EGRESS, INGRESS, LayerId, Step, Verdict, decap, deliver, encap, port_security, responder,
    router, switch,
};
use crate::offload::{Offload, VIRTIO_NET_HDR_LEN};
use crate::queue::Output;
use crate::tables::Tables;

/// One instance's datapath.
#[derive(Debug)]
pub struct Pipeline {
    tables: Arc<Tables>,
    counters: Counters,
}

impl Pipeline {
    pub fn new(tables: Arc<Tables>) -> Pipeline {
        let mut p = Pipeline {
            tables: Arc::clone(&tables),
            counters: Counters::default(),
        };
        p.set_tables(tables);
        p
    }

    /// Swaps in a new config snapshot. Tunnel counters follow their
    /// endpoint's underlay address into the new snapshot.
    pub fn set_tables(&mut self, tables: Arc<Tables>) {
        let old = std::mem::take(&mut self.counters.tunnels);
        self.counters.tunnels = tables
            .teps
            .iter()
            .map(|tep| {
                old.iter()
                    .find(|c| c.tep_ip == tep.ip)
                    .map(|c| TunnelCounters {
                        tep_id: tep.id,
                        ..*c
                    })
                    .unwrap_or(TunnelCounters {
                        tep_ip: tep.ip,
                        tep_id: tep.id,
                        tx: Default::default(),
                        rx: Default::default(),
                        last_rx_ns: 0,
                    })
            })
            .collect();
        self.tables = tables;
    }

    pub fn tables(&self) -> &Arc<Tables> {
        &self.tables
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// A frame the instance sent on its port (nsx-eth0), toward the network.
    pub fn from_port(&mut self, frame: &[u8], now_ns: u64, out: &mut Output) -> Verdict {
        self.from_port_offload(frame, Offload::NONE, now_ns, out)
    }

    /// Like [`Pipeline::from_port`] for a frame with offload work pending
    /// (a partial checksum, or a super-frame to segment).
    pub fn from_port_offload(
        &mut self,
        frame: &[u8],
        offload: Offload,
        now_ns: u64,
        out: &mut Output,
    ) -> Verdict {
        self.counters.port_rx.add(frame.len());
        let mut ctx = Ctx::new(frame);
        ctx.offload = offload;
        self.run(&EGRESS, &mut ctx, now_ns, out)
    }

    /// A frame from an AF_PACKET socket with `PACKET_VNET_HDR`: a
    /// `struct virtio_net_hdr` followed by the frame.
    pub fn from_port_vnet(&mut self, buf: &[u8], now_ns: u64, out: &mut Output) -> Verdict {
        let frame = buf.get(VIRTIO_NET_HDR_LEN..).unwrap_or_default();
        match Offload::from_virtio_net_hdr(buf) {
            Ok(offload) => self.from_port_offload(frame, offload, now_ns, out),
            Err(_) => {
                self.counters.port_rx.add(frame.len());
                self.counters.drop(DropReason::BadOffload);
                Verdict::Drop(DropReason::BadOffload)
            }
        }
    }

    /// A UDP payload received on port 6081 from underlay address `src`.
    pub fn from_underlay(
        &mut self,
        src: Ipv4Addr,
        udp_payload: &[u8],
        now_ns: u64,
        out: &mut Output,
    ) -> Verdict {
        self.counters.underlay_rx.add(udp_payload.len());
        let mut ctx = Ctx::new(udp_payload);
        ctx.outer_src = src;
        self.run(&INGRESS, &mut ctx, now_ns, out)
    }

    fn run(
        &mut self,
        layers: &[LayerId],
        ctx: &mut Ctx<'_>,
        now_ns: u64,
        out: &mut Output,
    ) -> Verdict {
        let t = &*self.tables;
        let c = &mut self.counters;
        for &id in layers {
            c.layers[id as usize].seen += 1;
            let step = match id {
                LayerId::PortSecurity => port_security::process(t, ctx),
                LayerId::Responder => responder::process(t, ctx, out, c),
                LayerId::Switch => switch::process(t, ctx),
                LayerId::Router => router::process(t, ctx, out, c),
                LayerId::Encap => encap::process(t, ctx, out, c),
                LayerId::Decap => decap::process(t, ctx, c, now_ns),
                LayerId::Deliver => deliver::process(t, ctx, out, c),
            };
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
}
