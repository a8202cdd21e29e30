//! The distributed firewall (NSX DFW, seed 003) as the operator declares it
//! in the desired state (`firewall:` in `state.yaml` / `PUT /api/v1/state`):
//! IP sets, groups whose membership the gateway computes from its trusted
//! inventory, ordered L3/L4 and L2 sections with applied-to, the default
//! rule, session timeouts and a flow limit. This module holds the schema and
//! its validation (every problem with its path, e.g.
//! `firewall.sections[0].rules[2].sources[1]: unknown group "dbz"`); turning
//! it into each instance's [`control::FirewallConfig`] is
//! [`crate::dfw_resolve`].
//!
//! References (rule sources/destinations, applied-to, IP-set members) are
//! kept as text in the schema and parsed by validation, so that every bad
//! one is reported with its path instead of the parser stopping at the first.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use control::firewall::{
    Action, DefaultRule, Direction, FirewallConfig, L2Rule, L2RuleSet, Rule, RuleSet, Service,
    Timeouts,
};
use control::model::MacAddr;
use control::validate::Problem;
use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::state::{SwitchSpec, valid_name};

/// Longest glob pattern accepted in a group criterion.
pub const MAX_GLOB_LEN: usize = 128;

/// The `firewall:` section of the desired state.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FirewallSpec {
    /// Explicit, named sets of addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_sets: Vec<IpSetSpec>,
    /// Named groups; membership is computed by the gateway.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<GroupSpec>,
    /// L3/L4 sections (rulesets), evaluated in order, first match wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sections: Vec<SectionSpec>,
    /// L2 sections, evaluated before the L3/L4 ones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub l2_sections: Vec<L2SectionSpec>,
    /// Decides new connections no rule matched; omitted = accept (id 1001).
    #[serde(default)]
    pub default_rule: DefaultRule,
    /// Session idle timeouts; omitted fields keep their defaults.
    #[serde(default)]
    pub timeouts: Timeouts,
    /// Most connections one instance may track at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_flows: Option<u32>,
    /// NSX "TCP strict": TCP connections must start with a SYN (default off:
    /// an accepted mid-stream segment is picked up).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tcp_strict: bool,
}

/// `ip_sets[]`: addresses (`10.0.0.5`) and networks (`10.20.0.0/16`), IPv4 or IPv6.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpSetSpec {
    pub name: String,
    #[serde(default)]
    pub addrs: Vec<String>,
}

/// `groups[]`: a name and the criteria its members meet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupSpec {
    pub name: String,
    #[serde(rename = "match", default)]
    pub criteria: MatchSpec,
}

/// Group criteria. The instance criteria given (`tags`, `name`, `os`,
/// `image_id`, `switch`) must all hold (AND); within one, list values are
/// alternatives (OR). `ip_sets` adds the addresses of those sets to the
/// group (it is not a condition on instances).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MatchSpec {
    /// Tag key -> accepted values (exact, case-sensitive).
    #[serde(
        default,
        deserialize_with = "tag_values",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub tags: BTreeMap<String, Vec<String>>,
    /// Globs (`*`, `?`; ASCII case-insensitive) on the instance id or hostname.
    #[serde(
        default,
        deserialize_with = "one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub name: Vec<String>,
    /// Globs on the inventory OS string.
    #[serde(
        default,
        deserialize_with = "one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub os: Vec<String>,
    /// Globs on the image id.
    #[serde(
        default,
        deserialize_with = "one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub image_id: Vec<String>,
    /// Instances placed on one of these logical switches.
    #[serde(
        default,
        deserialize_with = "one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub switch: Vec<String>,
    /// IP sets whose addresses are added to the group.
    #[serde(
        default,
        deserialize_with = "one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub ip_sets: Vec<String>,
    /// Anything else: kept so validation can report it with its path.
    #[serde(flatten)]
    pub unknown: BTreeMap<String, serde_json::Value>,
}

