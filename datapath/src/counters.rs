//! Counters of the pipeline: one per drop reason, per layer, per tunnel
//! endpoint and for the local port. Plain `u64`s owned by the pipeline (the
//! datapath thread is their only writer); the agent publishes copies.

use std::net::Ipv4Addr;

use serde::Serialize;

use crate::verdict::{DropReason, LayerId};

/// Packet and byte counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PacketBytes {
    pub packets: u64,
    pub bytes: u64,
}

impl PacketBytes {
    #[inline]
    pub fn add(&mut self, len: usize) {
        self.packets += 1;
        self.bytes += len as u64;
    }
}

/// Per tunnel endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TunnelCounters {
    pub tep_ip: Ipv4Addr,
    pub tep_id: u32,
    pub tx: PacketBytes,
    pub rx: PacketBytes,
    /// Nanoseconds (pipeline clock) of the last packet received from it; 0 = never.
    pub last_rx_ns: u64,
}

/// What one layer did with the frames it saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LayerCounters {
    /// Frames handed to the layer.
    pub seen: u64,
    /// Frames the layer passed on to the next one.
    pub passed: u64,
    /// Frames the layer answered or forwarded itself (replies, encapsulations, deliveries).
    pub handled: u64,
    /// Frames the layer dropped.
    pub dropped: u64,
}

/// The switch's DHCP server for the port (`layer::dhcp`): messages by type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DhcpCounters {
    pub discover: u64,
    pub request: u64,
    pub inform: u64,
    pub release: u64,
    pub decline: u64,
    /// Client messages of a server's type (OFFER, ACK, NAK).
    pub other: u64,
    pub offer: u64,
    pub ack: u64,
    pub nak: u64,
    /// Pipeline time (ns) of the last ACK that gave the port its lease; 0
    /// when none was given or the client released it since.
    pub bound_at_ns: u64,
}

impl DhcpCounters {
    /// A client message of type `t` arrived.
    pub fn received(&mut self, t: geneve::dhcp::MessageType) {
        use geneve::dhcp::MessageType as M;
        *match t {
            M::Discover => &mut self.discover,
            M::Request => &mut self.request,
            M::Inform => &mut self.inform,
            M::Release => &mut self.release,
            M::Decline => &mut self.decline,
            M::Offer | M::Ack | M::Nak => &mut self.other,
        } += 1;
    }

    /// Every count with its message type's name (lower case), the client's
    /// first.
    pub fn by_type(&self) -> [(&'static str, u64); 9] {
        [
            ("discover", self.discover),
            ("request", self.request),
            ("inform", self.inform),
            ("release", self.release),
            ("decline", self.decline),
            ("other", self.other),
            ("offer", self.offer),
            ("ack", self.ack),
            ("nak", self.nak),
        ]
    }

    /// A reply of type `t` was sent.
    pub fn sent(&mut self, t: geneve::dhcp::MessageType) {
        use geneve::dhcp::MessageType as M;
        match t {
            M::Offer => self.offer += 1,
            M::Ack => self.ack += 1,
            M::Nak => self.nak += 1,
            _ => {}
        }
    }
}

/// All counters of one pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counters {
    pub drops: [u64; DropReason::ALL.len()],
    pub layers: [LayerCounters; LayerId::ALL.len()],
    /// Frames received from the local port (instance -> network).
    pub port_rx: PacketBytes,
    /// Frames delivered to the local port (network -> instance), replies included.
    pub port_tx: PacketBytes,
    /// Geneve packets received from the underlay (before validation).
    pub underlay_rx: PacketBytes,
    /// Geneve packets built for the underlay.
    pub underlay_tx: PacketBytes,
    /// The edge's downlink: frames its filtered socket on the underlay
    /// bridge received, and frames sent out of it (ARP included).
    pub downlink_rx: PacketBytes,
    pub downlink_tx: PacketBytes,
    /// The edge's health-check port (the checkers' namespace).
    pub probe_rx: PacketBytes,
    pub probe_tx: PacketBytes,
    pub tunnels: Vec<TunnelCounters>,
    pub dhcp: DhcpCounters,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            drops: [0; DropReason::ALL.len()],
            layers: [LayerCounters::default(); LayerId::ALL.len()],
            port_rx: PacketBytes::default(),
            port_tx: PacketBytes::default(),
            underlay_rx: PacketBytes::default(),
            underlay_tx: PacketBytes::default(),
            downlink_rx: PacketBytes::default(),
            downlink_tx: PacketBytes::default(),
            probe_rx: PacketBytes::default(),
            probe_tx: PacketBytes::default(),
            tunnels: Vec::new(),
            dhcp: DhcpCounters::default(),
        }
    }
}

impl Counters {
    #[inline]
    pub fn drop(&mut self, reason: DropReason) {
        self.drops[reason as usize] += 1;
    }

    /// Count of one drop reason.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize]
    }

    /// Total over all drop reasons.
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }
}
