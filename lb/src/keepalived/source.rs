//! Where keepalived.conf and the files it includes are read from: the
//! [`Source`] trait (read a file with a size cap, list a directory, name a
//! file for loop detection), its filesystem implementation [`FsSource`]
//! (regular files only),
//! an in-memory one for tests [`MemSource`], and [`expand`], the `*` / `?`
//! glob of an `include` path written once over any source.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use super::loader::MAX_FILES;

/// Errors of reading a source.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("no such file")]
    NotFound,
    #[error("is a directory")]
    IsDirectory,
    /// A FIFO, a device, a socket: reading one could block for ever (a
    /// FIFO without a writer, `/dev/stdin`) or never end.
    #[error("is not a regular file")]
    NotAFile,
    #[error("larger than the {limit} bytes left to read")]
    TooLarge { limit: u64 },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// One name in a directory.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    pub name: String,
    pub is_dir: bool,
}

/// What the loader reads files through.
pub trait Source {
    /// The bytes of the file at `path`; more than `limit` bytes is
    /// [`SourceError::TooLarge`] (read no further than `limit + 1`).
    fn read(&self, path: &Path, limit: u64) -> Result<Vec<u8>, SourceError>;

    /// The entries of the directory `dir` (`""`: the current directory),
    /// in any order.
    fn list_dir(&self, dir: &Path) -> Result<Vec<Entry>, SourceError>;

    /// What identifies the file at `path` for include-loop detection (two
    /// paths naming one file give one identity). Default: the path with
    /// `.` and `..` resolved lexically.
    fn identity(&self, path: &Path) -> PathBuf {
        normalize(path)
    }
}

/// The filesystem.
#[derive(Debug, Clone, Copy, Default)]
pub struct FsSource;

impl Source for FsSource {
    fn read(&self, path: &Path, limit: u64) -> Result<Vec<u8>, SourceError> {
        let meta = std::fs::metadata(path).map_err(not_found)?;
        if meta.is_dir() {
            return Err(SourceError::IsDirectory);
        }
        if !meta.is_file() {
            return Err(SourceError::NotAFile);
        }
        let file = std::fs::File::open(path).map_err(not_found)?;
        // What was opened, should the path have changed in between.
        if !file.metadata()?.is_file() {
            return Err(SourceError::NotAFile);
        }
        let mut out = Vec::new();
        file.take(limit.saturating_add(1)).read_to_end(&mut out)?;
        if u64::try_from(out.len()).unwrap_or(u64::MAX) > limit {
            return Err(SourceError::TooLarge { limit });
        }
        Ok(out)
    }

    fn list_dir(&self, dir: &Path) -> Result<Vec<Entry>, SourceError> {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).map_err(not_found)? {
            let e = e?;
            // A name that is not UTF-8 cannot match a pattern written in
            // the (UTF-8) config; it is left out.
            let Ok(name) = e.file_name().into_string() else {
                continue;
            };
            // Through symlinks, as glob(3) does.
            let is_dir = std::fs::metadata(e.path()).is_ok_and(|m| m.is_dir());
            out.push(Entry { name, is_dir });
        }
        Ok(out)
    }

    fn identity(&self, path: &Path) -> PathBuf {
        std::fs::canonicalize(path).unwrap_or_else(|_| normalize(path))
    }
}

fn not_found(e: std::io::Error) -> SourceError {
    if e.kind() == std::io::ErrorKind::NotFound {
        SourceError::NotFound
    } else {
        SourceError::Io(e)
    }
}

/// Files held in memory, by normalized path (tests, and `load_str`).
#[derive(Debug, Clone, Default)]
pub struct MemSource {
    files: BTreeMap<PathBuf, Vec<u8>>,
}

impl MemSource {
    pub fn new() -> MemSource {
        MemSource::default()
    }

    /// Adds (or replaces) a file.
    pub fn insert(&mut self, path: impl AsRef<Path>, text: impl Into<Vec<u8>>) {
        self.files.insert(normalize(path.as_ref()), text.into());
    }

    /// Builder form of [`MemSource::insert`].
    pub fn with(mut self, path: impl AsRef<Path>, text: impl Into<Vec<u8>>) -> MemSource {
        self.insert(path, text);
        self
    }
}

impl Source for MemSource {
    fn read(&self, path: &Path, limit: u64) -> Result<Vec<u8>, SourceError> {
        let key = normalize(path);
        match self.files.get(&key) {
            Some(b) if u64::try_from(b.len()).unwrap_or(u64::MAX) > limit => {
                Err(SourceError::TooLarge { limit })
            }
            Some(b) => Ok(b.clone()),
            None if self.files.keys().any(|k| k.starts_with(&key) && *k != key) => {
                Err(SourceError::IsDirectory)
            }
            None => Err(SourceError::NotFound),
        }
    }

