//! The checkers of a set of virtual servers: [`Monitor`] (pure: which
//! probes are due, what their outcomes change; a configuration update keeps
//! the state of the checkers it does not change), and [`MonitorHandle`],
//! a monitor shared between the task that runs its probes
//! ([`MonitorHandle::run`]) and those that update it or read its view.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use control::lb::{HealthCheck, Liveness, RealServer, VirtualServer};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;

use super::probe::{self, Net};
use super::schedule::{Checker, ProbeOutcome, ProbeSpec, Timing};

/// Most probes [`MonitorHandle::run`] has in flight at once.
pub const MAX_IN_FLIGHT: usize = 64;

/// One real server of one virtual server (the gateway names it alike).
pub use control::lb::HealthKey;

/// A real server's new standing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthEvent {
    pub key: HealthKey,
    pub liveness: Liveness,
    pub reason: String,
}

/// Names a probe [`Monitor::start_due`] started, for
/// [`Monitor::finish`]: the checker it belongs to, as it was then.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ticket {
    pub key: HealthKey,
    /// Which checker of `key` (a replaced one has another).
    generation: u64,
}

/// A probe to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub ticket: Ticket,
    pub spec: ProbeSpec,
}

/// One checked real server, for views.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckView {
    pub key: HealthKey,
    /// `TCP_CHECK`, `HTTP_GET`, `SSL_GET`, `MISC_CHECK`.
    pub kind: &'static str,
    pub liveness: Liveness,
    /// `ok`, `ok, weight 3` or the last failure; none before the first check.
    pub last_result: Option<String>,
    /// Since the last probe finished.
    pub last_check_age: Option<Duration>,
    /// Failed attempts in a row.
    pub failures: u32,
    /// Changes of standing since the checker started.
    pub transitions: u64,
    /// A probe is in flight.
    pub running: bool,
}

#[derive(Debug)]
struct Entry {
    generation: u64,
    /// As configured, to tell whether an update changed it.
    check: HealthCheck,
    checker: Checker,
}

/// The checkers of a set of virtual servers, one per real server with a
/// `check`. Time is passed in.
#[derive(Debug)]
pub struct Monitor {
    entries: BTreeMap<HealthKey, Entry>,
    /// The unit configured seconds are counted in.
    second: Duration,
    generations: u64,
}

impl Default for Monitor {
    fn default() -> Monitor {
        Monitor::new()
    }
}

impl Monitor {
    /// No checkers; configured times in seconds.
    pub fn new() -> Monitor {
        Monitor::with_second(Duration::from_secs(1))
    }

    /// No checkers; configured times counted in units of `second` (tests).
    pub fn with_second(second: Duration) -> Monitor {
        Monitor {
            entries: BTreeMap::new(),
            second,
            generations: 0,
        }
    }

    /// Checks the real servers of `vss` from now on. A checker whose
    /// (virtual server, real server, check) is unchanged keeps its state
    /// (its timing follows a changed delay loop of its virtual server);
    /// others start up, and the removed are dropped (their probes in
    /// flight are ignored when they finish). Returns the servers that were
    /// not up and are now up because their checker was replaced or removed
    /// while they stay configured.
    pub fn update(&mut self, vss: &[VirtualServer], now: Instant) -> Vec<HealthEvent> {
        let mut old = std::mem::take(&mut self.entries);
        let mut configured = BTreeSet::new();
        for vs in vss {
            for rs in &vs.real_servers {
                let key = HealthKey::of(vs, rs);
                configured.insert(key);
                let Some(check) = &rs.check else { continue };
                if self.entries.contains_key(&key) {
                    continue; // declared twice (validation refuses it): the first counts
                }
                let entry = match old.remove(&key) {
                    Some(mut e) if e.check == *check => {
                        let spec = ProbeSpec::resolve(vs, rs, check, self.second);
                        let timing = Timing::resolve(vs, check, self.second);
                        if spec != *e.checker.spec() || timing != *e.checker.timing() {
                            e.checker.retime(spec, timing, now);
                        }
                        e
                    }
                    replaced => {
                        if let Some(e) = replaced {
                            old.insert(key, e); // reported below as replaced
                        }
                        self.new_entry(vs, rs, check, now)
                    }
                };
                self.entries.insert(key, entry);
            }
        }
        old.into_iter()
            .filter(|(key, e)| e.checker.liveness() != Liveness::Up && configured.contains(key))
            .map(|(key, e)| HealthEvent {
                key,
                liveness: Liveness::Up,
                reason: match self.entries.get(&key) {
                    Some(_) => format!("{} replaced", e.checker.kind()),
                    None => format!("{} removed", e.checker.kind()),
                },
            })
            .collect()
    }

