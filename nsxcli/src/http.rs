//! Just enough HTTP/1.1 for the gateway's admin API (plain HTTP on
//! loopback): `GET` with a bearer token and `Connection: close`, the reply
//! read to the end and decoded (`Content-Length`, chunked, or up to EOF).
//! [`GwApi`] is the seam the command runner uses.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use serde_json::Value;

use crate::error::{Error, io_reason};

/// Default admin API URL.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";
/// Longest response accepted.
const MAX_RESPONSE: u64 = 64 << 20;

/// GET requests to the gateway's admin API.
pub trait GwApi {
    /// `GET path`, the JSON body of a 2xx answer; an HTTP error becomes
    /// [`Error::Api`] with the gateway's `error` text.
    fn get(&mut self, path: &str) -> Result<Value, Error>;
}

/// A parsed HTTP response.
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

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Parses a whole response (the connection was read to EOF).
pub fn parse_response(raw: &[u8]) -> Result<Response, String> {
    let Some(end) = find(raw, b"\r\n\r\n") else {
        return Err("no end of headers".into());
    };
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| "headers are not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.split(' ');
    let (Some(version), Some(code)) = (parts.next(), parts.next()) else {
        return Err(format!("bad status line {status_line:?}"));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(format!("bad status line {status_line:?}"));
    }
    let status: u16 = code
        .parse()
        .map_err(|_| format!("bad status line {status_line:?}"))?;
    let mut length: Option<usize> = None;
    let mut chunked = false;
    for l in lines {
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
        if k == "content-length" {
            length = Some(v.parse().map_err(|_| format!("bad Content-Length {v:?}"))?);
        } else if k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked") {
            chunked = true;
        }
    }
    let rest = &raw[end + 4..];
    let body = if chunked {
        dechunk(rest)?
    } else if let Some(n) = length {
        rest.get(..n)
            .ok_or_else(|| format!("body cut short: {} of {n} bytes", rest.len()))?
            .to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Response { status, body })
}

/// Decodes a chunked body.
fn dechunk(mut b: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = find(b, b"\r\n") else {
            return Err("chunk size line cut short".into());
        };
        let line = std::str::from_utf8(&b[..eol]).map_err(|_| "bad chunk size")?;
        let size_hex = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|_| format!("bad chunk size {size_hex:?}"))?;
        b = &b[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        let Some(chunk) = b.get(..size) else {
            return Err("chunk cut short".into());
        };
        out.extend_from_slice(chunk);
        b = b.get(size + 2..).ok_or("chunk not terminated")?;
    }
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
    pub timeout: Duration,
}

impl Gateway {
    fn unreachable(&self, reason: String) -> Error {
        Error::GatewayUnreachable {
            url: self.url.clone(),
            reason,
        }
    }
}

impl GwApi for Gateway {
    fn get(&mut self, path: &str) -> Result<Value, Error> {
        let addrs: Vec<_> = self
            .authority
            .to_socket_addrs()
            .map_err(|e| self.unreachable(io_reason(&e)))?
            .collect();
        let mut last = "no address".to_string();
        let mut stream = None;
        for a in addrs {
            match TcpStream::connect_timeout(&a, self.timeout) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = io_reason(&e),
            }
        }
        let Some(mut s) = stream else {
            return Err(self.unreachable(last));
        };
        let io =
            |e: std::io::Error| Error::Failed(format!("talking to the gateway: {}", io_reason(&e)));
        s.set_read_timeout(Some(self.timeout)).map_err(io)?;
        s.set_write_timeout(Some(self.timeout)).map_err(io)?;
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nAccept: application/json\r\nUser-Agent: nsxcli/{}\r\nConnection: close\r\n\r\n",
            self.authority,
            self.token,
            env!("CARGO_PKG_VERSION")
        );
        s.write_all(req.as_bytes()).map_err(io)?;
        let mut raw = Vec::new();
        s.take(MAX_RESPONSE).read_to_end(&mut raw).map_err(io)?;
        let resp = parse_response(&raw).map_err(|reason| Error::BadReply {
            what: "the gateway".into(),
            reason,
        })?;
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

    #[test]
    fn content_length_body() {
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n[]",
        )
        .unwrap();
        assert_eq!(
            r,
            Response {
                status: 200,
                body: b"[]".to_vec()
            }
        );
    }

    #[test]
    fn chunked_body() {
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3;x=y\r\n:1}\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.body, b"{\"a\":1}");
    }

    #[test]
    fn eof_body_and_errors() {
        let r = parse_response(b"HTTP/1.0 404 Not Found\r\n\r\n{\"error\":\"no route\"}").unwrap();
        assert_eq!(r.status, 404);
        assert_eq!(
            json_of("/api/v1/certificates", &r),
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
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
        assert!(parse_response(b"SSH-2.0 x\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc").is_err());
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").is_err()
        );
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\nab")
                .is_err()
        );
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
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let t = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).unwrap();
            let req = String::from_utf8_lossy(&buf[..n]).to_string();
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{\"ok\":1}\n")
                .unwrap();
            req
        });
        let mut g = Gateway {
            url: format!("http://127.0.0.1:{port}"),
            authority: format!("127.0.0.1:{port}"),
            token: "tok".into(),
            timeout: Duration::from_secs(5),
        };
        assert_eq!(
            g.get("/api/v1/instances").unwrap(),
            serde_json::json!({"ok": 1})
        );
        let req = t.join().unwrap();
        assert!(req.starts_with("GET /api/v1/instances HTTP/1.1\r\n"));
        assert!(req.contains("\r\nAuthorization: Bearer tok\r\n"));
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
