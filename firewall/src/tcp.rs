//! TCP connection tracking: the state machine of one connection and the
//! window tracking of both of its directions.
//!
//! The model is the one Linux `nf_conntrack_proto_tcp` and pf use, after
//! Guido van Rooij, "Real Stateful TCP Packet Filtering in IP Filter". We
//! sit in the middle and see every segment of both directions. For each
//! direction ([`Peer`]) we keep
//!
//! * `end`: the highest sequence number sent, plus one (`td_end`);
//! * `maxend`: the highest sequence number the other side's ACKs and
//!   windows allow (`td_maxend` = max(ack + window) of the other side);
//! * `maxwin`: the largest window this side advertised, scaled (`td_maxwin`);
//! * `scale`: the window scale negotiated in the SYNs (RFC 7323), and
//!   whether this side has sent a FIN.
//!
//! A segment from sender `S` to receiver `R` with sequence `seq`, end
//! `end = seq + len (+1 for SYN, +1 for FIN)` and acknowledgement `ack` is
//! in window when
//!
//! ```text
//! I.   seq <= S.maxend                          (not beyond what R allows)
//! II.  end >= S.end - R.maxwin                  (not older than a retransmission can be)
//! III. ack <= R.end                             (acknowledges nothing R has not sent)
//! IV.  ack >= R.end - max(S.maxwin, 66000)      (not older than a delayed ACK can be)
//! ```
//!
//! Segments without payload (pure ACKs, keep-alives) are checked on their
//! ACK only. The bounds are what make real stacks pass:
//! retransmissions, keep-alives and window probes (a zero window still
//! allows one byte), TSO super-frames (only the *first* byte must be in the
//! window; the excess widens the receiver's recorded window), and SACK
//! recovery (a cumulative ACK may lag by up to the window). SACK blocks
//! themselves are not inspected.
//!
//! States follow Linux's names; [`TcpState::name`] gives the short form the
//! `getflows` view prints (`EST` for established). The transitions:
//!
//! * a pure SYN opens (`SYN_SENT`); a retransmitted or re-issued SYN stays
//!   there; a SYN from the responder instead of a SYN-ACK is a simultaneous
//!   open (`SYN_SENT2`);
//! * the responder's SYN-ACK gives `SYN_RECV`, the initiator's ACK `EST`;
//! * a FIN gives `FIN_WAIT`; the other side's ACK of that FIN `CLOSE_WAIT`
//!   (it may still send data: half-close); its FIN `LAST_ACK`; the ACK of
//!   the last FIN `TIME_WAIT`;
//! * a RST in the window gives `CLOSED` from any state;
//! * a SYN from the initiator on a `TIME_WAIT` or `CLOSED` connection
//!   re-opens it (port reuse, RFC 1122 4.2.2.13).
//!
//! Some segments are let through without touching the state, as Linux
//! "ignores" them: a SYN from the initiator on a synchronized connection
//! (the peer lost its state; the responder answers with a challenge ACK and
//! the initiator's RST then closes us), a late retransmitted SYN-ACK, and
//! an ACK from the responder while we wait for its SYN-ACK (a half-open
//! connection on the responder's side, which the initiator will reset).
//!
//! Two places are deliberately looser than current Linux, which needs a
//! per-direction "highest ACK" we do not store (see `conntrack` for the
//! entry budget): any RST whose sequence number is inside the window closes
//! the connection, not only the exact next one (RFC 5961 3.2); and the
//! check that a FIN has been acknowledged compares the ACK with the
//! FIN's sender's `end`.
//!
//! A connection picked up without its SYN ([`TcpConn::pickup`]) has unknown
//! window scales and is tracked liberally: the state machine still runs,
//! the window checks do not (Linux does the same for `nf_conntrack_tcp_loose`).

use serde::{Deserialize, Serialize};

use crate::flow::TcpMeta;

/// `Peer::scale` before the window scales are negotiated, or when they are
/// unknown (a connection picked up mid-stream).
pub const NO_WSCALE: u8 = 15;
/// Largest window scale; larger offers are clamped (RFC 7323 2.3).
pub const MAX_WSCALE: u8 = 14;
/// Smallest allowance for how far an ACK may lag behind the data it
/// acknowledges (Linux's `MAXACKWINCONST`).
const MIN_ACK_WINDOW: u32 = 66_000;

