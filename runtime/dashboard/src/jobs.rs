//! Submitted jobs: running each entrypoint on the head's machine and keeping
//! its record, log and stop switch.
//!
//! A job is a shell command (`cargo run --release`, `python script.py`) that
//! the head runs in the job's working directory with `RAYREPL_ADDRESS` set, so
//! the `ray::init()` inside attaches to this cluster as the job's driver. Its
//! output goes to `<session>/logs/job-driver-<submission id>.log`, as Ray's does.
//! Each entrypoint is its own process group, so a stop reaches whatever the
//! command started (cargo and the program it runs): SIGTERM, then SIGKILL after
//! [`JobsConfig::stop_grace`].
//!
//! The records live in the head's table (so `rayrepl list jobs` and the state
//! API see them); what only the supervising process can know (the stop switch
//! and the status as it changes) is kept here. [`crate::lifecycle`] decides
//! every status.

use crate::error::DashboardError;
use crate::lifecycle::{self, Event, Status};
use crate::packages::{self, Packages};
use ray_proto::{
    Bundle, CreatePlacementGroupsRequest, DeleteJobSubmissionRequest, Empty, GetPlacementGroupRequest, HeadClient,
    JobInfo, JobSubmission, PlacementGroupInfo, RemovePlacementGroupsRequest, placement_group_info,
};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tonic::codegen::Bytes;

/// How a head runs submitted jobs.
#[derive(Clone, Debug)]
pub struct JobsConfig {
    /// The head's gRPC address, given to entrypoints as `RAYREPL_ADDRESS`.
    pub head_address: String,
    /// The cluster token, given to entrypoints as `RAYREPL_TOKEN`.
    pub token: String,
    /// The session directory: logs, packages and working directories go here.
    pub session_dir: PathBuf,
    /// How long a stopped job has between SIGTERM and SIGKILL (Ray's
    /// `RAY_JOB_STOP_WAIT_TIME_S`, 3 s).
    pub stop_grace: Duration,
}

/// A job submission as Ray's `POST /api/jobs/` takes it.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitRequest {
    /// The shell command to run.
    pub entrypoint: String,
    /// The id to give the job; one is made up if absent.
    #[serde(default)]
    pub submission_id: Option<String>,
    /// Ray's deprecated name for `submission_id`.
    #[serde(default)]
    pub job_id: Option<String>,
    /// `working_dir` (an uploaded package) and `env_vars`.
    #[serde(default)]
    pub runtime_env: Option<serde_json::Map<String, serde_json::Value>>,
    /// Arbitrary labels kept with the job.
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
    /// CPUs the entrypoint itself needs.
    #[serde(default)]
    pub entrypoint_num_cpus: Option<f64>,
    /// GPUs the entrypoint itself needs.
    #[serde(default)]
    pub entrypoint_num_gpus: Option<f64>,
    /// Memory the entrypoint itself needs, in bytes.
    #[serde(default)]
    pub entrypoint_memory: Option<u64>,
    /// Custom resources the entrypoint itself needs.
    #[serde(default)]
    pub entrypoint_resources: Option<BTreeMap<String, f64>>,
    /// Node labels the entrypoint must run on.
    #[serde(default)]
    pub entrypoint_label_selector: Option<BTreeMap<String, String>>,
}

/// What a runtime environment asks for, of what rayrepl provides.
#[derive(Debug, Default, PartialEq)]
struct RuntimeEnv {
    /// The package to run in.
    working_dir: Option<String>,
    /// Variables set for the entrypoint.
    env_vars: BTreeMap<String, String>,
}

