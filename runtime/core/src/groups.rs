//! Placement groups and scheduling strategies, from the caller's side.
//!
//! The head keeps every placement group and reserves its bundles; a driver or
//! worker only asks it to create, remove, find or list them. What the caller does
//! itself is translate a task's or actor's `scheduling_strategy` into what the
//! rest of the system acts on: a group's task asks for the group's own resources
//! (`ray_proto::groups`), a spread or node-affine task carries its strategy to
//! the node that grants its lease, and a task whose group captures its children
//! passes the group on to what it submits. `pg.ready()` is an object this
//! process owns, settled when the head reports the group created, so it can be
//! `get`, `wait`ed and awaited like any other.
//!
//! Creating an unnamed group and removing a group need no answer the caller
//! could act on (the bundles are checked here), so they are queued and sent to
//! the head in order, many per call ([`GroupCalls`]): a loop that creates a
//! hundred groups waits for one round trip, not a hundred. Anything that lets
//! another process or the head's answer see a group (a lookup, a wait, a task,
//! an actor, a put) first waits until what was queued before it has been sent.

use crate::refs::{Effects, State, Value};
use crate::scheduler::{Resources, Steering};
use crate::{CoreWorker, block_on, lock};
use ray_abi::{
    ObjectId, PlacementGroupCreation, PlacementGroupId, PlacementGroupReply, PlacementGroupRequest,
    PlacementGroupState, RayError, SchedulingStrategy,
};
use ray_proto::groups::{in_group, wire_bundles};
use ray_proto::placement_group_info::State as GroupState;
use ray_proto::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// A call queued for the head.
enum GroupCall {
    Create(PlacementGroupInfo),
    Remove(PlacementGroupId),
    /// Answered once everything queued before it has been sent.
    Flush(oneshot::Sender<()>),
}

/// Group calls this process queued for the head, sent in order and in batches.
pub(crate) struct GroupCalls {
    queue: mpsc::UnboundedSender<GroupCall>,
    /// Calls queued and not yet sent, so a flush with nothing queued is free.
    pending: Arc<AtomicUsize>,
    /// What went wrong with a queued call since the last flush: the next
    /// placement-group call reports it.
    failed: Arc<std::sync::Mutex<Option<RayError>>>,
}

impl GroupCalls {
    /// Starts the sender on the current runtime.
    pub(crate) fn start(head: HeadClient) -> Self {
        let (queue, calls) = mpsc::unbounded_channel();
        let pending = Arc::new(AtomicUsize::new(0));
        let failed = Arc::default();
        tokio::spawn(send_group_calls(head, calls, pending.clone(), Arc::clone(&failed)));
        GroupCalls { queue, pending, failed }
    }

    fn push(&self, call: GroupCall) -> Result<(), RayError> {
        self.pending.fetch_add(1, Ordering::SeqCst);
        self.queue.send(call).map_err(|_| {
            self.pending.fetch_sub(1, Ordering::SeqCst);
            RayError::NotInitialized
        })
    }
}

/// Sends queued calls in order: each run of creations, or of removals, in one call.
async fn send_group_calls(
    mut head: HeadClient,
    mut calls: mpsc::UnboundedReceiver<GroupCall>,
    pending: Arc<AtomicUsize>,
    failed: Arc<std::sync::Mutex<Option<RayError>>>,
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
        let (sent, errors) = match call {
            GroupCall::Flush(done) => {
                let _ = done.send(());
                pending.fetch_sub(1, Ordering::SeqCst);
                continue;
            }
            GroupCall::Create(info) => {
                let mut groups = vec![info];
                while let Ok(call) = calls.try_recv() {
                    match call {
                        GroupCall::Create(info) => groups.push(info),
                        other => {
                            next = Some(other);
                            break;
                        }
                    }
                }
                let sent = groups.len();
                (sent, head.create_placement_groups(CreatePlacementGroupsRequest { groups }).await)
            }
            GroupCall::Remove(id) => {
                let mut ids = vec![id.0.to_vec().into()];
                while let Ok(call) = calls.try_recv() {
                    match call {
                        GroupCall::Remove(id) => ids.push(id.0.to_vec().into()),
                        other => {
                            next = Some(other);
                            break;
                        }
                    }
                }
                let sent = ids.len();
                (sent, head.remove_placement_groups(RemovePlacementGroupsRequest { placement_group_ids: ids }).await)
            }
        };
        let error = match errors {
            Ok(reply) => reply.into_inner().errors.iter().find(|e| !e.is_empty()).map(|e| RayError::from_bytes(e)),
            Err(s) => Some(from_status(&s, "the head")),
        };
        if let Some(e) = error {
            tracing::warn!("a placement-group call failed: {e}");
            failed.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
        }
        pending.fetch_sub(sent, Ordering::SeqCst);
    }
}

