//! Driver programs for the integration tests.
//!
//! Each scenario is a small real Ray program: `scenarios <name>` starts a local
//! cluster (or attaches, with `RAYREPL_ADDRESS`), runs, and prints what the test
//! checks. The binary is also its own worker executable, like any Ray program.

mod placement_groups;

use ray::prelude::*;
use ray::{Config, RayError};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::thread::sleep;
use std::time::{Duration, Instant};

#[ray::remote]
fn pid_of_worker() -> u32 {
    std::process::id()
}

#[ray::remote]
fn add(x: i64, y: i64) -> i64 {
    x + y
}

#[ray::remote]
fn slow_value(ms: u64, value: i64) -> (i64, u128) {
    sleep(Duration::from_millis(ms));
    (value, now_ms())
}

#[ray::remote]
fn started_at(input: (i64, u128)) -> (u128, u128) {
    (input.1, now_ms())
}

#[ray::remote]
fn sum_refs(refs: Vec<ObjectRef<i64>>) -> (String, i64) {
    let shown = format!("{refs:?}");
    let values = ray::get(&refs).expect("nested refs resolve inside the task");
    (shown, values.iter().sum())
}

#[ray::remote]
fn make_blob(len: usize) -> ObjectRef<Vec<u8>> {
    ray::put(&vec![7u8; len]).expect("put inside a task")
}

#[ray::remote]
fn pid_and_blob(len: usize) -> (u32, ObjectRef<Vec<u8>>) {
    (std::process::id(), ray::put(&vec![7u8; len]).expect("put inside a task"))
}

/// Runs `pid_and_blob` as a child, so two workers serve it: (this pid, the
/// child's pid, the child's object). The child's worker goes idle well before this
/// one.
#[ray::remote]
fn blob_from_child(len: usize) -> (u32, u32, ObjectRef<Vec<u8>>) {
    let (child, blob) = ray::get(&pid_and_blob.remote(len)).expect("the child's result");
    sleep(Duration::from_millis(300));
    (std::process::id(), child, blob)
}

/// Whether `pid` is a live process (not gone, not a zombie).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
        .unwrap_or(false)
}

#[ray::remote]
fn parent(depth: u32) -> u32 {
    if depth == 0 {
        return 1;
    }
    let children: Vec<_> = (0..2).map(|_| parent.remote(depth - 1)).collect();
    ray::get(&children).expect("children finish").iter().sum::<u32>() + 1
}

#[ray::remote]
fn sleep_ms(ms: u64) -> u64 {
    sleep(Duration::from_millis(ms));
    ms
}

#[ray::remote]
fn timed_sleep(ms: u64) -> (u128, u128) {
    let start = now_ms();
    sleep(Duration::from_millis(ms));
    (start, now_ms())
}

/// The IP of the node this task runs on, after `ms` of work; prints it too.
#[ray::remote]
fn where_am_i(ms: u64) -> String {
    sleep(Duration::from_millis(ms));
    let ip = std::env::var("RAYREPL_NODE_IP").unwrap_or_default();
    println!("running on {ip}");
    ip
}

/// `x + y` after `ms`, with the IP of the node that computed it.
#[ray::remote]
fn slow_sum(ms: u64, x: i64, y: i64) -> (String, i64) {
    sleep(Duration::from_millis(ms));
    (std::env::var("RAYREPL_NODE_IP").unwrap_or_default(), x + y)
}

/// A `len`-byte blob with a marker every 4 KiB, so a reader can tell whether the
/// chunks of a transfer arrived whole and in order.
#[ray::remote]
fn marked_blob(len: usize) -> Vec<u8> {
    marked(len)
}

fn marked(len: usize) -> Vec<u8> {
    let mut blob = vec![0u8; len];
    for (i, b) in blob.iter_mut().step_by(4096).enumerate() {
        *b = (i % 251) as u8 + 1;
    }
    blob
}

/// Whether every byte of `blob` is `byte`.
#[ray::remote]
fn all_bytes_are(blob: Vec<u8>, byte: u8) -> bool {
    blob.iter().all(|b| *b == byte)
}

/// Whether `blob` carries [`marked_blob`]'s markers, and where this ran.
#[ray::remote]
fn check_blob(blob: Vec<u8>) -> (bool, String) {
    (blob_is_marked(&blob), std::env::var("RAYREPL_NODE_IP").unwrap_or_default())
}

fn blob_is_marked(blob: &[u8]) -> bool {
    blob.iter().step_by(4096).enumerate().all(|(i, b)| *b == (i % 251) as u8 + 1)
}

/// `rayrepl list objects` of this driver's cluster as one line of JSON.
fn list_objects() -> String {
    let bin = std::env::var("RAYREPL_BIN").unwrap_or_else(|_| "rayrepl".into());
    let address = ray::runtime_context().map(|c| c.address).unwrap_or_default();
    let out =
        std::process::Command::new(bin).args(["list", "objects", "--format", "json", "--address", &address]).output();
    out.map(|o| String::from_utf8_lossy(&o.stdout).split_whitespace().collect::<Vec<_>>().join(" ")).unwrap_or_default()
}

/// `rayrepl list tasks` of this driver's cluster for the tasks named `name`, as
/// `attempt:STATE:ERROR_TYPE` in attempt order, once `final_state` shows up
/// (task events reach the head a moment after the task ends).
fn task_attempts(name: &str, final_state: &str) -> String {
    let bin = std::env::var("RAYREPL_BIN").unwrap_or_else(|_| "rayrepl".into());
    let address = ray::runtime_context().map(|c| c.address).unwrap_or_default();
    let filter = format!("name={name}");
    let mut attempts = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let out = std::process::Command::new(&bin)
            .args(["list", "tasks", "--filter", &filter, "--format", "json", "--address", &address])
            .output();
        let listed: Vec<serde_json::Value> =
            out.ok().and_then(|o| serde_json::from_slice(&o.stdout).ok()).unwrap_or_default();
        let mut seen: Vec<(u64, String)> = listed
            .iter()
            .map(|r| {
                let field = |k: &str| r[k].as_str().map(str::to_string).unwrap_or_else(|| r[k].to_string());
                let attempt = r["ATTEMPT_NUMBER"].as_u64().unwrap_or(u64::MAX);
                (attempt, format!("{attempt}:{}:{}", field("STATE"), field("ERROR_TYPE")))
            })
            .collect();
        seen.sort();
        attempts = seen.into_iter().map(|(_, a)| a).collect::<Vec<_>>().join(",");
        if attempts.contains(final_state) {
            break;
        }
        sleep(Duration::from_millis(200));
    }
    attempts
}

