//! `nsx-agent run`: the life of an agent. Validate everything first (an
//! invalid config or a missing NIC exits non-zero with the host untouched),
//! find the desired state (the config file's own; or, with `[gateway]`, the
//! last applied one persisted on disk, else the gateway's first snapshot
//! after enrolling), take the NIC, start the datapath thread and the local
//! API, then serve: configs from the gateway and SIGHUP reloads are checked
//! first and applied with one table swap (or refused, keeping the running
//! config); a change between overlay and micro-segmentation rebuilds the
//! plumbing; a new underlay address on the bridge (a DHCP lease that
//! changed it) restarts the datapath on it and tells the gateway;
//! SIGTERM/SIGINT restore the host and exit.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use control::{InstanceConfig, InstanceMeta};
use datapath::{LocalHost, Tables};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::{mpsc, oneshot};

use crate::api::{self, OverlayStatus, ReloadStatus, Shared, Status};
use crate::config::{AgentConfig, GatewaySettings, HostSettings, OnStop};
use crate::dp::ctl::{Ctl, Published};
use crate::dp::dataloop::{self, Sockets};
use crate::dp::fwctl::{FwQuery, FwReply};
use crate::dp::io::{self, Waker};
use crate::dp::msegloop;
use crate::dp::natctl::{NatQuery, NatReply};
use crate::dp::underlay::{self, UdpPool};
use crate::gw::enroll;
use crate::gw::gwclient::{self, ApplyError, ApplyRequest};
use crate::gw::persist::{self, Applied};
use crate::health;
use crate::host::sshd::{self, Ssh, SshStatus};
use crate::host::{self, NicInfo, PortPlan};
use agent_api::GatewayStatus;

