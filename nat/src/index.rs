//! Keyed hashing and the fixed-capacity hash index the NAT's tables (and
//! the `lb` engine's connections and persistence templates) are looked up
//! through.
//!
//! [`Hasher`]: two folded 64x64->128-bit multiplications of a key packed into
//! two words, keyed with a per-engine random seed so that remote senders
//! cannot precompute tuples that collide.
//!
//! [`ConfigMap`]: a `HashMap` with a fast unkeyed hasher, for the maps
//! keyed by configuration (addresses, virtual servers) that packets look
//! up: their keys are trusted, and SipHash would cost more than the
//! table lookup it guards.
//!
//! [`Index`]: open addressing with linear probing over `u64` buckets, each
//! the high 32 bits of the key's hash (the tag) and the slab index + 1 of
//! the entry (0 = empty). The home bucket comes from the tag (Lemire's
//! multiply-shift over a bucket count that need not be a power of two), so
//! removal can shift a run back (no tombstones, no degradation under
//! churn) without reading the entries, and a probe reads an entry only
//! when its 32-bit tag matches. The bucket count is `capacity * 5/4 + 1`:
//! load at most 0.8, always one empty bucket, 10 bytes per entry.

/// Largest number of entries an index (and a table) can hold.
pub const MAX_ENTRIES: usize = 1 << 26;

/// 64x64 -> 128-bit multiply, folded to 64 bits.
#[allow(
    clippy::cast_possible_truncation,
    reason = "folds the 128-bit product: its low and high halves, xored"
)]
#[inline(always)]
fn fold_mul(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

/// SplitMix64: spreads one seed into several.
pub fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// SplitMix64's finaliser of one word (no state): a fixed mix (the `lb`
/// engine's hashing schedulers must agree across balancers).
pub fn mix64(x: u64) -> u64 {
    let mut s = x;
    splitmix(&mut s)
}

/// The hasher of [`ConfigMap`]: one multiplication for a `u32`,
/// [`mix64`] for a `u64`, a multiplicative fold over other bytes. Not
/// keyed: for keys from the configuration, never from packets alone.
#[derive(Debug, Default, Clone, Copy)]
pub struct ConfigHasher(u64);

impl std::hash::Hasher for ConfigHasher {
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

    fn write_u64(&mut self, n: u64) {
        self.0 = mix64(n);
    }
}

/// A `HashMap` keyed by configuration (see [`ConfigHasher`]).
pub type ConfigMap<K, V> =
    std::collections::HashMap<K, V, std::hash::BuildHasherDefault<ConfigHasher>>;

/// Linear probing's backward-shift deletion: whether the entry at bucket
/// `j`, whose home is `home`, may stay when bucket `hole` empties, i.e.
/// whether its home lies cyclically in (hole, j].
#[inline(always)]
pub(crate) fn stays(hole: usize, home: usize, j: usize) -> bool {
    if hole <= j {
        hole < home && home <= j
    } else {
        hole < home || home <= j
    }
}

/// A keyed hash of two words.
#[derive(Debug, Clone, Copy)]
pub struct Hasher {
    seed: [u64; 3],
}

impl Hasher {
    pub fn new(seed: u64) -> Hasher {
        let mut s = seed;
        Hasher {
            seed: [splitmix(&mut s), splitmix(&mut s), splitmix(&mut s) | 1],
        }
    }

    #[inline(always)]
    pub fn hash(&self, a: u64, b: u64) -> u64 {
        fold_mul(fold_mul(a ^ self.seed[0], b ^ self.seed[1]), self.seed[2])
    }
}

#[allow(
    clippy::cast_possible_truncation,
    reason = "the tag is the hash's high half"
)]
#[inline(always)]
fn tag_of(h: u64) -> u32 {
    (h >> 32) as u32
}

#[allow(
    clippy::cast_possible_truncation,
    reason = "an entry's low half is its slab index + 1"
)]
#[inline(always)]
fn slot_of(e: u64) -> u32 {
    (e as u32).wrapping_sub(1)
}

/// Buckets for `capacity` entries.
pub fn buckets_for(capacity: usize) -> usize {
    capacity + capacity / 4 + 1
}

/// An open-addressing index from hashes to slab indexes (see the module docs).
#[derive(Clone)]
pub struct Index {
    buckets: Box<[u64]>,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index")
            .field("buckets", &self.buckets.len())
            .finish_non_exhaustive()
    }
}

impl Index {
    /// An index for up to `capacity` entries (at most [`MAX_ENTRIES`]).
    pub fn new(capacity: usize) -> Index {
        Index {
            buckets: vec![0; buckets_for(capacity.min(MAX_ENTRIES))].into_boxed_slice(),
        }
    }

