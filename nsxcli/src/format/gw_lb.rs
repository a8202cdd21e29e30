//! The gateway's load balancer views (`nsxcli --gateway get
//! load-balancers`, `get load-balancer <vip:port>`) from `GET
//! /api/v1/load-balancers`: the desired state's virtual servers (serde of
//! `control::lb::VirtualServer`, which leaves fields at their default out),
//! where each is balanced (`balanced_at`), and the gateway's verdict on
//! each checked real server (`health`: the edge's last check that changed
//! its state). For a distributed virtual server this is the one place the
//! last check result can be read. Like the other gateway views they take
//! any JSON: what does not fit prints as it came, or `-`.

use std::net::{Ipv4Addr, SocketAddrV4};

use control::lb::{
    Endpoint, ForwardKind, HealthCheck, LbProtocol, Scheduler, VirtualServer, defaults,
};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::lb::{forwarding, persistence};
use super::{L, R, cell, from_json, kv, list, one_line, when};
use crate::error::Error;
use crate::table::Table;
use crate::timefmt::Tz;

/// What a virtual server's JSON means by a field it leaves out:
/// `control::lb`'s defaults (quorum 1, no hysteresis, granularity /32,
/// no `inhibit_on_failure`).
fn absent() -> VirtualServer {
    VirtualServer::new(Ipv4Addr::UNSPECIFIED, 0, LbProtocol::Tcp, Scheduler::Rr)
}

/// A virtual server's identity, in the order the list sorts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    vip: Ipv4Addr,
    port: u16,
    protocol: LbProtocol,
}

fn key(vs: &Value) -> Option<Key> {
    Some(Key {
        vip: from_json(&vs["vip"])?,
        port: from_json(&vs["port"])?,
        protocol: from_json(&vs["protocol"])?,
    })
}

/// `TCP 10.64.1.2:7000` (`VirtualServer::key`'s form).
fn name(vs: &Value) -> String {
    format!(
        "{} {}:{}",
        cell(&vs["protocol"]).to_uppercase(),
        cell(&vs["vip"]),
        cell(&vs["port"])
    )
}

/// The virtual servers by address, port and protocol (entries that do not
/// fit first, as they came).
fn sorted(reply: &Value) -> Vec<&Value> {
    let mut all: Vec<&Value> = list(reply).iter().collect();
    all.sort_by_key(|vs| key(vs));
    all
}

/// `v` read as a `T` and shown by `show`; as it came when it is not one.
fn shown<T: DeserializeOwned>(v: &Value, show: impl FnOnce(T) -> String) -> String {
    from_json(v).map_or_else(|| cell(v), show)
}

fn is_down(rs: &Value) -> bool {
    rs["health"]["state"] == "down"
}

/// `get load-balancers` (gateway): one line per virtual server of the
/// desired state.
#[must_use]
pub fn gw_load_balancers(reply: &Value) -> String {
    let mut t = Table::new(&[
        ("Virtual Server", L),
        ("Scheduler", L),
        ("Forward", L),
        ("Persistence", L),
        ("Balanced At", L),
        ("Real Servers", R),
        ("Down", R),
    ]);
    for vs in sorted(reply) {
        let servers = list(&vs["real_servers"]);
        t.row(vec![
            name(vs),
            cell(&vs["scheduler"]),
            shown(&vs["kind"], |k: ForwardKind| k.ipvsadm().into()),
            vs["persistence_timeout"]
                .as_u64()
                .map_or_else(|| "-".to_string(), |s| format!("{s} s")),
            cell(&vs["balanced_at"]),
            servers.len().to_string(),
            servers.iter().filter(|rs| is_down(rs)).count().to_string(),
        ]);
    }
    t.render()
}

/// The virtual server `protocol` `at` of a `GET /api/v1/load-balancers`
/// reply.
pub fn find_gw_virtual_server(
    reply: &Value,
    protocol: LbProtocol,
    at: SocketAddrV4,
) -> Result<&Value, Error> {
    let want = Key {
        vip: *at.ip(),
        port: at.port(),
        protocol,
    };
    list(reply)
        .iter()
        .find(|vs| key(vs) == Some(want))
        .ok_or_else(|| {
            Error::Failed(format!(
                "no virtual server {} {at} in the gateway's state",
                protocol.upper()
            ))
        })
}

/// The netmask of a prefix length below 32 (persistence groups clients by
/// it); `None` for 32 (one address) or a length that is none.
fn prefix_mask(len: u64) -> Option<Ipv4Addr> {
    let len = u8::try_from(len).ok().filter(|l| *l < 32)?;
    Some(Ipv4Addr::from(control::lb::client_mask(len)))
}

