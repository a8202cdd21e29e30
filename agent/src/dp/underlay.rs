//! Geneve over the kernel's UDP stack, in batches.
//!
//! Sending: a pool of UDP sockets on the underlay address, each bound to a
//! source port from one slice of 49152-65535; the pipeline's inner-flow hash
//! picks the slice, so a flow keeps one source port. Consecutive datagrams
//! of one flow to one endpoint leave as a single `sendmmsg` entry with
//! `UDP_SEGMENT` (UDP GSO): the kernel builds one super-packet and the
//! outer headers, checksums and segmentation happen once per 64 KiB, in the
//! NIC or at the last moment in software. Receiving: `UDP_GRO` on the
//! Geneve socket hands back such super-packets (and coalesced trains) whole,
//! with the segment size in a control message.

use std::io;
use std::mem;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};

use datapath::TxQueue;

use crate::dp::io::{
    SendResult, UDP_GRO, UDP_SEGMENT, send_entries, setsockopt_int, sockaddr, socket,
};

/// Source ports in the pool (one socket each).
pub const POOL_SIZE: usize = 64;
const PORT_BASE: u16 = 49152;
const PORT_SPAN: usize = 16384;
/// Most segments per GSO send (the kernel's UDP_MAX_SEGMENTS is 128).
const MAX_GSO_SEGMENTS: usize = 64;
/// Largest GSO payload (IPv4 total length limit minus headers, with margin).
const MAX_GSO_BYTES: usize = 65000;
/// Outer IPv4 + UDP headers the pipeline writes and the kernel rewrites.
const OUTER_IP_UDP: usize = geneve::outer::GENEVE_START;

/// The sending sockets.
#[derive(Debug)]
pub struct UdpPool {
    socks: Vec<OwnedFd>,
    ports: Vec<u16>,
}

impl UdpPool {
    /// Binds [`POOL_SIZE`] sockets on `ip`, one per slice of the source
    /// port range (the first free port of each slice).
    pub fn bind(ip: Ipv4Addr) -> io::Result<UdpPool> {
        let slice = PORT_SPAN / POOL_SIZE;
        let mut socks = Vec::with_capacity(POOL_SIZE);
        let mut ports = Vec::with_capacity(POOL_SIZE);
        for k in 0..POOL_SIZE {
            let first = PORT_BASE as usize + k * slice;
            let mut bound = None;
            let mut last_err = None;
            for port in first..first + slice {
                // The pool's slices end within the port space.
                let Ok(port) = u16::try_from(port) else { break };
                match bind_sender(ip, port) {
                    Ok(fd) => {
                        bound = Some((fd, port));
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::AddrInUse => last_err = Some(e),
                    Err(e) => return Err(e),
                }
            }
            let (fd, port) = bound.ok_or_else(|| {
                last_err.unwrap_or_else(|| io::Error::other("no free source port"))
            })?;
            socks.push(fd);
            ports.push(port);
        }
        Ok(UdpPool { socks, ports })
    }

    /// Socket index for a source port chosen by the pipeline.
    pub fn index(&self, src_port: u16) -> usize {
        let offset = usize::from(src_port.saturating_sub(PORT_BASE));
        (offset * POOL_SIZE / PORT_SPAN).min(self.socks.len() - 1)
    }

    /// The source ports actually bound, by slice.
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }
}

