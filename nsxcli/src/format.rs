//! Replies -> text: one pure function per view, from the agent's typed
//! replies (`agent_api`) or the gateway's JSON to what the operator reads.
//! Absent facts print as `-`; nothing here panics on any reply (a reply
//! that does not fit its type is refused before it gets here). The seed's
//! exact lines (`Public Cloud Gateway : ...`, `VM-Network-Mode : ...`) and
//! the `vsipioctl` texts come out as the users know them.

use std::fmt::Display;

use agent_api::{
    ArpTableReply, CountersReply, DhcpReply, FirewallStats, GatewayStatus, InterfacesReply,
    MacTableReply, NatSessionsReply, Router, RoutersReply, StatusReply, Switch, SwitchesReply,
    TextReply, TraceReply, TunnelCounters, VersionReply,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::Error;
use crate::table::{Align, Table};
use crate::timefmt::{self, Tz};

mod gw_lb;
mod lb;
pub use gw_lb::{find_gw_virtual_server, gw_load_balancer, gw_load_balancers};
pub use lb::{LbView, load_balancer, load_balancers};

const L: Align = Align::Left;
const R: Align = Align::Right;

/// A JSON value as a table cell: strings as is, numbers, `yes`/`no`,
/// lists joined with `, `, null/missing as `-`.
#[must_use]
pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) if s.is_empty() => "-".into(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => if *b { "yes" } else { "no" }.into(),
        Value::Number(n) => n.to_string(),
        Value::Array(a) if a.is_empty() => "-".into(),
        Value::Array(a) => a.iter().map(cell).collect::<Vec<_>>().join(", "),
        Value::Object(_) => v.to_string(),
    }
}

/// A VNI as `0x238c` (or `-`).
#[must_use]
pub fn vni(v: &Value) -> String {
    v.as_u64().map_or_else(|| cell(v), |n| format!("{n:#x}"))
}

/// An optional fact as a cell (`-` when absent or empty).
fn opt<T: Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".into(), |x| text_cell(&x.to_string()))
}

/// A string as a cell (`-` when empty).
fn text_cell(s: &str) -> String {
    if s.is_empty() { "-".into() } else { s.into() }
}

/// A list as a cell: `a, b` (`-` when empty).
fn join<T: Display>(l: &[T]) -> String {
    if l.is_empty() {
        return "-".into();
    }
    l.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A typed value as its JSON word (enums: `remote`, `overlay-peer`, ...).
fn word<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v).map_or_else(|_| "-".into(), |v| cell(&v))
}

/// A JSON value as a typed one (a `control::lb` word or record); `None`
/// when it does not fit.
fn from_json<T: DeserializeOwned>(v: &Value) -> Option<T> {
    T::deserialize(v).ok()
}

/// Text on one line: control characters (newlines, tabs) as spaces.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// A VNI as `0x238c`.
fn hex_vni(n: u32) -> String {
    format!("{n:#x}")
}

/// Unix seconds as ctime (`-` for 0).
fn since(unix: u64, tz: Tz) -> String {
    i64::try_from(unix)
        .ok()
        .filter(|t| *t > 0)
        .map_or_else(|| "-".to_string(), |t| timefmt::ctime(t, tz))
}

fn list(v: &Value) -> &[Value] {
    v.as_array().map_or(&[], Vec::as_slice)
}

/// `key : value` lines, the seed's style.
fn kv(out: &mut String, key: &str, value: &str) {
    out.push_str(key);
    out.push_str(" : ");
    out.push_str(value);
    out.push('\n');
}

/// The gateway as `get gateway connection status` names it: the name
/// the agent dials, with the address it reached after it, e.g.
/// `nsx-gw.vmware.local:5555 (10.99.3.2:5555)` (an older agent without
/// `name`: its configured control address).
#[must_use]
pub fn gateway_shown(gw: &GatewayStatus) -> String {
    let name = gw.name.as_deref().unwrap_or(&gw.peer);
    match gw.address.as_deref() {
        Some(addr) if addr != name => format!("{name} ({addr})"),
        _ => text_cell(name),
    }
}

