//! Resource accounting, the worker pool and the lease queue.
//!
//! All scheduling decisions happen in [`Pool::dispatch`], under one lock and without
//! awaiting, so they are easy to reason about and to test.
//!
//! Placement-group bundles are reserved here in two phases, as the head asks:
//! `prepare` sets the bundle's resources aside, `commit` turns them into the
//! group's own resources (see `ray_proto::groups`), and `return` gives them back.
//! A group's resources vanish from `total` when its bundles go, so a lease that
//! still holds some gives back only what still exists.

use ray_abi::PlacementGroupId;
use ray_proto::groups;
use ray_proto::{Lease, LeaseReply, fits, lease_reply};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::Instant;
use tokio::sync::oneshot;

/// Resources by name (`CPU`, `GPU`, `memory`, custom ones).
pub type Resources = BTreeMap<String, f64>;

fn subtract(available: &mut Resources, demand: &Resources) {
    for (k, v) in demand {
        *available.entry(k.clone()).or_insert(0.0) -= v;
    }
}

fn add(available: &mut Resources, demand: &Resources) {
    for (k, v) in demand {
        *available.entry(k.clone()).or_insert(0.0) += v;
    }
}

/// Removed groups a node remembers by itself.
const REMOVED_GROUPS_KEPT: usize = 10_000;

/// CPUs, a group's included: what a worker blocked in `get` lends out.
fn is_cpu(resource: &str) -> bool {
    resource == "CPU" || resource.starts_with("CPU_group_")
}

/// Where a bundle is in its reservation.
#[derive(Debug, Clone, Copy, PartialEq)]
enum BundlePhase {
    /// Set aside; nobody can use it yet.
    Prepared,
    /// The group's resources exist on this node.
    Committed,
}

#[derive(Debug)]
struct HeldBundle {
    resources: Resources,
    phase: BundlePhase,
}

/// This node's resources at one moment; a higher `version` is newer.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceSnapshot {
    /// Orders snapshots: heartbeats and bundle replies may arrive out of order.
    pub version: u64,
    /// Everything, group resources included.
    pub total: Resources,
    /// What is free.
    pub available: Resources,
}

/// Where a worker is in its life.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkerState {
    /// Spawned, not yet registered.
    Starting,
    /// Registered and free since the given time.
    Idle(Instant),
    /// Serving the given lease.
    Leased(u64),
    /// Idle for long and asked to exit; never leased meanwhile.
    Exiting,
}

/// A worker process of this node.
#[derive(Debug)]
pub struct Worker {
    /// Process id.
    pub pid: u32,
    /// The job whose executable it runs.
    pub job: u32,
    /// Its CoreWorker service, once registered.
    pub address: String,
    /// Where its executor takes pushed tasks itself, if it does.
    pub direct_address: String,
    /// Its state.
    pub state: WorkerState,
    /// Hosts a detached actor, which outlives its job.
    pub detached: bool,
}

#[derive(Debug)]
struct LeaseEntry {
    worker_id: Vec<u8>,
    resources: Resources,
    /// CPUs given back while the worker is blocked in `get`/`wait`.
    released_while_blocked: Option<Resources>,
}

/// An idle worker: its id, record and idle-since time.
type IdleWorker<'a> = (&'a Vec<u8>, &'a Worker, Instant);

/// A lease request waiting for resources or a worker.
pub struct PendingLease {
    /// The requesting job.
    pub job: u32,
    /// What the task holds while it runs.
    pub resources: Resources,
    /// Where the answer goes.
    pub reply: oneshot::Sender<LeaseReply>,
    /// Held for an actor's lifetime: not bound by the per-job worker cap.
    pub for_actor: bool,
    /// The actor outlives its job.
    pub detached: bool,
    /// Another node may serve it instead (not one already sent on).
    pub may_spill: bool,
    /// Who asked, and their number for the request, for [`Pool::cancel`].
    pub owner: String,
    pub request_id: u64,
}

/// What the caller must do after a scheduling pass.
#[derive(Debug, Default, PartialEq)]
pub struct Actions {
    /// Jobs for which to start one worker each (a job may appear repeatedly).
    pub spawn: Vec<u32>,
}

/// The node's scheduling state.
pub struct Pool {
    node_id: Vec<u8>,
    total: Resources,
    available: Resources,
    workers: HashMap<Vec<u8>, Worker>,
    leases: HashMap<u64, LeaseEntry>,
    pending: VecDeque<PendingLease>,
    next_lease: u64,
    /// Leases held by actors for their lifetime.
    actor_leases: std::collections::HashSet<u64>,
    /// Upper bound on workers per job, so a burst cannot fork-bomb the machine.
    max_workers_per_job: usize,
    /// Placement-group bundles reserved here.
    bundles: HashMap<(PlacementGroupId, u32), HeldBundle>,
    /// Groups the head removed, newest last: requests for their resources fail
    /// at once. Only the newest are kept; the head answers for older ones.
    removed_groups: HashSet<PlacementGroupId>,
    removed_order: VecDeque<PlacementGroupId>,
    /// Counts snapshots of the resources.
    snapshots: u64,
    /// Workers started since the node started, for its metrics.
    workers_started: u64,
}

