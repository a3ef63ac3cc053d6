//! The placement-group manager: Ray's GCS placement-group manager and scheduler.
//!
//! A placement group reserves bundles of resources on several nodes at once, all
//! or nothing. The head owns every group's record; it decides where bundles go
//! ([`crate::bundle_placement`]) and reserves them with two phases, so no node
//! keeps a bundle of a group that was not created:
//!
//! 1. prepare: every chosen node sets its bundles aside, or refuses;
//! 2. commit: once all prepared, every node turns them into the group's own
//!    resources (`CPU_group_<i>_<id>`); if any prepare or commit fails, every
//!    node involved gives its bundles back and the group waits again.
//!
//! Groups are reserved one at a time, in the order they were created, from the
//! freshest view of each node: every bundle reply carries the node's resources,
//! so the next group sees what the last one took without waiting for a heartbeat.
//! A group that does not fit now stays PENDING and says what it waits for; one
//! that could never fit is flagged infeasible, as Ray's autoscaler reports it,
//! and is still created if a node that can hold it joins. When a node dies, its
//! bundles are placed again (RESCHEDULING) next to the group's surviving ones.
//!
//! [`Groups`] makes every decision without I/O; [`PlacementGroups`] carries the
//! decisions out over gRPC.

use crate::bundle_placement::{Candidate, Decision, Strategy, decide};
use ray_abi::ids::hex;
use ray_abi::{PlacementGroupId, RayError};
use ray_proto::groups::Resources;
use ray_proto::placement_group_info::{State, Strategy as WireStrategy};
use ray_proto::*;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{Notify, mpsc, oneshot, watch};

/// Removed groups the head still answers for (Ray keeps them for its state API
/// too); older ones are forgotten, so a long session's table stays small.
const REMOVED_KEPT: usize = 1000;

/// How often groups that wait are tried again without news (a node joining or
/// freeing resources wakes the scheduler sooner).
const RETRY_EVERY: Duration = Duration::from_millis(200);

/// One node's part of a reservation: where to send it and which bundles.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NodePart {
    pub(crate) node_id: Vec<u8>,
    pub(crate) address: String,
    pub(crate) bundles: Vec<Bundle>,
}

/// A reservation to carry out: prepare every part, then commit every part.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Reservation {
    pub(crate) group: PlacementGroupId,
    pub(crate) attempt: u64,
    pub(crate) parts: Vec<NodePart>,
}

/// Bundles a node must give back.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Release {
    pub(crate) address: String,
    pub(crate) node_id: Vec<u8>,
    pub(crate) group: PlacementGroupId,
    /// Which bundles; every bundle of the group when the group is removed.
    pub(crate) bundles: Vec<u32>,
    pub(crate) removed: bool,
    /// What the node gets back of a created group's bundles: the next round may
    /// count on it at once, since the node gives them back before that round's
    /// calls reach it.
    pub(crate) freed: Resources,
}

struct Group {
    info: PlacementGroupInfo,
    /// Creation order: older groups are reserved first.
    seq: u64,
    /// The reservation in flight, if any.
    attempt: Option<Reservation>,
}

impl Group {
    fn id(&self) -> PlacementGroupId {
        self.info.id().unwrap_or_default()
    }

    fn waits(&self) -> bool {
        matches!(self.info.state(), State::Pending | State::Rescheduling) && self.attempt.is_none()
    }
}

/// Every placement group, and the decisions about them.
#[derive(Default)]
pub(crate) struct Groups {
    groups: HashMap<PlacementGroupId, Group>,
    names: HashMap<(String, String), PlacementGroupId>,
    /// Removed groups, oldest first.
    removed: std::collections::VecDeque<PlacementGroupId>,
    next_seq: u64,
    next_attempt: u64,
}

fn strategy(info: &PlacementGroupInfo) -> Strategy {
    match info.strategy() {
        WireStrategy::Pack => Strategy::Pack,
        WireStrategy::Spread => Strategy::Spread,
        WireStrategy::StrictPack => Strategy::StrictPack,
        WireStrategy::StrictSpread => Strategy::StrictSpread,
    }
}

