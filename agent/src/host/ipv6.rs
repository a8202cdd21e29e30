//! IPv6 on the NIC: the addresses (static, SLAAC, DHCPv6) and routes
//! (static, RA-learned) that `setup` moves to the bridge with the IPv4 ones
//! and `restore` puts back, and what keeps them alive in between. The
//! overlay stays IPv4; this is the instance's own underlay IPv6.
//!
//! * Records: [`Addr6Rec`] and [`Route6Rec`], in the state file's `nic`.
//!   Link-local addresses are never moved: the NIC keeps its own and the
//!   bridge derives one from the same MAC. Kernel routes to fe80::/64 stay
//!   on the NIC for the same reason.
//! * The bridge takes the NIC's per-interface IPv6 sysctls before it comes
//!   up ([`copy_sysctls`]): with `accept_ra`, `autoconf`, `use_tempaddr`,
//!   `addr_gen_mode`, ... as the NIC had them, the kernel keeps refreshing
//!   the moved SLAAC addresses and RA routes from the router's
//!   advertisements, now on the bridge.
//! * Addresses are added to the bridge with `nodad` (they are ours already;
//!   DAD would make them unusable for a second) and their remaining
//!   lifetimes; on restore exactly as recorded, with finite lifetimes taken
//!   from the bridge (where the kernel kept refreshing them), else aged.
//! * RA routes (protocol `ra`) are not re-added as they were where the
//!   kernel handles RAs on that interface: a route the kernel did not
//!   install itself lacks its internal `RTF_ADDRCONF` flag, so on the next
//!   RA the kernel cannot find "its" default route, fails to add a
//!   duplicate and drops the rest of the RA: neither that route nor the
//!   prefixes would be refreshed again. Instead a stand-in (the same route
//!   at metric + 1, with its remaining lifetime) covers the gap, and a
//!   Router Solicitation ([`send_rs`]) asks the router for an RA, from
//!   which the kernel installs its own. On restore the stand-ins go again
//!   once the kernel's own routes are back (bounded wait), so the NIC ends
//!   as recorded. Where RAs are handled in user space (`accept_ra` 0, e.g.
//!   systemd-networkd), RA routes are re-added exactly.

use std::net::{Ipv6Addr, SocketAddrV6};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::netlink::{AddrRec, Nl, RouteKey, RouteRec};
use super::{HostError, MIN_RESTORED_LIFETIME, restored_lifetimes};

/// `RTPROT_RA`: routes learned from router advertisements.
pub const RTPROT_RA: u8 = 9;
/// `IFA_F_NODAD`.
const IFA_F_NODAD: u32 = 0x02;
/// How long restore waits for the kernel's own RA routes on the NIC.
const RA_WAIT: Duration = Duration::from_secs(3);
/// How often that wait looks.
const RA_POLL: Duration = Duration::from_millis(100);

/// Per-interface IPv6 sysctls the bridge takes from the NIC, in the order
/// they are written (`stable_secret` before `addr_gen_mode`, which needs
/// it). `forwarding` and `mtu` are not copied: the first follows
/// `conf/all`, the second the link MTU (and RAs).
const SYSCTLS: &[&str] = &[
    "stable_secret",
    "addr_gen_mode",
    "accept_dad",
    "dad_transmits",
    "optimistic_dad",
    "use_optimistic",
    "accept_ra",
    "accept_ra_defrtr",
    "accept_ra_pinfo",
    "accept_ra_rtr_pref",
    "accept_ra_rt_info_min_plen",
    "accept_ra_rt_info_max_plen",
    "accept_ra_mtu",
    "accept_ra_min_hop_limit",
    "accept_ra_min_lft",
    "accept_ra_from_local",
    "ra_defrtr_metric",
    "ra_honor_pio_life",
    "autoconf",
    "use_tempaddr",
    "temp_valid_lft",
    "temp_prefered_lft",
    "regen_max_retry",
    "max_desync_factor",
    "max_addresses",
    "router_solicitations",
    "router_solicitation_interval",
    "router_solicitation_max_interval",
    "router_solicitation_delay",
    "hop_limit",
    "accept_redirects",
    "accept_source_route",
    "keep_addr_on_down",
];

