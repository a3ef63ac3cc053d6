//! `rayrepl microbenchmark`: Ray's `ray microbenchmark`, metric for metric.
//!
//! The workloads and the method follow Ray's `ray_perf.py`: each metric runs its
//! function for a one-second warm-up, then four timed rounds of about two seconds,
//! and reports operations per second as mean ± standard deviation over the rounds.
//! Metric names are Ray's (`single_client_tasks_sync`, ...), so the compare script
//! can line the two up. The remote functions and actors below are compiled into
//! `rayrepl` itself, which is also the cluster's worker executable.
//!
//! Two metrics of our own follow Ray's suite, on a two-node cluster on loopback
//! (nodes at 127.0.0.1 and 127.0.0.2): `ray::get` of an object made on the other
//! node (it crosses in chunks) against one made on the driver's node, and task
//! throughput when tasks spill across both nodes.

use ray::ActorHandle;
use serde::Serialize;
use std::time::{Duration, Instant};

#[ray::remote]
fn small_value() -> Vec<u8> {
    b"ok".to_vec()
}

#[ray::remote]
fn small_value_batch(n: usize) -> usize {
    let submitted: Vec<_> = (0..n).map(|_| small_value.remote()).collect();
    ray::get(&submitted).expect("small values");
    0
}

#[ray::remote]
fn do_put_small() {
    for _ in 0..100 {
        ray::put(&0u64).expect("put");
    }
}

#[ray::remote]
fn do_put() {
    for _ in 0..10 {
        ray::put(&vec![0i64; 10 * 1024 * 1024]).expect("put 80 MiB");
    }
}

#[ray::remote]
fn blob(len: usize) -> Vec<u8> {
    vec![7u8; len]
}

#[ray::remote]
fn create_object_containing_ref() -> Vec<ray::ObjectRef<u64>> {
    (0..10_000).map(|_| ray::put(&1u64).expect("put")).collect()
}

#[ray::remote]
fn work(actors: Vec<ActorHandle<PerfActor>>, n: usize) {
    let refs: Vec<_> = (0..n).map(|i| actors[i % actors.len()].small_value()).collect();
    ray::get(&refs).expect("actor calls");
}

#[ray::remote]
fn async_actor_work(actors: Vec<ActorHandle<PerfAsyncActor>>, n: usize) {
    let refs: Vec<_> = (0..n).map(|i| actors[i % actors.len()].small_value()).collect();
    ray::get(&refs).expect("actor calls");
}

#[ray::remote(num_cpus = 0)]
pub struct PerfActor {
    _unit: (),
}

#[ray::remote]
impl PerfActor {
    fn new() -> Self {
        PerfActor { _unit: () }
    }
    fn small_value(&self) -> Vec<u8> {
        b"ok".to_vec()
    }
    fn small_value_arg(&self, _x: u64) -> Vec<u8> {
        b"ok".to_vec()
    }
    fn small_value_batch(&self, n: usize) {
        let refs: Vec<_> = (0..n).map(|_| small_value.remote()).collect();
        ray::get(&refs).expect("small values");
    }
}

#[ray::remote]
pub struct PerfAsyncActor {
    _unit: (),
}

#[ray::remote]
impl PerfAsyncActor {
    fn new() -> Self {
        PerfAsyncActor { _unit: () }
    }
    async fn small_value(&self) -> Vec<u8> {
        b"ok".to_vec()
    }
    async fn small_value_with_arg(&self, _x: u64) -> Vec<u8> {
        b"ok".to_vec()
    }
}

/// Ray's `PerfClient` actor: calls other actors in batches.
#[ray::remote(num_cpus = 0)]
pub struct PerfClient {
    servers: Vec<ActorHandle<PerfActor>>,
    async_servers: Vec<ActorHandle<PerfAsyncActor>>,
}

