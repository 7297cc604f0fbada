//! The state file (`--state-file`): the last good state, so that a gateway that starts while the
//! registry is unreachable serves at once instead of routing nothing. It owns the file's format,
//! reading it at start ([`load`], [`restore`]) and writing it after changes ([`keep_written`]);
//! not what is followed or how (that is [`Services`]'s).
//!
//! **Format** (version 1): one header line, then the payload, a JSON [`State`]:
//!
//! ```text
//! gateway-state-file 1 sha256:<64 hex digits of the payload> <payload length in bytes>\n
//! {"written_at":"2026-12-01T08:40:00.123Z","source":"consul","services":[...]}
//! ```
//!
//! A file whose header is not this is foreign; another version, a wrong length (a truncated
//! file), a wrong checksum or a payload that is not the JSON of a [`State`] is refused with a
//! [`StateFileError`] naming why.
//!
//! **Writing** is atomic: the bytes go to a temporary file in the same directory, are synced,
//! renamed over the file, and the directory is synced ([`write_atomic`]); a crash at any point
//! leaves the old file or the new one, never a mix. A temporary file a killed writer left
//! (`.<name>.*.tmp` beside the file) is removed at the next start.
//!
//! **What is written, and when** (the rule): only state the registry confirmed, that is what the
//! gateway holds while it would answer `/readyz` with 200 as far as discovery goes — the watcher
//! connected, the registry and every followed service readable, the watcher's list of tagged
//! services received and each of them loaded, and every service's set from a watcher snapshot
//! (none still from the state file, none from a direct read). So a gateway that starts with
//! nothing, or from the file, never writes until the registry answered, and an empty state is
//! written only when the registry says nothing is followed. Checked once a second and at
//! shutdown; written only when a service's set changed since the last write; encoded and written
//! on a blocking thread, never on the request path.
//!
//! **Reading** happens once, at start, before the listeners serve: each stored service's set is
//! installed with origin [`Origin::StateFile`] (so `/services` shows `"source": "state_file"`) and
//! `/readyz` answers 503 with [`ready_reason`] until the watcher's snapshots replaced every one of
//! them. The watcher's full state on connect then replaces the file's entirely: a stored service
//! it does not list is dropped ([`Services::apply_list`]). A missing file is normal (logged at
//! info); a file that cannot be used is ignored with one warning naming the path and why, and the
//! gateway starts empty as without the flag; the file is left as it is until confirmed state
//! replaces it.
//!
//! Peers: Fabio exits when its registry is not there within 10 s of start; Traefik starts but
//! routes nothing until its provider answers.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use consul::Instance;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::services::Services;
use super::set::{Origin, ServiceSet};

/// The first word of the header: what kind of file this is.
pub const MAGIC: &str = "gateway-state-file";
/// The format version this gateway writes and reads.
pub const VERSION: u32 = 1;
/// Longest header line accepted.
const MAX_HEADER: usize = 256;
/// Largest file accepted (1 GiB): a bigger one is not ours.
const MAX_FILE: u64 = 1 << 30;
/// How often the writer checks for changes: at most one write per period.
pub const WRITE_PERIOD: Duration = Duration::from_secs(1);

/// What the file holds: the followed services and what the gateway knew of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// When it was written, RFC 3339 (UTC, milliseconds).
    pub written_at: String,
    /// The registry it came from (`--source`: `consul`, `etcd`, `dns`).
    pub source: String,
    /// Every followed service (the watcher's view: the static services and those opted in by
    /// tag), sorted by name.
    pub services: Vec<StoredService>,
}

/// One followed service as the gateway kept it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredService {
    /// The service name.
    pub service: String,
    /// The registry's index it was read at.
    pub index: u64,
    /// The service's catalog tags, from which its routes are built.
    pub tags: Vec<String>,
    /// Its routable instances (address, port, effective weight, tags, metadata), in canonical
    /// order: those the health view (or the catalog, with `--catalog`) gave.
    pub instances: Vec<Instance>,
}

