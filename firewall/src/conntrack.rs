//! Connection tracking for one agent: one table of connections, each with
//! its state, the rule that admitted it and per-direction counters.
//!
//! # Contract
//!
//! * Time is `now_ns` (monotonic nanoseconds) passed to every call; the
//!   table never reads a clock.
//! * The table is allocated once, for its capacity, in [`Conntrack::new`]
//!   and never grows: no allocation, lock, log or syscall per packet.
//! * A connection is keyed by its direction-independent [`FlowKey`], so one
//!   probe finds it from either side; [`Hit::reply`] says which side.
//! * [`EntryId`]s are short-lived handles (valid until the next insert or
//!   removal moves entries): [`Conntrack::track`] checks the one it is given
//!   and finds the connection again by key if it moved.
//! * An entry idle longer than its state's timeout ([`control::Timeouts`]) is
//!   gone: [`Conntrack::lookup`] removes it on sight, [`Conntrack::expire`]
//!   sweeps the table incrementally.
//!
//! # Table design
//!
//! Open addressing with the entries inline: one 64-byte, cache-line-aligned
//! slot per bucket, so an established-flow hit plus its state/counter update
//! touch one slot line. Collisions are resolved by Robin Hood linear
//! probing: runs stay sorted by home bucket, a lookup stops as soon as it
//! meets an entry closer to its home than the key would be, and removal
//! shifts the rest of the run back by one (no tombstones, so the table does
//! not degrade under churn).
//!
//! Beside the slots, a compact tag array holds per bucket the probe
//! distance (one byte; an insert that would need more than 254 fails as
//! [`Full::Probe`]) and 8 bits of the key's hash. Probing runs over the
//! tags (2.5 MB at 1M entries: they stay in L2/L3) and only a bucket whose
//! tag matches has its slot read, so a hit reads one slot line and a miss
//! usually none. This matters because at full load the mean probe length
//! is 3 buckets (measured: only 31% of entries sit in their home bucket);
//! probing the slots themselves would read 2-3 lines from DRAM per lookup.
//! [`Conntrack::prefetch`] uses the tags to load exactly the slot a later
//! lookup needs.
//!
//! The bucket count is `capacity + capacity / 4 + 1` (load at most 0.8), not
//! a power of two: the home bucket is `(hash * buckets) >> 64` (Lemire's
//! fastrange). The hash is two folded 64x64->128 multiplications over the
//! 13 key bytes packed into two words, keyed with a per-table seed
//! ([`Conntrack::with_seed`]; [`Conntrack::new`] derives it from the
//! capacity so tests and replays are deterministic; the agent should pass a
//! random one so tuples that collide cannot be precomputed).
//!
//! A slot (64 bytes) holds the key (13 bytes), the state, the initiator's
//! orientation and direction, the TCP FIN flags and window scales, the rule
//! id, the last-seen time in ticks of 2^24 ns (~16.8 ms; u32, wraps after
//! 2.2 years, far beyond any timeout), the TCP window tracking of both
//! directions (end, maxend, maxwin) and the low 32 bits of the packet and
//! byte counters. A parallel 32-byte "cold" array, touched only on insert,
//! on a counter carry, on a packet the TCP tracking refuses and by the
//! views, holds the flow id, the creation time, the counters' high 16 bits
//! (48-bit counters) and the refused packets per direction.
//!
//! Memory per entry at full load: (2 + 64 + 32) * 1.25 = 122.5 bytes
//! (measured with [`Conntrack::memory_bytes`]; the budget is 128).
//!
//! Cost per packet (`cargo bench -p firewall --bench conntrack`, full
//! table, random order, 2-vCPU KVM guest on AMD EPYC, other builds
//! running): established lookup + track 30 ns at 1k connections, 75-165 ns
//! at 100k (L3-resident, so it varies with the neighbours), 205-245 ns at
//! 1M; a miss 8 / 23 / 28 ns. At 1M each lookup is a DRAM miss, and a
//! dependent DRAM access alone costs 160-200 ns in that guest (pointer
//! chase, with or without huge pages), so one packet at a time cannot go
//! faster. In batches whose packets are all [`Conntrack::prefetch`]ed
//! first, the misses overlap: 32 / 62 / 69-78 ns. The prefetch is
//! [`audited::prefetch`] (the x86_64 prefetch instruction, the workspace's
//! audited unsafe; other targets use a plain load, ~100 ns at 1M), so this
//! crate itself forbids `unsafe_code`.
//!
//! A table at its limit first reclaims expired entries near the new key's
//! bucket (8 buckets), so the sweep lagging behind does not refuse
//! connections; otherwise the insert fails ([`Full`]) and existing
//! connections are unaffected.
//!
//! # States and timeouts
//!
//! TCP follows [`crate::tcp`]. Other protocols have pseudo-states:
//! UDP `udp_first_packet` (one packet), `udp_single` (more, one direction),
//! `udp_multiple` (both directions); ICMP queries `icmp_first_packet`, then
//! `icmp_error_reply` once answered; other protocols `other_first_packet`,
//! then `other_multiple` once answered. The TCP timeouts: `SYN_SENT(2)` ->
//! `tcp_first_packet`, `SYN_RECV` -> `tcp_opening`, `EST` ->
//! `tcp_established`, `FIN_WAIT`/`CLOSE_WAIT`/`LAST_ACK` -> `tcp_closing`,
//! `TIME_WAIT` -> `tcp_fin_wait`, `CLOSED` -> `tcp_closed`. An entry expires
//! no earlier than its timeout and at most two ticks (~34 ms) later.
//!
//! A SYN answered by a RST (connection refused) removes the entry at once;
//! a RST on an established connection leaves it `CLOSED` for `tcp_closed`.

use std::collections::HashSet;
use std::fmt;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::flow::{Dir, FlowKey, L4, TcpMeta, Tuple};
use crate::tcp::{NO_WSCALE, Peer, TcpConn, TcpInvalid, TcpState};

/// Largest capacity [`Conntrack::new`] accepts (larger requests are clamped).
pub const MAX_CAPACITY: usize = 1 << 28;

const PROTO_ICMP: u8 = 1;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;

/// Last-seen times are kept in ticks of `2^TICK_SHIFT` ns.
const TICK_SHIFT: u32 = 24;
/// Idle times above this many ticks are taken as a clock that went
/// backwards, not as idleness (half the tick range, ~1.1 years).
const MAX_IDLE_TICKS: u32 = 1 << 31;

/// Buckets a full table looks at, from a new key's home, for entries past
/// their timeout that the sweep has not reached yet.
const RECLAIM_SCAN: usize = 8;

/// Largest probe distance + 1 a tag can record.
const MAX_DIST: u8 = u8::MAX;

/// Odd multiplier turning the insert serial into a flow id (a bijection on
/// u64, so ids are unique), and its inverse.
const ID_MUL: u64 = 0x9e37_79b9_7f4a_7c15;
const ID_MUL_INV: u64 = mul_inverse(ID_MUL);

const fn mul_inverse(a: u64) -> u64 {
    // Newton's iteration: each step doubles the correct low bits (3 -> 96).
    let mut x = a;
    let mut i = 0;
    while i < 5 {
        x = x.wrapping_mul(2u64.wrapping_sub(a.wrapping_mul(x)));
        i += 1;
    }
    x
}

/// Where a connection is. TCP has its real state; other protocols have the
/// pseudo-states their idle timeouts are chosen by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Tcp(TcpState),
    /// One UDP packet seen.
    UdpFirst,
    /// More UDP packets, all from the initiator.
    UdpSingle,
    /// UDP in both directions.
    UdpMultiple,
    /// An ICMP query (echo, ...) without answer.
    IcmpFirst,
    /// The query was answered.
    IcmpReplied,
    /// Another IP protocol, one direction so far.
    OtherFirst,
    /// Another IP protocol, both directions.
    OtherMultiple,
}

