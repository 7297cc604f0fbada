//! Reloading certificates when their files change, without dropping a connection: the files'
//! metadata (modification and status-change times, size, inode) is read about every second, and when it changed
//! the whole source is loaded again and swapped in ([`Certificates::replace`]). Open connections
//! keep the certificate they were opened with; new ones get the new set.
//!
//! Polling rather than inotify: it also sees files replaced through symlinks (a Kubernetes
//! secret volume swaps a `..data` link) and on filesystems without notifications, and a `stat`
//! per file per second costs nothing. A load that fails (a half-written file, a key that no
//! longer matches, a file the gateway may not read) is logged as a warning and the previous
//! certificates stay; it is tried again when the files change again, which includes a `chmod` or
//! `chown` that makes them readable (it changes the status-change time, `ctime`).

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use tokio::sync::watch;
use tracing::{info, warn};

use super::certs::{self, Source};
use super::Certificates;

/// How often the files are looked at.
pub const POLL: Duration = Duration::from_secs(1);

/// What is compared between polls: per file, its path, modification time, status-change time
/// (both in seconds and nanoseconds), size and inode.
pub type Fingerprint = Vec<(std::path::PathBuf, [i64; 4], u64, u64)>;

/// The fingerprint of `source`'s files now (a file that cannot be read is left out, so that its
/// coming back counts as a change).
pub fn fingerprint(source: &Source) -> Fingerprint {
    let files = match source {
        Source::Pair { cert, key } => vec![cert.clone(), key.clone()],
        Source::Dir(dir) => match certs::pairs(dir) {
            Ok(pairs) => pairs.into_iter().flat_map(|(_, c, k)| [c, k]).collect(),
            // Listed as the directory alone: a change once it is readable again.
            Err(_) => vec![dir.clone()],
        },
    };
    files.into_iter().filter_map(|f| stat(&f).map(|(times, len, ino)| (f, times, len, ino))).collect()
}

/// The times, size and inode of `path`. The status-change time moves with a `chmod` or `chown`,
/// which can make a file that failed to load readable without touching its contents.
fn stat(path: &Path) -> Option<([i64; 4], u64, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some(([m.mtime(), m.mtime_nsec(), m.ctime(), m.ctime_nsec()], m.len(), m.ino()))
}

/// Watches `source` until `stop` turns true, swapping new certificates into `certificates`.
/// `seen` is the fingerprint of what was loaded at start.
pub async fn follow(
    source: Source,
    provider: Arc<CryptoProvider>,
    certificates: Arc<Certificates>,
    mut seen: Fingerprint,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        // A few `stat` calls: cheap enough for this (main) runtime's thread.
        let now = fingerprint(&source);
        if now == seen {
            continue;
        }
        let (src, prov) = (source.clone(), provider.clone());
        let Ok(loaded) = tokio::task::spawn_blocking(move || certs::load(&src, &prov)).await else {
            continue;
        };
        seen = now;
        match loaded {
            Ok(store) => {
                info!(names = store.len(), "TLS certificates reloaded");
                certificates.replace(store);
            }
            Err(e) => warn!(error = %e, "cannot reload the TLS certificates; keeping the previous ones"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_changes_when_a_file_is_replaced_or_added() {
        let dir = tempfile::tempdir().unwrap();
        let source = Source::Dir(dir.path().to_path_buf());
        let empty = fingerprint(&source);
        std::fs::write(dir.path().join("a.crt"), "1").unwrap();
        std::fs::write(dir.path().join("a.key"), "1").unwrap();
        let one = fingerprint(&source);
        assert_ne!(one, empty);
        assert_eq!(fingerprint(&source), one, "stable while nothing changes");
        std::fs::write(dir.path().join("a.tmp"), "22").unwrap();
        std::fs::rename(dir.path().join("a.tmp"), dir.path().join("a.crt")).unwrap();
        assert_ne!(fingerprint(&source), one, "replaced by a rename");
        let pair = Source::Pair { cert: dir.path().join("a.crt"), key: dir.path().join("missing.key") };
        assert_eq!(fingerprint(&pair).len(), 1, "a missing file is left out");
    }

    #[test]
    fn the_fingerprint_changes_when_a_files_permissions_change() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.crt"), "1").unwrap();
        std::fs::write(dir.path().join("a.key"), "1").unwrap();
        let key = dir.path().join("a.key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o000)).unwrap();
        let source = Source::Dir(dir.path().to_path_buf());
        let unreadable = fingerprint(&source);
        // File times move in clock ticks (a few ms): let one pass.
        std::thread::sleep(std::time::Duration::from_millis(20));
        // A key the gateway could not read, made readable in place: contents and mtime unchanged.
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_ne!(fingerprint(&source), unreadable, "a chmod counts as a change");
    }
}
