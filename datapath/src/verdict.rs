//! The names every part of the pipeline shares: the layers ([`LayerId`]),
//! the outcome of a frame ([`Verdict`]) and why one was dropped
//! ([`DropReason`]). Below both the layers and the counters, so neither
//! imports the other.

/// Names the layers; the discriminant indexes the layer counter table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum LayerId {
    /// SpoofGuard: frames from the port must carry its MAC and IP.
    PortSecurity,
    /// The switch's DHCP server for the port; rogue DHCP servers dropped.
    Dhcp,
    /// Distributed firewall: stateful L2-L4 rules, both directions.
    Firewall,
    /// Local answers: ARP for known addresses, ICMP echo to router addresses.
    Responder,
    /// Logical switch: destination MAC -> endpoint, router, or flood.
    Switch,
    /// Distributed router at the sender: LPM, TTL - 1, MAC rewrite.
    Router,
    /// Geneve encapsulation toward the chosen endpoint(s).
    Encap,
    /// Geneve validation and VNI -> switch on the way in.
    Decap,
    /// Delivery to the local port.
    Deliver,
    /// Micro-segmentation: a judged frame passes on unchanged, to the host
    /// (from the NIC) or out of the NIC (from the host).
    Forward,
    /// The edge's uplink, a frame received: ARP for the uplink's
    /// addresses answered and learned, only IPv4 for the tier-0 passes.
    UplinkIn,
    /// The edge's NAT: SNAT, public IPs (1:1), hairpinning, ICMP errors.
    Nat,
    /// The edge's tier-0 router: LPM over the uplink, static and default
    /// routes and the tier-1s' subnets; TTL - 1; MTU.
    Tier0,
    /// The edge's uplink, a frame sent: next hop's MAC from ARP, rewrites.
    UplinkOut,
    /// The edge's downlink (its underlay interface), a frame received:
    /// ARP learned (never answered: the kernel owns the address), IPv4 to
    /// the overlay or to the downlink's NAT passes.
    DownlinkIn,
    /// The edge's downlink, a frame sent: as `uplink-out`, from the
    /// underlay bridge's MAC.
    DownlinkOut,
    /// The L4 load balancer: a connection to a virtual server gets its
    /// real server (scheduled, or the one it has), its answers the
    /// virtual server's address back.
    Lb,
    /// The edge's health-check port, a frame received from the checkers'
    /// namespace: ARP answered for any address but theirs, IPv4 only from
    /// the health-check address.
    ProbeIn,
    /// The edge's health-check port, a frame sent: an answer of a real
    /// server to the checkers.
    ProbeOut,
}

impl LayerId {
    pub const ALL: [LayerId; 19] = [
        LayerId::PortSecurity,
        LayerId::Dhcp,
        LayerId::Firewall,
        LayerId::Responder,
        LayerId::Switch,
        LayerId::Router,
        LayerId::Encap,
        LayerId::Decap,
        LayerId::Deliver,
        LayerId::Forward,
        LayerId::UplinkIn,
        LayerId::Nat,
        LayerId::Tier0,
        LayerId::UplinkOut,
        LayerId::DownlinkIn,
        LayerId::DownlinkOut,
        LayerId::Lb,
        LayerId::ProbeIn,
        LayerId::ProbeOut,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            LayerId::PortSecurity => "port-security",
            LayerId::Dhcp => "dhcp",
            LayerId::Firewall => "firewall",
            LayerId::Responder => "responder",
            LayerId::Switch => "switch",
            LayerId::Router => "router",
            LayerId::Encap => "encap",
            LayerId::Decap => "decap",
            LayerId::Deliver => "deliver",
            LayerId::Forward => "forward",
            LayerId::UplinkIn => "uplink-in",
            LayerId::Nat => "nat",
            LayerId::Tier0 => "tier0",
            LayerId::UplinkOut => "uplink-out",
            LayerId::DownlinkIn => "downlink-in",
            LayerId::DownlinkOut => "downlink-out",
            LayerId::Lb => "lb",
            LayerId::ProbeIn => "probe-in",
            LayerId::ProbeOut => "probe-out",
        }
    }
}

/// Final outcome for one input frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Drop(DropReason),
    /// Answered locally (ARP reply, ICMP echo reply); output on the port queue.
    Replied,
    /// Consumed without output (e.g. a gratuitous ARP for the port's own address).
    Absorbed,
    /// Encapsulated toward `copies` endpoints (more than one for a flood).
    Encapsulated {
        copies: u16,
    },
    /// Delivered to the local port (micro-segmentation: passed to the host).
    Delivered,
    /// Micro-segmentation: passed out of the NIC, unchanged.
    Forwarded,
}

