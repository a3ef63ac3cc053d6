//! The owner's scheduling decisions, without I/O.
//!
//! A process that submits a task owns it until it finishes: it waits for the
//! task's ref arguments, leases a worker for it from a node, pushes it there,
//! retries it when the worker dies, and settles its result. Actor calls take the
//! same road, except that the worker is the actor's and the calls of one caller
//! must arrive in the order they were made, across restarts too.
//!
//! [`Scheduler`] holds all of that state and makes every decision, under one lock
//! and without awaiting, as `ray_node::pool::Pool` does for a node. Its methods
//! take events (submitted, arguments resolved, lease granted, reply, worker died,
//! cancel, actor located) and return [`Action`]s, which the driver in
//! [`crate::owner`] carries out over gRPC and the direct socket. The state machine
//! is generic over `C`, the caller's connection to a worker, which it stores and
//! hands back but never uses; the tests drive it with plain numbers.
//!
//! It also records Ray's task events (one final state per attempt: a retried
//! attempt ends FAILED before the next one starts), and keeps the lineage of
//! finished tasks whose result may have to be rebuilt.

use crate::refs::{State, Value};
use bytes::Bytes;
use ray_abi::{ActorId, ArgSubmission, FunctionDescriptor, ObjectId, RayError, TaskId};
use ray_proto::{
    ActorTaskSpec, LeaseStrategy, PlacementGroupRef, TaskEvent, TaskSpec, TaskState, format_resources, lease_strategy,
    resources_from_map,
};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

/// Upper bound on leases one owner holds per scheduling key.
pub(crate) const MAX_LEASES_PER_KEY: usize = 64;
/// Lease requests one owner keeps waiting per scheduling key, as Ray's
/// `max_pending_lease_requests_per_scheduling_category`: a node grants a few at
/// a time, and each one withdrawn or granted after its tasks ran elsewhere costs
/// two calls.
pub(crate) const MAX_PENDING_LEASE_REQUESTS: usize = 10;
/// Calls one caller keeps in flight to one actor; more wait in the queue. This is
/// backpressure, like Ray's `max_pending_calls`.
pub(crate) const MAX_ACTOR_CALLS_IN_FLIGHT: usize = 256;
/// Ray's default for `max_retries`.
pub(crate) const DEFAULT_MAX_RETRIES: u32 = 3;

/// Tasks that need the same resources share leases: Ray's scheduling class.
pub(crate) type SchedKey = String;
/// Resources by name.
pub(crate) type Resources = BTreeMap<String, f64>;

/// How a task's leases are chosen beyond its resources: its scheduling strategy
/// as a node reads it, and the placement group it runs in (whose resources its
/// `resources` already name).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Steering {
    pub(crate) lease: Option<LeaseStrategy>,
    pub(crate) group: Option<PlacementGroupRef>,
}

impl Steering {
    /// Tasks of one scheduling key share leases, so the strategy is part of it.
    fn key(&self, resources: &Resources) -> SchedKey {
        let resources = format_resources(resources);
        match self.lease.as_ref().and_then(|l| l.kind.as_ref()) {
            None => resources,
            Some(lease_strategy::Kind::Spread(_)) => format!("{resources} SPREAD"),
            Some(lease_strategy::Kind::NodeAffinity(a)) => {
                format!("{resources} node={}{}", ray_abi::ids::hex(&a.node_id), if a.soft { " soft" } else { "" })
            }
        }
    }
}

/// A lease's place in its key's list of leases.
pub(crate) type SlotId = u64;

/// A worker a node leased to this owner.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Lease {
    /// The node's number for the lease.
    pub(crate) lease_id: u64,
    /// The node that granted it: returns and kills go there.
    pub(crate) node_address: String,
    /// That node's id.
    pub(crate) node_id: Bytes,
    /// The worker's CoreWorker service.
    pub(crate) worker_address: String,
    /// Where the worker's executor takes tasks itself, if it does.
    pub(crate) direct_address: String,
    /// The worker's process id.
    pub(crate) pid: u32,
}

/// A task as the API submits it.
pub(crate) struct NewTask {
    pub(crate) id: TaskId,
    pub(crate) name: String,
    pub(crate) function: FunctionDescriptor,
    pub(crate) args: Vec<ArgSubmission>,
    pub(crate) resources: Resources,
    pub(crate) steering: Steering,
    pub(crate) max_retries: u32,
    pub(crate) retry_exceptions: bool,
    /// The actor, for a method call.
    pub(crate) actor: Option<ActorId>,
}

impl NewTask {
    /// The object the task returns.
    pub(crate) fn return_id(&self) -> ObjectId {
        ObjectId::new(self.id, 1)
    }

    /// The objects the task keeps alive until it finishes: its ref arguments and
    /// the refs nested in its value arguments.
    pub(crate) fn dependencies(&self) -> Vec<ObjectId> {
        let mut deps = Vec::new();
        for a in &self.args {
            match a {
                ArgSubmission::Ref(r) => deps.push(*r),
                ArgSubmission::Value { contained, .. } => deps.extend(contained.iter().copied()),
            }
        }
        deps
    }
}

