//! Runs a parsed command: the API calls it needs (through [`Api`] /
//! [`GwApi`], so tests answer with canned replies), then the formatter.
//! `trace` resolves default MACs (the port's own, the router's for an
//! off-subnet destination, else the ARP table's) and builds the frame;
//! `capture` turns frames into lines or a pcap file's bytes.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use agent_api::{
    ArpTableReply, CaptureReply, CountersReply, DhcpReply, FirewallStats, InterfacesReply,
    LoadBalancersReply, NatSessionsReply, Reply, Request, RoutersReply, StatusReply, Switch,
    SwitchRef, SwitchesReply, TextReply, TraceFrom as ApiFrom, TraceReply, VersionReply,
};
use geneve::MacAddr;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::client::{Api, decode};
use crate::error::Error;
use crate::format::{self, LbView};
use crate::grammar::{
    ArgKind, Capture, CapturePoint, Command, FwView, Mode, Parsed, SwitchTable, Trace, TraceFrom,
};
use crate::http::GwApi;
use crate::packet::{Proto, mac_string};
use crate::pcap::{self, Link};
use crate::timefmt::Tz;

/// nsxcli's own version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What a command produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Text for stdout.
    pub text: String,
    /// A file to write (capture to pcap).
    pub file: Option<(PathBuf, Vec<u8>)>,
}

impl Outcome {
    fn text(text: String) -> Outcome {
        Outcome { text, file: None }
    }
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string()) + "\n"
}

/// Asks `req` and reads the reply as `T`; the reply object as it came is
/// kept for `--json`.
fn ask<T: DeserializeOwned>(api: &mut dyn Api, req: &Request) -> Result<(Value, T), Error> {
    let v = api.call(req)?;
    let t = decode(&v)?;
    Ok((v, t))
}

/// Asks `req` for its typed reply only.
fn get<T: DeserializeOwned>(api: &mut dyn Api, req: &Request) -> Result<T, Error> {
    ask(api, req).map(|(_, t)| t)
}

/// Text or JSON, from one reply.
fn view<T>(json: bool, (raw, reply): (Value, T), f: impl FnOnce(&T) -> String) -> Outcome {
    Outcome::text(if json { pretty(&raw) } else { f(&reply) })
}

