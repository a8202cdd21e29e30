//! The NAT engine ([`Nat`]): one decision per packet, worked out by the
//! pure [`Nat::judge`] and carried out by [`Nat::commit`] (every write:
//! session state, new sessions and mappings, port claims, counters), so a
//! `trace` can judge without changing anything; [`Nat::process`] does both
//! and rewrites the packet.
//!
//! Per packet, by direction (`Out`: from the inside toward the uplink;
//! `In`: from the uplink):
//! * out: the session of the inside 5-tuple, else a new one: the static
//!   1:1 entry of the source address if any (address only, port kept),
//!   else the source endpoint's live mapping (endpoint-independent
//!   mapping), else a new mapping on the pool address the internal
//!   address hashes to (paired pooling), keeping its port if free, else
//!   the first free one from a keyed pseudo-random start. If the
//!   destination is one of our external addresses the packet is
//!   hairpinned: its SNATed form then goes through the `in` half too.
//! * in: the session of the outside 5-tuple, else a new one toward a
//!   public IP's private address (port kept, any remote), or toward a pool
//!   mapping's internal endpoint if the filtering lets the remote in.
//! * ICMP errors match the session of the packet they quote and translate
//!   the outer address and the quote ([`crate::rewrite`]); they change no
//!   session (RFC 4787 REQ-12: they do not end one).
//!
//! Who may open a session: anything but a TCP RST, an ICMP reply or error;
//! from outside, ICMP queries only toward a public IP. A session past its
//! timeout is treated as gone: an outbound packet starts it afresh in its
//! slot (its mapping, still held, is reused: a valid allocation), an
//! inbound one only if the mapping lives on through another session and
//! the filtering lets it in. [`Nat::expire`] sweeps them incrementally; a
//! mapping lives while any session in the table uses it, so it can outlive
//! its last session's timeout until the sweep reaches that session, never
//! the other way round (the RFCs set minimums).
//!
//! Cost (`cargo bench -p nat --bench nat`; a 2-vCPU KVM guest on AMD EPYC
//! with other builds running, where `geneve/parse_1400` took 11.2 ns
//! against the 6.6 ns of docs/PERFORMANCE.md): an established TCP packet
//! of 1400 bytes, judge + commit + rewrite, 70 ns out / 64 ns in at 1k
//! sessions, 115 / 106 ns at 100k (two dependent cache misses: index
//! bucket, session); a new session, judge + commit with its mapping and
//! port, 154-156 ns (107 ns on an existing mapping) while the table fills
//! from 0 to 100k of 128k; the rewrite alone 15.5 ns.

use std::net::{Ipv4Addr, SocketAddrV4};

use crate::clock::{idle_ticks, tick_of, ticks_of_secs};
use crate::config::{ConfigError, Filtering, NatConfig};
use crate::decision::{Decision, Found, Half, How, Stale, Step, Verdict, Why};
use crate::index::{ConfigMap, Hasher, splitmix};
use crate::packet::{self, L4, PROTO_ICMP, PROTO_TCP, PROTO_UDP, Parsed, Tuple};
use crate::ports::PortMap;
use crate::rewrite::{self, ErrorRewrite, L4Csum, Rewrite, Translation};
use crate::state::{self, Dir, FIN_IN, FIN_OUT, SessionState};
use crate::table::{HAIRPIN, INBOUND, Key, STATIC, Session, Side, Tables};
use crate::view::NatCounters;

/// Sessions visited per [`Nat::tick`].
const EXPIRE_BUDGET: usize = 1024;

/// Index of a protocol in per-protocol arrays: TCP, UDP, ICMP.
pub(crate) fn proto_idx(proto: u8) -> Option<usize> {
    match proto {
        PROTO_TCP => Some(0),
        PROTO_UDP => Some(1),
        PROTO_ICMP => Some(2),
        _ => None,
    }
}

/// The remote port as keys hold it: ICMP has none (the identifier is the
/// local "port").
fn rport(proto: u8, port: u16) -> u16 {
    if proto == PROTO_ICMP { 0 } else { port }
}

fn sa(ip: u32, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::from(ip), port)
}

/// The address maps (keys from the configuration).
pub(crate) type AddrMap<V> = ConfigMap<u32, V>;

/// Who an external address belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owner {
    /// The pool address at this index.
    Pool(u16),
    /// A public IP, for this private address.
    Public(u32),
}

