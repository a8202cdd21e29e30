//! Host plumbing: takes the instance NIC over and builds the overlay side.
//!
//! Underlay: the NIC is enslaved to a Linux bridge `vtep_if` that takes the
//! NIC's MAC, MTU, IPv4 addresses and IPv4 routes, and its IPv6 addresses,
//! routes and IPv6 settings (`ipv6`: SLAAC and RA-learned ones included),
//! so ordinary underlay traffic keeps working in the kernel (the agent's
//! Geneve sockets bind to the underlay IPv4 address, which now lives on the
//! bridge).
//!
//! What else is built depends on the [`Mode`]:
//!
//! * Overlay (with a port): a netns `netns` holds `overlay_if`, one end of a
//!   veth pair whose other end `overlay_peer` stays in the agent's netns for
//!   AF_PACKET I/O. `overlay_if` gets the port MAC/IP, MTU = NIC MTU -
//!   [`OVERLAY_OVERHEAD`], a default route via the switch gateway, no IPv6
//!   and no TX checksum/TSO/GSO offload.
//! * Micro-segmentation: nothing else; the kernel bridges NIC <-> host.
//! * Filtered micro-segmentation: the host's traffic goes through the
//!   agent's firewall. A veth `fw_if` (bridge port) <-> `fw_peer` (the
//!   agent's end) is the only path between the host stack and the agent;
//!   the NIC stays a bridge port (so save/restore/adopt work unchanged) but
//!   nothing passes between the two: the port neither learns nor floods
//!   (`learning`, `flood`, `mcast_flood`, `bcast_flood` off), an nf_tables
//!   `bridge` table drops every frame entering the bridge from the NIC and
//!   every frame the bridge would send to it (see `nft`: the bridge floods
//!   the host's own broadcasts to all ports whatever the flags say), and on
//!   Linux 5.18+ the port is also `locked` (no FDB entry on it = every
//!   frame from it dropped). The agent's AF_PACKET tap on the NIC still
//!   sees every frame (taps run before the bridge) and writes what passes
//!   to `fw_peer`; what the host sends arrives on `fw_peer` and the agent
//!   writes it to the NIC (its sends do not pass the bridge).
//!
//! Safety net: the NIC's original configuration is saved to
//! `state_dir/host-state.json` before anything changes; [`teardown`] restores
//! the host from that file alone, and [`setup`] first recovers from a file a
//! killed run left behind. Any failing setup step rolls back.
//!
//! Overlay mode's underlay ssh (`crate::host::sshd`) records its sshd listeners
//! and its nf_tables table in the same state file ([`record_ssh`]), so
//! [`teardown`] (and so `nsx-agent cleanup` after a crash) stops and
//! deletes them first; [`spawn_in_netns`] starts a process inside the
//! overlay namespace.
//!
//! This file owns the public API, the records and the orchestration; see
//! `netlink` (rtnetlink helpers), `ipv6` (the NIC's IPv6: records, sysctls,
//! router solicitations), `dhcp` (the NIC's DHCP client, moved to the
//! bridge and back), `dhcpcd_mgr` (dhcpcd's manager mode told to run DHCP
//! on the bridge instead of the NIC, and back), `networkd` (systemd-networkd
//! told to manage the bridge instead of the NIC, and back), `netns` (namespaces), `ethtool` (offload
//! ioctl), `nft` (the NIC's ingress drop chain, the underlay ssh block),
//! `procs` (recorded processes) and `state` (the state file).

mod dhcp;
mod dhcpcd_mgr;
mod ethtool;
mod ipv6;
mod netlink;
mod netns;
mod networkd;
pub mod nft;
mod portdhcp;
pub mod probe;
mod procs;
pub mod sshd;
mod state;
pub mod uplink;

pub use dhcp::{Client as DhcpClient, DhcpRec};
pub use dhcpcd_mgr::DhcpcdMgrRec;
pub use ipv6::{Addr6Rec, Route6Rec};
pub use netlink::{AddrRec, RouteRec};
pub use networkd::NetworkdRec;
pub use state::{ProcRec, SshState};

use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use netlink_packet_route::link::{BridgeStpState, InfoKind};
use rtnetlink::{LinkBridge, LinkBridgePort, LinkMessageBuilder, LinkUnspec, LinkVeth};
use serde::{Deserialize, Serialize};

use crate::config::HostSettings;
use netlink::{Family, Link, Nl, RTN_UNICAST};
use state::{FwState, HostState};

/// Underlay MTU minus overlay MTU: [`geneve::outer::MTU_OVERHEAD`] (outer
/// IPv4 20 + UDP 8 + Geneve 8 + VMware option 8 + inner Ethernet 14 = 58),
/// as the `u32` netlink uses for MTUs.
#[allow(clippy::cast_possible_truncation)] // 58 fits; checked below
pub const OVERLAY_OVERHEAD: u32 = geneve::outer::MTU_OVERHEAD as u32;
const _: () = assert!(OVERLAY_OVERHEAD as usize == geneve::outer::MTU_OVERHEAD);

/// MTU of the agent's end of the overlay veth (see `build_overlay`).
const PEER_MTU: u32 = 65535;
/// Smallest MTU IPv4 allows; the overlay MTU must not go below it.
const MIN_IPV4_MTU: u32 = 68;
/// `RTPROT_BOOT`, what `ip route add` uses.
const RTPROT_BOOT: u8 = 3;
/// `RT_TABLE_MAIN`.
const RT_TABLE_MAIN: u32 = 254;
/// `RTPROT_DHCP`: routes a DHCP client (dhcpcd) installed.
const RTPROT_DHCP: u8 = 16;
/// Lifetime floor (seconds) for restored addresses (and IPv6 routes) whose
/// recorded lifetime ran out while the agent held them: gives the DHCP
/// client time to renew, or the next RA time to refresh them, instead of
/// the address vanishing at once.
const MIN_RESTORED_LIFETIME: u32 = 30;

/// The NIC as found before the agent touched it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicInfo {
    pub name: String,
    pub ifindex: u32,
    pub mac: [u8; 6],
    pub mtu: u32,
    pub was_up: bool,
    /// IPv4 addresses in kernel order (primary first).
    pub addrs: Vec<AddrRec>,
    /// IPv4 routes through the NIC, all tables but `local`.
    pub routes: Vec<RouteRec>,
    /// IPv6 addresses but link-local ones (see `ipv6`). Absent in files
    /// of agents before IPv6 support: nothing to move then.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addrs6: Vec<Addr6Rec>,
    /// IPv6 routes through the NIC but the kernel's link-local ones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes6: Vec<Route6Rec>,
}

/// The overlay address plan of the local port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortPlan {
    /// Port MAC; `None` = the NIC's MAC.
    pub mac: Option<[u8; 6]>,
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
    /// Keep TX checksum/TSO offload on the overlay interface (see `HostSettings::tx_offload`).
    pub tx_offload: bool,
    /// The port's address and default route come from a DHCP client the
    /// agent runs in the overlay namespace (`HostSettings::port_dhcp`,
    /// `host::portdhcp`), not from the agent.
    pub dhcp: bool,
}

/// What [`setup`] builds besides the bridge (see the module docs).
/// `Option<&PortPlan>` converts: `Some` = overlay, `None` = unfiltered
/// micro-segmentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode<'a> {
    /// The overlay port: netns, veth, port address.
    Overlay(&'a PortPlan),
    /// Micro-segmentation, unfiltered: the kernel bridges NIC <-> host.
    Microseg,
    /// Micro-segmentation through the agent's firewall: the NIC is cut off
    /// from the bridge and the `fw_if`/`fw_peer` veth carries the host's
    /// traffic to and from the agent.
    MicrosegFiltered,
}

