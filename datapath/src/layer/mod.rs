//! The pipeline's layers. Each layer is a small module with one job, a
//! default action, and its own counters (kept by the driver in
//! [`crate::pipeline`]). The order of layers is data: [`EGRESS`] and
//! [`INGRESS`] list them, and the driver walks the list.

use std::net::Ipv4Addr;

use control::MacAddr;

use crate::counters::DropReason;
use crate::offload::{Offload, Plan};
use crate::tables::{SwitchIdx, TepIdx};

pub(crate) mod decap;
pub(crate) mod deliver;
pub(crate) mod encap;
pub(crate) mod firewall;
pub(crate) mod port_security;
pub(crate) mod responder;
pub(crate) mod router;
pub(crate) mod switch;

/// Names the layers; the discriminant indexes the layer counter table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum LayerId {
    /// SpoofGuard: frames from the port must carry its MAC and IP.
    PortSecurity,
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
}

impl LayerId {
    pub const ALL: [LayerId; 8] = [
        LayerId::PortSecurity,
        LayerId::Firewall,
        LayerId::Responder,
        LayerId::Switch,
        LayerId::Router,
        LayerId::Encap,
        LayerId::Decap,
        LayerId::Deliver,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            LayerId::PortSecurity => "port-security",
            LayerId::Firewall => "firewall",
            LayerId::Responder => "responder",
            LayerId::Switch => "switch",
            LayerId::Router => "router",
            LayerId::Encap => "encap",
            LayerId::Decap => "decap",
            LayerId::Deliver => "deliver",
        }
    }
}

/// Frames from the local port toward the network, in order.
pub const EGRESS: [LayerId; 6] = [
    LayerId::PortSecurity,
    LayerId::Firewall,
    LayerId::Responder,
    LayerId::Switch,
    LayerId::Router,
    LayerId::Encap,
];

/// Geneve packets from the underlay toward the local port, in order.
pub const INGRESS: [LayerId; 3] = [LayerId::Decap, LayerId::Firewall, LayerId::Deliver];

/// How the firewall's answer to a rejected ingress packet goes back to its
/// sender: switched, routed and encapsulated like a frame from the port.
pub(crate) const ANSWER: [LayerId; 3] = [LayerId::Switch, LayerId::Router, LayerId::Encap];

/// What a layer decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Hand the frame to the next layer.
    Next,
    /// The frame is finished.
    Done(Verdict),
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
    /// Delivered to the local port.
    Delivered,
}

impl Verdict {
    pub fn is_drop(&self) -> bool {
        matches!(self, Verdict::Drop(_))
    }
}

/// IPv4 fields the layers look at, read once by port security or decap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ipv4Meta {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ttl: u8,
    pub protocol: u8,
    pub dont_frag: bool,
    pub total_len: u16,
    /// First byte of the L4 header (ICMP type), 0 if absent.
    pub l4_first: u8,
}

/// Where the encapsulation layer sends the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    Unicast { tep: TepIdx, vni: u32 },
    Flood { switch: SwitchIdx },
}

/// Per-frame state carried between layers.
#[derive(Debug)]
pub(crate) struct Ctx<'a> {
    /// The Ethernet frame being processed (inner frame on ingress).
    pub frame: &'a [u8],
    pub dst: MacAddr,
    pub src: MacAddr,
    pub ethertype: u16,
    pub ipv4: Option<Ipv4Meta>,
    /// Logical switch the frame is on.
    pub switch: SwitchIdx,
    /// Set by the switch layer when the frame is addressed to the router MAC.
    pub to_router: bool,
    /// Rewrite the routed frame's MACs (dst, src) and decrement its TTL.
    pub rewrite: Option<(MacAddr, MacAddr)>,
    pub target: Option<Target>,
    /// Underlay source of an ingress packet.
    pub outer_src: Ipv4Addr,
    /// Checksum/segmentation work the frame still needs (egress only).
    pub offload: Offload,
    /// How a super-frame splits (set by port security when `offload.gso` is).
    pub segments: Option<Plan>,
    /// Set by the firewall on ingress: answer the sender (RST / unreachable).
    pub reject: Option<::firewall::RejectKind>,
}

impl<'a> Ctx<'a> {
    pub fn new(frame: &'a [u8]) -> Ctx<'a> {
        Ctx {
            frame,
            dst: MacAddr::default(),
            src: MacAddr::default(),
            ethertype: 0,
            ipv4: None,
            switch: 0,
            to_router: false,
            rewrite: None,
            target: None,
            outer_src: Ipv4Addr::UNSPECIFIED,
            offload: Offload::NONE,
            segments: None,
            reject: None,
        }
    }

    /// IPv4 length of the largest packet this frame becomes on the overlay
    /// (a super-frame's largest segment).
    pub fn wire_l3_len(&self) -> usize {
        match &self.segments {
            Some(plan) => plan.max_ip_len(),
            None => self
                .frame
                .len()
                .saturating_sub(geneve::ethernet::HEADER_LEN),
        }
    }

    /// Reads the Ethernet header (and IPv4 header if present) into the context.
    pub fn parse_l2_l3(&mut self) -> Result<(), DropReason> {
        let eth =
            geneve::ethernet::Frame::new_checked(self.frame).map_err(|_| DropReason::Malformed)?;
        self.dst = MacAddr(eth.dst());
        self.src = MacAddr(eth.src());
        self.ethertype = eth.ethertype();
        if self.ethertype == geneve::ethernet::ETHERTYPE_IPV4 {
            let ip = geneve::ipv4::Packet::new_checked(eth.payload())
                .map_err(|_| DropReason::Malformed)?;
            self.ipv4 = Some(Ipv4Meta {
                src: ip.src(),
                dst: ip.dst(),
                ttl: ip.ttl(),
                protocol: ip.protocol(),
                dont_frag: ip.dont_frag(),
                total_len: ip.total_len(),
                l4_first: ip.payload().first().copied().unwrap_or(0),
            });
        }
        Ok(())
    }
}