/// The pool index internal address `ip` uses: jump consistent hashing
/// (Lamping & Veach) of a fixed mix of the address, so it is the same
/// across restarts and appending an address moves only 1/n of the
/// internal addresses.
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap,
    clippy::cast_precision_loss,
    reason = "jump hash: the bucket is below n <= MAX_POOL; the float is its scaled step"
)]
pub(crate) fn choose(ip: u32, n: usize) -> usize {
    if n <= 1 {
        return 0;
    }
    let mut key = {
        let mut s = u64::from(ip) ^ 0x6e61_745f_706f_6f6c;
        splitmix(&mut s)
    };
    let (mut b, mut j) = (-1i64, 0i64);
    while j < n as i64 {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b.max(0) as usize
}

/// Lookups derived from a configuration.
#[derive(Debug, Clone, Default)]
pub(crate) struct Derived {
    /// Every external address: pool and public.
    pub owners: AddrMap<Owner>,
    /// Private address -> public address.
    pub privates: AddrMap<u32>,
}

impl Derived {
    fn of(c: &NatConfig) -> Derived {
        let mut d = Derived::default();
        for (i, ip) in c.pool.iter().enumerate() {
            let i = u16::try_from(i).unwrap_or(u16::MAX);
            d.owners.insert(u32::from(*ip), Owner::Pool(i));
        }
        for s in &c.statics {
            d.owners
                .insert(u32::from(s.public), Owner::Public(u32::from(s.private)));
            d.privates.insert(u32::from(s.private), u32::from(s.public));
        }
        d
    }

    /// Whether session `s` is what configuration `c` would make of its
    /// traffic now (else a configuration change removes it, and restore
    /// skips it).
    pub fn fits(&self, c: &NatConfig, s: &Session) -> bool {
        if proto_idx(s.proto).is_none() {
            return false;
        }
        if (s.flags & HAIRPIN != 0) != self.owners.contains_key(&s.rem_ip) {
            return false;
        }
        let static_of = self.privates.get(&s.int_ip);
        if s.is_static() {
            return static_of == Some(&s.ext_ip) && s.ext_port == s.int_port;
        }
        if static_of.is_some() {
            return false;
        }
        let pool = choose(s.int_ip, c.pool.len());
        c.pool.get(pool).map(|ip| u32::from(*ip)) == Some(s.ext_ip)
            && (s.proto == PROTO_ICMP || c.port_range.contains(s.ext_port))
    }
}

/// Port maps of one pool address: TCP, UDP, ICMP identifiers.
fn port_maps(c: &NatConfig) -> [PortMap; 3] {
    let r = c.port_range;
    [
        PortMap::new(r.first, r.last),
        PortMap::new(r.first, r.last),
        PortMap::new(0, u16::MAX),
    ]
}

/// A half that could not be made.
#[derive(Debug, Clone, Copy)]
struct Refusal {
    why: Why,
    stale: Option<Stale>,
    exhausted: Option<(u16, u8)>,
}

impl Refusal {
    fn new(why: Why) -> Refusal {
        Refusal {
            why,
            stale: None,
            exhausted: None,
        }
    }

    fn stale(why: Why, slot: u32, key: Key) -> Refusal {
        Refusal {
            why,
            stale: Some(Stale { slot, key }),
            exhausted: None,
        }
    }

    fn decision(self, dir: Dir) -> Decision {
        let mut d = Decision::drop(dir, self.why);
        d.stale = self.stale;
        d.exhausted = self.exhausted;
        d
    }
}

/// What a packet is, as far as opening a session goes.
#[derive(Debug, Clone, Copy)]
struct Pkt {
    proto: u8,
    tcp_flags: u8,
    /// An ICMP query that asks (echo request, ...).
    request: bool,
}

impl Pkt {
    fn of(p: &Parsed) -> Pkt {
        let (tcp_flags, request) = match p.l4 {
            L4::Tcp { flags } => (flags, false),
            L4::IcmpQuery { icmp_type } => (0, packet::is_request_type(icmp_type)),
            _ => (0, false),
        };
        Pkt {
            proto: p.tuple.proto,
            tcp_flags,
            request,
        }
    }

    /// Whether the packet, going `dir`, fits session `s`: ICMP queries
    /// go from the side that opened it, replies the other way (an echo
    /// request from the remote does not ride an outbound ping's session).
    #[inline(always)]
    fn fits(&self, s: &Session, dir: Dir) -> bool {
        if self.proto != PROTO_ICMP {
            return true;
        }
        let opened_in = s.flags & INBOUND != 0;
        self.request == (opened_in == (dir == Dir::In))
    }

    fn opens(&self) -> bool {
        match self.proto {
            PROTO_ICMP => self.request,
            _ => state::opens(self.proto, self.tcp_flags),
        }
    }
}

/// The NAT (see the module docs).
#[derive(Debug)]
pub struct Nat {
    pub(crate) config: NatConfig,
    pub(crate) derived: Derived,
    pub(crate) tables: Tables,
    /// Keys the port probe start.
    hasher: Hasher,
    /// Per pool address (config order): TCP, UDP, ICMP.
    pub(crate) ports: Vec<[PortMap; 3]>,
    pub(crate) timeouts: [u32; SessionState::COUNT],
    pub(crate) counters: NatCounters,
    /// Sessions per protocol: TCP, UDP, ICMP.
    pub(crate) per_proto: [u32; 3],
    cursor: usize,
}

/// 64 random bits from the standard library's per-process hash keys.
fn random_seed() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(0x006e_6174_u64)
}

