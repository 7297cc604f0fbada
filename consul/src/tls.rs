//! TLS to Consul's HTTPS API, configured as every Consul tool configures it.
//!
//! - `CONSUL_HTTP_ADDR=https://host:port` selects HTTPS ([`crate::ConsulAddr`]).
//! - `CONSUL_CACERT`: a PEM file of the CA(s) to trust. When set, only these are trusted (as
//!   Consul's own tools do); when not, the Mozilla roots built into the binary.
//! - `CONSUL_CAPATH`: a directory of PEM files of CAs to trust (every regular file in it and in
//!   its subdirectories must hold at least one certificate, as Consul's `rootcerts` requires).
//!   `CONSUL_CACERT` wins when both are set, as in Consul's client.
//! - `CONSUL_CLIENT_CERT` and `CONSUL_CLIENT_KEY`: a PEM certificate chain and its key, for an
//!   agent with `verify_incoming`. Both or neither.
//! - `CONSUL_TLS_SERVER_NAME`: the name the server's certificate is checked against instead of
//!   the address's host (say `server.dc1.consul` while connecting to an IP address).
//!
//! - `CONSUL_HTTP_SSL_VERIFY=false` (any spelling Go's `strconv.ParseBool` takes: `0`, `f`,
//!   `false`...): the server's certificate is not verified at all, as Consul's client does with
//!   `InsecureSkipVerify`; the handshake signatures still are. [`crate::Client::with_tls`] logs one
//!   warning saying so. A value that is not a boolean is refused (Consul's client would log and
//!   then skip verification; failing closed is safer).
//!
//! The connection offers `h2` and `http/1.1` by ALPN: Consul's HTTPS listener (Go's net/http)
//! picks `h2`, which lets many blocking queries share one connection as streams. Plain `http://`
//! stays HTTP/1.1. rustls with *ring*: no OpenSSL to link or ship, no C toolchain beyond what
//! *ring* builds.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};

use crate::Error;

mod verifiers;
use verifiers::{AnyCertificate, NamedVerifier};

/// PEM file of the CA(s) to trust.
pub const ENV_CACERT: &str = "CONSUL_CACERT";
/// Directory of CA files.
pub const ENV_CAPATH: &str = "CONSUL_CAPATH";
/// PEM client certificate (chain).
pub const ENV_CLIENT_CERT: &str = "CONSUL_CLIENT_CERT";
/// PEM key of the client certificate.
pub const ENV_CLIENT_KEY: &str = "CONSUL_CLIENT_KEY";
/// The name to verify the server's certificate against.
pub const ENV_TLS_SERVER_NAME: &str = "CONSUL_TLS_SERVER_NAME";
/// `false` turns verification of the server's certificate off.
pub const ENV_SSL_VERIFY: &str = "CONSUL_HTTP_SSL_VERIFY";

/// Where the TLS material is; nothing is read until [`TlsConfig::client_config`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsConfig {
    /// CA file; `None`: the CA directory, or else the built-in roots.
    pub ca_file: Option<PathBuf>,
    /// CA directory (used when there is no CA file).
    pub ca_path: Option<PathBuf>,
    /// Client certificate and key files.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// Name to verify the server certificate against; `None`: the address's host.
    pub server_name: Option<String>,
    /// `CONSUL_HTTP_SSL_VERIFY=false`: accept any server certificate.
    pub skip_verify: bool,
}

