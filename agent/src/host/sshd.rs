//! Overlay mode's ssh access, as the seed describes NSX Cloud: once an
//! instance joins the overlay, "an sshd used on the Downlink (underlay)
//! subnet starts on port 8888, and ssh to port 22 via the underlay is no
//! longer possible"; port 22 is reached through the overlay.
//!
//! In overlay mode (never in micro-segmentation, never before the first
//! config) a supervisor task starts the configured OpenSSH server twice,
//! each `sshd -D -e -o ListenAddress=IP:PORT -p PORT -o PidFile=none
//! <sshd_args>` (foreground, logging to stderr, which is forwarded into
//! the agent's log with target `nsx_agent::sshd`):
//!
//! * underlay: in the instance's namespace on `<underlay IP>:ssh_underlay_port`
//!   (8888); once it listens, new TCP connections to port 22 arriving on
//!   `vtep_if` are refused with a reset (an `inet` nf_tables table, see
//!   `host::nft`), and as soon as it is not listening any more the block
//!   goes, so the operator is never locked out. Established sessions are
//!   not cut.
//! * overlay: inside the overlay netns on `<port IP>:ssh_overlay_port` (22),
//!   spawned from a thread that entered the namespace
//!   (`host::spawn_in_netns`), so the child is born there.
//!
//! Each listener is our child, polled every 200 ms: one that exits, or is
//! not listening 10 s after starting, is logged and restarted after a
//! capped backoff (1 s doubling to 30 s; back to 1 s after 30 s of
//! running). Whether it listens is read from `/proc/PID/net/tcp` and the
//! child's own fds (no probe connections). A new overlay IP restarts the
//! overlay sshd on it. Stopping (a mode change, SIGTERM, also with
//! `on_stop = "keep"`) removes the block, then stops both listeners
//! (SIGTERM, 3 s, SIGKILL); the sessions they forked keep running. The
//! listeners and the table are recorded in the host-state file as they
//! change, so `nsx-agent cleanup` (or the next start) stops what a
//! SIGKILLed agent left. Without the sshd binary the feature is off and
//! nothing changes. sshd reads the system's `sshd_config` as well: its
//! `ListenAddress` lines would add to ours (Debian's default has none; use
//! `sshd_args = ["-f", FILE]` for a dedicated config).

use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub use agent_api::{SshStatus, SshdStatus};

use crate::config::{HostSettings, SSH_PORT};
use crate::host::{self, HostError, SshState};

/// sshd's privilege-separation directory (created 0755 if missing).
pub const PRIVSEP_DIR: &str = "/run/sshd";
/// How often the listeners are looked at.
const TICK: Duration = Duration::from_millis(200);
/// How long a new sshd may take to listen.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Running this long resets the backoff.
const STABLE: Duration = Duration::from_secs(30);
/// SIGTERM grace before SIGKILL, and how long SIGKILL may take.
const TERM_GRACE: Duration = Duration::from_secs(3);
const KILL_WAIT: Duration = Duration::from_secs(2);
/// How long a failed block waits before it is tried again.
const BLOCK_RETRY: Duration = Duration::from_secs(10);
/// Longest sshd log line forwarded in one piece.
const MAX_LOG_LINE: u64 = 2048;

/// "no sshd" is logged once per agent, not once per mode change.
static NO_SSHD_LOGGED: AtomicBool = AtomicBool::new(false);

/// Why an sshd could not be started or the block not written.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error("privilege separation directory {path}: {source}")]
    PrivsepDir {
        path: String,
        source: std::io::Error,
    },
    #[error("start {sshd} for {listen}: {source}")]
    Spawn {
        sshd: String,
        listen: SocketAddrV4,
        source: std::io::Error,
    },
    #[error("start sshd for {listen}: {source}")]
    Netns {
        listen: SocketAddrV4,
        source: Box<HostError>,
    },
    #[error("underlay interface {ifname}: {reason}")]
    NoInterface { ifname: String, reason: String },
    #[error("refusing TCP {SSH_PORT} on {ifname}: {source}")]
    Block {
        ifname: String,
        source: Box<HostError>,
    },
}

