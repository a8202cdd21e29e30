//! The gateway's PKI: the self-signed root CA (the trust anchor installed on
//! every instance), the gateway's server certificate, client certificates
//! issued from agents' CSRs at enrollment, and the bootstrap credential
//! (an ECDSA P-256 key pair; the private half ships with the installer, the
//! gateway keeps the public half and verifies enrollment signatures with it).
//!
//! All keys are ECDSA P-256 with SHA-256, through rcgen and ring only.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use time::{Duration, OffsetDateTime};

use crate::util;

/// File names inside the gateway directory.
pub mod files {
    /// Root CA certificate (PEM). Installed on every instance.
    pub const CA_CERT: &str = "ca.pem";
    /// Root CA private key (PKCS#8 PEM).
    pub const CA_KEY: &str = "ca.key";
    /// Gateway server certificate chain (leaf then CA, PEM).
    pub const GATEWAY_CERT: &str = "gateway.pem";
    /// Gateway server private key (PKCS#8 PEM).
    pub const GATEWAY_KEY: &str = "gateway.key";
    /// Active bootstrap private key (PKCS#8 PEM), shipped to instances by the installer.
    pub const BOOTSTRAP_KEY: &str = "bootstrap.key";
    /// Admin REST API bearer token (one line).
    pub const ADMIN_TOKEN: &str = "admin.token";
    /// The SQLite store.
    pub const DB: &str = "gateway.db";
}

/// Validity of the root CA.
pub const CA_VALIDITY_DAYS: i64 = 3650;
/// Validity of the gateway server certificate.
pub const SERVER_VALIDITY_DAYS: i64 = 1825;
/// Validity of an instance's client certificate.
pub const CLIENT_VALIDITY_DAYS: i64 = 365;

/// Errors of the PKI module.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("bad certificate signing request: {0}")]
    Csr(rcgen::Error),
    #[error("invalid gateway name {0:?}: expected a DNS name or an IP address")]
    BadName(String),
    #[error("bootstrap key: {0}")]
    BadKey(String),
    #[error("{path}: {message}")]
    Pem { path: PathBuf, message: String },
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A certificate and its private key, both PEM.
#[derive(Debug, Clone)]
pub struct PemPair {
    pub cert_pem: String,
    pub key_pem: String,
}

/// SHA-256 fingerprint (lower-case hex) of a DER certificate: the identity
/// the store records for an instance's certificate.
pub fn cert_fingerprint(der: &[u8]) -> String {
    util::sha256_hex(der)
}

/// The DER of the first certificate in `pem`.
pub fn first_cert_der(pem: &str) -> Option<Vec<u8>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .and_then(Result::ok)
        .map(|c| c.as_ref().to_vec())
}

