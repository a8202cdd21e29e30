//! rtnetlink helpers for the host module: one [`Nl`] per network namespace,
//! with reads that turn dumps into plain records ([`Link`], [`AddrRec`],
//! [`RouteRec`]) and writes that carry the step and interface in their error
//! and tolerate the "already done" errno where that makes the caller
//! idempotent (EEXIST on add, ENODEV/ESRCH/EADDRNOTAVAIL on delete).
//!
//! Addresses and routes are one implementation for both IP families: the
//! records are generic over the address type (`AddrRec` = IPv4,
//! `AddrRec<Ipv6Addr>` = IPv6, the same for routes), and [`Family`] holds
//! the few family-specific bits (the netlink family, which dumped entries
//! are recorded). A field one family never reports (IPv4's broadcast and
//! label, IPv6's router preference and expiry) simply stays `None` there.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures_util::TryStreamExt;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressMessage, AddressProtocol, AddressScope, CacheInfo,
};
use netlink_packet_route::link::{
    InfoBridgePort, InfoKind, InfoPortData, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteMetric,
    RoutePreference, RouteProtocol, RouteScope, RouteType,
};
use rtnetlink::{Handle, RouteMessageBuilder};
use serde::{Deserialize, Serialize};

use super::HostError;

/// `RT_TABLE_LOCAL`: kernel-owned local/broadcast routes, never recorded.
pub const RT_TABLE_LOCAL: u32 = 255;
/// `RTPROT_KERNEL`: routes the kernel derives from addresses.
pub const RTPROT_KERNEL: u8 = 2;
/// `RTN_UNICAST`.
pub const RTN_UNICAST: u8 = 1;
/// Address lifetime meaning "forever".
const INFINITY_LIFE_TIME: u32 = u32::MAX;
/// Address flags the kernel computes itself; never replayed (for IPv6,
/// 0x01 is "temporary", which only the kernel sets either).
const TRANSIENT_ADDR_FLAGS: u32 = 0x01 /* secondary */
    | 0x04 /* optimistic */
    | 0x08 /* dadfailed */
    | 0x20 /* deprecated */
    | 0x40 /* tentative */
    | 0x80 /* permanent */;
/// Clock ticks per second of `RTA_CACHEINFO.rta_expires` (`USER_HZ`).
const USER_HZ: i64 = 100;

/// The family-specific bits of the shared address and route code.
pub trait Family:
    Copy + Eq + fmt::Debug + fmt::Display + Into<IpAddr> + Into<RouteAddress> + Send + 'static
{
    /// The netlink address family.
    const AF: AddressFamily;
    /// For logs and error messages.
    const NAME: &'static str;
    /// The destination of a default route.
    const UNSPECIFIED: Self;
    fn from_ip(ip: &IpAddr) -> Option<Self>;
    fn from_route(a: &RouteAddress) -> Option<Self>;
    /// Whether a dumped address belongs in a record.
    fn records_addr(_: &AddrRec<Self>) -> bool {
        true
    }
    /// Whether a dumped route belongs in a record (never the `local`
    /// table, which the kernel derives from the addresses).
    fn records_route(r: &RouteRec<Self>) -> bool {
        r.table != RT_TABLE_LOCAL
    }
}

impl Family for Ipv4Addr {
    const AF: AddressFamily = AddressFamily::Inet;
    const NAME: &'static str = "IPv4";
    const UNSPECIFIED: Self = Ipv4Addr::UNSPECIFIED;
    fn from_ip(ip: &IpAddr) -> Option<Self> {
        match ip {
            IpAddr::V4(a) => Some(*a),
            IpAddr::V6(_) => None,
        }
    }
    fn from_route(a: &RouteAddress) -> Option<Self> {
        match a {
            RouteAddress::Inet(a) => Some(*a),
            _ => None,
        }
    }
}

