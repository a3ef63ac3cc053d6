//! The node daemon, Ray's raylet: one per machine.
//!
//! Tasks need a worker process and a share of the machine's resources, and the
//! machine's objects need one keeper. The node daemon provides both. Owners ask it
//! for a *lease*: a worker of their job plus the resources the task holds; the owner
//! then pushes tasks straight to that worker and returns the lease when done, so the
//! daemon is off the per-task path. It starts and reaps workers, gives a blocked
//! worker's CPU to others (so nested `get` cannot deadlock), forwards worker output
//! to the head, and keeps the accounting of the node's shared-memory object store.

mod placement;
mod pool;
mod service;

pub use service::{NodeConfig, NodeError, run};
