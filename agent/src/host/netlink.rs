//! rtnetlink helpers for the host module: one [`Nl`] per network namespace,
//! with reads that turn dumps into plain records ([`Link`], [`AddrRec`],
//! [`RouteRec`]) and writes that carry the step and interface in their error
//! and tolerate the "already done" errno where that makes the caller
//! idempotent (EEXIST on add, ENODEV/ESRCH/EADDRNOTAVAIL on delete).

use std::net::{IpAddr, Ipv4Addr};

use futures_util::TryStreamExt;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressMessage, AddressScope, CacheInfo,
};
use netlink_packet_route::link::{
    InfoBridgePort, InfoKind, InfoPortData, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
    RouteType,
};
use rtnetlink::{Handle, RouteMessageBuilder};

use super::{AddrRec, HostError, RouteRec};

/// `RT_TABLE_LOCAL`: kernel-owned local/broadcast routes, never recorded.
pub const RT_TABLE_LOCAL: u32 = 255;
/// `RTPROT_KERNEL`: routes the kernel derives from addresses.
pub const RTPROT_KERNEL: u8 = 2;
/// Address lifetime meaning "forever".
pub const INFINITY_LIFE_TIME: u32 = u32::MAX;
/// Address flags the kernel computes itself; never replayed (for IPv6,
/// 0x01 is "temporary", which only the kernel sets either).
pub const TRANSIENT_ADDR_FLAGS: u32 = 0x01 /* secondary */
    | 0x04 /* optimistic */
    | 0x08 /* dadfailed */
    | 0x20 /* deprecated */
    | 0x40 /* tentative */
    | 0x80 /* permanent */;

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
    pub(super) h: Handle,
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

    pub(super) fn err(
        &self,
        step: &'static str,
        ifname: &str,
        source: rtnetlink::Error,
    ) -> HostError {
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

    /// IPv4 addresses of a link, in kernel order (primary first).
    pub async fn addrs_v4(&self, ifname: &str, index: u32) -> Result<Vec<AddrRec>, HostError> {
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
            .map_err(|e| self.err("read addresses", ifname, e))?
        {
            if m.header.family != AddressFamily::Inet || m.header.index != index {
                continue;
            }
            if let Some(rec) = parse_addr(&m) {
                out.push(rec);
            }
        }
        Ok(out)
    }

    /// IPv4 routes whose output interface is `index`, in every table except
    /// `local` (which the kernel derives from the addresses).
    pub async fn routes_v4(&self, ifname: &str, index: u32) -> Result<Vec<RouteRec>, HostError> {
        let mut stream = self
            .h
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute();
        let mut out = Vec::new();
        while let Some(m) = stream
            .try_next()
            .await
            .map_err(|e| self.err("read routes", ifname, e))?
        {
            if m.header.address_family != AddressFamily::Inet {
                continue;
            }
            let oif = m.attributes.iter().find_map(|a| match a {
                RouteAttribute::Oif(i) => Some(*i),
                _ => None,
            });
            if oif != Some(index) {
                if oif.is_none()
                    && m.attributes
                        .iter()
                        .any(|a| matches!(a, RouteAttribute::MultiPath(_)))
                {
                    tracing::warn!(ifname, "multipath route ignored (not recorded)");
                }
                continue;
            }
            let rec = parse_route(&m);
            if rec.table == RT_TABLE_LOCAL {
                continue;
            }
            out.push(rec);
        }
        Ok(out)
    }

    /// Adds an IPv4 address exactly as recorded (peer, broadcast, scope,
    /// settable flags), with `label` (None = the device name) and
    /// `lifetimes` as (valid, preferred) seconds (None = forever).
    /// EEXIST is fine.
    pub async fn add_addr(
        &self,
        ifname: &str,
        index: u32,
        a: &AddrRec,
        label: Option<String>,
        lifetimes: Option<(u32, u32)>,
    ) -> Result<(), HostError> {
        let mut req = self.h.address().add(index, IpAddr::V4(a.ip), a.prefix_len);
        let msg = req.message_mut();
        msg.attributes
            .retain(|at| !matches!(at, AddressAttribute::Broadcast(_)));
        if let Some(peer) = a.peer {
            for at in msg.attributes.iter_mut() {
                if let AddressAttribute::Address(x) = at {
                    *x = IpAddr::V4(peer);
                }
            }
        }
        if let Some(b) = a.broadcast {
            msg.attributes.push(AddressAttribute::Broadcast(b));
        }
        if let Some(l) = label {
            msg.attributes.push(AddressAttribute::Label(l));
        }
        msg.header.scope = AddressScope::from(a.scope);
        let flags = a.flags & !TRANSIENT_ADDR_FLAGS;
        if flags != 0 {
            msg.attributes
                .push(AddressAttribute::Flags(AddressFlags::from_bits_retain(
                    flags,
                )));
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
            Err(e) => Err(self.err("add address", ifname, e)),
        }
    }

    /// Deletes an IPv4 address; an address that is already gone is fine.
    pub async fn del_addr(&self, ifname: &str, index: u32, a: &AddrRec) -> Result<(), HostError> {
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.index = index;
        msg.header.prefix_len = a.prefix_len;
        msg.attributes
            .push(AddressAttribute::Local(IpAddr::V4(a.ip)));
        msg.attributes.push(AddressAttribute::Address(IpAddr::V4(
            a.peer.unwrap_or(a.ip),
        )));
        match self.h.address().del(msg).execute().await {
            Ok(()) => Ok(()),
            Err(e) if matches!(errno(&e), Some(libc::EADDRNOTAVAIL | libc::ENODEV)) => Ok(()),
            Err(e) => Err(self.err("delete address", ifname, e)),
        }
    }

    /// Installs a route through `index`. EEXIST: a kernel (connected) route
    /// that came back by itself is fine; anything else is replaced so that
    /// the result is exactly `r`.
    pub async fn add_route(&self, ifname: &str, index: u32, r: &RouteRec) -> Result<(), HostError> {
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
                    .map_err(|e| self.err("replace route", ifname, e))
            }
            Err(e) => Err(self.err("add route", ifname, e)),
        }
    }

    /// Deletes a route through `index`; a route that is already gone is fine.
    pub async fn del_route(&self, ifname: &str, index: u32, r: &RouteRec) -> Result<(), HostError> {
        match self.h.route().del(route_msg(index, r)).execute().await {
            Ok(()) => Ok(()),
            Err(e) if matches!(errno(&e), Some(libc::ESRCH | libc::ENODEV)) => Ok(()),
            Err(e) => Err(self.err("delete route", ifname, e)),
        }
    }

    /// Installs routes in dependency order: a gateway route may need a link
    /// route (or another gateway route) first, so failing routes are retried
    /// while each pass makes progress. Returns the first error left.
    pub async fn add_routes(
        &self,
        ifname: &str,
        index: u32,
        routes: &[RouteRec],
    ) -> Result<(), HostError> {
        let mut pending: Vec<&RouteRec> = routes.iter().collect();
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

fn parse_addr(m: &AddressMessage) -> Option<AddrRec> {
    let mut local = None;
    let mut address = None;
    let mut broadcast = None;
    let mut label = None;
    let mut flags = u32::from(m.header.flags.bits());
    let mut lifetimes = None;
    for a in &m.attributes {
        match a {
            AddressAttribute::Local(IpAddr::V4(ip)) => local = Some(*ip),
            AddressAttribute::Address(IpAddr::V4(ip)) => address = Some(*ip),
            AddressAttribute::Broadcast(b) => broadcast = Some(*b),
            AddressAttribute::Label(l) => label = Some(l.clone()),
            AddressAttribute::Flags(f) => flags = f.bits(),
            AddressAttribute::CacheInfo(ci) => lifetimes = Some((ci.ifa_valid, ci.ifa_preferred)),
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
    })
}

fn parse_route(m: &RouteMessage) -> RouteRec {
    let mut r = RouteRec {
        dst: Ipv4Addr::UNSPECIFIED,
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
    };
    for a in &m.attributes {
        match a {
            RouteAttribute::Destination(RouteAddress::Inet(d)) => r.dst = *d,
            RouteAttribute::Gateway(RouteAddress::Inet(g)) => r.gateway = Some(*g),
            RouteAttribute::PrefSource(RouteAddress::Inet(s)) => r.prefsrc = Some(*s),
            RouteAttribute::Priority(p) => r.metric = Some(*p),
            RouteAttribute::Table(t) => r.table = *t,
            _ => {}
        }
    }
    r
}

fn route_msg(oif: u32, r: &RouteRec) -> RouteMessage {
    let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(r.dst, r.prefix_len)
        .table_id(r.table)
        .protocol(RouteProtocol::from(r.protocol))
        .scope(RouteScope::from(r.scope))
        .kind(RouteType::from(r.kind))
        .tos(r.tos)
        .output_interface(oif);
    if let Some(g) = r.gateway {
        b = b.gateway(g);
    }
    if let Some(s) = r.prefsrc {
        b = b.pref_source(s);
    }
    if let Some(m) = r.metric {
        b = b.priority(m);
    }
    if r.onlink {
        b = b.onlink();
    }
    let mut msg = b.build();
    if r.table > 255 {
        // RouteHeader::table is a u8; the Table attribute carries the id.
        msg.header.table = RouteHeader::RT_TABLE_UNSPEC;
    }
    msg
}