fn random_serial() -> Result<SerialNumber, PkiError> {
    let mut bytes = util::random_bytes(16).map_err(io_err(Path::new("/dev/urandom")))?;
    // Positive and exactly 16 bytes long in DER.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

/// Generates a self-signed root CA (ECDSA P-256, CA:true pathlen 0, 10 years).
pub fn generate_ca(common_name: &str) -> Result<PemPair, PkiError> {
    let key = KeyPair::generate()?;
    let now = OffsetDateTime::now_utc();
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, common_name);
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.not_before = now - Duration::hours(1);
    p.not_after = now + Duration::days(CA_VALIDITY_DAYS);
    p.serial_number = Some(random_serial()?);
    let cert = p.self_signed(&key)?;
    Ok(PemPair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// The loaded root CA, able to sign.
#[derive(Debug)]
pub struct Ca {
    cert_pem: String,
    cert_der: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    /// Builds a CA from its PEM certificate and key.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Ca, PkiError> {
        let key = KeyPair::from_pem(key_pem)?;
        let cert_der = first_cert_der(cert_pem).ok_or_else(|| PkiError::Pem {
            path: PathBuf::from(files::CA_CERT),
            message: "no certificate found".into(),
        })?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)?;
        Ok(Ca {
            cert_pem: cert_pem.to_string(),
            cert_der,
            issuer,
        })
    }

    /// Loads `ca.pem` and `ca.key` from `dir`.
    pub fn load(dir: &Path) -> Result<Ca, PkiError> {
        let cp = dir.join(files::CA_CERT);
        let kp = dir.join(files::CA_KEY);
        let cert = std::fs::read_to_string(&cp).map_err(io_err(&cp))?;
        let key = std::fs::read_to_string(&kp).map_err(io_err(&kp))?;
        Ca::from_pem(&cert, &key)
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// `AA:BB:...` SHA-256 fingerprint of the CA certificate.
    pub fn fingerprint(&self) -> String {
        util::sha256_colon(&self.cert_der)
    }

    /// Issues the gateway's server certificate: SAN = `name` (DNS, or IP if
    /// it parses as one) plus `ips`, EKU serverAuth.
    pub fn issue_server_cert(&self, name: &str, ips: &[IpAddr]) -> Result<PemPair, PkiError> {
        let valid_dns = !name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        if let Ok(ip) = name.parse::<IpAddr>() {
            p.subject_alt_names.push(SanType::IpAddress(ip));
        } else if valid_dns {
            p.subject_alt_names.push(SanType::DnsName(
                name.try_into()
                    .map_err(|_| PkiError::BadName(name.into()))?,
            ));
        } else {
            return Err(PkiError::BadName(name.into()));
        }
        for ip in ips {
            if !p.subject_alt_names.contains(&SanType::IpAddress(*ip)) {
                p.subject_alt_names.push(SanType::IpAddress(*ip));
            }
        }
        let key = KeyPair::generate()?;
        let now = OffsetDateTime::now_utc();
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.not_before = now - Duration::hours(1);
        p.not_after = now + Duration::days(SERVER_VALIDITY_DAYS);
        p.serial_number = Some(random_serial()?);
        p.use_authority_key_identifier_extension = true;
        let cert = p.signed_by(&key, &self.issuer)?;
        Ok(PemPair {
            cert_pem: format!("{}{}", cert.pem(), self.cert_pem),
            key_pem: key.serialize_pem(),
        })
    }

    /// Verifies the CSR's signature and issues a client certificate for its
    /// public key. Everything else in the CSR is ignored: the subject is
    /// `CN=<instance_id>`, EKU clientAuth, not a CA, valid one year from `now`.
    pub fn sign_client_csr(
        &self,
        csr_pem: &str,
        instance_id: &str,
        now: u64,
    ) -> Result<IssuedCert, PkiError> {
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(PkiError::Csr)?;
        let now = i64::try_from(now)
            .ok()
            .and_then(|n| OffsetDateTime::from_unix_timestamp(n).ok())
            .unwrap_or_else(OffsetDateTime::now_utc);
        let mut p = CertificateParams::default();
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, instance_id);
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.not_before = now - Duration::hours(1);
        p.not_after = now + Duration::days(CLIENT_VALIDITY_DAYS);
        let serial = random_serial()?;
        let serial_hex = util::hex(serial.as_ref());
        p.serial_number = Some(serial);
        p.use_authority_key_identifier_extension = true;
        csr.params = p;
        let cert = csr.signed_by(&self.issuer)?;
        Ok(IssuedCert {
            pem: cert.pem(),
            fingerprint: cert_fingerprint(cert.der()),
            serial_hex,
        })
    }
}

/// A client certificate issued at enrollment.
#[derive(Debug, Clone)]
pub struct IssuedCert {
    pub pem: String,
    /// SHA-256 of the DER, lower-case hex.
    pub fingerprint: String,
    pub serial_hex: String,
}

/// A bootstrap credential: ECDSA P-256 key pair.
#[derive(Debug, Clone)]
pub struct BootstrapKey {
    /// PKCS#8 PEM of the private key (goes to `bootstrap.key`).
    pub private_pem: String,
    /// Uncompressed SEC1 public point (65 bytes), stored by the gateway.
    pub public_raw: Vec<u8>,
    /// Key id: SHA-256 of the public point, 64 hex ([`bootstrap_key_id`]).
    pub key_id: String,
}

/// The key id of a bootstrap public key: its fingerprint, the SHA-256 of its
/// uncompressed SEC1 point (what ring's `EcdsaKeyPair::public_key()` gives),
/// as 64 lower-case hex characters.
pub fn bootstrap_key_id(public_raw: &[u8]) -> String {
    util::sha256_hex(public_raw)
}

impl BootstrapKey {
    pub fn generate() -> Result<BootstrapKey, PkiError> {
        let kp = KeyPair::generate()?;
        Ok(Self::from_key_pair(&kp))
    }

    fn from_key_pair(kp: &KeyPair) -> BootstrapKey {
        let public_raw = kp.public_key_raw().to_vec();
        BootstrapKey {
            private_pem: kp.serialize_pem(),
            key_id: bootstrap_key_id(&public_raw),
            public_raw,
        }
    }