/// The program this worker runs.
#[ray::remote]
fn executable() -> String {
    std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_default()
}

/// Says where it started, then works for `ms`; returns where it ran.
#[ray::remote]
fn announce_then_work(ms: u64) -> String {
    let ip = std::env::var("RAYREPL_NODE_IP").unwrap_or_default();
    println!("started on {ip}");
    sleep(Duration::from_millis(ms));
    ip
}

#[ray::remote]
fn boom(message: String) -> i64 {
    panic!("{message}");
}

#[ray::remote]
fn after_boom(x: i64) -> i64 {
    x + 1
}

#[ray::remote]
fn die_first_time(marker: String) -> String {
    let path = PathBuf::from(&marker);
    if !path.exists() {
        std::fs::write(&path, b"attempted").expect("write marker");
        // SAFETY: sending SIGKILL to ourselves has no memory-safety implications.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
    format!("survived in pid {}", std::process::id())
}

#[ray::remote]
fn always_die() -> i64 {
    // SAFETY: as above.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
    0
}

#[ray::remote]
fn noisy(n: u32) -> u32 {
    println!("hello from stdout {n}");
    eprintln!("hello from stderr {n}");
    n
}

#[ray::remote]
fn blob_len(blob: Vec<u8>) -> usize {
    blob.len()
}

#[ray::remote]
fn flaky_panic(marker: String) -> String {
    let path = PathBuf::from(&marker);
    if !path.exists() {
        std::fs::write(&path, b"x").expect("write marker");
        panic!("first attempt fails");
    }
    "second attempt".to_string()
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Row {
    id: u32,
    name: String,
}

#[ray::remote]
fn rows(n: u32) -> Vec<Row> {
    (0..n).map(|id| Row { id, name: format!("row{id}") }).collect()
}

#[ray::remote]
struct Counter {
    value: i64,
}

#[ray::remote]
impl Counter {
    fn new() -> Self {
        Counter { value: 0 }
    }
    fn increment(&mut self) -> i64 {
        self.value += 1;
        self.value
    }
    fn add(&mut self, n: i64) -> i64 {
        self.value += n;
        self.value
    }
    fn get_counter(&self) -> i64 {
        self.value
    }
    fn pid(&self) -> u32 {
        std::process::id()
    }
    fn put_blob(&self, len: usize) -> ObjectRef<Vec<u8>> {
        ray::put(&vec![3u8; len]).expect("put in an actor")
    }
    fn node_ip_and_count(&mut self) -> (String, i64) {
        self.value += 1;
        (std::env::var("RAYREPL_NODE_IP").unwrap_or_default(), self.value)
    }
    fn slow_pid(&self, ms: u64) -> u32 {
        sleep(Duration::from_millis(ms));
        std::process::id()
    }
    fn read_other(&self, other: CounterHandle) -> i64 {
        ray::get(&other.get_counter()).expect("an actor calls another actor")
    }
    fn submit_batch(&self, n: usize) -> usize {
        let refs: Vec<_> = (0..n).map(|i| add.remote(i as i64, 1)).collect();
        ray::get(&refs).expect("a batch submitted by an actor").len()
    }
    fn quit(&self) -> String {
        ray::actor::exit_actor().expect("inside an actor");
        "bye".to_string()
    }
}

#[ray::remote]
struct Exploding {
    _never: u8,
}

#[ray::remote]
impl Exploding {
    fn new(reason: String) -> Self {
        panic!("constructor says {reason}");
    }
    fn hello(&self) -> u8 {
        1
    }
}

#[ray::remote]
struct Threaded {
    _unit: (),
}

#[ray::remote]
impl Threaded {
    fn new() -> Self {
        Threaded { _unit: () }
    }
    fn pid(&self) -> u32 {
        std::process::id()
    }
    fn task_1(&self) -> (u128, u128) {
        let start = now_ms();
        sleep(Duration::from_millis(600));
        (start, now_ms())
    }
    fn task_2(&self) -> (u128, u128) {
        let start = now_ms();
        sleep(Duration::from_millis(600));
        (start, now_ms())
    }
}

#[ray::remote]
struct AsyncActor {
    started: std::sync::atomic::AtomicU32,
}

#[ray::remote]
impl AsyncActor {
    fn new() -> Self {
        AsyncActor { started: std::sync::atomic::AtomicU32::new(0) }
    }
    async fn run_concurrent(&self) -> u32 {
        let n = self.started.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        println!("started");
        tokio::time::sleep(Duration::from_millis(500)).await;
        println!("finished");
        n
    }
}

/// Seed 004's SignalActor: tasks wait on a signal that a later call sets.
#[ray::remote(num_cpus = 0)]
struct SignalActor {
    ready: tokio::sync::watch::Sender<bool>,
}

#[ray::remote]
impl SignalActor {
    fn new() -> Self {
        SignalActor { ready: tokio::sync::watch::channel(false).0 }
    }
    fn send(&self, clear: bool) {
        self.ready.send_replace(true);
        if clear {
            self.ready.send_replace(false);
        }
    }
    async fn wait(&self, should_wait: bool) {
        if should_wait {
            let mut rx = self.ready.subscribe();
            let _ = rx.wait_for(|ready| *ready).await;
        }
    }
}

#[ray::remote]
fn wait_and_go(signal: ray::ActorHandle<SignalActor>) -> String {
    ray::get(&signal.wait(true)).expect("signal");
    println!("go!");
    "go".to_string()
}

#[ray::remote]
fn count_with(tracker: ray::ActorHandle<Counter>, n: i64) -> i64 {
    ray::get(&tracker.add(n)).expect("actor call from a task")
}

#[ray::remote]
fn lookup_named(name: String) -> i64 {
    let c = ray::get_actor::<Counter>(&name).expect("named actor visible from tasks");
    ray::get(&c.increment()).expect("call")
}

#[ray::remote]
fn consumer(queue: ray::util::Queue<i64>) -> i64 {
    let next_item = queue.get().expect("an item");
    println!("got work {next_item}");
    next_item
}

#[ray::remote]
fn producer(queue: ray::util::Queue<i64>, n: i64) -> i64 {
    for i in 0..n {
        queue.put(&i).expect("put from a task");
    }
    n
}

fn now_ms() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()
}

fn shm_bytes() -> u64 {
    let me = format!("_{}-", std::process::id());
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir("/dev/shm") {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("rayrepl-") && name.contains(&me) {
                for f in std::fs::read_dir(e.path()).into_iter().flatten().flatten() {
                    total += f.metadata().map(|m| m.len()).unwrap_or(0);
                }
            }
        }
    }
    total
}