impl Pool {
    /// A pool for a node with `total` resources.
    pub fn new(node_id: Vec<u8>, total: Resources) -> Self {
        let cpus = total.get("CPU").copied().unwrap_or(1.0).ceil().max(1.0) as usize;
        Pool {
            node_id,
            available: total.clone(),
            total,
            workers: HashMap::new(),
            leases: HashMap::new(),
            pending: VecDeque::new(),
            next_lease: 1,
            workers_started: 0,
            actor_leases: Default::default(),
            max_workers_per_job: (cpus * 4).max(16),
            bundles: HashMap::new(),
            removed_groups: HashSet::new(),
            removed_order: VecDeque::new(),
            snapshots: 0,
        }
    }

    /// The resources now, numbered so the newest snapshot can win.
    pub fn snapshot(&mut self) -> ResourceSnapshot {
        self.snapshots += 1;
        ResourceSnapshot { version: self.snapshots, total: self.total.clone(), available: self.available.clone() }
    }

    /// Puts bundles of `group` aside, all or none: the first phase of reserving them.
    /// A bundle already held here is not taken twice.
    pub fn prepare_bundles(&mut self, group: PlacementGroupId, bundles: &[(u32, Resources)]) -> Result<(), String> {
        if self.removed_groups.contains(&group) {
            return Err(format!("placement group {group} was removed"));
        }
        let new: Vec<&(u32, Resources)> =
            bundles.iter().filter(|(i, _)| !self.bundles.contains_key(&(group, *i))).collect();
        let mut wanted = Resources::new();
        for (_, r) in &new {
            add(&mut wanted, r);
        }
        if !fits(&self.available, &wanted) {
            return Err(format!(
                "not enough free here: bundles need {} but {} is free",
                ray_proto::format_resources(&wanted),
                ray_proto::format_resources(&groups::plain(&self.available))
            ));
        }
        subtract(&mut self.available, &wanted);
        for (i, r) in new {
            self.bundles.insert((group, *i), HeldBundle { resources: r.clone(), phase: BundlePhase::Prepared });
        }
        Ok(())
    }

    /// Turns prepared bundles into the group's own resources: the second phase.
    pub fn commit_bundles(&mut self, group: PlacementGroupId, indices: &[u32]) -> Result<(), String> {
        if let Some(i) = indices.iter().find(|i| !self.bundles.contains_key(&(group, **i))) {
            return Err(format!("bundle {i} of placement group {group} was not prepared on this node"));
        }
        for i in indices {
            let held = self.bundles.get_mut(&(group, *i)).expect("checked above");
            if held.phase == BundlePhase::Prepared {
                held.phase = BundlePhase::Committed;
                let gained = groups::committed(&held.resources, &group, *i);
                add(&mut self.total, &gained);
                add(&mut self.available, &gained);
            }
        }
        Ok(())
    }

    /// Gives bundles of `group` back (all of them when `indices` is `None`); with
    /// `removed`, the group is gone for good and requests waiting for it fail.
    /// Returns the pids of workers that hold its resources: they must stop.
    pub fn return_bundles(&mut self, group: PlacementGroupId, indices: Option<&[u32]>, removed: bool) -> Vec<u32> {
        let returned: Vec<(PlacementGroupId, u32)> = self
            .bundles
            .keys()
            .filter(|(g, i)| *g == group && indices.is_none_or(|want| want.contains(i)))
            .copied()
            .collect();
        for key in &returned {
            let held = self.bundles.remove(key).expect("listed above");
            if held.phase == BundlePhase::Committed {
                for (name, amount) in groups::committed(&held.resources, &group, key.1) {
                    for side in [&mut self.total, &mut self.available] {
                        if let Some(v) = side.get_mut(&name) {
                            *v -= amount;
                        }
                    }
                    if self.total.get(&name).is_some_and(|v| *v <= 1e-9) {
                        self.total.remove(&name);
                        self.available.remove(&name);
                    }
                }
            }
            add(&mut self.available, &held.resources);
        }
        let in_group = |r: &Resources| groups::group_in(r) == Some(group);
        let mut doomed: Vec<u32> = self
            .leases
            .values()
            .filter(|l| in_group(&l.resources))
            .filter_map(|l| self.workers.get(&l.worker_id).map(|w| w.pid))
            .collect();
        doomed.sort_unstable();
        if removed {
            if self.removed_groups.insert(group) {
                self.removed_order.push_back(group);
            }
            while self.removed_order.len() > REMOVED_GROUPS_KEPT {
                if let Some(old) = self.removed_order.pop_front() {
                    self.removed_groups.remove(&old);
                }
            }
            let (failed, kept): (VecDeque<_>, VecDeque<_>) =
                self.pending.drain(..).partition(|p| in_group(&p.resources));
            self.pending = kept;
            for p in failed {
                let why = format!("its placement group {group} was removed");
                // Its handler is gone if the owner hung up: then nobody waits.
                let _ = p.reply.send(LeaseReply { result: Some(lease_reply::Result::Unschedulable(why)) });
            }
        }
        doomed
    }