impl Nat {
    /// A NAT for `capacity` sessions (all memory allocated now), hashing
    /// with a random seed.
    pub fn new(capacity: usize, config: NatConfig) -> Result<Nat, ConfigError> {
        Nat::with_seed(capacity, config, random_seed())
    }

    /// [`Nat::new`] with a given hash seed (tests, replays).
    pub fn with_seed(capacity: usize, config: NatConfig, seed: u64) -> Result<Nat, ConfigError> {
        config.validate()?;
        let mut s = seed;
        let mut nat = Nat {
            derived: Derived::of(&config),
            tables: Tables::new(capacity, splitmix(&mut s)),
            hasher: Hasher::new(splitmix(&mut s)),
            ports: config.pool.iter().map(|_| port_maps(&config)).collect(),
            timeouts: [0; SessionState::COUNT],
            counters: NatCounters::default(),
            per_proto: [0; 3],
            cursor: 0,
            config,
        };
        nat.set_timeouts();
        let adf = nat.config.filtering == Filtering::AddressDependent;
        nat.tables.track_permits(adf);
        Ok(nat)
    }

    fn set_timeouts(&mut self) {
        for (c, t) in self.timeouts.iter_mut().enumerate() {
            let st = SessionState::from_code(u8::try_from(c).unwrap_or(u8::MAX));
            *t = ticks_of_secs(st.timeout_secs(&self.config.timeouts));
        }
    }

    pub fn config(&self) -> &NatConfig {
        &self.config
    }

    /// Replaces the configuration. Sessions it no longer produces are
    /// removed (a static entry removed or changed, a private address that
    /// gained a static entry, a pool address removed or no longer the
    /// internal address's choice, a port outside the new range, a remote
    /// that became or stopped being one of our addresses), so the next
    /// packet of theirs is judged anew. New timeouts and filtering apply to
    /// the remaining sessions. Returns how many were removed.
    pub fn set_config(&mut self, config: NatConfig) -> Result<usize, ConfigError> {
        config.validate()?;
        let derived = Derived::of(&config);
        let mut removed = 0;
        let mut i = 0;
        while i < self.tables.len() {
            let fits = self
                .tables
                .session(u32::try_from(i).unwrap_or(u32::MAX))
                .is_some_and(|s| derived.fits(&config, s));
            if fits {
                i += 1;
            } else {
                self.remove_slot(u32::try_from(i).unwrap_or(u32::MAX));
                removed += 1;
            }
        }
        // Port maps for the new pool and range, from the remaining mappings;
        // failure counts follow their address.
        let mut ports: Vec<[PortMap; 3]> = config.pool.iter().map(|_| port_maps(&config)).collect();
        for (i, ip) in config.pool.iter().enumerate() {
            if let Some(Owner::Pool(old)) = self.derived.owners.get(&u32::from(*ip))
                && let Some(old) = self.ports.get(usize::from(*old))
            {
                for (new, old) in ports[i].iter_mut().zip(old) {
                    new.failures = old.failures;
                }
            }
        }
        for m in &self.tables.mappings {
            if let (Some(Owner::Pool(p)), Some(pi)) =
                (derived.owners.get(&m.ext_ip), proto_idx(m.proto))
                && let Some(maps) = ports.get_mut(usize::from(*p))
            {
                maps[pi].claim(m.ext_port);
            }
        }
        self.ports = ports;
        self.derived = derived;
        self.config = config;
        self.set_timeouts();
        let adf = self.config.filtering == Filtering::AddressDependent;
        self.tables.track_permits(adf);
        self.counters.removed_config += removed as u64;
        Ok(removed)
    }

    /// Decides on `pkt` (an IPv4 packet from its header on) travelling
    /// `dir` at `now_ns`, carries the decision out and rewrites the packet
    /// ([`Nat::judge`], [`Nat::commit`], [`rewrite::apply`]).
    #[inline]
    pub fn process(&mut self, dir: Dir, pkt: &mut [u8], now_ns: u64) -> Verdict {
        self.process_with(dir, pkt, now_ns, L4Csum::Complete)
    }

