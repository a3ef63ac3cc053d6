//! Ray's core API in Rust.
//!
//! The names follow Ray's Python API so a Ray walkthrough translates line by line:
//!
//! ```no_run
//! use ray::prelude::*;
//!
//! #[ray::remote]
//! fn square(x: u64) -> u64 {
//!     x * x
//! }
//!
//! fn main() -> Result<(), ray::RayError> {
//!     ray::init()?;
//!     let refs: Vec<_> = (0..4).map(|i| square.remote(i)).collect();
//!     assert_eq!(ray::get(&refs)?, vec![0, 1, 4, 9]);
//!     ray::shutdown();
//!     Ok(())
//! }
//! ```
//!
//! This crate is deliberately thin and stateless: every REPL cell library carries
//! its own copy of it, so all state lives in the host runtime, reached through the
//! function table in `ray-abi`. A compiled program links that runtime (the default
//! `runtime` feature) and its own executable serves as the cluster's workers: call
//! `ray::init()` first thing in `main`, because in a worker it never returns.

#![warn(missing_docs)]

// Lets `#[ray::remote]` expansions inside this crate (the utilities) name it `::ray`.
extern crate self as ray;

pub mod actor;
mod cell;
mod codec;
mod host;
pub mod notebook;
mod object_ref;
mod remote;
pub mod util;

use ray_abi::{HostBuf, InitConfig, ObjectId, Slice};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::any::Any;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

pub use actor::{Actor, ActorHandle, ActorOptions, get_actor, get_actor_in, kill, kill_with};
pub use object_ref::{ObjectFuture, ObjectRef};
pub use ray_abi::{RayError, RayResult, RuntimeContext, TaskError};
pub use ray_macros::remote;
pub use remote::{Arg, IntoArg, Options};

/// Everything a Ray program usually needs, for `use ray::prelude::*`.
pub mod prelude {
    pub use crate::actor::Handle as _;
    pub use crate::cell::AwaitAnyFuture as _;
    pub use crate::notebook::{DebugRepr as _, RichRepr as _};
    pub use crate::{ActorHandle, IntoArg, ObjectRef, RayError, RayResult, remote};
}

/// The mark of a rayrepl cell library: every library that links this crate
/// exports it, and a worker loads a cell library only if the file's dynamic
/// symbol table has it, with this build's ABI key (see `ray_abi::cell_marker`;
/// the name must be `ray_abi::cell_marker::SYMBOL`).
#[doc(hidden)]
#[unsafe(no_mangle)]
#[used]
pub static RAYREPL_CELL_LIBRARY_V1: [u8; ray_abi::cell_marker::LEN] = ray_abi::cell_marker::MARK;

/// Used by code that `#[ray::remote]` generates; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use crate::actor::{
        ActorCell, OwnedArgs, call_actor, create_actor, run_actor_async, run_actor_constructor, run_actor_mut,
        run_actor_ref,
    };
    pub use crate::cell::{AwaitAnyFuture, AwaitInCell};
    pub use crate::codec::{decode, encode, short_type_name};
    pub use crate::remote::{TaskArgs, default_actor_options, default_options, descriptor, run_task, submit};
    pub use ray_abi::linkme;
    pub use ray_abi::{ActorRef, FunctionDescriptor, TASK_REGISTRY, TaskCall, TaskEntry, TaskOptions};
    pub use serde;
}

/// How to start or join a cluster: Ray's `ray.init(...)` keyword arguments.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Config(InitConfig);

impl Config {
    /// A local cluster with default settings.
    pub fn new() -> Self {
        Config::default()
    }

    /// Attach to a running cluster, named as Ray names it: `"auto"` (the one
    /// running on this machine), the head's `"host:port"` or `"ray://host:port"`,
    /// or its dashboard's `"http://host:8265"`.
    pub fn address(addr: impl Into<String>) -> Self {
        Config(InitConfig { address: Some(addr.into()), ..InitConfig::default() })
    }

    /// CPUs of the local cluster (default: this machine's).
    pub fn num_cpus(mut self, n: f64) -> Self {
        self.0.num_cpus = Some(n);
        self
    }

    /// GPUs of the local cluster.
    pub fn num_gpus(mut self, n: f64) -> Self {
        self.0.num_gpus = Some(n);
        self
    }

    /// A custom resource of the local cluster.
    pub fn resource(mut self, name: &str, amount: f64) -> Self {
        self.0.resources.insert(name.to_string(), amount);
        self
    }

