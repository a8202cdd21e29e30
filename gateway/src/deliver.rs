//! Whether every instance's config can be delivered. The control channel
//! carries an instance's config whole, in one frame of at most
//! [`control::MAX_FRAME`] bytes of JSON ([`control::framing`]); a desired
//! state that makes some config larger can never reach that instance (every
//! session would die at its first Snapshot), so `apply` refuses it.
//!
//! [`Check`] measures each config as the control session would send it at
//! worst ([`GatewaySession::worst_case_frame`]: the real codec and limit,
//! so the check cannot drift from them). The parts many configs share (an
//! instance's remote port is in the config of every other instance on its
//! switches, an address set in that of every instance whose rules use it)
//! are encoded once per check ([`Sizes`]): each config is encoded without
//! them, and their sizes are added as a JSON array adds its elements. A
//! config found too large is encoded whole, so its refusal carries the
//! codec's own error. A config that does not fit is explained by its
//! largest parts, each traced back to the path of the desired state it
//! comes from (`firewall.ip_sets[0]` for the address set `ipset-big`), and
//! reported as a [`Problem`] like every other refusal of `apply` (HTTP 422
//! on the admin API).

use std::collections::HashMap;
use std::io;

use control::GatewaySession;
use control::firewall::AddrSet;
use control::framing::{FrameError, HEADER_LEN};
use control::model::{InstanceConfig, RemotePort};
use control::proto::MAX_FRAME;
use control::validate::{Problem, Problems};
use serde::Serialize;

use crate::state::DesiredState;

/// Oversized configs explained before the check stops: past this, the
/// refusal says so instead of encoding every remaining instance's config
/// (each of them possibly megabytes).
pub const MAX_EXPLAINED: usize = 8;

/// Parts of an oversized config named in its problem.
const PARTS_NAMED: usize = 3;

/// The checks of one desired state: feed it every instance's config with
/// [`Check::config`], then [`Check::finish`].
#[derive(Debug)]
pub struct Check<'a> {
    state: &'a DesiredState,
    sizes: Sizes,
    offenders: Vec<Offender>,
}

/// A config that cannot be framed.
#[derive(Debug)]
struct Offender {
    /// Whose config: `instance "i-1"`, or every instance.
    whose: String,
    why: FrameError,
    /// Largest first.
    parts: Vec<Part>,
}

/// One part of a config, where it comes from, and its encoded size.
#[derive(Debug)]
struct Part {
    /// Path in the desired state (`firewall.ip_sets[0]`).
    path: String,
    /// What it is in the config (`address set "ipset-big" (300000 addresses)`).
    what: String,
    bytes: usize,
}

