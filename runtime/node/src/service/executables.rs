//! Worker executables for jobs whose driver runs on another machine.
//!
//! A compiled Ray program is also its own worker: a node on the driver's machine
//! runs the driver's file. A node on another machine has no such file, so on the
//! job's first worker it asks the driver for the program, checks its sha256 and
//! keeps it in the node's session directory, named by that hash.

use super::Shared;
use ray_proto::{Empty, JobInfo, core_worker_client};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::OnceCell;

/// The executable each job's workers run here, once known.
pub(crate) type Executables = std::sync::Mutex<std::collections::HashMap<u32, Arc<OnceCell<PathBuf>>>>;

impl Shared {
    /// The file to start the job's workers from, fetched from its driver the
    /// first time if the driver runs on another machine.
    pub(crate) async fn worker_executable(&self, job: &JobInfo) -> Result<PathBuf, String> {
        if job.host_id.is_empty() || job.host_id == self.host_id {
            return Ok(PathBuf::from(&job.worker_executable));
        }
        let cell = self.executables.lock().unwrap_or_else(|p| p.into_inner()).entry(job.job_id).or_default().clone();
        cell.get_or_try_init(|| self.fetch_executable(job)).await.cloned()
    }

    async fn fetch_executable(&self, job: &JobInfo) -> Result<PathBuf, String> {
        let from_driver = |e: tonic::Status| {
            format!("cannot fetch the job's program from its driver at {}: {}", job.driver_address, e.message())
        };
        let channel = self.channel(&job.driver_address).map_err(from_driver)?;
        let mut stream = core_worker_client(channel).get_executable(Empty {}).await.map_err(from_driver)?.into_inner();
        let first = stream.message().await.map_err(from_driver)?.ok_or("the driver sent an empty program")?;
        let name = std::path::Path::new(&job.worker_executable)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "worker".into());
        let dir = self.config.session_dir.join("executables");
        let path = dir.join(format!("{}-{name}", &first.hash[..first.hash.len().min(16)]));
        if path.exists() {
            return Ok(path);
        }
        let mut bytes = Vec::with_capacity(first.size as usize);
        bytes.extend_from_slice(&first.data);
        while let Some(chunk) = stream.message().await.map_err(from_driver)? {
            bytes.extend_from_slice(&chunk.data);
        }
        let hash = first.hash;
        tokio::task::spawn_blocking(move || {
            if ray_abi::ids::hex(&Sha256::digest(&bytes)) != hash {
                return Err("the job's program arrived corrupted (sha256 mismatch)".to_string());
            }
            let io = |e: std::io::Error| format!("cannot store the job's program in {}: {e}", dir.display());
            std::fs::create_dir_all(&dir).map_err(io)?;
            let part = dir.join(format!(".{hash}.{}.part", std::process::id()));
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o755)
                .open(&part)
                .map_err(io)?;
            file.write_all(&bytes).map_err(io)?;
            file.sync_all().map_err(io)?;
            drop(file);
            std::fs::rename(&part, &path).map_err(io)?;
            tracing::info!("fetched the job's program ({} bytes) to {}", bytes.len(), path.display());
            Ok(path)
        })
        .await
        .map_err(|e| e.to_string())?
    }
}
