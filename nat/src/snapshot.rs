//! Saving the sessions across a planned restart ([`Nat::snapshot`]) and
//! putting them back ([`Nat::restore`]). Times are relative (idle time), so
//! they survive a different clock, as `firewall::conntrack`'s snapshot
//! does. Restoring rebuilds the mappings and port bitmaps from the
//! sessions; a session the current configuration would not produce, or
//! that clashes with what is already there, is skipped.

use std::net::SocketAddrV4;

use serde::{Deserialize, Serialize};

use crate::clock::{idle_ticks, tick_of};
use crate::engine::{Nat, proto_idx};
use crate::packet::PROTO_ICMP;
use crate::state::{FIN_IN, FIN_OUT, SessionState};
use crate::table::{HAIRPIN, INBOUND, STATIC, Session, Side};
use crate::view::idle_ns;

/// A session as saved across a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedSession {
    pub proto: u8,
    pub inside: SocketAddrV4,
    pub outside: SocketAddrV4,
    pub remote: SocketAddrV4,
    pub state: SessionState,
    #[serde(default)]
    pub inbound: bool,
    #[serde(default)]
    pub fin_out: bool,
    #[serde(default)]
    pub fin_in: bool,
    /// Time since its last packet.
    pub idle_ns: u64,
}

impl Nat {
    /// Every session within its timeout, with idle times relative to `now_ns`.
    pub fn snapshot(&self, now_ns: u64) -> Vec<SavedSession> {
        let now = tick_of(now_ns);
        self.tables
            .iter()
            .filter(|s| {
                let limit = self.timeouts.get(usize::from(s.state)).copied();
                limit.is_some_and(|l| idle_ticks(s.seen, now) <= l)
            })
            .map(|s| SavedSession {
                proto: s.proto,
                inside: SocketAddrV4::new(s.int_ip.into(), s.int_port),
                outside: SocketAddrV4::new(s.ext_ip.into(), s.ext_port),
                remote: SocketAddrV4::new(s.rem_ip.into(), s.rem_port),
                state: SessionState::from_code(s.state),
                inbound: s.flags & INBOUND != 0,
                fin_out: s.flags & FIN_OUT != 0,
                fin_in: s.flags & FIN_IN != 0,
                idle_ns: idle_ns(s.seen, now),
            })
            .collect()
    }

    /// Puts saved sessions back, idle times taken relative to `now_ns`,
    /// with their mappings and external ports. Skipped: a protocol or
    /// state that does not fit, an ICMP session with a remote port, one
    /// idle past its timeout, one the configuration would not produce
    /// (see [`Nat::set_config`]), one whose inside or outside 5-tuple is
    /// taken, one whose mapping clashes with a live one (same internal
    /// endpoint, other external one, or the external port held by another),
    /// and all once the table is full. Returns how many were restored.
    pub fn restore(&mut self, saved: &[SavedSession], now_ns: u64) -> usize {
        let mut restored = 0;
        for v in saved {
            if self.tables.len() >= self.tables.capacity() {
                break;
            }
            if let Some(s) = self.admit(v, now_ns)
                && self.tables.insert(s).is_some()
            {
                if let Some(pi) = proto_idx(s.proto) {
                    self.per_proto[pi] += 1;
                }
                restored += 1;
            }
        }
        self.counters.restored += restored as u64;
        restored
    }

    /// The session `v` describes, if it can be restored now; its external
    /// port is claimed (a new mapping's) when it is returned.
    fn admit(&mut self, v: &SavedSession, now_ns: u64) -> Option<Session> {
        let pi = proto_idx(v.proto)?;
        if !v.state.fits(v.proto) || (v.proto == PROTO_ICMP && v.remote.port() != 0) {
            return None;
        }
        let timeout = u64::from(v.state.timeout_secs(&self.config.timeouts)) * 1_000_000_000;
        if v.idle_ns > timeout {
            return None;
        }
        let int_ip = u32::from(*v.inside.ip());
        let rem_ip = u32::from(*v.remote.ip());
        let mut flags = 0;
        for (set, bit) in [
            (v.inbound, INBOUND),
            (v.fin_out, FIN_OUT),
            (v.fin_in, FIN_IN),
            (self.derived.privates.contains_key(&int_ip), STATIC),
            (self.derived.owners.contains_key(&rem_ip), HAIRPIN),
        ] {
            if set {
                flags |= bit;
            }
        }
        let s = Session {
            int_ip,
            ext_ip: u32::from(*v.outside.ip()),
            rem_ip,
            int_port: v.inside.port(),
            ext_port: v.outside.port(),
            rem_port: v.remote.port(),
            proto: v.proto,
            state: v.state as u8,
            flags,
            seen: tick_of(now_ns.saturating_sub(v.idle_ns)),
        };
        if !self.derived.fits(&self.config, &s)
            || self.tables.find_in(&s.in_key()).is_some()
            || self.tables.find_out(&s.out_key()).is_some()
        {
            return None;
        }
        if s.is_static() {
            return Some(s);
        }
        let inside = Side {
            proto: s.proto,
            ip: s.int_ip,
            port: s.int_port,
        };
        let outside = Side {
            proto: s.proto,
            ip: s.ext_ip,
            port: s.ext_port,
        };
        match self.tables.find_map_in(&inside) {
            Some(m) => (m.ext_ip == s.ext_ip && m.ext_port == s.ext_port).then_some(s),
            None => {
                if self.tables.find_map_out(&outside).is_some() {
                    return None;
                }
                let pool = match self.derived.owners.get(&s.ext_ip)? {
                    crate::engine::Owner::Pool(p) => usize::from(*p),
                    crate::engine::Owner::Public(_) => return None,
                };
                let map = self.ports.get_mut(pool)?.get_mut(pi)?;
                map.claim(s.ext_port).then_some(s)
            }
        }
    }
}
