//! Calling actors: creating them through the head, finding their workers, and
//! sending method calls in order.
//!
//! Each caller numbers its calls to an actor (per incarnation of the actor), sends
//! them without waiting for earlier replies, and the actor's worker runs them in
//! that order. If the actor's process dies, in-flight calls fail, or are resent to
//! the restarted actor up to `max_task_retries` times; the caller learns where the
//! actor went, or why it is dead, by asking the head.

use crate::call_stream::Calls;
use crate::refs::State;
use crate::{CoreWorker, block_on, lock};
use ray_abi::{ActorCall, ActorCreation, ActorId, ActorRef, ArgSubmission, ObjectId, RayError, TaskId, TaskOptions};
use ray_proto::*;
use std::collections::VecDeque;

/// Calls one caller keeps in flight to one actor; more wait in the queue. This is
/// backpressure, like Ray's `max_pending_calls`: an unbounded burst would open more
/// HTTP/2 streams than the actor's server accepts.
const MAX_IN_FLIGHT: usize = 256;

/// What a caller knows about one actor.
#[derive(Default)]
pub(crate) struct ActorConn {
    info: Option<ActorInfo>,
    resolving: bool,
    /// Next sequence number for this incarnation.
    seq: u64,
    incarnation: u32,
    /// The incarnation we need next, after seeing the actor's worker die.
    min_incarnation: u32,
    /// Calls not yet sent, in submission order.
    pub(crate) queue: VecDeque<TaskId>,
    calls: Option<Calls>,
    dead: Option<RayError>,
    in_flight: usize,
}

fn actor_id(b: &[u8]) -> ActorId {
    ActorId(b.try_into().unwrap_or_default())
}

impl CoreWorker {
    /// The namespace named actors are looked up in: the job's.
    pub fn namespace(&self) -> String {
        if let Some(ns) = lock(&self.0.namespace).clone() {
            return ns;
        }
        let mut head = self.0.head.clone();
        let job = self.0.job.0;
        let ns = block_on(&self.0.rt, async move { head.get_job(GetJobRequest { job_id: job }).await })
            .map(|r| r.into_inner().namespace)
            .unwrap_or_default();
        let ns = if ns.is_empty() { format!("anonymous-{job}") } else { ns };
        *lock(&self.0.namespace) = Some(ns.clone());
        ns
    }

    /// Creates an actor (Ray's `Actor.remote()`); with `get_if_exists`, may return
    /// the id of an existing actor of the same name.
    pub fn create_actor(&self, creation: ActorCreation) -> Result<ActorId, RayError> {
        // The constructor's ref arguments must exist: wait for them here.
        for a in &creation.args {
            if let ArgSubmission::Ref(id) = a {
                self.get(id, None)?;
            }
        }
        let args = self.build_args(&creation.args)?;
        // The head may restart the actor with these arguments at any time: keep
        // the objects they refer to alive for the actor's life.
        for a in &creation.args {
            match a {
                ArgSubmission::Ref(id) => self.pin(&[*id]),
                ArgSubmission::Value { contained, .. } => self.pin(contained),
            }
        }
        let id = ActorId(TaskId::generate(self.0.job, self.0.salt).0);
        let namespace = creation.options.namespace.clone().unwrap_or_else(|| self.namespace());
        let concurrency = creation.options.max_concurrency.unwrap_or(if creation.is_async { 1000 } else { 1 });
        let spec = ActorSpec {
            actor_id: id.0.to_vec().into(),
            job_id: self.0.job.0,
            class_name: creation.class.clone(),
            constructor: Some(ray_proto::FunctionDescriptor {
                name: creation.constructor.name,
                key: creation.constructor.key,
                symbol: creation.constructor.symbol,
                artifact: creation.constructor.artifact.unwrap_or_default(),
            }),
            args,
            resources: resources_from_map(&creation.options.resource_demand()),
            max_restarts: creation.options.max_restarts.unwrap_or(0),
            max_task_retries: creation.options.max_task_retries.unwrap_or(0),
            max_concurrency: concurrency.max(1),
            is_async: creation.is_async,
            name: creation.options.name.clone().unwrap_or_default(),
            namespace,
            detached: creation.options.detached,
            owner_address: self.0.address.clone(),
            get_if_exists: creation.options.get_if_exists,
        };
        let mut head = self.0.head.clone();
        let info =
            block_on(&self.0.rt, async move { head.create_actor(CreateActorRequest { spec: Some(spec) }).await })
                .map_err(|s| from_status(&s, "the head"))?
                .into_inner();
        Ok(actor_id(&info.actor_id))
    }

