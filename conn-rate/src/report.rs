//! What a run counted: connections completed, failures by kind, the
//! latency of a whole transaction (connect, request, response to EOF) as
//! nearest-rank percentiles, and the one JSON line `nsx-connrate run`
//! prints (serde_json).

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use serde::ser::{Error as _, SerializeMap};
use serde::{Serialize, Serializer};
use serde_json::value::RawValue;

/// Why one connection did not complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The connect was answered by a RST (nothing listens).
    Refused,
    /// The connect got no answer within the connect timeout.
    ConnectTimeout,
    /// The connection was reset (or aborted) after it was made.
    Reset,
    /// The response did not come (or the request could not go) within
    /// the I/O timeout.
    IoTimeout,
    /// No local address or port to connect from (ephemeral ports exhausted).
    NoPort,
    /// No route to the host or network.
    Unreachable,
    /// The response was not the expected bytes followed by EOF.
    BadResponse,
    Other,
}

impl FailureKind {
    pub const ALL: [FailureKind; 8] = [
        FailureKind::Refused,
        FailureKind::ConnectTimeout,
        FailureKind::Reset,
        FailureKind::IoTimeout,
        FailureKind::NoPort,
        FailureKind::Unreachable,
        FailureKind::BadResponse,
        FailureKind::Other,
    ];

    /// Its key in the JSON line.
    pub fn name(self) -> &'static str {
        match self {
            FailureKind::Refused => "refused",
            FailureKind::ConnectTimeout => "connect_timeout",
            FailureKind::Reset => "reset",
            FailureKind::IoTimeout => "io_timeout",
            FailureKind::NoPort => "no_port",
            FailureKind::Unreachable => "unreachable",
            FailureKind::BadResponse => "bad_response",
            FailureKind::Other => "other",
        }
    }

    /// A failed connect.
    pub fn of_connect(e: &io::Error) -> FailureKind {
        match e.kind() {
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => FailureKind::ConnectTimeout,
            _ => FailureKind::of_error(e),
        }
    }

    /// A failed read or write on a connected socket (a socket timeout
    /// reads as `WouldBlock` on Linux).
    pub fn of_io(e: &io::Error) -> FailureKind {
        match e.kind() {
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => FailureKind::IoTimeout,
            _ => FailureKind::of_error(e),
        }
    }

    fn of_error(e: &io::Error) -> FailureKind {
        match e.kind() {
            io::ErrorKind::ConnectionRefused => FailureKind::Refused,
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => FailureKind::Reset,
            io::ErrorKind::AddrNotAvailable => FailureKind::NoPort,
            io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => {
                FailureKind::Unreachable
            }
            _ => FailureKind::Other,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Failures counted by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Failures([u64; FailureKind::ALL.len()]);

impl Failures {
    pub fn add(&mut self, kind: FailureKind) {
        if let Some(n) = self.0.get_mut(kind.index()) {
            *n += 1;
        }
    }

    pub fn get(&self, kind: FailureKind) -> u64 {
        self.0.get(kind.index()).copied().unwrap_or(0)
    }

    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    pub fn merge(&mut self, other: &Failures) {
        for (n, m) in self.0.iter_mut().zip(other.0) {
            *n += m;
        }
    }
}

/// `{"total": N, "refused": N, ...}`, the kinds in [`FailureKind::ALL`]'s
/// order.
impl Serialize for Failures {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(FailureKind::ALL.len() + 1))?;
        map.serialize_entry("total", &self.total())?;
        for kind in FailureKind::ALL {
            map.serialize_entry(kind.name(), &self.get(kind))?;
        }
        map.end()
    }
}

/// Nearest-rank percentiles of the completed transactions, microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Latency {
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

impl Latency {
    /// Of `samples` (sorted here); `None` when there are none.
    pub fn of(samples: &mut [u64]) -> Option<Latency> {
        samples.sort_unstable();
        Some(Latency {
            p50_us: nearest_rank(samples, 50)?,
            p99_us: nearest_rank(samples, 99)?,
            max_us: *samples.last()?,
        })
    }
}

/// The `pct`-th percentile of sorted `v`: the smallest value with at least
/// `pct`% of the samples at or below it.
fn nearest_rank(v: &[u64], pct: usize) -> Option<u64> {
    let rank = (pct * v.len()).div_ceil(100).max(1);
    v.get(rank - 1).copied()
}

/// A whole run.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub target: SocketAddr,
    pub concurrency: usize,
    /// From the first connect to the last worker's end.
    pub elapsed: Duration,
    /// Transactions completed.
    pub connections: u64,
    pub failures: Failures,
    pub latency: Option<Latency>,
}

impl Report {
    /// Completed connections per second of `elapsed`.
    pub fn cps(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.connections as f64 / secs
        } else {
            0.0
        }
    }

    /// The JSON line (latencies null when nothing completed).
    pub fn to_json(&self) -> String {
        json_line(&ReportLine {
            target: self.target,
            concurrency: self.concurrency,
            elapsed_s: Fixed(self.elapsed.as_secs_f64()),
            connections: self.connections,
            cps: Fixed(self.cps()),
            failures: self.failures,
            latency_us: LatencyLine {
                p50: self.latency.map(|l| l.p50_us),
                p99: self.latency.map(|l| l.p99_us),
                max: self.latency.map(|l| l.max_us),
            },
        })
    }
}