/// `get gateway connection status` from `status`.
#[must_use]
pub fn gateway_status(status: &StatusReply, tz: Tz) -> String {
    let mut out = String::new();
    let Some(gw) = &status.gateway else {
        kv(
            &mut out,
            "Public Cloud Gateway",
            "not configured (static config)",
        );
        return out;
    };
    kv(&mut out, "Public Cloud Gateway", &gateway_shown(gw));
    kv(&mut out, "Connection Status", &text_cell(&gw.state));
    let since = since(gw.since_unix, tz);
    if gw.state == "ESTABLISHED" {
        kv(&mut out, "Connection Time", &since);
    } else {
        kv(&mut out, "Status Since", &since);
        if let Some(e) = gw.last_error.as_deref().filter(|e| !e.is_empty()) {
            kv(&mut out, "Last Error", e);
        }
    }
    out
}

/// `get vm-network-mode` from `status`.
#[must_use]
pub fn vm_network_mode(status: &StatusReply) -> String {
    let mut out = String::new();
    kv(&mut out, "VM-Network-Mode", status.mode.name());
    kv(&mut out, "Interface", &text_cell(&status.nic));
    out
}

/// `get interfaces` from `interfaces`.
#[must_use]
pub fn interfaces(reply: &InterfacesReply) -> String {
    let mut t = Table::new(&[
        ("Interface", L),
        ("Role", L),
        ("Netns", L),
        ("MAC", L),
        ("MTU", R),
        ("State", L),
        ("IPv4", L),
        ("RX Packets", R),
        ("RX Bytes", R),
        ("TX Packets", R),
        ("TX Bytes", R),
    ]);
    for i in &reply.interfaces {
        t.row(vec![
            text_cell(&i.name),
            word(&i.role),
            opt(i.netns.as_ref()),
            opt(i.mac.as_ref()),
            opt(i.mtu),
            word(&i.state),
            join(&i.ipv4),
            opt(i.rx_packets),
            opt(i.rx_bytes),
            opt(i.tx_packets),
            opt(i.tx_bytes),
        ]);
    }
    t.render()
}

/// `get logical-switches` from `switches`.
#[must_use]
pub fn switches(reply: &SwitchesReply) -> String {
    let mut t = Table::new(&[
        ("Name", L),
        ("VNI", L),
        ("Subnet", L),
        ("Gateway", L),
        ("Router", L),
        ("Local Port", L),
        ("Local MAC", L),
        ("Remote Endpoints", L),
    ]);
    for s in &reply.switches {
        t.row(vec![
            text_cell(&s.name),
            hex_vni(s.vni),
            s.subnet.to_string(),
            s.gateway_ip.to_string(),
            opt(s.router.as_ref()),
            opt(s.local_port.map(|p| p.ip)),
            opt(s.local_port.map(|p| p.mac)),
            join(&s.endpoints),
        ]);
    }
    t.render()
}

/// Finds a switch of a `switches` reply by name or VNI (`0x238c`, `9100`).
pub fn find_switch<'a>(reply: &'a SwitchesReply, key: &str) -> Result<&'a Switch, Error> {
    let sws = &reply.switches;
    let by_vni = crate::grammar::parse_u32(key).ok();
    sws.iter()
        .find(|s| s.name == key)
        .or_else(|| by_vni.and_then(|n| sws.iter().find(|s| s.vni == n)))
        .ok_or_else(|| {
            let known: Vec<&str> = sws.iter().map(|s| s.name.as_str()).collect();
            Error::Failed(format!(
                "Unknown logical switch \"{key}\" (known: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ))
        })
}

fn switch_title(sw: &Switch) -> String {
    format!(
        "Logical Switch : {} (VNI {})\n",
        text_cell(&sw.name),
        hex_vni(sw.vni)
    )
}

/// `get logical-switch X mac-table`: the `mac-table` entries of `sw`.
#[must_use]
pub fn mac_table(reply: &MacTableReply, sw: &Switch) -> String {
    let mut t = Table::new(&[("MAC", L), ("Location", L), ("TEP IP", L)]);
    for e in reply
        .entries
        .iter()
        .filter(|e| e.switch == sw.name || e.vni == sw.vni)
    {
        t.row(vec![e.mac.to_string(), word(&e.location), opt(e.tep_ip)]);
    }
    switch_title(sw) + &t.render()
}

/// The `arp-table` entries on switch `sw`.
#[must_use]
pub fn arp_entries_on<'a>(reply: &'a ArpTableReply, sw: &Switch) -> Vec<&'a agent_api::ArpEntry> {
    reply
        .entries
        .iter()
        .filter(|e| e.switch == sw.name || e.vni == sw.vni)
        .collect()
}

