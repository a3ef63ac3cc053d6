//! The actor manager: actors live in the head, as in Ray's GCS.
//!
//! An actor must outlive the process that created it (detached actors outlive its
//! whole job) and must come back after a crash, so its lifecycle cannot belong to
//! its creator. The head keeps every actor's spec, leases a dedicated worker for it
//! from a node daemon, runs its constructor there, and watches for the worker's
//! death, or its whole node's: then it restarts the actor (`max_restarts`), on
//! another node if its own is gone, or marks it dead with the reason, which every
//! later call reports. Callers ask the head where an actor lives and then talk to
//! its worker directly.

use crate::placement_groups::PlacementGroups;
use ray_abi::ids::hex;
use ray_abi::{PlacementGroupId, RayError};
use ray_proto::groups;
use ray_proto::*;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::watch;

/// One actor's record.
struct ActorEntry {
    spec: ActorSpec,
    info: ActorInfo,
    worker_id: Vec<u8>,
    lease_id: u64,
    node_address: String,
    /// Set by `ray::kill` or `exit_actor`: do not restart, and report this.
    final_cause: Option<RayError>,
}

impl ActorEntry {
    fn new(spec: ActorSpec, info: ActorInfo) -> Self {
        ActorEntry { spec, info, worker_id: Vec::new(), lease_id: 0, node_address: String::new(), final_cause: None }
    }

    /// The actor's constructor returned on the worker at `address`: it is ALIVE,
    /// unless it was buried meanwhile. Returns whether it is.
    fn started(&mut self, address: String, direct_address: String) -> bool {
        match self.info.state() {
            // Killed, or its node died, while the constructor ran.
            ActorState::Dead => false,
            ActorState::Nil | ActorState::PendingCreation | ActorState::Restarting | ActorState::Alive => {
                self.info.set_state(ActorState::Alive);
                self.info.address = address;
                self.info.direct_address = direct_address;
                true
            }
        }
    }

    /// The actor is dead for good, for `err`.
    fn bury(&mut self, err: &RayError) {
        self.info.set_state(ActorState::Dead);
        self.info.death_error = err.to_bytes().into();
        self.info.address.clear();
        self.info.direct_address.clear();
    }

    /// The actor's worker is gone (`why`): RESTARTING if `max_restarts` allows
    /// another incarnation and nobody asked it to stay dead, else DEAD. Returns
    /// whether to place it again.
    fn lost(&mut self, why: &str) -> bool {
        match self.info.state() {
            ActorState::Dead => return false,
            ActorState::Nil | ActorState::PendingCreation | ActorState::Alive | ActorState::Restarting => {}
        }
        self.worker_id.clear();
        let max = self.spec.max_restarts;
        if let Some(cause) = self.final_cause.clone() {
            self.bury(&cause);
            false
        } else if max < 0 || (self.info.num_restarts as i32) < max {
            self.info.set_state(ActorState::Restarting);
            self.info.address.clear();
            self.info.direct_address.clear();
            self.info.num_restarts += 1;
            self.info.incarnation += 1;
            true
        } else {
            let why = format!("{why} and max_restarts={max} allows no more restarts");
            let err = died(&self.info, why);
            self.bury(&err);
            false
        }
    }
}

/// Whether an actor in `state` is still one: it keeps its name, its job's end
/// kills it, and a dead node takes it down. (An actor is never stored unset.)
fn is_live(state: ActorState) -> bool {
    match state {
        ActorState::Nil | ActorState::PendingCreation | ActorState::Alive | ActorState::Restarting => true,
        ActorState::Dead => false,
    }
}

#[derive(Default)]
struct Tables {
    actors: HashMap<Vec<u8>, ActorEntry>,
    names: HashMap<(String, String), Vec<u8>>,
}

use crate::placement_groups::NodeSource;

/// What one placement attempt achieved.
enum Placed {
    /// The constructor ran (or the actor's fate is settled).
    Done,
    /// Its placement group's bundle is not reserved anywhere yet: try again later.
    NotYet,
}

/// How often, and how long, an actor's placement is retried when the node chosen
/// for it stops answering (it is then marked dead within seconds).
const PLACEMENT_RETRY: std::time::Duration = std::time::Duration::from_millis(500);
const PLACEMENT_ATTEMPTS: u32 = 30;

