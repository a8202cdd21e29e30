//! The edge's health checkers (`lb::health`), run in the health-check
//! namespace (`host::probe`) and reported to the gateway. [`Checks`] owns
//! the monitor: the applied config's `tier0.health_checks` go in, the
//! checkers' verdicts come out into the [`Board`], which the control
//! client sends up: every verdict when a session starts (`full`), then
//! each change as it happens. The gateway gives the verdicts to every
//! datapath balancing the server (and to this one).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex, MutexGuard};

use control::lb::{HealthKey, HealthReport, HealthVerdict, Liveness, VirtualServer};
use lb::health::{HealthEvent, Monitor, MonitorHandle, Net};
use nix::sched::CloneFlags;
use tokio::net::TcpSocket;
use tokio::process::Command;
use tokio::sync::{Notify, mpsc};

use crate::host;

/// The verdicts the gateway has yet to hear, and all of them.
#[derive(Debug, Default)]
pub struct Board {
    state: Mutex<BoardState>,
    changed: Notify,
}

#[derive(Debug, Default)]
struct BoardState {
    /// Checks run here (the edge): only then does the client report.
    active: bool,
    current: BTreeMap<HealthKey, HealthVerdict>,
    dirty: BTreeSet<HealthKey>,
}

impl Board {
    fn lock(&self) -> MutexGuard<'_, BoardState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A checker's verdict.
    pub fn record(&self, ev: HealthEvent) {
        let mut st = self.lock();
        st.dirty.insert(ev.key);
        st.current.insert(
            ev.key,
            HealthVerdict {
                key: ev.key,
                liveness: ev.liveness,
                reason: ev.reason,
            },
        );
        drop(st);
        self.changed.notify_one();
    }

    /// Keeps only the verdicts of `keys` (the servers still checked); the
    /// board reports from now on.
    fn retain(&self, keys: &BTreeSet<HealthKey>) {
        let mut st = self.lock();
        st.active = true;
        let before = st.current.len();
        st.current.retain(|k, _| keys.contains(k));
        if st.current.len() != before {
            // Gone servers are not "changes" the gateway can read: the
            // next report is full.
            st.dirty = st.current.keys().copied().collect();
            drop(st);
            self.changed.notify_one();
        }
    }

    /// Every verdict (a session starts); `None` off the edge.
    pub fn full(&self) -> Option<HealthReport> {
        let mut st = self.lock();
        if !st.active {
            return None;
        }
        st.dirty.clear();
        Some(HealthReport {
            full: true,
            verdicts: st.current.values().cloned().collect(),
        })
    }

    /// The verdicts changed since the last report, if any.
    pub fn changes(&self) -> Option<HealthReport> {
        let mut st = self.lock();
        if st.dirty.is_empty() {
            return None;
        }
        let dirty = std::mem::take(&mut st.dirty);
        let verdicts = dirty
            .iter()
            .filter_map(|k| st.current.get(k).cloned())
            .collect();
        Some(HealthReport {
            full: false,
            verdicts,
        })
    }

    /// Resolves when a verdict changed (or the set did).
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// The current verdict of `key`.
    pub fn liveness(&self, key: &HealthKey) -> Option<Liveness> {
        self.lock().current.get(key).map(|v| v.liveness)
    }
}

/// Sockets and scripts in the health-check namespace.
struct HcNet {
    /// The namespace's handle, kept open for `setns`.
    ns: File,
}

impl Net for HcNet {
    fn tcp_socket(&self) -> io::Result<TcpSocket> {
        let ns = self.ns.try_clone()?;
        // A socket belongs to the namespace of the thread that made it:
        // a short-lived thread enters the namespace and makes it.
        let fd = std::thread::scope(|s| {
            s.spawn(move || -> io::Result<OwnedFd> {
                nix::sched::setns(ns.as_fd(), CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
                crate::dp::io::socket(libc::AF_INET, libc::SOCK_STREAM, 0)
            })
            .join()
            .map_err(|_| io::Error::other("health-check socket thread panicked"))?
        })?;
        Ok(TcpSocket::from_std_stream(std::net::TcpStream::from(fd)))
    }

    fn command(&self, program: &str, args: &[String]) -> Command {
        let mut cmd = Command::new(program);
        cmd.args(args);
        let fd = self.ns.as_raw_fd();
        // SAFETY: between fork and exec the child only calls setns(2), an
        // async-signal-safe system call, on a descriptor the parent keeps
        // open for as long as `self` lives (the child inherits it).
        unsafe {
            cmd.pre_exec(move || {
                let ns = BorrowedFd::borrow_raw(fd);
                nix::sched::setns(ns, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)
            });
        }
        cmd
    }
}

/// The edge's checkers.
#[derive(Clone)]
pub struct Checks {
    handle: MonitorHandle,
    board: Arc<Board>,
    /// The address the namespace holds now.
    address: Arc<Mutex<Option<std::net::Ipv4Addr>>>,
}

impl Checks {
    /// Starts the monitor in the health-check namespace (made by
    /// `host::probe::setup`), its verdicts going to `board`.
    pub fn start(board: Arc<Board>) -> Result<Checks, host::HostError> {
        let ns = File::open(host::probe::netns_path()).map_err(|source| host::HostError::Io {
            step: "open the health-check netns",
            target: host::probe::NETNS.into(),
            source,
        })?;
        let handle = MonitorHandle::new(Monitor::new());
        let (tx, mut rx) = mpsc::channel::<HealthEvent>(256);
        let runner = handle.clone();
        tokio::spawn(async move { runner.run(Arc::new(HcNet { ns }), tx).await });
        let to_board = Arc::clone(&board);
        tokio::spawn(async move {
            while let Some(ev) = rx.recv().await {
                tracing::info!(server = %ev.key, liveness = ?ev.liveness, reason = %ev.reason, "health check");
                to_board.record(ev);
            }
        });
        Ok(Checks {
            handle,
            board,
            address: Arc::new(Mutex::new(None)),
        })
    }

    /// Follows an applied config: the namespace's address, and the virtual
    /// servers whose real servers are checked.
    pub async fn configure(&self, tier0: Option<&control::Tier0>) {
        let (ip, vss): (_, &[VirtualServer]) = match tier0 {
            Some(t0) => (Some(t0.health_check_ip), &t0.health_checks),
            None => (None, &[]),
        };
        let had = *self.address.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(ip) = ip
            && had != Some(ip)
        {
            match host::probe::set_address(ip).await {
                Ok(()) => *self.address.lock().unwrap_or_else(|e| e.into_inner()) = Some(ip),
                Err(e) => {
                    tracing::error!(error = %e, %ip, "health checks: cannot address their namespace")
                }
            }
        }
        for ev in self.handle.update(vss) {
            self.board.record(ev);
        }
        let keys = vss
            .iter()
            .flat_map(|vs| {
                vs.real_servers
                    .iter()
                    .filter(|rs| rs.check.is_some())
                    .map(move |rs| HealthKey::of(vs, rs))
            })
            .collect();
        self.board.retain(&keys);
    }

    /// The checkers, for the API.
    pub fn snapshot(&self) -> Vec<lb::health::CheckView> {
        self.handle.snapshot()
    }
}

impl std::fmt::Debug for Checks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checks")
            .field("board", &self.board)
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}
