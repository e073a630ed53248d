//! Long polling: `getUpdates` → events, confirmed only once durable.
//!
//! The loop asks Telegram for updates after the last confirmed one
//! (`offset`), turns each into at most one event ([`map_update`]), checks
//! the sender against the allowlist, appends admitted events to the log and
//! waits until they are durable, and only then moves `offset` past the
//! update. The next `getUpdates` carries that offset and is what tells
//! Telegram the update was received: if metrod dies before, Telegram sends
//! the update again, and its `updateId` (kept in the event, remembered for
//! the last [`super::RECENT_UPDATES`] updates, seeded from the end of the
//! log at startup) keeps it from being stored twice.
//!
//! Every failure — network, 5xx, 401, 409 from another poller, a log that
//! cannot be written — is retried forever with a growing pause (1 s … 60
//! s), and the station's status says what is wrong. A panic in the poller
//! is caught and the poller restarted.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};
use teloxide::payloads::GetUpdatesSetters;
use teloxide::requests::{Request, Requester};
use teloxide::types::{
    AllowedUpdate, CallbackQuery, Chat, Message, MessageReactionUpdated, ReactionType, Update,
    UpdateKind, User,
};
use teloxide::{ApiError, RequestError};
use tokio_util::sync::CancellationToken;

use super::{bump, ids, line_of, Telegram};
use crate::broker::Broker;
use crate::proto::Event;
use crate::stations::access::Gate;
use crate::stations::{append_retrying, pause, Backoff};

/// The updates asked for: messages, edits, reactions, button presses.
pub const ALLOWED: [AllowedUpdate; 4] = [
    AllowedUpdate::Message,
    AllowedUpdate::EditedMessage,
    AllowedUpdate::MessageReaction,
    AllowedUpdate::CallbackQuery,
];

/// Runs the poller until shutdown, restarting it if it panics.
pub async fn run(broker: Arc<Broker>, tg: Arc<Telegram>, shutdown: CancellationToken) {
    loop {
        let task = tokio::spawn(poll(broker.clone(), tg.clone(), shutdown.clone()));
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

async fn poll(broker: Arc<Broker>, tg: Arc<Telegram>, shutdown: CancellationToken) {
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
                if !tg.status.retry_later(why, &mut backoff, &shutdown).await {
                    return;
                }
            }
        }
    }
    let mut offset: Option<i32> = None;
    loop {
        let mut req = tg
            .bot
            .get_updates()
            .timeout(tg.poll_timeout)
            .allowed_updates(ALLOWED);
        if let Some(o) = offset {
            req = req.offset(o);
        }
        let got = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = req.send() => r,
        };
        let updates = match got {
            Ok(u) => u,
            Err(e) => {
                let why = describe(&tg, "getUpdates", &e);
                if !tg.status.retry_later(why, &mut backoff, &shutdown).await {
                    return;
                }
                continue;
            }
        };
        backoff.reset();
        tg.set_status("ok");
        for u in updates {
            let id = u.id.0;
            if !handle(&broker, &tg, u, &shutdown).await {
                return;
            }
            // Durable (or deliberately not stored): confirm it with the
            // next getUpdates.
            offset = i32::try_from(id).ok().map(|i| i.saturating_add(1));
        }
    }
}

/// Stores one update; false only at shutdown (the update stays
/// unconfirmed and comes again).
async fn handle(
    broker: &Broker,
    tg: &Arc<Telegram>,
    update: Update,
    shutdown: &CancellationToken,
) -> bool {
    let update_id = update.id.0;
    if tg.seen(update_id) {
        bump(&tg.counters.duplicates);
        tracing::debug!("telegram: update {update_id} is already in the log");
        return true;
    }
    if matches!(update.kind, UpdateKind::Error(_)) {
        // teloxide could not read it (see docs/broker.md, "Limits and
        // threat model": what a message must contain); its text stays out
        // of the log.
        tracing::warn!(
            "telegram: update {update_id} is not in a shape teloxide reads (a message needs              message_id, date, chat.id and chat.type; a user id, is_bot and first_name); skipped"
        );
    }
    let Some(inbound) = map_update(&update, &tg.ids) else {
        bump(&tg.counters.skipped);
        tracing::debug!("telegram: update {update_id} carries nothing to store");
        return true;
    };
    let gate = match &inbound.sender {
        Some(s) => tg.access.gate(&s.id),
        None if tg.access.everyone() => Gate::Admitted,
        None => Gate::Unknown,
    };
    if gate != Gate::Admitted {
        super::access::blocked(tg, &inbound, gate).await;
        return true;
    }
    let line = inbound.event.line.clone();
    let failed = |why: &str, d: std::time::Duration| {
        tg.set_status(format!(
            "down: cannot store update {update_id} in the log ({why}); it stays unconfirmed, retrying in {} s",
            d.as_secs()
        ))
    };
    let Some(appended) = append_retrying(&broker.log, &inbound.event, shutdown, failed).await
    else {
        return false;
    };
    tg.set_status("ok");
    tg.remember(update_id);
    bump(&tg.counters.received);
    if let Some(m) = inbound.record {
        tg.ids.record(ids::Rec {
            id: appended.id.clone(),
            line,
            message_ids: vec![m],
        });
    }
    if let Some(cb) = inbound.callback {
        // Stops the spinner on the button; the press is stored already.
        let tg = tg.clone();
        tokio::spawn(async move {
            if let Err(e) = tg.bot.answer_callback_query(cb).await {
                tracing::warn!(
                    "telegram: answerCallbackQuery failed: {}",
                    tg.redact(&e.to_string())
                );
            }
        });
    }
    true
}

