//! The server side: one request per connection (`Connection: close`),
//! parsed and answered by hyper, within [`Limits`]: a request head of at
//! most [`Limits::max_head`] bytes (431), a body only with a
//! `Content-Length` (411) of at most [`Limits::max_body`] bytes, checked
//! before the body is read (413), the whole request read within
//! [`Limits::read_timeout`] (408), and the answer written within
//! [`Limits::write_timeout`] while the peer keeps reading (no write may wait
//! longer than [`Limits::stall_timeout`]). Large bodies ([`Body::Shared`],
//! a buffer shared between requests) are handed to hyper without a copy.
//!
//! hyper answers a malformed head (400) and an oversized one (431) itself;
//! a request not read by the deadline gets its 408 here, since hyper can
//! only close such a connection.

use std::future::Future;
use std::io;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderName, HeaderValue};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

/// What one connection may cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request head (request line and headers); above it: 431.
    pub max_head: usize,
    /// Largest request body; above it: 413, and a body without a
    /// `Content-Length` (chunked) gets 411. `None`: the body is not read
    /// (the handler sees none, whatever the client sends).
    pub max_body: Option<usize>,
    /// Deadline for reading the whole request (head and body); past it: 408.
    pub read_timeout: Duration,
    /// Longest writing the answer may take once the handler returned it.
    pub write_timeout: Duration,
    /// Longest one write may wait for the peer to read: a client that
    /// stopped reading is dropped.
    pub stall_timeout: Duration,
}

/// Errors reading a request; each refusal maps to a status code.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("connection closed before a full request")]
    Closed,
    #[error("I/O: {0}")]
    Io(#[from] io::Error),
    #[error("request headers exceed the limit")]
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

    /// What a failed hyper connection means for the request.
    fn of_connection(e: &hyper::Error) -> HttpError {
        if e.is_parse_too_large() {
            HttpError::HeadTooLarge
        } else if e.is_parse() {
            HttpError::Malformed(e.to_string())
        } else {
            HttpError::Closed
        }
    }
}

metrics_text::label_set! {
    /// A request [`serve_one`] answers with an error itself, before any
    /// handler sees it: one per status it answers (a fixed set, e.g. the
    /// `reason` label of the gateway's `nsx_gateway_http_requests_refused_total`).
    pub enum Refusal {
        /// 400: a malformed request line, header or `Content-Length`.
        BadRequest = "bad_request",
        /// 411: `Transfer-Encoding` (chunked) instead of a `Content-Length`.
        LengthRequired = "length_required",
        /// 413: a `Content-Length` above the body limit.
        BodyTooLarge = "body_too_large",
        /// 431: a request head above the head limit.
        HeadersTooLarge = "headers_too_large",
        /// 408: the request was not read within the deadline.
        Timeout = "timeout",
    }
}

impl Refusal {
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

/// A request as the handlers see it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// The path without the query string.
    pub path: String,
    /// Names in lower case, values as sent (UTF-8).
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

impl From<Body> for Bytes {
    /// Both kinds without a copy: the vector is taken over, the shared
    /// buffer is referenced.
    fn from(b: Body) -> Bytes {
        match b {
            Body::Owned(v) => Bytes::from(v),
            Body::Shared(a) => Bytes::from_owner(a),
        }
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

    /// The hyper response: `Content-Type`, `Content-Length`, the extra
    /// headers (line breaks in values become spaces; a header hyper cannot
    /// carry is left out and logged), `Cache-Control: no-store`.
    fn into_hyper(self) -> hyper::Response<Full<Bytes>> {
        let status = hyper::StatusCode::from_u16(self.status)
            .unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
        let len = self.body.len();
        let mut out = hyper::Response::new(Full::new(Bytes::from(self.body)));
        *out.status_mut() = status;
        let h = out.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.content_type),
        );
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        for (name, value) in self.headers {
            let value = value.replace(['\r', '\n'], " ");
            match (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(&value),
            ) {
                (Ok(n), Ok(v)) => {
                    h.append(n, v);
                }
                _ => tracing::warn!(name, value, "response header left out: not valid in HTTP"),
            }
        }
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        out
    }
}

/// Where a connection is: its deadlines depend on it.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Reading the request (the read deadline runs).
    Reading,
    /// The handler runs (no deadline of ours).
    Handling,
    /// The answer was handed to hyper at this instant (the write deadline runs).
    Answered(Instant),
}

/// Why the service ended a connection without an answer.
#[derive(Debug, thiserror::Error)]
enum Unanswered {
    #[error("the request body was not read: {0}")]
    Body(String),
    #[error("a second request on a one-request connection")]
    Repeated,
}

