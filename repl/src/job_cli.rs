//! `rayrepl job submit | status | logs | stop | list | delete`: Ray's job CLI.
//!
//! These talk to a head's Jobs API over HTTP (the dashboard port, 8265), as
//! Ray's `ray job` does, so they work the same against a cluster on another
//! machine. `submit --working-dir DIR` zips the directory the way git sees it
//! (`.gitignore`d files and `.git` left out), names the zip by a hash of its
//! contents, and uploads it only if the head does not have it yet.

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use ray_runtime::session;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::Path;
use std::time::Duration;

/// The largest working directory a head takes (Ray's 500 MiB).
const MAX_PACKAGE_BYTES: usize = 500 << 20;

/// Where and how to reach the Jobs API.
#[derive(clap::Args, Clone)]
pub struct Target {
    /// The head's dashboard address, e.g. http://127.0.0.1:8265 (default:
    /// RAY_API_SERVER_ADDRESS, then this machine's latest session).
    #[arg(long)]
    address: Option<String>,
}

/// `rayrepl job`.
#[derive(clap::Subcommand)]
pub enum JobCommand {
    /// Submit a job: run COMMAND on the head's machine, in the working directory.
    Submit(SubmitArgs),
    /// Print a job's status.
    Status {
        #[command(flatten)]
        target: Target,
        /// The job's submission id.
        job_id: String,
    },
    /// Print a job's logs.
    Logs {
        #[command(flatten)]
        target: Target,
        /// Keep printing as the job writes, until it ends.
        #[arg(long, short)]
        follow: bool,
        /// The job's submission id.
        job_id: String,
    },
    /// Stop a job: SIGTERM, then SIGKILL after a grace period.
    Stop {
        #[command(flatten)]
        target: Target,
        /// Return once asked, without waiting for the job to end.
        #[arg(long)]
        no_wait: bool,
        /// The job's submission id.
        job_id: String,
    },
    /// List the cluster's jobs.
    List {
        #[command(flatten)]
        target: Target,
    },
    /// Delete an ended job: its record and its log.
    Delete {
        #[command(flatten)]
        target: Target,
        /// The job's submission id.
        job_id: String,
    },
}

/// `rayrepl job submit`.
#[derive(clap::Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    target: Target,
    /// A directory to run the job in: zipped, uploaded and unpacked on the head.
    #[arg(long, value_name = "DIR")]
    working_dir: Option<std::path::PathBuf>,
    /// The id to give the job (default: a new raysubmit_... id).
    #[arg(long)]
    submission_id: Option<String>,
    /// The runtime environment as JSON: {"env_vars": {...}, "working_dir": ...}.
    #[arg(long, value_name = "JSON")]
    runtime_env_json: Option<String>,
    /// Labels to keep with the job, as a JSON object of strings.
    #[arg(long, value_name = "JSON")]
    metadata_json: Option<String>,
    /// CPUs the entrypoint itself needs.
    #[arg(long, value_name = "N")]
    entrypoint_num_cpus: Option<f64>,
    /// GPUs the entrypoint itself needs.
    #[arg(long, value_name = "N")]
    entrypoint_num_gpus: Option<f64>,
    /// Memory the entrypoint itself needs, in bytes.
    #[arg(long, value_name = "BYTES")]
    entrypoint_memory: Option<u64>,
    /// Custom resources the entrypoint needs, as JSON.
    #[arg(long, value_name = "JSON")]
    entrypoint_resources: Option<String>,
    /// Return once submitted, without following the logs.
    #[arg(long)]
    no_wait: bool,
    /// The command to run, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    entrypoint: Vec<String>,
}

/// A Jobs API endpoint, with the token to send.
struct Api {
    host: String,
    port: u16,
    token: Option<String>,
    rt: tokio::runtime::Runtime,
    tls: Option<tokio_rustls::TlsConnector>,
}

