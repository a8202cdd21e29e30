//! The load balancer's views in `ipvsadm`'s layouts: `-Ln` (the pool),
//! `-Ln --stats`, `-Ln --rate`, and one virtual server's detail (health,
//! persistence templates). Widths, column names and the number format
//! (`print_largenum`: exact below 100 million, then K/M/G/T) are ipvsadm's,
//! so what operators grep for is where they expect it. Services are sorted
//! by protocol, address and port, real servers by address and port, as
//! ipvsadm sorts them.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use agent_api::{
    LbCheckView, LbRates, LbRealServerView, LbServiceView, LbStats, LoadBalancersReply,
};
use control::lb::ForwardKind;
use serde_json::Value;

use super::kv;
use crate::table::{Align, Table};

/// Which `ipvsadm -Ln` variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LbView {
    /// `ipvsadm -Ln`: scheduler, flags, forward, weight, connections.
    Pool,
    /// `ipvsadm -Ln --stats`.
    Stats,
    /// `ipvsadm -Ln --rate`.
    Rate,
}

/// What `ipvsadm -Ln` lists of a virtual server: the pool (not the servers
/// that failed without `inhibit_on_failure`, nor removed ones).
fn in_pool(rs: &LbRealServerView) -> bool {
    !matches!(rs.state.as_str(), "down" | "removed")
}

/// `TCP  10.64.1.2:10000`, cut at 33 characters as ipvsadm cuts it.
fn svc_name(s: &LbServiceView) -> String {
    let mut n = format!("{}  {}:{}", s.protocol, s.vip, s.port);
    n.truncate(33);
    n
}

fn dest_name(rs: &LbRealServerView) -> String {
    let mut n = format!("{}:{}", rs.ip, rs.port);
    n.truncate(28);
    n
}

/// ipvsadm's `print_largenum`: nine columns, K/M/G/T past 100 million.
fn largenum(out: &mut String, i: u64) {
    let _ = match i {
        0..100_000_000 => write!(out, "{i:9}"),
        100_000_000..1_000_000_000 => write!(out, "{:8}K", i / 1_000),
        1_000_000_000..100_000_000_000 => write!(out, "{:8}M", i / 1_000_000),
        100_000_000_000..100_000_000_000_000 => write!(out, "{:8}G", i / 1_000_000_000),
        _ => write!(out, "{:8}T", i / 1_000_000_000_000),
    };
}

fn sorted(reply: &LoadBalancersReply) -> Vec<&LbServiceView> {
    let mut s: Vec<&LbServiceView> = reply.services.iter().collect();
    s.sort_by_key(|s| (s.protocol.clone(), s.vip, s.port));
    s
}

fn pool(s: &LbServiceView) -> Vec<&LbRealServerView> {
    let mut d: Vec<&LbRealServerView> = s.real_servers.iter().filter(|r| in_pool(r)).collect();
    d.sort_by_key(|r| (r.ip, r.port));
    d
}

/// `ipvsadm -Ln` and its `--stats` / `--rate` variants.
#[must_use]
pub fn load_balancers(reply: &LoadBalancersReply, view: LbView) -> String {
    let mut out = format!(
        "IP Virtual Server version 1.2.1 (size={})\n",
        reply.capacity
    );
    let _ = match view {
        LbView::Pool => writeln!(
            out,
            "Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn"
        ),
        LbView::Stats => writeln!(
            out,
            "{:<33} {:>8} {:>8} {:>8} {:>8} {:>8}\n  -> RemoteAddress:Port",
            "Prot LocalAddress:Port", "Conns", "InPkts", "OutPkts", "InBytes", "OutBytes"
        ),
        LbView::Rate => writeln!(
            out,
            "{:<33} {:>8} {:>8} {:>8} {:>8} {:>8}\n  -> RemoteAddress:Port",
            "Prot LocalAddress:Port", "CPS", "InPPS", "OutPPS", "InBPS", "OutBPS"
        ),
    };
    for s in sorted(reply) {
        match view {
            LbView::Pool => {
                out.push_str(&svc_name(s));
                out.push(' ');
                out.push_str(&s.scheduler);
                if let Some(t) = s.persistence_timeout {
                    let _ = write!(out, " persistent {t}");
                    if let Some(m) = s.persistence_mask {
                        let _ = write!(out, " mask {m}");
                    }
                }
            }
            LbView::Stats => {
                let _ = write!(out, "{:<33}", svc_name(s));
                largenums(&mut out, &stat_columns(&s.stats));
            }
            LbView::Rate => {
                let _ = write!(out, "{:<33}", svc_name(s));
                largenums(&mut out, &rate_columns(&s.rates));
            }
        }
        out.push('\n');
        for rs in pool(s) {
            let _ = match view {
                LbView::Pool => write!(
                    out,
                    "  -> {:<28} {:<7} {:<6} {:<10} {:<10}",
                    dest_name(rs),
                    rs.forward,
                    rs.weight,
                    rs.active,
                    rs.inactive
                ),
                LbView::Stats => {
                    let _ = write!(out, "  -> {:<28}", dest_name(rs));
                    largenums(&mut out, &stat_columns(&rs.stats));
                    Ok(())
                }
                LbView::Rate => {
                    // ipvsadm prints a server's CPS and PPS exact, its BPS folded.
                    let [cps, in_pps, out_pps, in_bps, out_bps] = rate_columns(&rs.rates);
                    let _ = write!(
                        out,
                        "  -> {:<28} {cps:8} {in_pps:8} {out_pps:8}",
                        dest_name(rs)
                    );
                    largenums(&mut out, &[in_bps, out_bps]);
                    Ok(())
                }
            };
            out.push('\n');
        }
    }
    out
}

