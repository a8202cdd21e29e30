//! The packet log of rules `with log`: a fixed ring of [`LogRecord`]s the
//! datapath fills (no allocation, no I/O) and the agent drains to a rotated
//! file, behind a token bucket so a flood cannot turn into a log storm
//! (records over the rate are counted, not written).
//!
//! Lines follow NSX's `dfwpktlogs.log`:
//! `2026-11-25T14:10:44.123Z INET match REJECT domain-c25/1002 IN 60 TCP 172.16.10.12/44194->172.16.10.11/23 S`

use std::fmt;
use std::net::Ipv4Addr;

use control::Action;

use crate::flow::{Dir, L4, TcpMeta, Tuple};

/// One logged decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogRecord {
    /// When, on the datapath's monotonic clock.
    pub now_ns: u64,
    /// Index into `Policy::rules()` of the rule that decided.
    pub rule: u32,
    pub rule_id: u32,
    pub action: Action,
    pub dir: Dir,
    pub tuple: Tuple,
    /// TCP flags (0 for other protocols).
    pub tcp_flags: u8,
    /// IPv4 total length.
    pub len: u16,
}

impl LogRecord {
    pub fn new(now_ns: u64, m: &crate::Match, dir: Dir, tuple: Tuple, l4: &L4, len: u16) -> Self {
        LogRecord {
            now_ns,
            rule: m.rule,
            rule_id: m.rule_id,
            action: m.action,
            dir,
            tuple,
            tcp_flags: match l4 {
                L4::Tcp(t) => t.flags,
                _ => 0,
            },
            len,
        }
    }

    /// The log line, given the wall-clock time text and the ruleset name.
    pub fn line<'a>(&'a self, time: &'a str, ruleset: &'a str) -> impl fmt::Display + 'a {
        Line {
            r: self,
            time,
            ruleset,
        }
    }
}

struct Line<'a> {
    r: &'a LogRecord,
    time: &'a str,
    ruleset: &'a str,
}

impl fmt::Display for Line<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.r;
        let action = match r.action {
            Action::Accept => "PASS",
            Action::Drop => "DROP",
            Action::Reject => "REJECT",
        };
        let dir = match r.dir {
            Dir::In => "IN",
            Dir::Out => "OUT",
        };
        write!(
            f,
            "{} INET match {action} {}/{} {dir} {} {} ",
            self.time,
            self.ruleset,
            r.rule_id,
            r.len,
            proto_name(r.tuple.proto)
        )?;
        let t = &r.tuple;
        match t.proto {
            6 | 17 => write!(f, "{}/{}->{}/{}", t.src, t.sport, t.dst, t.dport)?,
            _ => write!(f, "{}->{}", t.src, t.dst)?,
        }
        if t.proto == 6 {
            f.write_str(" ")?;
            for (bit, c) in [
                (TcpMeta::SYN, 'S'),
                (TcpMeta::ACK, 'A'),
                (TcpMeta::FIN, 'F'),
                (TcpMeta::RST, 'R'),
                (TcpMeta::PSH, 'P'),
            ] {
                if r.tcp_flags & bit != 0 {
                    write!(f, "{c}")?;
                }
            }
        }
        Ok(())
    }
}

/// Upper-case protocol name as NSX logs it.
pub fn proto_name(proto: u8) -> &'static str {
    match proto {
        1 => "ICMP",
        6 => "TCP",
        17 => "UDP",
        58 => "IPV6-ICMP",
        _ => "PROTO",
    }
}

/// A fixed-capacity ring of records with a token-bucket rate limit.
#[derive(Debug)]
pub struct LogRing {
    buf: Vec<LogRecord>,
    /// Index of the oldest record.
    head: usize,
    len: usize,
    /// Tokens, scaled by 1e9 (token-nanoseconds) to refill exactly.
    tokens_ns: u64,
    last_ns: u64,
    rate_per_sec: u64,
    burst: u64,
    /// Records refused by the rate limit.
    pub rate_limited: u64,
    /// Records overwritten before the agent drained them.
    pub overwritten: u64,
}

impl LogRing {
    /// A ring of `capacity` records allowing `rate_per_sec` with bursts of `burst`.
    pub fn new(capacity: usize, rate_per_sec: u64, burst: u64) -> LogRing {
        let empty = LogRecord {
            now_ns: 0,
            rule: 0,
            rule_id: 0,
            action: Action::Accept,
            dir: Dir::In,
            tuple: Tuple {
                proto: 0,
                src: Ipv4Addr::UNSPECIFIED,
                dst: Ipv4Addr::UNSPECIFIED,
                sport: 0,
                dport: 0,
            },
            tcp_flags: 0,
            len: 0,
        };
        LogRing {
            buf: vec![empty; capacity.max(1)],
            head: 0,
            len: 0,
            tokens_ns: burst.saturating_mul(1_000_000_000),
            last_ns: 0,
            rate_per_sec,
            burst,
            rate_limited: 0,
            overwritten: 0,
        }
    }

    /// Records `r` unless the rate limit refuses it.
    pub fn push(&mut self, r: LogRecord) {
        let elapsed = r.now_ns.saturating_sub(self.last_ns);
        self.last_ns = self.last_ns.max(r.now_ns);
        let cap = self.burst.saturating_mul(1_000_000_000);
        self.tokens_ns = self
            .tokens_ns
            .saturating_add(elapsed.saturating_mul(self.rate_per_sec))
            .min(cap);
        if self.tokens_ns < 1_000_000_000 {
            self.rate_limited += 1;
            return;
        }
        self.tokens_ns -= 1_000_000_000;
        let cap = self.buf.len();
        let at = (self.head + self.len) % cap;
        self.buf[at] = r;
        if self.len == cap {
            self.head = (self.head + 1) % cap;
            self.overwritten += 1;
        } else {
            self.len += 1;
        }
    }

    /// Takes every record, oldest first.
    pub fn drain(&mut self, mut f: impl FnMut(&LogRecord)) {
        let cap = self.buf.len();
        for i in 0..self.len {
            f(&self.buf[(self.head + i) % cap]);
        }
        self.head = 0;
        self.len = 0;
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(now_ns: u64) -> LogRecord {
        LogRecord {
            now_ns,
            rule: 0,
            rule_id: 1006,
            action: Action::Accept,
            dir: Dir::In,
            tuple: Tuple {
                proto: 6,
                src: Ipv4Addr::new(172, 16, 10, 12),
                dst: Ipv4Addr::new(172, 16, 10, 11),
                sport: 44194,
                dport: 22,
            },
            tcp_flags: TcpMeta::SYN,
            len: 60,
        }
    }

    #[test]
    fn line_format() {
        let r = rec(0);
        assert_eq!(
            r.line("2026-11-25T14:10:44.123Z", "domain-c25").to_string(),
            "2026-11-25T14:10:44.123Z INET match PASS domain-c25/1006 IN 60 TCP 172.16.10.12/44194->172.16.10.11/22 S"
        );
    }

    #[test]
    fn rate_limit_and_ring() {
        let mut ring = LogRing::new(4, 10, 5);
        for _ in 0..20 {
            ring.push(rec(1_000));
        }
        // Burst of 5, ring of 4: one overwritten, 15 refused.
        assert_eq!(
            (ring.len(), ring.rate_limited, ring.overwritten),
            (4, 15, 1)
        );
        let mut n = 0;
        ring.drain(|_| n += 1);
        assert_eq!((n, ring.len()), (4, 0));
        // One second later: 10 more tokens.
        for _ in 0..20 {
            ring.push(rec(1_000_001_000));
        }
        assert_eq!(ring.rate_limited, 15 + 15);
    }
}