/// A local cluster with `SCENARIO_CPUS` CPUs if the test sets it, else the default.
fn init_default() -> Result<ray::RuntimeContext, RayError> {
    match std::env::var("SCENARIO_CPUS").ok().and_then(|v| v.parse().ok()) {
        Some(cpus) => init_cpus(cpus),
        None => ray::init(),
    }
}

/// A local cluster with `cpus` CPUs.
fn init_cpus(cpus: f64) -> Result<ray::RuntimeContext, RayError> {
    ray::init_with(Config::new().num_cpus(cpus))
}

/// Blocks until the test writes a line on stdin (it has done what it must, such
/// as killing a node).
fn wait_for_test() -> Result<(), RayError> {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).map(drop).map_err(|e| RayError::Internal(e.to_string()))
}

/// Checks `done` every `every` until it holds or `timeout` has passed.
fn wait_until(timeout: Duration, every: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() && Instant::now() < deadline {
        sleep(every);
    }
}

/// Whether two (start, end) spans in milliseconds overlap.
fn overlap(spans: &[(u128, u128)]) -> bool {
    spans[0].0 < spans[1].1 && spans[1].0 < spans[0].1
}

/// An error's text on one line, its lines joined by ` | `.
fn one_line(e: &RayError) -> String {
    e.to_string().replace('\n', " | ")
}

/// Prints the checked line of a call expected to fail: `$line` (a `println!`
/// format and its arguments) when the result is `Err($pat)`, and
/// `<key>=unexpected <result>` when it is anything else.
macro_rules! expect_err {
    ($key:literal, $result:expr, $pat:pat => $($line:tt)+) => {
        match $result {
            Err($pat) => println!($($line)+),
            other => println!("{}=unexpected {:?}", $key, other),
        }
    };
}

fn pids() -> Result<(), RayError> {
    init_default()?;
    let refs: Vec<_> = (0..4).map(|_| pid_of_worker.remote()).collect();
    let pids = ray::get(&refs)?;
    println!("driver={}", std::process::id());
    println!("workers={pids:?}");
    Ok(())
}

fn deps() -> Result<(), RayError> {
    init_default()?;
    let produced_ref = slow_value.remote(300, 5);
    let consumed_ref = started_at.remote(&produced_ref);
    let (produced, consumed) = ray::get(&consumed_ref)?;
    println!("producer_done={produced}");
    println!("consumer_start={consumed}");
    let chained = add.remote(add.remote(1, 2), add.remote(3, 4));
    println!("chained={}", ray::get(&chained)?);
    Ok(())
}

fn competing_owners() -> Result<(), RayError> {
    // Four owners queue more tasks than there are CPUs, so each asks for
    // many leases and withdraws the ones it no longer needs.
    init_cpus(2.0)?;
    let owners: Vec<_> = (0..4).map(|_| Counter::remote()).collect::<Result<_, _>>()?;
    for _ in 0..3 {
        let done = ray::get(&owners.iter().map(|o| o.submit_batch(500)).collect::<Vec<_>>())?;
        println!("batches={done:?}");
    }
    // A task that needs both CPUs runs only if no lease was left behind.
    let whole = timed_sleep.options().num_cpus(2.0).remote(1);
    ray::get_timeout(&whole, Duration::from_secs(20))?;
    println!("both_cpus_free=true");
    Ok(())
}

fn nested_refs() -> Result<(), RayError> {
    init_default()?;
    let (a, b, c) = (ray::put(&1i64)?, ray::put(&2i64)?, ray::put(&3i64)?);
    let (shown, total) = ray::get(&sum_refs.remote(vec![a.clone(), b, c]))?;
    println!("args: {shown}");
    println!("sum={total}");
    println!("a_hex={}", a.hex());
    Ok(())
}

fn return_refs() -> Result<(), RayError> {
    init_default()?;
    let outer = make_blob.remote(200_000);
    let inner: ObjectRef<Vec<u8>> = ray::get(&outer)?;
    drop(outer);
    let blob = ray::get(&inner)?;
    println!("inner_len={} first={}", blob.len(), blob[0]);
    println!("len_in_task={}", ray::get(&blob_len.remote(&inner))?);
    Ok(())
}

fn idle_owner() -> Result<(), RayError> {
    // One CPU: the node keeps one idle worker and asks the others to exit
    // once idle for RAYREPL_IDLE_WORKER_TIMEOUT_MS.
    init_cpus(1.0)?;
    let (parent_pid, owner_pid, blob) = ray::get(&blob_from_child.remote(1_000))?;
    // The owner went idle first, so it is the one beyond the minimum.
    sleep(Duration::from_millis(3_500));
    println!("owner_running={}", running(owner_pid));
    println!("parent_running={}", running(parent_pid));
    println!("blob_len={}", ray::get(&blob)?.len());
    Ok(())
}

fn nested_tasks() -> Result<(), RayError> {
    init_default()?;
    let roots: Vec<_> = (0..2).map(|_| parent.remote(2)).collect();
    let counts = ray::get_timeout(&roots, Duration::from_secs(60))?;
    println!("counts={counts:?}");
    Ok(())
}

fn put_get() -> Result<(), RayError> {
    init_default()?;
    let r = ray::put(&"hello".to_string())?;
    println!("single={}", ray::get(&r)?);
    let refs = [ray::put(&1u32)?, ray::put(&2u32)?];
    println!("slice={:?}", ray::get(&refs[..])?);
    println!("rows={:?}", ray::get(&rows.remote(2))?);
    let slow = sleep_ms.remote(2_000);
    expect_err!(
        "timeout",
        ray::get_timeout(&slow, Duration::from_millis(200)),
        RayError::Timeout { .. } => "timeout=ok"
    );
    ray::cancel(&slow, true)?;
    let refs: Vec<_> = [50u64, 1500, 100, 1600].into_iter().map(|ms| sleep_ms.remote(ms)).collect();
    let start = Instant::now();
    let (ready, rest) = ray::wait(&refs, 2, Some(Duration::from_secs(10)))?;
    println!("wait2 ready={:?} rest={} elapsed_ms={}", ray::get(&ready)?, rest.len(), start.elapsed().as_millis());
    let (ready, rest) = ray::wait(&rest, 2, Some(Duration::from_millis(10)))?;
    println!("wait_timeout ready={} rest={}", ready.len(), rest.len());
    let (ready, rest) = ray::wait(&refs, 4, None)?;
    println!("wait_all ready={} rest={}", ready.len(), rest.len());
    expect_err!("wait_too_many", ray::wait(&refs, 5, None), RayError::InvalidArgument(m) => "wait_too_many={m}");
    Ok(())
}

