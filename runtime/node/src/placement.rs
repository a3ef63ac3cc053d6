//! Where a lease request is served: here, on another node, or nowhere.
//!
//! An owner asks its own node for every lease. That node grants it when it has the
//! resources free; otherwise it looks at the cluster (as of the last heartbeats)
//! and sends the owner to a node that has them free now, to one that has them at
//! all when it has not, or says that no node ever will. A request that was already
//! sent on once is queued where it lands, so requests never bounce between nodes.
//!
//! Ray's scheduling strategies steer this choice: `SPREAD` takes turns over the
//! nodes with room, and node affinity sends the request to one node (or, when
//! soft, falls back to the rules above if that node is gone or too small).

use crate::pool::Resources;
use ray_abi::ids::hex;
use ray_proto::{NodeInfo, fits, format_resources, resources_to_map};

/// The decision for one lease request.
#[derive(Debug, Clone, PartialEq)]
pub enum Placement {
    /// Queue it on this node.
    Local,
    /// Ask this other node instead.
    Spill {
        /// The node's id.
        node_id: Vec<u8>,
        /// Its daemon's address.
        address: String,
    },
    /// No alive node has that much in total: the cluster's totals, for the error.
    Infeasible(String),
    /// It can never run as asked: why.
    Unschedulable(String),
}

/// How a request picks its node beyond its resources.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Steer {
    /// Here if free, else where it is free, else where it fits at all.
    #[default]
    Default,
    /// Take turns over the nodes with room; `turn` counts this node's spread requests.
    Spread {
        /// How many spread requests this node placed before.
        turn: usize,
    },
    /// On this node only; with `soft`, by the default rules if it cannot be.
    Affinity {
        /// The node's id.
        node_id: Vec<u8>,
        /// Fall back instead of failing.
        soft: bool,
    },
}

/// Decides where `demand` is served. `local_available` is what this node has
/// free once the requests queued here are served; `nodes` is the cluster's last view, this node included;
/// `may_spill` is false for a request that was already sent on.
pub fn place(
    local_id: &[u8],
    local_total: &Resources,
    local_available: &Resources,
    demand: &Resources,
    nodes: &[NodeInfo],
    may_spill: bool,
    steer: &Steer,
) -> Placement {
    let default = || place_default(local_id, local_total, local_available, demand, nodes, may_spill);
    // A request that was sent on has found its node already.
    if !may_spill {
        return default();
    }
    let alive = || nodes.iter().filter(|n| n.is_alive());
    let spill_to = |n: &NodeInfo| Placement::Spill { node_id: n.node_id.to_vec(), address: n.address.clone() };
    match steer {
        Steer::Default => default(),
        Steer::Spread { turn } => {
            let mut room: Vec<&NodeInfo> = alive()
                .filter(|n| {
                    let free = if n.node_id.as_ref() as &[u8] == local_id {
                        local_available.clone()
                    } else {
                        resources_to_map(&n.available)
                    };
                    fits(&free, demand)
                })
                .collect();
            room.sort_by(|a, b| a.node_id.cmp(&b.node_id));
            match room.get(turn % room.len().max(1)) {
                Some(n) if n.node_id.as_ref() as &[u8] == local_id => Placement::Local,
                Some(n) => spill_to(n),
                None => default(),
            }
        }
        Steer::Affinity { node_id, soft } => {
            let target = alive().find(|n| n.node_id.as_ref() as &[u8] == node_id.as_slice());
            let holds = match target {
                _ if node_id.as_slice() == local_id => fits(local_total, demand),
                Some(n) => fits(&resources_to_map(&n.total), demand),
                None => false,
            };
            match (target, holds) {
                _ if holds && node_id.as_slice() == local_id => Placement::Local,
                (Some(n), true) => spill_to(n),
                _ if *soft => default(),
                (None, _) if node_id.as_slice() != local_id => Placement::Unschedulable(format!(
                    "node {} named by its NodeAffinitySchedulingStrategy is dead or unknown, and soft is false",
                    hex(node_id)
                )),
                _ => Placement::Unschedulable(format!(
                    "node {} named by its NodeAffinitySchedulingStrategy can never hold {}, and soft is false",
                    hex(node_id),
                    format_resources(demand)
                )),
            }
        }
    }
}