    /// Calls an actor method; returns the ref to its result, owned here.
    pub fn call_actor(&self, call: ActorCall) -> Result<ObjectId, RayError> {
        let options = TaskOptions { num_cpus: Some(0.0), max_retries: Some(0), ..TaskOptions::default() };
        self.submit_inner(call.method, call.args, options, Some(call.actor))
    }

    /// Sends queued calls whose arguments are ready, in order; finds the actor first
    /// if needed.
    pub(crate) fn pump_actor(&self, actor: ActorId) {
        let mut sends = Vec::new();
        let mut failed = Vec::new();
        let mut resolve = None;
        {
            let mut sched = lock(&self.0.sched);
            let sched = &mut *sched;
            let conn = sched.actors.entry(actor).or_default();
            if let Some(err) = &conn.dead {
                failed = conn.queue.drain(..).map(|t| (t, err.clone())).collect();
            } else if conn.calls.is_none() {
                if !conn.resolving && !conn.queue.is_empty() {
                    conn.resolving = true;
                    resolve = Some(conn.min_incarnation);
                }
            } else {
                while conn.in_flight < MAX_IN_FLIGHT
                    && let Some(tid) = conn.queue.front().copied()
                {
                    let Some(task) = sched.tasks.get_mut(&tid) else {
                        conn.queue.pop_front();
                        continue;
                    };
                    if task.cancelled {
                        conn.queue.pop_front();
                        continue;
                    }
                    let Some(spec) = task.spec.as_mut() else { break };
                    conn.queue.pop_front();
                    spec.actor_task = Some(ActorTaskSpec {
                        actor_id: actor.0.to_vec().into(),
                        seq: conn.seq,
                        incarnation: conn.incarnation,
                    });
                    conn.seq += 1;
                    conn.in_flight += 1;
                    let spec = spec.clone();
                    let pid = conn.info.as_ref().map(|i| i.pid).unwrap_or(0);
                    task.running = Some((pid, 0));
                    let mut running = crate::submit::running_event(task, self.0.job.0, pid);
                    running.node_id = conn.info.as_ref().map(|i| i.node_id.clone()).unwrap_or_default();
                    lock(&self.0.events).push(running);
                    let calls = conn.calls.clone().expect("checked above");
                    let address = conn.info.as_ref().map(|i| i.address.clone()).unwrap_or_default();
                    sends.push((tid, calls, spec, conn.incarnation, address));
                }
            }
        }
        for (tid, err) in failed {
            self.finish(tid, State::Failed(err), None);
        }
        if let Some(min) = resolve {
            let cw = self.clone();
            self.0.rt.spawn(async move { cw.resolve_actor(actor, min).await });
        }
        for (tid, calls, spec, incarnation, address) in sends {
            let cw = self.clone();
            calls.send(&self.0.rt, spec, move |result| async move {
                cw.actor_replied(actor, tid, incarnation, &address, result).await
            });
        }
    }

    /// The actor's record once it is alive at `min_incarnation` or later, or dead.
    /// A broken connection need not mean a dead actor: if nothing changes for a
    /// while, the current record is returned.
    async fn settled_actor(&self, actor: ActorId, min_incarnation: u32) -> Result<ActorInfo, tonic::Status> {
        let mut head = self.0.head.clone();
        let id: bytes::Bytes = actor.0.to_vec().into();
        let wait = GetActorRequest { actor_id: id.clone(), wait: true, min_incarnation };
        match tokio::time::timeout(std::time::Duration::from_secs(10), head.get_actor(wait)).await {
            Ok(r) => r.map(|r| r.into_inner()),
            Err(_) => {
                let now = GetActorRequest { actor_id: id, wait: false, min_incarnation: 0 };
                head.get_actor(now).await.map(|r| r.into_inner())
            }
        }
    }

