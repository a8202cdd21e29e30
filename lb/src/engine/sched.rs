//! The IPVS schedulers over one virtual server's real servers (its
//! *members*, in configuration order), with IPVS's semantics and bounded
//! work per decision however many servers there are:
//!
//! * `rr`: the next member after the last one picked with a weight above
//!   0, wrapping; `wrr`: IPVS's stepping (current weight `cw` starts at
//!   the largest weight, falls by the weights' gcd at each pass, members
//!   with a weight of at least `cw` are picked in order), so 3:1 gives
//!   exactly 3 of 4. Both find "the next member at or after `i` with a
//!   weight of at least `w`" in a max-tree over the weights: O(log n).
//! * `lc` (overhead `active * 256 + inactive`), `wlc` (overhead / weight),
//!   `sed` ((active + 1) / weight), `nq` (the first idle member, else
//!   `sed`): the first member of least load in configuration order, as
//!   IPVS's linear scan finds it, read from a tournament tree whose nodes
//!   hold the better of their two subtrees (ties to the left); a change
//!   of one member's counts replays its path to the root: O(log n).
//! * `sh` / `dh`: a table of buckets filled with the members in order,
//!   each taking as many consecutive buckets as its weight (`dh`: one), at
//!   least 256 buckets and at most 2^20 (IPVS has 256 fixed: more servers
//!   than that would never be picked), indexed by a multiplicative hash of
//!   the client's (`sh`) or the destination (`dh`) address. Only members
//!   with a weight above 0 get buckets (IPVS gives a drained server a
//!   bucket and drops what hashes there: here its clients move).
//! * `lblc`: the server last chosen for the destination address (for a
//!   balancer, the virtual address: one entry per virtual server) while it
//!   has a weight and is not overloaded (more active connections than its
//!   weight while another member has fewer than half its weight active),
//!   else `wlc`'s choice, which becomes the entry; an entry idle 24 hours
//!   is forgotten. `lblcr`: a set of servers per destination, the least
//!   loaded used unless overloaded (then `wlc`'s choice joins the set);
//!   the most loaded leaves the set when it has not changed for 24 hours.
//! * `mh`: Maglev ([`super::maglev`]) over the client's address.
//!
//! Choosing is pure ([`Sched::pick`]); what it moves (the `rr`/`wrr`
//! cursor, the `lblc`/`lblcr` entries) is a [`Step`] that
//! [`Sched::apply`] carries out, so `peek` can ask without changing.
//! Servers with an effective weight of 0 are never picked.

use control::lb::Scheduler;

use super::maglev::Maglev;

/// No member (tree leaves past the last member).
pub(crate) const NONE: u32 = u32::MAX;

/// A virtual server's real server as its scheduler sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Member {
    /// Server arena index.
    pub dest: u32,
    /// Effective weight (0: drained or down).
    pub weight: u32,
    pub active: u32,
    pub inactive: u32,
}

impl Member {
    /// IPVS's connection overhead: an active connection weighs 256
    /// inactive ones.
    #[inline(always)]
    pub fn overhead(&self) -> u64 {
        u64::from(self.active) * 256 + u64::from(self.inactive)
    }

    /// Fewer active connections than half its weight (lblc's "less
    /// loaded").
    #[inline(always)]
    pub fn underloaded(&self) -> bool {
        u64::from(self.active) * 2 < u64::from(self.weight)
    }

    /// More active connections than its weight (lblc's first overload test).
    #[inline(always)]
    fn over_weight(&self) -> bool {
        self.active > self.weight
    }
}

/// The least-load comparisons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Least {
    Lc,
    Wlc,
    Sed,
    Nq,
}

/// A member as the tournament compares it: a load and a weight, so that
/// "`b` is less loaded than `a`" is `a.load * b.weight > b.load *
/// a.weight` for every kind (lc: weight 1; nq: an idle member's load is
/// 0, so it beats any busy one and the first idle one stays). A member
/// without weight is [`EMPTY`]: it loses to any other and ties with
/// itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Node {
    load: u64,
    weight: u32,
    pos: u32,
}