impl Api {
    fn new(target: &Target) -> anyhow::Result<Api> {
        let address = target
            .address
            .clone()
            .or_else(|| std::env::var("RAY_API_SERVER_ADDRESS").ok().filter(|a| !a.is_empty()))
            .or_else(|| session::read(&session::latest(), session::DASHBOARD_URL))
            .or_else(|| std::env::var("RAY_ADDRESS").ok().filter(|a| a.starts_with("http")))
            .unwrap_or_else(|| "http://127.0.0.1:8265".to_string());
        let tls = ray_proto::tls::config()?;
        let rest = match address.split_once("://") {
            None => address.as_str(),
            Some(("http" | "https", rest)) => rest,
            Some((scheme, _)) => bail!("{address}: rayrepl's job client speaks http and https, not {scheme}"),
        };
        let authority = rest.trim_end_matches('/');
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p.parse().with_context(|| format!("{address}: bad port {p:?}"))?),
            None => (authority.to_string(), 80),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let tls = tls.map(|t| t.http_client()).transpose()?;
        Ok(Api { token: find_token(authority), host, port, rt, tls })
    }

    fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}:{}", self.host, self.port)
    }

    /// A connection to the Jobs API: TLS when the cluster uses it (the
    /// dashboard's certificate is checked against the cluster CA).
    async fn connect(&self) -> anyhow::Result<Box<dyn ray_proto::tls::Stream>> {
        let stream = tokio::net::TcpStream::connect((self.host.as_str(), self.port)).await.with_context(|| {
            format!(
                "cannot reach the Jobs API at {}: is the head running (`rayrepl status`), and is this its \
                 dashboard address?",
                self.url()
            )
        })?;
        match &self.tls {
            None => Ok(Box::new(stream)),
            Some(tls) => {
                let stream = tls
                    .connect(ray_proto::tls::server_name(), stream)
                    .await
                    .with_context(|| format!("TLS with the Jobs API at {} failed", self.url()))?;
                Ok(Box::new(stream))
            }
        }
    }

    /// One request; the reply's status and body.
    fn call(&self, method: Method, path: &str, body: Option<(Bytes, &str)>) -> anyhow::Result<(StatusCode, Bytes)> {
        self.rt.block_on(async {
            let stream = self.connect().await?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            let mut req =
                Request::builder().method(method).uri(path).header("host", format!("{}:{}", self.host, self.port));
            if let Some(token) = &self.token {
                req = req.header("authorization", format!("Bearer {token}"));
            }
            let body = match body {
                Some((bytes, content_type)) => {
                    req = req.header("content-type", content_type);
                    bytes
                }
                None => Bytes::new(),
            };
            let reply = sender.send_request(req.body(Full::new(body))?).await?;
            let status = reply.status();
            let bytes = reply.into_body().collect().await?.to_bytes();
            Ok((status, bytes))
        })
    }

    /// A request whose reply must be 200 with JSON.
    fn json(&self, method: Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let body = body.map(|b| (Bytes::from(b.to_string()), "application/json"));
        let (status, bytes) = self.call(method, path, body)?;
        self.ok(status, &bytes)?;
        serde_json::from_slice(&bytes).with_context(|| format!("{path} answered with something other than JSON"))
    }

    fn ok(&self, status: StatusCode, body: &[u8]) -> anyhow::Result<()> {
        if status.is_success() {
            return Ok(());
        }
        let text = String::from_utf8_lossy(body);
        match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => bail!(
                "{text}\n(rayrepl looks for the token in RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, RAYREPL_TOKEN, \
                 RAYREPL_TOKEN_FILE, then this machine's sessions)"
            ),
            _ => bail!("{text}"),
        }
    }

    fn info(&self, id: &str) -> anyhow::Result<Value> {
        self.json(Method::GET, &format!("/api/jobs/{id}"), None)
    }
}