/// How a connection ended.
enum Ended {
    /// hyper finished (with its error, if any).
    Done(Result<(), hyper::Error>),
    /// The request was not read by the deadline; nothing was answered.
    ReadTimedOut,
    /// The answer was not written within the write deadline.
    WriteTimedOut,
}

/// Serves one request on `io`: reads it within `limits` and answers with
/// `handler`'s response, or refuses it (calling `refused` with the
/// [`Refusal`]; the service's own refusals, 408/411/413, are reported before
/// their answer is written, hyper's 400/431 once it wrote them), then
/// closes gracefully, draining what the client still sends for a moment so
/// the answer is not lost to a TCP reset.
pub async fn serve_one<S, F, Fut, R>(mut io: S, limits: &Limits, handler: F, refused: R)
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Response>,
    R: Fn(Refusal),
{
    let handler = Mutex::new(Some(handler));
    let phase = watch::Sender::new(Phase::Reading);
    let set_phase = |p: Phase| {
        phase.send_replace(p);
    };
    let service = hyper::service::service_fn(|req: hyper::Request<Incoming>| {
        let handler = handler.lock().ok().and_then(|mut h| h.take());
        let (refused, set_phase) = (&refused, &set_phase);
        async move {
            let handler = handler.ok_or(Unanswered::Repeated)?;
            let answer = match read(req, limits).await {
                Ok(req) => {
                    set_phase(Phase::Handling);
                    handler(req).await
                }
                Err(e) => match e.refusal() {
                    Some(r) => {
                        tracing::debug!("bad request: {e}");
                        refused(r);
                        Response::error(r.status(), e.to_string())
                    }
                    None => return Err(Unanswered::Body(e.to_string())),
                },
            };
            set_phase(Phase::Answered(Instant::now()));
            Ok::<_, Unanswered>(answer.into_hyper())
        }
    });
    let ended = {
        let conn = builder(limits).serve_connection(
            TokioIo::new(Paced::new(&mut io, limits.stall_timeout)),
            service,
        );
        drive(conn, &phase, limits).await
    };
    match ended {
        Ended::Done(Ok(())) => {}
        Ended::Done(Err(e)) => {
            let why = HttpError::of_connection(&e);
            match why.refusal() {
                Some(r) => {
                    tracing::debug!("bad request: {why}");
                    refused(r);
                    // hyper answers every malformed head but an HTTP/2 preface.
                    if e.is_parse_version_h2() {
                        answer_directly(&mut io, limits, r, &why).await;
                    }
                }
                None => tracing::debug!("connection ended: {e}"),
            }
        }
        Ended::ReadTimedOut => {
            tracing::debug!("bad request: {}", HttpError::Timeout);
            refused(Refusal::Timeout);
            answer_directly(&mut io, limits, Refusal::Timeout, &HttpError::Timeout).await;
        }
        Ended::WriteTimedOut => tracing::info!(
            "response not delivered within {:?}; closing",
            limits.write_timeout
        ),
    }
    close_gracefully(&mut io).await;
}

/// hyper's HTTP/1.1 server with `limits` and this crate's conventions
/// (no keep-alive; a client that shuts its side down after the request
/// still gets the answer; header names in title case; no `Date`; vectored
/// writes, so a shared body goes out without a copy).
fn builder(limits: &Limits) -> hyper::server::conn::http1::Builder {
    let mut b = hyper::server::conn::http1::Builder::new();
    b.keep_alive(false)
        .half_close(true)
        .title_case_headers(true)
        .auto_date_header(false)
        .writev(true)
        .max_header_size(limits.max_head)
        // The byte cap is the only one: the smallest header line is 4 bytes.
        .max_headers((limits.max_head / 4).max(100))
        .max_buf_size(limits.max_head.max(64 * 1024));
    b
}

/// Polls the connection until it ends or a deadline of its phase passes.
async fn drive<C>(conn: C, phase: &watch::Sender<Phase>, limits: &Limits) -> Ended
where
    C: Future<Output = Result<(), hyper::Error>>,
{
    let read_deadline = Instant::now() + limits.read_timeout;
    let mut conn = std::pin::pin!(conn);
    let mut changes = phase.subscribe();
    loop {
        let now = *changes.borrow_and_update();
        let deadline = match now {
            Phase::Reading => Some(read_deadline),
            Phase::Handling => None,
            Phase::Answered(at) => Some(at + limits.write_timeout),
        };
        let expired = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = conn.as_mut() => return Ended::Done(r),
            () = expired => {
                return match now {
                    Phase::Reading => Ended::ReadTimedOut,
                    Phase::Handling | Phase::Answered(_) => Ended::WriteTimedOut,
                };
            }
            // The sender lives as long as this function: never an error.
            _ = changes.changed() => {}
        }
    }
}

