//! Optional TLS for every connection between a cluster's processes.
//!
//! The cluster token authenticates every call, but over plain TCP it, and every
//! argument and result, crosses the network readable by anyone on the path. That
//! is fine on loopback and not off it. With TLS configured, every gRPC listener
//! and client, and the dashboard, speak TLS 1.2+ (rustls), and the gRPC ones
//! authenticate both ends: a peer must hold a certificate signed by the cluster's
//! CA before it can send a byte of HTTP/2, and then the token as well.
//!
//! TLS is configured by three PEM files named in the environment, so that every
//! process a cluster starts (head, nodes, workers, job drivers) inherits it:
//! [`CERT_ENV`], [`KEY_ENV`] and [`CA_ENV`], which `rayrepl start --tls-cert
//! --tls-key --tls-ca` set. `rayrepl tls init DIR` writes a CA and one cluster
//! certificate. Peers are verified against the CA and the name [`SERVER_NAME`],
//! not the address they were dialled at, so one certificate serves every
//! machine, whatever its IPs. The worker's direct call socket (a raw TCP
//! protocol) is not opened under TLS: actor calls then take the gRPC path.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

/// The PEM certificate (chain) this process presents.
pub const CERT_ENV: &str = "RAYREPL_TLS_CERT";
/// Its PEM private key.
pub const KEY_ENV: &str = "RAYREPL_TLS_KEY";
/// The PEM certificate of the cluster's CA, which peers must be signed by.
pub const CA_ENV: &str = "RAYREPL_TLS_CA";
/// The name every cluster certificate carries and every peer is checked for.
pub const SERVER_NAME: &str = "rayrepl-cluster";

/// A byte stream, plain TCP or TLS over it, as a server or client holds it once
/// any handshake is done.
pub trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for T {}

/// TLS settings that cannot be used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TlsError {
    /// Some of the three variables are set, not all.
    #[error(
        "TLS needs all of {CERT_ENV}, {KEY_ENV} and {CA_ENV} (or --tls-cert, --tls-key and --tls-ca); \
         only {given} given. `rayrepl tls init DIR` makes a set"
    )]
    Incomplete {
        /// Which were given.
        given: String,
    },
    /// rustls would not take the files.
    #[error("the TLS files cannot be used: {0}")]
    Rejected(String),
    /// A file cannot be read or holds no usable PEM.
    #[error("cannot use {what} {path} for TLS: {detail}")]
    File {
        /// Which file.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// Why not.
        detail: String,
    },
}

/// This process's TLS material, read once.
#[derive(Debug)]
pub struct Tls {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    ca_pem: Vec<u8>,
}

static TLS: OnceLock<Result<Option<Tls>, TlsError>> = OnceLock::new();

/// Makes this process use these files (a command's `--tls-*` flags) rather than
/// the environment's; an error if they cannot be used, or if TLS was already in use.
pub fn configure(cert: PathBuf, key: PathBuf, ca: PathBuf) -> Result<(), TlsError> {
    let tls = Tls::from_files(Some(cert), Some(key), Some(ca))?;
    TLS.set(Ok(tls)).map_err(|_| TlsError::Rejected("TLS was set up before the flags were read".into()))
}

/// The TLS this process uses: `None` when none is configured. Read from the
/// environment once; daemons call it at start so a bad setting stops them there.
pub fn config() -> Result<Option<&'static Tls>, TlsError> {
    TLS.get_or_init(|| {
        let var = |name| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        Tls::from_files(var(CERT_ENV), var(KEY_ENV), var(CA_ENV))
    })
    .as_ref()
    .map(Option::as_ref)
    .map_err(Clone::clone)
}

/// Whether this process speaks TLS (a bad setting counts as yes: it fails
/// where it is used rather than falling back to plain text).
pub fn enabled() -> bool {
    !matches!(config(), Ok(None))
}

