//! The webhook listener: `POST /hooks/<id>` becomes one `inbound` event.
//!
//! A request is checked in this order, and the first failure answers with
//! a small JSON body `{"error": "..."}`: path (404), method (405, `Allow:
//! POST`), endpoint (404), `Content-Length` over the limit (413), missing or
//! wrong credentials when the endpoint has a secret (401), body over the
//! limit (413), signature (401), JSON that does not parse under a JSON
//! content type (400), a body that is neither JSON nor UTF-8 (415). Then a
//! delivery id already stored for the endpoint answers 202 without a second
//! event; anything else is appended to the log and answered 202 once it is
//! durable (500 / 503 when it could not be stored: the sender retries).
//!
//! The append runs in its own task, so a sender that hangs up mid-request
//! cannot leave a half-recorded delivery behind.
//!
//! The listener cannot be starved ([`Limits`]): at most `max_connections`
//! connections are served at once (more wait in the kernel's backlog and
//! cost metrod no file descriptor); a request's head must arrive within
//! `header_timeout` (the same timer closes a keep-alive connection that
//! sends no next request), its body within `body_timeout` (else 408); an
//! accept error such as EMFILE backs off instead of spinning.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{ALLOW, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde_json::{json, Map, Value};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::verify::{self, SIGNATURE_HEADER};
use super::Webhooks;
use crate::proto::Event;
use crate::station::ingest::{ingest, Arrival, Outcome, Persist};
use crate::store::log::AppendError;

/// Headers copied into the event's `headers`: content type, sender, event
/// type and delivery id. Never `Authorization` or a signature.
const RECORDED_HEADERS: &[&str] = &[
    "content-type",
    "user-agent",
    "x-github-event",
    "x-github-delivery",
    "x-github-hook-id",
    "x-github-hook-installation-target-type",
    "x-github-hook-installation-target-id",
    "x-gitlab-event",
    "x-event-key",
    "x-event-type",
    "x-request-id",
    "x-delivery-id",
    "webhook-id",
    "webhook-timestamp",
    "idempotency-key",
];

/// Headers that name a delivery (the first one present is the event's
/// `messageId`; a retry carrying one already stored is not stored again).
const DELIVERY_HEADERS: &[&str] = &[
    "x-github-delivery",
    "x-delivery-id",
    "webhook-id",
    "idempotency-key",
];

/// Headers that name the event type, for the `text` summary.
const EVENT_TYPE_HEADERS: &[&str] = &[
    "x-github-event",
    "x-gitlab-event",
    "x-event-key",
    "x-event-type",
];

/// A delivery id longer than this is recorded but not used as `messageId`.
const MAX_DELIVERY_ID: usize = 200;

/// Default bound on HTTP connections served at once.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;
/// Default time for a request's head, and for its body.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed accept (EMFILE, ENFILE, ...).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(200);
/// Time requests in flight get to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What one sender may hold of the listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_timeout: DEFAULT_TIMEOUT,
            body_timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// Other routes the listener serves beside `/hooks/` (the monitor,
/// mounted by the daemon): the station hands a request over when
/// [`Mount::serves`] its path, and knows nothing else of it.
pub trait Mount: Send + Sync + 'static {
    fn serves(&self, path: &str) -> bool;
    fn handle(&self, req: Request) -> Pin<Box<dyn Future<Output = Response> + Send>>;
}

#[derive(Clone)]
struct App {
    hooks: Arc<Webhooks>,
    body_timeout: Duration,
    mount: Option<Arc<dyn Mount>>,
}

/// Serves `listener` until `shutdown`, then lets requests in flight finish
/// (for at most a few seconds).
pub async fn serve(
    hooks: Arc<Webhooks>,
    listener: std::net::TcpListener,
    limits: Limits,
    mount: Option<Arc<dyn Mount>>,
    shutdown: CancellationToken,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("webhook listener: {e}");
            return;
        }
    };
    if let Ok(a) = listener.local_addr() {
        tracing::info!("webhook listener on http://{a}/hooks/<id>");
    }
    let app = Router::new().fallback(handle).with_state(App {
        hooks,
        body_timeout: limits.body_timeout,
        mount,
    });
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let conns = TaskTracker::new();
    loop {
        // Take a slot first: past the limit, connections wait in the
        // kernel's backlog instead of holding a descriptor here.
        let slot = tokio::select! {
            _ = shutdown.cancelled() => break,
            s = slots.clone().acquire_owned() => match s {
                Ok(s) => s,
                Err(_) => break,
            },
        };
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = listener.accept() => match a {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!("webhook listener: accept failed: {e}; retrying shortly");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let service = TowerToHyperService::new(app.clone());
        let stop = shutdown.clone();
        conns.spawn(async move {
            let _slot = slot;
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .keep_alive(true);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn).await;
                }
            }
        });
    }
    conns.close();
    conns.wait().await;
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, json_body(&json!({ "error": message.into() }))).into_response()
}

