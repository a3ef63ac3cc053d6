//! The host runtime: what a process that runs Ray code provides to the `ray` crate.
//!
//! It owns the process's core worker and, for a driver that started one, the
//! embedded local cluster, and exposes both through the C-ABI [`HostTable`]. A
//! compiled program reaches the table through [`host_table`]; REPL cell libraries
//! find the same table by its exported symbol. It also decides what the process
//! *is*: `ray::init()` in a process started with `RAYREPL_ROLE` runs that role
//! (head, node daemon or worker) instead of returning.

pub mod cluster;
pub mod roles;
/// Session directories; they live with the protocol, so every error that
/// names an address can say what runs on this machine.
pub use ray_proto::session;

use bytes::Bytes;
use cluster::{LocalCluster, NodeResources};
use ray_abi::{
    ABI_VERSION, ActorId, HostBuf, HostTable, InitConfig, ObjectId, RayError, ReadyCallback, STATUS_ERR, STATUS_OK,
    Slice,
};
use ray_core::{Connection, CoreWorker, ObjectData, StartOptions};
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

/// This process's connection to a cluster.
pub struct Host {
    /// The core worker.
    pub core: CoreWorker,
    /// The embedded cluster, if this driver started it.
    pub cluster: Option<Mutex<LocalCluster>>,
}

pub(crate) static HOST: RwLock<Option<Arc<Host>>> = RwLock::new(None);
static DRIVER_RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();

/// The current host, if initialized.
pub fn current() -> Option<Arc<Host>> {
    HOST.read().unwrap_or_else(|p| p.into_inner()).clone()
}

fn core() -> Result<CoreWorker, RayError> {
    current().map(|h| h.core.clone()).ok_or(RayError::NotInitialized)
}

enum Loan {
    Data(ObjectData),
    Bytes(Vec<u8>),
}

static LOANS: OnceLock<Mutex<HashMap<u64, Loan>>> = OnceLock::new();
static NEXT_LOAN: AtomicU64 = AtomicU64::new(1);

fn lend(loan: Loan) -> HostBuf {
    let handle = NEXT_LOAN.fetch_add(1, Ordering::Relaxed);
    let (ptr, len) = match &loan {
        Loan::Data(d) => (d.bytes().as_ptr(), d.bytes().len()),
        Loan::Bytes(b) => (b.as_ptr(), b.len()),
    };
    LOANS.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner()).insert(handle, loan);
    HostBuf { ptr, len, handle }
}

/// Writes `e` into `err` and returns the error status.
///
/// # Safety
/// `err` must be null or valid for a write.
unsafe fn fail(err: *mut HostBuf, e: RayError) -> i32 {
    if !err.is_null() {
        // SAFETY: the caller guarantees `err` is valid for a write.
        unsafe { *err = lend(Loan::Bytes(e.to_bytes())) };
    }
    STATUS_ERR
}

/// `STATUS_OK` with the value written to `out` (unless `out` is null, as for
/// `()`), or the error written to `err`.
///
/// # Safety
/// `out`, unless null, and `err` must be valid for a write.
unsafe fn answer<T>(result: Result<T, RayError>, out: *mut T, err: *mut HostBuf) -> i32 {
    match result {
        Ok(value) => {
            if !out.is_null() {
                // SAFETY: the caller guarantees `out` is valid for a write.
                unsafe { *out = value };
            }
            STATUS_OK
        }
        // SAFETY: the caller guarantees `err` is valid for a write.
        Err(e) => unsafe { fail(err, e) },
    }
}

fn driver_runtime() -> &'static tokio::runtime::Runtime {
    DRIVER_RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("ray-driver")
            .enable_all()
            .build()
            .expect("start the driver's async runtime")
    })
}

/// Set in a REPL or notebook session's evaluation process.
static HOSTED_SESSION: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Marks this process as a session's driver: cells may call `ray::init()` again.
pub fn mark_hosted_session() {
    HOSTED_SESSION.store(true, Ordering::SeqCst);
}