const EMPTY: Node = Node {
    load: 1,
    weight: 0,
    pos: NONE,
};

/// The less loaded of `a` and `b` (`a`, the left one, on a tie).
#[inline(always)]
fn winner(a: Node, b: Node) -> Node {
    if a.load * u64::from(b.weight) > b.load * u64::from(a.weight) {
        b
    } else {
        a
    }
}

impl Least {
    #[inline(always)]
    fn node(self, m: &Member, pos: u32) -> Node {
        if m.weight == 0 {
            return EMPTY;
        }
        let busy = u64::from(m.active) + 1;
        let (load, weight) = match self {
            Least::Lc => (m.overhead(), 1),
            Least::Wlc => (m.overhead(), m.weight),
            Least::Sed => (busy, m.weight),
            Least::Nq => (if m.active == 0 { 0 } else { busy }, m.weight),
        };
        Node { load, weight, pos }
    }

    /// Whether `b` is strictly less loaded than `a` (both weighted).
    #[inline(always)]
    fn better(self, b: &Member, a: &Member) -> bool {
        let (na, nb) = (self.node(a, 0), self.node(b, 1));
        winner(na, nb) == nb
    }
}

/// Leaves for `n` members: a power of two, at least 1.
fn leaves_for(n: usize) -> usize {
    n.max(1).next_power_of_two()
}

fn pos32(i: usize) -> u32 {
    u32::try_from(i).unwrap_or(NONE)
}

/// A tournament tree over the members (see the module docs).
#[derive(Debug, Clone)]
pub(crate) struct Tourney {
    kind: Least,
    leaves: usize,
    /// Node `i`'s children are `2i` and `2i + 1`; leaves at `leaves..`.
    nodes: Vec<Node>,
}

impl Tourney {
    pub fn new(kind: Least, members: &[Member]) -> Tourney {
        let leaves = leaves_for(members.len());
        let mut nodes = vec![EMPTY; 2 * leaves];
        for (i, m) in members.iter().enumerate() {
            nodes[leaves + i] = kind.node(m, pos32(i));
        }
        for i in (1..leaves).rev() {
            nodes[i] = winner(nodes[2 * i], nodes[2 * i + 1]);
        }
        Tourney {
            kind,
            leaves,
            nodes,
        }
    }

    /// Member `pos`'s counts or weight changed.
    #[inline]
    pub fn update(&mut self, members: &[Member], pos: u32) {
        let Some(m) = members.get(pos as usize) else {
            return;
        };
        let mut i = self.leaves + pos as usize;
        let Some(leaf) = self.nodes.get_mut(i) else {
            return;
        };
        *leaf = self.kind.node(m, pos);
        while i > 1 {
            i /= 2;
            let w = winner(self.nodes[2 * i], self.nodes[2 * i + 1]);
            if self.nodes[i] == w {
                // The same winner with the same load: nothing above changes.
                break;
            }
            self.nodes[i] = w;
        }
    }

    /// The least loaded member with a weight.
    #[inline]
    pub fn best(&self) -> Option<u32> {
        self.nodes.get(1).map(|n| n.pos).filter(|&p| p != NONE)
    }
}

/// A max-tree over the members' weights: the first member at or after a
/// position with a weight of at least a bound.
#[derive(Debug, Clone)]
pub(crate) struct MaxTree {
    leaves: usize,
    nodes: Vec<u32>,
}

impl MaxTree {
    pub fn new(members: &[Member]) -> MaxTree {
        let leaves = leaves_for(members.len());
        let mut nodes = vec![0; 2 * leaves];
        for (i, m) in members.iter().enumerate() {
            nodes[leaves + i] = m.weight;
        }
        for i in (1..leaves).rev() {
            nodes[i] = nodes[2 * i].max(nodes[2 * i + 1]);
        }
        MaxTree { leaves, nodes }
    }