fn json_body(v: &Value) -> ([(axum::http::HeaderName, HeaderValue); 1], String) {
    (
        [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        v.to_string(),
    )
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

async fn handle(State(app): State<App>, req: Request) -> Response {
    // `/` and `/api/…` are the monitor's when it is on (docs/monitor.md).
    if let Some(mount) = app.mount.as_ref().filter(|m| m.serves(req.uri().path())) {
        return mount.handle(req).await;
    }
    let (parts, body) = req.into_parts();
    let path = parts.uri.path();
    let Some(id) = path
        .strip_prefix("/hooks/")
        .filter(|id| !id.is_empty() && !id.contains('/'))
    else {
        return error(
            StatusCode::NOT_FOUND,
            "not found: webhook endpoints are POST /hooks/<id>",
        );
    };
    if parts.method != Method::POST {
        let mut r = error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method {} not allowed: deliveries are POST", parts.method),
        );
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("POST"));
        return r;
    }
    let Some(ep) = app.hooks.get(id) else {
        tracing::debug!("webhook delivery to unknown endpoint {path}");
        return error(StatusCode::NOT_FOUND, "no such webhook endpoint");
    };
    let max = app.hooks.max_body;
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body larger than {max} bytes"),
        )
    };
    if header(&parts.headers, CONTENT_LENGTH.as_str())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .is_some_and(|n| n > max as u64)
    {
        discard(Body::new(body)).await;
        return too_large();
    }
    // With a secret, refuse what can be refused before reading the body.
    let signature = header(&parts.headers, SIGNATURE_HEADER);
    if let Some(secret) = &ep.secret {
        let refused = match (signature, header(&parts.headers, AUTHORIZATION.as_str())) {
            (Some(_), _) => None,
            (None, Some(auth)) if verify::bearer(secret, auth) => None,
            (None, Some(_)) => Some("wrong credentials in Authorization"),
            (None, None) => Some(
                "this endpoint needs X-Hub-Signature-256 (HMAC-SHA256 of the body) or Authorization: Bearer <secret>",
            ),
        };
        if let Some(why) = refused {
            tracing::warn!("webhook delivery to {path} refused: {why}");
            return error(StatusCode::UNAUTHORIZED, why);
        }
    }
    let read = tokio::time::timeout(app.body_timeout, read_limited(Body::new(body), max));
    let Ok(read) = read.await else {
        return error(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the body did not arrive within {} s",
                app.body_timeout.as_secs_f64()
            ),
        );
    };
    let body = match read {
        Ok(b) => b,
        Err(None) => return too_large(),
        Err(Some(e)) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("could not read the body: {e}"),
            )
        }
    };
    if let (Some(secret), Some(sig)) = (&ep.secret, signature) {
        if !verify::github_signature(secret, &body, sig) {
            tracing::warn!("webhook delivery to {path} refused: bad signature");
            return error(
                StatusCode::UNAUTHORIZED,
                "X-Hub-Signature-256 does not match the body",
            );
        }
    }
    let payload = match payload(&parts.headers, &body) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let recorded = recorded_headers(&parts.headers);
    let delivery = DELIVERY_HEADERS
        .iter()
        .find_map(|h| header(&parts.headers, h))
        .map(str::trim)
        .filter(|d| !d.is_empty() && d.len() <= MAX_DELIVERY_ID)
        .map(str::to_string);
    let line = format!("metro://webhook/{}", ep.id);
    let mut extra = Map::new();
    extra.insert("lineName".into(), Value::String(ep.label.clone()));
    let event = Event {
        station: "webhook".into(),
        kind: "inbound".into(),
        line: line.clone(),
        from: line.clone(),
        to: line,
        text: Some(summary(&ep.id, &recorded, &payload)),
        message_id: delivery.clone(),
        payload: Some(payload),
        headers: Some(recorded),
        extra,
        ..Event::default()
    };
    store(app, ep.id, delivery, event).await
}

/// A body refused as too large is still read (and thrown away) up to this
/// much, for at most [`DISCARD_TIME`]: a sender that writes its whole body
/// before reading the answer then sees the 413 instead of a reset.
const DISCARD_BYTES: usize = 16 << 20;
const DISCARD_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// The body, or `Err(None)` when it is larger than `max` (then drained, see
/// [`discard`]), or `Err(Some(e))` when it could not be read.
async fn read_limited(mut body: Body, max: usize) -> Result<bytes::Bytes, Option<axum::Error>> {
    use http_body_util::BodyExt;
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(Some)?;
        if let Some(data) = frame.data_ref() {
            if buf.len() + data.len() > max {
                discard(body).await;
                return Err(None);
            }
            buf.extend_from_slice(data);
        }
    }
    Ok(buf.freeze())
}

