//! Placement-group and scheduling-strategy scenarios, after seed 004: bundles
//! reserved at once, tasks and actors run inside them, and what happens when a
//! group cannot fit, is removed, or loses a node.

use super::{Counter, init_default, where_am_i};
use ray::RayError;
use ray::util::{
    NodeAffinitySchedulingStrategy, PlacementGroup, PlacementGroupOptions, PlacementGroupSchedulingStrategy, Strategy,
    get_current_placement_group, get_placement_group, placement_group, placement_group_table, placement_group_with,
    remove_placement_group,
};
use std::collections::BTreeSet;
use std::time::Duration;

/// The group the task runs in, as it sees it.
#[ray::remote]
fn current_group() -> Option<String> {
    get_current_placement_group().ok().flatten().map(|g| g.id().to_string())
}

/// The group a child of this task runs in: the parent's, if it captures children.
#[ray::remote]
fn child_group() -> Option<String> {
    ray::get(&current_group.remote()).unwrap_or(None)
}

fn in_bundle(pg: &PlacementGroup, index: usize) -> PlacementGroupSchedulingStrategy {
    PlacementGroupSchedulingStrategy::new(pg).bundle_index(index)
}

/// What a result was: its value, or the name of its error.
fn outcome<T: std::fmt::Debug>(r: Result<T, RayError>) -> String {
    match r {
        Ok(v) => format!("ok:{v:?}"),
        Err(RayError::InvalidArgument(m)) => format!("invalid_argument:{m}"),
        Err(RayError::PlacementGroupRemoved { .. }) => "removed".into(),
        Err(RayError::Unschedulable { reason, .. }) => format!("unschedulable:{reason}"),
        Err(RayError::ActorDied { cause, .. }) => format!("actor_died:{cause}"),
        Err(e) => format!("other:{e}"),
    }
}

/// One node with three CPUs: reserve two, use them from inside, reserve the
/// third, see that nothing outside the groups runs, then remove them.
pub(crate) fn pg_basics() -> Result<(), RayError> {
    init_default()?;
    let pg = placement_group_with(
        [[("CPU", 1)], [("CPU", 1)]],
        Strategy::Pack,
        PlacementGroupOptions::new().name("basics"),
    )?;
    println!("ready_is_the_group={}", ray::get(&pg.ready())? == pg);
    let state = pg.state()?;
    println!("state={} placed={}", state.state, state.bundle_nodes.iter().flatten().count());
    println!("by_name={}", get_placement_group("basics")?.id() == pg.id());
    println!("in_table={}", placement_group_table()?.contains_key(&pg.id().to_string()));
    let inside = ray::get(&current_group.options().scheduling_strategy(in_bundle(&pg, 0)).remote())?;
    println!("current_in_task={}", inside == Some(pg.id().to_string()));
    println!("current_in_driver={}", get_current_placement_group()?.is_none());
    let captured = PlacementGroupSchedulingStrategy::new(&pg).capture_child_tasks(true);
    let child = ray::get(&child_group.options().scheduling_strategy(captured).remote())?;
    println!("child_captured={}", child == Some(pg.id().to_string()));
    let uncaptured = ray::get(&child_group.options().scheduling_strategy(in_bundle(&pg, 1)).remote())?;
    println!("child_not_captured={}", uncaptured.is_none());

    // With the last CPU reserved too, a task outside the groups waits until they go.
    let rest = placement_group([[("CPU", 1)]], Strategy::Pack)?;
    ray::get(&rest.ready())?;
    let outside = where_am_i.remote(0);
    let (ready, _) = ray::wait(std::slice::from_ref(&outside), 1, Some(Duration::from_millis(1500)))?;
    println!("outside_ran_while_reserved={}", !ready.is_empty());
    let actor = Counter::options().scheduling_strategy(in_bundle(&pg, 1)).remote()?;
    println!("actor_in_bundle={}", ray::get(&actor.increment())?);

    remove_placement_group(&rest)?;
    remove_placement_group(&pg)?;
    let ran = ray::get_timeout(&outside, Duration::from_secs(30));
    println!("outside_ran_after_removal={}", ran.is_ok());
    println!("actor_after_removal={}", outcome(ray::get(&actor.increment())));
    println!("wait_after_removal={}", outcome(pg.wait(Duration::from_millis(10))));
    println!("ready_after_removal={}", outcome(ray::get(&pg.ready())));
    println!(
        "task_after_removal={}",
        outcome(ray::get(&where_am_i.options().scheduling_strategy(in_bundle(&pg, 0)).remote(0)))
    );
    println!("remove_again={}", outcome(remove_placement_group(&pg)));
    println!("by_name_after_removal={}", outcome(get_placement_group("basics").map(|g| g.id())));
    println!("state_after_removal={}", pg.state()?.state);
    Ok(())
}

