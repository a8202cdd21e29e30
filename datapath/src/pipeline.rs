//! The pipeline driver: walks the ordered layers for one frame, keeps each
//! layer's counters, and owns the current [`Tables`] snapshot. Pure state
//! machine: frames, the underlay source address and `now` in; verdicts and
//! queued output frames out. No I/O, no locks, no allocation per frame.

use std::net::Ipv4Addr;
use std::sync::Arc;

use firewall::{Dir, Firewall, RejectKind};

use crate::counters::{Counters, TunnelCounters};
use crate::edge::{EdgeState, Iface};
use crate::layer::{
    self, ANSWER, Commit, Ctx, EDGE_FROM_DOWNLINK, EDGE_FROM_OVERLAY, EDGE_FROM_PROBE,
    EDGE_FROM_UPLINK, EGRESS, INGRESS, LayerId, Recorder, Why,
};
use crate::lbstate::LbState;
use crate::offload::{Offload, VIRTIO_NET_HDR_LEN};
use crate::queue::Output;
use crate::tables::{SwitchIdx, Tables};
use crate::verdict::{DropReason, Verdict};

/// Connections tracked when the caller does not say (about 20 MiB of table).
pub const DEFAULT_FLOW_CAPACITY: usize = 1 << 18;
/// Room for the firewall's answer to a rejected packet (RST or ICMP error).
pub(crate) const ANSWER_BUF: usize = 1024;

/// One instance's datapath.
#[derive(Debug)]
pub struct Pipeline {
    tables: Arc<Tables>,
    counters: Counters,
    /// Present while the config has a firewall section.
    firewall: Option<Firewall>,
    flow_capacity: usize,
    /// Where answers to rejected ingress packets are built.
    answer: Vec<u8>,
    /// Present while the tables have a tier-0 (the edge).
    edge: Option<EdgeState>,
    /// Present while the tables have virtual servers.
    lb: Option<LbState>,
    /// Why the last tables' NAT configuration was refused, if it was.
    edge_error: Option<nat::ConfigError>,
}

impl Pipeline {
    pub fn new(tables: Arc<Tables>) -> Pipeline {
        Pipeline::with_flow_capacity(tables, DEFAULT_FLOW_CAPACITY)
    }

    /// A pipeline whose firewall tracks at most `flow_capacity` connections.
    pub fn with_flow_capacity(tables: Arc<Tables>, flow_capacity: usize) -> Pipeline {
        let mut p = Pipeline {
            tables: Arc::clone(&tables),
            counters: Counters::default(),
            firewall: None,
            flow_capacity,
            answer: vec![0; ANSWER_BUF],
            edge: None,
            lb: None,
            edge_error: None,
        };
        p.set_tables(tables);
        p
    }

    /// The firewall, while one is configured.
    pub fn firewall(&self) -> Option<&Firewall> {
        self.firewall.as_ref()
    }

    pub fn firewall_mut(&mut self) -> Option<&mut Firewall> {
        self.firewall.as_mut()
    }

    /// True when [`Pipeline::prefetch_port`] / [`Pipeline::prefetch_underlay`]
    /// over a batch before processing it pays off (a connection table too
    /// big for the caches).
    pub fn wants_prefetch(&self) -> bool {
        self.firewall.as_ref().is_some_and(Firewall::wants_prefetch)
    }

    /// Prefetches what a frame from the port (with its virtio-net header)
    /// will look up. No state changes.
    pub fn prefetch_port(&self, buf: &[u8]) {
        if let Some(fw) = &self.firewall {
            fw.prefetch(buf.get(VIRTIO_NET_HDR_LEN..).unwrap_or_default());
        }
    }

    /// Prefetches what a Geneve payload from the underlay will look up.
    pub fn prefetch_underlay(&self, udp_payload: &[u8]) {
        if let (Some(fw), Ok(p)) = (&self.firewall, geneve::geneve::parse(udp_payload)) {
            fw.prefetch(p.payload);
        }
    }