/// Actor state shared by the head's handlers.
#[derive(Clone)]
pub(crate) struct Actors {
    tables: Arc<Mutex<Tables>>,
    changed: Arc<watch::Sender<u64>>,
    token: Arc<str>,
    nodes: Arc<Mutex<HashMap<String, NodeClient>>>,
    cluster: NodeSource,
    groups: PlacementGroups,
    /// Spread actors placed so far, for taking turns over nodes.
    spread_turns: Arc<AtomicUsize>,
}

fn died(info: &ActorInfo, cause: impl Into<String>) -> RayError {
    RayError::ActorDied { class: info.class_name.clone(), actor_id: hex(&info.actor_id), cause: cause.into() }
}

impl Actors {
    pub(crate) fn new(token: &str, cluster: NodeSource, groups: PlacementGroups) -> Self {
        Actors {
            tables: Arc::default(),
            changed: Arc::new(watch::channel(0).0),
            token: token.into(),
            nodes: Arc::default(),
            cluster,
            groups,
            spread_turns: Arc::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn notify(&self) {
        self.changed.send_modify(|v| *v += 1);
    }

    pub(crate) fn node(&self, address: &str) -> Result<NodeClient, RayError> {
        let mut nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = nodes.get(address) {
            return Ok(c.clone());
        }
        let c = node_client(lazy_channel(address, &self.token)?);
        nodes.insert(address.to_string(), c.clone());
        Ok(c)
    }

    /// Registers an actor and starts creating it; with `get_if_exists`, returns
    /// the live actor of the same name instead.
    pub(crate) fn create(&self, spec: ActorSpec) -> Result<ActorInfo, RayError> {
        let key = (spec.namespace.clone(), spec.name.clone());
        {
            let t = self.lock();
            if !spec.name.is_empty()
                && let Some(existing) = t.names.get(&key).and_then(|id| t.actors.get(id))
                && is_live(existing.info.state())
            {
                if spec.get_if_exists {
                    return Ok(existing.info.clone());
                }
                return Err(RayError::InvalidArgument(format!(
                    "an actor named {:?} already exists in namespace {:?}; use get_if_exists(true) or ray::get_actor",
                    spec.name, spec.namespace
                )));
            }
        }
        let info = ActorInfo {
            actor_id: spec.actor_id.clone(),
            class_name: spec.class_name.clone(),
            state: ActorState::PendingCreation.into(),
            job_id: spec.job_id,
            name: spec.name.clone(),
            namespace: spec.namespace.clone(),
            detached: spec.detached,
            max_task_retries: spec.max_task_retries,
            resources: spec.resources.clone(),
            is_async: spec.is_async,
            max_concurrency: spec.max_concurrency,
            placement_group_id: spec.placement_group.as_ref().map(|g| g.placement_group_id.clone()).unwrap_or_default(),
            // Said at once, so the creating driver can tell its user.
            infeasible: self.infeasibility(&spec).unwrap_or_default(),
            ..ActorInfo::default()
        };
        {
            let mut t = self.lock();
            if !spec.name.is_empty() {
                t.names.insert(key, spec.actor_id.to_vec());
            }
            t.actors.insert(spec.actor_id.to_vec(), ActorEntry::new(spec.clone(), info.clone()));
        }
        let this = self.clone();
        let id = spec.actor_id.to_vec();
        tokio::spawn(async move { this.schedule(id).await });
        Ok(info)
    }

    fn mark_dead(&self, id: &[u8], err: RayError) {
        let mut t = self.lock();
        if let Some(e) = t.actors.get_mut(id) {
            e.bury(&err);
        }
        drop(t);
        self.notify();
    }

    /// Why no alive node could ever hold the actor, for people; `None` if one
    /// could, or if it waits for its placement group (judged on its own).
    fn infeasibility(&self, spec: &ActorSpec) -> Option<String> {
        let demand = resources_to_map(&spec.resources);
        if groups::group_in(&demand).is_some() {
            return None;
        }
        let nodes = (self.cluster)();
        let alive: Vec<&NodeInfo> = nodes.iter().filter(|n| n.is_alive()).collect();
        if alive.iter().any(|n| fits(&resources_to_map(&n.total), &demand)) {
            return None;
        }
        let totals = groups::sum(alive.iter().map(|n| n.total.as_slice()));
        Some(format!(
            "actor `{}` asks for {}, but no node in the cluster has that much (cluster totals: {}). It stays \
             PENDING_CREATION until a node that has it joins, and calls to it wait until then; lower the \
             request, add such a node, or ray::kill the actor",
            spec.class_name,
            format_resources(&demand),
            format_resources(&groups::plain(&totals))
        ))
    }

    /// Records, for `rayrepl list actors` and `top`, why a waiting actor waits.
    /// Returns false once it waits no more (killed meanwhile).
    fn still_infeasible(&self, id: &[u8]) -> bool {
        let Some(spec) = self.lock().actors.get(id).map(|e| e.spec.clone()) else { return false };
        let why = self.infeasibility(&spec).unwrap_or_default();
        let mut t = self.lock();
        let Some(e) = t.actors.get_mut(id) else { return false };
        match e.info.state() {
            ActorState::PendingCreation | ActorState::Restarting => {}
            ActorState::Nil | ActorState::Alive | ActorState::Dead => return false,
        }
        if e.info.infeasible != why {
            e.info.infeasible = why;
            drop(t);
            self.notify();
        }
        true
    }

    /// Leases a worker for the actor and runs its constructor there.
    async fn schedule(&self, id: Vec<u8>) {
        let mut attempt = 1;
        loop {
            match self.place(&id).await {
                Err(RayError::Connection { what, detail }) if attempt < PLACEMENT_ATTEMPTS => {
                    tracing::info!("placing actor {} again: {what}: {detail}", hex(&id));
                    attempt += 1;
                    tokio::time::sleep(PLACEMENT_RETRY).await;
                }
                // As in Ray, it waits for a node that can hold it; the head
                // says why meanwhile.
                Err(RayError::Infeasible { .. }) => {
                    if !self.still_infeasible(&id) {
                        return;
                    }
                    tokio::time::sleep(PLACEMENT_RETRY / 5).await;
                }
                Err(e) => return self.mark_dead(&id, e),
                // Waiting for its placement group is not a failure: no limit.
                Ok(Placed::NotYet) => tokio::time::sleep(PLACEMENT_RETRY / 5).await,
                Ok(Placed::Done) => return,
            }
        }
    }

    /// The node an actor that asks for `demand` goes to, by its strategy: the
    /// first alive node with it free, else the first whose totals hold it (the
    /// lease queues there). `None` while its placement group is not reserved.
    fn choose_node(&self, spec: &ActorSpec, demand: &BTreeMap<String, f64>) -> Result<Option<NodeInfo>, RayError> {
        let nodes = (self.cluster)();
        let holds = |r: &[Resource]| fits(&resources_to_map(r), demand);
        let alive = || nodes.iter().filter(|n| n.is_alive());
        let unschedulable = |reason: String| RayError::Unschedulable { function: spec.class_name.clone(), reason };
        match spec.strategy.as_ref().and_then(|s| s.kind.as_ref()) {
            Some(lease_strategy::Kind::NodeAffinity(a)) => match alive().find(|n| n.node_id == a.node_id) {
                Some(n) if holds(&n.total) => return Ok(Some(n.clone())),
                _ if a.soft => {}
                Some(_) => {
                    return Err(unschedulable(format!(
                        "node {} named by its NodeAffinitySchedulingStrategy can never hold {}, and soft is false",
                        hex(&a.node_id),
                        format_resources(demand)
                    )));
                }
                None => {
                    return Err(unschedulable(format!(
                        "node {} named by its NodeAffinitySchedulingStrategy is dead or unknown, and soft is false",
                        hex(&a.node_id)
                    )));
                }
            },
            Some(lease_strategy::Kind::Spread(_)) => {
                let mut room: Vec<&NodeInfo> = alive().filter(|n| holds(&n.available)).collect();
                room.sort_by(|a, b| a.node_id.cmp(&b.node_id));
                if !room.is_empty() {
                    let turn = self.spread_turns.fetch_add(1, Ordering::Relaxed);
                    return Ok(Some(room[turn % room.len()].clone()));
                }
            }
            None => {}
        }
        if let Some(node) = alive().find(|n| holds(&n.available)).or_else(|| alive().find(|n| holds(&n.total))) {
            return Ok(Some(node.clone()));
        }
        if let Some(group) = groups::group_in(demand) {
            return match self.groups.get(&group).map(|g| g.state()) {
                Some(placement_group_info::State::Removed) | None => {
                    Err(unschedulable(format!("its placement group {group} was removed")))
                }
                // Not reserved yet, or being reserved again after a node died.
                Some(_) => Ok(None),
            };
        }
        let totals = groups::sum(alive().map(|n| n.total.as_slice()));
        Err(RayError::Infeasible {
            function: spec.class_name.clone(),
            requested: format_resources(demand),
            available: format_resources(&groups::plain(&totals)),
        })
    }

    /// One placement attempt.
    async fn place(&self, id: &[u8]) -> Result<Placed, RayError> {
        let Some(spec) = self.lock().actors.get(id).map(|e| e.spec.clone()) else {
            return Ok(Placed::Done);
        };
        let demand = resources_to_map(&spec.resources);
        let Some(node) = self.choose_node(&spec, &demand)? else {
            return Ok(Placed::NotYet);
        };
        if let Some(e) = self.lock().actors.get_mut(id).filter(|e| !e.info.infeasible.is_empty()) {
            e.info.infeasible.clear();
        }
        let id = id.to_vec();
        let result = async {
            let mut client = self.node(&node.address)?;
            let reply = client
                .request_lease(LeaseRequest {
                    job_id: spec.job_id,
                    resources: spec.resources.clone(),
                    function_name: spec.class_name.clone(),
                    for_actor: true,
                    detached: spec.detached,
                    // The head chose this node; it must not send the actor on.
                    grant_or_reject: true,
                    // The head never withdraws an actor's request.
                    ..LeaseRequest::default()
                })
                .await
                .map_err(|s| from_status(&s, "the node daemon"))?
                .into_inner();
            let lease = granted_lease(reply.result, &spec.class_name, &demand)?;
            {
                let mut t = self.lock();
                if let Some(e) = t.actors.get_mut(&id) {
                    e.worker_id = lease.worker_id.to_vec();
                    e.lease_id = lease.lease_id;
                    e.node_address = node.address.clone();
                    e.info.pid = lease.worker_pid;
                    e.info.node_id = lease.node_id.clone();
                }
            }
            let mut worker = core_worker_client(lazy_channel(&lease.worker_address, &self.token)?);
            let task = TaskSpec {
                task_id: spec.actor_id.clone(),
                job_id: spec.job_id,
                name: format!("{}.__init__", spec.class_name),
                function: spec.constructor.clone(),
                args: spec.args.clone(),
                owner_address: spec.owner_address.clone(),
                actor_creation: Some(ActorCreationSpec {
                    actor_id: spec.actor_id.clone(),
                    max_concurrency: spec.max_concurrency,
                    is_async: spec.is_async,
                    class_name: spec.class_name.clone(),
                }),
                ..TaskSpec::default()
            };
            let reply = worker.push_task(PushTaskRequest { spec: Some(task) }).await;
            Ok((lease, reply))
        }
        .await;
        match result {
            Err(e) => return Err(e),
            // The worker died during the constructor: its death report decides.
            Ok((_, Err(_))) => {}
            Ok((lease, Ok(reply))) => {
                let reply = reply.into_inner();
                let location = reply.result.and_then(|r| r.location).and_then(|l| l.kind);
                if let Some(object_location::Kind::Error(e)) = location {
                    let err = RayError::from_bytes(&e);
                    {
                        let mut t = self.lock();
                        if let Some(entry) = t.actors.get_mut(&id) {
                            entry.final_cause = Some(died(&entry.info, format!("its constructor failed: {err}")));
                        }
                    }
                    let returned = match self.node(&node.address) {
                        Ok(mut n) => n
                            .return_lease(ReturnLeaseRequest { lease_id: lease.lease_id, worker_failed: true })
                            .await
                            .map_err(|s| from_status(&s, "the node daemon")),
                        Err(e) => Err(e),
                    };
                    if let Err(e) = returned {
                        tracing::warn!(
                            "the lease of actor {}'s failed worker was not returned to {}: {e}",
                            hex(&id),
                            node.address
                        );
                    }
                    return Ok(Placed::Done);
                }
                let started = self
                    .lock()
                    .actors
                    .get_mut(&id)
                    .is_some_and(|e| e.started(lease.worker_address.clone(), reply.direct_address));
                if started {
                    self.notify();
                }
            }
        }
        Ok(Placed::Done)
    }

    /// A placement group was removed: its actors die with it, for good.
    pub(crate) async fn placement_group_removed(&self, group: &PlacementGroupId) {
        let ids: Vec<Vec<u8>> = self
            .lock()
            .actors
            .iter()
            .filter(|(_, e)| e.info.placement_group_id.as_ref() == group.0 && is_live(e.info.state()))
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            if let Some(e) = self.lock().actors.get_mut(&id) {
                e.final_cause = Some(died(&e.info, format!("its placement group {group} was removed")));
            }
            if let Err(e) = self.kill(&id, true).await {
                tracing::warn!("actor {} of removed placement group {group} was not killed: {e}", hex(&id));
            }
        }
    }

    /// A worker process ended: restart or bury the actor it hosted.
    pub(crate) fn worker_died(&self, worker_id: &[u8], pid: u32, detail: &str) {
        let id = self.lock().actors.iter().find(|(_, e)| e.worker_id == worker_id).map(|(id, _)| id.clone());
        if let Some(id) = id {
            self.lost(&id, &format!("its worker process (pid {pid}) died ({detail})"));
        }
    }

    /// A node was marked dead: restart its actors elsewhere, or bury them.
    pub(crate) fn node_died(&self, node_id: &[u8]) {
        let ids: Vec<Vec<u8>> = self
            .lock()
            .actors
            .iter()
            // Actors with a worker there; one being placed again retries by itself.
            .filter(|(_, e)| e.info.node_id.as_ref() == node_id && !e.worker_id.is_empty() && is_live(e.info.state()))
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            self.lost(&id, &format!("its node {} died", hex(node_id)));
        }
    }

