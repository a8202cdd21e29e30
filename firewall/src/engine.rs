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

use crate::classify::{Match, Policy};
use crate::conntrack::Conntrack;
use crate::flow::{Dir, L4, TcpMeta, Tuple};
use crate::packet::{self, Class, Ipv4Info, Packet};
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

/// Why the firewall dropped a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DropReason {
    /// A rule (L3/L4 or the default rule) said drop or reject.
    Rule,
    /// An L2 rule said drop.
    L2Rule,
    /// No ruleset applied yet and the failure policy is failClosed.
    FailClosed,
    /// Unparseable IPv4/L4 header.
    Malformed,
    /// Fails TCP state/window tracking.
    Invalid,
    /// A TCP segment other than a SYN with no connection.
    NoConnection,
    /// An ICMP error that belongs to no known connection.
    UnsolicitedIcmpError,
    /// Non-first IPv4 fragment (not reassembled).
    Fragment,
    /// Connection table (global or per-instance limit) full.
    TableFull,
}

impl DropReason {
    pub const COUNT: usize = 9;
    pub const ALL: [DropReason; Self::COUNT] = [
        DropReason::Rule,
        DropReason::L2Rule,
        DropReason::FailClosed,
        DropReason::Malformed,
        DropReason::Invalid,
        DropReason::NoConnection,
        DropReason::UnsolicitedIcmpError,
        DropReason::Fragment,
        DropReason::TableFull,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DropReason::Rule => "fw_rule",
            DropReason::L2Rule => "fw_l2_rule",
            DropReason::FailClosed => "fw_fail_closed",
            DropReason::Malformed => "fw_malformed",
            DropReason::Invalid => "fw_invalid",
            DropReason::NoConnection => "fw_no_connection",
            DropReason::UnsolicitedIcmpError => "fw_unsolicited_icmp_error",
            DropReason::Fragment => "fw_fragment",
            DropReason::TableFull => "fw_table_full",
        }
    }
}

