//! The external ports of one (external address, protocol): a 64 Ki-bit
//! bitmap of the ports in use plus a 1 Ki-bit summary of its full words, so
//! finding a free port is bounded work (at most 16 summary words and 2
//! bitmap words) however full the pool is.
//!
//! Ports outside the configured range are marked used at construction and
//! never handed out. [`PortMap::find`] is pure (the engine's judgement
//! calls it); [`PortMap::claim`] and [`PortMap::release`] are the writes.

/// Words of the bitmap (65536 / 64).
const WORDS: usize = 1024;
/// Words of the summary (1024 / 64).
const SUMMARY: usize = WORDS / 64;

/// Ports in use of one external address and protocol.
#[derive(Clone)]
pub(crate) struct PortMap {
    /// Bit `p % 64` of word `p / 64` is set when port `p` is taken or out
    /// of range.
    used: Box<[u64; WORDS]>,
    /// Bit `w % 64` of word `w / 64` is set when `used[w]` is all ones.
    full: [u64; SUMMARY],
    /// Ports handed out (live mappings).
    taken: u32,
    /// Ports in range: `first..=last`, `size` of them.
    first: u16,
    last: u16,
    size: u32,
    /// Allocations that found no free port.
    pub failures: u64,
}

impl std::fmt::Debug for PortMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortMap")
            .field("taken", &self.taken)
            .field("size", &self.size)
            .field("failures", &self.failures)
            .finish_non_exhaustive()
    }
}

fn split(port: u16) -> (usize, u64) {
    (usize::from(port >> 6), 1u64 << (port & 63))
}

/// The port of bit `bit` (0..64) of word `w` (0..1024).
#[allow(
    clippy::cast_possible_truncation,
    reason = "w < 1024 and bit < 64, so the port is below 65536"
)]
fn port_of(w: usize, bit: u32) -> u16 {
    ((w << 6) | bit as usize) as u16
}

impl PortMap {
    /// A map where only the ports `first..=last` can be handed out.
    pub fn new(first: u16, last: u16) -> PortMap {
        let mut m = PortMap {
            used: Box::new([u64::MAX; WORDS]),
            full: [u64::MAX; SUMMARY],
            taken: 0,
            first,
            last,
            size: 0,
            failures: 0,
        };
        if first <= last {
            for p in first..=last {
                let (w, b) = split(p);
                m.used[w] &= !b;
            }
            m.size = u32::from(last) - u32::from(first) + 1;
        }
        for w in 0..WORDS {
            m.sync(w);
        }
        m
    }

    /// Updates the summary bit of word `w`.
    fn sync(&mut self, w: usize) {
        let bit = 1u64 << (w & 63);
        if self.used[w] == u64::MAX {
            self.full[w >> 6] |= bit;
        } else {
            self.full[w >> 6] &= !bit;
        }
    }

    pub fn is_free(&self, port: u16) -> bool {
        let (w, b) = split(port);
        self.used[w] & b == 0
    }

    pub fn taken(&self) -> u32 {
        self.taken
    }

    pub fn size(&self) -> u32 {
        self.size
    }

    /// A free port: `preferred` if it is free (port preservation), else
    /// the first free one from `start` on, wrapping around. `None` when
    /// every port in range is taken. Changes nothing.
    pub fn find(&self, preferred: u16, start: u16) -> Option<u16> {
        if self.is_free(preferred) {
            return Some(preferred);
        }
        if self.taken >= self.size {
            return None;
        }
        let (w0, _) = split(start);
        // The start word, from the start bit up.
        let mask = !((1u64 << (start & 63)) - 1);
        let free = !self.used[w0] & mask;
        if free != 0 {
            return Some(port_of(w0, free.trailing_zeros()));
        }
        // Then the next word with a free port, by the summary, wrapping
        // around to the start word's low bits at the end.
        let from = w0 + 1;
        let (s0, b0) = (from >> 6, from & 63);
        for k in 0..=SUMMARY {
            let s = (s0 + k) % SUMMARY;
            let mut open = !self.full[s];
            if k == 0 {
                // Words at or after `from` only (none when `from` starts the
                // next summary word: b0 == 0 keeps them all).
                open &= !((1u64 << b0) - 1);
            }
            if open != 0 {
                let w = (s << 6) | open.trailing_zeros() as usize;
                return Some(port_of(w, (!self.used[w]).trailing_zeros()));
            }
        }
        None
    }

    /// Marks `port` taken. Returns false (and changes nothing) if it was.
    pub fn claim(&mut self, port: u16) -> bool {
        let (w, b) = split(port);
        if self.used[w] & b != 0 {
            return false;
        }
        self.used[w] |= b;
        self.taken += 1;
        self.sync(w);
        true
    }

    /// Frees `port`. Returns false if it was not taken.
    pub fn release(&mut self, port: u16) -> bool {
        let (w, b) = split(port);
        if self.used[w] & b == 0 || !self.in_range(port) {
            return false;
        }
        self.used[w] &= !b;
        self.taken -= 1;
        self.sync(w);
        true
    }

    /// Whether `port` is one this map hands out.
    fn in_range(&self, port: u16) -> bool {
        self.size > 0 && (self.first..=self.last).contains(&port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preserves_then_probes() {
        let mut m = PortMap::new(1024, 65535);
        assert_eq!(m.size(), 64512);
        assert_eq!(m.find(5000, 7), Some(5000));
        // Below the range: never preserved, probed from the start.
        assert_eq!(m.find(80, 2000), Some(2000));
        assert!(m.claim(2000));
        assert!(!m.claim(2000));
        assert_eq!(m.find(2000, 2000), Some(2001));
        assert_eq!(m.taken(), 1);
        assert!(m.release(2000));
        assert!(!m.release(2000));
        assert!(!m.release(80));
        assert_eq!(m.taken(), 0);
    }

    #[test]
    fn wraps_around_and_fills() {
        let mut m = PortMap::new(100, 199);
        let mut got = Vec::new();
        for i in 0..100u16 {
            let p = m.find(0, 150 + i).unwrap();
            assert!((100..=199).contains(&p));
            assert!(m.claim(p));
            got.push(p);
        }
        got.sort_unstable();
        got.dedup();
        assert_eq!(got.len(), 100);
        assert_eq!(m.find(150, 150), None);
        assert!(m.release(123));
        // From a start after it: wraps around to the one free port.
        assert_eq!(m.find(0, 190), Some(123));
        assert_eq!(m.find(0, 65535), Some(123));
    }

    #[test]
    fn every_start_finds_the_single_free_port() {
        let mut m = PortMap::new(1, 65535);
        for p in 1..=65535u16 {
            assert!(m.claim(p));
        }
        assert!(m.release(31337));
        for start in (0..=65535u16).step_by(97) {
            assert_eq!(m.find(0, start), Some(31337), "start {start}");
        }
    }
}
