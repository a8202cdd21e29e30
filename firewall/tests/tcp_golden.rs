//! Golden table for the TCP state machine ([`firewall::tcp`]): each case is
//! a sequence of segments (direction, flags, seq, ack, window, payload
//! length) with the state or invalid reason expected after each. The first
//! segment creates the connection with `TcpConn::pickup` (a pure SYN opens
//! it normally). An invalid segment must leave the connection as it was,
//! which the runner checks too.
//!
//! Client ISN 1000 (first byte 1001), server ISN 5000 (first byte 5001);
//! both offer window scale 7 unless the case says otherwise.

use firewall::TcpMeta;
use firewall::tcp::{TcpConn, TcpInvalid, TcpState, can_open};

const S: u8 = TcpMeta::SYN;
const A: u8 = TcpMeta::ACK;
const F: u8 = TcpMeta::FIN;
const R: u8 = TcpMeta::RST;
const P: u8 = TcpMeta::PSH;

type Expect = Result<TcpState, TcpInvalid>;

const SYN_SENT: Expect = Ok(TcpState::SynSent);
const SYN_SENT2: Expect = Ok(TcpState::SynSent2);
const SYN_RECV: Expect = Ok(TcpState::SynRecv);
const EST: Expect = Ok(TcpState::Established);
const FIN_WAIT: Expect = Ok(TcpState::FinWait);
const CLOSE_WAIT: Expect = Ok(TcpState::CloseWait);
const LAST_ACK: Expect = Ok(TcpState::LastAck);
const TIME_WAIT: Expect = Ok(TcpState::TimeWait);
const CLOSED: Expect = Ok(TcpState::Close);
const BAD_FLAGS: Expect = Err(TcpInvalid::BadFlags);
const UNEXPECTED_SYN: Expect = Err(TcpInvalid::UnexpectedSyn);
const NOT_SYNC: Expect = Err(TcpInvalid::NotSynchronized);
const SEQ_ABOVE: Expect = Err(TcpInvalid::SeqAboveWindow);
const SEQ_BELOW: Expect = Err(TcpInvalid::SeqBelowWindow);
const ACK_ABOVE: Expect = Err(TcpInvalid::AckAboveWindow);
const ACK_BELOW: Expect = Err(TcpInvalid::AckBelowWindow);
const RST_OOW: Expect = Err(TcpInvalid::RstOutOfWindow);

#[derive(Debug, Clone, Copy)]
struct Step {
    reply: bool,
    seg: TcpMeta,
    expect: Expect,
}

impl Step {
    fn ws(mut self, scale: u8) -> Step {
        self.seg.wscale = Some(scale);
        self
    }
}

fn step(reply: bool, flags: u8, seq: u32, ack: u32, window: u16, len: u32, expect: Expect) -> Step {
    Step {
        reply,
        seg: TcpMeta {
            flags,
            seq,
            ack,
            window,
            wscale: None,
            payload_len: len,
        },
        expect,
    }
}

/// Initiator -> responder.
fn o(flags: u8, seq: u32, ack: u32, win: u16, len: u32, expect: Expect) -> Step {
    step(false, flags, seq, ack, win, len, expect)
}

/// Responder -> initiator.
fn r(flags: u8, seq: u32, ack: u32, win: u16, len: u32, expect: Expect) -> Step {
    step(true, flags, seq, ack, win, len, expect)
}

/// SYN (window 64240, scale 7), SYN-ACK (65160, scale 7), ACK (502 << 7).
fn handshake() -> Vec<Step> {
    vec![
        o(S, 1000, 0, 64240, 0, SYN_SENT).ws(7),
        r(S | A, 5000, 1001, 65160, 0, SYN_RECV).ws(7),
        o(A, 1001, 5001, 502, 0, EST),
    ]
}

/// Handshake, then the client sends 100 bytes and the server 1448.
fn established() -> Vec<Step> {
    let mut v = handshake();
    v.extend([
        o(P | A, 1001, 5001, 502, 100, EST),
        r(P | A, 5001, 1101, 509, 1448, EST),
        o(A, 1101, 6449, 502, 0, EST),
    ]);
    v
}