impl Groups {
    /// Registers a group; it is PENDING until [`Groups::next_reservation`] places it.
    pub(crate) fn create(&mut self, mut info: PlacementGroupInfo, now_ms: u64) -> Result<PlacementGroupInfo, RayError> {
        let id = info.id()?;
        if info.bundles.is_empty() {
            return Err(RayError::InvalidArgument("a placement group needs at least one bundle".into()));
        }
        let key = (info.namespace.clone(), info.name.clone());
        if !info.name.is_empty() && self.names.contains_key(&key) {
            return Err(RayError::InvalidArgument(format!(
                "a placement group named {:?} already exists in namespace {:?}; remove it or pick another name",
                info.name, info.namespace
            )));
        }
        if self.groups.contains_key(&id) {
            return Err(RayError::InvalidArgument(format!("placement group {id} already exists")));
        }
        for (i, b) in info.bundles.iter_mut().enumerate() {
            b.index = i as u32;
            b.node_id = Default::default();
        }
        info.set_state(State::Pending);
        info.create_time_ms = now_ms;
        if !info.name.is_empty() {
            self.names.insert(key, id);
        }
        self.next_seq += 1;
        self.groups.insert(id, Group { info: info.clone(), seq: self.next_seq, attempt: None });
        Ok(info)
    }

    /// A group's record.
    pub(crate) fn get(&self, id: &PlacementGroupId) -> Option<&PlacementGroupInfo> {
        self.groups.get(id).map(|g| &g.info)
    }

    /// A live group by name.
    pub(crate) fn named(&self, namespace: &str, name: &str) -> Option<&PlacementGroupInfo> {
        let id = self.names.get(&(namespace.to_string(), name.to_string()))?;
        self.get(id)
    }

    /// Every group, oldest first.
    pub(crate) fn list(&self) -> Vec<PlacementGroupInfo> {
        let mut all: Vec<&Group> = self.groups.values().collect();
        all.sort_by_key(|g| g.seq);
        all.into_iter().map(|g| g.info.clone()).collect()
    }

    /// Whether any group waits for room.
    pub(crate) fn any_waiting(&self) -> bool {
        self.groups.values().any(Group::waits)
    }

    /// The waiting groups that fit the cluster now, oldest first, each as a
    /// reservation to carry out; what one takes is not offered to the next.
    /// Groups that do not fit say what they wait for.
    pub(crate) fn next_reservations(&mut self, nodes: &[NodeInfo]) -> Vec<Reservation> {
        let alive: Vec<&NodeInfo> = nodes.iter().filter(|n| n.is_alive()).collect();
        let mut free: Vec<Resources> = alive.iter().map(|n| resources_to_map(&n.available)).collect();
        let mut waiting: Vec<&mut Group> = self.groups.values_mut().filter(|g| g.waits()).collect();
        waiting.sort_by_key(|g| g.seq);
        let mut reservations = Vec::new();
        for group in waiting {
            let unplaced: Vec<&Bundle> = group.info.bundles.iter().filter(|b| b.node_id.is_empty()).collect();
            let hosting = |n: &NodeInfo| group.info.bundles.iter().filter(|b| b.node_id == n.node_id).count();
            let candidates = |sides: &[Resources]| -> Vec<Candidate> {
                alive.iter().zip(sides).map(|(n, side)| Candidate { free: side.clone(), hosting: hosting(n) }).collect()
            };
            let totals: Vec<Resources> = alive.iter().map(|n| resources_to_map(&n.total)).collect();
            let demands: Vec<Resources> = unplaced.iter().map(|b| resources_to_map(&b.resources)).collect();
            match decide(&demands, strategy(&group.info), &candidates(&free), &candidates(&totals)) {
                Decision::Place(on) => {
                    let mut parts: BTreeMap<usize, Vec<Bundle>> = BTreeMap::new();
                    for ((bundle, demand), node) in unplaced.iter().zip(&demands).zip(on) {
                        for (k, v) in demand {
                            *free[node].entry(k.clone()).or_insert(0.0) -= v;
                        }
                        parts.entry(node).or_default().push((*bundle).clone());
                    }
                    self.next_attempt += 1;
                    let reservation = Reservation {
                        group: group.id(),
                        attempt: self.next_attempt,
                        parts: parts
                            .into_iter()
                            .map(|(node, bundles)| NodePart {
                                node_id: alive[node].node_id.to_vec(),
                                address: alive[node].address.clone(),
                                bundles,
                            })
                            .collect(),
                    };
                    group.attempt = Some(reservation.clone());
                    reservations.push(reservation);
                }
                Decision::Wait => {
                    group.info.infeasible = false;
                    group.info.waiting_for = format!("resources: {} must be free at once", shape(&demands));
                }
                Decision::Infeasible => {
                    group.info.infeasible = true;
                    group.info.waiting_for = format!(
                        "No available node types can fulfill resource request {} ({}). Add suitable nodes to \
                         this cluster to resolve this issue.",
                        shape(&demands),
                        group.info.strategy().as_str_name()
                    );
                }
            }
        }
        reservations
    }

