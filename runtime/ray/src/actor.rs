//! Actors: `#[ray::remote]` on a struct and its impl block.
//!
//! A handle names an actor (its id and type) and serializes, so it can be passed
//! to tasks and other actors, which call it from there. The generated handle type
//! has one method per actor method, each returning an `ObjectRef`; `ActorHandle<T>`
//! names it. Inside the worker the instance lives in an [`ActorCell`]: a lock that
//! lets `&self` methods run concurrently (threaded and async actors) while `&mut
//! self` methods run alone, and, for async actors, an event loop created by this
//! crate so user code finds its own tokio runtime.

use crate::codec;
use crate::host::{self, Lent};
use crate::object_ref::ObjectRef;
use crate::remote::{Arg, TaskArgs, report_outcome};
use ray_abi::{ActorCall, ActorCreation, ActorId, ActorRef, FunctionDescriptor, HostBuf, RayError, Slice, TaskCall};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};

/// A type made an actor by `#[ray::remote]`.
pub trait Actor: 'static {
    /// Its generated handle type.
    type Handle: Handle;
    /// Its type name, as Ray shows it.
    const CLASS: &'static str;
}

/// The handle of actor type `T`: `ActorHandle<Counter>` is `CounterHandle`.
pub type ActorHandle<T> = <T as Actor>::Handle;

/// What every generated actor handle provides.
pub trait Handle: Clone + Serialize + DeserializeOwned + 'static {
    /// The actor it names.
    fn actor_ref(&self) -> &ActorRef;
    /// Wraps an actor reference.
    fn from_actor_ref(r: ActorRef) -> Self;
    /// The actor's id.
    fn actor_id(&self) -> ActorId {
        self.actor_ref().id
    }
}

/// Options for creating an actor: Ray's `Actor.options(...)`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ActorOptions(pub ray_abi::ActorOptions);

/// Generates Ray's actor option setters on a wrapper whose field `.0` is an
/// [`ActorOptions`].
#[doc(hidden)]
#[macro_export]
macro_rules! __actor_option_setters {
    () => {
        /// A name to find the actor by with `ray::get_actor`.
        pub fn name(mut self, name: &str) -> Self {
            self.0.0.name = Some(name.to_string());
            self
        }
        /// The namespace of the name (default: the job's).
        pub fn namespace(mut self, ns: &str) -> Self {
            self.0.0.namespace = Some(ns.to_string());
            self
        }
        /// Return the live actor of this name instead of failing if it exists.
        pub fn get_if_exists(mut self, yes: bool) -> Self {
            self.0.0.get_if_exists = yes;
            self
        }
        /// Outlive the creating job, until `ray::kill` (Ray's `lifetime="detached"`).
        pub fn lifetime_detached(mut self) -> Self {
            self.0.0.detached = true;
            self
        }
        /// Calls that may run at once: threads for a sync actor, tasks on the event
        /// loop for an async one.
        pub fn max_concurrency(mut self, n: u32) -> Self {
            self.0.0.max_concurrency = Some(n);
            self
        }
        /// Restarts after the actor's process dies (-1: forever).
        pub fn max_restarts(mut self, n: i32) -> Self {
            self.0.0.max_restarts = Some(n);
            self
        }
        /// Retries of a call whose actor process died (-1: forever).
        pub fn max_task_retries(mut self, n: i32) -> Self {
            self.0.0.max_task_retries = Some(n);
            self
        }
        /// CPUs held while the actor lives (default 0).
        pub fn num_cpus(mut self, n: f64) -> Self {
            self.0.0.num_cpus = Some(n);
            self
        }
        /// GPUs held while the actor lives.
        pub fn num_gpus(mut self, n: f64) -> Self {
            self.0.0.num_gpus = Some(n);
            self
        }
        /// A custom resource held while the actor lives.
        pub fn resource(mut self, name: &str, amount: f64) -> Self {
            self.0.0.resources.insert(name.to_string(), amount);
            self
        }
        /// Where the actor runs: `"DEFAULT"`, `"SPREAD"`, a
        /// `PlacementGroupSchedulingStrategy` or a `NodeAffinitySchedulingStrategy`
        /// (Ray's `scheduling_strategy`).
        pub fn scheduling_strategy(mut self, strategy: impl Into<$crate::util::Steer>) -> Self {
            self.0.0.scheduling_strategy = strategy.into().into_strategy();
            self
        }
    };
}

