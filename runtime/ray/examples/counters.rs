//! Seed 002's actors: ten `Counter`s, each a stateful worker process.
//!
//! `cargo run --release -p ray --example counters` prints
//! `[1, 1, 1, 1, 1, 1, 1, 1, 1, 1]`, `[2, 3, 4, 5, 6]` and
//! `[6, 1, 1, 1, 1, 1, 1, 1, 1, 1]`, as the seed's Python does.

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

    fn get_counter(&self) -> i64 {
        self.value
    }
}

fn main() -> Result<(), ray::RayError> {
    ray::init()?;
    let counters = (0..10).map(|_| Counter::remote()).collect::<Result<Vec<_>, _>>()?;

    let results = ray::get(&counters.iter().map(|c| c.increment()).collect::<Vec<_>>())?;
    println!("{results:?}");

    let results = ray::get(&(0..5).map(|_| counters[0].increment()).collect::<Vec<_>>())?;
    println!("{results:?}");

    let results = ray::get(&counters.iter().map(|c| c.get_counter()).collect::<Vec<_>>())?;
    println!("{results:?}");
    ray::shutdown();
    Ok(())
}
