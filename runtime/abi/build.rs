//! Records the ABI key: the compiler and target this crate was built with. The
//! runtime compares it with the key a REPL cell library carries in its marker
//! (`cell_library`), and refuses a library built for another ABI instead of
//! crashing in it. Cells and the runtime both build this crate, so both sides
//! compute the key the same way.

use std::process::Command;

fn main() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = Command::new(&rustc)
        .arg("-vV")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|v| v.lines().find(|l| l.starts_with("rustc ")).map(str::to_string))
        .unwrap_or_else(|| "rustc unknown".into());
    let target = std::env::var("TARGET").unwrap_or_default();
    println!("cargo:rustc-env=RAYREPL_ABI_KEY={version} {target}");
    println!("cargo:rerun-if-env-changed=RUSTC");
}
