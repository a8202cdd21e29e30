//! The CLI operations behind `nsx-gateway init | apply | get | bootstrap
//! rotate | instance revoke | lb import`, as library functions (the binary
//! only parses arguments and prints).

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::pki::{self, BootstrapKey, Ca, PkiError, files};
use crate::state::{self, StateError};
use crate::store::{ApplyOutcome, InstanceRecord, Store, StoreError};
use crate::util;
use control::lb::VirtualServer;
use lb::keepalived::{Diagnostic, Loaded, Severity};

/// Errors of the CLI operations.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{0} already exists: refusing to replace the root CA (every enrolled instance trusts it); use --force to start over"
    )]
    CaExists(PathBuf),
    #[error("{0} is not initialised (no {1}); run `nsx-gateway init` first")]
    NotInitialised(PathBuf, &'static str),
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("YAML: {0}")]
    Yaml(String),
    #[error(
        "{}: {} error(s), nothing changed:\n  {}",
        .file.display(),
        .errors,
        .problems.join("\n  ")
    )]
    LbImport {
        file: PathBuf,
        errors: usize,
        /// Every diagnostic (warnings included), `file:line: ...`, or the
        /// desired state's path for what is not in the file.
        problems: Vec<String>,
    },
    #[error("lb import: --dir is needed to apply (or pass --dry-run)")]
    LbImportNoDir,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> OpsError + '_ {
    move |source| OpsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Opens the store of an initialised gateway directory.
pub fn open_store(dir: &Path) -> Result<Store, OpsError> {
    if !dir.join(files::CA_CERT).exists() {
        return Err(OpsError::NotInitialised(dir.to_path_buf(), files::CA_CERT));
    }
    Ok(Store::open(&dir.join(files::DB))?)
}

/// What `init` produced.
#[derive(Debug, Clone)]
pub struct InitReport {
    pub dir: PathBuf,
    /// `AA:BB:..` SHA-256 of the CA certificate.
    pub ca_fingerprint: String,
    pub bootstrap_key_id: String,
    pub files: Vec<PathBuf>,
}

/// `nsx-gateway init`: root CA, gateway server certificate (SAN = `name` +
/// `ips`), bootstrap key pair, admin token, and the store; files 0600 in a
/// 0700 directory. Refuses to replace an existing CA unless `force`.
pub fn init(dir: &Path, name: &str, ips: &[IpAddr], force: bool) -> Result<InitReport, OpsError> {
    let ca_path = dir.join(files::CA_CERT);
    if (ca_path.exists() || dir.join(files::CA_KEY).exists()) && !force {
        return Err(OpsError::CaExists(ca_path));
    }
    util::ensure_private_dir(dir).map_err(io_err(dir))?;
    let ca_pem = pki::generate_ca(&format!("nsx root CA ({name})"))?;
    let ca = Ca::from_pem(&ca_pem.cert_pem, &ca_pem.key_pem)?;
    let server = ca.issue_server_cert(name, ips)?;
    let bootstrap = BootstrapKey::generate()?;
    let token = util::random_hex(32).map_err(io_err(dir))?;

    let mut written = Vec::new();
    for (file, data) in [
        (files::CA_KEY, ca_pem.key_pem.as_str()),
        (files::CA_CERT, ca_pem.cert_pem.as_str()),
        (files::GATEWAY_KEY, server.key_pem.as_str()),
        (files::GATEWAY_CERT, server.cert_pem.as_str()),
        (files::BOOTSTRAP_KEY, bootstrap.private_pem.as_str()),
        (files::ADMIN_TOKEN, &format!("{token}\n")),
    ] {
        let p = dir.join(file);
        util::write_private(&p, data.as_bytes()).map_err(io_err(&p))?;
        written.push(p);
    }
    let db = dir.join(files::DB);
    let mut store = Store::open(&db)?;
    store.add_bootstrap_key(&bootstrap.key_id, &bootstrap.public_raw, util::now_unix())?;
    drop(store);
    for f in [
        db.clone(),
        db.with_extension("db-wal"),
        db.with_extension("db-shm"),
    ] {
        if f.exists() {
            set_mode_600(&f)?;
        }
    }
    written.push(db);
    Ok(InitReport {
        dir: dir.to_path_buf(),
        ca_fingerprint: ca.fingerprint(),
        bootstrap_key_id: bootstrap.key_id,
        files: written,
    })
}

fn set_mode_600(p: &Path) -> Result<(), OpsError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600)).map_err(io_err(p))
}