    /// Housekeeping between batches (reclaims idle connections and NAT
    /// sessions).
    pub fn tick(&mut self, now_ns: u64) {
        if let Some(fw) = &mut self.firewall {
            fw.tick(now_ns);
        }
        if let Some(e) = &mut self.edge {
            e.tick(now_ns);
        }
        if let Some(lb) = &mut self.lb {
            lb.tick(now_ns);
            // The last connection of virtual servers no longer configured
            // is gone: so is the balancer (and its layer).
            if self.tables.lb.is_empty() && lb.is_idle() {
                self.lb = None;
            }
        }
    }

    /// The load balancer, while virtual servers are configured.
    pub fn lb(&self) -> Option<&LbState> {
        self.lb.as_ref()
    }

    /// The load balancer, to change (between batches).
    pub fn lb_mut(&mut self) -> Option<&mut LbState> {
        self.lb.as_mut()
    }

    /// The edge's state, to change (restoring saved NAT sessions).
    pub fn edge_mut(&mut self) -> Option<&mut EdgeState> {
        self.edge.as_mut()
    }

    /// The edge's housekeeping between batches: ARP requests out of the
    /// uplink for the tier-0's next hops (the default route's and the
    /// static routes') that are unknown or half-way to expiry, paced, so
    /// traffic never waits for a next hop's MAC. Nothing off the edge.
    pub fn edge_tick(&mut self, now_ns: u64, out: &mut Output) {
        let (Some(t0), Some(edge)) = (&self.tables.tier0, &mut self.edge) else {
            return;
        };
        for r in &t0.routes {
            let crate::tables::T0Hop::Uplink(Some(nh)) = r.hop else {
                continue;
            };
            if edge.neighbors.needs_refresh(nh, now_ns) && edge.neighbors.may_request(nh, now_ns) {
                layer::uplink::arp_request(out, &mut self.counters, t0, Iface::Uplink, nh);
            }
        }
    }

    /// Swaps in a new config snapshot. Tunnel counters follow their
    /// endpoint's underlay address into the new snapshot; the firewall
    /// takes the new policy atomically and re-checks its connections.
    pub fn set_tables(&mut self, tables: Arc<Tables>) {
        // A port that went away or changed address takes its connections along.
        if self.tables.port != tables.port
            && let Some(fw) = &mut self.firewall
        {
            fw.clear_flows();
        }
        match &tables.firewall {
            Some(policy) => {
                let capacity = self.flow_capacity;
                let fw = self.firewall.get_or_insert_with(|| {
                    Firewall::new(capacity, firewall::FailurePolicy::FailClosed)
                });
                if !fw.policy().is_some_and(|p| Arc::ptr_eq(p, policy)) {
                    fw.set_policy(Arc::clone(policy));
                }
            }
            None => self.firewall = None,
        }
        // The NAT's configuration was checked when the tables were built
        // (`TablesError::Nat`), so neither call should fail here; if one
        // does, the caller hears it ([`Pipeline::edge_error`]) and the NAT
        // layer drops what it cannot translate.
        self.edge_error = match (&tables.tier0, &mut self.edge) {
            (Some(t0), Some(edge)) => edge.update(t0).err(),
            (Some(t0), None) => match EdgeState::new(t0) {
                Ok(e) => {
                    self.edge = Some(e);
                    None
                }
                Err(e) => Some(e),
            },
            (None, _) => {
                self.edge = None;
                None
            }
        };
        // Connections outlive a change of their virtual servers (a removed
        // real server, or a removed virtual server, keeps its established
        // connections); the balancer goes away once none is configured and
        // its last connection is gone (here, or at a later tick).
        let snat = tables.tier0.as_ref().map(|t0| t0.primary());
        match (&mut self.lb, tables.lb.is_empty()) {
            (Some(lb), _) => lb.update(&tables.lb, snat),
            (None, false) => {
                self.lb = Some(LbState::new(
                    &tables.lb,
                    snat,
                    crate::lbstate::DEFAULT_LB_CAPACITY,
                ))
            }
            (None, true) => {}
        }
        if tables.lb.is_empty() && self.lb.as_ref().is_some_and(LbState::is_idle) {
            self.lb = None;
        }
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

    /// Why the edge's NAT refused the last tables' configuration (it
    /// keeps the previous one, or none), for the caller to report.
    pub fn edge_error(&self) -> Option<&nat::ConfigError> {
        self.edge_error.as_ref()
    }

    /// The edge's state, while the tables have a tier-0.
    pub fn edge(&self) -> Option<&EdgeState> {
        self.edge.as_ref()
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
        if self.tables.tier0.is_some() {
            // On the edge the "port" is the uplink.
            return self.enter_edge(Iface::Uplink, frame, offload, now_ns, out);
        }
        self.counters.port_rx.add(frame.len());
        let mut ctx = Ctx::new(frame);
        ctx.offload = offload;
        self.run(Dir::Out, &EGRESS, &mut ctx, now_ns, out)
    }

    /// A frame from an AF_PACKET socket with `PACKET_VNET_HDR`: a
    /// `struct virtio_net_hdr` followed by the frame.
    pub fn from_port_vnet(&mut self, buf: &[u8], now_ns: u64, out: &mut Output) -> Verdict {
        match self.vnet(buf, |c| &mut c.port_rx) {
            Ok((frame, offload)) => self.from_port_offload(frame, offload, now_ns, out),
            Err(v) => v,
        }
    }

    /// Splits an AF_PACKET buffer into its virtio-net header's offload
    /// work and the frame; a header that cannot be honoured is counted on
    /// the `rx` counter `rx` picks and dropped (`bad_offload`).
    fn vnet<'b>(
        &mut self,
        buf: &'b [u8],
        rx: impl FnOnce(&mut Counters) -> &mut crate::counters::PacketBytes,
    ) -> Result<(&'b [u8], Offload), Verdict> {
        let frame = buf.get(VIRTIO_NET_HDR_LEN..).unwrap_or_default();
        Offload::from_virtio_net_hdr(buf)
            .map(|offload| (frame, offload))
            .map_err(|_| {
                rx(&mut self.counters).add(frame.len());
                self.counters.drop(DropReason::BadOffload);
                Verdict::Drop(DropReason::BadOffload)
            })
    }

