//! The gateway's admin API client (plain HTTP on loopback): `GET` with a
//! bearer token and `Connection: close`, through hyper
//! ([`bounded_http::client`]) on a current-thread tokio runtime per
//! request, the reply read whole (at most [`MAX_RESPONSE`] bytes) and
//! decoded. [`GwApi`] is the seam the command runner uses.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use bounded_http::ClientError;
use serde_json::Value;
use tokio::net::TcpStream;

use crate::error::{Error, io_reason};

/// Default admin API URL.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";
/// Longest response accepted.
pub const MAX_RESPONSE: usize = 64 << 20;

/// GET requests to the gateway's admin API.
pub trait GwApi {
    /// `GET path`, the JSON body of a 2xx answer; an HTTP error becomes
    /// [`Error::Api`] with the gateway's `error` text.
    fn get(&mut self, path: &str) -> Result<Value, Error>;
}

/// A response read whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Splits `http://host:port[/...]` into `host:port` (port 80 by default).
pub fn authority(url: &str) -> Result<String, String> {
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(format!(
            "{url:?}: only http:// URLs are supported (the admin API is plain HTTP on loopback)"
        ));
    };
    let hostport = rest.split('/').next().unwrap_or("");
    if hostport.is_empty() {
        return Err(format!("{url:?}: no host"));
    }
    let has_port = match hostport.rfind(':') {
        Some(i) => hostport.rfind(']').is_none_or(|j| i > j),
        None => false,
    };
    Ok(if has_port {
        hostport.to_string()
    } else {
        format!("{hostport}:80")
    })
}

/// The gateway's admin API.
#[derive(Debug, Clone)]
pub struct Gateway {
    /// As given (for messages).
    pub url: String,
    /// `host:port`.
    pub authority: String,
    /// The bearer token (`DIR/admin.token`).
    pub token: String,
    /// Bound on connecting, and on the exchange after it.
    pub timeout: Duration,
}

impl Gateway {
    fn unreachable(&self, reason: String) -> Error {
        Error::GatewayUnreachable {
            url: self.url.clone(),
            reason,
        }
    }

    /// Connects to the first address of the authority that answers.
    async fn connect(&self) -> Result<TcpStream, Error> {
        let addrs: Vec<SocketAddr> = self
            .authority
            .to_socket_addrs()
            .map_err(|e| self.unreachable(io_reason(&e)))?
            .collect();
        let mut last = "no address".to_string();
        for a in addrs {
            match tokio::time::timeout(self.timeout, TcpStream::connect(a)).await {
                Ok(Ok(s)) => return Ok(s),
                Ok(Err(e)) => last = io_reason(&e),
                Err(_) => last = "timed out".into(),
            }
        }
        Err(self.unreachable(last))
    }

    /// `GET path` and the whole response.
    async fn fetch(&self, path: &str) -> Result<Response, Error> {
        let stream = self.connect().await?;
        let auth = format!("Bearer {}", self.token);
        let agent = concat!("nsxcli/", env!("CARGO_PKG_VERSION"));
        let req = bounded_http::client::request(
            "GET",
            path,
            &self.authority,
            &[
                ("Authorization", &auth),
                ("Accept", "application/json"),
                ("User-Agent", agent),
            ],
            Vec::new(),
        )
        .map_err(|e| Error::Failed(format!("GET {path}: {e}")))?;
        let reply = tokio::time::timeout(
            self.timeout,
            bounded_http::client::send(stream, req, MAX_RESPONSE),
        )
        .await
        .map_err(|_| Error::Failed("talking to the gateway: timed out".into()))?
        .map_err(reply_error)?;
        Ok(Response {
            status: reply.status,
            body: reply.body,
        })
    }
}

/// A failed exchange: the connection failing is [`Error::Failed`], an
/// answer that is not HTTP (or cut short, or too large) [`Error::BadReply`].
fn reply_error(e: ClientError) -> Error {
    let io = match &e {
        ClientError::Http(h) => std::error::Error::source(h)
            .and_then(|s| s.downcast_ref::<std::io::Error>())
            .map(io_reason),
        _ => None,
    };
    match io {
        Some(reason) => Error::Failed(format!("talking to the gateway: {reason}")),
        None => Error::BadReply {
            what: "the gateway".into(),
            reason: e.to_string(),
        },
    }
}

impl GwApi for Gateway {
    fn get(&mut self, path: &str) -> Result<Value, Error> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| {
                Error::Failed(format!("cannot start the HTTP client: {}", io_reason(&e)))
            })?;
        let resp = rt.block_on(self.fetch(path))?;
        json_of(path, &resp)
    }
}