/// Everything that can stop `run` before the datapath starts.
#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Host(#[from] host::HostError),
    #[error("NIC {nic} has no IPv4 address to use as the tunnel endpoint")]
    NoUnderlayAddress { nic: String },
    #[error("cannot compile config: {0}")]
    Tables(#[from] datapath::TablesError),
    #[error(transparent)]
    Enroll(#[from] enroll::EnrollError),
    #[error("gateway TLS: {0}")]
    Tls(#[from] gwclient::TlsSetupError),
    #[error(transparent)]
    Mseg(#[from] msegloop::MsegError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
}

pub fn run(path: &Path) -> ExitCode {
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("nsx-agent: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run_async(path)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("nsx-agent: {e}");
            ExitCode::FAILURE
        }
    }
}

pub fn cleanup(path: &Path) -> ExitCode {
    let cfg = match AgentConfig::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("nsx-agent: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime().map_err(|e| e.to_string()).and_then(|rt| {
        rt.block_on(async {
            host::teardown(&cfg.host).await?;
            host::uplink::give_back(&cfg.host).await
        })
        .map_err(|e| e.to_string())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nsx-agent: cleanup failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The host facts the tables need; on the edge the "port" is the uplink,
/// so its MAC is the uplink's.
fn local_host(
    nic: &NicInfo,
    uplink: Option<host::uplink::Uplink>,
) -> Result<LocalHost, StartError> {
    let underlay_ip =
        nic.addrs
            .first()
            .map(|a| a.ip)
            .ok_or_else(|| StartError::NoUnderlayAddress {
                nic: nic.name.clone(),
            })?;
    let mtu = u16::try_from(nic.mtu.saturating_sub(host::OVERLAY_OVERHEAD)).unwrap_or(u16::MAX);
    Ok(LocalHost {
        underlay_ip,
        port_mac: control::MacAddr(uplink.map_or(nic.mac, |u| u.mac)),
        overlay_mtu: mtu,
        kernel_udp: true,
        underlay_prefix_len: nic.addrs.first().map_or(32, |a| a.prefix_len),
        underlay_mac: control::MacAddr(nic.mac),
    })
}

/// The edge's downlink: the filtered AF_PACKET socket on the underlay
/// bridge (the filter for `tables`; the datapath replaces it when they
/// change), and the kernel kept out of the downlink SNAT's ports on
/// `underlay_ip` (the nftables table `host::uplink` deletes when it gives
/// the uplink back).
fn edge_downlink(
    cfg: &AgentConfig,
    tables: &Tables,
    underlay_ip: Ipv4Addr,
) -> Result<std::os::fd::OwnedFd, StartError> {
    let bridge = cfg.host.vtep_if.as_str();
    let io_err = |what: String| move |source| StartError::Io { what, source };
    let ifindex = io::ifindex(bridge).map_err(io_err(format!("interface {bridge}")))?;
    let filter = tables
        .tier0
        .as_ref()
        .map_or_else(datapath::bpf::refuse_all, datapath::bpf::downlink_filter);
    let fd = io::downlink_socket(ifindex, &filter)
        .map_err(io_err(format!("AF_PACKET socket on the downlink {bridge}")))?;
    let table = host::nft::edge_table_name(&cfg.host.uplink);
    host::nft::ensure_edge_nat_ports(
        &table,
        ifindex,
        underlay_ip,
        control::Tier0::DOWNLINK_NAT_PORTS,
    )?;
    let (lo, hi) = control::Tier0::DOWNLINK_NAT_PORTS;
    tracing::info!(
        bridge, %underlay_ip, filter_insns = filter.len(), nft_table = %table,
        "edge downlink: filtered socket on the underlay bridge, ports {lo}-{hi} kept from the kernel"
    );
    Ok(fd)
}

/// Micro-segmentation through the agent's firewall: no overlay port, and
/// either a gateway (which always sends rules) or a static firewall section.
fn filtered(cfg: &AgentConfig, desired: &InstanceConfig) -> bool {
    !cfg.host.is_edge()
        && desired.port.is_none()
        && (cfg.gateway.is_some() || desired.firewall.is_some())
}

/// What a gateway-mode agent runs before the gateway's first config when
/// its failure policy is `failClosed`: micro-segmentation without any
/// ruleset, so the firewall passes management traffic only.
fn fail_closed_start() -> InstanceConfig {
    InstanceConfig {
        tep_id: 1,
        ..InstanceConfig::default()
    }
}

/// The overlay address plan of the local port in `desired`.
fn port_plan(host: &HostSettings, desired: &InstanceConfig) -> Option<PortPlan> {
    let port = desired.port.as_ref()?;
    let sw = desired.switches.iter().find(|s| s.name == port.switch)?;
    Some(PortPlan {
        mac: port.mac.map(|m| m.0),
        ip: port.ip,
        prefix_len: sw.subnet.prefix_len(),
        gateway: sw.gateway_ip,
        tx_offload: host.tx_offload,
        dhcp: host.port_dhcp,
    })
}

fn overlay_status(host: &HostSettings, tables: &Tables, overlay_mtu: u32) -> Option<OverlayStatus> {
    let port = tables.port?;
    Some(OverlayStatus {
        netns: host.netns.clone(),
        interface: host.overlay_if.clone(),
        mtu: overlay_mtu,
        ip: port.ip,
        mac: port.mac,
        switch: tables.switches[usize::from(port.switch)].name.clone(),
    })
}

/// The desired state an applied gateway config stands for (`None` =
/// micro-segmentation: no switches, no port).
fn desired_from(a: &Applied) -> InstanceConfig {
    match &a.config {
        Some(c) => {
            let mut c = c.clone();
            c.version = a.version;
            c
        }
        None => InstanceConfig {
            version: a.version,
            tep_id: a.tep_id,
            ..InstanceConfig::default()
        },
    }
}

/// Inventory for the gateway: the instance id defaults to the hostname, the
/// OS comes from os-release, the image id from the config (the installer's
/// `--image-id`). All of it is the instance's own claim.
fn instance_meta(gw: &GatewaySettings, nic: &NicInfo, underlay_ip: Ipv4Addr) -> InstanceMeta {
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into());
    InstanceMeta {
        instance_id: gw.instance_id.clone().unwrap_or_else(|| hostname.clone()),
        hostname,
        os: crate::gw::inventory::os(),
        image_id: gw.image_id.clone().unwrap_or_else(|| "unknown".into()),
        tags: gw.tags.clone(),
        underlay_ip,
        nic_mac: control::MacAddr(nic.mac),
    }
}

/// The gateway side of a running agent.
struct Gateway {
    applies: mpsc::Receiver<ApplyRequest>,
    status: Arc<Mutex<Option<GatewayStatus>>>,
    /// The control client; restarted (with a new Hello) when the underlay
    /// address changes.
    task: tokio::task::JoinHandle<()>,
    tls: Arc<rustls::ClientConfig>,
}

/// Starts the control client (see [`gwclient::run`]).
fn spawn_client(
    gw: &GatewaySettings,
    tls: Arc<rustls::ClientConfig>,
    meta: InstanceMeta,
    applied: Option<u64>,
    status: Arc<Mutex<Option<GatewayStatus>>>,
    published: Arc<Mutex<Published>>,
    health: Arc<health::Board>,
) -> Gateway {
    let (tx, applies) = mpsc::channel(4);
    let task = tokio::spawn(gwclient::run(
        gw.clone(),
        Arc::clone(&tls),
        meta,
        applied,
        tx,
        Arc::clone(&status),
        published,
        health,
    ));
    Gateway {
        applies,
        status,
        task,
        tls,
    }
}

/// A gateway config waiting for its outcome (answered once applied).
type Pending = (Applied, oneshot::Sender<Result<(), ApplyError>>);

/// Enrolls if needed and starts the control client; returns the persisted
/// config too (applied before the gateway answers).
async fn start_gateway(
    cfg: &AgentConfig,
    gw: &GatewaySettings,
    nic: &NicInfo,
    underlay_ip: Ipv4Addr,
    published: Arc<Mutex<Published>>,
    health: Arc<health::Board>,
) -> Result<(Gateway, Option<Applied>), StartError> {
    let meta = instance_meta(gw, nic, underlay_ip);
    let identity = match enroll::load_identity(&cfg.host.state_dir)? {
        Some(id) => id,
        None => enroll::enroll_as(gw, &cfg.host.state_dir, &meta, cfg.host.role()).await?,
    };
    let ca = std::fs::read(&gw.ca).map_err(|source| StartError::Io {
        what: format!("root CA {}", gw.ca.display()),
        source,
    })?;
    let tls = gwclient::client_tls(&ca, &identity.cert_pem, &identity.key_pem)?;
    let persisted = match persist::load(&cfg.host.state_dir) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!("{e}");
            None
        }
    };
    let client = spawn_client(
        gw,
        Arc::new(tls),
        meta,
        persisted.as_ref().map(|p| p.version),
        Arc::new(Mutex::new(None)),
        published,
        health,
    );
    Ok((client, persisted))
}

struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    fn new() -> Result<Signals, StartError> {
        let h = |k, what: &str| {
            signal(k).map_err(|source| StartError::Io {
                what: what.to_string(),
                source,
            })
        };
        Ok(Signals {
            term: h(SignalKind::terminate(), "SIGTERM handler")?,
            int: h(SignalKind::interrupt(), "SIGINT handler")?,
            hup: h(SignalKind::hangup(), "SIGHUP handler")?,
        })
    }
}