/// Who sent an update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sender {
    pub id: String,
    pub name: String,
}

/// One update as metro stores it.
#[derive(Debug, Clone)]
pub struct Inbound {
    pub event: Event,
    pub sender: Option<Sender>,
    /// Sent in a private chat with the bot (a stranger there gets a code).
    pub private: bool,
    /// A new message (not an edit, reaction or button press).
    pub message: bool,
    /// The Telegram message id to record in the id map.
    pub record: Option<i32>,
    /// The callback query to answer once stored.
    pub callback: Option<teloxide::types::CallbackQueryId>,
}

fn user_uri(u: &User) -> String {
    format!("metro://telegram/user/{}", u.id.0)
}

fn sender_of(u: &User) -> Sender {
    Sender {
        id: u.id.0.to_string(),
        name: u.full_name(),
    }
}

/// The name of a chat for `lines`: its title, or the person's name.
fn chat_name(c: &Chat) -> Option<String> {
    if let Some(t) = c.title() {
        return Some(t.to_string());
    }
    let first = c.first_name()?;
    Some(match c.last_name() {
        Some(l) => format!("{first} {l}"),
        None => first.to_string(),
    })
}

/// The topic of a forum message (not the reply thread of a plain group).
fn topic_of(m: &Message) -> Option<i32> {
    if m.is_topic_message {
        m.thread_id.map(|t| t.0 .0)
    } else {
        None
    }
}

fn base_event(kind: &str, line: String, update_id: u32, chat: &Chat) -> Event {
    let mut extra = Map::new();
    extra.insert("updateId".into(), json!(update_id));
    if let Some(name) = chat_name(chat) {
        extra.insert("lineName".into(), json!(name));
    }
    Event {
        station: "telegram".into(),
        kind: kind.into(),
        to: line.clone(),
        line,
        extra,
        ..Event::default()
    }
}

/// The files of a message: `{type, fileId, name?, mime?, size, …}`.
pub fn attachments(m: &Message) -> Vec<Value> {
    fn mime<M: ToString>(m: &Option<M>) -> Option<String> {
        m.as_ref().map(ToString::to_string)
    }
    let mut out = Vec::new();
    if let Some(sizes) = m.photo() {
        if let Some(p) = sizes.iter().max_by_key(|p| p.width * p.height) {
            out.push(json!({
                "type": "image", "fileId": p.file.id.0, "mime": "image/jpeg",
                "size": p.file.size, "width": p.width, "height": p.height,
            }));
        }
    }
    if let Some(d) = m.document() {
        out.push(json!({
            "type": "document", "fileId": d.file.id.0, "name": d.file_name,
            "mime": mime(&d.mime_type), "size": d.file.size,
        }));
    }
    if let Some(v) = m.voice() {
        out.push(json!({
            "type": "voice", "fileId": v.file.id.0, "mime": mime(&v.mime_type),
            "size": v.file.size, "duration": v.duration.seconds(),
        }));
    }
    if let Some(a) = m.audio() {
        out.push(json!({
            "type": "audio", "fileId": a.file.id.0, "name": a.file_name,
            "mime": mime(&a.mime_type), "size": a.file.size, "duration": a.duration.seconds(),
        }));
    }
    if let Some(v) = m.video() {
        out.push(json!({
            "type": "video", "fileId": v.file.id.0, "name": v.file_name,
            "mime": mime(&v.mime_type), "size": v.file.size, "duration": v.duration.seconds(),
        }));
    }
    if let Some(a) = m.animation() {
        out.push(json!({
            "type": "animation", "fileId": a.file.id.0, "name": a.file_name,
            "mime": mime(&a.mime_type), "size": a.file.size,
        }));
    }
    if let Some(v) = m.video_note() {
        out.push(json!({
            "type": "video_note", "fileId": v.file.id.0, "mime": "video/mp4",
            "size": v.file.size, "duration": v.duration.seconds(),
        }));
    }
    if let Some(s) = m.sticker() {
        out.push(json!({
            "type": "sticker", "fileId": s.file.id.0, "emoji": s.emoji,
            "size": s.file.size,
        }));
    }
    // Drop nulls: absent, not null.
    for v in &mut out {
        if let Some(o) = v.as_object_mut() {
            o.retain(|_, x| !x.is_null());
        }
    }
    out
}