/// Creates an actor of type `T`.
#[doc(hidden)]
pub fn create_actor<T: Actor>(
    constructor: FunctionDescriptor,
    args: Vec<Result<Arg, RayError>>,
    options: ActorOptions,
    is_async: bool,
) -> Result<T::Handle, RayError> {
    let args = args.into_iter().collect::<Result<Vec<_>, _>>()?;
    let creation = ActorCreation {
        class: T::CLASS.to_string(),
        constructor,
        args: args.iter().map(|a| a.submission.clone()).collect(),
        options: options.0,
        is_async,
    };
    let bytes = postcard::to_stdvec(&creation)
        .map_err(|e| RayError::Encode { type_name: "ActorCreation".into(), detail: e.to_string() })?;
    let t = host::table()?;
    let mut out = ActorId::default();
    let mut err = HostBuf::EMPTY;
    // SAFETY: pointers are to live locals for the duration of the call.
    let status = unsafe { (t.create_actor)(Slice::of(&bytes), &mut out, &mut err) };
    host::check(t, status, err)?;
    Ok(T::Handle::from_actor_ref(ActorRef { id: out, class: T::CLASS.to_string() }))
}

/// Calls a method on an actor.
#[doc(hidden)]
pub fn call_actor<R>(actor: &ActorRef, method: FunctionDescriptor, args: Vec<Result<Arg, RayError>>) -> ObjectRef<R> {
    let submit = || -> Result<ray_abi::ObjectId, RayError> {
        let args = args.into_iter().collect::<Result<Vec<_>, _>>()?;
        let call = ActorCall { actor: actor.id, method, args: args.iter().map(|a| a.submission.clone()).collect() };
        let bytes = postcard::to_stdvec(&call)
            .map_err(|e| RayError::Encode { type_name: "ActorCall".into(), detail: e.to_string() })?;
        let t = host::table()?;
        let mut out = ray_abi::ObjectId::default();
        let mut err = HostBuf::EMPTY;
        // SAFETY: pointers are to live locals for the duration of the call.
        let status = unsafe { (t.call_actor)(Slice::of(&bytes), &mut out, &mut err) };
        host::check(t, status, err)?;
        Ok(out)
    };
    match submit() {
        Ok(id) => ObjectRef::from_counted(id),
        Err(e) => ObjectRef::failed(e),
    }
}

/// Ray's `ray.kill(actor)`: ends the actor now; it is not restarted.
pub fn kill<H: Handle>(actor: &H) -> Result<(), RayError> {
    kill_with(actor, true)
}

/// Ray's `ray.kill(actor, no_restart=..)`: with `no_restart == false` an actor with
/// `max_restarts` left comes back.
pub fn kill_with<H: Handle>(actor: &H, no_restart: bool) -> Result<(), RayError> {
    let t = host::table()?;
    let mut err = HostBuf::EMPTY;
    let id = actor.actor_id();
    // SAFETY: pointers are to live locals for the duration of the call.
    let status = unsafe { (t.kill_actor)(&id, no_restart, &mut err) };
    host::check(t, status, err)
}

/// Ray's `ray.get_actor(name)`: a handle to the live actor of that name in this
/// job's namespace.
pub fn get_actor<T: Actor>(name: &str) -> Result<T::Handle, RayError> {
    get_actor_in::<T>(name, "")
}

/// Ray's `ray.get_actor(name, namespace=..)`.
pub fn get_actor_in<T: Actor>(name: &str, namespace: &str) -> Result<T::Handle, RayError> {
    let t = host::table()?;
    let mut out = HostBuf::EMPTY;
    let mut err = HostBuf::EMPTY;
    // SAFETY: pointers are to live locals and slices for the duration of the call.
    let status =
        unsafe { (t.get_actor)(Slice::of(name.as_bytes()), Slice::of(namespace.as_bytes()), &mut out, &mut err) };
    host::check(t, status, err)?;
    let lent = Lent::new(t, out);
    let r: ActorRef =
        postcard::from_bytes(lent.bytes()).map_err(|e| RayError::Internal(format!("bad actor ref: {e}")))?;
    if r.class != T::CLASS {
        return Err(RayError::TypeMismatch {
            object: format!("actor {name:?}"),
            stored: r.class,
            requested: T::CLASS.to_string(),
        });
    }
    Ok(T::Handle::from_actor_ref(r))
}

