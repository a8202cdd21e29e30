//! The connection table, allocated once for its capacity: a dense slab of
//! 40-byte [`Conn`]s indexed twice ([`Index`]): by the forward 5-tuple
//! (client, virtual server: what the client sends) and by the reverse one
//! (real server, and the client or, full NAT, the SNAT endpoint: what the
//! real server sends back). A removal moves the last entry into the hole
//! and repoints its two index entries, so the slab stays dense for the
//! sweep and the listing.
//!
//! Memory per connection at full load: 40 + 2 indexes x 10 = 60 bytes; the
//! persistence templates ([`crate::engine::persist`]) add theirs.

use nat::index::{Hasher, Index};

/// Connection flag: it holds a persistence template reference.
pub(crate) const TEMPLATED: u8 = 0x04;
/// Connection flag: full NAT (the local endpoint is the SNAT one).
pub(crate) const FNAT: u8 = 0x08;

/// One connection (40 bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub(crate) struct Conn {
    pub client_ip: u32,
    pub vip: u32,
    pub real_ip: u32,
    /// Full NAT: the SNAT address; NAT: the client's address again.
    pub local_ip: u32,
    pub client_port: u16,
    pub vport: u16,
    pub real_port: u16,
    /// Full NAT: the allocated SNAT port; NAT: the client's port again.
    pub local_port: u16,
    /// The real server (an index into the balancer's server arena).
    pub dest: u32,
    /// The persistence template's slot, if `TEMPLATED`.
    pub tmpl: u32,
    /// Last-seen tick.
    pub seen: u32,
    pub proto: u8,
    /// `ConnState` code.
    pub state: u8,
    /// `FIN_IN | FIN_OUT | TEMPLATED | FNAT`.
    pub flags: u8,
    pub pad: u8,
}

const _: () = assert!(std::mem::size_of::<Conn>() == 40);

/// A 5-tuple as the table keys it: the address and port a packet comes
/// from or goes to on one side, the other side's, the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub(crate) struct Key {
    pub proto: u8,
    pub a_ip: u32,
    pub a_port: u16,
    pub b_ip: u32,
    pub b_port: u16,
}

impl Key {
    #[inline(always)]
    fn words(&self) -> (u64, u64) {
        (
            (u64::from(self.a_ip) << 32) | u64::from(self.b_ip),
            (u64::from(self.a_port) << 24) | (u64::from(self.b_port) << 8) | u64::from(self.proto),
        )
    }
}

impl Conn {
    /// Client, virtual server.
    #[inline(always)]
    pub fn fwd_key(&self) -> Key {
        Key {
            proto: self.proto,
            a_ip: self.client_ip,
            a_port: self.client_port,
            b_ip: self.vip,
            b_port: self.vport,
        }
    }

    /// Real server, local (client or SNAT) endpoint.
    #[inline(always)]
    pub fn rev_key(&self) -> Key {
        Key {
            proto: self.proto,
            a_ip: self.real_ip,
            a_port: self.real_port,
            b_ip: self.local_ip,
            b_port: self.local_port,
        }
    }

    #[inline(always)]
    fn fwd_is(&self, k: &Key) -> bool {
        self.client_ip == k.a_ip
            && self.vip == k.b_ip
            && self.client_port == k.a_port
            && self.vport == k.b_port
            && self.proto == k.proto
    }

    #[inline(always)]
    fn rev_is(&self, k: &Key) -> bool {
        self.real_ip == k.a_ip
            && self.local_ip == k.b_ip
            && self.real_port == k.a_port
            && self.local_port == k.b_port
            && self.proto == k.proto
    }
}

/// The connections and their two indexes.
#[derive(Debug, Clone)]
pub(crate) struct Conns {
    hasher: Hasher,
    capacity: usize,
    slab: Vec<Conn>,
    by_fwd: Index,
    by_rev: Index,
}

pub(crate) fn as_slot(i: usize) -> u32 {
    u32::try_from(i).unwrap_or(u32::MAX)
}

