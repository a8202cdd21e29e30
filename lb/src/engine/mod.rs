//! The load balancer's engine: an L4 balancer with IPVS's semantics
//! (keepalived's `virtual_server`s), sans-IO, owned by one datapath
//! thread: no lock, no allocation, log or syscall per packet (every table
//! is allocated for its capacity by [`Balancer::new`]); time is passed in
//! as `now_ns` (monotonic nanoseconds).
//!
//! # The API the datapath uses
//!
//! ```text
//! let mut lb = Balancer::new(capacity);            // all memory, once
//! lb.set_default_snat_ip(Some(uplink_ip));         // full NAT without snat_ip
//! lb.set_services(&services, now_ns)?;             // config + liveness, any time
//!
//! // A packet to a virtual address (lb.is_vip(dst) / lb.is_service(..)):
//! let d = lb.forward(pkt, now_ns);                 // pkt: IPv4, from its header
//! // A packet from a real server (lb.is_real_server(..)), or to a SNAT address:
//! let d = lb.reverse(pkt, now_ns);
//! match d.verdict {
//!     Verdict::Translate(t) => apply(pkt, &t, L4Csum::Complete)?, // in place
//!     Verdict::Pass(_) => {}                       // not the balancer's
//!     Verdict::Drop(reason) => {}                  // counted here; drop it
//! }
//! let d = lb.peek(pkt, now_ns);                    // trace: the same, changing nothing
//! lb.tick(now_ns);                                 // every batch: bounded expiry
//! lb.estimate(now_ns);                             // every ~2 s: rates
//! let v = lb.view(now_ns);                         // ipvsadm -Ln / --stats / --rate
//! ```
//!
//! [`Verdict::Translate`] carries a [`nat::Translation`] (the NAT
//! engine's type; [`apply`] is its in-place rewrite with incremental
//! checksums), so a datapath that already applies the NAT's translations
//! applies the balancer's the same way.
//!
//! # What it does
//!
//! * Forward (client to virtual server): the connection of (protocol,
//!   client, virtual address and port); if none and the packet may open
//!   one (a TCP SYN without ACK, any UDP datagram), a real server is
//!   chosen (persistence template, else the scheduler; the sorry server
//!   below quorum or when none can take it) and the connection made. NAT:
//!   the destination becomes the real server; full NAT: the source also
//!   becomes (SNAT address, a port unique per (SNAT address, protocol,
//!   real server)). Another TCP segment of no connection is dropped
//!   ([`DropReason::NoConnection`]).
//! * Reverse (real server to client): the connection of the reply's
//!   5-tuple; the source becomes the virtual server (full NAT: the
//!   destination the client). ICMP errors about a balanced connection are
//!   translated both ways, outer header and quoted packet.
//! * Configuration ([`Balancer::set_services`]): existing connections keep
//!   their real server whatever happens to it (removed, down, weight 0:
//!   they run until they end, and their counters stay with the server);
//!   scheduler state is kept where the virtual server and its servers
//!   remain.
//! * `lc`/`wlc`/`sed`/`nq` and the locality schedulers count the
//!   connections *this* balancer holds: with one balancer per agent, each
//!   balances on its own share of the load.
//! * Persistence (`persist`): IPVS templates. When a template's server
//!   can no longer take new connections (weight 0, down, removed) the
//!   template is dropped and the client scheduled anew (IPVS's
//!   `expire_quiescent_template` behaviour); the sorry server makes no
//!   template.
//! * Quorum (keepalived): the total weight of live servers is compared
//!   with `quorum`: below `quorum - hysteresis` (or 0) the virtual server
//!   goes down, at `quorum + hysteresis` up again; while down, every new
//!   connection goes to the sorry server (or is dropped without one). A
//!   new virtual server starts up, then the down rule applies.
//!
//! Files: `sched` the schedulers, [`maglev`] Maglev, `table` the
//! connections, `persist` the templates, [`state`] TCP states and
//! timeouts, [`stats`] counters and rates, [`view`] what is shown,
//! [`decision`] the per-packet decision, `config` the configuration swap,
//! `path` the per-packet decisions and their commits. The rewrite is the
//! NAT's ([`apply`]), and the tables are built on the NAT engine's kit: its
//! keyed hash index and configuration maps (`nat::index`) and tick clock
//! (`nat::clock`).
//!
//! Memory per connection at full load (table, both indexes, one template
//! slot and its index): 40 + 2 x 10 + 28 + 4 + 10 = 102 bytes
//! ([`Balancer::memory_bytes`]).
//!
//! Cost (`cargo bench -p lb --bench lb -- --quick`, 1,000 real servers; a
//! 2-vCPU guest shared with other builds, load average about 1.2, so
//! +-10%): a connection's first packet, `forward` + rewrite, 160-190 ns
//! with rr, wrr, sh, dh, lblc, lblcr, sed, nq, mh; 207-216 ns with lc and
//! wlc (the tournament's path replayed on each count change); 237-249 ns
//! for wlc with full NAT (the SNAT port probe); 180-188 ns for rr with a
//! persistence template. An established packet, 93-96 ns either way at
//! 1k connections, 204-330 ns at 100k (cache misses; the most sensitive
//! to the other builds). A Maglev table for 1,000 servers: 1.5-1.6 ms
//! (equal weights), 4.8-5.0 ms (weights 1..=10).

