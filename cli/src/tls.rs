//! `--tls`, `--ca`, `--insecure`, `--server-name`: the client side of Nest's `tlsOptions`.
//!
//! One rustls configuration serves both paths: [`nestling::tls::ClientTls`] for `call`
//! (through `ClientBuilder::tls`) and a [`tokio_rustls::TlsConnector`] for `emit`, which
//! writes its one frame itself.
//!
//! TODO(tls): trust the system's root certificates when `--ca` is absent (needs a roots crate
//! such as `rustls-native-certs`), client certificates for mutual TLS (`--cert`/`--key`), and
//! `listen --tls` (a `tokio_rustls::TlsAcceptor` in front of the sink).

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::{self, CryptoProvider};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{
    ClientConfig, DigitallySignedStruct, Error as RustlsError, RootCertStore, SignatureScheme,
};

use crate::output::Failure;
use crate::Target;

/// Resolved TLS settings for one target.
pub struct Tls {
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
    explicit_name: Option<String>,
}

impl Tls {
    /// The settings asked for on the command line, or `None` without `--tls`.
    pub fn from_args(target: &Target, addr: &str) -> Result<Option<Self>, Failure> {
        if !target.tls {
            return Ok(None);
        }
        let config =
            match (&target.ca, target.insecure) {
                (Some(ca), _) => trusting(ca)?,
                (None, true) => insecure()?,
                (None, false) => return Err(Failure::usage(
                    "--tls needs the certificate to trust: --ca <PEM> (the CA or the service's \
                     self-signed certificate, Nest's tlsOptions.ca), or --insecure to skip \
                     verification",
                )),
            };
        let name = target.server_name.clone().unwrap_or_else(|| host_of(addr));
        let server_name = ServerName::try_from(name.clone())
            .map_err(|_| Failure::usage(format!("invalid TLS server name {name:?}")))?;
        Ok(Some(Self {
            config,
            server_name,
            explicit_name: target.server_name.clone(),
        }))
    }

    /// For `nestling::ClientBuilder::tls`.
    pub fn client_tls(&self) -> Result<nestling::tls::ClientTls, Failure> {
        let tls = nestling::tls::ClientTls::from_config(self.config.clone());
        match &self.explicit_name {
            Some(name) => tls
                .server_name(name)
                .map_err(|e| Failure::usage(format!("--server-name: {e}"))),
            None => Ok(tls),
        }
    }

    /// For a hand-made connection (`emit`).
    pub fn connector(&self) -> (tokio_rustls::TlsConnector, ServerName<'static>) {
        (
            tokio_rustls::TlsConnector::from(self.config.clone()),
            self.server_name.clone(),
        )
    }
}

/// `host` of `host:port` / `[v6]:port`, as `nestling::tls::ClientTls` derives it.
fn host_of(addr: &str) -> String {
    addr.rsplit_once(':')
        .map_or(addr, |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned()
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(crypto::ring::default_provider())
}

fn trusting(ca: &Path) -> Result<Arc<ClientConfig>, Failure> {
    let shown = ca.display();
    let pem = std::fs::read(ca).map_err(|e| Failure::usage(format!("--ca {shown}: {e}")))?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| Failure::usage(format!("--ca {shown}: bad PEM: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| Failure::usage(format!("--ca {shown}: {e}")))?;
    }
    if roots.is_empty() {
        return Err(Failure::usage(format!(
            "--ca {shown}: no certificate found (expected -----BEGIN CERTIFICATE-----)"
        )));
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Failure::usage(format!("TLS setup failed: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn insecure() -> Result<Arc<ClientConfig>, Failure> {
    let provider = provider();
    let config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Failure::usage(format!("TLS setup failed: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// `--insecure`: any certificate and name is accepted; handshake signatures are still
/// checked, so the connection is encrypted but not authenticated.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, RustlsError> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, RustlsError> {
        crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, RustlsError> {
        crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        assert_eq!(host_of("127.0.0.1:8888"), "127.0.0.1");
        assert_eq!(host_of("localhost:8888"), "localhost");
        assert_eq!(host_of("[::1]:8888"), "::1");
    }
}
