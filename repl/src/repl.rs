//! `rayrepl` with no subcommand: an interactive Rust REPL that is a Ray driver.
//!
//! The REPL is a thin front-end over [`ray_session::Session`], which owns evcxr and
//! the driver. What lives here is the terminal: line editing with history kept
//! across sessions, continuation lines while a cell is unfinished (a single
//! complete line runs on Enter, several lines on a blank line), keys typed while a
//! cell runs kept for the prompts after it, Tab completion of Rust names and
//! `:commands`, the progress viewport while a cell runs, `:top`, and what Ctrl-C
//! and Ctrl-D mean. Only one of rustyline and ratatui owns the terminal
//! at a time: rustyline at the prompt, ratatui while a cell runs or `:top` is open.

use crate::viewport::CellView;
use anyhow::Context as _;
use ratatui::style::{Color, Style};
use ray_runtime::cluster::{LocalCluster, NodeResources};
use ray_session::protocol::ChildEvent;
use ray_session::{CellObserver, Enter, Session, SessionEvent, SessionOptions, SharedSession};
use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::{ValidationContext, ValidationResult, Validator};
use rustyline::{Config, Editor, Helper};
use std::borrow::Cow;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The REPL's own commands; evcxr's (`:dep`, `:vars`, ...) work too.
const COMMANDS: &[(&str, &str)] = &[
    (":help", "show this help"),
    (":top", "full-screen dashboard of nodes, tasks, actors, placement groups, objects and jobs (q to return)"),
    (":status", "the cluster's nodes and resources"),
    (":timeline", "write the tasks that ran as a Chrome trace (chrome://tracing, Perfetto)"),
    (":vars", "the session's variables and their types (evcxr)"),
    (":dep", "add a crate dependency, e.g. `:dep rand = \"0.9\"` (evcxr)"),
    (":clear", "forget all variables and items (evcxr)"),
    (":quit", "leave the REPL and stop the local cluster (also Ctrl-D)"),
];

/// A cell that waits this long for the session (starting, or rust-analyzer warming
/// up) says why it waits.
const SAY_WHY_AFTER: Duration = Duration::from_millis(300);

/// How long a cell may ignore an interrupt before a second Ctrl-C kills it.
const KILL_AFTER: Duration = Duration::from_secs(2);

/// Starts the REPL on a new local cluster, or on the cluster at `address`.
pub fn run(address: Option<String>) -> anyhow::Result<()> {
    // `RAYREPL_LOG=ray_session=info` shows where start-up and each cell spend time.
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("RAYREPL_LOG") {
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    }
    let (cluster, head_address, token) = match address {
        None => {
            let started = Instant::now();
            let cluster = LocalCluster::start(&NodeResources::default()).context("cannot start a local cluster")?;
            tracing::info!(took = ?started.elapsed(), "local cluster started");
            let address = cluster.head.address.clone();
            let token = cluster.token.clone();
            (Some(cluster), address, token)
        }
        Some(a) => {
            // Ray's spellings: `auto`, `ray://`, the dashboard's address.
            let a = ray_runtime::session::resolve_head_address(&a, None)?;
            let token = ray_runtime::session::find_token(None, &a)?;
            (None, a, token)
        }
    };
    // The local cluster's web dashboard, with the link that signs a browser in.
    let dashboard = cluster
        .as_ref()
        .and_then(|c| ray_runtime::session::read(&c.session_dir, ray_runtime::session::DASHBOARD_URL))
        .map(|url| format!("{url}/?token={token}"));
    let result = run_on(cluster.is_some(), &head_address, &token, dashboard.as_deref());
    if let Some(mut cluster) = cluster {
        cluster.stop();
    }
    result
}