#[ray::remote]
impl PerfClient {
    fn new(servers: Vec<ActorHandle<PerfActor>>, async_servers: Vec<ActorHandle<PerfAsyncActor>>) -> Self {
        PerfClient { servers, async_servers }
    }
    fn small_value_batch(&self, n: usize) {
        let mut results = Vec::new();
        for s in &self.servers {
            results.extend((0..n).map(|_| s.small_value()));
        }
        for s in &self.async_servers {
            results.extend((0..n).map(|_| s.small_value()));
        }
        ray::get(&results).expect("actor calls");
    }
    fn small_value_batch_arg(&self, n: usize) {
        let x = ray::put(&0u64).expect("put");
        let results: Vec<_> =
            self.servers.iter().flat_map(|s| (0..n).map(|_| s.small_value_arg(&x)).collect::<Vec<_>>()).collect();
        ray::get(&results).expect("actor calls");
    }
}

/// How long each phase runs; Ray's defaults, or tiny ones for a smoke run.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Idle time before each metric (Ray sleeps 10 s against noisy neighbours).
    pub settle: Duration,
    /// Warm-up time.
    pub warmup: Duration,
    /// Length of each timed round.
    pub round: Duration,
    /// Number of timed rounds.
    pub rounds: usize,
}

impl Timing {
    /// Ray's method, with a shorter settle time.
    pub fn ray() -> Self {
        Timing {
            settle: Duration::from_secs(1),
            warmup: Duration::from_secs(1),
            round: Duration::from_secs(2),
            rounds: 4,
        }
    }

    /// Enough to prove every metric runs, in seconds overall.
    pub fn smoke() -> Self {
        Timing {
            settle: Duration::ZERO,
            warmup: Duration::from_millis(10),
            round: Duration::from_millis(20),
            rounds: 2,
        }
    }
}

/// One metric's result.
#[derive(Debug, Clone, Serialize)]
pub struct Metric {
    /// Ray's display name.
    pub name: String,
    /// Ray's metric key, e.g. `single_client_tasks_sync`.
    pub perf_metric_name: String,
    /// Operations per second, mean over the rounds.
    pub mean: f64,
    /// Standard deviation over the rounds.
    pub sd: f64,
}

/// Ray's metric key for a display name: `1:1 actor calls sync` → `1_1_actor_calls_sync`.
pub fn metric_key(name: &str) -> String {
    name.replace([' ', ':', '-'], "_").replace(['(', ')'], "")
}

struct Runner {
    timing: Timing,
    filter: Option<String>,
    results: Vec<Metric>,
    quiet: bool,
}

impl Runner {
    fn wanted(&self, name: &str) -> bool {
        match &self.filter {
            None => true,
            Some(f) => name.contains(f.as_str()) || metric_key(name).contains(f.as_str()),
        }
    }

    /// Ray's `timeit`: warm up, then timed rounds of `fn` in steps.
    fn timeit(
        &mut self,
        name: &str,
        multiplier: f64,
        mut f: impl FnMut() -> Result<(), ray::RayError>,
    ) -> anyhow::Result<()> {
        if !self.wanted(name) {
            return Ok(());
        }
        std::thread::sleep(self.timing.settle);
        let start = Instant::now();
        let mut count = 0usize;
        while start.elapsed() < self.timing.warmup {
            f()?;
            count += 1;
        }
        let step = count / 10 + 1;
        let mut stats = Vec::with_capacity(self.timing.rounds);
        for _ in 0..self.timing.rounds {
            let start = Instant::now();
            let mut count = 0usize;
            while start.elapsed() < self.timing.round {
                for _ in 0..step {
                    f()?;
                }
                count += step;
            }
            stats.push(multiplier * count as f64 / start.elapsed().as_secs_f64());
        }
        self.record(name, &stats);
        Ok(())
    }

    /// Reports a metric's per-round rates as mean ± standard deviation.
    fn record(&mut self, name: &str, stats: &[f64]) {
        let mean = stats.iter().sum::<f64>() / stats.len().max(1) as f64;
        let sd = (stats.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / stats.len().max(1) as f64).sqrt();
        if !self.quiet {
            println!("{name} per second {mean:.2} +- {sd:.2}");
        }
        self.results.push(Metric { name: name.to_string(), perf_metric_name: metric_key(name), mean, sd });
    }
}

