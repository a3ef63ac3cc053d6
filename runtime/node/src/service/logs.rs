//! The node's log files, for `rayrepl logs` (Ray's `ray logs`).
//!
//! Worker output is forwarded to its driver as it is printed, but a driver that
//! has gone, or a daemon's own messages, can only be read where they were written:
//! in each node's session log directory, on its machine. The node lists those
//! files and returns one of them (its end, if it is long) to anyone holding the
//! cluster token; names are plain file names, so nothing outside that directory
//! can be read.

use super::Shared;
use ray_proto::{ListLogsReply, LogFile, ReadLogReply, ReadLogRequest};
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use tonic::Status;

/// The most of one file a reply carries (its end, if the file is longer): far more
/// than anyone reads in a terminal, far less than a gRPC message may hold.
const MOST_PER_REPLY: u64 = 16 << 20;

impl Shared {
    fn log_dir(&self) -> PathBuf {
        self.config.session_dir.join("logs")
    }

    /// The files in the log directory, by name.
    pub(crate) async fn list_logs(&self) -> Result<ListLogsReply, Status> {
        let dir = self.log_dir();
        let listed = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<LogFile>> {
            let mut files = Vec::new();
            for entry in std::fs::read_dir(&dir)? {
                let entry = entry?;
                let meta = entry.metadata()?;
                if meta.is_file() {
                    files.push(LogFile { name: entry.file_name().to_string_lossy().into_owned(), size: meta.len() });
                }
            }
            files.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(files)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
        let files = listed.map_err(|e| Status::unavailable(format!("cannot list this node's logs: {e}")))?;
        Ok(ListLogsReply { files })
    }

    /// One log file, or its last `tail_lines` lines.
    pub(crate) async fn read_log(&self, req: ReadLogRequest) -> Result<ReadLogReply, Status> {
        let name = req.name;
        if !is_plain_name(&name) {
            return Err(Status::invalid_argument(format!(
                "{name:?} is not a log file name; `rayrepl logs` lists them"
            )));
        }
        let path = self.log_dir().join(&name);
        let read = tokio::task::spawn_blocking(move || read_end(&path, MOST_PER_REPLY))
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        let (mut data, mut truncated) = read.map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Status::not_found(format!("this node has no log file {name}")),
            _ => Status::unavailable(format!("cannot read log file {name}: {e}")),
        })?;
        if req.tail_lines > 0 {
            let (start, cut) = tail_start(&data, req.tail_lines as usize);
            data.drain(..start);
            truncated |= cut;
        }
        Ok(ReadLogReply { data: data.into(), truncated })
    }
}

/// A file name with no way out of the directory it is looked up in.
fn is_plain_name(name: &str) -> bool {
    !(name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']))
}

/// The last `most` bytes of a file, and whether that is less than all of it.
fn read_end(path: &std::path::Path, most: u64) -> std::io::Result<(Vec<u8>, bool)> {
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    let skip = len.saturating_sub(most);
    file.seek(SeekFrom::Start(skip))?;
    let mut data = Vec::with_capacity((len - skip) as usize);
    file.take(most).read_to_end(&mut data)?;
    Ok((data, skip > 0))
}

/// Where the last `lines` lines of `data` start, and whether lines come before.
fn tail_start(data: &[u8], lines: usize) -> (usize, bool) {
    // A final newline ends the last line; it does not start another.
    let body = data.strip_suffix(b"\n").unwrap_or(data);
    match body.iter().enumerate().rev().filter(|(_, b)| **b == b'\n').nth(lines - 1) {
        Some((newline, _)) => (newline + 1, true),
        None => (0, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_names_are_read() {
        assert!(is_plain_name("worker-42.out"));
        for name in ["", ".", "..", "../token", "/etc/passwd", "a/b", "nul\0"] {
            assert!(!is_plain_name(name), "{name:?}");
        }
    }

    #[test]
    fn the_tail_is_the_last_lines_whole() {
        let data = b"one\ntwo\nthree\n";
        assert_eq!(tail_start(data, 1), (8, true));
        assert_eq!(&data[tail_start(data, 2).0..], b"two\nthree\n");
        assert_eq!(tail_start(data, 3), (0, false));
        assert_eq!(tail_start(data, 10), (0, false));
        assert_eq!(&b"a\nno newline"[tail_start(b"a\nno newline", 1).0..], b"no newline");
    }

    #[test]
    fn a_long_file_is_read_from_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("worker-1.out");
        std::fs::write(&path, b"0123456789").unwrap();
        assert_eq!(read_end(&path, 4).unwrap(), (b"6789".to_vec(), true));
        assert_eq!(read_end(&path, 100).unwrap(), (b"0123456789".to_vec(), false));
    }
}
