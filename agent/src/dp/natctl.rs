//! The edge's NAT, asked from the control side and answered by the overlay
//! loop between batches: the summary published with the counters, a
//! bounded listing of the sessions (`nat-sessions`), and the sessions to
//! save across a planned restart. Building an answer allocates; that
//! happens on request (or once per publication), never per packet.

use std::collections::BTreeMap;
use std::sync::mpsc::Sender;

use agent_api::{NatPool, NatSession, NatSummary};
use datapath::edge::EdgeState;
use nat::Nat;
use nat::packet::proto_name;

use crate::gw::persist::SavedNat;

/// Most sessions one listing carries.
pub const MAX_LISTED: usize = 10_000;
/// Sessions listed unless asked otherwise.
pub const DEFAULT_LISTED: usize = 100;

/// What the control side asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatQuery {
    /// The summary and at most this many sessions.
    List(usize),
    /// Every session, to persist before a planned stop.
    Save,
}

/// A request with the channel its answer goes to.
#[derive(Debug)]
pub struct NatRequest {
    pub query: NatQuery,
    pub reply: Sender<NatReply>,
}

/// The datapath thread's answer.
#[derive(Debug)]
pub enum NatReply {
    /// Not an edge: no NAT.
    Off,
    Listed {
        summary: Box<NatSummary>,
        sessions: Vec<NatSession>,
        truncated: bool,
    },
    Saved(SavedNat),
}

/// The edge's NATs: the uplink's, then the downlink's when it has one.
fn nats(edge: &EdgeState) -> impl Iterator<Item = &Nat> {
    std::iter::once(&edge.nat).chain(edge.downlink_nat.as_ref())
}

/// Restores what a previous run saved; returns how many came back.
pub fn restore(edge: &mut EdgeState, saved: &SavedNat, now_ns: u64) -> usize {
    let mut n = edge.nat.restore(&saved.uplink, now_ns);
    if let Some(d) = &mut edge.downlink_nat {
        n += d.restore(&saved.downlink, now_ns);
    }
    n
}

/// Answers `q` from the thread that owns the edge's state.
pub fn answer(edge: Option<&EdgeState>, q: NatQuery, now_ns: u64) -> NatReply {
    let Some(edge) = edge else {
        return NatReply::Off;
    };
    match q {
        NatQuery::Save => NatReply::Saved(SavedNat {
            uplink: edge.nat.snapshot(now_ns),
            downlink: edge
                .downlink_nat
                .as_ref()
                .map(|d| d.snapshot(now_ns))
                .unwrap_or_default(),
        }),
        NatQuery::List(limit) => {
            let limit = limit.min(MAX_LISTED);
            let total: usize = nats(edge).map(Nat::len).sum();
            let sessions: Vec<NatSession> = nats(edge)
                .flat_map(|n| n.sessions(now_ns))
                .take(limit)
                .map(|v| NatSession {
                    protocol: proto_name(v.proto).into(),
                    inside: v.inside,
                    outside: v.outside,
                    remote: v.remote,
                    state: v.state.name().into(),
                    idle_s: v.idle_secs,
                    is_static: v.is_static,
                    inbound: v.inbound,
                    hairpin: v.hairpin,
                })
                .collect();
            NatReply::Listed {
                truncated: total > sessions.len(),
                summary: Box::new(summary(edge)),
                sessions,
            }
        }
    }
}

/// Protocols in the order the engine counts them.
const PROTOS: [&str; 3] = ["tcp", "udp", "icmp"];

fn by_proto<T: Copy + Into<u64>>(v: [T; 3]) -> BTreeMap<String, u64> {
    PROTOS
        .iter()
        .zip(v)
        .map(|(p, n)| ((*p).to_string(), n.into()))
        .collect()
}

/// The edge's NATs' counters, summed, and every pool (the downlink's is
/// the underlay address).
pub fn summary(edge: &EdgeState) -> NatSummary {
    let mut s = NatSummary::default();
    let add = |m: &mut BTreeMap<String, u64>, other: BTreeMap<String, u64>| {
        for (k, v) in other {
            *m.entry(k).or_insert(0) += v;
        }
    };
    for nat in nats(edge) {
        let c = nat.counters();
        s.sessions += nat.len() as u64;
        s.capacity += nat.capacity() as u64;
        s.mappings += nat.mappings() as u64;
        add(&mut s.by_protocol, by_proto(nat.sessions_by_proto()));
        s.translated_out += c.translated_out;
        s.translated_in += c.translated_in;
        s.hairpinned += c.hairpinned;
        s.icmp_errors += c.icmp_errors;
        s.created += c.created;
        s.expired += c.expired;
        s.removed_config += c.removed_config;
        s.restored += c.restored;
        add(
            &mut s.drops,
            nat::DropReason::ALL
                .iter()
                .map(|r| (r.name().to_string(), c.drops(*r)))
                .collect(),
        );
        s.pools.extend(nat.pool_usage().map(|p| NatPool {
            ip: p.ip,
            used: by_proto(p.used),
            size: by_proto(p.size),
            failures: by_proto(p.failures),
        }));
    }
    s
}