/// Link-local addresses and the kernel's link-local routes stay with the
/// NIC (see `ipv6`): never recorded.
impl Family for Ipv6Addr {
    const AF: AddressFamily = AddressFamily::Inet6;
    const NAME: &'static str = "IPv6";
    const UNSPECIFIED: Self = Ipv6Addr::UNSPECIFIED;
    fn from_ip(ip: &IpAddr) -> Option<Self> {
        match ip {
            IpAddr::V6(a) => Some(*a),
            IpAddr::V4(_) => None,
        }
    }
    fn from_route(a: &RouteAddress) -> Option<Self> {
        match a {
            RouteAddress::Inet6(a) => Some(*a),
            _ => None,
        }
    }
    fn records_addr(a: &AddrRec<Self>) -> bool {
        !a.ip.is_unicast_link_local()
    }
    fn records_route(r: &RouteRec<Self>) -> bool {
        r.table != RT_TABLE_LOCAL && !(r.protocol == RTPROT_KERNEL && r.dst.is_unicast_link_local())
    }
}

/// One address, with what is needed to re-add it exactly: IPv4 (the
/// default type) or IPv6 (`AddrRec<Ipv6Addr>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound(serialize = "A: Serialize", deserialize = "A: Deserialize<'de>"))]
pub struct AddrRec<A = Ipv4Addr> {
    pub ip: A,
    pub prefix_len: u8,
    /// Point-to-point peer (`IFA_ADDRESS` when it differs from the local one).
    #[serde(default)]
    pub peer: Option<A>,
    /// IPv4 only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broadcast: Option<Ipv4Addr>,
    /// IPv4 only; `None` = the device name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// `ifa_scope` (0 = global).
    #[serde(default)]
    pub scope: u8,
    /// Settable `IFA_F_*` flags (e.g. noprefixroute, mngtmpaddr);
    /// kernel-computed ones (secondary, permanent, tentative, ...) are
    /// dropped.
    #[serde(default)]
    pub flags: u32,
    /// Seconds; `None` = forever.
    #[serde(default)]
    pub valid_lft: Option<u32>,
    #[serde(default)]
    pub preferred_lft: Option<u32>,
    /// `IFA_PROTO` (who added it, e.g. the kernel for SLAAC), when reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto: Option<u8>,
    /// `IFA_RT_PRIORITY`: the metric of the prefix route the kernel adds
    /// for it (systemd-networkd sets it from `RouteMetric=`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<u32>,
}

impl<A: Family> AddrRec<A> {
    /// `ip/prefix_len` and nothing else: no peer, broadcast or label,
    /// global scope, no flags, no protocol, forever.
    pub fn new(ip: A, prefix_len: u8) -> Self {
        AddrRec {
            ip,
            prefix_len,
            peer: None,
            broadcast: None,
            label: None,
            scope: 0,
            flags: 0,
            valid_lft: None,
            preferred_lft: None,
            proto: None,
            metric: None,
        }
    }
}

/// One route through the NIC: IPv4 (the default type) or IPv6
/// (`RouteRec<Ipv6Addr>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound(serialize = "A: Serialize", deserialize = "A: Deserialize<'de>"))]
pub struct RouteRec<A = Ipv4Addr> {
    pub dst: A,
    pub prefix_len: u8,
    #[serde(default)]
    pub gateway: Option<A>,
    #[serde(default)]
    pub prefsrc: Option<A>,
    #[serde(default)]
    pub metric: Option<u32>,
    pub table: u32,
    /// `rtm_scope` (IPv6 routes are always 0, universe).
    #[serde(default)]
    pub scope: u8,
    pub protocol: u8,
    #[serde(default)]
    pub tos: u8,
    /// `rtm_type` (1 = unicast).
    #[serde(default = "unicast")]
    pub kind: u8,
    #[serde(default)]
    pub onlink: bool,
    /// Router preference (`RTA_PREF`, IPv6 RA routes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pref: Option<u8>,
    /// Seconds left (IPv6); `None` = forever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hoplimit: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
}

fn unicast() -> u8 {
    RTN_UNICAST
}

/// An address as a link gets it, with its (valid, preferred) lifetimes in
/// seconds (`None` = forever).
pub type AddrLife<A> = (AddrRec<A>, Option<(u32, u32)>);

/// What identifies a route in its table (the kernel's duplicate check).
pub type RouteKey<A> = (A, u8, u32, Option<u32>, Option<A>, u8);

impl<A: Family> RouteRec<A> {
    pub fn key(&self) -> RouteKey<A> {
        (
            self.dst,
            self.prefix_len,
            self.table,
            self.metric,
            self.gateway,
            self.tos,
        )
    }
}

