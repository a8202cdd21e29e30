//! Maglev consistent hashing (Eisenbud et al., NSDI 2016) for the `mh`
//! scheduler: a lookup table of a prime size, [`TABLE_SIZE`] = 65537,
//! where each server claims entries in the order of its own permutation
//! (offset and skip from a hash of its address and port), and a client's
//! address hashes to an entry.
//!
//! * Equal weights: the servers take turns, one entry each, so their
//!   shares differ by at most one entry (with 1,000 servers, 65 or 66 of
//!   65,537: within 0.7% of the mean).
//! * Weights: the turns follow stride scheduling (each claim advances a
//!   server's pass by 2^32 / weight; the lowest pass claims next, ties in
//!   server order), so every share is within one entry of its weight's.
//! * Removing one server of n moves its 1/n of the table and a little
//!   more (the others' permutations meet other filled entries): with 10
//!   servers, about 10-12% of the flows.
//!
//! The hashes are fixed (no per-process key): every balancer running the
//! same configuration builds the same table and sends a client to the
//! same server, which is what consistent hashing is for when several
//! agents balance one virtual server. Built when the configuration
//! changes (a few milliseconds for 1,000 servers), never per packet.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use nat::index::mix64;

/// The table size: a prime (2^16 + 1).
pub const TABLE_SIZE: u32 = 65_537;

/// A Maglev lookup table.
#[derive(Clone)]
pub struct Maglev {
    /// Member position per entry; empty when no server has a weight.
    table: Vec<u16>,
    /// What it was built from: (address, port, weight) per member.
    from: Vec<(u32, u16, u32)>,
}

impl std::fmt::Debug for Maglev {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Maglev")
            .field("entries", &self.table.len())
            .field("servers", &self.from.len())
            .finish()
    }
}

/// A server's permutation: first entry and step.
fn permutation(ip: u32, port: u16) -> (u32, u32) {
    let key = (u64::from(ip) << 16) | u64::from(port);
    let h1 = mix64(key ^ 0x6d61_676c_6576_0001);
    let h2 = mix64(key ^ 0x6d61_676c_6576_0002);
    let m = u64::from(TABLE_SIZE);
    let offset = u32::try_from(h1 % m).unwrap_or(0);
    let skip = u32::try_from(h2 % (m - 1) + 1).unwrap_or(1);
    (offset, skip)
}

/// The entry a client address hashes to.
#[inline(always)]
fn entry_of(client: u32) -> usize {
    let h = mix64(u64::from(client) ^ 0x6d68_5f63_6c69_656e);
    usize::try_from(h % u64::from(TABLE_SIZE)).unwrap_or(0)
}

