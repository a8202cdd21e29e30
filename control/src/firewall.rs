//! The distributed firewall's desired state for one instance, as the gateway
//! pushes it: fully resolved. Groups, logical switches and applied-to were
//! turned into address sets and rule selection at the gateway; an agent only
//! sees address sets (named lists of CIDRs), the rules that apply to it, and
//! the session-timer profile. Plain data with serde; checks live in
//! [`validate_firewall`].
//!
//! Text forms follow `vsipioctl getrules` in the NSX seed:
//! `rule 1006 at 1 inout protocol tcp from addrset ip-vm-33 to addrset ip-vm-36 port 22 accept with log;`

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::model::MacAddr;
use crate::validate::Problem;

/// Everything the firewall of one instance needs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FirewallConfig {
    /// Named address sets the rules refer to (`addrset ip-vm-33 { ip 172.16.10.12, }`).
    #[serde(default)]
    pub addrsets: Vec<AddrSet>,
    /// L2 rulesets, evaluated before any L3/L4 ruleset; first match wins,
    /// no match = accept (the seed's `rule 1001 ... ethertype any ... accept`).
    #[serde(default)]
    pub l2_rulesets: Vec<L2RuleSet>,
    /// L3/L4 rulesets (sections), evaluated in order; first match wins.
    #[serde(default)]
    pub rulesets: Vec<RuleSet>,
    /// What happens to a new connection no rule matched.
    #[serde(default)]
    pub default_rule: DefaultRule,
    /// Idle timeouts per connection state.
    #[serde(default)]
    pub timeouts: Timeouts,
    /// Most connections this instance may track at once (its share of the
    /// agent's table); `None` = only the agent's global limit applies.
    #[serde(default)]
    pub max_flows: Option<u32>,
    /// NSX's "TCP strict": a TCP connection must start with a SYN. Off (the
    /// default), a mid-stream segment with no tracked connection is judged
    /// by the rules and, if accepted, picked up as established (so a
    /// connection survives a lost table, and widening a rule never cuts).
    #[serde(default)]
    pub tcp_strict: bool,
}

impl FirewallConfig {
    /// A firewall that accepts everything (still stateful): what the gateway
    /// pushes when its desired state has no `firewall` section, like NSX's
    /// out-of-the-box "Default Rule: Allow".
    pub fn allow_all() -> FirewallConfig {
        FirewallConfig {
            addrsets: Vec::new(),
            l2_rulesets: Vec::new(),
            rulesets: Vec::new(),
            default_rule: DefaultRule {
                id: DefaultRule::DEFAULT_ID,
                action: Action::Accept,
                log: false,
            },
            timeouts: Timeouts::default(),
            max_flows: None,
            tcp_strict: false,
        }
    }
}

/// A named set of addresses: `addrset ip-vm-33 { ip 172.16.10.12, }`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddrSet {
    pub name: String,
    /// Members: host addresses (`/32`, `/128`) or networks, IPv4 or IPv6.
    #[serde(default, serialize_with = "serialize_addrs")]
    pub addrs: Vec<IpNet>,
}

/// `AddrSet::addrs` as [`IpNet`]'s own `Serialize` writes it, byte for byte,
/// but faster for human-readable formats (JSON): `IpNet` goes through
/// `Display` and `collect_str`, which was most of the time the gateway spent
/// building a config with big groups. Here an IPv4 network is formatted by
/// hand into a stack buffer, an IPv6 one with `Display` into a stack buffer,
/// and either is handed over with one `serialize_str`. Non-human-readable
/// formats get `IpNet`'s serializer unchanged. Deserialization is `IpNet`'s.
fn serialize_addrs<S: Serializer>(addrs: &[IpNet], s: S) -> Result<S::Ok, S::Error> {
    if !s.is_human_readable() {
        return addrs.serialize(s);
    }
    s.collect_seq(addrs.iter().map(FastNet))
}

