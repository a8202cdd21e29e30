//! The datapath thread of filtered micro-segmentation mode: the instance's
//! underlay traffic passes through the distributed firewall. This is the
//! I/O shell around [`datapath::Microseg`], which decides, answers and
//! explains; the shell reads batches, hands frames over, and sends what
//! comes out.
//!
//! The host plumbing ([`crate::host::Mode::MicrosegFiltered`]) keeps the
//! NIC a port of the bridge but cuts it off: the host stack reaches the
//! outside only through the veth `fw_if` (bridge side) <-> `fw_peer` (ours).
//! This thread moves frames between two AF_PACKET sockets
//! ([`io::packet_socket`]):
//!
//! * NIC (a tap: it sees every frame the NIC receives, before the kernel
//!   drops it on the way into the bridge) -> [`Microseg::from_nic`]:
//!   delivered -> written to `fw_peer` (so it enters the bridge from
//!   `fw_if` and reaches the host); a reject's answer (the `underlay`
//!   queue) goes back out of the NIC.
//! * `fw_peer` (what the host sends) -> [`Microseg::from_host`]: forwarded
//!   -> written to the NIC; a reject's answer (the `port` queue) is written
//!   to `fw_peer` (back to the host).
//!
//! Both sockets use `PACKET_VNET_HDR`: GRO'd and TSO super-frames pass
//! through whole, their virtio-net header written back unchanged with them
//! (the firewall parses the frame behind it). Passed frames are sent
//! straight from the receive buffers (no copy); the answers from the
//! pipeline's [`Output`] queues.
//!
//! The loop itself (poll, waker, control between batches, publishing) is
//! [`driver::run`], shared with [`crate::dp::dataloop`]; every send goes
//! through [`io::send_entries`]. Nothing allocates, locks, logs or makes a
//! syscall per packet.
//!
//! # Wiring (run.rs)
//!
//! Filtered micro-segmentation = micro-segmentation mode with `[gateway]`
//! configured, or a static config with a `firewall` section:
//!
//! ```text
//! // before host::setup (DNS may be blocked once the NIC is filtered):
//! let mgmt = msegloop::management_endpoints(gw)?;          // or vec![] without [gateway]
//! let plumbed = host::setup(&cfg.host, host::Mode::MicrosegFiltered).await?;
//! let lp = msegloop::MsegLoop {
//!     sockets: msegloop::Sockets::open(plumbed.nic_ifindex, plumbed.fw_peer_ifindex)?,
//!     firewall: msegloop::new_firewall(&cfg.host, mgmt),
//!     nic_mac: plumbed.nic.mac,
//!     busy_poll: cfg.host.busy_poll(),
//! };
//! std::thread::Builder::new().name("nsx-msegloop".into())
//!     .spawn(move || msegloop::run(lp, tables, ctl_rx, waker, published, started))?;
//! ```
//!
//! No Geneve sockets are needed in this mode. Control is the same channel
//! as the overlay loop (`Ctl::Tables`, `Ctl::Fw`, `Ctl::RestoreFlows`,
//! `Ctl::Trace`, `Ctl::Capture`, `Ctl::Stop` + `waker.wake()`). A trace
//! is [`Microseg::trace`] (a frame the host sends, or one the NIC
//! receives); capture is an overlay-mode feature and is refused (the
//! host's own interfaces can be captured with tcpdump in this mode). A
//! config whose tables have no firewall section leaves the running policy
//! in place (before the first one, the failure policy decides).
//!
//! Counters go to the shared [`Published`]: `counters` with the pipeline's
//! (the firewall and forward layers, drop reasons); `io` with the `port_*`
//! fields for the `fw_peer` side and `underlay_*` for the NIC side;
//! `firewall` with the firewall's summary ([`fwctl::summary`]) plus the
//! pipeline's [`datapath::mseg::MsegCounters`] as `mseg_*` and the NIC
//! tap's kernel drops as `mseg_nic_rx_dropped`; the packet log is drained
//! like the overlay loop's.

use std::io as stdio;
use std::mem;
use std::net::{SocketAddr, SocketAddrV4, ToSocketAddrs};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use datapath::mseg::PolicyChange;
use datapath::{Microseg, Output, Tables, Verdict};
use firewall::{Dir, Firewall};