/// What building a task's spec needs, once its arguments exist.
pub(crate) struct Resolving {
    pub(crate) args: Vec<ArgSubmission>,
    pub(crate) name: String,
    pub(crate) function: FunctionDescriptor,
    pub(crate) attempt: u32,
    pub(crate) group: Option<PlacementGroupRef>,
}

/// Where an attempt of a task is.
#[derive(Debug, Clone, PartialEq)]
enum Phase {
    /// Waiting for its ref arguments to exist (Ray's PENDING_ARGS_AVAIL).
    WaitingForArgs,
    /// Its spec is built; it waits for a lease or its turn at the actor (Ray's
    /// PENDING_NODE_ASSIGNMENT).
    Queued,
    /// Pushed to a worker: a leased one (with its slot) or the actor's.
    Running { slot: Option<SlotId>, pid: u32 },
    /// Its actor call failed and cannot be resent; the driver is finding out why.
    Failing,
}

/// A task this process submitted and has not seen finish (or, in the lineage,
/// one that finished and may have to run again).
struct Task {
    id: TaskId,
    name: String,
    function: FunctionDescriptor,
    args: Vec<ArgSubmission>,
    resources: Resources,
    steering: Steering,
    key: SchedKey,
    max_retries: u32,
    retry_exceptions: bool,
    attempt: u32,
    return_id: ObjectId,
    deps: Vec<ObjectId>,
    spec: Option<TaskSpec>,
    phase: Phase,
    actor: Option<ActorId>,
}

impl Task {
    /// Ends this attempt as failed with `error` and queues the next one: the
    /// spec is kept, with its attempt number raised.
    fn retry(&mut self, events: &mut Events, error: &RayError, pid: u32) {
        events.failure(self, error, pid);
        self.attempt += 1;
        self.phase = Phase::Queued;
        if let Some(spec) = self.spec.as_mut() {
            spec.attempt = self.attempt;
        }
    }

    fn top_level_args(&self) -> Vec<ObjectId> {
        let mut ids: Vec<ObjectId> = self
            .args
            .iter()
            .filter_map(|a| match a {
                ArgSubmission::Ref(r) => Some(*r),
                ArgSubmission::Value { .. } => None,
            })
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }
}

/// A leased worker serving one scheduling key.
struct Slot<C> {
    id: SlotId,
    lease: Lease,
    conn: C,
    busy: Option<TaskId>,
    idle_since: Instant,
}

/// The tasks of one scheduling key and the leases serving them.
struct KeyQueue<C> {
    resources: Resources,
    strategy: Option<LeaseStrategy>,
    /// Tasks whose spec is built, in the order they became ready.
    ready: VecDeque<TaskId>,
    slots: Vec<Slot<C>>,
    /// Lease requests waiting at a node.
    requests: HashSet<u64>,
    /// Leases granted and being connected to.
    connecting: usize,
}

impl<C> KeyQueue<C> {
    /// Whether its tasks are SPREAD: one task per lease, each placed anew.
    fn spreads(&self) -> bool {
        matches!(self.strategy.as_ref().and_then(|s| s.kind.as_ref()), Some(lease_strategy::Kind::Spread(_)))
    }
}

impl<C> Default for KeyQueue<C> {
    fn default() -> Self {
        KeyQueue {
            resources: Resources::new(),
            strategy: None,
            ready: VecDeque::new(),
            slots: Vec::new(),
            requests: HashSet::new(),
            connecting: 0,
        }
    }
}

/// How this caller reaches an actor.
enum ActorLink<C> {
    /// Not located, or its worker died: the next call asks the head where it is,
    /// at `min_incarnation` or later.
    Unknown { min_incarnation: u32 },
    /// The head is being asked.
    Locating,
    /// Connected to its current incarnation.
    Connected { conn: C, pid: u32, node_id: Bytes, address: String },
    /// Dead for good; every call fails with this.
    Dead(RayError),
}

/// What a caller knows about one actor.
struct ActorQueue<C> {
    link: ActorLink<C>,
    /// The incarnation calls are numbered for, and the next number.
    incarnation: u32,
    next_seq: u64,
    /// Counts connections to the actor; calls are counted by the one they went on.
    epoch: u64,
    /// Calls not yet sent, in submission order.
    queue: VecDeque<TaskId>,
    /// Calls sent and not answered, by connection.
    in_flight: BTreeMap<u64, usize>,
    /// From the actor's record: how often a call may be resent after a restart.
    max_task_retries: i32,
}

impl<C> Default for ActorQueue<C> {
    fn default() -> Self {
        ActorQueue {
            link: ActorLink::Unknown { min_incarnation: 0 },
            incarnation: 0,
            next_seq: 0,
            epoch: 0,
            queue: VecDeque::new(),
            in_flight: BTreeMap::new(),
            max_task_retries: 0,
        }
    }
}

impl<C> ActorQueue<C> {
    fn in_flight(&self) -> usize {
        self.in_flight.values().sum()
    }

    fn land(&mut self, epoch: u64) {
        if let Some(n) = self.in_flight.get_mut(&epoch) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.in_flight.remove(&epoch);
            }
        }
    }
}

