//! Exports the host runtime's function table from the `rayrepl` binary, so REPL
//! cell libraries loaded into it (and into its workers) can find the runtime. Only
//! that one symbol is exported: `-rdynamic` would export the whole static std and
//! make the cells' std calls bind into the host's copy.

fn main() {
    println!("cargo:rustc-link-arg-bins=-Wl,--export-dynamic-symbol=RAYREPL_HOST_TABLE_V1");
}
