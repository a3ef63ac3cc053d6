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
mod errors;
mod expand;
mod input;
mod starting;
pub mod std_docs;

use crossbeam_channel::{Receiver, RecvTimeoutError};
use evcxr::{CommandContext, EvalContext};
use protocol::ChildEvent;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use build_slot::BuildSlot;
pub use child::hook;
pub use evcxr::{self, CompilationError, Completions, EvalOutputs};
pub use expand::{Expanded, SourceMap, expand_cell, expand_cell_mapped};
pub use input::{Completeness, Enter, completeness, on_enter, typed_cells};
/// The side channel from the evaluation process, shared with cell code's `ray`.
pub use ray_abi::side_channel as protocol;
pub use starting::{SessionGuard, SharedSession};

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
    /// A structured event from the driver or from cell code (`ray::notebook`).
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

/// What a front-end does while a cell runs: show its output as it comes, and
/// now and then do its own work (draw, read keys, throttle updates).
pub trait CellObserver {
    /// Output or a driver event from the evaluation process.
    fn event(&mut self, event: SessionEvent);
    /// Called at least every tick while the cell runs.
    fn tick(&mut self) {}
}

/// One evaluation session: evcxr, the prelude, and the driver in its process.
pub struct Session {
    context: CommandContext,
    /// The evaluation process's stdout lines that are not evcxr's own.
    stdout: Receiver<String>,
    /// Its stderr lines: the cell's and the driver's side channel.
    stderr: Receiver<String>,
    _slot: BuildSlot,
    /// The last cell as typed, the code it ran as, and the map between them.
    last_cell: String,
    last_code: String,
    last_map: SourceMap,
}

/// How long the front-end waits on stderr for the mark the evaluation process
/// announced on stdout: it was written first, so only reading it takes time.
const OUTPUT_MARK_PATIENCE: Duration = Duration::from_secs(2);

/// The prelude every session starts with: `ray` and its prelude are in scope.
fn prelude(ray_crate: &std::path::Path) -> String {
    format!(
        ":dep ray = {{ path = {:?}, default-features = false }}\nuse ray::prelude::*;",
        ray_crate.display().to_string()
    )
}

/// A build directory held for a session that has not started yet: it tells the
/// front-end, before the seconds of starting, whether this start also builds the
/// `ray` crate (once per build directory), which the person should watch.
pub struct Reserved {
    options: SessionOptions,
    slot: BuildSlot,
}

impl Reserved {
    /// Whether starting also builds the `ray` crate, which takes a minute or two.
    pub fn builds_ray_crate(&self) -> bool {
        !self.slot.is_warm()
    }

    /// Starts evcxr with the driver attached to the cluster. `status` hears about
    /// slow steps, such as the first build of the `ray` crate.
    pub fn start(self, mut status: impl FnMut(&str)) -> Result<Session, SessionError> {
        let Reserved { options, slot } = self;
        let cold = !slot.is_warm();
        if cold {
            status(
                "Building the ray crate for cells; this happens once per build directory and takes a minute or two…",
            );
        }
        let started = Instant::now();
        let libdir = check_toolchain()?;
        tracing::info!(took = ?started.elapsed(), "toolchain checked");
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
            .env(child::ENV_FRONT_END, std::process::id().to_string())
            .env_remove("RAYREPL_ROLE");
        // Its own process group: a terminal's Ctrl-C goes to the front-end, which
        // decides what the evaluation process gets.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let started = Instant::now();
        let (eval, outputs) =
            EvalContext::with_subprocess_command(command).map_err(|e| SessionError::Evaluator(e.to_string()))?;
        // Most of this is rust-analyzer reading std, in evcxr's first evaluation.
        tracing::info!(took = ?started.elapsed(), "evaluator started");
        let mut context = CommandContext::with_eval_context(eval);
        let started = Instant::now();
        // evcxr returns only once its stdout lines are taken; the prelude's one line
        // is the evaluation process's end-of-cell mark, which nobody needs.
        let prelude = std::thread::scope(|scope| {
            let running = scope.spawn(|| context.execute(&prelude(&options.ray_crate)));
            while !running.is_finished() {
                let _ = outputs.stdout.recv_timeout(Duration::from_millis(10));
            }
            running.join().unwrap_or_else(|_| Err(evcxr::Error::Message("the evaluator thread panicked".into())))
        });
        prelude.map_err(|e| SessionError::Evaluator(e.to_string()))?;
        // Most of this is rust-analyzer reading the `ray` crate's dependencies.
        tracing::info!(took = ?started.elapsed(), "prelude compiled");
        if cold {
            slot.mark_warm();
            status(&format!(
                "The ray crate is built ({:.0} s); later sessions reuse it.",
                started.elapsed().as_secs_f64()
            ));
        }
        let session = Session {
            context,
            stdout: outputs.stdout,
            stderr: outputs.stderr,
            _slot: slot,
            last_cell: String::new(),
            last_code: String::new(),
            last_map: SourceMap::default(),
        };
        session.await_driver()?;
        Ok(session)
    }
}