/// `get logical-switch X arp-table`: the `arp-table` entries of `sw`.
#[must_use]
pub fn arp_table(reply: &ArpTableReply, sw: &Switch) -> String {
    let mut t = Table::new(&[("IP", L), ("MAC", L), ("Location", L), ("TEP IP", L)]);
    for e in arp_entries_on(reply, sw) {
        t.row(vec![
            e.ip.to_string(),
            e.mac.to_string(),
            word(&e.location),
            opt(e.tep_ip),
        ]);
    }
    switch_title(sw) + &t.render()
}

/// `get logical-routers` from `routers`.
#[must_use]
pub fn routers(reply: &RoutersReply) -> String {
    let mut t = Table::new(&[("Name", L), ("MAC", L), ("Switches", L), ("Routes", R)]);
    for r in &reply.routers {
        t.row(vec![
            text_cell(&r.name),
            r.mac.to_string(),
            join(&r.switches),
            r.routes.len().to_string(),
        ]);
    }
    t.render()
}

/// Finds a router of a `routers` reply by name.
pub fn find_router<'a>(reply: &'a RoutersReply, name: &str) -> Result<&'a Router, Error> {
    let rs = &reply.routers;
    rs.iter().find(|r| r.name == name).ok_or_else(|| {
        let known: Vec<&str> = rs.iter().map(|r| r.name.as_str()).collect();
        Error::Failed(format!(
            "Unknown logical router \"{name}\" (known: {})",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        ))
    })
}

/// `get logical-router X forwarding`.
#[must_use]
pub fn forwarding(router: &Router) -> String {
    let mut out = format!(
        "Logical Router : {} (MAC {})\n",
        text_cell(&router.name),
        router.mac
    );
    let mut t = Table::new(&[("Prefix", L), ("Kind", L), ("Switch", L), ("Next Hop", L)]);
    for r in &router.routes {
        t.row(vec![
            r.prefix.to_string(),
            word(&r.kind),
            text_cell(&r.switch),
            opt(r.next_hop),
        ]);
    }
    out.push_str(&t.render());
    out
}

/// `get dhcp server X`: the switch's DHCP server, one field per line.
#[must_use]
pub fn dhcp_server(reply: &DhcpReply) -> String {
    let mut out = String::new();
    for s in &reply.servers {
        let dns: Vec<String> = s.dns_servers.iter().map(ToString::to_string).collect();
        let routes: Vec<String> = s
            .routes
            .iter()
            .map(|r| format!("{} via {}", r.prefix, r.next_hop))
            .collect();
        let none = |v: &[String]| {
            if v.is_empty() {
                "-".to_string()
            } else {
                v.join(", ")
            }
        };
        out.push_str(&format!(
            "Logical Switch    : {} (VNI {})\n\
             Server Identifier : {}\n\
             Subnet Mask       : {}\n\
             Router            : {}\n\
             DNS Servers       : {}\n\
             Domain Name       : {}\n\
             Lease Time        : {} s\n\
             Interface MTU     : {}\n\
             Static Routes     : {}\n",
            text_cell(&s.switch),
            s.vni,
            s.server_id,
            s.subnet_mask,
            opt(s.router),
            none(&dns),
            s.domain_name.as_deref().map_or("-".into(), text_cell),
            s.lease_time,
            s.mtu,
            none(&routes),
        ));
    }
    out
}

