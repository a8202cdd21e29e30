//! A minimal, bounded HTTP/1.1 server side: one request per connection
//! (`Connection: close`), `Content-Length` bodies only, a header-size cap,
//! a body-size cap checked before reading the body, and a caller-imposed
//! deadline for reading the request. Responses are written with their own
//! limits ([`WRITE_STALL_TIMEOUT`], [`WRITE_TIMEOUT`]) so a large body (the
//! installer's binaries, [`Body::Shared`], never copied per request) gets
//! through a slow link. Enough for a JSON REST API and static downloads
//! without pulling in a framework.

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest request head (request line + headers).
pub const MAX_HEAD: usize = 16 * 1024;

/// Longest a response write may make no progress (one [`WRITE_CHUNK`] not
/// accepted by the peer): a client that stopped reading is dropped.
pub const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest writing one whole response may take (a 60 MB binary over a slow
/// link); independent of the request-reading deadline.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(600);
/// Unit of progress of a response write.
pub const WRITE_CHUNK: usize = 64 * 1024;

/// Errors reading a request; each maps to a status code.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("connection closed before a full request")]
    Closed,
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("request headers exceed {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("request body of {size} bytes exceeds the limit of {limit} bytes")]
    BodyTooLarge { size: u64, limit: usize },
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("a Content-Length is required (chunked transfer encoding is not supported)")]
    LengthRequired,
    #[error("request timed out")]
    Timeout,
}

impl HttpError {
    /// The status code to answer with (`None`: just close).
    pub fn status(&self) -> Option<u16> {
        match self {
            HttpError::Closed | HttpError::Io(_) => None,
            HttpError::HeadTooLarge => Some(431),
            HttpError::BodyTooLarge { .. } => Some(413),
            HttpError::Malformed(_) => Some(400),
            HttpError::LengthRequired => Some(411),
            HttpError::Timeout => Some(408),
        }
    }
}

/// A parsed request.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// The path without the query string.
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A response body: owned bytes, or a buffer shared between requests (a
/// binary read once at startup) that is written without being copied.
#[derive(Clone)]
pub enum Body {
    Owned(Vec<u8>),
    Shared(Arc<[u8]>),
}

impl Deref for Body {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Body::Owned(v) => v,
            Body::Shared(b) => b,
        }
    }
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            Body::Owned(_) => "Owned",
            Body::Shared(_) => "Shared",
        };
        write!(f, "Body::{kind}({} bytes)", self.len())
    }
}

impl From<Vec<u8>> for Body {
    fn from(v: Vec<u8>) -> Body {
        Body::Owned(v)
    }
}

impl From<String> for Body {
    fn from(s: String) -> Body {
        Body::Owned(s.into_bytes())
    }
}

impl From<Arc<[u8]>> for Body {
    fn from(b: Arc<[u8]>) -> Body {
        Body::Shared(b)
    }
}

/// A response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Body,
    /// Extra header lines (name, value), e.g. `Allow` on a 405.
    pub headers: Vec<(&'static str, String)>,
}

impl Response {
    /// A JSON response.
    pub fn json(status: u16, value: &serde_json::Value) -> Response {
        let mut body = serde_json::to_vec_pretty(value).unwrap_or_else(|_| b"{}".to_vec());
        body.push(b'\n');
        Response {
            status,
            content_type: "application/json",
            body: Body::Owned(body),
            headers: Vec::new(),
        }
    }

    /// A response with any body (owned or shared) and media type.
    pub fn with_body(status: u16, content_type: &'static str, body: impl Into<Body>) -> Response {
        Response {
            status,
            content_type,
            body: body.into(),
            headers: Vec::new(),
        }
    }

    /// A one-line `text/plain` response: `message` with any line breaks
    /// turned into spaces, then `\n`.
    pub fn text(status: u16, message: impl AsRef<str>) -> Response {
        let mut line = message.as_ref().replace(['\r', '\n'], " ");
        line.push('\n');
        Response::with_body(status, "text/plain; charset=utf-8", line)
    }

    /// Adds a header line.
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }

    /// `{"error": message}` with `status`.
    pub fn error(status: u16, message: impl Into<String>) -> Response {
        Response::json(status, &serde_json::json!({ "error": message.into() }))
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Content",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n")
}

