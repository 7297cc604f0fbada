//! The pool against real backends on loopback.

use super::*;
use axum::extract::ConnectInfo;
use axum::routing::any;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A backend answering each request with the client's source port, so a test can tell which
/// connection carried it.
async fn port_backend() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .fallback(any(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.port().to_string() }));
    tokio::spawn(async move {
        axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await.unwrap()
    });
    addr.to_string()
}

fn request(method: &str, authority: &str, body: &'static str) -> Request<RequestBody> {
    Request::builder()
        .method(method)
        .uri("/x")
        .header("host", authority)
        .header("content-length", body.len())
        .body(RequestBody::Full(Full::new(Bytes::from_static(body.as_bytes()))))
        .unwrap()
}

async fn text(resp: Response<PooledBody>) -> String {
    String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

#[tokio::test]
async fn a_connection_is_reused_once_its_response_was_read_to_the_end() {
    let authority = port_backend().await;
    let pool = Arc::new(Pool::new(&authority));
    let mut ports = std::collections::HashSet::new();
    for _ in 0..10 {
        let resp = send(&pool, request("GET", &authority, ""), Duration::from_secs(1)).await.unwrap();
        ports.insert(text(resp).await);
        assert_eq!(pool.idle_count(), 1);
    }
    assert_eq!(ports.len(), 1, "one keep-alive connection for sequential requests");

    // A body dropped before its end leaves the rest of the response on the connection: not reused.
    let resp = send(&pool, request("GET", &authority, ""), Duration::from_secs(1)).await.unwrap();
    assert_eq!(pool.idle_count(), 0, "in use");
    drop(resp);
    assert_eq!(pool.idle_count(), 0, "dropped early: closed, not returned");

    // HEAD: no body to read, so the connection is free as soon as the response is dropped.
    let resp = send(&pool, request("HEAD", &authority, ""), Duration::from_secs(1)).await.unwrap();
    assert_eq!(resp.status(), 200);
    drop(resp);
    assert_eq!(pool.idle_count(), 1);
}

#[tokio::test]
async fn concurrent_requests_open_connections_that_all_return() {
    let authority = port_backend().await;
    let pool = Arc::new(Pool::new(&authority));
    let responses: Vec<_> = futures_util::future::join_all(
        (0..4).map(|_| send(&pool, request("GET", &authority, ""), Duration::from_secs(1))),
    )
    .await;
    let mut ports = std::collections::HashSet::new();
    for r in responses {
        ports.insert(text(r.unwrap()).await);
    }
    assert_eq!((ports.len(), pool.idle_count()), (4, 4));
}

/// A backend that answers one request per connection with keep-alive, then closes the
/// connection after `idle`, as a server with a short keep-alive timeout does. Returns its address
/// and a counter of accepted connections.
async fn closing_backend(idle: Duration) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = conn.read(&mut buf).await;
                let _ = conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
                tokio::time::sleep(idle).await;
            });
        }
    });
    (addr, accepted)
}

#[tokio::test]
async fn a_connection_the_instance_closed_while_idle_is_not_used_even_for_a_post() {
    let (authority, accepted) = closing_backend(Duration::from_millis(20)).await;
    let pool = Arc::new(Pool::new(&authority));
    for _ in 0..3 {
        let resp = send(&pool, request("POST", &authority, "hi"), Duration::from_secs(1)).await.unwrap();
        assert_eq!(text(resp).await, "ok");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 3, "a new connection each time");
}

#[tokio::test]
async fn refused_and_unreachable_are_connect_errors() {
    let port = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
    let authority = format!("127.0.0.1:{port}");
    let pool = Arc::new(Pool::new(&authority));
    let failed = send(&pool, request("POST", &authority, "x"), Duration::from_secs(1)).await.unwrap_err();
    assert!(failed.error.is_connect(), "{}", failed.error);
    assert!(!failed.error.closed_before_response());
    let back = failed.unsent.expect("nothing was sent: the request comes back");
    assert_eq!(back.method(), "POST");
    let pool = Arc::new(Pool::new("no-such-host.invalid:80"));
    let failed = send(&pool, request("GET", "x", ""), Duration::from_secs(2)).await.unwrap_err();
    assert!(failed.error.is_connect() && failed.unsent.is_some(), "{}", failed.error);
}

#[tokio::test]
async fn idle_connections_expire() {
    let authority = port_backend().await;
    let pool = Arc::new(Pool::new(&authority));
    let resp = send(&pool, request("GET", &authority, ""), Duration::from_secs(1)).await.unwrap();
    text(resp).await;
    pool.expire(IDLE_TIMEOUT);
    assert_eq!(pool.idle_count(), 1, "young enough");
    pool.expire(Duration::ZERO);
    assert_eq!(pool.idle_count(), 0, "expired");
}

/// An instance that answers before reading the request body (a 413 to an upload) and keeps the
/// connection open while the upload goes on.
#[tokio::test]
async fn a_connection_still_sending_an_upload_is_not_reused() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let authority = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let n = conn.read(&mut buf).await.unwrap_or(0);
                let answer: &[u8] = if buf[..n].starts_with(b"POST") {
                    b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 2\r\n\r\nno"
                } else {
                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
                };
                let _ = conn.write_all(answer).await;
                while conn.read(&mut buf).await.is_ok_and(|n| n > 0) {}
            });
        }
    });
    let pool = Arc::new(Pool::new(&authority));
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(1);
    let chunks = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) });
    let upload = RequestBody::Stream(UnsyncBoxBody::new(http_body_util::StreamBody::new(chunks)));
    let req = Request::post("/up").header("host", &authority).body(upload).unwrap();
    tx.send(Ok(Frame::data(Bytes::from_static(b"part")))).await.unwrap();
    let resp = send(&pool, req, Duration::from_secs(1)).await.unwrap();
    assert_eq!((resp.status().as_u16(), text(resp).await.as_str()), (413, "no"));
    assert_eq!(pool.idle_count(), 0, "the upload still occupies the connection");

    let next = tokio::time::timeout(
        Duration::from_secs(2),
        send(&pool, request("GET", &authority, ""), Duration::from_secs(1)),
    );
    let resp = next.await.expect("the next request does not wait for the upload").unwrap();
    assert_eq!(text(resp).await, "ok");
    drop(tx);
}
