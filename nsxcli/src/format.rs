//! Replies -> text: one pure function per view, from the API's JSON to what
//! the operator reads. Missing or odd fields print as `-`; nothing here
//! panics on any reply. The seed's exact lines (`Public Cloud Gateway :
//! ...`, `VM-Network-Mode : ...`) and the `vsipioctl` texts come out as
//! the users know them.

use serde_json::Value;

use crate::error::Error;
use crate::table::{Align, Table};
use crate::timefmt::{self, Tz};

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

/// `get gateway connection status` from `status`.
#[must_use]
pub fn gateway_status(status: &Value, tz: Tz) -> String {
    let gw = &status["gateway"];
    let mut out = String::new();
    if !gw.is_object() {
        kv(
            &mut out,
            "Public Cloud Gateway",
            "not configured (static config)",
        );
        return out;
    }
    let state = cell(&gw["state"]);
    kv(&mut out, "Public Cloud Gateway", &cell(&gw["peer"]));
    kv(&mut out, "Connection Status", &state);
    let since = gw["since_unix"]
        .as_i64()
        .filter(|t| *t > 0)
        .map_or_else(|| "-".to_string(), |t| timefmt::ctime(t, tz));
    if state == "ESTABLISHED" {
        kv(&mut out, "Connection Time", &since);
    } else {
        kv(&mut out, "Status Since", &since);
        if let Some(e) = gw["last_error"].as_str().filter(|e| !e.is_empty()) {
            kv(&mut out, "Last Error", e);
        }
    }
    out
}

/// `get vm-network-mode` from `status`.
#[must_use]
pub fn vm_network_mode(status: &Value) -> String {
    let mut out = String::new();
    kv(&mut out, "VM-Network-Mode", &cell(&status["mode"]));
    kv(&mut out, "Interface", &cell(&status["nic"]));
    out
}

/// `get interfaces` from `interfaces`.
#[must_use]
pub fn interfaces(reply: &Value) -> String {
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
    for i in list(&reply["interfaces"]) {
        t.row(vec![
            cell(&i["name"]),
            cell(&i["role"]),
            cell(&i["netns"]),
            cell(&i["mac"]),
            cell(&i["mtu"]),
            cell(&i["state"]),
            cell(&i["ipv4"]),
            cell(&i["rx_packets"]),
            cell(&i["rx_bytes"]),
            cell(&i["tx_packets"]),
            cell(&i["tx_bytes"]),
        ]);
    }
    t.render()
}

/// `get logical-switches` from `switches`.
#[must_use]
pub fn switches(reply: &Value) -> String {
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
    for s in list(&reply["switches"]) {
        t.row(vec![
            cell(&s["name"]),
            vni(&s["vni"]),
            cell(&s["subnet"]),
            cell(&s["gateway_ip"]),
            cell(&s["router"]),
            cell(&s["local_port"]["ip"]),
            cell(&s["local_port"]["mac"]),
            cell(&s["endpoints"]),
        ]);
    }
    t.render()
}

/// Finds a switch of a `switches` reply by name or VNI (`0x238c`, `9100`).
pub fn find_switch<'a>(reply: &'a Value, key: &str) -> Result<&'a Value, Error> {
    let sws = list(&reply["switches"]);
    let by_vni = crate::grammar::parse_u32(key).ok();
    sws.iter()
        .find(|s| s["name"].as_str() == Some(key))
        .or_else(|| {
            by_vni.and_then(|n| sws.iter().find(|s| s["vni"].as_u64() == Some(u64::from(n))))
        })
        .ok_or_else(|| {
            let known: Vec<String> = sws.iter().map(|s| cell(&s["name"])).collect();
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

fn switch_title(sw: &Value) -> String {
    format!(
        "Logical Switch : {} (VNI {})\n",
        cell(&sw["name"]),
        vni(&sw["vni"])
    )
}

/// The entries of a `mac-table` / `arp-table` reply on switch `sw`.
#[must_use]
pub fn entries_on<'a>(reply: &'a Value, sw: &Value) -> Vec<&'a Value> {
    list(&reply["entries"])
        .iter()
        .filter(|e| e["switch"] == sw["name"] || (e["vni"] == sw["vni"] && !sw["vni"].is_null()))
        .collect()
}

