//! keepalived.conf's blocks read into [`VirtualServer`]s, with a
//! [`Node`] per server saying where each part was written.
//!
//! Values are read by the arity the keyword tables give
//! ([`super::keywords`]), not by line, so a block written on one line
//! reads as written on many. An unknown keyword takes the rest of its line
//! (and the `{ ... }` block after it, if any) and is a warning, as
//! keepalived logs it; at the top level it is an error. `virtual_server
//! group NAME` is read like any virtual server and becomes one per member
//! of the `virtual_server_group NAME` (defined before or after it). A
//! real server runs one checker: a second is an error (keepalived would
//! run both; here the second's verdicts would have nowhere to go). The
//! checker-timing keywords of a `virtual_server` or `real_server` block
//! (`connect_timeout`, `retry`, `delay_before_retry`, `delay_loop` for a
//! real server) are defaults for the checkers below it, as is
//! `virtualhost` for HTTP_GET / SSL_GET.

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;

use control::lb::{
    CheckTiming, Endpoint, ForwardKind, HealthCheck, LbProtocol, MAX_WEIGHT, RealServer, Scheduler,
    UrlCheck, VirtualServer, defaults,
};

use super::keywords::{self, Arity, Keyword, Support};
use super::spans::Node;
use super::token::Kind;
use super::{Finding, Pos, Severity, Tok};

/// Errors (and warnings) of reading the blocks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("unknown keyword {0:?} ignored")]
    Unknown(String),
    #[error(
        "unknown section {0:?} (virtual_server and virtual_server_group are read, the VRRP sections ignored)"
    )]
    UnknownSection(String),
    #[error("ignored: {kw} ({why})")]
    Ignored { kw: String, why: &'static str },
    #[error("{kw}: {why}")]
    Refused { kw: String, why: String },
    #[error("{kw}: missing value ({expected})")]
    Missing { kw: String, expected: String },
    #[error("{kw}: a {{ block must follow")]
    NoBlock { kw: String },
    #[error("{kw}: its block is not closed before the end of the input")]
    Unclosed { kw: String },
    #[error("unexpected {0:?}")]
    Stray(&'static str),
    #[error("{kw}: {msg}")]
    Bad { kw: String, msg: String },
    #[error(
        "real_server {rs}: {second} is a second checker; one checker per real server is run here ({first} at line {line} is kept)"
    )]
    SecondChecker {
        rs: String,
        second: String,
        first: String,
        line: u32,
    },
    #[error(
        "{0}: read but not applied (a keyword this reader lists as supported; please report it)"
    )]
    NotApplied(String),
    #[error("virtual_server group {0:?}: no virtual_server_group of that name")]
    UnknownGroup(String),
    #[error("virtual_server_group {name:?} is already defined at line {line}")]
    DuplicateGroup { name: String, line: u32 },
    #[error("virtual_server_group {0:?} has no members")]
    EmptyGroup(String),
    #[error(
        "more than {MAX_VIRTUAL_SERVERS} virtual servers (groups included); the rest are not read"
    )]
    TooMany,
    #[error(
        "more than {MAX_EXPANDED_REAL_SERVERS} real servers in all (each member of a group has them all); the rest are not read"
    )]
    TooManyRealServers,
}

/// Virtual servers one file may make (group ranges multiply them): past
/// it, reading stops with an error.
pub const MAX_VIRTUAL_SERVERS: usize = 4096;

/// Real servers of all the virtual servers one file may make: a virtual
/// server of a group has its real servers once per member, so a few
/// megabytes of text could otherwise make hundreds of millions of them
/// before validation sees one. Past it, reading stops with an error.
pub const MAX_EXPANDED_REAL_SERVERS: usize = 1 << 20;

/// The virtual servers read (each with where its parts were written) and
/// what was found on the way.
#[derive(Debug, Default)]
pub struct Parsed {
    pub servers: Vec<(VirtualServer, Node)>,
    /// Per server: whether some real server of it was dropped (a bad
    /// address), so "needs a real server" would say nothing new.
    pub partial: Vec<bool>,
    pub findings: Vec<Finding>,
}

/// Reads `tokens`.
pub fn parse(tokens: &[Tok]) -> Parsed {
    let mut p = Parser {
        toks: tokens,
        i: 0,
        findings: Vec::new(),
        groups: HashMap::new(),
        entries: Vec::new(),
    };
    p.top();
    p.finish()
}

/// How a virtual server is addressed.
enum Head {
    Addr(Ipv4Addr, u16),
    Group(String),
    /// Bad address or refused form: read for its problems, then dropped.
    Invalid,
}

/// A virtual server being read.
struct Draft {
    head: Head,
    vs: VirtualServer,
    node: Node,
    /// Checker defaults of the block (timing, virtualhost) and where.
    defaults: Defaults,
    partial: bool,
}

