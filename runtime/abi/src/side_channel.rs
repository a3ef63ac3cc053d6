//! The side channel from a REPL or kernel evaluation process to its front-end.
//!
//! evcxr runs cells in a child process and owns its stdout: it is the control
//! channel, and the cell's own prints travel on it. Everything else that process
//! has to say travels as one line per event, marked with an ASCII record separator
//! so that it cannot be confused with what user code prints. The driver's threads
//! (worker output, progress of a blocking call, an interrupt's outcome) write to
//! stderr, because they must never touch evcxr's channel. Cell code's rich output
//! (`ray::notebook`) goes to stdout, so that it stays in order with the cell's
//! prints. It lives in this crate because both sides of that process speak it: the
//! host runtime and every cell's copy of `ray`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

const MARK: &str = "\u{1e}rayrepl ";

/// Counts for the awaited objects of one function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgressRow {
    /// Function or actor method name.
    pub name: String,
    /// Finished with a value.
    pub done: usize,
    /// Finished with an error (failed, cancelled, lost).
    #[serde(default)]
    pub failed: usize,
    /// Running on a worker.
    pub running: usize,
    /// Waiting for arguments, resources or a worker.
    pub pending: usize,
}

/// Progress of the cell's current blocking call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Milliseconds since the call began to block.
    pub elapsed_ms: u64,
    /// One row per function.
    pub rows: Vec<ProgressRow>,
    /// The call returned; this is the final state.
    pub finished: bool,
}

impl ProgressRow {
    /// Every awaited object of this function.
    pub fn total(&self) -> usize {
        self.done + self.failed + self.running + self.pending
    }
}

impl Progress {
    /// Totals over all rows: (settled, running, pending), where settled counts
    /// failed objects with the done ones.
    pub fn totals(&self) -> (usize, usize, usize) {
        self.rows.iter().fold((0, 0, 0), |(d, r, p), row| (d + row.done + row.failed, r + row.running, p + row.pending))
    }
}

/// One event from the evaluation process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ChildEvent {
    /// The driver is attached to the cluster.
    DriverReady {
        /// Its job id.
        job: u32,
    },
    /// The driver could not attach; cells that use Ray will fail.
    DriverFailed {
        /// Why.
        message: String,
    },
    /// A line a worker printed to stdout, already prefixed `(name pid=N)`.
    WorkerStdout {
        /// The line.
        line: String,
    },
    /// A line a worker printed to stderr.
    WorkerStderr {
        /// The line.
        line: String,
    },
    /// Progress of a blocking `get`, `wait` or `.await`.
    Progress(Progress),
    /// An interrupt reached the driver.
    Interrupted {
        /// Tasks it cancelled.
        cancelled: usize,
    },
    /// Rich output from cell code: a Jupyter `display_data`.
    Display {
        /// MIME type to content, e.g. `text/plain` and `text/html`.
        data: BTreeMap<String, String>,
    },
    /// The cell returned an error with `?`; evcxr printed its message on stderr.
    CellFailed,
    /// The cell's code returned and the driver has shown all worker output
    /// written before then: on stderr, everything before this event. The
    /// evaluation process sends it on stderr, then on stdout, where evcxr hands
    /// it on before it reports the cell done; so the front-end learns that the
    /// cell ran, and how far to read stderr.
    OutputFlushed {
        /// Tells this cell's mark from an earlier one's.
        mark: u64,
    },
    /// Cell code asked to clear its output so far (`wait`: when new output comes).
    ClearOutput {
        /// Clear only when the next output arrives, which avoids flicker.
        wait: bool,
    },
}

impl ChildEvent {
    /// The event as one line (without the newline).
    pub fn encode(&self) -> String {
        format!("{MARK}{}", serde_json::to_string(self).unwrap_or_default())
    }

    /// Decodes a line; `None` for ordinary output.
    pub fn decode(line: &str) -> Option<ChildEvent> {
        serde_json::from_str(line.strip_prefix(MARK)?).ok()
    }
}

/// Escapes text for HTML element content and attribute values: both ends of the
/// channel render values as HTML (cell code's `RichRepr`, the kernel's tables).
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_and_plain_lines_stay_plain() {
        let events = [
            ChildEvent::DriverReady { job: 3 },
            ChildEvent::WorkerStdout { line: "(f pid=1) hi\u{1e}".into() },
            ChildEvent::Progress(Progress {
                elapsed_ms: 1200,
                rows: vec![ProgressRow { name: "retrieve".into(), done: 2, failed: 1, running: 2, pending: 3 }],
                finished: false,
            }),
            ChildEvent::Interrupted { cancelled: 6 },
            ChildEvent::Display { data: [("text/html".to_string(), "<b>\n</b>".to_string())].into() },
            ChildEvent::ClearOutput { wait: false },
            ChildEvent::CellFailed,
        ];
        for e in events {
            let line = e.encode();
            assert!(!line.contains('\n'));
            assert_eq!(ChildEvent::decode(&line), Some(e));
        }
        assert_eq!(ChildEvent::decode("rayrepl {\"event\":\"driver_ready\",\"job\":1}"), None);
        assert_eq!(ChildEvent::decode("thread 'main' panicked"), None);
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(escape_html("<a href=\"x\">&'</a>"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;");
    }
}
