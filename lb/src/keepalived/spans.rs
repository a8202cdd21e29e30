//! Where each part of the virtual servers read came from: a tree that
//! follows the model's field names (`real_servers[1].weight`), so a
//! problem found on the model ([`control::lb::check`], the gateway's
//! rules) at a path like `load_balancers[0].real_servers[1].weight` is
//! reported at the file:line of the keyword it concerns, or of the
//! nearest enclosing block when the keyword is absent (a missing
//! `persistence_timeout` is reported at its `virtual_server` line).

use super::Pos;

/// One block or keyword and the fields and list items below it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub at: Pos,
    fields: Vec<(&'static str, Node)>,
    items: Vec<Node>,
}

/// One step of a path.
enum Seg<'a> {
    Field(&'a str),
    Index(usize),
}

impl Node {
    pub fn new(at: Pos) -> Node {
        Node {
            at,
            fields: Vec::new(),
            items: Vec::new(),
        }
    }

    /// Records that `field` was set at `at` (the last setting wins).
    pub fn set(&mut self, field: &'static str, at: Pos) {
        *self.child(field, at) = Node::new(at);
    }

    /// The node of `field`, created at `at` if absent.
    pub fn child(&mut self, field: &'static str, at: Pos) -> &mut Node {
        let i = match self.fields.iter().position(|(f, _)| *f == field) {
            Some(i) => i,
            None => {
                self.fields.push((field, Node::new(at)));
                self.fields.len() - 1
            }
        };
        &mut self.fields[i].1
    }

    /// Where `field` was set, if it was.
    pub fn get(&self, field: &str) -> Option<Pos> {
        self.field(field).map(|n| n.at)
    }

    fn field(&self, field: &str) -> Option<&Node> {
        self.fields
            .iter()
            .find(|(f, _)| *f == field)
            .map(|(_, n)| n)
    }

    pub fn push(&mut self, item: Node) {
        self.items.push(item);
    }

    pub fn items_mut(&mut self) -> &mut [Node] {
        &mut self.items
    }

    /// Where the part at `path` (`[0].real_servers[1].weight`, relative to
    /// this node) was written: the deepest node the path reaches. `None`
    /// if not even its first step is here.
    pub fn locate(&self, path: &str) -> Option<Pos> {
        let mut node = self;
        let mut found = false;
        for seg in segments(path) {
            let next = match seg {
                Some(Seg::Field(f)) => node.field(f),
                Some(Seg::Index(i)) => node.items.get(i),
                None => None,
            };
            match next {
                Some(n) => {
                    node = n;
                    found = true;
                }
                None => break,
            }
        }
        found.then_some(node.at)
    }
}

/// The steps of `a.b[2][3].c`; `None` for a step that does not parse.
fn segments(path: &str) -> impl Iterator<Item = Option<Seg<'_>>> {
    path.split('.').filter(|s| !s.is_empty()).flat_map(|part| {
        let mut out = Vec::new();
        let (name, mut rest) = part.split_at(part.find('[').unwrap_or(part.len()));
        if !name.is_empty() {
            out.push(Some(Seg::Field(name)));
        }
        while let Some(r) = rest.strip_prefix('[') {
            let Some(end) = r.find(']') else {
                out.push(None);
                break;
            };
            out.push(r[..end].parse().ok().map(Seg::Index));
            rest = &r[end + 1..];
        }
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(line: u32) -> Pos {
        Pos {
            file: 0,
            line,
            at: 0,
        }
    }

    #[test]
    fn locate_walks_fields_and_items_and_stops_at_the_deepest() {
        let mut vs = Node::new(pos(1));
        vs.set("scheduler", pos(2));
        let mut rs = Node::new(pos(3));
        rs.set("weight", pos(4));
        vs.child("real_servers", pos(1)).push(Node::new(pos(5)));
        vs.child("real_servers", pos(1)).push(rs);
        let mut root = Node::new(pos(0));
        root.push(vs);
        assert_eq!(root.locate("[0].real_servers[1].weight"), Some(pos(4)));
        assert_eq!(root.locate("[0].real_servers[1].check.retry"), Some(pos(3)));
        assert_eq!(root.locate("[0].real_servers[0]"), Some(pos(5)));
        assert_eq!(root.locate("[0].persistence_timeout"), Some(pos(1)));
        assert_eq!(root.locate("[0].scheduler"), Some(pos(2)));
        assert_eq!(root.locate("[1].scheduler"), None);
        assert_eq!(root.locate("[x]"), None);
        assert_eq!(root.locate("[0][7"), Some(pos(1)));
    }
}
