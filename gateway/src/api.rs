//! The register/discover API under `/v1/` on the admin listener (docs/api/openapi.yaml):
//!
//! - `PUT /v1/instances`: registers an instance with a TTL in the active registry
//!   ([`registry::Registry`], chosen from `--source`); the body is checked field by field
//!   ([`validate`]).
//! - `PUT /v1/instances/{id}/heartbeat`: renews its TTL. `DELETE /v1/instances/{id}`: removes it.
//! - `GET /v1/services`, `GET /v1/services/{name}`: the instances the gateway routes to, from its
//!   own cache (never from the registry: they answer while the registry is down, and say that
//!   the data is stale), see [`discover`].
//!
//! Off unless `--api-token` or `--api-token-file` is given: then every `/v1/` request needs
//! `Authorization: Bearer <token>` ([`auth`]), else 401 with `WWW-Authenticate: Bearer`. Off,
//! `/v1/*` answers 404 saying how to turn it on. Every answer is JSON; an error is
//! `{"error": "..."}`, with `"field"` naming the bad field of a 400.

pub mod auth;
pub mod discover;
pub mod registry;
pub mod validate;

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, delete, get, put};
use axum::{Json, Router};
use serde_json::{json, Value};
use tracing::info;

use crate::discovery::services::Services;
use auth::ApiToken;
use registry::{Registry, RegistryError};
use validate::FieldError;

/// The largest request body, in bytes (a registration is well under 64 KiB even with 64 tags of
/// 512 bytes and 64 metadata pairs); larger gets 413.
pub const MAX_BODY: usize = 64 * 1024;

/// How long a client may take to send a request body: one that stops short of its
/// `Content-Length` (or never ends its chunks) gets 408, instead of holding its connection and
/// handler for good.
pub const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What the API handlers share.
pub struct Api {
    /// The bearer token every request must carry.
    pub token: ApiToken,
    /// Where instances are registered.
    pub registry: Arc<dyn Registry>,
    /// The gateway's own view of the services (the discover calls read only this).
    pub services: Arc<Services>,
}

/// An API error: its status and JSON body.
#[derive(Debug)]
pub enum ApiError {
    /// 400: a bad field.
    Field(FieldError),
    /// 401: no or a wrong bearer token.
    Unauthorized,
    /// 404 with a message.
    NotFound(String),
    /// 413: the body is over [`MAX_BODY`].
    TooLarge,
    /// 415: not `application/json`.
    UnsupportedMediaType,
    /// 408: the body did not arrive within [`BODY_TIMEOUT`].
    BodyTimeout,
    /// From the registry: 404, 409, 501, 503 or 502.
    Registry(RegistryError),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = match self {
            ApiError::Field(e) => (StatusCode::BAD_REQUEST, json!({"error": e.to_string(), "field": e.field})),
            ApiError::Unauthorized => {
                let body = json!({"error": "missing or wrong bearer token (Authorization: Bearer <token>)"});
                let mut resp = (StatusCode::UNAUTHORIZED, Json(body)).into_response();
                resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                return resp;
            }
            ApiError::NotFound(why) => (StatusCode::NOT_FOUND, json!({"error": why})),
            ApiError::TooLarge => {
                (StatusCode::PAYLOAD_TOO_LARGE, json!({"error": format!("the body is over {MAX_BODY} bytes")}))
            }
            ApiError::BodyTimeout => (
                StatusCode::REQUEST_TIMEOUT,
                json!({"error": format!("the body did not arrive within {} s", BODY_TIMEOUT.as_secs())}),
            ),
            ApiError::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                json!({"error": "the body must be JSON (Content-Type: application/json)"}),
            ),
            ApiError::Registry(e) => {
                let status = match &e {
                    RegistryError::NotFound(_) => StatusCode::NOT_FOUND,
                    RegistryError::Unsupported(_) => StatusCode::NOT_IMPLEMENTED,
                    RegistryError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
                    RegistryError::Failed(_) => StatusCode::BAD_GATEWAY,
                    RegistryError::Conflict(_) => StatusCode::CONFLICT,
                };
                (status, json!({"error": e.to_string()}))
            }
        };
        (status, Json(body)).into_response()
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        ApiError::Field(e)
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        ApiError::Registry(e)
    }
}

