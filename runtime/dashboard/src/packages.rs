//! Working directories, as zip packages stored by content hash.
//!
//! Ray's clients zip a job's working directory, name it by a hash of its
//! contents (`_ray_pkg_<hash>.zip`), ask whether the cluster has it (`GET
//! /api/packages/gcs/<name>`) and upload it only if not (`PUT`). The head keeps
//! packages under `<session>/packages/` and unpacks each once, under
//! `<session>/runtime_resources/working_dir_files/`, where jobs run in it.
//!
//! A package comes from the network, so it is checked before it is kept: at
//! most [`MAX_PACKAGE_BYTES`] (Ray's 500 MiB), a readable zip, no entry whose
//! path or link leaves the package's directory, and at most
//! [`MAX_UNPACKED_BYTES`] unpacked, so a small zip cannot fill the disk.

use crate::error::DashboardError;
use ray_proto::private;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

/// The largest package accepted, as Ray's default (`RAY_max_package_size`).
pub const MAX_PACKAGE_BYTES: usize = 500 << 20;
/// The most a package may unpack to.
pub const MAX_UNPACKED_BYTES: u64 = 4 << 30;
/// The only protocol packages travel under: Ray's `gcs://` URIs.
pub const PROTOCOL: &str = "gcs";

/// The packages a head holds.
#[derive(Clone, Debug)]
pub struct Packages {
    stored: PathBuf,
    unpacked: PathBuf,
}

/// Whether `name` is a package name Ray's clients make: `_ray_pkg_` then
/// letters and digits, then `.zip`. Anything else (a path, `..`) is refused
/// before it gets near the file system.
pub fn valid_name(name: &str) -> bool {
    name.strip_prefix("_ray_pkg_")
        .and_then(|rest| rest.strip_suffix(".zip"))
        .is_some_and(|hash| !hash.is_empty() && hash.len() <= 128 && hash.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// The package name in a `gcs://_ray_pkg_<hash>.zip` URI.
pub fn name_in_uri(uri: &str) -> Result<&str, DashboardError> {
    let name = uri.strip_prefix("gcs://").ok_or_else(|| {
        DashboardError::BadRequest(format!(
            "working_dir {uri:?} is not an uploaded package (gcs://_ray_pkg_<hash>.zip); pass a local directory \
             to the client (`--working-dir DIR`) and it uploads it"
        ))
    })?;
    if valid_name(name) {
        Ok(name)
    } else {
        Err(DashboardError::BadRequest(format!("{uri:?} is not a package name (_ray_pkg_<hash>.zip)")))
    }
}

fn checked(protocol: &str, name: &str) -> Result<(), DashboardError> {
    if protocol != PROTOCOL {
        return Err(DashboardError::BadRequest(format!(
            "packages are stored under the {PROTOCOL:?} protocol, not {protocol:?}"
        )));
    }
    if !valid_name(name) {
        return Err(DashboardError::BadRequest(format!(
            "{name:?} is not a package name: expected _ray_pkg_<hash>.zip"
        )));
    }
    Ok(())
}

impl Packages {
    /// Packages kept in `session_dir`.
    pub fn new(session_dir: &Path) -> Self {
        Packages {
            stored: session_dir.join("packages"),
            unpacked: session_dir.join("runtime_resources").join("working_dir_files"),
        }
    }

    /// Whether package `name` under `protocol` is stored.
    pub fn exists(&self, protocol: &str, name: &str) -> Result<bool, DashboardError> {
        checked(protocol, name)?;
        Ok(self.stored.join(name).is_file())
    }

    /// Checks `bytes` as a package and stores it as `name`. Blocking: call it
    /// from a blocking thread.
    pub fn store(&self, protocol: &str, name: &str, bytes: &[u8]) -> Result<(), DashboardError> {
        checked(protocol, name)?;
        inspect(bytes)?;
        private::create_dir(&self.stored).map_err(DashboardError::private)?;
        // Written aside and renamed, so a half-written package is never found.
        private::write_file_atomically(&self.stored.join(name), bytes, private::FILE_MODE)
            .map_err(DashboardError::private)
    }

    /// The directory package `name` unpacks to, unpacking it the first time.
    /// Blocking: call it from a blocking thread.
    pub fn unpacked(&self, name: &str) -> Result<PathBuf, DashboardError> {
        checked(PROTOCOL, name)?;
        let stem = name.trim_end_matches(".zip");
        let dir = self.unpacked.join(stem);
        if dir.is_dir() {
            return Ok(dir);
        }
        let bytes = std::fs::read(self.stored.join(name)).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => DashboardError::BadRequest(format!(
                "package gcs://{name} was never uploaded; upload it first (PUT /api/packages/gcs/{name})"
            )),
            _ => DashboardError::Io { what: format!("cannot read package {name}"), source: e },
        })?;
        let partial = self.unpacked.join(format!(".{stem}.{}", rand::random::<u64>()));
        // Private: the directory, and so all that is unpacked into it.
        private::create_dir(&partial).map_err(DashboardError::private)?;
        let result = unpack(&bytes, &partial).and_then(|()| {
            std::fs::rename(&partial, &dir).or_else(|e| {
                // Another job unpacked the same package meanwhile: use theirs.
                if dir.is_dir() {
                    let _ = std::fs::remove_dir_all(&partial);
                    Ok(())
                } else {
                    Err(DashboardError::Io { what: "cannot place the working directory".into(), source: e })
                }
            })
        });
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&partial);
        }
        result.map(|()| dir)
    }
}

