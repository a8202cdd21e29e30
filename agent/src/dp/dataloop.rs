//! The datapath thread: one OS thread that polls the port socket, the
//! Geneve socket (on the edge also the downlink's filtered socket on the
//! underlay bridge, whose BPF filter follows the tables, and the
//! health-check port's socket) and a waker, runs
//! every received batch through the
//! [`datapath::Pipeline`], and sends the resulting batches. Config snapshots
//! arrive over a channel (checked only when woken) and are swapped in
//! between batches; counters are copied out for the local API a few times
//! a second. Nothing here allocates, locks or logs per packet.
//!
//! The local API's `trace` and `capture` are control messages too: a trace
//! runs [`Pipeline::trace`] between batches (so the firewall's live
//! connection table is consulted, and nothing changes); a capture arms
//! [`capture::Capture`], which the receive and flush paths feed only while
//! it is armed.

pub mod capture;

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use datapath::edge::Iface;
use datapath::offload::VIRTIO_NET_HDR_LEN;
use datapath::{Output, Pipeline, Tables, TraceFrom};

use self::capture::{Capture, CaptureDir};

use crate::dp::ctl::{self, Ctl, IoCounters, Published, TraceError, TraceInput, TraceReply};
use crate::dp::driver::{self, Flow};
use crate::dp::io::{self, RecvBatch, SendBatch, Waker};
use crate::dp::underlay::{GsoSender, UdpPool};
use crate::dp::{fwctl, lbctl, natctl};

/// Traces `input` through `pipeline` as of `now_ns` (the overlay loop's
/// answer to [`Ctl::Trace`]). Changes nothing.
pub fn trace(
    pipeline: &Pipeline,
    input: TraceInput,
    now_ns: u64,
) -> Result<TraceReply, TraceError> {
    let t = match input {
        TraceInput::Port(frame) => pipeline.trace(TraceFrom::Port, &frame, now_ns),
        TraceInput::Underlay {
            src_tep,
            vni,
            frame,
        } => {
            let payload = datapath::trace::geneve_payload(pipeline.tables(), src_tep, vni, &frame)?;
            pipeline.trace(TraceFrom::Underlay(src_tep), &payload, now_ns)
        }
        TraceInput::Nic(_) => {
            return Err(TraceError::NicOnOverlay);
        }
    };
    Ok(TraceReply::Walked(t))
}

/// Sockets the thread owns.
#[derive(Debug)]
pub struct Sockets {
    /// AF_PACKET on the overlay veth peer (absent in micro-segmentation mode).
    pub port: Option<OwnedFd>,
    /// UDP 6081 on the underlay address, with GRO.
    pub geneve_rx: OwnedFd,
    /// UDP sockets that send Geneve (one per source-port slice), with GSO.
    pub underlay_tx: UdpPool,
    /// The edge only: AF_PACKET on the underlay bridge, filtered
    /// ([`datapath::bpf`]): the tier-0's downlink.
    pub downlink: Option<OwnedFd>,
    /// The edge only: AF_PACKET on the health-check port's peer
    /// (`host::probe`): the checkers' connections in, their answers out.
    pub probe: Option<OwnedFd>,
}

/// Slots per output queue: a full receive batch plus a worst-case frame.
const OUTPUT_SLOTS: usize = 512;
/// 64 KiB slots for the port queue, where TCP segments are merged.
const PORT_SLOTS: usize = 128;

/// The loop's state: sockets, preallocated batches, the pipeline.
struct Shell {
    sockets: Sockets,
    pipeline: Pipeline,
    out: Output,
    port_rx: RecvBatch,
    underlay_rx: RecvBatch,
    port_tx: SendBatch,
    underlay_send: GsoSender,
    /// The edge only: the downlink's receive batch.
    downlink_rx: Option<RecvBatch>,
    downlink_tx: SendBatch,
    /// The edge only: the health-check port's batches.
    probe_rx: Option<RecvBatch>,
    probe_tx: SendBatch,
    io: IoCounters,
    epoch: Instant,
    capture: Capture,
}

/// How the overlay loop runs.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Merge received TCP segments for the port (needs TSO on the veth).
    pub coalesce: bool,
    /// Connections the firewall tracks at most.
    pub max_flows: usize,
    /// Busy-polling budget after a round that moved packets
    /// ([`crate::config::HostSettings::busy_poll_us`]).
    pub busy_poll: Duration,
}

