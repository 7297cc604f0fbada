//! `GET /v1/services` and `GET /v1/services/{name}`: the services the gateway follows and the
//! instances it routes to, read from its own cache ([`Services`]: the sets the watcher
//! delivered), never from the registry. They answer while the registry is down, and say so:
//! `stale` (with `stale_reason`) per service and overall, from [`crate::discovery::freshness`].

use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::Json;
use serde_json::{json, Value};

use super::validate::FieldError;
use super::{Api, ApiError};
use crate::discovery::services::{Services, Slot};

/// Why everything the gateway knows may be out of date, if it may be.
fn overall_reason(services: &Services) -> Option<String> {
    let f = services.freshness();
    if !f.watcher_connected() {
        return Some("the watcher is not connected (starting, or restarting)".into());
    }
    if let Some(why) = f.consul_reason() {
        return Some(format!("the registry cannot be read: {why}"));
    }
    f.is_stale().then(|| "some services cannot be read from the registry".into())
}

/// One service as the API shows it.
fn service_json(services: &Services, slot: &Slot, overall: Option<&String>) -> Value {
    let name = slot.service.as_str();
    let reason = services.freshness().stale_reason(name).or_else(|| overall.cloned());
    match slot.set() {
        Some(set) => json!({
            "service": name,
            "loaded": true,
            "stale": reason.is_some(),
            "stale_reason": reason,
            "index": set.index,
            "last_change": humantime::format_rfc3339_millis(set.changed_at).to_string(),
            "instances": set.endpoints.iter().map(|e| instance_json(&e.instance)).collect::<Vec<_>>(),
        }),
        None => json!({
            "service": name,
            "loaded": false,
            "stale": true,
            "stale_reason": reason.unwrap_or_else(|| "not read yet".into()),
            "index": 0,
            "last_change": null,
            "instances": [],
        }),
    }
}

fn instance_json(i: &consul::Instance) -> Value {
    json!({
        "id": i.id, "node": i.node, "address": i.address, "port": i.port, "weight": i.weight,
        "tags": i.tags, "meta": i.meta,
    })
}

/// `GET /v1/services`: every followed service, by name.
pub async fn list(State(api): State<Arc<Api>>) -> Json<Value> {
    let overall = overall_reason(&api.services);
    let services: Vec<Value> =
        api.services.slots().iter().map(|s| service_json(&api.services, s, overall.as_ref())).collect();
    Json(json!({"stale": overall.is_some(), "stale_reason": overall, "services": services}))
}

/// `GET /v1/services/{name}`: one followed service (its name compared as Consul compares names,
/// without regard to case).
///
/// # Errors
/// 400 for a name Consul would refuse, 404 for a service the gateway does not follow.
pub async fn one(
    State(api): State<Arc<Api>>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let bad = |why: String| ApiError::Field(FieldError { field: "name".into(), why });
    let Path(name) = name.map_err(|e| bad(e.body_text()))?;
    consul::client::validate_name(&name).map_err(|e| bad(e.to_string()))?;
    let slots = api.services.slots();
    let slot = slots
        .iter()
        .find(|s| s.service == name)
        .or_else(|| slots.iter().find(|s| s.service.eq_ignore_ascii_case(&name)))
        .ok_or_else(|| ApiError::NotFound(format!("the gateway follows no service {name:?}")))?;
    Ok(Json(service_json(&api.services, slot, overall_reason(&api.services).as_ref())))
}
