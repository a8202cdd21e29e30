//! The per-packet path: what a packet is ([`Flow`]), the pure decisions
//! (`peek`: forward; `peek_reverse`), and [`Balancer::commit`], which
//! carries a decision out (connection and template writes, scheduler
//! steps, counters). `forward` and `reverse` are decision + commit, so
//! `peek` says exactly what `forward` would do.
//!
//! Full NAT's SNAT port: the client's own port if it is in 1024-65535 and
//! free toward that real server from that SNAT address, else up to 64
//! pseudo-random ports (keyed hash of the flow and the attempt) in that
//! range, each checked in the reverse index; with 64,512 ports per (SNAT
//! address, protocol, real server) the probe fails only when that pair is
//! almost full (at 90% use, once in a thousand: a counted
//! [`DropReason::PortsExhausted`]).

use std::net::{Ipv4Addr, SocketAddrV4};

use control::lb::ForwardKind;
use nat::packet::{self, L4, PROTO_TCP, PROTO_UDP, ParseError, Parsed, Tuple};
use nat::{ErrorRewrite, Rewrite, Translation};

use super::decision::{Decision, DropReason, How, PassReason, Plan, Stale, TmplPlan, Verdict};
use super::persist::{TKey, Template};
use super::sched::{Ask, NONE, Step};
use super::state::{self, ConnState, Dir, FIN_IN, FIN_OUT};
use super::table::{Conn, FNAT, Key, TEMPLATED};
use super::{Balancer, Service, idle_ticks, svc_key, tick_of};

/// First SNAT port, and how many there are (1024-65535).
const SNAT_FIRST: u16 = 1024;
const SNAT_PORTS: u64 = 65536 - 1024;
/// Pseudo-random ports tried after the client's own.
const SNAT_PROBES: u64 = 64;

/// What the balancer reads of a packet (read once, it can meet both
/// ways: [`Balancer::reverse_flow`], then [`Balancer::forward_flow`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Flow {
    pub proto: u8,
    pub src: Ipv4Addr,
    pub sport: u16,
    pub dst: Ipv4Addr,
    pub dport: u16,
    /// TCP flags (0 for other protocols).
    pub tcp_flags: u8,
    /// The IPv4 total length (for the byte counters).
    pub len: u16,
    /// An ICMP error: the packet it quotes, as that packet was sent.
    pub quoted: Option<Tuple>,
}

impl Flow {
    /// Reads an IPv4 packet (from its header on).
    #[inline]
    pub fn parse(pkt: &[u8]) -> Result<Flow, ParseError> {
        let p: Parsed = packet::parse(pkt)?;
        let len = match pkt.get(2..4) {
            Some(&[a, b]) => u16::from_be_bytes([a, b]),
            _ => 0,
        };
        let t = &p.tuple;
        let (tcp_flags, quoted) = match p.l4 {
            L4::Tcp { flags } => (flags, None),
            L4::IcmpError { inner } => (0, Some(inner)),
            _ => (0, None),
        };
        Ok(Flow {
            proto: t.proto,
            src: t.src,
            sport: t.sport,
            dst: t.dst,
            dport: t.dport,
            tcp_flags,
            len,
            quoted,
        })
    }

    /// Its 5-tuple as the table keys it (source first): a client's packet
    /// by the forward index, a real server's by the reverse one.
    #[inline(always)]
    fn key(&self) -> Key {
        Key {
            proto: self.proto,
            a_ip: u32::from(self.src),
            a_port: self.sport,
            b_ip: u32::from(self.dst),
            b_port: self.dport,
        }
    }
}

fn sa(ip: u32, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::from(ip), port)
}

/// Where a new connection's server came from.
#[derive(Debug, Clone, Copy)]
enum Source {
    Template,
    Scheduled { template: bool },
    Sorry { quorum_down: bool },
}

/// A new connection's server.
#[derive(Debug, Clone, Copy)]
struct Choice {
    dest: u32,
    source: Source,
    tmpl: TmplPlan,
    step: Step,
}