use std::net::Ipv4Addr;

use control::lb::ForwardKind;

mod config;
pub mod decision;
pub mod maglev;
mod path;
mod persist;
mod sched;
pub mod state;
pub mod stats;
mod table;
pub mod view;

pub use config::check_services;
pub use decision::{Decision, DropReason, How, PassReason, Verdict};
/// Rewrites a packet in place as a [`Translation`] says (every checksum
/// updated incrementally, ICMP errors' quotes too): the NAT engine's
/// rewrite, reused as it is.
pub use nat::rewrite::apply;
pub use nat::{L4Csum, RewriteError, Translation};
pub use path::Flow;
pub use state::{ConnState, Dir, Timeouts};
pub use stats::{Rates, Stats};
pub use view::{ConnView, DetachedView, LbView, RealView, ServiceView, TemplateView};

use nat::index::{ConfigMap, Hasher, splitmix};
// Last-seen times: the NAT's tick clock (`nat::clock`).
pub(crate) use nat::clock::{idle_ticks, tick_of, ticks_of_secs};
use persist::Templates;
use sched::{Member, NONE, Sched};
use stats::Estimator;
use table::Conns;

/// Why a configuration is refused (the balancer keeps the previous one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("virtual server {service} is declared twice")]
    Duplicate { service: String },
    #[error("virtual server {service}: {verdicts} liveness verdicts for {servers} real servers")]
    Liveness {
        service: String,
        verdicts: usize,
        servers: usize,
    },
    #[error("virtual server {service}: persistence_granularity /{granularity} is not 1..=32")]
    Granularity { service: String, granularity: u8 },
    #[error("virtual server {service}: {servers} real servers, at most {max}")]
    TooManyServers {
        service: String,
        servers: usize,
        max: usize,
    },
    #[error(
        "virtual server {service}: full NAT needs a SNAT address (snat_ip, or the balancer's default)"
    )]
    NoSnatIp { service: String },
    #[error("virtual server {service}: real server {server} is listed twice")]
    DuplicateServer { service: String, server: String },
    #[error("virtual server {service}: real server {server} has weight {weight}, above {max}")]
    Weight {
        service: String,
        server: String,
        weight: u32,
        max: u32,
    },
}

/// Most real servers in one virtual server (Maglev keeps positions in 16
/// bits): the model's limit, which validation applies.
pub const MAX_SERVERS: usize = control::lb::MAX_REAL_SERVERS;

/// Connections and templates visited per [`Balancer::tick`].
const EXPIRE_BUDGET: usize = 1024;

