//! The machinery behind `#[ray::remote]` functions: turning arguments into task
//! arguments, submitting calls, and running a function inside a worker.
//!
//! Generated code calls only what is here, so the macro output stays small and the
//! rules (which argument forms are accepted, how panics become task errors) live in
//! one readable place.

use crate::codec;
use crate::host;
use crate::object_ref::ObjectRef;
use ray_abi::{
    ArgSubmission, FunctionDescriptor, ObjectId, RayError, Slice, TaskCall, TaskError, TaskOptions, TaskSubmission,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::any::Any;
use std::cell::RefCell;
use std::collections::BTreeMap;

/// One converted argument: what is sent, and the original value, kept alive until
/// the submission is registered so refs nested inside it cannot be freed meanwhile.
pub struct Arg {
    pub(crate) submission: ArgSubmission,
    pub(crate) _keep_alive: Option<Box<dyn Any>>,
}

/// Something that can be passed where a remote function expects a `T`: the value
/// itself, or an `ObjectRef<T>` whose value the task receives (Ray resolves
/// top-level refs before the task runs; refs nested inside values stay refs).
pub trait IntoArg<T> {
    /// Converts into a task argument.
    fn into_arg(self) -> Result<Arg, RayError>;
}

impl<T: Serialize + Any> IntoArg<T> for T {
    fn into_arg(self) -> Result<Arg, RayError> {
        let enc = codec::encode(&self)?;
        let submission = ArgSubmission::Value { data: enc.to_vec(), contained: enc.contained };
        let keep: Option<Box<dyn Any>> = match &submission {
            ArgSubmission::Value { contained, .. } if !contained.is_empty() => Some(Box::new(self)),
            _ => None,
        };
        Ok(Arg { submission, _keep_alive: keep })
    }
}

impl<T: 'static> IntoArg<T> for ObjectRef<T> {
    fn into_arg(self) -> Result<Arg, RayError> {
        let submission = IntoArg::<T>::into_arg(&self)?.submission;
        Ok(Arg { submission, _keep_alive: Some(Box::new(self)) })
    }
}

impl<T> IntoArg<T> for &ObjectRef<T> {
    fn into_arg(self) -> Result<Arg, RayError> {
        match self.failure() {
            Some(e) => Err(e.clone()),
            None => Ok(Arg { submission: ArgSubmission::Ref(self.id()), _keep_alive: None }),
        }
    }
}

impl IntoArg<String> for &str {
    fn into_arg(self) -> Result<Arg, RayError> {
        self.to_string().into_arg()
    }
}

/// Options for one call of a remote function: Ray's `.options(...)`.
///
/// `#[ray::remote]` generates a wrapper around this per function, whose `remote`
/// method has the function's signature.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Options(pub TaskOptions);

impl Options {
    /// Sets a field from a `#[ray::remote(key = value)]` attribute.
    #[doc(hidden)]
    pub fn with(mut self, f: impl FnOnce(&mut TaskOptions)) -> Self {
        f(&mut self.0);
        self
    }
}

/// Generates Ray's per-call option setters on a wrapper whose field `.0` is an
/// [`Options`].
#[doc(hidden)]
#[macro_export]
macro_rules! __option_setters {
    () => {
        /// CPUs to reserve while the call runs (fractions allowed; default 1).
        pub fn num_cpus(mut self, n: f64) -> Self {
            self.0.0.num_cpus = Some(n);
            self
        }
        /// GPUs to reserve while the call runs.
        pub fn num_gpus(mut self, n: f64) -> Self {
            self.0.0.num_gpus = Some(n);
            self
        }
        /// Memory to reserve, in bytes.
        pub fn memory(mut self, bytes: f64) -> Self {
            self.0.0.memory = Some(bytes);
            self
        }
        /// A custom resource to reserve, e.g. `.resource("Custom1", 1.0)`.
        pub fn resource(mut self, name: &str, amount: f64) -> Self {
            self.0.0.resources.insert(name.to_string(), amount);
            self
        }
        /// Custom resources to reserve, replacing earlier ones.
        pub fn resources<K: Into<String>>(mut self, r: impl IntoIterator<Item = (K, f64)>) -> Self {
            self.0.0.resources = r.into_iter().map(|(k, v)| (k.into(), v)).collect();
            self
        }
        /// How often to retry when the worker dies (default 3).
        pub fn max_retries(mut self, n: u32) -> Self {
            self.0.0.max_retries = Some(n);
            self
        }
        /// Whether a panic is retried too (default false).
        pub fn retry_exceptions(mut self, yes: bool) -> Self {
            self.0.0.retry_exceptions = yes;
            self
        }
        /// The name shown in logs and `rayrepl list tasks`.
        pub fn name(mut self, name: &str) -> Self {
            self.0.0.name = Some(name.to_string());
            self
        }
        /// Where the call runs: `"DEFAULT"`, `"SPREAD"`, a
        /// `PlacementGroupSchedulingStrategy` or a `NodeAffinitySchedulingStrategy`
        /// (Ray's `scheduling_strategy`).
        pub fn scheduling_strategy(mut self, strategy: impl Into<$crate::util::Steer>) -> Self {
            self.0.0.scheduling_strategy = strategy.into().into_strategy();
            self
        }
    };
}