/// `get dhcp leases`: the port's lease.
#[must_use]
pub fn dhcp_leases(reply: &DhcpReply) -> String {
    let mut t = Table::new(&[
        ("Switch", L),
        ("IP", L),
        ("MAC", L),
        ("State", L),
        ("Bound", R),
        ("Expires In", R),
    ]);
    let secs = |s: Option<u64>| s.map_or("-".to_string(), |s| format!("{s} s"));
    for l in &reply.leases {
        t.row(vec![
            text_cell(&l.switch),
            l.ip.to_string(),
            l.mac.to_string(),
            text_cell(&l.state),
            l.bound_ago_s
                .map_or("-".to_string(), |s| format!("{s} s ago")),
            secs(l.expires_in_s),
        ]);
    }
    t.render()
}

/// `get nat sessions`: the summary, the pools, the sessions listed.
#[must_use]
pub fn nat_sessions(reply: &NatSessionsReply) -> String {
    let s = &reply.summary;
    let mut out = String::new();
    let protos: Vec<String> = s
        .by_protocol
        .iter()
        .map(|(p, n)| format!("{p} {n}"))
        .collect();
    kv(
        &mut out,
        "Sessions",
        &format!("{} of {} ({})", s.sessions, s.capacity, protos.join(", ")),
    );
    kv(&mut out, "Mappings", &s.mappings.to_string());
    kv(
        &mut out,
        "Translated",
        &format!(
            "out {}, in {} (hairpinned {}, ICMP errors {})",
            s.translated_out, s.translated_in, s.hairpinned, s.icmp_errors
        ),
    );
    let drops: Vec<String> = s
        .drops
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(r, n)| format!("{r} {n}"))
        .collect();
    kv(
        &mut out,
        "Drops",
        &if drops.is_empty() {
            "none".to_string()
        } else {
            drops.join(", ")
        },
    );
    out.push('\n');
    let mut p = Table::new(&[
        ("SNAT IP", L),
        ("Protocol", L),
        ("Ports Used", R),
        ("Ports", R),
        ("Failures", R),
    ]);
    for pool in &s.pools {
        for (proto, used) in &pool.used {
            p.row(vec![
                pool.ip.to_string(),
                proto.clone(),
                used.to_string(),
                pool.size.get(proto).copied().unwrap_or(0).to_string(),
                pool.failures.get(proto).copied().unwrap_or(0).to_string(),
            ]);
        }
    }
    out.push_str(&p.render());
    out.push('\n');
    let mut t = Table::new(&[
        ("Proto", L),
        ("Inside", L),
        ("Outside", L),
        ("Remote", L),
        ("State", L),
        ("Idle", R),
        ("Kind", L),
    ]);
    for x in &reply.sessions {
        let kind = match (x.is_static, x.hairpin, x.inbound) {
            (_, true, _) => "hairpin",
            (true, _, true) => "public-ip in",
            (true, _, false) => "public-ip",
            (false, _, _) => "snat",
        };
        t.row(vec![
            text_cell(&x.protocol),
            x.inside.to_string(),
            x.outside.to_string(),
            x.remote.to_string(),
            text_cell(&x.state),
            format!("{} s", x.idle_s),
            kind.into(),
        ]);
    }
    out.push_str(&t.render());
    if reply.truncated {
        out.push_str(&format!(
            "({} of {} sessions listed)\n",
            reply.sessions.len(),
            s.sessions
        ));
    }
    out
}

/// "how long ago" from milliseconds.
fn ago(ms: Option<u64>) -> String {
    match ms {
        None => "never".into(),
        Some(ms) if ms < 60_000 => format!("{}.{} s ago", ms / 1000, ms % 1000 / 100),
        Some(ms) if ms < 3_600_000 => format!("{} min ago", ms / 60_000),
        Some(ms) => format!("{} h ago", ms / 3_600_000),
    }
}