async fn next_apply(gw: &mut Option<Gateway>) -> Option<ApplyRequest> {
    match gw {
        Some(g) => g.applies.recv().await,
        None => std::future::pending().await,
    }
}

/// How `serve` ended.
enum Exit {
    Stop,
    /// The port appeared or went away: rebuild the plumbing for this config.
    Rebuild(Box<(InstanceConfig, Option<Pending>)>),
    /// The underlay address changed (the NIC as recorded now, and the
    /// desired state running): restart the datapath on the new one.
    Readdress(Box<(NicInfo, InstanceConfig)>),
}

/// How often the bridge's underlay address is looked at.
const UNDERLAY_POLL: std::time::Duration = std::time::Duration::from_secs(1);

async fn run_async(path: &Path) -> Result<(), StartError> {
    let started = Instant::now();
    let mut signals = Signals::new()?;
    // 1. Everything that can be checked without changing the host.
    let cfg = AgentConfig::load(path)?;
    let nic = host::inspect_nic(&cfg.host).await?;
    let mut lh = local_host(&nic, None)?;
    // Resolved now: once the NIC is filtered, name resolution may be blocked.
    let management = match &cfg.gateway {
        Some(g) => msegloop::management_endpoints(g)?,
        None => Vec::new(),
    };
    // Counters outlive datapath restarts (mode changes) and feed the gateway's Status.
    let published = Arc::new(Mutex::new(Published::default()));
    // The edge's health checkers' verdicts, for the control client.
    let board = Arc::new(health::Board::default());
    let (mut gw, persisted) = match &cfg.gateway {
        Some(g) => {
            let counters = Arc::clone(&published);
            let (gw, p) =
                start_gateway(&cfg, g, &nic, lh.underlay_ip, counters, Arc::clone(&board)).await?;
            (Some(gw), p)
        }
        None => (None, None),
    };

    // 2. The desired state to start with.
    let mut pending: Option<Pending> = None;
    let mut desired = match (&cfg.instance, persisted) {
        (Some(i), _) => i.clone(),
        (None, Some(p)) => {
            tracing::info!(
                version = p.version,
                "applying the persisted config before the gateway answers"
            );
            desired_from(&p)
        }
        (None, None) if cfg.host.failure_policy == firewall::FailurePolicy::FailClosed => {
            tracing::info!(
                "no config yet: filtering the NIC fail-closed (management only) until the gateway's first"
            );
            fail_closed_start()
        }
        (None, None) => loop {
            tracing::info!(
                "waiting for the gateway's first config (failOpen: the host is not touched)"
            );
            tokio::select! {
                _ = signals.term.recv() => return Ok(()),
                _ = signals.int.recv() => return Ok(()),
                req = next_apply(&mut gw) => {
                    let Some(req) = req else { return Ok(()) };
                    let a = Applied { version: req.version, tep_id: req.tep_id, config: req.config };
                    let d = desired_from(&a);
                    match Tables::build(&d, lh) {
                        Ok(_) => {
                            pending = Some((a, req.reply));
                            break d;
                        }
                        Err(e) => { let _ = req.reply.send(Err(e.into())); }
                    }
                }
            }
        },
    };

    // 3. Take the NIC (and in the edge role the uplink) and serve;
    //    rebuild when the mode changes.
    let uplink = if cfg.host.is_edge() {
        Some(host::uplink::take(&cfg.host).await?)
    } else {
        None
    };
    lh = local_host(&nic, uplink)?;
    // The edge: its health checkers' namespace and port, and the checkers.
    let edge = match uplink {
        Some(_) => {
            let probe = host::probe::start(u32::from(lh.overlay_mtu)).await?;
            let checks = health::Checks::start(Arc::clone(&board));
            Some(EdgeChecks { probe, checks })
        }
        None => None,
    };
    let mut result = Ok(());
    loop {
        let tables = Arc::new(Tables::build(&desired, lh)?);
        let plan = port_plan(&cfg.host, &desired);
        let filter = filtered(&cfg, &desired);
        let mode = match &plan {
            Some(p) => host::Mode::Overlay(p),
            None if filter => host::Mode::MicrosegFiltered,
            None => host::Mode::Microseg,
        };
        let plumbed = host::setup(&cfg.host, mode).await?;
        tracing::info!(
            nic = %cfg.host.nic, underlay = %plumbed.underlay_ip, overlay_mtu = plumbed.overlay_mtu,
            mode = if plan.is_some() { "overlay" } else if filter { "micro-segmentation (filtered)" } else { "micro-segmentation" },
            "host plumbing ready"
        );
        let ctx = ServeCtx {
            path,
            cfg: &cfg,
            started,
            lh,
            uplink,
            published: Arc::clone(&published),
            desired: &desired,
            management: &management,
            edge: edge.as_ref(),
        };
        match serve(
            &ctx,
            plumbed,
            tables,
            plan,
            &mut gw,
            &mut signals,
            pending.take(),
        )
        .await
        {
            Ok(Exit::Stop) => break,
            Ok(Exit::Readdress(next)) => {
                let (nic, running) = *next;
                desired = running;
                lh = local_host(&nic, uplink)?;
                tracing::info!(underlay = %lh.underlay_ip, "restarting the datapath on the new underlay address");
                // A new Hello tells the gateway, which gives the peers the
                // new tunnel endpoint.
                if let (Some(g), Some(old)) = (&cfg.gateway, gw.take()) {
                    old.task.abort();
                    let applied = persist::load(&cfg.host.state_dir)
                        .ok()
                        .flatten()
                        .map(|p| p.version);
                    gw = Some(spawn_client(
                        g,
                        old.tls,
                        instance_meta(g, &nic, lh.underlay_ip),
                        applied,
                        old.status,
                        Arc::clone(&published),
                        Arc::clone(&board),
                    ));
                }
            }
            Ok(Exit::Rebuild(next)) => {
                let (d, p) = *next;
                tracing::info!(
                    version = d.version,
                    "overlay mode changes: rebuilding the plumbing"
                );
                desired = d;
                pending = p;
            }
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    // 4. Give the host back, whatever happened (unless told to keep it for
    //    a restart and we are stopping cleanly).
    if result.is_ok() && cfg.host.on_stop == OnStop::Keep {
        tracing::info!(nic = %cfg.host.nic, "plumbing kept for the next start (on_stop = keep)");
        return Ok(());
    }
    if let Err(e) = host::teardown(&cfg.host).await {
        tracing::error!(error = %e, "restoring the host failed; run `nsx-agent cleanup` to retry");
        return Err(e.into());
    }
    if let Err(e) = host::uplink::give_back(&cfg.host).await {
        tracing::error!(error = %e, "giving the uplink back failed; run `nsx-agent cleanup` to retry");
        return Err(e.into());
    }
    tracing::info!(nic = %cfg.host.nic, "host restored");
    result
}

struct ServeCtx<'a> {
    path: &'a Path,
    cfg: &'a AgentConfig,
    started: Instant,
    lh: LocalHost,
    published: Arc<Mutex<Published>>,
    /// The desired state `serve` starts with (the tables are built from it).
    desired: &'a InstanceConfig,
    /// The gateway endpoints the micro-segmentation firewall never filters.
    management: &'a [std::net::SocketAddrV4],
    /// The edge role's uplink, taken.
    uplink: Option<host::uplink::Uplink>,
    /// The edge role's health checkers and their port.
    edge: Option<&'a EdgeChecks>,
}

/// The edge's health checkers: their port's peer (for the datapath's
/// socket) and the monitor.
struct EdgeChecks {
    probe: u32,
    checks: health::Checks,
}

/// What applying a config needs; shared by SIGHUP and the gateway.
struct Applier<'a> {
    host: &'a HostSettings,
    plumbed: &'a host::Plumbed,
    lh: LocalHost,
    plan: Option<PortPlan>,
    /// Filtered micro-segmentation (see [`filtered`]).
    filter: bool,
    cfg: &'a AgentConfig,
    ctl: Sender<Ctl>,
    waker: Arc<Waker>,
    shared: Arc<Shared>,
    /// Overlay mode's sshds (the overlay one follows the port's IP).
    ssh: &'a Ssh,
    /// The edge's health checkers (follow `tier0.health_checks`).
    checks: Option<&'a health::Checks>,
}