/// One IPv6 address (never link-local), with what is needed to re-add it.
pub type Addr6Rec = AddrRec<Ipv6Addr>;

/// One IPv6 route through the NIC (never the kernel's link-local ones).
pub type Route6Rec = RouteRec<Ipv6Addr>;

/// The stand-in for an RA route: the same route one metric lower in
/// priority, so the kernel's own (from the next RA) never collides with it.
fn stand_in(r: &Route6Rec) -> Route6Rec {
    Route6Rec {
        metric: Some(r.metric.unwrap_or(1024).saturating_add(1)),
        ..r.clone()
    }
}

/// The key of the kernel's own route a stand-in covers for.
fn covered(s: &Route6Rec) -> RouteKey<Ipv6Addr> {
    let mut k = s.key();
    k.3 = s.metric.map(|m| m.saturating_sub(1));
    k
}

fn conf_path(ifname: &str, key: &str) -> PathBuf {
    PathBuf::from("/proc/sys/net/ipv6/conf")
        .join(ifname)
        .join(key)
}

fn read_sysctl(ifname: &str, key: &str) -> Option<String> {
    std::fs::read_to_string(conf_path(ifname, key))
        .ok()
        .map(|s| s.trim().to_string())
}

/// Gives `to` the IPv6 settings `from` has (see [`SYSCTLS`]); run before
/// `to` comes up. A NIC without IPv6 leaves the bridge without it too.
/// Best effort: a key this kernel lacks is skipped, a refused write logged.
pub fn copy_sysctls(from: &str, to: &str) {
    if read_sysctl(from, "disable_ipv6").as_deref() == Some("1") {
        write_sysctl(to, "disable_ipv6", "1");
        return;
    }
    for key in SYSCTLS {
        // stable_secret reads EIO while unset: nothing to copy.
        let Some(want) = read_sysctl(from, key) else {
            continue;
        };
        if read_sysctl(to, key).as_deref() != Some(want.as_str()) {
            write_sysctl(to, key, &want);
        }
    }
}

fn write_sysctl(ifname: &str, key: &str, value: &str) {
    let p = conf_path(ifname, key);
    if let Err(error) = std::fs::write(&p, value) {
        tracing::warn!(path = %p.display(), value, %error, "cannot copy an IPv6 setting to the bridge");
    }
}

/// Whether the kernel itself processes router advertisements on `ifname`
/// (`accept_ra` 2, or 1 while not forwarding).
pub fn kernel_takes_ra(ifname: &str) -> bool {
    match read_sysctl(ifname, "accept_ra").as_deref() {
        Some("2") => true,
        Some("1") => read_sysctl(ifname, "forwarding").as_deref() != Some("1"),
        _ => false,
    }
}

/// Sends one ICMPv6 Router Solicitation out of `ifindex` (to ff02::2, hop
/// limit 255), so a router answers with an RA now rather than at its next
/// periodic one. Best effort: logged, never fails the caller.
pub fn send_rs(ifname: &str, ifindex: u32) {
    if let Err(error) = try_send_rs(ifname, ifindex) {
        tracing::warn!(ifname, %error, "cannot send a router solicitation");
    } else {
        tracing::debug!(ifname, "router solicitation sent");
    }
}

fn try_send_rs(ifname: &str, ifindex: u32) -> nix::Result<()> {
    use nix::sys::socket::{
        AddressFamily as Af, MsgFlags, SockFlag, SockProtocol, SockType, SockaddrIn6, sendto,
        setsockopt, socket, sockopt,
    };
    use std::os::fd::AsRawFd;
    let fd = socket(
        Af::Inet6,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::IcmpV6,
    )?;
    setsockopt(
        &fd,
        sockopt::BindToDevice,
        &std::ffi::OsString::from(ifname),
    )?;
    setsockopt(&fd, sockopt::Ipv6MulticastHops, &255)?;
    // Type 133, code 0, checksum (the kernel fills it in), reserved.
    let rs = [133u8, 0, 0, 0, 0, 0, 0, 0];
    let all_routers = SocketAddrV6::new(Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2), 0, 0, ifindex);
    sendto(
        fd.as_raw_fd(),
        &rs,
        &SockaddrIn6::from(all_routers),
        MsgFlags::empty(),
    )?;
    Ok(())
}