/// Starts or attaches to a cluster and makes this process its driver.
pub fn init_driver(config: InitConfig) -> Result<Arc<Host>, RayError> {
    if current().is_some() {
        return Err(RayError::AlreadyInitialized);
    }
    let rt = driver_runtime();
    let (connection, cluster) = match &config.address {
        None => {
            let resources = NodeResources {
                num_cpus: config.num_cpus,
                num_gpus: config.num_gpus,
                custom: config.resources.clone(),
                object_store_memory: config.object_store_memory,
                plasma_directory: None,
            };
            let cluster = LocalCluster::start(&resources)?;
            let connection = Connection {
                head_address: cluster.head.address.clone(),
                node_address: cluster.node.address.clone(),
                node_id: Bytes::from(
                    ray_abi::ids::unhex(&cluster.node.extra)
                        .map_err(|e| RayError::Startup(format!("the node daemon announced a bad node id: {e}")))?,
                ),
                token: cluster.token.clone(),
                ip: "127.0.0.1".into(),
            };
            (connection, Some(cluster))
        }
        Some(address) => {
            // Ray's spellings: `auto`, `ray://`, the dashboard's address.
            let address = session::resolve_head_address(address, config.token.as_deref())?;
            let token = session::find_token(config.token.as_deref(), &address)?;
            let connection = rt.block_on(attach(&address, &token))?;
            (connection, None)
        }
    };
    let core = rt.block_on(CoreWorker::start(StartOptions {
        connection,
        job: None,
        is_worker: false,
        worker_id: Bytes::new(),
        namespace: config.namespace.clone().unwrap_or_default(),
        log_to_driver: config.log_to_driver.unwrap_or(true),
    }))?;
    let host = Arc::new(Host { core, cluster: cluster.map(Mutex::new) });
    *HOST.write().unwrap_or_else(|p| p.into_inner()) = Some(host.clone());
    Ok(host)
}

/// Finds the node daemon a driver on this machine should use.
async fn attach(head_address: &str, token: &str) -> Result<Connection, RayError> {
    let mut head = ray_proto::head_client(ray_proto::connect(head_address, token, "the head").await?);
    let info = head
        .get_cluster_info(ray_proto::Empty {})
        .await
        .map_err(|s| ray_proto::from_status(&s, "the head"))?
        .into_inner();
    let head_host = head_address.rsplit_once(':').map(|(h, _)| h).unwrap_or(head_address);
    let alive: Vec<_> = info.nodes.into_iter().filter(|n| n.is_alive()).collect();
    if alive.is_empty() {
        return Err(RayError::Startup(format!("the cluster at {head_address} has no live node")));
    }
    // Objects are written to the node's shared memory, so the node must be on
    // this machine; the head's own node first, if it is here.
    let this_host = ray_proto::host_id();
    let here: Vec<_> = alive.iter().filter(|n| n.host_id == this_host).collect();
    let node = here
        .iter()
        .find(|n| n.ip == head_host || n.ip == "127.0.0.1")
        .or_else(|| here.first())
        .map(|n| (*n).clone())
        .ok_or_else(|| {
            let ips: Vec<&str> = alive.iter().map(|n| n.ip.as_str()).collect();
            RayError::Startup(format!(
                "no node of the cluster at {head_address} runs on this machine (its nodes are at {}); start one \
                 here with `rayrepl start --address {head_address}`, then connect again",
                ips.join(", ")
            ))
        })?;
    Ok(Connection {
        head_address: head_address.to_string(),
        node_address: node.address,
        node_id: node.node_id,
        token: token.to_string(),
        ip: node.ip,
    })
}

/// Disconnects this driver; stops the embedded cluster if it started one.
pub fn shutdown_driver() {
    let host = HOST.write().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(host) = host {
        host.core.shutdown();
        if let Some(cluster) = &host.cluster {
            cluster.lock().unwrap_or_else(|p| p.into_inner()).stop();
        }
    }
}

