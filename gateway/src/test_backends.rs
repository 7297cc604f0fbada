//! Backends on loopback for the tests of the pool and the request path: misbehaving HTTP/1.1
//! ones, written byte by byte (no HTTP library would send what they send), and HTTP/2 cleartext
//! ones as gRPC servers speak (hyper's server, and the `h2` crate's for a refused stream).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use std::future::Future;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Binds a free loopback port and runs `serve` on each connection accepted there, in a task of
/// its own. Returns the address and the number of connections accepted so far.
pub async fn listen<F, Fut>(serve: F) -> (String, Arc<AtomicUsize>)
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve(conn));
        }
    });
    (addr, accepted)
}

/// When a misbehaving backend sends the bytes past the end of its response.
#[derive(Clone, Copy, Debug)]
pub enum Stray {
    /// In the same write as the response.
    WithResponse,
    /// In a write of its own, a moment later (before the next request comes).
    Soon,
    /// Only when the next request arrives, before its answer: what Nagle's algorithm does to a
    /// small second write when the response is not acknowledged before the next request.
    WithNextAnswer,
    /// In a write of its own right after the response, with Nagle's algorithm on (as most
    /// servers have it): the kernel sends it once the response is acknowledged.
    Separately,
}

/// A raw HTTP/1.1 backend. `/odd/<status>` is answered with `<status>` and `content-length: 5`
/// (and, for a `200`, those 5 bytes: `12345`), then `extra` sent as `when` says; any other path
/// is answered `200` with the path as the body.
pub async fn stray_backend(extra: &'static [u8], when: Stray) -> (String, Arc<AtomicUsize>) {
    listen(move |mut conn| async move {
        // No Nagle but for `Separately`: `Soon` really is soon (with Nagle, the kernel holds the
        // stray bytes back until the response is acknowledged).
        conn.set_nodelay(!matches!(when, Stray::Separately)).unwrap();
        let (mut buf, mut chunk, mut pending) = (Vec::new(), [0u8; 4096], None);
        loop {
            let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                match conn.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
                continue;
            };
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            buf.drain(..end + 4);
            let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
            if let Some(bytes) = pending.take() {
                let _ = conn.write_all(bytes).await;
            }
            let mut answer = match path.strip_prefix("/odd/") {
                Some(status) => {
                    let body = if status == "200" { "12345" } else { "" };
                    format!("HTTP/1.1 {status} X\r\ncontent-length: 5\r\n\r\n{body}").into_bytes()
                }
                None => format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{path}", path.len()).into_bytes(),
            };
            if path.starts_with("/odd/") {
                match when {
                    Stray::WithResponse => answer.extend_from_slice(extra),
                    Stray::Soon => {
                        let _ = conn.write_all(&answer).await;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        answer = extra.to_vec();
                    }
                    Stray::WithNextAnswer => pending = Some(extra),
                    Stray::Separately => {
                        let _ = conn.write_all(&answer).await;
                        answer = extra.to_vec();
                    }
                }
            }
            if conn.write_all(&answer).await.is_err() {
                return;
            }
        }
    })
    .await
}

/// A backend that answers the first request on each connection (`<method> <path>` as the body),
/// then reads the second and hangs up without answering: an instance that closed an idle
/// connection just as a request came. Returns its address and how many requests reached it.
pub async fn second_request_hangs_up() -> (String, Arc<AtomicUsize>) {
    let seen = Arc::new(AtomicUsize::new(0));
    let count = seen.clone();
    let (addr, _) = listen(move |mut conn| {
        let count = count.clone();
        async move {
            let mut buf = [0u8; 4096];
            let n = conn.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                return;
            }
            count.fetch_add(1, Ordering::SeqCst);
            let head = String::from_utf8_lossy(&buf[..n]).to_string();
            let line: Vec<&str> = head.split_whitespace().take(2).collect();
            let body = line.join(" ");
            let answer = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len());
            let _ = conn.write_all(answer.as_bytes()).await;
            if conn.read(&mut buf).await.is_ok_and(|n| n > 0) {
                count.fetch_add(1, Ordering::SeqCst);
            }
        }
    })
    .await;
    (addr, seen)
}