impl State {
    /// Short display name (`EST` for established TCP, as `getflows` prints).
    pub fn name(self) -> &'static str {
        match self {
            State::Tcp(s) => s.name(),
            State::UdpFirst | State::IcmpFirst | State::OtherFirst => "FIRST",
            State::UdpSingle => "SINGLE",
            State::UdpMultiple | State::OtherMultiple => "MULTIPLE",
            State::IcmpReplied => "REPLIED",
        }
    }

    /// The idle timeout of this state, in seconds.
    pub fn timeout_secs(self, t: &control::Timeouts) -> u32 {
        match self {
            State::Tcp(TcpState::SynSent | TcpState::SynSent2) => t.tcp_first_packet,
            State::Tcp(TcpState::SynRecv) => t.tcp_opening,
            State::Tcp(TcpState::Established) => t.tcp_established,
            State::Tcp(TcpState::FinWait | TcpState::CloseWait | TcpState::LastAck) => {
                t.tcp_closing
            }
            State::Tcp(TcpState::TimeWait) => t.tcp_fin_wait,
            State::Tcp(TcpState::Close) => t.tcp_closed,
            State::UdpFirst => t.udp_first_packet,
            State::UdpSingle => t.udp_single,
            State::UdpMultiple => t.udp_multiple,
            State::IcmpFirst => t.icmp_first_packet,
            State::IcmpReplied => t.icmp_error_reply,
            State::OtherFirst => t.other_first_packet,
            State::OtherMultiple => t.other_multiple,
        }
    }

    /// 4-bit code: TCP states 0..=8, then the pseudo-states. All 16 codes
    /// are states, so decoding cannot fail.
    fn code(self) -> u8 {
        match self {
            State::Tcp(s) => s as u8,
            State::UdpFirst => 9,
            State::UdpSingle => 10,
            State::UdpMultiple => 11,
            State::IcmpFirst => 12,
            State::IcmpReplied => 13,
            State::OtherFirst => 14,
            State::OtherMultiple => 15,
        }
    }

    fn from_code(code: u8) -> State {
        match code & 0x0f {
            9 => State::UdpFirst,
            10 => State::UdpSingle,
            11 => State::UdpMultiple,
            12 => State::IcmpFirst,
            13 => State::IcmpReplied,
            14 => State::OtherFirst,
            15 => State::OtherMultiple,
            c => State::Tcp(TcpState::from_code(c).unwrap_or(TcpState::Close)),
        }
    }

    /// The first state of a connection of protocol `proto` (TCP: see
    /// [`TcpConn::pickup`]).
    fn first(proto: u8) -> State {
        match proto {
            PROTO_TCP => State::Tcp(TcpState::SynSent),
            PROTO_UDP => State::UdpFirst,
            PROTO_ICMP => State::IcmpFirst,
            _ => State::OtherFirst,
        }
    }

    /// Whether this state belongs to a connection of protocol `proto`.
    fn fits(self, proto: u8) -> bool {
        match self {
            State::Tcp(_) => proto == PROTO_TCP,
            State::UdpFirst | State::UdpSingle | State::UdpMultiple => proto == PROTO_UDP,
            State::IcmpFirst | State::IcmpReplied => proto == PROTO_ICMP,
            State::OtherFirst | State::OtherMultiple => {
                !matches!(proto, PROTO_TCP | PROTO_UDP | PROTO_ICMP)
            }
        }
    }

    /// The pseudo-state after a packet (not TCP).
    fn after_packet(self, reply: bool) -> State {
        match (self, reply) {
            (State::UdpFirst | State::UdpSingle, false) => State::UdpSingle,
            (State::UdpFirst | State::UdpSingle | State::UdpMultiple, _) => State::UdpMultiple,
            (State::IcmpFirst, true) => State::IcmpReplied,
            (State::OtherFirst, true) => State::OtherMultiple,
            (s, _) => s,
        }
    }
}

/// A handle on an entry, as returned by [`Conntrack::lookup`] and
/// [`Conntrack::insert`]. Valid until the table changes; a stale one is
/// resolved again by key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EntryId {
    slot: u32,
    key: Packed,
}

/// A packet's connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Hit {
    pub id: EntryId,
    /// The packet goes responder -> initiator.
    pub reply: bool,
}

/// What a lookup found ([`Conntrack::probe`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Probe {
    /// A connection within its timeout.
    Live(Hit),
    /// An entry idle past its timeout, still in the table: a lookup
    /// removes it and reports nothing.
    Expired(EntryId),
    Absent,
}

impl Hit {
    /// The same connection seen the other way (an ICMP error travels
    /// against the packet it quotes).
    pub fn reversed(self) -> Hit {
        Hit {
            id: self.id,
            reply: !self.reply,
        }
    }
}

impl Probe {
    /// The live connection, if any.
    pub fn live(self) -> Option<Hit> {
        match self {
            Probe::Live(hit) => Some(hit),
            _ => None,
        }
    }
}

/// Why a known connection's packet is invalid (counted and dropped by the
/// caller; the entry is left as it was).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Invalid {
    #[error("tcp: {0}")]
    Tcp(#[from] TcpInvalid),
    /// The entry was removed since the lookup.
    #[error("connection no longer tracked")]
    Gone,
    /// A TCP connection given a non-TCP packet or the reverse.
    #[error("packet does not match the connection's protocol")]
    Mismatch,
}

/// The step one packet takes its connection through
/// ([`Conntrack::advance`]), to be written by [`Conntrack::apply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Advance {
    /// The connection `hit` names moves on to `next`.
    To { hit: Hit, next: Next },
    /// The connection `hit` names refuses the packet (TCP window or
    /// state); counted on the connection.
    Refused { hit: Hit, err: Invalid },
    /// No connection to refuse it on (gone, or the protocols differ).
    Invalid(Invalid),
}

impl Advance {
    /// The connection's state after the packet, or why it is refused.
    pub fn result(&self) -> Result<State, Invalid> {
        match *self {
            Advance::To {
                next: Next::Tcp(c), ..
            } => Ok(State::Tcp(c.state())),
            Advance::To {
                next: Next::State(s),
                ..
            } => Ok(s),
            Advance::Refused { err, .. } | Advance::Invalid(err) => Err(err),
        }
    }
}

/// A packet [`Conntrack::apply`] wrote to its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tracked {
    /// The connection's state after it.
    pub state: State,
    /// The rule that admitted the connection.
    pub rule_id: u32,
}

/// A connection's state after one of its packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// TCP: state machine and windows.
    Tcp(TcpConn),
    /// UDP, ICMP, other protocols: the pseudo-state.
    State(State),
}

/// Where [`Conntrack::spot`] would place a new key.
#[derive(Debug, Clone, Copy)]
struct Spot {
    p: usize,
    e: usize,
    fp: u16,
    dist: u8,
}

/// Why a new connection could not be tracked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Full {
    /// The table holds `capacity` entries.
    #[error("connection table full ({0} entries)")]
    Capacity(usize),
    /// The instance's limit ([`Conntrack::set_limit`]) is reached.
    #[error("connection limit reached ({0} entries)")]
    Limit(u32),
    /// No free bucket within the probe limit (a pathological run of
    /// colliding keys).
    #[error("no bucket within the probe limit")]
    Probe,
}