/// Runs until [`Ctl::Stop`].
pub fn run(
    tables: Arc<Tables>,
    sockets: Sockets,
    ctl: Receiver<Ctl>,
    waker: Arc<Waker>,
    published: Arc<Mutex<Published>>,
    epoch: Instant,
    opts: Options,
) {
    let Options {
        coalesce,
        max_flows,
        busy_poll,
    } = opts;
    let port_fd: RawFd = sockets.port.as_ref().map_or(-1, |s| s.as_raw_fd());
    let geneve_fd = sockets.geneve_rx.as_raw_fd();
    let downlink_fd: RawFd = sockets.downlink.as_ref().map_or(-1, |s| s.as_raw_fd());
    let probe_fd: RawFd = sockets.probe.as_ref().map_or(-1, |s| s.as_raw_fd());
    let probe = sockets.probe.is_some();
    let edge = sockets.downlink.is_some();
    let out = if coalesce {
        Output::with_coalescing(OUTPUT_SLOTS, io::RX_BUF, PORT_SLOTS)
    } else {
        Output::new(OUTPUT_SLOTS, io::RX_BUF)
    };
    let mut shell = Shell {
        sockets,
        pipeline: Pipeline::with_flow_capacity(tables, max_flows),
        out: if edge { out } else { out.without_downlink() },
        port_rx: RecvBatch::new(io::PORT_RX_BUF),
        underlay_rx: RecvBatch::new(io::PORT_RX_BUF),
        port_tx: SendBatch::new(OUTPUT_SLOTS),
        underlay_send: GsoSender::new(OUTPUT_SLOTS),
        downlink_rx: edge.then(|| RecvBatch::new(io::PORT_RX_BUF)),
        downlink_tx: SendBatch::new(if edge { OUTPUT_SLOTS } else { 0 }),
        probe_rx: probe.then(|| RecvBatch::new(io::RX_BUF)),
        probe_tx: SendBatch::new(if probe { datapath::PROBE_SLOTS } else { 0 }),
        io: IoCounters::default(),
        epoch,
        capture: Capture::default(),
    };
    shell.tables_changed();
    driver::run(
        &mut shell,
        [port_fd, geneve_fd, downlink_fd, probe_fd],
        &ctl,
        &waker,
        &published,
        busy_poll,
    );
}

impl Shell {
    fn lb_answer(&self, q: lbctl::LbQuery, now: u64) -> Option<agent_api::LoadBalancersReply> {
        let t = self.pipeline.tables();
        lbctl::answer(self.pipeline.lb(), &t.lb, t.tier0.is_some(), q, now)
    }
}

impl driver::Shell for Shell {
    fn control(&mut self, msg: Ctl) -> Flow {
        match msg {
            Ctl::Tables(t) => {
                self.pipeline.set_tables(t);
                if let Some(e) = self.pipeline.edge_error() {
                    tracing::error!(error = %e, "edge NAT: configuration refused");
                }
                self.tables_changed();
            }
            Ctl::Fw(req) => {
                let now = self.now_ns();
                let reply = fwctl::answer(self.pipeline.firewall_mut(), req.query, now);
                let _ = req.reply.send(reply);
            }
            Ctl::RestoreFlows(flows) => {
                let now = self.now_ns();
                if let Some(fw) = self.pipeline.firewall_mut() {
                    fwctl::restore(fw, &flows, now);
                }
            }
            Ctl::Nat(req) => {
                let now = self.now_ns();
                let _ = req
                    .reply
                    .send(natctl::answer(self.pipeline.edge(), req.query, now));
            }
            Ctl::Lb(req) => {
                let now = self.now_ns();
                let _ = req.reply.send(self.lb_answer(req.query, now));
            }
            Ctl::RestoreNat(saved) => {
                let now = self.now_ns();
                if let Some(e) = self.pipeline.edge_mut() {
                    let n = natctl::restore(e, &saved, now);
                    tracing::info!(restored = n, saved = saved.len(), "NAT sessions restored");
                }
            }
            Ctl::Trace(req) => {
                let now = self.now_ns();
                let _ = req.reply.send(trace(&self.pipeline, req.input, now));
            }
            Ctl::Capture(req) => {
                let now = self.now_ns();
                self.capture.arm(req, now);
            }
            Ctl::Stop => return Flow::Stop,
        }
        Flow::Continue
    }

    fn drain(&mut self) -> bool {
        self.drain_port() | self.drain_underlay() | self.drain_downlink() | self.drain_probe()
    }

    fn tick(&mut self) {
        let now = self.now_ns();
        self.pipeline.tick(now);
        if self.pipeline.edge().is_some() {
            self.pipeline.edge_tick(now, &mut self.out);
            if !self.out.port.is_empty()
                || !self.out.downlink.is_empty()
                || !self.out.probe.is_empty()
            {
                self.flush(now);
            }
        }
        self.capture.poll(now);
    }

