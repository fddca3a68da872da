//! rustls client configurations built from the config's TLS settings.

use std::path::Path;
use std::sync::Arc;

use rustls::DigitallySignedStruct;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use serde::Deserialize;
use std::path::PathBuf;

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `server_name` is not a DNS name or an IP address.
    #[error("invalid TLS server name {0:?}")]
    ServerName(String),
    /// rustls refused the material.
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Builds a client config: `ca_file` or the system's roots, and an optional client certificate.
/// With `server_name`, the server's certificate is checked against that name instead of the
/// host the client connects to: for a client (rumqttc) that takes the name from the address.
pub fn client_config(
    ca_file: Option<&Path>,
    client_cert: Option<(&Path, &Path)>,
    server_name: Option<&str>,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in read_certs(path)? {
                roots.add(cert).map_err(|e| file_err(path, e))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                // Skip certificates rustls cannot parse rather than refuse every connection.
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(TlsError::File {
                    path: "system trust store".into(),
                    reason: "no CA certificates found; set tls.ca_file".into(),
                });
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match server_name {
        None => builder.with_root_certificates(roots),
        Some(name) => {
            let name = ServerName::try_from(name.to_owned())
                .map_err(|_| TlsError::ServerName(name.to_owned()))?;
            let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::Rustls(rustls::Error::General(e.to_string())))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NamedVerifier { name, inner }))
        }
    };
    let config = match client_cert {
        Some((cert, key)) => builder.with_client_auth_cert(read_certs(cert)?, read_key(key)?)?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

fn file_err(path: &Path, e: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = std::fs::read(path).map_err(|e| file_err(path, e))?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| file_err(path, e))?;
    if certs.is_empty() {
        return Err(file_err(path, "no PEM certificate in the file"));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = std::fs::read(path).map_err(|e| file_err(path, e))?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| file_err(path, e))?
        .ok_or_else(|| file_err(path, "no PEM private key in the file"))
}

/// Full WebPKI verification, against a configured name rather than the one dialled. Everything
/// else (chain, validity, signatures) is the standard verifier's.
#[derive(Debug)]
struct NamedVerifier {
    name: ServerName<'static>,
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for NamedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _dialled: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
/// `[mqtt.tls]` and `[kafka.tls]`: TLS to a broker.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// CA bundle to verify the broker; `None` uses the system roots.
    pub ca_file: Option<PathBuf>,
    /// Client certificate for mutual TLS; requires `client_key_file`.
    pub client_cert_file: Option<PathBuf>,
    /// Client private key for mutual TLS; requires `client_cert_file`.
    pub client_key_file: Option<PathBuf>,
    /// Name to verify the broker certificate against; defaults to the broker's host.
    pub server_name: Option<String>,
}

impl TlsConfig {
    /// The configured server name, or the broker `host`.
    pub fn effective_server_name<'a>(&'a self, host: &'a str) -> &'a str {
        self.server_name.as_deref().unwrap_or(host)
    }
}
