//! Progress bars, cluster tables and the task timeline as Jupyter outputs.
//!
//! Every output carries text/plain beside text/html: nbclient, terminals, `jupyter
//! console` and a notebook opened without trust all need the text, and
//! JupyterLab shows the HTML. Only plain HTML with inline styles is used (no
//! widgets, no scripts), so a saved notebook shows the same thing later.

use ray_session::protocol::{Progress, escape_html as escape};
use ray_state::{Row, TaskState, format_table, text};
use std::collections::BTreeMap;

/// The MIME bundle of one output.
pub(crate) type Bundle = BTreeMap<String, String>;

pub(crate) fn bundle(plain: String, html: String) -> Bundle {
    [("text/plain".to_string(), plain), ("text/html".to_string(), html)].into()
}

const BAR_CHARS: usize = 24;

/// How a progress display reads once its cell has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    /// The blocking call is still waiting.
    Running,
    /// It returned.
    Finished,
    /// The cell was interrupted.
    Interrupted,
}

/// Per function: a bar of done (green) and running (amber) out of the awaited
/// objects, with the counts, then the elapsed time.
pub(crate) fn progress(p: &Progress, ending: Ending) -> Bundle {
    let seconds = p.elapsed_ms as f64 / 1000.0;
    let status = match ending {
        Ending::Running => format!("running for {seconds:.1} s"),
        Ending::Finished => format!("finished in {seconds:.1} s"),
        Ending::Interrupted => format!("interrupted after {seconds:.1} s"),
    };
    let name_width = p.rows.iter().map(|r| r.name.len()).max().unwrap_or(0);
    let mut plain = String::new();
    let mut html = String::from(
        "<div class=\"rayrepl-progress\" style=\"font-family:monospace;font-size:12px;line-height:1.6\"><table \
         style=\"border-collapse:collapse\">",
    );
    for row in &p.rows {
        let total = row.total().max(1);
        let chars = |n: usize| n * BAR_CHARS / total;
        let (done_chars, failed_chars) = (chars(row.done), chars(row.failed));
        let running_chars = chars(row.running).min(BAR_CHARS - done_chars - failed_chars);
        let failed = if row.failed > 0 { format!(", {} failed", row.failed) } else { String::new() };
        plain.push_str(&format!(
            "{:<name_width$}  {}{}{}{}  {}/{} done{failed}, {} running, {} pending\n",
            row.name,
            "█".repeat(done_chars),
            "✗".repeat(failed_chars),
            "▒".repeat(running_chars),
            "░".repeat(BAR_CHARS - done_chars - failed_chars - running_chars),
            row.done,
            row.total(),
            row.running,
            row.pending,
        ));
        let percent = |n: usize| n as f64 * 100.0 / total as f64;
        let bar = |n: usize, color: &str| format!("<div style=\"width:{:.1}%;background:{color}\"></div>", percent(n));
        let failed_html = if row.failed > 0 {
            format!(" · <span style=\"color:#cf222e\">{} failed</span>", row.failed)
        } else {
            String::new()
        };
        html.push_str(&format!(
            "<tr><td style=\"text-align:left;padding:0 8px 0 0\"><b>{}</b></td>\
             <td style=\"padding:0 8px 0 0\"><div style=\"width:240px;height:10px;background:#e5e7eb;\
             border-radius:3px;overflow:hidden;display:flex\">{}{}{}</div></td>\
             <td style=\"text-align:left\">{}/{} done{failed_html} · {} running · {} pending</td></tr>",
            escape(&row.name),
            bar(row.done, "#2da44e"),
            bar(row.failed, "#cf222e"),
            bar(row.running, "#e3a008"),
            row.done,
            row.total(),
            row.running,
            row.pending,
        ));
    }
    plain.push_str(&status);
    html.push_str(&format!("</table><div style=\"color:#6b7280\">{}</div></div>", escape(&status)));
    bundle(plain, html)
}

/// At most this many of the latest tasks on the timeline.
const MAX_SPANS: usize = 2_000;
const LANE_HEIGHT: f64 = 18.0;
const LABEL_WIDTH: f64 = 190.0;
const PLOT_WIDTH: f64 = 760.0;