/// An actor call on its way: the driver hands it back with the reply.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct SentCall {
    pub(crate) actor: ActorId,
    /// Which connection to the actor it went on.
    pub(crate) epoch: u64,
    /// The incarnation it was numbered for.
    pub(crate) incarnation: u32,
    pub(crate) task: TaskId,
}

/// Where the head says an actor is.
pub(crate) enum ActorLocation<C> {
    /// Alive, and connected to.
    Alive { incarnation: u32, pid: u32, node_id: Bytes, address: String, max_task_retries: i32, conn: C },
    /// Dead, or unreachable: calls fail with this.
    Gone(RayError),
}

/// A task's end: settle its return object and release what it kept alive.
#[derive(Debug)]
pub(crate) struct Finish {
    pub(crate) task: TaskId,
    pub(crate) return_id: ObjectId,
    pub(crate) result: State,
    /// Objects it kept alive to release (none when it is kept as lineage).
    pub(crate) release: Vec<ObjectId>,
    /// What the worker handed back besides the value.
    pub(crate) reply: Option<ReplyRefs>,
}

/// Refs in a task's reply.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ReplyRefs {
    /// The worker's address: it borrows what it kept.
    pub(crate) worker_address: String,
    /// Refs nested in the result, with their owners.
    pub(crate) contained: Vec<(ObjectId, String)>,
    /// Objects the worker kept, with their owners.
    pub(crate) borrowed: Vec<(ObjectId, String)>,
}

/// What the driver must do after a decision.
#[derive(Debug)]
pub(crate) enum Action<C> {
    /// Call back once these objects have settled ([`Scheduler::args_resolved`]).
    WatchArgs { task: TaskId, args: Vec<ObjectId> },
    /// Ask a node for a worker for `key`'s tasks.
    RequestLease { key: SchedKey, request: u64, resources: Resources, strategy: Option<LeaseStrategy>, name: String },
    /// Nothing waits for this request any more: ask the node to cancel it.
    WithdrawLease { request: u64 },
    /// Open a connection to a granted worker ([`Scheduler::lease_connected`]).
    Connect { key: SchedKey, lease: Lease },
    /// Give a lease back to its node (closing the connection, if any).
    ReturnLease { lease: Lease, conn: Option<C>, worker_failed: bool },
    /// Send a task to its leased worker.
    Push { key: SchedKey, slot: SlotId, conn: C, task: TaskId, spec: TaskSpec, worker_address: String },
    /// Kill the worker of a force-cancelled task.
    KillWorker { node_address: String, pid: u32 },
    /// Ask the head where an actor is, at `min_incarnation` or later.
    LocateActor { actor: ActorId, min_incarnation: u32 },
    /// Send a call to an actor's current incarnation.
    CallActor { call: SentCall, conn: C, spec: TaskSpec, address: String },
    /// An actor call was lost with its connection and may not be resent: find
    /// out from the head what happened, then [`Scheduler::fail`] it.
    ExplainLostCall { call: SentCall, detail: String, max_task_retries: i32 },
    /// A task ended.
    Finish(Finish),
}

/// A task's reply, as the scheduler needs it.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) result: State,
    pub(crate) pid: u32,
    pub(crate) refs: ReplyRefs,
}

/// A bounded memory of finished tasks' names. Only interactive drivers, which
/// report progress, keep one: the task-finish path stays free of it elsewhere.
#[derive(Default)]
struct FinishedNames {
    enabled: bool,
    names: HashMap<TaskId, String>,
    order: VecDeque<TaskId>,
}

impl FinishedNames {
    const KEEP: usize = 16_384;

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
}

/// Ray's `error_type` for a failed task.
fn error_type(e: &RayError) -> &'static str {
    match e {
        RayError::Task(_) => "TASK_EXECUTION_EXCEPTION",
        RayError::WorkerCrashed { .. } => "WORKER_DIED",
        RayError::Cancelled { .. } => "TASK_CANCELLED",
        RayError::Infeasible { .. } => "TASK_UNSCHEDULABLE_ERROR",
        RayError::ObjectLost { .. } | RayError::OwnerDied { .. } => "OBJECT_LOST",
        RayError::ActorDied { .. } => "ACTOR_DIED",
        _ => "RUNTIME_ERROR",
    }
}

/// Task events not yet sent to the head.
struct Events {
    job: u32,
    buffer: Vec<TaskEvent>,
}

impl Events {
    fn record(&mut self, task: &Task, status: TaskState) -> &mut TaskEvent {
        let time_ms = now_ms();
        let at = |when: TaskState| if status == when { time_ms } else { 0 };
        self.buffer.push(TaskEvent {
            task_id: task.id.0.to_vec().into(),
            job_id: self.job,
            name: task.name.clone(),
            func_name: task.function.name.clone(),
            state: status.into(),
            time_ms,
            attempt: task.attempt,
            actor_id: task.actor.map(|a| a.0.to_vec().into()).unwrap_or_default(),
            creation_time_ms: at(TaskState::PendingArgsAvail),
            start_time_ms: at(TaskState::Running),
            end_time_ms: if matches!(status, TaskState::Finished | TaskState::Failed) { time_ms } else { 0 },
            ..TaskEvent::default()
        });
        self.buffer.last_mut().expect("just pushed")
    }

