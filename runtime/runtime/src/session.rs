//! Session directories: where a cluster keeps its token, its process list and
//! its logs, as Ray's `/tmp/ray/session_*` do.
//!
//! `rayrepl start --head` points `/tmp/rayrepl/session_latest` at its session, so
//! drivers and `rayrepl status|stop` on the same machine find the cluster and its
//! token without flags.

use ray_abi::RayError;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The file in a session directory that holds the head's dashboard address
/// (`http://127.0.0.1:8265`), written by the head once it serves.
pub const DASHBOARD_URL: &str = "dashboard_url";

/// Root of all sessions on this machine (override with `RAYREPL_TEMP_DIR`).
pub fn root() -> PathBuf {
    std::env::var_os("RAYREPL_TEMP_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/tmp/rayrepl"))
}

/// The session `rayrepl start --head` created last.
pub fn latest() -> PathBuf {
    root().join("session_latest")
}

/// A new, empty session directory.
pub fn create() -> Result<PathBuf, RayError> {
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    let dir = root().join(format!("session_{stamp}_{}", std::process::id()));
    std::fs::create_dir_all(dir.join("logs"))
        .map_err(|e| RayError::Startup(format!("cannot create session directory {}: {e}", dir.display())))?;
    Ok(dir)
}

/// A fresh random cluster token.
pub fn new_token() -> String {
    let bytes: [u8; 24] = rand::random();
    ray_abi::ids::hex(&bytes)
}

/// Writes `contents` to `dir/name` readable only by this user (0600).
pub fn write_private(dir: &Path, name: &str, contents: &str) -> Result<PathBuf, RayError> {
    let path = dir.join(name);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| RayError::Startup(format!("cannot write {}: {e}", path.display())))?;
    f.write_all(contents.as_bytes()).map_err(|e| RayError::Startup(format!("cannot write {}: {e}", path.display())))?;
    Ok(path)
}

/// Reads `dir/name`, trimmed.
pub fn read(dir: &Path, name: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(name)).ok().map(|s| s.trim().to_string())
}

/// Finds the token for a cluster: explicit, then `RAYREPL_TOKEN`, then
/// `RAYREPL_TOKEN_FILE`, then the latest session's token if its head is `address`.
pub fn find_token(explicit: Option<&str>, address: &str) -> Result<String, RayError> {
    if let Some(t) = explicit.filter(|t| !t.is_empty()) {
        return Ok(t.to_string());
    }
    if let Ok(t) = std::env::var("RAYREPL_TOKEN")
        && !t.is_empty()
    {
        return Ok(t);
    }
    if let Ok(f) = std::env::var("RAYREPL_TOKEN_FILE") {
        return std::fs::read_to_string(&f)
            .map(|s| s.trim().to_string())
            .map_err(|e| RayError::Startup(format!("cannot read RAYREPL_TOKEN_FILE {f}: {e}")));
    }
    // The latest session first, then every session on this machine: a REPL's or
    // program's embedded cluster is not the latest `start --head`, but its
    // directory holds its token all the same.
    let sessions = std::fs::read_dir(root()).into_iter().flatten().flatten().map(|e| e.path()).filter(|p| {
        p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("session_") && n != "session_latest")
    });
    for dir in std::iter::once(latest()).chain(sessions) {
        if read(&dir, "head_address").is_some_and(|head| same_address(&head, address))
            && let Some(t) = read(&dir, "token")
        {
            return Ok(t);
        }
    }
    Err(RayError::Unauthenticated {
        detail: format!(
            "no token for the cluster at {address}: set RAYREPL_TOKEN, or RAYREPL_TOKEN_FILE to the \
             session's token file"
        ),
    })
}

fn same_address(a: &str, b: &str) -> bool {
    let norm = |s: &str| s.replace("localhost", "127.0.0.1");
    norm(a) == norm(b)
}
