//! Tasks across real processes: seed 000's core features.

mod support;
use support::*;

#[test]
fn tasks_run_in_worker_processes() {
    let run = scenario("pids");
    let driver: u32 = run.value("driver").parse().unwrap();
    let workers = run.line("workers");
    assert!(!workers.contains(&driver.to_string()), "a task ran in the driver: {workers}");
    assert!(workers.starts_with('[') && workers.matches(',').count() == 3, "{workers}");
}

#[test]
fn a_task_waits_for_its_object_ref_inputs() {
    let run = scenario("deps");
    let produced: u128 = run.value("producer_done").parse().unwrap();
    let consumed: u128 = run.value("consumer_start").parse().unwrap();
    assert!(consumed >= produced, "consumer started at {consumed} before its input existed at {produced}");
    assert_eq!(run.value("chained"), "10");
}

#[test]
fn refs_nested_in_arguments_stay_refs() {
    let run = scenario("nested_refs");
    assert!(run.stdout.contains("args: [ObjectRef("), "{}", run.stdout);
    assert_eq!(run.value("sum"), "6");
    let hex = run.value("a_hex");
    assert!(run.stdout.contains(&format!("ObjectRef({hex})")), "the task saw the same ref: {}", run.stdout);
}

#[test]
fn tasks_can_return_object_refs() {
    let run = scenario("return_refs");
    assert_eq!(run.value("inner_len"), "200000");
    assert_eq!(run.value("len_in_task"), "200000");
}

#[test]
fn nested_tasks_do_not_deadlock_when_every_cpu_is_busy() {
    // Two roots on two CPUs, each blocking on children: a blocked get must lend
    // its CPU or nothing below the roots could ever run.
    let run = scenario_with("nested_tasks", &[("SCENARIO_CPUS", "2")]);
    assert_eq!(run.line("counts"), "[7, 7]");
}

#[test]
fn owners_competing_for_leases_leave_none_behind() {
    let run = scenario("competing_owners");
    assert_eq!(run.line("batches"), "[500, 500, 500, 500]");
    assert_eq!(run.value("both_cpus_free"), "true", "{}", run.stdout);
}

#[test]
fn put_get_and_wait_follow_ray() {
    let run = scenario("put_get");
    assert_eq!(run.value("single"), "hello");
    assert_eq!(run.line("slice"), "[1, 2]");
    assert!(run.line("rows").contains("name: \"row1\""));
    assert_eq!(run.value("timeout"), "ok");
    let wait2 = run.line("wait2 ready");
    assert!(wait2.starts_with("[50, 100] rest=2"), "{wait2}");
    assert_eq!(run.line("wait_timeout ready"), "0 rest=2");
    assert_eq!(run.line("wait_all ready"), "4 rest=0");
    assert!(run.line("wait_too_many").contains("larger than the number of refs"));
}

#[test]
fn object_refs_can_be_awaited() {
    let run = scenario("await");
    assert_eq!(run.line("await"), "42 joined=300");
}

#[test]
fn cancel_drops_queued_tasks_and_kills_running_ones_with_force() {
    let run = scenario("cancel");
    assert_eq!(run.value("queued_cancelled"), "sleep_ms");
    assert_eq!(run.value("running_cancelled"), "ok");
    assert_eq!(run.value("after"), "2");
}

#[test]
fn options_reserve_resources_and_infeasible_requests_fail_clearly() {
    let run = scenario("resources");
    assert_eq!(run.value("half_cpu_overlap"), "true", "two 0.5-CPU tasks share one CPU");
    assert_eq!(run.value("custom_overlap"), "false", "one Custom1 means one task at a time");
    let gpu = run.line("gpu_infeasible");
    assert!(gpu.contains("GPU: 1") && gpu.contains("no node in the cluster"), "{gpu}");
    assert_eq!(run.value("custom2_infeasible"), "ok");
    // Said at once, whether or not anyone gets the result.
    assert!(run.stderr.contains("(autoscaler) Warning: task `add` asks for {CPU: 1, GPU: 1}"), "{}", run.stderr);
    assert_eq!(run.value("named"), "7");
    assert!(run.stdout.contains("(renamed pid="), "the name option names the task:\n{}", run.stdout);
}

#[test]
fn worker_output_reaches_the_driver_with_ray_prefixes() {
    let run = scenario("logs");
    for n in 0..2 {
        let out = format!(") hello from stdout {n}");
        let line = run.stdout.lines().find(|l| l.ends_with(&out)).unwrap_or_else(|| panic!("{}", run.stdout));
        assert!(line.starts_with("(noisy pid="), "{line}");
        let err = format!(") hello from stderr {n}");
        let line = run.stderr.lines().find(|l| l.ends_with(&err)).unwrap_or_else(|| panic!("{}", run.stderr));
        assert!(line.starts_with("(noisy pid="), "{line}");
    }
}

#[test]
fn the_walkthrough_example_follows_seed_000() {
    let exe = scenarios_bin().parent().unwrap().join("examples/walkthrough");
    assert!(exe.exists(), "build examples first (scripts/test does)");
    let out = run_bounded(std::process::Command::new(exe), std::time::Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    for section in ["1. Sequential loop", "2. Remote tasks", "3. The database", "4. wait", "5. Task dependencies"] {
        assert!(stdout.contains(section), "missing {section}:\n{stdout}");
    }
    assert!(stdout.contains("((6, \"Machine\"), (7, \"Learning\"))"), "{stdout}");
    let tracker = stdout.split("== 6.").nth(1).expect("section 6");
    assert_eq!(tracker.lines().nth(2).map(str::trim), Some("8"), "the DataTracker counted 8 uses:\n{tracker}");
    let runtimes: Vec<f64> =
        stdout.lines().filter_map(|l| l.strip_prefix("Runtime: ")?.split_whitespace().next()?.parse().ok()).collect();
    // Sequential 2.8 s; the remote run on >= 2 CPUs must be clearly faster.
    assert!(runtimes[0] >= 2.7, "{runtimes:?}");
    assert!(runtimes[1] < runtimes[0] * 0.8, "no speedup: {runtimes:?}");
}
