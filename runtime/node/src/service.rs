//! The node daemon's gRPC service and its background duties: registering with the
//! head and sending heartbeats, starting workers and relaying their output, and
//! noticing when a job's driver is gone so its workers can go too.

mod executables;
mod head_link;
mod logs;
mod metrics;
mod output;
mod transfer;

use crate::placement::{Placement, Steer, place};
use crate::pool::{PendingLease, Pool, ResourceSnapshot, Resources, WorkerState};
use ray_abi::PlacementGroupId;
use ray_abi::ids::hex;
use ray_object_store::StoreIndex;
use ray_proto::groups;
use ray_proto::node_server::{Node, NodeServer};
use ray_proto::*;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{Notify, mpsc, oneshot};
use tonic::{Request, Response, Status};

/// Errors that stop a node daemon.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The head could not be reached or refused us.
    #[error("cannot register with the head at {address}: {detail}")]
    Head {
        /// Head address.
        address: String,
        /// What went wrong.
        detail: String,
    },
    /// The metrics port could not be bound.
    #[error("cannot serve metrics on {address}: {detail}; choose another --metrics-export-port, or leave it out")]
    Metrics {
        /// Where.
        address: String,
        /// Why.
        detail: String,
    },
    /// The object store could not be set up.
    #[error(transparent)]
    Store(#[from] ray_object_store::StoreError),
    /// The object store's directory cannot be used.
    #[error("cannot keep the object store in {}: {detail}; pass an existing directory to --plasma-directory", dir.display())]
    PlasmaDirectory {
        /// The directory.
        dir: PathBuf,
        /// Why not.
        detail: String,
    },
    /// The service could not be set up (TLS, say).
    #[error("cannot serve the node: {0}")]
    Setup(ray_abi::RayError),
    /// The gRPC server failed.
    #[error("node service failed: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// How to run a node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The head's address.
    pub head_address: String,
    /// The cluster token.
    pub token: String,
    /// This node's IP, as others should reach it.
    pub ip: String,
    /// What this node offers (`CPU`, `GPU`, custom).
    pub resources: Resources,
    /// Object store capacity in bytes; `None` for 30% of memory, shrunk to fit
    /// the filesystem the store lives on.
    pub object_store_memory: Option<u64>,
    /// Where the store's files live (Ray's `--plasma-directory`); `None` for
    /// `/dev/shm`.
    pub plasma_directory: Option<PathBuf>,
    /// The session directory (logs live under it).
    pub session_dir: PathBuf,
    /// Whether this node runs beside the head.
    pub is_head: bool,
    /// How long a worker beyond the per-job minimum may stay idle before it is
    /// asked to exit (Ray's `idle_worker_killing_time_threshold_ms`).
    pub idle_worker_timeout: Duration,
    /// Serve Prometheus metrics on this port of `ip` (Ray's `--metrics-export-port`).
    pub metrics_export_port: Option<u16>,
}

/// How long a node trusts its view of the cluster; heartbeats are every 250 ms.
const CLUSTER_VIEW_TTL: Duration = Duration::from_millis(200);
/// How long an idle worker asked to exit may take to answer before it is killed.
const EXIT_ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

struct Shared {
    config: NodeConfig,
    node_id: Vec<u8>,
    address: String,
    pool: Mutex<Pool>,
    store: Mutex<StoreIndex>,
    jobs: Mutex<HashMap<u32, JobInfo>>,
    head: HeadClient,
    spawner: std::sync::mpsc::Sender<SpawnRequest>,
    logs: mpsc::UnboundedSender<output::Outgoing>,
    /// Who reads each worker's output, for flushes.
    output: output::OutputReaders,
    shutdown: Notify,
    children: Mutex<HashMap<u32, Vec<u8>>>,
    /// The cluster as the head last described it, for placement.
    cluster: Mutex<Option<(std::time::Instant, Vec<NodeInfo>)>>,
    /// Objects being copied here from other nodes.
    pulls: transfer::Pulls,
    /// Channels to other nodes and to owners, by address.
    channels: Mutex<HashMap<String, AuthChannel>>,
    /// Programs fetched from drivers on other machines, by job.
    executables: executables::Executables,
    /// Spread requests this node has placed, for taking turns.
    spread_turns: std::sync::atomic::AtomicUsize,
    /// What this node told the head when it registered; resources are current
    /// ones when it registers again.
    registration: NodeInfo,
}

impl Shared {
    fn pool(&self) -> MutexGuard<'_, Pool> {
        self.pool.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn store(&self) -> MutexGuard<'_, StoreIndex> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs a scheduling pass and starts the workers it asks for.
    fn dispatch(self: &Arc<Self>) {
        let actions = self.pool().dispatch();
        for job in actions.spawn {
            let this = self.clone();
            tokio::spawn(async move { this.spawn_worker(job).await });
        }
    }

    /// The cluster's nodes, asked of the head at most every [`CLUSTER_VIEW_TTL`]:
    /// a busy node consults it for every lease it cannot grant at once.
    async fn cluster_view(&self) -> Result<Vec<NodeInfo>, Status> {
        self.cluster_view_within(CLUSTER_VIEW_TTL).await
    }

