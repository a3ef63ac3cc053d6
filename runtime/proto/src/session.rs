//! Session directories: where a cluster keeps its token, its process list and
//! its logs, as Ray's `/tmp/ray/session_*` do, and what a user's address means.
//!
//! `rayrepl start --head` points `/tmp/rayrepl/session_latest` at its session, so
//! drivers and `rayrepl status|stop` on the same machine find the cluster and its
//! token without flags. The same directories answer the questions every "cannot
//! reach the cluster" error must answer: is a cluster running here, and where.
//! Addresses come in Ray's spellings (`auto`, `ray://HOST:PORT`, the
//! dashboard's `http://HOST:8265`); [`resolve_head_address`] turns each into the
//! head's gRPC address.
//!
//! Everything here reads files or dials sockets and blocks: async callers use
//! `spawn_blocking`.

use ray_abi::RayError;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The file in a session directory that holds the head's dashboard address
/// (`http://127.0.0.1:8265`), written by the head once it serves.
pub const DASHBOARD_URL: &str = "dashboard_url";

/// The file in a session directory that holds the head's gRPC address.
pub const HEAD_ADDRESS: &str = "head_address";

/// The head's port when an address gives none, as Ray's GCS default.
pub const DEFAULT_HEAD_PORT: u16 = 6379;

/// Ray's dashboard port: an address with it is the dashboard's, not the head's.
pub const DASHBOARD_PORT: u16 = 8265;

/// What to run when no cluster is there.
pub const START_HINT: &str = "start one with `rayrepl start --head`";

/// Root of all sessions on this machine (override with `RAYREPL_TEMP_DIR`).
pub fn root() -> PathBuf {
    std::env::var_os("RAYREPL_TEMP_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/tmp/rayrepl"))
}

/// The session `rayrepl start --head` created last.
pub fn latest() -> PathBuf {
    root().join("session_latest")
}

/// A new, empty session directory (0700, as is its `logs`), in a root that
/// belongs to this user and that nobody else can write to (see
/// [`crate::private::check_root`]).
pub fn create() -> Result<PathBuf, RayError> {
    let root = root();
    crate::private::check_root(&root).map_err(|e| RayError::Startup(e.to_string()))?;
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    let dir = root.join(format!("session_{stamp}_{}", std::process::id()));
    crate::private::create_dir(&dir.join("logs"))
        .map_err(|e| RayError::Startup(format!("cannot create session directory {}: {e}", dir.display())))?;
    Ok(dir)
}

/// A fresh random cluster token.
pub fn new_token() -> String {
    let bytes: [u8; 24] = rand::random();
    ray_abi::ids::hex(&bytes)
}

/// Writes `contents` to `dir/name` readable only by this user (0600).
pub fn write_private(dir: &Path, name: &str, contents: &str) -> Result<PathBuf, RayError> {
    let path = dir.join(name);
    let mut f = crate::private::create_file(&path, false).map_err(|e| RayError::Startup(e.to_string()))?;
    f.write_all(contents.as_bytes()).map_err(|e| RayError::Startup(format!("cannot write {}: {e}", path.display())))?;
    Ok(path)
}

/// Reads `dir/name`, trimmed.
pub fn read(dir: &Path, name: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(name)).ok().map(|s| s.trim().to_string())
}

/// A cluster a session directory on this machine names.
#[derive(Debug, Clone, PartialEq)]
pub struct KnownCluster {
    /// The session directory.
    pub dir: PathBuf,
    /// The head's gRPC address.
    pub head_address: String,
    /// The head's dashboard (`http://HOST:PORT`), if it serves one.
    pub dashboard_url: Option<String>,
}

/// Every session directory under [`root`] that names a head, the latest first,
/// each directory once. Only this user's sessions count: another user's could
/// name a head of theirs, which a driver would then send its code to.
pub fn known_clusters() -> Vec<KnownCluster> {
    let me = crate::private::euid();
    let latest_dir = std::fs::canonicalize(latest()).ok();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root())
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("session_") && n != "session_latest")
                && std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir() && m.uid() == me)
        })
        .collect();
    // Newest first: the names carry their start time.
    dirs.sort_by(|a, b| b.cmp(a));
    if let Some(l) = &latest_dir
        && let Some(i) = dirs.iter().position(|d| std::fs::canonicalize(d).ok().as_ref() == Some(l))
    {
        let d = dirs.remove(i);
        dirs.insert(0, d);
    }
    dirs.into_iter()
        .filter_map(|dir| {
            let head_address = read(&dir, HEAD_ADDRESS)?;
            let dashboard_url = read(&dir, DASHBOARD_URL);
            Some(KnownCluster { dir, head_address, dashboard_url })
        })
        .collect()
}