/// Where the agent is when the supervisor starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Overlay mode: the underlay IP (on `vtep_if`) and the port's IP.
    Overlay {
        underlay_ip: Ipv4Addr,
        overlay_ip: Ipv4Addr,
    },
    /// Micro-segmentation: nothing runs (leftovers are still cleared).
    Microseg,
}

#[derive(Debug)]
enum Cmd {
    OverlayIp(Ipv4Addr),
    Stop,
}

/// The running supervisor (or an idle one that only cleared leftovers).
#[derive(Debug)]
pub struct Ssh {
    tx: mpsc::UnboundedSender<Cmd>,
    task: JoinHandle<()>,
}

impl Ssh {
    /// Starts the supervisor task: it first stops what an earlier run left
    /// (recorded sshd listeners, the table), then, in overlay mode with
    /// the feature on, starts the listeners. Reports into `status`.
    pub fn start(host: &HostSettings, mode: Mode, status: Arc<Mutex<SshStatus>>) -> Ssh {
        let (tx, rx) = mpsc::unbounded_channel();
        let host = host.clone();
        let task = tokio::spawn(async move {
            if let Err(error) = host::clear_ssh(&host).await {
                tracing::warn!(%error, "cannot clear an earlier run's underlay ssh");
            }
            match Supervisor::new(&host, mode, Arc::clone(&status)) {
                Ok(sup) => sup.run(rx).await,
                Err(reason) => {
                    set(&status, SshStatus::off(reason));
                    idle(rx).await;
                }
            }
        });
        Ssh { tx, task }
    }

    /// The port's IP changed: the overlay sshd moves to it.
    pub fn set_overlay_ip(&self, ip: Ipv4Addr) {
        let _ = self.tx.send(Cmd::OverlayIp(ip));
    }

    /// Removes the block and stops both listeners (bounded: a few seconds).
    pub async fn stop(self) {
        let _ = self.tx.send(Cmd::Stop);
        if let Err(e) = self.task.await {
            tracing::warn!(error = %e, "underlay ssh supervisor ended abnormally");
        }
    }
}

fn set(status: &Mutex<SshStatus>, s: SshStatus) {
    if let Ok(mut st) = status.lock() {
        *st = s;
    }
}

async fn idle(mut rx: mpsc::UnboundedReceiver<Cmd>) {
    while let Some(cmd) = rx.recv().await {
        if matches!(cmd, Cmd::Stop) {
            break;
        }
    }
}

/// Why the feature is off for these settings (`None`: on).
fn off_reason(host: &HostSettings, mode: Mode) -> Option<String> {
    if mode == Mode::Microseg {
        return Some("not in overlay mode".into());
    }
    if host.ssh_underlay_port == 0 && host.ssh_overlay_port == 0 {
        return Some("ssh_underlay_port and ssh_overlay_port are 0".into());
    }
    let usable = std::fs::metadata(&host.sshd)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false);
    if !usable {
        if !NO_SSHD_LOGGED.swap(true, Ordering::Relaxed) {
            tracing::info!(
                "no sshd at {}: underlay ssh on {} is off (port {SSH_PORT} is left alone)",
                host.sshd.display(),
                host.ssh_underlay_port
            );
        }
        return Some(format!("no sshd at {}", host.sshd.display()));
    }
    None
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Underlay,
    Overlay,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Underlay => "underlay",
            Kind::Overlay => "overlay",
        }
    }
}

/// One listener: where it should listen and what runs.
struct Slot {
    kind: Kind,
    /// `None`: this listener is off (port 0).
    listen: Option<SocketAddrV4>,
    netns: Option<String>,
    run: Option<Running>,
    restarts: u32,
    backoff: Duration,
    /// When to start (again); `None` while running or off.
    next_start: Option<Instant>,
    last_error: Option<String>,
}

struct Running {
    child: Child,
    pid: u32,
    rec: Option<host::ProcRec>,
    since: Instant,
    listening: bool,
}

