//! Startup and per-task overheads: the figures the README reports.
//!
//! `cargo run --release -p ray --example latency`
//!
//! - cold start: from `ray::init()` (no cluster running) to the first task's result;
//! - synchronous round trip: `ray::get(f.remote(..))` one call at a time;
//! - asynchronous throughput: submit a batch, then `get` it all;
//! - the same two for calls to one actor (Ray's `1_1_actor_calls_sync/async`).

use std::time::{Duration, Instant};

#[ray::remote]
fn add(x: u64, y: u64) -> u64 {
    x + y
}

#[ray::remote]
struct Echo {
    calls: u64,
}

#[ray::remote]
impl Echo {
    fn new() -> Self {
        Echo { calls: 0 }
    }

    fn ping(&mut self, x: u64) -> u64 {
        self.calls += 1;
        x
    }
}

fn main() -> Result<(), ray::RayError> {
    let start = Instant::now();
    let ctx = ray::init()?;
    let init = start.elapsed();
    let first = ray::get(&add.remote(1, 2))?;
    let cold = start.elapsed();
    assert_eq!(first, 3);
    println!("cluster: {} node(s), {} CPUs", ctx.nodes, ctx.cpus);
    println!("cold start: init {:.1} ms, first result {:.1} ms", ms(init), ms(cold));

    for _ in 0..200 {
        ray::get(&add.remote(1, 1))?;
    }
    let n = 2_000;
    let start = Instant::now();
    for i in 0..n {
        ray::get(&add.remote(i, 1))?;
    }
    let sync = start.elapsed();
    println!(
        "sync round trip: {:.1} us per task ({:.0} tasks/s over {n})",
        sync.as_secs_f64() * 1e6 / n as f64,
        n as f64 / sync.as_secs_f64()
    );

    let batch = 10_000;
    let start = Instant::now();
    let refs: Vec<_> = (0..batch).map(|i| add.remote(i, 1)).collect();
    ray::get(&refs)?;
    let batch_time = start.elapsed();
    println!("async batch: {:.0} tasks/s over {batch}", batch as f64 / batch_time.as_secs_f64());

    let actor = Echo::remote()?;
    for i in 0..200 {
        ray::get(&actor.ping(i))?;
    }
    let start = Instant::now();
    for i in 0..n {
        ray::get(&actor.ping(i))?;
    }
    let sync = start.elapsed();
    println!(
        "actor sync call: {:.1} us per call ({:.0} calls/s over {n})",
        sync.as_secs_f64() * 1e6 / n as f64,
        n as f64 / sync.as_secs_f64()
    );
    let start = Instant::now();
    let refs: Vec<_> = (0..batch).map(|i| actor.ping(i)).collect();
    ray::get(&refs)?;
    println!("actor async batch: {:.0} calls/s over {batch}", batch as f64 / start.elapsed().as_secs_f64());
    ray::shutdown();
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
