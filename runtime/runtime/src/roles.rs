//! The processes a cluster is made of, started from one executable.
//!
//! A compiled Ray program is its own cluster: `ray::init()` re-executes the
//! program with `RAYREPL_ROLE=head|node|worker`, and the program's `ray::init()`
//! call then becomes that process. The `rayrepl` binary runs the same roles. Roles
//! read their settings from `RAYREPL_*` variables so no argument parsing is needed
//! inside a user's program.

use crate::{HOST, Host, TABLE};
use bytes::Bytes;
use ray_abi::RayError;
use ray_abi::ids::{JobId, hex, unhex};
use ray_core::{Connection, CoreWorker, StartOptions};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// Line a daemon prints on stdout once it serves: `RAYREPL_READY <address> [node id]`.
pub const READY_PREFIX: &str = "RAYREPL_READY ";

fn env(name: &str) -> Result<String, RayError> {
    std::env::var(name).map_err(|_| RayError::Startup(format!("{name} is not set for this role")))
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| default.to_string())
}

/// The role this process was started in, if any.
pub fn requested_role() -> Option<String> {
    std::env::var("RAYREPL_ROLE").ok().filter(|r| !r.is_empty())
}

/// Runs the role named by `RAYREPL_ROLE` and exits the process. Returns only if no
/// role was requested.
pub fn run_requested_role() {
    let Some(role) = requested_role() else { return };
    let result = match role.as_str() {
        "worker" => run_worker(),
        "head" => run_head(),
        "node" => run_node(),
        other => Err(RayError::Startup(format!("unknown RAYREPL_ROLE {other:?}"))),
    };
    match result {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("rayrepl {role}: {e}");
            std::process::exit(1);
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RAYREPL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

/// Stops a daemon at once, with the reason, when its TLS settings cannot be used.
fn check_tls() -> Result<(), RayError> {
    ray_proto::tls::config().map(drop).map_err(|e| RayError::Startup(e.to_string()))
}

fn daemon_runtime(threads: usize) -> Result<tokio::runtime::Runtime, RayError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("rayrepl")
        .enable_all()
        .build()
        .map_err(|e| RayError::Startup(format!("cannot start the async runtime: {e}")))
}

/// Resolves when the lifeline pipe from the starting driver closes (the driver
/// exited or was killed), or when this process gets SIGTERM or SIGINT.
async fn stop_signal() {
    let lifeline = async {
        match std::env::var("RAYREPL_LIFELINE_FD").ok().and_then(|v| v.parse::<i32>().ok()) {
            Some(fd) => {
                let watched = tokio::task::spawn_blocking(move || {
                    let mut buf = [0u8; 1];
                    loop {
                        // SAFETY: `fd` is the read end of the lifeline pipe, inherited
                        // from the driver and owned by this process; `buf` is valid.
                        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), 1) };
                        if n == 0 {
                            return Ok(());
                        }
                        if n < 0 {
                            let e = std::io::Error::last_os_error();
                            if e.kind() != std::io::ErrorKind::Interrupted {
                                return Err(e);
                            }
                        }
                    }
                })
                .await;
                match watched {
                    Ok(Ok(())) => tracing::debug!("the driver's lifeline closed"),
                    Ok(Err(e)) => tracing::warn!("reading the driver's lifeline failed, stopping as if it closed: {e}"),
                    Err(e) => tracing::warn!("watching the driver's lifeline failed, stopping as if it closed: {e}"),
                }
            }
            None => std::future::pending::<()>().await,
        }
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let sigterm = async {
        match term.as_mut() {
            Some(s) => {
                s.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = lifeline => {}
        () = sigterm => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

fn announce(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{READY_PREFIX}{line}");
    let _ = out.flush();
}

fn run_head() -> Result<(), RayError> {
    init_tracing();
    check_tls()?;
    let rt = daemon_runtime(1)?;
    let token = env("RAYREPL_TOKEN")?;
    let ip = env_or("RAYREPL_NODE_IP", "127.0.0.1");
    let port: u16 = env_or("RAYREPL_PORT", "0").parse().map_err(|_| RayError::Startup("bad RAYREPL_PORT".into()))?;
    let session = env_or("RAYREPL_SESSION_DIR", "");
    let dashboard = DashboardSettings::from_env()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind((ip.as_str(), port)).await.map_err(|e| {
            let advice = if e.kind() == std::io::ErrorKind::AddrInUse {
                "; another process has that port (another cluster? see `rayrepl status`): pass another --port"
            } else {
                ""
            };
            RayError::Startup(format!("the head cannot listen on {ip}:{port}: {e}{advice}"))
        })?;
        let addr = listener.local_addr().map_err(|e| RayError::Startup(e.to_string()))?;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        let dashboard = match dashboard {
            Some(settings) => {
                let listener = settings.bind().await?;
                let scheme = if ray_proto::tls::enabled() { "https" } else { "http" };
                let url =
                    format!("{scheme}://{}", listener.local_addr().map_err(|e| RayError::Startup(e.to_string()))?);
                if !session.is_empty() {
                    crate::session::write_private(std::path::Path::new(&session), crate::session::DASHBOARD_URL, &url)?;
                }
                let config = ray_dashboard::DashboardConfig {
                    head_address: addr.to_string(),
                    token: token.clone(),
                    session_dir: PathBuf::from(&session),
                    stop_grace: std::time::Duration::from_secs(3),
                };
                Some(tokio::spawn(ray_dashboard::serve(listener, config, stopped(stop_rx.clone()))))
            }
            None => None,
        };
        announce(&addr.to_string());
        let on_signal = stop_tx.clone();
        tokio::spawn(async move {
            stop_signal().await;
            let _ = on_signal.send(true);
        });
        let served = ray_head::serve(listener, &token, session, stopped(stop_rx)).await;
        // However the head stopped (a signal, or `Shutdown` from a driver), the
        // dashboard stops with it and ends the jobs it runs.
        let _ = stop_tx.send(true);
        if let Some(dashboard) = dashboard {
            match dashboard.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!("the dashboard stopped with an error: {e}"),
                Err(e) => tracing::warn!("the dashboard failed: {e}"),
            }
        }
        served.map_err(|e| RayError::Startup(format!("head stopped: {e}")))
    })
}

