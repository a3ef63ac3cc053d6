//! The rayrepl Jupyter kernel.
//!
//! Notebooks are where most people meet rayrepl, and they expect what ipykernel
//! gives them: output that streams while a cell runs, rich values, completion,
//! `is_complete`, history, an interrupt that stops the cell but keeps its
//! variables, and a clean shutdown. This crate speaks the Jupyter messaging
//! protocol (jupyter-protocol over ZeroMQ) on top of the same evaluation session
//! as the terminal REPL ([`ray_session::Session`]), so a cell behaves the same in
//! both. The kernel starts a local cluster for the notebook, or attaches to the
//! one at `RAYREPL_ADDRESS`, and tears down what it started when it shuts down.
//!
//! Layout: [`server`] owns the sockets and the message loops; [`engine`] owns the
//! cluster and the session on a thread of its own, because evaluation blocks;
//! [`render`] turns progress and cluster state into text and HTML; [`history`]
//! keeps the inputs that `history_request` searches; [`install`] writes the
//! kernelspec.

mod engine;
mod history;
pub mod install;
mod render;
mod server;
mod wire;

use std::path::{Path, PathBuf};

/// Why the kernel could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// The connection file Jupyter passed could not be read.
    #[error("cannot read the connection file {path}: {detail}")]
    ConnectionFile {
        /// The file.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// A socket could not be bound or used.
    #[error("Jupyter socket error: {0}; is another kernel using the ports in the connection file?")]
    Socket(String),
    /// The kernel's I/O runtime could not start.
    #[error("cannot start the kernel's I/O runtime: {0}")]
    Runtime(String),
    /// The kernelspec could not be written.
    #[error("cannot install the kernelspec into {path}: {detail}")]
    Install {
        /// Where it was going.
        path: PathBuf,
        /// Why.
        detail: String,
    },
}

impl From<jupyter_zmq_client::RuntimeError> for KernelError {
    fn from(e: jupyter_zmq_client::RuntimeError) -> Self {
        KernelError::Socket(e.to_string())
    }
}

/// What the kernel attaches to.
#[derive(Debug, Clone, Default)]
pub struct KernelOptions {
    /// A running cluster's head address; `None` starts a local cluster.
    pub address: Option<String>,
}

/// Runs the kernel described by `connection_file` until a client shuts it down.
pub fn run(connection_file: &Path, options: KernelOptions) -> Result<(), KernelError> {
    let text = std::fs::read_to_string(connection_file)
        .map_err(|e| KernelError::ConnectionFile { path: connection_file.to_path_buf(), detail: e.to_string() })?;
    let info: jupyter_protocol::ConnectionInfo = serde_json::from_str(&text)
        .map_err(|e| KernelError::ConnectionFile { path: connection_file.to_path_buf(), detail: e.to_string() })?;
    server::serve(info, options)
}
