//! Resolution of the declared distributed firewall ([`crate::dfw`]) into
//! each instance's [`FirewallConfig`], from the trusted inventory only.
//!
//! [`Resolved::compile`] runs once per store snapshot: it compiles the
//! groups' criteria, computes the address list of every group, IP set and
//! switch that a rule references (one pass over the inventory per group),
//! and turns every rule into its agent form. [`Resolved::firewall_for`] then
//! cuts one instance's config in O(groups + rules + referenced addresses):
//!
//! * group membership: a non-revoked instance whose inventory (id,
//!   hostname, os, image_id, tags, placement) meets every instance criterion
//!   of the group; a member contributes its overlay port IP (if placed) and
//!   its underlay IP (micro-segmentation instances are filtered on the
//!   underlay), and `ip_sets` add their addresses;
//! * every referenced group / IP set / switch becomes one address set,
//!   named `grp-NAME` / `ipset-NAME` / `ls-NAME` (a switch is its subnet),
//!   addresses sorted and deduplicated, sets sorted by name;
//! * a section (or rule, when it has its own `applied_to`) applies to an
//!   instance that is a member of one of its groups, is named by
//!   `instance:ID`, or is placed on one of its `switch:NAME`s; no applied-to
//!   = every instance. Sections without an applicable rule are left out;
//! * no `firewall` section in the desired state = [`FirewallConfig::allow_all`].
//!
//! References the validation would refuse (impossible for a stored state)
//! resolve to empty address sets and never match as applied-to.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use control::firewall::{
    AddrRef, AddrSet, DefaultRule, FirewallConfig, L2Rule, L2RuleSet, Rule, RuleSet, Timeouts,
};
use ipnet::IpNet;

use crate::dfw::{FirewallSpec, Glob, GroupSpec, Peer, Target, parse_net};
use crate::instance::InstanceRecord;
use crate::state::DesiredState;

/// The address-set name of a group.
pub fn group_set(name: &str) -> String {
    format!("grp-{name}")
}

/// The address-set name of an IP set.
pub fn ip_set_set(name: &str) -> String {
    format!("ipset-{name}")
}

/// The address-set name of a logical switch (its subnet).
pub fn switch_set(name: &str) -> String {
    format!("ls-{name}")
}

/// The firewall of a desired state compiled against one inventory.
#[derive(Debug, Clone, Default)]
pub struct Resolved(Option<Box<Compiled>>);

#[derive(Debug, Clone)]
struct Compiled {
    groups: Vec<Matcher>,
    /// Every address set a rule references, by name.
    addrsets: BTreeMap<String, AddrSet>,
    sections: Vec<Section<Rule>>,
    l2_sections: Vec<Section<L2Rule>>,
    default_rule: DefaultRule,
    timeouts: Timeouts,
    max_flows: Option<u32>,
    tcp_strict: bool,
}

#[derive(Debug, Clone)]
struct Section<R> {
    name: String,
    applied: Option<Selector>,
    rules: Vec<CompiledRule<R>>,
}

#[derive(Debug, Clone)]
struct CompiledRule<R> {
    /// `None`: the section's.
    applied: Option<Selector>,
    rule: R,
    /// Address sets the rule refers to.
    sets: Vec<String>,
}

/// A compiled applied-to list (non-empty).
#[derive(Debug, Clone, Default)]
struct Selector {
    /// Positions in `Compiled::groups`.
    groups: Vec<usize>,
    instances: Vec<String>,
    switches: Vec<String>,
}

impl Selector {
    fn matches(&self, me: &InstanceRecord, member_of: &[bool]) -> bool {
        self.groups
            .iter()
            .any(|&g| member_of.get(g).copied().unwrap_or(false))
            || self.instances.contains(&me.id)
            || me
                .switch
                .as_ref()
                .is_some_and(|sw| self.switches.contains(sw))
    }
}

/// A group's instance criteria, compiled.
#[derive(Debug, Clone)]
struct Matcher {
    /// False when the group has no instance criterion (only `ip_sets`):
    /// then no instance is a member.
    any_criterion: bool,
    tags: Vec<(String, Vec<String>)>,
    name: Vec<Glob>,
    os: Vec<Glob>,
    image_id: Vec<Glob>,
    switch: Vec<String>,
}