/// An HTTP/2 cleartext (prior knowledge) backend, as a gRPC server speaks, made with hyper's
/// server. Paths:
/// - `/stream/<n>`: `n` chunks `chunk <i>\n` 100 ms apart, then trailers `grpc-status: 7`,
///   `grpc-message: denied`;
/// - `/bye`: answers, then shuts the connection with `GOAWAY` (graceful);
/// - anything else: one line `<method> <uri> te=<te> host=<host>` (the URI as received, so its
///   `:scheme` and `:authority` show), then trailers `grpc-status: 0`.
///
/// Returns its address and the number of connections accepted so far.
pub async fn h2_backend() -> (String, Arc<AtomicUsize>) {
    use bytes::Bytes;
    use http_body_util::{BodyExt, StreamBody};
    use hyper::body::Frame;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    type Frames = std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<Frame<Bytes>, std::io::Error>> + Send>>;
    listen(|stream: TcpStream| async move {
        let bye = Arc::new(tokio::sync::Notify::new());
        let said_bye = bye.clone();
        let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
            let bye = said_bye.clone();
            async move {
                let trailers = |status: &'static str, message: Option<&'static str>| {
                    let mut t = http::HeaderMap::new();
                    t.insert("grpc-status", http::HeaderValue::from_static(status));
                    if let Some(m) = message {
                        t.insert("grpc-message", http::HeaderValue::from_static(m));
                    }
                    Frame::trailers(t)
                };
                let path = req.uri().path().to_string();
                let frames: Frames = if path.ends_with("/dies") {
                    // One message, then (once the client has it) the stream fails: hyper's
                    // server resets it.
                    use futures_util::StreamExt;
                    let first = futures_util::stream::iter([Ok(Frame::data(Bytes::from("partial")))]);
                    Box::pin(first.chain(futures_util::stream::once(async {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        Err(std::io::Error::other("instance died"))
                    })))
                } else if let Some(n) = path.strip_prefix("/stream/") {
                    let n: usize = n.parse().unwrap_or(1);
                    Box::pin(futures_util::stream::unfold(0usize, move |i| async move {
                        match i {
                            i if i < n => {
                                tokio::time::sleep(Duration::from_millis(100)).await;
                                Some((Ok(Frame::data(Bytes::from(format!("chunk {i}\n")))), i + 1))
                            }
                            i if i == n => Some((Ok(trailers("7", Some("denied"))), i + 1)),
                            _ => None,
                        }
                    }))
                } else {
                    // `.../late/<ms>`: the response (its headers) only after that long, as a
                    // gRPC server sends its headers with a late first message.
                    if let Some(ms) = path.rsplit_once("/late/").and_then(|(_, ms)| ms.parse().ok()) {
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                    }
                    if path == "/bye" {
                        bye.notify_one();
                    }
                    let header =
                        |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok()).unwrap_or("-").to_string();
                    let line = format!("{} {} te={} host={}\n", req.method(), req.uri(), header("te"), header("host"));
                    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                    let line = Bytes::from(format!("{line}{}", String::from_utf8_lossy(&body)));
                    Box::pin(futures_util::stream::iter([Ok(Frame::data(line)), Ok(trailers("0", None))]))
                };
                Ok::<_, std::convert::Infallible>(http::Response::new(StreamBody::new(frames)))
            }
        });
        let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(stream), service);
        tokio::pin!(conn);
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = bye.notified() => conn.as_mut().graceful_shutdown(),
        }
        let _ = conn.await;
    })
    .await
}

/// An HTTP/2 cleartext backend made with the `h2` crate that refuses the second stream it is
/// sent (`RST_STREAM REFUSED_STREAM`: not processed, RFC 9113 §8.7) and answers `ok` to the
/// others. Returns its address and the number of streams it was sent.
pub async fn h2_refuses_second_stream() -> (String, Arc<AtomicUsize>) {
    let streams = Arc::new(AtomicUsize::new(0));
    let count = streams.clone();
    let (addr, _) = listen(move |stream: TcpStream| {
        let streams = count.clone();
        async move {
            let Ok(mut conn) = h2::server::handshake(stream).await else { return };
            while let Some(Ok((_req, mut respond))) = conn.accept().await {
                if streams.fetch_add(1, Ordering::SeqCst) == 1 {
                    respond.send_reset(h2::Reason::REFUSED_STREAM);
                    continue;
                }
                if let Ok(mut body) = respond.send_response(http::Response::new(()), false) {
                    let _ = body.send_data(bytes::Bytes::from_static(b"ok"), true);
                }
            }
        }
    })
    .await;
    (addr, streams)
}
