//! What the balancer decided for one packet ([`Decision`]): the verdict
//! (the translation to apply, pass it on untouched, or drop it with a
//! counted reason), how it was reached (an existing connection, a
//! persistence template, the scheduler's pick, the sorry server) and the
//! endpoints involved, for `trace`; plus, crate-private, the table writes
//! that carry it out. `Display` writes one line.

use std::fmt;
use std::net::SocketAddrV4;

use control::lb::Scheduler;
use nat::Translation;
use nat::packet::{ParseError, proto_name};

use super::persist::TKey;
use super::sched;
use super::state::{ConnState, Dir};
use super::table::{Conn, Key};

/// Why the balancer drops a packet (the datapath counts and drops it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DropReason {
    /// To a virtual server, no connection, and it cannot open one (a TCP
    /// segment other than a SYN; an ICMP error about no connection).
    NoConnection,
    /// No real server can take a new connection and there is no sorry
    /// server.
    NoServer,
    /// The connection (or template) table is full.
    TableFull,
    /// Full NAT: no free SNAT port toward that real server.
    PortsExhausted,
    /// NAT: another connection already has the same reply 5-tuple (the
    /// same client endpoint to the same real server through another
    /// virtual server), so replies could not be told apart.
    Conflict,
    /// To a virtual address: an IPv4 fragment (not reassembled).
    Fragment,
    /// To a virtual address: unreadable headers.
    Malformed,
}

impl DropReason {
    pub const COUNT: usize = 7;
    pub const ALL: [DropReason; Self::COUNT] = [
        DropReason::NoConnection,
        DropReason::NoServer,
        DropReason::TableFull,
        DropReason::PortsExhausted,
        DropReason::Conflict,
        DropReason::Fragment,
        DropReason::Malformed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DropReason::NoConnection => "no_connection",
            DropReason::NoServer => "no_server",
            DropReason::TableFull => "table_full",
            DropReason::PortsExhausted => "ports_exhausted",
            DropReason::Conflict => "conflict",
            DropReason::Fragment => "fragment",
            DropReason::Malformed => "malformed",
        }
    }

    pub(crate) fn of_parse(e: ParseError) -> Option<DropReason> {
        match e {
            ParseError::Malformed => Some(DropReason::Malformed),
            ParseError::Fragment => Some(DropReason::Fragment),
            ParseError::Unsupported { .. } => None,
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a packet is not the balancer's (it goes on untouched).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PassReason {
    /// Forward: not to a virtual server (address, port and protocol), or
    /// a protocol the balancer does not take (ICMP queries).
    NotService,
    /// Reverse: no connection has this reply 5-tuple.
    NoConnection,
}

/// What to do with the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Rewrite it so ([`super::apply`]) and forward it.
    Translate(Translation),
    /// Not the balancer's: leave it alone.
    Pass(PassReason),
    /// Drop it (counted).
    Drop(DropReason),
}

/// How the real server was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum How {
    /// An existing connection (its state after this packet).
    Connection(ConnState),
    /// A new connection on the client's persistence template.
    Template(ConnState),
    /// A new connection, the scheduler's pick (`template`: a persistence
    /// template is made for the client).
    Scheduled {
        scheduler: Scheduler,
        template: bool,
        state: ConnState,
    },
    /// A new connection to the sorry server: the live weight is below the
    /// quorum (`quorum_down`), or no real server could take it.
    Sorry { quorum_down: bool, state: ConnState },
    /// An ICMP error about a connection (which it leaves as it is).
    IcmpError(ConnState),
}

/// A connection found expired (or to be started over) that the decision
/// removes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stale {
    /// Its forward key.
    pub key: Key,
    /// Removed even if not expired (a reused port pair to be rescheduled).
    pub force: bool,
}

/// The template side of a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum TmplPlan {
    #[default]
    None,
    /// Joins live template `slot`.
    Use(u32),
    /// A new template; `retire`: the client's previous one (expired, or its
    /// server no longer schedulable).
    New {
        key: TKey,
        timeout: u32,
        retire: Option<u32>,
    },
}

