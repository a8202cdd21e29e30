//! The nsx-agent library: everything the `nsx-agent` binary runs, laid out
//! by role so the gateway's tests, the benchmarks and future users of the
//! I/O loop (the edge, the load balancer) build on the same code.
//!
//! * [`dp`]: the datapath threads (overlay and micro-segmentation loops),
//!   batched socket I/O and the requests they answer between batches;
//! * [`host`]: host plumbing (NIC, bridge, netns, veth, nf_tables) and the
//!   overlay sshds;
//! * [`gw`]: enrollment and the control session with the gateway, and the
//!   applied config kept on disk;
//! * [`api`]: the local API socket for nsxcli and the Prometheus endpoint;
//! * [`config`]: the agent's config file; [`run`]: wires it all together;
//!   [`sys`]: named conversions (C call sizes, nanoseconds).

pub mod api;
pub mod config;
pub mod dp;
pub mod fsutil;
pub mod gw;
pub mod health;
pub mod host;
pub mod run;
pub mod sys;
