//! A small Chrome DevTools Protocol client, to test pages in a real browser: Debian's `chromium`,
//! headless, started per test on a free debugging port with a throw-away profile, and killed on
//! drop.
//!
//! - [`Browser::launch`] starts `chromium --headless=new --remote-debugging-port=0`, reads the
//!   port it chose from `DevToolsActivePort` in its profile directory, and finds its page target
//!   (`/json/list`).
//! - [`Page`] speaks CDP to that target over a WebSocket (tungstenite's blocking client):
//!   [`Page::call`] sends a command and waits for its answer, skipping events; [`Page::navigate`],
//!   [`Page::eval`], [`Page::wait_eval`] and [`Page::screenshot`] are built on it. Every wait is
//!   bounded.
//!
//! Chromium is found through `CHROMIUM_BIN`, then `chromium` on `PATH`
//! (`scripts/install-chromium.sh` installs it); without it, [`Browser::launch`] fails with a
//! message naming that script.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::{self, Message, WebSocket};

/// How long a CDP command may take to be answered (navigation and screenshots included).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// How long chromium may take to start and open its debugging port.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A headless chromium, killed (and its profile removed) on drop.
pub struct Browser {
    child: Child,
    profile: tempfile::TempDir,
    port: u16,
}

/// The chromium binary: `CHROMIUM_BIN`, else `chromium` on `PATH`.
pub fn chromium_bin() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("CHROMIUM_BIN").map(PathBuf::from) {
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "CHROMIUM_BIN={} does not exist: unset it, or run `bash scripts/install-chromium.sh`",
                path.display()
            ))
        };
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("chromium"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            "chromium is not installed: run `bash scripts/install-chromium.sh` (Debian's chromium, which the \
             status page's browser test drives headless), or set CHROMIUM_BIN"
                .to_string()
        })
}

