//! The Unix socket the watcher connects to, and the application of its messages to [`Services`].
//!
//! The socket lives in a private directory (mode 0700, created by `tempfile`) so only this user
//! can connect. One watcher connection is served at a time: a new one (a restarted watcher)
//! replaces the old. A malformed line is logged and skipped; an unknown message type is ignored.
//! The watcher's connection and Consul's readability, as they change, are logged and published on
//! the change feed (`Kind::Source`).

use std::path::PathBuf;
use std::sync::Arc;

use futures_util::{FutureExt, StreamExt};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};
use tracing::{debug, info, warn};
use watcher::protocol::{decode, Message};

use super::services::Services;
use crate::observe::changes::Kind;

/// Longest accepted line: a snapshot of tens of thousands of instances still fits.
const MAX_LINE: usize = 16 * 1024 * 1024;

/// The bound socket and the private directory holding it (removed on drop).
pub struct Socket {
    dir: tempfile::TempDir,
    listener: UnixListener,
}

impl Socket {
    /// Binds `watcher.sock` in a new private directory under the system temp dir.
    pub fn bind() -> std::io::Result<Self> {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::Builder::new()
            .prefix("gateway-")
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir()?;
        let listener = UnixListener::bind(dir.path().join("watcher.sock"))?;
        Ok(Self { dir, listener })
    }

