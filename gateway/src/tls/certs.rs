//! The certificates the public listener can present, loaded from PEM files, and the choice of
//! one by the name the client asked for (SNI, RFC 6066 §3).
//!
//! Two sources ([`Source`]):
//! - one pair of files (`--tls-cert`, `--tls-key`): every client gets that certificate;
//! - a directory (`--tls-dir`) of pairs `<name>.crt` (the chain, leaf first) and `<name>.key`
//!   (its private key: PKCS#8, PKCS#1 or SEC1). Each certificate serves the DNS names of its
//!   subject alternative names, `*.example.com` matching one label (`a.example.com`, not
//!   `example.com` nor `a.b.example.com`, RFC 6125 §6.4.3). The file name does not matter,
//!   except that `default.crt` is what a client gets without SNI or with a name no certificate
//!   has; without a `default` pair that is the first pair in file-name order. An exact name wins
//!   over a wildcard; a name two certificates claim goes to the first in file-name order. Other
//!   files are ignored; a `.crt` without its `.key` is an error.
//!
//! Loading is all or nothing: a file that cannot be read or parsed, or a key that does not match
//! its certificate, fails the whole load (and a reload keeps what was loaded before).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use super::TlsError;

/// Where the certificates come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// One certificate chain and its key, for every client.
    Pair {
        /// PEM certificate chain, leaf first.
        cert: PathBuf,
        /// PEM private key.
        key: PathBuf,
    },
    /// A directory of `<name>.crt` + `<name>.key` pairs, chosen by SNI.
    Dir(PathBuf),
}

/// The pair a client without SNI, or with an unknown name, gets from a directory.
pub const DEFAULT_NAME: &str = "default";

/// Values by host name, with a fallback: what SNI selection needs, apart from what is selected.
#[derive(Debug)]
pub struct Names<T> {
    exact: HashMap<String, T>,
    /// By the suffix after `*.` (`example.com` for `*.example.com`).
    wildcard: HashMap<String, T>,
    fallback: T,
}

impl<T: Clone> Names<T> {
    /// A table that gives `fallback` to every name until names are added.
    pub fn new(fallback: T) -> Self {
        Self { exact: HashMap::new(), wildcard: HashMap::new(), fallback }
    }

    /// Adds `value` for the DNS name `name` (maybe `*.suffix`); a name already present keeps its
    /// first value.
    pub fn add(&mut self, name: &str, value: T) {
        let name = normalize(name);
        match name.strip_prefix("*.") {
            Some(suffix) => self.wildcard.entry(suffix.to_string()).or_insert(value),
            None => self.exact.entry(name).or_insert(value),
        };
    }

    /// The value for the name a client sent (`None`: no SNI): an exact match, else a wildcard
    /// one label up, else the fallback.
    pub fn choose(&self, sni: Option<&str>) -> &T {
        let Some(name) = sni.map(normalize) else { return &self.fallback };
        if let Some(v) = self.exact.get(&name) {
            return v;
        }
        name.split_once('.').and_then(|(_, parent)| self.wildcard.get(parent)).unwrap_or(&self.fallback)
    }

    /// How many names are known (exact and wildcard).
    pub fn len(&self) -> usize {
        self.exact.len() + self.wildcard.len()
    }

    /// Whether no name is known (every client gets the fallback).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// DNS names compare without case and without a final dot.
fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// The loaded certificates.
pub type Store = Names<Arc<CertifiedKey>>;

/// Loads every certificate of `source`.
///
/// # Errors
/// [`TlsError`] naming the file that cannot be read or used, or the directory without pairs.
pub fn load(source: &Source, provider: &CryptoProvider) -> Result<Store, TlsError> {
    match source {
        Source::Pair { cert, key } => Ok(Names::new(Arc::new(certified(cert, key, provider)?))),
        Source::Dir(dir) => load_dir(dir, provider),
    }
}

/// The `<name>.crt` files of `dir` with their `.key` beside them, in file-name order.
///
/// # Errors
/// The directory cannot be listed; a `.crt` has no `.key`.
pub fn pairs(dir: &Path) -> Result<Vec<(String, PathBuf, PathBuf)>, TlsError> {
    let read = |source| TlsError::Read { path: dir.to_path_buf(), source };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read)? {
        let path = entry.map_err(read)?.path();
        if path.extension().is_none_or(|e| e != "crt") {
            continue;
        }
        let Some(name) = path.file_stem().and_then(|s| s.to_str()).map(str::to_string) else { continue };
        let key = path.with_extension("key");
        if !key.exists() {
            return Err(TlsError::MissingKey { cert: path, key });
        }
        out.push((name, path, key));
    }
    out.sort();
    Ok(out)
}

