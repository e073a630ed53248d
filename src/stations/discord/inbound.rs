//! Gateway dispatches, stored one at a time in arrival order: each is
//! mapped ([`super::map`]), checked and appended; a button press is
//! acknowledged once stored so the client does not show "interaction
//! failed".
//! - Never stored: the bot's own messages, edits and reactions; messages
//!   from other bots and webhooks unless their id is listed by name in the
//!   allowlist (`*` does not admit bots: agent-to-agent traffic through
//!   Discord is opt-in, and two bots cannot answer each other forever);
//!   senders not admitted (see [`blocked`]).
//! - A message seen again (its key is remembered for the newest
//!   [`super::RECENT_EVENTS`], seeded from the log at startup) is not
//!   stored twice.
//! - A log that cannot be written is retried with a growing pause; the
//!   dispatches wait in the gateway queue meanwhile.
//! - After every READY (a new session: metrod started, or a session that
//!   could not be resumed) the channels metro knows are read back first
//!   ([`super::catch_up`]): Discord does not dispatch again what was said
//!   before.
//!
//! Must not import: `broker`, `server`.

use std::sync::Arc;

use reqwest::Method;
use serde_json::{json, Value};
use serenity::http::Route;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::catch_up::catch_up;
use super::dispatch::Dispatch;
use super::map::{map, Inbound};
use super::rest::Body;
use super::{bump, Discord};
use crate::station::access::{pairing_text, Gate};
use crate::stations::append_retrying;
use crate::stations::ids::Rec;
use crate::store::log::Log;

/// What the gateway thread hands over, in order.
#[derive(Debug)]
pub enum Feed {
    /// A dispatch to store, read ([`super::dispatch`]).
    Dispatch(Box<Dispatch>),
    /// A new session started (READY): what it may have missed is read
    /// back first ([`super::catch_up`]).
    Session,
}

/// Stores what comes from `rx` until shutdown.
pub async fn consume(
    log: &Log,
    dc: &Arc<Discord>,
    mut rx: mpsc::Receiver<Feed>,
    shutdown: &CancellationToken,
) {
    loop {
        let feed = tokio::select! {
            _ = shutdown.cancelled() => return,
            f = rx.recv() => match f {
                Some(f) => f,
                None => return,
            },
        };
        let go_on = match feed {
            Feed::Dispatch(ev) => match map(&ev, dc) {
                Some(inbound) => store(log, dc, inbound, shutdown).await,
                None => {
                    bump(&dc.counters.skipped);
                    true
                }
            },
            Feed::Session => catch_up(log, dc, shutdown).await,
        };
        if !go_on {
            return;
        }
    }
}

/// Stores one dispatch (after the checks); false only at shutdown.
pub(super) async fn store(
    log: &Log,
    dc: &Arc<Discord>,
    inbound: Inbound,
    shutdown: &CancellationToken,
) -> bool {
    if let Some(s) = &inbound.sender {
        if s.id == dc.bot_id() {
            bump(&dc.counters.own);
            return true;
        }
        if s.bot && !dc.access.named(&s.id.to_string()) {
            bump(&dc.counters.bots);
            tracing::debug!(
                "discord: dropped a {} from bot {} ({:?}) on {}: bots must be listed by id",
                inbound.event.kind,
                s.id,
                s.name,
                inbound.event.line
            );
            return true;
        }
    }
    let gate = match &inbound.sender {
        Some(s) => dc.access.gate(&s.id.to_string()),
        None if dc.access.everyone() => Gate::Admitted,
        None => Gate::Unknown,
    };
    if gate != Gate::Admitted {
        blocked(dc, &inbound, gate).await;
        return true;
    }
    if let Some(k) = &inbound.key {
        if dc.seen(k) {
            bump(&dc.counters.duplicates);
            tracing::debug!("discord: {k} is already in the log");
            return true;
        }
    }
    let mut inbound = inbound;
    if inbound.event.extra.contains_key("guildId") {
        if let Some(name) = super::parse_line(&inbound.event.line).and_then(|c| dc.channel_name(c))
        {
            inbound.event.extra.insert("lineName".into(), json!(name));
        }
    }
    let failed = |why: &str, d: std::time::Duration| {
        dc.set_status(format!(
            "down: cannot store a Discord {} in the log ({why}); retrying in {} s",
            inbound.event.kind,
            d.as_secs()
        ))
    };
    let Some(appended) = append_retrying(log, &inbound.event, shutdown, failed).await else {
        return false;
    };
    if let Some(k) = inbound.key {
        dc.remember(k);
    }
    bump(&dc.counters.received);
    if let Some(m) = inbound.record {
        dc.record(Rec {
            id: appended.id.clone(),
            line: inbound.event.line.clone(),
            message_ids: vec![m.to_string()],
        });
    }
    if let Some((id, token)) = inbound.interaction {
        // Stored: now tell Discord the press was received (a deferred
        // update: the message stays as it is).
        let dc = dc.clone();
        tokio::spawn(async move {
            if let Err(e) = respond(&dc, id, &token, json!({"type": 6})).await {
                tracing::warn!("discord: the button press was stored but not acknowledged: {e}");
            }
        });
    }
    true
}

/// Answers interaction `id`.
async fn respond(
    dc: &Discord,
    id: u64,
    token: &str,
    body: Value,
) -> Result<(), crate::proto::WireError> {
    let mut req = dc.req(
        Method::POST,
        Route::InteractionResponse {
            interaction_id: id.into(),
            token,
        },
    );
    req.body = Body::Json(body);
    let mut turn = dc.queue.turn(&format!("interaction {id}")).await;
    dc.call(&mut turn, &req).await.map(|_| ())
}

/// Counts, logs and (for a stranger in a DM) answers a blocked dispatch.
/// Nothing of it is stored.
pub async fn blocked(dc: &Arc<Discord>, inbound: &Inbound, gate: Gate) {
    bump(&dc.counters.blocked);
    let ev = &inbound.event;
    if let Some((id, token)) = inbound.interaction.clone() {
        let dc = dc.clone();
        tokio::spawn(async move {
            let body = json!({"type": 4, "data": {"content": "Not allowed.", "flags": 64}});
            if let Err(e) = respond(&dc, id, &token, body).await {
                tracing::debug!("discord: answering a blocked button press: {e}");
            }
        });
    }
    let id = inbound.sender.as_ref().map(|s| s.id.to_string());
    let who = inbound
        .sender
        .as_ref()
        .zip(id.as_deref())
        .map(|(s, id)| (id, s.name.as_str()));
    let offer = inbound.dm && inbound.message && inbound.sender.as_ref().is_some_and(|s| !s.bot);
    let Some(code) = dc
        .access
        .blocked(gate, &ev.kind, who, &ev.line, offer)
        .await
    else {
        return;
    };
    let Some(channel) = super::parse_line(&ev.line) else {
        return;
    };
    bump(&dc.counters.pairing_replies);
    let dc = dc.clone();
    tokio::spawn(async move {
        if let Err(e) = super::outbound::notice(&dc, channel, &pairing_text(&code)).await {
            tracing::warn!("discord: the pairing code could not be sent: {e}");
        }
    });
}
