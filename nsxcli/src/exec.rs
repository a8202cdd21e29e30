//! Runs a parsed command: the API calls it needs (through [`Api`] /
//! [`GwApi`], so tests answer with canned replies), then the formatter.
//! `trace` resolves default MACs (the port's own, the router's for an
//! off-subnet destination, else the ARP table's) and builds the frame;
//! `capture` turns frames into lines or a pcap file's bytes.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use geneve::MacAddr;
use serde_json::{Map, Value, json};

use crate::client::Api;
use crate::error::Error;
use crate::format;
use crate::grammar::{
    ArgKind, Capture, CapturePoint, Command, FwView, Mode, Parsed, SwitchTable, Trace, TraceFrom,
};
use crate::http::GwApi;
use crate::packet::{Proto, mac_string, parse_mac, to_hex};
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

fn no_args() -> Map<String, Value> {
    Map::new()
}

fn args(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// Text or JSON, from one reply.
fn view(json: bool, reply: &Value, f: impl FnOnce(&Value) -> String) -> Outcome {
    Outcome::text(if json { pretty(reply) } else { f(reply) })
}

/// Runs `p` against the agent's API.
pub fn agent(api: &mut dyn Api, p: &Parsed, tz: Tz) -> Result<Outcome, Error> {
    let json = p.json;
    Ok(match &p.command {
        Command::GatewayStatus => {
            let s = api.call("status", no_args())?;
            view(json, &s, |s| format::gateway_status(s, tz))
        }
        Command::VmNetworkMode => {
            let s = api.call("status", no_args())?;
            view(json, &s, format::vm_network_mode)
        }
        Command::Interfaces => view(
            json,
            &api.call("interfaces", no_args())?,
            format::interfaces,
        ),
        Command::Switches => view(json, &api.call("switches", no_args())?, format::switches),
        Command::SwitchTable { switch, table } => {
            let sws = api.call("switches", no_args())?;
            let sw = format::find_switch(&sws, switch)?;
            let reply = match table {
                SwitchTable::Mac => api.call("mac-table", no_args())?,
                SwitchTable::Arp => {
                    api.call("arp-table", args(json!({"switch": sw["name"].clone()})))?
                }
            };
            if json {
                let entries: Vec<Value> = format::entries_on(&reply, sw)
                    .into_iter()
                    .cloned()
                    .collect();
                Outcome::text(pretty(&json!({
                    "api_version": reply["api_version"].clone(),
                    "switch": sw["name"].clone(),
                    "vni": sw["vni"].clone(),
                    "entries": entries,
                })))
            } else {
                Outcome::text(match table {
                    SwitchTable::Mac => format::mac_table(&reply, sw),
                    SwitchTable::Arp => format::arp_table(&reply, sw),
                })
            }
        }
        Command::Routers => view(json, &api.call("routers", no_args())?, format::routers),
        Command::Forwarding { router } => {
            let rs = api.call("routers", no_args())?;
            let r = format::find_router(&rs, router)?;
            view(json, r, format::forwarding)
        }
        Command::Tunnels => {
            let s = api.call("status", no_args())?;
            let c = api.call("counters", no_args())?;
            if json {
                Outcome::text(pretty(&json!({
                    "api_version": c["api_version"].clone(),
                    "underlay_ip": s["underlay_ip"].clone(),
                    "tep_id": s["tep_id"].clone(),
                    "tunnels": c["tunnels"].clone(),
                })))
            } else {
                Outcome::text(format::tunnels(&s, &c))
            }
        }
        Command::Firewall(v) => {
            let cmd = match v {
                FwView::Rules => "getrules",
                FwView::Addrsets => "getaddrsets",
                FwView::Flows => "getflows",
                FwView::Stats => "firewall-stats",
            };
            let r = api.call(cmd, no_args())?;
            if json {
                Outcome::text(pretty(&r))
            } else if *v == FwView::Stats {
                Outcome::text(format::firewall_stats(&r))
            } else {
                Outcome::text(format::text(&r)?)
            }
        }
        Command::FirewallRule(id) => {
            let rules = api.call("getrules", no_args())?;
            let stats = api.call("firewall-stats", no_args())?;
            let text = format::firewall_rule(&rules, &stats, *id)?;
            if json {
                let stat = stats["rules"]
                    .as_array()
                    .and_then(|l| l.iter().find(|r| r["id"].as_u64() == Some(u64::from(*id))))
                    .cloned()
                    .unwrap_or(Value::Null);
                let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("rule ")).collect();
                Outcome::text(pretty(&json!({
                    "api_version": stats["api_version"].clone(),
                    "id": id, "rule": lines, "stats": stat,
                })))
            } else {
                Outcome::text(text)
            }
        }
        Command::Statistics => view(json, &api.call("counters", no_args())?, format::statistics),
        Command::Version => {
            let r = match api.call("version", no_args()) {
                Ok(r) => r,
                // An agent from before `version`: `status` has the same fields.
                Err(Error::Api(m)) if m.contains("unknown command") => {
                    api.call("status", no_args())?
                }
                Err(e) => return Err(e),
            };
            if json {
                Outcome::text(pretty(&r))
            } else {
                Outcome::text(format::version(&r, VERSION))
            }
        }
        Command::ConfigVersion => {
            let s = api.call("status", no_args())?;
            view(json, &s, |s| format::config_version(s, tz))
        }
        Command::Trace(t) => trace(api, t, json)?,
        Command::Capture(c) => capture(api, c, json, tz)?,
        Command::Help(topic) => Outcome::text(crate::grammar::help(Mode::Agent, topic)?),
        Command::Exit => Outcome::default(),
        Command::Instances | Command::Certificates => {
            return Err(Error::Failed(
                "This is a gateway command (nsxcli --gateway)".into(),
            ));
        }
    })
}

