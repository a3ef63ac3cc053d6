//! The smallest Ray program: seed 001's `add` on a local cluster.

#[ray::remote]
fn add(x: i64, y: i64) -> i64 {
    x + y
}

fn main() -> Result<(), ray::RayError> {
    ray::init()?;
    let futures = vec![add.remote(1, 2), add.remote(3, 4), add.remote(5, 6)];
    let results = ray::get(&futures)?;
    println!("Results: {results:?}");
    ray::shutdown();
    Ok(())
}
