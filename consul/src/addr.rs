//! Consul addresses and ACL tokens as every Consul tool accepts them.
//!
//! `CONSUL_HTTP_ADDR` may be `host:port`, `http://host:port` or `https://host:port` (TLS set up
//! by [`crate::tls`]); the token comes from `CONSUL_HTTP_TOKEN_FILE` or `CONSUL_HTTP_TOKEN`, with
//! the precedence of Consul's own Go API client (`api/api.go`, `NewClient`): a token file that is
//! set is read, and its trimmed content, if not empty, wins over `CONSUL_HTTP_TOKEN`; a token
//! file that cannot be read is an error. The token type never shows its value in `Debug` or
//! `Display`, so it cannot leak into a log line by accident; errors name the file, never its
//! content.

use std::fmt;

use crate::Error;

/// The environment variable every Consul tool reads the agent address from.
pub const ENV_ADDR: &str = "CONSUL_HTTP_ADDR";
/// The environment variable every Consul tool reads the ACL token from.
pub const ENV_TOKEN: &str = "CONSUL_HTTP_TOKEN";
/// The environment variable naming a file that holds the ACL token (wins over [`ENV_TOKEN`]).
pub const ENV_TOKEN_FILE: &str = "CONSUL_HTTP_TOKEN_FILE";
/// `true` makes an address without a scheme `https://` (Consul's tools read it the same way).
pub const ENV_SSL: &str = "CONSUL_HTTP_SSL";
/// Consul's default HTTP address.
pub const DEFAULT_ADDR: &str = "http://127.0.0.1:8500";

/// A validated base URL of a Consul agent's HTTP API, always ending without a slash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsulAddr(String);

impl ConsulAddr {
    /// Parses `host:port`, `http://host:port` or `https://host:port` (a trailing `/` is fine).
    /// `unix://` is refused with a clear error. Without a scheme, `CONSUL_HTTP_SSL=true` (Go's
    /// booleans) means `https://`, as in Consul's Go client; a scheme given wins.
    pub fn parse(raw: &str) -> Result<Self, Error> {
        Self::parse_with_ssl(raw, std::env::var(ENV_SSL).ok().as_deref())
    }

    /// [`ConsulAddr::parse`] with `ssl` as the value of `CONSUL_HTTP_SSL`.
    ///
    /// # Errors
    /// As [`ConsulAddr::parse`]; and an `ssl` that is not a boolean.
    pub fn parse_with_ssl(raw: &str, ssl: Option<&str>) -> Result<Self, Error> {
        let raw = raw.trim();
        let bad = |why: &str| Error::InvalidAddress { addr: raw.to_string(), why: why.to_string() };
        if raw.is_empty() {
            return Err(bad("empty"));
        }
        let https = match ssl.map(str::trim).filter(|v| !v.is_empty()) {
            None | Some("0" | "f" | "F" | "FALSE" | "false" | "False") => false,
            Some("1" | "t" | "T" | "TRUE" | "true" | "True") => true,
            Some(other) => return Err(bad(&format!("{ENV_SSL}={other:?} is not a boolean: use true or false"))),
        };
        let with_scheme = match raw.split_once("://") {
            None if https => format!("https://{raw}"),
            None => format!("http://{raw}"),
            Some(("http" | "https", _)) => raw.to_string(),
            Some((scheme, _)) => return Err(bad(&format!("unsupported scheme {scheme:?}"))),
        };
        let mut url = reqwest::Url::parse(&with_scheme).map_err(|e| bad(&e.to_string()))?;
        if !url.username().is_empty() || url.password().is_some() {
            // Shown without the secret: the error is logged.
            let _ = url.set_password(None);
            let _ = url.set_username("");
            return Err(Error::InvalidAddress {
                addr: url.as_str().to_string(),
                why: "must not carry user:password@ (it would show in logs and in ps); Consul takes an ACL token from CONSUL_HTTP_TOKEN".into(),
            });
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(bad("no host"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(bad("must not carry a query or fragment"));
        }
        Ok(Self(url.as_str().trim_end_matches('/').to_string()))
    }

    /// Whether the address is `https://`.
    pub fn is_https(&self) -> bool {
        self.0.starts_with("https://")
    }

    /// The base URL, e.g. `http://127.0.0.1:8500`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ConsulAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for ConsulAddr {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse(s)
    }
}

/// A Consul ACL token. Its value is sent as `X-Consul-Token` and shown nowhere else.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Token(Option<String>);

impl Token {
    /// A token from an optional value, without surrounding whitespace (a value read from a file
    /// or a Kubernetes secret often ends with a newline, which no header can carry); empty means
    /// none.
    pub fn new(value: Option<String>) -> Self {
        Self(value.map(|v| v.trim().to_string()).filter(|v| !v.is_empty()))
    }

