//! The C-ABI function table the host runtime exports.
//!
//! Only plain `#[repr(C)]` structs and byte slices cross it, because the two sides
//! may be different copies of the Rust standard library (a cell library links the
//! toolchain's `libstd-*.so`, the host links std statically). Bytes handed from the
//! host to the API crate stay owned by the host until the API crate calls
//! [`HostTable::release`] with their handle.

use crate::ids::{ActorId, ObjectId};
use std::ffi::c_void;

/// Bumped whenever the table's layout or meaning changes.
pub const ABI_VERSION: u32 = 2;

/// The symbol under which a host process exports `&'static HostTable`.
pub const HOST_TABLE_SYMBOL: &str = "RAYREPL_HOST_TABLE_V1";

/// Return code of table calls: success.
pub const STATUS_OK: i32 = 0;
/// Return code of table calls: failure, with an encoded `RayError` in `err`.
pub const STATUS_ERR: i32 = 1;

/// Borrowed bytes passed from the API crate to the host.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Slice {
    /// Start of the bytes.
    pub ptr: *const u8,
    /// Number of bytes.
    pub len: usize,
}

impl Slice {
    /// Borrows `b` for the duration of a table call.
    pub fn of(b: &[u8]) -> Self {
        Slice { ptr: b.as_ptr(), len: b.len() }
    }

    /// An empty slice.
    pub const EMPTY: Slice = Slice { ptr: std::ptr::NonNull::<u8>::dangling().as_ptr(), len: 0 };

