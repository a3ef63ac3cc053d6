//! The core worker: the part of the runtime inside every driver and worker process.
//!
//! A Ray program's processes are peers: drivers and workers alike submit tasks, own
//! the objects those tasks return, borrow objects others own, and (workers) execute
//! tasks. This crate does all of that for one process, as Ray's `core_worker` does:
//!
//! - [`refs`]: the ownership and reference-count table;
//! - [`scheduler`]: the owner's scheduling decisions, without I/O: dependencies,
//!   leases, pushes, retries, cancellation, actor call order, lineage;
//! - [`owner`]: carrying those decisions out over gRPC and the direct socket;
//! - [`execute`]: running pushed tasks in a worker;
//! - [`service`]: the gRPC service through which peers push tasks and ask about
//!   objects this process owns.
//!
//! Its API is plain Rust over bytes; `ray-runtime` exposes it to the `ray` crate
//! through the C-ABI table.

pub mod actor;
mod artifacts;
mod blocking;
mod call_stream;
mod cell_library;
mod direct;
pub mod execute;
mod groups;
mod hosted;
mod owner;
pub mod refs;
mod scheduler;
pub mod service;
mod wire;

use bytes::Bytes;
use ray_abi::ids::{JobId, PUT_INDEX_FLAG};
use ray_abi::{ObjectId, RayError, RuntimeContext, TaskId};
use ray_object_store::{ArenaMap, ObjectView};
use ray_proto::*;
use refs::{Effects, RefTable, State, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

pub use artifacts::ABI_KEY;
pub use blocking::{Progress, ProgressRow, ProgressSink};

/// Objects up to this size travel inline; larger ones go to shared memory.
pub const INLINE_MAX: usize = 100 * 1024;

/// How long an idle lease is kept for the next task of the same shape, so a
/// stream of synchronous calls does not pay a lease round trip each.
pub const LEASE_IDLE: Duration = Duration::from_millis(30);

/// An object's bytes, lent to a reader.
#[derive(Debug, Clone)]
pub enum ObjectData {
    /// Held in memory.
    Inline(Bytes),
    /// Mapped from the node's shared memory, without a copy.
    Mapped(Arc<ObjectView>),
}

impl ObjectData {
    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        match self {
            ObjectData::Inline(b) => b,
            ObjectData::Mapped(v) => v.bytes(),
        }
    }
}

/// Prints worker output as it arrives; the default writes Ray-style prefixed lines
/// to this process's stdout and stderr.
pub type LogSink = Box<dyn Fn(&LogLine) + Send + Sync>;

/// How a process joins the cluster.
#[derive(Debug, Clone)]
pub struct Connection {
    /// Head address.
    pub head_address: String,
    /// Local node daemon address.
    pub node_address: String,
    /// That node's id.
    pub node_id: Bytes,
    /// Cluster token.
    pub token: String,
    /// This process's IP as peers reach it.
    pub ip: String,
}

/// Drivers record the task they "are", so objects they `put` get ids too.
#[derive(Debug, Clone)]
pub(crate) struct CurrentTask {
    pub(crate) id: TaskId,
    pub(crate) name: String,
    /// The placement group it runs in (an actor's, for its method calls).
    pub(crate) placement_group: Option<ray_proto::PlacementGroupRef>,
}

/// The state of one core worker.
///
/// Lock order: `sched` and `refs` are never held together; take one, carry out
/// what it decided, then the other. `interrupts`, `withdrawals`, `current`,
/// `peers`, `nodes`, `arenas`, `removed_groups`, `log_flushes` and
/// `said_infeasible` are leaves: nothing else is locked while one is
/// held.
pub(crate) struct Inner {
    pub(crate) rt: tokio::runtime::Handle,
    pub(crate) is_worker: bool,
    pub(crate) job: JobId,
    pub(crate) salt: u32,
    pub(crate) address: String,
    pub(crate) conn: Connection,
    pub(crate) head: HeadClient,
    pub(crate) node: NodeClient,
    pub(crate) worker_id: Bytes,
    pub(crate) refs: Mutex<RefTable>,
    pub(crate) sched: Mutex<owner::Scheduler>,
    /// Lease requests waiting at a node, each with the means to withdraw it.
    pub(crate) withdrawals: Mutex<HashMap<u64, tokio::sync::oneshot::Sender<()>>>,
    pub(crate) peers: Mutex<HashMap<String, CoreWorkerClient>>,
    /// Other nodes' daemons this process leased workers from, by address.
    pub(crate) nodes: Mutex<HashMap<String, NodeClient>>,
    pub(crate) current: Mutex<CurrentTask>,
    pub(crate) put_counter: AtomicU32,
    pub(crate) log_sink: RwLock<Option<LogSink>>,
    pub(crate) shut_down: AtomicBool,
    pub(crate) log_flushes: Mutex<LogFlushes>,
    /// Scheduling keys whose tasks no node can ever run, already told to the user.
    pub(crate) said_infeasible: Mutex<std::collections::HashSet<String>>,
    pub(crate) executor: Mutex<execute::Executor>,
    pub(crate) namespace: Mutex<Option<String>>,
    pub(crate) artifacts: artifacts::ArtifactCache,
    pub(crate) interrupts: Mutex<blocking::Interrupts>,
    pub(crate) progress_sink: RwLock<Option<ProgressSink>>,
    /// The object arenas of this machine's nodes, each mapped once, by path.
    pub(crate) arenas: Mutex<HashMap<String, Arc<ArenaMap>>>,
    /// Placement groups this process removed: using one again is an error here,
    /// before any node is asked.
    pub(crate) removed_groups: Mutex<std::collections::HashSet<ray_abi::PlacementGroupId>>,
    /// Placement-group calls queued for the head.
    pub(crate) group_calls: groups::GroupCalls,
}

