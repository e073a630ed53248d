//! Gateway dispatches → events, stored one at a time in arrival order.
//!
//! - `MESSAGE_CREATE` → `inbound` (text, attachments, `replyTo` from the
//!   reply's message reference); `MESSAGE_UPDATE` with an edit time →
//!   `edit` (linked to the stored original by `originalId`);
//!   `MESSAGE_REACTION_ADD` / `_REMOVE` → `react` (a removal has `emoji`
//!   `""` and says which one went in `removedEmoji`); a button press
//!   (`INTERACTION_CREATE`, message component) → `callback` with the
//!   button's id as `text`, acknowledged once stored so the client does not
//!   show "interaction failed".
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
//!   ([`catch_up`]): Discord does not dispatch again what was said before.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use reqwest::Method;
use serde_json::{json, Value};
use serenity::all::{
    Attachment, ChannelId, ComponentInteraction, Event as Dispatch, Interaction, Message,
    MessageType, MessageUpdateEvent, Reaction, User,
};
use serenity::http::Route;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::rest::Body;
use super::{bump, line_of, Discord};
use crate::proto::Event;
use crate::station::access::{pairing_text, Gate};
use crate::stations::append_retrying;
use crate::stations::ids::Rec;
use crate::store::log::Log;

/// Who sent a dispatch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sender {
    pub id: u64,
    pub name: String,
    /// A bot or a webhook.
    pub bot: bool,
}

/// One dispatch as metro stores it.
#[derive(Debug, Clone)]
pub struct Inbound {
    pub event: Event,
    pub sender: Option<Sender>,
    /// In a DM with the bot (a stranger there gets a pairing code).
    pub dm: bool,
    /// A new message (not an edit, reaction or button press).
    pub message: bool,
    /// The snowflake to record in the id map.
    pub record: Option<u64>,
    /// The key that recognises it when it comes again.
    pub key: Option<String>,
    /// The interaction to acknowledge: id and token.
    pub interaction: Option<(u64, String)>,
}

/// The key of a stored message or edit (`None`: reactions and button
/// presses are not recognised again; they can repeat for real).
pub fn key_of(kind: &str, message_id: Option<&str>, edited_at: Option<&str>) -> Option<String> {
    let m = message_id?;
    match kind {
        "inbound" => Some(format!("m:{m}")),
        "edit" => Some(format!("e:{m}:{}", edited_at.unwrap_or(""))),
        _ => None,
    }
}

