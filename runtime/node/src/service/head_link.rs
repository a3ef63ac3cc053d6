//! Staying in touch with the head: what a node does when heartbeats fail.
//!
//! A node's work does not need the head from moment to moment: workers talk to
//! their owners and to each other directly. So a node that loses the head keeps
//! running what it has and keeps trying, backing off, and says so at `warn` once
//! (and again every [`REMIND_EVERY`]), not once a heartbeat. When the head
//! answers that it does not know the node (it restarted) the node registers
//! again; when it answers that it gave the node up (the node was silent too long,
//! and its actors and placement-group bundles were moved elsewhere) the node
//! stops what was moved and registers again. Either way it rejoins rather than
//! shutting its workers down.
//!
//! [`HeadLink`] makes these decisions without I/O; the heartbeat loop in
//! `service.rs` sends, kills and logs.

use std::time::{Duration, Instant};

/// How often a node heartbeats while the head answers.
pub const HEARTBEAT_EVERY: Duration = Duration::from_millis(250);
/// The longest wait between tries while the head does not answer. Well under the
/// head's node timeout, so a head that comes back hears from us in time.
pub const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How long a node waits for the head to answer one call.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a node that still cannot reach the head says so again.
pub const REMIND_EVERY: Duration = Duration::from_secs(30);

/// What the node sends next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// A heartbeat.
    Heartbeat,
    /// Its registration, after the head said it does not know this node.
    Register,
    /// Its registration, after first stopping the work the head moved away.
    Rejoin,
}

/// How the head answered a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// It took the call.
    Ok,
    /// It does not know this node.
    Unknown,
    /// It marked this node dead; the message says why.
    GivenUp(String),
    /// No answer, or an error; the text says what happened.
    Failed(String),
}

/// What the node should log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Say {
    /// The head stopped answering (warn).
    Lost(String),
    /// It still does not answer after this long (warn).
    StillLost(Duration, String),
    /// It answers again after this long without answering (warn: the outage is
    /// worth a line).
    Back(Duration),
    /// It does not know this node; registering again (warn).
    Unknown,
    /// It gave this node up; stopping moved work and registering again (warn).
    GivenUp(String),
    /// The registration was accepted (info).
    Registered,
}

/// The next call, when to make it, and what to log now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// What to send next.
    pub next: Call,
    /// How long to wait before sending it.
    pub wait: Duration,
    /// What to log, if anything.
    pub say: Option<Say>,
}

/// The node's view of its link to the head.
#[derive(Debug, Default)]
pub struct HeadLink {
    /// Since when, and how many tries in a row, the head has not answered.
    outage: Option<Outage>,
    /// When the head last answered.
    last_answer: Option<Instant>,
}

#[derive(Debug)]
struct Outage {
    since: Instant,
    failures: u32,
    last_said: Instant,
}

impl HeadLink {
    /// Decides what follows `answer` to `call`, at `now`.
    pub fn on_answer(&mut self, call: Call, answer: Answer, now: Instant) -> Decision {
        match answer {
            Answer::Failed(error) => self.failed(call, error, now),
            answered => {
                self.last_answer = Some(now);
                let back = self.outage.take().map(|o| Say::Back(now.saturating_duration_since(o.since)));
                let (next, say) = match answered {
                    Answer::Ok if call == Call::Heartbeat => (Call::Heartbeat, back),
                    Answer::Ok => (Call::Heartbeat, Some(Say::Registered)),
                    Answer::Unknown => (Call::Register, Some(Say::Unknown)),
                    Answer::GivenUp(why) => (Call::Rejoin, Some(Say::GivenUp(why))),
                    Answer::Failed(_) => unreachable!("handled above"),
                };
                let wait = if next == Call::Heartbeat { HEARTBEAT_EVERY } else { Duration::ZERO };
                Decision { next, wait, say }
            }
        }
    }