impl<'a> From<Option<&'a PortPlan>> for Mode<'a> {
    fn from(port: Option<&'a PortPlan>) -> Mode<'a> {
        port.map_or(Mode::Microseg, Mode::Overlay)
    }
}

impl<'a> Mode<'a> {
    pub fn port(self) -> Option<&'a PortPlan> {
        match self {
            Mode::Overlay(p) => Some(p),
            Mode::Microseg | Mode::MicrosegFiltered => None,
        }
    }

    pub fn filtered(self) -> bool {
        self == Mode::MicrosegFiltered
    }
}

/// What [`setup`] built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plumbed {
    /// The NIC as it was before setup.
    pub nic: NicInfo,
    /// Primary IPv4 address of the NIC, now on `vtep_if`.
    pub underlay_ip: Ipv4Addr,
    pub overlay_mtu: u32,
    pub port_mac: [u8; 6],
    /// Ifindex of `overlay_peer` (0 in micro-segmentation modes).
    pub peer_ifindex: u32,
    /// Current ifindex of the NIC (for the firewall's AF_PACKET tap).
    pub nic_ifindex: u32,
    /// Ifindex of `fw_peer` (0 unless filtered micro-segmentation).
    pub fw_peer_ifindex: u32,
}

/// Why a host plumbing step failed. Every variant names the step and the
/// interface/namespace/path involved.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("NIC {nic:?} not found")]
    NicNotFound { nic: String },
    #[error("{step}: {target}: {reason}")]
    Unusable {
        step: &'static str,
        target: String,
        reason: String,
    },
    #[error("{step}: {target} does not exist")]
    Missing { step: &'static str, target: String },
    #[error("{step}: {target}: {source}")]
    Netlink {
        step: &'static str,
        target: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("{step}: {target}: {source}")]
    Io {
        step: &'static str,
        target: String,
        #[source]
        source: std::io::Error,
    },
    #[error("host state file {path}: {reason}")]
    State { path: PathBuf, reason: String },
    #[error("{error}; rolling back also failed: {rollback}")]
    RollbackFailed {
        error: Box<HostError>,
        rollback: Box<HostError>,
    },
}

/// Reads the NIC without changing anything (used for validation and to fill
/// the port MAC). If a killed run left a state file for this NIC, the NIC
/// is still ours (its address sits on the bridge), so the saved original is
/// what describes it.
pub async fn inspect_nic(settings: &HostSettings) -> Result<NicInfo, HostError> {
    if let Some(st) = state::load(&settings.state_dir)?
        && st.nic.name == settings.nic
    {
        return Ok(st.nic);
    }
    let nl = Nl::connect("main")?;
    read_nic(&nl, &settings.nic).await
}

/// Takes the NIC. Recovers first from a state file a killed run left
/// behind, saves the NIC's original config before changing anything, then
/// builds the bridge and what `mode` needs (netns/veth with a port; the
/// firewall veth and the NIC's ingress block when filtered). A failing step
/// rolls back. `mode` may be an `Option<&PortPlan>` (overlay or unfiltered
/// micro-segmentation) or a [`Mode`].
pub async fn setup<'a>(
    settings: &HostSettings,
    mode: impl Into<Mode<'a>>,
) -> Result<Plumbed, HostError> {
    let mode = mode.into();
    let port = mode.port();
    state::lock(&settings.state_dir)?;
    let nl = Nl::connect("main")?;
    // A killed run's plumbing that is still intact is adopted as it is, so
    // the instance's sessions (and a process inside the overlay netns)
    // survive an agent crash or upgrade.
    if let Some(st) = state::load(&settings.state_dir)? {
        match adopt(&nl, settings, &st, mode).await {
            Ok(Some(plumbed)) => {
                tracing::info!(nic = %st.nic.name, netns = ?st.netns, "adopted the previous run's plumbing");
                return Ok(plumbed);
            }
            Ok(None) => tracing::info!("previous run's plumbing is not intact; rebuilding"),
            Err(error) => {
                tracing::warn!(%error, "cannot adopt the previous run's plumbing; rebuilding")
            }
        }
    }
    // Leftovers of a previous run (state file, or our objects without one).
    teardown_with(&nl, settings).await?;

    let link = nl
        .link(&settings.nic)
        .await?
        .ok_or_else(|| HostError::NicNotFound {
            nic: settings.nic.clone(),
        })?;
    if let Some(m) = link.master {
        return Err(unusable(
            "check NIC",
            &settings.nic,
            format!("already enslaved to ifindex {m}"),
        ));
    }
    let nic = read_nic(&nl, &settings.nic).await?;
    let underlay_ip = nic
        .addrs
        .iter()
        .find(|a| a.scope == 0)
        .map(|a| a.ip)
        .ok_or_else(|| unusable("check NIC", &nic.name, "has no global IPv4 address".into()))?;
    let overlay_mtu = overlay_mtu(nic.mtu).ok_or_else(|| {
        unusable(
            "check NIC",
            &nic.name,
            format!("MTU {} is too small for the overlay", nic.mtu),
        )
    })?;
    let port_mac = port.and_then(|p| p.mac).unwrap_or(nic.mac);
    let fw_names = [&settings.fw_if, &settings.fw_peer];
    for name in [&settings.vtep_if, &settings.overlay_peer]
        .into_iter()
        .chain(port.map(|_| &settings.overlay_if))
        .chain(fw_names.into_iter().filter(|_| mode.filtered()))
    {
        if nl.link(name).await?.is_some() {
            return Err(unusable(
                "check names",
                name,
                "interface already exists and is not ours".into(),
            ));
        }
    }
    if port.is_some() && netns::handle_exists(&settings.netns) {
        return Err(unusable(
            "check names",
            &format!("netns {}", settings.netns),
            "namespace already exists and is not ours".into(),
        ));
    }

    let fw = mode.filtered().then(|| FwState {
        fw_if: settings.fw_if.clone(),
        fw_peer: settings.fw_peer.clone(),
        nft_table: nft::table_name(&nic.name),
    });
    let mut st = HostState::new(
        nic.clone(),
        &settings.vtep_if,
        port.map(|_| settings.netns.as_str()),
        &settings.overlay_if,
        &settings.overlay_peer,
    )
    .with_fw(fw);
    // The NIC's DHCP client: recorded with the NIC, stopped before its
    // address moves, started for the bridge once it is there.
    let links = nl.link_names().await?;
    st.dhcp = dhcp::find(&nic.name, &settings.vtep_if, &links);
    // dhcpcd's manager: recorded, told to stop the NIC (keeping its
    // address) before the move and to run the bridge after it.
    let nic_dhcp = nic.routes.iter().any(|r| r.protocol == RTPROT_DHCP);
    st.dhcpcd_manager = if st.dhcp.is_empty() {
        dhcpcd_mgr::find(&nic.name, &links, nic_dhcp)
    } else {
        None
    };
    // systemd-networkd: recorded too, told once the bridge holds the NIC.
    let networkd = networkd::find(&nic.name, nic.ifindex, &settings.vtep_if);
    st.networkd = networkd.as_ref().map(|p| p.rec.clone());
    state::save(&settings.state_dir, &st)?;
    tracing::info!(nic = %nic.name, state = %state::path(&settings.state_dir).display(), "saved NIC config");
    if !st.dhcp.is_empty() {
        dhcp::stop_for(&nic.name, &links).await;
    }
    if let Some(m) = &st.dhcpcd_manager {
        dhcpcd_mgr::release(m, &nic.name).await;
    }

    match build(&nl, &st, port, port_mac, overlay_mtu).await {
        Ok((peer_ifindex, fw_peer_ifindex)) => {
            if let Some(plan) = &networkd {
                networkd::hand_over(plan).await;
            }
            start_clients(&nl, &st, &settings.state_dir, port).await?;
            tracing::info!(
                nic = %nic.name, bridge = %st.vtep_if, %underlay_ip, overlay_mtu,
                netns = ?st.netns, filtered = st.fw.is_some(), "host plumbing ready"
            );
            Ok(Plumbed {
                nic_ifindex: nic.ifindex,
                nic,
                underlay_ip,
                overlay_mtu,
                port_mac,
                peer_ifindex,
                fw_peer_ifindex,
            })
        }
        Err(error) => {
            tracing::error!(%error, "host setup failed, rolling back");
            let rb = async {
                restore(&nl, &st).await?;
                state::remove(&settings.state_dir)
            };
            match rb.await {
                Ok(()) => Err(error),
                Err(rollback) => Err(HostError::RollbackFailed {
                    error: Box::new(error),
                    rollback: Box::new(rollback),
                }),
            }
        }
    }
}