/// The token for the dashboard at `url`: Ray's variables, then rayrepl's, then
/// the session on this machine whose dashboard it is, then the latest session.
fn find_token(authority: &str) -> Option<String> {
    let same = |url: &str| url.trim_end_matches('/').split_once("://").is_some_and(|(_, at)| at == authority);
    let from_file = |path: String| std::fs::read_to_string(path).ok().map(|t| t.trim().to_string());
    let nonempty = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    nonempty("RAY_AUTH_TOKEN")
        .or_else(|| nonempty("RAY_AUTH_TOKEN_PATH").and_then(from_file))
        .or_else(|| nonempty("RAYREPL_TOKEN"))
        .or_else(|| nonempty("RAYREPL_TOKEN_FILE").and_then(from_file))
        .or_else(|| {
            let sessions = std::fs::read_dir(session::root()).into_iter().flatten().flatten().map(|e| e.path());
            std::iter::once(session::latest())
                .chain(sessions)
                .find(|dir| session::read(dir, session::DASHBOARD_URL).is_some_and(|u| same(&u)))
                .and_then(|dir| session::read(&dir, "token"))
        })
        .or_else(|| session::read(&session::latest(), "token"))
}

/// `args` as one shell command line, quoted as Python's `shlex.join` quotes.
fn shell_join(args: &[String]) -> String {
    let quote = |a: &String| {
        if !a.is_empty() && a.bytes().all(|b| b.is_ascii_alphanumeric() || b"@%+=:,./-_".contains(&b)) {
            a.clone()
        } else {
            format!("'{}'", a.replace('\'', "'\"'\"'"))
        }
    };
    args.iter().map(quote).collect::<Vec<_>>().join(" ")
}

fn banner(line: &str) {
    let rule = "-".repeat(line.len());
    println!("\n{rule}\n{line}\n{rule}\n");
}

/// Prints how a job ended (or where it is), as Ray's CLI does; its status.
fn report(api: &Api, id: &str) -> anyhow::Result<String> {
    let info = api.info(id)?;
    let status = info["status"].as_str().unwrap_or("UNKNOWN").to_string();
    let message = info["message"].as_str().unwrap_or_default();
    match status.as_str() {
        "SUCCEEDED" => banner(&format!("Job '{id}' succeeded")),
        "STOPPED" => println!("Job '{id}' was stopped"),
        "FAILED" => {
            banner(&format!("Job '{id}' failed"));
            println!("Status message: {message}");
        }
        other => {
            println!("Status for job '{id}': {other}");
            println!("Status message: {message}");
        }
    }
    Ok(status)
}

/// Prints the job's log as it grows until the job ends, over Ray's log-tail websocket.
fn follow(api: &Api, id: &str) -> anyhow::Result<()> {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    api.rt.block_on(async {
        let url = format!("ws://{}:{}/api/jobs/{id}/logs/tail", api.host, api.port);
        let mut request = url.as_str().into_client_request()?;
        if let Some(token) = &api.token {
            request.headers_mut().insert("authorization", format!("Bearer {token}").parse()?);
        }
        let stream = api.connect().await?;
        let (mut socket, _) = tokio_tungstenite::client_async(request, stream)
            .await
            .with_context(|| format!("cannot follow the logs of job {id}"))?;
        let mut out = std::io::stdout();
        while let Some(message) = socket.next().await {
            match message? {
                Message::Text(text) => {
                    out.write_all(text.as_bytes())?;
                    out.flush()?;
                }
                Message::Close(_) => break,
                _ => {}
            }
        }
        Ok(())
    })
}

