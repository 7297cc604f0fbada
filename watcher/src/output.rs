//! Where the watcher's messages go: stdout (a standalone debugging tool, like `consul watch`) or
//! the gateway's Unix socket.
//!
//! Both write the same NDJSON. On the socket, every (re)connect starts with the full current state
//! (the followed list, then every followed service's set and status); the watcher reconnects with
//! backoff for as long as it runs. What goes out and in which order is [`State::since`]'s.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;
use tracing::{info, warn};

use crate::protocol::encode;
use crate::state::State;
use common::backoff::Backoff;

/// Writes every change in `state` to `out`, starting with everything known, until writing fails
/// or `peer` (the other direction of the connection, if any) reaches end of file.
pub async fn pump<W, R>(state: &State, mut out: W, mut peer: Option<R>) -> io::Result<()>
where
    W: AsyncWrite + Unpin,
    R: AsyncRead + Unpin,
{
    let mut changes = state.subscribe();
    let mut cursor = 0;
    let mut scratch = vec![0u8; 4096];
    loop {
        changes.borrow_and_update();
        let (msgs, next) = state.since(cursor);
        cursor = next;
        if !msgs.is_empty() {
            let batch: String = msgs.iter().map(encode).collect();
            out.write_all(batch.as_bytes()).await?;
            out.flush().await?;
        }
        tokio::select! {
            r = changes.changed() => {
                if r.is_err() {
                    return Ok(());
                }
            }
            // Nothing the gateway sends is needed yet ("watch" requests are optional in the
            // protocol); reading tells us when it closed the connection.
            n = read_or_pending(&mut peer, &mut scratch) => {
                if n? == 0 {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the gateway closed the connection"));
                }
            }
        }
    }
}

async fn read_or_pending<R: AsyncRead + Unpin>(peer: &mut Option<R>, buf: &mut [u8]) -> io::Result<usize> {
    match peer {
        Some(r) => r.read(buf).await,
        None => std::future::pending().await,
    }
}

/// Writes to stdout until it is closed.
pub async fn to_stdout(state: State) -> io::Result<()> {
    pump(&state, tokio::io::stdout(), None::<tokio::io::Empty>).await
}

/// Keeps a connection to the gateway's socket, reconnecting with backoff, forever.
pub async fn to_socket(path: PathBuf, state: State) {
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
    loop {
        match UnixStream::connect(&path).await {
            Ok(stream) => {
                info!(socket = %path.display(), "connected to the gateway");
                backoff.reset();
                let (rd, wr) = stream.into_split();
                if let Err(e) = pump(&state, wr, Some(rd)).await {
                    warn!(socket = %path.display(), error = %e, "lost the gateway connection; reconnecting");
                }
            }
            Err(e) => {
                let delay = backoff.next_delay();
                warn!(socket = %path.display(), error = %e, retry_in_ms = delay.as_millis() as u64, "cannot connect to the gateway");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{decode, Message};
    use tokio::io::{AsyncBufReadExt, BufReader};

    #[tokio::test]
    async fn a_connection_gets_everything_then_changes() {
        let state = State::new();
        state.set_snapshot("a", 1, vec![]);
        state.set_status("a", true, None);
        let (ours, theirs) = tokio::io::duplex(4096);
        let (rd, wr) = tokio::io::split(ours);
        let pumping = tokio::spawn({
            let state = state.clone();
            async move { pump(&state, wr, Some(rd)).await }
        });
        let mut lines = BufReader::new(theirs).lines();
        let first = decode(&lines.next_line().await.unwrap().unwrap()).unwrap();
        assert!(matches!(first, Some(Message::Snapshot(_))));
        let second = decode(&lines.next_line().await.unwrap().unwrap()).unwrap();
        assert!(matches!(second, Some(Message::Status(_))));
        state.set_snapshot("a", 2, vec![]);
        let third = decode(&lines.next_line().await.unwrap().unwrap()).unwrap();
        assert!(matches!(third, Some(Message::Snapshot(s)) if s.index == 2));
        drop(lines);
        // The peer hung up: the pump ends with an error instead of writing into the void.
        assert!(pumping.await.unwrap().is_err());
    }
}
