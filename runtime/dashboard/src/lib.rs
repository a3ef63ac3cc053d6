//! The head's HTTP face: Ray's dashboard port (8265) for Ray's own clients and
//! for people in a browser.
//!
//! Ray users already have clients for this port: `ray job submit --address
//! http://HEAD:8265`, `JobSubmissionClient`, and `ray list nodes --address ...`.
//! They work against a rayrepl head unchanged because this server answers
//! Ray's paths with Ray's JSON: the Jobs API ([`jobs_api`]), working-directory
//! packages ([`packages`]), the state API ([`state_api`]) and nodes' logs. The same port
//! serves the web dashboard ([`ui`]), its assets embedded in the binary, since
//! clusters are often offline.
//!
//! It runs inside the head process, beside the gRPC server, and reads the
//! cluster as every other tool does: as a client of the head's gRPC service,
//! with the cluster token. Every request must carry that token ([`auth`]).

pub mod auth;
pub mod error;
mod jobs;
mod jobs_api;
pub mod lifecycle;
mod logs_api;
pub mod packages;
pub mod state_api;
mod ui;

use axum::Router;
use axum::routing::{get, post};
pub use jobs::{JobsConfig, SubmitRequest};
use std::future::IntoFuture;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Ray's dashboard port.
pub const DEFAULT_PORT: u16 = 8265;

/// What a dashboard serves.
#[derive(Clone, Debug)]
pub struct DashboardConfig {
    /// The head's gRPC address.
    pub head_address: String,
    /// The cluster token.
    pub token: String,
    /// The session directory.
    pub session_dir: PathBuf,
    /// Between SIGTERM and SIGKILL when a job is stopped.
    pub stop_grace: Duration,
}

/// What every handler shares.
#[derive(Clone)]
struct App {
    head: ray_proto::HeadClient,
    /// The cluster token, for calls to node daemons.
    token: Arc<str>,
    jobs: jobs::Jobs,
    session_name: Arc<str>,
    /// The head's gRPC address, which `/api/version` tells drivers given this port.
    head_address: Arc<str>,
}

/// The whole server: every route, behind the token check.
fn router(config: &DashboardConfig, head: ray_proto::HeadClient, jobs: jobs::Jobs) -> Router {
    let app = App {
        head,
        token: config.token.as_str().into(),
        jobs,
        head_address: config.head_address.as_str().into(),
        session_name: config
            .session_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
            .into(),
    };
    let gate = auth::TokenGate {
        token: config.token.as_str().into(),
        token_file: config.session_dir.join("token").display().to_string().into(),
    };
    let api = Router::new()
        .route("/api/version", get(jobs_api::version))
        .route("/api/packages/{protocol}/{package_name}", get(jobs_api::has_package).put(jobs_api::put_package))
        .route("/api/jobs/", get(jobs_api::list).post(jobs_api::submit))
        .route("/api/jobs", get(jobs_api::list).post(jobs_api::submit))
        .route("/api/jobs/{id}", get(jobs_api::info).delete(jobs_api::delete))
        .route("/api/jobs/{id}/stop", post(jobs_api::stop))
        .route("/api/jobs/{id}/logs", get(jobs_api::logs))
        .route("/api/jobs/{id}/logs/tail", get(jobs_api::tail))
        .route("/api/v0/logs", get(logs_api::list))
        .route("/api/v0/logs/{media_type}", get(logs_api::file))
        .route("/api/v0/{resource}", get(jobs_api::state_list))
        .merge(ui::routes())
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(app);
    Router::new()
        .route(auth::LOGIN_PATH, post(auth::login))
        .with_state(gate.clone())
        .merge(api)
        .layer(axum::middleware::from_fn_with_state(gate, auth::require_token))
}

/// Serves the dashboard on `listener` until `stop` resolves, then stops the
/// jobs still running (they are bound to the cluster, as in Ray).
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: DashboardConfig,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let channel = ray_proto::lazy_channel(&config.head_address, &config.token)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let head = ray_proto::head_client(channel);
    let jobs = jobs::Jobs::new(
        JobsConfig {
            head_address: config.head_address.clone(),
            token: config.token.clone(),
            session_dir: config.session_dir.clone(),
            stop_grace: config.stop_grace,
        },
        head.clone(),
    );
    let app = router(&config, head, jobs.clone()).into_make_service_with_connect_info::<auth::Client>();
    let tls = match ray_proto::tls::config() {
        Ok(Some(tls)) => Some(tls.http_server().map_err(std::io::Error::other)?),
        Ok(None) => None,
        Err(e) => return Err(std::io::Error::other(e)),
    };
    let listener = auth::Listener::new(listener, tls)?;
    // Not a graceful shutdown: a followed log or a live page never ends by itself.
    let result = tokio::select! {
        served = axum::serve(listener, app).into_future() => served,
        () = stop => Ok(()),
    };
    jobs.stop_all_and_wait().await;
    result
}