/// The agent's veths in its own network namespace (the overlay port's
/// peer, the firewall pair): a dhcpcd manager is told to leave them alone.
fn own_veths(st: &HostState) -> Vec<&str> {
    let mut v = Vec::new();
    if st.netns.is_some() {
        v.push(st.overlay_peer.as_str());
    }
    if let Some(fw) = &st.fw {
        v.push(fw.fw_if.as_str());
        v.push(fw.fw_peer.as_str());
    }
    v
}

/// Takes over a previous run's plumbing if it matches `settings` and
/// `mode` and is intact (bridge holding the NIC and its address; with a
/// port: the netns, both veth ends; filtered: the firewall veth on the
/// bridge). The port is then brought to `port` (MAC, MTU, address, default
/// route); filtered, the NIC's block is applied again. `None`: not intact,
/// rebuild.
async fn adopt(
    nl: &Nl,
    s: &HostSettings,
    st: &HostState,
    mode: Mode<'_>,
) -> Result<Option<Plumbed>, HostError> {
    let port = mode.port();
    let want_fw = mode.filtered().then(|| FwState {
        fw_if: s.fw_if.clone(),
        fw_peer: s.fw_peer.clone(),
        nft_table: nft::table_name(&s.nic),
    });
    let names_match = st.nic.name == s.nic
        && st.vtep_if == s.vtep_if
        && st.overlay_if == s.overlay_if
        && st.overlay_peer == s.overlay_peer
        && st.netns.as_deref() == port.map(|_| s.netns.as_str())
        && st.fw == want_fw;
    if !names_match {
        return Ok(None);
    }
    let (Some(bridge), Some(nic)) = (nl.link(&s.vtep_if).await?, nl.link(&s.nic).await?) else {
        return Ok(None);
    };
    if bridge.kind != Some(InfoKind::Bridge)
        || nic.master != Some(bridge.index)
        || bridge.mac != st.nic.mac
    {
        return Ok(None);
    }
    let Some(underlay_ip) = st.nic.addrs.iter().find(|a| a.scope == 0).map(|a| a.ip) else {
        return Ok(None);
    };
    if !nl
        .addrs::<Ipv4Addr>(&bridge.name, bridge.index)
        .await?
        .iter()
        .any(|a| a.ip == underlay_ip)
    {
        return Ok(None);
    }
    let Some(overlay_mtu) = overlay_mtu(st.nic.mtu) else {
        return Ok(None);
    };
    let port_mac = port.and_then(|p| p.mac).unwrap_or(st.nic.mac);
    let mut fw_peer_ifindex = 0;
    if let Some(fw) = &st.fw {
        let (Some(fw_if), Some(fw_peer)) = (nl.link(&fw.fw_if).await?, nl.link(&fw.fw_peer).await?)
        else {
            return Ok(None);
        };
        if fw_if.kind != Some(InfoKind::Veth)
            || fw_peer.kind != Some(InfoKind::Veth)
            || fw_if.master != Some(bridge.index)
        {
            return Ok(None);
        }
        for l in [&fw_if, &fw_peer] {
            if !l.up {
                let msg = LinkUnspec::new_with_index(l.index).up().build();
                nl.set_link("adopt firewall veth", &l.name, msg).await?;
            }
        }
        block_nic(nl, &nic, &fw.nft_table).await?;
        fw_peer_ifindex = fw_peer.index;
    }
    let mut peer_ifindex = 0;
    if let Some(plan) = port {
        let Some(peer) = nl.link(&s.overlay_peer).await? else {
            return Ok(None);
        };
        if !netns::handle_exists(&s.netns) {
            return Ok(None);
        }
        peer_ifindex = peer.index;
        let (ifname, plan) = (s.overlay_if.clone(), plan.clone());
        let intact = netns::run_in(&s.netns, move |nl| async move {
            let Some(ov) = nl.link(&ifname).await? else {
                return Ok(false);
            };
            let msg = LinkUnspec::new_with_index(ov.index)
                .address(port_mac.to_vec())
                .mtu(overlay_mtu)
                .up()
                .build();
            nl.set_link("adopt overlay interface", &ifname, msg).await?;
            if plan.dhcp {
                // The DHCP client keeps the address (started again below if
                // it died).
                return Ok(true);
            }
            let want = port_addr(&plan);
            for a in nl.addrs::<Ipv4Addr>(&ifname, ov.index).await? {
                if (a.ip, a.prefix_len) != (want.ip, want.prefix_len) {
                    nl.del_addr(&ifname, ov.index, &a).await?;
                }
            }
            nl.add_addr(&ifname, ov.index, &want, None).await?;
            nl.add_route(&ifname, ov.index, &default_route(plan.gateway))
                .await?;
            Ok(true)
        })
        .await?;
        if !intact {
            return Ok(None);
        }
    }
    if let Some(m) = &st.dhcpcd_manager {
        // A manager restarted meanwhile runs the NIC (a bridge port) again.
        dhcpcd_mgr::release(m, &st.nic.name).await;
    }
    // The previous run's clients, if they died meanwhile.
    start_clients(nl, st, &s.state_dir, mode.port()).await?;
    Ok(Some(Plumbed {
        nic: st.nic.clone(),
        underlay_ip,
        overlay_mtu,
        port_mac,
        peer_ifindex,
        nic_ifindex: nic.index,
        fw_peer_ifindex,
    }))
}

/// The DHCP clients that run while the agent holds the NIC (setup, and
/// adopt again): the port's own (`port_dhcp`), the NIC's moved to the
/// bridge, and a dhcpcd manager told to run the bridge and leave the
/// agent's veths. Each starts only what is not running already.
async fn start_clients(
    nl: &Nl,
    st: &HostState,
    state_dir: &Path,
    port: Option<&PortPlan>,
) -> Result<(), HostError> {
    if let (Some(ns), Some(p)) = (&st.netns, port)
        && p.dhcp
    {
        portdhcp::ensure(ns, &st.overlay_if, state_dir);
    }
    if let Some(m) = &st.dhcpcd_manager {
        dhcpcd_mgr::take(m, &st.vtep_if).await;
        for name in own_veths(st) {
            dhcpcd_mgr::leave(m, name).await;
        }
    }
    if !st.dhcp.is_empty() {
        dhcp::start(
            &st.dhcp,
            dhcp::Target::Bridge,
            &st.vtep_if,
            &nl.link_names().await?,
        );
    }
    Ok(())
}