/// A directory zipped as Ray packages a working directory, named by a hash of
/// what it holds.
fn package(dir: &Path) -> anyhow::Result<(String, Vec<u8>)> {
    if !dir.is_dir() {
        bail!("--working-dir {} is not a directory", dir.display());
    }
    let mut files = Vec::new();
    let walk = ignore::WalkBuilder::new(dir)
        .hidden(false)
        .git_ignore(true)
        .require_git(false)
        .git_global(false)
        .filter_entry(|e| e.file_name() != ".git")
        .build();
    for entry in walk {
        let entry = entry?;
        if entry.file_type().is_some_and(|t| t.is_file()) {
            let relative = entry.path().strip_prefix(dir)?.to_string_lossy().into_owned();
            files.push((relative, entry.into_path()));
        }
    }
    files.sort();
    let mut hash = Sha256::new();
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let mut size = 0usize;
    for (relative, path) in &files {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)?.permissions().mode();
        let data = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        size += data.len();
        if size > MAX_PACKAGE_BYTES {
            bail!(
                "{} holds more than {} MiB; leave build output and data out (list them in .gitignore)",
                dir.display(),
                MAX_PACKAGE_BYTES >> 20
            );
        }
        hash.update((relative.len() as u64).to_le_bytes());
        hash.update(relative.as_bytes());
        hash.update(mode.to_le_bytes());
        hash.update((data.len() as u64).to_le_bytes());
        hash.update(&data);
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .unix_permissions(mode & 0o777);
        zip.start_file(relative.as_str(), options)?;
        zip.write_all(&data)?;
    }
    let bytes = zip.finish()?.into_inner();
    if bytes.len() > MAX_PACKAGE_BYTES {
        bail!("{} zips to more than {} MiB", dir.display(), MAX_PACKAGE_BYTES >> 20);
    }
    let digest = hash.finalize();
    let name = format!("_ray_pkg_{}.zip", ray_abi::ids::hex(&digest[..16]));
    Ok((name, bytes))
}

fn parse_json(flag: &str, text: Option<&str>) -> anyhow::Result<Option<Value>> {
    text.map(|t| serde_json::from_str(t).with_context(|| format!("{flag} must be JSON, got {t}"))).transpose()
}

fn submit(args: SubmitArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.target)?;
    let mut runtime_env = match parse_json("--runtime-env-json", args.runtime_env_json.as_deref())? {
        None => json!({}),
        Some(v @ Value::Object(_)) => v,
        Some(other) => bail!("--runtime-env-json must be a JSON object, got {other}"),
    };
    if let Some(dir) = &args.working_dir {
        let (name, bytes) = package(dir)?;
        let path = format!("/api/packages/gcs/{name}");
        let (status, body) = api.call(Method::GET, &path, None)?;
        if status == StatusCode::NOT_FOUND {
            println!("Uploading package gcs://{name} ({}).", ray_proto::format_bytes(bytes.len() as u64));
            let (status, body) = api.call(Method::PUT, &path, Some((Bytes::from(bytes), "application/zip")))?;
            api.ok(status, &body)?;
        } else {
            api.ok(status, &body)?;
            println!("Package gcs://{name} already exists, skipping upload.");
        }
        runtime_env["working_dir"] = json!(format!("gcs://{name}"));
    }
    let request = json!({
        "entrypoint": shell_join(&args.entrypoint),
        "submission_id": args.submission_id,
        "runtime_env": runtime_env,
        "metadata": parse_json("--metadata-json", args.metadata_json.as_deref())?,
        "entrypoint_num_cpus": args.entrypoint_num_cpus,
        "entrypoint_num_gpus": args.entrypoint_num_gpus,
        "entrypoint_memory": args.entrypoint_memory,
        "entrypoint_resources": parse_json("--entrypoint-resources", args.entrypoint_resources.as_deref())?,
    });
    // Unset options are left out, as Ray's client leaves them out.
    let request: serde_json::Map<String, Value> = request
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    println!("Job submission server address: {}", api.url());
    let reply = api.json(Method::POST, "/api/jobs/", Some(Value::Object(request)))?;
    let id = reply["submission_id"].as_str().context("the head's reply names no submission id")?.to_string();
    banner(&format!("Job '{id}' submitted successfully"));
    println!("Next steps");
    println!("  Query the logs of the job:\n    rayrepl job logs {id}");
    println!("  Query the status of the job:\n    rayrepl job status {id}");
    println!("  Request the job to be stopped:\n    rayrepl job stop {id}\n");
    if args.no_wait {
        return Ok(());
    }
    println!("Tailing logs until the job exits (disable with --no-wait):");
    follow(&api, &id)?;
    if report(&api, &id)? == "FAILED" {
        std::process::exit(1);
    }
    Ok(())
}