/// This process's core worker. Cheap to clone.
#[derive(Clone)]
pub struct CoreWorker(pub(crate) Arc<Inner>);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs a future on the runtime and waits for it from a plain thread. Works even
/// when called from inside another tokio runtime (a notebook cell's), unlike
/// `Handle::block_on`.
pub(crate) fn block_on<F>(rt: &tokio::runtime::Handle, fut: F) -> F::Output
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    rt.spawn(async move {
        // The caller waits on `rx` until this is sent.
        let _ = tx.send(fut.await);
    });
    rx.recv().expect("the runtime dropped a blocking call")
}

/// Options for starting a core worker.
pub struct StartOptions {
    /// How to reach the cluster.
    pub connection: Connection,
    /// The job; a driver passes `None` and registers a new one.
    pub job: Option<JobId>,
    /// Whether this process executes tasks.
    pub is_worker: bool,
    /// This worker's id (workers only).
    pub worker_id: Bytes,
    /// Namespace, for the job record.
    pub namespace: String,
    /// Forward worker output to this process (drivers).
    pub log_to_driver: bool,
}

impl CoreWorker {
    /// Starts the core worker: its gRPC service, and for a driver the job record and
    /// the log subscription.
    pub async fn start(opts: StartOptions) -> Result<CoreWorker, RayError> {
        let conn = opts.connection;
        let head = head_client(connect(&conn.head_address, &conn.token, "the head").await?);
        let node = node_client(connect(&conn.node_address, &conn.token, "the node daemon").await?);
        let listener = tokio::net::TcpListener::bind((conn.ip.as_str(), 0))
            .await
            .map_err(|e| RayError::Startup(format!("cannot listen on {}: {e}", conn.ip)))?;
        let address = format!("{}:{}", conn.ip, listener.local_addr().map(|a| a.port()).unwrap_or(0));
        let job = match opts.job {
            Some(j) => j,
            None => {
                let exe = std::env::current_exe()
                    .map_err(|e| RayError::Startup(format!("cannot find this program's executable: {e}")))?;
                let reply = head
                    .clone()
                    .register_job(RegisterJobRequest {
                        job: Some(JobInfo {
                            driver_address: address.clone(),
                            driver_pid: std::process::id(),
                            entrypoint: std::env::args().collect::<Vec<_>>().join(" "),
                            worker_executable: exe.display().to_string(),
                            host_id: host_id(),
                            driver_ip: conn.ip.clone(),
                            namespace: opts.namespace.clone(),
                            // Set by the head for a submitted job's entrypoint, so
                            // this driver is listed as that job's.
                            submission_id: std::env::var(SUBMISSION_ID_ENV).unwrap_or_default(),
                            // Cell libraries may link the toolchain's libstd
                            // dynamically; workers must find it where the driver does.
                            worker_env: std::env::var("LD_LIBRARY_PATH")
                                .map(|p| [("LD_LIBRARY_PATH".to_string(), p)].into())
                                .unwrap_or_default(),
                            ..JobInfo::default()
                        }),
                    })
                    .await
                    .map_err(|s| from_status(&s, "the head"))?;
                JobId(reply.into_inner().job_id)
            }
        };
        let salt: u32 = rand::random();
        let driver_task = TaskId::generate(job, salt);
        let group_calls = groups::GroupCalls::start(head.clone());
        let inner = Arc::new(Inner {
            rt: tokio::runtime::Handle::current(),
            is_worker: opts.is_worker,
            job,
            salt,
            address,
            conn,
            head,
            node,
            worker_id: opts.worker_id,
            refs: Mutex::new(RefTable::default()),
            sched: Mutex::new(owner::Scheduler::new(job.0, LEASE_IDLE)),
            withdrawals: Mutex::new(HashMap::new()),
            peers: Mutex::new(HashMap::new()),
            nodes: Mutex::new(HashMap::new()),
            current: Mutex::new(CurrentTask {
                id: driver_task,
                name: if opts.is_worker { String::new() } else { "driver".into() },
                placement_group: None,
            }),
            put_counter: AtomicU32::new(0),
            log_sink: RwLock::new(None),
            shut_down: AtomicBool::new(false),
            log_flushes: Mutex::default(),
            said_infeasible: Mutex::default(),
            executor: Mutex::new(execute::Executor::default()),
            namespace: Mutex::new((!opts.namespace.is_empty()).then(|| opts.namespace.clone())),
            artifacts: Default::default(),
            interrupts: Default::default(),
            progress_sink: RwLock::new(None),
            arenas: Mutex::new(HashMap::new()),
            removed_groups: Mutex::default(),
            group_calls,
        });
        let cw = CoreWorker(inner);
        service::serve(cw.clone(), listener);
        tokio::spawn(cw.clone().flush_events_loop());
        tokio::spawn(cw.clone().return_idle_leases_loop());
        if !opts.is_worker && opts.log_to_driver {
            tokio::spawn(subscribe_logs(cw.clone()));
        }
        Ok(cw)
    }