    /// Views the bytes.
    ///
    /// # Safety
    /// `ptr` must point to `len` readable bytes that live as long as `'a`.
    pub unsafe fn as_bytes<'a>(&self) -> &'a [u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: the caller guarantees ptr/len describe live, readable memory.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// Bytes owned by the host, lent to the API crate until `release(handle)`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct HostBuf {
    /// Start of the bytes.
    pub ptr: *const u8,
    /// Number of bytes.
    pub len: usize,
    /// Pass to [`HostTable::release`] when done; 0 means nothing to release.
    pub handle: u64,
}

impl HostBuf {
    /// An empty buffer with nothing to release.
    pub const EMPTY: HostBuf = HostBuf { ptr: std::ptr::null(), len: 0, handle: 0 };
}

/// A call into a remote function's trampoline.
#[repr(C)]
#[derive(Debug)]
pub struct TaskCall {
    /// The encoded arguments, one slice each, in order.
    pub args: *const Slice,
    /// Number of arguments.
    pub n_args: usize,
    /// The host's context for this call; pass it back in `task_return`/`task_fail`.
    pub ctx: *mut c_void,
    /// The host's table.
    pub host: *const HostTable,
    /// The actor instance a method runs on (made by the constructor); null for tasks.
    pub instance: *mut c_void,
}

/// A remote function's trampoline: decodes arguments, runs the function and hands
/// the encoded result (or failure) back through `call.host`.
pub type TaskFn = unsafe extern "C" fn(call: *const TaskCall);

/// Callback invoked once an object becomes ready (or failed).
pub type ReadyCallback = unsafe extern "C" fn(data: *mut c_void);

/// The functions a host runtime provides to every copy of the API crate.
///
/// Every function returning `i32` returns [`STATUS_OK`] or [`STATUS_ERR`]; on error
/// it fills `err` with an encoded `RayError` that the caller must release.
#[repr(C)]
#[derive(Debug)]
pub struct HostTable {
    /// Must equal [`ABI_VERSION`].
    pub abi_version: u32,
    /// Starts or attaches to a cluster. `config` is an encoded `InitConfig`.
    pub init: unsafe extern "C" fn(config: Slice, err: *mut HostBuf) -> i32,
    /// Disconnects and stops a cluster this process started.
    pub shutdown: unsafe extern "C" fn(),
    /// Whether `init` has run (or this process is a worker).
    pub is_initialized: unsafe extern "C" fn() -> bool,
    /// Stores an object made of `parts` concatenated; `contained` lists refs nested in it.
    pub put: unsafe extern "C" fn(
        parts: *const Slice,
        n_parts: usize,
        contained: *const ObjectId,
        n_contained: usize,
        out: *mut ObjectId,
        err: *mut HostBuf,
    ) -> i32,
    /// Submits a task; `spec` is an encoded `TaskSubmission`. Writes the return ref.
    pub submit_task: unsafe extern "C" fn(spec: Slice, out: *mut ObjectId, err: *mut HostBuf) -> i32,
    /// Waits up to `timeout_ms` (negative: forever) for an object and lends its bytes.
    pub get: unsafe extern "C" fn(id: *const ObjectId, timeout_ms: i64, out: *mut HostBuf, err: *mut HostBuf) -> i32,
    /// Ray's `wait`: marks `ready[i] = 1` for ready objects once `num_returns` are
    /// ready or the timeout passes.
    pub wait: unsafe extern "C" fn(
        ids: *const ObjectId,
        n: usize,
        num_returns: usize,
        timeout_ms: i64,
        ready: *mut u8,
        err: *mut HostBuf,
    ) -> i32,
    /// Calls `cb(data)` once, from a runtime thread, when the object is ready or failed.
    pub on_ready: unsafe extern "C" fn(id: *const ObjectId, cb: ReadyCallback, data: *mut c_void),
    /// Releases bytes lent by the host.
    pub release: unsafe extern "C" fn(handle: u64),
    /// A new local handle to an object exists (an `ObjectRef` was cloned).
    pub add_local_ref: unsafe extern "C" fn(id: *const ObjectId),
    /// A local handle was dropped.
    pub remove_local_ref: unsafe extern "C" fn(id: *const ObjectId),
    /// Lends the owner address of an object this process holds, for serialization.
    pub owner_of: unsafe extern "C" fn(id: *const ObjectId, out: *mut HostBuf, err: *mut HostBuf) -> i32,
    /// Registers a ref that was just deserialized; counts as one local handle.
    pub adopt_ref: unsafe extern "C" fn(id: *const ObjectId, owner: Slice, err: *mut HostBuf) -> i32,
    /// Cancels the task that produces `id`.
    pub cancel: unsafe extern "C" fn(id: *const ObjectId, force: bool, err: *mut HostBuf) -> i32,
    /// Hands back a task's encoded return value.
    pub task_return: unsafe extern "C" fn(
        ctx: *mut c_void,
        parts: *const Slice,
        n_parts: usize,
        contained: *const ObjectId,
        n_contained: usize,
    ),
    /// Reports that a task failed; `err` is an encoded `RayError`.
    pub task_fail: unsafe extern "C" fn(ctx: *mut c_void, err: Slice),
    /// Lends an encoded `RuntimeContext`.
    pub context: unsafe extern "C" fn(out: *mut HostBuf, err: *mut HostBuf) -> i32,
    /// Creates an actor; `spec` is an encoded `ActorCreation`. Writes its id.
    pub create_actor: unsafe extern "C" fn(spec: Slice, out: *mut ActorId, err: *mut HostBuf) -> i32,
    /// Calls an actor method; `call` is an encoded `ActorCall`. Writes the return ref.
    pub call_actor: unsafe extern "C" fn(call: Slice, out: *mut ObjectId, err: *mut HostBuf) -> i32,
    /// Kills an actor (`ray::kill`); with `no_restart` it stays dead.
    pub kill_actor: unsafe extern "C" fn(id: *const ActorId, no_restart: bool, err: *mut HostBuf) -> i32,
    /// Looks up a live named actor; lends an encoded `ActorRef`. An empty
    /// namespace means the caller's.
    pub get_actor: unsafe extern "C" fn(name: Slice, namespace: Slice, out: *mut HostBuf, err: *mut HostBuf) -> i32,
    /// Ends the calling actor once its current call returns.
    pub exit_actor: unsafe extern "C" fn(err: *mut HostBuf) -> i32,
    /// A constructor's trampoline hands over the new instance.
    pub actor_created: unsafe extern "C" fn(ctx: *mut c_void, instance: *mut c_void),
    /// A placement-group call; `request` is an encoded `PlacementGroupRequest`.
    /// Lends an encoded `PlacementGroupReply`.
    pub placement_group: unsafe extern "C" fn(request: Slice, out: *mut HostBuf, err: *mut HostBuf) -> i32,
}

// SAFETY: the table holds only function pointers and an integer; it is immutable.
unsafe impl Sync for HostTable {}
// SAFETY: as above; nothing in it is tied to a thread.
unsafe impl Send for HostTable {}