/// Reads and drops what is left of a refused body (bounded in bytes and time).
async fn discard(mut body: Body) {
    use http_body_util::BodyExt;
    let drain = async {
        let mut seen = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            seen += frame.data_ref().map_or(0, |d| d.len());
            if seen > DISCARD_BYTES {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(DISCARD_TIME, drain).await;
}

fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json" || essence == "text/json" || essence.ends_with("+json")
}

/// The JSON body under a JSON content type, else the body as a string.
#[allow(clippy::result_large_err)]
fn payload(headers: &HeaderMap, body: &[u8]) -> Result<Value, Response> {
    if header(headers, CONTENT_TYPE.as_str()).is_some_and(is_json) {
        return serde_json::from_slice(body).map_err(|e| {
            error(
                StatusCode::BAD_REQUEST,
                format!("body is not valid JSON: {e}"),
            )
        });
    }
    match std::str::from_utf8(body) {
        Ok(s) => Ok(Value::String(s.to_string())),
        Err(_) => Err(error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "body is neither JSON nor UTF-8 text",
        )),
    }
}

fn recorded_headers(headers: &HeaderMap) -> Map<String, Value> {
    RECORDED_HEADERS
        .iter()
        .filter_map(|h| header(headers, h).map(|v| (h.to_string(), Value::String(v.into()))))
        .collect()
}

/// A one-line summary: GitHub's `<event>[.<action>] <repo> by <actor>`,
/// else `<event type or "webhook"> POST /hooks/<id>`.
fn summary(id: &str, headers: &Map<String, Value>, payload: &Value) -> String {
    let h = |name: &str| headers.get(name).and_then(Value::as_str);
    if let Some(event) = h("x-github-event") {
        let mut text = event.to_string();
        if let Some(action) = payload.get("action").and_then(Value::as_str) {
            text.push('.');
            text.push_str(action);
        }
        if let Some(repo) = payload
            .pointer("/repository/full_name")
            .and_then(Value::as_str)
        {
            text.push(' ');
            text.push_str(repo);
        }
        if let Some(actor) = payload.pointer("/sender/login").and_then(Value::as_str) {
            text.push_str(" by ");
            text.push_str(actor);
        }
        return text;
    }
    let kind = EVENT_TYPE_HEADERS
        .iter()
        .find_map(|n| h(n))
        .unwrap_or("webhook");
    format!("{kind} POST {}", super::endpoint_path(id))
}

/// Runs the delivery through the shared inbound pipeline
/// ([`crate::station::ingest`]: a delivery id already stored for the
/// endpoint is not stored again; one append, no retry: the sender retries);
/// answers 202 once it is durable.
async fn store(app: App, endpoint: String, delivery: Option<String>, event: Event) -> Response {
    let hooks = app.hooks.clone();
    let task = tokio::spawn(async move {
        let a = Arrival {
            event,
            key: delivery.map(|d| super::delivery_key(&endpoint, &d)),
            sender: None,
            offer: false,
            platform: (),
        };
        // Not stopped from outside: one append decides it.
        ingest(&hooks, a, Persist::Once, &CancellationToken::new()).await
    });
    match task.await {
        Ok(Outcome::Stored(id)) => {
            (StatusCode::ACCEPTED, json_body(&json!({ "id": id }))).into_response()
        }
        Ok(Outcome::Duplicate(id)) => (
            StatusCode::ACCEPTED,
            json_body(&json!({ "id": id, "duplicate": true })),
        )
            .into_response(),
        Ok(Outcome::NotStored(AppendError::ShuttingDown)) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "metrod is shutting down; nothing was stored, try again later",
        ),
        Ok(Outcome::NotStored(AppendError::Io(why))) => {
            tracing::error!("webhook delivery not stored: {why}");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the event was not stored: {why}; nothing was written, try again"),
            )
        }
        // The webhook station screens nothing and has no allowlist.
        Ok(Outcome::Screened | Outcome::Blocked) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the delivery was not stored",
        ),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the delivery failed: {e}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        assert!(is_json("application/json"));
        assert!(is_json("Application/JSON; charset=utf-8"));
        assert!(is_json("application/vnd.github+json"));
        assert!(!is_json("application/x-www-form-urlencoded"));
        assert!(!is_json("text/plain"));
    }

    #[test]
    fn summaries() {
        let gh = json!({"action": "opened", "repository": {"full_name": "octo/hello"}, "sender": {"login": "ann"}});
        let mut h = Map::new();
        h.insert("x-github-event".into(), json!("pull_request"));
        assert_eq!(
            summary("x", &h, &gh),
            "pull_request.opened octo/hello by ann"
        );
        assert_eq!(summary("x", &h, &json!("payload=1")), "pull_request");
        let mut h = Map::new();
        assert_eq!(summary("ab", &h, &json!({})), "webhook POST /hooks/ab");
        h.insert("x-event-type".into(), json!("ticket.created"));
        assert_eq!(
            summary("ab", &h, &json!({})),
            "ticket.created POST /hooks/ab"
        );
    }
}