/// Names the cell library that holds a cell's trampoline, publishing it to the
/// head, so workers can load the same code. Compiled programs need nothing.
fn resolve_artifact(core: &CoreWorker, function: &mut ray_abi::FunctionDescriptor) -> Result<(), RayError> {
    if function.artifact.is_some() || function.address == 0 {
        return Ok(());
    }
    let artifact = core.artifact_for(function.address, || library_of(function.address as usize))?;
    function.artifact = Some(artifact.ok_or_else(|| RayError::FunctionUnavailable {
        function: function.name.clone(),
        detail: "the library holding its code cannot be found in this process".into(),
    })?);
    Ok(())
}

/// The file of the shared library that contains `address`.
fn library_of(address: usize) -> Option<std::path::PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: an all-zero Dl_info is a valid value of this plain C struct.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: dladdr only reads the address and writes `info`; it accepts any
    // address and returns 0 if no loaded object contains it.
    let found = unsafe { libc::dladdr(address as *const c_void, &mut info) };
    if found == 0 || info.dli_fname.is_null() {
        return None;
    }
    // SAFETY: on success dli_fname points to a NUL-terminated path owned by the
    // dynamic linker, valid while the library stays loaded (cells are never unloaded).
    let name = unsafe { std::ffi::CStr::from_ptr(info.dli_fname) };
    Some(std::path::PathBuf::from(std::ffi::OsStr::from_bytes(name.to_bytes())))
}

fn timeout_of(ms: i64) -> Option<Duration> {
    (ms >= 0).then(|| Duration::from_millis(ms as u64))
}

/// # Safety
/// Pointers must be valid as the table's contract says.
unsafe fn parts_of<'a>(parts: *const Slice, n: usize) -> Vec<&'a [u8]> {
    if n == 0 {
        return Vec::new();
    }
    // SAFETY: the caller passes `n` valid slices at `parts`.
    let slices = unsafe { std::slice::from_raw_parts(parts, n) };
    // SAFETY: each slice points to live bytes for the duration of the call.
    slices.iter().map(|s| unsafe { s.as_bytes() }).collect()
}

/// # Safety
/// `ids` must point to `n` ids (or `n` is 0).
unsafe fn ids_of(ids: *const ObjectId, n: usize) -> Vec<ObjectId> {
    if n == 0 {
        return Vec::new();
    }
    // SAFETY: the caller passes `n` valid ids at `ids`.
    unsafe { std::slice::from_raw_parts(ids, n) }.to_vec()
}

unsafe extern "C" fn t_init(config: Slice, err: *mut HostBuf) -> i32 {
    if roles::requested_role().is_some() {
        roles::run_requested_role();
    }
    // SAFETY: the API crate passes valid config bytes.
    let bytes = unsafe { config.as_bytes() };
    let result = postcard::from_bytes::<InitConfig>(bytes)
        .map_err(|e| RayError::InvalidArgument(format!("bad init config: {e}")))
        .and_then(|config| {
            let elsewhere = asks_for_another_cluster(&config);
            match init_driver(config) {
                // A REPL or notebook session is already a driver; `ray::init()` in a
                // cell then just confirms it, as Ray's `ignore_reinit_error=True`
                // does. Asking for another cluster is not confirmed: it would
                // silently run everything on the wrong one.
                Err(RayError::AlreadyInitialized) if HOSTED_SESSION.load(Ordering::SeqCst) && !elsewhere => Ok(()),
                other => other.map(|_| ()),
            }
        });
    // SAFETY: `err` comes from the API crate and is valid for a write.
    unsafe { answer(result, std::ptr::null_mut(), err) }
}

/// Whether `config` names a cluster other than the one this process drives.
fn asks_for_another_cluster(config: &InitConfig) -> bool {
    match (&config.address, current()) {
        (Some(wanted), Some(host)) => match session::parse_address(wanted) {
            // "auto" is whichever cluster this process already drives.
            Ok(session::Address::Auto) => false,
            Ok(session::Address::Head(address)) => !session::same_address(&address, host.core.head_address()),
            Ok(session::Address::Dashboard(_)) => session::resolve_head_address(wanted, None)
                .map(|address| !session::same_address(&address, host.core.head_address()))
                .unwrap_or(true),
            Err(_) => true,
        },
        _ => false,
    }
}

