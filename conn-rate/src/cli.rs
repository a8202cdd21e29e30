//! The command line (clap): `serve ADDR:PORT [options]` and `run
//! ADDR:PORT [options]`, every value range-checked (a bad argument is a
//! usage error, never a panic).

use std::net::SocketAddr;
use std::time::Duration;

use clap::builder::TypedValueParser;
use clap::error::ErrorKind;
use clap::{Args, CommandFactory, Parser, Subcommand, value_parser};

use crate::Error;
use crate::client::RunConfig;
use crate::server::ServeConfig;

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Serve(ServeConfig),
    Run(RunConfig),
    Help,
}

const MAX_SECS: f64 = 86_400.0;
const MAX_THREADS: u64 = 1024;
/// The client keeps one latency per connection: 8 bytes each.
const MAX_RUN_CONNS: u64 = 50_000_000;
const MAX_TIMEOUT_MS: u64 = 600_000;

/// New TCP connections per second to a server, a virtual server or a
/// proxy (netperf's TCP_CRR in spirit).
#[derive(Debug, Parser)]
#[command(name = "nsx-connrate", flatten_help = true)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Accept, read the request, answer, close first; stop after --duration
    /// or --max-conns, then print {accepted,served,errors}.
    Serve(ServeArgs),
    /// C threads loop connect / request / response to EOF / close for
    /// --duration or --max-conns connections, then print one JSON line:
    /// connections, cps, failures by kind, latency p50/p99/max in
    /// microseconds of a whole transaction.
    Run(RunArgs),
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Where to listen (port 0: any).
    #[arg(value_name = "ADDR:PORT")]
    addr: SocketAddr,
    /// Worker threads accepting.
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = threads())]
    workers: usize,
    /// Seconds to serve (fractions allowed).
    #[arg(long, value_name = "S", default_value = "3600", value_parser = seconds)]
    duration: Duration,
    /// Stop after this many connections [default: no limit].
    #[arg(long, value_name = "N", value_parser = value_parser!(u64).range(1..))]
    max_conns: Option<u64>,
    #[command(flatten)]
    io_timeout: IoTimeout,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The server, virtual server or proxy to connect to.
    #[arg(value_name = "ADDR:PORT")]
    target: SocketAddr,
    /// Seconds to run (fractions allowed).
    #[arg(long, value_name = "S", default_value = "5", value_parser = seconds)]
    duration: Duration,
    /// Connections at a time (one thread each).
    #[arg(long, value_name = "C", default_value_t = 4, value_parser = threads())]
    concurrency: usize,
    /// Stop after this many connections.
    #[arg(long, value_name = "N", default_value_t = 1_000_000,
          value_parser = value_parser!(u64).range(1..=MAX_RUN_CONNS))]
    max_conns: u64,
    /// Bound on each connect.
    #[arg(long, value_name = "MS", default_value = "1000", value_parser = millis())]
    connect_timeout_ms: Duration,
    #[command(flatten)]
    io_timeout: IoTimeout,
}

#[derive(Debug, Args)]
struct IoTimeout {
    /// Bound on each read and write of a connection.
    #[arg(long = "io-timeout-ms", value_name = "MS", default_value = "2000", value_parser = millis())]
    io_timeout: Duration,
}

/// Parses the arguments after the program name; `--help` (or `help`) is
/// [`Command::Help`], anything clap refuses an [`Error::Usage`] with its
/// message.
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Command, Error> {
    let argv = std::iter::once("nsx-connrate".to_string()).chain(args);
    match Cli::try_parse_from(argv) {
        Ok(cli) => Ok(cli.cmd.into()),
        Err(e) if e.kind() == ErrorKind::DisplayHelp => Ok(Command::Help),
        Err(e) => Err(Error::Usage(e.to_string())),
    }
}

/// The help text: every command with its options.
pub fn help() -> String {
    Cli::command().render_help().to_string()
}