/// `a.b.c.d/len` contains `ip`.
fn in_subnet(ip: Ipv4Addr, subnet: &str) -> bool {
    let Some((net, len)) = subnet.split_once('/') else {
        return false;
    };
    let (Ok(net), Ok(len)) = (net.parse::<Ipv4Addr>(), len.parse::<u32>()) else {
        return false;
    };
    if len > 32 {
        return false;
    }
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    u32::from(ip) & mask == u32::from(net) & mask
}

fn mac_of(v: &Value, what: &str) -> Result<MacAddr, Error> {
    let s = v.as_str().unwrap_or("");
    parse_mac(s).map_err(|_| Error::BadReply {
        what: "the agent".into(),
        reason: format!("{what}: not a MAC address: {s:?}"),
    })
}

/// The MAC `ip` is reached at on switch `sw` (a `switches` entry): the ARP
/// table's, else the switch's router's when `ip` is off the subnet.
fn resolve_mac(api: &mut dyn Api, sw: &Value, ip: Ipv4Addr, role: &str) -> Result<MacAddr, Error> {
    let name = sw["name"].clone();
    let arp = api.call("arp-table", args(json!({ "switch": name })))?;
    let ip_s = ip.to_string();
    if let Some(e) = format::entries_on(&arp, sw)
        .into_iter()
        .find(|e| e["ip"].as_str() == Some(ip_s.as_str()))
    {
        return mac_of(&e["mac"], "arp-table mac");
    }
    let subnet = sw["subnet"].as_str().unwrap_or("");
    let sw_name = format::cell(&sw["name"]);
    if !in_subnet(ip, subnet) {
        let rs = api.call("routers", no_args())?;
        let router = rs["routers"].as_array().and_then(|l| {
            l.iter().find(|r| {
                r["switches"]
                    .as_array()
                    .is_some_and(|s| s.iter().any(|x| x.as_str() == Some(sw_name.as_str())))
            })
        });
        if let Some(r) = router {
            return mac_of(&r["mac"], "router mac");
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
    let r = api.call("interfaces", no_args())?;
    let nic = r["interfaces"]
        .as_array()
        .and_then(|l| l.iter().find(|i| i["role"].as_str() == Some("nic")))
        .ok_or_else(|| Error::BadReply {
            what: "the agent".into(),
            reason: "interfaces: no NIC".into(),
        })?;
    mac_of(&nic["mac"], "nic mac")
}

fn trace(api: &mut dyn Api, t: &Trace, json: bool) -> Result<Outcome, Error> {
    let p = &t.packet;
    let status = api.call("status", no_args())?;
    let microseg = status["mode"].as_str() == Some("micro-segmentation");
    let nic = format::cell(&status["nic"]);
    let (smac, dmac, mut args_v, from) = match &t.from {
        TraceFrom::Port if microseg => {
            let smac = match p.smac {
                Some(m) => m,
                None => nic_mac(api)?,
            };
            let dmac = p.dmac.unwrap_or(PEER_MAC);
            (
                smac,
                dmac,
                json!({"from": "port"}),
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
                json!({"from": "underlay"}),
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
            let ov = &status["overlay"];
            if !ov.is_object() {
                return Err(Error::Failed(
                    "This instance has no overlay port yet (not placed on a switch)".into(),
                ));
            }
            let smac = match p.smac {
                Some(m) => m,
                None => mac_of(&ov["mac"], "overlay mac")?,
            };
            let dmac = match (p.dmac, p.proto) {
                (Some(m), _) => m,
                (None, Proto::Arp) => geneve::ethernet::BROADCAST,
                (None, _) => {
                    let sws = api.call("switches", no_args())?;
                    let sw = format::find_switch(&sws, ov["switch"].as_str().unwrap_or(""))?;
                    resolve_mac(api, sw, p.dst, "dmac")?
                }
            };
            let from = format!(
                "port {} on {} ({})",
                format::cell(&ov["ip"]),
                format::cell(&ov["switch"]),
                format::cell(&ov["interface"])
            );
            (smac, dmac, json!({"from": "port"}), from)
        }
        TraceFrom::Underlay { tep, vni } => {
            let need = p.smac.is_none() || (p.dmac.is_none() && p.proto != Proto::Arp);
            let sws = if need {
                api.call("switches", no_args())?
            } else {
                Value::Null
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
                json!({"from": "underlay", "src_tep": tep.to_string(), "vni": vni}),
                format!("tunnel from {tep}, vni {vni:#x}"),
            )
        }
    };
    let frame = p.build(smac, dmac).map_err(Error::Failed)?;
    if let Value::Object(m) = &mut args_v {
        m.insert("frame_hex".into(), json!(to_hex(&frame)));
    }
    let reply = api.call("trace", args(args_v))?;
    if json {
        return Ok(Outcome::text(pretty(&reply)));
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
        CapturePoint::Port => ("port".to_string(), Link::Ethernet),
        CapturePoint::Underlay => ("underlay".to_string(), Link::Ipv4),
        CapturePoint::Switch(s) => (format!("switch:{s}"), Link::Ethernet),
    };
    let mut a = Map::new();
    a.insert("point".into(), json!(point));
    if let Some(n) = c.count {
        a.insert("count".into(), json!(n));
    }
    if let Some(ms) = c.timeout_ms {
        a.insert("timeout_ms".into(), json!(ms));
    }
    if let Some(s) = c.snaplen {
        a.insert("snaplen".into(), json!(s));
    }
    let reply = api.call("capture", a)?;
    // The agent says how its frames start; trust it over our guess.
    let link = reply["linktype"]
        .as_u64()
        .and_then(Link::from_linktype)
        .unwrap_or(link);
    let frames = pcap::frames(&reply)?;
    let truncated = reply["truncated"].as_u64().unwrap_or(0);
    // Ending on the count is the normal case; say why only otherwise.
    let ended = reply["ended"].as_str().filter(|e| *e != "count");
    let file = c.file.as_ref().map(|f| {
        (
            f.clone(),
            pcap::file(link, c.snaplen.unwrap_or(65_535), &frames),
        )
    });
    let text = if json {
        pretty(&reply)
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

/// Runs `p` against the gateway's admin API.
pub fn gateway(gw: &mut dyn GwApi, p: &Parsed, tz: Tz) -> Result<Outcome, Error> {
    let json = p.json;
    Ok(match &p.command {
        Command::Instances => view(json, &gw.get("/api/v1/instances")?, format::gw_instances),
        Command::Switches => {
            let s = gw.get("/api/v1/switches")?;
            if json {
                Outcome::text(pretty(&s))
            } else {
                let i = gw.get("/api/v1/instances")?;
                Outcome::text(format::gw_switches(&s, &i))
            }
        }
        Command::Routers => view(json, &gw.get("/api/v1/routers")?, format::gw_routers),
        Command::Certificates => {
            let r = gw.get("/api/v1/certificates").map_err(|e| match e {
                Error::Api(m) if m.contains("HTTP 404") => Error::Api(format!(
                    "{m}; this gateway has no certificates endpoint yet (upgrade nsx-gateway)"
                )),
                other => other,
            })?;
            view(json, &r, |r| format::gw_certificates(r, tz))
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
    let strs = |v: &Value, key: &str| -> Vec<String> {
        v.as_array()
            .map(|l| {
                l.iter()
                    .filter_map(|x| x[key].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    match kind {
        ArgKind::Switch | ArgKind::Vni => {
            let Ok(s) = api.call("switches", no_args()) else {
                return Vec::new();
            };
            let list = s["switches"].as_array().cloned().unwrap_or_default();
            let vnis = list
                .iter()
                .filter_map(|x| x["vni"].as_u64().map(|v| format!("{v:#x}")));
            if kind == ArgKind::Vni {
                vnis.collect()
            } else {
                strs(&s["switches"], "name")
                    .into_iter()
                    .chain(vnis)
                    .collect()
            }
        }
        ArgKind::Router => api
            .call("routers", no_args())
            .map(|r| strs(&r["routers"], "name"))
            .unwrap_or_default(),
        ArgKind::RuleId => api
            .call("firewall-stats", no_args())
            .map(|r| {
                r["rules"]
                    .as_array()
                    .map(|l| {
                        l.iter()
                            .filter_map(|x| x["id"].as_u64())
                            .map(|i| i.to_string())
                            .collect()
                    })
                    .unwrap_or_default()
            })
            .unwrap_or_default(),
        ArgKind::Tep => {
            let Ok(s) = api.call("switches", no_args()) else {
                return Vec::new();
            };
            let mut out: Vec<String> = Vec::new();
            for sw in s["switches"].as_array().map_or(&[][..], Vec::as_slice) {
                for e in sw["endpoints"].as_array().map_or(&[][..], Vec::as_slice) {
                    if let Some(e) = e.as_str()
                        && !out.iter().any(|x| x == e)
                    {
                        out.push(e.to_string());
                    }
                }
            }
            out
        }
        ArgKind::Ip | ArgKind::Mac => {
            let Ok(a) = api.call("arp-table", no_args()) else {
                return Vec::new();
            };
            let mut out = strs(
                &a["entries"],
                if kind == ArgKind::Ip { "ip" } else { "mac" },
            );
            out.sort();
            out.dedup();
            out
        }
        ArgKind::File | ArgKind::Number | ArgKind::Word => Vec::new(),
    }
}

#[cfg(test)]
mod tests;
