//! Persistence templates, as IPVS keeps them: with `persistence_timeout`, a
//! template per (protocol, client address masked by
//! `persistence_granularity`, virtual address, virtual port) names the real
//! server the client's connections go to. It lives while connections use
//! it (each holds a reference) and expires `persistence_timeout` seconds
//! after the last of them ended: closed (FIN both ways, or a RST: the
//! reference is released then, not when TIME_WAIT is reaped) or expired;
//! a new connection of the client refreshes it.
//!
//! Allocated once: a slab of 28-byte entries with stable slots (a
//! connection names its template's slot), a free list, and an [`Index`] by
//! key. A template whose server can no longer take new connections is
//! *retired*: out of the index (so the client is scheduled anew and gets a
//! new template) but kept until its last connection ends. Capacity: one
//! template per connection slot (a template is made with a connection).

use nat::index::{Hasher, Index};

/// One template (28 bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub(crate) struct Template {
    /// Client address, masked.
    pub client: u32,
    pub vip: u32,
    /// The real server (server arena index).
    pub dest: u32,
    /// Connections holding it.
    pub refs: u32,
    /// Tick from which the timeout counts: the last use, or the end of
    /// the last connection.
    pub seen: u32,
    /// Its timeout, ticks.
    pub timeout: u32,
    pub vport: u16,
    pub proto: u8,
    /// `IN_USE | INDEXED` (0: a free slot).
    pub flags: u8,
}

const _: () = assert!(std::mem::size_of::<Template>() == 28);

/// Template flag: the slot holds a template.
pub(crate) const IN_USE: u8 = 0x01;
/// Template flag: findable by key (not retired).
pub(crate) const INDEXED: u8 = 0x02;

/// A template's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub(crate) struct TKey {
    pub proto: u8,
    pub client: u32,
    pub vip: u32,
    pub vport: u16,
}

impl TKey {
    fn words(&self) -> (u64, u64) {
        (
            (u64::from(self.client) << 32) | u64::from(self.vip),
            (u64::from(self.vport) << 8) | u64::from(self.proto),
        )
    }
}

impl Template {
    pub fn key(&self) -> TKey {
        TKey {
            proto: self.proto,
            client: self.client,
            vip: self.vip,
            vport: self.vport,
        }
    }

    fn is(&self, k: &TKey) -> bool {
        self.client == k.client
            && self.vip == k.vip
            && self.vport == k.vport
            && self.proto == k.proto
    }

    pub fn in_use(&self) -> bool {
        self.flags & IN_USE != 0
    }

    pub fn indexed(&self) -> bool {
        self.flags & INDEXED != 0
    }
}

/// The templates (see the module docs).
#[derive(Debug, Clone)]
pub(crate) struct Templates {
    hasher: Hasher,
    slab: Vec<Template>,
    free: Vec<u32>,
    index: Index,
}

impl Templates {
    pub fn new(capacity: usize, seed: u64) -> Templates {
        let capacity = capacity.min(nat::index::MAX_ENTRIES);
        let slots = u32::try_from(capacity).unwrap_or(u32::MAX);
        Templates {
            hasher: Hasher::new(seed),
            slab: vec![Template::default(); capacity],
            // Popped from the end: slot 0 first.
            free: (0..slots).rev().collect(),
            index: Index::new(capacity),
        }
    }

    /// Templates held (retired ones included): the slots not free.
    pub fn len(&self) -> usize {
        self.slab.len() - self.free.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn is_full(&self) -> bool {
        self.free.is_empty()
    }

    pub fn memory_bytes(&self) -> usize {
        self.slab.capacity() * std::mem::size_of::<Template>()
            + self.free.capacity() * std::mem::size_of::<u32>()
            + self.index.bytes()
    }

    fn hash(&self, k: &TKey) -> u64 {
        let (a, b) = k.words();
        self.hasher.hash(a, b)
    }

    /// The live (indexed) template of `k`.
    #[inline]
    pub fn find(&self, k: &TKey) -> Option<u32> {
        let s = &self.slab;
        self.index
            .find(self.hash(k), |i| {
                s.get(i as usize)
                    .is_some_and(|t| t.in_use() && t.indexed() && t.is(k))
            })
            .map(|(_, i)| i)
    }

    pub fn get(&self, i: u32) -> Option<&Template> {
        self.slab.get(i as usize).filter(|t| t.in_use())
    }

    pub fn get_mut(&mut self, i: u32) -> Option<&mut Template> {
        self.slab.get_mut(i as usize).filter(|t| t.in_use())
    }

    /// Every slot (free ones have no `IN_USE` flag).
    pub fn slots(&self) -> &[Template] {
        &self.slab
    }

    pub fn slot_count(&self) -> usize {
        self.slab.len()
    }

    /// Adds `t` (its key absent), indexed. `None` when full.
    pub fn insert(&mut self, t: Template) -> Option<u32> {
        let i = self.free.pop()?;
        let h = self.hash(&t.key());
        let e = self.slab.get_mut(i as usize)?;
        *e = Template {
            flags: IN_USE | INDEXED,
            ..t
        };
        self.index.insert(h, i);
        Some(i)
    }

    /// Takes template `i` out of the index (it stays until freed).
    pub fn retire(&mut self, i: u32) {
        let Some(t) = self.slab.get(i as usize).copied() else {
            return;
        };
        if !t.in_use() || !t.indexed() {
            return;
        }
        if let Some(b) = self.index.bucket_of(self.hash(&t.key()), i) {
            self.index.remove_at(b);
        }
        if let Some(e) = self.slab.get_mut(i as usize) {
            e.flags &= !INDEXED;
        }
    }

    /// Frees slot `i` (retiring it first). Returns the template.
    pub fn free(&mut self, i: u32) -> Option<Template> {
        let t = *self.slab.get(i as usize).filter(|t| t.in_use())?;
        self.retire(i);
        if let Some(e) = self.slab.get_mut(i as usize) {
            *e = Template::default();
        }
        // The free list was allocated for every slot: no growth.
        self.free.push(i);
        Some(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(client: u32) -> Template {
        Template {
            client,
            vip: 7,
            vport: 80,
            proto: 6,
            ..Template::default()
        }
    }

    #[test]
    fn insert_retire_free() {
        let mut ts = Templates::new(2, 1);
        let a = ts.insert(t(1)).unwrap();
        let b = ts.insert(t(2)).unwrap();
        assert!(ts.insert(t(3)).is_none());
        assert_eq!(ts.find(&t(1).key()), Some(a));
        ts.retire(a);
        assert_eq!(ts.find(&t(1).key()), None);
        assert!(ts.get(a).is_some());
        assert_eq!(ts.len(), 2);
        ts.free(a).unwrap();
        assert!(ts.get(a).is_none());
        assert_eq!(ts.len(), 1);
        let c = ts.insert(t(1)).unwrap();
        assert_eq!(c, a);
        assert_eq!(ts.find(&t(2).key()), Some(b));
        assert_eq!(ts.find(&t(1).key()), Some(c));
    }
}