/// What each entry of a package will become.
enum Entry {
    Dir(PathBuf),
    File { path: PathBuf, mode: u32 },
    Link { path: PathBuf, target: PathBuf },
}

/// Reads a package's directory: every entry's place inside the package, or why
/// the package is refused.
fn inspect(bytes: &[u8]) -> Result<Vec<Entry>, DashboardError> {
    let bad = |why: String| DashboardError::BadRequest(format!("the package is refused: {why}"));
    let mut archive =
        zip::ZipArchive::new(std::io::Cursor::new(bytes)).map_err(|e| bad(format!("it is not a zip file ({e})")))?;
    let mut entries = Vec::with_capacity(archive.len());
    let mut total: u64 = 0;
    for i in 0..archive.len() {
        let mut file = archive.by_index(i).map_err(|e| bad(format!("entry {i} cannot be read ({e})")))?;
        let raw = file.name().map(|n| n.into_owned()).unwrap_or_else(|_| format!("entry {i}"));
        // An absolute name would be read as relative by some tools and not by
        // others: refused, as is any `..` that climbs out.
        let path = file
            .enclosed_name()
            .filter(|_| !raw.starts_with('/') && !raw.starts_with('\\'))
            .ok_or_else(|| bad(format!("entry {raw:?} escapes the package's directory")))?;
        total = total.saturating_add(file.size());
        if total > MAX_UNPACKED_BYTES {
            return Err(bad(format!("it unpacks to more than {} GiB", MAX_UNPACKED_BYTES >> 30)));
        }
        let mode = file.unix_mode().unwrap_or(0o644);
        entries.push(if file.is_dir() {
            Entry::Dir(path)
        } else if file.is_symlink() {
            let mut target = String::new();
            file.read_to_string(&mut target).map_err(|e| bad(format!("link {raw:?} cannot be read ({e})")))?;
            let target = PathBuf::from(target);
            if !stays_inside(&path, &target) {
                return Err(bad(format!("link {raw:?} points outside the package ({})", target.display())));
            }
            Entry::Link { path, target }
        } else {
            Entry::File { path, mode }
        });
    }
    Ok(entries)
}

/// Whether a link at `link` (relative to the package root) to `target` resolves
/// inside the package.
fn stays_inside(link: &Path, target: &Path) -> bool {
    let mut depth: usize = link.parent().map(|p| p.components().count()).unwrap_or(0);
    for c in target.components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return false,
            },
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

