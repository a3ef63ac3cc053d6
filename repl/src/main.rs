//! `rayrepl`: the command-line front door.
//!
//! Its subcommands mirror the `ray` CLI (`start`, `stop`, `status`, ...). The same
//! binary also runs the cluster's daemons and workers when started with
//! `RAYREPL_ROLE` set, so one installed file is a whole Ray installation.

mod cluster_cli;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "rayrepl", version, about = "Ray's core rebuilt in Rust, driven from a REPL or Jupyter")]
struct Cli {
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
}

fn main() -> anyhow::Result<()> {
    // Cluster daemons and workers are this binary in another role.
    ray_runtime::roles::run_requested_role();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Start(args)) => cluster_cli::start(args),
        Some(Command::Stop(args)) => cluster_cli::stop(args),
        Some(Command::Status(args)) => cluster_cli::status(args),
        None => {
            use clap::CommandFactory;
            Cli::command().print_help()?;
            println!(
                "\nThe interactive REPL is not part of this build yet; start a cluster with \
                 `rayrepl start --head` and connect programs with ray::init_with(..)."
            );
            Ok(())
        }
    }
}