enum ApplyOutcome {
    Swapped(String),
    NeedsRebuild,
}

impl Applier<'_> {
    /// Checks `desired` completely, then swaps it in (or says the plumbing
    /// must be rebuilt). On error nothing changed.
    async fn apply(&mut self, desired: &InstanceConfig) -> Result<ApplyOutcome, ApplyError> {
        let tables = Arc::new(Tables::build(desired, self.lh)?);
        let new_plan = port_plan(self.host, desired);
        if new_plan.is_some() != self.plan.is_some() || filtered(self.cfg, desired) != self.filter {
            return Ok(ApplyOutcome::NeedsRebuild);
        }
        if new_plan != self.plan {
            host::update_port(self.host, self.plan.as_ref(), new_plan.as_ref()).await?;
            if let Some(p) = &new_plan {
                self.ssh.set_overlay_ip(p.ip);
            }
            self.plan = new_plan;
        }
        self.ctl
            .send(Ctl::Tables(Arc::clone(&tables)))
            .map_err(|_| ApplyError::DatapathGone)?;
        self.waker.wake();
        if let Some(c) = self.checks {
            c.configure(desired.tier0.as_deref()).await;
        }
        let version = tables.version;
        if let Ok(mut st) = self.shared.status.lock() {
            st.overlay = overlay_status(self.host, &tables, self.plumbed.overlay_mtu);
            st.mode = if tables.port.is_some() {
                "overlay"
            } else if tables.tier0.is_some() {
                "edge"
            } else {
                "micro-segmentation"
            };
            st.desired = desired.clone();
            st.tables = tables;
        }
        Ok(ApplyOutcome::Swapped(format!(
            "config version {version} applied"
        )))
    }
}

