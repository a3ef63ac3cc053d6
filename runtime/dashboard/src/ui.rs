//! The web dashboard: lets a person watch the cluster work from a browser,
//! without a terminal on the head's machine or a tool installed.
//!
//! The page is plain HTML, CSS and JavaScript embedded in the binary (clusters
//! are often offline, so nothing comes from a CDN, and there is no build step).
//! It stays current through one server-sent event stream: once a second the
//! server reads the head as the state API does and sends a snapshot of nodes,
//! jobs, recent tasks, actors and placement groups, but only when something
//! changed. Every row list is capped so a busy cluster cannot make the stream
//! grow without bound. The rest comes from Ray's own endpoints on this port:
//! job logs (followed through the Jobs API's websocket) and each node's log
//! files (Ray's log API, `/api/v0/logs`).

use crate::App;
use crate::error::DashboardError;
use crate::state_api::{self, Listed};
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use futures_util::stream::Stream;
use ray_abi::ids::hex;
use ray_proto::{Empty, ListTasksReply, ListTasksRequest, NodeInfo, TaskEvent, groups, resources_to_map};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

const INDEX_HTML: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const APP_CSS: &str = include_str!("../assets/app.css");

/// How often the live stream looks for changes.
const EVERY: Duration = Duration::from_secs(1);
/// The most recent task attempts a snapshot carries (the summary counts all).
const MAX_TASKS: usize = 500;
/// The most actors, jobs and placement groups a snapshot carries.
const MAX_ROWS: usize = 500;
/// Error messages are cut to this many characters in task rows; the state API
/// has them whole.
const MAX_MESSAGE_CHARS: usize = 400;

/// The dashboard's routes.
pub fn routes() -> Router<App> {
    Router::new()
        .route("/", get(index))
        .route("/assets/app.js", get(|| asset("text/javascript; charset=utf-8", APP_JS)))
        .route("/assets/app.css", get(|| asset("text/css; charset=utf-8", APP_CSS)))
        .route("/api/dashboard/snapshot", get(snapshot_once))
        .route("/api/dashboard/events", get(events))
}

async fn index() -> impl IntoResponse {
    asset("text/html; charset=utf-8", INDEX_HTML).await
}

async fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body)
}

/// `GET /api/dashboard/snapshot`: what one live update carries.
async fn snapshot_once(State(app): State<App>) -> Result<Json<Value>, DashboardError> {
    let mut body = snapshot(&app).await?;
    body["now_ms"] = json!(ray_proto::now_ms());
    Ok(Json(body))
}

/// `GET /api/dashboard/events`: a `snapshot` event whenever the cluster
/// changed (checked every second), or a `problem` event while the head does not
/// answer. Each event's data is `{"now_ms": <server clock>, "data": {...}}`; the
/// page uses the clock to place running tasks on its timeline.
async fn events(State(app): State<App>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let stream =
        futures_util::stream::unfold((app, String::new(), Duration::ZERO), |(app, last, mut wait)| async move {
            loop {
                tokio::time::sleep(wait).await;
                wait = EVERY;
                let (kind, body) = match snapshot(&app).await {
                    Ok(v) => ("snapshot", v.to_string()),
                    Err(e) => ("problem", json!({"message": e.to_string()}).to_string()),
                };
                if body != last {
                    let data = format!("{{\"now_ms\":{},\"data\":{body}}}", ray_proto::now_ms());
                    return Some((Ok(Event::default().event(kind).data(data)), (app, body, EVERY)));
                }
            }
        });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// Everything the page shows, read from the head in one go.
async fn snapshot(app: &App) -> Result<Value, DashboardError> {
    let (mut h1, mut h2) = (app.head.clone(), app.head.clone());
    let (cluster, tasks, actors, groups, jobs) = tokio::try_join!(
        async { Ok::<_, DashboardError>(h1.get_cluster_info(Empty {}).await?.into_inner()) },
        async {
            let newest = ListTasksRequest { limit: MAX_TASKS as u32, newest: true, counts: true };
            Ok(h2.list_tasks(newest).await?.into_inner())
        },
        state_api::rows(&app.head, &app.jobs, Listed::Actors),
        state_api::rows(&app.head, &app.jobs, Listed::PlacementGroups),
        state_api::all_jobs(&app.jobs),
    )?;
    let host = ray_proto::host_id();
    let memory = host_memory();
    let nodes: Vec<Value> =
        cluster.nodes.iter().map(|n| node(n, (n.host_id == host).then_some(memory).flatten())).collect();
    Ok(json!({
        "session_name": &*app.session_name,
        "version": cluster.version,
        "nodes": nodes,
        "jobs": last(jobs, MAX_ROWS),
        "actors": last(actors, MAX_ROWS),
        "placement_groups": last(groups, MAX_ROWS),
        "tasks": tasks_summary(&tasks),
    }))
}

/// The newest `most` rows (the head lists oldest first).
fn last(mut rows: Vec<Value>, most: usize) -> Vec<Value> {
    rows.drain(..rows.len().saturating_sub(most));
    rows
}

/// A node with what it has left: the state API's node rows carry only totals.
/// Placement-group resources are left out, as `rayrepl status` does.
fn node(n: &NodeInfo, host_memory: Option<(u64, u64)>) -> Value {
    json!({
        "node_id": hex(&n.node_id),
        "ip": n.ip,
        "hostname": n.hostname,
        "is_head": n.is_head,
        "state": n.state().as_str_name(),
        "pid": n.pid,
        "start_time_ms": n.start_time_ms,
        "num_workers": n.num_workers,
        "resources_total": groups::plain(&resources_to_map(&n.total)),
        "resources_available": groups::plain(&resources_to_map(&n.available)),
        "object_store_used": n.object_store_used,
        "object_store_capacity": n.object_store_capacity,
        // The machine's memory is known only for nodes on the head's machine.
        "host_memory": host_memory.map(|(total, available)| json!({"total": total, "available": available})),
    })
}

/// Steps the available memory is rounded down to, so an idle machine's drift
/// does not count as a change worth a snapshot.
const MEMORY_STEP: u64 = 128 << 20;

/// This machine's memory, total and available, in bytes.
fn host_memory() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
    };
    Some((field("MemTotal:")?, field("MemAvailable:")? / MEMORY_STEP * MEMORY_STEP))
}