impl TlsConfig {
    /// From `CONSUL_CACERT`, `CONSUL_CAPATH`, `CONSUL_CLIENT_CERT`, `CONSUL_CLIENT_KEY`,
    /// `CONSUL_TLS_SERVER_NAME` and `CONSUL_HTTP_SSL_VERIFY` (empty values count as unset).
    ///
    /// # Errors
    /// Only one of the client certificate and key, a server name that is not a DNS name or IP,
    /// or a `CONSUL_HTTP_SSL_VERIFY` that is not a boolean.
    pub fn from_env() -> Result<Self, Error> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// Like [`TlsConfig::from_env`], reading variables through `var`.
    ///
    /// # Errors
    /// As [`TlsConfig::from_env`].
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let get = |k: &str| var(k).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let skip_verify = match get(ENV_SSL_VERIFY).as_deref() {
            None => false,
            // Go's strconv.ParseBool, which Consul's client uses.
            Some("1" | "t" | "T" | "TRUE" | "true" | "True") => false,
            Some("0" | "f" | "F" | "FALSE" | "false" | "False") => true,
            Some(other) => {
                return Err(tls_error(format!("{ENV_SSL_VERIFY}={other:?} is not a boolean: use true or false")))
            }
        };
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
        Ok(Self {
            ca_file: get(ENV_CACERT).map(PathBuf::from),
            ca_path: get(ENV_CAPATH).map(PathBuf::from),
            client_cert,
            server_name,
            skip_verify,
        })
    }

    /// Whether anything is configured (the built-in roots and the address's host otherwise).
    pub fn is_set(&self) -> bool {
        *self != Self::default()
    }

    /// Reads the files and builds the rustls configuration: the roots, the client certificate,
    /// the server-name override (or no verification), ALPN `h2` then `http/1.1`.
    ///
    /// # Errors
    /// A file that cannot be read or holds no usable PEM item, or a key that does not fit.
    pub fn client_config(&self) -> Result<ClientConfig, Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier: Arc<dyn ServerCertVerifier> = if self.skip_verify {
            Arc::new(AnyCertificate { provider: provider.clone() })
        } else {
            let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(self.roots()?), provider.clone())
                .build()
                .map_err(|e| tls_error(format!("cannot build the certificate verifier: {e}")))?;
            match &self.server_name {
                Some(name) => {
                    let name = ServerName::try_from(name.clone())
                        .map_err(|e| tls_error(format!("{ENV_TLS_SERVER_NAME} {name:?}: {e}")))?;
                    Arc::new(NamedVerifier { inner: webpki, name })
                }
                None => webpki,
            }
        };
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_error(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match &self.client_cert {
            Some((cert, key)) => {
                let chain = read_certs(ENV_CLIENT_CERT, cert)?;
                if chain.is_empty() {
                    return Err(tls_error(format!("{ENV_CLIENT_CERT} {}: no certificate", cert.display())));
                }
                let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                    tls_error(format!(
                        "{ENV_CLIENT_KEY} {}: no usable private key: {e}{}",
                        key.display(),
                        encrypted_hint(key)
                    ))
                })?;
                builder.with_client_auth_cert(chain, key).map_err(|e| tls_error(format!("client certificate: {e}")))?
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }
}

impl TlsConfig {
    /// The CAs to trust: the CA file, else every file of the CA directory, else the built-in
    /// roots.
    fn roots(&self) -> Result<RootCertStore, Error> {
        let mut roots = RootCertStore::empty();
        let (var, files) = match (&self.ca_file, &self.ca_path) {
            (Some(file), _) => (ENV_CACERT, vec![file.clone()]),
            (None, Some(dir)) => {
                let files = ca_dir_files(dir)?;
                if files.is_empty() {
                    return Err(tls_error(format!("{ENV_CAPATH} {}: no file in it", dir.display())));
                }
                (ENV_CAPATH, files)
            }
            (None, None) => {
                roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
                return Ok(roots);
            }
        };
        for path in files {
            let (added, _) = roots.add_parsable_certificates(read_certs(var, &path)?);
            if added == 0 {
                return Err(tls_error(format!("{var} {}: no usable CA certificate", path.display())));
            }
        }
        Ok(roots)
    }
}

