//! `rayrepl start | stop | status`: running a cluster from the shell.
//!
//! `start --head` launches the head and a node daemon detached from the terminal
//! and records them in a session directory (`/tmp/rayrepl/session_latest`), with
//! the cluster token in a 0600 file. `stop` ends exactly the processes recorded
//! there. `status` asks the head, like `ray status`.

use anyhow::{Context, bail};
use ray_proto::tls;
use ray_proto::{Empty, NodeInfo, PlacementGroupInfo, format_bytes, format_resources, resources_to_map};
use ray_runtime::cluster::{DaemonSpec, NodeResources, head_env, node_env, spawn_daemon};
use ray_runtime::session;
use ray_state::PlacementGroupStatus;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::service::interceptor::InterceptedService;

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
    /// Object store capacity in bytes (default: 30% of memory, shrunk to fit
    /// the free space of the store's filesystem).
    #[arg(long)]
    object_store_memory: Option<u64>,
    /// TLS for every connection of the cluster: this node's certificate (PEM),
    /// as `rayrepl tls init` writes. Needs --tls-key and --tls-ca too.
    #[arg(long, value_name = "PEM", env = "RAYREPL_TLS_CERT", requires_all = ["tls_key", "tls_ca"])]
    tls_cert: Option<std::path::PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, value_name = "PEM", env = "RAYREPL_TLS_KEY", requires_all = ["tls_cert", "tls_ca"])]
    tls_key: Option<std::path::PathBuf>,
    /// The cluster CA's certificate (PEM), which every peer must be signed by.
    #[arg(long, value_name = "PEM", env = "RAYREPL_TLS_CA", requires_all = ["tls_cert", "tls_key"])]
    tls_ca: Option<std::path::PathBuf>,
    /// Where the object store's shared-memory files live (default /dev/shm); a
    /// tmpfs is fastest.
    #[arg(long, value_name = "DIR")]
    plasma_directory: Option<std::path::PathBuf>,
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
    /// The head's dashboard and Jobs API port (Ray's 8265). Without it, 8265 is
    /// tried and, if another cluster has it, any free port.
    #[arg(long)]
    dashboard_port: Option<u16>,
    /// The address the dashboard listens on (default 127.0.0.1: this machine only).
    #[arg(long, default_value = "127.0.0.1")]
    dashboard_host: String,
    /// Serve the dashboard and Jobs API at all: `--include-dashboard false` turns
    /// them off; Ray's spellings of a boolean (true/false, 1/0, yes/no) all work.
    #[arg(
        long,
        default_value_t = true,
        num_args = 0..=1,
        default_missing_value = "true",
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new(),
        value_name = "BOOL"
    )]
    include_dashboard: bool,
    /// Serve this node's metrics in Prometheus text format on http://NODE_IP:PORT/metrics
    /// (Ray's flag); the head's node adds the cluster's. Without it, no metrics server.
    #[arg(long, value_name = "PORT")]
    metrics_export_port: Option<u16>,
}

impl StartArgs {
    /// Whether the command stays in the foreground (`--block`).
    pub fn blocks(&self) -> bool {
        self.block
    }
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
    let mut f = ray_proto::private::create_file(&dir.join("pids"), true)?;
    writeln!(f, "{pid}")?;
    Ok(())
}

fn point_latest_at(dir: &Path) -> anyhow::Result<()> {
    let latest = session::latest();
    let _ = std::fs::remove_file(&latest);
    std::os::unix::fs::symlink(dir, &latest).with_context(|| format!("cannot link {}", latest.display()))
}

/// What a failed `start` must undo: the session directory it created and the
/// daemons it started. Dropped without [`Starting::done`], it stops them and
/// removes the directory, so a start that fails leaves nothing behind.
struct Starting {
    dir: PathBuf,
    daemons: Vec<std::process::Child>,
    done: bool,
}

impl Starting {
    fn new() -> anyhow::Result<Self> {
        Ok(Starting { dir: session::create()?, daemons: Vec::new(), done: false })
    }

    fn started(&mut self, daemon: ray_runtime::cluster::Daemon) -> anyhow::Result<String> {
        record_pid(&self.dir, daemon.child.id())?;
        let address = daemon.address.clone();
        self.daemons.push(daemon.child);
        Ok(address)
    }

