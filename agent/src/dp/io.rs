//! Batched packet I/O for the datapath thread, straight on `libc`:
//! an AF_PACKET socket on the agent's end of the overlay veth (frames to and
//! from the instance, with virtio-net offload headers), the UDP socket on
//! the underlay address port 6081 (Geneve in; the kernel validates the outer
//! IPv4/UDP), receive/send batches, and the waker. Geneve out lives in
//! [`crate::dp::underlay`]. Every call moves a whole batch:
//! `recvmmsg`/`sendmmsg`, never a syscall per packet.

use std::io;
use std::mem;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use datapath::TxQueue;
use datapath::offload::VIRTIO_NET_HDR_LEN;

use crate::sys::c_u16;

/// `UDP_SEGMENT` / `UDP_GRO` (linux/udp.h; not in libc for glibc targets):
/// the Geneve sockets' GSO sends ([`crate::dp::underlay`]) and GRO receives.
pub const UDP_SEGMENT: libc::c_int = 103;
pub const UDP_GRO: libc::c_int = 104;

/// Frames per batch.
pub const BATCH: usize = 64;
/// Receive buffer per Geneve datagram: the largest jumbo underlay packet fits.
pub const RX_BUF: usize = 9216 + 64;
/// Receive buffer per port frame: a 64 KiB TSO super-frame plus its
/// virtio-net header.
pub const PORT_RX_BUF: usize = 65536 + 256;

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

pub(crate) fn setsockopt_int(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `value` outlives the call and its size is passed.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            crate::sys::socklen_of::<libc::c_int>(),
        )
    })
    .map(drop)
}

/// Large socket buffers absorb bursts; FORCE needs CAP_NET_ADMIN, so fall
/// back to the capped variant.
pub(crate) fn set_buffers(fd: RawFd, bytes: libc::c_int) {
    for (force, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        if setsockopt_int(fd, libc::SOL_SOCKET, force, bytes).is_err() {
            let _ = setsockopt_int(fd, libc::SOL_SOCKET, plain, bytes);
        }
    }
}

pub(crate) fn socket(
    domain: libc::c_int,
    ty: libc::c_int,
    proto: libc::c_int,
) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; the returned fd is owned from here on.
    let fd =
        cvt(unsafe { libc::socket(domain, ty | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, proto) })?;
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Whether an AF_PACKET socket's sends go through the interface's qdisc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qdisc {
    /// Straight to the driver (`PACKET_QDISC_BYPASS`, where supported):
    /// veths, which have no qdisc worth keeping.
    Bypass,
    /// Through the qdisc (a real NIC's traffic shaping stays in force).
    Through,
}

/// The datapath's packet socket (the overlay port, and micro-segmentation's
/// NIC tap and firewall veth): AF_PACKET bound to one interface, not seeing
/// its own transmissions, with a virtio-net header before every frame both
/// ways, 8 MiB buffers.
pub fn packet_socket(ifindex: u32, qdisc: Qdisc) -> io::Result<OwnedFd> {
    bound_packet_socket(ifindex, qdisc, None)
}

/// The edge's downlink socket: AF_PACKET on the underlay bridge
/// (`ifindex`), as [`packet_socket`] (virtio-net headers, not seeing its
/// own sends), but with `filter` attached before it is bound, so no frame
/// reaches it unfiltered: the host's own traffic and Geneve are never
/// copied to it.
pub fn downlink_socket(ifindex: u32, filter: &[datapath::bpf::Insn]) -> io::Result<OwnedFd> {
    bound_packet_socket(ifindex, Qdisc::Bypass, Some(filter))
}

fn bound_packet_socket(
    ifindex: u32,
    qdisc: Qdisc,
    filter: Option<&[datapath::bpf::Insn]>,
) -> io::Result<OwnedFd> {
    // Protocol 0 until bound, so no frame of another interface slips in.
    let fd = socket(libc::AF_PACKET, libc::SOCK_RAW, 0)?;
    let raw = fd.as_raw_fd();
    setsockopt_int(raw, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, 1)?;
    // Offload metadata in front of every frame, both ways: partial checksums
    // and TSO super-frames come in described instead of being refused.
    setsockopt_int(raw, libc::SOL_PACKET, libc::PACKET_VNET_HDR, 1)?;
    if qdisc == Qdisc::Bypass {
        let _ = setsockopt_int(raw, libc::SOL_PACKET, libc::PACKET_QDISC_BYPASS, 1);
    }
    set_buffers(raw, 8 << 20);
    if let Some(prog) = filter {
        attach_filter(raw, prog)?;
    }
    // SAFETY: all-zero is a valid sockaddr_ll.
    let mut sll: libc::sockaddr_ll = unsafe { mem::zeroed() };
    sll.sll_family = c_u16(libc::AF_PACKET);
    sll.sll_protocol = c_u16(libc::ETH_P_ALL).to_be();
    sll.sll_ifindex = i32::try_from(ifindex)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "ifindex out of range"))?;
    // SAFETY: `sll` is a valid sockaddr_ll and its size is passed.
    cvt(unsafe {
        libc::bind(
            raw,
            (&sll as *const libc::sockaddr_ll).cast(),
            crate::sys::socklen_of::<libc::sockaddr_ll>(),
        )
    })?;
    Ok(fd)
}

