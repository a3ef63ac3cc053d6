//! Progress bars and cluster tables as Jupyter outputs.
//!
//! Every output carries text/plain beside text/html: nbclient, terminals, `jupyter
//! console` and a notebook opened without trust all need the text, and
//! JupyterLab shows the HTML. Only plain HTML with inline styles is used (no
//! widgets, no scripts), so a saved notebook shows the same thing later.

use ray_session::protocol::{Progress, escape_html as escape};
use ray_state::{Row, format_table, text};
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
