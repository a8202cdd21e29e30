//! One checker, pure (no I/O, time passed in as [`Instant`]s): when its
//! next probe is due, what the probe runs ([`ProbeSpec`]), and what an
//! outcome does to the real server's [`Liveness`] (keepalived's retry
//! counting, see the [module docs](super)).
//!
//! Configured times are whole seconds; a [`Checker`] built
//! [`with_second`](Checker::with_second) counts them in another unit, so
//! that tests run a delay loop in milliseconds.

use std::net::{SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use control::lb::{HealthCheck, Liveness, RealServer, UrlCheck, VirtualServer};

/// keepalived 2's checker defaults that [`control::lb::defaults`] does not
/// hold (the rest, `delay_loop` and `connect_timeout`, are taken there).
pub mod defaults {
    /// `retry` of `TCP_CHECK`, `HTTP_GET` and `SSL_GET`
    /// (`check_api.c`: `default_retry = 1`).
    pub const RETRY: u32 = 1;
    /// `retry` of `MISC_CHECK` (`check_misc.c`: `default_retry = 0`).
    pub const MISC_RETRY: u32 = 0;
    /// `delay_before_retry` of `TCP_CHECK` and `MISC_CHECK`, seconds
    /// (`check_api.c`: `default_delay_before_retry = 1 * TIMER_HZ`).
    pub const DELAY_BEFORE_RETRY: u32 = 1;
    /// `delay_before_retry` of `HTTP_GET` / `SSL_GET`, seconds
    /// (`check_http.c`: `3 * TIMER_HZ`).
    pub const HTTP_DELAY_BEFORE_RETRY: u32 = 3;
}

/// The longest delay a checker waits (u32::MAX seconds); a product of a
/// configured count and the time unit is capped to it.
const MAX_DELAY: Duration = Duration::from_secs(u32::MAX as u64);

/// A checker's timing with its defaults applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Between checks of a server that is not failing.
    pub delay_loop: Duration,
    /// Between a failed attempt and its retry.
    pub delay_before_retry: Duration,
    /// Failed attempts tried again before the server goes down.
    pub retry: u32,
    /// Between checks of a down server (HTTP: the larger of the loop and
    /// the retry delay, as keepalived waits on a failed url).
    pub down_delay: Duration,
    /// The next check is timed from the start of the last one (a script,
    /// keepalived's `last_ran`) rather than from its end.
    pub from_start: bool,
}

impl Timing {
    /// The timing of `check` on a real server of `vs`, counting configured
    /// seconds in units of `second`.
    pub fn resolve(vs: &VirtualServer, check: &HealthCheck, second: Duration) -> Timing {
        let t = check.timing();
        let (retry, delay_before_retry) = match check {
            HealthCheck::Tcp { .. } => (defaults::RETRY, defaults::DELAY_BEFORE_RETRY),
            HealthCheck::Http { .. } => (defaults::RETRY, defaults::HTTP_DELAY_BEFORE_RETRY),
            HealthCheck::Misc { .. } => (defaults::MISC_RETRY, defaults::DELAY_BEFORE_RETRY),
        };
        let delay_loop = scaled(t.delay_loop.unwrap_or(vs.delay_loop()).max(1), second);
        let delay_before_retry = scaled(t.delay_before_retry.unwrap_or(delay_before_retry), second);
        let down_delay = match check {
            HealthCheck::Http { .. } => delay_loop.max(delay_before_retry),
            _ => delay_loop,
        };
        Timing {
            delay_loop,
            delay_before_retry,
            retry: t.retry.unwrap_or(retry),
            down_delay,
            from_start: matches!(check, HealthCheck::Misc { .. }),
        }
    }
}

/// What one probe runs: everything the I/O needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeSpec {
    /// `TCP_CHECK`: a connect to `target` within `timeout`.
    Tcp {
        target: SocketAddr,
        timeout: Duration,
    },
    /// `HTTP_GET` / `SSL_GET`.
    Http(HttpProbe),
    /// `MISC_CHECK`.
    Misc(MiscProbe),
}

/// An `HTTP_GET` / `SSL_GET` probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpProbe {
    pub target: SocketAddr,
    /// For the connect, then for the rest of each url's exchange.
    pub timeout: Duration,
    /// `SSL_GET`.
    pub tls: bool,
    /// The `Host:` header (and the TLS server name when it is a name);
    /// none: the target's `ip:port`.
    pub virtualhost: Option<String>,
    /// Fetched in turn; all must pass.
    pub urls: Vec<UrlCheck>,
}