    fn list_dir(&self, dir: &Path) -> Result<Vec<Entry>, SourceError> {
        let dir = normalize(dir);
        let mut out = BTreeSet::new();
        for k in self.files.keys() {
            let Ok(rest) = k.strip_prefix(&dir) else {
                continue;
            };
            let mut comps = rest.components();
            if let Some(Component::Normal(first)) = comps.next() {
                let name = first.to_string_lossy().into_owned();
                out.insert(Entry {
                    name,
                    is_dir: comps.next().is_some(),
                });
            }
        }
        if out.is_empty() {
            return Err(SourceError::NotFound);
        }
        Ok(out.into_iter().collect())
    }
}

/// `path` with `.` removed and `..` applied lexically (a `..` above the
/// start of a relative path is kept).
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                let last_is_normal =
                    matches!(out.components().next_back(), Some(Component::Normal(_)));
                if last_is_normal {
                    out.pop();
                } else if !out.has_root() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// Most paths a pattern may match on its way, directories matched by
/// its components and files by its last, all counted together: a
/// pattern past it (`/*/*/*.conf` over a whole filesystem) stops there,
/// having listed at most as many directories.
pub const MAX_CANDIDATES: usize = 4 * MAX_FILES;

/// A pattern matched more than [`MAX_CANDIDATES`] paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("matches more than {MAX_CANDIDATES} files and directories")]
pub struct TooManyMatches;

/// True if `path` has a `*` or `?` in it.
pub fn has_wildcard(path: &Path) -> bool {
    path.to_string_lossy().contains(['*', '?'])
}

/// The files matching `pattern`, sorted (glob(3)'s order): `*` matches any
/// run of characters and `?` one character, within one path component;
/// neither matches a leading `.` (hidden files are named explicitly, as
/// with glob(3)). Components before the last match directories only, the
/// last one files only. A pattern without wildcards is returned as is
/// (the caller's read says whether it exists). A directory that cannot be
/// listed matches nothing. More than [`MAX_CANDIDATES`] matches on the
/// way is an error.
pub fn expand(src: &dyn Source, pattern: &Path) -> Result<Vec<PathBuf>, TooManyMatches> {
    if !has_wildcard(pattern) {
        return Ok(vec![pattern.to_path_buf()]);
    }
    let comps: Vec<Component<'_>> = pattern.components().collect();
    let mut bases = vec![PathBuf::new()];
    let mut matched = 0usize;
    for (k, c) in comps.iter().enumerate() {
        let last = k + 1 == comps.len();
        let Component::Normal(name) = c else {
            for b in &mut bases {
                b.push(c.as_os_str());
            }
            continue;
        };
        let Some(pat) = name.to_str().filter(|s| s.contains(['*', '?'])) else {
            for b in &mut bases {
                b.push(name);
            }
            continue;
        };
        let mut next = Vec::new();
        for b in &bases {
            let Ok(mut entries) = src.list_dir(b) else {
                continue;
            };
            entries.sort();
            for e in entries {
                if e.is_dir != last && matches(pat, &e.name) {
                    matched += 1;
                    if matched > MAX_CANDIDATES {
                        return Err(TooManyMatches);
                    }
                    next.push(b.join(&e.name));
                }
            }
        }
        bases = next;
        if bases.is_empty() {
            break;
        }
    }
    bases.sort();
    Ok(bases)
}