/// `--stats`' columns: Conns, InPkts, OutPkts, InBytes, OutBytes.
fn stat_columns(s: &LbStats) -> [u64; 5] {
    [
        s.conns,
        s.in_packets,
        s.out_packets,
        s.in_bytes,
        s.out_bytes,
    ]
}

/// `--rate`'s columns: CPS, InPPS, OutPPS, InBPS, OutBPS.
fn rate_columns(r: &LbRates) -> [u64; 5] {
    [r.cps, r.in_pps, r.out_pps, r.in_bps, r.out_bps]
}

/// The health checkers' last results, on the edge that runs them;
/// elsewhere, where they run.
fn health_checks(out: &mut String, role: &str, s: &LbServiceView) {
    let mut checked: Vec<(&LbRealServerView, Option<&LbCheckView>)> = s
        .real_servers
        .iter()
        .filter(|rs| rs.checker.is_some())
        .map(|rs| (rs, rs.check.as_ref()))
        .collect();
    if checked.is_empty() {
        return;
    }
    if role != "edge" {
        kv(
            out,
            "Health Checks",
            "run by the edge (their last results: its view, or nsxcli --gateway get load-balancer); \
             State follows its verdicts",
        );
        out.push('\n');
        return;
    }
    checked.sort_by_key(|(rs, _)| (rs.ip, rs.port));
    let mut t = Table::new(&[
        ("Real Server", Align::Left),
        ("Check", Align::Left),
        ("Verdict", Align::Left),
        ("Last Result", Align::Left),
        ("Checked", Align::Right),
        ("Failures", Align::Right),
        ("Transitions", Align::Right),
    ]);
    for (rs, c) in checked {
        let dash = || "-".to_string();
        t.row(vec![
            format!("{}:{}", rs.ip, rs.port),
            rs.checker.clone().unwrap_or_else(dash),
            c.map_or_else(dash, |c| c.liveness.clone()),
            c.and_then(|c| c.last_result.clone()).unwrap_or_else(dash),
            c.and_then(|c| c.last_check_ms_ago)
                .map_or_else(|| "never".into(), seconds_ago),
            c.map_or_else(dash, |c| c.failures.to_string()),
            c.map_or_else(dash, |c| c.transitions.to_string()),
        ]);
    }
    out.push_str(&t.render());
    out.push('\n');
}

/// `1.5 s ago` (tenths, rounded down).
fn seconds_ago(ms: u64) -> String {
    format!("{}.{} s ago", ms / 1000, ms % 1000 / 100)
}

fn largenums(out: &mut String, ns: &[u64]) {
    for &n in ns {
        largenum(out, n);
    }
}

/// `NAT (Masq)` / `full-NAT (FullNat)`: the forwarding method, with
/// ipvsadm's word for it.
pub(super) fn forwarding(kind: ForwardKind) -> String {
    let method = match kind {
        ForwardKind::Nat => "NAT",
        ForwardKind::Fnat => "full-NAT",
    };
    format!("{method} ({})", kind.ipvsadm())
}

/// `none`, `10 s`, or `10 s, mask 255.255.255.0`.
pub(super) fn persistence(timeout_s: Option<u64>, mask: Option<Ipv4Addr>) -> String {
    match (timeout_s, mask) {
        (None, _) => "none".to_string(),
        (Some(t), None) => format!("{t} s"),
        (Some(t), Some(m)) => format!("{t} s, mask {m}"),
    }
}

