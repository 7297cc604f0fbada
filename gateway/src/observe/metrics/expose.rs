//! `GET /metrics`: every series of [`super`], gathered at scrape time by a `prometheus-client`
//! [`Collector`] (the request shards summed, the rest read from [`Services`] and `/proc`) and
//! encoded as OpenMetrics text.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use tracing::warn;

use super::shard::BUCKETS;
use super::{Metrics, Open, RetryReason};
use crate::discovery::services::Services;

/// The OpenMetrics text format, which Prometheus 2.x asks for and parses.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The handler: every series, as OpenMetrics text.
pub async fn serve(State(metrics): State<Arc<Metrics>>, State(services): State<Arc<Services>>) -> Response {
    match render(metrics, services) {
        Ok(body) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response(),
        Err(e) => {
            warn!(error = %e, "cannot encode the metrics");
            (StatusCode::INTERNAL_SERVER_ERROR, "cannot encode the metrics\n").into_response()
        }
    }
}

/// Every series, as OpenMetrics text (ends with `# EOF`).
///
/// # Errors
/// Only a formatting error of the encoder (writing to a `String` does not fail).
pub fn render(metrics: Arc<Metrics>, services: Arc<Services>) -> Result<String, std::fmt::Error> {
    // Entries of routes and services that are gone go first, so the keys stay bounded by the
    // route table and the services followed.
    forget_gone(&metrics, &services);
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Gather { metrics, services: services.clone() }));
    let mut out = String::with_capacity(16 * 1024);
    prometheus_client::encoding::text::encode(&mut out, &registry)?;
    Ok(out)
}

/// Drops the entries of routes that are no longer in the route table and of services no longer
/// followed, keeping their request totals ([`Metrics::forget_routes`],
/// [`Metrics::forget_services`]). Every scrape does it, and the gateway every minute
/// ([`prune_every`]), so the keys stay bounded by what exists now even when nobody scrapes.
pub fn forget_gone(metrics: &Metrics, services: &Services) {
    let table = services.table();
    let live: std::collections::HashSet<(String, &str)> =
        table.routes().iter().map(|r| (r.shown(), r.service.as_str())).collect();
    metrics.forget_routes(|route, service| live.contains(&(route.to_string(), service)));
    let slots = services.slots();
    let followed: std::collections::HashSet<&str> = slots.iter().map(|s| s.service.as_str()).collect();
    metrics.forget_services(|service| followed.contains(service));
}

/// Runs [`forget_gone`] every `period`, for ever.
pub async fn prune_every(metrics: Arc<Metrics>, services: Arc<Services>, period: std::time::Duration) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        forget_gone(&metrics, &services);
    }
}

/// What a scrape reads.
struct Gather {
    metrics: Arc<Metrics>,
    services: Arc<Services>,
}

impl std::fmt::Debug for Gather {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gather").finish_non_exhaustive()
    }
}

/// Writes one family's descriptor and hands its encoder to `f`.
fn family(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    f: impl FnOnce(&mut MetricEncoder) -> Result<(), std::fmt::Error>,
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, kind)?;
    f(&mut m)
}

fn counter<V: prometheus_client::encoding::EncodeCounterValue>(
    m: &mut MetricEncoder,
    labels: &[(&str, &str)],
    v: V,
) -> Result<(), std::fmt::Error> {
    ConstCounter::new(v).encode(m.encode_family(&labels)?)
}

fn gauge<V: prometheus_client::encoding::EncodeGaugeValue>(
    m: &mut MetricEncoder,
    labels: &[(&str, &str)],
    v: V,
) -> Result<(), std::fmt::Error> {
    ConstGauge::new(v).encode(m.encode_family(&labels)?)
}

