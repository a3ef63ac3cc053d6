//! Executing tasks and actor calls in a worker.
//!
//! Tasks run one at a time on a dedicated executor thread, never on the async
//! runtime: user code blocks (it sleeps, computes, calls `ray::get`). A worker that
//! hosts an actor keeps the instance its constructor returned and runs method calls
//! on it: in each caller's submission order for an ordinary actor, on
//! `max_concurrency` threads for a threaded actor, and on the actor's own event loop
//! (run by the API crate, since the user's async code needs its own copy of tokio)
//! for an async actor, whose calls complete later through the host table.
//!
//! Before each call the worker prints a marker on stdout and stderr so the node
//! daemon can prefix output with the task's name. Afterwards it tells the caller
//! which refs it still holds (it borrows them now), and pre-registers the caller as
//! a borrower of refs nested in the return value, so nothing is freed while a
//! reference is in flight.

use crate::direct::DirectServer;
use crate::hosted::{CallState, DirectCall, Executed, HostedActor, Job, JobWaker, TaskResult};
pub use crate::hosted::{actor_created, complete};
use crate::refs::State;
use crate::{CoreWorker, ObjectData, ShmObject, block_on, lock};
use ray_abi::{ActorId, HostTable, ObjectId, RayError, Slice, TaskCall, TaskId};
use ray_proto::*;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ffi::c_void;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{Semaphore, oneshot};

/// The task's id, and the actor's if it creates one, checked before anything
/// runs: a malformed id is the caller's error, never a zero id.
fn spec_ids(spec: &TaskSpec) -> Result<(TaskId, Option<ActorId>), RayError> {
    let task = TaskId::from_bytes(&spec.task_id)?;
    let actor = spec.actor_creation.as_ref().map(|c| ActorId::from_bytes(&c.actor_id)).transpose()?;
    Ok((task, actor))
}

/// The reply for a task that did not run: `error`, and nothing stored.
fn rejected(spec: &TaskSpec, error: RayError) -> PushTaskReply {
    PushTaskReply { task_id: spec.task_id.clone(), error: error.to_bytes().into(), ..PushTaskReply::default() }
}

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

/// Executor and actor state of a worker.
#[derive(Default)]
pub(crate) struct Executor {
    table: Option<&'static HostTable>,
    jobs: Option<std::sync::mpsc::Sender<Job>>,
    shared_rx: Option<Arc<Mutex<std::sync::mpsc::Receiver<Job>>>>,
    actor: Option<Arc<HostedActor>>,
    exit_requested: Arc<AtomicBool>,
    /// Where the executor takes pushed tasks and actor calls itself (see
    /// [`crate::direct`]); empty if it does not.
    direct_address: String,
    /// Set while the executor polls for direct calls: a job must wake it.
    job_waker: Option<JobWaker>,
}

impl CoreWorker {
    /// Starts the executor thread; `table` is what trampolines call back into.
    pub fn start_executor(&self, table: &'static HostTable) {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        // Owners push tasks straight to this thread; without a listener, everything
        // comes on call streams.
        // The direct socket is plain TCP: under TLS, calls take the gRPC streams.
        let direct = (!ray_proto::tls::enabled())
            .then(|| {
                DirectServer::bind(&self.0.conn.ip)
                    .inspect_err(|e| tracing::warn!("this worker takes tasks on its call streams only: {e}"))
                    .ok()
            })
            .flatten();
        {
            let mut ex = lock(&self.0.executor);
            ex.table = Some(table);
            ex.jobs = Some(tx);
            ex.shared_rx = Some(rx.clone());
            if let Some((server, waker)) = &direct {
                ex.direct_address = server.address().to_string();
                ex.job_waker = Some(waker.clone());
            }
        }
        self.spawn_executor_thread(table, rx, direct.map(|(server, _)| server));
    }

    /// The actor this worker hosts, once its constructor has run.
    pub(crate) fn hosted_actor(&self) -> Option<Arc<HostedActor>> {
        lock(&self.0.executor).actor.clone()
    }

    /// Where this worker takes pushed tasks on its executor thread; empty if it
    /// does not.
    pub fn direct_address(&self) -> String {
        lock(&self.0.executor).direct_address.clone()
    }

    fn spawn_executor_thread(
        &self,
        table: &'static HostTable,
        rx: Arc<Mutex<std::sync::mpsc::Receiver<Job>>>,
        direct: Option<DirectServer>,
    ) {
        let cw = self.clone();
        std::thread::Builder::new()
            .name("task-executor".into())
            .spawn(move || {
                if let Some(server) = direct {
                    server.run(&cw, table, &lock(&rx));
                    // This worker became a threaded actor, whose executor threads
                    // share the job channel (or polling failed): calls come on the
                    // call stream from now on.
                    let mut ex = lock(&cw.0.executor);
                    ex.job_waker = None;
                    ex.direct_address.clear();
                }
                loop {
                    let job = match lock(&rx).recv() {
                        Ok(job) => job,
                        Err(_) => return,
                    };
                    cw.run_job(table, job);
                }
            })
            .expect("spawn an executor thread");
    }