/// One connection, as `getflows` and rule re-checks see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowView {
    /// Stable while the entry lives (a re-opened TCP connection gets a new one).
    pub id: u64,
    /// The initiator's tuple, as its first packet had it.
    pub tuple: Tuple,
    /// Direction of the first packet relative to the instance.
    pub dir: Dir,
    /// The rule that admitted the connection.
    pub rule_id: u32,
    pub state: State,
    /// Initiator -> responder.
    pub packets_orig: u64,
    pub bytes_orig: u64,
    /// Responder -> initiator.
    pub packets_reply: u64,
    pub bytes_reply: u64,
    /// Packets of this connection the TCP tracking refused (out of window,
    /// impossible flags; dropped as `fw_invalid`), initiator -> responder
    /// and responder -> initiator. Not in the packet counters above.
    pub dropped_orig: u64,
    pub dropped_reply: u64,
    pub created_ns: u64,
    /// Rounded down to a tick (~16.8 ms).
    pub last_seen_ns: u64,
}

impl FlowView {
    pub fn proto(&self) -> u8 {
        self.tuple.proto
    }

    pub fn state_name(&self) -> &'static str {
        self.state.name()
    }
}

/// Counters of the table itself (per-packet verdicts are the caller's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ConntrackStats {
    /// New entries (including replacements and restored ones).
    pub inserts: u64,
    /// TCP connections re-opened by a SYN on `TIME_WAIT`/`CLOSED`.
    pub reopened: u64,
    /// Inserts refused: the table was at capacity (or no bucket in reach).
    pub full_capacity: u64,
    /// Inserts refused: the instance limit was reached.
    pub full_limit: u64,
    /// Entries removed because they were idle past their timeout.
    pub removed_expired: u64,
    /// Entries removed because a RST answered their SYN.
    pub removed_rst: u64,
    /// Entries removed by a rule re-check ([`Conntrack::retain`]).
    pub removed_recheck: u64,
    /// Entries removed by [`Conntrack::remove`].
    pub removed_explicit: u64,
    /// Entries re-inserted by [`Conntrack::restore`].
    pub restored: u64,
}

/// A connection as saved across a restart ([`Conntrack::snapshot`]). Times
/// are relative (age, idle), so they survive a different clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedFlow {
    pub id: u64,
    pub proto: u8,
    /// The initiator's tuple.
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
    pub dir: Dir,
    pub rule_id: u32,
    pub state: State,
    /// TCP window tracking, `[initiator, responder]`; TCP only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<[Peer; 2]>,
    pub packets_orig: u64,
    pub bytes_orig: u64,
    pub packets_reply: u64,
    pub bytes_reply: u64,
    /// Refused packets ([`FlowView::dropped_orig`]); absent in older files.
    #[serde(default)]
    pub dropped_orig: u32,
    #[serde(default)]
    pub dropped_reply: u32,
    /// Time since the first packet.
    pub age_ns: u64,
    /// Time since the last packet.
    pub idle_ns: u64,
}

// --- Slot layout --------------------------------------------------------

/// `Slot::bits`: the initiator's tuple runs hi -> lo in key order.
const REVERSED: u8 = 0x01;
/// `Slot::bits`: the first packet left the instance (`Dir::Out`).
const OUT: u8 = 0x02;
/// `Slot::bits`: FIN seen from the initiator / the responder.
const FIN_ORIG: u8 = 0x04;
const FIN_REPLY: u8 = 0x08;

/// Window tracking of one TCP direction, as stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
struct Win {
    end: u32,
    maxend: u32,
    maxwin: u32,
}

/// One entry (whether the bucket is in use is in its tag).
#[derive(Debug, Clone, Copy, Default)]
#[repr(C, align(64))]
struct Slot {
    /// `lo_ip << 32 | hi_ip`.
    ips: u64,
    /// `lo_port << 16 | hi_port`.
    ports: u32,
    proto: u8,
    /// `State::code`.
    state: u8,
    /// `REVERSED | OUT | FIN_ORIG | FIN_REPLY`.
    bits: u8,
    /// TCP window scales: initiator's in the low nibble, responder's in the
    /// high one (`NO_WSCALE` = none/unknown).
    scales: u8,
    rule_id: u32,
    /// Last-seen tick.
    seen: u32,
    win: [Win; 2],
    /// Low 32 bits of the counters, `[orig, reply]`.
    packets: [u32; 2],
    bytes: [u32; 2],
}

const _: () = assert!(std::mem::size_of::<Slot>() == 64);

/// The rarely touched part of an entry, parallel to the slots.
#[derive(Debug, Clone, Copy, Default)]
struct Cold {
    id: u64,
    created_ns: u64,
    /// High 16 bits of the counters, `[orig, reply]`.
    packets_hi: [u16; 2],
    bytes_hi: [u16; 2],
    /// Packets the TCP tracking refused, `[orig, reply]` (saturating).
    dropped: [u32; 2],
}

const _: () = assert!(std::mem::size_of::<Cold>() == 32);

/// A connection key ([`FlowKey`]) packed the way slots hold it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Packed {
    /// `lo_ip << 32 | hi_ip`.
    ips: u64,
    /// `lo_port << 16 | hi_port`.
    ports: u32,
    proto: u8,
}

impl Packed {
    /// The key of `t` (as [`Tuple::key`], packed) and whether `t` runs
    /// hi -> lo.
    #[inline]
    fn of(t: &Tuple) -> (Packed, bool) {
        let a = (u64::from(u32::from(t.src)) << 16) | u64::from(t.sport);
        let b = (u64::from(u32::from(t.dst)) << 16) | u64::from(t.dport);
        let ((lo, lo_port), (hi, hi_port), swapped) = if a <= b {
            ((a, t.sport), (b, t.dport), false)
        } else {
            ((b, t.dport), (a, t.sport), true)
        };
        let packed = Packed {
            ips: ((lo >> 16) << 32) | (hi >> 16),
            ports: (u32::from(lo_port) << 16) | u32::from(hi_port),
            proto: t.proto,
        };
        (packed, swapped)
    }
}

impl Slot {
    fn key_is(&self, k: &Packed) -> bool {
        self.ips == k.ips && self.ports == k.ports && self.proto == k.proto
    }

    #[inline(always)]
    fn state(&self) -> State {
        State::from_code(self.state)
    }

    fn set_state(&mut self, s: State) {
        self.state = s.code();
    }

    #[allow(
        clippy::cast_possible_truncation,
        reason = "unpacks the key: each field is one half of `ips` or `ports`"
    )]
    fn flow_key(&self) -> FlowKey {
        FlowKey {
            proto: self.proto,
            lo_ip: (self.ips >> 32) as u32,
            hi_ip: self.ips as u32,
            lo_port: (self.ports >> 16) as u16,
            hi_port: self.ports as u16,
        }
    }

    fn reversed(&self) -> bool {
        self.bits & REVERSED != 0
    }

    fn dir(&self) -> Dir {
        if self.bits & OUT != 0 {
            Dir::Out
        } else {
            Dir::In
        }
    }

    /// The initiator's tuple.
    fn tuple(&self) -> Tuple {
        let k = self.flow_key();
        let (lo, hi) = (
            (Ipv4Addr::from(k.lo_ip), k.lo_port),
            (Ipv4Addr::from(k.hi_ip), k.hi_port),
        );
        let ((src, sport), (dst, dport)) = if self.reversed() { (hi, lo) } else { (lo, hi) };
        Tuple {
            proto: k.proto,
            src,
            dst,
            sport,
            dport,
        }
    }

    #[inline(always)]
    fn tcp(&self) -> TcpConn {
        let peer = |w: &Win, scale: u8, fin: u8| Peer {
            end: w.end,
            maxend: w.maxend,
            maxwin: w.maxwin,
            scale,
            fin: self.bits & fin != 0,
        };
        let state = match self.state() {
            State::Tcp(s) => s,
            _ => TcpState::Close,
        };
        TcpConn::from_parts(
            state,
            [
                peer(&self.win[0], self.scales & 0x0f, FIN_ORIG),
                peer(&self.win[1], self.scales >> 4, FIN_REPLY),
            ],
        )
    }

    #[inline(always)]
    fn set_tcp(&mut self, c: &TcpConn) {
        let [o, r] = c.peers();
        for (w, p) in self.win.iter_mut().zip([o, r]) {
            *w = Win {
                end: p.end,
                maxend: p.maxend,
                maxwin: p.maxwin,
            };
        }
        self.state = State::Tcp(c.state()).code();
        self.scales = (r.scale.min(NO_WSCALE) << 4) | o.scale.min(NO_WSCALE);
        self.bits = (self.bits & (REVERSED | OUT)) | flag(o.fin, FIN_ORIG) | flag(r.fin, FIN_REPLY);
    }
}

