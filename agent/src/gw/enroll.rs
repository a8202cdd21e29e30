//! Enrollment, once per instance, over HTTPS to the gateway's port 8443: the
//! agent makes its own key pair (the private key never leaves the
//! instance), checks that the gateway chains to the root CA it was
//! installed with, and submits a CSR plus its inventory, signed with the
//! bootstrap key together with a timestamp and a nonce. The gateway answers
//! with a client certificate signed by the root CA; after that the
//! bootstrap key is never accepted for this instance again.
//!
//! An agent with an uplink (`[host] uplink`) enrolls as the edge
//! ([`Role::Edge`], carried in the signed payload; an instance's payload
//! carries no role, as before): the gateway records it and refuses a second
//! edge.
//!
//! [`enroll_as`] is the agent's whole step (files in, files out). Its parts
//! take everything as arguments, so the gateway's tests and benchmark
//! enroll with this same code: [`new_key_and_csr`], [`build_request`]
//! (pure, given the timestamp and a [`new_nonce`]), [`submit`] and
//! [`request`] to an [`Endpoint`] (address, name, root CA).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine;
use control::InstanceMeta;
use control::proto::{EnrollPayload, EnrollRequest, EnrollResponse, Role};
use ring::rand::SecureRandom;
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;

use crate::config::GatewaySettings;

const CERT_FILE: &str = "agent.crt";
const KEY_FILE: &str = "agent.key";
/// The enrollment endpoint's path on the gateway.
pub const ENROLL_PATH: &str = "/api/v1/enroll";
/// Largest response body read.
pub const MAX_RESPONSE: usize = 256 * 1024;
/// Longest one request may take (connect, TLS, request, response).
pub const TIMEOUT: Duration = Duration::from_secs(15);

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

/// Enrolls this instance as an ordinary instance ([`enroll_as`] with
/// [`Role::Instance`]).
pub async fn enroll(
    gw: &GatewaySettings,
    state_dir: &Path,
    meta: &InstanceMeta,
) -> Result<Identity, EnrollError> {
    enroll_as(gw, state_dir, meta, Role::Instance).await
}

/// Enrolls this agent in `role` (an agent's is
/// [`crate::config::HostSettings::role`]) and saves its key and certificate
/// in `state_dir`.
pub async fn enroll_as(
    gw: &GatewaySettings,
    state_dir: &Path,
    meta: &InstanceMeta,
    role: Role,
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
    let (key_pem, csr) = new_key_and_csr()?;
    let body = build_request(
        &bootstrap,
        &gw.bootstrap_key,
        &csr,
        meta,
        role,
        unix_now(),
        &new_nonce()?,
    )?;
    let endpoint = Endpoint {
        addr: &gw.enroll,
        server_name: &gw.server_name,
        ca_pem: &ca,
        ca_path: &gw.ca,
    };
    let r = submit(&endpoint, &body).await?;
    std::fs::create_dir_all(state_dir).map_err(|source| EnrollError::Io {
        path: state_dir.to_path_buf(),
        source,
    })?;
    let key_pem = key_pem.into_bytes();
    write_private(&state_dir.join(KEY_FILE), &key_pem)?;
    write_private(&state_dir.join(CERT_FILE), r.certificate_pem.as_bytes())?;
    tracing::info!(instance = %r.instance_id, tep_id = r.tep_id, %role, "enrolled with the gateway");
    Ok(Identity {
        cert_pem: r.certificate_pem.into_bytes(),
        key_pem,
    })
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A new ECDSA P-256 key pair (PKCS#8 PEM; it never leaves the instance)
/// and a CSR for it (PEM). The gateway ignores the CSR's subject; only the
/// key and the signature matter.
pub fn new_key_and_csr() -> Result<(String, String), EnrollError> {
    let key = rcgen::KeyPair::generate().map_err(|e| EnrollError::Request(e.to_string()))?;
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())
        .and_then(|p| p.serialize_request(&key))
        .and_then(|r| r.pem())
        .map_err(|e| EnrollError::Request(e.to_string()))?;
    Ok((key.serialize_pem(), csr))
}

/// A fresh 128-bit nonce as 32 hex characters.
pub fn new_nonce() -> Result<String, EnrollError> {
    let mut nonce = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| EnrollError::Request("no randomness".into()))?;
    Ok(hex(&nonce))
}