    /// The head marked this node dead and moved its actors and bundles to other
    /// nodes: gives every bundle back and returns the pids of the workers that
    /// must stop (actors, and tasks inside bundles). Plain tasks keep running:
    /// their owners still wait for them.
    pub fn drop_moved_work(&mut self) -> Vec<u32> {
        let groups: HashSet<PlacementGroupId> = self.bundles.keys().map(|(g, _)| *g).collect();
        let mut doomed: Vec<u32> = groups.into_iter().flat_map(|g| self.return_bundles(g, None, false)).collect();
        doomed.extend(
            self.leases
                .iter()
                .filter(|(id, _)| self.actor_leases.contains(id))
                .filter_map(|(_, l)| self.workers.get(&l.worker_id).map(|w| w.pid)),
        );
        doomed.sort_unstable();
        doomed.dedup();
        doomed
    }

    /// Whether the head removed `group`.
    pub fn group_removed(&self, group: &PlacementGroupId) -> bool {
        self.removed_groups.contains(group)
    }

    /// Adds back what a lease held, except group resources that no longer exist.
    fn give_back(&mut self, held: &Resources) {
        for (k, v) in held {
            if self.total.contains_key(k) {
                *self.available.entry(k.clone()).or_insert(0.0) += v;
            }
        }
    }

    /// Everything this node has.
    pub fn total(&self) -> &Resources {
        &self.total
    }

    /// What is free now.
    #[cfg(test)]
    pub fn available(&self) -> &Resources {
        &self.available
    }

    /// What is free once the requests already queued here are granted: what a
    /// new request can count on without waiting behind them.
    pub fn unclaimed(&self) -> Resources {
        let mut unclaimed = self.available.clone();
        for p in &self.pending {
            subtract(&mut unclaimed, &p.resources);
        }
        unclaimed
    }

    /// Takes the queued requests that cannot be granted now and that `elsewhere`
    /// finds another node for, in queue order, with where they go.
    pub fn spill_waiting<T>(&mut self, mut elsewhere: impl FnMut(&Resources) -> Option<T>) -> Vec<(PendingLease, T)> {
        let mut spilled = Vec::new();
        let mut kept = VecDeque::with_capacity(self.pending.len());
        for p in self.pending.drain(..) {
            if p.may_spill
                && !fits(&self.available, &p.resources)
                && let Some(to) = elsewhere(&p.resources)
            {
                spilled.push((p, to));
            } else {
                kept.push_back(p);
            }
        }
        self.pending = kept;
        spilled
    }

    /// Whether a queued request waits for resources another node might have.
    pub fn has_spillable(&self) -> bool {
        self.pending.iter().any(|p| p.may_spill && !fits(&self.available, &p.resources))
    }

    /// The waiting requests grouped by resource shape, in order of first arrival.
    pub fn pending_demands(&self) -> Vec<(Resources, u32)> {
        let mut demands: Vec<(Resources, u32)> = Vec::new();
        for p in &self.pending {
            match demands.iter_mut().find(|(shape, _)| *shape == p.resources) {
                Some((_, n)) => *n += 1,
                None => demands.push((p.resources.clone(), 1)),
            }
        }
        demands
    }

    /// Leases granted since the node started (lease ids are handed out in order).
    pub fn leases_granted(&self) -> u64 {
        self.next_lease - 1
    }

    /// Workers started since the node started.
    pub fn workers_started(&self) -> u64 {
        self.workers_started
    }

    /// Workers by id.
    pub fn workers(&self) -> impl Iterator<Item = (&Vec<u8>, &Worker)> {
        self.workers.iter()
    }

    /// Withdraws a queued request its owner no longer needs; one already granted
    /// is not here any more, and its owner gives the lease back.
    pub fn cancel(&mut self, owner: &str, request_id: u64) {
        if let Some(at) = self.pending.iter().position(|p| p.request_id == request_id && p.owner == owner)
            && let Some(p) = self.pending.remove(at)
        {
            // Its handler is gone if the owner hung up: then nobody waits.
            let _ = p.reply.send(LeaseReply { result: Some(lease_reply::Result::Cancelled(true)) });
        }
    }

