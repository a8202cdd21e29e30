//! What the firewall decided for one frame and why ([`Decision`]), as
//! [`crate::Firewall::judge`] works it out without changing anything and
//! [`crate::Firewall::commit`] carries it out. The reason ([`Why`]) is
//! structured data taken from the decision itself; its text, shown by
//! `trace`, is [`Decision::describe`]'s `Display`, so there is one decision
//! path and no second derivation of the reasons to keep in step.

use std::fmt;
use std::net::Ipv4Addr;

use control::Action;

use crate::FailurePolicy;
use crate::classify::Match;
use crate::conntrack::{Advance, Full, Hit, Invalid, Probe, State};
use crate::engine::Firewall;
use crate::flow::{Dir, L4, Tuple};
use crate::packet::{Class, Ipv4Info, Packet, ParseError};
use crate::reject::{CODE_ADMIN_PROHIBITED, CODE_PORT_UNREACHABLE, RejectKind};

/// Why the firewall dropped a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FwDrop {
    /// A rule (L3/L4 or the default rule) said drop or reject.
    Rule,
    /// An L2 rule said drop.
    L2Rule,
    /// No ruleset applied yet and the failure policy is failClosed.
    FailClosed,
    /// Unparseable IPv4/L4 header.
    Malformed,
    /// Fails TCP state/window tracking.
    Invalid,
    /// A TCP segment other than a SYN with no connection.
    NoConnection,
    /// An ICMP error that belongs to no known connection.
    UnsolicitedIcmpError,
    /// Non-first IPv4 fragment (not reassembled).
    Fragment,
    /// Connection table (global or per-instance limit) full.
    TableFull,
}

impl FwDrop {
    pub const COUNT: usize = 9;
    pub const ALL: [FwDrop; Self::COUNT] = [
        FwDrop::Rule,
        FwDrop::L2Rule,
        FwDrop::FailClosed,
        FwDrop::Malformed,
        FwDrop::Invalid,
        FwDrop::NoConnection,
        FwDrop::UnsolicitedIcmpError,
        FwDrop::Fragment,
        FwDrop::TableFull,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FwDrop::Rule => "fw_rule",
            FwDrop::L2Rule => "fw_l2_rule",
            FwDrop::FailClosed => "fw_fail_closed",
            FwDrop::Malformed => "fw_malformed",
            FwDrop::Invalid => "fw_invalid",
            FwDrop::NoConnection => "fw_no_connection",
            FwDrop::UnsolicitedIcmpError => "fw_unsolicited_icmp_error",
            FwDrop::Fragment => "fw_fragment",
            FwDrop::TableFull => "fw_table_full",
        }
    }
}

/// The firewall's decision for one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FwVerdict {
    Pass,
    Drop(FwDrop),
    /// Drop, and send this answer back to the sender (see [`crate::reject::build`]).
    Reject(RejectKind),
}

/// The firewall's decision on one frame: the verdict, why, and what
/// [`crate::Firewall::commit`] needs to carry it out. It borrows the
/// parsed packet it was taken on (nothing of it is copied: the hot path
/// reads the fields where [`crate::packet::parse`] wrote them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision<'p> {
    pub verdict: FwVerdict,
    pub dir: Dir,
    pub why: Why,
    /// The frame, when it parsed.
    pub pkt: Option<&'p Packet>,
    /// The L2 rule that accepted the frame before the L3/L4 decision.
    pub l2: Option<Match>,
    /// What the connection lookup found (an expired entry is removed on commit).
    pub(crate) found: Probe,
    /// IPv4 total length (counted against rules and connections); 0 otherwise.
    pub(crate) bytes: u32,
    /// What the packet does to the tracked connection the lookup found
    /// (worked out once, written on commit).
    pub(crate) step: Advance,
}

/// Why the firewall decided as it did (one variant per decision point).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// Unparseable IPv4/L4 header.
    Malformed(ParseError),
    /// ARP, DHCP, IPv6 discovery: never filtered.
    Management,
    /// The agent's own connection to its gateway.
    ManagementConn,
    /// No ruleset applied yet: the failure policy decides.
    NoRuleset(FailurePolicy),
    /// An L2 rule dropped the frame.
    L2Rule(Match),
    /// A packet of the tracked connection the lookup found (the fast
    /// path); the connection's state after it.
    Established { state: State },
    /// A packet the tracked connection the lookup found refuses (TCP
    /// window or state).
    Invalid { err: Invalid },
    /// An ICMP error about a tracked connection (`hit`: its direction is the error's).
    Related { hit: Hit },
    /// An ICMP error whose quoted packet no connection matches (`stale`:
    /// what the lookup found, an expired entry is removed on commit).
    Unsolicited { stale: Probe },
    /// A new connection: rule `m` decides; `full` when it accepts but the table is full.
    New { m: Match, full: Option<Full> },
    /// A TCP segment (not a pure SYN) of no tracked connection.
    Segment { m: Match, seg: Segment },
    /// A non-first IPv4 fragment.
    Fragment,
    /// Not IPv4: the default rule decides, statelessly.
    NotIpv4,
}

