//! keepalived.conf read as written (seed 004): the subset that describes
//! IPVS virtual servers, into [`control::lb::VirtualServer`]s, with every
//! problem at its file:line.
//!
//! * [`token`]: words, braces, quoted strings, `#` / `!` comments;
//! * [`loader`]: `include` (globs, relative paths, loops, caps) through a
//!   [`Source`] (the filesystem, or memory in tests);
//! * [`keywords`]: what each block knows, its arity and its support;
//! * [`parser`]: the blocks into virtual servers, with where each part
//!   was written ([`spans`]);
//! * here: [`load`], which also runs [`control::lb::check`] on the result
//!   and reports its problems at the file:line of the keyword (or block)
//!   they concern.
//!
//! The result is `Ok(Loaded)` (the virtual servers and the warnings) or,
//! when anything is an error, `Err` with every diagnostic, warnings
//! included, in reading order. docs/LOAD_BALANCER.md lists every keyword.

pub mod keywords;
mod loader;
mod parser;
pub mod source;
mod spans;
mod token;

use std::fmt;
use std::path::Path;

use control::lb::VirtualServer;

pub use loader::{IncludeError, MAX_BYTES, MAX_DEPTH, MAX_FILES};
pub use parser::ParseError;
pub use source::{FsSource, MemSource, Source, SourceError};
pub use token::TokenError;

use spans::Node;

/// The path the model's validation reports the virtual servers under.
pub const BASE: &str = "load_balancers";

/// Where a token was read: the file (an index into the file names), its
/// line (0: the file as a whole), and its place in the spliced stream
/// (the reading order of diagnostics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pos {
    pub file: usize,
    pub line: u32,
    pub at: usize,
}

/// A token of the spliced stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tok {
    pub kind: token::Kind,
    pub text: String,
    pub pos: Pos,
}

/// A problem found while reading, before its file is named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Finding {
    pub pos: Pos,
    pub severity: Severity,
    pub message: String,
}

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Read past (an ignored keyword or section, an unknown keyword);
    /// what was read is still used.
    Warning,
    /// Nothing is loaded.
    Error,
}

/// One problem, at a file and line (line 0: the file as a whole).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: String,
    pub line: u32,
    pub severity: Severity,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            0 => write!(f, "{}: {}", self.file, self.message),
            n => write!(f, "{}:{}: {}", self.file, n, self.message),
        }
    }
}

/// A file and line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Location {
    pub file: String,
    pub line: u32,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// A keepalived.conf read without errors.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub virtual_servers: Vec<VirtualServer>,
    pub warnings: Vec<Diagnostic>,
    spans: Node,
    files: Vec<String>,
}

impl Loaded {
    /// Where the part at `path` of the virtual servers was written
    /// (`load_balancers[0].real_servers[1].weight`, or the same under any
    /// other name: everything before the first `[` is skipped): the
    /// keyword, or the nearest block when the keyword is absent. `None`
    /// for a path not into these servers. (Tests; [`Loaded::diagnose`]
    /// is what callers use.)
    #[cfg(test)]
    pub(crate) fn locate(&self, path: &str) -> Option<Location> {
        let rest = &path[path.find('[')?..];
        let pos = self.spans.locate(rest)?;
        Some(location(&self.files, pos))
    }

    /// The problem `message` a rule on these virtual servers found at
    /// `path` (`load_balancers[0].real_servers[1].weight`: under [`BASE`]),
    /// as an error at the file:line of the keyword it concerns (or of the
    /// nearest block), led by the path within its virtual server
    /// (`web.conf:7: real_servers[1].weight: ...`), as [`load`] reports
    /// [`control::lb::check`]'s. `None` for a path not into these servers.
    pub fn diagnose(&self, path: &str, message: &str) -> Option<Diagnostic> {
        model_finding(&self.spans, path, message).map(|f| f.diagnostic(&self.files))
    }
}

/// The model's problem `message` at `path` (under [`BASE`]) as a finding
/// at the keyword or block it concerns.
fn model_finding(spans: &Node, path: &str, message: &str) -> Option<Finding> {
    let (_, rel) = split_path(path)?;
    let pos = spans.locate(path.strip_prefix(BASE)?)?;
    let message = match rel {
        "" => message.to_string(),
        rel => format!("{rel}: {message}"),
    };
    Some(Finding {
        pos,
        severity: Severity::Error,
        message,
    })
}

fn location(files: &[String], pos: Pos) -> Location {
    Location {
        file: files.get(pos.file).cloned().unwrap_or_default(),
        line: pos.line,
    }
}

impl Finding {
    fn diagnostic(self, files: &[String]) -> Diagnostic {
        let Location { file, line } = location(files, self.pos);
        Diagnostic {
            file,
            line,
            severity: self.severity,
            message: self.message,
        }
    }
}

/// Reads the keepalived.conf at `path` from the filesystem.
pub fn load_file(path: &Path) -> Result<Loaded, Vec<Diagnostic>> {
    load(&FsSource, path)
}

/// Reads `text` as a keepalived.conf named `name` (its includes resolve
/// to nothing: use [`load`] with a [`MemSource`] for those).
pub fn load_str(name: &str, text: &str) -> Result<Loaded, Vec<Diagnostic>> {
    load(&MemSource::new().with(name, text), Path::new(name))
}

/// Reads the keepalived.conf at `path` from `src`, with its includes, and
/// checks the virtual servers it describes.
pub fn load(src: &dyn Source, path: &Path) -> Result<Loaded, Vec<Diagnostic>> {
    let stream = loader::load(src, path);
    let parsed = parser::parse(&stream.tokens);
    let mut findings = stream.findings;
    findings.extend(parsed.findings);
    let (servers, nodes): (Vec<VirtualServer>, Vec<Node>) = parsed.servers.into_iter().unzip();
    let mut spans = Node::new(Pos {
        file: 0,
        line: 0,
        at: 0,
    });
    for n in nodes {
        spans.push(n);
    }
    let mut problems = Vec::new();
    control::lb::check(&servers, BASE, &mut problems);
    for p in problems {
        // A server whose real servers all had bad addresses is already
        // reported; "needs a real server" would add nothing.
        if let Some((i, "real_servers")) = split_path(&p.path)
            && parsed.partial.get(i) == Some(&true)
        {
            continue;
        }
        // Every server has its node, so the path is found; were it not,
        // the problem would still refuse the file (at the top file, by path).
        let f = model_finding(&spans, &p.path, &p.message).unwrap_or_else(|| Finding {
            pos: Pos {
                file: 0,
                line: 0,
                at: usize::MAX,
            },
            severity: Severity::Error,
            message: p.to_string(),
        });
        findings.push(f);
    }
    findings.sort_by_key(|f| f.pos.at);
    let failed = findings.iter().any(|f| f.severity == Severity::Error);
    let diagnostics: Vec<Diagnostic> = findings
        .into_iter()
        .map(|f| f.diagnostic(&stream.files))
        .collect();
    if failed {
        return Err(diagnostics);
    }
    Ok(Loaded {
        virtual_servers: servers,
        warnings: diagnostics,
        spans,
        files: stream.files,
    })
}

/// `load_balancers[3].real_servers[1].weight` -> (3, `real_servers[1].weight`);
/// `None` for a path not under [`BASE`].
fn split_path(path: &str) -> Option<(usize, &str)> {
    let rest = path.strip_prefix(BASE)?.strip_prefix('[')?;
    let (index, rel) = rest.split_once(']')?;
    Some((index.parse().ok()?, rel.strip_prefix('.').unwrap_or(rel)))
}

#[cfg(test)]
mod tests;
