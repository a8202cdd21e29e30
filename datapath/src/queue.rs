//! Output queues: fixed sets of preallocated buffers the pipeline writes
//! finished frames into (Geneve packets for the underlay, Ethernet frames for
//! the local port). The I/O loop sends a whole queue with one batched syscall
//! and clears it; nothing is allocated per packet.

use std::net::Ipv4Addr;

/// Largest frame the port queue holds once segments are merged into it
/// ([`crate::coalesce`]): the IPv4 total length limit plus the Ethernet
/// header. Defined here, below the coalescing, which uses it.
pub const MAX_MERGED: usize = 65535 + geneve::ethernet::HEADER_LEN;

/// One finished packet in a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxItem {
    pub len: usize,
    /// Underlay destination (unused for the port queue).
    pub dst: Ipv4Addr,
    /// Set when several TCP segments were merged into this packet
    /// (port queue only; see [`crate::coalesce`]).
    pub gso: Option<TcpGso>,
}

/// A merged TCP super-frame: how the kernel should treat it (it becomes the
/// virtio-net header of the frame written to the port).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpGso {
    /// Payload bytes per original segment.
    pub mss: u16,
    /// Segments merged so far.
    pub segments: u16,
    /// Offset of the TCP header (checksum start).
    pub l4_off: u16,
    /// Length of all headers (Ethernet + IPv4 + TCP).
    pub hdr_len: u16,
    /// No more segments may join (a short or PSH segment ended the run).
    pub closed: bool,
}

impl TcpGso {
    /// The `struct virtio_net_hdr` for this frame (host byte order):
    /// NEEDS_CSUM from the TCP header on, GSO TCPv4 with `mss`.
    pub fn virtio_net_hdr(&self) -> [u8; crate::offload::VIRTIO_NET_HDR_LEN] {
        let mut h = [0u8; crate::offload::VIRTIO_NET_HDR_LEN];
        h[0] = 1; // VIRTIO_NET_HDR_F_NEEDS_CSUM
        h[1] = 1; // VIRTIO_NET_HDR_GSO_TCPV4
        h[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        h[4..6].copy_from_slice(&self.mss.to_ne_bytes());
        h[6..8].copy_from_slice(&self.l4_off.to_ne_bytes());
        h[8..10].copy_from_slice(&16u16.to_ne_bytes()); // TCP checksum field
        h
    }
}

/// A fixed-capacity batch of outgoing packets.
#[derive(Debug)]
pub struct TxQueue {
    bufs: Vec<Box<[u8]>>,
    items: Vec<TxItem>,
}

impl TxQueue {
    /// `slots` buffers of `slot_size` bytes each, allocated once.
    pub fn new(slots: usize, slot_size: usize) -> TxQueue {
        TxQueue {
            bufs: (0..slots)
                .map(|_| vec![0u8; slot_size].into_boxed_slice())
                .collect(),
            items: Vec::with_capacity(slots),
        }
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.bufs.len()
    }

    /// Free slots left.
    pub fn free(&self) -> usize {
        self.bufs.len() - self.items.len()
    }

    pub fn clear(&mut self) {
        self.items.clear();
    }

    /// Packet `i`: its bytes and underlay destination.
    pub fn get(&self, i: usize) -> Option<(&[u8], Ipv4Addr)> {
        let item = self.items.get(i)?;
        Some((&self.bufs[i][..item.len], item.dst))
    }

    /// Packets with their metadata.
    pub fn items(&self) -> impl Iterator<Item = (&[u8], &TxItem)> + '_ {
        self.items
            .iter()
            .zip(self.bufs.iter())
            .map(|(item, buf)| (&buf[..item.len], item))
    }

