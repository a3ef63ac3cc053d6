//! The mark every REPL cell library carries, so a worker can tell one from any
//! other shared library before it loads it.
//!
//! Loading a shared library runs its constructors, so a worker must decide
//! whether to load a file from the file alone. Every copy of the `ray` crate
//! exports [`SYMBOL`], a read-only byte string that names the project and the ABI
//! key ([`crate::ABI_KEY`]: the compiler and target) it was built with. A cell
//! library links `ray`, so it exports the mark; a system library (`libz.so`) or
//! anything else does not, and a library built by another toolchain carries
//! another key. The runtime reads the mark from the file's dynamic symbol table
//! (`ray_core`'s `cell_library`) and refuses the file otherwise. The mark tells
//! rayrepl's own libraries from others; it is not a signature: whoever holds the
//! cluster token can build a cell library, and running its code is what a cell is
//! for.

use crate::ABI_KEY;

/// The dynamic symbol every cell library exports: [`LEN`] bytes, [`PREFIX`]
/// then the ABI key.
pub const SYMBOL: &str = "RAYREPL_CELL_LIBRARY_V1";

/// What the mark's bytes start with.
pub const PREFIX: &[u8] = b"rayrepl cell library; abi: ";

/// The mark's length in bytes for this ABI key.
pub const LEN: usize = PREFIX.len() + ABI_KEY.len();

/// The mark's bytes for this build: [`PREFIX`] then [`ABI_KEY`].
pub const MARK: [u8; LEN] = mark();

const fn mark() -> [u8; LEN] {
    let mut out = [0u8; LEN];
    let key = ABI_KEY.as_bytes();
    let mut i = 0;
    while i < PREFIX.len() {
        out[i] = PREFIX[i];
        i += 1;
    }
    let mut j = 0;
    while j < key.len() {
        out[PREFIX.len() + j] = key[j];
        j += 1;
    }
    out
}

/// The ABI key a mark names, if `bytes` is a mark at all.
pub fn abi_of(bytes: &[u8]) -> Option<&str> {
    std::str::from_utf8(bytes.strip_prefix(PREFIX)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mark_names_this_builds_abi() {
        assert_eq!(abi_of(&MARK), Some(ABI_KEY));
        assert!(ABI_KEY.starts_with("rustc "), "{ABI_KEY}");
        assert_eq!(abi_of(b"libz"), None);
        assert_eq!(abi_of(b"rayrepl cell library; abi: rustc 1.0.0 x86_64"), Some("rustc 1.0.0 x86_64"));
    }
}
