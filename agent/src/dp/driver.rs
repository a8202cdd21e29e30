//! The loop both datapath threads run ([`crate::dp::dataloop`] for the
//! overlay, [`crate::dp::msegloop`] for filtered micro-segmentation): one
//! `poll` over the waker and the thread's sockets (two; four on the
//! edge, whose downlink and health-check port are two more); control messages
//! ([`Ctl`]) only when woken, between batches; up to [`BATCHES_PER_ROUND`]
//! batches from each socket per wake-up, so one busy direction cannot
//! starve the other; housekeeping after each round; counters published
//! every [`PUBLISH_EVERY`] and once more when the loop ends. What differs
//! between the modes is behind [`Shell`].

use std::os::fd::RawFd;
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};

use crate::dp::ctl::{Ctl, Published};
use crate::dp::io::{Poller, Waker};

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
/// [`Ctl::Stop`] or the control channel closes.
pub fn run<S: Shell>(
    shell: &mut S,
    sockets: [RawFd; 4],
    ctl: &Receiver<Ctl>,
    waker: &Waker,
    published: &Mutex<Published>,
) {
    let mut last_publish = Instant::now() - PUBLISH_EVERY;
    let [a, b, c, d] = sockets;
    let mut poller = Poller::new([waker.fd(), a, b, c, d]);
    loop {
        let [woken, ..] = poller.wait(POLL_MS);
        if woken {
            waker.drain();
            loop {
                let flow = match ctl.try_recv() {
                    Ok(msg) => shell.control(msg),
                    Err(TryRecvError::Disconnected) => Flow::Stop,
                    Err(TryRecvError::Empty) => break,
                };
                if flow == Flow::Stop {
                    shell.stop();
                    shell.publish(published);
                    return;
                }
            }
        }
        for _ in 0..BATCHES_PER_ROUND {
            if !shell.drain() {
                break;
            }
        }
        shell.tick();
        if last_publish.elapsed() >= PUBLISH_EVERY {
            shell.publish(published);
            last_publish = Instant::now();
        }
    }
}
