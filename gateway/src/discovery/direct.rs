//! Reading a service from Consul directly, for the moments the watcher has not delivered it yet
//! (a static service right after start, or while the watcher is down at start). The seam lets
//! the request path be tested with a static list and run with a real Consul.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use consul::Instance;

/// What [`DirectRead::fetch`] returns: Consul's index and the instances, or why it failed.
pub type FetchFuture<'a> = Pin<Box<dyn Future<Output = Result<(u64, Vec<Instance>), String>> + Send + 'a>>;

/// Reads a service's current instances once.
pub trait DirectRead: Send + Sync + 'static {
    /// Reads `service`'s instances.
    fn fetch<'a>(&'a self, service: &'a str) -> FetchFuture<'a>;
}

/// [`DirectRead`] through a Consul client.
pub struct ConsulRead {
    /// The client.
    pub client: consul::Client,
    /// The view the watcher also uses (with the same health statuses), so a direct read and a
    /// watcher snapshot agree.
    pub view: consul::View,
}

impl DirectRead for ConsulRead {
    fn fetch<'a>(&'a self, service: &'a str) -> FetchFuture<'a> {
        Box::pin(async move {
            let r = self.client.instances(self.view, service, 0, Duration::ZERO).await.map_err(|e| e.to_string())?;
            Ok((r.index, r.instances))
        })
    }
}

/// No direct reads: the registry (etcd, DNS) is read by the watcher only, so a request for a
/// service the watcher has not delivered yet is refused as unknown for now.
pub struct NoDirectRead(pub watcher::source::SourceKind);

impl DirectRead for NoDirectRead {
    fn fetch<'a>(&'a self, _service: &'a str) -> FetchFuture<'a> {
        let source = self.0;
        Box::pin(async move { Err(format!("no direct reads from {source}: waiting for the watcher")) })
    }
}

/// A static [`DirectRead`] for tests.
#[derive(Default)]
pub struct StaticRead(pub BTreeMap<String, Vec<Instance>>);

impl DirectRead for StaticRead {
    fn fetch<'a>(&'a self, service: &'a str) -> FetchFuture<'a> {
        let r = self.0.get(service).cloned().map(|v| (1, v)).ok_or_else(|| format!("{service} is not known"));
        Box::pin(std::future::ready(r))
    }
}