impl<'a> Check<'a> {
    pub fn new(state: &'a DesiredState) -> Check<'a> {
        Check {
            state,
            sizes: Sizes::default(),
            offenders: Vec::new(),
        }
    }

    /// Checks the config of `instance`. False once [`MAX_EXPLAINED`]
    /// oversized configs were found: the caller may stop feeding.
    pub fn config(&mut self, instance: &str, config: InstanceConfig) -> bool {
        self.check(format!("instance {instance:?}"), config);
        self.offenders.len() < MAX_EXPLAINED
    }

    /// Checks the config every instance gets at least (the firewall rules
    /// that apply to all; see [`crate::dfw_resolve::Resolved::common_firewall`]).
    /// False if it does not fit: then no instance's does.
    pub fn common_config(&mut self, config: InstanceConfig) -> bool {
        self.check(
            "every instance (the rules without applied_to)".into(),
            config,
        )
    }

    /// True if `config` fits; otherwise records why not.
    fn check(&mut self, whose: String, config: InstanceConfig) -> bool {
        let (config, framed) = self.sizes.worst_case_frame(config);
        if framed.is_ok_and(|len| len.saturating_sub(HEADER_LEN) <= MAX_FRAME) {
            return true;
        }
        // Too large: encoded whole, the codec says by how much.
        let (config, framed) = GatewaySession::worst_case_frame(config);
        match (framed, config) {
            (Err(why), Some(config)) => {
                let parts = self.parts(&config);
                self.offenders.push(Offender { whose, why, parts });
                false
            }
            _ => true,
        }
    }

    /// Every config fits, or one problem per offending part of the state
    /// (the largest part of each oversized config), naming the instances.
    pub fn finish(self) -> Result<(), Problems> {
        if self.offenders.is_empty() {
            return Ok(());
        }
        // Group the instances by the part that is to blame, in first-seen order.
        let mut by_path: Vec<(String, Vec<&Offender>)> = Vec::new();
        for o in &self.offenders {
            let path = o.parts.first().map_or("", |p| p.path.as_str());
            match by_path.iter_mut().find(|(p, _)| p == path) {
                Some((_, list)) => list.push(o),
                None => by_path.push((path.to_string(), vec![o])),
            }
        }
        let stopped = self.offenders.len() >= MAX_EXPLAINED;
        let problems = by_path
            .into_iter()
            .map(|(path, list)| Problem {
                path,
                message: explain(&list, stopped),
            })
            .collect();
        Err(Problems::new(problems))
    }

    /// The parts of `config`, largest first (at most [`PARTS_NAMED`]).
    fn parts(&self, config: &InstanceConfig) -> Vec<Part> {
        let st = self.state;
        let mut parts = Vec::new();
        if let Some(fw) = &config.firewall {
            for set in &fw.addrsets {
                let (path, origin) = addrset_origin(st, &set.name);
                parts.push(Part {
                    path,
                    what: format!(
                        "address set {:?}{origin} ({} addresses)",
                        set.name,
                        set.addrs.len()
                    ),
                    bytes: json_len(set),
                });
            }
            let spec = st.firewall.as_ref();
            for rs in &fw.rulesets {
                let pos = spec.and_then(|f| f.sections.iter().position(|s| s.name == rs.name));
                parts.push(Part {
                    path: indexed("firewall.sections", pos),
                    what: format!("ruleset {:?} ({} rules)", rs.name, rs.rules.len()),
                    bytes: json_len(rs),
                });
            }
            for rs in &fw.l2_rulesets {
                let pos = spec.and_then(|f| f.l2_sections.iter().position(|s| s.name == rs.name));
                parts.push(Part {
                    path: indexed("firewall.l2_sections", pos),
                    what: format!("L2 ruleset {:?} ({} rules)", rs.name, rs.rules.len()),
                    bytes: json_len(rs),
                });
            }
        }
        if !config.remote_ports.is_empty() {
            // The ports of every instance on the switches this one reaches.
            let own = config.port.as_ref().map(|p| p.switch.as_str());
            let pos = own.and_then(|sw| st.switches.iter().position(|s| s.name == sw));
            parts.push(Part {
                path: indexed("switches", pos),
                what: format!(
                    "{} remote ports (the instances on the switches it reaches)",
                    config.remote_ports.len()
                ),
                bytes: json_len(&config.remote_ports),
            });
        }
        if !config.switches.is_empty() {
            parts.push(Part {
                path: "switches".into(),
                what: format!("{} switches", config.switches.len()),
                bytes: json_len(&config.switches),
            });
        }
        if !config.routers.is_empty() {
            parts.push(Part {
                path: "routers".into(),
                what: format!("{} routers", config.routers.len()),
                bytes: json_len(&config.routers),
            });
        }
        if !config.load_balancers.is_empty() {
            parts.push(Part {
                path: "load_balancers".into(),
                what: format!("{} virtual servers", config.load_balancers.len()),
                bytes: json_len(&config.load_balancers),
            });
        }
        parts.sort_by_key(|p| std::cmp::Reverse(p.bytes));
        parts.truncate(PARTS_NAMED);
        parts
    }
}

/// `list[i]`, or the list itself when the position is unknown.
fn indexed(list: &str, pos: Option<usize>) -> String {
    pos.map_or_else(|| list.to_string(), |i| format!("{list}[{i}]"))
}

/// The encoded sizes of the parts configs share, each encoded once per
/// [`Check`]: remote ports by value, address sets by name (the set first
/// seen under a name is kept; a set of that name with other addresses is
/// encoded on its own, so every size is exact).
#[derive(Debug, Default)]
struct Sizes {
    ports: HashMap<RemotePort, usize>,
    sets: HashMap<String, (AddrSet, usize)>,
}

impl Sizes {
    fn port(&mut self, p: &RemotePort) -> usize {
        if let Some(&n) = self.ports.get(p) {
            return n;
        }
        let n = json_len(p);
        self.ports.insert(p.clone(), n);
        n
    }