/// `get logical-switch X mac-table`: the `mac-table` entries of `sw`.
#[must_use]
pub fn mac_table(reply: &Value, sw: &Value) -> String {
    let mut t = Table::new(&[("MAC", L), ("Location", L), ("TEP IP", L)]);
    for e in entries_on(reply, sw) {
        t.row(vec![
            cell(&e["mac"]),
            cell(&e["location"]),
            cell(&e["tep_ip"]),
        ]);
    }
    switch_title(sw) + &t.render()
}

/// `get logical-switch X arp-table`: the `arp-table` entries of `sw`.
#[must_use]
pub fn arp_table(reply: &Value, sw: &Value) -> String {
    let mut t = Table::new(&[("IP", L), ("MAC", L), ("Location", L), ("TEP IP", L)]);
    for e in entries_on(reply, sw) {
        t.row(vec![
            cell(&e["ip"]),
            cell(&e["mac"]),
            cell(&e["location"]),
            cell(&e["tep_ip"]),
        ]);
    }
    switch_title(sw) + &t.render()
}

/// `get logical-routers` from `routers`.
#[must_use]
pub fn routers(reply: &Value) -> String {
    let mut t = Table::new(&[("Name", L), ("MAC", L), ("Switches", L), ("Routes", R)]);
    for r in list(&reply["routers"]) {
        t.row(vec![
            cell(&r["name"]),
            cell(&r["mac"]),
            cell(&r["switches"]),
            list(&r["routes"]).len().to_string(),
        ]);
    }
    t.render()
}

/// Finds a router of a `routers` reply by name.
pub fn find_router<'a>(reply: &'a Value, name: &str) -> Result<&'a Value, Error> {
    let rs = list(&reply["routers"]);
    rs.iter()
        .find(|r| r["name"].as_str() == Some(name))
        .ok_or_else(|| {
            let known: Vec<String> = rs.iter().map(|r| cell(&r["name"])).collect();
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
pub fn forwarding(router: &Value) -> String {
    let mut out = format!(
        "Logical Router : {} (MAC {})\n",
        cell(&router["name"]),
        cell(&router["mac"])
    );
    let mut t = Table::new(&[("Prefix", L), ("Kind", L), ("Switch", L), ("Next Hop", L)]);
    for r in list(&router["routes"]) {
        t.row(vec![
            cell(&r["prefix"]),
            cell(&r["kind"]),
            cell(&r["switch"]),
            cell(&r["next_hop"]),
        ]);
    }
    out.push_str(&t.render());
    out
}

/// "how long ago" from milliseconds.
fn ago(ms: &Value) -> String {
    match ms.as_u64() {
        None => "never".into(),
        Some(ms) if ms < 60_000 => format!("{}.{} s ago", ms / 1000, ms % 1000 / 100),
        Some(ms) if ms < 3_600_000 => format!("{} min ago", ms / 60_000),
        Some(ms) => format!("{} h ago", ms / 3_600_000),
    }
}

/// `get tunnels` from `status` (local endpoint) and `counters` (tunnels).
#[must_use]
pub fn tunnels(status: &Value, counters: &Value) -> String {
    let mut out = String::new();
    kv(
        &mut out,
        "Local Endpoint",
        &format!(
            "{} (tep id {})",
            cell(&status["underlay_ip"]),
            cell(&status["tep_id"])
        ),
    );
    let tunnels = list(&counters["tunnels"]);
    if tunnels.is_empty() {
        out.push_str("No tunnels\n");
        return out;
    }
    out.push_str(&tunnel_table(tunnels));
    out
}

fn tunnel_table(tunnels: &[Value]) -> String {
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
            cell(&x["tep_ip"]),
            cell(&x["tep_id"]),
            cell(&x["tx_packets"]),
            cell(&x["tx_bytes"]),
            cell(&x["rx_packets"]),
            cell(&x["rx_bytes"]),
            ago(&x["last_rx_ago_ms"]),
        ]);
    }
    t.render()
}