fn awaits() -> Result<(), RayError> {
    init_default()?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let v = rt.block_on(async { add.remote(20, 22).await })?;
    let both = rt.block_on(async {
        let a = sleep_ms.remote(200);
        let b = sleep_ms.remote(100);
        let (a, b) = tokio::join!(a.into_future(), b.into_future());
        Ok::<_, RayError>(a? + b?)
    })?;
    println!("await={v} joined={both}");
    Ok(())
}

fn cancel() -> Result<(), RayError> {
    init_cpus(1.0)?;
    let running = sleep_ms.remote(5_000);
    sleep(Duration::from_millis(300));
    let queued = sleep_ms.remote(10);
    ray::cancel(&queued, false)?;
    expect_err!("queued", ray::get(&queued), RayError::Cancelled { function } => "queued_cancelled={function}");
    let start = Instant::now();
    ray::cancel(&running, true)?;
    expect_err!("running", ray::get(&running), RayError::Cancelled { .. } => "running_cancelled=ok");
    // The CPU is free again right away: a new task runs promptly.
    println!("after={} elapsed_ms={}", ray::get(&add.remote(1, 1))?, start.elapsed().as_millis());
    Ok(())
}

fn resources() -> Result<(), RayError> {
    ray::init_with(Config::new().num_cpus(1.0).resource("Custom1", 1.0))?;
    let half: Vec<_> = (0..2).map(|_| timed_sleep.options().num_cpus(0.5).remote(1500)).collect();
    let spans = ray::get(&half)?;
    println!("half_cpu_overlap={}", overlap(&spans));
    let custom: Vec<_> =
        (0..2).map(|_| timed_sleep.options().num_cpus(0.0).resource("Custom1", 1.0).remote(300)).collect();
    let spans = ray::get(&custom)?;
    println!("custom_overlap={}", overlap(&spans));
    expect_err!(
        "gpu",
        ray::get(&add.options().num_gpus(1.0).remote(1, 2)),
        e @ RayError::Infeasible { .. } => "gpu_infeasible={e}"
    );
    expect_err!(
        "custom2",
        ray::get(&add.options().resource("Custom2", 1.0).remote(1, 2)),
        RayError::Infeasible { .. } => "custom2_infeasible=ok"
    );
    println!("named={}", ray::get(&noisy.options().name("renamed").remote(7))?);
    Ok(())
}

fn store() -> Result<(), RayError> {
    ray::init_with(Config::new().object_store_memory(64 << 20))?;
    let baseline = shm_bytes();
    let small = ray::put(&vec![1u8; 1000])?;
    println!("small_in_shm={}", shm_bytes() > baseline);
    let big: Vec<f64> = (0..1_000_000).map(|i| i as f64).collect();
    let r = ray::put(&big)?;
    let during = shm_bytes();
    println!("big_in_shm={}", during >= 8_000_000);
    let back: Vec<f64> = ray::get(&r)?;
    println!("big_roundtrip={}", back == big);
    let len = ray::get(&blob_len.remote(&ray::put(&vec![3u8; 5_000_000])?))?;
    println!("task_read_len={len}");
    // Three times the store's size in turn, each object read by a worker:
    // the store reuses its ranges, and every reader sees its own bytes.
    let mut intact = true;
    for byte in 0..24u8 {
        let blob = ray::put(&vec![byte; 8 << 20])?;
        intact &= ray::get(&all_bytes_are.remote(&blob, byte))?;
    }
    println!("reused_intact={intact}");
    expect_err!("full", ray::put(&vec![0u8; 80 << 20]), e @ RayError::ObjectStoreFull { .. } => "full={e}");
    drop(r);
    drop(small);
    // Frees are asynchronous; give them a moment.
    wait_until(Duration::from_secs(5), Duration::from_millis(20), || shm_bytes() <= baseline);
    println!("after_drop={} baseline={baseline}", shm_bytes());
    Ok(())
}

fn errors() -> Result<(), RayError> {
    init_default()?;
    expect_err!(
        "panic",
        ray::get(&boom.remote("kaboom")),
        RayError::Task(t) => "panic_fn={} msg={} loc={}", t.function, t.message, t.location.unwrap_or_default()
    );
    let failed = boom.remote("upstream broke");
    expect_err!("chain", ray::get(&after_boom.remote(&failed)), e @ RayError::Task(_) => "chain={}", one_line(&e));
    let n = ray::put(&42u64)?;
    expect_err!("mismatch", ray::get(&n.clone().cast::<String>()), e @ RayError::TypeMismatch { .. } => "mismatch={e}");
    let marker = std::env::temp_dir().join(format!("rayrepl-die-{}", std::process::id()));
    let _ = std::fs::remove_file(&marker);
    println!("retried={}", ray::get(&die_first_time.remote(marker.display().to_string()))?);
    println!("retried_attempts={}", task_attempts("die_first_time", "FINISHED"));
    let _ = std::fs::remove_file(&marker);
    expect_err!(
        "crashed",
        ray::get(&always_die.options().max_retries(1).remote()),
        e @ RayError::WorkerCrashed { .. } => "crashed={e}"
    );
    let marker2 = std::env::temp_dir().join(format!("rayrepl-flaky-{}", std::process::id()));
    let _ = std::fs::remove_file(&marker2);
    let r = flaky_panic.options().retry_exceptions(true).max_retries(2).remote(marker2.display().to_string());
    println!("retry_exceptions={}", ray::get(&r)?);
    let _ = std::fs::remove_file(&marker2);
    Ok(())
}

fn logs() -> Result<(), RayError> {
    init_default()?;
    let refs: Vec<_> = (0..2).map(|n| noisy.remote(n)).collect();
    ray::get(&refs)?;
    Ok(())
}