/// Reads the runtime environment: `working_dir` and `env_vars` are honoured;
/// anything else Ray knows (pip, conda, containers...) is refused by name, as
/// running without it would be wrong.
fn runtime_env(env: Option<&serde_json::Map<String, serde_json::Value>>) -> Result<RuntimeEnv, DashboardError> {
    let mut out = RuntimeEnv::default();
    let Some(env) = env else { return Ok(out) };
    for (key, value) in env {
        match (key.as_str(), value) {
            (_, serde_json::Value::Null) => {}
            ("working_dir", serde_json::Value::String(uri)) => {
                out.working_dir = Some(packages::name_in_uri(uri)?.to_string());
            }
            ("env_vars", serde_json::Value::Object(vars)) => {
                for (name, value) in vars {
                    let serde_json::Value::String(value) = value else {
                        return Err(DashboardError::BadRequest(format!(
                            "runtime_env.env_vars.{name} must be a string, got {value}"
                        )));
                    };
                    if name.is_empty() || name.contains('=') || name.contains('\0') || value.contains('\0') {
                        return Err(DashboardError::BadRequest(format!("{name:?} is not a variable name")));
                    }
                    out.env_vars.insert(name.clone(), value.clone());
                }
            }
            ("working_dir" | "env_vars", other) => {
                return Err(DashboardError::BadRequest(format!("runtime_env.{key} has the wrong type: {other}")));
            }
            // Set by Ray's client on every submission; nothing to do.
            ("_ray_commit" | "config", _) => {}
            (other, _) => {
                return Err(DashboardError::BadRequest(format!(
                    "runtime_env.{other} is not supported by rayrepl; working_dir and env_vars are"
                )));
            }
        }
    }
    Ok(out)
}

/// The head's own `RAYREPL_*` settings an entrypoint keeps: where sessions
/// live (so `rayrepl` commands inside find this cluster) and the log filter.
const KEPT_FOR_ENTRYPOINTS: &[&str] = &["RAYREPL_TEMP_DIR", "RAYREPL_LOG"];

/// A made-up submission id, in Ray's form: `raysubmit_` and 16 letters and digits.
fn new_submission_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let suffix: String = (0..16).map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char).collect();
    format!("raysubmit_{suffix}")
}

/// Whether `id` can name a job: it becomes part of a log file's name.
fn valid_submission_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && !id.starts_with('.')
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Why an entrypoint's resources were not reserved.
enum Unreserved {
    /// The job was stopped while it waited.
    Stopped,
    /// The head refused the reservation.
    Refused(String),
}

/// The namespace entrypoint reservations are named in (`job:<submission id>`).
const ENTRYPOINT_NAMESPACE: &str = "_rayrepl_jobs";

/// A job this process supervises: its status as it changes, and its stop switch.
struct Supervised {
    status: watch::Receiver<Status>,
    stop: watch::Sender<bool>,
}

/// The jobs of one head.
#[derive(Clone)]
pub struct Jobs {
    config: Arc<JobsConfig>,
    head: HeadClient,
    packages: Packages,
    supervised: Arc<Mutex<HashMap<String, Supervised>>>,
}

/// A job as the API shows it: its record and, when it started one, its driver.
#[derive(Debug, Clone)]
pub struct Found {
    /// The submission's record.
    pub submission: JobSubmission,
    /// The driver its entrypoint registered, if any.
    pub driver: Option<JobInfo>,
}

impl Jobs {
    /// Jobs run with `config`, recorded in the head at `head`.
    pub fn new(config: JobsConfig, head: HeadClient) -> Self {
        Jobs {
            packages: Packages::new(&config.session_dir),
            config: Arc::new(config),
            head,
            supervised: Arc::default(),
        }
    }