    fn failure(&mut self, task: &Task, error: &RayError, pid: u32) {
        let ev = self.record(task, TaskState::Failed);
        ev.error_type = error_type(error).to_string();
        ev.error_message = error.to_string();
        ev.worker_pid = pid;
    }

    fn running(&mut self, task: &Task, pid: u32, node_id: Bytes) {
        let ev = self.record(task, TaskState::Running);
        ev.worker_pid = pid;
        ev.node_id = node_id;
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// All tasks in flight from this process, the leases serving them, and the
/// actors it calls.
pub(crate) struct Scheduler<C> {
    tasks: HashMap<TaskId, Task>,
    keys: HashMap<SchedKey, KeyQueue<C>>,
    actors: HashMap<ActorId, ActorQueue<C>>,
    /// Finished tasks that can rebuild their result if it is lost, by result.
    lineage: HashMap<ObjectId, Task>,
    finished_names: FinishedNames,
    next_slot: SlotId,
    next_lease_request: u64,
    events: Events,
    /// Leases are being given back: nothing more starts.
    shutting_down: bool,
    /// How long a used lease is kept for the next task of its key.
    lease_idle: Duration,
}

impl<C: Clone> Scheduler<C> {
    /// A scheduler for a process of `job` that keeps idle leases for `lease_idle`.
    pub(crate) fn new(job: u32, lease_idle: Duration) -> Self {
        Scheduler {
            tasks: HashMap::new(),
            keys: HashMap::new(),
            actors: HashMap::new(),
            lineage: HashMap::new(),
            finished_names: FinishedNames::default(),
            next_slot: 0,
            next_lease_request: 0,
            events: Events { job, buffer: Vec::new() },
            shutting_down: false,
            lease_idle,
        }
    }

    /// The task events recorded since the last call.
    pub(crate) fn take_events(&mut self) -> Vec<TaskEvent> {
        std::mem::take(&mut self.events.buffer)
    }

    // ------------------------------------------------------------ queries

    /// The return objects of every task in flight.
    pub(crate) fn outstanding(&self) -> Vec<ObjectId> {
        self.tasks.values().map(|t| t.return_id).collect()
    }

    /// A task's name and whether it is running, for progress reports; a task
    /// that finished lately is remembered by name once names are kept.
    pub(crate) fn progress_of(&self, id: &TaskId) -> Option<(&str, bool)> {
        match self.tasks.get(id) {
            Some(t) => Some((&t.name, matches!(t.phase, Phase::Running { .. }))),
            None => self.finished_names.names.get(id).map(|n| (n.as_str(), false)),
        }
    }

    /// Keeps finished tasks' names for progress reports.
    pub(crate) fn remember_finished_names(&mut self) {
        self.finished_names.enabled = true;
    }

    /// What the driver needs to build a task's spec: its arguments, name,
    /// function and attempt. `None` if it has finished or was cancelled.
    pub(crate) fn to_resolve(&self, id: &TaskId) -> Option<Resolving> {
        let t = self.tasks.get(id).filter(|t| t.phase == Phase::WaitingForArgs)?;
        Some(Resolving {
            args: t.args.clone(),
            name: t.name.clone(),
            function: t.function.clone(),
            attempt: t.attempt,
            group: t.steering.group.clone(),
        })
    }

    /// The ref argument of a task that has this id's text, for recovery.
    pub(crate) fn ref_argument(&self, task: &TaskId, object: &str) -> Option<ObjectId> {
        let t = self.tasks.get(task).filter(|t| t.actor.is_none())?;
        t.args.iter().find_map(|a| match a {
            ArgSubmission::Ref(r) if r.to_string() == object => Some(*r),
            _ => None,
        })
    }

    // ------------------------------------------------------------ submission

    /// A new task: it waits for its ref arguments.
    pub(crate) fn submit(&mut self, new: NewTask) -> Vec<Action<C>> {
        let task = Task {
            id: new.id,
            return_id: new.return_id(),
            deps: new.dependencies(),
            key: new.steering.key(&new.resources),
            name: new.name,
            function: new.function,
            args: new.args,
            resources: new.resources,
            steering: new.steering,
            max_retries: new.max_retries,
            retry_exceptions: new.retry_exceptions,
            attempt: 0,
            spec: None,
            phase: Phase::WaitingForArgs,
            actor: new.actor,
        };
        let required = resources_from_map(&task.resources);
        self.events.record(&task, TaskState::PendingArgsAvail).required = required;
        if let Some(actor) = task.actor {
            // Calls leave in submission order, whenever their arguments resolve.
            self.actors.entry(actor).or_default().queue.push_back(task.id);
        }
        let watch = Action::WatchArgs { task: task.id, args: task.top_level_args() };
        self.tasks.insert(task.id, task);
        vec![watch]
    }

    /// A task's arguments have resolved into its spec, or one of them failed.
    pub(crate) fn args_resolved(&mut self, id: TaskId, spec: Result<TaskSpec, RayError>) -> Vec<Action<C>> {
        let Some(task) = self.tasks.get_mut(&id).filter(|t| t.phase == Phase::WaitingForArgs) else {
            return Vec::new();
        };
        let spec = match spec {
            Ok(spec) => spec,
            Err(e) => return self.finish(id, State::Failed(e), None),
        };
        task.spec = Some(spec);
        task.phase = Phase::Queued;
        match task.actor {
            Some(actor) => self.pump_actor(actor),
            None => {
                self.events.record(task, TaskState::PendingNodeAssignment);
                let (key, resources) = (task.key.clone(), task.resources.clone());
                let strategy = task.steering.lease.clone();
                let queue = self.keys.entry(key.clone()).or_default();
                queue.resources = resources;
                queue.strategy = strategy;
                queue.ready.push_back(id);
                self.pump(&key)
            }
        }
    }

    // ------------------------------------------------------------ leases

    /// Pushes queued tasks to idle leases, asks for more leases while tasks wait,
    /// and withdraws requests once every queued task has a worker.
    fn pump(&mut self, key: &str) -> Vec<Action<C>> {
        let mut actions = Vec::new();
        if self.shutting_down {
            return actions;
        }
        let Some(queue) = self.keys.get_mut(key) else { return actions };
        while let Some(slot) = queue.slots.iter_mut().find(|s| s.busy.is_none()) {
            let Some(tid) = queue.ready.pop_front() else { break };
            let Some(task) = self.tasks.get_mut(&tid) else { continue };
            let Some(spec) = task.spec.clone().filter(|_| task.phase == Phase::Queued) else { continue };
            slot.busy = Some(tid);
            task.phase = Phase::Running { slot: Some(slot.id), pid: slot.lease.pid };
            self.events.running(task, slot.lease.pid, slot.lease.node_id.clone());
            actions.push(Action::Push {
                key: key.to_string(),
                slot: slot.id,
                conn: slot.conn.clone(),
                task: tid,
                spec,
                worker_address: slot.lease.worker_address.clone(),
            });
        }
        let waiting = queue.ready.len();
        let asked = queue.requests.len() + queue.connecting;
        let wanted = waiting.min(MAX_PENDING_LEASE_REQUESTS).saturating_sub(asked);
        let room = MAX_LEASES_PER_KEY.saturating_sub(queue.slots.len() + asked);
        let name = queue.ready.front().and_then(|t| self.tasks.get(t)).map(|t| t.name.clone()).unwrap_or_default();
        for _ in 0..wanted.min(room) {
            self.next_lease_request += 1;
            queue.requests.insert(self.next_lease_request);
            actions.push(Action::RequestLease {
                key: key.to_string(),
                request: self.next_lease_request,
                resources: queue.resources.clone(),
                strategy: queue.strategy.clone(),
                name: name.clone(),
            });
        }
        // Every queued task has a worker: withdraw the requests still waiting at
        // a node, or it would grant them to us while other owners wait.
        if queue.ready.is_empty() {
            actions.extend(queue.requests.drain().map(|request| Action::WithdrawLease { request }));
        }
        actions
    }

    /// A node granted lease `request`: connect to the worker, or give it back if
    /// nothing waits for it any more.
    pub(crate) fn lease_granted(&mut self, key: &str, request: u64, lease: Lease) -> Vec<Action<C>> {
        let queue = self.keys.get_mut(key);
        let wanted = queue.is_some_and(|q| q.requests.remove(&request) && !q.ready.is_empty());
        if !wanted || self.shutting_down {
            // The tasks it was asked for ran on other leases meanwhile: give it
            // back now, so an owner waiting on that node can have it.
            return vec![Action::ReturnLease { lease, conn: None, worker_failed: false }];
        }
        self.keys.get_mut(key).expect("wanted").connecting += 1;
        vec![Action::Connect { key: key.to_string(), lease }]
    }

    /// The connection to a granted worker is open: push to it.
    pub(crate) fn lease_connected(&mut self, key: &str, lease: Lease, conn: C, now: Instant) -> Vec<Action<C>> {
        let queue = self.keys.entry(key.to_string()).or_default();
        queue.connecting = queue.connecting.saturating_sub(1);
        if self.shutting_down {
            return vec![Action::ReturnLease { lease, conn: Some(conn), worker_failed: false }];
        }
        let id = self.next_slot;
        self.next_slot += 1;
        queue.slots.push(Slot { id, lease, conn, busy: None, idle_since: now });
        self.pump(key)
    }

    /// The granted worker could not be reached.
    pub(crate) fn lease_unreachable(&mut self, key: &str, lease: Lease, error: RayError) -> Vec<Action<C>> {
        let queue = self.keys.entry(key.to_string()).or_default();
        queue.connecting = queue.connecting.saturating_sub(1);
        let mut actions = vec![Action::ReturnLease { lease, conn: None, worker_failed: false }];
        actions.extend(self.fail_unservable(key, error));
        actions
    }

    /// The node cancelled lease `request`, as this owner asked.
    pub(crate) fn lease_cancelled(&mut self, key: &str, request: u64) -> Vec<Action<C>> {
        if let Some(queue) = self.keys.get_mut(key) {
            queue.requests.remove(&request);
        }
        self.pump(key)
    }

    /// Lease `request` cannot be had (infeasible, no worker could start, the node
    /// is unreachable): if nothing else can serve the key's tasks, they fail.
    pub(crate) fn lease_failed(&mut self, key: &str, request: u64, error: RayError) -> Vec<Action<C>> {
        let still_wanted = self.keys.get_mut(key).is_some_and(|q| q.requests.remove(&request));
        if !still_wanted {
            return Vec::new();
        }
        self.fail_unservable(key, error)
    }

    fn fail_unservable(&mut self, key: &str, error: RayError) -> Vec<Action<C>> {
        let Some(queue) = self.keys.get_mut(key) else { return Vec::new() };
        if !queue.requests.is_empty() || !queue.slots.is_empty() || queue.connecting > 0 {
            return Vec::new();
        }
        let failed: Vec<TaskId> = queue.ready.drain(..).collect();
        failed.into_iter().flat_map(|t| self.finish(t, State::Failed(error.clone()), None)).collect()
    }

    /// Returns leases that stayed idle for the lease idle time while nothing of
    /// their key was queued.
    pub(crate) fn return_idle_leases(&mut self, now: Instant) -> Vec<Action<C>> {
        let mut actions = Vec::new();
        for queue in self.keys.values_mut().filter(|q| q.ready.is_empty()) {
            let (expired, kept) = std::mem::take(&mut queue.slots).into_iter().partition(|s: &Slot<C>| {
                s.busy.is_none() && now.saturating_duration_since(s.idle_since) >= self.lease_idle
            });
            queue.slots = kept;
            actions.extend(expired.into_iter().map(|s: Slot<C>| Action::ReturnLease {
                lease: s.lease,
                conn: Some(s.conn),
                worker_failed: false,
            }));
        }
        self.keys
            .retain(|_, q| !(q.ready.is_empty() && q.slots.is_empty() && q.requests.is_empty() && q.connecting == 0));
        actions
    }

    /// The process is shutting down: every lease goes back, every waiting
    /// request is withdrawn, and nothing more starts.
    pub(crate) fn shut_down(&mut self) -> Vec<Action<C>> {
        self.shutting_down = true;
        let mut actions = Vec::new();
        for queue in self.keys.values_mut() {
            actions.extend(queue.requests.drain().map(|request| Action::WithdrawLease { request }));
            actions.extend(queue.slots.drain(..).map(|s| Action::ReturnLease {
                lease: s.lease,
                conn: Some(s.conn),
                worker_failed: false,
            }));
        }
        actions
    }

    // ------------------------------------------------------------ replies

    /// Frees the slot that ran a task.
    fn free_slot(&mut self, key: &str, slot: SlotId, now: Instant) {
        if let Some(s) = self.keys.get_mut(key).and_then(|q| q.slots.iter_mut().find(|s| s.id == slot)) {
            s.busy = None;
            s.idle_since = now;
        }
    }

    /// A leased worker answered a task. A SPREAD task's lease goes back at once:
    /// reused, it would keep every later task of the key on its node.
    pub(crate) fn task_replied(
        &mut self,
        key: &str,
        slot: SlotId,
        id: TaskId,
        reply: Reply,
        now: Instant,
    ) -> Vec<Action<C>> {
        let mut actions = Vec::new();
        match self.keys.get_mut(key) {
            Some(queue) if queue.spreads() => {
                if let Some(pos) = queue.slots.iter().position(|s| s.id == slot) {
                    let s = queue.slots.remove(pos);
                    actions.push(Action::ReturnLease { lease: s.lease, conn: Some(s.conn), worker_failed: false });
                }
            }
            _ => self.free_slot(key, slot, now),
        }
        actions.extend(self.replied(id, reply));
        actions.extend(self.pump(key));
        actions
    }

    /// A task's worker could not read an argument whose node is gone, and the
    /// argument is being recovered: the task runs again once it has settled.
    pub(crate) fn rerun_after_argument(
        &mut self,
        key: &str,
        slot: SlotId,
        id: TaskId,
        argument: ObjectId,
        now: Instant,
    ) -> Vec<Action<C>> {
        self.free_slot(key, slot, now);
        let mut actions = Vec::new();
        if let Some(task) = self.tasks.get_mut(&id) {
            task.spec = None;
            task.phase = Phase::WaitingForArgs;
            actions.push(Action::WatchArgs { task: id, args: vec![argument] });
        }
        actions.extend(self.pump(key));
        actions
    }

    /// The connection to a leased worker broke while it ran a task: the worker
    /// is gone. Its lease goes back, and the task is retried while it may be.
    pub(crate) fn worker_died(&mut self, key: &str, slot: SlotId, id: TaskId, detail: &str) -> Vec<Action<C>> {
        let mut actions = Vec::new();
        if let Some(queue) = self.keys.get_mut(key)
            && let Some(pos) = queue.slots.iter().position(|s| s.id == slot)
        {
            let s = queue.slots.remove(pos);
            actions.push(Action::ReturnLease { lease: s.lease, conn: Some(s.conn), worker_failed: true });
        }
        if let Some(task) = self.tasks.get_mut(&id) {
            let pid = match task.phase {
                Phase::Running { pid, .. } => pid,
                _ => 0,
            };
            let crashed = RayError::WorkerCrashed {
                function: task.name.clone(),
                attempts: task.attempt + 1,
                detail: format!("worker pid {pid} exited or was killed: {detail}"),
            };
            if task.attempt < task.max_retries {
                task.retry(&mut self.events, &crashed, pid);
                self.events.record(task, TaskState::PendingNodeAssignment);
                self.keys.entry(key.to_string()).or_default().ready.push_front(id);
            } else {
                actions.extend(self.finish(id, State::Failed(crashed), None));
            }
        }
        actions.extend(self.pump(key));
        actions
    }

    /// A reply to a task or call: retry a failed task that asked for it, else
    /// finish it.
    fn replied(&mut self, id: TaskId, reply: Reply) -> Vec<Action<C>> {
        let Some(task) = self.tasks.get_mut(&id) else { return Vec::new() };
        if let State::Failed(error @ RayError::Task(_)) = &reply.result
            && task.actor.is_none()
            && task.retry_exceptions
            && task.attempt < task.max_retries
        {
            task.retry(&mut self.events, error, reply.pid);
            self.events.record(task, TaskState::PendingNodeAssignment);
            self.keys.entry(task.key.clone()).or_default().ready.push_back(id);
            return Vec::new();
        }
        let pid = reply.pid;
        self.finish(id, reply.result, Some((pid, reply.refs)))
    }

    /// Fails a task with `error` (a lost actor call, once the driver knows why).
    pub(crate) fn fail(&mut self, id: TaskId, error: RayError) -> Vec<Action<C>> {
        self.finish(id, State::Failed(error), None)
    }

    /// Ends a task: records its final state, keeps it as lineage if its result
    /// can be rebuilt, and tells the driver to settle the result.
    fn finish(&mut self, id: TaskId, result: State, reply: Option<(u32, ReplyRefs)>) -> Vec<Action<C>> {
        let Some(mut task) = self.tasks.remove(&id) else { return Vec::new() };
        self.finished_names.remember(id, &task.name);
        let pid = reply.as_ref().map_or(0, |(pid, _)| *pid);
        match &result {
            State::Failed(e) => self.events.failure(&task, e, pid),
            State::Ready(_) | State::Pending => self.events.record(&task, TaskState::Finished).worker_pid = pid,
        }
        // A result in shared memory can be lost with its node; while retries are
        // left, the task is kept to run again (its inputs stay pinned with it).
        let keep_lineage = task.actor.is_none()
            && task.attempt < task.max_retries
            && matches!(result, State::Ready(Value::Shm { .. }));
        let finish = Finish {
            task: id,
            return_id: task.return_id,
            result,
            release: if keep_lineage { Vec::new() } else { std::mem::take(&mut task.deps) },
            reply: reply.map(|(_, refs)| refs),
        };
        if keep_lineage {
            self.lineage.insert(task.return_id, task);
        }
        vec![Action::Finish(finish)]
    }

    // ------------------------------------------------------------ cancel

    /// Ray's `cancel`: a queued task never runs; a running one is abandoned (its
    /// reply, if any, is dropped) and with `force` its worker is killed.
    pub(crate) fn cancel(&mut self, id: TaskId, force: bool) -> Vec<Action<C>> {
        let Some(task) = self.tasks.get(&id) else { return Vec::new() };
        let mut actions = Vec::new();
        if let Some(queue) = self.keys.get_mut(&task.key) {
            queue.ready.retain(|t| *t != id);
        }
        if let Some(actor) = task.actor.and_then(|a| self.actors.get_mut(&a)) {
            actor.queue.retain(|t| *t != id);
        }
        if force
            && let Phase::Running { slot: Some(slot), pid } = task.phase
            && let Some(s) = self.keys.get(&task.key).and_then(|q| q.slots.iter().find(|s| s.id == slot))
        {
            actions.push(Action::KillWorker { node_address: s.lease.node_address.clone(), pid });
        }
        let error = RayError::Cancelled { function: task.name.clone() };
        let (key, actor) = (task.key.clone(), task.actor);
        actions.extend(self.finish(id, State::Failed(error), None));
        // Later calls may have waited behind this one; requests for it may be
        // withdrawn.
        actions.extend(match actor {
            Some(actor) => self.pump_actor(actor),
            None => self.pump(&key),
        });
        actions
    }

    // ------------------------------------------------------------ lineage

    /// Runs the task that made `object` again, if its lineage is kept. The new
    /// attempt waits for its arguments like a new task.
    pub(crate) fn rebuild(&mut self, object: &ObjectId) -> Option<(String, Vec<Action<C>>)> {
        let mut task = self.lineage.remove(object)?;
        task.attempt += 1;
        task.spec = None;
        task.phase = Phase::WaitingForArgs;
        self.events.record(&task, TaskState::PendingArgsAvail);
        let watch = Action::WatchArgs { task: task.id, args: task.top_level_args() };
        let name = task.name.clone();
        self.tasks.insert(task.id, task);
        Some((name, vec![watch]))
    }

    /// Drops the lineage of freed objects; returns the inputs it kept alive,
    /// which the driver releases.
    pub(crate) fn drop_lineage(&mut self, freed: &ObjectId) -> Vec<ObjectId> {
        self.lineage.remove(freed).map(|t| t.deps).unwrap_or_default()
    }

    // ------------------------------------------------------------ actors

    /// Sends queued calls whose arguments are ready, in order; locates the actor
    /// first if needed.
    fn pump_actor(&mut self, actor: ActorId) -> Vec<Action<C>> {
        let mut actions = Vec::new();
        let Some(a) = self.actors.get_mut(&actor) else { return actions };
        match &a.link {
            ActorLink::Dead(error) => {
                let error = error.clone();
                let failed: Vec<TaskId> = a.queue.drain(..).collect();
                for t in failed {
                    actions.extend(self.finish(t, State::Failed(error.clone()), None));
                }
            }
            ActorLink::Unknown { min_incarnation } => {
                if !a.queue.is_empty() {
                    actions.push(Action::LocateActor { actor, min_incarnation: *min_incarnation });
                    a.link = ActorLink::Locating;
                }
            }
            ActorLink::Locating => {}
            ActorLink::Connected { conn, pid, node_id, address } => {
                // Calls sent on an earlier connection have not all failed yet:
                // they go again first, in order.
                if a.in_flight.keys().any(|epoch| *epoch != a.epoch) {
                    return actions;
                }
                while a.in_flight() < MAX_ACTOR_CALLS_IN_FLIGHT
                    && let Some(tid) = a.queue.front().copied()
                {
                    let Some(task) = self.tasks.get_mut(&tid) else {
                        a.queue.pop_front();
                        continue;
                    };
                    // Later calls wait for this one's arguments: order is kept.
                    if task.phase != Phase::Queued {
                        break;
                    }
                    let Some(spec) = task.spec.as_mut() else { break };
                    a.queue.pop_front();
                    spec.actor_task = Some(ActorTaskSpec {
                        actor_id: actor.0.to_vec().into(),
                        seq: a.next_seq,
                        incarnation: a.incarnation,
                    });
                    let spec = spec.clone();
                    a.next_seq += 1;
                    *a.in_flight.entry(a.epoch).or_default() += 1;
                    task.phase = Phase::Running { slot: None, pid: *pid };
                    self.events.running(task, *pid, node_id.clone());
                    actions.push(Action::CallActor {
                        call: SentCall { actor, epoch: a.epoch, incarnation: a.incarnation, task: tid },
                        conn: conn.clone(),
                        spec,
                        address: address.clone(),
                    });
                }
            }
        }
        actions
    }

    /// The head answered where an actor is.
    pub(crate) fn actor_located(&mut self, actor: ActorId, location: ActorLocation<C>) -> Vec<Action<C>> {
        let a = self.actors.entry(actor).or_default();
        a.link = match location {
            ActorLocation::Gone(error) => ActorLink::Dead(error),
            ActorLocation::Alive { incarnation, pid, node_id, address, max_task_retries, conn } => {
                // A new incarnation numbers its calls afresh; the same one (the
                // connection broke, the actor did not) goes on counting.
                if incarnation != a.incarnation {
                    a.incarnation = incarnation;
                    a.next_seq = 0;
                }
                a.epoch += 1;
                a.max_task_retries = max_task_retries;
                ActorLink::Connected { conn, pid, node_id, address }
            }
        };
        self.pump_actor(actor)
    }

    /// An actor answered a call.
    pub(crate) fn actor_replied(&mut self, call: SentCall, reply: Reply) -> Vec<Action<C>> {
        if let Some(a) = self.actors.get_mut(&call.actor) {
            a.land(call.epoch);
        }
        let mut actions = self.replied(call.task, reply);
        actions.extend(self.pump_actor(call.actor));
        actions
    }

    /// The connection to an actor broke under a call: its process died, or the
    /// connection did. The call is resent (to the restarted actor) while
    /// `max_task_retries` allows; otherwise the driver finds out why it was lost.
    pub(crate) fn actor_call_lost(&mut self, call: SentCall, detail: String) -> Vec<Action<C>> {
        let SentCall { actor, epoch, incarnation, task: id } = call;
        let a = self.actors.entry(actor).or_default();
        a.land(epoch);
        if a.epoch == epoch && matches!(a.link, ActorLink::Connected { .. }) {
            a.link = ActorLink::Unknown { min_incarnation: incarnation + 1 };
        }
        let max = a.max_task_retries;
        let mut actions = Vec::new();
        if let Some(task) = self.tasks.get_mut(&id)
            && matches!(task.phase, Phase::Running { .. })
        {
            if max < 0 || i64::from(task.attempt) < i64::from(max) {
                let lost = RayError::ActorDied {
                    class: task.name.clone(),
                    actor_id: actor.to_string(),
                    cause: format!("the connection to it broke while it ran this call ({detail}); resending it"),
                };
                task.retry(&mut self.events, &lost, 0);
                let queue = &mut self.actors.entry(actor).or_default().queue;
                let pos = queue.iter().position(|q| *q > id).unwrap_or(queue.len());
                queue.insert(pos, id);
            } else {
                task.phase = Phase::Failing;
                actions.push(Action::ExplainLostCall { call, detail, max_task_retries: max });
            }
        }
        actions.extend(self.pump_actor(actor));
        actions
    }
}

#[cfg(test)]
mod tests;
