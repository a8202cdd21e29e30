//! The CLIENT side of enrollment, for `nsx-agent` (depend on the `gateway`
//! library, or copy this file: it needs only rcgen, ring, rustls,
//! tokio-rustls, base64, serde_json and `control`).
//!
//! ```text
//! let (key_pem, csr_pem) = enroll_client::generate_key_and_csr()?;     // key stays on the instance
//! let body = enroll_client::build_request(&bootstrap_key_pem, &csr_pem, &meta, now, &new_nonce()?)?;
//! let (status, text) = enroll_client::post(addr, "nsx-gw.vmware.local", &ca_pem, "/api/v1/enroll", &body).await?;
//! let resp = enroll_client::parse_response(status, &text)?;            // certificate_pem, tep_id, ...
//! ```
//!
//! `post` trusts only the installed root CA, so a gateway whose certificate
//! chains elsewhere (a rogue gateway) fails the TLS handshake.

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use control::proto::InstanceMeta;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::enroll::{EnrollPayload, EnrollRequest, EnrollResponse};
use crate::pki::{self, BootstrapKey, PkiError};

/// Largest response read.
const MAX_RESPONSE: usize = 1 << 20;

/// Errors of the enrollment client.
#[derive(Debug, thiserror::Error)]
pub enum EnrollClientError {
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error("cannot build the CSR: {0}")]
    Csr(#[from] rcgen::Error),
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("cannot reach the gateway: {0}")]
    Io(#[from] std::io::Error),
    #[error("invalid gateway name {0:?}")]
    BadServerName(String),
    #[error("timed out talking to the gateway")]
    Timeout,
    #[error("malformed response from the gateway: {0}")]
    BadResponse(String),
    #[error("enrollment refused ({status}): {error}")]
    Refused { status: u16, error: String },
}

/// A fresh 128-bit nonce as 32 hex characters.
pub fn new_nonce() -> Result<String, EnrollClientError> {
    Ok(crate::util::random_hex(16)?)
}

/// A new ECDSA P-256 key pair (PKCS#8 PEM) and a CSR for it (PEM). The
/// gateway ignores the CSR's subject; only the key and signature matter.
pub fn generate_key_and_csr() -> Result<(String, String), EnrollClientError> {
    let key = rcgen::KeyPair::generate()?;
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())?
        .serialize_request(&key)?
        .pem()?;
    Ok((key.serialize_pem(), csr))
}

/// Builds the JSON body of `POST /api/v1/enroll`: the payload text, its
/// ECDSA-P256-SHA256 signature with the bootstrap key, and the key id.
pub fn build_request(
    bootstrap_key_pem: &str,
    csr_pem: &str,
    meta: &InstanceMeta,
    now: u64,
    nonce: &str,
) -> Result<String, EnrollClientError> {
    let key = BootstrapKey::from_pem(bootstrap_key_pem)?;
    let payload = serde_json::to_string(&EnrollPayload {
        csr_pem: csr_pem.to_string(),
        instance: meta.clone(),
        timestamp: now,
        nonce: nonce.to_string(),
    })?;
    let signature = base64::engine::general_purpose::STANDARD.encode(key.sign(payload.as_bytes())?);
    Ok(serde_json::to_string(&EnrollRequest {
        payload,
        signature,
        key_id: key.key_id,
    })?)
}

/// Sends one HTTPS request (`Connection: close`) to `addr`, verifying the
/// server certificate against `ca_pem` for `server_name`; returns the status
/// and the body text. 10 s overall timeout.
pub async fn request(
    addr: SocketAddr,
    server_name: &str,
    ca_pem: &str,
    method: &str,
    path: &str,
    body: &[u8],
) -> Result<(u16, String), EnrollClientError> {
    let cfg = pki::client_config_trusting(ca_pem)?;
    let name = ServerName::try_from(server_name.to_string())
        .map_err(|_| EnrollClientError::BadServerName(server_name.into()))?;
    let fut = async {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let mut tls = tokio_rustls::TlsConnector::from(cfg)
            .connect(name, tcp)
            .await?;
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {server_name}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        // A server refusing early (e.g. 413) may stop reading: still read its answer.
        let wrote = async {
            tls.write_all(head.as_bytes()).await?;
            tls.write_all(body).await?;
            tls.flush().await
        }
        .await;
        let mut resp = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            match tls.read(&mut chunk).await {
                Ok(0) => break,
                Ok(n) => {
                    resp.extend_from_slice(&chunk[..n]);
                    if resp.len() > MAX_RESPONSE {
                        return Err(EnrollClientError::BadResponse("response too large".into()));
                    }
                }
                // A peer closing without close_notify after a full response is fine.
                Err(e) if !resp.is_empty() && e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    break;
                }
                Err(e) => {
                    wrote?;
                    return Err(e.into());
                }
            }
        }
        parse_http(&resp)
    };
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .map_err(|_| EnrollClientError::Timeout)?
}

/// Posts an enrollment body to `addr` (path `/api/v1/enroll`).
pub async fn post(
    addr: SocketAddr,
    server_name: &str,
    ca_pem: &str,
    body: &str,
) -> Result<(u16, String), EnrollClientError> {
    request(
        addr,
        server_name,
        ca_pem,
        "POST",
        "/api/v1/enroll",
        body.as_bytes(),
    )
    .await
}

fn parse_http(resp: &[u8]) -> Result<(u16, String), EnrollClientError> {
    let text = String::from_utf8_lossy(resp);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| EnrollClientError::BadResponse("no header terminator".into()))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| EnrollClientError::BadResponse(format!("bad status line in {head:?}")))?;
    Ok((status, body.to_string()))
}

/// Turns a response into the enrollment result or a `Refused` error
/// carrying the gateway's `{"error": ...}` message.
pub fn parse_response(status: u16, body: &str) -> Result<EnrollResponse, EnrollClientError> {
    if status == 200 {
        return Ok(serde_json::from_str(body)?);
    }
    let error = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
        .unwrap_or_else(|| body.trim().to_string());
    Err(EnrollClientError::Refused { status, error })
}