    /// Answers every queued request of `job` with `why`: its workers cannot start.
    pub fn fail_job(&mut self, job: u32, why: &str) {
        let (failed, kept): (VecDeque<_>, VecDeque<_>) = self.pending.drain(..).partition(|p| p.job == job);
        self.pending = kept;
        for p in failed {
            // Its handler is gone if the owner hung up: then nobody waits.
            let _ = p.reply.send(LeaseReply { result: Some(lease_reply::Result::WorkerStartFailed(why.to_string())) });
        }
    }

    /// Queues a lease request.
    pub fn enqueue(&mut self, lease: PendingLease) {
        self.pending.push_back(lease);
    }

    /// Records a spawned worker.
    pub fn worker_spawned(&mut self, worker_id: Vec<u8>, pid: u32, job: u32) {
        self.workers_started += 1;
        self.workers.insert(
            worker_id,
            Worker {
                pid,
                job,
                address: String::new(),
                direct_address: String::new(),
                state: WorkerState::Starting,
                detached: false,
            },
        );
    }

    /// Records the pid of a worker recorded before it was spawned.
    pub fn set_pid(&mut self, worker_id: &[u8], pid: u32) {
        if let Some(w) = self.workers.get_mut(worker_id) {
            w.pid = pid;
        }
    }

    /// A worker announced its address and is ready.
    pub fn worker_registered(&mut self, worker_id: &[u8], address: String, direct_address: String) -> bool {
        match self.workers.get_mut(worker_id) {
            Some(w) => {
                w.address = address;
                w.direct_address = direct_address;
                w.state = WorkerState::Idle(Instant::now());
                true
            }
            None => false,
        }
    }

    /// A worker process exited; its lease, if any, gives its resources back.
    pub fn worker_exited(&mut self, worker_id: &[u8]) -> Option<Worker> {
        let w = self.workers.remove(worker_id)?;
        if let WorkerState::Leased(lease) = w.state {
            self.finish_lease(lease);
        }
        Some(w)
    }

    fn finish_lease(&mut self, lease_id: u64) -> Option<Vec<u8>> {
        self.actor_leases.remove(&lease_id);
        let entry = self.leases.remove(&lease_id)?;
        match &entry.released_while_blocked {
            // The CPU was already given back while blocked; return only the rest.
            Some(released) => {
                let mut rest = entry.resources.clone();
                subtract(&mut rest, released);
                self.give_back(&rest);
            }
            None => self.give_back(&entry.resources),
        }
        Some(entry.worker_id)
    }

    /// The owner is done with a lease; the worker goes back to the idle pool.
    pub fn return_lease(&mut self, lease_id: u64) -> Option<u32> {
        let worker_id = self.finish_lease(lease_id)?;
        let w = self.workers.get_mut(&worker_id)?;
        w.state = WorkerState::Idle(Instant::now());
        Some(w.pid)
    }

    /// The pid serving a lease.
    pub fn lease_worker_pid(&self, lease_id: u64) -> Option<u32> {
        let e = self.leases.get(&lease_id)?;
        self.workers.get(&e.worker_id).map(|w| w.pid)
    }

    /// A leased worker blocked in `get`/`wait` (or woke up): its CPUs go back to
    /// the pool meanwhile, as Ray does, so the tasks it waits for can run.
    pub fn set_blocked(&mut self, worker_id: &[u8], blocked: bool) {
        let Some(WorkerState::Leased(lease_id)) = self.workers.get(worker_id).map(|w| w.state.clone()) else {
            return;
        };
        let Some(entry) = self.leases.get_mut(&lease_id) else {
            return;
        };
        let cpu: Resources = entry.resources.iter().filter(|(k, _)| is_cpu(k)).map(|(k, v)| (k.clone(), *v)).collect();
        match (blocked, entry.released_while_blocked.is_some()) {
            (true, false) => {
                for (k, v) in &cpu {
                    if self.total.contains_key(k) {
                        *self.available.entry(k.clone()).or_insert(0.0) += v;
                    }
                }
                entry.released_while_blocked = Some(cpu);
            }
            (false, true) => {
                // Taking the CPU back may oversubscribe briefly; Ray does the same.
                for (k, v) in &cpu {
                    if self.total.contains_key(k) {
                        *self.available.entry(k.clone()).or_insert(0.0) -= v;
                    }
                }
                entry.released_while_blocked = None;
            }
            _ => {}
        }
    }

