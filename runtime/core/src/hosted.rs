//! What a worker hosts between its executor and the connections that feed it:
//! calls in progress, the jobs handed to executor threads, and the actor
//! instance with the per-caller gates that keep its calls in order.
//!
//! The executor ([`crate::execute`]) and the direct socket's server
//! ([`crate::direct`]) both work on these; neither owns them.

use crate::lock;
use ray_abi::{ActorId, ObjectId, RayError};
use ray_proto::{PushTaskReply, TaskSpec};
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Arc, Mutex};
use tokio::sync::{Semaphore, oneshot};

/// A task's encoded return value and the refs nested in it, or its failure.
pub type TaskResult = Result<(Vec<u8>, Vec<ObjectId>), RayError>;

/// One call in progress. The trampoline reports into it through the host table,
/// possibly later and from another thread (async actors).
pub struct CallState {
    pub(crate) result: Mutex<Option<TaskResult>>,
    pub(crate) instance: Mutex<Option<usize>>,
    pub(crate) done: Mutex<Option<oneshot::Sender<()>>>,
    /// Wakes the executor thread that took this call on a direct connection.
    pub(crate) waker: Mutex<Option<JobWaker>>,
}

impl CallState {
    pub(crate) fn new() -> (Arc<CallState>, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        let state = Arc::new(CallState {
            result: Mutex::new(None),
            instance: Mutex::new(None),
            done: Mutex::new(Some(tx)),
            waker: Mutex::new(None),
        });
        (state, rx)
    }

    pub(crate) fn take(&self) -> Option<TaskResult> {
        lock(&self.result).take()
    }

    /// Has the method completed?
    pub(crate) fn has_result(&self) -> bool {
        lock(&self.result).is_some()
    }

    /// Wakes `waker` when the method completes (check [`Self::has_result`] after).
    pub(crate) fn wake_on_completion(&self, waker: JobWaker) {
        *lock(&self.waker) = Some(waker);
    }
}

/// Stores a trampoline's result into the call behind `ctx`.
///
/// # Safety
/// `ctx` must be the `TaskCall::ctx` of a call that has not completed yet.
pub unsafe fn complete(ctx: *mut c_void, result: TaskResult) {
    // Hold our own reference while completing: the executor may see the result
    // and drop its `Arc` before this function is done with the state (an async
    // actor completes on its event-loop thread, racing the executor).
    // SAFETY: `ctx` is `Arc::as_ptr` of an `Arc<CallState>` the executor keeps
    // alive until it sees the result, which is stored only below.
    let state = unsafe {
        Arc::increment_strong_count(ctx as *const CallState);
        Arc::from_raw(ctx as *const CallState)
    };
    *lock(&state.result) = Some(result);
    if let Some(tx) = lock(&state.done).take() {
        // A direct call polls the state instead of waiting here.
        let _ = tx.send(());
    }
    if let Some(waker) = lock(&state.waker).as_ref()
        && let Err(e) = waker.wake()
    {
        // The executor then sees the completion only at its next poll.
        tracing::warn!("could not wake the executor for a completed call: {e}");
    }
}

/// Records the instance a constructor made.
///
/// # Safety
/// As for [`complete`].
pub unsafe fn actor_created(ctx: *mut c_void, instance: *mut c_void) {
    // SAFETY: as in `complete`.
    let state = unsafe { &*(ctx as *const CallState) };
    *lock(&state.instance) = Some(instance as usize);
    // SAFETY: same contract.
    unsafe { complete(ctx, Ok((Vec::new(), Vec::new()))) };
}

/// The actor this worker hosts.
pub(crate) struct HostedActor {
    pub(crate) id: ActorId,
    pub(crate) instance: usize,
    /// The cell library the constructor ran from (empty in a compiled program).
    /// Methods run from the same library: a later cell may have redefined the
    /// struct, and its code must never touch this instance.
    pub(crate) artifact: String,
    pub(crate) is_async: bool,
    pub(crate) ordered: bool,
    /// Per caller: the next sequence number to run, and calls waiting their turn.
    pub(crate) gates: Mutex<HashMap<String, SeqGate>>,
    /// Bounds concurrent calls of an async actor.
    pub(crate) permits: Arc<Semaphore>,
}