/// Reads the request's body (per `limits`) and converts it for the handler.
async fn read(req: hyper::Request<Incoming>, limits: &Limits) -> Result<Request, HttpError> {
    let (parts, body) = req.into_parts();
    let method = parts.method.as_str();
    if !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(HttpError::Malformed(format!("bad method {method:?}")));
    }
    let mut headers = Vec::with_capacity(parts.headers.len());
    for (name, value) in &parts.headers {
        let value = std::str::from_utf8(value.as_bytes())
            .map_err(|_| HttpError::Malformed(format!("header {name} is not UTF-8")))?;
        headers.push((name.as_str().to_string(), value.to_string()));
    }
    let mut out = Request {
        method: method.to_string(),
        path: parts.uri.path().to_string(),
        headers,
        body: Vec::new(),
    };
    let Some(max_body) = limits.max_body else {
        return Ok(out);
    };
    if parts.headers.contains_key(header::TRANSFER_ENCODING) {
        return Err(HttpError::LengthRequired);
    }
    // hyper has refused a malformed or conflicting Content-Length already.
    let length = out
        .header("content-length")
        .map_or(Ok(0), str::parse::<u64>)
        .map_err(|e| HttpError::Malformed(format!("bad Content-Length: {e}")))?;
    if length > max_body as u64 {
        return Err(HttpError::BodyTooLarge {
            size: length,
            limit: max_body,
        });
    }
    let body = Limited::new(body, max_body)
        .collect()
        .await
        .map_err(|_| HttpError::Closed)?;
    out.body = body.to_bytes().into();
    Ok(out)
}

/// Writes a refusal hyper could not answer (408 at the deadline; 400 for
/// an HTTP/2 preface), within the stall bound.
async fn answer_directly<S>(io: &mut S, limits: &Limits, r: Refusal, why: &HttpError)
where
    S: AsyncWrite + Unpin,
{
    let resp = Response::error(r.status(), why.to_string());
    let reason = hyper::StatusCode::from_u16(resp.status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    let mut bytes = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\n\r\n",
        resp.status,
        resp.content_type,
        resp.body.len()
    )
    .into_bytes();
    bytes.extend_from_slice(&resp.body);
    let write = async {
        io.write_all(&bytes).await?;
        io.flush().await
    };
    match tokio::time::timeout(limits.stall_timeout, write).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(status = resp.status, "response not delivered: {e}"),
        Err(_) => tracing::debug!(
            status = resp.status,
            "response not delivered: peer not reading"
        ),
    }
}