/// Attaches (or replaces: the kernel swaps it atomically) the classic BPF
/// program `prog` on socket `fd` (`SO_ATTACH_FILTER`).
pub fn attach_filter(fd: RawFd, prog: &[datapath::bpf::Insn]) -> io::Result<()> {
    let mut insns: Vec<libc::sock_filter> = prog
        .iter()
        .map(|i| libc::sock_filter {
            code: i.code,
            jt: i.jt,
            jf: i.jf,
            k: i.k,
        })
        .collect();
    let fprog = libc::sock_fprog {
        len: u16::try_from(insns.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "BPF program too long"))?,
        filter: insns.as_mut_ptr(),
    };
    // SAFETY: `fprog` points at `insns`, both alive until the call
    // returns (the kernel copies the program); its size is passed.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&fprog as *const libc::sock_fprog).cast(),
            crate::sys::socklen_of::<libc::sock_fprog>(),
        )
    })
    .map(drop)
}

/// The index of interface `name` in the calling thread's namespace.
pub fn ifindex(name: &str) -> io::Result<u32> {
    let c = std::ffi::CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface name with NUL"))?;
    // SAFETY: `c` is a valid NUL-terminated string for the call.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => Err(io::Error::last_os_error()),
        i => Ok(i),
    }
}

pub(crate) fn sockaddr(ip: Ipv4Addr, port: u16) -> libc::sockaddr_in {
    // SAFETY: all-zero is a valid sockaddr_in.
    let mut sa: libc::sockaddr_in = unsafe { mem::zeroed() };
    sa.sin_family = c_u16(libc::AF_INET);
    sa.sin_port = port.to_be();
    sa.sin_addr.s_addr = u32::from(ip).to_be();
    sa
}

/// UDP socket on `ip:port` for incoming Geneve.
pub fn udp_socket(ip: Ipv4Addr, port: u16) -> io::Result<OwnedFd> {
    let fd = socket(libc::AF_INET, libc::SOCK_DGRAM, 0)?;
    let raw = fd.as_raw_fd();
    set_buffers(raw, 8 << 20);
    let sa = sockaddr(ip, port);
    // SAFETY: `sa` is a valid sockaddr_in and its size is passed.
    cvt(unsafe {
        libc::bind(
            raw,
            (&sa as *const libc::sockaddr_in).cast(),
            crate::sys::socklen_of::<libc::sockaddr_in>(),
        )
    })?;
    Ok(fd)
}

/// Frames the kernel dropped on an AF_PACKET socket since the last call
/// (`PACKET_STATISTICS` reads and resets the count).
pub fn packet_drops(fd: RawFd) -> io::Result<u64> {
    let mut st = libc::tpacket_stats {
        tp_packets: 0,
        tp_drops: 0,
    };
    let mut len = crate::sys::socklen_of::<libc::tpacket_stats>();
    // SAFETY: `st` and `len` are live and describe each other.
    cvt(unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_PACKET,
            libc::PACKET_STATISTICS,
            (&mut st as *mut libc::tpacket_stats).cast(),
            &mut len,
        )
    })?;
    Ok(u64::from(st.tp_drops))
}

/// Preallocated receive batch for `recvmmsg`.
pub struct RecvBatch {
    bufs: Vec<Box<[u8]>>,
    iovs: Vec<libc::iovec>,
    addrs: Vec<libc::sockaddr_in>,
    /// Control-message space per message (for `UDP_GRO` segment sizes).
    cmsgs: Vec<[u64; 8]>,
    hdrs: Vec<libc::mmsghdr>,
    /// Frames received by the last `recv`.
    pub len: usize,
}

// The raw pointers in `iovs`/`hdrs` point into heap memory owned by the
// same struct, which moves with it.
// SAFETY: nothing is shared; the batch is used by one thread at a time.
unsafe impl Send for RecvBatch {}

impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBatch").field("len", &self.len).finish()
    }
}

impl RecvBatch {
    /// A batch of [`BATCH`] buffers of `buf_size` bytes each.
    pub fn new(buf_size: usize) -> RecvBatch {
        let mut bufs: Vec<Box<[u8]>> = (0..BATCH)
            .map(|_| vec![0u8; buf_size].into_boxed_slice())
            .collect();
        let iovs: Vec<libc::iovec> = bufs
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: b.len(),
            })
            .collect();
        // SAFETY: all-zero is a valid sockaddr_in / mmsghdr.
        let addrs = vec![unsafe { mem::zeroed::<libc::sockaddr_in>() }; BATCH];
        let hdrs = (0..BATCH)
            // SAFETY: as above.
            .map(|_| unsafe { mem::zeroed::<libc::mmsghdr>() })
            .collect();
        let mut b = RecvBatch {
            bufs,
            iovs,
            addrs,
            cmsgs: vec![[0; 8]; BATCH],
            hdrs,
            len: 0,
        };
        for i in 0..BATCH {
            let h = &mut b.hdrs[i].msg_hdr;
            h.msg_iov = &mut b.iovs[i];
            h.msg_iovlen = 1;
            h.msg_name = (&mut b.addrs[i] as *mut libc::sockaddr_in).cast();
        }
        b
    }

    /// Receives up to [`BATCH`] datagrams/frames; 0 when nothing is waiting.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        let slots = self
            .hdrs
            .iter_mut()
            .zip(self.addrs.iter_mut())
            .zip(self.cmsgs.iter_mut());
        for ((h, a), c) in slots {
            h.msg_hdr.msg_namelen = crate::sys::socklen_of::<libc::sockaddr_in>();
            h.msg_hdr.msg_name = (a as *mut libc::sockaddr_in).cast();
            h.msg_hdr.msg_control = c.as_mut_ptr().cast();
            h.msg_hdr.msg_controllen = mem::size_of_val(c);
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        // SAFETY: every header points at live buffers owned by `self`.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                u32::try_from(BATCH).unwrap_or(u32::MAX),
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        // Negative: the call failed (errno says why).
        let Ok(n) = usize::try_from(n) else {
            let e = io::Error::last_os_error();
            self.len = 0;
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                _ => Err(e),
            };
        };
        self.len = n;
        Ok(self.len)
    }

    /// Frame `i` of the last receive, and whether the kernel truncated it.
    pub fn frame(&self, i: usize) -> (&[u8], bool) {
        let h = &self.hdrs[i];
        let len = (h.msg_len as usize).min(self.bufs[i].len());
        let truncated = h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        (&self.bufs[i][..len], truncated)
    }

    /// Segment size of message `i` when the kernel coalesced several
    /// datagrams into it (`UDP_GRO`); `None` for a single datagram.
    pub fn gro_size(&self, i: usize) -> Option<usize> {
        let h = &self.hdrs[i].msg_hdr;
        // SAFETY: the kernel filled msg_control/msg_controllen; the CMSG
        // macros only walk within msg_controllen.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(h);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_UDP && (*c).cmsg_type == UDP_GRO {
                    let mut v = [0u8; 4];
                    std::ptr::copy_nonoverlapping(libc::CMSG_DATA(c), v.as_mut_ptr(), 4);
                    let size = i32::from_ne_bytes(v);
                    return usize::try_from(size).ok().filter(|&s| s > 0);
                }
                c = libc::CMSG_NXTHDR(h, c);
            }
        }
        None
    }

    /// Source IPv4 address of datagram `i` (UDP sockets).
    pub fn source(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::from(u32::from_be(self.addrs[i].sin_addr.s_addr))
    }
}

/// Reusable arrays for writing the port queue with `sendmmsg`: each frame
/// goes out behind its virtio-net header (all-zero for a complete frame,
/// TSO metadata for a merged TCP super-frame).
pub struct SendBatch {
    vnet: Vec<[u8; VIRTIO_NET_HDR_LEN]>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

// SAFETY: the pointers are rebuilt before every use; nothing is shared.
unsafe impl Send for SendBatch {}

impl std::fmt::Debug for SendBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendBatch").finish()
    }
}

/// Outcome of sending one queue.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SendResult {
    pub sent: usize,
    /// Packets given up on (socket full after retries, or a hard error).
    pub failed: usize,
}

impl SendBatch {
    pub fn new(capacity: usize) -> SendBatch {
        SendBatch {
            vnet: Vec::with_capacity(capacity),
            iovs: Vec::with_capacity(2 * capacity),
            hdrs: Vec::with_capacity(capacity),
        }
    }

