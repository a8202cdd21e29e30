//! The switch's DHCP server, distributed as OVN's native DHCP is: every
//! agent answers the DHCP client on its own port, with the address the
//! gateway allocated to that port, so it works while the gateway is down.
//! It runs before the firewall, as ARP does for the switch: DHCP with the
//! switch's own server is how the port gets its address, not traffic
//! between instances. DHCP server messages from the port (UDP 67 -> 68)
//! are dropped and counted: no rogue DHCP server on the overlay.
//!
//! Answered (RFC 2131): DISCOVER with an OFFER; REQUEST for the port's
//! address (option 50, or `ciaddr` when renewing, or neither) with an ACK,
//! for another address with a NAK; INFORM with an ACK without lease. A
//! REQUEST naming another server (option 54) is the client choosing it:
//! absorbed. RELEASE and DECLINE are absorbed. The server identifier is
//! the switch's gateway address.
//! Default action: pass (anything that is not a client message to us).

use std::fmt;
use std::net::Ipv4Addr;

use control::MacAddr;
use geneve::dhcp::{self, MessageType};
use geneve::{ethernet, ipv4, udp};

use super::{Ctx, DropReason, Recorder, Step, SwitchName, Verdict, Why as LayerWhy};
use crate::counters::Counters;
use crate::queue::Output;
use crate::tables::{SwitchIdx, Tables};

/// Source MAC of the server's replies on a switch without a router.
pub const SERVER_MAC: MacAddr = MacAddr([0x02, 0x50, 0x56, 0x00, 0xd4, 0xc9]);

/// Why the DHCP layer decided as it did.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Why {
    /// Not a DHCP client message to the switch's server.
    NotDhcp,
    /// UDP 67 -> 68 from the port: a DHCP server on the instance.
    RogueServer { src: Ipv4Addr },
    /// A client without an address (0.0.0.0) sending to `dst`, not to the
    /// switch's server: it may not leave the port.
    Unaddressed { dst: Ipv4Addr },
    /// A client message that is not a valid BOOTREQUEST with a type.
    Malformed,
    /// For a hardware address other than the port's.
    OtherClient,
    /// Answered `got` with `sent`, offering or confirming `addr`.
    Answered {
        got: MessageType,
        sent: MessageType,
        addr: Ipv4Addr,
        switch: SwitchIdx,
    },
    /// REQUEST for `wanted`, which is not the port's address: NAK.
    Refused { wanted: Ipv4Addr },
    /// A REQUEST choosing server `server`, not us.
    OtherServer { server: Ipv4Addr },
    /// RELEASE, DECLINE (or a server message type from a client): nothing to send.
    Absorbed { got: MessageType },
    /// The reply did not fit the port queue.
    TxFull,
}

