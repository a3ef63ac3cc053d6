//! When the head may call a node dead: silence measured on the head's awake clock.
//!
//! The head marks a node dead when it has not heard from it for [`NODE_TIMEOUT`].
//! Measured on the wall clock, a head that was itself stopped (SIGSTOP, a
//! swapped-out process, a machine too busy to schedule it) wakes to find every
//! node silent for the length of its own pause, and used to mark them all dead
//! before reading the heartbeats queued on its sockets meanwhile. Every node then
//! shut down with its workers: one stall of the head took the cluster down.
//!
//! So silence is measured on an [`AwakeClock`], which advances by the real time
//! between two of the head's own liveness checks but by at most [`MAX_STEP`] per
//! check. A check is due every [`CHECK_EVERY`]; a gap much longer than that means
//! the head could not run, so heartbeats could not be read either, and that time
//! does not count against anyone. After a pause of any length a node has at least
//! `NODE_TIMEOUT - MAX_STEP` of awake time for its queued heartbeat to be read,
//! which takes milliseconds once the head runs again. A node that is really gone
//! is still declared dead after `NODE_TIMEOUT` of the head's awake time.

use std::time::{Duration, Instant};

/// A node silent for this long on the head's awake clock is marked dead.
pub const NODE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the head checks for silent nodes.
pub const CHECK_EVERY: Duration = Duration::from_millis(500);
/// The most one gap between checks adds to the awake clock: twice the check
/// interval, so a check that is a little late still counts in full.
pub const MAX_STEP: Duration = Duration::from_secs(1);

/// Time during which the head was able to run, as far as its checks can tell.
#[derive(Debug, Clone, Copy)]
pub struct AwakeClock {
    /// Awake time at the last check.
    at_last_check: Duration,
    /// Wall-clock time of the last check.
    last_check: Instant,
}

impl Default for AwakeClock {
    fn default() -> Self {
        AwakeClock::new(Instant::now())
    }
}

impl AwakeClock {
    /// A clock that starts at zero now.
    pub fn new(now: Instant) -> Self {
        AwakeClock { at_last_check: Duration::ZERO, last_check: now }
    }

    /// The awake time at `now` (between checks it runs with the wall clock).
    pub fn at(&self, now: Instant) -> Duration {
        self.at_last_check + now.saturating_duration_since(self.last_check).min(MAX_STEP)
    }

    /// Records a liveness check at `now`; returns how long the head could not run
    /// before it, if the gap was too long to count.
    pub fn check(&mut self, now: Instant) -> Option<Duration> {
        let gap = now.saturating_duration_since(self.last_check);
        self.at_last_check = self.at(now);
        self.last_check = now;
        (gap > MAX_STEP).then_some(gap)
    }

    /// Whether a node last heard at awake time `heard` is silent for too long at `now`.
    pub fn is_silent(&self, heard: Duration, now: Instant) -> bool {
        self.at(now).saturating_sub(heard) > NODE_TIMEOUT
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What happens on the head, in the order it runs it.
    #[derive(Debug, Clone)]
    enum Step {
        /// The head is stopped for this many milliseconds; nothing runs.
        Pause(u64),
        /// The head runs normally for this many milliseconds: checks every
        /// `CHECK_EVERY`, and reads the node's heartbeat every 250 ms.
        Run(u64),
        /// The node falls silent for this many milliseconds of running head.
        Silence(u64),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0u64..120_000).prop_map(Step::Pause),
            (0u64..3_000).prop_map(Step::Run),
            (0u64..20_000).prop_map(Step::Silence),
        ]
    }

    /// Runs `steps`; returns whether the node was ever declared dead while it was
    /// sending heartbeats, and whether a silence longer than the timeout went unseen.
    fn simulate(steps: &[Step]) -> (bool, bool) {
        let start = Instant::now();
        let mut now = start;
        let mut clock = AwakeClock::new(now);
        let mut heard = clock.at(now);
        let (mut wrongly_dead, mut missed) = (false, false);
        for step in steps {
            match *step {
                Step::Pause(ms) => {
                    now += Duration::from_millis(ms);
                    // On waking, the head may check before it reads the queued heartbeat.
                    clock.check(now);
                    wrongly_dead |= clock.is_silent(heard, now);
                    heard = clock.at(now);
                }
                Step::Run(ms) | Step::Silence(ms) => {
                    let beats = matches!(step, Step::Run(_));
                    let mut declared = false;
                    let end = now + Duration::from_millis(ms);
                    while now < end {
                        now = (now + Duration::from_millis(250)).min(end);
                        clock.check(now);
                        declared |= clock.is_silent(heard, now);
                        if beats {
                            wrongly_dead |= declared;
                            heard = clock.at(now);
                        }
                    }
                    if !beats && ms > NODE_TIMEOUT.as_millis() as u64 + MAX_STEP.as_millis() as u64 {
                        missed |= !declared;
                    }
                    if !beats {
                        // The node comes back; the test only asks about each silence.
                        heard = clock.at(now);
                    }
                }
            }
        }
        (wrongly_dead, missed)
    }

    proptest! {
        /// However long and often the head stalls, a node that keeps sending
        /// heartbeats is never declared dead, and a node silent for longer than
        /// the timeout while the head runs always is.
        #[test]
        fn stalls_never_kill_a_live_node_and_silence_is_always_seen(steps in prop::collection::vec(step(), 1..40)) {
            let (wrongly_dead, missed) = simulate(&steps);
            prop_assert!(!wrongly_dead, "a live node was declared dead");
            prop_assert!(!missed, "a silent node was not declared dead");
        }
    }

    #[test]
    fn a_long_pause_counts_as_one_step() {
        let t0 = Instant::now();
        let mut clock = AwakeClock::new(t0);
        assert_eq!(clock.check(t0 + Duration::from_secs(60)), Some(Duration::from_secs(60)));
        assert_eq!(clock.at(t0 + Duration::from_secs(60)), MAX_STEP);
        assert!(!clock.is_silent(Duration::ZERO, t0 + Duration::from_secs(60)));
    }

    #[test]
    fn a_running_head_counts_wall_time() {
        let t0 = Instant::now();
        let mut clock = AwakeClock::new(t0);
        let mut t = t0;
        for _ in 0..12 {
            t += CHECK_EVERY;
            assert_eq!(clock.check(t), None);
        }
        assert_eq!(clock.at(t), Duration::from_secs(6));
        assert!(clock.is_silent(Duration::ZERO, t));
    }
}