    /// The address of the head of the cluster this process belongs to.
    pub fn head_address(&self) -> &str {
        &self.0.conn.head_address
    }

    /// This process's CoreWorker address (the owner address of its objects).
    pub fn address(&self) -> &str {
        &self.0.address
    }

    /// The IP of this process's node; worker lines from elsewhere get `ip=`.
    pub fn node_ip(&self) -> &str {
        &self.0.conn.ip
    }

    /// The job.
    pub fn job(&self) -> JobId {
        self.0.job
    }

    /// The runtime handle this worker runs on.
    pub fn runtime(&self) -> &tokio::runtime::Handle {
        &self.0.rt
    }

    /// Replaces how worker output is shown (the REPL draws it above its viewport).
    pub fn set_log_sink(&self, sink: LogSink) {
        *self.0.log_sink.write().unwrap_or_else(|p| p.into_inner()) = Some(sink);
    }

    /// Facts for `ray::runtime_context()`.
    pub fn context(&self) -> RuntimeContext {
        let info = block_on(&self.0.rt, {
            let mut head = self.0.head.clone();
            async move { head.get_cluster_info(Empty {}).await }
        });
        let mut ctx = RuntimeContext {
            address: self.0.conn.head_address.clone(),
            job_id: self.0.job.0,
            is_worker: self.0.is_worker,
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            toolchain: ABI_KEY.to_string(),
            node_id: ray_abi::ids::hex(&self.0.conn.node_id),
            ..RuntimeContext::default()
        };
        if self.0.is_worker {
            ctx.task_name = Some(lock(&self.0.current).name.clone());
        }
        if let Ok(info) = info {
            for n in info.into_inner().nodes.iter().filter(|n| n.is_alive()) {
                ctx.nodes += 1;
                let total = resources_to_map(&n.total);
                ctx.cpus += total.get("CPU").copied().unwrap_or(0.0);
                ctx.gpus += total.get("GPU").copied().unwrap_or(0.0);
                ctx.object_store_memory += n.object_store_capacity;
            }
        }
        ctx
    }

    pub(crate) fn next_put_id(&self) -> ObjectId {
        let n = self.0.put_counter.fetch_add(1, Ordering::Relaxed) + 1;
        ObjectId::new(lock(&self.0.current).id, PUT_INDEX_FLAG | n)
    }

    /// Stores bytes as a new owned object (Ray's `put`).
    pub fn put(&self, parts: &[&[u8]], contained: Vec<ObjectId>) -> Result<ObjectId, RayError> {
        // A placement group in the value must exist before anyone can read it.
        self.flush_group_calls();
        let id = self.next_put_id();
        let value = self.store_value(id, parts, &self.0.address)?;
        lock(&self.0.refs).add_owned(id, State::Ready(value), contained);
        Ok(id)
    }