use crate::config::{GatewaySettings, HostSettings};
use crate::dp::ctl::{self, Ctl, IoCounters, Published, TraceError, TraceInput, TraceReply};
use crate::dp::dataloop::capture::CaptureError;
use crate::dp::driver::{self, Flow};
use crate::dp::fwctl;
use crate::dp::io::{self, BATCH, Qdisc, RecvBatch, SendBatch, Waker};

/// Why the loop could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum MsegError {
    #[error("AF_PACKET socket on {what} (ifindex {ifindex}): {source}")]
    Socket {
        what: &'static str,
        ifindex: u32,
        #[source]
        source: stdio::Error,
    },
    #[error("gateway endpoint {endpoint:?}: {reason}")]
    Resolve { endpoint: String, reason: String },
}

/// The two sockets the thread owns.
#[derive(Debug)]
pub struct Sockets {
    /// Tap on the NIC: every frame it receives; our sends leave on it.
    pub nic: OwnedFd,
    /// On `fw_peer`: every frame the host sends; what passes inbound is
    /// written here.
    pub fw: OwnedFd,
}

impl Sockets {
    /// Opens both sockets. Sends to the NIC go through its qdisc; sends to
    /// the veth bypass it (a veth has none).
    pub fn open(nic_ifindex: u32, fw_peer_ifindex: u32) -> Result<Sockets, MsegError> {
        let nic =
            io::packet_socket(nic_ifindex, Qdisc::Through).map_err(|source| MsegError::Socket {
                what: "the NIC",
                ifindex: nic_ifindex,
                source,
            })?;
        let fw = io::packet_socket(fw_peer_ifindex, Qdisc::Bypass).map_err(|source| {
            MsegError::Socket {
                what: "the firewall veth peer",
                ifindex: fw_peer_ifindex,
                source,
            }
        })?;
        Ok(Sockets { nic, fw })
    }
}

/// Everything [`run`] needs besides the control plumbing.
#[derive(Debug)]
pub struct MsegLoop {
    pub sockets: Sockets,
    /// Built with [`new_firewall`].
    pub firewall: Firewall,
    /// The NIC's MAC: unicast frames the NIC receives for another MAC are
    /// not the host's.
    pub nic_mac: [u8; 6],
    /// Busy-polling budget after a round that moved packets
    /// ([`HostSettings::busy_poll_us`]).
    pub busy_poll: Duration,
}

/// The firewall for this mode: `max_flows` connections, the configured
/// failure policy, and the agent's own gateway endpoints exempt.
pub fn new_firewall(host: &HostSettings, management: Vec<SocketAddrV4>) -> Firewall {
    let mut fw = Firewall::new(host.max_flows, host.failure_policy);
    fw.set_management(management);
    fw
}

/// The gateway's control and enrollment endpoints (`host:port`) as IPv4
/// socket addresses, every address each name resolves to. Resolves
/// through the system resolver (blocking): call it before the NIC is
/// filtered, since with `failClosed` DNS is blocked until a ruleset arrives.
pub fn management_endpoints(gw: &GatewaySettings) -> Result<Vec<SocketAddrV4>, MsegError> {
    let mut out = Vec::new();
    for endpoint in [&gw.control, &gw.enroll] {
        let addrs = endpoint.to_socket_addrs().map_err(|e| MsegError::Resolve {
            endpoint: endpoint.clone(),
            reason: e.to_string(),
        })?;
        let mut found = false;
        for a in addrs {
            if let SocketAddr::V4(v4) = a {
                found = true;
                if !out.contains(&v4) {
                    out.push(v4);
                }
            }
        }
        if !found {
            return Err(MsegError::Resolve {
                endpoint: endpoint.clone(),
                reason: "no IPv4 address".into(),
            });
        }
    }
    Ok(out)
}

/// Frames to write with one `sendmmsg`, each a single iovec pointing at a
/// receive slot that stays untouched until [`FrameBatch::send`] returns.
struct FrameBatch {
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

// SAFETY: the pointers are only used within one batch round on the owning
// thread; nothing is shared.
unsafe impl Send for FrameBatch {}

impl std::fmt::Debug for FrameBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameBatch")
            .field("len", &self.iovs.len())
            .finish()
    }
}

impl FrameBatch {
    fn new() -> FrameBatch {
        FrameBatch {
            iovs: Vec::with_capacity(BATCH),
            hdrs: Vec::with_capacity(BATCH),
        }
    }

