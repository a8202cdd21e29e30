//! The loop both datapath threads run ([`crate::dp::dataloop`] for the
//! overlay, [`crate::dp::msegloop`] for filtered micro-segmentation): one
//! `poll` over the waker and the thread's sockets (two; four on the
//! edge, whose downlink and health-check port are two more); control messages
//! ([`Ctl`]) only when woken, between batches; up to [`BATCHES_PER_ROUND`]
//! batches from each socket per wake-up, so one busy direction cannot
//! starve the other; housekeeping after each round; counters published
//! every [`PUBLISH_EVERY`] and once more when the loop ends. After a round
//! that moved packets the `poll` does not sleep for a while (busy-polling,
//! `[host] busy_poll_us`, decided by [`SpinPolicy`]); a spin that finds
//! nothing costs that `poll`, a `sched_yield` and one clock read, no round.
//! What differs between the modes is behind [`Shell`].

use std::os::fd::RawFd;
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};

use crate::dp::ctl::{Ctl, Published};
use crate::dp::io::{Poller, Waker};
use crate::dp::spin::SpinPolicy;

/// How often counters are copied out for the control side.
pub const PUBLISH_EVERY: Duration = Duration::from_millis(200);
/// Batches per socket per wake-up.
pub const BATCHES_PER_ROUND: usize = 8;
/// Longest wait for a packet or a wake-up, so housekeeping still runs.
const POLL_MS: i32 = 100;

/// Whether the loop goes on after a control message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop,
}

/// One datapath thread's state, as the loop drives it.
pub trait Shell {
    /// One control message, between batches (may allocate and log).
    fn control(&mut self, msg: Ctl) -> Flow;
    /// One batch from each socket; true if anything was read.
    fn drain(&mut self) -> bool;
    /// Housekeeping after a round of batches (idle connections, capture).
    fn tick(&mut self);
    /// Copies the counters out (once per period, never per packet).
    fn publish(&mut self, published: &Mutex<Published>);
    /// The loop is ending (before the last publish).
    fn stop(&mut self) {}
}

/// Runs `shell` over `sockets` (a negative fd is ignored) until
/// [`Ctl::Stop`] or the control channel closes, busy-polling up to
/// `busy_poll` after each round that moved packets (zero: never).
pub fn run<S: Shell>(
    shell: &mut S,
    sockets: [RawFd; 4],
    ctl: &Receiver<Ctl>,
    waker: &Waker,
    published: &Mutex<Published>,
    busy_poll: Duration,
) {
    let mut last_publish = Instant::now() - PUBLISH_EVERY;
    let [a, b, c, d] = sockets;
    let mut poller = Poller::new([waker.fd(), a, b, c, d]);
    let mut spin = SpinPolicy::new(busy_poll);
    loop {
        let spinning = spin.spinning();
        let [woken, ready @ ..] = poller.wait(if spinning { 0 } else { POLL_MS });
        if woken {
            waker.drain();
            if control(shell, ctl) == Flow::Stop {
                shell.stop();
                shell.publish(published);
                return;
            }
        }
        let moved = if spinning && !woken && !ready.contains(&true) {
            // A spin that found nothing: no round, no housekeeping, and
            // the CPU to any thread waiting for it (the instance's, work
            // the kernel queued behind us), so spinning takes idle time.
            std::thread::yield_now();
            false
        } else {
            let moved = round(shell);
            shell.tick();
            moved
        };
        let now = Instant::now();
        spin.after(moved, now);
        if now.saturating_duration_since(last_publish) >= PUBLISH_EVERY {
            shell.publish(published);
            last_publish = now;
        }
    }
}

/// Every queued control message; [`Flow::Stop`] on [`Ctl::Stop`] or when
/// the channel closed.
fn control<S: Shell>(shell: &mut S, ctl: &Receiver<Ctl>) -> Flow {
    loop {
        let flow = match ctl.try_recv() {
            Ok(msg) => shell.control(msg),
            Err(TryRecvError::Disconnected) => Flow::Stop,
            Err(TryRecvError::Empty) => return Flow::Continue,
        };
        if flow == Flow::Stop {
            return Flow::Stop;
        }
    }
}