/// Checker settings given above the checker (in `virtual_server` or
/// `real_server`), and where.
struct Defaults {
    timing: CheckTiming,
    virtualhost: Option<String>,
    node: Node,
}

/// A `virtual_server_group`: its entries as written (a range stays one
/// entry until a virtual server uses the group, so a group costs what its
/// text does however many addresses it names).
struct Group {
    at: Pos,
    members: Vec<Member>,
    /// Virtual servers one use of the group makes (every address of every
    /// range).
    count: usize,
    /// Entries written, good or bad.
    written: usize,
}

/// One entry of a group: `A.B.C.D-E PORT` (`E` = `D` for one address).
struct Member {
    first: Ipv4Addr,
    last: u8,
    port: u16,
    at: Pos,
}

impl Member {
    fn addrs(&self) -> impl Iterator<Item = Ipv4Addr> {
        let [a, b, c, d] = self.first.octets();
        (d..=self.last).map(move |x| Ipv4Addr::new(a, b, c, x))
    }

    fn len(&self) -> usize {
        usize::from(self.last.saturating_sub(self.first.octets()[3])) + 1
    }
}

enum Step<'a> {
    /// The block's `}` (or the end of the input).
    Done,
    /// Something handled on the spot (unknown, ignored, refused, stray).
    Skip,
    Kw {
        kw: &'static Keyword,
        tok: &'a Tok,
        args: Vec<&'a Tok>,
    },
}

struct Parser<'a> {
    toks: &'a [Tok],
    i: usize,
    findings: Vec<Finding>,
    groups: HashMap<String, Group>,
    entries: Vec<Draft>,
}