    fn new_entry(
        &mut self,
        vs: &VirtualServer,
        rs: &RealServer,
        check: &HealthCheck,
        now: Instant,
    ) -> Entry {
        self.generations += 1;
        Entry {
            generation: self.generations,
            check: check.clone(),
            checker: Checker::for_check(vs, rs, check, now, self.second),
        }
    }

    /// Starts at most `limit` of the probes due at `now`, the longest
    /// overdue first.
    pub fn start_due(&mut self, now: Instant, limit: usize) -> Vec<Probe> {
        let mut due: Vec<(Instant, HealthKey)> = self
            .entries
            .iter()
            .filter(|(_, e)| !e.checker.is_running() && e.checker.next_due() <= now)
            .map(|(k, e)| (e.checker.next_due(), *k))
            .collect();
        due.sort_unstable();
        due.truncate(limit);
        due.into_iter()
            .filter_map(|(_, key)| {
                let e = self.entries.get_mut(&key)?;
                let spec = e.checker.start(now)?;
                Some(Probe {
                    ticket: Ticket {
                        key,
                        generation: e.generation,
                    },
                    spec,
                })
            })
            .collect()
    }

    /// Takes the outcome of the probe of `ticket`, found at `now`; returns
    /// the change of standing it makes. An outcome for a checker replaced
    /// or removed since is ignored.
    pub fn finish(
        &mut self,
        ticket: Ticket,
        now: Instant,
        outcome: ProbeOutcome,
    ) -> Option<HealthEvent> {
        let e = self
            .entries
            .get_mut(&ticket.key)
            .filter(|e| e.generation == ticket.generation)?;
        let t = e.checker.finish(now, outcome)?;
        Some(HealthEvent {
            key: ticket.key,
            liveness: t.to,
            reason: t.reason,
        })
    }

    /// When the next probe is due (none: no checker is idle).
    pub fn next_due(&self) -> Option<Instant> {
        self.entries
            .values()
            .filter(|e| !e.checker.is_running())
            .map(|e| e.checker.next_due())
            .min()
    }

    /// The standing of `key`; none when it has no checker.
    pub fn liveness(&self, key: &HealthKey) -> Option<Liveness> {
        self.entries.get(key).map(|e| e.checker.liveness())
    }

    /// How many real servers are checked.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every checked real server, in key order.
    pub fn snapshot(&self, now: Instant) -> Vec<CheckView> {
        self.entries
            .iter()
            .map(|(key, e)| {
                let c = &e.checker;
                CheckView {
                    key: *key,
                    kind: c.kind(),
                    liveness: c.liveness(),
                    last_result: c.last_result().map(str::to_owned),
                    last_check_age: c.last_check().map(|t| now.saturating_duration_since(t)),
                    failures: c.failures(),
                    transitions: c.transitions(),
                    running: c.is_running(),
                }
            })
            .collect()
    }
}

/// A [`Monitor`] shared by the task that runs its probes and by those that
/// update it and read it. Cloning shares it.
#[derive(Debug, Clone)]
pub struct MonitorHandle {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    monitor: Mutex<Monitor>,
    /// Wakes [`MonitorHandle::run`] after an update.
    wake: Notify,
}

impl MonitorHandle {
    pub fn new(monitor: Monitor) -> MonitorHandle {
        MonitorHandle {
            shared: Arc::new(Shared {
                monitor: Mutex::new(monitor),
                wake: Notify::new(),
            }),
        }
    }

    /// [`Monitor::update`] now, and the running task told. Applies while
    /// probes are in flight.
    pub fn update(&self, vss: &[VirtualServer]) -> Vec<HealthEvent> {
        let events = self.lock().update(vss, Instant::now());
        self.shared.wake.notify_one();
        events
    }

    /// [`Monitor::snapshot`] now.
    pub fn snapshot(&self) -> Vec<CheckView> {
        self.lock().snapshot(Instant::now())
    }

    /// [`Monitor::liveness`].
    pub fn liveness(&self, key: &HealthKey) -> Option<Liveness> {
        self.lock().liveness(key)
    }

