//! Bounded packet capture inside the datapath thread (the local API's
//! `capture`).
//!
//! A [`CaptureRequest`] arms a [`Capture`]: the thread then copies the
//! frames seen at one point — the port (Ethernet frames from and to the
//! instance), the underlay (outer IPv4 packets received and sent), or one
//! logical switch (inner Ethernet frames whose VNI is that switch's, at
//! either point, either direction) — into a buffer allocated when the
//! capture is armed, never grown. While nothing is armed the packet path
//! pays one `bool` test per batch or frame: no allocation, lock or syscall.
//! The capture ends when `count` frames are in, the byte budget is spent
//! or the deadline passes (checked once per loop round, so up to one poll
//! interval late); the frames go back on the request's channel.
//!
//! Timestamps are Unix nanoseconds: the loop's monotonic clock plus the
//! wall-clock offset taken when the capture was armed.
//!
//! What is stored is what the datapath handles: port frames as Ethernet;
//! underlay frames as outer IPv4 packets. Sent packets are the ones the
//! pipeline built (outer IPv4/UDP/Geneve; with a kernel UDP socket the
//! kernel writes its own UDP source port and checksum on the wire). A
//! received datagram comes from the socket without its IPv4/UDP headers,
//! so a plausible pair is rebuilt around it (source = the sending endpoint,
//! destination = our underlay address, UDP 6081 -> 6081, TTL 64, DF, UDP
//! checksum 0) so that tcpdump and tshark decode the Geneve inside.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::time::{Duration, SystemTime};

use geneve::{ipv4, udp};

/// Most frame bytes one capture holds (its buffer is allocated up front,
/// `min(count * snaplen, this)`); a capture ends early when it is full.
pub const MAX_CAPTURE_BYTES: usize = 16 << 20;
/// Bytes of the IPv4 + UDP headers rebuilt around a received datagram.
const OUTER_LEN: usize = ipv4::MIN_HEADER_LEN + udp::HEADER_LEN;

/// Where frames are taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapturePoint {
    /// The overlay port: Ethernet frames from (rx) and to (tx) the instance.
    Port,
    /// The underlay: outer IPv4 packets received (rx) and sent (tx).
    Underlay,
    /// One logical switch (by VNI): its inner Ethernet frames at the port
    /// and in Geneve packets, both directions.
    Switch(u32),
}

/// Which way a frame was going, relative to the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptureDir {
    Rx,
    Tx,
}

impl CaptureDir {
    pub fn name(self) -> &'static str {
        match self {
            CaptureDir::Rx => "rx",
            CaptureDir::Tx => "tx",
        }
    }
}

/// Where a frame was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeenAt {
    Port,
    Underlay,
}

impl SeenAt {
    pub fn name(self) -> &'static str {
        match self {
            SeenAt::Port => "port",
            SeenAt::Underlay => "underlay",
        }
    }
}

/// A request from the control side.
#[derive(Debug)]
pub struct CaptureRequest {
    pub point: CapturePoint,
    /// Frames to capture (at least 1).
    pub count: usize,
    /// Bytes kept of each frame (at least 1).
    pub snaplen: usize,
    pub timeout: Duration,
    /// Set by the API when the client hangs up (nsxcli interrupted): the
    /// capture ends at the next loop round instead of at its count or timeout.
    pub cancel: Arc<AtomicBool>,
    pub reply: Sender<Result<CaptureReply, CaptureError>>,
}

/// Why a capture request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CaptureError {
    /// One capture at a time per agent.
    #[error("a capture is already running on this agent")]
    Busy,
    /// Micro-segmentation has no overlay to capture on.
    #[error(
        "capture is available in overlay mode only (in micro-segmentation mode, \
         capture the host's interfaces with tcpdump)"
    )]
    OverlayOnly,
}

/// One captured frame; its bytes are `CaptureReply::bytes[off..off + len]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    pub ts_unix_ns: u64,
    pub dir: CaptureDir,
    pub at: SeenAt,
    /// Length on the wire (more than `len` when cut at the snap length).
    pub orig_len: usize,
    off: usize,
    pub len: usize,
}

/// Why a capture ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Count,
    Timeout,
    BufferFull,
    /// The datapath thread stopped.
    Stopped,
    /// The client that asked went away.
    Cancelled,
}

