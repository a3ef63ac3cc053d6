//! Checks a cell library each time a worker loads it, before any of its code
//! runs: that its bytes still hash to the name it was fetched under, and that it
//! is a rayrepl cell library built for this worker's ABI.
//!
//! A worker keeps the cell libraries it fetched in its node's session directory,
//! named by their sha256, and `dlopen`s them by hash. `dlopen` runs a library's
//! constructors, so nothing about the file can be learnt by loading it: the file
//! is read and judged first.
//!
//! 1. The file must be a regular file (not a link) of this user's that nobody
//!    else can write to, in a directory of ours that is 0700
//!    ([`ray_proto::private`]).
//! 2. Its bytes, read through the file descriptor that was checked, must hash
//!    (sha256, as the driver computed when it published the library) to the name
//!    it is loaded by. A cached file that changed is refused, never replaced
//!    silently: something wrote to a private cache. (On the head's machine the
//!    head keeps its copy in the same file.)
//! 3. The same bytes must parse as an ELF shared object whose dynamic symbol
//!    table exports [`ray_abi::cell_marker::SYMBOL`], holding this build's mark
//!    (the project's name and the ABI key). A system library such as `libz.so`,
//!    whatever ABI key its uploader claimed, is refused here.
//! 4. The library is then loaded through `/proc/self/fd/N` of that same open
//!    file, not by its path, so what is loaded is the file (the inode) that was
//!    read, even if another process renames something over the path meanwhile.
//!
//! What still guards the gap between reading and loading: the file's contents
//! could change between the check and `dlopen` only by a write to that inode,
//! which only this user (or root) can make, as the file is ours, 0600 and not
//! reachable through a link; and a process running as this user could as well
//! ptrace the worker. `/proc` is needed for step 4; without it the library is
//! loaded by its path, in its 0700 directory.
//!
//! The mark tells rayrepl's libraries from others; it is not a signature: a
//! holder of the cluster token can build a library with the mark, and running
//! the code of the cluster's users is what workers are for.

use ray_abi::cell_marker;
use ray_proto::private::{self, PrivateError};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Why a cell library is not loaded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refused {
    /// The cached file cannot be opened, or is not a private file of ours.
    #[error("its cached code library cannot be used: {0}")]
    Unsafe(#[from] PrivateError),
    /// Reading the file failed.
    #[error("cannot read its cached code library {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file's bytes do not hash to its name.
    #[error(
        "its cached code library {} does not match its sha256 (expected {expected}, found {found}): it was \
         changed after it was stored, so the worker refused to load it. Find out what else writes to {}, delete \
         the file, and run the driver that defined the function again: it uploads the library anew",
        path.display(),
        path.parent().unwrap_or(Path::new("/")).display()
    )]
    Tampered {
        /// The file.
        path: PathBuf,
        /// The hash it is named by.
        expected: String,
        /// The hash of its bytes.
        found: String,
    },
    /// The file is not an ELF shared library at all.
    #[error(
        "its code library {} is not a shared library ({why}), so the worker refused it without loading it; \
         only libraries that a rayrepl session compiled from cells are loaded",
        path.display()
    )]
    NotSharedLibrary {
        /// The file.
        path: PathBuf,
        /// What it is instead.
        why: String,
    },
    /// The file is a shared library, but not one a rayrepl session built.
    #[error(
        "its code library {} is not a rayrepl cell library: it does not export `{symbol}` as every cell \
         library does, so the worker refused it without loading it (loading would run its code). Define remote \
         functions in a rayrepl REPL or notebook session, which publishes their libraries itself",
        path.display()
    )]
    Unmarked {
        /// The file.
        path: PathBuf,
        /// The mark's symbol.
        symbol: &'static str,
    },
    /// A rayrepl cell library, compiled by another toolchain.
    #[error(
        "its code was compiled for `{found}`, but this worker runs `{}`; run the same rayrepl build and Rust \
         toolchain on every node",
        ray_abi::ABI_KEY
    )]
    WrongAbi {
        /// The ABI key the library carries.
        found: String,
    },
}

/// A cell library whose file passed every check, still open.
#[derive(Debug)]
pub(crate) struct Checked {
    file: File,
    path: PathBuf,
}

/// Opens the cached library `path` and checks it (see the module docs) against
/// `hash`, its sha256 in hex.
pub(crate) fn check(path: &Path, hash: &str) -> Result<Checked, Refused> {
    let advice = format!("delete {} (the worker then fetches the library again from the head)", path.display());
    let mut file = private::open_private_file(path, &advice)?;
    let mut bytes = Vec::with_capacity(file.metadata().map(|m| m.len() as usize).unwrap_or(0));
    file.read_to_end(&mut bytes).map_err(|source| Refused::Read { path: path.to_path_buf(), source })?;
    let found = ray_abi::ids::hex(&Sha256::digest(&bytes));
    if found != hash {
        return Err(Refused::Tampered { path: path.to_path_buf(), expected: hash.to_string(), found });
    }
    check_mark(path, &bytes)?;
    Ok(Checked { file, path: path.to_path_buf() })
}

