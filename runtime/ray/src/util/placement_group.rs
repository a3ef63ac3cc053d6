//! Placement groups and scheduling strategies: Ray's `ray.util.placement_group`
//! and `ray.util.scheduling_strategies`.
//!
//! A placement group reserves bundles of resources across nodes at once (gang
//! scheduling); tasks and actors then run inside its bundles:
//!
//! ```no_run
//! use ray::util::{PlacementGroupSchedulingStrategy, Strategy, placement_group};
//!
//! # #[ray::remote] fn work() -> u32 { 1 }
//! # fn main() -> Result<(), ray::RayError> {
//! let pg = placement_group([[("CPU", 1)], [("CPU", 1)]], Strategy::StrictSpread)?;
//! ray::get(&pg.ready())?;
//! let r = work.options().scheduling_strategy(PlacementGroupSchedulingStrategy::new(&pg).bundle_index(0)).remote();
//! ray::get(&r)?;
//! ray::util::remove_placement_group(&pg)?;
//! # Ok(()) }
//! ```

use crate::{ObjectRef, RayError, host};
use ray_abi::{
    Bundle, HostBuf, PlacementGroupCreation, PlacementGroupId, PlacementGroupReply, PlacementGroupRequest, Slice,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

pub use ray_abi::{GroupState, PlacementGroupState, PlacementStrategy as Strategy, SchedulingStrategy};

fn call(request: &PlacementGroupRequest) -> Result<PlacementGroupReply, RayError> {
    let bytes = postcard::to_stdvec(request)
        .map_err(|e| RayError::Encode { type_name: "PlacementGroupRequest".into(), detail: e.to_string() })?;
    let t = host::table()?;
    let mut out = HostBuf::EMPTY;
    let mut err = HostBuf::EMPTY;
    // SAFETY: pointers are to live locals for the duration of the call.
    let status = unsafe { (t.placement_group)(Slice::of(&bytes), &mut out, &mut err) };
    host::check(t, status, err)?;
    let lent = host::Lent::new(t, out);
    postcard::from_bytes(lent.bytes()).map_err(|e| RayError::Internal(format!("bad placement-group reply: {e}")))
}

fn unexpected(reply: PlacementGroupReply) -> RayError {
    RayError::Internal(format!("unexpected placement-group reply: {reply:?}"))
}

/// A placement group: Ray's `PlacementGroup`. It can be passed into tasks, and
/// `ray::get(&pg.ready())` returns it once every bundle is reserved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlacementGroup {
    id: PlacementGroupId,
    bundles: Vec<Bundle>,
}

impl PlacementGroup {
    fn from_state(state: PlacementGroupState) -> Self {
        PlacementGroup { id: state.id, bundles: state.bundles }
    }

    /// The group's id (36 hex digits, as Ray prints it).
    pub fn id(&self) -> PlacementGroupId {
        self.id
    }

    /// The bundles, by index: Ray's `bundle_specs`.
    pub fn bundle_specs(&self) -> &[Bundle] {
        &self.bundles
    }

    /// How many bundles it has: Ray's `bundle_count`.
    pub fn bundle_count(&self) -> usize {
        self.bundles.len()
    }

    /// An object that becomes this group once every bundle is reserved, to `get`,
    /// `wait` on or `.await`. A group that is removed first makes it fail.
    pub fn ready(&self) -> ObjectRef<PlacementGroup> {
        let ready = crate::codec::encode(self).and_then(|value| {
            match call(&PlacementGroupRequest::Ready { id: self.id, value: value.to_vec() })? {
                PlacementGroupReply::Object(id) => Ok(id),
                other => Err(unexpected(other)),
            }
        });
        match ready {
            Ok(id) => ObjectRef::from_counted(id),
            Err(e) => ObjectRef::failed(e),
        }
    }

    /// Waits up to `timeout` for every bundle to be reserved; whether they are.
    pub fn wait(&self, timeout: Duration) -> Result<bool, RayError> {
        let timeout_ms = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
        match call(&PlacementGroupRequest::Wait { id: self.id, timeout_ms })? {
            PlacementGroupReply::Ready(ready) => Ok(ready),
            other => Err(unexpected(other)),
        }
    }

    /// The head's record of the group now: its state and where each bundle sits.
    pub fn state(&self) -> Result<PlacementGroupState, RayError> {
        match call(&PlacementGroupRequest::Lookup(self.id))? {
            PlacementGroupReply::Group(state) => Ok(state),
            other => Err(unexpected(other)),
        }
    }
}