/// `get tunnels` from `status` (local endpoint) and `counters` (tunnels).
#[must_use]
pub fn tunnels(status: &StatusReply, counters: &CountersReply) -> String {
    let mut out = String::new();
    kv(
        &mut out,
        "Local Endpoint",
        &format!("{} (tep id {})", status.underlay_ip, status.tep_id),
    );
    if counters.tunnels.is_empty() {
        out.push_str("No tunnels\n");
        return out;
    }
    out.push_str(&tunnel_table(&counters.tunnels));
    out
}

fn tunnel_table(tunnels: &[TunnelCounters]) -> String {
    let mut t = Table::new(&[
        ("Remote Endpoint", L),
        ("TEP ID", R),
        ("TX Packets", R),
        ("TX Bytes", R),
        ("RX Packets", R),
        ("RX Bytes", R),
        ("Last Seen", L),
    ]);
    for x in tunnels {
        t.row(vec![
            x.tep_ip.to_string(),
            x.tep_id.to_string(),
            x.tx_packets.to_string(),
            x.tx_bytes.to_string(),
            x.rx_packets.to_string(),
            x.rx_bytes.to_string(),
            ago(x.last_rx_ago_ms),
        ]);
    }
    t.render()
}

/// A `text` view (`getrules`, `getaddrsets`, `getflows`) verbatim.
#[must_use]
pub fn text(reply: &TextReply) -> String {
    let mut t = reply.text.clone();
    if !t.is_empty() && !t.ends_with('\n') {
        t.push('\n');
    }
    t
}

/// `get firewall stats` from `firewall-stats`.
#[must_use]
pub fn firewall_stats(reply: &FirewallStats) -> String {
    let mut out = String::new();
    kv(
        &mut out,
        "Policy Loaded",
        if reply.policy_loaded { "yes" } else { "no" },
    );
    kv(
        &mut out,
        "Connections",
        &format!("{} (capacity {})", reply.flows, reply.flow_capacity),
    );
    let mut t = Table::new(&[
        ("Rule", R),
        ("Ruleset", L),
        ("Action", L),
        ("Packets", R),
        ("Bytes", R),
        ("Sessions", R),
    ]);
    for r in &reply.rules {
        t.row(vec![
            r.id.to_string(),
            text_cell(&r.ruleset),
            text_cell(&r.action),
            r.packets.to_string(),
            r.bytes.to_string(),
            r.sessions.to_string(),
        ]);
    }
    out.push('\n');
    out.push_str(&t.render());
    let mut c = Table::new(&[("Counter", L), ("Value", R)]);
    for (k, v) in [
        ("management", reply.management),
        ("fast_path", reply.fast_path),
        ("related", reply.related),
        ("rejects", reply.rejects),
        ("recheck_removed", reply.recheck_removed),
        ("log_rate_limited", reply.log_rate_limited),
    ] {
        c.row(vec![k.to_string(), v.to_string()]);
    }
    for (name, n) in &reply.drops {
        c.row(vec![format!("drop {}", text_cell(name)), n.to_string()]);
    }
    out.push('\n');
    out.push_str(&c.render());
    out
}

/// `get firewall rule ID`: its `getrules` line(s) and hit counters.
pub fn firewall_rule(rules: &TextReply, stats: &FirewallStats, id: u32) -> Result<String, Error> {
    let needle = format!("rule {id} at ");
    let lines: Vec<&str> = rules
        .text
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with(&needle))
        .collect();
    let stat = stats.rules.iter().find(|r| r.id == id);
    if lines.is_empty() && stat.is_none() {
        let known: Vec<String> = stats.rules.iter().map(|r| r.id.to_string()).collect();
        return Err(Error::Failed(format!(
            "No firewall rule {id} (rules: {})",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        )));
    }
    let mut out = String::new();
    for l in lines {
        out.push_str(l);
        out.push('\n');
    }
    if let Some(s) = stat {
        kv(&mut out, "Ruleset", &text_cell(&s.ruleset));
        kv(&mut out, "Action", &text_cell(&s.action));
        kv(&mut out, "Packets", &s.packets.to_string());
        kv(&mut out, "Bytes", &s.bytes.to_string());
        kv(&mut out, "Sessions", &s.sessions.to_string());
    }
    Ok(out)
}

