//! Listeners under a flood of connections that never present the token (issue
//! 21): idle connections once took the head to its descriptor limit, and then
//! `rayrepl status` and new drivers could not get in. Loopback only, bounded in
//! count and time.

mod support;
use std::io::Read;
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use support::*;

/// The head's descriptor limit in this test: fewer than the flood holds open.
const HEAD_FD_LIMIT: u64 = 2048;
/// Connections the flood keeps open at once.
const FLOOD: usize = 3000;
/// The most connections the flood opens in all.
const FLOOD_TOTAL: usize = 30_000;

fn set_fd_limit(soft: u64, hard: u64) -> std::io::Result<()> {
    let limit = libc::rlimit { rlim_cur: soft, rlim_max: hard };
    // SAFETY: setrlimit reads the struct we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn fd_limit() -> (u64, u64) {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one rlimit into the struct we pass.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    (limit.rlim_cur, limit.rlim_max)
}

/// Keeps up to [`FLOOD`] idle connections open to `address`, opening a new one
/// for each the server closes, until `stop`; returns how many were opened and how
/// many the server closed.
fn flood(address: String, stop: Arc<AtomicBool>, closed: Arc<AtomicUsize>) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut open: Vec<TcpStream> = Vec::new();
        let mut opened = 0;
        let started = Instant::now();
        while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(90) {
            while open.len() < FLOOD && opened < FLOOD_TOTAL {
                match TcpStream::connect_timeout(&address.parse().unwrap(), Duration::from_millis(200)) {
                    Ok(s) => {
                        s.set_nonblocking(true).unwrap();
                        open.push(s);
                        opened += 1;
                    }
                    Err(_) => break,
                }
            }
            let mut buf = [0u8; 64];
            // Open while it sends (the server's HTTP/2 settings) or a read would
            // block; an end or a reset means the server closed it.
            open.retain_mut(|s| match s.read(&mut buf) {
                Ok(n) if n > 0 => true,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => true,
                _ => {
                    closed.fetch_add(1, Ordering::Relaxed);
                    false
                }
            });
            std::thread::sleep(Duration::from_millis(50));
        }
        opened
    })
}

#[test]
fn a_flood_of_idle_connections_neither_exhausts_the_head_nor_keeps_clients_out() {
    let (_, hard) = fd_limit();
    assert!(hard >= (FLOOD as u64) + 1000, "this test needs a descriptor hard limit above {FLOOD}, not {hard}");
    set_fd_limit(hard, hard).expect("raise this test's descriptor limit");
    let root = session_root();
    // The cluster's daemons inherit a hard limit below the flood.
    let mut start = Command::new(rayrepl_bin());
    start
        .args(["start", "--head", "--port", "0", "--num-cpus", "1"])
        .env("RAYREPL_TEMP_DIR", root.path())
        .env_remove("RAYREPL_TOKEN")
        .env_remove("RAYREPL_ADDRESS");
    // SAFETY: the closure only calls setrlimit, which is async-signal-safe.
    unsafe {
        start.pre_exec(|| set_fd_limit(1024, HEAD_FD_LIMIT));
    }
    let started = run_bounded(start, Duration::from_secs(60));
    assert!(started.status.success(), "{}", String::from_utf8_lossy(&started.stderr));
    let address = std::fs::read_to_string(root.path().join("session_latest/head_address")).unwrap().trim().to_string();
    let head_pid: i32 = std::fs::read_to_string(root.path().join("session_latest/pids"))
        .unwrap()
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .expect("the head's pid is the first recorded");

    let stop = Arc::new(AtomicBool::new(false));
    let closed = Arc::new(AtomicUsize::new(0));
    let flooder = flood(address.clone(), stop.clone(), closed.clone());
    // Let the flood fill up: more connections than the head may have descriptors.
    std::thread::sleep(Duration::from_secs(3));

    let status = rayrepl(root.path(), &["status", "--address", &address]);
    let status_ok = status.status.success();
    let mut driver = Command::new(scenarios_bin());
    driver.arg("attach").env("RAYREPL_ADDRESS", &address).env("RAYREPL_TEMP_DIR", root.path());
    let attached = try_bounded(driver, Duration::from_secs(60));
    // Connections that never present the token are closed within a few seconds.
    std::thread::sleep(Duration::from_secs(7));
    let head_fds = std::fs::read_dir(format!("/proc/{head_pid}/fd")).map(|d| d.count()).unwrap_or(0);
    stop.store(true, Ordering::Relaxed);
    let opened = flooder.join().unwrap();
    eprintln!(
        "flood: {opened} opened, {} closed by the head; the head holds {head_fds} descriptors",
        closed.load(Ordering::Relaxed)
    );

    assert!(status_ok, "`rayrepl status` failed during the flood: {}", String::from_utf8_lossy(&status.stderr));
    let attached = attached.expect("a new driver got no answer within 60 s during the flood");
    let out = String::from_utf8_lossy(&attached.stdout);
    assert!(attached.status.success() && out.contains("sum=42"), "{out}{}", String::from_utf8_lossy(&attached.stderr));
    assert!(support::pid_running(head_pid), "the head died during the flood");
    assert!(opened >= FLOOD, "the flood opened only {opened} connections");
    assert!(
        closed.load(Ordering::Relaxed) >= FLOOD,
        "the head closed only {} of {opened} idle connections",
        closed.load(Ordering::Relaxed)
    );
    assert!((head_fds as u64) < HEAD_FD_LIMIT, "the head holds {head_fds} descriptors");
}

/// A connection that never presents the token is closed after a few seconds;
/// it is not closed at once.
#[test]
fn an_idle_connection_is_closed_once_its_time_to_present_the_token_is_up() {
    let root = session_root();
    let address = start_head(root.path(), "1");
    let mut idle = TcpStream::connect(&address).expect("connect to the head");
    idle.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let opened = Instant::now();
    let mut buf = [0u8; 256];
    let ended = loop {
        match idle.read(&mut buf) {
            // The server's HTTP/2 settings.
            Ok(n) if n > 0 => continue,
            Ok(_) => break Some(opened.elapsed()),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break Some(opened.elapsed()),
            Err(_) => break None,
        }
    };
    let ended = ended.expect("an idle connection was still open after 15 s");
    assert!(ended >= Duration::from_secs(4), "closed after only {ended:?}");
}