fn unknown(id: &PlacementGroupId) -> RayError {
    RayError::InvalidArgument(format!("the cluster has no placement group {id}; was it created on another cluster?"))
}

/// How long `ready()` waits in one call to the head before it checks whether
/// the group is infeasible, to say so once.
const READY_POLL: Duration = Duration::from_secs(5);

impl CoreWorker {
    /// Carries out a placement-group call of the API.
    pub fn placement_group(&self, request: PlacementGroupRequest) -> Result<PlacementGroupReply, RayError> {
        match request {
            PlacementGroupRequest::Create(creation) => self.create_placement_group(creation),
            PlacementGroupRequest::Remove(id) => self.remove_placement_group(id).map(|()| PlacementGroupReply::Done),
            PlacementGroupRequest::Named { name, namespace } => {
                let namespace = namespace.unwrap_or_else(|| self.namespace());
                let request =
                    GetPlacementGroupRequest { name: name.clone(), namespace: namespace.clone(), ..Default::default() };
                let info = self.ask_head(request)?.ok_or_else(|| {
                    RayError::InvalidArgument(format!(
                        "no placement group named {name:?} in namespace {namespace:?}; check the name, or list them \
                         with ray::util::placement_group_table()"
                    ))
                })?;
                info.to_state().map(PlacementGroupReply::Group)
            }
            PlacementGroupRequest::Lookup(id) => self.lookup(id).map(PlacementGroupReply::Group),
            PlacementGroupRequest::Table => {
                self.sent_group_calls()?;
                let mut head = self.0.head.clone();
                let groups = block_on(&self.0.rt, async move { head.list_placement_groups(Empty {}).await })
                    .map_err(|s| from_status(&s, "the head"))?
                    .into_inner()
                    .groups;
                let table = groups.iter().map(PlacementGroupInfo::to_state).collect::<Result<_, _>>()?;
                Ok(PlacementGroupReply::Table(table))
            }
            PlacementGroupRequest::Wait { id, timeout_ms } => {
                self.usable(&id)?;
                let request = GetPlacementGroupRequest {
                    placement_group_id: id.0.to_vec().into(),
                    wait: true,
                    timeout_ms,
                    ..Default::default()
                };
                let info = self.ask_head(request)?.ok_or_else(|| unknown(&id))?;
                match info.state() {
                    GroupState::Removed => Err(RayError::PlacementGroupRemoved { id: id.to_string() }),
                    state => Ok(PlacementGroupReply::Ready(state == GroupState::Created)),
                }
            }
            PlacementGroupRequest::Ready { id, value } => {
                self.usable(&id)?;
                self.sent_group_calls()?;
                Ok(PlacementGroupReply::Object(self.ready_object(id, value)))
            }
            PlacementGroupRequest::Current => {
                let current = lock(&self.0.current).placement_group.clone();
                let Some(group) = current else { return Ok(PlacementGroupReply::Current(None)) };
                let id = PlacementGroupId::from_bytes(&group.placement_group_id)?;
                self.lookup(id).map(|s| PlacementGroupReply::Current(Some(s)))
            }
        }
    }