/// A virtual server's key: address, port, protocol, packed (and a real
/// server's, the same way, for [`Balancer::is_real_server`]).
pub(crate) fn svc_key(proto: u8, vip: u32, vport: u16) -> u64 {
    (u64::from(vip) << 24) | (u64::from(vport) << 8) | u64::from(proto)
}

/// A virtual server key's protocol, address and port.
pub(crate) fn key_parts(key: u64) -> (u8, u32, u16) {
    let proto = u8::try_from(key & 0xff).unwrap_or(0);
    let ip = u32::try_from(key >> 24).unwrap_or(0);
    let port = u16::try_from((key >> 8) & 0xffff).unwrap_or(0);
    (proto, ip, port)
}

/// A real server (or sorry server), in the server arena. Connections and
/// templates name it by index; it outlives its removal from the
/// configuration while they do.
#[derive(Debug, Clone)]
pub(crate) struct Dest {
    /// Its virtual server's key, and whether it is that one's sorry server.
    pub svc_key: u64,
    pub sorry: bool,
    pub ip: u32,
    pub port: u16,
    pub kind: ForwardKind,
    /// The virtual server (index) and member position it has now; `NONE`
    /// when removed (and, for a sorry server, no position).
    pub svc: u32,
    pub pos: u32,
    /// Configured and effective weight (0 when removed).
    pub conf_weight: u32,
    pub weight: u32,
    pub active: u32,
    pub inactive: u32,
    /// Persistence templates naming it.
    pub persist: u32,
    pub stats: Stats,
    pub est: Estimator,
    /// A free arena slot.
    pub free: bool,
}

impl Dest {
    /// A server new in its slot, placed in virtual server `svc` (index)
    /// of key `svc_key`: no weight or position yet, no connections, its
    /// counters at zero.
    pub(crate) fn placed(
        svc_key: u64,
        sorry: bool,
        ip: u32,
        port: u16,
        kind: ForwardKind,
        svc: u32,
    ) -> Dest {
        Dest {
            svc_key,
            sorry,
            ip,
            port,
            kind,
            svc,
            pos: NONE,
            conf_weight: 0,
            weight: 0,
            active: 0,
            inactive: 0,
            persist: 0,
            stats: Stats::default(),
            est: Estimator::default(),
            free: false,
        }
    }

    fn holds_nothing(&self) -> bool {
        self.active == 0 && self.inactive == 0 && self.persist == 0
    }
}

/// A virtual server as the balancer runs it.
#[derive(Debug, Clone)]
pub(crate) struct Service {
    pub key: u64,
    pub vs: control::lb::VirtualServer,
    /// Full NAT's source address (0 for NAT).
    pub snat: u32,
    /// Persistence: the client mask and the template timeout in ticks.
    pub mask: u32,
    pub persist_ticks: Option<u32>,
    pub members: Vec<Member>,
    pub sorry: Option<u32>,
    pub quorum_up: bool,
    pub live_weight: u64,
    /// Members with fewer active connections than half their weight.
    pub underloaded: u32,
    pub sched: Sched,
    pub stats: Stats,
    pub est: Estimator,
}

/// Counters of the whole balancer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Counters {
    pub drops: [u64; DropReason::COUNT],
    pub created: u64,
    pub expired: u64,
    pub icmp_errors: u64,
    pub templates_created: u64,
    pub templates_expired: u64,
    pub sorry_conns: u64,
}

/// The balancer (see the module docs).
#[derive(Debug)]
pub struct Balancer {
    pub(crate) conns: Conns,
    pub(crate) tmpls: Templates,
    pub(crate) dests: Vec<Dest>,
    pub(crate) services: Vec<Service>,
    pub(crate) by_key: ConfigMap<u64, u32>,
    pub(crate) vips: ConfigMap<u32, ()>,
    pub(crate) reals: ConfigMap<u64, ()>,
    pub(crate) default_snat: Option<Ipv4Addr>,
    /// Idle timeout per connection state, ticks (IPVS's defaults).
    pub(crate) timeout_ticks: [u32; ConnState::COUNT],
    /// Keys the SNAT port probe start.
    pub(crate) hasher: Hasher,
    pub(crate) counters: Counters,
    conn_cursor: usize,
    tmpl_cursor: usize,
    est_last: Option<u64>,
}