impl Conns {
    pub fn new(capacity: usize, seed: u64) -> Conns {
        let capacity = capacity.min(nat::index::MAX_ENTRIES);
        Conns {
            hasher: Hasher::new(seed),
            capacity,
            slab: Vec::with_capacity(capacity),
            by_fwd: Index::new(capacity),
            by_rev: Index::new(capacity),
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn len(&self) -> usize {
        self.slab.len()
    }

    /// Bytes held, counted from the allocations.
    pub fn memory_bytes(&self) -> usize {
        self.slab.capacity() * std::mem::size_of::<Conn>()
            + self.by_fwd.bytes()
            + self.by_rev.bytes()
    }

    #[inline(always)]
    fn hash(&self, k: &Key) -> u64 {
        let (a, b) = k.words();
        self.hasher.hash(a, b)
    }

    /// The connection with forward 5-tuple `k`.
    #[inline(always)]
    pub fn find_fwd(&self, k: &Key) -> Option<u32> {
        let s = &self.slab;
        self.by_fwd
            .find(self.hash(k), |i| {
                s.get(i as usize).is_some_and(|c| c.fwd_is(k))
            })
            .map(|(_, i)| i)
    }

    /// The connection with reverse 5-tuple `k`.
    #[inline(always)]
    pub fn find_rev(&self, k: &Key) -> Option<u32> {
        let s = &self.slab;
        self.by_rev
            .find(self.hash(k), |i| {
                s.get(i as usize).is_some_and(|c| c.rev_is(k))
            })
            .map(|(_, i)| i)
    }

    #[inline(always)]
    pub fn get(&self, i: u32) -> Option<&Conn> {
        self.slab.get(i as usize)
    }

    #[inline(always)]
    pub fn get_mut(&mut self, i: u32) -> Option<&mut Conn> {
        self.slab.get_mut(i as usize)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Conn> + '_ {
        self.slab.iter()
    }

    /// Adds `c` (absent by both keys). `None` when full.
    pub fn insert(&mut self, c: Conn) -> Option<u32> {
        if self.slab.len() >= self.capacity {
            return None;
        }
        let i = as_slot(self.slab.len());
        let (hf, hr) = (self.hash(&c.fwd_key()), self.hash(&c.rev_key()));
        self.slab.push(c);
        self.by_fwd.insert(hf, i);
        self.by_rev.insert(hr, i);
        Some(i)
    }

    /// Removes connection `i` (the last one moves into its slot).
    pub fn remove(&mut self, i: u32) -> Option<Conn> {
        let c = *self.slab.get(i as usize)?;
        if let Some(b) = self.by_fwd.bucket_of(self.hash(&c.fwd_key()), i) {
            self.by_fwd.remove_at(b);
        }
        if let Some(b) = self.by_rev.bucket_of(self.hash(&c.rev_key()), i) {
            self.by_rev.remove_at(b);
        }
        let last = as_slot(self.slab.len() - 1);
        if i != last
            && let Some(&moved) = self.slab.get(last as usize)
        {
            if let Some(b) = self.by_fwd.bucket_of(self.hash(&moved.fwd_key()), last) {
                self.by_fwd.repoint(b, i);
            }
            if let Some(b) = self.by_rev.bucket_of(self.hash(&moved.rev_key()), last) {
                self.by_rev.repoint(b, i);
            }
        }
        self.slab.swap_remove(i as usize);
        Some(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(cport: u16, lport: u16) -> Conn {
        Conn {
            client_ip: 0x0a00_0001,
            vip: 0x0a40_0102,
            real_ip: 0xc0a8_0164,
            local_ip: 0xc0a8_0001,
            client_port: cport,
            vport: 80,
            real_port: 8080,
            local_port: lport,
            proto: 6,
            ..Conn::default()
        }
    }

    #[test]
    fn both_keys_follow_moves() {
        let mut t = Conns::new(4, 1);
        let a = t.insert(conn(1000, 2000)).unwrap();
        t.insert(conn(1001, 2001)).unwrap();
        t.insert(conn(1002, 2002)).unwrap();
        t.insert(conn(1003, 2003)).unwrap();
        assert!(t.insert(conn(1004, 2004)).is_none());
        t.remove(a).unwrap();
        assert_eq!(t.find_fwd(&conn(1003, 2003).fwd_key()), Some(a));
        assert_eq!(t.find_rev(&conn(1003, 2003).rev_key()), Some(a));
        assert_eq!(t.find_fwd(&conn(1000, 2000).fwd_key()), None);
        assert_eq!(t.find_rev(&conn(1000, 2000).rev_key()), None);
        assert_eq!(t.len(), 3);
        assert_eq!(t.find_rev(&conn(1002, 2002).rev_key()), Some(2));
    }
}