/// Where the head serves its dashboard, from `RAYREPL_INCLUDE_DASHBOARD`,
/// `RAYREPL_DASHBOARD_HOST` and `RAYREPL_DASHBOARD_PORT`.
struct DashboardSettings {
    host: String,
    port: u16,
    /// The port was asked for: failing to get it is an error. Otherwise Ray's
    /// 8265 is tried and, if taken (another cluster on this machine), any port.
    strict: bool,
}

impl DashboardSettings {
    fn from_env() -> Result<Option<DashboardSettings>, RayError> {
        if matches!(env_or("RAYREPL_INCLUDE_DASHBOARD", "1").to_ascii_lowercase().as_str(), "0" | "false" | "no") {
            return Ok(None);
        }
        let asked = std::env::var("RAYREPL_DASHBOARD_PORT").ok().filter(|p| !p.is_empty());
        let port = match &asked {
            Some(p) => p.parse().map_err(|_| RayError::Startup(format!("bad RAYREPL_DASHBOARD_PORT {p:?}")))?,
            None => ray_dashboard::DEFAULT_PORT,
        };
        Ok(Some(DashboardSettings {
            host: env_or("RAYREPL_DASHBOARD_HOST", "127.0.0.1"),
            port,
            strict: asked.is_some(),
        }))
    }

    async fn bind(&self) -> Result<tokio::net::TcpListener, RayError> {
        let cannot = |e: std::io::Error| {
            RayError::Startup(format!(
                "the dashboard cannot listen on {}:{}: {e}; choose another with --dashboard-port, or \
                 --include-dashboard false",
                self.host, self.port
            ))
        };
        match tokio::net::TcpListener::bind((self.host.as_str(), self.port)).await {
            Ok(listener) => Ok(listener),
            Err(e) if !self.strict && e.kind() == std::io::ErrorKind::AddrInUse => {
                tracing::info!("port {} is taken; the dashboard takes any free port", self.port);
                tokio::net::TcpListener::bind((self.host.as_str(), 0)).await.map_err(cannot)
            }
            Err(e) => Err(cannot(e)),
        }
    }
}

