//! The agent <-> gateway contract.
//!
//! * [`model`]: the desired-state model — the data an agent needs to forward
//!   (its tunnel-endpoint id, the logical switches and routers it takes part
//!   in, its own port and the remote ports it can reach). The static config
//!   file of `nsx-agent` is this model plus host-local settings, and the
//!   gateway pushes the same types.
//! * [`mod@validate`]: checks a model and reports every problem with its path.
//! * [`proto`]: the control-channel messages (JSON, tagged by `"type"`),
//!   protocol versions and limits.
//! * [`framing`]: length-delimited framing (4-byte big-endian length + JSON)
//!   as a pure codec with a maximum frame size.
//! * [`session`]: the agent and gateway protocol state machines (sans-IO:
//!   time is passed in, outputs are returned) and the reconnect backoff.
//!
//! Sockets, TLS, timers, persistence and the datapath swap belong to the
//! shells (`nsx-agent`, `nsx-gateway`). See `control/PROTOCOL.md`.

#![forbid(unsafe_code)]

pub mod firewall;
pub mod framing;
pub mod lb;
pub mod model;
pub mod proto;
pub mod session;
pub mod tier0;
pub mod validate;

pub use firewall::{
    Action, AddrRef, AddrSet, DefaultRule, Direction, FirewallConfig, L2Rule, L2RuleSet, PortRange,
    Protocol, Rule, RuleSet, Service, Timeouts, validate_firewall,
};
pub use framing::{Decoder, FrameError, encode};
pub use model::{
    DhcpOptions, EdgeLink, InstanceConfig, LocalPort, LogicalRouter, LogicalSwitch, MacAddr,
    NatFiltering, NatTimeouts, PublicIp, RemotePort, Snat, StaticRoute, Tier0, Uplink,
};
pub use proto::{
    AgentMsg, GatewayMsg, HEALTH_VERSION, InstanceMeta, MAX_FRAME, PROTOCOL_VERSION, Role,
    SUPPORTED_VERSIONS, StatusReport,
};
pub use session::{
    AgentOut, AgentSession, AgentSessionConfig, AgentState, ApplyRefused, Backoff, CloseReason,
    ConnectionStatus, GatewayConfig, GatewayOut, GatewaySession, GatewayState, Jitter,
};
pub use validate::{Problem, Problems, validate};
