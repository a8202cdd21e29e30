//! The token stream of a keepalived.conf with its includes spliced in.
//!
//! `include PATH` may appear anywhere a keyword may (keepalived reads it
//! line by line; here it is the word `include` and the next token on its
//! line). PATH may hold `*` and `?` (glob(3) style: within one component,
//! not matching a leading `.`); the matching files are read in sorted
//! order. A relative PATH is relative to the directory of the file that
//! holds the `include` (not the process's working directory). A path
//! without wildcards that does not exist is an error; a pattern that
//! matches nothing is a warning (an empty `conf.d/` is normal). Including
//! a file that is already being read (a loop) is an error at the
//! include's file:line, as are the caps: includes nested deeper than
//! [`MAX_DEPTH`], more than [`MAX_FILES`] files, more than [`MAX_BYTES`]
//! in all, a pattern matching more than [`source::MAX_CANDIDATES`]
//! files and directories on its way. The same file included twice side by side is not a loop (its
//! virtual servers then appear twice, which validation reports). A file
//! need not be UTF-8 where it is commented out (an old Latin-1 comment
//! reads), but a word with bytes that are not UTF-8 is an error at its
//! line: it would be read with them replaced, a path or a host name
//! silently changed.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use super::source::{self, Source, SourceError};
use super::token::{self, Kind};
use super::{Finding, Pos, Severity, Tok};

/// How deep includes may nest (the top file is depth 0).
pub const MAX_DEPTH: usize = 8;
/// Files read in all, the top one included.
pub const MAX_FILES: usize = 64;
/// Bytes read in all.
pub const MAX_BYTES: u64 = 4 << 20;

/// Errors of reading the files and their includes.
#[derive(Debug, thiserror::Error)]
pub enum IncludeError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: SourceError },
    #[error("include needs a path")]
    MissingPath,
    #[error("include loop: {chain}")]
    Loop { chain: String },
    #[error("include of {path} nested deeper than {MAX_DEPTH} levels")]
    TooDeep { path: String },
    #[error("include of {path}: more than {MAX_FILES} files in all; the rest are not read")]
    TooManyFiles { path: String },
    #[error("include of {path}: more than {MAX_BYTES} bytes in all")]
    TooManyBytes { path: String },
    #[error("include pattern {pattern} matches no file")]
    NoMatch { pattern: String },
    #[error("include pattern {pattern} {source}; none are read")]
    TooManyMatches {
        pattern: String,
        source: source::TooManyMatches,
    },
    #[error("{word:?} is not UTF-8 text (U+FFFD stands for the bytes that are not)")]
    NotUtf8 { word: String },
    #[error("{0}")]
    Token(#[from] token::TokenError),
}

/// The spliced tokens, the files they came from and what went wrong.
#[derive(Debug, Default)]
pub struct Stream {
    pub tokens: Vec<Tok>,
    /// File names as shown in diagnostics; `Pos::file` indexes this.
    pub files: Vec<String>,
    pub findings: Vec<Finding>,
}

struct Loader<'a> {
    src: &'a dyn Source,
    out: Stream,
    /// Identities and names of the files being read, outermost first.
    stack: Vec<(PathBuf, String)>,
    bytes: u64,
    files_capped: bool,
}

/// Reads `path` and everything it includes.
pub fn load(src: &dyn Source, path: &Path) -> Stream {
    let mut l = Loader {
        src,
        out: Stream::default(),
        stack: Vec::new(),
        bytes: 0,
        files_capped: false,
    };
    l.file(path, None);
    l.out
}