/// One network, serialized as the string `IpNet`'s `Display` gives
/// (`10.0.0.1/32`, `2001:db8::/32`).
struct FastNet<'a>(&'a IpNet);

impl Serialize for FastNet<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if !s.is_human_readable() {
            return self.0.serialize(s);
        }
        let mut buf = NetBuf::new();
        match self.0 {
            IpNet::V4(n) => buf.push_v4(n.addr().octets(), n.prefix_len()),
            // `Ipv6Addr`'s text form (zero-run compression, `::ffff:a.b.c.d`)
            // is std's; at most 39 + 4 bytes, so this cannot overflow.
            IpNet::V6(n) => {
                if fmt::Write::write_fmt(&mut buf, format_args!("{n}")).is_err() {
                    return s.collect_str(n);
                }
            }
        }
        match buf.as_str() {
            Some(text) => s.serialize_str(text),
            None => s.collect_str(self.0),
        }
    }
}

/// A stack buffer for the text form of a network: `ffff:...:ffff/128` is
/// 43 bytes, `255.255.255.255/32` 18.
struct NetBuf {
    bytes: [u8; NetBuf::CAP],
    len: usize,
    /// Something did not fit (never, for the networks written here).
    overflow: bool,
}

impl NetBuf {
    const CAP: usize = 48;

    fn new() -> NetBuf {
        NetBuf {
            bytes: [0; NetBuf::CAP],
            len: 0,
            overflow: false,
        }
    }

    /// `a.b.c.d/len` (18 bytes at most: always fits an empty buffer).
    fn push_v4(&mut self, octets: [u8; 4], prefix_len: u8) {
        for (i, octet) in octets.into_iter().enumerate() {
            if i > 0 {
                self.push_byte(b'.');
            }
            self.push_decimal(octet);
        }
        self.push_byte(b'/');
        self.push_decimal(prefix_len);
    }

    /// `n` in decimal, no leading zeros (as `Display` for `u8`).
    fn push_decimal(&mut self, n: u8) {
        if n >= 100 {
            self.push_byte(b'0' + n / 100);
        }
        if n >= 10 {
            self.push_byte(b'0' + n / 10 % 10);
        }
        self.push_byte(b'0' + n % 10);
    }

    fn push_byte(&mut self, b: u8) {
        match self.bytes.get_mut(self.len) {
            Some(slot) => {
                *slot = b;
                self.len += 1;
            }
            None => self.overflow = true,
        }
    }

    /// The text written so far; `None` only if something did not fit (or
    /// was not UTF-8), which the callers above never cause.
    fn as_str(&self) -> Option<&str> {
        if self.overflow {
            return None;
        }
        std::str::from_utf8(self.bytes.get(..self.len)?).ok()
    }
}

impl fmt::Write for NetBuf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        let Some(dst) = self.bytes.get_mut(self.len..end) else {
            self.overflow = true;
            return Err(fmt::Error);
        };
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// An ordered section of L3/L4 rules (`ruleset domain-c25 { ... }`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSet {
    pub name: String,
    #[serde(default)]
    pub rules: Vec<Rule>,
}

/// One L3/L4 rule. Empty `sources`/`destinations`/`services` mean "any".
/// A rule with several services prints as several `at` lines, as in the seed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Rule id, unique across the instance's rulesets (shown in flows and logs).
    pub id: u32,
    #[serde(default)]
    pub direction: Direction,
    #[serde(default)]
    pub sources: Vec<AddrRef>,
    #[serde(default)]
    pub destinations: Vec<AddrRef>,
    #[serde(default)]
    pub services: Vec<Service>,
    pub action: Action,
    /// Log every new connection this rule decides (`with log`).
    #[serde(default)]
    pub log: bool,
}

/// An ordered section of L2 rules (`ruleset domain-c25_L2 { ... }`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct L2RuleSet {
    pub name: String,
    #[serde(default)]
    pub rules: Vec<L2Rule>,
}

