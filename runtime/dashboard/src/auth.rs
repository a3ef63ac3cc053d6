//! Who may use the dashboard port: holders of the cluster token.
//!
//! Anyone who can submit a job can run any command on the head's machine, so
//! every request needs the token, sent the way Ray 2.60's clients send it: an
//! `authorization: Bearer <token>` header (the SDK and CLI, which read it from
//! `RAY_AUTH_TOKEN` or `RAY_AUTH_TOKEN_PATH` when `RAY_AUTH_MODE=token`), an
//! `x-ray-authorization` header (proxies), or the `ray-authentication-token`
//! cookie (browsers). As Ray's dashboard does, a request without a token gets
//! 401 and one with a wrong token 403.
//!
//! A person in a browser signs in once: with the `?token=` link that `rayrepl
//! start --head` prints (as Jupyter's), or by pasting the token into the sign-in
//! page. Either sets the cookie and redirects to the same page without the token
//! in its address.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use std::sync::Arc;

/// The header Ray's SDK sends: `authorization: Bearer <token>`.
pub const AUTHORIZATION: &str = "authorization";
/// The header proxies (KubeRay) send instead.
pub const RAY_AUTHORIZATION: &str = "x-ray-authorization";
/// The cookie a signed-in browser sends.
pub const COOKIE_NAME: &str = "ray-authentication-token";
/// How long a browser stays signed in: 30 days, as Ray's cookie.
const COOKIE_MAX_AGE_SECS: u64 = 30 * 24 * 60 * 60;
/// Where the sign-in form posts.
pub const LOGIN_PATH: &str = "/login";

/// What a request's credentials amount to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The token matches.
    Granted,
    /// No token came with the request.
    Missing,
    /// A token came, and it is not this cluster's.
    Wrong,
}

/// Decides `headers` against `token`, taking the first credential present in
/// Ray's order: `authorization`, then `x-ray-authorization`, then the cookie.
pub fn check(headers: &HeaderMap, token: &str) -> Access {
    let presented = header_token(headers, AUTHORIZATION)
        .or_else(|| header_token(headers, RAY_AUTHORIZATION))
        .or_else(|| cookie(headers, COOKIE_NAME));
    match presented {
        None => Access::Missing,
        Some(p) if same(p.as_bytes(), token.as_bytes()) => Access::Granted,
        Some(_) => Access::Wrong,
    }
}

/// The token in header `name`, with or without its `Bearer ` scheme.
fn header_token<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    let value = headers.get(name)?.to_str().ok()?.trim();
    let token = match value.get(..6) {
        Some(scheme) if scheme.eq_ignore_ascii_case("bearer") => value[6..].trim(),
        _ => value,
    };
    (!token.is_empty()).then_some(token)
}

/// Cookie `name` from the `cookie` headers.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, v)| *k == name && !v.is_empty())
        .map(|(_, v)| v)
}