fn unit<T>(r: Result<T, ray::RayError>) -> Result<(), ray::RayError> {
    r.map(|_| ())
}

/// Runs the suite on a fresh local cluster and returns the metrics.
pub fn run(timing: Timing, filter: Option<String>, quiet: bool) -> anyhow::Result<Vec<Metric>> {
    let ctx = ray::init()?;
    let mut r = Runner { timing, filter, results: Vec::new(), quiet };
    let n_cpu = ((ctx.cpus as usize) / 2).max(1);

    let value = ray::put(&0u64)?;
    r.timeit("single client get calls (Plasma Store)", 1.0, || unit(ray::get(&value)))?;
    r.timeit("single client put calls (Plasma Store)", 1.0, || unit(ray::put(&0u64)))?;
    r.timeit("multi client put calls (Plasma Store)", 1000.0, || {
        unit(ray::get(&(0..10).map(|_| do_put_small.remote()).collect::<Vec<_>>()))
    })?;
    if r.wanted("single client put gigabytes") {
        let arr = vec![0i64; 100 * 1024 * 1024];
        r.timeit("single client put gigabytes", 8.0 * 0.1, || unit(ray::put(&arr)))?;
    }
    r.timeit("single client tasks and get batch", 1.0, || {
        unit(ray::get(&(0..1000).map(|_| small_value.remote()).collect::<Vec<_>>()))
    })?;
    r.timeit("multi client put gigabytes", 10.0 * 8.0 * 0.1, || {
        unit(ray::get(&(0..10).map(|_| do_put.remote()).collect::<Vec<_>>()))
    })?;
    if r.wanted("single client get object containing 10k refs") {
        let obj = create_object_containing_ref.remote();
        r.timeit("single client get object containing 10k refs", 1.0, || unit(ray::get(&obj)))?;
    }
    r.timeit("single client wait 1k refs", 1.0, || {
        let mut not_ready: Vec<_> = (0..1000).map(|_| small_value.remote()).collect();
        while !not_ready.is_empty() {
            not_ready = ray::wait(&not_ready, 1, None)?.1;
        }
        Ok(())
    })?;
    r.timeit("single client tasks sync", 1.0, || unit(ray::get(&small_value.remote())))?;
    r.timeit("single client tasks async", 1000.0, || {
        unit(ray::get(&(0..1000).map(|_| small_value.remote()).collect::<Vec<_>>()))
    })?;

    let (n, m) = (10_000usize, 4usize);
    if r.wanted("multi client tasks async") {
        let actors = (0..m).map(|_| PerfActor::remote()).collect::<Result<Vec<_>, _>>()?;
        r.timeit("multi client tasks async", (n * m) as f64, || {
            unit(ray::get(&actors.iter().map(|a| a.small_value_batch(n)).collect::<Vec<_>>()))
        })?;
    }
    if r.wanted("1:1 actor calls sync") {
        let a = PerfActor::remote()?;
        r.timeit("1:1 actor calls sync", 1.0, || unit(ray::get(&a.small_value())))?;
    }
    if r.wanted("1:1 actor calls async") {
        let a = PerfActor::remote()?;
        r.timeit("1:1 actor calls async", 1000.0, || {
            unit(ray::get(&(0..1000).map(|_| a.small_value()).collect::<Vec<_>>()))
        })?;
    }
    if r.wanted("1:1 actor calls concurrent") {
        let a = PerfActor::options().max_concurrency(16).remote()?;
        r.timeit("1:1 actor calls concurrent", 1000.0, || {
            unit(ray::get(&(0..1000).map(|_| a.small_value()).collect::<Vec<_>>()))
        })?;
    }
    let n = 5000usize;
    if r.wanted("1:n actor calls async") {
        let actors = (0..n_cpu).map(|_| PerfActor::remote()).collect::<Result<Vec<_>, _>>()?;
        let client = PerfClient::remote(actors.clone(), Vec::new())?;
        r.timeit("1:n actor calls async", (n * actors.len()) as f64, || unit(ray::get(&client.small_value_batch(n))))?;
    }
    if r.wanted("n:n actor calls async") {
        let actors = (0..n_cpu).map(|_| PerfActor::remote()).collect::<Result<Vec<_>, _>>()?;
        r.timeit("n:n actor calls async", (m * n) as f64, || {
            unit(ray::get(&(0..m).map(|_| work.remote(actors.clone(), n)).collect::<Vec<_>>()))
        })?;
    }
    if r.wanted("n:n actor calls with arg async") {
        let n = 1000usize;
        let clients = (0..n_cpu)
            .map(|_| PerfClient::remote(vec![PerfActor::remote()?], Vec::new()))
            .collect::<Result<Vec<_>, ray::RayError>>()?;
        r.timeit("n:n actor calls with arg async", (n * clients.len()) as f64, || {
            unit(ray::get(&clients.iter().map(|c| c.small_value_batch_arg(n)).collect::<Vec<_>>()))
        })?;
    }
    if r.wanted("1:1 async-actor calls sync") {
        let a = PerfAsyncActor::remote()?;
        r.timeit("1:1 async-actor calls sync", 1.0, || unit(ray::get(&a.small_value())))?;
    }
    if r.wanted("1:1 async-actor calls async") {
        let a = PerfAsyncActor::remote()?;
        r.timeit("1:1 async-actor calls async", 1000.0, || {
            unit(ray::get(&(0..1000).map(|_| a.small_value()).collect::<Vec<_>>()))
        })?;
    }
    if r.wanted("1:1 async-actor calls with args async") {
        let a = PerfAsyncActor::remote()?;
        r.timeit("1:1 async-actor calls with args async", 1000.0, || {
            unit(ray::get(&(0..1000u64).map(|i| a.small_value_with_arg(i)).collect::<Vec<_>>()))
        })?;
    }
    if r.wanted("1:n async-actor calls async") {
        let actors = (0..n_cpu).map(|_| PerfAsyncActor::remote()).collect::<Result<Vec<_>, _>>()?;
        let client = PerfClient::remote(Vec::new(), actors.clone())?;
        r.timeit("1:n async-actor calls async", (n * actors.len()) as f64, || {
            unit(ray::get(&client.small_value_batch(n)))
        })?;
    }
    if r.wanted("n:n async-actor calls async") {
        let actors = (0..n_cpu).map(|_| PerfAsyncActor::remote()).collect::<Result<Vec<_>, _>>()?;
        r.timeit("n:n async-actor calls async", (m * n) as f64, || {
            unit(ray::get(&(0..m).map(|_| async_actor_work.remote(actors.clone(), n)).collect::<Vec<_>>()))
        })?;
    }
    ray::shutdown();
    run_placement_groups(&mut r)?;
    run_two_nodes(&mut r)?;
    // Not Ray's: what `single client put gigabytes` is measured against. Each round
    // copies into a fresh allocation, as a put into new shared memory must.
    if r.wanted("plain memcpy gigabytes") {
        let src = vec![1i64; 100 * 1024 * 1024];
        r.timeit("plain memcpy gigabytes", 8.0 * 0.1, || {
            let copy = src.clone();
            std::hint::black_box(&copy);
            Ok(())
        })?;
    }
    Ok(r.results)
}