/// Expiry to re-add a route with: `live`'s if given, else the record's
/// aged by `age`; floored like addresses.
fn expires(r: &Route6Rec, live: Option<&Route6Rec>, age: u32) -> Option<u32> {
    match live {
        Some(l) => l.expires,
        None => r.expires.map(|e| e.saturating_sub(age)),
    }
    .map(|e| e.max(MIN_RESTORED_LIFETIME))
}

/// Moves the recorded IPv6 addresses and routes from the NIC to the bridge
/// (after `copy_sysctls`, with the bridge up): addresses first (with
/// `nodad`), off the NIC, then the routes (RA routes as stand-ins where
/// the bridge's kernel takes RAs, and a Router Solicitation).
pub async fn move_to_bridge(
    nl: &Nl,
    nic: (&str, u32),
    bridge: (&str, u32),
    addrs: &[Addr6Rec],
    routes: &[Route6Rec],
) -> Result<(), HostError> {
    let ((nic, nic_ix), (br, br_ix)) = (nic, bridge);
    if addrs.is_empty() && routes.is_empty() {
        return Ok(());
    }
    let onto = |a: &Addr6Rec| {
        let life = a.valid_lft.map(|v| (v, a.preferred_lft.unwrap_or(v)));
        let flags = a.flags | IFA_F_NODAD;
        (Addr6Rec { flags, ..a.clone() }, life)
    };
    let kernel_ra = kernel_takes_ra(br);
    let br_routes: Vec<Route6Rec> = routes
        .iter()
        .map(|r| {
            if kernel_ra && r.protocol == RTPROT_RA {
                stand_in(r)
            } else {
                r.clone()
            }
        })
        .collect();
    nl.move_addrs_routes(
        (nic, nic_ix),
        (br, br_ix),
        (addrs, onto),
        routes,
        &br_routes,
    )
    .await?;
    if kernel_ra {
        send_rs(br, br_ix);
    }
    tracing::info!(
        nic,
        bridge = br,
        addrs = addrs.len(),
        routes = routes.len(),
        "IPv6 moved to bridge"
    );
    Ok(())
}

/// What the bridge holds now, read before it goes (for fresh lifetimes).
#[derive(Debug, Default)]
pub struct Live {
    pub addrs: Vec<Addr6Rec>,
    pub routes: Vec<Route6Rec>,
}

/// Puts the recorded IPv6 addresses and routes back on the NIC (see the
/// module docs): exact flags; lifetimes from `live` where the bridge still
/// had the item, else aged by `age`; RA routes through stand-ins, a Router
/// Solicitation and a bounded wait for the kernel's own routes.
pub async fn restore(
    nl: &Nl,
    nic: (&str, u32),
    addrs: &[Addr6Rec],
    routes: &[Route6Rec],
    live: &Live,
    age: u32,
) -> Result<(), HostError> {
    let (name, index) = nic;
    if addrs.is_empty() && routes.is_empty() {
        return Ok(());
    }
    for a in addrs {
        let now = live
            .addrs
            .iter()
            .find(|l| (l.ip, l.prefix_len) == (a.ip, a.prefix_len));
        nl.add_addr(name, index, a, restored_lifetimes(a, now, age))
            .await?;
    }
    let kernel_ra = kernel_takes_ra(name);
    let mut stand_ins = Vec::new();
    let mut todo = Vec::with_capacity(routes.len());
    for r in routes {
        // The kernel's own route on the bridge, else a stand-in there.
        let now = live
            .routes
            .iter()
            .find(|l| l.key() == r.key())
            .or_else(|| live.routes.iter().find(|l| l.key() == stand_in(r).key()));
        let mut r = Route6Rec {
            expires: expires(r, now, age),
            ..r.clone()
        };
        if kernel_ra && r.protocol == RTPROT_RA {
            r = stand_in(&r);
            stand_ins.push(r.clone());
        }
        todo.push(r);
    }
    nl.add_routes(name, index, &todo).await?;
    if !stand_ins.is_empty() {
        send_rs(name, index);
        retire_stand_ins(nl, name, index, &stand_ins).await;
    }
    Ok(())
}

