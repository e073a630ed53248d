//! `idempotencyKey` of `publish`, `send`, `edit` and `react`: a request
//! whose key its identity already used within the dedupe window is
//! answered with the first event (`duplicate: true`) and does nothing.
//! The window itself is [`crate::store::dedupe`].

use std::future::Future;
use std::sync::Arc;

use serde_json::Value;

use super::OpResult;
use crate::broker::Broker;
use crate::fields;
use crate::proto::WireError;
use crate::store::dedupe::{self, Begin, First};

/// Checks a client's key: 1 to [`dedupe::MAX_KEY`] bytes.
pub fn check_key(key: Option<&str>) -> Result<(), WireError> {
    match key {
        Some(k) if k.is_empty() || k.len() > dedupe::MAX_KEY => {
            Err(WireError::bad_request(format!(
                "field `idempotencyKey` must be 1 to {} bytes, not {}",
                dedupe::MAX_KEY,
                k.len()
            )))
        }
        _ => Ok(()),
    }
}

/// The identity a key belongs to: the op's `from` as its event will
/// carry it (a bad `from` fails the op itself).
pub fn identity(from: Option<&str>) -> String {
    super::outbound::actor(from)
        .ok()
        .flatten()
        .unwrap_or_else(|| crate::proto::ANONYMOUS.to_string())
}

/// Runs `op` once per (`identity`, `key`) within the window: a duplicate
/// gets the first event's `id`, `messageId` and `offset` with
/// `duplicate: true`; a concurrent one waits for the first to end. Without
/// a key, `op` simply runs.
/// `op` comes boxed: this future is held for every request in flight, and
/// an op's future can be large.
pub async fn once(
    broker: Arc<Broker>,
    identity: String,
    key: Option<String>,
    op: impl Future<Output = OpResult>,
) -> OpResult {
    let Some(key) = key else { return op.await };
    check_key(Some(&key))?;
    let ticket = loop {
        match broker.dedupe.begin(&identity, &key) {
            Begin::Duplicate(first) => return Ok(duplicate(first)),
            // Woken when the other request ends (its ticket is dropped).
            Begin::Wait(mut rx) => while rx.changed().await.is_ok() {},
            Begin::Mine(t) => break t,
        }
    };
    let result = op.await;
    // A failed request drops its ticket: forgotten, a retry may succeed.
    if let Ok(fields) = &result {
        if let (Some(id), Some(offset)) = (
            fields.get("id").and_then(Value::as_str),
            fields.get("offset").and_then(Value::as_u64),
        ) {
            ticket.done(First {
                id: id.to_string(),
                message_id: fields
                    .get("messageId")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                offset,
                at_ms: dedupe::now_ms(),
            });
        }
    }
    result
}

fn duplicate(first: First) -> serde_json::Map<String, Value> {
    let mut out = fields! { "id" => first.id, "offset" => first.offset };
    if let Some(m) = first.message_id {
        out.insert("messageId".into(), Value::String(m));
    }
    out.insert("duplicate".into(), Value::Bool(true));
    out
}