impl Session {
    /// Takes a build directory for a session on `options`, to start it later.
    /// Call it before the front-end starts threads of its own: it sets the
    /// process's environment.
    pub fn reserve(options: &SessionOptions) -> Result<Reserved, SessionError> {
        let slot = BuildSlot::acquire(&options.cache_dir)?;
        // evcxr reads its build directory from this process's environment.
        // SAFETY: Rust's own environment accesses are serialized by std, and the
        // front-ends reserve before any thread of theirs could call C code that
        // reads the environment (the REPL before its prompt, the kernel's engine
        // before it serves anything).
        unsafe { std::env::set_var("EVCXR_TMPDIR", slot.path()) };
        Ok(Reserved { options: options.clone(), slot })
    }

    /// Starts evcxr with the driver attached to `options.address`. `status` hears
    /// about slow steps, such as the first build of the `ray` crate.
    pub fn start(options: &SessionOptions, status: impl FnMut(&str)) -> Result<Session, SessionError> {
        Session::reserve(options)?.start(status)
    }

    /// Waits for the evaluation process's driver to report in.
    fn await_driver(&self) -> Result<(), SessionError> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while let Ok(line) = self.stderr.recv_deadline(deadline) {
            match ChildEvent::decode(&line) {
                Some(ChildEvent::DriverReady { .. }) => return Ok(()),
                Some(ChildEvent::DriverFailed { message }) => return Err(SessionError::Driver(message)),
                _ => {}
            }
        }
        Err(SessionError::Driver("no word from the evaluation process within 30 s".into()))
    }

    /// Does before the first cell what evcxr would otherwise do during it: the first
    /// `let` waits seconds for rust-analyzer to load the `ray` crate and its
    /// dependencies. A front-end calls this while it would be idle anyway.
    pub fn warm_up(&mut self) {
        let started = Instant::now();
        let code = "let rayrepl_warm_up = 0u8;\nrayrepl_warm_up.";
        let _ = self.context.completions(code, code.len());
        tracing::info!(took = ?started.elapsed(), "rust-analyzer warmed up");
    }

    /// Output that arrived between cells, such as late worker lines.
    pub fn pending_events(&self) -> Vec<SessionEvent> {
        let mut events: Vec<_> = self.stdout.try_iter().map(stdout_event).collect();
        events.extend(self.stderr.try_iter().map(stderr_event));
        // A mark between cells is an earlier cell's, already passed.
        events.retain(|e| !matches!(e, SessionEvent::Driver(ChildEvent::OutputFlushed { .. })));
        events
    }

    /// A handle that interrupts the running cell from another thread.
    pub fn interrupter(&self) -> Interrupter {
        Interrupter { process: self.context.process_handle() }
    }

    /// Runs one cell: expands `#[ray::remote]` items and top-level `.await`, then
    /// hands it to evcxr, which also runs `:commands`. Tells `observer` about each
    /// line and event as it arrives, and ticks it at least every `tick`. When this
    /// returns, every line the cell printed has been observed, and so has the
    /// worker output of the tasks and actor calls it waited for, nested ones too.
    pub fn execute_observed(
        &mut self,
        cell: &str,
        tick: Duration,
        observer: &mut dyn CellObserver,
    ) -> Result<EvalOutputs, evcxr::Error> {
        (self.last_code, self.last_map) = match expand_cell_mapped(cell) {
            Some(expanded) => (expanded.code, expanded.map),
            None => (cell.to_string(), SourceMap::identity(cell.len())),
        };
        self.last_cell = cell.to_string();
        let (context, code) = (&mut self.context, &self.last_code);
        let (mut stdout, mut stderr) = (self.stdout.clone(), self.stderr.clone());
        let mut marks = OutputMarks::default();
        let started = Instant::now();
        let result = std::thread::scope(|scope| {
            let (done_tx, done) = crossbeam_channel::bounded(1);
            scope.spawn(move || {
                // The loop below waits for this, so the receiver is there.
                let _ = done_tx.send(context.execute(code));
            });
            let mut next_tick = Instant::now() + tick;
            loop {
                let timeout = next_tick.saturating_duration_since(Instant::now());
                crossbeam_channel::select! {
                    recv(done) -> result => {
                        break result.unwrap_or_else(|_| Err(evcxr::Error::Message("the evaluator thread stopped".into())))
                    }
                    recv(stdout) -> line => match line {
                        Ok(line) => marks.stdout(stdout_event(line), observer),
                        // evcxr is restarting its process; the cell's result says so.
                        Err(_) => stdout = crossbeam_channel::never(),
                    },
                    recv(stderr) -> line => match line {
                        Ok(line) => marks.stderr(stderr_event(line), observer),
                        Err(_) => stderr = crossbeam_channel::never(),
                    },
                    default(timeout) => {
                        observer.tick();
                        next_tick = Instant::now() + tick;
                    }
                }
            }
        });
        // evcxr hands on every stdout line before it reports the cell done.
        for line in self.stdout.try_iter() {
            marks.stdout(stdout_event(line), observer);
        }
        let evaluated = started.elapsed();
        // The cell ran: its worker output is on stderr, before the mark.
        if let Some(mark) = marks.announced {
            let deadline = Instant::now() + OUTPUT_MARK_PATIENCE;
            while !marks.reached.contains(&mark) {
                match self.stderr.recv_deadline(deadline.min(Instant::now() + tick)) {
                    Ok(line) => marks.stderr(stderr_event(line), observer),
                    Err(RecvTimeoutError::Timeout) if Instant::now() < deadline => observer.tick(),
                    Err(_) => break,
                }
            }
        }
        for line in self.stderr.try_iter() {
            marks.stderr(stderr_event(line), observer);
        }
        tracing::debug!(
            ?evaluated,
            output_complete = ?started.elapsed(),
            phases = ?result.as_ref().map(|o| &o.phases).ok(),
            "cell ran"
        );
        result
    }

    /// The code the last cell ran as, after expansion (errors are shown on the cell).
    pub fn last_code(&self) -> &str {
        &self.last_code
    }

    /// What went wrong in the last cell, for people: compile errors as reports
    /// that point into the cell as it was typed (with ANSI colours), never into
    /// code the session or evcxr added; otherwise the error's message.
    pub fn describe_error(&self, e: &evcxr::Error) -> String {
        match e {
            evcxr::Error::CompilationErrors(errors) => errors
                .iter()
                .map(|error| errors::render(error, &self.last_code, &self.last_map, &self.last_cell))
                .collect(),
            evcxr::Error::SubprocessTerminated(message) => {
                format!("{message}\nThe evaluation process was restarted; the session's variables are lost.")
            }
            other => other.to_string(),
        }
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

/// Cell code's rich output is marked on stdout; everything else there is a print.
/// The evaluation process's `OutputFlushed` marks seen while a cell runs; they
/// are the session's business, not the observer's.
#[derive(Default)]
struct OutputMarks {
    /// The mark stdout announced: the cell ran, and stderr is whole up to it.
    announced: Option<u64>,
    /// Marks seen on stderr.
    reached: Vec<u64>,
}

impl OutputMarks {
    fn stdout(&mut self, event: SessionEvent, observer: &mut dyn CellObserver) {
        match event {
            SessionEvent::Driver(ChildEvent::OutputFlushed { mark }) => self.announced = Some(mark),
            event => observer.event(event),
        }
    }

    fn stderr(&mut self, event: SessionEvent, observer: &mut dyn CellObserver) {
        match event {
            SessionEvent::Driver(ChildEvent::OutputFlushed { mark }) => self.reached.push(mark),
            event => observer.event(event),
        }
    }
}

fn stdout_event(line: String) -> SessionEvent {
    match ChildEvent::decode(&line) {
        Some(event) => SessionEvent::Driver(event),
        None => SessionEvent::Stdout(line),
    }
}

/// The driver's side channel is marked on stderr; everything else there is a print.
fn stderr_event(line: String) -> SessionEvent {
    match ChildEvent::decode(&line) {
        Some(event) => SessionEvent::Driver(event),
        None => SessionEvent::Stderr(line),
    }
}