/// Runs `p` against the agent's API.
pub fn agent(api: &mut dyn Api, p: &Parsed, tz: Tz) -> Result<Outcome, Error> {
    let json = p.json;
    Ok(match &p.command {
        Command::GatewayStatus => view(json, ask::<StatusReply>(api, &Request::Status)?, |s| {
            format::gateway_status(s, tz)
        }),
        Command::VmNetworkMode => view(
            json,
            ask::<StatusReply>(api, &Request::Status)?,
            format::vm_network_mode,
        ),
        Command::Interfaces => view(
            json,
            ask::<InterfacesReply>(api, &Request::Interfaces)?,
            format::interfaces,
        ),
        Command::Switches => view(
            json,
            ask::<SwitchesReply>(api, &Request::Switches)?,
            format::switches,
        ),
        Command::SwitchTable { switch, table } => {
            let sws: SwitchesReply = get(api, &Request::Switches)?;
            let sw = format::find_switch(&sws, switch)?;
            let (raw, text, entries) = match table {
                SwitchTable::Mac => {
                    let (raw, reply) = ask::<agent_api::MacTableReply>(api, &Request::MacTable)?;
                    let entries: Vec<Value> = reply
                        .entries
                        .iter()
                        .filter(|e| e.switch == sw.name || e.vni == sw.vni)
                        .filter_map(|e| serde_json::to_value(e).ok())
                        .collect();
                    (raw, format::mac_table(&reply, sw), entries)
                }
                SwitchTable::Arp => {
                    let req = Request::ArpTable {
                        switch: Some(SwitchRef::Name(sw.name.clone())),
                    };
                    let (raw, reply) = ask::<ArpTableReply>(api, &req)?;
                    let entries: Vec<Value> = format::arp_entries_on(&reply, sw)
                        .into_iter()
                        .filter_map(|e| serde_json::to_value(e).ok())
                        .collect();
                    (raw, format::arp_table(&reply, sw), entries)
                }
            };
            if json {
                Outcome::text(pretty(&json!({
                    "api_version": raw["api_version"].clone(),
                    "switch": sw.name,
                    "vni": sw.vni,
                    "entries": entries,
                })))
            } else {
                Outcome::text(text)
            }
        }
        Command::Routers => view(
            json,
            ask::<RoutersReply>(api, &Request::Routers)?,
            format::routers,
        ),
        Command::DhcpServer { switch } => {
            let sws: SwitchesReply = get(api, &Request::Switches)?;
            let sw = format::find_switch(&sws, switch)?;
            let req = Request::Dhcp {
                switch: Some(SwitchRef::Name(sw.name.clone())),
            };
            view(json, ask::<DhcpReply>(api, &req)?, format::dhcp_server)
        }
        Command::LoadBalancers(v) => view(
            json,
            ask::<LoadBalancersReply>(api, &Request::LoadBalancers { vip: None })?,
            |r| format::load_balancers(r, *v),
        ),
        Command::LoadBalancer { vip } => view(
            json,
            ask::<LoadBalancersReply>(
                api,
                &Request::LoadBalancers {
                    vip: Some(vip.clone()),
                },
            )?,
            format::load_balancer,
        ),
        Command::NatSessions => view(
            json,
            ask::<NatSessionsReply>(api, &Request::NatSessions { limit: None })?,
            format::nat_sessions,
        ),
        Command::DhcpLeases => view(
            json,
            ask::<DhcpReply>(api, &Request::Dhcp { switch: None })?,
            format::dhcp_leases,
        ),
        Command::Forwarding { router } => {
            let rs: RoutersReply = get(api, &Request::Routers)?;
            let r = format::find_router(&rs, router)?;
            if json {
                Outcome::text(pretty(&serde_json::to_value(r).unwrap_or(Value::Null)))
            } else {
                Outcome::text(format::forwarding(r))
            }
        }
        Command::Tunnels => {
            let s: StatusReply = get(api, &Request::Status)?;
            let (raw, c) = ask::<CountersReply>(api, &Request::Counters)?;
            if json {
                Outcome::text(pretty(&json!({
                    "api_version": raw["api_version"].clone(),
                    "underlay_ip": s.underlay_ip,
                    "tep_id": s.tep_id,
                    "tunnels": raw["tunnels"].clone(),
                })))
            } else {
                Outcome::text(format::tunnels(&s, &c))
            }
        }
        Command::Firewall(v) => {
            let req = match v {
                FwView::Rules => Request::GetRules,
                FwView::Addrsets => Request::GetAddrSets,
                FwView::Flows => Request::GetFlows,
                FwView::Stats => Request::FirewallStats,
            };
            if *v == FwView::Stats {
                view(
                    json,
                    ask::<FirewallStats>(api, &req)?,
                    format::firewall_stats,
                )
            } else {
                view(json, ask::<TextReply>(api, &req)?, format::text)
            }
        }
        Command::FirewallRule(id) => {
            let rules: TextReply = get(api, &Request::GetRules)?;
            let (raw, stats) = ask::<FirewallStats>(api, &Request::FirewallStats)?;
            let text = format::firewall_rule(&rules, &stats, *id)?;
            if json {
                let stat = stats
                    .rules
                    .iter()
                    .find(|r| r.id == *id)
                    .and_then(|r| serde_json::to_value(r).ok())
                    .unwrap_or(Value::Null);
                let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("rule ")).collect();
                Outcome::text(pretty(&json!({
                    "api_version": raw["api_version"].clone(),
                    "id": id, "rule": lines, "stats": stat,
                })))
            } else {
                Outcome::text(text)
            }
        }
        Command::Statistics => view(
            json,
            ask::<CountersReply>(api, &Request::Counters)?,
            format::statistics,
        ),
        Command::Version => {
            let r = match ask::<Reply<VersionReply>>(api, &Request::Version) {
                Ok(r) => r,
                // An agent from before `version`: `status` has the same fields.
                Err(Error::Api(m)) if m.contains("unknown command") => ask(api, &Request::Status)?,
                Err(e) => return Err(e),
            };
            view(json, r, |r| format::version(r, VERSION))
        }
        Command::ConfigVersion => view(json, ask::<StatusReply>(api, &Request::Status)?, |s| {
            format::config_version(s, tz)
        }),
        Command::Trace(t) => trace(api, t, json)?,
        Command::Capture(c) => capture(api, c, json, tz)?,
        Command::Help(topic) => Outcome::text(crate::grammar::help(Mode::Agent, topic)?),
        Command::Exit => Outcome::default(),
        Command::Instances | Command::Certificates | Command::NatRules { .. } => {
            return Err(Error::Failed(
                "This is a gateway command (nsxcli --gateway)".into(),
            ));
        }
    })
}

