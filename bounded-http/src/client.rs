//! The client side: one request on a connection the caller opened (plain
//! TCP, or TLS it verified), with `Connection: close`, and the answer read
//! whole up to a size cap. hyper writes the request and parses the
//! response (`Content-Length`, chunked, or up to the close); the caller
//! bounds the time.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{self, HeaderValue};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

/// Errors of one exchange.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot build the request: {0}")]
    Request(#[from] hyper::http::Error),
    #[error("{0}")]
    Http(#[from] hyper::Error),
    #[error("response body: {0}")]
    Body(String),
}

/// A response read whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

/// A request for [`send`]: `method path` to `host` (the `Host` header) with
/// `headers` and `body` (its `Content-Length` is set when it is not empty).
pub fn request(
    method: &str,
    path: &str,
    host: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Result<hyper::Request<Full<Bytes>>, ClientError> {
    let mut b = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, host);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    Ok(
        b.header(header::CONNECTION, HeaderValue::from_static("close"))
            .body(Full::new(Bytes::from(body)))?,
    )
}

/// Sends `req` on `io` and reads the response, whose body may be at most
/// `max_body` bytes. A response that arrives before the request body was
/// written whole (a server refusing early) is still read.
pub async fn send<S>(
    io: S,
    req: hyper::Request<Full<Bytes>>,
    max_body: usize,
) -> Result<Reply, ClientError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        .title_case_headers(true)
        .handshake(TokioIo::new(io))
        .await?;
    let exchange = async {
        let resp = sender.send_request(req).await?;
        let status = resp.status().as_u16();
        let body = Limited::new(resp.into_body(), max_body)
            .collect()
            .await
            .map_err(|e| ClientError::Body(e.to_string()))?;
        Ok::<_, ClientError>(Reply {
            status,
            body: body.to_bytes().into(),
        })
    };
    let mut exchange = std::pin::pin!(exchange);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        r = exchange.as_mut() => r,
        c = conn.as_mut() => {
            // The connection ended first: what it delivered is still read.
            match c {
                Ok(()) => exchange.await,
                Err(e) => match exchange.await {
                    Ok(reply) => Ok(reply),
                    Err(_) => Err(e.into()),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Sends a GET through [`send`] to a peer that answers `raw` and closes;
    /// returns the reply and the request the peer saw.
    async fn against(raw: &'static [u8], max: usize) -> (Result<Reply, ClientError>, String) {
        let (client, mut server) = tokio::io::duplex(1 << 16);
        let peer = tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                match server.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
            let _ = server.write_all(raw).await;
            let _ = server.shutdown().await;
            String::from_utf8_lossy(&seen).into_owned()
        });
        let req = request(
            "GET",
            "/x",
            "h:1",
            &[("Authorization", "Bearer t")],
            Vec::new(),
        )
        .expect("request");
        let r = send(client, req, max).await;
        (r, peer.await.expect("peer"))
    }

    #[tokio::test]
    async fn content_length_chunked_and_eof_bodies() {
        let (r, seen) = against(
            b"HTTP/1.1 409 Conflict\r\nContent-Length: 13\r\n\r\n{\"error\":\"x\"}",
            1024,
        )
        .await;
        assert_eq!(
            r.expect("reply"),
            Reply {
                status: 409,
                body: b"{\"error\":\"x\"}".to_vec()
            }
        );
        assert!(seen.starts_with("GET /x HTTP/1.1\r\n"), "{seen}");
        assert!(seen.contains("\r\nAuthorization: Bearer t\r\n"), "{seen}");
        assert!(seen.contains("\r\nConnection: close\r\n"), "{seen}");
        assert!(seen.contains("\r\nHost: h:1\r\n"), "{seen}");
        let (r, _) = against(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3;x=y\r\n:1}\r\n0\r\n\r\n",
            1024,
        )
        .await;
        assert_eq!(r.expect("chunked").body, b"{\"a\":1}");
        let (r, _) = against(
            b"HTTP/1.0 404 Not Found\r\n\r\n{\"error\":\"no route\"}",
            1024,
        )
        .await;
        let r = r.expect("to the close");
        assert_eq!(
            (r.status, r.body.as_slice()),
            (404, &b"{\"error\":\"no route\"}"[..])
        );
    }

    #[tokio::test]
    async fn malformed_cut_short_and_oversized_answers_are_errors() {
        for raw in [
            &b"garbage"[..],
            b"HTTP/1.1 200 OK\r\n",
            b"SSH-2.0 x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\nab",
        ] {
            let (r, _) = against(raw, 1024).await;
            assert!(r.is_err(), "{:?}: {r:?}", String::from_utf8_lossy(raw));
        }
        let (r, _) = against(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n123456789", 8).await;
        assert!(matches!(r, Err(ClientError::Body(_))), "{r:?}");
    }
}
