//! Ray's Jobs REST API and state endpoints: the handlers.
//!
//! Paths, methods and JSON are Ray 2.60's (`ray/dashboard/modules/job/
//! job_head.py`), so `ray job submit`, `JobSubmissionClient` and `ray list`
//! work unchanged. Each handler checks its input, asks [`crate::jobs`] or the
//! head, and answers; errors become statuses in [`crate::error`].

use crate::App;
use crate::error::DashboardError;
use crate::jobs::SubmitRequest;
use crate::lifecycle;
use crate::packages;
use crate::state_api::{self, ListOptions, Listed};
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::time::Duration;

/// The Jobs API version Ray 2.60 serves (its `CURRENT_VERSION`).
const API_VERSION: &str = "4";
/// The Ray release whose clients this API answers; they refuse servers older
/// than 2.0 and gate newer options on the version.
const RAY_VERSION: &str = "2.60.0";

/// `GET /api/version`.
pub async fn version(State(app): State<App>) -> Json<Value> {
    Json(json!({
        "version": API_VERSION,
        "ray_version": RAY_VERSION,
        "ray_commit": format!("rayrepl-{}", env!("CARGO_PKG_VERSION")),
        "session_name": &*app.session_name,
        // Not Ray's: lets a driver given this port (`HOST:8265`) find the head.
        "gcs_address": &*app.head_address,
    }))
}

/// `GET /api/packages/{protocol}/{name}`: 200 if stored, 404 if not.
pub async fn has_package(
    State(app): State<App>,
    Path((protocol, name)): Path<(String, String)>,
) -> Result<Response, DashboardError> {
    if app.jobs.packages().exists(&protocol, &name)? {
        Ok(().into_response())
    } else {
        Err(DashboardError::NotFound(format!("Package {protocol}://{name} does not exist")))
    }
}