fn placement() -> Result<(), RayError> {
    // On a cluster whose nodes each have one CPU and one resource of
    // their own: a task follows the resource it needs, and work spreads
    // when the driver's node is full.
    ray::init()?;
    for resource in ["b", "c"] {
        let ip = ray::get(&where_am_i.options().resource(resource, 1.0).remote(0))?;
        println!("needs_{resource}={ip}");
    }
    println!("exe_on_c={}", ray::get(&executable.options().resource("c", 1.0).remote())?);
    let spread: Vec<String> = ray::get(&(0..6).map(|_| where_am_i.remote(400)).collect::<Vec<_>>())?;
    let nodes: std::collections::BTreeSet<_> = spread.into_iter().collect();
    println!("spread={}", nodes.into_iter().collect::<Vec<_>>().join(","));
    expect_err!(
        "nowhere",
        ray::get(&where_am_i.options().resource("nowhere", 1.0).remote(0)),
        RayError::Infeasible { .. } => "nowhere=infeasible"
    );
    Ok(())
}

fn transfer() -> Result<(), RayError> {
    // A 1 GiB object made on node .2 (resource `b`) is read by the driver
    // on node .1 and by a task on node .3 (resource `c`): each read copies
    // it across in chunks.
    ray::init()?;
    const GIB: usize = 1 << 30;
    let blob = marked_blob.options().resource("b", 1.0).remote(GIB);
    ray::wait(std::slice::from_ref(&blob), 1, None)?;
    let started = Instant::now();
    let got: Vec<u8> = ray::get(&blob)?;
    let secs = started.elapsed().as_secs_f64();
    println!("driver_len={} marked={} gib_per_s={:.2}", got.len(), blob_is_marked(&got), 1.0 / secs);
    drop(got);
    let (marked, ip) = ray::get(&check_blob.options().resource("c", 1.0).remote(&blob))?;
    println!("task_marked={marked} task_ip={ip}");
    println!("objects={}", list_objects());
    drop(blob);
    // Frees travel in the background; give them a moment.
    let mut left = String::new();
    wait_until(Duration::from_secs(10), Duration::from_millis(200), || {
        left = list_objects();
        !left.contains("OBJECT_ID")
    });
    println!("objects_after_free={left}");
    Ok(())
}

fn after_node_death() -> Result<(), RayError> {
    // Node .3, the only one with resource `c`, was killed.
    ray::init()?;
    println!("needs_b={}", ray::get(&where_am_i.options().resource("b", 1.0).remote(0))?);
    expect_err!(
        "needs_c",
        ray::get(&where_am_i.options().resource("c", 1.0).remote(0)),
        RayError::Infeasible { .. } => "needs_c=infeasible"
    );
    let ran: std::collections::BTreeSet<String> =
        ray::get(&(0..4).map(|_| where_am_i.remote(100)).collect::<Vec<_>>())?.into_iter().collect();
    println!("ran_on={}", ran.into_iter().collect::<Vec<_>>().join(","));
    Ok(())
}

fn busy() -> Result<(), RayError> {
    // More two-second tasks than the cluster has CPUs, for `status` to see.
    ray::init()?;
    let refs: Vec<_> = (0..8).map(|_| where_am_i.remote(2000)).collect();
    println!("submitted=8");
    println!("ran={}", ray::get(&refs)?.len());
    Ok(())
}

fn owner_dies() -> Result<(), RayError> {
    // An actor owns an object it put; killing the actor frees the object.
    init_default()?;
    let a = Counter::remote()?;
    let blob = ray::get(&a.put_blob(4 << 20))?;
    println!("before={}", list_objects().matches("4.00 MiB").count());
    ray::kill(&a)?;
    wait_until(Duration::from_secs(10), Duration::from_millis(100), || !list_objects().contains("4.00 MiB"));
    println!("after={}", list_objects().matches("4.00 MiB").count());
    expect_err!(
        "read",
        ray::get(&blob).map(|v| v.len()),
        e @ (RayError::OwnerDied { .. } | RayError::ObjectLost { .. }) => "read=lost {e}"
    );
    Ok(())
}

fn lineage() -> Result<(), RayError> {
    // Resource `bc` is on nodes .2 and .3. The test kills the node holding
    // each object once the scenario says it is made.
    ray::init()?;
    const MIB: usize = 1 << 20;
    let rebuildable = marked_blob.options().resource("bc", 1.0).max_retries(2).remote(64 * MIB);
    ray::wait(std::slice::from_ref(&rebuildable), 1, None)?;
    println!("made=64 MiB");
    wait_for_test()?;
    // A task reading it first: the argument is rebuilt, then the task runs.
    let (marked, _) = ray::get(&check_blob.options().resource("bc", 1.0).remote(&rebuildable))?;
    println!("arg_marked={marked}");
    let blob: Vec<u8> = ray::get(&rebuildable)?;
    println!("rebuilt_len={} marked={}", blob.len(), blob_is_marked(&blob));
    let once = marked_blob.options().resource("bc", 1.0).max_retries(0).remote(32 * MIB);
    ray::wait(std::slice::from_ref(&once), 1, None)?;
    println!("made=32 MiB");
    wait_for_test()?;
    expect_err!("lost", ray::get(&once).map(|v| v.len()), e @ RayError::ObjectLost { .. } => "lost=ObjectLost {e}");
    Ok(())
}

fn actor_on_node_death() -> Result<(), RayError> {
    // Resource `bc` is on nodes .2 and .3; the test kills the node the
    // actor starts on, then says so on stdin.
    ray::init()?;
    let a = Counter::options().resource("bc", 1.0).max_restarts(1).max_task_retries(2).remote()?;
    let (ip, count) = ray::get(&a.node_ip_and_count())?;
    println!("actor_started_on={ip} count={count}");
    wait_for_test()?;
    let (ip, count) = ray::get(&a.node_ip_and_count())?;
    println!("actor_restarted_on={ip} count={count}");
    // The actor dies with this driver: stay until the test has listed it.
    wait_for_test()?;
    Ok(())
}

fn through_head_stall() -> Result<(), RayError> {
    // Rounds of work across every node and an actor on .2, each started by the
    // test's "go" on stdin; the test stops the head during rounds.
    ray::init()?;
    let counter = Counter::options().resource("b", 0.5).max_restarts(0).remote()?;
    let mut rounds = 0i64;
    loop {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map_err(|e| RayError::Internal(e.to_string()))?;
        if line.trim() != "go" {
            break;
        }
        rounds += 1;
        let on = |resource: &str, i: i64| slow_sum.options().resource(resource, 0.25).remote(300, i, rounds);
        let refs: Vec<_> = (0..6).flat_map(|i| [slow_sum.remote(300, i, rounds), on("b", i), on("c", i)]).collect();
        let results = ray::get(&refs)?;
        let total: i64 = results.iter().map(|(_, v)| v).sum();
        let expected: i64 = 3 * (0..6).map(|i| i + rounds).sum::<i64>();
        let mut ips: Vec<&str> = results.iter().map(|(ip, _)| ip.as_str()).collect();
        ips.sort_unstable();
        ips.dedup();
        let count = ray::get(&counter.increment())?;
        println!("round={rounds} correct={} ips={} actor_count={count}", total == expected, ips.join(","));
    }
    Ok(())
}

