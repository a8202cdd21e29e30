//! The keywords this reader knows, per block, with how many values each
//! takes (so a block written on one line reads as on many) and whether it
//! is applied, ignored with a warning, or refused. docs/LOAD_BALANCER.md
//! has one row per entry here (a test checks it).

/// How a keyword's values are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arity {
    /// No value.
    Flag,
    /// Exactly this many values.
    Values(u8),
    /// One value if the next token is a number.
    OptionalNumber,
    /// One or more numbers or `N-M` ranges.
    Numbers,
    /// This many values, then a `{ ... }` block.
    Block(u8),
    /// This many values, then a block if one follows.
    OptionalBlock(u8),
    /// The rest of the line, then a block if one follows (sections and
    /// keywords not applied here).
    Line,
}

/// What becomes of a keyword.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Support {
    /// Read into the virtual server.
    Applied,
    /// Read and dropped with a warning saying why.
    Ignored(&'static str),
    /// An error: it would change how traffic is balanced and this
    /// balancer cannot do it.
    Refused(&'static str),
}

/// One keyword of a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keyword {
    pub name: &'static str,
    pub arity: Arity,
    pub support: Support,
}

const fn kw(name: &'static str, arity: Arity) -> Keyword {
    Keyword {
        name,
        arity,
        support: Support::Applied,
    }
}

const fn ignored(name: &'static str, arity: Arity, why: &'static str) -> Keyword {
    Keyword {
        name,
        arity,
        support: Support::Ignored(why),
    }
}

const fn refused(name: &'static str, arity: Arity, why: &'static str) -> Keyword {
    Keyword {
        name,
        arity,
        support: Support::Refused(why),
    }
}

use Arity::{Block, Flag, Line, Numbers, OptionalBlock, OptionalNumber, Values};

// Why a keyword is ignored or refused, where several share a reason.
const NO_VRRP: &str = "no VRRP: the overlay owns the virtual addresses";
const NO_SCRIPTS: &str = "notification scripts are not run";
const NO_ALPHA: &str = "a real server counts as up until its checker fails it";
const NO_WARMUP: &str = "checks start at once";
const NO_ALERTS: &str = "no e-mail alerts";
const NO_BIND: &str = "checks leave from the checker's own address";
const NO_FLAGS: &str = "scheduler flags are not supported";
const NO_THRESHOLDS: &str =
    "connection thresholds are not supported (the server would take connections past it)";
const NO_REGEX: &str = "body patterns are not checked";
const NO_CHECKER: &str = "checker not supported (TCP_CHECK, HTTP_GET, SSL_GET and MISC_CHECK are)";

/// The top level. Anything else there is an error (an unknown section
/// could hold virtual servers that would silently go missing).
pub static TOP: &[Keyword] = &[
    kw("include", Values(1)),
    kw("virtual_server", Block(2)),
    kw("virtual_server_group", Block(1)),
    ignored(
        "global_defs",
        Line,
        "global settings (router id, e-mail, script security) have no use here",
    ),
    ignored("vrrp_instance", Line, NO_VRRP),
    ignored("vrrp_script", Line, NO_VRRP),
    ignored("vrrp_sync_group", Line, NO_VRRP),
    ignored("static_ipaddress", Line, "the overlay owns the addresses"),
    ignored("static_routes", Line, "the overlay owns the routes"),
    ignored("linkbeat_interfaces", Line, NO_VRRP),
];

