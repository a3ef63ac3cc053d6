//! `rayrepl`: the command-line front door.
//!
//! Its subcommands mirror the `ray` CLI (`start`, `stop`, `status`, ...). The same
//! binary also runs the cluster's daemons and workers when started with
//! `RAYREPL_ROLE` set, so one installed file is a whole Ray installation.

/// The REPL, the daemons and the microbenchmark's workers all run this binary;
/// the runtime's many small, short-lived allocations (protobuf messages, HTTP/2
/// frames, task records) are cheaper in mimalloc: 1:1 async actor calls went
/// from 28,500/s to 41,300/s over glibc malloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod cluster_cli;
mod job_cli;
mod microbenchmark;
mod repl;
mod state_cli;
mod tls_cli;
mod top;
mod viewport;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "rayrepl", version, about = "Ray's core rebuilt in Rust, driven from a REPL or Jupyter")]
struct Cli {
    /// With no subcommand: attach the REPL to the cluster at this head address
    /// (`auto`: the one running on this machine; also `ray://HOST:PORT` or the
    /// dashboard's `http://HOST:8265`) instead of starting a local one.
    #[arg(long, env = "RAYREPL_ADDRESS")]
    address: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Start a head node (`--head`) or join a cluster (`--address`), like `ray start`.
    Start(cluster_cli::StartArgs),
    /// Stop the cluster processes this machine's `rayrepl start` commands started.
    Stop(cluster_cli::StopArgs),
    /// Show the cluster's nodes and resource usage, like `ray status`.
    Status(cluster_cli::StatusArgs),
    /// List nodes, tasks, actors, placement groups, objects or jobs, like `ray list`.
    List(state_cli::ListArgs),
    /// Count tasks, actors or objects by kind and state, like `ray summary`.
    Summary(state_cli::SummaryArgs),
    /// Submit, follow and stop jobs through a head's Jobs API, like `ray job`.
    #[command(subcommand)]
    Job(job_cli::JobCommand),
    /// Write the tasks that ran as a Chrome trace (chrome://tracing, Perfetto), like `ray timeline`.
    Timeline(state_cli::TimelineArgs),
    /// List the nodes' log files, or print those matching a pattern, like `ray logs`.
    Logs(state_cli::LogsArgs),
    /// A live full-screen dashboard of nodes, tasks, actors, placement groups, objects and jobs.
    Top(top::TopArgs),
    /// Ray's microbenchmark suite on a local cluster, with Ray's metric names.
    Microbenchmark(MicrobenchmarkArgs),
    /// TLS for a cluster: `tls init DIR` writes a CA and a certificate.
    #[command(subcommand)]
    Tls(tls_cli::TlsCommand),
    /// The Jupyter kernel: `kernel install` registers it with Jupyter.
    #[command(subcommand)]
    Kernel(KernelCommand),
}

#[derive(Subcommand)]
enum KernelCommand {
    /// Write the kernelspec ("Rust (rayrepl)") where Jupyter finds it.
    Install(KernelInstallArgs),
    /// Run the kernel for a Jupyter connection file (Jupyter starts this).
    Run {
        /// The connection file Jupyter wrote.
        #[arg(long, short = 'f')]
        connection_file: std::path::PathBuf,
        /// Attach to this cluster instead of starting a local one.
        #[arg(long, env = "RAYREPL_ADDRESS")]
        address: Option<String>,
    },
}

#[derive(clap::Args)]
#[group(multiple = false)]
struct KernelInstallArgs {
    /// Into the user's Jupyter data directory (the default).
    #[arg(long)]
    user: bool,
    /// Into the active Python environment (virtualenv, conda or `python3`'s prefix).
    #[arg(long)]
    sys_prefix: bool,
    /// Into PREFIX/share/jupyter/kernels.
    #[arg(long, value_name = "PREFIX")]
    prefix: Option<std::path::PathBuf>,
}

fn run_kernel(command: KernelCommand) -> anyhow::Result<()> {
    use ray_kernel::install::{self, Location};
    match command {
        KernelCommand::Install(args) => {
            let location = match (args.sys_prefix, args.prefix) {
                (true, _) => Location::SysPrefix,
                (_, Some(prefix)) => Location::Prefix(prefix),
                _ => Location::User,
            };
            let binary = std::env::current_exe()?.canonicalize()?;
            let dir = install::install(&location, &binary)?;
            println!(
                "Installed the kernelspec {} (\"{}\") in {}",
                install::KERNEL_NAME,
                install::DISPLAY_NAME,
                dir.display()
            );
            Ok(())
        }
        KernelCommand::Run { connection_file, address } => {
            // The kernel's stderr is the Jupyter server's log.
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_env("RAYREPL_LOG").unwrap_or_else(|_| "warn".into()),
                )
                .with_writer(std::io::stderr)
                .init();
            ray_kernel::run(&connection_file, ray_kernel::KernelOptions { address })?;
            Ok(())
        }
    }
}