/// Counts of every task attempt the head keeps (counted by the head), and the
/// newest attempts whole.
fn tasks_summary(listed: &ListTasksReply) -> Value {
    let mut by_state: BTreeMap<&str, u64> = BTreeMap::new();
    let mut by_name: BTreeMap<&str, BTreeMap<&str, u64>> = BTreeMap::new();
    for c in &listed.counts {
        let state = c.state().as_str_name();
        *by_state.entry(state).or_default() += c.count;
        *by_name.entry(c.name.as_str()).or_default().entry(state).or_default() += c.count;
    }
    let tasks = &listed.tasks;
    let recent: Vec<Value> = tasks[tasks.len().saturating_sub(MAX_TASKS)..].iter().map(task).collect();
    json!({"total": listed.total, "by_state": by_state, "by_name": by_name, "recent": recent})
}

/// A task attempt with only what the page shows, to keep the stream small.
fn task(t: &TaskEvent) -> Value {
    let mut row = Map::new();
    let full = state_api::task(t);
    for key in [
        "task_id",
        "attempt_number",
        "name",
        "state",
        "job_id",
        "type",
        "actor_id",
        "node_id",
        "worker_pid",
        "error_type",
        "creation_time_ms",
        "start_time_ms",
        "end_time_ms",
    ] {
        row.insert(key.into(), full[key].clone());
    }
    let message: String = t.error_message.chars().take(MAX_MESSAGE_CHARS).collect();
    row.insert("error_message".into(), if message.is_empty() { Value::Null } else { json!(message) });
    Value::Object(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_keeps_the_newest_rows_and_counts_every_task() {
        assert_eq!(last((0..10).map(|i| json!(i)).collect(), 3), vec![json!(7), json!(8), json!(9)]);
        let tasks: Vec<TaskEvent> = (0..MAX_TASKS)
            .map(|i| TaskEvent {
                name: if i % 2 == 0 { "even".into() } else { "odd".into() },
                state: ray_proto::TaskState::Finished as i32,
                error_message: "x".repeat(MAX_MESSAGE_CHARS * 2),
                ..Default::default()
            })
            .collect();
        // As the head answers: the newest records whole, and counts of all of them.
        let finished = ray_proto::TaskState::Finished as i32;
        let counts = ["even", "odd"]
            .map(|name| ray_proto::TaskCount { name: name.into(), state: finished, count: (MAX_TASKS as u64 + 20) / 2 })
            .to_vec();
        let summary = tasks_summary(&ListTasksReply { tasks, counts, total: MAX_TASKS as u64 + 20 });
        assert_eq!(summary["total"], MAX_TASKS + 20);
        assert_eq!(summary["recent"].as_array().map(Vec::len), Some(MAX_TASKS));
        assert_eq!(summary["by_name"]["even"]["FINISHED"], (MAX_TASKS + 20) / 2);
        assert_eq!(summary["recent"][0]["error_message"].as_str().map(str::len), Some(MAX_MESSAGE_CHARS));
    }

    #[test]
    fn memory_is_read_from_proc() {
        if let Some((total, available)) = host_memory() {
            assert!(total > 0 && available <= total);
        }
    }
}
