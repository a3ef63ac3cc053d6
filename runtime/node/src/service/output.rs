//! Worker output on its way to the driver, and the flush that puts it in order.
//!
//! A worker's stdout and stderr are pipes this node reads line by line: each line
//! goes to the worker's log file and is published to the head, which streams it
//! to the job's driver. That path is asynchronous, so a task's result can reach
//! the driver before the lines the task printed, and a REPL would show
//! `result: [1, 1]` above the `(f pid=…)` lines that explain it.
//!
//! A driver that wants its output in order asks for a flush (the REPL and the
//! kernel do at the end of every cell). A task's writes happen before its result
//! is sent, so by the time the driver has seen the result and asks, those bytes
//! are in the pipe. The node reads exactly what each of the job's pipes holds at
//! that moment (`FIONREAD`), publishes it, and answers once the head has it; the
//! head then marks the job's stream, and the driver waits for the mark. Nothing is
//! added to the worker or to the task's hot path: the cost is one round trip per
//! flush.

use ray_proto::{HeadClient, LogBatch, LogLine, TASK_MARKER};
use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};

/// How long a flush waits for the rest of a line a worker began without ending
/// it (`print!` with no newline, then a long sleep): the flush goes on without it.
const PARTIAL_LINE_PATIENCE: Duration = Duration::from_millis(50);
/// The most a flush waits on this node, whatever its workers do.
pub(super) const FLUSH_LIMIT: Duration = Duration::from_secs(2);
/// Lines gathered into one publication at most, so a burst goes out in few
/// messages without any one growing without bound.
const MOST_LINES_PER_PUBLICATION: usize = 1000;

/// What the readers hand the publisher, in order.
pub(super) enum Outgoing {
    /// A line of a job's worker output.
    Line { job: u32, line: LogLine },
    /// Answered once every line queued before it has reached the head.
    Published(oneshot::Sender<()>),
}

/// A request that a reader hand on what its pipe holds, answered when it has.
type FlushRequest = oneshot::Sender<()>;

/// The node's output readers, by job, so a flush reaches the right ones.
#[derive(Default)]
pub(super) struct OutputReaders {
    readers: Mutex<Vec<(u32, mpsc::UnboundedSender<FlushRequest>)>>,
}

impl OutputReaders {
    /// Registers a reader of `job`'s output; it answers flushes on the receiver.
    pub(super) fn register(&self, job: u32) -> mpsc::UnboundedReceiver<FlushRequest> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut readers = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        // Readers of exited workers are gone; forget them here, where it is cheap.
        readers.retain(|(_, r)| !r.is_closed());
        readers.push((job, tx));
        rx
    }

    /// Asks every reader of `job` to hand on what its pipe holds; returns when
    /// they all have (or gave up on a partial line), or after [`FLUSH_LIMIT`].
    pub(super) async fn flush(&self, job: u32) {
        let answers: Vec<_> = {
            let readers = self.readers.lock().unwrap_or_else(|p| p.into_inner());
            readers
                .iter()
                .filter(|(j, _)| *j == job)
                .filter_map(|(_, reader)| {
                    let (ask, answer) = oneshot::channel();
                    reader.send(ask).ok().map(|()| answer)
                })
                .collect()
        };
        let all = async {
            for answer in answers {
                // A reader that ended (its worker exited) has handed on everything.
                let _ = answer.await;
            }
        };
        if tokio::time::timeout(FLUSH_LIMIT, all).await.is_err() {
            tracing::warn!("job {job}'s worker output was not all read within {FLUSH_LIMIT:?}");
        }
    }
}

/// One of a worker's two output pipes, and where its lines go.
pub(super) struct WorkerOutput {
    pub(super) pid: u32,
    pub(super) job: u32,
    pub(super) is_stderr: bool,
    pub(super) log_path: PathBuf,
    pub(super) ip: String,
}

