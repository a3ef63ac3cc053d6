//! Direct task pushes and actor calls, without a runtime on either end of the wire.
//!
//! A task or synchronous call through the call stream wakes six threads in turn:
//! the caller's thread hands the call to its runtime, which writes it; the worker's
//! runtime reads it and hands it to the executor thread, which hands the reply back
//! to its runtime; the caller's runtime reads that and wakes the caller. On a small
//! machine each wake-up costs more than the work, so a round trip was bound by them.
//!
//! A worker's executor thread therefore also takes calls on a plain TCP socket
//! that it polls itself, between calls: it runs tasks and an ordered actor's
//! methods there, and starts an async actor's on its event loop and replies when
//! they complete. An owner writes each call from whatever thread makes it, and its
//! runtime reads the replies: three wake-ups a round trip instead of six. Messages
//! are the call stream's (`PushTaskRequest`, `PushTaskReply`), each framed by a
//! little-endian `u32` length; a connection opens with the cluster token
//! (`DirectHello`). Tasks run in the order they arrive (a lease carries one at a
//! time). An actor keeps each owner's submission order with the same gates as the
//! call stream, so a caller may fall back to the stream mid-incarnation without
//! losing its place. A worker that becomes a threaded actor stops polling: its
//! executor threads share one job queue, and calls come on the stream only.

use crate::hosted::{CallState, DirectCall, GAP_TIMEOUT, HostedActor, Job, JobWaker};
use crate::wire::{frame, next_message, reply_result};
use crate::{CoreWorker, lock};
use bytes::BytesMut;
use ray_abi::{HostTable, RayError};
use ray_proto::*;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// How long a connection may take to present its token.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest greeting accepted: a peer must not make the actor buffer much
/// before it has shown the token.
const HELLO_LIMIT: usize = 64 * 1024;

/// What a caller does with its call's reply (or the connection's end).
pub(crate) type OnReply = Box<dyn FnOnce(Result<PushTaskReply, tonic::Status>) + Send>;

/// A caller's connection to one actor incarnation's executor.
pub(crate) struct DirectChannel {
    stream: tokio::net::TcpStream,
    rt: tokio::runtime::Handle,
    /// Bytes the socket would not take yet. While there are any, a runtime task is
    /// writing them, and later calls queue behind them.
    backlog: Mutex<Vec<u8>>,
    /// Calls waiting for replies, by task id; `None` once the connection has ended.
    waiting: Mutex<Option<HashMap<bytes::Bytes, OnReply>>>,
    /// Tells the reply reader to let go of the connection.
    closing: tokio::sync::Notify,
}

fn ended(why: impl std::fmt::Display) -> tonic::Status {
    tonic::Status::unavailable(format!("the direct connection to the worker ended: {why}"))
}

impl DirectChannel {
    /// Connects to a worker's executor at `address` and presents the token.
    pub(crate) async fn connect(cw: &CoreWorker, address: &str) -> Result<Arc<Self>, RayError> {
        let failed = |detail: String| RayError::Connection { what: format!("the executor at {address}"), detail };
        let hello = DirectHello { token: cw.0.conn.token.clone(), caller_address: cw.0.address.clone() };
        let opened = tokio::time::timeout(HELLO_TIMEOUT, async {
            let mut stream = tokio::net::TcpStream::connect(address).await?;
            stream.set_nodelay(true)?;
            tokio::io::AsyncWriteExt::write_all(&mut stream, &frame(&hello)).await?;
            let mut buf = BytesMut::with_capacity(64 * 1024);
            loop {
                match next_message::<DirectHelloReply>(&mut buf, HELLO_LIMIT) {
                    Ok(Some(reply)) => return Ok((stream, buf, reply)),
                    Ok(None) => {}
                    Err(e) => return Err(std::io::Error::other(e.to_string())),
                }
                if tokio::io::AsyncReadExt::read_buf(&mut stream, &mut buf).await? == 0 {
                    return Err(std::io::Error::from(ErrorKind::UnexpectedEof));
                }
            }
        })
        .await;
        let (stream, leftover, reply) = match opened {
            Err(_) => return Err(failed("it did not answer within 5 s".into())),
            Ok(Err(e)) => return Err(failed(e.to_string())),
            Ok(Ok(opened)) => opened,
        };
        if !reply.error.is_empty() {
            return Err(failed(format!("it refused this caller: {}", reply.error)));
        }
        let channel = Arc::new(DirectChannel {
            stream,
            rt: cw.0.rt.clone(),
            backlog: Mutex::default(),
            waiting: Mutex::new(Some(HashMap::new())),
            closing: tokio::sync::Notify::new(),
        });
        tokio::spawn(channel.clone().read_replies(leftover));
        Ok(channel)
    }