    /// Waits until the group calls queued so far have reached the head, so
    /// whatever comes next is ordered after them.
    pub(crate) fn flush_group_calls(&self) {
        let calls = &self.0.group_calls;
        if calls.pending.load(Ordering::SeqCst) == 0 {
            return;
        }
        let (done, flushed) = oneshot::channel();
        if calls.push(GroupCall::Flush(done)).is_ok() {
            // The sender lives as long as this process's runtime.
            let _ = block_on(&self.0.rt, flushed);
        }
    }

    /// [`CoreWorker::flush_group_calls`], then what went wrong with a queued
    /// call since the last report (a creation the head refused, say).
    fn sent_group_calls(&self) -> Result<(), RayError> {
        self.flush_group_calls();
        match self.0.group_calls.failed.lock().unwrap_or_else(|p| p.into_inner()).take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The head's record of a group; `None` if it has none.
    fn ask_head(&self, request: GetPlacementGroupRequest) -> Result<Option<PlacementGroupInfo>, RayError> {
        self.sent_group_calls()?;
        let mut head = self.0.head.clone();
        match block_on(&self.0.rt, async move { head.get_placement_group(request).await }) {
            Ok(info) => Ok(Some(info.into_inner())),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
            Err(s) => Err(from_status(&s, "the head")),
        }
    }

    fn lookup(&self, id: PlacementGroupId) -> Result<PlacementGroupState, RayError> {
        let request = GetPlacementGroupRequest { placement_group_id: id.0.to_vec().into(), ..Default::default() };
        self.ask_head(request)?.ok_or_else(|| unknown(&id))?.to_state()
    }

    /// Refuses a group this process removed: it can never be created again.
    fn usable(&self, id: &PlacementGroupId) -> Result<(), RayError> {
        if lock(&self.0.removed_groups).contains(id) {
            return Err(RayError::PlacementGroupRemoved { id: id.to_string() });
        }
        Ok(())
    }

    fn create_placement_group(&self, creation: PlacementGroupCreation) -> Result<PlacementGroupReply, RayError> {
        creation.validate()?;
        let id = PlacementGroupId::new(rand::random(), self.0.job);
        let namespace = creation.namespace.clone().unwrap_or_else(|| self.namespace());
        let mut info = PlacementGroupInfo {
            placement_group_id: id.0.to_vec().into(),
            name: creation.name.clone().unwrap_or_default(),
            namespace,
            creator_job_id: self.0.job.0,
            bundles: wire_bundles(&creation.bundles),
            detached: creation.detached,
            ..PlacementGroupInfo::default()
        };
        info.set_strategy(creation.strategy.into());
        if info.name.is_empty() {
            self.0.group_calls.push(GroupCall::Create(info))?;
            return Ok(PlacementGroupReply::Created(id));
        }
        // A name may be taken: that answer is the caller's, so wait for it.
        self.sent_group_calls()?;
        let mut head = self.0.head.clone();
        let request = CreatePlacementGroupsRequest { groups: vec![info] };
        let reply = block_on(&self.0.rt, async move { head.create_placement_groups(request).await })
            .map_err(|s| from_status(&s, "the head"))?
            .into_inner();
        match reply.errors.first().filter(|e| !e.is_empty()) {
            Some(e) => Err(RayError::from_bytes(e)),
            None => Ok(PlacementGroupReply::Created(id)),
        }
    }

    fn remove_placement_group(&self, id: PlacementGroupId) -> Result<(), RayError> {
        self.usable(&id)?;
        lock(&self.0.removed_groups).insert(id);
        self.0.group_calls.push(GroupCall::Remove(id))
    }

    /// An object owned here that becomes `value` once the group is created, or
    /// fails if it is removed first.
    fn ready_object(&self, id: PlacementGroupId, value: Vec<u8>) -> ObjectId {
        let object = self.next_put_id();
        lock(&self.0.refs).add_owned(object, State::Pending, Vec::new());
        let cw = self.clone();
        self.0.rt.spawn(async move {
            let settled = cw.wait_created(id).await;
            let state = match settled {
                Ok(()) => State::Ready(Value::Inline(value.into())),
                Err(e) => State::Failed(e),
            };
            let mut fx = Effects::default();
            lock(&cw.0.refs).settle(&object, state, &mut fx);
            cw.apply(fx);
        });
        object
    }

    /// Waits until the head reports the group created; says once, as Ray's
    /// autoscaler does, when no node could ever hold it.
    async fn wait_created(&self, id: PlacementGroupId) -> Result<(), RayError> {
        let mut warned = false;
        loop {
            let request = GetPlacementGroupRequest {
                placement_group_id: id.0.to_vec().into(),
                wait: true,
                timeout_ms: READY_POLL.as_millis() as i64,
                ..Default::default()
            };
            let info = match self.0.head.clone().get_placement_group(request).await {
                Ok(info) => info.into_inner(),
                Err(s) if s.code() == tonic::Code::NotFound => return Err(unknown(&id)),
                Err(s) => return Err(from_status(&s, "the head")),
            };
            match info.state() {
                GroupState::Created => return Ok(()),
                GroupState::Removed => return Err(RayError::PlacementGroupRemoved { id: id.to_string() }),
                GroupState::Nil | GroupState::Pending | GroupState::Rescheduling => {
                    if info.infeasible && !warned {
                        warned = true;
                        eprintln!("(autoscaler) Error: placement group {id}: {}", info.waiting_for);
                    }
                    if self.0.shut_down.load(std::sync::atomic::Ordering::Relaxed) {
                        return Err(RayError::NotInitialized);
                    }
                }
            }
        }
    }

    /// What a task or actor with this strategy asks for, and how its leases are
    /// chosen. Without a strategy of its own, a task inherits its parent's group
    /// when the parent's group captures child tasks.
    pub(crate) fn steer(
        &self,
        strategy: &SchedulingStrategy,
        demand: Resources,
    ) -> Result<(Resources, Steering), RayError> {
        strategy.check()?;
        let inherited = match strategy {
            SchedulingStrategy::Default => lock(&self.0.current)
                .placement_group
                .clone()
                .filter(|g| g.capture_child_tasks)
                .map(|g| -> Result<SchedulingStrategy, RayError> {
                    Ok(SchedulingStrategy::PlacementGroup {
                        placement_group: PlacementGroupId::from_bytes(&g.placement_group_id)?,
                        bundle_index: None,
                        capture_child_tasks: true,
                    })
                })
                .transpose()?,
            _ => None,
        };
        let lease = |kind| Steering { lease: Some(LeaseStrategy { kind: Some(kind) }), group: None };
        match inherited.as_ref().unwrap_or(strategy) {
            SchedulingStrategy::Default | SchedulingStrategy::Invalid(_) => Ok((demand, Steering::default())),
            SchedulingStrategy::Spread => Ok((demand, lease(lease_strategy::Kind::Spread(true)))),
            SchedulingStrategy::NodeAffinity { node_id, soft } => {
                let node_id = ray_abi::ids::unhex(node_id)?.into();
                Ok((demand, lease(lease_strategy::Kind::NodeAffinity(NodeAffinity { node_id, soft: *soft }))))
            }
            SchedulingStrategy::PlacementGroup { placement_group, bundle_index, capture_child_tasks } => {
                self.usable(placement_group)?;
                self.sent_group_calls()?;
                let group = PlacementGroupRef {
                    placement_group_id: placement_group.0.to_vec().into(),
                    bundle_index: bundle_index.map_or(-1, |i| i as i32),
                    capture_child_tasks: *capture_child_tasks,
                };
                Ok((in_group(&demand, placement_group, *bundle_index), Steering { lease: None, group: Some(group) }))
            }
        }
    }
}
