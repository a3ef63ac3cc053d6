//! Starting a cluster's daemons: the embedded local cluster behind `ray::init()`,
//! and the detached one behind `rayrepl start --head`.
//!
//! Daemons are this same executable in another role. An embedded cluster must not
//! outlive its driver, even one killed with SIGKILL: each daemon holds the read end
//! of a *lifeline* pipe whose write end only the driver has, and exits when it
//! reads end-of-file, which the kernel delivers however the driver died. Workers
//! die with their node through the parent-death signal.

use crate::roles::READY_PREFIX;
use crate::session;
use ray_abi::RayError;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// What a cluster node offers.
#[derive(Debug, Clone, Default)]
pub struct NodeResources {
    /// CPUs (default: this machine's).
    pub num_cpus: Option<f64>,
    /// GPUs.
    pub num_gpus: Option<f64>,
    /// Custom resources.
    pub custom: BTreeMap<String, f64>,
    /// Object store bytes.
    pub object_store_memory: Option<u64>,
    /// Where the object store's files live (default `/dev/shm`).
    pub plasma_directory: Option<std::path::PathBuf>,
}

impl NodeResources {
    fn to_map(&self) -> BTreeMap<String, f64> {
        let mut m = self.custom.clone();
        let cpus = self
            .num_cpus
            .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get() as f64).unwrap_or(1.0));
        m.insert("CPU".into(), cpus);
        if let Some(g) = self.num_gpus.filter(|g| *g > 0.0) {
            m.insert("GPU".into(), g);
        }
        m
    }
}

/// A daemon this process started.
pub struct Daemon {
    /// The process.
    pub child: Child,
    /// Its address.
    pub address: String,
    /// Extra fields of its ready line (the node id).
    pub extra: String,
}

/// A running embedded cluster: head and one node, and any nodes added.
pub struct LocalCluster {
    /// The head.
    pub head: Daemon,
    /// The node daemon.
    pub node: Daemon,
    /// Nodes added with [`LocalCluster::add_node`].
    pub extra_nodes: Vec<Daemon>,
    /// Its token.
    pub token: String,
    /// Its session directory.
    pub session_dir: PathBuf,
    lifeline: Option<OwnedFd>,
    extra_lifelines: Vec<OwnedFd>,
}

fn pipe() -> Result<(OwnedFd, OwnedFd), RayError> {
    let mut fds = [0i32; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    if rc != 0 {
        return Err(RayError::Startup(format!("cannot create a pipe: {}", std::io::Error::last_os_error())));
    }
    // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
    Ok(unsafe { (std::os::fd::FromRawFd::from_raw_fd(fds[0]), std::os::fd::FromRawFd::from_raw_fd(fds[1])) })
}

/// How to start one daemon.
pub struct DaemonSpec<'a> {
    /// `head` or `node`.
    pub role: &'a str,
    /// Environment for it.
    pub env: Vec<(String, String)>,
    /// Where its stderr goes.
    pub log: PathBuf,
    /// Lifeline read end to inherit (embedded clusters).
    pub lifeline: Option<i32>,
    /// Start in its own session, detached from this terminal (`start --head`).
    pub detach: bool,
}

/// Starts a daemon and waits for its ready line.
pub fn spawn_daemon(spec: DaemonSpec<'_>) -> Result<Daemon, RayError> {
    let exe = std::env::current_exe().map_err(|e| RayError::Startup(format!("cannot find this executable: {e}")))?;
    let log = ray_proto::private::create_file(&spec.log, true).map_err(|e| RayError::Startup(e.to_string()))?;
    let mut cmd = Command::new(exe);
    // rayrepl allocates with mimalloc, whose eager arena commit keeps ~12 MiB
    // resident per idle process; daemons and their workers commit as they go.
    // (The option is read before main, so the driver that starts us keeps it.)
    if std::env::var_os("MIMALLOC_ARENA_EAGER_COMMIT").is_none() {
        cmd.env("MIMALLOC_ARENA_EAGER_COMMIT", "0");
    }
    cmd.env("RAYREPL_ROLE", spec.role)
        .env_remove("RAYREPL_ADDRESS")
        .envs(spec.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log);
    if let Some(fd) = spec.lifeline {
        cmd.env("RAYREPL_LIFELINE_FD", fd.to_string());
    }
    if !spec.detach {
        // Its own process group: a Ctrl-C typed at a REPL or program must not
        // reach the daemons; they follow their driver through the lifeline.
        cmd.process_group(0);
    }
    let lifeline = spec.lifeline;
    let detach = spec.detach;
    // SAFETY: the closure runs in the forked child before exec and only calls
    // fcntl(2) and setsid(2), which are async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(fd) = lifeline
                && libc::fcntl(fd, libc::F_SETFD, 0) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            if detach && libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| RayError::Startup(format!("cannot start the {}: {e}", spec.role)))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let outcome = loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => break None,
                Ok(_) => {
                    if let Some(rest) = line.trim_end().strip_prefix(READY_PREFIX) {
                        break Some(rest.to_string());
                    }
                }
            }
        };
        // Gone only once the starter gave up waiting, which it reports.
        let _ = tx.send(outcome);
        // Keep draining so the daemon never blocks on a full pipe.
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut reader, &mut sink);
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(Some(ready)) => {
            let mut parts = ready.splitn(2, ' ');
            let address = parts.next().unwrap_or_default().to_string();
            let extra = parts.next().unwrap_or_default().to_string();
            Ok(Daemon { child, address, extra })
        }
        _ => {
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(&spec.log).unwrap_or_default();
            // The daemon's last words, without the prefixes that would repeat ours.
            let own_prefix = format!("rayrepl {}: ", spec.role);
            let tail: Vec<&str> = log
                .lines()
                .rev()
                .take(5)
                .map(|l| l.trim_start_matches(own_prefix.as_str()).trim_start_matches("could not start the cluster: "))
                .collect();
            Err(RayError::Startup(format!(
                "the {} did not start: {}",
                spec.role,
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            )))
        }
    }
}

