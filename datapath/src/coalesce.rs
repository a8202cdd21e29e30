//! Receive-side coalescing for the local port (GRO in userspace): a TCP
//! segment that continues the stream of the last frame queued for the port
//! is appended to it instead of taking its own slot. The merged frame goes
//! to the instance as one TSO super-frame (virtio-net header from
//! [`crate::queue::TcpGso`]), so the instance's stack and the veth handle
//! one packet per run instead of one per segment. The rules are Linux's
//! `tcp_gro_receive`: same addresses, ports, TTL/TOS/DF, ACK number, window,
//! flags (ACK, with PSH only ending a run) and TCP options; consecutive
//! sequence numbers; every segment but the last exactly `mss` long.

use geneve::tcp::{self, ACK, PSH};
use geneve::{checksum, ethernet, ipv4};

use crate::narrow::{len16, wrap32};
pub use crate::queue::MAX_MERGED;
use crate::queue::{TcpGso, TxQueue};

/// Most segments in one merged frame.
const MAX_SEGMENTS: u16 = 64;

/// Header facts of a plain IPv4/TCP frame (no IP options, not a fragment).
#[derive(Debug, Clone, Copy)]
struct Tcp {
    /// TCP header offset.
    l4: usize,
    /// Payload offset (all headers).
    data: usize,
    /// Payload length.
    len: usize,
    seq: u32,
    flags: u8,
}

fn parse(f: &[u8]) -> Option<Tcp> {
    let eth = ethernet::Frame::new_checked(f).ok()?;
    if eth.ethertype() != ethernet::ETHERTYPE_IPV4 {
        return None;
    }
    let ip = ipv4::Packet::new_checked(eth.payload()).ok()?;
    if ip.header_len() != ipv4::MIN_HEADER_LEN
        || ip.protocol() != ipv4::PROTO_TCP
        || ip.more_frags()
        || ip.frag_offset() != 0
    {
        return None;
    }
    let l4 = ethernet::HEADER_LEN + ipv4::MIN_HEADER_LEN;
    let end = ethernet::HEADER_LEN + usize::from(ip.total_len());
    let tcp = tcp::Packet::new_checked(f.get(l4..end)?).ok()?;
    Some(Tcp {
        l4,
        data: l4 + tcp.header_len(),
        len: tcp.payload().len(),
        seq: tcp.seq_number(),
        flags: tcp.flags(),
    })
}

/// Whether two segments' TCP headers agree on everything but the sequence
/// number, PSH, the checksum and the urgent pointer: ports, ACK number,
/// data offset and the reserved bits, the other flags, window and options.
fn same_stream_header(a: &[u8], b: &[u8]) -> bool {
    let (Ok(a), Ok(b)) = (tcp::Packet::new_checked(a), tcp::Packet::new_checked(b)) else {
        return false;
    };
    a.src_port() == b.src_port()
        && a.dst_port() == b.dst_port()
        && a.ack_number() == b.ack_number()
        && a.header_len() == b.header_len()
        && a.reserved() == b.reserved()
        && a.flags() & !PSH == b.flags() & !PSH
        && a.window() == b.window()
        && a.options_area() == b.options_area()
}

/// Appends `frame` to the last frame of `q` if it continues its TCP stream.
/// Returns false (and changes nothing) when it does not.
pub(crate) fn try_append(q: &mut TxQueue, frame: &[u8]) -> bool {
    let Some(new) = parse(frame) else {
        return false;
    };
    if new.len == 0 || new.flags & !PSH != ACK {
        return false;
    }
    let Some((item, slot)) = q.last_mut() else {
        return false;
    };
    let head = &slot[..item.len];
    let Some(old) = parse(head) else {
        return false;
    };
    let (mss, segments) = match item.gso {
        Some(g) if g.closed => return false,
        Some(g) => (usize::from(g.mss), g.segments),
        None => (old.len, 1),
    };
    let total = item.len + new.len;
    let compatible = old.flags == ACK
        && old.data == new.data
        && new.len <= mss
        && segments < MAX_SEGMENTS
        && total <= MAX_MERGED
        && total <= slot.len()
        // Ethernet header; IPv4 TOS; DF/TTL/protocol; addresses.
        && head[..14] == frame[..14]
        && head[15] == frame[15]
        && head[20..24] == frame[20..24]
        && head[26..34] == frame[26..34]
        && same_stream_header(&head[old.l4..old.data], &frame[new.l4..new.data])
        && new.seq == old.seq.wrapping_add(wrap32(old.len));
    if !compatible {
        return false;
    }
    slot[item.len..total].copy_from_slice(&frame[new.data..new.data + new.len]);
    let tcp_len = total - old.l4;
    let (src, dst) = {
        let mut ip = ipv4::Packet::new_unchecked(&mut slot[ethernet::HEADER_LEN..total]);
        ip.set_total_len(len16(total - ethernet::HEADER_LEN));
        ip.fill_checksum();
        (ip.src(), ip.dst())
    };
    let closed = new.len < mss || new.flags & PSH != 0;
    // `head` parsed above, so the merged segment holds a whole TCP header.
    let mut seg = tcp::Packet::new_unchecked(&mut slot[old.l4..total]);
    if new.flags & PSH != 0 {
        seg.set_flags(seg.flags() | PSH);
    }
    // CHECKSUM_PARTIAL convention: the field holds the pseudo-header sum;
    // the kernel treats the merged frame as verified (each segment was).
    let pseudo = checksum::pseudo_header_v4(src, dst, ipv4::PROTO_TCP, len16(tcp_len));
    seg.set_checksum(!checksum::fold(pseudo));
    item.len = total;
    item.gso = Some(TcpGso {
        mss: len16(mss),
        segments: segments + 1,
        l4_off: len16(old.l4),
        hdr_len: len16(old.data),
        closed,
    });
    true
}
