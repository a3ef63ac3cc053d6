//! Clusters of several nodes on one machine: each node has its own session
//! directory and its own loopback IP (all of 127.0.0.0/8 is local, so no root is
//! needed), joins the head with the head's token file, and is stopped by the
//! `rayrepl stop` of its own directory.

mod support;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use support::*;

/// A head and two joined nodes, each with 1 CPU; the joined ones also have a
/// resource of their own and one they share. Node .3 plays another machine: its
/// host id differs, so it must fetch drivers' programs rather than run their files.
struct ThreeNodes {
    roots: Vec<SessionRoot>,
    address: String,
}

impl ThreeNodes {
    fn start() -> Self {
        let roots: Vec<_> = (0..3).map(|_| session_root()).collect();
        let head = rayrepl(
            roots[0].path(),
            &["start", "--head", "--port", "0", "--num-cpus", "1", "--node-ip-address", "127.0.0.1"],
        );
        assert!(head.status.success(), "{}", String::from_utf8_lossy(&head.stderr));
        let latest = roots[0].path().join("session_latest");
        let address = std::fs::read_to_string(latest.join("head_address")).unwrap().trim().to_string();
        let cluster = ThreeNodes { roots, address };
        for (i, resource) in [(1, "b"), (2, "c")] {
            let ip = format!("127.0.0.{}", i + 1);
            // Each has a resource of its own, and `bc`, which both have.
            let resources = format!("{{\"{resource}\": 1, \"bc\": 1}}");
            let joined = cluster.join(
                i,
                &latest.join("token"),
                &["--num-cpus", "1", "--node-ip-address", &ip, "--resources", &resources],
            );
            assert!(joined.status.success(), "{}", String::from_utf8_lossy(&joined.stderr));
        }
        cluster.wait_alive(3);
        cluster
    }

    fn join(&self, i: usize, token_file: &Path, args: &[&str]) -> std::process::Output {
        let mut cmd = Command::new(rayrepl_bin());
        cmd.args(["start", "--address", &self.address])
            .args(args)
            .env("RAYREPL_TEMP_DIR", self.roots[i].path())
            .env("RAYREPL_TOKEN_FILE", token_file)
            .env("RAYREPL_HOST_ID", if i == 2 { "another-machine" } else { "" })
            .env_remove("RAYREPL_TOKEN")
            .env_remove("RAYREPL_ADDRESS");
        run_bounded(cmd, Duration::from_secs(60))
    }

    /// `rayrepl list nodes` as JSON rows.
    fn nodes(&self) -> Vec<serde_json::Value> {
        let out = rayrepl(self.roots[0].path(), &["list", "nodes", "--format", "json", "--address", &self.address]);
        serde_json::from_slice(&out.stdout).unwrap_or_default()
    }

    fn alive_nodes(&self) -> usize {
        count_alive(&self.nodes())
    }

    /// The node daemon's pid and state, for the node with this IP.
    fn node(&self, ip: &str) -> (i32, String) {
        node_pid_and_state(&self.nodes(), ip)
    }

