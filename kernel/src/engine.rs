//! The kernel's evaluation side: the cluster and the session, on a thread of their own.
//!
//! evcxr evaluates a cell synchronously, and its session belongs to one thread,
//! while the sockets must keep answering heartbeats, interrupts and shutdowns
//! during a long cell. So one thread owns the session and takes jobs in order from
//! the shell loop, and publishes a cell's output on IOPub as it happens. What the
//! control channel needs while a cell runs (interrupt, the cluster to stop) is in
//! [`Control`], shared with the server.

use crate::KernelOptions;
use crate::render::{self, Bundle, Ending, Section};
use crate::wire::Publisher;
use jupyter_protocol::{
    ClearOutput, CompleteReply, DisplayData, ErrorOutput, ExecuteResult, ExecutionCount, InspectReply, JupyterMessage,
    Media, Payload, StreamContent, Transient, UpdateDisplayData,
};
use ray_runtime::cluster::{LocalCluster, NodeResources};
use ray_session::protocol::{ChildEvent, Progress};
use ray_session::std_docs::{StdDoc, StdDocs};
use ray_session::{CellObserver, Interrupter, Session, SessionEvent, SessionOptions};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// How long a cell may ignore an interrupt before the next one kills its process.
const KILL_AFTER: Duration = Duration::from_secs(2);
/// How often a running cell's buffered output is published.
const FLUSH_EVERY: Duration = Duration::from_millis(50);
/// The least time between two updates of a progress display.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// Commands the kernel itself answers; evcxr's (`:dep`, `:vars`, ...) also work.
const COMMANDS: &[(&str, &str)] = &[
    (":help", "this help"),
    (":top", "the cluster's nodes, tasks, actors, placement groups, objects and jobs as tables"),
    (":timeline", "the tasks that ran, as bars on a lane per worker"),
    (":vars", "the session's variables and their types (evcxr)"),
    (":dep", "add a crate dependency, e.g. `:dep rand = \"0.9\"` (evcxr)"),
    (":clear", "forget all variables and items (evcxr)"),
    (":timing", "show how long each cell takes (evcxr)"),
];

/// Short help for the `ray` API, for `inspect_request` and `?name`.
const API_DOCS: &[(&str, &str)] = &[
    (
        "ray::init",
        "ray::init() -> Result<RuntimeContext, RayError>\n\nConnects to the cluster. In a notebook the kernel is already connected; the context it returns renders as a card.",
    ),
    (
        "ray::get",
        "ray::get(&ObjectRef<T>) -> Result<T, RayError>\nray::get(&[ObjectRef<T>]) -> Result<Vec<T>, RayError>\n\nBlocks until the objects are ready and returns their values.",
    ),
    (
        "ray::put",
        "ray::put(&T) -> Result<ObjectRef<T>, RayError>\n\nStores a value in the object store and returns a reference to it.",
    ),
    (
        "ray::wait",
        "ray::wait(&refs, num_returns, timeout) -> Result<(ready, not_ready), RayError>\n\nReturns once num_returns of the refs are ready or the timeout passes.",
    ),
    (
        "ray::remote",
        "#[ray::remote]\n\nOn a fn: a remote function, called as f.remote(args) -> ObjectRef.\nOn a struct and its impl: an actor, created with Type::remote(args) -> ActorHandle.",
    ),
    ("ray::kill", "ray::kill(&handle) -> Result<(), RayError>\n\nTerminates an actor."),
    ("ray::get_actor", "ray::get_actor::<T>(name) -> Result<ActorHandle<T>, RayError>\n\nLooks up a named actor."),
    (
        "ray::shutdown",
        "ray::shutdown()\n\nDisconnects from the cluster. In a notebook, ray::init() connects again; refs made before are lost.",
    ),
    (
        "ray::runtime_context",
        "ray::runtime_context() -> Result<RuntimeContext, RayError>\n\nThe cluster this process is connected to.",
    ),
    (
        "ray::ObjectRef",
        "ObjectRef<T>\n\nA reference to a value in the object store: ray::get it, .await it, or pass it to other tasks.",
    ),
    (
        "ray::ActorHandle",
        "ActorHandle<T>\n\nA handle to an actor: call its methods to run them on the actor; clone it to pass it to tasks.",
    ),
    (
        "ray::notebook::display",
        "ray::notebook::display(&value)\n\nShows an ObjectRef, actor handle or context as a separate output of the cell.",
    ),
    (
        "ray::notebook::display_html",
        "ray::notebook::display_html(html)\n\nShows an HTML fragment as an output of the cell.",
    ),
    (
        "ray::notebook::clear_output",
        "ray::notebook::clear_output(wait)\n\nClears the cell's output; with wait, once new output arrives.",
    ),
];