    /// Queues `frame` (virtio-net header included). The caller keeps the
    /// memory alive and unchanged until the next `send`.
    fn push(&mut self, frame: &[u8]) {
        if self.iovs.len() < BATCH {
            self.iovs.push(libc::iovec {
                iov_base: frame.as_ptr() as *mut libc::c_void,
                iov_len: frame.len(),
            });
        }
    }

    /// Writes every queued frame to `fd` under [`io::send_entries`]'
    /// policy; returns how many were given up. Empties the batch.
    fn send(&mut self, fd: RawFd) -> u64 {
        self.hdrs.clear();
        for iov in self.iovs.iter_mut() {
            // SAFETY: all-zero is a valid mmsghdr.
            let mut h: libc::mmsghdr = unsafe { mem::zeroed() };
            h.msg_hdr.msg_iov = iov;
            h.msg_hdr.msg_iovlen = 1;
            self.hdrs.push(h);
        }
        let mut failed = 0u64;
        // SAFETY: every header points at an iovec in `self.iovs`, whose
        // buffers the caller keeps alive and unchanged (see `push`).
        unsafe { io::send_entries(fd, &mut self.hdrs, |_| failed += 1) };
        self.iovs.clear();
        self.hdrs.clear();
        failed
    }
}

/// The thread's state.
struct Shell {
    sockets: Sockets,
    mseg: Microseg,
    nic_rx: RecvBatch,
    fw_rx: RecvBatch,
    /// Passed frames, to the other socket (straight from the receive slots).
    forward: FrameBatch,
    /// Reject answers: `port` back to the host, `underlay` out of the NIC.
    out: Output,
    tx: SendBatch,
    io: IoCounters,
    /// Frames the kernel dropped on the NIC tap (its buffer was full).
    nic_rx_dropped: u64,
    epoch: Instant,
}

/// Runs until [`Ctl::Stop`] (or the control channel closes).
pub fn run(
    lp: MsegLoop,
    tables: Arc<Tables>,
    ctl: Receiver<Ctl>,
    waker: Arc<Waker>,
    published: Arc<Mutex<Published>>,
    epoch: Instant,
) {
    let fds = [
        lp.sockets.nic.as_raw_fd(),
        lp.sockets.fw.as_raw_fd(),
        -1,
        -1,
    ];
    let busy_poll = lp.busy_poll;
    let mseg = Microseg::new(Arc::clone(&tables), lp.firewall, lp.nic_mac);
    let mut shell = Shell {
        sockets: lp.sockets,
        mseg,
        nic_rx: RecvBatch::new(io::PORT_RX_BUF),
        fw_rx: RecvBatch::new(io::PORT_RX_BUF),
        forward: FrameBatch::new(),
        out: Microseg::output(BATCH),
        tx: SendBatch::new(BATCH),
        io: IoCounters::default(),
        nic_rx_dropped: 0,
        epoch,
    };
    shell.set_tables(tables);
    driver::run(&mut shell, fds, &ctl, &waker, &published, busy_poll);
}

impl driver::Shell for Shell {
    fn control(&mut self, msg: Ctl) -> Flow {
        match msg {
            Ctl::Tables(t) => self.set_tables(t),
            Ctl::Fw(req) => {
                let now = self.now_ns();
                let reply = fwctl::answer(Some(self.mseg.firewall_mut()), req.query, now);
                let _ = req.reply.send(reply);
            }
            Ctl::RestoreFlows(flows) => {
                let now = self.now_ns();
                fwctl::restore(self.mseg.firewall_mut(), &flows, now);
            }
            Ctl::Trace(req) => {
                let now = self.now_ns();
                let _ = req.reply.send(self.trace(req.input, now));
            }
            Ctl::Capture(req) => {
                let _ = req.reply.send(Err(CaptureError::OverlayOnly));
            }
            Ctl::Nat(req) => {
                let _ = req.reply.send(crate::dp::natctl::NatReply::Off);
            }
            Ctl::Lb(req) => {
                // Micro-segmentation has no overlay to balance in.
                let _ = req.reply.send(None);
            }
            Ctl::RestoreNat(_) => {}
            Ctl::Stop => return Flow::Stop,
        }
        Flow::Continue
    }

    fn drain(&mut self) -> bool {
        self.drain_one(Dir::In) | self.drain_one(Dir::Out)
    }

    fn tick(&mut self) {
        let now = self.now_ns();
        self.mseg.tick(now);
    }

