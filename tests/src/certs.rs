//! Certificates made for a test (rcgen): a CA of its own, leaf certificates it signs for given
//! DNS names, written as PEM files; and a rustls client that trusts that CA, speaks HTTP/1.1 over
//! one TLS connection, and tells which certificate the server presented.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};

/// A certificate authority for one test, its certificate written to `ca.pem` in a temp dir.
pub struct TestCa {
    cert: rcgen::Certificate,
    key: KeyPair,
    /// The directory holding `ca.pem` (and whatever the test writes there).
    pub dir: tempfile::TempDir,
}

/// A leaf certificate and its key, as PEM, and the certificate's DER (to compare with what a
/// server presents).
#[derive(Clone)]
pub struct Issued {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// Its private key, PEM (PKCS#8).
    pub key_pem: String,
    /// The certificate, DER.
    pub der: Vec<u8>,
}

impl Issued {
    /// Writes `<dir>/<name>.crt` and `<dir>/<name>.key`, each replaced whole (written aside,
    /// then renamed), the key first.
    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let (cert, key) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
        replace(&key, &self.key_pem);
        replace(&cert, &self.cert_pem);
        (cert, key)
    }
}

/// Writes `text` to `path` atomically (a temp file in the same directory, then a rename).
pub fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write a temp file");
    std::fs::rename(&tmp, path).expect("rename over the file");
}

impl TestCa {
    /// A new CA in a new temp dir.
    pub fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "e2e test CA");
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("ca.pem"), cert.pem()).expect("write ca.pem");
        Self { cert, key, dir }
    }

    /// The CA certificate's PEM file.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A leaf certificate for `names` (DNS names, `*.x` allowed), with `cn` as its common name.
    pub fn issue(&self, names: &[&str], cn: &str) -> Issued {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.cert, &self.key).expect("sign the leaf");
        Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem(), der: cert.der().to_vec() }
    }

    /// A rustls client configuration trusting only this CA, offering `alpn`.
    pub fn client_config(&self, alpn: &[&str]) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(self.cert.der().to_vec())).expect("add the CA");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        Arc::new(config)
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

/// One TLS connection speaking HTTP/1.1 (keep-alive), through rustls.
pub struct TlsClient {
    stream: BufReader<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>,
}

impl TlsClient {
    /// Connects to 127.0.0.1:`port` and completes the handshake for `name` (a DNS name is sent
    /// as SNI; an IP address sends none).
    ///
    /// # Errors
    /// The connection or the handshake failed (a certificate the CA did not sign, for one).
    pub fn connect(config: Arc<rustls::ClientConfig>, port: u16, name: &str) -> Result<Self, String> {
        let server_name = ServerName::try_from(name.to_string()).map_err(|e| e.to_string())?;
        let conn = rustls::ClientConnection::new(config, server_name).map_err(|e| e.to_string())?;
        let sock = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
        sock.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
        let mut stream = rustls::StreamOwned::new(conn, sock);
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock).map_err(|e| e.to_string())?;
        }
        Ok(Self { stream: BufReader::new(stream) })
    }

    /// The server's leaf certificate, DER.
    pub fn peer_cert(&self) -> Vec<u8> {
        let certs = self.stream.get_ref().conn.peer_certificates().expect("a certificate after the handshake");
        certs[0].to_vec()
    }

    /// The protocol chosen by ALPN, if any.
    pub fn alpn(&self) -> Option<String> {
        self.stream.get_ref().conn.alpn_protocol().map(|p| String::from_utf8_lossy(p).into_owned())
    }

    /// GET `path` with `Host: host` on this connection: the status and the body.
    ///
    /// # Errors
    /// The connection failed or the answer is not HTTP/1.1 with a `Content-Length`.
    pub fn get(&mut self, host: &str, path: &str) -> Result<(u16, String), String> {
        let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
        self.stream.get_mut().write_all(req.as_bytes()).map_err(|e| e.to_string())?;
        self.stream.get_mut().flush().map_err(|e| e.to_string())?;
        let mut line = String::new();
        self.stream.read_line(&mut line).map_err(|e| e.to_string())?;
        let status = line.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or(format!("status line {line:?}"))?;
        let mut length = None;
        loop {
            let mut h = String::new();
            self.stream.read_line(&mut h).map_err(|e| e.to_string())?;
            if h.trim().is_empty() {
                break;
            }
            if let Some((n, v)) = h.split_once(':') {
                if n.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse::<usize>().ok();
                }
            }
        }
        let mut body = vec![0; length.ok_or("no content-length")?];
        self.stream.read_exact(&mut body).map_err(|e| e.to_string())?;
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}
