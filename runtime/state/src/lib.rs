//! Ray's state API: what the cluster is running, as rows.
//!
//! `rayrepl list`, `rayrepl summary`, the `rayrepl top` dashboard and the Jupyter
//! kernel's `:top` all show the same nodes, tasks, actors, objects and jobs. They
//! get them here, from the head (nodes, jobs, actors, the task event stream) and,
//! for objects, from each node's store, built once as rows of named columns in
//! Ray's column names, with the columns Ray shows by default.

use ray_abi::RayError;
use ray_abi::ids::hex;
use ray_proto::{
    ActorInfo, Empty, HeadClient, JobInfo, ListTasksRequest, NodeInfo, TaskEvent, format_bytes, format_resources,
    resources_to_map,
};
use serde_json::{Map, Value, json};

pub mod timeline;

pub use ray_proto::{ActorState, JobStatus, NodeState, TaskState};

/// What `list` can show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Resource {
    /// Cluster nodes.
    Nodes,
    /// Tasks and actor calls.
    Tasks,
    /// Actors.
    Actors,
    /// Objects in the nodes' shared-memory stores.
    Objects,
    /// Jobs (drivers).
    Jobs,
}

/// A row's state, typed by what the row is. Rows carry states as Ray's names
/// (strings), so `--filter state=RUNNING` and `--format json` read as in Ray;
/// whoever decides something by a state reads it back as one of these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// A task attempt's state.
    Task(TaskState),
    /// An actor's state.
    Actor(ActorState),
    /// A node's state.
    Node(NodeState),
    /// A (driver) job's status.
    Job(JobStatus),
}

impl State {
    /// The column holding the state of `resource`'s rows, if they have one.
    pub fn column(resource: Resource) -> Option<&'static str> {
        match resource {
            Resource::Tasks | Resource::Actors | Resource::Nodes => Some("STATE"),
            Resource::Jobs => Some("STATUS"),
            Resource::Objects => None,
        }
    }

    /// The state a row of `resource` shows as `name`, if it is one.
    pub fn parse(resource: Resource, name: &str) -> Option<State> {
        match resource {
            Resource::Tasks => TaskState::from_str_name(name).map(State::Task),
            Resource::Actors => ActorState::from_str_name(name).map(State::Actor),
            Resource::Nodes => NodeState::from_str_name(name).map(State::Node),
            Resource::Jobs => JobStatus::from_str_name(name).map(State::Job),
            Resource::Objects => None,
        }
    }

    /// The state of `row`, a row of `resource`.
    pub fn of(resource: Resource, row: &Row) -> Option<State> {
        let name = row.get(State::column(resource)?)?.as_str()?;
        State::parse(resource, name)
    }

    /// Ray's name for it, as rows show it.
    pub fn name(self) -> &'static str {
        match self {
            State::Task(s) => s.as_str_name(),
            State::Actor(s) => s.as_str_name(),
            State::Node(s) => s.as_str_name(),
            State::Job(s) => s.as_str_name(),
        }
    }
}

/// One row of a resource: column name to value.
pub type Row = Map<String, Value>;

/// A resource's rows, with the columns shown by default.
pub type Rows = (Vec<Row>, &'static [&'static str]);