    /// The cluster's nodes, asked of the head unless the last answer is younger
    /// than `ttl`.
    async fn cluster_view_within(&self, ttl: Duration) -> Result<Vec<NodeInfo>, Status> {
        if let Some((at, nodes)) = &*self.cluster.lock().unwrap_or_else(|p| p.into_inner())
            && at.elapsed() < ttl
        {
            return Ok(nodes.clone());
        }
        let nodes = self.head.clone().get_cluster_info(Empty {}).await?.into_inner().nodes;
        *self.cluster.lock().unwrap_or_else(|p| p.into_inner()) = Some((std::time::Instant::now(), nodes.clone()));
        Ok(nodes)
    }

    async fn job_info(&self, job: u32) -> Result<JobInfo, Status> {
        if let Some(j) = self.jobs.lock().unwrap_or_else(|p| p.into_inner()).get(&job) {
            return Ok(j.clone());
        }
        let info = self.head.clone().get_job(GetJobRequest { job_id: job }).await?.into_inner();
        self.jobs.lock().unwrap_or_else(|p| p.into_inner()).insert(job, info.clone());
        Ok(info)
    }

    async fn spawn_worker(self: Arc<Self>, job: u32) {
        let info = match self.job_info(job).await {
            Ok(i) => i,
            Err(e) => {
                tracing::error!("cannot start a worker for job {job}: {e}");
                return;
            }
        };
        let executable = match self.worker_executable(&info).await {
            Ok(path) => path,
            Err(why) => {
                tracing::error!("cannot start a worker for job {job}: {why}");
                self.fail_job_leases(job, why);
                return;
            }
        };
        let worker_id: [u8; 16] = rand::random();
        // Record the worker before it exists: it may register before spawn returns.
        self.pool().worker_spawned(worker_id.to_vec(), 0, job);
        let (tx, rx) = oneshot::channel();
        // The job's own variables first, so the node's RAYREPL_* always win.
        let mut env: Vec<(String, String)> = info
            .worker_env
            .iter()
            .filter(|(k, _)| !k.starts_with("RAYREPL_"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        env.extend([
            ("RAYREPL_ROLE".into(), "worker".into()),
            ("RAYREPL_NODE_ADDRESS".into(), self.address.clone()),
            ("RAYREPL_HEAD_ADDRESS".into(), self.config.head_address.clone()),
            ("RAYREPL_TOKEN".into(), self.config.token.clone()),
            ("RAYREPL_JOB_ID".into(), job.to_string()),
            ("RAYREPL_WORKER_ID".into(), hex(&worker_id)),
            ("RAYREPL_NODE_IP".into(), self.config.ip.clone()),
            ("RAYREPL_NODE_ID".into(), hex(&self.node_id)),
            ("RAYREPL_SESSION_DIR".into(), self.config.session_dir.display().to_string()),
        ]);
        let request = SpawnRequest { executable: executable.clone(), env, reply: tx };
        let spawned = match self.spawner.send(request) {
            Ok(()) => rx.await.unwrap_or_else(|_| Err(std::io::Error::other("spawner stopped"))),
            Err(_) => Err(std::io::Error::other("spawner stopped")),
        };
        match spawned {
            Ok(child) => self.watch_worker(child, worker_id.to_vec(), job),
            Err(e) => {
                tracing::error!("cannot start worker {}: {e}", executable.display());
                self.pool().worker_exited(&worker_id);
                self.fail_job_leases(job, format!("cannot start worker `{}`: {e}", executable.display()));
            }
        }
    }

    /// Where a request for a placement group's resources goes when the cluster
    /// view shows no node holding them: the view may predate the group's commit,
    /// the group may be waiting for room, or it may be gone.
    async fn place_in_group(&self, group: PlacementGroupId, demand: &Resources) -> Result<Placement, Status> {
        let fresh = self.cluster_view_within(Duration::ZERO).await?;
        let local_total = self.pool().total().clone();
        let unclaimed = self.pool().unclaimed();
        match place(&self.node_id, &local_total, &unclaimed, demand, &fresh, true, &Steer::Default) {
            Placement::Infeasible(_) => {}
            decided => return Ok(decided),
        }
        let request = GetPlacementGroupRequest { placement_group_id: group.0.to_vec().into(), ..Default::default() };
        match self.head.clone().get_placement_group(request).await {
            Ok(info) if info.get_ref().state() == placement_group_info::State::Removed => {
                Ok(Placement::Unschedulable(format!("its placement group {group} was removed")))
            }
            // Not reserved yet, or being reserved again: wait here until a node has it.
            Ok(_) => Ok(Placement::Local),
            Err(s) if s.code() == tonic::Code::NotFound => {
                Ok(Placement::Unschedulable(format!("placement group {group} does not exist")))
            }
            Err(s) => Err(s),
        }
    }

    fn fail_job_leases(&self, job: u32, why: String) {
        self.pool().fail_job(job, &why);
    }

    fn watch_worker(self: &Arc<Self>, mut child: tokio::process::Child, worker_id: Vec<u8>, job: u32) {
        let pid = child.id().unwrap_or(0);
        self.pool().set_pid(&worker_id, pid);
        self.children.lock().unwrap_or_else(|p| p.into_inner()).insert(pid, worker_id.clone());
        let log_dir = self.config.session_dir.join("logs");
        let output = |is_stderr: bool| output::WorkerOutput {
            pid,
            job,
            is_stderr,
            log_path: log_dir.join(format!("worker-{pid}.{}", if is_stderr { "err" } else { "out" })),
            ip: self.config.ip.clone(),
        };
        if let Some(out) = child.stdout.take() {
            tokio::spawn(output(false).relay(out, self.output.register(job), self.logs.clone()));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(output(true).relay(err, self.output.register(job), self.logs.clone()));
        }
        let this = self.clone();
        tokio::spawn(async move {
            let status = child.wait().await;
            tracing::debug!("worker {pid} exited: {status:?}");
            this.children.lock().unwrap_or_else(|p| p.into_inner()).remove(&pid);
            let exited = this.pool().worker_exited(&worker_id);
            this.dispatch();
            // Objects die with their owner, as in Ray: nobody can free them now.
            if let Some(w) = exited.filter(|w| !w.address.is_empty()) {
                this.free_owned_by(w.address);
            }
            // The head restarts or buries an actor the worker hosted.
            let detail = match status {
                Ok(s) => describe_exit(s),
                Err(e) => e.to_string(),
            };
            let report =
                WorkerDiedRequest { node_id: this.node_id.clone().into(), worker_id: worker_id.into(), pid, detail };
            if let Err(s) = this.head.clone().worker_died(report).await {
                tracing::warn!(
                    "the head did not hear that worker {pid} died ({}): an actor it hosted is neither restarted nor \
                     marked dead until the head notices otherwise",
                    s.message()
                );
            }
        });
    }

    /// Frees the objects here that `owner` owned, off the async threads.
    fn free_owned_by(self: &Arc<Self>, owner: String) {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let freed = this.store().free_owned_by(&owner);
            if freed > 0 {
                tracing::debug!("freed {freed} objects of {owner}, which is gone");
            }
        });
    }