impl Ended {
    pub fn name(self) -> &'static str {
        match self {
            Ended::Count => "count",
            Ended::Timeout => "timeout",
            Ended::BufferFull => "buffer_full",
            Ended::Stopped => "stopped",
            Ended::Cancelled => "cancelled",
        }
    }
}

/// A finished capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureReply {
    pub point: CapturePoint,
    pub records: Vec<Record>,
    pub bytes: Vec<u8>,
    /// Frames cut at the snap length.
    pub truncated: u64,
    pub ended: Ended,
}

impl CaptureReply {
    /// The stored bytes of `r`.
    pub fn data(&self, r: &Record) -> &[u8] {
        self.bytes.get(r.off..r.off + r.len).unwrap_or_default()
    }
}

/// The capture state of one datapath thread.
#[derive(Debug, Default)]
pub struct Capture {
    armed: Option<Armed>,
    /// The VNI of the port's switch (for switch captures of port frames).
    port_vni: Option<u32>,
    /// Our underlay address (destination of rebuilt received packets).
    underlay_ip: Option<Ipv4Addr>,
}

#[derive(Debug)]
struct Armed {
    point: CapturePoint,
    want: usize,
    snaplen: usize,
    /// Bytes `bytes` may hold (allocated up front).
    budget: usize,
    deadline_ns: u64,
    /// Unix ns = loop ns + this.
    unix_offset_ns: i128,
    records: Vec<Record>,
    bytes: Vec<u8>,
    truncated: u64,
    /// Set when the count or the buffer is reached: nothing more is taken.
    ended: Option<Ended>,
    cancel: Arc<AtomicBool>,
    reply: Sender<Result<CaptureReply, CaptureError>>,
}

impl Capture {
    /// Facts of the current tables the hooks need.
    pub fn set_tables(&mut self, port_vni: Option<u32>, underlay_ip: Ipv4Addr) {
        self.port_vni = port_vni;
        self.underlay_ip = Some(underlay_ip);
    }

    /// Arms `req` at loop time `now_ns` (allocates its buffer now). A
    /// second capture while one runs is refused.
    pub fn arm(&mut self, req: CaptureRequest, now_ns: u64) {
        if self.armed.is_some() {
            let _ = req.reply.send(Err(CaptureError::Busy));
            return;
        }
        let want = req.count.max(1);
        let snaplen = req.snaplen.max(1);
        let budget = want.saturating_mul(snaplen).min(MAX_CAPTURE_BYTES);
        let unix_now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let timeout_ns = u64::try_from(req.timeout.as_nanos()).unwrap_or(u64::MAX);
        self.armed = Some(Armed {
            point: req.point,
            want,
            snaplen,
            budget,
            deadline_ns: now_ns.saturating_add(timeout_ns),
            unix_offset_ns: i128::try_from(unix_now).unwrap_or(i128::MAX) - i128::from(now_ns),
            records: Vec::with_capacity(want),
            bytes: Vec::with_capacity(budget),
            truncated: 0,
            ended: None,
            cancel: req.cancel,
            reply: req.reply,
        });
    }

    /// True while frames are being taken: the packet path's only test.
    #[inline]
    pub fn active(&self) -> bool {
        self.armed.as_ref().is_some_and(|a| a.ended.is_none())
    }

    /// Once per loop round: replies when the capture is complete, its
    /// deadline has passed or its client went away.
    pub fn poll(&mut self, now_ns: u64) {
        let Some(a) = &self.armed else {
            return;
        };
        let ended = match a.ended {
            _ if a.cancel.load(Ordering::Relaxed) => Ended::Cancelled,
            Some(e) => e,
            None if now_ns >= a.deadline_ns => Ended::Timeout,
            None => return,
        };
        self.finish(ended);
    }

    /// Ends a running capture now (the thread is stopping).
    pub fn stop(&mut self) {
        if self.armed.is_some() {
            self.finish(Ended::Stopped);
        }
    }

    fn finish(&mut self, default: Ended) {
        let Some(a) = self.armed.take() else {
            return;
        };
        let reply = CaptureReply {
            point: a.point,
            records: a.records,
            bytes: a.bytes,
            truncated: a.truncated,
            ended: a.ended.unwrap_or(default),
        };
        let _ = a.reply.send(Ok(reply));
    }