/// Whether a segment may open a connection: a pure SYN (no ACK, RST or FIN).
pub fn can_open(meta: &TcpMeta) -> bool {
    meta.flags & (TcpMeta::SYN | TcpMeta::ACK | TcpMeta::RST | TcpMeta::FIN) == TcpMeta::SYN
}

/// Where a TCP connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum TcpState {
    /// The initiator's SYN was seen, nothing from the responder yet.
    SynSent = 0,
    /// Both sides sent a SYN (simultaneous open), no SYN-ACK yet.
    SynSent2 = 1,
    /// A SYN-ACK was seen; waiting for the handshake's last ACK.
    SynRecv = 2,
    Established = 3,
    /// One side sent a FIN, not yet acknowledged.
    FinWait = 4,
    /// One side's FIN was acknowledged; the other may still send.
    CloseWait = 5,
    /// Both sides sent a FIN; waiting for the last ACK.
    LastAck = 6,
    /// Both FINs acknowledged.
    TimeWait = 7,
    /// Reset.
    Close = 8,
}

impl TcpState {
    /// Every state, in code order.
    pub const ALL: [TcpState; 9] = [
        TcpState::SynSent,
        TcpState::SynSent2,
        TcpState::SynRecv,
        TcpState::Established,
        TcpState::FinWait,
        TcpState::CloseWait,
        TcpState::LastAck,
        TcpState::TimeWait,
        TcpState::Close,
    ];

    /// The short name `getflows` prints.
    pub fn name(self) -> &'static str {
        match self {
            TcpState::SynSent => "SYN_SENT",
            TcpState::SynSent2 => "SYN_SENT2",
            TcpState::SynRecv => "SYN_RECV",
            TcpState::Established => "EST",
            TcpState::FinWait => "FIN_WAIT",
            TcpState::CloseWait => "CLOSE_WAIT",
            TcpState::LastAck => "LAST_ACK",
            TcpState::TimeWait => "TIME_WAIT",
            TcpState::Close => "CLOSED",
        }
    }

    /// The state with this code (`state as u8`), if any.
    pub fn from_code(code: u8) -> Option<TcpState> {
        TcpState::ALL.get(usize::from(code)).copied()
    }
}

/// Why a segment does not belong to its connection. The caller drops it and
/// counts the reason; the connection is left as it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum TcpInvalid {
    /// A flag combination no stack sends: SYN+FIN, SYN+RST, no flags, FIN
    /// or data without ACK, ...
    #[error("invalid TCP flag combination")]
    BadFlags,
    /// A SYN or SYN-ACK the connection cannot take in its state (a SYN-ACK
    /// from the initiator, a SYN from the responder after the handshake).
    #[error("SYN not acceptable in this state")]
    UnexpectedSyn,
    /// ACK or FIN before the handshake got that far (e.g. the initiator
    /// acknowledging while no SYN-ACK was seen).
    #[error("segment before the handshake completed")]
    NotSynchronized,
    /// Bound I: starts beyond what the receiver's window allows.
    #[error("sequence number above the receiver's window")]
    SeqAboveWindow,
    /// Bound II: ends before anything a retransmission could carry.
    #[error("sequence number below the window (old data)")]
    SeqBelowWindow,
    /// Bound III: acknowledges data the other side has not sent.
    #[error("acknowledges data not yet sent")]
    AckAboveWindow,
    /// Bound IV: acknowledges too far behind.
    #[error("acknowledgement too far behind the window")]
    AckBelowWindow,
    /// A RST outside the window (blind reset attempt, or stale).
    #[error("RST outside the window")]
    RstOutOfWindow,
}

impl TcpInvalid {
    /// True for the sequence/acknowledgement window failures.
    pub fn is_out_of_window(self) -> bool {
        matches!(
            self,
            TcpInvalid::SeqAboveWindow
                | TcpInvalid::SeqBelowWindow
                | TcpInvalid::AckAboveWindow
                | TcpInvalid::AckBelowWindow
                | TcpInvalid::RstOutOfWindow
        )
    }
}

/// Window tracking of one direction of a connection (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    /// Highest sequence number sent, plus one.
    pub end: u32,
    /// Highest sequence number the other side's ACK + window allow.
    pub maxend: u32,
    /// Largest window advertised, scaled; 0 = nothing seen from this side.
    pub maxwin: u32,
    /// Window scale of this side's windows: 0..=14 once negotiated,
    /// [`NO_WSCALE`] before that (the value its SYN offered otherwise) or
    /// when unknown.
    pub scale: u8,
    /// This side sent a FIN.
    pub fin: bool,
}