    /// This node's heartbeat: its resources, store use, workers and queue.
    fn heartbeat(&self) -> HeartbeatRequest {
        let (view, workers, pending) = {
            let mut pool = self.pool();
            let pending = pool
                .pending_demands()
                .into_iter()
                .map(|(shape, count)| ResourceDemand { shape: resources_from_map(&shape), count })
                .collect();
            (resource_view(pool.snapshot()), pool.workers().count() as u32, pending)
        };
        HeartbeatRequest {
            node_id: self.node_id.clone().into(),
            available: view.available,
            total: view.total,
            resource_version: view.version,
            object_store_used: self.store().used(),
            num_workers: workers,
            pending,
        }
    }

    /// Registers (again) with the head, with the resources this node has now.
    async fn register(&self) -> Result<(), Status> {
        let hb = self.heartbeat();
        let node = NodeInfo {
            total: hb.total,
            available: hb.available,
            resource_version: hb.resource_version,
            object_store_used: hb.object_store_used,
            num_workers: hb.num_workers,
            ..self.registration.clone()
        };
        self.head.clone().register_node(RegisterNodeRequest { node: Some(node) }).await.map(|_| ())
    }

    /// Stops the workers whose work the head moved to other nodes when it gave
    /// this one up, and gives their bundles back.
    fn drop_moved_work(&self) {
        let doomed = self.pool().drop_moved_work();
        if !doomed.is_empty() {
            tracing::warn!("stopping {} workers whose actors or bundles were moved to other nodes", doomed.len());
        }
        for pid in doomed {
            kill(pid);
        }
    }

    fn kill_all_workers(&self) {
        let pids: Vec<u32> = self.children.lock().unwrap_or_else(|p| p.into_inner()).keys().copied().collect();
        for pid in pids {
            kill(pid);
        }
    }
}

fn resource_view(s: ResourceSnapshot) -> ResourceView {
    ResourceView {
        version: s.version,
        total: resources_from_map(&s.total),
        available: resources_from_map(&s.available),
    }
}

/// The groups of a bundles request, with their bundles.
fn parse_groups(r: BundlesRequest) -> Result<Vec<(PlacementGroupId, Vec<Bundle>)>, Status> {
    r.groups
        .into_iter()
        .map(|g| Ok((PlacementGroupId::from_bytes(&g.placement_group_id).map_err(|e| to_status(&e))?, g.bundles)))
        .collect()
}

fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(libc::SIGKILL)) => "killed by SIGKILL".to_string(),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => "exited".to_string(),
    }
}

fn kill(pid: u32) {
    if pid == 0 {
        return;
    }
    // SAFETY: kill(2) has no memory-safety requirements; the pid is one of our
    // children, which we have not reaped yet, so it cannot name another process.
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    }
}

fn pid_alive(pid: u32) -> bool {
    // SAFETY: kill(2) with signal 0 only checks for existence.
    pid != 0 && unsafe { libc::kill(pid as i32, 0) } == 0
}

struct SpawnRequest {
    executable: PathBuf,
    env: Vec<(String, String)>,
    reply: oneshot::Sender<std::io::Result<tokio::process::Child>>,
}