impl Matcher {
    fn new(g: &GroupSpec) -> Matcher {
        let m = &g.criteria;
        // Invalid globs cannot be stored; one would simply match nothing.
        let globs = |v: &[String]| v.iter().filter_map(|p| Glob::new(p).ok()).collect();
        Matcher {
            any_criterion: m.has_instance_criteria() && m.unknown.is_empty(),
            tags: m.tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            name: globs(&m.name),
            os: globs(&m.os),
            image_id: globs(&m.image_id),
            switch: m.switch.clone(),
        }
    }

    fn matches(&self, r: &InstanceRecord) -> bool {
        let any_glob = |globs: &[Glob], texts: &[&str]| {
            globs.is_empty() || globs.iter().any(|g| texts.iter().any(|t| g.matches(t)))
        };
        self.any_criterion
            && r.revoked_at.is_none()
            && self
                .tags
                .iter()
                .all(|(k, vs)| r.tags.get(k).is_some_and(|v| vs.contains(v)))
            && (self.switch.is_empty()
                || r.switch.as_ref().is_some_and(|s| self.switch.contains(s)))
            && any_glob(&self.name, &[&r.id, &r.hostname])
            && any_glob(&self.os, &[&r.os])
            && any_glob(&self.image_id, &[&r.image_id])
    }
}

/// A rule's sources or destinations as agent references; every address set
/// used is noted in `wanted` (to be computed) and `sets` (the rule's own).
fn refs<'a>(
    list: &'a [String],
    wanted: &mut BTreeMap<String, Peer<'a>>,
    sets: &mut Vec<String>,
) -> Vec<AddrRef> {
    let mut out = Vec::new();
    for s in list {
        let (name, peer) = match Peer::parse(s) {
            Ok(Peer::Any) => continue,
            Ok(Peer::Net(n)) => {
                out.push(AddrRef::Net(n.trunc()));
                continue;
            }
            Ok(p @ Peer::Group(g)) => (group_set(g), p),
            Ok(p @ Peer::IpSet(g)) => (ip_set_set(g), p),
            Ok(p @ Peer::Switch(g)) => (switch_set(g), p),
            // Unreachable for a validated state: an empty set.
            Err(_) => ("unresolved".to_string(), Peer::Any),
        };
        wanted.entry(name.clone()).or_insert(peer);
        sets.push(name.clone());
        out.push(AddrRef::AddrSet(name));
    }
    out
}

/// A member instance's addresses: overlay port IP (if placed) and underlay IP.
fn member_addrs(r: &InstanceRecord, out: &mut Vec<IpNet>) {
    if let Some(ip) = r.ip {
        out.push(IpNet::from(IpAddr::V4(ip)));
    }
    out.push(IpNet::from(IpAddr::V4(r.underlay_ip)));
}

impl Resolved {
    /// Compiles the desired state's firewall against `all` (the inventory;
    /// revoked instances are members of nothing).
    pub fn compile(st: &DesiredState, all: &[InstanceRecord]) -> Resolved {
        match &st.firewall {
            None => Resolved(None),
            Some(fw) => Resolved(Some(Box::new(Compiled::new(fw, st, all)))),
        }
    }

    /// The firewall of `me` (for a non-revoked instance of the compiled
    /// inventory; any instance record works, membership is evaluated on it).
    pub fn firewall_for(&self, me: &InstanceRecord) -> FirewallConfig {
        match &self.0 {
            None => FirewallConfig::allow_all(),
            Some(c) => c.firewall_for(me),
        }
    }

    /// What every instance's firewall holds at least, whatever its
    /// inventory: the firewall of an instance that is a member of no group,
    /// named by no `instance:` target and placed on no switch (only the
    /// sections and rules without `applied_to`, and the sets they use).
    /// An instance enrolled later gets this too.
    pub fn common_firewall(&self) -> FirewallConfig {
        match &self.0 {
            None => FirewallConfig::allow_all(),
            Some(c) => c.firewall_where(|_| false),
        }
    }
}