    fn publish(&mut self, published: &Mutex<Published>) {
        // One syscall per socket per publish period, never per packet.
        if let Ok(d) = io::packet_drops(self.sockets.fw.as_raw_fd()) {
            self.io.port_rx_dropped += d;
        }
        if let Ok(d) = io::packet_drops(self.sockets.nic.as_raw_fd()) {
            self.nic_rx_dropped += d;
        }
        if let Ok(mut s) = published.lock() {
            s.counters.clone_from(self.mseg.counters());
            s.io = self.io;
            s.config_version = self.mseg.tables().version;
            s.firewall.clear();
            fwctl::summary(self.mseg.firewall(), &mut s.firewall);
            for (name, v) in self.mseg.mseg_counters().named() {
                s.firewall.push((name.to_string(), v));
            }
            s.firewall
                .push(("mseg_nic_rx_dropped".to_string(), self.nic_rx_dropped));
            ctl::drain_log(self.mseg.firewall_mut(), &mut s);
        }
    }
}

impl Shell {
    fn now_ns(&self) -> u64 {
        crate::sys::saturating_nanos(self.epoch.elapsed())
    }

    /// The pipeline's trace; changes nothing.
    fn trace(&self, input: TraceInput, now_ns: u64) -> Result<TraceReply, TraceError> {
        let (dir, frame) = match input {
            TraceInput::Port(f) => (Dir::Out, f),
            TraceInput::Nic(f) => (Dir::In, f),
            TraceInput::Underlay { .. } => {
                return Err(TraceError::UnderlayOnMicroseg);
            }
        };
        Ok(match self.mseg.trace(dir, &frame, now_ns) {
            Ok(t) => TraceReply::Walked(t),
            Err(not_for_host) => TraceReply::NotForHost(not_for_host),
        })
    }

    /// A new config: see [`Microseg::set_tables`].
    fn set_tables(&mut self, tables: Arc<Tables>) {
        let version = tables.version;
        match self.mseg.set_tables(tables) {
            PolicyChange::Applied { rules, removed } => {
                tracing::info!(version, rules, removed, "firewall policy applied");
            }
            PolicyChange::KeptRunning => tracing::warn!(
                version,
                "config has no firewall section; keeping the running policy"
            ),
            PolicyChange::Unchanged | PolicyChange::NoPolicy => {}
        }
    }

    /// One batch from the NIC (`Dir::In`) or from `fw_peer` (`Dir::Out`).
    /// Returns true if anything was read.
    fn drain_one(&mut self, dir: Dir) -> bool {
        let (rx, from, to) = match dir {
            Dir::In => (
                &mut self.nic_rx,
                self.sockets.nic.as_raw_fd(),
                self.sockets.fw.as_raw_fd(),
            ),
            Dir::Out => (
                &mut self.fw_rx,
                self.sockets.fw.as_raw_fd(),
                self.sockets.nic.as_raw_fd(),
            ),
        };
        let n = match rx.recv(from) {
            Ok(0) => return false,
            Ok(n) => {
                self.io.batches += 1;
                n
            }
            Err(_) => {
                self.io.rx_errors += 1;
                return false;
            }
        };
        let now = crate::sys::saturating_nanos(self.epoch.elapsed());
        let rx: &RecvBatch = rx;
        for i in 0..n {
            let (buf, truncated) = rx.frame(i);
            if truncated {
                match dir {
                    Dir::In => self.io.underlay_rx_truncated += 1,
                    Dir::Out => self.io.port_rx_truncated += 1,
                }
                continue;
            }
            let v = match dir {
                Dir::In => self.mseg.from_nic(buf, now, &mut self.out),
                Dir::Out => self.mseg.from_host(buf, now, &mut self.out),
            };
            if matches!(v, Verdict::Delivered | Verdict::Forwarded) {
                self.forward.push(buf);
            }
        }
        // The forwarded frames point into `rx`: sent before it is reused.
        let failed = self.forward.send(to);
        match dir {
            Dir::In => self.io.port_tx_failed += failed,
            Dir::Out => self.io.underlay_tx_failed += failed,
        }
        if !self.out.port.is_empty() {
            let r = self
                .tx
                .send(self.sockets.fw.as_raw_fd(), &mut self.out.port);
            self.io.port_tx_failed += r.failed as u64;
        }
        if !self.out.underlay.is_empty() {
            let r = self
                .tx
                .send(self.sockets.nic.as_raw_fd(), &mut self.out.underlay);
            self.io.underlay_tx_failed += r.failed as u64;
        }
        true
    }
}
