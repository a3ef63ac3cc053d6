//! Submitting tasks: dependencies, leases, pushing, retries and cancellation.
//!
//! A submitted task first waits for its `ObjectRef` arguments (Ray schedules a task
//! only once its inputs exist). It then joins the queue of its *scheduling key*, the
//! shape of resources it needs. For each key the owner leases workers from the node
//! daemon, as many as there are queued tasks (with at most ten requests waiting at
//! a time), and pushes tasks straight to leased workers' executors, one at a time
//! each (see [`crate::direct`]). Once every queued task has a worker, requests still
//! waiting are withdrawn, so owners sharing a node do not hold workers they no
//! longer need. A used lease outlives its task briefly ([`LEASE_IDLE`]) so a stream
//! of calls reuses it without asking the node again. A worker that dies mid-task
//! fails the push; the task is retried up to `max_retries` times.

use crate::call_stream::Calls;
use crate::refs::{Effects, State};
use crate::{CoreWorker, LEASE_IDLE, lock};
use ray_abi::{
    ActorId, ArgSubmission, FunctionDescriptor, ObjectId, RayError, TaskError, TaskId, TaskOptions, TaskSubmission,
};
use ray_proto::*;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Upper bound on leases one owner holds per scheduling key.
const MAX_LEASES_PER_KEY: usize = 64;
/// Lease requests one owner keeps waiting per scheduling key, as Ray's
/// `max_pending_lease_requests_per_scheduling_category`: a node grants a few at
/// a time, and each one withdrawn or granted after its tasks ran elsewhere costs
/// two calls.
const MAX_PENDING_LEASE_REQUESTS: usize = 10;
/// Ray's default for `max_retries`.
const DEFAULT_MAX_RETRIES: u32 = 3;

type SchedKey = String;

/// A task this process submitted and has not seen finish (or, in the lineage,
/// one that finished and may have to run again).
pub(crate) struct PendingTask {
    id: TaskId,
    pub(crate) name: String,
    function: FunctionDescriptor,
    pub(crate) args: Vec<ArgSubmission>,
    resources: BTreeMap<String, f64>,
    max_retries: u32,
    retry_exceptions: bool,
    pub(crate) attempt: u32,
    pub(crate) return_id: ObjectId,
    /// Objects this task keeps alive until it finishes: its ref arguments and
    /// the refs nested in its value arguments.
    pub(crate) deps: Vec<ObjectId>,
    pub(crate) spec: Option<TaskSpec>,
    pub(crate) cancelled: bool,
    pub(crate) running: Option<(u32, u64)>,
    key: SchedKey,
    /// The actor, for a method call.
    actor: Option<ActorId>,
}

/// How often, and how long apart, a lease request sent on to a node that fails
/// goes back to this process's node: long enough for the head to mark it dead.
const SPILL_TARGET_RETRIES: u32 = 30;
const SPILL_TARGET_RETRY_EVERY: Duration = Duration::from_millis(500);

struct Slot {
    slot_id: u64,
    lease_id: u64,
    /// The node that granted the lease: returns and kills go there.
    node: NodeClient,
    node_id: bytes::Bytes,
    address: String,
    pid: u32,
    calls: Calls,
    busy: Option<TaskId>,
    idle_since: Instant,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.calls.close();
    }
}

/// The leased worker a task is pushed to.
struct Worker {
    slot_id: u64,
    pid: u32,
    address: String,
}

#[derive(Default)]
struct KeyState {
    ready: VecDeque<TaskId>,
    slots: Vec<Slot>,
    /// Lease requests in flight, by request number, each with the means to
    /// withdraw it once nothing waits for it any more.
    requests: HashMap<u64, tokio::sync::oneshot::Sender<()>>,
    resources: BTreeMap<String, f64>,
}

/// All tasks in flight from this process, and the leases serving them.
#[derive(Default)]
pub(crate) struct Scheduler {
    pub(crate) tasks: HashMap<TaskId, PendingTask>,
    keys: HashMap<SchedKey, KeyState>,
    next_slot: u64,
    next_lease_request: u64,
    pub(crate) actors: HashMap<ActorId, crate::actor::ActorConn>,
    /// Names of recently finished tasks, for progress reports that outlive them.
    pub(crate) finished_names: FinishedNames,
    /// Finished tasks that can rebuild their result if it is lost, by result.
    pub(crate) lineage: HashMap<ObjectId, PendingTask>,
}

