//! `nsx-gateway`: command-line entry point. Parses arguments, calls
//! [`gateway::ops`] or starts [`gateway::server`], prints results; exits 1
//! with the error on failure.

#![forbid(unsafe_code)]

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use gateway::conn_limit::Limits;
use gateway::control_server;
use gateway::install::DistDir;
use gateway::ops::{self, Kind};
use gateway::server::{self, HttpLimits, InstallListen, ServeOptions};

#[derive(Debug, Parser)]
#[command(
    name = "nsx-gateway",
    version,
    about = "NSX overlay gateway: PKI, enrollment, inventory, IPAM, desired state"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Create the root CA, the gateway certificate, the bootstrap key, the admin token and the store.
    Init {
        #[arg(long)]
        dir: PathBuf,
        /// DNS name (or IP) agents dial; goes into the server certificate's SAN.
        #[arg(long)]
        name: String,
        /// Extra IP addresses for the server certificate's SAN (repeatable).
        #[arg(long = "ip")]
        ips: Vec<IpAddr>,
        /// Replace an existing CA (every enrolled instance must be re-installed).
        #[arg(long)]
        force: bool,
    },
    /// Apply a desired-state file (the full set of switches and routers).
    Apply {
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        #[arg(long)]
        dir: PathBuf,
    },
    /// List instances, switches or routers.
    Get {
        what: What,
        #[arg(long)]
        json: bool,
        #[arg(long)]
        dir: PathBuf,
    },
    /// Bootstrap credential management.
    Bootstrap {
        #[command(subcommand)]
        cmd: BootstrapCmd,
    },
    /// Instance management.
    Instance {
        #[command(subcommand)]
        cmd: InstanceCmd,
    },
    /// Load balancers (keepalived.conf).
    Lb {
        #[command(subcommand)]
        cmd: LbCmd,
    },
    /// Run the enrollment server (HTTPS), the admin REST API (loopback), the
    /// control channel, the metrics endpoint and the agent installer (HTTP).
    Serve {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value = "0.0.0.0:8443")]
        listen_enroll: SocketAddr,
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen_api: SocketAddr,
        /// The agents' control channel (mutual TLS).
        #[arg(long, default_value = "0.0.0.0:5555")]
        listen_control: SocketAddr,
        /// The Prometheus endpoint (GET /metrics, no authentication: keep it
        /// on loopback); `off` disables it.
        #[arg(long, default_value = "127.0.0.1:9465", value_parser = parse_listen)]
        listen_metrics: Listen,
        /// The agent installer over plain HTTP (GET /factory_default/...;
        /// repeatable), or `off`. Default: port 8080 on every IP address in
        /// the gateway certificate's SAN (`init --ip`); those that cannot be
        /// bound are skipped with a warning.
        #[arg(long, value_name = "ADDR:PORT|off", value_parser = parse_listen)]
        listen_install: Vec<Listen>,
        /// Directory holding the `nsx-agent` and `nsxcli` binaries the
        /// installer serves. Default: the directory of this executable
        /// (missing binaries there only disable the installer: 503).
        #[arg(long, value_name = "DIR")]
        dist: Option<PathBuf>,
        /// Open connections allowed on the enrollment listener, and on the
        /// install listeners together; more are closed right after accept.
        #[arg(long, value_name = "N", default_value_t = server::MAX_CONNECTIONS, value_parser = at_least_one)]
        max_connections: usize,
        /// Open connections allowed from one source address on the
        /// enrollment listener and on the install listeners (raise it when
        /// many instances reach the gateway through one NAT address).
        #[arg(long, value_name = "N", default_value_t = server::MAX_CONNECTIONS_PER_PEER, value_parser = at_least_one)]
        max_connections_per_peer: usize,
        /// Open connections allowed on the control channel (sessions and
        /// handshakes in progress).
        #[arg(long, value_name = "N", default_value_t = control_server::MAX_CONNECTIONS, value_parser = at_least_one)]
        control_max_connections: usize,
        /// Open control-channel connections allowed from one source
        /// address (an agent holds one session).
        #[arg(long, value_name = "N", default_value_t = control_server::MAX_CONNECTIONS_PER_PEER, value_parser = at_least_one)]
        control_max_connections_per_peer: usize,
    },
}

/// A connection limit: a whole number of at least 1.
fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        Ok(_) => Err("must be at least 1".into()),
        Err(e) => Err(format!("{s:?} is not a number: {e}")),
    }
}

/// A listener's limits from its two flags (name, value), or an error that
/// names the flags.
fn limits(total: (&str, usize), per_peer: (&str, usize)) -> Result<Limits, String> {
    Limits::new(total.1, per_peer.1).map_err(|e| {
        format!(
            "{} {} and {} {}: {e}",
            total.0, total.1, per_peer.0, per_peer.1
        )
    })
}

/// `--listen-install` values: `off` alone, or addresses.
fn install_listen(values: &[Listen]) -> Result<InstallListen, String> {
    if values.is_empty() {
        return Ok(InstallListen::Default);
    }
    let addrs: Vec<SocketAddr> = values.iter().filter_map(|l| l.0).collect();
    match (addrs.len(), values.len()) {
        (0, 1) => Ok(InstallListen::Off),
        (n, m) if n == m => Ok(InstallListen::Explicit(addrs)),
        _ => Err("--listen-install off cannot be combined with addresses".into()),
    }
}

/// A listener address, or `off`.
#[derive(Debug, Clone, Copy)]
struct Listen(Option<SocketAddr>);

