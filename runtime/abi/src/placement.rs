//! Placement groups and scheduling strategies, as the API crate hands them to the
//! runtime.
//!
//! A placement group reserves bundles of resources across nodes at once (gang
//! scheduling); tasks and actors are then steered into it, or steered by node or
//! spread, with a scheduling strategy. These are the plain-data forms of Ray's
//! `ray.util.placement_group` calls and `scheduling_strategy` option that cross the
//! C-ABI as postcard bytes; the runtime validates them here, before anything is
//! reserved, so bad input is a typed error at the call.

use crate::RayError;
use crate::ids::{JobId, ObjectId, PlacementGroupId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// One bundle: resources reserved together on one node.
pub type Bundle = BTreeMap<String, f64>;

/// How a group's bundles are spread over nodes (Ray's `strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum PlacementStrategy {
    /// On one node if they fit, else on as few as possible.
    #[default]
    Pack,
    /// On different nodes where possible.
    Spread,
    /// All on one node, or not at all.
    StrictPack,
    /// Each on its own node, or not at all.
    StrictSpread,
}

impl fmt::Display for PlacementStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PlacementStrategy::Pack => "PACK",
            PlacementStrategy::Spread => "SPREAD",
            PlacementStrategy::StrictPack => "STRICT_PACK",
            PlacementStrategy::StrictSpread => "STRICT_SPREAD",
        })
    }
}

/// Where a task or actor runs: Ray's `scheduling_strategy` option.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub enum SchedulingStrategy {
    /// Ray's `"DEFAULT"`: the owner's node first, then wherever resources are free.
    #[default]
    Default,
    /// Ray's `"SPREAD"`: across nodes, round robin.
    Spread,
    /// On one node, by its hex id; with `soft`, elsewhere if that node is gone or
    /// can never hold it.
    NodeAffinity {
        /// The node's id, in hex as `rayrepl list nodes` prints it.
        node_id: String,
        /// Fall back to the default strategy instead of failing.
        soft: bool,
    },
    /// Into a placement group's reserved resources.
    PlacementGroup {
        /// The group.
        placement_group: PlacementGroupId,
        /// One bundle, or any of the group's bundles.
        bundle_index: Option<u32>,
        /// Tasks and actors this one submits go into the group too.
        capture_child_tasks: bool,
    },
    /// A strategy that cannot be used (an unknown name, a bundle index out of
    /// range): submitting fails with this error.
    Invalid(RayError),
}

impl From<&str> for SchedulingStrategy {
    /// Ray's string strategies, `"DEFAULT"` and `"SPREAD"`.
    fn from(s: &str) -> Self {
        match s {
            "DEFAULT" => SchedulingStrategy::Default,
            "SPREAD" => SchedulingStrategy::Spread,
            other => SchedulingStrategy::Invalid(RayError::InvalidArgument(format!(
                "unknown scheduling strategy {other:?}; use \"DEFAULT\", \"SPREAD\", a \
                 PlacementGroupSchedulingStrategy or a NodeAffinitySchedulingStrategy"
            ))),
        }
    }
}

impl SchedulingStrategy {
    /// The error for a strategy that cannot be used at all.
    pub fn check(&self) -> Result<(), RayError> {
        match self {
            SchedulingStrategy::Invalid(e) => Err(e.clone()),
            SchedulingStrategy::NodeAffinity { node_id, .. } if crate::ids::unhex(node_id).is_err() => {
                Err(RayError::InvalidArgument(format!(
                    "node id {node_id:?} is not a node id; copy one from `rayrepl list nodes`"
                )))
            }
            _ => Ok(()),
        }
    }
}

/// A placement group to create: Ray's `placement_group(bundles, strategy, name, lifetime)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct PlacementGroupCreation {
    /// The bundles, in order: bundle `i` is index `i`.
    pub bundles: Vec<Bundle>,
    /// How they are spread over nodes.
    pub strategy: PlacementStrategy,
    /// A name other processes can find it by.
    pub name: Option<String>,
    /// The namespace of the name (default: the job's).
    pub namespace: Option<String>,
    /// Outlive the creating job, until removed.
    pub detached: bool,
}

impl PlacementGroupCreation {
    /// Refuses what Ray refuses: no bundles, an empty bundle, or an amount that is
    /// negative or not a number.
    pub fn validate(&self) -> Result<(), RayError> {
        if self.bundles.is_empty() {
            return Err(RayError::InvalidArgument(
                "a placement group needs at least one bundle, e.g. [{\"CPU\": 1}]".into(),
            ));
        }
        for (i, bundle) in self.bundles.iter().enumerate() {
            if let Some((name, amount)) = bundle.iter().find(|(_, v)| !v.is_finite() || **v < 0.0) {
                return Err(RayError::InvalidArgument(format!(
                    "bundle {i} asks for {amount} {name}; resource amounts must be zero or more"
                )));
            }
            if bundle.values().all(|v| *v == 0.0) {
                return Err(RayError::InvalidArgument(format!(
                    "bundle {i} reserves nothing; give every bundle at least one resource, e.g. {{\"CPU\": 1}}"
                )));
            }
        }
        Ok(())
    }
}

