//! Telegram's side of access control ([`crate::station::access`] holds
//! the lists): what happens to an update whose sender is not admitted.
//!
//! It is not appended to the log, so no agent ever sees it, but it does
//! not vanish either: it is counted (`stats` → `stations.telegram.blocked`)
//! and logged at warn level with the sender's id and name (never the text).
//! A stranger (not denied) who writes to the bot in a private chat gets
//! one reply with a pairing code — one per code lifetime, however often
//! they write. A blocked button press is answered so the client stops
//! spinning; nothing else is ever sent to a blocked sender.

use std::sync::Arc;

use teloxide::payloads::AnswerCallbackQuerySetters;
use teloxide::requests::Requester;

use super::map::Inbound;
use super::{bump, Telegram};
use crate::station::access::{pairing_text, Gate};

/// Counts, logs and (for a stranger in private) answers a blocked update.
pub async fn blocked(tg: &Arc<Telegram>, inbound: &Inbound, gate: Gate) {
    bump(&tg.counters.blocked);
    let ev = &inbound.event;
    if let Some(cb) = inbound.callback.clone() {
        let tg = tg.clone();
        tokio::spawn(async move {
            let r = tg.bot.answer_callback_query(cb).text("Not allowed.").await;
            if let Err(e) = r {
                tracing::debug!(
                    "telegram: answerCallbackQuery: {}",
                    tg.redact(&e.to_string())
                );
            }
        });
    }
    let who = inbound
        .sender
        .as_ref()
        .map(|s| (s.id.as_str(), s.name.as_str()));
    let offer = inbound.private && inbound.message;
    let Some(code) = tg
        .access
        .blocked(gate, &ev.kind, who, &ev.line, offer)
        .await
    else {
        return;
    };
    let Some((chat, _)) = super::parse_line(&ev.line) else {
        return;
    };
    bump(&tg.counters.pairing_replies);
    let tg = tg.clone();
    tokio::spawn(async move {
        if let Err(e) = super::outbound::notice(&tg, chat, &pairing_text(&code)).await {
            tracing::warn!("telegram: the pairing code could not be sent: {e}");
        }
    });
}
