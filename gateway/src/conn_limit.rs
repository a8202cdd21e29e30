//! Connection limits of the gateway's listeners, the one implementation
//! the enrollment (8443), installer (8080), admin API, metrics and control
//! channel (5555) listeners share.
//!
//! * [`ConnLimiter`]: how many connections are open in total and per
//!   source address; [`ConnLimiter::try_acquire`] admits a connection with
//!   a [`ConnGuard`] that gives its place back when dropped, or says which
//!   limit it is over ([`Over`]).
//! * [`Gate`]: the accept step of a listener's loop. It checks the limiter
//!   right after `accept`, before the connection costs anything else (no
//!   TLS handshake, no HTTP, no task): a connection over a limit is closed
//!   at once. A failed `accept` (EMFILE when the process is out of file
//!   descriptors, ENFILE, ENOBUFS, ...) is retried after a pause that
//!   doubles from [`BACKOFF_MIN`] to [`BACKOFF_MAX`] (reset by the next
//!   successful accept), so the loop neither spins nor ends; a
//!   per-connection error (the peer reset it while it waited in the
//!   backlog) is retried at once. Both are reported ([`AcceptEvent`]) for
//!   the metrics.
//!
//! A peer is its source IP address (an IPv4-mapped IPv6 address counts as
//! the IPv4 address). Memory is bounded by the total cap: only peers with
//! an open connection have an entry.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use metrics_text::label_set;
use tokio::net::{TcpListener, TcpStream};

/// First pause after a failed `accept`.
pub const BACKOFF_MIN: Duration = Duration::from_millis(10);
/// Longest pause between `accept` retries while it keeps failing.
pub const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// The limits of one listener (or of listeners sharing a [`ConnLimiter`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once, all peers together.
    pub total: usize,
    /// Connections open at once from one source address (equal to
    /// `total`: only the total cap).
    pub per_peer: usize,
}

/// Why a pair of limits is refused ([`Limits::new`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LimitsError {
    /// No connection could ever be admitted.
    #[error("the total connection limit is 0: no connection could ever be admitted")]
    ZeroTotal,
    /// No peer could ever connect.
    #[error("the per-peer connection limit is 0: no peer could ever connect")]
    ZeroPerPeer,
    /// A per-peer limit no peer can reach: almost surely a mistake in
    /// which flag got which number.
    #[error(
        "the per-peer connection limit ({per_peer}) is greater than the total ({total}): \
         no peer could reach it"
    )]
    PerPeerAboveTotal { total: usize, per_peer: usize },
}

impl Limits {
    /// Limits as given by an operator: both at least 1, the per-peer one at
    /// most the total.
    pub fn new(total: usize, per_peer: usize) -> Result<Limits, LimitsError> {
        if total == 0 {
            return Err(LimitsError::ZeroTotal);
        }
        if per_peer == 0 {
            return Err(LimitsError::ZeroPerPeer);
        }
        if per_peer > total {
            return Err(LimitsError::PerPeerAboveTotal { total, per_peer });
        }
        Ok(Limits { total, per_peer })
    }

    /// Only a total cap (a loopback listener: every client is one peer).
    pub const fn total_only(total: usize) -> Limits {
        Limits {
            total,
            per_peer: total,
        }
    }
}

label_set! {
    /// Which limit refused a connection (the `reason` label of
    /// `nsx_gateway_connections_rejected_total`).
    #[derive(thiserror::Error)]
    pub enum Over {
        /// The listener's total cap.
        #[error("the listener's connection cap")]
        Total = "total",
        /// The cap per source address.
        #[error("the per-peer connection cap")]
        PerPeer = "per_peer",
    }
}

/// Open connections: the total and per source address (only addresses
/// with at least one).
#[derive(Debug, Default)]
struct Open {
    total: usize,
    by_peer: HashMap<IpAddr, usize>,
}

/// Counts a listener's open connections against its [`Limits`].
#[derive(Debug)]
pub struct ConnLimiter {
    limits: Limits,
    open: Mutex<Open>,
}

/// A place taken in a [`ConnLimiter`]; dropping it gives the place back.
#[derive(Debug)]
pub struct ConnGuard {
    limiter: Arc<ConnLimiter>,
    peer: IpAddr,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.limiter.release(self.peer);
    }
}