    /// Idle workers that have been idle longer than `max_idle`, beyond `keep` per
    /// job, as (id, pid, address); they are marked exiting until they go or decline.
    pub fn take_idle_to_reap(&mut self, max_idle: std::time::Duration, keep: usize) -> Vec<(Vec<u8>, u32, String)> {
        let mut by_job: HashMap<u32, Vec<IdleWorker<'_>>> = HashMap::new();
        for (id, w) in &self.workers {
            if let WorkerState::Idle(since) = w.state {
                by_job.entry(w.job).or_default().push((id, w, since));
            }
        }
        let mut out = Vec::new();
        for (_, mut ws) in by_job {
            ws.sort_by_key(|(_, _, since)| std::cmp::Reverse(*since));
            for (id, w, since) in ws.into_iter().skip(keep) {
                if since.elapsed() > max_idle {
                    out.push((id.clone(), w.pid, w.address.clone()));
                }
            }
        }
        for (id, _, _) in &out {
            if let Some(w) = self.workers.get_mut(id) {
                w.state = WorkerState::Exiting;
            }
        }
        out
    }

    /// A worker asked to exit declined: it is idle again, from now.
    pub fn exit_declined(&mut self, worker_id: &[u8]) {
        if let Some(w) = self.workers.get_mut(worker_id).filter(|w| w.state == WorkerState::Exiting) {
            w.state = WorkerState::Idle(Instant::now());
        }
    }

    /// Worker pids of a job, except those hosting detached actors.
    pub fn job_workers(&self, job: u32) -> Vec<(Vec<u8>, u32)> {
        self.workers.iter().filter(|(_, w)| w.job == job && !w.detached).map(|(id, w)| (id.clone(), w.pid)).collect()
    }

    /// Jobs that have workers here.
    pub fn jobs(&self) -> Vec<u32> {
        let mut j: Vec<u32> = self.workers.values().map(|w| w.job).collect();
        j.sort_unstable();
        j.dedup();
        j
    }

