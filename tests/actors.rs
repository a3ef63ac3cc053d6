//! Actors with Ray's semantics, across real worker processes.

mod support;
use support::*;

#[test]
fn counters_keep_state_in_their_own_processes() {
    let run = scenario("actors");
    // Seed 002, line for line.
    assert_eq!(run.line("first"), "[1, 1, 1, 1, 1, 1, 1, 1, 1, 1]");
    assert_eq!(run.line("second"), "[2, 3, 4, 5, 6]");
    assert_eq!(run.line("third"), "[6, 1, 1, 1, 1, 1, 1, 1, 1, 1]");
    assert_eq!(run.line("distinct_pids"), "10 driver_pid_used=false");
    assert!(run.line("handle").starts_with("Actor(Counter, "), "{}", run.stdout);
    assert_eq!(run.value("ordered"), "true", "calls from one caller run in submission order");
    assert_eq!(run.line("from_tasks_max"), "240 final=240", "handles passed into tasks call the same actor");
    assert_eq!(run.value("actor_to_actor"), "240", "handles passed into actors call the same actor");
}

#[test]
fn named_actors_are_found_by_name_and_namespace() {
    let run = scenario("named");
    assert_eq!(run.value("same_actor"), "true");
    assert_eq!(run.value("from_task"), "3");
    assert_eq!(run.value("get_if_exists"), "3");
    assert!(run.line("duplicate").contains("already exists"), "{}", run.stdout);
    assert!(run.line("missing").contains("no actor named \"nobody\""), "{}", run.stdout);
    assert_eq!(run.value("wrong_class"), "ok");
    assert_eq!(run.value("namespaced"), "100");
}

#[test]
fn dead_actors_say_why() {
    let run = scenario("actor_death");
    assert!(run.line("killed").contains("killed by ray::kill"), "{}", run.stdout);
    assert_eq!(run.value("quit"), "bye", "the call that exits still returns");
    assert!(run.line("exited").contains("exit_actor"), "{}", run.stdout);
    let ctor = run.line("ctor");
    assert!(ctor.contains("constructor failed") && ctor.contains("constructor says no"), "{ctor}");
    // An actor no node can hold is pending, said at once in words, and can be killed.
    assert_eq!(run.value("infeasible_waits"), "true");
    assert_eq!(run.value("infeasible_killed"), "dead");
    assert!(
        run.stderr.contains("(autoscaler) Warning: actor `Counter` asks for {CPU: 1000}")
            && run.stderr.contains("cluster totals: {CPU: ")
            && run.stderr.contains("PENDING_CREATION"),
        "{}",
        run.stderr
    );
}

#[test]
fn killed_actors_restart_with_fresh_state_and_retry_calls() {
    let run = scenario("restart");
    assert_eq!(run.line("restarted"), "true fresh_state=0");
    assert!(run.line("in_flight").contains("is dead"), "{}", run.stdout);
    assert!(run.line("exhausted").contains("max_restarts=1"), "{}", run.stdout);
    assert_eq!(run.value("retried_call"), "true", "max_task_retries resends the call");
}

#[test]
fn threaded_and_async_actors_run_calls_concurrently() {
    let run = scenario("concurrency");
    assert_eq!(run.value("reused_worker"), "true", "the threaded actor should reuse the task's pooled worker");
    assert_eq!(run.value("threaded_overlap"), "true");
    assert_eq!(run.value("default_overlap"), "false", "a default actor runs one call at a time");
    let line = run.line("async_started");
    let (started, elapsed) = line.split_once(" elapsed_ms=").unwrap();
    assert_eq!(started, "[0, 1, 2, 3]");
    let elapsed: u64 = elapsed.parse().unwrap();
    assert!(elapsed < 1500, "four 500 ms async calls ran one by one: {elapsed} ms");
    let bounded: u64 = run.value("bounded_elapsed_ms").parse().unwrap();
    assert!(bounded >= 1000, "max_concurrency=2 let four 500 ms async calls overlap: {bounded} ms");
    assert_eq!(run.value("awaited"), "4");
    // Seed 004's SignalActor: nobody passes before the signal, everybody after.
    assert_eq!(run.value("before_signal"), "0");
    assert_eq!(run.line("after_signal"), "[\"go\", \"go\", \"go\", \"go\"]");
    assert_eq!(run.stdout.matches(") go!").count(), 4, "{}", run.stdout);
}

