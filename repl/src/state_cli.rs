//! `rayrepl list` and `rayrepl summary`: Ray's state API on the command line.
//!
//! Everything comes from the head (nodes, jobs, actors, the task event stream) and,
//! for objects, from each node's store. Rows are built once as ordered columns, then
//! filtered and printed as Ray prints them, or as JSON.

use crate::cluster_cli::connect_head;
use anyhow::{Context, bail};
use ray_proto::{Empty, HeadClient, ListTasksRequest, format_bytes, format_resources, resources_to_map};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// What `list` can show.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
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

/// What `summary` can show.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Summary {
    /// Tasks by function and state.
    Tasks,
    /// Actors by class and state.
    Actors,
    /// Objects by node.
    Objects,
}

/// Output formats.
#[derive(Clone, Copy, Debug, Default, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns, like Ray.
    #[default]
    Table,
    /// A JSON list.
    Json,
}

/// `rayrepl list`.
#[derive(clap::Args)]
pub struct ListArgs {
    /// What to list.
    resource: Resource,
    /// Keep rows where COLUMN=VALUE (or COLUMN!=VALUE); repeatable.
    #[arg(long, short)]
    filter: Vec<String>,
    /// Show every column.
    #[arg(long)]
    detail: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    format: Format,
    /// At most this many rows.
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// The head's address (default: this machine's latest session).
    #[arg(long)]
    address: Option<String>,
}

/// `rayrepl summary`.
#[derive(clap::Args)]
pub struct SummaryArgs {
    /// What to summarize.
    resource: Summary,
    /// The head's address (default: this machine's latest session).
    #[arg(long)]
    address: Option<String>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// One row of a resource: column name to value.
pub(crate) type Row = Map<String, Value>;

/// A resource's rows, with the columns shown by default.
pub(crate) type Rows = (Vec<Row>, &'static [&'static str]);