/// The shape of [`Report`]'s JSON line.
#[derive(Serialize)]
struct ReportLine {
    target: SocketAddr,
    concurrency: usize,
    elapsed_s: Fixed<3>,
    connections: u64,
    cps: Fixed<1>,
    failures: Failures,
    latency_us: LatencyLine,
}

#[derive(Serialize)]
struct LatencyLine {
    p50: Option<u64>,
    p99: Option<u64>,
    max: Option<u64>,
}

/// A number written with exactly `D` decimals (`2.000`, not `2.0`).
struct Fixed<const D: usize>(f64);

impl<const D: usize> Serialize for Fixed<D> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // A NaN or an infinity is no JSON number: refused, not written.
        RawValue::from_string(format!("{:.*}", D, self.0))
            .map_err(S::Error::custom)?
            .serialize(s)
    }
}

/// `value` as one JSON line; `{"error": ...}` if it cannot be written
/// (a non-finite figure), which `bench/cps.sh` reports as no report.
pub fn json_line<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|e| {
        serde_json::json!({ "error": format!("cannot write the report: {e}") }).to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut v: Vec<u64> = (1..=200).rev().collect();
        let l = Latency::of(&mut v).expect("samples");
        assert_eq!((l.p50_us, l.p99_us, l.max_us), (100, 198, 200));
        assert_eq!(
            Latency::of(&mut [7]).map(|l| (l.p50_us, l.p99_us)),
            Some((7, 7))
        );
        assert_eq!(Latency::of(&mut []), None);
    }

    #[test]
    fn failures_count_by_kind() {
        let mut f = Failures::default();
        f.add(FailureKind::Refused);
        f.add(FailureKind::Refused);
        let mut g = Failures::default();
        g.add(FailureKind::IoTimeout);
        f.merge(&g);
        assert_eq!(f.get(FailureKind::Refused), 2);
        assert_eq!(f.get(FailureKind::IoTimeout), 1);
        assert_eq!(f.get(FailureKind::Reset), 0);
        assert_eq!(f.total(), 3);
        // ALL lists the kinds in declaration order: each its own slot.
        for (i, k) in FailureKind::ALL.iter().enumerate() {
            assert_eq!(k.index(), i, "{}", k.name());
        }
    }

    #[test]
    fn errors_map_to_kinds() {
        let e = |k| io::Error::from(k);
        assert_eq!(
            FailureKind::of_connect(&e(io::ErrorKind::ConnectionRefused)),
            FailureKind::Refused
        );
        assert_eq!(
            FailureKind::of_connect(&e(io::ErrorKind::TimedOut)),
            FailureKind::ConnectTimeout
        );
        assert_eq!(
            FailureKind::of_io(&e(io::ErrorKind::WouldBlock)),
            FailureKind::IoTimeout
        );
        assert_eq!(
            FailureKind::of_io(&e(io::ErrorKind::ConnectionReset)),
            FailureKind::Reset
        );
        assert_eq!(
            FailureKind::of_connect(&e(io::ErrorKind::AddrNotAvailable)),
            FailureKind::NoPort
        );
    }

    #[test]
    fn json_line_has_the_figures() {
        let mut failures = Failures::default();
        failures.add(FailureKind::Reset);
        let r = Report {
            target: SocketAddr::from(([10, 64, 1, 2], 5301)),
            concurrency: 4,
            elapsed: Duration::from_secs(2),
            connections: 1000,
            failures,
            latency: Some(Latency {
                p50_us: 150,
                p99_us: 900,
                max_us: 4000,
            }),
        };
        assert_eq!(
            r.to_json(),
            "{\"target\":\"10.64.1.2:5301\",\"concurrency\":4,\"elapsed_s\":2.000,\"connections\":1000,\"cps\":500.0,\
             \"failures\":{\"total\":1,\"refused\":0,\"connect_timeout\":0,\"reset\":1,\"io_timeout\":0,\"no_port\":0,\"unreachable\":0,\"bad_response\":0,\"other\":0},\
             \"latency_us\":{\"p50\":150,\"p99\":900,\"max\":4000}}"
        );
        let empty = Report {
            connections: 0,
            latency: None,
            ..r
        };
        assert!(empty.to_json().contains("\"cps\":0.0"));
        assert!(empty.to_json().contains("\"p50\":null"));
    }

    #[test]
    fn a_figure_that_is_no_number_gives_an_error_line() {
        #[derive(Serialize)]
        struct Line {
            cps: Fixed<1>,
        }
        assert_eq!(
            json_line(&Line {
                cps: Fixed(1234.56)
            }),
            "{\"cps\":1234.6}"
        );
        let bad = json_line(&Line {
            cps: Fixed(f64::NAN),
        });
        let v: serde_json::Value = serde_json::from_str(&bad).expect("valid JSON");
        assert!(v["error"].is_string(), "{bad}");
    }
}