    /// Keeps small values inline and writes large ones to the node's shared memory.
    pub(crate) fn store_value(&self, id: ObjectId, parts: &[&[u8]], owner: &str) -> Result<Value, RayError> {
        let size: usize = parts.iter().map(|p| p.len()).sum();
        if size <= INLINE_MAX {
            let mut v = Vec::with_capacity(size);
            for p in parts {
                v.extend_from_slice(p);
            }
            return Ok(Value::Inline(v.into()));
        }
        let mut node = self.0.node.clone();
        let request = CreateObjectRequest {
            object_id: id.0.to_vec().into(),
            size: size as u64,
            owner_address: owner.to_string(),
        };
        let reply = block_on(&self.0.rt, async move { node.create_object(request).await })
            .map_err(|s| from_status(&s, "the node daemon"))?
            .into_inner();
        let (path, span) = (reply.path, reply.span.map(ray_object_store::Span::from));
        let arena = span.map(|_| self.arena(&path)).transpose()?;
        let location = ray_object_store::Location { path: path.clone().into(), span };
        ray_object_store::write_at(&location, arena.as_deref(), parts)?;
        let mut node = self.0.node.clone();
        let seal = SealObjectRequest { object_id: id.0.to_vec().into() };
        block_on(&self.0.rt, async move { node.seal_object(seal).await })
            .map_err(|s| from_status(&s, "the node daemon"))?;
        Ok(Value::Shm {
            path,
            span,
            size: size as u64,
            node_id: self.0.conn.node_id.clone(),
            node_address: self.0.conn.node_address.clone(),
        })
    }

    /// One more local handle to `id`.
    pub fn add_local_ref(&self, id: &ObjectId) {
        lock(&self.0.refs).add_local(id);
    }

    /// One local handle to `id` fewer; may free the object.
    pub fn remove_local_ref(&self, id: &ObjectId) {
        if self.0.shut_down.load(Ordering::Relaxed) {
            return;
        }
        let mut fx = Effects::default();
        lock(&self.0.refs).remove_local(id, &mut fx);
        self.apply(fx);
    }

    /// Holds an extra local reference on each object (see [`CoreWorker::unpin`]).
    pub fn pin(&self, ids: &[ObjectId]) {
        let mut refs = lock(&self.0.refs);
        for id in ids {
            refs.add_local(id);
        }
    }

    /// Drops the references [`CoreWorker::pin`] took.
    pub fn unpin(&self, ids: &[ObjectId]) {
        let mut fx = Effects::default();
        {
            let mut refs = lock(&self.0.refs);
            for id in ids {
                refs.remove_local(id, &mut fx);
            }
        }
        self.apply(fx);
    }

    /// The owner address of an object held here.
    pub fn owner_of(&self, id: &ObjectId) -> Result<String, RayError> {
        match lock(&self.0.refs).get(id) {
            Some(e) => Ok(e.owner.clone().unwrap_or_else(|| self.0.address.clone())),
            None => Err(RayError::ObjectLost {
                object: id.to_string(),
                detail: "this process holds no reference to it".into(),
            }),
        }
    }

    /// Registers a ref that was just deserialized here.
    pub fn adopt_ref(&self, id: ObjectId, owner: &str) {
        lock(&self.0.refs).adopt(id, owner, &self.0.address, false);
        execute::note_adopted(id);
    }

    /// Carries out table effects: frees, borrower releases, callbacks.
    pub(crate) fn apply(&self, mut fx: Effects) {
        if !fx.freed.is_empty() {
            self.release_lineage(&mut fx);
        }
        fx.run_callbacks();
        if !fx.free_shm.is_empty() {
            let mut by_node: HashMap<String, Vec<ObjectId>> = HashMap::new();
            for (id, node) in fx.free_shm {
                by_node.entry(node).or_default().push(id);
            }
            for (node_addr, ids) in by_node {
                let client = if node_addr == self.0.conn.node_address {
                    Ok(self.0.node.clone())
                } else {
                    self.remote_node(&node_addr)
                };
                match client {
                    Ok(mut client) => {
                        let req = FreeObjectsRequest { object_ids: ids.iter().map(|i| i.0.to_vec().into()).collect() };
                        self.0.rt.spawn(async move {
                            if let Err(s) = client.free_objects(req).await {
                                // A node that is gone took its objects with it; a
                                // live one keeps them until its store evicts them.
                                tracing::debug!(
                                    "node {node_addr} did not free {} object(s): {}",
                                    ids.len(),
                                    s.message()
                                );
                            }
                        });
                    }
                    Err(e) => tracing::debug!("cannot reach node {node_addr} to free {} object(s): {e}", ids.len()),
                }
            }
        }
        for (owner, id) in fx.remove_borrower {
            let me = self.0.address.clone();
            if let Some(mut client) = self.peer(&owner) {
                self.0.rt.spawn(async move {
                    let req = BorrowerRequest { object_ids: vec![id.0.to_vec().into()], borrower_address: me };
                    if let Err(s) = client.remove_borrower(req).await {
                        // The owner keeps the object until it learns we are gone.
                        tracing::warn!("could not tell {owner} this process let go of {id}: {}", s.message());
                    }
                });
            }
        }
    }

    /// A client for a peer's CoreWorker service, cached by address.
    pub(crate) fn peer(&self, address: &str) -> Option<CoreWorkerClient> {
        let mut peers = lock(&self.0.peers);
        if let Some(c) = peers.get(address) {
            return Some(c.clone());
        }
        // A lazy channel needs the runtime's reactor; callers may be user threads.
        let _runtime = self.0.rt.enter();
        let c = core_worker_client(lazy_channel(address, &self.0.conn.token).ok()?);
        peers.insert(address.to_string(), c.clone());
        Some(c)
    }