fn then(mut first: Vec<Step>, rest: impl IntoIterator<Item = Step>) -> Vec<Step> {
    first.extend(rest);
    first
}

struct Case {
    name: &'static str,
    steps: Vec<Step>,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "three-way handshake",
            steps: handshake(),
        },
        Case {
            name: "data both ways, TSO super-frame, delayed ACK",
            steps: then(
                established(),
                [
                    // 64000 bytes in one segment, up to 256 short of the
                    // client's right edge (6449 + 502 << 7 = 70705); the
                    // next one starts inside and ends past it.
                    r(A, 6449, 1101, 509, 64_000, EST),
                    r(P | A, 70_449, 1101, 509, 1000, EST),
                    o(A, 1101, 71_449, 502, 0, EST),
                    o(P | A, 1101, 71_449, 502, 30_000, EST),
                    r(A, 71_449, 31_101, 509, 0, EST),
                ],
            ),
        },
        Case {
            name: "retransmission, keep-alive, SACK-style lagging ACK",
            steps: then(
                established(),
                [
                    // Retransmission of the first data segment.
                    o(P | A, 1001, 5001, 502, 100, EST),
                    // Keep-alives: seq one below, without and with a byte.
                    o(A, 1100, 6449, 502, 0, EST),
                    o(A, 1100, 6449, 502, 1, EST),
                    // The server sends 60000 bytes; the client keeps ACKing
                    // the hole at 6449 (its SACK blocks would carry the rest).
                    r(A, 6449, 1101, 509, 30_000, EST),
                    r(A, 36_449, 1101, 509, 30_000, EST),
                    o(A, 1101, 6449, 502, 0, EST),
                    o(A, 1101, 6449, 502, 0, EST),
                    // Retransmission filling the hole, cumulative ACK jumps.
                    r(A, 6449, 1101, 509, 1448, EST),
                    o(A, 1101, 66_449, 502, 0, EST),
                ],
            ),
        },
        Case {
            name: "half-close: FIN one side, data the other, then FIN",
            steps: then(
                established(),
                [
                    o(F | A, 1101, 6449, 502, 0, FIN_WAIT),
                    // Retransmitted FIN: no change.
                    o(F | A, 1101, 6449, 502, 0, FIN_WAIT),
                    // Server data not yet covering the FIN.
                    r(P | A, 6449, 1101, 509, 500, FIN_WAIT),
                    // Its ACK of the FIN.
                    r(A, 6949, 1102, 509, 0, CLOSE_WAIT),
                    r(P | A, 6949, 1102, 509, 1000, CLOSE_WAIT),
                    o(A, 1102, 7949, 502, 0, CLOSE_WAIT),
                    r(F | A, 7949, 1102, 509, 0, LAST_ACK),
                    o(A, 1102, 7950, 502, 0, TIME_WAIT),
                    // Retransmitted last ACK.
                    o(A, 1102, 7950, 502, 0, TIME_WAIT),
                ],
            ),
        },
        Case {
            name: "simultaneous close",
            steps: then(
                established(),
                [
                    o(F | A, 1101, 6449, 502, 0, FIN_WAIT),
                    r(F | A, 6449, 1101, 509, 0, LAST_ACK),
                    o(A, 1102, 6450, 502, 0, TIME_WAIT),
                    r(A, 6450, 1102, 509, 0, TIME_WAIT),
                ],
            ),
        },
        Case {
            name: "RST in window closes, out-of-window RST is invalid",
            steps: then(
                established(),
                [
                    r(R, 6449 + 10_000_000, 0, 0, 0, RST_OOW),
                    r(R | A, 6449, 1101 + 1_000_000, 0, 0, RST_OOW),
                    o(R, 1101u32.wrapping_sub(200_000), 0, 0, 0, RST_OOW),
                    r(A, 6449, 1101, 509, 0, EST),
                    r(R, 6449, 0, 0, 0, CLOSED),
                    // After a RST: stragglers pass, nothing re-establishes.
                    o(A, 1101, 6449, 502, 0, CLOSED),
                    r(R, 6449, 0, 0, 0, CLOSED),
                ],
            ),
        },
        Case {
            name: "RST+ACK answering the SYN (connection refused)",
            steps: vec![
                o(S, 1000, 0, 64240, 0, SYN_SENT),
                // Must acknowledge the SYN.
                r(R | A, 0, 999, 0, 0, RST_OOW),
                r(R, 0, 0, 0, 0, RST_OOW),
                r(R | A, 0, 1001, 0, 0, CLOSED),
            ],
        },
        Case {
            name: "simultaneous open",
            steps: vec![
                o(S, 1000, 0, 64240, 0, SYN_SENT).ws(7),
                r(S, 5000, 0, 65160, 0, SYN_SENT2).ws(7),
                r(S, 5000, 0, 65160, 0, SYN_SENT2).ws(7),
                o(S | A, 1000, 5001, 64240, 0, SYN_RECV).ws(7),
                r(S | A, 5000, 1001, 65160, 0, SYN_RECV).ws(7),
                // The responder's ACK alone does not establish (as Linux).
                r(A, 5001, 1001, 509, 0, SYN_RECV),
                o(A, 1001, 5001, 502, 0, EST),
                r(P | A, 5001, 1001, 509, 1000, EST),
                o(P | A, 1001, 6001, 502, 1000, EST),
            ],
        },
        Case {
            name: "out-of-window data and ACKs are invalid, the connection carries on",
            steps: then(
                established(),
                [
                    // Client's right edge is 1101 + 509 << 7 = 66253.
                    o(P | A, 66_254, 6449, 502, 100, SEQ_ABOVE),
                    o(P | A, 66_253, 6449, 502, 100, EST),
                    // Far behind anything a retransmission could be.
                    o(
                        P | A,
                        1101u32.wrapping_sub(200_000),
                        6449,
                        502,
                        100,
                        SEQ_BELOW,
                    ),
                    // Acknowledges server data never sent.
                    o(A, 66_353, 6450, 502, 0, ACK_ABOVE),
                    // Acknowledges too far back (more than 66000 behind).
                    o(A, 66_353, 6449u32.wrapping_sub(70_000), 502, 0, ACK_BELOW),
                    o(A, 66_353, 6449, 502, 0, EST),
                ],
            ),
        },
        Case {
            name: "window probe into a zero window",
            steps: vec![
                o(S, 1000, 0, 8000, 0, SYN_SENT),
                r(S | A, 5000, 1001, 1000, 0, SYN_RECV),
                o(A, 1001, 5001, 8000, 0, EST),
                // Fill the server's 1000-byte window, which then closes.
                o(P | A, 1001, 5001, 8000, 1000, EST),
                r(A, 5001, 2001, 0, 0, EST),
                // One byte into the zero window is a probe; more is not.
                o(A, 2001, 5001, 8000, 1, EST),
                o(P | A, 2003, 5001, 8000, 100, SEQ_ABOVE),
                // Window reopens.
                r(A, 5001, 2002, 1000, 0, EST),
                o(P | A, 2002, 5001, 8000, 1000, EST),
            ],
        },
        Case {
            name: "window scale applies only when both SYNs offer it",
            steps: vec![
                o(S, 1000, 0, 64240, 0, SYN_SENT).ws(7),
                // No option on the SYN-ACK: nobody scales.
                r(S | A, 5000, 1001, 65160, 0, SYN_RECV),
                o(A, 1001, 5001, 502, 0, EST),
                // 502 unscaled: the server may send up to 5503.
                r(P | A, 5001, 1001, 65160, 500, EST),
                r(P | A, 5501, 1001, 65160, 500, EST),
                r(P | A, 6001, 1001, 65160, 500, SEQ_ABOVE),
            ],
        },
        Case {
            name: "scaled windows let the server send far past 502 bytes",
            steps: then(
                handshake(),
                [
                    r(P | A, 5001, 1001, 509, 20_000, EST),
                    r(P | A, 25_001, 1001, 509, 20_000, EST),
                    r(P | A, 45_001, 1001, 509, 20_000, EST),
                ],
            ),
        },
        Case {
            name: "retransmitted and re-issued SYN",
            steps: vec![
                o(S, 1000, 0, 64240, 0, SYN_SENT).ws(7),
                o(S, 1000, 0, 64240, 0, SYN_SENT).ws(7),
                // The client gave up and retried with a new ISN.
                o(S, 3000, 0, 64240, 0, SYN_SENT).ws(7),
                r(S | A, 5000, 3001, 65160, 0, SYN_RECV).ws(7),
                // SYN-ACK lost: the client retransmits its SYN; ignored.
                o(S, 3000, 0, 64240, 0, SYN_RECV).ws(7),
                r(S | A, 5000, 3001, 65160, 0, SYN_RECV).ws(7),
                o(A, 3001, 5001, 502, 0, EST),
            ],
        },
        Case {
            name: "invalid flag combinations",
            steps: then(
                established(),
                [
                    o(S | F, 1101, 0, 502, 0, BAD_FLAGS),
                    o(S | F | A, 1101, 6449, 502, 0, BAD_FLAGS),
                    o(S | R, 1101, 0, 502, 0, BAD_FLAGS),
                    o(0, 1101, 0, 502, 0, BAD_FLAGS),
                    o(F, 1101, 0, 502, 0, BAD_FLAGS),
                    o(P, 1101, 0, 502, 10, BAD_FLAGS),
                    o(F | R | A, 1101, 6449, 502, 0, BAD_FLAGS),
                    o(A, 1101, 6449, 502, 0, EST),
                ],
            ),
        },
        Case {
            name: "SYNs where they do not belong",
            steps: vec![
                o(S, 1000, 0, 64240, 0, SYN_SENT),
                // The initiator cannot answer its own SYN.
                o(S | A, 1000, 5001, 64240, 0, UNEXPECTED_SYN),
                // Nothing but a SYN-ACK (or RST) from the responder yet.
                o(A, 1001, 5001, 502, 0, NOT_SYNC),
                o(F | A, 1001, 5001, 502, 0, NOT_SYNC),
                r(F | A, 5001, 1001, 502, 0, NOT_SYNC),
                // A half-open responder's ACK passes untouched.
                r(A, 77_777, 1001, 502, 0, SYN_SENT),
                r(S | A, 5000, 1001, 65160, 0, SYN_RECV),
                o(A, 1001, 5001, 502, 0, EST),
                r(S, 9000, 0, 65160, 0, UNEXPECTED_SYN),
                // The client lost its state and tries again: let through
                // (the server answers with a challenge ACK), state kept.
                o(S, 424_242, 0, 64240, 0, EST),
                // Late retransmitted SYN-ACK: ignored.
                r(S | A, 5000, 1001, 65160, 0, EST),
                o(A, 1001, 5001, 502, 0, EST),
            ],
        },
        Case {
            name: "port reuse after TIME_WAIT",
            steps: then(
                established(),
                [
                    o(F | A, 1101, 6449, 502, 0, FIN_WAIT),
                    r(F | A, 6449, 1102, 509, 0, LAST_ACK),
                    o(A, 1102, 6450, 502, 0, TIME_WAIT),
                    // The responder may not re-open it.
                    r(S, 123, 0, 65160, 0, UNEXPECTED_SYN),
                    // The initiator may, with any ISN.
                    o(S, 900_000, 0, 64240, 0, SYN_SENT).ws(7),
                    r(S | A, 700_000, 900_001, 65160, 0, SYN_RECV).ws(7),
                    o(A, 900_001, 700_001, 502, 0, EST),
                    o(P | A, 900_001, 700_001, 502, 100, EST),
                ],
            ),
        },
        Case {
            name: "re-open after RST",
            steps: then(
                established(),
                [
                    o(R | A, 1101, 6449, 0, 0, CLOSED),
                    o(S, 50, 0, 64240, 0, SYN_SENT),
                    r(S | A, 60, 51, 65160, 0, SYN_RECV),
                    o(A, 51, 61, 64240, 0, EST),
                ],
            ),
        },
        Case {
            name: "sequence numbers wrapping through zero",
            steps: vec![
                o(S, 0xffff_ff00, 0, 64240, 0, SYN_SENT).ws(7),
                r(S | A, 0xffff_fff0, 0xffff_ff01, 65160, 0, SYN_RECV).ws(7),
                o(A, 0xffff_ff01, 0xffff_fff1, 502, 0, EST),
                o(P | A, 0xffff_ff01, 0xffff_fff1, 502, 1000, EST),
                r(P | A, 0xffff_fff1, 0x0000_02e9, 509, 1000, EST),
                o(A, 0x0000_02e9, 0x0000_03d9, 502, 0, EST),
            ],
        },
        Case {
            name: "SYN with data (TCP Fast Open)",
            steps: vec![
                o(S, 1000, 0, 64240, 200, SYN_SENT).ws(7),
                r(S | A, 5000, 1201, 65160, 0, SYN_RECV).ws(7),
                o(A, 1201, 5001, 502, 0, EST),
            ],
        },
        Case {
            name: "picked up mid-stream: liberal windows, state machine runs",
            steps: vec![
                o(P | A, 1_000_000, 2_000_000, 100, 100, EST),
                r(A, 2_000_000, 1_000_100, 100, 0, EST),
                // Unknown scales: far jumps are not judged.
                r(P | A, 2_900_000, 1_000_100, 100, 1000, EST),
                o(F | A, 1_000_100, 2_901_000, 100, 0, FIN_WAIT),
                r(F | A, 2_901_000, 1_000_101, 100, 0, LAST_ACK),
                o(A, 1_000_101, 2_901_001, 100, 0, TIME_WAIT),
            ],
        },
    ]
}