/// Unpacks a package (already inspected on upload, and checked again here)
/// into the empty directory `into`.
fn unpack(bytes: &[u8], into: &Path) -> Result<(), DashboardError> {
    let entries = inspect(bytes)?;
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map_err(|e| DashboardError::BadRequest(format!("the package is not a zip file ({e})")))?;
    let io = |what: &Path| DashboardError::io(format!("cannot unpack {}", what.display()));
    for (i, entry) in entries.into_iter().enumerate() {
        match entry {
            Entry::Dir(path) => std::fs::create_dir_all(into.join(&path)).map_err(io(&path))?,
            Entry::Link { path, target } => {
                let at = into.join(&path);
                if let Some(parent) = at.parent() {
                    std::fs::create_dir_all(parent).map_err(io(&path))?;
                }
                std::os::unix::fs::symlink(&target, &at).map_err(io(&path))?;
            }
            Entry::File { path, mode } => {
                let at = into.join(&path);
                if let Some(parent) = at.parent() {
                    std::fs::create_dir_all(parent).map_err(io(&path))?;
                }
                let mut file = archive.by_index(i).map_err(|e| {
                    DashboardError::BadRequest(format!("entry {} cannot be read ({e})", path.display()))
                })?;
                let mut out = std::fs::File::create(&at).map_err(io(&path))?;
                // Bounded again while writing: a zip's declared sizes are not to be trusted.
                let copied =
                    std::io::copy(&mut (&mut file).take(MAX_UNPACKED_BYTES + 1), &mut out).map_err(io(&path))?;
                if copied > MAX_UNPACKED_BYTES {
                    return Err(DashboardError::BadRequest("the package unpacks to more than it declares".into()));
                }
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&at, std::fs::Permissions::from_mode(mode & 0o700 | 0o600))
                    .map_err(io(&path))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use zip::write::SimpleFileOptions;

    fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        for (name, data) in entries {
            out.start_file(*name, SimpleFileOptions::default()).unwrap();
            out.write_all(data).unwrap();
        }
        out.finish().unwrap().into_inner()
    }

    #[test]
    fn names_are_rays_package_names_only() {
        assert!(valid_name("_ray_pkg_0123abcdef.zip"));
        for bad in ["", "_ray_pkg_.zip", "../_ray_pkg_a.zip", "_ray_pkg_a/b.zip", "_ray_pkg_a.zip.zip", "x.zip"] {
            assert!(!valid_name(bad), "{bad}");
        }
        assert!(name_in_uri("gcs://_ray_pkg_ab.zip").is_ok());
        assert!(name_in_uri("/home/me/project").is_err());
    }

    #[test]
    fn a_package_is_stored_then_unpacked_once() {
        let session = tempfile::tempdir().unwrap();
        let packages = Packages::new(session.path());
        let zip = zip_of(&[("Cargo.toml", b"[package]\n"), ("src/main.rs", b"fn main() {}\n")]);
        assert!(!packages.exists("gcs", "_ray_pkg_1.zip").unwrap());
        packages.store("gcs", "_ray_pkg_1.zip", &zip).unwrap();
        assert!(packages.exists("gcs", "_ray_pkg_1.zip").unwrap());
        let dir = packages.unpacked("_ray_pkg_1.zip").unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("src/main.rs")).unwrap(), "fn main() {}\n");
        assert_eq!(packages.unpacked("_ray_pkg_1.zip").unwrap(), dir);
    }

    #[test]
    fn escaping_entries_and_non_zips_are_refused_and_nothing_is_written() {
        let session = tempfile::tempdir().unwrap();
        let packages = Packages::new(session.path());
        for bytes in [zip_of(&[("../evil", b"x")]), zip_of(&[("/etc/evil", b"x")]), b"not a zip".to_vec()] {
            let err = packages.store("gcs", "_ray_pkg_2.zip", &bytes).unwrap_err();
            assert!(matches!(err, DashboardError::BadRequest(_)), "{err}");
        }
        assert!(!session.path().join("packages").exists());
        assert!(matches!(packages.store("http", "_ray_pkg_2.zip", b""), Err(DashboardError::BadRequest(_))));
        assert!(matches!(packages.unpacked("_ray_pkg_3.zip"), Err(DashboardError::BadRequest(_))));
    }

    #[test]
    fn links_must_stay_inside() {
        assert!(stays_inside(Path::new("a/link"), Path::new("../b")));
        assert!(stays_inside(Path::new("a/link"), Path::new("c/./d")));
        assert!(!stays_inside(Path::new("a/link"), Path::new("../../b")));
        assert!(!stays_inside(Path::new("link"), Path::new("/etc/passwd")));
    }
}