impl Loader<'_> {
    fn error(&mut self, pos: Pos, e: IncludeError) {
        self.push(pos, Severity::Error, e);
    }

    fn push(&mut self, pos: Pos, severity: Severity, e: IncludeError) {
        self.out.findings.push(Finding {
            pos,
            severity,
            message: e.to_string(),
        });
    }

    /// Where a problem of the top file itself is reported (line 0: the
    /// file as a whole).
    fn top_pos(&mut self, path: &Path) -> Pos {
        let file = self.out.files.len();
        self.out.files.push(path.display().to_string());
        Pos {
            file,
            line: 0,
            at: self.out.tokens.len(),
        }
    }

    /// Reads `path` (included at `from`; `None`: the top file) and splices
    /// its tokens.
    fn file(&mut self, path: &Path, from: Option<Pos>) {
        let name = path.display().to_string();
        let identity = self.src.identity(path);
        let at = match from {
            Some(p) => p,
            None => self.top_pos(path),
        };
        if self.stack.iter().any(|(id, _)| *id == identity) {
            let mut chain: Vec<&str> = self.stack.iter().map(|(_, n)| n.as_str()).collect();
            chain.push(&name);
            let chain = chain.join(" -> ");
            return self.error(at, IncludeError::Loop { chain });
        }
        if self.stack.len() > MAX_DEPTH {
            return self.error(at, IncludeError::TooDeep { path: name });
        }
        if self.out.files.len() >= MAX_FILES + usize::from(from.is_none()) {
            if !self.files_capped {
                self.files_capped = true;
                self.error(at, IncludeError::TooManyFiles { path: name });
            }
            return;
        }
        let left = MAX_BYTES.saturating_sub(self.bytes);
        let bytes = match self.src.read(path, left) {
            Ok(b) => b,
            Err(SourceError::TooLarge { .. }) => {
                return self.error(at, IncludeError::TooManyBytes { path: name });
            }
            Err(source) => {
                return self.error(at, IncludeError::Read { path: name, source });
            }
        };
        self.bytes = self
            .bytes
            .saturating_add(u64::try_from(bytes.len()).unwrap_or(u64::MAX));
        let file = match from {
            None => at.file,
            Some(_) => {
                self.out.files.push(name.clone());
                self.out.files.len() - 1
            }
        };
        let text = String::from_utf8_lossy(&bytes);
        // Bytes that are not UTF-8 were replaced: the words that hold a
        // replacement are not what the file says.
        let replaced = matches!(text, Cow::Owned(_));
        let (tokens, errors) = token::tokenize(&text);
        for e in errors {
            let pos = Pos {
                file,
                line: e.line(),
                at: self.out.tokens.len(),
            };
            self.error(pos, e.into());
        }
        self.stack.push((identity, name));
        let mut it = tokens.into_iter().peekable();
        while let Some(t) = it.next() {
            let pos = Pos {
                file,
                line: t.line,
                at: self.out.tokens.len(),
            };
            if replaced && t.text.contains(char::REPLACEMENT_CHARACTER) {
                let word = t.text.clone();
                self.error(pos, IncludeError::NotUtf8 { word });
            }
            if t.kind == Kind::Word && t.text == "include" {
                let arg =
                    it.next_if(|n| n.line == t.line && matches!(n.kind, Kind::Word | Kind::Quoted));
                match arg {
                    Some(a) => self.include(path, &a.text, pos),
                    None => self.error(pos, IncludeError::MissingPath),
                }
                continue;
            }
            self.out.tokens.push(Tok {
                kind: t.kind,
                text: t.text,
                pos,
            });
        }
        self.stack.pop();
    }

    fn include(&mut self, from_file: &Path, arg: &str, pos: Pos) {
        let arg = Path::new(arg);
        let target = if arg.is_absolute() {
            arg.to_path_buf()
        } else {
            from_file.parent().unwrap_or(Path::new("")).join(arg)
        };
        let pattern = || target.display().to_string();
        let matched = match source::expand(self.src, &target) {
            Ok(m) => m,
            Err(source) => {
                let pattern = pattern();
                return self.error(pos, IncludeError::TooManyMatches { pattern, source });
            }
        };
        if matched.is_empty() {
            let pattern = pattern();
            return self.push(pos, Severity::Warning, IncludeError::NoMatch { pattern });
        }
        for m in matched {
            self.file(&m, Some(pos));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keepalived::source::MemSource;

    fn texts(s: &Stream) -> Vec<&str> {
        s.tokens.iter().map(|t| t.text.as_str()).collect()
    }

    fn messages(s: &Stream) -> Vec<String> {
        s.findings
            .iter()
            .map(|f| format!("{}:{}: {}", s.files[f.pos.file], f.pos.line, f.message))
            .collect()
    }

    #[test]
    fn includes_are_spliced_in_place_relative_to_the_including_file() {
        let src = MemSource::new()
            .with("/k/main.conf", "a\ninclude conf.d/*.conf\nz")
            .with("/k/conf.d/2.conf", "c include ../sub/x")
            .with("/k/conf.d/1.conf", "b")
            .with("/k/sub/x", "d");
        let s = load(&src, Path::new("/k/main.conf"));
        assert_eq!(texts(&s), ["a", "b", "c", "d", "z"]);
        assert!(s.findings.is_empty(), "{:?}", messages(&s));
        let d = &s.tokens[3];
        assert_eq!(s.files[d.pos.file], "/k/conf.d/../sub/x");
        assert_eq!(d.pos.line, 1);
        assert_eq!(s.tokens[4].pos.line, 3);
    }

    #[test]
    fn loops_missing_files_and_empty_patterns() {
        let src = MemSource::new()
            .with(
                "/k/a.conf",
                "x\ninclude b.conf\ninclude nope.conf\ninclude d/*.conf\ninclude",
            )
            .with("/k/b.conf", "y\n\ninclude ./a.conf");
        let s = load(&src, Path::new("/k/a.conf"));
        assert_eq!(texts(&s), ["x", "y"]);
        assert_eq!(
            messages(&s),
            [
                "/k/b.conf:3: include loop: /k/a.conf -> /k/b.conf -> /k/./a.conf",
                "/k/a.conf:3: cannot read /k/nope.conf: no such file",
                "/k/a.conf:4: include pattern /k/d/*.conf matches no file",
                "/k/a.conf:5: include needs a path",
            ]
        );
        assert_eq!(s.findings[2].severity, Severity::Warning);
        let s = load(&src, Path::new("/k/none.conf"));
        assert_eq!(
            messages(&s),
            ["/k/none.conf:0: cannot read /k/none.conf: no such file"]
        );
    }

    #[test]
    fn caps_on_depth_files_and_bytes() {
        // A chain 0 -> 1 -> ... -> 12: depth 9 is refused.
        let mut src = MemSource::new();
        for i in 0..12 {
            src.insert(format!("/d/{i}"), format!("t{i} include {}", i + 1));
        }
        let s = load(&src, Path::new("/d/0"));
        assert_eq!(s.tokens.len(), MAX_DEPTH + 1);
        assert_eq!(
            messages(&s),
            ["/d/8:1: include of /d/9 nested deeper than 8 levels"]
        );

        // 100 files side by side: 64 read, one error.
        let mut src = MemSource::new().with("/f/main", "include /f/inc/*");
        for i in 0..100 {
            src.insert(format!("/f/inc/{i:03}"), "w");
        }
        let s = load(&src, Path::new("/f/main"));
        assert_eq!(s.tokens.len(), MAX_FILES - 1);
        assert_eq!(s.files.len(), MAX_FILES);
        assert_eq!(s.findings.len(), 1, "{:?}", messages(&s));
        assert!(s.findings[0].message.contains("more than 64 files"));

        // A pattern matching more than 4 x 64: an error at its include,
        // nothing read.
        let mut src = MemSource::new().with("/g/main", "a\ninclude /g/inc/*\nz");
        for i in 0..=source::MAX_CANDIDATES {
            src.insert(format!("/g/inc/{i:03}"), "w");
        }
        let s = load(&src, Path::new("/g/main"));
        assert_eq!(texts(&s), ["a", "z"]);
        assert_eq!(
            messages(&s),
            [
                "/g/main:2: include pattern /g/inc/* matches more than 256 files and directories; none are read"
            ]
        );

        // 3 MiB + 3 MiB: the second is refused.
        let big = "x".repeat(3 << 20);
        let src = MemSource::new()
            .with("/b/main", "include a\ninclude b")
            .with("/b/a", big.clone())
            .with("/b/b", big);
        let s = load(&src, Path::new("/b/main"));
        assert_eq!(
            messages(&s),
            ["/b/main:2: include of /b/b: more than 4194304 bytes in all"]
        );
    }

    #[test]
    fn bytes_that_are_not_utf8_are_an_error_in_a_word_not_in_a_comment() {
        let src = MemSource::new()
            .with(
                "/k/a",
                &b"# caf\xe9 (Latin-1)\nx \"/bin/ch\xe9ck\" y\nz"[..],
            )
            .with("/k/b", "# caf\u{e9} and \u{fffd} as written\n\u{fffd}");
        let s = load(&src, Path::new("/k/a"));
        assert_eq!(texts(&s), ["x", "/bin/ch\u{fffd}ck", "y", "z"]);
        assert_eq!(
            messages(&s),
            [
                "/k/a:2: \"/bin/ch\u{fffd}ck\" is not UTF-8 text (U+FFFD stands for the bytes that are not)"
            ]
        );
        // A file that is UTF-8 may hold U+FFFD itself.
        let s = load(&src, Path::new("/k/b"));
        assert_eq!(texts(&s), ["\u{fffd}"]);
        assert!(s.findings.is_empty(), "{:?}", messages(&s));
    }

    #[test]
    fn the_same_file_twice_is_not_a_loop() {
        let src = MemSource::new()
            .with("/k/a", "include c\ninclude c")
            .with("/k/c", "x");
        let s = load(&src, Path::new("/k/a"));
        assert_eq!(texts(&s), ["x", "x"]);
        assert!(s.findings.is_empty());
    }
}
