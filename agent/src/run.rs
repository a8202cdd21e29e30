//! `nsx-agent run`: the life of an agent. Validate everything first (an
//! invalid config or a missing NIC exits non-zero with the host untouched),
//! take the NIC, start the datapath thread and the local API, then wait for
//! signals: SIGHUP reloads (an invalid file keeps the running config and the
//! reason is logged and reported), SIGTERM/SIGINT restore the host and exit.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use datapath::{LocalHost, Tables};
use tokio::signal::unix::{SignalKind, signal};

use crate::api::{self, OverlayStatus, ReloadStatus, Shared, Status};
use crate::config::AgentConfig;
use crate::dataloop::{self, Ctl, Snapshot, Sockets};
use crate::host::{self, NicInfo, PortPlan};
use crate::io::{self, Waker};
use crate::underlay::{self, UdpPool};

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
        rt.block_on(host::teardown(&cfg.host))
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

fn local_host(cfg: &AgentConfig, nic: &NicInfo) -> Result<LocalHost, StartError> {
    let underlay_ip =
        nic.addrs
            .first()
            .map(|a| a.ip)
            .ok_or_else(|| StartError::NoUnderlayAddress {
                nic: nic.name.clone(),
            })?;
    let mtu = nic
        .mtu
        .saturating_sub(host::OVERLAY_OVERHEAD)
        .min(u32::from(u16::MAX));
    let port_mac = control::MacAddr(nic.mac);
    let _ = cfg;
    Ok(LocalHost {
        underlay_ip,
        port_mac,
        overlay_mtu: mtu as u16,
        kernel_udp: true,
    })
}

fn port_plan(cfg: &AgentConfig) -> Option<PortPlan> {
    let (ip, prefix_len, gateway) = cfg.port_plan()?;
    let mac = cfg.instance.port.as_ref().and_then(|p| p.mac).map(|m| m.0);
    Some(PortPlan {
        mac,
        ip,
        prefix_len,
        gateway,
        tx_offload: cfg.host.tx_offload,
    })
}

fn overlay_status(cfg: &AgentConfig, tables: &Tables, overlay_mtu: u32) -> Option<OverlayStatus> {
    let port = tables.port?;
    Some(OverlayStatus {
        netns: cfg.host.netns.clone(),
        interface: cfg.host.overlay_if.clone(),
        mtu: overlay_mtu,
        ip: port.ip,
        mac: port.mac.to_string(),
        switch: tables.switches[usize::from(port.switch)].name.clone(),
    })
}

async fn run_async(path: &Path) -> Result<(), StartError> {
    let started = Instant::now();
    // 1. Everything that can be checked without changing the host.
    let cfg = AgentConfig::load(path)?;
    let nic = host::inspect_nic(&cfg.host).await?;
    let lh = local_host(&cfg, &nic)?;
    let tables = Arc::new(Tables::build(&cfg.instance, lh)?);
    let plan = port_plan(&cfg);

    // 2. Take the NIC.
    let plumbed = host::setup(&cfg.host, plan.as_ref()).await?;
    tracing::info!(
        nic = %cfg.host.nic, underlay = %plumbed.underlay_ip, overlay_mtu = plumbed.overlay_mtu,
        mode = if plan.is_some() { "overlay" } else { "micro-segmentation" },
        "host plumbing ready"
    );
    let result = serve(path, cfg.clone(), plumbed, tables, plan, started).await;
    // 3. Give the host back, whatever happened.
    if let Err(e) = host::teardown(&cfg.host).await {
        tracing::error!(error = %e, "restoring the host failed; run `nsx-agent cleanup` to retry");
        return Err(e.into());
    }
    tracing::info!(nic = %cfg.host.nic, "host restored");
    result
}