/// Bad input, each refused with a typed error before anything is reserved.
pub(crate) fn pg_bad_input() -> Result<(), RayError> {
    init_default()?;
    let no_bundles: Vec<Vec<(&str, f64)>> = Vec::new();
    println!("empty={}", outcome(placement_group(no_bundles, Strategy::Pack).map(|g| g.id())));
    println!("negative={}", outcome(placement_group([[("CPU", -1.0)]], Strategy::Pack).map(|g| g.id())));
    println!("nothing={}", outcome(placement_group([[("CPU", 0.0)]], Strategy::Pack).map(|g| g.id())));
    let pg = placement_group([[("CPU", 1)]], Strategy::StrictPack)?;
    ray::get(&pg.ready())?;
    let out_of_range = where_am_i.options().scheduling_strategy(in_bundle(&pg, 1)).remote(0);
    println!("index={}", outcome(ray::get(&out_of_range)));
    println!("unknown_strategy={}", outcome(ray::get(&where_am_i.options().scheduling_strategy("PACK").remote(0))));
    let bad_node = NodeAffinitySchedulingStrategy::new("not-hex", false);
    println!("bad_node={}", outcome(ray::get(&where_am_i.options().scheduling_strategy(bad_node).remote(0))));
    let gone = NodeAffinitySchedulingStrategy::new("00".repeat(16), false);
    println!("gone_node={}", outcome(ray::get(&where_am_i.options().scheduling_strategy(gone).remote(0))));
    let soft = NodeAffinitySchedulingStrategy::new("00".repeat(16), true);
    println!("soft_gone_node={}", outcome(ray::get(&where_am_i.options().scheduling_strategy(soft).remote(0))));
    // Never fits: it waits, and says why as Ray's autoscaler does.
    let huge = placement_group([[("CPU", 64)]], Strategy::Pack)?;
    println!("huge_ready={}", huge.wait(Duration::from_millis(800))?);
    let huge_state = huge.state()?;
    println!("huge_state={} waiting_for={}", huge_state.state, huge_state.waiting_for.unwrap_or_default());
    let spread = placement_group([[("CPU", 0.5)], [("CPU", 0.5)]], Strategy::StrictSpread)?;
    println!("strict_spread_on_one_node={}", spread.wait(Duration::from_millis(800))?);
    let pack = placement_group([[("CPU", 0.5)], [("CPU", 0.5)]], Strategy::StrictPack)?;
    println!("strict_pack_on_one_node={}", pack.wait(Duration::from_secs(20))?);
    Ok(())
}

/// The node each bundle of `pg` sits on, as the IP its task reports.
fn bundle_ips(pg: &PlacementGroup) -> Result<Vec<String>, RayError> {
    let refs: Vec<_> = (0..pg.bundle_count())
        .map(|i| where_am_i.options().num_cpus(0.0).scheduling_strategy(in_bundle(pg, i)).remote(0))
        .collect();
    ray::get(&refs)
}

fn distinct(ips: &[String]) -> usize {
    ips.iter().collect::<BTreeSet<_>>().len()
}