fn put_sized() -> Result<(), RayError> {
    // Puts RAYREPL_TEST_PUT_BYTES bytes into the store of the cluster at
    // RAYREPL_ADDRESS and says how it went.
    ray::init()?;
    let len: usize = std::env::var("RAYREPL_TEST_PUT_BYTES").ok().and_then(|n| n.parse().ok()).unwrap_or(1 << 20);
    match ray::put(&vec![7u8; len]) {
        Ok(r) => println!("put=ok len={}", ray::get(&r)?.len()),
        Err(RayError::ObjectStoreFull { requested, .. }) => println!("put=full requested={requested}"),
        Err(e) => println!("put=error {}", one_line(&e)),
    }
    Ok(())
}

fn retry_on_node_death() -> Result<(), RayError> {
    // Resource `bc` is on nodes .2 and .3; the test kills the node this
    // task starts on, and the task must finish on the other.
    ray::init()?;
    let r = announce_then_work.options().resource("bc", 1.0).max_retries(2).remote(6000);
    println!("retried_on={}", ray::get(&r)?);
    Ok(())
}

fn tls_work() -> Result<(), RayError> {
    // A task, an actor's calls and a large object on the cluster at RAYREPL_ADDRESS.
    ray::init()?;
    println!("sum={}", ray::get(&add.remote(40, 2))?);
    // Idle past the deadline for presenting the token (see ray_proto::gate):
    // connections that presented it stay open, under TLS too.
    sleep(Duration::from_secs(7));
    let counter = Counter::remote()?;
    let counts: Vec<i64> = (0..3).map(|_| ray::get(&counter.increment())).collect::<Result<_, _>>()?;
    println!("counts={counts:?}");
    let blob = ray::put(&vec![5u8; 8 << 20])?;
    println!("blob_len={}", ray::get(&blob_len.remote(&blob))?);
    Ok(())
}

fn attach() -> Result<(), RayError> {
    let ctx = ray::init()?;
    println!("attached nodes={} cpus={}", ctx.nodes, ctx.cpus);
    println!("sum={}", ray::get(&add.remote(40, 2))?);
    Ok(())
}

fn attach_elsewhere() -> Result<(), RayError> {
    // A driver on a machine whose only node is .3: its objects live
    // there, and node .2 runs its task from the program it fetches.
    let ctx = ray::init()?;
    println!("attached nodes={}", ctx.nodes);
    let blob = ray::put(&marked(16 << 20))?;
    let (marked, ip) = ray::get(&check_blob.options().resource("b", 1.0).remote(&blob))?;
    println!("on_b={ip} marked={marked}");
    Ok(())
}

fn hang() -> Result<(), RayError> {
    init_default()?;
    ray::get(&pid_of_worker.remote())?;
    println!("READY");
    sleep(Duration::from_secs(600));
    Ok(())
}

fn actors() -> Result<(), RayError> {
    init_default()?;
    let counters = (0..10).map(|_| Counter::remote()).collect::<Result<Vec<_>, _>>()?;
    let results = ray::get(&counters.iter().map(|c| c.increment()).collect::<Vec<_>>())?;
    println!("first={results:?}");
    let results = ray::get(&(0..5).map(|_| counters[0].increment()).collect::<Vec<_>>())?;
    println!("second={results:?}");
    let results = ray::get(&counters.iter().map(|c| c.get_counter()).collect::<Vec<_>>())?;
    println!("third={results:?}");
    let pids = ray::get(&counters.iter().map(|c| c.pid()).collect::<Vec<_>>())?;
    let distinct: std::collections::HashSet<_> = pids.iter().collect();
    println!("distinct_pids={} driver_pid_used={}", distinct.len(), pids.contains(&std::process::id()));
    println!("handle={:?}", counters[0]);
    let c = Counter::remote()?;
    let ordered = ray::get(&(1..=200).map(|_| c.increment()).collect::<Vec<_>>())?;
    println!("ordered={}", ordered == (1..=200).collect::<Vec<i64>>());
    let from_tasks = ray::get(&(0..4).map(|_| count_with.remote(c.clone(), 10)).collect::<Vec<_>>())?;
    println!("from_tasks_max={} final={}", from_tasks.iter().max().unwrap(), ray::get(&c.get_counter())?);
    println!("actor_to_actor={}", ray::get(&counters[1].read_other(c.clone()))?);
    Ok(())
}

fn named() -> Result<(), RayError> {
    init_default()?;
    let a = Counter::options().name("global").remote()?;
    ray::get(&a.increment())?;
    let b = ray::get_actor::<Counter>("global")?;
    println!("same_actor={}", ray::get(&b.increment())? == 2);
    println!("from_task={}", ray::get(&lookup_named.remote("global"))?);
    let c = Counter::options().name("global").get_if_exists(true).remote()?;
    println!("get_if_exists={}", ray::get(&c.get_counter())?);
    match Counter::options().name("global").remote() {
        Err(e) => println!("duplicate={e}"),
        Ok(_) => println!("duplicate=unexpected"),
    }
    expect_err!("missing", ray::get_actor::<Counter>("nobody"), e @ RayError::ActorNotFound { .. } => "missing={e}");
    expect_err!("wrong_class", ray::get_actor::<Threaded>("global"), RayError::TypeMismatch { .. } => "wrong_class=ok");
    let other_ns = Counter::options().name("global").namespace("elsewhere").remote()?;
    ray::get(&other_ns.add(100))?;
    let found = ray::get_actor_in::<Counter>("global", "elsewhere")?;
    println!("namespaced={}", ray::get(&found.get_counter())?);
    Ok(())
}

