//! Enrollment, once per instance, over HTTPS to the gateway's port 8443: the
//! agent makes its own key pair (the private key never leaves the
//! instance), checks that the gateway chains to the root CA it was
//! installed with, and submits a CSR plus its inventory, signed with the
//! bootstrap key together with a timestamp and a nonce. The gateway answers
//! with a client certificate signed by the root CA; after that the
//! bootstrap key is never accepted for this instance again.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine;
use control::InstanceMeta;
use control::proto::{EnrollPayload, EnrollRequest, EnrollResponse};
use ring::rand::SecureRandom;
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::GatewaySettings;

const CERT_FILE: &str = "agent.crt";
const KEY_FILE: &str = "agent.key";
const MAX_RESPONSE: usize = 256 * 1024;

/// The agent's identity on the control channel.
#[derive(Debug, Clone)]
pub struct Identity {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("bootstrap key {path}: {reason}")]
    BootstrapKey { path: PathBuf, reason: String },
    #[error("root CA {path}: {reason}")]
    Ca { path: PathBuf, reason: String },
    #[error("cannot build the enrollment request: {0}")]
    Request(String),
    #[error("enrollment at {addr}: {reason}")]
    Transport { addr: String, reason: String },
    #[error("enrollment refused by the gateway (HTTP {status}): {message}")]
    Refused { status: u16, message: String },
}

/// The saved identity, if this instance is already enrolled.
pub fn load_identity(state_dir: &Path) -> Result<Option<Identity>, EnrollError> {
    let (c, k) = (state_dir.join(CERT_FILE), state_dir.join(KEY_FILE));
    if !c.exists() || !k.exists() {
        return Ok(None);
    }
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| EnrollError::Io {
            path: p.to_path_buf(),
            source,
        })
    };
    Ok(Some(Identity {
        cert_pem: read(&c)?,
        key_pem: read(&k)?,
    }))
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), EnrollError> {
    crate::fsutil::write_private_atomic(path, bytes).map_err(|source| EnrollError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Enrolls this instance and saves its key and certificate in `state_dir`.
pub async fn enroll(
    gw: &GatewaySettings,
    state_dir: &Path,
    meta: &InstanceMeta,
) -> Result<Identity, EnrollError> {
    let bootstrap = std::fs::read(&gw.bootstrap_key).map_err(|source| EnrollError::Io {
        path: gw.bootstrap_key.clone(),
        source,
    })?;
    let ca = std::fs::read(&gw.ca).map_err(|source| EnrollError::Io {
        path: gw.ca.clone(),
        source,
    })?;
    // Our own key pair and CSR; the gateway overrides the subject anyway.
    let key = rcgen::KeyPair::generate().map_err(|e| EnrollError::Request(e.to_string()))?;
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())
        .and_then(|p| p.serialize_request(&key))
        .and_then(|r| r.pem())
        .map_err(|e| EnrollError::Request(e.to_string()))?;
    let body = build_request(&bootstrap, &gw.bootstrap_key, &csr, meta, SystemTime::now())?;
    let (status, resp) = post(gw, &ca, "/api/v1/enroll", body.as_bytes()).await?;
    if status != 200 {
        let message = serde_json::from_slice::<serde_json::Value>(&resp)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&resp).into_owned());
        return Err(EnrollError::Refused { status, message });
    }
    let r: EnrollResponse = serde_json::from_slice(&resp).map_err(|e| EnrollError::Transport {
        addr: gw.enroll.clone(),
        reason: format!("bad response: {e}"),
    })?;
    std::fs::create_dir_all(state_dir).map_err(|source| EnrollError::Io {
        path: state_dir.to_path_buf(),
        source,
    })?;
    let key_pem = key.serialize_pem().into_bytes();
    write_private(&state_dir.join(KEY_FILE), &key_pem)?;
    write_private(&state_dir.join(CERT_FILE), r.certificate_pem.as_bytes())?;
    tracing::info!(instance = %r.instance_id, tep_id = r.tep_id, "enrolled with the gateway");
    Ok(Identity {
        cert_pem: r.certificate_pem.into_bytes(),
        key_pem,
    })
}

