//! The Jupyter sockets and the loops that serve them.
//!
//! Shell requests are answered in order, each between a `busy` and an `idle`
//! status, with evaluation handed to the engine thread. Control requests
//! (interrupt, shutdown) are served by their own task, so they work while a cell
//! runs. IOPub is an XPUB socket whose task also greets each new subscriber with
//! `iopub_welcome` (JEP 65), so a client knows when it will see output. The
//! heartbeat echoes on its own task.

use crate::engine::{self, Control, ExecuteJob, ExecuteOutcome, Job};
use crate::history::{self, History};
use crate::wire::{Publisher, Request, read_request};
use crate::{KernelError, KernelOptions};
use jupyter_protocol::{
    CodeMirrorMode, CommInfoReply, ConnectionInfo, ExecuteInput, ExecuteReply, ExecuteRequest, ExecutionCount,
    HelpLink, HistoryReply, InterruptReply, IoPubWelcome, IsCompleteReply, IsCompleteReplyStatus, JupyterMessage,
    JupyterMessageContent, KernelInfoReply, LanguageInfo, ReplyError, ReplyStatus, ShutdownReply, Status,
};
use jupyter_zmq_client::{
    KernelIoPubXPubConnection, RouterRecvConnection, RouterSendConnection, SubscriptionEvent,
    create_kernel_control_connection, create_kernel_heartbeat_connection, create_kernel_iopub_xpub_connection,
    create_kernel_shell_connection, create_kernel_stdin_connection,
};
use ray_session::Completeness;
use serde_json::Value;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// How long to look for queued execute requests to abort after a cell fails.
const ABORT_WINDOW: Duration = Duration::from_millis(5);

/// Binds the sockets and serves until a shutdown request or SIGTERM.
pub(crate) fn serve(info: ConnectionInfo, options: KernelOptions) -> Result<(), KernelError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("kernel-io")
        .enable_all()
        .build()
        .map_err(|e| KernelError::Runtime(e.to_string()))?;
    let control = Arc::new(Control::default());
    let result = runtime.block_on(run(info, options, control.clone()));
    // Whatever ended the loop, the cluster this kernel started goes with it.
    control.shutdown();
    runtime.shutdown_timeout(Duration::from_millis(200));
    result
}

async fn run(info: ConnectionInfo, options: KernelOptions, control: Arc<Control>) -> Result<(), KernelError> {
    let session_id = uuid::Uuid::new_v4().to_string();
    let mut heartbeat = create_kernel_heartbeat_connection(&info).await?;
    let (shell_reply, shell_requests) = create_kernel_shell_connection(&info, &session_id).await?.split();
    let mut control_socket = create_kernel_control_connection(&info, &session_id).await?;
    // Bound so clients can connect; the kernel never asks for input.
    let _stdin = create_kernel_stdin_connection(&info, &session_id).await?;
    let iopub = create_kernel_iopub_xpub_connection(&info, &session_id).await?;

    let (outgoing, queued) = mpsc::unbounded_channel();
    let publisher = Publisher::new(outgoing);
    tokio::spawn(publish(iopub, queued));
    tokio::spawn(async move { while heartbeat.single_heartbeat().await.is_ok() {} });
    publisher.broadcast(Status::starting());

    let jobs = engine::spawn(options, publisher.clone(), control.clone());
    let mut shell = Shell {
        reply: shell_reply,
        requests: shell_requests,
        queued: VecDeque::new(),
        publisher,
        jobs,
        execution_count: 0,
        history: History::open(history::default_path().as_deref()),
    };
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| KernelError::Runtime(e.to_string()))?;
    tokio::select! {
        result = shell.serve() => result,
        result = serve_control(&mut control_socket, &control) => result,
        _ = terminate.recv() => Ok(()),
    }
}

/// Sends everything published, and welcomes each new subscriber.
async fn publish(mut iopub: KernelIoPubXPubConnection, mut queued: mpsc::UnboundedReceiver<JupyterMessage>) {
    loop {
        tokio::select! {
            message = queued.recv() => {
                let Some(message) = message else { break };
                if let Err(e) = iopub.send(message).await {
                    tracing::warn!("cannot publish on IOPub: {e}");
                }
            }
            event = iopub.recv_subscription() => match event {
                Ok(SubscriptionEvent::Subscribe(topic)) => {
                    let _ = iopub.send(JupyterMessage::new(IoPubWelcome::new(topic), None)).await;
                }
                Ok(SubscriptionEvent::Unsubscribe(_)) => {}
                Err(e) => tracing::debug!("IOPub subscription message: {e}"),
            },
        }
    }
}

