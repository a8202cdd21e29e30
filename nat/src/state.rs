//! A session's state and what one packet does to it, and the idle timeout
//! each state gets. TCP is tracked only as far as the timeouts need
//! (RFC 5382 REQ-5): a SYN (or a first packet picked up mid-stream) opens
//! a *transitory* session, any packet from the other side makes it
//! *established*, FIN seen both ways or a RST makes it transitory again
//! (*closing*), and a SYN on a closing session re-opens it. Windows and
//! sequence numbers are the firewall's business.

use serde::{Deserialize, Serialize};

// TCP flag bits (the header's 13th byte).
use geneve::tcp::{ACK as TCP_ACK, FIN as TCP_FIN, RST as TCP_RST, SYN as TCP_SYN};

use crate::config::Timeouts;
use crate::packet::{PROTO_ICMP, PROTO_TCP};

/// Which side a packet comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dir {
    /// From the inside, leaving by the uplink (or hairpinned back in).
    Out,
    /// From the uplink, toward the inside.
    In,
}

/// Where a session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum SessionState {
    /// TCP opened from the inside, not answered yet (transitory).
    TcpSynOut = 0,
    /// TCP opened from the outside, not answered yet (transitory).
    TcpSynIn = 1,
    /// TCP answered (established timeout).
    TcpEstablished = 2,
    /// TCP with FIN seen both ways, or a RST (transitory).
    TcpClosing = 3,
    Udp = 4,
    /// An ICMP query (echo, timestamp, ...).
    Icmp = 5,
}

/// Session flag: a FIN went out / came in.
pub(crate) const FIN_OUT: u8 = 0x01;
pub(crate) const FIN_IN: u8 = 0x02;

impl SessionState {
    pub(crate) const COUNT: usize = 6;

    /// Short display name.
    pub fn name(self) -> &'static str {
        match self {
            SessionState::TcpSynOut => "SYN_OUT",
            SessionState::TcpSynIn => "SYN_IN",
            SessionState::TcpEstablished => "ESTABLISHED",
            SessionState::TcpClosing => "CLOSING",
            SessionState::Udp => "UDP",
            SessionState::Icmp => "ICMP",
        }
    }

    pub(crate) fn from_code(c: u8) -> SessionState {
        match c {
            0 => SessionState::TcpSynOut,
            1 => SessionState::TcpSynIn,
            2 => SessionState::TcpEstablished,
            3 => SessionState::TcpClosing,
            4 => SessionState::Udp,
            _ => SessionState::Icmp,
        }
    }

    /// The idle timeout of this state, in seconds.
    pub fn timeout_secs(self, t: &Timeouts) -> u32 {
        match self {
            SessionState::TcpSynOut | SessionState::TcpSynIn | SessionState::TcpClosing => {
                t.tcp_transitory
            }
            SessionState::TcpEstablished => t.tcp_established,
            SessionState::Udp => t.udp,
            SessionState::Icmp => t.icmp,
        }
    }

    /// Whether this state belongs to protocol `proto`.
    pub fn fits(self, proto: u8) -> bool {
        match self {
            SessionState::Udp => proto == crate::packet::PROTO_UDP,
            SessionState::Icmp => proto == PROTO_ICMP,
            _ => proto == PROTO_TCP,
        }
    }
}

/// What a packet of no session may do.
pub(crate) fn opens(proto: u8, tcp_flags: u8) -> bool {
    // A RST never opens (nothing to reset); everything else may (a SYN, or
    // a segment picked up after a restart or a configuration change).
    proto != PROTO_TCP || tcp_flags & TCP_RST == 0
}

/// The state a session starts in with its first packet.
pub(crate) fn first(proto: u8, dir: Dir) -> SessionState {
    match (proto, dir) {
        (PROTO_TCP, Dir::Out) => SessionState::TcpSynOut,
        (PROTO_TCP, Dir::In) => SessionState::TcpSynIn,
        (PROTO_ICMP, _) => SessionState::Icmp,
        _ => SessionState::Udp,
    }
}

/// The state and FIN flags after a packet with TCP flags `flags` going
/// `dir` (UDP and ICMP stay as they are).
pub(crate) fn next(state: SessionState, fins: u8, dir: Dir, flags: u8) -> (SessionState, u8) {
    use SessionState::*;
    if !matches!(state, TcpSynOut | TcpSynIn | TcpEstablished | TcpClosing) {
        return (state, fins);
    }
    if flags & TCP_RST != 0 {
        return (TcpClosing, fins);
    }
    if state == TcpClosing && flags & (TCP_SYN | TCP_ACK) == TCP_SYN {
        // The port pair is reused for a new connection.
        return (first(PROTO_TCP, dir), 0);
    }
    let answered = match (state, dir) {
        (TcpSynOut, Dir::In) | (TcpSynIn, Dir::Out) => TcpEstablished,
        (s, _) => s,
    };
    let mut fins = fins;
    if flags & TCP_FIN != 0 {
        fins |= match dir {
            Dir::Out => FIN_OUT,
            Dir::In => FIN_IN,
        };
    }
    if fins == FIN_OUT | FIN_IN {
        return (TcpClosing, fins);
    }
    (answered, fins)
}

#[cfg(test)]
mod tests {
    use super::SessionState::*;
    use super::*;

    #[test]
    fn tcp_lifecycle() {
        let (s, f) = (first(PROTO_TCP, Dir::Out), 0);
        assert_eq!(s, TcpSynOut);
        // Retransmitted SYN: still transitory.
        let (s, f) = next(s, f, Dir::Out, TCP_SYN);
        assert_eq!(s, TcpSynOut);
        let (s, f) = next(s, f, Dir::In, TCP_SYN | TCP_ACK);
        assert_eq!(s, TcpEstablished);
        let (s, f) = next(s, f, Dir::Out, TCP_FIN | TCP_ACK);
        assert_eq!((s, f), (TcpEstablished, FIN_OUT));
        let (s, f) = next(s, f, Dir::In, TCP_FIN | TCP_ACK);
        assert_eq!((s, f), (TcpClosing, FIN_OUT | FIN_IN));
        let (s, f) = next(s, f, Dir::Out, TCP_ACK);
        assert_eq!(s, TcpClosing);
        // Reuse of the port pair.
        let (s, f) = next(s, f, Dir::In, TCP_SYN);
        assert_eq!((s, f), (TcpSynIn, 0));
        let (s, _) = next(s, f, Dir::Out, TCP_SYN | TCP_ACK);
        assert_eq!(s, TcpEstablished);
        assert_eq!(next(TcpEstablished, 0, Dir::In, TCP_RST).0, TcpClosing);
    }

    #[test]
    fn timeouts_and_opening() {
        let t = Timeouts::default();
        assert_eq!(TcpSynOut.timeout_secs(&t), 240);
        assert_eq!(TcpEstablished.timeout_secs(&t), 7440);
        assert_eq!(TcpClosing.timeout_secs(&t), 240);
        assert_eq!(Udp.timeout_secs(&t), 300);
        assert_eq!(Icmp.timeout_secs(&t), 60);
        assert!(!opens(PROTO_TCP, TCP_RST | TCP_ACK));
        assert!(opens(PROTO_TCP, TCP_ACK));
        assert_eq!(next(Udp, 0, Dir::In, 0xff), (Udp, 0));
        for c in 0..SessionState::COUNT {
            let s = SessionState::from_code(u8::try_from(c).unwrap());
            assert_eq!(s as usize, c);
        }
    }
}
