//! `nsx-connrate`: how many new TCP connections per second reach a server,
//! directly, through a virtual server or through a proxy (netperf's
//! TCP_CRR in spirit), for the load balancer rows of `scripts/bench.sh`.
//!
//! One transaction is connect, a [`REQUEST`] of a few bytes, a
//! [`RESPONSE`] of a few bytes, close. The *server* closes first, so
//! TIME_WAIT lands on its side and the client's ephemeral port is free
//! again at once: the client can open connections for as long as it runs
//! without running out of ports.
//!
//! [`server`] owns the accept side, [`client`] the connection loop,
//! [`report`] the tallies and their JSON line, [`cli`] the arguments.
//! Standard library only: the tool is copied into the bench's sandbox
//! next to the agent.

pub mod cli;
pub mod client;
pub mod report;
pub mod server;

use std::fmt;
use std::io;
use std::net::SocketAddr;

/// What the client sends on every connection.
pub const REQUEST: &[u8] = b"nsx-connrate req";
/// What the server answers before it closes.
pub const RESPONSE: &[u8] = b"nsx-connrate rsp";

/// Why the tool could not run (a failed *connection* is not an error: it
/// is counted in the report by kind).
#[derive(Debug)]
pub enum Error {
    /// Bad command line.
    Usage(String),
    /// The server's address could not be bound.
    Bind { addr: SocketAddr, source: io::Error },
    /// A worker thread could not be started.
    Spawn(io::Error),
    /// The server could not wake its workers to stop them.
    Wake { addr: SocketAddr, source: io::Error },
    /// A worker thread panicked.
    WorkerPanicked,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(m) => write!(f, "{m}"),
            Error::Bind { addr, source } => write!(f, "cannot listen on {addr}: {source}"),
            Error::Spawn(e) => write!(f, "cannot start a worker thread: {e}"),
            Error::Wake { addr, source } => {
                write!(
                    f,
                    "cannot wake the server's workers through {addr}: {source}"
                )
            }
            Error::WorkerPanicked => write!(f, "a worker thread panicked"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Bind { source, .. } | Error::Wake { source, .. } | Error::Spawn(source) => {
                Some(source)
            }
            Error::Usage(_) | Error::WorkerPanicked => None,
        }
    }
}
