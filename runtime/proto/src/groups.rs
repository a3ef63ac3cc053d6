//! How placement-group resources are named, and how a group travels.
//!
//! A committed bundle must be usable only by tasks and actors scheduled into its
//! group. Ray gets that without new machinery: the node that holds bundle `i` of
//! group `G` gains resources of their own, `CPU_group_i_G` (that bundle) and
//! `CPU_group_G` (any bundle of `G` on the node), and a task scheduled into the
//! group asks for those names instead of `CPU`. Nothing else asks for them, so
//! nothing else can take them, and the ordinary lease path (spillback to the node
//! that has them) places the task. Every bundle also carries 1000 units of
//! `bundle_group_i_G` and `bundle_group_G`, of which each task takes a thousandth,
//! so a task that asks for no CPU still lands on its bundle's node. The owner
//! renames (it knows the strategy), the node adds and removes the names (it holds
//! the bundle), and the head reads them back for `status`: all three share these
//! rules.

use crate::{Bundle as WireBundle, PlacementGroupInfo, Resource, placement_group_info, resources_from_map};
use ray_abi::{GroupState, JobId, PlacementGroupId, PlacementGroupState, PlacementStrategy, RayError};
use std::collections::BTreeMap;

/// Resources by name.
pub type Resources = BTreeMap<String, f64>;

/// Units of `bundle_group_*` each bundle holds; a task takes [`BUNDLE_MARKER_SHARE`].
const BUNDLE_MARKER_UNITS: f64 = 1000.0;
const BUNDLE_MARKER_SHARE: f64 = 0.001;
const MARKER: &str = "bundle";

/// What a task or actor that asks for `demand` asks for inside `group`: in one
/// bundle, or in any bundle of the group.
pub fn in_group(demand: &Resources, group: &PlacementGroupId, bundle: Option<u32>) -> Resources {
    let suffix = match bundle {
        Some(i) => format!("_group_{i}_{group}"),
        None => format!("_group_{group}"),
    };
    let mut renamed: Resources = demand.iter().map(|(k, v)| (format!("{k}{suffix}"), *v)).collect();
    renamed.insert(format!("{MARKER}{suffix}"), BUNDLE_MARKER_SHARE);
    renamed
}

/// What a node gains when bundle `index` of `group`, reserving `bundle`, is
/// committed there.
pub fn committed(bundle: &Resources, group: &PlacementGroupId, index: u32) -> Resources {
    let mut gained = Resources::new();
    let marker = (MARKER.to_string(), BUNDLE_MARKER_UNITS);
    for (k, v) in bundle.iter().map(|(k, v)| (k, *v)).chain([(&marker.0, marker.1)]) {
        gained.insert(format!("{k}_group_{index}_{group}"), v);
        *gained.entry(format!("{k}_group_{group}")).or_insert(0.0) += v;
    }
    gained
}

/// The group a resource name belongs to, for `CPU_group_1_<id>` and `CPU_group_<id>`.
pub fn group_of(resource: &str) -> Option<PlacementGroupId> {
    let (_, rest) = resource.rsplit_once("_group_")?;
    let id = rest.rsplit('_').next()?;
    PlacementGroupId::from_hex(id)
}

/// The one group a demand asks for, if it names one.
pub fn group_in(demand: &Resources) -> Option<PlacementGroupId> {
    demand.keys().find_map(|k| group_of(k))
}

/// Whether a resource is an ordinary one (`CPU`, `GPU`, custom), not a group's.
pub fn is_plain(resource: &str) -> bool {
    group_of(resource).is_none()
}

/// The part of `resources` that is not placement-group resources.
pub fn plain(resources: &Resources) -> Resources {
    resources.iter().filter(|(k, _)| is_plain(k)).map(|(k, v)| (k.clone(), *v)).collect()
}

impl From<PlacementStrategy> for placement_group_info::Strategy {
    fn from(s: PlacementStrategy) -> Self {
        match s {
            PlacementStrategy::Pack => Self::Pack,
            PlacementStrategy::Spread => Self::Spread,
            PlacementStrategy::StrictPack => Self::StrictPack,
            PlacementStrategy::StrictSpread => Self::StrictSpread,
        }
    }
}