fn run_on(local: bool, head_address: &str, token: &str, dashboard: Option<&str>) -> anyhow::Result<()> {
    let options = SessionOptions::new(head_address.to_string(), token.to_string());
    let started = Instant::now();
    let reserved = Session::reserve(&options).context("cannot start the session")?;
    let session = if reserved.builds_ray_crate() {
        // Once per build directory, and cargo's progress is worth watching.
        SharedSession::ready(reserved.start(|status| eprintln!("{status}")).context("cannot start the session")?)
    } else {
        // The prompt comes at once; the first cell waits for what is still starting.
        SharedSession::start(reserved)
    };
    let greeting = greeting(local, head_address, token, started.elapsed());
    println!("{greeting}");
    if let Some(link) = dashboard {
        println!("Dashboard: {link}");
    }
    let mut editor = editor(session.clone())?;
    let history = history_path();
    if let Some(path) = &history {
        let _ = editor.load_history(path);
    }
    // From here on a Ctrl-C while a cell runs interrupts the cell.
    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        crate::viewport::catch_interrupts().context("cannot start the Ctrl-C relay")?;
    }
    // Cells typed ahead that a running cell's viewport read from the terminal, and
    // the unfinished rest, for the prompts to come.
    let mut typed_cells: VecDeque<String> = VecDeque::new();
    let mut typed_rest = String::new();
    loop {
        let input = match typed_cells.pop_front() {
            Some(cell) => {
                println!(">> {}", cell.replace('\n', "\n.. "));
                Ok(cell)
            }
            None => editor.readline_with_initial(">> ", (&std::mem::take(&mut typed_rest), "")),
        };
        match input {
            Ok(line) => {
                let cell = line.trim_end();
                if cell.trim().is_empty() {
                    continue;
                }
                let _ = editor.add_history_entry(cell);
                if let Some(path) = &history {
                    let _ = editor.append_history(path);
                }
                match cell.trim() {
                    ":quit" | ":exit" | ":q" => break,
                    ":help" | ":h" => print_help(),
                    ":top" => {
                        if let Err(e) = crate::top::run(Some(head_address.to_string())) {
                            eprintln!("{e:#}");
                        }
                    }
                    ":timeline" => {
                        let args = crate::state_cli::TimelineArgs::for_address(head_address.to_string());
                        if let Err(e) = crate::state_cli::timeline(args) {
                            eprintln!("{e:#}");
                        }
                    }
                    ":status" => {
                        let args = crate::cluster_cli::StatusArgs::for_address(head_address.to_string());
                        if let Err(e) = crate::cluster_cli::status(args) {
                            eprintln!("{e:#}");
                        }
                    }
                    _ => {
                        let typed = run_cell(&session, cell);
                        if !typed.is_empty() {
                            let (cells, rest) = ray_session::typed_cells(&(std::mem::take(&mut typed_rest) + &typed));
                            typed_cells.extend(cells);
                            typed_rest = rest;
                        }
                    }
                }
            }
            // Ctrl-C at the prompt clears the line, as in a shell.
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e.into()),
        }
    }
    if local {
        eprintln!("Stopping the local cluster.");
    }
    Ok(())
}

fn greeting(local: bool, head_address: &str, token: &str, took: Duration) -> String {
    let (nodes, cpus) = cluster_size(head_address, token).unwrap_or((0, 0.0));
    let kind = if local { "local cluster" } else { "cluster" };
    format!(
        "rayrepl {} · {kind} at {head_address} · {nodes} node{} · {cpus} CPUs · ready in {:.1}s · :help for commands",
        env!("CARGO_PKG_VERSION"),
        if nodes == 1 { "" } else { "s" },
        took.as_secs_f64()
    )
}

fn cluster_size(head_address: &str, token: &str) -> anyhow::Result<(usize, f64)> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let info = rt.block_on(async {
        let channel = ray_proto::connect(head_address, token, "the head").await?;
        let info = ray_proto::head_client(channel).get_cluster_info(ray_proto::Empty {}).await;
        anyhow::Ok(info.map_err(|s| ray_proto::from_status(&s, "the head"))?.into_inner())
    })?;
    let alive: Vec<_> = info.nodes.iter().filter(|n| n.is_alive()).collect();
    let cpus = alive.iter().map(|n| ray_proto::resources_to_map(&n.total).get("CPU").copied().unwrap_or(0.0)).sum();
    Ok((alive.len(), cpus))
}

fn print_help() {
    println!("Write Rust; mark functions, structs and impls #[ray::remote] to run them as tasks and actors.");
    println!("`use ray::prelude::*` is in scope. Ctrl-C cancels a running cell's tasks; Ctrl-D quits.\n");
    for (name, what) in COMMANDS {
        println!("  {name:<8} {what}");
    }
    println!("\nevcxr's other commands also work: :explain, :opt, :timing, :last_compile_dir, :help_evcxr ...");
}

/// `$RAYREPL_HISTORY`, else `$XDG_DATA_HOME/rayrepl/history` (`~/.local/share`).
fn history_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("RAYREPL_HISTORY") {
        return Some(PathBuf::from(p));
    }
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))?;
    let dir = base.join("rayrepl");
    std::fs::create_dir_all(&dir).ok()?;
    Some(dir.join("history"))
}

/// How often a running cell checks for Ctrl-C.
const KEY_POLL: Duration = Duration::from_millis(40);

