//! Pushing tasks to a worker: straight to its executor when it takes that (see
//! [`crate::direct`]), else over one gRPC stream.
//!
//! A unary call per task costs an HTTP/2 stream, its headers and a tower service
//! call on both sides, which dominated the task and actor-call paths. A caller
//! instead opens one bidirectional stream to a leased worker (or to an actor, per
//! incarnation) and sends each task as a message; replies come back as tasks
//! finish, each naming its task. A broken stream fails every call still waiting,
//! exactly as a broken unary call would, so retries and restarts are unchanged.

use crate::direct::DirectChannel;
use crate::wire::reply_result;
use crate::{CoreWorker, lock};
use ray_abi::RayError;
use ray_proto::*;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

type ReplySender = tokio::sync::oneshot::Sender<Result<PushTaskReply, tonic::Status>>;

/// How an owner sends calls to one worker (a leased one, or an actor's current
/// incarnation).
#[derive(Clone)]
pub(crate) enum Calls {
    /// Written by the calling thread straight to the worker's executor thread.
    Direct(Arc<DirectChannel>),
    /// Messages on a gRPC stream to the worker's runtime.
    Stream(Arc<CallStream>),
}

impl Calls {
    /// Opens calls to `what`: on its executor's direct socket at `direct_address`
    /// if it has one and takes us, else on a call stream to its service at `address`.
    pub(crate) async fn open(
        cw: &CoreWorker,
        direct_address: &str,
        address: &str,
        what: &str,
    ) -> Result<Self, RayError> {
        if !direct_address.is_empty() {
            match DirectChannel::connect(cw, direct_address).await {
                Ok(channel) => return Ok(Calls::Direct(channel)),
                Err(e) => tracing::debug!("calling {what} on its call stream: {e}"),
            }
        }
        let client =
            cw.peer(address).ok_or_else(|| RayError::Connection { what: what.into(), detail: address.into() })?;
        Ok(Calls::Stream(CallStream::open(client)))
    }

    /// Sends one call; `then` runs as a task on `rt` with its reply, or with the
    /// failure of the connection.
    pub(crate) fn send<F>(
        &self,
        rt: &tokio::runtime::Handle,
        spec: TaskSpec,
        then: impl FnOnce(Result<PushTaskReply, tonic::Status>) -> F + Send + 'static,
    ) where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        match self {
            Calls::Direct(channel) => {
                let rt = rt.clone();
                channel.send(
                    spec,
                    Box::new(move |result| {
                        rt.spawn(then(result));
                    }),
                );
            }
            Calls::Stream(stream) => {
                let stream = stream.clone();
                rt.spawn(async move { then(stream.call(spec).await).await });
            }
        }
    }

    /// Lets go of the worker once the calls sent have been answered, so a pooled
    /// worker does not keep an idle connection per owner it served.
    pub(crate) fn close(&self) {
        match self {
            Calls::Direct(channel) => channel.close(),
            Calls::Stream(stream) => stream.close(),
        }
    }
}

/// The open half of a call stream: where calls go, and the calls waiting for replies.
struct Open {
    requests: tokio::sync::mpsc::UnboundedSender<PushTaskRequest>,
    waiting: HashMap<bytes::Bytes, ReplySender>,
}

/// One caller's stream of calls to one worker.
pub(crate) struct CallStream {
    /// `None` once the stream has ended or been closed.
    open: Mutex<Option<Open>>,
}

impl CallStream {
    /// Opens the stream on `client`'s connection (from within the runtime).
    pub(crate) fn open(mut client: CoreWorkerClient) -> Arc<Self> {
        let (requests, outgoing) = tokio::sync::mpsc::unbounded_channel();
        let stream = Arc::new(CallStream { open: Mutex::new(Some(Open { requests, waiting: HashMap::new() })) });
        let this = stream.clone();
        tokio::spawn(async move {
            let outgoing = tokio_stream::wrappers::UnboundedReceiverStream::new(outgoing);
            let ended = match client.push_task_stream(outgoing).await {
                Err(status) => status,
                Ok(replies) => {
                    let mut replies = replies.into_inner();
                    loop {
                        match replies.message().await {
                            Ok(Some(reply)) => this.answer(reply),
                            Ok(None) => break tonic::Status::unavailable("the worker closed the call stream"),
                            Err(status) => break status,
                        }
                    }
                }
            };
            let waiting = lock(&this.open).take().map(|open| open.waiting).unwrap_or_default();
            for (_, caller) in waiting {
                // A caller that stopped waiting needs no answer.
                let _ = caller.send(Err(ended.clone()));
            }
        });
        stream
    }

    /// Ends the stream from this side: the worker sees it end and closes its half.
    /// Calls still waiting fail.
    fn close(&self) {
        let waiting = lock(&self.open).take().map(|open| open.waiting).unwrap_or_default();
        for (_, caller) in waiting {
            // A caller that stopped waiting needs no answer.
            let _ = caller.send(Err(tonic::Status::unavailable("the call stream was closed by this process")));
        }
    }

    fn answer(&self, reply: PushTaskReply) {
        let caller = lock(&self.open).as_mut().and_then(|open| open.waiting.remove(&reply.task_id));
        if let Some(caller) = caller {
            // A caller that stopped waiting needs no answer.
            let _ = caller.send(reply_result(reply));
        }
    }

    /// Sends one call and waits for its reply.
    pub(crate) async fn call(&self, spec: TaskSpec) -> Result<PushTaskReply, tonic::Status> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        {
            let mut open = lock(&self.open);
            let Some(open) = open.as_mut() else {
                return Err(tonic::Status::unavailable("the call stream to the worker has ended"));
            };
            open.waiting.insert(spec.task_id.clone(), tx);
            // Sent under the lock: if the stream ends now, the caller is still
            // in `waiting` and gets the error.
            if open.requests.send(PushTaskRequest { spec: Some(spec) }).is_err() {
                return Err(tonic::Status::unavailable("the call stream to the worker has ended"));
            }
        }
        rx.await.unwrap_or_else(|_| Err(tonic::Status::unavailable("the call stream to the worker has ended")))
    }
}