    /// Asks the head where the actor lives (waiting while it starts or restarts).
    async fn resolve_actor(&self, actor: ActorId, min_incarnation: u32) {
        let result = self.settled_actor(actor, min_incarnation).await;
        let calls = match &result {
            Ok(info) if info.state() != ActorState::Dead => {
                let what = format!("actor {}", info.class_name);
                Some(Calls::open(self, &info.direct_address, &info.address, &what).await)
            }
            _ => None,
        };
        {
            let mut sched = lock(&self.0.sched);
            let conn = sched.actors.entry(actor).or_default();
            conn.resolving = false;
            match result {
                Err(s) => conn.dead = Some(from_status(&s, "the head")),
                Ok(info) => {
                    conn.min_incarnation = info.incarnation;
                    if info.state() == ActorState::Dead {
                        conn.dead = Some(RayError::from_bytes(&info.death_error));
                    } else {
                        match calls.expect("opened for a live actor") {
                            Ok(calls) => conn.calls = Some(calls),
                            Err(e) => conn.dead = Some(e),
                        }
                        if info.incarnation != conn.incarnation {
                            conn.incarnation = info.incarnation;
                            conn.seq = 0;
                        }
                        conn.info = Some(info);
                    }
                }
            }
        }
        self.pump_actor(actor);
    }

    /// A call's reply, or the failure of the connection it was sent on.
    async fn actor_replied(
        &self,
        actor: ActorId,
        tid: TaskId,
        incarnation: u32,
        address: &str,
        result: Result<PushTaskReply, tonic::Status>,
    ) {
        if let Some(conn) = lock(&self.0.sched).actors.get_mut(&actor) {
            conn.in_flight = conn.in_flight.saturating_sub(1);
        }
        match result {
            Ok(reply) => {
                self.task_replied(tid, address, reply).await;
                self.pump_actor(actor);
            }
            Err(status) => {
                let status = status.message().to_string();
                // The actor's process died under this call.
                let (retry, max_retries) = {
                    let mut sched = lock(&self.0.sched);
                    let max =
                        sched.actors.get(&actor).and_then(|c| c.info.as_ref()).map(|i| i.max_task_retries).unwrap_or(0);
                    let conn = sched.actors.entry(actor).or_default();
                    if conn.incarnation == incarnation {
                        conn.calls = None;
                        conn.info = None;
                        conn.min_incarnation = incarnation + 1;
                    }
                    let retry = match sched.tasks.get_mut(&tid) {
                        Some(t) if !t.cancelled && (max < 0 || (t.attempt as i32) < max) => {
                            t.attempt += 1;
                            true
                        }
                        _ => false,
                    };
                    if retry {
                        let conn = sched.actors.entry(actor).or_default();
                        let pos = conn.queue.iter().position(|q| *q > tid).unwrap_or(conn.queue.len());
                        conn.queue.insert(pos, tid);
                    }
                    (retry, max)
                };
                if !retry {
                    let err = match self.settled_actor(actor, incarnation + 1).await {
                        Ok(info) if info.state() == ActorState::Dead => RayError::from_bytes(&info.death_error),
                        Ok(info) if info.incarnation == incarnation => RayError::Connection {
                            what: format!("actor {}", info.class_name),
                            detail: format!(
                                "the connection broke while this call ran ({status}); the actor is still alive"
                            ),
                        },
                        Ok(info) => RayError::ActorDied {
                            class: info.class_name.clone(),
                            actor_id: actor.to_string(),
                            cause: format!(
                                "its process died while running this call; the actor restarted, but \
                                 max_task_retries={max_retries} does not allow resending the call"
                            ),
                        },
                        Err(s) => from_status(&s, "the head"),
                    };
                    self.finish(tid, State::Failed(err), None);
                }
                self.pump_actor(actor);
            }
        }
    }

    /// `ray::kill`.
    pub fn kill_actor(&self, actor: &ActorId, no_restart: bool) -> Result<(), RayError> {
        let mut head = self.0.head.clone();
        let req = KillActorRequest { actor_id: actor.0.to_vec().into(), no_restart };
        block_on(&self.0.rt, async move { head.kill_actor(req).await }).map_err(|s| from_status(&s, "the head"))?;
        Ok(())
    }

    /// `ray::get_actor`: a live named actor in `namespace` (default: ours).
    pub fn get_named_actor(&self, name: &str, namespace: Option<&str>) -> Result<ActorRef, RayError> {
        let namespace = namespace.map(str::to_string).unwrap_or_else(|| self.namespace());
        let mut head = self.0.head.clone();
        let req = GetNamedActorRequest { name: name.to_string(), namespace };
        let info = block_on(&self.0.rt, async move { head.get_named_actor(req).await })
            .map_err(|s| from_status(&s, "the head"))?
            .into_inner();
        Ok(ActorRef { id: actor_id(&info.actor_id), class: info.class_name })
    }
}
