//! Telegram's side of the inbound pipeline ([`crate::station::ingest`]):
//! an update mapped by [`super::map`] becomes an [`Arrival`] keyed by its
//! `updateId`; once stored its message id is recorded and a button press
//! answered (the spinner stops); a blocked button press is answered "Not
//! allowed."; a stranger's pairing code goes out as a plain message.
//!
//! A blocked update is not appended to the log, so no agent ever sees it,
//! but it does not vanish either: it is counted (`stats` →
//! `stations.telegram.blocked`) and logged at warn level with the sender's
//! id and name (never the text). A stranger (not denied) who writes to the
//! bot in a private chat gets one reply with a pairing code — one per code
//! lifetime, however often they write. Nothing else is ever sent to a
//! blocked sender.
//!
//! Must not import: `broker`, `server`.

use std::sync::Arc;
use std::time::Duration;

use teloxide::payloads::AnswerCallbackQuerySetters;
use teloxide::requests::Requester;
use teloxide::types::CallbackQueryId;

use super::map::Inbound;
use super::{ids, parse_line, update_key, Telegram};
use crate::proto::WireError;
use crate::station::access::Access;
use crate::station::core::StationCore;
use crate::station::ingest::{Arrival, Inlet, Sender};
use crate::store::log::Log;

/// What the station keeps of an update for after the pipeline.
pub struct Pending {
    /// The Telegram message id to record in the id map.
    record: Option<i32>,
    /// The callback query to answer.
    callback: Option<CallbackQueryId>,
}

/// Update `update_id`, mapped, as the pipeline takes it.
pub fn arrival(update_id: u32, inbound: Inbound) -> Arrival<Pending> {
    Arrival {
        key: Some(update_key(update_id)),
        offer: inbound.private && inbound.message,
        sender: inbound.sender.map(|s| Sender {
            id: s.id,
            name: s.name,
            bot: false,
        }),
        platform: Pending {
            record: inbound.record,
            callback: inbound.callback,
        },
        event: inbound.event,
    }
}

#[async_trait::async_trait]
impl Inlet for Telegram {
    type Platform = Pending;

    fn core(&self) -> &StationCore {
        &self.core
    }

    fn log(&self) -> &Log {
        &self.log
    }

    fn access(&self) -> Option<&Access> {
        Some(&self.access)
    }

    fn refused(self: &Arc<Self>, a: &Arrival<Pending>) {
        let Some(cb) = a.platform.callback.clone() else {
            return;
        };
        let tg = self.clone();
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

    async fn notice(&self, line: &str, text: &str) -> Result<(), WireError> {
        let (chat, _) = parse_line(line)
            .ok_or_else(|| WireError::bad_request(format!("not a telegram line: {line}")))?;
        super::outbound::notice(self, chat, text).await
    }

    fn unstored(&self, a: &Arrival<Pending>, why: &str, retry_in: Duration) -> String {
        let update = a.key.as_deref().unwrap_or("?");
        format!(
            "down: cannot store update {update} in the log ({why}); it stays unconfirmed, retrying in {} s",
            retry_in.as_secs()
        )
    }

    fn stored(self: &Arc<Self>, id: &str, line: &str, p: Pending) {
        if let Some(m) = p.record {
            self.ids.record(ids::Rec {
                id: id.to_string(),
                line: line.to_string(),
                message_ids: vec![m],
            });
        }
        if let Some(cb) = p.callback {
            // Stops the spinner on the button; the press is stored already.
            let tg = self.clone();
            tokio::spawn(async move {
                if let Err(e) = tg.bot.answer_callback_query(cb).await {
                    tracing::warn!(
                        "telegram: answerCallbackQuery failed: {}",
                        tg.redact(&e.to_string())
                    );
                }
            });
        }
    }
}
