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

/// Appends `n` in decimal (no formatting machinery: this runs for several fields per line).
fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// Appends a duration in seconds with 6 decimals (`0.001500`).
fn push_seconds(out: &mut Vec<u8>, d: std::time::Duration) {
    push_u64(out, d.as_secs());
    out.push(b'.');
    let micros = u64::from(d.subsec_micros());
    let mut digits = [b'0'; 6];
    let mut m = micros;
    for slot in digits.iter_mut().rev() {
        *slot = b'0' + (m % 10) as u8;
        m /= 10;
    }
    out.extend_from_slice(&digits);
}

/// Appends `address:port` (IPv6 as `[address]:port`).
fn push_addr(out: &mut Vec<u8>, a: std::net::SocketAddr) {
    match a {
        std::net::SocketAddr::V4(v4) => {
            for (i, o) in v4.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                push_u64(out, u64::from(o));
            }
        }
        std::net::SocketAddr::V6(v6) => {
            let _ = write!(out, "[{}]", v6.ip());
        }
    }
    out.push(b':');
    push_u64(out, u64::from(a.port()));
}

fn text(r: &Record, out: &mut Vec<u8>) {
    let _ = write!(out, "{} ", time(r));
    match r.client {
        Some(c) => push_addr(out, c),
        None => out.push(b'-'),
    }
    out.extend_from_slice(b" \"");
    escape(r.method.as_str().as_bytes(), out);
    out.push(b' ');
    escape(r.path.as_ref().map_or("-", |p| p.as_str()).as_bytes(), out);
    out.push(b' ');
    out.extend_from_slice(protocol(r.version).as_bytes());
    out.extend_from_slice(b"\" ");
    push_u64(out, u64::from(r.status));
    out.push(b' ');
    push_u64(out, r.bytes_in);
    out.push(b' ');
    push_u64(out, r.bytes_out);
    out.push(b' ');
    push_seconds(out, r.duration);
    out.extend_from_slice(b" route=");
    escape(r.route.as_deref().unwrap_or("-").as_bytes(), out);
    out.extend_from_slice(b" service=");
    escape(r.service.as_deref().unwrap_or("-").as_bytes(), out);
    out.extend_from_slice(b" instance=");
    escape(r.instance.as_ref().map_or("-", |a| a.as_str()).as_bytes(), out);
    out.extend_from_slice(b" retries=");
    push_u64(out, u64::from(r.retries));
    out.extend_from_slice(b" request_id=");
    escape(r.request_id.as_bytes(), out);
    out.push(b'\n');
}

/// Appends `s` as a JSON string, or `null`.
fn json_string(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => {
            let _ = serde_json::to_writer(&mut *out, s);
        }
        None => out.extend_from_slice(b"null"),
    }
}

fn json(r: &Record, out: &mut Vec<u8>) {
    let _ = write!(out, "{{\"time\":\"{}\",\"client\":", time(r));
    match r.client {
        Some(c) => {
            out.push(b'"');
            push_addr(out, c);
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"method\":");
    json_string(out, Some(r.method.as_str()));
    out.extend_from_slice(b",\"path\":");
    json_string(out, r.path.as_ref().map(|p| p.as_str()));
    out.extend_from_slice(b",\"protocol\":\"");
    out.extend_from_slice(protocol(r.version).as_bytes());
    out.extend_from_slice(b"\",\"status\":");
    push_u64(out, u64::from(r.status));
    out.extend_from_slice(b",\"bytes_in\":");
    push_u64(out, r.bytes_in);
    out.extend_from_slice(b",\"bytes_out\":");
    push_u64(out, r.bytes_out);
    out.extend_from_slice(b",\"duration_seconds\":");
    push_seconds(out, r.duration);
    out.extend_from_slice(b",\"route\":");
    json_string(out, r.route.as_deref());
    out.extend_from_slice(b",\"service\":");
    json_string(out, r.service.as_deref());
    out.extend_from_slice(b",\"instance\":");
    json_string(out, r.instance.as_ref().map(|a| a.as_str()));
    out.extend_from_slice(b",\"retries\":");
    push_u64(out, u64::from(r.retries));
    out.extend_from_slice(b",\"request_id\":");
    json_string(out, Some(r.request_id.to_str().unwrap_or("-")));
    out.extend_from_slice(b"}\n");
}
