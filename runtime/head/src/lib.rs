//! The head: rayrepl's control store, Ray's GCS.
//!
//! Every other process needs one place that knows the cluster: which nodes are
//! alive and what they hold, which jobs (drivers) exist, and what happened to every
//! task, which `rayrepl list`, `status` and `top` read. The head keeps that state in
//! memory behind one gRPC service. It also relays worker output: node daemons
//! publish lines per job and each driver subscribes to its own job's lines, so output
//! reaches the driver whichever node the worker ran on. Placement groups live
//! here too ([`placement_groups`]), as in Ray's GCS.

mod actors;
pub mod artifacts;
mod bundle_placement;
pub mod liveness;
mod placement_groups;

use actors::Actors;
use artifacts::Artifacts;
pub use liveness::NODE_TIMEOUT;
use liveness::{AwakeClock, CHECK_EVERY};
use placement_groups::PlacementGroups;
use ray_abi::PlacementGroupId;
use ray_abi::ids::hex;
use ray_proto::head_server::{Head, HeadServer};
use ray_proto::*;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, broadcast};
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

/// The most a driver's flush waits on any one node.
const LOG_FLUSH_LIMIT: Duration = Duration::from_secs(3);
/// How many task records the head keeps; the oldest finished ones go first.
const MAX_TASKS: usize = 100_000;

struct NodeEntry {
    info: NodeInfo,
    /// When the head last heard from it, on `Tables::clock`.
    last_heartbeat: Duration,
}

#[derive(Default)]
struct Tables {
    nodes: BTreeMap<Vec<u8>, NodeEntry>,
    /// The head's awake time, which node silence is measured on.
    clock: AwakeClock,
    jobs: BTreeMap<u32, JobInfo>,
    submissions: BTreeMap<String, JobSubmission>,
    next_job: u32,
    tasks: HashMap<(Vec<u8>, u32), TaskEvent>,
    task_order: VecDeque<(Vec<u8>, u32)>,
    log_channels: HashMap<u32, broadcast::Sender<LogBatch>>,
}

impl Tables {
    fn record_task(&mut self, ev: TaskEvent) {
        let key = (ev.task_id.to_vec(), ev.attempt);
        match self.tasks.get_mut(&key) {
            Some(existing) => merge_task_event(existing, ev),
            None => {
                self.task_order.push_back(key.clone());
                self.tasks.insert(key, ev);
                while self.task_order.len() > MAX_TASKS {
                    if let Some(old) = self.task_order.pop_front() {
                        self.tasks.remove(&old);
                    }
                }
            }
        }
    }

    fn logs(&mut self, job: u32) -> broadcast::Sender<LogBatch> {
        self.log_channels.entry(job).or_insert_with(|| broadcast::channel(4096).0).clone()
    }
}

/// How far along a task is; a task's recorded state only moves forward.
fn state_rank(state: TaskState) -> u8 {
    match state {
        TaskState::Nil => 0,
        TaskState::PendingArgsAvail => 1,
        TaskState::PendingNodeAssignment => 2,
        TaskState::Running => 3,
        TaskState::Finished | TaskState::Failed => 4,
    }
}

/// Events may arrive out of order (owner and worker report separately); a later
/// state never goes back to an earlier one.
fn merge_task_event(existing: &mut TaskEvent, ev: TaskEvent) {
    if state_rank(ev.state()) >= state_rank(existing.state()) {
        existing.state = ev.state;
        existing.time_ms = ev.time_ms;
    }
    if !ev.node_id.is_empty() {
        existing.node_id = ev.node_id;
    }
    if ev.worker_pid != 0 {
        existing.worker_pid = ev.worker_pid;
    }
    for (mine, theirs) in [
        (&mut existing.creation_time_ms, ev.creation_time_ms),
        (&mut existing.start_time_ms, ev.start_time_ms),
        (&mut existing.end_time_ms, ev.end_time_ms),
    ] {
        if theirs != 0 {
            *mine = theirs;
        }
    }
    if !ev.error_type.is_empty() {
        existing.error_type = ev.error_type;
        existing.error_message = ev.error_message;
    }
    if existing.name.is_empty() {
        existing.name = ev.name;
    }
    if existing.func_name.is_empty() {
        existing.func_name = ev.func_name;
    }
    if existing.required.is_empty() {
        existing.required = ev.required;
    }
    if existing.parent_task_id.is_empty() {
        existing.parent_task_id = ev.parent_task_id;
    }
    if existing.actor_id.is_empty() {
        existing.actor_id = ev.actor_id;
    }
}

