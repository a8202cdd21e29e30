//! One instance's firewall: the packet path that ties parsing, management
//! exemptions, L2 rules, connection tracking and the L3/L4 classifier
//! together, plus rule hit counters, drop counters and the packet log.
//!
//! Order for each frame (direction as seen by the instance):
//! 1. management (ARP, DHCP, IPv6 discovery, the agent's own gateway
//!    endpoints) always passes;
//! 2. no ruleset yet: the failure policy decides (`failClosed` drops);
//! 3. L2 rules (stateless);
//! 4. a known connection takes the fast path: its state is advanced and the
//!    packet passes without rule evaluation (or is dropped as invalid);
//! 5. ICMP errors pass only as *related* to a known connection;
//! 6. a new connection is classified; accept creates an entry (or is dropped
//!    when the table is full), drop/reject end it; only a pure SYN opens TCP.
//!
//! A new policy is swapped in whole; established connections are re-checked
//! against it and the ones it no longer accepts are removed, so the next
//! packet is judged by the new rules (a reject answers it with a RST).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddrV4;
use std::sync::Arc;

use control::Action;

use crate::classify::Policy;
use crate::conntrack::{Conntrack, Probe};
use crate::decision::{Decision, FwDrop, FwVerdict, Segment, Why};
use crate::flow::{Dir, L4, TcpMeta, Tuple};
use crate::packet::{self, Class, Ipv4Info, Packet, ParseError};
use crate::pktlog::{LogRecord, LogRing};
use crate::reject::{CODE_ADMIN_PROHIBITED, CODE_PORT_UNREACHABLE, RejectKind};

/// What to do when no ruleset has been applied yet (the seed's `failurePolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum FailurePolicy {
    /// Drop everything but management traffic.
    #[default]
    #[serde(rename = "failClosed")]
    FailClosed,
    /// Pass everything (unfiltered, untracked).
    #[serde(rename = "failOpen")]
    FailOpen,
}

/// Hits of one rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct RuleHits {
    pub packets: u64,
    pub bytes: u64,
    /// New connections (or, for drop/reject, new attempts) it decided.
    pub sessions: u64,
}

/// Counters of the firewall (cumulative).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FwCounters {
    pub drops: [u64; FwDrop::COUNT],
    /// Management frames passed without rules.
    pub management: u64,
    /// Packets passed on the established fast path.
    pub fast_path: u64,
    /// ICMP errors passed as related to a connection.
    pub related: u64,
    /// Answers (RST / ICMP unreachable) requested.
    pub rejects: u64,
    /// Connections removed because a new policy no longer accepts them.
    pub recheck_removed: u64,
}

/// One instance's firewall state machine.
#[derive(Debug)]
pub struct Firewall {
    policy: Option<Arc<Policy>>,
    failure: FailurePolicy,
    conntrack: Conntrack,
    /// Hits per `policy.rules()` index.
    hits: Vec<RuleHits>,
    /// `rule id -> index` of the current policy (for fast-path counting).
    index_of: IdMap,
    counters: FwCounters,
    log: LogRing,
    /// Remote endpoints of the agent's own management traffic (gateway
    /// control and enrollment): never filtered.
    management: Vec<SocketAddrV4>,
}

/// Multiplicative hasher for the `rule id -> index` map probed per packet
/// (SipHash would cost more than the rest of the fast path).
#[derive(Debug, Default, Clone, Copy)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type IdMap = HashMap<u32, u32, BuildHasherDefault<IdHasher>>;

/// Table size from which [`Firewall::wants_prefetch`] says yes: beyond
/// ~64k entries (7 MB of slots) lookups start missing the last-level cache.
const PREFETCH_FROM: usize = 1 << 16;

/// Entries visited per [`Firewall::tick`].
const EXPIRE_BUDGET: usize = 1024;