struct Supervisor {
    sshd: PathBuf,
    args: Vec<String>,
    vtep_if: String,
    table: String,
    state_dir: PathBuf,
    slots: [Slot; 2],
    /// The block is in place.
    blocked: bool,
    /// The table may exist (written, or a write was tried).
    table_maybe: bool,
    block_failed_at: Option<Instant>,
    unblock_failed_at: Option<Instant>,
    block_error: Option<String>,
    status: Arc<Mutex<SshStatus>>,
}

impl Supervisor {
    fn new(
        host: &HostSettings,
        mode: Mode,
        status: Arc<Mutex<SshStatus>>,
    ) -> Result<Supervisor, String> {
        if let Some(reason) = off_reason(host, mode) {
            return Err(reason);
        }
        let Mode::Overlay {
            underlay_ip,
            overlay_ip,
        } = mode
        else {
            return Err("not in overlay mode".into());
        };
        let now = Instant::now();
        let slot = |kind, ip, port: u16, netns: Option<String>| Slot {
            kind,
            listen: (port != 0).then(|| SocketAddrV4::new(ip, port)),
            netns,
            run: None,
            restarts: 0,
            backoff: BACKOFF_MIN,
            next_start: (port != 0).then_some(now),
            last_error: None,
        };
        Ok(Supervisor {
            sshd: host.sshd.clone(),
            args: host.sshd_args.clone(),
            vtep_if: host.vtep_if.clone(),
            table: host::nft::ssh_table_name(&host.nic),
            state_dir: host.state_dir.clone(),
            slots: [
                slot(Kind::Underlay, underlay_ip, host.ssh_underlay_port, None),
                slot(
                    Kind::Overlay,
                    overlay_ip,
                    host.ssh_overlay_port,
                    Some(host.netns.clone()),
                ),
            ],
            blocked: false,
            // Unknown until looked at: the first poll deletes a stale one
            // (never a block without our sshd listening).
            table_maybe: true,
            block_failed_at: None,
            unblock_failed_at: None,
            block_error: None,
            status,
        })
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Cmd>) {
        self.publish();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(Cmd::OverlayIp(ip)) => self.move_overlay(ip).await,
                    Some(Cmd::Stop) | None => break,
                },
                _ = tick.tick() => self.poll().await,
            }
        }
        self.shutdown().await;
    }

    /// Looks at both listeners: exits, readiness, due (re)starts, the block.
    async fn poll(&mut self) {
        let mut changed = false;
        for i in 0..self.slots.len() {
            changed |= self.poll_slot(i).await;
        }
        let underlay_up = self.slots[0].run.as_ref().is_some_and(|r| r.listening);
        if underlay_up && !self.blocked {
            let due = self
                .block_failed_at
                .is_none_or(|t| t.elapsed() >= BLOCK_RETRY);
            if due {
                self.block();
                changed = true;
            }
        } else if !underlay_up && self.table_maybe {
            let due = self
                .unblock_failed_at
                .is_none_or(|t| t.elapsed() >= BLOCK_RETRY);
            if due {
                self.unblock();
                changed = true;
            }
        }
        if changed {
            self.record();
            self.publish();
        }
    }

    /// Returns whether anything changed.
    async fn poll_slot(&mut self, i: usize) -> bool {
        let slot = &mut self.slots[i];
        let Some(listen) = slot.listen else {
            return false;
        };
        let Some(run) = slot.run.as_mut() else {
            if slot.next_start.is_some_and(|t| t <= Instant::now()) {
                self.spawn(i).await;
                return true;
            }
            return false;
        };
        let why = match run.child.try_wait() {
            Ok(Some(status)) => format!("exited ({status})"),
            Err(e) => format!("cannot be waited for: {e}"),
            Ok(None) if run.listening => return false,
            Ok(None) => {
                if is_listening(run.pid, listen) {
                    run.listening = true;
                    tracing::info!(
                        sshd = slot.kind.name(), pid = run.pid, %listen, netns = netns_name(&slot.netns),
                        "sshd listening"
                    );
                    return true;
                }
                if run.since.elapsed() < STARTUP_TIMEOUT {
                    return false;
                }
                terminate(&mut run.child, run.pid).await;
                format!(
                    "not listening on {listen} {} s after starting",
                    STARTUP_TIMEOUT.as_secs()
                )
            }
        };
        self.failed(i, why);
        true
    }

    /// The listener in slot `i` is gone (or never came up): schedule a restart.
    fn failed(&mut self, i: usize, why: String) {
        let slot = &mut self.slots[i];
        if let Some(run) = slot.run.take()
            && run.listening
            && run.since.elapsed() >= STABLE
        {
            slot.backoff = BACKOFF_MIN;
        }
        let Some(listen) = slot.listen else {
            return;
        };
        slot.restarts = slot.restarts.saturating_add(1);
        slot.next_start = Some(Instant::now() + slot.backoff);
        tracing::warn!(
            sshd = slot.kind.name(), %listen, netns = netns_name(&slot.netns),
            "sshd {why}; restarting in {} s", slot.backoff.as_secs()
        );
        slot.last_error = Some(why);
        slot.backoff = (slot.backoff * 2).min(BACKOFF_MAX);
    }

    async fn spawn(&mut self, i: usize) {
        let (kind, listen, netns) = {
            let s = &self.slots[i];
            let Some(listen) = s.listen else { return };
            (s.kind, listen, s.netns.clone())
        };
        match self.start_sshd(listen, netns.as_deref()).await {
            Ok(mut child) => {
                let pid = child.id();
                if let Some(stderr) = child.stderr.take() {
                    forward_log(stderr.into(), kind);
                }
                let rec = host::proc_record(pid, &listen_marker(listen));
                tracing::info!(sshd = kind.name(), pid, %listen, netns = netns_name(&netns), "sshd started");
                let slot = &mut self.slots[i];
                slot.next_start = None;
                slot.run = Some(Running {
                    child,
                    pid,
                    rec,
                    since: Instant::now(),
                    listening: false,
                });
                self.record();
            }
            Err(e) => self.failed(i, e.to_string()),
        }
    }

    async fn start_sshd(
        &self,
        listen: SocketAddrV4,
        netns: Option<&str>,
    ) -> Result<Child, SshError> {
        ensure_privsep_dir(Path::new(PRIVSEP_DIR))?;
        let mut cmd = Command::new(&self.sshd);
        cmd.args(sshd_args(listen, &self.args))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // Its own process group: a terminal's ^C (or a signal to the
            // agent's group) is the agent's to handle.
            .process_group(0)
            // Not the agent's service manager's business.
            .env_remove("NOTIFY_SOCKET")
            .env_remove("LISTEN_PID")
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_FDNAMES");
        match netns {
            None => cmd.spawn().map_err(|source| SshError::Spawn {
                sshd: self.sshd.display().to_string(),
                listen,
                source,
            }),
            Some(ns) => host::spawn_in_netns(ns, cmd)
                .await
                .map_err(|source| SshError::Netns {
                    listen,
                    source: Box::new(source),
                }),
        }
    }

    /// Refuses new TCP connections to port 22 arriving on `vtep_if`.
    fn block(&mut self) {
        let ifindex = match nix::net::if_::if_nametoindex(self.vtep_if.as_str()) {
            Ok(i) => i,
            Err(e) => {
                self.block_failure(SshError::NoInterface {
                    ifname: self.vtep_if.clone(),
                    reason: e.to_string(),
                });
                return;
            }
        };
        // Recorded before it exists: a crash in between leaves nothing unknown.
        self.table_maybe = true;
        self.record();
        // Read back: a kernel without `inet` nf_tables could take the table
        // but not the chain.
        let written = host::nft::ensure_ssh_block(&self.table, ifindex, SSH_PORT).and_then(|()| {
            if host::nft::ssh_block_exists(&self.table)? {
                Ok(())
            } else {
                Err(HostError::Missing {
                    step: "read back the underlay ssh block",
                    target: format!(
                        "nftables chain inet {} {}",
                        self.table,
                        host::nft::SSH_CHAIN
                    ),
                })
            }
        });
        match written {
            Ok(()) => {
                self.blocked = true;
                self.block_failed_at = None;
                self.block_error = None;
                tracing::info!(
                    ifname = %self.vtep_if, table = %self.table,
                    underlay_ssh = %self.slots[0].listen.map(|l| l.to_string()).unwrap_or_default(),
                    "new TCP connections to port {SSH_PORT} arriving on the underlay are refused"
                );
            }
            Err(source) => self.block_failure(SshError::Block {
                ifname: self.vtep_if.clone(),
                source: Box::new(source),
            }),
        }
    }

    fn block_failure(&mut self, e: SshError) {
        tracing::warn!(error = %e, "port {SSH_PORT} stays open on the underlay; retrying in {} s", BLOCK_RETRY.as_secs());
        self.block_failed_at = Some(Instant::now());
        self.block_error = Some(e.to_string());
    }

    /// Deletes the block (port 22 on the underlay is open again).
    fn unblock(&mut self) {
        match host::nft::delete_ssh_table(&self.table) {
            Ok(()) => {
                if self.blocked {
                    tracing::info!(ifname = %self.vtep_if, "port {SSH_PORT} on the underlay is open again");
                }
                self.blocked = false;
                self.table_maybe = false;
                self.unblock_failed_at = None;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot remove the underlay port {SSH_PORT} block; retrying in {} s", BLOCK_RETRY.as_secs());
                self.unblock_failed_at = Some(Instant::now());
            }
        }
    }

    async fn move_overlay(&mut self, ip: Ipv4Addr) {
        let slot = &mut self.slots[1];
        let Some(old) = slot.listen else { return };
        if *old.ip() == ip {
            return;
        }
        let new = SocketAddrV4::new(ip, old.port());
        tracing::info!(from = %old, to = %new, "overlay IP changed: moving the overlay sshd");
        if let Some(mut run) = slot.run.take() {
            terminate(&mut run.child, run.pid).await;
        }
        slot.listen = Some(new);
        slot.backoff = BACKOFF_MIN;
        slot.last_error = None;
        slot.next_start = Some(Instant::now());
        self.record();
        self.spawn(1).await;
        self.publish();
    }

    async fn shutdown(mut self) {
        if self.table_maybe || self.blocked {
            self.unblock();
        }
        for slot in &mut self.slots {
            if let Some(mut run) = slot.run.take() {
                terminate(&mut run.child, run.pid).await;
                tracing::info!(sshd = slot.kind.name(), pid = run.pid, "sshd stopped");
            }
            slot.next_start = None;
        }
        if let Err(error) = host::record_ssh(&self.state_dir, None) {
            tracing::warn!(%error, "cannot clear the underlay ssh record");
        }
        self.publish();
    }

    /// Writes the listeners and the table into the host-state file.
    fn record(&self) {
        let st = SshState {
            nft_table: (self.table_maybe || self.blocked).then(|| self.table.clone()),
            sshds: self
                .slots
                .iter()
                .filter_map(|s| s.run.as_ref().and_then(|r| r.rec.clone()))
                .collect(),
        };
        if let Err(error) = host::record_ssh(&self.state_dir, Some(&st)) {
            tracing::warn!(%error, "cannot record the underlay ssh state");
        }
    }

    fn publish(&self) {
        let slot = |s: &Slot| match s.listen {
            None => SshdStatus::off(format!("ssh_{}_port = 0", s.kind.name())),
            Some(listen) => SshdStatus {
                state: match (&s.run, s.next_start) {
                    (Some(r), _) if r.listening => "running",
                    (Some(_), _) => "starting",
                    (None, Some(_)) if s.restarts > 0 => "restarting",
                    (None, Some(_)) => "starting",
                    (None, None) => "stopped",
                }
                .into(),
                listen: Some(listen.to_string()),
                netns: s.netns.clone(),
                pid: s.run.as_ref().map(|r| r.pid),
                restarts: s.restarts,
                last_error: s.last_error.clone(),
                reason: None,
            },
        };
        let mut underlay = slot(&self.slots[0]);
        if underlay.last_error.is_none() {
            underlay.last_error.clone_from(&self.block_error);
        }
        set(
            &self.status,
            SshStatus {
                state: "on".into(),
                reason: None,
                underlay: Some(underlay),
                overlay: Some(slot(&self.slots[1])),
                port22_blocked_on_underlay: Some(self.blocked),
            },
        );
    }
}