    /// The socket's path, for the watcher's `--socket`.
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("watcher.sock")
    }

    /// Accepts watcher connections forever, applying what they send to `services`.
    pub async fn serve(self, services: Arc<Services>) {
        let mut current: Option<tokio::task::JoinHandle<()>> = None;
        let path = self.path();
        loop {
            match self.listener.accept().await {
                Ok((stream, _)) => {
                    if let Some(old) = current.take() {
                        old.abort();
                    }
                    info!("watcher connected");
                    services.freshness().set_watcher_connected(true);
                    services.feed().publish(Kind::Source, None, None, "watcher connected");
                    let services = services.clone();
                    current = Some(tokio::spawn(async move {
                        read_messages(stream, &services).await;
                        services.freshness().set_watcher_connected(false);
                        services.feed().publish(
                            Kind::Source,
                            None,
                            None,
                            "watcher disconnected; serving from the cache until it is back",
                        );
                    }));
                }
                Err(e) => {
                    warn!(socket = %path.display(), error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// At most this many messages are applied as one batch (one route-table rebuild).
const MAX_BATCH: usize = 4096;

/// Reads one connection's messages until it closes. Messages that arrive together (the full
/// state on connect, a burst of changes) are applied as one batch, so the route table is rebuilt
/// once for them rather than once per message.
async fn read_messages(stream: UnixStream, services: &Services) {
    let mut lines = FramedRead::new(stream, LinesCodec::new_with_max_length(MAX_LINE));
    // Ends the batch when dropped, also when this task is aborted (a new watcher connection).
    let mut batch: Option<Batch<'_>> = None;
    let mut batched = 0usize;
    loop {
        // What is already read is applied without waiting; before waiting, the batch ends.
        let next = match lines.next().now_or_never() {
            Some(next) if batched < MAX_BATCH => next,
            ready => {
                batch = None;
                batched = 0;
                match ready {
                    Some(next) => next,
                    None => lines.next().await,
                }
            }
        };
        let Some(line) = next else { break };
        batch.get_or_insert_with(|| Batch::begin(services));
        batched += 1;
        match line {
            Ok(line) => apply(&line, services),
            Err(LinesCodecError::MaxLineLengthExceeded) => {
                warn!(max = MAX_LINE, "skipping an over-long line from the watcher")
            }
            Err(LinesCodecError::Io(e)) => {
                warn!(error = %e, "watcher connection failed");
                break;
            }
        }
    }
    drop(batch);
    warn!("watcher disconnected; serving from the cache until it is back");
}

/// A batch of messages being applied; the route table is rebuilt when it is dropped.
struct Batch<'a>(&'a Services);

impl<'a> Batch<'a> {
    fn begin(services: &'a Services) -> Self {
        services.begin_batch();
        Self(services)
    }
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        self.0.end_batch();
    }
}

/// Applies one line from the watcher.
pub fn apply(line: &str, services: &Services) {
    match decode(line) {
        Ok(Some(Message::Snapshot(s))) => services.apply_snapshot(&s.service, s.index, s.instances, s.tags),
        Ok(Some(Message::Status(s))) => {
            let error = if s.healthy { None } else { Some(s.error.unwrap_or_else(|| "unknown error".into())) };
            if let Some(line) = services.freshness().set_readable(&s.service, error) {
                services.feed().publish(Kind::Source, Some(&s.service), None, line);
            }
        }
        Ok(Some(Message::Gone(g))) => services.apply_gone(&g.service, g.reason),
        Ok(Some(Message::Consul(c))) => {
            let error = if c.healthy { None } else { Some(c.error.unwrap_or_else(|| "unknown error".into())) };
            if let Some(line) = services.freshness().set_consul(error, c.denied) {
                services.feed().publish(Kind::Source, None, None, line);
            }
        }
        Ok(Some(Message::Services(l))) => services.apply_list(&l.services),
        Ok(Some(Message::Unknown) | None) => {
            debug!("ignoring a message type this version does not know")
        }
        Err(e) => {
            warn!(error = %e, line = %truncate(line), "skipping a malformed line from the watcher")
        }
    }
}

fn truncate(s: &str) -> &str {
    let mut end = s.len().min(200);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::direct::StaticRead;
    use crate::discovery::tag::TagRules;
    use std::path::Path;
    use tokio::io::AsyncWriteExt;

    /// Whether `path` is in a directory only its owner may enter.
    pub fn is_private(path: &Path) -> bool {
        use std::os::unix::fs::PermissionsExt;
        path.parent().and_then(|d| std::fs::metadata(d).ok()).is_some_and(|m| m.permissions().mode() & 0o077 == 0)
    }

    #[tokio::test]
    async fn socket_is_private_and_lines_apply_skipping_garbage() {
        let services = Arc::new(Services::new(
            ["web".to_string()],
            TagRules { route_tag: "gateway".into(), prefix: "urlprefix-".into() },
            Arc::new(StaticRead::default()),
        ));
        let socket = Socket::bind().unwrap();
        let path = socket.path();
        assert!(is_private(&path));
        tokio::spawn(socket.serve(services.clone()));
        let mut conn = UnixStream::connect(&path).await.unwrap();
        conn.write_all(b"not json\n{\"type\":\"watch\",\"service\":\"web\"}\n").await.unwrap();
        conn.write_all(br#"{"type":"snapshot","service":"web","index":7,"instances":[{"id":"a","node":"n","address":"127.0.0.1","port":1}]}"#).await.unwrap();
        conn.write_all(b"\n{\"type\":\"status\",\"service\":\"web\",\"healthy\":false,\"error\":\"down\"}\n")
            .await
            .unwrap();
        conn.write_all(b"{\"type\":\"consul\",\"healthy\":false,\"denied\":true,\"error\":\"Consul answered 403\"}\n")
            .await
            .unwrap();
        for _ in 0..100 {
            if services.freshness().stale_reason("web").is_some_and(|r| r.contains("down")) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let set = services.slots()[0].set().expect("snapshot applied after garbage");
        assert_eq!(set.index, 7);
        assert!(services.freshness().stale_reason("web").unwrap().contains("down"));
        for _ in 0..100 {
            if services.freshness().consul_reason().is_some() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(services.freshness().consul_reason().as_deref(), Some("Consul answered 403"));
        // Each change of state is on the change feed too, for the status page.
        let sources: Vec<String> = services
            .feed()
            .recent()
            .iter()
            .filter(|e| e.kind == crate::observe::changes::Kind::Source)
            .map(|e| e.message.clone())
            .collect();
        assert_eq!(sources[0], "watcher connected", "{sources:?}");
        assert!(sources[1].starts_with("web: the watcher cannot read it from Consul (down)"), "{sources:?}");
        assert!(sources[2].starts_with("Consul refuses the gateway's reads (ACL): Consul answered 403"), "{sources:?}");
        drop(conn);
        for _ in 0..100 {
            if services.freshness().stale_reason("web").is_some_and(|r| r.contains("watcher")) {
                let last = services.feed().recent().last().map(|e| e.message.clone()).unwrap_or_default();
                assert!(last.starts_with("watcher disconnected"), "{last}");
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("a closed connection must mark the data stale");
    }
}
