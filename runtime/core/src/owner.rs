//! Carrying out the owner's scheduling decisions.
//!
//! [`crate::scheduler::Scheduler`] decides; this module does what it says, over
//! gRPC to nodes and the head and over the direct socket to workers, and feeds
//! the answers back to it as events. Every decision is taken under the scheduler's
//! lock and every action is carried out after it is released, so no lock is held
//! across an `.await` and no callback runs under a lock.
//!
//! It also owns what surrounds a task's life here: turning submitted arguments
//! into the wire spec, settling results in the reference table (with the
//! borrowers a worker reports), recovering objects whose node is gone (from a
//! copy, or by running their task again), cancellation, and sending the task
//! events the scheduler records to the head.

use crate::call_stream::Calls;
use crate::refs::{Effects, State, Value};
use crate::scheduler::{
    Action, ActorLocation, DEFAULT_MAX_RETRIES, Finish, Lease, NewTask, Reply, ReplyRefs, Resolving, Resources,
    SentCall, Steering,
};
use crate::{CoreWorker, LEASE_IDLE, lock};
use ray_abi::{ActorCall, ActorId, ArgSubmission, ObjectId, RayError, TaskError, TaskId, TaskOptions, TaskSubmission};
use ray_proto::*;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The scheduler as this process runs it: connections to workers are [`Calls`].
pub(crate) type Scheduler = crate::scheduler::Scheduler<Calls>;

/// A lease request to make, as the scheduler asked for it.
struct LeaseAsk {
    key: String,
    request: u64,
    resources: Resources,
    strategy: Option<LeaseStrategy>,
    name: String,
}

/// How often, and how long apart, a lease request sent on to a node that fails
/// goes back to this process's node: long enough for the head to mark it dead.
const SPILL_TARGET_RETRIES: u32 = 30;
const SPILL_TARGET_RETRY_EVERY: Duration = Duration::from_millis(500);
/// How long a caller waits for a restarting actor before taking its current
/// record as the answer.
const LOCATE_ACTOR_WAIT: Duration = Duration::from_secs(10);

impl CoreWorker {
    /// Submits a task; returns the id of its return object, owned here.
    pub fn submit(&self, sub: TaskSubmission) -> Result<ObjectId, RayError> {
        let (resources, steering) = self.steer(&sub.options.scheduling_strategy, sub.options.resource_demand())?;
        self.submit_task(sub.function, sub.args, &sub.options, resources, steering, None)
    }

    /// Calls an actor method; returns the ref to its result, owned here.
    pub fn call_actor(&self, call: ActorCall) -> Result<ObjectId, RayError> {
        let options = TaskOptions { max_retries: Some(0), ..TaskOptions::default() };
        self.submit_task(call.method, call.args, &options, Resources::new(), Steering::default(), Some(call.actor))
    }