/// A link as read from the kernel.
#[derive(Debug, Clone)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Vec<u8>,
    pub mtu: u32,
    pub up: bool,
    pub master: Option<u32>,
    pub kind: Option<InfoKind>,
    /// Bridge-port settings, when the link is a bridge port.
    pub port: Option<BridgePortFlags>,
}

/// The bridge-port settings the agent changes (`None`: the kernel did not
/// report that attribute, e.g. `locked` before Linux 5.18).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BridgePortFlags {
    pub learning: Option<bool>,
    pub flood: Option<bool>,
    pub mcast_flood: Option<bool>,
    pub bcast_flood: Option<bool>,
    pub locked: Option<bool>,
}

/// An rtnetlink handle bound to one network namespace (the namespace of the
/// thread that created it).
#[derive(Debug, Clone)]
pub struct Nl {
    h: Handle,
    /// Namespace label for log and error messages.
    ns: String,
}

/// Positive errno of a netlink error, if it is one.
pub fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(m.raw_code().abs()),
        _ => None,
    }
}

impl Nl {
    /// Opens a netlink connection in the calling thread's network namespace
    /// and drives it on the current tokio runtime.
    pub fn connect(ns: &str) -> Result<Nl, HostError> {
        let (conn, h, _) = rtnetlink::new_connection().map_err(|source| HostError::Io {
            step: "open rtnetlink socket",
            target: format!("netns {ns}"),
            source,
        })?;
        tokio::spawn(conn);
        Ok(Nl {
            h,
            ns: ns.to_string(),
        })
    }

    fn err(&self, step: &'static str, ifname: &str, source: rtnetlink::Error) -> HostError {
        HostError::Netlink {
            step,
            target: format!("{ifname} (netns {})", self.ns),
            source,
        }
    }

    /// Looks a link up by name; `None` if it does not exist.
    pub async fn link(&self, name: &str) -> Result<Option<Link>, HostError> {
        let req = self.h.link().get().match_name(name.to_string()).execute();
        self.first_link(req, name).await
    }

    /// Looks a link up by index; `None` if it does not exist.
    pub async fn link_by_index(&self, index: u32) -> Result<Option<Link>, HostError> {
        let req = self.h.link().get().match_index(index).execute();
        self.first_link(req, &format!("ifindex {index}")).await
    }

    async fn first_link(
        &self,
        stream: impl futures_util::Stream<Item = Result<LinkMessage, rtnetlink::Error>>,
        what: &str,
    ) -> Result<Option<Link>, HostError> {
        futures_util::pin_mut!(stream);
        match stream.try_next().await {
            Ok(Some(m)) => Ok(Some(parse_link(&m))),
            Ok(None) => Ok(None),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(self.err("read link", what, e)),
        }
    }

    /// The names of every link in the namespace.
    pub async fn link_names(&self) -> Result<Vec<String>, HostError> {
        let mut stream = self.h.link().get().execute();
        let mut out = Vec::new();
        while let Some(m) = stream
            .try_next()
            .await
            .map_err(|e| self.err("list links", "all", e))?
        {
            out.push(parse_link(&m).name);
        }
        Ok(out)
    }

    /// Like [`Nl::link`], but a missing link is an error.
    pub async fn must_link(&self, step: &'static str, name: &str) -> Result<Link, HostError> {
        self.link(name).await?.ok_or_else(|| HostError::Missing {
            step,
            target: format!("{name} (netns {})", self.ns),
        })
    }

    /// Sends an RTM_NEWLINK (create).
    pub async fn add_link(
        &self,
        step: &'static str,
        ifname: &str,
        msg: LinkMessage,
    ) -> Result<(), HostError> {
        self.h
            .link()
            .add(msg)
            .execute()
            .await
            .map_err(|e| self.err(step, ifname, e))
    }

    /// Sends an RTM_SETLINK.
    pub async fn set_link(
        &self,
        step: &'static str,
        ifname: &str,
        msg: LinkMessage,
    ) -> Result<(), HostError> {
        self.h
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(|e| self.err(step, ifname, e))
    }

    /// Changes bridge-port settings (an RTM_NEWLINK with
    /// `IFLA_INFO_SLAVE_DATA`, built with `rtnetlink::LinkBridgePort`).
    pub async fn set_bridge_port(
        &self,
        step: &'static str,
        ifname: &str,
        msg: LinkMessage,
    ) -> Result<(), HostError> {
        self.h
            .link()
            .set_port(msg)
            .execute()
            .await
            .map_err(|e| self.err(step, ifname, e))
    }