    /// A client for another node's daemon, cached by address.
    pub(crate) fn remote_node(&self, address: &str) -> Result<NodeClient, RayError> {
        let mut nodes = lock(&self.0.nodes);
        if let Some(c) = nodes.get(address) {
            return Ok(c.clone());
        }
        let _runtime = self.0.rt.enter();
        let c = node_client(lazy_channel(address, &self.0.conn.token)?);
        nodes.insert(address.to_string(), c.clone());
        Ok(c)
    }

    /// Starts fetching a borrowed object's value from its owner, once.
    fn fetch_if_borrowed(&self, id: &ObjectId) {
        self.fetch_borrowed(id, None);
    }

    /// Fetches a pending borrowed object's location from its owner, unless a fetch
    /// is under way; `lost_at` names a node the last location pointed to in vain.
    pub(crate) fn fetch_borrowed(&self, id: &ObjectId, lost_at: Option<String>) {
        let owner = {
            let mut refs = lock(&self.0.refs);
            match refs.get_mut(id) {
                Some(e) if e.owner.is_some() && matches!(e.state, State::Pending) && !e.fetching => {
                    e.fetching = true;
                    e.owner.clone()
                }
                _ => None,
            }
        };
        let Some(owner) = owner else { return };
        let cw = self.clone();
        let id = *id;
        self.0.rt.spawn(async move {
            let state = match cw.peer(&owner) {
                None => State::Failed(RayError::OwnerDied { object: id.to_string(), owner: owner.clone() }),
                Some(mut client) => {
                    let req = GetObjectRequest {
                        object_id: id.0.to_vec().into(),
                        timeout_ms: -1,
                        lost_at: lost_at.unwrap_or_default(),
                    };
                    match client.get_object(req).await {
                        Ok(reply) => location_to_state(reply.into_inner().location),
                        Err(s) => State::Failed(match from_status(&s, "the object's owner") {
                            RayError::Connection { .. } => {
                                RayError::OwnerDied { object: id.to_string(), owner: owner.clone() }
                            }
                            other => other,
                        }),
                    }
                }
            };
            let mut fx = Effects::default();
            lock(&cw.0.refs).settle(&id, state, &mut fx);
            cw.apply(fx);
        });
    }

    /// Runs `cb` once the object is ready or failed (fetching it if borrowed).
    pub fn on_ready(&self, id: &ObjectId, cb: refs::Waiter) {
        let leftover = lock(&self.0.refs).on_settled(id, cb);
        match leftover {
            Some(cb) => cb(),
            None => self.fetch_if_borrowed(id),
        }
    }

