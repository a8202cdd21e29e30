//! The edge's NAT engine, sans-IO: SNAT of inside traffic leaving by the
//! uplink to a pool of external addresses, static 1:1 NAT ("public IPs"),
//! hairpinning, and ICMP error translation, following RFC 4787 (UDP),
//! RFC 5382 (TCP) and RFC 5508 (ICMP):
//!
//! * [`engine`]: the [`Nat`] itself, `judge` (pure) + `commit` (every
//!   write), per-packet decisions ([`decision`]);
//! * [`config`]: the pool, port range, filtering, timeouts, static entries;
//! * [`packet`]: reading a packet's tuple; [`rewrite`]: translating it in
//!   place with incremental checksum updates;
//! * [`state`]: session states and timeouts; [`view`]: listings, counters;
//!   [`snapshot`]: saving and restoring the sessions across a restart;
//! * [`index`] (keyed hashing, the fixed-capacity hash index) and
//!   [`clock`] (last-seen ticks): the table kit the `lb` engine's
//!   connection and template tables are built on too.
//!
//! Time is always passed in as `now_ns` (monotonic nanoseconds); nothing
//! here does I/O, locks, or allocates per packet: every table is allocated
//! for its capacity when the [`Nat`] is made.

#![forbid(unsafe_code)]

pub mod clock;
pub mod config;
pub mod decision;
pub mod engine;
pub mod index;
pub mod packet;
mod ports;
pub mod rewrite;
pub mod snapshot;
pub mod state;
mod table;
pub mod view;

pub use config::{ConfigError, Filtering, NatConfig, PortRange, StaticNat, Timeouts};
pub use decision::{Decision, DropReason, Found, Half, How, Verdict, Why};
pub use engine::Nat;
pub use packet::{L4, ParseError, Parsed, Tuple};
pub use rewrite::{ErrorRewrite, L4Csum, Rewrite, RewriteError, Translation};
pub use snapshot::SavedSession;
pub use state::{Dir, SessionState};
pub use view::{NatCounters, PoolUse, SessionView};
