//! The object store: inline values, shared memory, capacity and freeing.

mod support;
use support::*;

#[test]
fn large_objects_live_in_shared_memory_until_their_refs_are_dropped() {
    let run = scenario("store");
    assert_eq!(run.value("small_in_shm"), "false", "small values stay inline");
    assert_eq!(run.value("big_in_shm"), "true");
    assert_eq!(run.value("big_roundtrip"), "true");
    assert_eq!(run.value("task_read_len"), "5000000");
    assert_eq!(run.value("reused_intact"), "true", "a reader saw another object's bytes");
    let full = run.line("full");
    assert!(full.contains("object store full") && full.contains("object_store_memory"), "{full}");
    let after = run.line("after_drop");
    let (now, baseline) = after.split_once(" baseline=").expect("after_drop=N baseline=M");
    assert_eq!(now, baseline, "shared memory returns to its baseline once refs are dropped");
}

#[test]
fn objects_go_when_their_owner_dies() {
    let bin = rayrepl_bin().display().to_string();
    let run = scenario_with("owner_dies", &[("RAYREPL_BIN", &bin)]);
    assert_eq!(run.value("before"), "1", "{}", run.stdout);
    assert_eq!(run.value("after"), "0", "the dead actor's object outlived it: {}", run.stdout);
    assert!(run.line("read").starts_with("lost "), "{}", run.stdout);
}

#[test]
fn an_idle_worker_that_owns_objects_in_use_is_not_reaped() {
    let run = scenario_with("idle_owner", &[("RAYREPL_IDLE_WORKER_TIMEOUT_MS", "1000")]);
    assert_eq!(run.value("parent_running"), "false", "an idle worker owning nothing outlived the timeout");
    assert_eq!(run.value("owner_running"), "true", "the worker owning the object was reaped");
    assert_eq!(run.value("blob_len"), "1000", "{}", run.stdout);
}