/// One L2 rule: ethertype and MAC addresses. L2 rules are stateless and
/// cannot reject (there is no L2 "unreachable"): accept or drop.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct L2Rule {
    pub id: u32,
    #[serde(default)]
    pub direction: Direction,
    /// `None` = any ethertype.
    #[serde(default)]
    pub ethertype: Option<u16>,
    /// Source MACs (empty = any).
    #[serde(default)]
    pub sources: Vec<MacAddr>,
    /// Destination MACs (empty = any).
    #[serde(default)]
    pub destinations: Vec<MacAddr>,
    pub action: Action,
    #[serde(default)]
    pub log: bool,
}

/// The rule that decides new connections no other rule matched (printed as
/// the last rule of the last ruleset, like the seed's `rule 1002`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefaultRule {
    #[serde(default = "DefaultRule::default_id")]
    pub id: u32,
    pub action: Action,
    #[serde(default)]
    pub log: bool,
}

impl DefaultRule {
    /// Id of the default rule when none is given (NSX numbers it lowest).
    pub const DEFAULT_ID: u32 = 1001;

    fn default_id() -> u32 {
        Self::DEFAULT_ID
    }
}

impl Default for DefaultRule {
    fn default() -> Self {
        DefaultRule {
            id: Self::DEFAULT_ID,
            action: Action::Accept,
            log: false,
        }
    }
}

/// Direction as seen by the instance: `in` = toward it, `out` = from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    In,
    Out,
    #[default]
    InOut,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
            Direction::InOut => "inout",
        }
    }
}

/// What a rule does with a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Accept,
    /// Silently discard.
    Drop,
    /// Discard and tell the sender: TCP RST, or ICMP port unreachable.
    Reject,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Accept => "accept",
            Action::Drop => "drop",
            Action::Reject => "reject",
        }
    }
}

/// A rule's source or destination: a literal address/network, or an address
/// set by name. Written `10.0.0.0/24`, `10.0.0.5`, `addrset:ip-vm-33`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AddrRef {
    Net(IpNet),
    AddrSet(String),
}

impl fmt::Display for AddrRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddrRef::Net(n) if n.prefix_len() == n.max_prefix_len() => write!(f, "{}", n.addr()),
            AddrRef::Net(n) => write!(f, "{n}"),
            AddrRef::AddrSet(name) => write!(f, "addrset:{name}"),
        }
    }
}

/// Why an address reference did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid address {0:?}: expected an IPv4/IPv6 address, a CIDR like 10.0.0.0/24, or addrset:NAME"
)]
pub struct AddrRefError(pub String);

impl FromStr for AddrRef {
    type Err = AddrRefError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || AddrRefError(s.to_string());
        if let Some(name) = s.strip_prefix("addrset:") {
            if name.is_empty() {
                return Err(err());
            }
            return Ok(AddrRef::AddrSet(name.to_string()));
        }
        if let Ok(net) = s.parse::<IpNet>() {
            return Ok(AddrRef::Net(net));
        }
        s.parse::<std::net::IpAddr>()
            .map(|ip| AddrRef::Net(IpNet::from(ip)))
            .map_err(|_| err())
    }
}

impl Serialize for AddrRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for AddrRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One service: a protocol, optional port ranges, optional ICMP type/code.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    #[serde(default)]
    pub protocol: Protocol,
    /// Destination ports (tcp/udp only; `None` = any).
    #[serde(default)]
    pub port: Option<PortRange>,
    /// Source ports (tcp/udp only; `None` = any).
    #[serde(default)]
    pub source_port: Option<PortRange>,
    /// ICMP / ICMPv6 type (icmp/ipv6-icmp only; `None` = any).
    #[serde(default)]
    pub icmp_type: Option<u8>,
    /// ICMP code (needs `icmp_type`).
    #[serde(default)]
    pub icmp_code: Option<u8>,
}

impl Service {
    pub fn any() -> Service {
        Service::any_of(Protocol::Any)
    }

