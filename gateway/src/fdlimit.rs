//! The gateway's descriptor budget: at start `serve` raises its soft
//! `RLIMIT_NOFILE` toward what its listeners' connection caps can hold
//! (never above the hard limit), so the caps, not `EMFILE`, are what
//! bounds a flood. The common default soft limit of 1,024 is below the
//! control channel's cap alone.

use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// Descriptors kept for everything but connections: listeners, the
/// database, certificates read on enrollment, the installer's files.
pub const HEADROOM: u64 = 256;

/// Never asked for more than this: Linux refuses a limit above
/// `fs.nr_open` (1,048,576 by default) even under an unlimited hard limit.
pub const CEILING: u64 = 1 << 20;

/// What [`raise_nofile`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NofileLimit {
    /// Soft limit before.
    pub before: u64,
    /// Soft limit now.
    pub now: u64,
    /// The hard limit (the most an unprivileged raise can reach).
    pub hard: u64,
    /// What the connection caps need.
    pub wanted: u64,
}

impl NofileLimit {
    /// The caps can be reached without `EMFILE`.
    pub fn enough(&self) -> bool {
        self.now >= self.wanted
    }
}

/// Raises the soft descriptor limit to `connections + HEADROOM`, capped
/// at the hard limit and [`CEILING`]; never lowers it.
pub fn raise_nofile(connections: u64) -> nix::Result<NofileLimit> {
    let wanted = connections.saturating_add(HEADROOM);
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    let target = wanted.min(hard).min(CEILING);
    if target > soft {
        setrlimit(Resource::RLIMIT_NOFILE, target, hard)?;
    }
    Ok(NofileLimit {
        before: soft,
        now: soft.max(target),
        hard,
        wanted,
    })
}
