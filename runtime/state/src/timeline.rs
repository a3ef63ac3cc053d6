//! Tasks as a Chrome trace, as `ray timeline` writes one.
//!
//! Seeing which worker ran what, and when, is how one learns where a distributed
//! program spends its time. Ray dumps its task events in the Chrome trace event
//! format, which chrome://tracing and Perfetto (ui.perfetto.dev) open; this builds
//! the same from the task rows: one complete event per task attempt that started
//! and ended, on a track per worker, grouped by node.

use crate::{Row, text};
use serde_json::{Value, json};
use std::collections::BTreeMap;

fn millis(row: &Row, column: &str) -> Option<u64> {
    row.get(column).and_then(Value::as_u64).filter(|&ms| ms > 0)
}

/// Trace events for the task rows that have run: a process per node (named by
/// its IP from `nodes`), a thread per worker, and a complete event per task.
pub fn chrome_trace(tasks: &[Row], nodes: &[Row]) -> Value {
    let ip_of: BTreeMap<String, String> = nodes
        .iter()
        .map(|n| (n.get("NODE_ID").map(text).unwrap_or_default(), n.get("NODE_IP").map(text).unwrap_or_default()))
        .collect();
    // Trace pids are numbers: nodes are numbered in the order they first appear.
    let mut node_numbers: BTreeMap<String, u64> = BTreeMap::new();
    let mut workers: BTreeMap<(u64, u64), ()> = BTreeMap::new();
    let mut events = Vec::new();
    for task in tasks {
        let (Some(start), Some(end)) = (millis(task, "START_TIME_MS"), millis(task, "END_TIME_MS")) else {
            continue;
        };
        let node = task.get("NODE_ID").map(text).unwrap_or_default();
        let next = node_numbers.len() as u64 + 1;
        let pid = *node_numbers.entry(node).or_insert(next);
        let tid = task.get("WORKER_PID").and_then(Value::as_u64).unwrap_or(0);
        workers.insert((pid, tid), ());
        events.push(json!({
            "name": task.get("NAME").map(text).unwrap_or_default(),
            "cat": task.get("TYPE").map(text).unwrap_or_default(),
            "ph": "X",
            "ts": start * 1000,
            "dur": end.saturating_sub(start) * 1000,
            "pid": pid,
            "tid": tid,
            "args": {
                "task_id": task.get("TASK_ID").map(text).unwrap_or_default(),
                "attempt": task.get("ATTEMPT_NUMBER").cloned().unwrap_or(Value::Null),
                "state": task.get("STATE").map(text).unwrap_or_default(),
                "func_or_class_name": task.get("FUNC_OR_CLASS_NAME").map(text).unwrap_or_default(),
            },
        }));
    }
    let processes = node_numbers.iter().map(|(node, pid)| {
        let ip = ip_of.get(node).map(String::as_str).unwrap_or("unknown");
        json!({"name": "process_name", "ph": "M", "pid": pid, "args": {"name": format!("node {ip}")}})
    });
    let threads = workers.keys().map(|(pid, tid)| {
        json!({"name": "thread_name", "ph": "M", "pid": pid, "tid": tid, "args": {"name": format!("worker {tid}")}})
    });
    Value::Array(processes.chain(threads).chain(events).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(pairs: &[(&str, Value)]) -> Row {
        pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }

    #[test]
    fn tasks_that_ran_become_complete_events_on_their_worker() {
        let nodes = vec![row(&[("NODE_ID", json!("aa")), ("NODE_IP", json!("10.0.0.2"))])];
        let ran = row(&[
            ("NAME", json!("add")),
            ("TYPE", json!("NORMAL_TASK")),
            ("NODE_ID", json!("aa")),
            ("WORKER_PID", json!(4242)),
            ("START_TIME_MS", json!(1_000)),
            ("END_TIME_MS", json!(1_250)),
        ]);
        let queued = row(&[("NAME", json!("later")), ("START_TIME_MS", Value::Null), ("END_TIME_MS", Value::Null)]);
        let trace = chrome_trace(&[ran, queued], &nodes);
        let events = trace.as_array().unwrap();
        let complete: Vec<&Value> = events.iter().filter(|e| e["ph"] == "X").collect();
        assert_eq!(complete.len(), 1, "a task that has not run has no span: {trace}");
        assert_eq!(complete[0]["name"], "add");
        assert_eq!(complete[0]["ts"], 1_000_000, "microseconds");
        assert_eq!(complete[0]["dur"], 250_000);
        assert_eq!((complete[0]["pid"].clone(), complete[0]["tid"].clone()), (json!(1), json!(4242)));
        let names: Vec<String> = events.iter().filter(|e| e["ph"] == "M").map(|e| text(&e["args"]["name"])).collect();
        assert_eq!(names, ["node 10.0.0.2", "worker 4242"]);
    }
}
