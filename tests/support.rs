//! Helpers shared by the integration tests: run scenario programs and the real
//! `rayrepl` binary as separate processes, and inspect the process table.

#![allow(dead_code)]

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The scenario driver binary.
pub fn scenarios_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_scenarios"))
}

/// The `rayrepl` binary, built by the same cargo invocation's `--bins`.
pub fn rayrepl_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("RAYREPL_BIN") {
        return PathBuf::from(p);
    }
    let p = scenarios_bin().parent().expect("bin dir").join("rayrepl");
    assert!(
        p.exists(),
        "{} is missing: build it first (`cargo build --workspace --bins`, which scripts/test does)",
        p.display()
    );
    p
}

/// Output of a finished scenario, checked for success.
pub struct Run {
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The value of `key=` on the line that starts with it.
    pub fn value(&self, key: &str) -> String {
        let prefix = format!("{key}=");
        self.stdout
            .lines()
            .find_map(|l| l.strip_prefix(&prefix).map(|v| v.split_whitespace().next().unwrap_or("").to_string()))
            .unwrap_or_else(|| panic!("no `{key}=` in output:\n{}\n{}", self.stdout, self.stderr))
    }

    /// The whole line that starts with `key=`, without the key.
    pub fn line(&self, key: &str) -> String {
        let prefix = format!("{key}=");
        self.stdout
            .lines()
            .find_map(|l| l.strip_prefix(&prefix).map(str::to_string))
            .unwrap_or_else(|| panic!("no `{key}=` in output:\n{}\n{}", self.stdout, self.stderr))
    }
}

fn finish(name: &str, out: Output) -> Run {
    let run = Run {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(out.status.success(), "scenario {name} failed ({}):\n{}\n{}", out.status, run.stdout, run.stderr);
    run
}

/// Runs a scenario with extra environment and waits for it (at most two minutes).
pub fn scenario_with(name: &str, env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(scenarios_bin());
    cmd.arg(name).env_remove("RAYREPL_ADDRESS");
    for (k, v) in env {
        cmd.env(k, v);
    }
    finish(name, run_bounded(cmd, Duration::from_secs(120)))
}

/// Runs a scenario on a fresh local cluster.
pub fn scenario(name: &str) -> Run {
    scenario_with(name, &[])
}

/// Runs a command, killing it if it outlives `limit`.
pub fn run_bounded(cmd: Command, limit: Duration) -> Output {
    let shown = format!("{cmd:?}");
    try_bounded(cmd, limit).unwrap_or_else(|| panic!("{shown} could not start or did not finish within {limit:?}"))
}

/// Runs a command, killing it if it outlives `limit`; `None` if it could not
/// start or timed out. It never panics, so teardown can use it while a failed
/// test unwinds.
pub fn try_bounded(mut cmd: Command, limit: Duration) -> Option<Output> {
    use std::process::Stdio;
    let child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().ok()?;
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.ok(),
        Err(_) => {
            // SAFETY: kill(2) on the child we spawned; no memory-safety concerns.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            None
        }
    }
}

/// How many rows of `rayrepl list nodes --format json` are ALIVE.
pub fn count_alive(nodes: &[serde_json::Value]) -> usize {
    nodes.iter().filter(|n| n["STATE"] == "ALIVE").count()
}

/// The daemon pid and state of the node with this IP, from `rayrepl list nodes`.
pub fn node_pid_and_state(nodes: &[serde_json::Value], ip: &str) -> (i32, String) {
    let n = nodes.iter().find(|n| n["NODE_IP"] == ip).unwrap_or_else(|| panic!("no node {ip} in {nodes:?}"));
    (n["PID"].as_i64().unwrap_or(0) as i32, n["STATE"].as_str().unwrap_or("").to_string())
}

/// A process: pid and start time (so a reused pid is not mistaken for it).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Proc {
    pub pid: i32,
    pub start: u64,
    pub name: String,
}

