//! The artifact store: REPL cell libraries, by content hash.
//!
//! A cell's code exists only as a shared library in the driver's evcxr build
//! directory, which is temporary and numbered per session. Workers, possibly on
//! other machines, need the exact bytes, so the driver uploads each library once,
//! keyed by its sha256, and workers fetch it from here on first use. Artifacts are
//! kept on disk in the session directory, not in the head's memory: a long session
//! uploads one library per cell.

use bytes::Bytes;
use ray_proto::ArtifactChunk;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::io::AsyncWriteExt;
use tonic::Status;

/// Chunk size of artifact streams; well under gRPC's 4 MiB message limit.
pub const CHUNK: usize = 1 << 20;

#[derive(Clone)]
struct Stored {
    abi_key: String,
    size: u64,
    path: PathBuf,
}

/// Artifacts uploaded to this head.
#[derive(Clone)]
pub struct Artifacts {
    dir: PathBuf,
    stored: Arc<Mutex<HashMap<String, Stored>>>,
}

impl Artifacts {
    /// A store that keeps its files under `session_dir/artifacts`.
    pub fn new(session_dir: &str) -> Self {
        Artifacts { dir: PathBuf::from(session_dir).join("artifacts"), stored: Arc::default() }
    }

    fn lookup(&self, hash: &str) -> Option<Stored> {
        self.stored.lock().unwrap_or_else(|p| p.into_inner()).get(hash).cloned()
    }

    /// Receives an upload; checks that the bytes hash to the announced hash.
    pub async fn put(&self, mut chunks: tonic::Streaming<ArtifactChunk>) -> Result<bool, Status> {
        let first = chunks.message().await?.ok_or_else(|| Status::invalid_argument("empty artifact upload"))?;
        if first.hash.len() != 64 || !first.hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Status::invalid_argument("an artifact is named by its sha256 in hex"));
        }
        // Stored already, unless its file was deleted (as a worker's refusal of
        // a changed copy advises): then this upload puts it back.
        if self.lookup(&first.hash).is_some_and(|s| s.path.exists()) {
            return Ok(false);
        }
        // A mkdir and a stat: quick enough for the head's one thread.
        ray_proto::private::create_dir(&self.dir).map_err(|e| Status::internal(e.to_string()))?;
        let final_path = self.dir.join(format!("{}.so", first.hash));
        let tmp_path = self.dir.join(format!(".{}.{}.part", first.hash, std::process::id()));
        let io = |e: std::io::Error| Status::internal(format!("cannot store artifact: {e}"));
        let mut file = private_file(&tmp_path).await.map_err(io)?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut chunk = Some(first.clone());
        while let Some(c) = chunk {
            hasher.update(&c.data);
            size += c.data.len() as u64;
            file.write_all(&c.data).await.map_err(io)?;
            chunk = chunks.message().await?;
        }
        file.flush().await.map_err(io)?;
        drop(file);
        let actual = ray_abi::ids::hex(&hasher.finalize());
        if actual != first.hash || size != first.size {
            if let Err(e) = tokio::fs::remove_file(&tmp_path).await {
                tracing::debug!("the corrupted upload {} stays behind: {e}", tmp_path.display());
            }
            return Err(Status::data_loss(format!(
                "artifact upload corrupted: expected {} ({} bytes), got {actual} ({size} bytes)",
                first.hash, first.size
            )));
        }
        // The ABI file first: a worker on this machine that finds the library
        // checks it without asking the head.
        let mut abi = private_file(&self.dir.join(format!("{}.abi", first.hash))).await.map_err(io)?;
        abi.write_all(first.abi_key.as_bytes()).await.map_err(io)?;
        abi.flush().await.map_err(io)?;
        tokio::fs::rename(&tmp_path, &final_path).await.map_err(io)?;
        let stored = Stored { abi_key: first.abi_key, size, path: final_path };
        self.stored.lock().unwrap_or_else(|p| p.into_inner()).insert(first.hash, stored);
        Ok(true)
    }

    /// Streams an artifact back in chunks; the first carries its metadata.
    pub async fn get(&self, hash: &str) -> Result<Vec<ArtifactChunk>, Status> {
        let stored = self.lookup(hash).ok_or_else(|| {
            Status::not_found(format!("no artifact {hash} on the head; the driver that defined it has not uploaded it"))
        })?;
        let bytes = Bytes::from(
            tokio::fs::read(&stored.path)
                .await
                .map_err(|e| Status::internal(format!("cannot read artifact {hash}: {e}")))?,
        );
        let mut out = vec![ArtifactChunk {
            hash: hash.to_string(),
            abi_key: stored.abi_key,
            size: stored.size,
            data: bytes.slice(..bytes.len().min(CHUNK)),
        }];
        let mut at = CHUNK;
        while at < bytes.len() {
            let end = (at + CHUNK).min(bytes.len());
            out.push(ArtifactChunk { data: bytes.slice(at..end), ..ArtifactChunk::default() });
            at = end;
        }
        Ok(out)
    }
}

/// A new file readable by this user only (workers on this machine load what is
/// kept here, so nobody else may write it; see `ray_proto::private`).
async fn private_file(path: &std::path::Path) -> std::io::Result<tokio::fs::File> {
    tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(ray_proto::private::FILE_MODE)
        .open(path)
        .await
}
