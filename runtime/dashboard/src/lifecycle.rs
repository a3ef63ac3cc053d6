//! A submitted job's status, moved only by what happened to its entrypoint.
//!
//! Ray's Jobs API gives each status a meaning clients rely on: PENDING until the
//! entrypoint starts, RUNNING while it runs, then exactly one of SUCCEEDED (exit
//! status 0), FAILED (any other end, or it could not start) and STOPPED (ended
//! by `job stop`), which never change again. The supervisor reports events; this
//! module decides the record, without I/O, so the rules are tested on their own.

use ray_proto::JobSubmission;
pub use ray_proto::job_submission::Status;

/// How much of a failed job's log its message quotes, as Ray does.
pub const LOG_TAIL_CHARS: usize = 20_000;

/// What happened to a job's entrypoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The entrypoint process started.
    Started {
        /// Its pid (and process group).
        pid: u32,
    },
    /// The working directory or environment could not be prepared.
    SetupFailed(String),
    /// The entrypoint command could not be started.
    StartFailed(String),
    /// The entrypoint ended on its own.
    Exited {
        /// Its exit status, if it exited.
        code: Option<i32>,
        /// The signal that ended it, if one did.
        signal: Option<i32>,
        /// The end of its log, quoted when it failed.
        log_tail: String,
    },
    /// It ended because a stop was asked for (or was stopped before starting).
    Stopped,
}

/// Whether `status` is final.
pub fn is_terminal(status: Status) -> bool {
    matches!(status, Status::Stopped | Status::Succeeded | Status::Failed)
}

/// Ray's message for a job that has not started.
pub const PENDING_MESSAGE: &str =
    "Job has not started yet. It may be waiting for the runtime environment (its working directory) to be set up.";

/// Records `event` on `job` at `now_ms`. An ended job stays as it ended: the
/// event is ignored and `false` returned.
pub fn apply(job: &mut JobSubmission, event: Event, now_ms: u64) -> bool {
    if is_terminal(job.status()) {
        return false;
    }
    let end = |job: &mut JobSubmission, status: Status, error_type: &str, message: String| {
        job.set_status(status);
        job.error_type = error_type.to_string();
        job.message = message;
        job.end_time_ms = now_ms.max(job.start_time_ms);
    };
    match event {
        Event::Started { pid } => {
            if job.status() != Status::Pending {
                return false;
            }
            job.set_status(Status::Running);
            job.driver_pid = pid;
            job.message = "Job is currently running.".into();
        }
        Event::SetupFailed(why) => end(
            job,
            Status::Failed,
            "RUNTIME_ENV_SETUP_FAILURE",
            format!("The job's runtime environment could not be set up: {why}"),
        ),
        Event::StartFailed(why) => end(
            job,
            Status::Failed,
            "JOB_ENTRYPOINT_COMMAND_START_ERROR",
            format!("The entrypoint command could not be started: {why}"),
        ),
        Event::Stopped => end(job, Status::Stopped, "", "Job was intentionally stopped.".into()),
        Event::Exited { code, signal, log_tail } => {
            job.driver_exit_code = code;
            match (code, signal) {
                (Some(0), _) => end(job, Status::Succeeded, "", "Job finished successfully.".into()),
                (Some(code), _) => end(
                    job,
                    Status::Failed,
                    "JOB_ENTRYPOINT_COMMAND_ERROR",
                    format!(
                        "Job entrypoint command failed with exit code {code}, last available logs (truncated to \
                         20,000 chars):\n{}",
                        tail_chars(&log_tail, LOG_TAIL_CHARS)
                    ),
                ),
                (None, signal) => end(
                    job,
                    Status::Failed,
                    "JOB_ENTRYPOINT_COMMAND_ERROR",
                    format!(
                        "Job entrypoint command was killed by signal {}, last available logs (truncated to \
                         20,000 chars):\n{}",
                        signal.map_or_else(|| "?".to_string(), |s| s.to_string()),
                        tail_chars(&log_tail, LOG_TAIL_CHARS)
                    ),
                ),
            }
        }
    }
    true
}