    fn done(mut self) -> PathBuf {
        self.done = true;
        std::mem::take(&mut self.dir)
    }
}

impl Drop for Starting {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        // Nodes first, as `stop` does; they are ours, so waiting reaps them.
        for child in self.daemons.iter_mut().rev() {
            let pid = child.id() as i32;
            // SAFETY: kill(2) on a child of ours that has not been reaped.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let deadline = std::time::Instant::now() + STOP_WAIT;
            while matches!(child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The head to join and the token to join it with, both checked by asking the
/// head, before anything is created on this machine.
fn check_join(address: &str, args: &StartArgs) -> anyhow::Result<(String, String)> {
    let given = args.token.as_deref();
    let head = session::resolve_head_address(address, given)?;
    let found = match (given, &args.token_file) {
        (Some(t), _) => Ok((t.to_string(), session::TokenSource::Given)),
        (None, Some(path)) => session::read_token_file(path).map(|t| (t, session::TokenSource::File(path.clone()))),
        (None, None) => session::find_token_with_source(None, &head),
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    // A head that is not there is the first thing to say; then a missing token.
    let channel = rt.block_on(ray_proto::dial(&head, "the head"))?;
    let (token, source) = found?;
    let asked = rt.block_on(async {
        let channel = InterceptedService::new(channel, ray_proto::AddToken::new(&token)?);
        ray_proto::head_client(channel)
            .get_cluster_info(Empty {})
            .await
            .map_err(|s| ray_proto::from_status(&s, &format!("the head at {head}")))
    });
    match asked {
        Ok(_) => Ok((head, token)),
        Err(ray_abi::RayError::Unauthenticated { .. }) => bail!(
            "the head at {head} rejected the token ({source}: wrong cluster token); {}",
            session::token_advice(Some(&head))
        ),
        Err(e) => Err(e.into()),
    }
}

/// `path` made absolute: daemons do not run in this directory.
fn absolute(path: &std::path::Path) -> anyhow::Result<std::path::PathBuf> {
    std::path::absolute(path).with_context(|| format!("cannot resolve {}", path.display()))
}

pub fn start(args: StartArgs) -> anyhow::Result<()> {
    if !args.head && args.address.is_none() {
        bail!("say --head to start a new cluster, or --address HEAD:PORT to join one");
    }
    // This command and the daemons it starts use the same files.
    let mut tls_env: Vec<(String, String)> = Vec::new();
    if let (Some(cert), Some(key), Some(ca)) = (&args.tls_cert, &args.tls_key, &args.tls_ca) {
        let (cert, key, ca) = (absolute(cert)?, absolute(key)?, absolute(ca)?);
        ray_proto::tls::configure(cert.clone(), key.clone(), ca.clone())?;
        for (name, path) in [(tls::CERT_ENV, cert), (tls::KEY_ENV, key), (tls::CA_ENV, ca)] {
            tls_env.push((name.into(), path.display().to_string()));
        }
    }
    let resources = NodeResources {
        num_cpus: args.num_cpus,
        num_gpus: args.num_gpus,
        custom: parse_resources(args.resources.as_deref())?,
        object_store_memory: args.object_store_memory,
        plasma_directory: args.plasma_directory.clone(),
    };
    // A node joins only a head that answers and takes its token: both are
    // checked before anything is created here.
    let joining = match &args.address {
        Some(address) => Some(check_join(address, &args)?),
        None => None,
    };
    let mut starting = Starting::new()?;
    let dir = starting.dir.clone();
    let ip = args.node_ip_address.as_str();
    let (head_address, token) = match joining {
        None => {
            let token = session::new_token();
            session::write_private(&dir, "token", &token)?;
            let mut env = head_env(&token, &dir, ip, args.port);
            env.push(("RAYREPL_INCLUDE_DASHBOARD".into(), if args.include_dashboard { "1" } else { "0" }.into()));
            env.push(("RAYREPL_DASHBOARD_HOST".into(), args.dashboard_host.clone()));
            if let Some(port) = args.dashboard_port {
                env.push(("RAYREPL_DASHBOARD_PORT".into(), port.to_string()));
            }
            env.extend(tls_env.iter().cloned());
            let head = spawn_daemon(DaemonSpec {
                role: "head",
                env,
                log: dir.join("logs/head.err"),
                lifeline: None,
                detach: !args.block,
            })?;
            let address = starting.started(head)?;
            session::write_private(&dir, session::HEAD_ADDRESS, &address)?;
            (address, token)
        }
        Some((address, token)) => {
            session::write_private(&dir, "token", &token)?;
            session::write_private(&dir, session::HEAD_ADDRESS, &address)?;
            (address, token)
        }
    };
    let mut env = node_env(&head_address, &token, &dir, ip, &resources, args.head, 0);
    if let Some(port) = args.metrics_export_port {
        env.push(("RAYREPL_METRICS_EXPORT_PORT".into(), port.to_string()));
    }
    env.extend(tls_env);
    let node = spawn_daemon(DaemonSpec {
        role: "node",
        env,
        log: dir.join("logs/node.err"),
        lifeline: None,
        detach: !args.block,
    })?;
    starting.started(node)?;
    // A joined node's session names the cluster too, so `status`, `list` and
    // drivers on a host without a head find it; a latest session of the same
    // cluster is left as it is.
    let latest_head = session::read(&session::latest(), session::HEAD_ADDRESS);
    if args.head || !latest_head.is_some_and(|latest| session::same_address(&latest, &head_address)) {
        point_latest_at(&dir)?;
    }
    let dir = starting.done();
    println!("Local node IP: {ip}");
    println!("--------------------");
    println!("rayrepl runtime started.");
    println!("--------------------");
    println!("Next steps");
    if args.head {
        println!("  To add another node to this cluster, run");
        println!("    RAYREPL_TOKEN_FILE={} rayrepl start --address='{head_address}'", dir.join("token").display());
        println!("  (on this machine the token is found without RAYREPL_TOKEN_FILE)");
        println!("  To connect to this cluster from a Rust program:");
        println!("    ray::init_with(ray::Config::address(\"{head_address}\"))   // or \"auto\" on this machine");
        println!("  The cluster token is in {} (mode 0600).", dir.join("token").display());
        if let Some(url) = session::read(&dir, session::DASHBOARD_URL) {
            println!("  To submit a job, run");
            println!("    rayrepl job submit --address {url} --working-dir . -- cargo run --release");
            println!(
                "  or Ray's own `ray job submit` with RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH={}",
                dir.join("token").display()
            );
            println!("  View the dashboard at (the link signs you in)");
            println!("    {url}/?token={token}");
        }
    } else {
        println!("  This node joined the cluster at {head_address}.");
    }
    if let Some(port) = args.metrics_export_port {
        let scheme = if tls::enabled() { "https" } else { "http" };
        println!("  Prometheus metrics are at {scheme}://{ip}:{port}/metrics");
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

/// How long `stop` waits for a daemon to exit after SIGTERM before SIGKILL.
const STOP_WAIT: Duration = Duration::from_secs(10);

/// Waits until `pid` has exited (or `limit` passes); whether it did.
fn wait_exit(pid: i32, limit: Duration) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while alive(pid) {
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

pub fn stop(args: StopArgs) -> anyhow::Result<()> {
    let mut stopped = Vec::new();
    for dir in sessions_with_pids() {
        let pids: Vec<i32> = std::fs::read_to_string(dir.join("pids"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        // Nodes first (they stop their workers and wait for them), then the head.
        for &pid in pids.iter().rev() {
            // A pid left from a daemon that died may name someone else's process now.
            if !alive(pid) || !runs_session(pid, &dir) {
                continue;
            }
            let signal = if args.force { libc::SIGKILL } else { libc::SIGTERM };
            // SAFETY: kill(2) has no memory-safety requirements; the pid was
            // recorded by our own `start` and is checked alive just above.
            unsafe { libc::kill(pid, signal) };
            if !wait_exit(pid, STOP_WAIT) {
                // SAFETY: as above.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                eprintln!(
                    "pid {pid} ({}) did not exit within {}s of SIGTERM; killed it with SIGKILL",
                    dir.display(),
                    STOP_WAIT.as_secs()
                );
                if !wait_exit(pid, Duration::from_secs(5)) {
                    eprintln!("pid {pid} is still there after SIGKILL (stuck in the kernel?)");
                }
            }
            stopped.push(pid);
        }
        let _ = std::fs::remove_file(dir.join("pids"));
    }
    // An exited daemon's parent is init, which reaps it when it gets to it; until
    // then `ps` and `kill -0` still see it. Give init a moment, so what `stop`
    // reports stopped is gone from the process table too where init is prompt.
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while stopped.iter().any(|pid| Path::new(&format!("/proc/{pid}")).exists()) && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("Stopped {} rayrepl process(es).", stopped.len());
    Ok(())
}

/// The head's gRPC address for `address` in any of Ray's spellings (`auto`,
/// `ray://`, the dashboard's); without one, the cluster running on this machine.
pub fn head_address(address: Option<String>) -> anyhow::Result<String> {
    Ok(session::resolve_head_address(address.as_deref().unwrap_or("auto"), None)?)
}

/// A head client for `address` (default: this machine's latest session), with the
/// runtime to drive it and the token.
pub fn connect_head(
    address: Option<String>,
) -> anyhow::Result<(tokio::runtime::Runtime, ray_proto::HeadClient, String)> {
    let address = head_address(address)?;
    let token = session::find_token(None, &address);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    // Dialled before the token is needed: a head that is not there is the
    // first thing to say.
    let channel = rt.block_on(ray_proto::dial(&address, "the head"))?;
    let token = token?;
    let channel = InterceptedService::new(channel, ray_proto::AddToken::new(&token)?);
    Ok((rt, ray_proto::head_client(channel), token))
}

/// Resource usage summed over `nodes`, one ` used/total name` line each, as
/// `ray status` prints it. Only plain resources are listed: what placement
/// groups reserve counts as used only as far as their tasks use it, and the
/// reservation follows in parentheses, as Ray shows it.
fn usage(nodes: &[&NodeInfo]) -> String {
    let mut total: BTreeMap<String, f64> = BTreeMap::new();
    let mut available: BTreeMap<String, f64> = BTreeMap::new();
    let mut reserved: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    let (mut store_cap, mut store_used) = (0u64, 0u64);
    for n in nodes {
        for (k, v) in ray_state::plain(&n.total) {
            *total.entry(k).or_default() += v;
        }
        for (k, v) in ray_state::plain(&n.available) {
            *available.entry(k).or_default() += v;
        }
        for (k, (used, held)) in ray_state::reserved(&n.total, &n.available) {
            let entry = reserved.entry(k).or_default();
            entry.0 += used;
            entry.1 += held;
        }
        store_cap += n.object_store_capacity;
        store_used += n.object_store_used;
    }
    let mut out = String::new();
    for (k, t) in &total {
        // A reservation takes its resources off the node's plain ones; only the
        // part the group's tasks hold is in use.
        let taken = t - available.get(k).copied().unwrap_or(0.0);
        match reserved.get(k) {
            Some((pg_used, pg_total)) => {
                let used = (taken - pg_total + pg_used).max(0.0);
                out.push_str(&format!(
                    " {used:.1}/{t:.1} {k} ({pg_used:.1} used of {pg_total:.1} reserved in placement groups)\n"
                ));
            }
            None => out.push_str(&format!(" {:.1}/{:.1} {k}\n", taken.max(0.0), t)),
        }
    }
    out.push_str(&format!(" {}/{} object_store_memory\n", format_bytes(store_used), format_bytes(store_cap)));
    out
}

/// Whether a group still waits for (some of) its bundles.
fn waiting(g: &PlacementGroupInfo) -> bool {
    matches!(g.state(), PlacementGroupStatus::Pending | PlacementGroupStatus::Rescheduling)
}

/// A waiting group as Ray's `status` shows it: `{CPU: 1} * 2 (STRICT_SPREAD)`,
/// its bundles that still need a node, alike ones counted together.
fn group_shape(g: &PlacementGroupInfo) -> String {
    let unplaced: Vec<_> = g.bundles.iter().filter(|b| b.node_id.is_empty()).collect();
    let bundles = if unplaced.is_empty() { g.bundles.iter().collect() } else { unplaced };
    let mut shapes: Vec<(BTreeMap<String, f64>, u32)> = Vec::new();
    for b in bundles {
        let shape = resources_to_map(&b.resources);
        match shapes.iter_mut().find(|(s, _)| *s == shape) {
            Some((_, n)) => *n += 1,
            None => shapes.push((shape, 1)),
        }
    }
    let parts: Vec<String> = shapes.iter().map(|(s, n)| format!("{} * {n}", format_resources(s))).collect();
    format!("{} ({})", parts.join(", "), g.strategy().as_str_name())
}

/// Requests waiting for resources, by shape, summed over `nodes`, then the
/// placement groups waiting for theirs. Owners ask for at most one worker per
/// queued task, so counts are lower bounds, as in Ray. A group no node could
/// ever hold says so.
fn demands(nodes: &[&NodeInfo], groups: &[PlacementGroupInfo]) -> String {
    let mut by_shape: Vec<(BTreeMap<String, f64>, u32)> = Vec::new();
    for d in nodes.iter().flat_map(|n| &n.pending) {
        let shape = resources_to_map(&d.shape);
        match by_shape.iter_mut().find(|(s, _)| *s == shape) {
            Some((_, n)) => *n += d.count,
            None => by_shape.push((shape, d.count)),
        }
    }
    let mut by_group: Vec<(String, bool, u32)> = Vec::new();
    for g in groups.iter().filter(|g| waiting(g)) {
        let shape = group_shape(g);
        match by_group.iter_mut().find(|(s, infeasible, _)| *s == shape && *infeasible == g.infeasible) {
            Some((_, _, n)) => *n += 1,
            None => by_group.push((shape, g.infeasible, 1)),
        }
    }
    if by_shape.is_empty() && by_group.is_empty() {
        return " (no resource demands)\n".to_string();
    }
    let mut out: String = by_shape
        .iter()
        .map(|(shape, n)| format!(" {}: {n}+ pending tasks/actors\n", format_resources(shape)))
        .collect();
    for (shape, infeasible, n) in by_group {
        let mark = if infeasible { " (infeasible)" } else { "" };
        out.push_str(&format!(" {shape}: {n}+ pending placement groups{mark}\n"));
    }
    out
}

/// The waiting groups no node could ever hold, each with the head's reason; empty
/// when there are none.
fn infeasible(groups: &[PlacementGroupInfo]) -> String {
    groups
        .iter()
        .filter(|g| waiting(g) && g.infeasible)
        .map(|g| {
            let id = ray_abi::ids::hex(&g.placement_group_id);
            let name = if g.name.is_empty() { String::new() } else { format!(" ({})", g.name) };
            format!(" placement group {id}{name}: {}\n", g.waiting_for)
        })
        .collect()
}

fn node_name(n: &NodeInfo) -> String {
    let id = ray_abi::ids::hex(&n.node_id[..n.node_id.len().min(8)]);
    format!("node_{id}")
}

pub fn status(args: StatusArgs) -> anyhow::Result<()> {
    let (rt, mut head, _) = connect_head(args.address)?;
    let (info, groups) = rt.block_on(async {
        let status = |s: tonic::Status| ray_proto::from_status(&s, "the head");
        let info = head.get_cluster_info(Empty {}).await.map_err(status)?.into_inner();
        let groups = head.list_placement_groups(Empty {}).await.map_err(status)?.into_inner().groups;
        Ok::<_, ray_abi::RayError>((info, groups))
    })?;
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
    print!("{}", demands(&alive, &groups));
    let infeasible = infeasible(&groups);
    if !infeasible.is_empty() {
        println!();
        println!("Infeasible placement groups (no node could ever hold them):");
        print!("{infeasible}");
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use ray_proto::placement_group_info::Strategy;
    use ray_proto::{Bundle, Resource, ResourceDemand};

    fn amounts(pairs: &[(&str, f64)]) -> Vec<Resource> {
        pairs.iter().map(|(name, amount)| Resource { name: name.to_string(), amount: *amount }).collect()
    }

    fn group(state: PlacementGroupStatus, strategy: Strategy, bundles: &[&[(&str, f64)]]) -> PlacementGroupInfo {
        PlacementGroupInfo {
            placement_group_id: vec![0xcd; 18].into(),
            state: state.into(),
            strategy: strategy.into(),
            bundles: bundles
                .iter()
                .enumerate()
                .map(|(i, r)| Bundle { index: i as u32, resources: amounts(r), node_id: Default::default() })
                .collect(),
            ..PlacementGroupInfo::default()
        }
    }

    #[test]
    fn usage_counts_plain_resources_and_shows_what_groups_reserve() {
        let g = "ab".repeat(18);
        // 3 CPUs; a group holds 2 of them and its tasks use both; nothing else runs.
        let node = NodeInfo {
            total: amounts(&[
                ("CPU", 3.0),
                (&format!("CPU_group_0_{g}"), 1.0),
                (&format!("CPU_group_1_{g}"), 1.0),
                (&format!("CPU_group_{g}"), 2.0),
                (&format!("bundle_group_{g}"), 2000.0),
            ]),
            available: amounts(&[
                ("CPU", 1.0),
                (&format!("CPU_group_0_{g}"), 0.0),
                (&format!("CPU_group_1_{g}"), 0.0),
                (&format!("CPU_group_{g}"), 0.0),
                (&format!("bundle_group_{g}"), 1999.998),
            ]),
            object_store_capacity: 1024,
            ..NodeInfo::default()
        };
        let text = usage(&[&node]);
        assert_eq!(
            text, " 2.0/3.0 CPU (2.0 used of 2.0 reserved in placement groups)\n 0 B/1.00 KiB object_store_memory\n",
            "no *_group_* lines"
        );
        // Reserved but idle: not in use.
        let idle = NodeInfo { available: amounts(&[("CPU", 1.0), (&format!("CPU_group_{g}"), 2.0)]), ..node.clone() };
        assert!(usage(&[&idle]).starts_with(" 0.0/3.0 CPU (0.0 used of 2.0 reserved in placement groups)\n"));
        let plain = NodeInfo { total: amounts(&[("CPU", 2.0)]), available: amounts(&[("CPU", 1.5)]), ..node };
        assert!(usage(&[&plain]).starts_with(" 0.5/2.0 CPU\n"), "{}", usage(&[&plain]));
    }

    #[test]
    fn demands_list_waiting_groups_as_ray_does_and_flag_infeasible_ones() {
        let node = NodeInfo {
            pending: vec![ResourceDemand { shape: amounts(&[("CPU", 1.0)]), count: 2 }],
            ..NodeInfo::default()
        };
        let cpu: &[(&str, f64)] = &[("CPU", 1.0)];
        let spread = group(PlacementGroupStatus::Pending, Strategy::StrictSpread, &[cpu, cpu]);
        let mut big = group(PlacementGroupStatus::Pending, Strategy::Pack, &[cpu, &[("GPU", 2.0)]]);
        big.infeasible = true;
        big.name = "big".to_string();
        big.waiting_for = "No available node types can fulfill resource request".to_string();
        let done = group(PlacementGroupStatus::Created, Strategy::Pack, &[cpu]);
        let groups = [spread.clone(), spread, big, done];
        assert_eq!(
            demands(&[&node], &groups),
            " {CPU: 1}: 2+ pending tasks/actors\n\
             \u{20}{CPU: 1} * 2 (STRICT_SPREAD): 2+ pending placement groups\n\
             \u{20}{CPU: 1} * 1, {GPU: 2} * 1 (PACK): 1+ pending placement groups (infeasible)\n"
        );
        assert_eq!(
            infeasible(&groups),
            format!(
                " placement group {} (big): No available node types can fulfill resource request\n",
                "cd".repeat(18)
            )
        );
        // A group that lost a node waits only for the bundles it lost.
        let mut lost = group(PlacementGroupStatus::Rescheduling, Strategy::Spread, &[cpu, cpu]);
        lost.bundles[0].node_id = vec![1, 2, 3, 4].into();
        assert_eq!(demands(&[], &[lost]), " {CPU: 1} * 1 (SPREAD): 1+ pending placement groups\n");
        assert_eq!(demands(&[], &groups[3..]), " (no resource demands)\n");
        assert_eq!(infeasible(&groups[..1]), "");
    }
}
