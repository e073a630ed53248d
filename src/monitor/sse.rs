//! `GET /api/tail`: the log as Server-Sent Events, through the broker's own
//! subscription machinery.
//!
//! A stream is a subscription like any other — same predicate, same task
//! ([`subscription::run`]), same byte-bounded [`Outbox`] — with `ack:
//! "none"` and no cursor name, so it never moves a cursor and never claims.
//! It is listed by `stats` (and `/api/state`) as `monitor-<n>`. Its frames
//! are rewritten as SSE: `id: <offset>` and `data: <event JSON>` per event,
//! `event: gap` when retention deleted what it was about to read, and a
//! `: keep-alive` comment every [`KEEP_ALIVE`] so a closed browser is
//! noticed.
//!
//! The filters are `metroctl tail`'s: `as`, `mode`, `chat`, `station`,
//! `kind`, `includeWebhooks`, `since` (`tail` by default; `start`, an
//! offset, or `cursor` to read from a stored cursor without moving it). A
//! `Last-Event-ID` header (a reconnecting EventSource) wins over `since`.
//!
//! Memory: the subscription waits while its outbox holds [`OUT_BUDGET`]
//! bytes; the stream pulls from the outbox only when hyper asks for more,
//! which it does only while its write buffer (about 400 KiB) has room. So a
//! browser that stops reading costs at most about 1 MiB, and at most
//! [`MAX_STREAMS`] streams are open at once.
//!
//! [`OUT_BUDGET`]: crate::broker::outbox::OUT_BUDGET

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{error, param, Query};
use crate::broker::outbox::{Closer, Outbox, Outgoing};
use crate::broker::subscription::{self, SubState};
use crate::broker::Broker;
use crate::proto::{AckMode, Mode, Since, Subscribe};
use crate::server::ops::subscribe::{plan, DEFAULT_ACK_WAIT_MS};

/// Streams open at once, over all browsers.
pub const MAX_STREAMS: usize = 32;

/// A comment line this often, so a browser that went away is noticed.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

static OPEN: AtomicUsize = AtomicUsize::new(0);

/// The stream's subscription, stopped and forgotten when the response is
/// dropped (browser gone, metrod stopping).
struct Running {
    broker: Arc<Broker>,
    st: Arc<SubState>,
    cancel: CancellationToken,
    closer: Closer,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.cancel.cancel();
        // A task waiting for outbox room gives up at once.
        self.closer.close();
        self.broker.unregister(self.st.conn, &self.st.id);
        OPEN.fetch_sub(1, Ordering::Relaxed);
    }
}

fn bad(message: impl Into<String>) -> Response {
    error(StatusCode::BAD_REQUEST, message)
}

/// The subscription a query asks for (`ack: "none"`, following).
fn request(q: &Query, headers: &HeaderMap) -> Result<Subscribe, String> {
    let text = |name: &str| param(q, name).filter(|v| !v.is_empty()).map(String::from);
    let mode = match text("mode") {
        None => None,
        Some(m) => Some(
            serde_json::from_value::<Mode>(Value::String(m.clone())).map_err(|_| {
                format!("mode {m:?}: one of all, unclaimed, mine-only, mine-or-unclaimed")
            })?,
        ),
    };
    let include_webhooks = match param(q, "includeWebhooks") {
        None => None,
        Some("true" | "1" | "") => Some(true),
        Some("false" | "0") => Some(false),
        Some(other) => return Err(format!("includeWebhooks {other:?}: true or false")),
    };
    let last_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty());
    let since = match (last_id, text("since")) {
        (Some(id), _) => Since::Offset(
            id.parse::<u64>()
                .map_err(|_| format!("Last-Event-ID {id:?} is not an offset from this stream"))?,
        ),
        (None, Some(s)) => {
            serde_json::from_value::<Since>(Value::String(s)).map_err(|e| format!("since: {e}"))?
        }
        (None, None) => Since::Tail,
    };
    Ok(Subscribe {
        as_: text("as"),
        mode,
        include_webhooks,
        chat: text("chat"),
        station: text("station"),
        kind: text("kind"),
        since: Some(since),
        follow: Some(true),
        ack: Some(AckMode::None),
        ..Subscribe::default()
    })
}

