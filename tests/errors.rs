//! Failures become typed errors that say what happened.

mod support;
use support::*;

#[test]
fn failures_are_typed_and_explained() {
    let rayrepl = rayrepl_bin();
    let run = scenario_with("errors", &[("RAYREPL_BIN", rayrepl.to_str().expect("a UTF-8 path"))]);
    let panic = run.line("panic_fn");
    assert!(panic.starts_with("boom msg=kaboom loc="), "{panic}");
    assert!(panic.contains("scenarios.rs:"), "the location names the file: {panic}");
    let chain = run.line("chain");
    assert!(chain.contains("`after_boom` could not run"), "{chain}");
    assert!(chain.contains("caused by: task `boom`") && chain.contains("upstream broke"), "{chain}");
    let mismatch = run.line("mismatch");
    assert!(mismatch.contains("holds a `u64` but was read as `String`"), "{mismatch}");
    assert!(run.value("retried").starts_with("survived"), "a SIGKILLed worker's task is retried");
    // Every attempt ends in a final state: the killed one is not left RUNNING.
    assert_eq!(run.value("retried_attempts"), "0:FAILED:WORKER_DIED,1:FINISHED:");
    let crashed = run.line("crashed");
    assert!(crashed.contains("`always_die` died") && crashed.contains("2 attempt(s)"), "{crashed}");
    assert_eq!(run.value("retry_exceptions"), "second");
}

#[test]
fn using_ray_before_init_says_so() {
    let run = scenario("not_initialized");
    assert!(run.line("error").contains("call ray::init()"), "{}", run.stdout);
}