fn flag(set: bool, bit: u8) -> u8 {
    if set { bit } else { 0 }
}

#[allow(
    clippy::cast_possible_truncation,
    reason = "the tick clock wraps every 2^32 ticks; idle times are wrapping differences"
)]
fn tick(now_ns: u64) -> u32 {
    (now_ns >> TICK_SHIFT) as u32
}

/// The id of bucket `i`: the bucket count is at most
/// `MAX_CAPACITY * 5 / 4 + 1`, far below 2^32.
#[inline]
#[allow(
    clippy::cast_possible_truncation,
    reason = "bucket indexes are below 2^29"
)]
fn slot_id(i: usize) -> u32 {
    i as u32
}

/// The probe distance of a bucket tag: its low byte (the high byte is the
/// key's fingerprint).
#[inline]
fn tag_dist(tag: u16) -> u8 {
    tag.to_le_bytes()[0]
}

/// A 48-bit counter as its low 32 bits and the 16 above them (the live
/// counters wrap at 2^48 the same way).
#[allow(
    clippy::cast_possible_truncation,
    reason = "splits a counter into its two stored parts"
)]
fn split48(v: u64) -> (u32, u16) {
    (v as u32, (v >> 32) as u16)
}

/// Timeout in ticks, rounded up, at most `MAX_IDLE_TICKS - 1`.
fn timeout_ticks(secs: u32) -> u32 {
    let ticks = (u64::from(secs) * 1_000_000_000).div_ceil(1 << TICK_SHIFT);
    u32::try_from(ticks).map_or(MAX_IDLE_TICKS - 1, |t| t.min(MAX_IDLE_TICKS - 1))
}