/// Workers are started from one long-lived thread: the kernel's parent-death
/// signal is tied to the thread that forked, so that thread must outlive them.
fn start_spawner(rt: tokio::runtime::Handle) -> std::sync::mpsc::Sender<SpawnRequest> {
    let (tx, rx) = std::sync::mpsc::channel::<SpawnRequest>();
    std::thread::Builder::new()
        .name("worker-spawner".into())
        .spawn(move || {
            let _guard = rt.enter();
            for req in rx {
                let mut cmd = tokio::process::Command::new(&req.executable);
                cmd.env_remove("RAYREPL_ADDRESS")
                    .envs(req.env)
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .kill_on_drop(true);
                // SAFETY: the closure runs in the forked child before exec and calls
                // only prctl(2), which is async-signal-safe.
                unsafe {
                    cmd.pre_exec(|| {
                        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                        Ok(())
                    });
                }
                // The waiting task is dropped only when this daemon shuts down,
                // and a worker dies with its node (PR_SET_PDEATHSIG).
                let _ = req.reply.send(cmd.spawn());
            }
        })
        .expect("spawn the worker-spawner thread");
    tx
}

#[derive(Clone)]
struct NodeService(Arc<Shared>);

/// A queued lease request's wait for its grant. If the caller goes away while it
/// waits (an owner that died), the handler is dropped, and a lease granted in the
/// meantime must not stay leased to no one.
struct LeaseWait {
    node: Arc<Shared>,
    reply: Option<oneshot::Receiver<LeaseReply>>,
}

impl LeaseWait {
    async fn answer(mut self) -> Result<LeaseReply, oneshot::error::RecvError> {
        let reply = self.reply.as_mut().expect("waits once").await;
        self.reply = None;
        reply
    }
}

impl Drop for LeaseWait {
    fn drop(&mut self) {
        let Some(mut reply) = self.reply.take() else { return };
        // After `close` no grant can arrive; one that already did is still here.
        reply.close();
        if let Ok(LeaseReply { result: Some(lease_reply::Result::Lease(lease)) }) = reply.try_recv() {
            self.node.pool().return_lease(lease.lease_id);
            // Not while the runtime shuts down: dispatching may start workers.
            if tokio::runtime::Handle::try_current().is_ok() {
                self.node.dispatch();
            }
        }
    }
}

#[tonic::async_trait]
impl Node for NodeService {
    async fn register_worker(
        &self,
        req: Request<RegisterWorkerRequest>,
    ) -> Result<Response<RegisterWorkerReply>, Status> {
        let r = req.into_inner();
        if !self.0.pool().worker_registered(&r.worker_id, r.address, r.direct_address) {
            return Err(Status::not_found("unknown worker id; workers are started by their node"));
        }
        self.0.dispatch();
        Ok(Response::new(RegisterWorkerReply {
            node_id: self.0.node_id.clone().into(),
            session_dir: self.0.config.session_dir.display().to_string(),
            head_address: self.0.config.head_address.clone(),
            ip: self.0.config.ip.clone(),
        }))
    }

    async fn request_lease(&self, req: Request<LeaseRequest>) -> Result<Response<LeaseReply>, Status> {
        let r = req.into_inner();
        let demand = resources_to_map(&r.resources);
        let group = groups::group_in(&demand);
        let answer = |result| Ok(Response::new(LeaseReply { result: Some(result) }));
        if let Some(g) = group.filter(|g| self.0.pool().group_removed(g)) {
            return answer(lease_reply::Result::Unschedulable(format!("its placement group {g} was removed")));
        }
        let (local_total, local_available) = {
            let pool = self.0.pool();
            (pool.total().clone(), pool.unclaimed())
        };
        let may_spill = !r.grant_or_reject;
        let steer = match r.strategy.and_then(|s| s.kind) {
            None => Steer::Default,
            Some(lease_strategy::Kind::Spread(_)) => Steer::Spread {
                turn: if may_spill {
                    self.0.spread_turns.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                } else {
                    0
                },
            },
            Some(lease_strategy::Kind::NodeAffinity(a)) => {
                Steer::Affinity { node_id: a.node_id.to_vec(), soft: a.soft }
            }
        };
        // Free here is the common case and needs no look at the cluster.
        if !(steer == Steer::Default && fits(&local_available, &demand)) {
            let nodes = self.0.cluster_view().await?;
            let mut placement =
                place(&self.0.node_id, &local_total, &local_available, &demand, &nodes, may_spill, &steer);
            if let (Placement::Infeasible(_), Some(g)) = (&placement, group) {
                placement = self.0.place_in_group(g, &demand).await?;
            }
            match placement {
                Placement::Local => {}
                Placement::Spill { node_id, address } => {
                    let spill = Spillback { node_id: node_id.into(), node_address: address };
                    return answer(lease_reply::Result::Spillback(spill));
                }
                Placement::Infeasible(totals) => return answer(lease_reply::Result::Infeasible(totals)),
                Placement::Unschedulable(why) => return answer(lease_reply::Result::Unschedulable(why)),
            }
        }
        // Make sure we know how to start this job's workers before queueing.
        self.0.job_info(r.job_id).await?;
        let (tx, rx) = oneshot::channel();
        self.0.pool().enqueue(PendingLease {
            job: r.job_id,
            resources: demand,
            reply: tx,
            for_actor: r.for_actor,
            detached: r.detached,
            may_spill: !r.grant_or_reject,
            owner: r.owner_address,
            request_id: r.request_id,
        });
        self.0.dispatch();
        let reply = LeaseWait { node: self.0.clone(), reply: Some(rx) }.answer().await;
        Ok(Response::new(reply.map_err(|_| Status::unavailable("node is shutting down"))?))
    }

