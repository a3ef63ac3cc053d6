//! Ray's state API: what the cluster is running, as rows.
//!
//! `rayrepl list`, `rayrepl summary`, the `rayrepl top` dashboard and the Jupyter
//! kernel's `:top` all show the same nodes, tasks, actors, placement groups,
//! objects and jobs. They get them here, from the head (nodes, jobs, actors,
//! placement groups, the task event stream) and, for objects, from each node's
//! store, built once as rows of named columns in Ray's column names, with the
//! columns Ray shows by default.
//!
//! Nodes carry their placement groups' bundles as resources of their own
//! (`CPU_group_0_<id>`, ...); rows show plain resources and, apart, what the
//! groups reserve, so a node with many bundles stays readable.

use ray_abi::RayError;
use ray_abi::ids::hex;
use ray_proto::{
    ActorInfo, Empty, HeadClient, JobInfo, JobSubmission, ListTasksRequest, NodeInfo, PlacementGroupInfo,
    Resource as Amount, TaskEvent, format_bytes, format_resources, resources_to_map,
};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

pub mod timeline;

pub use ray_proto::job_submission::Status as SubmissionStatus;
pub use ray_proto::placement_group_info::State as PlacementGroupStatus;
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
    /// Placement groups.
    PlacementGroups,
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
    /// A driver job's status.
    Job(JobStatus),
    /// A submitted job's status.
    Submission(SubmissionStatus),
    /// A placement group's state.
    PlacementGroup(PlacementGroupStatus),
}

