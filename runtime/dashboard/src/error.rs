//! What goes wrong answering an HTTP request, and the status each answer gets.
//!
//! Handlers return [`DashboardError`]; this is the one place it becomes an HTTP
//! status. The body is plain text that says what happened and what to do, as
//! Ray's dashboard answers with text bodies its clients print as they are.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ray_abi::RayError;

/// Why a request was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    /// The request is malformed or asks for something impossible (400).
    #[error("{0}")]
    BadRequest(String),
    /// No such job, package or resource (404).
    #[error("{0}")]
    NotFound(String),
    /// A body over the size limit (413).
    #[error("{0}")]
    TooLarge(String),
    /// The head's control store did not answer (503).
    #[error("the head's control store did not answer: {0}; check `rayrepl status` and the head's log")]
    Head(#[from] RayError),
    /// Reading or writing the session directory failed (500).
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A private directory or file of the session cannot be used (500).
    #[error(transparent)]
    Private(#[from] ray_proto::private::PrivateError),
}

impl DashboardError {
    /// An I/O failure while doing `what`.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DashboardError {
        let what = what.into();
        move |source| DashboardError::Io { what, source }
    }

    /// A private directory or file that cannot be used.
    pub fn private(e: ray_proto::private::PrivateError) -> DashboardError {
        DashboardError::Private(e)
    }

    /// A blocking task for `what` that panicked or was cancelled (500).
    pub fn join(what: &str) -> impl FnOnce(tokio::task::JoinError) -> DashboardError + '_ {
        move |e| DashboardError::Io { what: what.to_string(), source: std::io::Error::other(e) }
    }

    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            DashboardError::BadRequest(_) => StatusCode::BAD_REQUEST,
            DashboardError::NotFound(_) => StatusCode::NOT_FOUND,
            DashboardError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            DashboardError::Head(_) => StatusCode::SERVICE_UNAVAILABLE,
            DashboardError::Io { .. } | DashboardError::Private(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<tonic::Status> for DashboardError {
    fn from(status: tonic::Status) -> Self {
        DashboardError::Head(ray_proto::from_status(&status, "the head"))
    }
}

impl IntoResponse for DashboardError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!("dashboard request failed: {self}");
        }
        (status, self.to_string()).into_response()
    }
}