fn actor_death() -> Result<(), RayError> {
    init_default()?;
    let a = Counter::remote()?;
    ray::get(&a.increment())?;
    ray::kill(&a)?;
    expect_err!("killed", ray::get(&a.increment()), e @ RayError::ActorDied { .. } => "killed={e}");
    let b = Counter::remote()?;
    println!("quit={}", ray::get(&b.quit())?);
    sleep(Duration::from_millis(300));
    expect_err!("exited", ray::get(&b.increment()), e @ RayError::ActorDied { .. } => "exited={e}");
    let c = Exploding::remote("no".to_string())?;
    expect_err!("ctor", ray::get(&c.hello()), e @ RayError::ActorDied { .. } => "ctor={}", one_line(&e));
    // No node has 1000 CPUs: it waits, as in Ray, and says so at creation.
    let huge = Counter::options().num_cpus(1000.0).remote()?;
    let call = huge.increment();
    let (ready, _) = ray::wait(std::slice::from_ref(&call), 1, Some(Duration::from_millis(1500)))?;
    println!("infeasible_waits={}", ready.is_empty());
    ray::kill(&huge)?;
    expect_err!("infeasible_killed", ray::get(&call), RayError::ActorDied { .. } => "infeasible_killed=dead");
    Ok(())
}

fn restart() -> Result<(), RayError> {
    init_default()?;
    let a = Counter::options().max_restarts(1).remote()?;
    ray::get(&a.add(5))?;
    let pid = ray::get(&a.pid())?;
    // SAFETY: SIGKILL to the actor's worker process, which this test created.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let deadline = Instant::now() + Duration::from_secs(20);
    let (new_pid, value) = loop {
        match ray::get(&a.pid()) {
            Ok(p) if p != pid => break (p, ray::get(&a.get_counter())?),
            _ if Instant::now() > deadline => panic!("actor did not come back"),
            _ => sleep(Duration::from_millis(50)),
        }
    };
    println!("restarted={} fresh_state={value}", new_pid != pid);
    // An in-flight call when the process dies: max_task_retries=0 fails it...
    let slow = a.slow_pid(3_000);
    sleep(Duration::from_millis(500));
    // SAFETY: as above.
    unsafe { libc::kill(new_pid as i32, libc::SIGKILL) };
    expect_err!("in_flight", ray::get(&slow), e @ RayError::ActorDied { .. } => "in_flight={e}");
    // ...and with no restarts left the actor stays dead.
    expect_err!("exhausted", ray::get(&a.pid()), e @ RayError::ActorDied { .. } => "exhausted={e}");
    // With max_task_retries the call is resent to the restarted actor.
    let b = Counter::options().max_restarts(2).max_task_retries(2).remote()?;
    let first = ray::get(&b.pid())?;
    let slow = b.slow_pid(2_000);
    sleep(Duration::from_millis(500));
    // SAFETY: as above.
    unsafe { libc::kill(first as i32, libc::SIGKILL) };
    let second = ray::get(&slow)?;
    println!("retried_call={}", second != first);
    Ok(())
}

fn concurrency() -> Result<(), RayError> {
    init_default()?;
    // The worker that ran this task (taking it on its direct socket) goes
    // back to the pool and hosts the threaded actor: it must stop polling
    // that socket so the actor's threads can share its jobs.
    let task_worker = ray::get(&pid_of_worker.remote())?;
    sleep(Duration::from_millis(300));
    let a = Threaded::options().max_concurrency(2).remote()?;
    println!("reused_worker={}", ray::get(&a.pid())? == task_worker);
    let spans = ray::get(&[a.task_1(), a.task_2()])?;
    println!("threaded_overlap={}", overlap(&spans));
    let b = Threaded::remote()?;
    let spans = ray::get(&[b.task_1(), b.task_2()])?;
    println!("default_overlap={}", overlap(&spans));
    let actor = AsyncActor::remote()?;
    let start = Instant::now();
    let refs: Vec<_> = (0..4).map(|_| actor.run_concurrent()).collect();
    let mut started = ray::get(&refs)?;
    started.sort();
    println!("async_started={started:?} elapsed_ms={}", start.elapsed().as_millis());
    let bounded = AsyncActor::options().max_concurrency(2).remote()?;
    let start = Instant::now();
    let refs: Vec<_> = (0..4).map(|_| bounded.run_concurrent()).collect();
    ray::get(&refs)?;
    println!("bounded_elapsed_ms={}", start.elapsed().as_millis());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    println!("awaited={}", rt.block_on(async { actor.run_concurrent().await })?);
    let signal = SignalActor::remote()?;
    let tasks: Vec<_> = (0..4).map(|_| wait_and_go.remote(signal.clone())).collect();
    println!("ready...");
    sleep(Duration::from_millis(300));
    let (done, _) = ray::wait(&tasks, 1, Some(Duration::from_millis(10)))?;
    println!("before_signal={}", done.len());
    println!("set..");
    ray::get(&signal.send(false))?;
    println!("after_signal={:?}", ray::get_timeout(&tasks, Duration::from_secs(20))?);
    Ok(())
}

fn actor_resources() -> Result<(), RayError> {
    init_cpus(1.0)?;
    let holder = Counter::options().num_cpus(1.0).remote()?;
    ray::get(&holder.increment())?;
    let task = add.remote(1, 2);
    expect_err!(
        "blocked_by_actor",
        ray::get_timeout(&task, Duration::from_millis(800)),
        RayError::Timeout { .. } => "blocked_by_actor=true"
    );
    ray::kill(&holder)?;
    println!("after_kill={}", ray::get_timeout(&task, Duration::from_secs(20))?);
    Ok(())
}

fn queue() -> Result<(), RayError> {
    init_default()?;
    let queue = ray::util::Queue::<i64>::new(100)?;
    let consumers: Vec<_> = (0..2).map(|_| consumer.remote(queue.clone())).collect();
    for i in 0..10 {
        queue.put(&i)?;
    }
    let mut got = ray::get(&consumers)?;
    got.sort();
    println!("consumed={got:?} left={}", queue.size()?);
    let small = ray::util::Queue::<String>::new(1)?;
    small.put(&"a".to_string())?;
    expect_err!(
        "full",
        small.put_timeout(&"b".to_string(), Some(Duration::from_millis(100))),
        RayError::QueueFull => "full=ok"
    );
    println!("got={}", small.get()?);
    expect_err!("empty", small.get_timeout(Some(Duration::from_millis(100))), RayError::QueueEmpty => "empty=ok");
    let q = ray::util::Queue::<i64>::new(0)?;
    ray::get(&producer.remote(q.clone(), 5))?;
    let drained: Vec<i64> = (0..5).map(|_| q.get()).collect::<Result<_, _>>()?;
    println!("fifo={drained:?}");
    Ok(())
}