fn message_event(kind: &str, update_id: u32, m: &Message, ids: &ids::Ids) -> Event {
    let chat = m.chat.id.0;
    let line = line_of(chat, topic_of(m));
    let mut ev = base_event(kind, line, update_id, &m.chat);
    match (&m.from, &m.sender_chat) {
        (_, Some(c)) => {
            ev.from = format!("metro://telegram/chat/{}", c.id.0);
            ev.from_name = chat_name(c);
        }
        (Some(u), None) => {
            ev.from = user_uri(u);
            ev.from_name = Some(u.full_name());
        }
        (None, None) => ev.from = format!("metro://telegram/chat/{chat}"),
    }
    ev.text = m.text().or(m.caption()).map(str::to_string);
    ev.message_id = Some(m.id.0.to_string());
    if let Some(r) = m.reply_to_message() {
        // In a forum every message "replies" to its topic's first message.
        if topic_of(m) != Some(r.id.0) {
            ev.reply_to = Some(r.id.0.to_string());
        }
    }
    let files = attachments(m);
    if !files.is_empty() {
        ev.attachments = Some(files);
    }
    if let Some(g) = m.media_group_id() {
        ev.extra.insert("mediaGroupId".into(), json!(g.0));
    }
    if kind == "edit" {
        if let Some(orig) = ids.metro(chat, m.id.0) {
            ev.extra.insert("originalId".into(), json!(orig.id));
        }
    }
    ev
}

fn reaction_event(update_id: u32, r: &MessageReactionUpdated, ids: &ids::Ids) -> Event {
    let chat = r.chat.id.0;
    let orig = ids.metro(chat, r.message_id.0);
    let line = orig
        .as_ref()
        .map(|o| o.line.clone())
        .unwrap_or_else(|| line_of(chat, None));
    let mut ev = base_event("react", line, update_id, &r.chat);
    match (r.user(), r.chat()) {
        (Some(u), _) => {
            ev.from = user_uri(u);
            ev.from_name = Some(u.full_name());
        }
        (None, Some(c)) => {
            ev.from = format!("metro://telegram/chat/{}", c.id.0);
            ev.from_name = chat_name(c);
        }
        (None, None) => ev.from = format!("metro://telegram/chat/{chat}"),
    }
    ev.message_id = Some(r.message_id.0.to_string());
    ev.emoji = Some(
        r.new_reaction
            .iter()
            .filter_map(ReactionType::emoji)
            .cloned()
            .collect(),
    );
    if let Some(o) = orig {
        ev.extra.insert("originalId".into(), json!(o.id));
    }
    ev
}

fn callback_event(update_id: u32, q: &CallbackQuery) -> Option<Event> {
    let msg = q.message.as_ref()?;
    let chat = msg.chat();
    let topic = msg.regular_message().and_then(topic_of);
    let mut ev = base_event("callback", line_of(chat.id.0, topic), update_id, chat);
    ev.from = user_uri(&q.from);
    ev.from_name = Some(q.from.full_name());
    ev.message_id = Some(msg.id().0.to_string());
    ev.text = Some(q.data.clone().unwrap_or_default());
    Some(ev)
}

/// Turns an update into what metro stores; `None` for updates that carry
/// nothing metro keeps (service messages, kinds it did not ask for).
pub fn map_update(u: &Update, ids: &ids::Ids) -> Option<Inbound> {
    let update_id = u.id.0;
    match &u.kind {
        UpdateKind::Message(m) | UpdateKind::EditedMessage(m) => {
            let edit = matches!(u.kind, UpdateKind::EditedMessage(_));
            let ev = message_event(if edit { "edit" } else { "inbound" }, update_id, m, ids);
            if ev.text.is_none() && ev.attachments.is_none() {
                return None;
            }
            Some(Inbound {
                sender: m.from.as_ref().map(sender_of),
                private: m.chat.is_private(),
                message: !edit,
                record: (!edit).then_some(m.id.0),
                callback: None,
                event: ev,
            })
        }
        UpdateKind::MessageReaction(r) => Some(Inbound {
            sender: r.user().map(sender_of),
            private: r.chat.is_private(),
            message: false,
            record: None,
            callback: None,
            event: reaction_event(update_id, r, ids),
        }),
        UpdateKind::CallbackQuery(q) => Some(Inbound {
            sender: Some(sender_of(&q.from)),
            private: q.message.as_ref().is_some_and(|m| m.chat().is_private()),
            message: false,
            record: None,
            callback: Some(q.id.clone()),
            event: callback_event(update_id, q)?,
        }),
        _ => None,
    }
}