/// The address a peer is counted under.
fn peer_key(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

impl ConnLimiter {
    pub fn new(limits: Limits) -> Arc<ConnLimiter> {
        Arc::new(ConnLimiter {
            limits,
            open: Mutex::new(Open::default()),
        })
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    fn lock(&self) -> MutexGuard<'_, Open> {
        // Two counters stay consistent even if a holder panicked.
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits one more connection from `peer`, or says which limit it is
    /// over (the per-peer one first: a peer at its own limit is told so
    /// even when the listener is full).
    pub fn try_acquire(self: &Arc<Self>, peer: IpAddr) -> Result<ConnGuard, Over> {
        let peer = peer_key(peer);
        let mut open = self.lock();
        let mine = open.by_peer.get(&peer).copied().unwrap_or(0);
        if mine >= self.limits.per_peer {
            return Err(Over::PerPeer);
        }
        if open.total >= self.limits.total {
            return Err(Over::Total);
        }
        open.total += 1;
        *open.by_peer.entry(peer).or_insert(0) += 1;
        Ok(ConnGuard {
            limiter: Arc::clone(self),
            peer,
        })
    }

    fn release(&self, peer: IpAddr) {
        let mut open = self.lock();
        open.total = open.total.saturating_sub(1);
        if let Entry::Occupied(mut e) = open.by_peer.entry(peer) {
            if *e.get() <= 1 {
                e.remove();
            } else {
                *e.get_mut() -= 1;
            }
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.lock().total
    }

    /// Connections open now from `peer`.
    pub fn open_from(&self, peer: IpAddr) -> usize {
        self.lock()
            .by_peer
            .get(&peer_key(peer))
            .copied()
            .unwrap_or(0)
    }

    /// Peers with a connection open now.
    pub fn peers(&self) -> usize {
        self.lock().by_peer.len()
    }
}

/// What [`Gate::accept`] reports besides the connections it admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptEvent {
    /// A connection over a limit, closed right after `accept`.
    Rejected(Over),
    /// `accept` failed.
    Failed,
}

/// An error of one pending connection, not of the listener: retried at once.
fn per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
    )
}

/// The pause after a failed `accept` that follows `previous` (`None`: the
/// one before succeeded).
fn next_pause(previous: Option<Duration>) -> Duration {
    previous.map_or(BACKOFF_MIN, |d| d.saturating_mul(2).min(BACKOFF_MAX))
}

/// The accept step of one listener's loop: admits connections through a
/// [`ConnLimiter`], closes the ones over a limit and backs off while
/// `accept` fails. Keep one per loop (it holds the backoff).
#[derive(Debug)]
pub struct Gate {
    limiter: Arc<ConnLimiter>,
    /// The current pause after a failed `accept` (`None`: the last one
    /// succeeded).
    backoff: Option<Duration>,
}

impl Gate {
    pub fn new(limiter: Arc<ConnLimiter>) -> Gate {
        Gate {
            limiter,
            backoff: None,
        }
    }

    /// The next admitted connection of `listener`, with its place in the
    /// limiter (hold the guard as long as the connection). Everything else
    /// that happens on the way is passed to `report`. Never fails; cancel
    /// safe (a `select!` branch may drop it between connections).
    pub async fn accept<R>(
        &mut self,
        listener: &TcpListener,
        report: &R,
    ) -> (TcpStream, SocketAddr, ConnGuard)
    where
        R: Fn(AcceptEvent),
    {
        self.admit(|| listener.accept(), report).await
    }