/// The destination address of an IPv4 header, if there is one.
fn ipv4_dst(pkt: &[u8]) -> Option<Ipv4Addr> {
    if pkt.first().is_none_or(|b| b >> 4 != 4) {
        return None;
    }
    match pkt.get(16..20) {
        Some(&[a, b, c, d]) => Some(Ipv4Addr::new(a, b, c, d)),
        _ => None,
    }
}

impl Balancer {
    /// Decides on `pkt` (IPv4, from its header on), a packet toward a
    /// virtual server, at `now_ns`, and carries the decision out. The
    /// verdict is the final one.
    #[inline]
    pub fn forward(&mut self, pkt: &[u8], now_ns: u64) -> Decision {
        let mut d = self.peek(pkt, now_ns);
        d.verdict = self.commit(&d, now_ns);
        d
    }

    /// [`Balancer::forward`] for a packet already read.
    #[inline]
    pub fn forward_flow(&mut self, f: &Flow, now_ns: u64) -> Decision {
        let mut d = self.judge_forward(f, tick_of(now_ns));
        d.verdict = self.commit(&d, now_ns);
        d
    }

    /// What [`Balancer::forward`] would decide for `pkt` at `now_ns`,
    /// changing nothing (`trace`).
    #[inline]
    pub fn peek(&self, pkt: &[u8], now_ns: u64) -> Decision {
        match Flow::parse(pkt) {
            Ok(f) => self.judge_forward(&f, tick_of(now_ns)),
            Err(e) => {
                let ours = ipv4_dst(pkt).is_some_and(|d| self.is_vip(d));
                match DropReason::of_parse(e) {
                    Some(r) if ours => Decision::drop(Dir::Forward, r),
                    _ => Decision::pass(Dir::Forward, PassReason::NotService),
                }
            }
        }
    }

    /// Decides on `pkt`, a packet from a real server (a reply), and
    /// carries the decision out.
    #[inline]
    pub fn reverse(&mut self, pkt: &[u8], now_ns: u64) -> Decision {
        let mut d = self.peek_reverse(pkt, now_ns);
        d.verdict = self.commit(&d, now_ns);
        d
    }

    /// [`Balancer::reverse`] for a packet already read.
    #[inline]
    pub fn reverse_flow(&mut self, f: &Flow, now_ns: u64) -> Decision {
        let mut d = self.judge_reverse(f, tick_of(now_ns));
        d.verdict = self.commit(&d, now_ns);
        d
    }

    /// What [`Balancer::reverse`] would decide, changing nothing.
    #[inline]
    pub fn peek_reverse(&self, pkt: &[u8], now_ns: u64) -> Decision {
        match Flow::parse(pkt) {
            Ok(f) => self.judge_reverse(&f, tick_of(now_ns)),
            Err(_) => Decision::pass(Dir::Reverse, PassReason::NoConnection),
        }
    }

    /// The decision for an existing live connection `c`.
    #[inline(always)]
    fn existing(&self, c: &Conn, slot: u32, dir: Dir, flags: u8, len: u16) -> Decision {
        let st = ConnState::from_code(c.state);
        let (next, fins) = state::next(st, c.flags & (FIN_IN | FIN_OUT), dir, flags);
        let fnat = c.flags & FNAT != 0;
        let (client, vs, real, local) = (
            sa(c.client_ip, c.client_port),
            sa(c.vip, c.vport),
            sa(c.real_ip, c.real_port),
            sa(c.local_ip, c.local_port),
        );
        let rw = match dir {
            Dir::Forward => Rewrite {
                src: fnat.then_some(local),
                dst: Some(real),
            },
            Dir::Reverse => Rewrite {
                src: Some(vs),
                dst: fnat.then_some(client),
            },
        };
        Decision {
            dir,
            verdict: Verdict::Translate(Translation::Packet(rw)),
            how: Some(How::Connection(next)),
            service: Some((c.proto, vs)),
            client: Some(client),
            real: Some(real),
            snat: fnat.then_some(local),
            plan: Plan::Refresh {
                slot,
                key: c.fwd_key(),
                state: next as u8,
                fins,
                bytes: len,
            },
            stale: [None, None],
        }
    }