    /// Every node prepared its part (`all_ok`), or one did not: commit the
    /// reservation, or give back what was prepared.
    pub(crate) fn prepared(&mut self, r: &Reservation, all_ok: bool) -> Result<(), Vec<Release>> {
        match self.groups.get(&r.group) {
            Some(g) if all_ok && g.info.state() != State::Removed && g.attempt.as_ref() == Some(r) => Ok(()),
            _ => Err(self.abandon(r)),
        }
    }

    /// Every node committed its part (`all_ok`), or one did not. Returns whether
    /// the group is now CREATED; else what to give back.
    pub(crate) fn committed(&mut self, r: &Reservation, all_ok: bool, now_ms: u64) -> Result<(), Vec<Release>> {
        let Some(g) = self.groups.get_mut(&r.group).filter(|g| g.attempt.as_ref() == Some(r)) else {
            return Err(releases(r));
        };
        if !all_ok || g.info.state() == State::Removed {
            return Err(self.abandon(r));
        }
        g.attempt = None;
        for part in &r.parts {
            for b in &part.bundles {
                if let Some(mine) = g.info.bundles.get_mut(b.index as usize) {
                    mine.node_id = part.node_id.clone().into();
                }
            }
        }
        g.info.set_state(State::Created);
        g.info.waiting_for.clear();
        g.info.infeasible = false;
        g.info.created_time_ms = now_ms;
        Ok(())
    }

    /// Gives up a reservation: the group waits again (unless removed), and every
    /// node of the reservation gives its part back.
    fn abandon(&mut self, r: &Reservation) -> Vec<Release> {
        if let Some(g) = self.groups.get_mut(&r.group).filter(|g| g.attempt.as_ref() == Some(r)) {
            g.attempt = None;
        }
        releases(r)
    }

    /// Removes a group: its name is free again, and every alive node gives back
    /// its bundles and fails requests for its resources.
    pub(crate) fn remove(&mut self, id: &PlacementGroupId, alive_nodes: &[NodeInfo]) -> Result<Vec<Release>, RayError> {
        let g = self.groups.get_mut(id).ok_or_else(|| RayError::PlacementGroupRemoved { id: id.to_string() })?;
        if g.info.state() == State::Removed {
            return Ok(Vec::new());
        }
        g.info.set_state(State::Removed);
        g.info.waiting_for.clear();
        let mut freed: HashMap<Vec<u8>, Resources> = HashMap::new();
        for b in &mut g.info.bundles {
            if !b.node_id.is_empty() {
                let on = freed.entry(b.node_id.to_vec()).or_default();
                for r in &b.resources {
                    *on.entry(r.name.clone()).or_insert(0.0) += r.amount;
                }
            }
            b.node_id = Default::default();
        }
        let key = (g.info.namespace.clone(), g.info.name.clone());
        if self.names.get(&key) == Some(id) {
            self.names.remove(&key);
        }
        let all: Vec<u32> = g.info.bundles.iter().map(|b| b.index).collect();
        self.removed.push_back(*id);
        while self.removed.len() > REMOVED_KEPT {
            if let Some(old) = self.removed.pop_front() {
                self.groups.remove(&old);
            }
        }
        Ok(alive_nodes
            .iter()
            .filter(|n| n.is_alive())
            .map(|n| Release {
                address: n.address.clone(),
                node_id: n.node_id.to_vec(),
                group: *id,
                bundles: all.clone(),
                removed: true,
                freed: freed.remove(n.node_id.as_ref() as &[u8]).unwrap_or_default(),
            })
            .collect())
    }

    /// The groups a finished job created that do not outlive it.
    pub(crate) fn of_finished_job(&self, job: u32) -> Vec<PlacementGroupId> {
        self.groups
            .values()
            .filter(|g| g.info.creator_job_id == job && !g.info.detached && g.info.state() != State::Removed)
            .map(Group::id)
            .collect()
    }

    /// A node died: its bundles are placed again.
    pub(crate) fn node_died(&mut self, node_id: &[u8]) {
        for g in self.groups.values_mut() {
            let mut lost = false;
            for b in g.info.bundles.iter_mut().filter(|b| b.node_id.as_ref() == node_id) {
                b.node_id = Default::default();
                lost = true;
            }
            if lost && g.info.state() == State::Created {
                g.info.set_state(State::Rescheduling);
            }
        }
    }
}

fn releases(r: &Reservation) -> Vec<Release> {
    r.parts
        .iter()
        .map(|p| Release {
            address: p.address.clone(),
            node_id: p.node_id.clone(),
            freed: Resources::new(),
            group: r.group,
            bundles: p.bundles.iter().map(|b| b.index).collect(),
            removed: false,
        })
        .collect()
}