    /// Ray's `get` for one object: waits up to `timeout` and returns its bytes.
    pub fn get(&self, id: &ObjectId, timeout: Option<Duration>) -> Result<ObjectData, RayError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if let Some(r) = self.try_read(id) {
                return r;
            }
            // Not settled, or being recovered after its node was lost: wait.
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if !self.wait_settled(id, left)? {
                let timeout_ms = timeout.map(|t| t.as_millis() as u64).unwrap_or(0);
                return Err(RayError::Timeout { timeout_ms, pending: 1 });
            }
        }
    }

    /// Blocks until `id` settles (true) or `timeout` passes (false).
    fn wait_settled(&self, id: &ObjectId, timeout: Option<Duration>) -> Result<bool, RayError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(2);
        let wake = tx.clone();
        let scope = self.blocking_scope(
            std::slice::from_ref(id),
            Box::new(move || {
                let _ = wake.try_send(());
            }),
        );
        self.on_ready(
            id,
            Box::new(move || {
                let _ = tx.try_send(());
            }),
        );
        let blocked = self.set_blocked(true);
        let outcome = match timeout {
            None => rx.recv().map_err(|_| ()),
            Some(t) => rx.recv_timeout(t).map_err(|_| ()),
        };
        if blocked {
            self.set_blocked(false);
        }
        if scope.interrupted() {
            return Err(RayError::Interrupted);
        }
        drop(scope);
        Ok(outcome.is_ok())
    }

    /// A worker blocked in `get`/`wait` lends its CPU to others, as in Ray.
    fn set_blocked(&self, blocked: bool) -> bool {
        if !self.0.is_worker || !execute::in_task() {
            return false;
        }
        let mut node = self.0.node.clone();
        let req = BlockedRequest { worker_id: self.0.worker_id.clone(), blocked };
        if let Err(s) = block_on(&self.0.rt, async move { node.notify_blocked(req).await }) {
            // The node keeps counting this worker's CPU as busy (or free).
            tracing::warn!(
                "could not tell the node this worker is {}: {}",
                if blocked { "blocked" } else { "running again" },
                s.message()
            );
        }
        true
    }

    /// The object's bytes if it has settled.
    fn try_read(&self, id: &ObjectId) -> Option<Result<ObjectData, RayError>> {
        let (state, owner) = match lock(&self.0.refs).get(id) {
            None => {
                return Some(Err(RayError::ObjectLost {
                    object: id.to_string(),
                    detail: "no reference to it is held here (was it freed?)".into(),
                }));
            }
            Some(e) => (e.state.clone(), e.owner.clone()),
        };
        match state {
            State::Pending => None,
            State::Failed(e) => Some(Err(e)),
            State::Ready(Value::Inline(b)) => Some(Ok(ObjectData::Inline(b))),
            State::Ready(Value::Shm { path, span, node_id, node_address, .. }) => {
                let owner = owner.unwrap_or_else(|| self.0.address.clone());
                let object = ShmObject {
                    id: *id,
                    owner: &owner,
                    path: &path,
                    span,
                    node_id: &node_id,
                    node_address: &node_address,
                };
                match self.map_object(&object) {
                    Ok(view) => Some(Ok(ObjectData::Mapped(Arc::new(view)))),
                    Err(ReadFailure::SourceGone(why)) => self.object_lost(id, &node_address, &why).err().map(Err),
                    Err(ReadFailure::Failed(e)) => Some(Err(e)),
                }
            }
        }
    }

    /// Maps a large object read-only, first copying it to this node's store if it
    /// lives on another node (on one machine every node's files are visible, so
    /// the node id, not the path, decides).
    pub(crate) fn map_object(&self, object: &ShmObject<'_>) -> Result<ObjectView, ReadFailure> {
        let lost = |detail: String| RayError::ObjectLost { object: object.id.to_string(), detail };
        let (path, span) = if object.node_id == self.0.conn.node_id.as_ref() {
            (object.path.to_string(), object.span)
        } else {
            let mut node = self.0.node.clone();
            let request = PullObjectRequest {
                object_id: object.id.0.to_vec().into(),
                owner_address: object.owner.to_string(),
                source_address: object.node_address.to_string(),
            };
            match block_on(&self.0.rt, async move { node.pull_object(request).await }) {
                Ok(reply) => {
                    let reply = reply.into_inner();
                    (reply.path, reply.span.map(Into::into))
                }
                // The node holding it is gone, or no longer has it.
                Err(s) if matches!(s.code(), tonic::Code::Unavailable | tonic::Code::NotFound) => {
                    return Err(ReadFailure::SourceGone(RayError::Connection {
                        what: format!("node {}", object.node_address),
                        detail: s.message().to_string(),
                    }));
                }
                Err(s) => {
                    return Err(ReadFailure::Failed(match from_status(&s, "the node daemon") {
                        e @ RayError::ObjectStoreFull { .. } => e,
                        e => lost(format!("cannot copy it from node {}: {e}", object.node_address)),
                    }));
                }
            }
        };
        let Some(span) = span else {
            return ObjectView::open(std::path::Path::new(&path)).map_err(|e| ReadFailure::Failed(lost(e.to_string())));
        };
        let arena = self.arena(&path).map_err(ReadFailure::Failed)?;
        // Freed since this process learned where it is: the node no longer has it.
        ObjectView::pinned(&arena, span).ok_or_else(|| {
            ReadFailure::SourceGone(lost(format!("node {} freed it while it was being read", object.node_address)))
        })
    }

    /// This process's mapping of a node's object arena, made on first use.
    fn arena(&self, path: &str) -> Result<Arc<ArenaMap>, RayError> {
        let mut arenas = lock(&self.0.arenas);
        if let Some(map) = arenas.get(path) {
            return Ok(map.clone());
        }
        let map = Arc::new(ArenaMap::open(std::path::Path::new(path))?);
        arenas.insert(path.to_string(), map.clone());
        Ok(map)
    }

    /// Ray's `wait`: marks which of `ids` are ready once `num_returns` are, or the
    /// timeout passes.
    pub fn wait(&self, ids: &[ObjectId], num_returns: usize, timeout: Option<Duration>) -> Result<Vec<bool>, RayError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut ready = vec![false; ids.len()];
        let mut count = 0;
        // Marks what has settled, in one pass under the lock; returns the pending
        // borrowed objects nobody is fetching yet.
        let look = |refs: &refs::RefTable, ready: &mut [bool], count: &mut usize| {
            let mut borrowed = Vec::new();
            for (i, id) in ids.iter().enumerate() {
                if ready[i] {
                    continue;
                }
                match refs.get(id) {
                    Some(e) if matches!(e.state, State::Pending) => {
                        if e.owner.is_some() && !e.fetching {
                            borrowed.push(*id);
                        }
                    }
                    _ => {
                        ready[i] = true;
                        *count += 1;
                    }
                }
            }
            borrowed
        };
        // Fast path: enough objects are settled already; register nothing.
        let borrowed = look(&lock(&self.0.refs), &mut ready, &mut count);
        if count >= num_returns {
            return Ok(ready);
        }
        // Borrowed objects settle only once their owner says where they are.
        for id in &borrowed {
            self.fetch_if_borrowed(id);
        }
        // Listen to every settle (one channel, not a callback left on each of
        // the objects: a loop of `wait` calls over a thousand refs would leave
        // hundreds of thousands behind), and look again in the same lock, so no
        // settle slips between the two.
        let (settled_tx, settled_rx) = std::sync::mpsc::channel::<ObjectId>();
        let interrupt = settled_tx.clone();
        let listener = {
            let mut refs = lock(&self.0.refs);
            look(&refs, &mut ready, &mut count);
            refs.listen_settled(settled_tx)
        };
        let mut pending: HashMap<ObjectId, Vec<usize>> = HashMap::new();
        for (i, id) in ids.iter().enumerate().filter(|(i, _)| !ready[*i]) {
            pending.entry(*id).or_default().push(i);
        }
        let scope = self.blocking_scope(
            ids,
            // Only a wake-up: the loop then sees `interrupted()`.
            Box::new(move || {
                let _ = interrupt.send(ObjectId::default());
            }),
        );
        let blocked = count < num_returns && self.set_blocked(true);
        while count < num_returns && !scope.interrupted() {
            let next = match deadline {
                None => settled_rx.recv().ok(),
                Some(d) => settled_rx.recv_timeout(d.saturating_duration_since(Instant::now())).ok(),
            };
            let Some(id) = next else { break };
            for i in pending.remove(&id).unwrap_or_default() {
                ready[i] = true;
                count += 1;
            }
        }
        lock(&self.0.refs).stop_listening(listener);
        if blocked {
            self.set_blocked(false);
        }
        if scope.interrupted() {
            return Err(RayError::Interrupted);
        }
        drop(scope);
        // Anything else that settled meanwhile counts as ready too.
        look(&lock(&self.0.refs), &mut ready, &mut count);
        Ok(ready)
    }

    /// Disconnects: returns leases, finishes the job (drivers) and stops serving.
    pub fn shutdown(&self) {
        if self.0.shut_down.swap(true, Ordering::SeqCst) {
            return;
        }
        let cw = self.clone();
        block_on(&self.0.rt, async move {
            cw.return_all_leases().await;
            cw.flush_events().await;
            if !cw.0.is_worker {
                cw.flush_worker_output().await;
                let job = cw.0.job.0;
                if let Err(s) = cw.0.head.clone().finish_job(FinishJobRequest { job_id: job }).await {
                    // The head ends the job when it notices the driver is gone.
                    tracing::debug!("could not mark job {job} finished: {}", s.message());
                }
            }
        });
    }
}

