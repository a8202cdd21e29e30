//! The L4 load balancer of seed 004: the reader and the balancer are
//! sans-IO (no sockets, no clocks: time is passed in); the health checkers
//! keep their logic pure and their I/O in one module.
//!
//! * [`keepalived`]: keepalived.conf as written (includes, both keyword
//!   spellings, checkers), read into [`control::lb::VirtualServer`]s, with
//!   errors and warnings at file:line.
//! * [`engine`]: the balancer a datapath runs: IPVS schedulers, Maglev,
//!   the connection table, persistence templates, counters and views.
//! * [`health`]: keepalived's checkers (TCP, HTTP/SSL GET, scripts): their
//!   schedule and verdicts (pure), the probes (tokio), and the monitor that
//!   runs them for a set of virtual servers.

#![forbid(unsafe_code)]

pub mod engine;
#[cfg(feature = "health")]
pub mod health;
pub mod keepalived;
