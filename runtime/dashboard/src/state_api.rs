//! Ray's state API over HTTP: what `ray list nodes --address http://HEAD:8265`
//! and the web dashboard read.
//!
//! Ray's state CLI asks `GET /api/v0/<resource>` with its options as query
//! parameters (`limit`, `detail`, and `filter_keys`/`filter_predicates`/
//! `filter_values` repeated) and builds each row into a dataclass that refuses
//! unknown fields. So rows here carry exactly Ray's field names and types,
//! filled from the head's tables as far as rayrepl keeps them, and the reply
//! wraps them in Ray's envelope (`{result, msg, data: {result: {...}}}`).

use crate::error::DashboardError;
use crate::jobs::{Found, Jobs};
use ray_abi::ids::hex;
use ray_proto::{
    ActorInfo, Empty, HeadClient, JobInfo, JobSubmission, ListTasksRequest, NodeInfo, PlacementGroupInfo, TaskEvent,
    resources_to_map,
};
use serde_json::{Value, json};

/// How many rows a listing returns unless asked otherwise, as Ray's state API.
pub const DEFAULT_LIMIT: usize = 100;

/// A job id as `rayrepl list jobs` shows it.
pub fn job_hex(job_id: u32) -> String {
    ray_abi::ids::JobId(job_id).to_string()
}

/// A hex id, or null for an empty one.
fn id_or_null(bytes: &[u8]) -> Value {
    if bytes.is_empty() { Value::Null } else { json!(hex(bytes)) }
}

/// A time in ms, or null while it has not happened.
fn millis(ms: u64) -> Value {
    if ms == 0 { Value::Null } else { json!(ms) }
}

fn plain_resources(list: &[ray_proto::Resource]) -> Value {
    json!(ray_proto::groups::plain(&resources_to_map(list)))
}

/// A node as Ray's `NodeState`.
pub fn node(n: &NodeInfo) -> Value {
    json!({
        "node_id": hex(&n.node_id),
        "node_ip": n.ip,
        "is_head_node": n.is_head,
        "state": n.state().as_str_name(),
        "state_message": Value::Null,
        "node_name": if n.hostname.is_empty() { n.ip.clone() } else { n.hostname.clone() },
        "resources_total": plain_resources(&n.total),
        "labels": {},
        "start_time_ms": millis(n.start_time_ms),
        "end_time_ms": Value::Null,
    })
}

/// An actor as Ray's `ActorState`.
pub fn actor(a: &ActorInfo) -> Value {
    let death_cause = (!a.death_error.is_empty())
        .then(|| json!({"error_message": ray_abi::RayError::from_bytes(&a.death_error).to_string()}));
    json!({
        "actor_id": hex(&a.actor_id),
        "class_name": a.class_name,
        "state": a.state().as_str_name(),
        "job_id": job_hex(a.job_id),
        "name": a.name,
        "node_id": id_or_null(&a.node_id),
        "pid": if a.pid == 0 { Value::Null } else { json!(a.pid) },
        "ray_namespace": a.namespace,
        "required_resources": plain_resources(&a.resources),
        "death_cause": death_cause,
        "is_detached": a.detached,
        "placement_group_id": id_or_null(&a.placement_group_id),
        "repr_name": a.class_name,
        "num_restarts": a.num_restarts,
        "num_restarts_due_to_lineage_reconstruction": 0,
        "num_restarts_due_to_node_preemption": 0,
    })
}

/// A task attempt as Ray's `TaskState`.
pub fn task(t: &TaskEvent) -> Value {
    let group = t.required.iter().find_map(|r| ray_proto::groups::group_of(&r.name)).map(|g| g.to_string());
    json!({
        "task_id": hex(&t.task_id),
        "attempt_number": t.attempt,
        "name": t.name,
        "state": t.state().as_str_name(),
        "job_id": job_hex(t.job_id),
        "actor_id": id_or_null(&t.actor_id),
        "type": if t.actor_id.is_empty() { "NORMAL_TASK" } else { "ACTOR_TASK" },
        "func_or_class_name": t.func_name,
        "parent_task_id": hex(&t.parent_task_id),
        "node_id": id_or_null(&t.node_id),
        "worker_id": Value::Null,
        "worker_pid": if t.worker_pid == 0 { Value::Null } else { json!(t.worker_pid) },
        "error_type": if t.error_type.is_empty() { Value::Null } else { json!(t.error_type) },
        "language": "RUST",
        "required_resources": json!(ray_proto::groups::plain(&resources_to_map(&t.required))),
        "placement_group_id": group,
        "creation_time_ms": millis(t.creation_time_ms),
        "start_time_ms": millis(t.start_time_ms),
        "end_time_ms": millis(t.end_time_ms),
        "error_message": if t.error_message.is_empty() { Value::Null } else { json!(t.error_message) },
    })
}