    /// Runs a pushed task or actor call and returns the reply for its owner.
    pub(crate) async fn execute(&self, spec: TaskSpec) -> Result<PushTaskReply, RayError> {
        spec_ids(&spec)?;
        let actor = self.hosted_actor();
        let mut _permit = None;
        if let (Some(actor), Some(call)) = (&actor, &spec.actor_task) {
            if actor.id.0[..] != call.actor_id[..] {
                return Err(RayError::Internal("this worker hosts a different actor".into()));
            }
            if actor.ordered {
                actor.wait_turn(&spec.owner_address, call.seq).await;
            }
            if actor.is_async {
                _permit = Some(actor.permits.acquire().await.map_err(|_| RayError::Internal("actor closed".into()))?);
            }
        }
        let (tx, rx) = oneshot::channel();
        let (sender, waker) = {
            let ex = lock(&self.0.executor);
            (ex.jobs.clone(), ex.job_waker.clone())
        };
        let sender = sender.ok_or_else(|| RayError::Internal("this process runs no tasks".into()))?;
        let ordered_call = actor.as_ref().filter(|a| a.ordered).and(spec.actor_task.as_ref()).map(|c| c.seq);
        let caller = spec.owner_address.clone();
        sender.send(Job { spec, reply: tx }).map_err(|_| RayError::Internal("executor stopped".into()))?;
        if let Some(waker) = waker
            && let Err(e) = waker.wake()
        {
            // The job then waits until the executor's next poll.
            tracing::warn!("could not wake the executor for a new job: {e}");
        }
        // One executor thread takes jobs in order, so the next call may queue now.
        if let (Some(actor), Some(seq)) = (&actor, ordered_call) {
            actor.advance(&caller, seq);
        }
        let executed = rx.await.map_err(|_| RayError::Internal("executor dropped a task".into()));
        let reply = match executed? {
            Executed::Done(reply) => *reply,
            Executed::Pending { state, done, spec } => {
                // A call dropped before it finished leaves no result, which
                // `state.take()` turns into an error below.
                let _ = done.await;
                let cw = self.clone();
                tokio::task::spawn_blocking(move || {
                    let result = state.take().unwrap_or_else(|| Err(RayError::Internal("no result".into())));
                    cw.finish_call(&spec, result, Vec::new())
                })
                .await
                .map_err(|e| RayError::Internal(e.to_string()))?
            }
        };
        if lock(&self.0.executor).exit_requested.load(Ordering::SeqCst) {
            // Let the reply leave before the process ends.
            tokio::spawn(async {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                let _ = std::io::stdout().flush();
                std::process::exit(0);
            });
        }
        Ok(reply)
    }

    pub(crate) fn run_job(&self, table: &'static HostTable, job: Job) {
        let executed = self.run_task(table, job.spec);
        // The caller is gone if its request was dropped; the task ran anyway.
        let _ = job.reply.send(executed);
    }

    /// Starts a task or actor call that came on a direct connection; its turn has come.
    pub(crate) fn run_direct_call(&self, table: &'static HostTable, spec: TaskSpec) -> DirectCall {
        let hosted = self.hosted_actor();
        if let (Some(actor), Some(call)) = (&hosted, &spec.actor_task)
            && actor.id.0[..] != call.actor_id[..]
        {
            let error = RayError::Internal("this worker hosts a different actor".into());
            return DirectCall::Replied(Box::new(rejected(&spec, error)));
        }
        match self.run_task(table, spec) {
            Executed::Done(reply) => DirectCall::Replied(reply),
            Executed::Pending { state, spec, .. } => DirectCall::Running { state, spec },
        }
    }

    /// The reply to an async direct call that has completed.
    pub(crate) fn finish_direct_call(&self, state: &CallState, spec: &TaskSpec) -> PushTaskReply {
        let result = state.take().unwrap_or_else(|| Err(RayError::Internal("no result".into())));
        self.finish_call(spec, result, Vec::new())
    }

    /// After a direct call has replied: ends the process if the call asked to
    /// (`exit_actor()`), giving the reply a moment to leave.
    pub(crate) fn exit_if_requested(&self) {
        if lock(&self.0.executor).exit_requested.load(Ordering::SeqCst) {
            let _ = std::io::stdout().flush();
            std::thread::sleep(std::time::Duration::from_millis(50));
            std::process::exit(0);
        }
    }