/// A bounded memory of finished tasks' names. Only interactive drivers, which
/// report progress, keep one: the task-finish path stays free of it elsewhere.
#[derive(Default)]
pub(crate) struct FinishedNames {
    enabled: bool,
    names: HashMap<TaskId, String>,
    order: std::collections::VecDeque<TaskId>,
}

impl FinishedNames {
    const KEEP: usize = 16_384;

    pub(crate) fn enable(&mut self) {
        self.enabled = true;
    }

    fn remember(&mut self, id: TaskId, name: &str) {
        if !self.enabled {
            return;
        }
        if self.names.insert(id, name.to_string()).is_none() {
            self.order.push_back(id);
        }
        while self.order.len() > Self::KEEP {
            if let Some(old) = self.order.pop_front() {
                self.names.remove(&old);
            }
        }
    }

    pub(crate) fn get(&self, id: &TaskId) -> Option<&str> {
        self.names.get(id).map(String::as_str)
    }
}

fn key_of(resources: &BTreeMap<String, f64>) -> SchedKey {
    format_resources(resources)
}

fn event(task: &PendingTask, job: u32, state: TaskState) -> TaskEvent {
    let time_ms = now_ms();
    let at = |when: TaskState| if state == when { time_ms } else { 0 };
    TaskEvent {
        task_id: task.id.0.to_vec().into(),
        job_id: job,
        name: task.name.clone(),
        func_name: task.function.name.clone(),
        state: state.into(),
        time_ms,
        attempt: task.attempt,
        actor_id: task.actor.map(|a| a.0.to_vec().into()).unwrap_or_default(),
        creation_time_ms: at(TaskState::PendingArgsAvail),
        start_time_ms: at(TaskState::Running),
        end_time_ms: if matches!(state, TaskState::Finished | TaskState::Failed) { time_ms } else { 0 },
        ..TaskEvent::default()
    }
}

/// The event of a task starting on worker `pid`.
pub(crate) fn running_event(task: &PendingTask, job: u32, pid: u32) -> TaskEvent {
    let mut ev = event(task, job, TaskState::Running);
    ev.worker_pid = pid;
    ev
}

impl CoreWorker {
    pub(crate) fn record_event(&self, ev: TaskEvent) {
        lock(&self.0.events).push(ev);
    }

    /// Submits a task; returns the id of its return object, owned here.
    pub fn submit(&self, sub: TaskSubmission) -> Result<ObjectId, RayError> {
        self.submit_inner(sub.function, sub.args, sub.options, None)
    }

    pub(crate) fn submit_inner(
        &self,
        function: FunctionDescriptor,
        args: Vec<ArgSubmission>,
        options: TaskOptions,
        actor: Option<ActorId>,
    ) -> Result<ObjectId, RayError> {
        let sub = TaskSubmission { function, args, options };
        if self.0.shut_down.load(Ordering::Relaxed) {
            return Err(RayError::NotInitialized);
        }
        let id = TaskId::generate(self.0.job, self.0.salt);
        let return_id = ObjectId::new(id, 1);
        let mut deps = Vec::new();
        let mut top_level = Vec::new();
        for a in &sub.args {
            match a {
                ArgSubmission::Ref(r) => {
                    deps.push(*r);
                    top_level.push(*r);
                }
                ArgSubmission::Value { contained, .. } => deps.extend(contained.iter().copied()),
            }
        }
        {
            let mut refs = lock(&self.0.refs);
            if let Some(missing) = deps.iter().find(|d| refs.get(d).is_none()) {
                return Err(RayError::ObjectLost {
                    object: missing.to_string(),
                    detail: "an argument refers to an object this process no longer holds".into(),
                });
            }
            for d in &deps {
                refs.add_submitted(d);
            }
            refs.add_owned(return_id, State::Pending, vec![]);
        }
        let resources = sub.options.resource_demand();
        let task = PendingTask {
            id,
            name: sub.options.name.clone().unwrap_or_else(|| sub.function.name.clone()),
            function: sub.function,
            args: sub.args,
            key: key_of(&resources),
            resources,
            max_retries: sub.options.max_retries.unwrap_or(DEFAULT_MAX_RETRIES),
            retry_exceptions: sub.options.retry_exceptions,
            attempt: 0,
            return_id,
            deps,
            spec: None,
            cancelled: false,
            running: None,
            actor,
        };
        self.enqueue(task, top_level);
        Ok(return_id)
    }