impl MatchSpec {
    /// The criterion names [`MatchSpec`] knows.
    pub const CRITERIA: &'static str = "tags, name, os, image_id, switch, ip_sets";

    /// True if a criterion on instances is given (not just `ip_sets`).
    pub fn has_instance_criteria(&self) -> bool {
        !(self.tags.is_empty()
            && self.name.is_empty()
            && self.os.is_empty()
            && self.image_id.is_empty()
            && self.switch.is_empty())
    }
}

/// `sections[]`: an L3/L4 ruleset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SectionSpec {
    pub name: String,
    /// Where the section applies ([`Target`] syntax); empty = every instance.
    #[serde(
        default,
        deserialize_with = "one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub applied_to: Vec<String>,
    #[serde(default)]
    pub rules: Vec<RuleSpec>,
}

/// One L3/L4 rule. Empty `sources`/`destinations`/`services` = any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub id: u32,
    #[serde(default)]
    pub direction: Direction,
    /// [`Peer`] syntax: `any`, IP, CIDR, `group:NAME`, `ipset:NAME`, `switch:NAME`.
    #[serde(
        default,
        deserialize_with = "one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub sources: Vec<String>,
    #[serde(
        default,
        deserialize_with = "one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub destinations: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<Service>,
    pub action: Action,
    #[serde(default)]
    pub log: bool,
    /// Overrides the section's `applied_to` for this rule.
    #[serde(
        default,
        deserialize_with = "opt_one_or_many",
        skip_serializing_if = "Option::is_none"
    )]
    pub applied_to: Option<Vec<String>>,
}

/// `l2_sections[]`: an L2 ruleset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct L2SectionSpec {
    pub name: String,
    #[serde(
        default,
        deserialize_with = "one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub applied_to: Vec<String>,
    #[serde(default)]
    pub rules: Vec<L2RuleSpec>,
}

/// One L2 rule (stateless; accept or drop).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct L2RuleSpec {
    pub id: u32,
    #[serde(default)]
    pub direction: Direction,
    #[serde(default)]
    pub ethertype: EtherType,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<MacAddr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destinations: Vec<MacAddr>,
    pub action: Action,
    #[serde(default)]
    pub log: bool,
    #[serde(
        default,
        deserialize_with = "opt_one_or_many",
        skip_serializing_if = "Option::is_none"
    )]
    pub applied_to: Option<Vec<String>>,
}

impl L2RuleSpec {
    /// The rule as agents get it.
    pub fn to_model(&self) -> L2Rule {
        L2Rule {
            id: self.id,
            direction: self.direction,
            ethertype: self.ethertype.0,
            sources: self.sources.clone(),
            destinations: self.destinations.clone(),
            action: self.action,
            log: self.log,
        }
    }
}

/// An L2 rule's EtherType: `any`, `ipv4`, `arp`, `ipv6`, or a number
/// (`0x0806`, `2054`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EtherType(pub Option<u16>);

impl fmt::Display for EtherType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => f.write_str("any"),
            Some(v) => write!(f, "{v:#06x}"),
        }
    }
}

impl FromStr for EtherType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || {
            format!(
                "invalid ethertype {s:?}: expected any, ipv4, arp, ipv6, or a number like 0x0806"
            )
        };
        let lower = s.trim().to_ascii_lowercase();
        Ok(EtherType(match lower.as_str() {
            "any" => None,
            "ipv4" | "ip" => Some(0x0800),
            "arp" => Some(0x0806),
            "ipv6" => Some(0x86dd),
            other => Some(match other.strip_prefix("0x") {
                Some(hex) => u16::from_str_radix(hex, 16).map_err(|_| err())?,
                None => other.parse().map_err(|_| err())?,
            }),
        }))
    }
}