/// A listener's namespace for the log (`main`: the agent's).
fn netns_name(netns: &Option<String>) -> &str {
    netns.as_deref().unwrap_or("main")
}

/// What `/proc/PID/cmdline` of a listener contains (the state file's marker).
fn listen_marker(listen: SocketAddrV4) -> String {
    format!("ListenAddress={listen}")
}

/// sshd's command line (without the program): foreground, log to stderr,
/// only `listen`, no pid file, then the configured extras. Options given
/// first win in sshd, so the extras cannot move the listener's pid file.
fn sshd_args(listen: SocketAddrV4, extra: &[String]) -> Vec<String> {
    let mut v = vec![
        "-D".to_string(),
        "-e".into(),
        "-o".into(),
        listen_marker(listen),
        "-p".into(),
        listen.port().to_string(),
        "-o".into(),
        "PidFile=none".into(),
    ];
    v.extend(extra.iter().cloned());
    v
}

/// Creates sshd's privilege-separation directory (0755) if missing.
fn ensure_privsep_dir(path: &Path) -> Result<(), SshError> {
    if path.is_dir() {
        return Ok(());
    }
    let err = |source| SshError::PrivsepDir {
        path: path.display().to_string(),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(path)
        .map_err(err)?;
    // Whatever the umask did: sshd refuses a group/world-writable one.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).map_err(err)
}

/// Stops our child `child`: SIGTERM, up to [`TERM_GRACE`], then SIGKILL
/// (bounded). It is reaped here; only the listener is signalled, so the
/// sessions it forked keep running.
async fn terminate(child: &mut Child, pid: u32) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    // Not reaped yet (try_wait said so), so the pid is still this child's.
    if let Ok(raw) = i32::try_from(pid)
        && let Err(e) = kill(Pid::from_raw(raw), Signal::SIGTERM)
    {
        tracing::debug!(pid, error = %e, "SIGTERM to sshd");
    }
    if wait_exit(child, TERM_GRACE).await {
        return;
    }
    tracing::warn!(
        pid,
        "sshd ignored SIGTERM for {} s; SIGKILL",
        TERM_GRACE.as_secs()
    );
    let _ = child.kill();
    if !wait_exit(child, KILL_WAIT).await {
        tracing::warn!(pid, "sshd survived SIGKILL");
    }
}

