//! `rayrepl list placement-groups` and `rayrepl status` against a real cluster:
//! empty at first, then with a group that waits for a resource no node has.

mod support;
use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use support::*;

/// A driver that is killed when the test ends, however it ends.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn stdout_of(out: &std::process::Output) -> String {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn list_and_status_show_placement_groups() {
    let root = session_root();
    let address = start_head(root.path(), "2");
    let json = stdout_of(&rayrepl(root.path(), &["list", "placement-groups", "--format", "json"]));
    assert_eq!(json.trim(), "[]");
    let table = stdout_of(&rayrepl(root.path(), &["list", "placement-groups"]));
    assert!(table.contains("Total: 0") && table.contains("PLACEMENT_GROUP_ID  NAME  CREATOR_JOB_ID  STATE"), "{table}");

    // The scenario creates a group needing `d`, which no node has, and then waits.
    let child = Command::new(scenarios_bin())
        .arg("pg_pending_then_node")
        .env("RAYREPL_ADDRESS", &address)
        .env("RAYREPL_TEMP_DIR", root.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut driver = Driver(child);
    let mut out = std::io::BufReader::new(driver.0.stdout.take().unwrap());
    let mut seen = String::new();
    while !seen.contains("add_node") {
        let mut line = String::new();
        assert!(out.read_line(&mut line).unwrap() > 0, "the scenario ended early: {seen}");
        seen.push_str(&line);
    }

    let json = stdout_of(&rayrepl(root.path(), &["list", "placement-groups", "--format", "json"]));
    let rows: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    assert_eq!(rows.len(), 1, "{json}");
    let group = &rows[0];
    assert_eq!(group["STATE"], "PENDING", "{json}");
    assert_eq!(group["STRATEGY"], "PACK", "{json}");
    assert_eq!(group["BUNDLES"], "{d: 1}@-", "{json}");
    assert_eq!(group["SCHEDULING_STATE"], "INFEASIBLE", "{json}");
    assert!(group["WAITING_FOR"].as_str().is_some_and(|w| w.contains("No available node types")), "{json}");
    let created = stdout_of(&rayrepl(root.path(), &["list", "placement-groups", "--filter", "state=created"]));
    assert!(created.contains("Total: 0"), "{created}");

    let status = stdout_of(&rayrepl(root.path(), &["status"]));
    let demands = status.split("Demands:").nth(1).unwrap_or_default();
    assert!(demands.contains(" {d: 1} * 1 (PACK): 1+ pending placement groups (infeasible)"), "{status}");
    assert!(demands.contains("Infeasible placement groups") && demands.contains("No available node types"), "{status}");
    assert!(status.contains(" 0.0/2.0 CPU\n"), "{status}");
}