    async fn return_lease(&self, req: Request<ReturnLeaseRequest>) -> Result<Response<Empty>, Status> {
        let r = req.into_inner();
        if r.worker_failed {
            let pid = self.0.pool().lease_worker_pid(r.lease_id);
            if let Some(pid) = pid {
                kill(pid);
            }
        } else {
            self.0.pool().return_lease(r.lease_id);
        }
        self.0.dispatch();
        Ok(Response::new(Empty {}))
    }

    async fn cancel_lease(&self, req: Request<CancelLeaseRequest>) -> Result<Response<Empty>, Status> {
        let r = req.into_inner();
        self.0.pool().cancel(&r.owner_address, r.request_id);
        Ok(Response::new(Empty {}))
    }

    async fn notify_blocked(&self, req: Request<BlockedRequest>) -> Result<Response<Empty>, Status> {
        let r = req.into_inner();
        self.0.pool().set_blocked(&r.worker_id, r.blocked);
        if r.blocked {
            self.0.dispatch();
        }
        Ok(Response::new(Empty {}))
    }

    async fn create_object(&self, req: Request<CreateObjectRequest>) -> Result<Response<CreateObjectReply>, Status> {
        let r = req.into_inner();
        let id = parse_object_id(&r.object_id)?;
        let location =
            self.0.store().reserve(id, r.size, &r.owner_address).map_err(|e| to_status(&ray_abi::RayError::from(e)))?;
        Ok(Response::new(CreateObjectReply {
            path: location.path.display().to_string(),
            span: location.span.map(Into::into),
        }))
    }

    async fn seal_object(&self, req: Request<SealObjectRequest>) -> Result<Response<Empty>, Status> {
        let id = parse_object_id(&req.into_inner().object_id)?;
        self.0.store().seal(&id).map_err(|e| to_status(&ray_abi::RayError::from(e)))?;
        Ok(Response::new(Empty {}))
    }