/// Polls `child` until it exits (reaping it) or `limit` passes.
async fn wait_exit(child: &mut Child, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => return true,
            Ok(None) if Instant::now() >= deadline => return false,
            Ok(None) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Forwards sshd's stderr (its log, `-e`) line by line into ours. Runs
/// until every writer is gone (the listener and the sessions it forked).
fn forward_log(stderr: OwnedFd, kind: Kind) {
    let rx = match tokio::net::unix::pipe::Receiver::from_owned_fd(stderr) {
        Ok(rx) => rx,
        Err(error) => {
            tracing::warn!(%error, sshd = kind.name(), "cannot read sshd's log");
            return;
        }
    };
    tokio::spawn(async move {
        let mut reader = BufReader::new(rx);
        let mut line = Vec::new();
        loop {
            line.clear();
            match (&mut reader)
                .take(MAX_LOG_LINE)
                .read_until(b'\n', &mut line)
                .await
            {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&line);
                    let text = text.trim_end();
                    if !text.is_empty() {
                        tracing::info!(target: "nsx_agent::sshd", sshd = kind.name(), "{text}");
                    }
                }
            }
        }
    });
}

/// Whether process `pid` has a TCP socket listening on `listen`: a LISTEN
/// entry for it in `/proc/PID/net/tcp` (the process's own namespace) whose
/// inode is one of the process's fds.
fn is_listening(pid: u32, listen: SocketAddrV4) -> bool {
    let Ok(table) = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")) else {
        return false;
    };
    let inodes = listening_inodes(&table, listen);
    if inodes.is_empty() {
        return false;
    }
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path()).is_ok_and(|target| {
            let t = target.to_string_lossy();
            t.strip_prefix("socket:[")
                .and_then(|r| r.strip_suffix(']'))
                .and_then(|n| n.parse::<u64>().ok())
                .is_some_and(|n| inodes.contains(&n))
        })
    })
}