    /// [`Gate::accept`] over any accept function (the tests feed errors).
    async fn admit<S, F, Fut, R>(&mut self, mut accept: F, report: &R) -> (S, SocketAddr, ConnGuard)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = io::Result<(S, SocketAddr)>>,
        R: Fn(AcceptEvent),
    {
        loop {
            match accept().await {
                Ok((stream, peer)) => {
                    self.backoff = None;
                    match self.limiter.try_acquire(peer.ip()) {
                        Ok(guard) => return (stream, peer, guard),
                        Err(over) => {
                            drop(stream);
                            report(AcceptEvent::Rejected(over));
                            tracing::debug!(%peer, reason = %over, "connection over a limit: closed");
                        }
                    }
                }
                Err(e) if per_connection(&e) => {
                    report(AcceptEvent::Failed);
                    tracing::debug!(error = %e, "accept: a pending connection failed");
                }
                Err(e) => {
                    report(AcceptEvent::Failed);
                    let pause = next_pause(self.backoff);
                    self.backoff = Some(pause);
                    tracing::warn!(
                        error = %e,
                        retry_in_ms = u64::try_from(pause.as_millis()).unwrap_or(u64::MAX),
                        "accept failed; backing off"
                    );
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::VecDeque;
    use std::time::Instant;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn per_peer_limit_leaves_other_peers_served() {
        let l = ConnLimiter::new(Limits {
            total: 10,
            per_peer: 3,
        });
        let a: Vec<ConnGuard> = (0..3)
            .map(|_| l.try_acquire(ip("10.0.0.1")).unwrap())
            .collect();
        assert_eq!(l.try_acquire(ip("10.0.0.1")).unwrap_err(), Over::PerPeer);
        let b = l.try_acquire(ip("10.0.0.2")).unwrap();
        assert_eq!(
            (l.open(), l.open_from(ip("10.0.0.1")), l.peers()),
            (4, 3, 2)
        );
        drop(b);
        drop(a);
        assert_eq!(
            (l.open(), l.peers()),
            (0, 0),
            "entries go with the last guard"
        );
    }

    #[test]
    fn total_cap_refuses_new_peers_until_a_place_is_released() {
        let l = ConnLimiter::new(Limits {
            total: 4,
            per_peer: 2,
        });
        let mut held: Vec<ConnGuard> = ["10.0.0.1", "10.0.0.1", "10.0.0.2", "10.0.0.3"]
            .into_iter()
            .map(|p| l.try_acquire(ip(p)).unwrap())
            .collect();
        assert_eq!(l.try_acquire(ip("10.0.0.4")).unwrap_err(), Over::Total);
        // A peer at its own limit is told that, even when the listener is full.
        assert_eq!(l.try_acquire(ip("10.0.0.1")).unwrap_err(), Over::PerPeer);
        held.pop();
        let g = l.try_acquire(ip("10.0.0.4")).unwrap();
        assert_eq!(l.open(), 4);
        drop(g);
        drop(held);
        assert_eq!((l.open(), l.peers()), (0, 0));
    }

    #[test]
    fn released_places_are_reusable_and_counts_never_underflow() {
        let l = ConnLimiter::new(Limits {
            total: 2,
            per_peer: 1,
        });
        for _ in 0..1000 {
            let g = l.try_acquire(ip("10.0.0.1")).unwrap();
            assert!(l.try_acquire(ip("10.0.0.1")).is_err());
            drop(g);
        }
        assert_eq!((l.open(), l.peers()), (0, 0));
        // A stray release (never acquired) cannot wrap the counters.
        l.release(ip("10.9.9.9"));
        assert_eq!((l.open(), l.peers()), (0, 0));
        let _g = l.try_acquire(ip("10.0.0.1")).unwrap();
        let _h = l.try_acquire(ip("10.0.0.2")).unwrap();
        assert_eq!(l.try_acquire(ip("10.0.0.3")).unwrap_err(), Over::Total);
    }

    #[test]
    fn an_ipv4_mapped_address_is_the_ipv4_peer() {
        let l = ConnLimiter::new(Limits {
            total: 10,
            per_peer: 1,
        });
        let _g = l.try_acquire(ip("192.0.2.7")).unwrap();
        assert_eq!(
            l.try_acquire(ip("::ffff:192.0.2.7")).unwrap_err(),
            Over::PerPeer
        );
        assert!(l.try_acquire(ip("2001:db8::7")).is_ok());
    }

    /// Zero limits and a per-peer limit above the total are refused; a
    /// per-peer limit equal to the total is the total cap alone.
    #[test]
    fn limits_an_operator_gives_are_checked() {
        assert_eq!(Limits::new(0, 0), Err(LimitsError::ZeroTotal));
        assert_eq!(Limits::new(4, 0), Err(LimitsError::ZeroPerPeer));
        assert_eq!(
            Limits::new(4, 5),
            Err(LimitsError::PerPeerAboveTotal {
                total: 4,
                per_peer: 5
            })
        );
        assert_eq!(Limits::new(4, 4), Ok(Limits::total_only(4)));
        assert_eq!(
            Limits::new(4, 1),
            Ok(Limits {
                total: 4,
                per_peer: 1
            })
        );
    }

    #[test]
    fn total_only_is_one_cap_for_everyone() {
        let l = ConnLimiter::new(Limits::total_only(3));
        let _g: Vec<ConnGuard> = (0..3)
            .map(|_| l.try_acquire(ip("127.0.0.1")).unwrap())
            .collect();
        assert_eq!(l.try_acquire(ip("127.0.0.1")).unwrap_err(), Over::PerPeer);
        assert_eq!(l.try_acquire(ip("127.0.0.2")).unwrap_err(), Over::Total);
    }

    type Step = io::Result<((), SocketAddr)>;

    fn conn(from: &str) -> Step {
        Ok(((), SocketAddr::new(ip(from), 40000)))
    }

    fn emfile() -> Step {
        Err(io::Error::from_raw_os_error(24))
    }

    /// An accept function that plays `steps`, then fails with EMFILE forever;
    /// counts its calls.
    struct Script {
        steps: RefCell<VecDeque<Step>>,
        calls: RefCell<usize>,
    }

    impl Script {
        fn new(steps: Vec<Step>) -> Script {
            Script {
                steps: RefCell::new(steps.into()),
                calls: RefCell::new(0),
            }
        }

        fn next(&self) -> std::future::Ready<Step> {
            *self.calls.borrow_mut() += 1;
            std::future::ready(self.steps.borrow_mut().pop_front().unwrap_or_else(emfile))
        }
    }

    #[tokio::test]
    async fn connections_over_a_limit_are_closed_and_reported_then_the_next_admitted() {
        let l = ConnLimiter::new(Limits {
            total: 10,
            per_peer: 1,
        });
        let mut gate = Gate::new(l.clone());
        let events = RefCell::new(Vec::new());
        let report = |e| events.borrow_mut().push(e);
        let s = Script::new(vec![
            conn("10.0.0.1"),
            conn("10.0.0.1"),
            conn("10.0.0.1"),
            conn("10.0.0.2"),
        ]);
        let (_, p1, g1) = gate.admit(|| s.next(), &report).await;
        assert_eq!(p1.ip(), ip("10.0.0.1"));
        assert!(events.borrow().is_empty());
        let (_, p2, _g2) = gate.admit(|| s.next(), &report).await;
        assert_eq!(p2.ip(), ip("10.0.0.2"));
        assert_eq!(
            *events.borrow(),
            [AcceptEvent::Rejected(Over::PerPeer); 2],
            "both extra connections of 10.0.0.1 refused"
        );
        assert_eq!(l.open(), 2);
        drop(g1);
        assert_eq!(l.open_from(ip("10.0.0.1")), 0);
    }

    #[tokio::test]
    async fn failing_accept_backs_off_instead_of_spinning_and_recovers() {
        let l = ConnLimiter::new(Limits::total_only(10));
        let mut gate = Gate::new(l);
        let failures = RefCell::new(0usize);
        let report = |e| {
            assert_eq!(e, AcceptEvent::Failed);
            *failures.borrow_mut() += 1;
        };
        // EMFILE for as long as it lasts: a few retries, not thousands.
        let s = Script::new(Vec::new());
        let window = Duration::from_millis(500);
        let started = Instant::now();
        let r = tokio::time::timeout(window, gate.admit(|| s.next(), &report)).await;
        assert!(r.is_err(), "nothing to admit");
        let calls = *s.calls.borrow();
        // 10, 20, 40, 80, 160, 320 ms: at most 7 calls in 500 ms (a loaded
        // machine only sleeps longer); a loop without the pause makes
        // hundreds of thousands.
        assert!(
            (2..=12).contains(&calls),
            "{calls} accept calls in {:?}",
            started.elapsed()
        );
        assert_eq!(*failures.borrow(), calls, "every failure counted");
        assert!(gate.backoff.is_some_and(|d| d > BACKOFF_MIN));
        // The descriptors come back: the loop admits the next connection
        // and its pause starts over.
        let s = Script::new(vec![emfile(), conn("10.0.0.1")]);
        let r = tokio::time::timeout(Duration::from_secs(10), gate.admit(|| s.next(), &report))
            .await
            .expect("admitted once accept works again");
        assert_eq!(r.1.ip(), ip("10.0.0.1"));
        assert_eq!(gate.backoff, None);
    }

    #[tokio::test]
    async fn per_connection_errors_are_retried_without_a_pause() {
        let mut gate = Gate::new(ConnLimiter::new(Limits::total_only(10)));
        gate.backoff = Some(BACKOFF_MAX);
        let failures = RefCell::new(0usize);
        let report = |_| *failures.borrow_mut() += 1;
        let mut steps: Vec<Step> = (0..100)
            .map(|_| Err(io::Error::from(io::ErrorKind::ConnectionAborted)))
            .collect();
        steps.push(conn("10.0.0.1"));
        let s = Script::new(steps);
        // 100 aborted connections do not each cost a pause (which would
        // take 100 s here).
        let r = tokio::time::timeout(Duration::from_secs(20), gate.admit(|| s.next(), &report))
            .await
            .expect("no pause for a per-connection error");
        assert_eq!(r.1.ip(), ip("10.0.0.1"));
        assert_eq!(*failures.borrow(), 100);
    }

    #[test]
    fn the_pause_doubles_up_to_its_cap() {
        let mut d = None;
        let mut seen = Vec::new();
        for _ in 0..12 {
            let p = next_pause(d);
            seen.push(p.as_millis());
            d = Some(p);
        }
        assert_eq!(
            seen,
            [10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000, 1000, 1000]
        );
    }
}