/// Inside `virtual_server ... { }`.
pub static VIRTUAL_SERVER: &[Keyword] = &[
    kw("delay_loop", Values(1)),
    kw("lb_algo", Values(1)),
    kw("lvs_sched", Values(1)),
    kw("lb_kind", Values(1)),
    kw("lvs_method", Values(1)),
    kw("persistence_timeout", OptionalNumber),
    kw("persistent_timeout", OptionalNumber),
    kw("persistence_granularity", Values(1)),
    kw("protocol", Values(1)),
    kw("quorum", Values(1)),
    kw("hysteresis", Values(1)),
    kw("sorry_server", Values(2)),
    kw("inhibit_on_failure", Flag),
    kw("virtualhost", Values(1)),
    kw("real_server", OptionalBlock(2)),
    // Defaults for the checkers of every real server.
    kw("connect_timeout", Values(1)),
    kw("retry", Values(1)),
    kw("nb_get_retry", Values(1)),
    kw("delay_before_retry", Values(1)),
    ignored(
        "ha_suspend",
        Flag,
        "no VRRP: the checkers never wait for the address to be local",
    ),
    ignored("alpha", Flag, NO_ALPHA),
    ignored("omega", Flag, NO_SCRIPTS),
    ignored("quorum_up", Line, NO_SCRIPTS),
    ignored("quorum_down", Line, NO_SCRIPTS),
    ignored(
        "sorry_server_inhibit",
        Flag,
        "the sorry server is only listed while the quorum is lost",
    ),
    ignored("warmup", Values(1), NO_WARMUP),
    ignored("smtp_alert", Line, NO_ALERTS),
    refused(
        "ops",
        Flag,
        "one-packet scheduling is not supported (each packet would be balanced on its own)",
    ),
    refused(
        "persistence_engine",
        Values(1),
        "persistence engines (sip) are not supported",
    ),
    refused("lvs_flags", Line, NO_FLAGS),
    refused("lb_flags", Line, NO_FLAGS),
    refused("sh-port", Flag, NO_FLAGS),
    refused("sh-fallback", Flag, NO_FLAGS),
    refused("mh-port", Flag, NO_FLAGS),
    refused("mh-fallback", Flag, NO_FLAGS),
    refused(
        "sorry_server_lvs_method",
        Values(1),
        "the sorry server is reached as the real servers are",
    ),
];

/// Inside `real_server ... { }`.
pub static REAL_SERVER: &[Keyword] = &[
    kw("weight", Values(1)),
    kw("inhibit_on_failure", Flag),
    kw("TCP_CHECK", Block(0)),
    kw("HTTP_GET", Block(0)),
    kw("SSL_GET", Block(0)),
    kw("MISC_CHECK", Block(0)),
    // Defaults for this server's checker.
    kw("delay_loop", Values(1)),
    kw("connect_timeout", Values(1)),
    kw("retry", Values(1)),
    kw("nb_get_retry", Values(1)),
    kw("delay_before_retry", Values(1)),
    kw("virtualhost", Values(1)),
    ignored("notify_up", Line, NO_SCRIPTS),
    ignored("notify_down", Line, NO_SCRIPTS),
    ignored("alpha", Flag, NO_ALPHA),
    ignored("warmup", Values(1), NO_WARMUP),
    ignored("smtp_alert", Line, NO_ALERTS),
    refused("uthreshold", Values(1), NO_THRESHOLDS),
    refused("lthreshold", Values(1), NO_THRESHOLDS),
    refused("SMTP_CHECK", Line, NO_CHECKER),
    refused("DNS_CHECK", Line, NO_CHECKER),
    refused("BFD_CHECK", Line, NO_CHECKER),
    refused("UDP_CHECK", Line, NO_CHECKER),
    refused("PING_CHECK", Line, NO_CHECKER),
    refused("FILE_CHECK", Line, NO_CHECKER),
];

/// Inside every checker block.
const TIMING: &[Keyword] = &[
    kw("connect_ip", Values(1)),
    kw("connect_port", Values(1)),
    kw("connect_timeout", Values(1)),
    kw("retry", Values(1)),
    kw("nb_get_retry", Values(1)),
    kw("delay_before_retry", Values(1)),
    kw("delay_loop", Values(1)),
    ignored("bindto", Values(1), NO_BIND),
    ignored("bind_port", Values(1), NO_BIND),
    ignored("bind_if", Values(1), NO_BIND),
    ignored("warmup", Values(1), NO_WARMUP),
    ignored("alpha", Flag, NO_ALPHA),
    ignored("fwmark", Values(1), "checks are not marked"),
];

/// Inside `TCP_CHECK { }`.
pub static TCP_CHECK: &[Keyword] = TIMING;

/// Inside `HTTP_GET { }` / `SSL_GET { }` (besides [`TIMING`]).
pub static HTTP_GET: &[Keyword] = &[
    kw("url", Block(0)),
    kw("virtualhost", Values(1)),
    ignored(
        "http_protocol",
        Values(1),
        "the HTTP version of a check is not configurable",
    ),
    ignored(
        "enable_sni",
        Flag,
        "TLS details of a check are not configurable",
    ),
];