fn bind_sender(ip: Ipv4Addr, port: u16) -> io::Result<OwnedFd> {
    let fd = socket(libc::AF_INET, libc::SOCK_DGRAM, 0)?;
    let raw = fd.as_raw_fd();
    // DF on every packet, without the kernel's PMTU refusing our sizes.
    setsockopt_int(
        raw,
        libc::IPPROTO_IP,
        libc::IP_MTU_DISCOVER,
        libc::IP_PMTUDISC_PROBE,
    )?;
    setsockopt_int(raw, libc::IPPROTO_IP, libc::IP_TTL, 64)?;
    crate::dp::io::set_buffers(raw, 4 << 20);
    let sa = sockaddr(ip, port);
    // SAFETY: `sa` is a valid sockaddr_in and its size is passed.
    let rc = unsafe {
        libc::bind(
            raw,
            (&sa as *const libc::sockaddr_in).cast(),
            crate::sys::socklen_of::<libc::sockaddr_in>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// One GSO send: a run of equal-size datagrams (the last may be shorter).
#[derive(Debug, Clone, Copy)]
struct Group {
    sock: usize,
    dst: Ipv4Addr,
    src_port: u16,
    first: usize,
    count: usize,
    seg_len: usize,
    bytes: usize,
    /// A shorter segment ended the run.
    closed: bool,
}

/// Control-message buffer for one `UDP_SEGMENT` (aligned for `cmsghdr`).
type CmsgBuf = [u64; 4];

/// Reusable arrays for GSO sends; sized once, never grown on the packet path.
pub struct GsoSender {
    groups: Vec<Group>,
    iovs: Vec<libc::iovec>,
    addrs: Vec<libc::sockaddr_in>,
    cmsgs: Vec<CmsgBuf>,
    hdrs: Vec<libc::mmsghdr>,
}

// SAFETY: the raw pointers are rebuilt before every use; nothing is shared.
unsafe impl Send for GsoSender {}

impl std::fmt::Debug for GsoSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GsoSender").finish()
    }
}

impl GsoSender {
    pub fn new(capacity: usize) -> GsoSender {
        GsoSender {
            groups: Vec::with_capacity(capacity),
            iovs: Vec::with_capacity(capacity),
            addrs: Vec::with_capacity(capacity),
            cmsgs: vec![[0; 4]; capacity],
            hdrs: Vec::with_capacity(capacity),
        }
    }

    /// Sends every packet of `q` (complete outer IPv4 packets from the
    /// pipeline; the kernel rewrites the outer IPv4/UDP headers) and clears it.
    pub fn send(&mut self, pool: &UdpPool, q: &mut TxQueue) -> SendResult {
        self.group(pool, q);
        let mut res = SendResult::default();
        let mut g = 0;
        while g < self.groups.len() {
            // A run of groups on one socket goes out in one sendmmsg.
            let sock = self.groups[g].sock;
            let end = self.groups[g..]
                .iter()
                .position(|x| x.sock != sock)
                .map_or(self.groups.len(), |n| g + n);
            self.build_headers(g, end);
            let fd = pool.socks[sock].as_raw_fd();
            let groups = &self.groups[g..end];
            let mut failed = 0;
            // SAFETY: the headers point at `self`'s arrays and at packets
            // in `q`, all alive and unchanged until the call returns.
            unsafe {
                send_entries(fd, &mut self.hdrs, |k| {
                    failed += groups.get(k).map_or(0, |grp| grp.count);
                })
            };
            let total: usize = groups.iter().map(|grp| grp.count).sum();
            res.sent += total - failed;
            res.failed += failed;
            g = end;
        }
        q.clear();
        res
    }

    fn group(&mut self, pool: &UdpPool, q: &TxQueue) {
        self.groups.clear();
        self.iovs.clear();
        for (pkt, dst) in q.iter() {
            let Some(payload) = pkt.get(OUTER_IP_UDP..) else {
                continue;
            };
            let src_port = u16::from_be_bytes([pkt[20], pkt[21]]);
            let len = payload.len();
            self.iovs.push(libc::iovec {
                iov_base: payload.as_ptr() as *mut libc::c_void,
                iov_len: len,
            });
            let iov = self.iovs.len() - 1;
            if let Some(g) = self.groups.last_mut() {
                let fits = g.dst == dst
                    && g.src_port == src_port
                    && !g.closed
                    && len <= g.seg_len
                    && g.count < MAX_GSO_SEGMENTS
                    && g.bytes + len <= MAX_GSO_BYTES;
                if fits {
                    g.count += 1;
                    g.bytes += len;
                    g.closed = len < g.seg_len;
                    continue;
                }
            }
            self.groups.push(Group {
                sock: pool.index(src_port),
                dst,
                src_port,
                first: iov,
                count: 1,
                seg_len: len,
                bytes: len,
                closed: false,
            });
        }
    }

    fn build_headers(&mut self, start: usize, end: usize) {
        self.hdrs.clear();
        self.addrs.clear();
        for (k, g) in self.groups[start..end].iter().enumerate() {
            self.addrs.push(sockaddr(g.dst, geneve::GENEVE_PORT));
            // SAFETY: all-zero is a valid mmsghdr.
            let mut h: libc::mmsghdr = unsafe { mem::zeroed() };
            h.msg_hdr.msg_iov = &mut self.iovs[g.first];
            h.msg_hdr.msg_iovlen = g.count;
            h.msg_hdr.msg_name = (&mut self.addrs[k] as *mut libc::sockaddr_in).cast();
            h.msg_hdr.msg_namelen = crate::sys::socklen_of::<libc::sockaddr_in>();
            if g.count > 1 {
                let buf = &mut self.cmsgs[k];
                *buf = [0; 4];
                h.msg_hdr.msg_control = buf.as_mut_ptr().cast();
                // SAFETY: CMSG_SPACE is a pure size computation.
                h.msg_hdr.msg_controllen = unsafe { libc::CMSG_SPACE(2) } as usize;
                // SAFETY: msg_control points at a zeroed, aligned buffer of
                // at least CMSG_SPACE(2) bytes, so the first header fits.
                unsafe {
                    let c = libc::CMSG_FIRSTHDR(&h.msg_hdr);
                    (*c).cmsg_level = libc::SOL_UDP;
                    (*c).cmsg_type = UDP_SEGMENT;
                    (*c).cmsg_len = libc::CMSG_LEN(2) as usize;
                    #[allow(
                        clippy::cast_possible_truncation,
                        reason = "a segment is one underlay frame, below 64 KiB"
                    )]
                    let seg = g.seg_len as u16;
                    std::ptr::copy_nonoverlapping(
                        seg.to_ne_bytes().as_ptr(),
                        libc::CMSG_DATA(c),
                        2,
                    );
                }
            }
            self.hdrs.push(h);
        }
    }
}

/// Turns on GRO for the receiving Geneve socket.
pub fn enable_gro(fd: &OwnedFd) -> io::Result<()> {
    setsockopt_int(fd.as_raw_fd(), libc::SOL_UDP, UDP_GRO, 1)
}
