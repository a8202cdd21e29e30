//! Firewall requests from the control side to a datapath thread (overlay or
//! micro-segmentation loop), answered between batches: the live flows in
//! the seed's `getflows` format, rule hit counters, and the connection
//! table to save across a planned restart. Building an answer allocates;
//! that happens on request, never per packet.

use std::sync::mpsc::Sender;

use agent_api::{FirewallStats, RuleStats};
use firewall::conntrack::SavedFlow;
use firewall::{Firewall, FwCounters};

/// What the control side asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FwQuery {
    /// `getflows` text.
    Flows,
    /// Rule hits and firewall counters.
    Stats,
    /// The connection table, to persist before a planned stop.
    Save,
}

/// A request with the channel its answer goes to.
#[derive(Debug)]
pub struct FwRequest {
    pub query: FwQuery,
    pub reply: Sender<FwReply>,
}

/// The datapath thread's answer.
#[derive(Debug)]
pub enum FwReply {
    /// No firewall is configured in this mode.
    Off,
    Flows(String),
    Stats(Box<FirewallStats>),
    Saved(Vec<SavedFlow>),
}

/// Answers `q` from the thread that owns `fw`.
pub fn answer(fw: Option<&mut Firewall>, q: FwQuery, now_ns: u64) -> FwReply {
    let Some(fw) = fw else {
        return FwReply::Off;
    };
    match q {
        FwQuery::Flows => FwReply::Flows(firewall::show_flows::getflows(fw.conntrack(), now_ns)),
        FwQuery::Save => FwReply::Saved(fw.conntrack().snapshot(now_ns)),
        FwQuery::Stats => FwReply::Stats(Box::new(stats(fw))),
    }
}

fn stats(fw: &mut Firewall) -> FirewallStats {
    let c: FwCounters = fw.counters().clone();
    let rules = match fw.policy() {
        Some(p) => p
            .rules()
            .iter()
            .zip(fw.hits())
            .map(|(r, h)| RuleStats {
                id: r.id,
                ruleset: r.ruleset.clone(),
                action: r.action.as_str().into(),
                packets: h.packets,
                bytes: h.bytes,
                sessions: h.sessions,
            })
            .collect(),
        None => Vec::new(),
    };
    FirewallStats {
        policy_loaded: fw.policy().is_some(),
        flows: u64::try_from(fw.conntrack().len()).unwrap_or(u64::MAX),
        flow_capacity: u64::try_from(fw.conntrack().capacity()).unwrap_or(u64::MAX),
        rules,
        drops: firewall::FwDrop::ALL
            .iter()
            .map(|r| (r.name().to_string(), c.drops[*r as usize]))
            .collect(),
        management: c.management,
        fast_path: c.fast_path,
        related: c.related,
        rejects: c.rejects,
        recheck_removed: c.recheck_removed,
        log_rate_limited: fw.log_mut().rate_limited,
    }
}

/// Restores connections saved by a previous run (after the first tables).
pub fn restore(fw: &mut Firewall, flows: &[SavedFlow], now_ns: u64) {
    let n = fw.restore(flows, now_ns);
    tracing::info!(
        restored = n,
        saved = flows.len(),
        "connection table restored"
    );
}

/// Counter summary for the gateway's Status report (names are free-form).
pub fn summary(fw: &Firewall, out: &mut Vec<(String, u64)>) {
    let c = fw.counters();
    for r in firewall::FwDrop::ALL {
        out.push((format!("dropped_{}", r.name()), c.drops[r as usize]));
    }
    out.push(("fw_flows".into(), fw.conntrack().len() as u64));
    out.push(("fw_rejects".into(), c.rejects));
}