/// Equality that takes as long whatever the first differing byte.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The cookie that keeps a browser signed in.
fn sign_in_cookie(token: &str) -> HeaderValue {
    let value = format!("{COOKIE_NAME}={token}; Path=/; Max-Age={COOKIE_MAX_AGE_SECS}; HttpOnly; SameSite=Strict");
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The token in a `?token=` query, and the address without it.
fn token_in_query(uri: &axum::http::Uri) -> Option<(String, String)> {
    let query = uri.query()?;
    let mut token = None;
    let rest: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .filter(|(k, v)| {
            if k == "token" {
                token = Some(v.to_string());
                false
            } else {
                true
            }
        })
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let token = token?;
    let mut clean = uri.path().to_string();
    if !rest.is_empty() {
        clean.push('?');
        clean.push_str(&form_urlencoded::Serializer::new(String::new()).extend_pairs(rest).finish());
    }
    Some((token, clean))
}

/// Where the dashboard's token is, to tell a refused client.
#[derive(Clone)]
pub struct TokenGate {
    /// The cluster token.
    pub token: Arc<str>,
    /// The file that holds it, named in refusals.
    pub token_file: Arc<str>,
}

impl TokenGate {
    fn missing_text(&self) -> String {
        format!(
            "Unauthorized: Missing authentication token. This rayrepl cluster requires its token: send \
             `authorization: Bearer <token>`, or set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH={} for \
             Ray's clients; in a browser, open the ?token= link `rayrepl start --head` printed.",
            self.token_file
        )
    }

    fn wrong_text(&self) -> String {
        format!(
            "Forbidden: Invalid authentication token. The token sent is not this cluster's; it is in {} \
             on the head's machine.",
            self.token_file
        )
    }
}

/// Whether a request comes from a person's browser asking for a page (and so
/// should get the sign-in page rather than a bare 401).
fn wants_page(req: &Request) -> bool {
    req.method() == Method::GET
        && !req.uri().path().starts_with("/api/")
        && req.headers().get(header::ACCEPT).and_then(|a| a.to_str().ok()).is_some_and(|a| a.contains("text/html"))
}

/// The dashboard's listener: connections that never present the token are
/// closed, as on every listener (see [`ray_proto::gate`]), and, when the cluster
/// uses TLS, connections are TLS ([`ray_proto::tls`]). The sign-in page is
/// served without a token, so a browser that stays on it reconnects to sign in.
pub struct Listener {
    connections: tokio::sync::mpsc::Receiver<Connection>,
    local: std::net::SocketAddr,
}

use ray_proto::gate::Peer;
use ray_proto::tls::Stream;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::ReadBuf;

/// How long a TLS handshake may take.
const HANDSHAKE_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

impl Listener {
    /// Accepts on `listener`, with TLS if `tls` is given. Handshakes run beside
    /// the accept loop, so a slow one holds nobody else up.
    pub fn new(
        listener: tokio::net::TcpListener,
        tls: Option<std::sync::Arc<tokio_rustls::rustls::ServerConfig>>,
    ) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let listener = ray_proto::gate::GatedListener::new(listener);
        let (tx, connections) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let io = tokio::select! {
                    io = listener.accept() => io,
                    () = tx.closed() => return,
                };
                let peer = io.peer().clone();
                let Some(tls) = tls.clone() else {
                    if tx.send(Connection { stream: Box::new(io), peer }).await.is_err() {
                        return;
                    }
                    continue;
                };
                let tx = tx.clone();
                tokio::spawn(async move {
                    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
                    match tokio::time::timeout(HANDSHAKE_LIMIT, acceptor.accept(io)).await {
                        Ok(Ok(stream)) => {
                            let _ = tx.send(Connection { stream: Box::new(stream), peer }).await;
                        }
                        Ok(Err(e)) => tracing::debug!("a dashboard TLS handshake failed: {e}"),
                        Err(_) => tracing::debug!("a dashboard TLS handshake took longer than {HANDSHAKE_LIMIT:?}"),
                    }
                });
            }
        });
        Ok(Listener { connections, local })
    }
}

/// A dashboard connection: its bytes, plain or TLS, and who it is at the gate.
pub struct Connection {
    stream: Box<dyn Stream>,
    peer: Peer,
}

impl tokio::io::AsyncRead for Connection {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Connection {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.stream).poll_shutdown(cx)
    }
}

impl axum::serve::Listener for Listener {
    type Io = Connection;
    type Addr = Option<std::net::SocketAddr>;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.connections.recv().await {
            Some(connection) => {
                let addr = connection.peer.remote;
                (connection, addr)
            }
            // The accept loop ends only when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(Some(self.local))
    }
}

/// The connection a request came on, so that presenting the token keeps it open.
#[derive(Clone, Debug)]
pub struct Client(Peer);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, Listener>> for Client {
    fn connect_info(stream: axum::serve::IncomingStream<'_, Listener>) -> Self {
        Client(stream.io().peer.clone())
    }
}

/// Keeps the request's connection open: it presented the token.
fn admit(req: &Request) {
    if let Some(axum::extract::ConnectInfo(Client(peer))) = req.extensions().get::<axum::extract::ConnectInfo<Client>>()
    {
        peer.authenticated();
    }
}

/// Middleware: lets requests with the token through and answers the rest.
pub async fn require_token(State(gate): State<TokenGate>, req: Request, next: Next) -> Response {
    if req.uri().path() == LOGIN_PATH {
        return next.run(req).await;
    }
    if req.method() == Method::GET
        && let Some((presented, clean)) = token_in_query(req.uri())
    {
        return if same(presented.as_bytes(), gate.token.as_bytes()) {
            admit(&req);
            signed_in(&gate.token, &clean)
        } else {
            (StatusCode::FORBIDDEN, sign_in_page(Some("That token is not this cluster's."))).into_response()
        };
    }
    match check(req.headers(), &gate.token) {
        Access::Granted => {
            admit(&req);
            next.run(req).await
        }
        Access::Missing if wants_page(&req) => (StatusCode::UNAUTHORIZED, sign_in_page(None)).into_response(),
        Access::Missing => (StatusCode::UNAUTHORIZED, gate.missing_text()).into_response(),
        Access::Wrong if wants_page(&req) => {
            (StatusCode::FORBIDDEN, sign_in_page(Some("The saved token is not this cluster's."))).into_response()
        }
        Access::Wrong => (StatusCode::FORBIDDEN, gate.wrong_text()).into_response(),
    }
}

