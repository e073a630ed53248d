//! The monitor: a read-only window onto metrod for browsers
//! (docs/monitor.md), served on the webhook listener: the page at `/`,
//! `GET /api/state` ([`api`]) and the live stream `GET /api/tail`
//! ([`sse`]).
//!
//! Off — `/` and `/api/…` answer 404 like any other unknown path — unless
//! `[monitor] token` or `METRO_MONITOR_TOKEN` is set; the config in force is
//! read on every request, so a reload turns it on, off, or changes the
//! token. Every `/api/` request needs `Authorization: Bearer <token>`; the
//! stream also takes `?token=` (EventSource cannot send headers). The token
//! is compared in constant time, never logged, and a request without it
//! gets a bare 401. CORS headers are sent only to `[monitor] origins`.

pub mod api;
pub mod page;
pub mod sse;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::extract::Request;
use axum::http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_MAX_AGE, ALLOW, AUTHORIZATION, CONTENT_TYPE, ORIGIN, VARY, WWW_AUTHENTICATE,
};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::broker::Broker;
use crate::station::Registry;
use crate::stations::webhook::http::Mount;
use crate::stations::webhook::verify;

/// The monitor as mounted on the webhook listener by the daemon.
pub struct Monitor {
    pub broker: Arc<Broker>,
    pub stations: Arc<Registry>,
    /// Ends live streams when metrod stops.
    pub shutdown: CancellationToken,
}

impl Mount for Monitor {
    fn serves(&self, path: &str) -> bool {
        serves(&self.broker, path)
    }

    fn handle(&self, req: Request) -> Pin<Box<dyn Future<Output = Response> + Send>> {
        Box::pin(handle(
            self.broker.clone(),
            self.stations.clone(),
            self.shutdown.clone(),
            req,
        ))
    }
}

/// True when the monitor is on and `path` is one of its paths; the
/// webhook listener hands such requests to [`handle`].
pub fn serves(broker: &Broker, path: &str) -> bool {
    (path == "/" || path == "/api" || path.starts_with("/api/"))
        && broker.config.current().monitor.token().is_some()
}

/// The query string as name/value pairs (percent-decoded).
pub(crate) type Query = Vec<(String, String)>;

pub(crate) fn param<'a>(q: &'a Query, name: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// A JSON answer.
pub(crate) fn json_response(status: StatusCode, v: &Value) -> Response {
    (
        status,
        [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        v.to_string(),
    )
        .into_response()
}

/// A `400`/`404`/`503` with `{"error": "..."}` (only after authentication).
pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    json_response(status, &json!({ "error": message.into() }))
}

/// The bare 401: no body, nothing about why.
fn unauthorized() -> Response {
    let mut r = StatusCode::UNAUTHORIZED.into_response();
    r.headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

/// Answers a request [`serves`] said is the monitor's. `shutdown` ends
/// live streams when metrod stops.
pub async fn handle(
    broker: Arc<Broker>,
    stations: Arc<Registry>,
    shutdown: CancellationToken,
    req: Request,
) -> Response {
    let config = broker.config.current();
    let monitor = &config.monitor;
    let Some(token) = monitor.token() else {
        // Turned off by a reload since `serves`.
        return error(StatusCode::NOT_FOUND, "not found");
    };
    let (parts, _body) = req.into_parts();
    let origin = allowed_origin(&monitor.origins, &parts.headers);
    let path = parts.uri.path();
    let query: Query = parts
        .uri
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let mut resp = if parts.method == Method::OPTIONS && origin.is_some() {
        // A CORS preflight from an allowed origin.
        let mut r = StatusCode::NO_CONTENT.into_response();
        let h = r.headers_mut();
        h.insert(
            ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET"),
        );
        h.insert(
            ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization, last-event-id"),
        );
        h.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
        r
    } else if parts.method != Method::GET {
        let mut r = error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!(
                "method {} not allowed: the monitor is read-only",
                parts.method
            ),
        );
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET"));
        r
    } else if path == "/" {
        page::page()
    } else {
        let by_header = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|h| verify::bearer(token, h));
        // `?token=` only for the stream: EventSource cannot send headers.
        let by_query = path == "/api/tail"
            && param(&query, "token")
                .is_some_and(|t| verify::bearer(token, &format!("Bearer {t}")));
        if !by_header && !by_query {
            unauthorized()
        } else {
            match path {
                "/api/state" => api::state(&broker, &stations, &query).await,
                "/api/tail" => sse::tail(broker.clone(), &query, &parts.headers, shutdown),
                _ => error(
                    StatusCode::NOT_FOUND,
                    "not found: the monitor has GET /api/state and GET /api/tail",
                ),
            }
        }
    };
    if let Some(o) = origin {
        let h = resp.headers_mut();
        h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, o);
        h.insert(VARY, HeaderValue::from_static("Origin"));
    }
    resp
}

/// The request's `Origin` when it is one of `origins`.
fn allowed_origin(origins: &[String], headers: &HeaderMap) -> Option<HeaderValue> {
    let o = headers.get(ORIGIN)?;
    let s = o.to_str().ok()?;
    origins
        .iter()
        .any(|a| a.trim_end_matches('/') == s)
        .then(|| o.clone())
}