/// Work for the engine thread, each with the channel its answer goes back on.
pub(crate) enum Job {
    Execute(Box<ExecuteJob>, oneshot::Sender<ExecuteOutcome>),
    Complete { code: String, cursor: usize, reply: oneshot::Sender<CompleteReply> },
    Inspect { code: String, cursor: usize, reply: oneshot::Sender<InspectReply> },
}

/// One `execute_request`.
pub(crate) struct ExecuteJob {
    pub code: String,
    pub silent: bool,
    pub count: usize,
    pub parent: JupyterMessage,
}

/// How a cell ended, for the `execute_reply`.
pub(crate) struct ExecuteOutcome {
    pub error: Option<ErrorOutput>,
    pub payload: Vec<Payload>,
    /// The text of the cell's result, kept in the history.
    pub result_text: Option<String>,
}

impl ExecuteOutcome {
    fn ok() -> Self {
        ExecuteOutcome { error: None, payload: Vec::new(), result_text: None }
    }

    fn failed(error: ErrorOutput) -> Self {
        ExecuteOutcome { error: Some(error), payload: Vec::new(), result_text: None }
    }
}

/// What the control channel reaches while the engine thread is busy.
#[derive(Default)]
pub(crate) struct Control {
    state: Mutex<ControlState>,
}

#[derive(Default)]
struct ControlState {
    interrupter: Option<Interrupter>,
    cell_running: bool,
    interrupted_at: Option<Instant>,
    cluster: Option<LocalCluster>,
}

impl Control {
    fn state(&self) -> MutexGuard<'_, ControlState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Interrupts the running cell: SIGINT first, which cancels its tasks and keeps
    /// the variables; if the cell still runs `KILL_AFTER` later, the next interrupt
    /// restarts the evaluation process.
    pub fn interrupt(&self) {
        let mut state = self.state();
        if !state.cell_running {
            return;
        }
        let Some(interrupter) = state.interrupter.clone() else { return };
        match state.interrupted_at {
            Some(at) if at.elapsed() >= KILL_AFTER => interrupter.kill(),
            Some(_) => {}
            None => {
                state.interrupted_at = Some(Instant::now());
                interrupter.interrupt();
            }
        }
    }

    /// Ends the evaluation process and stops the cluster the kernel started.
    pub fn shutdown(&self) {
        let (interrupter, cluster) = {
            let mut state = self.state();
            (state.interrupter.take(), state.cluster.take())
        };
        if let Some(interrupter) = interrupter {
            interrupter.kill();
        }
        if let Some(mut cluster) = cluster {
            cluster.stop();
        }
    }

    fn cell_started(&self) {
        let mut state = self.state();
        state.cell_running = true;
        state.interrupted_at = None;
    }

    /// Marks the cell done and says whether it was interrupted.
    fn cell_finished(&self) -> bool {
        let mut state = self.state();
        state.cell_running = false;
        state.interrupted_at.take().is_some()
    }
}

/// How long the engine must go without a job before it warms rust-analyzer up: a
/// notebook's "run all" sends its cells together, and they run first.
const IDLE_BEFORE_WARM_UP: Duration = Duration::from_millis(300);

/// Starts the engine thread; it starts the cluster and the session at once, so
/// the first cell finds them ready, and then serves jobs until the sender drops.
/// Work that only speeds later requests up waits until no job is waiting.
pub(crate) fn spawn(
    options: KernelOptions,
    publisher: Publisher,
    control: Arc<Control>,
) -> crossbeam_channel::Sender<Job> {
    let (jobs, receiver) = crossbeam_channel::unbounded();
    std::thread::Builder::new()
        .name("kernel-engine".into())
        .spawn(move || {
            let mut engine = Engine::start(options, publisher, control);
            // Jobs first; the first pause of IDLE_BEFORE_WARM_UP warms up, once.
            loop {
                match receiver.recv_timeout(IDLE_BEFORE_WARM_UP) {
                    Ok(job) => engine.serve(job),
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => break engine.warm_up(),
                    Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
                }
            }
            for job in receiver {
                engine.serve(job);
            }
        })
        .expect("spawn the kernel's engine thread");
    jobs
}