    #[inline]
    fn judge_forward(&self, f: &Flow, now: u32) -> Decision {
        if let Some(q) = &f.quoted {
            return self.judge_error_forward(f, q, now);
        }
        if f.proto != PROTO_TCP && f.proto != PROTO_UDP {
            return Decision::pass(Dir::Forward, PassReason::NotService);
        }
        let tcp = f.proto == PROTO_TCP;
        let (src, dst) = (u32::from(f.src), u32::from(f.dst));
        let key = f.key();
        let mut stale = [None, None];
        let mut stale_slot = None;
        if let Some(slot) = self.conns.find_fwd(&key)
            && let Some(c) = self.conns.get(slot)
        {
            if self.expired(c, now) {
                stale[0] = Some(Stale { key, force: false });
            } else if tcp && state::reopens(ConnState::from_code(c.state), f.tcp_flags) {
                // IPVS's conn_reuse_mode 1: a reused port pair is a new
                // connection, scheduled (and counted) anew.
                stale[0] = Some(Stale { key, force: true });
            } else {
                return self.existing(c, slot, Dir::Forward, f.tcp_flags, f.len);
            }
            stale_slot = Some(slot);
        }
        let Some(&si) = self.by_key.get(&svc_key(f.proto, dst, f.dport)) else {
            return Decision::pass(Dir::Forward, PassReason::NotService).with_stale(stale);
        };
        let Some(svc) = self.services.get(si as usize) else {
            return Decision::pass(Dir::Forward, PassReason::NotService).with_stale(stale);
        };
        let client = SocketAddrV4::new(f.src, f.sport);
        let vs = SocketAddrV4::new(f.dst, f.dport);
        let drop = |r| {
            let mut d = Decision::drop(Dir::Forward, r).with_stale(stale);
            d.service = Some((f.proto, vs));
            d.client = Some(client);
            d
        };
        if !state::opens(tcp, f.tcp_flags) {
            return drop(DropReason::NoConnection);
        }
        let pending = usize::from(stale_slot.is_some());
        if self.conns.len() >= self.conns.capacity() + pending {
            return drop(DropReason::TableFull);
        }
        let choice = match self.choose(si, svc, f, now) {
            Ok(c) => c,
            Err(r) => return drop(r),
        };
        let Some(dest) = self.dests.get(choice.dest as usize) else {
            return drop(DropReason::NoServer);
        };
        let fnat = svc.vs.kind == ForwardKind::Fnat;
        let (local_ip, local_port) = if fnat {
            match self.snat_port(
                f.proto, svc.snat, dest.ip, dest.port, src, f.sport, stale_slot,
            ) {
                Some(p) => (svc.snat, p),
                None => return drop(DropReason::PortsExhausted),
            }
        } else {
            let rev = Key {
                proto: f.proto,
                a_ip: dest.ip,
                a_port: dest.port,
                b_ip: src,
                b_port: f.sport,
            };
            match self.conns.find_rev(&rev) {
                None => {}
                Some(s) if Some(s) == stale_slot => {}
                Some(s) => match self.conns.get(s) {
                    Some(o) if self.expired(o, now) => {
                        stale[1] = Some(Stale {
                            key: o.fwd_key(),
                            force: false,
                        });
                    }
                    _ => return drop(DropReason::Conflict),
                },
            }
            (src, f.sport)
        };
        let st = state::first(tcp);
        let conn = Conn {
            client_ip: src,
            vip: dst,
            real_ip: dest.ip,
            local_ip,
            client_port: f.sport,
            vport: f.dport,
            real_port: dest.port,
            local_port,
            dest: choice.dest,
            proto: f.proto,
            state: st as u8,
            flags: if fnat { FNAT } else { 0 },
            ..Conn::default()
        };
        let real = sa(dest.ip, dest.port);
        let local = sa(local_ip, local_port);
        let how = match choice.source {
            Source::Template => How::Template(st),
            Source::Scheduled { template } => How::Scheduled {
                scheduler: svc.vs.scheduler,
                template,
                state: st,
            },
            Source::Sorry { quorum_down } => How::Sorry {
                quorum_down,
                state: st,
            },
        };
        Decision {
            dir: Dir::Forward,
            verdict: Verdict::Translate(Translation::Packet(Rewrite {
                src: fnat.then_some(local),
                dst: Some(real),
            })),
            how: Some(how),
            service: Some((f.proto, vs)),
            client: Some(client),
            real: Some(real),
            snat: fnat.then_some(local),
            plan: Plan::Create {
                svc: si,
                conn,
                tmpl: choice.tmpl,
                step: choice.step,
                bytes: f.len,
            },
            stale,
        }
    }