impl From<Cmd> for Command {
    fn from(cmd: Cmd) -> Command {
        match cmd {
            Cmd::Serve(a) => Command::Serve(ServeConfig {
                addr: a.addr,
                workers: a.workers,
                io_timeout: a.io_timeout.io_timeout,
                duration: a.duration,
                max_conns: a.max_conns.unwrap_or(u64::MAX),
            }),
            Cmd::Run(a) => Command::Run(RunConfig {
                target: a.target,
                duration: a.duration,
                concurrency: a.concurrency,
                max_conns: a.max_conns,
                connect_timeout: a.connect_timeout_ms,
                io_timeout: a.io_timeout.io_timeout,
            }),
        }
    }
}

/// A thread count, 1 to [`MAX_THREADS`].
fn threads() -> impl TypedValueParser<Value = usize> {
    value_parser!(u64)
        .range(1..=MAX_THREADS)
        .try_map(usize::try_from)
}

/// Milliseconds, 1 to [`MAX_TIMEOUT_MS`].
fn millis() -> impl TypedValueParser<Value = Duration> {
    value_parser!(u64)
        .range(1..=MAX_TIMEOUT_MS)
        .map(Duration::from_millis)
}

/// Seconds, fractions allowed: above 0 and at most [`MAX_SECS`].
fn seconds(v: &str) -> Result<Duration, String> {
    match v.parse::<f64>() {
        Ok(s) if s > 0.0 && s <= MAX_SECS => {
            Duration::try_from_secs_f64(s).map_err(|e| e.to_string())
        }
        _ => Err(format!("seconds, above 0 and at most {MAX_SECS}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(s: &str) -> Result<Command, Error> {
        parse(s.split_whitespace().map(String::from))
    }

    #[test]
    fn run_with_options_and_defaults() {
        let Ok(Command::Run(c)) = parse_str("run 10.64.1.2:5301 --duration 2.5 --concurrency 8")
        else {
            panic!("not a run");
        };
        assert_eq!(c.target, "10.64.1.2:5301".parse().expect("addr"));
        assert_eq!(c.duration, Duration::from_millis(2500));
        assert_eq!(c.concurrency, 8);
        assert_eq!(c.max_conns, 1_000_000);
        assert_eq!(c.connect_timeout, Duration::from_secs(1));
    }

    #[test]
    fn serve_with_defaults() {
        let Ok(Command::Serve(c)) = parse_str("serve 0.0.0.0:5301 --workers 2") else {
            panic!("not a serve");
        };
        assert_eq!(c.workers, 2);
        assert_eq!(c.duration, Duration::from_secs(3600));
        assert_eq!(c.max_conns, u64::MAX);
    }

    #[test]
    fn bad_input_is_a_usage_error() {
        for bad in [
            "",
            "run",
            "run 10.0.0.1",
            "run host:80",
            "walk 10.0.0.1:80",
            "run 10.0.0.1:80 --duration 0",
            "run 10.0.0.1:80 --duration -1",
            "run 10.0.0.1:80 --duration NaN",
            "run 10.0.0.1:80 --duration inf",
            "run 10.0.0.1:80 --concurrency 0",
            "run 10.0.0.1:80 --concurrency 99999999999999999999",
            "run 10.0.0.1:80 --max-conns 100000000000",
            "run 10.0.0.1:80 --workers 2",
            "run 10.0.0.1:80 --duration",
            "run 10.0.0.1:80 stray",
            "serve 10.0.0.1:80 --concurrency 2",
        ] {
            assert!(
                matches!(parse_str(bad), Err(Error::Usage(_))),
                "{bad:?} accepted"
            );
        }
        assert_eq!(parse_str("--help").ok(), Some(Command::Help));
    }

    #[test]
    fn a_usage_error_says_what_is_wrong() {
        let Err(Error::Usage(m)) = parse_str("run 10.0.0.1:80 --concurrency 0") else {
            panic!("accepted");
        };
        assert!(m.contains("--concurrency") && m.contains("1..=1024"), "{m}");
        assert_eq!(parse_str("run --help").ok(), Some(Command::Help));
        assert!(help().contains("--connect-timeout-ms"));
    }
}
