//! The datapath thread of filtered micro-segmentation mode: the instance's
//! underlay traffic passes through the distributed firewall.
//!
//! The host plumbing ([`crate::host::Mode::MicrosegFiltered`]) keeps the
//! NIC a port of the bridge but cuts it off: the host stack reaches the
//! outside only through the veth `fw_if` (bridge side) <-> `fw_peer` (ours).
//! This thread moves frames between two AF_PACKET sockets:
//!
//! * NIC (a tap: it sees every frame the NIC receives, before the kernel
//!   drops it on the way into the bridge) -> `Firewall::process(Dir::In)`:
//!   pass -> written to `fw_peer` (so it enters the bridge from `fw_if` and
//!   reaches the host); reject -> the answer goes back out of the NIC;
//!   drop -> counted.
//! * `fw_peer` (what the host sends) -> `Firewall::process(Dir::Out)`: pass
//!   -> written to the NIC; reject -> the answer is written to `fw_peer`
//!   (back to the host); drop -> counted.
//!
//! Both sockets use `PACKET_VNET_HDR`: GRO'd and TSO super-frames pass
//! through whole, their virtio-net header written back unchanged with them
//! (the firewall parses the frame behind it). Forwarded frames are sent
//! straight from the receive buffers (no copy). Unicast frames the NIC
//! receives for another MAC are not the host's and are counted, not judged.
//!
//! Like [`crate::dp::dataloop`]: one `poll` over the two sockets and the waker,
//! batches of [`io::BATCH`] with one `recvmmsg` and at most two `sendmmsg`
//! per batch, control messages ([`Ctl`]) only when woken, counters published
//! every 200 ms; nothing allocates, locks, logs or makes a syscall per
//! packet.
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
//! };
//! std::thread::Builder::new().name("nsx-msegloop".into())
//!     .spawn(move || msegloop::run(lp, tables, ctl_rx, waker, published, started))?;
//! ```
//!
//! No Geneve sockets are needed in this mode. Control is the same channel
//! as the overlay loop (`Ctl::Tables`, `Ctl::Fw`, `Ctl::RestoreFlows`,
//! `Ctl::Trace`, `Ctl::Capture`, `Ctl::Stop` + `waker.wake()`). A trace
//! here is the firewall's alone ([`MsegTrace`]: a frame the host sends, or
//! one the NIC receives, judged by [`Firewall::judge`]); capture is an
//! overlay-mode feature and is refused (the host's own interfaces can be
//! captured with tcpdump in this mode). A config whose tables have no firewall
//! section leaves the running policy in place (before the first one, the
//! failure policy decides).
//!
//! Counters go to the shared [`Published`]: `io` with the `port_*` fields
//! for the `fw_peer` side and `underlay_*` for the NIC side; `firewall`
//! with the firewall's summary ([`fwctl::summary`]) plus this loop's
//! [`MsegCounters`] as `mseg_*`; the packet log is drained like the overlay
//! loop's.

use std::io as stdio;
use std::mem;
use std::net::{SocketAddr, SocketAddrV4, ToSocketAddrs};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use datapath::Tables;
use datapath::offload::VIRTIO_NET_HDR_LEN;
use firewall::{Dir, Firewall, FwVerdict as Verdict, RejectKind};

use crate::config::{GatewaySettings, HostSettings};
use crate::dp::ctl::{self, Ctl, IoCounters, MsegTrace, Published, TraceInput, TraceReply};
use crate::dp::fwctl;
use crate::dp::io::{self, BATCH, RecvBatch, Waker};