/// Inside `url { }`.
pub static URL: &[Keyword] = &[
    kw("path", Values(1)),
    kw("digest", Values(1)),
    kw("status_code", Numbers),
    refused("regex", Values(1), NO_REGEX),
    refused("regex_no_match", Flag, NO_REGEX),
];

/// Inside `MISC_CHECK { }` (besides [`TIMING`]).
pub static MISC_CHECK: &[Keyword] = &[
    kw("misc_path", Values(1)),
    kw("misc_timeout", Values(1)),
    kw("misc_dynamic", Flag),
    refused(
        "user",
        Line,
        "the script would run as the checker's user, not the one named",
    ),
];

/// The keyword `name` of a block read with `tables` (the first table
/// that has it).
pub fn find(tables: &[&'static [Keyword]], name: &str) -> Option<&'static Keyword> {
    tables
        .iter()
        .flat_map(|t| t.iter())
        .find(|k| k.name == name)
}

/// The tables of a checker block.
pub fn checker(kind: &str) -> [&'static [Keyword]; 2] {
    match kind {
        "HTTP_GET" | "SSL_GET" => [HTTP_GET, TIMING],
        "MISC_CHECK" => [MISC_CHECK, TIMING],
        _ => [TCP_CHECK, &[]],
    }
}

/// Every table, named as the docs name the blocks (`checkers`: what
/// every checker block takes).
pub fn all() -> [(&'static str, &'static [Keyword]); 7] {
    [
        ("top level", TOP),
        ("virtual_server", VIRTUAL_SERVER),
        ("real_server", REAL_SERVER),
        ("checkers", TIMING),
        ("HTTP_GET, SSL_GET", HTTP_GET),
        ("url", URL),
        ("MISC_CHECK", MISC_CHECK),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/LOAD_BALANCER.md has a row `| block | `name` | state |` for
    /// every keyword here, and none for a keyword not here.
    #[test]
    fn the_docs_list_every_keyword_with_its_state() {
        let doc = include_str!("../../../docs/LOAD_BALANCER.md");
        let rows: Vec<(&str, &str, &str)> = doc
            .lines()
            .filter_map(|l| {
                let mut cells = l.strip_prefix('|')?.split('|').map(str::trim);
                let (block, name, state) = (cells.next()?, cells.next()?, cells.next()?);
                let name = name.strip_prefix('`')?.strip_suffix('`')?;
                Some((block, name, state))
            })
            .filter(|(b, _, _)| all().iter().any(|(block, _)| block == b))
            .collect();
        for (block, table) in all() {
            for k in table {
                let state = match k.support {
                    Support::Applied => "supported",
                    Support::Ignored(_) => "warning, ignored",
                    Support::Refused(_) => "error",
                };
                assert!(
                    rows.contains(&(block, k.name, state)),
                    "docs/LOAD_BALANCER.md lacks the row | {block} | `{}` | {state} |",
                    k.name
                );
            }
        }
        for (block, name, _) in &rows {
            let known = all()
                .iter()
                .any(|(b, t)| b == block && t.iter().any(|k| k.name == *name));
            assert!(
                known,
                "docs/LOAD_BALANCER.md lists {block} `{name}`, which the reader does not know"
            );
        }
        assert_eq!(
            rows.len(),
            all().iter().map(|(_, t)| t.len()).sum::<usize>()
        );
    }

    #[test]
    fn no_keyword_is_listed_twice_in_a_block() {
        for (block, table) in all() {
            let mut names: Vec<&str> = table.iter().map(|k| k.name).collect();
            names.sort_unstable();
            let n = names.len();
            names.dedup();
            assert_eq!(names.len(), n, "duplicate in {block}");
        }
        for kind in ["TCP_CHECK", "HTTP_GET", "MISC_CHECK"] {
            let [a, b] = checker(kind);
            assert!(
                a.iter().all(|k| b.iter().all(|j| j.name != k.name)),
                "{kind}"
            );
        }
    }
}