/// `PUT /api/packages/{protocol}/{name}`: a zipped working directory.
pub async fn put_package(
    State(app): State<App>,
    Path((protocol, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, DashboardError> {
    let too_large = || {
        DashboardError::TooLarge(format!(
            "the package is over the {} MiB limit; leave build output and data out of the working directory \
             (list them in .gitignore)",
            packages::MAX_PACKAGE_BYTES >> 20
        ))
    };
    // Refused on its declared length, before any of it is read.
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > packages::MAX_PACKAGE_BYTES as u64) {
        return Err(too_large());
    }
    let bytes = axum::body::to_bytes(body, packages::MAX_PACKAGE_BYTES).await.map_err(|_| too_large())?;
    let packages = app.jobs.packages().clone();
    tokio::task::spawn_blocking(move || packages.store(&protocol, &name, &bytes))
        .await
        .map_err(DashboardError::join("storing the package"))??;
    Ok(().into_response())
}

/// `POST /api/jobs/`: Ray's `JobSubmitRequest`.
pub async fn submit(State(app): State<App>, body: Bytes) -> Result<Json<Value>, DashboardError> {
    let req: SubmitRequest = serde_json::from_slice(&body)
        .map_err(|e| DashboardError::BadRequest(format!("the job submission is not a valid request: {e}")))?;
    let id = app.jobs.submit(req).await?;
    Ok(Json(json!({ "job_id": id, "submission_id": id })))
}

/// `GET /api/jobs/`: every job, submitted and by hand.
pub async fn list(State(app): State<App>) -> Result<Json<Value>, DashboardError> {
    Ok(Json(Value::Array(state_api::all_jobs(&app.jobs).await?)))
}

/// `GET /api/jobs/{id}`: one job's details.
pub async fn info(State(app): State<App>, Path(id): Path<String>) -> Result<Json<Value>, DashboardError> {
    Ok(Json(state_api::submitted_job(&app.jobs.find(&id).await?)))
}

/// `POST /api/jobs/{id}/stop`.
pub async fn stop(State(app): State<App>, Path(id): Path<String>) -> Result<Json<Value>, DashboardError> {
    Ok(Json(json!({ "stopped": app.jobs.stop(&id).await? })))
}

/// `DELETE /api/jobs/{id}`.
pub async fn delete(State(app): State<App>, Path(id): Path<String>) -> Result<Json<Value>, DashboardError> {
    Ok(Json(json!({ "deleted": app.jobs.delete(&id).await? })))
}

/// `GET /api/jobs/{id}/logs`: the whole log so far.
pub async fn logs(State(app): State<App>, Path(id): Path<String>) -> Result<Json<Value>, DashboardError> {
    let found = app.jobs.find(&id).await?;
    let path = app.jobs.log_path(&found.submission.submission_id);
    let logs = match tokio::fs::read(&path).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        // A job that failed before it started has no log.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(DashboardError::Io { what: format!("cannot read {}", path.display()), source: e }),
    };
    Ok(Json(json!({ "logs": logs })))
}

/// `GET /api/jobs/{id}/logs/tail`: a websocket that sends the log as it grows
/// and closes normally once the job has ended and all of it was sent.
pub async fn tail(
    State(app): State<App>,
    Path(id): Path<String>,
    ws: WebSocketUpgrade,
) -> Result<Response, DashboardError> {
    let found = app.jobs.find(&id).await?;
    let id = found.submission.submission_id;
    Ok(ws.on_upgrade(move |socket| follow(app, id, socket)))
}

/// How often a followed log is read for new output.
const FOLLOW_EVERY: Duration = Duration::from_millis(100);

async fn follow(app: App, id: String, mut socket: WebSocket) {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let path = app.jobs.log_path(&id);
    let status = app.jobs.watch_status(&id);
    let mut offset = 0u64;
    // Bytes of a character split across two reads wait for the rest.
    let mut carry: Vec<u8> = Vec::new();
    loop {
        // Whether it had ended is read before the file, so the last output is sent.
        let ended = status.as_ref().is_none_or(|s| lifecycle::is_terminal(*s.borrow()));
        let mut fresh = Vec::new();
        if let Ok(mut file) = tokio::fs::File::open(&path).await
            && file.seek(std::io::SeekFrom::Start(offset)).await.is_ok()
            && let Ok(n) = file.take(1 << 20).read_to_end(&mut fresh).await
        {
            offset += n as u64;
        }
        if !fresh.is_empty() {
            carry.extend_from_slice(&fresh);
            let whole = match std::str::from_utf8(&carry) {
                Ok(_) => carry.len(),
                Err(e) if e.error_len().is_none() => e.valid_up_to(),
                Err(_) => carry.len(),
            };
            let text = String::from_utf8_lossy(&carry[..whole]).into_owned();
            carry.drain(..whole);
            if !text.is_empty() && socket.send(Message::Text(text.into())).await.is_err() {
                return;
            }
            continue;
        }
        if ended {
            break;
        }
        tokio::time::sleep(FOLLOW_EVERY).await;
    }
    if !carry.is_empty() {
        let _ = socket.send(Message::Text(String::from_utf8_lossy(&carry).into_owned().into())).await;
    }
    // A normal close (1000), and the client's answer awaited: a socket dropped
    // without the closing handshake reads as an abnormal end (1006) to Ray's
    // client, which then reports the job's logs as cut off.
    let normal = axum::extract::ws::CloseFrame { code: axum::extract::ws::close_code::NORMAL, reason: "".into() };
    if socket.send(Message::Close(Some(normal))).await.is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(Ok(message)) = socket.recv().await {
                if matches!(message, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }
}

/// `GET /api/v0/{resource}`: Ray's state API listing.
pub async fn state_list(
    State(app): State<App>,
    Path(resource): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, DashboardError> {
    let what = Listed::from_path(&resource).ok_or_else(|| {
        DashboardError::NotFound(format!(
            "rayrepl's state API lists nodes, actors, tasks, jobs and placement_groups, not {resource:?}"
        ))
    })?;
    let options = ListOptions::parse(query.as_deref().unwrap_or(""))?;
    let rows = state_api::rows(&app.head, &app.jobs, what).await?;
    Ok(Json(state_api::list_reply(rows, &options)))
}