    /// [`Nat::process`] for a packet whose transport checksum is as `csum`
    /// says (checksum offload).
    #[inline]
    pub fn process_with(&mut self, dir: Dir, pkt: &mut [u8], now_ns: u64, csum: L4Csum) -> Verdict {
        let d = self.judge(dir, pkt, now_ns);
        let v = self.commit(&d, now_ns);
        if let Verdict::Translate(t) = &v
            && rewrite::apply(pkt, t, csum).is_err()
        {
            // Not reached: the judgement read the same bytes.
            let r = crate::DropReason::Malformed;
            self.counters.drops[r as usize] += 1;
            return Verdict::Drop(r);
        }
        v
    }

    /// What the NAT decides for `pkt` travelling `dir` at `now_ns`, and
    /// why, changing nothing. [`Nat::commit`] carries it out.
    #[inline]
    pub fn judge(&self, dir: Dir, pkt: &[u8], now_ns: u64) -> Decision {
        // Borrowed in place, not moved out: no copy of the parsed fields.
        match &packet::parse(pkt) {
            Ok(p) => self.judge_parsed(dir, p, now_ns),
            Err(e) => Decision::drop(dir, Why::Parse(*e)),
        }
    }

    /// [`Nat::judge`] for a packet already read by [`packet::parse`].
    #[inline]
    pub fn judge_parsed(&self, dir: Dir, p: &Parsed, now_ns: u64) -> Decision {
        let now = tick_of(now_ns);
        match (dir, p.l4) {
            (_, L4::IcmpError { inner }) => self.judge_error(dir, &p.tuple, &inner, now),
            (Dir::Out, _) => self.judge_out(p, now),
            (Dir::In, _) => self.judge_in(p, now),
        }
    }

    #[inline(always)]
    fn judge_out(&self, p: &Parsed, now: u32) -> Decision {
        let t = &p.tuple;
        let k = Pkt::of(p);
        let int = SocketAddrV4::new(t.src, t.sport);
        let rem = SocketAddrV4::new(t.dst, rport(t.proto, t.dport));
        let (out, hairpin) = match self.out_half(k, int, rem, now, 0) {
            Ok(h) => h,
            Err(r) => return r.decision(Dir::Out),
        };
        let mut rw = Rewrite {
            src: Some(out.outside),
            dst: None,
        };
        let mut halves = [Some(out), None];
        if hairpin {
            // The SNATed packet comes back in, to whatever is at its destination.
            let pending = usize::from(matches!(out.step, Step::Create { .. }));
            let lport = if t.proto == PROTO_ICMP {
                out.outside.port()
            } else {
                t.dport
            };
            let local = SocketAddrV4::new(t.dst, lport);
            let from = SocketAddrV4::new(*out.outside.ip(), rport(t.proto, out.outside.port()));
            let inh = match self.in_half(k, local, from, now, pending) {
                Ok(h) => h,
                Err(r) => return r.decision(Dir::Out),
            };
            if inh.inside == out.inside {
                return Decision::drop(Dir::Out, Why::SelfHairpin);
            }
            rw.dst = Some(inh.inside);
            halves[1] = Some(inh);
        }
        Decision {
            dir: Dir::Out,
            verdict: Verdict::Translate(Translation::Packet(rw)),
            halves,
            why: None,
            icmp_error: false,
            stale: None,
            exhausted: None,
        }
    }

    #[inline(always)]
    fn judge_in(&self, p: &Parsed, now: u32) -> Decision {
        let t = &p.tuple;
        let local = SocketAddrV4::new(t.dst, t.dport);
        let rem = SocketAddrV4::new(t.src, rport(t.proto, t.sport));
        match self.in_half(Pkt::of(p), local, rem, now, 0) {
            Ok(h) => Decision {
                dir: Dir::In,
                verdict: Verdict::Translate(Translation::Packet(Rewrite {
                    src: None,
                    dst: Some(h.inside),
                })),
                halves: [Some(h), None],
                why: None,
                icmp_error: false,
                stale: None,
                exhausted: None,
            },
            Err(r) => r.decision(Dir::In),
        }
    }

    /// A live session's next state for a packet travelling `dir` with
    /// `tcp_flags`, and the step that refreshes it; `None` when it is idle
    /// past its timeout.
    #[inline(always)]
    fn refresh(
        &self,
        s: &Session,
        slot: u32,
        dir: Dir,
        tcp_flags: u8,
        now: u32,
    ) -> Option<(SessionState, Step)> {
        if self.expired(s, now) {
            return None;
        }
        let st = SessionState::from_code(s.state);
        let (next, fins) = state::next(st, s.flags & (FIN_OUT | FIN_IN), dir, tcp_flags);
        let step = Step::Refresh {
            slot,
            state: next as u8,
            fins,
            renew: None,
        };
        Some((next, step))
    }

