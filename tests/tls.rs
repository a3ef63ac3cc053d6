//! TLS between a cluster's processes (issue 21): without it the token and every
//! object cross the network in clear. A cluster started with `--tls-*` speaks
//! only TLS, to peers whose certificates its CA signed; drivers and commands
//! given the same files (the `RAYREPL_TLS_*` variables) work as before, and
//! those without them, or with another CA's, are refused with a message that
//! says what to set.

mod support;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use support::*;

/// `rayrepl tls init dir`; returns the certificate, key and CA paths.
fn tls_init(dir: &Path) -> [PathBuf; 3] {
    let out = run_bounded(
        {
            let mut cmd = Command::new(rayrepl_bin());
            cmd.args(["tls", "init"]).arg(dir);
            cmd
        },
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    ["cert.pem", "key.pem", "ca.pem"].map(|n| dir.join(n))
}

/// `cmd` with the `RAYREPL_TLS_*` variables set to `files`, or removed.
fn with_tls(cmd: &mut Command, files: Option<&[PathBuf; 3]>) {
    for (i, name) in ["RAYREPL_TLS_CERT", "RAYREPL_TLS_KEY", "RAYREPL_TLS_CA"].into_iter().enumerate() {
        match files {
            Some(files) => cmd.env(name, &files[i]),
            None => cmd.env_remove(name),
        };
    }
}

fn rayrepl_tls(root: &Path, files: Option<&[PathBuf; 3]>, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(rayrepl_bin());
    cmd.args(args).env("RAYREPL_TEMP_DIR", root).env_remove("RAYREPL_TOKEN").env_remove("RAYREPL_ADDRESS");
    with_tls(&mut cmd, files);
    run_bounded(cmd, Duration::from_secs(60))
}

fn text(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn a_tls_cluster_serves_its_members_and_refuses_everyone_else() {
    let certs = tempfile::tempdir().unwrap();
    let files = tls_init(&certs.path().join("cluster"));
    let strangers = tls_init(&certs.path().join("strangers"));
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&files[1]), 0o600, "the key is private");
    assert_eq!(mode(&certs.path().join("cluster/ca.key")), 0o600, "the CA key is private");

    let root = session_root();
    // The flags, not the environment: the command passes them to its daemons.
    let [cert, key, ca] = files.clone().map(|p| p.display().to_string());
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
    let started = rayrepl_tls(
        root.path(),
        None,
        &[
            "start",
            "--head",
            "--port",
            "0",
            "--num-cpus",
            "1",
            "--metrics-export-port",
            &metrics_port,
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--tls-ca",
            &ca,
        ],
    );
    assert!(started.status.success(), "{}", text(&started));
    let address = std::fs::read_to_string(root.path().join("session_latest/head_address")).unwrap().trim().to_string();
    let dashboard = std::fs::read_to_string(root.path().join("session_latest/dashboard_url")).unwrap();
    assert!(dashboard.starts_with("https://"), "{dashboard}");

    let status = rayrepl_tls(root.path(), Some(&files), &["status"]);
    assert!(status.status.success(), "{}", text(&status));
    let jobs = rayrepl_tls(root.path(), Some(&files), &["job", "list", "--address", dashboard.trim()]);
    assert!(jobs.status.success(), "the Jobs API over https: {}", text(&jobs));

    let mut driver = Command::new(scenarios_bin());
    driver.arg("tls_work").env("RAYREPL_ADDRESS", &address).env("RAYREPL_TEMP_DIR", root.path());
    with_tls(&mut driver, Some(&files));
    let run = run_bounded(driver, Duration::from_secs(120));
    let out = text(&run);
    assert!(run.status.success(), "{out}");
    for line in ["sum=42", "counts=[1, 2, 3]", &format!("blob_len={}", 8 << 20)] {
        assert!(out.contains(line), "{line:?} missing:\n{out}");
    }

    // Without the files, a command is told what to set.
    let plain = rayrepl_tls(root.path(), None, &["status"]);
    assert!(!plain.status.success(), "a plain client got in: {}", text(&plain));
    assert!(text(&plain).contains("RAYREPL_TLS_CERT"), "{}", text(&plain));
    // With another CA's certificate, nothing gets through either way.
    let stranger = rayrepl_tls(root.path(), Some(&strangers), &["status"]);
    assert!(!stranger.status.success(), "another CA's certificate got in: {}", text(&stranger));
    let mut driver = Command::new(scenarios_bin());
    driver.arg("attach").env("RAYREPL_ADDRESS", &address).env("RAYREPL_TEMP_DIR", root.path());
    with_tls(&mut driver, Some(&strangers));
    let run = run_bounded(driver, Duration::from_secs(60));
    assert!(!run.status.success() && !text(&run).contains("sum=42"), "{}", text(&run));

    // Metrics are https, for a scraper that trusts the cluster CA, and nothing else.
    let metrics = https_get(&files, &format!("127.0.0.1:{metrics_port}"), "/metrics");
    assert!(metrics.starts_with("HTTP/1.1 200") && metrics.contains("ray_node_workers"), "{metrics}");
    let mut plain = std::net::TcpStream::connect(format!("127.0.0.1:{metrics_port}")).unwrap();
    plain.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    plain.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(!String::from_utf8_lossy(&answer).contains("ray_node_workers"), "metrics served in clear");

    // The head's port answers an HTTP/2 preface with TLS, not with HTTP/2.
    let mut raw = std::net::TcpStream::connect(&address).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    raw.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
    let mut first = [0u8; 9];
    let n = raw.read(&mut first).unwrap_or(0);
    assert!(n == 0 || first[0] == 0x15, "a plain HTTP/2 answer, {:?}, from a TLS head", &first[..n]);
}

/// `GET path` over TLS to `address`, trusting the cluster CA in `files`; the
/// whole answer, headers first.
fn https_get(files: &[PathBuf; 3], address: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tls = ray_proto::tls::Tls::from_files(Some(files[0].clone()), Some(files[1].clone()), Some(files[2].clone()))
        .unwrap()
        .expect("TLS files");
    let connector = tls.http_client().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
        let mut stream = connector.connect(ray_proto::tls::server_name(), tcp).await.expect("a TLS handshake");
        let request = format!("GET {path} HTTP/1.1\r\nhost: {address}\r\nconnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
        String::from_utf8_lossy(&answer).into_owned()
    })
}

#[test]
fn half_a_tls_setting_is_refused_naming_what_is_missing() {
    let certs = tempfile::tempdir().unwrap();
    let [cert, _, _] = tls_init(certs.path());
    let root = session_root();
    let mut cmd = Command::new(rayrepl_bin());
    cmd.args(["start", "--head", "--port", "0", "--num-cpus", "1"])
        .env("RAYREPL_TEMP_DIR", root.path())
        .env("RAYREPL_TLS_CERT", &cert)
        .env_remove("RAYREPL_TLS_KEY")
        .env_remove("RAYREPL_TLS_CA");
    let out = run_bounded(cmd, Duration::from_secs(60));
    assert!(!out.status.success(), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("--tls-key") || said.contains("RAYREPL_TLS_KEY"), "{said}");
}