fn row(pairs: Vec<(&str, Value)>) -> Row {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// Fetches every row of a resource, with all columns.
fn fetch(resource: Resource, address: Option<String>) -> anyhow::Result<Rows> {
    let (rt, mut head, token) = connect_head(address)?;
    rt.block_on(fetch_with(&mut head, &token, resource))
}

/// [`fetch`] over an existing head connection, so `rayrepl top` can poll on one.
pub(crate) async fn fetch_with(head: &mut HeadClient, token: &str, resource: Resource) -> anyhow::Result<Rows> {
    let status = |s: tonic::Status| ray_proto::from_status(&s, "the head");
    Ok(match resource {
        Resource::Nodes => {
            let info = head.get_cluster_info(Empty {}).await.map_err(status)?.into_inner();
            let rows = info
                .nodes
                .iter()
                .map(|n| {
                    row(vec![
                        ("NODE_ID", json!(hex(&n.node_id))),
                        ("NODE_IP", json!(n.ip)),
                        ("IS_HEAD_NODE", json!(n.is_head)),
                        ("STATE", json!(if n.alive { "ALIVE" } else { "DEAD" })),
                        ("RESOURCES_TOTAL", json!(format_resources(&resources_to_map(&n.total)))),
                        ("RESOURCES_AVAILABLE", json!(format_resources(&resources_to_map(&n.available)))),
                        ("OBJECT_STORE_USED", json!(format_bytes(n.object_store_used))),
                        ("OBJECT_STORE_CAPACITY", json!(format_bytes(n.object_store_capacity))),
                        ("NUM_WORKERS", json!(n.num_workers)),
                        ("ADDRESS", json!(n.address)),
                        ("PID", json!(n.pid)),
                    ])
                })
                .collect();
            (rows, &["NODE_ID", "NODE_IP", "IS_HEAD_NODE", "STATE", "RESOURCES_TOTAL"][..])
        }
        Resource::Tasks => {
            let tasks = head.list_tasks(ListTasksRequest { limit: 0 }).await.map_err(status)?.into_inner().tasks;
            let rows = tasks
                .iter()
                .map(|t| {
                    let kind = if t.actor_id.is_empty() { "NORMAL_TASK" } else { "ACTOR_TASK" };
                    row(vec![
                        ("TASK_ID", json!(hex(&t.task_id))),
                        ("ATTEMPT_NUMBER", json!(t.attempt)),
                        ("NAME", json!(t.name)),
                        ("STATE", json!(t.state)),
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
                    ])
                })
                .collect();
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
            (rows, cols)
        }
        Resource::Actors => {
            let actors = head.list_actors(Empty {}).await.map_err(status)?.into_inner().actors;
            let rows = actors
                .iter()
                .map(|a| {
                    let cause = if a.death_error.is_empty() {
                        String::new()
                    } else {
                        ray_abi::RayError::from_bytes(&a.death_error).to_string()
                    };
                    row(vec![
                        ("ACTOR_ID", json!(hex(&a.actor_id))),
                        ("CLASS_NAME", json!(a.class_name)),
                        ("STATE", json!(a.state)),
                        ("JOB_ID", json!(format!("{:08x}", a.job_id))),
                        ("NAME", json!(a.name)),
                        ("NODE_ID", json!(hex(&a.node_id))),
                        ("PID", json!(a.pid)),
                        ("RAY_NAMESPACE", json!(a.namespace)),
                        ("NUM_RESTARTS", json!(a.num_restarts)),
                        ("DETACHED", json!(a.detached)),
                        ("ADDRESS", json!(a.address)),
                        ("DEATH_CAUSE", json!(cause)),
                    ])
                })
                .collect();
            (rows, &["ACTOR_ID", "CLASS_NAME", "STATE", "JOB_ID", "NAME", "NODE_ID", "PID", "RAY_NAMESPACE"][..])
        }
        Resource::Jobs => {
            let jobs = head.list_jobs(Empty {}).await.map_err(status)?.into_inner().jobs;
            let rows = jobs
                .iter()
                .map(|j| {
                    row(vec![
                        ("JOB_ID", json!(format!("{:08x}", j.job_id))),
                        ("STATUS", json!(if j.alive { "RUNNING" } else { "FINISHED" })),
                        ("ENTRYPOINT", json!(j.entrypoint)),
                        ("DRIVER_PID", json!(j.driver_pid)),
                        ("DRIVER_IP", json!(j.driver_ip)),
                        ("NAMESPACE", json!(j.namespace)),
                        ("START_TIME_MS", json!(j.start_time_ms)),
                        ("END_TIME_MS", json!(j.end_time_ms)),
                        ("DRIVER_ADDRESS", json!(j.driver_address)),
                    ])
                })
                .collect();
            (rows, &["JOB_ID", "STATUS", "ENTRYPOINT", "DRIVER_PID", "DRIVER_IP", "NAMESPACE"][..])
        }
        Resource::Objects => {
            let info = head.get_cluster_info(Empty {}).await.map_err(status)?.into_inner();
            let mut rows = Vec::new();
            for n in info.nodes.iter().filter(|n| n.alive) {
                let channel = ray_proto::lazy_channel(&n.address, token)?;
                let stats = ray_proto::node_client(channel)
                    .get_stats(Empty {})
                    .await
                    .map_err(|s| ray_proto::from_status(&s, "a node daemon"))?
                    .into_inner();
                for o in stats.objects {
                    rows.push(row(vec![
                        ("OBJECT_ID", json!(hex(&o.object_id))),
                        ("OBJECT_SIZE", json!(format_bytes(o.size))),
                        ("SEALED", json!(o.sealed)),
                        ("OWNER", json!(o.owner_address)),
                        ("IP", json!(n.ip)),
                        ("NODE_ID", json!(hex(&n.node_id))),
                    ]));
                }
            }
            (rows, &["OBJECT_ID", "OBJECT_SIZE", "OWNER", "IP"][..])
        }
    })
}

/// A cell as shown: strings bare, everything else as JSON.
pub(crate) fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Applies `COLUMN=VALUE` / `COLUMN!=VALUE` filters.
fn keep(r: &Row, filters: &[(String, bool, String)]) -> bool {
    filters.iter().all(|(col, equal, value)| {
        let cell = r.get(col).map(text).unwrap_or_default();
        (cell.eq_ignore_ascii_case(value)) == *equal
    })
}

fn parse_filters(raw: &[String]) -> anyhow::Result<Vec<(String, bool, String)>> {
    raw.iter()
        .map(|f| {
            if let Some((k, v)) = f.split_once("!=") {
                Ok((k.trim().to_uppercase(), false, v.trim().to_string()))
            } else if let Some((k, v)) = f.split_once('=') {
                Ok((k.trim().to_uppercase(), true, v.trim().to_string()))
            } else {
                bail!("a filter is COLUMN=VALUE or COLUMN!=VALUE, got {f:?}")
            }
        })
        .collect()
}

fn print_table(rows: &[Row], cols: &[&str], total: usize) {
    println!("======== List: {} ========", crate::cluster_cli::now_utc());
    println!("Stats:\n------------------------------\nTotal: {total}\n");
    println!("Table:\n------------------------------");
    let index_width = rows.len().saturating_sub(1).to_string().len();
    let widths: Vec<usize> = cols
        .iter()
        .map(|c| rows.iter().map(|r| r.get(*c).map(text).unwrap_or_default().len()).max().unwrap_or(0).max(c.len()))
        .collect();
    let header: Vec<String> = cols.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
    println!("{:index_width$}  {}", "", header.join("  "));
    for (i, r) in rows.iter().enumerate() {
        let cells: Vec<String> =
            cols.iter().zip(&widths).map(|(c, w)| format!("{:<w$}", r.get(*c).map(text).unwrap_or_default())).collect();
        println!("{i:>index_width$}  {}", cells.join("  "));
    }
}

pub fn list(args: ListArgs) -> anyhow::Result<()> {
    let filters = parse_filters(&args.filter)?;
    let (rows, default_cols) = fetch(args.resource, args.address)?;
    let matching: Vec<Row> = rows.into_iter().filter(|r| keep(r, &filters)).collect();
    let total = matching.len();
    let shown: Vec<Row> = matching.into_iter().take(args.limit).collect();
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&shown)?),
        Format::Table => {
            let all: Vec<&str> = shown.first().map(|r| r.keys().map(String::as_str).collect()).unwrap_or_default();
            // Keep the row's own column order for --detail.
            let cols: Vec<&str> = if args.detail && !all.is_empty() {
                let order: Vec<&str> = default_cols
                    .iter()
                    .copied()
                    .chain(all.iter().copied().filter(|c| !default_cols.contains(c)))
                    .collect();
                order
            } else {
                default_cols.to_vec()
            };
            print_table(&shown, &cols, total);
            if total > shown.len() {
                println!("\n({} more; raise --limit to see them)", total - shown.len());
            }
        }
    }
    Ok(())
}