    /// Writes every frame of `q` to the AF_PACKET socket `fd` (bound, with
    /// `PACKET_VNET_HDR`) under [`send_entries`]' policy, then clears the
    /// queue.
    pub fn send(&mut self, fd: RawFd, q: &mut TxQueue) -> SendResult {
        self.vnet.clear();
        self.iovs.clear();
        self.hdrs.clear();
        for (_, item) in q.items() {
            self.vnet.push(
                item.gso
                    .map_or([0; VIRTIO_NET_HDR_LEN], |g| g.virtio_net_hdr()),
            );
        }
        for ((pkt, _), vnet) in q.items().zip(self.vnet.iter()) {
            self.iovs.push(libc::iovec {
                iov_base: vnet.as_ptr() as *mut libc::c_void,
                iov_len: vnet.len(),
            });
            self.iovs.push(libc::iovec {
                iov_base: pkt.as_ptr() as *mut libc::c_void,
                iov_len: pkt.len(),
            });
        }
        for i in 0..self.vnet.len() {
            // SAFETY: all-zero is a valid mmsghdr.
            let mut h: libc::mmsghdr = unsafe { mem::zeroed() };
            h.msg_hdr.msg_iov = &mut self.iovs[2 * i];
            h.msg_hdr.msg_iovlen = 2;
            self.hdrs.push(h);
        }
        let mut failed = 0;
        // SAFETY: the headers point at frames in `q` and at `self`'s
        // arrays, all alive and unchanged until the call returns.
        let sent = unsafe { send_entries(fd, &mut self.hdrs, |_| failed += 1) };
        q.clear();
        SendResult { sent, failed }
    }
}

/// Waits (at most 2 ms each time) for a full socket buffer to drain before
/// [`send_entries`] gives up on the rest of a batch.
const FULL_RETRIES: u32 = 3;
/// `EINTR`s in a row [`send_entries`] retries before giving up.
const EINTR_RETRIES: u32 = 8;

/// Sends the prepared `sendmmsg` entries `hdrs` on `fd`: the one send
/// policy of every datapath socket (port, NIC tap, firewall veth, Geneve
/// pool). Returns how many entries went out; `give_up(i)` is called for
/// each entry `i` that did not.
///
/// * `EINTR`: the call is repeated (a bounded number of times in a row).
/// * Socket buffer full (`EAGAIN`, or nothing sent): wait up to 2 ms for
///   room, at most [`FULL_RETRIES`] times in a row; then every entry left
///   is given up (trying them one by one would only spin on a full
///   socket). Any progress resets the count.
/// * Any other error (`ENOBUFS` from a full qdisc, `EMSGSIZE`,
///   `ENETUNREACH`, ...) belongs to the first entry left (`sendmmsg`
///   fails only when its first message does): that entry is given up and
///   the rest go on.
///
/// It never blocks for more than `FULL_RETRIES * 2` ms and makes at most
/// one syscall per entry plus the bounded retries.
///
/// # Safety
///
/// Every header must point at memory (iovecs, buffers, addresses, control
/// messages) that stays valid and unchanged until this returns.
pub(crate) unsafe fn send_entries(
    fd: RawFd,
    hdrs: &mut [libc::mmsghdr],
    mut give_up: impl FnMut(usize),
) -> usize {
    let (mut start, mut sent) = (0, 0);
    let (mut full, mut intr) = (0, 0);
    while start < hdrs.len() {
        let rest = &mut hdrs[start..];
        let len = u32::try_from(rest.len()).unwrap_or(u32::MAX);
        // SAFETY: the caller keeps what the headers point at alive.
        let n = unsafe { libc::sendmmsg(fd, rest.as_mut_ptr(), len, 0) };
        if let Ok(n @ 1..) = usize::try_from(n) {
            start += n;
            sent += n;
            (full, intr) = (0, 0);
            continue;
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::Interrupted if intr < EINTR_RETRIES => intr += 1,
            _ if n == 0 || e.kind() == io::ErrorKind::WouldBlock => {
                if full < FULL_RETRIES {
                    full += 1;
                    wait_writable(fd, 2);
                } else {
                    (start..hdrs.len()).for_each(&mut give_up);
                    break;
                }
            }
            _ => {
                give_up(start);
                start += 1;
                intr = 0;
            }
        }
    }
    sent
}

pub(crate) fn wait_writable(fd: RawFd, timeout_ms: i32) {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut p, 1, timeout_ms) };
}