    /// Queues a task: it runs once its top-level ref arguments exist.
    pub(crate) fn enqueue(&self, task: PendingTask, mut top_level: Vec<ObjectId>) {
        let id = task.id;
        let mut first = event(&task, self.0.job.0, TaskState::PendingArgsAvail);
        first.required = resources_from_map(&task.resources);
        self.record_event(first);
        {
            let mut sched = lock(&self.0.sched);
            if let Some(a) = task.actor {
                sched.actors.entry(a).or_default().queue.push_back(id);
            }
            sched.tasks.insert(id, task);
        }
        top_level.sort();
        top_level.dedup();
        // Inputs that already exist need no callback, and resolving them inline
        // keeps tasks in submission order.
        let all_settled = {
            let refs = lock(&self.0.refs);
            top_level.iter().all(|d| refs.get(d).is_some_and(|e| !matches!(e.state, State::Pending)))
        };
        if all_settled {
            self.deps_ready(id);
        } else {
            let remaining = Arc::new(AtomicUsize::new(top_level.len()));
            for dep in top_level {
                let remaining = remaining.clone();
                let cw = self.clone();
                self.on_ready(
                    &dep,
                    Box::new(move || {
                        if remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
                            // Building the spec takes locks; do it off the callback.
                            let rt = cw.0.rt.clone();
                            rt.spawn(async move { cw.deps_ready(id) });
                        }
                    }),
                );
            }
        }
    }

    /// All ref arguments exist: build the spec, or fail with the upstream error.
    fn deps_ready(&self, id: TaskId) {
        let (args, function, name, attempt) = {
            let sched = lock(&self.0.sched);
            let Some(t) = sched.tasks.get(&id) else {
                return;
            };
            if t.cancelled {
                return;
            }
            (t.args.clone(), t.function.clone(), t.name.clone(), t.attempt)
        };
        let task_args = match self.build_args(&args) {
            Ok(task_args) => task_args,
            Err(cause) => {
                let message = match &cause {
                    RayError::Task(t) => format!("its argument came from task `{}`, which failed", t.function),
                    other => format!("an argument failed: {other}"),
                };
                let err = RayError::Task(TaskError {
                    function: name,
                    message,
                    location: None,
                    pid: std::process::id(),
                    ip: self.0.conn.ip.clone(),
                    cause: Some(Box::new(cause)),
                });
                self.finish(id, State::Failed(err), None);
                return;
            }
        };
        let spec = TaskSpec {
            task_id: id.0.to_vec().into(),
            job_id: self.0.job.0,
            name: name.clone(),
            function: Some(ray_proto::FunctionDescriptor {
                name: function.name,
                key: function.key,
                symbol: function.symbol,
                artifact: function.artifact.unwrap_or_default(),
            }),
            args: task_args,
            owner_address: self.0.address.clone(),
            attempt,
            parent_task_id: lock(&self.0.current).id.0.to_vec().into(),
            ..TaskSpec::default()
        };
        let key = {
            let mut sched = lock(&self.0.sched);
            let Some(t) = sched.tasks.get_mut(&id) else {
                return;
            };
            t.spec = Some(spec);
            if let Some(actor) = t.actor {
                drop(sched);
                self.pump_actor(actor);
                return;
            }
            let key = t.key.clone();
            let resources = t.resources.clone();
            self.record_event(event(t, self.0.job.0, TaskState::PendingNodeAssignment));
            let ks = sched.keys.entry(key.clone()).or_default();
            ks.resources = resources;
            ks.ready.push_back(id);
            key
        };
        self.pump(&key);
    }

    /// Turns submitted arguments into wire arguments: values as they are, ref
    /// arguments as their (ready) values or locations. Fails with the upstream error
    /// if a ref argument failed.
    pub(crate) fn build_args(&self, args: &[ArgSubmission]) -> Result<Vec<TaskArg>, RayError> {
        let refs = lock(&self.0.refs);
        let info = |oid: &ObjectId| ObjectRefInfo {
            object_id: oid.0.to_vec().into(),
            owner_address: refs.get(oid).and_then(|e| e.owner.clone()).unwrap_or_else(|| self.0.address.clone()),
        };
        let mut task_args = Vec::with_capacity(args.len());
        for a in args {
            match a {
                ArgSubmission::Value { data, contained } => task_args.push(TaskArg {
                    kind: Some(task_arg::Kind::Value(data.clone().into())),
                    nested: contained.iter().map(info).collect(),
                }),
                ArgSubmission::Ref(r) => match refs.get(r).map(|e| &e.state) {
                    Some(State::Failed(e)) => return Err(e.clone()),
                    Some(state @ State::Ready(_)) => task_args.push(TaskArg {
                        kind: crate::object_location(r, &info(r).owner_address, state).map(task_arg::Kind::Object),
                        nested: vec![],
                    }),
                    _ => {
                        return Err(RayError::ObjectLost {
                            object: r.to_string(),
                            detail: "an argument disappeared before the task could run".into(),
                        });
                    }
                },
            }
        }
        Ok(task_args)
    }

    /// Pushes queued tasks to idle leases and asks for more leases if needed.
    fn pump(&self, key: &str) {
        // Leases are being given back: nothing more starts.
        if self.0.shut_down.load(Ordering::Relaxed) {
            return;
        }
        let mut pushes = Vec::new();
        let lease_requests: Vec<(u64, tokio::sync::oneshot::Receiver<()>)>;
        let mut resources = BTreeMap::new();
        let mut name = String::new();
        {
            let mut sched = lock(&self.0.sched);
            let Scheduler { tasks, keys, next_lease_request, .. } = &mut *sched;
            let Some(ks) = keys.get_mut(key) else { return };
            while let Some(slot) = ks.slots.iter_mut().find(|s| s.busy.is_none()) {
                let Some(tid) = ks.ready.pop_front() else {
                    break;
                };
                let Some(task) = tasks.get_mut(&tid) else {
                    continue;
                };
                if task.cancelled {
                    continue;
                }
                let Some(spec) = task.spec.clone() else {
                    continue;
                };
                slot.busy = Some(tid);
                task.running = Some((slot.pid, slot.lease_id));
                let mut running = event(task, self.0.job.0, TaskState::Running);
                running.worker_pid = slot.pid;
                running.node_id = slot.node_id.clone();
                lock(&self.0.events).push(running);
                let worker = Worker { slot_id: slot.slot_id, pid: slot.pid, address: slot.address.clone() };
                pushes.push((slot.calls.clone(), worker, tid, spec));
            }
            let wanted = ks.ready.len().min(MAX_PENDING_LEASE_REQUESTS).saturating_sub(ks.requests.len());
            let room = MAX_LEASES_PER_KEY.saturating_sub(ks.slots.len() + ks.requests.len());
            lease_requests = (0..wanted.min(room))
                .map(|_| {
                    *next_lease_request += 1;
                    let (withdraw, withdrawn) = tokio::sync::oneshot::channel();
                    ks.requests.insert(*next_lease_request, withdraw);
                    (*next_lease_request, withdrawn)
                })
                .collect();
            if !lease_requests.is_empty() {
                resources = ks.resources.clone();
                name = ks.ready.front().and_then(|t| tasks.get(t)).map(|t| t.name.clone()).unwrap_or_default();
            }
            // Every queued task has a worker: withdraw the requests still waiting at
            // a node, or it would grant them to us while other owners wait.
            if ks.ready.is_empty() {
                for (_, withdraw) in ks.requests.drain() {
                    let _ = withdraw.send(());
                }
            }
        }
        for (calls, worker, tid, spec) in pushes {
            let cw = self.clone();
            let key = key.to_string();
            calls.send(&self.0.rt, spec, move |result| async move { cw.pushed(key, worker, tid, result).await });
        }
        for (request, withdrawn) in lease_requests {
            let cw = self.clone();
            let key = key.to_string();
            let resources = resources.clone();
            let name = name.clone();
            self.0.rt.spawn(async move { cw.request_lease(key, request, withdrawn, resources, name).await });
        }
    }

    /// Asks for one lease for `key`'s queue. If the owner withdraws the request
    /// while a node holds it, the node is told to cancel it; the call still ends
    /// with the node's answer, so a lease granted at that moment is given back
    /// rather than lost.
    async fn request_lease(
        &self,
        key: String,
        request: u64,
        withdraw: tokio::sync::oneshot::Receiver<()>,
        resources: BTreeMap<String, f64>,
        name: String,
    ) {
        let mut req = LeaseRequest {
            job_id: self.0.job.0,
            resources: resources_from_map(&resources),
            function_name: name.clone(),
            owner_address: self.0.address.clone(),
            request_id: request,
            ..LeaseRequest::default()
        };
        // Ask this process's node; it may send us on to another, once. A node we
        // were sent to may have died since the view it was chosen from: then ask
        // our own node again, which learns of the death within seconds.
        let mut node = self.0.node.clone();
        let mut unreachable = 0;
        let mut withdraw = Some(withdraw);
        let reply = loop {
            let reply = ask_for_lease(&mut node, req.clone(), &mut withdraw).await;
            match reply.map(|r| r.into_inner().result) {
                Ok(Some(lease_reply::Result::Cancelled(_))) => return,
                Ok(Some(lease_reply::Result::Spillback(_))) if withdraw.is_none() => return,
                Ok(Some(lease_reply::Result::Spillback(to))) if !req.grant_or_reject => {
                    match self.remote_node(&to.node_address) {
                        Ok(client) => node = client,
                        Err(e) => break Err(e),
                    }
                    req.grant_or_reject = true;
                }
                Ok(Some(lease_reply::Result::Spillback(_))) => {
                    break Err(RayError::Internal("a node sent a spilled lease request on again".into()));
                }
                Err(s) if req.grant_or_reject && unreachable < SPILL_TARGET_RETRIES => {
                    tracing::debug!("the node a lease was sent on to failed: {s}; asking this node again");
                    unreachable += 1;
                    tokio::time::sleep(SPILL_TARGET_RETRY_EVERY).await;
                    node = self.0.node.clone();
                    req.grant_or_reject = false;
                }
                other => break other.map_err(|s| from_status(&s, "the node daemon")),
            }
        };
        // Withdrawn, the request is gone from the key already.
        let still_wanted =
            lock(&self.0.sched).keys.get_mut(&key).is_some_and(|ks| ks.requests.remove(&request).is_some());
        let failure = match reply {
            Ok(Some(lease_reply::Result::Lease(lease))) => {
                // The tasks this was asked for ran on other leases meanwhile: give
                // it back now, so an owner waiting on this node can have it, rather
                // than holding an unused worker for `LEASE_IDLE`.
                let unused = !still_wanted || lock(&self.0.sched).keys.get(&key).is_none_or(|ks| ks.ready.is_empty());
                if unused {
                    return_lease_soon(node, lease.lease_id);
                    return;
                }
                match Calls::open(self, &lease.direct_address, &lease.worker_address, "a leased worker").await {
                    Ok(calls) => {
                        let mut sched = lock(&self.0.sched);
                        let slot_id = sched.next_slot;
                        sched.next_slot += 1;
                        sched.keys.entry(key.clone()).or_default().slots.push(Slot {
                            slot_id,
                            lease_id: lease.lease_id,
                            node,
                            node_id: lease.node_id,
                            address: lease.worker_address,
                            pid: lease.worker_pid,
                            calls,
                            busy: None,
                            idle_since: Instant::now(),
                        });
                        drop(sched);
                        self.pump(&key);
                        return;
                    }
                    Err(e) => {
                        return_lease_soon(node, lease.lease_id);
                        e
                    }
                }
            }
            Ok(Some(lease_reply::Result::Infeasible(totals))) => {
                RayError::Infeasible { function: name, requested: format_resources(&resources), available: totals }
            }
            Ok(Some(lease_reply::Result::WorkerStartFailed(why))) => {
                RayError::FunctionUnavailable { function: name, detail: why }
            }
            Ok(Some(lease_reply::Result::Spillback(_) | lease_reply::Result::Cancelled(_))) | Ok(None) => {
                RayError::Internal("empty lease reply".into())
            }
            Err(e) => e,
        };
        // The lease cannot be had: fail what waits for it.
        let failed: Vec<TaskId> = {
            let mut sched = lock(&self.0.sched);
            let ks = sched.keys.entry(key).or_default();
            if still_wanted && ks.requests.is_empty() && ks.slots.is_empty() {
                ks.ready.drain(..).collect()
            } else {
                Vec::new()
            }
        };
        for t in failed {
            self.finish(t, State::Failed(failure.clone()), None);
        }
    }

    /// A task's reply from its leased worker, or the failure of the connection.
    async fn pushed(&self, key: String, worker: Worker, tid: TaskId, result: Result<PushTaskReply, tonic::Status>) {
        let Worker { slot_id, pid, address } = worker;
        match result {
            Ok(reply) => {
                self.task_replied(tid, &address, reply).await;
                {
                    let mut sched = lock(&self.0.sched);
                    if let Some(slot) =
                        sched.keys.get_mut(&key).and_then(|k| k.slots.iter_mut().find(|s| s.slot_id == slot_id))
                    {
                        slot.busy = None;
                        slot.idle_since = Instant::now();
                    }
                }
                self.pump(&key);
            }
            Err(status) => {
                // The worker is gone (or unreachable): drop its lease, maybe retry.
                let lease = {
                    let mut sched = lock(&self.0.sched);
                    let ks = sched.keys.entry(key.clone()).or_default();
                    let pos = ks.slots.iter().position(|s| s.slot_id == slot_id);
                    pos.map(|p| ks.slots.remove(p)).map(|s| (s.lease_id, s.node.clone()))
                };
                if let Some((lease_id, mut node)) = lease {
                    let _ = node.return_lease(ReturnLeaseRequest { lease_id, worker_failed: true }).await;
                }
                let retry = {
                    let mut sched = lock(&self.0.sched);
                    match sched.tasks.get_mut(&tid) {
                        Some(t) if !t.cancelled && t.attempt < t.max_retries => {
                            t.attempt += 1;
                            t.running = None;
                            if let Some(spec) = t.spec.as_mut() {
                                spec.attempt = t.attempt;
                            }
                            let ev = event(t, self.0.job.0, TaskState::PendingNodeAssignment);
                            lock(&self.0.events).push(ev);
                            sched.keys.entry(key.clone()).or_default().ready.push_front(tid);
                            None
                        }
                        Some(t) if t.cancelled => Some(RayError::Cancelled { function: t.name.clone() }),
                        Some(t) => Some(RayError::WorkerCrashed {
                            function: t.name.clone(),
                            attempts: t.attempt + 1,
                            detail: format!("worker pid {pid} exited or was killed: {}", status.message()),
                        }),
                        None => None,
                    }
                };
                if let Some(err) = retry {
                    self.finish(tid, State::Failed(err), None);
                }
                self.pump(&key);
            }
        }
    }

    pub(crate) async fn task_replied(&self, tid: TaskId, worker_address: &str, reply: PushTaskReply) {
        let result = reply.result.unwrap_or_default();
        let state = crate::location_to_state(result.location);
        // The worker could not read an argument because its node is gone: recover
        // the argument, then run the task again once it is back.
        if let State::Failed(lost @ RayError::ObjectLost { object, .. }) = &state
            && self.recover_argument(tid, object, lost)
        {
            return;
        }
        // A panicking task may be retried if the caller asked for it.
        if let State::Failed(RayError::Task(_)) = &state {
            let mut sched = lock(&self.0.sched);
            if let Some(t) = sched.tasks.get_mut(&tid)
                && t.actor.is_none()
                && t.retry_exceptions
                && !t.cancelled
                && t.attempt < t.max_retries
            {
                t.attempt += 1;
                if let Some(spec) = t.spec.as_mut() {
                    spec.attempt = t.attempt;
                }
                let key = t.key.clone();
                sched.keys.entry(key).or_default().ready.push_back(tid);
                return;
            }
        }
        // The worker still holds some of our objects (or others'): it borrows them.
        for b in &reply.borrowed {
            let Some(oid) = ObjectId::from_slice(&b.object_id) else {
                continue;
            };
            let owned_here = lock(&self.0.refs).add_borrower(&oid, worker_address);
            if !owned_here && let Some(mut owner) = self.peer(&b.owner_address) {
                let req = BorrowerRequest {
                    object_ids: vec![b.object_id.clone()],
                    borrower_address: worker_address.to_string(),
                };
                let _ = owner.add_borrower(req).await;
            }
        }
        let contained: Vec<(ObjectId, String)> = result
            .contained
            .iter()
            .filter_map(|c| ObjectId::from_slice(&c.object_id).map(|i| (i, c.owner_address.clone())))
            .collect();
        self.finish(tid, state, Some((reply.worker_pid, contained)));
    }

    /// If `object` is one of the task's ref arguments and can be recovered, starts
    /// that and queues the task to run again once the argument settles.
    fn recover_argument(&self, tid: TaskId, object: &str, why: &RayError) -> bool {
        let arg = {
            let sched = lock(&self.0.sched);
            // Actor calls keep their order by sequence number; they are not re-sent.
            let Some(t) = sched.tasks.get(&tid).filter(|t| !t.cancelled && t.actor.is_none()) else { return false };
            t.args.iter().find_map(|a| match a {
                ArgSubmission::Ref(r) if r.to_string() == object => Some(*r),
                _ => None,
            })
        };
        let Some(arg) = arg else { return false };
        let node = match lock(&self.0.refs).get(&arg).map(|e| &e.state) {
            Some(State::Ready(crate::refs::Value::Shm { node_address, .. })) => node_address.clone(),
            _ => return false,
        };
        if self.object_lost(&arg, &node, why).is_err() {
            return false;
        }
        if let Some(t) = lock(&self.0.sched).tasks.get_mut(&tid) {
            t.spec = None;
            t.running = None;
        }
        let cw = self.clone();
        self.on_ready(
            &arg,
            Box::new(move || {
                let rt = cw.0.rt.clone();
                rt.spawn(async move { cw.deps_ready(tid) });
            }),
        );
        true
    }

    /// Settles a task's return object and releases what it kept alive.
    pub(crate) fn finish(&self, tid: TaskId, state: State, outcome: Option<(u32, Vec<(ObjectId, String)>)>) {
        let task = {
            let mut sched = lock(&self.0.sched);
            let Some(task) = sched.tasks.remove(&tid) else {
                return;
            };
            sched.finished_names.remember(tid, &task.name);
            task
        };
        let mut ev = event(
            &task,
            self.0.job.0,
            if matches!(state, State::Failed(_)) { TaskState::Failed } else { TaskState::Finished },
        );
        if let State::Failed(e) = &state {
            ev.error_type = error_type(e).to_string();
            ev.error_message = e.to_string();
        }
        let (pid, contained) = outcome.unwrap_or_default();
        ev.worker_pid = pid;
        self.record_event(ev);
        // A result in shared memory can be lost with its node; while retries are
        // left, the task is kept to run again (its inputs stay pinned with it).
        let keep_lineage = task.actor.is_none()
            && !task.cancelled
            && task.attempt < task.max_retries
            && matches!(state, State::Ready(crate::refs::Value::Shm { .. }));
        let mut fx = Effects::default();
        {
            let mut refs = lock(&self.0.refs);
            if task.cancelled && !matches!(state, State::Failed(RayError::Cancelled { .. })) {
                // Cancelled while running: the result is discarded.
            } else {
                for (cid, owner) in &contained {
                    refs.adopt(*cid, owner, &self.0.address, true);
                }
                if let Some(e) = refs.get_mut(&task.return_id) {
                    e.contained = contained.iter().map(|(c, _)| *c).collect();
                }
                refs.settle(&task.return_id, state, &mut fx);
            }
            if !keep_lineage {
                for d in &task.deps {
                    refs.remove_submitted(d, &mut fx);
                }
            }
        }
        if keep_lineage {
            lock(&self.0.sched).lineage.insert(task.return_id, task);
        }
        self.apply(fx);
    }

    /// Ray's `cancel`: drops a queued task; a running one is abandoned, and with
    /// `force` its worker is killed.
    pub fn cancel(&self, object: &ObjectId, force: bool) -> Result<(), RayError> {
        let tid = object.task();
        let (name, running) = {
            let mut sched = lock(&self.0.sched);
            let Some(t) = sched.tasks.get_mut(&tid) else {
                return Ok(());
            };
            t.cancelled = true;
            let key = t.key.clone();
            let actor = t.actor;
            let running = if actor.is_some() { None } else { t.running };
            let name = t.name.clone();
            // The worker's node, which is the one that can kill it.
            let running = running.map(|(pid, lease_id)| {
                let node = sched.keys.get(&key).and_then(|k| k.slots.iter().find(|s| s.lease_id == lease_id));
                (pid, node.map_or_else(|| self.0.node.clone(), |s| s.node.clone()))
            });
            let out = (name, running);
            if let Some(ks) = sched.keys.get_mut(&key) {
                ks.ready.retain(|x| *x != tid);
            }
            if let Some(conn) = actor.and_then(|a| sched.actors.get_mut(&a)) {
                conn.queue.retain(|x| *x != tid);
            }
            out
        };
        if force && let Some((pid, mut node)) = running {
            self.0.rt.spawn(async move {
                let _ = node.kill_worker(KillWorkerRequest { pid }).await;
            });
        }
        self.finish(tid, State::Failed(RayError::Cancelled { function: name }), None);
        Ok(())
    }
}