/// A `text` view (`getrules`, `getaddrsets`, `getflows`) verbatim.
pub fn text(reply: &Value) -> Result<String, Error> {
    let Some(t) = reply["text"].as_str() else {
        return Err(Error::BadReply {
            what: "the agent".into(),
            reason: "no \"text\" field".into(),
        });
    };
    let mut t = t.to_string();
    if !t.is_empty() && !t.ends_with('\n') {
        t.push('\n');
    }
    Ok(t)
}

/// `get firewall stats` from `firewall-stats`.
#[must_use]
pub fn firewall_stats(reply: &Value) -> String {
    let mut out = String::new();
    kv(&mut out, "Policy Loaded", &cell(&reply["policy_loaded"]));
    kv(
        &mut out,
        "Connections",
        &format!(
            "{} (capacity {})",
            cell(&reply["flows"]),
            cell(&reply["flow_capacity"])
        ),
    );
    let mut t = Table::new(&[
        ("Rule", R),
        ("Ruleset", L),
        ("Action", L),
        ("Packets", R),
        ("Bytes", R),
        ("Sessions", R),
    ]);
    for r in list(&reply["rules"]) {
        t.row(vec![
            cell(&r["id"]),
            cell(&r["ruleset"]),
            cell(&r["action"]),
            cell(&r["packets"]),
            cell(&r["bytes"]),
            cell(&r["sessions"]),
        ]);
    }
    out.push('\n');
    out.push_str(&t.render());
    let mut c = Table::new(&[("Counter", L), ("Value", R)]);
    for k in [
        "management",
        "fast_path",
        "related",
        "rejects",
        "recheck_removed",
        "log_rate_limited",
    ] {
        c.row(vec![k.to_string(), cell(&reply[k])]);
    }
    for d in list(&reply["drops"]) {
        c.row(vec![format!("drop {}", cell(&d[0])), cell(&d[1])]);
    }
    out.push('\n');
    out.push_str(&c.render());
    out
}

/// `get firewall rule ID`: its `getrules` line(s) and hit counters.
pub fn firewall_rule(rules: &Value, stats: &Value, id: u32) -> Result<String, Error> {
    let needle = format!("rule {id} at ");
    let lines: Vec<&str> = rules["text"]
        .as_str()
        .unwrap_or("")
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with(&needle))
        .collect();
    let stat = list(&stats["rules"])
        .iter()
        .find(|r| r["id"].as_u64() == Some(u64::from(id)));
    if lines.is_empty() && stat.is_none() {
        let known: Vec<String> = list(&stats["rules"])
            .iter()
            .map(|r| cell(&r["id"]))
            .collect();
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
        kv(&mut out, "Ruleset", &cell(&s["ruleset"]));
        kv(&mut out, "Action", &cell(&s["action"]));
        kv(&mut out, "Packets", &cell(&s["packets"]));
        kv(&mut out, "Bytes", &cell(&s["bytes"]));
        kv(&mut out, "Sessions", &cell(&s["sessions"]));
    }
    Ok(out)
}