    /// A port frame (Ethernet), received from or sent to the instance.
    pub fn port(&mut self, dir: CaptureDir, frame: &[u8], now_ns: u64) {
        let port_vni = self.port_vni;
        let Some(a) = self.armed.as_mut() else {
            return;
        };
        let wanted = match a.point {
            CapturePoint::Port => true,
            CapturePoint::Switch(vni) => port_vni == Some(vni),
            CapturePoint::Underlay => false,
        };
        if wanted {
            a.take(dir, SeenAt::Port, &[], frame, now_ns);
        }
    }

    /// A Geneve datagram (UDP payload) received from `src`.
    pub fn underlay_rx(&mut self, src: Ipv4Addr, datagram: &[u8], now_ns: u64) {
        let dst = self.underlay_ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
        let Some(a) = self.armed.as_mut() else {
            return;
        };
        match a.point {
            CapturePoint::Underlay => {
                let mut outer = [0u8; OUTER_LEN];
                if rebuild_outer(&mut outer, src, dst, datagram.len()).is_some() {
                    a.take(CaptureDir::Rx, SeenAt::Underlay, &outer, datagram, now_ns);
                }
            }
            CapturePoint::Switch(vni) => {
                if let Some(inner) = inner_of(datagram, vni) {
                    a.take(CaptureDir::Rx, SeenAt::Underlay, &[], inner, now_ns);
                }
            }
            CapturePoint::Port => {}
        }
    }

    /// An outer IPv4 packet the pipeline built for the underlay.
    pub fn underlay_tx(&mut self, packet: &[u8], now_ns: u64) {
        let Some(a) = self.armed.as_mut() else {
            return;
        };
        match a.point {
            CapturePoint::Underlay => a.take(CaptureDir::Tx, SeenAt::Underlay, &[], packet, now_ns),
            CapturePoint::Switch(vni) => {
                if let Some(inner) = packet.get(OUTER_LEN..).and_then(|d| inner_of(d, vni)) {
                    a.take(CaptureDir::Tx, SeenAt::Underlay, &[], inner, now_ns);
                }
            }
            CapturePoint::Port => {}
        }
    }
}

impl Armed {
    /// Stores `head` + `body` (cut at the snap length) if there is room.
    fn take(&mut self, dir: CaptureDir, at: SeenAt, head: &[u8], body: &[u8], now_ns: u64) {
        if self.ended.is_some() {
            return;
        }
        let orig_len = head.len() + body.len();
        let len = orig_len.min(self.snaplen);
        let room = self.budget.saturating_sub(self.bytes.len());
        if len > room {
            self.ended = Some(Ended::BufferFull);
            return;
        }
        let off = self.bytes.len();
        let from_head = len.min(head.len());
        self.bytes.extend_from_slice(&head[..from_head]);
        self.bytes.extend_from_slice(&body[..len - from_head]);
        if len < orig_len {
            self.truncated += 1;
        }
        let ts = i128::from(now_ns) + self.unix_offset_ns;
        self.records.push(Record {
            ts_unix_ns: u64::try_from(ts).unwrap_or(0),
            dir,
            at,
            orig_len,
            off,
            len,
        });
        if self.records.len() >= self.want {
            self.ended = Some(Ended::Count);
        }
    }
}

/// The inner frame of a Geneve datagram on `vni`.
fn inner_of(datagram: &[u8], vni: u32) -> Option<&[u8]> {
    let p = geneve::geneve::parse(datagram).ok()?;
    (p.vni == vni).then_some(p.payload)
}