/// Options of a placement group beyond its bundles and strategy.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PlacementGroupOptions {
    name: Option<String>,
    namespace: Option<String>,
    detached: bool,
}

impl PlacementGroupOptions {
    /// No name, the job's namespace, and the job's lifetime.
    pub fn new() -> Self {
        Self::default()
    }

    /// A name to find it by with [`get_placement_group`].
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_string());
        self
    }

    /// The namespace of the name (default: the job's).
    pub fn namespace(mut self, namespace: &str) -> Self {
        self.namespace = Some(namespace.to_string());
        self
    }

    /// Outlive the creating job, until removed (Ray's `lifetime="detached"`).
    pub fn lifetime_detached(mut self) -> Self {
        self.detached = true;
        self
    }
}

/// Reserves `bundles` with `strategy`: Ray's `ray.util.placement_group`.
///
/// Each bundle is a resource map, e.g. `[("CPU", 1)]` or a `HashMap`. The group
/// is created in the background; wait for it with [`PlacementGroup::ready`] or
/// [`PlacementGroup::wait`].
pub fn placement_group<B, K, V>(
    bundles: impl IntoIterator<Item = B>,
    strategy: Strategy,
) -> Result<PlacementGroup, RayError>
where
    B: IntoIterator<Item = (K, V)>,
    K: Into<String>,
    V: Into<f64>,
{
    placement_group_with(bundles, strategy, PlacementGroupOptions::default())
}

/// [`placement_group`] with a name, a namespace or a detached lifetime.
pub fn placement_group_with<B, K, V>(
    bundles: impl IntoIterator<Item = B>,
    strategy: Strategy,
    options: PlacementGroupOptions,
) -> Result<PlacementGroup, RayError>
where
    B: IntoIterator<Item = (K, V)>,
    K: Into<String>,
    V: Into<f64>,
{
    let bundles: Vec<Bundle> = bundles
        .into_iter()
        .map(|b| b.into_iter().map(|(k, v)| (k.into(), v.into())).collect::<BTreeMap<String, f64>>())
        .collect();
    let creation = PlacementGroupCreation {
        bundles: bundles.clone(),
        strategy,
        name: options.name,
        namespace: options.namespace,
        detached: options.detached,
    };
    creation.validate()?;
    match call(&PlacementGroupRequest::Create(creation))? {
        PlacementGroupReply::Created(id) => Ok(PlacementGroup { id, bundles }),
        other => Err(unexpected(other)),
    }
}

/// Removes a group: its bundles are freed, its actors killed and its tasks
/// stopped. Ray's `ray.util.remove_placement_group`.
pub fn remove_placement_group(pg: &PlacementGroup) -> Result<(), RayError> {
    match call(&PlacementGroupRequest::Remove(pg.id))? {
        PlacementGroupReply::Done => Ok(()),
        other => Err(unexpected(other)),
    }
}

/// A live group by name, in the job's namespace.
pub fn get_placement_group(name: &str) -> Result<PlacementGroup, RayError> {
    get_placement_group_in(name, None)
}

/// A live group by name, in `namespace` (the job's if `None`).
pub fn get_placement_group_in(name: &str, namespace: Option<&str>) -> Result<PlacementGroup, RayError> {
    let request = PlacementGroupRequest::Named { name: name.to_string(), namespace: namespace.map(str::to_string) };
    match call(&request)? {
        PlacementGroupReply::Group(state) => Ok(PlacementGroup::from_state(state)),
        other => Err(unexpected(other)),
    }
}

/// Every group the cluster knows, by id (hex): Ray's `placement_group_table()`.
pub fn placement_group_table() -> Result<BTreeMap<String, PlacementGroupState>, RayError> {
    match call(&PlacementGroupRequest::Table)? {
        PlacementGroupReply::Table(groups) => Ok(groups.into_iter().map(|g| (g.id.to_string(), g)).collect()),
        other => Err(unexpected(other)),
    }
}

/// The group the calling task or actor runs in, if any: Ray's
/// `get_current_placement_group()`. `None` in a driver.
pub fn get_current_placement_group() -> Result<Option<PlacementGroup>, RayError> {
    match call(&PlacementGroupRequest::Current)? {
        PlacementGroupReply::Current(state) => Ok(state.map(PlacementGroup::from_state)),
        other => Err(unexpected(other)),
    }
}