/// Ray's `ray.actor.exit_actor()`: ends the calling actor once the current call
/// returns. Later calls fail with an actor-died error that says it exited.
pub fn exit_actor() -> Result<(), RayError> {
    let t = host::table()?;
    let mut err = HostBuf::EMPTY;
    // SAFETY: the pointer is to a live local.
    let status = unsafe { (t.exit_actor)(&mut err) };
    host::check(t, status, err)
}

type LoopJob = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()>>> + Send>;

/// An actor instance inside its worker. Sync methods run on the worker's executor
/// threads and async ones on the event loop, so the instance must be `Send + Sync`.
pub struct ActorCell<T> {
    state: tokio::sync::RwLock<T>,
    event_loop: OnceLock<tokio::sync::mpsc::UnboundedSender<LoopJob>>,
}

impl<T: 'static> ActorCell<T> {
    /// Shared access, for `&self` methods.
    pub async fn read(&self) -> tokio::sync::RwLockReadGuard<'_, T> {
        self.state.read().await
    }

    /// Exclusive access, for `&mut self` methods.
    pub async fn write(&self) -> tokio::sync::RwLockWriteGuard<'_, T> {
        self.state.write().await
    }

    /// The actor's event loop: a thread running a single-threaded tokio runtime.
    fn event_loop(&self) -> &tokio::sync::mpsc::UnboundedSender<LoopJob> {
        self.event_loop.get_or_init(|| {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<LoopJob>();
            std::thread::Builder::new()
                .name("actor-event-loop".into())
                .spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("start the actor's event loop");
                    let local = tokio::task::LocalSet::new();
                    local.block_on(&rt, async move {
                        while let Some(job) = rx.recv().await {
                            tokio::task::spawn_local(job());
                        }
                    });
                })
                .expect("spawn the actor's event loop thread");
            tx
        })
    }
}

fn cell<T>(call: &TaskCall) -> Result<&'static ActorCell<T>, RayError> {
    if call.instance.is_null() {
        return Err(RayError::Internal("an actor method was called without an instance".into()));
    }
    // SAFETY: the host passes the pointer the constructor handed over, which is a
    // leaked `Box<ActorCell<T>>` of this very type (the method and constructor
    // trampolines come from the same `#[ray::remote]` expansion) and lives for the
    // rest of the process.
    Ok(unsafe { &*(call.instance as *const ActorCell<T>) })
}