    /// Deletes a link; a link that is already gone is fine.
    pub async fn del_link(&self, ifname: &str, index: u32) -> Result<(), HostError> {
        match self.h.link().del(index).execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(()),
            Err(e) => Err(self.err("delete link", ifname, e)),
        }
    }

    /// A link's addresses of family `A` that belong in a record, in kernel
    /// order (IPv4: primary first).
    pub async fn addrs<A: Family>(
        &self,
        ifname: &str,
        index: u32,
    ) -> Result<Vec<AddrRec<A>>, HostError> {
        let mut stream = self
            .h
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        let mut out = Vec::new();
        while let Some(m) = stream
            .try_next()
            .await
            .map_err(|e| self.err("read addresses", &format!("{} {ifname}", A::NAME), e))?
        {
            if m.header.index != index {
                continue;
            }
            if let Some(rec) = parse_addr::<A>(&m).filter(A::records_addr) {
                out.push(rec);
            }
        }
        Ok(out)
    }

    /// Routes of family `A` whose output interface is `index`, in every
    /// table, that belong in a record (see [`Family::records_route`]);
    /// expired ones left out.
    pub async fn routes<A: Family>(
        &self,
        ifname: &str,
        index: u32,
    ) -> Result<Vec<RouteRec<A>>, HostError> {
        let mut req = RouteMessageBuilder::<IpAddr>::new().build();
        req.header.address_family = A::AF;
        let mut stream = self.h.route().get(req).execute();
        let mut out = Vec::new();
        while let Some(m) = stream
            .try_next()
            .await
            .map_err(|e| self.err("read routes", &format!("{} {ifname}", A::NAME), e))?
        {
            let oif = m.attributes.iter().find_map(|a| match a {
                RouteAttribute::Oif(i) => Some(*i),
                _ => None,
            });
            if oif != Some(index) {
                if oif.is_none()
                    && m.header.address_family == A::AF
                    && m.attributes
                        .iter()
                        .any(|a| matches!(a, RouteAttribute::MultiPath(_)))
                {
                    tracing::warn!(
                        ifname,
                        family = A::NAME,
                        "multipath route ignored (not recorded)"
                    );
                }
                continue;
            }
            if let Some(rec) = parse_route::<A>(&m).filter(A::records_route) {
                out.push(rec);
            }
        }
        Ok(out)
    }

    /// Adds an address exactly as recorded (peer, broadcast, label, scope,
    /// settable flags, protocol), with `lifetimes` as (valid, preferred)
    /// seconds (None = forever). EEXIST is fine.
    pub async fn add_addr<A: Family>(
        &self,
        ifname: &str,
        index: u32,
        a: &AddrRec<A>,
        lifetimes: Option<(u32, u32)>,
    ) -> Result<(), HostError> {
        let mut req = self.h.address().add(index, a.ip.into(), a.prefix_len);
        let msg = req.message_mut();
        // rtnetlink derives a broadcast address; the record has the real one.
        msg.attributes
            .retain(|at| !matches!(at, AddressAttribute::Broadcast(_)));
        if let Some(peer) = a.peer {
            for at in msg.attributes.iter_mut() {
                if let AddressAttribute::Address(x) = at {
                    *x = peer.into();
                }
            }
        }
        if let Some(b) = a.broadcast {
            msg.attributes.push(AddressAttribute::Broadcast(b));
        }
        if let Some(l) = &a.label {
            msg.attributes.push(AddressAttribute::Label(l.clone()));
        }
        msg.header.scope = AddressScope::from(a.scope);
        let flags = a.flags & !TRANSIENT_ADDR_FLAGS;
        if flags != 0 {
            msg.attributes
                .push(AddressAttribute::Flags(AddressFlags::from_bits_retain(
                    flags,
                )));
        }
        if let Some(p) = a.proto {
            msg.attributes
                .push(AddressAttribute::Protocol(AddressProtocol::from(p)));
        }
        if let Some(m) = a.metric {
            msg.attributes.push(AddressAttribute::RoutePriority(m));
        }
        if let Some((valid, preferred)) = lifetimes {
            let mut ci = CacheInfo::default();
            ci.ifa_valid = valid;
            ci.ifa_preferred = preferred;
            msg.attributes.push(AddressAttribute::CacheInfo(ci));
        }
        match req.execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::EEXIST) => {
                tracing::debug!(ifname, ip = %a.ip, "address already present");
                Ok(())
            }
            Err(e) => Err(self.err("add address", &addr_target(a, ifname), e)),
        }
    }

    /// Deletes an address; an address that is already gone is fine.
    pub async fn del_addr<A: Family>(
        &self,
        ifname: &str,
        index: u32,
        a: &AddrRec<A>,
    ) -> Result<(), HostError> {
        let mut msg = AddressMessage::default();
        msg.header.family = A::AF;
        msg.header.index = index;
        msg.header.prefix_len = a.prefix_len;
        msg.attributes.push(AddressAttribute::Local(a.ip.into()));
        msg.attributes
            .push(AddressAttribute::Address(a.peer.unwrap_or(a.ip).into()));
        match self.h.address().del(msg).execute().await {
            Ok(()) => Ok(()),
            Err(e) if matches!(errno(&e), Some(libc::EADDRNOTAVAIL | libc::ENODEV)) => Ok(()),
            Err(e) => Err(self.err("delete address", &addr_target(a, ifname), e)),
        }
    }

    /// Installs a route through `index`. EEXIST: a kernel (connected) route
    /// that came back by itself is fine; anything else is replaced so that
    /// the result is exactly `r`.
    pub async fn add_route<A: Family>(
        &self,
        ifname: &str,
        index: u32,
        r: &RouteRec<A>,
    ) -> Result<(), HostError> {
        let msg = route_msg(index, r);
        match self.h.route().add(msg.clone()).execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::EEXIST) => {
                if r.protocol == RTPROT_KERNEL {
                    return Ok(());
                }
                self.h
                    .route()
                    .add(msg)
                    .replace()
                    .execute()
                    .await
                    .map_err(|e| self.err("replace route", &route_target(r, ifname), e))
            }
            Err(e) => Err(self.err("add route", &route_target(r, ifname), e)),
        }
    }

    /// Deletes a route through `index`; a route that is already gone is fine.
    pub async fn del_route<A: Family>(
        &self,
        ifname: &str,
        index: u32,
        r: &RouteRec<A>,
    ) -> Result<(), HostError> {
        match self.h.route().del(route_msg(index, r)).execute().await {
            Ok(()) => Ok(()),
            Err(e) if matches!(errno(&e), Some(libc::ESRCH | libc::ENODEV)) => Ok(()),
            Err(e) => Err(self.err("delete route", &route_target(r, ifname), e)),
        }
    }

    /// Moves one family's addresses and routes from link `from` to link
    /// `to` (name, index), keeping the host reachable as long as it can:
    /// every address onto `to` first, as `onto` makes it (the record as
    /// `to` gets it, and its lifetimes); then the recorded addresses off
    /// `from`, last first (an IPv4 secondary before its primary, whose
    /// deletion would take it along); the recorded routes off `from` (most
    /// went with their addresses); and `to_routes` onto `to`, in
    /// dependency order ([`Nl::add_routes`]).
    pub async fn move_addrs_routes<A: Family>(
        &self,
        (from, from_ix): (&str, u32),
        (to, to_ix): (&str, u32),
        (addrs, onto): (&[AddrRec<A>], impl Fn(&AddrRec<A>) -> AddrLife<A>),
        routes: &[RouteRec<A>],
        to_routes: &[RouteRec<A>],
    ) -> Result<(), HostError> {
        for a in addrs {
            let (a, life) = onto(a);
            self.add_addr(to, to_ix, &a, life).await?;
        }
        for a in addrs.iter().rev() {
            self.del_addr(from, from_ix, a).await?;
        }
        for r in routes {
            self.del_route(from, from_ix, r).await?;
        }
        self.add_routes(to, to_ix, to_routes).await
    }

    /// Installs routes in dependency order: a gateway route may need a link
    /// route (or another gateway route) first, so failing routes are retried
    /// while each pass makes progress. Returns the first error left.
    pub async fn add_routes<A: Family>(
        &self,
        ifname: &str,
        index: u32,
        routes: &[RouteRec<A>],
    ) -> Result<(), HostError> {
        let mut pending: Vec<&RouteRec<A>> = routes.iter().collect();
        // Link-scope (253) before universe (0), gateway-less before gateway.
        pending.sort_by_key(|r| (std::cmp::Reverse(r.scope), r.gateway.is_some()));
        loop {
            let mut failed = Vec::new();
            let mut last_err = None;
            for r in &pending {
                if let Err(e) = self.add_route(ifname, index, r).await {
                    failed.push(*r);
                    last_err = Some(e);
                }
            }
            match last_err {
                None => return Ok(()),
                Some(e) if failed.len() == pending.len() => return Err(e),
                Some(_) => pending = failed,
            }
        }
    }
}

