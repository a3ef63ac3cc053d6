//! Code artifacts: REPL cell libraries shipped to workers by content hash, and
//! the driver's own program for nodes on other machines.
//!
//! A function defined in a REPL cell exists only in that cell's shared library,
//! in a build directory private to the driver's session. The driver publishes each
//! library once, under its sha256, to the head; a worker fetches it on first use,
//! keeps it in the node's session directory, checks it (its hash and its mark,
//! each time it loads it: see [`crate::cell_library`]), loads it and looks the
//! trampoline up by symbol. Libraries are never unloaded: code in them may still
//! be running on other threads, and a recycled worker is the safe way to drop
//! them.
//!
//! Workers of a compiled program run that program. A node on the driver's machine
//! runs it by path; a node elsewhere asks the driver for it ([`executable_chunks`])
//! on its first worker for the job.

use crate::{CoreWorker, block_on, cell_library, lock};
use ray_abi::ids::hex;
use ray_abi::{RayError, TaskFn};
use ray_proto::{ArtifactChunk, GetArtifactRequest, from_status};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The compiler and target this runtime was built with (see ray-abi's build.rs).
pub const ABI_KEY: &str = ray_abi::ABI_KEY;
const CHUNK: usize = 1 << 20;

/// What this process has published and loaded.
#[derive(Default)]
pub(crate) struct ArtifactCache {
    /// Library file (path, size, mtime) → its hash, for libraries already
    /// uploaded. The file's identity includes its mtime: evcxr reuses names.
    published: Mutex<HashMap<(PathBuf, u64, std::time::SystemTime), String>>,
    /// Trampoline address → the hash of its library. Cell libraries are never
    /// unloaded, so an address names one library for the life of the process.
    by_address: Mutex<HashMap<u64, String>>,
    /// Hash → the loaded library, leaked on purpose (see the module docs).
    loaded: Mutex<HashMap<String, &'static libloading::Library>>,
    /// The path each loaded library was loaded by (what `dladdr` reports for
    /// its code) → its hash, so a task it submits needs no second upload.
    loaded_paths: Mutex<HashMap<PathBuf, String>>,
    /// This program's bytes and hash, read when a node first asks for them.
    executable: tokio::sync::OnceCell<(bytes::Bytes, String)>,
}

fn unavailable(function: &str, detail: String) -> RayError {
    RayError::FunctionUnavailable { function: function.to_string(), detail }
}

impl CoreWorker {
    /// The artifact holding the trampoline at `address`, published on first use;
    /// `library_of` finds the library's file.
    pub fn artifact_for(
        &self,
        address: u64,
        library_of: impl FnOnce() -> Option<PathBuf>,
    ) -> Result<Option<String>, RayError> {
        if let Some(hash) = lock(&self.0.artifacts.by_address).get(&address) {
            return Ok(Some(hash.clone()));
        }
        let Some(path) = library_of() else { return Ok(None) };
        let loaded = lock(&self.0.artifacts.loaded_paths).get(&path).cloned();
        let hash = match loaded {
            Some(hash) => hash,
            None => self.publish_artifact(&path)?,
        };
        lock(&self.0.artifacts.by_address).insert(address, hash.clone());
        Ok(Some(hash))
    }

    /// Uploads the library at `path` to the head, once, and returns its hash.
    fn publish_artifact(&self, path: &Path) -> Result<String, RayError> {
        let meta = std::fs::metadata(path)
            .map_err(|e| RayError::InvalidArgument(format!("cannot read the code library {}: {e}", path.display())))?;
        let identity = (path.to_path_buf(), meta.len(), meta.modified().unwrap_or(std::time::UNIX_EPOCH));
        if let Some(hash) = lock(&self.0.artifacts.published).get(&identity) {
            return Ok(hash.clone());
        }
        let bytes =
            bytes::Bytes::from(std::fs::read(path).map_err(|e| {
                RayError::InvalidArgument(format!("cannot read the code library {}: {e}", path.display()))
            })?);
        let hash = hex(&Sha256::digest(&bytes));
        let chunks = chunks_of(&bytes, &hash);
        let mut head = self.0.head.clone();
        block_on(&self.0.rt, async move { head.put_artifact(tokio_stream::iter(chunks)).await })
            .map_err(|s| from_status(&s, "the head"))?;
        lock(&self.0.artifacts.published).insert(identity, hash.clone());
        Ok(hash)
    }

    /// Finds `symbol` in artifact `hash`, fetching and loading it on first use.
    pub(crate) fn artifact_symbol(&self, function: &str, hash: &str, symbol: &str) -> Result<TaskFn, RayError> {
        let library = self.load_artifact(function, hash)?;
        let name = format!("{symbol}\0");
        // SAFETY: every `__ray_*` symbol in a cell library is a trampoline generated
        // by `#[ray::remote]` with exactly the `TaskFn` signature.
        let func = unsafe { library.get::<TaskFn>(name.as_bytes()) }.map_err(|_| {
            unavailable(
                function,
                format!(
                    "its code library {} has no `{symbol}`; was it defined after this actor was created?",
                    short(hash)
                ),
            )
        })?;
        Ok(*func)
    }

    fn load_artifact(&self, function: &str, hash: &str) -> Result<&'static libloading::Library, RayError> {
        if let Some(lib) = lock(&self.0.artifacts.loaded).get(hash) {
            return Ok(lib);
        }
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(unavailable(function, format!("{hash:?} does not name a code library (a sha256 in hex)")));
        }
        let dir = artifacts_dir();
        ray_proto::private::create_dir(&dir)
            .map_err(|e| unavailable(function, format!("cannot keep its code library: {e}")))?;
        let path = dir.join(format!("{hash}.so"));
        if !path.exists() {
            self.fetch_artifact(function, hash, &path)?;
        }
        // Checked every time it is loaded, not only when fetched: the cache
        // outlives this worker (see `cell_library`).
        let checked = cell_library::check(&path, hash).map_err(|e| unavailable(function, e.to_string()))?;
        let (lib, loaded_as) = checked.load().map_err(|e| unavailable(function, e))?;
        lock(&self.0.artifacts.loaded).insert(hash.to_string(), lib);
        lock(&self.0.artifacts.loaded_paths).insert(loaded_as, hash.to_string());
        Ok(lib)
    }

    fn fetch_artifact(&self, function: &str, hash: &str, path: &Path) -> Result<(), RayError> {
        let mut head = self.0.head.clone();
        let request = GetArtifactRequest { hash: hash.to_string() };
        let chunks = block_on(&self.0.rt, async move {
            let mut stream = head.get_artifact(request).await?.into_inner();
            let mut chunks = Vec::new();
            while let Some(c) = stream.message().await? {
                chunks.push(c);
            }
            Ok::<_, tonic::Status>(chunks)
        })
        .map_err(|s| from_status(&s, "the head"))?;
        let first =
            chunks.first().ok_or_else(|| unavailable(function, format!("artifact {} is empty", short(hash))))?;
        // What the uploader declared, for an early, plain refusal; the mark in the
        // library itself is what counts (checked at every load).
        check_abi(function, &first.abi_key)?;
        let mut bytes = Vec::with_capacity(first.size as usize);
        for c in &chunks {
            bytes.extend_from_slice(&c.data);
        }
        if hex(&Sha256::digest(&bytes)) != hash {
            return Err(unavailable(function, format!("artifact {} arrived corrupted", short(hash))));
        }
        ray_proto::private::write_file_atomically(path, &bytes, ray_proto::private::FILE_MODE)
            .map_err(|e| unavailable(function, format!("cannot store its code library: {e}")))
    }
}