impl From<placement_group_info::Strategy> for PlacementStrategy {
    fn from(s: placement_group_info::Strategy) -> Self {
        use placement_group_info::Strategy;
        match s {
            Strategy::Pack => PlacementStrategy::Pack,
            Strategy::Spread => PlacementStrategy::Spread,
            Strategy::StrictPack => PlacementStrategy::StrictPack,
            Strategy::StrictSpread => PlacementStrategy::StrictSpread,
        }
    }
}

impl PlacementGroupInfo {
    /// The group's id.
    pub fn id(&self) -> Result<PlacementGroupId, RayError> {
        PlacementGroupId::from_bytes(&self.placement_group_id)
    }

    /// The group as the API shows it.
    pub fn to_state(&self) -> Result<PlacementGroupState, RayError> {
        use placement_group_info::State;
        let state = match self.state() {
            State::Nil | State::Pending => GroupState::Pending,
            State::Created => GroupState::Created,
            State::Removed => GroupState::Removed,
            State::Rescheduling => GroupState::Rescheduling,
        };
        Ok(PlacementGroupState {
            id: self.id()?,
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            strategy: self.strategy().into(),
            state,
            bundles: self.bundles.iter().map(|b| crate::resources_to_map(&b.resources)).collect(),
            bundle_nodes: self
                .bundles
                .iter()
                .map(|b| (!b.node_id.is_empty()).then(|| ray_abi::ids::hex(&b.node_id)))
                .collect(),
            creator_job: JobId(self.creator_job_id),
            detached: self.detached,
            waiting_for: (!self.waiting_for.is_empty()).then(|| self.waiting_for.clone()),
        })
    }
}

/// The wire form of a group's bundles, unplaced.
pub fn wire_bundles(bundles: &[Resources]) -> Vec<WireBundle> {
    bundles
        .iter()
        .enumerate()
        .map(|(i, b)| WireBundle { index: i as u32, resources: resources_from_map(b), node_id: Default::default() })
        .collect()
}

/// Sums resource lists by name.
pub fn sum<'a>(lists: impl IntoIterator<Item = &'a [Resource]>) -> Resources {
    let mut total = Resources::new();
    for list in lists {
        for r in list {
            *total.entry(r.name.clone()).or_insert(0.0) += r.amount;
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(pairs: &[(&str, f64)]) -> Resources {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn a_task_in_a_bundle_asks_for_what_the_bundle_adds_to_its_node() {
        let g = PlacementGroupId::new([7; 14], JobId(1));
        let bundle = res(&[("CPU", 2.0), ("GPU", 1.0)]);
        let node_gains = committed(&bundle, &g, 1);
        assert_eq!(node_gains[&format!("CPU_group_1_{g}")], 2.0);
        assert_eq!(node_gains[&format!("CPU_group_{g}")], 2.0);
        assert_eq!(node_gains[&format!("bundle_group_1_{g}")], 1000.0);
        let task = in_group(&res(&[("CPU", 1.0)]), &g, Some(1));
        assert!(crate::fits(&node_gains, &task));
        assert!(crate::fits(&node_gains, &in_group(&res(&[("GPU", 1.0)]), &g, None)));
        assert!(!crate::fits(&node_gains, &in_group(&res(&[("CPU", 1.0)]), &g, Some(0))), "another bundle");
        // A task that asks for nothing still needs the bundle's node.
        let zero = in_group(&Resources::new(), &g, Some(1));
        assert_eq!(zero.len(), 1);
        assert!(crate::fits(&node_gains, &zero) && !crate::fits(&res(&[("CPU", 8.0)]), &zero));
    }

    #[test]
    fn group_names_are_recognised_and_plain_ones_are_not() {
        let g = PlacementGroupId::new([9; 14], JobId(3));
        for name in [format!("CPU_group_0_{g}"), format!("CPU_group_{g}"), format!("my_res_group_12_{g}")] {
            assert_eq!(group_of(&name), Some(g), "{name}");
        }
        for name in ["CPU", "GPU", "memory", "CPU_group_0_notanid", "x_group_"] {
            assert_eq!(group_of(name), None, "{name}");
        }
        let mixed = res(&[("CPU", 1.0), (&format!("CPU_group_{g}"), 1.0)]);
        assert_eq!(plain(&mixed), res(&[("CPU", 1.0)]));
        assert_eq!(group_in(&mixed), Some(g));
    }
}