    /// Every packet of `protocol` (no port or ICMP restriction).
    pub fn any_of(protocol: Protocol) -> Service {
        Service {
            protocol,
            port: None,
            source_port: None,
            icmp_type: None,
            icmp_code: None,
        }
    }
}

/// IP protocol of a service. Written `any`, `tcp`, `udp`, `icmp`,
/// `ipv6-icmp`, or a number 0..=255.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Protocol {
    #[default]
    Any,
    Number(u8),
}

impl Protocol {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ICMPV6: u8 = 58;

    pub fn number(self) -> Option<u8> {
        match self {
            Protocol::Any => None,
            Protocol::Number(n) => Some(n),
        }
    }

    /// True for protocols with ports (tcp, udp).
    pub fn has_ports(self) -> bool {
        matches!(self, Protocol::Number(Self::TCP | Self::UDP))
    }

    /// True for icmp and ipv6-icmp.
    pub fn is_icmp(self) -> bool {
        matches!(self, Protocol::Number(Self::ICMP | Self::ICMPV6))
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Protocol::Any => f.write_str("any"),
            Protocol::Number(Self::TCP) => f.write_str("tcp"),
            Protocol::Number(Self::UDP) => f.write_str("udp"),
            Protocol::Number(Self::ICMP) => f.write_str("icmp"),
            Protocol::Number(Self::ICMPV6) => f.write_str("ipv6-icmp"),
            Protocol::Number(n) => write!(f, "{n}"),
        }
    }
}

/// Why a protocol did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid protocol {0:?}: expected any, tcp, udp, icmp, ipv6-icmp or a number 0..=255")]
pub struct ProtocolError(pub String);

impl FromStr for Protocol {
    type Err = ProtocolError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "any" => Protocol::Any,
            "tcp" => Protocol::Number(Self::TCP),
            "udp" => Protocol::Number(Self::UDP),
            "icmp" => Protocol::Number(Self::ICMP),
            "ipv6-icmp" | "icmpv6" => Protocol::Number(Self::ICMPV6),
            other => Protocol::Number(other.parse().map_err(|_| ProtocolError(s.to_string()))?),
        })
    }
}

impl Serialize for Protocol {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Protocol {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match StrOrNum::deserialize(d)? {
            StrOrNum::Num(n) => u8::try_from(n)
                .map(Protocol::Number)
                .map_err(|_| serde::de::Error::custom(ProtocolError(n.to_string()))),
            StrOrNum::Str(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// An inclusive port range, written `22` or `1024-65535` (or a number).
/// `first > last` parses (so validation can report it with its path) but is
/// never valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub const fn single(port: u16) -> PortRange {
        PortRange {
            first: port,
            last: port,
        }
    }

