//! A connection's state, what one packet does to it, and the idle timeout
//! of each state, with IPVS's meaning: a TCP connection counts as *active*
//! (`ActiveConn`) only while ESTABLISHED, as *inactive* (`InActConn`) in
//! every other state; UDP is always inactive.
//!
//! The TCP tracking is what the timeouts and the two counts need (the
//! firewall checks windows and sequence numbers): a client SYN opens the
//! connection in SYN_RECV; the client's ACK after it makes it ESTABLISHED;
//! the first FIN (either side) moves it to FIN_WAIT, the other side's FIN
//! to TIME_WAIT; a RST closes it (CLOSE). A client SYN on a connection in
//! TIME_WAIT or CLOSE (the port pair reused) ends it: the balancer
//! schedules a new connection, as IPVS does with `conn_reuse_mode` 1.
//!
//! This is not the NAT's machine (`nat::state`), on purpose: the NAT
//! follows RFC 5382 (any segment but a RST opens a session, the other
//! side's answer establishes it, one transitory timeout for the rest),
//! the balancer follows IPVS: only a client SYN opens, ESTABLISHED waits
//! for the client's ACK, each state is one `ipvsadm -Lnc` prints with its
//! own timeout (`ipvsadm --set`), and ActiveConn/InActConn, which `lc`,
//! `wlc`, `sed`, `nq` and the locality schedulers balance on, split
//! ESTABLISHED from the rest. One shared machine would bend either the
//! NAT's RFC behaviour or the schedulers' counts. Nor is it the
//! firewall's (`firewall::tcp`), which checks windows and sequence numbers.

use serde::{Deserialize, Serialize};

// TCP flag bits (the header's 13th byte).
use geneve::tcp::{ACK as TCP_ACK, FIN as TCP_FIN, RST as TCP_RST, SYN as TCP_SYN};

/// Connection flag: a FIN came from the client / from the real server.
pub(crate) const FIN_IN: u8 = 0x01;
pub(crate) const FIN_OUT: u8 = 0x02;

/// Which way a packet travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dir {
    /// Client to virtual server (IPVS's INPUT).
    Forward,
    /// Real server back to the client (IPVS's OUTPUT).
    Reverse,
}

/// Where a connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[repr(u8)]
pub enum ConnState {
    /// The client's SYN seen, not yet its ACK.
    SynRecv = 0,
    Established = 1,
    /// One side sent a FIN.
    FinWait = 2,
    /// Both sides sent a FIN.
    TimeWait = 3,
    /// Reset.
    Close = 4,
    Udp = 5,
}

impl ConnState {
    pub(crate) const COUNT: usize = 6;

    /// The name `ipvsadm -Lnc` prints.
    pub fn name(self) -> &'static str {
        match self {
            ConnState::SynRecv => "SYN_RECV",
            ConnState::Established => "ESTABLISHED",
            ConnState::FinWait => "FIN_WAIT",
            ConnState::TimeWait => "TIME_WAIT",
            ConnState::Close => "CLOSE",
            ConnState::Udp => "UDP",
        }
    }

    pub(crate) fn from_code(c: u8) -> ConnState {
        match c {
            0 => ConnState::SynRecv,
            1 => ConnState::Established,
            2 => ConnState::FinWait,
            3 => ConnState::TimeWait,
            4 => ConnState::Close,
            _ => ConnState::Udp,
        }
    }

    /// Counted in ActiveConn (else InActConn).
    pub fn is_active(self) -> bool {
        self == ConnState::Established
    }

    /// The idle timeout of this state, in seconds.
    pub fn timeout_secs(self, t: &Timeouts) -> u32 {
        match self {
            ConnState::SynRecv => t.tcp_syn_recv,
            ConnState::Established => t.tcp_established,
            ConnState::FinWait => t.tcp_fin_wait,
            ConnState::TimeWait => t.tcp_time_wait,
            ConnState::Close => t.tcp_close,
            ConnState::Udp => t.udp,
        }
    }
}

/// Idle timeouts per state, seconds (IPVS's defaults; `ipvsadm --set tcp
/// tcpfin udp` sets the established, FIN_WAIT and UDP ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    pub tcp_established: u32,
    pub tcp_syn_recv: u32,
    pub tcp_fin_wait: u32,
    pub tcp_time_wait: u32,
    pub tcp_close: u32,
    pub udp: u32,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            tcp_established: 900,
            tcp_syn_recv: 60,
            tcp_fin_wait: 120,
            tcp_time_wait: 120,
            tcp_close: 10,
            udp: 300,
        }
    }
}