/// `nsx-gateway bootstrap rotate`: a new active bootstrap key written to
/// `bootstrap.key`; every older key is retired (refused from now on).
/// Returns the new key id.
pub fn rotate_bootstrap(dir: &Path) -> Result<String, OpsError> {
    let mut store = open_store(dir)?;
    let key = BootstrapKey::generate()?;
    let p = dir.join(files::BOOTSTRAP_KEY);
    util::write_private(&p, key.private_pem.as_bytes()).map_err(io_err(&p))?;
    store.add_bootstrap_key(&key.key_id, &key.public_raw, util::now_unix())?;
    Ok(key.key_id)
}

/// `nsx-gateway apply -f FILE`: parse, validate, apply atomically.
pub fn apply_file(dir: &Path, file: &Path) -> Result<ApplyOutcome, OpsError> {
    let text = std::fs::read_to_string(file).map_err(io_err(file))?;
    let st = state::parse_and_validate(&text)?;
    let mut store = open_store(dir)?;
    Ok(store.apply_state(&st, util::now_unix())?)
}

/// What `lb import` read, and what became of it.
#[derive(Debug, Clone)]
pub struct LbImport {
    /// The reader's warnings (`file:line: ...`).
    pub warnings: Vec<Diagnostic>,
    /// The `load_balancers:` section the file makes, YAML.
    pub yaml: String,
    /// What applying did (or, with `--dry-run`, would do); `None`: a dry
    /// run checked against no gateway.
    pub outcome: Option<ApplyOutcome>,
}

