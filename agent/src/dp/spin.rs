//! When the datapath loop busy-polls instead of sleeping (`[host]
//! busy_poll_us`): a pure policy, the time passed in, so
//! [`crate::dp::driver::run`] stays a plain loop and every decision is
//! unit-tested here.
//!
//! A thread that sleeps in `poll` whenever a round finds nothing pays a
//! wake-up for the next packet; on an idle link (a ping every 10 ms) that
//! is every packet, on both agents, both ways. After a round that moved
//! packets the loop therefore keeps polling without sleeping (`poll` with
//! timeout 0, yielding the CPU between polls) for a window; every round
//! that moves packets starts the window again (NAPI's and
//! `SO_BUSY_POLL`'s rule). The window adapts: a
//! spin that ran out empty makes the next one an eighth of the budget
//! shorter (down to an eighth), a spin that found packets restores the
//! whole budget. So request/response traffic, where the spin after each
//! request catches the answer and the one after the answer runs out, keeps
//! seven eighths of the budget to wait for answers, and one-way traffic
//! with gaps longer than the budget (every spin wasted) costs an eighth of
//! it per gap.

use std::time::{Duration, Instant};

/// The window moves in steps of `budget / STEPS` and is at least one.
const STEPS: u32 = 8;

/// The loop's busy-polling state.
#[derive(Debug, Clone)]
pub struct SpinPolicy {
    /// The configured budget: the longest window; zero = never spin.
    budget: Duration,
    /// The current window (`budget / 8` to `budget`, in eighths).
    window: Duration,
    /// Spinning until then; `None` = the next wait may sleep.
    deadline: Option<Instant>,
}

impl SpinPolicy {
    /// A policy spinning at most `budget` after each round that moved
    /// packets; [`Duration::ZERO`] turns busy-polling off.
    pub fn new(budget: Duration) -> SpinPolicy {
        SpinPolicy {
            budget,
            window: budget,
            deadline: None,
        }
    }

    /// Whether the next wait polls without sleeping.
    pub fn spinning(&self) -> bool {
        self.deadline.is_some()
    }

    /// The current window (what a spin starting now would last at most).
    pub fn window(&self) -> Duration {
        self.window
    }

    /// After one pass of the loop ending at `now`; `moved` = it moved
    /// packets.
    pub fn after(&mut self, moved: bool, now: Instant) {
        if self.budget.is_zero() {
            return;
        }
        match (moved, self.deadline) {
            // Packets while spinning: the spin paid; the whole budget again.
            (true, Some(_)) => {
                self.window = self.budget;
                self.deadline = Some(now + self.window);
            }
            // Packets after a sleep: spin for what follows them.
            (true, None) => self.deadline = Some(now + self.window),
            // A spin ran out empty: an eighth shorter next time, and sleep.
            (false, Some(deadline)) if now >= deadline => {
                let step = self.budget / STEPS;
                self.window = self.window.saturating_sub(step).max(step);
                self.deadline = None;
            }
            (false, _) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: Duration = Duration::from_micros(1);

    fn policy(budget_us: u32) -> (SpinPolicy, Instant) {
        (SpinPolicy::new(US * budget_us), Instant::now())
    }

    #[test]
    fn off_never_spins() {
        let (mut p, t0) = policy(0);
        p.after(true, t0);
        assert!(!p.spinning());
        p.after(true, t0 + US);
        assert!(!p.spinning());
    }

    #[test]
    fn packets_start_a_spin_that_ends_at_the_window() {
        let (mut p, t0) = policy(200);
        assert!(!p.spinning(), "nothing moved yet");
        p.after(false, t0);
        assert!(!p.spinning(), "an empty round after a sleep does not spin");
        p.after(true, t0);
        assert!(p.spinning());
        p.after(false, t0 + US * 199);
        assert!(p.spinning(), "still inside the window");
        p.after(false, t0 + US * 200);
        assert!(!p.spinning(), "the window ran out");
    }

    #[test]
    fn every_round_with_packets_starts_the_window_again() {
        let (mut p, t0) = policy(200);
        p.after(true, t0);
        p.after(true, t0 + US * 150);
        p.after(false, t0 + US * 300);
        assert!(
            p.spinning(),
            "the second round re-armed the window to 350 us"
        );
        p.after(false, t0 + US * 350);
        assert!(!p.spinning());
    }

    /// Spins once after a round at `t` and lets the window run out;
    /// returns when it did.
    fn run_out(p: &mut SpinPolicy, t: Instant) -> Instant {
        p.after(true, t);
        let end = t + p.window();
        p.after(false, end);
        assert!(!p.spinning());
        end
    }

    #[test]
    fn empty_spins_shrink_the_window_by_eighths_down_to_one() {
        let (mut p, t0) = policy(800);
        let mut t = t0;
        for expected in [700, 600, 500, 400, 300, 200, 100, 100] {
            t = run_out(&mut p, t) + Duration::from_millis(10);
            assert_eq!(p.window(), US * expected);
        }
    }

    #[test]
    fn a_spin_that_finds_packets_restores_the_budget() {
        let (mut p, t0) = policy(800);
        let mut t = t0;
        for _ in 0..3 {
            t = run_out(&mut p, t);
        }
        assert_eq!(p.window(), US * 500);
        // The answer arrives 10 us into the spin.
        p.after(true, t);
        t += US * 10;
        p.after(true, t);
        assert_eq!(p.window(), US * 800);
        p.after(false, t + US * 799);
        assert!(p.spinning(), "the whole budget from the answer on");
    }

    #[test]
    fn request_response_keeps_seven_eighths_for_the_answers() {
        let (mut p, t0) = policy(800);
        let mut t = t0;
        for _ in 0..5 {
            // The request: a round after a sleep.
            p.after(true, t);
            assert!(p.window() >= US * 700, "{:?}", p.window());
            // Its answer, 650 us later, still inside the window.
            t += US * 650;
            p.after(false, t - US);
            assert!(p.spinning());
            p.after(true, t);
            // Nothing more until the next request: the spin runs out.
            t += p.window();
            p.after(false, t);
            assert!(!p.spinning());
            t += Duration::from_millis(10);
        }
    }

    #[test]
    fn a_sleep_keeps_the_window() {
        let (mut p, t0) = policy(800);
        let t1 = run_out(&mut p, t0) + Duration::from_millis(10);
        assert_eq!(p.window(), US * 700);
        // Woken 10 ms later by a packet: the shrunken window.
        p.after(true, t1);
        assert_eq!(p.window(), US * 700);
        p.after(false, t1 + US * 699);
        assert!(p.spinning());
        p.after(false, t1 + US * 700);
        assert!(!p.spinning());
    }
}