pub fn tail(
    broker: Arc<Broker>,
    q: &Query,
    headers: &HeaderMap,
    shutdown: CancellationToken,
) -> Response {
    let s = match request(q, headers) {
        Ok(s) => s,
        Err(why) => return bad(why),
    };
    let plan = match plan(&broker, &s) {
        Ok(p) => p,
        Err(e) => return bad(e.message),
    };
    if OPEN.fetch_add(1, Ordering::Relaxed) >= MAX_STREAMS {
        OPEN.fetch_sub(1, Ordering::Relaxed);
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{MAX_STREAMS} monitor streams are open already; close one"),
        );
    }
    let conn = broker.next_connection_id();
    let st = Arc::new(SubState::new(
        conn,
        format!("monitor-{conn}"),
        plan.filter,
        AckMode::None,
        None,
        true,
        None,
        broker.opts.max_unacked,
        Duration::from_millis(DEFAULT_ACK_WAIT_MS),
        None,
        broker.cursors.clone(),
        plan.start,
    ));
    let (out, rx) = Outbox::new();
    let cancel = shutdown.child_token();
    let running = Running {
        broker: broker.clone(),
        st: st.clone(),
        cancel: cancel.clone(),
        closer: out.closer(),
    };
    broker.register(st.clone());
    tokio::spawn(subscription::run(
        broker,
        st.clone(),
        out,
        plan.start,
        cancel.clone(),
    ));
    let mut ticks = tokio::time::interval(KEEP_ALIVE);
    ticks.reset();
    let state = Stream {
        rx,
        cancel,
        ticks,
        prefix: frame_prefix(&st.id),
        _running: running,
        first: true,
    };
    let body = futures_util::stream::unfold(state, |mut s| async move {
        let chunk = s.next().await?;
        Some((Ok::<_, std::convert::Infallible>(chunk), s))
    });
    let mut resp = (StatusCode::OK, Body::from_stream(body)).into_response();
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}

struct Stream {
    rx: mpsc::UnboundedReceiver<Outgoing>,
    cancel: CancellationToken,
    ticks: tokio::time::Interval,
    /// `{"sub":"monitor-<n>","offset":`, how this stream's event frames start.
    prefix: Vec<u8>,
    _running: Running,
    first: bool,
}

impl Stream {
    /// The next piece of the body; `None` ends the response.
    async fn next(&mut self) -> Option<Bytes> {
        if self.first {
            self.first = false;
            // Sent at once, so the browser sees the stream open; a
            // reconnect waits this long.
            return Some(Bytes::from_static(b"retry: 2000\n\n"));
        }
        loop {
            tokio::select! {
                _ = self.cancel.cancelled() => return None,
                m = self.rx.recv() => {
                    // `None`: the subscription stopped (log unreadable).
                    let m = m?;
                    let sse = to_sse(&self.prefix, &m.bytes);
                    // The permit goes with `m`: the outbox has room again.
                    drop(m);
                    if !sse.is_empty() {
                        return Some(Bytes::from(sse));
                    }
                }
                _ = self.ticks.tick() => return Some(Bytes::from_static(b": keep-alive\n\n")),
            }
        }
    }
}

fn frame_prefix(sub: &str) -> Vec<u8> {
    let mut p = b"{\"sub\":".to_vec();
    p.extend_from_slice(&serde_json::to_vec(sub).unwrap_or_default());
    p.extend_from_slice(b",\"offset\":");
    p
}

/// Rewrites subscription frames (one per line) as SSE messages.
fn to_sse(prefix: &[u8], frames: &[u8]) -> Vec<u8> {
    const EVENT: &[u8] = b",\"event\":";
    let mut out = Vec::with_capacity(frames.len() + 64);
    for frame in frames.split(|b| *b == b'\n').filter(|f| !f.is_empty()) {
        // `{"sub":…,"offset":<n>,"event":<event>}`: the event bytes as stored.
        if let Some(rest) = frame.strip_prefix(prefix) {
            let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
            if let (Some(event), true) = (
                rest[digits..]
                    .strip_prefix(EVENT)
                    .and_then(|e| e.strip_suffix(b"}")),
                digits > 0,
            ) {
                out.extend_from_slice(b"id: ");
                out.extend_from_slice(&rest[..digits]);
                out.extend_from_slice(b"\ndata: ");
                out.extend_from_slice(event);
                out.extend_from_slice(b"\n\n");
                continue;
            }
        }
        // `{"sub":…,"gap":true,"from":a,"missed":n,"offset":b}`.
        let Ok(v) = serde_json::from_slice::<Value>(frame) else {
            continue;
        };
        if v["gap"] == Value::Bool(true) {
            if let Some(offset) = v["offset"].as_u64() {
                let data = serde_json::json!({
                    "from": v["from"],
                    "missed": v["missed"],
                    "offset": offset,
                });
                out.extend_from_slice(
                    format!("event: gap\nid: {offset}\ndata: {data}\n\n").as_bytes(),
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_become_sse() {
        let prefix = frame_prefix("monitor-3");
        let mut frames = Vec::new();
        crate::proto::event_frame_head(&mut frames, b"\"monitor-3\"", 120);
        frames.extend_from_slice(br#"{"id":"e1","text":"hi }"}"#);
        frames.extend_from_slice(crate::proto::EVENT_FRAME_TAIL);
        frames.extend_from_slice(&crate::proto::gap_frame(b"\"monitor-3\"", 120, 500));
        let sse = String::from_utf8(to_sse(&prefix, &frames)).unwrap();
        assert_eq!(
            sse,
            "id: 120\ndata: {\"id\":\"e1\",\"text\":\"hi }\"}\n\n\
             event: gap\nid: 500\ndata: {\"from\":120,\"missed\":380,\"offset\":500}\n\n"
        );
    }
}
