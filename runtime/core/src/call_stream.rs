//! Pushing tasks to a worker over one gRPC stream.
//!
//! A unary call per task costs an HTTP/2 stream, its headers and a tower service
//! call on both sides, which dominated the task and actor-call paths. A caller
//! instead opens one bidirectional stream to a leased worker (or to an actor, per
//! incarnation) and sends each task as a message; replies come back as tasks
//! finish, each naming its task. A broken stream fails every call still waiting,
//! exactly as a broken unary call would, so retries and restarts are unchanged.

use crate::lock;
use ray_abi::RayError;
use ray_proto::*;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

type ReplySender = tokio::sync::oneshot::Sender<Result<PushTaskReply, tonic::Status>>;

/// One caller's stream of calls to one worker.
pub(crate) struct CallStream {
    requests: tokio::sync::mpsc::UnboundedSender<PushTaskRequest>,
    /// Calls waiting for replies, by task id; `None` once the stream has ended.
    waiting: Mutex<Option<HashMap<bytes::Bytes, ReplySender>>>,
}

impl CallStream {
    /// Opens the stream on `client`'s connection (from within the runtime).
    pub(crate) fn open(mut client: CoreWorkerClient) -> Arc<Self> {
        let (requests, outgoing) = tokio::sync::mpsc::unbounded_channel();
        let stream = Arc::new(CallStream { requests, waiting: Mutex::new(Some(HashMap::new())) });
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
            let waiting = lock(&this.waiting).take().unwrap_or_default();
            for (_, caller) in waiting {
                let _ = caller.send(Err(ended.clone()));
            }
        });
        stream
    }

    fn answer(&self, reply: PushTaskReply) {
        let caller = lock(&self.waiting).as_mut().and_then(|w| w.remove(&reply.task_id));
        if let Some(caller) = caller {
            let _ = caller.send(reply_result(reply));
        }
    }

    /// Sends one call and waits for its reply.
    pub(crate) async fn call(&self, spec: TaskSpec) -> Result<PushTaskReply, tonic::Status> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        {
            let mut waiting = lock(&self.waiting);
            let Some(w) = waiting.as_mut() else {
                return Err(tonic::Status::unavailable("the call stream to the worker has ended"));
            };
            w.insert(spec.task_id.clone(), tx);
            // Sent under the lock: if the stream ends now, the caller is still
            // in `waiting` and gets the error.
            if self.requests.send(PushTaskRequest { spec: Some(spec) }).is_err() {
                return Err(tonic::Status::unavailable("the call stream to the worker has ended"));
            }
        }
        rx.await.unwrap_or_else(|_| Err(tonic::Status::unavailable("the call stream to the worker has ended")))
    }
}

/// A reply as its caller sees it: the worker's own failure to run the call is an
/// error, as a failed unary call would be.
pub(crate) fn reply_result(mut reply: PushTaskReply) -> Result<PushTaskReply, tonic::Status> {
    if reply.error.is_empty() {
        Ok(reply)
    } else {
        Err(to_status(&RayError::from_bytes(&std::mem::take(&mut reply.error))))
    }
}
