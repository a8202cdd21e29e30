//! What the instance says about its operating system in its inventory
//! (`InstanceMeta::os`, sent at enrollment and in every Hello): the
//! distribution from `os-release(5)`, as `ID-VERSION_ID` (`ubuntu-22.04`,
//! `debian-12`, `rhel-9.4`), the machine-readable fields, so group globs
//! such as `ubuntu*` or `rhel-9*` match. `ID` alone when the distribution
//! has no version (rolling releases); `linux`, the file format's own
//! default for `ID`, when neither file exists or has no usable `ID`.
//!
//! The file is trusted no further than its syntax: a line that is not
//! `KEY=VALUE` is skipped, and the two values are kept only if they are
//! what the format allows them to be (lower-case letters, digits, `.`, `_`,
//! `-`; at most [`MAX_FIELD`] characters each).

use std::path::Path;

/// Where the distribution describes itself, in the order the format says
/// to look.
pub const OS_RELEASE: [&str; 2] = ["/etc/os-release", "/usr/lib/os-release"];

/// What is reported when no `os-release` says anything usable.
pub const FALLBACK_OS: &str = "linux";

/// Longest `ID` or `VERSION_ID` kept.
pub const MAX_FIELD: usize = 64;

/// The operating system of this machine for the inventory.
pub fn os() -> String {
    OS_RELEASE
        .iter()
        .find_map(|p| read(Path::new(p)))
        .map_or_else(|| FALLBACK_OS.to_string(), |text| os_name(&text))
}

fn read(path: &Path) -> Option<String> {
    match std::fs::read_to_string(path) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read os-release");
            None
        }
    }
}

/// `ID-VERSION_ID` (or `ID`, or [`FALLBACK_OS`]) from an `os-release` text.
pub fn os_name(text: &str) -> String {
    let (mut id, mut version) = (None, None);
    for (key, value) in text.lines().filter_map(assignment) {
        match key {
            "ID" => id = Some(value),
            "VERSION_ID" => version = Some(value),
            _ => {}
        }
    }
    match (id.filter(|v| is_field(v)), version.filter(|v| is_field(v))) {
        (Some(id), Some(v)) => format!("{id}-{v}"),
        (Some(id), None) => id,
        (None, _) => FALLBACK_OS.to_string(),
    }
}

/// One `KEY=VALUE` line, the value unquoted: `"..."` with `\` escapes,
/// `'...'` literal, or bare. Comments, blank and malformed lines: `None`.
fn assignment(line: &str) -> Option<(&str, String)> {
    let line = line.trim();
    if line.starts_with('#') {
        return None;
    }
    let (key, raw) = line.split_once('=')?;
    if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return None;
    }
    let value = if let Some(inner) = raw.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = inner.chars();
        loop {
            match chars.next()? {
                '"' => break,
                '\\' => out.push(chars.next()?),
                c => out.push(c),
            }
        }
        out
    } else if let Some(inner) = raw.strip_prefix('\'') {
        inner.split_once('\'')?.0.to_string()
    } else {
        raw.to_string()
    };
    Some((key, value))
}

/// A value the format allows for `ID` / `VERSION_ID`.
fn is_field(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= MAX_FIELD
        && v.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distributions_as_they_ship() {
        let ubuntu = "PRETTY_NAME=\"Ubuntu 22.04.4 LTS\"\nNAME=\"Ubuntu\"\nVERSION_ID=\"22.04\"\n\
                      VERSION=\"22.04.4 LTS (Jammy Jellyfish)\"\nID=ubuntu\nID_LIKE=debian\n";
        assert_eq!(os_name(ubuntu), "ubuntu-22.04");
        let debian = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\n\
                      VERSION_ID=\"12\"\nVERSION=\"12 (bookworm)\"\nID=debian\n";
        assert_eq!(os_name(debian), "debian-12");
        let rhel = "NAME=\"Red Hat Enterprise Linux\"\nVERSION=\"9.4 (Plow)\"\nID=\"rhel\"\n\
                    ID_LIKE=\"fedora\"\nVERSION_ID=\"9.4\"\n";
        assert_eq!(os_name(rhel), "rhel-9.4");
        // Rolling releases have no VERSION_ID.
        assert_eq!(
            os_name("NAME=\"Arch Linux\"\nID=arch\nBUILD_ID=rolling\n"),
            "arch"
        );
        // The seed's instance (Ubuntu 14.04 in single quotes, a comment).
        assert_eq!(
            os_name("# written by hand\nID='ubuntu'\nVERSION_ID='14.04'\n"),
            "ubuntu-14.04"
        );
    }

    #[test]
    fn quoting_and_escapes() {
        assert_eq!(
            assignment(r#"PRETTY_NAME="a \"b\" \\ c""#),
            Some(("PRETTY_NAME", r#"a "b" \ c"#.to_string()))
        );
        assert_eq!(assignment("ID='x\"y'"), Some(("ID", "x\"y".to_string())));
        assert_eq!(assignment("  ID=bare  "), Some(("ID", "bare".to_string())));
        assert_eq!(assignment("ID=\"unterminated"), None);
        assert_eq!(assignment("ID='unterminated"), None);
        assert_eq!(assignment("ID=\"trailing\\"), None);
        assert_eq!(assignment("# ID=commented"), None);
        assert_eq!(assignment("no equals sign"), None);
        assert_eq!(assignment("=value"), None);
        assert_eq!(assignment("BAD KEY=x"), None);
    }

    #[test]
    fn what_cannot_be_used_falls_back() {
        assert_eq!(os_name(""), "linux");
        assert_eq!(os_name("NAME=Something\n"), "linux");
        // Values outside the format's alphabet are not reported.
        assert_eq!(os_name("ID=\"Ubuntu Linux\"\nVERSION_ID=1\n"), "linux");
        assert_eq!(os_name("ID=ubuntu\nVERSION_ID=\"22.04 LTS\"\n"), "ubuntu");
        assert_eq!(
            os_name(&format!("ID={}\n", "a".repeat(MAX_FIELD + 1))),
            "linux"
        );
        assert_eq!(os_name("ID=\nVERSION_ID=3\n"), "linux");
        // Binary garbage and odd bytes never panic.
        assert_eq!(os_name("\u{0}\u{fffd}=\"\\\nID=debian\n"), "debian");
        // The last assignment wins, as in a shell.
        assert_eq!(os_name("ID=a\nID=b\n"), "b");
    }
}