/// A job's row for `job list`.
fn list_row(job: &Value) -> ray_state::Row {
    let text = |k: &str| job[k].as_str().map(|s| json!(s)).unwrap_or(json!(""));
    [
        ("SUBMISSION_ID", text("submission_id")),
        ("JOB_ID", text("job_id")),
        ("TYPE", text("type")),
        ("STATUS", text("status")),
        ("ENTRYPOINT", text("entrypoint")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

pub fn run(command: JobCommand) -> anyhow::Result<()> {
    match command {
        JobCommand::Submit(args) => submit(args),
        JobCommand::Status { target, job_id } => {
            let api = Api::new(&target)?;
            let info = api.info(&job_id)?;
            println!("Status for job '{job_id}': {}", info["status"].as_str().unwrap_or("UNKNOWN"));
            if let Some(message) = info["message"].as_str() {
                println!("Status message: {message}");
            }
            Ok(())
        }
        JobCommand::Logs { target, follow: keep_following, job_id } => {
            let api = Api::new(&target)?;
            if keep_following {
                api.info(&job_id)?;
                follow(&api, &job_id)
            } else {
                let logs = api.json(Method::GET, &format!("/api/jobs/{job_id}/logs"), None)?;
                print!("{}", logs["logs"].as_str().unwrap_or_default());
                Ok(())
            }
        }
        JobCommand::Stop { target, no_wait, job_id } => {
            let api = Api::new(&target)?;
            println!("Attempting to stop job '{job_id}'");
            api.json(Method::POST, &format!("/api/jobs/{job_id}/stop"), None)?;
            if no_wait {
                return Ok(());
            }
            println!("Waiting for job '{job_id}' to exit (disable with --no-wait):");
            loop {
                let status = api.info(&job_id)?["status"].as_str().unwrap_or("UNKNOWN").to_string();
                if matches!(status.as_str(), "STOPPED" | "SUCCEEDED" | "FAILED") {
                    report(&api, &job_id)?;
                    return Ok(());
                }
                println!("Job has not exited yet. Status: {status}");
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        JobCommand::List { target } => {
            let api = Api::new(&target)?;
            let jobs = api.json(Method::GET, "/api/jobs/", None)?;
            let rows: Vec<ray_state::Row> = jobs.as_array().into_iter().flatten().map(list_row).collect();
            print!("{}", ray_state::format_table(&rows, &["SUBMISSION_ID", "JOB_ID", "TYPE", "STATUS", "ENTRYPOINT"]));
            Ok(())
        }
        JobCommand::Delete { target, job_id } => {
            let api = Api::new(&target)?;
            api.json(Method::DELETE, &format!("/api/jobs/{job_id}"), None)?;
            println!("Job '{job_id}' deleted successfully");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_quoted_as_shlex_join_quotes_them() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(shell_join(&args(&["cargo", "run", "--release"])), "cargo run --release");
        assert_eq!(shell_join(&args(&["echo", "a b", "it's", ""])), "echo 'a b' 'it'\"'\"'s' ''");
    }

    #[test]
    fn a_package_leaves_out_what_git_ignores_and_its_name_follows_its_contents() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".gitignore"), "target/\n").unwrap();
        std::fs::create_dir_all(dir.path().join("target/debug")).unwrap();
        std::fs::write(dir.path().join("target/debug/big"), vec![0u8; 1000]).unwrap();
        std::fs::create_dir_all(dir.path().join("src")).unwrap();
        std::fs::write(dir.path().join("src/main.rs"), "fn main() {}\n").unwrap();
        let (name, bytes) = package(dir.path()).unwrap();
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
        let names: Vec<String> = archive.file_names().map(|n| n.unwrap().into_owned()).collect();
        assert!(names.contains(&"src/main.rs".to_string()) && names.contains(&".gitignore".to_string()), "{names:?}");
        assert!(!names.iter().any(|n| n.starts_with("target")), "{names:?}");
        assert!(archive.by_name("src/main.rs").is_ok());
        assert_eq!(package(dir.path()).unwrap().0, name, "the same contents, the same name");
        std::fs::write(dir.path().join("src/main.rs"), "fn main() { }\n").unwrap();
        assert_ne!(package(dir.path()).unwrap().0, name);
    }
}
