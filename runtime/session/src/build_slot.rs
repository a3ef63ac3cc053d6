//! Build directories that outlive a session.
//!
//! evcxr compiles cells in its temporary directory, and the `ray` dependency with
//! them: 30 s or more, in every new session. A persistent directory lets cargo
//! reuse the built dependency, so a warm session's first cell takes about a
//! second. Two sessions compiling in one directory would corrupt each other, so
//! each running session holds an exclusive lock on one numbered slot.

use crate::SessionError;
use std::fs::File;
use std::path::{Path, PathBuf};

/// Slots tried before giving up; more concurrent sessions than this is unusual.
const MAX_SLOTS: usize = 16;
/// Written once a slot has built the `ray` crate.
const WARM_MARK: &str = "ray-prelude-built";

/// A locked build directory, released when dropped.
pub struct BuildSlot {
    path: PathBuf,
    _lock: File,
}

impl BuildSlot {
    /// Locks the first free slot under `root`, creating it if needed.
    pub fn acquire(root: &Path) -> Result<BuildSlot, SessionError> {
        let fail = |detail: String| SessionError::BuildDir { path: root.to_path_buf(), detail };
        std::fs::create_dir_all(root).map_err(|e| fail(e.to_string()))?;
        for n in 0..MAX_SLOTS {
            let path = root.join(format!("slot-{n}"));
            let lock = File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(root.join(format!("slot-{n}.lock")))
                .map_err(|e| fail(e.to_string()))?;
            if lock.try_lock().is_ok() {
                std::fs::create_dir_all(&path).map_err(|e| fail(e.to_string()))?;
                return Ok(BuildSlot { path, _lock: lock });
            }
        }
        Err(fail(format!("all {MAX_SLOTS} build slots are in use by other sessions")))
    }

    /// The directory evcxr works in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether this slot has built the `ray` crate before.
    pub fn is_warm(&self) -> bool {
        self.path.join(WARM_MARK).exists()
    }

    /// Records that the `ray` crate is built here.
    pub fn mark_warm(&self) {
        let _ = std::fs::write(self.path.join(WARM_MARK), b"");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_sessions_get_different_slots_and_reuse_freed_ones() {
        let root = tempfile::tempdir().unwrap();
        let a = BuildSlot::acquire(root.path()).unwrap();
        let b = BuildSlot::acquire(root.path()).unwrap();
        assert_ne!(a.path(), b.path());
        let a_path = a.path().to_path_buf();
        assert!(!a.is_warm());
        a.mark_warm();
        drop(a);
        let c = BuildSlot::acquire(root.path()).unwrap();
        assert_eq!(c.path(), a_path);
        assert!(c.is_warm());
    }
}
