//! The datapath thread: one OS thread that polls the port socket, the
//! Geneve socket and a waker, runs every received batch through the
//! [`datapath::Pipeline`], and sends the resulting batches. Config snapshots
//! arrive over a channel (checked only when woken) and are swapped in
//! between batches; counters are copied out for the local API a few times
//! a second. Nothing here allocates, locks or logs per packet.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use datapath::{Counters, Output, Pipeline, Tables};

use crate::io::{RecvBatch, SendBatch, Waker};

/// Messages from the control side.
#[derive(Debug)]
pub enum Ctl {
    Tables(Arc<Tables>),
    Stop,
}

/// Counters of the I/O shell itself (syscall failures, truncation).
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct IoCounters {
    pub port_rx_truncated: u64,
    pub port_tx_failed: u64,
    pub underlay_tx_failed: u64,
    pub rx_errors: u64,
    pub batches: u64,
}

/// What the API reads: a copy refreshed by the datapath thread.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub counters: Counters,
    pub io: IoCounters,
    pub config_version: u64,
    pub taken: Option<Instant>,
}

/// Sockets the thread owns.
#[derive(Debug)]
pub struct Sockets {
    /// AF_PACKET on the overlay veth peer (absent in micro-segmentation mode).
    pub port: Option<OwnedFd>,
    /// UDP 6081 on the underlay address.
    pub geneve_rx: OwnedFd,
    /// Raw IPv4 for sending Geneve.
    pub underlay_tx: OwnedFd,
}

/// Slots per output queue: a full receive batch plus a worst-case frame.
const OUTPUT_SLOTS: usize = 512;
const PUBLISH_EVERY: Duration = Duration::from_millis(200);
/// Batches per socket per wake-up, so one busy direction cannot starve the other.
const BATCHES_PER_ROUND: usize = 8;

/// Runs until [`Ctl::Stop`].
pub fn run(
    tables: Arc<Tables>,
    sockets: Sockets,
    ctl: Receiver<Ctl>,
    waker: Arc<Waker>,
    snapshot: Arc<Mutex<Snapshot>>,
    epoch: Instant,
) {
    let mut pipeline = Pipeline::new(tables);
    let mut out = Output::new(OUTPUT_SLOTS, crate::io::RX_BUF);
    let mut port_rx = RecvBatch::new(crate::io::PORT_RX_BUF);
    let mut rx = RecvBatch::new(crate::io::RX_BUF);
    let mut tx = SendBatch::new(OUTPUT_SLOTS);
    let mut io = IoCounters::default();
    let mut last_publish = Instant::now() - PUBLISH_EVERY;

    let port_fd: RawFd = sockets.port.as_ref().map_or(-1, |s| s.as_raw_fd());
    let geneve_fd = sockets.geneve_rx.as_raw_fd();
    let raw_fd = sockets.underlay_tx.as_raw_fd();
    let mut fds = [
        libc::pollfd {
            fd: waker.fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: port_fd,
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: geneve_fd,
            events: libc::POLLIN,
            revents: 0,
        },
    ];

    loop {
        for f in fds.iter_mut() {
            f.revents = 0;
        }
        // SAFETY: `fds` is a live array of pollfd; a negative fd is ignored by poll.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 100) };

        if fds[0].revents != 0 {
            waker.drain();
            loop {
                match ctl.try_recv() {
                    Ok(Ctl::Tables(t)) => pipeline.set_tables(t),
                    Ok(Ctl::Stop) | Err(TryRecvError::Disconnected) => {
                        publish(&snapshot, &pipeline, io);
                        return;
                    }
                    Err(TryRecvError::Empty) => break,
                }
            }
        }

        for _ in 0..BATCHES_PER_ROUND {
            let mut busy = false;
            if port_fd >= 0 {
                busy |= drain_port(
                    port_fd,
                    raw_fd,
                    &mut pipeline,
                    &mut port_rx,
                    &mut tx,
                    &mut out,
                    &mut io,
                    epoch,
                );
            }
            busy |= drain_geneve(
                geneve_fd,
                port_fd,
                raw_fd,
                &mut pipeline,
                &mut rx,
                &mut tx,
                &mut out,
                &mut io,
                epoch,
            );
            if !busy {
                break;
            }
        }

        if last_publish.elapsed() >= PUBLISH_EVERY {
            publish(&snapshot, &pipeline, io);
            last_publish = Instant::now();
        }
    }
}

fn now_ns(epoch: Instant) -> u64 {
    epoch.elapsed().as_nanos() as u64
}

/// One batch from the instance's port. Returns true if anything was read.
#[allow(clippy::too_many_arguments)]
fn drain_port(
    port_fd: RawFd,
    raw_fd: RawFd,
    p: &mut Pipeline,
    rx: &mut RecvBatch,
    tx: &mut SendBatch,
    out: &mut Output,
    io: &mut IoCounters,
    epoch: Instant,
) -> bool {
    let n = match rx.recv(port_fd) {
        Ok(n) => n,
        Err(_) => {
            io.rx_errors += 1;
            return false;
        }
    };
    if n == 0 {
        return false;
    }
    io.batches += 1;
    let now = now_ns(epoch);
    for i in 0..n {
        if out.needs_flush() {
            flush(port_fd, raw_fd, tx, out, io);
        }
        let (frame, truncated) = rx.frame(i);
        if truncated {
            io.port_rx_truncated += 1;
            continue;
        }
        p.from_port_vnet(frame, now, out);
    }
    flush(port_fd, raw_fd, tx, out, io);
    true
}

/// One batch of Geneve datagrams. Returns true if anything was read.
#[allow(clippy::too_many_arguments)]
fn drain_geneve(
    geneve_fd: RawFd,
    port_fd: RawFd,
    raw_fd: RawFd,
    p: &mut Pipeline,
    rx: &mut RecvBatch,
    tx: &mut SendBatch,
    out: &mut Output,
    io: &mut IoCounters,
    epoch: Instant,
) -> bool {
    let n = match rx.recv(geneve_fd) {
        Ok(n) => n,
        Err(_) => {
            io.rx_errors += 1;
            return false;
        }
    };
    if n == 0 {
        return false;
    }
    io.batches += 1;
    let now = now_ns(epoch);
    for i in 0..n {
        if out.needs_flush() {
            flush(port_fd, raw_fd, tx, out, io);
        }
        let src: Ipv4Addr = rx.source(i);
        let (payload, _) = rx.frame(i);
        p.from_underlay(src, payload, now, out);
    }
    flush(port_fd, raw_fd, tx, out, io);
    true
}

fn flush(port_fd: RawFd, raw_fd: RawFd, tx: &mut SendBatch, out: &mut Output, io: &mut IoCounters) {
    if !out.underlay.is_empty() {
        io.underlay_tx_failed += tx.send(raw_fd, &mut out.underlay, true, None).failed as u64;
    }
    if !out.port.is_empty() {
        if port_fd >= 0 {
            let hdr: &'static [u8] = &crate::io::VNET_HDR_NONE;
            io.port_tx_failed += tx.send(port_fd, &mut out.port, false, Some(hdr)).failed as u64;
        } else {
            io.port_tx_failed += out.port.len() as u64;
            out.port.clear();
        }
    }
}

fn publish(snapshot: &Mutex<Snapshot>, p: &Pipeline, io: IoCounters) {
    // Once per PUBLISH_EVERY, never per packet.
    if let Ok(mut s) = snapshot.lock() {
        s.counters.clone_from(p.counters());
        s.io = io;
        s.config_version = p.tables().version;
        s.taken = Some(Instant::now());
    }
}