    /// Custom resources of the local cluster.
    pub fn resources(mut self, r: BTreeMap<String, f64>) -> Self {
        self.0.resources = r;
        self
    }

    /// Shared-memory object store capacity of the local cluster, in bytes.
    pub fn object_store_memory(mut self, bytes: u64) -> Self {
        self.0.object_store_memory = Some(bytes);
        self
    }

    /// The cluster token (otherwise taken from `RAYREPL_TOKEN` or the session).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.0.token = Some(token.into());
        self
    }

    /// Namespace for named actors.
    pub fn namespace(mut self, ns: impl Into<String>) -> Self {
        self.0.namespace = Some(ns.into());
        self
    }

    /// Whether worker output is printed here (default true).
    pub fn log_to_driver(mut self, yes: bool) -> Self {
        self.0.log_to_driver = Some(yes);
        self
    }
}

/// Starts a local cluster sized to this machine and connects to it, or, with
/// `RAYREPL_ADDRESS` set (`auto` for the cluster running on this machine, as
/// Ray's `RAY_ADDRESS`), attaches to that cluster.
///
/// In a worker process (the cluster runs your executable as its workers) this call
/// serves tasks and never returns, so call it first in `main`.
pub fn init() -> Result<RuntimeContext, RayError> {
    let mut config = InitConfig::default();
    if let Ok(addr) = std::env::var("RAYREPL_ADDRESS")
        && !addr.is_empty()
    {
        config.address = Some(addr);
    }
    init_with(Config(config))
}

/// Starts or attaches to a cluster as `config` says.
pub fn init_with(config: Config) -> Result<RuntimeContext, RayError> {
    let t = host::table()?;
    let bytes = postcard::to_stdvec(&config.0)
        .map_err(|e| RayError::Encode { type_name: "InitConfig".into(), detail: e.to_string() })?;
    let mut err = HostBuf::EMPTY;
    // SAFETY: pointers are to live locals for the duration of the call.
    let status = unsafe { (t.init)(Slice::of(&bytes), &mut err) };
    host::check(t, status, err)?;
    runtime_context()
}

/// Disconnects; stops the local cluster if `init` started one.
pub fn shutdown() {
    if let Ok(t) = host::table() {
        // SAFETY: no arguments; safe to call at any time.
        unsafe { (t.shutdown)() }
    }
}

/// Whether this process is connected to a cluster.
pub fn is_initialized() -> bool {
    // SAFETY: no arguments; safe to call at any time.
    host::table().map(|t| unsafe { (t.is_initialized)() }).unwrap_or(false)
}

/// Facts about the cluster and this process: Ray's `ray.get_runtime_context()`.
pub fn runtime_context() -> Result<RuntimeContext, RayError> {
    let t = host::table()?;
    let mut out = HostBuf::EMPTY;
    let mut err = HostBuf::EMPTY;
    // SAFETY: pointers are to live locals for the duration of the call.
    let status = unsafe { (t.context)(&mut out, &mut err) };
    host::check(t, status, err)?;
    let lent = host::Lent::new(t, out);
    postcard::from_bytes(lent.bytes()).map_err(|e| RayError::Internal(format!("bad runtime context: {e}")))
}

/// Stores a value in the object store: Ray's `ray.put`.
pub fn put<T: Serialize + Any>(value: &T) -> Result<ObjectRef<T>, RayError> {
    let enc = codec::encode(value)?;
    let t = host::table()?;
    let parts = host::slices(&enc.parts());
    let mut out = ObjectId::default();
    let mut err = HostBuf::EMPTY;
    // SAFETY: pointers are to live locals and buffers for the duration of the call.
    let status = unsafe {
        (t.put)(parts.as_ptr(), parts.len(), enc.contained.as_ptr(), enc.contained.len(), &mut out, &mut err)
    };
    host::check(t, status, err)?;
    Ok(ObjectRef::from_counted(out))
}

/// What `ray::get` accepts: one ref, or a list of refs of one type.
pub trait Gettable {
    /// What `get` returns for it.
    type Output;
    /// Waits for and decodes the value(s), giving up at `deadline`.
    fn get_by(self, deadline: Option<Instant>) -> Result<Self::Output, RayError>;
}

fn remaining(deadline: Option<Instant>) -> Option<Duration> {
    deadline.map(|d| d.saturating_duration_since(Instant::now()))
}

impl<T: DeserializeOwned + Any> Gettable for &ObjectRef<T> {
    type Output = T;
    fn get_by(self, deadline: Option<Instant>) -> Result<T, RayError> {
        self.get_timeout(remaining(deadline))
    }
}