unsafe extern "C" fn t_shutdown() {
    shutdown_driver();
}

unsafe extern "C" fn t_is_initialized() -> bool {
    current().is_some()
}

unsafe extern "C" fn t_put(
    parts: *const Slice,
    n_parts: usize,
    contained: *const ObjectId,
    n_contained: usize,
    out: *mut ObjectId,
    err: *mut HostBuf,
) -> i32 {
    // SAFETY: the API crate passes valid parts and ids.
    let (parts, contained) = unsafe { (parts_of(parts, n_parts), ids_of(contained, n_contained)) };
    // SAFETY: `out` and `err` are valid for a write.
    unsafe { answer(core().and_then(|c| c.put(&parts, contained)), out, err) }
}

unsafe extern "C" fn t_submit(spec: Slice, out: *mut ObjectId, err: *mut HostBuf) -> i32 {
    // SAFETY: the API crate passes valid spec bytes.
    let bytes = unsafe { spec.as_bytes() };
    let result = postcard::from_bytes(bytes)
        .map_err(|e| RayError::InvalidArgument(format!("bad task submission: {e}")))
        .and_then(|mut sub: ray_abi::TaskSubmission| {
            let core = core()?;
            resolve_artifact(&core, &mut sub.function)?;
            core.submit(sub)
        });
    // SAFETY: `out` and `err` are valid for a write.
    unsafe { answer(result, out, err) }
}

unsafe extern "C" fn t_get(id: *const ObjectId, timeout_ms: i64, out: *mut HostBuf, err: *mut HostBuf) -> i32 {
    // SAFETY: `id` points to a valid id.
    let id = unsafe { *id };
    // SAFETY: `out` and `err` are valid for a write.
    unsafe {
        answer(core().and_then(|c| c.get(&id, timeout_of(timeout_ms))).map(|data| lend(Loan::Data(data))), out, err)
    }
}

unsafe extern "C" fn t_wait(
    ids: *const ObjectId,
    n: usize,
    num_returns: usize,
    timeout_ms: i64,
    ready: *mut u8,
    err: *mut HostBuf,
) -> i32 {
    // SAFETY: the API crate passes `n` valid ids.
    let ids = unsafe { ids_of(ids, n) };
    match core().and_then(|c| c.wait(&ids, num_returns, timeout_of(timeout_ms))) {
        Ok(marks) => {
            for (i, m) in marks.iter().enumerate() {
                // SAFETY: `ready` has room for `n` bytes.
                unsafe { *ready.add(i) = u8::from(*m) };
            }
            STATUS_OK
        }
        // SAFETY: `err` is valid for a write.
        Err(e) => unsafe { fail(err, e) },
    }
}

struct SendPtr(*mut c_void);
// SAFETY: the pointer is an opaque token the API crate made for exactly this
// callback (an `Arc` it reclaims); the host never dereferences it.
unsafe impl Send for SendPtr {}

unsafe extern "C" fn t_on_ready(id: *const ObjectId, cb: ReadyCallback, data: *mut c_void) {
    // SAFETY: `id` points to a valid id.
    let id = unsafe { *id };
    let data = SendPtr(data);
    let fire = move || {
        let data = data;
        // SAFETY: the API crate's callback contract: called once with its token.
        unsafe { cb(data.0) }
    };
    match core() {
        Ok(c) => c.on_ready(&id, Box::new(fire)),
        Err(_) => fire(),
    }
}

unsafe extern "C" fn t_release(handle: u64) {
    if let Some(l) = LOANS.get() {
        l.lock().unwrap_or_else(|p| p.into_inner()).remove(&handle);
    }
}

unsafe extern "C" fn t_add_local_ref(id: *const ObjectId) {
    if let Some(h) = current() {
        // SAFETY: `id` points to a valid id.
        h.core.add_local_ref(unsafe { &*id });
    }
}