/// Up to [`BATCHES_PER_ROUND`] batches from each socket; true if the
/// first one read anything.
fn round<S: Shell>(shell: &mut S) -> bool {
    let moved = shell.drain();
    if moved {
        for _ in 1..BATCHES_PER_ROUND {
            if !shell.drain() {
                break;
            }
        }
    }
    moved
}

#[cfg(test)]
mod tests {
    use std::os::fd::{AsRawFd, OwnedFd};
    use std::sync::mpsc::channel;

    use super::*;
    use crate::dp::io::tests::pair;

    /// Reads one datagram per drain from `rx`, counting drains and ticks;
    /// notes the thread's CPU time when stopped.
    struct Counting {
        rx: OwnedFd,
        drains: usize,
        ticks: usize,
        read: usize,
        cpu: Duration,
    }

    impl Shell for Counting {
        fn control(&mut self, msg: Ctl) -> Flow {
            match msg {
                Ctl::Stop => Flow::Stop,
                _ => Flow::Continue,
            }
        }
        fn drain(&mut self) -> bool {
            self.drains += 1;
            let mut buf = [0u8; 64];
            // SAFETY: reads into a live buffer of the given size.
            let n = unsafe {
                libc::recv(
                    self.rx.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            let got = n > 0;
            self.read += usize::from(got);
            got
        }
        fn tick(&mut self) {
            self.ticks += 1;
        }
        fn publish(&mut self, _: &Mutex<Published>) {}
        fn stop(&mut self) {
            let mut ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: writes one timespec into a live one.
            unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
            let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
            let nanos = u32::try_from(ts.tv_nsec).unwrap_or(0);
            self.cpu = Duration::new(secs, nanos);
        }
    }

    fn send(fd: &OwnedFd) {
        // SAFETY: sends one byte from a live buffer.
        let n = unsafe { libc::send(fd.as_raw_fd(), [7u8].as_ptr().cast(), 1, 0) };
        assert_eq!(n, 1);
    }

    /// Runs the loop with `busy_poll` over one datagram sent before it
    /// starts, stops it after `run_for`, and returns the shell.
    fn run_one_packet(busy_poll: Duration, run_for: Duration) -> Counting {
        let [tx, rx] = pair();
        send(&tx);
        let (ctl_tx, ctl_rx) = channel();
        let waker = std::sync::Arc::new(Waker::new().expect("eventfd"));
        let thread_waker = std::sync::Arc::clone(&waker);
        let looped = std::thread::spawn(move || {
            let mut shell = Counting {
                rx,
                drains: 0,
                ticks: 0,
                read: 0,
                cpu: Duration::ZERO,
            };
            let fd = shell.rx.as_raw_fd();
            let published = Mutex::new(Published::default());
            run(
                &mut shell,
                [fd, -1, -1, -1],
                &ctl_rx,
                &thread_waker,
                &published,
                busy_poll,
            );
            shell
        });
        std::thread::sleep(run_for);
        ctl_tx.send(Ctl::Stop).expect("the loop listens");
        waker.wake();
        looped.join().expect("the loop ends")
    }

    #[test]
    fn spins_that_find_nothing_run_no_round() {
        // Stopped inside the spin window (or, on a slow machine, after
        // it ran out): either way one round of two drains, one tick.
        let shell = run_one_packet(Duration::from_millis(500), Duration::from_millis(50));
        assert_eq!(shell.read, 1);
        assert_eq!((shell.drains, shell.ticks), (2, 1));
    }

    #[test]
    fn without_busy_polling_an_idle_loop_sleeps() {
        // Stopped before the poll's timeout (POLL_MS): one round.
        let shell = run_one_packet(Duration::ZERO, Duration::from_millis(50));
        assert_eq!(shell.read, 1);
        assert_eq!((shell.drains, shell.ticks), (2, 1));
        // Asleep in poll, not spinning: a generous bound of half the time.
        assert!(shell.cpu < Duration::from_millis(25), "{:?}", shell.cpu);
    }
}