/// Every regular file under `dir` (following symbolic links, as OpenSSL's hashed links are),
/// sorted; at most [`MAX_CA_FILES`].
fn ca_dir_files(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let mut out = Vec::new();
    let mut pending = vec![(dir.to_path_buf(), 0usize)];
    while let Some((d, depth)) = pending.pop() {
        let entries = std::fs::read_dir(&d).map_err(|e| tls_error(format!("{ENV_CAPATH} {}: {e}", d.display())))?;
        for entry in entries {
            let path = entry.map_err(|e| tls_error(format!("{ENV_CAPATH} {}: {e}", d.display())))?.path();
            let meta = std::fs::metadata(&path).map_err(|e| tls_error(format!("{}: {e}", path.display())))?;
            if meta.is_dir() && depth < MAX_CA_DEPTH {
                pending.push((path, depth + 1));
            } else if meta.is_file() {
                out.push(path);
            }
            if out.len() > MAX_CA_FILES {
                return Err(tls_error(format!("{ENV_CAPATH} {}: more than {MAX_CA_FILES} files", dir.display())));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// More CA files than this in `CONSUL_CAPATH` is a wrong directory, not a trust store.
const MAX_CA_FILES: usize = 1000;
/// How deep `CONSUL_CAPATH`'s subdirectories are followed.
const MAX_CA_DEPTH: usize = 4;

/// For a key file that holds only an encrypted key (which neither rustls nor Consul's tools
/// read): what to do about it. Empty otherwise.
fn encrypted_hint(key: &Path) -> &'static str {
    match std::fs::read_to_string(key) {
        Ok(pem) if pem.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") || pem.contains("Proc-Type: 4,ENCRYPTED") => {
            " (the key is encrypted: give it decrypted, as Consul's tools need it)"
        }
        _ => "",
    }
}

fn tls_error(why: String) -> Error {
    Error::Tls { why }
}

/// The certificates of the PEM file `path`, which the variable `var` names (said in errors).
fn read_certs(var: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs: Result<Vec<_>, _> =
        CertificateDer::pem_file_iter(path).map_err(|e| tls_error(format!("{var} {}: {e}", path.display())))?.collect();
    certs.map_err(|e| tls_error(format!("{var} {}: {e}", path.display())))
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
            vec![(ENV_SSL_VERIFY, "no")],
            vec![(ENV_TLS_SERVER_NAME, "not a name")],
        ] {
            let err = TlsConfig::from_vars(vars(&bad)).unwrap_err();
            assert!(matches!(err, Error::Tls { .. }), "{bad:?}: {err}");
        }
    }

    #[test]
    fn ssl_verify_takes_gos_booleans() {
        for (v, skip) in [("false", true), ("0", true), ("F", true), ("true", false), ("1", false), ("True", false)] {
            let c = TlsConfig::from_vars(vars(&[(ENV_SSL_VERIFY, v)])).unwrap();
            assert_eq!(c.skip_verify, skip, "{v}");
        }
        // Without verification no CA is read: a missing CA file does not matter.
        let c = TlsConfig::from_vars(vars(&[(ENV_SSL_VERIFY, "false"), (ENV_CACERT, "/nonexistent.pem")])).unwrap();
        assert!(c.is_set());
        c.client_config().unwrap();
    }

    #[test]
    fn a_ca_directory_is_read_file_by_file() {
        let dir = std::env::temp_dir().join(format!("consul-capath-test-{}", std::process::id()));
        let sub = dir.join("sub");
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(dir.join("a.pem"), CA).unwrap();
        std::fs::write(sub.join("b.crt"), CA).unwrap();
        let c = TlsConfig::from_vars(vars(&[(ENV_CAPATH, dir.to_str().unwrap())])).unwrap();
        assert_eq!(c.ca_path.as_deref(), Some(dir.as_path()));
        assert_eq!(c.roots().unwrap().len(), 2);
        c.client_config().unwrap();
        // The CA file wins over the directory, as in Consul's client.
        let both = TlsConfig { ca_file: Some(dir.join("a.pem")), ..c.clone() };
        assert_eq!(both.roots().unwrap().len(), 1);
        // A file without a certificate is an error naming it; so is an empty or missing directory.
        std::fs::write(sub.join("README"), "not a certificate\n").unwrap();
        let err = c.client_config().unwrap_err().to_string();
        assert!(err.contains("README"), "{err}");
        let empty = dir.join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        for d in [empty, dir.join("missing")] {
            let c = TlsConfig { ca_path: Some(d.clone()), ..TlsConfig::default() };
            let err = c.client_config().unwrap_err().to_string();
            assert!(err.contains(ENV_CAPATH) && err.contains(d.to_str().unwrap()), "{err}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A CA made by `consul tls ca create`.
    const CA: &str = include_str!("tls/testdata/ca.pem");

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
            assert!(err.contains(ENV_CACERT), "the variable is named: {err}");
        }
        // An encrypted client key is named as such.
        let enc = dir.join("enc.pem");
        std::fs::write(&enc, "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n")
            .unwrap();
        std::fs::write(dir.join("ca.pem"), CA).unwrap();
        let c = TlsConfig { client_cert: Some((dir.join("ca.pem"), enc)), ..TlsConfig::default() };
        let err = c.client_config().unwrap_err().to_string();
        assert!(err.contains(ENV_CLIENT_KEY) && err.contains("encrypted"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