    /// Whether session `s` is idle past its state's timeout.
    #[inline(always)]
    fn expired(&self, s: &Session, now: u32) -> bool {
        let limit = self
            .timeouts
            .get(usize::from(s.state))
            .copied()
            .unwrap_or(0);
        idle_ticks(s.seen, now) > limit
    }

    /// The SNAT half: the session of inside endpoint `int` with remote
    /// `rem`, found or made. Also says whether the remote is one of our
    /// external addresses (a hairpin). `pending`: sessions the decision
    /// creates before this one.
    #[inline(always)]
    fn out_half(
        &self,
        k: Pkt,
        int: SocketAddrV4,
        rem: SocketAddrV4,
        now: u32,
        pending: usize,
    ) -> Result<(Half, bool), Refusal> {
        let proto = k.proto;
        let key = Key::of(proto, int, rem);
        let half = |outside, found, step| Half {
            dir: Dir::Out,
            proto,
            inside: int,
            outside,
            remote: rem,
            found,
            step,
        };
        if let Some(slot) = self.tables.find_in(&key)
            && let Some(s) = self.tables.session(slot)
        {
            let outside = sa(s.ext_ip, s.ext_port);
            let hairpin = s.flags & HAIRPIN != 0;
            if !k.fits(s, Dir::Out) {
                return Err(Refusal::new(Why::NoSession));
            }
            if let Some((next, step)) = self.refresh(s, slot, Dir::Out, k.tcp_flags, now) {
                return Ok((half(outside, Found::Session(next), step), hairpin));
            }
            if !k.opens() {
                return Err(Refusal::stale(Why::NoSession, slot, key));
            }
            // Past its timeout: a new session in its slot, on its mapping.
            let st = state::first(proto, Dir::Out);
            let how = if s.is_static() {
                How::Static
            } else {
                How::Mapping
            };
            let found = Found::New {
                how,
                state: st,
                renewed: true,
            };
            let step = Step::Refresh {
                slot,
                state: st as u8,
                fins: 0,
                renew: Some(0),
            };
            return Ok((half(outside, found, step), hairpin));
        }
        if !k.opens() {
            return Err(Refusal::new(Why::NoSession));
        }
        if self.tables.len() + pending >= self.tables.capacity() {
            return Err(Refusal::new(Why::TableFull));
        }
        let Some(pi) = proto_idx(proto) else {
            return Err(Refusal::new(Why::NoSession));
        };
        let hairpin = self.derived.owners.contains_key(&key.rem_ip);
        let mut flags = if hairpin { HAIRPIN } else { 0 };
        let side = Side {
            proto,
            ip: key.ip,
            port: key.port,
        };
        let ((ext_ip, ext_port), how, claim) = if let Some(&public) =
            self.derived.privates.get(&key.ip)
        {
            flags |= STATIC;
            ((public, key.port), How::Static, None)
        } else if let Some(m) = self.tables.find_map_in(&side) {
            ((m.ext_ip, m.ext_port), How::Mapping, None)
        } else {
            let pool = choose(key.ip, self.config.pool.len());
            let (Some(ip), Some(maps)) = (self.config.pool.get(pool), self.ports.get(pool)) else {
                return Err(Refusal::new(Why::NoMapping));
            };
            let pool16 = u16::try_from(pool).unwrap_or(u16::MAX);
            let pi8 = u8::try_from(pi).unwrap_or(u8::MAX);
            let start = self.port_start(&side);
            match maps[pi].find(key.port, start) {
                Some(port) => (
                    (u32::from(*ip), port),
                    How::Allocated {
                        preserved: port == key.port,
                    },
                    Some((pool16, pi8, port)),
                ),
                None => {
                    return Err(Refusal {
                        why: Why::Exhausted { ext_ip: *ip },
                        stale: None,
                        exhausted: Some((pool16, pi8)),
                    });
                }
            }
        };
        let found = Found::New {
            how,
            state: state::first(proto, Dir::Out),
            renewed: false,
        };
        let step = Step::Create { flags, claim };
        Ok((half(sa(ext_ip, ext_port), found, step), hairpin))
    }