/// A placement group as Ray's `PlacementGroupState`.
pub fn placement_group(g: &PlacementGroupInfo) -> Value {
    let bundles: Vec<Value> = g
        .bundles
        .iter()
        .map(|b| {
            json!({
                "bundle_id": b.index,
                "node_id": id_or_null(&b.node_id),
                "unit_resources": resources_to_map(&b.resources),
            })
        })
        .collect();
    json!({
        "placement_group_id": hex(&g.placement_group_id),
        "name": g.name,
        "creator_job_id": job_hex(g.creator_job_id),
        "state": g.state().as_str_name(),
        "bundles": bundles,
        "is_detached": g.detached,
        "stats": {
            "end_to_end_creation_latency_ms": g.created_time_ms.saturating_sub(g.create_time_ms),
            "scheduling_state": if g.infeasible { "INFEASIBLE" } else { g.state().as_str_name() },
        },
    })
}

fn driver_info(d: &JobInfo) -> Value {
    json!({"id": job_hex(d.job_id), "node_ip_address": d.driver_ip, "pid": d.driver_pid.to_string()})
}

/// A submitted job as Ray's `JobDetails` (`GET /api/jobs/`, `ray list jobs`).
pub fn submitted_job(found: &Found) -> Value {
    let s: &JobSubmission = &found.submission;
    let runtime_env: Value = serde_json::from_str(&s.runtime_env_json).unwrap_or_else(|_| json!({}));
    json!({
        "type": "SUBMISSION",
        "job_id": found.driver.as_ref().map(|d| job_hex(d.job_id)),
        "submission_id": s.submission_id,
        "driver_info": found.driver.as_ref().map(driver_info),
        "status": s.status().as_str_name(),
        "entrypoint": s.entrypoint,
        "message": s.message,
        "error_type": if s.error_type.is_empty() { Value::Null } else { json!(s.error_type) },
        "start_time": millis(s.start_time_ms),
        "end_time": millis(s.end_time_ms),
        "metadata": s.metadata,
        "runtime_env": runtime_env,
        "driver_agent_http_address": Value::Null,
        "driver_node_id": id_or_null(&s.driver_node_id),
        "driver_exit_code": s.driver_exit_code,
    })
}

/// A driver started by hand, as Ray's `JobDetails` of type DRIVER.
pub fn driver_job(d: &JobInfo) -> Value {
    json!({
        "type": "DRIVER",
        "job_id": job_hex(d.job_id),
        "submission_id": Value::Null,
        "driver_info": driver_info(d),
        "status": d.status().as_str_name(),
        "entrypoint": d.entrypoint,
        "message": Value::Null,
        "error_type": Value::Null,
        "start_time": millis(d.start_time_ms),
        "end_time": millis(d.end_time_ms),
        "metadata": {},
        "runtime_env": {},
        "driver_agent_http_address": Value::Null,
        "driver_node_id": Value::Null,
        "driver_exit_code": Value::Null,
    })
}

/// Every job, submitted first, as Ray's `GET /api/jobs/` lists them.
pub async fn all_jobs(jobs: &Jobs) -> Result<Vec<Value>, DashboardError> {
    let (submitted, by_hand) = jobs.all().await?;
    Ok(submitted.iter().map(submitted_job).chain(by_hand.iter().map(driver_job)).collect())
}

/// The resources the state API lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listed {
    /// `nodes`
    Nodes,
    /// `actors`
    Actors,
    /// `tasks`
    Tasks,
    /// `jobs`
    Jobs,
    /// `placement_groups`
    PlacementGroups,
}

impl Listed {
    /// The resource named in the path, as Ray's `StateResource` values.
    pub fn from_path(name: &str) -> Option<Listed> {
        Some(match name {
            "nodes" => Listed::Nodes,
            "actors" => Listed::Actors,
            "tasks" => Listed::Tasks,
            "jobs" => Listed::Jobs,
            "placement_groups" => Listed::PlacementGroups,
            _ => return None,
        })
    }
}

/// Every row of `what`, in Ray's shape.
pub async fn rows(head: &HeadClient, jobs: &Jobs, what: Listed) -> Result<Vec<Value>, DashboardError> {
    let mut head = head.clone();
    Ok(match what {
        Listed::Nodes => head.get_cluster_info(Empty {}).await?.into_inner().nodes.iter().map(node).collect(),
        Listed::Actors => head.list_actors(Empty {}).await?.into_inner().actors.iter().map(actor).collect(),
        Listed::Tasks => head
            .list_tasks(ListTasksRequest { limit: 0, ..ListTasksRequest::default() })
            .await?
            .into_inner()
            .tasks
            .iter()
            .map(task)
            .collect(),
        Listed::PlacementGroups => {
            head.list_placement_groups(Empty {}).await?.into_inner().groups.iter().map(placement_group).collect()
        }
        Listed::Jobs => all_jobs(jobs).await?,
    })
}

/// A listing's options, as Ray's state client sends them.
#[derive(Debug, Default, PartialEq)]
pub struct ListOptions {
    /// At most this many rows.
    pub limit: Option<usize>,
    /// `(key, predicate, value)`: `=` or `!=`.
    pub filters: Vec<(String, String, String)>,
}