/// The MAC `ip` is reached at on switch `sw`: the ARP table's, else the
/// switch's router's when `ip` is off the subnet.
fn resolve_mac(api: &mut dyn Api, sw: &Switch, ip: Ipv4Addr, role: &str) -> Result<MacAddr, Error> {
    let arp: ArpTableReply = get(
        api,
        &Request::ArpTable {
            switch: Some(SwitchRef::Name(sw.name.clone())),
        },
    )?;
    if let Some(e) = format::arp_entries_on(&arp, sw)
        .into_iter()
        .find(|e| e.ip == ip)
    {
        return Ok(e.mac.0);
    }
    let subnet = sw.subnet;
    let sw_name = &sw.name;
    if !subnet.contains(&ip) {
        let rs: RoutersReply = get(api, &Request::Routers)?;
        if let Some(r) = rs
            .routers
            .iter()
            .find(|r| r.switches.iter().any(|x| x == sw_name))
        {
            return Ok(r.mac.0);
        }
        return Err(Error::Failed(format!(
            "{ip} is off {sw_name}'s subnet {subnet} and no router is attached to {sw_name}; give {role} <mac>"
        )));
    }
    Err(Error::Failed(format!(
        "No ARP entry for {ip} on {sw_name}; give {role} <mac>"
    )))
}

/// The MAC a micro-segmentation trace uses for the other end (the next hop
/// or the sender on the underlay): it does not matter to the firewall.
const PEER_MAC: MacAddr = [0x02, 0, 0, 0, 0, 0x01];

/// The NIC's MAC (`interfaces`, role `nic`).
fn nic_mac(api: &mut dyn Api) -> Result<MacAddr, Error> {
    let r: InterfacesReply = get(api, &Request::Interfaces)?;
    let bad = |reason: String| Error::BadReply {
        what: "the agent".into(),
        reason,
    };
    let nic = r
        .interfaces
        .iter()
        .find(|i| i.role == agent_api::Role::Nic)
        .ok_or_else(|| bad("interfaces: no NIC".into()))?;
    let mac = nic.mac.as_deref().unwrap_or("");
    crate::packet::parse_mac(mac).map_err(|_| bad(format!("nic mac: not a MAC address: {mac:?}")))
}

fn trace(api: &mut dyn Api, t: &Trace, json: bool) -> Result<Outcome, Error> {
    let p = &t.packet;
    let status: StatusReply = get(api, &Request::Status)?;
    let microseg = status.mode == agent_api::Mode::MicroSegmentation;
    let nic = &status.nic;
    let (smac, dmac, from_api, tunnel, from) = match &t.from {
        TraceFrom::Port if microseg => {
            let smac = match p.smac {
                Some(m) => m,
                None => nic_mac(api)?,
            };
            let dmac = p.dmac.unwrap_or(PEER_MAC);
            (
                smac,
                dmac,
                ApiFrom::Port,
                None,
                format!("this host, out of {nic} (micro-segmentation)"),
            )
        }
        TraceFrom::Nic if microseg => {
            let dmac = match p.dmac {
                Some(m) => m,
                None => nic_mac(api)?,
            };
            let smac = p.smac.unwrap_or(PEER_MAC);
            (
                smac,
                dmac,
                ApiFrom::Underlay,
                None,
                format!("the underlay, into {nic} (micro-segmentation)"),
            )
        }
        TraceFrom::Nic => {
            return Err(Error::usage(
                "This instance runs overlay mode: say which tunnel the packet comes from",
                "trace underlay from <tep-ip> vni <vni> <packet>",
            ));
        }
        TraceFrom::Underlay { .. } if microseg => {
            return Err(Error::usage(
                "This instance runs micro-segmentation: there are no tunnels",
                "trace underlay <packet>",
            ));
        }
        TraceFrom::Port => {
            let Some(ov) = &status.overlay else {
                return Err(Error::Failed(
                    "This instance has no overlay port yet (not placed on a switch)".into(),
                ));
            };
            let smac = p.smac.unwrap_or(ov.mac.0);
            let dmac = match (p.dmac, p.proto) {
                (Some(m), _) => m,
                (None, Proto::Arp) => geneve::ethernet::BROADCAST,
                (None, _) => {
                    let sws: SwitchesReply = get(api, &Request::Switches)?;
                    let sw = format::find_switch(&sws, &ov.switch)?;
                    resolve_mac(api, sw, p.dst, "dmac")?
                }
            };
            let from = format!("port {} on {} ({})", ov.ip, ov.switch, ov.interface);
            (smac, dmac, ApiFrom::Port, None, from)
        }
        TraceFrom::Underlay { tep, vni } => {
            let need = p.smac.is_none() || (p.dmac.is_none() && p.proto != Proto::Arp);
            let sws: SwitchesReply = if need {
                get(api, &Request::Switches)?
            } else {
                SwitchesReply {
                    switches: Vec::new(),
                }
            };
            let sw = || format::find_switch(&sws, &vni.to_string());
            let smac = match p.smac {
                Some(m) => m,
                None => resolve_mac(api, sw()?, p.src, "smac")?,
            };
            let dmac = match (p.dmac, p.proto) {
                (Some(m), _) => m,
                (None, Proto::Arp) => geneve::ethernet::BROADCAST,
                (None, _) => resolve_mac(api, sw()?, p.dst, "dmac")?,
            };
            (
                smac,
                dmac,
                ApiFrom::Underlay,
                Some((*tep, *vni)),
                format!("tunnel from {tep}, vni {vni:#x}"),
            )
        }
    };
    let frame = p.build(smac, dmac).map_err(Error::Failed)?;
    let req = Request::Trace {
        from: from_api,
        frame_hex: agent_api::Frame(frame.clone()),
        src_tep: tunnel.map(|(tep, _)| tep),
        vni: tunnel.map(|(_, vni)| vni),
    };
    let (raw, reply) = ask::<TraceReply>(api, &req)?;
    if json {
        return Ok(Outcome::text(pretty(&raw)));
    }
    let header = format!(
        "From : {from}\nFrame : {} > {}, {} bytes\nPacket : {}\n",
        mac_string(&smac),
        mac_string(&dmac),
        frame.len(),
        p.describe()
    );
    Ok(Outcome::text(header + &format::trace(&reply)))
}