/// A task's bar on the timeline.
struct Span<'a> {
    lane: (u64, u64),
    start_us: u64,
    dur_us: u64,
    name: &'a str,
    state: &'a str,
}

/// The `:timeline` chart: the latest tasks that ran, as bars on a lane per worker
/// (grouped by node), coloured by function, each with its name and duration on
/// hover. Built from the same Chrome trace `rayrepl timeline` writes.
pub(crate) fn timeline(trace: &serde_json::Value) -> Bundle {
    let events = trace.as_array().map(Vec::as_slice).unwrap_or_default();
    let field = |e: &serde_json::Value, k: &str| e[k].as_u64().unwrap_or(0);
    let mut lane_names: BTreeMap<(u64, u64), String> = BTreeMap::new();
    let mut node_names: BTreeMap<u64, String> = BTreeMap::new();
    let mut spans: Vec<Span<'_>> = Vec::new();
    for e in events {
        let name = e["args"]["name"].as_str().unwrap_or_default();
        match (e["ph"].as_str(), e["name"].as_str()) {
            (Some("M"), Some("process_name")) => {
                node_names.insert(field(e, "pid"), name.to_string());
            }
            (Some("M"), Some("thread_name")) => {
                lane_names.insert((field(e, "pid"), field(e, "tid")), name.to_string());
            }
            (Some("X"), Some(task)) => spans.push(Span {
                lane: (field(e, "pid"), field(e, "tid")),
                start_us: field(e, "ts"),
                dur_us: field(e, "dur"),
                name: task,
                state: e["args"]["state"].as_str().unwrap_or_default(),
            }),
            _ => {}
        }
    }
    spans.sort_by_key(|s| s.start_us + s.dur_us);
    let spans = &spans[spans.len().saturating_sub(MAX_SPANS)..];
    if spans.is_empty() {
        let none = "No task has run yet.";
        return bundle(none.to_string(), format!("<div style=\"color:#6b7280\">{none}</div>"));
    }
    let t0 = spans.iter().map(|s| s.start_us).min().unwrap_or(0);
    let t1 = spans.iter().map(|s| s.start_us + s.dur_us).max().unwrap_or(t0).max(t0 + 1);
    let lanes: Vec<(u64, u64)> = {
        let mut used: Vec<(u64, u64)> = spans.iter().map(|s| s.lane).collect();
        used.sort_unstable();
        used.dedup();
        used
    };
    let lane_of: BTreeMap<(u64, u64), usize> = lanes.iter().enumerate().map(|(i, l)| (*l, i)).collect();
    let mut per_function: BTreeMap<&str, usize> = BTreeMap::new();
    for span in spans {
        *per_function.entry(span.name).or_default() += 1;
    }
    // A colour per function, distinct for the first ten; the legend names them.
    let color_of: BTreeMap<&str, &str> =
        per_function.keys().enumerate().map(|(i, name)| (*name, PALETTE[i % PALETTE.len()])).collect();
    let x = |us: u64| LABEL_WIDTH + (us - t0) as f64 / (t1 - t0) as f64 * PLOT_WIDTH;
    let height = lanes.len() as f64 * LANE_HEIGHT + 24.0;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{height}\" \
         style=\"font:11px sans-serif\">",
        LABEL_WIDTH + PLOT_WIDTH + 10.0
    );
    for (i, lane) in lanes.iter().enumerate() {
        let y = i as f64 * LANE_HEIGHT;
        let node = node_names.get(&lane.0).map(String::as_str).unwrap_or("node");
        let worker = lane_names.get(lane).cloned().unwrap_or_else(|| format!("worker {}", lane.1));
        svg.push_str(&format!(
            "<text x=\"0\" y=\"{:.1}\" fill=\"#374151\">{} · {}</text>",
            y + 13.0,
            escape(node),
            escape(&worker)
        ));
    }
    for span in spans {
        let y = lane_of[&span.lane] as f64 * LANE_HEIGHT + 2.0;
        let (left, right) = (x(span.start_us), x(span.start_us + span.dur_us));
        let failed = TaskState::from_str_name(span.state) == Some(TaskState::Failed);
        let color = if failed { FAILED_COLOR } else { color_of[span.name] };
        svg.push_str(&format!(
            "<rect x=\"{left:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{color}\" \
             stroke=\"#fff\" stroke-width=\"0.5\">\
             <title>{} · {:.1} ms · {}</title></rect>",
            (right - left).max(1.0),
            LANE_HEIGHT - 4.0,
            escape(span.name),
            span.dur_us as f64 / 1000.0,
            escape(span.state)
        ));
    }
    let seconds = (t1 - t0) as f64 / 1e6;
    let axis_y = lanes.len() as f64 * LANE_HEIGHT + 16.0;
    svg.push_str(&format!(
        "<text x=\"{LABEL_WIDTH}\" y=\"{axis_y}\" fill=\"#6b7280\">0 s</text>\
         <text x=\"{}\" y=\"{axis_y}\" fill=\"#6b7280\" text-anchor=\"end\">{seconds:.3} s</text></svg>",
        LABEL_WIDTH + PLOT_WIDTH
    ));
    let summary = format!("{} tasks on {} workers over {seconds:.3} s", spans.len(), lanes.len());
    let counts: Vec<String> = per_function.iter().map(|(name, n)| format!("{name}: {n}")).collect();
    let plain = format!("{summary}\n{}", counts.join(", "));
    let legend: String = per_function
        .iter()
        .map(|(name, n)| {
            format!(
                "<span style=\"margin-right:12px\"><span style=\"display:inline-block;width:10px;height:10px;\
                 background:{};margin-right:4px\"></span>{} ({n})</span>",
                color_of[name],
                escape(name)
            )
        })
        .collect();
    let html = format!(
        "<div class=\"rayrepl-timeline\">{svg}<div style=\"font-size:12px\">{legend}\
         <span style=\"color:#6b7280\">{}</span></div></div>",
        escape(&summary)
    );
    bundle(plain, html)
}