/// Shuts the write side down, then reads (and drops) up to 1 MiB for up to
/// 1 s, so a request body left unread does not turn the close into a reset
/// that could destroy the answer before the client read it.
async fn close_gracefully<S: AsyncRead + AsyncWrite + Unpin>(io: &mut S) {
    let _ = tokio::time::timeout(Duration::from_secs(1), io.shutdown()).await;
    let mut sink = [0u8; 8192];
    let mut left: usize = 1 << 20;
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while left > 0 {
            match io.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
}

/// A stream whose writes fail with `TimedOut` once the peer accepted
/// nothing for `stall` (reads pass through).
struct Paced<S> {
    inner: S,
    stall: Duration,
    timer: Pin<Box<Sleep>>,
    /// The timer runs: a write has been waiting since the last progress.
    armed: bool,
}

impl<S> Paced<S> {
    fn new(inner: S, stall: Duration) -> Paced<S> {
        Paced {
            inner,
            stall,
            timer: Box::pin(tokio::time::sleep(stall)),
            armed: false,
        }
    }

    /// After a write returned `Pending`: `Pending` too, until the stall
    /// bound passes without progress.
    fn stalled<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        if !self.armed {
            self.timer.as_mut().reset(Instant::now() + self.stall);
            self.armed = true;
        }
        match self.timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "peer stopped reading",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn progressed<T>(
        &mut self,
        r: Poll<io::Result<T>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<T>> {
        match r {
            Poll::Pending => self.stalled(cx),
            ready => {
                self.armed = false;
                ready
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Paced<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Paced<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.progressed(r, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.progressed(r, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_flush(cx);
        this.progressed(r, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.progressed(r, cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_body: usize, read_timeout: Duration) -> Limits {
        Limits {
            max_head: 16 * 1024,
            max_body: Some(max_body),
            read_timeout,
            write_timeout: Duration::from_secs(600),
            stall_timeout: Duration::from_secs(30),
        }
    }

    /// Runs [`serve_one`] on one end of a duplex, writes `raw` from the
    /// other end (then keeps it open until the answer, unless `hang_up`);
    /// returns the request the handler saw, the answer and the refusals.
    async fn exchange(
        raw: &[u8],
        limits: Limits,
        hang_up: bool,
    ) -> (Option<Request>, String, Vec<Refusal>) {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let seen = Mutex::new(None);
        let refused = Mutex::new(Vec::new());
        let serve = serve_one(
            server,
            &limits,
            |req| {
                *seen.lock().expect("lock") = Some(req);
                async { Response::text(200, "ok") }
            },
            |r| refused.lock().expect("lock").push(r),
        );
        let talk = async {
            client.write_all(raw).await.expect("write");
            if hang_up {
                client.shutdown().await.expect("shutdown");
            }
            let mut out = Vec::new();
            client.read_to_end(&mut out).await.expect("read");
            drop(client);
            String::from_utf8(out).expect("utf-8")
        };
        let ((), out) = tokio::join!(serve, talk);
        let seen = seen.into_inner().expect("lock");
        (seen, out, refused.into_inner().expect("lock"))
    }

    #[tokio::test]
    async fn parses_and_limits() {
        let long = Duration::from_secs(5);
        let (r, out, _) = exchange(
            b"POST /x?y=1 HTTP/1.1\r\nContent-Length: 3\r\nA: b\r\n\r\nabc",
            limits(10, long),
            true,
        )
        .await;
        let r = r.expect("handled");
        assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/x"));
        assert_eq!(r.body, b"abc");
        assert_eq!(r.header("a"), Some("b"));
        assert!(out.starts_with("HTTP/1.1 200 "), "{out}");
        let big = [b'a'; 16 * 1024 + 10];
        let cases: [(&[u8], u16); 5] = [
            (b"POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\n", 413),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                411,
            ),
            (b"garbage\r\n\r\n", 400),
            (b"get / HTTP/1.1\r\n\r\n", 400),
            (&big, 431),
        ];
        for (raw, status) in cases {
            let (r, out, _) = exchange(raw, limits(10, long), true).await;
            assert!(r.is_none(), "{status}: handled");
            assert!(
                out.starts_with(&format!("HTTP/1.1 {status} ")),
                "{status}: {out}"
            );
        }
        // A body cut short by the peer: nothing to answer.
        let (r, out, refused) = exchange(
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nab",
            limits(10, long),
            true,
        )
        .await;
        assert!(r.is_none());
        assert_eq!((out.as_str(), refused.as_slice()), ("", &[][..]));
    }

    #[tokio::test]
    async fn serve_one_reports_what_it_refuses_before_answering() {
        let long = Duration::from_secs(5);
        let (_, out, r) = exchange(b"GET / HTTP/1.1\r\n\r\n", limits(10, long), false).await;
        assert!(out.starts_with("HTTP/1.1 200 "), "{out}");
        assert_eq!(r, []);
        let cases: [(&[u8], Refusal); 4] = [
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                Refusal::LengthRequired,
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\n",
                Refusal::BodyTooLarge,
            ),
            (b"nonsense\r\n\r\n", Refusal::BadRequest),
            (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", Refusal::BadRequest),
        ];
        for (raw, want) in cases {
            let (_, out, r) = exchange(raw, limits(10, long), false).await;
            assert_eq!(r, [want]);
            assert!(
                out.starts_with(&format!("HTTP/1.1 {} ", want.status())),
                "{out}"
            );
        }
        // Half a request, never finished: 408 at the deadline; so is a
        // body that does not arrive in time.
        for raw in [
            &b"GET / HT"[..],
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nab",
        ] {
            let (_, out, r) = exchange(raw, limits(10, Duration::from_millis(50)), false).await;
            assert_eq!(r, [Refusal::Timeout]);
            assert!(out.starts_with("HTTP/1.1 408 "), "{out}");
            assert!(out.contains("\r\n\r\n{"), "a JSON error: {out}");
        }
    }

    #[tokio::test]
    async fn the_413_says_why() {
        let (_, out, _) = exchange(
            b"POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\n",
            limits(10, Duration::from_secs(5)),
            false,
        )
        .await;
        assert!(
            out.contains("\r\nContent-Type: application/json\r\n"),
            "{out}"
        );
        assert!(
            out.contains("request body of 11 bytes exceeds the limit of 10 bytes"),
            "{out}"
        );
    }

    #[tokio::test]
    async fn without_a_body_limit_the_body_is_not_read() {
        let mut l = limits(0, Duration::from_secs(5));
        l.max_body = None;
        let (r, out, refused) = exchange(
            b"POST /m HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            l,
            false,
        )
        .await;
        let r = r.expect("handled");
        assert_eq!((r.path.as_str(), r.body.len()), ("/m", 0));
        assert!(out.starts_with("HTTP/1.1 200 "), "{out}");
        assert_eq!(refused, []);
    }

    #[tokio::test]
    async fn a_peer_that_hangs_up_is_not_a_refusal() {
        let (client, server) = tokio::io::duplex(1024);
        drop(client);
        let refused = Mutex::new(Vec::new());
        serve_one(
            server,
            &limits(10, Duration::from_secs(5)),
            |_req| async { Response::text(200, "ok") },
            |r| refused.lock().expect("lock").push(r),
        )
        .await;
        assert_eq!(refused.into_inner().expect("lock"), []);
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
        let data: Arc<[u8]> = (0..3 * 64 * 1024 + 17)
            .map(|i| u8::try_from(i % 251).unwrap())
            .collect::<Vec<u8>>()
            .into();
        let r = Response::with_body(200, "application/octet-stream", data.clone());
        assert!(matches!(&r.body, Body::Shared(b) if Arc::ptr_eq(b, &data)));
        assert_eq!(
            format!("{:?}", r.body),
            format!("Body::Shared({} bytes)", data.len())
        );
        // What hyper is handed points into the shared buffer.
        assert_eq!(Bytes::from(r.body.clone()).as_ptr(), data.as_ptr());
        let (mut client, server) = tokio::io::duplex(4096);
        let reader = tokio::spawn(async move {
            client
                .write_all(b"GET /agent HTTP/1.1\r\n\r\n")
                .await
                .expect("write");
            let mut out = Vec::new();
            client.read_to_end(&mut out).await.map(|_| out)
        });
        serve_one(
            server,
            &limits(10, Duration::from_secs(5)),
            |_req| async { r },
            |_| {},
        )
        .await;
        let out = reader.await.expect("join").expect("read");
        let end = out.windows(4).position(|w| w == b"\r\n\r\n").expect("head");
        let head = String::from_utf8_lossy(&out[..end]);
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(
            head.contains("\r\nContent-Type: application/octet-stream\r\n"),
            "{head}"
        );
        assert!(
            head.contains(&format!("\r\nContent-Length: {}\r\n", data.len())),
            "{head}"
        );
        assert!(head.contains("\r\nConnection: close"), "{head}");
        assert_eq!(&out[end + 4..], &data[..]);
    }

    #[tokio::test]
    async fn a_peer_that_stops_reading_is_dropped() {
        let r = Response::with_body(200, "application/octet-stream", vec![0u8; 1 << 20]);
        let (mut client, server) = tokio::io::duplex(1024);
        client
            .write_all(b"GET / HTTP/1.1\r\n\r\n")
            .await
            .expect("write");
        let mut l = limits(10, Duration::from_secs(5));
        l.stall_timeout = Duration::from_millis(50);
        let t0 = std::time::Instant::now();
        serve_one(server, &l, |_req| async { r }, |_| {}).await;
        // The stall bound, then the bounded close (1 s of draining).
        assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
        drop(client);
    }

    #[tokio::test]
    async fn a_slow_answer_is_cut_at_the_write_deadline() {
        let r = Response::with_body(200, "application/octet-stream", vec![0u8; 1 << 20]);
        let (mut client, server) = tokio::io::duplex(1024);
        client
            .write_all(b"GET / HTTP/1.1\r\n\r\n")
            .await
            .expect("write");
        // The client reads a little now and then: never stalled, never done.
        let trickle = tokio::spawn(async move {
            let mut buf = [0u8; 64];
            let mut got = 0usize;
            loop {
                tokio::time::sleep(Duration::from_millis(5)).await;
                match client.read(&mut buf).await {
                    Ok(0) | Err(_) => return got,
                    Ok(n) => got += n,
                }
            }
        });
        let mut l = limits(10, Duration::from_secs(5));
        l.write_timeout = Duration::from_millis(200);
        l.stall_timeout = Duration::from_secs(5);
        let t0 = std::time::Instant::now();
        serve_one(server, &l, |_req| async { r }, |_| {}).await;
        // The write deadline, then the bounded close (1 s of draining).
        assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
        let got = trickle.await.expect("join");
        assert!(got > 0 && got < 1 << 20, "{got}");
    }
}