fn parse_link(m: &LinkMessage) -> Link {
    let mut l = Link {
        index: m.header.index,
        name: String::new(),
        mac: Vec::new(),
        mtu: 0,
        up: m.header.flags.contains(LinkFlags::Up),
        master: None,
        kind: None,
        port: None,
    };
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => l.name = n.clone(),
            LinkAttribute::Address(mac) => l.mac = mac.clone(),
            LinkAttribute::Mtu(x) => l.mtu = *x,
            LinkAttribute::Controller(x) if *x != 0 => l.master = Some(*x),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    match i {
                        LinkInfo::Kind(k) => l.kind = Some(k.clone()),
                        LinkInfo::PortData(InfoPortData::BridgePort(bp)) => {
                            l.port = Some(parse_bridge_port(bp));
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    l
}

fn parse_bridge_port(infos: &[InfoBridgePort]) -> BridgePortFlags {
    let mut f = BridgePortFlags::default();
    for i in infos {
        match i {
            InfoBridgePort::Learning(v) => f.learning = Some(*v),
            InfoBridgePort::UnicastFlood(v) => f.flood = Some(*v),
            InfoBridgePort::MulticastFlood(v) => f.mcast_flood = Some(*v),
            InfoBridgePort::BroadcastFlood(v) => f.bcast_flood = Some(*v),
            InfoBridgePort::Locked(v) => f.locked = Some(*v),
            _ => {}
        }
    }
    f
}

/// "ADDR/LEN on IFNAME", for errors.
fn addr_target<A: Family>(a: &AddrRec<A>, ifname: &str) -> String {
    format!("{}/{} on {ifname}", a.ip, a.prefix_len)
}

/// "DST/LEN [via GW] on IFNAME", for errors.
fn route_target<A: Family>(r: &RouteRec<A>, ifname: &str) -> String {
    match r.gateway {
        Some(g) => format!("{}/{} via {g} on {ifname}", r.dst, r.prefix_len),
        None => format!("{}/{} on {ifname}", r.dst, r.prefix_len),
    }
}

/// An address record from a dump message of family `A` (`None`: another
/// family, or no address in it).
fn parse_addr<A: Family>(m: &AddressMessage) -> Option<AddrRec<A>> {
    if m.header.family != A::AF {
        return None;
    }
    let mut local = None;
    let mut address = None;
    let mut broadcast = None;
    let mut label = None;
    let mut flags = u32::from(m.header.flags.bits());
    let mut lifetimes = None;
    let mut proto = None;
    let mut metric = None;
    for a in &m.attributes {
        match a {
            AddressAttribute::Local(ip) => local = A::from_ip(ip),
            AddressAttribute::Address(ip) => address = A::from_ip(ip),
            AddressAttribute::Broadcast(b) => broadcast = Some(*b),
            AddressAttribute::Label(l) => label = Some(l.clone()),
            AddressAttribute::Flags(f) => flags = f.bits(),
            AddressAttribute::CacheInfo(ci) => lifetimes = Some((ci.ifa_valid, ci.ifa_preferred)),
            AddressAttribute::Protocol(p) => proto = Some(u8::from(*p)),
            AddressAttribute::RoutePriority(p) => metric = Some(*p),
            _ => {}
        }
    }
    let ip = local.or(address)?;
    let peer = address.filter(|a| *a != ip);
    let finite = |x: u32| (x != INFINITY_LIFE_TIME).then_some(x);
    Some(AddrRec {
        ip,
        prefix_len: m.header.prefix_len,
        peer,
        broadcast,
        label,
        scope: u8::from(m.header.scope),
        flags: flags & !TRANSIENT_ADDR_FLAGS,
        valid_lft: lifetimes.and_then(|(v, _)| finite(v)),
        preferred_lft: lifetimes.and_then(|(_, p)| finite(p)),
        proto: proto.filter(|p| *p != 0),
        metric,
    })
}

/// A route record from a dump message of family `A` (`None`: another
/// family, or one already expired, about to be collected).
fn parse_route<A: Family>(m: &RouteMessage) -> Option<RouteRec<A>> {
    if m.header.address_family != A::AF {
        return None;
    }
    let mut r = RouteRec {
        dst: A::UNSPECIFIED,
        prefix_len: m.header.destination_prefix_length,
        gateway: None,
        prefsrc: None,
        metric: None,
        table: u32::from(m.header.table),
        scope: u8::from(m.header.scope),
        protocol: u8::from(m.header.protocol),
        tos: m.header.tos,
        kind: u8::from(m.header.kind),
        onlink: m.header.flags.contains(RouteFlags::Onlink),
        pref: None,
        expires: None,
        hoplimit: None,
        mtu: None,
    };
    for a in &m.attributes {
        match a {
            RouteAttribute::Destination(d) => r.dst = A::from_route(d)?,
            RouteAttribute::Gateway(g) => r.gateway = A::from_route(g),
            RouteAttribute::PrefSource(s) => r.prefsrc = A::from_route(s),
            RouteAttribute::Priority(p) => r.metric = Some(*p),
            RouteAttribute::Table(t) => r.table = *t,
            RouteAttribute::Preference(p) => r.pref = Some(u8::from(*p)),
            RouteAttribute::CacheInfo(ci) => {
                // Clock ticks left, signed (negative: expired, not yet collected).
                let ticks = i64::from(ci.expires.cast_signed());
                if ticks < 0 {
                    return None;
                }
                if ticks > 0 {
                    let secs = (ticks + USER_HZ - 1) / USER_HZ;
                    r.expires = Some(u32::try_from(secs).unwrap_or(u32::MAX));
                }
            }
            RouteAttribute::Metrics(ms) => {
                for x in ms {
                    match x {
                        RouteMetric::Hoplimit(h) => r.hoplimit = Some(*h),
                        RouteMetric::Mtu(v) => r.mtu = Some(*v),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Some(r)
}

/// The RTM_NEWROUTE/RTM_DELROUTE message for `r` through `oif`.
fn route_msg<A: Family>(oif: u32, r: &RouteRec<A>) -> RouteMessage {
    let mut b = RouteMessageBuilder::<IpAddr>::new()
        .table_id(r.table)
        .protocol(RouteProtocol::from(r.protocol))
        .scope(RouteScope::from(r.scope))
        .kind(RouteType::from(r.kind))
        .tos(r.tos)
        .output_interface(oif);
    if let Some(m) = r.metric {
        b = b.priority(m);
    }
    if let Some(e) = r.expires {
        b = b.expires(e);
    }
    if r.onlink {
        b = b.onlink();
    }
    let mut msg = b.build();
    msg.header.address_family = A::AF;
    msg.header.destination_prefix_length = r.prefix_len;
    let attrs = [
        Some(RouteAttribute::Destination(r.dst.into())),
        r.gateway.map(|g| RouteAttribute::Gateway(g.into())),
        r.prefsrc.map(|s| RouteAttribute::PrefSource(s.into())),
        r.pref
            .map(|p| RouteAttribute::Preference(RoutePreference::from(p))),
    ];
    msg.attributes.extend(attrs.into_iter().flatten());
    let metrics: Vec<RouteMetric> = [
        r.hoplimit.map(RouteMetric::Hoplimit),
        r.mtu.map(RouteMetric::Mtu),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !metrics.is_empty() {
        msg.attributes.push(RouteAttribute::Metrics(metrics));
    }
    if r.table > 255 {
        // RouteHeader::table is a u8; the Table attribute carries the id.
        msg.header.table = RouteHeader::RT_TABLE_UNSPEC;
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr6(ip: &str) -> AddrRec<Ipv6Addr> {
        AddrRec::new(ip.parse().expect("ip"), 64)
    }

    #[test]
    fn link_local_is_fe80_slash_10() {
        for (ip, ll) in [
            ("fe80::1", true),
            ("febf::1", true),
            ("fec0::1", false),
            ("2001:db8::1", false),
            ("::1", false),
        ] {
            // Link-local addresses are never recorded.
            assert_eq!(!Ipv6Addr::records_addr(&addr6(ip)), ll, "{ip}");
        }
    }
}
