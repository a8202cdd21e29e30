//! The packet pipeline of an instance, as a pure state machine (sans-IO).
//!
//! Input: an Ethernet frame from the local port, or a Geneve UDP payload
//! from the underlay, plus `now`. Output: a [`Verdict`] and finished packets
//! in the caller's [`Output`] queues. The pipeline is a list of layers
//! (port security, responders, switch, router, encapsulation on the way out;
//! decapsulation and delivery on the way in), each with its own counters;
//! forwarding state is an immutable [`Tables`] snapshot swapped whole.
//! Every layer says why it decided as it did (a structured reason whose
//! `Display` is the `trace` text); [`Pipeline::trace`] runs a frame through
//! the same layer code with a recorder and without committing anything
//! ([`trace`]).
//!
//! Filtered micro-segmentation is a second, firewall-only pipeline
//! ([`mseg::Microseg`]): the same layer walk, counters, output queues and
//! trace over the lists [`layer::MSEG_IN`] and [`layer::MSEG_OUT`].

#![forbid(unsafe_code)]

pub mod bpf;
pub mod coalesce;
pub mod counters;
pub mod edge;
pub mod layer;
pub mod lbstate;
pub mod mseg;
mod narrow;
pub mod offload;
pub mod pipeline;
pub mod queue;
pub mod tables;
pub mod trace;
pub mod verdict;

pub use counters::{Counters, DhcpCounters, LayerCounters, PacketBytes, TunnelCounters};
pub use mseg::Microseg;
pub use offload::Offload;
pub use pipeline::Pipeline;
pub use queue::{Output, PROBE_SLOTS, TcpGso, TxItem, TxQueue};
pub use tables::{LocalHost, Location, Tables, TablesError};
pub use trace::{OutputKind, StepResult, Trace, TraceFrom, TraceOutput, TraceStep};
pub use verdict::{DropReason, LayerId, Verdict};