/// Runs an actor constructor and hands the new instance to the host.
///
/// # Safety
/// `call` must be the pointer the host passed to the trampoline.
#[doc(hidden)]
pub unsafe fn run_actor_constructor<T, F>(call: *const TaskCall, function: &'static str, body: F)
where
    T: Send + Sync + 'static,
    F: FnOnce(&TaskArgs<'_>) -> Result<T, RayError>,
{
    // SAFETY: forwarded from our caller's contract.
    unsafe {
        crate::remote::run_reporting(call, function, |args, call| {
            let value = body(args)?;
            let cell = Box::new(ActorCell { state: tokio::sync::RwLock::new(value), event_loop: OnceLock::new() });
            let ptr = Box::into_raw(cell) as *mut std::ffi::c_void;
            // ctx and table come from the host for this call (the enclosing unsafe
            // block's contract); the host keeps the instance for the process's life.
            ((*call.host).actor_created)(call.ctx, ptr);
            Ok(None::<()>)
        })
    }
}

/// Runs a synchronous `&self` method.
///
/// # Safety
/// `call` must be the pointer the host passed to the trampoline.
#[doc(hidden)]
pub unsafe fn run_actor_ref<T, R, F>(call: *const TaskCall, function: &'static str, body: F)
where
    T: Send + Sync + 'static,
    R: Serialize + Any,
    F: FnOnce(&T, &TaskArgs<'_>) -> Result<R, RayError>,
{
    // SAFETY: forwarded from our caller's contract.
    unsafe {
        crate::remote::run_reporting(call, function, |args, call| {
            let cell = cell::<T>(call)?;
            let guard = cell.state.blocking_read();
            body(&guard, args).map(Some)
        })
    }
}

/// Runs a synchronous `&mut self` method.
///
/// # Safety
/// `call` must be the pointer the host passed to the trampoline.
#[doc(hidden)]
pub unsafe fn run_actor_mut<T, R, F>(call: *const TaskCall, function: &'static str, body: F)
where
    T: Send + Sync + 'static,
    R: Serialize + Any,
    F: FnOnce(&mut T, &TaskArgs<'_>) -> Result<R, RayError>,
{
    // SAFETY: forwarded from our caller's contract.
    unsafe {
        crate::remote::run_reporting(call, function, |args, call| {
            let cell = cell::<T>(call)?;
            let mut guard = cell.state.blocking_write();
            body(&mut guard, args).map(Some)
        })
    }
}

/// Owned copies of a call's arguments, for methods that finish later.
#[doc(hidden)]
pub struct OwnedArgs {
    args: Vec<Vec<u8>>,
    function: &'static str,
}

impl OwnedArgs {
    /// Decodes argument `i` as `T`.
    pub fn arg<T: DeserializeOwned + Any>(&self, i: usize) -> Result<T, RayError> {
        let bytes = self.args.get(i).ok_or_else(|| {
            RayError::InvalidArgument(format!("`{}` expects more arguments than were sent", self.function))
        })?;
        codec::decode(bytes, &format_args!("argument {i} of `{}`", self.function))
    }
}

/// Polls a future, turning a panic into an error.
struct CatchUnwind<F>(Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.0.as_mut();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(payload) => Poll::Ready(Err(payload)),
        }
    }
}

/// Starts an async method on the actor's event loop; it reports when done.
///
/// # Safety
/// `call` must be the pointer the host passed to the trampoline.
#[doc(hidden)]
pub unsafe fn run_actor_async<T, R, F, Fut>(call: *const TaskCall, function: &'static str, body: F)
where
    T: Send + Sync + 'static,
    R: Serialize + Any,
    F: FnOnce(&'static ActorCell<T>, OwnedArgs) -> Fut + Send + 'static,
    Fut: Future<Output = Result<R, RayError>> + 'static,
{
    // SAFETY: the host passes a valid TaskCall that outlives this call.
    let call_ref = unsafe { &*call };
    let cell = match cell::<T>(call_ref) {
        Ok(c) => c,
        Err(e) => {
            // SAFETY: the host's call is valid; report the failure through it.
            unsafe { crate::remote::report_failure(call_ref, function, e) };
            return;
        }
    };
    let raw_args = if call_ref.n_args == 0 {
        &[][..]
    } else {
        // SAFETY: the host passes `n_args` valid slices at `args`.
        unsafe { std::slice::from_raw_parts(call_ref.args, call_ref.n_args) }
    };
    // SAFETY: each slice is valid for the duration of this call; we copy them.
    let args = OwnedArgs { args: raw_args.iter().map(|s| unsafe { s.as_bytes() }.to_vec()).collect(), function };
    let ctx = call_ref.ctx as usize;
    let table = call_ref.host as usize;
    let job: LoopJob = Box::new(move || {
        Box::pin(async move {
            crate::remote::install_panic_hook();
            let outcome = CatchUnwind(Box::pin(async move {
                crate::remote::enter_task();
                body(cell, args).await
            }))
            .await;
            // SAFETY: the host keeps the call's context and its table alive until the
            // call reports, which happens exactly once, here.
            unsafe {
                report_outcome(table as *const ray_abi::HostTable, ctx as *mut std::ffi::c_void, function, outcome)
            };
        })
    });
    if cell.event_loop().send(job).is_err() {
        // SAFETY: as above.
        unsafe {
            crate::remote::report_failure(
                call_ref,
                function,
                RayError::Internal("the actor's event loop stopped".into()),
            )
        };
    }
}