pub fn summary(args: SummaryArgs) -> anyhow::Result<()> {
    let (resource, group_col, state_col, title) = match args.resource {
        Summary::Tasks => (Resource::Tasks, "FUNC_OR_CLASS_NAME", "STATE", "Tasks"),
        Summary::Actors => (Resource::Actors, "CLASS_NAME", "STATE", "Actors"),
        Summary::Objects => (Resource::Objects, "IP", "SEALED", "Objects"),
    };
    let (rows, _) = fetch(resource, args.address).context("cannot read the cluster state")?;
    let mut groups: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for r in &rows {
        let group = r.get(group_col).map(text).unwrap_or_default();
        let state = r.get(state_col).map(text).unwrap_or_default();
        *groups.entry(group).or_default().entry(state).or_default() += 1;
    }
    println!("======== {title} Summary: {} ========", crate::cluster_cli::now_utc());
    println!("Stats:\n------------------------------------\ntotal: {}\n", rows.len());
    println!("Table (group by {}):\n------------------------------------", group_col.to_lowercase());
    let width = groups.keys().map(String::len).max().unwrap_or(0).max(group_col.len());
    println!("    {:<width$}  STATE_COUNTS", group_col);
    for (i, (g, states)) in groups.iter().enumerate() {
        let counts: Vec<String> = states.iter().map(|(s, n)| format!("{s}: {n}")).collect();
        println!("{i:>2}  {g:<width$}  {}", counts.join(", "));
    }
    Ok(())
}
