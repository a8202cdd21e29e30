//! The distributed firewall, sans-IO: compiled rules and the new-flow
//! classifier ([`classify`]), a plain linear reference evaluator used to
//! check it ([`mod@reference`]), connection tracking with the TCP state machine
//! ([`conntrack`], [`tcp`]), packet parsing down to L4 ([`packet`]), the
//! per-instance engine tying them together ([`engine`]) and its decisions
//! with their reasons ([`decision`]), and the seed's
//! `vsipioctl getrules/getaddrsets/getflows` text views ([`show`]).
//!
//! Time is always passed in as `now_ns`; nothing here does I/O, locks, or
//! allocates per packet.

#![forbid(unsafe_code)]

pub mod classify;
pub mod conntrack;
pub mod decision;
pub mod engine;
pub mod flow;
pub mod packet;
pub mod pktlog;
pub mod reference;
pub mod reject;
pub mod show;
pub mod show_flows;
pub mod tcp;
#[cfg(test)]
mod testdata;

pub use classify::{Match, Policy};
pub use conntrack::{Conntrack, ConntrackStats, EntryId, FlowView, Full, Hit, Probe, SavedFlow};
pub use decision::{Decision, FwDrop, FwVerdict, Segment, Why};
pub use engine::{FailurePolicy, Firewall, FwCounters, RuleHits};
pub use flow::{Dir, FlowKey, L4, TcpMeta, Tuple};
pub use reject::{RejectError, RejectKind};
pub use tcp::{TcpConn, TcpInvalid, TcpState};