impl WorkerOutput {
    /// Reads the pipe until the worker closes it, answering flushes meanwhile.
    pub(super) async fn relay(
        self,
        stream: impl AsyncRead + AsRawFd + Unpin,
        mut flushes: mpsc::UnboundedReceiver<FlushRequest>,
        sink: mpsc::UnboundedSender<Outgoing>,
    ) {
        let fd = stream.as_raw_fd();
        let mut stream = BufReader::new(stream);
        let mut relay =
            Relay { output: &self, sink, file: self.open_log().await, partial: Vec::new(), task_name: String::new() };
        loop {
            tokio::select! {
                biased;
                read = stream.read_until(b'\n', &mut relay.partial) => match read {
                    Ok(n) if n > 0 && relay.partial.ends_with(b"\n") => relay.hand_on().await,
                    _ => break,
                },
                Some(answer) = flushes.recv() => {
                    relay.drain(&mut stream, pending_bytes(fd)).await;
                    let _ = answer.send(());
                }
            }
        }
        // The worker is gone: what it printed last without a newline still counts.
        if !relay.partial.is_empty() {
            relay.hand_on().await;
        }
    }

    async fn open_log(&self) -> Option<tokio::fs::File> {
        match tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(ray_proto::private::FILE_MODE)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&self.log_path)
            .await
        {
            Ok(f) => Some(f),
            Err(e) => {
                tracing::warn!("worker {}'s output is not kept in {}: {e}", self.pid, self.log_path.display());
                None
            }
        }
    }
}

/// A reader's state between lines.
struct Relay<'a> {
    output: &'a WorkerOutput,
    sink: mpsc::UnboundedSender<Outgoing>,
    file: Option<tokio::fs::File>,
    /// Bytes read that do not end a line yet; `read_until` keeps them here when
    /// a flush interrupts it.
    partial: Vec<u8>,
    /// The task the worker runs, named by the marker it writes to each stream
    /// before the task's first line there. Each stream has its own: one may be
    /// read ahead of the other.
    task_name: String,
}

impl Relay<'_> {
    /// Reads the `in_pipe` bytes the pipe held when the flush was asked for, and
    /// hands on every whole line among them and those already buffered.
    async fn drain<R: AsyncRead + Unpin>(&mut self, stream: &mut BufReader<R>, in_pipe: usize) {
        let mut left = in_pipe + stream.buffer().len();
        while left > 0 {
            let before = self.partial.len();
            match tokio::time::timeout(PARTIAL_LINE_PATIENCE, stream.read_until(b'\n', &mut self.partial)).await {
                Ok(Ok(n)) if n > 0 => {
                    left = left.saturating_sub(self.partial.len() - before);
                    if self.partial.ends_with(b"\n") {
                        self.hand_on().await;
                    }
                }
                // End of the pipe, an error, or a line begun and not finished.
                _ => break,
            }
        }
    }

    /// Writes the line in `partial` to the log file and hands it to the publisher.
    async fn hand_on(&mut self) {
        let raw = std::mem::take(&mut self.partial);
        let text = String::from_utf8_lossy(&raw);
        let text = text.trim_end_matches('\n').trim_end_matches('\r');
        let output = self.output;
        if let Some(name) = text.strip_prefix(TASK_MARKER) {
            self.task_name = name.to_string();
            return;
        }
        if let Some(f) = self.file.as_mut()
            && let Err(e) = async {
                f.write_all(text.as_bytes()).await?;
                f.write_all(b"\n").await
            }
            .await
        {
            tracing::warn!("worker {}'s output is no longer kept in {}: {e}", output.pid, output.log_path.display());
            self.file = None;
        }
        let line = LogLine {
            pid: output.pid,
            task_name: self.task_name.clone(),
            is_stderr: output.is_stderr,
            line: text.to_string(),
            ip: output.ip.clone(),
        };
        // The publisher outlives every worker but stops with the node daemon, when
        // nobody is left to show the line to.
        let _ = self.sink.send(Outgoing::Line { job: output.job, line });
    }
}

/// How many bytes the pipe behind `fd` holds unread.
fn pending_bytes(fd: std::os::fd::RawFd) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD stores one c_int through the pointer, which points at `n`
    // for the whole call; `fd` is the pipe the caller still owns.
    if unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) } < 0 {
        return 0;
    }
    usize::try_from(n).unwrap_or(0)
}