    pub fn contains(&self, port: u16) -> bool {
        self.first <= port && port <= self.last
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

/// Why a port range did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid port range {0:?}: expected a port 0..=65535 or a range like 1024-65535")]
pub struct PortRangeError(pub String);

impl FromStr for PortRange {
    type Err = PortRangeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || PortRangeError(s.to_string());
        let port = |p: &str| p.trim().parse::<u16>().map_err(|_| err());
        match s.split_once('-') {
            None => Ok(PortRange::single(port(s)?)),
            Some((a, b)) => Ok(PortRange {
                first: port(a)?,
                last: port(b)?,
            }),
        }
    }
}

impl Serialize for PortRange {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.first == self.last {
            s.serialize_u16(self.first)
        } else {
            s.collect_str(self)
        }
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match StrOrNum::deserialize(d)? {
            StrOrNum::Num(n) => u16::try_from(n)
                .map(PortRange::single)
                .map_err(|_| serde::de::Error::custom(PortRangeError(n.to_string()))),
            StrOrNum::Str(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum StrOrNum {
    Num(u64),
    Str(String),
}

/// Idle timeouts in seconds, per connection state (NSX "session timer"
/// profile). Defaults follow NSX's default firewall session timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// TCP: first SYN seen, no answer yet.
    pub tcp_first_packet: u32,
    /// TCP: SYN answered, handshake not complete.
    pub tcp_opening: u32,
    pub tcp_established: u32,
    /// TCP: one side sent FIN.
    pub tcp_closing: u32,
    /// TCP: both sides sent FIN.
    pub tcp_fin_wait: u32,
    /// TCP: after the final ACK or a RST.
    pub tcp_closed: u32,
    pub udp_first_packet: u32,
    pub udp_single: u32,
    pub udp_multiple: u32,
    pub icmp_first_packet: u32,
    pub icmp_error_reply: u32,
    /// Other IP protocols.
    pub other_first_packet: u32,
    pub other_multiple: u32,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp_first_packet: 120,
            tcp_opening: 30,
            tcp_established: 43_200,
            tcp_closing: 120,
            tcp_fin_wait: 45,
            tcp_closed: 20,
            udp_first_packet: 60,
            udp_single: 30,
            udp_multiple: 60,
            icmp_first_packet: 20,
            icmp_error_reply: 10,
            other_first_packet: 60,
            other_multiple: 60,
        }
    }
}

impl Timeouts {
    /// Every field with its name, for validation and display.
    pub fn fields(&self) -> [(&'static str, u32); 13] {
        [
            ("tcp_first_packet", self.tcp_first_packet),
            ("tcp_opening", self.tcp_opening),
            ("tcp_established", self.tcp_established),
            ("tcp_closing", self.tcp_closing),
            ("tcp_fin_wait", self.tcp_fin_wait),
            ("tcp_closed", self.tcp_closed),
            ("udp_first_packet", self.udp_first_packet),
            ("udp_single", self.udp_single),
            ("udp_multiple", self.udp_multiple),
            ("icmp_first_packet", self.icmp_first_packet),
            ("icmp_error_reply", self.icmp_error_reply),
            ("other_first_packet", self.other_first_packet),
            ("other_multiple", self.other_multiple),
        ]
    }
}

/// Longest timeout accepted (7 days).
pub const MAX_TIMEOUT_SECS: u32 = 7 * 24 * 3600;
/// Longest address-set / ruleset name.
pub const MAX_NAME_LEN: usize = 128;

/// Checks a firewall config, appending every problem (paths under `prefix`,
/// e.g. `firewall`) to `out`.
pub fn validate_firewall(fw: &FirewallConfig, prefix: &str, out: &mut Vec<Problem>) {
    let mut add = |path: String, message: String| out.push(Problem { path, message });

    let mut sets: HashMap<&str, usize> = HashMap::new();
    for (i, set) in fw.addrsets.iter().enumerate() {
        let p = format!("{prefix}.addrsets[{i}]");
        check_name(&mut add, &format!("{p}.name"), &set.name);
        if let Some(j) = sets.insert(set.name.as_str(), i) {
            add(
                format!("{p}.name"),
                format!("duplicate address set {:?} (also addrsets[{j}])", set.name),
            );
        }
        for (k, net) in set.addrs.iter().enumerate() {
            if net.network() != net.addr() {
                add(
                    format!("{p}.addrs[{k}]"),
                    format!("{net} has host bits set (did you mean {}?)", net.trunc()),
                );
            }
        }
    }

    let mut ids: HashMap<u32, String> = HashMap::new();
    let mut claim = |add: &mut dyn FnMut(String, String), id: u32, path: String| {
        if let Some(other) = ids.get(&id) {
            add(
                format!("{path}.id"),
                format!("rule id {id} is already used by {other}"),
            );
        } else {
            ids.insert(id, path);
        }
    };

    let mut names = HashSet::new();
    for (i, rs) in fw.l2_rulesets.iter().enumerate() {
        let p = format!("{prefix}.l2_rulesets[{i}]");
        check_name(&mut add, &format!("{p}.name"), &rs.name);
        if !names.insert(rs.name.as_str()) {
            add(
                format!("{p}.name"),
                format!("duplicate ruleset name {:?}", rs.name),
            );
        }
        for (j, r) in rs.rules.iter().enumerate() {
            let rp = format!("{p}.rules[{j}]");
            claim(&mut add, r.id, rp.clone());
            if r.action == Action::Reject {
                add(
                    format!("{rp}.action"),
                    "L2 rules can only accept or drop".into(),
                );
            }
        }
    }
    for (i, rs) in fw.rulesets.iter().enumerate() {
        let p = format!("{prefix}.rulesets[{i}]");
        check_name(&mut add, &format!("{p}.name"), &rs.name);
        if !names.insert(rs.name.as_str()) {
            add(
                format!("{p}.name"),
                format!("duplicate ruleset name {:?}", rs.name),
            );
        }
        for (j, r) in rs.rules.iter().enumerate() {
            let rp = format!("{p}.rules[{j}]");
            claim(&mut add, r.id, rp.clone());
            for (field, refs) in [("sources", &r.sources), ("destinations", &r.destinations)] {
                for (k, a) in refs.iter().enumerate() {
                    match a {
                        AddrRef::AddrSet(name) if !sets.contains_key(name.as_str()) => add(
                            format!("{rp}.{field}[{k}]"),
                            format!("unknown address set {name:?}"),
                        ),
                        AddrRef::Net(net) if net.network() != net.addr() => add(
                            format!("{rp}.{field}[{k}]"),
                            format!("{net} has host bits set (did you mean {}?)", net.trunc()),
                        ),
                        _ => {}
                    }
                }
            }
            for (k, s) in r.services.iter().enumerate() {
                check_service(&mut add, &format!("{rp}.services[{k}]"), s);
            }
        }
    }
    claim(
        &mut add,
        fw.default_rule.id,
        format!("{prefix}.default_rule"),
    );

    for (name, secs) in fw.timeouts.fields() {
        if secs == 0 || secs > MAX_TIMEOUT_SECS {
            add(
                format!("{prefix}.timeouts.{name}"),
                format!("{secs} s is outside 1..={MAX_TIMEOUT_SECS}"),
            );
        }
    }
    if fw.max_flows == Some(0) {
        add(
            format!("{prefix}.max_flows"),
            "must be at least 1 (omit it for no per-instance limit)".into(),
        );
    }
}

fn check_name(add: &mut dyn FnMut(String, String), path: &str, name: &str) {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        add(
            path.to_string(),
            format!("must be 1..={MAX_NAME_LEN} characters"),
        );
    } else if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
    {
        add(
            path.to_string(),
            format!("{name:?} may only contain letters, digits and -_.:"),
        );
    }
}

fn check_service(add: &mut dyn FnMut(String, String), p: &str, s: &Service) {
    for (field, range) in [("port", s.port), ("source_port", s.source_port)] {
        if let Some(r) = range {
            if r.first > r.last {
                add(
                    format!("{p}.{field}"),
                    format!("range {}-{} is reversed", r.first, r.last),
                );
            }
            if !s.protocol.has_ports() {
                add(
                    format!("{p}.{field}"),
                    format!("protocol {} has no ports (use tcp or udp)", s.protocol),
                );
            }
        }
    }
    if (s.icmp_type.is_some() || s.icmp_code.is_some()) && !s.protocol.is_icmp() {
        add(
            format!("{p}.icmp_type"),
            format!(
                "protocol {} has no ICMP type (use icmp or ipv6-icmp)",
                s.protocol
            ),
        );
    }
    if s.icmp_code.is_some() && s.icmp_type.is_none() {
        add(
            format!("{p}.icmp_code"),
            "an ICMP code needs an icmp_type".into(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(fw: &FirewallConfig) -> Vec<String> {
        let mut out = Vec::new();
        validate_firewall(fw, "firewall", &mut out);
        out.into_iter().map(|p| p.path).collect()
    }

    #[test]
    fn parses_seed_like_rule() {
        let json = r#"{
            "addrsets": [{"name": "ip-vm-33", "addrs": ["172.16.10.12/32"]},
                         {"name": "ip-vm-36", "addrs": ["172.16.10.11/32"]}],
            "rulesets": [{"name": "domain-c25", "rules": [
                {"id": 1006, "sources": ["addrset:ip-vm-33"], "destinations": ["addrset:ip-vm-36"],
                 "services": [{"protocol": "tcp", "port": 22}], "action": "accept", "log": true},
                {"id": 1003, "services": [{"protocol": "udp", "port": 67}, {"protocol": 17, "port": "68"}],
                 "action": "accept"}
            ]}],
            "default_rule": {"id": 1002, "action": "reject", "log": true}
        }"#;
        let fw: FirewallConfig = serde_json::from_str(json).unwrap();
        assert!(paths(&fw).is_empty(), "{:?}", paths(&fw));
        let r = &fw.rulesets[0].rules[0];
        assert_eq!(r.direction, Direction::InOut);
        assert_eq!(r.services[0].protocol, Protocol::Number(6));
        assert_eq!(r.services[0].port, Some(PortRange::single(22)));
        let back: FirewallConfig =
            serde_json::from_str(&serde_json::to_string(&fw).unwrap()).unwrap();
        assert_eq!(back, fw);
    }

    #[test]
    fn every_problem_is_listed() {
        let json = r#"{
            "addrsets": [{"name": "a", "addrs": ["10.0.0.1/24"]}, {"name": "a"}],
            "rulesets": [{"name": "s", "rules": [
                {"id": 7, "sources": ["addrset:nope"], "destinations": ["10.1.0.0/16"],
                 "services": [{"protocol": "tcp", "port": "100-10"}, {"protocol": "icmp", "port": 5}],
                 "action": "accept"},
                {"id": 7, "action": "drop"}
            ]}],
            "l2_rulesets": [{"name": "s", "rules": [{"id": 9, "action": "reject"}]}],
            "timeouts": {"tcp_established": 0}
        }"#;
        let fw: FirewallConfig = serde_json::from_str(json).unwrap();
        let mut got = paths(&fw);
        got.sort();
        assert_eq!(
            got,
            [
                "firewall.addrsets[0].addrs[0]",
                "firewall.addrsets[1].name",
                "firewall.l2_rulesets[0].rules[0].action",
                "firewall.rulesets[0].name",
                "firewall.rulesets[0].rules[0].services[0].port",
                "firewall.rulesets[0].rules[0].services[1].port",
                "firewall.rulesets[0].rules[0].sources[0]",
                "firewall.rulesets[0].rules[1].id",
                "firewall.timeouts.tcp_established",
            ]
        );
    }

    #[test]
    fn text_forms_round_trip() {
        for s in [
            "10.0.0.0/24",
            "10.0.0.5",
            "addrset:ip-vm-33",
            "2001:db8::/32",
            "::1",
        ] {
            let a: AddrRef = s.parse().unwrap();
            assert_eq!(a.to_string(), s);
        }
        assert!("addrset:".parse::<AddrRef>().is_err());
        assert!("10.0.0.0/33".parse::<AddrRef>().is_err());
        for s in ["tcp", "udp", "icmp", "ipv6-icmp", "any", "47"] {
            assert_eq!(s.parse::<Protocol>().unwrap().to_string(), s);
        }
        assert!("300".parse::<Protocol>().is_err());
        assert_eq!(
            "1024-65535".parse::<PortRange>().unwrap().to_string(),
            "1024-65535"
        );
        assert!("70000".parse::<PortRange>().is_err());
    }

    /// `AddrSet` as it serialized before `serialize_addrs`: `IpNet`'s own
    /// `Serialize` (the reference the fast path must match byte for byte).
    #[derive(Serialize)]
    struct PlainAddrSet<'a> {
        name: &'a str,
        addrs: &'a [IpNet],
    }

    /// The fast serialization of `addrs` equals `IpNet`'s, compact and
    /// pretty, alone and inside an `AddrSet`, and reads back unchanged.
    fn assert_addrs_json_unchanged(addrs: &[IpNet]) {
        let mut fast = Vec::new();
        serialize_addrs(addrs, &mut serde_json::Serializer::new(&mut fast)).unwrap();
        assert_eq!(
            String::from_utf8(fast).unwrap(),
            serde_json::to_string(addrs).unwrap()
        );
        let set = AddrSet {
            name: "g".into(),
            addrs: addrs.to_vec(),
        };
        let plain = PlainAddrSet { name: "g", addrs };
        let json = serde_json::to_string(&set).unwrap();
        assert_eq!(json, serde_json::to_string(&plain).unwrap());
        assert_eq!(
            serde_json::to_string_pretty(&set).unwrap(),
            serde_json::to_string_pretty(&plain).unwrap()
        );
        let back: AddrSet = serde_json::from_str(&json).unwrap();
        assert_eq!(back, set);
    }

    #[test]
    fn addrset_json_edge_cases() {
        let net = |s: &str| s.parse::<IpNet>().unwrap();
        assert_addrs_json_unchanged(&[]);
        assert_eq!(
            serde_json::to_string(&AddrSet {
                name: "e".into(),
                addrs: Vec::new()
            })
            .unwrap(),
            r#"{"name":"e","addrs":[]}"#
        );
        let edges = [
            "0.0.0.0/0",
            "255.255.255.255/32",
            "10.0.0.1/32",
            "10.0.0.1/24", // host bits set: kept as written
            "9.99.100.199/9",
            "::/0",
            "::/128",
            "2001:db8::/32",
            "::ffff:10.0.0.1/128", // IPv4-mapped: std's dotted form
            "::10.0.0.1/128",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128",
            "1:0:0:2:0:0:0:3/64",
        ];
        let addrs: Vec<IpNet> = edges.iter().map(|s| net(s)).collect();
        assert_addrs_json_unchanged(&addrs);
        let json = serde_json::to_string(&addrs.iter().map(FastNet).collect::<Vec<_>>());
        let want = format!("[\"{}\"]", edges.join("\",\""))
            .replace("::10.0.0.1/128", "::a00:1/128")
            .replace("1:0:0:2:0:0:0:3", "1:0:0:2::3");
        assert_eq!(json.unwrap(), want);
        // Every octet value in every position, every IPv4 prefix length.
        let every_octet: Vec<IpNet> = (0..=255u8)
            .map(|n| {
                let ip = std::net::Ipv4Addr::new(n, n.wrapping_add(85), n.wrapping_add(170), !n);
                IpNet::V4(ipnet::Ipv4Net::new(ip, n % 33).unwrap())
            })
            .collect();
        assert_addrs_json_unchanged(&every_octet);
    }

    mod addrset_json {
        use super::*;
        use proptest::prelude::*;
        use std::net::{Ipv4Addr, Ipv6Addr};

        fn any_net() -> impl Strategy<Value = IpNet> {
            prop_oneof![
                (any::<u32>(), 0u8..=32).prop_map(|(a, len)| {
                    IpNet::V4(ipnet::Ipv4Net::new(Ipv4Addr::from(a), len).unwrap())
                }),
                // Segments drawn mostly from 0 and small values so zero runs
                // (`::`), IPv4-mapped and -compatible forms come up.
                (
                    proptest::array::uniform8(prop_oneof![
                        Just(0u16),
                        Just(0xffff),
                        0u16..16,
                        any::<u16>()
                    ]),
                    0u8..=128
                )
                    .prop_map(|(seg, len)| {
                        IpNet::V6(ipnet::Ipv6Net::new(Ipv6Addr::from(seg), len).unwrap())
                    }),
            ]
        }

        proptest! {
            #[test]
            fn addrset_json_matches_ipnet_serialize(
                addrs in proptest::collection::vec(any_net(), 0..40)
            ) {
                assert_addrs_json_unchanged(&addrs);
            }
        }
    }
}