/// Whether something accepts connections at `address` (`HOST:PORT`), asked
/// with a short timeout: on this machine an answer is immediate.
pub fn answers(address: &str) -> bool {
    let Ok(addrs) = address.to_socket_addrs() else { return false };
    addrs.into_iter().any(|a| TcpStream::connect_timeout(&a, Duration::from_millis(300)).is_ok())
}

/// The clusters on this machine whose head answers, the latest first, each head once.
pub fn running_clusters() -> Vec<KnownCluster> {
    let mut seen = Vec::new();
    known_clusters()
        .into_iter()
        .filter(|c| {
            if seen.iter().any(|s: &String| same_address(s, &c.head_address)) {
                return false;
            }
            seen.push(c.head_address.clone());
            answers(&c.head_address)
        })
        .collect()
}

/// What `address="auto"` (or no address, for the CLI) means: the running
/// cluster this machine started last, else the head the latest session names
/// (so an error can say it stopped), else none.
pub fn auto_head() -> Option<String> {
    running_clusters()
        .into_iter()
        .next()
        .map(|c| c.head_address)
        .or_else(|| known_clusters().into_iter().next().map(|c| c.head_address))
}

/// What a user's address names, in any of Ray's spellings.
#[derive(Debug, Clone, PartialEq)]
pub enum Address {
    /// `auto`: the cluster running on this machine.
    Auto,
    /// A head's gRPC address, `HOST:PORT`.
    Head(String),
    /// A head's dashboard, `HOST:PORT` of its HTTP port.
    Dashboard(String),
}

/// Reads an address as Ray does: `auto`, `HOST:PORT` (the head; port 6379 if
/// left out), `ray://HOST:PORT`, or the dashboard's `http://HOST:PORT`. A bare
/// `HOST:8265`, or the address of a dashboard this machine's sessions know, is
/// the dashboard. Reads session directories (blocking).
pub fn parse_address(given: &str) -> Result<Address, RayError> {
    let given = given.trim();
    if given.is_empty() || given.eq_ignore_ascii_case("auto") {
        return Ok(Address::Auto);
    }
    let (scheme, rest) = match given.split_once("://") {
        Some((scheme, rest)) => (Some(scheme.to_ascii_lowercase()), rest),
        None => (None, given),
    };
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') {
        return Err(RayError::InvalidArgument(format!(
            "{given:?} is not an address: give the head's HOST:PORT (e.g. 127.0.0.1:{DEFAULT_HEAD_PORT}), or \"auto\" \
             for the cluster on this machine"
        )));
    }
    match scheme.as_deref() {
        None | Some("ray") => {}
        Some("http") | Some("https") => return Ok(Address::Dashboard(with_port(authority, 80))),
        Some(other) => {
            return Err(RayError::InvalidArgument(format!(
                "{given:?}: rayrepl understands HOST:PORT, ray://HOST:PORT and the dashboard's http://HOST:PORT, not \
                 {other}://"
            )));
        }
    }
    let authority = with_port(authority, DEFAULT_HEAD_PORT);
    let is_dashboard = known_clusters()
        .iter()
        .filter_map(|c| c.dashboard_url.as_deref())
        .any(|url| same_address(url.trim_start_matches("http://").trim_end_matches('/'), &authority));
    if is_dashboard || port_of(&authority) == Some(DASHBOARD_PORT) {
        return Ok(Address::Dashboard(authority));
    }
    Ok(Address::Head(authority))
}

fn with_port(authority: &str, default: u16) -> String {
    let has_port = match authority.rsplit_once(':') {
        // `[::1]:6379` has one; a bare `::1` does not.
        Some((host, port)) => port.parse::<u16>().is_ok() && (!host.contains(':') || host.ends_with(']')),
        None => false,
    };
    if has_port { authority.to_string() } else { format!("{authority}:{default}") }
}

