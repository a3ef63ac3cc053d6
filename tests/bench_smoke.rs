//! The microbenchmark keeps building and running: every Ray metric is measured
//! once, briefly. Speed is not asserted here; `scripts/compare-ray` measures it.

mod support;
use support::*;

const RAY_METRICS: [&str; 22] = [
    "single_client_get_calls_Plasma_Store",
    "single_client_put_calls_Plasma_Store",
    "multi_client_put_calls_Plasma_Store",
    "single_client_put_gigabytes",
    "single_client_tasks_and_get_batch",
    "multi_client_put_gigabytes",
    "single_client_get_object_containing_10k_refs",
    "single_client_wait_1k_refs",
    "single_client_tasks_sync",
    "single_client_tasks_async",
    "multi_client_tasks_async",
    "1_1_actor_calls_sync",
    "1_1_actor_calls_async",
    "1_1_actor_calls_concurrent",
    "1_n_actor_calls_async",
    "n_n_actor_calls_async",
    "n_n_actor_calls_with_arg_async",
    "1_1_async_actor_calls_sync",
    "1_1_async_actor_calls_async",
    "1_1_async_actor_calls_with_args_async",
    "1_n_async_actor_calls_async",
    "n_n_async_actor_calls_async",
];

#[test]
fn every_ray_metric_runs() {
    let mut cmd = std::process::Command::new(rayrepl_bin());
    cmd.args(["microbenchmark", "--smoke", "--json"]).env_remove("RAYREPL_ADDRESS");
    let out = run_bounded(cmd, std::time::Duration::from_secs(600));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let results: Vec<serde_json::Value> = serde_json::from_str(&stdout).expect("--json prints a JSON list");
    for metric in RAY_METRICS {
        let m = results
            .iter()
            .find(|m| m["perf_metric_name"] == metric)
            .unwrap_or_else(|| panic!("{metric} missing from {stdout}"));
        assert!(m["mean"].as_f64().is_some_and(|v| v > 0.0), "{metric} measured nothing: {m}");
    }
}

#[test]
fn filter_selects_metrics() {
    let mut cmd = std::process::Command::new(rayrepl_bin());
    cmd.args(["microbenchmark", "--smoke", "--filter", "tasks_sync"]);
    let out = run_bounded(cmd, std::time::Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.starts_with("single client tasks sync per second "), "{stdout}");
}