/// `get statistics` from `counters`.
#[must_use]
pub fn statistics(c: &CountersReply) -> String {
    let mut out = String::new();
    let mut t = Table::new(&[
        ("Traffic", L),
        ("RX Packets", R),
        ("RX Bytes", R),
        ("TX Packets", R),
        ("TX Bytes", R),
    ]);
    for (k, x) in [("port", &c.port), ("underlay", &c.underlay)] {
        t.row(vec![
            k.to_string(),
            x.rx_packets.to_string(),
            x.rx_bytes.to_string(),
            x.tx_packets.to_string(),
            x.tx_bytes.to_string(),
        ]);
    }
    out.push_str(&t.render());
    let mut t = Table::new(&[
        ("Layer", L),
        ("Seen", R),
        ("Passed", R),
        ("Handled", R),
        ("Dropped", R),
    ]);
    for l in &c.layers {
        t.row(vec![
            text_cell(&l.name),
            l.seen.to_string(),
            l.passed.to_string(),
            l.handled.to_string(),
            l.dropped.to_string(),
        ]);
    }
    out.push('\n');
    out.push_str(&t.render());
    if !c.tunnels.is_empty() {
        out.push('\n');
        out.push_str(&tunnel_table(&c.tunnels));
    }
    out.push('\n');
    let mut t = Table::new(&[("Drop Reason", L), ("Count", R)]);
    for (k, v) in &c.drops {
        t.row(vec![k.clone(), v.to_string()]);
    }
    t.row(vec!["total".into(), c.total_drops.to_string()]);
    out.push_str(&t.render());
    // The I/O counters by name, in name order.
    if let Ok(Value::Object(m)) = serde_json::to_value(c.io) {
        out.push('\n');
        let mut t = Table::new(&[("I/O", L), ("Count", R)]);
        for (k, v) in &m {
            t.row(vec![k.clone(), cell(v)]);
        }
        out.push_str(&t.render());
    }
    kv(&mut out, "\nConfig Version", &c.config_version.to_string());
    out
}

/// `get version` from `version` (or `status`, whose `agent`/`version` match).
#[must_use]
pub fn version(reply: &agent_api::Reply<VersionReply>, cli: &str) -> String {
    let mut out = String::new();
    kv(&mut out, "nsxcli", cli);
    kv(
        &mut out,
        &text_cell(&reply.body.agent),
        &text_cell(&reply.body.version),
    );
    kv(&mut out, "API Version", &reply.api_version.to_string());
    out
}

/// `get config version` from `status`.
#[must_use]
pub fn config_version(status: &StatusReply, tz: Tz) -> String {
    let mut out = String::new();
    kv(
        &mut out,
        "Config Version",
        &status.config_version.to_string(),
    );
    let source = match &status.gateway {
        Some(gw) => format!(
            "gateway {} (applied version {})",
            text_cell(&gw.peer),
            opt(gw.applied_version)
        ),
        None => format!("file {}", text_cell(&status.config_path)),
    };
    kv(&mut out, "Config Source", &source);
    if let Some(r) = &status.last_reload {
        let at = since(r.at_unix, tz);
        let ok = if r.ok { "ok" } else { "failed" };
        let line = if r.message.is_empty() {
            format!("{ok}, {at}")
        } else {
            format!("{ok}, {at}: {}", r.message)
        };
        kv(&mut out, "Last Reload", &line);
    }
    out
}

