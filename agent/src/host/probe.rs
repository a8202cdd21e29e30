//! The edge's health-check namespace: `nsx-hc`, whose one interface
//! (`nsx-hc0`, a veth whose other end `nsx-hc0-peer` the datapath reads as
//! the tier-0's health-check port) holds the tier-0's `health_check_ip`
//! and routes everything out of it without a gateway (the tier-0 answers
//! ARP for any address there). The edge's health checkers open their
//! connections and run their scripts inside it, so what they send enters
//! the overlay through the tier-0 from that address, and only the
//! overlay's answers come back. Made fresh at every start (a leftover of
//! a crash is deleted first), deleted at stop and by `cleanup`.

use std::net::Ipv4Addr;

use rtnetlink::{LinkUnspec, LinkVeth};

use super::netlink::{AddrRec, Nl, RTN_UNICAST, RouteRec};
use super::{HostError, RT_TABLE_MAIN, RTPROT_BOOT, ethtool, netns};

/// The namespace the checkers run in.
pub const NETNS: &str = "nsx-hc";
/// Its interface (inside) and the datapath's end (outside).
pub const IFACE: &str = "nsx-hc0";
pub const PEER: &str = "nsx-hc0-peer";
/// `RT_SCOPE_LINK`: the default route reaches every address directly.
const SCOPE_LINK: u8 = 253;

/// Creates the namespace and its veth (deleting leftovers first), MTU
/// `mtu` (the overlay's), no IPv6, no transmit offloads inside (checks
/// are small; the datapath then gets complete frames). Returns the
/// peer's ifindex, for the datapath's socket. The address comes with the
/// config ([`set_address`]).
pub async fn setup(nl: &Nl, mtu: u32) -> Result<u32, HostError> {
    teardown(nl).await?;
    netns::create(NETNS).await?;
    nl.add_link(
        "create health-check veth",
        IFACE,
        LinkVeth::new(IFACE, PEER).build(),
    )
    .await?;
    let peer = nl.must_link("create health-check veth", PEER).await?;
    let inner = nl.must_link("create health-check veth", IFACE).await?;
    netns::disable_ipv6(PEER)?;
    nl.set_link(
        "bring health-check peer up",
        PEER,
        LinkUnspec::new_with_index(peer.index).mtu(mtu).up().build(),
    )
    .await?;
    let ns_file = netns::open(NETNS)?;
    nl.set_link(
        "move health-check interface into its netns",
        IFACE,
        LinkUnspec::new_with_index(inner.index)
            .setns_by_fd(std::os::fd::AsRawFd::as_raw_fd(&ns_file))
            .build(),
    )
    .await?;
    drop(ns_file);
    netns::run_in(NETNS, move |nl| async move {
        let me = nl
            .must_link("configure health-check interface", IFACE)
            .await?;
        netns::disable_ipv6(IFACE)?;
        ethtool::disable_tx_offloads(IFACE)?;
        for (name, index) in [("lo", None), (IFACE, Some(me.index))] {
            let index = match index {
                Some(i) => i,
                None => nl.must_link("bring lo up", name).await?.index,
            };
            let msg = if name == IFACE {
                LinkUnspec::new_with_index(index).mtu(mtu).up().build()
            } else {
                LinkUnspec::new_with_index(index).up().build()
            };
            nl.set_link("bring health-check interfaces up", name, msg)
                .await?;
        }
        Ok(())
    })
    .await?;
    tracing::info!(
        netns = NETNS,
        iface = IFACE,
        peer = PEER,
        mtu,
        "health-check port ready"
    );
    Ok(peer.index)
}

/// [`setup`] in the agent's own namespace.
pub async fn start(mtu: u32) -> Result<u32, HostError> {
    let nl = Nl::connect("main")?;
    setup(&nl, mtu).await
}

/// Runs `f` inside the namespace until it ends, on a thread of its own
/// with its own runtime ([`netns::run_in`]): whatever it opens or forks
/// belongs to the namespace.
pub async fn run_inside<T, F, Fut>(f: F) -> Result<T, HostError>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T, HostError>>,
    T: Send + 'static,
{
    netns::run_in(NETNS, move |_nl| f()).await
}

/// Gives the checkers `ip` (replacing any other address) and the default
/// route out of their interface.
pub async fn set_address(ip: Ipv4Addr) -> Result<(), HostError> {
    netns::run_in(NETNS, move |nl| async move {
        let me = nl
            .must_link("address the health-check interface", IFACE)
            .await?;
        for old in nl.addrs::<Ipv4Addr>(IFACE, me.index).await? {
            if old.ip != ip {
                nl.del_addr(IFACE, me.index, &old).await?;
            }
        }
        let have = nl.addrs::<Ipv4Addr>(IFACE, me.index).await?;
        if !have.iter().any(|a| a.ip == ip) {
            nl.add_addr(IFACE, me.index, &AddrRec::new(ip, 32), None)
                .await?;
        }
        let routes = nl.routes::<Ipv4Addr>(IFACE, me.index).await?;
        if !routes.iter().any(|r| r.prefix_len == 0) {
            nl.add_route(IFACE, me.index, &default_route(ip)).await?;
        }
        Ok(())
    })
    .await?;
    tracing::info!(netns = NETNS, %ip, "health checks from {ip}");
    Ok(())
}

/// Deletes the namespace (its interface, and so the peer, go with it).
pub async fn teardown(nl: &Nl) -> Result<(), HostError> {
    netns::delete(NETNS)?;
    // A peer left in the root namespace (its namespace gone first).
    if let Some(peer) = nl.link(PEER).await? {
        nl.del_link(PEER, peer.index).await?;
    }
    Ok(())
}

/// `default dev nsx-hc0 scope link src IP`.
fn default_route(src: Ipv4Addr) -> RouteRec {
    RouteRec {
        dst: Ipv4Addr::UNSPECIFIED,
        prefix_len: 0,
        gateway: None,
        prefsrc: Some(src),
        metric: None,
        table: RT_TABLE_MAIN,
        scope: SCOPE_LINK,
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
