//! The contract between the thin `ray` API crate and the runtime that hosts it.
//!
//! User code may live in a compiled program or in a REPL cell library that carries
//! its own copy of `ray` and of its statics. Connections, reference tables and
//! registries must therefore live in one place, the hosting process, and every copy
//! of `ray` must reach that one place. This crate defines how: a `#[repr(C)]`
//! function table ([`HostTable`]) that passes only bytes and plain structs, the
//! identifiers and error types both sides agree on, and the registry through which a
//! compiled program's workers find its remote functions.

pub mod cell_marker;
pub mod error;
pub mod ids;
pub mod placement;
pub mod side_channel;
pub mod spec;
pub mod table;

pub use error::{RayError, RayResult, TaskError};
pub use ids::{ActorId, JobId, ObjectId, PlacementGroupId, TaskId};
pub use linkme;
pub use placement::{
    Bundle, GroupState, PlacementGroupCreation, PlacementGroupReply, PlacementGroupRequest, PlacementGroupState,
    PlacementStrategy, SchedulingStrategy,
};
pub use spec::{
    ActorCall, ActorCreation, ActorOptions, ActorRef, ArgSubmission, FunctionDescriptor, InitConfig, RuntimeContext,
    TaskOptions, TaskSubmission,
};
pub use table::*;

/// The compiler and target this crate was built with (`rustc -vV`'s version line
/// and the target triple; see build.rs). Cell libraries carry it in their mark
/// ([`cell_marker`]); a worker refuses one built for another ABI.
pub const ABI_KEY: &str = env!("RAYREPL_ABI_KEY");

/// A remote function compiled into the current executable.
///
/// `#[ray::remote]` adds one entry per function to [`TASK_REGISTRY`]; a worker that
/// runs the driver's own executable finds trampolines here by key.
#[derive(Debug)]
pub struct TaskEntry {
    /// Unique key: module path and function name.
    pub key: &'static str,
    /// The trampoline that decodes arguments, runs the function and encodes the result.
    pub func: TaskFn,
}

/// Every remote function linked into this executable.
#[linkme::distributed_slice]
pub static TASK_REGISTRY: [TaskEntry];

/// Looks up a remote function of this executable by its key.
pub fn find_task(key: &str) -> Option<TaskFn> {
    TASK_REGISTRY.iter().find(|e| e.key == key).map(|e| e.func)
}