    /// Sends one call from the current thread; `on_reply` runs on the runtime when
    /// its reply arrives, or at once if the connection has ended.
    pub(crate) fn send(self: &Arc<Self>, spec: TaskSpec, on_reply: OnReply) {
        let task_id = spec.task_id.clone();
        let message = frame(&PushTaskRequest { spec: Some(spec) });
        {
            let mut waiting = lock(&self.waiting);
            let Some(waiting) = waiting.as_mut() else {
                drop(waiting);
                on_reply(Err(ended("it was already closed")));
                return;
            };
            // Registered before the call leaves: its reply may come back at once.
            waiting.insert(task_id, on_reply);
        }
        let mut backlog = lock(&self.backlog);
        let mut rest = &message[..];
        if backlog.is_empty() {
            match self.stream.try_write(rest) {
                Ok(n) => rest = &rest[n..],
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => {
                    drop(backlog);
                    self.fail_all(ended(e));
                    return;
                }
            }
        }
        if rest.is_empty() {
            return;
        }
        if backlog.is_empty() {
            self.rt.spawn(self.clone().flush());
        }
        backlog.extend_from_slice(rest);
    }

    /// Writes the backlog as the socket takes it.
    async fn flush(self: Arc<Self>) {
        loop {
            if let Err(e) = self.stream.writable().await {
                return self.fail_all(ended(e));
            }
            let mut backlog = lock(&self.backlog);
            match self.stream.try_write(&backlog) {
                Ok(n) => {
                    backlog.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
                Err(e) => {
                    drop(backlog);
                    return self.fail_all(ended(e));
                }
            }
            if backlog.is_empty() {
                return;
            }
        }
    }

    /// Ends the connection once the calls sent have been answered or failed: the
    /// reader lets go of it, and the socket closes when the last holder drops it.
    pub(crate) fn close(&self) {
        self.closing.notify_one();
    }

    async fn read_replies(self: Arc<Self>, mut buf: BytesMut) {
        let why = loop {
            match next_message::<PushTaskReply>(&mut buf, MAX_MESSAGE_BYTES) {
                Ok(Some(reply)) => {
                    self.answer(reply);
                    continue;
                }
                Ok(None) => {}
                Err(e) => break ended(e),
            }
            tokio::select! {
                readable = self.stream.readable() => if let Err(e) = readable {
                    break ended(e);
                },
                () = self.closing.notified() => break ended("this process closed it"),
            }
            buf.reserve(64 * 1024);
            match self.stream.try_read_buf(&mut buf) {
                Ok(0) => break ended("the worker closed it"),
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => break ended(e),
            }
        };
        self.fail_all(why);
    }

    fn answer(&self, reply: PushTaskReply) {
        let on_reply = lock(&self.waiting).as_mut().and_then(|w| w.remove(&reply.task_id));
        if let Some(on_reply) = on_reply {
            on_reply(reply_result(reply));
        }
    }

    /// Fails every call still waiting; later sends fail at once.
    fn fail_all(&self, why: tonic::Status) {
        let waiting = lock(&self.waiting).take().unwrap_or_default();
        for (_, on_reply) in waiting {
            on_reply(Err(why.clone()));
        }
    }
}

/// A worker's listener for direct calls, bound before it registers with its node
/// so its leases (and its actor's record) can name it.
pub(crate) struct DirectServer {
    poll: mio::Poll,
    listener: mio::net::TcpListener,
    waker: JobWaker,
    address: String,
}

const LISTENER: mio::Token = mio::Token(0);
const WAKER: mio::Token = mio::Token(1);
const FIRST_CONNECTION: usize = 2;
/// How often an async actor at `max_concurrency` looks again for a free slot that
/// a call on the stream gave back (its own calls wake it as they complete).
const PERMIT_RETRY: Duration = Duration::from_millis(10);

/// One caller's connection, as the executor sees it.
struct Connection {
    stream: mio::net::TcpStream,
    inbound: BytesMut,
    outbound: Vec<u8>,
    /// The caller's address once it has presented the token.
    caller: Option<String>,
    opened: Instant,
    /// Waiting for the socket to take `outbound`.
    writable_interest: bool,
}

/// A call that has arrived and not started.
struct Arrived {
    connection: mio::Token,
    spec: TaskSpec,
}

/// One owner's calls not started yet, by sequence number, and since when the first
/// has waited for its turn.
#[derive(Default)]
struct Queue {
    calls: BTreeMap<u64, Arrived>,
    since: Option<Instant>,
}

/// An async method running on the actor's event loop.
struct Running {
    connection: mio::Token,
    state: Arc<CallState>,
    spec: Box<TaskSpec>,
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// What the executor thread keeps between polls.
struct Serving<'a> {
    cw: &'a CoreWorker,
    table: &'static HostTable,
    /// The actor this worker hosts, once its constructor has run.
    actor: Option<Arc<HostedActor>>,
    jobs: &'a mpsc::Receiver<Job>,
    connections: HashMap<mio::Token, Connection>,
    /// Tasks not started yet, in arrival order.
    tasks: VecDeque<Arrived>,
    /// Actor calls not started yet, by owner.
    queues: HashMap<String, Queue>,
    running: Vec<Running>,
}

impl DirectServer {
    /// Listens on `ip`, port chosen by the system.
    pub(crate) fn bind(ip: &str) -> std::io::Result<(Self, JobWaker)> {
        let addr = std::net::SocketAddr::new(ip.parse().map_err(std::io::Error::other)?, 0);
        ray_proto::gate::raise_fd_limit();
        let mut listener = mio::net::TcpListener::bind(addr)?;
        let poll = mio::Poll::new()?;
        poll.registry().register(&mut listener, LISTENER, mio::Interest::READABLE)?;
        let waker = Arc::new(mio::Waker::new(poll.registry(), WAKER)?);
        let address = format!("{ip}:{}", listener.local_addr()?.port());
        Ok((DirectServer { poll, listener, waker: waker.clone(), address }, waker))
    }