fn row(pairs: Vec<(&str, Value)>) -> Row {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// Fetches every row of `resource`, with all columns, over a head connection
/// (objects also ask each alive node's store).
pub async fn fetch(head: &mut HeadClient, token: &str, resource: Resource) -> Result<Rows, RayError> {
    let status = |s: tonic::Status| ray_proto::from_status(&s, "the head");
    Ok(match resource {
        Resource::Nodes => {
            let info = head.get_cluster_info(Empty {}).await.map_err(status)?.into_inner();
            (
                info.nodes.iter().map(node_row).collect(),
                &["NODE_ID", "NODE_IP", "IS_HEAD_NODE", "STATE", "RESOURCES_TOTAL"][..],
            )
        }
        Resource::Tasks => {
            let tasks = head.list_tasks(ListTasksRequest { limit: 0 }).await.map_err(status)?.into_inner().tasks;
            let cols = &[
                "TASK_ID",
                "ATTEMPT_NUMBER",
                "NAME",
                "STATE",
                "JOB_ID",
                "ACTOR_ID",
                "TYPE",
                "FUNC_OR_CLASS_NAME",
                "NODE_ID",
                "WORKER_PID",
                "ERROR_TYPE",
            ][..];
            (tasks.iter().map(task_row).collect(), cols)
        }
        Resource::Actors => {
            let actors = head.list_actors(Empty {}).await.map_err(status)?.into_inner().actors;
            let cols = &["ACTOR_ID", "CLASS_NAME", "STATE", "JOB_ID", "NAME", "NODE_ID", "PID", "RAY_NAMESPACE"][..];
            (actors.iter().map(actor_row).collect(), cols)
        }
        Resource::Jobs => {
            let jobs = head.list_jobs(Empty {}).await.map_err(status)?.into_inner().jobs;
            (
                jobs.iter().map(job_row).collect(),
                &["JOB_ID", "STATUS", "ENTRYPOINT", "DRIVER_PID", "DRIVER_IP", "NAMESPACE"][..],
            )
        }
        Resource::Objects => {
            let info = head.get_cluster_info(Empty {}).await.map_err(status)?.into_inner();
            let mut rows = Vec::new();
            for n in info.nodes.iter().filter(|n| n.is_alive()) {
                let channel = ray_proto::lazy_channel(&n.address, token)?;
                // A node that just died may still be listed as alive: skip it
                // rather than fail the whole listing.
                let Ok(stats) = ray_proto::node_client(channel).get_stats(Empty {}).await else {
                    continue;
                };
                for o in stats.into_inner().objects {
                    rows.push(row(vec![
                        ("OBJECT_ID", json!(hex(&o.object_id))),
                        ("OBJECT_SIZE", json!(format_bytes(o.size))),
                        ("SEALED", json!(o.sealed)),
                        ("COPY", json!(if o.primary { "PRIMARY" } else { "SECONDARY" })),
                        ("OWNER", json!(o.owner_address)),
                        ("IP", json!(n.ip)),
                        ("NODE_ID", json!(hex(&n.node_id))),
                    ]));
                }
            }
            (rows, &["OBJECT_ID", "OBJECT_SIZE", "COPY", "OWNER", "IP"][..])
        }
    })
}

fn node_row(n: &NodeInfo) -> Row {
    row(vec![
        ("NODE_ID", json!(hex(&n.node_id))),
        ("NODE_IP", json!(n.ip)),
        ("IS_HEAD_NODE", json!(n.is_head)),
        ("STATE", json!(n.state().as_str_name())),
        ("RESOURCES_TOTAL", json!(format_resources(&resources_to_map(&n.total)))),
        ("RESOURCES_AVAILABLE", json!(format_resources(&resources_to_map(&n.available)))),
        ("OBJECT_STORE_USED", json!(format_bytes(n.object_store_used))),
        ("OBJECT_STORE_CAPACITY", json!(format_bytes(n.object_store_capacity))),
        ("NUM_WORKERS", json!(n.num_workers)),
        ("ADDRESS", json!(n.address)),
        ("PID", json!(n.pid)),
    ])
}

fn task_row(t: &TaskEvent) -> Row {
    let kind = if t.actor_id.is_empty() { "NORMAL_TASK" } else { "ACTOR_TASK" };
    row(vec![
        ("TASK_ID", json!(hex(&t.task_id))),
        ("ATTEMPT_NUMBER", json!(t.attempt)),
        ("NAME", json!(t.name)),
        ("STATE", json!(t.state().as_str_name())),
        ("JOB_ID", json!(format!("{:08x}", t.job_id))),
        ("ACTOR_ID", json!(hex(&t.actor_id))),
        ("TYPE", json!(kind)),
        ("FUNC_OR_CLASS_NAME", json!(t.func_name)),
        ("PARENT_TASK_ID", json!(hex(&t.parent_task_id))),
        ("NODE_ID", json!(hex(&t.node_id))),
        ("WORKER_PID", json!(t.worker_pid)),
        ("ERROR_TYPE", json!(t.error_type)),
        ("ERROR_MESSAGE", json!(t.error_message)),
        ("REQUIRED_RESOURCES", json!(format_resources(&resources_to_map(&t.required)))),
        ("CREATION_TIME_MS", millis(t.creation_time_ms)),
        ("START_TIME_MS", millis(t.start_time_ms)),
        ("END_TIME_MS", millis(t.end_time_ms)),
    ])
}

fn actor_row(a: &ActorInfo) -> Row {
    let cause = if a.death_error.is_empty() {
        String::new()
    } else {
        ray_abi::RayError::from_bytes(&a.death_error).to_string()
    };
    row(vec![
        ("ACTOR_ID", json!(hex(&a.actor_id))),
        ("CLASS_NAME", json!(a.class_name)),
        ("STATE", json!(a.state().as_str_name())),
        ("JOB_ID", json!(format!("{:08x}", a.job_id))),
        ("NAME", json!(a.name)),
        ("NODE_ID", json!(hex(&a.node_id))),
        ("PID", json!(a.pid)),
        ("RAY_NAMESPACE", json!(a.namespace)),
        ("NUM_RESTARTS", json!(a.num_restarts)),
        ("DETACHED", json!(a.detached)),
        ("ADDRESS", json!(a.address)),
        ("DIRECT_ADDRESS", json!(a.direct_address)),
        ("DEATH_CAUSE", json!(cause)),
    ])
}

fn job_row(j: &JobInfo) -> Row {
    row(vec![
        ("JOB_ID", json!(format!("{:08x}", j.job_id))),
        ("STATUS", json!(j.status().as_str_name())),
        ("ENTRYPOINT", json!(j.entrypoint)),
        ("DRIVER_PID", json!(j.driver_pid)),
        ("DRIVER_IP", json!(j.driver_ip)),
        ("NAMESPACE", json!(j.namespace)),
        ("START_TIME_MS", json!(j.start_time_ms)),
        ("END_TIME_MS", json!(j.end_time_ms)),
        ("DRIVER_ADDRESS", json!(j.driver_address)),
    ])
}

/// A time in ms since the epoch, or null while it has not happened.
fn millis(ms: u64) -> Value {
    if ms == 0 { Value::Null } else { json!(ms) }
}

/// A cell as shown: strings bare, everything else as JSON.
pub fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Rows as aligned columns under a header, numbered from 0, as `ray list` prints
/// them; one line per row, each ending in a newline.
pub fn format_table(rows: &[Row], cols: &[&str]) -> String {
    let index_width = rows.len().saturating_sub(1).to_string().len();
    let widths: Vec<usize> = cols
        .iter()
        .map(|c| rows.iter().map(|r| r.get(*c).map(text).unwrap_or_default().len()).max().unwrap_or(0).max(c.len()))
        .collect();
    let header: Vec<String> = cols.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
    let mut out = format!("{:index_width$}  {}\n", "", header.join("  ").trim_end());
    for (i, r) in rows.iter().enumerate() {
        let cells: Vec<String> =
            cols.iter().zip(&widths).map(|(c, w)| format!("{:<w$}", r.get(*c).map(text).unwrap_or_default())).collect();
        out.push_str(&format!("{i:>index_width$}  {}\n", cells.join("  ").trim_end()));
    }
    out
}

/// The current time as `YYYY-MM-DD HH:MM:SS UTC`, as state snapshots are stamped.
pub fn now_utc() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string().replace('T', " ").replace('Z', " UTC")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns_and_number_rows() {
        let rows: Vec<Row> = (0..11)
            .map(|i| {
                [("NAME".to_string(), json!(format!("f{i}"))), ("STATE".to_string(), json!("FINISHED"))]
                    .into_iter()
                    .collect()
            })
            .collect();
        let table = format_table(&rows, &["NAME", "STATE"]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], "    NAME  STATE");
        assert_eq!(lines[1], " 0  f0    FINISHED");
        assert_eq!(lines[11], "10  f10   FINISHED");
    }

    #[test]
    fn rows_carry_states_as_rays_names() {
        let task = task_row(&TaskEvent { state: TaskState::PendingNodeAssignment.into(), ..TaskEvent::default() });
        assert_eq!(task["STATE"], json!("PENDING_NODE_ASSIGNMENT"), "a string in JSON, not a number");
        assert_eq!(State::of(Resource::Tasks, &task), Some(State::Task(TaskState::PendingNodeAssignment)));
        let actor = actor_row(&ActorInfo { state: ActorState::Restarting.into(), ..ActorInfo::default() });
        assert_eq!(actor["STATE"], json!("RESTARTING"));
        assert_eq!(State::of(Resource::Actors, &actor), Some(State::Actor(ActorState::Restarting)));
        let node = node_row(&NodeInfo { state: NodeState::Dead.into(), ..NodeInfo::default() });
        assert_eq!(node["STATE"], json!("DEAD"));
        assert_eq!(State::of(Resource::Nodes, &node), Some(State::Node(NodeState::Dead)));
        let job = job_row(&JobInfo { status: JobStatus::Succeeded.into(), ..JobInfo::default() });
        assert_eq!(job["STATUS"], json!("SUCCEEDED"));
        assert_eq!(State::of(Resource::Jobs, &job), Some(State::Job(JobStatus::Succeeded)));
        let json = serde_json::to_string(&task).unwrap();
        assert!(json.contains(r#""STATE":"PENDING_NODE_ASSIGNMENT""#), "{json}");
    }

    #[test]
    fn states_parse_by_resource() {
        // The same name is a different state on a different resource.
        assert_eq!(State::parse(Resource::Tasks, "RUNNING"), Some(State::Task(TaskState::Running)));
        assert_eq!(State::parse(Resource::Jobs, "RUNNING"), Some(State::Job(JobStatus::Running)));
        assert_eq!(State::parse(Resource::Nodes, "ALIVE"), Some(State::Node(NodeState::Alive)));
        assert_eq!(State::parse(Resource::Actors, "ALIVE").map(State::name), Some("ALIVE"));
        assert_eq!(State::parse(Resource::Nodes, "RUNNING"), None);
        assert_eq!(State::parse(Resource::Objects, "RUNNING"), None);
        assert_eq!(State::column(Resource::Jobs), Some("STATUS"));
    }

    #[test]
    fn now_reads_as_a_utc_timestamp() {
        let now = now_utc();
        assert_eq!(now.len(), "2026-11-22 07:15:17 UTC".len(), "{now}");
        assert!(now.ends_with(" UTC") && now.as_bytes()[10] == b' ', "{now}");
    }
}