    fn lock(&self) -> MutexGuard<'_, Monitor> {
        // A panic elsewhere leaves the monitor consistent (every change is
        // one call): its state is still the best there is.
        self.shared
            .monitor
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs the due probes through `net`, at most [`MAX_IN_FLIGHT`] at
    /// once, and sends every change of standing to `events`, until
    /// `events` is closed. Dropping the future cancels the probes in
    /// flight (their scripts are killed).
    pub async fn run(&self, net: Arc<dyn Net>, events: mpsc::Sender<HealthEvent>) {
        let mut inflight: JoinSet<ProbeOutcome> = JoinSet::new();
        let mut tickets: HashMap<tokio::task::Id, Ticket> = HashMap::new();
        loop {
            let free = MAX_IN_FLIGHT.saturating_sub(inflight.len());
            let (probes, next) = {
                let mut m = self.lock();
                let probes = m.start_due(Instant::now(), free);
                (probes, m.next_due())
            };
            for p in probes {
                let net = net.clone();
                let spec = p.spec;
                let handle = inflight.spawn(async move { probe::run(&spec, &*net).await });
                tickets.insert(handle.id(), p.ticket);
            }
            let at_capacity = inflight.len() >= MAX_IN_FLIGHT;
            let sleep = async {
                match next {
                    Some(t) if !at_capacity => {
                        tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await;
                    }
                    _ => std::future::pending().await,
                }
            };
            tokio::select! {
                Some(done) = inflight.join_next_with_id(), if !inflight.is_empty() => {
                    let (id, outcome) = match done {
                        Ok((id, outcome)) => (id, outcome),
                        Err(e) => (e.id(), ProbeOutcome::failure(format!("probe task: {e}"))),
                    };
                    let Some(ticket) = tickets.remove(&id) else { continue };
                    let event = self.lock().finish(ticket, Instant::now(), outcome);
                    if let Some(ev) = event {
                        tracing::info!(server = %ev.key, liveness = ?ev.liveness, reason = %ev.reason, "health check");
                        if events.send(ev).await.is_err() {
                            return;
                        }
                    }
                }
                () = sleep => {}
                () = self.shared.wake.notified() => {}
                () = events.closed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use control::lb::{CheckTiming, LbProtocol, Scheduler};
    use std::net::Ipv4Addr;

    const S: Duration = Duration::from_secs(1);

    fn vs(port: u16, checks: &[Option<HealthCheck>]) -> VirtualServer {
        let mut v = VirtualServer::new(
            Ipv4Addr::new(10, 64, 1, 2),
            port,
            LbProtocol::Tcp,
            Scheduler::Rr,
        );
        v.delay_loop = Some(10);
        v.real_servers = checks
            .iter()
            .enumerate()
            .map(|(i, check)| RealServer {
                check: check.clone(),
                ..RealServer::new(Ipv4Addr::new(192, 168, 1, 100), 8000 + port_of(i))
            })
            .collect();
        v
    }

    fn port_of(i: usize) -> u16 {
        u16::try_from(i).expect("few servers")
    }

    fn tcp(retry: u32) -> Option<HealthCheck> {
        Some(HealthCheck::Tcp {
            timing: CheckTiming {
                retry: Some(retry),
                ..CheckTiming::default()
            },
        })
    }

    fn key(vs: &VirtualServer, i: usize) -> HealthKey {
        HealthKey::of(vs, &vs.real_servers[i])
    }

    /// Starts every probe due by `at` and fails them all; returns the events.
    fn fail_all(m: &mut Monitor, at: Instant) -> Vec<HealthEvent> {
        let probes = m.start_due(at, usize::MAX);
        probes
            .into_iter()
            .filter_map(|p| m.finish(p.ticket, at, ProbeOutcome::failure("refused")))
            .collect()
    }

    #[test]
    fn servers_without_a_check_are_not_checked() {
        let mut m = Monitor::new();
        let v = vs(80, &[tcp(0), None, tcp(1)]);
        assert!(
            m.update(std::slice::from_ref(&v), Instant::now())
                .is_empty()
        );
        assert_eq!(m.len(), 2);
        assert_eq!(m.liveness(&key(&v, 0)), Some(Liveness::Up));
        assert_eq!(m.liveness(&key(&v, 1)), None);
        assert_eq!(
            key(&v, 0).to_string(),
            "TCP 10.64.1.2:80 -> 192.168.1.100:8000"
        );
    }

    #[test]
    fn an_update_keeps_unchanged_checkers_and_restarts_changed_ones() {
        let t0 = Instant::now();
        let mut m = Monitor::new();
        let v = vs(80, &[tcp(0), tcp(0), tcp(0)]);
        m.update(std::slice::from_ref(&v), t0);
        let events = fail_all(&mut m, t0 + 10 * S);
        assert_eq!(events.len(), 3, "retry 0: all down at once");
        assert!(events.iter().all(|e| e.liveness == Liveness::Down));
        // Server 0 unchanged, server 1's check changed, server 2's removed.
        let v2 = vs(80, &[tcp(0), tcp(5), None]);
        let events = m.update(std::slice::from_ref(&v2), t0 + 11 * S);
        assert_eq!(m.liveness(&key(&v2, 0)), Some(Liveness::Down), "kept");
        assert_eq!(m.liveness(&key(&v2, 1)), Some(Liveness::Up), "restarted");
        assert_eq!(m.liveness(&key(&v2, 2)), None);
        let got: Vec<(HealthKey, Liveness, &str)> = events
            .iter()
            .map(|e| (e.key, e.liveness, e.reason.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (key(&v2, 1), Liveness::Up, "TCP_CHECK replaced"),
                (key(&v2, 2), Liveness::Up, "TCP_CHECK removed"),
            ]
        );
        // A whole virtual server removed: dropped, nothing to report.
        assert!(m.update(&[], t0 + 12 * S).is_empty());
        assert!(m.is_empty());
        assert_eq!(m.next_due(), None);
    }

    #[test]
    fn outcomes_of_replaced_checkers_are_ignored() {
        let t0 = Instant::now();
        let mut m = Monitor::new();
        let v = vs(80, &[tcp(0)]);
        m.update(std::slice::from_ref(&v), t0);
        let at = t0 + 10 * S;
        let probes = m.start_due(at, 8);
        assert_eq!(probes.len(), 1);
        assert!(m.start_due(at, 8).is_empty(), "in flight");
        assert_eq!(m.next_due(), None, "the only checker is busy");
        // The check changes while the probe is in flight.
        m.update(&[vs(80, &[tcp(3)])], at);
        let ticket = probes[0].ticket;
        assert_eq!(m.finish(ticket, at, ProbeOutcome::failure("x")), None);
        assert_eq!(m.snapshot(at)[0].failures, 0);
        // Unchanged while in flight: the outcome counts.
        let probes = m.start_due(at + 10 * S, 8);
        m.update(&[vs(80, &[tcp(3)])], at + 10 * S);
        assert_eq!(
            m.finish(probes[0].ticket, at + 10 * S, ProbeOutcome::failure("x")),
            None
        );
        assert_eq!(m.snapshot(at)[0].failures, 1);
    }

    #[test]
    fn a_changed_delay_loop_retimes_without_losing_state() {
        let t0 = Instant::now();
        let mut m = Monitor::new();
        let mut v = vs(80, &[tcp(0)]);
        v.delay_loop = Some(600);
        m.update(std::slice::from_ref(&v), t0);
        fail_all(&mut m, t0 + 600 * S);
        let k = key(&v, 0);
        assert_eq!(m.liveness(&k), Some(Liveness::Down));
        assert!(m.next_due() > Some(t0 + 1000 * S));
        v.delay_loop = Some(5);
        let now = t0 + 601 * S;
        assert!(m.update(std::slice::from_ref(&v), now).is_empty());
        assert_eq!(m.liveness(&k), Some(Liveness::Down));
        assert_eq!(m.next_due(), Some(now + 5 * S));
    }

    #[test]
    fn start_due_is_bounded_and_takes_the_most_overdue_first() {
        let t0 = Instant::now();
        let mut m = Monitor::new();
        let v = vs(80, &[tcp(0), tcp(0), tcp(0), tcp(0)]);
        m.update(std::slice::from_ref(&v), t0);
        let mut dues: Vec<(Instant, HealthKey)> = (0..4)
            .map(|i| {
                let c = Checker::new(&v, &v.real_servers[i], t0).expect("checker");
                (c.next_due(), key(&v, i))
            })
            .collect();
        dues.sort();
        let started = m.start_due(t0 + 10 * S, 2);
        let keys: Vec<HealthKey> = started.iter().map(|p| p.ticket.key).collect();
        assert_eq!(keys, [dues[0].1, dues[1].1]);
        assert_eq!(m.start_due(t0 + 10 * S, 10).len(), 2, "the other two");
    }

    #[test]
    fn the_snapshot_tells_each_servers_last_check() {
        let t0 = Instant::now();
        let mut m = Monitor::new();
        let v = vs(80, &[tcp(1)]);
        m.update(std::slice::from_ref(&v), t0);
        let before = m.snapshot(t0);
        assert_eq!(before[0].last_result, None);
        assert_eq!(before[0].last_check_age, None);
        fail_all(&mut m, t0 + 10 * S);
        let view = &m.snapshot(t0 + 12 * S)[0];
        assert_eq!(
            view,
            &CheckView {
                key: key(&v, 0),
                kind: "TCP_CHECK",
                liveness: Liveness::Up,
                last_result: Some("refused".into()),
                last_check_age: Some(2 * S),
                failures: 1,
                transitions: 0,
                running: false,
            }
        );
    }
}