/// `2`, or `2 (hysteresis 1)`.
fn quorum(vs: &Value, absent: &VirtualServer) -> String {
    let quorum = vs["quorum"].as_u64().unwrap_or(absent.quorum.into());
    match vs["hysteresis"]
        .as_u64()
        .unwrap_or(absent.hysteresis.into())
    {
        0 => quorum.to_string(),
        h => format!("{quorum} (hysteresis {h})"),
    }
}

/// keepalived's checker name (`TCP_CHECK`, ...); `-` without one; a
/// checker this nsxcli does not know by its `type`.
fn checker(check: &Value) -> String {
    from_json(check).map_or_else(|| cell(&check["type"]), |c: HealthCheck| c.kind().into())
}

/// `up`, `down`, `weight 5`; `-` for an unchecked server.
fn health(h: &Value) -> String {
    match h["state"].as_str() {
        None => "-".into(),
        Some("weight") => format!("weight {}", cell(&h["weight"])),
        Some(state) => state.into(),
    }
}

/// The settings of one virtual server, `key : value`.
fn settings(out: &mut String, vs: &Value) {
    let absent = absent();
    kv(out, "Virtual Server", &name(vs));
    kv(out, "Balanced At", &cell(&vs["balanced_at"]));
    kv(out, "Scheduler", &cell(&vs["scheduler"]));
    kv(out, "Forwarding", &shown(&vs["kind"], forwarding));
    let granularity = vs["persistence_granularity"]
        .as_u64()
        .unwrap_or(absent.persistence_granularity.into());
    kv(
        out,
        "Persistence",
        &persistence(vs["persistence_timeout"].as_u64(), prefix_mask(granularity)),
    );
    kv(out, "Quorum", &quorum(vs, &absent));
    let inhibit = vs["inhibit_on_failure"]
        .as_bool()
        .unwrap_or(absent.inhibit_on_failure);
    kv(
        out,
        "Inhibit On Failure",
        if inhibit { "yes" } else { "no" },
    );
    let sorry = shown(&vs["sorry_server"], |e: Endpoint| e.to_string());
    kv(out, "Sorry Server", &sorry);
    let delay = vs["delay_loop"]
        .as_u64()
        .unwrap_or(defaults::DELAY_LOOP.into());
    kv(out, "Delay Loop", &format!("{delay} s"));
}

