//! TLS to Consul's HTTPS API, configured as every Consul tool configures it.
//!
//! - `CONSUL_HTTP_ADDR=https://host:port` selects HTTPS ([`crate::ConsulAddr`]).
//! - `CONSUL_CACERT`: a PEM file of the CA(s) to trust. When set, only these are trusted (as
//!   Consul's own tools do); when not, the Mozilla roots built into the binary.
//! - `CONSUL_CLIENT_CERT` and `CONSUL_CLIENT_KEY`: a PEM certificate chain and its key, for an
//!   agent with `verify_incoming`. Both or neither.
//! - `CONSUL_TLS_SERVER_NAME`: the name the server's certificate is checked against instead of
//!   the address's host (say `server.dc1.consul` while connecting to an IP address).
//!
//! Not supported, and refused rather than ignored: `CONSUL_CAPATH` (a directory of CAs) and
//! `CONSUL_HTTP_SSL_VERIFY=false` (no verification at all).
//!
//! The connection offers `h2` and `http/1.1` by ALPN: Consul's HTTPS listener (Go's net/http)
//! picks `h2`, which lets many blocking queries share one connection as streams. Plain `http://`
//! stays HTTP/1.1. rustls with *ring*: no OpenSSL to link or ship, no C toolchain beyond what
//! *ring* builds.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::Error;

/// PEM file of the CA(s) to trust.
pub const ENV_CACERT: &str = "CONSUL_CACERT";
/// Directory of CA files (refused: not supported).
pub const ENV_CAPATH: &str = "CONSUL_CAPATH";
/// PEM client certificate (chain).
pub const ENV_CLIENT_CERT: &str = "CONSUL_CLIENT_CERT";
/// PEM key of the client certificate.
pub const ENV_CLIENT_KEY: &str = "CONSUL_CLIENT_KEY";
/// The name to verify the server's certificate against.
pub const ENV_TLS_SERVER_NAME: &str = "CONSUL_TLS_SERVER_NAME";
/// `false` turns verification off in Consul's tools (refused here).
pub const ENV_SSL_VERIFY: &str = "CONSUL_HTTP_SSL_VERIFY";

/// Where the TLS material is; nothing is read until [`TlsConfig::client_config`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsConfig {
    /// CA file; `None`: the built-in roots.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key files.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// Name to verify the server certificate against; `None`: the address's host.
    pub server_name: Option<String>,
}