    /// The first position `>= from` whose weight is `>= at_least` (>= 1).
    #[inline]
    pub fn first_at_least(&self, from: usize, at_least: u32) -> Option<u32> {
        if from >= self.leaves {
            return None;
        }
        let mut i = self.leaves + from;
        // Up: until a subtree starting at or after `from` holds one.
        loop {
            if self.nodes[i] >= at_least {
                break;
            }
            // Climb while a right child, then step to the right sibling.
            while i & 1 == 1 {
                i >>= 1;
                if i <= 1 {
                    return None;
                }
            }
            i += 1;
        }
        // Down: the leftmost leaf that qualifies.
        while i < self.leaves {
            i = if self.nodes[2 * i] >= at_least {
                2 * i
            } else {
                2 * i + 1
            };
        }
        Some(pos32(i - self.leaves))
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    let (mut a, mut b) = (a, b);
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// A bucket table for `sh` / `dh`.
#[derive(Debug, Clone)]
pub(crate) struct Buckets {
    shift: u32,
    table: Vec<u32>,
}

/// Fewest and most bucket bits.
const MIN_BUCKET_BITS: u32 = 8;
const MAX_BUCKET_BITS: u32 = 20;

impl Buckets {
    /// Buckets filled in member order, `weighted`: each member with a
    /// weight takes that many consecutive buckets (else one each), round
    /// after round until the table is full. Empty when no member has a
    /// weight.
    pub fn new(members: &[Member], weighted: bool) -> Buckets {
        let per = |m: &Member| if weighted { u64::from(m.weight) } else { 1 };
        let total: u64 = members.iter().filter(|m| m.weight > 0).map(per).sum();
        let mut bits = MIN_BUCKET_BITS;
        while bits < MAX_BUCKET_BITS && (1u64 << bits) < total {
            bits += 1;
        }
        let size = 1usize << bits;
        let mut table = Vec::with_capacity(if total == 0 { 0 } else { size });
        if total > 0 {
            'fill: loop {
                for (i, m) in members.iter().enumerate() {
                    if m.weight == 0 {
                        continue;
                    }
                    for _ in 0..per(m) {
                        if table.len() == size {
                            break 'fill;
                        }
                        table.push(pos32(i));
                    }
                }
            }
        }
        Buckets {
            shift: 32 - bits,
            table,
        }
    }

    /// The member address `addr` hashes to (Fibonacci hashing: the top
    /// bits of the address times 2^32 / phi).
    #[inline(always)]
    pub fn get(&self, addr: u32) -> Option<u32> {
        if self.table.is_empty() {
            return None;
        }
        let h = addr.wrapping_mul(0x9e37_79b9) >> self.shift;
        self.table.get(h as usize).copied()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.table.len()
    }
}

/// An lblc entry: the server last chosen, and when it was last used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LblcEntry {
    pub dest: u32,
    pub pos: u32,
    pub used: u32,
}

/// lblcr's server set for the destination.
#[derive(Debug, Clone)]
pub(crate) struct LblcrSet {
    /// (server arena index, member position); capacity: every member.
    pub servers: Vec<(u32, u32)>,
    /// Tick of the last change; of the last use.
    pub modified: u32,
    pub used: u32,
}

/// How long an lblc/lblcr entry lives unused, and how long an lblcr set
/// stays unchanged before its most loaded server leaves (IPVS's
/// `lblc_expiration` / `lblcr_expiration`: 24 hours), ticks.
pub(crate) fn locality_expiry_ticks() -> u32 {
    super::ticks_of_secs(24 * 3600)
}

/// One scheduler's state.
#[derive(Debug, Clone)]
pub(crate) enum Sched {
    Rr {
        tree: MaxTree,
        /// Position of the last pick.
        last: Option<u32>,
    },
    Wrr {
        tree: MaxTree,
        last: Option<u32>,
        cw: u32,
        /// The weights' gcd, and the largest weight less gcd - 1.
        di: u32,
        mw: u32,
    },
    Least(Tourney),
    Sh(Buckets),
    Dh(Buckets),
    Lblc {
        tree: Tourney,
        entry: Option<LblcEntry>,
    },
    Lblcr {
        tree: Tourney,
        set: LblcrSet,
    },
    Mh(Maglev),
}