    /// The server for a new connection of `f` to virtual server `svc`
    /// (index `si`): the sorry server below quorum; the client's live
    /// template if its server can take it; else the scheduler's pick (a
    /// new template with persistence); the sorry server if none.
    #[inline]
    fn choose(&self, si: u32, svc: &Service, f: &Flow, now: u32) -> Result<Choice, DropReason> {
        let sorry = |quorum_down| {
            svc.sorry
                .map(|dest| Choice {
                    dest,
                    source: Source::Sorry { quorum_down },
                    tmpl: TmplPlan::None,
                    step: Step::None,
                })
                .ok_or(DropReason::NoServer)
        };
        if !svc.quorum_up {
            return sorry(true);
        }
        let ask = Ask {
            client: u32::from(f.src),
            daddr: u32::from(f.dst),
            now,
            underloaded: svc.underloaded,
        };
        let member_dest = |pos: u32| svc.members.get(pos as usize).map(|m| m.dest);
        let Some(timeout) = svc.persist_ticks else {
            return match svc.sched.pick(&svc.members, &ask) {
                Some((pos, step)) => Ok(Choice {
                    dest: member_dest(pos).ok_or(DropReason::NoServer)?,
                    source: Source::Scheduled { template: false },
                    tmpl: TmplPlan::None,
                    step,
                }),
                None => sorry(false),
            };
        };
        let key = TKey {
            proto: f.proto,
            client: u32::from(f.src) & svc.mask,
            vip: u32::from(f.dst),
            vport: f.dport,
        };
        let mut retire = None;
        if let Some(ts) = self.tmpls.find(&key)
            && let Some(t) = self.tmpls.get(ts)
        {
            let alive = t.refs > 0 || idle_ticks(t.seen, now) <= t.timeout;
            let schedulable = self.dests.get(t.dest as usize).is_some_and(|d| {
                d.svc == si
                    && d.pos != NONE
                    && svc
                        .members
                        .get(d.pos as usize)
                        .is_some_and(|m| m.dest == t.dest && m.weight > 0)
            });
            if alive && schedulable {
                return Ok(Choice {
                    dest: t.dest,
                    source: Source::Template,
                    tmpl: TmplPlan::Use(ts),
                    step: Step::None,
                });
            }
            retire = Some(ts);
        }
        let Some((pos, step)) = svc.sched.pick(&svc.members, &ask) else {
            return sorry(false);
        };
        let frees_one = retire
            .and_then(|r| self.tmpls.get(r))
            .is_some_and(|t| t.refs == 0);
        if self.tmpls.is_full() && !frees_one {
            return Err(DropReason::TableFull);
        }
        Ok(Choice {
            dest: member_dest(pos).ok_or(DropReason::NoServer)?,
            source: Source::Scheduled { template: true },
            tmpl: TmplPlan::New {
                key,
                timeout,
                retire,
            },
            step,
        })
    }

