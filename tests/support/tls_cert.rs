//! A throwaway self-signed certificate for `serve --tls-cert`, as PEM files.
#![allow(dead_code)]

use std::path::PathBuf;

/// A self-signed certificate for 127.0.0.1 and localhost, as PEM files.
pub struct Cert {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub der: Vec<u8>,
    pub dir: tempfile::TempDir,
}

impl Cert {
    pub fn new() -> Cert {
        let names = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
        let c = rcgen::generate_simple_self_signed(names).expect("certificate");
        Self::write(c.cert.pem(), c.signing_key.serialize_pem(), c.cert.der().to_vec())
    }

    /// What OpenSSL 3's `req -x509` makes without `-addext
    /// basicConstraints=critical,CA:FALSE`: a certificate marked as a CA's
    /// (CA:TRUE), which no server may present. Made by the real openssl.
    pub fn openssl_ca_marked() -> Cert {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        let out = std::process::Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"])
            .args(["-nodes", "-days", "1", "-subj", "/CN=localhost"])
            .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("openssl (Debian's openssl package) runs");
        assert!(out.status.success(), "openssl: {}", String::from_utf8_lossy(&out.stderr));
        Cert { cert, key, der: Vec::new(), dir }
    }

    fn write(cert_pem: String, key_pem: String, der: Vec<u8>) -> Cert {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&cert, cert_pem).unwrap();
        std::fs::write(&key, key_pem).unwrap();
        Cert { cert, key, der, dir }
    }

    pub fn args(&self) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.cert.display().to_string(),
            "--tls-key".into(),
            self.key.display().to_string(),
        ]
    }

    pub fn client(&self, http1: bool) -> reqwest::Client {
        let root = reqwest::Certificate::from_der(&self.der).unwrap();
        let b = reqwest::Client::builder().add_root_certificate(root);
        let b = if http1 { b.http1_only() } else { b };
        b.build().unwrap()
    }
}
