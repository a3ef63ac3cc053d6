//! The evaluation session shared by the `rayrepl` REPL and the Jupyter kernel.
//!
//! Both front-ends need the same things from evcxr, and none of them is evcxr's
//! default: cells that define `#[ray::remote]` items must be expanded before
//! rust-analyzer sees them; the `ray` crate must already be a dependency, built
//! once and reused by later sessions; the evaluation process must be a Ray driver;
//! worker output and progress must reach the front-end; and an interrupt must
//! cancel the cell's tasks without losing its variables. [`Session`] owns all of
//! that; the front-ends only read input and draw.

mod build_slot;
pub mod child;
mod expand;
mod input;
pub mod protocol;

use crossbeam_channel::{Receiver, Sender};
use evcxr::{CommandContext, EvalContext};
use protocol::ChildEvent;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use build_slot::BuildSlot;
pub use child::hook;
pub use evcxr::{self, CompilationError, Completions, EvalOutputs};
pub use expand::expand_cell;
pub use input::{Completeness, completeness};

/// Why a session could not start or a cell could not run.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The build directory could not be prepared.
    #[error("cannot prepare the build directory {path}: {detail}")]
    BuildDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// evcxr could not start or compile the prelude.
    #[error("cannot start the Rust evaluator: {0}")]
    Evaluator(String),
    /// The evaluation process could not attach to the cluster.
    #[error("the evaluation process could not attach to the cluster: {0}")]
    Driver(String),
    /// The installed Rust toolchain differs from the one rayrepl was built with.
    #[error(
        "rayrepl was built with `{built}` but `rustc` here is `{found}`; cell libraries \
         would not match the workers; rebuild rayrepl with this toolchain"
    )]
    Toolchain {
        /// The toolchain rayrepl was built with.
        built: String,
        /// The toolchain on PATH.
        found: String,
    },
}

/// What starts a session.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// Head address of the cluster the evaluation process attaches to.
    pub address: String,
    /// The cluster token.
    pub token: String,
    /// The `ray` crate's source directory, which cells depend on.
    pub ray_crate: PathBuf,
    /// Where build directories live (one per concurrent session).
    pub cache_dir: PathBuf,
}

impl SessionOptions {
    /// Options for `address` with the default crate path and cache directory.
    pub fn new(address: String, token: String) -> Self {
        SessionOptions { address, token, ray_crate: default_ray_crate(), cache_dir: default_cache_dir() }
    }
}

/// The `ray` crate this binary was built from; `RAYREPL_RAY_CRATE` overrides it.
pub fn default_ray_crate() -> PathBuf {
    std::env::var_os("RAYREPL_RAY_CRATE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../ray"))
}

/// `$RAYREPL_CACHE_DIR`, else `~/.cache/rayrepl/evcxr`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("RAYREPL_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("rayrepl").join("evcxr")
}

/// Something the evaluation process said while a cell ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// A line the cell printed to stdout.
    Stdout(String),
    /// A line the cell (or the evaluation process) printed to stderr.
    Stderr(String),
    /// A structured event from the driver.
    Driver(ChildEvent),
}

/// Sends interrupts to the evaluation process; cheap to clone and `Send`.
#[derive(Clone)]
pub struct Interrupter {
    process: Arc<Mutex<std::process::Child>>,
}

impl Interrupter {
    /// Asks the running cell to stop: SIGINT, which the driver turns into
    /// cancelling its tasks and failing blocked calls with `Interrupted`.
    pub fn interrupt(&self) {
        let pid = self.process.lock().unwrap_or_else(|p| p.into_inner()).id();
        // SAFETY: kill(2) with a pid we own (evcxr's child) and a standard signal.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGINT);
        }
    }

    /// Ends a cell that ignores interrupts (a busy loop): kills the evaluation
    /// process. evcxr starts a new one for the next cell; variables are lost.
    pub fn kill(&self) {
        let _ = self.process.lock().unwrap_or_else(|p| p.into_inner()).kill();
    }
}

/// One evaluation session: evcxr, the prelude, and the driver in its process.
pub struct Session {
    context: CommandContext,
    events: Receiver<SessionEvent>,
    _slot: BuildSlot,
    last_code: String,
}

/// The prelude every session starts with: `ray` and its prelude are in scope.
fn prelude(ray_crate: &std::path::Path) -> String {
    format!(
        ":dep ray = {{ path = {:?}, default-features = false }}\nuse ray::prelude::*;",
        ray_crate.display().to_string()
    )
}