/// The signed enrollment body: `{"payload", "signature", "key_id"}`, the
/// signature (ECDSA P-256 SHA-256, DER, base64) covering the exact payload
/// bytes, the key id being the SHA-256 (hex) of the bootstrap public key.
pub fn build_request(
    bootstrap_pem: &[u8],
    bootstrap_path: &Path,
    csr_pem: &str,
    meta: &InstanceMeta,
    now: SystemTime,
) -> Result<String, EnrollError> {
    let bad = |reason: String| EnrollError::BootstrapKey {
        path: bootstrap_path.to_path_buf(),
        reason,
    };
    let der = match PrivateKeyDer::from_pem_slice(bootstrap_pem).map_err(|e| bad(e.to_string()))? {
        PrivateKeyDer::Pkcs8(k) => k.secret_pkcs8_der().to_vec(),
        _ => return Err(bad("expected a PKCS#8 ECDSA P-256 key".into())),
    };
    let rng = ring::rand::SystemRandom::new();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &der, &rng)
        .map_err(|e| bad(format!("not an ECDSA P-256 key: {e}")))?;
    let mut nonce = [0u8; 16];
    rng.fill(&mut nonce)
        .map_err(|_| EnrollError::Request("no randomness".into()))?;
    let timestamp = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let payload = serde_json::to_string(&EnrollPayload {
        csr_pem: csr_pem.to_string(),
        instance: meta.clone(),
        timestamp,
        nonce: hex(&nonce),
    })
    .map_err(|e| EnrollError::Request(e.to_string()))?;
    let sig = pair
        .sign(&rng, payload.as_bytes())
        .map_err(|_| EnrollError::Request("signing failed".into()))?;
    let key_id =
        hex(ring::digest::digest(&ring::digest::SHA256, pair.public_key().as_ref()).as_ref());
    serde_json::to_string(&EnrollRequest {
        payload,
        signature: base64::engine::general_purpose::STANDARD.encode(sig.as_ref()),
        key_id,
    })
    .map_err(|e| EnrollError::Request(e.to_string()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One HTTPS POST (server-authenticated TLS, HTTP/1.1, `Connection: close`).
async fn post(
    gw: &GatewaySettings,
    ca_pem: &[u8],
    path: &str,
    body: &[u8],
) -> Result<(u16, Vec<u8>), EnrollError> {
    let t = |reason: String| EnrollError::Transport {
        addr: gw.enroll.clone(),
        reason,
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        let cert = cert.map_err(|e| EnrollError::Ca {
            path: gw.ca.clone(),
            reason: e.to_string(),
        })?;
        roots.add(cert).map_err(|e| EnrollError::Ca {
            path: gw.ca.clone(),
            reason: e.to_string(),
        })?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| t(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from(gw.server_name.clone()).map_err(|e| t(e.to_string()))?;
    let io = async {
        let tcp = TcpStream::connect(&gw.enroll)
            .await
            .map_err(|e| t(format!("connect: {e}")))?;
        let mut s = tokio_rustls::TlsConnector::from(Arc::new(tls))
            .connect(name, tcp)
            .await
            .map_err(|e| {
                t(format!(
                    "TLS (is the gateway's certificate from our root CA?): {e}"
                ))
            })?;
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            gw.server_name,
            body.len()
        );
        s.write_all(head.as_bytes())
            .await
            .map_err(|e| t(e.to_string()))?;
        s.write_all(body).await.map_err(|e| t(e.to_string()))?;
        let mut resp = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            match s.read(&mut chunk).await {
                Ok(0) => break,
                Ok(n) => {
                    resp.extend_from_slice(&chunk[..n]);
                    if resp.len() > MAX_RESPONSE {
                        return Err(t("response too large".into()));
                    }
                }
                // A peer that closes without close_notify still sent a full response.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(t(e.to_string())),
            }
        }
        parse_response(&resp).ok_or_else(|| t("malformed HTTP response".into()))
    };
    tokio::time::timeout(Duration::from_secs(15), io)
        .await
        .map_err(|_| t("timed out".into()))?
}

/// Status code and body of an HTTP/1.1 response (Content-Length or to EOF).
fn parse_response(resp: &[u8]) -> Option<(u16, Vec<u8>)> {
    let end = resp.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&resp[..end]).ok()?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let body = &resp[end + 4..];
    let len = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse::<usize>().ok())
            .flatten()
    });
    let body = match len {
        Some(n) if n <= body.len() => &body[..n],
        _ => body,
    };
    Some((status, body.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_responses_parse() {
        let r = b"HTTP/1.1 409 Conflict\r\nContent-Length: 13\r\n\r\n{\"error\":\"x\"}";
        assert_eq!(
            parse_response(r),
            Some((409, b"{\"error\":\"x\"}".to_vec()))
        );
        assert_eq!(parse_response(b"garbage"), None);
    }

    #[test]
    fn request_is_signed_over_the_exact_payload() {
        let key = rcgen::KeyPair::generate().unwrap();
        let meta = InstanceMeta {
            instance_id: "i-1".into(),
            hostname: "vm1".into(),
            os: "linux".into(),
            image_id: "img".into(),
            tags: Default::default(),
            underlay_ip: "10.99.3.11".parse().unwrap(),
            nic_mac: "06:17:1e:54:96:01".parse().unwrap(),
        };
        let body = build_request(
            key.serialize_pem().as_bytes(),
            Path::new("b.key"),
            "CSR",
            &meta,
            SystemTime::now(),
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let payload = v["payload"].as_str().unwrap();
        let sig = base64::engine::general_purpose::STANDARD
            .decode(v["signature"].as_str().unwrap())
            .unwrap();
        let public = ring::signature::UnparsedPublicKey::new(
            &ring::signature::ECDSA_P256_SHA256_ASN1,
            key.public_key_raw(),
        );
        public.verify(payload.as_bytes(), &sig).unwrap();
        let p: serde_json::Value = serde_json::from_str(payload).unwrap();
        assert_eq!(p["instance"]["instance_id"], "i-1");
        assert_eq!(p["nonce"].as_str().unwrap().len(), 32);
    }
}