/// Why the state file cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    /// The file cannot be read (permissions, a directory...).
    #[error("cannot read it: {0}")]
    Read(#[source] std::io::Error),
    /// The file is larger than any state file.
    #[error("{0} bytes, more than a state file holds")]
    TooLarge(u64),
    /// The header is not a state file's.
    #[error("not a gateway state file ({0})")]
    Foreign(&'static str),
    /// Another version of the format.
    #[error("format version {0}, this gateway reads version {VERSION}")]
    Version(String),
    /// The payload is shorter or longer than the header says.
    #[error("truncated or padded: the header says {expected} bytes of payload, the file holds {got}")]
    Length {
        /// What the header says.
        expected: usize,
        /// What follows the header.
        got: usize,
    },
    /// The payload's SHA-256 is not the header's.
    #[error("checksum mismatch (the file is corrupt)")]
    Checksum,
    /// The payload is not a state.
    #[error("bad payload: {0}")]
    Json(#[source] serde_json::Error),
    /// It was written for another registry.
    #[error("written for --source {found}, this gateway follows {expected}")]
    Source {
        /// The file's.
        found: String,
        /// This gateway's.
        expected: String,
    },
    /// The file cannot be written.
    #[error("cannot write it: {0}")]
    Write(#[source] std::io::Error),
}

fn sha256_hex(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The file's bytes for `state`: header line, then the JSON payload.
///
/// # Errors
/// [`StateFileError::Json`] if the state cannot be encoded (it always can).
pub fn encode(state: &State) -> Result<Vec<u8>, StateFileError> {
    let payload = serde_json::to_vec(state).map_err(StateFileError::Json)?;
    let mut out = format!("{MAGIC} {VERSION} sha256:{} {}\n", sha256_hex(&payload), payload.len()).into_bytes();
    out.extend_from_slice(&payload);
    Ok(out)
}

/// The state in `bytes`, checked: header, version, length, checksum, JSON.
///
/// # Errors
/// Why the bytes are not a state file of this version ([`StateFileError`]).
pub fn decode(bytes: &[u8]) -> Result<State, StateFileError> {
    let nl =
        bytes.iter().take(MAX_HEADER).position(|b| *b == b'\n').ok_or(StateFileError::Foreign("no header line"))?;
    let header = std::str::from_utf8(&bytes[..nl]).map_err(|_| StateFileError::Foreign("header not text"))?;
    let payload = &bytes[nl + 1..];
    let mut words = header.split(' ');
    if words.next() != Some(MAGIC) {
        return Err(StateFileError::Foreign("no gateway-state-file header"));
    }
    let version = words.next().ok_or(StateFileError::Foreign("malformed header"))?;
    if version != VERSION.to_string() {
        return Err(StateFileError::Version(version.chars().take(20).collect()));
    }
    let (Some(sum), Some(len), None) =
        (words.next().and_then(|s| s.strip_prefix("sha256:")), words.next(), words.next())
    else {
        return Err(StateFileError::Foreign("malformed header"));
    };
    let expected: usize = len.parse().map_err(|_| StateFileError::Foreign("malformed header"))?;
    if payload.len() != expected {
        return Err(StateFileError::Length { expected, got: payload.len() });
    }
    if sha256_hex(payload) != sum {
        return Err(StateFileError::Checksum);
    }
    serde_json::from_slice(payload).map_err(StateFileError::Json)
}

/// Reads the state file at `path`: `Ok(None)` if there is none.
///
/// # Errors
/// Why the file cannot be used: unreadable, too large, or not a valid state (see [`decode`]).
pub fn load(path: &Path) -> Result<Option<State>, StateFileError> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StateFileError::Read(e)),
    };
    if meta.len() > MAX_FILE {
        return Err(StateFileError::TooLarge(meta.len()));
    }
    let bytes = std::fs::read(path).map_err(StateFileError::Read)?;
    decode(&bytes).map(Some)
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, synced, renamed
/// over `path`, then the directory synced. `before_rename` runs on the synced temporary file's
/// path just before the rename (tests use it to fail there, as a crash would).
///
/// # Errors
/// [`StateFileError::Write`]: the directory is not writable, the disk is full... `path` is then
/// as it was, and the temporary file removed.
pub fn write_atomic(
    path: &Path,
    bytes: &[u8],
    before_rename: impl FnOnce(&Path) -> std::io::Result<()>,
) -> Result<(), StateFileError> {
    let dir = dir_of(path);
    let (prefix, suffix) = temp_affixes(path);
    let mut tmp =
        tempfile::Builder::new().prefix(&prefix).suffix(suffix).tempfile_in(dir).map_err(StateFileError::Write)?;
    tmp.write_all(bytes).map_err(StateFileError::Write)?;
    tmp.as_file().sync_all().map_err(StateFileError::Write)?;
    before_rename(tmp.path()).map_err(StateFileError::Write)?;
    tmp.persist(path).map_err(|e| StateFileError::Write(e.error))?;
    // The rename itself is durable once the directory is synced.
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(StateFileError::Write)
}

/// The directory holding `path` (`.` for a bare name).
fn dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// The name prefix and suffix of [`write_atomic`]'s temporary files for `path`.
fn temp_affixes(path: &Path) -> (String, &'static str) {
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    (format!(".{name}."), ".tmp")
}

/// Removes the temporary files a writer killed mid-write left beside `path`; returns how many.
/// Best effort: what cannot be listed or removed is left.
pub fn remove_leftovers(path: &Path) -> usize {
    let (prefix, suffix) = temp_affixes(path);
    let Ok(entries) = std::fs::read_dir(dir_of(path)) else { return 0 };
    entries
        .flatten()
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.starts_with(&prefix) && n.ends_with(suffix) && n.len() > prefix.len() + suffix.len()
        })
        .filter(|e| std::fs::remove_file(e.path()).is_ok())
        .count()
}

/// Stores `state` at `path` atomically ([`write_atomic`]).
///
/// # Errors
/// [`StateFileError::Write`], with `path` left as it was.
pub fn store(path: &Path, state: &State) -> Result<(), StateFileError> {
    write_atomic(path, &encode(state)?, |_| Ok(()))
}

