//! Starting, attaching to and tearing down clusters, with real processes.

mod support;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::*;

#[test]
fn shutdown_leaves_no_process_behind() {
    let mut child = Command::new(scenarios_bin()).arg("pids").stdout(Stdio::piped()).spawn().unwrap();
    let driver = child.id() as i32;
    // Sample the cluster while it runs, then check every sampled process is gone.
    let mut seen = std::collections::HashSet::new();
    while child.try_wait().unwrap().is_none() {
        seen.extend(descendants(driver));
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(child.wait().unwrap().success());
    assert!(seen.len() >= 3, "expected head, node and workers, saw {seen:?}");
    let left = wait_gone(&seen, Duration::from_secs(5));
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn a_killed_driver_takes_its_cluster_with_it() {
    let mut child = Command::new(scenarios_bin()).arg("hang").stdout(Stdio::piped()).spawn().unwrap();
    let driver = child.id() as i32;
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(line.trim(), "READY");
    let procs = descendants(driver);
    assert!(procs.len() >= 3, "expected head, node and a worker: {procs:?}");
    // SAFETY: SIGKILL to the child we spawned.
    unsafe { libc::kill(driver, libc::SIGKILL) };
    let _ = child.wait();
    let left = wait_gone(&procs, Duration::from_secs(10));
    assert!(left.is_empty(), "processes outlived their SIGKILLed driver: {left:?}");
}

#[test]
fn drivers_attach_to_a_started_cluster_and_need_its_token() {
    let root = session_root();
    let address = start_head(root.path(), "2");
    let latest = root.path().join("session_latest");
    let token_file = latest.join("token");
    let mode =
        std::fs::metadata(&token_file).map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions())).unwrap();
    assert_eq!(mode & 0o777, 0o600, "the token file is private");

    let run =
        scenario_with("attach", &[("RAYREPL_ADDRESS", &address), ("RAYREPL_TEMP_DIR", root.path().to_str().unwrap())]);
    assert_eq!(run.line("attached nodes"), "1 cpus=2");
    assert_eq!(run.value("sum"), "42");

    let mut cmd = Command::new(scenarios_bin());
    cmd.arg("attach").env("RAYREPL_ADDRESS", &address).env("RAYREPL_TOKEN", "not-the-token");
    let out = run_bounded(cmd, Duration::from_secs(30));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("rejected the token") && err.contains("wrong cluster token"), "{err}");

    let status = rayrepl(root.path(), &["status"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    assert!(text.contains("Active:") && text.contains("(127.0.0.1) head") && text.contains("/2.0 CPU"), "{text}");

    // A reader that goes away (`rayrepl status | head`) ends the command quietly:
    // by SIGPIPE's default action, never a panic.
    for args in [&["status"][..], &["list", "tasks", "--format", "json"]] {
        assert_quiet_with_stdout_closed(root.path(), args);
    }

    // The state API sees what the attached driver did, as `ray list tasks` would.
    let out = rayrepl(root.path(), &["list", "tasks", "--filter", "name=add", "--format", "json"]);
    let json = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{json}{}", String::from_utf8_lossy(&out.stderr));
    let rows: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    assert_eq!(rows.len(), 1, "{json}");
    assert_eq!(rows[0]["STATE"], "FINISHED");
    assert_eq!(rows[0]["TYPE"], "NORMAL_TASK");
    let time = |column: &str| rows[0][column].as_u64().unwrap_or_else(|| panic!("no {column}: {json}"));
    assert!(time("CREATION_TIME_MS") <= time("START_TIME_MS"), "{json}");
    assert!(time("START_TIME_MS") <= time("END_TIME_MS"), "{json}");
    // `ray timeline`: the same task as a span in a Chrome trace.
    let trace_path = root.path().join("timeline.json");
    let out = rayrepl(root.path(), &["timeline", "--output", trace_path.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("Trace file written"), "{out:?}");
    let trace: Vec<serde_json::Value> = serde_json::from_str(&std::fs::read_to_string(&trace_path).unwrap()).unwrap();
    let span = trace.iter().find(|e| e["ph"] == "X" && e["name"] == "add").expect("a span for `add`");
    assert_eq!(span["ts"].as_u64(), Some(time("START_TIME_MS") * 1000), "{span}");
    assert_eq!(span["tid"], rows[0]["WORKER_PID"], "{span}");
    let out = rayrepl(root.path(), &["list", "nodes"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("Total: 1") && table.contains("ALIVE") && table.contains("{CPU: 2}"), "{table}");
    let out = rayrepl(root.path(), &["summary", "tasks"]);
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(summary.lines().any(|l| l.contains(" add ") && l.contains("FINISHED: 1")), "{summary}");
    let out = rayrepl(root.path(), &["list", "jobs", "--filter", "status=SUCCEEDED"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("Total: 1"), "{}", String::from_utf8_lossy(&out.stdout));
    // `ray logs`: a worker's output, read back from its node's log directory.
    let run =
        scenario_with("logs", &[("RAYREPL_ADDRESS", &address), ("RAYREPL_TEMP_DIR", root.path().to_str().unwrap())]);
    assert!(run.stdout.contains("hello from stdout 1"), "{}", run.stdout);
    let out = rayrepl(root.path(), &["logs"]);
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(listing.contains("Logs on node 127.0.0.1") && listing.contains("node.err"), "{listing}");
    let out = rayrepl(root.path(), &["logs", "worker-*.out", "--tail", "1"]);
    let tails = String::from_utf8_lossy(&out.stdout);
    assert!(tails.contains("hello from stdout 1") && !tails.contains("stderr"), "{tails}");
    assert!(!rayrepl(root.path(), &["logs", "../token"]).status.success(), "a path outside the log directory");

    let pids: Vec<i32> =
        std::fs::read_to_string(latest.join("pids")).unwrap().lines().filter_map(|l| l.parse().ok()).collect();
    let out = rayrepl(root.path(), &["stop"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("Stopped 2"), "{}", String::from_utf8_lossy(&out.stdout));
    for pid in pids {
        assert!(!pid_running(pid), "pid {pid} survived rayrepl stop");
    }
}