impl Tls {
    /// TLS from the three files, `None` if none is given.
    pub fn from_files(
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
        ca: Option<PathBuf>,
    ) -> Result<Option<Self>, TlsError> {
        let (cert, key, ca) = match (cert, key, ca) {
            (None, None, None) => return Ok(None),
            (Some(cert), Some(key), Some(ca)) => (cert, key, ca),
            (cert, key, ca) => {
                let given: Vec<&str> = [(cert.is_some(), CERT_ENV), (key.is_some(), KEY_ENV), (ca.is_some(), CA_ENV)]
                    .into_iter()
                    .filter_map(|(set, name)| set.then_some(name))
                    .collect();
                return Err(TlsError::Incomplete { given: given.join(" and ") });
            }
        };
        let read = |what: &'static str, path: PathBuf| {
            std::fs::read(&path)
                .map_err(|e| TlsError::File { what, path: path.clone(), detail: e.to_string() })
                .map(|bytes| (bytes, path))
        };
        let (cert_pem, cert_path) = read("the certificate", cert)?;
        let (key_pem, key_path) = read("the private key", key)?;
        let (ca_pem, ca_path) = read("the CA certificate", ca)?;
        let tls = Tls { cert_pem, key_pem, ca_pem };
        let bad = |what, path: PathBuf| move |detail: String| TlsError::File { what, path, detail };
        certs(&tls.cert_pem).map_err(bad("the certificate", cert_path))?;
        tls.key().map_err(bad("the private key", key_path))?;
        certs(&tls.ca_pem).map_err(bad("the CA certificate", ca_path))?;
        Ok(Some(tls))
    }

    fn key(&self) -> Result<rustls_pki_types::PrivateKeyDer<'static>, String> {
        use rustls_pki_types::pem::PemObject;
        rustls_pki_types::PrivateKeyDer::from_pem_slice(&self.key_pem).map_err(|e| format!("no PEM private key: {e}"))
    }

    /// A gRPC server's TLS: this identity, and clients must present a
    /// certificate signed by the cluster's CA.
    pub fn grpc_server(&self) -> tonic::transport::ServerTlsConfig {
        use tonic::transport::{Certificate, Identity, ServerTlsConfig};
        ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .client_ca_root(Certificate::from_pem(&self.ca_pem))
    }

    /// A gRPC client's TLS: the server must be a cluster member, and this
    /// process shows it is one too.
    pub fn grpc_client(&self) -> tonic::transport::ClientTlsConfig {
        use tonic::transport::{Certificate, ClientTlsConfig, Identity};
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .domain_name(SERVER_NAME)
    }

    /// The dashboard's TLS: browsers have no cluster certificate, so clients
    /// are not asked for one (the token still is).
    pub fn http_server(&self) -> Result<Arc<tokio_rustls::rustls::ServerConfig>, TlsError> {
        let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(rejected)?
            .with_no_client_auth()
            .with_single_cert(
                certs(&self.cert_pem).map_err(TlsError::Rejected)?,
                self.key().map_err(TlsError::Rejected)?,
            )
            .map_err(rejected)?;
        Ok(Arc::new(config))
    }

    /// A client of the dashboard (the `rayrepl job` commands).
    pub fn http_client(&self) -> Result<tokio_rustls::TlsConnector, TlsError> {
        let mut roots = tokio_rustls::rustls::RootCertStore::empty();
        for cert in certs(&self.ca_pem).map_err(TlsError::Rejected)? {
            roots.add(cert).map_err(rejected)?;
        }
        let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(rejected)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
    }
}

fn rejected(e: tokio_rustls::rustls::Error) -> TlsError {
    TlsError::Rejected(e.to_string())
}

fn certs(pem: &[u8]) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>, String> {
    use rustls_pki_types::pem::PemObject;
    let certs: Vec<_> = rustls_pki_types::CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("not PEM certificates: {e}"))?;
    if certs.is_empty() {
        return Err("it holds no certificate".into());
    }
    Ok(certs)
}

/// rustls on ring, as tonic's `tls-ring` uses for gRPC. rustls deprecates it
/// for lacking post-quantum key exchange, which only its aws-lc-rs provider has;
/// that one needs cmake and a C toolchain to build, which this project avoids.
#[allow(deprecated)]
fn provider() -> Arc<tokio_rustls::rustls::crypto::CryptoProvider> {
    Arc::new(tokio_rustls::rustls::crypto::ring::default_provider())
}

/// The server name a dashboard client checks: the cluster's, whatever the address.
pub fn server_name() -> rustls_pki_types::ServerName<'static> {
    rustls_pki_types::ServerName::try_from(SERVER_NAME).expect("a valid DNS name")
}