impl Compiled {
    fn new(fw: &FirewallSpec, st: &DesiredState, all: &[InstanceRecord]) -> Compiled {
        let group_pos: HashMap<&str, usize> = fw
            .groups
            .iter()
            .enumerate()
            .map(|(i, g)| (g.name.as_str(), i))
            .collect();
        let groups: Vec<Matcher> = fw.groups.iter().map(Matcher::new).collect();
        let ip_sets: HashMap<&str, Vec<IpNet>> = fw
            .ip_sets
            .iter()
            .map(|s| {
                let nets = s
                    .addrs
                    .iter()
                    .filter_map(|a| parse_net(a))
                    .map(|n| n.trunc())
                    .collect();
                (s.name.as_str(), nets)
            })
            .collect();

        // Rules, and which sets they reference.
        let mut wanted: BTreeMap<String, Peer<'_>> = BTreeMap::new();
        let selector = |list: &[String]| -> Option<Selector> {
            if list.is_empty() {
                return None;
            }
            let mut sel = Selector::default();
            for t in list {
                match Target::parse(t) {
                    Ok(Target::Group(g)) => sel.groups.extend(group_pos.get(g).copied()),
                    Ok(Target::Instance(id)) => sel.instances.push(id.to_string()),
                    Ok(Target::Switch(s)) => sel.switches.push(s.to_string()),
                    Err(_) => {}
                }
            }
            Some(sel)
        };
        let mut sections = Vec::with_capacity(fw.sections.len());
        for s in &fw.sections {
            let mut rules = Vec::with_capacity(s.rules.len());
            for r in &s.rules {
                let mut sets = Vec::new();
                let sources = refs(&r.sources, &mut wanted, &mut sets);
                let destinations = refs(&r.destinations, &mut wanted, &mut sets);
                sets.sort();
                sets.dedup();
                rules.push(CompiledRule {
                    // `Some([])` cannot be stored; it would apply nowhere.
                    applied: r
                        .applied_to
                        .as_deref()
                        .map(|l| selector(l).unwrap_or_default()),
                    rule: Rule {
                        id: r.id,
                        direction: r.direction,
                        sources,
                        destinations,
                        services: r.services.clone(),
                        action: r.action,
                        log: r.log,
                    },
                    sets,
                });
            }
            sections.push(Section {
                name: s.name.clone(),
                applied: selector(&s.applied_to),
                rules,
            });
        }
        let l2_sections = fw
            .l2_sections
            .iter()
            .map(|s| Section {
                name: s.name.clone(),
                applied: selector(&s.applied_to),
                rules: s
                    .rules
                    .iter()
                    .map(|r| CompiledRule {
                        applied: r
                            .applied_to
                            .as_deref()
                            .map(|l| selector(l).unwrap_or_default()),
                        rule: r.to_model(),
                        sets: Vec::new(),
                    })
                    .collect(),
            })
            .collect();

        // The referenced sets' addresses: one inventory pass per group.
        let mut addrsets = BTreeMap::new();
        for (name, peer) in wanted {
            let mut addrs: Vec<IpNet> = Vec::new();
            match peer {
                Peer::Group(g) => {
                    let pos = group_pos.get(g).copied();
                    if let (Some(m), Some(spec)) = (
                        pos.and_then(|i| groups.get(i)),
                        pos.and_then(|i| fw.groups.get(i)),
                    ) {
                        for r in all.iter().filter(|r| m.matches(r)) {
                            member_addrs(r, &mut addrs);
                        }
                        for set in &spec.criteria.ip_sets {
                            addrs.extend(ip_sets.get(set.as_str()).into_iter().flatten());
                        }
                    }
                }
                Peer::IpSet(s) => addrs.extend(ip_sets.get(s).into_iter().flatten()),
                Peer::Switch(s) => addrs.extend(
                    st.switches
                        .iter()
                        .filter(|x| x.name == s)
                        .map(|x| IpNet::V4(x.subnet.trunc())),
                ),
                Peer::Any | Peer::Net(_) => {}
            }
            addrs.sort();
            addrs.dedup();
            addrsets.insert(name.clone(), AddrSet { name, addrs });
        }

        Compiled {
            groups,
            addrsets,
            sections,
            l2_sections,
            default_rule: fw.default_rule.clone(),
            timeouts: fw.timeouts,
            max_flows: fw.max_flows,
            tcp_strict: fw.tcp_strict,
        }
    }

    fn firewall_for(&self, me: &InstanceRecord) -> FirewallConfig {
        let member_of: Vec<bool> = self.groups.iter().map(|g| g.matches(me)).collect();
        self.firewall_where(|sel| sel.matches(me, &member_of))
    }