/// `nsx-gateway lb import FILE [--dry-run]`: reads the keepalived.conf
/// `file` (includes too), and makes its virtual servers the desired
/// state's `load_balancers` section, the rest of the state kept, applied
/// as `apply` applies a state (the same validation and transaction, the
/// version bumped when it changes), and refused if the desired state moved
/// between reading it and applying ([`StoreError::DesiredMoved`]). With `dry_run` nothing is written:
/// with `dir` everything is checked as applying would, without it only
/// the file. On any error nothing changes, and the error lists every
/// problem, at its file:line when it concerns the file. A file that
/// describes no virtual server is refused: importing it would remove every
/// load balancer, which a wrong path or an empty `conf.d/` should not do
/// (a state without the section removes them).
pub fn lb_import(dir: Option<&Path>, file: &Path, dry_run: bool) -> Result<LbImport, OpsError> {
    let loaded = lb::keepalived::load_file(file).map_err(|d| OpsError::LbImport {
        file: file.to_path_buf(),
        errors: d.iter().filter(|d| d.severity == Severity::Error).count(),
        problems: d.iter().map(ToString::to_string).collect(),
    })?;
    if loaded.virtual_servers.is_empty() {
        let mut problems: Vec<String> = loaded.warnings.iter().map(ToString::to_string).collect();
        problems.push(format!(
            "{}: no virtual_server: importing it would remove every load balancer \
             (to remove them, apply a state without load_balancers)",
            file.display()
        ));
        return Err(OpsError::LbImport {
            file: file.to_path_buf(),
            errors: 1,
            problems,
        });
    }
    let yaml = lb_section_yaml(&loaded.virtual_servers)?;
    let outcome = match dir {
        None if dry_run => None,
        None => return Err(OpsError::LbImportNoDir),
        Some(dir) => {
            let mut store = open_store(dir)?;
            let (mut st, base) = store.desired_state_versioned()?;
            st.load_balancers = loaded.virtual_servers.clone();
            let now = util::now_unix();
            let r = if dry_run {
                store.check_state(&st, now)
            } else {
                // A change applied meanwhile (a PUT, another import) is
                // not silently undone: refused, nothing changed.
                store.apply_state_on(&st, now, base)
            };
            match r {
                Ok(out) => Some(out),
                Err(StoreError::Invalid(p)) => {
                    return Err(OpsError::LbImport {
                        file: file.to_path_buf(),
                        errors: p.total(),
                        problems: import_problems(&loaded, &p),
                    });
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
    Ok(LbImport {
        warnings: loaded.warnings,
        yaml,
        outcome,
    })
}

/// `load_balancers:` and the list, as YAML.
pub fn lb_section_yaml(vss: &[VirtualServer]) -> Result<String, OpsError> {
    #[derive(serde::Serialize)]
    struct Section<'a> {
        load_balancers: &'a [VirtualServer],
    }
    serde_yaml_ng::to_string(&Section {
        load_balancers: vss,
    })
    .map_err(|e| OpsError::Yaml(e.to_string()))
}

/// The reader's warnings, then the state's problems: those under
/// `load_balancers[i]` at the file:line they concern, the others at their
/// path in the desired state.
fn import_problems(loaded: &Loaded, p: &control::validate::Problems) -> Vec<String> {
    let mut out: Vec<String> = loaded.warnings.iter().map(ToString::to_string).collect();
    for x in p.list() {
        out.push(match loaded.diagnose(&x.path, &x.message) {
            Some(d) => d.to_string(),
            None => x.to_string(),
        });
    }
    if p.more() > 0 {
        out.push(format!("... and {} more problems", p.more()));
    }
    out
}

/// Renders rows as an aligned table with a header.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut l = String::new();
        for (i, c) in cells.enumerate() {
            let w = widths.get(i).copied().unwrap_or(0);
            let _ = write!(l, "{c:<w$}  ");
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for r in rows {
        line(&mut r.iter().map(String::as_str));
    }
    out
}

/// What `get` can list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Instances,
    Switches,
    Routers,
}

/// `nsx-gateway get KIND [--json]`: the listing as text.
pub fn get(dir: &Path, kind: Kind, json: bool) -> Result<String, OpsError> {
    let store = open_store(dir)?;
    match kind {
        Kind::Instances => {
            let list = store.instances()?;
            if json {
                return Ok(serde_json::to_string_pretty(&instances_json(&list))? + "\n");
            }
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|i| {
                    vec![
                        i.id.clone(),
                        i.hostname.clone(),
                        i.mode().to_string(),
                        i.switch.clone().unwrap_or_else(|| "-".into()),
                        i.ip.map(|x| x.to_string()).unwrap_or_else(|| "-".into()),
                        i.nic_mac.to_string(),
                        i.underlay_ip.to_string(),
                        i.tep_id.to_string(),
                        i.session.clone().unwrap_or_else(|| "-".into()),
                        i.acked_version
                            .map_or_else(|| "-".into(), |v| v.to_string()),
                        i.tags
                            .iter()
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect::<Vec<_>>()
                            .join(","),
                    ]
                })
                .collect();
            Ok(table(
                &[
                    "ID", "HOSTNAME", "MODE", "SWITCH", "IP", "MAC", "UNDERLAY", "TEP-ID",
                    "SESSION", "ACKED", "TAGS",
                ],
                &rows,
            ))
        }
        Kind::Switches => {
            let st = store.desired_state()?;
            if json {
                return Ok(serde_json::to_string_pretty(&st.switches)? + "\n");
            }
            let insts = store.instances()?;
            let rows: Vec<Vec<String>> = st
                .switches
                .iter()
                .map(|s| {
                    let ports = insts
                        .iter()
                        .filter(|i| i.switch.as_deref() == Some(s.name.as_str()))
                        .count();
                    vec![
                        s.name.clone(),
                        s.tag.clone(),
                        format!("{:#x}", s.vni),
                        s.subnet.to_string(),
                        s.gateway_ip.to_string(),
                        ports.to_string(),
                    ]
                })
                .collect();
            Ok(table(
                &["NAME", "TAG", "VNI", "SUBNET", "GATEWAY", "PORTS"],
                &rows,
            ))
        }
        Kind::Routers => {
            let st = store.desired_state()?;
            if json {
                return Ok(serde_json::to_string_pretty(&st.routers)? + "\n");
            }
            let rows: Vec<Vec<String>> = st
                .routers
                .iter()
                .map(|r| {
                    vec![
                        r.name.clone(),
                        r.mac.to_string(),
                        r.switches.join(","),
                        r.routes
                            .iter()
                            .map(|x| format!("{} via {}", x.prefix, x.next_hop))
                            .collect::<Vec<_>>()
                            .join(", "),
                    ]
                })
                .collect();
            Ok(table(&["NAME", "MAC", "SWITCHES", "ROUTES"], &rows))
        }
    }
}

/// Instances as JSON values, with the derived `mode`.
pub fn instances_json(list: &[InstanceRecord]) -> serde_json::Value {
    serde_json::Value::Array(
        list.iter()
            .map(|i| {
                let mut v = serde_json::to_value(i).unwrap_or(serde_json::Value::Null);
                if let Some(o) = v.as_object_mut() {
                    o.insert("mode".into(), i.mode().into());
                }
                v
            })
            .collect(),
    )
}

/// `nsx-gateway instance revoke ID`. Returns false if already revoked.
pub fn revoke(dir: &Path, id: &str) -> Result<bool, OpsError> {
    let mut store = open_store(dir)?;
    Ok(store.revoke(id, util::now_unix())?)
}