impl Peer {
    /// A side nothing has been seen from.
    pub const UNSEEN: Peer = Peer {
        end: 0,
        maxend: 0,
        maxwin: 0,
        scale: NO_WSCALE,
        fin: false,
    };

    /// This side as its SYN (or SYN-ACK) describes it. The window of a SYN
    /// is never scaled.
    fn from_syn(seg: &TcpMeta) -> Peer {
        let end = seg.seq.wrapping_add(seg.payload_len).wrapping_add(1);
        Peer {
            end,
            maxend: end,
            maxwin: u32::from(seg.window).max(1),
            scale: seg.wscale.map_or(NO_WSCALE, |s| s.min(MAX_WSCALE)),
            fin: false,
        }
    }

    /// The shift to apply to this side's (non-SYN) windows.
    #[inline]
    fn shift(&self) -> u8 {
        if self.scale > MAX_WSCALE {
            0
        } else {
            self.scale
        }
    }
}

/// What a segment is, from its flags (PSH, URG, ECE and CWR do not matter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seg {
    Syn,
    SynAck,
    Rst,
    Fin,
    Ack,
}

impl Seg {
    #[inline]
    fn of(flags: u8) -> Result<Seg, TcpInvalid> {
        const SYN: u8 = TcpMeta::SYN;
        const ACK: u8 = TcpMeta::ACK;
        const RST: u8 = TcpMeta::RST;
        const SYN_ACK: u8 = TcpMeta::SYN | TcpMeta::ACK;
        const RST_ACK: u8 = TcpMeta::RST | TcpMeta::ACK;
        const FIN_ACK: u8 = TcpMeta::FIN | TcpMeta::ACK;
        match flags & (TcpMeta::SYN | TcpMeta::ACK | TcpMeta::RST | TcpMeta::FIN) {
            SYN => Ok(Seg::Syn),
            SYN_ACK => Ok(Seg::SynAck),
            RST | RST_ACK => Ok(Seg::Rst),
            FIN_ACK => Ok(Seg::Fin),
            ACK => Ok(Seg::Ack),
            _ => Err(TcpInvalid::BadFlags),
        }
    }
}

/// One tracked TCP connection: its state and both directions' windows.
/// `peers[0]` is the initiator (original direction), `peers[1]` the
/// responder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TcpConn {
    state: TcpState,
    peers: [Peer; 2],
}

impl TcpConn {
    /// A connection opened by `syn`, or `None` if it is not a pure SYN
    /// ([`can_open`]).
    pub fn open(syn: &TcpMeta) -> Option<TcpConn> {
        can_open(syn).then(|| TcpConn {
            state: TcpState::SynSent,
            peers: [Peer::from_syn(syn), Peer::UNSEEN],
        })
    }

    /// A connection whose first seen segment is `seg`, sent by the
    /// initiator. A pure SYN opens it normally; anything else picks it up
    /// mid-stream: the state follows the flags (SYN-ACK: `SYN_RECV`, FIN:
    /// `FIN_WAIT`, RST: `CLOSED`, otherwise `EST`) and windows are tracked
    /// liberally, since the scales are unknown.
    pub fn pickup(seg: &TcpMeta) -> TcpConn {
        if let Some(c) = TcpConn::open(seg) {
            return c;
        }
        let kind = Seg::of(seg.flags);
        let state = match kind {
            Ok(Seg::SynAck) => TcpState::SynRecv,
            Ok(Seg::Rst) => TcpState::Close,
            Ok(Seg::Fin) => TcpState::FinWait,
            _ => TcpState::Established,
        };
        let syn = seg.has(TcpMeta::SYN);
        let fin = seg.has(TcpMeta::FIN);
        let end = seg
            .seq
            .wrapping_add(seg.payload_len)
            .wrapping_add(u32::from(syn))
            .wrapping_add(u32::from(fin));
        let maxwin = u32::from(seg.window).max(1);
        let mut reply = Peer::UNSEEN;
        if seg.has(TcpMeta::ACK) {
            reply.end = seg.ack;
            reply.maxend = seg.ack;
        }
        TcpConn {
            state,
            peers: [
                Peer {
                    end,
                    maxend: end.wrapping_add(maxwin),
                    maxwin,
                    scale: NO_WSCALE,
                    fin,
                },
                reply,
            ],
        }
    }

