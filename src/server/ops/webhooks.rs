//! `webhookAdd`, `webhookList`, `webhookRemove`: the webhook station's
//! endpoints (stored in `webhooks.json` before the answer).

use std::sync::Arc;

use super::OpResult;
use crate::broker::Broker;
use crate::fields;
use crate::proto::{WebhookAdd, WebhookRemove, WireError};
use crate::stations::webhook::Webhooks;

fn station(broker: &Broker) -> Result<&Arc<Webhooks>, WireError> {
    broker
        .webhooks
        .as_ref()
        .ok_or_else(|| WireError::unavailable("the webhook station is not running in this metrod"))
}

/// Answer: `id`, `path` (`/hooks/<id>`), `url` (`null` while the listener
/// is not running), `label`.
pub async fn add(broker: Arc<Broker>, a: WebhookAdd) -> OpResult {
    station(&broker)?.add(&a.label, a.secret.as_deref()).await
}

/// Answer: `endpoints`, each `{id, label, path, url, hasSecret, createdAt}`.
pub fn list(broker: &Broker) -> OpResult {
    Ok(fields! { "endpoints" => station(broker)?.list() })
}

/// Answer: `id`, `removed` (false when there was no such endpoint).
pub async fn remove(broker: Arc<Broker>, r: WebhookRemove) -> OpResult {
    let removed = station(&broker)?.remove(&r.id).await?;
    Ok(fields! { "id" => r.id, "removed" => removed })
}