/// Reads one request with a body of at most `max_body` bytes, answering
/// `Expect: 100-continue`. The caller bounds the time (see [`serve_one`]).
pub async fn read_request<S>(s: &mut S, max_body: usize) -> Result<Request, HttpError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = find_head_end(&buf) {
            break i;
        }
        if buf.len() > MAX_HEAD {
            return Err(HttpError::HeadTooLarge);
        }
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(HttpError::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    if head_end > MAX_HEAD {
        return Err(HttpError::HeadTooLarge);
    }
    let head = std::str::from_utf8(&buf[..head_end])
        .map_err(|_| HttpError::Malformed("request head is not UTF-8".into()))?;
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HttpError::Malformed(format!(
            "bad request line {request_line:?}"
        )));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(HttpError::Malformed(format!(
            "unsupported protocol {version:?}"
        )));
    }
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(HttpError::Malformed(format!("bad method {method:?}")));
    }
    let mut headers = Vec::new();
    for line in lines {
        let Some((k, v)) = line.split_once(':') else {
            return Err(HttpError::Malformed(format!("bad header line {line:?}")));
        };
        if k.is_empty() || k.contains(' ') {
            return Err(HttpError::Malformed(format!("bad header name {k:?}")));
        }
        headers.push((k.to_string(), v.trim().to_string()));
    }
    let mut req = Request {
        method: method.to_string(),
        path: target.split('?').next().unwrap_or_default().to_string(),
        headers,
        body: Vec::new(),
    };
    if req.header("transfer-encoding").is_some() {
        return Err(HttpError::LengthRequired);
    }
    let mut length: Option<u64> = None;
    for (k, v) in &req.headers {
        if k.eq_ignore_ascii_case("content-length") {
            let n: u64 = v
                .parse()
                .map_err(|_| HttpError::Malformed(format!("bad Content-Length {v:?}")))?;
            if length.is_some_and(|l| l != n) {
                return Err(HttpError::Malformed(
                    "conflicting Content-Length headers".into(),
                ));
            }
            length = Some(n);
        }
    }
    let length = length.unwrap_or(0);
    if length > max_body as u64 {
        return Err(HttpError::BodyTooLarge {
            size: length,
            limit: max_body,
        });
    }
    let length = usize::try_from(length).map_err(|_| HttpError::BodyTooLarge {
        size: length,
        limit: max_body,
    })?;
    if req
        .header("expect")
        .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"))
    {
        s.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
        s.flush().await?;
    }
    let mut body: Vec<u8> = buf[head_end + 4..].to_vec();
    if body.len() > length {
        return Err(HttpError::Malformed(
            "more data than Content-Length (pipelining is not supported)".into(),
        ));
    }
    let already = body.len();
    body.resize(length, 0);
    s.read_exact(&mut body[already..]).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            HttpError::Closed
        } else {
            HttpError::Io(e)
        }
    })?;
    req.body = body;
    Ok(req)
}

fn response_head(resp: &Response) -> String {
    let extra: String = resp
        .headers
        .iter()
        // Values never carry a line break into the head.
        .map(|(k, v)| format!("{k}: {}\r\n", v.replace(['\r', '\n'], " ")))
        .collect();
    format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{extra}Connection: close\r\nCache-Control: no-store\r\n\r\n",
        resp.status,
        reason(resp.status),
        resp.content_type,
        resp.body.len()
    )
}

/// Writes `resp` with `Connection: close` (no time limit of its own).
pub async fn write_response<S: AsyncWrite + Unpin>(
    s: &mut S,
    resp: &Response,
) -> std::io::Result<()> {
    s.write_all(response_head(resp).as_bytes()).await?;
    s.write_all(&resp.body).await?;
    s.flush().await
}

/// Writes `resp` like [`write_response`], but in [`WRITE_CHUNK`] pieces,
/// each of which must be accepted within `stall`; the body is written
/// straight from its (possibly shared) buffer.
pub async fn write_response_paced<S: AsyncWrite + Unpin>(
    s: &mut S,
    resp: &Response,
    stall: Duration,
) -> std::io::Result<()> {
    let stalled = || std::io::Error::new(std::io::ErrorKind::TimedOut, "peer stopped reading");
    let head = response_head(resp);
    tokio::time::timeout(stall, s.write_all(head.as_bytes()))
        .await
        .map_err(|_| stalled())??;
    for chunk in resp.body.chunks(WRITE_CHUNK) {
        tokio::time::timeout(stall, s.write_all(chunk))
            .await
            .map_err(|_| stalled())??;
    }
    tokio::time::timeout(stall, s.flush())
        .await
        .map_err(|_| stalled())?
}