/// A direct call once its executor has started it.
pub(crate) enum DirectCall {
    Replied(Box<PushTaskReply>),
    /// An async method running on the actor's event loop.
    Running {
        state: Arc<CallState>,
        spec: Box<TaskSpec>,
    },
}

/// Work for an executor thread.
pub(crate) struct Job {
    pub(crate) spec: TaskSpec,
    pub(crate) reply: oneshot::Sender<Executed>,
}

/// What an executor thread hands back.
pub(crate) enum Executed {
    Done(Box<PushTaskReply>),
    /// An async call running on the actor's event loop.
    Pending {
        state: Arc<CallState>,
        done: oneshot::Receiver<()>,
        spec: Box<TaskSpec>,
    },
}

/// Wakes an executor that serves direct calls: a job arrived on its channel, or an
/// async method completed.
pub(crate) type JobWaker = Arc<mio::Waker>;

/// How long an ordered actor waits for a caller's missing call before running
/// later ones (its caller died mid-send), on the call stream and direct sockets.
pub(crate) const GAP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Orders one caller's calls to an ordered actor.
#[derive(Default)]
pub(crate) struct SeqGate {
    next: u64,
    waiting: HashMap<u64, oneshot::Sender<()>>,
}

impl HostedActor {
    /// Whether calls may come on the executor's direct socket: one at a time, or
    /// started on the actor's event loop.
    pub(crate) fn takes_direct_calls(&self) -> bool {
        self.ordered || self.is_async
    }

    /// Whether `caller`'s call `seq` may run now.
    pub(crate) fn turn_has_come(&self, caller: &str, seq: u64) -> bool {
        lock(&self.gates).get(caller).map_or(seq == 0, |gate| seq <= gate.next)
    }

    /// Waits until `seq` is the next call to run for `caller`.
    pub(crate) async fn wait_turn(&self, caller: &str, seq: u64) {
        let rx = {
            let mut gates = lock(&self.gates);
            let gate = gates.entry(caller.to_string()).or_default();
            if seq <= gate.next {
                return;
            }
            let (tx, rx) = oneshot::channel();
            gate.waiting.insert(seq, tx);
            rx
        };
        // A call that never arrives (its caller died mid-send) must not wedge the
        // actor: after a while, run anyway.
        if tokio::time::timeout(GAP_TIMEOUT, rx).await.is_err() {
            let mut gates = lock(&self.gates);
            let gate = gates.entry(caller.to_string()).or_default();
            gate.waiting.remove(&seq);
            gate.next = gate.next.max(seq);
        }
    }

    /// `seq` has been queued: let the caller's next call go.
    pub(crate) fn advance(&self, caller: &str, seq: u64) {
        let mut gates = lock(&self.gates);
        let gate = gates.entry(caller.to_string()).or_default();
        gate.next = gate.next.max(seq + 1);
        if let Some(tx) = gate.waiting.remove(&gate.next) {
            // The next call's caller may have hung up; the gate moves on.
            let _ = tx.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actor() -> HostedActor {
        HostedActor {
            id: ActorId::default(),
            instance: 0,
            artifact: String::new(),
            is_async: false,
            ordered: true,
            gates: Mutex::new(HashMap::new()),
            permits: Arc::new(Semaphore::new(1)),
        }
    }

    #[test]
    fn each_callers_calls_take_their_turn_in_order() {
        let a = actor();
        assert!(a.turn_has_come("x", 0) && !a.turn_has_come("x", 1), "a new caller starts at 0");
        a.advance("x", 0);
        assert!(a.turn_has_come("x", 1) && !a.turn_has_come("x", 2));
        assert!(a.turn_has_come("y", 0) && !a.turn_has_come("y", 1), "callers do not share numbers");
        a.advance("x", 1);
        a.advance("x", 0);
        assert!(a.turn_has_come("x", 2), "a late advance never moves the gate back");
    }

    #[test]
    fn a_waiting_call_runs_once_the_call_before_it_is_queued() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
        let a = Arc::new(actor());
        rt.block_on(async {
            let waiting = tokio::spawn({
                let a = a.clone();
                async move { a.wait_turn("x", 1).await }
            });
            tokio::task::yield_now().await;
            assert!(!waiting.is_finished(), "call 1 waits for call 0");
            a.advance("x", 0);
            tokio::time::timeout(std::time::Duration::from_secs(1), waiting)
                .await
                .expect("call 1 goes once call 0 is queued")
                .expect("no panic");
        });
    }
}