/// The table writes of a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Plan {
    /// Nothing but counters (drops, passes).
    #[default]
    None,
    /// Connection `slot` (checked by `key`, its forward key) moves to
    /// `state`/`fins` and is seen now; a packet of `bytes` is counted.
    Refresh {
        slot: u32,
        key: Key,
        state: u8,
        fins: u8,
        bytes: u16,
    },
    /// A new connection (its server `conn.dest`) in virtual server `svc`.
    Create {
        svc: u32,
        conn: Conn,
        tmpl: TmplPlan,
        step: sched::Step,
        bytes: u16,
    },
    /// An ICMP error translated.
    IcmpError,
}

/// The balancer's decision for one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub dir: Dir,
    pub verdict: Verdict,
    pub how: Option<How>,
    /// The virtual server: protocol number, address and port.
    pub service: Option<(u8, SocketAddrV4)>,
    pub client: Option<SocketAddrV4>,
    pub real: Option<SocketAddrV4>,
    /// Full NAT: the source the real server sees.
    pub snat: Option<SocketAddrV4>,
    pub(crate) plan: Plan,
    pub(crate) stale: [Option<Stale>; 2],
}

impl Decision {
    pub(crate) fn new(dir: Dir, verdict: Verdict) -> Decision {
        Decision {
            dir,
            verdict,
            how: None,
            service: None,
            client: None,
            real: None,
            snat: None,
            plan: Plan::None,
            stale: [None, None],
        }
    }

    pub(crate) fn drop(dir: Dir, r: DropReason) -> Decision {
        Decision::new(dir, Verdict::Drop(r))
    }

    pub(crate) fn pass(dir: Dir, r: PassReason) -> Decision {
        Decision::new(dir, Verdict::Pass(r))
    }

    pub(crate) fn with_stale(mut self, s: [Option<Stale>; 2]) -> Decision {
        self.stale = s;
        self
    }
}

impl fmt::Display for How {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            How::Connection(s) => write!(f, "existing connection ({})", s.name()),
            How::Template(s) => write!(
                f,
                "new connection, on the client's persistence template ({})",
                s.name()
            ),
            How::Scheduled {
                scheduler,
                template,
                state,
            } => {
                write!(f, "new connection, scheduled by {scheduler}")?;
                if *template {
                    f.write_str(", new persistence template")?;
                }
                write!(f, " ({})", state.name())
            }
            How::Sorry { quorum_down, state } => {
                let why = if *quorum_down {
                    "live weight below quorum"
                } else {
                    "no real server available"
                };
                write!(
                    f,
                    "new connection to the sorry server: {why} ({})",
                    state.name()
                )
            }
            How::IcmpError(s) => write!(f, "icmp error of a connection ({})", s.name()),
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dir = match self.dir {
            Dir::Forward => "forward",
            Dir::Reverse => "reverse",
        };
        match self.verdict {
            Verdict::Translate(_) => write!(f, "{dir}: balance")?,
            Verdict::Pass(PassReason::NotService) => {
                return write!(f, "{dir}: pass (not a virtual server)");
            }
            Verdict::Pass(PassReason::NoConnection) => {
                return write!(f, "{dir}: pass (no balanced connection)");
            }
            Verdict::Drop(r) => write!(f, "{dir}: drop {r}")?,
        }
        if let Some((p, vs)) = self.service {
            write!(f, "; virtual server {} {vs}", proto_name(p))?;
        }
        if let Some(c) = self.client {
            write!(f, "; client {c}")?;
        }
        if let Some(r) = self.real {
            write!(f, " -> real server {r}")?;
        }
        if let Some(s) = self.snat {
            write!(f, " as {s}")?;
        }
        if let Some(h) = self.how {
            write!(f, "; {h}")?;
        }
        Ok(())
    }
}