/// Changes the overlay address/default route (and MAC) on `overlay_if`
/// (SIGHUP reload with a new port IP/gateway); no-op if equal. Switching
/// between micro-segmentation and overlay mode needs teardown + setup.
pub async fn update_port(
    settings: &HostSettings,
    old: Option<&PortPlan>,
    new: Option<&PortPlan>,
) -> Result<(), HostError> {
    let (old, new) = match (old, new) {
        (o, n) if o == n => return Ok(()),
        (Some(o), Some(n)) => (o.clone(), n.clone()),
        _ => {
            return Err(unusable(
                "update port",
                &format!("netns {}", settings.netns),
                "adding or removing the port needs a restart (teardown + setup)".into(),
            ));
        }
    };
    let nic_mac = match state::load(&settings.state_dir)? {
        Some(st) => st.nic.mac,
        None => inspect_nic(settings).await?.mac,
    };
    if new.dhcp {
        // The client asks again: the server NAKs the old address and
        // offers the new one.
        if (old.ip, old.prefix_len, old.gateway) != (new.ip, new.prefix_len, new.gateway) {
            portdhcp::stop(&settings.netns).await;
            let (ns, ifname) = (settings.netns.clone(), settings.overlay_if.clone());
            netns::run_in(&ns, move |nl| async move {
                let ov = nl.must_link("update port", &ifname).await?;
                for a in nl.addrs::<Ipv4Addr>(&ifname, ov.index).await? {
                    nl.del_addr(&ifname, ov.index, &a).await?;
                }
                Ok(())
            })
            .await?;
            portdhcp::ensure(&settings.netns, &settings.overlay_if, &settings.state_dir);
        }
        return Ok(());
    }
    let ifname = settings.overlay_if.clone();
    netns::run_in(&settings.netns, move |nl| async move {
        let ov = nl.must_link("update port", &ifname).await?;
        let mac = new.mac.unwrap_or(nic_mac);
        if ov.mac != mac {
            let msg = LinkUnspec::new_with_index(ov.index).address(mac.to_vec()).build();
            nl.set_link("set overlay MAC", &ifname, msg).await?;
        }
        let addr_changed = (old.ip, old.prefix_len) != (new.ip, new.prefix_len);
        if addr_changed {
            // In the same subnet the new address is a secondary: without
            // promotion, deleting the old (primary) one would take it and
            // the default route along.
            netns::promote_secondaries(&ifname)?;
            nl.add_addr(&ifname, ov.index, &port_addr(&new), None).await?;
            nl.del_addr(&ifname, ov.index, &port_addr(&old)).await?;
        }
        if addr_changed || old.gateway != new.gateway {
            nl.add_route(&ifname, ov.index, &default_route(new.gateway)).await?;
        }
        tracing::info!(ifname, ip = %new.ip, prefix_len = new.prefix_len, gateway = %new.gateway, "overlay port updated");
        Ok(())
    })
    .await
}

/// Restores the NIC exactly as recorded (addresses, routes, MTU, up state,
/// no master), deletes the netns (and so the veth) and the bridge, removes
/// the state file. Idempotent; works from the state file alone. Without a
/// state file it still cleans leftovers with the configured names (adopting
/// the bridge's addresses and routes back onto the NIC if it is enslaved).
/// Refuses while another live agent holds `state_dir/host.lock`.
pub async fn teardown(settings: &HostSettings) -> Result<(), HostError> {
    state::lock(&settings.state_dir)?;
    let nl = Nl::connect("main")?;
    teardown_with(&nl, settings).await
}

async fn teardown_with(nl: &Nl, settings: &HostSettings) -> Result<(), HostError> {
    match state::load(&settings.state_dir)? {
        Some(st) => {
            tracing::info!(nic = %st.nic.name, "restoring host from saved state");
            restore(nl, &st).await?;
            state::remove(&settings.state_dir)
        }
        None => match adopt_leftovers(nl, settings).await? {
            Some(st) => restore(nl, &st).await,
            None => {
                // The underlay ssh table is ours by name (idempotent).
                stop_ssh(None, &settings.nic).await;
                Ok(())
            }
        },
    }
}

/// How long a leftover sshd listener gets to exit on SIGTERM.
const SSHD_TERM_GRACE: Duration = Duration::from_secs(3);

/// Stops what overlay mode's underlay ssh left: the `inet` table (by the
/// name it has for `nic` and by its recorded name) and the recorded sshd
/// listeners that still run (checked by start time and command line).
/// Never fails the caller: a table that cannot be deleted is logged (it
/// names the bridge by ifindex, so it matches nothing once the bridge is
/// gone, and a running agent's supervisor deletes it again before it
/// starts its own sshd).
async fn stop_ssh(ssh: Option<&SshState>, nic: &str) {
    let default_table = nft::ssh_table_name(nic);
    let mut tables = vec![default_table.as_str()];
    if let Some(t) = ssh.and_then(|s| s.nft_table.as_deref())
        && t != default_table
    {
        tables.push(t);
    }
    // The block goes first: port 22 is never refused on the underlay
    // without the sshd that replaces it.
    for t in tables {
        if let Err(error) = nft::delete_ssh_table(t) {
            tracing::warn!(%error, "cannot delete the underlay ssh table");
        }
    }
    for p in ssh.map(|s| s.sshds.as_slice()).unwrap_or_default() {
        procs::stop(p, SSHD_TERM_GRACE).await;
    }
}

/// Watches the bridge's IPv4 address (the tunnel endpoint), which a DHCP
/// client moved there may change with a new lease.
#[derive(Debug)]
pub struct UnderlayWatch {
    nl: Nl,
    vtep_if: String,
}

impl UnderlayWatch {
    /// A watch on `settings.vtep_if` (a netlink socket of its own).
    pub fn new(settings: &HostSettings) -> Result<UnderlayWatch, HostError> {
        Ok(UnderlayWatch {
            nl: Nl::connect("main")?,
            vtep_if: settings.vtep_if.clone(),
        })
    }

    /// The bridge's primary global IPv4 address now (`None`: the bridge
    /// has none, e.g. between a DHCP client's flush and its new address).
    pub async fn primary_v4(&self) -> Result<Option<Ipv4Addr>, HostError> {
        let Some(br) = self.nl.link(&self.vtep_if).await? else {
            return Ok(None);
        };
        Ok(self
            .nl
            .addrs::<Ipv4Addr>(&br.name, br.index)
            .await?
            .iter()
            .find(|a| a.scope == 0)
            .map(|a| a.ip))
    }
}

/// The bridge's IPv4 addresses changed (a DHCP lease with a new address):
/// the record in the state file follows them, so an adopting run finds the
/// plumbing intact and a restore gives the NIC the address it has now.
/// Addresses and IPv4 routes are taken from the bridge (labels mapped
/// back to the NIC's), except dhcpcd's own routes (protocol dhcp, at a
/// metric derived from the bridge's ifindex) when dhcpcd moves with the
/// NIC: it installs its own for the NIC again. Returns the updated NIC.
pub async fn follow_underlay(settings: &HostSettings) -> Result<NicInfo, HostError> {
    let mut st = state::load(&settings.state_dir)?.ok_or_else(|| HostError::State {
        path: state::path(&settings.state_dir),
        reason: "no host state to update".into(),
    })?;
    let nl = Nl::connect("main")?;
    let br = nl.must_link("follow underlay", &st.vtep_if).await?;
    let mut addrs = nl.addrs::<Ipv4Addr>(&br.name, br.index).await?;
    for a in &mut addrs {
        a.label = relabel(&st.vtep_if, &st.nic.name, a.label.as_deref());
    }
    let dhcpcd =
        st.dhcp.iter().any(|d| d.client == DhcpClient::Dhcpcd) || st.dhcpcd_manager.is_some();
    let routes: Vec<RouteRec> = nl
        .routes::<Ipv4Addr>(&br.name, br.index)
        .await?
        .into_iter()
        .filter(|r| !(dhcpcd && r.protocol == RTPROT_DHCP))
        .collect();
    if addrs.iter().all(|a| a.scope != 0) {
        return Err(unusable(
            "follow underlay",
            &br.name,
            "has no global IPv4 address".into(),
        ));
    }
    tracing::info!(
        nic = %st.nic.name, bridge = %br.name,
        old = ?st.nic.addrs.iter().map(|a| a.ip).collect::<Vec<_>>(),
        new = ?addrs.iter().map(|a| a.ip).collect::<Vec<_>>(),
        "the underlay address changed; the host state follows"
    );
    st.nic.addrs = addrs;
    st.nic.routes = routes;
    st.recorded_unix = state::now_unix();
    state::save(&settings.state_dir, &st)?;
    Ok(st.nic)
}

