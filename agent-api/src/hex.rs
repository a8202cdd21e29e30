//! Frames travel as hex strings (`frame_hex` of `trace`, `data_hex` of
//! `capture`): lower-case out, either case in.

/// Lower-case hex of `bytes`.
#[must_use]
pub fn encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

/// Why a hex string is not bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HexError {
    #[error("not a hex digit at offset {0}")]
    NotHex(usize),
    #[error("odd number of hex digits")]
    Odd,
}

/// Bytes of a hex string (either case; whitespace and `:` between digits
/// are ignored).
pub fn decode(s: &str) -> Result<Vec<u8>, HexError> {
    let mut out = Vec::with_capacity(s.len() / 2);
    let mut high: Option<u8> = None;
    for (i, c) in s.char_indices() {
        if c.is_ascii_whitespace() || c == ':' {
            continue;
        }
        let n = c
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
            .ok_or(HexError::NotHex(i))?;
        match high.take() {
            None => high = Some(n),
            Some(h) => out.push((h << 4) | n),
        }
    }
    if high.is_some() {
        return Err(HexError::Odd);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn round_trips() {
        let b: Vec<u8> = (0..=255).collect();
        assert_eq!(decode(&encode(&b)).unwrap(), b);
        assert_eq!(decode("0a:0B 0c\n").unwrap(), vec![10, 11, 12]);
        assert_eq!(decode("é0"), Err(HexError::NotHex(0)));
        assert_eq!(decode("abc"), Err(HexError::Odd));
    }
}