/// Runs a cell while drawing its output and progress and watching for Ctrl-C.
/// Returns keys typed ahead that the viewport read (the rest wait in the terminal).
fn run_cell(session: &SharedSession, cell: &str) -> String {
    // The terminal is the cell's while it waits for the session, which may still be
    // starting or warming up: keys typed meanwhile wait in raw mode, Enters intact.
    let mut view = CellView::begin();
    let waiting_since = Instant::now();
    let mut said_why = false;
    let waited = session.wait(KEY_POLL, || {
        if !said_why
            && waiting_since.elapsed() >= SAY_WHY_AFTER
            && let Some(why) = session.waiting_for()
        {
            view.line(&format!("({why}; the cell runs once it is done)"), Style::default().fg(Color::DarkGray));
            said_why = true;
        }
        !view.interrupted()
    });
    let mut session = match waited {
        Ok(Some(session)) => session,
        Ok(None) => {
            view.line(
                "Interrupted while waiting for the evaluator; the cell did not run.",
                Style::default().fg(Color::Yellow),
            );
            return view.end();
        }
        Err(e) => {
            view.line(&format!("The session could not start: {e}"), Style::default().fg(Color::Red));
            view.line(
                "Leave with Ctrl-D; `RAYREPL_LOG=ray_session=info rayrepl` shows each step of the start.",
                Style::default(),
            );
            return view.end();
        }
    };
    // Output left over from an earlier cell (late worker lines) comes first.
    for event in session.pending_events() {
        show_event(&mut view, event);
    }
    let mut observer =
        ReplObserver { view, interrupter: session.interrupter(), interrupted_at: None, interrupt_reported: false };
    let result = session.execute_observed(cell, KEY_POLL, &mut observer);
    let mut view = observer.view;
    match result {
        Ok(outputs) => {
            if let Some(text) = outputs.get("text/plain") {
                for line in text.lines() {
                    view.line(line, Style::default());
                }
            }
            if let Some(t) = outputs.timing {
                view.line(&format!("Took {}ms", t.as_millis()), Style::default().fg(Color::DarkGray));
            }
        }
        Err(e) => {
            for line in session.describe_error(&e).lines() {
                view.line(line, Style::default().fg(Color::Red));
            }
        }
    }
    view.end()
}

/// Draws a running cell's output and turns Ctrl-C into an interrupt. An interrupt
/// is reported once, by the driver's message that says what it cancelled: the
/// cell's own report of the `Interrupted` error its blocked call returned says
/// less, and is left out.
struct ReplObserver {
    view: CellView,
    interrupter: ray_session::Interrupter,
    interrupted_at: Option<Instant>,
    interrupt_reported: bool,
}

impl CellObserver for ReplObserver {
    fn event(&mut self, event: SessionEvent) {
        match &event {
            SessionEvent::Driver(ChildEvent::Interrupted { .. }) => self.interrupt_reported = true,
            // The cell's error can come before the driver's report: both follow
            // the same interrupt, which this observer sent.
            SessionEvent::Stderr(line)
                if (self.interrupt_reported || self.interrupted_at.is_some()) && is_interrupted_error(line) =>
            {
                return;
            }
            _ => {}
        }
        show_event(&mut self.view, event);
    }

    fn tick(&mut self) {
        if !self.view.interrupted() {
            return;
        }
        match self.interrupted_at {
            Some(at) if at.elapsed() >= KILL_AFTER => {
                self.view.line(
                    "^C again: the cell ignores interrupts; restarting the evaluation process (variables are lost)",
                    Style::default().fg(Color::Red),
                );
                self.interrupter.kill();
            }
            Some(_) => {}
            None => {
                self.interrupter.interrupt();
                self.interrupted_at = Some(Instant::now());
            }
        }
    }
}

/// Whether a line is how a cell reports the error an interrupt made its blocked
/// call return (with `?`): `Interrupted`, or the `Cancelled` of a task it waited on.
fn is_interrupted_error(line: &str) -> bool {
    let line = line.trim();
    let line = line.strip_prefix("Error: ").unwrap_or(line);
    let cancelled = line.strip_prefix("task `").and_then(|l| l.strip_suffix("` was cancelled"));
    line == ray_abi::RayError::Interrupted.to_string()
        || cancelled
            .is_some_and(|function| line == ray_abi::RayError::Cancelled { function: function.to_string() }.to_string())
}

/// The one line a Ctrl-C during a cell prints.
fn interrupted_message(cancelled: usize) -> String {
    match cancelled {
        0 => "Interrupted; no tasks were outstanding. A cell busy in its own code runs on: Ctrl-C again, \
              2 s from now or later, restarts the evaluation process (its variables are lost)."
            .to_string(),
        1 => "Interrupted: cancelled 1 outstanding task; the session's variables are kept.".to_string(),
        n => format!("Interrupted: cancelled {n} outstanding tasks; the session's variables are kept."),
    }
}

