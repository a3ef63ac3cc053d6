//! Seed 000's Ray Core walkthrough, step by step, in Rust.
//!
//! `cargo run --release -p ray --example walkthrough`
//!
//! 1. A sequential loop over a tiny "database", each lookup sleeping item/10 s.
//! 2. The same lookups as remote tasks: they run in parallel worker processes.
//! 3. The database `put` into the object store once and passed by reference.
//! 4. `wait` with `num_returns = 2` and a timeout, printing results as they land.
//! 5. Follow-up tasks that take the first tasks' `ObjectRef`s as arguments.
//! 6. A `DataTracker` actor, passed into tasks, counting how often they used it.

use std::thread::sleep;
use std::time::{Duration, Instant};

const DATABASE: [&str; 8] = ["Learning", "Ray", "Flexible", "Distributed", "Python", "for", "Machine", "Learning"];

fn database() -> Vec<String> {
    DATABASE.iter().map(|s| s.to_string()).collect()
}

/// A slow lookup: item `i` takes `i / 10` seconds.
fn retrieve(item: usize) -> (usize, String) {
    sleep(Duration::from_millis(item as u64 * 100));
    (item, DATABASE[item].to_string())
}

fn print_runtime(input_data: &[(usize, String)], start: Instant) {
    println!("Runtime: {:.2} seconds, data:", start.elapsed().as_secs_f64());
    for d in input_data {
        println!("{d:?}");
    }
}

#[ray::remote]
fn retrieve_task(item: usize) -> (usize, String) {
    retrieve(item)
}

#[ray::remote]
fn retrieve_from_db(item: usize, db: Vec<String>) -> (usize, String) {
    sleep(Duration::from_millis(item as u64 * 100));
    (item, db[item].clone())
}

/// Seed 000's actor: counts how often the database was queried.
#[ray::remote]
struct DataTracker {
    counts: u64,
}

#[ray::remote]
impl DataTracker {
    fn new() -> Self {
        DataTracker { counts: 0 }
    }

    fn increment(&mut self) {
        self.counts += 1;
    }

    fn counts(&self) -> u64 {
        self.counts
    }
}

#[ray::remote]
fn retrieve_tracker_task(item: usize, tracker: ray::ActorHandle<DataTracker>, db: Vec<String>) -> (usize, String) {
    sleep(Duration::from_millis(item as u64 * 100));
    // The seed fires and forgets; waiting for the call makes the count exact by the
    // time the driver asks for it.
    ray::get(&tracker.increment()).expect("the tracker is alive");
    (item, db[item].clone())
}

#[ray::remote]
fn follow_up_task(retrieve_result: (usize, String)) -> ((usize, String), (usize, String)) {
    let (original_item, _) = retrieve_result;
    let follow_up_result = retrieve(original_item + 1);
    (retrieve_result, follow_up_result)
}

fn main() -> Result<(), ray::RayError> {
    let ctx = ray::init()?;
    println!("Connected to a local cluster at {} with {} CPUs.\n", ctx.address, ctx.cpus);

    println!("== 1. Sequential loop");
    let start = Instant::now();
    let data: Vec<_> = (0..8).map(retrieve).collect();
    print_runtime(&data, start);
    let sequential = start.elapsed();

    println!("\n== 2. Remote tasks");
    let start = Instant::now();
    let object_references: Vec<_> = (0..8).map(|item| retrieve_task.remote(item)).collect();
    let data = ray::get(&object_references)?;
    print_runtime(&data, start);
    let parallel = start.elapsed();

    println!("\n== 3. The database in the object store");
    let db_object_ref = ray::put(&database())?;
    let start = Instant::now();
    let object_references: Vec<_> = (0..8).map(|item| retrieve_from_db.remote(item, &db_object_ref)).collect();
    let data = ray::get(&object_references)?;
    print_runtime(&data, start);

    println!("\n== 4. wait with num_returns=2 and a 7 s timeout");
    let start = Instant::now();
    let mut object_references: Vec<_> = (0..8).map(|item| retrieve_from_db.remote(item, &db_object_ref)).collect();
    let mut all_data = Vec::new();
    while !object_references.is_empty() {
        let num_returns = 2.min(object_references.len());
        let (finished, rest) = ray::wait(&object_references, num_returns, Some(Duration::from_secs(7)))?;
        object_references = rest;
        let data = ray::get(&finished)?;
        print_runtime(&data, start);
        all_data.extend(data);
    }
    print_runtime(&all_data, start);

    println!("\n== 5. Task dependencies");
    let retrieve_refs: Vec<_> =
        [0, 2, 4, 6].into_iter().map(|item| retrieve_from_db.remote(item, &db_object_ref)).collect();
    let follow_up_refs: Vec<_> = retrieve_refs.iter().map(|r| follow_up_task.remote(r)).collect();
    for data in ray::get(&follow_up_refs)? {
        println!("{data:?}");
    }

    println!("\n== 6. An actor that tracks the tasks that used it");
    let tracker = DataTracker::remote()?;
    let object_references: Vec<_> =
        (0..8).map(|item| retrieve_tracker_task.remote(item, tracker.clone(), &db_object_ref)).collect();
    let data = ray::get(&object_references)?;
    println!("{data:?}");
    println!("{}", ray::get(&tracker.counts())?);

    println!(
        "\nSequential: {:.2} s, remote: {:.2} s ({:.1}x faster on {} CPUs).",
        sequential.as_secs_f64(),
        parallel.as_secs_f64(),
        sequential.as_secs_f64() / parallel.as_secs_f64(),
        ctx.cpus
    );
    ray::shutdown();
    Ok(())
}
