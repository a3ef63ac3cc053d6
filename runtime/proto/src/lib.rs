//! The gRPC protocol between rayrepl processes, and the few rules every service
//! shares: how the cluster token is checked, how addresses are dialled and served,
//! and how runtime errors map onto gRPC status codes (in one place, here).

use ray_abi::RayError;
use std::collections::BTreeMap;
use std::time::Duration;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

#[allow(missing_docs, clippy::all, clippy::pedantic)]
mod generated {
    tonic::include_proto!("rayrepl");
}
pub use generated::*;

pub mod gate;
pub mod groups;
pub mod private;
pub mod session;
pub mod tls;

// States are enums on the wire, each nested in the message that carries it (as
// Ray nests its actor and node states), so value names like ALIVE can repeat.
// Their proto names are Ray's spellings: `as_str_name()` is what users see.
pub use actor_info::ActorState;
pub use job_info::JobStatus;
pub use node_info::NodeState;
pub use task_event::TaskState;

impl NodeInfo {
    /// Takes a snapshot of the node's resources unless the one held is newer:
    /// heartbeats and bundle replies race.
    pub fn update_resources(&mut self, version: u64, total: Vec<Resource>, available: Vec<Resource>) {
        if version < self.resource_version {
            return;
        }
        self.resource_version = version;
        self.total = total;
        self.available = available;
    }

    /// Whether the head counts the node as alive; an unset state does not count.
    pub fn is_alive(&self) -> bool {
        match self.state() {
            NodeState::Alive => true,
            NodeState::Nil | NodeState::Dead => false,
        }
    }
}

impl From<ray_object_store::Span> for ArenaSpan {
    fn from(s: ray_object_store::Span) -> Self {
        ArenaSpan { offset: s.offset, len: s.len, slot: s.slot, generation: s.generation }
    }
}

impl From<ArenaSpan> for ray_object_store::Span {
    fn from(s: ArenaSpan) -> Self {
        ray_object_store::Span { offset: s.offset, len: s.len, slot: s.slot, generation: s.generation }
    }
}

/// Metadata key that carries the cluster token on every call.
pub const TOKEN_HEADER: &str = "x-rayrepl-token";

/// Set by the head for a submitted job's entrypoint: the driver it starts
/// registers its job under this submission id.
pub const SUBMISSION_ID_ENV: &str = "RAYREPL_SUBMISSION_ID";

/// Adds the cluster token to outgoing calls.
#[derive(Clone, Debug)]
pub struct AddToken(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl AddToken {
    /// An interceptor for `token`.
    pub fn new(token: &str) -> Result<Self, RayError> {
        token
            .parse()
            .map(AddToken)
            .map_err(|_| RayError::InvalidArgument("the cluster token must be printable ASCII".into()))
    }
}

impl Interceptor for AddToken {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        req.metadata_mut().insert(TOKEN_HEADER, self.0.clone());
        Ok(req)
    }
}

/// Rejects calls that do not carry the cluster token.
#[derive(Clone, Debug)]
pub struct CheckToken(std::sync::Arc<str>);

impl CheckToken {
    /// An interceptor that accepts only `token`.
    pub fn new(token: &str) -> Self {
        CheckToken(token.into())
    }
}

impl Interceptor for CheckToken {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        match token_rejection(self.0.as_bytes(), req.metadata().get(TOKEN_HEADER).map(|v| v.as_bytes())) {
            None => {
                let extensions = req.extensions();
                let tls_peer =
                    || extensions.get::<tonic::transport::server::TlsConnectInfo<gate::Peer>>().map(|t| t.get_ref());
                if let Some(peer) = extensions.get::<gate::Peer>().or_else(tls_peer) {
                    peer.authenticated();
                }
                Ok(req)
            }
            Some(why) => Err(Status::unauthenticated(why)),
        }
    }
}

