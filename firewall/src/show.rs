//! The seed's `vsipioctl` text views of an instance's firewall:
//! `getrules` (the compiled rule table, one line per rule and service) and
//! `getaddrsets` (the address sets the rules refer to). Plain formatting
//! over [`Policy`] and [`FirewallConfig`]; the agent's API and `nsxcli`
//! print these strings as they are.
//!
//! ```text
//! ruleset domain-c25 {
//!   # Filter rules
//!   rule 1006 at 1 inout protocol tcp from addrset ip-vm-33 to addrset ip-vm-36 port 22 accept with log;
//!   rule 1002 at 2 inout protocol any from any to any reject with log;
//! }
//! ```

use std::fmt::{self, Write};

use control::{
    Action, AddrRef, DefaultRule, Direction, FirewallConfig, L2Rule, MacAddr, Rule, Service,
};

use crate::classify::{DEFAULT_RULESET, Policy};

/// `vsipioctl getrules`: every L3 ruleset in order (the default rule is the
/// last line of the last one), then every L2 ruleset.
pub fn getrules(p: &Policy) -> String {
    let mut s = String::new();
    // Writing into a String cannot fail.
    let _ = write_rules(&mut s, p);
    s
}

/// `vsipioctl getaddrsets`: every address set, in name order.
pub fn getaddrsets(cfg: &FirewallConfig) -> String {
    let mut s = String::new();
    // Writing into a String cannot fail.
    let _ = write_addrsets(&mut s, cfg);
    s
}

/// [`getrules`] into any writer.
///
/// # Errors
///
/// Only the writer's.
pub fn write_rules(out: &mut impl Write, p: &Policy) -> fmt::Result {
    let cfg = p.config();
    let mut first = true;
    let mut open = |out: &mut dyn Write, name: &str| {
        if !std::mem::take(&mut first) {
            out.write_str("\n")?;
        }
        write!(out, "ruleset {name} {{\n  # Filter rules\n")
    };
    let close = |out: &mut dyn Write| out.write_str("}\n");

    if cfg.rulesets.is_empty() {
        open(out, DEFAULT_RULESET)?;
        write_default(out, 1, &cfg.default_rule)?;
        close(out)?;
    }
    let last = cfg.rulesets.len().saturating_sub(1);
    for (i, rs) in cfg.rulesets.iter().enumerate() {
        open(out, &rs.name)?;
        let mut at = 1;
        for r in &rs.rules {
            at = write_rule(out, at, r)?;
        }
        if i == last {
            write_default(out, at, &cfg.default_rule)?;
        }
        close(out)?;
    }
    for rs in &cfg.l2_rulesets {
        open(out, &rs.name)?;
        for (i, r) in rs.rules.iter().enumerate() {
            write_l2_rule(out, i + 1, r)?;
        }
        close(out)?;
    }
    Ok(())
}

/// [`getaddrsets`] into any writer.
///
/// # Errors
///
/// Only the writer's.
pub fn write_addrsets(out: &mut impl Write, cfg: &FirewallConfig) -> fmt::Result {
    let mut sets: Vec<_> = cfg.addrsets.iter().collect();
    sets.sort_by(|a, b| a.name.cmp(&b.name));
    for set in sets {
        writeln!(out, "addrset {} {{", set.name)?;
        for net in &set.addrs {
            if net.prefix_len() == net.max_prefix_len() {
                writeln!(out, "ip {},", net.addr())?;
            } else {
                writeln!(out, "ip {net},")?;
            }
        }
        out.write_str("}\n")?;
    }
    Ok(())
}

/// Writes one line per service of `r` from position `at`; returns the next
/// position.
fn write_rule(out: &mut dyn Write, mut at: usize, r: &Rule) -> Result<usize, fmt::Error> {
    let any = [Service::any()];
    let services = if r.services.is_empty() {
        &any[..]
    } else {
        &r.services[..]
    };
    for s in services {
        write!(out, "  rule {} at {at} {} ", r.id, r.direction.as_str())?;
        write_service_head(out, s)?;
        out.write_str(" from ")?;
        write_addrs(out, &r.sources)?;
        out.write_str(" to ")?;
        write_addrs(out, &r.destinations)?;
        if let Some(sport) = s.source_port {
            write!(out, " sport {sport}")?;
        }
        if let Some(port) = s.port {
            write!(out, " port {port}")?;
        }
        write_verdict(out, r.action, r.log)?;
        at += 1;
    }
    Ok(at)
}

fn write_default(out: &mut dyn Write, at: usize, d: &DefaultRule) -> fmt::Result {
    write!(
        out,
        "  rule {} at {at} {} protocol any from any to any",
        d.id,
        Direction::InOut.as_str()
    )?;
    write_verdict(out, d.action, d.log)
}

/// `protocol P[ icmptype T][ icmpcode C]`.
fn write_service_head(out: &mut dyn Write, s: &Service) -> fmt::Result {
    write!(out, "protocol {}", s.protocol)?;
    if let Some(ty) = s.icmp_type {
        write!(out, " icmptype {ty}")?;
    }
    if let Some(code) = s.icmp_code {
        write!(out, " icmpcode {code}")?;
    }
    Ok(())
}

/// `any`, one address, or `{a, b}`.
fn write_addrs(out: &mut dyn Write, refs: &[AddrRef]) -> fmt::Result {
    write_list(out, refs, |out, r| match r {
        AddrRef::AddrSet(name) => write!(out, "addrset {name}"),
        net @ AddrRef::Net(_) => write!(out, "{net}"),
    })
}

