//! Long polling: `getUpdates` → events, confirmed only once durable.
//!
//! The loop asks Telegram for updates after the last confirmed one
//! (`offset`), turns each into at most one event ([`super::map::map_update`]),
//! runs it through the shared pipeline ([`crate::station::ingest`]: dedupe,
//! allowlist, append until durable), and only then moves `offset` past the
//! update. The next `getUpdates` carries that offset and is what tells
//! Telegram the update was received: if metrod dies before, Telegram sends
//! the update again, and its `updateId` (kept in the event, the dedupe key
//! in the station's core for the last [`super::RECENT_UPDATES`] updates,
//! seeded from the end of the log at startup) keeps it from being stored
//! twice.
//!
//! Every failure — network, 5xx, 401, 409 from another poller, a log that
//! cannot be written — is retried forever with a growing pause (1 s … 60
//! s), and the station's status says what is wrong. A panic in the poller
//! is caught and the poller restarted.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use teloxide::payloads::{GetUpdates, GetUpdatesSetters};
use teloxide::requests::Request;
use teloxide::types::AllowedUpdate;
use teloxide::{ApiError, RequestError};
use tokio_util::sync::CancellationToken;

use super::inlet::arrival;
use super::map::map_update;
use super::update::{read, Read, Update};
use super::{bump, lean, Telegram};
use crate::station::ingest::{ingest, Outcome, Persist};
use crate::stations::{pause, Backoff};

/// The updates asked for: messages, edits, reactions, button presses.
pub const ALLOWED: [AllowedUpdate; 4] = [
    AllowedUpdate::Message,
    AllowedUpdate::EditedMessage,
    AllowedUpdate::MessageReaction,
    AllowedUpdate::CallbackQuery,
];

/// Runs the poller until shutdown, restarting it if it panics.
pub async fn run(tg: Arc<Telegram>, shutdown: CancellationToken) {
    loop {
        let task = tokio::spawn(poll(tg.clone(), shutdown.clone()));
        match task.await {
            Ok(()) => return,
            Err(e) if e.is_panic() => {
                tracing::error!("the telegram poller panicked: {e}; restarting it in 5 s");
                tg.set_status("down: the poller crashed (a bug: see metrod's log); restarting");
                if !pause(Duration::from_secs(5), &shutdown).await {
                    return;
                }
            }
            Err(_) => return,
        }
    }
}

/// What is wrong, in words, for the station's status.
pub fn describe(tg: &Telegram, method: &str, e: &RequestError) -> String {
    match e {
        RequestError::Api(ApiError::TerminatedByOtherGetUpdates) => format!(
            "down: another program is polling this bot (409 Conflict from {method}); \
             only one may poll a token: stop the other one (another metrod, an old bridge)"
        ),
        RequestError::Api(ApiError::CantGetUpdates) => format!(
            "down: this bot has a webhook set, so it cannot be polled (409 Conflict from {method}); \
             remove it with the Bot API's deleteWebhook"
        ),
        RequestError::Api(ApiError::Unknown(text)) if text.starts_with("Conflict") => format!(
            "down: another program is polling this bot (409 {text}); only one may poll a token"
        ),
        RequestError::Api(ApiError::InvalidToken) => {
            "down: Telegram refused the bot token (401 Unauthorized): check METRO_TELEGRAM_TOKEN or \
             the [telegram] token in the config file"
                .to_string()
        }
        RequestError::Network(err) => {
            format!("down: cannot reach {}: {err}", tg.api_url())
        }
        RequestError::RetryAfter(s) => format!(
            "down: Telegram asks to wait {} s (429 flood control on {method})",
            s.seconds()
        ),
        RequestError::InvalidJson { .. } => format!(
            "down: {} answered {method} with something that is not the Bot API (is METRO_TELEGRAM_API_URL right?)",
            tg.api_url()
        ),
        other => format!("down: Telegram answered {method} with an error: {other}"),
    }
}

async fn poll(tg: Arc<Telegram>, shutdown: CancellationToken) {
    let mut backoff = Backoff::new();
    // Who this bot is: proves the token and the URL before polling.
    loop {
        let me = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = super::me::get_me(&tg.bot) => r,
        };
        match me {
            Ok(me) => {
                tg.set_bot_name(me.username.as_ref().map(|u| format!("@{u}")));
                tracing::info!(
                    "telegram: bot {} (id {}) on {}",
                    me.username
                        .as_deref()
                        .map(|u| format!("@{u}"))
                        .unwrap_or_else(|| me.first_name.clone()),
                    me.id,
                    tg.api_url()
                );
                backoff.reset();
                tg.set_status("ok");
                break;
            }
            Err(e) => {
                let why = describe(&tg, "getMe", &e);
                if !tg.core.retry_later(why, &mut backoff, &shutdown).await {
                    return;
                }
            }
        }
    }
    let mut offset: Option<i32> = None;
    loop {
        let mut payload = GetUpdates::new()
            .timeout(tg.poll_timeout)
            .allowed_updates(ALLOWED);
        if let Some(o) = offset {
            payload = payload.offset(o);
        }
        // Read as a list of values first: one unreadable update must not
        // cost the batch (see super::update).
        let req = lean::json::<_, Vec<Value>>(&tg.bot, payload);
        let got = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = req.send() => r,
        };
        let updates = match got {
            Ok(u) => u,
            Err(e) => {
                let why = describe(&tg, "getUpdates", &e);
                if !tg.core.retry_later(why, &mut backoff, &shutdown).await {
                    return;
                }
                continue;
            }
        };
        backoff.reset();
        tg.set_status("ok");
        let asked = offset;
        let answered = updates.len();
        for v in updates {
            let id = match read(v) {
                Read::Update(u) => {
                    let id = u.update_id;
                    if !handle(&tg, &u, &shutdown).await {
                        return;
                    }
                    id
                }
                Read::Unreadable { update_id, why } => {
                    bump(&tg.core.counters.skipped);
                    let which =
                        update_id.map_or("with no update_id".to_string(), |i| i.to_string());
                    tracing::warn!(
                        "telegram: update {which} is not readable ({why}); skipped (docs/broker.md, \
                         \"Limits and threat model\": what an update must contain)"
                    );
                    match update_id {
                        Some(id) => id,
                        None => continue,
                    }
                }
            };
            // Durable (or deliberately not stored): confirm it with the
            // next getUpdates.
            let next = i32::try_from(id).ok().map(|i| i.saturating_add(1));
            offset = offset.max(next);
        }
        if answered > 0 && offset == asked {
            // Nothing in the answer moved the offset (no usable
            // update_id): asking again at once would get the same answer.
            let why = format!(
                "down: {} answered getUpdates with {answered} update(s) without a usable \
                 update_id; asking again later",
                tg.api_url()
            );
            if !tg.core.retry_later(why, &mut backoff, &shutdown).await {
                return;
            }
        }
    }
}

/// Stores one update through the shared pipeline
/// ([`crate::station::ingest`]); false only at shutdown (the update stays
/// unconfirmed and comes again).
async fn handle(tg: &Arc<Telegram>, update: &Update, shutdown: &CancellationToken) -> bool {
    let update_id = update.update_id;
    let Some(inbound) = map_update(update, &tg.ids) else {
        bump(&tg.core.counters.skipped);
        tracing::debug!("telegram: update {update_id} carries nothing to store");
        return true;
    };
    let a = arrival(update_id, inbound);
    !matches!(
        ingest(tg, a, Persist::UntilStored, shutdown).await,
        Outcome::NotStored(_)
    )
}