fn capture(api: &mut dyn Api, c: &Capture, json: bool, tz: Tz) -> Result<Outcome, Error> {
    let (point, link) = match &c.point {
        CapturePoint::Port => (agent_api::CapturePoint::Port, Link::Ethernet),
        CapturePoint::Underlay => (agent_api::CapturePoint::Underlay, Link::Ipv4),
        CapturePoint::Switch(s) => (agent_api::CapturePoint::Switch(s.clone()), Link::Ethernet),
    };
    let req = Request::Capture {
        point,
        count: c.count,
        timeout_ms: c.timeout_ms,
        snaplen: c.snaplen,
    };
    let (raw, reply) = ask::<CaptureReply>(api, &req)?;
    // The agent says how its frames start; trust it over our guess.
    let link = Link::from_linktype(u64::from(reply.linktype)).unwrap_or(link);
    let frames = pcap::frames(&reply)?;
    let truncated = reply.truncated;
    // Ending on the count is the normal case; say why only otherwise.
    let ended = Some(reply.ended.as_str()).filter(|e| *e != "count");
    let file = c.file.as_ref().map(|f| {
        (
            f.clone(),
            pcap::file(link, c.snaplen.unwrap_or(65_535), &frames),
        )
    });
    let text = if json {
        pretty(&raw)
    } else if let Some(f) = &c.file {
        format!(
            "{} to {} ({})\n",
            pcap::count_line(frames.len(), truncated, ended),
            f.display(),
            match link {
                Link::Ethernet => "pcap, linktype ETHERNET",
                Link::Ipv4 => "pcap, linktype RAW (IPv4)",
            },
        )
    } else {
        pcap::lines(&frames, link, truncated, ended, tz)
    };
    Ok(Outcome { text, file })
}

/// `word` as one URL path segment: unreserved characters as they are,
/// every other byte percent-encoded (a name typed at the shell never
/// escapes its segment).
fn path_segment(word: &str) -> String {
    let mut out = String::new();
    for b in word.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b':') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Text or JSON, from one gateway reply.
fn gw_view(json: bool, reply: &Value, f: impl FnOnce(&Value) -> String) -> Outcome {
    Outcome::text(if json { pretty(reply) } else { f(reply) })
}

/// The gateway's virtual servers with their health verdicts.
const LOAD_BALANCERS: &str = "/api/v1/load-balancers";

/// `GET path` of an endpoint older gateways lack: their 404 says so
/// (`/api/v1/certificates`: "no certificates endpoint").
fn get_newer(gw: &mut dyn GwApi, path: &str) -> Result<Value, Error> {
    gw.get(path).map_err(|e| match e {
        Error::Api(m) if m.contains("HTTP 404") => {
            let endpoint = path.rsplit('/').next().unwrap_or(path);
            Error::Api(format!(
                "{m}; this gateway has no {endpoint} endpoint yet (upgrade nsx-gateway)"
            ))
        }
        other => other,
    })
}