impl Firewall {
    /// A firewall with a connection table of `capacity` entries and no ruleset yet.
    pub fn new(capacity: usize, failure: FailurePolicy) -> Firewall {
        Firewall {
            policy: None,
            failure,
            // A random hash seed, so tuples that collide cannot be precomputed.
            conntrack: Conntrack::with_seed(capacity, random_seed()),
            hits: Vec::new(),
            index_of: IdMap::default(),
            counters: FwCounters::default(),
            log: LogRing::new(4096, 100, 200),
            management: Vec::new(),
        }
    }

    /// Remote endpoints whose traffic is never filtered (micro-segmentation
    /// mode: the gateway's control and enrollment ports).
    pub fn set_management(&mut self, endpoints: Vec<SocketAddrV4>) {
        self.management = endpoints;
    }

    pub fn set_failure_policy(&mut self, failure: FailurePolicy) {
        self.failure = failure;
    }

    /// Swaps in `policy` (atomically: the next packet sees only the new
    /// rules) and re-checks every tracked connection against it: those it
    /// no longer accepts are removed. Returns how many were removed.
    pub fn set_policy(&mut self, policy: Arc<Policy>) -> usize {
        let cfg = policy.config();
        self.conntrack.set_timeouts(cfg.timeouts);
        self.conntrack.set_limit(cfg.max_flows);
        // Hit counters follow their rule id into the new policy.
        let mut hits = vec![RuleHits::default(); policy.rules().len()];
        let mut index_of = IdMap::with_capacity_and_hasher(hits.len(), Default::default());
        for (i, r) in policy.rules().iter().enumerate() {
            if let Some(&old) = self.index_of.get(&r.id)
                && let Some(h) = self.hits.get(old as usize)
            {
                hits[i] = *h;
            }
            index_of.insert(r.id, u32::try_from(i).unwrap_or(u32::MAX));
        }
        let removed = recheck(&mut self.conntrack, &policy);
        self.counters.recheck_removed += removed as u64;
        self.hits = hits;
        self.index_of = index_of;
        self.policy = Some(policy);
        removed
    }

    /// Re-inserts connections saved by a previous run (see
    /// [`Conntrack::snapshot`]), then drops those the current policy no
    /// longer accepts. Returns how many were kept.
    pub fn restore(&mut self, flows: &[crate::conntrack::SavedFlow], now_ns: u64) -> usize {
        let restored = self.conntrack.restore(flows, now_ns);
        let removed = match self.policy.clone() {
            Some(policy) => recheck(&mut self.conntrack, &policy),
            None => 0,
        };
        restored.saturating_sub(removed)
    }

    /// Forgets every connection (the port they belonged to is gone).
    pub fn clear_flows(&mut self) {
        self.conntrack.recheck(|_| None);
    }

    /// Forgets the ruleset (back to the failure policy) and every connection.
    pub fn clear_policy(&mut self) {
        self.policy = None;
        self.conntrack.retain(|_| false);
    }

    pub fn policy(&self) -> Option<&Arc<Policy>> {
        self.policy.as_ref()
    }

    pub fn conntrack(&self) -> &Conntrack {
        &self.conntrack
    }

    pub fn conntrack_mut(&mut self) -> &mut Conntrack {
        &mut self.conntrack
    }

    pub fn counters(&self) -> &FwCounters {
        &self.counters
    }

    /// Hits per rule, indexed like `policy().rules()`.
    pub fn hits(&self) -> &[RuleHits] {
        &self.hits
    }

    pub fn log_mut(&mut self) -> &mut LogRing {
        &mut self.log
    }

    /// True when the connection table is big enough that its lookups miss
    /// the CPU caches, so prefetching a batch first pays off.
    pub fn wants_prefetch(&self) -> bool {
        self.policy.is_some() && self.conntrack.len() >= PREFETCH_FROM
    }

    /// Starts loading the connection entry `frame` will look up (call for
    /// every frame of a batch before processing it; see
    /// [`Conntrack::prefetch`]). No state changes.
    pub fn prefetch(&self, frame: &[u8]) {
        if let Ok(packet::Packet {
            class: Class::Ipv4(info),
            ..
        }) = packet::parse(frame)
        {
            self.conntrack.prefetch(&info.tuple);
        }
    }