impl Maglev {
    /// The table for members `(address, port, weight)`, in order
    /// (positions above 65535 are never given entries: the configuration
    /// refuses them).
    pub fn new(members: &[(u32, u16, u32)]) -> Maglev {
        let size = TABLE_SIZE as usize;
        let live: Vec<usize> = members
            .iter()
            .enumerate()
            .filter(|(i, m)| m.2 > 0 && u16::try_from(*i).is_ok())
            .map(|(i, _)| i)
            .collect();
        if live.is_empty() {
            return Maglev {
                table: Vec::new(),
                from: members.to_vec(),
            };
        }
        const EMPTY: u16 = u16::MAX;
        // u16::MAX is also a valid position (the 65536th member): track
        // filled entries in a bitmap, not by the marker.
        let mut table = vec![EMPTY; size];
        let mut filled = vec![0u64; size.div_ceil(64)];
        let mut cursor: Vec<(u32, u32)> = live
            .iter()
            .map(|&i| permutation(members[i].0, members[i].1))
            .collect();
        let mut claim = |k: usize, cursor: &mut Vec<(u32, u32)>| {
            let (mut c, skip) = cursor[k];
            loop {
                let (w, b) = (c as usize / 64, 1u64 << (c % 64));
                if filled[w] & b == 0 {
                    filled[w] |= b;
                    table[c as usize] = u16::try_from(live[k]).unwrap_or(EMPTY);
                    break;
                }
                c += skip;
                if c >= TABLE_SIZE {
                    c -= TABLE_SIZE;
                }
            }
            cursor[k].0 = c;
        };
        let w0 = members[live[0]].2;
        if live.iter().all(|&i| members[i].2 == w0) {
            // Equal weights: turns in order.
            let mut n = 0;
            'rounds: loop {
                for k in 0..live.len() {
                    claim(k, &mut cursor);
                    n += 1;
                    if n == size {
                        break 'rounds;
                    }
                }
            }
        } else {
            // Stride scheduling: the lowest pass claims next.
            let stride = |k: usize| (1u64 << 32) / u64::from(members[live[k]].2.max(1));
            let mut heap: BinaryHeap<Reverse<(u64, usize)>> =
                (0..live.len()).map(|k| Reverse((stride(k), k))).collect();
            for _ in 0..size {
                let Some(Reverse((pass, k))) = heap.pop() else {
                    break;
                };
                claim(k, &mut cursor);
                heap.push(Reverse((pass + stride(k), k)));
            }
        }
        Maglev {
            table,
            from: members.to_vec(),
        }
    }

    /// Whether this table was built from exactly these members.
    pub(crate) fn built_from(&self, members: &[(u32, u16, u32)]) -> bool {
        self.from == members
    }

    /// The member position client address `client` goes to.
    #[inline(always)]
    pub fn get(&self, client: u32) -> Option<u16> {
        self.table.get(entry_of(client)).copied()
    }

    /// Entries per member position.
    pub fn shares(&self) -> Vec<u32> {
        let mut n = vec![0u32; self.from.len()];
        for &p in &self.table {
            if let Some(x) = n.get_mut(usize::from(p)) {
                *x += 1;
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servers(n: u32, weight: impl Fn(u32) -> u32) -> Vec<(u32, u16, u32)> {
        (0..n).map(|i| (0x0a00_0000 + i, 8080, weight(i))).collect()
    }

    /// Largest share over its weight's share, less 1.
    fn imbalance(m: &Maglev, s: &[(u32, u16, u32)]) -> f64 {
        let total: f64 = s.iter().map(|x| f64::from(x.2)).sum();
        m.shares()
            .iter()
            .zip(s)
            .filter(|(_, x)| x.2 > 0)
            .map(|(&n, x)| f64::from(n) / (f64::from(TABLE_SIZE) * f64::from(x.2) / total) - 1.0)
            .fold(0.0, f64::max)
    }

    #[test]
    fn equal_and_weighted_shares_within_one_percent() {
        for n in [1, 2, 10, 1000] {
            let s = servers(n, |_| 1);
            let m = Maglev::new(&s);
            assert!(imbalance(&m, &s) <= 0.01, "{n}: {}", imbalance(&m, &s));
            assert_eq!(m.shares().iter().sum::<u32>(), TABLE_SIZE);
        }
        let s = servers(10, |i| i + 1);
        let m = Maglev::new(&s);
        assert!(imbalance(&m, &s) <= 0.01, "{}", imbalance(&m, &s));
        // Weight 0 gets nothing.
        let s = servers(4, |i| if i == 2 { 0 } else { 3 });
        let m = Maglev::new(&s);
        assert_eq!(m.shares()[2], 0);
        assert!(Maglev::new(&servers(3, |_| 0)).get(1).is_none());
    }

    #[test]
    fn removing_one_of_ten_moves_little() {
        let s = servers(10, |_| 1);
        let before = Maglev::new(&s);
        let mut fewer = s.clone();
        fewer.remove(3);
        let after = Maglev::new(&fewer);
        let moved = (0..10_000u32)
            .filter(|i| {
                let c = 0xc000_0000 + i * 7;
                let a = s[usize::from(before.get(c).unwrap())];
                let b = fewer[usize::from(after.get(c).unwrap())];
                a != b
            })
            .count();
        assert!(moved <= 1200, "{moved} of 10000 moved");
        assert!(
            moved >= 800,
            "{moved}: the removed server's share must move"
        );
    }
}
