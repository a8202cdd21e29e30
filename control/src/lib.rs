//! The agent <-> gateway contract.
//!
//! Today this crate holds the desired-state model ([`model`]): the data an
//! agent needs to forward (its tunnel-endpoint id, the logical switches and
//! routers it takes part in, its own port and the remote ports it can reach).
//! The static config file of `nsx-agent` is exactly this model plus a few
//! host-local settings, so the gateway will later push the same types.
//! [`validate`] checks a model and reports every problem with its path.

pub mod model;
pub mod validate;

pub use model::{
    InstanceConfig, LocalPort, LogicalRouter, LogicalSwitch, MacAddr, RemotePort, StaticRoute,
};
pub use validate::{Problem, Problems, validate};
