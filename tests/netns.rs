//! The three-node cluster of `multinode.rs`, but with each node in its own
//! network namespace, as on separate machines: loopback addresses cannot stand
//! in for one another here, so a service that binds or dials 127.0.0.1 where it
//! should use the node's IP fails. The namespaces hang off a bridge in a
//! namespace of their own (nothing touches the host's interfaces), each node gets
//! its own IP on a private subnet, and everything is removed when the test ends.
//! Creating namespaces needs root; without it the test says so and passes.

mod support;
use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};
use support::*;

/// Runs `ip args`, or says which command failed and why.
fn ip(args: &[&str]) -> Result<(), String> {
    let mut cmd = Command::new("ip");
    cmd.args(args);
    match try_bounded(cmd, Duration::from_secs(10)) {
        Some(out) if out.status.success() => Ok(()),
        Some(out) => Err(format!("`ip {}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim())),
        None => Err(format!("`ip {}` could not run or hung", args.join(" "))),
    }
}

/// `program args` inside network namespace `ns`, with a clean rayrepl environment.
fn in_ns(ns: &str, program: impl AsRef<OsStr>, args: &[&str]) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns])
        .arg(program)
        .args(args)
        .env_remove("RAYREPL_TOKEN")
        .env_remove("RAYREPL_TOKEN_FILE")
        .env_remove("RAYREPL_ADDRESS")
        .env_remove("RAYREPL_HOST_ID");
    cmd
}

/// Three namespaces with a node each, joined by a bridge in a fourth. Dropping
/// it stops the nodes and deletes the namespaces, which takes their veths along.
struct NetnsCluster {
    /// Namespaces created so far, bridge first, so teardown removes exactly these.
    namespaces: Vec<String>,
    /// The node namespaces, one per node.
    nodes: Vec<String>,
    /// Node `i`'s IP is `{subnet}.{i + 1}`.
    subnet: String,
    roots: Vec<SessionRoot>,
    address: String,
}