    pub(crate) fn address(&self) -> &str {
        &self.address
    }

    /// Serves direct calls and the job channel on this thread, until the worker
    /// becomes an actor that takes calls on the stream only, or polling fails.
    pub(crate) fn run(mut self, cw: &CoreWorker, table: &'static HostTable, jobs: &mpsc::Receiver<Job>) {
        let mut serving = Serving {
            cw,
            table,
            actor: None,
            jobs,
            connections: HashMap::new(),
            tasks: VecDeque::new(),
            queues: HashMap::new(),
            running: Vec::new(),
        };
        let mut events = mio::Events::with_capacity(64);
        let mut next_token = FIRST_CONNECTION;
        let mut scratch = vec![0u8; 64 * 1024];
        let mut arrived = Vec::new();
        loop {
            if !serving.run_jobs() {
                return;
            }
            serving.reply_to_completed(self.poll.registry());
            if let Err(e) = self.poll.poll(&mut events, serving.timeout())
                && e.kind() != ErrorKind::Interrupted
            {
                tracing::error!("the actor stopped taking direct calls: {e}");
                return;
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(&mut serving.connections, &mut next_token),
                    WAKER => {}
                    token => {
                        let Some(conn) = serving.connections.get_mut(&token) else { continue };
                        let open = conn.receive(&mut scratch, cw, token, &mut arrived)
                            && conn.send_pending(self.poll.registry(), token);
                        if !open {
                            serving.connections.remove(&token);
                        }
                        arrived.drain(..).for_each(|call| serving.file(call));
                    }
                }
            }
            // A connection that never presented the token is dropped.
            serving.connections.retain(|_, c| c.caller.is_some() || c.opened.elapsed() < HELLO_TIMEOUT);
            if !serving.start_ready(self.poll.registry(), &self.waker) {
                return;
            }
        }
    }

