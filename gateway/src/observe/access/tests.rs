//! Line shapes, drop counting and reopening after a rename.

use super::format::escape;
use super::*;
use std::sync::Arc;

fn record() -> Record {
    Record {
        time: SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_550_500_123),
        client: Some("127.0.0.1:50000".parse().unwrap()),
        method: Method::GET,
        path: Some(PathAndQuery::from_static("/web/x?q=1")),
        version: Version::HTTP_11,
        status: 200,
        bytes_in: 3,
        bytes_out: 1234,
        duration: Duration::from_micros(1500),
        route: Some(Arc::from("/web")),
        service: Some(Arc::from("web")),
        instance: Some(Authority::from_static("127.0.0.1:8080")),
        retries: 1,
        request_id: HeaderValue::from_static("abc-1"),
    }
}

fn line(format: Format, r: &Record) -> String {
    let mut out = Vec::new();
    format.line(r, &mut out);
    String::from_utf8(out).unwrap()
}

#[test]
fn a_text_line_has_every_field() {
    assert_eq!(
        line(Format::Text, &record()),
        "2025-12-01T00:55:00.123Z 127.0.0.1:50000 \"GET /web/x?q=1 HTTP/1.1\" 200 3 1234 0.001500 \
         route=/web service=web instance=127.0.0.1:8080 retries=1 request_id=abc-1\n"
    );
    let none = Record { route: None, service: None, instance: None, client: None, ..record() };
    let l = line(Format::Text, &none);
    assert!(l.contains("route=- service=- instance=- "), "{l}");
}

#[test]
fn text_escapes_what_could_forge_a_line() {
    let mut out = Vec::new();
    escape(b"/a b\"c\\d\ne\xc3\xa9", &mut out);
    assert_eq!(String::from_utf8(out).unwrap(), "/a\\x20b\\x22c\\x5cd\\x0ae\\xc3\\xa9");
}

#[test]
fn a_json_line_is_one_object_with_typed_fields() {
    let l = line(Format::Json, &record());
    assert!(l.ends_with('\n') && l.matches('\n').count() == 1, "{l}");
    let v: serde_json::Value = serde_json::from_str(&l).unwrap();
    assert_eq!(v["time"], "2025-12-01T00:55:00.123Z");
    assert_eq!(v["client"], "127.0.0.1:50000");
    assert_eq!((v["method"].as_str(), v["path"].as_str()), (Some("GET"), Some("/web/x?q=1")));
    assert_eq!((v["protocol"].as_str(), v["status"].as_u64()), (Some("HTTP/1.1"), Some(200)));
    assert_eq!((v["bytes_in"].as_u64(), v["bytes_out"].as_u64()), (Some(3), Some(1234)));
    assert_eq!(v["duration_seconds"].as_f64(), Some(0.0015));
    assert_eq!((v["route"].as_str(), v["service"].as_str()), (Some("/web"), Some("web")));
    assert_eq!((v["instance"].as_str(), v["retries"].as_u64()), (Some("127.0.0.1:8080"), Some(1)));
    assert_eq!(v["request_id"], "abc-1");
    assert_eq!(v.as_object().unwrap().len(), 14);

    let none = Record { route: None, service: None, instance: None, client: None, ..record() };
    let v: serde_json::Value = serde_json::from_str(&line(Format::Json, &none)).unwrap();
    assert!(v["route"].is_null() && v["service"].is_null() && v["instance"].is_null() && v["client"].is_null());

    let v6 =
        Record { client: Some("[::1]:8080".parse().unwrap()), duration: Duration::from_millis(62_500), ..record() };
    let v: serde_json::Value = serde_json::from_str(&line(Format::Json, &v6)).unwrap();
    assert_eq!((v["client"].as_str(), v["duration_seconds"].as_f64()), (Some("[::1]:8080"), Some(62.5)));
    assert!(line(Format::Text, &v6).contains(" [::1]:8080 \"GET ") && line(Format::Text, &v6).contains(" 62.500000 "));
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_full_queue_drops_and_counts_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    // A queue of one, and records sent faster than a thread can be scheduled to take them.
    let log = AccessLog::start(Format::Json, Destination::File(path.clone()), 1).unwrap();
    let started = Instant::now();
    for _ in 0..10_000 {
        log.log(record());
    }
    assert!(started.elapsed() < Duration::from_secs(2), "never waits for the writer");
    let dropped = log.dropped();
    assert!(dropped > 0, "some were dropped");
    drop(log);
    wait_for("the writer to write what it took", || {
        let n = std::fs::read_to_string(&path).unwrap().lines().count() as u64;
        n + dropped == 10_000
    });
}