impl Serialize for EtherType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for EtherType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum StrOrNum {
            Num(u64),
            Str(String),
        }
        match StrOrNum::deserialize(d)? {
            StrOrNum::Num(n) => u16::try_from(n)
                .map(|v| EtherType(Some(v)))
                .map_err(|_| serde::de::Error::custom(format!("ethertype {n} exceeds 16 bits"))),
            StrOrNum::Str(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl From<OneOrMany> for Vec<String> {
    fn from(v: OneOrMany) -> Self {
        match v {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// A string or a list of strings.
fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    OneOrMany::deserialize(d).map(Vec::from)
}

fn opt_one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    Option::<OneOrMany>::deserialize(d).map(|o| o.map(Vec::from))
}

/// `{key: value}` or `{key: [value, ...]}`.
fn tag_values<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, Vec<String>>, D::Error> {
    let m = BTreeMap::<String, OneOrMany>::deserialize(d)?;
    Ok(m.into_iter().map(|(k, v)| (k, v.into())).collect())
}

// ----- references -----------------------------------------------------------

/// Why a rule's reference (peer or target) or a membership glob was refused;
/// the validation reports its `Display` under the field's path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefError {
    /// `group:`, `ipset:`, `switch:` or `instance:` with nothing after it.
    #[error("{text:?}: missing {kind} name")]
    MissingName { text: String, kind: &'static str },
    /// A peer that is none of the accepted forms.
    #[error("{0:?} is not any, an IP address, a CIDR, group:NAME, ipset:NAME or switch:NAME")]
    NotAPeer(String),
    /// An empty glob.
    #[error("empty pattern")]
    EmptyPattern,
    /// A glob longer than [`MAX_GLOB_LEN`] characters.
    #[error("pattern longer than {MAX_GLOB_LEN} characters")]
    PatternTooLong,
    /// A glob with a character we do not treat as literal or wildcard.
    #[error("{pattern:?}: unsupported character {c:?} (only * and ? are wildcards)")]
    UnsupportedChar { pattern: String, c: char },
}

/// A rule source or destination as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer<'a> {
    Any,
    Net(IpNet),
    Group(&'a str),
    IpSet(&'a str),
    Switch(&'a str),
}

impl<'a> Peer<'a> {
    /// Parses `any`, an IP, a CIDR, `group:NAME`, `ipset:NAME` or `switch:NAME`.
    pub fn parse(s: &'a str) -> Result<Peer<'a>, RefError> {
        if s == "any" {
            return Ok(Peer::Any);
        }
        let named = |name: &'a str, kind: &'static str| {
            if name.is_empty() {
                Err(RefError::MissingName {
                    text: s.to_string(),
                    kind,
                })
            } else {
                Ok(name)
            }
        };
        if let Some(n) = s.strip_prefix("group:") {
            return named(n, "group").map(Peer::Group);
        }
        if let Some(n) = s.strip_prefix("ipset:") {
            return named(n, "ip set").map(Peer::IpSet);
        }
        if let Some(n) = s.strip_prefix("switch:") {
            return named(n, "switch").map(Peer::Switch);
        }
        parse_net(s)
            .map(Peer::Net)
            .ok_or_else(|| RefError::NotAPeer(s.to_string()))
    }
}

/// Parses an IP address (a host network) or a CIDR, host bits kept.
pub fn parse_net(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

/// Where a section or rule applies, as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// `NAME` or `group:NAME`: the group's member instances.
    Group(&'a str),
    /// `instance:ID`.
    Instance(&'a str),
    /// `switch:NAME`: instances placed on that switch.
    Switch(&'a str),
}

impl<'a> Target<'a> {
    /// Parses `NAME`, `group:NAME`, `instance:ID` or `switch:NAME` (a name
    /// with any other `:` in it is a group name).
    pub fn parse(s: &'a str) -> Result<Target<'a>, RefError> {
        let (kind, name, target): (&'static str, &str, fn(&'a str) -> Target<'a>) =
            match s.split_once(':') {
                Some(("group", n)) => ("group", n, Target::Group),
                Some(("instance", n)) => ("instance", n, Target::Instance),
                Some(("switch", n)) => ("switch", n, Target::Switch),
                _ => ("group", s, Target::Group),
            };
        if name.is_empty() {
            return Err(RefError::MissingName {
                text: s.to_string(),
                kind,
            });
        }
        Ok(target(name))
    }
}

// ----- globs ------------------------------------------------------------------

/// A glob with `*` (any run) and `?` (one character), ASCII case-insensitive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob(Vec<char>);

impl Glob {
    /// Compiles `pattern`; `Err` says what is wrong with it.
    pub fn new(pattern: &str) -> Result<Glob, RefError> {
        if pattern.is_empty() {
            return Err(RefError::EmptyPattern);
        }
        if pattern.chars().count() > MAX_GLOB_LEN {
            return Err(RefError::PatternTooLong);
        }
        if let Some(c) = pattern
            .chars()
            .find(|c| c.is_control() || matches!(c, '[' | ']' | '{' | '}' | '\\'))
        {
            return Err(RefError::UnsupportedChar {
                pattern: pattern.to_string(),
                c,
            });
        }
        Ok(Glob(
            pattern.chars().map(|c| c.to_ascii_lowercase()).collect(),
        ))
    }

    /// True if the whole of `text` matches.
    pub fn matches(&self, text: &str) -> bool {
        let p = &self.0;
        let next = |at: usize| text.get(at..).and_then(|s| s.chars().next());
        let (mut pi, mut ti) = (0usize, 0usize);
        // Position after the last `*` and the text position it resumes from.
        let mut star: Option<(usize, usize)> = None;
        while let Some(c) = next(ti) {
            match p.get(pi) {
                Some('*') => {
                    star = Some((pi + 1, ti));
                    pi += 1;
                    continue;
                }
                Some(&pc) if pc == '?' || pc == c.to_ascii_lowercase() => {
                    pi += 1;
                    ti += c.len_utf8();
                    continue;
                }
                _ => {}
            }
            // Mismatch: let the last `*` swallow one more character.
            let Some((sp, st)) = star else {
                return false;
            };
            let Some(skipped) = next(st) else {
                return false;
            };
            let st = st + skipped.len_utf8();
            star = Some((sp, st));
            pi = sp;
            ti = st;
        }
        p.get(pi..)
            .is_some_and(|rest| rest.iter().all(|&c| c == '*'))
    }
}

// ----- validation -------------------------------------------------------------

/// Checks `fw` (with `switches`, the desired state's logical switches) and
/// appends every problem, paths under `firewall`.
pub fn validate(fw: &FirewallSpec, switches: &[SwitchSpec], out: &mut Vec<Problem>) {
    let mut add = |path: String, message: String| out.push(Problem { path, message });
    let switch_names: HashSet<&str> = switches.iter().map(|s| s.name.as_str()).collect();

    let mut ip_sets: HashMap<&str, usize> = HashMap::new();
    for (i, set) in fw.ip_sets.iter().enumerate() {
        let p = format!("firewall.ip_sets[{i}]");
        check_name(&mut add, &format!("{p}.name"), &set.name);
        if let Some(j) = ip_sets.insert(set.name.as_str(), i) {
            add(
                format!("{p}.name"),
                format!("duplicate ip set {:?} (also ip_sets[{j}])", set.name),
            );
        }
        for (k, a) in set.addrs.iter().enumerate() {
            check_net(&mut add, format!("{p}.addrs[{k}]"), a);
        }
    }

    let mut groups: HashMap<&str, usize> = HashMap::new();
    for (i, g) in fw.groups.iter().enumerate() {
        let p = format!("firewall.groups[{i}]");
        check_name(&mut add, &format!("{p}.name"), &g.name);
        if let Some(j) = groups.insert(g.name.as_str(), i) {
            add(
                format!("{p}.name"),
                format!("duplicate group {:?} (also groups[{j}])", g.name),
            );
        }
        let m = &g.criteria;
        let mp = format!("{p}.match");
        for key in m.unknown.keys() {
            add(
                format!("{mp}.{key}"),
                format!(
                    "unknown criterion {key:?} (expected one of {})",
                    MatchSpec::CRITERIA
                ),
            );
        }
        if !m.has_instance_criteria() && m.ip_sets.is_empty() && m.unknown.is_empty() {
            add(
                mp.clone(),
                format!(
                    "a group needs at least one criterion ({})",
                    MatchSpec::CRITERIA
                ),
            );
        }
        for (key, values) in &m.tags {
            if key.is_empty() {
                add(format!("{mp}.tags"), "empty tag key".into());
            }
            if values.is_empty() {
                add(
                    format!("{mp}.tags.{key}"),
                    "needs at least one value".into(),
                );
            }
        }
        for (field, globs) in [("name", &m.name), ("os", &m.os), ("image_id", &m.image_id)] {
            for (k, pat) in globs.iter().enumerate() {
                if let Err(e) = Glob::new(pat) {
                    add(format!("{mp}.{field}[{k}]"), format!("bad glob: {e}"));
                }
            }
        }
        for (k, sw) in m.switch.iter().enumerate() {
            if !switch_names.contains(sw.as_str()) {
                add(
                    format!("{mp}.switch[{k}]"),
                    format!("unknown switch {sw:?}"),
                );
            }
        }
        for (k, set) in m.ip_sets.iter().enumerate() {
            if !ip_sets.contains_key(set.as_str()) {
                add(
                    format!("{mp}.ip_sets[{k}]"),
                    format!("unknown ip set {set:?}"),
                );
            }
        }
    }

    let known = Known {
        groups: &groups,
        ip_sets: &ip_sets,
        switches: &switch_names,
    };
    for (i, s) in fw.sections.iter().enumerate() {
        let p = format!("firewall.sections[{i}]");
        known.targets(&mut add, &format!("{p}.applied_to"), &s.applied_to);
        for (j, r) in s.rules.iter().enumerate() {
            let rp = format!("{p}.rules[{j}]");
            known.peers(&mut add, &format!("{rp}.sources"), &r.sources);
            known.peers(&mut add, &format!("{rp}.destinations"), &r.destinations);
            known.rule_targets(
                &mut add,
                &format!("{rp}.applied_to"),
                r.applied_to.as_deref(),
            );
        }
    }
    for (i, s) in fw.l2_sections.iter().enumerate() {
        let p = format!("firewall.l2_sections[{i}]");
        known.targets(&mut add, &format!("{p}.applied_to"), &s.applied_to);
        for (j, r) in s.rules.iter().enumerate() {
            let rp = format!("{p}.rules[{j}]");
            if let Some(t) = r.ethertype.0
                && t < 0x0600
            {
                add(
                    format!("{rp}.ethertype"),
                    format!("{t:#06x} is a frame length, not an EtherType (>= 0x0600)"),
                );
            }
            known.rule_targets(
                &mut add,
                &format!("{rp}.applied_to"),
                r.applied_to.as_deref(),
            );
        }
    }

    // What an agent checks on the resolved form: section names, rule ids
    // (unique across every section and the default rule), services, L2
    // actions, timeouts and max_flows. The shape keeps the sections' order
    // and the rules' positions, so only the names of the lists differ.
    let mut resolved = Vec::new();
    control::firewall::validate_firewall(&shape(fw), "firewall", &mut resolved);
    for pr in resolved {
        add(rename_paths(&pr.path), rename_paths(&pr.message));
    }
}

/// The resolved form's paths in terms of the schema's.
fn rename_paths(s: &str) -> String {
    s.replace("firewall.l2_rulesets[", "firewall.l2_sections[")
        .replace("firewall.rulesets[", "firewall.sections[")
}

/// `fw` as a [`FirewallConfig`] with the same sections and rule positions,
/// without addresses (checked here, not by the agent-side validation).
fn shape(fw: &FirewallSpec) -> FirewallConfig {
    FirewallConfig {
        addrsets: Vec::new(),
        l2_rulesets: fw
            .l2_sections
            .iter()
            .map(|s| L2RuleSet {
                name: s.name.clone(),
                rules: s.rules.iter().map(L2RuleSpec::to_model).collect(),
            })
            .collect(),
        rulesets: fw
            .sections
            .iter()
            .map(|s| RuleSet {
                name: s.name.clone(),
                rules: s
                    .rules
                    .iter()
                    .map(|r| Rule {
                        id: r.id,
                        direction: r.direction,
                        sources: Vec::new(),
                        destinations: Vec::new(),
                        services: r.services.clone(),
                        action: r.action,
                        log: r.log,
                    })
                    .collect(),
            })
            .collect(),
        default_rule: fw.default_rule.clone(),
        timeouts: fw.timeouts,
        max_flows: fw.max_flows,
        tcp_strict: fw.tcp_strict,
    }
}

/// The names references may use.
struct Known<'a> {
    groups: &'a HashMap<&'a str, usize>,
    ip_sets: &'a HashMap<&'a str, usize>,
    switches: &'a HashSet<&'a str>,
}

impl Known<'_> {
    fn peers(&self, add: &mut dyn FnMut(String, String), p: &str, list: &[String]) {
        for (k, s) in list.iter().enumerate() {
            let path = format!("{p}[{k}]");
            match Peer::parse(s) {
                Err(e) => add(path, e.to_string()),
                Ok(Peer::Any) if list.len() > 1 => add(
                    path,
                    "\"any\" must be alone (an empty list also means any)".into(),
                ),
                Ok(Peer::Any) => {}
                Ok(Peer::Net(net)) => {
                    if net.network() != net.addr() {
                        add(path, host_bits(&net));
                    }
                }
                Ok(Peer::Group(g)) if !self.groups.contains_key(g) => {
                    add(path, format!("unknown group {g:?}"));
                }
                Ok(Peer::IpSet(g)) if !self.ip_sets.contains_key(g) => {
                    add(path, format!("unknown ip set {g:?}"));
                }
                Ok(Peer::Switch(g)) if !self.switches.contains(g) => {
                    add(path, format!("unknown switch {g:?}"));
                }
                Ok(_) => {}
            }
        }
    }

    fn targets(&self, add: &mut dyn FnMut(String, String), p: &str, list: &[String]) {
        for (k, s) in list.iter().enumerate() {
            let path = format!("{p}[{k}]");
            match Target::parse(s) {
                Err(e) => add(path, e.to_string()),
                Ok(Target::Group(g)) if !self.groups.contains_key(g) => {
                    add(path, format!("unknown group {g:?}"));
                }
                Ok(Target::Switch(g)) if !self.switches.contains(g) => {
                    add(path, format!("unknown switch {g:?}"));
                }
                Ok(Target::Instance(id)) if id.len() > 255 || id.chars().any(char::is_control) => {
                    add(path, format!("{id:?} is not an instance id"));
                }
                Ok(_) => {}
            }
        }
    }

    fn rule_targets(&self, add: &mut dyn FnMut(String, String), p: &str, list: Option<&[String]>) {
        match list {
            None => {}
            Some([]) => add(
                p.to_string(),
                "must not be empty (omit it to use the section's applied_to)".into(),
            ),
            Some(list) => self.targets(add, p, list),
        }
    }
}

fn check_name(add: &mut dyn FnMut(String, String), path: &str, name: &str) {
    if !valid_name(name) {
        add(
            path.to_string(),
            format!("{name:?} must be 1-64 characters of [A-Za-z0-9-_.:]"),
        );
    }
}

fn check_net(add: &mut dyn FnMut(String, String), path: String, s: &str) {
    match parse_net(s) {
        None => add(
            path,
            format!("{s:?} is not an IP address or a CIDR like 10.20.0.0/16"),
        ),
        Some(net) if net.network() != net.addr() => add(path, host_bits(&net)),
        Some(_) => {}
    }
}

fn host_bits(net: &IpNet) -> String {
    format!("{net} has host bits set (did you mean {}?)", net.trunc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        let g = |p: &str| Glob::new(p).expect("valid glob");
        assert!(g("web-*").matches("web-1"));
        assert!(g("web-*").matches("WEB-"));
        assert!(!g("web-*").matches("db-1"));
        assert!(g("ubuntu*").matches("Ubuntu 22.04"));
        assert!(g("*").matches(""));
        assert!(g("a*b*c").matches("axxbyyc"));
        assert!(!g("a*b*c").matches("axxbyy"));
        assert!(g("?-x").matches("é-x"));
        assert!(!g("?").matches("ab"));
        assert!(g("*.example").matches("vm1.example"));
        assert!(g("exact").matches("exact") && !g("exact").matches("exact1"));
        for bad in [
            "",
            "web-[12]",
            "a\\b",
            "x{a,b}",
            &"a".repeat(MAX_GLOB_LEN + 1),
        ] {
            assert!(Glob::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn peers_and_targets() {
        assert_eq!(Peer::parse("any"), Ok(Peer::Any));
        assert_eq!(Peer::parse("group:web"), Ok(Peer::Group("web")));
        assert_eq!(Peer::parse("ipset:s"), Ok(Peer::IpSet("s")));
        assert_eq!(Peer::parse("switch:ls"), Ok(Peer::Switch("ls")));
        assert_eq!(
            Peer::parse("10.0.0.5"),
            Ok(Peer::Net("10.0.0.5/32".parse().expect("net")))
        );
        assert!(Peer::parse("web").is_err());
        assert!(Peer::parse("group:").is_err());
        assert_eq!(Target::parse("web"), Ok(Target::Group("web")));
        assert_eq!(Target::parse("group:web"), Ok(Target::Group("web")));
        assert_eq!(Target::parse("instance:i-1"), Ok(Target::Instance("i-1")));
        assert_eq!(Target::parse("switch:ls"), Ok(Target::Switch("ls")));
        assert_eq!(Target::parse("a:b"), Ok(Target::Group("a:b")));
        assert!(Target::parse("").is_err());
        assert!(Target::parse("instance:").is_err());
        // The texts the validation reports.
        let text = |r: Result<Peer<'_>, RefError>| r.map_err(|e| e.to_string()).err();
        assert_eq!(
            text(Peer::parse("ipset:")).as_deref(),
            Some("\"ipset:\": missing ip set name")
        );
        assert_eq!(
            Target::parse("instance:").map_err(|e| e.to_string()),
            Err("\"instance:\": missing instance name".to_string())
        );
        assert_eq!(
            Glob::new("").map_err(|e| e.to_string()),
            Err("empty pattern".to_string())
        );
        assert_eq!(
            Glob::new(&"a".repeat(MAX_GLOB_LEN + 1)).map_err(|e| e.to_string()),
            Err(format!("pattern longer than {MAX_GLOB_LEN} characters"))
        );
    }

    #[test]
    fn ethertypes() {
        let e = |s: &str| s.parse::<EtherType>().expect("ethertype").0;
        assert_eq!(e("any"), None);
        assert_eq!(e("ARP"), Some(0x0806));
        assert_eq!(e("0x86dd"), Some(0x86dd));
        assert_eq!(e("2048"), Some(0x0800));
        assert!("0x10000".parse::<EtherType>().is_err());
        assert_eq!(EtherType(Some(0x0806)).to_string(), "0x0806");
    }
}