    /// Housekeeping to call about once per batch: reclaims idle connections.
    pub fn tick(&mut self, now_ns: u64) {
        self.conntrack.expire(now_ns, EXPIRE_BUDGET);
    }

    /// Decides on `frame` travelling `dir` and carries the decision out:
    /// [`packet::parse`], [`Firewall::judge`], then [`Firewall::commit`].
    #[inline]
    pub fn process(&mut self, dir: Dir, frame: &[u8], now_ns: u64) -> FwVerdict {
        self.process_parsed(dir, &packet::parse(frame), now_ns)
    }

    /// [`Firewall::process`] for a frame its caller has parsed (the
    /// pipeline reads each frame's headers once, at its entry).
    #[inline]
    pub fn process_parsed(
        &mut self,
        dir: Dir,
        parsed: &Result<Packet, ParseError>,
        now_ns: u64,
    ) -> FwVerdict {
        let mut d = Decision::unjudged(dir, parsed);
        self.judge_into(&mut d, now_ns);
        self.commit(&d, now_ns)
    }

    /// What the firewall decides for a frame travelling `dir` at `now_ns`
    /// (`parsed` by [`packet::parse`]), and why, changing nothing. Order:
    /// management (always passes), no ruleset (the failure policy), L2
    /// rules, a tracked connection (fast path), an ICMP error related to
    /// one, then the L3/L4 rules for a new connection.
    /// [`Firewall::commit`] carries the decision out; `trace` shows it
    /// ([`Decision::describe`]) without committing.
    pub fn judge<'p>(
        &self,
        dir: Dir,
        parsed: &'p Result<Packet, ParseError>,
        now_ns: u64,
    ) -> Decision<'p> {
        let mut d = Decision::unjudged(dir, parsed);
        self.judge_into(&mut d, now_ns);
        d
    }

    /// [`Firewall::judge`], written into `d` in place: each field is
    /// written once where [`Firewall::commit`] reads it, so the packet
    /// path moves no decision around.
    #[inline(always)]
    fn judge_into(&self, d: &mut Decision<'_>, now_ns: u64) {
        let Some(pkt) = d.pkt else {
            return;
        };
        let dir = d.dir;
        if matches!(pkt.class, Class::Management) {
            return d.set(FwVerdict::Pass, Why::Management);
        }
        if let Class::Ipv4(info) = &pkt.class
            && self.is_management(dir, &info.tuple)
        {
            return d.set(FwVerdict::Pass, Why::ManagementConn);
        }
        // Borrowed, not cloned: no reference-count traffic per packet.
        let Some(policy) = self.policy.as_deref() else {
            let v = match self.failure {
                FailurePolicy::FailOpen => FwVerdict::Pass,
                FailurePolicy::FailClosed => FwVerdict::Drop(FwDrop::FailClosed),
            };
            return d.set(v, Why::NoRuleset(self.failure));
        };
        d.l2 = policy.classify_l2(dir, pkt.src_mac, pkt.dst_mac, pkt.ethertype);
        if let Some(m) = d.l2
            && m.action != Action::Accept
        {
            d.l2 = None;
            return d.set(FwVerdict::Drop(FwDrop::L2Rule), Why::L2Rule(m));
        }
        match &pkt.class {
            Class::Ipv4(info) => self.judge_ipv4(policy, d, info, now_ns),
            Class::Fragment => d.set(FwVerdict::Drop(FwDrop::Fragment), Why::Fragment),
            // Not IPv4 (the L3 rules are IPv4): the default rule decides, statelessly.
            _ => {
                let accepts = policy
                    .rules()
                    .last()
                    .is_none_or(|r| r.action == Action::Accept);
                let v = if accepts {
                    FwVerdict::Pass
                } else {
                    FwVerdict::Drop(FwDrop::Rule)
                };
                d.set(v, Why::NotIpv4)
            }
        }
    }

    #[inline(always)]
    fn judge_ipv4(&self, policy: &Policy, d: &mut Decision<'_>, info: &Ipv4Info, now_ns: u64) {
        let t = &info.tuple;
        let ct = &self.conntrack;
        d.bytes = u32::from(info.len);
        d.found = ct.probe(t, now_ns);
        match d.found {
            // Fast path: a known connection.
            Probe::Live(hit) => {
                d.step = ct.advance_probed(hit, &info.l4);
                match d.step.result() {
                    Ok(state) => d.set(FwVerdict::Pass, Why::Established { state }),
                    Err(err) => d.set(FwVerdict::Drop(FwDrop::Invalid), Why::Invalid { err }),
                }
            }
            _ => match &info.l4 {
                L4::IcmpError { inner, .. } => match ct.probe(inner, now_ns) {
                    Probe::Live(hit) => d.set(
                        FwVerdict::Pass,
                        Why::Related {
                            hit: hit.reversed(),
                        },
                    ),
                    stale => d.set(
                        FwVerdict::Drop(FwDrop::UnsolicitedIcmpError),
                        Why::Unsolicited { stale },
                    ),
                },
                _ => judge_new(policy, ct, d, info, now_ns),
            },
        }
    }

    /// Carries out `d` (from [`Firewall::judge`] on this firewall, with
    /// nothing changed in between): counters, rule hits, the packet log,
    /// and the connection table (an expired entry the lookup found is
    /// removed, a known connection advanced, a new one inserted). Returns
    /// the final verdict: the judged one, unless the insert the judgement
    /// counted on fails after all (a pathological probe run), which drops.
    #[inline(always)]
    pub fn commit(&mut self, d: &Decision<'_>, now_ns: u64) -> FwVerdict {
        let mut v = d.verdict;
        if let Some(m) = d.l2 {
            self.hit(m.rule, 0, true);
        }
        match &d.why {
            Why::Management | Why::ManagementConn => self.counters.management += 1,
            Why::L2Rule(m) => self.hit(m.rule, 0, true),
            Why::Established { .. } | Why::Invalid { .. } => {
                // The connection's own bookkeeping (state, windows,
                // counters, or the refusal counted on it): the step the
                // judgement worked out, written as it is.
                v = match self.conntrack.apply(&d.step, d.bytes, now_ns) {
                    Ok(tracked) => {
                        self.counters.fast_path += 1;
                        if let Some(&i) = self.index_of.get(&tracked.rule_id) {
                            self.hit(i, d.bytes, false);
                        }
                        FwVerdict::Pass
                    }
                    Err(_) => FwVerdict::Drop(FwDrop::Invalid),
                };
            }
            Why::Related { .. } => {
                self.conntrack.settle(d.found, now_ns);
                self.counters.related += 1;
            }
            Why::Unsolicited { stale } => {
                self.conntrack.settle(d.found, now_ns);
                self.conntrack.settle(*stale, now_ns);
            }
            Why::New { m, .. } | Why::Segment { m, .. } => {
                self.conntrack.settle(d.found, now_ns);
                self.hit(m.rule, d.bytes, true);
                if let Some(info) = d.ipv4() {
                    let t = &info.tuple;
                    if m.log {
                        let r = LogRecord::new(now_ns, m, d.dir, *t, &info.l4, info.len);
                        self.log.push(r);
                    }
                    if d.why.opens() {
                        // Also when judged full: the insert reclaims what it can.
                        let ct = &mut self.conntrack;
                        v = match ct.insert(t, d.dir, m.rule_id, &info.l4, d.bytes, now_ns) {
                            Ok(_) => FwVerdict::Pass,
                            Err(_) => FwVerdict::Drop(FwDrop::TableFull),
                        };
                    }
                }
            }
            Why::Malformed(_) | Why::NoRuleset(_) | Why::Fragment | Why::NotIpv4 => {}
        }
        self.count(v)
    }

    /// Counts the final verdict of a frame.
    #[inline(always)]
    fn count(&mut self, v: FwVerdict) -> FwVerdict {
        match v {
            FwVerdict::Drop(r) => self.counters.drops[r as usize] += 1,
            FwVerdict::Reject(_) => {
                self.counters.drops[FwDrop::Rule as usize] += 1;
                self.counters.rejects += 1;
            }
            FwVerdict::Pass => {}
        }
        v
    }

    fn is_management(&self, dir: Dir, t: &Tuple) -> bool {
        if self.management.is_empty() || !matches!(t.proto, 6) {
            return false;
        }
        let (ip, port) = match dir {
            Dir::Out => (t.dst, t.dport),
            Dir::In => (t.src, t.sport),
        };
        self.management
            .iter()
            .any(|e| *e.ip() == ip && e.port() == port)
    }

    fn hit(&mut self, rule: u32, bytes: u32, new: bool) {
        if let Some(h) = self.hits.get_mut(rule as usize) {
            h.packets += 1;
            h.bytes += u64::from(bytes);
            h.sessions += u64::from(new);
        }
    }
}