/// `get statistics` from `counters`.
#[must_use]
pub fn statistics(c: &Value) -> String {
    let mut out = String::new();
    let mut t = Table::new(&[
        ("Traffic", L),
        ("RX Packets", R),
        ("RX Bytes", R),
        ("TX Packets", R),
        ("TX Bytes", R),
    ]);
    for k in ["port", "underlay"] {
        let x = &c[k];
        t.row(vec![
            k.to_string(),
            cell(&x["rx_packets"]),
            cell(&x["rx_bytes"]),
            cell(&x["tx_packets"]),
            cell(&x["tx_bytes"]),
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
    for l in list(&c["layers"]) {
        t.row(vec![
            cell(&l["name"]),
            cell(&l["seen"]),
            cell(&l["passed"]),
            cell(&l["handled"]),
            cell(&l["dropped"]),
        ]);
    }
    out.push('\n');
    out.push_str(&t.render());
    let tunnels = list(&c["tunnels"]);
    if !tunnels.is_empty() {
        out.push('\n');
        out.push_str(&tunnel_table(tunnels));
    }
    out.push('\n');
    let mut t = Table::new(&[("Drop Reason", L), ("Count", R)]);
    if let Some(m) = c["drops"].as_object() {
        for (k, v) in m {
            t.row(vec![k.clone(), cell(v)]);
        }
    }
    t.row(vec!["total".into(), cell(&c["total_drops"])]);
    out.push_str(&t.render());
    if let Some(m) = c["io"].as_object() {
        out.push('\n');
        let mut t = Table::new(&[("I/O", L), ("Count", R)]);
        for (k, v) in m {
            t.row(vec![k.clone(), cell(v)]);
        }
        out.push_str(&t.render());
    }
    kv(&mut out, "\nConfig Version", &cell(&c["config_version"]));
    out
}

/// `get version` from `version` (or `status`, whose `agent`/`version` match).
#[must_use]
pub fn version(reply: &Value, cli: &str) -> String {
    let mut out = String::new();
    kv(&mut out, "nsxcli", cli);
    let agent = reply["agent"].as_str().unwrap_or("nsx-agent");
    kv(&mut out, agent, &cell(&reply["version"]));
    kv(
        &mut out,
        "API Version",
        &reply["api_version"]
            .as_u64()
            .map_or_else(|| "-".to_string(), |v| v.to_string()),
    );
    out
}

/// `get config version` from `status`.
#[must_use]
pub fn config_version(status: &Value, tz: Tz) -> String {
    let mut out = String::new();
    kv(&mut out, "Config Version", &cell(&status["config_version"]));
    let gw = &status["gateway"];
    let source = if gw.is_object() {
        format!(
            "gateway {} (applied version {})",
            cell(&gw["peer"]),
            cell(&gw["applied_version"])
        )
    } else {
        format!("file {}", cell(&status["config_path"]))
    };
    kv(&mut out, "Config Source", &source);
    let r = &status["last_reload"];
    if r.is_object() {
        let at = r["at_unix"]
            .as_i64()
            .map_or_else(|| "-".to_string(), |t| timefmt::ctime(t, tz));
        let ok = if r["ok"].as_bool() == Some(true) {
            "ok"
        } else {
            "failed"
        };
        let msg = r["message"].as_str().unwrap_or("");
        let line = if msg.is_empty() {
            format!("{ok}, {at}")
        } else {
            format!("{ok}, {at}: {msg}")
        };
        kv(&mut out, "Last Reload", &line);
    }
    out
}

/// `trace`: each step numbered, then the verdict and the outputs.
#[must_use]
pub fn trace(reply: &Value) -> String {
    let mut out = String::new();
    for (i, s) in list(&reply["steps"]).iter().enumerate() {
        let layer = s["layer"].as_str().unwrap_or("?");
        let detail = s["detail"].as_str().unwrap_or("");
        // Details that already name their layer ("router t1: ...") stand alone.
        let named = detail
            .strip_prefix(layer)
            .is_some_and(|r| r.starts_with(':') || r.starts_with(' '));
        let line = if named || layer == "?" {
            detail.to_string()
        } else if detail.is_empty() {
            format!("{layer}: {}", cell(&s["result"]))
        } else {
            format!("{layer}: {detail}")
        };
        out.push_str(&format!("{:>2}. {line}\n", i + 1));
    }
    let verdict = cell(&reply["verdict"]);
    let reasons: Vec<&str> = ["drop_reason", "firewall_drop_reason"]
        .iter()
        .filter_map(|k| reply[*k].as_str())
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
    for o in list(&reply["outputs"]) {
        let kind = cell(&o["kind"]);
        let mut line = if o["vni"].is_null() {
            format!("{kind} {}, {} bytes", cell(&o["dst"]), cell(&o["len"]))
        } else {
            format!(
                "{kind} {} vni {}, {} bytes",
                cell(&o["dst"]),
                vni(&o["vni"]),
                cell(&o["len"])
            )
        };
        if let Some(s) = o["summary"].as_str().filter(|s| !s.is_empty()) {
            line.push_str(": ");
            line.push_str(s);
        }
        kv(&mut out, "Output", &line);
    }
    out
}

// ---- gateway ----

/// `get instances` (gateway) from `GET /api/v1/instances`.
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
    ]);
    for i in list(list_v) {
        t.row(vec![
            cell(&i["id"]),
            cell(&i["hostname"]),
            cell(&i["mode"]),
            cell(&i["switch"]),
            cell(&i["ip"]),
            i["session"].as_str().unwrap_or("never").to_string(),
            cell(&i["acked_version"]),
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