/// What becomes of a TCP segment of no tracked connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Segment {
    /// A reject rule: answered with a RST.
    Rst,
    /// An accepting rule, `tcp_strict` off: tracked from here on.
    PickedUp,
    /// As `PickedUp`, but the table is full.
    Full(Full),
    /// An accepting rule, but `tcp_strict` wants a SYN.
    Strict,
    /// Dropped: not a SYN.
    NotSyn,
}

impl<'p> Decision<'p> {
    /// A decision to be taken on a frame travelling `dir` (`parsed` by
    /// [`crate::packet::parse`]): a malformed drop if it did not parse,
    /// otherwise a pass until [`Decision::set`].
    #[inline(always)]
    pub(crate) fn unjudged(dir: Dir, parsed: &'p Result<Packet, ParseError>) -> Decision<'p> {
        let (verdict, why, pkt) = match parsed {
            Ok(p) => (FwVerdict::Pass, Why::Management, Some(p)),
            Err(e) => (FwVerdict::Drop(FwDrop::Malformed), Why::Malformed(*e), None),
        };
        Decision {
            verdict,
            dir,
            why,
            pkt,
            l2: None,
            found: Probe::Absent,
            bytes: 0,
            step: Advance::Invalid(Invalid::Gone),
        }
    }

    #[inline(always)]
    pub(crate) fn set(&mut self, verdict: FwVerdict, why: Why) {
        self.verdict = verdict;
        self.why = why;
    }

    /// The IPv4 part of the packet, if it is IPv4.
    pub fn ipv4(&self) -> Option<&'p Ipv4Info> {
        match self.pkt {
            Some(Packet {
                class: Class::Ipv4(info),
                ..
            }) => Some(info),
            _ => None,
        }
    }

    /// The reason in one line, read against `fw`'s policy and connection
    /// table (unchanged since the judgement), e.g. `new inbound connection
    /// tcp 10.0.0.2:40000 -> 10.0.0.1:22, rule 1006 (domain-c25) accept`.
    pub fn describe<'a>(&'a self, fw: &'a Firewall) -> Described<'a, 'p> {
        Described { d: self, fw }
    }
}

impl Why {
    /// The decision counts on a new connection entry (commit inserts it).
    pub(crate) fn opens(&self) -> bool {
        match self {
            Why::New { m, .. } => m.action == Action::Accept,
            Why::Segment { seg, .. } => matches!(seg, Segment::PickedUp | Segment::Full(_)),
            _ => false,
        }
    }
}

/// [`Decision::describe`].
#[derive(Debug, Clone, Copy)]
pub struct Described<'a, 'p> {
    d: &'a Decision<'p>,
    fw: &'a Firewall,
}

