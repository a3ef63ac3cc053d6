//! Errors a Ray program can see, shared by the API crate and the runtime.
//!
//! Errors cross process boundaries (a task's panic travels to its caller, and on to
//! every task that depends on it) and the C-ABI boundary, so they are plain data that
//! serializes. Each message says what happened and what to do about it.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Everything that can go wrong in a Ray call.
///
/// `Debug` prints the same message as `Display`, so `fn main() -> Result<(), RayError>`
/// and `.unwrap()` show people a sentence rather than a struct dump.
#[derive(Clone, PartialEq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum RayError {
    /// The API was used before `ray::init()`.
    #[error("ray is not initialized: call ray::init() (or ray::init_with(..)) first")]
    NotInitialized,

    /// `ray::init()` was called twice.
    #[error("ray is already initialized in this process; call ray::shutdown() first")]
    AlreadyInitialized,

    /// A task ran and failed, or could not run because an input failed.
    #[error(transparent)]
    Task(#[from] TaskError),

    /// The worker running a task died and the retries ran out.
    #[error(
        "the worker running task `{function}` died ({detail}) after {attempts} attempt(s); \
         raise max_retries to retry more, or check the worker's log"
    )]
    WorkerCrashed {
        /// The task's name.
        function: String,
        /// How many times it was tried.
        attempts: u32,
        /// What the runtime saw.
        detail: String,
    },

    /// `get` or `wait` ran out of time.
    #[error("timed out after {timeout_ms} ms waiting for {pending} object(s) to be ready")]
    Timeout {
        /// The timeout that passed.
        timeout_ms: u64,
        /// How many objects were still not ready.
        pending: usize,
    },

    /// The object was read as a different type than it holds.
    #[error(
        "object {object} holds a `{stored}` but was read as `{requested}`; \
         use the type the task returns or the value that was put"
    )]
    TypeMismatch {
        /// The object.
        object: String,
        /// The type the object holds.
        stored: String,
        /// The type that was asked for.
        requested: String,
    },

    /// Bytes could not be decoded as the expected type.
    #[error("could not decode `{type_name}`: {detail}")]
    Decode {
        /// The type being decoded.
        type_name: String,
        /// What the decoder said.
        detail: String,
    },

    /// Serializing a value failed.
    #[error("could not serialize `{type_name}`: {detail}")]
    Encode {
        /// The type being encoded.
        type_name: String,
        /// What the encoder said.
        detail: String,
    },

    /// The object store cannot hold an object of this size.
    #[error(
        "object store full: a {requested} byte object does not fit ({used} of {capacity} bytes \
         in use); free references you no longer need, or start the cluster with a larger \
         object_store_memory"
    )]
    ObjectStoreFull {
        /// Size of the object.
        requested: u64,
        /// Bytes already in use.
        used: u64,
        /// The store's capacity.
        capacity: u64,
    },

    /// No node in the cluster can ever provide what the task asks for.
    #[error(
        "task `{function}` asks for {requested}, but no node in the cluster has that much \
         (cluster totals: {available}); lower the request or add a node that has it"
    )]
    Infeasible {
        /// The task's name.
        function: String,
        /// The requested resources, formatted.
        requested: String,
        /// What the cluster has in total, formatted.
        available: String,
    },

    /// The task was cancelled with `ray::cancel`.
    #[error("task `{function}` was cancelled")]
    Cancelled {
        /// The task's name.
        function: String,
    },

    /// The actor is dead, or died while running the call.
    #[error("actor {class} ({actor_id}) is dead: {cause}")]
    ActorDied {
        /// The actor's class.
        class: String,
        /// The actor's id.
        actor_id: String,
        /// Why: killed, crashed, its constructor panicked, or it exited.
        cause: String,
    },

    /// No live actor has this name.
    #[error(
        "no actor named {name:?} in namespace {namespace:?}; check the name, or create it with .options().name(..)"
    )]
    ActorNotFound {
        /// The name.
        name: String,
        /// The namespace.
        namespace: String,
    },

    /// The placement group was removed: it can no longer be waited on or scheduled into.
    #[error("placement group {id} was removed; create a new one with ray::util::placement_group(..)")]
    PlacementGroupRemoved {
        /// The group's id, in hex.
        id: String,
    },

    /// The task or actor can never be scheduled as asked (Ray's
    /// `TaskUnschedulableError` and `ActorUnschedulableError`).
    #[error("`{function}` cannot be scheduled: {reason}")]
    Unschedulable {
        /// The task's or actor's name.
        function: String,
        /// Why, and what to do.
        reason: String,
    },

    /// `Queue::get` found no item in time (Python's `queue.Empty`).
    #[error("the queue is empty")]
    QueueEmpty,

    /// `Queue::put` found no room in time (Python's `queue.Full`).
    #[error("the queue is full")]
    QueueFull,

    /// The object's owner died, so the object can no longer be reached.
    #[error("object {object} was lost: its owner ({owner}) is gone")]
    OwnerDied {
        /// The object.
        object: String,
        /// The owner's address.
        owner: String,
    },

    /// The object is gone and could not be rebuilt.
    #[error("object {object} was lost and could not be rebuilt: {detail}")]
    ObjectLost {
        /// The object.
        object: String,
        /// Why.
        detail: String,
    },

    /// A worker could not find or run the function it was asked to run.
    #[error("function `{function}` cannot run on this worker: {detail}")]
    FunctionUnavailable {
        /// The function.
        function: String,
        /// Why.
        detail: String,
    },

    /// A cluster process could not be reached.
    #[error("cannot reach {what}: {detail}")]
    Connection {
        /// Which process.
        what: String,
        /// The transport error.
        detail: String,
    },

    /// The cluster rejected our credentials, or we have none for it.
    #[error("{detail}")]
    Unauthenticated {
        /// What happened, where the token is and how to pass it.
        detail: String,
    },

    /// Starting or joining a cluster failed.
    #[error("could not start the cluster: {0}")]
    Startup(String),

    /// An argument was invalid.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// The user interrupted a blocking call (Ctrl-C, or a notebook's interrupt);
    /// the driver's outstanding tasks were cancelled.
    #[error("interrupted; the driver's outstanding tasks were cancelled")]
    Interrupted,

    /// A runtime invariant broke; this is a bug in rayrepl.
    #[error("internal error (please report): {0}")]
    Internal(String),
}

