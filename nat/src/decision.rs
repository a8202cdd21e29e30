//! What the NAT decided for one packet ([`Decision`]), as
//! [`crate::Nat::judge`] works it out without changing anything and
//! [`crate::Nat::commit`] carries it out: the verdict (the translation to
//! apply, or the drop reason), the session step of each half (one half,
//! or two for a hairpinned packet: the sender's SNAT, then the DNAT to
//! the receiver), and why. `trace` shows it with `Display`.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};

use crate::packet::{ParseError, proto_name};
use crate::rewrite::Translation;
use crate::state::{Dir, SessionState};
use crate::table::{Key, Session};

/// Why the NAT drops a packet (the datapath counts and drops it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DropReason {
    /// No session, and nothing published or mapped where it is going (or
    /// a packet that cannot open one: a TCP RST, an ICMP reply, an ICMP
    /// error about no session).
    NoMapping,
    /// Address-dependent filtering: the mapping never sent to that remote.
    Filtered,
    /// No free external port on the internal address's pool address.
    Exhausted,
    /// The session table is full.
    TableFull,
    /// An IPv4 fragment (not reassembled; see [`crate::packet`]).
    Fragment,
    /// Unreadable headers or a bad ICMP error checksum.
    Malformed,
    /// A protocol or ICMP type the NAT does not translate, or a packet
    /// hairpinned to its own sender's external endpoint.
    Unsupported,
}

impl DropReason {
    pub const COUNT: usize = 7;
    pub const ALL: [DropReason; Self::COUNT] = [
        DropReason::NoMapping,
        DropReason::Filtered,
        DropReason::Exhausted,
        DropReason::TableFull,
        DropReason::Fragment,
        DropReason::Malformed,
        DropReason::Unsupported,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DropReason::NoMapping => "no_mapping",
            DropReason::Filtered => "filtered",
            DropReason::Exhausted => "exhausted",
            DropReason::TableFull => "table_full",
            DropReason::Fragment => "fragment",
            DropReason::Malformed => "malformed",
            DropReason::Unsupported => "unsupported",
        }
    }

    pub(crate) fn of_parse(e: ParseError) -> DropReason {
        match e {
            ParseError::Malformed => DropReason::Malformed,
            ParseError::Fragment => DropReason::Fragment,
            ParseError::Unsupported { .. } => DropReason::Unsupported,
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What to do with the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Rewrite it so ([`crate::rewrite::apply`]) and forward it.
    Translate(Translation),
    Drop(DropReason),
}

/// Why a packet is dropped, in more detail than its [`DropReason`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Why {
    Parse(ParseError),
    /// A packet of no session that cannot open one (a TCP RST, an ICMP
    /// reply; an ICMP error whose quoted packet matches no session).
    NoSession,
    /// Nothing is published or mapped at this external endpoint.
    NoMapping,
    /// The mapping exists but never sent to this remote address.
    Filtered,
    /// No free port for a new mapping on this pool address.
    Exhausted {
        ext_ip: Ipv4Addr,
    },
    TableFull,
    /// Sent to its own external endpoint.
    SelfHairpin,
}

impl Why {
    pub fn reason(self) -> DropReason {
        match self {
            Why::Parse(e) => DropReason::of_parse(e),
            Why::NoSession | Why::NoMapping => DropReason::NoMapping,
            Why::Filtered => DropReason::Filtered,
            Why::Exhausted { .. } => DropReason::Exhausted,
            Why::TableFull => DropReason::TableFull,
            Why::SelfHairpin => DropReason::Unsupported,
        }
    }
}

/// How a half found its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Found {
    /// A live session; its state after this packet.
    Session(SessionState),
    /// A new session (`renewed`: in the slot of one past its timeout).
    New {
        how: How,
        state: SessionState,
        renewed: bool,
    },
    /// An ICMP error about the session's traffic (which it leaves alone).
    Related(SessionState),
}

/// Where a new session's outside endpoint comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum How {
    /// A static 1:1 entry.
    Static,
    /// The internal endpoint's live mapping (endpoint-independent mapping).
    Mapping,
    /// A new mapping; `preserved`: its port is the internal one.
    Allocated { preserved: bool },
}

/// One translation of a packet: a session's three endpoints, what was
/// found, and which way (`Out`: the inside source is SNATed; `In`: the
/// destination is DNATed to the inside).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Half {
    pub dir: Dir,
    pub proto: u8,
    pub inside: SocketAddrV4,
    pub outside: SocketAddrV4,
    pub remote: SocketAddrV4,
    pub found: Found,
    pub(crate) step: Step,
}