/// A `MISC_CHECK` probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MiscProbe {
    /// The first word of `misc_path` (empty when it has none).
    pub program: String,
    pub args: Vec<String>,
    /// Killed past it.
    pub timeout: Duration,
    /// `misc_dynamic`: exit 2..=255 sets the weight.
    pub dynamic: bool,
}

impl ProbeSpec {
    /// What `check` on `rs` of `vs` runs, counting configured seconds in
    /// units of `second`.
    pub fn resolve(
        vs: &VirtualServer,
        rs: &RealServer,
        check: &HealthCheck,
        second: Duration,
    ) -> ProbeSpec {
        let t = check.timing();
        let target = SocketAddr::V4(SocketAddrV4::new(
            t.connect_ip.unwrap_or(rs.ip),
            t.connect_port.unwrap_or(rs.port),
        ));
        let connect_timeout = scaled(
            t.connect_timeout
                .unwrap_or(control::lb::defaults::CONNECT_TIMEOUT)
                .max(1),
            second,
        );
        match check {
            HealthCheck::Tcp { .. } => ProbeSpec::Tcp {
                target,
                timeout: connect_timeout,
            },
            HealthCheck::Http {
                ssl,
                urls,
                virtualhost,
                ..
            } => ProbeSpec::Http(HttpProbe {
                target,
                timeout: connect_timeout,
                tls: *ssl,
                virtualhost: virtualhost.clone(),
                urls: urls.clone(),
            }),
            HealthCheck::Misc {
                path,
                timeout,
                dynamic,
                ..
            } => {
                let mut words = path.split_whitespace().map(str::to_owned);
                ProbeSpec::Misc(MiscProbe {
                    program: words.next().unwrap_or_default(),
                    args: words.collect(),
                    // keepalived: misc_timeout, else the virtual server's loop.
                    timeout: scaled(timeout.unwrap_or(vs.delay_loop()).max(1), second),
                    dynamic: *dynamic,
                })
            }
        }
    }
}

/// What a probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// Passed; `weight` is a `misc_dynamic` script's (none: the configured
    /// weight).
    Success { weight: Option<u32> },
    /// Failed, with a short reason (`connect 10.0.0.5:80: connection
    /// refused`).
    Failure { reason: String },
}

impl ProbeOutcome {
    /// A pass at the configured weight.
    pub fn ok() -> ProbeOutcome {
        ProbeOutcome::Success { weight: None }
    }

    pub fn failure(reason: impl Into<String>) -> ProbeOutcome {
        ProbeOutcome::Failure {
            reason: reason.into(),
        }
    }
}

/// A change of a real server's standing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub from: Liveness,
    pub to: Liveness,
    /// Why (`TCP_CHECK failed 2 times: connect ...: connection refused`).
    pub reason: String,
}

/// The checker of one real server of one virtual server.
#[derive(Debug, Clone)]
pub struct Checker {
    kind: &'static str,
    spec: ProbeSpec,
    timing: Timing,
    liveness: Liveness,
    /// Failed attempts in a row (counting on while down).
    failures: u32,
    next_due: Instant,
    running_since: Option<Instant>,
    last_check: Option<Instant>,
    last_result: Option<String>,
    transitions: u64,
}

impl Checker {
    /// The checker of `rs` in `vs` (none when `rs` has no checker), up,
    /// its first check due within the delay loop from `now`.
    pub fn new(vs: &VirtualServer, rs: &RealServer, now: Instant) -> Option<Checker> {
        Checker::with_second(vs, rs, now, Duration::from_secs(1))
    }

    /// [`Checker::new`] counting configured seconds in units of `second`.
    pub fn with_second(
        vs: &VirtualServer,
        rs: &RealServer,
        now: Instant,
        second: Duration,
    ) -> Option<Checker> {
        let check = rs.check.as_ref()?;
        Some(Checker::for_check(vs, rs, check, now, second))
    }

    /// The checker running `check` on `rs` of `vs` (`rs`'s own check
    /// unread), as [`Checker::with_second`] makes it.
    pub fn for_check(
        vs: &VirtualServer,
        rs: &RealServer,
        check: &HealthCheck,
        now: Instant,
        second: Duration,
    ) -> Checker {
        let timing = Timing::resolve(vs, check, second);
        let first = later(now, stagger(vs, rs, timing.delay_loop));
        Checker::from_parts(
            check.kind(),
            ProbeSpec::resolve(vs, rs, check, second),
            timing,
            first,
        )
    }