impl NetnsCluster {
    /// The namespaces and their network, or `None` (after saying why) when this
    /// process may not create namespaces.
    fn network() -> Option<Self> {
        // SAFETY: geteuid(2) has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipping: network namespaces need root (run as root to test nodes in separate namespaces)");
            return None;
        }
        let pid = std::process::id();
        let mut net = NetnsCluster {
            namespaces: Vec::new(),
            nodes: (0..3).map(|i| format!("rr{pid}n{i}")).collect(),
            subnet: format!("10.213.{}", pid % 250),
            roots: (0..3).map(|_| session_root()).collect(),
            address: String::new(),
        };
        let bridge = format!("rr{pid}br");
        // The first namespace tells whether we may create them at all (a
        // container's root often lacks CAP_SYS_ADMIN, or `ip` is missing).
        if let Err(why) = ip(&["netns", "add", &bridge]) {
            eprintln!(
                "skipping: cannot create network namespaces ({why}); \
                 run as root with CAP_SYS_ADMIN and iproute2 to test nodes in separate namespaces"
            );
            return None;
        }
        net.namespaces.push(bridge.clone());
        if let Err(why) = net.wire(&bridge) {
            panic!("setting up the namespaces' network: {why}");
        }
        Some(net)
    }

    /// A bridge in `bridge`, and a veth pair from it into each node namespace.
    fn wire(&mut self, bridge: &str) -> Result<(), String> {
        ip(&["-n", bridge, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", bridge, "link", "set", "br0", "up"])?;
        for (i, ns) in self.nodes.clone().iter().enumerate() {
            ip(&["netns", "add", ns])?;
            self.namespaces.push(ns.clone());
            // Made inside the bridge's namespace with the peer placed straight
            // into the node's, so no interface ever appears on the host.
            let port = format!("p{i}");
            ip(&["-n", bridge, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", ns])?;
            ip(&["-n", bridge, "link", "set", &port, "master", "br0"])?;
            ip(&["-n", bridge, "link", "set", &port, "up"])?;
            // Services may talk to themselves over loopback too.
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&["-n", ns, "addr", "add", &format!("{}/24", self.ip(i)), "dev", "eth0"])?;
            ip(&["-n", ns, "link", "set", "eth0", "up"])?;
        }
        Ok(())
    }

    /// The cluster: a head in the first namespace, and a node in each other one
    /// that joins it over the bridge. `None` when namespaces are not available.
    fn start() -> Option<Self> {
        let mut cluster = Self::network()?;
        let head_ip = cluster.ip(0);
        let head = cluster.rayrepl(
            0,
            &["start", "--head", "--port", "0", "--num-cpus", "1", "--node-ip-address", &head_ip],
            &[],
        );
        assert!(head.status.success(), "head in {}: {}", cluster.nodes[0], String::from_utf8_lossy(&head.stderr));
        let latest = cluster.root(0).join("session_latest");
        let address = std::fs::read_to_string(latest.join("head_address")).expect("the head wrote head_address");
        cluster.address = address.trim().to_string();
        let token = latest.join("token").display().to_string();
        for (i, resource) in [(1, "b"), (2, "c")] {
            let ip = cluster.ip(i);
            // Each has a resource of its own, and `bc`, which both have.
            let resources = format!("{{\"{resource}\": 1, \"bc\": 1}}");
            // Node 3 also has another host id, so it fetches drivers' programs
            // rather than running their files.
            let host = [("RAYREPL_HOST_ID", if i == 2 { "another-machine" } else { "" })];
            let joined = cluster.rayrepl(
                i,
                &[
                    "start",
                    "--address",
                    &cluster.address,
                    "--num-cpus",
                    "1",
                    "--node-ip-address",
                    &ip,
                    "--resources",
                    &resources,
                    "--token-file",
                    &token,
                ],
                &host,
            );
            assert!(joined.status.success(), "node {ip}: {}", String::from_utf8_lossy(&joined.stderr));
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while cluster.alive_nodes() < 3 {
            assert!(Instant::now() < deadline, "fewer than 3 nodes alive after 30 s: {:?}", cluster.nodes());
            std::thread::sleep(Duration::from_millis(200));
        }
        Some(cluster)
    }

    fn ip(&self, i: usize) -> String {
        format!("{}.{}", self.subnet, i + 1)
    }

    fn root(&self, i: usize) -> PathBuf {
        self.roots[i].path().to_path_buf()
    }

    /// `rayrepl args` for node `i`, inside its namespace and session directory.
    fn rayrepl(&self, i: usize, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = in_ns(&self.nodes[i], rayrepl_bin(), args);
        cmd.env("RAYREPL_TEMP_DIR", self.roots[i].path()).envs(env.iter().copied());
        run_bounded(cmd, Duration::from_secs(30))
    }

    /// `rayrepl list nodes` as JSON rows, asked from the head's namespace.
    fn nodes(&self) -> Vec<serde_json::Value> {
        let out = self.rayrepl(0, &["list", "nodes", "--format", "json", "--address", &self.address], &[]);
        serde_json::from_slice(&out.stdout).unwrap_or_default()
    }

    fn alive_nodes(&self) -> usize {
        count_alive(&self.nodes())
    }

    /// The node daemon's pid and state, for the node with this IP.
    fn node(&self, ip: &str) -> (i32, String) {
        node_pid_and_state(&self.nodes(), ip)
    }

    /// A scenario run as a driver in the head's namespace.
    fn scenario(&self, name: &str) -> Run {
        let mut cmd = in_ns(&self.nodes[0], scenarios_bin(), &[name]);
        cmd.env("RAYREPL_ADDRESS", &self.address)
            .env("RAYREPL_TEMP_DIR", self.roots[0].path())
            .env("RAYREPL_BIN", rayrepl_bin())
            .env("THIRD_NODE_IP", self.ip(2));
        let out = run_bounded(cmd, Duration::from_secs(60));
        let run = Run {
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        assert!(out.status.success(), "scenario {name} failed ({}):\n{}\n{}", out.status, run.stdout, run.stderr);
        run
    }
}

impl Drop for NetnsCluster {
    fn drop(&mut self) {
        // Side by side: each daemon takes a moment to wind down after SIGTERM.
        std::thread::scope(|s| {
            for (ns, root) in self.nodes.iter().zip(&self.roots) {
                if self.namespaces.contains(ns) {
                    let mut stop = in_ns(ns, rayrepl_bin(), &["stop"]);
                    stop.env("RAYREPL_TEMP_DIR", root.path());
                    s.spawn(move || try_bounded(stop, Duration::from_secs(30)));
                }
            }
        });
        // Whatever still runs in our namespaces was started by this test (a
        // stop that failed); a live process would keep its namespace alive.
        for ns in &self.namespaces {
            let mut pids = Command::new("ip");
            pids.args(["netns", "pids", ns]);
            let Some(out) = try_bounded(pids, Duration::from_secs(10)) else { continue };
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
                // SAFETY: kill(2) on a process inside a namespace this test made.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        for ns in self.namespaces.iter().rev() {
            if let Err(why) = ip(&["netns", "del", ns]) {
                eprintln!("could not remove namespace {ns}: {why}");
            }
        }
    }
}

#[test]
fn nodes_in_separate_network_namespaces_place_tasks_and_groups_and_notice_a_death() {
    let Some(cluster) = NetnsCluster::start() else { return };
    let (ip2, ip3) = (cluster.ip(1), cluster.ip(2));

    let run = cluster.scenario("placement");
    assert_eq!(run.value("needs_b"), ip2, "{}", run.stdout);
    assert_eq!(run.value("needs_c"), ip3, "{}", run.stdout);
    // Six 400 ms tasks on three one-CPU nodes: the driver's node cannot hold them.
    let spread = run.value("spread");
    assert!(spread.split(',').count() >= 2, "all tasks ran on {spread}");
    assert_eq!(run.value("nowhere"), "infeasible");
    // Node 3 ran the task from the program it fetched over the network.
    let exe = run.value("exe_on_c");
    assert!(exe.starts_with(&cluster.root(2).display().to_string()) && exe.contains("/executables/"), "{exe}");
    // Output from other nodes reaches the driver and names them.
    assert!(run.stdout.contains(&format!("ip={ip2}) running on {ip2}")), "{}", run.stdout);

    // Placement groups reserve across the namespaces with two phases, and
    // their tasks reach the bundles' nodes over the bridge.
    let run = cluster.scenario("pg_strategies");
    assert_eq!(run.line("strict_spread_nodes"), "3 task_nodes=3", "{}", run.stdout);
    assert_eq!(run.line("spread_nodes"), "2 task_nodes=2");
    assert_eq!(run.line("strict_pack_nodes"), "1 task_nodes=1");
    assert_eq!(run.line("pack_nodes"), "2 task_nodes=2");
    assert_eq!(run.value("outside_ran_while_reserved"), "false");
    assert_eq!(run.value("affinity"), [ip3.as_str(); 3].join(","));
    assert_eq!(run.value("affinity_actor"), ip3);
    assert_eq!(run.value("spread_actors_nodes"), "3", "{}", run.stdout);

    let (pid, _) = cluster.node(&ip3);
    assert!(pid > 0, "no pid for node {ip3}");
    // SAFETY: kill(2) on the node daemon this test started; its workers die with it.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let killed = Instant::now();
    while cluster.node(&ip3).1 != "DEAD" {
        assert!(killed.elapsed() < Duration::from_secs(15), "node {ip3} not marked dead 15 s after SIGKILL");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(cluster.alive_nodes(), 2, "{:?}", cluster.nodes());
}