/// The signed enrollment body: `{"payload", "signature", "key_id"}`, the
/// signature (ECDSA P-256 SHA-256, DER, base64) covering the exact payload
/// bytes (CSR, inventory, role, `timestamp` in Unix seconds, `nonce`), the key id
/// being the SHA-256 (hex) of the bootstrap public key. `bootstrap_path`
/// only names the key in errors.
pub fn build_request(
    bootstrap_pem: &[u8],
    bootstrap_path: &Path,
    csr_pem: &str,
    meta: &InstanceMeta,
    role: Role,
    timestamp: u64,
    nonce: &str,
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
    let payload = serde_json::to_string(&EnrollPayload {
        csr_pem: csr_pem.to_string(),
        instance: meta.clone(),
        timestamp,
        nonce: nonce.to_string(),
        role,
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

/// The gateway's enrollment endpoint and what it must prove.
#[derive(Debug, Clone, Copy)]
pub struct Endpoint<'a> {
    /// `host:port` (resolved when dialled).
    pub addr: &'a str,
    /// The name the gateway's certificate must carry (also the `Host`).
    pub server_name: &'a str,
    /// The root CA (PEM) the gateway's certificate must chain to; nothing
    /// else is trusted.
    pub ca_pem: &'a [u8],
    /// Where `ca_pem` came from (for errors).
    pub ca_path: &'a Path,
}

/// Posts a signed enrollment body ([`build_request`]) to the endpoint's
/// `POST /api/v1/enroll`: the certificate and tep id, or the gateway's
/// refusal ([`EnrollError::Refused`] with its `error` text).
pub async fn submit(endpoint: &Endpoint<'_>, body: &str) -> Result<EnrollResponse, EnrollError> {
    let (status, resp) = request(endpoint, "POST", ENROLL_PATH, body.as_bytes()).await?;
    if status != 200 {
        let message = serde_json::from_slice::<serde_json::Value>(&resp)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&resp).into_owned());
        return Err(EnrollError::Refused { status, message });
    }
    serde_json::from_slice(&resp).map_err(|e| EnrollError::Transport {
        addr: endpoint.addr.to_string(),
        reason: format!("bad response: {e}"),
    })
}

/// One HTTPS request to the endpoint (server-authenticated TLS 1.3 trusting
/// only its CA, HTTP/1.1 through [`bounded_http::client`], `Connection:
/// close`, a JSON body), within [`TIMEOUT`]; the status and the body (at
/// most [`MAX_RESPONSE`] bytes).
pub async fn request(
    endpoint: &Endpoint<'_>,
    method: &str,
    path: &str,
    body: &[u8],
) -> Result<(u16, Vec<u8>), EnrollError> {
    let t = |reason: String| EnrollError::Transport {
        addr: endpoint.addr.to_string(),
        reason,
    };
    let ca = |reason: String| EnrollError::Ca {
        path: endpoint.ca_path.to_path_buf(),
        reason,
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(endpoint.ca_pem) {
        let cert = cert.map_err(|e| ca(e.to_string()))?;
        roots.add(cert).map_err(|e| ca(e.to_string()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| t(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name =
        ServerName::try_from(endpoint.server_name.to_string()).map_err(|e| t(e.to_string()))?;
    let req = bounded_http::client::request(
        method,
        path,
        endpoint.server_name,
        &[("Content-Type", "application/json")],
        body.to_vec(),
    )
    .map_err(|e| t(e.to_string()))?;
    let io = async {
        let tcp = TcpStream::connect(endpoint.addr)
            .await
            .map_err(|e| t(format!("connect: {e}")))?;
        let s = tokio_rustls::TlsConnector::from(Arc::new(tls))
            .connect(name, tcp)
            .await
            .map_err(|e| {
                t(format!(
                    "TLS (is the gateway's certificate from our root CA?): {e}"
                ))
            })?;
        let reply = bounded_http::client::send(s, req, MAX_RESPONSE)
            .await
            .map_err(|e| t(e.to_string()))?;
        Ok((reply.status, reply.body))
    };
    tokio::time::timeout(TIMEOUT, io)
        .await
        .map_err(|_| t("timed out".into()))?
}

#[cfg(test)]
mod tests {
    use super::*;

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
            Role::Edge,
            unix_now(),
            &new_nonce().unwrap(),
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
        assert_eq!(p["role"], "edge");
    }
}
