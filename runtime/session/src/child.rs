//! The driver inside evcxr's evaluation process.
//!
//! evcxr runs cells in a child process: the same executable, started again with
//! `EVCXR_IS_RUNTIME` set. That process is where cell code calls `ray::get`, so it
//! must be a Ray driver before evcxr takes it over: [`hook`] attaches it to the
//! session's cluster, routes worker output and progress to the side channel, and
//! turns SIGINT into an interrupt that cancels the cell's tasks while the process,
//! and the session's variables, survive.

use crate::protocol::{ChildEvent, Progress, ProgressRow};
use ray_abi::InitConfig;
use std::io::Write;
use std::sync::Arc;

/// The cluster the evaluation process attaches to.
pub(crate) const ENV_ADDRESS: &str = "RAYREPL_SESSION_ADDRESS";
/// The cluster token, handed over by the front-end.
pub(crate) const ENV_TOKEN: &str = "RAYREPL_SESSION_TOKEN";

/// Call first thing in `main`, after the cluster roles: in evcxr's evaluation
/// process it starts the driver and never returns; elsewhere it does nothing.
pub fn hook() {
    if std::env::var_os("EVCXR_IS_RUNTIME").is_some()
        && let Ok(address) = std::env::var(ENV_ADDRESS)
    {
        start_driver(address);
    }
    evcxr::runtime_hook();
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
    core.set_progress_sink(Arc::new(|p: &ray_core::Progress| {
        emit(&ChildEvent::Progress(Progress {
            elapsed_ms: p.elapsed.as_millis() as u64,
            rows: p
                .rows
                .iter()
                .map(|r| ProgressRow { name: r.name.clone(), done: r.done, running: r.running, pending: r.pending })
                .collect(),
            finished: p.finished,
        }))
    }));
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
    emit(&ChildEvent::DriverReady { job: core.job().0 });
}
