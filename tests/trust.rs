//! The trust boundary on one machine, with real processes (issue 21, part 4):
//! a worker refuses a shared library that is not a rayrepl cell library before
//! any of its code runs, and a cached cell library that changed after it was
//! fetched; session directories and logs are private; a session root that
//! belongs to another user, or that others can write to, is refused.
//!
//! The libraries are built here with the C compiler (Rust's linker on Linux).
//! Each has a constructor that leaves a file behind when it runs in a worker, so
//! a test can tell "refused before loading" from "loaded, then failed".

mod support;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use support::*;

/// A shared library built for a test, and the directory its constructor
/// marks when a worker loads it.
struct Library {
    dir: tempfile::TempDir,
    path: PathBuf,
}

impl Library {
    /// Builds a library whose trampoline `__ray_task_probe` returns its
    /// argument (the scenario passes 42), with
    /// rayrepl's mark for this build if `marked`.
    fn build(marked: bool) -> Library {
        let dir = tempfile::tempdir().unwrap();
        let probes = dir.path().join("probes");
        std::fs::create_dir(&probes).unwrap();
        let mut source = format!(
            r#"#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
__attribute__((constructor)) static void probe(void) {{
    const char *role = getenv("RAYREPL_ROLE");
    if (role && strcmp(role, "worker") == 0) {{
        char path[4096];
        snprintf(path, sizeof path, "%s/loaded-%d", "{}", (int)getpid());
        FILE *f = fopen(path, "w");
        if (f) fclose(f);
    }}
}}
struct slice {{ const unsigned char *ptr; size_t len; }};
struct task_call {{ const struct slice *args; size_t n_args; void *ctx; const char *host; void *instance; }};
typedef void (*task_return)(void *, const struct slice *, size_t, const void *, size_t);
/* Hands its one argument (an encoded u64) back as its result, through the host's table. */
__attribute__((visibility("default"))) void __ray_task_probe(const struct task_call *call) {{
    task_return ret = *(task_return const *)(call->host + {});
    ret(call->ctx, call->args, 1, 0, 0);
}}
"#,
            probes.display(),
            std::mem::offset_of!(ray_abi::HostTable, task_return)
        );
        if marked {
            let mark = ray_abi::cell_marker::MARK;
            let bytes: Vec<String> = mark.iter().map(|b| b.to_string()).collect();
            source.push_str(&format!(
                "__attribute__((visibility(\"default\"))) const unsigned char {}[{}] = {{{}}};\n",
                ray_abi::cell_marker::SYMBOL,
                mark.len(),
                bytes.join(",")
            ));
        }
        std::fs::write(dir.path().join("probe.c"), source).unwrap();
        let path = dir.path().join(if marked { "libmarked.so" } else { "libforeign.so" });
        let out = Command::new("cc")
            .args(["-shared", "-fPIC", "-o"])
            .arg(&path)
            .arg(dir.path().join("probe.c"))
            .output()
            .expect("the C compiler `cc` (Rust's linker) runs");
        assert!(out.status.success(), "cc failed: {}", String::from_utf8_lossy(&out.stderr));
        Library { dir, path }
    }

    /// The workers that ran the library's constructor.
    fn loaded_by(&self) -> Vec<String> {
        std::fs::read_dir(self.dir.path().join("probes"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    }

    fn forget_loads(&self) {
        for e in std::fs::read_dir(self.dir.path().join("probes")).unwrap().flatten() {
            std::fs::remove_file(e.path()).unwrap();
        }
    }
}

/// Runs the `foreign_library` scenario with `library`, on the cluster at
/// `address` (or an embedded one), with sessions under `root`; its `result=`.
fn submit_from(library: &Library, root: &Path, address: Option<&str>) -> String {
    let lib = library.path.to_str().unwrap();
    let mut env = vec![("LIBRARY", lib), ("SYMBOL", "__ray_task_probe"), ("RAYREPL_TEMP_DIR", root.to_str().unwrap())];
    if let Some(a) = address {
        env.push(("RAYREPL_ADDRESS", a));
    }
    scenario_with("foreign_library", &env).line("result")
}

fn mode_of(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).mode() & 0o7777
}

/// Every directory and file under `dir`, links not followed.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let path = e.path();
        out.push(path.clone());
        if e.file_type().unwrap().is_dir() {
            walk(&path, out);
        }
    }
}

#[test]
fn a_library_without_the_mark_is_refused_before_any_of_it_runs() {
    // The program's own (embedded) cluster: it stops with the program.
    let root = tempfile::tempdir().unwrap();
    let library = Library::build(false);
    let result = submit_from(&library, root.path(), None);
    assert!(result.contains("is not a rayrepl cell library"), "{result}");
    assert!(result.contains(ray_abi::cell_marker::SYMBOL), "{result}");
    assert!(result.contains("without loading it"), "{result}");
    assert!(library.loaded_by().is_empty(), "a worker ran its constructor: {:?}", library.loaded_by());
}