    /// Rebuilds a connection from its parts (a saved or packed entry).
    /// Scales above [`NO_WSCALE`] are clamped to it, so any input is a
    /// connection [`TcpConn::segment`] can work on.
    #[inline]
    pub fn from_parts(state: TcpState, mut peers: [Peer; 2]) -> TcpConn {
        for p in &mut peers {
            p.scale = p.scale.min(NO_WSCALE);
        }
        TcpConn { state, peers }
    }

    #[inline]
    pub fn state(&self) -> TcpState {
        self.state
    }

    /// Both directions: `[initiator, responder]`.
    #[inline]
    pub fn peers(&self) -> &[Peer; 2] {
        &self.peers
    }

    /// Window checks are off: the connection was picked up without its
    /// handshake, so the window scales are unknown.
    #[inline]
    pub fn liberal(&self) -> bool {
        self.state != TcpState::SynSent
            && (self.peers[0].scale == NO_WSCALE || self.peers[1].scale == NO_WSCALE)
    }

    /// Tracks one segment, sent by the responder if `reply`. Returns the new
    /// state, or why the segment is invalid; an invalid segment leaves the
    /// connection untouched.
    #[inline]
    pub fn segment(&mut self, reply: bool, seg: &TcpMeta) -> Result<TcpState, TcpInvalid> {
        let mut next = *self;
        let state = next.step(usize::from(reply), seg)?;
        next.state = state;
        *self = next;
        Ok(state)
    }

    #[inline]
    fn step(&mut self, d: usize, seg: &TcpMeta) -> Result<TcpState, TcpInvalid> {
        use TcpState::*;
        let old = self.state;
        let reply = d == 1;
        match Seg::of(seg.flags)? {
            Seg::Syn => self.syn(reply, seg),
            Seg::SynAck => match (old, reply) {
                // The initiator cannot answer its own SYN.
                (SynSent, false) => Err(TcpInvalid::UnexpectedSyn),
                // The handshake's answer; in SYN_RECV a retransmission or
                // the second SYN-ACK of a simultaneous open.
                (SynSent, true) | (SynSent2 | SynRecv, _) => {
                    self.window(d, seg)?;
                    Ok(SynRecv)
                }
                // A late retransmission, or the answer to a SYN we let
                // through on a synchronized connection: the endpoint decides.
                _ => Ok(old),
            },
            Seg::Rst => self.rst(d, seg),
            kind @ (Seg::Fin | Seg::Ack) => {
                if matches!(old, SynSent | SynSent2) {
                    // Only a SYN-ACK may answer a SYN. An ACK from the
                    // responder may come from a half-open connection it still
                    // holds: let it through, the initiator will reset it.
                    return if reply && kind == Seg::Ack {
                        Ok(old)
                    } else {
                        Err(TcpInvalid::NotSynchronized)
                    };
                }
                self.window(d, seg)?;
                Ok(if kind == Seg::Fin {
                    self.after_fin(d)
                } else {
                    self.after_ack(d, seg)
                })
            }
        }
    }

    #[inline]
    fn syn(&mut self, reply: bool, seg: &TcpMeta) -> Result<TcpState, TcpInvalid> {
        use TcpState::*;
        match (self.state, reply) {
            // Retransmitted, or re-issued with a new ISN: take the latest.
            (SynSent, false) => {
                self.peers[0] = Peer::from_syn(seg);
                Ok(SynSent)
            }
            // Simultaneous open: the responder's own SYN.
            (SynSent, true) => {
                self.peers[1] = Peer::from_syn(seg);
                self.negotiate_scale();
                Ok(SynSent2)
            }
            (SynSent2, _) => Ok(SynSent2),
            // Port reuse (RFC 1122 4.2.2.13): a new connection, same tuple.
            (TimeWait | Close, false) => {
                self.peers = [Peer::from_syn(seg), Peer::UNSEEN];
                Ok(SynSent)
            }
            // The initiator lost its state and starts over; the responder
            // will answer with a challenge ACK and the initiator's RST
            // then closes us. Let it through, change nothing.
            (_, false) => Ok(self.state),
            // The responder re-opening is a new connection in the other
            // direction: it must wait for this entry to expire and be
            // classified on its own.
            (_, true) => Err(TcpInvalid::UnexpectedSyn),
        }
    }