fn load_dir(dir: &Path, provider: &CryptoProvider) -> Result<Store, TlsError> {
    let pairs = pairs(dir)?;
    let mut loaded = Vec::with_capacity(pairs.len());
    for (name, cert, key) in &pairs {
        let ck = Arc::new(certified(cert, key, provider)?);
        let names = dns_names(&ck, cert)?;
        loaded.push((name.as_str(), ck, names));
    }
    let fallback = loaded
        .iter()
        .find(|(name, ..)| *name == DEFAULT_NAME)
        .or(loaded.first())
        .map(|(_, ck, _)| ck.clone())
        .ok_or_else(|| TlsError::EmptyDir { dir: dir.to_path_buf() })?;
    let mut store = Names::new(fallback);
    for (_, ck, names) in loaded {
        for n in names {
            store.add(&n, ck.clone());
        }
    }
    Ok(store)
}

/// A chain and its key, checked to match.
fn certified(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let bad = |path: &Path, why: String| TlsError::Pem { path: path.to_path_buf(), why };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| pem_error(cert, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(cert, e))?;
    if chain.is_empty() {
        return Err(bad(cert, "no CERTIFICATE block".into()));
    }
    let der = PrivateKeyDer::from_pem_file(key).map_err(|e| pem_error(key, e))?;
    CertifiedKey::from_der(chain, der, provider)
        .map_err(|e| bad(key, format!("unusable private key for {}: {e}", cert.display())))
}

fn pem_error(path: &Path, e: rustls::pki_types::pem::Error) -> TlsError {
    match e {
        rustls::pki_types::pem::Error::Io(source) => TlsError::Read { path: path.to_path_buf(), source },
        rustls::pki_types::pem::Error::NoItemsFound => {
            TlsError::Pem { path: path.to_path_buf(), why: "no PEM block of the expected kind".into() }
        }
        other => TlsError::Pem { path: path.to_path_buf(), why: other.to_string() },
    }
}

/// The DNS names of a leaf certificate's subject alternative names.
fn dns_names(ck: &CertifiedKey, path: &Path) -> Result<Vec<String>, TlsError> {
    let leaf = ck.end_entity_cert().map_err(|e| TlsError::Pem { path: path.to_path_buf(), why: e.to_string() })?;
    let parsed = webpki::EndEntityCert::try_from(leaf)
        .map_err(|e| TlsError::Pem { path: path.to_path_buf(), why: format!("not an X.509 certificate: {e}") })?;
    Ok(parsed.valid_dns_names().map(str::to_string).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sni_picks_exact_then_wildcard_then_fallback() {
        let mut names = Names::new("default");
        names.add("api.example.com", "api");
        names.add("*.example.com", "wild");
        names.add("Shop.Example.org.", "shop");
        names.add("api.example.com", "second");
        assert_eq!(*names.choose(Some("api.example.com")), "api", "exact beats wildcard; first claim wins");
        assert_eq!(*names.choose(Some("API.EXAMPLE.COM.")), "api", "no case, no final dot");
        assert_eq!(*names.choose(Some("www.example.com")), "wild");
        assert_eq!(*names.choose(Some("example.com")), "default", "a wildcard needs a label");
        assert_eq!(*names.choose(Some("a.b.example.com")), "default", "and only one");
        assert_eq!(*names.choose(Some("shop.example.org")), "shop");
        assert_eq!(*names.choose(Some("other.net")), "default");
        assert_eq!(*names.choose(None), "default");
        assert_eq!(names.len(), 3);
    }

    #[test]
    fn a_directory_needs_keys_beside_its_certificates() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
        assert!(pairs(dir.path()).unwrap().is_empty());
        let provider = rustls::crypto::ring::default_provider();
        assert!(matches!(load(&Source::Dir(dir.path().into()), &provider), Err(TlsError::EmptyDir { .. })));
        std::fs::write(dir.path().join("b.crt"), "x").unwrap();
        assert!(matches!(pairs(dir.path()), Err(TlsError::MissingKey { .. })));
        std::fs::write(dir.path().join("b.key"), "x").unwrap();
        std::fs::write(dir.path().join("a.crt"), "x").unwrap();
        std::fs::write(dir.path().join("a.key"), "x").unwrap();
        let names: Vec<String> = pairs(dir.path()).unwrap().into_iter().map(|p| p.0).collect();
        assert_eq!(names, ["a", "b"]);
        let e = load(&Source::Dir(dir.path().into()), &provider).unwrap_err().to_string();
        assert!(e.contains("a.crt"), "the bad file is named: {e}");
    }
}
