//! The server side: worker threads sharing one listener, each accepting a
//! connection, reading the [`REQUEST`], writing the [`RESPONSE`] and
//! closing first (TIME_WAIT stays here). Bounded: [`Server::run_until`]
//! stops at a deadline or after a number of connections, and
//! [`Server::stop`] wakes the workers blocked in `accept` with one local
//! connection each.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::report::json_line;
use crate::{Error, REQUEST, RESPONSE};

/// How long a worker waits after a failed `accept` (EMFILE and the like),
/// so a persistent error does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);
/// How often `run_until` looks at its bounds.
const POLL: Duration = Duration::from_millis(50);
/// Bound on each wake-up connection.
const WAKE_TIMEOUT: Duration = Duration::from_secs(2);

/// What `nsx-connrate serve` was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeConfig {
    pub addr: SocketAddr,
    pub workers: usize,
    /// Read and write timeout on an accepted connection.
    pub io_timeout: Duration,
    /// Stop after this long...
    pub duration: Duration,
    /// ... or after this many connections.
    pub max_conns: u64,
}

/// What the server counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ServeStats {
    pub accepted: u64,
    /// Answered: the whole request read, the response written.
    pub served: u64,
    /// Failed accepts and connections not answered.
    pub errors: u64,
}

impl ServeStats {
    /// `{"accepted":N,"served":N,"errors":N}`
    pub fn to_json(self) -> String {
        json_line(&self)
    }
}

#[derive(Debug, Default)]
struct Shared {
    stop: AtomicBool,
    accepted: AtomicU64,
    served: AtomicU64,
    errors: AtomicU64,
}

/// A listening server and its workers. Stop it with [`Server::stop`] (or
/// [`Server::run_until`]); dropped without that, its workers keep serving
/// until the process ends.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

impl Server {
    /// Listens on `addr` (port 0: any) and starts `workers` threads (at
    /// least one).
    pub fn start(addr: SocketAddr, workers: usize, io_timeout: Duration) -> Result<Server, Error> {
        let listener = TcpListener::bind(addr).map_err(|source| Error::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| Error::Bind { addr, source })?;
        let mut server = Server {
            addr,
            shared: Arc::default(),
            workers: Vec::new(),
        };
        for i in 0..workers.max(1) {
            if let Err(e) = server.spawn_worker(i, &listener, io_timeout) {
                // Best effort: the error to report is the spawn's.
                let _ = server.stop();
                return Err(Error::Spawn(e));
            }
        }
        Ok(server)
    }

    fn spawn_worker(
        &mut self,
        i: usize,
        listener: &TcpListener,
        io_timeout: Duration,
    ) -> io::Result<()> {
        let listener = listener.try_clone()?;
        let shared = Arc::clone(&self.shared);
        let h = thread::Builder::new()
            .name(format!("connrate-srv{i}"))
            .spawn(move || worker(&listener, &shared, io_timeout))?;
        self.workers.push(h);
        Ok(())
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::Relaxed)
    }

    /// Serves until `duration` has passed or `max_conns` connections were
    /// accepted, then stops.
    pub fn run_until(self, duration: Duration, max_conns: u64) -> Result<ServeStats, Error> {
        let deadline = Instant::now() + duration;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.accepted() >= max_conns {
                break;
            }
            thread::sleep(left.min(POLL));
        }
        self.stop()
    }

    /// Stops the workers (each blocked in `accept` is woken by a local
    /// connection it drops) and returns the counts.
    pub fn stop(mut self) -> Result<ServeStats, Error> {
        self.shared.stop.store(true, Ordering::SeqCst);
        let wake = wake_addr(self.addr);
        for _ in 0..self.workers.len() {
            // Queued in the backlog even when no worker takes it: a worker
            // busy with a client sees the flag before its next accept.
            TcpStream::connect_timeout(&wake, WAKE_TIMEOUT)
                .map_err(|source| Error::Wake { addr: wake, source })?;
        }
        for h in self.workers.drain(..) {
            h.join().map_err(|_| Error::WorkerPanicked)?;
        }
        Ok(ServeStats {
            accepted: self.shared.accepted.load(Ordering::SeqCst),
            served: self.shared.served.load(Ordering::SeqCst),
            errors: self.shared.errors.load(Ordering::SeqCst),
        })
    }
}

