//! The NAT's state, allocated once for its capacity: sessions, mappings
//! and address-dependent filtering permits, and the indexes between them.
//!
//! * Sessions: a dense slab of 32-byte entries (inside, outside and remote
//!   endpoint, protocol, state, flags, last-seen tick), indexed twice
//!   ([`Index`]): by the inside 5-tuple (outbound lookups) and by the
//!   outside 5-tuple (inbound lookups). A removal moves the last entry into
//!   the hole and repoints its two index entries, so the slab stays dense
//!   for the sweep and the listing.
//! * Mappings (pool sessions only): `(proto, internal ip, port) <->
//!   (external ip, port)` with the count of sessions using it, in a dense
//!   slab of 20-byte entries indexed by both sides. A mapping lives while it
//!   has a session; the last one's removal frees its port ([`Freed`]).
//! * Permits (pool sessions only): `(proto, external ip, port, remote ip)`
//!   with the count of sessions, in an inline open-addressing table of
//!   16-byte entries: what address-dependent filtering asks. Kept only
//!   while that filtering is on ([`Tables::track_permits`] rebuilds them
//!   when it is turned on), so endpoint-independent filtering saves their
//!   upkeep on every new and removed session.
//!
//! At most one mapping and one permit per session, so every part is sized
//! for the session capacity and an insert never finds it full. Memory per
//! session at full load, as [`Tables::memory_bytes`] counts it:
//! sessions 32 + 2 indexes 2 x 10 + mappings 20 + 2 indexes 2 x 10 +
//! permits 16 x 1.25 = 112 bytes (every session its own mapping: the
//! worst case).

use std::net::SocketAddrV4;

use crate::index::{Hasher, Index, buckets_for};

/// Session flag: static 1:1 (no mapping, no permit).
pub(crate) const STATIC: u8 = 0x04;
/// Session flag: opened from the outside.
pub(crate) const INBOUND: u8 = 0x08;
/// Session flag: the remote is one of our external addresses (hairpin).
pub(crate) const HAIRPIN: u8 = 0x10;

/// One session (28 bytes; a 32-byte aligned [`Slot`] in the slab).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub(crate) struct Session {
    pub int_ip: u32,
    pub ext_ip: u32,
    pub rem_ip: u32,
    pub int_port: u16,
    pub ext_port: u16,
    pub rem_port: u16,
    pub proto: u8,
    /// `SessionState` code.
    pub state: u8,
    /// `FIN_OUT | FIN_IN | STATIC | INBOUND | HAIRPIN`.
    pub flags: u8,
    /// Last-seen tick.
    pub seen: u32,
}

const _: () = assert!(std::mem::size_of::<Session>() == 28);

/// A session as the slab holds it: aligned, so it never straddles two
/// cache lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C, align(32))]
struct Slot(Session);

const _: () = assert!(std::mem::size_of::<Slot>() == 32);

/// A 5-tuple from one side: the local endpoint (inside or outside) and
/// the remote one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    pub proto: u8,
    pub ip: u32,
    pub port: u16,
    pub rem_ip: u32,
    pub rem_port: u16,
}

impl Key {
    /// The key of (`proto`, `local`, `remote`).
    #[inline(always)]
    pub fn of(proto: u8, local: SocketAddrV4, remote: SocketAddrV4) -> Key {
        Key {
            proto,
            ip: u32::from(*local.ip()),
            port: local.port(),
            rem_ip: u32::from(*remote.ip()),
            rem_port: remote.port(),
        }
    }

    #[inline(always)]
    fn words(&self) -> (u64, u64) {
        (
            (u64::from(self.ip) << 32) | u64::from(self.rem_ip),
            (u64::from(self.port) << 24) | (u64::from(self.rem_port) << 8) | u64::from(self.proto),
        )
    }
}

impl Session {
    #[inline(always)]
    pub fn in_key(&self) -> Key {
        Key {
            proto: self.proto,
            ip: self.int_ip,
            port: self.int_port,
            rem_ip: self.rem_ip,
            rem_port: self.rem_port,
        }
    }

    #[inline(always)]
    pub fn out_key(&self) -> Key {
        Key {
            proto: self.proto,
            ip: self.ext_ip,
            port: self.ext_port,
            rem_ip: self.rem_ip,
            rem_port: self.rem_port,
        }
    }

    #[inline(always)]
    fn in_is(&self, k: &Key) -> bool {
        self.int_ip == k.ip
            && self.rem_ip == k.rem_ip
            && self.int_port == k.port
            && self.rem_port == k.rem_port
            && self.proto == k.proto
    }