    async fn free_objects(&self, req: Request<FreeObjectsRequest>) -> Result<Response<Empty>, Status> {
        let ids = req.into_inner().object_ids.iter().map(|b| parse_object_id(b)).collect::<Result<Vec<_>, _>>()?;
        // Unlinking is file-system work; keep it off the async threads.
        let this = self.0.clone();
        tokio::task::spawn_blocking(move || {
            let mut store = this.store();
            for id in &ids {
                store.free(id);
            }
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(Empty {}))
    }

    async fn get_stats(&self, _: Request<Empty>) -> Result<Response<NodeStats>, Status> {
        let (capacity, used, objects) = {
            let s = self.0.store();
            let objects: Vec<StoredObject> = s
                .objects()
                .map(|o| StoredObject {
                    object_id: o.id.0.to_vec().into(),
                    size: o.size,
                    owner_address: o.owner.clone(),
                    sealed: o.sealed,
                    primary: o.primary,
                })
                .collect();
            (s.capacity(), s.used(), objects)
        };
        let pool = self.0.pool();
        let pids: Vec<u32> = pool.workers().map(|(_, w)| w.pid).collect();
        let idle = pool.workers().filter(|(_, w)| matches!(w.state, WorkerState::Idle(_))).count();
        Ok(Response::new(NodeStats {
            object_store_capacity: capacity,
            object_store_used: used,
            num_objects: objects.len() as u32,
            objects,
            num_workers: pids.len() as u32,
            num_idle_workers: idle as u32,
            worker_pids: pids,
        }))
    }

    async fn kill_worker(&self, req: Request<KillWorkerRequest>) -> Result<Response<Empty>, Status> {
        let pid = req.into_inner().pid;
        if self.0.children.lock().unwrap_or_else(|p| p.into_inner()).contains_key(&pid) {
            kill(pid);
            Ok(Response::new(Empty {}))
        } else {
            Err(Status::not_found(format!("pid {pid} is not a worker of this node")))
        }
    }

    type ReadObjectStream = transfer::ChunkStream;

    async fn read_object(&self, req: Request<ReadObjectRequest>) -> Result<Response<Self::ReadObjectStream>, Status> {
        let id = parse_object_id(&req.into_inner().object_id)?;
        transfer::read_stream(&self.0, id).await.map(Response::new)
    }

    async fn pull_object(&self, req: Request<PullObjectRequest>) -> Result<Response<PullObjectReply>, Status> {
        let r = req.into_inner();
        let id = parse_object_id(&r.object_id)?;
        let location = transfer::pull(&self.0, id, &r.owner_address, &r.source_address).await?;
        Ok(Response::new(PullObjectReply {
            path: location.path.display().to_string(),
            span: location.span.map(Into::into),
        }))
    }

    async fn shutdown(&self, _: Request<Empty>) -> Result<Response<Empty>, Status> {
        self.0.shutdown.notify_one();
        Ok(Response::new(Empty {}))
    }

    async fn prepare_bundles(&self, req: Request<BundlesRequest>) -> Result<Response<BundlesReply>, Status> {
        let groups = parse_groups(req.into_inner())?;
        let mut pool = self.0.pool();
        let refused = groups
            .iter()
            .map(|(group, bundles)| {
                let bundles: Vec<(u32, Resources)> =
                    bundles.iter().map(|b| (b.index, resources_to_map(&b.resources))).collect();
                pool.prepare_bundles(*group, &bundles).err().unwrap_or_default()
            })
            .collect();
        Ok(Response::new(BundlesReply { refused, view: Some(resource_view(pool.snapshot())) }))
    }

    async fn commit_bundles(&self, req: Request<BundlesRequest>) -> Result<Response<BundlesReply>, Status> {
        let groups = parse_groups(req.into_inner())?;
        let reply = {
            let mut pool = self.0.pool();
            let refused = groups
                .iter()
                .map(|(group, bundles)| {
                    let indices: Vec<u32> = bundles.iter().map(|b| b.index).collect();
                    pool.commit_bundles(*group, &indices).err().unwrap_or_default()
                })
                .collect();
            BundlesReply { refused, view: Some(resource_view(pool.snapshot())) }
        };
        // Requests waiting for the groups' resources may run now.
        self.0.dispatch();
        Ok(Response::new(reply))
    }

    async fn return_bundles(&self, req: Request<BundlesRequest>) -> Result<Response<BundlesReply>, Status> {
        let r = req.into_inner();
        let removed = r.groups_removed;
        let groups = parse_groups(r)?;
        let (doomed, reply) = {
            let mut pool = self.0.pool();
            let mut doomed = Vec::new();
            for (group, bundles) in &groups {
                let indices: Vec<u32> = bundles.iter().map(|b| b.index).collect();
                doomed.extend(pool.return_bundles(*group, (!removed).then_some(indices.as_slice()), removed));
            }
            let refused = vec![String::new(); groups.len()];
            (doomed, BundlesReply { refused, view: Some(resource_view(pool.snapshot())) })
        };
        // Ray stops the group's tasks and actors with it; their owners see the
        // workers die and fail or retry them as a lost worker.
        for pid in doomed {
            kill(pid);
        }
        self.0.dispatch();
        Ok(Response::new(reply))
    }

    async fn list_logs(&self, _: Request<Empty>) -> Result<Response<ListLogsReply>, Status> {
        self.0.list_logs().await.map(Response::new)
    }

    async fn read_log(&self, req: Request<ReadLogRequest>) -> Result<Response<ReadLogReply>, Status> {
        self.0.read_log(req.into_inner()).await.map(Response::new)
    }

    async fn flush_logs(&self, req: Request<FlushLogsRequest>) -> Result<Response<Empty>, Status> {
        let job = req.into_inner().job_id;
        self.0.output.flush(job).await;
        // Then past the publisher, so the head has every line read above.
        let (published, answer) = oneshot::channel();
        if self.0.logs.send(output::Outgoing::Published(published)).is_ok()
            && tokio::time::timeout(output::FLUSH_LIMIT, answer).await.is_err()
        {
            tracing::warn!("job {job}'s worker output did not reach the head within {:?}", output::FLUSH_LIMIT);
        }
        Ok(Response::new(Empty {}))
    }
}

/// Heartbeats, and keeps the node registered through head outages (see
/// [`head_link`]).
async fn heartbeat_loop(shared: Arc<Shared>) {
    use head_link::{ANSWER_TIMEOUT, Answer, Call, HeadLink, Say};
    let mut link = HeadLink::default();
    let mut call = Call::Heartbeat;
    loop {
        let sent = async {
            match call {
                Call::Heartbeat => shared.head.clone().heartbeat(shared.heartbeat()).await.map(|_| ()),
                Call::Register => shared.register().await,
                Call::Rejoin => {
                    shared.drop_moved_work();
                    shared.register().await
                }
            }
        };
        let answer = match tokio::time::timeout(ANSWER_TIMEOUT, sent).await {
            Ok(Ok(())) => Answer::Ok,
            Ok(Err(e)) if e.code() == tonic::Code::NotFound => Answer::Unknown,
            Ok(Err(e)) if e.code() == tonic::Code::FailedPrecondition => Answer::GivenUp(e.message().to_string()),
            Ok(Err(e)) => Answer::Failed(ray_proto::from_status(&e, "the head").to_string()),
            Err(_) => Answer::Failed(format!("no answer within {ANSWER_TIMEOUT:?}")),
        };
        let decision = link.on_answer(call, answer, std::time::Instant::now());
        let head = &shared.config.head_address;
        match decision.say {
            None => {}
            Some(Say::Lost(why)) => tracing::warn!(
                "lost the head at {head}: {why}. Running work goes on; retrying every {:?} at most",
                head_link::MAX_BACKOFF
            ),
            Some(Say::StillLost(after, why)) => {
                tracing::warn!(
                    "the head at {head} has not answered for {:.0}s: {why}; still retrying",
                    after.as_secs_f64()
                )
            }
            Some(Say::Back(after)) => {
                tracing::warn!("the head at {head} answers again after {:.1}s", after.as_secs_f64())
            }
            Some(Say::Unknown) => {
                tracing::warn!("the head at {head} does not know this node (it restarted?); registering again")
            }
            Some(Say::GivenUp(why)) => tracing::warn!(
                "the head at {head} gave this node up ({why}); stopping the actors and placement-group tasks it moved, \
                 then registering again"
            ),
            Some(Say::Registered) => tracing::info!("registered with the head at {head} again"),
        }
        call = decision.next;
        tokio::time::sleep(decision.wait).await;
    }
}

/// Sends requests that wait here on to nodes that have become free: placement
/// decides on the last view of the cluster, and a request queued behind a busy
/// node should not wait while another node idles.
async fn spill_loop(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        if !shared.pool().has_spillable() {
            continue;
        }
        let Ok(mut nodes) = shared.cluster_view().await else { continue };
        let spilled = shared.pool().spill_waiting(|demand| {
            let target = nodes
                .iter_mut()
                .filter(|n| n.is_alive() && n.node_id.as_ref() as &[u8] != shared.node_id.as_slice())
                .find(|n| fits(&resources_to_map(&n.available), demand))?;
            // Count it against that node until the next view.
            let mut left = resources_to_map(&target.available);
            for (k, v) in demand {
                *left.entry(k.clone()).or_insert(0.0) -= v;
            }
            target.available = resources_from_map(&left);
            Some(Spillback { node_id: target.node_id.clone(), node_address: target.address.clone() })
        });
        for (lease, spill) in spilled {
            // Its handler is gone if the owner hung up: then nobody waits.
            let _ = lease.reply.send(LeaseReply { result: Some(lease_reply::Result::Spillback(spill)) });
        }
    }
}