/// `get load-balancer <vip:port>`: the virtual server, every real server
/// with its health and connections, and the persistence templates.
#[must_use]
pub fn load_balancer(reply: &LoadBalancersReply) -> String {
    let mut out = String::new();
    for s in sorted(reply) {
        kv(
            &mut out,
            "Virtual Server",
            &format!("{} {}:{}", s.protocol, s.vip, s.port),
        );
        kv(&mut out, "Balanced At", &reply.role);
        kv(&mut out, "Scheduler", &s.scheduler);
        // The agent's word is control::lb's (`nat`, `fnat`).
        let kind = super::from_json(&Value::from(s.kind.as_str())).unwrap_or(ForwardKind::Nat);
        kv(&mut out, "Forwarding", &forwarding(kind));
        kv(
            &mut out,
            "Persistence",
            &persistence(s.persistence_timeout.map(u64::from), s.persistence_mask),
        );
        kv(
            &mut out,
            "Quorum",
            if s.quorum_lost {
                "lost (new connections to the sorry server)"
            } else {
                "met"
            },
        );
        kv(
            &mut out,
            "Sorry Server",
            &s.sorry_server
                .map_or_else(|| "-".to_string(), |e| e.to_string()),
        );
        kv(
            &mut out,
            "Connections",
            &format!(
                "{} total, {} packets in, {} out",
                s.stats.conns, s.stats.in_packets, s.stats.out_packets
            ),
        );
        out.push('\n');
        let mut t = Table::new(&[
            ("Real Server", Align::Left),
            ("Forward", Align::Left),
            ("State", Align::Left),
            ("Weight", Align::Right),
            ("Config Weight", Align::Right),
            ("ActiveConn", Align::Right),
            ("InActConn", Align::Right),
            ("Conns", Align::Right),
        ]);
        let mut rss: Vec<&LbRealServerView> = s.real_servers.iter().collect();
        rss.sort_by_key(|r| (r.ip, r.port));
        for rs in rss {
            t.row(vec![
                format!("{}:{}", rs.ip, rs.port),
                rs.forward.clone(),
                rs.state.clone(),
                rs.weight.to_string(),
                rs.config_weight.to_string(),
                rs.active.to_string(),
                rs.inactive.to_string(),
                rs.stats.conns.to_string(),
            ]);
        }
        out.push_str(&t.render());
        out.push('\n');
        health_checks(&mut out, &reply.role, s);
        if s.persistence.is_empty() {
            out.push_str("Persistence Templates : none\n");
        } else {
            let mut p = Table::new(&[
                ("Client", Align::Left),
                ("Real Server", Align::Left),
                ("Connections", Align::Right),
                ("Expires In", Align::Right),
            ]);
            for tpl in &s.persistence {
                p.row(vec![
                    tpl.client.to_string(),
                    tpl.server.to_string(),
                    tpl.connections.to_string(),
                    format!("{} s", tpl.expires_in_s),
                ]);
            }
            out.push_str(&p.render());
        }
    }
    if reply.services.is_empty() {
        out.push_str("No such virtual server\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::tests::{golden, typed};

    #[test]
    fn ipvsadm_layouts_match_golden_text() {
        let r: LoadBalancersReply = typed("load_balancers");
        golden("load_balancers", &load_balancers(&r, LbView::Pool));
        golden("load_balancers_stats", &load_balancers(&r, LbView::Stats));
        golden("load_balancers_rate", &load_balancers(&r, LbView::Rate));
        golden("load_balancer", &load_balancer(&typed("load_balancer")));
        golden(
            "load_balancer_edge",
            &load_balancer(&typed("load_balancer_edge")),
        );
    }

    #[test]
    fn the_pool_line_is_ipvsadms() {
        let r: LoadBalancersReply = typed("load_balancers");
        let text = load_balancers(&r, LbView::Pool);
        // ipvsadm's exact lines for the seed's virtual server.
        assert!(
            text.contains("\nTCP  10.64.1.2:10000 rr persistent 10\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "\n  -> 192.168.1.100:8089           Masq    1      2          1         \n"
            ),
            "{text}"
        );
        // A failed server without inhibit_on_failure is out of the pool.
        assert!(!text.contains("192.168.1.102"), "{text}");
    }

    #[test]
    fn large_numbers_fold_as_ipvsadm() {
        let mut s = String::new();
        for n in [0, 99_999_999, 100_000_000, 2_500_000_000, u64::MAX] {
            largenum(&mut s, n);
        }
        // Nine columns each, and no separator: ipvsadm's own run-together
        // when a number fills its nine.
        assert_eq!(s, "        0 99999999  100000K    2500M18446744T");
    }
}
