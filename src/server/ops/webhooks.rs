//! `webhookAdd`, `webhookList`, `webhookRemove`: the webhook station's
//! endpoints (stored in `webhooks.json` before the answer).

use std::sync::Arc;

use super::OpResult;
use crate::fields;
use crate::proto::{WebhookAdd, WebhookRemove, WireError};
use crate::station::Registry;
use crate::stations::webhook::kind::WebhookStation;
use crate::stations::webhook::Webhooks;

/// The webhook station's endpoints, through the registry.
fn station(stations: &Registry) -> Result<Arc<Webhooks>, WireError> {
    stations
        .get("webhook")
        .and_then(|st| st.any().downcast::<WebhookStation>().ok())
        .map(|w| w.hooks.clone())
        .ok_or_else(|| WireError::unavailable("the webhook station is not running in this metrod"))
}

/// Answer: `id`, `path` (`/hooks/<id>`), `url` (`null` while the listener
/// is not running), `label`.
pub async fn add(stations: Arc<Registry>, a: WebhookAdd) -> OpResult {
    station(&stations)?.add(&a.label, a.secret.as_deref()).await
}

/// Answer: `endpoints`, each `{id, label, path, url, hasSecret, createdAt}`.
pub fn list(stations: &Registry) -> OpResult {
    Ok(fields! { "endpoints" => station(stations)?.list() })
}

/// Answer: `id`, `removed` (false when there was no such endpoint).
pub async fn remove(stations: Arc<Registry>, r: WebhookRemove) -> OpResult {
    let removed = station(&stations)?.remove(&r.id).await?;
    Ok(fields! { "id" => r.id, "removed" => removed })
}