    /// Refuses a token no HTTP header can carry (a control character inside it), naming where
    /// it came from (`from`), never the value.
    fn sendable(self, from: impl FnOnce() -> String) -> Result<Self, Error> {
        let bad = self.0.as_deref().is_some_and(|t| t.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f));
        if bad {
            return Err(Error::InvalidToken { from: from() });
        }
        Ok(self)
    }

    /// The token from `CONSUL_HTTP_TOKEN_FILE` or `CONSUL_HTTP_TOKEN` (see the module docs for
    /// which wins); none if neither gives one.
    ///
    /// # Errors
    /// [`Error::TokenFile`] when `CONSUL_HTTP_TOKEN_FILE` names a file that cannot be read;
    /// [`Error::InvalidToken`] for a token with a control character inside.
    pub fn from_env() -> Result<Self, Error> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// Like [`Token::from_env`], reading variables through `var`.
    ///
    /// # Errors
    /// As [`Token::from_env`].
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let from_var = Self::new(var(ENV_TOKEN)).sendable(|| ENV_TOKEN.to_string())?;
        let Some(path) = var(ENV_TOKEN_FILE).filter(|p| !p.trim().is_empty()) else { return Ok(from_var) };
        let content = std::fs::read_to_string(path.trim())
            .map_err(|e| Error::TokenFile { path: path.trim().into(), why: e.to_string() })?;
        // As Consul's client: an empty file leaves CONSUL_HTTP_TOKEN in force.
        let from_file =
            Self::new(Some(content)).sendable(|| format!("the file {:?} ({ENV_TOKEN_FILE})", path.trim()))?;
        if from_file.is_set() {
            return Ok(from_file);
        }
        // Said once at start: a file not written yet (by a secrets agent, say) would otherwise
        // show only as denials.
        let instead = if from_var.is_set() { "CONSUL_HTTP_TOKEN is used instead" } else { "no ACL token is sent" };
        tracing::warn!(file = path.trim(), "the ACL token file (CONSUL_HTTP_TOKEN_FILE) is empty: {instead}");
        Ok(from_var)
    }

    /// The secret, for the one place that puts it in a header.
    pub(crate) fn secret(&self) -> Option<&str> {
        self.0.as_deref()
    }

    /// Whether a token is set.
    pub fn is_set(&self) -> bool {
        self.0.is_some()
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.is_set() { "Token(<redacted>)" } else { "Token(none)" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_addresses_with_and_without_scheme() {
        assert_eq!(ConsulAddr::parse("127.0.0.1:8500").unwrap().as_str(), "http://127.0.0.1:8500");
        assert_eq!(ConsulAddr::parse("http://consul:8500/").unwrap().as_str(), "http://consul:8500");
        assert_eq!(ConsulAddr::parse(" localhost:1 ").unwrap().as_str(), "http://localhost:1");
        assert!(!ConsulAddr::parse("127.0.0.1:8500").unwrap().is_https());
    }

    /// As Consul's Go client: `CONSUL_HTTP_SSL=true` gives an address without a scheme
    /// `https://`; a scheme given wins; a value that is not a boolean is refused.
    #[test]
    fn consul_http_ssl_picks_https_for_an_address_without_a_scheme() {
        let p = |raw, ssl| ConsulAddr::parse_with_ssl(raw, ssl).map(|a| a.as_str().to_string());
        assert_eq!(p("127.0.0.1:8501", Some("true")).unwrap(), "https://127.0.0.1:8501");
        assert_eq!(p("127.0.0.1:8501", Some("1")).unwrap(), "https://127.0.0.1:8501");
        assert_eq!(p("127.0.0.1:8500", Some("false")).unwrap(), "http://127.0.0.1:8500");
        assert_eq!(p("127.0.0.1:8500", Some("")).unwrap(), "http://127.0.0.1:8500");
        assert_eq!(p("http://127.0.0.1:8500", Some("true")).unwrap(), "http://127.0.0.1:8500");
        assert!(matches!(ConsulAddr::parse_with_ssl("c:8501", Some("yes")), Err(Error::InvalidAddress { .. })));
    }

    #[test]
    fn accepts_https() {
        let a = ConsulAddr::parse("https://consul.example:8501/").unwrap();
        assert_eq!(a.as_str(), "https://consul.example:8501");
        assert!(a.is_https());
        // The default port of the scheme is dropped by the URL parser, as for http.
        assert_eq!(ConsulAddr::parse("https://127.0.0.1:443").unwrap().as_str(), "https://127.0.0.1");
        assert!(!ConsulAddr::parse("http://127.0.0.1:8501").unwrap().is_https());
    }

    #[test]
    fn refuses_credentials_in_the_address_without_showing_them() {
        let e = ConsulAddr::parse("http://user:s3cret@127.0.0.1:8500").unwrap_err().to_string();
        assert!(
            e.contains("user:password@") && !e.contains("s3cret") && e.contains("\"http://127.0.0.1:8500/\""),
            "{e}"
        );
        assert!(ConsulAddr::parse("admin@consul:8500").is_err());
    }

    #[test]
    fn refuses_what_it_cannot_speak() {
        for bad in ["", "ftp://c:8501", "unix:///tmp/consul.sock", "http://", "https://", "http://c:8500/?x=1"] {
            let err = ConsulAddr::parse(bad).unwrap_err();
            assert!(matches!(err, Error::InvalidAddress { .. }), "{bad}: {err}");
        }
    }

    #[test]
    fn the_token_file_wins_as_in_consuls_client() {
        let dir = tempdir("token");
        let file = dir.join("token");
        std::fs::write(&file, "  from-file\n").unwrap();
        let empty = dir.join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let f = file.to_str().unwrap().to_string();
        let e = empty.to_str().unwrap().to_string();
        let vars = |pairs: Vec<(&'static str, String)>| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())
        };
        let t = Token::from_vars(vars(vec![(ENV_TOKEN, "from-var".into()), (ENV_TOKEN_FILE, f.clone())])).unwrap();
        assert_eq!(t.secret(), Some("from-file"));
        assert_eq!(Token::from_vars(vars(vec![(ENV_TOKEN_FILE, f)])).unwrap().secret(), Some("from-file"));
        // An empty file leaves the variable in force; no file, the variable; neither, none.
        let t = Token::from_vars(vars(vec![(ENV_TOKEN, "from-var".into()), (ENV_TOKEN_FILE, e)])).unwrap();
        assert_eq!(t.secret(), Some("from-var"));
        assert_eq!(Token::from_vars(vars(vec![(ENV_TOKEN, "from-var".into())])).unwrap().secret(), Some("from-var"));
        assert!(!Token::from_vars(vars(vec![(ENV_TOKEN_FILE, " ".into())])).unwrap().is_set());
        // A file that cannot be read: an error naming it, not its content.
        let missing = dir.join("missing").to_str().unwrap().to_string();
        let err = Token::from_vars(vars(vec![(ENV_TOKEN, "s3cret".into()), (ENV_TOKEN_FILE, missing)])).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::TokenFile { .. }) && msg.contains("missing") && !msg.contains("s3cret"), "{msg}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A variable set from a file or a Kubernetes secret often ends with a newline, which no
    /// header can carry: trimmed as the file's content is. Any other control character cannot be
    /// sent at all: refused at start, naming the variable, never the value.
    #[test]
    fn the_token_variable_is_trimmed_and_unsendable_ones_refused() {
        let var = |v: &'static str| move |k: &str| (k == ENV_TOKEN).then(|| v.to_string());
        assert_eq!(Token::from_vars(var("  tok-1\r\n")).unwrap().secret(), Some("tok-1"));
        let err = Token::from_vars(var("s3cret\u{1}x")).unwrap_err().to_string();
        assert!(err.contains(ENV_TOKEN) && !err.contains("s3cret"), "{err}");
        let dir = tempdir("token-ctl");
        let file = dir.join("token");
        std::fs::write(&file, "s3cret\u{7}x\n").unwrap();
        let f = file.to_str().unwrap().to_string();
        let err = Token::from_vars(move |k: &str| (k == ENV_TOKEN_FILE).then(|| f.clone())).unwrap_err().to_string();
        assert!(err.contains("token") && !err.contains("s3cret"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempdir(what: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("consul-{what}-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn token_never_prints() {
        let t = Token::new(Some("s3cr3t".into()));
        assert!(!format!("{t:?}").contains("s3cr3t"));
        assert!(!Token::new(Some("  ".into())).is_set());
    }
}