fn answer(state_dir: &Path, applied: Applied, reply: oneshot::Sender<Result<(), ApplyError>>) {
    if let Err(e) = persist::save(state_dir, &applied) {
        tracing::warn!("cannot persist config version {}: {e}", applied.version);
    }
    let _ = reply.send(Ok(()));
}

async fn serve(
    ctx: &ServeCtx<'_>,
    plumbed: host::Plumbed,
    tables: Arc<Tables>,
    plan: Option<PortPlan>,
    gw: &mut Option<Gateway>,
    signals: &mut Signals,
    first: Option<Pending>,
) -> Result<Exit, StartError> {
    let cfg = ctx.cfg;
    let io_err = |what: &str| {
        let what = what.to_string();
        move |source| StartError::Io { what, source }
    };
    let underlay_ip: Ipv4Addr = plumbed.underlay_ip;
    let filter = plan.is_none() && filtered(cfg, ctx.desired);
    let datapath = if filter {
        Datapath::Mseg(Box::new(msegloop::MsegLoop {
            sockets: msegloop::Sockets::open(plumbed.nic_ifindex, plumbed.fw_peer_ifindex)?,
            firewall: msegloop::new_firewall(&cfg.host, ctx.management.to_vec()),
            nic_mac: plumbed.nic.mac,
            busy_poll: cfg.host.busy_poll(),
        }))
    } else {
        let geneve_rx = io::udp_socket(underlay_ip, geneve::GENEVE_PORT).map_err(io_err(
            &format!("UDP socket {underlay_ip}:{}", geneve::GENEVE_PORT),
        ))?;
        underlay::enable_gro(&geneve_rx).map_err(io_err("UDP_GRO on the Geneve socket"))?;
        let pool = UdpPool::bind(underlay_ip)
            .map_err(io_err(&format!("UDP source-port pool on {underlay_ip}")))?;
        tracing::debug!(ports = ?pool.ports(), "Geneve source ports bound");
        Datapath::Overlay(Sockets {
            port: match (&plan, ctx.uplink) {
                (Some(_), _) => Some(
                    io::packet_socket(plumbed.peer_ifindex, io::Qdisc::Bypass)
                        .map_err(io_err("AF_PACKET socket on the overlay peer"))?,
                ),
                // The edge: the tier-0's uplink is its "port".
                (None, Some(u)) => Some(
                    io::packet_socket(u.ifindex, io::Qdisc::Bypass)
                        .map_err(io_err("AF_PACKET socket on the uplink"))?,
                ),
                (None, None) => None,
            },
            geneve_rx,
            underlay_tx: pool,
            downlink: match ctx.uplink {
                Some(_) => Some(edge_downlink(cfg, &tables, underlay_ip)?),
                None => None,
            },
            probe: match ctx.edge {
                Some(e) => Some(
                    io::packet_socket(e.probe, io::Qdisc::Bypass)
                        .map_err(io_err("AF_PACKET socket on the health-check port"))?,
                ),
                None => None,
            },
        })
    };
    let listener = api::bind(&cfg.host.api_socket).map_err(io_err(&format!(
        "API socket {}",
        cfg.host.api_socket.display()
    )))?;

    let published = Arc::clone(&ctx.published);
    let ssh_status = Arc::new(Mutex::new(SshStatus::starting()));
    let shared = Arc::new(Shared {
        started: ctx.started,
        published: Arc::clone(&published),
        gateway: gw.as_ref().map(|g| Arc::clone(&g.status)),
        datapath: Mutex::new(None),
        ssh: Arc::clone(&ssh_status),
        checks: ctx.edge.map(|e| e.checks.handle().clone()),
        status: Mutex::new(Status {
            config_path: ctx.path.display().to_string(),
            mode: if plan.is_some() {
                "overlay"
            } else if ctx.uplink.is_some() {
                "edge"
            } else {
                "micro-segmentation"
            },
            nic: cfg.host.nic.clone(),
            underlay_ip,
            underlay_mtu: plumbed.nic.mtu,
            overlay: overlay_status(&cfg.host, &tables, plumbed.overlay_mtu),
            last_reload: None,
            config: cfg.clone(),
            desired: ctx.desired.clone(),
            tables: Arc::clone(&tables),
        }),
    });

    let metrics = crate::api::metrics::start(&cfg.host, Arc::clone(&shared))
        .await
        .map_err(io_err(&format!(
            "metrics endpoint {}",
            cfg.host.metrics_listen
        )))?;

    // Merging received TCP segments needs TSO on the overlay veth.
    let coalesce = cfg.host.tx_offload;
    let waker = Arc::new(Waker::new().map_err(io_err("eventfd"))?);
    let (ctl_tx, ctl_rx) = channel();
    // Connections saved by a planned stop follow the instance into this
    // run. Queued (and the waker set) before the datapath thread starts,
    // so its first round restores them before it reads a packet: a
    // segment handled first would be picked up as a new connection and
    // the saved entry skipped.
    match persist::take_flows(&cfg.host.state_dir) {
        Ok(flows) if !flows.is_empty() => {
            let _ = ctl_tx.send(Ctl::RestoreFlows(flows));
            waker.wake();
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("{e}"),
    }
    // The edge's NAT sessions, likewise: established north-south
    // connections continue across a planned restart.
    match persist::take_nat(&cfg.host.state_dir) {
        Ok(saved) if !saved.is_empty() => {
            let _ = ctl_tx.send(Ctl::RestoreNat(saved));
            waker.wake();
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("{e}"),
    }
    let dp = {
        let (waker, published, tables, started) = (
            Arc::clone(&waker),
            Arc::clone(&published),
            Arc::clone(&tables),
            ctx.started,
        );
        let max_flows = cfg.host.max_flows;
        let busy_poll = cfg.host.busy_poll();
        std::thread::Builder::new()
            .name("nsx-datapath".into())
            .spawn(move || match datapath {
                Datapath::Overlay(sockets) => dataloop::run(
                    tables,
                    sockets,
                    ctl_rx,
                    waker,
                    published,
                    started,
                    dataloop::Options {
                        coalesce,
                        max_flows,
                        busy_poll,
                    },
                ),
                Datapath::Mseg(lp) => msegloop::run(*lp, tables, ctl_rx, waker, published, started),
            })
            .map_err(io_err("datapath thread"))?
    };
    if let Ok(mut d) = shared.datapath.lock() {
        *d = Some((ctl_tx.clone(), Arc::clone(&waker)));
    }
    let log_task = tokio::spawn(crate::dp::pktlog::run(
        cfg.host.packet_log.clone(),
        Arc::clone(&published),
        crate::dp::pktlog::Clock {
            epoch: ctx.started,
            epoch_wall: std::time::SystemTime::now() - ctx.started.elapsed(),
        },
        {
            let shared = Arc::clone(&shared);
            move |rule| {
                shared
                    .status
                    .lock()
                    .ok()
                    .and_then(|st| {
                        let p = st.tables.firewall.as_ref()?;
                        Some(p.rules().get(rule as usize)?.ruleset.clone())
                    })
                    .unwrap_or_default()
            }
        },
    ));
    let api_task = tokio::spawn(api::serve(listener, Arc::clone(&shared)));
    tracing::info!(socket = %cfg.host.api_socket.display(), version = tables.version, "datapath running");
    // Control plane only: the sshds never touch the datapath.
    let ssh_mode = match &plan {
        Some(p) => sshd::Mode::Overlay {
            underlay_ip,
            overlay_ip: p.ip,
        },
        None => sshd::Mode::Microseg,
    };
    let ssh = Ssh::start(&cfg.host, ssh_mode, ssh_status);
    let watch = host::UnderlayWatch::new(&cfg.host)?;
    let mut underlay_tick = tokio::time::interval(UNDERLAY_POLL);
    underlay_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    if let Some((applied, reply)) = first {
        answer(&cfg.host.state_dir, applied, reply);
    }

    let mut applier = Applier {
        host: &cfg.host,
        plumbed: &plumbed,
        lh: ctx.lh,
        plan,
        filter,
        cfg,
        ctl: ctl_tx.clone(),
        waker: Arc::clone(&waker),
        shared: Arc::clone(&shared),
        ssh: &ssh,
        checks: ctx.edge.map(|e| &e.checks),
    };
    if let Some(e) = ctx.edge {
        e.checks.configure(ctx.desired.tier0.as_deref()).await;
    }
    let exit = loop {
        tokio::select! {
            _ = signals.term.recv() => break Exit::Stop,
            _ = signals.int.recv() => break Exit::Stop,
            _ = underlay_tick.tick() => {
                match watch.primary_v4().await {
                    Ok(Some(ip)) if ip != underlay_ip => {
                        tracing::info!(old = %underlay_ip, new = %ip, "the underlay address changed");
                        match host::follow_underlay(&cfg.host).await {
                            Ok(nic) => {
                                let running = shared
                                    .status
                                    .lock()
                                    .map_or_else(|_| ctx.desired.clone(), |st| st.desired.clone());
                                break Exit::Readdress(Box::new((nic, running)));
                            }
                            Err(e) => tracing::warn!(error = %e, "cannot follow the new underlay address"),
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::debug!(error = %e, "cannot read the underlay address"),
                }
            }
            _ = signals.hup.recv() => {
                let status = reload(ctx, &mut applier).await;
                match &status {
                    Ok(msg) => tracing::info!("{msg}"),
                    Err(msg) => tracing::warn!("reload refused, keeping the running config: {msg}"),
                }
                if let Ok(mut st) = shared.status.lock() {
                    st.last_reload = Some(match status {
                        Ok(m) => ReloadStatus::new(true, m),
                        Err(e) => ReloadStatus::new(false, e.to_string()),
                    });
                }
            }
            req = next_apply(gw) => {
                let Some(req) = req else { continue };
                let applied = Applied { version: req.version, tep_id: req.tep_id, config: req.config };
                let desired = desired_from(&applied);
                match applier.apply(&desired).await {
                    Ok(ApplyOutcome::Swapped(msg)) => {
                        tracing::info!("{msg} (from the gateway)");
                        answer(&cfg.host.state_dir, applied, req.reply);
                    }
                    Ok(ApplyOutcome::NeedsRebuild) => {
                        break Exit::Rebuild(Box::new((desired, Some((applied, req.reply)))));
                    }
                    Err(e) => {
                        tracing::warn!(version = req.version, "gateway config refused: {e}");
                        let _ = req.reply.send(Err(e));
                    }
                }
            }
        }
    };
    // The sshds go with the mode (also with on_stop = "keep": a restarted
    // agent starts its own; sessions they forked keep running), the port
    // 22 block first.
    ssh.stop().await;
    tracing::info!("stopping the datapath");
    api_task.abort();
    log_task.abort();
    if let Some(m) = metrics {
        m.stop().await;
    }
    // Connections follow the instance across a stop and a new address.
    if matches!(exit, Exit::Stop | Exit::Readdress(_)) {
        save_flows(&shared, &cfg.host.state_dir).await;
        save_nat(&shared, &cfg.host.state_dir).await;
    }
    if let Ok(mut d) = shared.datapath.lock() {
        *d = None;
    }
    let _ = ctl_tx.send(Ctl::Stop);
    waker.wake();
    let _ = tokio::task::spawn_blocking(move || dp.join()).await;
    let _ = std::fs::remove_file(&cfg.host.api_socket);
    Ok(exit)
}

/// The datapath thread's sockets: the overlay loop's, or the filtered
/// micro-segmentation loop's.
enum Datapath {
    Overlay(Sockets),
    Mseg(Box<msegloop::MsegLoop>),
}

/// Saves the firewall's connection table for the next start.
async fn save_flows(shared: &Shared, state_dir: &Path) {
    match api::query(shared, FwQuery::Save).await {
        Ok(FwReply::Saved(flows)) => match persist::save_flows(state_dir, &flows) {
            Ok(()) => tracing::info!(flows = flows.len(), "connection table saved"),
            Err(e) => tracing::warn!("cannot save the connection table: {e}"),
        },
        Ok(_) => {}
        Err(e) => tracing::warn!("cannot save the connection table: {e}"),
    }
}

/// Saves the edge's NAT sessions for the next start (nothing off the edge).
async fn save_nat(shared: &Shared, state_dir: &Path) {
    match api::nat_query(shared, NatQuery::Save).await {
        Ok(NatReply::Saved(s)) => match persist::save_nat(state_dir, &s) {
            Ok(()) => tracing::info!(sessions = s.len(), "NAT sessions saved"),
            Err(e) => tracing::warn!("cannot save the NAT sessions: {e}"),
        },
        Ok(_) => {}
        Err(e) => tracing::warn!("cannot save the NAT sessions: {e}"),
    }
}

/// Why a SIGHUP reload was refused (the running config stays); its
/// `Display` is what `status` shows as the last reload.
#[derive(Debug, thiserror::Error)]
enum ReloadError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("[host] and [gateway] settings cannot change on reload; restart the agent")]
    HostChanged,
    #[error("the desired state comes from the gateway; nothing to reload")]
    FromGateway,
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error("switching between overlay and micro-segmentation mode needs a restart")]
    ModeChange,
}

/// Re-reads the config file (SIGHUP). Everything is checked before anything
/// changes; on error the running config stays and the reason is returned.
async fn reload(ctx: &ServeCtx<'_>, applier: &mut Applier<'_>) -> Result<String, ReloadError> {
    let new = AgentConfig::load(ctx.path)?;
    if new.host != ctx.cfg.host || new.gateway != ctx.cfg.gateway {
        return Err(ReloadError::HostChanged);
    }
    let Some(desired) = new.instance else {
        return Err(ReloadError::FromGateway);
    };
    match applier.apply(&desired).await? {
        ApplyOutcome::Swapped(msg) => Ok(msg),
        ApplyOutcome::NeedsRebuild => Err(ReloadError::ModeChange),
    }
}