    fn submit_task(
        &self,
        function: ray_abi::FunctionDescriptor,
        args: Vec<ArgSubmission>,
        options: &TaskOptions,
        resources: Resources,
        steering: Steering,
        actor: Option<ActorId>,
    ) -> Result<ObjectId, RayError> {
        if self.0.shut_down.load(Ordering::Relaxed) {
            return Err(RayError::NotInitialized);
        }
        // A placement group passed to the task must exist before the task runs.
        self.flush_group_calls();
        let task = NewTask {
            id: TaskId::generate(self.0.job, self.0.salt),
            name: options.name.clone().unwrap_or_else(|| function.name.clone()),
            function,
            args,
            resources,
            steering,
            max_retries: options.max_retries.unwrap_or(DEFAULT_MAX_RETRIES),
            retry_exceptions: options.retry_exceptions,
            actor,
        };
        let return_id = task.return_id();
        {
            let mut refs = lock(&self.0.refs);
            let deps = task.dependencies();
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
        let actions = lock(&self.0.sched).submit(task);
        self.run(actions);
        Ok(return_id)
    }

    /// Carries out the scheduler's actions, with no lock held.
    pub(crate) fn run(&self, actions: Vec<Action<Calls>>) {
        for action in actions {
            match action {
                Action::WatchArgs { task, args } => self.watch_args(task, args),
                Action::RequestLease { key, request, resources, strategy, name } => {
                    let (withdraw, withdrawn) = tokio::sync::oneshot::channel();
                    lock(&self.0.withdrawals).insert(request, withdraw);
                    let cw = self.clone();
                    let ask = LeaseAsk { key, request, resources, strategy, name };
                    self.0.rt.spawn(async move { cw.request_lease(ask, withdrawn).await });
                }
                Action::WithdrawLease { request } => {
                    // Gone already if its answer came first; then nothing waits.
                    if let Some(withdraw) = lock(&self.0.withdrawals).remove(&request) {
                        let _ = withdraw.send(());
                    }
                }
                Action::Connect { key, lease } => {
                    let cw = self.clone();
                    self.0.rt.spawn(async move { cw.connect_lease(key, lease).await });
                }
                Action::ReturnLease { lease, conn, worker_failed } => {
                    if let Some(conn) = conn {
                        conn.close();
                    }
                    self.return_lease(lease, worker_failed);
                }
                Action::Push { key, slot, conn, task, spec, worker_address } => {
                    let cw = self.clone();
                    conn.send(&self.0.rt, spec, move |result| async move {
                        cw.pushed(key, slot, task, worker_address, result).await
                    });
                }
                Action::KillWorker { node_address, pid } => {
                    let node = self.node_at(&node_address);
                    self.0.rt.spawn(async move {
                        let killed = match node {
                            Ok(mut node) => node
                                .kill_worker(KillWorkerRequest { pid })
                                .await
                                .map(drop)
                                .map_err(|s| from_status(&s, "the node daemon")),
                            Err(e) => Err(e),
                        };
                        if let Err(e) = killed {
                            // The task is cancelled either way; its worker runs on.
                            tracing::warn!("could not kill worker {pid} of a force-cancelled task: {e}");
                        }
                    });
                }
                Action::LocateActor { actor, min_incarnation } => {
                    let cw = self.clone();
                    self.0.rt.spawn(async move { cw.locate_actor(actor, min_incarnation).await });
                }
                Action::CallActor { call, conn, spec, address } => {
                    let cw = self.clone();
                    conn.send(&self.0.rt, spec, move |result| async move {
                        cw.actor_answered(call, &address, result).await
                    });
                }
                Action::ExplainLostCall { call, detail, max_task_retries } => {
                    let cw = self.clone();
                    self.0.rt.spawn(async move { cw.explain_lost_call(call, detail, max_task_retries).await });
                }
                Action::Finish(finish) => self.finish(finish),
            }
        }
    }

    /// A client for the node daemon at `address`: ours, or another.
    fn node_at(&self, address: &str) -> Result<NodeClient, RayError> {
        if address == self.0.conn.node_address { Ok(self.0.node.clone()) } else { self.remote_node(address) }
    }

    // ------------------------------------------------------------ arguments

    /// Resolves the task's arguments once its top-level refs have settled.
    fn watch_args(&self, task: TaskId, args: Vec<ObjectId>) {
        // Inputs that already exist need no callback, and resolving them inline
        // keeps tasks in submission order.
        let all_settled = {
            let refs = lock(&self.0.refs);
            args.iter().all(|d| refs.get(d).is_some_and(|e| !matches!(e.state, State::Pending)))
        };
        if all_settled {
            return self.resolve_args(task);
        }
        let remaining = Arc::new(AtomicUsize::new(args.len()));
        for dep in args {
            let remaining = remaining.clone();
            let cw = self.clone();
            self.on_ready(
                &dep,
                Box::new(move || {
                    if remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
                        // Building the spec takes locks; do it off the callback.
                        let rt = cw.0.rt.clone();
                        rt.spawn(async move { cw.resolve_args(task) });
                    }
                }),
            );
        }
    }