    /// Where a new mapping of `side` starts probing for a free port: keyed,
    /// so outsiders cannot predict it; fixed per internal endpoint.
    #[allow(
        clippy::cast_possible_truncation,
        reason = "a port: the hash's top 16 bits"
    )]
    fn port_start(&self, side: &Side) -> u16 {
        let h = self.hasher.hash(
            (u64::from(side.ip) << 16) | u64::from(side.port),
            u64::from(side.proto),
        );
        (h >> 48) as u16
    }

    /// The DNAT half: the session of outside endpoint `ext` with remote
    /// `rem`, found or made.
    #[inline(always)]
    fn in_half(
        &self,
        k: Pkt,
        ext: SocketAddrV4,
        rem: SocketAddrV4,
        now: u32,
        pending: usize,
    ) -> Result<Half, Refusal> {
        let proto = k.proto;
        let key = Key::of(proto, ext, rem);
        let half = |inside, found, step| Half {
            dir: Dir::In,
            proto,
            inside,
            outside: ext,
            remote: rem,
            found,
            step,
        };
        let side = Side {
            proto,
            ip: key.ip,
            port: key.port,
        };
        let adf = self.config.filtering == Filtering::AddressDependent;
        if let Some(slot) = self.tables.find_out(&key)
            && let Some(s) = self.tables.session(slot)
        {
            let inside = sa(s.int_ip, s.int_port);
            let in_key = s.in_key();
            if !k.fits(s, Dir::In) {
                return Err(Refusal::new(Why::NoSession));
            }
            if let Some((next, step)) = self.refresh(s, slot, Dir::In, k.tcp_flags, now) {
                return Ok(half(inside, Found::Session(next), step));
            }
            // Past its timeout: only a packet that may open a session, to
            // a mapping that lives on without this one and lets it in.
            if !k.opens() {
                return Err(Refusal::stale(Why::NoSession, slot, in_key));
            }
            let how = if s.is_static() {
                How::Static
            } else {
                let refs = self.tables.find_map_out(&side).map_or(0, |m| m.refs);
                if proto == PROTO_ICMP || refs <= 1 {
                    return Err(Refusal::stale(Why::NoMapping, slot, in_key));
                }
                if adf && self.tables.permit_count(&side, key.rem_ip) <= 1 {
                    return Err(Refusal::stale(Why::Filtered, slot, in_key));
                }
                How::Mapping
            };
            let st = state::first(proto, Dir::In);
            let found = Found::New {
                how,
                state: st,
                renewed: true,
            };
            let step = Step::Refresh {
                slot,
                state: st as u8,
                fins: 0,
                renew: Some(INBOUND),
            };
            return Ok(half(inside, found, step));
        }
        if !k.opens() {
            return Err(Refusal::new(Why::NoSession));
        }
        let hairpin = if self.derived.owners.contains_key(&key.rem_ip) {
            HAIRPIN
        } else {
            0
        };
        let (int_ip, int_port, flags, how) = match self.derived.owners.get(&key.ip) {
            Some(&Owner::Public(private)) => (private, key.port, STATIC, How::Static),
            Some(Owner::Pool(_)) if proto != PROTO_ICMP => {
                let Some(m) = self.tables.find_map_out(&side) else {
                    return Err(Refusal::new(Why::NoMapping));
                };
                if adf && self.tables.permit_count(&side, key.rem_ip) == 0 {
                    return Err(Refusal::new(Why::Filtered));
                }
                (m.int_ip, m.int_port, 0, How::Mapping)
            }
            _ => return Err(Refusal::new(Why::NoMapping)),
        };
        if self.tables.len() + pending >= self.tables.capacity() {
            return Err(Refusal::new(Why::TableFull));
        }
        let found = Found::New {
            how,
            state: state::first(proto, Dir::In),
            renewed: false,
        };
        let step = Step::Create {
            flags: flags | INBOUND | hairpin,
            claim: None,
        };
        Ok(half(sa(int_ip, int_port), found, step))
    }

    /// An ICMP error: matched by the packet it quotes, `q`, as that packet
    /// was sent. From outside it quotes one of our packets (its source is
    /// our external endpoint); from inside, one an inside host received
    /// (its destination is the internal endpoint) — then, if the error
    /// goes to one of our external addresses, it is hairpinned on to the
    /// inside host that sent the quoted packet.
    fn judge_error(&self, dir: Dir, outer: &Tuple, q: &Tuple, now: u32) -> Decision {
        let live = |slot: Option<u32>| {
            slot.and_then(|i| self.tables.session(i))
                .filter(|s| !self.expired(s, now))
        };
        let related = |dir, s: &Session| Half {
            dir,
            proto: s.proto,
            inside: sa(s.int_ip, s.int_port),
            outside: sa(s.ext_ip, s.ext_port),
            remote: sa(s.rem_ip, s.rem_port),
            found: Found::Related(SessionState::from_code(s.state)),
            step: Step::None,
        };
        let out_key = |ip: Ipv4Addr, port: u16, rem: Ipv4Addr, rem_port: u16| Key {
            proto: q.proto,
            ip: u32::from(ip),
            port,
            rem_ip: u32::from(rem),
            rem_port: rport(q.proto, rem_port),
        };
        let mut rw = ErrorRewrite::default();
        let mut halves = [None, None];
        match dir {
            Dir::In => {
                let key = out_key(q.src, q.sport, q.dst, q.dport);
                let Some(s) = live(self.tables.find_out(&key)) else {
                    return Decision::drop(dir, Why::NoSession);
                };
                rw.outer_dst = Some(Ipv4Addr::from(s.int_ip));
                rw.inner_src = Some(sa(s.int_ip, s.int_port));
                halves[0] = Some(related(Dir::In, s));
            }
            Dir::Out => {
                let key = out_key(q.dst, q.dport, q.src, q.sport);
                let Some(s) = live(self.tables.find_in(&key)) else {
                    return Decision::drop(dir, Why::NoSession);
                };
                rw.outer_src = Some(Ipv4Addr::from(s.ext_ip));
                rw.inner_dst = Some(sa(s.ext_ip, s.ext_port));
                halves[0] = Some(related(Dir::Out, s));
                if s.flags & HAIRPIN != 0 && self.derived.owners.contains_key(&u32::from(outer.dst))
                {
                    // The quoted packet, as its sender sent it: to our external endpoint.
                    let ext = Ipv4Addr::from(s.ext_ip);
                    let key = out_key(q.src, q.sport, ext, s.ext_port);
                    let Some(a) = live(self.tables.find_out(&key)) else {
                        return Decision::drop(dir, Why::NoSession);
                    };
                    rw.outer_dst = Some(Ipv4Addr::from(a.int_ip));
                    rw.inner_src = Some(sa(a.int_ip, a.int_port));
                    halves[1] = Some(related(Dir::In, a));
                }
            }
        }
        Decision {
            dir,
            verdict: Verdict::Translate(Translation::IcmpError(rw)),
            halves,
            why: None,
            icmp_error: true,
            stale: None,
            exhausted: None,
        }
    }

    /// Carries out `d` (from [`Nat::judge`] on this NAT, nothing changed
    /// in between): session writes, new sessions and mappings, counters.
    /// Returns the final verdict: the judged one, unless a write it counted
    /// on fails after all (not reached when nothing changed in between).
    #[inline]
    pub fn commit(&mut self, d: &Decision, now_ns: u64) -> Verdict {
        let now = tick_of(now_ns);
        let mut failed = None;
        // The discriminant only: the verdict itself is read once the writes
        // are done (read at once, its bytes would wait for the judgement's
        // stores to land).
        if matches!(d.verdict, Verdict::Translate(_)) {
            for h in d.halves.iter().flatten() {
                if let Err(why) = self.write(h, now) {
                    failed = Some(why.reason());
                    break;
                }
            }
        }
        if let Some(st) = d.stale {
            self.remove_stale(st, now);
        }
        let v = match failed {
            Some(r) => Verdict::Drop(r),
            None => d.verdict,
        };
        match v {
            Verdict::Translate(_) => {
                let c = &mut self.counters;
                match d.dir {
                    Dir::Out => c.translated_out += 1,
                    Dir::In => c.translated_in += 1,
                }
                c.hairpinned += u64::from(d.is_hairpin());
                c.icmp_errors += u64::from(d.icmp_error);
            }
            Verdict::Drop(r) => {
                self.counters.drops[r as usize] += 1;
                if r == crate::DropReason::Exhausted
                    && let Some((pool, pi)) = d.exhausted
                    && let Some(maps) = self.ports.get_mut(usize::from(pool))
                    && let Some(m) = maps.get_mut(usize::from(pi))
                {
                    m.failures += 1;
                }
            }
        }
        v
    }

    /// One half's table write.
    #[inline(always)]
    fn write(&mut self, h: &Half, now: u32) -> Result<(), Why> {
        match h.step {
            Step::None => Ok(()),
            Step::Refresh {
                slot,
                state,
                fins,
                renew,
            } => {
                let key = h.key();
                let slot = match self.tables.session(slot) {
                    Some(s) if s.in_key() == key => slot,
                    _ => self.tables.find_in(&key).ok_or(Why::NoSession)?,
                };
                let s = self.tables.session_mut(slot).ok_or(Why::NoSession)?;
                s.state = state;
                s.flags = (s.flags & !(FIN_OUT | FIN_IN)) | fins;
                if let Some(inbound) = renew {
                    s.flags = (s.flags & !INBOUND) | inbound;
                }
                s.seen = now;
                Ok(())
            }
            Step::Create { flags, claim } => {
                let mut s = h.session(flags);
                if let Some((pool, pi, port)) = claim {
                    let m = self
                        .ports
                        .get_mut(usize::from(pool))
                        .and_then(|m| m.get_mut(usize::from(pi)));
                    let Some(m) = m.filter(|m| m.is_free(port)) else {
                        return Err(Why::Exhausted {
                            ext_ip: *h.outside.ip(),
                        });
                    };
                    m.claim(port);
                }
                s.seen = now;
                if self.tables.insert(s).is_none() {
                    if let Some((pool, pi, port)) = claim
                        && let Some(m) = self.ports.get_mut(usize::from(pool))
                    {
                        m[usize::from(pi)].release(port);
                    }
                    return Err(Why::TableFull);
                }
                if let Some(pi) = proto_idx(s.proto) {
                    self.per_proto[pi] += 1;
                }
                self.counters.created += 1;
                Ok(())
            }
        }
    }

    fn remove_stale(&mut self, st: Stale, now: u32) {
        let slot = match self.tables.session(st.slot) {
            Some(s) if s.in_key() == st.key => Some(st.slot),
            _ => self.tables.find_in(&st.key),
        };
        if let Some(slot) = slot
            && self
                .tables
                .session(slot)
                .is_some_and(|s| self.expired(s, now))
        {
            self.remove_slot(slot);
            self.counters.expired += 1;
        }
    }

    /// Removes the session in `slot`, freeing its mapping's port if it was
    /// the last user.
    pub(crate) fn remove_slot(&mut self, slot: u32) {
        let Some((s, freed)) = self.tables.remove(slot) else {
            return;
        };
        if let Some(pi) = proto_idx(s.proto) {
            self.per_proto[pi] = self.per_proto[pi].saturating_sub(1);
        }
        if let Some(f) = freed
            && let Some(Owner::Pool(p)) = self.derived.owners.get(&f.ext_ip)
            && let Some(maps) = self.ports.get_mut(usize::from(*p))
            && let Some(pi) = proto_idx(f.proto)
        {
            maps[pi].release(f.ext_port);
        }
    }

    /// Incremental sweep: visits at most `budget` sessions (and no session
    /// twice) from where the last call stopped and removes those idle past their timeout (and
    /// mappings left without a session). Returns how many it removed.
    pub fn expire(&mut self, now_ns: u64, budget: usize) -> usize {
        let now = tick_of(now_ns);
        let mut removed = 0;
        let mut c = self.cursor;
        // Each session once at most per call.
        for _ in 0..budget.min(self.tables.len()) {
            let n = self.tables.len();
            if n == 0 {
                break;
            }
            if c >= n {
                c = 0;
            }
            let dead = self
                .tables
                .session(u32::try_from(c).unwrap_or(u32::MAX))
                .is_some_and(|s| self.expired(s, now));
            if dead {
                // The last session moves into `c`: look at it next.
                self.remove_slot(u32::try_from(c).unwrap_or(u32::MAX));
                removed += 1;
            } else {
                c += 1;
            }
        }
        self.cursor = c;
        self.counters.expired += removed as u64;
        removed
    }

    /// Housekeeping to call about once per batch ([`Nat::expire`] with a
    /// fixed budget).
    pub fn tick(&mut self, now_ns: u64) {
        self.expire(now_ns, EXPIRE_BUDGET);
    }

    /// What is behind external endpoint `ext` for protocol `proto`: a
    /// public IP's private address (same port), or a live mapping's
    /// internal endpoint. For the datapath's hairpin and "is it ours"
    /// questions; [`Nat::judge`] uses the same lookups.
    pub fn lookup_external(&self, proto: u8, ext: SocketAddrV4) -> Option<SocketAddrV4> {
        let ip = u32::from(*ext.ip());
        match self.derived.owners.get(&ip)? {
            Owner::Public(private) => Some(sa(*private, ext.port())),
            Owner::Pool(_) => {
                let side = Side {
                    proto,
                    ip,
                    port: ext.port(),
                };
                self.tables
                    .find_map_out(&side)
                    .map(|m| sa(m.int_ip, m.int_port))
            }
        }
    }

    /// Whether `ip` is one of our external addresses (pool or public).
    pub fn is_external(&self, ip: Ipv4Addr) -> bool {
        self.derived.owners.contains_key(&u32::from(ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choose_is_stable_and_spreads() {
        let mut counts = [0usize; 4];
        for i in 0..4000u32 {
            let c = choose(0x0a00_0000 + i, 4);
            counts[c] += 1;
            assert_eq!(c, choose(0x0a00_0000 + i, 4));
        }
        for c in counts {
            assert!((800..1200).contains(&c), "{counts:?}");
        }
        // Appending a pool address moves only those that now choose it.
        for i in 0..4000u32 {
            let (a, b) = (choose(0x0a00_0000 + i, 4), choose(0x0a00_0000 + i, 5));
            assert!(a == b || b == 4);
        }
        assert_eq!(choose(1, 1), 0);
    }
}