#[test]
fn a_cached_library_that_changed_is_refused_at_its_next_load() {
    let root = session_root();
    let address = start_head(root.path(), "2");
    let library = Library::build(true);

    // A library with the mark is loaded, and its function runs.
    let first = submit_from(&library, root.path(), Some(&address));
    assert_eq!(first, "ok 42");
    assert_eq!(library.loaded_by().len(), 1, "one worker loaded it: {first}");
    library.forget_loads();

    // The node keeps it by hash; change it there.
    let artifacts = root.path().join("session_latest/artifacts");
    let cached: Vec<PathBuf> = std::fs::read_dir(&artifacts)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "so"))
        .collect();
    assert_eq!(cached.len(), 1, "{cached:?}");
    assert_eq!(mode_of(&artifacts), 0o700);
    assert_eq!(mode_of(&cached[0]), 0o600);
    let mut bytes = std::fs::read(&cached[0]).unwrap();
    *bytes.last_mut().unwrap() ^= 0xff;
    std::fs::write(&cached[0], &bytes).unwrap();

    // A new driver is a new job with new workers: they find the changed file.
    let second = submit_from(&library, root.path(), Some(&address));
    let real_path = std::fs::canonicalize(&cached[0]).unwrap();
    assert!(second.contains("does not match its sha256"), "{second}");
    assert!(second.contains(&real_path.display().to_string()), "{second}");
    assert!(second.contains("delete the file, and run the driver"), "{second}");
    assert!(library.loaded_by().is_empty(), "a worker loaded the changed file: {:?}", library.loaded_by());

    // What the error advises works: the next driver uploads it anew.
    std::fs::remove_file(&real_path).unwrap();
    assert_eq!(submit_from(&library, root.path(), Some(&address)), "ok 42");
    assert_eq!(library.loaded_by().len(), 1);
}

#[test]
fn session_directories_and_logs_are_private() {
    let root = session_root();
    let address = start_head(root.path(), "1");
    // A driver's workers write their logs and fetch its library.
    let library = Library::build(true);
    assert_eq!(submit_from(&library, root.path(), Some(&address)), "ok 42");

    assert_eq!(mode_of(root.path()), 0o700, "the session root");
    let session = std::fs::canonicalize(root.path().join("session_latest")).unwrap();
    assert_eq!(mode_of(&session), 0o700);
    let mut entries = Vec::new();
    walk(&session, &mut entries);
    let logs: Vec<&PathBuf> = entries.iter().filter(|p| p.parent() == Some(&session.join("logs"))).collect();
    for name in ["head.err", "node.err"] {
        assert!(logs.iter().any(|p| p.ends_with(name)), "no {name} in {logs:?}");
    }
    assert!(
        logs.iter().any(|p| p.file_name().unwrap().to_string_lossy().starts_with("worker-")),
        "no worker log in {logs:?}"
    );
    for path in &entries {
        let meta = std::fs::symlink_metadata(path).unwrap();
        let mode = meta.mode() & 0o7777;
        if meta.is_dir() {
            assert_eq!(mode, 0o700, "{}", path.display());
        } else if meta.is_file() {
            assert_eq!(mode, 0o600, "{}", path.display());
        }
    }
}

#[test]
fn a_session_root_others_can_write_to_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("rayrepl");
    std::fs::create_dir(&root).unwrap();
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let out = rayrepl(&root, &["start", "--head", "--port", "0", "--num-cpus", "1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains(&format!("{} can be changed by other users (mode 1777)", root.display())), "{err}");
    assert!(err.contains("RAYREPL_TEMP_DIR"), "{err}");
    assert_eq!(std::fs::read_dir(&root).unwrap().count(), 0, "nothing was created in it");
}

#[test]
fn a_session_root_of_another_users_is_refused() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("skipped: giving a directory to another user (uid 65534) takes root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("rayrepl");
    std::fs::create_dir(&root).unwrap();
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::chown(&root, Some(65534), Some(65534)).unwrap();

    // `rayrepl start --head` and a program's embedded cluster both refuse it.
    let out = rayrepl(&root, &["start", "--head", "--port", "0", "--num-cpus", "1"]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{err}");
    let mut cmd = Command::new(scenarios_bin());
    cmd.arg("pids").env("RAYREPL_TEMP_DIR", &root).env_remove("RAYREPL_ADDRESS");
    let program = run_bounded(cmd, std::time::Duration::from_secs(60));
    let program_err = String::from_utf8_lossy(&program.stderr).into_owned();
    assert!(!program.status.success(), "{program_err}");
    for err in [&err, &program_err] {
        assert!(err.contains(&format!("{} belongs to", root.display())), "{err}");
        assert!(err.contains("uid 65534"), "{err}");
        assert!(err.contains("RAYREPL_TEMP_DIR"), "{err}");
    }
    assert_eq!(std::fs::read_dir(&root).unwrap().count(), 0, "nothing was created in it");
}