fn port_of(address: &str) -> Option<u16> {
    address.rsplit_once(':').and_then(|(_, p)| p.parse().ok())
}

fn host_of(address: &str) -> &str {
    address.rsplit_once(':').map(|(h, _)| h).unwrap_or(address).trim_start_matches('[').trim_end_matches(']')
}

/// The head's gRPC address for any of Ray's spellings of an address (see
/// [`parse_address`]). A dashboard's address is looked up in this machine's
/// sessions, else asked of the dashboard itself (with `token`, if known).
/// Blocking.
pub fn resolve_head_address(given: &str, token: Option<&str>) -> Result<String, RayError> {
    match parse_address(given)? {
        Address::Head(address) => Ok(address),
        Address::Auto => auto_head().ok_or_else(|| RayError::Connection {
            what: "a cluster on this machine (address \"auto\")".into(),
            detail: format!("no cluster is running here (no session under {}); {START_HINT}", root().display()),
        }),
        Address::Dashboard(authority) => {
            let known = known_clusters().into_iter().find(|c| {
                c.dashboard_url.as_deref().is_some_and(|url| {
                    same_address(url.trim_start_matches("http://").trim_end_matches('/'), &authority)
                })
            });
            if let Some(c) = known {
                return Ok(c.head_address);
            }
            let token = match token {
                Some(t) => Some(t.to_string()),
                None => explicit_token()?,
            };
            ask_dashboard(&authority, token.as_deref()).map_err(|why| {
                RayError::InvalidArgument(format!(
                    "{given} is a dashboard's address (Ray's port {DASHBOARD_PORT}, for jobs and the web UI), and a \
                     driver connects to the head's port instead: pass --address {}:{DEFAULT_HEAD_PORT} (the address \
                     `rayrepl start --head` printed; {DEFAULT_HEAD_PORT} unless it was started with --port). The \
                     dashboard could not tell the head's address itself: {why}",
                    host_of(&authority)
                ))
            })
        }
    }
}

/// Asks the dashboard at `authority` for the head's gRPC address (its
/// `/api/version` names it as `gcs_address`).
fn ask_dashboard(authority: &str, token: Option<&str>) -> Result<String, String> {
    let addr: SocketAddr = authority
        .to_socket_addrs()
        .map_err(|e| format!("{authority} does not resolve: {e}"))?
        .next()
        .ok_or_else(|| format!("{authority} does not resolve"))?;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(3))
        .map_err(|e| format!("nothing answers at {authority}: {}", plain_io_error(&e)))?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let auth = token.map(|t| format!("authorization: Bearer {t}\r\n")).unwrap_or_default();
    // HTTP/1.0: the reply ends when the connection closes, with no chunking to undo.
    let request = format!("GET /api/version HTTP/1.0\r\nhost: {authority}\r\n{auth}\r\n");
    stream.write_all(request.as_bytes()).map_err(|e| format!("{authority} hung up: {e}"))?;
    let mut reply = Vec::new();
    stream.take(1 << 20).read_to_end(&mut reply).map_err(|e| format!("{authority} did not answer: {e}"))?;
    let reply = String::from_utf8_lossy(&reply);
    let (head, body) = reply.split_once("\r\n\r\n").ok_or_else(|| format!("{authority} does not speak HTTP"))?;
    let status = head.split_whitespace().nth(1).unwrap_or("");
    match status {
        "200" => {}
        "401" | "403" => return Err("it wants the cluster token (set RAYREPL_TOKEN)".into()),
        other => return Err(format!("GET /api/version answered {other}")),
    }
    let json: serde_json::Value =
        serde_json::from_str(body).map_err(|_| "its /api/version is not JSON: is it a Ray dashboard?".to_string())?;
    json.get("gcs_address")
        .and_then(|a| a.as_str())
        .filter(|a| !a.is_empty())
        .map(str::to_string)
        .ok_or_else(|| "its /api/version does not name a gcs_address".to_string())
}

/// Where a token came from, as a user would name it.
#[derive(Debug, Clone, PartialEq)]
pub enum TokenSource {
    /// Given on the command line or in code.
    Given,
    /// `RAYREPL_TOKEN`.
    Env,
    /// `RAYREPL_TOKEN_FILE` or `--token-file`: this file.
    File(PathBuf),
    /// The session directory of the head on this machine.
    Session(PathBuf),
}