/// The head's gRPC service.
#[derive(Clone)]
pub struct HeadService {
    tables: Arc<Mutex<Tables>>,
    address: String,
    session_dir: String,
    start_ms: u64,
    shutdown: Arc<Notify>,
    actors: Actors,
    artifacts: Artifacts,
    groups: PlacementGroups,
}

impl HeadService {
    /// A head that will advertise `address` and `session_dir`, and use `token` to
    /// reach node daemons and workers.
    pub fn new(address: String, session_dir: String, token: &str) -> Self {
        let tables = Arc::new(Mutex::new(Tables { next_job: 1, ..Tables::default() }));
        let cluster: placement_groups::NodeSource = {
            let tables = tables.clone();
            Arc::new(move || {
                let t = tables.lock().unwrap_or_else(|p| p.into_inner());
                t.nodes.values().map(|n| n.info.clone()).collect()
            })
        };
        let record_view: placement_groups::ViewSink = {
            let tables = tables.clone();
            Arc::new(move |node_id: &[u8], view: ResourceView| {
                let mut t = tables.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(n) = t.nodes.get_mut(node_id) {
                    n.info.update_resources(view.version, view.total, view.available);
                }
            })
        };
        let credit: placement_groups::CreditSink = {
            let tables = tables.clone();
            Arc::new(move |node_id: &[u8], freed: &BTreeMap<String, f64>| {
                let mut t = tables.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(n) = t.nodes.get_mut(node_id) {
                    let mut available = resources_to_map(&n.info.available);
                    for (k, v) in freed {
                        *available.entry(k.clone()).or_insert(0.0) += v;
                    }
                    n.info.available = resources_from_map(&available);
                }
            })
        };
        let groups = PlacementGroups::new(token, cluster.clone(), record_view, credit);
        HeadService {
            actors: Actors::new(token, cluster, groups.clone()),
            groups,
            artifacts: Artifacts::new(&session_dir),
            tables,
            address,
            session_dir,
            start_ms: now_ms(),
            shutdown: Arc::new(Notify::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks nodes without recent heartbeats dead and restarts their actors
    /// elsewhere. Returns the ids newly marked.
    pub fn check_node_liveness(&self) -> Vec<Vec<u8>> {
        let dead: Vec<Vec<u8>> = {
            let now = Instant::now();
            let mut guard = self.lock();
            let t = &mut *guard;
            if let Some(stall) = t.clock.check(now) {
                tracing::warn!(
                    "the head could not run for {:.1}s (stopped, swapped out or starved); \
                     that time does not count against the nodes' heartbeats",
                    stall.as_secs_f64()
                );
            }
            let mut dead = Vec::new();
            for (id, n) in t.nodes.iter_mut() {
                if n.info.is_alive() && t.clock.is_silent(n.last_heartbeat, now) {
                    n.info.set_state(NodeState::Dead);
                    dead.push(id.clone());
                }
            }
            dead
        };
        for id in &dead {
            self.actors.node_died(id);
            self.groups.node_died(id);
        }
        dead
    }

    /// Resolves when a client asked the head to shut down.
    pub async fn shutdown_requested(&self) {
        self.shutdown.notified().await
    }
}

type ArtifactStream = std::pin::Pin<Box<dyn Stream<Item = Result<ArtifactChunk, Status>> + Send>>;
type LogStream = std::pin::Pin<Box<dyn Stream<Item = Result<LogBatch, Status>> + Send>>;

#[tonic::async_trait]
impl Head for HeadService {
    async fn register_node(&self, req: Request<RegisterNodeRequest>) -> Result<Response<RegisterNodeReply>, Status> {
        let mut info = req.into_inner().node.ok_or_else(|| Status::invalid_argument("missing node"))?;
        info.set_state(NodeState::Alive);
        let mut t = self.lock();
        match t.nodes.get(info.node_id.as_ref()).map(|n| n.info.state()) {
            // It has already dropped what was moved off it (see the node's `rejoin`).
            Some(NodeState::Dead) => tracing::warn!(
                "node {} at {} came back after it was marked dead; its actors and bundles were moved, \
                 and it takes new work again",
                hex(&info.node_id),
                info.address
            ),
            Some(_) => tracing::info!("node {} at {} registered again", hex(&info.node_id), info.address),
            None => tracing::info!("node {} registered at {}", hex(&info.node_id), info.address),
        }
        let heard = t.clock.at(Instant::now());
        t.nodes.insert(info.node_id.to_vec(), NodeEntry { info, last_heartbeat: heard });
        drop(t);
        // A new node may be what a pending placement group waits for.
        self.groups.kick();
        Ok(Response::new(RegisterNodeReply {}))
    }

    async fn heartbeat(&self, req: Request<HeartbeatRequest>) -> Result<Response<HeartbeatReply>, Status> {
        let hb = req.into_inner();
        let mut guard = self.lock();
        let t = &mut *guard;
        match t.nodes.get_mut(hb.node_id.as_ref()) {
            // Its actors and bundles have been moved: it must drop them before it
            // takes new work, so it registers again (the node's `rejoin`).
            Some(n) if !n.info.is_alive() => Err(Status::failed_precondition(
                "this node was marked dead after missing heartbeats; its actors and placement-group bundles \
                 were moved to other nodes. Stop them here and register again",
            )),
            Some(n) => {
                n.last_heartbeat = t.clock.at(Instant::now());
                n.info.update_resources(hb.resource_version, hb.total, hb.available);
                n.info.object_store_used = hb.object_store_used;
                n.info.num_workers = hb.num_workers;
                n.info.pending = hb.pending;
                Ok(Response::new(HeartbeatReply {}))
            }
            None => Err(Status::not_found("unknown node; register first")),
        }
    }

    async fn get_cluster_info(&self, _: Request<Empty>) -> Result<Response<ClusterInfo>, Status> {
        let t = self.lock();
        Ok(Response::new(ClusterInfo {
            nodes: t.nodes.values().map(|n| n.info.clone()).collect(),
            head_address: self.address.clone(),
            session_dir: self.session_dir.clone(),
            head_start_time_ms: self.start_ms,
            version: env!("CARGO_PKG_VERSION").to_string(),
        }))
    }

    async fn register_job(&self, req: Request<RegisterJobRequest>) -> Result<Response<RegisterJobReply>, Status> {
        let mut job = req.into_inner().job.ok_or_else(|| Status::invalid_argument("missing job"))?;
        let mut t = self.lock();
        let id = t.next_job;
        t.next_job += 1;
        job.job_id = id;
        job.set_status(JobStatus::Running);
        job.start_time_ms = now_ms();
        t.jobs.insert(id, job);
        Ok(Response::new(RegisterJobReply { job_id: id }))
    }

    async fn finish_job(&self, req: Request<FinishJobRequest>) -> Result<Response<Empty>, Status> {
        let id = req.into_inner().job_id;
        let mut t = self.lock();
        if let Some(j) = t.jobs.get_mut(&id) {
            j.set_status(JobStatus::Succeeded);
            j.end_time_ms = now_ms();
        }
        t.log_channels.remove(&id);
        drop(t);
        let actors = self.actors.clone();
        let groups = self.groups.clone();
        tokio::spawn(async move {
            actors.job_finished(id).await;
            groups.job_finished(id);
        });
        Ok(Response::new(Empty {}))
    }

    async fn get_job(&self, req: Request<GetJobRequest>) -> Result<Response<JobInfo>, Status> {
        let id = req.into_inner().job_id;
        self.lock().jobs.get(&id).cloned().map(Response::new).ok_or_else(|| Status::not_found(format!("no job {id}")))
    }

    async fn list_jobs(&self, _: Request<Empty>) -> Result<Response<ListJobsReply>, Status> {
        let t = self.lock();
        Ok(Response::new(ListJobsReply {
            jobs: t.jobs.values().cloned().collect(),
            submissions: t.submissions.values().cloned().collect(),
        }))
    }

    async fn put_job_submission(&self, req: Request<JobSubmission>) -> Result<Response<Empty>, Status> {
        let job = req.into_inner();
        if job.submission_id.is_empty() {
            return Err(Status::invalid_argument("a job submission needs a submission id"));
        }
        self.lock().submissions.insert(job.submission_id.clone(), job);
        Ok(Response::new(Empty {}))
    }

    async fn delete_job_submission(&self, req: Request<DeleteJobSubmissionRequest>) -> Result<Response<Empty>, Status> {
        let id = req.into_inner().submission_id;
        match self.lock().submissions.remove(&id) {
            Some(_) => Ok(Response::new(Empty {})),
            None => Err(Status::not_found(format!("no submitted job {id}"))),
        }
    }

    async fn report_task_events(&self, req: Request<TaskEventBatch>) -> Result<Response<Empty>, Status> {
        let events = req.into_inner().events;
        // An event without a state (or with one this head does not know) says
        // nothing about the task: refuse the batch rather than guess.
        if let Some(bad) =
            events.iter().find(|ev| !matches!(TaskState::try_from(ev.state), Ok(s) if s != TaskState::Nil))
        {
            return Err(Status::invalid_argument(format!(
                "task {} reported without a known state ({})",
                hex(&bad.task_id),
                bad.state
            )));
        }
        let mut t = self.lock();
        for ev in events {
            t.record_task(ev);
        }
        Ok(Response::new(Empty {}))
    }

    async fn list_tasks(&self, req: Request<ListTasksRequest>) -> Result<Response<ListTasksReply>, Status> {
        let r = req.into_inner();
        let limit = match r.limit {
            0 => usize::MAX,
            n => n as usize,
        };
        let t = self.lock();
        let records = t.task_order.iter().filter_map(|k| t.tasks.get(k));
        let tasks = if r.newest {
            let mut newest: Vec<TaskEvent> = records.rev().take(limit).cloned().collect();
            newest.reverse();
            newest
        } else {
            records.take(limit).cloned().collect()
        };
        // Counted here, without copying the records: a live page wants the
        // numbers for every record and only the newest few whole.
        let counts = if r.counts {
            let mut counts: HashMap<(&str, i32), u64> = HashMap::new();
            for ev in t.tasks.values() {
                *counts.entry((ev.name.as_str(), ev.state)).or_default() += 1;
            }
            counts
                .into_iter()
                .map(|((name, state), count)| TaskCount { name: name.to_string(), state, count })
                .collect()
        } else {
            Vec::new()
        };
        Ok(Response::new(ListTasksReply { tasks, counts, total: t.tasks.len() as u64 }))
    }

    async fn publish_logs(&self, req: Request<LogBatch>) -> Result<Response<Empty>, Status> {
        let batch = req.into_inner();
        let sender = self.lock().logs(batch.job_id);
        // No subscriber is fine: the lines are also in the node's log files.
        let _ = sender.send(batch);
        Ok(Response::new(Empty {}))
    }

    type SubscribeLogsStream = LogStream;

    async fn subscribe_logs(
        &self,
        req: Request<SubscribeLogsRequest>,
    ) -> Result<Response<Self::SubscribeLogsStream>, Status> {
        let job = req.into_inner().job_id;
        let rx = self.lock().logs(job).subscribe();
        let stream = BroadcastStream::new(rx).filter_map(|item| item.ok().map(Ok));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn flush_logs(&self, req: Request<FlushLogsRequest>) -> Result<Response<Empty>, Status> {
        let r = req.into_inner();
        let (sender, nodes) = {
            let mut t = self.lock();
            let nodes: Vec<String> =
                t.nodes.values().filter(|n| n.info.is_alive()).map(|n| n.info.address.clone()).collect();
            (t.logs(r.job_id), nodes)
        };
        // Nobody to put in order: the lines are in the nodes' log files.
        if sender.receiver_count() == 0 {
            return Ok(Response::new(Empty {}));
        }
        let asks = nodes.into_iter().map(|address| {
            let node = self.actors.node(&address);
            let request = FlushLogsRequest { job_id: r.job_id, flush: r.flush };
            async move {
                let answered =
                    async { node.map_err(|e| e.to_string())?.flush_logs(request).await.map_err(|s| s.to_string()) };
                match tokio::time::timeout(LOG_FLUSH_LIMIT, answered).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::debug!("node {address} did not flush its worker output: {e}"),
                    Err(_) => {
                        tracing::warn!("node {address} did not flush its worker output within {LOG_FLUSH_LIMIT:?}")
                    }
                }
            }
        });
        futures_util::future::join_all(asks).await;
        // After every node's lines, on the same stream: the driver's mark.
        let _ = sender.send(LogBatch { job_id: r.job_id, lines: Vec::new(), flush: r.flush });
        Ok(Response::new(Empty {}))
    }

    async fn create_actor(&self, req: Request<CreateActorRequest>) -> Result<Response<ActorInfo>, Status> {
        let spec = req.into_inner().spec.ok_or_else(|| Status::invalid_argument("missing actor spec"))?;
        self.actors.create(spec).map(Response::new).map_err(|e| to_status(&e))
    }

    async fn get_actor(&self, req: Request<GetActorRequest>) -> Result<Response<ActorInfo>, Status> {
        let r = req.into_inner();
        self.actors.get(&r.actor_id, r.wait, r.min_incarnation).await.map(Response::new).map_err(|e| to_status(&e))
    }

    async fn get_named_actor(&self, req: Request<GetNamedActorRequest>) -> Result<Response<ActorInfo>, Status> {
        let r = req.into_inner();
        self.actors.named(&r.name, &r.namespace).map(Response::new).map_err(|e| to_status(&e))
    }

    async fn kill_actor(&self, req: Request<KillActorRequest>) -> Result<Response<Empty>, Status> {
        let r = req.into_inner();
        self.actors.kill(&r.actor_id, r.no_restart).await.map_err(|e| to_status(&e))?;
        Ok(Response::new(Empty {}))
    }

    async fn actor_exited(&self, req: Request<ActorExitedRequest>) -> Result<Response<Empty>, Status> {
        self.actors.exiting(&req.into_inner().actor_id);
        Ok(Response::new(Empty {}))
    }

    async fn list_actors(&self, _: Request<Empty>) -> Result<Response<ListActorsReply>, Status> {
        Ok(Response::new(ListActorsReply { actors: self.actors.list() }))
    }

    async fn worker_died(&self, req: Request<WorkerDiedRequest>) -> Result<Response<Empty>, Status> {
        let r = req.into_inner();
        self.actors.worker_died(&r.worker_id, r.pid, &r.detail);
        Ok(Response::new(Empty {}))
    }

    async fn create_placement_groups(
        &self,
        req: Request<CreatePlacementGroupsRequest>,
    ) -> Result<Response<PlacementGroupsReply>, Status> {
        let errors =
            req.into_inner().groups.into_iter().map(|info| refusal(self.groups.create(info).map(drop))).collect();
        Ok(Response::new(PlacementGroupsReply { errors }))
    }

    async fn remove_placement_groups(
        &self,
        req: Request<RemovePlacementGroupsRequest>,
    ) -> Result<Response<PlacementGroupsReply>, Status> {
        let mut errors = Vec::new();
        for id in req.into_inner().placement_group_ids {
            let removed = match PlacementGroupId::from_bytes(&id) {
                Ok(id) => {
                    // Its actors go first, so none is restarted into the freed resources.
                    self.actors.placement_group_removed(&id).await;
                    self.groups.remove(&id)
                }
                Err(e) => Err(e),
            };
            errors.push(refusal(removed));
        }
        Ok(Response::new(PlacementGroupsReply { errors }))
    }

    async fn get_placement_group(
        &self,
        req: Request<GetPlacementGroupRequest>,
    ) -> Result<Response<PlacementGroupInfo>, Status> {
        let r = req.into_inner();
        let not_found = |what: String| Status::not_found(format!("no placement group {what}"));
        let id = if r.placement_group_id.is_empty() {
            let info = self
                .groups
                .named(&r.namespace, &r.name)
                .ok_or_else(|| not_found(format!("named {:?} in namespace {:?}", r.name, r.namespace)))?;
            info.id().map_err(|e| to_status(&e))?
        } else {
            PlacementGroupId::from_bytes(&r.placement_group_id).map_err(|e| to_status(&e))?
        };
        let info = if r.wait {
            let timeout = u64::try_from(r.timeout_ms).ok().map(Duration::from_millis);
            self.groups.wait(&id, timeout).await
        } else {
            self.groups.get(&id)
        };
        info.map(Response::new).ok_or_else(|| not_found(id.to_string()))
    }

    async fn list_placement_groups(&self, _: Request<Empty>) -> Result<Response<ListPlacementGroupsReply>, Status> {
        Ok(Response::new(ListPlacementGroupsReply { groups: self.groups.list() }))
    }

    async fn put_artifact(
        &self,
        req: Request<tonic::Streaming<ArtifactChunk>>,
    ) -> Result<Response<PutArtifactReply>, Status> {
        let stored = self.artifacts.put(req.into_inner()).await?;
        Ok(Response::new(PutArtifactReply { stored }))
    }

    type GetArtifactStream = ArtifactStream;

    async fn get_artifact(
        &self,
        req: Request<GetArtifactRequest>,
    ) -> Result<Response<Self::GetArtifactStream>, Status> {
        let chunks = self.artifacts.get(&req.into_inner().hash).await?;
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks.into_iter().map(Ok)))))
    }

    async fn shutdown(&self, _: Request<Empty>) -> Result<Response<Empty>, Status> {
        self.shutdown.notify_waiters();
        self.shutdown.notify_one();
        Ok(Response::new(Empty {}))
    }
}