#[test]
fn actor_resources_are_held_for_the_actors_life() {
    let run = scenario("actor_resources");
    assert_eq!(run.value("blocked_by_actor"), "true");
    assert_eq!(run.value("after_kill"), "3");
}

#[test]
fn queues_pass_items_between_tasks() {
    let run = scenario("queue");
    assert_eq!(run.line("consumed"), "[0, 1] left=8");
    assert_eq!(run.value("full"), "ok");
    assert_eq!(run.value("got"), "a");
    assert_eq!(run.value("empty"), "ok");
    assert_eq!(run.line("fifo"), "[0, 1, 2, 3, 4]");
}

#[test]
fn actor_pools_spread_work() {
    let run = scenario("pool");
    assert_eq!(run.line("map"), "[1, 10, 101, 1010]");
    assert_eq!(run.value("unordered_count"), "3");
}

#[test]
fn detached_actors_outlive_their_driver_and_others_do_not() {
    let root = session_root();
    let address = start_head(root.path(), "2");
    let env = [("RAYREPL_ADDRESS", address.as_str()), ("RAYREPL_TEMP_DIR", root.path().to_str().unwrap())];
    assert_eq!(scenario_with("detached_create", &env).value("value"), "41");
    let used = scenario_with("detached_use", &env);
    assert_eq!(used.value("value"), "42", "the detached actor kept its state after its driver left");
    assert_eq!(used.value("gone"), "ok");
    assert_eq!(scenario_with("owned_actor", &env).value("value"), "1");
    assert_eq!(scenario_with("owned_actor_gone", &env).value("gone"), "ok", "a job's actors die with it");
    let _ = rayrepl(root.path(), &["stop"]);
}

/// Opens a direct call connection to an actor's executor, presents `token`, and
/// returns the refusal it answers with ("" when accepted). The frames are written
/// by hand from the protocol's description in `rayrepl.proto`: a little-endian
/// `u32` length, then the message.
fn direct_hello(address: &str, token: &str) -> String {
    use std::io::{Read, Write};
    let field = |number: u8, text: &str| {
        assert!(text.len() < 128, "one-byte lengths only");
        let mut out = vec![number << 3 | 2, text.len() as u8];
        out.extend_from_slice(text.as_bytes());
        out
    };
    let mut hello = field(1, token);
    hello.extend(field(2, "127.0.0.1:1"));
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    stream.write_all(&(hello.len() as u32).to_le_bytes()).unwrap();
    stream.write_all(&hello).unwrap();
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).unwrap();
    let mut reply = vec![0u8; u32::from_le_bytes(len) as usize];
    stream.read_exact(&mut reply).unwrap();
    match reply.as_slice() {
        [] => String::new(),
        [0x0a, n, text @ ..] if text.len() == *n as usize => String::from_utf8_lossy(text).into_owned(),
        other => panic!("not a DirectHelloReply: {other:?}"),
    }
}

#[test]
fn direct_calls_to_an_actor_need_the_cluster_token() {
    let root = session_root();
    let address = start_head(root.path(), "2");
    let token = std::fs::read_to_string(root.path().join("session_latest/token")).unwrap();
    let env = [("RAYREPL_ADDRESS", address.as_str()), ("RAYREPL_TEMP_DIR", root.path().to_str().unwrap())];
    assert_eq!(scenario_with("detached_create", &env).value("value"), "41");

    let listed = rayrepl(root.path(), &["list", "actors", "--detail", "--format", "json"]);
    let actors: Vec<serde_json::Value> = serde_json::from_slice(&listed.stdout).unwrap();
    let direct = actors[0]["DIRECT_ADDRESS"].as_str().unwrap().to_string();
    assert!(direct.starts_with("127.0.0.1:"), "an ordered actor takes direct calls: {actors:?}");
    assert_eq!(direct_hello(&direct, "not-the-token"), "wrong cluster token");
    assert_eq!(direct_hello(&direct, token.trim()), "");

    let used = scenario_with("detached_use", &env);
    assert_eq!(used.value("value"), "42", "the refused connection left the actor serving");
    let _ = rayrepl(root.path(), &["stop"]);
}
