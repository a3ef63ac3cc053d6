//! Executing tasks in a worker.
//!
//! Tasks run one at a time on a dedicated executor thread, never on the async
//! runtime: user code blocks (it sleeps, computes, calls `ray::get`). Before each
//! task the worker prints a marker on stdout and stderr so the node daemon can
//! prefix the task's output with its name. Arguments are handed to the trampoline
//! as slices: inline bytes, or the node's shared memory mapped in place.
//!
//! After the task, the worker tells its caller which refs it still holds (it
//! borrows them now), and pre-registers the caller as a borrower of refs nested in
//! the return value, so no object is freed while a reference is in flight.

use crate::refs::State;
use crate::{CoreWorker, ObjectData, block_on, lock};
use ray_abi::{HostTable, ObjectId, RayError, Slice, TaskCall, TaskId};
use ray_object_store::ObjectView;
use ray_proto::*;
use std::cell::{Cell, RefCell};
use std::ffi::c_void;
use std::io::Write;
use std::sync::Arc;
use tokio::sync::oneshot;

/// Marker printed before each task; must match the node daemon's.
pub const TASK_MARKER: &str = "\u{1e}RAYREPL_TASK:";

thread_local! {
    static IN_TASK: Cell<bool> = const { Cell::new(false) };
    static ADOPTED: RefCell<Vec<ObjectId>> = const { RefCell::new(Vec::new()) };
}

/// Whether the current thread is running a task.
pub fn in_task() -> bool {
    IN_TASK.with(|t| t.get())
}

/// Records a ref deserialized during the current task.
pub(crate) fn note_adopted(id: ObjectId) {
    if in_task() {
        ADOPTED.with(|a| a.borrow_mut().push(id));
    }
}

/// A pushed task and where its reply goes.
pub(crate) struct Job {
    spec: TaskSpec,
    reply: oneshot::Sender<PushTaskReply>,
}

/// A task's encoded return value and the refs nested in it, or its failure.
pub type TaskResult = Result<(Vec<u8>, Vec<ObjectId>), RayError>;

/// What a trampoline reported.
#[derive(Default)]
pub struct Outcome {
    result: Option<TaskResult>,
}

/// Stores a trampoline's result into the outcome behind `ctx`.
///
/// # Safety
/// `ctx` must be the `TaskCall::ctx` of a call in progress on this thread.
pub unsafe fn complete(ctx: *mut c_void, result: TaskResult) {
    // SAFETY: the executor passes a pointer to its live `Outcome` as ctx and nothing
    // else touches it during the call.
    let outcome = unsafe { &mut *(ctx as *mut Outcome) };
    outcome.result = Some(result);
}

impl CoreWorker {
    /// Starts the executor thread; `table` is what trampolines call back into.
    pub fn start_executor(&self, table: &'static HostTable) {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let cw = self.clone();
        std::thread::Builder::new()
            .name("task-executor".into())
            .spawn(move || {
                for job in rx {
                    let reply = cw.run_task(table, job.spec);
                    let _ = job.reply.send(reply);
                }
            })
            .expect("spawn the executor thread");
        *lock(&self.0.executor) = Some(tx);
    }

    /// Runs a pushed task and returns the reply for its owner.
    pub(crate) async fn execute(&self, spec: TaskSpec) -> Result<PushTaskReply, RayError> {
        let (tx, rx) = oneshot::channel();
        let sender =
            lock(&self.0.executor).clone().ok_or_else(|| RayError::Internal("this process runs no tasks".into()))?;
        sender.send(Job { spec, reply: tx }).map_err(|_| RayError::Internal("executor stopped".into()))?;
        rx.await.map_err(|_| RayError::Internal("executor dropped a task".into()))
    }

    fn run_task(&self, table: &'static HostTable, spec: TaskSpec) -> PushTaskReply {
        let task_id = TaskId(spec.task_id.as_ref().try_into().unwrap_or_default());
        let function = spec.function.clone().unwrap_or_default();
        *lock(&self.0.current) = crate::CurrentTask { id: task_id, name: spec.name.clone() };
        self.0.put_counter.store(0, std::sync::atomic::Ordering::Relaxed);
        let _ = writeln!(std::io::stdout(), "{TASK_MARKER}{}", spec.name);
        let _ = std::io::stdout().flush();
        let _ = writeln!(std::io::stderr(), "{TASK_MARKER}{}", spec.name);
        self.record_event(TaskEvent {
            task_id: spec.task_id.clone(),
            job_id: spec.job_id,
            name: spec.name.clone(),
            func_name: function.name.clone(),
            state: "RUNNING".into(),
            time_ms: now_ms(),
            node_id: self.0.conn.node_id.clone(),
            worker_pid: std::process::id(),
            attempt: spec.attempt,
            ..TaskEvent::default()
        });

        let result = self.call_function(table, &spec, &function);
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();

        let return_id = ObjectId::new(task_id, 1);
        let (location, contained) = match result {
            Ok((bytes, contained)) => match self.store_value(return_id, &[&bytes], &spec.owner_address) {
                Ok(value) => {
                    let infos = self.hand_over_contained(&contained, &spec.owner_address);
                    self.unpin(&contained);
                    (crate::state_to_location(&State::Ready(value)), infos)
                }
                Err(e) => {
                    self.unpin(&contained);
                    (crate::state_to_location(&State::Failed(e)), vec![])
                }
            },
            Err(mut e) => {
                if let RayError::Task(t) = &mut e {
                    t.ip = self.0.conn.ip.clone();
                    if t.function.is_empty() {
                        t.function = spec.name.clone();
                    }
                }
                (crate::state_to_location(&State::Failed(e)), vec![])
            }
        };
        PushTaskReply {
            result: Some(ReturnObject { location, contained }),
            borrowed: self.report_borrowed(),
            worker_pid: std::process::id(),
        }
    }