fn parse_listen(s: &str) -> Result<Listen, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(Listen(None));
    }
    s.parse()
        .map(|a| Listen(Some(a)))
        .map_err(|e| format!("{s:?} is neither a socket address (127.0.0.1:9465) nor \"off\": {e}"))
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum What {
    Instances,
    Switches,
    Routers,
}

#[derive(Debug, Subcommand)]
enum BootstrapCmd {
    /// Generate a new active bootstrap key (bootstrap.key); older keys are refused from now on.
    Rotate {
        #[arg(long)]
        dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum InstanceCmd {
    /// Revoke an instance: its certificate is refused and its address released.
    Revoke {
        id: String,
        #[arg(long)]
        dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum LbCmd {
    /// Read a keepalived.conf (and its includes) into the desired state's
    /// load_balancers section, replacing it: warnings on stderr, the
    /// section (YAML) on stdout.
    Import {
        file: PathBuf,
        /// Check only: nothing is written (with --dir, checked as applying
        /// would be).
        #[arg(long)]
        dry_run: bool,
        #[arg(long, required_unless_present = "dry_run")]
        dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nsx-gateway: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    match cli.cmd {
        Cmd::Init {
            dir,
            name,
            ips,
            force,
        } => {
            let r = ops::init(&dir, &name, &ips, force)?;
            println!("initialised {}", r.dir.display());
            for f in &r.files {
                println!("  wrote {} (0600)", f.display());
            }
            println!("bootstrap key id: {}", r.bootstrap_key_id);
            println!("CA SHA-256 fingerprint: {}", r.ca_fingerprint);
        }
        Cmd::Apply { file, dir } => {
            let out = ops::apply_file(&dir, &file)?;
            if out.changed {
                println!(
                    "applied: desired_version {} (version {})",
                    out.desired_version, out.version
                );
            } else {
                println!("unchanged: desired_version {}", out.desired_version);
            }
        }
        Cmd::Get { what, json, dir } => {
            let kind = match what {
                What::Instances => Kind::Instances,
                What::Switches => Kind::Switches,
                What::Routers => Kind::Routers,
            };
            print!("{}", ops::get(&dir, kind, json)?);
        }
        Cmd::Bootstrap {
            cmd: BootstrapCmd::Rotate { dir },
        } => {
            let id = ops::rotate_bootstrap(&dir)?;
            println!("new active bootstrap key {id}; older keys are retired");
        }
        Cmd::Instance {
            cmd: InstanceCmd::Revoke { id, dir },
        } => {
            if ops::revoke(&dir, &id)? {
                println!("revoked {id}");
            } else {
                println!("{id} was already revoked");
            }
        }
        Cmd::Lb {
            cmd: LbCmd::Import { file, dry_run, dir },
        } => {
            let r = ops::lb_import(dir.as_deref(), &file, dry_run)?;
            for w in &r.warnings {
                eprintln!("{w}");
            }
            print!("{}", r.yaml);
            match (r.outcome, dry_run) {
                (Some(o), false) if o.changed => eprintln!(
                    "applied: desired_version {} (version {})",
                    o.desired_version, o.version
                ),
                (Some(o), false) => eprintln!("unchanged: desired_version {}", o.desired_version),
                (Some(o), true) => eprintln!(
                    "dry run: valid; applying would {}",
                    if o.changed {
                        "change the desired state"
                    } else {
                        "change nothing"
                    }
                ),
                (None, _) => eprintln!(
                    "dry run: the file is valid (not checked against a gateway: no --dir)"
                ),
            }
        }
        Cmd::Serve {
            dir,
            listen_enroll,
            listen_api,
            listen_control,
            listen_metrics,
            listen_install,
            dist,
            max_connections,
            max_connections_per_peer,
            control_max_connections,
            control_max_connections_per_peer,
        } => {
            // Checked before anything else starts: a per-peer limit above the
            // total is a mistake the operator should hear of at once.
            let http = limits(
                ("--max-connections", max_connections),
                ("--max-connections-per-peer", max_connections_per_peer),
            )?;
            let control_limits = limits(
                ("--control-max-connections", control_max_connections),
                (
                    "--control-max-connections-per-peer",
                    control_max_connections_per_peer,
                ),
            )?;
            let opts = ServeOptions {
                enroll_addr: listen_enroll,
                api_addr: listen_api,
                control_addr: listen_control,
                metrics_addr: listen_metrics.0,
                install: install_listen(&listen_install)?,
                dist: match dist {
                    Some(d) => DistDir::Explicit(d),
                    None => DistDir::of_current_exe(),
                },
                http_limits: HttpLimits {
                    enroll: http,
                    install: http,
                },
                control_limits,
            };
            // Enrollment, installer, control, plus the admin API and metrics.
            let caps = [http.total, http.total, control_max_connections]
                .into_iter()
                .chain([server::MAX_CONNECTIONS; 2])
                .map(|n| u64::try_from(n).unwrap_or(u64::MAX))
                .fold(0u64, u64::saturating_add);
            match gateway::fdlimit::raise_nofile(caps) {
                Ok(l) if l.enough() => {
                    tracing::info!(before = l.before, now = l.now, "descriptor limit")
                }
                Ok(l) => tracing::warn!(
                    now = l.now,
                    hard = l.hard,
                    wanted = l.wanted,
                    "the connection caps need more descriptors than the hard limit allows \
                     (raise LimitNOFILE); accept backs off on EMFILE instead"
                ),
                Err(e) => tracing::warn!("cannot read or raise the descriptor limit: {e}"),
            }
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            rt.block_on(gateway::server::run(&dir, opts))?;
        }
    }
    Ok(())
}