    fn failed(&mut self, call: Call, error: String, now: Instant) -> Decision {
        let say = match &mut self.outage {
            None => {
                // Silent since its last answer, not since the call that timed out.
                let since = self.last_answer.unwrap_or(now);
                self.outage = Some(Outage { since, failures: 1, last_said: now });
                Some(Say::Lost(error))
            }
            Some(o) => {
                o.failures += 1;
                (now.saturating_duration_since(o.last_said) >= REMIND_EVERY).then(|| {
                    o.last_said = now;
                    Say::StillLost(now.saturating_duration_since(o.since), error)
                })
            }
        };
        let failures = self.outage.as_ref().map_or(1, |o| o.failures);
        let wait = HEARTBEAT_EVERY.saturating_mul(1 << failures.min(8)).min(MAX_BACKOFF);
        Decision { next: call, wait, say }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn an_outage_is_said_once_then_backed_off_then_said_to_be_over() {
        let t0 = Instant::now();
        let mut link = HeadLink::default();
        let ok = link.on_answer(Call::Heartbeat, Answer::Ok, t0);
        assert_eq!(ok, Decision { next: Call::Heartbeat, wait: HEARTBEAT_EVERY, say: None });
        let first = link.on_answer(Call::Heartbeat, Answer::Failed("timed out".into()), t0);
        assert_eq!(first.say, Some(Say::Lost("timed out".into())));
        let mut waits = vec![first.wait];
        for i in 1..10 {
            let d = link.on_answer(Call::Heartbeat, Answer::Failed("timed out".into()), t0 + Duration::from_secs(i));
            assert_eq!(d.say, None, "one line, not one a heartbeat");
            waits.push(d.wait);
        }
        assert!(waits.windows(2).all(|w| w[0] <= w[1]), "{waits:?}");
        assert_eq!(*waits.last().unwrap(), MAX_BACKOFF);
        let reminder = link.on_answer(Call::Heartbeat, Answer::Failed("refused".into()), t0 + REMIND_EVERY);
        assert_eq!(reminder.say, Some(Say::StillLost(REMIND_EVERY, "refused".into())));
        let back = link.on_answer(Call::Heartbeat, Answer::Ok, t0 + REMIND_EVERY * 2);
        assert_eq!(
            back,
            Decision { next: Call::Heartbeat, wait: HEARTBEAT_EVERY, say: Some(Say::Back(REMIND_EVERY * 2)) }
        );
    }

    #[test]
    fn a_node_the_head_gave_up_rejoins_and_an_unknown_one_registers() {
        let t0 = Instant::now();
        let mut link = HeadLink::default();
        let given_up = link.on_answer(Call::Heartbeat, Answer::GivenUp("silent".into()), t0);
        assert_eq!(
            given_up,
            Decision { next: Call::Rejoin, wait: Duration::ZERO, say: Some(Say::GivenUp("silent".into())) }
        );
        let retry = link.on_answer(Call::Rejoin, Answer::Failed("unavailable".into()), t0);
        assert_eq!(retry.next, Call::Rejoin, "a failed rejoin is tried again");
        let joined = link.on_answer(Call::Rejoin, Answer::Ok, t0);
        assert_eq!(joined.next, Call::Heartbeat);
        assert_eq!(joined.say, Some(Say::Registered));
        let unknown = link.on_answer(Call::Heartbeat, Answer::Unknown, t0);
        assert_eq!(unknown.next, Call::Register);
    }

    fn answer() -> impl Strategy<Value = Answer> {
        prop_oneof![
            4 => Just(Answer::Ok),
            1 => Just(Answer::Unknown),
            1 => Just(Answer::GivenUp("silent".into())),
            4 => Just(Answer::Failed("timed out".into())),
        ]
    }

    proptest! {
        /// Whatever the head answers: the node never stops trying, never waits
        /// longer than the backoff cap, goes back to heartbeats once its
        /// registration is taken, and says "lost" and "back" in pairs.
        #[test]
        fn the_link_always_recovers(answers in prop::collection::vec((answer(), 0u64..5_000), 1..80)) {
            let mut now = Instant::now();
            let mut link = HeadLink::default();
            let mut call = Call::Heartbeat;
            let mut lost = false;
            for (answer, ms) in answers {
                now += Duration::from_millis(ms);
                let registered = answer == Answer::Ok && call != Call::Heartbeat;
                let d = link.on_answer(call, answer.clone(), now);
                prop_assert!(d.wait <= MAX_BACKOFF);
                if registered {
                    prop_assert_eq!(d.next, Call::Heartbeat);
                }
                match (&answer, &d.say) {
                    (Answer::Failed(_), Some(Say::Lost(_))) => { prop_assert!(!lost); lost = true; }
                    (Answer::Failed(_), _) => prop_assert!(lost),
                    (_, _) => lost = false,
                }
                if matches!(d.say, Some(Say::Back(_))) {
                    prop_assert_eq!(call, Call::Heartbeat);
                }
                call = d.next;
            }
        }
    }
}