    #[inline]
    fn rst(&mut self, d: usize, seg: &TcpMeta) -> Result<TcpState, TcpInvalid> {
        let ok = match self.state {
            // The responder refuses: the RST must acknowledge the SYN.
            TcpState::SynSent if d == 1 => seg.has(TcpMeta::ACK) && seg.ack == self.peers[0].end,
            // The initiator aborts its own attempt.
            TcpState::SynSent => true,
            TcpState::Close => true,
            _ if self.liberal() => true,
            _ => self.rst_in_window(d, seg),
        };
        if ok {
            Ok(TcpState::Close)
        } else {
            Err(TcpInvalid::RstOutOfWindow)
        }
    }

    /// Bounds I and II on the RST's sequence number (never relaxed for
    /// empty segments, unlike data), and III/IV on its ACK if it has one.
    /// Some stacks send RST+ACK with a zero ACK; that ACK is ignored.
    #[inline]
    fn rst_in_window(&self, d: usize, seg: &TcpMeta) -> bool {
        let (s, r) = (&self.peers[d], &self.peers[1 - d]);
        let end = seg.seq.wrapping_add(seg.payload_len);
        let seq_ok = before_eq(seg.seq, s.maxend) && after_eq(end, s.end.wrapping_sub(r.maxwin));
        let ack_ok = !seg.has(TcpMeta::ACK)
            || seg.ack == 0
            || (before_eq(seg.ack, r.end)
                && after_eq(seg.ack, r.end.wrapping_sub(s.maxwin.max(MIN_ACK_WINDOW))));
        seq_ok && ack_ok
    }

    /// RFC 7323: scaling applies only if both SYNs carried the option.
    fn negotiate_scale(&mut self) {
        if self.peers[0].scale == NO_WSCALE || self.peers[1].scale == NO_WSCALE {
            self.peers[0].scale = 0;
            self.peers[1].scale = 0;
        }
    }

    /// Checks bounds I-IV for a segment from `peers[d]` and, if it passes,
    /// updates both directions.
    #[inline]
    fn window(&mut self, d: usize, seg: &TcpMeta) -> Result<(), TcpInvalid> {
        let syn = seg.has(TcpMeta::SYN);
        let fin = seg.has(TcpMeta::FIN);
        let has_ack = seg.has(TcpMeta::ACK);
        let win = u32::from(seg.window);
        let mut seq = seg.seq;
        let mut end = seq
            .wrapping_add(seg.payload_len)
            .wrapping_add(u32::from(syn))
            .wrapping_add(u32::from(fin));

        let liberal = self.liberal();
        let state = self.state;
        let [p0, p1] = &mut self.peers;
        let (s, r) = if d == 0 { (p0, p1) } else { (p1, p0) };

        if s.maxwin == 0 {
            if syn {
                // The responder's SYN-ACK: the first we hear of it.
                *s = Peer::from_syn(seg);
                if s.scale == NO_WSCALE || r.scale == NO_WSCALE {
                    s.scale = 0;
                    r.scale = 0;
                }
            } else {
                // Nothing seen from this side (picked-up connection): take
                // the segment's word for it.
                s.end = end;
                s.maxwin = (win << s.shift()).max(1);
                s.maxend = end.wrapping_add(s.maxwin);
                if r.maxwin == 0 {
                    let a = if has_ack { seg.ack } else { r.end };
                    r.end = a;
                    r.maxend = a;
                }
            }
        } else if syn && state == TcpState::SynRecv && d == 1 && after(end, s.end) {
            // The responder re-issued its SYN-ACK with a new ISN (it
            // restarted); the negotiated scale stays.
            s.end = end;
            s.maxend = end;
            s.maxwin = win.max(1);
        }

        let ack = if has_ack { seg.ack } else { r.end };
        // No payload, SYN or FIN: only the ACK says anything (Linux checks
        // I and II with `seq = end = S.end`, which fails once the sender
        // has gone past what we saw the receiver allow; we do not).
        let empty = seq == end;
        if empty {
            seq = s.end;
            end = s.end;
        }

        if !liberal {
            if !empty && !before_eq(seq, s.maxend) {
                return Err(TcpInvalid::SeqAboveWindow);
            }
            if !empty && !after_eq(end, s.end.wrapping_sub(r.maxwin)) {
                return Err(TcpInvalid::SeqBelowWindow);
            }
            if !before_eq(ack, r.end) {
                return Err(TcpInvalid::AckAboveWindow);
            }
            if !after_eq(ack, r.end.wrapping_sub(s.maxwin.max(MIN_ACK_WINDOW))) {
                return Err(TcpInvalid::AckBelowWindow);
            }
        }

        let swin = if syn { win } else { win << s.shift() };
        s.maxwin = s.maxwin.max(swin);
        if after(end, s.end) {
            s.end = end;
        }
        // The sender went past what we thought the receiver allowed: its
        // window was larger than we saw.
        if r.maxwin != 0 && after(end, s.maxend) {
            r.maxwin = r.maxwin.saturating_add(end.wrapping_sub(s.maxend));
        }
        // The receiver may now send up to ack + window (one byte into a
        // zero window: the probe).
        let right = ack.wrapping_add(swin);
        if after_eq(right, r.maxend) {
            r.maxend = right.wrapping_add(u32::from(swin == 0));
        }
        Ok(())
    }