const PUBLISH_EVERY: Duration = Duration::from_millis(200);
/// Batches per socket per wake-up, so one busy direction cannot starve the other.
const BATCHES_PER_ROUND: usize = 8;
/// Room for one reject answer (TCP RST or ICMP error quoting the packet).
const ANSWER_BUF: usize = 1024;

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
    /// Opens both sockets (`PACKET_IGNORE_OUTGOING`, `PACKET_VNET_HDR`,
    /// 8 MiB buffers). Sends to the NIC go through its qdisc; sends to the
    /// veth bypass it (a veth has none).
    pub fn open(nic_ifindex: u32, fw_peer_ifindex: u32) -> Result<Sockets, MsegError> {
        let nic = packet_socket(nic_ifindex, false).map_err(|source| MsegError::Socket {
            what: "the NIC",
            ifindex: nic_ifindex,
            source,
        })?;
        let fw = packet_socket(fw_peer_ifindex, true).map_err(|source| MsegError::Socket {
            what: "the firewall veth peer",
            ifindex: fw_peer_ifindex,
            source,
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

/// AF_PACKET socket bound to one interface, with virtio-net headers, not
/// seeing its own transmissions.
fn packet_socket(ifindex: u32, qdisc_bypass: bool) -> stdio::Result<OwnedFd> {
    // Protocol 0 until bound, so no frame of another interface slips in.
    let fd = io::socket(libc::AF_PACKET, libc::SOCK_RAW, 0)?;
    let raw = fd.as_raw_fd();
    io::setsockopt_int(raw, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, 1)?;
    io::setsockopt_int(raw, libc::SOL_PACKET, libc::PACKET_VNET_HDR, 1)?;
    if qdisc_bypass {
        let _ = io::setsockopt_int(raw, libc::SOL_PACKET, libc::PACKET_QDISC_BYPASS, 1);
    }
    io::set_buffers(raw, 8 << 20);
    // SAFETY: all-zero is a valid sockaddr_ll.
    let mut sll: libc::sockaddr_ll = unsafe { mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
    sll.sll_ifindex = i32::try_from(ifindex)
        .map_err(|_| stdio::Error::new(stdio::ErrorKind::InvalidInput, "ifindex out of range"))?;
    // SAFETY: `sll` is a valid sockaddr_ll and its size is passed.
    let rc = unsafe {
        libc::bind(
            raw,
            (&sll as *const libc::sockaddr_ll).cast(),
            mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(stdio::Error::last_os_error());
    }
    Ok(fd)
}

/// What the loop counted (published as `mseg_*` in `Published::firewall`).
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
    /// Frames the kernel dropped on the NIC tap (its buffer was full).
    pub nic_rx_dropped: u64,
}

impl MsegCounters {
    fn export(&self, out: &mut Vec<(String, u64)>) {
        let c = self;
        for (name, v) in [
            ("mseg_in_passed", c.in_passed),
            ("mseg_in_dropped", c.in_dropped),
            ("mseg_in_rejected", c.in_rejected),
            ("mseg_out_passed", c.out_passed),
            ("mseg_out_dropped", c.out_dropped),
            ("mseg_out_rejected", c.out_rejected),
            ("mseg_in_not_for_us", c.in_not_for_us),
            ("mseg_answer_unbuildable", c.answer_unbuildable),
            ("mseg_short", c.short),
            ("mseg_nic_rx_dropped", c.nic_rx_dropped),
        ] {
            out.push((name.to_string(), v));
        }
    }
}

/// Frames to write with one `sendmmsg`, each a single iovec pointing at a
/// buffer owned elsewhere (a receive slot or an answer slot) that stays
/// untouched until [`FrameBatch::send`] returns.
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

/// Preallocated room for the reject answers of one batch, each behind an
/// all-zero virtio-net header (a complete frame).
struct Answers {
    slots: Vec<Box<[u8]>>,
    used: usize,
}

impl std::fmt::Debug for Answers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Answers").field("used", &self.used).finish()
    }
}

impl Answers {
    fn new() -> Answers {
        Answers {
            slots: (0..BATCH)
                .map(|_| vec![0u8; VIRTIO_NET_HDR_LEN + ANSWER_BUF].into_boxed_slice())
                .collect(),
            used: 0,
        }
    }

    /// Builds the answer to `offending` in the next free slot; returns the
    /// slot (header + answer) or `None` if there is no answer to build.
    fn build(&mut self, kind: RejectKind, offending: &[u8]) -> Option<&[u8]> {
        let slot = self.slots.get_mut(self.used)?;
        let n = firewall::reject::build(kind, offending, &mut slot[VIRTIO_NET_HDR_LEN..]).ok()?;
        self.used += 1;
        Some(&slot[..VIRTIO_NET_HDR_LEN + n])
    }
}

/// The thread's state.
struct Shell {
    sockets: Sockets,
    fw: Firewall,
    nic_mac: [u8; 6],
    nic_rx: RecvBatch,
    fw_rx: RecvBatch,
    /// Passed frames, to the other socket.
    forward: FrameBatch,
    /// Reject answers, back to the socket the frame came from.
    back: FrameBatch,
    answers: Answers,
    io: IoCounters,
    c: MsegCounters,
    tables: Arc<Tables>,
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
    let nic_fd = lp.sockets.nic.as_raw_fd();
    let fw_fd = lp.sockets.fw.as_raw_fd();
    let mut shell = Shell {
        sockets: lp.sockets,
        fw: lp.firewall,
        nic_mac: lp.nic_mac,
        nic_rx: RecvBatch::new(io::PORT_RX_BUF),
        fw_rx: RecvBatch::new(io::PORT_RX_BUF),
        forward: FrameBatch::new(),
        back: FrameBatch::new(),
        answers: Answers::new(),
        io: IoCounters::default(),
        c: MsegCounters::default(),
        tables: Arc::clone(&tables),
        epoch,
    };
    shell.set_tables(tables);
    let mut last_publish = Instant::now() - PUBLISH_EVERY;
    let mut poller = io::Poller::new([waker.fd(), nic_fd, fw_fd]);

    loop {
        let [woken, _, _] = poller.wait(100);
        if woken {
            waker.drain();
            loop {
                match ctl.try_recv() {
                    Ok(msg) => {
                        if shell.control(msg) == Flow::Stop {
                            shell.publish(&published);
                            return;
                        }
                    }
                    Err(TryRecvError::Disconnected) => {
                        shell.publish(&published);
                        return;
                    }
                    Err(TryRecvError::Empty) => break,
                }
            }
        }

        for _ in 0..BATCHES_PER_ROUND {
            let busy = shell.drain(Dir::In) | shell.drain(Dir::Out);
            if !busy {
                break;
            }
        }
        let now = shell.now_ns();
        shell.fw.tick(now);

        if last_publish.elapsed() >= PUBLISH_EVERY {
            shell.publish(&published);
            last_publish = Instant::now();
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Continue,
    Stop,
}

impl Shell {
    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// One control message (between batches; may allocate and log).
    fn control(&mut self, msg: Ctl) -> Flow {
        match msg {
            Ctl::Tables(t) => self.set_tables(t),
            Ctl::Fw(req) => {
                let now = self.now_ns();
                let reply = fwctl::answer(Some(&mut self.fw), req.query, now);
                let _ = req.reply.send(reply);
            }
            Ctl::RestoreFlows(flows) => {
                let now = self.now_ns();
                fwctl::restore(&mut self.fw, &flows, now);
            }
            Ctl::Trace(req) => {
                let now = self.now_ns();
                let _ = req.reply.send(self.trace(req.input, now));
            }
            Ctl::Capture(req) => {
                let _ = req.reply.send(Err(
                    "capture is available in overlay mode only (in micro-segmentation mode, \
                     capture the host's interfaces with tcpdump)"
                        .into(),
                ));
            }
            Ctl::Stop => return Flow::Stop,
        }
        Flow::Continue
    }

    /// A firewall-only trace; changes nothing.
    fn trace(&self, input: TraceInput, now_ns: u64) -> Result<TraceReply, String> {
        let (dir, frame) = match input {
            TraceInput::Port(f) => (Dir::Out, f),
            TraceInput::Nic(f) => (Dir::In, f),
            TraceInput::Underlay { .. } => {
                return Err(
                    "this agent runs micro-segmentation: there is no overlay; from \
                     \"underlay\" is a frame as the NIC receives it (no src_tep or vni)"
                        .into(),
                );
            }
        };
        Ok(TraceReply::Microseg(explain(
            &self.fw,
            &self.nic_mac,
            dir,
            &frame,
            now_ns,
        )))
    }

    /// A new config: its firewall policy (if it has one and it changed) is
    /// swapped in; without one the running policy stays.
    fn set_tables(&mut self, tables: Arc<Tables>) {
        match &tables.firewall {
            Some(policy) if !self.fw.policy().is_some_and(|p| Arc::ptr_eq(p, policy)) => {
                let removed = self.fw.set_policy(Arc::clone(policy));
                tracing::info!(
                    version = tables.version,
                    rules = policy.rules().len(),
                    removed,
                    "firewall policy applied"
                );
            }
            Some(_) => {}
            None if self.fw.policy().is_some() => tracing::warn!(
                version = tables.version,
                "config has no firewall section; keeping the running policy"
            ),
            None => {}
        }
        self.tables = tables;
    }

    /// One batch from the NIC (`Dir::In`) or from `fw_peer` (`Dir::Out`).
    /// Returns true if anything was read.
    fn drain(&mut self, dir: Dir) -> bool {
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
        let now = self.epoch.elapsed().as_nanos() as u64;
        self.answers.used = 0;
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
            let Some(frame) = buf.get(VIRTIO_NET_HDR_LEN..) else {
                self.c.short += 1;
                continue;
            };
            if dir == Dir::In && !for_us(frame, &self.nic_mac) {
                self.c.in_not_for_us += 1;
                continue;
            }
            match self.fw.process(dir, frame, now) {
                Verdict::Pass => {
                    self.forward.push(buf);
                    match dir {
                        Dir::In => self.c.in_passed += 1,
                        Dir::Out => self.c.out_passed += 1,
                    }
                }
                Verdict::Drop(_) => match dir {
                    Dir::In => self.c.in_dropped += 1,
                    Dir::Out => self.c.out_dropped += 1,
                },
                Verdict::Reject(kind) => {
                    match dir {
                        Dir::In => self.c.in_rejected += 1,
                        Dir::Out => self.c.out_rejected += 1,
                    }
                    match self.answers.build(kind, frame) {
                        Some(answer) => self.back.push(answer),
                        None => self.c.answer_unbuildable += 1,
                    }
                }
            }
        }
        // The forwarded frames point into `rx`, the answers into
        // `self.answers`: both are sent before either is reused.
        let failed_fwd = self.forward.send(to);
        let failed_back = self.back.send(from);
        match dir {
            Dir::In => {
                self.io.port_tx_failed += failed_fwd;
                self.io.underlay_tx_failed += failed_back;
            }
            Dir::Out => {
                self.io.underlay_tx_failed += failed_fwd;
                self.io.port_tx_failed += failed_back;
            }
        }
        true
    }

    fn publish(&mut self, published: &Mutex<Published>) {
        // One syscall per socket per publish period, never per packet.
        if let Ok(d) = io::packet_drops(self.sockets.fw.as_raw_fd()) {
            self.io.port_rx_dropped += d;
        }
        if let Ok(d) = io::packet_drops(self.sockets.nic.as_raw_fd()) {
            self.c.nic_rx_dropped += d;
        }
        if let Ok(mut s) = published.lock() {
            s.io = self.io;
            s.config_version = self.tables.version;
            s.firewall.clear();
            fwctl::summary(&self.fw, &mut s.firewall);
            self.c.export(&mut s.firewall);
            ctl::drain_log(&mut self.fw, &mut s);
        }
    }
}

/// [`Shell::trace`]'s decision, from the firewall's read-only explanation.
fn explain(fw: &Firewall, nic_mac: &[u8; 6], dir: Dir, frame: &[u8], now_ns: u64) -> MsegTrace {
    if dir == Dir::In && !for_us(frame, nic_mac) {
        let to = ctl::dst_mac(frame);
        let mine = control::MacAddr(*nic_mac);
        return MsegTrace {
            dir,
            verdict: None,
            detail: format!("unicast to {to} is not for this host (NIC MAC {mine}): ignored"),
            answer: None,
        };
    }
    let parsed = firewall::packet::parse(frame);
    let d = fw.judge(dir, &parsed, now_ns);
    let (verdict, why) = (d.verdict, d.describe(fw).to_string());
    let answer = match verdict {
        Verdict::Reject(kind) => {
            let mut buf = vec![0u8; ANSWER_BUF];
            firewall::reject::build(kind, frame, &mut buf)
                .ok()
                .map(|n| {
                    buf.truncate(n);
                    buf
                })
        }
        _ => None,
    };
    MsegTrace {
        dir,
        verdict: Some(verdict),
        detail: why,
        answer,
    }
}

/// Whether a frame the NIC received is addressed to the host: its MAC or a
/// group address (broadcast, multicast).
fn for_us(frame: &[u8], mac: &[u8; 6]) -> bool {
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
    fn only_our_unicast_and_group_frames_are_for_us() {
        let mac = [6, 0, 0, 0, 0, 1];
        let mut f = [0u8; 14];
        f[..6].copy_from_slice(&mac);
        assert!(for_us(&f, &mac));
        f[..6].copy_from_slice(&[0xff; 6]);
        assert!(for_us(&f, &mac));
        f[..6].copy_from_slice(&[0x01, 0x00, 0x5e, 0, 0, 1]);
        assert!(for_us(&f, &mac));
        f[..6].copy_from_slice(&[6, 0, 0, 0, 0, 2]);
        assert!(!for_us(&f, &mac));
        assert!(for_us(&[1, 2], &mac));
    }

    #[test]
    fn trace_judges_like_the_loop_without_changing_anything() {
        let mac = [6, 0, 0, 0, 0, 1];
        let mut fw = Firewall::new(16, firewall::FailurePolicy::FailClosed);
        let policy = control::FirewallConfig {
            default_rule: control::DefaultRule {
                id: 1002,
                action: control::Action::Reject,
                log: false,
            },
            ..control::FirewallConfig::allow_all()
        };
        fw.set_policy(Arc::new(
            firewall::Policy::compile(&policy).unwrap_or_else(|e| panic!("policy: {e}")),
        ));
        // A UDP datagram to the host's MAC.
        let mut f = vec![0u8; 14 + 20 + 8];
        f[..6].copy_from_slice(&mac);
        f[6..12].copy_from_slice(&[6, 0, 0, 0, 0, 2]);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[16..18].copy_from_slice(&28u16.to_be_bytes());
        f[22] = 64;
        f[23] = 17;
        f[26..30].copy_from_slice(&[10, 0, 0, 2]);
        f[30..34].copy_from_slice(&[10, 0, 0, 1]);
        f[34..36].copy_from_slice(&5000u16.to_be_bytes());
        f[36..38].copy_from_slice(&53u16.to_be_bytes());
        f[38..40].copy_from_slice(&8u16.to_be_bytes());
        let t = explain(&fw, &mac, Dir::In, &f, 1);
        assert_eq!(
            t.verdict,
            Some(fw.judge(Dir::In, &firewall::packet::parse(&f), 1).verdict)
        );
        assert!(matches!(t.verdict, Some(Verdict::Reject(_))), "{t:?}");
        assert!(
            t.detail
                .starts_with("new inbound connection udp 10.0.0.2:5000")
        );
        let summary = datapath::trace::summarize(&t.answer.clone().unwrap_or_default());
        assert!(
            summary.contains("icmp destination unreachable code 3"),
            "{summary}"
        );
        assert_eq!(
            fw.counters().drops.iter().sum::<u64>(),
            0,
            "nothing counted"
        );
        assert_eq!(
            fw.process(Dir::In, &f, 1),
            t.verdict.unwrap_or(Verdict::Pass)
        );
        // Unicast to another MAC is not the host's.
        f[..6].copy_from_slice(&[6, 0, 0, 0, 0, 9]);
        let t = explain(&fw, &mac, Dir::In, &f, 1);
        assert_eq!(t.verdict, None);
        assert!(t.detail.contains("not for this host"));
    }

    #[test]
    fn answers_fill_slots_and_stop_at_capacity() {
        let mut a = Answers::new();
        // Not IPv4: nothing to answer, no slot used.
        assert!(a.build(RejectKind::TcpRst, &[0u8; 20]).is_none());
        assert_eq!(a.used, 0);
        a.used = BATCH;
        assert!(a.build(RejectKind::TcpRst, &[0u8; 60]).is_none());
    }
}