/// The `/v1` routes: the API with `api`, or (`None`) a 404 saying how to turn it on.
pub fn router(api: Option<Api>) -> Router {
    let Some(api) = api else {
        return Router::new().route("/v1", any(off)).route("/v1/", any(off)).route("/v1/{*rest}", any(off));
    };
    let token = api.token.clone();
    let v1 = Router::new()
        .route("/instances", put(register))
        .route("/instances/{id}", delete(deregister))
        .route("/instances/{id}/heartbeat", put(heartbeat))
        .route("/services", get(discover::list))
        .route("/services/{name}", get(discover::one))
        .fallback(unknown)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(token.clone(), authorize))
        .with_state(Arc::new(api));
    // `/v1/` is not in the nested router: answered here, in JSON, behind the token too.
    let root = any(unknown).layer(middleware::from_fn_with_state(token, authorize));
    Router::new().nest("/v1", v1).route("/v1/", root)
}

async fn off() -> Response {
    let error = "the register/discover API is off: start the gateway with --api-token-file (GATEWAY_API_TOKEN_FILE) or --api-token (GATEWAY_API_TOKEN)";
    (StatusCode::NOT_FOUND, Json(json!({"error": error}))).into_response()
}

async fn unknown() -> ApiError {
    ApiError::NotFound("no such API endpoint (docs/api/openapi.yaml lists them)".into())
}

async fn method_not_allowed() -> Response {
    (StatusCode::METHOD_NOT_ALLOWED, Json(json!({"error": "method not allowed on this endpoint"}))).into_response()
}

/// Lets a request through only with one `Authorization: Bearer <token>` header: a request with
/// two is refused whatever they say (the header is not a list, RFC 9110 section 11.6.2, and a
/// proxy in front that adds its own must not have the first one win or lose by accident).
async fn authorize(State(token): State<ApiToken>, req: Request, next: Next) -> Response {
    let mut values = req.headers().get_all(header::AUTHORIZATION).iter();
    match (values.next(), values.next()) {
        (Some(v), None) if token.accepts(v.as_bytes()) => next.run(req).await,
        _ => ApiError::Unauthorized.into_response(),
    }
}

/// The body, if it is JSON, at most [`MAX_BODY`] bytes, and sent within [`BODY_TIMEOUT`].
async fn json_body(headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(ApiError::UnsupportedMediaType);
    }
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    if declared.is_some_and(|n: u64| n > MAX_BODY as u64) {
        return Err(ApiError::TooLarge);
    }
    let read = tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, MAX_BODY));
    read.await.map_err(|_| ApiError::BodyTimeout)?.map_err(|e| {
        let over = std::iter::successors(Some(&e as &(dyn std::error::Error + 'static)), |e| e.source())
            .any(|e| e.is::<http_body_util::LengthLimitError>());
        if over {
            ApiError::TooLarge
        } else {
            ApiError::Field(FieldError { field: "body".into(), why: format!("cannot be read: {e}") })
        }
    })
}

/// An `{id}` from the path, checked like the body's `id`.
fn path_id(id: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let bad = |why: String| ApiError::Field(FieldError { field: "id".into(), why });
    let Path(id) = id.map_err(|e| bad(e.body_text()))?;
    validate::check_id(&id).map_err(bad)?;
    Ok(id)
}

async fn register(State(api): State<Arc<Api>>, headers: HeaderMap, body: Body) -> Result<Json<Value>, ApiError> {
    let body = json_body(&headers, body).await?;
    let r = validate::registration(&body)?;
    api.registry.register(&r).await?;
    info!(registry = api.registry.kind(), service = %r.service, id = %r.id, address = %r.address, port = r.port, ttl = ?r.ttl, "API: instance registered");
    Ok(Json(json!({
        "service": r.service,
        "id": r.id,
        "address": r.address,
        "port": r.port,
        "tags": r.tags,
        "meta": r.meta,
        "ttl": format!("{}s", r.ttl.as_secs_f64()),
        "registry": api.registry.kind(),
    })))
}

async fn heartbeat(
    State(api): State<Arc<Api>>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let id = path_id(id)?;
    api.registry.heartbeat(&id).await?;
    Ok(Json(json!({"id": id, "status": "passing"})))
}

async fn deregister(
    State(api): State<Arc<Api>>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let id = path_id(id)?;
    api.registry.deregister(&id).await?;
    info!(registry = api.registry.kind(), id = %id, "API: instance deregistered");
    Ok(Json(json!({"id": id, "deregistered": true})))
}

#[cfg(test)]
mod tests;
