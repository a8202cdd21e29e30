//! The agent's local API client: one JSON request line on the unix socket,
//! one reply line back (agent/API.md; the types are `agent_api`'s). [`Api`]
//! is the seam the command runner uses, so tests answer with canned
//! replies.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use agent_api::{ReplyError, Request};
use serde_json::Value;

use crate::error::{Error, io_reason};

/// The API version nsxcli speaks.
pub const API_VERSION: u32 = agent_api::API_VERSION;
/// Default socket of the agent.
pub const DEFAULT_SOCKET: &str = "/var/run/nsx-agent/nsxagent.sock";
/// Longest reply accepted (a full capture of 10,000 frames fits).
const MAX_REPLY: u64 = 1 << 30;

/// One request, one reply.
pub trait Api {
    /// Sends `req` and returns the reply object as it came (for `--json`),
    /// or the API's `error` as [`Error::Api`].
    fn call(&mut self, req: &Request) -> Result<Value, Error>;
}

/// The agent's unix socket.
#[derive(Debug, Clone)]
pub struct Agent {
    /// Socket path.
    pub socket: PathBuf,
    /// How long to wait for an ordinary reply.
    pub timeout: Duration,
}

impl Agent {
    /// A client of the socket at `socket`.
    #[must_use]
    pub fn new(socket: PathBuf) -> Agent {
        Agent {
            socket,
            timeout: Duration::from_secs(10),
        }
    }

    fn unreachable(&self, e: &std::io::Error) -> Error {
        Error::AgentUnreachable {
            socket: self.socket.display().to_string(),
            reason: io_reason(e),
        }
    }
}

impl Api for Agent {
    fn call(&mut self, req: &Request) -> Result<Value, Error> {
        let cmd = req.name();
        // A capture answers after its own timeout (default 10 s).
        let wait = match req {
            Request::Capture { timeout_ms, .. } => {
                let ms = timeout_ms.unwrap_or(agent_api::request::capture::TIMEOUT_MS_DEFAULT);
                Duration::from_millis(u64::from(ms)) + Duration::from_secs(10)
            }
            _ => self.timeout,
        };
        let mut stream = UnixStream::connect(&self.socket).map_err(|e| self.unreachable(&e))?;
        let io_err = |e: std::io::Error| {
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) {
                Error::Failed(format!(
                    "the agent did not answer \"{cmd}\" within {} s",
                    wait.as_secs()
                ))
            } else {
                Error::Failed(format!("talking to the agent: {}", io_reason(&e)))
            }
        };
        stream.set_read_timeout(Some(wait)).map_err(io_err)?;
        stream
            .set_write_timeout(Some(self.timeout))
            .map_err(io_err)?;
        let mut line = agent_api::encode_request(req).into_bytes();
        line.push(b'\n');
        stream.write_all(&line).map_err(io_err)?;
        let mut reader = BufReader::new(stream.take(MAX_REPLY));
        let mut reply = String::new();
        reader.read_line(&mut reply).map_err(io_err)?;
        parse_reply(&reply)
    }
}

/// Checks one reply line: JSON object, and not `{"error": ...}`.
pub fn parse_reply(line: &str) -> Result<Value, Error> {
    agent_api::reply_value(line).map_err(reply_error)
}

/// A reply object as the command's reply type.
pub fn decode<T: serde::de::DeserializeOwned>(v: &Value) -> Result<T, Error> {
    agent_api::decode(v).map_err(reply_error)
}

fn reply_error(e: ReplyError) -> Error {
    match e {
        ReplyError::Api(m) => Error::Api(m),
        ReplyError::Malformed(reason) => Error::BadReply {
            what: "the agent".into(),
            reason,
        },
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn replies() {
        assert_eq!(
            parse_reply("{\"api_version\":1,\"error\":\"unknown switch \\\"x\\\"\"}\n"),
            Err(Error::Api("unknown switch \"x\"".into()))
        );
        assert!(matches!(parse_reply(""), Err(Error::BadReply { .. })));
        assert!(matches!(parse_reply("[1]"), Err(Error::BadReply { .. })));
        assert!(matches!(parse_reply("{"), Err(Error::BadReply { .. })));
        assert_eq!(
            parse_reply("{\"api_version\":1,\"mode\":\"overlay\"}").ok(),
            Some(json!({"api_version": 1, "mode": "overlay"}))
        );
    }

    #[test]
    fn missing_socket_is_unreachable() {
        let mut a = Agent::new(PathBuf::from("/nonexistent/nsxcli-test.sock"));
        let e = a.call(&Request::Status).err();
        assert_eq!(
            e,
            Some(Error::AgentUnreachable {
                socket: "/nonexistent/nsxcli-test.sock".into(),
                reason: "No such file or directory".into()
            })
        );
    }

    #[test]
    fn round_trip_over_a_socket() {
        let dir = std::env::temp_dir().join(format!("nsxcli-test-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("api.sock");
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut req = String::new();
            r.read_line(&mut req).unwrap();
            let v: Value = serde_json::from_str(&req).unwrap();
            let mut w = s;
            writeln!(w, "{}", json!({"api_version": 1, "echo": v})).unwrap();
        });
        let mut a = Agent::new(path.clone());
        let v = a
            .call(&Request::ArpTable {
                switch: Some(agent_api::SwitchRef::Name("web-ls".into())),
            })
            .unwrap();
        server.join().unwrap();
        assert_eq!(
            v["echo"],
            json!({"api_version": 1, "cmd": "arp-table", "switch": "web-ls"})
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