/// What a decision moves in the scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Step {
    #[default]
    None,
    Rr {
        last: u32,
    },
    Wrr {
        last: u32,
        cw: u32,
    },
    /// The entry becomes (or stays) this server, used now.
    Lblc {
        dest: u32,
        pos: u32,
    },
    /// The set is used now; `erase`: its most loaded server leaves;
    /// `add`: a server joins.
    Lblcr {
        erase: Option<u32>,
        add: Option<(u32, u32)>,
    },
}

/// What a scheduler is given about the packet.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ask {
    pub client: u32,
    /// The destination address (the virtual address).
    pub daddr: u32,
    pub now: u32,
    /// Members with fewer active connections than half their weight.
    pub underloaded: u32,
}

fn idle(since: u32, now: u32) -> u32 {
    super::idle_ticks(since, now)
}

impl Sched {
    /// A scheduler for `members`, keeping what it can of `old` (the same
    /// virtual server's previous state), as IPVS keeps a scheduler across
    /// server changes. `addrs`: each member's (address, port) (Maglev
    /// hashes them).
    pub fn new(
        kind: Scheduler,
        members: &[Member],
        addrs: &[(u32, u16)],
        old: Option<(&Sched, &[Member])>,
    ) -> Sched {
        // The old state's positions, as new positions (by server).
        let remap = |pos: u32| -> Option<u32> {
            let (_, old_members) = old?;
            let dest = old_members.get(pos as usize)?.dest;
            members.iter().position(|m| m.dest == dest).map(pos32)
        };
        let old = old.map(|(s, _)| s);
        match kind {
            Scheduler::Rr => {
                let last = match old {
                    Some(Sched::Rr { last: Some(l), .. }) => remap(*l),
                    _ => None,
                };
                Sched::Rr {
                    tree: MaxTree::new(members),
                    last,
                }
            }
            Scheduler::Wrr => {
                let g = members
                    .iter()
                    .map(|m| m.weight)
                    .filter(|&w| w > 0)
                    .fold(0, gcd);
                let di = g.max(1);
                let max = members.iter().map(|m| m.weight).max().unwrap_or(0);
                let mw = max.saturating_sub(di - 1);
                // IPVS on a server change: from the head; the current weight
                // kept if it still fits, on the gcd's grid.
                let (last, cw) = match old {
                    Some(Sched::Wrr {
                        cw,
                        last,
                        di: odi,
                        mw: omw,
                        ..
                    }) if *odi == di && *omw == mw => (last.and_then(remap), *cw),
                    Some(Sched::Wrr { cw, .. }) if *cw != 0 && *cw <= mw => {
                        let cw = if di > 1 { (cw / di) * di + 1 } else { *cw };
                        (None, cw)
                    }
                    _ => (None, mw),
                };
                Sched::Wrr {
                    tree: MaxTree::new(members),
                    last,
                    cw,
                    di,
                    mw,
                }
            }
            Scheduler::Lc => Sched::Least(Tourney::new(Least::Lc, members)),
            Scheduler::Wlc => Sched::Least(Tourney::new(Least::Wlc, members)),
            Scheduler::Sed => Sched::Least(Tourney::new(Least::Sed, members)),
            Scheduler::Nq => Sched::Least(Tourney::new(Least::Nq, members)),
            Scheduler::Sh => Sched::Sh(Buckets::new(members, true)),
            Scheduler::Dh => Sched::Dh(Buckets::new(members, false)),
            Scheduler::Lblc => {
                let entry = match old {
                    Some(Sched::Lblc { entry: Some(e), .. }) => {
                        remap(e.pos).map(|pos| LblcEntry { pos, ..*e })
                    }
                    _ => None,
                };
                Sched::Lblc {
                    tree: Tourney::new(Least::Wlc, members),
                    entry,
                }
            }
            Scheduler::Lblcr => {
                let mut servers = Vec::with_capacity(members.len());
                let (mut modified, mut used) = (0, 0);
                if let Some(Sched::Lblcr { set, .. }) = old {
                    for &(_, pos) in &set.servers {
                        if let Some(p) = remap(pos)
                            && let Some(m) = members.get(p as usize)
                        {
                            servers.push((m.dest, p));
                        }
                    }
                    (modified, used) = (set.modified, set.used);
                }
                Sched::Lblcr {
                    tree: Tourney::new(Least::Wlc, members),
                    set: LblcrSet {
                        servers,
                        modified,
                        used,
                    },
                }
            }
            Scheduler::Mh => {
                let weighted: Vec<(u32, u16, u32)> = addrs
                    .iter()
                    .zip(members)
                    .map(|(&(ip, port), m)| (ip, port, m.weight))
                    .collect();
                match old {
                    Some(Sched::Mh(m)) if m.built_from(&weighted) => Sched::Mh(m.clone()),
                    _ => Sched::Mh(Maglev::new(&weighted)),
                }
            }
        }
    }