impl Session {
    /// Starts evcxr with the driver attached to `options.address`. `status` hears
    /// about slow steps, such as the first build of the `ray` crate.
    pub fn start(options: &SessionOptions, mut status: impl FnMut(&str)) -> Result<Session, SessionError> {
        let slot = BuildSlot::acquire(&options.cache_dir)?;
        let cold = !slot.is_warm();
        if cold {
            status(
                "Building the ray crate for cells; this happens once per build directory and takes a minute or two…",
            );
        }
        // evcxr reads its build directory from this process's environment.
        // SAFETY: Rust's own environment accesses are serialized by std; no C code
        // that reads the environment runs on another thread while the session
        // starts (the front-ends start sessions before their own worker threads).
        unsafe { std::env::set_var("EVCXR_TMPDIR", slot.path()) };
        let libdir = check_toolchain()?;
        let library_path = match std::env::var("LD_LIBRARY_PATH") {
            Ok(p) if !p.is_empty() => format!("{libdir}:{p}"),
            _ => libdir,
        };
        let exe = std::env::current_exe().map_err(|e| SessionError::Evaluator(e.to_string()))?;
        let mut command = std::process::Command::new(exe);
        command
            // Cell libraries link the toolchain's libstd dynamically; the driver
            // passes this on to its workers.
            .env("LD_LIBRARY_PATH", library_path)
            .env(child::ENV_ADDRESS, &options.address)
            .env(child::ENV_TOKEN, &options.token)
            .env_remove("RAYREPL_ROLE");
        // Its own process group: a terminal's Ctrl-C goes to the front-end, which
        // decides what the evaluation process gets.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let (eval, outputs) =
            EvalContext::with_subprocess_command(command).map_err(|e| SessionError::Evaluator(e.to_string()))?;
        let mut context = CommandContext::with_eval_context(eval);
        let (tx, events) = crossbeam_channel::unbounded();
        forward(outputs.stdout, tx.clone(), SessionEvent::Stdout);
        forward(outputs.stderr, tx, |line| match ChildEvent::decode(&line) {
            Some(event) => SessionEvent::Driver(event),
            None => SessionEvent::Stderr(line),
        });
        let started = Instant::now();
        context.execute(&prelude(&options.ray_crate)).map_err(|e| SessionError::Evaluator(e.to_string()))?;
        if cold {
            slot.mark_warm();
            status(&format!(
                "The ray crate is built ({:.0} s); later sessions reuse it.",
                started.elapsed().as_secs_f64()
            ));
        }
        let session = Session { context, events, _slot: slot, last_code: String::new() };
        session.await_driver()?;
        Ok(session)
    }

    /// Waits for the evaluation process's driver to report in.
    fn await_driver(&self) -> Result<(), SessionError> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while let Ok(event) = self.events.recv_deadline(deadline) {
            match event {
                SessionEvent::Driver(ChildEvent::DriverReady { .. }) => return Ok(()),
                SessionEvent::Driver(ChildEvent::DriverFailed { message }) => {
                    return Err(SessionError::Driver(message));
                }
                _ => {}
            }
        }
        Err(SessionError::Driver("no word from the evaluation process within 30 s".into()))
    }

    /// Events from the evaluation process: output lines, progress, interrupts.
    pub fn events(&self) -> &Receiver<SessionEvent> {
        &self.events
    }

    /// A handle that interrupts the running cell from another thread.
    pub fn interrupter(&self) -> Interrupter {
        Interrupter { process: self.context.process_handle() }
    }

    /// Runs one cell: expands `#[ray::remote]` items and top-level `.await`, then
    /// hands it to evcxr, which also runs `:commands`.
    pub fn execute(&mut self, cell: &str) -> Result<EvalOutputs, evcxr::Error> {
        self.last_code = expand_cell(cell).unwrap_or_else(|| cell.to_string());
        self.context.execute(&self.last_code)
    }

    /// The code the last cell ran as, after expansion: compile errors point into it.
    pub fn last_code(&self) -> &str {
        &self.last_code
    }

    /// Completions at byte offset `position` of `src` (Rust names and `:commands`).
    pub fn completions(&mut self, src: &str, position: usize) -> Option<Completions> {
        self.context.completions(src, position).ok()
    }

    /// The session's variables and their types.
    pub fn variables(&self) -> Vec<(String, String)> {
        self.context.variables_and_types().map(|(n, t)| (n.to_string(), t.to_string())).collect()
    }
}

/// Checks that `rustc` here is the compiler rayrepl was built with (cells must
/// match the runtime's ABI) and returns its target library directory.
fn check_toolchain() -> Result<String, SessionError> {
    let rustc = |args: &[&str]| -> Result<String, SessionError> {
        let out = std::process::Command::new("rustc")
            .args(args)
            .output()
            .map_err(|e| SessionError::Evaluator(format!("cannot run rustc (is Rust installed and on PATH?): {e}")))?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let verbose = rustc(&["-vV"])?;
    let version = verbose.lines().next().unwrap_or_default();
    let host = verbose.lines().find_map(|l| l.strip_prefix("host: ")).unwrap_or_default();
    let found = format!("{version} {host}");
    if found != ray_core::ABI_KEY {
        return Err(SessionError::Toolchain { built: ray_core::ABI_KEY.to_string(), found });
    }
    rustc(&["--print", "target-libdir"])
}

fn forward(from: Receiver<String>, to: Sender<SessionEvent>, wrap: impl Fn(String) -> SessionEvent + Send + 'static) {
    std::thread::Builder::new()
        .name("session-output".into())
        .spawn(move || {
            for line in from {
                if to.send(wrap(line)).is_err() {
                    break;
                }
            }
        })
        .expect("spawn a session output thread");
}