/// Publishes worker output to the head, a batch per job, in the order it was read.
pub(super) async fn publish(mut rx: mpsc::UnboundedReceiver<Outgoing>, head: HeadClient) {
    while let Some(first) = rx.recv().await {
        let mut batches: HashMap<u32, Vec<LogLine>> = HashMap::new();
        let mut published = Vec::new();
        let mut lines = 0;
        let mut next = Some(first);
        while let Some(item) = next.take() {
            match item {
                Outgoing::Line { job, line } => {
                    batches.entry(job).or_default().push(line);
                    lines += 1;
                }
                Outgoing::Published(answer) => published.push(answer),
            }
            // What is already queued goes in the same publication.
            if lines < MOST_LINES_PER_PUBLICATION {
                next = rx.try_recv().ok();
            }
        }
        for (job_id, lines) in batches {
            if let Err(e) = head.clone().publish_logs(LogBatch { job_id, lines, flush: 0 }).await {
                tracing::debug!("could not publish job {job_id}'s worker output: {e}");
            }
        }
        for answer in published {
            let _ = answer.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker_output(dir: &tempfile::TempDir) -> WorkerOutput {
        WorkerOutput {
            pid: 7,
            job: 3,
            is_stderr: false,
            log_path: dir.path().join("worker-7.out"),
            ip: "127.0.0.1".into(),
        }
    }

    #[tokio::test]
    async fn a_drain_reads_exactly_what_the_pipe_held() {
        let (mut writer, reader) = tokio::net::unix::pipe::pipe().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let output = worker_output(&dir);
        let (sink, mut out) = mpsc::unbounded_channel();
        let mut relay = Relay { output: &output, sink, file: None, partial: Vec::new(), task_name: String::new() };
        writer.write_all(b"one\ntwo\r\nthree, unfinished").await.unwrap();
        let fd = reader.as_raw_fd();
        assert_eq!(pending_bytes(fd), "one\ntwo\r\nthree, unfinished".len());
        let mut stream = BufReader::new(reader);
        relay.drain(&mut stream, pending_bytes(fd)).await;
        let mut got = Vec::new();
        while let Ok(Outgoing::Line { line, .. }) = out.try_recv() {
            got.push(line.line);
        }
        assert_eq!(got, ["one", "two"]);
        assert_eq!(relay.partial, b"three, unfinished", "the unfinished line waits for its end");
    }

    #[tokio::test]
    async fn a_flush_hands_on_every_whole_line_already_in_the_pipe() {
        let (mut writer, reader) = tokio::net::unix::pipe::pipe().unwrap();
        let readers = OutputReaders::default();
        let (sink, mut out) = mpsc::unbounded_channel();
        let dir = tempfile::tempdir().unwrap();
        let output = worker_output(&dir);
        let relay = tokio::spawn(output.relay(reader, readers.register(3), sink));
        // Many lines, a task marker and a line not yet ended.
        let mut written = format!("{TASK_MARKER}f\n");
        for i in 0..2000 {
            written.push_str(&format!("line {i}\n"));
        }
        written.push_str("no newline yet");
        writer.write_all(written.as_bytes()).await.unwrap();
        // Another job's flush asks nothing of this reader.
        readers.flush(4).await;
        readers.flush(3).await;
        let mut got = Vec::new();
        while let Ok(Outgoing::Line { job, line }) = out.try_recv() {
            assert_eq!((job, line.task_name.as_str()), (3, "f"));
            got.push(line.line);
        }
        assert_eq!(got.len(), 2000, "every whole line is handed on before the flush answers");
        assert_eq!(got[1999], "line 1999");
        drop(writer);
        relay.await.unwrap();
        match out.try_recv() {
            Ok(Outgoing::Line { line, .. }) => assert_eq!(line.line, "no newline yet"),
            _ => panic!("the unfinished line comes when the pipe closes"),
        }
        let log = std::fs::read_to_string(dir.path().join("worker-7.out")).unwrap();
        assert_eq!(log.lines().count(), 2001);
    }
}