/// Bundles as Ray's autoscaler prints a request: `[{CPU: 1}, {CPU: 1, GPU: 1}]`.
fn shape(bundles: &[Resources]) -> String {
    let parts: Vec<String> = bundles.iter().map(format_resources).collect();
    format!("[{}]", parts.join(", "))
}

/// The cluster's nodes as the head knows them, and a way to record a node's
/// fresher resources.
pub(crate) type NodeSource = Arc<dyn Fn() -> Vec<NodeInfo> + Send + Sync>;
pub(crate) type ViewSink = Arc<dyn Fn(&[u8], ResourceView) + Send + Sync>;
/// Adds resources a node is about to get back to the head's view of it.
pub(crate) type CreditSink = Arc<dyn Fn(&[u8], &Resources) + Send + Sync>;

/// What the manager asks of one node, in order: its calls go one at a time, so
/// bundles given back are free again before the next reservation there.
enum NodeCall {
    Prepare(Vec<GroupBundles>, oneshot::Sender<Option<BundlesReply>>),
    Commit(Vec<GroupBundles>, oneshot::Sender<Option<BundlesReply>>),
    Return(BundlesRequest),
}

/// The manager: [`Groups`] behind a lock, and the reservations it decides on.
#[derive(Clone)]
pub(crate) struct PlacementGroups {
    groups: Arc<Mutex<Groups>>,
    changed: Arc<watch::Sender<u64>>,
    kick: Arc<Notify>,
    token: Arc<str>,
    nodes: NodeSource,
    record_view: ViewSink,
    credit: CreditSink,
    /// Each node's queue of calls, by address.
    queues: Arc<Mutex<HashMap<String, mpsc::UnboundedSender<NodeCall>>>>,
}