fn bad(kw: &Tok, msg: impl Into<String>) -> ParseError {
    ParseError::Bad {
        kw: kw.text.clone(),
        msg: msg.into(),
    }
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<&'a Tok> {
        self.toks.get(self.i)
    }

    fn next(&mut self) -> Option<&'a Tok> {
        let t = self.toks.get(self.i)?;
        self.i += 1;
        Some(t)
    }

    fn error(&mut self, at: Pos, e: ParseError) {
        self.findings.push(Finding {
            pos: at,
            severity: Severity::Error,
            message: e.to_string(),
        });
    }

    fn warn(&mut self, at: Pos, e: ParseError) {
        self.findings.push(Finding {
            pos: at,
            severity: Severity::Warning,
            message: e.to_string(),
        });
    }

    /// A keyword the tables say is applied that no arm of its block
    /// applies: an error, not a silent drop (a test reads every applied
    /// keyword of every block, so none should reach here).
    fn not_applied(&mut self, k: &Tok) {
        self.error(k.pos, ParseError::NotApplied(k.text.clone()));
    }

    /// The checker-timing keyword `k` (one of [`TIMING_KEYWORDS`]) with
    /// the value `v`, into `t`.
    fn timing(&mut self, t: &mut CheckTiming, node: &mut Node, k: &Tok, v: &Tok) {
        let Some(n) = self.ok(k.pos, number(k, v)) else {
            return;
        };
        if !set_timing(t, node, &k.text, n, k.pos) {
            self.not_applied(k);
        }
    }

    /// Reports `r`'s error at `at`; the value if there was one.
    fn ok<T>(&mut self, at: Pos, r: Result<T, ParseError>) -> Option<T> {
        r.map_err(|e| self.error(at, e)).ok()
    }

    fn next_is(&self, kind: Kind) -> bool {
        self.peek().is_some_and(|t| t.kind == kind)
    }

    /// Skips the `{ ... }` block that starts here, if one does.
    fn skip_block(&mut self, opener: &Tok) {
        if !self.next_is(Kind::Open) {
            return;
        }
        self.i += 1;
        let mut depth = 1usize;
        while let Some(t) = self.next() {
            match t.kind {
                Kind::Open => depth += 1,
                Kind::Close => {
                    depth -= 1;
                    if depth == 0 {
                        return;
                    }
                }
                _ => {}
            }
        }
        let kw = opener.text.clone();
        self.error(opener.pos, ParseError::Unclosed { kw });
    }

    /// The words left on `kw`'s line.
    fn rest_of_line(&mut self, kw: &Tok) -> Vec<&'a Tok> {
        let mut out = Vec::new();
        while let Some(t) = self.peek() {
            let same_line = t.pos.file == kw.pos.file && t.pos.line == kw.pos.line;
            if !same_line || matches!(t.kind, Kind::Open | Kind::Close) {
                break;
            }
            out.push(t);
            self.i += 1;
        }
        out
    }

    /// `kw`'s values, by its arity; `tables`: the block's keywords (an
    /// optional value is the next token if it looks like a number, or is
    /// on the keyword's line and is not a keyword of the block).
    fn args(
        &mut self,
        kw: &Keyword,
        tok: &Tok,
        tables: &[&'static [Keyword]],
    ) -> Result<Vec<&'a Tok>, ParseError> {
        let is_word = |t: &Tok| matches!(t.kind, Kind::Word | Kind::Quoted);
        let is_number = |t: &Tok| {
            t.kind == Kind::Word
                && !t.text.is_empty()
                && t.text.split('-').count() <= 2
                && t.text
                    .split('-')
                    .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        };
        let n = match kw.arity {
            Arity::Flag => return Ok(Vec::new()),
            Arity::Line => return Ok(self.rest_of_line(tok)),
            Arity::OptionalNumber => {
                let t = self.peek().filter(|t| {
                    let numeric = t
                        .text
                        .trim_start_matches('-')
                        .bytes()
                        .all(|b| b.is_ascii_digit());
                    let same_line = t.pos.file == tok.pos.file && t.pos.line == tok.pos.line;
                    t.kind == Kind::Word
                        && (numeric || (same_line && keywords::find(tables, &t.text).is_none()))
                });
                self.i += usize::from(t.is_some());
                return Ok(t.into_iter().collect());
            }
            Arity::Numbers => {
                let mut out = Vec::new();
                while let Some(t) = self.peek().filter(|t| is_number(t)) {
                    out.push(t);
                    self.i += 1;
                }
                if out.is_empty() {
                    return Err(ParseError::Missing {
                        kw: tok.text.clone(),
                        expected: "one or more numbers".into(),
                    });
                }
                return Ok(out);
            }
            Arity::Values(n) | Arity::Block(n) | Arity::OptionalBlock(n) => usize::from(n),
        };
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            match self.peek().filter(|t| is_word(t)) {
                Some(t) => {
                    out.push(t);
                    self.i += 1;
                }
                None => {
                    let expected = match n {
                        1 => "1 value".to_string(),
                        n => format!("{n} values"),
                    };
                    return Err(ParseError::Missing {
                        kw: tok.text.clone(),
                        expected,
                    });
                }
            }
        }
        Ok(out)
    }

    /// The next keyword of a block read with `tables` (`opener`: the
    /// keyword that opened the block; `None`: the top level), its values
    /// read and, for a block keyword, its `{` consumed.
    fn step(&mut self, tables: &[&'static [Keyword]], opener: Option<&'a Tok>) -> Step<'a> {
        let Some(t) = self.next() else {
            if let Some(o) = opener {
                let kw = o.text.clone();
                self.error(o.pos, ParseError::Unclosed { kw });
            }
            return Step::Done;
        };
        match t.kind {
            Kind::Close if opener.is_some() => return Step::Done,
            Kind::Close => {
                self.error(t.pos, ParseError::Stray("}"));
                return Step::Skip;
            }
            Kind::Open => {
                self.error(t.pos, ParseError::Stray("{"));
                self.i -= 1;
                self.skip_block(t);
                return Step::Skip;
            }
            Kind::Word | Kind::Quoted => {}
        }
        let Some(kw) = keywords::find(tables, &t.text) else {
            let _ = self.rest_of_line(t);
            self.skip_block(t);
            if opener.is_some() {
                self.warn(t.pos, ParseError::Unknown(t.text.clone()));
            } else {
                self.error(t.pos, ParseError::UnknownSection(t.text.clone()));
            }
            return Step::Skip;
        };
        let args = self.args(kw, t, tables);
        match kw.support {
            Support::Ignored(why) => {
                self.skip_block(t);
                let kw = t.text.clone();
                self.warn(t.pos, ParseError::Ignored { kw, why });
                Step::Skip
            }
            Support::Refused(why) => {
                self.skip_block(t);
                let kw = t.text.clone();
                let why = why.to_string();
                self.error(t.pos, ParseError::Refused { kw, why });
                Step::Skip
            }
            Support::Applied => {
                let Some(args) = self.ok(t.pos, args) else {
                    return Step::Skip;
                };
                if let Arity::Block(_) = kw.arity
                    && !self.next_is(Kind::Open)
                {
                    let kw = t.text.clone();
                    self.error(t.pos, ParseError::NoBlock { kw });
                    return Step::Skip;
                }
                Step::Kw { kw, tok: t, args }
            }
        }
    }

    /// Consumes the `{` of a block keyword (present: checked by `step`)
    /// or of an optional block; whether there was one.
    fn open(&mut self) -> bool {
        let open = self.next_is(Kind::Open);
        self.i += usize::from(open);
        open
    }

    fn top(&mut self) {
        loop {
            match self.step(&[keywords::TOP], None) {
                Step::Done => return,
                Step::Skip => {}
                Step::Kw { kw, tok, args } => match kw.name {
                    "virtual_server" => self.virtual_server(tok, &args),
                    "virtual_server_group" => self.group(tok, &args),
                    // `include` is the loader's; a quoted "include" is not
                    // an include.
                    _ => {
                        self.warn(tok.pos, ParseError::Unknown(tok.text.clone()));
                    }
                },
            }
        }
    }

    fn virtual_server(&mut self, tok: &'a Tok, args: &[&'a Tok]) {
        let [a, b] = args else {
            return;
        };
        let head = match a.text.as_str() {
            "group" => Head::Group(b.text.clone()),
            "fwmark" => {
                let why =
                    "firewall-mark virtual servers are not supported (give an address and port)";
                self.error(
                    tok.pos,
                    ParseError::Refused {
                        kw: "virtual_server fwmark".into(),
                        why: why.into(),
                    },
                );
                Head::Invalid
            }
            _ => {
                let ip = self.ok(a.pos, ip(tok, a));
                let port = self.ok(b.pos, port(tok, b));
                match (ip, port) {
                    (Some(ip), Some(port)) => Head::Addr(ip, port),
                    _ => Head::Invalid,
                }
            }
        };
        let (vip, vport) = match head {
            Head::Addr(ip, port) => (ip, port),
            _ => (Ipv4Addr::UNSPECIFIED, 0),
        };
        let mut d = Draft {
            head,
            vs: VirtualServer::new(vip, vport, LbProtocol::Tcp, Scheduler::Wlc),
            node: Node::new(tok.pos),
            defaults: Defaults {
                timing: CheckTiming::default(),
                virtualhost: None,
                node: Node::new(tok.pos),
            },
            partial: false,
        };
        d.node.set("vip", a.pos);
        d.node.set("port", b.pos);
        d.node.child("real_servers", tok.pos);
        self.open();
        loop {
            match self.step(&[keywords::VIRTUAL_SERVER], Some(tok)) {
                Step::Done => break,
                Step::Skip => {}
                Step::Kw { kw, tok: k, args } => self.vs_keyword(&mut d, kw, k, &args),
            }
        }
        // The block's checker defaults apply to every checker below it,
        // wherever they were written in the block.
        let Draft {
            vs, node, defaults, ..
        } = &mut d;
        for (rs, rn) in vs
            .real_servers
            .iter_mut()
            .zip(node.child("real_servers", tok.pos).items_mut())
        {
            if let Some(c) = &mut rs.check {
                inherit(c, rn.child("check", tok.pos), defaults);
            }
        }
        self.entries.push(d);
    }

    fn vs_keyword(&mut self, d: &mut Draft, kw: &Keyword, k: &'a Tok, args: &[&'a Tok]) {
        let at = k.pos;
        let first = args.first().copied();
        match (kw.name, first) {
            ("real_server", _) => self.real_server(d, k, args),
            ("delay_loop", Some(v)) => {
                if let Some(n) = self.ok(at, number(k, v)) {
                    d.vs.delay_loop = Some(n);
                    d.node.set("delay_loop", at);
                }
            }
            ("lb_algo" | "lvs_sched", Some(v)) => {
                if let Some(s) = self.ok(at, scheduler(k, v)) {
                    d.vs.scheduler = s;
                    d.node.set("scheduler", at);
                }
            }
            ("lb_kind" | "lvs_method", Some(v)) => {
                if let Some(kind) = self.ok(at, forward_kind(k, v)) {
                    d.vs.kind = kind;
                    d.node.set("kind", at);
                }
            }
            ("persistence_timeout" | "persistent_timeout", v) => {
                let n = match v {
                    Some(v) => self.ok(at, number(k, v)),
                    None => Some(defaults::PERSISTENCE_TIMEOUT),
                };
                if let Some(n) = n {
                    d.vs.persistence_timeout = Some(n);
                    d.node.set("persistence_timeout", at);
                }
            }
            ("persistence_granularity", Some(v)) => {
                if let Some(g) = self.ok(at, granularity(k, v)) {
                    d.vs.persistence_granularity = g;
                    d.node.set("persistence_granularity", at);
                }
            }
            ("protocol", Some(v)) => {
                if let Some(p) = self.ok(at, protocol(k, v)) {
                    d.vs.protocol = p;
                    d.node.set("protocol", at);
                }
            }
            ("quorum", Some(v)) => {
                if let Some(n) = self.ok(at, number(k, v)) {
                    d.vs.quorum = n;
                    d.node.set("quorum", at);
                }
            }
            ("hysteresis", Some(v)) => {
                if let Some(n) = self.ok(at, number(k, v)) {
                    d.vs.hysteresis = n;
                    d.node.set("hysteresis", at);
                }
            }
            ("sorry_server", Some(v)) => {
                let ip = self.ok(at, ip(k, v));
                let port = match args.get(1) {
                    Some(p) => self.ok(at, port(k, p)),
                    None => None,
                };
                if let (Some(ip), Some(port)) = (ip, port) {
                    d.vs.sorry_server = Some(Endpoint { ip, port });
                    d.node.set("sorry_server", at);
                }
            }
            ("inhibit_on_failure", _) => {
                d.vs.inhibit_on_failure = true;
                d.node.set("inhibit_on_failure", at);
            }
            ("virtualhost", Some(v)) => {
                d.defaults.virtualhost = Some(v.text.clone());
                d.defaults.node.set("virtualhost", at);
            }
            (name, Some(v)) if is_timing(name) => {
                let Defaults { timing, node, .. } = &mut d.defaults;
                self.timing(timing, node, k, v);
            }
            _ => self.not_applied(k),
        }
    }

    fn real_server(&mut self, d: &mut Draft, tok: &'a Tok, args: &[&'a Tok]) {
        let [a, b] = args else {
            return;
        };
        let ip = self.ok(a.pos, ip(tok, a));
        let port = self.ok(b.pos, port(tok, b));
        let mut rs = RealServer::new(ip.unwrap_or(Ipv4Addr::UNSPECIFIED), port.unwrap_or(0));
        let mut node = Node::new(tok.pos);
        node.set("ip", a.pos);
        node.set("port", b.pos);
        let mut own = Defaults {
            timing: CheckTiming::default(),
            virtualhost: None,
            node: Node::new(tok.pos),
        };
        let name = format!("{} {}", a.text, b.text);
        let mut first: Option<(String, u32)> = None;
        if self.open() {
            loop {
                let (kw, k, args) = match self.step(&[keywords::REAL_SERVER], Some(tok)) {
                    Step::Done => break,
                    Step::Skip => continue,
                    Step::Kw { kw, tok, args } => (kw, tok, args),
                };
                let at = k.pos;
                match (kw.name, args.first()) {
                    ("TCP_CHECK" | "HTTP_GET" | "SSL_GET" | "MISC_CHECK", _) => {
                        let (check, cn) = self.checker(k);
                        if let Some((kind, line)) = &first {
                            let e = ParseError::SecondChecker {
                                rs: name.clone(),
                                second: k.text.clone(),
                                first: kind.clone(),
                                line: *line,
                            };
                            self.error(at, e);
                        } else {
                            first = Some((k.text.clone(), at.line));
                            rs.check = Some(check);
                            *node.child("check", at) = cn;
                        }
                    }
                    ("weight", Some(v)) => {
                        if let Some(w) = self.ok(at, weight(k, v)) {
                            rs.weight = w;
                            node.set("weight", at);
                        }
                    }
                    ("inhibit_on_failure", _) => {
                        rs.inhibit_on_failure = Some(true);
                        node.set("inhibit_on_failure", at);
                    }
                    ("virtualhost", Some(v)) => {
                        own.virtualhost = Some(v.text.clone());
                        own.node.set("virtualhost", at);
                    }
                    (name, Some(v)) if is_timing(name) => {
                        self.timing(&mut own.timing, &mut own.node, k, v);
                    }
                    _ => self.not_applied(k),
                }
            }
        }
        if let Some(c) = &mut rs.check {
            inherit(c, node.child("check", tok.pos), &own);
        }
        if ip.is_none() || port.is_none() {
            d.partial = true;
            return;
        }
        d.vs.real_servers.push(rs);
        d.node.child("real_servers", tok.pos).push(node);
    }

    /// A checker block (its `{` consumed by `step`).
    fn checker(&mut self, tok: &'a Tok) -> (HealthCheck, Node) {
        self.open();
        let mut node = Node::new(tok.pos);
        let mut timing = CheckTiming::default();
        let mut urls = Vec::new();
        let mut virtualhost = None;
        let (mut path, mut timeout, mut dynamic) = (String::new(), None, false);
        let tables = keywords::checker(&tok.text);
        loop {
            let (kw, k, args) = match self.step(&tables, Some(tok)) {
                Step::Done => break,
                Step::Skip => continue,
                Step::Kw { kw, tok, args } => (kw, tok, args),
            };
            let at = k.pos;
            match (kw.name, args.first()) {
                ("url", _) => {
                    let (u, un) = self.url(k);
                    urls.push(u);
                    node.child("urls", at).push(un);
                }
                ("virtualhost", Some(v)) => {
                    virtualhost = Some(v.text.clone());
                    node.set("virtualhost", at);
                }
                ("misc_path", Some(v)) => {
                    path = v.text.clone();
                    node.set("path", at);
                }
                ("misc_timeout", Some(v)) => {
                    if let Some(n) = self.ok(at, number(k, v)) {
                        timeout = Some(n);
                        node.set("timeout", at);
                    }
                }
                ("misc_dynamic", _) => {
                    dynamic = true;
                    node.set("dynamic", at);
                }
                ("connect_ip", Some(v)) => {
                    if let Some(ip) = self.ok(at, ip(k, v)) {
                        timing.connect_ip = Some(ip);
                        node.set("connect_ip", at);
                    }
                }
                ("connect_port", Some(v)) => {
                    if let Some(p) = self.ok(at, port(k, v)) {
                        timing.connect_port = Some(p);
                        node.set("connect_port", at);
                    }
                }
                (name, Some(v)) if is_timing(name) => self.timing(&mut timing, &mut node, k, v),
                _ => self.not_applied(k),
            }
        }
        let check = match tok.text.as_str() {
            "HTTP_GET" | "SSL_GET" => HealthCheck::Http {
                ssl: tok.text == "SSL_GET",
                urls,
                virtualhost,
                timing,
            },
            "MISC_CHECK" => HealthCheck::Misc {
                path,
                timeout,
                dynamic,
                timing,
            },
            _ => HealthCheck::Tcp { timing },
        };
        (check, node)
    }

    /// A `url` block; its status codes sorted, each once (however many
    /// times the ranges name it).
    fn url(&mut self, tok: &'a Tok) -> (UrlCheck, Node) {
        self.open();
        let mut node = Node::new(tok.pos);
        let mut u = UrlCheck {
            path: String::new(),
            status_code: Vec::new(),
            digest: None,
        };
        let mut codes = BTreeSet::new();
        loop {
            let (kw, k, args) = match self.step(&[keywords::URL], Some(tok)) {
                Step::Done => break,
                Step::Skip => continue,
                Step::Kw { kw, tok, args } => (kw, tok, args),
            };
            let at = k.pos;
            match (kw.name, args.first()) {
                ("path", Some(v)) => {
                    u.path = v.text.clone();
                    node.set("path", at);
                }
                ("digest", Some(v)) => {
                    u.digest = Some(v.text.to_ascii_lowercase());
                    node.set("digest", at);
                }
                ("status_code", _) => {
                    for v in &args {
                        if let Some(range) = self.ok(at, status_codes(k, v)) {
                            codes.extend(range);
                        }
                    }
                    node.set("status_code", at);
                }
                _ => self.not_applied(k),
            }
        }
        u.status_code = codes.into_iter().collect();
        (u, node)
    }

    /// `virtual_server_group NAME { IP PORT  IP-RANGE PORT ... }`.
    fn group(&mut self, tok: &'a Tok, args: &[&'a Tok]) {
        let Some(name) = args.first() else {
            return;
        };
        self.open();
        let mut members: Vec<Member> = Vec::new();
        let mut written = 0usize;
        loop {
            let Some(t) = self.next() else {
                let kw = tok.text.clone();
                self.error(tok.pos, ParseError::Unclosed { kw });
                break;
            };
            match t.kind {
                Kind::Close => break,
                Kind::Open => {
                    self.error(t.pos, ParseError::Stray("{"));
                    self.i -= 1;
                    self.skip_block(t);
                    continue;
                }
                Kind::Word | Kind::Quoted => {}
            }
            let value = self
                .peek()
                .filter(|v| matches!(v.kind, Kind::Word | Kind::Quoted));
            let Some(value) = value else {
                let e = ParseError::Missing {
                    kw: t.text.clone(),
                    expected: "IP PORT, or IP-LAST PORT".into(),
                };
                self.error(t.pos, e);
                continue;
            };
            self.i += 1;
            written += 1;
            if t.text == "fwmark" {
                let why = "firewall-mark members are not supported (give an address and port)";
                let e = ParseError::Refused {
                    kw: "fwmark".into(),
                    why: why.into(),
                };
                self.error(t.pos, e);
                continue;
            }
            let range = self.ok(t.pos, ip_range(t));
            let port = self.ok(t.pos, port(t, value));
            if let (Some((first, last)), Some(port)) = (range, port) {
                members.push(Member {
                    first,
                    last,
                    port,
                    at: t.pos,
                });
            }
        }
        if let Some(g) = self.groups.get(&name.text) {
            let line = g.at.line;
            let e = ParseError::DuplicateGroup {
                name: name.text.clone(),
                line,
            };
            self.error(tok.pos, e);
            return;
        }
        let g = Group {
            at: tok.pos,
            count: members.iter().map(Member::len).sum(),
            members,
            written,
        };
        self.groups.insert(name.text.clone(), g);
    }

    /// The virtual servers in the order written, each group use expanded
    /// to its members (at most [`MAX_VIRTUAL_SERVERS`] in all, with at
    /// most [`MAX_EXPANDED_REAL_SERVERS`] real servers).
    fn finish(mut self) -> Parsed {
        let mut out = Parsed::default();
        let mut real_servers = 0usize;
        for g in self.groups.iter().filter(|(_, g)| g.written == 0) {
            let e = ParseError::EmptyGroup(g.0.clone());
            self.findings.push(Finding {
                pos: g.1.at,
                severity: Severity::Error,
                message: e.to_string(),
            });
        }
        for d in std::mem::take(&mut self.entries) {
            let left = MAX_VIRTUAL_SERVERS.saturating_sub(out.servers.len());
            let wants = match &d.head {
                Head::Invalid => 0,
                Head::Addr(..) => 1,
                Head::Group(name) => self.groups.get(name).map_or(0, |g| g.count),
            };
            if wants > left {
                self.error(d.node.at, ParseError::TooMany);
                break;
            }
            real_servers =
                real_servers.saturating_add(wants.saturating_mul(d.vs.real_servers.len()));
            if real_servers > MAX_EXPANDED_REAL_SERVERS {
                self.error(d.node.at, ParseError::TooManyRealServers);
                break;
            }
            match &d.head {
                Head::Invalid => {}
                Head::Addr(..) => {
                    out.servers.push((d.vs, d.node));
                    out.partial.push(d.partial);
                }
                Head::Group(name) => {
                    let Some(g) = self.groups.get(name) else {
                        self.error(d.node.at, ParseError::UnknownGroup(name.clone()));
                        continue;
                    };
                    for m in &g.members {
                        for ip in m.addrs() {
                            let mut vs = d.vs.clone();
                            vs.vip = ip;
                            vs.port = m.port;
                            let mut node = d.node.clone();
                            node.set("vip", m.at);
                            node.set("port", m.at);
                            out.servers.push((vs, node));
                            out.partial.push(d.partial);
                        }
                    }
                }
            }
        }
        out.findings = self.findings;
        out
    }
}

