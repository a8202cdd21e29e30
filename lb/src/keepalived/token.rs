//! keepalived.conf's tokens: whitespace-separated words; `{` and `}` are
//! tokens of their own even when glued to a word (`80{`); a `#` or `!`
//! that starts a token comments out the rest of its line; a double-quoted
//! string is one token (no escapes: it ends at the next `"`). Each token
//! keeps its line. Lines are what keepalived reads: an unknown keyword
//! takes the rest of its line.

/// Errors of tokenizing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// A `"` with no closing one on its line; the token runs to the end of
    /// the line.
    #[error("unterminated quoted string (a string ends on its line)")]
    Unterminated { line: u32 },
}

impl TokenError {
    pub fn line(&self) -> u32 {
        match self {
            TokenError::Unterminated { line } => *line,
        }
    }
}

/// What a token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Word,
    /// A double-quoted string (the quotes removed).
    Quoted,
    Open,
    Close,
}

/// One token and its line (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub kind: Kind,
    pub text: String,
    pub line: u32,
}

/// The tokens of `text`, and the problems met (the tokens are still all
/// there: an unterminated string is taken to the end of its line).
pub fn tokenize(text: &str) -> (Vec<Token>, Vec<TokenError>) {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (n, line_text) in text.split('\n').enumerate() {
        let line = u32::try_from(n).map_or(u32::MAX, |n| n.saturating_add(1));
        let b = line_text.as_bytes();
        let mut i = 0;
        while i < b.len() {
            let c = b[i];
            let (kind, text, next) = match c {
                c if c.is_ascii_whitespace() => {
                    i += 1;
                    continue;
                }
                b'#' | b'!' => break,
                b'{' => (Kind::Open, "{", i + 1),
                b'}' => (Kind::Close, "}", i + 1),
                b'"' => match line_text[i + 1..].find('"') {
                    Some(k) => (Kind::Quoted, &line_text[i + 1..i + 1 + k], i + k + 2),
                    None => {
                        errors.push(TokenError::Unterminated { line });
                        (Kind::Quoted, line_text[i + 1..].trim_end(), b.len())
                    }
                },
                _ => {
                    let end = b[i..]
                        .iter()
                        .position(|&c| c.is_ascii_whitespace() || c == b'{' || c == b'}')
                        .map_or(b.len(), |k| i + k);
                    (Kind::Word, &line_text[i..end], end)
                }
            };
            out.push(Token {
                kind,
                text: text.to_string(),
                line,
            });
            i = next;
        }
    }
    (out, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<(String, u32)> {
        let (t, e) = tokenize(text);
        assert!(e.is_empty(), "{e:?}");
        t.into_iter().map(|t| (t.text, t.line)).collect()
    }

    #[test]
    fn braces_split_from_words_and_lines_are_kept() {
        let got = words("virtual_server 10.0.0.1 80{\n  weight 1}}\n{x");
        let want = [
            ("virtual_server", 1),
            ("10.0.0.1", 1),
            ("80", 1),
            ("{", 1),
            ("weight", 2),
            ("1", 2),
            ("}", 2),
            ("}", 2),
            ("{", 3),
            ("x", 3),
        ];
        let want: Vec<(String, u32)> = want.iter().map(|(s, l)| (s.to_string(), *l)).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn comments_start_a_token_and_run_to_the_end_of_the_line() {
        let got = words("a # b c\n! d\ne#f !g\nh");
        let texts: Vec<&str> = got.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(texts, ["a", "e#f", "h"]);
        assert_eq!(got[2].1, 4);
    }

    #[test]
    fn quoted_strings_are_one_token() {
        let (t, e) = tokenize("misc_path \"/bin/check arg # not a comment\" x\n\"open");
        assert_eq!(t[1].text, "/bin/check arg # not a comment");
        assert_eq!(t[1].kind, Kind::Quoted);
        assert_eq!(t[2].text, "x");
        assert_eq!(t[3].text, "open");
        assert_eq!(e, [TokenError::Unterminated { line: 2 }]);
    }

    #[test]
    fn crlf_and_tabs_are_whitespace() {
        let got = words("a\tb\r\nc");
        assert_eq!(got, [("a".into(), 1), ("b".into(), 1), ("c".into(), 2)]);
    }
}