/// A redirect to `to` that sets the sign-in cookie.
fn signed_in(token: &str, to: &str) -> Response {
    let mut response = Redirect::to(to).into_response();
    response.headers_mut().insert(header::SET_COOKIE, sign_in_cookie(token));
    response
}

/// The sign-in form's fields.
#[derive(serde::Deserialize)]
pub struct SignIn {
    token: String,
}

/// `POST /login`: the sign-in form.
pub async fn login(State(gate): State<TokenGate>, axum::Form(form): axum::Form<SignIn>) -> Response {
    if same(form.token.trim().as_bytes(), gate.token.as_bytes()) {
        signed_in(&gate.token, "/")
    } else {
        (StatusCode::FORBIDDEN, sign_in_page(Some("That token is not this cluster's."))).into_response()
    }
}

/// The page a browser without the token sees.
fn sign_in_page(problem: Option<&str>) -> Html<String> {
    let problem = problem.map(|p| format!("<p class=\"problem\">{p}</p>")).unwrap_or_default();
    Html(format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>rayrepl dashboard: sign in</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font:15px system-ui,sans-serif;background:#0f1419;color:#d6dde6;display:grid;place-items:center;height:100vh;margin:0}}
form{{background:#18202a;padding:2em;border-radius:8px;max-width:34em}}input{{width:100%;padding:.5em;font:inherit;margin:.8em 0;box-sizing:border-box}}
button{{padding:.5em 1.2em;font:inherit}}code{{color:#8fd3ff}}.problem{{color:#ff8f8f}}</style></head>
<body><form method="post" action="{LOGIN_PATH}"><h2>rayrepl dashboard</h2>{problem}
<p>This cluster needs its token. Open the <code>?token=</code> link that <code>rayrepl start --head</code> printed,
or paste the token from <code>session_latest/token</code> on the head's machine.</p>
<input type="password" name="token" placeholder="cluster token" autofocus autocomplete="off">
<button type="submit">Sign in</button></form></body></html>"#
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn each_of_rays_credentials_is_accepted() {
        let t = "abc123";
        assert_eq!(check(&headers(&[("authorization", "Bearer abc123")]), t), Access::Granted);
        assert_eq!(check(&headers(&[("x-ray-authorization", "Bearer abc123")]), t), Access::Granted);
        assert_eq!(check(&headers(&[("cookie", "a=b; ray-authentication-token=abc123")]), t), Access::Granted);
    }

    #[test]
    fn missing_and_wrong_tokens_are_told_apart() {
        let t = "abc123";
        assert_eq!(check(&headers(&[]), t), Access::Missing);
        assert_eq!(check(&headers(&[("authorization", "Bearer ")]), t), Access::Missing);
        assert_eq!(check(&headers(&[("cookie", "other=abc123")]), t), Access::Missing);
        assert_eq!(check(&headers(&[("authorization", "Bearer abc124")]), t), Access::Wrong);
        assert_eq!(check(&headers(&[("authorization", "Bearer abc1234")]), t), Access::Wrong);
        // The first credential present decides, as in Ray's middleware.
        let both = headers(&[("authorization", "Bearer nope"), ("cookie", "ray-authentication-token=abc123")]);
        assert_eq!(check(&both, t), Access::Wrong);
    }

    #[test]
    fn a_token_link_is_cleaned_from_the_address() {
        let uri: axum::http::Uri = "/jobs?token=s3cret&tab=logs".parse().unwrap();
        assert_eq!(token_in_query(&uri), Some(("s3cret".into(), "/jobs?tab=logs".into())));
        let uri: axum::http::Uri = "/?token=s3cret".parse().unwrap();
        assert_eq!(token_in_query(&uri), Some(("s3cret".into(), "/".into())));
        assert_eq!(token_in_query(&"/jobs?tab=logs".parse().unwrap()), None);
    }
}
