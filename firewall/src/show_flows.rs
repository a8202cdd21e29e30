//! `getflows`: the connection table in the format of the seed's
//! `vsipioctl getflows`:
//!
//! ```text
//! Count retrieved from kernel active(L3,L4)=3, active(L2)+inactive(L3,L4)=0, drop(L2,L3,L4)=0
//! 558a796d00000000 Active tcp 0800 1 1006 0 0  172.16.10.12:Unknown(44194) 172.16.10.11:ssh(22) 2413 EST 3017 2957 19 18
//! ```
//!
//! Columns of a flow line, left to right:
//!
//! | # | column | meaning |
//! |---|---|---|
//! | 1 | `558a796d00000000` | flow id (hex), stable for the connection's life |
//! | 2 | `Active` | `Active`, or `Inactive` for a closing TCP connection (TIME_WAIT, CLOSED) |
//! | 3 | `tcp` | protocol (`tcp`, `udp`, `icmp`, or the number) |
//! | 4 | `0800` | ethertype (hex) |
//! | 5 | `1` | direction of the first packet: `1` in (toward the instance), `0` out |
//! | 6 | `1006` | id of the rule that admitted the connection |
//! | 7, 8 | `0 0` | packets of this connection the firewall dropped as invalid (refused by TCP state/window tracking: `fw_invalid`), initiator -> responder, responder -> initiator; 0 0 for a healthy connection, as in the seed |
//! | 9 | `172.16.10.12:Unknown(44194)` | initiator address:service(port) |
//! | 10 | `172.16.10.11:ssh(22)` | responder address:service(port) |
//! | 11 | `2413` | age of the connection, seconds |
//! | 12 | `EST` | state (TCP: SYN_SENT, SYN_SENT2 (simultaneous open), SYN_RECV, EST, FIN_WAIT, CLOSE_WAIT, LAST_ACK, TIME_WAIT, CLOSED; UDP/other: FIRST, SINGLE, MULTIPLE; ICMP: FIRST, REPLIED) |
//! | 13, 14 | `3017 2957` | bytes initiator -> responder, responder -> initiator |
//! | 15, 16 | `19 18` | packets initiator -> responder, responder -> initiator |
//!
//! ICMP flows print the query identifier as the port of both ends.
//!
//! NSX does not document columns 7 and 8; they are 0 0 on the seed's
//! healthy connection, and here they are the connection's own drops, the
//! one per-connection drop count a stateful firewall has (packets of an
//! unknown connection are judged by the rules and counted per rule and per
//! reason: `get firewall stats`, `nsx_agent_firewall_drops_total`).
//!
//! The header's counts are entries of the connection table, as NSX's are
//! entries of its kernel tables. `active(L3,L4)`: connections not closing;
//! `active(L2)+inactive(L3,L4)`: closing TCP connections (`TIME_WAIT`,
//! `CLOSED`; L2 rules are stateless here, so there are no L2 entries).
//! `drop(L2,L3,L4)` counts NSX's *drop flows*, entries it keeps for denied
//! traffic; this firewall keeps none by design (each packet of denied
//! traffic is judged again by the rules, so a scan of denied ports costs no
//! table memory and cannot crowd out accepted connections), so that count
//! is always 0, and what was denied is in the drop counters above.

use std::fmt::{self, Write};

use crate::conntrack::{Conntrack, FlowView, State};
use crate::flow::Dir;
use crate::tcp::TcpState;

/// The `getflows` text of every tracked connection.
pub fn getflows(ct: &Conntrack, now_ns: u64) -> String {
    let mut out = String::new();
    let _ = write_flows(&mut out, ct, now_ns);
    out
}

/// Writes the `getflows` text to `out`.
pub fn write_flows(out: &mut impl Write, ct: &Conntrack, now_ns: u64) -> fmt::Result {
    let (mut active, mut inactive) = (0usize, 0usize);
    for f in ct.iter() {
        if is_active(&f) {
            active += 1;
        } else {
            inactive += 1;
        }
    }
    writeln!(
        out,
        "Count retrieved from kernel active(L3,L4)={active}, active(L2)+inactive(L3,L4)={inactive}, drop(L2,L3,L4)=0"
    )?;
    let mut flows: Vec<FlowView> = ct.iter().collect();
    flows.sort_by_key(|f| f.created_ns);
    for f in &flows {
        write_flow(out, f, now_ns)?;
    }
    Ok(())
}

fn is_active(f: &FlowView) -> bool {
    !matches!(f.state, State::Tcp(TcpState::TimeWait | TcpState::Close))
}

/// One flow line.
pub fn write_flow(out: &mut impl Write, f: &FlowView, now_ns: u64) -> fmt::Result {
    let t = &f.tuple;
    write!(
        out,
        "{:016x} {} {} 0800 {} {} {} {}  ",
        f.id,
        if is_active(f) { "Active" } else { "Inactive" },
        proto_name(t.proto),
        u8::from(f.dir == Dir::In),
        f.rule_id,
        f.dropped_orig,
        f.dropped_reply,
    )?;
    endpoint(out, t.proto, t.src, t.sport)?;
    out.write_char(' ')?;
    endpoint(out, t.proto, t.dst, t.dport)?;
    writeln!(
        out,
        " {} {} {} {} {} {}",
        now_ns.saturating_sub(f.created_ns) / 1_000_000_000,
        f.state.name(),
        f.bytes_orig,
        f.bytes_reply,
        f.packets_orig,
        f.packets_reply
    )
}

