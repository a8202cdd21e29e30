//! Output queues: fixed sets of preallocated buffers the pipeline writes
//! finished frames into (Geneve packets for the underlay, Ethernet frames for
//! the local port). The I/O loop sends a whole queue with one batched syscall
//! and clears it; nothing is allocated per packet.

use std::net::Ipv4Addr;

/// One finished packet in a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxItem {
    pub len: usize,
    /// Underlay destination (unused for the port queue).
    pub dst: Ipv4Addr,
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
                self.items.push(TxItem { len, dst });
                true
            }
            _ => false,
        }
    }
}

/// The pipeline's two output queues.
#[derive(Debug)]
pub struct Output {
    /// Complete outer IPv4 packets (IPv4 + UDP + Geneve + inner frame).
    pub underlay: TxQueue,
    /// Complete Ethernet frames for the local port.
    pub port: TxQueue,
}

impl Output {
    /// Queues of `slots` packets, each buffer big enough for `max_frame`
    /// bytes of inner frame plus the Geneve encapsulation.
    pub fn new(slots: usize, max_frame: usize) -> Output {
        let slot = max_frame + geneve::outer::OVERHEAD;
        Output {
            underlay: TxQueue::new(slots, slot),
            port: TxQueue::new(slots, slot),
        }
    }

    /// True when either queue may not take the outputs of one more frame
    /// (a broadcast can need [`crate::tables::MAX_FLOOD`] slots, a
    /// super-frame [`crate::offload::MAX_SEGMENTS`]).
    pub fn needs_flush(&self) -> bool {
        let worst = crate::tables::MAX_FLOOD.max(crate::offload::MAX_SEGMENTS);
        self.underlay.free() < worst || self.port.free() < 2
    }

    pub fn clear(&mut self) {
        self.underlay.clear();
        self.port.clear();
    }
}
