//! The vocabulary shared by the classifier and connection tracking: what a
//! packet looks like once parsed down to L4 ([`Tuple`], [`L4`]), the
//! direction it travels relative to the instance ([`Dir`]), and the
//! canonical connection key ([`FlowKey`]). Plain `Copy` data, no behaviour
//! beyond building keys.

use std::net::Ipv4Addr;

/// Direction relative to the instance: `In` = toward it, `Out` = from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Dir {
    In,
    Out,
}

impl Dir {
    pub fn reverse(self) -> Dir {
        match self {
            Dir::In => Dir::Out,
            Dir::Out => Dir::In,
        }
    }

    /// True when a rule written for `d` applies to packets going this way.
    pub fn matches(self, d: control::Direction) -> bool {
        matches!(
            (self, d),
            (_, control::Direction::InOut)
                | (Dir::In, control::Direction::In)
                | (Dir::Out, control::Direction::Out)
        )
    }
}

/// TCP header fields connection tracking looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpMeta {
    pub flags: u8,
    pub seq: u32,
    pub ack: u32,
    /// Raw window field (unscaled).
    pub window: u16,
    /// Window-scale option value if the segment carries one (SYN only).
    pub wscale: Option<u8>,
    /// Payload bytes (for a TSO super-frame: all of them).
    pub payload_len: u32,
}

impl TcpMeta {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;

    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

/// The L4 part of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4 {
    Tcp(TcpMeta),
    Udp,
    /// ICMP echo request/reply and other ICMP queries: `ident` plays the
    /// role of a port (stored as the tuple's `sport` and `dport`).
    IcmpQuery {
        ty: u8,
        code: u8,
    },
    /// An ICMP error (unreachable, time exceeded, ...) carrying the header
    /// of the packet that caused it: `inner` is that packet's tuple, as it
    /// was sent (so its reverse is the direction the error travels).
    IcmpError {
        ty: u8,
        code: u8,
        inner: Tuple,
    },
    /// Any other IP protocol (no ports).
    Other,
}

/// An IPv4 packet's 5-tuple as sent (not normalised). For ICMP queries the
/// identifier is in both `sport` and `dport`; for protocols without ports
/// both are 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tuple {
    pub proto: u8,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
}

impl Tuple {
    pub fn reverse(&self) -> Tuple {
        Tuple {
            proto: self.proto,
            src: self.dst,
            dst: self.src,
            sport: self.dport,
            dport: self.sport,
        }
    }
}

/// A connection's key, the same for both directions: the (address, port)
/// endpoints in a canonical order, the lower one first. `Tuple::key`
/// returns it with a flag telling whether the tuple was reversed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    pub proto: u8,
    pub lo_ip: u32,
    pub hi_ip: u32,
    pub lo_port: u16,
    pub hi_port: u16,
}

impl Tuple {
    /// The canonical key and whether `self` goes hi -> lo (`true`) rather than lo -> hi.
    pub fn key(&self) -> (FlowKey, bool) {
        let a = (u32::from(self.src), self.sport);
        let b = (u32::from(self.dst), self.dport);
        let (lo, hi, swapped) = if a <= b { (a, b, false) } else { (b, a, true) };
        (
            FlowKey {
                proto: self.proto,
                lo_ip: lo.0,
                hi_ip: hi.0,
                lo_port: lo.1,
                hi_port: hi.1,
            },
            swapped,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_direction_independent() {
        let t = Tuple {
            proto: 6,
            src: Ipv4Addr::new(10, 0, 0, 9),
            dst: Ipv4Addr::new(10, 0, 0, 1),
            sport: 40000,
            dport: 22,
        };
        let (k1, s1) = t.key();
        let (k2, s2) = t.reverse().key();
        assert_eq!(k1, k2);
        assert_ne!(s1, s2);
    }
}