    /// All ref arguments exist: build the spec, or fail with the upstream error.
    fn resolve_args(&self, id: TaskId) {
        let Some(Resolving { args, name, function, attempt, group }) = lock(&self.0.sched).to_resolve(&id) else {
            return;
        };
        let spec = self.build_args(&args).map(|args| TaskSpec {
            task_id: id.0.to_vec().into(),
            job_id: self.0.job.0,
            name: name.clone(),
            function: Some(function.into()),
            args,
            owner_address: self.0.address.clone(),
            attempt,
            parent_task_id: lock(&self.0.current).id.0.to_vec().into(),
            placement_group: group,
            ..TaskSpec::default()
        });
        let spec = spec.map_err(|cause| {
            let message = match &cause {
                RayError::Task(t) => format!("its argument came from task `{}`, which failed", t.function),
                other => format!("an argument failed: {other}"),
            };
            RayError::Task(TaskError {
                function: name,
                message,
                location: None,
                pid: std::process::id(),
                ip: self.0.conn.ip.clone(),
                cause: Some(Box::new(cause)),
            })
        });
        let actions = lock(&self.0.sched).args_resolved(id, spec);
        self.run(actions);
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
                    Some(State::Pending) | None => {
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

    // ------------------------------------------------------------ leases

    /// Asks for one lease for `key`'s queue. If the owner withdraws the request
    /// while a node holds it, the node is told to cancel it; the call still ends
    /// with the node's answer, so a lease granted at that moment is given back
    /// rather than lost.
    async fn request_lease(&self, ask: LeaseAsk, withdraw: tokio::sync::oneshot::Receiver<()>) {
        let LeaseAsk { key, request, resources, strategy, name } = ask;
        let mut req = LeaseRequest {
            job_id: self.0.job.0,
            resources: resources_from_map(&resources),
            function_name: name.clone(),
            owner_address: self.0.address.clone(),
            request_id: request,
            strategy,
            ..LeaseRequest::default()
        };
        // Ask this process's node; it may send us on to another, once. A node we
        // were sent to may have died since the view it was chosen from: then ask
        // our own node again, which learns of the death within seconds.
        let mut node = self.0.node.clone();
        let mut node_address = self.0.conn.node_address.clone();
        let mut unreachable = 0;
        let mut withdraw = Some(withdraw);
        let reply = loop {
            let reply = ask_for_lease(&mut node, req.clone(), &mut withdraw).await;
            match reply.map(|r| r.into_inner().result) {
                Ok(Some(lease_reply::Result::Cancelled(_))) => break Ok(None),
                Ok(Some(lease_reply::Result::Spillback(_))) if withdraw.is_none() => break Ok(None),
                Ok(Some(lease_reply::Result::Spillback(to))) if !req.grant_or_reject => {
                    match self.remote_node(&to.node_address) {
                        Ok(client) => node = client,
                        Err(e) => break Err(e),
                    }
                    node_address = to.node_address;
                    req.grant_or_reject = true;
                }
                Ok(Some(lease_reply::Result::Spillback(_))) => {
                    break Err(RayError::Internal("a node sent a spilled lease request on again".into()));
                }
                Ok(
                    result @ (Some(
                        lease_reply::Result::Lease(_)
                        | lease_reply::Result::Infeasible(_)
                        | lease_reply::Result::WorkerStartFailed(_)
                        | lease_reply::Result::Unschedulable(_),
                    )
                    | None),
                ) => {
                    break granted_lease(result, &name, &resources).map(Some);
                }
                Err(s) if req.grant_or_reject && unreachable < SPILL_TARGET_RETRIES => {
                    tracing::debug!("the node a lease was sent on to failed: {s}; asking this node again");
                    unreachable += 1;
                    tokio::time::sleep(SPILL_TARGET_RETRY_EVERY).await;
                    node = self.0.node.clone();
                    node_address = self.0.conn.node_address.clone();
                    req.grant_or_reject = false;
                }
                Err(s) => break Err(from_status(&s, "the node daemon")),
            }
        };
        lock(&self.0.withdrawals).remove(&request);
        if let Err(e @ RayError::Infeasible { .. }) = &reply
            && lock(&self.0.said_infeasible).insert(key.clone())
        {
            // At once, not only to whoever gets a result.
            eprintln!("(autoscaler) Warning: {e}");
        }
        let actions = {
            let mut sched = lock(&self.0.sched);
            match reply {
                Ok(Some(lease)) => {
                    let lease = Lease {
                        lease_id: lease.lease_id,
                        node_address,
                        node_id: lease.node_id,
                        worker_address: lease.worker_address,
                        direct_address: lease.direct_address,
                        pid: lease.worker_pid,
                    };
                    sched.lease_granted(&key, request, lease)
                }
                Ok(None) => sched.lease_cancelled(&key, request),
                Err(e) => sched.lease_failed(&key, request, e),
            }
        };
        self.run(actions);
    }

    /// Opens the connection tasks are pushed on to a granted worker.
    async fn connect_lease(&self, key: String, lease: Lease) {
        let opened = Calls::open(self, &lease.direct_address, &lease.worker_address, "a leased worker").await;
        let actions = match opened {
            Ok(calls) => lock(&self.0.sched).lease_connected(&key, lease, calls, Instant::now()),
            Err(e) => lock(&self.0.sched).lease_unreachable(&key, lease, e),
        };
        self.run(actions);
    }

    /// Gives a lease back to the node that granted it.
    fn return_lease(&self, lease: Lease, worker_failed: bool) {
        let node = self.node_at(&lease.node_address);
        self.0.rt.spawn(async move {
            // The node frees the lease itself when this process or the worker
            // exits; until then the worker stays unavailable to others.
            if let Err(e) = give_back(node, &lease, worker_failed).await {
                tracing::warn!(
                    "could not give lease {} (worker pid {}) back to node {}: {e}",
                    lease.lease_id,
                    lease.pid,
                    lease.node_address
                );
            }
        });
    }

    /// Returns leases idle for [`LEASE_IDLE`] while nothing of their shape was
    /// queued: one sweep for all leases, rather than a timer per task.
    pub(crate) async fn return_idle_leases_loop(self) {
        let mut tick = tokio::time::interval(LEASE_IDLE / 3);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let actions = lock(&self.0.sched).return_idle_leases(Instant::now());
            self.run(actions);
        }
    }

    // ------------------------------------------------------------ replies

    /// A task's reply from its leased worker, or the failure of the connection.
    async fn pushed(
        &self,
        key: String,
        slot: u64,
        task: TaskId,
        worker_address: String,
        result: Result<PushTaskReply, tonic::Status>,
    ) {
        let actions = match result {
            Ok(reply) => {
                let reply = reply_of(reply, worker_address);
                // The worker could not read an argument because its node is gone:
                // recover the argument, then run the task again once it is back.
                match self.recoverable_argument(task, &reply.result) {
                    Some(argument) => {
                        lock(&self.0.sched).rerun_after_argument(&key, slot, task, argument, Instant::now())
                    }
                    None => lock(&self.0.sched).task_replied(&key, slot, task, reply, Instant::now()),
                }
            }
            Err(status) => lock(&self.0.sched).worker_died(&key, slot, task, status.message()),
        };
        self.run(actions);
    }

    /// If a task failed because it could not read one of its ref arguments from
    /// a node that is gone, and that argument can be recovered, starts recovering
    /// it and returns it.
    fn recoverable_argument(&self, task: TaskId, result: &State) -> Option<ObjectId> {
        let State::Failed(lost @ RayError::ObjectLost { object, .. }) = result else { return None };
        let argument = lock(&self.0.sched).ref_argument(&task, object)?;
        let node = match lock(&self.0.refs).get(&argument).map(|e| &e.state) {
            Some(State::Ready(Value::Shm { node_address, .. })) => node_address.clone(),
            _ => return None,
        };
        self.object_lost(&argument, &node, lost).ok().map(|()| argument)
    }

    /// Settles a task's return object and releases what it kept alive. Borrowers
    /// a worker reports of objects owned elsewhere are registered with their
    /// owners first.
    fn finish(&self, finish: Finish) {
        let remote: Vec<(ObjectId, String)> = match &finish.reply {
            None => Vec::new(),
            Some(reply) => {
                let mut refs = lock(&self.0.refs);
                reply.borrowed.iter().filter(|(id, _)| !refs.add_borrower(id, &reply.worker_address)).cloned().collect()
            }
        };
        if remote.is_empty() {
            return self.settle(finish);
        }
        let cw = self.clone();
        self.0.rt.spawn(async move {
            let borrower = finish.reply.as_ref().map(|r| r.worker_address.clone()).unwrap_or_default();
            for (id, owner) in remote {
                let Some(mut client) = cw.peer(&owner) else { continue };
                let req =
                    BorrowerRequest { object_ids: vec![id.0.to_vec().into()], borrower_address: borrower.clone() };
                if let Err(s) = client.add_borrower(req).await {
                    // The owner may free the object while the worker still holds it.
                    tracing::warn!(
                        "could not tell {owner} that {borrower} borrows {id} (kept by task {}): {}",
                        finish.task,
                        s.message()
                    );
                }
            }
            cw.settle(finish);
        });
    }

    fn settle(&self, finish: Finish) {
        let mut fx = Effects::default();
        {
            let mut refs = lock(&self.0.refs);
            if let Some(reply) = &finish.reply {
                for (id, owner) in &reply.contained {
                    refs.adopt(*id, owner, &self.0.address, true);
                }
                if let Some(e) = refs.get_mut(&finish.return_id) {
                    e.contained = reply.contained.iter().map(|(id, _)| *id).collect();
                }
            }
            refs.settle(&finish.return_id, finish.result, &mut fx);
            for d in &finish.release {
                refs.remove_submitted(d, &mut fx);
            }
        }
        self.apply(fx);
    }

    /// Ray's `cancel`: drops a queued task; a running one is abandoned, and with
    /// `force` its worker is killed.
    pub fn cancel(&self, object: &ObjectId, force: bool) -> Result<(), RayError> {
        let actions = lock(&self.0.sched).cancel(object.task(), force);
        self.run(actions);
        Ok(())
    }

    // ------------------------------------------------------------ actors

    /// The actor's record once it is alive at `min_incarnation` or later, or dead.
    /// A broken connection need not mean a dead actor: if nothing changes for a
    /// while, the current record is returned. An actor still being created or
    /// restarted (waiting for resources, or for a node that can hold it) is
    /// waited for, however long that takes, as in Ray.
    async fn settled_actor(&self, actor: ActorId, min_incarnation: u32) -> Result<ActorInfo, tonic::Status> {
        let mut head = self.0.head.clone();
        let id: bytes::Bytes = actor.0.to_vec().into();
        loop {
            let wait = GetActorRequest { actor_id: id.clone(), wait: true, min_incarnation };
            if let Ok(settled) = tokio::time::timeout(LOCATE_ACTOR_WAIT, head.get_actor(wait)).await {
                return settled.map(|r| r.into_inner());
            }
            let now = GetActorRequest { actor_id: id.clone(), wait: false, min_incarnation: 0 };
            let info = head.get_actor(now).await?.into_inner();
            let waiting = matches!(info.state(), ActorState::PendingCreation | ActorState::Restarting);
            if !waiting || self.0.shut_down.load(std::sync::atomic::Ordering::Relaxed) {
                return Ok(info);
            }
        }
    }

    /// Asks the head where the actor lives (waiting while it starts or restarts)
    /// and connects to it.
    async fn locate_actor(&self, actor: ActorId, min_incarnation: u32) {
        let location = match self.settled_actor(actor, min_incarnation).await {
            Err(s) => ActorLocation::Gone(from_status(&s, "the head")),
            Ok(info) if info.state() == ActorState::Dead => {
                ActorLocation::Gone(RayError::from_bytes(&info.death_error))
            }
            Ok(info) => {
                let what = format!("actor {}", info.class_name);
                match Calls::open(self, &info.direct_address, &info.address, &what).await {
                    Err(e) => ActorLocation::Gone(e),
                    Ok(conn) => ActorLocation::Alive {
                        incarnation: info.incarnation,
                        pid: info.pid,
                        node_id: info.node_id,
                        address: info.address,
                        max_task_retries: info.max_task_retries,
                        conn,
                    },
                }
            }
        };
        let actions = lock(&self.0.sched).actor_located(actor, location);
        self.run(actions);
    }

    /// A call's reply, or the failure of the connection it was sent on.
    async fn actor_answered(&self, call: SentCall, address: &str, result: Result<PushTaskReply, tonic::Status>) {
        let actions = match result {
            Ok(reply) => lock(&self.0.sched).actor_replied(call, reply_of(reply, address.to_string())),
            Err(status) => lock(&self.0.sched).actor_call_lost(call, status.message().to_string()),
        };
        self.run(actions);
    }

    /// Finds out why an actor call that may not be resent was lost, and fails it
    /// with that.
    async fn explain_lost_call(&self, call: SentCall, detail: String, max_task_retries: i32) {
        let error = match self.settled_actor(call.actor, call.incarnation + 1).await {
            Ok(info) if info.state() == ActorState::Dead => RayError::from_bytes(&info.death_error),
            Ok(info) if info.incarnation == call.incarnation => RayError::Connection {
                what: format!("actor {}", info.class_name),
                detail: format!("the connection broke while this call ran ({detail}); the actor is still alive"),
            },
            Ok(info) => RayError::ActorDied {
                class: info.class_name.clone(),
                actor_id: call.actor.to_string(),
                cause: format!(
                    "its process died while running this call; the actor restarted, but \
                     max_task_retries={max_task_retries} does not allow resending the call"
                ),
            },
            Err(s) => from_status(&s, "the head"),
        };
        let actions = lock(&self.0.sched).fail(call.task, error);
        self.run(actions);
    }

    // ------------------------------------------------------------ recovery

    /// A reader could not copy `id` from the node at `from`. Ok means the object
    /// can be read again once it settles (from a copy, or rebuilt); otherwise it
    /// is lost, with `why`.
    ///
    /// A large object lives in one node's shared memory, plus any copies readers
    /// made on theirs. The owner recovers it as Ray does: from another copy if one
    /// exists; else by running the task that made it again (its lineage, kept
    /// while retries are left); else the object is lost. A borrower hands the
    /// failure to the owner and fetches the object's new location.
    pub(crate) fn object_lost(&self, id: &ObjectId, from: &str, why: &RayError) -> Result<(), RayError> {
        let lost = |detail: String| RayError::ObjectLost { object: id.to_string(), detail };
        {
            let mut refs = lock(&self.0.refs);
            let Some(entry) = refs.get_mut(id) else {
                return Err(lost("no reference to it is held here".into()));
            };
            if entry.owner.is_some() {
                // A borrower: the owner decides, and the fetch brings the outcome.
                entry.state = State::Pending;
                drop(refs);
                self.fetch_borrowed(id, Some(from.to_string()));
                return Ok(());
            }
            entry.copies.retain(|c| c != from);
            let size = match &entry.state {
                State::Ready(Value::Shm { node_address, size, .. }) if node_address == from => *size,
                // Another reader already moved it on.
                _ => return Ok(()),
            };
            if !entry.copies.is_empty() {
                let copy = entry.copies.remove(0);
                tracing::info!("object {id}: node {from} is gone; reading the copy on {copy}");
                // The copy's file is known only to its node; a pull there finds it by id.
                entry.state = State::Ready(Value::Shm {
                    path: String::new(),
                    span: None,
                    size,
                    node_id: Default::default(),
                    node_address: copy,
                });
                return Ok(());
            }
            // Readers wait while the scheduler decides (the two locks are never
            // held together, so refs is let go first).
            entry.state = State::Pending;
        }
        let rebuilt = lock(&self.0.sched).rebuild(id);
        let Some((name, actions)) = rebuilt else {
            let rebuild = if id.is_put() {
                "it was made by `put`, so no task can rebuild it"
            } else {
                "the task that made it has no retries left to rebuild it (raise max_retries)"
            };
            let err = lost(format!("its only copy was on node {from}, which cannot be reached ({why}), and {rebuild}"));
            let mut fx = Effects::default();
            lock(&self.0.refs).settle(id, State::Failed(err.clone()), &mut fx);
            self.apply(fx);
            return Err(err);
        };
        tracing::info!("object {id}: node {from} is gone; running `{name}` again to rebuild it");
        self.run(actions);
        Ok(())
    }

    /// Drops the lineage of freed objects, releasing the inputs it pinned (which
    /// may free more).
    pub(crate) fn release_lineage(&self, fx: &mut Effects) {
        let mut next = 0;
        while next < fx.freed.len() {
            let id = fx.freed[next];
            next += 1;
            if id.is_put() {
                continue;
            }
            let deps = lock(&self.0.sched).drop_lineage(&id);
            if deps.is_empty() {
                continue;
            }
            let mut refs = lock(&self.0.refs);
            for d in &deps {
                refs.remove_submitted(d, fx);
            }
        }
    }

    // ------------------------------------------------------------ events

    /// Sends buffered task events to the head, one per task attempt: a task that
    /// went through several states since the last flush is reported once, as it
    /// is now.
    pub(crate) async fn flush_events(&self) {
        let events = lock(&self.0.sched).take_events();
        if events.is_empty() {
            return;
        }
        let batch = TaskEventBatch { events: merge_events(events) };
        let count = batch.events.len();
        if let Err(s) = self.0.head.clone().report_task_events(batch).await {
            tracing::debug!("{count} task events were not recorded by the head: {}", s.message());
        }
    }

    pub(crate) async fn flush_events_loop(self) {
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tick.tick().await;
            self.flush_events().await;
        }
    }