/// Inodes of the LISTEN sockets on `listen` in a `/proc/net/tcp` table.
fn listening_inodes(table: &str, listen: SocketAddrV4) -> Vec<u64> {
    const TCP_LISTEN: &str = "0A";
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (local, state, inode) = (f.get(1)?, f.get(3)?, f.get(9)?);
            if *state != TCP_LISTEN {
                return None;
            }
            let (ip, port) = local.split_once(':')?;
            // The address is the kernel's __be32 printed as a host integer.
            let ip = Ipv4Addr::from(u32::from_str_radix(ip, 16).ok()?.to_ne_bytes());
            let port = u16::from_str_radix(port, 16).ok()?;
            (SocketAddrV4::new(ip, port) == listen).then(|| inode.parse().ok())?
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sshd_command_line() {
        let listen: SocketAddrV4 = "10.99.3.11:8888".parse().unwrap();
        let args = sshd_args(listen, &["-h".into(), "/tmp/hk".into()]);
        assert_eq!(
            args.join(" "),
            "-D -e -o ListenAddress=10.99.3.11:8888 -p 8888 -o PidFile=none -h /tmp/hk"
        );
        assert!(args.join(" ").contains(&listen_marker(listen)));
    }

    #[test]
    fn listening_sockets_are_found_by_address() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:22B8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 6973594 1 0000000000000000 100 0 0 10 0\n\
   1: 0B03630A:22B8 0C03630A:9C40 01 00000000:00000000 00:00000000 00000000     0        0 777 1 0000000000000000 100 0 0 10 0\n\
   2: 0B03630A:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 888 1 0000000000000000 100 0 0 10 0\n\
   bogus line\n";
        let lo: SocketAddrV4 = "127.0.0.1:8888".parse().unwrap();
        assert_eq!(listening_inodes(table, lo), vec![6973594]);
        // An established connection on the address is not a listener.
        let ul: SocketAddrV4 = "10.99.3.11:8888".parse().unwrap();
        assert!(listening_inodes(table, ul).is_empty());
        let ssh: SocketAddrV4 = "10.99.3.11:22".parse().unwrap();
        assert_eq!(listening_inodes(table, ssh), vec![888]);
        assert!(listening_inodes("", ssh).is_empty());
    }

    #[test]
    fn off_without_sshd_or_ports_or_overlay() {
        let overlay = Mode::Overlay {
            underlay_ip: Ipv4Addr::new(10, 99, 3, 11),
            overlay_ip: Ipv4Addr::new(192, 168, 100, 3),
        };
        let mut h = HostSettings {
            sshd: PathBuf::from("/nonexistent/sshd"),
            ..HostSettings::default()
        };
        assert_eq!(
            off_reason(&h, overlay).as_deref(),
            Some("no sshd at /nonexistent/sshd")
        );
        assert_eq!(
            off_reason(&h, Mode::Microseg).as_deref(),
            Some("not in overlay mode")
        );
        // A file that is not executable is no sshd either.
        let plain = std::env::temp_dir().join(format!("nsx-not-sshd-{}", std::process::id()));
        std::fs::write(&plain, "").unwrap();
        std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
        h.sshd = plain.clone();
        assert!(off_reason(&h, overlay).is_some());
        let _ = std::fs::remove_file(&plain);
        h.sshd = PathBuf::from("/bin/sh");
        assert_eq!(off_reason(&h, overlay), None);
        h.ssh_underlay_port = 0;
        h.ssh_overlay_port = 0;
        assert!(off_reason(&h, overlay).is_some_and(|r| r.contains("are 0")));
    }

    #[test]
    fn status_shapes() {
        let off = serde_json::to_value(SshStatus::off("no sshd at /x")).unwrap();
        assert_eq!(
            off,
            serde_json::json!({"state": "off", "reason": "no sshd at /x"})
        );
    }

    #[test]
    fn privsep_dir_is_created_0755() {
        let dir = std::env::temp_dir().join(format!("nsx-privsep-{}", std::process::id()));
        let p = dir.join("sshd");
        ensure_privsep_dir(&p).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o755);
        ensure_privsep_dir(&p).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