/// `trace`: each step numbered, then the verdict and the outputs.
#[must_use]
pub fn trace(reply: &TraceReply) -> String {
    let mut out = String::new();
    for (i, s) in reply.steps.iter().enumerate() {
        let layer = s.layer.as_str();
        let detail = s.detail.as_str();
        // Details that already name their layer ("router t1: ...") stand alone.
        let named = detail
            .strip_prefix(layer)
            .is_some_and(|r| r.starts_with(':') || r.starts_with(' '));
        let line = if named || layer.is_empty() {
            detail.to_string()
        } else if detail.is_empty() {
            format!("{layer}: {}", text_cell(&s.result))
        } else {
            format!("{layer}: {detail}")
        };
        out.push_str(&format!("{:>2}. {line}\n", i + 1));
    }
    let verdict = text_cell(&reply.verdict);
    let reasons: Vec<&str> = [&reply.drop_reason, &reply.firewall_drop_reason]
        .into_iter()
        .filter_map(Option::as_deref)
        .filter(|r| !r.is_empty())
        .collect();
    if reasons.is_empty() {
        kv(&mut out, "Verdict", &verdict);
    } else {
        kv(
            &mut out,
            "Verdict",
            &format!("{verdict} ({})", reasons.join(", ")),
        );
    }
    for o in &reply.outputs {
        let kind = text_cell(&o.kind);
        let mut line = match o.vni {
            None => format!("{kind} {}, {} bytes", text_cell(&o.dst), o.len),
            Some(v) => format!(
                "{kind} {} vni {}, {} bytes",
                text_cell(&o.dst),
                hex_vni(v),
                o.len
            ),
        };
        if !o.summary.is_empty() {
            line.push_str(": ");
            line.push_str(&o.summary);
        }
        kv(&mut out, "Output", &line);
    }
    out
}

// ---- gateway ----

/// Longest agent error shown in `get instances` (`--json` has it whole).
const ERROR_CELL: usize = 48;

/// `get instances` (gateway) from `GET /api/v1/instances`: inventory,
/// session, and what the agent's latest status report said (`-` when none
/// arrived since the gateway started).
#[must_use]
pub fn gw_instances(list_v: &Value) -> String {
    let mut t = Table::new(&[
        ("ID", L),
        ("Name", L),
        ("Mode", L),
        ("Switch", L),
        ("IP", L),
        ("Connection", L),
        ("Version Acked", R),
        ("Version Applied", R),
        ("Last Status", R),
        ("Agent Error", L),
    ]);
    for i in list(list_v) {
        let st = &i["agent_status"];
        // Whole seconds: the gateway counts no finer.
        let age = match st["age_seconds"].as_u64() {
            _ if !st.is_object() => "-".into(),
            Some(s) if s < 60 => format!("{s} s ago"),
            s => ago(s.map(|s| s.saturating_mul(1000))),
        };
        // One line per instance, whatever the agent wrote.
        let mut error = one_line(&cell(&st["last_error"]));
        if let Some((cut, _)) = error.char_indices().nth(ERROR_CELL) {
            error.truncate(cut);
            error.push_str("...");
        }
        t.row(vec![
            cell(&i["id"]),
            cell(&i["hostname"]),
            cell(&i["mode"]),
            cell(&i["switch"]),
            cell(&i["ip"]),
            i["session"].as_str().unwrap_or("never").to_string(),
            cell(&i["acked_version"]),
            cell(&st["applied_version"]),
            age,
            error,
        ]);
    }
    t.render()
}

/// `get logical-switches` (gateway) from `GET /api/v1/switches` and the
/// instances (ports counted per switch).
#[must_use]
pub fn gw_switches(sws: &Value, instances: &Value) -> String {
    let mut t = Table::new(&[
        ("Name", L),
        ("Tag", L),
        ("VNI", L),
        ("Subnet", L),
        ("Gateway", L),
        ("Ports", R),
    ]);
    for s in list(sws) {
        let ports = list(instances)
            .iter()
            .filter(|i| i["switch"] == s["name"] && !s["name"].is_null())
            .count();
        t.row(vec![
            cell(&s["name"]),
            cell(&s["tag"]),
            vni(&s["vni"]),
            cell(&s["subnet"]),
            cell(&s["gateway_ip"]),
            ports.to_string(),
        ]);
    }
    t.render()
}