    /// The last packet, its whole slot, for merging into it.
    pub(crate) fn last_mut(&mut self) -> Option<(&mut TxItem, &mut [u8])> {
        let i = self.items.len().checked_sub(1)?;
        Some((&mut self.items[i], &mut self.bufs[i][..]))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&[u8], Ipv4Addr)> + '_ {
        self.items
            .iter()
            .zip(self.bufs.iter())
            .map(|(item, buf)| (&buf[..item.len], item.dst))
    }

    /// Drops the first `n` packets (after a partial send), keeping the rest in order.
    pub fn consume(&mut self, n: usize) {
        let n = n.min(self.items.len());
        self.items.drain(..n);
        self.bufs[..].rotate_left(n);
    }

    /// Offers the last packet to `merge`, which may append it to the one
    /// before it (then the last is gone); otherwise it stays. The slot's
    /// buffer is moved out while `merge` runs (an empty box: no allocation).
    pub(crate) fn merge_last(&mut self, merge: impl FnOnce(&mut TxQueue, &[u8]) -> bool) -> bool {
        let n = self.items.len();
        if n < 2 {
            return false;
        }
        let Some(item) = self.items.pop() else {
            return false;
        };
        let buf = std::mem::take(&mut self.bufs[n - 1]);
        let merged = buf.get(..item.len).is_some_and(|f| merge(self, f));
        self.bufs[n - 1] = buf;
        if !merged {
            self.items.push(item);
        }
        merged
    }

    /// Fills the next free slot with `fill`, which returns the length written
    /// (or `None` to abandon the slot). Returns false when the queue is full
    /// or `fill` gave up.
    pub(crate) fn push_with(
        &mut self,
        dst: Ipv4Addr,
        fill: impl FnOnce(&mut [u8]) -> Option<usize>,
    ) -> bool {
        let i = self.items.len();
        let Some(buf) = self.bufs.get_mut(i) else {
            return false;
        };
        match fill(buf) {
            Some(len) if len <= buf.len() => {
                self.items.push(TxItem {
                    len,
                    dst,
                    gso: None,
                });
                true
            }
            _ => false,
        }
    }
}

/// Slots of the health-check port's queue.
pub const PROBE_SLOTS: usize = 64;

/// The pipeline's output queues.
#[derive(Debug)]
pub struct Output {
    /// Complete outer IPv4 packets (IPv4 + UDP + Geneve + inner frame).
    pub underlay: TxQueue,
    /// Complete Ethernet frames for the local port (on the edge: the uplink).
    pub port: TxQueue,
    /// The edge only: complete Ethernet frames for the downlink (the
    /// underlay bridge). Off the edge it has no slots
    /// ([`Output::without_downlink`]).
    pub downlink: TxQueue,
    /// The edge only: frames for the health-check port (answers to the
    /// checkers: few, so few slots).
    pub probe: TxQueue,
    /// Merge TCP segments for the port (needs 64 KiB port slots).
    pub(crate) coalesce: bool,
}

impl Output {
    /// Queues of `slots` packets, each buffer big enough for `max_frame`
    /// bytes of inner frame plus the Geneve encapsulation.
    pub fn new(slots: usize, max_frame: usize) -> Output {
        let slot = max_frame + geneve::outer::OVERHEAD;
        Output {
            underlay: TxQueue::new(slots, slot),
            port: TxQueue::new(slots, slot),
            downlink: TxQueue::new(slots, slot),
            probe: TxQueue::new(PROBE_SLOTS.min(slots), slot),
            coalesce: false,
        }
    }

    /// The same queues without room for the downlink and the
    /// health-check port (for a datapath that is not the edge: what would
    /// go there is dropped as `tx_full`, and their buffers are not
    /// allocated).
    pub fn without_downlink(mut self) -> Output {
        self.downlink = TxQueue::new(0, 0);
        self.probe = TxQueue::new(0, 0);
        self
    }

    /// Like [`Output::new`], with `port_slots` 64 KiB port slots into which
    /// consecutive TCP segments of one stream are merged (receive-side
    /// coalescing, see [`crate::coalesce`]).
    pub fn with_coalescing(slots: usize, max_frame: usize, port_slots: usize) -> Output {
        let slot = max_frame + geneve::outer::OVERHEAD;
        Output {
            underlay: TxQueue::new(slots, slot),
            port: TxQueue::new(port_slots, MAX_MERGED + 64),
            downlink: TxQueue::new(slots, slot),
            probe: TxQueue::new(PROBE_SLOTS.min(slots), slot),
            coalesce: true,
        }
    }

    /// True when any queue may not take the outputs of one more frame
    /// (a broadcast can need [`crate::tables::MAX_FLOOD`] slots, a
    /// super-frame [`crate::offload::MAX_SEGMENTS`]; a downlink without
    /// slots never asks for a flush).
    pub fn needs_flush(&self) -> bool {
        let worst = crate::tables::MAX_FLOOD.max(crate::offload::MAX_SEGMENTS);
        self.underlay.free() < worst
            || self.port.free() < 2
            || (self.downlink.capacity() > 0 && self.downlink.free() < 2)
            || (self.probe.capacity() > 0 && self.probe.free() < 2)
    }

    pub fn clear(&mut self) {
        self.underlay.clear();
        self.port.clear();
        self.downlink.clear();
        self.probe.clear();
    }
}