    pub fn bytes(&self) -> usize {
        self.buckets.len() * std::mem::size_of::<u64>()
    }

    #[allow(
        clippy::cast_possible_truncation,
        reason = "multiply-shift range reduction: below the bucket count"
    )]
    #[inline(always)]
    fn home(&self, tag: u32) -> usize {
        ((u64::from(tag) * self.buckets.len() as u64) >> 32) as usize
    }

    #[inline(always)]
    fn next(&self, i: usize) -> usize {
        if i + 1 == self.buckets.len() {
            0
        } else {
            i + 1
        }
    }

    /// The bucket and slab index of the first entry with hash `h` that `eq`
    /// accepts.
    #[inline(always)]
    pub fn find(&self, h: u64, eq: impl Fn(u32) -> bool) -> Option<(usize, u32)> {
        let tag = tag_of(h);
        let mut i = self.home(tag);
        for _ in 0..self.buckets.len() {
            let e = self.buckets[i];
            if e == 0 {
                return None;
            }
            if tag_of(e) == tag && eq(slot_of(e)) {
                return Some((i, slot_of(e)));
            }
            i = self.next(i);
        }
        None
    }

    /// The bucket holding slab index `slot` under hash `h`.
    pub fn bucket_of(&self, h: u64, slot: u32) -> Option<usize> {
        self.find(h, |s| s == slot).map(|(b, _)| b)
    }

    /// Adds slab index `slot` under hash `h`. The caller keeps the entry
    /// count within the capacity, so a bucket is always free.
    pub fn insert(&mut self, h: u64, slot: u32) {
        let tag = tag_of(h);
        let mut i = self.home(tag);
        for _ in 0..self.buckets.len() {
            if self.buckets[i] == 0 {
                self.buckets[i] = (u64::from(tag) << 32) | u64::from(slot.wrapping_add(1));
                return;
            }
            i = self.next(i);
        }
    }

    /// Points bucket `b` at slab index `slot` (an entry moved in its slab).
    pub fn repoint(&mut self, b: usize, slot: u32) {
        if let Some(e) = self.buckets.get_mut(b) {
            *e = (*e & !0xffff_ffff) | u64::from(slot.wrapping_add(1));
        }
    }

    /// Empties bucket `b`, shifting back the entries after it whose home
    /// is not between (linear probing's deletion, no tombstone).
    pub fn remove_at(&mut self, b: usize) {
        if b >= self.buckets.len() {
            return;
        }
        let mut hole = b;
        let mut j = b;
        for _ in 0..self.buckets.len() {
            j = self.next(j);
            let e = self.buckets[j];
            if e == 0 {
                break;
            }
            let k = self.home(tag_of(e));
            let stays = stays(hole, k, j);
            if !stays {
                self.buckets[hole] = e;
                hole = j;
            }
        }
        self.buckets[hole] = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_find_remove_under_churn() {
        let h = Hasher::new(7);
        let cap = 1000;
        let mut idx = Index::new(cap);
        // A model: slot -> key; keys hashed with a few forced collisions.
        let key = |k: u64| h.hash(k % 700, 0);
        let mut live: Vec<Option<u64>> = vec![None; cap];
        let mut x = 1u64;
        for round in 0..20_000u64 {
            x = splitmix(&mut x);
            let slot = usize::try_from(x % cap as u64).unwrap();
            let s32 = u32::try_from(slot).unwrap();
            match live[slot] {
                Some(k) => {
                    let b = idx.bucket_of(key(k), s32).expect("present");
                    idx.remove_at(b);
                    live[slot] = None;
                }
                None => {
                    idx.insert(key(round), s32);
                    live[slot] = Some(round);
                }
            }
            if round % 1000 == 0 {
                for (s, k) in live.iter().enumerate() {
                    if let Some(k) = k {
                        let s32 = u32::try_from(s).unwrap();
                        assert!(idx.bucket_of(key(*k), s32).is_some());
                    }
                }
            }
        }
        // Fill to capacity: every entry still found.
        for (s, k) in live.iter_mut().enumerate() {
            if k.is_none() {
                *k = Some(1_000_000 + s as u64);
                idx.insert(key(k.unwrap()), u32::try_from(s).unwrap());
            }
        }
        for (s, k) in live.iter().enumerate() {
            assert!(
                idx.bucket_of(key(k.unwrap()), u32::try_from(s).unwrap())
                    .is_some()
            );
        }
    }

    #[test]
    fn seeds_differ() {
        assert_ne!(Hasher::new(1).hash(5, 6), Hasher::new(2).hash(5, 6));
        assert_ne!(Hasher::new(1).hash(5, 6), Hasher::new(1).hash(6, 5));
    }
}