/// `get load-balancer <vip:port>` (gateway): the virtual server's
/// settings, then each real server (by address and port) with its
/// checker and the gateway's verdict: state, since when (in `tz`), and
/// what the check that set it found.
#[must_use]
pub fn gw_load_balancer(vs: &Value, tz: Tz) -> String {
    let mut out = String::new();
    settings(&mut out, vs);
    out.push('\n');
    let mut t = Table::new(&[
        ("Real Server", L),
        ("Weight", R),
        ("Check", L),
        ("Health", L),
        ("Since", L),
        ("Reason", L),
    ]);
    let mut servers: Vec<&Value> = list(&vs["real_servers"]).iter().collect();
    servers.sort_by_key(|rs| (from_json::<Ipv4Addr>(&rs["ip"]), rs["port"].as_u64()));
    for rs in servers {
        let h = &rs["health"];
        t.row(vec![
            format!("{}:{}", cell(&rs["ip"]), cell(&rs["port"])),
            cell(&rs["weight"]),
            checker(&rs["check"]),
            health(h),
            when(&h["since"], tz),
            one_line(&cell(&h["reason"])),
        ]);
    }
    out.push_str(&t.render());
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::format::tests::{fixture, golden};

    #[test]
    fn gateway_views_match_golden_text() {
        let all = fixture("gw_load_balancers");
        golden("gw_load_balancers", &gw_load_balancers(&all));
        let at = |s: &str| s.parse::<SocketAddrV4>().unwrap();
        for (file, protocol, vs) in [
            ("gw_load_balancer", LbProtocol::Tcp, "10.64.1.2:7000"),
            ("gw_load_balancer_edge", LbProtocol::Udp, "10.64.1.3:53"),
            (
                "gw_load_balancer_persistence",
                LbProtocol::Tcp,
                "10.64.1.2:10000",
            ),
        ] {
            let found = find_gw_virtual_server(&all, protocol, at(vs)).unwrap();
            golden(file, &gw_load_balancer(found, Tz::UTC));
        }
    }

    #[test]
    fn the_fixture_is_what_the_gateway_sends() {
        // Without the gateway's additions, each entry is control::lb's
        // serde of a virtual server, defaults left out as it leaves them.
        for mut vs in list(&fixture("gw_load_balancers")).to_vec() {
            vs.as_object_mut().unwrap().remove("balanced_at");
            for rs in vs["real_servers"].as_array_mut().unwrap() {
                rs.as_object_mut().unwrap().remove("health");
            }
            let typed: VirtualServer = serde_json::from_value(vs.clone()).unwrap();
            assert_eq!(serde_json::to_value(&typed).unwrap(), vs);
        }
    }

    #[test]
    fn the_list_counts_what_the_health_checks_hold_down() {
        let text = gw_load_balancers(&fixture("gw_load_balancers"));
        let line = text
            .lines()
            .find(|l| l.starts_with("TCP 10.64.1.2:7000 "))
            .unwrap();
        // Four real servers, one down (a weight from a script is up, an
        // unchecked server is not counted).
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cells[cells.len() - 3..], ["instances", "4", "1"], "{line}");
        // Sorted by address, port, then protocol.
        let order: Vec<&str> = text
            .lines()
            .skip(1)
            .map(|l| l.split("  ").next().unwrap())
            .collect();
        assert_eq!(
            order,
            [
                "TCP 10.64.1.2:7000",
                "UDP 10.64.1.2:7000",
                "TCP 10.64.1.2:10000",
                "UDP 10.64.1.3:53",
                "TCP 203.0.113.10:443"
            ]
        );
    }

    #[test]
    fn the_protocol_is_part_of_the_identity() {
        let all = fixture("gw_load_balancers");
        let at = "10.64.1.2:7000".parse().unwrap();
        let udp = find_gw_virtual_server(&all, LbProtocol::Udp, at).unwrap();
        assert_eq!(udp["scheduler"], "wrr");
        let e = find_gw_virtual_server(&all, LbProtocol::Udp, "10.64.1.2:10000".parse().unwrap())
            .unwrap_err();
        assert_eq!(
            e.render(),
            "% no virtual server UDP 10.64.1.2:10000 in the gateway's state\n"
        );
        assert_eq!(e.exit_code(), crate::error::EXIT_FAILED);
    }

    #[test]
    fn absent_fields_are_control_lbs_defaults() {
        // What the gateway sends for `{vip, port, real_servers}` alone.
        let vs = json!({"vip": "10.0.0.1", "port": 80, "protocol": "tcp", "scheduler": "wlc",
            "kind": "nat", "real_servers": [], "balanced_at": "instances"});
        assert_eq!(
            gw_load_balancer(&vs, Tz::UTC),
            "Virtual Server : TCP 10.0.0.1:80\nBalanced At : instances\nScheduler : wlc\n\
             Forwarding : NAT (Masq)\nPersistence : none\nQuorum : 1\nInhibit On Failure : no\n\
             Sorry Server : -\nDelay Loop : 60 s\n\nReal Server  Weight  Check  Health  Since  Reason\n"
        );
    }

    #[test]
    fn masks_of_prefix_lengths() {
        assert_eq!(prefix_mask(24), Some(Ipv4Addr::new(255, 255, 255, 0)));
        assert_eq!(prefix_mask(0), Some(Ipv4Addr::UNSPECIFIED));
        assert_eq!(prefix_mask(31), Some(Ipv4Addr::new(255, 255, 255, 254)));
        assert_eq!(prefix_mask(32), None);
        assert_eq!(prefix_mask(u64::MAX), None);
    }

    #[test]
    fn odd_replies_print_what_came() {
        for v in [
            json!(null),
            json!([1, "x", {}]),
            json!([{"vip": 3, "real_servers": [{"health": {"state": "weight"}}, 7],
                    "kind": "dsr", "persistence_granularity": 99, "quorum": "x",
                    "sorry_server": {"ip": "nope"}}]),
        ] {
            let _ = gw_load_balancers(&v);
            for vs in list(&v) {
                let _ = gw_load_balancer(vs, Tz::UTC);
            }
        }
        let vs = json!({"vip": "10.0.0.1", "port": 80, "protocol": "sctp", "kind": "dsr",
            "real_servers": [{"ip": "10.0.1.1", "port": 80, "weight": 1,
                "check": {"type": "grpc", "service": "x"},
                "health": {"state": "weight", "weight": 0, "reason": "line one\nline two"}}]});
        let text = gw_load_balancer(&vs, Tz::UTC);
        assert!(
            text.starts_with("Virtual Server : SCTP 10.0.0.1:80\n"),
            "{text}"
        );
        assert!(text.contains("Forwarding : dsr\n"), "{text}");
        assert!(
            text.ends_with("10.0.1.1:80       1  grpc   weight 0  -      line one line two\n"),
            "{text}"
        );
    }
}