    fn lost(&self, id: &[u8], why: &str) {
        let restart = {
            let mut t = self.lock();
            let Some(e) = t.actors.get_mut(id) else { return };
            if !is_live(e.info.state()) {
                return;
            }
            e.lost(why)
        };
        self.notify();
        if restart {
            let this = self.clone();
            let id = id.to_vec();
            tokio::spawn(async move { this.schedule(id).await });
        }
    }

    /// `ray::kill`: stops the actor's worker; with `no_restart` it stays dead.
    pub(crate) async fn kill(&self, id: &[u8], no_restart: bool) -> Result<(), RayError> {
        let (pid, node_address, pending) = {
            let mut t = self.lock();
            let e = t
                .actors
                .get_mut(id)
                .ok_or_else(|| RayError::ActorNotFound { name: hex(id), namespace: String::new() })?;
            if no_restart && e.final_cause.is_none() {
                e.final_cause = Some(died(&e.info, "it was killed by ray::kill"));
            }
            (e.info.pid, e.node_address.clone(), e.worker_id.is_empty())
        };
        if pending {
            if no_restart {
                let cause = {
                    let t = self.lock();
                    let e = &t.actors[id];
                    e.final_cause
                        .clone()
                        .unwrap_or_else(|| died(&e.info, "it was killed by ray::kill before it started"))
                };
                self.mark_dead(id, cause);
            }
            return Ok(());
        }
        let mut node = self.node(&node_address)?;
        node.kill_worker(KillWorkerRequest { pid }).await.map_err(|s| from_status(&s, "the node daemon"))?;
        Ok(())
    }