    #[inline(always)]
    fn out_is(&self, k: &Key) -> bool {
        self.ext_ip == k.ip
            && self.rem_ip == k.rem_ip
            && self.ext_port == k.port
            && self.rem_port == k.rem_port
            && self.proto == k.proto
    }

    pub fn is_static(&self) -> bool {
        self.flags & STATIC != 0
    }
}

/// One mapping (pool sessions only).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Mapping {
    pub int_ip: u32,
    pub ext_ip: u32,
    pub int_port: u16,
    pub ext_port: u16,
    pub proto: u8,
    /// Sessions using it.
    pub refs: u32,
}

const _: () = assert!(std::mem::size_of::<Mapping>() == 20);

/// One side of a mapping: protocol, address, port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Side {
    pub proto: u8,
    pub ip: u32,
    pub port: u16,
}

impl Side {
    #[inline(always)]
    fn words(&self) -> (u64, u64) {
        (
            u64::from(self.ip),
            (u64::from(self.port) << 8) | u64::from(self.proto),
        )
    }
}

/// An external port freed by a mapping's end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Freed {
    pub proto: u8,
    pub ext_ip: u32,
    pub ext_port: u16,
}

/// One permit: a mapping's external side and a remote address it sent to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
struct Permit {
    ext_ip: u32,
    rem_ip: u32,
    ext_port: u16,
    proto: u8,
    /// Sessions; 0 = empty bucket.
    count: u32,
}

const _: () = assert!(std::mem::size_of::<Permit>() == 16);

impl Permit {
    fn words(&self) -> (u64, u64) {
        (
            (u64::from(self.ext_ip) << 32) | u64::from(self.rem_ip),
            (u64::from(self.ext_port) << 8) | u64::from(self.proto),
        )
    }

    fn is(&self, p: &Permit) -> bool {
        self.ext_ip == p.ext_ip
            && self.rem_ip == p.rem_ip
            && self.ext_port == p.ext_port
            && self.proto == p.proto
    }
}

/// The permits: an inline open-addressing table, linear probing, back-shift
/// removal.
#[derive(Debug, Clone)]
struct Permits {
    buckets: Box<[Permit]>,
}

impl Permits {
    fn new(capacity: usize) -> Permits {
        Permits {
            buckets: vec![Permit::default(); buckets_for(capacity)].into_boxed_slice(),
        }
    }

    #[allow(
        clippy::cast_possible_truncation,
        reason = "multiply-shift range reduction: below the bucket count"
    )]
    fn home(&self, h: &Hasher, p: &Permit) -> usize {
        let (a, b) = p.words();
        ((u128::from(h.hash(a, b)) * self.buckets.len() as u128) >> 64) as usize
    }

    fn next(&self, i: usize) -> usize {
        if i + 1 == self.buckets.len() {
            0
        } else {
            i + 1
        }
    }

    fn find(&self, h: &Hasher, p: &Permit) -> Result<usize, usize> {
        let mut i = self.home(h, p);
        for _ in 0..self.buckets.len() {
            let e = &self.buckets[i];
            if e.count == 0 {
                return Err(i);
            }
            if e.is(p) {
                return Ok(i);
            }
            i = self.next(i);
        }
        Err(i)
    }

    fn count(&self, h: &Hasher, p: &Permit) -> u32 {
        self.find(h, p).map_or(0, |i| self.buckets[i].count)
    }

    fn add(&mut self, h: &Hasher, p: &Permit) {
        match self.find(h, p) {
            Ok(i) => self.buckets[i].count += 1,
            Err(i) => {
                if self.buckets[i].count == 0 {
                    self.buckets[i] = Permit { count: 1, ..*p };
                }
            }
        }
    }

    fn sub(&mut self, h: &Hasher, p: &Permit) {
        let Ok(i) = self.find(h, p) else { return };
        self.buckets[i].count -= 1;
        if self.buckets[i].count > 0 {
            return;
        }
        let mut hole = i;
        let mut j = i;
        for _ in 0..self.buckets.len() {
            j = self.next(j);
            let e = self.buckets[j];
            if e.count == 0 {
                break;
            }
            let k = self.home(h, &e);
            let stays = crate::index::stays(hole, k, j);
            if !stays {
                self.buckets[hole] = e;
                hole = j;
            }
        }
        self.buckets[hole] = Permit::default();
    }
}

