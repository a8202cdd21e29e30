//! The client side: `concurrency` threads, each looping connect, send the
//! [`REQUEST`], read the [`RESPONSE`] to EOF, close, until the run's
//! deadline or its connection budget (shared by all threads) is spent.
//! Every connect and every read and write has a timeout, so a run lasts
//! at most its duration plus one connection's timeouts.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::report::{FailureKind, Failures, Latency, Report};
use crate::{Error, REQUEST, RESPONSE};

/// What `nsx-connrate run` was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunConfig {
    pub target: SocketAddr,
    pub duration: Duration,
    pub concurrency: usize,
    /// Connections attempted at most, over all threads.
    pub max_conns: u64,
    pub connect_timeout: Duration,
    /// Read and write timeout once connected.
    pub io_timeout: Duration,
}

/// One thread's tally.
#[derive(Debug, Default)]
struct Tally {
    latencies_us: Vec<u64>,
    failures: Failures,
}

/// Runs the connection loop and counts.
pub fn run(cfg: &RunConfig) -> Result<Report, Error> {
    let attempts = AtomicU64::new(0);
    let start = Instant::now();
    let deadline = start + cfg.duration;
    let tallies = thread::scope(|scope| {
        let mut handles = Vec::with_capacity(cfg.concurrency);
        for i in 0..cfg.concurrency.max(1) {
            let h = thread::Builder::new()
                .name(format!("connrate-cli{i}"))
                .spawn_scoped(scope, || worker(cfg, &attempts, deadline))
                .map_err(Error::Spawn)?;
            handles.push(h);
        }
        handles
            .into_iter()
            .map(|h| h.join().map_err(|_| Error::WorkerPanicked))
            .collect::<Result<Vec<Tally>, Error>>()
    })?;
    let elapsed = start.elapsed();
    let mut failures = Failures::default();
    let mut latencies: Vec<u64> = Vec::new();
    for t in &tallies {
        failures.merge(&t.failures);
        latencies.extend_from_slice(&t.latencies_us);
    }
    Ok(Report {
        target: cfg.target,
        concurrency: cfg.concurrency,
        elapsed,
        connections: u64::try_from(latencies.len()).unwrap_or(u64::MAX),
        failures,
        latency: Latency::of(&mut latencies),
    })
}

/// One thread's loop, bounded by the deadline and the shared budget.
fn worker(cfg: &RunConfig, attempts: &AtomicU64, deadline: Instant) -> Tally {
    let mut t = Tally::default();
    while Instant::now() < deadline && attempts.fetch_add(1, Ordering::Relaxed) < cfg.max_conns {
        match transaction(cfg) {
            Ok(took) => t
                .latencies_us
                .push(u64::try_from(took.as_micros()).unwrap_or(u64::MAX)),
            Err(kind) => t.failures.add(kind),
        }
    }
    t
}

/// Connect, request, response to EOF, close: how long it took.
fn transaction(cfg: &RunConfig) -> Result<Duration, FailureKind> {
    let t0 = Instant::now();
    let mut s = TcpStream::connect_timeout(&cfg.target, cfg.connect_timeout)
        .map_err(|e| FailureKind::of_connect(&e))?;
    let setup = s
        .set_read_timeout(Some(cfg.io_timeout))
        .and_then(|()| s.set_write_timeout(Some(cfg.io_timeout)))
        .and_then(|()| s.set_nodelay(true));
    setup.map_err(|e| FailureKind::of_io(&e))?;
    s.write_all(REQUEST).map_err(|e| FailureKind::of_io(&e))?;
    let mut buf = [0u8; RESPONSE.len() + 1];
    let got = read_to_eof(&mut s, &mut buf)?;
    if buf.get(..got) != Some(RESPONSE) {
        return Err(FailureKind::BadResponse);
    }
    drop(s); // the server closed first: this FIN ends it, no TIME_WAIT here
    Ok(t0.elapsed())
}