/// The table write one half needs (the session's endpoints are the
/// half's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Nothing (an ICMP error).
    None,
    /// The session at `slot` moves to `state`/`fins` and is seen now;
    /// `renew`: its INBOUND bit is replaced (a session past its timeout,
    /// started afresh).
    Refresh {
        slot: u32,
        state: u8,
        fins: u8,
        renew: Option<u8>,
    },
    /// A new session with `flags`; `claim`: the pool index, protocol
    /// index and port of a new mapping's external port.
    Create {
        flags: u8,
        claim: Option<(u16, u8, u16)>,
    },
}

impl Half {
    /// The session's inside 5-tuple.
    pub(crate) fn key(&self) -> Key {
        Key::of(self.proto, self.inside, self.remote)
    }

    /// The new session a `Create` step adds.
    pub(crate) fn session(&self, flags: u8) -> Session {
        let state = match self.found {
            Found::New { state, .. } | Found::Session(state) | Found::Related(state) => state,
        };
        Session {
            int_ip: u32::from(*self.inside.ip()),
            ext_ip: u32::from(*self.outside.ip()),
            rem_ip: u32::from(*self.remote.ip()),
            int_port: self.inside.port(),
            ext_port: self.outside.port(),
            rem_port: self.remote.port(),
            proto: self.proto,
            state: state as u8,
            flags,
            seen: 0,
        }
    }
}

/// A session past its timeout that the judgement met and did not reuse:
/// commit removes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stale {
    pub slot: u32,
    pub key: Key,
}

/// The NAT's decision for one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub dir: Dir,
    pub verdict: Verdict,
    /// The first half (the only one unless hairpinned), and the hairpin's
    /// DNAT half.
    pub halves: [Option<Half>; 2],
    /// Set when dropped.
    pub why: Option<Why>,
    /// An ICMP error (the halves are its quoted packet's session).
    pub icmp_error: bool,
    pub(crate) stale: Option<Stale>,
    /// Pool index and protocol index of an exhausted allocation.
    pub(crate) exhausted: Option<(u16, u8)>,
}

impl Decision {
    pub(crate) fn drop(dir: Dir, why: Why) -> Decision {
        Decision {
            dir,
            verdict: Verdict::Drop(why.reason()),
            halves: [None, None],
            why: Some(why),
            icmp_error: false,
            stale: None,
            exhausted: None,
        }
    }

    /// Whether the packet is hairpinned (both halves).
    pub fn is_hairpin(&self) -> bool {
        self.halves[1].is_some()
    }
}

impl fmt::Display for Half {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = proto_name(self.proto);
        match self.dir {
            Dir::Out => write!(
                f,
                "snat {p} {} as {} to {}",
                self.inside, self.outside, self.remote
            )?,
            Dir::In => write!(
                f,
                "dnat {p} {} to {} from {}",
                self.outside, self.inside, self.remote
            )?,
        }
        match self.found {
            Found::Session(s) => write!(f, " (session, {})", s.name()),
            Found::Related(s) => write!(f, " (icmp error of a session, {})", s.name()),
            Found::New {
                how,
                state,
                renewed,
            } => {
                let how = match how {
                    How::Static => "static 1:1",
                    How::Mapping => "existing mapping",
                    How::Allocated { preserved: true } => "new mapping, port preserved",
                    How::Allocated { preserved: false } => "new mapping, port allocated",
                };
                let renewed = if renewed {
                    ", replacing an expired one"
                } else {
                    ""
                };
                write!(f, " (new session, {how}, {}{renewed})", state.name())
            }
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dir = match self.dir {
            Dir::Out => "out",
            Dir::In => "in",
        };
        match self.verdict {
            Verdict::Drop(r) => {
                write!(f, "{dir}: drop {r}")?;
                match self.why {
                    Some(Why::Parse(e)) => write!(f, " ({e})")?,
                    Some(Why::NoSession) => f.write_str(" (no session, and it cannot open one)")?,
                    Some(Why::NoMapping) => f.write_str(" (nothing mapped or published there)")?,
                    Some(Why::Filtered) => {
                        f.write_str(" (address-dependent filtering: never sent to that address)")?;
                    }
                    Some(Why::Exhausted { ext_ip }) => write!(f, " (no free port on {ext_ip})")?,
                    Some(Why::TableFull) => f.write_str(" (session table full)")?,
                    Some(Why::SelfHairpin) => {
                        f.write_str(" (sent to its own external endpoint)")?
                    }
                    None => {}
                }
            }
            Verdict::Translate(_) => {
                write!(f, "{dir}: translate")?;
                if self.icmp_error {
                    f.write_str(" icmp error")?;
                }
                if self.is_hairpin() {
                    f.write_str(" hairpin")?;
                }
            }
        }
        for h in self.halves.iter().flatten() {
            write!(f, "; {h}")?;
        }
        Ok(())
    }
}
