//! Jobs through the head's HTTP port, with the real `rayrepl` binary: `rayrepl
//! job` submits, follows, stops and deletes jobs; a Rust driver started as a
//! job's entrypoint attaches to the cluster as that job; the port refuses
//! requests without the token and bad input with a clear 4xx, and the head
//! survives it all.

mod support;
use std::io::{Read, Write};
use std::path::Path;
use support::*;

/// One HTTP/1.1 request to `url` (`http://host:port`); the status and body.
fn http(url: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
    let authority = url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(authority).expect("the dashboard port answers");
    stream.set_read_timeout(Some(std::time::Duration::from_secs(30))).unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nhost: {authority}\r\nconnection: close\r\n");
    let declared = headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-length"));
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    if !declared {
        request.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    let reply = String::from_utf8_lossy(&reply).into_owned();
    let status = reply
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{method} {path}: no status: {reply}"));
    let body = reply.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

fn text(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// A zip holding one file, `name`, written without checks, as a hostile client could.
fn zip_with_entry(name: &str) -> Vec<u8> {
    // Local header, data, central directory and its end: stored (no compression).
    let data = b"x";
    let crc = 0x8cdc_1683u32; // CRC-32 of "x"
    let mut out = Vec::new();
    let name = name.as_bytes();
    out.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
    out.extend_from_slice(&[20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(&(name.len() as u16).to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(name);
    out.extend_from_slice(data);
    let central = out.len() as u32;
    out.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
    out.extend_from_slice(&[20, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(&(name.len() as u16).to_le_bytes());
    out.extend_from_slice(&[0; 12]);
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(name);
    let size = out.len() as u32 - central;
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0, 0, 0, 0, 1, 0, 1, 0]);
    out.extend_from_slice(&size.to_le_bytes());
    out.extend_from_slice(&central.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

fn start_head_with_dashboard(root: &Path) -> (String, String) {
    let out = rayrepl(root, &["start", "--head", "--port", "0", "--num-cpus", "2", "--dashboard-port", "0"]);
    assert!(out.status.success(), "{}", text(&out));
    let printed = text(&out);
    let latest = root.join("session_latest");
    let url = std::fs::read_to_string(latest.join("dashboard_url")).expect("the head wrote its dashboard address");
    let token = std::fs::read_to_string(latest.join("token")).unwrap();
    assert!(printed.contains(&format!("{url}/?token={token}")), "start prints the sign-in link: {printed}");
    (url, token)
}

#[test]
fn jobs_run_on_the_head_and_are_followed_stopped_and_deleted() {
    let root = session_root();
    let (url, token) = start_head_with_dashboard(root.path());
    let address = url.as_str();

    // A working directory travels as a package: the file is there, what git
    // ignores is not, and runtime_env's variables are set.
    let project = tempfile::tempdir().unwrap();
    std::fs::write(project.path().join("data.txt"), "hello from the working dir\n").unwrap();
    std::fs::write(project.path().join(".gitignore"), "target/\n").unwrap();
    std::fs::create_dir_all(project.path().join("target")).unwrap();
    std::fs::write(project.path().join("target/ignored.txt"), "build output").unwrap();
    let dir = project.path().to_str().unwrap();
    let env = r#"{"env_vars": {"GREETING": "hi there"}}"#;
    let script = "cat data.txt; echo $GREETING; test -e target/ignored.txt && echo LEAKED; true";
    let out = rayrepl(
        root.path(),
        &[
            "job",
            "submit",
            "--address",
            address,
            "--working-dir",
            dir,
            "--runtime-env-json",
            env,
            "--submission-id",
            "first",
            "--",
            "sh",
            "-c",
            script,
        ],
    );
    let printed = text(&out);
    assert!(out.status.success(), "{printed}");
    assert!(printed.contains("Job 'first' submitted successfully"), "{printed}");
    assert!(printed.contains("hello from the working dir\nhi there\n"), "{printed}");
    assert!(!printed.contains("LEAKED"), "ignored files stay home: {printed}");
    assert!(printed.contains("Job 'first' succeeded"), "{printed}");
    // The same directory again is not uploaded again.
    let again = rayrepl(root.path(), &["job", "submit", "--address", address, "--working-dir", dir, "--", "true"]);
    assert!(text(&again).contains("already exists, skipping upload"), "{}", text(&again));

    // A Rust driver run as the entrypoint attaches to this cluster as the job.
    let driver = format!("{} attach", scenarios_bin().display());
    let out = rayrepl(root.path(), &["job", "submit", "--submission-id", "rusty", "--", "sh", "-c", &driver]);
    assert!(text(&out).contains("sum=42") && text(&out).contains("Job 'rusty' succeeded"), "{}", text(&out));
    let out = rayrepl(root.path(), &["list", "jobs", "--format", "json"]);
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let rusty = rows.iter().find(|r| r["SUBMISSION_ID"] == "rusty").expect("the submitted job is listed");
    assert_eq!(rusty["TYPE"], "SUBMISSION");
    assert!(rusty["JOB_ID"].as_str().is_some_and(|id| !id.is_empty()), "its driver is linked: {rusty}");
    assert!(!rows.iter().any(|r| r["TYPE"] == "DRIVER"), "the driver is not listed apart: {rows:?}");

    // A failing entrypoint: the exit code and the end of the log are in the status.
    let out = rayrepl(root.path(), &["job", "submit", "--submission-id", "bad", "--", "sh", "-c", "echo oops; exit 3"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("Job 'bad' failed") && text(&out).contains("exit code 3"), "{}", text(&out));

    // Stop: SIGTERM reaches the whole process group, and the job is STOPPED.
    let out = rayrepl(root.path(), &["job", "submit", "--no-wait", "--submission-id", "long", "--", "sleep", "300"]);
    assert!(out.status.success(), "{}", text(&out));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !text(&rayrepl(root.path(), &["job", "status", "long"])).contains("RUNNING") {
        assert!(std::time::Instant::now() < deadline, "the job never ran");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let refused = rayrepl(root.path(), &["job", "delete", "long"]);
    assert!(!refused.status.success() && text(&refused).contains("stop it first"), "{}", text(&refused));
    let out = rayrepl(root.path(), &["job", "stop", "long"]);
    assert!(text(&out).contains("Job 'long' was stopped"), "{}", text(&out));
    let status = text(&rayrepl(root.path(), &["job", "status", "long"]));
    assert!(status.contains("STOPPED") && status.contains("intentionally stopped"), "{status}");

    // What an entrypoint needs is reserved for it: a job that needs both CPUs
    // holds them, and one that needs one waits, PENDING, until they are free.
    // The holder ignores SIGTERM, so its stop ends with SIGKILL after the grace.
    let submit_waiting = |id: &str, cpus: &str, script: &str| {
        let args = [
            "job",
            "submit",
            "--no-wait",
            "--entrypoint-num-cpus",
            cpus,
            "--submission-id",
            id,
            "--",
            "sh",
            "-c",
            script,
        ];
        let out = rayrepl(root.path(), &args);
        assert!(out.status.success(), "{}", text(&out));
    };
    let wait_status = |id: &str, want: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let status = text(&rayrepl(root.path(), &["job", "status", id]));
            if status.contains(&format!("': {want}")) {
                return status;
            }
            assert!(std::time::Instant::now() < deadline, "{id} never {want}: {status}");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };
    // Through the API itself, so the entrypoint's own shell is the one that
    // ignores SIGTERM (the CLI quotes its arguments into one command, as Ray's).
    let holder = br#"{"entrypoint": "trap '' TERM; sleep 300", "submission_id": "holder", "entrypoint_num_cpus": 2}"#;
    let auth = format!("Bearer {token}");
    let (status, body) = http(&url, "POST", "/api/jobs/", &[("authorization", &auth)], holder);
    assert_eq!(status, 200, "{body}");
    wait_status("holder", "RUNNING");
    submit_waiting("waiter", "1", "echo got a CPU");
    std::thread::sleep(std::time::Duration::from_secs(1));
    let pending = wait_status("waiter", "PENDING");
    assert!(pending.contains("waits for the resources") && pending.contains("CPU: 1"), "{pending}");
    let started = std::time::Instant::now();
    let out = rayrepl(root.path(), &["job", "stop", "holder"]);
    assert!(text(&out).contains("Job 'holder' was stopped"), "{}", text(&out));
    assert!(started.elapsed() >= std::time::Duration::from_secs(2), "SIGTERM was ignored: SIGKILL after the grace");
    wait_status("waiter", "SUCCEEDED");
    assert_eq!(text(&rayrepl(root.path(), &["job", "logs", "waiter"])), "got a CPU\n");

    let listed = text(&rayrepl(root.path(), &["job", "list"]));
    for (id, status) in [("first", "SUCCEEDED"), ("rusty", "SUCCEEDED"), ("bad", "FAILED"), ("long", "STOPPED")] {
        assert!(listed.lines().any(|l| l.contains(id) && l.contains(status)), "{id} {status}: {listed}");
    }
    let logs = text(&rayrepl(root.path(), &["job", "logs", "bad"]));
    assert_eq!(logs, "oops\n");
    // Each node's log files, as the dashboard's log pages read them (Ray's log API).
    let auth = [("authorization", auth.as_str())];
    let (status, listing) = http(&url, "GET", "/api/v0/logs?node_ip=127.0.0.1", &auth, b"");
    assert_eq!(status, 200, "{listing}");
    assert!(listing.contains("job-driver-bad.log") && listing.contains("\"raylet\":[\"node.err\"]"), "{listing}");
    let (status, tail) =
        http(&url, "GET", "/api/v0/logs/file?node_ip=127.0.0.1&filename=job-driver-bad.log", &auth, b"");
    assert_eq!((status, tail.as_str()), (200, "oops\n"));
    let (status, _) = http(&url, "GET", "/api/v0/logs/file?node_ip=127.0.0.1&filename=../token", &auth, b"");
    assert_eq!(status, 404, "only files in the log directory");
    let out = rayrepl(root.path(), &["job", "delete", "bad"]);
    assert!(text(&out).contains("deleted successfully"), "{}", text(&out));
    let gone = rayrepl(root.path(), &["job", "status", "bad"]);
    assert!(!gone.status.success() && text(&gone).contains("does not exist"), "{}", text(&gone));
}

#[test]
fn the_port_wants_the_token_and_refuses_bad_input_clearly() {
    let root = session_root();
    let (url, token) = start_head_with_dashboard(root.path());
    let auth = format!("Bearer {token}");
    let with_token = [("authorization", auth.as_str())];

    // No token: 401; a wrong one: 403; each says what to do. Ray's other
    // places for the token (x-ray-authorization, the cookie) work too.
    let (status, body) = http(&url, "GET", "/api/version", &[], b"");
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("Missing authentication token") && body.contains("RAY_AUTH_TOKEN_PATH"), "{body}");
    let (status, body) = http(&url, "GET", "/api/jobs/", &[("authorization", "Bearer not-it")], b"");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("Invalid authentication token"), "{body}");
    let (status, body) = http(&url, "GET", "/api/version", &[("x-ray-authorization", &auth)], b"");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"ray_version\":\"2.60.0\""), "{body}");
    let cookie = format!("ray-authentication-token={token}");
    assert_eq!(http(&url, "GET", "/api/v0/nodes", &[("cookie", &cookie)], b"").0, 200);
    // A browser without it gets the sign-in page; the ?token= link sets the cookie.
    let (status, body) = http(&url, "GET", "/", &[("accept", "text/html")], b"");
    assert_eq!(status, 401);
    assert!(body.contains("<form"), "{body}");
    let (status, _) = http(&url, "GET", &format!("/?token={token}"), &[], b"");
    assert_eq!(status, 303, "the link redirects to the page without the token in its address");

    // Bad input: each a clear 4xx.
    let (status, body) = http(&url, "POST", "/api/jobs/", &with_token, b"{not json");
    assert_eq!(status, 400, "{body}");
    let (status, body) =
        http(&url, "POST", "/api/jobs/", &with_token, br#"{"entrypoint": "true", "runtime_env": {"pip": ["x"]}}"#);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("runtime_env.pip"), "{body}");
    let (status, body) = http(&url, "GET", "/api/jobs/no-such-job", &with_token, b"");
    assert_eq!(status, 404, "{body}");
    let (status, body) = http(&url, "POST", "/api/jobs/no-such-job/stop", &with_token, b"");
    assert_eq!(status, 404, "{body}");
    let (status, body) = http(
        &url,
        "POST",
        "/api/jobs/",
        &with_token,
        br#"{"entrypoint": "true", "runtime_env": {"working_dir": "gcs://_ray_pkg_0000.zip"}}"#,
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("never uploaded"), "{body}");
    // A package whose entry climbs out of its directory, or whose name is a path.
    let evil = zip_with_entry("../../escaped.txt");
    let (status, body) = http(&url, "PUT", "/api/packages/gcs/_ray_pkg_1111.zip", &with_token, &evil);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("escapes"), "{body}");
    let (status, _) = http(&url, "PUT", "/api/packages/gcs/..%2F..%2Fx.zip", &with_token, &evil);
    assert_eq!(status, 400);
    // Over 500 MiB: refused from its declared length, before it is read.
    let mut big = with_token.to_vec();
    big.push(("content-length", "524288001"));
    // (No body bytes sent: unread bytes would make the server's close a reset.)
    let (status, body) = http(&url, "PUT", "/api/packages/gcs/_ray_pkg_2222.zip", &big, b"");
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("500 MiB"), "{body}");
    // Nothing was written outside the session, and the head still answers.
    let temp_root = root.path();
    for escaped in [temp_root.join("escaped.txt"), temp_root.parent().unwrap().join("escaped.txt")] {
        assert!(!escaped.exists(), "{} was written", escaped.display());
    }
    assert_eq!(http(&url, "GET", "/api/version", &with_token, b"").0, 200);
    let status = rayrepl(root.path(), &["status"]);
    assert!(status.status.success(), "{}", text(&status));
}

#[test]
fn the_dashboard_can_be_turned_off() {
    let root = session_root();
    let out =
        rayrepl(root.path(), &["start", "--head", "--port", "0", "--num-cpus", "1", "--include-dashboard", "false"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!root.path().join("session_latest/dashboard_url").exists());
    assert!(!text(&out).contains("dashboard"), "{}", text(&out));
}