impl State {
    /// The column holding the state of `resource`'s rows, if they have one.
    pub fn column(resource: Resource) -> Option<&'static str> {
        match resource {
            Resource::Tasks | Resource::Actors | Resource::Nodes | Resource::PlacementGroups => Some("STATE"),
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
            Resource::Jobs => JobStatus::from_str_name(name)
                .map(State::Job)
                .or_else(|| SubmissionStatus::from_str_name(name).map(State::Submission)),
            Resource::PlacementGroups => PlacementGroupStatus::from_str_name(name).map(State::PlacementGroup),
            Resource::Objects => None,
        }
    }

    /// The state of `row`, a row of `resource`.
    pub fn of(resource: Resource, row: &Row) -> Option<State> {
        let name = row.get(State::column(resource)?)?.as_str()?;
        if resource == Resource::Jobs && row.get("TYPE").and_then(Value::as_str) == Some("SUBMISSION") {
            return SubmissionStatus::from_str_name(name).map(State::Submission);
        }
        State::parse(resource, name)
    }

    /// Ray's name for it, as rows show it.
    pub fn name(self) -> &'static str {
        match self {
            State::Task(s) => s.as_str_name(),
            State::Actor(s) => s.as_str_name(),
            State::Node(s) => s.as_str_name(),
            State::Job(s) => s.as_str_name(),
            State::Submission(s) => s.as_str_name(),
            State::PlacementGroup(s) => s.as_str_name(),
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
            let tasks = head
                .list_tasks(ListTasksRequest { limit: 0, ..ListTasksRequest::default() })
                .await
                .map_err(status)?
                .into_inner()
                .tasks;
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
        Resource::PlacementGroups => {
            let groups = head.list_placement_groups(Empty {}).await.map_err(status)?.into_inner().groups;
            // Ray shows the first four; the strategy and where the bundles sit are
            // what one looks at a group for.
            let cols = &["PLACEMENT_GROUP_ID", "NAME", "CREATOR_JOB_ID", "STATE", "STRATEGY", "BUNDLES"][..];
            (groups.iter().map(placement_group_row).collect(), cols)
        }
        Resource::Jobs => {
            let reply = head.list_jobs(Empty {}).await.map_err(status)?.into_inner();
            (
                job_rows(&reply.jobs, &reply.submissions),
                &["JOB_ID", "SUBMISSION_ID", "TYPE", "STATUS", "ENTRYPOINT", "DRIVER_PID", "DRIVER_IP"][..],
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

/// What placement groups reserve on a node, by plain resource name: `(used,
/// reserved)`. Read from the per-group names (`CPU_group_<id>`), which sum the
/// group's bundles on the node; the per-bundle names and the bundle markers
/// would count them again.
pub fn reserved(total: &[Amount], available: &[Amount]) -> BTreeMap<String, (f64, f64)> {
    let free = resources_to_map(available);
    let mut out: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for r in total {
        let Some(base) = group_wide(&r.name) else { continue };
        let entry = out.entry(base.to_string()).or_default();
        entry.0 += r.amount - free.get(&r.name).copied().unwrap_or(0.0);
        entry.1 += r.amount;
    }
    out
}

/// The plain name under a group-wide resource (`CPU` for `CPU_group_<id>`); none for
/// plain resources, a bundle's own (`CPU_group_0_<id>`) and the bundle markers.
fn group_wide(name: &str) -> Option<&str> {
    ray_proto::groups::group_of(name)?;
    let (base, rest) = name.rsplit_once("_group_")?;
    (!rest.contains('_') && base != "bundle").then_some(base)
}

/// The plain resources of a list (no placement-group names), as a map.
pub fn plain(resources: &[Amount]) -> BTreeMap<String, f64> {
    ray_proto::groups::plain(&resources_to_map(resources))
}

/// What a task asked for, under plain names: inside a group it asks for
/// `CPU_group_0_<id>` and a bundle marker, which say the same as `CPU` and the group.
fn demand(required: &[Amount]) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for r in required {
        let base = match ray_proto::groups::group_of(&r.name) {
            None => r.name.as_str(),
            Some(_) => match r.name.rsplit_once("_group_") {
                Some(("bundle", _)) | None => continue,
                Some((base, _)) => base,
            },
        };
        *out.entry(base.to_string()).or_insert(0.0) += r.amount;
    }
    out
}

/// The first eight hex digits of a node ID: enough to tell a cluster's nodes apart.
fn short_node_id(node_id: &[u8]) -> String {
    hex(&node_id[..node_id.len().min(4)])
}

fn node_row(n: &NodeInfo) -> Row {
    let reserved: BTreeMap<String, f64> =
        reserved(&n.total, &n.available).into_iter().map(|(k, (_, total))| (k, total)).collect();
    row(vec![
        ("NODE_ID", json!(hex(&n.node_id))),
        ("NODE_IP", json!(n.ip)),
        ("IS_HEAD_NODE", json!(n.is_head)),
        ("STATE", json!(n.state().as_str_name())),
        ("RESOURCES_TOTAL", json!(format_resources(&plain(&n.total)))),
        // Free for any task: what placement groups reserve is not.
        ("RESOURCES_AVAILABLE", json!(format_resources(&plain(&n.available)))),
        ("RESOURCES_RESERVED", json!(format_resources(&reserved))),
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
        ("REQUIRED_RESOURCES", json!(format_resources(&demand(&t.required)))),
        ("PLACEMENT_GROUP_ID", json!(group_in(&t.required))),
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
        // Why a PENDING_CREATION actor waits: no node could ever hold it.
        ("PENDING_REASON", json!(a.infeasible)),
    ])
}

/// The group a task's resources belong to, as hex; empty outside groups.
fn group_in(required: &[Amount]) -> String {
    required.iter().find_map(|r| ray_proto::groups::group_of(&r.name)).map(|g| g.to_string()).unwrap_or_default()
}

/// A group's bundles as `{CPU: 1}@3f2a1b9c`, one per bundle in order, with the
/// node each is reserved on (`@-` while unplaced).
fn bundles(g: &PlacementGroupInfo) -> String {
    let parts: Vec<String> = g
        .bundles
        .iter()
        .map(|b| {
            let node = if b.node_id.is_empty() { "-".to_string() } else { short_node_id(&b.node_id) };
            format!("{}@{node}", format_resources(&resources_to_map(&b.resources)))
        })
        .collect();
    parts.join(", ")
}

/// Ray's `stats.scheduling_state` for a group, from what the head knows.
fn scheduling_state(g: &PlacementGroupInfo) -> &'static str {
    match g.state() {
        PlacementGroupStatus::Created => "FINISHED",
        PlacementGroupStatus::Removed => "REMOVED",
        _ if g.infeasible => "INFEASIBLE",
        _ if !g.waiting_for.is_empty() => "NO_RESOURCES",
        _ => "QUEUED",
    }
}

fn placement_group_row(g: &PlacementGroupInfo) -> Row {
    let waiting = matches!(g.state(), PlacementGroupStatus::Pending | PlacementGroupStatus::Rescheduling);
    row(vec![
        ("PLACEMENT_GROUP_ID", json!(hex(&g.placement_group_id))),
        ("NAME", json!(g.name)),
        ("CREATOR_JOB_ID", json!(format!("{:08x}", g.creator_job_id))),
        ("STATE", json!(g.state().as_str_name())),
        ("STRATEGY", json!(g.strategy().as_str_name())),
        ("BUNDLES", json!(bundles(g))),
        ("IS_DETACHED", json!(g.detached)),
        ("SCHEDULING_STATE", json!(scheduling_state(g))),
        ("WAITING_FOR", json!(if waiting { g.waiting_for.as_str() } else { "" })),
        ("RAY_NAMESPACE", json!(g.namespace)),
        ("CREATION_TIME_MS", millis(g.create_time_ms)),
        ("CREATED_TIME_MS", millis(g.created_time_ms)),
    ])
}

/// Jobs as Ray's `ray list jobs` shows them: each submitted job (with the
/// driver its entrypoint started, if any), then each driver started by hand.
fn job_rows(drivers: &[JobInfo], submissions: &[JobSubmission]) -> Vec<Row> {
    let mut rows: Vec<Row> = submissions
        .iter()
        .map(|s| {
            let driver = drivers.iter().rev().find(|d| d.submission_id == s.submission_id);
            row(vec![
                ("JOB_ID", json!(driver.map(|d| format!("{:08x}", d.job_id)).unwrap_or_default())),
                ("SUBMISSION_ID", json!(s.submission_id)),
                ("TYPE", json!("SUBMISSION")),
                ("STATUS", json!(s.status().as_str_name())),
                ("ENTRYPOINT", json!(s.entrypoint)),
                ("DRIVER_PID", json!(s.driver_pid)),
                ("DRIVER_IP", json!(driver.map(|d| d.driver_ip.as_str()).unwrap_or_default())),
                ("MESSAGE", json!(s.message)),
                ("ERROR_TYPE", json!(s.error_type)),
                ("START_TIME_MS", millis(s.start_time_ms)),
                ("END_TIME_MS", millis(s.end_time_ms)),
            ])
        })
        .collect();
    rows.extend(drivers.iter().filter(|d| d.submission_id.is_empty()).map(job_row));
    rows
}

fn job_row(j: &JobInfo) -> Row {
    row(vec![
        ("JOB_ID", json!(format!("{:08x}", j.job_id))),
        ("SUBMISSION_ID", json!("")),
        ("TYPE", json!("DRIVER")),
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
    use ray_proto::placement_group_info::Strategy;

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
        let submitted = JobSubmission {
            submission_id: "s1".into(),
            status: SubmissionStatus::Running.into(),
            ..JobSubmission::default()
        };
        let driver = JobInfo { job_id: 3, submission_id: "s1".into(), ..JobInfo::default() };
        let rows = job_rows(&[driver], &[submitted]);
        assert_eq!(rows.len(), 1, "a submitted job's driver is listed with it, not apart");
        assert_eq!((rows[0]["JOB_ID"].as_str(), rows[0]["TYPE"].as_str()), (Some("00000003"), Some("SUBMISSION")));
        assert_eq!(State::of(Resource::Jobs, &rows[0]), Some(State::Submission(SubmissionStatus::Running)));
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
        assert_eq!(
            State::parse(Resource::PlacementGroups, "RESCHEDULING"),
            Some(State::PlacementGroup(PlacementGroupStatus::Rescheduling))
        );
    }

    fn amounts(pairs: &[(&str, f64)]) -> Vec<Amount> {
        pairs.iter().map(|(name, amount)| Amount { name: name.to_string(), amount: *amount }).collect()
    }

    fn group(state: PlacementGroupStatus, strategy: Strategy, nodes: &[&[u8]]) -> PlacementGroupInfo {
        let bundles = nodes
            .iter()
            .enumerate()
            .map(|(i, node)| ray_proto::Bundle {
                index: i as u32,
                resources: amounts(&[("CPU", 1.0)]),
                node_id: node.to_vec().into(),
            })
            .collect();
        PlacementGroupInfo {
            placement_group_id: vec![0xab; 18].into(),
            name: "workers".to_string(),
            creator_job_id: 2,
            state: state.into(),
            strategy: strategy.into(),
            bundles,
            ..PlacementGroupInfo::default()
        }
    }

    #[test]
    fn placement_groups_show_their_bundles_and_what_they_wait_for() {
        let node = [0x3f, 0x2a, 0x1b, 0x9c, 0x55, 0x66];
        let created = placement_group_row(&group(PlacementGroupStatus::Created, Strategy::Pack, &[&node, &node]));
        assert_eq!(created["PLACEMENT_GROUP_ID"], json!("ab".repeat(18)));
        assert_eq!(created["CREATOR_JOB_ID"], json!("00000002"));
        assert_eq!(created["STATE"], json!("CREATED"));
        assert_eq!(created["STRATEGY"], json!("PACK"));
        assert_eq!(created["BUNDLES"], json!("{CPU: 1}@3f2a1b9c, {CPU: 1}@3f2a1b9c"));
        assert_eq!(created["SCHEDULING_STATE"], json!("FINISHED"));
        assert_eq!(created["WAITING_FOR"], json!(""));
        assert_eq!(created["IS_DETACHED"], json!(false));
        assert_eq!(
            State::of(Resource::PlacementGroups, &created),
            Some(State::PlacementGroup(PlacementGroupStatus::Created))
        );

        let mut pending = group(PlacementGroupStatus::Pending, Strategy::StrictSpread, &[&[], &[]]);
        pending.infeasible = true;
        pending.waiting_for = "No available node types can fulfill resource request".to_string();
        let pending = placement_group_row(&pending);
        assert_eq!(pending["STATE"], json!("PENDING"));
        assert_eq!(pending["STRATEGY"], json!("STRICT_SPREAD"), "Ray's spelling");
        assert_eq!(pending["BUNDLES"], json!("{CPU: 1}@-, {CPU: 1}@-"));
        assert_eq!(pending["SCHEDULING_STATE"], json!("INFEASIBLE"));
        assert!(text(&pending["WAITING_FOR"]).starts_with("No available node types"));
        let mut busy = group(PlacementGroupStatus::Pending, Strategy::Pack, &[&[]]);
        busy.waiting_for = "resources: {CPU: 1} must be free at once".to_string();
        assert_eq!(placement_group_row(&busy)["SCHEDULING_STATE"], json!("NO_RESOURCES"));
    }

    #[test]
    fn nodes_show_plain_resources_and_what_groups_reserve_apart() {
        let g = "ab".repeat(18);
        let total = amounts(&[
            ("CPU", 4.0),
            (&format!("CPU_group_0_{g}"), 1.0),
            (&format!("CPU_group_1_{g}"), 1.0),
            (&format!("CPU_group_{g}"), 2.0),
            (&format!("bundle_group_0_{g}"), 1000.0),
            (&format!("bundle_group_{g}"), 2000.0),
        ]);
        // Two CPUs went to the group; a task inside it holds one of them.
        let available = amounts(&[
            ("CPU", 2.0),
            (&format!("CPU_group_0_{g}"), 0.0),
            (&format!("CPU_group_1_{g}"), 1.0),
            (&format!("CPU_group_{g}"), 1.0),
            (&format!("bundle_group_0_{g}"), 999.0),
            (&format!("bundle_group_{g}"), 1999.0),
        ]);
        assert_eq!(reserved(&total, &available), [("CPU".to_string(), (1.0, 2.0))].into_iter().collect());
        let node = node_row(&NodeInfo { total, available, ..NodeInfo::default() });
        assert_eq!(node["RESOURCES_TOTAL"], json!("{CPU: 4}"));
        assert_eq!(node["RESOURCES_AVAILABLE"], json!("{CPU: 2}"));
        assert_eq!(node["RESOURCES_RESERVED"], json!("{CPU: 2}"));
        let empty = node_row(&NodeInfo { total: amounts(&[("CPU", 2.0)]), ..NodeInfo::default() });
        assert_eq!(empty["RESOURCES_RESERVED"], json!("{}"));
    }

    #[test]
    fn tasks_in_a_group_show_what_they_asked_for_and_the_group() {
        let g = "ab".repeat(18);
        let required = amounts(&[(&format!("CPU_group_1_{g}"), 1.0), (&format!("bundle_group_1_{g}"), 0.001)]);
        let task = task_row(&TaskEvent { required, ..TaskEvent::default() });
        assert_eq!(task["REQUIRED_RESOURCES"], json!("{CPU: 1}"));
        assert_eq!(task["PLACEMENT_GROUP_ID"], json!(g));
        let plain = task_row(&TaskEvent { required: amounts(&[("CPU", 1.0)]), ..TaskEvent::default() });
        assert_eq!(plain["REQUIRED_RESOURCES"], json!("{CPU: 1}"));
        assert_eq!(plain["PLACEMENT_GROUP_ID"], json!(""));
    }

    #[test]
    fn now_reads_as_a_utc_timestamp() {
        let now = now_utc();
        assert_eq!(now.len(), "2026-11-22 07:15:17 UTC".len(), "{now}");
        assert!(now.ends_with(" UTC") && now.as_bytes()[10] == b' ', "{now}");
    }
}