/// The JSON body of a response, or the error it carries.
pub fn json_of(path: &str, resp: &Response) -> Result<Value, Error> {
    let body: Option<Value> = serde_json::from_slice(&resp.body).ok();
    if (200..300).contains(&resp.status) {
        return body.ok_or_else(|| Error::BadReply {
            what: "the gateway".into(),
            reason: format!("GET {path}: the body is not JSON"),
        });
    }
    let msg = body
        .as_ref()
        .and_then(|b| b.get("error"))
        .and_then(Value::as_str)
        .map_or_else(String::new, |e| format!(": {e}"));
    Err(Error::Api(match resp.status {
        401 | 403 => format!(
            "The gateway refused the admin token (HTTP {}){msg}",
            resp.status
        ),
        404 => format!("The gateway does not serve GET {path} (HTTP 404){msg}"),
        s => format!("GET {path}: HTTP {s}{msg}"),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// A gateway on 127.0.0.1 that answers one request with `raw` and
    /// closes; returns the client for it and the request it will see.
    fn answering(raw: &'static [u8]) -> (Gateway, std::thread::JoinHandle<String>) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let t = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).unwrap();
            s.write_all(raw).unwrap();
            String::from_utf8_lossy(&buf[..n]).to_string()
        });
        let g = Gateway {
            url: format!("http://127.0.0.1:{port}"),
            authority: format!("127.0.0.1:{port}"),
            token: "tok".into(),
            timeout: Duration::from_secs(5),
        };
        (g, t)
    }

    /// What `get` makes of the answer `raw`.
    fn get_answered(raw: &'static [u8], path: &str) -> Result<Value, Error> {
        let (mut g, t) = answering(raw);
        let r = g.get(path);
        t.join().unwrap();
        r
    }

    #[test]
    fn content_length_body() {
        let r = get_answered(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n[]",
            "/x",
        );
        assert_eq!(r.unwrap(), serde_json::json!([]));
    }

    #[test]
    fn chunked_body() {
        let r = get_answered(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3;x=y\r\n:1}\r\n0\r\n\r\n",
            "/x",
        );
        assert_eq!(r.unwrap(), serde_json::json!({"a": 1}));
    }

    #[test]
    fn eof_body_and_errors() {
        let r = get_answered(
            b"HTTP/1.0 404 Not Found\r\n\r\n{\"error\":\"no route\"}",
            "/api/v1/certificates",
        );
        assert_eq!(
            r,
            Err(Error::Api(
                "The gateway does not serve GET /api/v1/certificates (HTTP 404): no route".into()
            ))
        );
        let r = Response {
            status: 401,
            body: b"{\"error\":\"bad token\"}".to_vec(),
        };
        assert_eq!(
            json_of("/x", &r),
            Err(Error::Api(
                "The gateway refused the admin token (HTTP 401): bad token".into()
            ))
        );
        for raw in [
            &b"HTTP/1.1 200 OK\r\n"[..],
            b"SSH-2.0 x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\nab",
        ] {
            let r = get_answered(raw, "/x");
            assert!(
                matches!(r, Err(Error::BadReply { .. })),
                "{:?}: {r:?}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn urls() {
        assert_eq!(
            authority("http://127.0.0.1:8080").unwrap(),
            "127.0.0.1:8080"
        );
        assert_eq!(authority("http://localhost/api").unwrap(), "localhost:80");
        assert_eq!(authority("http://[::1]:8080/").unwrap(), "[::1]:8080");
        assert_eq!(authority("http://[::1]").unwrap(), "[::1]:80");
        assert!(authority("https://x").is_err());
        assert!(authority("http://").is_err());
    }

    #[test]
    fn get_against_a_local_server() {
        let (mut g, t) = answering(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{\"ok\":1}\n");
        assert_eq!(
            g.get("/api/v1/instances").unwrap(),
            serde_json::json!({"ok": 1})
        );
        let req = t.join().unwrap();
        assert!(
            req.starts_with("GET /api/v1/instances HTTP/1.1\r\n"),
            "{req}"
        );
        assert!(req.contains("\r\nAuthorization: Bearer tok\r\n"), "{req}");
    }

    #[test]
    fn refused_is_unreachable() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let mut g = Gateway {
            url: format!("http://127.0.0.1:{port}"),
            authority: format!("127.0.0.1:{port}"),
            token: String::new(),
            timeout: Duration::from_secs(2),
        };
        let e = g.get("/api/v1/instances").unwrap_err();
        assert_eq!(e.exit_code(), crate::error::EXIT_UNREACHABLE);
        assert!(e.to_string().contains("Connection refused"), "{e}");
    }
}