/// Where a local connection reaches a listener on `addr` (the loopback
/// address for a wildcard one).
fn wake_addr(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::from((Ipv4Addr::LOCALHOST, addr.port()))
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::from((Ipv6Addr::LOCALHOST, addr.port()))
        }
        _ => addr,
    }
}

/// One worker: accept and answer until the stop flag is up.
fn worker(listener: &TcpListener, shared: &Shared, io_timeout: Duration) {
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                if shared.stop.load(Ordering::SeqCst) {
                    break; // the wake-up connection (or one arriving as we stop)
                }
                shared.accepted.fetch_add(1, Ordering::Relaxed);
                let counter = match answer(stream, io_timeout) {
                    Ok(()) => &shared.served,
                    Err(_) => &shared.errors,
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                shared.errors.fetch_add(1, Ordering::Relaxed);
                thread::sleep(ACCEPT_BACKOFF);
            }
        }
    }
}

/// Reads the request, writes the response; returning drops (closes) the
/// stream, so the server's FIN goes first.
fn answer(mut stream: TcpStream, io_timeout: Duration) -> io::Result<()> {
    stream.set_read_timeout(Some(io_timeout))?;
    stream.set_write_timeout(Some(io_timeout))?;
    stream.set_nodelay(true)?;
    let mut req = [0u8; REQUEST.len()];
    stream.read_exact(&mut req)?;
    if req != REQUEST {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not an nsx-connrate request",
        ));
    }
    stream.write_all(RESPONSE)
}

#[cfg(test)]
mod tests {
    use super::*;

    const IO: Duration = Duration::from_secs(2);

    fn local() -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
    }

    #[test]
    fn answers_a_request_then_closes() {
        let server = Server::start(local(), 2, IO).expect("server");
        let mut s = TcpStream::connect(server.local_addr()).expect("connect");
        s.set_read_timeout(Some(IO)).expect("timeout");
        s.write_all(REQUEST).expect("request");
        let mut rsp = Vec::new();
        s.read_to_end(&mut rsp).expect("response to EOF");
        assert_eq!(rsp, RESPONSE);
        let stats = server.stop().expect("stop");
        assert_eq!(
            stats,
            ServeStats {
                accepted: 1,
                served: 1,
                errors: 0
            }
        );
        assert_eq!(
            stats.to_json(),
            "{\"accepted\":1,\"served\":1,\"errors\":0}"
        );
    }

    #[test]
    fn a_wrong_request_is_an_error_not_an_answer() {
        let server = Server::start(local(), 1, IO).expect("server");
        let mut s = TcpStream::connect(server.local_addr()).expect("connect");
        s.set_read_timeout(Some(IO)).expect("timeout");
        s.write_all(&[b'x'; REQUEST.len()]).expect("request");
        let mut rsp = Vec::new();
        // Closed without an answer (EOF, or a reset).
        let _ = s.read_to_end(&mut rsp);
        assert!(rsp.is_empty());
        let stats = server.stop().expect("stop");
        assert_eq!(
            stats,
            ServeStats {
                accepted: 1,
                served: 0,
                errors: 1
            }
        );
    }

    #[test]
    fn stop_returns_with_idle_workers() {
        let server = Server::start(local(), 4, IO).expect("server");
        let t0 = Instant::now();
        assert_eq!(server.stop().expect("stop"), ServeStats::default());
        assert!(t0.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn run_until_stops_at_its_deadline() {
        let server = Server::start(local(), 2, IO).expect("server");
        let t0 = Instant::now();
        let stats = server
            .run_until(Duration::from_millis(200), u64::MAX)
            .expect("run");
        let took = t0.elapsed();
        assert_eq!(stats.accepted, 0);
        assert!(
            took >= Duration::from_millis(200) && took < Duration::from_secs(5),
            "{took:?}"
        );
    }

    #[test]
    fn wildcard_listeners_are_woken_on_loopback() {
        assert_eq!(
            wake_addr("0.0.0.0:80".parse().expect("addr")),
            "127.0.0.1:80".parse().expect("addr")
        );
        assert_eq!(
            wake_addr("10.0.0.1:80".parse().expect("addr")),
            "10.0.0.1:80".parse().expect("addr")
        );
    }
}