    /// Parses a PKCS#8 PEM private key; it must be ECDSA P-256.
    pub fn from_pem(pem: &str) -> Result<BootstrapKey, PkiError> {
        let kp = KeyPair::from_pem(pem).map_err(|e| PkiError::BadKey(e.to_string()))?;
        if kp.algorithm() != &rcgen::PKCS_ECDSA_P256_SHA256 {
            return Err(PkiError::BadKey("not an ECDSA P-256 key".into()));
        }
        Ok(Self::from_key_pair(&kp))
    }

    /// ECDSA-P256-SHA256 signature (ASN.1 DER) over `msg`.
    pub fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, PkiError> {
        let der =
            rustls::pki_types::PrivatePkcs8KeyDer::from_pem_slice(self.private_pem.as_bytes())
                .map_err(|e| PkiError::BadKey(e.to_string()))?;
        let rng = ring::rand::SystemRandom::new();
        let kp = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            der.secret_pkcs8_der(),
            &rng,
        )
        .map_err(|e| PkiError::BadKey(e.to_string()))?;
        kp.sign(&rng, msg)
            .map(|s| s.as_ref().to_vec())
            .map_err(|_| PkiError::BadKey("signing failed".into()))
    }
}

/// True when `sig` (ASN.1 DER) is a valid ECDSA-P256-SHA256 signature of
/// `msg` under the uncompressed public point `public_raw`.
pub fn verify_bootstrap_signature(public_raw: &[u8], msg: &[u8], sig: &[u8]) -> bool {
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_ASN1, public_raw)
        .verify(msg, sig)
        .is_ok()
}

/// The TLS server configuration for the enrollment listener: the gateway
/// certificate chain from `dir`, no client authentication (the bootstrap
/// signature authenticates the request), ring provider.
pub fn enroll_server_config(dir: &Path) -> Result<Arc<rustls::ServerConfig>, PkiError> {
    let cp = dir.join(files::GATEWAY_CERT);
    let kp = dir.join(files::GATEWAY_KEY);
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cp)
        .map_err(|e| PkiError::Pem {
            path: cp.clone(),
            message: e.to_string(),
        })?
        .collect::<Result<_, _>>()
        .map_err(|e| PkiError::Pem {
            path: cp.clone(),
            message: e.to_string(),
        })?;
    let key = PrivateKeyDer::from_pem_file(&kp).map_err(|e| PkiError::Pem {
        path: kp.clone(),
        message: e.to_string(),
    })?;
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(chain, key)?;
    Ok(Arc::new(cfg))
}

/// A rustls client configuration trusting only the CA in `ca_pem` (what an
/// agent uses to reach 8443: a gateway chaining to another CA is refused).
pub fn client_config_trusting(ca_pem: &str) -> Result<Arc<rustls::ClientConfig>, PkiError> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let c = c.map_err(|e| PkiError::Pem {
            path: PathBuf::from(files::CA_CERT),
            message: e.to_string(),
        })?;
        roots.add(c)?;
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_sign_verify_round_trip() {
        let k = BootstrapKey::generate().expect("key");
        let sig = k.sign(b"hello").expect("sign");
        assert!(verify_bootstrap_signature(&k.public_raw, b"hello", &sig));
        assert!(!verify_bootstrap_signature(&k.public_raw, b"hellp", &sig));
        let again = BootstrapKey::from_pem(&k.private_pem).expect("parse");
        assert_eq!(again.key_id, k.key_id);
        assert_eq!(k.key_id.len(), 64);
    }

    #[test]
    fn ca_signs_client_csr_with_overridden_subject() {
        let ca = generate_ca("test CA").expect("ca");
        let ca = Ca::from_pem(&ca.cert_pem, &ca.key_pem).expect("load");
        let agent = KeyPair::generate().expect("key");
        let mut req = CertificateParams::new(vec!["evil.example".to_string()]).expect("p");
        req.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        req.distinguished_name
            .push(DnType::CommonName, "someone-else");
        let csr = req
            .serialize_request(&agent)
            .expect("csr")
            .pem()
            .expect("pem");
        let issued = ca
            .sign_client_csr(&csr, "i-123", util::now_unix())
            .expect("sign");
        let der = first_cert_der(&issued.pem).expect("der");
        let (_, x) = x509_parser::parse_x509_certificate(&der).expect("parse");
        let cn: Vec<_> = x
            .subject()
            .iter_common_name()
            .filter_map(|c| c.as_str().ok())
            .collect();
        assert_eq!(cn, ["i-123"]);
        assert!(!x.is_ca());
        assert!(x.subject_alternative_name().ok().flatten().is_none());
        let eku = x.extended_key_usage().expect("eku").expect("present");
        assert!(eku.value.client_auth && !eku.value.server_auth);
        assert!(ca.sign_client_csr("garbage", "i-1", 0).is_err());
    }
}