struct Engine {
    session: Result<Session, String>,
    address: String,
    token: String,
    /// Said while starting (a first build of the ray crate), shown by the first cell.
    notes: Vec<String>,
    publisher: Publisher,
    control: Arc<Control>,
    /// For `:top`, made when first needed.
    runtime: Option<tokio::runtime::Runtime>,
    /// The docs of std items, for inspect, or why there are none: found and
    /// indexed in the background, off the kernel's start.
    std_docs: Arc<OnceLock<Result<StdDocs, String>>>,
}

impl Engine {
    fn start(options: KernelOptions, publisher: Publisher, control: Arc<Control>) -> Engine {
        let mut notes = Vec::new();
        let cluster = match options.address {
            Some(address) => {
                // Ray's spellings: `auto`, `ray://`, the dashboard's address.
                ray_runtime::session::resolve_head_address(&address, None)
                    .and_then(|head| ray_runtime::session::find_token(None, &head).map(|token| (head, token)))
                    .map_err(|e| format!("cannot attach to the cluster at {address} (RAYREPL_ADDRESS): {e}"))
            }
            None => LocalCluster::start(&NodeResources::default())
                .map(|cluster| {
                    let found = (cluster.head.address.clone(), cluster.token.clone());
                    control.state().cluster = Some(cluster);
                    found
                })
                .map_err(|e| format!("cannot start a local cluster: {e}")),
        };
        let (address, token, mut session) = match cluster {
            Ok((address, token)) => {
                let options = SessionOptions::new(address.clone(), token.clone());
                let session = Session::start(&options, |note| notes.push(note.to_string())).map_err(|e| e.to_string());
                (address, token, session)
            }
            Err(e) => (String::new(), String::new(), Err(e)),
        };
        match &mut session {
            Ok(session) => control.state().interrupter = Some(session.interrupter()),
            Err(e) => tracing::error!("the kernel has no session: {e}"),
        }
        Engine { session, address, token, notes, publisher, control, runtime: None, std_docs: Arc::default() }
    }

    /// Does while nobody waits what the first completion, inspect or `let` would
    /// otherwise wait for: rust-analyzer's view of the `ray` crate's impls, and the
    /// index of std's docs (on a thread of its own).
    fn warm_up(&mut self) {
        let warming = self.std_docs.clone();
        std::thread::spawn(move || {
            if let Ok(docs) = warming.get_or_init(std_docs_of_toolchain) {
                docs.warm_up();
            }
        });
        if let Ok(session) = &mut self.session {
            session.warm_up();
        }
    }

    fn serve(&mut self, job: Job) {
        match job {
            Job::Execute(job, reply) => {
                let outcome = self.execute(&job);
                let _ = reply.send(outcome);
            }
            Job::Complete { code, cursor, reply } => {
                let _ = reply.send(self.complete(&code, cursor));
            }
            Job::Inspect { code, cursor, reply } => {
                let _ = reply.send(self.inspect(&code, cursor));
            }
        }
    }

