//! Compiles the protocol with protox, a pure-Rust protobuf compiler, so building
//! needs no `protoc` on the machine.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/rayrepl.proto");
    let fds = protox::compile(["proto/rayrepl.proto"], ["proto"])?;
    tonic_prost_build::configure().bytes(".").compile_fds(fds)?;
    Ok(())
}
