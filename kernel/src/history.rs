//! The inputs `history_request` answers from, kept across kernel sessions.
//!
//! Front-ends search and recall earlier cells (JupyterLab's console, `%history`
//! in ipykernel). Like IPython, every kernel start is a new numbered session, and
//! every stored input has its execution count as its line number. Entries are
//! appended as JSON lines to one file shared by all kernels on the machine; the
//! file is locked while a session takes its number, so two kernels starting at
//! once never share one.

use jupyter_protocol::HistoryEntry;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

/// One stored input. Line 0 only marks that a session began.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Entry {
    session: usize,
    line: usize,
    input: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    output: Option<String>,
}

/// This kernel's view of the history file.
pub(crate) struct History {
    file: Option<File>,
    session: usize,
    entries: Vec<Entry>,
}

/// `$RAYREPL_KERNEL_HISTORY`, else `$XDG_DATA_HOME/rayrepl/kernel-history.jsonl`.
pub(crate) fn default_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("RAYREPL_KERNEL_HISTORY") {
        return Some(PathBuf::from(p));
    }
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))?;
    Some(base.join("rayrepl").join("kernel-history.jsonl"))
}

impl History {
    /// Opens the history at `path` and starts a new session in it. Without a
    /// usable file the history lives in memory for this kernel only.
    pub fn open(path: Option<&Path>) -> History {
        match path.and_then(|p| Self::open_file(p).map_err(|e| tracing::warn!("history disabled: {e}")).ok()) {
            Some(history) => history,
            None => History { file: None, session: 1, entries: Vec::new() },
        }
    }

    fn open_file(path: &Path) -> std::io::Result<History> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = File::options().create(true).read(true).append(true).open(path)?;
        file.lock()?;
        let entries: Vec<Entry> = BufReader::new(&file)
            .lines()
            .map_while(Result::ok)
            .filter_map(|line| serde_json::from_str(&line).ok())
            .collect();
        let session = entries.iter().map(|e| e.session).max().unwrap_or(0) + 1;
        let mut history = History { file: Some(file), session, entries };
        history.record(0, "", None);
        if let Some(file) = &history.file {
            file.unlock()?;
        }
        Ok(history)
    }

    /// Stores the input of execution `line`, and the text of its result.
    pub fn record(&mut self, line: usize, input: &str, output: Option<String>) {
        let entry = Entry { session: self.session, line, input: input.to_string(), output };
        if let Some(file) = &mut self.file
            && let Ok(mut text) = serde_json::to_string(&entry)
        {
            text.push('\n');
            // One write per entry: appends from concurrent kernels do not interleave.
            if let Err(e) = file.write_all(text.as_bytes()) {
                tracing::warn!("cannot append to the kernel history: {e}");
            }
        }
        self.entries.push(entry);
    }

    fn stored(&self) -> impl DoubleEndedIterator<Item = &Entry> {
        self.entries.iter().filter(|e| e.line > 0)
    }

    /// The last `n` inputs, oldest first.
    pub fn tail(&self, n: usize, output: bool) -> Vec<HistoryEntry> {
        let mut last: Vec<_> = self.stored().rev().take(n).collect();
        last.reverse();
        last.into_iter().map(|e| e.to_reply(output)).collect()
    }

    /// Lines `start..stop` of a session (`stop` 0: to the end). A session of 0 or
    /// less counts back from this one, as IPython's do.
    pub fn range(&self, session: i64, start: usize, stop: usize, output: bool) -> Vec<HistoryEntry> {
        let session =
            if session > 0 { session as usize } else { self.session.saturating_sub(session.unsigned_abs() as usize) };
        self.stored()
            .filter(|e| e.session == session && e.line >= start && (stop == 0 || e.line < stop))
            .map(|e| e.to_reply(output))
            .collect()
    }

    /// Inputs matching a glob `pattern`, oldest first: the last `n` (0: all), and
    /// with `unique` only the latest of equal inputs.
    pub fn search(&self, pattern: &str, n: usize, unique: bool, output: bool) -> Vec<HistoryEntry> {
        let Ok(pattern) = glob::Pattern::new(pattern) else { return Vec::new() };
        let mut seen = std::collections::HashSet::new();
        let mut found: Vec<&Entry> = self
            .stored()
            .rev()
            .filter(|e| pattern.matches(&e.input))
            .filter(|e| !unique || seen.insert(e.input.as_str()))
            .collect();
        if n > 0 {
            found.truncate(n);
        }
        found.reverse();
        found.into_iter().map(|e| e.to_reply(output)).collect()
    }
}

impl Entry {
    fn to_reply(&self, output: bool) -> HistoryEntry {
        if output {
            HistoryEntry::InputOutput(
                self.session,
                self.line,
                (self.input.clone(), self.output.clone().unwrap_or_default()),
            )
        } else {
            HistoryEntry::Input(self.session, self.line, self.input.clone())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(entries: &[HistoryEntry]) -> Vec<(usize, usize, String)> {
        entries
            .iter()
            .map(|e| match e {
                HistoryEntry::Input(s, l, i) => (*s, *l, i.clone()),
                HistoryEntry::InputOutput(s, l, (i, _)) => (*s, *l, i.clone()),
            })
            .collect()
    }

    #[test]
    fn sessions_are_numbered_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        let mut first = History::open(Some(&path));
        first.record(1, "let x = 1;", None);
        first.record(2, "x + 1", Some("2".into()));
        drop(first);
        let mut second = History::open(Some(&path));
        second.record(1, "x", None);
        assert_eq!(second.session, 2);
        assert_eq!(inputs(&second.tail(2, false)), vec![(1, 2, "x + 1".into()), (2, 1, "x".into())]);
        assert_eq!(inputs(&second.range(-1, 2, 3, false)), vec![(1, 2, "x + 1".into())]);
        assert_eq!(inputs(&second.range(0, 1, 0, false)), vec![(2, 1, "x".into())]);
        match &second.range(1, 2, 0, true)[0] {
            HistoryEntry::InputOutput(_, _, (_, out)) => assert_eq!(out, "2"),
            other => panic!("expected input and output, got {other:?}"),
        }
    }

    #[test]
    fn search_matches_globs_keeps_the_latest_of_duplicates_and_limits() {
        let mut history = History::open(None);
        for (line, input) in ["1 + 2", "let y = 3;", "1 + 2", "10 + 20", "1 + 2"].iter().enumerate() {
            history.record(line + 1, input, None);
        }
        assert_eq!(history.search("1*", 0, false, false).len(), 4);
        assert_eq!(
            inputs(&history.search("1*", 0, true, false)),
            vec![(1, 4, "10 + 20".into()), (1, 5, "1 + 2".into())]
        );
        assert_eq!(
            inputs(&history.search("1 + ?", 2, false, false)),
            vec![(1, 3, "1 + 2".into()), (1, 5, "1 + 2".into())]
        );
        assert!(history.search("[", 0, false, false).is_empty());
    }
}