fn place_default(
    local_id: &[u8],
    local_total: &Resources,
    local_available: &Resources,
    demand: &Resources,
    nodes: &[NodeInfo],
    may_spill: bool,
) -> Placement {
    if fits(local_available, demand) {
        return Placement::Local;
    }
    let alive: Vec<&NodeInfo> = nodes.iter().filter(|n| n.is_alive()).collect();
    let fits_total = |n: &NodeInfo| fits(&resources_to_map(&n.total), demand);
    if !fits(local_total, demand) && !alive.iter().any(|n| fits_total(n)) {
        let mut totals = Resources::new();
        for n in &alive {
            for r in &n.total {
                *totals.entry(r.name.clone()).or_insert(0.0) += r.amount;
            }
        }
        return Placement::Infeasible(format_resources(&totals));
    }
    if !may_spill {
        return Placement::Local;
    }
    let others = || alive.iter().filter(|n| n.node_id.as_ref() as &[u8] != local_id);
    // Free now, the most free CPU first; then anything that can ever hold it.
    let free_cpu = |n: &NodeInfo| resources_to_map(&n.available).get("CPU").copied().unwrap_or(0.0);
    let free_now = others()
        .filter(|n| fits(&resources_to_map(&n.available), demand))
        .max_by(|a, b| free_cpu(a).total_cmp(&free_cpu(b)).then_with(|| b.node_id.cmp(&a.node_id)));
    let target = match free_now {
        Some(n) => Some(n),
        None if fits(local_total, demand) => None,
        None => others().find(|n| fits_total(n)),
    };
    match target {
        Some(n) => Placement::Spill { node_id: n.node_id.to_vec(), address: n.address.clone() },
        None => Placement::Local,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use ray_proto::{NodeState, resources_from_map};

    fn res(pairs: &[(&str, f64)]) -> Resources {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    fn node(id: u8, total: &[(&str, f64)], available: &[(&str, f64)]) -> NodeInfo {
        NodeInfo {
            node_id: vec![id].into(),
            address: format!("127.0.0.{id}:1"),
            total: resources_from_map(&res(total)),
            available: resources_from_map(&res(available)),
            state: NodeState::Alive.into(),
            ..NodeInfo::default()
        }
    }

    #[test]
    fn free_here_stays_here() {
        let nodes = [node(1, &[("CPU", 2.0)], &[("CPU", 1.0)])];
        let p = place(
            &[1],
            &res(&[("CPU", 2.0)]),
            &res(&[("CPU", 1.0)]),
            &res(&[("CPU", 1.0)]),
            &nodes,
            true,
            &Steer::Default,
        );
        assert_eq!(p, Placement::Local);
    }

    #[test]
    fn a_resource_only_another_node_has_goes_there() {
        let nodes = [
            node(1, &[("CPU", 2.0)], &[("CPU", 2.0)]),
            node(2, &[("CPU", 1.0), ("b", 1.0)], &[("CPU", 0.0), ("b", 1.0)]),
        ];
        let p = place(
            &[1],
            &res(&[("CPU", 2.0)]),
            &res(&[("CPU", 2.0)]),
            &res(&[("b", 1.0)]),
            &nodes,
            true,
            &Steer::Default,
        );
        assert_eq!(p, Placement::Spill { node_id: vec![2], address: "127.0.0.2:1".into() });
    }

    #[test]
    fn a_full_node_spills_to_a_free_one_and_queues_when_none_is() {
        let demand = res(&[("CPU", 1.0)]);
        let busy_here = res(&[("CPU", 0.0)]);
        let nodes = [
            node(1, &[("CPU", 1.0)], &[("CPU", 0.0)]),
            node(2, &[("CPU", 2.0)], &[("CPU", 1.0)]),
            node(3, &[("CPU", 4.0)], &[("CPU", 3.0)]),
        ];
        let p = place(&[1], &res(&[("CPU", 1.0)]), &busy_here, &demand, &nodes, true, &Steer::Default);
        assert_eq!(p, Placement::Spill { node_id: vec![3], address: "127.0.0.3:1".into() });
        let all_busy = [node(1, &[("CPU", 1.0)], &[]), node(2, &[("CPU", 2.0)], &[("CPU", 0.0)])];
        assert_eq!(
            place(&[1], &res(&[("CPU", 1.0)]), &busy_here, &demand, &all_busy, true, &Steer::Default),
            Placement::Local
        );
        assert_eq!(
            place(&[1], &res(&[("CPU", 1.0)]), &busy_here, &demand, &nodes, false, &Steer::Default),
            Placement::Local
        );
    }

    #[test]
    fn nothing_anywhere_is_infeasible_with_the_totals() {
        let nodes = [node(1, &[("CPU", 2.0)], &[("CPU", 2.0)]), node(2, &[("CPU", 2.0)], &[("CPU", 2.0)])];
        let p = place(
            &[1],
            &res(&[("CPU", 2.0)]),
            &res(&[("CPU", 2.0)]),
            &res(&[("GPU", 1.0)]),
            &nodes,
            true,
            &Steer::Default,
        );
        assert_eq!(p, Placement::Infeasible(format_resources(&res(&[("CPU", 4.0)]))));
        let dead = NodeInfo { state: NodeState::Dead.into(), ..node(3, &[("GPU", 1.0)], &[("GPU", 1.0)]) };
        let p = place(
            &[1],
            &res(&[("CPU", 2.0)]),
            &res(&[("CPU", 2.0)]),
            &res(&[("GPU", 1.0)]),
            &[dead],
            true,
            &Steer::Default,
        );
        assert!(matches!(p, Placement::Infeasible(_)));
    }

    #[test]
    fn spread_takes_turns_over_nodes_with_room() {
        let nodes = [
            node(1, &[("CPU", 2.0)], &[("CPU", 2.0)]),
            node(2, &[("CPU", 2.0)], &[("CPU", 2.0)]),
            node(3, &[("CPU", 2.0)], &[("CPU", 0.0)]),
        ];
        let (total, free, demand) = (res(&[("CPU", 2.0)]), res(&[("CPU", 2.0)]), res(&[("CPU", 1.0)]));
        let at = |turn| place(&[1], &total, &free, &demand, &nodes, true, &Steer::Spread { turn });
        assert_eq!(at(0), Placement::Local);
        assert_eq!(at(1), Placement::Spill { node_id: vec![2], address: "127.0.0.2:1".into() });
        assert_eq!(at(2), Placement::Local, "node 3 is full, so it gets no turn");
        let sent_on = place(&[1], &total, &free, &demand, &nodes, false, &Steer::Spread { turn: 1 });
        assert_eq!(sent_on, Placement::Local, "a request sent on stays where it landed");
    }

    #[test]
    fn affinity_goes_to_its_node_or_says_why_not() {
        let nodes = [node(1, &[("CPU", 2.0)], &[("CPU", 2.0)]), node(2, &[("CPU", 1.0)], &[("CPU", 0.0)])];
        let (total, free) = (res(&[("CPU", 2.0)]), res(&[("CPU", 2.0)]));
        let to = |id: u8, soft: bool, cpu: f64| {
            let steer = Steer::Affinity { node_id: vec![id], soft };
            place(&[1], &total, &free, &res(&[("CPU", cpu)]), &nodes, true, &steer)
        };
        assert_eq!(to(2, false, 1.0), Placement::Spill { node_id: vec![2], address: "127.0.0.2:1".into() });
        assert_eq!(to(1, false, 1.0), Placement::Local);
        assert!(matches!(to(9, false, 1.0), Placement::Unschedulable(why) if why.contains("dead or unknown")));
        assert!(matches!(to(2, false, 2.0), Placement::Unschedulable(why) if why.contains("can never hold")));
        assert_eq!(to(9, true, 1.0), Placement::Local, "soft falls back to the default rules");
        assert_eq!(to(2, true, 2.0), Placement::Local);
    }

    proptest! {
        /// Whatever the view, a spill goes to another alive node that can hold the
        /// demand, and a request that was sent on once is never sent on again.
        #[test]
        fn spills_only_to_other_alive_nodes_that_fit(
            cpus in proptest::collection::vec((0.0f64..4.0, 0.0f64..4.0, any::<bool>()), 1..6),
            demand in 0.5f64..3.0,
            may_spill in any::<bool>(),
        ) {
            let nodes: Vec<NodeInfo> = cpus
                .iter()
                .enumerate()
                .map(|(i, (total, free, alive))| NodeInfo {
                    state: if *alive || i == 0 { NodeState::Alive } else { NodeState::Dead }.into(),
                    ..node(i as u8, &[("CPU", *total)], &[("CPU", free.min(*total))])
                })
                .collect();
            let local_total = resources_to_map(&nodes[0].total);
            let local_free = resources_to_map(&nodes[0].available);
            let demand = res(&[("CPU", demand)]);
            match place(&[0], &local_total, &local_free, &demand, &nodes, may_spill, &Steer::Default) {
                Placement::Spill { node_id, .. } => {
                    prop_assert!(may_spill);
                    let n = nodes.iter().find(|n| n.node_id.as_ref() as &[u8] == node_id.as_slice()).unwrap();
                    prop_assert!(n.is_alive() && node_id != vec![0]);
                    prop_assert!(fits(&resources_to_map(&n.total), &demand));
                }
                Placement::Local => prop_assert!(fits(&local_total, &demand) || !may_spill),
                Placement::Unschedulable(_) => prop_assert!(false, "no strategy, no reason to refuse"),
                Placement::Infeasible(_) => {
                    prop_assert!(!nodes.iter().filter(|n| n.is_alive()).any(|n| fits(&resources_to_map(&n.total), &demand)));
                }
            }
        }
    }
}
