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
        self.refusal().map(Refusal::status)
    }

    /// How [`serve_one`] refuses the request (`None`: the peer hung up or
    /// the connection failed; nothing is answered).
    pub fn refusal(&self) -> Option<Refusal> {
        match self {
            HttpError::Closed | HttpError::Io(_) => None,
            HttpError::HeadTooLarge => Some(Refusal::HeadersTooLarge),
            HttpError::BodyTooLarge { .. } => Some(Refusal::BodyTooLarge),
            HttpError::Malformed(_) => Some(Refusal::BadRequest),
            HttpError::LengthRequired => Some(Refusal::LengthRequired),
            HttpError::Timeout => Some(Refusal::Timeout),
        }
    }
}

/// A request [`serve_one`] answers with an error itself, before any
/// handler sees it: one per status it answers (a fixed set, the `reason`
/// label of `nsx_gateway_http_requests_refused_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// 400: a malformed request line, header or `Content-Length`, or data
    /// beyond the body (pipelining).
    BadRequest = 0,
    /// 411: `Transfer-Encoding` (chunked) instead of a `Content-Length`.
    LengthRequired = 1,
    /// 413: a `Content-Length` above the listener's body limit.
    BodyTooLarge = 2,
    /// 431: a request head above [`MAX_HEAD`].
    HeadersTooLarge = 3,
    /// 408: the request was not read within the deadline.
    Timeout = 4,
}

impl Refusal {
    /// Every refusal, in label order (`ALL[r.index()] == r`).
    pub const ALL: [Refusal; 5] = [
        Refusal::BadRequest,
        Refusal::LengthRequired,
        Refusal::BodyTooLarge,
        Refusal::HeadersTooLarge,
        Refusal::Timeout,
    ];

    /// Position in [`Refusal::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::BadRequest => "bad_request",
            Refusal::LengthRequired => "length_required",
            Refusal::BodyTooLarge => "body_too_large",
            Refusal::HeadersTooLarge => "headers_too_large",
            Refusal::Timeout => "timeout",
        }
    }

    /// The status answered.
    pub fn status(self) -> u16 {
        match self {
            Refusal::BadRequest => 400,
            Refusal::LengthRequired => 411,
            Refusal::BodyTooLarge => 413,
            Refusal::HeadersTooLarge => 431,
            Refusal::Timeout => 408,
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
/// `max_body`), answers with `handler`'s response (or the error's status,
/// after calling `refused` with the [`Refusal`], before the answer is
/// written) within [`WRITE_TIMEOUT`] as long as the peer keeps reading (see
/// [`write_response_paced`]; `timeout` does not cover the write, so a large
/// download on a slow link is not cut off), then closes gracefully,
/// draining what the client still sends for a moment so the response is
/// not lost to a TCP reset.
pub async fn serve_one<S, F, Fut, R>(
    mut s: S,
    max_body: usize,
    timeout: Duration,
    handler: F,
    refused: R,
) where
    S: AsyncRead + AsyncWrite + Unpin,
    F: FnOnce(Request) -> Fut,
    Fut: std::future::Future<Output = Response>,
    R: FnOnce(Refusal),
{
    let read = tokio::time::timeout(timeout, read_request(&mut s, max_body))
        .await
        .unwrap_or(Err(HttpError::Timeout));
    let resp = match read {
        Ok(req) => Some(handler(req).await),
        Err(e) => {
            tracing::debug!("bad request: {e}");
            e.refusal().map(|r| {
                refused(r);
                Response::error(r.status(), e.to_string())
            })
        }
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

    /// Runs [`serve_one`] on one end of a duplex with `timeout`, writes
    /// `raw` from the other end (then keeps it open until the answer);
    /// returns the response and the refusals reported.
    async fn serve_raw(raw: &'static [u8], timeout: Duration) -> (String, Vec<Refusal>) {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let refused = std::sync::Mutex::new(Vec::new());
        let serve = serve_one(
            server,
            10,
            timeout,
            |_req| async { Response::text(200, "ok") },
            |r| refused.lock().expect("lock").push(r),
        );
        let talk = async {
            client.write_all(raw).await.expect("write");
            let mut out = Vec::new();
            client.read_to_end(&mut out).await.expect("read");
            drop(client);
            String::from_utf8(out).expect("utf-8")
        };
        let ((), out) = tokio::join!(serve, talk);
        (out, refused.into_inner().expect("lock"))
    }

    #[tokio::test]
    async fn serve_one_reports_what_it_refuses_before_answering() {
        let long = Duration::from_secs(5);
        let (out, r) = serve_raw(b"GET / HTTP/1.1\r\n\r\n", long).await;
        assert!(out.starts_with("HTTP/1.1 200 "), "{out}");
        assert_eq!(r, []);
        let cases: [(&[u8], Refusal); 3] = [
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                Refusal::LengthRequired,
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\n",
                Refusal::BodyTooLarge,
            ),
            (b"nonsense\r\n\r\n", Refusal::BadRequest),
        ];
        for (raw, want) in cases {
            let (out, r) = serve_raw(raw, long).await;
            assert_eq!(r, [want]);
            assert!(
                out.starts_with(&format!("HTTP/1.1 {} ", want.status())),
                "{out}"
            );
        }
        // Half a request, never finished: 408 at the deadline.
        let (out, r) = serve_raw(b"GET / HT", Duration::from_millis(50)).await;
        assert_eq!(r, [Refusal::Timeout]);
        assert!(out.starts_with("HTTP/1.1 408 "), "{out}");
    }

    #[tokio::test]
    async fn a_peer_that_hangs_up_is_not_a_refusal() {
        let (client, server) = tokio::io::duplex(1024);
        drop(client);
        let mut refused = Vec::new();
        serve_one(
            server,
            10,
            Duration::from_secs(5),
            |_req| async { Response::text(200, "ok") },
            |r| refused.push(r),
        )
        .await;
        assert_eq!(refused, []);
    }

    #[test]
    fn refusals_are_a_fixed_labelled_set() {
        for (i, r) in Refusal::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
        let labels: std::collections::HashSet<_> = Refusal::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(labels.len(), Refusal::ALL.len());
        let e = HttpError::HeadTooLarge;
        assert_eq!(e.refusal(), Some(Refusal::HeadersTooLarge));
        assert_eq!(e.status(), Some(431));
        assert_eq!(HttpError::Closed.refusal(), None);
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
