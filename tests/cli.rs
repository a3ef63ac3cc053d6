//! The command line as a Unix citizen and in Ray's spellings, with real
//! processes: what it says when there is no cluster, a wrong token or a taken
//! port (and that such a start leaves nothing behind), quiet pipes, `address
//! auto` and the dashboard's address, `/metrics`, and a `stop` that returns only
//! once its processes are gone.

mod support;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;
use support::*;

fn text(out: &Output) -> (String, String) {
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The session directories under `root`, without the `session_latest` link.
fn sessions(root: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| !p.is_symlink() && p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("session_")))
        .collect();
    dirs.sort();
    dirs
}

/// Live processes (not zombies) started for the session in `dir`: its daemons
/// and their workers all carry `RAYREPL_SESSION_DIR`.
fn processes_of(dir: &Path) -> Vec<i32> {
    let wanted = format!("RAYREPL_SESSION_DIR={}", dir.display());
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|var| var == wanted.as_bytes()))
        })
        .filter(|pid| pid_running(*pid))
        .collect()
}

/// A port nobody listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `GET path` over plain HTTP/1.0; the status code and body.
fn http_get(address: &str, path: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(address).unwrap_or_else(|e| panic!("connect {address}: {e}"));
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nhost: {address}\r\n\r\n").unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    let (head, body) = reply.split_once("\r\n\r\n").unwrap_or_else(|| panic!("not HTTP: {reply}"));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, body.to_string())
}

/// Parses Prometheus text format (0.0.4), panicking on any line that is not;
/// returns the samples as (name with labels, value).
fn parse_prometheus(body: &str) -> Vec<(String, f64)> {
    let mut samples = Vec::new();
    for line in body.lines().filter(|l| !l.is_empty()) {
        if let Some(comment) = line.strip_prefix("# ") {
            let mut words = comment.split_whitespace();
            let kind = words.next().unwrap_or("");
            assert!(matches!(kind, "HELP" | "TYPE"), "unknown comment: {line}");
            if kind == "TYPE" {
                let ty = words.nth(1).unwrap_or("");
                assert!(matches!(ty, "counter" | "gauge" | "histogram" | "summary" | "untyped"), "{line}");
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line}"));
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name: {line}"
        );
        if name_end < series.len() {
            assert!(series.ends_with('}'), "unclosed labels: {line}");
        }
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value: {line}"));
        samples.push((series.to_string(), value));
    }
    samples
}

/// The value of the one sample whose series starts with `name` and has every
/// label in `labels`.
fn sample(samples: &[(String, f64)], name: &str, labels: &[&str]) -> Option<f64> {
    samples
        .iter()
        .filter(|(s, _)| s.starts_with(&format!("{name}{{")) && labels.iter().all(|l| s.contains(l)))
        .map(|(_, v)| *v)
        .next()
}

fn assert_plain(stderr: &str) {
    for layer in ["transport error", "tcp connect error", "os error"] {
        assert!(!stderr.contains(layer), "the transport's words reached the user: {stderr}");
    }
}

#[test]
fn no_cluster_is_explained_with_the_address_and_the_way_to_start_one() {
    let root = session_root();
    // Nothing was ever started here.
    let out = rayrepl(root.path(), &["status"]);
    let (_, err) = text(&out);
    assert!(!out.status.success());
    assert!(err.to_lowercase().contains("no cluster is running") && err.contains("rayrepl start --head"), "{err}");
    assert_plain(&err);

    // A cluster that was started and stopped: the address it had is named.
    let address = start_head(root.path(), "1");
    assert!(rayrepl(root.path(), &["stop"]).status.success());
    let out = rayrepl(root.path(), &["status"]);
    let (_, err) = text(&out);
    assert!(!out.status.success());
    assert!(err.contains(&format!("cannot reach the head at {address}")), "{err}");
    assert!(err.contains("nothing is listening there"), "{err}");
    assert!(err.to_lowercase().contains("no cluster is running on this machine"), "{err}");
    assert!(err.contains("rayrepl start --head"), "{err}");
    assert_plain(&err);

    // The same words reach a driver (`ray::init` through RAYREPL_ADDRESS).
    let mut cmd = Command::new(scenarios_bin());
    cmd.arg("attach").env("RAYREPL_ADDRESS", &address).env("RAYREPL_TEMP_DIR", root.path());
    let out = run_bounded(cmd, Duration::from_secs(60));
    let (_, err) = text(&out);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!("cannot reach the head at {address}")) && err.contains("rayrepl start --head"),
        "{err}"
    );
    assert_plain(&err);
}

