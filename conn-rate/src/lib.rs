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
//! [`report`] the tallies and their JSON line (serde), [`cli`] the
//! arguments (clap). The binary is copied into the bench's sandbox next
//! to the agent.

pub mod cli;
pub mod client;
pub mod report;
pub mod server;

use std::io;
use std::net::SocketAddr;

/// What the client sends on every connection.
pub const REQUEST: &[u8] = b"nsx-connrate req";
/// What the server answers before it closes.
pub const RESPONSE: &[u8] = b"nsx-connrate rsp";

/// Why the tool could not run (a failed *connection* is not an error: it
/// is counted in the report by kind).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad command line (clap's rendered message).
    #[error("{0}")]
    Usage(String),
    /// The server's address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    /// A worker thread could not be started.
    #[error("cannot start a worker thread: {0}")]
    Spawn(#[source] io::Error),
    /// The server could not wake its workers to stop them.
    #[error("cannot wake the server's workers through {addr}: {source}")]
    Wake { addr: SocketAddr, source: io::Error },
    /// A worker thread panicked.
    #[error("a worker thread panicked")]
    WorkerPanicked,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn errors_keep_their_messages_and_causes() {
        let addr = SocketAddr::from(([127, 0, 0, 1], 80));
        let e = Error::Bind {
            addr,
            source: io::Error::from(io::ErrorKind::AddrInUse),
        };
        assert!(
            e.to_string().starts_with("cannot listen on 127.0.0.1:80: "),
            "{e}"
        );
        assert!(e.source().is_some());
        let spawn = Error::Spawn(io::Error::from(io::ErrorKind::OutOfMemory));
        assert!(spawn.source().is_some());
        assert_eq!(
            Error::WorkerPanicked.to_string(),
            "a worker thread panicked"
        );
        assert!(Error::Usage("x".into()).source().is_none());
    }
}
