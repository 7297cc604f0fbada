//! Reading one HTTP/1.1 request off a plain socket, for the test instances ([`crate::backend`],
//! [`crate::echo`]) that are written on `std::net` so that what goes on the wire is exactly what
//! the test says.

use std::collections::BTreeMap;
use std::io::BufRead;

/// One request as read.
#[derive(Debug)]
pub struct Request {
    /// The method.
    pub method: String,
    /// The request target as sent (path and query).
    pub path: String,
    /// Header names lowercased; repeated headers joined with `, `.
    pub headers: BTreeMap<String, String>,
    /// The body (`Content-Length` bytes).
    pub body: Vec<u8>,
}

/// Reads the rest of a request whose request line (`GET /x HTTP/1.1`) was already read: the
/// headers and a `Content-Length` body. `None` when the connection ends or fails first.
pub fn read_after(request_line: &str, reader: &mut impl BufRead) -> Option<Request> {
    let mut words = request_line.split_whitespace();
    let (method, path) = (words.next().unwrap_or("").to_string(), words.next().unwrap_or("").to_string());
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    loop {
        let mut header = String::new();
        if !matches!(reader.read_line(&mut header), Ok(n) if n > 0) {
            return None;
        }
        if header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim().to_string());
            headers.entry(name).and_modify(|v| *v = format!("{v}, {value}")).or_insert(value);
        }
    }
    let length: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).ok()?;
    Some(Request { method, path, headers, body })
}