fn show_event(view: &mut CellView, event: SessionEvent) {
    match event {
        SessionEvent::Stdout(line) => view.line(&line, Style::default()),
        SessionEvent::Stderr(line) => view.line(&line, Style::default().fg(Color::Red)),
        SessionEvent::Driver(ChildEvent::WorkerStdout { line }) => view.line(&line, Style::default()),
        SessionEvent::Driver(ChildEvent::WorkerStderr { line }) => view.line(&line, Style::default().fg(Color::Red)),
        SessionEvent::Driver(ChildEvent::Progress(p)) => view.progress(p),
        SessionEvent::Driver(ChildEvent::Interrupted { cancelled }) => {
            view.line(&interrupted_message(cancelled), Style::default().fg(Color::Yellow))
        }
        SessionEvent::Driver(ChildEvent::DriverFailed { message }) => {
            view.line(&format!("The driver could not attach: {message}"), Style::default().fg(Color::Red))
        }
        SessionEvent::Driver(ChildEvent::Display { data, .. }) => {
            if let Some(text) = data.get("text/plain") {
                for line in text.lines() {
                    view.line(line, Style::default());
                }
            }
        }
        SessionEvent::Driver(
            ChildEvent::DriverReady { .. }
            | ChildEvent::ClearOutput { .. }
            | ChildEvent::CellFailed
            | ChildEvent::OutputFlushed { .. },
        ) => {}
    }
}

/// rustyline's helper: completion, and continuation while a cell is unfinished.
struct ReplHelper {
    session: SharedSession,
}

impl Helper for ReplHelper {}
impl Hinter for ReplHelper {
    type Hint = String;
}
impl Highlighter for ReplHelper {
    fn highlight_prompt<'b, 's: 'b, 'p: 'b>(&'s self, prompt: &'p str, _default: bool) -> Cow<'b, str> {
        Cow::Borrowed(prompt)
    }
}

impl Validator for ReplHelper {
    fn validate(&self, ctx: &mut ValidationContext<'_>) -> rustyline::Result<ValidationResult> {
        Ok(match ray_session::on_enter(ctx.input()) {
            Enter::Continue => ValidationResult::Incomplete,
            // Invalid input runs too: evcxr's message says what is wrong.
            Enter::Run => ValidationResult::Valid(None),
        })
    }
}

impl Completer for ReplHelper {
    type Candidate = Pair;

    fn complete(&self, line: &str, pos: usize, _: &rustyline::Context<'_>) -> rustyline::Result<(usize, Vec<Pair>)> {
        let start_of_word =
            line[..pos].rfind(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')).map_or(0, |i| i + 1);
        let word = &line[start_of_word..pos];
        if word.starts_with(':') && line[..start_of_word].trim().is_empty() {
            let pairs = COMMANDS
                .iter()
                .map(|(c, _)| *c)
                .chain([":explain", ":opt", ":timing", ":last_compile_dir", ":help_evcxr", ":efmt", ":fmt"])
                .filter(|c| c.starts_with(word))
                .map(|c| Pair { display: c.to_string(), replacement: c.to_string() })
                .collect();
            return Ok((start_of_word, pairs));
        }
        let Some(mut session) = self.session.try_now() else { return Ok((pos, Vec::new())) };
        let Some(found) = session.completions(line, pos) else { return Ok((pos, Vec::new())) };
        let pairs =
            found.completions.into_iter().map(|c| Pair { display: c.code.clone(), replacement: c.code }).collect();
        Ok((found.start_offset, pairs))
    }
}

fn editor(session: SharedSession) -> anyhow::Result<Editor<ReplHelper, rustyline::history::DefaultHistory>> {
    let config = Config::builder()
        .auto_add_history(false)
        .max_history_size(10_000)?
        .history_ignore_dups(true)?
        .completion_type(rustyline::CompletionType::List)
        .build();
    let mut editor = Editor::with_config(config)?;
    editor.set_helper(Some(ReplHelper { session }));
    Ok(editor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interrupted_cell_reports_its_blocked_call_in_words_the_message_already_says() {
        assert!(is_interrupted_error("interrupted; the driver's outstanding tasks were cancelled"));
        assert!(is_interrupted_error("Error: interrupted; the driver's outstanding tasks were cancelled\n"));
        assert!(is_interrupted_error("task `slow` was cancelled"));
        assert!(!is_interrupted_error("task `slow` failed: bad input"));
        assert!(!is_interrupted_error("interrupted"));
    }

    #[test]
    fn the_interrupt_message_counts_tasks_in_words() {
        assert!(interrupted_message(1).contains("cancelled 1 outstanding task;"));
        assert!(interrupted_message(26).contains("cancelled 26 outstanding tasks;"));
        assert!(interrupted_message(0).contains("Ctrl-C again"));
    }
}