    fn accept(&self, connections: &mut HashMap<mio::Token, Connection>, next_token: &mut usize) {
        loop {
            match self.listener.accept() {
                Ok((mut stream, _)) => {
                    let token = mio::Token(*next_token);
                    *next_token += 1;
                    let _ = stream.set_nodelay(true);
                    make_room(connections);
                    if self.poll.registry().register(&mut stream, token, mio::Interest::READABLE).is_ok() {
                        connections.insert(
                            token,
                            Connection {
                                stream,
                                inbound: BytesMut::new(),
                                outbound: Vec::new(),
                                caller: None,
                                opened: Instant::now(),
                                writable_interest: false,
                            },
                        );
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::warn!("accepting a direct call connection failed: {e}");
                    return;
                }
            }
        }
    }
}

/// Closes the oldest connection that has not presented the token if
/// [`ray_proto::gate::MAX_WAITING`] wait, so a flood of idle connections cannot
/// use up the worker's descriptors (the gRPC listeners do the same).
fn make_room(connections: &mut HashMap<mio::Token, Connection>) {
    use ray_proto::gate::MAX_WAITING;
    if connections.len() < MAX_WAITING || connections.values().filter(|c| c.caller.is_none()).count() < MAX_WAITING {
        return;
    }
    let oldest = connections.iter().filter(|(_, c)| c.caller.is_none()).min_by_key(|(_, c)| c.opened).map(|(t, _)| *t);
    if let Some(oldest) = oldest {
        connections.remove(&oldest);
    }
}

impl Serving<'_> {
    /// Runs the jobs that came on the call stream; `false` once one made this
    /// worker an actor whose calls cannot come here.
    fn run_jobs(&mut self) -> bool {
        while let Ok(job) = self.jobs.try_recv() {
            self.cw.run_job(self.table, job);
            if self.actor.is_none() {
                // An actor's constructor comes on the stream, from the head.
                self.actor = self.cw.hosted_actor();
                if self.actor.as_ref().is_some_and(|a| !a.takes_direct_calls()) {
                    return false;
                }
            }
        }
        true
    }

    /// Files a call that has arrived: an actor call in its owner's queue, a task
    /// (or a call this worker cannot take, which fails when run) in arrival order.
    fn file(&mut self, arrived: Arrived) {
        match (&self.actor, &arrived.spec.actor_task) {
            (Some(_), Some(call)) => {
                let seq = call.seq;
                let queue = self.queues.entry(arrived.spec.owner_address.clone()).or_default();
                queue.calls.insert(seq, arrived);
            }
            _ => self.tasks.push_back(arrived),
        }
    }

    /// How long the next poll may sleep: until a caller's missing call is given up
    /// on, a connection's token is overdue, or an async actor may find a free slot.
    fn timeout(&self) -> Option<Duration> {
        let now = Instant::now();
        let deadlines = self.queues.values().filter_map(|q| q.since).map(|since| since + GAP_TIMEOUT);
        let hellos = self.connections.values().filter(|c| c.caller.is_none()).map(|c| c.opened + HELLO_TIMEOUT);
        let mut timeout = deadlines.chain(hellos).map(|d| d.saturating_duration_since(now)).min();
        if self.actor.as_ref().is_some_and(|a| a.is_async) && !self.queues.is_empty() {
            timeout = Some(timeout.map_or(PERMIT_RETRY, |t| t.min(PERMIT_RETRY)));
        }
        timeout
    }

    /// Starts every call whose turn has come: tasks in arrival order, an ordered
    /// actor's calls in each owner's order, one at a time, and an async actor's
    /// while it has free slots. `false` once a job made this worker an actor whose
    /// calls cannot come here.
    fn start_ready(&mut self, registry: &mio::Registry, waker: &JobWaker) -> bool {
        while let Some(task) = self.tasks.pop_front() {
            self.start(registry, waker, task, None);
        }
        let Some(actor) = self.actor.clone() else { return true };
        let owners: Vec<String> = self.queues.keys().cloned().collect();
        for owner in owners {
            while let Some(queue) = self.queues.get_mut(&owner) {
                let Some((&seq, _)) = queue.calls.first_key_value() else {
                    self.queues.remove(&owner);
                    break;
                };
                let permit = if actor.is_async {
                    match actor.permits.clone().try_acquire_owned() {
                        Ok(permit) => Some(permit),
                        Err(_) => return true,
                    }
                } else {
                    let overdue = queue.since.is_some_and(|s| s.elapsed() >= GAP_TIMEOUT);
                    if !actor.turn_has_come(&owner, seq) && !overdue {
                        queue.since.get_or_insert_with(Instant::now);
                        break;
                    }
                    None
                };
                let call = queue.calls.remove(&seq).expect("first key");
                queue.since = None;
                if actor.ordered {
                    // A call stream's job for an earlier turn is queued before that
                    // turn passes (see `execute`): run it first.
                    if !self.run_jobs() {
                        return false;
                    }
                    actor.advance(&owner, seq);
                }
                self.start(registry, waker, call, permit);
            }
        }
        true
    }