fn error_type(e: &RayError) -> &'static str {
    match e {
        RayError::Task(_) => "TASK_EXECUTION_EXCEPTION",
        RayError::WorkerCrashed { .. } => "WORKER_DIED",
        RayError::Cancelled { .. } => "TASK_CANCELLED",
        RayError::Infeasible { .. } => "TASK_UNSCHEDULABLE_ERROR",
        RayError::ObjectLost { .. } | RayError::OwnerDied { .. } => "OBJECT_LOST",
        _ => "RUNTIME_ERROR",
    }
}

/// Sends buffered task events to the head, one per task attempt: a task that went
/// through several states since the last flush is reported once, as it is now.
pub(crate) async fn flush_events(cw: &CoreWorker) {
    let events = std::mem::take(&mut *lock(&cw.0.events));
    if events.is_empty() {
        return;
    }
    let mut order: Vec<(bytes::Bytes, u32)> = Vec::new();
    let mut latest: HashMap<(bytes::Bytes, u32), TaskEvent> = HashMap::new();
    for ev in events {
        let key = (ev.task_id.clone(), ev.attempt);
        match latest.get_mut(&key) {
            Some(prev) => {
                let required = std::mem::take(&mut prev.required);
                let (node, pid) = (std::mem::take(&mut prev.node_id), prev.worker_pid);
                let (created, started) = (prev.creation_time_ms, prev.start_time_ms);
                *prev = ev;
                prev.creation_time_ms = prev.creation_time_ms.max(created);
                prev.start_time_ms = prev.start_time_ms.max(started);
                if prev.required.is_empty() {
                    prev.required = required;
                }
                if prev.node_id.is_empty() {
                    prev.node_id = node;
                }
                if prev.worker_pid == 0 {
                    prev.worker_pid = pid;
                }
            }
            None => {
                order.push(key.clone());
                latest.insert(key, ev);
            }
        }
    }
    let events = order.into_iter().filter_map(|k| latest.remove(&k)).collect();
    let _ = cw.0.head.clone().report_task_events(TaskEventBatch { events }).await;
}