    /// The packages working directories come in.
    pub fn packages(&self) -> &Packages {
        &self.packages
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Supervised>> {
        self.supervised.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The log file of job `id`.
    pub fn log_path(&self, id: &str) -> PathBuf {
        self.config.session_dir.join("logs").join(format!("job-driver-{id}.log"))
    }

    /// Every submitted job and every driver job, as the head has them.
    pub async fn all(&self) -> Result<(Vec<Found>, Vec<JobInfo>), DashboardError> {
        let reply = self.head.clone().list_jobs(Empty {}).await?.into_inner();
        let mut drivers: HashMap<String, JobInfo> = HashMap::new();
        let mut by_hand = Vec::new();
        for job in reply.jobs {
            if job.submission_id.is_empty() {
                by_hand.push(job);
            } else {
                // A submission whose entrypoint starts several drivers shows its latest.
                drivers.insert(job.submission_id.clone(), job);
            }
        }
        let submitted = reply
            .submissions
            .into_iter()
            .map(|s| Found { driver: drivers.remove(&s.submission_id), submission: s })
            .collect();
        Ok((submitted, by_hand))
    }

    /// The job with submission id `id`, or whose driver has job id `id` (hex).
    pub async fn find(&self, id: &str) -> Result<Found, DashboardError> {
        let (submitted, _) = self.all().await?;
        submitted
            .into_iter()
            .find(|f| {
                f.submission.submission_id == id
                    || f.driver.as_ref().is_some_and(|d| crate::state_api::job_hex(d.job_id) == id)
            })
            .ok_or_else(|| {
                DashboardError::NotFound(format!("Job {id} does not exist; `rayrepl job list` shows the jobs"))
            })
    }

    async fn record(&self, job: &JobSubmission) {
        if let Err(e) = self.head.clone().put_job_submission(job.clone()).await {
            tracing::warn!("job {}: the head did not take its record ({}): {e}", job.submission_id, job.status);
        }
    }

    /// Checks and accepts a job, starts its supervisor, and returns its id.
    pub async fn submit(&self, req: SubmitRequest) -> Result<String, DashboardError> {
        if req.entrypoint.trim().is_empty() {
            return Err(DashboardError::BadRequest("the job has no entrypoint: give the command to run".into()));
        }
        if req.entrypoint_label_selector.as_ref().is_some_and(|s| !s.is_empty()) {
            return Err(DashboardError::BadRequest(
                "entrypoint_label_selector is not supported by rayrepl: nodes have no labels".into(),
            ));
        }
        for (what, amount) in
            [("entrypoint_num_cpus", req.entrypoint_num_cpus), ("entrypoint_num_gpus", req.entrypoint_num_gpus)]
        {
            if amount.is_some_and(|a| !a.is_finite() || a < 0.0) {
                return Err(DashboardError::BadRequest(format!("{what} must be a number of at least 0")));
            }
        }
        if req.entrypoint_memory.is_some_and(|m| m > 0) {
            return Err(DashboardError::BadRequest(
                "entrypoint_memory is not supported by rayrepl: nodes do not offer memory as a resource; \
                 reserve CPUs or custom resources instead"
                    .into(),
            ));
        }
        let env = runtime_env(req.runtime_env.as_ref())?;
        if let Some(name) = &env.working_dir
            && !self.packages.exists(packages::PROTOCOL, name)?
        {
            return Err(DashboardError::BadRequest(format!(
                "working_dir package gcs://{name} was never uploaded; upload it first (PUT /api/packages/gcs/{name})"
            )));
        }
        let id = match req.submission_id.or(req.job_id) {
            Some(id) if !valid_submission_id(&id) => {
                return Err(DashboardError::BadRequest(format!(
                    "submission id {id:?} may hold only letters, digits, '-', '_' and '.'"
                )));
            }
            Some(id) => id,
            None => new_submission_id(),
        };
        let (status_tx, status_rx) = watch::channel(Status::Pending);
        let (stop_tx, stop_rx) = watch::channel(false);
        {
            // Taken here first, so two submissions of one id cannot both pass.
            let mut supervised = self.lock();
            if supervised.contains_key(&id) {
                return Err(DashboardError::BadRequest(format!("Job with submission_id {id} already exists")));
            }
            supervised.insert(id.clone(), Supervised { status: status_rx, stop: stop_tx });
        }
        let known = match self.all().await {
            Ok((submitted, _)) => submitted.iter().any(|f| f.submission.submission_id == id),
            Err(e) => {
                self.lock().remove(&id);
                return Err(e);
            }
        };
        if known {
            self.lock().remove(&id);
            return Err(DashboardError::BadRequest(format!("Job with submission_id {id} already exists")));
        }
        let record = JobSubmission {
            submission_id: id.clone(),
            entrypoint: req.entrypoint,
            status: Status::Pending.into(),
            message: lifecycle::PENDING_MESSAGE.into(),
            start_time_ms: now_ms(),
            metadata: req.metadata.unwrap_or_default().into_iter().collect(),
            runtime_env_json: req.runtime_env.map(|e| serde_json::Value::Object(e).to_string()).unwrap_or_default(),
            entrypoint_num_cpus: req.entrypoint_num_cpus.unwrap_or(0.0),
            entrypoint_num_gpus: req.entrypoint_num_gpus.unwrap_or(0.0),
            entrypoint_memory: req.entrypoint_memory.unwrap_or(0),
            entrypoint_resources: req.entrypoint_resources.unwrap_or_default().into_iter().collect(),
            ..JobSubmission::default()
        };
        if let Err(e) = self.head.clone().put_job_submission(record.clone()).await {
            self.lock().remove(&id);
            return Err(e.into());
        }
        tracing::info!("job {id} submitted: {}", record.entrypoint);
        tokio::spawn(self.clone().supervise(record, env, status_tx, stop_rx));
        Ok(id)
    }

    /// Runs one job to its end, recording each change.
    async fn supervise(
        self,
        mut job: JobSubmission,
        env: RuntimeEnv,
        status: watch::Sender<Status>,
        mut stop: watch::Receiver<bool>,
    ) {
        let id = job.submission_id.clone();
        let happen = |job: &mut JobSubmission, event: Event| {
            let changed = lifecycle::apply(job, event, now_ms());
            status.send_replace(job.status());
            changed
        };
        let prepared = self.prepare(&id, env.working_dir.as_deref()).await;
        let (cwd, log) = match prepared {
            Ok(ready) => ready,
            Err(e) => {
                happen(&mut job, Event::SetupFailed(e.to_string()));
                self.record(&job).await;
                return;
            }
        };
        let reservation = match self.reserve(&mut job, &mut stop).await {
            Ok(reservation) => reservation,
            Err(Unreserved::Stopped) => {
                happen(&mut job, Event::Stopped);
                self.record(&job).await;
                return;
            }
            Err(Unreserved::Refused(why)) => {
                happen(&mut job, Event::SetupFailed(why));
                self.record(&job).await;
                return;
            }
        };
        let mut child = match self.spawn(&job, &env, &cwd, log) {
            Ok(child) => child,
            Err(e) => {
                happen(&mut job, Event::StartFailed(e.to_string()));
                self.release(reservation).await;
                self.record(&job).await;
                return;
            }
        };
        let pid = child.id().unwrap_or(0);
        happen(&mut job, Event::Started { pid });
        self.record(&job).await;
        let exit = tokio::select! {
            exit = child.wait() => Some(exit),
            _ = stop.wait_for(|s| *s) => None,
        };
        let exit = match exit {
            Some(exit) => exit,
            None => {
                // Stopped: the whole group, politely first.
                signal_group(pid, libc::SIGTERM);
                let exit = match tokio::time::timeout(self.config.stop_grace, child.wait()).await {
                    Ok(exit) => exit,
                    Err(_) => {
                        signal_group(pid, libc::SIGKILL);
                        child.wait().await
                    }
                };
                happen(&mut job, Event::Stopped);
                exit
            }
        };
        // Whatever the entrypoint left running in its group goes with it.
        signal_group(pid, libc::SIGKILL);
        self.release(reservation).await;
        if let Ok(exit) = exit {
            use std::os::unix::process::ExitStatusExt;
            let log_tail = tail_of_file(&self.log_path(&id), lifecycle::LOG_TAIL_CHARS * 4).await;
            happen(&mut job, Event::Exited { code: exit.code(), signal: exit.signal(), log_tail });
        } else if let Err(e) = exit {
            happen(&mut job, Event::Exited { code: None, signal: None, log_tail: format!("cannot wait for it: {e}") });
        }
        self.record(&job).await;
        tracing::info!("job {id} ended {}", job.status().as_str_name());
    }

    /// Reserves what the entrypoint itself needs (`entrypoint_num_cpus`, ...),
    /// as Ray reserves it for the job's supervisor: a one-bundle placement group
    /// the head places like any other, so tasks cannot take those resources.
    /// The job stays PENDING until it is placed (a node may have to join).
    async fn reserve(
        &self,
        job: &mut JobSubmission,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Option<Bytes>, Unreserved> {
        let stopped = *stop.borrow_and_update();
        if stopped {
            return Err(Unreserved::Stopped);
        }
        let mut wanted: BTreeMap<String, f64> = job.entrypoint_resources.clone().into_iter().collect();
        for (name, amount) in [("CPU", job.entrypoint_num_cpus), ("GPU", job.entrypoint_num_gpus)] {
            if amount > 0.0 {
                wanted.insert(name.to_string(), amount);
            }
        }
        wanted.retain(|_, amount| *amount > 0.0);
        if wanted.is_empty() {
            return Ok(None);
        }
        let id = ray_abi::PlacementGroupId::new(rand::random(), ray_abi::ids::JobId(0));
        let mut group = PlacementGroupInfo {
            placement_group_id: id.0.to_vec().into(),
            name: format!("job:{}", job.submission_id),
            namespace: ENTRYPOINT_NAMESPACE.into(),
            bundles: vec![Bundle { index: 0, resources: ray_proto::resources_from_map(&wanted), ..Bundle::default() }],
            // Its life is the job's: released when the entrypoint ends.
            detached: true,
            ..PlacementGroupInfo::default()
        };
        group.set_strategy(placement_group_info::Strategy::StrictPack);
        let mut head = self.head.clone();
        let refused = head
            .create_placement_groups(CreatePlacementGroupsRequest { groups: vec![group] })
            .await
            .map_err(|s| Unreserved::Refused(ray_proto::from_status(&s, "the head").to_string()))?
            .into_inner()
            .errors;
        if let Some(why) = refused.into_iter().find(|e| !e.is_empty()) {
            return Err(Unreserved::Refused(ray_abi::RayError::from_bytes(&why).to_string()));
        }
        let reservation = Some(Bytes::from(id.0.to_vec()));
        job.message = format!(
            "Job has not started yet: it waits for the resources its entrypoint needs ({}).",
            ray_proto::format_resources(&wanted)
        );
        self.record(job).await;
        loop {
            let wait = GetPlacementGroupRequest {
                placement_group_id: id.0.to_vec().into(),
                wait: true,
                timeout_ms: 1000,
                ..GetPlacementGroupRequest::default()
            };
            let placed = tokio::select! {
                reply = head.get_placement_group(wait) => reply,
                _ = async { stop.wait_for(|s| *s).await.map(drop) } => {
                    self.release(reservation).await;
                    return Err(Unreserved::Stopped);
                }
            };
            match placed.map(|r| r.into_inner().state()) {
                Ok(placement_group_info::State::Created) => return Ok(reservation),
                Ok(placement_group_info::State::Removed) => {
                    return Err(Unreserved::Refused("its resource reservation was removed".into()));
                }
                Ok(_) => {}
                Err(e) => tracing::debug!("job {}: waiting for its reservation: {e}", job.submission_id),
            }
        }
    }

    /// Gives back what [`Jobs::reserve`] reserved.
    async fn release(&self, reservation: Option<Bytes>) {
        let Some(id) = reservation else { return };
        let request = RemovePlacementGroupsRequest { placement_group_ids: vec![id] };
        if let Err(e) = self.head.clone().remove_placement_groups(request).await {
            tracing::warn!("an entrypoint's reservation was not given back: {e}");
        }
    }

    /// The job's working directory (unpacked) and its log file, opened.
    async fn prepare(&self, id: &str, working_dir: Option<&str>) -> Result<(PathBuf, std::fs::File), DashboardError> {
        let packages = self.packages.clone();
        let session = self.config.session_dir.clone();
        let log_path = self.log_path(id);
        let working_dir = working_dir.map(str::to_string);
        tokio::task::spawn_blocking(move || {
            let cwd = match working_dir {
                Some(name) => packages.unpacked(&name)?,
                None => session,
            };
            if let Some(dir) = log_path.parent() {
                ray_proto::private::create_dir(dir).map_err(DashboardError::private)?;
            }
            let log = ray_proto::private::create_file(&log_path, false).map_err(DashboardError::private)?;
            Ok((cwd, log))
        })
        .await
        .map_err(DashboardError::join("preparing the job"))?
    }

    fn spawn(
        &self,
        job: &JobSubmission,
        env: &RuntimeEnv,
        cwd: &Path,
        log: std::fs::File,
    ) -> std::io::Result<tokio::process::Child> {
        let err = log.try_clone()?;
        let mut cmd = tokio::process::Command::new("/bin/sh");
        // The head runs as a role of the rayrepl binary (RAYREPL_ROLE=head and its
        // settings); a Ray program started with those would become a second head.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if name.starts_with("RAYREPL_") && !KEPT_FOR_ENTRYPOINTS.contains(&name.as_ref()) {
                cmd.env_remove(name.as_ref());
            }
        }
        // Each version of a project unpacks to a directory of its own; one shared
        // build directory keeps `cargo run` incremental from one job to the next.
        if std::env::var_os("CARGO_TARGET_DIR").is_none() {
            cmd.env("CARGO_TARGET_DIR", self.config.session_dir.join("runtime_resources").join("cargo_target"));
        }
        cmd.arg("-c")
            .arg(&job.entrypoint)
            .current_dir(cwd)
            .envs(&env.env_vars)
            .env("RAYREPL_ADDRESS", &self.config.head_address)
            .env("RAYREPL_TOKEN", &self.config.token)
            .env(ray_proto::SUBMISSION_ID_ENV, &job.submission_id)
            // A Python entrypoint calling Ray's own `ray.init()` would look for
            // a Ray cluster; say which job it is, as Ray does.
            .env("RAY_JOB_SUBMISSION_ID", &job.submission_id)
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(err)
            .process_group(0)
            .kill_on_drop(true);
        cmd.spawn()
    }

    /// Asks job `id` to stop. `Ok(false)` if it had already ended.
    pub async fn stop(&self, id: &str) -> Result<bool, DashboardError> {
        let found = self.find(id).await?;
        let sid = &found.submission.submission_id;
        let supervised = self.lock();
        match supervised.get(sid) {
            Some(job) if !lifecycle::is_terminal(*job.status.borrow()) => {
                job.stop.send_replace(true);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Forgets an ended job: its record and its log. A job that has not ended
    /// must be stopped first.
    pub async fn delete(&self, id: &str) -> Result<bool, DashboardError> {
        let found = self.find(id).await?;
        let sid = found.submission.submission_id.clone();
        if !lifecycle::is_terminal(found.submission.status()) {
            return Err(DashboardError::BadRequest(format!(
                "Attempted to delete job '{sid}', but it is in a non-terminal state {}; stop it first \
                 (`rayrepl job stop {sid}`)",
                found.submission.status().as_str_name()
            )));
        }
        self.head.clone().delete_job_submission(DeleteJobSubmissionRequest { submission_id: sid.clone() }).await?;
        self.lock().remove(&sid);
        let log = self.log_path(&sid);
        if let Err(e) = tokio::fs::remove_file(&log).await
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!("cannot delete {}: {e}", log.display());
        }
        Ok(true)
    }

    /// The status of job `id` as it changes, while this process supervises it.
    pub fn watch_status(&self, id: &str) -> Option<watch::Receiver<Status>> {
        self.lock().get(id).map(|j| j.status.clone())
    }

    /// Stops every job still running and waits until they have ended: the head
    /// is going away, and jobs are bound to the cluster's lifetime as in Ray.
    pub async fn stop_all_and_wait(&self) {
        let statuses: Vec<watch::Receiver<Status>> = self
            .lock()
            .values()
            .map(|job| {
                job.stop.send_replace(true);
                job.status.clone()
            })
            .collect();
        let all_ended = futures_util::future::join_all(
            statuses.into_iter().map(|mut s| async move { s.wait_for(|s| lifecycle::is_terminal(*s)).await.map(drop) }),
        );
        // The supervisors give SIGKILL after the grace; a little more for the records.
        let _ = tokio::time::timeout(self.config.stop_grace + Duration::from_secs(2), all_ended).await;
    }
}

/// Sends `signal` to the process group `pid` leads (each entrypoint leads its own).
fn signal_group(pid: u32, signal: i32) {
    let Ok(pgid) = i32::try_from(pid) else { return };
    if pgid <= 1 {
        return;
    }
    // SAFETY: kill(2) has no memory-safety requirements; a negative pid names
    // the process group the entrypoint was started as the leader of.
    unsafe { libc::kill(-pgid, signal) };
}

/// The last `max` bytes of a file, as text; only those are read.
async fn tail_of_file(path: &Path, max: usize) -> String {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let Ok(mut file) = tokio::fs::File::open(path).await else { return String::new() };
    let len = file.metadata().await.map(|m| m.len()).unwrap_or(0);
    let mut bytes = Vec::new();
    if file.seek(std::io::SeekFrom::Start(len.saturating_sub(max as u64))).await.is_ok() {
        let _ = file.read_to_end(&mut bytes).await;
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env(v: serde_json::Value) -> Result<RuntimeEnv, DashboardError> {
        runtime_env(v.as_object())
    }

    #[test]
    fn working_dir_and_env_vars_are_honoured() {
        let got = env(json!({"working_dir": "gcs://_ray_pkg_abc.zip", "env_vars": {"A": "1"}, "pip": null})).unwrap();
        assert_eq!(got.working_dir.as_deref(), Some("_ray_pkg_abc.zip"));
        assert_eq!(got.env_vars, BTreeMap::from([("A".to_string(), "1".to_string())]));
    }

    #[test]
    fn what_rayrepl_cannot_provide_is_refused_by_name() {
        for bad in [
            json!({"pip": ["requests"]}),
            json!({"working_dir": "./local"}),
            json!({"env_vars": {"A": 1}}),
            json!({"env_vars": {"A=B": "1"}}),
            json!({"working_dir": 3}),
        ] {
            let err = env(bad.clone()).unwrap_err();
            assert!(matches!(err, DashboardError::BadRequest(_)), "{bad}: {err}");
        }
        assert!(env(json!({"pip": ["x"]})).unwrap_err().to_string().contains("runtime_env.pip"));
    }

    #[test]
    fn submission_ids_are_safe_file_names() {
        assert!(valid_submission_id("raysubmit_abc"));
        assert!(valid_submission_id(&new_submission_id()));
        for bad in ["", "../x", "a/b", ".hidden", "a b"] {
            assert!(!valid_submission_id(bad), "{bad}");
        }
    }

    #[test]
    fn a_submission_is_rays_json() {
        let req: SubmitRequest = serde_json::from_value(json!({
            "entrypoint": "echo hi", "submission_id": "s1", "runtime_env": {}, "metadata": {"k": "v"},
            "entrypoint_num_cpus": 1
        }))
        .unwrap();
        assert_eq!((req.entrypoint.as_str(), req.submission_id.as_deref()), ("echo hi", Some("s1")));
        assert!(serde_json::from_value::<SubmitRequest>(json!({"entrypoint": "x", "surprise": 1})).is_err());
        assert!(serde_json::from_value::<SubmitRequest>(json!({"submission_id": "x"})).is_err());
    }
}