async fn serve(
    path: &Path,
    cfg: AgentConfig,
    plumbed: host::Plumbed,
    tables: Arc<Tables>,
    mut plan: Option<PortPlan>,
    started: Instant,
) -> Result<(), StartError> {
    let io_err = |what: &str| {
        let what = what.to_string();
        move |source| StartError::Io { what, source }
    };
    let underlay_ip: Ipv4Addr = plumbed.underlay_ip;
    let geneve_rx = io::udp_socket(underlay_ip, geneve::GENEVE_PORT).map_err(io_err(&format!(
        "UDP socket {underlay_ip}:{}",
        geneve::GENEVE_PORT
    )))?;
    underlay::enable_gro(&geneve_rx).map_err(io_err("UDP_GRO on the Geneve socket"))?;
    let pool = UdpPool::bind(underlay_ip)
        .map_err(io_err(&format!("UDP source-port pool on {underlay_ip}")))?;
    tracing::debug!(ports = ?pool.ports(), "Geneve source ports bound");
    let sockets = Sockets {
        port: match plan {
            Some(_) => Some(
                io::packet_socket(plumbed.peer_ifindex)
                    .map_err(io_err("AF_PACKET socket on the overlay peer"))?,
            ),
            None => None,
        },
        geneve_rx,
        underlay_tx: pool,
    };
    let listener = api::bind(&cfg.host.api_socket).map_err(io_err(&format!(
        "API socket {}",
        cfg.host.api_socket.display()
    )))?;

    let snapshot = Arc::new(Mutex::new(Snapshot::default()));
    let shared = Arc::new(Shared {
        started,
        snapshot: Arc::clone(&snapshot),
        status: Mutex::new(Status {
            config_path: path.display().to_string(),
            mode: if plan.is_some() {
                "overlay"
            } else {
                "micro-segmentation"
            },
            nic: cfg.host.nic.clone(),
            underlay_ip,
            underlay_mtu: plumbed.nic.mtu,
            overlay: overlay_status(&cfg, &tables, plumbed.overlay_mtu),
            last_reload: None,
            config: cfg.clone(),
            tables: Arc::clone(&tables),
        }),
    });

    // Merging received TCP segments needs TSO on the overlay veth.
    let coalesce = cfg.host.tx_offload;
    let waker = Arc::new(Waker::new().map_err(io_err("eventfd"))?);
    let (ctl_tx, ctl_rx) = channel();
    let dp = {
        let (waker, snapshot, tables) = (
            Arc::clone(&waker),
            Arc::clone(&snapshot),
            Arc::clone(&tables),
        );
        std::thread::Builder::new()
            .name("nsx-datapath".into())
            .spawn(move || {
                dataloop::run(tables, sockets, ctl_rx, waker, snapshot, started, coalesce)
            })
            .map_err(io_err("datapath thread"))?
    };
    let api_task = tokio::spawn(api::serve(listener, Arc::clone(&shared)));
    tracing::info!(socket = %cfg.host.api_socket.display(), version = tables.version, "datapath running");

    let mut term = signal(SignalKind::terminate()).map_err(io_err("SIGTERM handler"))?;
    let mut int = signal(SignalKind::interrupt()).map_err(io_err("SIGINT handler"))?;
    let mut hup = signal(SignalKind::hangup()).map_err(io_err("SIGHUP handler"))?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                let status = reload(path, &cfg, &plumbed, &mut plan, &ctl_tx, &waker, &shared).await;
                match &status {
                    Ok(msg) => tracing::info!("{msg}"),
                    Err(msg) => tracing::warn!("reload refused, keeping the running config: {msg}"),
                }
                if let Ok(mut st) = shared.status.lock() {
                    st.last_reload = Some(match status {
                        Ok(m) => ReloadStatus::new(true, m),
                        Err(m) => ReloadStatus::new(false, m),
                    });
                }
            }
        }
    }
    tracing::info!("stopping");
    api_task.abort();
    let _ = ctl_tx.send(Ctl::Stop);
    waker.wake();
    let _ = tokio::task::spawn_blocking(move || dp.join()).await;
    let _ = std::fs::remove_file(&cfg.host.api_socket);
    Ok(())
}

/// Re-reads the config file. Everything is checked before anything changes;
/// on error the running config stays and the reason is returned.
async fn reload(
    path: &Path,
    running: &AgentConfig,
    plumbed: &host::Plumbed,
    plan: &mut Option<PortPlan>,
    ctl: &Sender<Ctl>,
    waker: &Waker,
    shared: &Shared,
) -> Result<String, String> {
    let new = AgentConfig::load(path).map_err(|e| e.to_string())?;
    if new.host != running.host {
        return Err("[host] settings cannot change on reload; restart the agent".into());
    }
    let new_plan = port_plan(&new);
    if new_plan.is_some() != plan.is_some() {
        return Err("switching between overlay and micro-segmentation mode needs a restart".into());
    }
    let lh = local_host(&new, &plumbed.nic).map_err(|e| e.to_string())?;
    let tables = Arc::new(Tables::build(&new.instance, lh).map_err(|e| e.to_string())?);
    if new_plan != *plan {
        host::update_port(&new.host, plan.as_ref(), new_plan.as_ref())
            .await
            .map_err(|e| e.to_string())?;
        *plan = new_plan;
    }
    ctl.send(Ctl::Tables(Arc::clone(&tables)))
        .map_err(|_| "datapath thread is gone".to_string())?;
    waker.wake();
    let version = tables.version;
    if let Ok(mut st) = shared.status.lock() {
        st.overlay = overlay_status(&new, &tables, plumbed.overlay_mtu);
        st.config = new;
        st.tables = tables;
    }
    Ok(format!("config version {version} applied"))
}