#[test]
fn a_file_that_cannot_be_opened_is_a_startup_error() {
    let err = AccessLog::start(Format::Text, Destination::File("/nonexistent-dir/access.log".into()), 8)
        .err()
        .expect("refused");
    assert!(err.to_string().contains("/nonexistent-dir/access.log"), "{err}");
    // The cause is the error's source, said once when the chain is printed (`{:#}`).
    let chain = format!("{:#}", anyhow::Error::new(err));
    assert_eq!(chain.matches("No such file or directory").count(), 1, "{chain}");
}

#[test]
fn reopen_after_a_rename_writes_to_a_new_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let rotated = dir.path().join("access.log.1");
    let log = AccessLog::start(Format::Text, Destination::File(path.clone()), 64).unwrap();
    log.log(record());
    wait_for("the first line", || std::fs::read_to_string(&path).is_ok_and(|t| t.lines().count() == 1));
    std::fs::rename(&path, &rotated).unwrap();
    log.reopen();
    let second = Record { request_id: HeaderValue::from_static("after"), ..record() };
    // The flag is seen at the next record or within a second.
    wait_for("a new file", || {
        log.log(second.clone());
        std::thread::sleep(Duration::from_millis(50));
        path.exists()
    });
    wait_for("the line in the new file", || {
        std::fs::read_to_string(&path).is_ok_and(|t| t.contains("request_id=after"))
    });
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert!(old.contains("request_id=abc-1"), "{old}");
}

#[test]
fn close_writes_every_queued_line_before_returning() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let log = AccessLog::start(Format::Json, Destination::File(path.clone()), QUEUE).unwrap();
    for _ in 0..5_000 {
        log.log(record());
    }
    let dropped = log.dropped();
    // No waiting for the writer: close is what a shutdown relies on.
    assert!(log.close(Duration::from_secs(10)), "the writer finished");
    let n = std::fs::read_to_string(&path).unwrap().lines().count() as u64;
    assert_eq!(n + dropped, 5_000, "every record not dropped is written");
    log.log(record());
    assert_eq!(log.dropped(), dropped + 1, "a record after close is counted as dropped");
    assert!(log.close(Duration::from_secs(1)), "a second close is harmless");
}

/// An access log writing to a FIFO nobody reads (as a stdout nobody reads): its writer blocks
/// once the pipe's buffer is full. Dropping the returned guard lets the reader end.
fn stuck_log(dir: &Path) -> (AccessLog, impl Drop) {
    let fifo = dir.join("fifo");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let reader = {
        let fifo = fifo.clone();
        // Opening either end waits for the other; this end is held open and never read.
        std::thread::spawn(move || {
            let _held = File::open(fifo).unwrap();
            let _ = done_rx.recv();
        })
    };
    let log = AccessLog::start(Format::Json, Destination::File(fifo), QUEUE).unwrap();
    struct Release(Option<(std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>)>);
    impl Drop for Release {
        fn drop(&mut self) {
            let (tx, reader) = self.0.take().unwrap();
            let _ = tx.send(());
            let _ = reader.join();
        }
    }
    (log, Release(Some((done_tx, reader))))
}

#[test]
fn close_gives_up_on_a_writer_that_cannot_write() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _reader) = stuck_log(dir.path());
    for _ in 0..5_000 {
        log.log(record());
    }
    let started = Instant::now();
    assert!(!log.close(Duration::from_millis(300)), "reported as unfinished");
    assert!(started.elapsed() < Duration::from_secs(2), "bounded");
}

#[test]
fn drops_are_warned_about_even_when_the_writer_is_stuck() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _reader) = stuck_log(dir.path());
    let logged = logged_during(|| {
        // 20,000 records of ~300 bytes: far more than the pipe and the queue hold.
        for _ in 0..20_000 {
            log.log(record());
        }
    });
    assert!(log.dropped() > 0, "some were dropped");
    assert_eq!(logged.matches("access log queue full").count(), 1, "once, by a request that dropped: {logged}");
    log.close(Duration::ZERO);
}

/// The gateway's own log lines, as written on this thread while `f` runs.
fn logged_during(f: impl FnOnce()) -> String {
    #[derive(Clone, Default)]
    struct Buf(Arc<std::sync::Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let out = buf.clone();
    let subscriber = tracing_subscriber::fmt().with_ansi(false).with_writer(move || out.clone()).finish();
    tracing::subscriber::with_default(subscriber, f);
    let text = buf.0.lock().unwrap().clone();
    String::from_utf8(text).unwrap()
}

#[test]
fn a_full_disk_is_said_once_not_at_every_flush() {
    // /dev/full: every write fails with "No space left on device".
    let out = Output::open(Destination::File("/dev/full".into())).unwrap();
    let shared = Arc::new(Shared::default());
    let mut w = Writer { format: Format::Json, out, shared, failing: None };
    let mut line = Vec::new();
    let logged = logged_during(|| {
        for _ in 0..1_000 {
            w.write(&record(), &mut line);
            w.flush();
        }
    });
    assert_eq!(logged.matches("cannot write the access log").count(), 1, "{logged}");
    assert!(logged.contains("No space left on device"), "{logged}");
}