/// Why a large object could not be mapped.
pub(crate) enum ReadFailure {
    /// The node holding it is unreachable or lost it: recovery may help.
    SourceGone(RayError),
    /// Anything else.
    Failed(RayError),
}

/// A large object as a reader finds it: which node holds it and where.
pub(crate) struct ShmObject<'a> {
    pub(crate) id: ObjectId,
    pub(crate) owner: &'a str,
    pub(crate) path: &'a str,
    pub(crate) span: Option<ray_object_store::Span>,
    pub(crate) node_id: &'a [u8],
    pub(crate) node_address: &'a str,
}

pub(crate) fn location_to_state(loc: Option<ObjectLocation>) -> State {
    match loc.and_then(|l| l.kind) {
        Some(object_location::Kind::Inline(b)) => State::Ready(Value::Inline(b)),
        Some(object_location::Kind::Shm(s)) => State::Ready(Value::Shm {
            path: s.path,
            span: s.span.map(Into::into),
            size: s.size,
            node_id: s.node_id,
            node_address: s.node_address,
        }),
        Some(object_location::Kind::Error(e)) => State::Failed(RayError::from_bytes(&e)),
        None => State::Failed(RayError::Internal("empty object location".into())),
    }
}

/// The location of an object, naming it and its owner so that a reader on
/// another node can copy it.
pub(crate) fn object_location(id: &ObjectId, owner: &str, state: &State) -> Option<ObjectLocation> {
    let mut location = state_to_location(state)?;
    if let Some(object_location::Kind::Shm(shm)) = location.kind.as_mut() {
        shm.object_id = id.0.to_vec().into();
        shm.owner_address = owner.to_string();
    }
    Some(location)
}