    fn run_task(&self, table: &'static HostTable, spec: TaskSpec) -> Executed {
        let (task_id, actor_id) = match spec_ids(&spec) {
            Ok(ids) => ids,
            Err(e) => return Executed::Done(Box::new(rejected(&spec, e))),
        };
        let function = spec.function.clone().unwrap_or_default();
        let previous = {
            let mut current = lock(&self.0.current);
            // An actor's calls run in the group its constructor was placed in.
            let placement_group = match &spec.actor_task {
                Some(_) => current.placement_group.clone(),
                None => spec.placement_group.clone(),
            };
            std::mem::replace(
                &mut *current,
                crate::CurrentTask { id: task_id, name: spec.name.clone(), placement_group },
            )
        };
        self.0.put_counter.store(0, Ordering::Relaxed);
        // The node keeps the last name it saw; a run of the same task needs no marker.
        // An actor's output is labelled with its class, as Ray does: methods of a
        // threaded or async actor run concurrently, and a method name would be a guess.
        let log_name = |name: &str| -> String {
            match (&spec.actor_task, &spec.actor_creation) {
                (None, None) => name.to_string(),
                _ => name.split('.').next().unwrap_or(name).to_string(),
            }
        };
        let label = log_name(&spec.name);
        if log_name(&previous.name) != label {
            let _ = writeln!(std::io::stdout(), "{TASK_MARKER}{label}");
            let _ = std::io::stdout().flush();
            let _ = writeln!(std::io::stderr(), "{TASK_MARKER}{label}");
        }

        let (state, done) = CallState::new();
        IN_TASK.with(|t| t.set(true));
        ADOPTED.with(|a| a.borrow_mut().clear());
        let called = self.call_function(table, &spec, &function, &state);
        IN_TASK.with(|t| t.set(false));
        let adopted = ADOPTED.with(|a| std::mem::take(&mut *a.borrow_mut()));
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();

        if let Err(e) = called {
            return Executed::Done(Box::new(self.finish_call(&spec, Err(e), adopted)));
        }
        match state.take() {
            Some(result) => {
                let mut direct_address = String::new();
                if let (Some(creation), Some(id), Ok(_)) = (&spec.actor_creation, actor_id, &result) {
                    direct_address =
                        self.become_actor(id, creation, &function.artifact, lock(&state.instance).unwrap_or(0));
                }
                let mut reply = self.finish_call(&spec, result, adopted);
                reply.direct_address = direct_address;
                Executed::Done(Box::new(reply))
            }
            None => Executed::Pending { state, done, spec: Box::new(spec) },
        }
    }

    /// Keeps the instance a constructor made; returns where the actor takes
    /// direct calls, if it does.
    fn become_actor(&self, id: ActorId, creation: &ActorCreationSpec, artifact: &str, instance: usize) -> String {
        let max = creation.max_concurrency.max(1) as usize;
        let ordered = !creation.is_async && max == 1;
        let actor = Arc::new(HostedActor {
            id,
            instance,
            artifact: artifact.to_string(),
            is_async: creation.is_async,
            ordered,
            gates: Mutex::new(HashMap::new()),
            permits: Arc::new(Semaphore::new(max)),
        });
        let (table, rx, direct_address) = {
            let mut ex = lock(&self.0.executor);
            // Threaded actors take calls on the stream only: several executor
            // threads share their jobs, and none could poll a socket between calls.
            let direct_address = if actor.takes_direct_calls() { ex.direct_address.clone() } else { String::new() };
            ex.actor = Some(actor);
            (ex.table, ex.shared_rx.clone(), direct_address)
        };
        // A threaded actor runs calls on `max_concurrency` threads.
        if !creation.is_async
            && let (Some(table), Some(rx)) = (table, rx)
        {
            for _ in 1..max {
                self.spawn_executor_thread(table, rx.clone(), None);
            }
        }
        direct_address
    }

