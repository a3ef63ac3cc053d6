//! Ray's log API: each node's log files, listed and read over the dashboard
//! port, as `ray logs cluster --address http://HEAD:8265` and the web
//! dashboard's per-node logs read them.
//!
//! The files stay on their nodes; the node daemons list and read them (the
//! same calls `rayrepl logs` makes), so a node on another machine is read the
//! same way as the head's own.

use crate::App;
use crate::error::DashboardError;
use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use ray_abi::ids::hex;
use ray_proto::{Empty, NodeInfo, ReadLogRequest};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// Lines read unless asked otherwise: Ray's `DEFAULT_LOG_LIMIT`.
const DEFAULT_LINES: u32 = 1000;

/// The query parameters Ray's log client sends.
#[derive(Default)]
struct LogQuery {
    node_id: Option<String>,
    node_ip: Option<String>,
    glob: Option<String>,
    filename: Option<String>,
    lines: Option<u32>,
}

fn parse(query: Option<&str>) -> Result<LogQuery, DashboardError> {
    let mut q = LogQuery::default();
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        let v = v.into_owned();
        match k.as_ref() {
            "node_id" => q.node_id = Some(v),
            "node_ip" => q.node_ip = Some(v),
            "glob" => q.glob = Some(v),
            "filename" => q.filename = Some(v),
            "lines" => {
                // Ray sends -1 for "all of it".
                q.lines = Some(match v.parse::<i64>() {
                    Ok(n) if n < 0 => 0,
                    Ok(n) => u32::try_from(n).unwrap_or(u32::MAX),
                    Err(_) => return Err(DashboardError::BadRequest(format!("lines must be a count, got {v:?}"))),
                })
            }
            _ => {}
        }
    }
    Ok(q)
}

/// Ray's group for a log file, as `ray logs cluster` shows them.
fn group_of(name: &str) -> &'static str {
    if name.starts_with("job-driver-") {
        "driver"
    } else if name.starts_with("worker") && name.ends_with(".out") {
        "worker_out"
    } else if name.starts_with("worker") && name.ends_with(".err") {
        "worker_err"
    } else if name.starts_with("head") {
        "gcs_server"
    } else if name.starts_with("node") {
        "raylet"
    } else {
        "internal"
    }
}

/// The alive node the query names, by id or IP.
async fn node(app: &App, q: &LogQuery) -> Result<NodeInfo, DashboardError> {
    if q.node_id.is_none() && q.node_ip.is_none() {
        return Err(DashboardError::BadRequest(
            "Both node id and node ip are not provided. Please provide at least one of them.".into(),
        ));
    }
    let nodes = app.head.clone().get_cluster_info(Empty {}).await?.into_inner().nodes;
    nodes
        .into_iter()
        .filter(|n| n.is_alive())
        .find(|n| {
            q.node_id.as_ref().is_none_or(|id| hex(&n.node_id) == *id)
                && q.node_ip.as_ref().is_none_or(|ip| n.ip == *ip)
        })
        .ok_or_else(|| {
            DashboardError::NotFound(format!(
                "no alive node with {}; `ray list nodes` shows them",
                q.node_id
                    .as_ref()
                    .map_or_else(|| format!("ip {}", q.node_ip.as_deref().unwrap_or("")), |id| format!("id {id}"))
            ))
        })
}

fn node_client(app: &App, node: &NodeInfo) -> Result<ray_proto::NodeClient, DashboardError> {
    Ok(ray_proto::node_client(ray_proto::lazy_channel(&node.address, &app.token)?))
}

/// `GET /api/v0/logs?node_id=|node_ip=&glob=`: a node's log files by group.
pub async fn list(State(app): State<App>, RawQuery(query): RawQuery) -> Result<Json<Value>, DashboardError> {
    let q = parse(query.as_deref())?;
    let pattern = glob::Pattern::new(q.glob.as_deref().unwrap_or("*"))
        .map_err(|e| DashboardError::BadRequest(format!("glob is not a file name pattern: {e}")))?;
    let node = node(&app, &q).await?;
    let files = node_client(&app, &node)?.list_logs(Empty {}).await?.into_inner().files;
    let mut groups: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for f in files.into_iter().filter(|f| pattern.matches(&f.name)) {
        groups.entry(group_of(&f.name)).or_default().push(f.name);
    }
    Ok(Json(json!({"result": true, "msg": "", "data": {"result": groups}})))
}

/// `GET /api/v0/logs/file?node_id=|node_ip=&filename=&lines=`: the end of one
/// file, as text.
pub async fn file(
    State(app): State<App>,
    Path(media_type): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, DashboardError> {
    if media_type != "file" {
        return Err(DashboardError::BadRequest(format!(
            "logs are read whole ('file'), not as {media_type:?}; follow a job's log with `rayrepl job logs --follow`"
        )));
    }
    let q = parse(query.as_deref())?;
    let name = q
        .filename
        .clone()
        .ok_or_else(|| DashboardError::BadRequest("name the file with filename=; /api/v0/logs lists them".into()))?;
    let node = node(&app, &q).await?;
    let request = ReadLogRequest { name, tail_lines: q.lines.unwrap_or(DEFAULT_LINES) };
    let reply = node_client(&app, &node)?.read_log(request).await.map_err(|s| match s.code() {
        tonic::Code::NotFound | tonic::Code::InvalidArgument => DashboardError::NotFound(s.message().to_string()),
        _ => s.into(),
    })?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], reply.into_inner().data).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_fall_in_rays_groups() {
        assert_eq!(group_of("worker-3f2a.out"), "worker_out");
        assert_eq!(group_of("worker-3f2a.err"), "worker_err");
        assert_eq!(group_of("job-driver-raysubmit_x.log"), "driver");
        assert_eq!(group_of("node.err"), "raylet");
        assert_eq!(group_of("head.err"), "gcs_server");
    }

    #[test]
    fn queries_read_as_rays_client_sends_them() {
        let q = parse(Some("node_ip=127.0.0.1&filename=node.err&lines=-1&timeout=30")).unwrap();
        assert_eq!(
            (q.node_ip.as_deref(), q.filename.as_deref(), q.lines),
            (Some("127.0.0.1"), Some("node.err"), Some(0))
        );
        assert!(parse(Some("lines=many")).is_err());
    }
}
