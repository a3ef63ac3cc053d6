//! Private files: the session root, session directories, logs and the caches
//! of code that workers load and run, readable and writable by this user only.
//!
//! A session directory holds the cluster token, logs (which show what tasks
//! print), and the cell libraries and programs that workers load and run. Anyone
//! who can write there can make workers run their code; anyone who can read there
//! has the token. So every directory rayrepl creates is 0700 and every file 0600
//! (a fetched program 0700), whatever the umask.
//!
//! The session root (`/tmp/rayrepl`, or `RAYREPL_TEMP_DIR`) sits in a directory
//! every user can write to, so someone else may have created it first, to read
//! our sessions or to plant a session that names their own head. It is used only
//! if it belongs to this user and no one else can write to it ([`check_root`]).
//!
//! A file that is read to decide whether to run it ([`open_private_file`]) is
//! opened without following a final symbolic link, and accepted only if it is a
//! regular file of this user's that no one else can write to; the caller then
//! reads (and hashes) it through the same open file.

use std::fs::{DirBuilder, File, Metadata, OpenOptions, Permissions};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The mode of every directory rayrepl creates.
pub const DIR_MODE: u32 = 0o700;

/// The mode of every file rayrepl creates (logs, tokens, cached libraries).
pub const FILE_MODE: u32 = 0o600;

/// Why a private directory or file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PrivateError {
    /// Creating, opening or reading failed.
    #[error("cannot {what} {}: {source}", path.display())]
    Io {
        /// What was being done (`create`, `open`, ...).
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The path belongs to another user.
    #[error(
        "{} belongs to {owner}, not to you ({me}), so rayrepl will not use it: whoever owns it could read \
         your cluster's token and change the code your workers run. {advice}",
        path.display()
    )]
    NotOurs {
        /// The path.
        path: PathBuf,
        /// Its owner, as `name (uid N)`.
        owner: String,
        /// This user, as `name (uid N)`.
        me: String,
        /// What to do instead.
        advice: String,
    },
    /// Users other than its owner can change what is at the path.
    #[error(
        "{} can be changed by other users (mode {mode:o}), so rayrepl will not use it: they could change the \
         code your workers run. {advice}",
        path.display()
    )]
    OpenToOthers {
        /// The path.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
        /// What to do instead.
        advice: String,
    },
    /// The path is not what it must be (a directory, a regular file).
    #[error("{} is {found}, not {expected}; remove it or {advice}", path.display())]
    WrongKind {
        /// The path.
        path: PathBuf,
        /// What it is.
        found: &'static str,
        /// What it must be.
        expected: &'static str,
        /// What else to do.
        advice: String,
    },
}

impl PrivateError {
    fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> PrivateError {
        let path = path.to_path_buf();
        move |source| PrivateError::Io { what, path, source }
    }
}

/// This process's effective user id, the owner of the files it creates.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// A user as `name (uid N)`, the name read from `/etc/passwd` when it is there.
pub fn describe_user(uid: u32) -> String {
    let name = std::fs::read_to_string("/etc/passwd").ok().and_then(|passwd| {
        passwd.lines().find_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            let id: u32 = fields.nth(1)?.parse().ok()?;
            (id == uid).then(|| name.to_string())
        })
    });
    match name {
        Some(name) => format!("{name} (uid {uid})"),
        None => format!("uid {uid}"),
    }
}