impl Verdict {
    pub fn is_drop(&self) -> bool {
        matches!(self, Verdict::Drop(_))
    }
}

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
    /// No VMware option: the sender's endpoint id cannot be checked.
    GeneveMissingVmwareOption,
    /// The sender's underlay address is not a known tunnel endpoint.
    UnknownTunnel,
    /// The VMware option's endpoint id does not match the sending endpoint.
    TepIdMismatch,
    /// The VNI is not a switch this instance knows.
    UnknownVni,
    /// The inner source (MAC, IPv4 source of a switched or routed frame, ARP
    /// sender) is not a port behind the sending endpoint.
    SpoofedInnerSrc,
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
    /// A DHCP server message (UDP 67 -> 68) from the port.
    RogueDhcpServer,
    /// The distributed firewall dropped or rejected it (its own counters say why).
    Firewall,
    // --- the edge ---
    /// On the uplink, not for the tier-0 (another MAC or address, or not IPv4/ARP).
    NotForEdge,
    /// The uplink next hop's MAC is not known yet (an ARP request was sent).
    ArpPending,
    /// Inbound on the uplink to an address and port no NAT mapping holds.
    NatNoMapping,
    /// Inbound to a mapping from a remote it has not sent to (address-dependent filtering).
    NatFiltered,
    /// No external port free for a new mapping (or the session table is full).
    NatExhausted,
    /// A packet NAT cannot translate (a non-first fragment, a truncated header).
    NatUntranslatable,
    /// From the downlink to an overlay address while the tier-0 source-NATs
    /// the overlay toward the downlink (`underlay_snat`): only answers to
    /// what the overlay opened come in.
    DownlinkPolicy,
    /// A new connection to a virtual server with no server to take it
    /// (every real server down or drained, no sorry server).
    LbNoServer,
    /// A TCP segment to a virtual server that opens nothing (not a SYN)
    /// and belongs to no balanced connection.
    LbNoConnection,
    /// The balancer's connection table is full, or full-NAT found no free
    /// source port.
    LbExhausted,
    /// A packet to a virtual server the balancer cannot translate (a
    /// fragment, a truncated header).
    LbUntranslatable,
}

impl DropReason {
    /// Every reason, in counter-table order.
    pub const ALL: [DropReason; 44] = [
        DropReason::GeneveTruncated,
        DropReason::GeneveBadVersion,
        DropReason::GeneveOptionsOverrun,
        DropReason::GeneveBadOptionLength,
        DropReason::GeneveUnknownCriticalOption,
        DropReason::GeneveBadProtocol,
        DropReason::GeneveMissingCriticalFlag,
        DropReason::GeneveBadVmwareOption,
        DropReason::GeneveMissingVmwareOption,
        DropReason::UnknownTunnel,
        DropReason::TepIdMismatch,
        DropReason::UnknownVni,
        DropReason::SpoofedInnerSrc,
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
        DropReason::RogueDhcpServer,
        DropReason::Firewall,
        DropReason::NotForEdge,
        DropReason::ArpPending,
        DropReason::NatNoMapping,
        DropReason::NatFiltered,
        DropReason::NatExhausted,
        DropReason::NatUntranslatable,
        DropReason::DownlinkPolicy,
        DropReason::LbNoServer,
        DropReason::LbNoConnection,
        DropReason::LbExhausted,
        DropReason::LbUntranslatable,
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
            DropReason::GeneveMissingVmwareOption => "geneve_missing_vmware_option",
            DropReason::UnknownTunnel => "unknown_tunnel",
            DropReason::TepIdMismatch => "tep_id_mismatch",
            DropReason::UnknownVni => "unknown_vni",
            DropReason::SpoofedInnerSrc => "spoofed_inner_src",
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
            DropReason::RogueDhcpServer => "rogue_dhcp_server",
            DropReason::Firewall => "firewall",
            DropReason::NotForEdge => "not_for_edge",
            DropReason::ArpPending => "arp_pending",
            DropReason::NatNoMapping => "nat_no_mapping",
            DropReason::NatFiltered => "nat_filtered",
            DropReason::NatExhausted => "nat_exhausted",
            DropReason::NatUntranslatable => "nat_untranslatable",
            DropReason::DownlinkPolicy => "downlink_policy",
            DropReason::LbNoServer => "lb_no_server",
            DropReason::LbNoConnection => "lb_no_connection",
            DropReason::LbExhausted => "lb_exhausted",
            DropReason::LbUntranslatable => "lb_untranslatable",
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
