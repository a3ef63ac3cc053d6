//! How big a node's store may be, given the filesystem it lives on.
//!
//! The arena is a sparse file, so creating it never fails for want of space: the
//! shortfall shows up later, as SIGBUS in whichever process first writes a page
//! that tmpfs cannot back. A 64 MiB store on an 8 MiB `/dev/shm` killed a driver
//! on its first large put. Docker gives containers a 64 MiB `/dev/shm` by
//! default, while the default store is 30% of memory. So at start the node
//! compares the store with the free space where it lives ([`size_store`]): a
//! size the user asked for that cannot fit is refused, and the default is shrunk
//! to fit, with a warning. Pages are then backed as objects are reserved (see
//! [`crate::arena`]), so space taken by others later makes a put fail with
//! `ObjectStoreFull` instead of a signal.

use crate::StoreError;
use std::path::Path;

/// Of the free space, what the default store leaves to others.
const LEAVE_FREE_PERCENT: u64 = 10;
/// Below this, a store is not worth having: the node refuses to start.
pub const MIN_STORE_BYTES: u64 = 16 << 20;

/// The store's size, and whether it had to be shrunk from the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreSize {
    /// It fits as asked (or as the default).
    Fits(u64),
    /// The default did not fit; the store is `to` instead of `from`.
    Shrunk {
        /// The default size.
        from: u64,
        /// The size used.
        to: u64,
    },
}

impl StoreSize {
    /// The size used.
    pub fn bytes(self) -> u64 {
        match self {
            StoreSize::Fits(n) | StoreSize::Shrunk { to: n, .. } => n,
        }
    }
}

/// Sizes a store in `dir`, which has `free` bytes free: `requested` (the user's
/// `--object-store-memory`) or else `default`.
pub fn size_store(requested: Option<u64>, default: u64, free: u64, dir: &Path) -> Result<StoreSize, StoreError> {
    let too_small = |wanted: u64| StoreError::NoRoom { dir: dir.to_path_buf(), wanted, free };
    match requested {
        Some(wanted) if wanted <= free => Ok(StoreSize::Fits(wanted)),
        Some(wanted) => Err(too_small(wanted)),
        None => {
            let usable = free - free * LEAVE_FREE_PERCENT / 100;
            if default <= usable {
                Ok(StoreSize::Fits(default))
            } else if usable >= MIN_STORE_BYTES {
                Ok(StoreSize::Shrunk { from: default, to: usable })
            } else {
                Err(too_small(MIN_STORE_BYTES))
            }
        }
    }
}

/// The default store: 30% of memory, as Ray's, at most 200 GiB.
pub fn default_size() -> u64 {
    // SAFETY: sysconf has no memory-safety requirements.
    let pages = unsafe { libc::sysconf(libc::_SC_PHYS_PAGES) };
    // SAFETY: as above.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let total = (pages.max(0) as u64).saturating_mul(page.max(0) as u64);
    (total / 10 * 3).clamp(64 << 20, 200 << 30)
}

/// The bytes an unprivileged process may still write on the filesystem of `dir`.
pub fn free_space(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "a path with a NUL byte"))?;
    // SAFETY: statvfs is plain old data; all zeros is a valid value.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated and `stat` is a statvfs for the call to fill.
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn an_asked_for_size_that_cannot_fit_is_refused_naming_the_way_out() {
        let dir = Path::new("/dev/shm");
        assert_eq!(size_store(Some(64 * MIB), 0, 64 * MIB, dir).unwrap(), StoreSize::Fits(64 * MIB));
        let err = size_store(Some(64 * MIB), 0, 8 * MIB, dir).unwrap_err().to_string();
        for needed in ["/dev/shm", "--object-store-memory", "--plasma-directory", "64.0 MiB", "8.0 MiB"] {
            assert!(err.contains(needed), "{needed:?} missing from: {err}");
        }
    }

    #[test]
    fn the_default_shrinks_to_fit_and_refuses_below_the_minimum() {
        let dir = Path::new("/dev/shm");
        assert_eq!(size_store(None, 100 * MIB, 1000 * MIB, dir).unwrap(), StoreSize::Fits(100 * MIB));
        assert_eq!(
            size_store(None, 1000 * MIB, 100 * MIB, dir).unwrap(),
            StoreSize::Shrunk { from: 1000 * MIB, to: 90 * MIB }
        );
        assert!(size_store(None, 1000 * MIB, 10 * MIB, dir).is_err());
    }

    proptest! {
        /// A store is never bigger than the free space, the user's size is kept
        /// or refused (never changed), and the default only ever shrinks.
        #[test]
        fn a_store_always_fits(requested in proptest::option::of(0u64..1 << 40), default in 0u64..1 << 40, free in 0u64..1 << 40) {
            match size_store(requested, default, free, Path::new("/x")) {
                Ok(size) => {
                    prop_assert!(size.bytes() <= free);
                    match (requested, size) {
                        (Some(r), s) => prop_assert_eq!(s, StoreSize::Fits(r)),
                        (None, StoreSize::Fits(n)) => prop_assert_eq!(n, default),
                        (None, StoreSize::Shrunk { from, to }) => {
                            prop_assert_eq!(from, default);
                            prop_assert!(to < default && to >= MIN_STORE_BYTES);
                        }
                    }
                }
                Err(_) => {
                    let refused = match requested {
                        Some(r) => r > free,
                        None => free - free * LEAVE_FREE_PERCENT / 100 < MIN_STORE_BYTES,
                    };
                    prop_assert!(refused, "refused a store that fits");
                }
            }
        }
    }
}
