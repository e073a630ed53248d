//! `GET /api/state`: what the protocol's `claims`, `lines`, `stations` and
//! `stats` ops say, plus a page of the newest events, as one JSON document.
//!
//! Events come newest first as `{"offset": <end offset>, "event": {…}}`;
//! `?limit=` (1 to [`MAX_LIMIT`], default [`DEFAULT_LIMIT`]) and
//! `?before=<offset>` (an entry boundary, default the end of the log) page
//! back; `next` is the `before` of the following page, `null` at the oldest
//! kept event.

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Map, Value};

use super::{error, json_response, param, Query};
use crate::broker::Broker;
use crate::server::ops::{claims, info};
use crate::station::Registry;
use crate::store::log::Meta;

/// Events in one answer at most.
pub const MAX_LIMIT: usize = 500;
/// Events in one answer unless `?limit=` says.
pub const DEFAULT_LIMIT: usize = 50;

pub async fn state(broker: &Arc<Broker>, stations: &Registry, q: &Query) -> Response {
    let limit = match param(q, "limit") {
        None => DEFAULT_LIMIT,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("limit must be between 1 and {MAX_LIMIT}"),
                )
            }
        },
    };
    let end = broker.log.end();
    let before = match param(q, "before") {
        None => end,
        Some(b) => match b.parse::<u64>() {
            Ok(n) if n <= end => n,
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("before must be an offset from 0 to the end of the log ({end})"),
                )
            }
        },
    };
    if before >= broker.log.oldest() && !broker.log.is_boundary(before).unwrap_or(false) {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "before {before} is not at an entry boundary (use an event's offset or `next`)"
            ),
        );
    }
    let (events, next) = match newest(broker, before, limit).await {
        Ok(page) => page,
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("could not read the log: {e}"),
            )
        }
    };
    let mut doc = Map::new();
    doc.insert("version".into(), env!("CARGO_PKG_VERSION").into());
    let mut stats = info::stats(broker, stations).unwrap_or_default();
    for key in [
        "uptimeMs",
        "logBytes",
        "oldestOffset",
        "connections",
        "subscriptions",
        "cursors",
    ] {
        if let Some(v) = stats.remove(key) {
            doc.insert(key.into(), v);
        }
    }
    // The end the events were read from (stats reads it again, later): the
    // page follows `/api/tail?since=<logBytes>` and misses nothing.
    doc.insert("logBytes".into(), end.into());
    if let Ok(mut c) = claims::list(broker) {
        doc.insert("claims".into(), c.remove("claims").unwrap_or_default());
    }
    if let Ok(mut l) = info::lines(broker) {
        doc.insert("lines".into(), l.remove("lines").unwrap_or_default());
    }
    if let Ok(mut s) = info::stations(stations) {
        doc.insert("stations".into(), s.remove("stations").unwrap_or_default());
    }
    doc.insert("events".into(), Value::Array(events));
    doc.insert("next".into(), next.map_or(Value::Null, Value::from));
    json_response(StatusCode::OK, &Value::Object(doc))
}

/// Up to `limit` events ending at or before `before`, newest first, and the
/// `before` of the page after them (`None` when nothing older is kept).
async fn newest(
    broker: &Broker,
    mut before: u64,
    limit: usize,
) -> std::io::Result<(Vec<Value>, Option<u64>)> {
    let mut out = Vec::new();
    let mut chunk = 64 << 10;
    while before > 0 && out.len() < limit {
        let (lines, next) = broker.log.read_back(before, chunk).await?;
        for (end, json) in lines {
            // Where the following page starts: just before this entry.
            before = end.saturating_sub(json.len() as u64 + 1);
            if !Meta::parse(&json).valid {
                continue;
            }
            let Ok(event) = serde_json::from_slice::<Value>(&json) else {
                continue;
            };
            out.push(serde_json::json!({ "offset": end, "event": event }));
            if out.len() >= limit {
                break;
            }
        }
        if out.len() < limit {
            before = next;
        }
        chunk = (chunk * 2).min(4 << 20);
    }
    let more = before > broker.log.oldest();
    Ok((out, more.then_some(before)))
}
