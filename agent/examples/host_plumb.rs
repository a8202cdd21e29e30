//! Test driver for the agent's `host` module (used by
//! `tests/host_plumbing.sh`): runs `inspect`, `setup`, `update` and
//! `teardown` with a `HostSettings` built from the command line, so the host
//! plumbing can be exercised without the agent's `main`.
//!
//! ```text
//! host_plumb inspect  --nic eth0
//! host_plumb setup    --state-dir DIR [--nic eth0] [--netns NS] [--port IP/LEN,GW[,MAC]]
//!                     [--tx-offload on|off]   (default off)
//!                     [--filtered on|off] [--fw-if IF] [--fw-peer IF]
//! host_plumb update   --state-dir DIR [--netns NS] --old-port IP/LEN,GW --port IP/LEN,GW
//! host_plumb teardown --state-dir DIR [--nic eth0]
//! host_plumb nft      --nic eth0      (prints whether the NIC's nftables block exists)
//! host_plumb nft-del  --nic eth0      (deletes it, to test the locked port alone)
//! ```
//! Without `--port`, setup runs in micro-segmentation mode (bridge only);
//! `--filtered on` builds the filtered micro-segmentation plumbing instead.

use agent::host::{self, HostError, nft};

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;

use agent::config::HostSettings;
use host::{Mode, PortPlan};

fn usage() -> ExitCode {
    eprintln!(
        "usage: host_plumb inspect|setup|update|teardown [--state-dir DIR] [--nic IF] [--netns NS] \
         [--vtep IF] [--overlay-if IF] [--peer IF] [--port IP/LEN,GW[,MAC]] [--old-port IP/LEN,GW[,MAC]] \
         [--tx-offload on|off] [--filtered on|off] [--fw-if IF] [--fw-peer IF]"
    );
    ExitCode::from(2)
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let parts: Vec<u8> = s
        .split(':')
        .map(|p| u8::from_str_radix(p, 16).ok())
        .collect::<Option<_>>()?;
    <[u8; 6]>::try_from(parts.as_slice()).ok()
}

fn parse_port(s: &str, tx_offload: bool) -> Option<PortPlan> {
    let mut it = s.split(',');
    let (ip, len) = it.next()?.split_once('/')?;
    let gateway: Ipv4Addr = it.next()?.parse().ok()?;
    let mac = match it.next() {
        Some(m) => Some(parse_mac(m)?),
        None => None,
    };
    Some(PortPlan {
        mac,
        ip: ip.parse().ok()?,
        prefix_len: len.parse().ok().filter(|l| *l <= 32)?,
        gateway,
        tx_offload,
        dhcp: false,
    })
}

fn mac_str(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();

    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first().cloned() else {
        return usage();
    };
    let mut s = HostSettings::default();
    let mut port_arg = None;
    let mut old_port_arg = None;
    let mut tx_offload = false;
    let mut filtered = false;
    let mut it = args[1..].iter();
    while let Some(flag) = it.next() {
        let Some(val) = it.next() else {
            return usage();
        };
        match flag.as_str() {
            "--state-dir" => s.state_dir = PathBuf::from(val),
            "--nic" => s.nic = val.clone(),
            "--netns" => s.netns = val.clone(),
            "--vtep" => s.vtep_if = val.clone(),
            "--overlay-if" => s.overlay_if = val.clone(),
            "--peer" => s.overlay_peer = val.clone(),
            "--port" => port_arg = Some(val.clone()),
            "--old-port" => old_port_arg = Some(val.clone()),
            "--tx-offload" => match val.as_str() {
                "on" => tx_offload = true,
                "off" => tx_offload = false,
                _ => return usage(),
            },
            "--filtered" => match val.as_str() {
                "on" => filtered = true,
                "off" => filtered = false,
                _ => return usage(),
            },
            "--fw-if" => s.fw_if = val.clone(),
            "--fw-peer" => s.fw_peer = val.clone(),
            _ => return usage(),
        }
    }
    s.tx_offload = tx_offload;
    let mut plans = [None, None];
    for (slot, arg) in plans.iter_mut().zip([port_arg, old_port_arg]) {
        if let Some(val) = arg {
            let Some(p) = parse_port(&val, tx_offload) else {
                eprintln!("bad port plan {val:?} (want IP/LEN,GW[,MAC])");
                return usage();
            };
            *slot = Some(p);
        }
    }
    let [port, old_port] = plans;

    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mode = match (&port, filtered) {
        (Some(p), false) => Mode::Overlay(p),
        (None, false) => Mode::Microseg,
        (None, true) => Mode::MicrosegFiltered,
        (Some(_), true) => {
            eprintln!("--port and --filtered on exclude each other");
            return usage();
        }
    };
    let res: Result<(), HostError> = rt.block_on(async {
        match cmd.as_str() {
            "inspect" => {
                let nic = host::inspect_nic(&s).await?;
                match serde_json::to_string_pretty(&nic) {
                    Ok(j) => println!("{j}"),
                    Err(e) => eprintln!("cannot print: {e}"),
                }
            }
            "setup" => {
                let p = host::setup(&s, mode).await?;
                println!(
                    "nic={} underlay_ip={} overlay_mtu={} port_mac={} peer_ifindex={} addrs={} routes={} \
                     nic_ifindex={} fw_peer_ifindex={}",
                    p.nic.name,
                    p.underlay_ip,
                    p.overlay_mtu,
                    mac_str(&p.port_mac),
                    p.peer_ifindex,
                    p.nic.addrs.len(),
                    p.nic.routes.len(),
                    p.nic_ifindex,
                    p.fw_peer_ifindex
                );
            }
            "update" => host::update_port(&s, old_port.as_ref(), port.as_ref()).await?,
            "teardown" => host::teardown(&s).await?,
            "nft" => {
                let t = nft::table_name(&s.nic);
                println!("table={t} chain={}", nft::nic_block_exists(&t)?);
            }
            "nft-del" => nft::delete_table(&nft::table_name(&s.nic))?,
            other => {
                eprintln!("unknown command {other:?}");
                return Ok(());
            }
        }
        Ok(())
    });
    match res {
        Ok(())
            if ["inspect", "setup", "update", "teardown", "nft", "nft-del"]
                .contains(&cmd.as_str()) =>
        {
            ExitCode::SUCCESS
        }
        Ok(()) => usage(),
        Err(e) => {
            // HostError's message already includes its source.
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