/// Whether a packet with TCP flags `flags` may open a connection: a SYN
/// without ACK, RST or FIN. Any UDP datagram may.
#[inline(always)]
pub(crate) fn opens(tcp: bool, flags: u8) -> bool {
    !tcp || flags & (TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN) == TCP_SYN
}

/// The state a new connection starts in.
pub(crate) fn first(tcp: bool) -> ConnState {
    if tcp {
        ConnState::SynRecv
    } else {
        ConnState::Udp
    }
}

/// Whether a client SYN ends this connection for a new one (its port pair
/// reused).
pub(crate) fn reopens(state: ConnState, flags: u8) -> bool {
    matches!(state, ConnState::TimeWait | ConnState::Close)
        && flags & (TCP_SYN | TCP_ACK | TCP_RST) == TCP_SYN
}

/// The state and FIN flags after a packet going `dir` with TCP flags
/// `flags` (UDP stays UDP).
#[inline(always)]
pub(crate) fn next(state: ConnState, fins: u8, dir: Dir, flags: u8) -> (ConnState, u8) {
    use ConnState::*;
    if state == Udp {
        return (Udp, fins);
    }
    if flags & TCP_RST != 0 {
        return (Close, fins);
    }
    if dir == Dir::Forward && reopens(state, flags) {
        return (SynRecv, 0);
    }
    let mut fins = fins;
    if flags & TCP_FIN != 0 {
        fins |= match dir {
            Dir::Forward => FIN_IN,
            Dir::Reverse => FIN_OUT,
        };
    }
    let st = match state {
        SynRecv | Established if fins == FIN_IN | FIN_OUT => TimeWait,
        SynRecv | Established if fins != 0 => FinWait,
        SynRecv if dir == Dir::Forward && flags & (TCP_SYN | TCP_ACK) == TCP_ACK => Established,
        FinWait if fins == FIN_IN | FIN_OUT => TimeWait,
        s => s,
    };
    (st, fins)
}

#[cfg(test)]
mod tests {
    use super::ConnState::*;
    use super::*;

    #[test]
    fn tcp_lifecycle() {
        let s = first(true);
        assert_eq!(s, SynRecv);
        // The server's SYN-ACK leaves it in SYN_RECV; the client's ACK establishes.
        let (s, f) = next(s, 0, Dir::Reverse, TCP_SYN | TCP_ACK);
        assert_eq!(s, SynRecv);
        let (s, f) = next(s, f, Dir::Forward, TCP_ACK);
        assert_eq!(s, Established);
        assert!(s.is_active());
        let (s, f) = next(s, f, Dir::Reverse, TCP_FIN | TCP_ACK);
        assert_eq!((s, f), (FinWait, FIN_OUT));
        let (s, f) = next(s, f, Dir::Reverse, TCP_ACK);
        assert_eq!(s, FinWait);
        let (s, f) = next(s, f, Dir::Forward, TCP_FIN | TCP_ACK);
        assert_eq!((s, f), (TimeWait, FIN_IN | FIN_OUT));
        assert!(!s.is_active());
        // Reused by a new SYN from the client; not by one from the server.
        assert_eq!(next(s, f, Dir::Reverse, TCP_SYN).0, TimeWait);
        assert_eq!(next(s, f, Dir::Forward, TCP_SYN), (SynRecv, 0));
        assert_eq!(
            next(Established, 0, Dir::Forward, TCP_RST | TCP_ACK).0,
            Close
        );
        assert_eq!(next(Udp, 0, Dir::Forward, 0xff), (Udp, 0));
    }

    #[test]
    fn opening_and_timeouts() {
        assert!(opens(true, TCP_SYN));
        assert!(!opens(true, TCP_SYN | TCP_ACK));
        assert!(!opens(true, TCP_ACK));
        assert!(!opens(true, TCP_SYN | TCP_RST));
        assert!(opens(false, 0));
        let t = Timeouts::default();
        let secs: Vec<u32> = (0..ConnState::COUNT)
            .map(|c| ConnState::from_code(u8::try_from(c).unwrap()).timeout_secs(&t))
            .collect();
        assert_eq!(secs, [60, 900, 120, 120, 10, 300]);
        for c in 0..ConnState::COUNT {
            let c8 = u8::try_from(c).unwrap();
            assert_eq!(ConnState::from_code(c8) as u8, c8);
        }
    }
}