impl<T: DeserializeOwned + Any> Gettable for &[ObjectRef<T>] {
    type Output = Vec<T>;
    fn get_by(self, deadline: Option<Instant>) -> Result<Vec<T>, RayError> {
        // One wait over the whole list first: the host then sees (and can report
        // the progress of) everything the caller is waiting for, not one ref at a time.
        if self.len() > 1 {
            wait(self, self.len(), remaining(deadline))?;
        }
        self.iter().map(|r| r.get_timeout(remaining(deadline))).collect()
    }
}

impl<T: DeserializeOwned + Any> Gettable for &Vec<ObjectRef<T>> {
    type Output = Vec<T>;
    fn get_by(self, deadline: Option<Instant>) -> Result<Vec<T>, RayError> {
        self.as_slice().get_by(deadline)
    }
}

impl<T: DeserializeOwned + Any, const N: usize> Gettable for &[ObjectRef<T>; N] {
    type Output = Vec<T>;
    fn get_by(self, deadline: Option<Instant>) -> Result<Vec<T>, RayError> {
        self.as_slice().get_by(deadline)
    }
}

/// Waits for objects and returns their values: Ray's `ray.get`. Takes `&ref` for
/// one value, or `&refs` (a slice, array or `Vec`) for a `Vec` of values. If a task
/// failed, returns its error.
pub fn get<G: Gettable>(refs: G) -> Result<G::Output, RayError> {
    refs.get_by(None)
}

/// Like [`get`], but gives up with [`RayError::Timeout`] after `timeout`.
pub fn get_timeout<G: Gettable>(refs: G, timeout: Duration) -> Result<G::Output, RayError> {
    refs.get_by(Some(Instant::now() + timeout))
}

/// Ray's `ray.wait`: returns `(ready, not_ready)` once `num_returns` of `refs` are
/// ready or `timeout` passes, each list in the order of `refs`. A failed task counts
/// as ready.
pub fn wait<T>(
    refs: &[ObjectRef<T>],
    num_returns: usize,
    timeout: Option<Duration>,
) -> Result<(Vec<ObjectRef<T>>, Vec<ObjectRef<T>>), RayError> {
    if num_returns > refs.len() {
        return Err(RayError::InvalidArgument(format!(
            "num_returns ({num_returns}) is larger than the number of refs ({})",
            refs.len()
        )));
    }
    let t = host::table()?;
    let mut ready = vec![0u8; refs.len()];
    let ids: Vec<ObjectId> = refs.iter().map(|r| r.id()).collect();
    let locally_failed: Vec<bool> = refs.iter().map(|r| r.failure().is_some()).collect();
    let already = locally_failed.iter().filter(|f| **f).count();
    if already < num_returns {
        let mut err = HostBuf::EMPTY;
        let live: Vec<usize> = (0..refs.len()).filter(|i| !locally_failed[*i]).collect();
        let live_ids: Vec<ObjectId> = live.iter().map(|i| ids[*i]).collect();
        let mut live_ready = vec![0u8; live.len()];
        // SAFETY: pointers are to live vectors of the stated lengths for the call.
        let status = unsafe {
            (t.wait)(
                live_ids.as_ptr(),
                live_ids.len(),
                num_returns - already,
                object_ref::timeout_ms(timeout),
                live_ready.as_mut_ptr(),
                &mut err,
            )
        };
        host::check(t, status, err)?;
        for (k, i) in live.iter().enumerate() {
            ready[*i] = live_ready[k];
        }
    }
    let mut done = Vec::new();
    let mut rest = Vec::new();
    for (i, r) in refs.iter().enumerate() {
        // Ray returns at most num_returns ready refs; surplus ones stay in the rest.
        if (ready[i] != 0 || locally_failed[i]) && done.len() < num_returns {
            done.push(r.clone());
        } else {
            rest.push(r.clone());
        }
    }
    Ok((done, rest))
}

/// Cancels the task that produces `r`: Ray's `ray.cancel`. A queued task is
/// dropped; a running one is interrupted only with `force`, which kills its worker.
/// `get` on the ref then returns [`RayError::Cancelled`].
pub fn cancel<T>(r: &ObjectRef<T>, force: bool) -> Result<(), RayError> {
    if r.failure().is_some() {
        return Ok(());
    }
    let t = host::table()?;
    let mut err = HostBuf::EMPTY;
    let id = r.id();
    // SAFETY: pointers are to live locals for the duration of the call.
    let status = unsafe { (t.cancel)(&id, force, &mut err) };
    host::check(t, status, err)
}