pub(crate) async fn flush_events_loop(cw: CoreWorker) {
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tick.tick().await;
        flush_events(&cw).await;
    }
}

/// One lease request to `node`. If the owner withdraws it meanwhile (`withdraw`
/// fires, and becomes `None`), asks the node to cancel it and goes on waiting for
/// the answer: cancelled, or granted just before.
async fn ask_for_lease(
    node: &mut NodeClient,
    req: LeaseRequest,
    withdraw: &mut Option<tokio::sync::oneshot::Receiver<()>>,
) -> Result<tonic::Response<LeaseReply>, tonic::Status> {
    let cancel = CancelLeaseRequest { owner_address: req.owner_address.clone(), request_id: req.request_id };
    let mut canceller = node.clone();
    let call = node.request_lease(req);
    tokio::pin!(call);
    if let Some(signal) = withdraw {
        tokio::select! {
            reply = &mut call => return reply,
            // Fired, or dropped because the owner is shutting down: cancel either way.
            _ = signal => {
                *withdraw = None;
                let _ = canceller.cancel_lease(cancel).await;
            }
        }
    }
    call.await
}

/// Gives a lease back from a task of its own.
fn return_lease_soon(mut node: NodeClient, lease_id: u64) {
    tokio::spawn(async move {
        let _ = node.return_lease(ReturnLeaseRequest { lease_id, worker_failed: false }).await;
    });
}