/// 64x64 -> 128-bit multiply, folded to 64 bits.
#[allow(
    clippy::cast_possible_truncation,
    reason = "folds the 128-bit product: its low and high halves, xored"
)]
fn fold_mul(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

// --- The table ------------------------------------------------------------

/// The connection table (see the module docs).
pub struct Conntrack {
    /// Per bucket: the probe distance + 1 in the low byte (0 = empty) and
    /// 8 bits of the key's hash in the high byte.
    tags: Vec<u16>,
    slots: Vec<Slot>,
    cold: Vec<Cold>,
    seed: [u64; 3],
    capacity: usize,
    /// Effective limit: `min(capacity, set_limit)`.
    limit: usize,
    len: usize,
    timeouts: control::Timeouts,
    /// Timeout per `State::code`, in ticks.
    timeout_ticks: [u32; 16],
    /// Next slot [`Conntrack::expire`] visits.
    cursor: usize,
    /// Serial of the last flow id handed out.
    serial: u64,
    /// Latest `now_ns` seen (to turn last-seen ticks back into ns for views).
    clock_ns: u64,
    stats: ConntrackStats,
}

impl fmt::Debug for Conntrack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conntrack")
            .field("len", &self.len)
            .field("capacity", &self.capacity)
            .field("limit", &self.limit)
            .field("buckets", &self.slots.len())
            .field("timeouts", &self.timeouts)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Conntrack {
    /// A table for `capacity` connections (clamped to [`MAX_CAPACITY`]),
    /// fully allocated now, hashed with a seed derived from the capacity.
    pub fn new(capacity: usize) -> Conntrack {
        Conntrack::with_seed(capacity, capacity as u64 ^ 0x636f_6e6e_7472_6163)
    }

    /// [`Conntrack::new`] with an explicit hash seed (the agent passes a
    /// random one).
    pub fn with_seed(capacity: usize, seed: u64) -> Conntrack {
        let capacity = capacity.min(MAX_CAPACITY);
        // Always at least one empty bucket: probes and sweeps rely on it.
        let buckets = capacity + capacity / 4 + 1;
        let mut s = seed;
        let mut ct = Conntrack {
            tags: vec![0; buckets],
            slots: vec![Slot::default(); buckets],
            cold: vec![Cold::default(); buckets],
            seed: [splitmix(&mut s), splitmix(&mut s), splitmix(&mut s) | 1],
            capacity,
            limit: capacity,
            len: 0,
            timeouts: control::Timeouts::default(),
            timeout_ticks: [0; 16],
            cursor: 0,
            serial: 0,
            clock_ns: 0,
            stats: ConntrackStats::default(),
        };
        ct.set_timeouts(control::Timeouts::default());
        ct
    }

    /// Idle timeouts per state; they apply to existing entries too.
    pub fn set_timeouts(&mut self, t: control::Timeouts) {
        self.timeouts = t;
        for (slot, code) in self.timeout_ticks.iter_mut().zip(0..=u8::MAX) {
            *slot = timeout_ticks(State::from_code(code).timeout_secs(&t));
        }
    }

    pub fn timeouts(&self) -> &control::Timeouts {
        &self.timeouts
    }

    /// The instance's connection limit (at most the capacity; `None` = the
    /// capacity). Lowering it below `len` removes nothing: new inserts fail
    /// until enough entries are gone.
    pub fn set_limit(&mut self, max: Option<u32>) {
        self.limit = max.map_or(self.capacity, |m| (m as usize).min(self.capacity));
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The current limit ([`Conntrack::set_limit`]).
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes held by the table (tags, slots, cold data and the header).
    pub fn memory_bytes(&self) -> usize {
        self.slots.len()
            * (std::mem::size_of::<u16>()
                + std::mem::size_of::<Slot>()
                + std::mem::size_of::<Cold>())
            + std::mem::size_of::<Self>()
    }

    pub fn stats(&self) -> ConntrackStats {
        self.stats
    }

    /// The connection `t` belongs to, in either direction. An entry idle
    /// past its timeout is removed and reported as `None`.
    pub fn lookup(&mut self, t: &Tuple, now_ns: u64) -> Option<Hit> {
        let found = self.probe(t, now_ns);
        self.settle(found, now_ns);
        found.live()
    }

    /// What [`Conntrack::lookup`] finds for `t` now, changing nothing: the
    /// live connection, an entry idle past its timeout (still in the
    /// table), or nothing. [`Conntrack::settle`] then does what the lookup
    /// would have done to the table.
    #[inline]
    pub fn probe(&self, t: &Tuple, now_ns: u64) -> Probe {
        let (key, swapped) = Packed::of(t);
        let Some(i) = self.find(&key) else {
            return Probe::Absent;
        };
        let id = EntryId {
            slot: slot_id(i),
            key,
        };
        if self.expired(i, now_ns) {
            return Probe::Expired(id);
        }
        Probe::Live(Hit {
            id,
            reply: swapped != self.slots[i].reversed(),
        })
    }

    /// The table side of a lookup that found `found`: the clock moves to
    /// `now_ns` and an expired entry is removed.
    #[inline]
    pub fn settle(&mut self, found: Probe, now_ns: u64) {
        self.clock(now_ns);
        if let Probe::Expired(id) = found
            && let Some(i) = self.resolve(&id)
        {
            self.remove_at(i);
            self.stats.removed_expired += 1;
        }
    }

    /// Starts loading the slot `t`'s connection would be in, so that a
    /// later [`Conntrack::lookup`] finds it in cache. At 1M connections a
    /// lookup is one DRAM miss (~160-200 ns in our test VM); calling this for
    /// every packet of a batch before processing the batch overlaps those
    /// misses instead of paying them one after the other (bench: 65 ns per
    /// packet instead of ~200 at 1M). It scans the tags (cached) and
    /// prefetches the one slot whose tag matches; nothing changes.
    pub fn prefetch(&self, t: &Tuple) {
        if let Some(i) = self.candidate(&Packed::of(t).0) {
            audited::prefetch(&self.slots[i].ips);
        }
    }

    /// The connection an ICMP error belongs to: `inner` is the offending
    /// packet as it was sent (from either side). The hit's `reply` is the
    /// error's own direction (the reverse of `inner`'s). Nothing about the
    /// connection changes: errors neither advance TCP nor keep it alive.
    pub fn related(&mut self, inner: &Tuple, now_ns: u64) -> Option<Hit> {
        self.lookup(inner, now_ns).map(Hit::reversed)
    }

    /// Advances the connection with one of its packets (`bytes` long):
    /// TCP state and windows or the pseudo-state, counters, last-seen. An
    /// invalid packet leaves the entry untouched. The same as
    /// [`Conntrack::advance`] then [`Conntrack::apply`].
    pub fn track(&mut self, hit: Hit, l4: &L4, bytes: u32, now_ns: u64) -> Result<State, Invalid> {
        let step = self.advance(hit, l4);
        self.apply(&step, bytes, now_ns).map(|t| t.state)
    }

    /// The step one packet takes its connection through, worked out on a
    /// copy of the entry's state (TCP state machine and windows, or the
    /// pseudo-state); nothing changes. [`Conntrack::apply`] writes it, so
    /// the state machine runs once per packet.
    #[inline]
    pub fn advance(&self, hit: Hit, l4: &L4) -> Advance {
        match self.resolve(&hit.id) {
            Some(i) => self.advance_at(i, hit, l4),
            None => Advance::Invalid(Invalid::Gone),
        }
    }

    /// [`Conntrack::advance`] for a `hit` [`Conntrack::probe`] has just
    /// returned (nothing changed since), so its bucket is `hit.id.slot`.
    #[inline]
    pub(crate) fn advance_probed(&self, hit: Hit, l4: &L4) -> Advance {
        self.advance_at(hit.id.slot as usize, hit, l4)
    }

    #[inline(always)]
    fn advance_at(&self, i: usize, hit: Hit, l4: &L4) -> Advance {
        let Some(slot) = self.slots.get(i) else {
            return Advance::Invalid(Invalid::Gone);
        };
        match (slot.state(), l4) {
            (State::Tcp(_), L4::Tcp(seg)) => {
                let mut c = slot.tcp();
                match c.segment(hit.reply, seg) {
                    Ok(_) => Advance::To {
                        hit,
                        next: Next::Tcp(c),
                    },
                    Err(e) => Advance::Refused { hit, err: e.into() },
                }
            }
            (State::Tcp(_), _) | (_, L4::Tcp(_)) => Advance::Invalid(Invalid::Mismatch),
            (s, _) => Advance::To {
                hit,
                next: Next::State(s.after_packet(hit.reply)),
            },
        }
    }

    /// Writes `step` (from [`Conntrack::advance`] on this table, with
    /// nothing changed in between) for a packet `bytes` long: the new
    /// state, counters and last-seen; a refusal is counted on the
    /// connection (getflows) and leaves it as it was.
    #[inline]
    pub fn apply(&mut self, step: &Advance, bytes: u32, now_ns: u64) -> Result<Tracked, Invalid> {
        self.clock(now_ns);
        let (hit, next) = match *step {
            Advance::To { hit, next } => (hit, next),
            Advance::Refused { hit, err } => {
                if let Some(i) = self.resolve(&hit.id) {
                    let n = &mut self.cold[i].dropped[usize::from(hit.reply)];
                    *n = n.saturating_add(1);
                }
                return Err(err);
            }
            Advance::Invalid(err) => return Err(err),
        };
        let i = self.resolve(&hit.id).ok_or(Invalid::Gone)?;
        let d = usize::from(hit.reply);
        let slot = &mut self.slots[i];
        let rule_id = slot.rule_id;
        let state = match next {
            Next::Tcp(c) => {
                let old = slot.state();
                let new = c.state();
                slot.set_tcp(&c);
                if old == State::Tcp(TcpState::SynSent) && new == TcpState::Close && hit.reply {
                    // Refused: nothing worth remembering.
                    self.remove_at(i);
                    self.stats.removed_rst += 1;
                    let state = State::Tcp(new);
                    return Ok(Tracked { state, rule_id });
                }
                if matches!(old, State::Tcp(TcpState::TimeWait | TcpState::Close))
                    && new == TcpState::SynSent
                {
                    // Port reuse: a new connection in the old entry.
                    slot.packets = [0; 2];
                    slot.bytes = [0; 2];
                    self.serial = self.serial.wrapping_add(1);
                    self.cold[i] = Cold {
                        id: self.serial.wrapping_mul(ID_MUL),
                        created_ns: now_ns,
                        ..Cold::default()
                    };
                    self.stats.reopened += 1;
                }
                State::Tcp(new)
            }
            Next::State(s) => {
                slot.set_state(s);
                s
            }
        };
        self.count(i, d, bytes, now_ns);
        Ok(Tracked { state, rule_id })
    }

    /// Whether [`Conntrack::insert`] of `t` would succeed now, changing
    /// nothing. Exact unless the table is at its limit and reclaiming
    /// expired neighbours would reshape a probe run to the probe limit
    /// (a pathological collision chain): the probe is checked on the table
    /// as it is.
    pub fn can_insert(&self, t: &Tuple, now_ns: u64) -> Result<(), Full> {
        let (packed, _) = Packed::of(t);
        let mut len = self.len;
        if let Some(i) = self.find(&packed) {
            if !self.expired(i, now_ns) {
                return Ok(());
            }
            // The lookup before an insert removes it first.
            len -= 1;
        }
        if len >= self.limit {
            let (mut i, _) = self.home(self.hash(&packed));
            let mut reclaimable = 0;
            for _ in 0..RECLAIM_SCAN {
                if self.tags[i] != 0 && self.expired(i, now_ns) {
                    reclaimable += 1;
                }
                i = self.next(i);
            }
            if len - reclaimable.min(len) >= self.limit {
                return Err(if self.limit < self.capacity {
                    Full::Limit(u32::try_from(self.limit).unwrap_or(u32::MAX))
                } else {
                    Full::Capacity(self.capacity)
                });
            }
        }
        self.room(&packed)
    }

    /// Starts tracking the connection `t` opens: its first packet (`bytes`
    /// long, described by `l4`) went `dir` relative to the instance and
    /// `rule_id` admitted it. For TCP a pure SYN opens normally; anything
    /// else is picked up mid-stream (see [`TcpConn::pickup`]; the engine
    /// only inserts SYNs, [`crate::tcp::can_open`]). An existing entry for
    /// the same connection is replaced. At the limit, expired entries near
    /// the new one's bucket are reclaimed first; if there are none the
    /// insert fails.
    pub fn insert(
        &mut self,
        t: &Tuple,
        dir: Dir,
        rule_id: u32,
        l4: &L4,
        bytes: u32,
        now_ns: u64,
    ) -> Result<EntryId, Full> {
        self.clock(now_ns);
        let (packed, swapped) = Packed::of(t);
        let i = match self.find(&packed) {
            Some(i) => i,
            None => {
                if self.len >= self.limit {
                    self.reclaim_near(&packed, now_ns);
                    if self.len >= self.limit {
                        return Err(self.full());
                    }
                }
                let i = self
                    .place(&packed)
                    .inspect_err(|_| self.stats.full_capacity += 1)?;
                self.len += 1;
                i
            }
        };
        let state = State::first(t.proto);
        let slot = &mut self.slots[i];
        slot.bits = flag(swapped, REVERSED) | flag(dir == Dir::Out, OUT);
        slot.set_state(state);
        slot.rule_id = rule_id;
        slot.win = [Win::default(); 2];
        slot.packets = [0; 2];
        slot.bytes = [0; 2];
        if let State::Tcp(_) = state {
            let seg = match l4 {
                L4::Tcp(seg) => *seg,
                _ => TcpMeta::default(),
            };
            slot.set_tcp(&TcpConn::pickup(&seg));
        }
        self.serial = self.serial.wrapping_add(1);
        self.cold[i] = Cold {
            id: self.serial.wrapping_mul(ID_MUL),
            created_ns: now_ns,
            ..Cold::default()
        };
        self.count(i, 0, bytes, now_ns);
        self.stats.inserts += 1;
        Ok(EntryId {
            slot: slot_id(i),
            key: packed,
        })
    }

    /// Stops tracking a connection (no-op if it is already gone).
    pub fn remove(&mut self, id: EntryId) {
        if let Some(i) = self.resolve(&id) {
            self.remove_at(i);
            self.stats.removed_explicit += 1;
        }
    }

    /// The connection behind `id`, if it is still tracked.
    pub fn get(&self, id: EntryId) -> Option<FlowView> {
        self.resolve(&id).map(|i| self.view(i))
    }

    /// The rule that admitted the connection behind `id` (0 if it is gone).
    pub fn rule_id(&self, id: EntryId) -> u32 {
        self.resolve(&id).map_or(0, |i| self.slots[i].rule_id)
    }

    /// Incremental sweep: visits at most `budget` buckets from where the
    /// last call stopped and removes the entries idle past their timeout.
    /// Returns how many it removed.
    pub fn expire(&mut self, now_ns: u64, budget: usize) -> usize {
        self.clock(now_ns);
        let n = self.slots.len();
        let mut removed = 0;
        let mut cursor = self.cursor.min(n - 1);
        for _ in 0..budget.min(n) {
            if self.tags[cursor] != 0 && self.expired(cursor, now_ns) {
                // The next entry of the run shifts into `cursor`: look
                // at it again on the next visit.
                self.remove_at(cursor);
                removed += 1;
            } else {
                cursor = if cursor + 1 == n { 0 } else { cursor + 1 };
            }
        }
        self.cursor = cursor;
        self.stats.removed_expired += removed as u64;
        removed
    }

    /// Keeps only the connections `f` accepts (rule re-check); returns how
    /// many were removed. `f` sees each connection exactly once.
    pub fn retain(&mut self, mut f: impl FnMut(&FlowView) -> bool) -> usize {
        self.recheck(|v| f(v).then_some(v.rule_id))
    }

    /// Rule re-check: `f` returns the id of the rule that admits each
    /// connection now (recorded on the entry, so `getflows` shows it), or
    /// `None` to remove it. Returns how many were removed; `f` sees each
    /// connection exactly once.
    pub fn recheck(&mut self, mut f: impl FnMut(&FlowView) -> Option<u32>) -> usize {
        if self.len == 0 {
            return 0;
        }
        let n = self.slots.len();
        // Start right after an empty bucket: no run crosses the start, so a
        // removal never shifts an entry already seen back into view.
        let Some(start) = self.tags.iter().position(|&t| t == 0) else {
            return 0;
        };
        let mut removed = 0;
        let mut i = start;
        let mut visited = 0;
        while visited < n {
            if self.tags[i] != 0 {
                match f(&self.view(i)) {
                    Some(rule_id) => self.slots[i].rule_id = rule_id,
                    None => {
                        self.remove_at(i);
                        removed += 1;
                        continue;
                    }
                }
            }
            i = if i + 1 == n { 0 } else { i + 1 };
            visited += 1;
        }
        self.stats.removed_recheck += removed as u64;
        removed
    }

    /// Every connection, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = FlowView> + '_ {
        (0..self.slots.len())
            .filter(|&i| self.tags[i] != 0)
            .map(|i| self.view(i))
    }

    /// Every connection, with times relative to `now_ns`.
    pub fn snapshot(&self, now_ns: u64) -> Vec<SavedFlow> {
        let now_tick = tick(now_ns);
        (0..self.slots.len())
            .filter(|&i| self.tags[i] != 0)
            .map(|i| {
                let s = &self.slots[i];
                let v = self.view(i);
                let idle_ticks = now_tick.wrapping_sub(s.seen);
                let idle_ticks = if idle_ticks > MAX_IDLE_TICKS {
                    0
                } else {
                    idle_ticks
                };
                SavedFlow {
                    id: v.id,
                    proto: v.tuple.proto,
                    src: v.tuple.src,
                    dst: v.tuple.dst,
                    sport: v.tuple.sport,
                    dport: v.tuple.dport,
                    dir: v.dir,
                    rule_id: v.rule_id,
                    state: v.state,
                    tcp: matches!(v.state, State::Tcp(_)).then(|| *s.tcp().peers()),
                    packets_orig: v.packets_orig,
                    bytes_orig: v.bytes_orig,
                    packets_reply: v.packets_reply,
                    bytes_reply: v.bytes_reply,
                    dropped_orig: self.cold[i].dropped[0],
                    dropped_reply: self.cold[i].dropped[1],
                    age_ns: now_ns.saturating_sub(v.created_ns),
                    // Idle time is kept in ticks (16.8 ms): rounded, it can
                    // pass the exact age of a young connection.
                    idle_ns: (u64::from(idle_ticks) << TICK_SHIFT)
                        .min(now_ns.saturating_sub(v.created_ns)),
                }
            })
            .collect()
    }

    /// Re-inserts saved connections, with their ages and idle times taken
    /// relative to `now_ns`. Each is checked first; those that are
    /// inconsistent (state not of their protocol, TCP data missing or
    /// present where it should not be, idle longer than old), already
    /// expired, duplicates (key or id) or beyond the table's limit are
    /// skipped. Returns how many were restored.
    pub fn restore(&mut self, flows: &[SavedFlow], now_ns: u64) -> usize {
        self.clock(now_ns);
        let mut ids: HashSet<u64> = self.iter().map(|v| v.id).collect();
        let mut restored: usize = 0;
        for f in flows {
            if self.len >= self.limit {
                break;
            }
            let tcp_ok = matches!(f.state, State::Tcp(_)) == f.tcp.is_some();
            let timeout_ns = u64::from(f.state.timeout_secs(&self.timeouts)) * 1_000_000_000;
            if !f.state.fits(f.proto)
                || !tcp_ok
                // One tick of slack: files written before idle times were
                // clamped to the age round idle up past it.
                || f.idle_ns > f.age_ns.saturating_add(1 << TICK_SHIFT)
                || f.idle_ns > timeout_ns
                || ids.contains(&f.id)
            {
                continue;
            }
            let t = Tuple {
                proto: f.proto,
                src: f.src,
                dst: f.dst,
                sport: f.sport,
                dport: f.dport,
            };
            let (packed, swapped) = Packed::of(&t);
            if self.find(&packed).is_some() {
                continue;
            }
            let Ok(i) = self.place(&packed) else {
                continue;
            };
            self.len += 1;
            ids.insert(f.id);
            let slot = &mut self.slots[i];
            slot.bits = flag(swapped, REVERSED) | flag(f.dir == Dir::Out, OUT);
            slot.set_state(f.state);
            slot.rule_id = f.rule_id;
            slot.seen = tick(now_ns.saturating_sub(f.idle_ns));
            if let (State::Tcp(s), Some(peers)) = (f.state, f.tcp) {
                slot.set_tcp(&TcpConn::from_parts(s, peers));
            }
            let (po, po_hi) = split48(f.packets_orig);
            let (pr, pr_hi) = split48(f.packets_reply);
            let (bo, bo_hi) = split48(f.bytes_orig);
            let (br, br_hi) = split48(f.bytes_reply);
            slot.packets = [po, pr];
            slot.bytes = [bo, br];
            self.cold[i] = Cold {
                id: f.id,
                created_ns: now_ns.saturating_sub(f.age_ns),
                packets_hi: [po_hi, pr_hi],
                bytes_hi: [bo_hi, br_hi],
                dropped: [f.dropped_orig, f.dropped_reply],
            };
            // New ids must not run into restored ones.
            self.serial = self.serial.max(f.id.wrapping_mul(ID_MUL_INV));
            restored += 1;
        }
        self.stats.inserts += restored as u64;
        self.stats.restored += restored as u64;
        restored
    }

    // --- internals ----------------------------------------------------------

    fn clock(&mut self, now_ns: u64) {
        self.clock_ns = self.clock_ns.max(now_ns);
    }

    /// Removes the expired entries among the `RECLAIM_SCAN` buckets from
    /// `k`'s home (the ones an insert touches anyway): an entry past its
    /// timeout does not count against the limit even if the sweep lags.
    fn reclaim_near(&mut self, k: &Packed, now_ns: u64) -> usize {
        let (mut i, _) = self.home(self.hash(k));
        let mut removed = 0;
        for _ in 0..RECLAIM_SCAN {
            if self.tags[i] != 0 && self.expired(i, now_ns) {
                // The run shifts back into `i`: look at it again.
                self.remove_at(i);
                removed += 1;
            } else {
                i = self.next(i);
            }
        }
        self.stats.removed_expired += removed as u64;
        removed
    }

    fn full(&mut self) -> Full {
        if self.limit < self.capacity {
            self.stats.full_limit += 1;
            Full::Limit(u32::try_from(self.limit).unwrap_or(u32::MAX))
        } else {
            self.stats.full_capacity += 1;
            Full::Capacity(self.capacity)
        }
    }

    fn hash(&self, k: &Packed) -> u64 {
        let lo = (u64::from(k.ports) << 8) | u64::from(k.proto);
        let h = fold_mul(k.ips ^ self.seed[0], lo ^ self.seed[1]);
        fold_mul(h, self.seed[2])
    }

    /// The bucket of hash `h` and the fingerprint (tag high byte) of its key.
    #[allow(
        clippy::cast_possible_truncation,
        reason = "multiply-shift range reduction: the result is below the bucket count"
    )]
    fn home(&self, h: u64) -> (usize, u16) {
        let home = ((u128::from(h) * self.slots.len() as u128) >> 64) as usize;
        (home, u16::from(h.to_le_bytes()[0]) << 8)
    }

    fn next(&self, i: usize) -> usize {
        if i + 1 == self.slots.len() { 0 } else { i + 1 }
    }

    /// The bucket holding `k`.
    fn find(&self, k: &Packed) -> Option<usize> {
        self.walk(k, |i| self.slots[i].key_is(k))
    }

    /// The first bucket whose tag matches `k` (for prefetching: no key
    /// comparison, so no slot is touched).
    fn candidate(&self, k: &Packed) -> Option<usize> {
        self.walk(k, |_| true)
    }

    /// Walks `k`'s probe sequence over the tag array and returns the first
    /// bucket whose tag matches `k`'s fingerprint and distance and that
    /// `confirm` accepts.
    #[inline(always)]
    fn walk(&self, k: &Packed, confirm: impl Fn(usize) -> bool) -> Option<usize> {
        let (mut i, fp) = self.home(self.hash(k));
        let mut dist: u8 = 1;
        loop {
            let tag = self.tags[i];
            // Robin Hood: past this point the key would have displaced the
            // entry here.
            if tag_dist(tag) < dist {
                return None;
            }
            if tag == fp | u16::from(dist) && confirm(i) {
                return Some(i);
            }
            i = self.next(i);
            dist = dist.checked_add(1)?;
        }
    }

    /// The bucket `id` designates, checked; found again by key if entries moved.
    fn resolve(&self, id: &EntryId) -> Option<usize> {
        let i = id.slot as usize;
        match (self.tags.get(i), self.slots.get(i)) {
            (Some(&tag), Some(s)) if tag != 0 && s.key_is(&id.key) => Some(i),
            _ => self.find(&id.key),
        }
    }

    /// Claims a bucket for the absent key `k` (Robin Hood: at the first
    /// bucket whose entry is closer to its home, shifting the rest of the
    /// run one bucket on) and writes the key and its tag into it.
    fn place(&mut self, k: &Packed) -> Result<usize, Full> {
        let Spot { p, mut e, fp, dist } = self.spot(k)?;
        // The run from `p` moves one bucket on, up to the empty bucket `e`.
        let n = self.slots.len();
        while e != p {
            let prev = if e == 0 { n - 1 } else { e - 1 };
            self.tags[e] = self.tags[prev] + 1;
            self.slots[e] = self.slots[prev];
            self.cold[e] = self.cold[prev];
            e = prev;
        }
        self.tags[p] = fp | u16::from(dist);
        self.slots[p] = Slot {
            ips: k.ips,
            ports: k.ports,
            proto: k.proto,
            ..Slot::default()
        };
        Ok(p)
    }

    /// [`Conntrack::place`]'s checks without the writes.
    fn room(&self, k: &Packed) -> Result<(), Full> {
        self.spot(k).map(|_| ())
    }

    /// Where the absent key `k` would go: bucket `p` at probe distance
    /// `dist` (the first whose entry is closer to its home), and `e`, the
    /// first empty bucket of the run from `p` that moves one bucket on.
    /// `Full::Probe` if `k` or an entry of that run would pass the distance
    /// limit.
    #[inline]
    fn spot(&self, k: &Packed) -> Result<Spot, Full> {
        let (mut p, fp) = self.home(self.hash(k));
        let mut dist: u8 = 1;
        while tag_dist(self.tags[p]) >= dist {
            p = self.next(p);
            dist = dist.checked_add(1).ok_or(Full::Probe)?;
        }
        let mut e = p;
        while self.tags[e] != 0 {
            if tag_dist(self.tags[e]) == MAX_DIST {
                return Err(Full::Probe);
            }
            e = self.next(e);
        }
        Ok(Spot { p, e, fp, dist })
    }

    /// Empties bucket `i`, shifting the rest of its run back by one.
    fn remove_at(&mut self, mut i: usize) {
        loop {
            let j = self.next(i);
            if tag_dist(self.tags[j]) <= 1 {
                break;
            }
            self.tags[i] = self.tags[j] - 1;
            self.slots[i] = self.slots[j];
            self.cold[i] = self.cold[j];
            i = j;
        }
        self.tags[i] = 0;
        self.slots[i] = Slot::default();
        self.cold[i] = Cold::default();
        self.len -= 1;
    }

    fn expired(&self, i: usize, now_ns: u64) -> bool {
        let s = &self.slots[i];
        let idle = tick(now_ns).wrapping_sub(s.seen);
        idle <= MAX_IDLE_TICKS && idle > self.timeout_ticks[usize::from(s.state & 0x0f)]
    }

    /// Counts a packet of `bytes` in direction `d` and refreshes last-seen.
    fn count(&mut self, i: usize, d: usize, bytes: u32, now_ns: u64) {
        let s = &mut self.slots[i];
        s.seen = tick(now_ns);
        let (p, carry_p) = s.packets[d].overflowing_add(1);
        let (b, carry_b) = s.bytes[d].overflowing_add(bytes);
        s.packets[d] = p;
        s.bytes[d] = b;
        if carry_p || carry_b {
            let c = &mut self.cold[i];
            c.packets_hi[d] = c.packets_hi[d].wrapping_add(u16::from(carry_p));
            c.bytes_hi[d] = c.bytes_hi[d].wrapping_add(u16::from(carry_b));
        }
    }

    fn view(&self, i: usize) -> FlowView {
        let s = &self.slots[i];
        let c = &self.cold[i];
        let wide = |lo: u32, hi: u16| (u64::from(hi) << 32) | u64::from(lo);
        let now_tick = tick(self.clock_ns);
        let idle = now_tick.wrapping_sub(s.seen);
        let idle = if idle > MAX_IDLE_TICKS { 0 } else { idle };
        FlowView {
            id: c.id,
            tuple: s.tuple(),
            dir: s.dir(),
            rule_id: s.rule_id,
            state: s.state(),
            packets_orig: wide(s.packets[0], c.packets_hi[0]),
            bytes_orig: wide(s.bytes[0], c.bytes_hi[0]),
            packets_reply: wide(s.packets[1], c.packets_hi[1]),
            bytes_reply: wide(s.bytes[1], c.bytes_hi[1]),
            dropped_orig: u64::from(c.dropped[0]),
            dropped_reply: u64::from(c.dropped[1]),
            created_ns: c.created_ns,
            last_seen_ns: ((self.clock_ns >> TICK_SHIFT).saturating_sub(u64::from(idle)))
                << TICK_SHIFT,
        }
    }

    /// Checks the Robin Hood invariants (tests).
    #[cfg(test)]
    fn check(&self) -> Result<(), String> {
        let n = self.slots.len();
        let mut count = 0;
        for i in 0..n {
            let tag = self.tags[i];
            if tag == 0 {
                continue;
            }
            count += 1;
            let s = &self.slots[i];
            let k = Packed {
                ips: s.ips,
                ports: s.ports,
                proto: s.proto,
            };
            let (home, fp) = self.home(self.hash(&k));
            let d = (i + n - home) % n;
            if tag != fp | u16::try_from(d + 1).unwrap() {
                return Err(format!(
                    "bucket {i}: tag {tag:#x} but home {home}, fp {fp:#x}"
                ));
            }
            let prev = tag_dist(self.tags[(i + n - 1) % n]);
            if d > 0 && usize::from(prev) < d {
                return Err(format!("bucket {i}: run broken before it"));
            }
            if self.find(&k) != Some(i) {
                return Err(format!("bucket {i}: not found by key"));
            }
            // The prefetch candidate is this bucket or, if another key of
            // the same home has the same fingerprint, one before it.
            match self.candidate(&k) {
                Some(c) if (i + n - c) % n <= d => {}
                c => return Err(format!("bucket {i}: prefetch candidate {c:?}")),
            }
        }
        if count != self.len {
            return Err(format!("len {} but {count} entries", self.len));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn udp(i: u32) -> Tuple {
        Tuple {
            proto: PROTO_UDP,
            src: Ipv4Addr::from(0x0a00_0000 | (i % 7)),
            dst: Ipv4Addr::from(0x0a01_0000 | (i / 7)),
            sport: 1000 + (i % 3) as u16,
            dport: 53,
        }
    }

    #[test]
    fn id_multiplier_inverts() {
        assert_eq!(ID_MUL.wrapping_mul(ID_MUL_INV), 1);
        assert_eq!(7u64.wrapping_mul(ID_MUL).wrapping_mul(ID_MUL_INV), 7);
    }

    #[test]
    fn state_codes_round_trip() {
        let all = TcpState::ALL.iter().map(|&s| State::Tcp(s)).chain([
            State::UdpFirst,
            State::UdpSingle,
            State::UdpMultiple,
            State::IcmpFirst,
            State::IcmpReplied,
            State::OtherFirst,
            State::OtherMultiple,
        ]);
        let mut codes = HashSet::new();
        for s in all {
            assert_eq!(State::from_code(s.code()), s);
            assert!(codes.insert(s.code()));
        }
        assert_eq!(codes.len(), 16);
    }

    #[test]
    fn timeouts_round_up_to_ticks() {
        assert_eq!(timeout_ticks(0), 0);
        // 1 s = 59.6 ticks -> 60.
        assert_eq!(timeout_ticks(1), 60);
        assert_eq!(timeout_ticks(u32::MAX), MAX_IDLE_TICKS - 1);
    }

    #[test]
    fn tcp_pack_round_trips() {
        let syn = TcpMeta {
            flags: TcpMeta::SYN,
            seq: 77,
            window: 1000,
            wscale: Some(9),
            ..TcpMeta::default()
        };
        let mut c = TcpConn::open(&syn).unwrap();
        let synack = TcpMeta {
            flags: TcpMeta::SYN | TcpMeta::ACK,
            seq: 5,
            ack: 78,
            window: 2000,
            wscale: Some(3),
            ..TcpMeta::default()
        };
        c.segment(true, &synack).unwrap();
        let mut s = Slot {
            bits: REVERSED | OUT,
            ..Slot::default()
        };
        s.set_tcp(&c);
        assert_eq!(s.tcp(), c);
        assert!(s.reversed() && s.dir() == Dir::Out);
    }

    proptest! {
        #[test]
        fn packed_key_agrees_with_tuple_key(
            proto in any::<u8>(),
            src in any::<u32>(),
            dst in any::<u32>(),
            sport in any::<u16>(),
            dport in any::<u16>(),
        ) {
            let t = Tuple {
                proto,
                src: Ipv4Addr::from(src),
                dst: Ipv4Addr::from(dst),
                sport,
                dport,
            };
            let (key, swapped) = t.key();
            let (packed, p_swapped) = Packed::of(&t);
            prop_assert_eq!(swapped, p_swapped);
            let slot = Slot {
                ips: packed.ips,
                ports: packed.ports,
                proto: packed.proto,
                ..Slot::default()
            };
            prop_assert_eq!(slot.flow_key(), key);
            prop_assert_eq!(
                Slot { bits: flag(swapped, REVERSED), ..slot }.tuple(),
                t
            );
        }

        #[test]
        fn robin_hood_invariants_hold(
            cap in 1usize..40,
            seed in any::<u64>(),
            ops in proptest::collection::vec((any::<bool>(), 0u32..60), 0..300),
        ) {
            let mut ct = Conntrack::with_seed(cap, seed);
            for (add, k) in ops {
                let t = udp(k);
                if add {
                    let _ = ct.insert(&t, Dir::Out, 1, &L4::Udp, 10, 0);
                } else if let Some(hit) = ct.lookup(&t, 0) {
                    ct.remove(hit.id);
                }
                prop_assert_eq!(ct.check(), Ok(()));
            }
            let n = ct.len();
            prop_assert_eq!(ct.iter().count(), n);
            let removed = ct.retain(|v| v.tuple.src != Ipv4Addr::new(10, 0, 0, 1));
            prop_assert_eq!(ct.check(), Ok(()));
            prop_assert_eq!(ct.len() + removed, n);
            prop_assert!(ct.iter().all(|v| v.tuple.src != Ipv4Addr::new(10, 0, 0, 1)));
        }

        #[test]
        fn sweeps_keep_invariants(cap in 1usize..40, seed in any::<u64>(), budget in 1usize..10) {
            let mut ct = Conntrack::with_seed(cap, seed);
            for k in 0..u32::try_from(cap).unwrap() {
                // Half of them idle since 0, half refreshed at 100 s.
                ct.insert(&udp(k), Dir::In, 1, &L4::Udp, 1, 0).unwrap();
                if k % 2 == 0 {
                    let hit = ct.lookup(&udp(k), 0).unwrap();
                    ct.track(hit, &L4::Udp, 1, 100_000_000_000).unwrap();
                }
            }
            let now = 100_000_000_000;
            let mut removed = 0;
            for _ in 0..(ct.slots.len() * 2).div_ceil(budget) {
                removed += ct.expire(now, budget);
                prop_assert_eq!(ct.check(), Ok(()));
            }
            prop_assert_eq!(removed, cap / 2);
            prop_assert_eq!(ct.len(), cap.div_ceil(2));
        }
    }
}