fn kind_of(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_symlink() {
        "a symbolic link"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_file() {
        "a file"
    } else {
        "a special file"
    }
}

/// What is wrong with `meta` as the metadata of something only this user may
/// change, if anything: its owner, then its mode. Pure, for the tests.
pub fn judge(path: &Path, meta_uid: u32, mode: u32, me: u32, advice: &str) -> Result<(), PrivateError> {
    if meta_uid != me {
        return Err(PrivateError::NotOurs {
            path: path.to_path_buf(),
            owner: describe_user(meta_uid),
            me: describe_user(me),
            advice: advice.to_string(),
        });
    }
    if mode & 0o022 != 0 {
        return Err(PrivateError::OpenToOthers {
            path: path.to_path_buf(),
            mode: mode & 0o7777,
            advice: advice.to_string(),
        });
    }
    Ok(())
}

/// Creates `path` and any missing parents with mode 0700, and checks that the
/// directory is this user's; one of ours that others could read is made 0700.
pub fn create_dir(path: &Path) -> Result<(), PrivateError> {
    DirBuilder::new().recursive(true).mode(DIR_MODE).create(path).map_err(PrivateError::io("create", path))?;
    make_private_dir(path, "remove it, or set RAYREPL_TEMP_DIR to a directory of your own")
}

/// Checks that the directory at `path` (not a link) is this user's and that
/// nobody else can write to it, and makes it 0700.
fn make_private_dir(path: &Path, advice: &str) -> Result<(), PrivateError> {
    let meta = std::fs::symlink_metadata(path).map_err(PrivateError::io("inspect", path))?;
    if !meta.is_dir() {
        return Err(PrivateError::WrongKind {
            path: path.to_path_buf(),
            found: kind_of(&meta),
            expected: "a directory",
            advice: advice.to_string(),
        });
    }
    judge(path, meta.uid(), meta.mode(), euid(), advice)?;
    if meta.mode() & 0o777 != DIR_MODE {
        std::fs::set_permissions(path, Permissions::from_mode(DIR_MODE)).map_err(PrivateError::io("restrict", path))?;
    }
    Ok(())
}

/// What to do about a session root that cannot be used.
fn root_advice(path: &Path) -> String {
    format!(
        "Set RAYREPL_TEMP_DIR to a directory of your own (for example `export RAYREPL_TEMP_DIR=$HOME/.cache/\
         rayrepl/sessions`), or, if {} is left over and nobody uses it, have its owner remove it",
        path.display()
    )
}

/// Checks the session root (`/tmp/rayrepl` or `RAYREPL_TEMP_DIR`) before a
/// session is created in it: creates it 0700 if it is missing; refuses one that
/// belongs to another user or that others can write to; makes one of ours 0700.
/// A symbolic link is followed only if it is ours too.
pub fn check_root(path: &Path) -> Result<(), PrivateError> {
    let advice = root_advice(path);
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // Another user may create it between our look and our mkdir: the
            // checks below run on whatever is there afterwards.
            DirBuilder::new().recursive(true).mode(DIR_MODE).create(path).map_err(PrivateError::io("create", path))?;
        }
        Err(e) => return Err(PrivateError::Io { what: "inspect", path: path.to_path_buf(), source: e }),
        Ok(meta) if meta.file_type().is_symlink() => {
            // Whoever owns the link chooses where it points.
            if meta.uid() != euid() {
                return judge(path, meta.uid(), 0, euid(), &advice);
            }
            let target = std::fs::canonicalize(path).map_err(PrivateError::io("follow", path))?;
            return make_private_dir(&target, &advice);
        }
        Ok(_) => {}
    }
    make_private_dir(path, &advice)
}

/// Opens `path` to append (`append`) or to write from the start, creating it
/// 0600; an existing file must be this user's, and is made 0600. A symbolic
/// link at `path` is refused.
pub fn create_file(path: &Path, append: bool) -> Result<File, PrivateError> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .append(append)
        .truncate(!append)
        .mode(FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(PrivateError::io("open", path))?;
    let meta = file.metadata().map_err(PrivateError::io("inspect", path))?;
    // Ours or not decides; the mode of one of ours is put right below.
    judge(path, meta.uid(), 0, euid(), "remove it and try again")?;
    if meta.mode() & 0o777 != FILE_MODE {
        file.set_permissions(Permissions::from_mode(FILE_MODE)).map_err(PrivateError::io("restrict", path))?;
    }
    Ok(file)
}

/// Writes `bytes` to a new file at `path` with `mode` (0600, or 0700 for a
/// program), written aside and renamed into place so it never appears half
/// written. The directory must be private already.
pub fn write_file_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<(), PrivateError> {
    use std::io::Write;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let part = path.with_file_name(format!(".{name}.{}.{}.part", std::process::id(), rand::random::<u32>()));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&part)
            .map_err(PrivateError::io("create", &part))?;
        file.write_all(bytes).map_err(PrivateError::io("write", &part))?;
        file.sync_all().map_err(PrivateError::io("write", &part))?;
        std::fs::rename(&part, path).map_err(PrivateError::io("place", path))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&part);
    }
    result
}