/// Stops workers whose driver is gone, and workers idle for long.
async fn reaper_loop(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        let jobs = shared.pool().jobs();
        for job in jobs {
            let info = shared.jobs.lock().unwrap_or_else(|p| p.into_inner()).get(&job).cloned();
            let Some(info) = info else { continue };
            // A driver on this machine is judged by its pid; others by the head.
            let local_driver = !info.host_id.is_empty() && info.host_id == shared.registration.host_id;
            let mut gone = local_driver && !pid_alive(info.driver_pid);
            if !gone {
                gone = match shared.head.clone().get_job(GetJobRequest { job_id: job }).await {
                    Ok(r) => match r.get_ref().status() {
                        JobStatus::Succeeded => true,
                        // Unset is no news: keep the job's workers.
                        JobStatus::Running | JobStatus::Nil => false,
                    },
                    Err(_) => false,
                };
            } else {
                if let Err(s) = shared.head.clone().finish_job(FinishJobRequest { job_id: job }).await {
                    tracing::warn!(
                        "the head did not hear that job {job}'s driver (pid {}) is gone ({}): its actors live on \
                         until the head notices otherwise",
                        info.driver_pid,
                        s.message()
                    );
                }
            }
            if gone {
                for (_, pid) in shared.pool().job_workers(job) {
                    kill(pid);
                }
                shared.free_owned_by(info.driver_address.clone());
                shared.jobs.lock().unwrap_or_else(|p| p.into_inner()).remove(&job);
            }
        }
        // Arena ranges freed while readers pinned them are reusable once they
        // finish; an arena idle for long gives its memory back.
        // Giving memory back can take a while for gigabytes: off the async threads.
        let tidy = shared.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || tidy.store().tidy_arena(Duration::from_secs(10))).await {
            tracing::warn!("tidying the object store's arena failed: {e}");
        }
        let cpus = shared.config.resources.get("CPU").copied().unwrap_or(1.0).ceil() as usize;
        for (worker_id, pid, address) in shared.pool().take_idle_to_reap(shared.config.idle_worker_timeout, cpus) {
            tokio::spawn(ask_to_exit(shared.clone(), worker_id, pid, address));
        }
    }
}

/// Asks an idle worker to exit. One that owns objects still in use declines and
/// stays; one that does not answer is killed.
async fn ask_to_exit(shared: Arc<Shared>, worker_id: Vec<u8>, pid: u32, address: String) {
    let asked = async {
        let mut worker = core_worker_client(lazy_channel(&address, &shared.config.token).ok()?);
        worker.exit(Empty {}).await.ok().map(|r| r.into_inner())
    };
    match tokio::time::timeout(EXIT_ANSWER_TIMEOUT, asked).await {
        Ok(Some(ExitReply { exiting: false, reason })) => {
            tracing::debug!("idle worker {pid} stays: {reason}");
            shared.pool().exit_declined(&worker_id);
        }
        // It exits on its own; the watcher sees it go.
        Ok(Some(ExitReply { exiting: true, .. })) => {}
        Ok(None) | Err(_) => kill(pid),
    }
}

