//! What the NAT shows: its sessions ([`SessionView`], a bounded listing is
//! `nat.sessions(now).take(n)`), counters ([`NatCounters`]), port-pool use
//! and allocation failures per external address ([`PoolUse`]), session
//! counts per protocol and the memory it holds.

use std::net::{Ipv4Addr, SocketAddrV4};

use crate::clock::{idle_ticks, ns_of_ticks, tick_of};
use crate::decision::DropReason;
use crate::engine::Nat;
use crate::state::{FIN_IN, FIN_OUT, SessionState};
use crate::table::{HAIRPIN, INBOUND, Session};

/// One session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionView {
    pub proto: u8,
    /// The internal endpoint (ICMP: address and query identifier).
    pub inside: SocketAddrV4,
    /// What the outside sees of it.
    pub outside: SocketAddrV4,
    /// The remote endpoint (ICMP: port 0).
    pub remote: SocketAddrV4,
    pub state: SessionState,
    /// A static 1:1 session (no mapping).
    pub is_static: bool,
    /// Opened by a packet from outside.
    pub inbound: bool,
    /// The remote is one of our external addresses.
    pub hairpin: bool,
    pub fin_out: bool,
    pub fin_in: bool,
    /// Seconds since its last packet (rounded down; ticks of ~16.8 ms).
    pub idle_secs: u64,
}

impl SessionView {
    pub(crate) fn of(s: &Session, now: u32) -> SessionView {
        let sa = |ip: u32, port| SocketAddrV4::new(Ipv4Addr::from(ip), port);
        SessionView {
            proto: s.proto,
            inside: sa(s.int_ip, s.int_port),
            outside: sa(s.ext_ip, s.ext_port),
            remote: sa(s.rem_ip, s.rem_port),
            state: SessionState::from_code(s.state),
            is_static: s.is_static(),
            inbound: s.flags & INBOUND != 0,
            hairpin: s.flags & HAIRPIN != 0,
            fin_out: s.flags & FIN_OUT != 0,
            fin_in: s.flags & FIN_IN != 0,
            idle_secs: idle_ns(s.seen, now) / 1_000_000_000,
        }
    }
}

/// Nanoseconds a session seen at tick `seen` has been idle at tick `now`.
pub(crate) fn idle_ns(seen: u32, now: u32) -> u64 {
    ns_of_ticks(idle_ticks(seen, now))
}

/// Cumulative counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatCounters {
    /// Packets translated from the inside out (hairpinned ones included).
    pub translated_out: u64,
    /// Packets translated from the uplink in.
    pub translated_in: u64,
    /// Of those, hairpinned (inside to one of our external addresses).
    pub hairpinned: u64,
    /// Of those, ICMP errors.
    pub icmp_errors: u64,
    /// Dropped packets, by [`DropReason`] (`drops[r as usize]`).
    pub drops: [u64; DropReason::COUNT],
    /// Sessions created (restored ones not included).
    pub created: u64,
    /// Sessions removed after their idle timeout.
    pub expired: u64,
    /// Sessions removed by a configuration change.
    pub removed_config: u64,
    /// Sessions restored from a snapshot.
    pub restored: u64,
}

impl NatCounters {
    pub fn drops(&self, r: DropReason) -> u64 {
        self.drops[r as usize]
    }
}

/// Port use of one pool address, per protocol `[tcp, udp, icmp]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PoolUse {
    pub ip: Ipv4Addr,
    /// External ports (ICMP: identifiers) held by live mappings.
    pub used: [u32; 3],
    /// Ports that can be handed out.
    pub size: [u32; 3],
    /// New mappings refused for want of a free port.
    pub failures: [u64; 3],
}

impl Nat {
    /// Every session, in no particular order, idle times taken at `now_ns`.
    pub fn sessions(&self, now_ns: u64) -> impl Iterator<Item = SessionView> + '_ {
        let now = tick_of(now_ns);
        self.tables.iter().map(move |s| SessionView::of(s, now))
    }

    /// Sessions in the table (some may be past their timeout, not swept yet).
    pub fn len(&self) -> usize {
        self.tables.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tables.len() == 0
    }

    pub fn capacity(&self) -> usize {
        self.tables.capacity()
    }

    /// Live mappings (pool sessions' external ports).
    pub fn mappings(&self) -> usize {
        self.tables.mappings.len()
    }

    /// Sessions per protocol: `[tcp, udp, icmp]`.
    pub fn sessions_by_proto(&self) -> [u32; 3] {
        self.per_proto
    }

    pub fn counters(&self) -> &NatCounters {
        &self.counters
    }

    /// Port use of each pool address, in configuration order.
    pub fn pool_usage(&self) -> impl Iterator<Item = PoolUse> + '_ {
        self.config
            .pool
            .iter()
            .zip(&self.ports)
            .map(|(ip, maps)| PoolUse {
                ip: *ip,
                used: [maps[0].taken(), maps[1].taken(), maps[2].taken()],
                size: [maps[0].size(), maps[1].size(), maps[2].size()],
                failures: [maps[0].failures, maps[1].failures, maps[2].failures],
            })
    }

    /// Bytes held by the session, mapping and permit tables (what grows
    /// with the capacity), counted from their allocations. The port maps
    /// add about 24.6 KiB per pool address.
    pub fn memory_bytes(&self) -> usize {
        self.tables.memory_bytes()
    }
}