    /// A checker of `kind` (keepalived's name, for views) running `spec`,
    /// up, its first check due at `first_due`.
    pub fn from_parts(
        kind: &'static str,
        spec: ProbeSpec,
        timing: Timing,
        first_due: Instant,
    ) -> Checker {
        Checker {
            kind,
            spec,
            timing,
            liveness: Liveness::Up,
            failures: 0,
            next_due: first_due,
            running_since: None,
            last_check: None,
            last_result: None,
            transitions: 0,
        }
    }

    /// When the next probe is due (meaningless while one runs).
    pub fn next_due(&self) -> Instant {
        self.next_due
    }

    pub fn is_running(&self) -> bool {
        self.running_since.is_some()
    }

    /// The probe to run now, if one is due and none is running.
    pub fn start(&mut self, now: Instant) -> Option<ProbeSpec> {
        if self.is_running() || now < self.next_due {
            return None;
        }
        self.running_since = Some(now);
        Some(self.spec.clone())
    }

    /// Takes the outcome of the probe [`start`](Checker::start) gave, found
    /// at `now`; returns the change of standing it makes, if any. Without
    /// a probe running it does nothing.
    pub fn finish(&mut self, now: Instant, outcome: ProbeOutcome) -> Option<Transition> {
        let started = self.running_since.take()?;
        self.last_check = Some(now);
        let from = self.liveness;
        let (to, delay, result) = match outcome {
            ProbeOutcome::Success { weight } => {
                self.failures = 0;
                let (to, result) = match weight {
                    None => (Liveness::Up, "ok".to_owned()),
                    Some(w) => (Liveness::Weight(w), format!("ok, weight {w}")),
                };
                (to, self.timing.delay_loop, result)
            }
            ProbeOutcome::Failure { reason } => {
                self.failures = self.failures.saturating_add(1);
                if from == Liveness::Down || self.failures > self.timing.retry {
                    (Liveness::Down, self.timing.down_delay, reason)
                } else {
                    (from, self.timing.delay_before_retry, reason)
                }
            }
        };
        let base = if self.timing.from_start { started } else { now };
        self.next_due = later(base, delay);
        let transition = (to != from).then(|| {
            self.liveness = to;
            self.transitions += 1;
            let reason = match to {
                Liveness::Down if self.failures > 1 => {
                    format!("{} failed {} times: {result}", self.kind, self.failures)
                }
                Liveness::Down => format!("{} failed: {result}", self.kind),
                _ => format!("{} {result}", self.kind),
            };
            Transition { from, to, reason }
        });
        self.last_result = Some(result);
        transition
    }

    /// Replaces what the checker runs and its timing (its virtual server's
    /// delay loop changed), keeping its standing; the next check comes no
    /// later than a new delay loop from `now`.
    pub fn retime(&mut self, spec: ProbeSpec, timing: Timing, now: Instant) {
        self.next_due = self.next_due.min(later(now, timing.delay_loop));
        self.spec = spec;
        self.timing = timing;
    }

    pub fn liveness(&self) -> Liveness {
        self.liveness
    }

    /// keepalived's name of the checker (`TCP_CHECK`, ...).
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    pub fn spec(&self) -> &ProbeSpec {
        &self.spec
    }

    pub fn timing(&self) -> &Timing {
        &self.timing
    }

    /// `ok`, `ok, weight 3`, or the last failure's reason; none before the
    /// first check.
    pub fn last_result(&self) -> Option<&str> {
        self.last_result.as_deref()
    }

    /// When the last probe finished.
    pub fn last_check(&self) -> Option<Instant> {
        self.last_check
    }

    /// Failed attempts in a row.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Changes of standing so far.
    pub fn transitions(&self) -> u64 {
        self.transitions
    }
}

/// `n` configured seconds in units of `second`, at most [`MAX_DELAY`].
fn scaled(n: u32, second: Duration) -> Duration {
    second.checked_mul(n).unwrap_or(MAX_DELAY).min(MAX_DELAY)
}

/// `t + d`; `d` is at most [`MAX_DELAY`], which a monotonic clock holds.
fn later(t: Instant, d: Duration) -> Instant {
    t.checked_add(d).unwrap_or(t)
}