/// Returns leases that stayed idle for [`LEASE_IDLE`] while nothing of their shape
/// was queued: one sweep for all leases, rather than a timer per task.
pub(crate) async fn return_idle_leases_loop(cw: CoreWorker) {
    let mut tick = tokio::time::interval(LEASE_IDLE / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let idle: Vec<Slot> = {
            let mut sched = lock(&cw.0.sched);
            let mut idle = Vec::new();
            for ks in sched.keys.values_mut() {
                if !ks.ready.is_empty() {
                    continue;
                }
                let (expired, kept): (Vec<Slot>, Vec<Slot>) = std::mem::take(&mut ks.slots)
                    .into_iter()
                    .partition(|s| s.busy.is_none() && s.idle_since.elapsed() >= LEASE_IDLE);
                ks.slots = kept;
                idle.extend(expired);
            }
            idle
        };
        for mut slot in idle {
            let lease_id = slot.lease_id;
            let _ = slot.node.return_lease(ReturnLeaseRequest { lease_id, worker_failed: false }).await;
        }
    }
}

/// Gives every lease back, on shutdown.
pub(crate) async fn return_all_leases(cw: &CoreWorker) {
    let slots: Vec<Slot> = {
        let mut sched = lock(&cw.0.sched);
        sched.keys.values_mut().flat_map(|k| k.slots.drain(..)).collect()
    };
    for mut slot in slots {
        let lease_id = slot.lease_id;
        let _ = slot.node.return_lease(ReturnLeaseRequest { lease_id, worker_failed: false }).await;
    }
}