#[test]
fn golden_table() {
    let mut segments = 0;
    for case in cases() {
        let mut steps = case.steps.iter();
        let first = steps.next().expect("a case has segments");
        assert!(!first.reply, "{}: the initiator speaks first", case.name);
        let mut conn = TcpConn::pickup(&first.seg);
        assert_eq!(
            Ok(conn.state()),
            first.expect,
            "{}: segment 0 {:?}",
            case.name,
            first.seg
        );
        for (i, s) in steps.enumerate() {
            let before = conn;
            let got = conn.segment(s.reply, &s.seg);
            assert_eq!(
                got,
                s.expect,
                "{}: segment {} ({}) {:?}\nconnection before: {before:?}",
                case.name,
                i + 1,
                if s.reply { "reply" } else { "orig" },
                s.seg
            );
            match got {
                Ok(state) => assert_eq!(conn.state(), state, "{}", case.name),
                Err(_) => assert_eq!(conn, before, "{}: invalid must not change", case.name),
            }
        }
        segments += case.steps.len();
    }
    assert!(segments > 120, "{segments} segments");
}

#[test]
fn only_a_pure_syn_opens() {
    let meta = |flags| TcpMeta {
        flags,
        ..TcpMeta::default()
    };
    assert!(can_open(&meta(S)));
    assert!(can_open(&meta(S | P | 0x40 | 0x80)));
    for flags in [S | A, S | F, S | R, A, F | A, R, 0] {
        assert!(!can_open(&meta(flags)), "{flags:#x}");
        assert!(TcpConn::open(&meta(flags)).is_none());
    }
}

#[test]
fn display_names() {
    let names: Vec<&str> = TcpState::ALL.iter().map(|s| s.name()).collect();
    assert_eq!(
        names,
        [
            "SYN_SENT",
            "SYN_SENT2",
            "SYN_RECV",
            "EST",
            "FIN_WAIT",
            "CLOSE_WAIT",
            "LAST_ACK",
            "TIME_WAIT",
            "CLOSED"
        ]
    );
}

#[test]
fn picked_up_connection_is_liberal_until_reopened() {
    let mid = TcpMeta {
        flags: A,
        seq: 10,
        ack: 20,
        window: 100,
        ..TcpMeta::default()
    };
    let mut c = TcpConn::pickup(&mid);
    assert!(c.liberal());
    let rst = TcpMeta {
        flags: R,
        seq: 99_999_999,
        ..TcpMeta::default()
    };
    assert_eq!(c.segment(false, &rst), CLOSED);
    let syn = TcpMeta {
        flags: S,
        seq: 1000,
        window: 1000,
        ..TcpMeta::default()
    };
    assert_eq!(c.segment(false, &syn), SYN_SENT);
    assert!(!c.liberal());
}