fn write_l2_rule(out: &mut dyn Write, at: usize, r: &L2Rule) -> fmt::Result {
    write!(
        out,
        "  rule {} at {at} {} ethertype ",
        r.id,
        r.direction.as_str()
    )?;
    match r.ethertype {
        None => out.write_str("any")?,
        Some(e) => write!(out, "{e:#06x}")?,
    }
    out.write_str(" from ")?;
    write_macs(out, &r.sources)?;
    out.write_str(" to ")?;
    write_macs(out, &r.destinations)?;
    write_verdict(out, r.action, r.log)
}

fn write_macs(out: &mut dyn Write, macs: &[MacAddr]) -> fmt::Result {
    write_list(out, macs, |out, m| write!(out, "{m}"))
}

fn write_list<T>(
    out: &mut dyn Write,
    items: &[T],
    mut item: impl FnMut(&mut dyn Write, &T) -> fmt::Result,
) -> fmt::Result {
    match items {
        [] => out.write_str("any"),
        [one] => item(out, one),
        many => {
            out.write_str("{")?;
            for (i, x) in many.iter().enumerate() {
                if i > 0 {
                    out.write_str(", ")?;
                }
                item(out, x)?;
            }
            out.write_str("}")
        }
    }
}

/// ` accept[ with log];` and the newline.
fn write_verdict(out: &mut dyn Write, action: Action, log: bool) -> fmt::Result {
    let log = if log { " with log" } else { "" };
    writeln!(out, " {}{log};", action.as_str())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    use crate::testdata::seed;

    /// `vsipioctl getrules -f nic-145244-eth0-vmware-sfw.2`, verbatim from the seed.
    const SEED_RULES: &str = "\
ruleset domain-c25 {
  # Filter rules
  rule 1006 at 1 inout protocol tcp from addrset ip-vm-33 to addrset ip-vm-36 port 22 accept with log;
  rule 1005 at 2 inout protocol any from any to addrset ip-ipset-2 accept;
  rule 1004 at 3 inout protocol ipv6-icmp icmptype 135 from any to any accept;
  rule 1004 at 4 inout protocol ipv6-icmp icmptype 136 from any to any accept;
  rule 1003 at 5 inout protocol udp from any to any port 67 accept;
  rule 1003 at 6 inout protocol udp from any to any port 68 accept;
  rule 1002 at 7 inout protocol any from any to any reject with log;
}

ruleset domain-c25_L2 {
  # Filter rules
  rule 1001 at 1 inout ethertype any from any to any accept;
}
";

    /// `vsipioctl getaddrsets -f nic-145244-eth0-vmware-sfw.2`, verbatim from the seed.
    const SEED_ADDRSETS: &str = "\
addrset ip-ipset-2 {
ip 192.168.110.10,
}
addrset ip-vm-33 {
ip 172.16.10.12,
}
addrset ip-vm-36 {
ip 172.16.10.11,
}
";

    #[test]
    fn seed_getrules() {
        let p = Policy::compile(&seed()).unwrap();
        assert_eq!(getrules(&p), SEED_RULES);
    }

    #[test]
    fn seed_getaddrsets() {
        assert_eq!(getaddrsets(&seed()), SEED_ADDRSETS);
    }

    #[test]
    fn lists_ports_icmp_and_l2() {
        let cfg: FirewallConfig = serde_json::from_str(
            r#"{
            "addrsets": [{"name": "b", "addrs": ["10.0.0.0/24", "10.0.1.7/32", "2001:db8::/32", "2001:db8::1/128"]},
                         {"name": "a"}],
            "rulesets": [
                {"name": "first", "rules": [
                    {"id": 7, "direction": "out", "sources": ["addrset:a", "10.0.0.0/24", "10.9.9.9"],
                     "services": [{"protocol": "tcp", "port": "1024-65535", "source_port": 53},
                                  {"protocol": "icmp", "icmp_type": 3, "icmp_code": 4},
                                  {"protocol": 47}],
                     "action": "drop", "log": true}
                ]},
                {"name": "empty", "rules": []}
            ],
            "l2_rulesets": [{"name": "l2", "rules": [
                {"id": 3, "direction": "in", "ethertype": 2048, "sources": ["02:00:00:00:00:01"],
                 "destinations": ["02:00:00:00:00:02", "ff:ff:ff:ff:ff:ff"], "action": "drop"}
            ]}],
            "default_rule": {"id": 2, "action": "accept"}
        }"#,
        )
        .unwrap();
        let p = Policy::compile(&cfg).unwrap();
        assert_eq!(
            getrules(&p),
            "\
ruleset first {
  # Filter rules
  rule 7 at 1 out protocol tcp from {addrset a, 10.0.0.0/24, 10.9.9.9} to any sport 53 port 1024-65535 drop with log;
  rule 7 at 2 out protocol icmp icmptype 3 icmpcode 4 from {addrset a, 10.0.0.0/24, 10.9.9.9} to any drop with log;
  rule 7 at 3 out protocol 47 from {addrset a, 10.0.0.0/24, 10.9.9.9} to any drop with log;
}

ruleset empty {
  # Filter rules
  rule 2 at 1 inout protocol any from any to any accept;
}

ruleset l2 {
  # Filter rules
  rule 3 at 1 in ethertype 0x0800 from 02:00:00:00:00:01 to {02:00:00:00:00:02, ff:ff:ff:ff:ff:ff} drop;
}
"
        );
        assert_eq!(
            getaddrsets(&cfg),
            "addrset a {\n}\naddrset b {\nip 10.0.0.0/24,\nip 10.0.1.7,\nip 2001:db8::/32,\nip 2001:db8::1,\n}\n"
        );
    }

    #[test]
    fn no_rulesets_prints_default() {
        let p = Policy::compile(&FirewallConfig::allow_all()).unwrap();
        assert_eq!(
            getrules(&p),
            "ruleset default {\n  # Filter rules\n  rule 1001 at 1 inout protocol any from any to any accept;\n}\n"
        );
    }
}