/// Records overlay mode's underlay ssh pieces in the host-state file
/// (`None`: nothing of it runs). Without a state file there is nothing to
/// record into (and nothing of ours to restore): a no-op.
pub fn record_ssh(state_dir: &Path, ssh: Option<&SshState>) -> Result<(), HostError> {
    let Some(mut st) = state::load(state_dir)? else {
        return Ok(());
    };
    let ssh = ssh.filter(|s| !s.is_empty()).cloned();
    if st.ssh == ssh {
        return Ok(());
    }
    st.ssh = ssh;
    state::save(state_dir, &st)
}

/// Stops whatever an earlier run's underlay ssh left (recorded sshd
/// listeners, the table) and clears the record; run before starting new
/// ones (a restarted agent adopts the plumbing, not the sshds).
pub async fn clear_ssh(settings: &HostSettings) -> Result<(), HostError> {
    let st = state::load(&settings.state_dir)?;
    stop_ssh(st.as_ref().and_then(|s| s.ssh.as_ref()), &settings.nic).await;
    record_ssh(&settings.state_dir, None)
}

/// A record of the running process `pid` for the state file, with a marker
/// its command line contains (`None` if it is gone already).
pub fn proc_record(pid: u32, marker: &str) -> Option<ProcRec> {
    procs::record(pid, marker)
}

/// Starts `cmd` inside netns `name`: from a fresh thread that has entered
/// the namespace (a child inherits the namespaces of the thread that forks
/// it); the thread ends right after. No `unsafe`, no `nsenter`.
pub async fn spawn_in_netns(
    name: &str,
    mut cmd: std::process::Command,
) -> Result<std::process::Child, HostError> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let target = format!("{program} in netns {name}");
    netns::run_blocking_in(name, move || {
        cmd.spawn().map_err(|source| HostError::Io {
            step: "start process",
            target,
            source,
        })
    })
    .await
}

/// Without a state file: if our bridge/veth/netns exist, build a record to
/// restore from (the NIC's config taken from the bridge it is enslaved to).
async fn adopt_leftovers(nl: &Nl, s: &HostSettings) -> Result<Option<HostState>, HostError> {
    let bridge = nl.link(&s.vtep_if).await?;
    let peer = nl.link(&s.overlay_peer).await?;
    let ns = netns::handle_exists(&s.netns);
    let fw_if = nl.link(&s.fw_if).await?;
    let fw_peer = nl.link(&s.fw_peer).await?;
    let table = nft::table_name(&s.nic);
    let nft = nft::table_exists(&table).unwrap_or_else(|error| {
        tracing::warn!(%error, "cannot look for a leftover nftables table; assuming none");
        false
    });
    let fw = fw_if.is_some() || fw_peer.is_some() || nft;
    if bridge.is_none() && peer.is_none() && !ns && !fw {
        return Ok(None);
    }
    let Some(nic) = nl.link(&s.nic).await? else {
        return Err(HostError::NicNotFound { nic: s.nic.clone() });
    };
    let mut rec = NicInfo {
        name: nic.name.clone(),
        ifindex: nic.index,
        mac: mac6(&nic, "adopt leftovers")?,
        mtu: nic.mtu,
        was_up: nic.up,
        addrs: Vec::new(),
        routes: Vec::new(),
        addrs6: Vec::new(),
        routes6: Vec::new(),
    };
    let mut vtep_if = s.vtep_if.clone();
    if let Some(br) = &bridge {
        if br.kind != Some(InfoKind::Bridge) {
            return Err(unusable(
                "adopt leftovers",
                &br.name,
                "exists but is not a bridge; not touching it".into(),
            ));
        }
        if nic.master == Some(br.index) {
            // The bridge holds what used to be the NIC's config.
            rec.was_up = true;
            rec.addrs = nl.addrs::<Ipv4Addr>(&br.name, br.index).await?;
            rec.routes = nl.routes::<Ipv4Addr>(&br.name, br.index).await?;
            rec.addrs6 = nl.addrs::<Ipv6Addr>(&br.name, br.index).await?;
            rec.routes6 = nl.routes::<Ipv6Addr>(&br.name, br.index).await?;
            for a in &mut rec.addrs {
                a.label = None;
            }
        } else if !nl.addrs::<Ipv4Addr>(&br.name, br.index).await?.is_empty() {
            return Err(unusable(
                "adopt leftovers",
                &br.name,
                format!(
                    "bridge has addresses but {} is not its port; not touching it",
                    nic.name
                ),
            ));
        }
    } else {
        vtep_if.clear();
    }
    for p in [&peer, &fw_if, &fw_peer].into_iter().flatten() {
        if p.kind != Some(InfoKind::Veth) {
            return Err(unusable(
                "adopt leftovers",
                &p.name,
                "exists but is not a veth; not touching it".into(),
            ));
        }
    }
    tracing::warn!(
        bridge = ?bridge.as_ref().map(|b| &b.name), peer = ?peer.as_ref().map(|p| &p.name),
        netns = ns.then_some(&s.netns), fw_peer = ?fw_peer.as_ref().map(|p| &p.name),
        nft_table = nft.then_some(&table),
        "no host state file, but leftovers of a previous run exist; cleaning them up"
    );
    let mut st = HostState::new(
        rec,
        &vtep_if,
        Some(&s.netns),
        &s.overlay_if,
        &s.overlay_peer,
    );
    if !ns {
        st.netns = None;
    }
    let st = st.with_fw(fw.then(|| FwState {
        fw_if: s.fw_if.clone(),
        fw_peer: s.fw_peer.clone(),
        nft_table: table,
    }));
    Ok(Some(st))
}

/// Builds bridge + (optionally) netns/veth or the firewall veth and block.
/// Returns the ifindexes of the overlay peer and of the firewall peer (0
/// when not built).
async fn build(
    nl: &Nl,
    st: &HostState,
    port: Option<&PortPlan>,
    port_mac: [u8; 6],
    overlay_mtu: u32,
) -> Result<(u32, u32), HostError> {
    let nic = &st.nic;
    let vtep = st.vtep_if.as_str();

    // Bridge: created down, with the NIC's MAC set explicitly (else it takes
    // the lowest port MAC), STP off and no forward delay.
    let msg = LinkMessageBuilder::<LinkBridge>::new(vtep)
        .address(nic.mac.to_vec())
        .stp_state(BridgeStpState::Disabled)
        .forward_delay(0)
        .build();
    nl.add_link("create bridge", vtep, msg).await?;
    let br = nl.must_link("create bridge", vtep).await?;
    tracing::debug!(bridge = vtep, ifindex = br.index, "bridge created");
    // Before it comes up: its link-local address, DAD and router
    // solicitations follow the NIC's IPv6 settings from the start.
    ipv6::copy_sysctls(&nic.name, vtep);

    let msg = LinkUnspec::new_with_index(nic.ifindex)
        .controller(br.index)
        .up()
        .build();
    nl.set_link("enslave NIC to bridge", &nic.name, msg).await?;
    let msg = LinkUnspec::new_with_index(br.index)
        .mtu(nic.mtu)
        .up()
        .build();
    nl.set_link("bring bridge up", vtep, msg).await?;

    // Move addresses: bridge first, then off the NIC (which also drops the
    // NIC's routes), then the recorded routes via the bridge.
    let onto = |a: &AddrRec| {
        let label = relabel(&nic.name, vtep, a.label.as_deref());
        (AddrRec { label, ..a.clone() }, None)
    };
    nl.move_addrs_routes(
        (&nic.name, nic.ifindex),
        (vtep, br.index),
        (&nic.addrs, onto),
        &nic.routes,
        &nic.routes,
    )
    .await?;
    tracing::info!(nic = %nic.name, bridge = vtep, addrs = nic.addrs.len(), routes = nic.routes.len(), "underlay moved to bridge");
    ipv6::move_to_bridge(
        nl,
        (&nic.name, nic.ifindex),
        (vtep, br.index),
        &nic.addrs6,
        &nic.routes6,
    )
    .await?;

    if let Some(fw) = &st.fw {
        let fw_peer = build_fw(nl, st, fw, br.index).await?;
        return Ok((0, fw_peer));
    }
    let (Some(port), Some(ns)) = (port, st.netns.as_deref()) else {
        return Ok((0, 0));
    };
    Ok((
        build_overlay(nl, st, ns, port, port_mac, overlay_mtu).await?,
        0,
    ))
}

