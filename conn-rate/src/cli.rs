//! The command line: `serve ADDR:PORT [options]` and `run ADDR:PORT
//! [options]`, each option `--name VALUE`, every value range-checked (a
//! bad argument is a usage error, never a panic).

use std::net::SocketAddr;
use std::time::Duration;

use crate::Error;
use crate::client::RunConfig;
use crate::server::ServeConfig;

pub const USAGE: &str = "\
usage: nsx-connrate serve ADDR:PORT [--workers N] [--duration S] [--max-conns N] [--io-timeout-ms MS]
       nsx-connrate run ADDR:PORT [--duration S] [--concurrency C] [--max-conns N]
                        [--connect-timeout-ms MS] [--io-timeout-ms MS]
serve: accept, read the request, answer, close first; stops after --duration
       (default 3600 s) or --max-conns, then prints {accepted,served,errors}.
run:   C threads loop connect / request / response to EOF / close for
       --duration S (default 5) or --max-conns connections (default 1000000),
       then print one JSON line: connections, cps, failures by kind, latency
       p50/p99/max in microseconds of a whole transaction.";

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

/// Parses the arguments after the program name.
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Command, Error> {
    let mut args = args.into_iter();
    let cmd = args.next().ok_or_else(|| usage("no command"))?;
    if matches!(cmd.as_str(), "-h" | "--help" | "help") {
        return Ok(Command::Help);
    }
    let addr = args
        .next()
        .ok_or_else(|| usage(format!("{cmd}: ADDR:PORT missing")))?;
    let addr: SocketAddr = addr
        .parse()
        .map_err(|_| usage(format!("{addr:?} is not an ADDR:PORT")))?;
    let opts = options(args)?;
    match cmd.as_str() {
        "serve" => serve(addr, &opts).map(Command::Serve),
        "run" => run(addr, &opts).map(Command::Run),
        other => Err(usage(format!("unknown command {other:?}"))),
    }
}

fn serve(addr: SocketAddr, opts: &Options) -> Result<ServeConfig, Error> {
    opts.only(&["workers", "duration", "max-conns", "io-timeout-ms"])?;
    Ok(ServeConfig {
        addr,
        workers: count_usize(opts.int("workers", 8, 1, MAX_THREADS)?)?,
        io_timeout: opts.millis("io-timeout-ms", 2000)?,
        duration: opts.secs("duration", 3600.0)?,
        max_conns: opts.int("max-conns", u64::MAX, 1, u64::MAX)?,
    })
}

fn run(target: SocketAddr, opts: &Options) -> Result<RunConfig, Error> {
    opts.only(&[
        "duration",
        "concurrency",
        "max-conns",
        "connect-timeout-ms",
        "io-timeout-ms",
    ])?;
    Ok(RunConfig {
        target,
        duration: opts.secs("duration", 5.0)?,
        concurrency: count_usize(opts.int("concurrency", 4, 1, MAX_THREADS)?)?,
        max_conns: opts.int("max-conns", 1_000_000, 1, MAX_RUN_CONNS)?,
        connect_timeout: opts.millis("connect-timeout-ms", 1000)?,
        io_timeout: opts.millis("io-timeout-ms", 2000)?,
    })
}

fn usage(msg: impl Into<String>) -> Error {
    Error::Usage(msg.into())
}

fn count_usize(n: u64) -> Result<usize, Error> {
    usize::try_from(n).map_err(|_| usage(format!("{n} is too large here")))
}

/// `--name value` pairs, in order.
#[derive(Debug)]
struct Options(Vec<(String, String)>);

fn options(args: impl Iterator<Item = String>) -> Result<Options, Error> {
    let mut out = Vec::new();
    let mut args = args.peekable();
    while let Some(flag) = args.next() {
        let name = flag
            .strip_prefix("--")
            .ok_or_else(|| usage(format!("unexpected argument {flag:?}")))?;
        let value = args
            .next()
            .ok_or_else(|| usage(format!("{flag} needs a value")))?;
        out.push((name.to_string(), value));
    }
    Ok(Options(out))
}

impl Options {
    /// Refuses options other than `known`.
    fn only(&self, known: &[&str]) -> Result<(), Error> {
        match self.0.iter().find(|(n, _)| !known.contains(&n.as_str())) {
            Some((n, _)) => Err(usage(format!("unknown option --{n}"))),
            None => Ok(()),
        }
    }

    /// The last value given for `name`.
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn int(&self, name: &str, default: u64, min: u64, max: u64) -> Result<u64, Error> {
        let Some(v) = self.get(name) else {
            return Ok(default);
        };
        match v.parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(usage(format!(
                "--{name} {v:?}: an integer from {min} to {max}"
            ))),
        }
    }

    fn secs(&self, name: &str, default: f64) -> Result<Duration, Error> {
        let v = self.get(name);
        let secs = match v.map(str::parse::<f64>) {
            None => default,
            Some(Ok(s)) if s > 0.0 && s <= MAX_SECS => s,
            Some(_) => {
                return Err(usage(format!(
                    "--{name} {:?}: seconds, above 0 and at most {MAX_SECS}",
                    v.unwrap_or("")
                )));
            }
        };
        Duration::try_from_secs_f64(secs).map_err(|_| usage(format!("--{name}: not a duration")))
    }

    fn millis(&self, name: &str, default: u64) -> Result<Duration, Error> {
        self.int(name, default, 1, MAX_TIMEOUT_MS)
            .map(Duration::from_millis)
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
}
