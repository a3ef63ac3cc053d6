//! `rayrepl start | stop | status`: running a cluster from the shell.
//!
//! `start --head` launches the head and a node daemon detached from the terminal
//! and records them in a session directory (`/tmp/rayrepl/session_latest`), with
//! the cluster token in a 0600 file. `stop` ends exactly the processes recorded
//! there. `status` asks the head, like `ray status`.

use anyhow::{Context, bail};
use ray_proto::{Empty, NodeInfo, format_bytes, format_resources, resources_to_map};
use ray_runtime::cluster::{DaemonSpec, NodeResources, head_env, node_env, spawn_daemon};
use ray_runtime::session;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `rayrepl start`.
#[derive(clap::Args)]
pub struct StartArgs {
    /// Start the head node of a new cluster.
    #[arg(long, conflicts_with = "address")]
    head: bool,
    /// Join the cluster whose head is at HOST:PORT.
    #[arg(long)]
    address: Option<String>,
    /// The head's port.
    #[arg(long, default_value_t = 6379)]
    port: u16,
    /// CPUs this node offers (default: all).
    #[arg(long)]
    num_cpus: Option<f64>,
    /// GPUs this node offers.
    #[arg(long)]
    num_gpus: Option<f64>,
    /// Custom resources as JSON, e.g. '{"Custom1": 4}'.
    #[arg(long)]
    resources: Option<String>,
    /// Object store capacity in bytes.
    #[arg(long)]
    object_store_memory: Option<u64>,
    /// The IP other machines reach this node at (default 127.0.0.1: loopback only).
    #[arg(long, default_value = "127.0.0.1")]
    node_ip_address: String,
    /// The cluster token, when joining (default: RAYREPL_TOKEN, RAYREPL_TOKEN_FILE,
    /// or this machine's session).
    #[arg(long, conflicts_with = "token_file")]
    token: Option<String>,
    /// A file holding the cluster token (the head's `session_latest/token`), when joining.
    #[arg(long, value_name = "PATH")]
    token_file: Option<std::path::PathBuf>,
    /// Stay in the foreground; Ctrl-C stops the processes.
    #[arg(long)]
    block: bool,
}

/// `rayrepl stop`.
#[derive(clap::Args)]
pub struct StopArgs {
    /// Kill with SIGKILL right away instead of asking politely first.
    #[arg(long, short)]
    force: bool,
}

/// `rayrepl status`.
#[derive(clap::Args)]
pub struct StatusArgs {
    /// The head's address (default: this machine's latest session).
    #[arg(long)]
    address: Option<String>,
    /// Also show each node's resource usage.
    #[arg(short, long)]
    verbose: bool,
}

impl StatusArgs {
    /// Status of the cluster at `address` (the REPL's `:status`).
    pub fn for_address(address: String) -> Self {
        StatusArgs { address: Some(address), verbose: false }
    }
}

fn parse_resources(json: Option<&str>) -> anyhow::Result<BTreeMap<String, f64>> {
    match json {
        None => Ok(BTreeMap::new()),
        Some(j) => {
            serde_json::from_str(j).with_context(|| format!("--resources must be a JSON object of numbers, got {j}"))
        }
    }
}

fn record_pid(dir: &Path, pid: u32) -> anyhow::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("pids"))?;
    writeln!(f, "{pid}")?;
    Ok(())
}

fn point_latest_at(dir: &Path) -> anyhow::Result<()> {
    let latest = session::latest();
    let _ = std::fs::remove_file(&latest);
    std::os::unix::fs::symlink(dir, &latest).with_context(|| format!("cannot link {}", latest.display()))
}

