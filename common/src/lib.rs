//! # common
//!
//! Plumbing every binary in the workspace shares, so each `main.rs` stays a list of wiring steps:
//! - [`LogFormat`] and [`init_logging`]: tracing-subscriber on stderr, filtered by `RUST_LOG`.
//! - [`shutdown_signal`]: resolves on SIGTERM or SIGINT.
//! - [`backoff`]: jittered exponential backoff and a token bucket for retry loops.
//! - [`untrusted`]: text from outside (a Consul tag, a service name) made safe to log.
//!
//! It owns no business logic.

pub mod backoff;

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// How log lines are written to stderr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Installs the global subscriber: `RUST_LOG` if set, else `info`, written to stderr.
pub fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only on a terminal: redirected logs (files, `docker logs`) stay plain text.
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    // A second init (tests calling main twice) is harmless: keep the first subscriber.
    let _ = match format {
        LogFormat::Text => builder.with_target(false).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Resolves when the process receives SIGTERM or SIGINT. Returns the signal's name.
pub async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        // Without signal handlers we can still be stopped with SIGKILL; never return spuriously.
        tracing::error!("cannot install signal handlers; SIGTERM will not shut down gracefully");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

/// Text from outside the process (a Consul tag, a service name: anyone who can register in
/// Consul writes them), made safe to put in a log line: control characters and quotes escaped
/// (Rust's `escape_debug`, so a newline cannot forge a line of its own), and cut to
/// [`UNTRUSTED_MAX`] characters with `…` after.
pub fn untrusted(text: &str) -> String {
    let mut out: String = text.chars().take(UNTRUSTED_MAX).flat_map(char::escape_debug).collect();
    if text.chars().nth(UNTRUSTED_MAX).is_some() {
        out.push('…');
    }
    out
}

/// How many characters of outside text [`untrusted`] keeps.
pub const UNTRUSTED_MAX: usize = 200;

#[cfg(test)]
mod untrusted_tests {
    use super::*;

    #[test]
    fn outside_text_cannot_forge_log_lines() {
        assert_eq!(untrusted("urlprefix-/x\n2026 INFO forged"), "urlprefix-/x\\n2026 INFO forged");
        assert_eq!(untrusted("a\nb\u{1b}[31m"), "a\\nb\\u{1b}[31m");
        let long = "x".repeat(5000);
        assert_eq!(untrusted(&long).chars().count(), UNTRUSTED_MAX + 1);
        assert_eq!(untrusted("plain"), "plain");
    }
}