/// Where in `[0, delay_loop)` the first check of `rs` in `vs` falls: an
/// FNV-1a hash of the pair, the same on every run.
fn stagger(vs: &VirtualServer, rs: &RealServer, delay_loop: Duration) -> Duration {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let bytes = [
        &vs.vip.octets()[..],
        &vs.port.to_be_bytes(),
        &[vs.protocol.number()],
        &rs.ip.octets(),
        &rs.port.to_be_bytes(),
    ];
    for b in bytes.into_iter().flatten() {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    let span = delay_loop.as_nanos().max(1);
    Duration::from_nanos(u64::try_from(u128::from(h) % span).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use control::lb::{CheckTiming, LbProtocol, Scheduler};
    use std::net::Ipv4Addr;

    const S: Duration = Duration::from_secs(1);

    fn vs(delay_loop: Option<u32>) -> VirtualServer {
        VirtualServer {
            delay_loop,
            ..VirtualServer::new(
                Ipv4Addr::new(10, 64, 1, 2),
                80,
                LbProtocol::Tcp,
                Scheduler::Rr,
            )
        }
    }

    fn rs(check: HealthCheck) -> RealServer {
        RealServer {
            check: Some(check),
            ..RealServer::new(Ipv4Addr::new(192, 168, 1, 100), 8089)
        }
    }

    fn tcp(timing: CheckTiming) -> HealthCheck {
        HealthCheck::Tcp { timing }
    }

    fn misc(dynamic: bool) -> HealthCheck {
        HealthCheck::Misc {
            path: "/bin/check a b".into(),
            timeout: None,
            dynamic,
            timing: CheckTiming::default(),
        }
    }

    fn http(timing: CheckTiming) -> HealthCheck {
        HealthCheck::Http {
            ssl: false,
            urls: vec![UrlCheck {
                path: "/".into(),
                status_code: vec![],
                digest: None,
            }],
            virtualhost: None,
            timing,
        }
    }

    fn fail() -> ProbeOutcome {
        ProbeOutcome::failure("connect 192.168.1.100:8089: connection refused")
    }

    /// Runs the probe due at `c.next_due()` with `outcome`, `took` long.
    fn run(c: &mut Checker, took: Duration, outcome: ProbeOutcome) -> Option<Transition> {
        let at = c.next_due();
        assert!(c.start(at).is_some(), "a probe is due at next_due");
        c.finish(at + took, outcome)
    }

    fn checker(vs: &VirtualServer, rs: &RealServer, t0: Instant) -> Checker {
        Checker::new(vs, rs, t0).expect("a checker")
    }

    #[test]
    fn down_after_retry_plus_one_failures_spaced_by_delay_before_retry() {
        let t0 = Instant::now();
        let timing = CheckTiming {
            retry: Some(2),
            delay_before_retry: Some(3),
            ..CheckTiming::default()
        };
        let (vs, rs) = (vs(Some(10)), rs(tcp(timing)));
        let mut c = checker(&vs, &rs, t0);
        assert_eq!(c.liveness(), Liveness::Up);
        assert!(c.next_due() < t0 + 10 * S, "first check within the loop");
        let took = Duration::from_millis(20);
        for attempt in 1..=2 {
            let before = c.next_due();
            assert_eq!(run(&mut c, took, fail()), None, "attempt {attempt}");
            assert_eq!(c.next_due(), before + took + 3 * S, "retried after 3 s");
            assert_eq!(c.failures(), attempt);
            assert_eq!(c.liveness(), Liveness::Up);
        }
        let before = c.next_due();
        let t = run(&mut c, took, fail()).expect("down on the third failure");
        assert_eq!((t.from, t.to), (Liveness::Up, Liveness::Down));
        assert_eq!(
            t.reason,
            "TCP_CHECK failed 3 times: connect 192.168.1.100:8089: connection refused"
        );
        assert_eq!(c.next_due(), before + took + 10 * S, "down: the loop again");
        // Still failing: no transition, checked every delay loop.
        let before = c.next_due();
        assert_eq!(run(&mut c, took, fail()), None);
        assert_eq!(c.next_due(), before + took + 10 * S);
        assert_eq!(c.failures(), 4);
        // One success brings it back.
        let t = run(&mut c, took, ProbeOutcome::ok()).expect("up again");
        assert_eq!((t.from, t.to), (Liveness::Down, Liveness::Up));
        assert_eq!(t.reason, "TCP_CHECK ok");
        assert_eq!((c.failures(), c.transitions()), (0, 2));
        assert_eq!(c.last_result(), Some("ok"));
    }

    #[test]
    fn a_success_between_failures_starts_the_count_again() {
        let t0 = Instant::now();
        let (vs, rs) = (vs(None), rs(tcp(CheckTiming::default())));
        let mut c = checker(&vs, &rs, t0);
        let ms = Duration::from_millis(1);
        assert_eq!(run(&mut c, ms, fail()), None);
        assert_eq!(run(&mut c, ms, ProbeOutcome::ok()), None);
        assert_eq!(c.failures(), 0);
        assert_eq!(run(&mut c, ms, fail()), None, "one failure in a row");
        assert!(run(&mut c, ms, fail()).is_some(), "the second in a row");
    }

    #[test]
    fn keepalived_defaults_per_checker() {
        let v = vs(None);
        let none = CheckTiming::default();
        let t = Timing::resolve(&v, &tcp(none), S);
        assert_eq!(
            (t.delay_loop, t.delay_before_retry, t.retry, t.down_delay),
            (60 * S, S, 1, 60 * S)
        );
        let t = Timing::resolve(&v, &http(none), S);
        assert_eq!((t.delay_before_retry, t.retry), (3 * S, 1));
        let t = Timing::resolve(&v, &misc(false), S);
        assert_eq!((t.delay_before_retry, t.retry, t.from_start), (S, 0, true));
        // HTTP waits the longer of the loop and the retry delay while down.
        let long_retry = CheckTiming {
            delay_before_retry: Some(90),
            ..none
        };
        assert_eq!(Timing::resolve(&v, &http(long_retry), S).down_delay, 90 * S);
        assert_eq!(Timing::resolve(&v, &tcp(long_retry), S).down_delay, 60 * S);
        // The checker's delay loop beats the virtual server's.
        let own = CheckTiming {
            delay_loop: Some(7),
            ..none
        };
        assert_eq!(
            Timing::resolve(&vs(Some(20)), &tcp(own), S).delay_loop,
            7 * S
        );
        assert_eq!(
            Timing::resolve(&vs(Some(20)), &tcp(none), S).delay_loop,
            20 * S
        );
        // A script fails the server at its first failure.
        let mut c = checker(&v, &rs(misc(false)), Instant::now());
        let t = run(&mut c, S, ProbeOutcome::failure("exit status 1")).expect("down");
        assert_eq!(t.reason, "MISC_CHECK failed: exit status 1");
    }

    #[test]
    fn dynamic_weights_are_transitions() {
        let (vs, rs) = (vs(Some(5)), rs(misc(true)));
        let mut c = checker(&vs, &rs, Instant::now());
        let w = |w| ProbeOutcome::Success { weight: Some(w) };
        let ms = Duration::from_millis(1);
        let t = run(&mut c, ms, w(3)).expect("weight set");
        assert_eq!(
            (t.from, t.to, t.reason.as_str()),
            (Liveness::Up, Liveness::Weight(3), "MISC_CHECK ok, weight 3")
        );
        assert_eq!(run(&mut c, ms, w(3)), None, "same weight: nothing");
        let t = run(&mut c, ms, w(5)).expect("weight changed");
        assert_eq!((t.from, t.to), (Liveness::Weight(3), Liveness::Weight(5)));
        let t = run(&mut c, ms, ProbeOutcome::ok()).expect("exit 0");
        assert_eq!((t.from, t.to), (Liveness::Weight(5), Liveness::Up));
        let t = run(&mut c, ms, fail()).expect("retry 0");
        assert_eq!(t.to, Liveness::Down);
        let t = run(&mut c, ms, w(1)).expect("back at a weight");
        assert_eq!((t.from, t.to), (Liveness::Down, Liveness::Weight(1)));
        assert_eq!(c.transitions(), 5);
    }

    #[test]
    fn a_script_is_timed_from_its_start_a_connect_from_its_end() {
        let t0 = Instant::now();
        let v = vs(Some(10));
        let mut m = checker(&v, &rs(misc(false)), t0);
        let at = m.next_due();
        m.start(at).expect("due");
        m.finish(at + 4 * S, ProbeOutcome::ok());
        assert_eq!(m.next_due(), at + 10 * S);
        let mut t = checker(&v, &rs(tcp(CheckTiming::default())), t0);
        let at = t.next_due();
        t.start(at).expect("due");
        t.finish(at + 4 * S, ProbeOutcome::ok());
        assert_eq!(t.next_due(), at + 14 * S);
    }

    #[test]
    fn one_probe_at_a_time_and_stale_outcomes_are_ignored() {
        let t0 = Instant::now();
        let (vs, rs) = (vs(Some(10)), rs(tcp(CheckTiming::default())));
        let mut c = checker(&vs, &rs, t0);
        let due = c.next_due();
        if due > t0 {
            assert_eq!(c.start(t0), None, "not due yet");
        }
        assert_eq!(c.finish(due, fail()), None, "nothing was running");
        assert_eq!((c.failures(), c.last_check()), (0, None));
        assert!(c.start(due).is_some());
        assert!(c.is_running());
        assert_eq!(c.start(due + 100 * S), None, "already running");
        c.finish(due + S, fail());
        assert_eq!(c.failures(), 1);
        assert_eq!(c.last_check(), Some(due + S));
    }

    #[test]
    fn first_checks_are_spread_over_the_loop_the_same_way_every_time() {
        let t0 = Instant::now();
        let v = vs(Some(60));
        let dues: Vec<Duration> = (0..16u16)
            .map(|i| {
                let r = RealServer {
                    port: 8000 + i,
                    ..rs(tcp(CheckTiming::default()))
                };
                let c = checker(&v, &r, t0);
                assert_eq!(
                    checker(&v, &r, t0).next_due(),
                    c.next_due(),
                    "deterministic"
                );
                c.next_due() - t0
            })
            .collect();
        assert!(dues.iter().all(|d| *d < 60 * S), "{dues:?}");
        let mut distinct = dues.clone();
        distinct.sort();
        distinct.dedup();
        assert!(distinct.len() > 8, "{dues:?}");
        assert!(dues.iter().any(|d| *d > 30 * S) && dues.iter().any(|d| *d < 30 * S));
    }

    #[test]
    fn probe_specs_take_the_server_address_and_keepalived_defaults() {
        let v = vs(Some(20));
        let r = rs(tcp(CheckTiming::default()));
        let target: SocketAddr = "192.168.1.100:8089".parse().expect("addr");
        assert_eq!(
            ProbeSpec::resolve(&v, &r, r.check.as_ref().expect("check"), S),
            ProbeSpec::Tcp {
                target,
                timeout: 5 * S
            }
        );
        let other = CheckTiming {
            connect_ip: Some(Ipv4Addr::new(10, 0, 0, 9)),
            connect_port: Some(9000),
            connect_timeout: Some(2),
            ..CheckTiming::default()
        };
        let ms = Duration::from_millis(1);
        let ProbeSpec::Tcp { target, timeout } = ProbeSpec::resolve(&v, &r, &tcp(other), ms) else {
            panic!("tcp");
        };
        assert_eq!(
            (target.to_string(), timeout),
            ("10.0.0.9:9000".into(), 2 * ms)
        );
        let ProbeSpec::Misc(m) = ProbeSpec::resolve(&v, &r, &misc(true), S) else {
            panic!("misc");
        };
        assert_eq!(
            m,
            MiscProbe {
                program: "/bin/check".into(),
                args: vec!["a".into(), "b".into()],
                timeout: 20 * S,
                dynamic: true
            }
        );
        // misc_timeout defaults to the virtual server's loop, not the checker's.
        let own_loop = HealthCheck::Misc {
            path: "  ".into(),
            timeout: None,
            dynamic: false,
            timing: CheckTiming {
                delay_loop: Some(3),
                ..CheckTiming::default()
            },
        };
        let ProbeSpec::Misc(m) = ProbeSpec::resolve(&v, &r, &own_loop, S) else {
            panic!("misc");
        };
        assert_eq!((m.program.as_str(), m.timeout), ("", 20 * S));
        assert!(Checker::new(&v, &RealServer::new(r.ip, r.port), Instant::now()).is_none());
    }

    #[test]
    fn huge_configured_times_do_not_overflow() {
        let huge = CheckTiming {
            delay_loop: Some(u32::MAX),
            delay_before_retry: Some(u32::MAX),
            connect_timeout: Some(u32::MAX),
            ..CheckTiming::default()
        };
        let v = vs(None);
        let t = Timing::resolve(&v, &tcp(huge), Duration::from_secs(3600));
        assert_eq!(t.delay_loop, MAX_DELAY);
        let mut c = checker(&v, &rs(tcp(huge)), Instant::now());
        assert_eq!(run(&mut c, S, fail()), None);
        // Zero where keepalived refuses it still makes a loop.
        let zero = CheckTiming {
            delay_loop: Some(0),
            ..CheckTiming::default()
        };
        assert_eq!(Timing::resolve(&v, &tcp(zero), S).delay_loop, S);
    }
}
