//! Counters of the pipeline: one per drop reason, per layer, per tunnel
//! endpoint and for the local port. Plain `u64`s owned by the pipeline (the
//! datapath thread is their only writer); the agent publishes copies.

use std::net::Ipv4Addr;

use serde::Serialize;

/// Why a frame was dropped. Each reason has its own counter and a stable
/// snake_case name used by the local API, metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DropReason {
    // --- Geneve from the underlay (each `geneve::GeneveError` maps to one) ---
    GeneveTruncated,
    GeneveBadVersion,
    GeneveOptionsOverrun,
    GeneveBadOptionLength,
    GeneveUnknownCriticalOption,
    GeneveBadProtocol,
    GeneveMissingCriticalFlag,
    GeneveBadVmwareOption,
    /// The sender's underlay address is not a known tunnel endpoint.
    UnknownTunnel,
    /// The VMware option's endpoint id does not match the sending endpoint.
    TepIdMismatch,
    /// The VNI is not a switch this instance knows.
    UnknownVni,
    /// Decapsulated frame not addressed to the local port (or a switch we host no port on).
    NotForPort,
    // --- frames from the local port ---
    /// Shorter than an Ethernet header, or a broken IPv4/ARP header.
    Malformed,
    /// Ethertype other than IPv4/ARP.
    UnsupportedEthertype,
    SpoofedSrcMac,
    SpoofedSrcIp,
    SpoofedArp,
    /// ARP request for an address nobody on the switch owns (never flooded).
    ArpUnknownTarget,
    /// The instance has no port (micro-segmentation mode) or no config yet.
    NoPort,
    /// Destination is the port itself.
    Hairpin,
    /// IPv4 to a router address that is not an ICMP echo request.
    ToRouter,
    /// No route to the destination.
    NoRoute,
    /// Routed to an address no port owns.
    NoNeighbor,
    /// TTL ran out at the router (an ICMP time exceeded was sent).
    TtlExceeded,
    /// DF packet larger than the overlay MTU (an ICMP frag-needed was sent).
    FragNeeded,
    /// Packet larger than the overlay MTU without DF (not fragmented).
    TooBig,
    /// Broadcast/unknown unicast with no remote endpoint on the switch.
    FloodNoEndpoints,
    /// Output batch full.
    TxFull,
    /// Offload metadata (partial checksum, segmentation) that cannot be honoured.
    BadOffload,
    /// The distributed firewall dropped or rejected it (its own counters say why).
    Firewall,
}

impl DropReason {
    /// Every reason, in counter-table order.
    pub const ALL: [DropReason; 30] = [
        DropReason::GeneveTruncated,
        DropReason::GeneveBadVersion,
        DropReason::GeneveOptionsOverrun,
        DropReason::GeneveBadOptionLength,
        DropReason::GeneveUnknownCriticalOption,
        DropReason::GeneveBadProtocol,
        DropReason::GeneveMissingCriticalFlag,
        DropReason::GeneveBadVmwareOption,
        DropReason::UnknownTunnel,
        DropReason::TepIdMismatch,
        DropReason::UnknownVni,
        DropReason::NotForPort,
        DropReason::Malformed,
        DropReason::UnsupportedEthertype,
        DropReason::SpoofedSrcMac,
        DropReason::SpoofedSrcIp,
        DropReason::SpoofedArp,
        DropReason::ArpUnknownTarget,
        DropReason::NoPort,
        DropReason::Hairpin,
        DropReason::ToRouter,
        DropReason::NoRoute,
        DropReason::NoNeighbor,
        DropReason::TtlExceeded,
        DropReason::FragNeeded,
        DropReason::TooBig,
        DropReason::FloodNoEndpoints,
        DropReason::TxFull,
        DropReason::BadOffload,
        DropReason::Firewall,
    ];

    /// Stable name for APIs and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            DropReason::GeneveTruncated => "geneve_truncated",
            DropReason::GeneveBadVersion => "geneve_bad_version",
            DropReason::GeneveOptionsOverrun => "geneve_options_overrun",
            DropReason::GeneveBadOptionLength => "geneve_bad_option_length",
            DropReason::GeneveUnknownCriticalOption => "geneve_unknown_critical_option",
            DropReason::GeneveBadProtocol => "geneve_bad_protocol",
            DropReason::GeneveMissingCriticalFlag => "geneve_missing_critical_flag",
            DropReason::GeneveBadVmwareOption => "geneve_bad_vmware_option",
            DropReason::UnknownTunnel => "unknown_tunnel",
            DropReason::TepIdMismatch => "tep_id_mismatch",
            DropReason::UnknownVni => "unknown_vni",
            DropReason::NotForPort => "not_for_port",
            DropReason::Malformed => "malformed",
            DropReason::UnsupportedEthertype => "unsupported_ethertype",
            DropReason::SpoofedSrcMac => "spoofed_src_mac",
            DropReason::SpoofedSrcIp => "spoofed_src_ip",
            DropReason::SpoofedArp => "spoofed_arp",
            DropReason::ArpUnknownTarget => "arp_unknown_target",
            DropReason::NoPort => "no_port",
            DropReason::Hairpin => "hairpin",
            DropReason::ToRouter => "to_router",
            DropReason::NoRoute => "no_route",
            DropReason::NoNeighbor => "no_neighbor",
            DropReason::TtlExceeded => "ttl_exceeded",
            DropReason::FragNeeded => "frag_needed",
            DropReason::TooBig => "too_big",
            DropReason::FloodNoEndpoints => "flood_no_endpoints",
            DropReason::TxFull => "tx_full",
            DropReason::BadOffload => "bad_offload",
            DropReason::Firewall => "firewall",
        }
    }

    /// Maps a Geneve parse error to its drop reason.
    pub fn from_geneve(e: &geneve::GeneveError) -> DropReason {
        use geneve::GeneveError as E;
        match e {
            E::Truncated => DropReason::GeneveTruncated,
            E::BadVersion(_) => DropReason::GeneveBadVersion,
            E::OptionsOverrun { .. } => DropReason::GeneveOptionsOverrun,
            E::BadOptionLength => DropReason::GeneveBadOptionLength,
            E::UnknownCriticalOption { .. } => DropReason::GeneveUnknownCriticalOption,
            E::BadProtocol(_) => DropReason::GeneveBadProtocol,
            E::MissingCriticalFlag => DropReason::GeneveMissingCriticalFlag,
            // Emit-only errors cannot come out of parse; count them as malformed options.
            _ => DropReason::GeneveBadVmwareOption,
        }
    }
}

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

/// All counters of one pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counters {
    pub drops: [u64; DropReason::ALL.len()],
    pub layers: [LayerCounters; crate::layer::LayerId::ALL.len()],
    /// Frames received from the local port (instance -> network).
    pub port_rx: PacketBytes,
    /// Frames delivered to the local port (network -> instance), replies included.
    pub port_tx: PacketBytes,
    /// Geneve packets received from the underlay (before validation).
    pub underlay_rx: PacketBytes,
    /// Geneve packets built for the underlay.
    pub underlay_tx: PacketBytes,
    pub tunnels: Vec<TunnelCounters>,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            drops: [0; DropReason::ALL.len()],
            layers: [LayerCounters::default(); crate::layer::LayerId::ALL.len()],
            port_rx: PacketBytes::default(),
            port_tx: PacketBytes::default(),
            underlay_rx: PacketBytes::default(),
            underlay_tx: PacketBytes::default(),
            tunnels: Vec::new(),
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
