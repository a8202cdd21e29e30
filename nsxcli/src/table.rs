//! Fixed-width text tables, like a network device CLI: a header row, then
//! one row per entry; columns two spaces apart, numbers right-aligned,
//! no trailing blanks.

/// Column alignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// A table being filled.
#[derive(Debug, Clone)]
pub struct Table {
    head: Vec<(&'static str, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    #[must_use]
    pub fn new(head: &[(&'static str, Align)]) -> Table {
        Table {
            head: head.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (missing cells are blank, extra cells dropped).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Whether no row was added.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as text, one line per row, each ending in `\n`.
    #[must_use]
    pub fn render(&self) -> String {
        let n = self.head.len();
        let mut width: Vec<usize> = self.head.iter().map(|(h, _)| h.chars().count()).collect();
        for r in &self.rows {
            for (w, c) in width.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        let mut out = String::new();
        let mut line = |cells: &mut dyn Iterator<Item = &str>| {
            let mut l = String::new();
            for (i, c) in cells.take(n).enumerate() {
                let pad = width[i].saturating_sub(c.chars().count());
                if i > 0 {
                    l.push_str("  ");
                }
                match self.head[i].1 {
                    Align::Left => {
                        l.push_str(c);
                        l.push_str(&" ".repeat(pad));
                    }
                    Align::Right => {
                        l.push_str(&" ".repeat(pad));
                        l.push_str(c);
                    }
                }
            }
            out.push_str(l.trim_end());
            out.push('\n');
        };
        line(&mut self.head.iter().map(|(h, _)| *h));
        for r in &self.rows {
            let blank = std::iter::repeat_n("", n.saturating_sub(r.len()));
            line(&mut r.iter().map(String::as_str).chain(blank));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_and_trim() {
        let mut t = Table::new(&[
            ("Name", Align::Left),
            ("Count", Align::Right),
            ("Note", Align::Left),
        ]);
        t.row(vec!["web-ls".into(), "7".into(), String::new()]);
        t.row(vec![
            "a".into(),
            "12345".into(),
            "x".into(),
            "dropped".into(),
        ]);
        t.row(vec!["short".into()]);
        assert_eq!(
            t.render(),
            "Name    Count  Note\n\
             web-ls      7\n\
             a       12345  x\n\
             short\n"
        );
    }
}