/// IPv4 + UDP headers for a received Geneve datagram of `len` bytes.
fn rebuild_outer(
    buf: &mut [u8; OUTER_LEN],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    len: usize,
) -> Option<()> {
    let port = geneve::geneve::GENEVE_PORT;
    udp::emit_header(&mut buf[ipv4::MIN_HEADER_LEN..], port, port, len).ok()?;
    ipv4::emit_header(
        &mut buf[..],
        src,
        dst,
        ipv4::PROTO_UDP,
        udp::HEADER_LEN + len,
        geneve::outer::OUTER_TTL,
        true,
        0,
    )
    .ok()?;
    Some(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::mpsc::{Receiver, channel};

    use super::*;

    const TEP: Ipv4Addr = Ipv4Addr::new(10, 99, 3, 44);
    const ME: Ipv4Addr = Ipv4Addr::new(10, 99, 3, 248);

    fn armed(
        point: CapturePoint,
        count: usize,
        snaplen: usize,
    ) -> (Capture, Receiver<Result<CaptureReply, CaptureError>>) {
        let mut c = Capture::default();
        c.set_tables(Some(0x238c), ME);
        let (tx, rx) = channel();
        c.arm(
            CaptureRequest {
                point,
                count,
                snaplen,
                timeout: Duration::from_millis(500),
                cancel: Arc::default(),
                reply: tx,
            },
            1_000,
        );
        (c, rx)
    }

    #[test]
    fn a_cancelled_capture_ends_at_the_next_round_and_frees_the_slot() {
        let mut c = Capture::default();
        c.set_tables(Some(0x238c), ME);
        let (tx, rx) = channel();
        let cancel = Arc::new(AtomicBool::new(false));
        let req = |cancel: &Arc<AtomicBool>, reply| CaptureRequest {
            point: CapturePoint::Port,
            count: 10,
            snaplen: 64,
            timeout: Duration::from_secs(60),
            cancel: Arc::clone(cancel),
            reply,
        };
        c.arm(req(&cancel, tx), 1_000);
        c.port(CaptureDir::Rx, &[0xab; 60], 2_000);
        c.poll(3_000);
        assert!(rx.try_recv().is_err(), "still running");
        cancel.store(true, Ordering::Relaxed);
        c.poll(4_000);
        let r = rx.try_recv().unwrap().unwrap();
        assert_eq!(r.ended, Ended::Cancelled);
        assert_eq!(r.ended.name(), "cancelled");
        assert_eq!(r.records.len(), 1, "what was taken is still returned");
        assert!(!c.active());
        let (tx2, rx2) = channel();
        c.arm(req(&Arc::default(), tx2), 5_000);
        assert!(c.active(), "the next capture may run at once");
        assert!(rx2.try_recv().is_err());
    }

    fn geneve(vni: u32, inner: &[u8]) -> Vec<u8> {
        let mut g = vec![0u8; 16 + inner.len()];
        geneve::geneve::emit_vmware(&mut g, vni, 44).unwrap();
        g[16..].copy_from_slice(inner);
        g
    }

    #[test]
    fn nothing_is_taken_while_unarmed() {
        let mut c = Capture::default();
        assert!(!c.active());
        c.port(CaptureDir::Rx, &[0u8; 60], 1);
        c.underlay_rx(TEP, &[0u8; 60], 1);
        c.poll(u64::MAX);
        assert!(!c.active());
    }

    #[test]
    fn port_capture_ends_at_count_with_unix_timestamps() {
        let (mut c, rx) = armed(CapturePoint::Port, 2, 65535);
        assert!(c.active());
        c.underlay_rx(TEP, &geneve(0x238c, &[1u8; 60]), 1_100);
        c.port(CaptureDir::Rx, &[1u8; 60], 1_200);
        c.port(CaptureDir::Tx, &[2u8; 42], 1_300);
        assert!(!c.active(), "count reached: nothing more is taken");
        c.port(CaptureDir::Tx, &[3u8; 42], 1_400);
        c.poll(1_500);
        let r = rx.try_recv().unwrap().unwrap();
        assert_eq!(r.ended, Ended::Count);
        assert_eq!(r.records.len(), 2);
        assert_eq!(r.records[0].dir, CaptureDir::Rx);
        assert_eq!(r.data(&r.records[0]), &[1u8; 60][..]);
        assert_eq!(r.data(&r.records[1]), &[2u8; 42][..]);
        assert_eq!(r.records[1].ts_unix_ns - r.records[0].ts_unix_ns, 100);
        let now = crate::sys::saturating_nanos(
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap(),
        );
        assert!(now - r.records[0].ts_unix_ns < 10_000_000_000);
        // Disarmed: another capture may start.
        let (tx, rx2) = channel();
        c.arm(
            CaptureRequest {
                point: CapturePoint::Port,
                count: 1,
                snaplen: 10,
                timeout: Duration::from_secs(1),
                cancel: Arc::default(),
                reply: tx,
            },
            2_000,
        );
        assert!(c.active());
        assert!(rx2.try_recv().is_err());
    }

    #[test]
    fn deadline_and_second_capture() {
        let (mut c, rx) = armed(CapturePoint::Underlay, 10, 100);
        let (tx, busy) = channel();
        c.arm(
            CaptureRequest {
                point: CapturePoint::Port,
                count: 1,
                snaplen: 1,
                timeout: Duration::from_secs(1),
                cancel: Arc::default(),
                reply: tx,
            },
            1_000,
        );
        assert!(busy.try_recv().unwrap().is_err(), "one capture at a time");
        c.underlay_tx(&[0x45; 200], 2_000);
        c.poll(1_000 + 499_999_999);
        assert!(rx.try_recv().is_err(), "not yet");
        c.poll(1_000 + 500_000_000);
        let r = rx.try_recv().unwrap().unwrap();
        assert_eq!(r.ended, Ended::Timeout);
        assert_eq!(r.records.len(), 1);
        assert_eq!(r.records[0].len, 100);
        assert_eq!(r.records[0].orig_len, 200);
        assert_eq!(r.truncated, 1);
    }

    #[test]
    fn received_datagrams_get_outer_headers_tshark_can_decode() {
        let (mut c, rx) = armed(CapturePoint::Underlay, 1, 65535);
        let g = geneve(0x238c, &[7u8; 64]);
        c.underlay_rx(TEP, &g, 1_100);
        c.poll(1_200);
        let r = rx.try_recv().unwrap().unwrap();
        let pkt = r.data(&r.records[0]);
        assert_eq!(pkt.len(), 28 + g.len());
        let ip = ipv4::Packet::new_checked(pkt).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!((ip.src(), ip.dst()), (TEP, ME));
        assert_eq!(usize::from(ip.total_len()), pkt.len());
        let u = udp::Packet::new_checked(ip.payload()).unwrap();
        assert_eq!((u.src_port(), u.dst_port()), (6081, 6081));
        assert_eq!(u.payload(), &g[..]);
        assert_eq!(geneve::geneve::parse(u.payload()).unwrap().vni, 0x238c);
    }

    #[test]
    fn switch_capture_takes_inner_frames_of_its_vni_only() {
        let (mut c, rx) = armed(CapturePoint::Switch(0x2388), 3, 65535);
        c.underlay_rx(TEP, &geneve(0x238c, &[1u8; 60]), 1_100);
        c.underlay_rx(TEP, &geneve(0x2388, &[2u8; 60]), 1_200);
        // The port is on 0x238c: its frames are not this switch's.
        c.port(CaptureDir::Rx, &[3u8; 60], 1_300);
        let mut tx = vec![0u8; 28];
        tx.extend_from_slice(&geneve(0x2388, &[4u8; 70]));
        c.underlay_tx(&tx, 1_400);
        c.underlay_tx(&[0u8; 10], 1_500);
        c.poll(1_600);
        assert!(rx.try_recv().is_err(), "two of three");
        c.set_tables(Some(0x2388), ME);
        c.port(CaptureDir::Tx, &[5u8; 60], 1_700);
        c.poll(1_800);
        let r = rx.try_recv().unwrap().unwrap();
        let got: Vec<(CaptureDir, SeenAt, u8)> = r
            .records
            .iter()
            .map(|x| (x.dir, x.at, r.data(x)[0]))
            .collect();
        assert_eq!(
            got,
            vec![
                (CaptureDir::Rx, SeenAt::Underlay, 2),
                (CaptureDir::Tx, SeenAt::Underlay, 4),
                (CaptureDir::Tx, SeenAt::Port, 5),
            ]
        );
        assert_eq!(r.data(&r.records[1]).len(), 70);
    }

    #[test]
    fn a_full_buffer_ends_the_capture() {
        let (mut c, rx) = armed(CapturePoint::Port, 3, 100);
        // Budget: 3 * 100 bytes.
        c.port(CaptureDir::Rx, &[1u8; 100], 1_100);
        c.port(CaptureDir::Rx, &[1u8; 100], 1_100);
        c.port(CaptureDir::Rx, &[1u8; 100], 1_100);
        c.poll(1_200);
        assert_eq!(rx.try_recv().unwrap().unwrap().ended, Ended::Count);
        let (mut c, rx) = armed(CapturePoint::Port, 10_000, 65535);
        let big = vec![0u8; 65535];
        for _ in 0..300 {
            c.port(CaptureDir::Rx, &big, 1_100);
        }
        c.poll(1_200);
        let r = rx.try_recv().unwrap().unwrap();
        assert_eq!(r.ended, Ended::BufferFull);
        assert_eq!(r.records.len(), MAX_CAPTURE_BYTES / 65535);
        assert!(r.bytes.len() <= MAX_CAPTURE_BYTES);
    }
}