fn run_node() -> Result<(), RayError> {
    init_tracing();
    check_tls()?;
    let rt = daemon_runtime(2)?;
    let resources: BTreeMap<String, f64> = serde_json::from_str(&env_or("RAYREPL_RESOURCES", "{}"))
        .map_err(|e| RayError::Startup(format!("bad RAYREPL_RESOURCES: {e}")))?;
    let config = ray_node::NodeConfig {
        head_address: env("RAYREPL_HEAD_ADDRESS")?,
        token: env("RAYREPL_TOKEN")?,
        ip: env_or("RAYREPL_NODE_IP", "127.0.0.1"),
        resources,
        object_store_memory: match std::env::var("RAYREPL_OBJECT_STORE_MEMORY").ok().filter(|m| !m.is_empty()) {
            Some(m) => {
                Some(m.parse().map_err(|_| RayError::Startup(format!("bad RAYREPL_OBJECT_STORE_MEMORY {m:?}")))?)
            }
            None => None,
        },
        plasma_directory: std::env::var_os("RAYREPL_PLASMA_DIRECTORY").filter(|d| !d.is_empty()).map(PathBuf::from),
        session_dir: PathBuf::from(env("RAYREPL_SESSION_DIR")?),
        is_head: env_or("RAYREPL_IS_HEAD", "0") == "1",
        idle_worker_timeout: std::time::Duration::from_millis(
            env_or("RAYREPL_IDLE_WORKER_TIMEOUT_MS", "30000")
                .parse()
                .map_err(|_| RayError::Startup("bad RAYREPL_IDLE_WORKER_TIMEOUT_MS".into()))?,
        ),
        metrics_export_port: match std::env::var("RAYREPL_METRICS_EXPORT_PORT").ok().filter(|p| !p.is_empty()) {
            Some(p) => {
                Some(p.parse().map_err(|_| RayError::Startup(format!("bad RAYREPL_METRICS_EXPORT_PORT {p:?}")))?)
            }
            None => None,
        },
    };
    let port: u16 =
        env_or("RAYREPL_NODE_PORT", "0").parse().map_err(|_| RayError::Startup("bad RAYREPL_NODE_PORT".into()))?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind((config.ip.as_str(), port))
            .await
            .map_err(|e| RayError::Startup(format!("the node cannot listen on {}: {e}", config.ip)))?;
        ray_node::run(config, listener, stop_signal(), |addr, id| {
            announce(&format!("{addr} {}", hex(id)));
        })
        .await
        .map_err(|e| RayError::Startup(e.to_string()))
    })
}

/// The bytes of the hex id in environment variable `name`.
fn env_id(name: &str) -> Result<Bytes, RayError> {
    unhex(&env(name)?).map(Bytes::from).map_err(|e| RayError::Startup(format!("bad {name}: {e}")))
}

fn run_worker() -> Result<(), RayError> {
    check_tls()?;
    let rt = daemon_runtime(1)?;
    let connection = Connection {
        head_address: env("RAYREPL_HEAD_ADDRESS")?,
        node_address: env("RAYREPL_NODE_ADDRESS")?,
        node_id: env_id("RAYREPL_NODE_ID")?,
        token: env("RAYREPL_TOKEN")?,
        ip: env_or("RAYREPL_NODE_IP", "127.0.0.1"),
    };
    let job = JobId(env("RAYREPL_JOB_ID")?.parse().map_err(|_| RayError::Startup("bad RAYREPL_JOB_ID".into()))?);
    let worker_id = env_id("RAYREPL_WORKER_ID")?;
    let node_address = connection.node_address.clone();
    let token = connection.token.clone();
    let core = rt.block_on(CoreWorker::start(StartOptions {
        connection,
        job: Some(job),
        is_worker: true,
        worker_id: worker_id.clone(),
        namespace: String::new(),
        log_to_driver: false,
    }))?;
    core.start_executor(&TABLE);
    *HOST.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(Host { core: core.clone(), cluster: None }));
    let address = core.address().to_string();
    let direct_address = core.direct_address();
    rt.block_on(async move {
        let mut node = ray_proto::node_client(ray_proto::connect(&node_address, &token, "the node daemon").await?);
        node.register_worker(ray_proto::RegisterWorkerRequest {
            pid: std::process::id(),
            address,
            worker_id,
            job_id: job.0,
            direct_address,
        })
        .await
        .map_err(|s| ray_proto::from_status(&s, "the node daemon"))?;
        // Serve until the node goes away (it also kills us via the parent-death signal).
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            if node.get_stats(ray_proto::Empty {}).await.is_err() {
                return Ok::<(), RayError>(());
            }
        }
    })?;
    // Keep the runtime alive until here; `rt` drops after the loop ends.
    drop(rt);
    Ok(())
}
