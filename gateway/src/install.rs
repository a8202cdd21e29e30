//! The agent installer: the `/factory_default/...` tree the seed's install
//! step fetches (`wget http://GW:8080/factory_default/<distro>_<arch>/install_nsx_vm_agent.sh`),
//! served on the plain-HTTP install listeners (`--listen-install`) and, GET
//! only, on the HTTPS enrollment listener.
//!
//! This module owns:
//!
//! * routing ([`route`]): `GET /factory_default[/]` lists the supported
//!   `<distro>_<arch>` directories, `GET /factory_default/<distro>_<arch>/<file>`
//!   serves one of [`File::ALL`]; the URL is only ever compared with fixed
//!   names, never turned into a filesystem path;
//! * the install script's templating ([`render_script`], pure) and
//!   `SHA256SUMS` ([`sha256sums`], pure);
//! * the dist binaries' architecture from their ELF header ([`elf_arch`]);
//! * what is served, loaded once at startup ([`Content::load`]: the
//!   `nsx-agent` and `nsxcli` binaries as shared buffers, `ca.pem`, the
//!   gateway's name and SAN addresses), and answering one request
//!   ([`Installer::respond`]; `bootstrap.key` is read per request so a
//!   `bootstrap rotate` is picked up while serving).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::pki::{self, files};
use crate::util;
use bounded_http::Response;

/// Distributions the installer supports (the `<distro>` of the URL): our
/// binaries need glibc >= 2.34, i.e. Debian 12 `bookworm`, Debian 13
/// `trixie`, Ubuntu 22.04 `jammy`, Ubuntu 24.04 `noble`.
pub const SUPPORTED_DISTROS: [&str; 4] = ["bookworm", "trixie", "jammy", "noble"];

/// The URL prefix of the installer tree.
pub const PREFIX: &str = "/factory_default";

/// Default port of the plain-HTTP install listeners (the seed's URL).
pub const DEFAULT_INSTALL_PORT: u16 = 8080;

/// The install script template, with the `@NSX_...@` tokens of [`TOKENS`].
pub const SCRIPT_TEMPLATE: &str = include_str!("../../scripts/install_nsx_vm_agent.sh");

/// The tokens [`render_script`] replaces (every occurrence).
pub const TOKENS: [&str; 9] = [
    "@NSX_GW_ADDR@",
    "@NSX_GW_NAME@",
    "@NSX_CA_SHA256@",
    "@NSX_INSTALL_PORT@",
    "@NSX_ENROLL_PORT@",
    "@NSX_CONTROL_PORT@",
    "@NSX_DISTRO@",
    "@NSX_ARCH@",
    "@NSX_GW_VERSION@",
];

/// ELF `e_machine` of x86-64.
pub const EM_X86_64: u16 = 0x3E;
/// ELF `e_machine` of AArch64.
pub const EM_AARCH64: u16 = 0xB7;

/// Errors loading what the installer serves.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("no {name} in {}: {source}", dir.display())]
    Missing {
        name: &'static str,
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not an ELF executable (no ELF magic)", path.display())]
    NotElf { path: PathBuf },
    #[error("{}: {problem}", path.display())]
    BadElf { path: PathBuf, problem: String },
    #[error(
        "{}: unsupported architecture (ELF e_machine {machine:#x}; supported: 0x3e amd64, 0xb7 arm64)",
        path.display()
    )]
    UnsupportedArch { path: PathBuf, machine: u16 },
    #[error(
        "{} is {agent} but {} is {cli}: both binaries must be built for the same architecture",
        agent_path.display(),
        cli_path.display()
    )]
    MixedArch {
        agent_path: PathBuf,
        agent: Arch,
        cli_path: PathBuf,
        cli: Arch,
    },
    #[error("{}: {message}", path.display())]
    Certificate { path: PathBuf, message: String },
    #[error("cannot locate the running nsx-gateway executable: {0}")]
    NoExe(String),
}

/// A binary architecture the installer serves (Debian's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    Amd64,
    Arm64,
}

impl Arch {
    /// Every architecture, in listing order.
    pub const ALL: [Arch; 2] = [Arch::Amd64, Arch::Arm64];

    /// `amd64` / `arm64`.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The files of a `<distro>_<arch>` directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum File {
    Sha256Sums,
    BootstrapKey,
    CaPem,
    Script,
    Agent,
    Cli,
}