/// Submits a call. Errors (not initialized, an argument that cannot be encoded)
/// come back through the returned ref's `get`, as a task's own errors do.
#[doc(hidden)]
pub fn submit<R>(function: FunctionDescriptor, args: Vec<Result<Arg, RayError>>, options: Options) -> ObjectRef<R> {
    match try_submit(function, args, options.0) {
        Ok(id) => ObjectRef::from_counted(id),
        Err(e) => ObjectRef::failed(e),
    }
}

fn try_submit(
    function: FunctionDescriptor,
    args: Vec<Result<Arg, RayError>>,
    options: TaskOptions,
) -> Result<ObjectId, RayError> {
    // `args` (and the values it keeps alive) lives until the host has counted the
    // refs they contain.
    let args = args.into_iter().collect::<Result<Vec<_>, _>>()?;
    let submissions = args.iter().map(|a| a.submission.clone()).collect();
    let spec = TaskSubmission { function, args: submissions, options };
    let bytes = postcard::to_stdvec(&spec)
        .map_err(|e| RayError::Encode { type_name: "TaskSubmission".into(), detail: e.to_string() })?;
    let t = host::table()?;
    let mut out = ObjectId::default();
    let mut err = ray_abi::HostBuf::EMPTY;
    // SAFETY: pointers are to live locals for the duration of the call.
    let status = unsafe { (t.submit_task)(Slice::of(&bytes), &mut out, &mut err) };
    host::check(t, status, err)?;
    Ok(out)
}

/// Builds the descriptor of a remote function defined in this program or cell.
/// A compiled program's workers find it by `key` in their own executable; a cell's
/// `symbol` is resolved in the cell library the host ships to workers.
#[doc(hidden)]
pub fn descriptor(name: &str, key: &str, symbol: &str, address: usize) -> FunctionDescriptor {
    FunctionDescriptor {
        name: name.to_string(),
        key: key.to_string(),
        symbol: symbol.to_string(),
        artifact: None,
        address: address as u64,
    }
}

/// Parses default options from a `#[ray::remote(..)]` attribute.
#[doc(hidden)]
pub fn default_options(pairs: &[(&str, f64)], names: &[(&str, &str)], resources: &[(&str, f64)]) -> Options {
    let mut o = TaskOptions::default();
    for (k, v) in pairs {
        match *k {
            "num_cpus" => o.num_cpus = Some(*v),
            "num_gpus" => o.num_gpus = Some(*v),
            "memory" => o.memory = Some(*v),
            "max_retries" => o.max_retries = Some(*v as u32),
            "retry_exceptions" => o.retry_exceptions = *v != 0.0,
            _ => {}
        }
    }
    for (k, v) in names {
        if *k == "name" {
            o.name = Some(v.to_string());
        }
    }
    o.resources = resources.iter().map(|(k, v)| (k.to_string(), *v)).collect::<BTreeMap<_, _>>();
    Options(o)
}

/// Parses default options from a `#[ray::remote(..)]` attribute on an actor struct.
#[doc(hidden)]
pub fn default_actor_options(
    numbers: &[(&str, f64)],
    names: &[(&str, &str)],
    resources: &[(&str, f64)],
) -> crate::ActorOptions {
    let mut o = ray_abi::ActorOptions::default();
    for (k, v) in numbers {
        match *k {
            "num_cpus" => o.num_cpus = Some(*v),
            "num_gpus" => o.num_gpus = Some(*v),
            "memory" => o.memory = Some(*v),
            "max_concurrency" => o.max_concurrency = Some(*v as u32),
            "max_restarts" => o.max_restarts = Some(*v as i32),
            "max_task_retries" => o.max_task_retries = Some(*v as i32),
            _ => {}
        }
    }
    for (k, v) in names {
        match *k {
            "name" => o.name = Some(v.to_string()),
            "namespace" => o.namespace = Some(v.to_string()),
            "lifetime" => o.detached = *v == "detached",
            _ => {}
        }
    }
    o.resources = resources.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    crate::ActorOptions(o)
}

/// The arguments of a call, as a trampoline sees them.
#[doc(hidden)]
pub struct TaskArgs<'a> {
    pub(crate) args: &'a [Slice],
    pub(crate) function: &'static str,
}

impl TaskArgs<'_> {
    /// Decodes argument `i` as `T`.
    pub fn arg<T: DeserializeOwned + Any>(&self, i: usize) -> Result<T, RayError> {
        let slice = self.args.get(i).ok_or_else(|| {
            RayError::InvalidArgument(format!("`{}` expects more arguments than were sent", self.function))
        })?;
        // SAFETY: the host guarantees every argument slice stays valid for the call.
        let bytes = unsafe { slice.as_bytes() };
        codec::decode(bytes, &format_args!("argument {i} of `{}`", self.function))
    }

    /// Number of arguments received.
    pub fn len(&self) -> usize {
        self.args.len()
    }

    /// Whether no arguments were received.
    pub fn is_empty(&self) -> bool {
        self.args.is_empty()
    }
}