/// Opens `path` to read it, without following a symbolic link, and checks
/// through the open file that it is a regular file of this user's that nobody
/// else can write to. Read (and hash) the file through what this returns, so
/// the bytes checked are the bytes of the file checked.
pub fn open_private_file(path: &Path, advice: &str) -> Result<File, PrivateError> {
    let file = OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC).open(path).map_err(
        |source| match source.raw_os_error() {
            // O_NOFOLLOW on a link fails with ELOOP.
            Some(libc::ELOOP) => PrivateError::WrongKind {
                path: path.to_path_buf(),
                found: "a symbolic link",
                expected: "a regular file",
                advice: advice.to_string(),
            },
            _ => PrivateError::Io { what: "open", path: path.to_path_buf(), source },
        },
    )?;
    let meta = file.metadata().map_err(PrivateError::io("inspect", path))?;
    if !meta.is_file() {
        return Err(PrivateError::WrongKind {
            path: path.to_path_buf(),
            found: kind_of(&meta),
            expected: "a regular file",
            advice: advice.to_string(),
        });
    }
    judge(path, meta.uid(), meta.mode(), euid(), advice)?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode_of(path: &Path) -> u32 {
        std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
    }

    #[test]
    fn owner_then_mode_decide() {
        let p = Path::new("/tmp/rayrepl");
        assert!(judge(p, 1000, 0o40700, 1000, "x").is_ok());
        assert!(judge(p, 1000, 0o40755, 1000, "x").is_ok(), "readable by others is tightened, not refused");
        let not_ours = judge(p, 65534, 0o40700, 1000, "Set RAYREPL_TEMP_DIR").unwrap_err().to_string();
        assert!(not_ours.contains("/tmp/rayrepl belongs to"), "{not_ours}");
        assert!(not_ours.contains("uid 65534"), "{not_ours}");
        assert!(not_ours.contains("Set RAYREPL_TEMP_DIR"), "{not_ours}");
        let open = judge(p, 1000, 0o41777, 1000, "chmod it").unwrap_err().to_string();
        assert!(open.contains("mode 1777"), "{open}");
        assert!(matches!(judge(p, 1000, 0o40770, 1000, ""), Err(PrivateError::OpenToOthers { .. })));
        assert!(matches!(judge(p, 0, 0o41777, 1000, ""), Err(PrivateError::NotOurs { .. })));
    }

    #[test]
    fn created_dirs_and_files_are_private_whatever_was_there() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        create_dir(&dir).unwrap();
        assert_eq!(mode_of(&tmp.path().join("a")), 0o700);
        assert_eq!(mode_of(&dir), 0o700);
        std::fs::set_permissions(&dir, Permissions::from_mode(0o755)).unwrap();
        create_dir(&dir).unwrap();
        assert_eq!(mode_of(&dir), 0o700, "an existing dir of ours is tightened");

        let log = dir.join("x.log");
        drop(create_file(&log, true).unwrap());
        assert_eq!(mode_of(&log), 0o600);
        std::fs::set_permissions(&log, Permissions::from_mode(0o644)).unwrap();
        drop(create_file(&log, true).unwrap());
        assert_eq!(mode_of(&log), 0o600, "an existing file of ours is tightened");

        let link = dir.join("link.log");
        std::os::unix::fs::symlink(&log, &link).unwrap();
        assert!(create_file(&link, true).is_err(), "a link is not followed");

        write_file_atomically(&dir.join("prog"), b"bytes", 0o700).unwrap();
        assert_eq!(mode_of(&dir.join("prog")), 0o700);
        assert_eq!(std::fs::read(dir.join("prog")).unwrap(), b"bytes");
    }

    #[test]
    fn a_file_read_to_be_run_must_be_ours_and_closed_to_others() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("lib.so");
        write_file_atomically(&file, b"elf", FILE_MODE).unwrap();
        assert!(open_private_file(&file, "x").is_ok());
        std::fs::set_permissions(&file, Permissions::from_mode(0o666)).unwrap();
        let err = open_private_file(&file, "delete it").unwrap_err().to_string();
        assert!(err.contains("mode 666") && err.contains("delete it"), "{err}");
        let link = tmp.path().join("link.so");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let err = open_private_file(&link, "delete it").unwrap_err().to_string();
        assert!(err.contains("is a symbolic link, not a regular file"), "{err}");
        let err = open_private_file(tmp.path(), "x").unwrap_err().to_string();
        assert!(err.contains("is a directory, not a regular file"), "{err}");
    }

    #[test]
    fn the_root_is_created_private_and_a_shared_one_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("rayrepl");
        check_root(&root).unwrap();
        assert_eq!(mode_of(&root), 0o700);
        std::fs::set_permissions(&root, Permissions::from_mode(0o755)).unwrap();
        check_root(&root).unwrap();
        assert_eq!(mode_of(&root), 0o700);
        std::fs::set_permissions(&root, Permissions::from_mode(0o1777)).unwrap();
        let err = check_root(&root).unwrap_err().to_string();
        assert!(err.contains("can be changed by other users (mode 1777)"), "{err}");
        assert!(err.contains("RAYREPL_TEMP_DIR"), "{err}");
        std::fs::set_permissions(&root, Permissions::from_mode(0o700)).unwrap();
        // A link of ours to a directory of ours is fine.
        let link = tmp.path().join("rayrepl-link");
        std::os::unix::fs::symlink(&root, &link).unwrap();
        check_root(&link).unwrap();
        // A file where the root should be is named as such.
        let file = tmp.path().join("file");
        std::fs::write(&file, b"").unwrap();
        let err = check_root(&file).unwrap_err().to_string();
        assert!(err.contains("is a file, not a directory"), "{err}");
    }

    #[test]
    fn a_root_of_another_users_is_refused_naming_its_owner() {
        if euid() != 0 {
            println!("skipped: only root can give a directory to another user (uid 65534)");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("rayrepl");
        std::fs::create_dir(&root).unwrap();
        std::os::unix::fs::chown(&root, Some(65534), Some(65534)).unwrap();
        let err = check_root(&root).unwrap_err().to_string();
        assert!(err.contains(&format!("{} belongs to", root.display())), "{err}");
        assert!(err.contains("uid 65534"), "{err}");
        assert!(err.contains("RAYREPL_TEMP_DIR"), "{err}");
        // Nor may another user's link choose where the root is.
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(tmp.path(), &link).unwrap();
        std::os::unix::fs::lchown(&link, Some(65534), Some(65534)).unwrap();
        assert!(matches!(check_root(&link), Err(PrivateError::NotOurs { .. })));
    }
}