    /// Runs a task or method, or starts an async method and replies once it has
    /// completed.
    fn start(
        &mut self,
        registry: &mio::Registry,
        waker: &JobWaker,
        call: Arrived,
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
    ) {
        match self.cw.run_direct_call(self.table, call.spec) {
            DirectCall::Running { state, spec } => {
                state.wake_on_completion(waker.clone());
                // It may have completed before the waker was set.
                if state.has_result() {
                    let reply = self.cw.finish_direct_call(&state, &spec);
                    self.reply(registry, call.connection, &reply);
                } else {
                    self.running.push(Running { connection: call.connection, state, spec, _permit: permit });
                }
            }
            DirectCall::Replied(reply) => self.reply(registry, call.connection, &reply),
        }
    }

    /// Replies to the async calls that have completed.
    fn reply_to_completed(&mut self, registry: &mio::Registry) {
        let completed: Vec<Running> = self.running.extract_if(.., |r| r.state.has_result()).collect();
        for call in completed {
            let reply = self.cw.finish_direct_call(&call.state, &call.spec);
            self.reply(registry, call.connection, &reply);
        }
    }

    fn reply(&mut self, registry: &mio::Registry, connection: mio::Token, reply: &PushTaskReply) {
        // A caller that has gone gets no reply; its calls ran, as on a broken stream.
        if let Some(conn) = self.connections.get_mut(&connection) {
            conn.outbound.extend_from_slice(&frame(reply));
            if !conn.send_pending(registry, connection) {
                self.connections.remove(&connection);
            }
        }
        self.cw.exit_if_requested();
    }
}

impl Connection {
    /// Reads what has arrived and adds the calls in it to `arrived`; `false` once
    /// the connection is over.
    fn receive(&mut self, scratch: &mut [u8], cw: &CoreWorker, token: mio::Token, arrived: &mut Vec<Arrived>) -> bool {
        loop {
            match self.stream.read(scratch) {
                Ok(0) => return false,
                Ok(n) => self.inbound.extend_from_slice(&scratch[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        loop {
            let Some(caller) = self.caller.as_deref() else {
                match next_message::<DirectHello>(&mut self.inbound, HELLO_LIMIT) {
                    Ok(Some(hello)) => {
                        let expected = cw.0.conn.token.as_bytes();
                        let refusal = token_rejection(expected, Some(hello.token.as_bytes()));
                        let error = refusal.unwrap_or_default().to_string();
                        self.outbound.extend_from_slice(&frame(&DirectHelloReply { error }));
                        if let Some(why) = refusal {
                            tracing::warn!("refused a direct call connection from {}: {why}", hello.caller_address);
                            let _ = self.stream.write_all(&self.outbound);
                            return false;
                        }
                        self.caller = Some(hello.caller_address);
                        continue;
                    }
                    Ok(None) => return true,
                    Err(_) => return false,
                }
            };
            match next_message::<PushTaskRequest>(&mut self.inbound, MAX_MESSAGE_BYTES) {
                Ok(Some(PushTaskRequest { spec: Some(spec) })) => arrived.push(Arrived { connection: token, spec }),
                Ok(Some(PushTaskRequest { spec: None })) => {}
                Ok(None) => return true,
                Err(e) => {
                    tracing::warn!("closing a direct call connection from {caller}: {e}");
                    return false;
                }
            }
        }
    }

    /// Writes what the socket takes now and asks to hear when it takes more;
    /// `false` once the connection is over.
    fn send_pending(&mut self, registry: &mio::Registry, token: mio::Token) -> bool {
        while !self.outbound.is_empty() {
            match self.stream.write(&self.outbound) {
                Ok(0) => return false,
                Ok(n) => {
                    self.outbound.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        let want_writable = !self.outbound.is_empty();
        if want_writable != self.writable_interest {
            let interest =
                if want_writable { mio::Interest::READABLE | mio::Interest::WRITABLE } else { mio::Interest::READABLE };
            if registry.reregister(&mut self.stream, token, interest).is_err() {
                return false;
            }
            self.writable_interest = want_writable;
        }
        true
    }
}
