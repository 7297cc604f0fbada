//! The values in a tag: paths, hosts, redirect URLs, splits, balancing policies. Each checker returns the value in
//! canonical form or a [`TagError`] saying what is wrong with it.

use super::{shown, Host, Redirect, Split, Sticky, TagError};
use crate::proxy::balancer::Balance;

/// A route path or a `strip=`/`prepend=` value, with `%` escapes in uppercase hex.
pub(super) fn path_value(field: &'static str, raw: &str) -> Result<String, TagError> {
    let err = |problem: &str| TagError::Invalid(field, shown(raw), problem.into());
    if !raw.starts_with('/') {
        return Err(err("path must start with '/'"));
    }
    let (bytes, mut out) = (raw.as_bytes(), String::with_capacity(raw.len()));
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).filter(|h| h.iter().all(u8::is_ascii_hexdigit));
                let hex = hex.ok_or_else(|| err("'%' must start an escape of two hex digits"))?;
                out.push('%');
                out.extend(hex.iter().map(|h| char::from(h.to_ascii_uppercase())));
                i += 2;
            }
            b'?' => return Err(err("a route path has no query ('?')")),
            b'#' => return Err(err("a route path has no fragment ('#')")),
            b'*' => return Err(err("'*': fabio's glob patterns are not supported, paths are prefixes")),
            b'$' => return Err(err("'$': fabio's $VAR expansion is not supported")),
            _ if b.is_ascii_control() || b == b' ' => return Err(err("control character or whitespace")),
            _ if !b.is_ascii() => return Err(err("non-ASCII character (percent-encode it)")),
            _ if b.is_ascii_alphanumeric() || b"/-._~!&'()+,;=:@".contains(&b) => out.push(char::from(b)),
            _ => return Err(err(&format!("character '{}' is not allowed in a path", char::from(b)))),
        }
        i += 1;
    }
    let mut segments = out.split('/').skip(1).peekable();
    while let Some(segment) = segments.next() {
        if segment.is_empty() && segments.peek().is_some() {
            return Err(err("empty segment ('//')"));
        }
        if matches!(segment.replace("%2E", ".").as_str(), "." | "..") {
            return Err(err("'.' or '..' segment"));
        }
    }
    Ok(out)
}

/// A `strip=` or `prepend=` value: a path not ending in `/`.
pub(super) fn prefix_value(option: &'static str, raw: &str) -> Result<String, TagError> {
    let path = path_value(if option == "strip" { "strip=" } else { "prepend=" }, raw)?;
    if path.ends_with('/') {
        return Err(TagError::TrailingSlash(option));
    }
    Ok(path)
}

/// The host part of the route: empty, a name or `*.` a name.
pub(super) fn route_host(raw: &str) -> Result<Host, TagError> {
    let err = |problem: &str| TagError::Invalid("route host", shown(raw), problem.into());
    let host = raw.to_ascii_lowercase();
    if host.is_empty() {
        Ok(Host::Any)
    } else if host.starts_with('[') {
        Err(err("IPv6 literal hosts are not supported"))
    } else if host.contains(':') {
        Err(err("a route host has no port: routes match the request's host name, whatever the port"))
    } else if host == "*" {
        Err(err("a bare '*': leave the host out to match every host"))
    } else if let Some(suffix) = host.strip_prefix("*.") {
        name_problem(suffix).map_or(Ok(Host::Wildcard(suffix.to_string())), |p| Err(err(p)))
    } else {
        name_problem(&host).map_or(Ok(Host::Exact(host.clone())), |p| Err(err(p)))
    }
}

/// What is wrong with a DNS name (lowercase letters, digits, `-`; labels of 1 to 63), if anything.
fn name_problem(name: &str) -> Option<&'static str> {
    if name.len() > 253 {
        return Some("longer than 253 characters");
    }
    for label in name.split('.') {
        let problem = match label.bytes().find(|b| !(b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')) {
            Some(b'*') => "'*' only as the whole first label, as in `*.example.com`",
            Some(b) if !b.is_ascii() => "non-ASCII name: write its punycode (`xn--`) form",
            Some(_) => "a host name has only letters, digits, '-' and '.'",
            None if label.is_empty() => "empty label (leading, trailing or double '.')",
            None if label.len() > 63 => "a label longer than 63 characters",
            None if label.starts_with('-') || label.ends_with('-') => "a label cannot start or end with '-'",
            None => continue,
        };
        return Some(problem);
    }
    None
}

