//! Named network namespaces, `ip netns`-compatible (`/run/netns/NAME` bind
//! mounts), created without fork, plus running code inside one: a dedicated
//! OS thread `setns`es into the namespace and runs a current-thread tokio
//! runtime there, so netlink sockets, `/proc/sys/net` files and ioctl sockets
//! opened by that code all belong to the namespace.
//!
//! A pooled thread (e.g. `spawn_blocking`) is never used for this: it would
//! go back to the pool still inside the foreign namespace.
//!
//! [`run_blocking_in`] does the same without a runtime, e.g. to start a
//! process inside the namespace: a forked child inherits the namespaces of
//! the thread that forks it, so no `pre_exec` hook (and no `unsafe`) or
//! `nsenter` is needed.

use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io::ErrorKind;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;

use super::HostError;
use super::netlink::Nl;

/// Where `ip netns` keeps its namespace handles.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// Path of the handle of netns `name`.
pub fn path(name: &str) -> PathBuf {
    Path::new(NETNS_RUN_DIR).join(name)
}

fn sys_err(step: &'static str, target: impl Into<String>, e: Errno) -> HostError {
    HostError::Io {
        step,
        target: target.into(),
        source: std::io::Error::from(e),
    }
}

/// Whether a handle file (mounted or stale) exists for `name`.
pub fn handle_exists(name: &str) -> bool {
    path(name).symlink_metadata().is_ok()
}

/// `ip netns add NAME` without fork: a short-lived thread unshares its own
/// network namespace and pins it with a bind mount of
/// `/proc/thread-self/ns/net` on `/run/netns/NAME`.
pub async fn create(name: &str) -> Result<(), HostError> {
    let name = name.to_string();
    on_thread(move || create_blocking(&name)).await
}

fn create_blocking(name: &str) -> Result<(), HostError> {
    make_run_dir_shared()?;
    let p = path(name);
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&p)
        .map_err(|source| HostError::Io {
            step: "create netns handle file",
            target: p.display().to_string(),
            source,
        })?;
    let res = nix::sched::unshare(CloneFlags::CLONE_NEWNET)
        .map_err(|e| sys_err("unshare network namespace", format!("netns {name}"), e))
        .and_then(|()| {
            nix::mount::mount(
                Some(Path::new("/proc/thread-self/ns/net")),
                &p,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| sys_err("bind-mount netns handle", p.display().to_string(), e))
        });
    if res.is_err() {
        let _ = std::fs::remove_file(&p);
    }
    res
}

/// Like `ip netns`: make `/run/netns` a shared mount (bind-mounting it on
/// itself first if it is not a mount point), so that handles created here
/// propagate to peer mount namespaces.
fn make_run_dir_shared() -> Result<(), HostError> {
    let dir = Path::new(NETNS_RUN_DIR);
    std::fs::create_dir_all(dir).map_err(|source| HostError::Io {
        step: "create netns run dir",
        target: NETNS_RUN_DIR.into(),
        source,
    })?;
    let mut bound = false;
    loop {
        match nix::mount::mount(
            None::<&str>,
            dir,
            Some("none"),
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        ) {
            Ok(()) => return Ok(()),
            Err(Errno::EINVAL) if !bound => {
                nix::mount::mount(
                    Some(dir),
                    dir,
                    Some("none"),
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None::<&str>,
                )
                .map_err(|e| sys_err("bind-mount netns run dir on itself", NETNS_RUN_DIR, e))?;
                bound = true;
            }
            Err(e) => return Err(sys_err("make netns run dir shared", NETNS_RUN_DIR, e)),
        }
    }
}

/// `ip netns del NAME`: detach the bind mount and remove the handle. The
/// namespace (and every interface in it) is destroyed once nothing else
/// holds it. A missing namespace is fine.
pub fn delete(name: &str) -> Result<(), HostError> {
    let p = path(name);
    match nix::mount::umount2(&p, MntFlags::MNT_DETACH) {
        // EINVAL: not a mount point (stale file); ENOENT: nothing there.
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
        Err(e) => return Err(sys_err("unmount netns handle", p.display().to_string(), e)),
    }
    match std::fs::remove_file(&p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(source) => Err(HostError::Io {
            step: "remove netns handle",
            target: p.display().to_string(),
            source,
        }),
    }
}