/// Three nodes of one CPU each: every strategy, and tasks in a bundle on its node.
pub(crate) fn pg_strategies() -> Result<(), RayError> {
    ray::init()?;
    let cases = [
        ("strict_spread", Strategy::StrictSpread, 3, 1.0),
        ("spread", Strategy::Spread, 2, 0.5),
        ("strict_pack", Strategy::StrictPack, 2, 0.5),
        ("pack", Strategy::Pack, 2, 1.0),
    ];
    for (name, strategy, bundles, cpus) in cases {
        let pg = placement_group(vec![[("CPU", cpus)]; bundles], strategy)?;
        ray::get_timeout(&pg.ready(), Duration::from_secs(30))?;
        let nodes = pg.state()?.bundle_nodes.iter().flatten().cloned().collect::<BTreeSet<_>>().len();
        let ips = bundle_ips(&pg)?;
        println!("{name}_nodes={nodes} task_nodes={}", distinct(&ips));
        remove_placement_group(&pg)?;
    }
    // A task outside a group cannot take what the group reserved.
    let all = placement_group(vec![[("CPU", 1)]; 3], Strategy::StrictSpread)?;
    ray::get_timeout(&all.ready(), Duration::from_secs(30))?;
    let outside = where_am_i.remote(0);
    let (ready, _) = ray::wait(std::slice::from_ref(&outside), 1, Some(Duration::from_millis(1500)))?;
    println!("outside_ran_while_reserved={}", !ready.is_empty());
    remove_placement_group(&all)?;
    println!("outside_ran_after_removal={}", ray::get_timeout(&outside, Duration::from_secs(30)).is_ok());
    // SPREAD tasks take turns over the nodes with room; node affinity picks one.
    // The lease `outside` ran on goes back after 30 ms idle, and the other nodes'
    // free CPUs reach this node with their heartbeats (every 250 ms): until both
    // have, a node may look full and be passed over.
    std::thread::sleep(Duration::from_millis(600));
    let spread: Vec<String> =
        ray::get(&(0..6).map(|_| where_am_i.options().scheduling_strategy("SPREAD").remote(300)).collect::<Vec<_>>())?;
    println!("spread_tasks_nodes={}", distinct(&spread));
    // The third node's IP differs where nodes have their own network namespaces.
    let third = std::env::var("THIRD_NODE_IP").unwrap_or_else(|_| "127.0.0.3".into());
    let node = node_id_of(&third)?;
    let pinned: Vec<String> = ray::get(
        &(0..3)
            .map(|_| {
                where_am_i.options().scheduling_strategy(NodeAffinitySchedulingStrategy::new(&node, false)).remote(0)
            })
            .collect::<Vec<_>>(),
    )?;
    println!("affinity={}", pinned.join(","));
    // Actors take the same strategies, chosen at the head.
    let pinned_actor =
        Counter::options().scheduling_strategy(NodeAffinitySchedulingStrategy::new(&node, false)).remote()?;
    println!("affinity_actor={}", ray::get(&pinned_actor.node_ip_and_count())?.0);
    let spread_actors =
        (0..3).map(|_| Counter::options().scheduling_strategy("SPREAD").remote()).collect::<Result<Vec<_>, _>>()?;
    let ips: Vec<String> = ray::get(&spread_actors.iter().map(|a| a.node_ip_and_count()).collect::<Vec<_>>())?
        .into_iter()
        .map(|(ip, _)| ip)
        .collect();
    println!("spread_actors_nodes={}", distinct(&ips));
    Ok(())
}

/// The hex id of the node at `ip`, from `rayrepl list nodes`.
fn node_id_of(ip: &str) -> Result<String, RayError> {
    let bin = std::env::var("RAYREPL_BIN").map_err(|_| RayError::Internal("RAYREPL_BIN is not set".into()))?;
    let address = std::env::var("RAYREPL_ADDRESS").unwrap_or_default();
    let out = std::process::Command::new(bin)
        .args(["list", "nodes", "--format", "json", "--address", &address])
        .output()
        .map_err(|e| RayError::Internal(e.to_string()))?;
    let nodes: Vec<serde_json::Value> =
        serde_json::from_slice(&out.stdout).map_err(|e| RayError::Internal(e.to_string()))?;
    nodes
        .iter()
        .find(|n| n["NODE_IP"] == ip)
        .and_then(|n| n["NODE_ID"].as_str().map(str::to_string))
        .ok_or_else(|| RayError::Internal(format!("no node at {ip}")))
}

/// A group that needs a node the cluster does not have yet: it waits, then is
/// created when the test adds the node. Then the test kills a node that holds a
/// bundle, and the bundle is placed again elsewhere.
pub(crate) fn pg_pending_then_node() -> Result<(), RayError> {
    ray::init()?;
    let pg = placement_group([[("d", 1)]], Strategy::Pack)?;
    println!("pending_ready={}", pg.wait(Duration::from_millis(500))?);
    println!("pending_state={}", pg.state()?.state);
    println!("add_node");
    let ready = ray::get_timeout(&pg.ready(), Duration::from_secs(60));
    println!("created_after_join={} on={}", ready.is_ok(), bundle_ips(&pg)?.join(","));
    // Two bundles on two different nodes; the test kills one of them.
    let spread = placement_group([[("CPU", 0.5)], [("CPU", 0.5)]], Strategy::StrictSpread)?;
    ray::get_timeout(&spread.ready(), Duration::from_secs(30))?;
    println!("spread_on={}", bundle_ips(&spread)?.join(","));
    let before = spread.state()?.bundle_nodes;
    super::wait_for_test()?;
    // The head notices the death within seconds and places the lost bundle again.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut state = spread.state()?;
    while (state.bundle_nodes == before || state.bundle_nodes.iter().any(Option::is_none))
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(200));
        state = spread.state()?;
    }
    println!("rescheduled_state={} on={}", state.state, bundle_ips(&spread)?.join(","));
    Ok(())
}