    fn execute(&mut self, job: &ExecuteJob) -> ExecuteOutcome {
        if !job.silent {
            for note in std::mem::take(&mut self.notes) {
                self.publisher.send(StreamContent::stderr(&format!("{note}\n")), &job.parent);
            }
        }
        let code = job.code.trim();
        if code == ":top" {
            return self.top(&job.parent);
        }
        if code == ":timeline" {
            return self.timeline(&job.parent);
        }
        if code == ":help" {
            return ExecuteOutcome { payload: vec![page(help_text())], ..ExecuteOutcome::ok() };
        }
        if let Some(name) = code.strip_prefix('?').map(str::trim).filter(|n| is_path(n)) {
            let text = self.describe(name).unwrap_or_else(|| format!("Nothing is known about `{name}`."));
            return ExecuteOutcome { payload: vec![page(text)], ..ExecuteOutcome::ok() };
        }
        let session = match &mut self.session {
            Ok(session) => session,
            Err(e) => {
                return ExecuteOutcome::failed(error_output("KernelStartError", e, vec![e.clone()]));
            }
        };
        let mut observer = CellOutput::new(self.publisher.clone(), job.parent.clone(), job.silent);
        for event in session.pending_events() {
            observer.event(event);
        }
        self.control.cell_started();
        // The session logs the cell's phases (`RAYREPL_LOG=ray_session=debug`).
        let result = session.execute_observed(&job.code, FLUSH_EVERY, &mut observer);
        let interrupted = self.control.cell_finished();
        observer.finish(if interrupted { Ending::Interrupted } else { Ending::Finished });
        match result {
            Ok(_) if observer.failed => {
                // evcxr printed the error's message on stderr, which the cell shows.
                let message = observer.last_error_line.take().unwrap_or_else(|| "the cell returned an error".into());
                let ename = if interrupted { "KeyboardInterrupt" } else { "Error" };
                let error = error_output(ename, &message, vec![message.clone()]);
                if !job.silent {
                    self.publisher.send(error.clone(), &job.parent);
                }
                ExecuteOutcome::failed(error)
            }
            Ok(outputs) => {
                let mut data: Bundle = outputs.content_by_mime_type.into_iter().collect();
                if let Some(t) = outputs.timing {
                    data.entry("text/plain".into()).or_default().push_str(&format!("\nTook {}ms", t.as_millis()));
                }
                if data.is_empty() || job.silent {
                    return ExecuteOutcome::ok();
                }
                let result_text = data.get("text/plain").cloned();
                let result = ExecuteResult {
                    execution_count: ExecutionCount::new(job.count),
                    data: media(data),
                    metadata: Default::default(),
                    // Conformance: an execute_result carries an (empty) transient.
                    transient: Some(Transient { display_id: None }),
                };
                self.publisher.send(result, &job.parent);
                ExecuteOutcome { result_text, ..ExecuteOutcome::ok() }
            }
            Err(e) => {
                let (ename, evalue) = error_name(&e, interrupted);
                let traceback = session.describe_error(&e).lines().map(str::to_string).collect();
                let error = error_output(ename, &evalue, traceback);
                if !job.silent {
                    self.publisher.send(error.clone(), &job.parent);
                }
                ExecuteOutcome::failed(error)
            }
        }
    }

