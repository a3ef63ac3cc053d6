//! Placement groups on one node, as a Ray user meets them in seed 004: bundles
//! reserved at once and used from inside, nothing outside the group taking them,
//! removal freeing them and stopping what ran in them, and bad input refused
//! with a typed error. The multi-node strategies are in `multinode.rs`.

mod support;
use support::*;

#[test]
fn a_group_reserves_its_bundles_for_its_own_tasks_and_actors_until_removed() {
    let run = scenario_with("pg_basics", &[("SCENARIO_CPUS", "3")]);
    assert_eq!(run.value("ready_is_the_group"), "true", "{}", run.stdout);
    assert_eq!(run.line("state"), "CREATED placed=2");
    for key in ["by_name", "in_table", "current_in_task", "current_in_driver", "child_captured", "child_not_captured"] {
        assert_eq!(run.value(key), "true", "{key}: {}", run.stdout);
    }
    assert_eq!(run.value("outside_ran_while_reserved"), "false", "a task outside took reserved CPUs");
    assert_eq!(run.value("actor_in_bundle"), "1");
    assert_eq!(run.value("outside_ran_after_removal"), "true");
    let actor = run.line("actor_after_removal");
    assert!(actor.starts_with("actor_died:its placement group") && actor.ends_with("was removed"), "{actor}");
    for key in ["wait_after_removal", "ready_after_removal", "task_after_removal", "remove_again"] {
        assert_eq!(run.value(key), "removed", "{key}: {}", run.stdout);
    }
    assert!(run.line("by_name_after_removal").starts_with("invalid_argument:no placement group named \"basics\""));
    assert_eq!(run.value("state_after_removal"), "REMOVED");
}

#[test]
fn bad_placement_requests_get_typed_errors_and_impossible_groups_wait_saying_why() {
    let run = scenario_with("pg_bad_input", &[("SCENARIO_CPUS", "2")]);
    let expect = [
        ("empty", "invalid_argument:a placement group needs at least one bundle"),
        ("negative", "invalid_argument:bundle 0 asks for -1 CPU"),
        ("nothing", "invalid_argument:bundle 0 reserves nothing"),
        ("index", "invalid_argument:bundle index 1 is out of range"),
        ("unknown_strategy", "invalid_argument:unknown scheduling strategy \"PACK\""),
        ("bad_node", "invalid_argument:node id \"not-hex\" is not a node id"),
        ("gone_node", "unschedulable:node 00000000000000000000000000000000"),
        ("soft_gone_node", "ok:\"127.0.0.1\""),
    ];
    for (key, start) in expect {
        let line = run.line(key);
        assert!(line.starts_with(start), "{key}: {line}");
    }
    assert_eq!(run.value("huge_ready"), "false");
    let huge = run.line("huge_state");
    assert!(
        huge.starts_with("PENDING waiting_for=No available node types can fulfill resource request [{CPU: 64}]"),
        "{huge}"
    );
    assert_eq!(run.value("strict_spread_on_one_node"), "false", "STRICT_SPREAD relaxed onto one node");
    assert_eq!(run.value("strict_pack_on_one_node"), "true");
}