    fn call_function(
        &self,
        table: &'static HostTable,
        spec: &TaskSpec,
        function: &ray_proto::FunctionDescriptor,
    ) -> TaskResult {
        let func = if function.artifact.is_empty() {
            ray_abi::find_task(&function.key).ok_or_else(|| RayError::FunctionUnavailable {
                function: function.name.clone(),
                detail: format!(
                    "`{}` is not registered in this worker's executable; is the worker running the same build as the driver?",
                    function.key
                ),
            })?
        } else {
            return Err(RayError::FunctionUnavailable {
                function: function.name.clone(),
                detail: format!("code artifact {} cannot be loaded by this worker", function.artifact),
            });
        };
        let mut data = Vec::with_capacity(spec.args.len());
        for (i, arg) in spec.args.iter().enumerate() {
            data.push(match &arg.kind {
                Some(task_arg::Kind::Value(b)) => ObjectData::Inline(b.clone()),
                Some(task_arg::Kind::Object(loc)) => match crate::location_to_state(Some(loc.clone())) {
                    State::Ready(crate::refs::Value::Inline(b)) => ObjectData::Inline(b),
                    State::Ready(crate::refs::Value::Shm { path, .. }) => {
                        ObjectData::Mapped(Arc::new(ObjectView::open(std::path::Path::new(&path)).map_err(|e| {
                            RayError::ObjectLost { object: format!("argument {i}"), detail: e.to_string() }
                        })?))
                    }
                    State::Failed(e) => return Err(e),
                    State::Pending => {
                        return Err(RayError::Internal(format!("argument {i} was not resolved")));
                    }
                },
                None => return Err(RayError::Internal(format!("argument {i} is empty"))),
            });
        }
        let slices: Vec<Slice> = data.iter().map(|d| Slice::of(d.bytes())).collect();
        let mut outcome = Outcome::default();
        let call = TaskCall {
            args: slices.as_ptr(),
            n_args: slices.len(),
            ctx: &mut outcome as *mut Outcome as *mut c_void,
            host: table,
        };
        IN_TASK.with(|t| t.set(true));
        ADOPTED.with(|a| a.borrow_mut().clear());
        // SAFETY: `func` is a trampoline generated by #[ray::remote] with the TaskFn
        // signature; `call` and everything it points to outlive the call.
        unsafe { func(&call) };
        IN_TASK.with(|t| t.set(false));
        drop(data);
        outcome.result.unwrap_or_else(|| Err(RayError::Internal("the task reported no result".into())))
    }

    /// The caller will hold the refs nested in our return value: make their owners
    /// count it before we let go of ours.
    fn hand_over_contained(&self, contained: &[ObjectId], caller: &str) -> Vec<ObjectRefInfo> {
        let mut infos = Vec::new();
        for id in contained {
            let owner = {
                let mut refs = lock(&self.0.refs);
                let owner = refs.get(id).and_then(|e| e.owner.clone());
                if owner.is_none() {
                    refs.add_borrower(id, caller);
                }
                owner
            };
            match owner {
                None => {
                    infos.push(ObjectRefInfo { object_id: id.0.to_vec().into(), owner_address: self.0.address.clone() })
                }
                Some(owner) => {
                    if let Some(mut client) = self.peer(&owner) {
                        let req = BorrowerRequest {
                            object_ids: vec![id.0.to_vec().into()],
                            borrower_address: caller.to_string(),
                        };
                        let _ = block_on(&self.0.rt, async move { client.add_borrower(req).await });
                    }
                    infos.push(ObjectRefInfo { object_id: id.0.to_vec().into(), owner_address: owner });
                }
            }
        }
        infos
    }

    /// Refs deserialized during the task that are still held: we borrow them now.
    fn report_borrowed(&self) -> Vec<ObjectRefInfo> {
        let adopted = ADOPTED.with(|a| std::mem::take(&mut *a.borrow_mut()));
        let mut refs = lock(&self.0.refs);
        let mut out = Vec::new();
        for id in adopted {
            if let Some(e) = refs.get_mut(&id)
                && e.local > 0
                && !e.registered_borrower
                && let Some(owner) = e.owner.clone()
            {
                e.registered_borrower = true;
                out.push(ObjectRefInfo { object_id: id.0.to_vec().into(), owner_address: owner });
            }
        }
        out
    }
}