    /// The rows of each of `resources`, fetched from the head.
    fn fetch_state(&mut self, resources: &[ray_state::Resource]) -> Result<Vec<ray_state::Rows>, ray_abi::RayError> {
        let runtime = match &self.runtime {
            Some(rt) => rt,
            None => self.runtime.insert(
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| ray_abi::RayError::Internal(e.to_string()))?,
            ),
        };
        runtime.block_on(async {
            let channel = ray_proto::connect(&self.address, &self.token, "the head").await?;
            let mut head = ray_proto::head_client(channel);
            let mut fetched = Vec::new();
            for resource in resources {
                fetched.push(ray_state::fetch(&mut head, &self.token, *resource).await?);
            }
            Ok(fetched)
        })
    }

    fn display(&self, data: Bundle, parent: &JupyterMessage) -> ExecuteOutcome {
        self.publisher.send(DisplayData { data: media(data), metadata: Default::default(), transient: None }, parent);
        ExecuteOutcome::ok()
    }

    /// `:top`: one snapshot of the cluster as tables.
    fn top(&mut self, parent: &JupyterMessage) -> ExecuteOutcome {
        use ray_state::Resource;
        let titles = ["Nodes", "Tasks", "Actors", "Placement groups", "Objects", "Jobs"];
        let resources = [
            Resource::Nodes,
            Resource::Tasks,
            Resource::Actors,
            Resource::PlacementGroups,
            Resource::Objects,
            Resource::Jobs,
        ];
        match self.fetch_state(&resources) {
            Ok(tables) => {
                let sections: Vec<Section<'_>> = titles
                    .iter()
                    .zip(&tables)
                    .map(|(title, (rows, columns))| Section { title, rows, columns })
                    .collect();
                self.display(render::tables(&sections, &ray_state::now_utc()), parent)
            }
            Err(e) => ExecuteOutcome::failed(error_output("RayError", &e.to_string(), vec![e.to_string()])),
        }
    }

    /// `:timeline`: the tasks that ran, on a lane per worker.
    fn timeline(&mut self, parent: &JupyterMessage) -> ExecuteOutcome {
        use ray_state::Resource;
        match self.fetch_state(&[Resource::Tasks, Resource::Nodes]) {
            Ok(fetched) => {
                let [(tasks, _), (nodes, _)] = &fetched[..] else { unreachable!("two resources were fetched") };
                self.display(render::timeline(&ray_state::timeline::chrome_trace(tasks, nodes)), parent)
            }
            Err(e) => ExecuteOutcome::failed(error_output("RayError", &e.to_string(), vec![e.to_string()])),
        }
    }

    fn complete(&mut self, code: &str, cursor: usize) -> CompleteReply {
        let at = byte_offset(code, cursor);
        let word_start =
            code[..at].rfind(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')).map_or(0, |i| i + 1);
        let word = &code[word_start..at];
        let mut reply = CompleteReply { cursor_start: cursor, cursor_end: cursor, ..CompleteReply::default() };
        if word.starts_with(':') && code[..word_start].trim().is_empty() {
            reply.matches = COMMANDS.iter().map(|(c, _)| c.to_string()).filter(|c| c.starts_with(word)).collect();
            reply.cursor_start = char_offset(code, word_start);
            return reply;
        }
        let Ok(session) = &mut self.session else { return reply };
        let Some(found) = session.completions(code, at) else { return reply };
        reply.cursor_start = char_offset(code, found.start_offset);
        reply.cursor_end = char_offset(code, found.end_offset);
        let types: Vec<serde_json::Value> = found
            .completions
            .iter()
            .map(|c| {
                serde_json::json!({
                    "start": reply.cursor_start, "end": reply.cursor_end, "text": c.code, "type": c.kind,
                })
            })
            .collect();
        reply.metadata.insert("_jupyter_types_experimental".into(), types.into());
        reply.matches = found.completions.into_iter().map(|c| c.code).collect();
        reply
    }

    fn inspect(&mut self, code: &str, cursor: usize) -> InspectReply {
        let at = byte_offset(code, cursor);
        let is_name = |c: char| c.is_alphanumeric() || c == '_' || c == ':' || c == '!';
        let start = code[..at].rfind(|c: char| !is_name(c)).map_or(0, |i| i + 1);
        let end = code[at..].find(|c: char| !is_name(c)).map_or(code.len(), |i| at + i);
        let word = code[start..end].trim_matches(':');
        // `v.len`: a method of a variable's type.
        let receiver = code[..start].strip_suffix('.').map(|before| {
            let from = before.rfind(|c: char| !(c.is_alphanumeric() || c == '_')).map_or(0, |i| i + 1);
            &before[from..]
        });
        let data = match receiver.and_then(|r| self.method_of_variable(r, word)) {
            Some(doc) => Some(doc),
            None => self.describe(word).map(|text| [("text/plain".to_string(), text)].into()),
        };
        match data {
            Some(data) => InspectReply { found: true, data: media(data), ..InspectReply::default() },
            None => InspectReply::default(),
        }
    }

    /// The std docs, waiting for the background search if it is still going.
    fn std_docs(&self) -> &Result<StdDocs, String> {
        self.std_docs.get_or_init(std_docs_of_toolchain)
    }

    /// The docs of `method` on the type of the session's variable `variable`.
    fn method_of_variable(&self, variable: &str, method: &str) -> Option<Bundle> {
        let session = self.session.as_ref().ok()?;
        let (_, ty) = session.variables().into_iter().find(|(n, _)| n == variable)?;
        // `&mut std::collections::HashMap<K, V>` is looked up as `HashMap`.
        let ty = ty.trim_start_matches('&').trim_start_matches("mut ").trim();
        let base = ty.split('<').next()?.rsplit("::").next()?;
        let doc = self.std_docs().as_ref().ok()?.lookup(&format!("{base}::{method}"))?;
        Some(std_doc_media(&doc))
    }

    /// What is known about `name`: a variable's type, the `ray` API, or a command.
    fn describe(&self, name: &str) -> Option<String> {
        if let Ok(session) = &self.session
            && let Some((_, ty)) = session.variables().into_iter().find(|(n, _)| n == name)
        {
            return Some(format!("{name}: {ty}"));
        }
        let qualified = if name.starts_with("ray::") { name.to_string() } else { format!("ray::{name}") };
        if let Some((_, doc)) =
            API_DOCS.iter().find(|(path, _)| *path == qualified || path.ends_with(&format!("::{name}")))
        {
            return Some(doc.to_string());
        }
        if let Some((c, what)) = COMMANDS.iter().find(|(c, _)| *c == name) {
            return Some(format!("{c}: {what}"));
        }
        match self.std_docs() {
            Ok(docs) => docs.lookup(name).map(|doc| doc.to_text()),
            // A std-looking name, and no sources to read its docs from: say how.
            Err(why) if name.starts_with(char::is_uppercase) || name.starts_with("std::") => Some(why.clone()),
            Err(_) => None,
        }
    }
}

