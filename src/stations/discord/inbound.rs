//! Gateway dispatches, stored one at a time in arrival order: each is
//! mapped ([`super::map`]) and run through the shared inbound pipeline
//! ([`crate::station::ingest`]: dedupe, screen, allowlist, append); this
//! file is Discord's side of it ([`Inlet`]). A button press is
//! acknowledged once stored so the client does not show "interaction
//! failed".
//! - Never stored: the bot's own messages, edits and reactions; messages
//!   from other bots and webhooks unless their id is listed by name in the
//!   allowlist (`*` does not admit bots: agent-to-agent traffic through
//!   Discord is opt-in, and two bots cannot answer each other forever);
//!   senders not admitted (counted, logged; a stranger in a DM gets one
//!   pairing code; a blocked button press is answered "Not allowed.").
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
use std::time::Duration;

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
use crate::proto::{Event, WireError};
use crate::station::access::Access;
use crate::station::core::StationCore;
use crate::station::ingest::{ingest, Arrival, Inlet, Outcome, Persist, Sender};
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
                Some(inbound) => {
                    !matches!(store(dc, inbound, shutdown).await, Outcome::NotStored(_))
                }
                None => {
                    bump(&dc.core.counters.skipped);
                    true
                }
            },
            Feed::Session => catch_up(dc, shutdown).await,
        };
        if !go_on {
            return;
        }
    }
}

/// What the station keeps of a dispatch for after the pipeline.
pub struct Pending {
    /// The sender's user id, for the screen.
    sender: Option<u64>,
    /// The snowflake to record in the id map.
    record: Option<u64>,
    /// The interaction to acknowledge: id and token.
    interaction: Option<(u64, String)>,
}

/// Stores one dispatch through the pipeline.
pub(super) async fn store(
    dc: &Arc<Discord>,
    inbound: Inbound,
    shutdown: &CancellationToken,
) -> Outcome {
    let offer = inbound.dm && inbound.message && inbound.sender.as_ref().is_some_and(|s| !s.bot);
    let a = Arrival {
        key: inbound.key,
        offer,
        platform: Pending {
            sender: inbound.sender.as_ref().map(|s| s.id),
            record: inbound.record,
            interaction: inbound.interaction,
        },
        sender: inbound.sender.map(|s| Sender {
            id: s.id.to_string(),
            name: s.name,
            bot: s.bot,
        }),
        event: inbound.event,
    };
    ingest(dc, a, Persist::UntilStored, shutdown).await
}

#[async_trait::async_trait]
impl Inlet for Discord {
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

    /// The bot's own messages never; other bots' only when listed by id.
    fn screen(&self, a: &Arrival<Pending>) -> bool {
        let (Some(s), Some(id)) = (&a.sender, a.platform.sender) else {
            return true;
        };
        if id == self.bot_id() {
            bump(&self.counters.own);
            return false;
        }
        if s.bot && !self.access.named(&s.id) {
            bump(&self.counters.bots);
            tracing::debug!(
                "discord: dropped a {} from bot {} ({:?}) on {}: bots must be listed by id",
                a.event.kind,
                s.id,
                s.name,
                a.event.line
            );
            return false;
        }
        true
    }

    /// A server channel's name (`#name`) as `lineName`, when known.
    fn admitted(self: &Arc<Self>, event: &mut Event) {
        if event.extra.contains_key("guildId") {
            if let Some(name) = super::parse_line(&event.line).and_then(|c| self.channel_name(c)) {
                event.extra.insert("lineName".into(), json!(name));
            }
        }
    }

    fn refused(self: &Arc<Self>, a: &Arrival<Pending>) {
        let Some((id, token)) = a.platform.interaction.clone() else {
            return;
        };
        let dc = self.clone();
        tokio::spawn(async move {
            let body = json!({"type": 4, "data": {"content": "Not allowed.", "flags": 64}});
            if let Err(e) = respond(&dc, id, &token, body).await {
                tracing::debug!("discord: answering a blocked button press: {e}");
            }
        });
    }

    async fn notice(&self, line: &str, text: &str) -> Result<(), WireError> {
        let channel = super::parse_line(line)
            .ok_or_else(|| WireError::bad_request(format!("not a discord line: {line}")))?;
        super::outbound::notice(self, channel, text).await
    }

    fn unstored(&self, a: &Arrival<Pending>, why: &str, retry_in: Duration) -> String {
        format!(
            "down: cannot store a Discord {} in the log ({why}); retrying in {} s",
            a.event.kind,
            retry_in.as_secs()
        )
    }

    fn stored(self: &Arc<Self>, id: &str, line: &str, p: Pending) {
        if let Some(m) = p.record {
            self.record(Rec {
                id: id.to_string(),
                line: line.to_string(),
                message_ids: vec![m.to_string()],
            });
        }
        if let Some((iid, token)) = p.interaction {
            // Stored: now tell Discord the press was received (a deferred
            // update: the message stays as it is).
            let dc = self.clone();
            tokio::spawn(async move {
                if let Err(e) = respond(&dc, iid, &token, json!({"type": 6})).await {
                    tracing::warn!(
                        "discord: the button press was stored but not acknowledged: {e}"
                    );
                }
            });
        }
    }
}

/// Answers interaction `id`.
async fn respond(dc: &Discord, id: u64, token: &str, body: Value) -> Result<(), WireError> {
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