/// Why a peer presenting `given` (if anything) is refused, or `None` if `given` is
/// the cluster token. Every service, gRPC or direct, checks tokens with this.
pub fn token_rejection(expected: &[u8], given: Option<&[u8]>) -> Option<&'static str> {
    match given {
        Some(t) if constant_time_eq(t, expected) => None,
        Some(_) => Some("wrong cluster token"),
        None => Some("missing cluster token"),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A channel whose calls carry the token.
pub type AuthChannel = InterceptedService<Channel, AddToken>;
/// A client of the head.
pub type HeadClient = head_client::HeadClient<AuthChannel>;
/// A client of a node daemon.
pub type NodeClient = node_client::NodeClient<AuthChannel>;
/// A client of a driver's or worker's CoreWorker service.
pub type CoreWorkerClient = core_worker_client::CoreWorkerClient<AuthChannel>;

/// Largest message accepted; objects bigger than this move as shared memory.
pub const MAX_MESSAGE_BYTES: usize = 1 << 30;

/// HTTP/2 flow-control windows. The defaults (64 KiB a stream) cap an object
/// stream between nodes at one window per round trip; these let a chunk of
/// [`OBJECT_CHUNK_BYTES`] and the next be in flight at once.
const STREAM_WINDOW_BYTES: u32 = 16 << 20;
const CONNECTION_WINDOW_BYTES: u32 = 64 << 20;
/// Larger HTTP/2 frames: a 16 KiB default would cut a chunk into hundreds.
const MAX_FRAME_BYTES: u32 = 1 << 20;

/// The size of the chunks objects move between nodes in.
pub const OBJECT_CHUNK_BYTES: usize = 4 << 20;

fn endpoint(addr: &str) -> Result<Endpoint, RayError> {
    let tls = tls::config().map_err(|e| RayError::InvalidArgument(e.to_string()))?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
        .map(|e| {
            e.tcp_nodelay(true)
                .connect_timeout(Duration::from_secs(5))
                .http2_keep_alive_interval(Duration::from_secs(10))
                .keep_alive_while_idle(true)
                .initial_stream_window_size(STREAM_WINDOW_BYTES)
                .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
                .max_frame_size(MAX_FRAME_BYTES)
        })
        .map_err(|e| RayError::InvalidArgument(format!("bad address {addr:?}: {e}")))?;
    match tls {
        Some(tls) => endpoint
            .tls_config(tls.grpc_client())
            .map_err(|e| RayError::InvalidArgument(format!("cannot use TLS to reach {addr}: {e}"))),
        None => Ok(endpoint),
    }
}

/// A server configured as every rayrepl service is: Nagle off (see [`incoming`]),
/// the same flow-control windows as clients, and TLS if configured ([`tls`]).
pub fn server() -> Result<tonic::transport::Server, RayError> {
    let server = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .max_frame_size(MAX_FRAME_BYTES);
    match tls::config().map_err(|e| RayError::Startup(e.to_string()))? {
        Some(tls) => {
            server.tls_config(tls.grpc_server()).map_err(|e| RayError::Startup(format!("cannot serve TLS: {e}")))
        }
        None => Ok(server),
    }
}

/// Why a service could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// It could not be set up (TLS, say).
    #[error(transparent)]
    Setup(#[from] RayError),
    /// The server failed.
    #[error("the service failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// How long a stopping service lets calls in flight finish. A fully graceful
/// shutdown would also wait for every peer to close its connection, and a peer
/// that keeps one open (a driver, say) must not hold a stopping daemon up.
pub const SHUTDOWN_GRACE: Duration = Duration::from_millis(300);

/// Serves `router` on `listener` until `stop` resolves, then lets calls in flight
/// finish for at most [`SHUTDOWN_GRACE`].
pub async fn serve_until(
    router: tonic::transport::server::Router,
    listener: tokio::net::TcpListener,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let stopping = std::sync::Arc::new(tokio::sync::Notify::new());
    let signal = {
        let stopping = stopping.clone();
        async move {
            stop.await;
            stopping.notify_one();
        }
    };
    tokio::select! {
        result = router.serve_with_incoming_shutdown(incoming(listener), signal) => result,
        () = async {
            stopping.notified().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => Ok(()),
    }
}

/// Accepts connections on `listener` through a [`gate::Gate`], which closes
/// those that do not present the token in time, with Nagle's algorithm off.
pub fn incoming(
    listener: tokio::net::TcpListener,
) -> impl futures_util::Stream<Item = std::io::Result<gate::Gated>> + Send + 'static {
    gate::gated(listener)
}

/// A channel that connects on first use (it never fails here).
pub fn lazy_channel(addr: &str, token: &str) -> Result<AuthChannel, RayError> {
    let channel = endpoint(addr)?.connect_lazy();
    Ok(InterceptedService::new(channel, AddToken::new(token)?))
}

/// A channel connected now, failing if `addr` does not answer.
///
/// This is where "cannot reach" errors are worded for people, so every driver
/// (the REPL, the kernel, `ray::init`, the CLI) says the same: the address
/// tried, what happened in plain words, and, for the head, whether a cluster
/// runs on this machine and how to start one.
pub async fn connect(addr: &str, token: &str, what: &str) -> Result<AuthChannel, RayError> {
    let channel = dial(addr, what).await?;
    Ok(InterceptedService::new(channel, AddToken::new(token)?))
}

/// [`connect`] without the token yet: whether `addr` answers, worded as
/// [`connect`] words it.
pub async fn dial(addr: &str, what: &str) -> Result<Channel, RayError> {
    match endpoint(addr)?.connect().await {
        Ok(channel) => Ok(channel),
        Err(e) => {
            let mut detail = session::plain_transport_error(&e);
            if what == "the head" {
                let tried = addr.to_string();
                if let Ok(hint) = tokio::task::spawn_blocking(move || session::unreachable_hint(&tried)).await {
                    detail = format!("{detail}. {}", capitalized(&hint));
                }
            }
            Err(RayError::Connection { what: format!("{what} at {addr}"), detail })
        }
    }
}

fn capitalized(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Makes a client with the message limits every service uses.
#[macro_export]
macro_rules! client {
    ($client:ident, $channel:expr) => {
        $crate::$client::new($channel)
            .max_decoding_message_size($crate::MAX_MESSAGE_BYTES)
            .max_encoding_message_size($crate::MAX_MESSAGE_BYTES)
    };
}

/// Wraps a generated gRPC server with the message limits every service uses and
/// the cluster-token check: `authed_server!(HeadServer, service, token)`.
#[macro_export]
macro_rules! authed_server {
    ($server:ident, $service:expr, $token:expr) => {
        tonic::service::interceptor::InterceptedService::new(
            $server::new($service)
                .max_decoding_message_size($crate::MAX_MESSAGE_BYTES)
                .max_encoding_message_size($crate::MAX_MESSAGE_BYTES),
            $crate::CheckToken::new($token),
        )
    };
}

/// A head client for `addr`.
pub fn head_client(channel: AuthChannel) -> HeadClient {
    client!(HeadClient, channel)
}

/// A node client for `addr`.
pub fn node_client(channel: AuthChannel) -> NodeClient {
    client!(NodeClient, channel)
}

/// A core worker client for `addr`.
pub fn core_worker_client(channel: AuthChannel) -> CoreWorkerClient {
    client!(CoreWorkerClient, channel)
}

/// What went wrong on the wire: a call on a channel that could not connect
/// carries the transport error as its source; say what happened, not the layers.
fn transport_detail(s: &Status) -> String {
    match std::error::Error::source(s) {
        Some(source) => session::plain_transport_error(source),
        None => s.message().to_string(),
    }
}

/// What to say when one end speaks TLS and the other does not: a plain HTTP/2
/// client sees a protocol error from a TLS server, and a TLS client sees bytes
/// that are not TLS from a plain one.
fn tls_mismatch(s: &Status) -> Option<String> {
    let mut text = s.message().to_string();
    let mut source = std::error::Error::source(s);
    while let Some(e) = source {
        text.push_str(&format!(": {e}"));
        source = e.source();
    }
    let vars = format!("{}, {} and {}", tls::CERT_ENV, tls::KEY_ENV, tls::CA_ENV);
    let plain_to_tls = ["h2 protocol error", "frame with invalid size", "broken pipe", "connection reset"];
    let tls_to_plain = ["InvalidContentType", "corrupt message"];
    if !tls::enabled() && plain_to_tls.iter().any(|t| text.contains(t)) {
        Some(format!("if the cluster uses TLS, set {vars} to its files"))
    } else if tls::enabled() && tls_to_plain.iter().any(|t| text.contains(t)) {
        Some(format!("it does not speak TLS, while this process has {vars} set; unset them for this cluster"))
    } else {
        None
    }
}

/// Maps a runtime error onto a gRPC status; the error travels in the details so the
/// caller gets the same typed error back.
pub fn to_status(e: &RayError) -> Status {
    use tonic::Code;
    let code = match e {
        RayError::NotInitialized | RayError::AlreadyInitialized => Code::FailedPrecondition,
        RayError::Timeout { .. } | RayError::QueueEmpty | RayError::QueueFull => Code::DeadlineExceeded,
        RayError::ObjectStoreFull { .. } => Code::ResourceExhausted,
        RayError::Infeasible { .. } | RayError::InvalidArgument(_) | RayError::TypeMismatch { .. } => {
            Code::InvalidArgument
        }
        RayError::Cancelled { .. } | RayError::Interrupted => Code::Cancelled,
        RayError::ObjectLost { .. }
        | RayError::OwnerDied { .. }
        | RayError::FunctionUnavailable { .. }
        | RayError::ActorNotFound { .. } => Code::NotFound,
        RayError::ActorDied { .. } => Code::Aborted,
        RayError::PlacementGroupRemoved { .. } | RayError::Unschedulable { .. } => Code::FailedPrecondition,
        RayError::Connection { .. } | RayError::Startup(_) => Code::Unavailable,
        RayError::Unauthenticated { .. } => Code::Unauthenticated,
        RayError::Task(_) | RayError::WorkerCrashed { .. } => Code::Aborted,
        RayError::Decode { .. } | RayError::Encode { .. } | RayError::Internal(_) => Code::Internal,
        // A variant added to ray-abi since: Internal until it gets a code here.
        _ => Code::Internal,
    };
    Status::with_details(code, e.to_string(), e.to_bytes().into())
}

/// The object id in a request's bytes; a malformed one is the caller's
/// `invalid_argument`.
pub fn parse_object_id(b: &[u8]) -> Result<ray_abi::ObjectId, Status> {
    ray_abi::ObjectId::from_bytes(b).map_err(|e| to_status(&e))
}

/// The task id in a request's bytes; a malformed one is the caller's
/// `invalid_argument`.
pub fn parse_task_id(b: &[u8]) -> Result<ray_abi::TaskId, Status> {
    ray_abi::TaskId::from_bytes(b).map_err(|e| to_status(&e))
}

/// Maps a gRPC status back to a runtime error; `what` names the peer.
pub fn from_status(s: &Status, what: &str) -> RayError {
    if !s.details().is_empty() {
        return RayError::from_bytes(s.details());
    }
    if let Some(hint) = tls_mismatch(s) {
        return RayError::Connection { what: what.to_string(), detail: format!("{}; {hint}", transport_detail(s)) };
    }
    match s.code() {
        tonic::Code::Unauthenticated => RayError::Unauthenticated {
            detail: format!("{what} rejected the token ({}): {}", s.message(), session::token_advice(None)),
        },
        tonic::Code::Unimplemented => RayError::Connection {
            what: what.to_string(),
            detail: "it does not know this call; is it running an older rayrepl? restart the cluster with this version"
                .to_string(),
        },
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled => {
            RayError::Connection { what: what.to_string(), detail: transport_detail(s) }
        }
        _ => RayError::Internal(format!("{what}: {}", s.message())),
    }
}

/// Marker a worker prints (on stdout and stderr, then the task's name) when it
/// starts a task, so the node daemon that reads the worker's output can prefix
/// the task's lines with its name, as Ray's log monitor does.
pub const TASK_MARKER: &str = "\u{1e}RAYREPL_TASK:";

/// What a task or actor names to run, as it travels: the local `address` stays
/// behind (the host has already published its library as `artifact`), and no
/// artifact means the job's own executable.
impl From<ray_abi::FunctionDescriptor> for FunctionDescriptor {
    fn from(f: ray_abi::FunctionDescriptor) -> Self {
        FunctionDescriptor { name: f.name, key: f.key, symbol: f.symbol, artifact: f.artifact.unwrap_or_default() }
    }
}

/// The lease in a node's reply to a lease request for `function`, which asked
/// for `requested`; else the error for its caller: `Infeasible` when no node
/// can ever hold `requested` (the reply carries the cluster's totals),
/// `FunctionUnavailable` when the job's workers cannot start, and `Internal` for
/// a reply with no lease in it (a spillback or cancellation, which a caller
/// handles before this).
pub fn granted_lease(
    result: Option<lease_reply::Result>,
    function: &str,
    requested: &BTreeMap<String, f64>,
) -> Result<Lease, RayError> {
    match result {
        Some(lease_reply::Result::Lease(lease)) => Ok(lease),
        Some(lease_reply::Result::Infeasible(totals)) => Err(RayError::Infeasible {
            function: function.to_string(),
            requested: format_resources(requested),
            available: totals,
        }),
        Some(lease_reply::Result::WorkerStartFailed(why)) => {
            Err(RayError::FunctionUnavailable { function: function.to_string(), detail: why })
        }
        Some(lease_reply::Result::Unschedulable(reason)) => {
            Err(RayError::Unschedulable { function: function.to_string(), reason })
        }
        Some(lease_reply::Result::Spillback(_) | lease_reply::Result::Cancelled(_)) | None => {
            Err(RayError::Internal("empty lease reply".into()))
        }
    }
}

/// Whether `demand` fits in `available`, allowing for rounding in fractional
/// amounts; a resource `available` lacks counts as zero.
pub fn fits(available: &BTreeMap<String, f64>, demand: &BTreeMap<String, f64>) -> bool {
    const EPSILON: f64 = 1e-9;
    demand.iter().all(|(k, v)| available.get(k).copied().unwrap_or(0.0) + EPSILON >= *v)
}

/// Resource list to map.
pub fn resources_to_map(r: &[Resource]) -> BTreeMap<String, f64> {
    r.iter().map(|r| (r.name.clone(), r.amount)).collect()
}

/// Resource map to list.
pub fn resources_from_map(m: &BTreeMap<String, f64>) -> Vec<Resource> {
    m.iter().map(|(k, v)| Resource { name: k.clone(), amount: *v }).collect()
}

/// Formats resources the way `ray status` does: `{CPU: 2, GPU: 1}`.
pub fn format_resources(m: &BTreeMap<String, f64>) -> String {
    let parts: Vec<String> = m
        .iter()
        .map(|(k, v)| {
            if k == "memory" || k == "object_store_memory" {
                format!("{k}: {}", format_bytes(*v as u64))
            } else if v.fract() == 0.0 {
                format!("{k}: {v:.0}")
            } else {
                format!("{k}: {v}")
            }
        })
        .collect();
    format!("{{{}}}", parts.join(", "))
}

/// Formats a byte count as `1.50 GiB`.
pub fn format_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{v:.2} {}", UNITS[unit]) }
}

/// Names this machine, so processes can tell whether they share its files:
/// `RAYREPL_HOST_ID` if set (tests use it to play another machine), else the
/// systemd machine id, else the kernel's boot id, else the hostname.
pub fn host_id() -> String {
    if let Ok(id) = std::env::var("RAYREPL_HOST_ID")
        && !id.is_empty()
    {
        return id;
    }
    ["/etc/machine-id", "/proc/sys/kernel/random/boot_id", "/etc/hostname"]
        .iter()
        .find_map(|f| std::fs::read_to_string(f).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()))
        .unwrap_or_default()
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_survive_a_status_round_trip() {
        let e = RayError::ObjectStoreFull { requested: 10, used: 5, capacity: 12 };
        let s = to_status(&e);
        assert_eq!(s.code(), tonic::Code::ResourceExhausted);
        assert_eq!(from_status(&s, "node"), e);
    }

    #[test]
    fn malformed_ids_in_requests_are_invalid_arguments() {
        let s = parse_object_id(&[1, 2]).unwrap_err();
        assert_eq!(s.code(), tonic::Code::InvalidArgument);
        assert!(s.message().contains("malformed object id"), "{}", s.message());
        assert_eq!(parse_task_id(&[0; 5]).unwrap_err().code(), tonic::Code::InvalidArgument);
        assert_eq!(parse_task_id(&[9; 16]).unwrap(), ray_abi::TaskId([9; 16]));
    }

    #[test]
    fn token_check_rejects_missing_and_wrong_tokens() {
        let mut check = CheckToken::new("secret");
        assert_eq!(check.call(Request::new(())).unwrap_err().code(), tonic::Code::Unauthenticated);
        let mut req = Request::new(());
        req.metadata_mut().insert(TOKEN_HEADER, "wrong".parse().unwrap());
        assert_eq!(check.call(req).unwrap_err().code(), tonic::Code::Unauthenticated);
        let mut req = Request::new(());
        req.metadata_mut().insert(TOKEN_HEADER, "secret".parse().unwrap());
        assert!(check.call(req).is_ok());
    }

    fn res(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn fits_counts_missing_resources_as_zero_and_forgives_rounding() {
        let available = res(&[("CPU", 1.0), ("Custom1", 0.3)]);
        assert!(fits(&available, &res(&[])));
        assert!(fits(&available, &res(&[("CPU", 1.0)])));
        assert!(!fits(&available, &res(&[("CPU", 1.5)])));
        assert!(!fits(&available, &res(&[("GPU", 1.0)])));
        assert!(fits(&available, &res(&[("GPU", 0.0)])));
        // 0.1 + 0.2 is a hair over 0.3 in floating point, and still fits in it.
        assert!(fits(&res(&[("Custom1", 0.3)]), &res(&[("Custom1", 0.1 + 0.2)])));
    }

    #[test]
    fn lease_replies_without_a_lease_become_the_callers_error() {
        let asked = res(&[("GPU", 1.0)]);
        let lease = Lease { lease_id: 4, ..Lease::default() };
        assert_eq!(granted_lease(Some(lease_reply::Result::Lease(lease.clone())), "f", &asked), Ok(lease));
        assert_eq!(
            granted_lease(Some(lease_reply::Result::Infeasible("{CPU: 2}".into())), "f", &asked),
            Err(RayError::Infeasible {
                function: "f".into(),
                requested: "{GPU: 1}".into(),
                available: "{CPU: 2}".into()
            })
        );
        assert_eq!(
            granted_lease(Some(lease_reply::Result::WorkerStartFailed("no exe".into())), "f", &asked),
            Err(RayError::FunctionUnavailable { function: "f".into(), detail: "no exe".into() })
        );
        for empty in [
            None,
            Some(lease_reply::Result::Cancelled(true)),
            Some(lease_reply::Result::Spillback(Spillback::default())),
        ] {
            assert!(matches!(granted_lease(empty, "f", &asked), Err(RayError::Internal(_))));
        }
    }

    #[test]
    fn function_descriptors_travel_without_their_address() {
        let f = ray_abi::FunctionDescriptor {
            name: "f".into(),
            key: "m::f".into(),
            symbol: "s".into(),
            artifact: None,
            address: 7,
        };
        assert_eq!(
            FunctionDescriptor::from(f.clone()),
            FunctionDescriptor { name: "f".into(), key: "m::f".into(), symbol: "s".into(), artifact: String::new() }
        );
        let cell = ray_abi::FunctionDescriptor { artifact: Some("abc".into()), ..f };
        assert_eq!(FunctionDescriptor::from(cell).artifact, "abc");
    }

    #[test]
    fn resources_format_like_ray_status() {
        let mut m = BTreeMap::new();
        m.insert("CPU".to_string(), 2.0);
        m.insert("GPU".to_string(), 0.5);
        assert_eq!(format_resources(&m), "{CPU: 2, GPU: 0.5}");
        assert_eq!(format_bytes(1536), "1.50 KiB");
    }

    #[test]
    fn states_carry_rays_names() {
        // Ray's TaskStatus numbers too, for the states rayrepl reports.
        for (state, name, number) in [
            (TaskState::PendingArgsAvail, "PENDING_ARGS_AVAIL", 1),
            (TaskState::PendingNodeAssignment, "PENDING_NODE_ASSIGNMENT", 2),
            (TaskState::Running, "RUNNING", 6),
            (TaskState::Finished, "FINISHED", 9),
            (TaskState::Failed, "FAILED", 10),
        ] {
            assert_eq!((state.as_str_name(), state as i32), (name, number));
            assert_eq!(TaskState::from_str_name(name), Some(state));
        }
        for (state, name) in [
            (ActorState::PendingCreation, "PENDING_CREATION"),
            (ActorState::Alive, "ALIVE"),
            (ActorState::Restarting, "RESTARTING"),
            (ActorState::Dead, "DEAD"),
        ] {
            assert_eq!(state.as_str_name(), name);
            assert_eq!(ActorState::from_str_name(name), Some(state));
        }
        assert_eq!([NodeState::Alive.as_str_name(), NodeState::Dead.as_str_name()], ["ALIVE", "DEAD"]);
        assert_eq!([JobStatus::Running.as_str_name(), JobStatus::Succeeded.as_str_name()], ["RUNNING", "SUCCEEDED"]);
    }

    #[test]
    fn an_unset_or_unknown_state_reads_as_nil() {
        assert_eq!(TaskEvent::default().state(), TaskState::Nil);
        assert_eq!(TaskEvent { state: 99, ..TaskEvent::default() }.state(), TaskState::Nil);
        assert!(TaskState::try_from(99).is_err());
        assert_eq!(ActorInfo::default().state(), ActorState::Nil);
        assert_eq!(JobInfo::default().status(), JobStatus::Nil);
        assert!(!NodeInfo::default().is_alive());
        assert!(NodeInfo { state: NodeState::Alive.into(), ..NodeInfo::default() }.is_alive());
        assert!(!NodeInfo { state: NodeState::Dead.into(), ..NodeInfo::default() }.is_alive());
    }
}
