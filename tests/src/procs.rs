//! Our binaries as child processes: stderr captured line by line (so tests can wait for a log
//! line), killed on drop so nothing outlives a test.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{bin, children, free_port, get_json, http, wait_for, Consul};

/// Every variable Consul's tools (and ours) read.
pub const CONSUL_VARS: [&str; 9] = [
    "CONSUL_HTTP_ADDR",
    "CONSUL_HTTP_TOKEN",
    "CONSUL_HTTP_TOKEN_FILE",
    "CONSUL_CACERT",
    "CONSUL_CAPATH",
    "CONSUL_CLIENT_CERT",
    "CONSUL_CLIENT_KEY",
    "CONSUL_TLS_SERVER_NAME",
    "CONSUL_HTTP_SSL_VERIFY",
];

/// A child process with its stderr lines collected.
pub struct Proc {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    name: String,
}

impl Proc {
    /// Starts `bin(name)` with `args` and extra environment.
    pub fn spawn(name: &str, args: &[String], env: &[(&str, String)]) -> Self {
        Self::spawn_path(&bin(name), args, env)
    }

    /// Starts the executable at `path` (e.g. from `CARGO_BIN_EXE_<name>`).
    pub fn spawn_path(path: &std::path::Path, args: &[String], env: &[(&str, String)]) -> Self {
        let name = path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().to_string());
        let name = name.as_str();
        let mut cmd = Command::new(path);
        cmd.args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        // Only what the test gives: none of the variables Consul's tools read leaks in.
        for var in CONSUL_VARS {
            cmd.env_remove(var);
        }
        cmd.env("NO_COLOR", "1");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("piped stderr");
        let sink = lines.clone();
        let tag = name.to_string();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if std::env::var_os("E2E_ECHO_LOGS").is_some() {
                    eprintln!("[{tag}] {line}");
                }
                sink.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
        Self { child, lines, reader: Some(reader), name: name.to_string() }
    }

    /// The process ID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// All log lines so far.
    pub fn logs(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// All log lines so far, as one text.
    pub fn log_text(&self) -> String {
        self.logs().join("\n")
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for a log line containing `needle` after the first `skip` lines; returns its index.
    pub fn wait_for_log(&self, needle: &str, skip: usize, timeout: Duration) -> usize {
        let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_for(timeout, &format!("{} to log {needle:?}", self.name), || {
                self.logs().iter().enumerate().skip(skip).find(|(_, l)| l.contains(needle)).map(|(i, _)| i)
            })
        }));
        found.unwrap_or_else(|_| panic!("{} never logged {needle:?}; its log:\n{}", self.name, self.logs().join("\n")))
    }

    /// Waits for the process to exit, up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                // Read what it wrote to its last line before anyone looks at the logs. (A child of
                // its own could hold stderr open: then give up waiting after a moment.)
                if let Some(reader) = self.reader.take() {
                    let until = Instant::now() + Duration::from_secs(2);
                    while !reader.is_finished() && Instant::now() < until {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Kills the process (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A running gateway (and its watcher) on free loopback ports.
pub struct Gateway {
    /// The process.
    pub proc: Proc,
    /// Public port.
    pub port: u16,
    /// Admin port.
    pub admin_port: u16,
}

impl Gateway {
    /// Starts a gateway for `services` against `consul` and waits until `/readyz` says ready.
    pub fn start(consul: &Consul, services: &str, extra: &[&str]) -> Self {
        let gw = Self::start_unready(consul, services, extra);
        gw.wait_ready();
        gw
    }

    /// Starts a gateway without waiting for readiness.
    pub fn start_unready(consul: &Consul, services: &str, extra: &[&str]) -> Self {
        let addr = consul.addr();
        let args: Vec<&str> =
            ["--consul", addr.as_str(), "--services", services].into_iter().chain(extra.iter().copied()).collect();
        Self::start_env(&[], &args)
    }

    /// Starts a gateway configured for Consul only through `env` (`CONSUL_HTTP_ADDR` and the
    /// rest of Consul's variables: no `--consul`, no `--services`), without waiting for
    /// readiness. Services opt in by tag.
    pub fn start_env(env: &[(&str, String)], extra: &[&str]) -> Self {
        let (port, admin_port) = (free_port(), free_port());
        let mut args: Vec<String> = vec![
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--admin-listen".into(),
            format!("127.0.0.1:{admin_port}"),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let proc = Proc::spawn("gateway", &args, env);
        Self { proc, port, admin_port }
    }

    /// `/readyz` now: its status and body.
    pub fn readyz(&self) -> (u16, serde_json::Value) {
        get_json(&http(), &self.admin("/readyz")).unwrap_or((0, serde_json::Value::Null))
    }

    /// Waits until `/readyz` answers 200.
    pub fn wait_ready(&self) {
        let client = http();
        let url = self.admin("/readyz");
        wait_for(Duration::from_secs(15), "gateway /readyz to be 200", || {
            matches!(get_json(&client, &url), Ok((200, _))).then_some(())
        });
    }

    /// A URL on the public listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// A URL on the admin listener.
    pub fn admin(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port)
    }

    /// The watcher's PID (the gateway's only child), waiting for one to exist.
    pub fn watcher_pid(&self) -> u32 {
        wait_for(Duration::from_secs(10), "the watcher child process", || self.watcher_pid_if_any())
    }

    /// The watcher's PID, if one is running now.
    pub fn watcher_pid_if_any(&self) -> Option<u32> {
        children(self.proc.pid()).into_iter().find(|p| crate::is_running(*p))
    }
}

/// A serviceweb instance on a free loopback port.
pub struct ServiceWeb {
    /// The process.
    pub proc: Proc,
    /// Its port.
    pub port: u16,
}

impl ServiceWeb {
    /// Starts an instance; with `consul`, it registers itself there.
    pub fn start(consul: Option<&Consul>) -> Self {
        let env = consul.map(|c| vec![("CONSUL_HTTP_ADDR", c.addr())]);
        Self::start_env(env.as_deref())
    }

    /// Starts an instance; with `env` (Consul's variables: address, token...), it registers
    /// itself in that Consul.
    pub fn start_env(env: Option<&[(&str, String)]>) -> Self {
        let port = free_port();
        let mut args = vec!["--listen".to_string(), format!("127.0.0.1:{port}")];
        if env.is_some() {
            args.push("--register".to_string());
        }
        let proc = Proc::spawn("serviceweb", &args, env.unwrap_or_default());
        let consul = env;
        let client = http();
        let url = format!("http://127.0.0.1:{port}/health");
        wait_for(Duration::from_secs(10), "serviceweb /health", || {
            matches!(get_json(&client, &url), Ok((200, _))).then_some(())
        });
        if consul.is_some() {
            proc.wait_for_log("registered in Consul", 0, Duration::from_secs(10));
        }
        Self { proc, port }
    }
}
