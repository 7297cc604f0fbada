//! The API's bearer token: where it comes from (`--api-token`, or `--api-token-file`, which wins,
//! as Consul's `CONSUL_HTTP_TOKEN_FILE` wins over `CONSUL_HTTP_TOKEN`), that it never prints
//! (its `Debug` and `Display` say `<redacted>`), and the constant-time check of an
//! `Authorization: Bearer <token>` header against it (RFC 6750, section 2.1).

use std::fmt;
use std::path::Path;
use std::sync::Arc;

/// The longest token accepted, in bytes: longer is a file read by mistake (a certificate, a log).
pub const MAX_TOKEN_LEN: usize = 4096;

/// A secret bearer token. Cheap to clone; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiToken(Arc<str>);

/// Why a token cannot be used. Never holds the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Nothing but whitespace.
    #[error("the API token is empty")]
    Empty,
    /// Longer than [`MAX_TOKEN_LEN`].
    #[error("the API token is longer than {MAX_TOKEN_LEN} bytes")]
    TooLong,
    /// Whitespace or a control character inside, which no `Authorization` header carries as one
    /// token (RFC 6750's `b64token`: letters, digits and `-._~+/=`, and we accept any other
    /// visible ASCII too).
    #[error("the API token holds whitespace, a control character or non-ASCII (the value is not shown)")]
    Characters,
    /// `--api-token-file` cannot be read.
    #[error("cannot read the API token file {path:?}: {why}")]
    File {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        why: String,
    },
}

impl ApiToken {
    /// A token from a flag or variable, without surrounding whitespace.
    ///
    /// # Errors
    /// [`TokenError`]: empty, too long, or characters a header cannot carry as one token.
    pub fn new(value: &str) -> Result<Self, TokenError> {
        let t = value.trim();
        if t.is_empty() {
            return Err(TokenError::Empty);
        }
        if t.len() > MAX_TOKEN_LEN {
            return Err(TokenError::TooLong);
        }
        if !t.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TokenError::Characters);
        }
        Ok(Self(t.into()))
    }

    /// The token in `path` (its first line's worth: surrounding whitespace, such as the final
    /// newline `echo` writes, is dropped).
    ///
    /// # Errors
    /// [`TokenError::File`] if it cannot be read, else as [`ApiToken::new`].
    pub fn from_file(path: &Path) -> Result<Self, TokenError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| TokenError::File { path: path.to_path_buf(), why: e.to_string() })?;
        Self::new(&text)
    }

    /// Whether an `Authorization` header value is `Bearer <this token>`. The scheme is matched
    /// without regard to case (RFC 7235, section 2.1); the token's bytes are compared in time
    /// that depends only on their lengths.
    pub fn accepts(&self, authorization: &[u8]) -> bool {
        let Some(space) = authorization.iter().position(|b| *b == b' ') else {
            return false;
        };
        let (scheme, rest) = authorization.split_at(space);
        if !scheme.eq_ignore_ascii_case(b"bearer") {
            return false;
        }
        let given = rest.trim_ascii();
        constant_time_eq(given, self.0.as_bytes())
    }
}

/// Compares two byte strings, taking the same time whatever their content (the lengths may
/// show). A timing-safe comparison, so that the token cannot be guessed byte by byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiToken(<redacted>)")
    }
}

impl fmt::Display for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// `--api-token` as given, checked later by [`ApiToken::new`] (so that clap's error for a bad
/// value, which quotes it, never shows a token). Never printed either.
#[derive(Clone)]
pub struct RawToken(pub String);

impl std::str::FromStr for RawToken {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_string()))
    }
}

impl fmt::Debug for RawToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RawToken(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_bearer_token_is_accepted() {
        let t = ApiToken::new(" s3cret-token\n").unwrap();
        assert!(t.accepts(b"Bearer s3cret-token"));
        assert!(t.accepts(b"bearer s3cret-token"), "the scheme has no case");
        assert!(t.accepts(b"BEARER  s3cret-token "));
        for bad in [
            &b""[..],
            b"Bearer",
            b"Bearer ",
            b"Bearer s3cret-toke",
            b"Bearer s3cret-tokenn",
            b"Bearer S3CRET-TOKEN",
            b"Basic s3cret-token",
            b"s3cret-token",
            b"Bearer s3cret token",
        ] {
            assert!(!t.accepts(bad), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn a_token_never_prints() {
        let t = ApiToken::new("hunter2-hunter2").unwrap();
        assert!(!format!("{t:?} {t} {:?}", Some(t.clone())).contains("hunter2"));
    }

    #[test]
    fn unusable_tokens_are_refused_without_showing_them() {
        assert_eq!(ApiToken::new("  \n"), Err(TokenError::Empty));
        assert_eq!(ApiToken::new("a b"), Err(TokenError::Characters));
        assert_eq!(ApiToken::new("tok\u{7}"), Err(TokenError::Characters));
        assert_eq!(ApiToken::new("tökén"), Err(TokenError::Characters));
        assert_eq!(ApiToken::new(&"x".repeat(MAX_TOKEN_LEN + 1)), Err(TokenError::TooLong));
        let e = ApiToken::new("secret value").unwrap_err().to_string();
        assert!(!e.contains("secret"), "{e}");
    }

    #[test]
    fn the_file_holds_the_token_and_its_newline_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "from-file\n").unwrap();
        assert!(ApiToken::from_file(&path).unwrap().accepts(b"Bearer from-file"));
        let e = ApiToken::from_file(&dir.path().join("missing")).unwrap_err();
        assert!(matches!(e, TokenError::File { .. }), "{e}");
    }
}