/// Environment of a node daemon.
pub fn node_env(
    head: &str,
    token: &str,
    session_dir: &Path,
    ip: &str,
    resources: &NodeResources,
    is_head: bool,
    port: u16,
) -> Vec<(String, String)> {
    let mut env = vec![
        ("RAYREPL_HEAD_ADDRESS".into(), head.to_string()),
        ("RAYREPL_TOKEN".into(), token.to_string()),
        ("RAYREPL_SESSION_DIR".into(), session_dir.display().to_string()),
        ("RAYREPL_NODE_IP".into(), ip.to_string()),
        ("RAYREPL_RESOURCES".into(), serde_json::to_string(&resources.to_map()).unwrap_or_else(|_| "{}".into())),
        ("RAYREPL_IS_HEAD".into(), if is_head { "1" } else { "0" }.into()),
        ("RAYREPL_NODE_PORT".into(), port.to_string()),
    ];
    if let Some(m) = resources.object_store_memory {
        env.push(("RAYREPL_OBJECT_STORE_MEMORY".into(), m.to_string()));
    }
    if let Some(dir) = &resources.plasma_directory {
        env.push(("RAYREPL_PLASMA_DIRECTORY".into(), dir.display().to_string()));
    }
    env
}

/// Environment of a head daemon.
pub fn head_env(token: &str, session_dir: &Path, ip: &str, port: u16) -> Vec<(String, String)> {
    vec![
        ("RAYREPL_TOKEN".into(), token.to_string()),
        ("RAYREPL_SESSION_DIR".into(), session_dir.display().to_string()),
        ("RAYREPL_NODE_IP".into(), ip.to_string()),
        ("RAYREPL_PORT".into(), port.to_string()),
    ]
}

impl LocalCluster {
    /// Starts a head and a node that live exactly as long as this process.
    pub fn start(resources: &NodeResources) -> Result<LocalCluster, RayError> {
        let session_dir = session::create()?;
        let token = session::new_token();
        session::write_private(&session_dir, "token", &token)?;
        let (read_end, write_end) = pipe()?;
        let ip = "127.0.0.1";
        let head = spawn_daemon(DaemonSpec {
            role: "head",
            env: head_env(&token, &session_dir, ip, 0),
            log: session_dir.join("logs/head.err"),
            lifeline: Some(read_end.as_raw_fd()),
            detach: false,
        })?;
        let node = spawn_daemon(DaemonSpec {
            role: "node",
            env: node_env(&head.address, &token, &session_dir, ip, resources, true, 0),
            log: session_dir.join("logs/node.err"),
            lifeline: Some(read_end.as_raw_fd()),
            detach: false,
        });
        let node = match node {
            Ok(n) => n,
            Err(e) => {
                let mut head = head;
                let _ = head.child.kill();
                let _ = head.child.wait();
                return Err(e);
            }
        };
        drop(read_end);
        session::write_private(&session_dir, "head_address", &head.address)?;
        Ok(LocalCluster {
            head,
            node,
            extra_nodes: Vec::new(),
            token,
            session_dir,
            lifeline: Some(write_end),
            extra_lifelines: Vec::new(),
        })
    }

    /// Joins another node at `ip` (any 127.0.0.0/8 address is this machine's),
    /// living as long as the cluster. Returns its address.
    pub fn add_node(&mut self, ip: &str, resources: &NodeResources) -> Result<String, RayError> {
        let (read_end, write_end) = pipe()?;
        let n = self.extra_nodes.len() + 1;
        let node = spawn_daemon(DaemonSpec {
            role: "node",
            env: node_env(&self.head.address, &self.token, &self.session_dir, ip, resources, false, 0),
            log: self.session_dir.join(format!("logs/node-{n}.err")),
            lifeline: Some(read_end.as_raw_fd()),
            detach: false,
        })?;
        let address = node.address.clone();
        self.extra_nodes.push(node);
        self.extra_lifelines.push(write_end);
        Ok(address)
    }

    /// Stops the daemons (closing the lifeline) and waits until they are gone.
    pub fn stop(&mut self) {
        self.lifeline.take();
        self.extra_lifelines.clear();
        for d in self.extra_nodes.iter_mut().chain([&mut self.node, &mut self.head]) {
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            loop {
                match d.child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if std::time::Instant::now() > deadline => {
                        let _ = d.child.kill();
                        let _ = d.child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.session_dir);
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        if self.lifeline.is_some() {
            self.stop();
        }
    }
}