    /// Member `pos`'s counts or weight changed (`members` already holds
    /// the new values). Weights only change with the configuration, which
    /// rebuilds the scheduler; counts move the least-load trees.
    #[inline]
    pub fn update(&mut self, members: &[Member], pos: u32) {
        match self {
            Sched::Least(t) | Sched::Lblc { tree: t, .. } | Sched::Lblcr { tree: t, .. } => {
                t.update(members, pos);
            }
            _ => {}
        }
    }

    /// The member a new connection goes to, and what the choice moves.
    /// `None`: no member can take it.
    #[inline]
    pub fn pick(&self, members: &[Member], ask: &Ask) -> Option<(u32, Step)> {
        match self {
            Sched::Rr { tree, last } => {
                let from = last.map_or(0, |l| l as usize + 1);
                let pos = tree
                    .first_at_least(from, 1)
                    .or_else(|| tree.first_at_least(0, 1))?;
                Some((pos, Step::Rr { last: pos }))
            }
            Sched::Wrr {
                tree,
                last,
                cw,
                di,
                mw,
            } => {
                if *mw == 0 {
                    return None;
                }
                let (mut last, mut cw) = (*last, *cw);
                // The second pass always finds one: cw <= mw <= the largest weight.
                for _ in 0..3 {
                    if cw > 0 {
                        let from = last.map_or(0, |l| l as usize + 1);
                        if let Some(pos) = tree.first_at_least(from, cw) {
                            return Some((pos, Step::Wrr { last: pos, cw }));
                        }
                    }
                    cw = cw.saturating_sub(*di);
                    if cw == 0 {
                        cw = *mw;
                    }
                    last = None;
                }
                None
            }
            Sched::Least(t) => t.best().map(|p| (p, Step::None)),
            Sched::Sh(b) => b.get(ask.client).map(|p| (p, Step::None)),
            Sched::Dh(b) => b.get(ask.daddr).map(|p| (p, Step::None)),
            Sched::Mh(m) => m.get(ask.client).map(|p| (u32::from(p), Step::None)),
            Sched::Lblc { tree, entry } => {
                let overloaded = |m: &Member| m.over_weight() && ask.underloaded > 0;
                if let Some(e) = entry
                    && idle(e.used, ask.now) <= locality_expiry_ticks()
                    && let Some(m) = members.get(e.pos as usize)
                    && m.dest == e.dest
                    && m.weight > 0
                    && !overloaded(m)
                {
                    return Some((
                        e.pos,
                        Step::Lblc {
                            dest: e.dest,
                            pos: e.pos,
                        },
                    ));
                }
                let pos = tree.best()?;
                let dest = members.get(pos as usize)?.dest;
                Some((pos, Step::Lblc { dest, pos }))
            }
            Sched::Lblcr { tree, set } => {
                let overloaded = |m: &Member| m.over_weight() && ask.underloaded > 0;
                let live = idle(set.used, ask.now) <= locality_expiry_ticks();
                let valid = |&&(dest, pos): &&(u32, u32)| {
                    members
                        .get(pos as usize)
                        .is_some_and(|m| m.dest == dest && m.weight > 0)
                };
                let mut erase = None;
                let mut min = None;
                if live && !set.servers.is_empty() {
                    // The least loaded of the set (first of equals), as wlc.
                    let wlc = Least::Wlc;
                    for s in set.servers.iter().filter(valid) {
                        let m = &members[s.1 as usize];
                        match min {
                            Some((_, b)) if !wlc.better(m, b) => {}
                            _ => min = Some((s.1, m)),
                        }
                    }
                    if set.servers.len() > 1
                        && idle(set.modified, ask.now) > locality_expiry_ticks()
                    {
                        // The most loaded leaves (first of equals).
                        let mut max: Option<(u32, &Member)> = None;
                        for s in set.servers.iter().filter(valid) {
                            let m = &members[s.1 as usize];
                            match max {
                                Some((_, b)) if !wlc.better(b, m) => {}
                                _ => max = Some((s.0, m)),
                            }
                        }
                        erase = max.map(|(d, _)| d);
                    }
                }
                if let Some((pos, m)) = min
                    && !overloaded(m)
                {
                    return Some((pos, Step::Lblcr { erase, add: None }));
                }
                let pos = tree.best()?;
                let dest = members.get(pos as usize)?.dest;
                Some((
                    pos,
                    Step::Lblcr {
                        erase,
                        add: Some((dest, pos)),
                    },
                ))
            }
        }
    }