pub(crate) fn state_to_location(state: &State) -> Option<ObjectLocation> {
    let kind = match state {
        State::Pending => return None,
        State::Ready(Value::Inline(b)) => object_location::Kind::Inline(b.clone()),
        State::Ready(Value::Shm { path, span, size, node_id, node_address }) => {
            object_location::Kind::Shm(SharedMemory {
                node_id: node_id.clone(),
                path: path.clone(),
                span: span.map(Into::into),
                size: *size,
                node_address: node_address.clone(),
                ..SharedMemory::default()
            })
        }
        State::Failed(e) => object_location::Kind::Error(e.to_bytes().into()),
    };
    Some(ObjectLocation { kind: Some(kind) })
}

/// Prints a worker's output line as Ray does: `(name pid=123) line`.
pub fn format_log_line(line: &LogLine, local_ip: &str) -> String {
    let name = if line.task_name.is_empty() { "worker" } else { &line.task_name };
    if line.ip.is_empty() || line.ip == local_ip {
        format!("({name} pid={}) {}", line.pid, line.line)
    } else {
        format!("({name} pid={}, ip={}) {}", line.pid, line.ip, line.line)
    }
}

async fn subscribe_logs(cw: CoreWorker) {
    let mut head = cw.0.head.clone();
    let stream = match head.subscribe_logs(SubscribeLogsRequest { job_id: cw.0.job.0 }).await {
        Ok(stream) => stream,
        Err(s) => {
            tracing::warn!(
                "worker output will not be shown here: the head refused the log subscription: {}",
                s.message()
            );
            return;
        }
    };
    // The head has subscribed us by now: a flush asked from here on is answered.
    lock(&cw.0.log_flushes).subscribed = true;
    let mut stream = stream.into_inner();
    while let Ok(Some(batch)) = stream.message().await {
        if batch.flush != 0 {
            if let Some(waiter) = lock(&cw.0.log_flushes).waiting.remove(&batch.flush) {
                let _ = waiter.send(());
            }
            continue;
        }
        let sink = cw.0.log_sink.read().unwrap_or_else(|p| p.into_inner());
        for line in &batch.lines {
            match sink.as_ref() {
                Some(f) => f(line),
                None => {
                    use std::io::Write;
                    let text = format_log_line(line, &cw.0.conn.ip);
                    if line.is_stderr {
                        let _ = writeln!(std::io::stderr().lock(), "{text}");
                    } else {
                        let _ = writeln!(std::io::stdout().lock(), "{text}");
                    }
                }
            }
        }
    }
    // Nothing more will arrive; nobody should wait for it.
    let mut flushes = lock(&cw.0.log_flushes);
    flushes.subscribed = false;
    flushes.waiting.clear();
}

/// The driver's flushes of worker output that are waiting for their mark.
#[derive(Default)]
pub(crate) struct LogFlushes {
    /// Whether the head streams this job's output here.
    subscribed: bool,
    next: u64,
    waiting: HashMap<u64, tokio::sync::oneshot::Sender<()>>,
}

/// The most a flush of worker output waits, whatever the nodes do.
const LOG_FLUSH_LIMIT: Duration = Duration::from_secs(5);

impl CoreWorker {
    /// Waits until the worker output of this driver's job that was written
    /// before the call has been shown (handed to the log sink), so it comes
    /// before whatever the driver shows next: a cell's lines before its result,
    /// a script's before it exits. Returns false if that could not be made sure
    /// of within a few seconds, or nothing streams output here.
    pub async fn flush_worker_output(&self) -> bool {
        let (flush, marked) = {
            let mut flushes = lock(&self.0.log_flushes);
            if !flushes.subscribed {
                return false;
            }
            flushes.next += 1;
            let flush = flushes.next;
            let (tx, rx) = tokio::sync::oneshot::channel();
            flushes.waiting.insert(flush, tx);
            (flush, rx)
        };
        let request = ray_proto::FlushLogsRequest { job_id: self.0.job.0, flush };
        let flushed = async {
            self.0.head.clone().flush_logs(request).await.map_err(|s| s.message().to_string())?;
            marked.await.map_err(|_| "the output stream ended".to_string())
        };
        let outcome = tokio::time::timeout(LOG_FLUSH_LIMIT, flushed).await;
        lock(&self.0.log_flushes).waiting.remove(&flush);
        match outcome {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::debug!("worker output may come late: {e}");
                false
            }
            Err(_) => {
                tracing::debug!("worker output may come late: no flush mark within {LOG_FLUSH_LIMIT:?}");
                false
            }
        }
    }

    /// [`CoreWorker::flush_worker_output`] from a thread outside the runtime.
    pub fn flush_worker_output_blocking(&self) -> bool {
        let cw = self.clone();
        block_on(&self.0.rt, async move { cw.flush_worker_output().await })
    }
}