/// The datapath threads' wait: the waker plus the loop's sockets, all for
/// reading (a negative fd is ignored, e.g. no port socket).
#[derive(Debug)]
pub(crate) struct Poller<const N: usize> {
    fds: [libc::pollfd; N],
}

impl<const N: usize> Poller<N> {
    pub(crate) fn new(fds: [RawFd; N]) -> Self {
        Poller {
            fds: fds.map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            }),
        }
    }

    /// Waits up to `timeout_ms` for any of them; returns which are ready.
    pub(crate) fn wait(&mut self, timeout_ms: i32) -> [bool; N] {
        for f in self.fds.iter_mut() {
            f.revents = 0;
        }
        // SAFETY: `fds` is a live array of N pollfd; negative fds are ignored.
        unsafe { libc::poll(self.fds.as_mut_ptr(), N as libc::nfds_t, timeout_ms) };
        self.fds.map(|f| f.revents != 0)
    }
}

/// An eventfd used to wake the datapath thread.
#[derive(Debug)]
pub struct Waker(OwnedFd);

impl Waker {
    pub fn new() -> io::Result<Waker> {
        // SAFETY: plain syscall.
        let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })?;
        // SAFETY: fresh descriptor.
        Ok(Waker(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    pub fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64.
        unsafe { libc::write(self.0.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    pub fn drain(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64.
        unsafe { libc::read(self.0.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
    }

    pub fn fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    /// A non-blocking AF_UNIX datagram pair (`[sender, receiver]`); the
    /// loop's tests (`driver.rs`) use it too.
    pub(crate) fn pair() -> [OwnedFd; 2] {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors.
        let rc = unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
                fds.as_mut_ptr(),
            )
        };
        assert_eq!(rc, 0, "socketpair: {}", io::Error::last_os_error());
        // SAFETY: fresh descriptors nobody else owns.
        fds.map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// One header per buffer in `bufs` (iovecs kept in `iovs`).
    fn entries(bufs: &[Vec<u8>], iovs: &mut Vec<libc::iovec>) -> Vec<libc::mmsghdr> {
        iovs.clear();
        iovs.extend(bufs.iter().map(|b| libc::iovec {
            iov_base: b.as_ptr() as *mut libc::c_void,
            iov_len: b.len(),
        }));
        iovs.iter_mut()
            .map(|iov| {
                // SAFETY: all-zero is a valid mmsghdr.
                let mut h: libc::mmsghdr = unsafe { mem::zeroed() };
                h.msg_hdr.msg_iov = iov;
                h.msg_hdr.msg_iovlen = 1;
                h
            })
            .collect()
    }

    #[test]
    fn a_failing_entry_is_given_up_alone() {
        let [tx, rx] = pair();
        set_buffers(tx.as_raw_fd(), 64 << 10);
        // The middle datagram is larger than any socket buffer: EMSGSIZE.
        let bufs = vec![vec![1u8; 100], vec![2u8; 4 << 20], vec![3u8; 100]];
        let mut iovs = Vec::new();
        let mut hdrs = entries(&bufs, &mut iovs);
        let mut given_up = Vec::new();
        // SAFETY: `bufs` and `iovs` outlive the call.
        let sent = unsafe { send_entries(tx.as_raw_fd(), &mut hdrs, |i| given_up.push(i)) };
        assert_eq!((sent, given_up), (2, vec![1]));
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        loop {
            // SAFETY: reads into a live buffer of the given size.
            let n = unsafe { libc::recv(rx.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            let Ok(n @ 1..) = usize::try_from(n) else {
                break;
            };
            got.push((n, buf[0]));
        }
        assert_eq!(
            got,
            vec![(100, 1), (100, 3)],
            "the entries after it still went out"
        );
    }

    #[test]
    fn a_full_socket_gives_up_the_rest_without_spinning() {
        let [tx, _rx] = pair();
        // Nobody reads: the receive queue fills and the sends run into EAGAIN.
        let bufs = vec![vec![0u8; 1000]; 2000];
        let mut iovs = Vec::new();
        let mut hdrs = entries(&bufs, &mut iovs);
        let mut given_up = Vec::new();
        let started = Instant::now();
        // SAFETY: `bufs` and `iovs` outlive the call.
        let sent = unsafe { send_entries(tx.as_raw_fd(), &mut hdrs, |i| given_up.push(i)) };
        assert!(sent < bufs.len(), "the socket never filled ({sent} sent)");
        assert_eq!(
            given_up,
            (sent..bufs.len()).collect::<Vec<_>>(),
            "all the rest, in order"
        );
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "bounded wait, {:?}",
            started.elapsed()
        );
    }
}