/// `t` in ticks, per connection state (by its code).
fn timeout_ticks(t: &Timeouts) -> [u32; ConnState::COUNT] {
    std::array::from_fn(|c| {
        let st = ConnState::from_code(u8::try_from(c).unwrap_or(u8::MAX));
        ticks_of_secs(st.timeout_secs(t))
    })
}

/// 64 random bits from the standard library's per-process hash keys.
fn random_seed() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(0x6c62_u64)
}

impl Balancer {
    /// A balancer for `capacity` connections (all memory allocated now),
    /// hashing with a random seed, no virtual server yet.
    pub fn new(capacity: usize) -> Balancer {
        Balancer::with_seed(capacity, random_seed())
    }

    /// [`Balancer::new`] with a given hash seed (tests, replays).
    pub fn with_seed(capacity: usize, seed: u64) -> Balancer {
        let mut s = seed;
        Balancer {
            conns: Conns::new(capacity, splitmix(&mut s)),
            tmpls: Templates::new(capacity, splitmix(&mut s)),
            dests: Vec::new(),
            services: Vec::new(),
            by_key: ConfigMap::default(),
            vips: ConfigMap::default(),
            reals: ConfigMap::default(),
            default_snat: None,
            timeout_ticks: timeout_ticks(&Timeouts::default()),
            hasher: Hasher::new(splitmix(&mut s)),
            counters: Counters::default(),
            conn_cursor: 0,
            tmpl_cursor: 0,
            est_last: None,
        }
    }

    /// The SNAT address of full-NAT virtual servers without `snat_ip` (the
    /// edge's uplink address, the tier-0's transit address). New
    /// connections of such virtual servers take it at once; existing ones
    /// keep theirs. `None` (or 0.0.0.0) leaves them their current one, and
    /// makes [`Balancer::set_services`] refuse new ones.
    pub fn set_default_snat_ip(&mut self, ip: Option<Ipv4Addr>) {
        self.default_snat = ip;
        let Some(ip) = ip.filter(|i| !i.is_unspecified()) else {
            return;
        };
        for s in &mut self.services {
            if s.vs.kind == ForwardKind::Fnat && s.vs.snat_ip.is_none() {
                s.snat = u32::from(ip);
            }
        }
    }

    /// Whether (protocol number, address, port) is a virtual server.
    #[inline]
    pub fn is_service(&self, proto: u8, ip: Ipv4Addr, port: u16) -> bool {
        self.by_key
            .contains_key(&svc_key(proto, u32::from(ip), port))
    }

    /// Whether `ip` is the address of a virtual server, or was one and
    /// still has connections: where [`Balancer::forward`] may find them.
    #[inline]
    pub fn is_vip(&self, ip: Ipv4Addr) -> bool {
        self.vips.contains_key(&u32::from(ip))
    }

    /// Whether (protocol number, address, port) is a real server or sorry
    /// server of a virtual server, or was one and still has connections:
    /// where [`Balancer::reverse`] may find replies.
    #[inline]
    pub fn is_real_server(&self, proto: u8, ip: Ipv4Addr, port: u16) -> bool {
        self.reals
            .contains_key(&svc_key(proto, u32::from(ip), port))
    }