/// Runs `p` against the gateway's admin API.
pub fn gateway(gw: &mut dyn GwApi, p: &Parsed, tz: Tz) -> Result<Outcome, Error> {
    let json = p.json;
    Ok(match &p.command {
        Command::Instances => gw_view(json, &gw.get("/api/v1/instances")?, format::gw_instances),
        Command::Switches => {
            let s = gw.get("/api/v1/switches")?;
            if json {
                Outcome::text(pretty(&s))
            } else {
                let i = gw.get("/api/v1/instances")?;
                Outcome::text(format::gw_switches(&s, &i))
            }
        }
        Command::Routers => gw_view(json, &gw.get("/api/v1/routers")?, format::gw_routers),
        Command::NatRules { router } => {
            let path = format!("/api/v1/routers/{}/nat-rules", path_segment(router));
            gw_view(json, &gw.get(&path)?, format::gw_nat_rules)
        }
        Command::LoadBalancers(LbView::Pool) => gw_view(
            json,
            &get_newer(gw, LOAD_BALANCERS)?,
            format::gw_load_balancers,
        ),
        Command::LoadBalancer { vip } => {
            let (protocol, at) = agent_api::parse_virtual_server(vip).map_err(|why| {
                Error::usage(
                    format!("Invalid <vip:port> \"{vip}\": {why}"),
                    "get load-balancer <vip:port>",
                )
            })?;
            let all = get_newer(gw, LOAD_BALANCERS)?;
            let vs = format::find_gw_virtual_server(&all, protocol, at)?;
            gw_view(json, vs, |v| format::gw_load_balancer(v, tz))
        }
        Command::Certificates => {
            let r = get_newer(gw, "/api/v1/certificates")?;
            gw_view(json, &r, |r| format::gw_certificates(r, tz))
        }
        Command::Help(topic) => Outcome::text(crate::grammar::help(Mode::Gateway, topic)?),
        Command::Exit => Outcome::default(),
        _ => {
            return Err(Error::Failed(
                "This is an instance command (nsxcli without --gateway)".into(),
            ));
        }
    })
}

/// Live names for completion, asked of the agent (errors give none).
pub fn agent_names(api: &mut dyn Api, kind: ArgKind) -> Vec<String> {
    match kind {
        ArgKind::Switch | ArgKind::Vni => {
            let Ok(s) = get::<SwitchesReply>(api, &Request::Switches) else {
                return Vec::new();
            };
            let vnis = s.switches.iter().map(|x| format!("{:#x}", x.vni));
            if kind == ArgKind::Vni {
                vnis.collect()
            } else {
                s.switches
                    .iter()
                    .map(|x| x.name.clone())
                    .chain(vnis)
                    .collect()
            }
        }
        ArgKind::Router => get::<RoutersReply>(api, &Request::Routers)
            .map(|r| r.routers.into_iter().map(|x| x.name).collect())
            .unwrap_or_default(),
        ArgKind::RuleId => get::<FirewallStats>(api, &Request::FirewallStats)
            .map(|r| r.rules.iter().map(|x| x.id.to_string()).collect())
            .unwrap_or_default(),
        ArgKind::Tep => {
            let Ok(s) = get::<SwitchesReply>(api, &Request::Switches) else {
                return Vec::new();
            };
            let mut out: Vec<String> = Vec::new();
            for e in s.switches.iter().flat_map(|sw| &sw.endpoints) {
                let e = e.to_string();
                if !out.contains(&e) {
                    out.push(e);
                }
            }
            out
        }
        ArgKind::Ip | ArgKind::Mac => {
            let Ok(a) = get::<ArpTableReply>(api, &Request::ArpTable { switch: None }) else {
                return Vec::new();
            };
            let mut out: Vec<String> = a
                .entries
                .iter()
                .map(|e| {
                    if kind == ArgKind::Ip {
                        e.ip.to_string()
                    } else {
                        e.mac.to_string()
                    }
                })
                .collect();
            out.sort();
            out.dedup();
            out
        }
        ArgKind::VirtualServer => {
            get::<LoadBalancersReply>(api, &Request::LoadBalancers { vip: None })
                .map(|r| {
                    r.services
                        .iter()
                        .map(|s| match s.protocol.as_str() {
                            "UDP" => format!("udp/{}:{}", s.vip, s.port),
                            _ => format!("{}:{}", s.vip, s.port),
                        })
                        .collect()
                })
                .unwrap_or_default()
        }
        ArgKind::File | ArgKind::Number | ArgKind::Word => Vec::new(),
    }
}

#[cfg(test)]
mod tests;