/// The checker-timing keywords: a checker's own, or the defaults of the
/// `real_server` or `virtual_server` block around it ([`set_timing`]).
const TIMING_KEYWORDS: [&str; 5] = [
    "connect_timeout",
    "retry",
    "nb_get_retry",
    "delay_before_retry",
    "delay_loop",
];

fn is_timing(name: &str) -> bool {
    TIMING_KEYWORDS.contains(&name)
}

/// Sets the checker-timing keyword `name` (either spelling of retry);
/// false for a keyword that is not one.
fn set_timing(t: &mut CheckTiming, node: &mut Node, name: &str, n: u32, at: Pos) -> bool {
    let field = match name {
        "connect_timeout" => {
            t.connect_timeout = Some(n);
            "connect_timeout"
        }
        "retry" | "nb_get_retry" => {
            t.retry = Some(n);
            "retry"
        }
        "delay_before_retry" => {
            t.delay_before_retry = Some(n);
            "delay_before_retry"
        }
        "delay_loop" => {
            t.delay_loop = Some(n);
            "delay_loop"
        }
        _ => return false,
    };
    node.set(field, at);
    true
}

/// Fills what `c` leaves unset from the defaults `d` of an enclosing
/// block, recording where each came from.
fn inherit(c: &mut HealthCheck, node: &mut Node, d: &Defaults) {
    let t = match c {
        HealthCheck::Tcp { timing } | HealthCheck::Misc { timing, .. } => timing,
        HealthCheck::Http {
            timing,
            virtualhost,
            ..
        } => {
            if virtualhost.is_none() && d.virtualhost.is_some() {
                virtualhost.clone_from(&d.virtualhost);
                if let Some(at) = d.node.get("virtualhost") {
                    node.set("virtualhost", at);
                }
            }
            timing
        }
    };
    let pairs: [(&mut Option<u32>, Option<u32>, &'static str); 4] = [
        (
            &mut t.connect_timeout,
            d.timing.connect_timeout,
            "connect_timeout",
        ),
        (&mut t.retry, d.timing.retry, "retry"),
        (
            &mut t.delay_before_retry,
            d.timing.delay_before_retry,
            "delay_before_retry",
        ),
        (&mut t.delay_loop, d.timing.delay_loop, "delay_loop"),
    ];
    for (mine, theirs, field) in pairs {
        if mine.is_none() && theirs.is_some() {
            *mine = theirs;
            if let Some(at) = d.node.get(field) {
                node.set(field, at);
            }
        }
    }
}

fn ip(kw: &Tok, v: &Tok) -> Result<Ipv4Addr, ParseError> {
    v.text
        .parse()
        .map_err(|_| bad(kw, format!("{:?} is not an IPv4 address", v.text)))
}

/// `A.B.C.D` or `A.B.C.D-E` (the last byte from D to E): the first
/// address and the last byte.
fn ip_range(v: &Tok) -> Result<(Ipv4Addr, u8), ParseError> {
    let (first, last) = match v.text.split_once('-') {
        Some((a, e)) => (a, Some(e)),
        None => (v.text.as_str(), None),
    };
    let ip: Ipv4Addr = first
        .parse()
        .map_err(|_| bad(v, format!("{:?} is not an IPv4 address or range", v.text)))?;
    let d = ip.octets()[3];
    let e = match last {
        None => d,
        Some(e) => e.parse::<u8>().ok().filter(|e| *e >= d).ok_or_else(|| {
            bad(
                v,
                format!("{e:?} is not a last byte from {d} to 255 (ranges are A.B.C.D-E)"),
            )
        })?,
    };
    Ok((ip, e))
}

/// `v` as a whole number (an optional sign, then digits); `what` names
/// what it should be when it is not one (`a number`, `a port`). Past 64
/// bits it is taken as far as it goes, so the caller's range check says
/// it is too large (not that it is not a number).
fn integer(kw: &Tok, v: &Tok, what: &str) -> Result<i64, ParseError> {
    let t = v.text.as_str();
    let digits = t.strip_prefix(['-', '+']).unwrap_or(t);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(kw, format!("{t:?} is not {what}")));
    }
    let saturated = if t.starts_with('-') {
        i64::MIN
    } else {
        i64::MAX
    };
    Ok(t.parse().unwrap_or(saturated))
}