    /// A SNAT port toward (`real_ip`, `real_port`) from `snat` (see the
    /// module docs). A port held by connection `stale` (removed first) is
    /// free.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn snat_port(
        &self,
        proto: u8,
        snat: u32,
        real_ip: u32,
        real_port: u16,
        client_ip: u32,
        client_port: u16,
        stale: Option<u32>,
    ) -> Option<u16> {
        let free = |p: u16| {
            let k = Key {
                proto,
                a_ip: real_ip,
                a_port: real_port,
                b_ip: snat,
                b_port: p,
            };
            match self.conns.find_rev(&k) {
                None => true,
                Some(s) => Some(s) == stale,
            }
        };
        if client_port >= SNAT_FIRST && free(client_port) {
            return Some(client_port);
        }
        let a = (u64::from(client_ip) << 16) | u64::from(client_port);
        let b = (u64::from(real_ip) << 24) | (u64::from(real_port) << 8) | u64::from(proto);
        for k in 0..SNAT_PROBES {
            let h = self.hasher.hash(a, b ^ (k << 56));
            let off = (u128::from(h) * u128::from(SNAT_PORTS)) >> 64;
            let p = u16::try_from(u128::from(SNAT_FIRST) + off).unwrap_or(SNAT_FIRST);
            if free(p) {
                return Some(p);
            }
        }
        None
    }

    #[inline]
    fn judge_reverse(&self, f: &Flow, now: u32) -> Decision {
        if let Some(q) = &f.quoted {
            return self.judge_error_reverse(q, now);
        }
        if f.proto != PROTO_TCP && f.proto != PROTO_UDP {
            return Decision::pass(Dir::Reverse, PassReason::NoConnection);
        }
        let Some(slot) = self.conns.find_rev(&f.key()) else {
            return Decision::pass(Dir::Reverse, PassReason::NoConnection);
        };
        let Some(c) = self.conns.get(slot) else {
            return Decision::pass(Dir::Reverse, PassReason::NoConnection);
        };
        if self.expired(c, now) {
            let stale = Stale {
                key: c.fwd_key(),
                force: false,
            };
            return Decision::pass(Dir::Reverse, PassReason::NoConnection)
                .with_stale([Some(stale), None]);
        }
        self.existing(c, slot, Dir::Reverse, f.tcp_flags, f.len)
    }

    /// The live connection an ICMP error going `dir` is about: the quoted
    /// packet went the other way, so it is turned around and looked up by
    /// the forward key (an error from the client's side, about what the
    /// balancer sent the client) or the reverse key (from the real
    /// server's side).
    #[inline]
    fn quoted_conn(&self, q: &Tuple, dir: Dir, now: u32) -> Option<&Conn> {
        let key = Key {
            proto: q.proto,
            a_ip: u32::from(q.dst),
            a_port: q.dport,
            b_ip: u32::from(q.src),
            b_port: q.sport,
        };
        let slot = match dir {
            Dir::Forward => self.conns.find_fwd(&key),
            Dir::Reverse => self.conns.find_rev(&key),
        }?;
        self.conns.get(slot).filter(|c| !self.expired(c, now))
    }

    /// The decision for an ICMP error about live connection `c`.
    fn error_decision(&self, c: &Conn, dir: Dir, rw: ErrorRewrite) -> Decision {
        let fnat = c.flags & FNAT != 0;
        Decision {
            dir,
            verdict: Verdict::Translate(Translation::IcmpError(rw)),
            how: Some(How::IcmpError(ConnState::from_code(c.state))),
            service: Some((c.proto, sa(c.vip, c.vport))),
            client: Some(sa(c.client_ip, c.client_port)),
            real: Some(sa(c.real_ip, c.real_port)),
            snat: fnat.then_some(sa(c.local_ip, c.local_port)),
            plan: Plan::IcmpError,
            stale: [None, None],
        }
    }

    /// An ICMP error from the client's side to the virtual address about
    /// a packet the balancer sent the client (quoted as it was sent:
    /// virtual server to client).
    fn judge_error_forward(&self, f: &Flow, q: &Tuple, now: u32) -> Decision {
        let Some(c) = self.quoted_conn(q, Dir::Forward, now) else {
            return if self.is_vip(f.dst) {
                Decision::drop(Dir::Forward, DropReason::NoConnection)
            } else {
                Decision::pass(Dir::Forward, PassReason::NotService)
            };
        };
        let fnat = c.flags & FNAT != 0;
        let rw = ErrorRewrite {
            outer_src: fnat.then_some(Ipv4Addr::from(c.local_ip)),
            outer_dst: Some(Ipv4Addr::from(c.real_ip)),
            inner_src: Some(sa(c.real_ip, c.real_port)),
            inner_dst: fnat.then_some(sa(c.local_ip, c.local_port)),
        };
        self.error_decision(c, Dir::Forward, rw)
    }

    /// An ICMP error from the real server's side (the server, or a router
    /// on the way) about a packet the balancer sent it (quoted: client or
    /// SNAT endpoint to real server). The outer source becomes the
    /// virtual address, as IPVS does.
    fn judge_error_reverse(&self, q: &Tuple, now: u32) -> Decision {
        let Some(c) = self.quoted_conn(q, Dir::Reverse, now) else {
            return Decision::pass(Dir::Reverse, PassReason::NoConnection);
        };
        let fnat = c.flags & FNAT != 0;
        let rw = ErrorRewrite {
            outer_src: Some(Ipv4Addr::from(c.vip)),
            outer_dst: fnat.then_some(Ipv4Addr::from(c.client_ip)),
            inner_src: fnat.then_some(sa(c.client_ip, c.client_port)),
            inner_dst: Some(sa(c.vip, c.vport)),
        };
        self.error_decision(c, Dir::Reverse, rw)
    }

    /// Carries out `d` (from `peek`/`peek_reverse` on this balancer,
    /// nothing changed in between) at `now_ns`: connection and template
    /// writes, the scheduler's step, counters. Returns the final verdict:
    /// the decided one, unless a write it counted on fails after all (not
    /// reached when nothing changed in between).
    #[inline]
    pub fn commit(&mut self, d: &Decision, now_ns: u64) -> Verdict {
        let now = tick_of(now_ns);
        for s in d.stale.iter().flatten() {
            self.remove_stale(s, now);
        }
        let mut v = d.verdict;
        match d.plan {
            Plan::None => {}
            Plan::IcmpError => self.counters.icmp_errors += 1,
            Plan::Refresh {
                slot,
                key,
                state,
                fins,
                bytes,
            } => {
                if !self.refresh(slot, &key, state, fins, bytes, d.dir, now) {
                    v = Verdict::Drop(DropReason::NoConnection);
                }
            }
            Plan::Create {
                svc,
                conn,
                tmpl,
                step,
                bytes,
            } => {
                if let Err(r) = self.create(svc, conn, tmpl, &step, bytes, now) {
                    v = Verdict::Drop(r);
                }
            }
        }
        if let Verdict::Drop(r) = v {
            self.counters.drops[r as usize] += 1;
        }
        v
    }

    fn remove_stale(&mut self, s: &Stale, now: u32) {
        if let Some(slot) = self.conns.find_fwd(&s.key)
            && let Some(c) = self.conns.get(slot)
        {
            let expired = self.expired(c, now);
            if expired || s.force {
                self.remove_conn(slot, now);
                self.counters.expired += u64::from(expired);
            }
        }
    }

    /// A packet of `bytes` of server `dest`'s connection, going `dir`.
    #[inline(always)]
    fn count_packet(&mut self, dest: u32, dir: Dir, bytes: u16) {
        let Some(d) = self.dests.get_mut(dest as usize) else {
            return;
        };
        let b = u64::from(bytes);
        let add = |s: &mut super::Stats| match dir {
            Dir::Forward => {
                s.inpkts += 1;
                s.inbytes += b;
            }
            Dir::Reverse => {
                s.outpkts += 1;
                s.outbytes += b;
            }
        };
        add(&mut d.stats);
        let svc = d.svc;
        if let Some(s) = self.services.get_mut(svc as usize) {
            add(&mut s.stats);
        }
    }

    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn refresh(
        &mut self,
        slot: u32,
        key: &Key,
        state: u8,
        fins: u8,
        bytes: u16,
        dir: Dir,
        now: u32,
    ) -> bool {
        let slot = match self.conns.get(slot) {
            Some(c) if c.fwd_key() == *key => slot,
            _ => match self.conns.find_fwd(key) {
                Some(s) => s,
                None => return false,
            },
        };
        let Some(c) = self.conns.get_mut(slot) else {
            return false;
        };
        let was = ConnState::from_code(c.state).is_active();
        let is = ConnState::from_code(state).is_active();
        c.state = state;
        c.flags = (c.flags & !(FIN_IN | FIN_OUT)) | fins;
        c.seen = now;
        let dest = c.dest;
        // A connection that closed (FIN both ways, or RST) has ended for
        // persistence: its template's timeout runs from now, not from
        // when TIME_WAIT is reaped (keepalived users expect the client to
        // move `persistence_timeout` seconds after its last connection).
        let released = (c.flags & TEMPLATED != 0
            && matches!(
                ConnState::from_code(state),
                ConnState::TimeWait | ConnState::Close
            ))
        .then(|| {
            c.flags &= !TEMPLATED;
            c.tmpl
        });
        if was != is {
            self.count_shift(dest, is);
        }
        self.count_packet(dest, dir, bytes);
        if let Some(ts) = released {
            self.release_template(ts, now);
        }
        true
    }

    fn create(
        &mut self,
        svc: u32,
        conn: Conn,
        tmpl: TmplPlan,
        step: &Step,
        bytes: u16,
        now: u32,
    ) -> Result<(), DropReason> {
        if self.conns.len() >= self.conns.capacity() {
            return Err(DropReason::TableFull);
        }
        if self.conns.find_fwd(&conn.fwd_key()).is_some()
            || self.conns.find_rev(&conn.rev_key()).is_some()
        {
            return Err(DropReason::Conflict);
        }
        // A decision from before a configuration swap may name a server
        // slot freed since, or given to another server, or a virtual
        // server index that is another's now: the slot must still hold
        // this connection's server, in this virtual server.
        let same = |d: &super::Dest| {
            !d.free && d.svc == svc && d.ip == conn.real_ip && d.port == conn.real_port
        };
        if !self.dests.get(conn.dest as usize).is_some_and(same) {
            return Err(DropReason::NoServer);
        }
        let mut c = conn;
        c.seen = now;
        match tmpl {
            TmplPlan::None => {}
            TmplPlan::Use(ts) => {
                // Still the template naming this server (not a slot
                // freed and taken by another client since).
                let t = self
                    .tmpls
                    .get_mut(ts)
                    .filter(|t| t.dest == c.dest)
                    .ok_or(DropReason::NoServer)?;
                t.refs += 1;
                t.seen = now;
                c.flags |= TEMPLATED;
                c.tmpl = ts;
            }
            TmplPlan::New {
                key,
                timeout,
                retire,
            } => {
                if let Some(r) = retire {
                    self.tmpls.retire(r);
                    if self.tmpls.get(r).is_some_and(|t| t.refs == 0) {
                        self.free_template(r);
                    }
                }
                let t = Template {
                    client: key.client,
                    vip: key.vip,
                    dest: c.dest,
                    refs: 1,
                    seen: now,
                    timeout,
                    vport: key.vport,
                    proto: key.proto,
                    flags: 0,
                };
                let ts = self.tmpls.insert(t).ok_or(DropReason::TableFull)?;
                if let Some(d) = self.dests.get_mut(c.dest as usize) {
                    d.persist += 1;
                }
                self.counters.templates_created += 1;
                c.flags |= TEMPLATED;
                c.tmpl = ts;
            }
        }
        // Room was checked: the insert cannot fail.
        if self.conns.insert(c).is_none() {
            return Err(DropReason::TableFull);
        }
        self.count_add(c.dest, ConnState::from_code(c.state).is_active());
        if let Some(d) = self.dests.get_mut(c.dest as usize) {
            d.stats.conns += 1;
            if d.sorry {
                self.counters.sorry_conns += 1;
            }
        }
        if let Some(s) = self.services.get_mut(svc as usize) {
            s.stats.conns += 1;
            s.sched.apply(step, now);
        }
        self.count_packet(c.dest, Dir::Forward, bytes);
        self.counters.created += 1;
        Ok(())
    }
}