/// Where this worker keeps the cell libraries it fetched: its node's session
/// directory, else a directory of this user's in the temporary directory.
fn artifacts_dir() -> PathBuf {
    match std::env::var_os("RAYREPL_SESSION_DIR") {
        Some(dir) => PathBuf::from(dir).join("artifacts"),
        None => std::env::temp_dir().join(format!("rayrepl-artifacts-{}", ray_proto::private::euid())),
    }
}

/// Splits an artifact into chunks; the first carries its hash, ABI and size.
fn chunks_of(bytes: &bytes::Bytes, hash: &str) -> Vec<ArtifactChunk> {
    let mut chunks = Vec::with_capacity(bytes.len() / CHUNK + 1);
    let mut at = 0;
    loop {
        let end = (at + CHUNK).min(bytes.len());
        let first = at == 0;
        chunks.push(ArtifactChunk {
            hash: if first { hash.to_string() } else { String::new() },
            abi_key: if first { ABI_KEY.to_string() } else { String::new() },
            size: if first { bytes.len() as u64 } else { 0 },
            data: bytes.slice(at..end),
        });
        at = end;
        if at >= bytes.len() {
            break chunks;
        }
    }
}

/// This program's executable as chunks, read and hashed once.
pub(crate) async fn executable_chunks(cw: &CoreWorker) -> Result<Vec<ArtifactChunk>, RayError> {
    let (bytes, hash) =
        cw.0.artifacts
            .executable
            .get_or_try_init(|| async {
                tokio::task::spawn_blocking(|| {
                    let exe = std::env::current_exe()
                        .and_then(std::fs::read)
                        .map_err(|e| RayError::Internal(format!("cannot read this program's executable: {e}")))?;
                    let hash = hex(&Sha256::digest(&exe));
                    Ok::<_, RayError>((bytes::Bytes::from(exe), hash))
                })
                .await
                .map_err(|e| RayError::Internal(e.to_string()))?
            })
            .await?;
    Ok(chunks_of(bytes, hash))
}

fn check_abi(function: &str, abi_key: &str) -> Result<(), RayError> {
    if abi_key == ABI_KEY {
        return Ok(());
    }
    Err(unavailable(
        function,
        format!(
            "its code was compiled for `{abi_key}`, but this worker runs `{ABI_KEY}`; \
             run the same rayrepl build and Rust toolchain on every node"
        ),
    ))
}

fn short(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}
