//! The object store on a filesystem with little room (issue 21): a store larger
//! than its tmpfs used to be created anyway, sparse, and the first large put
//! killed the driver with SIGBUS. Each case runs in a private mount namespace
//! with a tmpfs of its own, so nothing outside the test sees it; that needs root,
//! and without it the test says so and passes.

mod support;
use std::process::Command;
use std::time::Duration;
use support::*;

const MIB: u64 = 1 << 20;

/// Runs `script` with `sh` in a new private mount namespace in which `$SHM` is
/// a tmpfs of `mib` MiB; `None` (after saying why) when namespaces are not
/// available.
fn with_small_tmpfs(root: &std::path::Path, mib: u64, script: &str) -> Option<(bool, String)> {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping: mounting a tmpfs in a private namespace needs root");
        return None;
    }
    let shm = root.join("shm");
    std::fs::create_dir_all(&shm).unwrap();
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(format!("mount -t tmpfs -o size={mib}m rayrepl-test-shm \"$SHM\" || exit 99\n{script}"))
        .env("SHM", &shm)
        .env("RAYREPL", rayrepl_bin())
        .env("SCENARIOS", scenarios_bin())
        .env("RAYREPL_TEMP_DIR", root)
        .env_remove("RAYREPL_TOKEN")
        .env_remove("RAYREPL_ADDRESS");
    let out = run_bounded(cmd, Duration::from_secs(120));
    if out.status.code() == Some(99) {
        eprintln!("skipping: cannot mount a tmpfs here: {}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Some((out.status.success(), text))
}

#[test]
fn a_store_larger_than_its_filesystem_is_refused_naming_the_flags() {
    let root = session_root();
    let script = format!(
        "\"$RAYREPL\" start --head --port 0 --num-cpus 1 --plasma-directory \"$SHM\" --object-store-memory {}",
        64 * MIB
    );
    let Some((ok, out)) = with_small_tmpfs(root.path(), 8, &script) else { return };
    assert!(!ok, "a 64 MiB store started on an 8 MiB tmpfs:\n{out}");
    for needed in ["--object-store-memory", "--plasma-directory", "only 8.0 MiB free"] {
        assert!(out.contains(needed), "{needed:?} missing from:\n{out}");
    }
}

#[test]
fn the_default_store_shrinks_to_fit_and_says_so() {
    let root = session_root();
    let script = r#"
        "$RAYREPL" start --head --port 0 --num-cpus 1 --plasma-directory "$SHM" || exit 1
        "$RAYREPL" status
        cat "$RAYREPL_TEMP_DIR"/session_latest/logs/*.err
        "$RAYREPL" stop
    "#;
    // Docker's default /dev/shm.
    let Some((ok, out)) = with_small_tmpfs(root.path(), 64, script) else { return };
    assert!(ok, "{out}");
    assert!(out.contains("less than the default object store"), "no warning that the store shrank:\n{out}");
    let capacity = out.lines().find(|l| l.contains("object_store_memory")).unwrap_or_else(|| panic!("{out}"));
    assert!(capacity.contains("MiB object_store_memory") && !capacity.contains("GiB"), "{capacity}");
}

/// The store fits when the node starts; then something else fills the tmpfs.
/// A put that can no longer be backed gets `ObjectStoreFull`, not SIGBUS, and
/// one that can still be backed succeeds.
#[test]
fn a_put_the_filesystem_cannot_back_fails_as_store_full_not_sigbus() {
    let root = session_root();
    let script = format!(
        r#"
        "$RAYREPL" start --head --port 0 --num-cpus 1 --plasma-directory "$SHM" --object-store-memory {store} || exit 1
        head -c {filler} /dev/zero > "$SHM/filler" || exit 2
        RAYREPL_ADDRESS=$(cat "$RAYREPL_TEMP_DIR"/session_latest/head_address) RAYREPL_TEST_PUT_BYTES={big} "$SCENARIOS" put_sized
        echo "big_exit=$?"
        RAYREPL_ADDRESS=$(cat "$RAYREPL_TEMP_DIR"/session_latest/head_address) RAYREPL_TEST_PUT_BYTES={small} "$SCENARIOS" put_sized
        echo "small_exit=$?"
        "$RAYREPL" stop
        "#,
        store = 6 * MIB,
        filler = 5 * MIB,
        big = 3 * MIB,
        small = 512 * 1024,
    );
    let Some((ok, out)) = with_small_tmpfs(root.path(), 8, &script) else { return };
    assert!(ok, "{out}");
    assert!(out.contains("big_exit=0"), "the driver died on a put the filesystem could not back:\n{out}");
    assert!(out.contains("put=full requested="), "{out}");
    assert!(out.contains("small_exit=0") && out.contains(&format!("put=ok len={}", 512 * 1024)), "{out}");
}