fn endpoint(out: &mut impl Write, proto: u8, ip: std::net::Ipv4Addr, port: u16) -> fmt::Result {
    match proto {
        6 | 17 => write!(out, "{ip}:{}({port})", service_name(proto, port)),
        1 => write!(out, "{ip}:icmp({port})"),
        _ => write!(out, "{ip}"),
    }
}

/// Lower-case protocol name (`tcp`, `udp`, `icmp`, `ipv6-icmp`, or the number).
pub fn proto_name(proto: u8) -> String {
    control::Protocol::Number(proto).to_string()
}

/// The well-known service name of a port, `Unknown` otherwise.
pub fn service_name(proto: u8, port: u16) -> &'static str {
    match (proto, port) {
        (6, 20) => "ftp-data",
        (6, 21) => "ftp",
        (6, 22) => "ssh",
        (6, 23) => "telnet",
        (6, 25) => "smtp",
        (_, 53) => "domain",
        (17, 67) => "bootps",
        (17, 68) => "bootpc",
        (17, 69) => "tftp",
        (6, 80) => "http",
        (6, 110) => "pop3",
        (17, 123) => "ntp",
        (6, 143) => "imap",
        (17, 161) => "snmp",
        (6, 389) => "ldap",
        (6, 443) => "https",
        (6, 445) => "microsoft-ds",
        (17, 514) => "syslog",
        (6, 636) => "ldaps",
        (6, 993) => "imaps",
        (6, 995) => "pop3s",
        (6, 1433) => "ms-sql-s",
        (6, 3306) => "mysql",
        (6, 3389) => "ms-wbt-server",
        (6, 5432) => "postgresql",
        (17, 6081) => "geneve",
        (6, 8080) => "http-alt",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::{L4, TcpMeta, Tuple};
    use std::net::Ipv4Addr;

    #[test]
    fn seed_line_shape() {
        let mut ct = Conntrack::with_seed(64, 1);
        let t = Tuple {
            proto: 6,
            src: Ipv4Addr::new(172, 16, 10, 12),
            dst: Ipv4Addr::new(172, 16, 10, 11),
            sport: 44194,
            dport: 22,
        };
        let syn = TcpMeta {
            flags: TcpMeta::SYN,
            seq: 100,
            window: 64240,
            ..TcpMeta::default()
        };
        ct.insert(&t, Dir::In, 1006, &L4::Tcp(syn), 60, 0).unwrap();
        let text = getflows(&ct, 2_413_000_000_000);
        let mut lines = text.lines();
        assert_eq!(
            lines.next().unwrap(),
            "Count retrieved from kernel active(L3,L4)=1, active(L2)+inactive(L3,L4)=0, drop(L2,L3,L4)=0"
        );
        let line = lines.next().unwrap();
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cols.len(), 16, "{line}");
        assert_eq!(
            &cols[1..8],
            ["Active", "tcp", "0800", "1", "1006", "0", "0"]
        );
        assert_eq!(cols[8], "172.16.10.12:Unknown(44194)");
        assert_eq!(cols[9], "172.16.10.11:ssh(22)");
        assert_eq!(cols[10], "2413");
        assert_eq!(&cols[12..], ["60", "0", "1", "0"]);
        assert!(
            line.contains(" 0 0  172.16.10.12"),
            "two spaces before the source as in the seed"
        );
    }

    #[test]
    fn columns_7_and_8_count_the_connections_refused_packets() {
        let mut ct = Conntrack::with_seed(64, 1);
        let t = Tuple {
            proto: 6,
            src: Ipv4Addr::new(172, 16, 10, 12),
            dst: Ipv4Addr::new(172, 16, 10, 11),
            sport: 44194,
            dport: 22,
        };
        let reply = Tuple {
            src: t.dst,
            dst: t.src,
            sport: t.dport,
            dport: t.sport,
            ..t
        };
        let syn = TcpMeta {
            flags: TcpMeta::SYN,
            seq: 100,
            window: 64240,
            ..TcpMeta::default()
        };
        // No flags at all: no stack sends that.
        let bad = TcpMeta {
            flags: 0,
            seq: 101,
            window: 64240,
            ..TcpMeta::default()
        };
        ct.insert(&t, Dir::In, 1006, &L4::Tcp(syn), 60, 0).unwrap();
        for (tuple, n) in [(t, 2), (reply, 1)] {
            for _ in 0..n {
                let hit = ct.lookup(&tuple, 1).expect("tracked");
                assert!(ct.track(hit, &L4::Tcp(bad), 40, 1).is_err());
            }
        }
        let text = getflows(&ct, 1_000_000_000);
        let line = text.lines().nth(1).expect("a flow line");
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(&cols[5..8], ["1006", "2", "1"], "{line}");
        // Refused packets are not in the traffic counters.
        assert_eq!(&cols[12..], ["60", "0", "1", "0"], "{line}");
        assert!(text.starts_with("Count retrieved from kernel active(L3,L4)=1,"));
    }
}
