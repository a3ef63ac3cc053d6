//! The CoreWorker gRPC service every driver and worker runs: owners push tasks to
//! workers through it, and borrowers ask owners for objects and report when they
//! hold or release them.

use crate::refs::Effects;
use crate::{CoreWorker, lock};
use ray_abi::{ObjectId, RayError};
use ray_proto::core_worker_server::{CoreWorker as CoreWorkerApi, CoreWorkerServer};
use ray_proto::*;
use std::time::Duration;
use tonic::{Request, Response, Status};

struct Service(CoreWorker);

#[tonic::async_trait]
impl CoreWorkerApi for Service {
    async fn push_task(&self, req: Request<PushTaskRequest>) -> Result<Response<PushTaskReply>, Status> {
        let spec = req.into_inner().spec.ok_or_else(|| Status::invalid_argument("missing task spec"))?;
        self.0.execute(spec).await.map(Response::new).map_err(|e| to_status(&e))
    }

    type PushTaskStreamStream = tokio_stream::wrappers::UnboundedReceiverStream<Result<PushTaskReply, Status>>;

    async fn push_task_stream(
        &self,
        req: Request<tonic::Streaming<PushTaskRequest>>,
    ) -> Result<Response<Self::PushTaskStreamStream>, Status> {
        let mut calls = req.into_inner();
        let (replies, stream) = tokio::sync::mpsc::unbounded_channel();
        let cw = self.0.clone();
        tokio::spawn(async move {
            while let Ok(Some(call)) = calls.message().await {
                let Some(spec) = call.spec else { continue };
                let (cw, replies) = (cw.clone(), replies.clone());
                // Calls run concurrently here; an actor's own ordering (sequence
                // numbers, max_concurrency) decides when each starts.
                tokio::spawn(async move {
                    let task_id = spec.task_id.clone();
                    let reply = match cw.execute(spec).await {
                        Ok(reply) => reply,
                        Err(e) => PushTaskReply { task_id, error: e.to_bytes().into(), ..PushTaskReply::default() },
                    };
                    // A caller whose stream closed has failed its calls already.
                    let _ = replies.send(Ok(reply));
                });
            }
        });
        Ok(Response::new(tokio_stream::wrappers::UnboundedReceiverStream::new(stream)))
    }

    async fn get_object(&self, req: Request<GetObjectRequest>) -> Result<Response<GetObjectReply>, Status> {
        let r = req.into_inner();
        let id = parse_object_id(&r.object_id)?;
        if !r.lost_at.is_empty() {
            let why = RayError::Connection {
                what: format!("node {}", r.lost_at),
                detail: "a borrower could not reach it".into(),
            };
            // On failure the object is now failed, which the reply below reports.
            let _ = self.0.object_lost(&id, &r.lost_at, &why);
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let leftover = lock(&self.0.0.refs).on_settled(
            &id,
            Box::new(move || {
                // The request is gone if its caller hung up.
                let _ = tx.send(());
            }),
        );
        if let Some(cb) = leftover {
            cb();
        }
        let settled = if r.timeout_ms < 0 {
            rx.await.is_ok()
        } else {
            matches!(tokio::time::timeout(Duration::from_millis(r.timeout_ms as u64), rx).await, Ok(Ok(())))
        };
        if !settled {
            return Ok(Response::new(GetObjectReply { location: None, timed_out: true }));
        }
        let location = match lock(&self.0.0.refs).get(&id) {
            Some(e) => crate::object_location(&id, &self.0.0.address, &e.state),
            None => crate::state_to_location(&crate::refs::State::Failed(RayError::ObjectLost {
                object: id.to_string(),
                detail: "its owner no longer holds it (all references were dropped)".into(),
            })),
        };
        Ok(Response::new(GetObjectReply { location, timed_out: false }))
    }

    async fn add_borrower(&self, req: Request<BorrowerRequest>) -> Result<Response<Empty>, Status> {
        let r = req.into_inner();
        let mut refs = lock(&self.0.0.refs);
        for b in &r.object_ids {
            refs.add_borrower(&parse_object_id(b)?, &r.borrower_address);
        }
        Ok(Response::new(Empty {}))
    }

    async fn remove_borrower(&self, req: Request<BorrowerRequest>) -> Result<Response<Empty>, Status> {
        let r = req.into_inner();
        let mut fx = Effects::default();
        {
            let mut refs = lock(&self.0.0.refs);
            for b in &r.object_ids {
                refs.remove_borrower(&parse_object_id(b)?, &r.borrower_address, &mut fx);
            }
        }
        self.0.apply(fx);
        Ok(Response::new(Empty {}))
    }

    async fn add_object_copy(&self, req: Request<ObjectCopyRequest>) -> Result<Response<ObjectCopyReply>, Status> {
        let r = req.into_inner();
        let held = lock(&self.0.0.refs).add_copy(&parse_object_id(&r.object_id)?, r.node_address);
        Ok(Response::new(ObjectCopyReply { held }))
    }

    type GetExecutableStream = tokio_stream::Iter<std::vec::IntoIter<Result<ArtifactChunk, Status>>>;

    async fn get_executable(&self, _: Request<Empty>) -> Result<Response<Self::GetExecutableStream>, Status> {
        let chunks = crate::artifacts::executable_chunks(&self.0).await.map_err(|e| to_status(&e))?;
        Ok(Response::new(tokio_stream::iter(chunks.into_iter().map(Ok).collect::<Vec<_>>())))
    }

    async fn cancel_task(&self, req: Request<CancelRequest>) -> Result<Response<Empty>, Status> {
        let r = req.into_inner();
        let tid = parse_task_id(&r.task_id)?;
        self.0.cancel(&ObjectId::new(tid, 1), r.force).map_err(|e| to_status(&e))?;
        Ok(Response::new(Empty {}))
    }

    async fn exit(&self, _: Request<Empty>) -> Result<Response<ExitReply>, Status> {
        // Ray's rule: a worker's objects die with it, so while anyone holds one the
        // worker stays.
        let owned = lock(&self.0.0.refs).owned_count();
        if owned > 0 {
            let reason = format!("it owns {owned} object(s) still in use");
            return Ok(Response::new(ExitReply { exiting: false, reason }));
        }
        let _ = std::io::Write::flush(&mut std::io::stdout());
        tokio::spawn(async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            std::process::exit(0);
        });
        Ok(Response::new(ExitReply { exiting: true, reason: String::new() }))
    }
}

/// Serves the CoreWorker service on `listener` in the background.
pub(crate) fn serve(cw: CoreWorker, listener: tokio::net::TcpListener) {
    let token = cw.0.conn.token.clone();
    let server = ray_proto::authed_server!(CoreWorkerServer, Service(cw), &token);
    tokio::spawn(async move {
        let mut grpc = match ray_proto::server() {
            Ok(grpc) => grpc,
            Err(e) => return tracing::error!("core worker service cannot start: {e}"),
        };
        let result = grpc.add_service(server).serve_with_incoming(ray_proto::incoming(listener)).await;
        if let Err(e) = result {
            tracing::error!("core worker service stopped: {e}");
        }
    });
}