/// Tableau's colours, distinct side by side, without its red: red marks a failure.
const PALETTE: [&str; 10] =
    ["#4e79a7", "#f28e2b", "#59a14f", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac", "#a0cbe8"];
const FAILED_COLOR: &str = "#cf222e";

/// At most this many rows per table; the rest are counted.
const MAX_TABLE_ROWS: usize = 50;

/// One titled table of state rows, with the default columns.
pub(crate) struct Section<'a> {
    pub title: &'a str,
    pub rows: &'a [Row],
    pub columns: &'a [&'a str],
}

/// The `:top` snapshot: one table per resource.
pub(crate) fn tables(sections: &[Section<'_>], taken_at: &str) -> Bundle {
    let mut plain = format!("Cluster state at {taken_at}\n");
    let mut html = format!(
        "<div class=\"rayrepl-top\" style=\"font-size:12px\"><div style=\"color:#6b7280\">Cluster state at {}</div>",
        escape(taken_at)
    );
    for section in sections {
        let shown = &section.rows[..section.rows.len().min(MAX_TABLE_ROWS)];
        let more = section.rows.len() - shown.len();
        let count = section.rows.len();
        plain.push_str(&format!("\n{} ({count})\n", section.title));
        html.push_str(&format!("<h4 style=\"margin:8px 0 2px\">{} ({count})</h4>", escape(section.title)));
        if shown.is_empty() {
            plain.push_str("  none\n");
            html.push_str("<div style=\"color:#6b7280\">none</div>");
            continue;
        }
        plain.push_str(&format_table(shown, section.columns));
        html.push_str("<table><thead><tr>");
        for column in section.columns {
            html.push_str(&format!("<th style=\"text-align:left\">{}</th>", escape(column)));
        }
        html.push_str("</tr></thead><tbody>");
        for row in shown {
            html.push_str("<tr>");
            for column in section.columns {
                let value = row.get(*column).map(text).unwrap_or_default();
                html.push_str(&format!("<td style=\"text-align:left\">{}</td>", escape(&value)));
            }
            html.push_str("</tr>");
        }
        html.push_str("</tbody></table>");
        if more > 0 {
            plain.push_str(&format!("  … and {more} more\n"));
            html.push_str(&format!("<div style=\"color:#6b7280\">… and {more} more</div>"));
        }
    }
    html.push_str("</div>");
    bundle(plain, html)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ray_session::protocol::ProgressRow;
    use serde_json::json;

    #[test]
    fn the_timeline_draws_a_lane_per_worker_and_a_bar_per_task() {
        let row = |pairs: &[(&str, serde_json::Value)]| -> Row {
            pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
        };
        let task = |name: &str, pid: u64, start: u64, end: u64, state: &str| {
            row(&[
                ("NAME", json!(name)),
                ("NODE_ID", json!("aa")),
                ("WORKER_PID", json!(pid)),
                ("START_TIME_MS", json!(start)),
                ("END_TIME_MS", json!(end)),
                ("STATE", json!(state)),
            ])
        };
        let tasks = [task("add", 7, 1_000, 1_100, "FINISHED"), task("boom", 8, 1_050, 1_500, "FAILED")];
        let nodes = [row(&[("NODE_ID", json!("aa")), ("NODE_IP", json!("10.0.0.2"))])];
        let out = timeline(&ray_state::timeline::chrome_trace(&tasks, &nodes));
        assert_eq!(out["text/plain"], "2 tasks on 2 workers over 0.500 s\nadd: 1, boom: 1");
        let html = &out["text/html"];
        assert_eq!(html.matches("<rect").count(), 2, "{html}");
        assert!(html.contains("10.0.0.2 · worker 7") && html.contains("<title>add · 100.0 ms · FINISHED</title>"));
        assert!(html.contains("fill=\"#cf222e\""), "a failed task is red: {html}");
        let empty = timeline(&json!([]));
        assert_eq!(empty["text/plain"], "No task has run yet.");
    }

    #[test]
    fn progress_shows_counts_in_text_and_html() {
        let p = Progress {
            elapsed_ms: 1500,
            rows: vec![ProgressRow { name: "retrieve<T>".into(), done: 6, failed: 0, running: 2, pending: 0 }],
            finished: false,
        };
        let out = progress(&p, Ending::Running);
        let plain = &out["text/plain"];
        assert!(plain.contains("6/8 done, 2 running, 0 pending"), "{plain}");
        assert!(plain.contains(&"█".repeat(18)), "{plain}");
        assert!(plain.ends_with("running for 1.5 s"));
        let html = &out["text/html"];
        assert!(html.contains("retrieve&lt;T&gt;"));
        assert!(html.contains("width:75.0%"));
        assert!(progress(&p, Ending::Interrupted)["text/plain"].ends_with("interrupted after 1.5 s"));
        assert!(!plain.contains("failed"));
        let cancelled = Progress {
            elapsed_ms: 900,
            rows: vec![ProgressRow { name: "slow".into(), done: 6, failed: 34, running: 0, pending: 0 }],
            finished: true,
        };
        let out = progress(&cancelled, Ending::Interrupted);
        assert!(out["text/plain"].contains("6/40 done, 34 failed, 0 running"), "{}", out["text/plain"]);
        assert!(out["text/html"].contains("34 failed"));
    }

    #[test]
    fn tables_escape_and_count_rows() {
        let rows: Vec<Row> =
            (0..60).map(|i| [("NAME".to_string(), json!(format!("<f{i}>")))].into_iter().collect()).collect();
        let out = tables(
            &[
                Section { title: "Tasks", rows: &rows, columns: &["NAME"] },
                Section { title: "Actors", rows: &[], columns: &["CLASS_NAME"] },
            ],
            "now",
        );
        let html = &out["text/html"];
        assert!(html.contains("<td style=\"text-align:left\">&lt;f0&gt;</td>"));
        assert!(!html.contains("&lt;f50&gt;"));
        assert!(html.contains("and 10 more"));
        assert!(out["text/plain"].contains("Actors (0)\n  none"));
    }
}