/// Serves the control channel until a shutdown request.
async fn serve_control(
    socket: &mut jupyter_zmq_client::KernelControlConnection,
    control: &Control,
) -> Result<(), KernelError> {
    loop {
        let request = match read_request(socket).await {
            Ok(request) => request,
            Err(e) => {
                tracing::warn!("unreadable control message: {e}");
                continue;
            }
        };
        let reply: JupyterMessageContent = match &request.message.content {
            JupyterMessageContent::KernelInfoRequest(_) => kernel_info().into(),
            JupyterMessageContent::InterruptRequest(_) => {
                control.interrupt();
                InterruptReply::new().into()
            }
            JupyterMessageContent::ShutdownRequest(shutdown) => {
                // Stop the cluster before replying: a client that restarts the kernel
                // next must not find the old one still running.
                control.shutdown();
                let reply = ShutdownReply { restart: shutdown.restart, status: ReplyStatus::Ok, error: None };
                socket.send(reply.as_child_of(&request.message)).await?;
                return Ok(());
            }
            _ => {
                tracing::debug!("ignoring control message {}", request.msg_type());
                continue;
            }
        };
        socket.send(JupyterMessage::new(reply, Some(&request.message))).await?;
    }
}

struct Shell {
    reply: RouterSendConnection,
    requests: RouterRecvConnection,
    /// Requests read ahead while looking for executes to abort.
    queued: VecDeque<Request>,
    publisher: Publisher,
    jobs: crossbeam_channel::Sender<Job>,
    execution_count: usize,
    history: History,
}

impl Shell {
    async fn serve(&mut self) -> Result<(), KernelError> {
        loop {
            let request = match self.queued.pop_front() {
                Some(request) => request,
                None => match read_request(&mut self.requests).await {
                    Ok(request) => request,
                    Err(e) => {
                        tracing::warn!("unreadable shell message: {e}");
                        continue;
                    }
                },
            };
            self.publisher.send(Status::busy(), &request.message);
            let reply = self.handle(&request).await;
            if let Some(reply) = reply {
                self.reply.send(JupyterMessage::new(reply, Some(&request.message))).await?;
            }
            self.publisher.send(Status::idle(), &request.message);
        }
    }

    async fn handle(&mut self, request: &Request) -> Option<JupyterMessageContent> {
        let parent = &request.message;
        Some(match &parent.content {
            JupyterMessageContent::KernelInfoRequest(_) => kernel_info().into(),
            JupyterMessageContent::ExecuteRequest(execute) => self.execute(execute, parent).await.into(),
            JupyterMessageContent::IsCompleteRequest(r) => is_complete(&r.code).into(),
            JupyterMessageContent::CompleteRequest(r) => {
                let (reply, answer) = oneshot::channel();
                self.ask(Job::Complete { code: r.code.clone(), cursor: r.cursor_pos, reply }, answer).await?.into()
            }
            JupyterMessageContent::InspectRequest(r) => {
                let (reply, answer) = oneshot::channel();
                self.ask(Job::Inspect { code: r.code.clone(), cursor: r.cursor_pos, reply }, answer).await?.into()
            }
            JupyterMessageContent::CommInfoRequest(_) => {
                CommInfoReply { status: ReplyStatus::Ok, comms: Default::default(), error: None }.into()
            }
            _ if request.msg_type() == "history_request" => self.history(&request.content).into(),
            _ => {
                tracing::debug!("ignoring shell message {}", request.msg_type());
                return None;
            }
        })
    }

    async fn ask<T>(&self, job: Job, answer: oneshot::Receiver<T>) -> Option<T> {
        self.jobs.send(job).ok()?;
        answer.await.ok()
    }

