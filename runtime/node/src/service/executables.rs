//! Worker executables for jobs whose driver runs on another machine.
//!
//! A compiled Ray program is also its own worker: a node on the driver's machine
//! runs the driver's file. A node on another machine has no such file, so on the
//! job's first worker it asks the driver for the program, checks its sha256 and
//! keeps it in the node's session directory (0700), named by that hash, 0700.
//!
//! The kept file is checked again before every worker is started from it: it
//! must still be a regular file of ours that nobody else can write to, and its
//! bytes must still hash to what the driver sent. A file that changed is refused,
//! not fetched again: something wrote to a private cache. Between that check and
//! the `exec`, only this user (or root) can change the file.

use super::Shared;
use ray_proto::{Empty, JobInfo, core_worker_client, private};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::OnceCell;

/// A fetched program: where it is kept, and its sha256 in hex.
#[derive(Debug, Clone)]
pub(crate) struct Fetched {
    path: PathBuf,
    hash: String,
}

/// The executable each job's workers run here, once known.
pub(crate) type Executables = std::sync::Mutex<std::collections::HashMap<u32, Arc<OnceCell<Fetched>>>>;

impl Shared {
    /// The file to start the job's workers from, fetched from its driver the
    /// first time if the driver runs on another machine, and checked against its
    /// hash every time.
    pub(crate) async fn worker_executable(&self, job: &JobInfo) -> Result<PathBuf, String> {
        if job.host_id.is_empty() || job.host_id == self.registration.host_id {
            return Ok(PathBuf::from(&job.worker_executable));
        }
        let cell = self.executables.lock().unwrap_or_else(|p| p.into_inner()).entry(job.job_id).or_default().clone();
        let fetched = cell.get_or_try_init(|| self.fetch_executable(job)).await?.clone();
        tokio::task::spawn_blocking(move || check_program(&fetched.path, &fetched.hash).map(|()| fetched.path))
            .await
            .map_err(|e| e.to_string())?
    }

    async fn fetch_executable(&self, job: &JobInfo) -> Result<Fetched, String> {
        let from_driver = |e: tonic::Status| {
            format!("cannot fetch the job's program from its driver at {}: {}", job.driver_address, e.message())
        };
        let channel = self.channel(&job.driver_address).map_err(from_driver)?;
        let mut stream = core_worker_client(channel).get_executable(Empty {}).await.map_err(from_driver)?.into_inner();
        let first = stream.message().await.map_err(from_driver)?.ok_or("the driver sent an empty program")?;
        let hash = first.hash.clone();
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("the driver named its program {hash:?}, which is not a sha256 in hex"));
        }
        let name = Path::new(&job.worker_executable)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "worker".into());
        let dir = self.config.session_dir.join("executables");
        let path = dir.join(format!("{}-{name}", &hash[..16]));
        if path.exists() {
            // Kept by an earlier job of the same program; checked before each use.
            return Ok(Fetched { path, hash });
        }
        let mut bytes = Vec::with_capacity(first.size as usize);
        bytes.extend_from_slice(&first.data);
        while let Some(chunk) = stream.message().await.map_err(from_driver)? {
            bytes.extend_from_slice(&chunk.data);
        }
        tokio::task::spawn_blocking(move || {
            if ray_abi::ids::hex(&Sha256::digest(&bytes)) != hash {
                return Err("the job's program arrived corrupted (sha256 mismatch)".to_string());
            }
            let store = |e: private::PrivateError| format!("cannot keep the job's program: {e}");
            private::create_dir(&dir).map_err(store)?;
            private::write_file_atomically(&path, &bytes, 0o700).map_err(store)?;
            tracing::info!("fetched the job's program ({} bytes) to {}", bytes.len(), path.display());
            Ok(Fetched { path, hash })
        })
        .await
        .map_err(|e| e.to_string())?
    }
}

/// Checks the kept program at `path` before a worker is started from it: a
/// private file of ours whose bytes hash to `hash`.
fn check_program(path: &Path, hash: &str) -> Result<(), String> {
    let advice = format!("delete {} (the node then fetches the program again from the driver)", path.display());
    let mut file = private::open_private_file(path, &advice).map_err(|e| format!("the job's program: {e}"))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| format!("cannot read the job's program {}: {e}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let found = ray_abi::ids::hex(&hasher.finalize());
    if found != hash {
        return Err(format!(
            "the job's program {} does not match its sha256 (expected {hash}, found {found}): it was changed after \
             this node fetched it from the driver, so no worker is started from it. Delete the file (the node then \
             fetches the program again) and find out what else writes to {}",
            path.display(),
            path.parent().unwrap_or(Path::new("/")).display()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_program_is_checked_before_every_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0123456789abcdef-prog");
        let bytes = b"\x7fELF program".repeat(100_000);
        let hash = ray_abi::ids::hex(&Sha256::digest(&bytes));
        private::write_file_atomically(&path, &bytes, 0o700).unwrap();
        check_program(&path, &hash).unwrap();

        let mut changed = bytes.clone();
        changed[5] ^= 1;
        std::fs::write(&path, &changed).unwrap();
        let err = check_program(&path, &hash).unwrap_err();
        assert!(err.contains("does not match its sha256"), "{err}");
        assert!(err.contains("no worker is started from it"), "{err}");

        std::fs::write(&path, &bytes).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = check_program(&path, &hash).unwrap_err();
        assert!(err.contains("can be changed by other users"), "{err}");
    }
}
