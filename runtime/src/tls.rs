//! TLS for servers and clients, the equivalent of Nest's `tlsOptions`.
//!
//! Inside TLS the framing is unchanged, so a Nest app with `tlsOptions` and a nestling
//! peer with these settings interoperate. Built on rustls with the `ring` provider.

use std::path::Path;
use std::sync::Arc;

pub use tokio_rustls::rustls;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// Why TLS settings could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file could not be read.
    #[error("could not read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The PEM text holds no certificate.
    #[error("no certificate found in the PEM data; expected -----BEGIN CERTIFICATE-----")]
    NoCertificate,
    /// The PEM text holds no private key.
    #[error("no private key found in the PEM data; expected a PKCS#8, PKCS#1 or SEC1 key")]
    NoKey,
    /// rustls rejected the certificates or keys.
    #[error("invalid TLS settings: {0}")]
    Rustls(#[from] rustls::Error),
    /// A server name to verify is not a valid DNS name or IP address.
    #[error("invalid server name {0:?} for certificate verification")]
    ServerName(String),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    // Explicit provider: never depends on (or panics over) a process-wide default.
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    Ok(certs)
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// Server-side TLS: a certificate chain and its private key.
///
/// ```no_run
/// let tls = nestling::tls::ServerTls::from_pem_files("cert.pem", "key.pem").unwrap();
/// let server = nestling::Server::builder().tls(tls).build().unwrap();
/// ```
#[derive(Clone)]
pub struct ServerTls {
    pub(crate) acceptor: tokio_rustls::TlsAcceptor,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerTls { .. }")
    }
}

impl ServerTls {
    /// From PEM text: the certificate chain (leaf first) and the private key.
    pub fn from_pem(cert_chain: &[u8], key: &[u8]) -> Result<Self, TlsError> {
        let key = PrivateKeyDer::from_pem_slice(key).map_err(|_| TlsError::NoKey)?;
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certs(cert_chain)?, key)?;
        Ok(Self::from_config(Arc::new(config)))
    }

    /// From PEM files (like Nest's `tlsOptions: { cert, key }`).
    pub fn from_pem_files(
        cert_chain: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<Self, TlsError> {
        Self::from_pem(&read(cert_chain.as_ref())?, &read(key.as_ref())?)
    }

    /// From a rustls configuration (client authentication, ALPN, other providers, …).
    pub fn from_config(config: Arc<rustls::ServerConfig>) -> Self {
        Self {
            acceptor: tokio_rustls::TlsAcceptor::from(config),
        }
    }
}

/// Client-side TLS: which certificates to trust and which name to verify.
///
/// ```
/// # let ca_pem = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap().cert.pem();
/// let tls = nestling::tls::ClientTls::with_root_pem(ca_pem.as_bytes()).unwrap();
/// let client = nestling::Client::builder("localhost:8888").tls(tls).build();
/// ```
#[derive(Clone)]
pub struct ClientTls {
    pub(crate) connector: tokio_rustls::TlsConnector,
    pub(crate) server_name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Trusts exactly the CA (or self-signed) certificates in `pem` (Nest's `ca` option).
    pub fn with_root_pem(pem: &[u8]) -> Result<Self, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in certs(pem)? {
            roots.add(cert)?;
        }
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self::from_config(Arc::new(config)))
    }

    /// Like [`with_root_pem`](Self::with_root_pem), reading a file.
    pub fn with_root_pem_file(path: impl AsRef<Path>) -> Result<Self, TlsError> {
        Self::with_root_pem(&read(path.as_ref())?)
    }

    /// From a rustls configuration (system roots, client certificates, …).
    pub fn from_config(config: Arc<rustls::ClientConfig>) -> Self {
        Self {
            connector: tokio_rustls::TlsConnector::from(config),
            server_name: None,
        }
    }

    /// The name to verify in the server's certificate (default: the host part of the
    /// address dialled).
    pub fn server_name(mut self, name: &str) -> Result<Self, TlsError> {
        self.server_name = Some(
            ServerName::try_from(name.to_owned()).map_err(|_| TlsError::ServerName(name.into()))?,
        );
        Ok(self)
    }

    pub(crate) fn name_for(&self, addr: &str) -> Result<ServerName<'static>, TlsError> {
        if let Some(name) = &self.server_name {
            return Ok(name.clone());
        }
        let host = addr
            .rsplit_once(':')
            .map_or(addr, |(h, _)| h)
            .trim_start_matches('[')
            .trim_end_matches(']');
        ServerName::try_from(host.to_owned()).map_err(|_| TlsError::ServerName(host.into()))
    }
}
