//! Telegram updates → metro events, without I/O: what a message, an edit,
//! a reaction or a button press becomes (kind, line, sender, text,
//! attachments, `replyTo`, `updateId`), and which updates carry nothing
//! metro keeps.
//!
//! Owns: the mapping. Must not import: `broker`, `server`, the log.

use serde_json::{json, Map, Value};
use teloxide::types::{
    CallbackQuery, Chat, Message, MessageReactionUpdated, ReactionType, Update, UpdateKind, User,
};

use super::{ids, line_of};
use crate::proto::Event;

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

#[cfg(test)]
mod tests {
    use super::*;

    fn update(v: Value) -> Update {
        // As metrod reads it: from the text of an answer.
        serde_json::from_str(&v.to_string()).expect("an update")
    }

    fn text_message(update_id: u32, text: &str) -> Value {
        json!({
            "update_id": update_id,
            "message": {
                "message_id": 10,
                "date": 1764400000,
                "chat": {"id": 42, "type": "private", "first_name": "Ann"},
                "from": {"id": 42, "is_bot": false, "first_name": "Ann"},
                "text": text
            }
        })
    }

    #[test]
    fn a_text_message_becomes_an_inbound_event() {
        let dir = tempfile::tempdir().unwrap();
        let ids = ids::Ids::open(dir.path()).unwrap();
        let i = map_update(&update(text_message(7, "deploy?")), &ids).expect("stored");
        assert_eq!(i.event.kind, "inbound");
        assert_eq!(i.event.station, "telegram");
        assert_eq!(i.event.line, "metro://telegram/42");
        assert_eq!(i.event.text.as_deref(), Some("deploy?"));
        assert_eq!(i.event.message_id.as_deref(), Some("10"));
        assert_eq!(i.event.extra["updateId"], json!(7));
        assert_eq!(i.sender.as_ref().map(|s| s.id.as_str()), Some("42"));
        assert!(i.private && i.message);
        assert_eq!(i.record, Some(10));
    }

    #[test]
    fn a_service_message_carries_nothing_to_store() {
        let dir = tempfile::tempdir().unwrap();
        let ids = ids::Ids::open(dir.path()).unwrap();
        let mut v = text_message(8, "");
        let m = v["message"].as_object_mut().unwrap();
        m.remove("text");
        m.insert("new_chat_title".into(), json!("renamed"));
        assert!(map_update(&update(v), &ids).is_none());
    }
}
