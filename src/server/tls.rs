//! HTTPS: `--tls-cert` / `--tls-key`, rustls with ring, ALPN `h2` and
//! `http/1.1`. Over h2 every tab of a site shares one connection, which
//! lifts the six-connections-per-host limit that breaks pages with several
//! streams over HTTP/1.1.
//!
//! h2 connections (ALPN) go to hyper; HTTP/1.1 ones are routed as plain
//! TCP is: a fresh stream is written by [`super::direct`] straight from its
//! queue (no hyper buffers: 36.9 KB per idle stream became 12.9 KB), the rest
//! goes to hyper. The accept loop hands each TCP connection here when TLS
//! is configured; the rest of the server does not know the difference.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Encrypted bytes rustls may hold for a stream past the kernel's send
/// buffer (its default is 64 KiB): one full record, so a stalled client
/// holds little more than on plain TCP, and the replay still covers it.
pub(crate) const STREAM_BUFFER: usize = 16 * 1024 + 256;

/// A certificate chain and its key, ready to serve.
#[derive(Clone)]
pub struct TlsConfig {
    acceptor: TlsAcceptor,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsConfig")
    }
}

/// Why the certificate or key cannot be used; each names the flag and file.
#[derive(Debug, Error)]
pub enum TlsError {
    #[error("--tls-cert {path}: {source}")]
    ReadCert { path: String, source: std::io::Error },
    #[error("--tls-key {path}: {source}")]
    ReadKey { path: String, source: std::io::Error },
    #[error("--tls-cert {path}: no PEM certificate in it (-----BEGIN CERTIFICATE-----)")]
    NoCert { path: String },
    #[error(
        "--tls-key {path}: no PEM private key in it (PKCS#8, PKCS#1 or SEC1: -----BEGIN … PRIVATE KEY-----)"
    )]
    NoKey { path: String },
    #[error("--tls-cert and --tls-key do not belong together: {0}")]
    Mismatch(String),
}

impl TlsConfig {
    /// Reads a PEM certificate chain (leaf first) and its private key.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<TlsConfig, TlsError> {
        let cert_path = cert.display().to_string();
        let key_path = key.display().to_string();
        let cert_pem = std::fs::read(cert)
            .map_err(|source| TlsError::ReadCert { path: cert_path.clone(), source })?;
        let key_pem = std::fs::read(key)
            .map_err(|source| TlsError::ReadKey { path: key_path.clone(), source })?;
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(&cert_pem).filter_map(Result::ok).collect();
        if chain.is_empty() {
            return Err(TlsError::NoCert { path: cert_path });
        }
        let key = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|_| TlsError::NoKey { path: key_path })?;
        // Checks that the key is usable and is the certificate's.
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Mismatch(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => {
                TlsError::Mismatch("the private key is not the certificate's".into())
            }
            e => TlsError::Mismatch(e.to_string()),
        })?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(TlsConfig { acceptor: TlsAcceptor::from(Arc::new(config)) })
    }

    /// The handshake, bounded by `timeout` (a peer that opens connections
    /// and says nothing must not hold them); `None` if it fails or stalls.
    pub(crate) async fn accept(
        &self,
        tcp: TcpStream,
        timeout: Duration,
    ) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
        match tokio::time::timeout(timeout, self.acceptor.accept(tcp)).await {
            Ok(Ok(s)) => Some(s),
            Ok(Err(e)) => {
                tracing::debug!("TLS handshake failed: {e}");
                None
            }
            Err(_) => {
                tracing::debug!("TLS handshake timed out");
                None
            }
        }
    }
}