fn port(kw: &Tok, v: &Tok) -> Result<u16, ParseError> {
    let n = integer(kw, v, "a port")?;
    u16::try_from(n).map_err(|_| bad(kw, format!("{} is not a port (0-65535)", v.text)))
}

fn number(kw: &Tok, v: &Tok) -> Result<u32, ParseError> {
    match integer(kw, v, "a number")? {
        n if n < 0 => Err(bad(kw, format!("{} is negative", v.text))),
        n => u32::try_from(n).map_err(|_| bad(kw, format!("{} is too large", v.text))),
    }
}

fn weight(kw: &Tok, v: &Tok) -> Result<u32, ParseError> {
    match integer(kw, v, "a number")? {
        n if n < 0 => Err(bad(kw, format!("{} is negative (0-{MAX_WEIGHT})", v.text))),
        n => u32::try_from(n)
            .ok()
            .filter(|w| *w <= MAX_WEIGHT)
            .ok_or_else(|| {
                bad(
                    kw,
                    format!("{} is above the largest weight ({MAX_WEIGHT})", v.text),
                )
            }),
    }
}

fn scheduler(kw: &Tok, v: &Tok) -> Result<Scheduler, ParseError> {
    if let Some(s) = Scheduler::from_name(&v.text) {
        return Ok(s);
    }
    let known: Vec<&str> = Scheduler::ALL.iter().map(|s| s.name()).collect();
    let what = if matches!(v.text.as_str(), "fo" | "ovf" | "twos") {
        "is not supported"
    } else {
        "is not a scheduler"
    };
    Err(bad(
        kw,
        format!("{:?} {what} ({})", v.text, known.join(" ")),
    ))
}