/// Serves one request on `s`: reads it within `timeout` (body at most
/// `max_body`), answers with `handler`'s response (or the error's status)
/// within [`WRITE_TIMEOUT`] as long as the peer keeps reading (see
/// [`write_response_paced`]; `timeout` does not cover the write, so a large
/// download on a slow link is not cut off), then closes gracefully,
/// draining what the client still sends for a moment so the response is
/// not lost to a TCP reset.
pub async fn serve_one<S, F, Fut>(mut s: S, max_body: usize, timeout: Duration, handler: F)
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: FnOnce(Request) -> Fut,
    Fut: std::future::Future<Output = Response>,
{
    let resp = match tokio::time::timeout(timeout, read_request(&mut s, max_body)).await {
        Err(_) => Some(Response::error(408, HttpError::Timeout.to_string())),
        Ok(Err(e)) => {
            tracing::debug!("bad request: {e}");
            e.status().map(|st| Response::error(st, e.to_string()))
        }
        Ok(Ok(req)) => Some(handler(req).await),
    };
    if let Some(resp) = resp {
        let stall = WRITE_STALL_TIMEOUT.max(timeout);
        match tokio::time::timeout(WRITE_TIMEOUT, write_response_paced(&mut s, &resp, stall)).await
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(status = resp.status, "response not delivered: {e}"),
            Err(_) => tracing::info!(
                status = resp.status,
                bytes = resp.body.len(),
                "response not delivered within {WRITE_TIMEOUT:?}; closing"
            ),
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), s.shutdown()).await;
    // Drain up to 1 MiB for up to 1 s.
    let mut sink = [0u8; 8192];
    let mut left: usize = 1 << 20;
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while left > 0 {
            match s.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parse(raw: &[u8], max: usize) -> Result<Request, HttpError> {
        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        a.write_all(raw).await.expect("write");
        a.shutdown().await.expect("shutdown");
        read_request(&mut b, max).await
    }

    #[tokio::test]
    async fn parses_and_limits() {
        let r = parse(
            b"POST /x?y=1 HTTP/1.1\r\nContent-Length: 3\r\nA: b\r\n\r\nabc",
            10,
        )
        .await
        .expect("ok");
        assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/x"));
        assert_eq!(r.body, b"abc");
        assert_eq!(r.header("a"), Some("b"));
        let e = parse(b"POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\n", 10)
            .await
            .expect_err("too big");
        assert_eq!(e.status(), Some(413));
        let e = parse(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 10)
            .await
            .expect_err("chunked");
        assert_eq!(e.status(), Some(411));
        let e = parse(b"garbage\r\n\r\n", 10).await.expect_err("garbage");
        assert_eq!(e.status(), Some(400));
        let big = vec![b'a'; MAX_HEAD + 10];
        let e = parse(&big, 10).await.expect_err("head");
        assert_eq!(e.status(), Some(431));
        let e = parse(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nab", 10)
            .await
            .expect_err("short");
        assert!(e.status().is_none());
    }

    #[test]
    fn text_responses_are_one_line() {
        let r = Response::text(404, "no\r\nsuch thing");
        assert_eq!(&*r.body, b"no  such thing\n");
        assert_eq!(r.content_type, "text/plain; charset=utf-8");
    }

    #[tokio::test]
    async fn shared_bodies_are_written_whole_without_a_copy() {
        let data: Arc<[u8]> = (0..3 * WRITE_CHUNK + 17)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>()
            .into();
        let r = Response::with_body(200, "application/octet-stream", data.clone());
        assert!(matches!(&r.body, Body::Shared(b) if Arc::ptr_eq(b, &data)));
        assert_eq!(
            format!("{:?}", r.body),
            format!("Body::Shared({} bytes)", data.len())
        );
        let (mut a, mut b) = tokio::io::duplex(4096);
        let reader = tokio::spawn(async move {
            let mut out = Vec::new();
            b.read_to_end(&mut out).await.map(|_| out)
        });
        write_response_paced(&mut a, &r, Duration::from_secs(5))
            .await
            .expect("write");
        drop(a);
        let out = reader.await.expect("join").expect("read");
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n",
            data.len()
        );
        assert!(out.starts_with(head.as_bytes()));
        assert!(out.ends_with(&data));
        assert_eq!(out.len(), response_head(&r).len() + data.len());
    }

    #[tokio::test]
    async fn a_peer_that_stops_reading_is_dropped() {
        let r = Response::with_body(200, "application/octet-stream", vec![0u8; 1 << 20]);
        let (mut a, _b) = tokio::io::duplex(1024);
        let e = write_response_paced(&mut a, &r, Duration::from_millis(50))
            .await
            .expect_err("stalled");
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
    }
}