/// Checks that `bytes` are an ELF shared library that exports this build's
/// mark. Reads the file only: nothing in it runs.
pub(crate) fn check_mark(path: &Path, bytes: &[u8]) -> Result<(), Refused> {
    use object::{Object, ObjectSection, ObjectSymbol};
    let not_shared = |why: String| Refused::NotSharedLibrary { path: path.to_path_buf(), why };
    let elf = object::File::parse(bytes).map_err(|e| not_shared(format!("it cannot be read as ELF: {e}")))?;
    if elf.format() != object::BinaryFormat::Elf {
        return Err(not_shared(format!("it is {:?}, not ELF", elf.format())));
    }
    if elf.kind() != object::ObjectKind::Dynamic {
        return Err(not_shared(format!("it is an ELF file of kind {:?}", elf.kind())));
    }
    let unmarked = || Refused::Unmarked { path: path.to_path_buf(), symbol: cell_marker::SYMBOL };
    let symbol = elf
        .dynamic_symbols()
        .find(|s| s.name_bytes().is_ok_and(|n| n == cell_marker::SYMBOL.as_bytes()) && s.is_definition())
        .ok_or_else(unmarked)?;
    let section = symbol.section_index().and_then(|i| elf.section_by_index(i).ok()).ok_or_else(unmarked)?;
    let mark = section.data_range(symbol.address(), symbol.size()).ok().flatten().ok_or_else(unmarked)?;
    if mark == cell_marker::MARK {
        return Ok(());
    }
    match cell_marker::abi_of(mark) {
        Some(found) => Err(Refused::WrongAbi { found: found.to_string() }),
        None => Err(unmarked()),
    }
}

impl Checked {
    /// Loads the library that was checked, through its open file descriptor.
    /// The library and the descriptor stay for the life of the process. Returns
    /// the library and the path it was loaded by (what `dladdr` reports for its
    /// code).
    pub(crate) fn load(self) -> Result<(&'static libloading::Library, PathBuf), String> {
        let by_fd = PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd()));
        let (load_path, keep) = if by_fd.exists() { (by_fd, true) } else { (self.path.clone(), false) };
        // SAFETY: the file is a cell library built by a rayrepl session for this
        // ABI (checked above, from the bytes being loaded), and its initializers
        // are those of ordinary Rust code.
        let lib = unsafe { libloading::Library::new(&load_path) }
            .map_err(|e| format!("cannot load its code library {}: {e}", self.path.display()))?;
        if keep {
            // The path stays valid while the descriptor is open; backtraces and
            // `dladdr` name the library by it.
            std::mem::forget(self.file);
        }
        Ok((Box::leak(Box::new(lib)), load_path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A shared library, built with the system's C compiler (the linker Rust
    /// uses on Linux), that exports `symbols` (name, bytes) as read-only data.
    fn shared_object(symbols: &[(&str, &[u8])]) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let mut source = String::new();
        for (name, bytes) in symbols {
            let init: Vec<String> = bytes.iter().map(|b| b.to_string()).collect();
            source.push_str(&format!(
                "__attribute__((visibility(\"default\"))) const unsigned char {name}[{}] = {{{}}};\n",
                bytes.len(),
                init.join(",")
            ));
        }
        std::fs::write(dir.path().join("lib.c"), source).unwrap();
        let out = dir.path().join("lib.so");
        let status = std::process::Command::new("cc")
            .args(["-shared", "-fPIC", "-o"])
            .arg(&out)
            .arg(dir.path().join("lib.c"))
            .status()
            .expect("the C compiler `cc` (Rust's linker) runs");
        assert!(status.success());
        std::fs::read(out).unwrap()
    }

    fn path() -> &'static Path {
        Path::new("/cache/0123.so")
    }

    #[test]
    fn a_library_with_this_builds_mark_passes() {
        let lib = shared_object(&[("other", b"x"), (cell_marker::SYMBOL, &cell_marker::MARK)]);
        check_mark(path(), &lib).unwrap();
    }

    #[test]
    fn a_library_without_the_mark_is_refused_naming_it() {
        let lib = shared_object(&[("deflate", b"zlib")]);
        let err = check_mark(path(), &lib).unwrap_err().to_string();
        assert!(err.contains("is not a rayrepl cell library"), "{err}");
        assert!(err.contains(cell_marker::SYMBOL), "{err}");
        assert!(err.contains("without loading it"), "{err}");
    }

    #[test]
    fn a_mark_for_another_abi_names_both() {
        let lib = shared_object(&[(cell_marker::SYMBOL, b"rayrepl cell library; abi: rustc 0.1.0 sparc")]);
        let err = check_mark(path(), &lib).unwrap_err().to_string();
        assert!(err.contains("compiled for `rustc 0.1.0 sparc`"), "{err}");
        assert!(err.contains(ray_abi::ABI_KEY), "{err}");
    }

    #[test]
    fn a_wrong_mark_and_non_elf_files_are_refused() {
        let lib = shared_object(&[(cell_marker::SYMBOL, b"something else")]);
        assert!(matches!(check_mark(path(), &lib), Err(Refused::Unmarked { .. })));
        let err = check_mark(path(), b"#!/bin/sh\necho hi\n").unwrap_err().to_string();
        assert!(err.contains("is not a shared library"), "{err}");
    }

    #[test]
    fn a_cached_file_is_checked_against_its_hash_every_time() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let lib = shared_object(&[(cell_marker::SYMBOL, &cell_marker::MARK)]);
        let hash = ray_abi::ids::hex(&Sha256::digest(&lib));
        let file = dir.path().join(format!("{hash}.so"));
        private::write_file_atomically(&file, &lib, private::FILE_MODE).unwrap();
        check(&file, &hash).unwrap();

        let mut tampered = lib.clone();
        *tampered.last_mut().unwrap() ^= 1;
        std::fs::write(&file, &tampered).unwrap();
        let err = check(&file, &hash).unwrap_err().to_string();
        assert!(err.contains("does not match its sha256"), "{err}");
        assert!(err.contains("delete the file, and run the driver"), "{err}");

        std::fs::write(&file, &lib).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
        let err = check(&file, &hash).unwrap_err().to_string();
        assert!(err.contains("can be changed by other users"), "{err}");
    }
}