#[derive(clap::Args)]
struct MicrobenchmarkArgs {
    /// Run only metrics whose name or key contains this.
    #[arg(long)]
    filter: Option<String>,
    /// Print the results as JSON.
    #[arg(long)]
    json: bool,
    /// A run of seconds that only proves each metric works (for CI).
    #[arg(long)]
    smoke: bool,
    /// Instead, time `ray::init()` to first result over N fresh clusters.
    #[arg(long, value_name = "N")]
    cold_start: Option<usize>,
    /// Instead, start a cluster, warm its workers, print READY and idle this long.
    #[arg(long, value_name = "SECONDS")]
    idle: Option<u64>,
}

fn run_microbenchmark(args: MicrobenchmarkArgs) -> anyhow::Result<()> {
    if let Some(secs) = args.idle {
        return microbenchmark::idle(secs);
    }
    if let Some(runs) = args.cold_start {
        let times = microbenchmark::cold_start(runs)?;
        if args.json {
            println!("{}", serde_json::json!({ "cold_start_seconds": times }));
        } else {
            for t in &times {
                println!("cold start (init to first result) {:.1} ms", t * 1e3);
            }
        }
        return Ok(());
    }
    let timing = if args.smoke { microbenchmark::Timing::smoke() } else { microbenchmark::Timing::ray() };
    let results = microbenchmark::run(timing, args.filter, args.json)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    }
    Ok(())
}

/// Commands that print end quietly when their reader goes away
/// (`rayrepl status | head -3`), as Unix tools do: ended by SIGPIPE's default
/// action (status 141), where Rust's default (ignoring it) would make the next
/// `println!` panic. A broken socket raises SIGPIPE too, though (a plain-text
/// client's writev to a TLS head that hangs up, say), and must stay an error
/// the command reports; so SIGPIPE gets a handler that ends the process only if
/// stdout is the pipe that broke. The REPL and the daemons keep it ignored.
fn end_quietly_when_stdout_closes() {
    extern "C" fn on_sigpipe(_: libc::c_int) {
        let mut stdout = libc::pollfd { fd: libc::STDOUT_FILENO, events: 0, revents: 0 };
        // SAFETY: poll, signal and raise are async-signal-safe; `stdout` lives
        // for the call. A pipe whose reader has gone polls as POLLERR.
        unsafe {
            if libc::poll(&mut stdout, 1, 0) == 1 && stdout.revents & libc::POLLERR != 0 {
                libc::signal(libc::SIGPIPE, libc::SIG_DFL);
                libc::raise(libc::SIGPIPE);
            }
        }
    }
    // SAFETY: this runs on the main thread before the command starts any other
    // thread; the handler only makes async-signal-safe calls.
    unsafe {
        libc::signal(libc::SIGPIPE, on_sigpipe as *const () as libc::sighandler_t);
    }
}

fn main() -> anyhow::Result<()> {
    // The REPL's Ctrl-C relay is this binary too (see viewport::catch_interrupts).
    if std::env::var_os(viewport::RELAY_ENV).is_some() {
        viewport::relay_interrupts();
    }
    // Cluster daemons and workers are this binary in another role.
    ray_runtime::roles::run_requested_role();
    // So is the REPL's evaluation process (and evcxr's rustc wrapper).
    ray_session::hook();
    let cli = Cli::parse();
    // Every subcommand that prints and then ends; not the REPL, `top` or the
    // kernel, which own their terminal or sockets, nor a `start --block` that
    // must stay up to stop its cluster.
    let prints_and_ends = match &cli.command {
        None | Some(Command::Top(_)) | Some(Command::Kernel(KernelCommand::Run { .. })) => false,
        Some(Command::Start(args)) => !args.blocks(),
        Some(_) => true,
    };
    if prints_and_ends {
        end_quietly_when_stdout_closes();
    }
    match cli.command {
        Some(Command::Start(args)) => cluster_cli::start(args),
        Some(Command::Stop(args)) => cluster_cli::stop(args),
        Some(Command::Status(args)) => cluster_cli::status(args),
        Some(Command::Microbenchmark(args)) => run_microbenchmark(args),
        Some(Command::List(args)) => state_cli::list(args),
        Some(Command::Summary(args)) => state_cli::summary(args),
        Some(Command::Timeline(args)) => state_cli::timeline(args),
        Some(Command::Logs(args)) => state_cli::logs(args),
        Some(Command::Job(command)) => job_cli::run(command),
        Some(Command::Top(args)) => top::run(args.address),
        Some(Command::Kernel(command)) => run_kernel(command),
        Some(Command::Tls(command)) => tls_cli::run(command),
        None => repl::run(cli.address),
    }
}