fn std_docs_of_toolchain() -> Result<StdDocs, String> {
    StdDocs::for_toolchain().map_err(|e| e.to_string())
}

/// A std item's docs, as plain text and as Markdown.
fn std_doc_media(doc: &StdDoc) -> Bundle {
    [("text/plain".to_string(), doc.to_text()), ("text/markdown".to_string(), doc.to_markdown())].into()
}

/// A running cell's output, published as it comes: prints batched into stream
/// messages, worker output, rich displays, and a live progress display.
struct CellOutput {
    publisher: Publisher,
    parent: JupyterMessage,
    silent: bool,
    stdout: String,
    stderr: String,
    progress: Option<ProgressDisplay>,
    /// The cell's own last stderr line: the message of an error returned with `?`.
    last_error_line: Option<String>,
    /// The cell returned an error with `?`.
    failed: bool,
}

struct ProgressDisplay {
    id: String,
    last: Progress,
    shown: Instant,
    stale: bool,
}

impl CellOutput {
    fn new(publisher: Publisher, parent: JupyterMessage, silent: bool) -> Self {
        CellOutput {
            publisher,
            parent,
            silent,
            stdout: String::new(),
            stderr: String::new(),
            progress: None,
            last_error_line: None,
            failed: false,
        }
    }

    fn flush_streams(&mut self) {
        if !self.stdout.is_empty() {
            self.publisher.send(StreamContent::stdout(&std::mem::take(&mut self.stdout)), &self.parent);
        }
        if !self.stderr.is_empty() {
            self.publisher.send(StreamContent::stderr(&std::mem::take(&mut self.stderr)), &self.parent);
        }
    }

    fn show_progress(&mut self, progress: Progress) {
        match &mut self.progress {
            None => {
                let id = format!("rayrepl-progress-{}", uuid::Uuid::new_v4());
                self.flush_streams();
                let data = render::progress(&progress, Ending::Running);
                self.publisher.send(
                    DisplayData {
                        data: media(data),
                        metadata: Default::default(),
                        transient: Some(Transient { display_id: Some(id.clone()) }),
                    },
                    &self.parent,
                );
                self.progress = Some(ProgressDisplay { id, last: progress, shown: Instant::now(), stale: false });
            }
            Some(display) => {
                display.last = progress;
                display.stale = true;
                if display.shown.elapsed() >= PROGRESS_EVERY {
                    self.update_progress(Ending::Running);
                }
            }
        }
    }

    fn update_progress(&mut self, ending: Ending) {
        let Some(display) = &mut self.progress else { return };
        let data = render::progress(&display.last, ending);
        self.publisher.send(UpdateDisplayData::new(media(data), &display.id), &self.parent);
        display.shown = Instant::now();
        display.stale = false;
    }

    /// Publishes what is still buffered, and the progress display's final state,
    /// which is what a saved notebook keeps.
    fn finish(&mut self, ending: Ending) {
        self.flush_streams();
        if self.progress.is_some() {
            self.update_progress(ending);
        }
    }
}

impl CellObserver for CellOutput {
    fn event(&mut self, event: SessionEvent) {
        match &event {
            SessionEvent::Stderr(line) if !line.trim().is_empty() => self.last_error_line = Some(line.clone()),
            SessionEvent::Driver(ChildEvent::CellFailed) => self.failed = true,
            _ => {}
        }
        if self.silent {
            return;
        }
        match event {
            SessionEvent::Stdout(line) | SessionEvent::Driver(ChildEvent::WorkerStdout { line }) => {
                self.stdout.push_str(&line);
                self.stdout.push('\n');
            }
            SessionEvent::Stderr(line) | SessionEvent::Driver(ChildEvent::WorkerStderr { line }) => {
                self.stderr.push_str(&line);
                self.stderr.push('\n');
            }
            SessionEvent::Driver(ChildEvent::Progress(p)) => self.show_progress(p),
            SessionEvent::Driver(ChildEvent::Interrupted { cancelled }) => self.stderr.push_str(&format!(
                "Interrupted: cancelled {cancelled} outstanding task(s); the notebook's variables are kept.\n"
            )),
            SessionEvent::Driver(ChildEvent::Display { data }) => {
                self.flush_streams();
                self.publisher.send(DisplayData::new(media(data)), &self.parent);
            }
            SessionEvent::Driver(ChildEvent::ClearOutput { wait }) => {
                self.flush_streams();
                self.publisher.send(ClearOutput { wait }, &self.parent);
            }
            SessionEvent::Driver(ChildEvent::DriverFailed { message }) => {
                self.stderr.push_str(&format!("The driver could not attach to the cluster: {message}\n"));
            }
            SessionEvent::Driver(
                ChildEvent::DriverReady { .. } | ChildEvent::CellFailed | ChildEvent::OutputFlushed { .. },
            ) => {}
        }
    }

