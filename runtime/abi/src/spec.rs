//! What a caller asks for when it submits a task, as the API crate hands it to the
//! runtime. It is serialized with postcard so it crosses the C-ABI as bytes.

use crate::ids::{ActorId, ObjectId};
use crate::placement::SchedulingStrategy;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Names a remote function so that any worker can find it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct FunctionDescriptor {
    /// Display name, as Ray shows it in logs and `list tasks`.
    pub name: String,
    /// Registry key in a compiled program: `module::path::name`.
    pub key: String,
    /// Exported trampoline symbol in a REPL cell library.
    pub symbol: String,
    /// Content hash of the cell library that holds the symbol; `None` means the
    /// job's own executable.
    pub artifact: Option<String>,
    /// Address of the trampoline in this process, for a cell: the host finds the
    /// library that holds it and publishes that as the artifact. Zero otherwise.
    pub address: u64,
}

/// One argument of a task call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ArgSubmission {
    /// An encoded value, with the object refs nested inside it.
    Value {
        /// The encoded value.
        data: Vec<u8>,
        /// Refs serialized inside the value; they stay refs in the task.
        contained: Vec<ObjectId>,
    },
    /// A top-level object ref: the task receives the object's value.
    Ref(ObjectId),
}

/// Per-call options, Ray's `.options(...)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct TaskOptions {
    /// Overrides the task's display name.
    pub name: Option<String>,
    /// CPUs to reserve (default 1; fractions allowed).
    pub num_cpus: Option<f64>,
    /// GPUs to reserve (default 0).
    pub num_gpus: Option<f64>,
    /// Memory to reserve, in bytes.
    pub memory: Option<f64>,
    /// Custom resources to reserve.
    pub resources: BTreeMap<String, f64>,
    /// Retries when the worker dies (default 3, like Ray).
    pub max_retries: Option<u32>,
    /// Also retry when the task panics.
    pub retry_exceptions: bool,
    /// Where it runs (Ray's `scheduling_strategy`).
    pub scheduling_strategy: SchedulingStrategy,
}

impl TaskOptions {
    /// The resources a task with these options holds while it runs.
    pub fn resource_demand(&self) -> BTreeMap<String, f64> {
        let mut r = BTreeMap::new();
        let cpus = self.num_cpus.unwrap_or(1.0);
        if cpus > 0.0 {
            r.insert("CPU".to_string(), cpus);
        }
        if let Some(g) = self.num_gpus.filter(|g| *g > 0.0) {
            r.insert("GPU".to_string(), g);
        }
        if let Some(m) = self.memory.filter(|m| *m > 0.0) {
            r.insert("memory".to_string(), m);
        }
        for (k, v) in &self.resources {
            if *v > 0.0 {
                r.insert(k.clone(), *v);
            }
        }
        r
    }
}

/// A task call as the API crate submits it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSubmission {
    /// What to run.
    pub function: FunctionDescriptor,
    /// Its arguments, in order.
    pub args: Vec<ArgSubmission>,
    /// Its options.
    pub options: TaskOptions,
}

/// How a driver wants to reach a cluster: `ray::init_with(..)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct InitConfig {
    /// Head address `host:port` to attach to; `None` starts a local cluster.
    pub address: Option<String>,
    /// CPUs for a local cluster (default: the machine's).
    pub num_cpus: Option<f64>,
    /// GPUs for a local cluster.
    pub num_gpus: Option<f64>,
    /// Custom resources for a local cluster.
    pub resources: BTreeMap<String, f64>,
    /// Object store capacity in bytes for a local cluster.
    pub object_store_memory: Option<u64>,
    /// Cluster token; otherwise read from the environment or the session directory.
    pub token: Option<String>,
    /// Namespace for named actors.
    pub namespace: Option<String>,
    /// Forward worker output to this process (default true, like Ray's log_to_driver).
    pub log_to_driver: Option<bool>,
}

/// What the runtime tells the API about the cluster it is connected to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct RuntimeContext {
    /// The head's address.
    pub address: String,
    /// This job.
    pub job_id: u32,
    /// Alive nodes.
    pub nodes: u32,
    /// Total CPUs across alive nodes.
    pub cpus: f64,
    /// Total GPUs across alive nodes.
    pub gpus: f64,
    /// Total object store capacity in bytes.
    pub object_store_memory: u64,
    /// Whether this process is a worker (inside a task) rather than a driver.
    pub is_worker: bool,
    /// This process's id.
    pub pid: u32,
    /// The name of the running task, in a worker.
    pub task_name: Option<String>,
    /// The node this process runs on, in hex (Ray's `get_node_id()`).
    pub node_id: String,
    /// The rayrepl version.
    pub version: String,
    /// The Rust toolchain the runtime was built with (cells must match it).
    pub toolchain: String,
}

/// Options for creating an actor: Ray's `Actor.options(...)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ActorOptions {
    /// A name other processes can find it by with `ray::get_actor`.
    pub name: Option<String>,
    /// The namespace of the name (default: the job's).
    pub namespace: Option<String>,
    /// Return the live actor of this name instead of failing when it exists.
    pub get_if_exists: bool,
    /// Outlive the creating job, until `ray::kill`.
    pub detached: bool,
    /// Calls that may run at once (threads for sync actors; default 1, or 1000
    /// for async actors).
    pub max_concurrency: Option<u32>,
    /// Times the actor is restarted after its process dies (-1: forever; default 0).
    pub max_restarts: Option<i32>,
    /// Times a call is retried when the actor's process dies (-1: forever; default 0).
    pub max_task_retries: Option<i32>,
    /// CPUs held for the actor's lifetime (default 0, like Ray).
    pub num_cpus: Option<f64>,
    /// GPUs held for the actor's lifetime.
    pub num_gpus: Option<f64>,
    /// Memory held, in bytes.
    pub memory: Option<f64>,
    /// Custom resources held.
    pub resources: BTreeMap<String, f64>,
    /// Where it runs (Ray's `scheduling_strategy`).
    pub scheduling_strategy: SchedulingStrategy,
}

impl ActorOptions {
    /// The resources the actor holds while it lives.
    pub fn resource_demand(&self) -> BTreeMap<String, f64> {
        TaskOptions {
            num_cpus: Some(self.num_cpus.unwrap_or(0.0)),
            num_gpus: self.num_gpus,
            memory: self.memory,
            resources: self.resources.clone(),
            ..TaskOptions::default()
        }
        .resource_demand()
    }
}

/// An actor creation as the API crate submits it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActorCreation {
    /// The actor's type name.
    pub class: String,
    /// The constructor.
    pub constructor: FunctionDescriptor,
    /// The constructor's arguments.
    pub args: Vec<ArgSubmission>,
    /// Options.
    pub options: ActorOptions,
    /// Whether the actor has async methods (it then runs an event loop).
    pub is_async: bool,
}

/// A method call on an actor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActorCall {
    /// The actor.
    pub actor: ActorId,
    /// The method.
    pub method: FunctionDescriptor,
    /// Its arguments.
    pub args: Vec<ArgSubmission>,
}

/// What an actor handle carries: enough for any process to call the actor.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ActorRef {
    /// The actor.
    pub id: ActorId,
    /// Its type name.
    pub class: String,
}