    async fn execute(&mut self, request: &ExecuteRequest, parent: &JupyterMessage) -> ExecuteReply {
        let counted = request.store_history && !request.silent;
        if counted {
            self.execution_count += 1;
        }
        let count = self.execution_count;
        if !request.silent {
            self.publisher
                .send(ExecuteInput { code: request.code.clone(), execution_count: ExecutionCount::new(count) }, parent);
        }
        let job = ExecuteJob { code: request.code.clone(), silent: request.silent, count, parent: parent.clone() };
        let (reply, answer) = oneshot::channel();
        let outcome = self.ask(Job::Execute(Box::new(job), reply), answer).await.unwrap_or_else(|| ExecuteOutcome {
            error: Some(jupyter_protocol::ErrorOutput {
                ename: "KernelError".into(),
                evalue: "the kernel's evaluation thread stopped; restart the kernel".into(),
                traceback: vec![],
            }),
            payload: vec![],
            result_text: None,
        });
        if counted {
            self.history.record(count, &request.code, outcome.result_text.clone());
        }
        let failed = outcome.error.is_some();
        let reply = ExecuteReply {
            status: if failed { ReplyStatus::Error } else { ReplyStatus::Ok },
            execution_count: ExecutionCount::new(count),
            payload: outcome.payload,
            // Conformance: an empty map, not null.
            user_expressions: Some(Default::default()),
            error: outcome
                .error
                .map(|e| Box::new(ReplyError { ename: e.ename, evalue: e.evalue, traceback: e.traceback })),
        };
        if failed && request.stop_on_error {
            self.abort_queued().await;
        }
        reply
    }

    /// After a failed cell, the cells already sent after it do not run (as in
    /// ipykernel): "Run all" stops at the first error.
    async fn abort_queued(&mut self) {
        while let Ok(Ok(request)) = tokio::time::timeout(ABORT_WINDOW, read_request(&mut self.requests)).await {
            self.queued.push_back(request);
        }
        let (executes, others): (VecDeque<_>, VecDeque<_>) =
            std::mem::take(&mut self.queued).into_iter().partition(|r| r.msg_type() == "execute_request");
        self.queued = others;
        for request in executes {
            self.publisher.send(Status::busy(), &request.message);
            let aborted = ExecuteReply {
                status: ReplyStatus::Aborted,
                execution_count: ExecutionCount::new(self.execution_count),
                user_expressions: Some(Default::default()),
                ..ExecuteReply::default()
            };
            let _ = self.reply.send(JupyterMessage::new(aborted, Some(&request.message))).await;
            self.publisher.send(Status::idle(), &request.message);
        }
    }

    /// Reads the request's JSON itself: jupyter_client leaves out fields that
    /// jupyter-protocol requires (`n` and `unique` for a search).
    fn history(&self, content: &Value) -> HistoryReply {
        let text = |key: &str, default: &str| content.get(key).and_then(Value::as_str).unwrap_or(default).to_string();
        let number = |key: &str| content.get(key).and_then(Value::as_i64).unwrap_or(0);
        let output = content.get("output").and_then(Value::as_bool).unwrap_or(false);
        let unique = content.get("unique").and_then(Value::as_bool).unwrap_or(false);
        let count = |key: &str| number(key).max(0) as usize;
        let history = match text("hist_access_type", "range").as_str() {
            "tail" => self.history.tail(count("n"), output),
            "search" => self.history.search(&text("pattern", "*"), count("n"), unique, output),
            _ => self.history.range(number("session"), count("start"), count("stop"), output),
        };
        HistoryReply::new(history)
    }
}

fn is_complete(code: &str) -> IsCompleteReply {
    match ray_session::completeness(code) {
        Completeness::Complete => IsCompleteReply::complete(),
        Completeness::Incomplete => IsCompleteReply::new(IsCompleteReplyStatus::Incomplete, "    ".into()),
        Completeness::Invalid => IsCompleteReply::invalid(),
    }
}

fn kernel_info() -> KernelInfoReply {
    let rust = ray_core::ABI_KEY.split_whitespace().nth(1).unwrap_or_default().to_string();
    KernelInfoReply {
        status: ReplyStatus::Ok,
        protocol_version: "5.3".into(),
        implementation: "rayrepl".into(),
        implementation_version: env!("CARGO_PKG_VERSION").into(),
        language_info: LanguageInfo {
            name: "rust".into(),
            version: rust.clone(),
            mimetype: Some("text/rust".into()),
            file_extension: Some(".rs".into()),
            pygments_lexer: Some("rust".into()),
            codemirror_mode: Some(CodeMirrorMode::Simple("rust".into())),
            nbconvert_exporter: Some("rust".into()),
        },
        banner: format!(
            "rayrepl {} (Rust {rust}): Ray's core in Rust. #[ray::remote] makes tasks and actors; :help for commands.",
            env!("CARGO_PKG_VERSION")
        ),
        help_links: vec![HelpLink {
            text: "Ray Core walkthrough".into(),
            url: "https://docs.ray.io/en/latest/ray-core/walkthrough.html".into(),
        }],
        debugger: false,
        error: None,
    }
}