    /// Grants every lease that can be granted now, and says which workers to start.
    pub fn dispatch(&mut self) -> Actions {
        let mut actions = Actions::default();
        let mut starting: HashMap<u32, usize> = HashMap::new();
        for w in self.workers.values() {
            if w.state == WorkerState::Starting {
                *starting.entry(w.job).or_default() += 1;
            }
        }
        // Per job: workers wanted for tasks, and for actors (not capped).
        let mut wanting: HashMap<u32, (usize, usize)> = HashMap::new();
        // What would be left if every request waiting for a worker got one: only
        // requests that fit in it justify starting a worker.
        let mut shadow = self.available.clone();
        let mut still_pending = VecDeque::with_capacity(self.pending.len());
        while let Some(p) = self.pending.pop_front() {
            if p.reply.is_closed() {
                continue;
            }
            if !fits(&self.available, &p.resources) {
                still_pending.push_back(p);
                continue;
            }
            let idle = self
                .workers
                .iter()
                .filter(|(_, w)| w.job == p.job && matches!(w.state, WorkerState::Idle(_)))
                .max_by_key(|(_, w)| match w.state {
                    WorkerState::Idle(since) => since,
                    _ => Instant::now(),
                })
                .map(|(id, _)| id.clone());
            match idle {
                Some(worker_id) => {
                    let lease_id = self.next_lease;
                    self.next_lease += 1;
                    let w = self.workers.get_mut(&worker_id).expect("idle worker exists");
                    w.state = WorkerState::Leased(lease_id);
                    w.detached = p.detached;
                    let reply = LeaseReply {
                        result: Some(lease_reply::Result::Lease(Lease {
                            lease_id,
                            worker_address: w.address.clone(),
                            worker_pid: w.pid,
                            worker_id: worker_id.clone().into(),
                            node_id: self.node_id.clone().into(),
                            direct_address: w.direct_address.clone(),
                        })),
                    };
                    subtract(&mut self.available, &p.resources);
                    subtract(&mut shadow, &p.resources);
                    if p.for_actor {
                        self.actor_leases.insert(lease_id);
                    }
                    self.leases.insert(
                        lease_id,
                        LeaseEntry { worker_id, resources: p.resources.clone(), released_while_blocked: None },
                    );
                    if let Err(reply) = p.reply.send(reply) {
                        // The requester went away; undo the grant.
                        if let Some(lease_reply::Result::Lease(l)) = reply.result {
                            self.return_lease(l.lease_id);
                        }
                    }
                }
                None => {
                    if fits(&shadow, &p.resources) {
                        subtract(&mut shadow, &p.resources);
                        let w = wanting.entry(p.job).or_default();
                        if p.for_actor {
                            w.1 += 1;
                        } else {
                            w.0 += 1;
                        }
                    }
                    still_pending.push_back(p);
                }
            }
        }
        self.pending = still_pending;
        for (job, (for_tasks, for_actors)) in wanting {
            let have_starting = starting.get(&job).copied().unwrap_or(0);
            let task_workers = self
                .workers
                .values()
                .filter(|w| {
                    w.job == job && !matches!(w.state, WorkerState::Leased(l) if self.actor_leases.contains(&l))
                })
                .count();
            let room = self.max_workers_per_job.saturating_sub(task_workers);
            let wanted = for_tasks.min(room) + for_actors;
            for _ in 0..wanted.saturating_sub(have_starting) {
                actions.spawn.push(job);
            }
        }
        actions
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn res(cpu: f64) -> Resources {
        [("CPU".to_string(), cpu)].into_iter().collect()
    }

    fn request(pool: &mut Pool, job: u32, cpu: f64) -> oneshot::Receiver<LeaseReply> {
        request_as(pool, job, cpu, "owner", 0)
    }

    fn request_as(pool: &mut Pool, job: u32, cpu: f64, owner: &str, request_id: u64) -> oneshot::Receiver<LeaseReply> {
        let (tx, rx) = oneshot::channel();
        pool.enqueue(PendingLease {
            job,
            resources: res(cpu),
            reply: tx,
            for_actor: false,
            detached: false,
            may_spill: false,
            owner: owner.to_string(),
            request_id,
        });
        rx
    }

    fn granted(rx: &mut oneshot::Receiver<LeaseReply>) -> Option<Lease> {
        match rx.try_recv().ok()?.result? {
            lease_reply::Result::Lease(l) => Some(l),
            _ => None,
        }
    }

    #[test]
    fn leases_wait_for_workers_then_resources() {
        let mut pool = Pool::new(vec![1], res(2.0));
        let mut a = request(&mut pool, 1, 1.0);
        let mut b = request(&mut pool, 1, 1.0);
        let mut c = request(&mut pool, 1, 1.0);
        assert_eq!(pool.dispatch().spawn, vec![1, 1]);
        pool.worker_spawned(vec![10], 100, 1);
        pool.worker_spawned(vec![11], 101, 1);
        assert!(pool.dispatch().spawn.is_empty(), "workers are already starting");
        pool.worker_registered(&[10], "w10".into(), String::new());
        pool.worker_registered(&[11], "w11".into(), String::new());
        pool.dispatch();
        let la = granted(&mut a).expect("a granted");
        assert!(granted(&mut b).is_some());
        assert!(granted(&mut c).is_none(), "only two CPUs");
        assert_eq!(pool.available()["CPU"], 0.0);
        pool.return_lease(la.lease_id);
        pool.dispatch();
        assert!(granted(&mut c).is_some());
    }

    #[test]
    fn a_cancelled_request_is_answered_and_never_granted() {
        let mut pool = Pool::new(vec![1], res(1.0));
        pool.worker_spawned(vec![10], 100, 1);
        pool.worker_registered(&[10], "w10".into(), String::new());
        let mut a = request_as(&mut pool, 1, 1.0, "owner-a", 1);
        let mut b = request_as(&mut pool, 1, 1.0, "owner-b", 1);
        let mut c = request_as(&mut pool, 1, 1.0, "owner-b", 2);
        pool.dispatch();
        let la = granted(&mut a).expect("a granted");
        // Cancelling names one request of one owner; a granted one is untouched.
        pool.cancel("owner-a", 1);
        pool.cancel("owner-b", 1);
        assert!(matches!(b.try_recv().map(|r| r.result), Ok(Some(lease_reply::Result::Cancelled(true)))));
        assert_eq!(pool.available()["CPU"], 0.0, "a's lease stands");
        pool.return_lease(la.lease_id);
        pool.dispatch();
        assert!(granted(&mut c).is_some(), "the request after the cancelled one gets the CPU");
    }

    #[test]
    fn a_worker_asked_to_exit_is_never_leased_and_may_decline() {
        let mut pool = Pool::new(vec![1], res(1.0));
        for id in [10u8, 11] {
            pool.worker_spawned(vec![id], 100 + u32::from(id), 1);
            pool.worker_registered(&[id], format!("w{id}"), String::new());
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let none = std::time::Duration::ZERO;
        // One idle worker per CPU is kept: the one idle most recently.
        let asked = pool.take_idle_to_reap(none, 1);
        assert_eq!(asked, vec![(vec![10], 110, "w10".to_string())]);
        assert!(pool.take_idle_to_reap(none, 0).iter().all(|(id, ..)| id != &[10]), "asked once");
        let mut a = request(&mut pool, 1, 1.0);
        let mut b = request(&mut pool, 1, 1.0);
        pool.dispatch();
        assert!(granted(&mut a).is_none() && granted(&mut b).is_none(), "both are exiting now");
        pool.exit_declined(&[10]);
        pool.dispatch();
        assert_eq!(granted(&mut a).expect("the worker that stayed").worker_address, "w10");
    }

    #[test]
    fn a_blocked_worker_lends_its_cpu() {
        let mut pool = Pool::new(vec![1], res(1.0));
        pool.worker_spawned(vec![10], 100, 1);
        pool.worker_registered(&[10], "w10".into(), String::new());
        let mut a = request(&mut pool, 1, 1.0);
        pool.dispatch();
        let la = granted(&mut a).unwrap();
        let mut nested = request(&mut pool, 1, 1.0);
        assert!(pool.dispatch().spawn.is_empty(), "no CPU is free yet");
        pool.set_blocked(&[10], true);
        assert_eq!(pool.dispatch().spawn, vec![1]);
        pool.worker_spawned(vec![11], 101, 1);
        pool.worker_registered(&[11], "w11".into(), String::new());
        pool.dispatch();
        let ln = granted(&mut nested).expect("nested task runs while its parent is blocked");
        pool.return_lease(ln.lease_id);
        pool.set_blocked(&[10], false);
        pool.return_lease(la.lease_id);
        assert_eq!(pool.available()["CPU"], 1.0);
    }

    #[test]
    fn dead_workers_give_their_resources_back() {
        let mut pool = Pool::new(vec![1], res(1.0));
        pool.worker_spawned(vec![10], 100, 1);
        pool.worker_registered(&[10], "w10".into(), String::new());
        let mut a = request(&mut pool, 1, 1.0);
        pool.dispatch();
        let la = granted(&mut a).unwrap();
        pool.worker_exited(&[10]);
        assert_eq!(pool.available()["CPU"], 1.0);
        assert_eq!(pool.return_lease(la.lease_id), None, "a late return is harmless");
        assert_eq!(pool.available()["CPU"], 1.0);
    }

    fn group(n: u8) -> PlacementGroupId {
        PlacementGroupId::new([n; 14], ray_abi::JobId(1))
    }

    fn request_res(pool: &mut Pool, resources: Resources) -> oneshot::Receiver<LeaseReply> {
        let (tx, rx) = oneshot::channel();
        pool.enqueue(PendingLease {
            job: 1,
            resources,
            reply: tx,
            for_actor: false,
            detached: false,
            may_spill: false,
            owner: "owner".into(),
            request_id: 0,
        });
        rx
    }

    #[test]
    fn a_bundle_is_set_aside_then_usable_only_through_its_group() {
        let mut pool = Pool::new(vec![1], res(4.0));
        pool.worker_spawned(vec![10], 100, 1);
        pool.worker_registered(&[10], "w10".into(), String::new());
        let g = group(1);
        pool.prepare_bundles(g, &[(0, res(1.0)), (1, res(2.0))]).unwrap();
        assert_eq!(pool.available()["CPU"], 1.0, "prepared bundles are set aside");
        assert!(pool.prepare_bundles(group(2), &[(0, res(2.0))]).is_err(), "all or nothing");
        assert_eq!(pool.available()["CPU"], 1.0);
        pool.commit_bundles(g, &[0, 1]).unwrap();
        assert_eq!(pool.available()[&format!("CPU_group_1_{g}")], 2.0);
        assert_eq!(pool.available()[&format!("CPU_group_{g}")], 3.0);
        let mut plain = request(&mut pool, 1, 2.0);
        let mut inside = request_res(&mut pool, groups::in_group(&res(2.0), &g, Some(1)));
        pool.dispatch();
        assert!(granted(&mut plain).is_none(), "the group's CPUs are not for others");
        let lease = granted(&mut inside).expect("a task in the bundle runs");
        assert_eq!(pool.return_bundles(g, None, true), vec![100], "its worker must stop");
        assert_eq!(pool.available()["CPU"], 4.0);
        assert!(pool.total().keys().all(|k| groups::is_plain(k)), "{:?}", pool.total());
        pool.return_lease(lease.lease_id);
        assert!(pool.available().keys().all(|k| groups::is_plain(k)), "nothing of the group comes back");
        assert!(pool.prepare_bundles(g, &[(0, res(1.0))]).is_err(), "a removed group stays removed");
        let mut late = request_res(&mut pool, groups::in_group(&res(1.0), &g, None));
        pool.return_bundles(g, None, true);
        assert!(matches!(late.try_recv().map(|r| r.result), Ok(Some(lease_reply::Result::Unschedulable(_)))));
    }

    #[test]
    fn a_node_given_up_stops_its_actors_and_bundles_but_not_its_tasks() {
        let mut pool = Pool::new(vec![1], res(4.0));
        for (id, pid) in [(10u8, 100u32), (11, 101), (12, 102)] {
            pool.worker_spawned(vec![id], pid, 1);
            pool.worker_registered(&[id], format!("w{id}"), String::new());
        }
        let g = group(1);
        pool.prepare_bundles(g, &[(0, res(1.0))]).unwrap();
        pool.commit_bundles(g, &[0]).unwrap();
        let mut task = request(&mut pool, 1, 1.0);
        let mut in_bundle = request_res(&mut pool, groups::in_group(&res(1.0), &g, Some(0)));
        let (tx, mut actor) = oneshot::channel();
        pool.enqueue(PendingLease {
            job: 1,
            resources: res(1.0),
            reply: tx,
            for_actor: true,
            detached: false,
            may_spill: false,
            owner: "owner".into(),
            request_id: 1,
        });
        pool.dispatch();
        let task = granted(&mut task).expect("the task runs");
        let in_bundle = granted(&mut in_bundle).expect("the bundle's task runs");
        let actor = granted(&mut actor).expect("the actor runs");
        let pid = |lease: &Lease| pool.lease_worker_pid(lease.lease_id).unwrap();
        let mut expected = vec![pid(&in_bundle), pid(&actor)];
        expected.sort_unstable();
        let task_pid = pid(&task);
        assert_eq!(pool.drop_moved_work(), expected);
        assert!(pool.total().keys().all(|k| groups::is_plain(k)), "no bundle is left: {:?}", pool.total());
        assert_eq!(pool.lease_worker_pid(task.lease_id), Some(task_pid), "the plain task keeps its worker");
        for lease in [&in_bundle, &actor, &task] {
            pool.return_lease(lease.lease_id);
        }
        assert_eq!(pool.available()["CPU"], 4.0, "every CPU comes back once the workers are gone");
    }

    proptest! {
        /// Bundles prepared, committed, used by leases and returned in any order
        /// never create or lose a CPU, and leave no group resource behind.
        #[test]
        fn bundles_conserve_resources(ops in proptest::collection::vec((0u8..5, 0u8..3, 1u8..4), 1..60)) {
            let total = 4.0;
            let mut pool = Pool::new(vec![1], res(total));
            let mut leases: Vec<Lease> = Vec::new();
            let mut receivers = Vec::new();
            for w in 0..4u8 {
                pool.worker_spawned(vec![w], u32::from(w), 1);
                pool.worker_registered(&[w], format!("w{w}"), String::new());
            }
            for (op, g, cpu) in ops {
                let g = group(g);
                let cpus = f64::from(cpu) / 2.0;
                match op {
                    0 => { let _ = pool.prepare_bundles(g, &[(0, res(cpus))]); }
                    1 => { let _ = pool.commit_bundles(g, &[0]); }
                    2 => receivers.push(request_res(&mut pool, groups::in_group(&res(cpus), &g, Some(0)))),
                    3 => { pool.return_bundles(g, None, false); }
                    _ => if let Some(l) = leases.pop() { pool.return_lease(l.lease_id); },
                }
                pool.dispatch();
                for rx in receivers.iter_mut() {
                    if let Some(l) = granted(rx) {
                        leases.push(l);
                    }
                }
                let free = pool.available().get("CPU").copied().unwrap_or(0.0);
                prop_assert!(free >= -1e-9 && free <= total + 1e-9);
            }
            for l in leases {
                pool.return_lease(l.lease_id);
            }
            for g in 0..3 {
                pool.return_bundles(group(g), None, false);
            }
            prop_assert!((pool.available()["CPU"] - total).abs() < 1e-9);
            prop_assert!(pool.available().keys().chain(pool.total().keys()).all(|k| groups::is_plain(k)));
        }
    }

    proptest! {
        /// Whatever the order of grants, returns, blocking and deaths, resources are
        /// never lost or created once every lease ends.
        #[test]
        fn resources_are_conserved(ops in proptest::collection::vec((0u8..5, 0usize..6, 1u8..4), 1..60)) {
            let total = 3.0;
            let mut pool = Pool::new(vec![1], res(total));
            let mut receivers = Vec::new();
            let mut leases: Vec<Lease> = Vec::new();
            let mut next_worker = 0u8;
            for (op, pick, cpu) in ops {
                match op {
                    0 => receivers.push(request(&mut pool, 1, f64::from(cpu) / 2.0)),
                    1 => {
                        next_worker += 1;
                        pool.worker_spawned(vec![next_worker], u32::from(next_worker), 1);
                        pool.worker_registered(&[next_worker], format!("w{next_worker}"), String::new());
                    }
                    2 => if !leases.is_empty() {
                        let l = leases.remove(pick % leases.len());
                        pool.return_lease(l.lease_id);
                    },
                    3 => if !leases.is_empty() {
                        let l = &leases[pick % leases.len()];
                        pool.set_blocked(&l.worker_id, pick % 2 == 0);
                    },
                    _ => if !leases.is_empty() {
                        let l = leases.remove(pick % leases.len());
                        pool.worker_exited(&l.worker_id);
                    },
                }
                pool.dispatch();
                for rx in receivers.iter_mut() {
                    if let Some(l) = granted(rx) {
                        leases.push(l);
                    }
                }
                let cpu_avail = pool.available().get("CPU").copied().unwrap_or(0.0);
                prop_assert!(cpu_avail <= total + 1e-6);
            }
            for l in leases {
                pool.set_blocked(&l.worker_id, false);
                pool.return_lease(l.lease_id);
            }
            prop_assert!((pool.available()["CPU"] - total).abs() < 1e-6);
        }
    }
}