/// One group's entry in a [`PlacementGroupsReply`]: empty, or why not.
fn refusal(result: Result<(), ray_abi::RayError>) -> bytes::Bytes {
    result.err().map(|e| e.to_bytes().into()).unwrap_or_default()
}

/// Serves the head on `listener` until a client asks it to shut down or `stop`
/// resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    token: &str,
    session_dir: String,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), ray_proto::ServeError> {
    let mut grpc = ray_proto::server()?;
    let address = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    let service = HeadService::new(address, session_dir, token);
    let reserver = tokio::spawn(service.groups.clone().run());
    let liveness = service.clone();
    let monitor = tokio::spawn(async move {
        let mut tick = tokio::time::interval(CHECK_EVERY);
        // After a stall, one check, not a burst: the clock counts the gap once.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            for id in liveness.check_node_liveness() {
                tracing::warn!("node {} missed its heartbeats; marked dead", hex(&id));
            }
        }
    });
    let shutdown = service.clone();
    let server = ray_proto::authed_server!(HeadServer, service, token);
    let stop = async move {
        tokio::select! {
            () = stop => {}
            () = shutdown.shutdown_requested() => {}
        }
    };
    let result = ray_proto::serve_until(grpc.add_service(server), listener, stop).await;
    monitor.abort();
    reserver.abort();
    Ok(result?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_states_never_go_backwards() {
        let mut t = Tables::default();
        let ev = |state: TaskState| TaskEvent {
            task_id: vec![1; 16].into(),
            state: state.into(),
            name: "f".into(),
            ..TaskEvent::default()
        };
        t.record_task(ev(TaskState::Running));
        t.record_task(ev(TaskState::PendingNodeAssignment));
        assert_eq!(t.tasks.values().next().unwrap().state(), TaskState::Running);
        t.record_task(ev(TaskState::Finished));
        assert_eq!(t.tasks.values().next().unwrap().state(), TaskState::Finished);
        assert_eq!(t.tasks.len(), 1);
    }

    fn service() -> HeadService {
        HeadService::new("127.0.0.1:1".into(), std::env::temp_dir().display().to_string(), "token")
    }

    #[tokio::test]
    async fn a_listing_gives_the_newest_records_and_counts_them_all() {
        let head = service();
        let ev = |i: u8, name: &str, state: TaskState| TaskEvent {
            task_id: vec![i; 16].into(),
            name: name.into(),
            state: state.into(),
            ..TaskEvent::default()
        };
        let batch = TaskEventBatch {
            events: vec![
                ev(1, "f", TaskState::Finished),
                ev(2, "f", TaskState::Finished),
                ev(3, "g", TaskState::Running),
                ev(4, "f", TaskState::Failed),
            ],
        };
        head.report_task_events(Request::new(batch)).await.unwrap();
        let list = |limit, newest, counts| {
            let head = head.clone();
            async move {
                head.list_tasks(Request::new(ListTasksRequest { limit, newest, counts })).await.unwrap().into_inner()
            }
        };
        let oldest = list(2, false, false).await;
        assert_eq!(oldest.tasks.iter().map(|t| t.task_id[0]).collect::<Vec<_>>(), [1, 2]);
        assert!(oldest.counts.is_empty());
        let newest = list(2, true, true).await;
        assert_eq!(newest.tasks.iter().map(|t| t.task_id[0]).collect::<Vec<_>>(), [3, 4], "newest, oldest first");
        assert_eq!(newest.total, 4);
        let mut counts: Vec<(String, i32, u64)> =
            newest.counts.into_iter().map(|c| (c.name, c.state, c.count)).collect();
        counts.sort();
        let want = [("f", TaskState::Finished, 2), ("f", TaskState::Failed, 1), ("g", TaskState::Running, 1)];
        let mut want: Vec<(String, i32, u64)> = want.iter().map(|(n, s, c)| (n.to_string(), *s as i32, *c)).collect();
        want.sort();
        assert_eq!(counts, want);
    }

    #[tokio::test]
    async fn events_without_a_state_are_refused() {
        let head = service();
        let ev = |state: i32| TaskEvent { task_id: vec![2; 16].into(), state, ..TaskEvent::default() };
        for state in [TaskState::Nil as i32, 99] {
            let batch = TaskEventBatch { events: vec![ev(TaskState::Running.into()), ev(state)] };
            let err = head.report_task_events(Request::new(batch)).await.unwrap_err();
            assert_eq!(err.code(), tonic::Code::InvalidArgument);
        }
        assert!(head.lock().tasks.is_empty(), "nothing of a refused batch is recorded");
        let batch = TaskEventBatch { events: vec![ev(TaskState::Running.into())] };
        head.report_task_events(Request::new(batch)).await.unwrap();
        assert_eq!(head.lock().tasks.len(), 1);
    }

    #[tokio::test]
    async fn a_job_runs_until_its_driver_finishes_it() {
        let head = service();
        let job = JobInfo { status: JobStatus::Succeeded.into(), ..JobInfo::default() };
        let id =
            head.register_job(Request::new(RegisterJobRequest { job: Some(job) })).await.unwrap().into_inner().job_id;
        let status = |head: &HeadService| head.lock().jobs[&id].status();
        assert_eq!(status(&head), JobStatus::Running, "the head, not the driver, sets the status");
        head.finish_job(Request::new(FinishJobRequest { job_id: id })).await.unwrap();
        assert_eq!(status(&head), JobStatus::Succeeded);
    }

    #[tokio::test]
    async fn a_node_marked_dead_is_refused_until_it_registers_again() {
        let head = service();
        let id = vec![7; 16];
        let node = NodeInfo { node_id: id.clone().into(), state: NodeState::Dead.into(), ..NodeInfo::default() };
        head.register_node(Request::new(RegisterNodeRequest { node: Some(node.clone()) })).await.unwrap();
        let state = |head: &HeadService| head.lock().nodes[&id].info.state();
        assert_eq!(state(&head), NodeState::Alive, "registering makes a node alive");
        // The head has been running, checking, for twice the timeout since it heard.
        let start = Instant::now() - NODE_TIMEOUT * 2;
        let mut clock = AwakeClock::new(start);
        let mut t = start;
        while t + CHECK_EVERY < Instant::now() {
            t += CHECK_EVERY;
            clock.check(t);
        }
        head.lock().clock = clock;
        head.lock().nodes.get_mut(&id).unwrap().last_heartbeat = Duration::ZERO;
        assert_eq!(head.check_node_liveness(), vec![id.clone()]);
        assert_eq!(state(&head), NodeState::Dead);
        let beat = HeartbeatRequest { node_id: id.clone().into(), ..HeartbeatRequest::default() };
        let err = head.heartbeat(Request::new(beat.clone())).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::FailedPrecondition, "a dead node must register again first");
        assert_eq!(state(&head), NodeState::Dead);
        head.register_node(Request::new(RegisterNodeRequest { node: Some(node) })).await.unwrap();
        head.heartbeat(Request::new(beat)).await.unwrap();
        assert_eq!(state(&head), NodeState::Alive, "it came back");
    }

    #[tokio::test]
    async fn a_stalled_head_does_not_kill_the_nodes_it_could_not_hear() {
        let head = service();
        let node = NodeInfo { node_id: vec![8; 16].into(), ..NodeInfo::default() };
        head.register_node(Request::new(RegisterNodeRequest { node: Some(node) })).await.unwrap();
        // The head's last check, and the node's last heartbeat, were a minute ago.
        head.lock().clock = AwakeClock::new(Instant::now() - Duration::from_secs(60));
        assert!(head.check_node_liveness().is_empty());
        assert_eq!(head.lock().nodes[&vec![8; 16]].info.state(), NodeState::Alive);
    }
}
