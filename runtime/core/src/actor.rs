//! Actors through the head: creating them, finding named ones, and killing them.
//!
//! Calls to an actor are tasks that go to its worker in order; the scheduler
//! ([`crate::scheduler`]) and its driver ([`crate::owner`]) send them.

use crate::{CoreWorker, block_on, lock};
use ray_abi::{ActorCreation, ActorId, ActorRef, ArgSubmission, RayError, TaskId};
use ray_proto::*;

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
        self.flush_group_calls();
        let (resources, steering) =
            self.steer(&creation.options.scheduling_strategy, creation.options.resource_demand())?;
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
            constructor: Some(creation.constructor.into()),
            args,
            resources: resources_from_map(&resources),
            max_restarts: creation.options.max_restarts.unwrap_or(0),
            max_task_retries: creation.options.max_task_retries.unwrap_or(0),
            max_concurrency: concurrency.max(1),
            is_async: creation.is_async,
            name: creation.options.name.clone().unwrap_or_default(),
            namespace,
            detached: creation.options.detached,
            owner_address: self.0.address.clone(),
            get_if_exists: creation.options.get_if_exists,
            placement_group: steering.group,
            strategy: steering.lease,
        };
        let mut head = self.0.head.clone();
        let info =
            block_on(&self.0.rt, async move { head.create_actor(CreateActorRequest { spec: Some(spec) }).await })
                .map_err(|s| from_status(&s, "the head"))?
                .into_inner();
        if !info.infeasible.is_empty() {
            // Said where the user looks, as Ray's autoscaler says it.
            eprintln!("(autoscaler) Warning: {}", info.infeasible);
        }
        ActorId::from_bytes(&info.actor_id)
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
        Ok(ActorRef { id: ActorId::from_bytes(&info.actor_id)?, class: info.class_name })
    }
}