impl Collector for Gather {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let summed = self.metrics.summed();
        // OpenMetrics names a counter family without `_total`; the encoder adds it to samples.
        family(
            &mut enc,
            "gateway_requests",
            "Requests answered, by route, service, method class and status sent.",
            MetricType::Counter,
            |m| {
                for (key, entry) in &summed {
                    let mut by: Vec<_> = entry.by_method_and_status().collect();
                    by.sort_unstable();
                    for (method, code, n) in by {
                        let code = code.to_string();
                        counter(
                            m,
                            &[("route", &key.route), ("service", &key.service), ("method", method), ("code", &code)],
                            n,
                        )?;
                    }
                }
                Ok(())
            },
        )?;
        family(
            &mut enc,
            "gateway_request_duration_seconds",
            "Time from a request's head to the end of its response body.",
            MetricType::Histogram,
            |m| {
                for (key, entry) in &summed {
                    let labels = [("route", &*key.route), ("service", &*key.service)];
                    let mut buckets: Vec<(f64, u64)> =
                        BUCKETS.iter().copied().zip(entry.buckets.iter().copied()).collect();
                    buckets.push((f64::INFINITY, entry.buckets[BUCKETS.len()]));
                    let sum = entry.sum_nanos as f64 / 1e9;
                    m.encode_family(&labels)?.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                        sum,
                        entry.requests(),
                        &buckets,
                        None,
                    )?;
                }
                Ok(())
            },
        )?;

        let rare = self.metrics.rare_counts();
        family(
            &mut enc,
            "gateway_upstream_connect_failures",
            "Connects to an instance that failed.",
            MetricType::Counter,
            |m| rare.iter().try_for_each(|(s, r)| counter(m, &[("service", s)], r.connect_failures)),
        )?;
        family(&mut enc, "gateway_retries", "Requests sent again, by reason.", MetricType::Counter, |m| {
            for (s, r) in &rare {
                for reason in RetryReason::ALL {
                    counter(m, &[("service", s), ("reason", reason.label())], r.retries[reason as usize])?;
                }
            }
            Ok(())
        })?;
        family(
            &mut enc,
            "gateway_ejections",
            "Instances taken out of the rotation after a failure.",
            MetricType::Counter,
            |m| rare.iter().try_for_each(|(s, r)| counter(m, &[("service", s)], r.ejections)),
        )?;

        let slots = self.services.slots();
        let freshness = self.services.freshness();
        family(
            &mut enc,
            "gateway_instances",
            "Routable instances of each followed service.",
            MetricType::Gauge,
            |m| {
                slots.iter().try_for_each(|s| {
                    gauge(m, &[("service", &s.service)], s.set().map_or(0, |set| set.endpoints.len() as i64))
                })
            },
        )?;
        let feed = self.services.feed();
        family(&mut enc, "gateway_route_changes", "Routes added or removed.", MetricType::Counter, |m| {
            counter(m, &[], feed.route_changes())
        })?;
        family(&mut enc, "gateway_instance_changes", "Changes of a service's instances.", MetricType::Counter, |m| {
            counter(m, &[], feed.instance_changes())
        })?;
        family(
            &mut enc,
            "gateway_watcher_restarts",
            "Times the watcher process exited and was started again.",
            MetricType::Counter,
            |m| counter(m, &[], freshness.watcher_restarts()),
        )?;
        family(
            &mut enc,
            "gateway_consul_last_success_age_seconds",
            "0 while the watcher is connected and reads Consul, else seconds since it last did.",
            MetricType::Gauge,
            |m| gauge(m, &[], freshness.last_success_age().as_secs_f64()),
        )?;
        family(
            &mut enc,
            "gateway_stale",
            "1 while the data served may be out of date (watcher disconnected, Consul or a service unreadable).",
            MetricType::Gauge,
            |m| gauge(m, &[], i64::from(freshness.is_stale())),
        )?;
        family(
            &mut enc,
            "gateway_service_stale",
            "1 while a service's data may be out of date.",
            MetricType::Gauge,
            |m| {
                slots.iter().try_for_each(|s| {
                    gauge(m, &[("service", &s.service)], i64::from(freshness.stale_reason(&s.service).is_some()))
                })
            },
        )?;
        family(
            &mut enc,
            "gateway_open_connections",
            "Connections open now, from clients and to instances.",
            MetricType::Gauge,
            |m| {
                gauge(m, &[("side", "client")], self.metrics.open_now(Open::Client))?;
                gauge(m, &[("side", "upstream")], self.metrics.open_now(Open::Upstream))
            },
        )?;
        family(
            &mut enc,
            "gateway_websocket_tunnels",
            "Upgraded tunnels (WebSocket and others) open now.",
            MetricType::Gauge,
            |m| gauge(m, &[], self.metrics.open_now(Open::Tunnel)),
        )?;
        family(
            &mut enc,
            "gateway_connections_refused",
            "Client connections closed unread because --max-connections were open.",
            MetricType::Counter,
            |m| counter(m, &[], self.metrics.connections_refused()),
        )?;
        family(
            &mut enc,
            "gateway_access_log_dropped",
            "Access log lines dropped because the writer's queue was full (0 with the access log off).",
            MetricType::Counter,
            |m| counter(m, &[], self.metrics.access_log_dropped()),
        )?;
        process(&mut enc)
    }
}

/// The standard `process_*` series, from `/proc/self` (left out if it cannot be read).
fn process(enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    let Ok(me) = procfs::process::Process::myself() else { return Ok(()) };
    if let Ok(stat) = me.stat() {
        let ticks = procfs::ticks_per_second() as f64;
        family(
            enc,
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds.",
            MetricType::Counter,
            |m| counter(m, &[], (stat.utime + stat.stime) as f64 / ticks),
        )?;
        family(enc, "process_resident_memory_bytes", "Resident memory size in bytes.", MetricType::Gauge, |m| {
            gauge(m, &[], (stat.rss * procfs::page_size()) as i64)
        })?;
        family(enc, "process_virtual_memory_bytes", "Virtual memory size in bytes.", MetricType::Gauge, |m| {
            gauge(m, &[], stat.vsize as i64)
        })?;
        family(enc, "process_threads", "Number of OS threads in the process.", MetricType::Gauge, |m| {
            gauge(m, &[], stat.num_threads)
        })?;
        if let Ok(boot) = procfs::boot_time_secs() {
            let start = boot as f64 + stat.starttime as f64 / ticks;
            family(
                enc,
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch in seconds.",
                MetricType::Gauge,
                |m| gauge(m, &[], start),
            )?;
        }
    }
    if let Ok(fds) = me.fd_count() {
        family(enc, "process_open_fds", "Number of open file descriptors.", MetricType::Gauge, |m| {
            gauge(m, &[], fds as i64)
        })?;
    }
    if let Ok(limits) = me.limits() {
        if let procfs::process::LimitValue::Value(max) = limits.max_open_files.soft_limit {
            family(enc, "process_max_fds", "Maximum number of open file descriptors.", MetricType::Gauge, |m| {
                gauge(m, &[], max as i64)
            })?;
        }
    }
    Ok(())
}