/// Filtered micro-segmentation: the firewall veth on the bridge, then the
/// NIC cut off from the bridge. Returns the ifindex of `fw_peer`.
async fn build_fw(nl: &Nl, st: &HostState, fw: &FwState, bridge: u32) -> Result<u32, HostError> {
    let nic = &st.nic;
    let (fw_if, fw_peer) = (fw.fw_if.as_str(), fw.fw_peer.as_str());
    nl.add_link(
        "create firewall veth",
        fw_if,
        LinkVeth::new(fw_if, fw_peer).build(),
    )
    .await?;
    let peer = nl.must_link("create firewall veth", fw_peer).await?;
    let port = nl.must_link("create firewall veth", fw_if).await?;
    // Neither end may speak for itself (IPv6 DAD/RS/MLD from the bridge
    // port would leave through the firewall onto the underlay).
    netns::disable_ipv6(fw_if)?;
    netns::disable_ipv6(fw_peer)?;
    // Same MTU as the NIC: the bridge MTU stays the NIC's, and whatever
    // the host sends fits the NIC.
    let msg = LinkUnspec::new_with_index(peer.index)
        .mtu(nic.mtu)
        .up()
        .build();
    nl.set_link("bring firewall peer up", fw_peer, msg).await?;
    let msg = LinkUnspec::new_with_index(port.index)
        .mtu(nic.mtu)
        .controller(bridge)
        .up()
        .build();
    nl.set_link("attach firewall veth to bridge", fw_if, msg)
        .await?;
    let link = nl.must_link("block NIC", &nic.name).await?;
    block_nic(nl, &link, &fw.nft_table).await?;
    tracing::info!(
        nic = %nic.name, fw_if, fw_peer, mtu = nic.mtu, "firewall path ready: host <-> bridge <-> {fw_if} <-> agent <-> NIC"
    );
    Ok(peer.index)
}

/// Cuts the NIC (a port of our bridge) off from it, idempotently: the
/// bridge neither learns nor floods unicast towards it (and forgets what it
/// learned there); the nf_tables table drops whatever would pass between
/// the two (the bridge floods broadcasts and multicasts the host itself
/// sends to every port regardless of port flags, so flags alone do not
/// do); and where the kernel has it (5.18+) the port is locked as well, so
/// the NIC's frames stay out even if someone flushes the nf_tables ruleset.
async fn block_nic(nl: &Nl, nic: &Link, table: &str) -> Result<(), HostError> {
    let flags = |locked: bool| {
        let b = LinkBridgePort::new(nic.index)
            .learning(false)
            .flood(false)
            .mcast_flood(false)
            .bcast_flood(false);
        let b = if locked { b.locked(true) } else { b };
        b.build()
    };
    if let Err(e) = nl
        .set_bridge_port("set NIC bridge-port flags", &nic.name, flags(true))
        .await
    {
        // A kernel that refuses `locked` outright (rather than ignoring it).
        tracing::debug!(error = %e, "bridge port flags with `locked` refused; retrying without");
        nl.set_bridge_port("set NIC bridge-port flags", &nic.name, flags(false))
            .await?;
    }
    // Learned entries for the NIC's port (learning was on until now) would
    // send host traffic straight to the NIC, and let a locked port pass.
    let flush = LinkBridgePort::new(nic.index).fdb_flush().build();
    nl.set_bridge_port("flush NIC FDB entries", &nic.name, flush)
        .await?;
    let now = nl.must_link("block NIC", &nic.name).await?;
    let port = now.port.unwrap_or_default();
    if port.learning != Some(false) || port.flood != Some(false) {
        return Err(unusable(
            "block NIC",
            &nic.name,
            format!("bridge-port flags did not take: {port:?}"),
        ));
    }
    nft::ensure_nic_block(table, nic.index)?;
    // Read back: a kernel without bridge-family nf_tables hooks could take
    // the table but not the chains.
    if !nft::nic_block_exists(table)? {
        return Err(unusable(
            "block NIC",
            table,
            "nf_tables bridge chains missing after creation".into(),
        ));
    }
    let locked = port.locked == Some(true);
    tracing::info!(nic = %nic.name, table, locked, "NIC cut off from the bridge");
    Ok(())
}

async fn build_overlay(
    nl: &Nl,
    st: &HostState,
    ns: &str,
    port: &PortPlan,
    port_mac: [u8; 6],
    mtu: u32,
) -> Result<u32, HostError> {
    let (ovif, peer) = (st.overlay_if.clone(), st.overlay_peer.as_str());
    netns::create(ns).await?;
    tracing::debug!(netns = ns, "netns created");

    nl.add_link("create veth", &ovif, LinkVeth::new(&ovif, peer).build())
        .await?;
    let peer_link = nl.must_link("create veth", peer).await?;
    let ov = nl.must_link("create veth", &ovif).await?;

    // Agent end: no IPv6 (no addresses, no RS/DAD noise). With offloads
    // kept, its TSO lets the merged TCP super-frames the agent writes reach
    // the instance whole (with TSO off, the kernel would have to segment
    // them again in software); without, no TX offloads at all.
    netns::disable_ipv6(peer)?;
    if !port.tx_offload {
        ethtool::disable_tx_offloads(peer)?;
        ethtool::check_tx_csum_off(peer);
    }
    // The agent's end takes any size: if the instance raises nsx-eth0's MTU,
    // its oversize frames still reach the router, which answers with ICMP
    // fragmentation-needed instead of the veth dropping them silently.
    let msg = LinkUnspec::new_with_index(peer_link.index)
        .mtu(PEER_MTU)
        .up()
        .build();
    if let Err(e) = nl.set_link("bring veth peer up", peer, msg).await {
        tracing::debug!(error = %e, "peer MTU {PEER_MTU} refused, using the overlay MTU");
        let msg = LinkUnspec::new_with_index(peer_link.index)
            .mtu(mtu)
            .up()
            .build();
        nl.set_link("bring veth peer up", peer, msg).await?;
    }

    let ns_file = netns::open(ns)?;
    let msg = LinkUnspec::new_with_index(ov.index)
        .setns_by_fd(ns_file.as_raw_fd())
        .build();
    nl.set_link("move overlay interface into netns", &ovif, msg)
        .await?;
    drop(ns_file);

    let plan = port.clone();
    let keep_offloads = port.tx_offload;
    netns::run_in(ns, move |nl| async move {
        let ov = nl.must_link("configure overlay interface", &ovif).await?;
        let msg = LinkUnspec::new_with_index(ov.index)
            .address(port_mac.to_vec())
            .mtu(mtu)
            .build();
        nl.set_link("set overlay MAC and MTU", &ovif, msg).await?;
        netns::disable_ipv6(&ovif)?;
        // With offloads kept, the agent finishes checksums and segments
        // super-frames itself (PACKET_VNET_HDR); without, the kernel must
        // hand over complete MTU-sized frames.
        if !keep_offloads {
            ethtool::disable_tx_offloads(&ovif)?;
            ethtool::check_tx_csum_off(&ovif);
        }
        let lo = nl.must_link("bring lo up", "lo").await?;
        nl.set_link(
            "bring lo up",
            "lo",
            LinkUnspec::new_with_index(lo.index).up().build(),
        )
        .await?;
        nl.set_link(
            "bring overlay interface up",
            &ovif,
            LinkUnspec::new_with_index(ov.index).up().build(),
        )
        .await?;
        if plan.dhcp {
            netns::allow_nonlocal_bind()?;
        } else {
            nl.add_addr(&ovif, ov.index, &port_addr(&plan), None)
                .await?;
            nl.add_route(&ovif, ov.index, &default_route(plan.gateway))
                .await?;
        }
        Ok(())
    })
    .await?;
    tracing::info!(
        netns = ns, overlay_if = %st.overlay_if, peer, ip = %port.ip, prefix_len = port.prefix_len,
        gateway = %port.gateway, mtu, "overlay port ready"
    );
    Ok(peer_link.index)
}