    /// Gives every lease back and withdraws every request, on shutdown; waits
    /// for the nodes to take the leases back.
    pub(crate) async fn return_all_leases(&self) {
        let actions = lock(&self.0.sched).shut_down();
        let mut returns = Vec::new();
        let mut others = Vec::new();
        for action in actions {
            match action {
                Action::ReturnLease { lease, conn, worker_failed } => {
                    if let Some(conn) = conn {
                        conn.close();
                    }
                    returns.push((self.node_at(&lease.node_address), lease, worker_failed));
                }
                other => others.push(other),
            }
        }
        self.run(others);
        for (node, lease, worker_failed) in returns {
            if let Err(e) = give_back(node, &lease, worker_failed).await {
                tracing::debug!(
                    "lease {} not given back at shutdown (the node frees it when we exit): {e}",
                    lease.lease_id
                );
            }
        }
    }
}

/// Returns `lease` to its node.
async fn give_back(node: Result<NodeClient, RayError>, lease: &Lease, worker_failed: bool) -> Result<(), RayError> {
    let req = ReturnLeaseRequest { lease_id: lease.lease_id, worker_failed };
    node?.return_lease(req).await.map(drop).map_err(|s| from_status(&s, "the node daemon"))
}

/// A worker's reply as the scheduler needs it.
fn reply_of(reply: PushTaskReply, worker_address: String) -> Reply {
    let result = reply.result.unwrap_or_default();
    let refs_of = |infos: &[ObjectRefInfo]| -> Vec<(ObjectId, String)> {
        infos
            .iter()
            .filter_map(|c| match ObjectId::from_bytes(&c.object_id) {
                Ok(id) => Some((id, c.owner_address.clone())),
                Err(e) => {
                    // The worker is broken or not ours; the ref is dropped.
                    tracing::warn!("worker {worker_address} sent a ref this process cannot use: {e}");
                    None
                }
            })
            .collect()
    };
    Reply {
        refs: ReplyRefs { contained: refs_of(&result.contained), borrowed: refs_of(&reply.borrowed), worker_address },
        result: crate::location_to_state(result.location),
        pid: reply.worker_pid,
    }
}