/// Sizes the node's object store for the room its filesystem has (see
/// [`ray_object_store::sizing`]) and creates it, after removing stores left by
/// dead nodes.
fn open_store(config: &NodeConfig, node_id: &[u8]) -> Result<StoreIndex, NodeError> {
    use ray_object_store::sizing::{StoreSize, default_size, free_space, size_store};
    let base = ray_object_store::store_base(config.plasma_directory.as_deref());
    let unusable = |detail: String| NodeError::PlasmaDirectory { dir: base.clone(), detail };
    if !base.is_dir() {
        return Err(unusable("it is not a directory".into()));
    }
    let stale = ray_object_store::remove_stale_stores(&base);
    if stale > 0 {
        tracing::info!("removed {stale} object stores left by node daemons that died");
    }
    let free = free_space(&base).map_err(|e| unusable(e.to_string()))?;
    let size = size_store(config.object_store_memory, default_size(), free, &base)?;
    if let StoreSize::Shrunk { from, to } = size {
        tracing::warn!(
            "{} has only {} free, less than the default object store of {}: the store is {}. Give {} more room \
             (for Docker, `--shm-size`), or choose with --object-store-memory and --plasma-directory",
            base.display(),
            format_bytes(free),
            format_bytes(from),
            format_bytes(to),
            base.display()
        );
    }
    let session_name = config.session_dir.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let root = ray_object_store::store_root(&base, &session_name, &hex(&node_id[..4]));
    Ok(StoreIndex::new(root, size.bytes())?)
}

/// Runs a node daemon on `listener` until `stop` resolves or it is told to stop.
/// `on_ready(address, node_id)` runs once the node is registered with the head.
pub async fn run(
    config: NodeConfig,
    listener: tokio::net::TcpListener,
    stop: impl std::future::Future<Output = ()>,
    on_ready: impl FnOnce(&str, &[u8]),
) -> Result<(), NodeError> {
    let address = format!("{}:{}", config.ip, listener.local_addr().map(|a| a.port()).unwrap_or(0));
    let node_id: [u8; 16] = rand::random();
    let store = open_store(&config, &node_id)?;
    let store_capacity = store.capacity();
    if let Err(e) = ray_proto::private::create_dir(&config.session_dir.join("logs")) {
        tracing::warn!("workers' logs are not kept: {e}");
    }
    // Bound before the node registers, so a port that is taken fails the start.
    let metrics_listener = match config.metrics_export_port {
        Some(port) => Some(
            tokio::net::TcpListener::bind((config.ip.as_str(), port))
                .await
                .map_err(|e| NodeError::Metrics { address: format!("{}:{port}", config.ip), detail: e.to_string() })?,
        ),
        None => None,
    };
    let channel = connect(&config.head_address, &config.token, "the head")
        .await
        .map_err(|e| NodeError::Head { address: config.head_address.clone(), detail: e.to_string() })?;
    let head = head_client(channel);
    let (log_tx, log_rx) = mpsc::unbounded_channel();
    let registration = NodeInfo {
        node_id: node_id.to_vec().into(),
        address: address.clone(),
        ip: config.ip.clone(),
        total: resources_from_map(&config.resources),
        available: resources_from_map(&config.resources),
        state: NodeState::Alive.into(),
        session_dir: config.session_dir.display().to_string(),
        object_store_capacity: store_capacity,
        object_store_used: 0,
        pid: std::process::id(),
        start_time_ms: now_ms(),
        num_workers: 0,
        hostname: std::fs::read_to_string("/etc/hostname").map(|s| s.trim().to_string()).unwrap_or_default(),
        is_head: config.is_head,
        pending: Vec::new(),
        host_id: host_id(),
        resource_version: 0,
    };
    let shared = Arc::new(Shared {
        pool: Mutex::new(Pool::new(node_id.to_vec(), config.resources.clone())),
        store: Mutex::new(store),
        jobs: Mutex::new(HashMap::new()),
        head: head.clone(),
        spawner: start_spawner(tokio::runtime::Handle::current()),
        logs: log_tx,
        output: Default::default(),
        shutdown: Notify::new(),
        children: Mutex::new(HashMap::new()),
        cluster: Mutex::new(None),
        pulls: Default::default(),
        channels: Mutex::new(HashMap::new()),
        executables: Default::default(),
        spread_turns: Default::default(),
        node_id: node_id.to_vec(),
        address: address.clone(),
        config: config.clone(),
        registration,
    });
    shared.register().await.map_err(|e| NodeError::Head {
        address: config.head_address.clone(),
        detail: ray_proto::from_status(&e, "the head").to_string(),
    })?;
    on_ready(&address, &node_id);
    let mut background = vec![
        tokio::spawn(heartbeat_loop(shared.clone())),
        tokio::spawn(spill_loop(shared.clone())),
        tokio::spawn(reaper_loop(shared.clone())),
        tokio::spawn(output::publish(log_rx, head)),
    ];
    if let Some(listener) = metrics_listener {
        background.push(tokio::spawn(metrics::serve(listener, shared.clone())));
    }
    let server = ray_proto::authed_server!(NodeServer, NodeService(shared.clone()), &config.token);
    let stopper = shared.clone();
    let stop = async move {
        tokio::select! {
            () = stop => {}
            () = stopper.shutdown.notified() => {}
        }
    };
    let result = match ray_proto::server() {
        Ok(mut grpc) => ray_proto::serve_until(grpc.add_service(server), listener, stop).await.map_err(NodeError::from),
        Err(e) => Err(NodeError::Setup(e)),
    };
    for task in background {
        task.abort();
    }
    shared.kill_all_workers();
    // Wait until every worker has been reaped, so none outlives the node.
    for _ in 0..300 {
        if shared.children.lock().unwrap_or_else(|p| p.into_inner()).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    shared.store().destroy();
    result
}