impl Browser {
    /// Starts a headless chromium on `about:blank` with a window of 1280×900 CSS pixels, and waits
    /// until its debugging port is open. Errors: no chromium (the message names
    /// `scripts/install-chromium.sh`), or it did not open its port within 30 s (with its stderr).
    pub fn launch() -> Result<Self, String> {
        let bin = chromium_bin()?;
        let profile = tempfile::Builder::new().prefix("cdp-profile-").tempdir().map_err(|e| e.to_string())?;
        let log = std::fs::File::create(profile.path().join("stderr.log")).map_err(|e| e.to_string())?;
        let child = Command::new(&bin)
            .args([
                "--headless=new",
                "--remote-debugging-port=0",
                "--remote-debugging-address=127.0.0.1",
                "--no-sandbox",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--metrics-recording-only",
                "--mute-audio",
                "--hide-scrollbars",
                "--window-size=1280,900",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let mut browser = Self { child, profile, port: 0 };
        let active = browser.profile.path().join("DevToolsActivePort");
        let deadline = Instant::now() + START_TIMEOUT;
        browser.port = loop {
            // The file's first line is the port, once chromium listens.
            let port = std::fs::read_to_string(&active)
                .ok()
                .and_then(|s| s.lines().next().and_then(|l| l.trim().parse::<u16>().ok()));
            if let Some(port) = port.filter(|p| *p != 0) {
                break port;
            }
            if let Ok(Some(status)) = browser.child.try_wait() {
                return Err(format!(
                    "chromium exited ({status}) before opening its debugging port:\n{}",
                    browser.stderr()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "chromium did not open its debugging port in {START_TIMEOUT:?}:\n{}",
                    browser.stderr()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        Ok(browser)
    }

    /// What chromium wrote on stderr so far (the last 4 KiB).
    pub fn stderr(&self) -> String {
        let text = std::fs::read_to_string(self.profile.path().join("stderr.log")).unwrap_or_default();
        let start = text.len().saturating_sub(4096);
        let start = (start..text.len()).find(|i| text.is_char_boundary(*i)).unwrap_or(text.len());
        text[start..].to_string()
    }

    /// The debugging port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Connects to the browser's first page target (the `about:blank` tab it started with).
    pub fn page(&self) -> Result<Page, String> {
        let list = format!("http://127.0.0.1:{}/json/list", self.port);
        let deadline = Instant::now() + START_TIMEOUT;
        let url = loop {
            let targets: Value =
                crate::http().get(&list).send().and_then(|r| r.json()).map_err(|e| format!("GET {list}: {e}"))?;
            let page = targets.as_array().into_iter().flatten().find(|t| t["type"] == "page");
            if let Some(ws) = page.and_then(|t| t["webSocketDebuggerUrl"].as_str()) {
                break ws.to_string();
            }
            if Instant::now() > deadline {
                return Err(format!("no page target in {list}: {targets}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        Page::connect(&url)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One page target, spoken to over CDP.
pub struct Page {
    ws: WebSocket<TcpStream>,
    next_id: u64,
}

impl Page {
    /// Connects to a target's `webSocketDebuggerUrl` (`ws://127.0.0.1:<port>/devtools/page/<id>`).
    pub fn connect(url: &str) -> Result<Self, String> {
        let addr = url
            .strip_prefix("ws://")
            .and_then(|rest| rest.split('/').next())
            .ok_or_else(|| format!("not a ws:// URL: {url}"))?;
        let stream = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
        stream.set_read_timeout(Some(CALL_TIMEOUT)).map_err(|e| e.to_string())?;
        let (ws, _) = tungstenite::client(url, stream).map_err(|e| format!("WebSocket handshake with {url}: {e}"))?;
        let mut page = Self { ws, next_id: 0 };
        page.call("Runtime.enable", json!({}))?;
        page.call("Page.enable", json!({}))?;
        Ok(page)
    }

    /// Sends `method` with `params` and returns its `result`, skipping the events that come
    /// meanwhile. Errors: CDP's error answer, the connection failing, or no answer in
    /// [`CALL_TIMEOUT`].
    pub fn call(&mut self, method: &str, params: Value) -> Result<Value, String> {
        self.call_until(method, params, Instant::now() + CALL_TIMEOUT)
    }

    fn call_until(&mut self, method: &str, params: Value, deadline: Instant) -> Result<Value, String> {
        self.next_id += 1;
        let id = self.next_id;
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        self.ws.send(Message::text(msg)).map_err(|e| format!("{method}: send: {e}"))?;
        loop {
            let v = self.read_until(deadline).map_err(|e| format!("{method}: {e}"))?;
            if v["id"].as_u64() != Some(id) {
                continue; // an event, or the answer to an abandoned call
            }
            if let Some(err) = v.get("error") {
                return Err(format!("{method}: {err}"));
            }
            return Ok(v["result"].clone());
        }
    }

    /// The next message, by `deadline`.
    fn read_until(&mut self, deadline: Instant) -> Result<Value, String> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err("no answer in time".to_string());
            }
            self.ws.get_mut().set_read_timeout(Some(left.max(Duration::from_millis(1)))).map_err(|e| e.to_string())?;
            match self.ws.read() {
                Ok(Message::Text(text)) => return serde_json::from_str(text.as_str()).map_err(|e| e.to_string()),
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
                {
                    continue
                }
                Err(e) => return Err(format!("read: {e}")),
            }
        }
    }

    /// Loads `url` and waits until its `load` event fired (within [`CALL_TIMEOUT`]).
    pub fn navigate(&mut self, url: &str) -> Result<(), String> {
        let deadline = Instant::now() + CALL_TIMEOUT;
        let result = self.call_until("Page.navigate", json!({"url": url}), deadline)?;
        if let Some(err) = result.get("errorText") {
            return Err(format!("navigating to {url}: {err}"));
        }
        // Wait for the document to be complete (its `load` event may already be past).
        self.wait_eval(CALL_TIMEOUT, "document.readyState", |v| v == "complete").map(|_| ())
    }

    /// Evaluates a JavaScript expression in the page and returns its value (JSON); a promise is
    /// awaited. Errors: a thrown exception (with its description), or CDP's error.
    pub fn eval(&mut self, expression: &str) -> Result<Value, String> {
        let result = self
            .call("Runtime.evaluate", json!({"expression": expression, "returnByValue": true, "awaitPromise": true}))?;
        if let Some(exception) = result.get("exceptionDetails") {
            let what = exception["exception"]["description"].as_str().unwrap_or("an exception");
            return Err(format!("`{expression}` threw: {what}"));
        }
        Ok(result["result"]["value"].clone())
    }

    /// Evaluates `expression` every 10 ms until `done` accepts its value, which it returns. Errors:
    /// not accepted within `timeout` (with the last value), or [`Page::eval`]'s.
    pub fn wait_eval(
        &mut self,
        timeout: Duration,
        expression: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Result<Value, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.eval(expression)?;
            if done(&v) {
                return Ok(v);
            }
            if Instant::now() > deadline {
                return Err(format!("`{expression}` was still {v} after {timeout:?}"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sets the viewport to `width`×`height` CSS pixels at `scale` device pixels per CSS pixel.
    pub fn set_viewport(&mut self, width: u32, height: u32, scale: f64) -> Result<(), String> {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": scale, "mobile": false}),
        )
        .map(|_| ())
    }

    /// A PNG of the page: of the viewport, or with `full_page` of the whole document.
    pub fn screenshot(&mut self, full_page: bool) -> Result<Vec<u8>, String> {
        let result =
            self.call("Page.captureScreenshot", json!({"format": "png", "captureBeyondViewport": full_page}))?;
        let data = result["data"].as_str().ok_or_else(|| format!("no screenshot data: {result}"))?;
        base64_decode(data)
    }
}

/// Decodes standard base64 (with padding), as CDP sends binary data.
fn base64_decode(text: &str) -> Result<Vec<u8>, String> {
    fn value(c: u8) -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some((c - b'A') as u32),
            b'a'..=b'z' => Some((c - b'a') as u32 + 26),
            b'0'..=b'9' => Some((c - b'0') as u32 + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    let bytes: Vec<u8> = text.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    if bytes.len() % 4 != 0 {
        return Err("base64: length is not a multiple of 4".to_string());
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    for chunk in bytes.chunks(4) {
        let pad = chunk.iter().rev().take_while(|c| **c == b'=').count();
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            let v = if i >= 4 - pad { 0 } else { value(*c).ok_or("base64: not a base64 character")? };
            n = n << 6 | v;
        }
        let three = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&three[..3 - pad.min(2)]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_decodes() {
        assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64_decode("aGk=").unwrap(), b"hi");
        assert_eq!(base64_decode("aGV5").unwrap(), b"hey");
        assert_eq!(base64_decode("").unwrap(), b"");
        assert!(base64_decode("a$==").is_err());
    }
}