fn forward_kind(kw: &Tok, v: &Tok) -> Result<ForwardKind, ParseError> {
    match v.text.to_ascii_uppercase().as_str() {
        "NAT" => Ok(ForwardKind::Nat),
        "FNAT" | "FULLNAT" => Ok(ForwardKind::Fnat),
        "DR" | "TUN" => Err(bad(
            kw,
            format!(
                "{} is not supported (yet): NAT and FNAT (full-NAT) are",
                v.text
            ),
        )),
        _ => Err(bad(kw, format!("{:?} is not a method (NAT, FNAT)", v.text))),
    }
}

fn protocol(kw: &Tok, v: &Tok) -> Result<LbProtocol, ParseError> {
    match v.text.to_ascii_uppercase().as_str() {
        "TCP" => Ok(LbProtocol::Tcp),
        "UDP" => Ok(LbProtocol::Udp),
        "SCTP" => Err(bad(kw, "SCTP is not supported (TCP and UDP are)")),
        _ => Err(bad(
            kw,
            format!("{:?} is not a protocol (TCP, UDP)", v.text),
        )),
    }
}

/// A dotted netmask (`255.255.255.0`) or a prefix length (`24`, `/24`).
fn granularity(kw: &Tok, v: &Tok) -> Result<u8, ParseError> {
    if v.text.contains('.') {
        let mask: Ipv4Addr = v
            .text
            .parse()
            .map_err(|_| bad(kw, format!("{:?} is not a netmask", v.text)))?;
        let m = u32::from(mask);
        if m.leading_ones() + m.trailing_zeros() < 32 {
            return Err(bad(kw, format!("{mask} is not a contiguous netmask")));
        }
        return u8::try_from(m.leading_ones()).map_err(|_| bad(kw, "netmask"));
    }
    let digits = v.text.strip_prefix('/').unwrap_or(&v.text);
    digits
        .parse::<u8>()
        .ok()
        .filter(|p| *p <= 32)
        .ok_or_else(|| {
            bad(
                kw,
                format!("{:?} is not a netmask or prefix length (1-32)", v.text),
            )
        })
}

/// `N` or `N-M` (at most 500 codes).
fn status_codes(kw: &Tok, v: &Tok) -> Result<RangeInclusive<u16>, ParseError> {
    let one = |s: &str| {
        s.parse::<u16>()
            .map_err(|_| bad(kw, format!("{s:?} is not an HTTP status")))
    };
    match v.text.split_once('-') {
        None => {
            let n = one(&v.text)?;
            Ok(n..=n)
        }
        Some((a, b)) => {
            let (a, b) = (one(a)?, one(b)?);
            if b < a || b - a >= 500 {
                return Err(bad(
                    kw,
                    format!("{} is not a range of HTTP statuses", v.text),
                ));
            }
            Ok(a..=b)
        }
    }
}