/// One event per task attempt, in first-seen order, each the latest state with
/// the facts earlier states carried (resources, node, worker, times).
fn merge_events(events: Vec<TaskEvent>) -> Vec<TaskEvent> {
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
    order.into_iter().filter_map(|k| latest.remove(&k)).collect()
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
                if let Err(s) = canceller.cancel_lease(cancel).await {
                    // The node's answer to the request still comes, and a lease
                    // granted meanwhile is given back.
                    tracing::debug!("could not withdraw a lease request: {}", s.message());
                }
            }
        }
    }
    call.await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(attempt: u32, state: TaskState, pid: u32) -> TaskEvent {
        TaskEvent {
            task_id: vec![1u8; 16].into(),
            attempt,
            state: state.into(),
            worker_pid: pid,
            ..TaskEvent::default()
        }
    }

    #[test]
    fn merged_events_keep_one_row_per_attempt_with_earlier_facts() {
        let events = vec![
            event(0, TaskState::PendingArgsAvail, 0),
            event(0, TaskState::Running, 7),
            event(0, TaskState::Failed, 0),
            event(1, TaskState::Running, 9),
        ];
        let merged = merge_events(events);
        assert_eq!(merged.len(), 2);
        assert_eq!((merged[0].attempt, merged[0].state(), merged[0].worker_pid), (0, TaskState::Failed, 7));
        assert_eq!((merged[1].attempt, merged[1].state(), merged[1].worker_pid), (1, TaskState::Running, 9));
    }

    #[test]
    fn a_reply_keeps_well_formed_refs_and_drops_malformed_ones() {
        let good = ObjectId::new(TaskId([7; 16]), 1);
        let info =
            |id: &[u8], owner: &str| ObjectRefInfo { object_id: id.to_vec().into(), owner_address: owner.into() };
        let reply = PushTaskReply {
            result: Some(ReturnObject {
                contained: vec![info(&good.0, "owner-a"), info(&[1, 2, 3], "owner-b")],
                ..ReturnObject::default()
            }),
            borrowed: vec![info(&[9; 5], "owner-c"), info(&good.0, "owner-d")],
            worker_pid: 42,
            ..PushTaskReply::default()
        };
        let reply = reply_of(reply, "worker".into());
        assert_eq!(reply.refs.contained, vec![(good, "owner-a".to_string())]);
        assert_eq!(reply.refs.borrowed, vec![(good, "owner-d".to_string())]);
        assert_eq!((reply.pid, reply.refs.worker_address.as_str()), (42, "worker"));
        assert!(matches!(reply.result, State::Failed(RayError::Internal(_))), "no location is an error");
    }
}