/// The last `n` characters of `s`.
fn tail_chars(s: &str, n: usize) -> &str {
    match s.char_indices().rev().nth(n.saturating_sub(1)) {
        Some((i, _)) if n > 0 => &s[i..],
        _ if n == 0 => "",
        _ => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pending() -> JobSubmission {
        JobSubmission {
            submission_id: "raysubmit_x".into(),
            start_time_ms: 100,
            message: PENDING_MESSAGE.into(),
            ..JobSubmission::default()
        }
    }

    #[test]
    fn a_job_runs_then_ends_by_its_exit_status() {
        let mut job = pending();
        assert!(apply(&mut job, Event::Started { pid: 42 }, 110));
        assert_eq!((job.status(), job.driver_pid), (Status::Running, 42));
        assert!(apply(&mut job, Event::Exited { code: Some(3), signal: None, log_tail: "boom\n".into() }, 120));
        assert_eq!(job.status(), Status::Failed);
        assert_eq!(job.driver_exit_code, Some(3));
        assert!(job.message.contains("exit code 3") && job.message.ends_with("boom\n"), "{}", job.message);
        assert_eq!(job.end_time_ms, 120);
        let mut ok = pending();
        apply(&mut ok, Event::Started { pid: 1 }, 110);
        apply(&mut ok, Event::Exited { code: Some(0), signal: None, log_tail: String::new() }, 130);
        assert_eq!((ok.status(), ok.error_type.as_str()), (Status::Succeeded, ""));
    }

    #[test]
    fn a_stopped_job_stays_stopped_when_its_process_exits() {
        let mut job = pending();
        apply(&mut job, Event::Started { pid: 7 }, 110);
        apply(&mut job, Event::Stopped, 120);
        assert!(!apply(&mut job, Event::Exited { code: None, signal: Some(15), log_tail: String::new() }, 125));
        assert_eq!(job.status(), Status::Stopped);
        assert_eq!(job.driver_exit_code, None);
    }

    #[test]
    fn the_quoted_log_is_its_last_characters() {
        assert_eq!(tail_chars("héllo", 3), "llo");
        assert_eq!(tail_chars("héllo", 4), "éllo");
        assert_eq!(tail_chars("hi", 5), "hi");
        assert_eq!(tail_chars("hi", 0), "");
    }

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            (1u32..100).prop_map(|pid| Event::Started { pid }),
            Just(Event::SetupFailed("no zip".into())),
            Just(Event::StartFailed("no sh".into())),
            Just(Event::Stopped),
            (proptest::option::of(-2i32..3), proptest::option::of(1i32..16)).prop_map(|(code, signal)| Event::Exited {
                code,
                signal,
                log_tail: "log".into()
            }),
        ]
    }

    proptest! {
        /// Whatever happens, in whatever order: a job starts at most once, leaves
        /// PENDING only forward, ends at most once and then never changes, and
        /// has an end time exactly when it has ended.
        #[test]
        fn statuses_only_move_forward(events in proptest::collection::vec(event(), 0..12)) {
            let mut job = pending();
            let mut ended: Option<JobSubmission> = None;
            let mut now = 100;
            for ev in events {
                now += 5;
                let before = job.status();
                let changed = apply(&mut job, ev, now);
                if let Some(final_record) = &ended {
                    prop_assert!(!changed);
                    prop_assert_eq!(&job, final_record);
                }
                if before == Status::Running {
                    prop_assert!(job.status() != Status::Pending);
                }
                prop_assert_eq!(job.end_time_ms != 0, is_terminal(job.status()));
                if is_terminal(job.status()) && ended.is_none() {
                    ended = Some(job.clone());
                }
            }
        }
    }
}