pub fn start(args: StartArgs) -> anyhow::Result<()> {
    if !args.head && args.address.is_none() {
        bail!("say --head to start a new cluster, or --address HEAD:PORT to join one");
    }
    let resources = NodeResources {
        num_cpus: args.num_cpus,
        num_gpus: args.num_gpus,
        custom: parse_resources(args.resources.as_deref())?,
        object_store_memory: args.object_store_memory,
    };
    let dir = session::create()?;
    let ip = args.node_ip_address.as_str();
    let (head_address, token) = if args.head {
        let token = session::new_token();
        session::write_private(&dir, "token", &token)?;
        let head = spawn_daemon(DaemonSpec {
            role: "head",
            env: head_env(&token, &dir, ip, args.port),
            log: dir.join("logs/head.err"),
            lifeline: None,
            detach: !args.block,
        })?;
        record_pid(&dir, head.child.id())?;
        session::write_private(&dir, "head_address", &head.address)?;
        (head.address, token)
    } else {
        let address = args.address.clone().unwrap_or_default();
        let from_file = match &args.token_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read the token file {}", path.display()))?
                    .trim()
                    .to_string(),
            ),
            None => None,
        };
        let token = session::find_token(args.token.as_deref().or(from_file.as_deref()), &address)?;
        session::write_private(&dir, "token", &token)?;
        session::write_private(&dir, "head_address", &address)?;
        (address, token)
    };
    let node = spawn_daemon(DaemonSpec {
        role: "node",
        env: node_env(&head_address, &token, &dir, ip, &resources, args.head, 0),
        log: dir.join("logs/node.err"),
        lifeline: None,
        detach: !args.block,
    })?;
    record_pid(&dir, node.child.id())?;
    // A joined node's session names the cluster too, so `status`, `list` and
    // drivers on a host without a head find it; a latest session of the same
    // cluster is left as it is.
    let latest_head = session::read(&session::latest(), "head_address");
    if args.head || latest_head.as_deref() != Some(head_address.as_str()) {
        point_latest_at(&dir)?;
    }
    println!("Local node IP: {ip}");
    println!("--------------------");
    println!("rayrepl runtime started.");
    println!("--------------------");
    println!("Next steps");
    if args.head {
        println!("  To add another node to this cluster, run");
        println!("    RAYREPL_TOKEN_FILE={} rayrepl start --address='{head_address}'", dir.join("token").display());
        println!("  To connect to this cluster from a Rust program:");
        println!("    ray::init_with(ray::Config::address(\"{head_address}\"))");
        println!("  The cluster token is in {} (mode 0600).", dir.join("token").display());
    } else {
        println!("  This node joined the cluster at {head_address}.");
    }
    println!("  To see the cluster, run\n    rayrepl status");
    println!("  To terminate the processes started here, run\n    rayrepl stop");
    if args.block {
        println!("--block: press Ctrl-C to stop.");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(async { tokio::signal::ctrl_c().await })?;
        stop(StopArgs { force: false })?;
    }
    Ok(())
}

fn sessions_with_pids() -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(session::root()) else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.join("pids").is_file() && !p.is_symlink()).collect()
}

/// Whether `pid` is a daemon of the session in `dir`: each one is started with
/// `RAYREPL_SESSION_DIR` naming it.
fn runs_session(pid: i32, dir: &std::path::Path) -> bool {
    let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else { return false };
    let wanted = format!("RAYREPL_SESSION_DIR={}", dir.display());
    environ.split(|b| *b == 0).any(|var| var == wanted.as_bytes())
}

/// Whether `pid` still runs. A detached daemon that exited stays a zombie until
/// init reaps it, which some inits do only every few seconds: that counts as gone.
fn alive(pid: i32) -> bool {
    // SAFETY: kill(2) with signal 0 only checks whether the process exists.
    let exists = unsafe { libc::kill(pid, 0) == 0 };
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat.rsplit_once(')').map(|(_, rest)| rest.trim_start().starts_with('Z')))
        .unwrap_or(false);
    exists && !zombie
}

