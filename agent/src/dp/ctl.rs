//! What the control side and the datapath threads (the overlay loop,
//! [`crate::dp::dataloop`], and the micro-segmentation loop,
//! [`crate::dp::msegloop`]) exchange: the control messages ([`Ctl`]: new
//! tables, firewall questions, traces, captures, stop) and what a thread
//! publishes for the local API, metrics and the gateway ([`Published`];
//! its I/O counters are the API's own type, [`IoCounters`]).
//! Both loops, `api`, `gw::gwclient` and `dp::pktlog` import these from
//! here, so none of them imports another.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::mpsc::Sender;

pub use agent_api::IoCounters;
use datapath::{Counters, Tables};

use crate::dp::dataloop::capture::CaptureRequest;
use crate::dp::fwctl::FwRequest;
use crate::dp::natctl::NatRequest;

/// Messages from the control side.
#[derive(Debug)]
pub enum Ctl {
    Tables(Arc<Tables>),
    /// A firewall question, answered between batches.
    Fw(FwRequest),
    /// Connections saved by a previous run (sent after the first tables).
    RestoreFlows(Vec<firewall::conntrack::SavedFlow>),
    /// A question to the edge's NAT, answered between batches.
    Nat(NatRequest),
    /// A question to the load balancer, answered between batches.
    Lb(crate::dp::lbctl::LbRequest),
    /// NAT sessions saved by a previous run (sent after the first tables).
    RestoreNat(crate::gw::persist::SavedNat),
    /// A frame to trace through the live decisions, answered between batches.
    Trace(TraceRequest),
    /// Arms a bounded capture; answered when it is complete.
    Capture(CaptureRequest),
    Stop,
}

/// A `trace` request with the channel its answer goes to.
#[derive(Debug)]
pub struct TraceRequest {
    pub input: TraceInput,
    pub reply: Sender<Result<TraceReply, TraceError>>,
}

/// Why a datapath thread did not trace a frame; the local API shows its
/// `Display`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TraceError {
    /// The frame could not be wrapped in Geneve as `src_tep` would send it.
    #[error("cannot encapsulate the frame: {0}")]
    Encapsulate(#[from] geneve::GeneveError),
    /// A NIC frame (micro-segmentation's "underlay") to the overlay loop.
    #[error("this agent runs the overlay: from \"underlay\" takes src_tep and vni")]
    NicOnOverlay,
    /// A Geneve-borne frame to the micro-segmentation loop.
    #[error(
        "this agent runs micro-segmentation: there is no overlay; from \
         \"underlay\" is a frame as the NIC receives it (no src_tep or vni)"
    )]
    UnderlayOnMicroseg,
}

/// The frame to trace and where it enters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TraceInput {
    /// An Ethernet frame the instance sends on its port (micro-segmentation
    /// mode: a frame the host sends).
    Port(Vec<u8>),
    /// Overlay mode: an inner frame arriving in Geneve from `src_tep` on `vni`.
    Underlay {
        src_tep: Ipv4Addr,
        vni: u32,
        frame: Vec<u8>,
    },
    /// Micro-segmentation mode: a frame as the NIC receives it.
    Nic(Vec<u8>),
}

/// The datapath thread's answer to a trace.
#[derive(Debug)]
pub enum TraceReply {
    /// The layers' record (the overlay pipeline or micro-segmentation's).
    Walked(datapath::Trace),
    /// Micro-segmentation: a frame the NIC received for another MAC (not
    /// the host's: not judged, not passed on).
    NotForHost(datapath::mseg::NotForHost),
}

/// What a datapath thread publishes for the control side (the local API,
/// metrics, the gateway's `Status`, the packet-log writer): a copy of its
/// counters refreshed every 200 ms, and the packet-log records to write.
#[derive(Debug, Clone, Default)]
pub struct Published {
    pub counters: Counters,
    pub io: IoCounters,
    pub config_version: u64,
    /// Firewall counters for the gateway's Status (`name -> value`).
    pub firewall: Vec<(String, u64)>,
    /// Packet-log records not yet written (drained by the log writer).
    pub fw_log: Vec<firewall::pktlog::LogRecord>,
    /// Records dropped because the writer fell behind.
    pub fw_log_lost: u64,
    /// The edge's NAT (`None` off the edge).
    pub nat: Option<agent_api::NatSummary>,
}

/// Most unwritten packet-log records kept between writer runs.
pub const MAX_PENDING_LOG: usize = 16_384;

/// Moves the firewall's packet-log records to `s` for the writer.
pub fn drain_log(fw: &mut firewall::Firewall, s: &mut Published) {
    let Published {
        fw_log,
        fw_log_lost,
        ..
    } = s;
    fw.log_mut().drain(|r| {
        if fw_log.len() < MAX_PENDING_LOG {
            fw_log.push(*r);
        } else {
            *fw_log_lost += 1;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::TraceError;

    #[test]
    fn trace_errors_keep_their_api_texts() {
        assert_eq!(
            TraceError::NicOnOverlay.to_string(),
            "this agent runs the overlay: from \"underlay\" takes src_tep and vni"
        );
        assert_eq!(
            TraceError::UnderlayOnMicroseg.to_string(),
            "this agent runs micro-segmentation: there is no overlay; from \"underlay\" \
             is a frame as the NIC receives it (no src_tep or vni)"
        );
    }
}
