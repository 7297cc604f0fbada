//! TLS termination on the public listener, with rustls (`ring` provider, as the `consul` crate
//! uses): TLS 1.2 and 1.3 only, ALPN `h2` and `http/1.1` (RFC 7301), certificates from PEM files
//! chosen by SNI ([`certs`]) and reloaded when the files change ([`reload`]).
//!
//! The handshake reads the current certificates through an [`ArcSwap`]: no lock, and a reload
//! swaps the whole set, so a connection keeps the certificate it was opened with and the next
//! one gets the new one.
//!
//! Not here: the listener's use of the TLS stream ([`crate::proxy::listener`]), the plain
//! redirecting listener ([`crate::redirect`]).

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

pub mod certs;
pub mod reload;

pub use certs::Source;

/// Why certificates cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file or directory cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file is not the PEM it should be, or its key does not fit its certificate.
    #[error("{}: {why}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// A `<name>.crt` in the certificate directory has no `<name>.key` beside it.
    #[error("{} has no private key beside it ({})", cert.display(), key.display())]
    MissingKey {
        /// The certificate.
        cert: PathBuf,
        /// The key file expected.
        key: PathBuf,
    },
    /// The certificate directory holds no `<name>.crt` + `<name>.key` pair.
    #[error("{} holds no certificate (<name>.crt with <name>.key)", dir.display())]
    EmptyDir {
        /// The directory.
        dir: PathBuf,
    },
    /// rustls refused the configuration (a provider without TLS 1.2 or 1.3 suites).
    #[error("TLS configuration: {0}")]
    Config(#[source] rustls::Error),
}

/// The certificates in use, swapped whole by a reload.
pub struct Certificates {
    current: ArcSwap<certs::Store>,
}

impl fmt::Debug for Certificates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificates").field("names", &self.current.load().len()).finish()
    }
}

impl Certificates {
    /// Starts with `store`.
    pub fn new(store: certs::Store) -> Self {
        Self { current: ArcSwap::from_pointee(store) }
    }

    /// Replaces the certificates; handshakes from now on use the new ones.
    pub fn replace(&self, store: certs::Store) {
        self.current.store(Arc::new(store));
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load().choose(hello.server_name()).clone())
    }
}

/// The crypto provider: ring, as the `consul` crate's.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS acceptor for the public listener: TLS 1.2 and 1.3, ALPN `h2` and `http/1.1` (rustls
/// picks the first of ours the client offers, so `h2` when it can; RFC 7301 §3.2 leaves the
/// choice to the server), certificates from `certificates`.
///
/// # Errors
/// [`TlsError::Config`] if the provider supports neither version.
pub fn acceptor(provider: Arc<CryptoProvider>, certificates: Arc<Certificates>) -> Result<TlsAcceptor, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_cert_resolver(certificates);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