unsafe extern "C" fn t_remove_local_ref(id: *const ObjectId) {
    if let Some(h) = current() {
        // SAFETY: `id` points to a valid id.
        h.core.remove_local_ref(unsafe { &*id });
    }
}

unsafe extern "C" fn t_owner_of(id: *const ObjectId, out: *mut HostBuf, err: *mut HostBuf) -> i32 {
    // SAFETY: `id` points to a valid id.
    let id = unsafe { *id };
    // SAFETY: `out` and `err` are valid for a write.
    unsafe { answer(core().and_then(|c| c.owner_of(&id)).map(|owner| lend(Loan::Bytes(owner.into_bytes()))), out, err) }
}

unsafe extern "C" fn t_adopt_ref(id: *const ObjectId, owner: Slice, err: *mut HostBuf) -> i32 {
    // SAFETY: `id` and `owner` are valid per the table's contract.
    let (id, owner) = unsafe { (*id, String::from_utf8_lossy(owner.as_bytes()).into_owned()) };
    // SAFETY: `err` is valid for a write.
    unsafe { answer(core().map(|c| c.adopt_ref(id, &owner)), std::ptr::null_mut(), err) }
}

unsafe extern "C" fn t_cancel(id: *const ObjectId, force: bool, err: *mut HostBuf) -> i32 {
    // SAFETY: `id` points to a valid id.
    let id = unsafe { *id };
    // SAFETY: `err` is valid for a write.
    unsafe { answer(core().and_then(|c| c.cancel(&id, force)), std::ptr::null_mut(), err) }
}

unsafe extern "C" fn t_task_return(
    ctx: *mut c_void,
    parts: *const Slice,
    n_parts: usize,
    contained: *const ObjectId,
    n_contained: usize,
) {
    // SAFETY: the trampoline passes valid parts and ids for the call.
    let (parts, contained) = unsafe { (parts_of(parts, n_parts), ids_of(contained, n_contained)) };
    let bytes = parts.concat();
    // The return value (and the refs in it) is dropped as soon as we return; pin
    // those refs until the caller has been registered as their borrower.
    if let Some(h) = current() {
        h.core.pin(&contained);
    }
    // SAFETY: `ctx` is the executor's context of the call in progress.
    unsafe { ray_core::execute::complete(ctx, Ok((bytes, contained))) };
}

unsafe extern "C" fn t_task_fail(ctx: *mut c_void, err: Slice) {
    // SAFETY: the trampoline passes valid error bytes for the call.
    let e = RayError::from_bytes(unsafe { err.as_bytes() });
    // SAFETY: `ctx` is the executor's context of the call in progress.
    unsafe { ray_core::execute::complete(ctx, Err(e)) };
}

unsafe extern "C" fn t_context(out: *mut HostBuf, err: *mut HostBuf) -> i32 {
    let context = core().map(|c| c.context()).and_then(|ctx| {
        postcard::to_stdvec(&ctx).map_err(|e| RayError::Internal(format!("cannot encode context: {e}")))
    });
    // SAFETY: `out` and `err` are valid for a write.
    unsafe { answer(context.map(|bytes| lend(Loan::Bytes(bytes))), out, err) }
}

fn decode<T: serde::de::DeserializeOwned>(bytes: Slice, what: &str) -> Result<T, RayError> {
    // SAFETY: the API crate passes valid bytes for the duration of the call.
    postcard::from_bytes(unsafe { bytes.as_bytes() }).map_err(|e| RayError::InvalidArgument(format!("bad {what}: {e}")))
}

unsafe extern "C" fn t_create_actor(spec: Slice, out: *mut ActorId, err: *mut HostBuf) -> i32 {
    let created = decode(spec, "actor creation").and_then(|mut c: ray_abi::ActorCreation| {
        let core = core()?;
        resolve_artifact(&core, &mut c.constructor)?;
        core.create_actor(c)
    });
    // SAFETY: `out` and `err` are valid for a write.
    unsafe { answer(created, out, err) }
}