impl TlsConfig {
    /// From `CONSUL_CACERT`, `CONSUL_CLIENT_CERT`, `CONSUL_CLIENT_KEY` and
    /// `CONSUL_TLS_SERVER_NAME` (empty values count as unset).
    ///
    /// # Errors
    /// Only one of the client certificate and key, or a setting this build refuses.
    pub fn from_env() -> Result<Self, Error> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// Like [`TlsConfig::from_env`], reading variables through `var`.
    ///
    /// # Errors
    /// As [`TlsConfig::from_env`].
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let get = |k: &str| var(k).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        if get(ENV_CAPATH).is_some() {
            return Err(tls_error(format!("{ENV_CAPATH} is not supported; give the CA file as {ENV_CACERT}")));
        }
        if get(ENV_SSL_VERIFY).is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "false" | "0" | "f")) {
            return Err(tls_error(format!("{ENV_SSL_VERIFY}=false is not supported: the server is always verified")));
        }
        let client_cert = match (get(ENV_CLIENT_CERT), get(ENV_CLIENT_KEY)) {
            (Some(c), Some(k)) => Some((PathBuf::from(c), PathBuf::from(k))),
            (None, None) => None,
            _ => return Err(tls_error(format!("give both {ENV_CLIENT_CERT} and {ENV_CLIENT_KEY}, or neither"))),
        };
        let server_name = get(ENV_TLS_SERVER_NAME);
        if let Some(name) = &server_name {
            ServerName::try_from(name.as_str())
                .map_err(|e| tls_error(format!("{ENV_TLS_SERVER_NAME} {name:?} is not a DNS name or IP: {e}")))?;
        }
        Ok(Self { ca_file: get(ENV_CACERT).map(PathBuf::from), client_cert, server_name })
    }

    /// Whether anything is configured (the built-in roots and the address's host otherwise).
    pub fn is_set(&self) -> bool {
        *self != Self::default()
    }

    /// Reads the files and builds the rustls configuration: the roots, the client certificate,
    /// the server-name override, ALPN `h2` then `http/1.1`.
    ///
    /// # Errors
    /// A file that cannot be read or holds no usable PEM item, or a key that does not fit.
    pub fn client_config(&self) -> Result<ClientConfig, Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        match &self.ca_file {
            Some(path) => {
                let certs = read_certs(path)?;
                let (added, _) = roots.add_parsable_certificates(certs);
                if added == 0 {
                    return Err(tls_error(format!("{}: no usable CA certificate", path.display())));
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| tls_error(format!("cannot build the certificate verifier: {e}")))?;
        let verifier: Arc<dyn ServerCertVerifier> = match &self.server_name {
            Some(name) => {
                let name = ServerName::try_from(name.clone())
                    .map_err(|e| tls_error(format!("{ENV_TLS_SERVER_NAME} {name:?}: {e}")))?;
                Arc::new(NamedVerifier { inner: webpki, name })
            }
            None => webpki,
        };
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_error(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match &self.client_cert {
            Some((cert, key)) => {
                let chain = read_certs(cert)?;
                if chain.is_empty() {
                    return Err(tls_error(format!("{}: no certificate", cert.display())));
                }
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| tls_error(format!("{}: no usable private key: {e}", key.display())))?;
                builder.with_client_auth_cert(chain, key).map_err(|e| tls_error(format!("client certificate: {e}")))?
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }
}

fn tls_error(why: String) -> Error {
    Error::Tls { why }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs: Result<Vec<_>, _> =
        CertificateDer::pem_file_iter(path).map_err(|e| tls_error(format!("{}: {e}", path.display())))?.collect();
    certs.map_err(|e| tls_error(format!("{}: {e}", path.display())))
}

/// Verifies the server's certificate against a configured name instead of the one connected to
/// (`CONSUL_TLS_SERVER_NAME`); everything else is the standard WebPKI verification.
#[derive(Debug)]
struct NamedVerifier {
    inner: Arc<WebPkiServerVerifier>,
    name: ServerName<'static>,
}

impl ServerCertVerifier for NamedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _connected_to: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner.verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
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

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn nothing_set_is_the_default() {
        let c = TlsConfig::from_vars(vars(&[])).unwrap();
        assert!(!c.is_set());
        assert_eq!(TlsConfig::from_vars(vars(&[(ENV_CACERT, " "), (ENV_SSL_VERIFY, "true")])).unwrap(), c);
        // The built-in roots, ALPN h2 first.
        let cfg = c.client_config().unwrap();
        assert_eq!(cfg.alpn_protocols, [b"h2".to_vec(), b"http/1.1".to_vec()]);
    }

    #[test]
    fn every_variable_is_read() {
        let c = TlsConfig::from_vars(vars(&[
            (ENV_CACERT, "/ca.pem"),
            (ENV_CLIENT_CERT, "/c.pem"),
            (ENV_CLIENT_KEY, "/k.pem"),
            (ENV_TLS_SERVER_NAME, "server.dc1.consul"),
        ]))
        .unwrap();
        assert_eq!(c.ca_file.as_deref(), Some(Path::new("/ca.pem")));
        assert_eq!(c.client_cert, Some((PathBuf::from("/c.pem"), PathBuf::from("/k.pem"))));
        assert_eq!(c.server_name.as_deref(), Some("server.dc1.consul"));
        assert!(c.is_set());
    }

    #[test]
    fn what_cannot_be_honoured_is_refused() {
        for bad in [
            vec![(ENV_CLIENT_CERT, "/c.pem")],
            vec![(ENV_CLIENT_KEY, "/k.pem")],
            vec![(ENV_CAPATH, "/etc/consul/ca")],
            vec![(ENV_SSL_VERIFY, "false")],
            vec![(ENV_TLS_SERVER_NAME, "not a name")],
        ] {
            let err = TlsConfig::from_vars(vars(&bad)).unwrap_err();
            assert!(matches!(err, Error::Tls { .. }), "{bad:?}: {err}");
        }
    }

    #[test]
    fn unreadable_or_empty_files_are_errors_that_name_the_file() {
        let dir = std::env::temp_dir().join(format!("consul-tls-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not pem\n").unwrap();
        for c in [
            TlsConfig { ca_file: Some(dir.join("missing.pem")), ..TlsConfig::default() },
            TlsConfig { ca_file: Some(empty.clone()), ..TlsConfig::default() },
        ] {
            let err = c.client_config().unwrap_err().to_string();
            assert!(err.contains("missing.pem") || err.contains("empty.pem"), "{err}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
