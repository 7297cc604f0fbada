//! The live status page on the admin listener: `GET /` is one HTML page embedded in the binary
//! (`status/page.html`: inline CSS and JavaScript, no external asset, so it works offline), which
//! follows `GET /events` (server-sent events, [`events`]) and redraws itself from each `state`
//! ([`state`]) without reloading. Everything it shows comes from the gateway's memory; nothing
//! here reads Consul.

pub mod events;
pub mod state;

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::Router;

use crate::admin::Admin;

/// The page.
const PAGE: &str = include_str!("status/page.html");

/// What the page may load: nothing from elsewhere (its own inline style and script, and
/// `/events` on the same origin).
const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; \
                   connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'";

/// `GET /` (the page) and `GET /events` (its live feed), for the admin router.
pub fn routes() -> Router<Admin> {
    // One set of rate samples, and one state per tick, for every follower.
    let shared = Arc::new(events::Shared::default());
    Router::new().route("/", get(page)).route(
        "/events",
        get(move |State(admin): State<Admin>| {
            let shared = shared.clone();
            async move { events::follow(admin, shared) }
        }),
    )
}

async fn page() -> impl IntoResponse {
    (
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        Html(PAGE),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::router;
    use crate::discovery::direct::StaticRead;
    use crate::discovery::services::Services;
    use crate::discovery::tag::TagRules;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    #[tokio::test]
    async fn the_page_is_served_self_contained() {
        let rules = TagRules { route_tag: "gateway".into(), prefix: "urlprefix-".into() };
        let services = Arc::new(Services::new(["web".to_string()], rules, Arc::new(StaticRead::default())));
        let resp = router(services, Arc::default()).oneshot(Request::get("/").body(Body::empty()).unwrap()).await;
        let resp = resp.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert!(resp.headers()[header::CONTENT_SECURITY_POLICY].to_str().unwrap().starts_with("default-src 'none'"));
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let html = std::str::from_utf8(&body).unwrap();
        assert!(html.starts_with("<!doctype html>\n<html lang=\"en\">"), "{}", &html[..40]);
        assert!(html.contains("new EventSource(\"events\")"));
        // Nothing from elsewhere: no URL with a scheme, no protocol-relative one.
        for needle in ["http://", "https://", "src=\"//", "href=\"//", "@import", "url("] {
            assert!(!html.contains(needle), "the page must not load {needle}");
        }
    }
}