/// Runs a task or actor in a placement group: Ray's
/// `PlacementGroupSchedulingStrategy`.
#[derive(Debug, Clone, PartialEq)]
pub struct PlacementGroupSchedulingStrategy {
    /// The group.
    pub placement_group: PlacementGroup,
    /// One bundle by index, or `None` for any of the group's bundles.
    pub bundle_index: Option<usize>,
    /// Tasks and actors this one submits run in the group too.
    pub capture_child_tasks: bool,
}

impl PlacementGroupSchedulingStrategy {
    /// Any bundle of `pg`, children not captured.
    pub fn new(pg: &PlacementGroup) -> Self {
        PlacementGroupSchedulingStrategy { placement_group: pg.clone(), bundle_index: None, capture_child_tasks: false }
    }

    /// Only bundle `index`.
    pub fn bundle_index(mut self, index: usize) -> Self {
        self.bundle_index = Some(index);
        self
    }

    /// Whether tasks and actors this one submits run in the group too.
    pub fn capture_child_tasks(mut self, yes: bool) -> Self {
        self.capture_child_tasks = yes;
        self
    }
}

/// Runs a task or actor on one node: Ray's `NodeAffinitySchedulingStrategy`.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeAffinitySchedulingStrategy {
    /// The node's id, in hex (`rayrepl list nodes`).
    pub node_id: String,
    /// Run elsewhere if that node is gone or too small, instead of failing.
    pub soft: bool,
}

impl NodeAffinitySchedulingStrategy {
    /// On `node_id`; with `soft`, elsewhere when it cannot be.
    pub fn new(node_id: impl Into<String>, soft: bool) -> Self {
        NodeAffinitySchedulingStrategy { node_id: node_id.into(), soft }
    }
}

/// What `.scheduling_strategy(..)` accepts: `"DEFAULT"`, `"SPREAD"`, a
/// [`PlacementGroupSchedulingStrategy`] or a [`NodeAffinitySchedulingStrategy`].
/// One that cannot be used (an unknown name, a bundle index out of range) makes
/// the call's result an error.
#[derive(Debug, Clone, PartialEq)]
pub struct Steer(pub(crate) SchedulingStrategy);

impl Steer {
    /// The strategy as the runtime takes it.
    #[doc(hidden)]
    pub fn into_strategy(self) -> SchedulingStrategy {
        self.0
    }
}

impl From<&str> for Steer {
    fn from(s: &str) -> Self {
        Steer(SchedulingStrategy::from(s))
    }
}

impl From<PlacementGroupSchedulingStrategy> for Steer {
    fn from(s: PlacementGroupSchedulingStrategy) -> Self {
        let count = s.placement_group.bundle_count();
        Steer(match s.bundle_index {
            Some(i) if i >= count => SchedulingStrategy::Invalid(RayError::InvalidArgument(format!(
                "bundle index {i} is out of range: placement group {} has {count} bundle(s), indexes 0 to {}",
                s.placement_group.id,
                count.saturating_sub(1)
            ))),
            bundle_index => SchedulingStrategy::PlacementGroup {
                placement_group: s.placement_group.id,
                bundle_index: bundle_index.map(|i| i as u32),
                capture_child_tasks: s.capture_child_tasks,
            },
        })
    }
}

impl From<NodeAffinitySchedulingStrategy> for Steer {
    fn from(s: NodeAffinitySchedulingStrategy) -> Self {
        Steer(SchedulingStrategy::NodeAffinity { node_id: s.node_id, soft: s.soft })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(bundles: usize) -> PlacementGroup {
        PlacementGroup {
            id: PlacementGroupId::new([1; 14], ray_abi::JobId(1)),
            bundles: vec![[("CPU".to_string(), 1.0)].into(); bundles],
        }
    }

    fn strategy_of(s: impl Into<Steer>) -> Result<SchedulingStrategy, RayError> {
        let s = s.into().into_strategy();
        s.check().map(|()| s)
    }

    #[test]
    fn a_bundle_index_out_of_range_is_refused_before_submitting() {
        let err = strategy_of(PlacementGroupSchedulingStrategy::new(&group(2)).bundle_index(2)).unwrap_err();
        assert!(err.to_string().contains("bundle index 2 is out of range"), "{err}");
        let ok = strategy_of(PlacementGroupSchedulingStrategy::new(&group(2)).bundle_index(1)).unwrap();
        assert!(matches!(ok, SchedulingStrategy::PlacementGroup { bundle_index: Some(1), .. }));
        assert_eq!(strategy_of("SPREAD"), Ok(SchedulingStrategy::Spread));
        assert!(strategy_of("PACK").is_err(), "PACK is a group strategy, not a task's");
    }
}