    fn publish(&mut self, published: &Mutex<Published>) {
        if let Some(fd) = self.port_fd() {
            // One syscall per publish period, not per packet.
            if let Ok(d) = io::packet_drops(fd) {
                self.io.port_rx_dropped += d;
            }
        }
        // Built before the lock: the readers wait for the copies only.
        let nat = self.pipeline.edge().map(natctl::summary);
        if let Ok(mut s) = published.lock() {
            s.counters.clone_from(self.pipeline.counters());
            s.io = self.io;
            s.config_version = self.pipeline.tables().version;
            s.nat = nat;
            s.firewall.clear();
            if let Some(fw) = self.pipeline.firewall_mut() {
                fwctl::summary(fw, &mut s.firewall);
                ctl::drain_log(fw, &mut s);
            }
        }
    }

    fn stop(&mut self) {
        self.capture.stop();
    }
}

impl Shell {
    fn now_ns(&self) -> u64 {
        crate::sys::saturating_nanos(self.epoch.elapsed())
    }

    /// Tells the capture what the new tables say, and the downlink's
    /// socket which frames to let through (its overlay subnets, addresses
    /// and SNAT setting come from the tables).
    fn tables_changed(&mut self) {
        let t = self.pipeline.tables();
        let port_vni = t
            .port
            .and_then(|p| t.switches.get(usize::from(p.switch)))
            .map(|s| s.vni);
        self.capture.set_tables(port_vni, t.host.underlay_ip);
        if let Some(fd) = &self.sockets.downlink {
            let prog = self.pipeline.downlink_filter();
            if let Err(e) = io::attach_filter(fd.as_raw_fd(), &prog) {
                // The previous filter stays in force; the layers check
                // again whatever it lets through.
                tracing::error!(error = %e, insns = prog.len(), "downlink filter not replaced");
            }
        }
    }

    fn port_fd(&self) -> Option<RawFd> {
        self.sockets.port.as_ref().map(|s| s.as_raw_fd())
    }

    /// One batch from the instance's port. Returns true if anything was read.
    fn drain_port(&mut self) -> bool {
        let Some(fd) = self.port_fd() else {
            return false;
        };
        let n = receive(&mut self.port_rx, fd, &mut self.io);
        if n == 0 {
            return false;
        }
        let now = self.now_ns();
        if self.pipeline.wants_prefetch() {
            // Overlap the connection-table misses of the whole batch.
            for i in 0..n {
                self.pipeline.prefetch_port(self.port_rx.frame(i).0);
            }
        }
        let capturing = self.capture.active();
        for i in 0..n {
            if self.out.needs_flush() {
                self.flush(now);
            }
            let (frame, truncated) = self.port_rx.frame(i);
            if truncated {
                self.io.port_rx_truncated += 1;
                continue;
            }
            if capturing && let Some(f) = frame.get(VIRTIO_NET_HDR_LEN..) {
                self.capture.port(CaptureDir::Rx, f, now);
            }
            self.pipeline.from_port_vnet(frame, now, &mut self.out);
        }
        self.flush(now);
        true
    }

    /// The edge: one batch from the downlink's filtered socket.
    fn drain_downlink(&mut self) -> bool {
        self.drain_edge(Iface::Downlink)
    }

    /// The edge: one batch from the health-check port.
    fn drain_probe(&mut self) -> bool {
        self.drain_edge(Iface::Probe)
    }

    /// One batch from the downlink's or the health-check port's socket
    /// (the uplink's is the port's, [`Shell::drain_port`]).
    fn drain_edge(&mut self, iface: Iface) -> bool {
        let (sock, slot) = match iface {
            Iface::Downlink => (&self.sockets.downlink, &mut self.downlink_rx),
            Iface::Probe => (&self.sockets.probe, &mut self.probe_rx),
            Iface::Uplink => return false,
        };
        let Some(fd) = sock.as_ref().map(|s| s.as_raw_fd()) else {
            return false;
        };
        // Taken out for the batch (a move, no allocation) so the pipeline
        // and the flushes can borrow the shell meanwhile.
        let Some(mut batch) = slot.take() else {
            return false;
        };
        let n = receive(&mut batch, fd, &mut self.io);
        let now = self.now_ns();
        for i in 0..n {
            if self.out.needs_flush() {
                self.flush(now);
            }
            let (frame, truncated) = batch.frame(i);
            match (truncated, iface) {
                (true, Iface::Probe) => self.io.probe_rx_truncated += 1,
                (true, _) => self.io.downlink_rx_truncated += 1,
                (false, Iface::Probe) => {
                    self.pipeline.from_probe_vnet(frame, now, &mut self.out);
                }
                (false, _) => {
                    self.pipeline.from_downlink_vnet(frame, now, &mut self.out);
                }
            }
        }
        match iface {
            Iface::Probe => self.probe_rx = Some(batch),
            _ => self.downlink_rx = Some(batch),
        }
        if n > 0 {
            self.flush(now);
        }
        n > 0
    }