    /// The actor called `exit_actor`: it is about to end on purpose.
    pub(crate) fn exiting(&self, id: &[u8]) {
        if let Some(e) = self.lock().actors.get_mut(id) {
            e.final_cause = Some(died(&e.info, "it exited by calling ray::actor::exit_actor()"));
        }
    }

    /// Kills the non-detached actors of a job whose driver is gone.
    pub(crate) async fn job_finished(&self, job: u32) {
        let ids: Vec<Vec<u8>> = self
            .lock()
            .actors
            .iter()
            .filter(|(_, e)| e.spec.job_id == job && !e.spec.detached && is_live(e.info.state()))
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            if let Some(e) = self.lock().actors.get_mut(&id) {
                e.final_cause = Some(died(&e.info, format!("its owner (job {job}) exited")));
            }
            if let Err(e) = self.kill(&id, true).await {
                tracing::warn!("actor {} of finished job {job} was not killed: {e}", hex(&id));
            }
        }
    }

    /// The actor's record; with `wait`, once it is ALIVE at `min_incarnation` or later, or DEAD.
    pub(crate) async fn get(&self, id: &[u8], wait: bool, min_incarnation: u32) -> Result<ActorInfo, RayError> {
        let mut rx = self.changed.subscribe();
        loop {
            let info = self
                .lock()
                .actors
                .get(id)
                .map(|e| e.info.clone())
                .ok_or_else(|| RayError::ActorNotFound { name: hex(id), namespace: String::new() })?;
            let settled = match info.state() {
                ActorState::Dead => true,
                ActorState::Alive => info.incarnation >= min_incarnation,
                ActorState::Nil | ActorState::PendingCreation | ActorState::Restarting => false,
            };
            if !wait || settled {
                return Ok(info);
            }
            if rx.changed().await.is_err() {
                return Ok(info);
            }
        }
    }

    /// A live named actor.
    pub(crate) fn named(&self, name: &str, namespace: &str) -> Result<ActorInfo, RayError> {
        let t = self.lock();
        t.names
            .get(&(namespace.to_string(), name.to_string()))
            .and_then(|id| t.actors.get(id))
            .filter(|e| is_live(e.info.state()))
            .map(|e| e.info.clone())
            .ok_or_else(|| RayError::ActorNotFound { name: name.to_string(), namespace: namespace.to_string() })
    }

    /// Every actor.
    pub(crate) fn list(&self) -> Vec<ActorInfo> {
        let mut v: Vec<ActorInfo> = self.lock().actors.values().map(|e| e.info.clone()).collect();
        v.sort_by(|a, b| a.actor_id.cmp(&b.actor_id));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(max_restarts: i32) -> ActorEntry {
        let spec = ActorSpec { actor_id: vec![1; 16].into(), max_restarts, ..ActorSpec::default() };
        let info = ActorInfo {
            actor_id: spec.actor_id.clone(),
            class_name: "Counter".into(),
            state: ActorState::PendingCreation.into(),
            ..ActorInfo::default()
        };
        ActorEntry::new(spec, info)
    }

    fn started(e: &mut ActorEntry) -> bool {
        e.worker_id = vec![9];
        e.started("127.0.0.1:1".into(), "127.0.0.1:2".into())
    }

    #[test]
    fn an_actor_restarts_as_often_as_max_restarts_allows_then_dies() {
        let mut e = entry(1);
        assert!(started(&mut e));
        assert_eq!((e.info.state(), e.info.address.as_str()), (ActorState::Alive, "127.0.0.1:1"));
        assert!(e.lost("its worker died"), "one restart is allowed");
        assert_eq!((e.info.state(), e.info.incarnation, e.info.num_restarts), (ActorState::Restarting, 1, 1));
        assert!(e.info.address.is_empty() && e.worker_id.is_empty());
        assert!(started(&mut e));
        assert_eq!(e.info.state(), ActorState::Alive);
        assert!(!e.lost("its worker died"));
        assert_eq!(e.info.state(), ActorState::Dead);
        let why = RayError::from_bytes(&e.info.death_error).to_string();
        assert!(why.contains("its worker died and max_restarts=1"), "{why}");
        assert!(!e.lost("again") && e.info.state() == ActorState::Dead, "the dead stay dead");
        assert!(!started(&mut e) && e.info.state() == ActorState::Dead && e.info.address.is_empty());
    }

    #[test]
    fn a_killed_actor_is_not_restarted() {
        let mut e = entry(-1);
        assert!(started(&mut e));
        e.final_cause = Some(died(&e.info, "it was killed by ray::kill"));
        assert!(!e.lost("its worker died"));
        assert_eq!(e.info.state(), ActorState::Dead);
        assert!(RayError::from_bytes(&e.info.death_error).to_string().contains("ray::kill"));
    }

    #[test]
    fn only_dead_actors_give_up_their_name() {
        let live = [ActorState::PendingCreation, ActorState::Alive, ActorState::Restarting];
        assert!(live.into_iter().all(is_live));
        assert!(!is_live(ActorState::Dead));
    }
}
