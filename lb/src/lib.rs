//! The L4 load balancer of seed 004, sans-IO (no sockets, no clocks: time
//! is passed in).
//!
//! * [`keepalived`]: keepalived.conf as written (includes, both keyword
//!   spellings, checkers), read into [`control::lb::VirtualServer`]s, with
//!   errors and warnings at file:line.
//! * [`engine`]: the balancer a datapath runs: IPVS schedulers, Maglev,
//!   the connection table, persistence templates, counters and views.

#![forbid(unsafe_code)]

pub mod engine;
pub mod keepalived;
