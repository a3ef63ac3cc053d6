//! The driver inside evcxr's evaluation process.
//!
//! evcxr runs cells in a child process: the same executable, started again with
//! `EVCXR_IS_RUNTIME` set. That process is where cell code calls `ray::get`, so it
//! must be a Ray driver before evcxr takes it over: [`hook`] attaches it to the
//! session's cluster, routes worker output and progress to the side channel, and
//! turns SIGINT into an interrupt that cancels the cell's tasks while the process,
//! and the session's variables, survive. It also relays the process's stdout, so
//! that a cell that fails with `?` is reported as failed.

use crate::protocol::ChildEvent;
use ray_abi::InitConfig;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::{Arc, OnceLock};

/// What evcxr's generated code prints on stdout when user code returns an error
/// with `?` (`evcxr_internal_runtime::USER_ERROR_OCCURRED`, not public).
const EVCXR_USER_ERROR: &[u8] = b"EVCXR_ERROR_OCCURRED";
/// What evcxr's runtime prints on stdout when a cell's code has returned
/// (`evcxr::runtime::EVCXR_EXECUTION_COMPLETE`, not public).
const EVCXR_EXECUTION_COMPLETE: &[u8] = b"EVCXR_EXECUTION_COMPLETE";

/// This process's driver, once attached: the stdout relay flushes its worker
/// output at the end of every cell.
static DRIVER: OnceLock<ray_core::CoreWorker> = OnceLock::new();

/// The cluster the evaluation process attaches to.
pub(crate) const ENV_ADDRESS: &str = "RAYREPL_SESSION_ADDRESS";
/// The cluster token, handed over by the front-end.
pub(crate) const ENV_TOKEN: &str = "RAYREPL_SESSION_TOKEN";
/// The front-end's pid: only its own child is the evaluation process.
pub(crate) const ENV_FRONT_END: &str = "RAYREPL_SESSION_FRONT_END";

/// Call first thing in `main`, after the cluster roles: in evcxr's evaluation
/// process it starts the driver and never returns; elsewhere it does nothing.
pub fn hook() {
    if std::env::var_os("EVCXR_IS_RUNTIME").is_some() && !started_by_front_end() {
        // A process that cell code started (`rayrepl status`, say) inherited the
        // evaluation process's environment; it is an ordinary command.
        for var in ["EVCXR_IS_RUNTIME", ENV_ADDRESS, ENV_TOKEN, ENV_FRONT_END] {
            // SAFETY: first thing in `main`, before this process starts any thread.
            unsafe { std::env::remove_var(var) };
        }
    }
    if std::env::var_os("EVCXR_IS_RUNTIME").is_some()
        && let Ok(address) = std::env::var(ENV_ADDRESS)
    {
        if let Err(e) = relay_stdout() {
            eprintln!("rayrepl: cannot relay stdout ({e}); cells that fail with `?` will look successful");
        }
        start_driver(address);
    }
    evcxr::runtime_hook();
}

/// evcxr tells only itself that a cell returned an error with `?`, or that its
/// code returned at all: it consumes marker lines on the process's stdout.
/// Passing stdout through a pipe lets this process act on them in order with
/// everything else the cell printed: it adds a `CellFailed` event before the
/// error's marker, and before the end's marker it waits until the driver has
/// shown the worker output the cell caused, then says so with `OutputFlushed`.
fn relay_stdout() -> std::io::Result<()> {
    let (reader, writer) = std::io::pipe()?;
    // SAFETY: dup(2) of fd 1, which is open for the life of the process.
    let original = unsafe { libc::dup(1) };
    if original < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `original` was just returned by dup and nothing else owns it.
    let mut original = unsafe { File::from_raw_fd(original) };
    // SAFETY: dup2(2) with two open descriptors; fd 1 now writes into the pipe, and
    // the pipe's own write end is closed when `writer` drops.
    if unsafe { libc::dup2(writer.as_raw_fd(), 1) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    drop(writer);
    let failed = format!("{}\n", ChildEvent::CellFailed.encode());
    std::thread::Builder::new().name("stdout-relay".into()).spawn(move || {
        let mut reader = BufReader::new(reader);
        let mut line = Vec::new();
        let mut cells_ended = 0;
        while matches!(reader.read_until(b'\n', &mut line), Ok(n) if n > 0) {
            let marker = line.strip_suffix(b"\n").unwrap_or(&line);
            if marker == EVCXR_USER_ERROR {
                let _ = original.write_all(failed.as_bytes());
            }
            if marker == EVCXR_EXECUTION_COMPLETE {
                cells_ended += 1;
                if let Some(driver) = DRIVER.get() {
                    driver.flush_worker_output_blocking();
                }
                let flushed = ChildEvent::OutputFlushed { mark: cells_ended };
                emit(&flushed);
                // evcxr waits until the front-end has taken every stdout line, and
                // its first run (`42`, while it starts) has nobody taking them yet.
                if cells_ended > 1 {
                    let _ = original.write_all(format!("{}\n", flushed.encode()).as_bytes());
                }
            }
            if original.write_all(&line).is_err() {
                break;
            }
            line.clear();
        }
    })?;
    Ok(())
}

fn started_by_front_end() -> bool {
    let front_end = std::env::var(ENV_FRONT_END).ok().and_then(|p| p.parse::<u32>().ok());
    front_end == Some(std::os::unix::process::parent_id())
}

fn emit(event: &ChildEvent) {
    let _ = writeln!(std::io::stderr().lock(), "{}", event.encode());
}

fn start_driver(address: String) {
    ray_runtime::mark_hosted_session();
    let config = InitConfig {
        address: Some(address),
        token: std::env::var(ENV_TOKEN).ok(),
        log_to_driver: Some(true),
        ..InitConfig::default()
    };
    let host = match ray_runtime::init_driver(config) {
        Ok(host) => host,
        Err(e) => {
            emit(&ChildEvent::DriverFailed { message: e.to_string() });
            return;
        }
    };
    let core = host.core.clone();
    let node_ip = core.node_ip().to_string();
    core.set_log_sink(Box::new(move |line| {
        let text = ray_core::format_log_line(line, &node_ip);
        emit(&if line.is_stderr {
            ChildEvent::WorkerStderr { line: text }
        } else {
            ChildEvent::WorkerStdout { line: text }
        })
    }));
    core.set_progress_sink(Arc::new(|p: &ray_core::Progress| emit(&ChildEvent::Progress(p.clone()))));
    let interrupted = core.clone();
    // Installed before the first cell runs, so SIGINT never kills this process.
    let sigint = {
        let _entered = core.runtime().enter();
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
    };
    core.runtime().spawn(async move {
        let Ok(mut sigint) = sigint else { return };
        while sigint.recv().await.is_some() {
            let cancelled = interrupted.interrupt();
            emit(&ChildEvent::Interrupted { cancelled });
        }
    });
    let _ = DRIVER.set(core.clone());
    emit(&ChildEvent::DriverReady { job: core.job().0 });
}