    /// Connections in the table (some may be past their timeout, not swept yet).
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.len() == 0
    }

    pub fn capacity(&self) -> usize {
        self.conns.capacity()
    }

    /// Persistence templates held.
    pub fn templates_len(&self) -> usize {
        self.tmpls.len()
    }

    /// Bytes held by the connection and template tables (what grows with
    /// the capacity), counted from their allocations.
    pub fn memory_bytes(&self) -> usize {
        self.conns.memory_bytes() + self.tmpls.memory_bytes()
    }

    /// Drops so far for reason `r`.
    pub fn drops(&self, r: DropReason) -> u64 {
        self.counters.drops[r as usize]
    }

    /// The idle timeout of a connection state, ticks.
    #[inline(always)]
    pub(crate) fn timeout_of(&self, state: u8) -> u32 {
        self.timeout_ticks
            .get(usize::from(state))
            .copied()
            .unwrap_or(0)
    }

    /// Housekeeping to call about once per batch: visits at most a fixed
    /// number of connections and templates from where the last call
    /// stopped and removes those past their timeout.
    pub fn tick(&mut self, now_ns: u64) {
        self.expire(now_ns, EXPIRE_BUDGET);
    }

    /// [`Balancer::tick`] with a budget: visits at most `budget`
    /// connections and `budget` template slots (none while there is no
    /// template: most balancers run without persistence, and the slots
    /// are allocated for the capacity). Returns the connections and
    /// templates removed.
    pub fn expire(&mut self, now_ns: u64, budget: usize) -> (usize, usize) {
        let now = tick_of(now_ns);
        let removed = self.expire_conns(now, budget);
        let freed = if self.tmpls.is_empty() {
            0
        } else {
            self.expire_templates(now, budget)
        };
        (removed, freed)
    }

    /// Visits at most `budget` connections from the cursor on, removing
    /// those idle past their timeout; how many it removed.
    fn expire_conns(&mut self, now: u32, budget: usize) -> usize {
        let mut removed = 0;
        let mut c = self.conn_cursor;
        for _ in 0..budget.min(self.conns.len()) {
            let n = self.conns.len();
            if n == 0 {
                break;
            }
            if c >= n {
                c = 0;
            }
            let slot = table::as_slot(c);
            let dead = self.conns.get(slot).is_some_and(|x| self.expired(x, now));
            if dead {
                // The last connection moves into `c`: look at it next.
                self.remove_conn(slot, now);
                removed += 1;
            } else {
                c += 1;
            }
        }
        self.conn_cursor = c;
        self.counters.expired += removed as u64;
        removed
    }

    /// Visits at most `budget` template slots from the cursor on,
    /// freeing the templates without connections idle past their
    /// timeout; how many it freed.
    fn expire_templates(&mut self, now: u32, budget: usize) -> usize {
        let mut freed = 0;
        let slots = self.tmpls.slot_count();
        let mut t = self.tmpl_cursor;
        for _ in 0..budget.min(slots) {
            if t >= slots {
                t = 0;
            }
            let slot = table::as_slot(t);
            let dead = self
                .tmpls
                .get(slot)
                .is_some_and(|x| x.refs == 0 && idle_ticks(x.seen, now) > x.timeout);
            if dead {
                self.free_template(slot);
                freed += 1;
            }
            t += 1;
        }
        self.tmpl_cursor = t;
        self.counters.templates_expired += freed as u64;
        freed
    }

    /// Whether connection `c` is idle past its state's timeout.
    #[inline(always)]
    pub(crate) fn expired(&self, c: &table::Conn, now: u32) -> bool {
        idle_ticks(c.seen, now) > self.timeout_of(c.state)
    }

    /// Runs the rate estimators (call about every 2 seconds): every
    /// virtual and real server's rates from its counters' increase since
    /// the last run.
    pub fn estimate(&mut self, now_ns: u64) {
        let Some(last) = self.est_last.replace(now_ns) else {
            for d in &mut self.dests {
                d.est.rebase(&d.stats);
            }
            for s in &mut self.services {
                s.est.rebase(&s.stats);
            }
            return;
        };
        let elapsed = now_ns.saturating_sub(last);
        if elapsed == 0 {
            return;
        }
        for d in &mut self.dests {
            d.est.update(&d.stats, elapsed);
        }
        for s in &mut self.services {
            s.est.update(&s.stats, elapsed);
        }
    }

    /// A connection to server `dest` was added (`active`: established).
    #[inline]
    pub(crate) fn count_add(&mut self, dest: u32, active: bool) {
        self.count_move(dest, |d| {
            if active {
                d.active += 1;
            } else {
                d.inactive += 1;
            }
        });
    }

    /// A connection to server `dest` ended.
    #[inline]
    pub(crate) fn count_sub(&mut self, dest: u32, active: bool) {
        self.count_move(dest, |d| {
            if active {
                d.active = d.active.saturating_sub(1);
            } else {
                d.inactive = d.inactive.saturating_sub(1);
            }
        });
    }

    /// A connection to server `dest` became established (`to_active`) or
    /// stopped being so.
    #[inline]
    pub(crate) fn count_shift(&mut self, dest: u32, to_active: bool) {
        self.count_move(dest, |d| {
            if to_active {
                d.inactive = d.inactive.saturating_sub(1);
                d.active += 1;
            } else {
                d.active = d.active.saturating_sub(1);
                d.inactive += 1;
            }
        });
    }

    /// Changes server `dest`'s counts, and its member copy and scheduler.
    #[inline(always)]
    fn count_move(&mut self, dest: u32, f: impl FnOnce(&mut Dest)) {
        let Some(d) = self.dests.get_mut(dest as usize) else {
            return;
        };
        f(d);
        let (svc, pos, active, inactive) = (d.svc, d.pos, d.active, d.inactive);
        if svc == NONE || pos == NONE {
            return;
        }
        let Some(s) = self.services.get_mut(svc as usize) else {
            return;
        };
        let Some(m) = s.members.get_mut(pos as usize) else {
            return;
        };
        let was = m.underloaded();
        m.active = active;
        m.inactive = inactive;
        let is = m.underloaded();
        if was != is {
            if is {
                s.underloaded += 1;
            } else {
                s.underloaded = s.underloaded.saturating_sub(1);
            }
        }
        s.sched.update(&s.members, pos);
    }

    /// Removes connection `slot`: its server's counts, its template
    /// reference (released as of when the connection expired, or now).
    pub(crate) fn remove_conn(&mut self, slot: u32, now: u32) {
        let Some(c) = self.conns.remove(slot) else {
            return;
        };
        let st = ConnState::from_code(c.state);
        self.count_sub(c.dest, st.is_active());
        if c.flags & table::TEMPLATED != 0 {
            let timeout = self.timeout_of(c.state);
            let end = if idle_ticks(c.seen, now) > timeout {
                c.seen.wrapping_add(timeout)
            } else {
                now
            };
            self.release_template(c.tmpl, end);
        }
    }

    /// A connection that ended at tick `end` lets go of template `slot`:
    /// left without connections, the template's timeout runs from the
    /// later of its last use and `end`; a retired one is freed at once.
    pub(crate) fn release_template(&mut self, slot: u32, end: u32) {
        let Some(t) = self.tmpls.get_mut(slot) else {
            return;
        };
        t.refs = t.refs.saturating_sub(1);
        if t.refs > 0 {
            return;
        }
        if idle_ticks(t.seen, end) > 0 {
            t.seen = end;
        }
        if !t.indexed() {
            self.free_template(slot);
        }
    }

    /// Frees template `slot` and its server reference.
    pub(crate) fn free_template(&mut self, slot: u32) {
        if let Some(t) = self.tmpls.free(slot)
            && let Some(d) = self.dests.get_mut(t.dest as usize)
        {
            d.persist = d.persist.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without templates a tick visits no template slot (the sweep's
    /// cursor stays put); the sweep itself is the lifecycle tests'.
    #[test]
    fn a_tick_without_templates_sweeps_no_template_slot() {
        let mut b = Balancer::with_seed(4 * EXPIRE_BUDGET, 1);
        assert!(b.tmpls.slot_count() > EXPIRE_BUDGET);
        b.tick(1_000_000_000);
        b.tick(2_000_000_000);
        assert_eq!(b.tmpl_cursor, 0);
        assert_eq!(b.expire(3_000_000_000, EXPIRE_BUDGET), (0, 0));
        assert_eq!(b.tmpl_cursor, 0);
    }
}