/// A `host=` name (or, within a redirect URL, an authority): `name[:port]`, lowercase.
fn authority(raw: &str) -> Result<String, &'static str> {
    let lower = raw.to_ascii_lowercase();
    let (name, port) = lower.split_once(':').map_or((lower.as_str(), None), |(n, p)| (n, Some(p)));
    if name.starts_with('[') {
        return Err("IPv6 literal hosts are not supported");
    }
    if let Some(problem) = name_problem(name) {
        return Err(problem);
    }
    match port {
        None => Ok(lower.clone()),
        Some(p) => match p.parse::<u16>() {
            Ok(port) if port > 0 && p.bytes().all(|b| b.is_ascii_digit()) => Ok(format!("{name}:{port}")),
            _ => Err("port must be a number from 1 to 65535"),
        },
    }
}

/// A `host=` value other than `dst`.
pub(super) fn upstream_name(raw: &str) -> Result<String, TagError> {
    authority(raw).map_err(|p| TagError::Invalid("host=", shown(raw), p.into()))
}

/// `<code>,<url>`; `/$path` becomes `$path` (the request path has its own `/`).
pub(super) fn parse_redirect(value: &str) -> Result<Redirect, TagError> {
    let (code, url) = value
        .split_once(',')
        .filter(|(c, u)| !c.is_empty() && !u.is_empty())
        .ok_or_else(|| TagError::Syntax("redirect", shown(value), "redirect=<code>,<url>"))?;
    let code = match code.parse::<u16>() {
        Ok(c @ (301 | 302 | 303 | 307 | 308)) if code.bytes().all(|b| b.is_ascii_digit()) => c,
        _ => return Err(TagError::RedirectCode(shown(code))),
    };
    let err = |problem: &str| TagError::Invalid("redirect URL", shown(url), problem.into());
    let (origin, rest) = if let Some(after) = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://")) {
        let end = after.find(['/', '?', '#', '$']).unwrap_or(after.len());
        let (auth, rest) = after.split_at(end);
        if auth.contains('@') {
            return Err(err("no user info ('@') before the host"));
        }
        let auth = authority(auth).map_err(|p| err(if auth.is_empty() { "no host after the scheme" } else { p }))?;
        (format!("{}{auth}", &url[..url.len() - after.len()]), rest)
    } else if url.starts_with("//") {
        return Err(err("'//' without a scheme: write http:// or https://"));
    } else if url.starts_with("/$path") {
        return Err(err("`/$path` sends the client back to the path it asked for"));
    } else if url.starts_with('/') {
        (String::new(), url)
    } else {
        return Err(err("must be an absolute http:// or https:// URL or a path starting with '/'"));
    };
    for (i, b) in rest.bytes().enumerate() {
        let problem = match b {
            b'$' if !rest.as_bytes().get(i..).is_some_and(|r| r.starts_with(b"$path")) => {
                "'$' only in `$path` (fabio's `$host` is not supported)"
            }
            b'%' if !rest.as_bytes().get(i + 1..i + 3).is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) => {
                "'%' must start an escape of two hex digits"
            }
            _ if b.is_ascii_control() || b == b' ' => "control character or whitespace",
            _ if !b.is_ascii() => "non-ASCII character (percent-encode it)",
            _ if b.is_ascii_alphanumeric() || b"/-._~!$&'()*+,;=:@?#%".contains(&b) => continue,
            _ => "a character not allowed in a URL",
        };
        return Err(err(problem));
    }
    if rest.matches("$path").count() > 1 {
        return Err(err("`$path` more than once"));
    }
    if rest.find(['?', '#']).is_some_and(|end| rest[end..].contains("$path")) {
        return Err(err("`$path` only in the path, not in the query or fragment"));
    }
    // `/$path` is read as `$path` (the request path has its own '/'); before a second '/', that
    // would leave `/$path`, read again as `$path` when the canonical tag is parsed: refused.
    if rest.contains("//$path") {
        return Err(err("an empty segment before `$path` (`//$path`)"));
    }
    Ok(Redirect { code, url: origin + &rest.replacen("/$path", "$path", 1) })
}

/// `<tag>:<percent>`, split at the last `:`.
pub(super) fn parse_split(value: &str, sticky: Sticky) -> Result<Split, TagError> {
    let syntax = || {
        TagError::Syntax("split", shown(value), "split=<tag>:<percent>, <tag> not empty, without control characters")
    };
    let (tag, percent) =
        value.rsplit_once(':').filter(|(t, _)| !t.is_empty() && !t.chars().any(char::is_control)).ok_or_else(syntax)?;
    match percent.parse::<u8>() {
        Ok(p) if p <= 100 && percent.bytes().all(|b| b.is_ascii_digit()) => {
            Ok(Split { tag: tag.to_string(), percent: p, sticky })
        }
        _ => Err(TagError::SplitPercent(shown(percent))),
    }
}

/// A `balance=` value: `random`, `round-robin` or `least-request`, exactly.
pub(super) fn parse_balance(value: &str) -> Result<Balance, TagError> {
    Balance::from_name(value)
        .ok_or_else(|| TagError::Syntax("balance", shown(value), "balance=random, round-robin or least-request"))
}