/// Waits (bounded by [`RA_WAIT`]) for the kernel's own route behind each
/// stand-in and deletes the stand-ins whose route came back; the others
/// stay until their lifetime ends.
async fn retire_stand_ins(nl: &Nl, name: &str, index: u32, stand_ins: &[Route6Rec]) {
    let mut left: Vec<&Route6Rec> = stand_ins.iter().collect();
    let deadline = Instant::now() + RA_WAIT;
    loop {
        match nl.routes::<Ipv6Addr>(name, index).await {
            Ok(now) => {
                let mut still = Vec::new();
                for s in left {
                    if now.iter().any(|r| r.key() == covered(s)) {
                        if let Err(error) = nl.del_route(name, index, s).await {
                            tracing::warn!(ifname = name, %error, "cannot delete an RA stand-in route");
                        }
                    } else {
                        still.push(s);
                    }
                }
                left = still;
            }
            Err(error) => tracing::warn!(ifname = name, %error, "cannot read IPv6 routes"),
        }
        if left.is_empty() {
            return;
        }
        if Instant::now() >= deadline {
            tracing::warn!(
                ifname = name,
                routes = left.len(),
                "no router advertisement in time: RA routes stay as stand-ins (metric + 1) until they expire"
            );
            return;
        }
        tokio::time::sleep(RA_POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::netlink::RTN_UNICAST;

    fn addr(valid: Option<u32>, preferred: Option<u32>) -> Addr6Rec {
        Addr6Rec {
            flags: 0x100,
            valid_lft: valid,
            preferred_lft: preferred,
            proto: Some(3),
            ..Addr6Rec::new("2001:db8::5".parse().expect("ip"), 64)
        }
    }

    #[test]
    fn restored_lifetimes_prefer_the_live_ones() {
        let rec = addr(Some(3600), Some(1800));
        assert_eq!(restored_lifetimes(&addr(None, None), None, 100), None);
        assert_eq!(restored_lifetimes(&rec, None, 100), Some((3500, 1700)));
        assert_eq!(restored_lifetimes(&rec, None, 5000), Some((30, 30)));
        let live = addr(Some(7000), Some(6000));
        assert_eq!(
            restored_lifetimes(&rec, Some(&live), 5000),
            Some((7000, 6000))
        );
        // Deprecated stays deprecated.
        assert_eq!(
            restored_lifetimes(&addr(Some(600), Some(0)), None, 10),
            Some((590, 0))
        );
    }

    #[test]
    fn stand_ins_sit_one_metric_behind() {
        let r = Route6Rec {
            dst: Ipv6Addr::UNSPECIFIED,
            prefix_len: 0,
            gateway: Some("fe80::1".parse().expect("ip")),
            prefsrc: None,
            metric: Some(1024),
            table: 254,
            scope: 0,
            protocol: RTPROT_RA,
            tos: 0,
            kind: RTN_UNICAST,
            onlink: false,
            pref: Some(0),
            expires: Some(1700),
            hoplimit: Some(64),
            mtu: None,
        };
        let s = stand_in(&r);
        assert_eq!(s.metric, Some(1025));
        assert_ne!(s.key(), r.key());
        assert_eq!(expires(&r, None, 100), Some(1600));
        assert_eq!(expires(&r, Some(&s), 100), Some(1700));
        assert_eq!(expires(&r, None, 5000), Some(30));
        let forever = Route6Rec {
            expires: None,
            ..r.clone()
        };
        assert_eq!(expires(&forever, None, 5000), None);
    }
}
