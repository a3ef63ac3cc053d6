//! What a driver shows and does while it blocks in `get` or `wait`.
//!
//! An interactive driver (the REPL, a notebook) wants two things from a blocking
//! call that a program does not: live progress — how many of the awaited objects
//! are done, and how many of their tasks are running or still pending, per function
//! — and a way out. Ctrl-C or a notebook interrupt calls [`CoreWorker::interrupt`],
//! which cancels every task this driver still has outstanding and wakes every
//! blocked call with [`RayError::Interrupted`]; the process, and a session's
//! variables, live on.

use crate::refs::State;
use crate::{CoreWorker, lock};
use ray_abi::ObjectId;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

// The same types the evaluation process sends its front-end.
pub use ray_abi::side_channel::{Progress, ProgressRow};

/// Receives progress reports; set by an interactive driver.
pub type ProgressSink = Arc<dyn Fn(&Progress) + Send + Sync>;

/// Blocking calls that have not reported yet stay silent: most gets are quick.
const FIRST_REPORT: Duration = Duration::from_millis(200);
const REPORT_EVERY: Duration = Duration::from_millis(100);

type Waker = Box<dyn Fn() + Send>;

/// Blocked calls that an interrupt must wake.
#[derive(Default)]
pub(crate) struct Interrupts {
    generation: u64,
    next_id: u64,
    wakers: BTreeMap<u64, Waker>,
}

/// Held for the duration of one blocking call.
pub(crate) struct BlockingScope {
    core: CoreWorker,
    waker_id: u64,
    generation: u64,
    reporter: Option<Arc<Reporter>>,
}

/// Progress reports of one blocking call.
///
/// The final report is sent by the thread whose call returns, before user code
/// goes on: a front-end then has it before the cell's end, not with the next cell.
/// Reports are sent under a lock, so that the final one is the last.
struct Reporter {
    core: CoreWorker,
    ids: Vec<ObjectId>,
    sink: ProgressSink,
    started: Instant,
    state: std::sync::Mutex<ReportState>,
}

#[derive(Default)]
struct ReportState {
    /// The blocking call returned.
    returned: bool,
    /// The front-end has seen a report of this call.
    reported: bool,
}

impl Reporter {
    /// Sends a running report; false once the call has returned.
    fn report_running(&self) -> bool {
        let mut state = lock(&self.state);
        if state.returned {
            return false;
        }
        state.reported = true;
        (self.sink)(&self.progress(false));
        true
    }

    fn progress(&self, finished: bool) -> Progress {
        let elapsed_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        Progress { elapsed_ms, rows: self.core.progress_rows(&self.ids), finished }
    }

    /// The call returned: sends the final report if the front-end saw this call.
    fn finish(&self) {
        let mut state = lock(&self.state);
        state.returned = true;
        if state.reported {
            (self.sink)(&self.progress(true));
        }
    }
}

impl BlockingScope {
    /// Whether an interrupt arrived since the call began.
    pub(crate) fn interrupted(&self) -> bool {
        lock(&self.core.0.interrupts).generation != self.generation
    }
}

impl Drop for BlockingScope {
    fn drop(&mut self) {
        lock(&self.core.0.interrupts).wakers.remove(&self.waker_id);
        if let Some(reporter) = &self.reporter {
            reporter.finish();
        }
    }
}

impl CoreWorker {
    /// Sends progress of blocking calls to `sink` (interactive drivers).
    pub fn set_progress_sink(&self, sink: ProgressSink) {
        *self.0.progress_sink.write().unwrap_or_else(|p| p.into_inner()) = Some(sink);
        lock(&self.0.sched).remember_finished_names();
    }

    /// Cancels every task this process still has outstanding and wakes blocked
    /// `get`/`wait` calls with [`RayError::Interrupted`]. Returns how many tasks
    /// were cancelled.
    pub fn interrupt(&self) -> usize {
        let outstanding = lock(&self.0.sched).outstanding();
        let mut cancelled = 0;
        for id in &outstanding {
            if self.cancel(id, false).is_ok() {
                cancelled += 1;
            }
        }
        let wakers = {
            let mut i = lock(&self.0.interrupts);
            i.generation += 1;
            std::mem::take(&mut i.wakers)
        };
        for wake in wakers.values() {
            wake();
        }
        cancelled
    }

    /// Starts a blocking call on `ids`: `wake` is called on interrupt, and an
    /// interactive driver gets progress reports until the scope drops.
    pub(crate) fn blocking_scope(&self, ids: &[ObjectId], wake: Waker) -> BlockingScope {
        let (waker_id, generation) = {
            let mut i = lock(&self.0.interrupts);
            i.next_id += 1;
            let id = i.next_id;
            i.wakers.insert(id, wake);
            (id, i.generation)
        };
        let sink = self.0.progress_sink.read().unwrap_or_else(|p| p.into_inner()).clone();
        let reporter = match sink {
            Some(sink) if !crate::execute::in_task() => {
                let reporter = Arc::new(Reporter {
                    core: self.clone(),
                    ids: ids.to_vec(),
                    sink,
                    started: Instant::now(),
                    state: Default::default(),
                });
                let running = reporter.clone();
                self.0.rt.spawn(async move {
                    tokio::time::sleep(FIRST_REPORT).await;
                    while running.report_running() {
                        tokio::time::sleep(REPORT_EVERY).await;
                    }
                });
                Some(reporter)
            }
            _ => None,
        };
        BlockingScope { core: self.clone(), waker_id, generation, reporter }
    }

    /// Counts the awaited objects by producing function and state.
    pub fn progress_rows(&self, ids: &[ObjectId]) -> Vec<ProgressRow> {
        // Some(ok) once settled; a ref this process no longer tracks counts as done.
        let settled: Vec<Option<bool>> = {
            let refs = lock(&self.0.refs);
            ids.iter()
                .map(|id| match refs.get(id).map(|e| &e.state) {
                    None | Some(State::Ready(_)) => Some(true),
                    Some(State::Failed(_)) => Some(false),
                    Some(State::Pending) => None,
                })
                .collect()
        };
        let sched = lock(&self.0.sched);
        let mut rows: BTreeMap<String, ProgressRow> = BTreeMap::new();
        for (id, done) in ids.iter().zip(settled) {
            let task = sched.progress_of(&id.task());
            let name = task.map_or("object", |(name, _)| name).to_string();
            let row = rows.entry(name.clone()).or_insert_with(|| ProgressRow {
                name,
                done: 0,
                failed: 0,
                running: 0,
                pending: 0,
            });
            match (done, task) {
                (Some(true), _) => row.done += 1,
                (Some(false), _) => row.failed += 1,
                (None, Some((_, true))) => row.running += 1,
                (None, _) => row.pending += 1,
            }
        }
        rows.into_values().collect()
    }
}
