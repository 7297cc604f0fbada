//! TEMPORARY STUB: replaced by the real parser from branch i10-tags.
#![allow(missing_docs, clippy::all)]

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TagRules {
    pub route_tag: String,
    pub prefix: String,
}

pub enum Tag<'a> {
    NameRoute,
    Declared(&'a str),
    Other,
}

impl TagRules {
    pub fn classify<'a>(&self, tag: &'a str) -> Tag<'a> {
        if !self.route_tag.is_empty() && tag == self.route_tag {
            return Tag::NameRoute;
        }
        match tag.strip_prefix(self.prefix.as_str()) {
            Some(body) if !self.prefix.is_empty() => Tag::Declared(body),
            _ => Tag::Other,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Host {
    Any,
    Exact(String),
    Wildcard(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpstreamHost {
    Client,
    Dst,
    Name(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redirect {
    pub code: u16,
    pub url: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sticky {
    Cookie,
    Addr,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Split {
    pub tag: String,
    pub percent: u8,
    pub sticky: Sticky,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteSpec {
    pub host: Host,
    pub path: String,
    pub strip: Option<String>,
    pub prepend: Option<String>,
    pub upstream_host: UpstreamHost,
    pub redirect: Option<Redirect>,
    pub split: Option<Split>,
}

#[derive(Debug, thiserror::Error)]
pub enum TagError {
    #[error("{0}")]
    Bad(String),
}

pub fn parse(body: &str) -> Result<RouteSpec, TagError> {
    let mut parts = body.split_whitespace();
    let first = parts.next().ok_or_else(|| TagError::Bad("empty".into()))?;
    let slash = first.find('/').ok_or_else(|| TagError::Bad("path must start with '/'".into()))?;
    let (h, path) = first.split_at(slash);
    let host = if h.is_empty() {
        Host::Any
    } else if let Some(s) = h.strip_prefix("*.") {
        Host::Wildcard(s.to_ascii_lowercase())
    } else {
        Host::Exact(h.to_ascii_lowercase())
    };
    let mut spec = RouteSpec {
        host,
        path: path.to_string(),
        strip: None,
        prepend: None,
        upstream_host: UpstreamHost::Client,
        redirect: None,
        split: None,
    };
    let mut sticky = Sticky::Cookie;
    for opt in parts {
        let (k, v) = opt.split_once('=').ok_or_else(|| TagError::Bad(format!("bad option {opt}")))?;
        match k {
            "strip" => spec.strip = Some(v.to_string()),
            "prepend" => spec.prepend = Some(v.to_string()),
            "host" => spec.upstream_host = if v == "dst" { UpstreamHost::Dst } else { UpstreamHost::Name(v.into()) },
            "redirect" => {
                let (c, u) = v.split_once(',').ok_or_else(|| TagError::Bad("redirect".into()))?;
                spec.redirect =
                    Some(Redirect { code: c.parse().map_err(|_| TagError::Bad("code".into()))?, url: u.into() })
            }
            "split" => {
                let (t, p) = v.split_once(':').ok_or_else(|| TagError::Bad("split".into()))?;
                spec.split = Some(Split {
                    tag: t.into(),
                    percent: p.parse().map_err(|_| TagError::Bad("percent".into()))?,
                    sticky,
                })
            }
            "sticky" => {
                sticky = if v == "addr" { Sticky::Addr } else { Sticky::Cookie };
                if let Some(s) = &mut spec.split {
                    s.sticky = sticky
                }
            }
            _ => return Err(TagError::Bad(format!("unknown option `{k}`"))),
        }
    }
    Ok(spec)
}

impl std::fmt::Display for RouteSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.host {
            Host::Any => {}
            Host::Exact(h) => f.write_str(h)?,
            Host::Wildcard(h) => write!(f, "*.{h}")?,
        }
        f.write_str(&self.path)
    }
}