/// Ray's `placement group create/removal`: on a fresh cluster with 100 units of a
/// custom resource, 100 groups of one small bundle are created, waited for and
/// removed per round.
fn run_placement_groups(r: &mut Runner) -> anyhow::Result<()> {
    const NUM_PGS: usize = 100;
    if !r.wanted("placement group create/removal") {
        return Ok(());
    }
    ray::init_with(ray::Config::new().resource("custom", 100.0))?;
    let result = r.timeit("placement group create/removal", NUM_PGS as f64, || {
        let pgs = (0..NUM_PGS)
            .map(|_| ray::util::placement_group([[("custom", 0.001)]], ray::util::Strategy::Pack))
            .collect::<Result<Vec<_>, _>>()?;
        for pg in &pgs {
            pg.wait(Duration::from_secs(30))?;
        }
        pgs.iter().try_for_each(ray::util::remove_placement_group)
    });
    ray::shutdown();
    result
}

/// The two-node metrics (not Ray's): a cluster of two loopback nodes, each with
/// this machine's CPUs and a resource naming it.
fn run_two_nodes(r: &mut Runner) -> anyhow::Result<()> {
    let names = ["cross node get gigabytes", "same node get gigabytes", "2 node tasks async"];
    if !names.iter().any(|n| r.wanted(n)) {
        return Ok(());
    }
    let resources = |name: &str| ray_runtime::cluster::NodeResources {
        custom: [(name.to_string(), 1.0)].into(),
        ..Default::default()
    };
    let mut cluster = ray_runtime::cluster::LocalCluster::start(&resources("node_a"))?;
    cluster.add_node("127.0.0.2", &resources("node_b"))?;
    ray::init_with(ray::Config::address(cluster.head.address.clone()))?;
    // Wait until both nodes are in the head's view, so work can spill.
    let deadline = Instant::now() + Duration::from_secs(10);
    while ray::runtime_context()?.nodes < 2 {
        anyhow::ensure!(Instant::now() < deadline, "the second node did not join within 10 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    let result = two_node_metrics(r);
    ray::shutdown();
    cluster.stop();
    result
}

fn two_node_metrics(r: &mut Runner) -> anyhow::Result<()> {
    // Each round gets a fresh object (made untimed), so every read is a transfer.
    let len: usize = if r.timing.round < Duration::from_secs(1) { 16 << 20 } else { 512 << 20 };
    for (name, node) in [("cross node get gigabytes", "node_b"), ("same node get gigabytes", "node_a")] {
        if !r.wanted(name) {
            continue;
        }
        std::thread::sleep(r.timing.settle);
        let mut stats = Vec::with_capacity(r.timing.rounds);
        for round in 0..=r.timing.rounds {
            let made = blob.options().resource(node, 1.0).remote(len);
            ray::wait(std::slice::from_ref(&made), 1, None)?;
            let start = Instant::now();
            let got: Vec<u8> = ray::get(&made)?;
            let secs = start.elapsed().as_secs_f64();
            anyhow::ensure!(got.len() == len, "got {} bytes of {len}", got.len());
            // Round 0 warms up.
            if round > 0 {
                stats.push(len as f64 / secs / 1e9);
            }
        }
        r.record(name, &stats);
    }
    r.timeit("2 node tasks async", 1000.0, || {
        unit(ray::get(&(0..1000).map(|_| small_value.remote()).collect::<Vec<_>>()))
    })?;
    Ok(())
}

/// Time from `ray::init()` with no cluster running to the first task's result,
/// over `runs` fresh clusters, in seconds.
pub fn cold_start(runs: usize) -> anyhow::Result<Vec<f64>> {
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        ray::init()?;
        ray::get(&small_value.remote())?;
        times.push(start.elapsed().as_secs_f64());
        ray::shutdown();
    }
    Ok(times)
}

/// Starts a local cluster with its worker pool warm, says `READY`, and idles for
/// `secs`: the state whose footprint the compare script measures.
pub fn idle(secs: u64) -> anyhow::Result<()> {
    let ctx = ray::init()?;
    let warm: Vec<_> = (0..ctx.cpus as usize).map(|_| small_value.remote()).collect();
    ray::get(&warm)?;
    println!("READY");
    std::thread::sleep(Duration::from_secs(secs));
    ray::shutdown();
    Ok(())
}