    /// Carries out what a pick moves.
    #[inline]
    pub fn apply(&mut self, step: &Step, now: u32) {
        match (self, *step) {
            (Sched::Rr { last, .. }, Step::Rr { last: l }) => *last = Some(l),
            (Sched::Wrr { last, cw, .. }, Step::Wrr { last: l, cw: c }) => {
                *last = Some(l);
                *cw = c;
            }
            (Sched::Lblc { entry, .. }, Step::Lblc { dest, pos }) => {
                *entry = Some(LblcEntry {
                    dest,
                    pos,
                    used: now,
                });
            }
            (Sched::Lblcr { set, .. }, Step::Lblcr { erase, add }) => {
                if idle(set.used, now) > locality_expiry_ticks() {
                    // Unused for its lifetime: a new entry.
                    set.servers.clear();
                    set.modified = now;
                }
                set.used = now;
                if let Some(d) = erase
                    && let Some(i) = set.servers.iter().position(|s| s.0 == d)
                {
                    set.servers.swap_remove(i);
                    set.modified = now;
                }
                if let Some(a) = add
                    && !set.servers.iter().any(|s| s.0 == a.0)
                    && set.servers.len() < set.servers.capacity()
                {
                    set.servers.push(a);
                    set.modified = now;
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(weights: &[u32]) -> Vec<Member> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| Member {
                dest: u32::try_from(i).unwrap() + 100,
                weight: w,
                ..Member::default()
            })
            .collect()
    }

    fn ask() -> Ask {
        Ask {
            client: 1,
            daddr: 2,
            now: 0,
            underloaded: 0,
        }
    }

    fn run(s: &mut Sched, m: &[Member], n: usize) -> Vec<u32> {
        (0..n)
            .map(|_| {
                let (p, step) = s.pick(m, &ask()).unwrap();
                s.apply(&step, 0);
                p
            })
            .collect()
    }

    #[test]
    fn max_tree_finds_first_at_least() {
        let m = members(&[0, 3, 1, 0, 5, 2]);
        let t = MaxTree::new(&m);
        assert_eq!(t.first_at_least(0, 1), Some(1));
        assert_eq!(t.first_at_least(2, 1), Some(2));
        assert_eq!(t.first_at_least(2, 2), Some(4));
        assert_eq!(t.first_at_least(5, 2), Some(5));
        assert_eq!(t.first_at_least(5, 3), None);
        assert_eq!(t.first_at_least(0, 6), None);
        assert_eq!(t.first_at_least(9, 1), None);
        // Against a scan, many shapes.
        let ws: Vec<u32> = (0..37u32).map(|i| (i * 7919) % 6).collect();
        let m = members(&ws);
        let t = MaxTree::new(&m);
        for from in 0..40 {
            for at in 1..7 {
                let want = ws
                    .iter()
                    .enumerate()
                    .skip(from)
                    .find(|(_, w)| **w >= at)
                    .map(|(i, _)| u32::try_from(i).unwrap());
                assert_eq!(t.first_at_least(from, at), want, "{from} {at}");
            }
        }
    }

    #[test]
    fn wrr_is_ipvs_sequence() {
        let m = members(&[3, 1]);
        let mut s = Sched::new(Scheduler::Wrr, &m, &[], None);
        assert_eq!(run(&mut s, &m, 8), [0, 0, 0, 1, 0, 0, 0, 1]);
        let m = members(&[4, 0, 2, 6]);
        let mut s = Sched::new(Scheduler::Wrr, &m, &[], None);
        // gcd 2, mw 5: cw 5 -> {3}, 3 -> {0, 3}, 1 -> {0, 2, 3}.
        assert_eq!(run(&mut s, &m, 6), [3, 0, 3, 0, 2, 3]);
    }

    #[test]
    fn rr_skips_weightless_and_wraps() {
        let m = members(&[1, 0, 1, 1]);
        let mut s = Sched::new(Scheduler::Rr, &m, &[], None);
        assert_eq!(run(&mut s, &m, 5), [0, 2, 3, 0, 2]);
        let m = members(&[0, 0]);
        let s = Sched::new(Scheduler::Rr, &m, &[], None);
        assert!(s.pick(&m, &ask()).is_none());
    }

    /// The linear scans IPVS does, to hold the trees to.
    fn scan(kind: Least, m: &[Member]) -> Option<u32> {
        let mut best: Option<usize> = None;
        for (i, x) in m.iter().enumerate() {
            if x.weight == 0 {
                continue;
            }
            if kind == Least::Nq && x.active == 0 {
                return Some(u32::try_from(i).unwrap());
            }
            match best {
                None => best = Some(i),
                Some(b) if kind.better(x, &m[b]) => best = Some(i),
                _ => {}
            }
        }
        best.map(|b| u32::try_from(b).unwrap())
    }

    #[test]
    fn tournament_matches_linear_scan() {
        let mut x = 12345u64;
        let mut rnd = |n: u64| {
            x = nat::index::mix64(x);
            u32::try_from(x % n).unwrap()
        };
        for kind in [Least::Lc, Least::Wlc, Least::Sed, Least::Nq] {
            let ws: Vec<u32> = (0..53).map(|_| rnd(4)).collect();
            let mut m = members(&ws);
            for e in &mut m {
                e.active = rnd(3);
                e.inactive = rnd(5);
            }
            let mut t = Tourney::new(kind, &m);
            for _ in 0..2000 {
                assert_eq!(t.best(), scan(kind, &m), "{kind:?}");
                let p = rnd(53);
                let e = &mut m[p as usize];
                match rnd(4) {
                    0 => e.active += 1,
                    1 => e.active = e.active.saturating_sub(1),
                    2 => e.inactive += 1,
                    _ => e.inactive = e.inactive.saturating_sub(1),
                }
                t.update(&m, p);
            }
        }
    }

    #[test]
    fn buckets_weighted_in_order() {
        let m = members(&[2, 0, 1]);
        let b = Buckets::new(&m, true);
        assert_eq!(b.len(), 256);
        assert_eq!(&b.table[..6], &[0, 0, 2, 0, 0, 2]);
        let b = Buckets::new(&m, false);
        assert_eq!(&b.table[..4], &[0, 2, 0, 2]);
        assert!(Buckets::new(&members(&[0]), true).get(5).is_none());
        // 1000 servers: every one gets buckets.
        let m = members(&[1; 1000]);
        let b = Buckets::new(&m, true);
        assert_eq!(b.len(), 1024);
        assert_eq!(b.table[999], 999);
    }
}