/// `get logical-routers` (gateway) from `GET /api/v1/routers`.
#[must_use]
pub fn gw_routers(rs: &Value) -> String {
    let mut t = Table::new(&[
        ("Name", L),
        ("MAC", L),
        ("Switches", L),
        ("Static Routes", L),
    ]);
    for r in list(rs) {
        let routes: Vec<String> = list(&r["routes"])
            .iter()
            .map(|x| format!("{} via {}", cell(&x["prefix"]), cell(&x["next_hop"])))
            .collect();
        t.row(vec![
            cell(&r["name"]),
            cell(&r["mac"]),
            cell(&r["switches"]),
            if routes.is_empty() {
                "-".into()
            } else {
                routes.join(", ")
            },
        ]);
    }
    t.render()
}

/// `get logical-router <t0> nat-rules` (gateway) from `GET
/// /api/v1/routers/{t0}/nat-rules`: the tier-0, the edge that runs it, its
/// uplink and its NAT rules in the order they apply (each public IP's
/// DNAT+SNAT pair, then the SNAT of the overlay).
#[must_use]
pub fn gw_nat_rules(v: &Value) -> String {
    let mut out = String::new();
    kv(
        &mut out,
        "Logical Router",
        &format!("{} (tier-0)", cell(&v["router"])),
    );
    let edge = if v["edge"].is_null() {
        "none enrolled (the rules are in force nowhere yet)".to_string()
    } else {
        cell(&v["edge"])
    };
    kv(&mut out, "Edge", &edge);
    let up = &v["uplink"];
    let mut uplink = cell(&up["address"]);
    if !list(&up["secondary"]).is_empty() {
        uplink.push_str(&format!(", secondary {}", cell(&up["secondary"])));
    }
    kv(&mut out, "Uplink", &uplink);
    let rules = list(&v["rules"]);
    kv(&mut out, "Rule Count", &rules.len().to_string());
    if rules.is_empty() {
        return out;
    }
    out.push('\n');
    let mut t = Table::new(&[
        ("Rule", R),
        ("Action", L),
        ("Match Source", L),
        ("Match Destination", L),
        ("Translated", L),
        ("Ports", L),
        ("Instance", L),
    ]);
    for r in rules {
        t.row(vec![
            cell(&r["id"]),
            cell(&r["action"]),
            cell(&r["match_sources"]),
            cell(&r["match_destinations"]),
            cell(&r["translated"]),
            cell(&r["translated_ports"]),
            cell(&r["instance"]),
        ]);
    }
    out.push_str(&t.render());
    out
}

fn when(v: &Value, tz: Tz) -> String {
    v.as_i64()
        .map_or_else(|| cell(v), |t| timefmt::date_time(t, tz))
}

/// `get certificates` (gateway) from `GET /api/v1/certificates`.
#[must_use]
pub fn gw_certificates(reply: &Value, tz: Tz) -> String {
    let mut t = Table::new(&[
        ("Instance", L),
        ("Serial", L),
        ("Not After", L),
        ("Revoked", L),
        ("Fingerprint (SHA-256)", L),
    ]);
    for c in list(&reply["certificates"]) {
        t.row(vec![
            cell(&c["instance_id"]),
            cell(&c["serial"]),
            when(&c["not_after_unix"], tz),
            if c["revoked_at_unix"].is_null() {
                "no".into()
            } else {
                when(&c["revoked_at_unix"], tz)
            },
            cell(&c["fingerprint"]),
        ]);
    }
    let mut out = t.render();
    let revs = list(&reply["revocations"]);
    out.push('\n');
    if revs.is_empty() {
        out.push_str("Revocations : none\n");
        return out;
    }
    out.push_str("Revocations\n");
    let mut r = Table::new(&[
        ("Instance", L),
        ("Serial", L),
        ("Revoked At", L),
        ("Fingerprint (SHA-256)", L),
    ]);
    for x in revs {
        if x.is_object() {
            r.row(vec![
                cell(&x["instance_id"]),
                cell(&x["serial"]),
                when(&x["revoked_at_unix"], tz),
                cell(&x["fingerprint"]),
            ]);
        } else {
            r.row(vec![cell(x)]);
        }
    }
    out.push_str(&r.render());
    out
}

#[cfg(test)]
pub(crate) mod tests;