    /// A frame the edge's downlink (its filtered socket on the underlay
    /// bridge) received from a host on the underlay subnet. Off the edge
    /// it is dropped (`not_for_edge`).
    pub fn from_downlink(&mut self, frame: &[u8], now_ns: u64, out: &mut Output) -> Verdict {
        self.enter_edge(Iface::Downlink, frame, Offload::NONE, now_ns, out)
    }

    /// [`Pipeline::from_downlink`] for a buffer from an AF_PACKET socket
    /// with `PACKET_VNET_HDR` (a `struct virtio_net_hdr`, then the frame).
    pub fn from_downlink_vnet(&mut self, buf: &[u8], now_ns: u64, out: &mut Output) -> Verdict {
        self.enter_edge_vnet(Iface::Downlink, buf, now_ns, out)
    }

    /// A frame from the edge's health-check port (the namespace where its
    /// health checkers run). Off the edge it is dropped (`not_for_edge`).
    pub fn from_probe(&mut self, frame: &[u8], now_ns: u64, out: &mut Output) -> Verdict {
        self.enter_edge(Iface::Probe, frame, Offload::NONE, now_ns, out)
    }

    /// [`Pipeline::from_probe`] for a buffer from an AF_PACKET socket with
    /// `PACKET_VNET_HDR`.
    pub fn from_probe_vnet(&mut self, buf: &[u8], now_ns: u64, out: &mut Output) -> Verdict {
        self.enter_edge_vnet(Iface::Probe, buf, now_ns, out)
    }

    /// The received counter of an edge interface (the uplink's is the
    /// port's).
    fn edge_rx(c: &mut Counters, iface: Iface) -> &mut crate::counters::PacketBytes {
        match iface {
            Iface::Uplink => &mut c.port_rx,
            Iface::Downlink => &mut c.downlink_rx,
            Iface::Probe => &mut c.probe_rx,
        }
    }

    fn enter_edge_vnet(
        &mut self,
        iface: Iface,
        buf: &[u8],
        now_ns: u64,
        out: &mut Output,
    ) -> Verdict {
        match self.vnet(buf, |c| Pipeline::edge_rx(c, iface)) {
            Ok((frame, offload)) => self.enter_edge(iface, frame, offload, now_ns, out),
            Err(v) => v,
        }
    }