#[test]
fn every_printing_command_ends_quietly_when_its_reader_goes() {
    let root = session_root();
    start_head(root.path(), "1");
    let dashboard = std::fs::read_to_string(root.path().join("session_latest/dashboard_url")).unwrap();
    let dashboard = dashboard.trim();
    let trace = root.path().join("trace.json");
    let commands: Vec<Vec<&str>> = vec![
        vec!["status"],
        vec!["status", "-v"],
        vec!["list", "nodes"],
        vec!["list", "tasks", "--format", "json"],
        vec!["list", "actors"],
        vec!["list", "jobs"],
        vec!["list", "objects"],
        vec!["list", "placement-groups"],
        vec!["summary", "tasks"],
        vec!["summary", "actors"],
        vec!["summary", "objects"],
        vec!["timeline", "--output", trace.to_str().unwrap()],
        vec!["logs"],
        vec!["job", "list", "--address", dashboard],
        vec!["kernel", "install", "--prefix", root.path().to_str().unwrap()],
    ];
    for args in &commands {
        assert_quiet_with_stdout_closed(root.path(), args);
    }
    // `rayrepl status | head -1`, as a shell runs it.
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("'{}' status | head -1", rayrepl_bin().display()))
        .env("RAYREPL_TEMP_DIR", root.path())
        .env_remove("RAYREPL_TOKEN")
        .env_remove("RAYREPL_ADDRESS")
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.starts_with("======== Cluster status"), "{stdout}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // `stop` prints too, after its work.
    assert_quiet_with_stdout_closed(root.path(), &["stop"]);
}

#[test]
fn joining_finds_the_token_here_and_a_failed_start_leaves_nothing() {
    let root = session_root();
    let address = start_head(root.path(), "1");
    let head_session = std::fs::canonicalize(root.path().join("session_latest")).unwrap();
    let port = address.rsplit_once(':').unwrap().1.to_string();
    let before = sessions(root.path());

    // A wrong token: the message says where the right one is and how to pass it.
    let out = rayrepl(
        root.path(),
        &["start", "--address", &address, "--token", "not-the-token", "--node-ip-address", "127.0.0.2"],
    );
    let (_, err) = text(&out);
    assert!(!out.status.success());
    assert!(err.contains("rejected the token"), "{err}");
    assert!(err.contains("--token-file") && err.contains("RAYREPL_TOKEN"), "{err}");
    assert!(err.contains(&head_session.join("token").display().to_string()), "names the token's file: {err}");
    assert_eq!(sessions(root.path()), before, "a refused join leaves no session directory");

    // An unreachable head.
    let nobody = format!("127.0.0.1:{}", free_port());
    let out = rayrepl(root.path(), &["start", "--address", &nobody, "--token", "x"]);
    let (_, err) = text(&out);
    assert!(!out.status.success());
    assert!(err.contains(&format!("cannot reach the head at {nobody}")), "{err}");
    assert_plain(&err);
    assert_eq!(sessions(root.path()), before, "an unreachable head leaves no session directory");

    // A taken port: no directory, and no daemon left running.
    let out = rayrepl(root.path(), &["start", "--head", "--port", &port, "--num-cpus", "1"]);
    let (_, err) = text(&out);
    assert!(!out.status.success());
    assert!(err.contains("Address already in use") && err.contains("--port"), "{err}");
    assert_eq!(sessions(root.path()), before, "a head that could not listen leaves no session directory");

    // A taken metrics port fails the node, and the head started for it goes too.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let metrics_port = taken.local_addr().unwrap().port().to_string();
    let out = rayrepl(
        root.path(),
        &["start", "--head", "--port", "0", "--num-cpus", "1", "--metrics-export-port", &metrics_port],
    );
    let (_, err) = text(&out);
    assert!(!out.status.success());
    assert!(err.contains("cannot serve metrics") && err.contains("--metrics-export-port"), "{err}");
    assert_eq!(sessions(root.path()), before, "a node that failed leaves no session directory");
    drop(taken);

    // No token at all, on the head's machine, by another of its names: found.
    let out = rayrepl(
        root.path(),
        &["start", "--address", &format!("localhost:{port}"), "--node-ip-address", "127.0.0.2", "--num-cpus", "1"],
    );
    let (stdout, err) = text(&out);
    assert!(out.status.success(), "{stdout}{err}");
    assert!(stdout.contains("joined the cluster"), "{stdout}");
    let out = rayrepl(root.path(), &["list", "nodes", "--format", "json"]);
    let nodes: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(count_alive(&nodes), 2, "{nodes:?}");
}

