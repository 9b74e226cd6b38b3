//! HTTPS for the connect tests: a throwaway self-signed certificate and a
//! TLS-terminating proxy in front of a plain `ssechan serve`, so the client's
//! real TLS path (reqwest + rustls + ring) is exercised end to end.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// Connections the proxy serves at once; more wait to be accepted.
const MAX_CONNECTIONS: usize = 32;
/// A TLS handshake that takes longer is abandoned.
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);

/// A self-signed certificate for `127.0.0.1` and `localhost`, its PEM
/// written to a temporary directory (for `--cacert`).
pub struct SelfSigned {
    pub cert: CertificateDer<'static>,
    pub key: PrivatePkcs8KeyDer<'static>,
    pub pem_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl SelfSigned {
    pub fn new() -> SelfSigned {
        let names = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
        let certified = rcgen::generate_simple_self_signed(names).expect("self-signed certificate");
        let dir = tempfile::tempdir().expect("temp dir");
        let pem_path = dir.path().join("cert.pem");
        std::fs::write(&pem_path, certified.cert.pem()).expect("write cert.pem");
        SelfSigned {
            cert: certified.cert.der().clone(),
            key: PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der()),
            pem_path,
            _dir: dir,
        }
    }

    /// A file next to the certificate, e.g. a wrong `--cacert`.
    pub fn write_file(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.pem_path.with_file_name(name);
        std::fs::write(&path, contents).expect("write test file");
        path
    }
}

/// Accepts TLS on 127.0.0.1:0 and copies bytes both ways to `backend`.
/// Everything runs on its own runtime, which dropping the proxy ends.
pub struct TlsProxy {
    pub addr: SocketAddr,
    /// TCP connections accepted so far (handshakes tried).
    pub accepted: Arc<AtomicUsize>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl TlsProxy {
    pub fn start(cert: &SelfSigned, backend: SocketAddr) -> TlsProxy {
        let config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert.cert.clone()], PrivateKeyDer::Pkcs8(cert.key.clone_key()))
            .expect("server config");
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("proxy runtime");
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        runtime.spawn(async move {
            let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
            loop {
                let Ok(slot) = slots.clone().acquire_owned().await else { return };
                let Ok((tcp, _)) = listener.accept().await else { return };
                count.fetch_add(1, Ordering::SeqCst);
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let _slot = slot;
                    let Ok(Ok(mut tls)) =
                        tokio::time::timeout(HANDSHAKE_LIMIT, acceptor.accept(tcp)).await
                    else {
                        return;
                    };
                    let Ok(mut plain) = TcpStream::connect(backend).await else { return };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
            }
        });
        TlsProxy { addr, accepted, runtime: Some(runtime) }
    }

    /// `https://127.0.0.1:PORT/sse`.
    pub fn url(&self) -> String {
        format!("https://{}/sse", self.addr)
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}