impl ListOptions {
    /// Reads a query string; unknown parameters (`timeout`, `detail`, ...) are
    /// ignored, as they change nothing here.
    pub fn parse(query: &str) -> Result<ListOptions, DashboardError> {
        let (mut keys, mut predicates, mut values) = (Vec::new(), Vec::new(), Vec::new());
        let mut options = ListOptions::default();
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            match k.as_ref() {
                "limit" => {
                    options.limit = Some(
                        v.parse()
                            .map_err(|_| DashboardError::BadRequest(format!("limit must be a count, got {v:?}")))?,
                    )
                }
                "filter_keys" => keys.push(v.into_owned()),
                "filter_predicates" => predicates.push(v.into_owned()),
                "filter_values" => values.push(v.into_owned()),
                _ => {}
            }
        }
        if keys.len() != predicates.len() || keys.len() != values.len() {
            return Err(DashboardError::BadRequest(
                "filter_keys, filter_predicates and filter_values must come in threes".into(),
            ));
        }
        for ((k, p), v) in keys.into_iter().zip(predicates).zip(values) {
            if p != "=" && p != "!=" {
                return Err(DashboardError::BadRequest(format!("filter predicate {p:?} is not = or !=")));
            }
            options.filters.push((k, p, v));
        }
        Ok(options)
    }
}

/// Whether `row` passes every filter. Values compare as text; states and other
/// names compare without regard to case, as Ray's do.
fn passes(row: &Value, filters: &[(String, String, String)]) -> bool {
    filters.iter().all(|(key, predicate, wanted)| {
        let have = match row.get(key) {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
        };
        (have.eq_ignore_ascii_case(wanted)) == (predicate == "=")
    })
}

/// Ray's reply to a listing: filtered, then cut to the limit.
pub fn list_reply(rows: Vec<Value>, options: &ListOptions) -> Value {
    let total = rows.len();
    let filtered: Vec<Value> = rows.into_iter().filter(|r| passes(r, &options.filters)).collect();
    let num_filtered = filtered.len();
    let limit = options.limit.unwrap_or(DEFAULT_LIMIT);
    let result: Vec<Value> = filtered.into_iter().take(limit).collect();
    json!({
        "result": true,
        "msg": "",
        "data": {"result": {
            "total": total,
            "num_after_truncation": total,
            "num_filtered": num_filtered,
            "result": result,
            "partial_failure_warning": Value::Null,
            "warnings": Value::Null,
        }}
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;

    fn fields(row: &Value) -> Vec<&str> {
        row.as_object().map(Map::keys).into_iter().flatten().map(String::as_str).collect()
    }

    #[test]
    fn options_are_read_as_rays_client_sends_them() {
        let q = "limit=5&detail=True&filter_keys=state&filter_predicates=%3D&filter_values=ALIVE&timeout=30";
        let o = ListOptions::parse(q).unwrap();
        assert_eq!(o.limit, Some(5));
        assert_eq!(o.filters, vec![("state".into(), "=".into(), "ALIVE".into())]);
        assert!(ListOptions::parse("filter_keys=state").is_err());
        assert!(ListOptions::parse("filter_keys=a&filter_predicates=%3E&filter_values=1").is_err());
        assert!(ListOptions::parse("limit=lots").is_err());
    }

    #[test]
    fn a_listing_filters_then_limits_and_counts_both() {
        let rows: Vec<Value> =
            (0..5).map(|i| json!({"n": i, "state": if i % 2 == 0 { "ALIVE" } else { "DEAD" }})).collect();
        let o = ListOptions { limit: Some(2), filters: vec![("state".into(), "=".into(), "alive".into())] };
        let reply = list_reply(rows.clone(), &o);
        let body = &reply["data"]["result"];
        assert_eq!((body["total"].as_u64(), body["num_filtered"].as_u64()), (Some(5), Some(3)));
        assert_eq!(body["result"], json!([{"n": 0, "state": "ALIVE"}, {"n": 2, "state": "ALIVE"}]));
        let o = ListOptions { limit: None, filters: vec![("n".into(), "!=".into(), "3".into())] };
        assert_eq!(list_reply(rows, &o)["data"]["result"]["num_filtered"], 4);
    }

    #[test]
    fn rows_carry_exactly_rays_required_fields() {
        // Ray's dataclasses refuse unknown fields and need these ones.
        let node_row = node(&NodeInfo::default());
        let node_fields = fields(&node_row);
        for f in
            ["node_id", "node_ip", "is_head_node", "state", "state_message", "node_name", "resources_total", "labels"]
        {
            assert!(node_fields.contains(&f), "{f}");
        }
        let task_row = task(&TaskEvent::default());
        let task_fields = fields(&task_row);
        for f in [
            "task_id",
            "attempt_number",
            "name",
            "state",
            "job_id",
            "actor_id",
            "type",
            "func_or_class_name",
            "parent_task_id",
            "node_id",
            "worker_id",
            "worker_pid",
            "error_type",
        ] {
            assert!(task_fields.contains(&f), "{f}");
        }
    }
}