    fn wait_alive(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.alive_nodes() < n {
            assert!(Instant::now() < deadline, "fewer than {n} nodes alive after 30 s");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn driver_env(&self) -> [(&str, String); 2] {
        [("RAYREPL_ADDRESS", self.address.clone()), ("RAYREPL_TEMP_DIR", self.root(0).display().to_string())]
    }

    fn root(&self, i: usize) -> PathBuf {
        self.roots[i].path().to_path_buf()
    }
}

impl Drop for ThreeNodes {
    fn drop(&mut self) {
        for root in self.roots.iter().rev() {
            let _ = rayrepl(root.path(), &["stop"]);
        }
    }
}

#[test]
fn tasks_follow_their_resources_spill_when_full_and_log_with_their_ip() {
    let cluster = ThreeNodes::start();
    let env = cluster.driver_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let run = scenario_with("placement", &env);
    assert_eq!(run.value("needs_b"), "127.0.0.2", "{}", run.stdout);
    assert_eq!(run.value("needs_c"), "127.0.0.3", "{}", run.stdout);
    // Six 400 ms tasks on three one-CPU nodes: the driver's node cannot hold them.
    let spread = run.value("spread");
    assert!(spread.split(',').count() >= 2, "all tasks ran on {spread}");
    assert_eq!(run.value("nowhere"), "infeasible");
    // Node .3 ran the task from the program it fetched into its session directory.
    let exe = run.value("exe_on_c");
    assert!(exe.starts_with(&cluster.root(2).display().to_string()) && exe.contains("/executables/"), "{exe}");
    // Output from other nodes names them.
    assert!(
        run.stdout.contains("(where_am_i pid=") && run.stdout.contains("ip=127.0.0.2) running on 127.0.0.2"),
        "{}",
        run.stdout
    );
}

#[test]
fn a_gibibyte_object_crosses_nodes_in_chunks_and_its_copies_are_freed_with_it() {
    let cluster = ThreeNodes::start();
    let env = cluster.driver_env();
    let bin = rayrepl_bin().display().to_string();
    let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.push(("RAYREPL_BIN", &bin));
    let run = scenario_with("transfer", &env);
    assert_eq!(run.value("driver_len"), (1u64 << 30).to_string(), "{}", run.stdout);
    assert!(run.line("driver_len").contains("marked=true"), "{}", run.stdout);
    assert_eq!(run.value("task_marked"), "true", "{}", run.stdout);
    assert!(run.line("task_marked").contains("task_ip=127.0.0.3"), "{}", run.stdout);
    // The object lives on .2, with copies on .1 (the driver's node) and .3.
    let objects: Vec<serde_json::Value> = serde_json::from_str(&run.line("objects")).expect("objects as JSON");
    let gib: Vec<(&str, &str)> = objects
        .iter()
        .filter(|o| o["OBJECT_SIZE"] == "1.00 GiB")
        .map(|o| (o["IP"].as_str().unwrap_or(""), o["COPY"].as_str().unwrap_or("")))
        .collect();
    let mut gib = gib;
    gib.sort_unstable();
    assert_eq!(gib, [("127.0.0.1", "SECONDARY"), ("127.0.0.2", "PRIMARY"), ("127.0.0.3", "SECONDARY")], "{objects:?}");
    assert!(!run.line("objects_after_free").contains("1.00 GiB"), "copies outlived the object: {}", run.stdout);
}

#[test]
fn a_killed_node_is_marked_dead_and_work_goes_on_without_it() {
    let cluster = ThreeNodes::start();
    let (pid, _) = cluster.node("127.0.0.3");
    assert!(pid > 0);
    // SAFETY: kill(2) on the node daemon this test started; its workers die with it.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let killed = Instant::now();
    while cluster.node("127.0.0.3").1 != "DEAD" {
        assert!(killed.elapsed() < Duration::from_secs(15), "node .3 not marked dead 15 s after SIGKILL");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(cluster.alive_nodes(), 2);
    let status = rayrepl(&cluster.root(0), &["status", "--address", &cluster.address]);
    let status = String::from_utf8_lossy(&status.stdout);
    let dead = status.split("Dead:").nth(1).unwrap_or_default();
    assert!(dead.contains("(127.0.0.3)"), "{status}");

    let env = cluster.driver_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let run = scenario_with("after_node_death", &env);
    assert_eq!(run.value("needs_b"), "127.0.0.2");
    assert_eq!(run.value("needs_c"), "infeasible", "{}", run.stdout);
    assert!(!run.value("ran_on").contains("127.0.0.3"), "{}", run.stdout);
}

#[test]
fn a_node_joins_only_with_the_cluster_token() {
    let head_root = session_root();
    let address = start_head(head_root.path(), "1");
    let latest = head_root.path().join("session_latest");
    let node_root = session_root();
    let join = |extra: &[&str]| {
        let mut cmd = Command::new(rayrepl_bin());
        cmd.args(["start", "--address", &address, "--num-cpus", "1", "--node-ip-address", "127.0.0.2"])
            .args(extra)
            .env("RAYREPL_TEMP_DIR", node_root.path())
            .env_remove("RAYREPL_TOKEN")
            .env_remove("RAYREPL_TOKEN_FILE")
            .env_remove("RAYREPL_ADDRESS");
        run_bounded(cmd, Duration::from_secs(60))
    };
    let rejected = join(&["--token", "not-the-token"]);
    let why = String::from_utf8_lossy(&rejected.stderr);
    assert!(!rejected.status.success(), "a wrong token joined");
    assert!(why.contains("wrong cluster token"), "{why}");
    let token_file = latest.join("token");
    let joined = join(&["--token-file", token_file.to_str().unwrap()]);
    assert!(joined.status.success(), "{}", String::from_utf8_lossy(&joined.stderr));
    let listed = rayrepl(head_root.path(), &["list", "nodes", "--format", "json", "--address", &address]);
    let nodes: Vec<serde_json::Value> = serde_json::from_slice(&listed.stdout).unwrap_or_default();
    assert_eq!(nodes.iter().filter(|n| n["STATE"] == "ALIVE").count(), 2, "{nodes:?}");
    let _ = rayrepl(node_root.path(), &["stop"]);
    let _ = rayrepl(head_root.path(), &["stop"]);
}

/// A scenario driver that the test talks to line by line while it runs.
struct LiveDriver {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl LiveDriver {
    fn start(cluster: &ThreeNodes, scenario: &str) -> Self {
        use std::io::{BufRead, BufReader};
        use std::process::Stdio;
        let mut cmd = Command::new(scenarios_bin());
        cmd.arg(scenario).stdin(Stdio::piped()).stdout(Stdio::piped()).env_remove("RAYREPL_ADDRESS");
        for (k, v) in cluster.driver_env() {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start the scenario driver");
        // Lines arrive on a channel, so that a driver that hangs fails the test instead.
        let (tx, lines) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().expect("piped stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        LiveDriver { child, lines, seen: Vec::new() }
    }

    /// What `pick` finds in the next line it accepts, within 60 s a line.
    fn next(&mut self, what: &str, pick: impl Fn(&str) -> Option<String>) -> Option<String> {
        loop {
            let Ok(line) = self.lines.recv_timeout(Duration::from_secs(60)) else {
                eprintln!("no {what} within 60 s; output so far: {:?}", self.seen);
                return None;
            };
            self.seen.push(line.clone());
            if let Some(v) = pick(&line) {
                return Some(v);
            }
        }
    }

    /// The value after `key=` on the next line that starts with it.
    fn value(&mut self, key: &str) -> Option<String> {
        let prefix = format!("{key}=");
        self.next(key, |line| line.strip_prefix(&prefix).map(str::to_string))
    }

    fn say(&mut self, line: &str) {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().expect("piped stdin");
        writeln!(stdin, "{line}").and_then(|()| stdin.flush()).expect("write to the driver");
    }
}

impl Drop for LiveDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn kill_node(cluster: &ThreeNodes, ip: &str) {
    let (pid, _) = cluster.node(ip);
    assert!(pid > 0, "no pid for node {ip}");
    // SAFETY: kill(2) on a node daemon this test started; its workers die with it.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

/// Kills the node at `ip` and waits until the head has marked it dead; its
/// workers, which die with it by the parent-death signal, are surely gone then.
fn kill_node_and_wait_dead(cluster: &ThreeNodes, ip: &str) {
    kill_node(cluster, ip);
    let killed = Instant::now();
    while cluster.node(ip).1 != "DEAD" {
        assert!(killed.elapsed() < Duration::from_secs(15), "node {ip} not marked dead 15 s after SIGKILL");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Issue 21: a head stopped (SIGSTOP) for 2, 5 and 10 times the node timeout,
/// then resumed, used to mark every node dead and so bring the cluster down.
/// Every node must stay alive, or come back, and work running across the stall
/// must finish with the right results.
#[test]
fn a_stalled_head_keeps_its_nodes_and_the_work_across_them_finishes() {
    let cluster = ThreeNodes::start();
    let head_pid: i32 = std::fs::read_to_string(cluster.root(0).join("session_latest/pids"))
        .unwrap()
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .expect("the head's pid is the first recorded");
    let mut driver = LiveDriver::start(&cluster, "through_head_stall");
    driver.say("go");
    let warm = driver.value("round").expect("a first round before any stall");
    assert!(warm.contains("correct=true"), "{warm}");
    for (round, times) in [2u32, 5, 10].into_iter().enumerate() {
        // The round's tasks are in flight when the head stops.
        driver.say("go");
        std::thread::sleep(Duration::from_millis(100));
        // SAFETY: kill(2) on the head daemon this test started.
        unsafe { libc::kill(head_pid, libc::SIGSTOP) };
        std::thread::sleep(ray_head::NODE_TIMEOUT * times);
        // SAFETY: as above.
        unsafe { libc::kill(head_pid, libc::SIGCONT) };
        let result =
            driver.value("round").unwrap_or_else(|| panic!("round {} did not finish after the stall", round + 2));
        assert!(result.contains("correct=true"), "{times}x stall: {result}");
        assert!(result.contains("ips=127.0.0.1,127.0.0.2,127.0.0.3"), "{times}x stall: {result}");
        assert!(result.ends_with(&format!("actor_count={}", round + 2)), "{times}x stall: {result}");
        // Give a node that was wrongly given up the time to come back, then
        // check that none is dead.
        std::thread::sleep(ray_head::NODE_TIMEOUT / 2);
        let nodes = cluster.nodes();
        assert_eq!(count_alive(&nodes), 3, "{times}x stall: {nodes:?}");
    }
    driver.say("stop");
}

/// A node that was stopped for longer than the timeout is marked dead; once it
/// runs again it is told so, registers again, and takes work.
#[test]
fn a_node_marked_dead_while_stopped_rejoins_when_it_runs_again() {
    let cluster = ThreeNodes::start();
    let (pid, _) = cluster.node("127.0.0.3");
    // SAFETY: kill(2) on a node daemon this test started.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let stopped = Instant::now();
    while cluster.node("127.0.0.3").1 != "DEAD" {
        assert!(stopped.elapsed() < Duration::from_secs(20), "a stopped node was not marked dead");
        std::thread::sleep(Duration::from_millis(200));
    }
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    let resumed = Instant::now();
    while cluster.node("127.0.0.3") != (pid, "ALIVE".to_string()) {
        assert!(resumed.elapsed() < Duration::from_secs(15), "the node did not come back: {:?}", cluster.nodes());
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut driver = LiveDriver::start(&cluster, "through_head_stall");
    driver.say("go");
    let round = driver.value("round").expect("work runs on the node that came back");
    assert!(round.contains("correct=true ips=127.0.0.1,127.0.0.2,127.0.0.3"), "{round}");
    driver.say("stop");
}

#[test]
fn a_task_on_a_killed_node_is_retried_on_another() {
    let cluster = ThreeNodes::start();
    let mut driver = LiveDriver::start(&cluster, "retry_on_node_death");
    let started = driver
        .next("start", |line| line.split("started on ").nth(1).map(|ip| ip.trim().to_string()))
        .expect("the task started");
    kill_node(&cluster, &started);
    let finished = driver.value("retried_on").unwrap_or_else(|| panic!("no result after killing node {started}"));
    assert_ne!(finished, started, "the task finished on the node that was killed");
    assert!(["127.0.0.2", "127.0.0.3"].contains(&finished.as_str()), "{finished}");
}

#[test]
fn an_actor_on_a_killed_node_restarts_on_another() {
    let cluster = ThreeNodes::start();
    let mut driver = LiveDriver::start(&cluster, "actor_on_node_death");
    let started = driver.value("actor_started_on").expect("the actor answered");
    let (ip, count) = started.split_once(" count=").expect("ip and count");
    assert_eq!(count, "1");
    // Until its worker is gone, a call could still reach the old instance.
    kill_node_and_wait_dead(&cluster, ip);
    driver.say("killed");
    let restarted = driver.value("actor_restarted_on").unwrap_or_else(|| panic!("no answer after killing node {ip}"));
    let (new_ip, count) = restarted.split_once(" count=").expect("ip and count");
    assert_ne!(new_ip, ip, "the actor answered from the node that was killed");
    assert!(["127.0.0.2", "127.0.0.3"].contains(&new_ip), "{new_ip}");
    // A new instance: the constructor ran again.
    assert_eq!(count, "1");
    let actors = rayrepl(&cluster.root(0), &["list", "actors", "--format", "json", "--address", &cluster.address]);
    let actors: Vec<serde_json::Value> = serde_json::from_slice(&actors.stdout).unwrap_or_default();
    assert!(actors.iter().any(|a| a["STATE"] == "ALIVE" && a["CLASS_NAME"] == "Counter"), "{actors:?}");
    driver.say("listed");
}

#[test]
fn a_lost_object_is_rebuilt_from_its_lineage_or_reported_lost() {
    let cluster = ThreeNodes::start();
    let mut driver = LiveDriver::start(&cluster, "lineage");
    // Kills the node holding the object of `size`, once it is made, and waits
    // until the head knows.
    let kill_holder = |driver: &mut LiveDriver, size: &str| -> String {
        assert_eq!(driver.value("made").as_deref(), Some(size));
        let listed = rayrepl(&cluster.root(0), &["list", "objects", "--format", "json", "--address", &cluster.address]);
        let objects: Vec<serde_json::Value> = serde_json::from_slice(&listed.stdout).unwrap_or_default();
        let holder = objects
            .iter()
            .find(|o| o["OBJECT_SIZE"] == size.replace(" MiB", ".00 MiB") && o["COPY"] == "PRIMARY")
            .and_then(|o| o["IP"].as_str())
            .unwrap_or_else(|| panic!("no {size} object in {objects:?}"))
            .to_string();
        kill_node_and_wait_dead(&cluster, &holder);
        driver.say("killed");
        holder
    };
    let first = kill_holder(&mut driver, "64 MiB");
    assert_eq!(driver.value("arg_marked").as_deref(), Some("true"), "a task's lost argument was not rebuilt");
    let rebuilt = driver.value("rebuilt_len").expect("the object was rebuilt");
    assert_eq!(rebuilt, format!("{} marked=true", 64 << 20));
    let second = kill_holder(&mut driver, "32 MiB");
    assert_ne!(first, second);
    let lost = driver.value("lost").expect("a lost object was reported");
    assert!(lost.starts_with("ObjectLost") && lost.contains("no retries left"), "{lost}");
}

#[test]
fn status_shows_each_node_and_the_demands_waiting_for_resources() {
    let cluster = ThreeNodes::start();
    let mut driver = LiveDriver::start(&cluster, "busy");
    assert_eq!(driver.value("submitted").as_deref(), Some("8"));
    // Eight tasks on three CPUs: lease requests wait, and heartbeats (every
    // 250 ms) carry them to the head.
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        let out = rayrepl(&cluster.root(0), &["status", "-v", "--address", &cluster.address]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.contains("pending tasks/actors") || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let demands = status.split("Demands:").nth(1).unwrap_or_default();
    assert!(demands.contains("{CPU: 1}: ") && demands.contains("+ pending tasks/actors"), "{status}");
    assert_eq!(status.matches("\nNode: node_").count(), 3, "{status}");
    // Each node's own usage, its resources included.
    assert_eq!(status.matches("\n Usage:\n").count(), 3, "{status}");
    assert!(status.contains("/1.0 b\n") && status.contains("/1.0 c\n"), "{status}");
    assert_eq!(driver.value("ran").as_deref(), Some("8"));
}

#[test]
fn a_driver_attaches_to_a_node_on_its_own_machine() {
    let cluster = ThreeNodes::start();
    // Node .3's machine has no head: its session still names the cluster, so
    // the token and address are found there.
    let status = rayrepl(&cluster.root(2), &["status"]);
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    let env = |host: &str| {
        let mut cmd = Command::new(scenarios_bin());
        cmd.arg("attach_elsewhere")
            .env("RAYREPL_ADDRESS", &cluster.address)
            .env("RAYREPL_TEMP_DIR", cluster.root(2))
            .env("RAYREPL_HOST_ID", host)
            .env_remove("RAYREPL_TOKEN")
            .env_remove("RAYREPL_TOKEN_FILE");
        run_bounded(cmd, Duration::from_secs(120))
    };
    let run = env("another-machine");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&run.stderr));
    assert!(stdout.contains("on_b=127.0.0.2 marked=true"), "{stdout}");
    // A machine with no node of the cluster cannot hold a driver's objects.
    let run = env("a-third-machine");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success());
    assert!(stderr.contains("no node of the cluster") && stderr.contains("rayrepl start --address"), "{stderr}");
}

#[test]
fn placement_group_strategies_place_bundles_and_their_tasks_across_nodes() {
    let cluster = ThreeNodes::start();
    let env = cluster.driver_env();
    let bin = rayrepl_bin().display().to_string();
    let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.push(("RAYREPL_BIN", &bin));
    let run = scenario_with("pg_strategies", &env);
    // Three one-CPU nodes: bundles land by strategy, and a task in bundle i runs
    // on bundle i's node.
    assert_eq!(run.line("strict_spread_nodes"), "3 task_nodes=3", "{}", run.stdout);
    assert_eq!(run.line("spread_nodes"), "2 task_nodes=2");
    assert_eq!(run.line("strict_pack_nodes"), "1 task_nodes=1");
    assert_eq!(run.line("pack_nodes"), "2 task_nodes=2", "two one-CPU bundles overflow one node");
    assert_eq!(run.value("outside_ran_while_reserved"), "false", "a task outside the group took its CPUs");
    assert_eq!(run.value("outside_ran_after_removal"), "true");
    assert_eq!(run.value("spread_tasks_nodes"), "3", "{}", run.stdout);
    assert_eq!(run.value("affinity"), "127.0.0.3,127.0.0.3,127.0.0.3");
    assert_eq!(run.value("affinity_actor"), "127.0.0.3");
    assert_eq!(run.value("spread_actors_nodes"), "3", "{}", run.stdout);
}

/// Joins one more node with `resources` at `ip`; it is stopped when dropped.
struct ExtraNode(SessionRoot);

impl ExtraNode {
    fn join(cluster: &ThreeNodes, ip: &str, resources: &str) -> Self {
        let root = session_root();
        let token = cluster.root(0).join("session_latest/token");
        let mut cmd = Command::new(rayrepl_bin());
        cmd.args(["start", "--address", &cluster.address, "--num-cpus", "1", "--node-ip-address", ip])
            .args(["--resources", resources])
            .env("RAYREPL_TEMP_DIR", root.path())
            .env("RAYREPL_TOKEN_FILE", token)
            .env_remove("RAYREPL_TOKEN")
            .env_remove("RAYREPL_ADDRESS");
        let joined = run_bounded(cmd, Duration::from_secs(60));
        assert!(joined.status.success(), "{}", String::from_utf8_lossy(&joined.stderr));
        ExtraNode(root)
    }
}

impl Drop for ExtraNode {
    fn drop(&mut self) {
        let _ = rayrepl(self.0.path(), &["stop"]);
    }
}

#[test]
fn a_pending_placement_group_is_created_when_a_node_joins_and_its_bundles_move_when_a_node_dies() {
    let cluster = ThreeNodes::start();
    let mut driver = LiveDriver::start(&cluster, "pg_pending_then_node");
    assert_eq!(driver.value("pending_ready").as_deref(), Some("false"), "no node has `d` yet");
    assert_eq!(driver.value("pending_state").as_deref(), Some("PENDING"));
    let status = rayrepl(&cluster.root(0), &["status", "--address", &cluster.address]);
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(status.contains("{d: 1}"), "status shows the group's demand: {status}");
    driver.next("the cue to add a node", |l| (l == "add_node").then(String::new));
    let _extra = ExtraNode::join(&cluster, "127.0.0.4", "{\"d\": 1}");
    let created = driver.value("created_after_join").expect("the group was created");
    assert_eq!(created, "true on=127.0.0.4");
    let spread = driver.value("spread_on").expect("a STRICT_SPREAD group was created");
    let ips: Vec<&str> = spread.split(',').collect();
    assert_eq!(ips.len(), 2);
    assert_ne!(ips[0], ips[1]);
    // Kill a node that holds a bundle (not the head's, which the driver uses).
    let victim = ips.iter().find(|ip| **ip != "127.0.0.1").expect("a bundle off the head's node").to_string();
    kill_node_and_wait_dead(&cluster, &victim);
    driver.say("killed");
    let after = driver.value("rescheduled_state").expect("the group after the death");
    let (state, on) = after.split_once(" on=").expect("state and nodes");
    assert_eq!(state, "CREATED", "{after}");
    let on: Vec<&str> = on.split(',').collect();
    assert!(!on.contains(&victim.as_str()), "a bundle stayed on the dead node: {after}");
    assert_ne!(on[0], on[1], "STRICT_SPREAD relaxed after the death: {after}");
}
