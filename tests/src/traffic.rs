//! A client that sends requests back to back from a background thread, recording when each
//! answer came, its status and which instance (port) served it. Bounded: it stops when dropped
//! or after a hard cap of requests and time.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::{get_json, http};

/// Hard caps so a forgotten hammer cannot run away.
const MAX_REQUESTS: usize = 200_000;
const MAX_TIME: Duration = Duration::from_secs(120);

/// One answer.
#[derive(Clone, Debug)]
pub struct Sample {
    /// When the answer arrived.
    pub at: Instant,
    /// HTTP status, or 0 if the request itself failed.
    pub status: u16,
    /// The `port` field of the JSON answer, if any.
    pub port: Option<u16>,
    /// The error or body, for failure messages.
    pub detail: String,
}

/// A running background client.
pub struct Hammer {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    thread: Option<JoinHandle<()>>,
}

impl Hammer {
    /// Starts sending GET `url` back to back.
    pub fn start(url: String) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let (s, out) = (stop.clone(), samples.clone());
        let thread = std::thread::spawn(move || {
            let client = http();
            let started = Instant::now();
            for _ in 0..MAX_REQUESTS {
                if s.load(Ordering::Relaxed) || started.elapsed() > MAX_TIME {
                    break;
                }
                let sample = match get_json(&client, &url) {
                    Ok((status, v)) => Sample {
                        at: Instant::now(),
                        status,
                        port: v["port"].as_u64().map(|p| p as u16),
                        detail: v.to_string(),
                    },
                    Err(e) => Sample { at: Instant::now(), status: 0, port: None, detail: e },
                };
                out.lock().unwrap_or_else(|e| e.into_inner()).push(sample);
            }
        });
        Self { stop, samples, thread: Some(thread) }
    }

    /// The answers so far.
    pub fn samples(&self) -> Vec<Sample> {
        self.samples.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Stops the client and returns every answer.
    pub fn finish(mut self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.samples()
    }
}

impl Drop for Hammer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Asserts that every sample is a 200, showing the first failures otherwise.
pub fn assert_all_ok(samples: &[Sample], what: &str) {
    let bad: Vec<&Sample> = samples.iter().filter(|s| s.status != 200).collect();
    assert!(
        bad.is_empty(),
        "{what}: {} of {} requests failed, e.g. {:?}",
        bad.len(),
        samples.len(),
        &bad[..bad.len().min(3)]
    );
    assert!(!samples.is_empty(), "{what}: no request was made");
}