/// What the gateway thread hands over, in order.
#[derive(Debug)]
pub enum Feed {
    /// A dispatch to store.
    Dispatch(Box<Dispatch>),
    /// A new session started (READY): what it may have missed is read
    /// back first ([`catch_up`]).
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

/// Messages read back per request, and requests per channel.
pub const CATCH_UP_PAGE: usize = 100;
pub const CATCH_UP_PAGES: usize = 10;
/// Channels read back after a new session (the most recently active).
pub const CATCH_UP_CHANNELS: usize = 50;

/// After a new session (metrod started, or Discord could not resume):
/// Discord does not send again what was said meanwhile, so the channels
/// metro has stored messages of are read back from the newest stored one
/// on (the [`CATCH_UP_CHANNELS`] most recently active, up to
/// [`CATCH_UP_PAGES`] × [`CATCH_UP_PAGE`] messages each), and what is new
/// goes through the same checks and into the log, oldest first, marked
/// `caughtUp: true`, before any live dispatch that followed READY. What
/// the live stream then brings again is recognised and not stored twice.
/// False only at shutdown.
async fn catch_up(log: &Log, dc: &Arc<Discord>, shutdown: &CancellationToken) -> bool {
    for (channel, newest) in dc.newest_per_channel().into_iter().take(CATCH_UP_CHANNELS) {
        let mut after = newest;
        for page in 1..=CATCH_UP_PAGES {
            let Some(messages) = read_after(dc, channel, after, shutdown).await else {
                return false;
            };
            let Ok(messages) = messages else {
                break;
            };
            let full = messages.len() >= CATCH_UP_PAGE;
            let from = after;
            for m in messages.iter().filter(|m| m.id.get() > from) {
                after = after.max(m.id.get());
                let Some(mut inbound) = created(m) else {
                    continue;
                };
                // Old news: no pairing reply to a message from before.
                inbound.message = false;
                inbound.event.extra.insert("caughtUp".into(), json!(true));
                let before = dc.counters.received.load(Ordering::Relaxed);
                if !store(log, dc, inbound, shutdown).await {
                    return false;
                }
                if dc.counters.received.load(Ordering::Relaxed) > before {
                    bump(&dc.counters.caught_up);
                }
            }
            if !full {
                break;
            }
            if page == CATCH_UP_PAGES {
                tracing::warn!(
                    "discord: channel {channel} had more than {} messages while metro was not connected; the newer ones are not stored (fetch reads them)",
                    CATCH_UP_PAGE * CATCH_UP_PAGES
                );
            }
        }
    }
    true
}

/// The messages of `channel` after `after`, oldest first; `None` at
/// shutdown, `Err` when Discord would not say (logged).
async fn read_after(
    dc: &Discord,
    channel: u64,
    after: u64,
    shutdown: &CancellationToken,
) -> Option<Result<Vec<Message>, ()>> {
    let mut req = dc.req(
        Method::GET,
        Route::ChannelMessages {
            channel_id: channel.into(),
        },
    );
    req.query.push(("after", after.to_string()));
    req.query.push(("limit", CATCH_UP_PAGE.to_string()));
    let conversation = channel.to_string();
    let got = tokio::select! {
        _ = shutdown.cancelled() => return None,
        r = dc.call_json::<Vec<Message>>(&conversation, &req) => r,
    };
    Some(match got {
        Ok(mut m) => {
            m.sort_by_key(|m| m.id);
            Ok(m)
        }
        Err(e) => {
            tracing::warn!(
                "discord: could not read back channel {channel} after a new session: {}",
                e.message
            );
            Err(())
        }
    })
}

/// Stores one dispatch (after the checks); false only at shutdown.
async fn store(
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

fn user_uri(id: u64) -> String {
    format!("metro://discord/user/{id}")
}

fn sender_of(u: &User, nick: Option<&str>) -> Sender {
    Sender {
        id: u.id.get(),
        name: nick.unwrap_or_else(|| u.display_name()).to_string(),
        bot: u.bot,
    }
}

fn base_event(kind: &str, channel: ChannelId) -> Event {
    let line = line_of(channel.get());
    Event {
        station: "discord".into(),
        kind: kind.into(),
        to: line.clone(),
        line,
        ..Event::default()
    }
}

/// The files of a message: `{type, attachmentId, name, mime?, size, url,
/// width?, height?, duration?}`.
pub fn attachments(files: &[Attachment]) -> Vec<Value> {
    files
        .iter()
        .map(|a| {
            let mime = a.content_type.as_deref().unwrap_or("");
            let kind = if a.duration_secs.is_some() && mime.starts_with("audio/") {
                "voice"
            } else if mime.starts_with("image/") {
                "image"
            } else if mime.starts_with("audio/") {
                "audio"
            } else if mime.starts_with("video/") {
                "video"
            } else {
                "document"
            };
            let mut v = json!({
                "type": kind,
                "attachmentId": a.id.to_string(),
                "name": a.filename,
                "mime": a.content_type,
                "size": a.size,
                "url": a.url,
                "width": a.width,
                "height": a.height,
                "duration": a.duration_secs,
            });
            if let Some(o) = v.as_object_mut() {
                o.retain(|_, x| !x.is_null());
            }
            v
        })
        .collect()
}

/// A message as an event of `kind` (also the shape of `fetch` answers).
pub fn message_event(kind: &str, m: &Message) -> Event {
    let mut ev = base_event(kind, m.channel_id);
    let nick = m.member.as_ref().and_then(|p| p.nick.as_deref());
    let sender = sender_of(&m.author, nick);
    ev.from = user_uri(sender.id);
    ev.from_name = Some(sender.name.clone());
    if !m.content.is_empty() {
        ev.text = Some(m.content.clone());
    }
    ev.message_id = Some(m.id.to_string());
    if m.kind == MessageType::InlineReply {
        ev.reply_to = m
            .message_reference
            .as_ref()
            .and_then(|r| r.message_id)
            .map(|id| id.to_string());
    }
    let files = attachments(&m.attachments);
    if !files.is_empty() {
        ev.attachments = Some(files);
    }
    match m.guild_id {
        Some(g) => {
            ev.extra.insert("guildId".into(), json!(g.to_string()));
        }
        // A DM is named after the person (not after the bot's own posts).
        None if !sender.bot => {
            ev.extra.insert("lineName".into(), json!(sender.name));
        }
        None => {}
    }
    if sender.bot || m.webhook_id.is_some() {
        ev.extra.insert("bot".into(), json!(true));
    }
    ev
}

fn stored_kind(m: &Message) -> bool {
    matches!(m.kind, MessageType::Regular | MessageType::InlineReply)
        && (!m.content.is_empty() || !m.attachments.is_empty())
}

fn created(m: &Message) -> Option<Inbound> {
    if !stored_kind(m) {
        return None;
    }
    let nick = m.member.as_ref().and_then(|p| p.nick.as_deref());
    let mut sender = sender_of(&m.author, nick);
    sender.bot |= m.webhook_id.is_some();
    let ev = message_event("inbound", m);
    Some(Inbound {
        key: key_of("inbound", ev.message_id.as_deref(), None),
        sender: Some(sender),
        dm: m.guild_id.is_none(),
        message: true,
        record: Some(m.id.get()),
        interaction: None,
        event: ev,
    })
}

fn updated(u: &MessageUpdateEvent, dc: &Discord) -> Option<Inbound> {
    // Embeds unfolding and pins update a message too; only an edit has an
    // edit time and text.
    let (Some(text), Some(at), Some(author)) = (&u.content, &u.edited_timestamp, &u.author) else {
        return None;
    };
    let mut ev = base_event("edit", u.channel_id);
    let nick = u
        .member
        .as_ref()
        .and_then(|m| m.as_ref())
        .and_then(|p| p.nick.as_deref());
    let mut sender = sender_of(author, nick);
    sender.bot |= u.webhook_id.flatten().is_some();
    ev.from = user_uri(sender.id);
    ev.from_name = Some(sender.name.clone());
    ev.text = Some(text.clone());
    ev.message_id = Some(u.id.to_string());
    if let Some(files) = &u.attachments {
        let files = attachments(files);
        if !files.is_empty() {
            ev.attachments = Some(files);
        }
    }
    let edited_at = at.to_string();
    ev.extra.insert("editedAt".into(), json!(edited_at));
    if let Some(g) = u.guild_id {
        ev.extra.insert("guildId".into(), json!(g.to_string()));
    }
    if let Some(orig) = dc.ids.metro(&u.channel_id.to_string(), &u.id.to_string()) {
        ev.extra.insert("originalId".into(), json!(orig.id));
    }
    Some(Inbound {
        key: key_of("edit", ev.message_id.as_deref(), Some(&edited_at)),
        sender: Some(sender),
        dm: u.guild_id.is_none(),
        message: false,
        record: None,
        interaction: None,
        event: ev,
    })
}

fn reacted(r: &Reaction, added: bool, dc: &Discord) -> Option<Inbound> {
    let user = r.user_id?;
    let mut ev = base_event("react", r.channel_id);
    let sender = match &r.member {
        Some(m) => sender_of(&m.user, m.nick.as_deref()),
        None => Sender {
            id: user.get(),
            name: user.to_string(),
            bot: false,
        },
    };
    ev.from = user_uri(user.get());
    if r.member.is_some() {
        ev.from_name = Some(sender.name.clone());
    }
    ev.message_id = Some(r.message_id.to_string());
    let emoji = r.emoji.to_string();
    if added {
        ev.emoji = Some(emoji);
    } else {
        ev.emoji = Some(String::new());
        ev.extra.insert("removedEmoji".into(), json!(emoji));
    }
    if let Some(g) = r.guild_id {
        ev.extra.insert("guildId".into(), json!(g.to_string()));
    }
    if let Some(orig) = dc
        .ids
        .metro(&r.channel_id.to_string(), &r.message_id.to_string())
    {
        ev.extra.insert("originalId".into(), json!(orig.id));
    }
    Some(Inbound {
        key: None,
        sender: Some(sender),
        dm: r.guild_id.is_none(),
        message: false,
        record: None,
        interaction: None,
        event: ev,
    })
}

fn pressed(c: &ComponentInteraction) -> Inbound {
    let nick = c.member.as_ref().and_then(|m| m.nick.as_deref());
    let sender = sender_of(&c.user, nick);
    let mut ev = base_event("callback", c.channel_id);
    ev.from = user_uri(sender.id);
    ev.from_name = Some(sender.name.clone());
    ev.message_id = Some(c.message.id.to_string());
    ev.text = Some(c.data.custom_id.clone());
    ev.extra
        .insert("interactionId".into(), json!(c.id.to_string()));
    if let Some(g) = c.guild_id {
        ev.extra.insert("guildId".into(), json!(g.to_string()));
    }
    Inbound {
        key: None,
        sender: Some(sender),
        dm: c.guild_id.is_none(),
        message: false,
        record: None,
        interaction: Some((c.id.get(), c.token.clone())),
        event: ev,
    }
}

/// What metro stores of a dispatch; `None` for what it does not keep.
pub fn map(ev: &Dispatch, dc: &Discord) -> Option<Inbound> {
    match ev {
        Dispatch::MessageCreate(m) => created(&m.message),
        Dispatch::MessageUpdate(u) => updated(u, dc),
        Dispatch::ReactionAdd(r) => reacted(&r.reaction, true, dc),
        Dispatch::ReactionRemove(r) => reacted(&r.reaction, false, dc),
        Dispatch::InteractionCreate(i) => match &i.interaction {
            Interaction::Component(c) => Some(pressed(c)),
            _ => None,
        },
        _ => None,
    }
}