impl PlacementGroups {
    pub(crate) fn new(token: &str, nodes: NodeSource, record_view: ViewSink, credit: CreditSink) -> Self {
        PlacementGroups {
            groups: Arc::default(),
            changed: Arc::new(watch::channel(0).0),
            kick: Arc::new(Notify::new()),
            token: token.into(),
            nodes,
            record_view,
            credit,
            queues: Arc::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Groups> {
        self.groups.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn notify(&self) {
        self.changed.send_modify(|v| *v += 1);
    }

    /// Something changed that may let a waiting group fit: try again now.
    pub(crate) fn kick(&self) {
        self.kick.notify_one();
    }

    pub(crate) fn create(&self, info: PlacementGroupInfo) -> Result<PlacementGroupInfo, RayError> {
        let info = self.lock().create(info, crate::now_ms())?;
        self.notify();
        self.kick();
        Ok(info)
    }

    pub(crate) fn get(&self, id: &PlacementGroupId) -> Option<PlacementGroupInfo> {
        self.lock().get(id).cloned()
    }

    pub(crate) fn named(&self, namespace: &str, name: &str) -> Option<PlacementGroupInfo> {
        self.lock().named(namespace, name).cloned()
    }

    pub(crate) fn list(&self) -> Vec<PlacementGroupInfo> {
        self.lock().list()
    }

    /// The group once it is CREATED or REMOVED, or as it is after `timeout`.
    pub(crate) async fn wait(&self, id: &PlacementGroupId, timeout: Option<Duration>) -> Option<PlacementGroupInfo> {
        let mut rx = self.changed.subscribe();
        let settled = async {
            loop {
                let info = self.get(id)?;
                if matches!(info.state(), State::Created | State::Removed) {
                    return Some(info);
                }
                if rx.changed().await.is_err() {
                    return Some(info);
                }
            }
        };
        match timeout {
            None => settled.await,
            Some(t) => match tokio::time::timeout(t, settled).await {
                Ok(info) => info,
                Err(_) => self.get(id),
            },
        }
    }

    /// Removes a group. Its nodes give its bundles back in the background, before
    /// any later reservation on them.
    pub(crate) fn remove(&self, id: &PlacementGroupId) -> Result<(), RayError> {
        let releases = self.lock().remove(id, &(self.nodes)())?;
        self.notify();
        self.release(releases);
        self.kick();
        Ok(())
    }

    /// Removes the groups of a finished job that do not outlive it.
    pub(crate) fn job_finished(&self, job: u32) {
        let ids = self.lock().of_finished_job(job);
        for id in ids {
            if let Err(e) = self.remove(&id) {
                tracing::warn!("placement group {id} of finished job {job} was not removed: {e}");
            }
        }
    }

    /// A node died: place its bundles again.
    pub(crate) fn node_died(&self, node_id: &[u8]) {
        self.lock().node_died(node_id);
        self.notify();
        self.kick();
    }

    /// Queues a call to node `node_id` at `address`; false if it cannot be reached.
    fn call(&self, address: &str, node_id: &[u8], call: NodeCall) -> bool {
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(queue) = queues.get(address).filter(|q| !q.is_closed()) {
            return queue.send(call).is_ok();
        }
        let node = match lazy_channel(address, &self.token) {
            Ok(channel) => node_client(channel),
            Err(e) => {
                tracing::debug!("cannot reach node {address} for placement groups: {e}");
                return false;
            }
        };
        let (queue, calls) = mpsc::unbounded_channel();
        tokio::spawn(serve_node(node, calls, address.to_string(), node_id.to_vec(), Arc::clone(&self.record_view)));
        let sent = queue.send(call).is_ok();
        queues.insert(address.to_string(), queue);
        sent
    }

    fn release(&self, releases: Vec<Release>) {
        for r in releases {
            if !r.freed.is_empty() {
                (self.credit)(&r.node_id, &r.freed);
            }
            let request = BundlesRequest {
                groups: vec![GroupBundles {
                    placement_group_id: r.group.0.to_vec().into(),
                    bundles: r.bundles.iter().map(|i| Bundle { index: *i, ..Bundle::default() }).collect(),
                }],
                groups_removed: r.removed,
            };
            self.call(&r.address, &r.node_id, NodeCall::Return(request));
        }
    }

    /// One phase of `reservations` on their nodes, one call per node; which
    /// reservations every node agreed to.
    async fn phase(&self, reservations: &[Reservation], commit: bool) -> Vec<bool> {
        let mut by_node: BTreeMap<(String, Vec<u8>), Vec<(usize, GroupBundles)>> = BTreeMap::new();
        for (i, r) in reservations.iter().enumerate() {
            for part in &r.parts {
                let bundles =
                    GroupBundles { placement_group_id: r.group.0.to_vec().into(), bundles: part.bundles.clone() };
                by_node.entry((part.address.clone(), part.node_id.clone())).or_default().push((i, bundles));
            }
        }
        let mut agreed = vec![true; reservations.len()];
        let mut replies = Vec::new();
        for ((address, node_id), parts) in by_node {
            let (tx, rx) = oneshot::channel();
            let (which, groups): (Vec<usize>, Vec<GroupBundles>) = parts.into_iter().unzip();
            let call = if commit { NodeCall::Commit(groups, tx) } else { NodeCall::Prepare(groups, tx) };
            if self.call(&address, &node_id, call) {
                replies.push((node_id, which, rx));
            } else {
                which.iter().for_each(|i| agreed[*i] = false);
            }
        }
        for (node_id, which, rx) in replies {
            match rx.await.ok().flatten() {
                Some(reply) => {
                    if let Some(view) = reply.view {
                        (self.record_view)(&node_id, view);
                    }
                    for (i, refused) in which.iter().zip(reply.refused.iter().map(Some).chain(std::iter::repeat(None)))
                    {
                        match refused {
                            Some(why) if why.is_empty() => {}
                            Some(why) => {
                                tracing::debug!("node {} refused bundles: {why}", hex(&node_id));
                                agreed[*i] = false;
                            }
                            None => agreed[*i] = false,
                        }
                    }
                }
                None => which.iter().for_each(|i| agreed[*i] = false),
            }
        }
        agreed
    }

    /// Reserves waiting groups, in rounds, for as long as the head runs.
    pub(crate) async fn run(self) {
        loop {
            let waiting = self.lock().any_waiting();
            if waiting {
                let _ = tokio::time::timeout(RETRY_EVERY, self.kick.notified()).await;
            } else {
                self.kick.notified().await;
            }
            while self.reserve_round().await {}
            // Pending groups learn what they wait for.
            self.notify();
        }
    }

    /// Reserves every waiting group that fits; false if none was created.
    async fn reserve_round(&self) -> bool {
        let reservations = self.lock().next_reservations(&(self.nodes)());
        if reservations.is_empty() {
            return false;
        }
        let prepared = self.phase(&reservations, false).await;
        let mut to_commit = Vec::new();
        for (r, ok) in reservations.into_iter().zip(prepared) {
            let decided = self.lock().prepared(&r, ok);
            match decided {
                Ok(()) => to_commit.push(r),
                Err(releases) => self.release(releases),
            }
        }
        let committed = self.phase(&to_commit, true).await;
        let mut created = false;
        for (r, ok) in to_commit.iter().zip(committed) {
            let outcome = self.lock().committed(r, ok, crate::now_ms());
            match outcome {
                Ok(()) => {
                    tracing::debug!("placement group {} created", r.group);
                    created = true;
                }
                Err(releases) => self.release(releases),
            }
        }
        if created {
            self.notify();
        }
        // A refusal means the view was stale: wait for news before trying again.
        created
    }
}

/// Carries out one node's calls in order. Bundles given back one group at a
/// time (a loop of removals) go in one call with the returns queued behind them.
async fn serve_node(
    mut node: NodeClient,
    mut calls: mpsc::UnboundedReceiver<NodeCall>,
    address: String,
    node_id: Vec<u8>,
    record_view: ViewSink,
) {
    let mut next = None;
    loop {
        let call = match next.take() {
            Some(call) => call,
            None => match calls.recv().await {
                Some(call) => call,
                None => return,
            },
        };
        let request = |groups| BundlesRequest { groups, groups_removed: false };
        match call {
            NodeCall::Prepare(groups, reply) => {
                let _ = reply.send(node.prepare_bundles(request(groups)).await.ok().map(tonic::Response::into_inner));
            }
            NodeCall::Commit(groups, reply) => {
                let _ = reply.send(node.commit_bundles(request(groups)).await.ok().map(tonic::Response::into_inner));
            }
            NodeCall::Return(mut returns) => {
                while let Ok(call) = calls.try_recv() {
                    match call {
                        NodeCall::Return(more) if more.groups_removed == returns.groups_removed => {
                            returns.groups.extend(more.groups);
                        }
                        other => {
                            next = Some(other);
                            break;
                        }
                    }
                }
                match node.return_bundles(returns).await {
                    // What was given back is free for the next reservation at once.
                    Ok(reply) => {
                        if let Some(view) = reply.into_inner().view {
                            record_view(&node_id, view);
                        }
                    }
                    // A node that cannot be reached is dying; its bundles die with it.
                    Err(s) => tracing::debug!("node {address} did not give back bundles: {}", s.message()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ray_abi::JobId;

    fn res(cpu: f64) -> Vec<Resource> {
        vec![Resource { name: "CPU".into(), amount: cpu }]
    }

    fn node(id: u8, total: f64, free: f64) -> NodeInfo {
        NodeInfo {
            node_id: vec![id].into(),
            address: format!("n{id}"),
            total: res(total),
            available: res(free),
            state: NodeState::Alive.into(),
            ..NodeInfo::default()
        }
    }

    fn group(n: u8, cpus: &[f64], strategy: WireStrategy) -> PlacementGroupInfo {
        let mut info = PlacementGroupInfo {
            placement_group_id: PlacementGroupId::new([n; 14], JobId(1)).0.to_vec().into(),
            bundles: cpus.iter().map(|c| Bundle { resources: res(*c), ..Bundle::default() }).collect(),
            creator_job_id: 1,
            ..PlacementGroupInfo::default()
        };
        info.set_strategy(strategy);
        info
    }

    fn id(n: u8) -> PlacementGroupId {
        PlacementGroupId::new([n; 14], JobId(1))
    }

    /// The first reservation of a round.
    fn one(groups: &mut Groups, nodes: &[NodeInfo]) -> Option<Reservation> {
        groups.next_reservations(nodes).into_iter().next()
    }

    #[test]
    fn a_round_reserves_every_group_that_fits_without_counting_a_cpu_twice() {
        let mut groups = Groups::default();
        for n in 1..=3 {
            groups.create(group(n, &[1.0], WireStrategy::Pack), 0).unwrap();
        }
        let round = groups.next_reservations(&[node(1, 2.0, 2.0)]);
        assert_eq!(round.iter().map(|r| r.group).collect::<Vec<_>>(), vec![id(1), id(2)], "two CPUs, two groups");
        assert!(groups.get(&id(3)).unwrap().waiting_for.contains("must be free"));
    }

    #[test]
    fn a_group_is_created_only_when_every_node_agrees() {
        let mut groups = Groups::default();
        groups.create(group(1, &[1.0, 1.0], WireStrategy::StrictSpread), 0).unwrap();
        let nodes = [node(1, 2.0, 2.0), node(2, 2.0, 2.0)];
        let r = one(&mut groups, &nodes).expect("fits");
        assert_eq!(r.parts.len(), 2, "one bundle per node");
        assert!(one(&mut groups, &nodes).is_none(), "one reservation in flight per group");
        let back = groups.prepared(&r, false).unwrap_err();
        assert_eq!(back.len(), 2, "a refused prepare gives back every part");
        assert!(back.iter().all(|b| !b.removed));
        assert_eq!(groups.get(&id(1)).unwrap().state(), State::Pending);
        let r = one(&mut groups, &nodes).expect("tried again");
        groups.prepared(&r, true).unwrap();
        groups.committed(&r, true, 5).unwrap();
        let info = groups.get(&id(1)).unwrap();
        assert_eq!(info.state(), State::Created);
        let mut on: Vec<Vec<u8>> = info.bundles.iter().map(|b| b.node_id.to_vec()).collect();
        on.sort();
        assert_eq!(on, vec![vec![1], vec![2]]);
    }

    #[test]
    fn a_failed_commit_leaves_nothing_reserved() {
        let mut groups = Groups::default();
        groups.create(group(1, &[1.0], WireStrategy::Pack), 0).unwrap();
        let r = one(&mut groups, &[node(1, 2.0, 2.0)]).unwrap();
        groups.prepared(&r, true).unwrap();
        let back = groups.committed(&r, false, 0).unwrap_err();
        assert_eq!(back, releases(&r));
        let info = groups.get(&id(1)).unwrap();
        assert_eq!(info.state(), State::Pending);
        assert!(info.bundles.iter().all(|b| b.node_id.is_empty()));
    }

    #[test]
    fn a_group_that_cannot_fit_waits_and_says_why() {
        let mut groups = Groups::default();
        groups.create(group(1, &[4.0], WireStrategy::Pack), 0).unwrap();
        groups.create(group(2, &[1.0, 1.0], WireStrategy::StrictSpread), 0).unwrap();
        assert!(one(&mut groups, &[node(1, 2.0, 2.0)]).is_none());
        let big = groups.get(&id(1)).unwrap();
        assert!(big.infeasible && big.waiting_for.contains("No available node types"), "{}", big.waiting_for);
        let spread = groups.get(&id(2)).unwrap();
        assert!(spread.infeasible, "STRICT_SPREAD over one node can never be met");
        // A node joins that can hold the big one.
        let r = one(&mut groups, &[node(1, 2.0, 2.0), node(2, 8.0, 8.0)]).unwrap();
        assert_eq!(r.group, id(1), "older groups go first");
        // Busy, not too small: it waits without being infeasible.
        let mut groups = Groups::default();
        groups.create(group(3, &[2.0], WireStrategy::Pack), 0).unwrap();
        assert!(one(&mut groups, &[node(1, 2.0, 1.0)]).is_none());
        let busy = groups.get(&id(3)).unwrap();
        assert!(!busy.infeasible && busy.waiting_for.contains("must be free"), "{}", busy.waiting_for);
    }

    #[test]
    fn a_dead_nodes_bundles_are_placed_again_beside_the_others() {
        let mut groups = Groups::default();
        groups.create(group(1, &[1.0, 1.0], WireStrategy::StrictSpread), 0).unwrap();
        let nodes = [node(1, 2.0, 2.0), node(2, 2.0, 2.0), node(3, 2.0, 2.0)];
        let r = one(&mut groups, &nodes[..2]).unwrap();
        groups.prepared(&r, true).unwrap();
        groups.committed(&r, true, 0).unwrap();
        groups.node_died(&[2]);
        assert_eq!(groups.get(&id(1)).unwrap().state(), State::Rescheduling);
        let mut after = nodes.clone();
        after[1].set_state(NodeState::Dead);
        let r = one(&mut groups, &after).expect("node 3 is free");
        assert_eq!(r.parts.len(), 1);
        assert_eq!(r.parts[0].node_id, vec![3], "not beside its STRICT_SPREAD sibling on node 1");
        assert_eq!(r.parts[0].bundles.len(), 1, "only the lost bundle");
        groups.prepared(&r, true).unwrap();
        groups.committed(&r, true, 0).unwrap();
        assert_eq!(groups.get(&id(1)).unwrap().state(), State::Created);
    }

    #[test]
    fn removal_frees_the_name_and_tells_every_node() {
        let mut groups = Groups::default();
        let mut named = group(1, &[1.0], WireStrategy::Pack);
        named.name = "pg".into();
        groups.create(named.clone(), 0).unwrap();
        let mut again = group(2, &[1.0], WireStrategy::Pack);
        again.name = "pg".into();
        assert!(groups.create(again.clone(), 0).is_err(), "names are unique while the group lives");
        let r = one(&mut groups, &[node(1, 2.0, 2.0)]).unwrap();
        groups.prepared(&r, true).unwrap();
        let nodes = [node(1, 2.0, 2.0), node(2, 2.0, 2.0)];
        let releases = groups.remove(&id(1), &nodes).unwrap();
        assert_eq!(releases.len(), 2, "every alive node hears of it");
        assert!(releases.iter().all(|r| r.removed));
        assert!(groups.committed(&r, true, 0).is_err(), "a removed group is never created");
        assert_eq!(groups.get(&id(1)).unwrap().state(), State::Removed);
        assert!(groups.named("", "pg").is_none());
        groups.create(again, 0).unwrap();
        assert!(groups.remove(&id(9), &nodes).is_err());
    }

    fn strategy_of(n: u8) -> WireStrategy {
        [WireStrategy::Pack, WireStrategy::Spread, WireStrategy::StrictPack, WireStrategy::StrictSpread]
            [usize::from(n % 4)]
    }

    proptest::proptest! {
        /// Whatever the cluster and the groups waiting, one round never promises a
        /// node more than it has free, keeps every strict strategy, and reserves
        /// nothing of a group that cannot be placed (which then says why).
        #[test]
        fn a_round_conserves_resources_and_keeps_strategies(
            nodes in proptest::collection::vec((1u8..5, 0u8..9), 1..5),
            groups in proptest::collection::vec((0u8..4, proptest::collection::vec(1u8..7, 1..4)), 1..6),
        ) {
            let cluster: Vec<NodeInfo> = nodes
                .iter()
                .enumerate()
                .map(|(i, (total, free))| node(i as u8, f64::from(*total), f64::from(*free.min(&(total * 2))) / 2.0))
                .collect();
            let mut table = Groups::default();
            for (n, (strategy, halves)) in groups.iter().enumerate() {
                let cpus: Vec<f64> = halves.iter().map(|h| f64::from(*h) / 2.0).collect();
                table.create(group(n as u8, &cpus, strategy_of(*strategy)), 0).unwrap();
            }
            let round = table.next_reservations(&cluster);
            let mut taken: HashMap<Vec<u8>, f64> = HashMap::new();
            for r in &round {
                let info = table.get(&r.group).unwrap().clone();
                let nodes_used: Vec<&Vec<u8>> = r.parts.iter().map(|p| &p.node_id).collect();
                let bundles: usize = r.parts.iter().map(|p| p.bundles.len()).sum();
                proptest::prop_assert_eq!(bundles, info.bundles.len(), "all bundles or none");
                match info.strategy() {
                    WireStrategy::StrictPack => proptest::prop_assert_eq!(nodes_used.len(), 1),
                    WireStrategy::StrictSpread => {
                        proptest::prop_assert!(r.parts.iter().all(|p| p.bundles.len() == 1), "one bundle per node")
                    }
                    WireStrategy::Pack | WireStrategy::Spread => {}
                }
                for part in &r.parts {
                    let cpu: f64 = part.bundles.iter().map(|b| resources_to_map(&b.resources)["CPU"]).sum();
                    *taken.entry(part.node_id.clone()).or_default() += cpu;
                }
            }
            for n in &cluster {
                let free = resources_to_map(&n.available)["CPU"];
                proptest::prop_assert!(taken.get(n.node_id.as_ref() as &[u8]).copied().unwrap_or(0.0) <= free + 1e-9);
            }
            let reserved: Vec<PlacementGroupId> = round.iter().map(|r| r.group).collect();
            for info in table.list() {
                let id = info.id().unwrap();
                proptest::prop_assert!(reserved.contains(&id) || !info.waiting_for.is_empty(), "a group left waiting says why");
                if info.infeasible {
                    proptest::prop_assert!(!reserved.contains(&id), "an infeasible group reserves nothing");
                }
            }
        }
    }

    #[test]
    fn only_the_newest_removed_groups_are_kept() {
        let mut groups = Groups::default();
        let ids: Vec<PlacementGroupId> =
            (0..REMOVED_KEPT + 2).map(|i| PlacementGroupId::new([0; 14], JobId(i as u32))).collect();
        for g in &ids {
            let mut info = group(1, &[1.0], WireStrategy::Pack);
            info.placement_group_id = g.0.to_vec().into();
            groups.create(info, 0).unwrap();
            groups.remove(g, &[]).unwrap();
        }
        assert!(groups.get(&ids[0]).is_none() && groups.get(&ids[1]).is_none());
        assert_eq!(groups.get(&ids[2]).map(|g| g.state()), Some(State::Removed));
        assert_eq!(groups.list().len(), REMOVED_KEPT);
    }
}