    fn tick(&mut self) {
        if self.silent {
            return;
        }
        self.flush_streams();
        if self.progress.as_ref().is_some_and(|p| p.stale && p.shown.elapsed() >= PROGRESS_EVERY) {
            self.update_progress(Ending::Running);
        }
    }
}

/// A MIME bundle as jupyter-protocol's `Media` (JSON types such as
/// `application/json` are parsed, the rest are strings).
fn media(data: Bundle) -> Media {
    let map: serde_json::Map<String, serde_json::Value> = data
        .into_iter()
        .map(|(mime, content)| {
            let value = if mime.ends_with("json") {
                serde_json::from_str(&content).unwrap_or(serde_json::Value::String(content))
            } else {
                serde_json::Value::String(content)
            };
            (mime, value)
        })
        .collect();
    serde_json::from_value(serde_json::Value::Object(map)).unwrap_or_default()
}

fn page(text: String) -> Payload {
    Payload::Page { data: media([("text/plain".to_string(), text)].into()), start: 0 }
}

fn help_text() -> String {
    let mut text = String::from(
        "Write Rust; mark functions, structs and impls #[ray::remote] to run them as tasks and actors.\n\
         `use ray::prelude::*` is in scope. Top-level `.await` works. Interrupt cancels the cell's tasks\n\
         and keeps its variables. `?name` shows what is known about a name.\n\n",
    );
    for (name, what) in COMMANDS {
        text.push_str(&format!("  {name:<8} {what}\n"));
    }
    text
}

fn error_output(ename: &str, evalue: &str, traceback: Vec<String>) -> ErrorOutput {
    ErrorOutput { ename: ename.to_string(), evalue: evalue.to_string(), traceback }
}

/// The error's kind and one-line summary, as `ename` and `evalue`.
fn error_name(e: &ray_session::evcxr::Error, interrupted: bool) -> (&'static str, String) {
    use ray_session::evcxr::Error;
    match e {
        Error::CompilationErrors(errors) => (
            "CompilationError",
            errors
                .iter()
                .map(|e| e.message())
                .find(|m| !m.is_empty())
                .unwrap_or_else(|| "the cell did not compile".into()),
        ),
        Error::SubprocessTerminated(message) if interrupted => ("KeyboardInterrupt", message.clone()),
        Error::SubprocessTerminated(message) => ("EvaluationProcessRestarted", message.clone()),
        Error::TypeRedefinedVariablesLost(names) => {
            ("VariablesLost", format!("redefining a type lost the variables {}", names.join(", ")))
        }
        other => {
            let message = other.to_string();
            let name = if message.contains("panic") { "Panic" } else { "EvaluationError" };
            (name, message.lines().next().unwrap_or_default().to_string())
        }
    }
}

fn is_path(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_alphanumeric() || c == '_' || c == ':')
}

/// Jupyter counts cursor positions in Unicode code points; Rust slices by byte.
fn byte_offset(code: &str, chars: usize) -> usize {
    code.char_indices().nth(chars).map_or(code.len(), |(i, _)| i)
}

fn char_offset(code: &str, bytes: usize) -> usize {
    code[..bytes.min(code.len())].chars().count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_convert_between_code_points_and_bytes() {
        let code = "let é = 1; é";
        assert_eq!(byte_offset(code, 5), 6);
        assert_eq!(char_offset(code, 6), 5);
        assert_eq!(byte_offset(code, 100), code.len());
    }

    #[test]
    fn media_keeps_strings_and_parses_json() {
        let m = media([("text/plain".into(), "1".into()), ("application/json".into(), "{\"a\":1}".into())].into());
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(v["text/plain"], "1");
        assert_eq!(v["application/json"]["a"], 1);
    }
}