impl fmt::Display for Described<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Described { d, fw } = *self;
        let tuple = d.ipv4().map_or(NO_TUPLE, |i| i.tuple);
        let rule = |m: &Match| RuleName { fw, m: *m };
        let conn = |hit: &Hit| ConnName { fw, hit: *hit };
        let way = match d.dir {
            Dir::In => "inbound",
            Dir::Out => "outbound",
        };
        if let Some(m) = &d.l2
            && !matches!(d.why, Why::L2Rule(_))
        {
            write!(f, "L2 {}; ", rule(m))?;
        }
        match &d.why {
            Why::Malformed(e) => write!(f, "{e}: drop"),
            Why::Management => {
                f.write_str("management traffic (ARP, DHCP, IPv6 discovery) passes unfiltered")
            }
            Why::ManagementConn => write!(
                f,
                "{}: the agent's own management connection passes unfiltered",
                TupleText(&tuple)
            ),
            Why::NoRuleset(FailurePolicy::FailOpen) => {
                f.write_str("no ruleset yet: failOpen passes")
            }
            Why::NoRuleset(FailurePolicy::FailClosed) => {
                f.write_str("no ruleset yet: failClosed drops")
            }
            Why::L2Rule(m) => write!(f, "L2 {}", rule(m)),
            Why::Established { state } => {
                let side = match d.found {
                    Probe::Live(hit) if hit.reply => "reply",
                    _ => "original",
                };
                write!(
                    f,
                    "established {} fast path, {side} direction, state {}",
                    FoundConn(fw, d.found),
                    state.name()
                )
            }
            Why::Invalid { err } => {
                write!(f, "{}: invalid ({err}): drop", FoundConn(fw, d.found))
            }
            Why::Related { hit } => write!(f, "ICMP error related to {}: passes", conn(hit)),
            Why::Unsolicited { .. } => {
                let inner = match d.ipv4().map(|i| &i.l4) {
                    Some(L4::IcmpError { inner, .. }) => *inner,
                    _ => tuple,
                };
                write!(
                    f,
                    "ICMP error quoting {} of no tracked connection: drop",
                    TupleText(&inner)
                )
            }
            Why::Segment { m, seg } => {
                write!(
                    f,
                    "{way} TCP segment of no tracked connection {}, {}",
                    TupleText(&tuple),
                    rule(m)
                )?;
                match seg {
                    Segment::Rst => f.write_str(": answered with a TCP RST"),
                    Segment::PickedUp => f.write_str(": picked up mid-stream (tcp_strict off)"),
                    Segment::Full(e) => write!(f, ", but {e}: drop"),
                    Segment::Strict => f.write_str(": tcp_strict, not a SYN: drop"),
                    Segment::NotSyn => f.write_str(": not a SYN: drop"),
                }
            }
            Why::New { m, full } => {
                write!(f, "new {way} connection {}, {}", TupleText(&tuple), rule(m))?;
                match (full, d.verdict) {
                    (Some(e), _) => write!(f, ", but {e}: drop"),
                    (None, FwVerdict::Reject(kind)) => match kind {
                        RejectKind::TcpRst => f.write_str(": answered with a TCP RST"),
                        RejectKind::IcmpUnreachable(c) if c == CODE_PORT_UNREACHABLE => {
                            f.write_str(": answered with ICMP port unreachable")
                        }
                        RejectKind::IcmpUnreachable(c) if c == CODE_ADMIN_PROHIBITED => {
                            f.write_str(": answered with ICMP administratively prohibited")
                        }
                        RejectKind::IcmpUnreachable(c) => {
                            write!(f, ": answered with ICMP unreachable code {c}")
                        }
                    },
                    (None, _) => Ok(()),
                }
            }
            Why::Fragment => f.write_str("non-first IPv4 fragment (not reassembled): drop"),
            Why::NotIpv4 => {
                let ethertype = d.pkt.map_or(0, |p| p.ethertype);
                write!(f, "not IPv4 (ethertype {ethertype:#06x}): ")?;
                match fw.policy().and_then(|p| p.rules().last()) {
                    Some(r) => write!(
                        f,
                        "default rule {} ({}) {}",
                        r.id,
                        r.ruleset,
                        r.action.as_str()
                    )?,
                    None => f.write_str("no default rule: accept")?,
                }
                f.write_str(", stateless")
            }
        }
    }
}

/// Shown for a reason that needs a tuple when the decision has none (never
/// on a decision [`crate::Firewall::judge`] made).
const NO_TUPLE: Tuple = Tuple {
    proto: 0,
    src: Ipv4Addr::UNSPECIFIED,
    dst: Ipv4Addr::UNSPECIFIED,
    sport: 0,
    dport: 0,
};

/// `rule 1006 (domain-c25) accept`.
struct RuleName<'a> {
    fw: &'a Firewall,
    m: Match,
}

impl fmt::Display for RuleName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = &self.m;
        match self
            .fw
            .policy()
            .and_then(|p| p.rules().get(m.rule as usize))
        {
            Some(r) => write!(f, "rule {} ({}) {}", r.id, r.ruleset, m.action.as_str()),
            None => write!(f, "rule {} {}", m.rule_id, m.action.as_str()),
        }
    }
}

/// `connection 558a796d00000000 (rule 1006)` (the id as `getflows` prints it).
struct ConnName<'a> {
    fw: &'a Firewall,
    hit: Hit,
}

impl fmt::Display for ConnName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.fw.conntrack().get(self.hit.id) {
            Some(v) => write!(f, "connection {:016x} (rule {})", v.id, v.rule_id),
            None => f.write_str("connection (gone)"),
        }
    }
}

/// The connection the lookup found, as [`ConnName`].
struct FoundConn<'a>(&'a Firewall, Probe);

impl fmt::Display for FoundConn<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.1 {
            Probe::Live(hit) => write!(f, "{}", ConnName { fw: self.0, hit }),
            _ => f.write_str("connection (gone)"),
        }
    }
}

/// `tcp 192.168.100.4:5201 -> 192.168.100.3:40000`, `icmp 10.0.0.1 -> 10.0.0.2`.
struct TupleText<'a>(&'a Tuple);

impl fmt::Display for TupleText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.0;
        match t.proto {
            6 => write!(f, "tcp {}:{} -> {}:{}", t.src, t.sport, t.dst, t.dport),
            17 => write!(f, "udp {}:{} -> {}:{}", t.src, t.sport, t.dst, t.dport),
            1 => write!(f, "icmp {} -> {}", t.src, t.dst),
            p => write!(f, "proto {p} {} -> {}", t.src, t.dst),
        }
    }
}