/// Opens the handle of netns `name` (e.g. to move a link into it).
pub fn open(name: &str) -> Result<File, HostError> {
    let p = path(name);
    File::open(&p).map_err(|source| HostError::Io {
        step: "open netns handle",
        target: p.display().to_string(),
        source,
    })
}

/// Runs `f` on a fresh OS thread and awaits its result without blocking the
/// caller's runtime.
async fn on_thread<T, F>(f: F) -> Result<T, HostError>
where
    F: FnOnce() -> Result<T, HostError> + Send + 'static,
    T: Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("host-netns".into())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .map_err(|source| HostError::Io {
            step: "spawn netns thread",
            target: "thread".into(),
            source,
        })?;
    rx.await.map_err(|_| HostError::Io {
        step: "netns thread",
        target: "thread".into(),
        source: std::io::Error::other("thread panicked"),
    })?
}

/// Runs `f` inside netns `name`: on a dedicated thread that has `setns`ed
/// into it, with a current-thread runtime and a netlink handle ([`Nl`])
/// created there. Anything `f` opens (sockets, `/proc/sys/net/...`) belongs
/// to the namespace.
pub async fn run_in<T, F, Fut>(name: &str, f: F) -> Result<T, HostError>
where
    F: FnOnce(Nl) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, HostError>>,
    T: Send + 'static,
{
    let name_owned = name.to_string();
    run_blocking_in(name, move || {
        let name = name_owned;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| HostError::Io {
                step: "build netns runtime",
                target: format!("netns {name}"),
                source,
            })?;
        rt.block_on(async move {
            let nl = Nl::connect(&name)?;
            f(nl).await
        })
    })
    .await
}

/// Runs the blocking `f` inside netns `name`, on a fresh thread that has
/// `setns`ed into it and ends with `f`. Whatever `f` forks (e.g.
/// `std::process::Command::spawn`) lives in the namespace.
pub async fn run_blocking_in<T, F>(name: &str, f: F) -> Result<T, HostError>
where
    F: FnOnce() -> Result<T, HostError> + Send + 'static,
    T: Send + 'static,
{
    let ns_file = open(name)?;
    let name = name.to_string();
    on_thread(move || {
        nix::sched::setns(ns_file.as_fd(), CloneFlags::CLONE_NEWNET)
            .map_err(|e| sys_err("enter network namespace", format!("netns {name}"), e))?;
        drop(ns_file);
        f()
    })
    .await
}

/// Writes "1" to `/proc/sys/net/ipv4/conf/IF/promote_secondaries` of the
/// calling thread's netns: deleting an interface's primary IPv4 address
/// then promotes a secondary one in its subnet instead of deleting it too.
pub fn promote_secondaries(ifname: &str) -> Result<(), HostError> {
    let p = Path::new("/proc/sys/net/ipv4/conf")
        .join(ifname)
        .join("promote_secondaries");
    std::fs::write(&p, "1").map_err(|source| HostError::Io {
        step: "enable promote_secondaries",
        target: p.display().to_string(),
        source,
    })
}

/// Writes "1" to `/proc/sys/net/ipv6/conf/IF/disable_ipv6` of the calling
/// thread's netns, if IPv6 exists at all (no-op otherwise).
/// Lets sockets in the calling thread's network namespace bind an IPv4
/// address the namespace does not have yet (`ip_nonlocal_bind`): with
/// `port_dhcp` the overlay sshd starts before the DHCP client has the
/// port's address.
pub fn allow_nonlocal_bind() -> Result<(), HostError> {
    let p = "/proc/sys/net/ipv4/ip_nonlocal_bind";
    std::fs::write(p, "1").map_err(|source| HostError::Io {
        step: "allow binding the port's address before DHCP",
        target: p.into(),
        source,
    })
}

pub fn disable_ipv6(ifname: &str) -> Result<(), HostError> {
    let p = Path::new("/proc/sys/net/ipv6/conf")
        .join(ifname)
        .join("disable_ipv6");
    match std::fs::write(&p, "1") {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            tracing::debug!(ifname, "no IPv6 sysctl, nothing to disable");
            Ok(())
        }
        Err(source) => Err(HostError::Io {
            step: "disable IPv6",
            target: p.display().to_string(),
            source,
        }),
    }
}
