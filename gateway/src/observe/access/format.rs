//! The access log's line formats (README, "Access log and request IDs"). Both carry the same
//! fields; a missing value is `-` in text and `null` in JSON. Time is RFC 3339 in UTC with
//! milliseconds; the duration is in seconds with microsecond precision.
//!
//! Text, one space-separated line (the path escaped so that a client cannot forge a line):
//! `<time> <client> "<method> <path> <protocol>" <status> <bytes_in> <bytes_out> <duration>
//! route=<route> service=<service> instance=<instance> retries=<n> request_id=<id>`
//!
//! JSON, one object per line with the keys `time`, `client`, `method`, `path`, `protocol`,
//! `status`, `bytes_in`, `bytes_out`, `duration_seconds`, `route`, `service`, `instance`,
//! `retries`, `request_id`.

use std::io::Write;

use http::Version;

use super::Record;

/// A line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Space-separated fields, Apache-like.
    Text,
    /// One JSON object per line.
    Json,
}

impl Format {
    /// Appends `r`'s line, newline included, to `out`.
    pub fn line(self, r: &Record, out: &mut Vec<u8>) {
        match self {
            Format::Text => text(r, out),
            Format::Json => json(r, out),
        }
    }
}

/// `HTTP/1.1`, `HTTP/2`...
pub fn protocol(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/?",
    }
}

fn time(r: &Record) -> humantime::Rfc3339Timestamp {
    humantime::format_rfc3339_millis(r.time)
}

/// Appends `s` with every byte outside visible ASCII, `"` and `\` as `\xHH`.
pub fn escape(s: &[u8], out: &mut Vec<u8>) {
    for &b in s {
        if (0x21..=0x7e).contains(&b) && b != b'"' && b != b'\\' {
            out.push(b);
        } else {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
}

fn text(r: &Record, out: &mut Vec<u8>) {
    let _ = write!(out, "{} ", time(r));
    match r.client {
        Some(c) => {
            let _ = write!(out, "{c}");
        }
        None => out.push(b'-'),
    }
    out.extend_from_slice(b" \"");
    escape(r.method.as_str().as_bytes(), out);
    out.push(b' ');
    escape(r.path.as_ref().map_or("-", |p| p.as_str()).as_bytes(), out);
    let _ = write!(
        out,
        " {}\" {} {} {} {:.6} route=",
        protocol(r.version),
        r.status,
        r.bytes_in,
        r.bytes_out,
        r.duration.as_secs_f64()
    );
    escape(r.route.as_deref().unwrap_or("-").as_bytes(), out);
    out.extend_from_slice(b" service=");
    escape(r.service.as_deref().unwrap_or("-").as_bytes(), out);
    out.extend_from_slice(b" instance=");
    escape(r.instance.as_ref().map_or("-", |a| a.as_str()).as_bytes(), out);
    let _ = write!(out, " retries={} request_id=", r.retries);
    escape(r.request_id.as_bytes(), out);
    out.push(b'\n');
}

fn json(r: &Record, out: &mut Vec<u8>) {
    let string = |out: &mut Vec<u8>, s: Option<&str>| match s {
        Some(s) => {
            let _ = serde_json::to_writer(&mut *out, s);
        }
        None => out.extend_from_slice(b"null"),
    };
    let _ = write!(out, "{{\"time\":\"{}\",\"client\":", time(r));
    string(out, r.client.map(|c| c.to_string()).as_deref());
    out.extend_from_slice(b",\"method\":");
    string(out, Some(r.method.as_str()));
    out.extend_from_slice(b",\"path\":");
    string(out, r.path.as_ref().map(|p| p.as_str()));
    let _ = write!(
        out,
        ",\"protocol\":\"{}\",\"status\":{},\"bytes_in\":{},\"bytes_out\":{},\"duration_seconds\":{:.6},\"route\":",
        protocol(r.version),
        r.status,
        r.bytes_in,
        r.bytes_out,
        r.duration.as_secs_f64()
    );
    string(out, r.route.as_deref());
    out.extend_from_slice(b",\"service\":");
    string(out, r.service.as_deref());
    out.extend_from_slice(b",\"instance\":");
    string(out, r.instance.as_ref().map(|a| a.as_str()));
    let _ = write!(out, ",\"retries\":{},\"request_id\":", r.retries);
    string(out, Some(&String::from_utf8_lossy(r.request_id.as_bytes())));
    out.extend_from_slice(b"}\n");
}
