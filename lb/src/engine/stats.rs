//! Counters per virtual server and per real server, as `ipvsadm -Ln
//! --stats` shows them (connections, packets and bytes each way), and the
//! rate estimator behind `--rate` (CPS, InPPS, OutPPS, InBPS, OutBPS).
//!
//! The estimator is IPVS's: the caller runs it about every 2 seconds
//! ([`crate::engine::Balancer::estimate`]); each run takes the counters'
//! increase over the time that really passed (not an assumed 2 s) as a
//! per-second rate and folds it into an average that moves a quarter of
//! the way toward it (IPVS's `avg += (rate - avg) / 4`), kept in fixed
//! point (x 1024) so small rates do not round to zero.

use serde::Serialize;

/// Cumulative counters (IPVS's `ip_vs_stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Connections scheduled.
    pub conns: u64,
    /// Packets and bytes (IPv4 total length) from clients.
    pub inpkts: u64,
    pub inbytes: u64,
    /// Packets and bytes from real servers.
    pub outpkts: u64,
    pub outbytes: u64,
}

/// Rates per second, as `ipvsadm --rate` shows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Rates {
    pub cps: u64,
    pub inpps: u64,
    pub outpps: u64,
    pub inbps: u64,
    pub outbps: u64,
}

/// Fixed-point scale of the averages.
const SCALE: u32 = 10;

/// The estimator of one set of counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Estimator {
    last: Stats,
    /// Averages, per second x 2^SCALE: conns, inpkts, outpkts, inbytes,
    /// outbytes.
    avg: [u64; 5],
}

impl Estimator {
    /// Folds the increase of `now` since the last run, over `elapsed_ns`,
    /// into the averages.
    pub fn update(&mut self, now: &Stats, elapsed_ns: u64) {
        let cur = [
            now.conns,
            now.inpkts,
            now.outpkts,
            now.inbytes,
            now.outbytes,
        ];
        let last = [
            self.last.conns,
            self.last.inpkts,
            self.last.outpkts,
            self.last.inbytes,
            self.last.outbytes,
        ];
        for ((avg, c), l) in self.avg.iter_mut().zip(cur).zip(last) {
            let delta = u128::from(c.saturating_sub(l));
            let rate = (delta << SCALE) * 1_000_000_000 / u128::from(elapsed_ns.max(1));
            let rate = u64::try_from(rate).unwrap_or(u64::MAX);
            // avg += (rate - avg) / 4, without going negative.
            *avg = if rate >= *avg {
                *avg + (rate - *avg) / 4
            } else {
                *avg - (*avg - rate) / 4
            };
        }
        self.last = *now;
    }

    /// The averages, rounded to whole units per second.
    pub fn rates(&self) -> Rates {
        let r = |v: u64| (v + (1 << (SCALE - 1))) >> SCALE;
        Rates {
            cps: r(self.avg[0]),
            inpps: r(self.avg[1]),
            outpps: r(self.avg[2]),
            inbps: r(self.avg[3]),
            outbps: r(self.avg[4]),
        }
    }

    /// Starts over from `now` (new counters, same averages).
    pub fn rebase(&mut self, now: &Stats) {
        self.last = *now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converges_to_the_rate() {
        let mut e = Estimator::default();
        let mut s = Stats::default();
        for _ in 0..100 {
            // 100 connections and 1000 packets of 1000 bytes per second, over 2 s.
            s.conns += 200;
            s.inpkts += 2000;
            s.inbytes += 2_000_000;
            e.update(&s, 2_000_000_000);
        }
        let r = e.rates();
        assert_eq!(r.cps, 100);
        assert_eq!(r.inpps, 1000);
        assert_eq!(r.inbps, 1_000_000);
        assert_eq!(r.outpps, 0);
        // It decays when traffic stops: a quarter of the way each run.
        e.update(&s, 2_000_000_000);
        assert_eq!(e.rates().cps, 75);
        // Elapsed time is taken as it is: 100 in 1 s is 100/s.
        let mut e = Estimator::default();
        let mut s = Stats::default();
        for _ in 0..60 {
            s.conns += 100;
            e.update(&s, 1_000_000_000);
        }
        assert_eq!(e.rates().cps, 100);
    }
}