struct PanicRecord {
    message: String,
    location: Option<String>,
}

thread_local! {
    static IN_TASK: RefCell<bool> = const { RefCell::new(false) };
    static LAST_PANIC: RefCell<Option<PanicRecord>> = const { RefCell::new(None) };
}

pub(crate) fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !IN_TASK.with(|t| *t.borrow()) {
                return previous(info);
            }
            let payload = info.payload();
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic with a non-string payload".to_string());
            let location = info.location().map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()));
            LAST_PANIC.with(|p| *p.borrow_mut() = Some(PanicRecord { message, location }));
        }));
    });
}

/// Marks this thread as running task code: panics are recorded, not printed.
pub(crate) fn enter_task() {
    IN_TASK.with(|t| *t.borrow_mut() = true);
}

/// Ends [`enter_task`].
pub(crate) fn leave_task() {
    IN_TASK.with(|t| *t.borrow_mut() = false);
}

fn panic_error(function: &str) -> RayError {
    let record = LAST_PANIC
        .with(|p| p.borrow_mut().take())
        .unwrap_or(PanicRecord { message: "panicked".to_string(), location: None });
    RayError::Task(TaskError {
        function: function.to_string(),
        message: record.message,
        location: record.location,
        pid: std::process::id(),
        ip: String::new(),
        cause: None,
    })
}

/// Hands a finished call's outcome to the host: the encoded value, or the error.
///
/// # Safety
/// `table` and `ctx` must be those of a call that has not reported yet.
pub(crate) unsafe fn report_outcome<R: Serialize + Any>(
    table: *const ray_abi::HostTable,
    ctx: *mut std::ffi::c_void,
    function: &str,
    outcome: Result<Result<R, RayError>, Box<dyn Any + Send>>,
) {
    // SAFETY: the host's table lives for the whole process.
    let table = unsafe { &*table };
    let failure = match outcome {
        Ok(Ok(value)) => match codec::encode(&value) {
            Ok(enc) => {
                let parts = host::slices(&enc.parts());
                // SAFETY: `ctx` is the host's; parts and contained ids are live for the call.
                unsafe {
                    (table.task_return)(ctx, parts.as_ptr(), parts.len(), enc.contained.as_ptr(), enc.contained.len())
                };
                return;
            }
            Err(e) => e,
        },
        Ok(Err(e)) => e,
        Err(_) => panic_error(function),
    };
    let bytes = failure.to_bytes();
    // SAFETY: `ctx` is the host's; the bytes are live for the call.
    unsafe { (table.task_fail)(ctx, Slice::of(&bytes)) };
}

/// Reports a failure for `call`.
///
/// # Safety
/// `call` must be a call that has not reported yet.
pub(crate) unsafe fn report_failure(call: &TaskCall, function: &str, e: RayError) {
    // SAFETY: forwarded from our caller's contract.
    unsafe { report_outcome::<()>(call.host, call.ctx, function, Ok(Err(e))) }
}

/// Runs trampoline code with panics caught (a panic must not cross `extern "C"`)
/// and reports its outcome. `body` returns `None` when it reported by itself.
///
/// # Safety
/// `call` must be the pointer the host passed to the trampoline.
pub(crate) unsafe fn run_reporting<R, F>(call: *const TaskCall, function: &'static str, body: F)
where
    R: Serialize + Any,
    F: FnOnce(&TaskArgs<'_>, &TaskCall) -> Result<Option<R>, RayError>,
{
    // SAFETY: the host passes a valid TaskCall that outlives this call.
    let call = unsafe { &*call };
    let args = if call.n_args == 0 {
        &[][..]
    } else {
        // SAFETY: the host passes `n_args` valid slices at `args`.
        unsafe { std::slice::from_raw_parts(call.args, call.n_args) }
    };
    let task_args = TaskArgs { args, function };
    install_panic_hook();
    enter_task();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(&task_args, call)));
    leave_task();
    let outcome = match outcome {
        Ok(Ok(None)) => return,
        Ok(Ok(Some(v))) => Ok(Ok(v)),
        Ok(Err(e)) => Ok(Err(e)),
        Err(p) => Err(p),
    };
    // SAFETY: the call has not reported yet (`body` returned a value or failed).
    unsafe { report_outcome(call.host, call.ctx, function, outcome) };
}

/// Runs a remote function inside a worker and reports its result.
///
/// # Safety
/// `call` must be the pointer the host passed to the trampoline.
#[doc(hidden)]
pub unsafe fn run_task<R, F>(call: *const TaskCall, function: &'static str, body: F)
where
    R: Serialize + Any,
    F: FnOnce(&TaskArgs<'_>) -> Result<R, RayError>,
{
    // SAFETY: forwarded from our caller's contract.
    unsafe { run_reporting(call, function, |args, _| body(args).map(Some)) }
}