/// Undoes `build` from a record. Idempotent: missing objects are skipped.
async fn restore(nl: &Nl, st: &HostState) -> Result<(), HostError> {
    let rec = &st.nic;
    if !st.vtep_if.is_empty() {
        // The bridge goes away, and with it whatever DHCP client runs there.
        dhcp::stop_for(&st.vtep_if, &nl.link_names().await?).await;
        if let Some(m) = &st.dhcpcd_manager {
            dhcpcd_mgr::release(m, &st.vtep_if).await;
        }
    }
    stop_ssh(st.ssh.as_ref(), &rec.name).await;
    if let Some(fw) = &st.fw {
        // Deleting one end of a veth deletes both.
        for name in [&fw.fw_peer, &fw.fw_if] {
            if let Some(l) = nl.link(name).await? {
                if l.kind == Some(InfoKind::Veth) {
                    nl.del_link(&l.name, l.index).await?;
                } else {
                    tracing::warn!(ifname = %l.name, "not a veth, leaving it alone");
                }
            }
        }
        nft::delete_table(&fw.nft_table)?;
    }
    if let Some(ns) = &st.netns {
        portdhcp::stop(ns).await;
        // Deleting the veth first is synchronous; the netns itself is
        // destroyed asynchronously by the kernel, which would leave the peer
        // name busy for a moment.
        if let Some(p) = nl.link(&st.overlay_peer).await? {
            if p.kind == Some(InfoKind::Veth) {
                nl.del_link(&p.name, p.index).await?;
            } else {
                tracing::warn!(ifname = %p.name, "not a veth, leaving it alone");
            }
        }
        netns::delete(ns)?;
    }

    // The NIC: by name, or by recorded index if it was renamed meanwhile.
    let nic = match nl.link(&rec.name).await? {
        Some(l) => l,
        None => match nl.link_by_index(rec.ifindex).await? {
            Some(l) if l.mac == rec.mac => l,
            _ => {
                return Err(HostError::NicNotFound {
                    nic: rec.name.clone(),
                });
            }
        },
    };
    let mut live6 = ipv6::Live::default();
    if !st.vtep_if.is_empty()
        && let Some(br) = nl.link(&st.vtep_if).await?
    {
        if br.kind != Some(InfoKind::Bridge) {
            return Err(unusable(
                "restore",
                &br.name,
                "exists but is not a bridge; not deleting it".into(),
            ));
        }
        if nic.master == Some(br.index) {
            // Where the kernel kept refreshing SLAAC/RA lifetimes.
            if !rec.addrs6.is_empty() || !rec.routes6.is_empty() {
                live6 = ipv6::Live {
                    addrs: nl.addrs::<Ipv6Addr>(&br.name, br.index).await?,
                    routes: nl.routes::<Ipv6Addr>(&br.name, br.index).await?,
                };
            }
            let msg = LinkUnspec::new_with_index(nic.index).nocontroller().build();
            nl.set_link("release NIC from bridge", &nic.name, msg)
                .await?;
        }
        nl.del_link(&br.name, br.index).await?;
    }

    if nic.mac != rec.mac {
        let msg = LinkUnspec::new_with_index(nic.index)
            .address(rec.mac.to_vec())
            .build();
        nl.set_link("restore NIC MAC", &nic.name, msg).await?;
    }
    if nic.mtu != rec.mtu || !nic.up {
        // Up for now even if it was down: routes need it; downed at the end.
        let msg = LinkUnspec::new_with_index(nic.index)
            .mtu(rec.mtu)
            .up()
            .build();
        nl.set_link("restore NIC MTU / bring NIC up", &nic.name, msg)
            .await?;
    }
    let age = u32::try_from(state::now_unix().saturating_sub(st.recorded_unix)).unwrap_or(u32::MAX);
    for a in &rec.addrs {
        // A DHCP client started for the NIC again takes over its leased
        // address: forever until its next renewal sets the lease's
        // lifetime (dhclient's script cannot change the lifetime of an
        // address that is already there when it binds).
        let life = if st.dhcp.is_empty() && st.dhcpcd_manager.is_none() {
            restored_lifetimes(a, None, age)
        } else {
            None
        };
        nl.add_addr(&nic.name, nic.index, a, life).await?;
    }
    nl.add_routes(&nic.name, nic.index, &rec.routes).await?;
    ipv6::restore(
        nl,
        (&nic.name, nic.index),
        &rec.addrs6,
        &rec.routes6,
        &live6,
        age,
    )
    .await?;
    if let Some(n) = &st.networkd {
        networkd::give_back(n).await;
    }
    if rec.was_up && !st.dhcp.is_empty() {
        dhcp::start(
            &st.dhcp,
            dhcp::Target::Nic,
            &nic.name,
            &nl.link_names().await?,
        );
    }
    if rec.was_up
        && let Some(m) = &st.dhcpcd_manager
    {
        dhcpcd_mgr::take(m, &nic.name).await;
    }
    if !rec.was_up {
        let msg = LinkUnspec::new_with_index(nic.index).down().build();
        nl.set_link("restore NIC down state", &nic.name, msg)
            .await?;
    }
    verify(nl, &nic.name, nic.index, rec).await;
    tracing::info!(
        nic = %nic.name, addrs = rec.addrs.len(), routes = rec.routes.len(),
        addrs6 = rec.addrs6.len(), routes6 = rec.routes6.len(), "NIC restored"
    );
    Ok(())
}

/// Logs (does not fail on) differences between the NIC now and the record.
async fn verify(nl: &Nl, ifname: &str, index: u32, rec: &NicInfo) {
    match (
        nl.addrs::<Ipv4Addr>(ifname, index).await,
        nl.routes::<Ipv4Addr>(ifname, index).await,
    ) {
        (Ok(addrs), Ok(routes)) => {
            warn_missing(ifname, &rec.addrs, &addrs);
            for r in &rec.routes {
                if !routes.iter().any(|x| x.key() == r.key()) {
                    tracing::warn!(ifname, dst = %r.dst, prefix_len = r.prefix_len, "route missing after restore");
                }
            }
        }
        (Err(e), _) | (_, Err(e)) => tracing::warn!(ifname, error = %e, "cannot verify restore"),
    }
    if rec.addrs6.is_empty() {
        return;
    }
    match nl.addrs::<Ipv6Addr>(ifname, index).await {
        Ok(addrs) => warn_missing(ifname, &rec.addrs6, &addrs),
        Err(e) => tracing::warn!(ifname, error = %e, "cannot verify the IPv6 restore"),
    }
}