    fn call_function(
        &self,
        table: &'static HostTable,
        spec: &TaskSpec,
        function: &ray_proto::FunctionDescriptor,
        state: &Arc<CallState>,
    ) -> Result<(), RayError> {
        let hosted_artifact = match (&spec.actor_task, &lock(&self.0.executor).actor) {
            (Some(_), Some(actor)) => Some(actor.artifact.clone()),
            _ => None,
        };
        let artifact = hosted_artifact.as_deref().unwrap_or(&function.artifact);
        let func = if artifact.is_empty() {
            ray_abi::find_task(&function.key).ok_or_else(|| RayError::FunctionUnavailable {
                function: function.name.clone(),
                detail: format!(
                    "`{}` is not registered in this worker's executable; is the worker running the same build as the driver?",
                    function.key
                ),
            })?
        } else {
            self.artifact_symbol(&function.name, artifact, &function.symbol)?
        };
        let instance = match (&spec.actor_task, &lock(&self.0.executor).actor) {
            (Some(_), Some(actor)) => actor.instance as *mut c_void,
            (Some(_), None) => return Err(RayError::Internal("an actor call reached a worker with no actor".into())),
            _ => std::ptr::null_mut(),
        };
        let mut data = Vec::with_capacity(spec.args.len());
        for (i, arg) in spec.args.iter().enumerate() {
            data.push(match &arg.kind {
                Some(task_arg::Kind::Value(b)) => ObjectData::Inline(b.clone()),
                Some(task_arg::Kind::Object(loc)) => match &loc.kind {
                    Some(object_location::Kind::Inline(b)) => ObjectData::Inline(b.clone()),
                    Some(object_location::Kind::Shm(shm)) => {
                        let id = ObjectId::from_slice(&shm.object_id).ok_or_else(|| {
                            RayError::Internal(format!("argument {i} is in shared memory but its id is missing"))
                        })?;
                        let object = ShmObject {
                            id,
                            owner: &shm.owner_address,
                            path: &shm.path,
                            span: shm.span.map(Into::into),
                            node_id: &shm.node_id,
                            node_address: &shm.node_address,
                        };
                        // An argument whose node is gone fails the call with
                        // ObjectLost; the owner recovers it and runs the task again.
                        ObjectData::Mapped(Arc::new(self.map_object(&object).map_err(|f| match f {
                            crate::ReadFailure::SourceGone(e) => RayError::ObjectLost {
                                object: id.to_string(),
                                detail: format!("the node holding this argument cannot be reached: {e}"),
                            },
                            crate::ReadFailure::Failed(e) => e,
                        })?))
                    }
                    Some(object_location::Kind::Error(e)) => return Err(RayError::from_bytes(e)),
                    None => return Err(RayError::Internal(format!("argument {i} was not resolved"))),
                },
                None => return Err(RayError::Internal(format!("argument {i} is empty"))),
            });
        }
        let slices: Vec<Slice> = data.iter().map(|d| Slice::of(d.bytes())).collect();
        let call = TaskCall {
            args: slices.as_ptr(),
            n_args: slices.len(),
            ctx: Arc::as_ptr(state) as *mut c_void,
            host: table,
            instance,
        };
        // SAFETY: `func` is a trampoline generated by #[ray::remote] with the TaskFn
        // signature; `call` and the argument bytes outlive the call (an async method
        // copies its arguments before returning), and `state` outlives completion.
        unsafe { func(&call) };
        drop(data);
        Ok(())
    }

    /// Stores the result and builds the reply for the caller.
    fn finish_call(&self, spec: &TaskSpec, result: TaskResult, adopted: Vec<ObjectId>) -> PushTaskReply {
        // `run_task` checked the id before the task ran.
        let task_id = match TaskId::from_bytes(&spec.task_id) {
            Ok(id) => id,
            Err(e) => return rejected(spec, e),
        };
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
            borrowed: self.report_borrowed(adopted),
            worker_pid: std::process::id(),
            task_id: spec.task_id.clone(),
            ..PushTaskReply::default()
        }
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
                        if let Err(s) = block_on(&self.0.rt, async move { client.add_borrower(req).await }) {
                            tracing::warn!(
                                "owner {owner} did not hear that {caller} borrows object {id}: it may free the \
                                 object while the borrower still needs it: {}",
                                s.message()
                            );
                        }
                    }
                    infos.push(ObjectRefInfo { object_id: id.0.to_vec().into(), owner_address: owner });
                }
            }
        }
        infos
    }

    /// Refs deserialized during the task that are still held: we borrow them now.
    fn report_borrowed(&self, adopted: Vec<ObjectId>) -> Vec<ObjectRefInfo> {
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

    /// `exit_actor()`: tells the head this actor ends on purpose, then ends the
    /// process once the current call has replied.
    pub fn exit_actor(&self) -> Result<(), RayError> {
        let (actor, flag) = {
            let ex = lock(&self.0.executor);
            (ex.actor.clone(), ex.exit_requested.clone())
        };
        let actor =
            actor.ok_or_else(|| RayError::InvalidArgument("exit_actor() must be called inside an actor".into()))?;
        let mut head = self.0.head.clone();
        let req = ActorExitedRequest { actor_id: actor.id.0.to_vec().into() };
        block_on(&self.0.rt, async move { head.actor_exited(req).await }).map_err(|s| from_status(&s, "the head"))?;
        flag.store(true, Ordering::SeqCst);
        Ok(())
    }
}
