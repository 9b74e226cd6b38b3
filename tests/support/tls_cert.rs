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
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&cert, c.cert.pem()).unwrap();
        std::fs::write(&key, c.signing_key.serialize_pem()).unwrap();
        Cert { cert, key, der: c.cert.der().to_vec(), dir }
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