impl std::fmt::Display for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenSource::Given => write!(f, "the token given"),
            TokenSource::Env => write!(f, "RAYREPL_TOKEN"),
            TokenSource::File(p) => write!(f, "the token file {}", p.display()),
            TokenSource::Session(dir) => write!(f, "the session {}", dir.display()),
        }
    }
}

/// How to pass a cluster's token, and where its head keeps it: in its session
/// directory, this machine's if the head at `address` is here.
pub fn token_advice(address: Option<&str>) -> String {
    let here = address.and_then(session_of).map(|dir| dir.join("token"));
    let location = match here {
        Some(path) => format!("its head keeps it in {} (mode 0600)", path.display()),
        None => format!(
            "its head keeps it in its session directory, {} on the head's machine (`rayrepl start --head` prints \
             the path)",
            latest().join("token").display()
        ),
    };
    format!("{location}; pass it with --token-file PATH, or set RAYREPL_TOKEN (or RAYREPL_TOKEN_FILE=PATH)")
}

/// The token in `RAYREPL_TOKEN`, else in the file `RAYREPL_TOKEN_FILE` names.
fn explicit_token() -> Result<Option<String>, RayError> {
    Ok(explicit_token_with_source()?.map(|(t, _)| t))
}

fn explicit_token_with_source() -> Result<Option<(String, TokenSource)>, RayError> {
    if let Ok(t) = std::env::var("RAYREPL_TOKEN")
        && !t.is_empty()
    {
        return Ok(Some((t, TokenSource::Env)));
    }
    if let Ok(f) = std::env::var("RAYREPL_TOKEN_FILE")
        && !f.is_empty()
    {
        return read_token_file(Path::new(&f)).map(|t| Some((t, TokenSource::File(PathBuf::from(f)))));
    }
    Ok(None)
}

/// The token in `path`, trimmed.
pub fn read_token_file(path: &Path) -> Result<String, RayError> {
    std::fs::read_to_string(path).map(|s| s.trim().to_string()).map_err(|e| RayError::Unauthenticated {
        detail: format!(
            "cannot read the token file {}: {e}; a head keeps its token in its session directory ({} on the \
             head's machine)",
            path.display(),
            latest().join("token").display()
        ),
    })
}

/// The session directory on this machine of the head at `address`: one whose
/// head address is `address`, else (for a head on this machine reached by
/// another of its addresses, such as `0.0.0.0` or a hostname) one whose head
/// has the same port on this machine and answers.
pub fn session_of(address: &str) -> Option<PathBuf> {
    let known = known_clusters();
    if let Some(c) = known.iter().find(|c| same_address(&c.head_address, address)) {
        return Some(c.dir.clone());
    }
    let port = port_of(address)?;
    if !is_this_machine(host_of(address)) {
        return None;
    }
    known
        .into_iter()
        .find(|c| port_of(&c.head_address) == Some(port) && is_this_machine(host_of(&c.head_address)))
        .filter(|c| answers(&c.head_address))
        .map(|c| c.dir)
}

/// Whether `host` is one of this machine's addresses: binding to it works only then.
fn is_this_machine(host: &str) -> bool {
    let Ok(addrs) = (host, 0).to_socket_addrs() else { return false };
    addrs.into_iter().any(|a| std::net::UdpSocket::bind(a).is_ok())
}

/// Finds the token for a cluster: explicit, then `RAYREPL_TOKEN`, then
/// `RAYREPL_TOKEN_FILE`, then the session on this machine of the head at `address`.
pub fn find_token(explicit: Option<&str>, address: &str) -> Result<String, RayError> {
    find_token_with_source(explicit, address).map(|(t, _)| t)
}

/// [`find_token`], and where the token came from.
pub fn find_token_with_source(explicit: Option<&str>, address: &str) -> Result<(String, TokenSource), RayError> {
    if let Some(t) = explicit.filter(|t| !t.is_empty()) {
        return Ok((t.to_string(), TokenSource::Given));
    }
    if let Some(found) = explicit_token_with_source()? {
        return Ok(found);
    }
    // A REPL's or program's embedded cluster is not the latest `start --head`,
    // but its directory holds its token all the same.
    if let Some(dir) = session_of(address)
        && let Some(t) = read(&dir, "token")
    {
        return Ok((t, TokenSource::Session(dir)));
    }
    Err(RayError::Unauthenticated {
        detail: format!("no token for the cluster at {address} on this machine: {}", token_advice(Some(address))),
    })
}