fn read_stat(pid: i32) -> Option<(i32, u64, String)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let close = stat.rfind(')')?;
    let name = stat[stat.find('(')? + 1..close].to_string();
    let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
    let state = fields.first()?;
    if *state == "Z" {
        return None;
    }
    let ppid = fields.get(1)?.parse().ok()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((ppid, start, name))
}

/// All live descendants of `root`.
pub fn descendants(root: i32) -> HashSet<Proc> {
    let mut all = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok())
            && let Some((ppid, start, name)) = read_stat(pid)
        {
            all.push((pid, ppid, start, name));
        }
    }
    let mut found = HashSet::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for (pid, ppid, start, name) in &all {
            if *ppid == p && found.insert(Proc { pid: *pid, start: *start, name: name.clone() }) {
                frontier.push(*pid);
            }
        }
    }
    found
}

/// Whether process `pid` runs (an exited one awaiting its reaper does not).
pub fn pid_running(pid: i32) -> bool {
    read_stat(pid).is_some()
}

/// Whether this exact process still runs.
pub fn still_running(p: &Proc) -> bool {
    read_stat(p.pid).is_some_and(|(_, start, _)| start == p.start)
}

/// Waits until none of `procs` runs; returns the ones still running at the deadline.
pub fn wait_gone(procs: &HashSet<Proc>, limit: Duration) -> Vec<Proc> {
    let deadline = Instant::now() + limit;
    loop {
        let left: Vec<Proc> = procs.iter().filter(|p| still_running(p)).cloned().collect();
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A private session root for `rayrepl start`, so parallel tests do not share
/// `session_latest`. Dropping it stops what was started under it, so a failing
/// test leaves no cluster behind.
pub struct SessionRoot(tempfile::TempDir);

impl SessionRoot {
    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for SessionRoot {
    fn drop(&mut self) {
        let mut cmd = Command::new(rayrepl_bin());
        cmd.arg("stop").env("RAYREPL_TEMP_DIR", self.path());
        let _ = try_bounded(cmd, Duration::from_secs(30));
    }
}

pub fn session_root() -> SessionRoot {
    SessionRoot(tempfile::Builder::new().prefix("rayrepl-test-").tempdir().expect("tempdir"))
}

/// `rayrepl start --head` with `num_cpus` under `root`; returns the head's address.
pub fn start_head(root: &Path, num_cpus: &str) -> String {
    let out = rayrepl(root, &["start", "--head", "--port", "0", "--num-cpus", num_cpus]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let address =
        std::fs::read_to_string(root.join("session_latest/head_address")).expect("the head wrote its address");
    address.trim().to_string()
}

/// Runs `rayrepl` with `RAYREPL_TEMP_DIR` set.
pub fn rayrepl(root: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(rayrepl_bin());
    cmd.args(args).env("RAYREPL_TEMP_DIR", root).env_remove("RAYREPL_TOKEN").env_remove("RAYREPL_ADDRESS");
    run_bounded(cmd, Duration::from_secs(60))
}

/// Runs `cmd` with a stdout whose reader has already gone, as `cmd | head -0`
/// leaves it; returns how it ended and what it wrote to stderr.
pub fn with_stdout_closed(mut cmd: Command) -> (std::process::ExitStatus, String) {
    use std::process::Stdio;
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start the command");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait for the command");
    (out.status, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Asserts that `rayrepl args` (in the session root `root`, finding the cluster
/// there) ends quietly when its reader has gone: success or SIGPIPE's default
/// action, never a panic.
pub fn assert_quiet_with_stdout_closed(root: &Path, args: &[&str]) {
    let mut cmd = Command::new(rayrepl_bin());
    cmd.args(args).env("RAYREPL_TEMP_DIR", root).env_remove("RAYREPL_TOKEN").env_remove("RAYREPL_ADDRESS");
    let (status, stderr) = with_stdout_closed(cmd);
    assert!(
        status.success() || std::os::unix::process::ExitStatusExt::signal(&status) == Some(libc::SIGPIPE),
        "rayrepl {args:?} with its stdout closed: {status:?}\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "rayrepl {args:?}: {stderr}");
}
