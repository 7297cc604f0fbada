//! A request body of unknown length (HTTP/1.1 chunked) is read ahead before any instance is
//! chosen, as far as it has arrived: hyper finds a malformed chunk (a size that is not hex,
//! overflows or is signed, a bad extension, a bare LF, data longer than its size) only as the body
//! is read, and a body streamed to an instance as it comes would have taken the request there
//! before the error: the instance would see a truncated request. Read ahead, such a body gets a
//! 400 and no instance sees anything.
//!
//! The read waits for the first frame only (bounded by the response timeout: 408 after it), then
//! takes what has already arrived without waiting for more ([`ready_soon`]: an upload that
//! streams slowly is not held back), up to `--max-replay-body` bytes. A body read to its end this way is then sent as bytes
//! (and can be sent again after a failed connect, as a body with a length can); a longer one is
//! streamed from where the read stopped, and an error past that point reaches the instance as a
//! truncated request (its connection is closed), which nothing can prevent without buffering
//! whole uploads.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::StatusCode;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame};
use std::future::Future;

use super::error::GatewayError;
use super::guard::refused;
use super::upstream::BoxError;

/// A body read ahead.
pub enum Ahead<B> {
    /// It ended: all of it (data only, no trailers).
    Whole(Bytes),
    /// It goes on, or carries trailers: what was read, then the rest.
    Started(Prefixed<B>),
}

/// Reads `body` ahead as the module docs say: the first frame within `within`, then whatever is
/// ready, up to `max` bytes.
///
/// # Errors
/// [`GatewayError::Refused`]: 400 for a malformed body, 408 when no frame came in time.
pub async fn read<B>(mut body: B, within: Duration, max: u64) -> Result<Ahead<B>, GatewayError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let first = match tokio::time::timeout(within, body.frame()).await {
        Err(_) => return Err(refused(StatusCode::REQUEST_TIMEOUT, "no request body in time")),
        Ok(polled) => polled,
    };
    let mut frames = VecDeque::new();
    let mut bytes = 0u64;
    let mut next = Some(first);
    let ended = loop {
        match next.take() {
            // Not ready yet: the rest streams.
            None => break false,
            Some(None) => break true,
            Some(Some(Err(e))) => {
                let e: BoxError = e.into();
                tracing::debug!(error = %e, "malformed request body");
                return Err(refused(StatusCode::BAD_REQUEST, "malformed chunked body"));
            }
            Some(Some(Ok(frame))) => {
                bytes += frame.data_ref().map_or(0, |d| d.len() as u64);
                frames.push_back(frame);
                if bytes > max {
                    break false;
                }
                next = ready_soon(&mut body).await;
            }
        }
    };
    if ended && frames.iter().all(Frame::is_data) {
        let mut whole = BytesMut::with_capacity(usize::try_from(bytes).unwrap_or(0));
        for f in frames {
            if let Ok(d) = f.into_data() {
                whole.extend_from_slice(&d);
            }
        }
        return Ok(Ahead::Whole(whole.freeze()));
    }
    Ok(Ahead::Started(Prefixed { read: frames, rest: (!ended).then_some(body) }))
}

/// The next frame of `body` if it comes without waiting for the client: hyper's HTTP/1 server
/// decodes the next chunk only once the body asks for it, in the connection's own task, so the
/// task yields once to let it; a frame that is still not there has not arrived yet. `None` then.
async fn ready_soon<B: Body + Unpin>(body: &mut B) -> Option<Option<Result<Frame<B::Data>, B::Error>>> {
    let mut frame = body.frame();
    let mut yielded = false;
    std::future::poll_fn(|cx| match Pin::new(&mut frame).poll(cx) {
        Poll::Ready(f) => Poll::Ready(Some(f)),
        Poll::Pending if !yielded => {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
        Poll::Pending => Poll::Ready(None),
    })
    .await
}

/// A body partly read ahead: the frames read, then the rest (`None`: it had ended).
pub struct Prefixed<B> {
    read: VecDeque<Frame<Bytes>>,
    rest: Option<B>,
}

impl<B: Body<Data = Bytes> + Unpin> Body for Prefixed<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        if let Some(f) = self.read.pop_front() {
            return Poll::Ready(Some(Ok(f)));
        }
        match self.rest.as_mut() {
            Some(rest) => Pin::new(rest).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.read.is_empty() && self.rest.as_ref().is_none_or(Body::is_end_stream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::StreamBody;

    type Item = Result<Frame<Bytes>, std::io::Error>;

    fn body(items: Vec<Item>) -> StreamBody<futures_util::stream::Iter<std::vec::IntoIter<Item>>> {
        StreamBody::new(futures_util::stream::iter(items))
    }

    fn data(s: &'static str) -> Item {
        Ok(Frame::data(Bytes::from_static(s.as_bytes())))
    }

    #[tokio::test]
    async fn a_body_that_is_all_there_is_read_whole_and_an_error_in_it_refused() {
        let whole = read(body(vec![data("he"), data("llo")]), Duration::from_secs(1), 100).await;
        assert!(matches!(whole, Ok(Ahead::Whole(b)) if b == "hello"));
        let bad = vec![data("he"), Err(std::io::Error::other("Invalid chunk body CR"))];
        let e = read(body(bad), Duration::from_secs(1), 100).await.err().unwrap();
        assert_eq!(e.status(), 400);
    }

    #[tokio::test]
    async fn past_the_limit_the_rest_streams_in_order() {
        let items = vec![data("aaaa"), data("bbbb"), data("cc")];
        let Ok(Ahead::Started(rest)) = read(body(items), Duration::from_secs(1), 5).await else {
            panic!("not streamed")
        };
        let all = rest.collect().await.unwrap().to_bytes();
        assert_eq!(all, "aaaabbbbcc");
    }

    #[tokio::test]
    async fn a_client_that_sends_no_body_in_time_gets_408() {
        let pending = StreamBody::new(futures_util::stream::pending::<Item>());
        let e = read(pending, Duration::from_millis(50), 100).await.err().unwrap();
        assert_eq!(e.status(), 408);
    }
}