/// The firewall's decision for one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Drop(DropReason),
    /// Drop, and send this answer back to the sender (see [`crate::reject::build`]).
    Reject(RejectKind),
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
    pub drops: [u64; DropReason::COUNT],
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

    /// Decides on `frame` travelling `dir`.
    pub fn process(&mut self, dir: Dir, frame: &[u8], now_ns: u64) -> Verdict {
        let v = match packet::parse(frame) {
            Ok(pkt) => self.decide(dir, &pkt, now_ns),
            Err(_) => Verdict::Drop(DropReason::Malformed),
        };
        match v {
            Verdict::Drop(r) => self.counters.drops[r as usize] += 1,
            Verdict::Reject(_) => {
                self.counters.drops[DropReason::Rule as usize] += 1;
                self.counters.rejects += 1;
            }
            Verdict::Pass => {}
        }
        v
    }

    fn decide(&mut self, dir: Dir, pkt: &Packet, now_ns: u64) -> Verdict {
        if pkt.class == Class::Management {
            self.counters.management += 1;
            return Verdict::Pass;
        }
        if let Class::Ipv4(info) = &pkt.class
            && self.is_management(dir, &info.tuple)
        {
            self.counters.management += 1;
            return Verdict::Pass;
        }
        // Borrowed, not cloned: no reference-count traffic per packet.
        let Some(policy) = self.policy.as_deref() else {
            return match self.failure {
                FailurePolicy::FailOpen => Verdict::Pass,
                FailurePolicy::FailClosed => Verdict::Drop(DropReason::FailClosed),
            };
        };
        let l2 = policy.classify_l2(dir, pkt.src_mac, pkt.dst_mac, pkt.ethertype);
        let default_accepts = policy
            .rules()
            .last()
            .is_none_or(|r| r.action == Action::Accept);
        if let Some(m) = l2 {
            self.hit(m.rule, 0, true);
            if m.action != Action::Accept {
                return Verdict::Drop(DropReason::L2Rule);
            }
        }
        match &pkt.class {
            Class::Ipv4(info) => self.decide_ipv4(dir, info, pkt.icmp(), now_ns),
            Class::Fragment => Verdict::Drop(DropReason::Fragment),
            // Not IPv4 (the L3 rules are IPv4): the default rule decides, statelessly.
            _ if default_accepts => Verdict::Pass,
            _ => Verdict::Drop(DropReason::Rule),
        }
    }

    fn decide_ipv4(
        &mut self,
        dir: Dir,
        info: &Ipv4Info,
        icmp: Option<(u8, u8)>,
        now_ns: u64,
    ) -> Verdict {
        let t = &info.tuple;
        let len = u32::from(info.len);
        // Fast path: a known connection.
        if let Some(hit) = self.conntrack.lookup(t, now_ns) {
            return match self.conntrack.track(hit, &info.l4, len, now_ns) {
                Ok(_) => {
                    self.counters.fast_path += 1;
                    if let Some(&i) = self.index_of.get(&self.conntrack.rule_id(hit.id)) {
                        self.hit(i, len, false);
                    }
                    Verdict::Pass
                }
                Err(_) => Verdict::Drop(DropReason::Invalid),
            };
        }
        if let L4::IcmpError { inner, .. } = &info.l4 {
            return match self.conntrack.related(inner, now_ns) {
                Some(_) => {
                    self.counters.related += 1;
                    Verdict::Pass
                }
                None => Verdict::Drop(DropReason::UnsolicitedIcmpError),
            };
        }
        let Some(policy) = self.policy.as_deref() else {
            return Verdict::Drop(DropReason::FailClosed);
        };
        let m = policy.classify(dir, t, icmp);
        let strict = policy.config().tcp_strict;
        self.hit(m.rule, len, true);
        if m.log {
            self.log
                .push(LogRecord::new(now_ns, &m, dir, *t, &info.l4, info.len));
        }
        if let L4::Tcp(tcp) = &info.l4
            && !crate::tcp::can_open(tcp)
        {
            // A segment of no tracked connection (lost table, or cut by a
            // rule change). A reject rule answers it so the peer learns at
            // once; without TCP strict an accepting rule picks it up.
            let pickup = !strict
                && !tcp.has(TcpMeta::SYN)
                && !tcp.has(TcpMeta::RST)
                && !tcp.has(TcpMeta::FIN);
            match m.action {
                Action::Reject if !tcp.has(TcpMeta::RST) => {
                    return Verdict::Reject(RejectKind::TcpRst);
                }
                Action::Accept if pickup => {}
                _ => return Verdict::Drop(DropReason::NoConnection),
            }
        }
        match m.action {
            Action::Accept => match self
                .conntrack
                .insert(t, dir, m.rule_id, &info.l4, len, now_ns)
            {
                Ok(_) => Verdict::Pass,
                Err(_) => Verdict::Drop(DropReason::TableFull),
            },
            Action::Drop => Verdict::Drop(DropReason::Rule),
            Action::Reject => Verdict::Reject(reject_kind(&info.l4, t.proto)),
        }
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

    /// What [`Firewall::process`] would decide for `frame` travelling
    /// `dir` at `now_ns`, and why, in one line (for `trace`): the same
    /// steps in the same order, reading the connection table and the
    /// policy but changing nothing (no connection created or advanced, no
    /// counter, hit or log record).
    pub fn explain(&self, dir: Dir, frame: &[u8], now_ns: u64) -> (Verdict, String) {
        let pkt = match packet::parse(frame) {
            Ok(p) => p,
            Err(e) => return (Verdict::Drop(DropReason::Malformed), format!("{e}: drop")),
        };
        if pkt.class == Class::Management {
            return (
                Verdict::Pass,
                "management traffic (ARP, DHCP, IPv6 discovery) passes unfiltered".into(),
            );
        }
        if let Class::Ipv4(info) = &pkt.class
            && self.is_management(dir, &info.tuple)
        {
            return (
                Verdict::Pass,
                format!(
                    "{}: the agent's own management connection passes unfiltered",
                    show_tuple(&info.tuple)
                ),
            );
        }
        let Some(policy) = self.policy.as_deref() else {
            return match self.failure {
                FailurePolicy::FailOpen => {
                    (Verdict::Pass, "no ruleset yet: failOpen passes".into())
                }
                FailurePolicy::FailClosed => (
                    Verdict::Drop(DropReason::FailClosed),
                    "no ruleset yet: failClosed drops".into(),
                ),
            };
        };
        let mut l2_note = String::new();
        if let Some(m) = policy.classify_l2(dir, pkt.src_mac, pkt.dst_mac, pkt.ethertype) {
            let rule = describe_rule(policy, &m);
            if m.action != Action::Accept {
                return (Verdict::Drop(DropReason::L2Rule), format!("L2 {rule}"));
            }
            l2_note = format!("L2 {rule}; ");
        }
        let (v, why) = match &pkt.class {
            Class::Ipv4(info) => self.explain_ipv4(policy, dir, info, pkt.icmp(), now_ns),
            Class::Fragment => (
                Verdict::Drop(DropReason::Fragment),
                "non-first IPv4 fragment (not reassembled): drop".into(),
            ),
            _ => {
                let default = policy.rules().last();
                let accepts = default.is_none_or(|r| r.action == Action::Accept);
                let what = match default {
                    Some(r) => format!(
                        "default rule {} ({}) {}",
                        r.id,
                        r.ruleset,
                        r.action.as_str()
                    ),
                    None => "no default rule: accept".into(),
                };
                let v = if accepts {
                    Verdict::Pass
                } else {
                    Verdict::Drop(DropReason::Rule)
                };
                (
                    v,
                    format!(
                        "not IPv4 (ethertype {:#06x}): {what}, stateless",
                        pkt.ethertype
                    ),
                )
            }
        };
        (v, l2_note + &why)
    }

    fn explain_ipv4(
        &self,
        policy: &Policy,
        dir: Dir,
        info: &Ipv4Info,
        icmp: Option<(u8, u8)>,
        now_ns: u64,
    ) -> (Verdict, String) {
        let t = &info.tuple;
        let ct = &self.conntrack;
        if let Some(hit) = ct.peek(t, now_ns) {
            let conn = describe_conn(ct, hit.id);
            let side = if hit.reply { "reply" } else { "original" };
            return match ct.would_track(hit, &info.l4) {
                Ok(state) => (
                    Verdict::Pass,
                    format!(
                        "established {conn} fast path, {side} direction, state {}",
                        state.name()
                    ),
                ),
                Err(e) => (
                    Verdict::Drop(DropReason::Invalid),
                    format!("{conn}: invalid ({e}): drop"),
                ),
            };
        }
        if let L4::IcmpError { inner, .. } = &info.l4 {
            return match ct.peek_related(inner, now_ns) {
                Some(hit) => (
                    Verdict::Pass,
                    format!(
                        "ICMP error related to {}: passes",
                        describe_conn(ct, hit.id)
                    ),
                ),
                None => (
                    Verdict::Drop(DropReason::UnsolicitedIcmpError),
                    format!(
                        "ICMP error quoting {} of no tracked connection: drop",
                        show_tuple(inner)
                    ),
                ),
            };
        }
        let m = policy.classify(dir, t, icmp);
        let rule = describe_rule(policy, &m);
        let way = match dir {
            Dir::In => "inbound",
            Dir::Out => "outbound",
        };
        let what = format!("new {way} connection {}, {rule}", show_tuple(t));
        if let L4::Tcp(tcp) = &info.l4
            && !crate::tcp::can_open(tcp)
        {
            let strict = policy.config().tcp_strict;
            let pickup = !strict
                && !tcp.has(TcpMeta::SYN)
                && !tcp.has(TcpMeta::RST)
                && !tcp.has(TcpMeta::FIN);
            let seg = format!(
                "{way} TCP segment of no tracked connection {}, {rule}",
                show_tuple(t)
            );
            match m.action {
                Action::Reject if !tcp.has(TcpMeta::RST) => {
                    return (
                        Verdict::Reject(RejectKind::TcpRst),
                        format!("{seg}: answered with a TCP RST"),
                    );
                }
                Action::Accept if pickup => {
                    return match self.conntrack.can_insert(t, now_ns) {
                        Ok(()) => (
                            Verdict::Pass,
                            format!("{seg}: picked up mid-stream (tcp_strict off)"),
                        ),
                        Err(e) => (
                            Verdict::Drop(DropReason::TableFull),
                            format!("{seg}, but {e}: drop"),
                        ),
                    };
                }
                Action::Accept if strict => {
                    return (
                        Verdict::Drop(DropReason::NoConnection),
                        format!("{seg}: tcp_strict, not a SYN: drop"),
                    );
                }
                _ => {
                    return (
                        Verdict::Drop(DropReason::NoConnection),
                        format!("{seg}: not a SYN: drop"),
                    );
                }
            }
        }
        match m.action {
            Action::Accept => match self.conntrack.can_insert(t, now_ns) {
                Ok(()) => (Verdict::Pass, what),
                Err(e) => (
                    Verdict::Drop(DropReason::TableFull),
                    format!("{what}, but {e}: drop"),
                ),
            },
            Action::Drop => (Verdict::Drop(DropReason::Rule), what),
            Action::Reject => {
                let kind = reject_kind(&info.l4, t.proto);
                let answer = match kind {
                    RejectKind::TcpRst => "a TCP RST".to_string(),
                    RejectKind::IcmpUnreachable(c) if c == CODE_PORT_UNREACHABLE => {
                        "ICMP port unreachable".to_string()
                    }
                    RejectKind::IcmpUnreachable(c) if c == CODE_ADMIN_PROHIBITED => {
                        "ICMP administratively prohibited".to_string()
                    }
                    RejectKind::IcmpUnreachable(c) => format!("ICMP unreachable code {c}"),
                };
                (
                    Verdict::Reject(kind),
                    format!("{what}: answered with {answer}"),
                )
            }
        }
    }

    /// The last match a [`Verdict::Reject`] came from is not kept; callers
    /// log through the ring. This returns the match a packet would get,
    /// without side effects (for `trace`).
    pub fn would_classify(&self, dir: Dir, frame: &[u8]) -> Option<Match> {
        let pkt = packet::parse(frame).ok()?;
        let Class::Ipv4(info) = pkt.class else {
            return None;
        };
        Some(self.policy.as_ref()?.classify(dir, &info.tuple, pkt.icmp()))
    }
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

/// `rule 1006 (domain-c25) accept`.
fn describe_rule(policy: &Policy, m: &Match) -> String {
    match policy.rules().get(m.rule as usize) {
        Some(r) => format!("rule {} ({}) {}", r.id, r.ruleset, m.action.as_str()),
        None => format!("rule {} {}", m.rule_id, m.action.as_str()),
    }
}

/// `connection 558a796d00000000 (rule 1006)` (the id as `getflows` prints it).
fn describe_conn(ct: &Conntrack, id: crate::conntrack::EntryId) -> String {
    match ct.get(id) {
        Some(v) => format!("connection {:016x} (rule {})", v.id, v.rule_id),
        None => "connection (gone)".into(),
    }
}

/// `tcp 192.168.100.4:5201 -> 192.168.100.3:40000`, `icmp 10.0.0.1 -> 10.0.0.2`.
fn show_tuple(t: &Tuple) -> String {
    match t.proto {
        6 => format!("tcp {}:{} -> {}:{}", t.src, t.sport, t.dst, t.dport),
        17 => format!("udp {}:{} -> {}:{}", t.src, t.sport, t.dst, t.dport),
        1 => format!("icmp {} -> {}", t.src, t.dst),
        p => format!("proto {p} {} -> {}", t.src, t.dst),
    }
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