/// Logs each recorded address that `now` lacks.
fn warn_missing<A: Family>(ifname: &str, recorded: &[AddrRec<A>], now: &[AddrRec<A>]) {
    for a in recorded {
        if !now
            .iter()
            .any(|x| (x.ip, x.prefix_len) == (a.ip, a.prefix_len))
        {
            tracing::warn!(ifname, family = A::NAME, ip = %a.ip, "address missing after restore");
        }
    }
}

async fn read_nic(nl: &Nl, name: &str) -> Result<NicInfo, HostError> {
    let link = nl.link(name).await?.ok_or_else(|| HostError::NicNotFound {
        nic: name.to_string(),
    })?;
    Ok(NicInfo {
        name: link.name.clone(),
        ifindex: link.index,
        mac: mac6(&link, "inspect NIC")?,
        mtu: link.mtu,
        was_up: link.up,
        addrs: nl.addrs::<Ipv4Addr>(name, link.index).await?,
        routes: nl.routes::<Ipv4Addr>(name, link.index).await?,
        addrs6: nl.addrs::<Ipv6Addr>(name, link.index).await?,
        routes6: nl.routes::<Ipv6Addr>(name, link.index).await?,
    })
}

fn mac6(link: &Link, step: &'static str) -> Result<[u8; 6], HostError> {
    <[u8; 6]>::try_from(link.mac.as_slice()).map_err(|_| {
        unusable(
            step,
            &link.name,
            format!("hardware address {:02x?} is not a 6-byte MAC", link.mac),
        )
    })
}

fn unusable(step: &'static str, target: &str, reason: String) -> HostError {
    HostError::Unusable {
        step,
        target: target.to_string(),
        reason,
    }
}

/// Overlay MTU for a NIC MTU, if it leaves room for IPv4.
pub fn overlay_mtu(nic_mtu: u32) -> Option<u32> {
    nic_mtu
        .checked_sub(OVERLAY_OVERHEAD)
        .filter(|m| *m >= MIN_IPV4_MTU)
}

/// Label for an address moved from link `from` to link `to` (NIC to
/// bridge, or back): `from`'s default label (`None` or its name) becomes
/// `to`'s (`None`); `<from>:1` becomes `<to>:1` when it fits; any other
/// label is dropped.
fn relabel(from: &str, to: &str, label: Option<&str>) -> Option<String> {
    let suffix = label?.strip_prefix(from)?;
    if suffix.is_empty() {
        return None;
    }
    let l = format!("{to}{suffix}");
    (l.len() < libc::IFNAMSIZ).then_some(l)
}

/// Lifetimes to restore an address (of either family) with: those of
/// `live` (the same address as it is now elsewhere, kept fresh by the
/// kernel) if given, else the record's aged by `age` seconds. Forever
/// stays forever; finite ones are floored at [`MIN_RESTORED_LIFETIME`],
/// a deprecated address (preferred 0) stays deprecated.
fn restored_lifetimes<A: Family>(
    a: &AddrRec<A>,
    live: Option<&AddrRec<A>>,
    age: u32,
) -> Option<(u32, u32)> {
    let (valid, preferred, age) = match live {
        Some(l) => (l.valid_lft?, l.preferred_lft, 0),
        None => (a.valid_lft?, a.preferred_lft, age),
    };
    let valid = valid.saturating_sub(age).max(MIN_RESTORED_LIFETIME);
    let preferred = match preferred {
        Some(0) => 0,
        Some(p) => p.saturating_sub(age).max(MIN_RESTORED_LIFETIME),
        None => u32::MAX,
    };
    Some((valid, preferred.min(valid)))
}

fn port_addr(p: &PortPlan) -> AddrRec {
    let broadcast = (p.prefix_len < 31).then(|| {
        let host_mask = u32::MAX.checked_shr(u32::from(p.prefix_len)).unwrap_or(0);
        Ipv4Addr::from(u32::from(p.ip) | host_mask)
    });
    AddrRec {
        broadcast,
        ..AddrRec::new(p.ip, p.prefix_len)
    }
}

fn default_route(gateway: Ipv4Addr) -> RouteRec {
    RouteRec {
        dst: Ipv4Addr::UNSPECIFIED,
        prefix_len: 0,
        gateway: Some(gateway),
        prefsrc: None,
        metric: None,
        table: RT_TABLE_MAIN,
        scope: 0,
        protocol: RTPROT_BOOT,
        tos: 0,
        kind: RTN_UNICAST,
        onlink: false,
        pref: None,
        expires: None,
        hoplimit: None,
        mtu: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_mtu_leaves_room_for_geneve() {
        assert_eq!(overlay_mtu(1500), Some(1442));
        assert_eq!(overlay_mtu(9001), Some(8943));
        assert_eq!(overlay_mtu(100), None);
        assert_eq!(overlay_mtu(10), None);
    }

    #[test]
    fn labels_follow_the_bridge() {
        assert_eq!(relabel("eth0", "nsx-vtep0.0", Some("eth0")), None);
        assert_eq!(relabel("eth0", "nsx-vtep0.0", None), None);
        assert_eq!(
            relabel("eth0", "nsx-vtep0.0", Some("eth0:1")),
            Some("nsx-vtep0.0:1".into())
        );
        assert_eq!(relabel("eth0", "nsx-vtep0.0", Some("eth0:long")), None);
        assert_eq!(relabel("eth0", "nsx-vtep0.0", Some("other")), None);
    }

    #[test]
    fn labels_come_back_to_the_nic() {
        for l in [None, Some("eth0"), Some("eth0:1")] {
            let there = relabel("eth0", "nsx-vtep0.0", l);
            let back = relabel(
                "nsx-vtep0.0",
                "eth0",
                there.as_deref().or(Some("nsx-vtep0.0")),
            );
            assert_eq!(back.as_deref(), l.filter(|l| *l != "eth0"), "{l:?}");
        }
        assert_eq!(relabel("nsx-vtep0.0", "eth0", Some("other")), None);
    }

    #[test]
    fn lifetimes_age_with_a_floor() {
        let mut a = port_addr(&PortPlan {
            mac: None,
            ip: Ipv4Addr::new(10, 0, 0, 5),
            prefix_len: 24,
            gateway: Ipv4Addr::new(10, 0, 0, 1),
            tx_offload: true,
            dhcp: false,
        });
        assert_eq!(a.broadcast, Some(Ipv4Addr::new(10, 0, 0, 255)));
        assert_eq!(restored_lifetimes(&a, None, 100), None);
        a.valid_lft = Some(3600);
        a.preferred_lft = Some(1800);
        assert_eq!(restored_lifetimes(&a, None, 100), Some((3500, 1700)));
        assert_eq!(restored_lifetimes(&a, None, 5000), Some((30, 30)));
        a.preferred_lft = None;
        assert_eq!(restored_lifetimes(&a, None, 0), Some((3600, 3600)));
    }

    #[test]
    fn point_to_point_prefixes_have_no_broadcast() {
        let a = port_addr(&PortPlan {
            mac: None,
            ip: Ipv4Addr::new(10, 0, 0, 5),
            prefix_len: 32,
            gateway: Ipv4Addr::new(10, 0, 0, 1),
            tx_offload: true,
            dhcp: false,
        });
        assert_eq!(a.broadcast, None);
    }
}