/// Where a placement group is in its life (Ray's `PlacementGroupTableData.state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum GroupState {
    /// Waiting until every bundle can be reserved at once.
    #[default]
    Pending,
    /// Every bundle is reserved.
    Created,
    /// Removed; its resources are free again.
    Removed,
    /// A node holding some of its bundles died; they are being reserved again.
    Rescheduling,
}

impl fmt::Display for GroupState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GroupState::Pending => "PENDING",
            GroupState::Created => "CREATED",
            GroupState::Removed => "REMOVED",
            GroupState::Rescheduling => "RESCHEDULING",
        })
    }
}

/// A placement group as the head records it: one row of `placement_group_table()`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct PlacementGroupState {
    /// The group.
    pub id: PlacementGroupId,
    /// Its name, or empty.
    pub name: String,
    /// The namespace of its name.
    pub namespace: String,
    /// Its strategy.
    pub strategy: PlacementStrategy,
    /// Where it is in its life.
    pub state: GroupState,
    /// Its bundles, by index.
    pub bundles: Vec<Bundle>,
    /// The node (hex id) each bundle is reserved on, by index; `None` while unplaced.
    pub bundle_nodes: Vec<Option<String>>,
    /// The job that created it.
    pub creator_job: JobId,
    /// Whether it outlives its job.
    pub detached: bool,
    /// Why it is still pending, when it is: what no node can give it.
    pub waiting_for: Option<String>,
}

/// A placement-group call through the host table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PlacementGroupRequest {
    /// `placement_group(..)`.
    Create(PlacementGroupCreation),
    /// `remove_placement_group(pg)`.
    Remove(PlacementGroupId),
    /// `get_placement_group(name)`, in a namespace or the job's.
    Named {
        /// The group's name.
        name: String,
        /// Its namespace; `None` for the job's.
        namespace: Option<String>,
    },
    /// One group's record.
    Lookup(PlacementGroupId),
    /// `placement_group_table()`.
    Table,
    /// `pg.wait(timeout)`: whether it is created within `timeout_ms`.
    Wait {
        /// The group.
        id: PlacementGroupId,
        /// How long to wait; negative waits forever.
        timeout_ms: i64,
    },
    /// `pg.ready()`: an object that becomes `value` once the group is created.
    Ready {
        /// The group.
        id: PlacementGroupId,
        /// The encoded value the object takes.
        value: Vec<u8>,
    },
    /// `get_current_placement_group()`: the group the calling task runs in.
    Current,
}

/// The host's answer to a [`PlacementGroupRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PlacementGroupReply {
    /// A group was registered (it may still be pending).
    Created(PlacementGroupId),
    /// The call has no value.
    Done,
    /// One group.
    Group(PlacementGroupState),
    /// Every group.
    Table(Vec<PlacementGroupState>),
    /// Whether the group is created.
    Ready(bool),
    /// The object `pg.ready()` returns.
    Object(ObjectId),
    /// The group the calling task runs in, if any.
    Current(Option<PlacementGroupState>),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creation(bundles: Vec<Vec<(&str, f64)>>) -> PlacementGroupCreation {
        PlacementGroupCreation {
            bundles: bundles.into_iter().map(|b| b.into_iter().map(|(k, v)| (k.to_string(), v)).collect()).collect(),
            ..PlacementGroupCreation::default()
        }
    }

    #[test]
    fn bad_bundles_are_refused_with_what_was_wrong() {
        let err = |c: PlacementGroupCreation| c.validate().unwrap_err().to_string();
        assert!(err(creation(vec![])).contains("at least one bundle"));
        assert!(err(creation(vec![vec![("CPU", 1.0)], vec![("CPU", -1.0)]])).contains("bundle 1 asks for -1 CPU"));
        assert!(err(creation(vec![vec![("CPU", f64::NAN)]])).contains("zero or more"));
        assert!(err(creation(vec![vec![]])).contains("bundle 0 reserves nothing"));
        assert!(err(creation(vec![vec![("CPU", 0.0)]])).contains("reserves nothing"));
        assert_eq!(creation(vec![vec![("CPU", 1.0)], vec![("CPU", 1.0), ("GPU", 0.0)]]).validate(), Ok(()));
    }

    #[test]
    fn strategies_parse_from_rays_strings() {
        assert_eq!(SchedulingStrategy::from("SPREAD"), SchedulingStrategy::Spread);
        assert_eq!(SchedulingStrategy::from("DEFAULT"), SchedulingStrategy::Default);
        let unknown = SchedulingStrategy::from("spread");
        assert!(unknown.check().unwrap_err().to_string().contains("unknown scheduling strategy \"spread\""));
        let bad_node = SchedulingStrategy::NodeAffinity { node_id: "xyz".into(), soft: false };
        assert!(bad_node.check().is_err());
        assert_eq!(SchedulingStrategy::Spread.check(), Ok(()));
    }
}