/// Reads the state file at start and, if it holds a usable state for `services`' registry,
/// installs it (origin [`Origin::StateFile`]). Logs what it did: info for a missing file or the
/// services loaded, one warning naming the path and the reason for a file it ignores.
pub async fn restore(path: &Path, services: &Services) {
    let p = path.to_path_buf();
    let loaded = tokio::task::spawn_blocking(move || (remove_leftovers(&p), load(&p)))
        .await
        .map(|(left, loaded)| {
            if left > 0 {
                info!(path = %path.display(), files = left, "removed temporary files a stopped write left");
            }
            loaded
        })
        .unwrap_or_else(|e| Err(StateFileError::Read(std::io::Error::other(format!("reading thread failed: {e}")))));
    let expected = services.freshness().source().to_string();
    let state = match loaded {
        Ok(None) => {
            return info!(path = %path.display(), "no state file yet; starting empty (it is written once the registry answers)")
        }
        Ok(Some(s)) if s.source != expected => Err(StateFileError::Source { found: s.source, expected }),
        other => other.map(|s| s.expect("Some: None returned above")),
    };
    match state {
        Ok(state) => {
            let n = state.services.len();
            info!(path = %path.display(), services = n, written_at = %state.written_at, "serving the state file's services, marked stale, until the registry answers");
            services.freshness().set_state_file(format!("{} written at {}", path.display(), state.written_at));
            services.apply_stored(state.services);
        }
        Err(e) => {
            warn!(path = %path.display(), "ignoring the state file: {e}; starting empty");
        }
    }
}

/// Why `/readyz` must say 503 for the state file: some services are still served from it.
pub fn ready_reason(services: &Services) -> Option<String> {
    let n = services.slots().iter().filter(|s| s.set().is_some_and(|set| set.origin == Origin::StateFile)).count();
    if n == 0 {
        return None;
    }
    let noun = if n == 1 { "service" } else { "services" };
    let from = services.freshness().state_file().unwrap_or_default();
    let source = services.freshness().source();
    Some(format!("serving {n} {noun} from the state file {from}; the registry ({source}) has not confirmed them yet"))
}

/// Whether what `services` holds may be written: see the rule in the module docs.
pub fn is_confirmed(services: &Services) -> bool {
    let f = services.freshness();
    !f.is_stale()
        && (!services.follows_tags() || f.is_listed())
        && services.unlisted_reasons().is_empty()
        && services.slots().iter().all(|s| match s.set() {
            Some(set) => set.origin == Origin::Watcher,
            None => !s.is_static,
        })
}

/// Which sets were last written: each service's name and set (weak: no old set is kept alive,
/// and its address cannot be reused while this holds it).
type Written = Vec<(String, Weak<ServiceSet>)>;

fn same(written: &Written, now: &[(String, Arc<ServiceSet>)]) -> bool {
    written.len() == now.len()
        && written.iter().zip(now).all(|((a, w), (b, s))| a == b && std::ptr::eq(w.as_ptr(), Arc::as_ptr(s)))
}

/// Keeps the state file at `path` up to date with `services`: checks every [`WRITE_PERIOD`] and
/// once more when `stop` turns true, then returns. Write failures are logged once per distinct
/// error (and the recovery once).
pub async fn keep_written(path: PathBuf, services: Arc<Services>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(WRITE_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut written: Option<Written> = None;
    let mut failing: Option<String> = None;
    loop {
        let last = tokio::select! {
            _ = tick.tick() => false,
            _ = stop.wait_for(|s| *s) => true,
        };
        write_if_changed(&path, &services, &mut written, &mut failing).await;
        if last {
            return;
        }
    }
}

async fn write_if_changed(
    path: &Path,
    services: &Services,
    written: &mut Option<Written>,
    failing: &mut Option<String>,
) {
    if !is_confirmed(services) {
        return;
    }
    let now: Vec<(String, Arc<ServiceSet>)> =
        services.slots().iter().filter_map(|s| Some((s.service.clone(), s.set()?))).collect();
    if written.as_ref().is_some_and(|w| same(w, &now)) {
        return;
    }
    let state = State {
        written_at: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        source: services.freshness().source().to_string(),
        services: now
            .iter()
            .map(|(name, set)| StoredService {
                service: name.clone(),
                index: set.index,
                tags: set.tags.clone(),
                instances: set.endpoints.iter().map(|e| e.instance.clone()).collect(),
            })
            .collect(),
    };
    let p = path.to_path_buf();
    let result = tokio::task::spawn_blocking(move || store(&p, &state))
        .await
        .unwrap_or_else(|e| Err(StateFileError::Write(std::io::Error::other(format!("writing thread failed: {e}")))));
    match result {
        Ok(()) => {
            debug!(path = %path.display(), services = now.len(), "state file written");
            if failing.take().is_some() {
                info!(path = %path.display(), "the state file is written again");
            }
            *written = Some(now.iter().map(|(n, s)| (n.clone(), Arc::downgrade(s))).collect());
        }
        Err(e) => {
            let e = e.to_string();
            if failing.as_ref() != Some(&e) {
                warn!(path = %path.display(), error = %e, "cannot write the state file; keeping the old one");
            }
            *failing = Some(e);
        }
    }
}

#[cfg(test)]
mod tests;