    /// One batch of Geneve datagrams (GRO trains split back into datagrams).
    fn drain_underlay(&mut self) -> bool {
        let fd = self.sockets.geneve_rx.as_raw_fd();
        let n = receive(&mut self.underlay_rx, fd, &mut self.io);
        if n == 0 {
            return false;
        }
        let now = self.now_ns();
        if self.pipeline.wants_prefetch() {
            for i in 0..n {
                let (payload, _) = self.underlay_rx.frame(i);
                let seg = self.underlay_rx.gro_size(i).unwrap_or(payload.len()).max(1);
                for datagram in payload.chunks(seg) {
                    self.pipeline.prefetch_underlay(datagram);
                }
            }
        }
        let capturing = self.capture.active();
        for i in 0..n {
            let src = self.underlay_rx.source(i);
            let (payload, truncated) = self.underlay_rx.frame(i);
            if truncated {
                self.io.underlay_rx_truncated += 1;
                continue;
            }
            let seg = self.underlay_rx.gro_size(i).unwrap_or(payload.len()).max(1);
            if seg < payload.len() {
                self.io.underlay_rx_gro_segments += payload.len().div_ceil(seg) as u64;
            }
            for datagram in payload.chunks(seg) {
                if self.out.needs_flush() {
                    flush(
                        &mut self.sockets,
                        &mut self.out,
                        &mut self.port_tx,
                        &mut self.underlay_send,
                        &mut self.downlink_tx,
                        &mut self.probe_tx,
                        &mut self.io,
                        &mut self.capture,
                        now,
                    );
                }
                if capturing {
                    self.capture.underlay_rx(src, datagram, now);
                }
                self.pipeline
                    .from_underlay(src, datagram, now, &mut self.out);
            }
        }
        self.flush(now);
        true
    }

    fn flush(&mut self, now_ns: u64) {
        flush(
            &mut self.sockets,
            &mut self.out,
            &mut self.port_tx,
            &mut self.underlay_send,
            &mut self.downlink_tx,
            &mut self.probe_tx,
            &mut self.io,
            &mut self.capture,
            now_ns,
        );
    }
}

/// One `recvmmsg` into `batch`; errors and batches counted. Returns the
/// number of messages (0 when nothing was waiting or on error).
fn receive(batch: &mut RecvBatch, fd: RawFd, io: &mut IoCounters) -> usize {
    match batch.recv(fd) {
        Ok(0) => 0,
        Ok(n) => {
            io.batches += 1;
            n
        }
        Err(_) => {
            io.rx_errors += 1;
            0
        }
    }
}

/// Sends the output queues (a free function so the receive loops can call
/// it while borrowing their receive batch), showing the port and underlay
/// ones to an armed capture first (the downlink's frames are not captured).
#[allow(clippy::too_many_arguments)]
fn flush(
    sockets: &mut Sockets,
    out: &mut Output,
    port_tx: &mut SendBatch,
    underlay_send: &mut GsoSender,
    downlink_tx: &mut SendBatch,
    probe_tx: &mut SendBatch,
    io: &mut IoCounters,
    capture: &mut Capture,
    now_ns: u64,
) {
    if capture.active() {
        for (pkt, _) in out.underlay.iter() {
            capture.underlay_tx(pkt, now_ns);
        }
        for (frame, _) in out.port.iter() {
            capture.port(CaptureDir::Tx, frame, now_ns);
        }
    }
    if !out.underlay.is_empty() {
        io.underlay_tx_failed += underlay_send
            .send(&sockets.underlay_tx, &mut out.underlay)
            .failed as u64;
    }
    if !out.port.is_empty() {
        match &sockets.port {
            Some(fd) => {
                io.port_tx_failed += port_tx.send(fd.as_raw_fd(), &mut out.port).failed as u64
            }
            None => {
                io.port_tx_failed += out.port.len() as u64;
                out.port.clear();
            }
        }
    }
    if !out.downlink.is_empty() {
        match &sockets.downlink {
            Some(fd) => {
                io.downlink_tx_failed +=
                    downlink_tx.send(fd.as_raw_fd(), &mut out.downlink).failed as u64
            }
            None => {
                io.downlink_tx_failed += out.downlink.len() as u64;
                out.downlink.clear();
            }
        }
    }
    if !out.probe.is_empty() {
        match &sockets.probe {
            Some(fd) => {
                io.probe_tx_failed += probe_tx.send(fd.as_raw_fd(), &mut out.probe).failed as u64
            }
            None => {
                io.probe_tx_failed += out.probe.len() as u64;
                out.probe.clear();
            }
        }
    }
}