unsafe extern "C" fn t_call_actor(call: Slice, out: *mut ObjectId, err: *mut HostBuf) -> i32 {
    // SAFETY: `out` and `err` are valid for a write.
    unsafe { answer(decode(call, "actor call").and_then(|c| core()?.call_actor(c)), out, err) }
}

unsafe extern "C" fn t_kill_actor(id: *const ActorId, no_restart: bool, err: *mut HostBuf) -> i32 {
    // SAFETY: `id` points to a valid id.
    let id = unsafe { *id };
    // SAFETY: `err` is valid for a write.
    unsafe { answer(core().and_then(|c| c.kill_actor(&id, no_restart)), std::ptr::null_mut(), err) }
}

unsafe extern "C" fn t_get_actor(name: Slice, namespace: Slice, out: *mut HostBuf, err: *mut HostBuf) -> i32 {
    // SAFETY: the API crate passes valid UTF-8 bytes for the call.
    let (name, namespace) = unsafe {
        (
            String::from_utf8_lossy(name.as_bytes()).into_owned(),
            String::from_utf8_lossy(namespace.as_bytes()).into_owned(),
        )
    };
    let ns = (!namespace.is_empty()).then_some(namespace.as_str());
    let result = core().and_then(|c| c.get_named_actor(&name, ns)).and_then(|r| {
        postcard::to_stdvec(&r).map_err(|e| RayError::Internal(format!("cannot encode an actor ref: {e}")))
    });
    // SAFETY: `out` and `err` are valid for a write.
    unsafe { answer(result.map(|bytes| lend(Loan::Bytes(bytes))), out, err) }
}

unsafe extern "C" fn t_exit_actor(err: *mut HostBuf) -> i32 {
    // SAFETY: `err` is valid for a write.
    unsafe { answer(core().and_then(|c| c.exit_actor()), std::ptr::null_mut(), err) }
}

unsafe extern "C" fn t_placement_group(request: Slice, out: *mut HostBuf, err: *mut HostBuf) -> i32 {
    let reply = decode(request, "placement-group request").and_then(|r| core()?.placement_group(r)).and_then(
        |reply: ray_abi::PlacementGroupReply| {
            postcard::to_stdvec(&reply).map_err(|e| RayError::Internal(format!("cannot encode a placement group: {e}")))
        },
    );
    // SAFETY: `out` and `err` are valid for a write.
    unsafe { answer(reply.map(|bytes| lend(Loan::Bytes(bytes))), out, err) }
}

unsafe extern "C" fn t_actor_created(ctx: *mut c_void, instance: *mut c_void) {
    // SAFETY: `ctx` is the executor's context of the constructor call in progress.
    unsafe { ray_core::execute::actor_created(ctx, instance) };
}

/// The table every copy of the `ray` crate in this process calls into. Exported
/// unmangled so cell libraries loaded into a host binary (linked with
/// `-Wl,--export-dynamic-symbol=RAYREPL_HOST_TABLE_V1`) can find it.
#[unsafe(no_mangle)]
pub static RAYREPL_HOST_TABLE_V1: HostTable = HostTable {
    abi_version: ABI_VERSION,
    init: t_init,
    shutdown: t_shutdown,
    is_initialized: t_is_initialized,
    put: t_put,
    submit_task: t_submit,
    get: t_get,
    wait: t_wait,
    on_ready: t_on_ready,
    release: t_release,
    add_local_ref: t_add_local_ref,
    remove_local_ref: t_remove_local_ref,
    owner_of: t_owner_of,
    adopt_ref: t_adopt_ref,
    cancel: t_cancel,
    task_return: t_task_return,
    task_fail: t_task_fail,
    context: t_context,
    create_actor: t_create_actor,
    call_actor: t_call_actor,
    kill_actor: t_kill_actor,
    get_actor: t_get_actor,
    exit_actor: t_exit_actor,
    actor_created: t_actor_created,
    placement_group: t_placement_group,
};

pub(crate) use RAYREPL_HOST_TABLE_V1 as TABLE;

/// The host table of this process.
pub fn host_table() -> &'static HostTable {
    &RAYREPL_HOST_TABLE_V1
}