    fn set(&mut self, s: &AddrSet) -> usize {
        match self.sets.get(&s.name) {
            Some((seen, n)) if seen == s => *n,
            Some(_) => json_len(s),
            None => {
                let n = json_len(s);
                self.sets.insert(s.name.clone(), (s.clone(), n));
                n
            }
        }
    }

    /// The length [`GatewaySession::worst_case_frame`] finds for `config`
    /// (the config comes back as it came), from the sizes of its parts: the
    /// config without its remote ports and address sets is encoded with the
    /// real codec (its own limit applied to that rest), and each of those
    /// adds its size and a comma to its empty array (`[]`), as compact JSON
    /// writes them.
    fn worst_case_frame(
        &mut self,
        mut config: InstanceConfig,
    ) -> (Option<InstanceConfig>, Result<usize, FrameError>) {
        let ports = std::mem::take(&mut config.remote_ports);
        let sets = config
            .firewall
            .as_mut()
            .map(|fw| std::mem::take(&mut fw.addrsets));
        let mut shared = array_items_len(ports.iter().map(|p| self.port(p)));
        if let Some(sets) = &sets {
            shared = shared.saturating_add(array_items_len(sets.iter().map(|s| self.set(s))));
        }
        let (config, rest) = GatewaySession::worst_case_frame(Some(config));
        let config = config.map(|mut c| {
            c.remote_ports = ports;
            if let (Some(fw), Some(sets)) = (c.firewall.as_mut(), sets) {
                fw.addrsets = sets;
            }
            c
        });
        (config, rest.map(|len| len.saturating_add(shared)))
    }
}

/// What elements of these encoded sizes add to an empty JSON array: their
/// bytes and the commas between them.
fn array_items_len(sizes: impl Iterator<Item = usize>) -> usize {
    let (n, bytes) = sizes.fold((0usize, 0usize), |(n, b), len| {
        (n.saturating_add(1), b.saturating_add(len))
    });
    bytes.saturating_add(n.saturating_sub(1))
}

/// The path in the desired state an address set of a config comes from,
/// and what to add to its name (`" of group \"web\""`).
fn addrset_origin(st: &DesiredState, set: &str) -> (String, String) {
    let fw = st.firewall.as_ref();
    if let Some(name) = set.strip_prefix("ipset-")
        && let Some(i) = fw.and_then(|f| f.ip_sets.iter().position(|s| s.name == name))
    {
        return (
            format!("firewall.ip_sets[{i}]"),
            format!(" of ip set {name:?}"),
        );
    }
    if let Some(name) = set.strip_prefix("grp-")
        && let Some((i, g)) =
            fw.and_then(|f| f.groups.iter().enumerate().find(|(_, g)| g.name == name))
    {
        let sets = &g.criteria.ip_sets;
        let origin = if sets.is_empty() {
            format!(" of group {name:?}")
        } else {
            format!(" of group {name:?}, with its ip_sets {}", sets.join(", "))
        };
        return (format!("firewall.groups[{i}]"), origin);
    }
    if let Some(name) = set.strip_prefix("ls-")
        && let Some(i) = st.switches.iter().position(|s| s.name == name)
    {
        return (format!("switches[{i}]"), format!(" of switch {name:?}"));
    }
    ("firewall".into(), String::new())
}

/// The problem text for the offenders blamed on one part.
fn explain(list: &[&Offender], stopped: bool) -> String {
    let Some(first) = list.first() else {
        return String::new();
    };
    let size = match &first.why {
        FrameError::TooLarge { len, max } => {
            format!("a control message of {len} bytes, over the frame limit of {max} bytes")
        }
        other => format!("a control message that cannot be encoded ({other})"),
    };
    let mut parts = first.parts.iter();
    let Some(top) = parts.next() else {
        return format!("the config of {} would be {size}", first.whose);
    };
    let mut text = format!(
        "{} is {} bytes and makes the config of {} {size}",
        top.what, top.bytes, first.whose
    );
    // Other parts worth naming: those that weigh next to the largest.
    let rest: Vec<String> = parts
        .filter(|p| p.bytes.saturating_mul(10) >= top.bytes)
        .map(|p| format!("{} at {}, {} bytes", p.what, p.path, p.bytes))
        .collect();
    if !rest.is_empty() {
        text.push_str(&format!("; its next largest parts: {}", rest.join("; ")));
    }
    let others: Vec<&str> = list.iter().skip(1).map(|o| o.whose.as_str()).collect();
    if !others.is_empty() {
        text.push_str(&format!("; the same for {}", others.join(", ")));
    }
    if stopped {
        text.push_str(&format!(
            " (checking stopped after {MAX_EXPLAINED} oversized configs; there may be more)"
        ));
    }
    text
}

/// The size of `v` as JSON, without keeping the text.
fn json_len<T: Serialize>(v: &T) -> usize {
    struct Count(usize);
    impl io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    // Our types always serialize; a failure would only undercount.
    let _ = serde_json::to_writer(&mut c, v);
    c.0
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use control::firewall::FirewallConfig;
    use control::model::{LocalPort, MacAddr};
    use proptest::prelude::*;

    use super::*;

    fn port(i: u8, switch: &str) -> RemotePort {
        RemotePort {
            switch: switch.into(),
            ip: Ipv4Addr::new(192, 168, 0, i),
            mac: MacAddr([2, 0, 0, 0, 0, i]),
            tep_ip: Ipv4Addr::new(10, 0, 0, i),
            tep_id: u32::from(i) * 1000,
        }
    }

    fn set(name: &str, n: u32) -> AddrSet {
        AddrSet {
            name: name.into(),
            addrs: (0..n)
                .map(|i| ipnet::IpNet::from(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | i))))
                .collect(),
        }
    }

    fn config(ports: Vec<RemotePort>, sets: Option<Vec<AddrSet>>) -> InstanceConfig {
        InstanceConfig {
            version: 7,
            tep_id: 3,
            port: Some(LocalPort {
                switch: "web-ls".into(),
                ip: Ipv4Addr::new(192, 168, 0, 200),
                mac: None,
            }),
            remote_ports: ports,
            firewall: sets.map(|addrsets| FirewallConfig {
                addrsets,
                ..FirewallConfig::allow_all()
            }),
            ..InstanceConfig::default()
        }
    }

    /// The size put together from the parts is the codec's own, byte for
    /// byte, whatever the config holds (no parts, one, many; a name to
    /// escape; a set seen before under its name, or with other addresses),
    /// and the config comes back unchanged.
    #[test]
    fn the_size_from_the_parts_is_the_encoded_size() {
        let mut sizes = Sizes::default();
        let cases = [
            config(Vec::new(), None),
            config(Vec::new(), Some(Vec::new())),
            config(vec![port(1, "web-ls")], Some(vec![set("ipset-a", 1)])),
            config(
                (1..=50).map(|i| port(i, "web-ls")).collect(),
                Some(vec![set("ipset-a", 1), set("grp-\"q\"\u{1}", 300)]),
            ),
            // The same names: sizes looked up, and one set changed.
            config(
                (2..=60).map(|i| port(i, "app-ls")).collect(),
                Some(vec![set("ipset-a", 1), set("grp-\"q\"\u{1}", 299)]),
            ),
            config((1..=50).map(|i| port(i, "web-ls")).collect(), None),
        ];
        for c in cases {
            let (_, real) = GatewaySession::worst_case_frame(Some(c.clone()));
            let (back, composed) = sizes.worst_case_frame(c.clone());
            assert_eq!(back.as_ref(), Some(&c));
            assert_eq!(
                composed,
                real,
                "{}",
                control::proto::config_summary(Some(&c))
            );
        }
        // web-ls 1..=50, then app-ls 2..=60; the last case adds none.
        assert_eq!(sizes.ports.len(), 50 + 59, "each port encoded once");
    }

    /// Names that share a pool, so that configs drawn together repeat
    /// parts and reuse names with other contents; some need escaping.
    const NAMES: [&str; 5] = ["a", "web-ls", "grp-\"q\"", "ç\u{7}\\", ""];

    fn any_port() -> impl Strategy<Value = RemotePort> {
        (
            0..NAMES.len(),
            any::<u32>(),
            any::<[u8; 6]>(),
            0..4u8,
            any::<u32>(),
        )
            .prop_map(|(name, ip, mac, tep, tep_id)| RemotePort {
                switch: NAMES[name].into(),
                ip: Ipv4Addr::from(ip),
                mac: MacAddr(mac),
                tep_ip: Ipv4Addr::new(10, 0, 0, tep),
                tep_id,
            })
    }

    fn any_net() -> impl Strategy<Value = ipnet::IpNet> {
        prop_oneof![
            (any::<u32>(), 0..=32u8).prop_map(|(a, p)| ipnet::Ipv4Net::new(Ipv4Addr::from(a), p)
                .expect("prefix in range")
                .into()),
            (any::<u128>(), 0..=128u8).prop_map(|(a, p)| ipnet::Ipv6Net::new(
                std::net::Ipv6Addr::from(a),
                p
            )
            .expect("prefix in range")
            .into()),
        ]
    }

    fn any_set() -> impl Strategy<Value = AddrSet> {
        (0..NAMES.len(), prop::collection::vec(any_net(), 0..4)).prop_map(|(name, addrs)| AddrSet {
            name: NAMES[name].into(),
            addrs,
        })
    }

    fn any_config() -> impl Strategy<Value = InstanceConfig> {
        (
            any::<bool>(),
            prop::collection::vec(any_port(), 0..12),
            prop::option::of(prop::collection::vec(any_set(), 0..5)),
            prop::option::of(any::<u32>()),
        )
            .prop_map(|(own, ports, sets, max_flows)| {
                let mut c = config(ports, sets);
                if !own {
                    c.port = None;
                }
                if let Some(fw) = &mut c.firewall {
                    fw.max_flows = max_flows;
                }
                c
            })
    }

    proptest! {
        /// Over configs checked one after another (parts repeated, names
        /// reused with other contents, escapes, IPv4 and IPv6), the size
        /// put together from the parts is the codec's own, byte for byte.
        #[test]
        fn the_summed_size_is_the_real_frame_size(
            configs in prop::collection::vec(any_config(), 1..8)
        ) {
            let mut sizes = Sizes::default();
            for c in configs {
                let (_, real) = GatewaySession::worst_case_frame(Some(c.clone()));
                let (back, composed) = sizes.worst_case_frame(c.clone());
                prop_assert_eq!(back.as_ref(), Some(&c));
                prop_assert_eq!(composed, real);
            }
        }
    }

    /// A config over the limit only through parts whose sizes were looked
    /// up is refused, with the codec's error for the whole config.
    #[test]
    fn parts_seen_before_still_count_toward_the_limit() {
        let st = DesiredState::default();
        let mut check = Check::new(&st);
        let big = set("ipset-big", 150_000);
        assert!(check.config("i-1", config(Vec::new(), Some(vec![big.clone()]))));
        let two = config(
            Vec::new(),
            Some(vec![big.clone(), set("ipset-big2", 150_000)]),
        );
        let (_, real) = GatewaySession::worst_case_frame(Some(two.clone()));
        assert!(matches!(real, Err(FrameError::TooLarge { .. })), "{real:?}");
        check.config("i-2", two);
        let Err(problems) = check.finish() else {
            panic!("two 150000-address sets do not fit");
        };
        let text = problems.to_string();
        let Err(FrameError::TooLarge { len, .. }) = real else {
            unreachable!()
        };
        assert!(
            text.contains(&format!("a control message of {len} bytes")),
            "{text}"
        );
        assert!(text.contains("instance \"i-2\""), "{text}");
        assert!(!text.contains("i-1"), "{text}");
    }
}