pub(crate) fn process<R: Recorder>(
    t: &Tables,
    ctx: &mut Ctx<'_>,
    out: &mut Output,
    c: &mut Counters,
    now_ns: u64,
    rec: &mut R,
) -> Step {
    let mut note = |why| rec.note(|| LayerWhy::Dhcp(why));
    let (Some(ip), Some(port)) = (ctx.ipv4, t.port) else {
        note(Why::NotDhcp);
        return Step::Next;
    };
    // Ports 67 and 68 start with a zero byte: most UDP (ephemeral source
    // ports) is let through without reading its header again.
    if ip.protocol != ipv4::PROTO_UDP || ip.l4_first != 0 {
        note(Why::NotDhcp);
        return Step::Next;
    }
    let Some((src_port, dst_port, payload)) = udp_of(ctx.frame) else {
        note(Why::NotDhcp);
        return Step::Next;
    };
    if (src_port, dst_port) == (dhcp::SERVER_PORT, dhcp::CLIENT_PORT) {
        note(Why::RogueServer { src: ip.src });
        return Step::Done(Verdict::Drop(DropReason::RogueDhcpServer));
    }
    let sw = &t.switches[usize::from(port.switch)];
    let to_us = ip.dst == Ipv4Addr::BROADCAST || ip.dst == sw.gateway_ip;
    if (src_port, dst_port) != (dhcp::CLIENT_PORT, dhcp::SERVER_PORT) {
        note(Why::NotDhcp);
        return Step::Next;
    }
    if !to_us {
        if ip.src.is_unspecified() {
            // Port security let 0.0.0.0 through for the switch's server only.
            note(Why::Unaddressed { dst: ip.dst });
            return Step::Done(Verdict::Drop(DropReason::SpoofedSrcIp));
        }
        note(Why::NotDhcp);
        return Step::Next;
    }
    let msg = match dhcp::Packet::new_checked(payload) {
        Ok(p) if p.op() == dhcp::OP_REQUEST => p,
        _ => {
            note(Why::Malformed);
            return Step::Done(Verdict::Drop(DropReason::Malformed));
        }
    };
    let Some(got) = msg.message_type() else {
        note(Why::Malformed);
        return Step::Done(Verdict::Drop(DropReason::Malformed));
    };
    c.dhcp.received(got);
    if msg.chaddr() != port.mac.0 {
        note(Why::OtherClient);
        return Step::Done(Verdict::Drop(DropReason::Malformed));
    }
    let server_id = sw.gateway_ip;
    let (sent, yiaddr, lease) = match got {
        MessageType::Discover => (MessageType::Offer, port.ip, true),
        MessageType::Request => {
            if let Some(server) = msg.addr_option(dhcp::opt::SERVER_ID)
                && server != server_id
            {
                note(Why::OtherServer { server });
                return Step::Done(Verdict::Absorbed);
            }
            let ciaddr = Some(msg.ciaddr()).filter(|a| !a.is_unspecified());
            let wanted = msg.addr_option(dhcp::opt::REQUESTED_IP).or(ciaddr);
            match wanted {
                Some(w) if w != port.ip => {
                    note(Why::Refused { wanted: w });
                    (MessageType::Nak, Ipv4Addr::UNSPECIFIED, false)
                }
                _ => (MessageType::Ack, port.ip, true),
            }
        }
        MessageType::Inform => (MessageType::Ack, Ipv4Addr::UNSPECIFIED, false),
        other => {
            if other == MessageType::Release {
                c.dhcp.bound_at_ns = 0;
            }
            note(Why::Absorbed { got: other });
            return Step::Done(Verdict::Absorbed);
        }
    };
    let nak = sent == MessageType::Nak;
    let router = t.router_of(port.switch);
    let gateway = router.map(|_| sw.gateway_ip);
    let reply = dhcp::Reply {
        msg: sent,
        xid: msg.xid(),
        flags: msg.flags(),
        ciaddr: msg.ciaddr(),
        giaddr: msg.giaddr(),
        chaddr: msg.chaddr(),
        yiaddr,
        server_id,
        lease_secs: lease.then_some(sw.dhcp.lease_secs),
        subnet_mask: (!nak).then(|| sw.subnet.netmask()),
        router: gateway.filter(|_| !nak),
        dns: if nak { &[] } else { &sw.dhcp.dns },
        domain: sw.dhcp.domain.as_deref().filter(|_| !nak),
        mtu: (!nak).then_some(t.host.overlay_mtu),
        routes: if nak { &[] } else { &sw.dhcp.routes },
        message: nak.then_some("requested address is not this port's"),
    };
    let from = router.map_or(SERVER_MAC, |r| r.mac);
    let mut len = 0;
    let pushed = out.port.push_with(reply.destination().1, |buf| {
        len = dhcp::emit_reply_frame(buf, from.0, &reply).ok()?;
        Some(len)
    });
    if !pushed {
        note(Why::TxFull);
        return Step::Done(Verdict::Drop(DropReason::TxFull));
    }
    c.port_tx.add(len);
    c.dhcp.sent(sent);
    if sent == MessageType::Ack && lease {
        c.dhcp.bound_at_ns = now_ns.max(1);
    }
    if !nak {
        note(Why::Answered {
            got,
            sent,
            addr: yiaddr,
            switch: port.switch,
        });
    }
    Step::Done(Verdict::Replied)
}

/// (source port, destination port, payload) of an unfragmented IPv4/UDP
/// frame (port security also asks it, for a client without an address).
pub(crate) fn udp_of(frame: &[u8]) -> Option<(u16, u16, &[u8])> {
    let l3 = frame.get(ethernet::HEADER_LEN..)?;
    let ip = ipv4::Packet::new_checked(l3).ok()?;
    if ip.protocol() != ipv4::PROTO_UDP || ip.more_frags() || ip.frag_offset() != 0 {
        return None;
    }
    let l4_at = ip.header_len();
    let l4 = l3.get(l4_at..usize::from(ip.total_len()))?;
    let u = udp::Packet::new_checked(l4).ok()?;
    let (src, dst, end) = (u.src_port(), u.dst_port(), usize::from(u.len()));
    Some((src, dst, l4.get(udp::HEADER_LEN..end)?))
}

impl Why {
    pub(crate) fn write(&self, t: &Tables, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Why::NotDhcp => f.write_str("not a DHCP client message to the switch's server: pass"),
            Why::RogueServer { src } => write!(
                f,
                "DHCP server message (UDP 67 -> 68) from the port ({src}): drop (rogue_dhcp_server)"
            ),
            Why::Unaddressed { dst } => write!(
                f,
                "DHCP client message from 0.0.0.0 to {dst}, not to the switch's server: drop (spoofed_src_ip)"
            ),
            Why::Malformed => f.write_str("malformed DHCP client message: drop"),
            Why::OtherClient => {
                f.write_str("DHCP message for another hardware address than the port's: drop")
            }
            Why::Answered {
                got,
                sent,
                addr,
                switch,
            } => write!(
                f,
                "{} on {}: {} {addr} sent to the port",
                got.name(),
                SwitchName(t, switch),
                sent.name()
            ),
            Why::Refused { wanted } => write!(
                f,
                "DHCPREQUEST for {wanted}, which is not the port's address: DHCPNAK sent to the port"
            ),
            Why::OtherServer { server } => write!(
                f,
                "DHCPREQUEST choosing server {server}, not this switch's: absorbed"
            ),
            Why::Absorbed { got } => write!(f, "{}: nothing to answer, absorbed", got.name()),
            Why::TxFull => f.write_str("the DHCP reply did not fit the port queue: drop"),
        }
    }
}