    /// The firewall of an instance that `selected` applied-to lists name.
    fn firewall_where(&self, selected: impl Fn(&Selector) -> bool) -> FirewallConfig {
        let applies = |section: &Option<Selector>, rule: &Option<Selector>| match rule
            .as_ref()
            .or(section.as_ref())
        {
            None => true,
            Some(sel) => selected(sel),
        };
        let mut used: BTreeSet<&str> = BTreeSet::new();
        let mut rulesets = Vec::new();
        for s in &self.sections {
            let rules: Vec<Rule> = s
                .rules
                .iter()
                .filter(|r| applies(&s.applied, &r.applied))
                .map(|r| {
                    used.extend(r.sets.iter().map(String::as_str));
                    r.rule.clone()
                })
                .collect();
            if !rules.is_empty() {
                rulesets.push(RuleSet {
                    name: s.name.clone(),
                    rules,
                });
            }
        }
        let l2_rulesets = self
            .l2_sections
            .iter()
            .filter_map(|s| {
                let rules: Vec<L2Rule> = s
                    .rules
                    .iter()
                    .filter(|r| applies(&s.applied, &r.applied))
                    .map(|r| r.rule.clone())
                    .collect();
                (!rules.is_empty()).then(|| L2RuleSet {
                    name: s.name.clone(),
                    rules,
                })
            })
            .collect();
        FirewallConfig {
            addrsets: used
                .into_iter()
                .filter_map(|n| self.addrsets.get(n).cloned())
                .collect(),
            l2_rulesets,
            rulesets,
            default_rule: self.default_rule.clone(),
            timeouts: self.timeouts,
            max_flows: self.max_flows,
            tcp_strict: self.tcp_strict,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use control::firewall::Action;
    use control::model::{InstanceConfig, MacAddr};

    const STATE: &str = r#"
switches:
  - {name: web-ls, tag: web, vni: 100, subnet: 192.168.100.0/24, gateway_ip: 192.168.100.1}
  - {name: db-ls, tag: db, vni: 101, subnet: 192.168.101.0/24, gateway_ip: 192.168.101.1}
firewall:
  ip_sets:
    - {name: ipset-2, addrs: [192.168.110.10, 10.20.0.0/16]}
  groups:
    - {name: web, match: {tags: {role: web}}}
    - {name: db, match: {tags: {role: db}}}
    - {name: named, match: {name: "web-*"}}
    - {name: distro, match: {os: ["ubuntu*", "rhel-*"], image_id: ami-1}}
    - {name: on-db-ls, match: {switch: db-ls}}
    - {name: mgmt, match: {ip_sets: [ipset-2]}}
    - {name: front, match: {tags: {role: [web, api]}, ip_sets: ipset-2}}
  sections:
    - name: domain-c25
      applied_to: [web, db]
      rules:
        - {id: 1006, sources: [group:web], destinations: [group:db], services: [{protocol: tcp, port: 22}], action: accept, log: true}
        - {id: 1005, destinations: [ipset:ipset-2], action: accept}
        - {id: 1007, sources: [switch:db-ls], destinations: [10.9.0.0/16], action: drop, applied_to: ["instance:micro-1"]}
    - name: everywhere
      rules:
        - {id: 1003, services: [{protocol: udp, port: 67}, {protocol: udp, port: 68}], action: accept}
    - name: db-only
      applied_to: ["switch:db-ls"]
      rules:
        - {id: 1010, sources: [group:front, group:mgmt], action: accept}
  l2_sections:
    - name: domain-c25_L2
      rules: [{id: 1001, ethertype: any, action: accept}]
  default_rule: {id: 1002, action: reject, log: true}
  timeouts: {tcp_established: 3600}
  max_flows: 100000
"#;

    #[allow(clippy::too_many_arguments)]
    fn inst(
        id: &str,
        hostname: &str,
        os: &str,
        image: &str,
        tags: &[(&str, &str)],
        port: Option<(&str, &str)>,
        underlay: &str,
        revoked: bool,
    ) -> InstanceRecord {
        InstanceRecord {
            id: id.into(),
            hostname: hostname.into(),
            os: os.into(),
            image_id: image.into(),
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            underlay_ip: underlay.parse().expect("ip"),
            nic_mac: MacAddr([6, 0, 0, 0, 0, 1]),
            cert_serial: String::new(),
            cert_fingerprint: format!("fp-{id}"),
            tep_id: 1,
            role: control::proto::Role::Instance,
            enrolled_at: 0,
            revoked_at: revoked.then_some(5),
            switch: port.map(|(s, _)| s.to_string()),
            ip: port.map(|(_, ip)| ip.parse().expect("ip")),
            session: None,
            acked_version: None,
            last_error: None,
        }
    }

    fn inventory() -> Vec<InstanceRecord> {
        vec![
            inst(
                "i-web1",
                "web-1.example",
                "Ubuntu 22.04",
                "ami-1",
                &[("role", "web")],
                Some(("web-ls", "192.168.100.2")),
                "10.0.0.1",
                false,
            ),
            inst(
                "i-db1",
                "db-1",
                "debian-12",
                "ami-2",
                &[("role", "db")],
                Some(("db-ls", "192.168.101.2")),
                "10.0.0.2",
                false,
            ),
            inst(
                "micro-1",
                "m1",
                "rhel-9",
                "ami-1",
                &[("role", "web")],
                None,
                "10.0.0.3",
                false,
            ),
            inst(
                "web-gone",
                "web-gone",
                "ubuntu",
                "ami-1",
                &[("role", "web")],
                Some(("web-ls", "192.168.100.3")),
                "10.0.0.4",
                true,
            ),
            inst(
                "i-api",
                "api-1",
                "debian-12",
                "ami-1",
                &[("role", "api")],
                None,
                "10.0.0.5",
                false,
            ),
        ]
    }

    fn state() -> DesiredState {
        crate::state::parse_and_validate(STATE).expect("valid test state")
    }

    fn fw_of(st: &DesiredState, all: &[InstanceRecord], id: &str) -> FirewallConfig {
        let me = all.iter().find(|r| r.id == id).expect("instance");
        Resolved::compile(st, all).firewall_for(me)
    }

    fn set(fw: &FirewallConfig, name: &str) -> Vec<String> {
        fw.addrsets
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.addrs.iter().map(ToString::to_string).collect())
            .unwrap_or_else(|| panic!("no addrset {name} in {:?}", fw.addrsets))
    }

    fn rule_ids(fw: &FirewallConfig) -> Vec<(String, Vec<u32>)> {
        fw.rulesets
            .iter()
            .map(|r| (r.name.clone(), r.rules.iter().map(|x| x.id).collect()))
            .collect()
    }

    /// The members of group `name`, by instance id.
    fn members(st: &DesiredState, all: &[InstanceRecord], name: &str) -> Vec<String> {
        let fw = st.firewall.as_ref().expect("firewall");
        let g = fw.groups.iter().find(|g| g.name == name).expect("group");
        let m = Matcher::new(g);
        all.iter()
            .filter(|r| m.matches(r))
            .map(|r| r.id.clone())
            .collect()
    }

    #[test]
    fn membership_by_each_criterion() {
        let (st, all) = (state(), inventory());
        // Tags (exact); a revoked instance is a member of nothing.
        assert_eq!(members(&st, &all, "web"), ["i-web1", "micro-1"]);
        assert_eq!(members(&st, &all, "db"), ["i-db1"]);
        // Tag values are alternatives.
        assert_eq!(members(&st, &all, "front"), ["i-web1", "micro-1", "i-api"]);
        // Name globs match the id or the hostname.
        assert_eq!(members(&st, &all, "named"), ["i-web1"]);
        // os (case-insensitive glob) AND image_id.
        assert_eq!(members(&st, &all, "distro"), ["i-web1", "micro-1"]);
        // Placement.
        assert_eq!(members(&st, &all, "on-db-ls"), ["i-db1"]);
        // Only ip_sets: no instance is a member.
        assert!(members(&st, &all, "mgmt").is_empty());

        // AND across criteria; unknown tag keys never match.
        let mut st2 = st.clone();
        fn web(st: &mut DesiredState) -> &mut crate::dfw::MatchSpec {
            &mut st.firewall.as_mut().expect("fw").groups[0].criteria
        }
        web(&mut st2).switch = vec!["web-ls".into()];
        assert_eq!(members(&st2, &all, "web"), ["i-web1"]);
        web(&mut st2).tags.insert("tier".into(), vec!["x".into()]);
        assert!(members(&st2, &all, "web").is_empty());
    }

    #[test]
    fn addresses_rules_and_applied_to() {
        let (st, all) = (state(), inventory());

        // web-1 (overlay, group web): domain-c25 without the rule applied to
        // micro-1 only, and the section applied everywhere.
        let fw = fw_of(&st, &all, "i-web1");
        assert_eq!(
            rule_ids(&fw),
            [
                ("domain-c25".to_string(), vec![1006, 1005]),
                ("everywhere".to_string(), vec![1003])
            ]
        );
        let names: Vec<&str> = fw.addrsets.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["grp-db", "grp-web", "ipset-ipset-2"]);
        // Members: overlay IP and underlay IP; micro-1 by its underlay IP only;
        // the revoked instance not at all.
        assert_eq!(
            set(&fw, "grp-web"),
            ["10.0.0.1/32", "10.0.0.3/32", "192.168.100.2/32"]
        );
        assert_eq!(set(&fw, "grp-db"), ["10.0.0.2/32", "192.168.101.2/32"]);
        assert_eq!(
            set(&fw, "ipset-ipset-2"),
            ["10.20.0.0/16", "192.168.110.10/32"]
        );
        let r = &fw.rulesets[0].rules[0];
        assert_eq!(r.sources, [AddrRef::AddrSet("grp-web".into())]);
        assert_eq!(r.destinations, [AddrRef::AddrSet("grp-db".into())]);
        assert!(r.log && r.action == Action::Accept);
        assert_eq!(fw.l2_rulesets[0].rules[0].id, 1001);
        assert_eq!(fw.default_rule.id, 1002);
        assert_eq!(fw.timeouts.tcp_established, 3600);
        assert_eq!(fw.max_flows, Some(100_000));

        // micro-1 (micro-segmentation, group web) also gets the rule applied
        // to it by id; its switch reference is the switch's subnet.
        let fw = fw_of(&st, &all, "micro-1");
        assert_eq!(rule_ids(&fw)[0].1, [1006, 1005, 1007]);
        assert_eq!(set(&fw, "ls-db-ls"), ["192.168.101.0/24"]);
        let r = &fw.rulesets[0].rules[2];
        assert_eq!(r.sources, [AddrRef::AddrSet("ls-db-ls".into())]);
        assert_eq!(
            r.destinations,
            [AddrRef::Net("10.9.0.0/16".parse().expect("net"))]
        );

        // db-1 is on db-ls: the switch-scoped section too; group front gets
        // the ip set's addresses.
        let fw = fw_of(&st, &all, "i-db1");
        assert_eq!(
            rule_ids(&fw),
            [
                ("domain-c25".to_string(), vec![1006, 1005]),
                ("everywhere".to_string(), vec![1003]),
                ("db-only".to_string(), vec![1010])
            ]
        );
        assert_eq!(
            set(&fw, "grp-front"),
            [
                "10.0.0.1/32",
                "10.0.0.3/32",
                "10.0.0.5/32",
                "10.20.0.0/16",
                "192.168.100.2/32",
                "192.168.110.10/32"
            ]
        );
        assert!(set(&fw, "grp-mgmt").len() == 2, "ip set only");

        // i-api is in neither web nor db: only the section applied everywhere,
        // which references no address set.
        let fw = fw_of(&st, &all, "i-api");
        assert_eq!(rule_ids(&fw), [("everywhere".to_string(), vec![1003])]);
        assert!(fw.addrsets.is_empty());
    }