/// Whether two `HOST:PORT` addresses are the same, `localhost` being 127.0.0.1.
pub fn same_address(a: &str, b: &str) -> bool {
    let norm = |s: &str| s.trim().replace("localhost", "127.0.0.1");
    norm(a) == norm(b)
}

/// A transport error as a person would say it: what happened when dialling,
/// without the layers it passed through.
pub fn plain_transport_error(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut innermost = e.to_string();
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return plain_io_error(io);
        }
        innermost = err.to_string();
        cur = err.source();
    }
    let lower = innermost.to_ascii_lowercase();
    if lower.contains("timed out") || lower.contains("timeout") {
        "no answer in time (is the host up, and the port open in its firewall?)".into()
    } else {
        innermost
    }
}

/// An I/O error from dialling, as a person would say it.
pub fn plain_io_error(e: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionRefused => "nothing is listening there (connection refused)".into(),
        TimedOut => "no answer in time (is the host up, and the port open in its firewall?)".into(),
        HostUnreachable | NetworkUnreachable => "this machine has no route to that host".into(),
        AddrNotAvailable => "that address is not available from this machine".into(),
        ConnectionReset | ConnectionAborted => "the connection was dropped at once (is that a rayrepl head?)".into(),
        _ if e.to_string().contains("lookup address") || e.to_string().contains("Name or service") => {
            "the host name does not resolve".into()
        }
        _ => e.to_string(),
    }
}

/// What runs on this machine, for an error about `tried` not answering: the
/// running clusters to connect to instead, or that none runs and how to start one.
pub fn unreachable_hint(tried: &str) -> String {
    let running: Vec<String> =
        running_clusters().into_iter().map(|c| c.head_address).filter(|a| !same_address(a, tried)).collect();
    if running.is_empty() {
        let stopped = known_clusters().into_iter().find(|c| same_address(&c.head_address, tried));
        return match stopped {
            Some(c) => format!(
                "no cluster is running on this machine (the one of session {} has stopped); {START_HINT}",
                c.dir.display()
            ),
            None => format!("no cluster is running on this machine; {START_HINT}"),
        };
    }
    let list = running.join(", ");
    format!(
        "a cluster is running on this machine at {list}: connect to it with --address {} (or address \"auto\"), \
         or start another with `rayrepl start --head`",
        running[0]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ray_spellings_of_an_address() {
        assert_eq!(parse_address("auto").unwrap(), Address::Auto);
        assert_eq!(parse_address(" AUTO ").unwrap(), Address::Auto);
        assert_eq!(parse_address("10.0.0.5:6380").unwrap(), Address::Head("10.0.0.5:6380".into()));
        assert_eq!(parse_address("ray://10.0.0.5:6380").unwrap(), Address::Head("10.0.0.5:6380".into()));
        assert_eq!(parse_address("10.0.0.5").unwrap(), Address::Head("10.0.0.5:6379".into()));
        assert_eq!(parse_address("[::1]:7000").unwrap(), Address::Head("[::1]:7000".into()));
        assert_eq!(parse_address("10.0.0.5:8265").unwrap(), Address::Dashboard("10.0.0.5:8265".into()));
        assert_eq!(parse_address("http://10.0.0.5:8265/").unwrap(), Address::Dashboard("10.0.0.5:8265".into()));
        assert_eq!(parse_address("http://head:9000").unwrap(), Address::Dashboard("head:9000".into()));
        assert!(parse_address("grpc://head:1").unwrap_err().to_string().contains("grpc://"));
        assert!(parse_address("http://head:1/api/jobs").is_err());
    }

    #[test]
    fn dialling_errors_read_as_what_happened() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(plain_io_error(&refused), "nothing is listening there (connection refused)");
        #[derive(Debug)]
        struct Layer(std::io::Error);
        impl std::fmt::Display for Layer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "transport error")
            }
        }
        impl std::error::Error for Layer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let wrapped = Layer(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(plain_transport_error(&wrapped), "nothing is listening there (connection refused)");
    }
}