    #[inline]
    fn after_fin(&mut self, d: usize) -> TcpState {
        use TcpState::*;
        self.peers[d].fin = true;
        match self.state {
            SynRecv | Established => FinWait,
            // The other side's FIN: both are closing. Our own again: a retransmission.
            FinWait | CloseWait if self.peers[1 - d].fin => LastAck,
            s => s,
        }
    }

    #[inline]
    fn after_ack(&self, d: usize, seg: &TcpMeta) -> TcpState {
        use TcpState::*;
        let other = &self.peers[1 - d];
        // The ACK covers the other side's FIN (its `end` counts the FIN).
        let acks_fin = other.fin && seg.ack == other.end;
        match self.state {
            SynRecv if d == 0 => Established,
            FinWait if acks_fin => CloseWait,
            LastAck if acks_fin => TimeWait,
            s => s,
        }
    }
}

/// Sequence-number order (RFC 1982 serial arithmetic): `a` before `b`.
#[inline]
fn before(a: u32, b: u32) -> bool {
    a.wrapping_sub(b).cast_signed() < 0
}

#[inline]
fn after(a: u32, b: u32) -> bool {
    before(b, a)
}

#[inline]
fn before_eq(a: u32, b: u32) -> bool {
    !after(a, b)
}

#[inline]
fn after_eq(a: u32, b: u32) -> bool {
    !before(a, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(flags: u8, seq: u32, ack: u32, window: u16, len: u32) -> TcpMeta {
        TcpMeta {
            flags,
            seq,
            ack,
            window,
            wscale: None,
            payload_len: len,
        }
    }

    #[test]
    fn serial_arithmetic_wraps() {
        assert!(before(u32::MAX, 0));
        assert!(after(5, u32::MAX - 5));
        assert!(before_eq(7, 7) && after_eq(7, 7));
        assert!(!before(7, 7));
    }

    #[test]
    fn flag_classes() {
        const S: u8 = TcpMeta::SYN;
        const A: u8 = TcpMeta::ACK;
        const R: u8 = TcpMeta::RST;
        const F: u8 = TcpMeta::FIN;
        const P: u8 = TcpMeta::PSH;
        assert_eq!(Seg::of(S), Ok(Seg::Syn));
        assert_eq!(Seg::of(S | 0x40 | 0x80), Ok(Seg::Syn)); // ECN setup SYN
        assert_eq!(Seg::of(S | A), Ok(Seg::SynAck));
        assert_eq!(Seg::of(R), Ok(Seg::Rst));
        assert_eq!(Seg::of(R | A), Ok(Seg::Rst));
        assert_eq!(Seg::of(F | A | P), Ok(Seg::Fin));
        assert_eq!(Seg::of(A | P), Ok(Seg::Ack));
        for bad in [0, P, F, S | F, S | R, R | F | A, S | A | F, F | P] {
            assert_eq!(Seg::of(bad), Err(TcpInvalid::BadFlags), "{bad:#x}");
        }
    }

    #[test]
    fn invalid_segment_leaves_connection_untouched() {
        let mut c = TcpConn::open(&seg(TcpMeta::SYN, 100, 0, 1000, 0)).unwrap();
        // A SYN-ACK with an absurd ACK initialises the responder inside
        // `window` before failing: none of that may stick.
        let before = c;
        let r = c.segment(
            true,
            &seg(TcpMeta::SYN | TcpMeta::ACK, 9, 5_000_000, 100, 0),
        );
        assert_eq!(r, Err(TcpInvalid::AckAboveWindow));
        assert_eq!(c, before);
    }

    #[test]
    fn state_codes_round_trip() {
        for s in TcpState::ALL {
            assert_eq!(TcpState::from_code(s as u8), Some(s));
        }
        assert_eq!(TcpState::from_code(9), None);
    }
}