/// A packet of no tracked connection: the L3/L4 rules decide. Only a
/// pure SYN opens TCP; another segment is answered by a reject rule, picked
/// up by an accepting one unless `tcp_strict`, dropped otherwise.
#[inline(always)]
fn judge_new(policy: &Policy, ct: &Conntrack, d: &mut Decision<'_>, info: &Ipv4Info, now_ns: u64) {
    let t = &info.tuple;
    let m = policy.classify(d.dir, t, info.icmp());
    let drop = |r| FwVerdict::Drop(r);
    if let L4::Tcp(tcp) = &info.l4
        && !crate::tcp::can_open(tcp)
    {
        // A segment of no tracked connection (lost table, or cut by a rule
        // change). A reject rule answers it so the peer learns at once;
        // without TCP strict an accepting rule picks it up.
        let strict = policy.config().tcp_strict;
        let pickup =
            !strict && !tcp.has(TcpMeta::SYN) && !tcp.has(TcpMeta::RST) && !tcp.has(TcpMeta::FIN);
        let (v, seg) = match m.action {
            Action::Reject if !tcp.has(TcpMeta::RST) => {
                (FwVerdict::Reject(RejectKind::TcpRst), Segment::Rst)
            }
            Action::Accept if pickup => match ct.can_insert(t, now_ns) {
                Ok(()) => (FwVerdict::Pass, Segment::PickedUp),
                Err(e) => (drop(FwDrop::TableFull), Segment::Full(e)),
            },
            Action::Accept if strict => (drop(FwDrop::NoConnection), Segment::Strict),
            _ => (drop(FwDrop::NoConnection), Segment::NotSyn),
        };
        return d.set(v, Why::Segment { m, seg });
    }
    let (v, full) = match m.action {
        Action::Accept => match ct.can_insert(t, now_ns) {
            Ok(()) => (FwVerdict::Pass, None),
            Err(e) => (drop(FwDrop::TableFull), Some(e)),
        },
        Action::Drop => (drop(FwDrop::Rule), None),
        Action::Reject => (FwVerdict::Reject(reject_kind(&info.l4, t.proto)), None),
    };
    d.set(v, Why::New { m, full })
}

/// Re-classifies every connection by its initiator's first-packet tuple
/// (ICMP as an echo request): kept with the rule that admits it now, or
/// removed. Returns how many were removed.
fn recheck(ct: &mut Conntrack, policy: &Policy) -> usize {
    ct.recheck(|f| {
        let icmp = (f.tuple.proto == 1).then_some((8, 0));
        let m = policy.classify(f.dir, &f.tuple, icmp);
        (m.action == Action::Accept).then_some(m.rule_id)
    })
}

/// 64 random bits from the standard library's per-process hash keys.
fn random_seed() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(0x5eed_u64)
}

/// The answer for a rejected packet: RST for TCP, port unreachable for UDP,
/// administratively prohibited otherwise; never an answer to an ICMP error.
fn reject_kind(l4: &L4, proto: u8) -> RejectKind {
    match (l4, proto) {
        (L4::Tcp(_), _) => RejectKind::TcpRst,
        (_, 17) => RejectKind::IcmpUnreachable(CODE_PORT_UNREACHABLE),
        _ => RejectKind::IcmpUnreachable(CODE_ADMIN_PROHIBITED),
    }
}