pub fn stop(args: StopArgs) -> anyhow::Result<()> {
    let mut stopped = 0;
    for dir in sessions_with_pids() {
        let pids: Vec<i32> = std::fs::read_to_string(dir.join("pids"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        // Nodes first (they stop their workers), then the head.
        for &pid in pids.iter().rev() {
            // A pid left from a daemon that died may name someone else's process now.
            if !alive(pid) || !runs_session(pid, &dir) {
                continue;
            }
            let signal = if args.force { libc::SIGKILL } else { libc::SIGTERM };
            // SAFETY: kill(2) has no memory-safety requirements; the pid was
            // recorded by our own `start` and is checked alive just above.
            unsafe { libc::kill(pid, signal) };
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while alive(pid) && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if alive(pid) {
                // SAFETY: as above.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            stopped += 1;
        }
        let _ = std::fs::remove_file(dir.join("pids"));
    }
    println!("Stopped {stopped} rayrepl process(es).");
    Ok(())
}

/// `address`, or else the head of this machine's latest session.
pub fn head_address(address: Option<String>) -> anyhow::Result<String> {
    match address {
        Some(a) => Ok(a),
        None => session::read(&session::latest(), "head_address")
            .context("no cluster found on this machine: start one with `rayrepl start --head`, or pass --address"),
    }
}

/// A head client for `address` (default: this machine's latest session), with the
/// runtime to drive it and the token.
pub fn connect_head(
    address: Option<String>,
) -> anyhow::Result<(tokio::runtime::Runtime, ray_proto::HeadClient, String)> {
    let address = head_address(address)?;
    let token = session::find_token(None, &address)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let channel = rt.block_on(ray_proto::connect(&address, &token, "the head"))?;
    Ok((rt, ray_proto::head_client(channel), token))
}

/// Resource usage summed over `nodes`, one ` used/total name` line each, as
/// `ray status` prints it.
fn usage(nodes: &[&NodeInfo]) -> String {
    let mut total: BTreeMap<String, f64> = BTreeMap::new();
    let mut available: BTreeMap<String, f64> = BTreeMap::new();
    let (mut store_cap, mut store_used) = (0u64, 0u64);
    for n in nodes {
        for (k, v) in resources_to_map(&n.total) {
            *total.entry(k).or_default() += v;
        }
        for (k, v) in resources_to_map(&n.available) {
            *available.entry(k).or_default() += v;
        }
        store_cap += n.object_store_capacity;
        store_used += n.object_store_used;
    }
    let mut out = String::new();
    for (k, t) in &total {
        let used = t - available.get(k).copied().unwrap_or(0.0);
        out.push_str(&format!(" {:.1}/{:.1} {k}\n", used.max(0.0), t));
    }
    out.push_str(&format!(" {}/{} object_store_memory\n", format_bytes(store_used), format_bytes(store_cap)));
    out
}

/// Requests waiting for resources, by shape, summed over `nodes`. Owners ask for
/// at most one worker per queued task, so counts are lower bounds, as in Ray.
fn demands(nodes: &[&NodeInfo]) -> String {
    let mut by_shape: Vec<(BTreeMap<String, f64>, u32)> = Vec::new();
    for d in nodes.iter().flat_map(|n| &n.pending) {
        let shape = resources_to_map(&d.shape);
        match by_shape.iter_mut().find(|(s, _)| *s == shape) {
            Some((_, n)) => *n += d.count,
            None => by_shape.push((shape, d.count)),
        }
    }
    if by_shape.is_empty() {
        return " (no resource demands)\n".to_string();
    }
    by_shape.iter().map(|(shape, n)| format!(" {}: {n}+ pending tasks/actors\n", format_resources(shape))).collect()
}

fn node_name(n: &NodeInfo) -> String {
    let id = ray_abi::ids::hex(&n.node_id[..n.node_id.len().min(8)]);
    format!("node_{id}")
}

pub fn status(args: StatusArgs) -> anyhow::Result<()> {
    let (rt, mut head, _) = connect_head(args.address)?;
    let info = rt.block_on(async {
        head.get_cluster_info(Empty {}).await.map_err(|s| ray_proto::from_status(&s, "the head"))
    })?;
    let info = info.into_inner();
    let now = ray_state::now_utc();
    println!("======== Cluster status: {now} ========");
    println!("Node status");
    println!("{}", "-".repeat(63));
    let (alive, dead): (Vec<_>, Vec<_>) = info.nodes.iter().partition(|n| n.is_alive());
    println!("Active:");
    if alive.is_empty() {
        println!(" (no active nodes)");
    }
    for n in &alive {
        println!(" 1 {} ({}){}", node_name(n), n.ip, if n.is_head { " head" } else { "" });
    }
    println!("Dead:");
    if dead.is_empty() {
        println!(" (no dead nodes)");
    }
    for n in &dead {
        println!(" 1 {} ({})", node_name(n), n.ip);
    }
    println!();
    println!("Resources");
    println!("{}", "-".repeat(63));
    println!("Usage:");
    print!("{}", usage(&alive));
    println!();
    println!("Demands:");
    print!("{}", demands(&alive));
    if args.verbose {
        for n in &alive {
            println!();
            println!("Node: {} ({}){}", node_name(n), n.ip, if n.is_head { " head" } else { "" });
            println!(" Usage:");
            for line in usage(&[*n]).lines() {
                println!(" {line}");
            }
        }
    }
    Ok(())
}