    #[test]
    fn resolved_configs_pass_the_agent_validation() {
        let (st, all) = (state(), inventory());
        let dfw = Resolved::compile(&st, &all);
        for me in all.iter().filter(|r| r.revoked_at.is_none()) {
            let cfg = InstanceConfig {
                version: 1,
                tep_id: 1,
                firewall: Some(dfw.firewall_for(me)),
                ..InstanceConfig::default()
            };
            control::validate(&cfg).unwrap_or_else(|e| panic!("{}: {e}", me.id));
        }
    }

    #[test]
    fn no_firewall_section_is_allow_all() {
        let mut st = state();
        st.firewall = None;
        let all = inventory();
        assert_eq!(fw_of(&st, &all, "i-web1"), FirewallConfig::allow_all());
        assert_eq!(fw_of(&st, &all, "micro-1"), FirewallConfig::allow_all());
    }

    #[test]
    fn output_is_deterministic() {
        let st = state();
        let all = inventory();
        let mut reversed = all.clone();
        reversed.reverse();
        for id in ["i-web1", "i-db1", "micro-1", "i-api"] {
            let a = fw_of(&st, &all, id);
            let b = fw_of(&st, &reversed, id);
            assert_eq!(a, b, "{id}");
            assert_eq!(
                serde_json::to_string(&a).expect("json"),
                serde_json::to_string(&b).expect("json")
            );
        }
        // Address sets are sorted by name and their addresses sorted.
        let fw = fw_of(&st, &all, "i-db1");
        let names: Vec<&str> = fw.addrsets.iter().map(|s| s.name.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        for s in &fw.addrsets {
            assert!(s.addrs.windows(2).all(|w| w[0] < w[1]), "{s:?}");
        }
    }
}