/// Reads into `buf` until EOF; a response that fills `buf` is too long.
fn read_to_eof(s: &mut impl Read, buf: &mut [u8]) -> Result<usize, FailureKind> {
    let mut got = 0;
    // Each pass reads a byte or more, reaches EOF or fails: at most
    // buf.len() + 1 passes.
    for _ in 0..=buf.len() {
        let rest = match buf.get_mut(got..) {
            Some(rest) if !rest.is_empty() => rest,
            _ => return Err(FailureKind::BadResponse),
        };
        match s.read(rest) {
            Ok(0) => return Ok(got),
            Ok(n) => got += n,
            Err(e) => return Err(FailureKind::of_io(&e)),
        }
    }
    Err(FailureKind::BadResponse)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::Server;
    use std::net::{Ipv4Addr, TcpListener};

    fn config(target: SocketAddr, concurrency: usize, max_conns: u64) -> RunConfig {
        RunConfig {
            target,
            duration: Duration::from_secs(20),
            concurrency,
            max_conns,
            connect_timeout: Duration::from_secs(1),
            io_timeout: Duration::from_secs(2),
        }
    }

    fn local() -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
    }

    #[test]
    fn every_connection_is_counted_on_both_sides() {
        let server = Server::start(local(), 4, Duration::from_secs(2)).expect("server");
        let report = run(&config(server.local_addr(), 4, 300)).expect("run");
        let stats = server.stop().expect("stop");
        assert_eq!(report.failures.total(), 0, "{}", report.to_json());
        assert_eq!(report.connections, 300);
        assert_eq!((stats.accepted, stats.served, stats.errors), (300, 300, 0));
        let lat = report.latency.expect("latencies");
        assert!(lat.p50_us <= lat.p99_us && lat.p99_us <= lat.max_us);
        assert!(report.cps() > 0.0);
    }

    #[test]
    fn the_server_stops_at_its_count() {
        let server = Server::start(local(), 2, Duration::from_secs(2)).expect("server");
        let addr = server.local_addr();
        let serving = thread::spawn(move || server.run_until(Duration::from_secs(30), 50));
        let report = run(&config(addr, 2, 50)).expect("run");
        let stats = serving.join().expect("server thread").expect("serve");
        assert_eq!(report.connections, 50);
        assert_eq!(stats.served, 50);
    }

    #[test]
    fn a_closed_port_gives_refusals_not_a_hang() {
        let port = TcpListener::bind(local())
            .and_then(|l| l.local_addr())
            .expect("free port");
        let report = run(&config(port, 2, 40)).expect("run");
        assert_eq!(report.connections, 0);
        assert_eq!(
            report.failures.get(FailureKind::Refused),
            40,
            "{}",
            report.to_json()
        );
        assert_eq!(report.latency, None);
        assert!(
            report.elapsed < Duration::from_secs(10),
            "{:?}",
            report.elapsed
        );
    }

    #[test]
    fn a_silent_server_times_out_within_the_duration() {
        // Listens (the kernel completes the handshakes) but never answers.
        let silent = TcpListener::bind(local()).expect("listener");
        let mut cfg = config(silent.local_addr().expect("addr"), 2, u64::MAX);
        cfg.duration = Duration::from_millis(300);
        cfg.io_timeout = Duration::from_millis(200);
        let report = run(&cfg).expect("run");
        assert_eq!(report.connections, 0);
        assert!(
            report.failures.get(FailureKind::IoTimeout) >= 2,
            "{}",
            report.to_json()
        );
        assert_eq!(
            report.failures.total(),
            report.failures.get(FailureKind::IoTimeout)
        );
        assert!(
            report.elapsed < Duration::from_secs(5),
            "{:?}",
            report.elapsed
        );
    }

    #[test]
    fn a_long_response_is_bad() {
        let mut long = [0u8; 64].as_slice();
        let mut buf = [0u8; RESPONSE.len() + 1];
        assert_eq!(
            read_to_eof(&mut long, &mut buf),
            Err(FailureKind::BadResponse)
        );
        let mut exact = RESPONSE;
        assert_eq!(read_to_eof(&mut exact, &mut buf), Ok(RESPONSE.len()));
    }
}
