//! `rayrepl list`, `rayrepl summary`, `rayrepl timeline` and `rayrepl logs`: Ray's
//! state API on the command line.
//!
//! The rows come from `ray-state`; here they are filtered and printed as Ray
//! prints them, or as JSON.

use crate::cluster_cli::connect_head;
use anyhow::{Context, bail};
use ray_state::{Resource, Row, Rows, text};
use std::collections::BTreeMap;

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

/// `rayrepl timeline`.
#[derive(clap::Args)]
pub struct TimelineArgs {
    /// Where to write the trace (default: a timestamped file in the temp directory).
    #[arg(long, short)]
    output: Option<std::path::PathBuf>,
    /// The head's address (default: this machine's latest session).
    #[arg(long)]
    address: Option<String>,
}

/// `rayrepl logs`.
#[derive(clap::Args)]
pub struct LogsArgs {
    /// A log file name, or a glob of them (`'worker-*.err'`); without one, the
    /// files are listed.
    pattern: Option<String>,
    /// Only the node with this IP.
    #[arg(long)]
    node_ip: Option<String>,
    /// Only the last N lines of each file.
    #[arg(long, value_name = "N")]
    tail: Option<u32>,
    /// The head's address (default: this machine's latest session).
    #[arg(long)]
    address: Option<String>,
}

impl TimelineArgs {
    /// The default trace file, for the cluster at `address` (the REPL's `:timeline`).
    pub fn for_address(address: String) -> Self {
        TimelineArgs { output: None, address: Some(address) }
    }
}

/// Fetches every row of a resource, with all columns.
fn fetch(resource: Resource, address: Option<String>) -> anyhow::Result<Rows> {
    let (rt, mut head, token) = connect_head(address)?;
    Ok(rt.block_on(ray_state::fetch(&mut head, &token, resource))?)
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
    println!("======== List: {} ========", ray_state::now_utc());
    println!("Stats:\n------------------------------\nTotal: {total}\n");
    println!("Table:\n------------------------------");
    print!("{}", ray_state::format_table(rows, cols));
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

/// Writes the tasks that have run as a Chrome trace, as `ray timeline` does.
pub fn timeline(args: TimelineArgs) -> anyhow::Result<()> {
    let (rt, mut head, token) = connect_head(args.address)?;
    let (tasks, nodes) = rt.block_on(async {
        let (tasks, _) = ray_state::fetch(&mut head, &token, Resource::Tasks).await?;
        let (nodes, _) = ray_state::fetch(&mut head, &token, Resource::Nodes).await?;
        Ok::<_, ray_abi::RayError>((tasks, nodes))
    })?;
    let trace = ray_state::timeline::chrome_trace(&tasks, &nodes);
    let spans = trace.as_array().map_or(0, |events| events.iter().filter(|e| e["ph"] == "X").count());
    let path = args.output.unwrap_or_else(|| {
        let stamp = ray_state::now_utc().replace(" UTC", "").replace(' ', "_").replace(':', "-");
        std::env::temp_dir().join(format!("rayrepl-timeline-{stamp}.json"))
    });
    std::fs::write(&path, serde_json::to_vec(&trace)?).with_context(|| format!("cannot write {}", path.display()))?;
    println!("Trace file written to {} ({spans} tasks).", path.display());
    println!("Open it in chrome://tracing or https://ui.perfetto.dev.");
    Ok(())
}

/// Lists the nodes' log files, or prints those matching a pattern, as `ray logs` does.
pub fn logs(args: LogsArgs) -> anyhow::Result<()> {
    use ray_proto::{Empty, ReadLogRequest, from_status};
    let pattern = args.pattern.as_deref().map(glob::Pattern::new).transpose().context("not a file name pattern")?;
    let (rt, mut head, token) = connect_head(args.address)?;
    rt.block_on(async move {
        let info = head.get_cluster_info(Empty {}).await.map_err(|s| from_status(&s, "the head"))?.into_inner();
        let nodes: Vec<_> = info
            .nodes
            .into_iter()
            .filter(|n| n.is_alive() && args.node_ip.as_ref().is_none_or(|ip| *ip == n.ip))
            .collect();
        if nodes.is_empty() {
            bail!("no alive node{}", args.node_ip.map(|ip| format!(" has IP {ip}")).unwrap_or_default());
        }
        let mut matched = Vec::new();
        for node in &nodes {
            let channel = ray_proto::connect(&node.address, &token, "a node daemon").await?;
            let mut client = ray_proto::node_client(channel);
            let files = client.list_logs(Empty {}).await.map_err(|s| from_status(&s, "a node daemon"))?.into_inner();
            match &pattern {
                None => {
                    println!("======== Logs on node {} ========", node.ip);
                    let width = files.files.iter().map(|f| f.name.len()).max().unwrap_or(0);
                    for f in &files.files {
                        println!("{:<width$}  {}", f.name, ray_proto::format_bytes(f.size));
                    }
                }
                Some(pattern) => {
                    let names = files.files.into_iter().map(|f| f.name).filter(|name| pattern.matches(name));
                    matched.extend(names.map(|name| (node.ip.clone(), client.clone(), name)));
                }
            }
        }
        if let Some(pattern) = &pattern
            && matched.is_empty()
        {
            bail!("no log file matches {}; `rayrepl logs` lists them", pattern.as_str());
        }
        let headers = matched.len() > 1;
        for (ip, mut client, name) in matched {
            let request = ReadLogRequest { name: name.clone(), tail_lines: args.tail.unwrap_or(0) };
            let reply = client.read_log(request).await.map_err(|s| from_status(&s, "a node daemon"))?.into_inner();
            if headers {
                println!("==> node {ip}: {name} <==");
            }
            if reply.truncated && args.tail.is_none() {
                eprintln!("({name} is long: only its end follows)");
            }
            std::io::Write::write_all(&mut std::io::stdout(), &reply.data)?;
        }
        Ok(())
    })
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
    println!("======== {title} Summary: {} ========", ray_state::now_utc());
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