fn pool() -> Result<(), RayError> {
    init_default()?;
    let actors = (0..2).map(|_| Counter::remote()).collect::<Result<Vec<_>, _>>()?;
    let mut pool = ray::util::ActorPool::new(actors);
    let results = pool.map(|a: &CounterHandle, v: i64| a.add(v), vec![1, 10, 100, 1000])?;
    println!("map={results:?}");
    pool.submit(|a: &CounterHandle, v: i64| a.add(v), 1);
    pool.submit(|a: &CounterHandle, v: i64| a.add(v), 2);
    pool.submit(|a: &CounterHandle, v: i64| a.add(v), 3);
    let mut got = Vec::new();
    while pool.has_next() {
        got.push(pool.get_next_unordered()?);
    }
    println!("unordered_count={}", got.len());
    Ok(())
}

fn detached_create() -> Result<(), RayError> {
    init_default()?;
    let a = Counter::options().name("keeper").namespace("shared").lifetime_detached().remote()?;
    println!("value={}", ray::get(&a.add(41))?);
    Ok(())
}

fn detached_use() -> Result<(), RayError> {
    init_default()?;
    let a = ray::get_actor_in::<Counter>("keeper", "shared")?;
    println!("value={}", ray::get(&a.increment())?);
    ray::kill(&a)?;
    sleep(Duration::from_millis(300));
    expect_err!("gone", ray::get_actor_in::<Counter>("keeper", "shared"), RayError::ActorNotFound { .. } => "gone=ok");
    Ok(())
}

fn owned_actor() -> Result<(), RayError> {
    init_default()?;
    let a = Counter::options().name("short_lived").namespace("shared").remote()?;
    println!("value={}", ray::get(&a.increment())?);
    Ok(())
}

fn owned_actor_gone() -> Result<(), RayError> {
    init_default()?;
    sleep(Duration::from_millis(500));
    expect_err!(
        "gone",
        ray::get_actor_in::<Counter>("short_lived", "shared"),
        RayError::ActorNotFound { .. } => "gone=ok"
    );
    Ok(())
}

fn not_initialized() -> Result<(), RayError> {
    match ray::get(&add.remote(1, 2)) {
        Err(e) => println!("error={e}"),
        Ok(v) => println!("unexpected={v}"),
    }
    Ok(())
}

/// Submits a task whose code is the function `SYMBOL` of the shared library
/// `LIBRARY`, the way a REPL cell's task is submitted: the driver has the
/// library loaded, publishes it to the head by hash, and a worker fetches and
/// loads it. Its one argument is 42 (the test's library hands it back). Prints
/// `result=` what `get` returned.
fn foreign_library() -> Result<(), RayError> {
    init_default()?;
    let var = |name: &str| std::env::var(name).map_err(|_| RayError::InvalidArgument(format!("{name} is not set")));
    let library = std::ffi::CString::new(var("LIBRARY")?).map_err(|e| RayError::InvalidArgument(e.to_string()))?;
    let symbol = var("SYMBOL")?;
    let c_symbol = std::ffi::CString::new(symbol.clone()).map_err(|e| RayError::InvalidArgument(e.to_string()))?;
    // SAFETY: the test built this library for this; its constructor does
    // something only in a worker, and nothing else in it runs here.
    let handle = unsafe { libc::dlopen(library.as_ptr(), libc::RTLD_NOW) };
    if handle.is_null() {
        return Err(RayError::InvalidArgument(format!("cannot load {library:?}")));
    }
    // SAFETY: `handle` is a library loaded above; dlsym only reads it.
    let address = unsafe { libc::dlsym(handle, c_symbol.as_ptr()) } as usize;
    if address == 0 {
        return Err(RayError::InvalidArgument(format!("{library:?} has no {symbol}")));
    }
    let function = ray::__private::descriptor("foreign", "", &symbol, address);
    let args = vec![ray::IntoArg::<u64>::into_arg(42u64)];
    let result: ObjectRef<u64> = ray::__private::submit(function, args, ray::__private::default_options(&[], &[], &[]));
    match ray::get(&result) {
        Ok(v) => println!("result=ok {v}"),
        Err(e) => println!("result={}", one_line(&e)),
    }
    Ok(())
}

/// Every scenario, by the name the tests pass on the command line.
const SCENARIOS: &[(&str, fn() -> Result<(), RayError>)] = &[
    ("pids", pids),
    ("deps", deps),
    ("competing_owners", competing_owners),
    ("nested_refs", nested_refs),
    ("return_refs", return_refs),
    ("idle_owner", idle_owner),
    ("nested_tasks", nested_tasks),
    ("put_get", put_get),
    ("await", awaits),
    ("cancel", cancel),
    ("resources", resources),
    ("store", store),
    ("errors", errors),
    ("logs", logs),
    ("placement", placement),
    ("transfer", transfer),
    ("after_node_death", after_node_death),
    ("busy", busy),
    ("owner_dies", owner_dies),
    ("lineage", lineage),
    ("actor_on_node_death", actor_on_node_death),
    ("through_head_stall", through_head_stall),
    ("put_sized", put_sized),
    ("tls_work", tls_work),
    ("retry_on_node_death", retry_on_node_death),
    ("attach", attach),
    ("attach_elsewhere", attach_elsewhere),
    ("hang", hang),
    ("actors", actors),
    ("named", named),
    ("actor_death", actor_death),
    ("restart", restart),
    ("concurrency", concurrency),
    ("actor_resources", actor_resources),
    ("queue", queue),
    ("pool", pool),
    ("detached_create", detached_create),
    ("detached_use", detached_use),
    ("owned_actor", owned_actor),
    ("owned_actor_gone", owned_actor_gone),
    ("not_initialized", not_initialized),
    ("foreign_library", foreign_library),
    ("pg_basics", placement_groups::pg_basics),
    ("pg_bad_input", placement_groups::pg_bad_input),
    ("pg_strategies", placement_groups::pg_strategies),
    ("pg_pending_then_node", placement_groups::pg_pending_then_node),
];

fn run(name: &str) -> Result<(), RayError> {
    let Some((_, scenario)) = SCENARIOS.iter().find(|(n, _)| *n == name) else {
        eprintln!("unknown scenario {name}");
        std::process::exit(2);
    };
    scenario()?;
    ray::shutdown();
    Ok(())
}

fn main() {
    // In worker processes (this binary is its own worker), init() never returns.
    if std::env::var_os("RAYREPL_ROLE").is_some() {
        let _ = ray::init();
    }
    let name = std::env::args().nth(1).unwrap_or_default();
    if let Err(e) = run(&name) {
        eprintln!("scenario {name} failed: {e}");
        std::process::exit(1);
    }
}