    /// A frame one of the edge's interfaces received, with its offload
    /// work (a GRO super-frame, a partial checksum): into that interface's
    /// layers.
    fn enter_edge(
        &mut self,
        iface: Iface,
        frame: &[u8],
        offload: Offload,
        now_ns: u64,
        out: &mut Output,
    ) -> Verdict {
        Pipeline::edge_rx(&mut self.counters, iface).add(frame.len());
        let mut ctx = Ctx::new(frame);
        ctx.offload = offload;
        ctx.came_in = Some(iface);
        let layers: &[LayerId] = match iface {
            Iface::Uplink => &EDGE_FROM_UPLINK,
            Iface::Downlink => &EDGE_FROM_DOWNLINK,
            Iface::Probe => &EDGE_FROM_PROBE,
        };
        self.run(Dir::In, layers, &mut ctx, now_ns, out)
    }

    /// The downlink socket's filter for the current tables (see
    /// [`crate::bpf`]); refuses everything off the edge.
    pub fn downlink_filter(&self) -> Vec<crate::bpf::Insn> {
        self.tables
            .tier0
            .as_ref()
            .map_or_else(crate::bpf::refuse_all, crate::bpf::downlink_filter)
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
        if self.tables.tier0.is_some() {
            return self.run(Dir::Out, &EDGE_FROM_OVERLAY, &mut ctx, now_ns, out);
        }
        let v = self.run(Dir::In, &INGRESS, &mut ctx, now_ns, out);
        if let Some(kind) = ctx.reject {
            self.answer_remote(kind, ctx.frame, ctx.switch, now_ns, out);
        }
        v
    }

    /// Sends the firewall's answer to a rejected ingress frame back to its
    /// sender through the switch, router and encapsulation layers.
    fn answer_remote(
        &mut self,
        kind: RejectKind,
        offending: &[u8],
        switch: SwitchIdx,
        now_ns: u64,
        out: &mut Output,
    ) {
        // Taken out of `self` (no allocation) so the layers can borrow it.
        let mut buf = std::mem::take(&mut self.answer);
        let mut rec = Commit {
            fw: self.firewall.as_mut(),
            edge: self.edge.as_mut(),
            lb: self.lb.as_mut(),
        };
        let t = &*self.tables;
        answer(
            t,
            kind,
            offending,
            switch,
            &mut buf,
            out,
            &mut self.counters,
            now_ns,
            &mut rec,
        );
        self.answer = buf;
    }

    fn run(
        &mut self,
        dir: Dir,
        layers: &[LayerId],
        ctx: &mut Ctx<'_>,
        now_ns: u64,
        out: &mut Output,
    ) -> Verdict {
        let mut rec = Commit {
            fw: self.firewall.as_mut(),
            edge: self.edge.as_mut(),
            lb: self.lb.as_mut(),
        };
        layer::walk(
            &self.tables,
            dir,
            layers,
            ctx,
            out,
            &mut self.counters,
            now_ns,
            &mut rec,
        )
    }
}

/// Builds the answer (RST or ICMP error) to a rejected ingress frame in
/// `buf` and walks it through [`ANSWER`] (switch, router, encapsulation)
/// toward the sender, on the offending frame's `switch`. When no answer
/// can be built (e.g. the frame was itself an ICMP error) the recorder is
/// told why and nothing is sent.
#[allow(clippy::too_many_arguments)]
pub(crate) fn answer<R: Recorder>(
    t: &Tables,
    kind: RejectKind,
    offending: &[u8],
    switch: SwitchIdx,
    buf: &mut [u8],
    out: &mut Output,
    c: &mut Counters,
    now_ns: u64,
    rec: &mut R,
) {
    match firewall::reject::build(kind, offending, buf) {
        Ok(n) => {
            let mut ctx = Ctx::new(&buf[..n]);
            if ctx.parse_l2_l3().is_ok() {
                ctx.switch = switch;
                layer::walk(t, Dir::Out, &ANSWER, &mut ctx, out, c, now_ns, rec);
            }
        }
        Err(e) => {
            rec.note(|| Why::Firewall(layer::firewall::Why::NoAnswer(e)));
            rec.step(
                LayerId::Firewall,
                layer::Step::Done(Verdict::Drop(DropReason::Firewall)),
            );
        }
    }
}