/// Sessions, mappings and permits (see the module docs).
#[derive(Debug, Clone)]
pub(crate) struct Tables {
    hasher: Hasher,
    capacity: usize,
    sessions: Vec<Slot>,
    by_in: Index,
    by_out: Index,
    pub mappings: Vec<Mapping>,
    map_in: Index,
    map_out: Index,
    permits: Permits,
    /// Whether `permits` is kept up to date.
    tracking: bool,
}

fn as_slot(i: usize) -> u32 {
    u32::try_from(i).unwrap_or(u32::MAX)
}

impl Tables {
    pub fn new(capacity: usize, seed: u64) -> Tables {
        let capacity = capacity.min(crate::index::MAX_ENTRIES);
        Tables {
            hasher: Hasher::new(seed),
            capacity,
            sessions: Vec::with_capacity(capacity),
            by_in: Index::new(capacity),
            by_out: Index::new(capacity),
            mappings: Vec::with_capacity(capacity),
            map_in: Index::new(capacity),
            map_out: Index::new(capacity),
            permits: Permits::new(capacity),
            tracking: false,
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Bytes held, counted from the allocations (see the module docs).
    pub fn memory_bytes(&self) -> usize {
        self.sessions.capacity() * std::mem::size_of::<Slot>()
            + self.mappings.capacity() * std::mem::size_of::<Mapping>()
            + self.by_in.bytes()
            + self.by_out.bytes()
            + self.map_in.bytes()
            + self.map_out.bytes()
            + self.permits.buckets.len() * std::mem::size_of::<Permit>()
    }

    #[inline(always)]
    fn key_hash(&self, k: &Key) -> u64 {
        let (a, b) = k.words();
        self.hasher.hash(a, b)
    }

    #[inline(always)]
    fn side_hash(&self, s: &Side) -> u64 {
        let (a, b) = s.words();
        self.hasher.hash(a, b)
    }

    /// The session with inside 5-tuple `k`.
    #[inline(always)]
    pub fn find_in(&self, k: &Key) -> Option<u32> {
        let s = &self.sessions;
        self.by_in
            .find(self.key_hash(k), |i| {
                s.get(i as usize).is_some_and(|x| x.0.in_is(k))
            })
            .map(|(_, i)| i)
    }

    /// The session with outside 5-tuple `k`.
    #[inline(always)]
    pub fn find_out(&self, k: &Key) -> Option<u32> {
        let s = &self.sessions;
        self.by_out
            .find(self.key_hash(k), |i| {
                s.get(i as usize).is_some_and(|x| x.0.out_is(k))
            })
            .map(|(_, i)| i)
    }

    #[inline(always)]
    pub fn session(&self, i: u32) -> Option<&Session> {
        self.sessions.get(i as usize).map(|s| &s.0)
    }

    #[inline(always)]
    pub fn session_mut(&mut self, i: u32) -> Option<&mut Session> {
        self.sessions.get_mut(i as usize).map(|s| &mut s.0)
    }

    /// Every session, in slab order.
    pub fn iter(&self) -> impl Iterator<Item = &Session> + '_ {
        self.sessions.iter().map(|s| &s.0)
    }

    /// The mapping of inside side `s`.
    pub fn find_map_in(&self, s: &Side) -> Option<&Mapping> {
        let m = &self.mappings;
        self.map_in
            .find(self.side_hash(s), |i| {
                m.get(i as usize)
                    .is_some_and(|x| x.int_ip == s.ip && x.int_port == s.port && x.proto == s.proto)
            })
            .and_then(|(_, i)| m.get(i as usize))
    }

    /// The mapping of outside side `s`.
    pub fn find_map_out(&self, s: &Side) -> Option<&Mapping> {
        let m = &self.mappings;
        self.map_out
            .find(self.side_hash(s), |i| {
                m.get(i as usize)
                    .is_some_and(|x| x.ext_ip == s.ip && x.ext_port == s.port && x.proto == s.proto)
            })
            .and_then(|(_, i)| m.get(i as usize))
    }

    /// Sessions of the mapping on outside side `ext` whose remote is
    /// `rem_ip` (0 unless [`Tables::track_permits`] is on).
    pub fn permit_count(&self, ext: &Side, rem_ip: u32) -> u32 {
        self.permits.count(
            &self.hasher,
            &permit_of(ext.proto, ext.ip, ext.port, rem_ip),
        )
    }

    /// Keeps the permits up to date (`on`, rebuilt from the sessions if
    /// they were not) or stops (and forgets them). Only address-dependent
    /// filtering asks for them.
    pub fn track_permits(&mut self, on: bool) {
        if on == self.tracking {
            return;
        }
        self.permits.buckets.fill(Permit::default());
        self.tracking = on;
        if on {
            for slot in &self.sessions {
                let s = &slot.0;
                if !s.is_static() {
                    let p = permit_of(s.proto, s.ext_ip, s.ext_port, s.rem_ip);
                    self.permits.add(&self.hasher, &p);
                }
            }
        }
    }

    /// Adds session `s` (absent by both keys; the caller checked there is
    /// room). A pool session takes a reference on its mapping, which is
    /// created if it does not exist yet (its external port already claimed
    /// by the caller), and on its permit. Returns its slab index.
    pub fn insert(&mut self, s: Session) -> Option<u32> {
        if self.sessions.len() >= self.capacity {
            return None;
        }
        let i = as_slot(self.sessions.len());
        self.sessions.push(Slot(s));
        self.by_in.insert(self.key_hash(&s.in_key()), i);
        self.by_out.insert(self.key_hash(&s.out_key()), i);
        if !s.is_static() {
            self.map_ref(&s);
            if self.tracking {
                let p = permit_of(s.proto, s.ext_ip, s.ext_port, s.rem_ip);
                self.permits.add(&self.hasher, &p);
            }
        }
        Some(i)
    }

    fn map_ref(&mut self, s: &Session) {
        let side = Side {
            proto: s.proto,
            ip: s.int_ip,
            port: s.int_port,
        };
        let h = self.side_hash(&side);
        let m = &self.mappings;
        let found = self.map_in.find(h, |i| {
            m.get(i as usize).is_some_and(|x| {
                x.int_ip == side.ip && x.int_port == side.port && x.proto == side.proto
            })
        });
        if let Some((_, i)) = found {
            if let Some(m) = self.mappings.get_mut(i as usize) {
                m.refs += 1;
            }
            return;
        }
        let i = as_slot(self.mappings.len());
        let m = Mapping {
            int_ip: s.int_ip,
            ext_ip: s.ext_ip,
            int_port: s.int_port,
            ext_port: s.ext_port,
            proto: s.proto,
            refs: 1,
        };
        self.mappings.push(m);
        self.map_in.insert(h, i);
        let out = Side {
            proto: s.proto,
            ip: s.ext_ip,
            port: s.ext_port,
        };
        self.map_out.insert(self.side_hash(&out), i);
    }

    /// Removes session `i`: its index entries, its permit and mapping
    /// references. Returns the session and the port freed if its mapping
    /// ended.
    pub fn remove(&mut self, i: u32) -> Option<(Session, Option<Freed>)> {
        let s = self.sessions.get(i as usize)?.0;
        let hin = self.key_hash(&s.in_key());
        let hout = self.key_hash(&s.out_key());
        if let Some(b) = self.by_in.bucket_of(hin, i) {
            self.by_in.remove_at(b);
        }
        if let Some(b) = self.by_out.bucket_of(hout, i) {
            self.by_out.remove_at(b);
        }
        let last = as_slot(self.sessions.len() - 1);
        if i != last
            && let Some(&Slot(moved)) = self.sessions.get(last as usize)
        {
            if let Some(b) = self.by_in.bucket_of(self.key_hash(&moved.in_key()), last) {
                self.by_in.repoint(b, i);
            }
            if let Some(b) = self.by_out.bucket_of(self.key_hash(&moved.out_key()), last) {
                self.by_out.repoint(b, i);
            }
        }
        self.sessions.swap_remove(i as usize);
        let mut freed = None;
        if !s.is_static() {
            if self.tracking {
                let p = permit_of(s.proto, s.ext_ip, s.ext_port, s.rem_ip);
                self.permits.sub(&self.hasher, &p);
            }
            freed = self.map_unref(&s);
        }
        Some((s, freed))
    }

    fn map_unref(&mut self, s: &Session) -> Option<Freed> {
        let side = Side {
            proto: s.proto,
            ip: s.int_ip,
            port: s.int_port,
        };
        let hin = self.side_hash(&side);
        let m = &self.mappings;
        let (bin, i) = self.map_in.find(hin, |i| {
            m.get(i as usize).is_some_and(|x| {
                x.int_ip == side.ip && x.int_port == side.port && x.proto == side.proto
            })
        })?;
        let map = self.mappings.get_mut(i as usize)?;
        map.refs = map.refs.saturating_sub(1);
        if map.refs > 0 {
            return None;
        }
        let map = *map;
        let out = Side {
            proto: map.proto,
            ip: map.ext_ip,
            port: map.ext_port,
        };
        let hout = self.side_hash(&out);
        self.map_in.remove_at(bin);
        if let Some(b) = self.map_out.bucket_of(hout, i) {
            self.map_out.remove_at(b);
        }
        let last = as_slot(self.mappings.len() - 1);
        if i != last
            && let Some(&moved) = self.mappings.get(last as usize)
        {
            let min = Side {
                proto: moved.proto,
                ip: moved.int_ip,
                port: moved.int_port,
            };
            let mout = Side {
                proto: moved.proto,
                ip: moved.ext_ip,
                port: moved.ext_port,
            };
            if let Some(b) = self.map_in.bucket_of(self.side_hash(&min), last) {
                self.map_in.repoint(b, i);
            }
            if let Some(b) = self.map_out.bucket_of(self.side_hash(&mout), last) {
                self.map_out.repoint(b, i);
            }
        }
        self.mappings.swap_remove(i as usize);
        Some(Freed {
            proto: map.proto,
            ext_ip: map.ext_ip,
            ext_port: map.ext_port,
        })
    }
}

fn permit_of(proto: u8, ext_ip: u32, ext_port: u16, rem_ip: u32) -> Permit {
    Permit {
        ext_ip,
        rem_ip,
        ext_port,
        proto,
        count: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sess(int_port: u16, ext_port: u16, rem_ip: u32, rem_port: u16) -> Session {
        Session {
            int_ip: 0x0a00_0001,
            ext_ip: 0xcb00_7101,
            rem_ip,
            int_port,
            ext_port,
            rem_port,
            proto: 17,
            ..Session::default()
        }
    }

    #[test]
    fn sessions_share_mapping_and_permits() {
        let mut t = Tables::new(8, 1);
        t.track_permits(true);
        let a = t.insert(sess(1000, 40000, 1, 53)).unwrap();
        let b = t.insert(sess(1000, 40000, 2, 53)).unwrap();
        let c = t.insert(sess(1000, 40000, 2, 54)).unwrap();
        assert_eq!(t.mappings.len(), 1);
        assert_eq!(t.mappings[0].refs, 3);
        let ext = Side {
            proto: 17,
            ip: 0xcb00_7101,
            port: 40000,
        };
        assert_eq!(t.permit_count(&ext, 2), 2);
        assert_eq!(t.permit_count(&ext, 1), 1);
        assert_eq!(t.permit_count(&ext, 3), 0);
        assert_eq!(t.find_in(&sess(1000, 40000, 2, 54).in_key()), Some(c));
        // Removing the first moves the last into its slot; lookups follow.
        let (_, freed) = t.remove(a).unwrap();
        assert_eq!(freed, None);
        assert_eq!(t.find_in(&sess(1000, 40000, 2, 54).in_key()), Some(a));
        assert_eq!(t.find_out(&sess(1000, 40000, 2, 54).out_key()), Some(a));
        assert_eq!(t.find_in(&sess(1000, 40000, 2, 53).in_key()), Some(b));
        assert_eq!(t.permit_count(&ext, 1), 0);
        t.remove(b).unwrap();
        let (_, freed) = t.remove(0).unwrap();
        assert_eq!(
            freed,
            Some(Freed {
                proto: 17,
                ext_ip: 0xcb00_7101,
                ext_port: 40000
            })
        );
        assert!(t.mappings.is_empty());
        assert_eq!(t.len(), 0);
        assert_eq!(t.permit_count(&ext, 2), 0);
    }

    #[test]
    fn full_table_refuses() {
        let mut t = Tables::new(2, 1);
        assert!(t.insert(sess(1, 1, 1, 1)).is_some());
        assert!(t.insert(sess(2, 2, 1, 1)).is_some());
        assert!(t.insert(sess(3, 3, 1, 1)).is_none());
    }

    #[test]
    fn permits_rebuilt_when_turned_on() {
        let mut t = Tables::new(8, 1);
        t.insert(sess(1000, 40000, 1, 53)).unwrap();
        t.insert(sess(1000, 40000, 1, 54)).unwrap();
        let ext = Side {
            proto: 17,
            ip: 0xcb00_7101,
            port: 40000,
        };
        assert_eq!(t.permit_count(&ext, 1), 0);
        t.track_permits(true);
        assert_eq!(t.permit_count(&ext, 1), 2);
        t.remove(0).unwrap();
        assert_eq!(t.permit_count(&ext, 1), 1);
        t.track_permits(false);
        assert_eq!(t.permit_count(&ext, 1), 0);
    }
}