#[test]
fn metrics_and_rays_spellings_of_addresses_and_flags() {
    let root = session_root();
    let metrics_port = free_port();
    let dashboard_port = free_port();
    let out = rayrepl(
        root.path(),
        &[
            "start",
            "--head",
            "--port=0",
            "--num-cpus=1",
            "--include-dashboard",
            "true",
            "--dashboard-host",
            "127.0.0.1",
            "--dashboard-port",
            &dashboard_port.to_string(),
            "--metrics-export-port",
            &metrics_port.to_string(),
        ],
    );
    let (stdout, err) = text(&out);
    assert!(out.status.success(), "{stdout}{err}");
    let metrics = format!("127.0.0.1:{metrics_port}");
    assert!(stdout.contains(&format!("http://{metrics}/metrics")), "{stdout}");
    let address = std::fs::read_to_string(root.path().join("session_latest/head_address")).unwrap();
    let address = address.trim();
    let token = std::fs::read_to_string(root.path().join("session_latest/token")).unwrap();

    let (status, body) = http_get(&metrics, "/metrics");
    assert_eq!(status, 200, "{body}");
    let before = parse_prometheus(&body);
    let leases_before = sample(&before, "ray_node_leases_granted_total", &[]).expect("leases counter");
    assert!(sample(&before, "ray_cluster_nodes", &["State=\"ALIVE\""]) == Some(1.0), "{body}");
    assert!(sample(&before, "ray_node_resources", &["Name=\"CPU\""]) == Some(1.0), "{body}");
    assert!(sample(&before, "ray_object_store_capacity_bytes", &[]).is_some_and(|v| v > 0.0), "{body}");

    // A driver with Ray's `address="auto"` runs a task on this cluster.
    let env_root = root.path().to_str().unwrap();
    let run = scenario_with("attach", &[("RAYREPL_ADDRESS", "auto"), ("RAYREPL_TEMP_DIR", env_root)]);
    assert_eq!(run.value("sum"), "42");

    let (_, body) = http_get(&metrics, "/metrics");
    let after = parse_prometheus(&body);
    let leases_after = sample(&after, "ray_node_leases_granted_total", &[]).unwrap();
    assert!(leases_after > leases_before, "the lease counter rose: {leases_before} -> {leases_after}");
    assert!(sample(&after, "ray_tasks", &["State=\"FINISHED\"", "Name=\"add\""]).is_some_and(|v| v >= 1.0), "{body}");
    assert!(sample(&after, "ray_node_workers_started_total", &[]).is_some_and(|v| v >= 1.0), "{body}");
    assert_eq!(http_get(&metrics, "/other").0, 404);

    // The dashboard's address for a driver: this machine's session says which head it is.
    let dashboard = format!("http://127.0.0.1:{dashboard_port}");
    let run = scenario_with("attach", &[("RAYREPL_ADDRESS", dashboard.as_str()), ("RAYREPL_TEMP_DIR", env_root)]);
    assert_eq!(run.value("sum"), "42");
    // Elsewhere (no session knows it), the dashboard itself says it, given the token.
    let elsewhere = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(rayrepl_bin());
    cmd.args(["status", "--address", &dashboard])
        .env("RAYREPL_TEMP_DIR", elsewhere.path())
        .env("RAYREPL_TOKEN", token.trim())
        .env_remove("RAYREPL_ADDRESS");
    let out = run_bounded(cmd, Duration::from_secs(60));
    let (stdout, err) = text(&out);
    assert!(out.status.success() && stdout.contains("Active:"), "{stdout}{err}");
    // Without the token, it cannot, and the error names the head's port.
    let mut cmd = Command::new(rayrepl_bin());
    cmd.args(["status", "--address", &dashboard])
        .env("RAYREPL_TEMP_DIR", elsewhere.path())
        .env_remove("RAYREPL_TOKEN")
        .env_remove("RAYREPL_ADDRESS");
    let out = run_bounded(cmd, Duration::from_secs(60));
    let (_, err) = text(&out);
    assert!(!out.status.success());
    assert!(err.contains("dashboard") && err.contains("127.0.0.1:6379"), "{err}");

    // `auto` and `ray://` for the CLI.
    for given in ["auto".to_string(), format!("ray://{address}")] {
        let out = rayrepl(root.path(), &["status", "--address", &given]);
        let (stdout, err) = text(&out);
        assert!(out.status.success() && stdout.contains("Active:"), "--address {given}: {stdout}{err}");
    }
    // Ray's boolean spellings, and the bare flag.
    for flag in [&["--include-dashboard", "false"][..], &["--include-dashboard=0"], &["--include-dashboard"]] {
        let other = session_root();
        let mut args = vec!["start", "--head", "--port", "0", "--num-cpus", "1", "--dashboard-port", "0"];
        args.extend_from_slice(flag);
        let out = rayrepl(other.path(), &args);
        let (stdout, err) = text(&out);
        assert!(out.status.success(), "{flag:?}: {stdout}{err}");
        let served = other.path().join("session_latest/dashboard_url").exists();
        assert_eq!(served, flag == ["--include-dashboard"], "{flag:?}");
    }
}

#[test]
fn stop_returns_once_every_process_it_stopped_is_gone() {
    let root = session_root();
    let address = start_head(root.path(), "2");
    let session = std::fs::canonicalize(root.path().join("session_latest")).unwrap();
    let env_root = root.path().to_str().unwrap();
    // Workers, too: a driver leaves idle ones behind on the node.
    let run = scenario_with("attach", &[("RAYREPL_ADDRESS", address.as_str()), ("RAYREPL_TEMP_DIR", env_root)]);
    assert_eq!(run.value("sum"), "42");
    let running = processes_of(&session);
    assert!(running.len() >= 3, "head, node and a worker: {running:?}");
    let out = rayrepl(root.path(), &["stop"]);
    let (stdout, err) = text(&out);
    assert!(stdout.contains("Stopped 2"), "{stdout}{err}");
    let left: Vec<i32> = running.into_iter().filter(|pid| pid_running(*pid)).collect();
    assert!(left.is_empty(), "still running when `rayrepl stop` returned: {left:?}");
}