impl File {
    /// Every file, sorted by name.
    pub const ALL: [File; 6] = [
        File::Sha256Sums,
        File::BootstrapKey,
        File::CaPem,
        File::Script,
        File::Agent,
        File::Cli,
    ];

    /// The file's name in the URL (and on disk after download).
    pub fn name(self) -> &'static str {
        match self {
            File::Sha256Sums => "SHA256SUMS",
            File::BootstrapKey => files::BOOTSTRAP_KEY,
            File::CaPem => files::CA_CERT,
            File::Script => "install_nsx_vm_agent.sh",
            File::Agent => "nsx-agent",
            File::Cli => "nsxcli",
        }
    }

    /// The file named exactly `name`.
    pub fn from_name(name: &str) -> Option<File> {
        File::ALL.into_iter().find(|f| f.name() == name)
    }

    /// Its media type.
    pub fn content_type(self) -> &'static str {
        match self {
            File::Sha256Sums => TEXT,
            File::BootstrapKey | File::CaPem => "application/x-pem-file",
            File::Script => "text/x-shellscript",
            File::Agent | File::Cli => "application/octet-stream",
        }
    }
}

const TEXT: &str = "text/plain; charset=utf-8";

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET /factory_default` or `GET /factory_default/`.
    List,
    /// `GET /factory_default/<distro>_<arch>/<file>`.
    File {
        distro: &'static str,
        arch: Arch,
        file: File,
    },
    /// A path outside the installer tree.
    NotInstaller,
    /// Under the tree, but not GET (answer 405 with `Allow: GET`).
    MethodNotAllowed,
    /// Under the tree, but no such directory or file: the one-line reason.
    NotFound(String),
}

/// True when `path` is in the installer tree (`/factory_default` or below).
pub fn is_installer_path(path: &str) -> bool {
    path == PREFIX
        || path
            .strip_prefix(PREFIX)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// The `<distro>_<arch>` directories, for the binaries' architecture (all
/// architectures when it is not known).
pub fn supported_dirs(arch: Option<Arch>) -> Vec<String> {
    let arches: Vec<Arch> = match arch {
        Some(a) => vec![a],
        None => Arch::ALL.to_vec(),
    };
    arches
        .iter()
        .flat_map(|a| SUPPORTED_DISTROS.iter().map(move |d| format!("{d}_{a}")))
        .collect()
}

/// Routes a request (`path` without its query string). `arch` is the dist
/// binaries' architecture (`None`: not known, any supported one routes).
/// Only exact matches against fixed names route to a file: `..`,
/// percent-encoding, empty segments and trailing slashes after a file are
/// all 404.
pub fn route(method: &str, path: &str, arch: Option<Arch>) -> Route {
    if !is_installer_path(path) {
        return Route::NotInstaller;
    }
    if method != "GET" {
        return Route::MethodNotAllowed;
    }
    let rest = path.get(PREFIX.len()..).unwrap_or_default();
    let rest = rest.strip_prefix('/').unwrap_or(rest);
    if rest.is_empty() {
        return Route::List;
    }
    let (dir, file) = rest.split_once('/').unwrap_or((rest, ""));
    let arches: &[Arch] = match &arch {
        Some(a) => std::slice::from_ref(a),
        None => &Arch::ALL,
    };
    let found = SUPPORTED_DISTROS.iter().find_map(|d| {
        arches
            .iter()
            .find(|a| dir.strip_prefix(d).and_then(|r| r.strip_prefix('_')) == Some(a.name()))
            .map(|a| (*d, *a))
    });
    let Some((distro, arch)) = found else {
        return Route::NotFound(format!(
            "unsupported distribution/architecture {dir:?}; supported: {}",
            supported_dirs(arch).join(", ")
        ));
    };
    match File::from_name(file) {
        Some(file) => Route::File { distro, arch, file },
        None => Route::NotFound(format!(
            "no file {file:?} in {PREFIX}/{dir}/; files: {}",
            File::ALL.map(File::name).join(", ")
        )),
    }
}

/// The values of the install script's tokens for one request.
#[derive(Debug, Clone)]
pub struct ScriptVars<'a> {
    /// `@NSX_GW_ADDR@`: the local address the request arrived on.
    pub gw_addr: IpAddr,
    /// `@NSX_GW_NAME@`: the gateway's name (its certificate's first DNS SAN).
    pub gw_name: &'a str,
    /// `@NSX_CA_SHA256@`: SHA-256 of the root CA certificate's DER, 64 hex.
    pub ca_sha256: &'a str,
    /// `@NSX_INSTALL_PORT@`: the plain-HTTP install port.
    pub install_port: u16,
    /// `@NSX_ENROLL_PORT@`: the HTTPS enrollment port.
    pub enroll_port: u16,
    /// `@NSX_CONTROL_PORT@`: the control channel's port.
    pub control_port: u16,
    /// `@NSX_DISTRO@`.
    pub distro: &'a str,
    /// `@NSX_ARCH@`.
    pub arch: Arch,
    /// `@NSX_GW_VERSION@`.
    pub version: &'a str,
}

/// An address as a URL host: IPv4 as is, IPv6 in brackets (an IPv4-mapped
/// IPv6 address, what a dual-stack socket reports, as the IPv4 address).
pub fn url_host(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

impl ScriptVars<'_> {
    /// The value of `token` (with its `@`s), if it is one of [`TOKENS`].
    fn value(&self, token: &str) -> Option<String> {
        Some(match token {
            "@NSX_GW_ADDR@" => url_host(self.gw_addr),
            "@NSX_GW_NAME@" => self.gw_name.to_string(),
            "@NSX_CA_SHA256@" => self.ca_sha256.to_string(),
            "@NSX_INSTALL_PORT@" => self.install_port.to_string(),
            "@NSX_ENROLL_PORT@" => self.enroll_port.to_string(),
            "@NSX_CONTROL_PORT@" => self.control_port.to_string(),
            "@NSX_DISTRO@" => self.distro.to_string(),
            "@NSX_ARCH@" => self.arch.name().to_string(),
            "@NSX_GW_VERSION@" => self.version.to_string(),
            _ => return None,
        })
    }
}

/// The install script for one request: `template` with every occurrence of
/// each of [`TOKENS`] replaced by its value, in one pass (a value is never
/// scanned for tokens again). Anything else, unknown `@NSX_...@` included,
/// is copied as is.
pub fn render_script(template: &str, vars: &ScriptVars<'_>) -> Vec<u8> {
    let mut out = String::with_capacity(template.len() + 256);
    let mut rest = template;
    while let Some(start) = rest.find("@NSX_") {
        out.push_str(&rest[..start]);
        let after = &rest[start..];
        // Up to the closing '@' of a candidate token.
        let token = after
            .get(1..)
            .and_then(|t| t.find('@'))
            .and_then(|end| after.get(..end + 2));
        match token.and_then(|t| Some((t, vars.value(t)?))) {
            Some((t, v)) => {
                out.push_str(&v);
                rest = &after[t.len()..];
            }
            None => {
                out.push('@');
                rest = &after[1..];
            }
        }
    }
    out.push_str(rest);
    out.into_bytes()
}

/// `sha256sum` output for `(name, sha256 hex)` pairs: `<hex>  <name>\n`
/// per file, sorted by name.
pub fn sha256sums(entries: &[(&str, &str)]) -> String {
    let mut sorted = entries.to_vec();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    sorted
        .iter()
        .map(|(name, hex)| format!("{hex}  {name}\n"))
        .collect()
}

/// The architecture of an ELF executable from its header: it must start
/// with the ELF magic, be 64-bit little-endian, and its `e_machine` must be
/// x86-64 (`amd64`) or AArch64 (`arm64`). `path` is only for the error.
pub fn elf_arch(path: &Path, bytes: &[u8]) -> Result<Arch, InstallError> {
    if !bytes.starts_with(b"\x7fELF") {
        return Err(InstallError::NotElf {
            path: path.to_path_buf(),
        });
    }
    let bad = |problem: &str| InstallError::BadElf {
        path: path.to_path_buf(),
        problem: problem.to_string(),
    };
    let (Some(&class), Some(&data), Some(machine)) =
        (bytes.get(4), bytes.get(5), bytes.get(18..20))
    else {
        return Err(bad("truncated ELF header"));
    };
    if class != 2 || data != 1 {
        return Err(bad(
            "not a 64-bit little-endian ELF file (amd64 and arm64 binaries are)",
        ));
    }
    let machine = u16::from_le_bytes([machine[0], machine[1]]);
    match machine {
        EM_X86_64 => Ok(Arch::Amd64),
        EM_AARCH64 => Ok(Arch::Arm64),
        _ => Err(InstallError::UnsupportedArch {
            path: path.to_path_buf(),
            machine,
        }),
    }
}

/// Where the `nsx-agent` and `nsxcli` binaries are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DistDir {
    /// `--dist DIR`: both binaries must be there and valid (startup error otherwise).
    Explicit(PathBuf),
    /// The running executable's directory: if the binaries are missing or
    /// invalid the installer answers 503 (and a warning is logged).
    Default(PathBuf),
    /// The executable's directory could not be determined (installer: 503).
    Unknown(String),
}

impl DistDir {
    /// The default: the directory of the running executable.
    pub fn of_current_exe() -> DistDir {
        match std::env::current_exe() {
            Ok(exe) => match exe.parent() {
                Some(d) => DistDir::Default(d.to_path_buf()),
                None => DistDir::Unknown(format!("{} has no parent directory", exe.display())),
            },
            Err(e) => DistDir::Unknown(e.to_string()),
        }
    }
}

/// The dist binaries, read once.
#[derive(Debug, Clone)]
pub struct Dist {
    pub dir: PathBuf,
    pub arch: Arch,
    agent: Arc<[u8]>,
    cli: Arc<[u8]>,
    agent_sha256: String,
    cli_sha256: String,
}

fn read_binary(dir: &Path, name: &'static str) -> Result<(PathBuf, Arc<[u8]>, Arch), InstallError> {
    let path = dir.join(name);
    let bytes = std::fs::read(&path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            InstallError::Missing {
                name,
                dir: dir.to_path_buf(),
                source,
            }
        } else {
            InstallError::Io {
                path: path.clone(),
                source,
            }
        }
    })?;
    let arch = elf_arch(&path, &bytes)?;
    Ok((path, Arc::from(bytes), arch))
}

impl Dist {
    /// Reads and checks `nsx-agent` and `nsxcli` in `dir`.
    pub fn load(dir: &Path) -> Result<Dist, InstallError> {
        let (agent_path, agent, agent_arch) = read_binary(dir, File::Agent.name())?;
        let (cli_path, cli, cli_arch) = read_binary(dir, File::Cli.name())?;
        if agent_arch != cli_arch {
            return Err(InstallError::MixedArch {
                agent_path,
                agent: agent_arch,
                cli_path,
                cli: cli_arch,
            });
        }
        Ok(Dist {
            dir: dir.to_path_buf(),
            arch: agent_arch,
            agent_sha256: util::sha256_hex(&agent),
            cli_sha256: util::sha256_hex(&cli),
            agent,
            cli,
        })
    }
}

/// The gateway's name and SAN IP addresses from its server certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayIdentity {
    /// The first DNS SAN (`init --name`), else the first IP SAN.
    pub name: String,
    /// Every IP address in the SAN, in order.
    pub ips: Vec<IpAddr>,
}

impl GatewayIdentity {
    /// Reads the leaf of `gateway.pem`.
    pub fn from_pem(path: &Path, pem: &str) -> Result<GatewayIdentity, InstallError> {
        let bad = |message: String| InstallError::Certificate {
            path: path.to_path_buf(),
            message,
        };
        let der = pki::first_cert_der(pem).ok_or_else(|| bad("no certificate found".into()))?;
        let (_, cert) =
            x509_parser::parse_x509_certificate(&der).map_err(|e| bad(e.to_string()))?;
        let san = cert
            .subject_alternative_name()
            .map_err(|e| bad(format!("subject alternative name: {e}")))?;
        let mut dns = Vec::new();
        let mut ips = Vec::new();
        for n in san.map(|s| s.value.general_names.as_slice()).unwrap_or(&[]) {
            match n {
                x509_parser::extensions::GeneralName::DNSName(d) => dns.push(d.to_string()),
                x509_parser::extensions::GeneralName::IPAddress(b) => {
                    if let Ok(a) = <[u8; 4]>::try_from(*b) {
                        ips.push(IpAddr::from(a));
                    } else if let Ok(a) = <[u8; 16]>::try_from(*b) {
                        ips.push(IpAddr::from(a));
                    }
                }
                _ => {}
            }
        }
        let name = dns
            .first()
            .cloned()
            .or_else(|| ips.first().map(ToString::to_string))
            .ok_or_else(|| {
                bad("no DNS name or IP address in the subject alternative name".into())
            })?;
        Ok(GatewayIdentity { name, ips })
    }
}

/// What the installer serves, loaded at startup.
#[derive(Debug, Clone)]
pub struct Content {
    /// The binaries, or why they are not available (the 503 message).
    dist: Result<Dist, String>,
    ca_pem: Arc<[u8]>,
    /// SHA-256 of the CA certificate's DER (`@NSX_CA_SHA256@`).
    ca_der_sha256: String,
    /// SHA-256 of the `ca.pem` file (its `SHA256SUMS` line).
    ca_pem_sha256: String,
    identity: GatewayIdentity,
    bootstrap_path: PathBuf,
}

impl Content {
    /// Loads `ca.pem` and `gateway.pem` from the gateway directory `dir`
    /// and the binaries from `dist`. A problem with an [`DistDir::Explicit`]
    /// dist directory is an error; with a defaulted one it is logged as a
    /// warning and the installer answers 503.
    pub fn load(dir: &Path, dist: &DistDir) -> Result<Content, InstallError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path)
                .map(|b| (path.clone(), b))
                .map_err(|source| InstallError::Io { path, source })
        };
        let (ca_path, ca_pem) = read(files::CA_CERT)?;
        let ca_der = std::str::from_utf8(&ca_pem)
            .ok()
            .and_then(pki::first_cert_der)
            .ok_or_else(|| InstallError::Certificate {
                path: ca_path,
                message: "no PEM certificate found".into(),
            })?;
        let (gw_path, gw_pem) = read(files::GATEWAY_CERT)?;
        let identity = GatewayIdentity::from_pem(&gw_path, &String::from_utf8_lossy(&gw_pem))?;
        let dist = match dist {
            DistDir::Explicit(d) => Ok(Dist::load(d)?),
            DistDir::Default(d) => Dist::load(d).map_err(|e| {
                tracing::warn!(
                    "the installer cannot serve the agent: {e} (pass --dist DIR with nsx-agent and nsxcli)"
                );
                e.to_string()
            }),
            DistDir::Unknown(why) => {
                let e = InstallError::NoExe(why.clone());
                tracing::warn!("the installer cannot serve the agent: {e} (pass --dist DIR)");
                Err(e.to_string())
            }
        };
        if let Ok(d) = &dist {
            tracing::info!(dir = %d.dir.display(), arch = %d.arch, "installer binaries loaded");
        }
        Ok(Content {
            dist,
            ca_der_sha256: util::sha256_hex(&ca_der),
            ca_pem_sha256: util::sha256_hex(&ca_pem),
            ca_pem: Arc::from(ca_pem),
            identity,
            bootstrap_path: dir.join(files::BOOTSTRAP_KEY),
        })
    }

    /// The gateway's name and SAN addresses.
    pub fn identity(&self) -> &GatewayIdentity {
        &self.identity
    }

    /// The binaries' architecture (`None`: not available).
    pub fn arch(&self) -> Option<Arch> {
        self.dist.as_ref().ok().map(|d| d.arch)
    }

    /// Why the binaries are not available, if they are not.
    pub fn unavailable(&self) -> Option<&str> {
        self.dist.as_ref().err().map(String::as_str)
    }
}

/// The ports the install script is told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    /// The first plain-HTTP install listener's port (`None`: none).
    pub install: Option<u16>,
    pub enroll: u16,
    pub control: u16,
}

/// Which listener a request arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// A plain-HTTP install listener.
    Install,
    /// The HTTPS enrollment listener.
    Enroll,
}

/// A serving installer: its content and the bound ports.
#[derive(Debug)]
pub struct Installer {
    content: Content,
    ports: Ports,
}

impl Installer {
    pub fn new(content: Content, ports: Ports) -> Installer {
        Installer { content, ports }
    }

    pub fn content(&self) -> &Content {
        &self.content
    }

    pub fn ports(&self) -> Ports {
        self.ports
    }

    /// The install script as served to a request that arrived on `local`.
    pub fn script(&self, local: SocketAddr, via: Via, distro: &str, arch: Arch) -> Vec<u8> {
        let install_port = match via {
            Via::Install => local.port(),
            Via::Enroll => self.ports.install.unwrap_or(DEFAULT_INSTALL_PORT),
        };
        render_script(
            SCRIPT_TEMPLATE,
            &ScriptVars {
                gw_addr: local.ip(),
                gw_name: &self.content.identity.name,
                ca_sha256: &self.content.ca_der_sha256,
                install_port,
                enroll_port: self.ports.enroll,
                control_port: self.ports.control,
                distro,
                arch,
                version: env!("CARGO_PKG_VERSION"),
            },
        )
    }

    fn bootstrap_key(&self) -> Result<Vec<u8>, Response> {
        std::fs::read(&self.content.bootstrap_path).map_err(|e| {
            tracing::error!(
                "installer: cannot read {}: {e}",
                self.content.bootstrap_path.display()
            );
            Response::text(500, format!("cannot read the bootstrap key: {e}"))
        })
    }

    /// Answers one request (`path` without its query string) that arrived
    /// on `local` via `via`; also returns the file it was for (`None`: the
    /// list or no file), for the metrics. Reads `bootstrap.key` for it and
    /// for `SHA256SUMS` (blocking: call it off the async workers).
    pub fn respond(
        &self,
        method: &str,
        path: &str,
        local: SocketAddr,
        via: Via,
    ) -> (Response, Option<File>) {
        let unavailable = |file: Option<File>| {
            let why = self.content.unavailable().unwrap_or("no binaries");
            (
                Response::text(503, format!("installer not available: {why}")),
                file,
            )
        };
        let dist = self.content.dist.as_ref().ok();
        match route(method, path, self.content.arch()) {
            Route::NotInstaller => (
                Response::text(
                    404,
                    format!("no such endpoint {path:?}; the installer is under {PREFIX}/"),
                ),
                None,
            ),
            Route::MethodNotAllowed => {
                (Response::text(405, "use GET").header("Allow", "GET"), None)
            }
            Route::NotFound(why) => (Response::text(404, why), None),
            Route::List => match dist {
                None => unavailable(None),
                Some(d) => {
                    let mut list = supported_dirs(Some(d.arch)).join("\n");
                    list.push('\n');
                    (Response::with_body(200, TEXT, list), None)
                }
            },
            Route::File { distro, arch, file } => {
                let resp = match (file, dist) {
                    (File::CaPem, _) => {
                        Response::with_body(200, file.content_type(), self.content.ca_pem.clone())
                    }
                    (File::BootstrapKey, _) => match self.bootstrap_key() {
                        Ok(k) => Response::with_body(200, file.content_type(), k),
                        Err(r) => r,
                    },
                    (_, None) => return unavailable(Some(file)),
                    (File::Agent, Some(d)) => {
                        Response::with_body(200, file.content_type(), d.agent.clone())
                    }
                    (File::Cli, Some(d)) => {
                        Response::with_body(200, file.content_type(), d.cli.clone())
                    }
                    (File::Script, Some(_)) => Response::with_body(
                        200,
                        file.content_type(),
                        self.script(local, via, distro, arch),
                    ),
                    (File::Sha256Sums, Some(d)) => match self.bootstrap_key() {
                        Err(r) => r,
                        Ok(key) => {
                            let script = util::sha256_hex(&self.script(local, via, distro, arch));
                            let key = util::sha256_hex(&key);
                            let sums = sha256sums(&[
                                (File::BootstrapKey.name(), &key),
                                (File::CaPem.name(), &self.content.ca_pem_sha256),
                                (File::Script.name(), &script),
                                (File::Agent.name(), &d.agent_sha256),
                                (File::Cli.name(), &d.cli_sha256),
                            ]);
                            Response::with_body(200, file.content_type(), sums)
                        }
                    },
                };
                (resp, Some(file))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn elf(machine: u16) -> Vec<u8> {
        let mut h = vec![0x7f, b'E', b'L', b'F', 2, 1, 1, 0];
        h.resize(16, 0);
        h.extend_from_slice(&2u16.to_le_bytes());
        h.extend_from_slice(&machine.to_le_bytes());
        h
    }

    #[test]
    fn elf_architecture() {
        let p = Path::new("/x/nsx-agent");
        assert_eq!(elf_arch(p, &elf(0x3E)).expect("amd64"), Arch::Amd64);
        assert_eq!(elf_arch(p, &elf(0xB7)).expect("arm64"), Arch::Arm64);
        let e = elf_arch(p, &elf(0x28)).expect_err("arm32");
        assert!(e.to_string().contains("0x28"), "{e}");
        let e = elf_arch(p, b"#!/bin/sh\n").expect_err("script");
        assert!(matches!(e, InstallError::NotElf { .. }), "{e}");
        assert!(e.to_string().starts_with("/x/nsx-agent: "), "{e}");
        let e = elf_arch(p, &elf(0x3E)[..10]).expect_err("short");
        assert!(e.to_string().contains("truncated"), "{e}");
        let mut be = elf(0x3E);
        be[5] = 2;
        assert!(elf_arch(p, &be).is_err());
        let mut c32 = elf(0x3E);
        c32[4] = 1;
        assert!(elf_arch(p, &c32).is_err());
        assert!(elf_arch(p, b"").is_err());
    }

    #[test]
    fn routing() {
        let a = Some(Arch::Amd64);
        assert_eq!(route("GET", "/factory_default", a), Route::List);
        assert_eq!(route("GET", "/factory_default/", a), Route::List);
        assert_eq!(
            route(
                "GET",
                "/factory_default/noble_amd64/install_nsx_vm_agent.sh",
                a
            ),
            Route::File {
                distro: "noble",
                arch: Arch::Amd64,
                file: File::Script
            }
        );
        for f in File::ALL {
            let p = format!("/factory_default/bookworm_amd64/{}", f.name());
            assert!(
                matches!(route("GET", &p, a), Route::File { file, .. } if file == f),
                "{p}"
            );
        }
        assert_eq!(route("GET", "/api/v1/enroll", a), Route::NotInstaller);
        assert_eq!(route("GET", "/factory_defaults/x", a), Route::NotInstaller);
        assert_eq!(route("GET", "/", a), Route::NotInstaller);
        assert_eq!(
            route("POST", "/factory_default/", a),
            Route::MethodNotAllowed
        );
        assert_eq!(
            route("HEAD", "/factory_default/noble_amd64/nsxcli", a),
            Route::MethodNotAllowed
        );
        let Route::NotFound(m) = route(
            "GET",
            "/factory_default/trusty_amd64/install_nsx_vm_agent.sh",
            a,
        ) else {
            panic!("trusty routed");
        };
        assert_eq!(
            m,
            "unsupported distribution/architecture \"trusty_amd64\"; supported: bookworm_amd64, trixie_amd64, jammy_amd64, noble_amd64"
        );
        // The other architecture is not served when the binaries are amd64.
        assert!(matches!(
            route("GET", "/factory_default/noble_arm64/nsxcli", a),
            Route::NotFound(_)
        ));
        assert!(matches!(
            route("GET", "/factory_default/noble_arm64/nsxcli", None),
            Route::File {
                arch: Arch::Arm64,
                ..
            }
        ));
        let Route::NotFound(m) = route("GET", "/factory_default/noble_amd64/passwd", a) else {
            panic!("passwd routed");
        };
        assert_eq!(
            m,
            "no file \"passwd\" in /factory_default/noble_amd64/; files: SHA256SUMS, bootstrap.key, ca.pem, install_nsx_vm_agent.sh, nsx-agent, nsxcli"
        );
        for p in [
            "/factory_default/noble_amd64",
            "/factory_default/noble_amd64/",
            "/factory_default/noble_amd64/../ca.pem",
            "/factory_default/noble_amd64/ca.pem/",
            "/factory_default/noble_amd64//ca.pem",
            "/factory_default//noble_amd64/ca.pem",
            "/factory_default/noble_amd64/ca%2epem",
            "/factory_default/noble%5famd64/ca.pem",
            "/factory_default/../factory_default/noble_amd64/ca.pem",
            "/factory_default/noble_amd64/./ca.pem",
            "/factory_default/noble_amd64/ca.pem#x",
            "/factory_default/noble/ca.pem",
            "/factory_default/noble_/ca.pem",
            "/factory_default/_amd64/ca.pem",
            "/factory_default/NOBLE_AMD64/ca.pem",
            "/factory_default/noble_amd64/CA.PEM",
        ] {
            assert!(matches!(route("GET", p, a), Route::NotFound(_)), "{p}");
        }
    }

    fn vars(addr: &str) -> ScriptVars<'static> {
        ScriptVars {
            gw_addr: addr.parse().expect("ip"),
            gw_name: "nsx-gw.vmware.local",
            ca_sha256: "ab",
            install_port: 8080,
            enroll_port: 8443,
            control_port: 5555,
            distro: "noble",
            arch: Arch::Arm64,
            version: "9.9.9",
        }
    }

    #[test]
    fn templating() {
        let t = "A=\"@NSX_GW_ADDR@\"\nN=@NSX_GW_NAME@ C=@NSX_CA_SHA256@\n\
                 P=@NSX_INSTALL_PORT@,@NSX_ENROLL_PORT@,@NSX_CONTROL_PORT@\n\
                 D=@NSX_DISTRO@_@NSX_ARCH@ V=@NSX_GW_VERSION@ again @NSX_GW_ADDR@:@NSX_INSTALL_PORT@\n\
                 keep @NSX_UNKNOWN@ and @NSX_ and user@host @ end@";
        let out = String::from_utf8(render_script(t, &vars("10.0.0.5"))).expect("utf8");
        assert_eq!(
            out,
            "A=\"10.0.0.5\"\nN=nsx-gw.vmware.local C=ab\n\
             P=8080,8443,5555\n\
             D=noble_arm64 V=9.9.9 again 10.0.0.5:8080\n\
             keep @NSX_UNKNOWN@ and @NSX_ and user@host @ end@"
        );
        let out = render_script(
            "http://@NSX_GW_ADDR@:@NSX_INSTALL_PORT@/",
            &vars("2001:db8::1"),
        );
        assert_eq!(out, b"http://[2001:db8::1]:8080/");
        let out = render_script("@NSX_GW_ADDR@", &vars("::ffff:10.1.2.3"));
        assert_eq!(out, b"10.1.2.3");
        // A value that looks like a token is not expanded again.
        let mut v = vars("10.0.0.5");
        v.gw_name = "@NSX_DISTRO@";
        assert_eq!(render_script("@NSX_GW_NAME@", &v), b"@NSX_DISTRO@");
        assert_eq!(render_script("", &v), b"");
        // Every documented token is replaced in the shipped template.
        let shipped =
            String::from_utf8(render_script(SCRIPT_TEMPLATE, &vars("10.0.0.5"))).expect("utf8");
        for t in TOKENS {
            assert!(!shipped.contains(t), "{t} left in the script");
        }
    }

    #[test]
    fn sums_are_sorted_sha256sum_lines() {
        let h1 = "1".repeat(64);
        let h2 = "2".repeat(64);
        assert_eq!(
            sha256sums(&[("nsxcli", &h1), ("ca.pem", &h2)]),
            format!("{h2}  ca.pem\n{h1}  nsxcli\n")
        );
        let mut names: Vec<&str> = File::ALL.map(File::name).to_vec();
        names.sort_unstable();
        assert_eq!(
            names,
            File::ALL.map(File::name),
            "File::ALL is sorted by name"
        );
    }

    #[test]
    fn supported_directories() {
        assert_eq!(
            supported_dirs(Some(Arch::Arm64)),
            [
                "bookworm_arm64",
                "trixie_arm64",
                "jammy_arm64",
                "noble_arm64"
            ]
        );
        assert_eq!(supported_dirs(None).len(), 8);
        assert!(is_installer_path("/factory_default"));
        assert!(is_installer_path("/factory_default/x"));
        assert!(!is_installer_path("/factory_defaultx"));
    }

    #[test]
    fn gateway_identity_from_certificate() {
        let ca = pki::generate_ca("t").expect("ca");
        let ca = pki::Ca::from_pem(&ca.cert_pem, &ca.key_pem).expect("ca");
        let ip: IpAddr = "10.0.0.5".parse().expect("ip");
        let v6: IpAddr = "2001:db8::5".parse().expect("ip");
        let s = ca
            .issue_server_cert("nsx-gw.vmware.local", &[ip, v6])
            .expect("cert");
        let id = GatewayIdentity::from_pem(Path::new("gateway.pem"), &s.cert_pem).expect("id");
        assert_eq!(id.name, "nsx-gw.vmware.local");
        assert_eq!(id.ips, [ip, v6]);
        let s = ca.issue_server_cert("10.0.0.9", &[ip]).expect("cert");
        let id = GatewayIdentity::from_pem(Path::new("gateway.pem"), &s.cert_pem).expect("id");
        assert_eq!(id.name, "10.0.0.9");
        assert_eq!(id.ips.len(), 2);
        assert!(GatewayIdentity::from_pem(Path::new("gateway.pem"), "junk").is_err());
    }
}