/// Whether `name` matches the glob `pat` (`*`, `?`; no leading `.` by a
/// wildcard). Linear backtracking on the last `*`: O(len(pat) x len(name)).
pub fn matches(pat: &str, name: &str) -> bool {
    if name.starts_with('.') && !pat.starts_with('.') {
        return false;
    }
    let p: Vec<char> = pat.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut i, mut j) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while j < n.len() {
        match p.get(i) {
            Some('*') => {
                star = Some((i, j));
                i += 1;
            }
            Some(&c) if c == '?' || c == n[j] => {
                i += 1;
                j += 1;
            }
            _ => match star {
                Some((si, sj)) => {
                    i = si + 1;
                    j = sj + 1;
                    star = Some((si, sj + 1));
                }
                None => return false,
            },
        }
    }
    p[i..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_star_and_question_mark_but_not_hidden_files() {
        assert!(matches("*.conf", "web.conf"));
        assert!(!matches("*.conf", ".conf"));
        assert!(matches(".*", ".hidden"));
        assert!(matches("w?b*", "web.conf"));
        assert!(matches("*", "x"));
        assert!(matches("a*b*c", "aXXbYYc"));
        assert!(!matches("a*b*c", "aXXbYY"));
        assert!(!matches("?", ""));
        assert!(matches("**", ""));
        assert!(!matches("*.conf", "web.conf.bak"));
    }

    #[test]
    fn expand_walks_directories_and_sorts() {
        let src = MemSource::new()
            .with("/etc/k/conf.d/b.conf", "")
            .with("/etc/k/conf.d/a.conf", "")
            .with("/etc/k/conf.d/.x.conf", "")
            .with("/etc/k/conf.d/notes.txt", "")
            .with("/etc/k/conf.d/sub/c.conf", "")
            .with("/etc/k/more/d.conf", "");
        let got = expand(&src, Path::new("/etc/k/conf.d/*.conf")).unwrap();
        assert_eq!(
            got,
            [
                PathBuf::from("/etc/k/conf.d/a.conf"),
                PathBuf::from("/etc/k/conf.d/b.conf")
            ]
        );
        // A wildcard directory component matches directories only.
        let got = expand(&src, Path::new("/etc/k/*/?.conf")).unwrap();
        assert_eq!(
            got,
            [
                PathBuf::from("/etc/k/conf.d/a.conf"),
                PathBuf::from("/etc/k/conf.d/b.conf"),
                PathBuf::from("/etc/k/more/d.conf")
            ]
        );
        assert!(expand(&src, Path::new("/nope/*.conf")).unwrap().is_empty());
        // No wildcard: the path as is, existing or not.
        assert_eq!(
            expand(&src, Path::new("/x")).unwrap(),
            [PathBuf::from("/x")]
        );
    }

    #[test]
    fn normalize_resolves_dots() {
        assert_eq!(normalize(Path::new("/a/./b/../c")), PathBuf::from("/a/c"));
        assert_eq!(normalize(Path::new("/..")), PathBuf::from("/"));
        assert_eq!(normalize(Path::new("../a")), PathBuf::from("../a"));
        assert_eq!(normalize(Path::new("a/../../b")), PathBuf::from("../b"));
    }

    #[test]
    fn mem_source_reads_lists_and_caps() {
        let src = MemSource::new().with("/d/f", "hello");
        assert_eq!(src.read(Path::new("/d/./f"), 10).unwrap(), b"hello");
        assert!(matches!(
            src.read(Path::new("/d/f"), 4),
            Err(SourceError::TooLarge { limit: 4 })
        ));
        assert!(matches!(
            src.read(Path::new("/d"), 9),
            Err(SourceError::IsDirectory)
        ));
        assert!(matches!(
            src.read(Path::new("/e"), 9),
            Err(SourceError::NotFound)
        ));
    }

    #[test]
    fn fs_source_reads_with_a_cap_and_lists() {
        let dir = std::env::temp_dir().join(format!("lb-ka-src-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("a.conf"), "0123456789").unwrap();
        let fs = FsSource;
        assert_eq!(fs.read(&dir.join("a.conf"), 10).unwrap().len(), 10);
        assert!(matches!(
            fs.read(&dir.join("a.conf"), 9),
            Err(SourceError::TooLarge { .. })
        ));
        assert!(matches!(
            fs.read(&dir.join("sub"), 9),
            Err(SourceError::IsDirectory)
        ));
        assert!(matches!(
            fs.read(&dir.join("zz"), 9),
            Err(SourceError::NotFound)
        ));
        let got = expand(&fs, &dir.join("*")).unwrap();
        assert_eq!(got, [dir.join("a.conf")]);
        assert_eq!(
            fs.identity(&dir.join("sub/../a.conf")),
            fs.identity(&dir.join("a.conf"))
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn expand_stops_past_the_cap_on_matches() {
        // Files: the cap exactly is fine, one more is not.
        let mut src = MemSource::new();
        for i in 0..MAX_CANDIDATES {
            src.insert(format!("/f/{i:04}.conf"), "");
        }
        assert_eq!(
            expand(&src, Path::new("/f/*.conf")).unwrap().len(),
            MAX_CANDIDATES
        );
        src.insert("/f/zzzz.conf", "");
        assert_eq!(expand(&src, Path::new("/f/*.conf")), Err(TooManyMatches));
        // Directories on the way count too, though none holds a match.
        let mut src = MemSource::new();
        for i in 0..=MAX_CANDIDATES {
            src.insert(format!("/d/{i:04}/x.txt"), "");
        }
        assert_eq!(expand(&src, Path::new("/d/*/*.conf")), Err(TooManyMatches));
        assert_eq!(expand(&src, Path::new("/d/000?/*.txt")).unwrap().len(), 10);
    }

    /// Only regular files are read: a FIFO without a writer would block
    /// the read for ever, a device (`/dev/stdin`, `/dev/zero`) may never
    /// end. A symlink to a regular file reads.
    #[test]
    fn fs_source_reads_regular_files_only() {
        let dir = std::env::temp_dir().join(format!("lb-ka-fifo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fs = FsSource;
        assert!(matches!(
            fs.read(Path::new("/dev/null"), 9),
            Err(SourceError::NotAFile)
        ));
        std::fs::write(dir.join("a.conf"), "x").unwrap();
        std::os::unix::fs::symlink(dir.join("a.conf"), dir.join("link.conf")).unwrap();
        assert_eq!(fs.read(&dir.join("link.conf"), 9).unwrap(), b"x");
        let fifo = dir.join("fifo.conf");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if made.is_ok_and(|s| s.success()) {
            // In a thread: were the FIFO opened, the read would never
            // return, and the test fails on the timeout instead of hanging.
            let (tx, rx) = std::sync::mpsc::channel();
            let f = fifo.clone();
            std::thread::spawn(move || {
                let _ = tx.send(matches!(FsSource.read(&f, 9), Err(SourceError::NotAFile)));
            });
            let refused = rx.recv_timeout(std::time::Duration::from_secs(10));
            assert_eq!(refused, Ok(true), "a FIFO is refused without blocking");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