impl fmt::Debug for RayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl RayError {
    /// Encodes the error for the C-ABI or the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        postcard::to_stdvec(self).unwrap_or_else(|e| {
            postcard::to_stdvec(&RayError::Internal(format!("error not encodable: {e}")))
                .expect("a string error always encodes")
        })
    }

    /// Decodes an error encoded by [`RayError::to_bytes`].
    pub fn from_bytes(b: &[u8]) -> RayError {
        postcard::from_bytes(b).unwrap_or_else(|e| RayError::Internal(format!("undecodable error: {e}")))
    }
}

/// A task that failed: it panicked, or an input it depends on failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskError {
    /// The task's name (function name, or the `name` option).
    pub function: String,
    /// The panic message, or a description of the failure.
    pub message: String,
    /// Where the panic happened, `file:line:column`.
    pub location: Option<String>,
    /// The worker's process id.
    pub pid: u32,
    /// The node's IP address.
    pub ip: String,
    /// The upstream failure this task inherited through an argument.
    pub cause: Option<Box<RayError>>,
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.cause {
            // The task never ran, so there is no worker to name.
            Some(cause) => write!(f, "task `{}` could not run: {}\n  caused by: {cause}", self.function, self.message),
            None => {
                write!(f, "task `{}` (pid={}, ip={}) panicked: {}", self.function, self.pid, self.ip, self.message)?;
                if let Some(loc) = &self.location {
                    write!(f, " at {loc}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for TaskError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause.as_deref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Convenience alias used across the API.
pub type RayResult<T> = Result<T, RayError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_round_trip_through_bytes() {
        let e = RayError::Task(TaskError {
            function: "follow_up".into(),
            message: "argument 0 failed".into(),
            location: None,
            pid: 3,
            ip: "127.0.0.1".into(),
            cause: Some(Box::new(RayError::Task(TaskError {
                function: "retrieve".into(),
                message: "boom".into(),
                location: Some("src/main.rs:3:5".into()),
                pid: 2,
                ip: "127.0.0.1".into(),
                cause: None,
            }))),
        });
        let back = RayError::from_bytes(&e.to_bytes());
        assert_eq!(back, e);
        let text = back.to_string();
        assert!(text.contains("follow_up") && text.contains("boom") && text.contains("src/main.rs:3:5"), "{text}");
    }
}
