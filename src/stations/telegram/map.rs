//! Telegram updates → metro events, without I/O: what a message, an edit,
//! a reaction or a button press becomes (kind, line, sender, text,
//! attachments, `replyTo`, `updateId`), and which updates carry nothing
//! metro keeps.
//!
//! Owns: the mapping. Must not import: `broker`, `server`, the log.

use serde_json::{json, Map, Value};
use teloxide::types::CallbackQueryId;

use super::update::{Callback, Chat, Message, Reaction, Update, User};
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
    pub callback: Option<CallbackQueryId>,
}

fn user_uri(u: &User) -> String {
    format!("metro://telegram/user/{}", u.id)
}

fn sender_of(u: &User) -> Sender {
    Sender {
        id: u.id.to_string(),
        name: u.full_name(),
    }
}

/// The name of a chat for `lines`: its title, or the person's name.
fn chat_name(c: &Chat) -> Option<String> {
    if let Some(t) = &c.title {
        return Some(t.clone());
    }
    let first = c.first_name.as_deref()?;
    Some(match &c.last_name {
        Some(l) => format!("{first} {l}"),
        None => first.to_string(),
    })
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

/// The files of a message: `{type, fileId, name?, mime?, size?, …}`
/// (`size` when Telegram says).
pub fn attachments(m: &Message) -> Vec<Value> {
    let mut out = Vec::new();
    if let Some(sizes) = &m.photo {
        let area = |p: &&super::update::Photo| {
            u64::from(p.width.unwrap_or(0)) * u64::from(p.height.unwrap_or(0))
        };
        if let Some(p) = sizes.iter().max_by_key(area) {
            out.push(json!({
                "type": "image", "fileId": p.file_id, "mime": "image/jpeg",
                "size": p.file_size, "width": p.width, "height": p.height,
            }));
        }
    }
    if let Some(d) = &m.document {
        out.push(json!({
            "type": "document", "fileId": d.file_id, "name": d.file_name,
            "mime": d.mime_type, "size": d.file_size,
        }));
    }
    if let Some(v) = &m.voice {
        out.push(json!({
            "type": "voice", "fileId": v.file_id, "mime": v.mime_type,
            "size": v.file_size, "duration": v.duration,
        }));
    }
    if let Some(a) = &m.audio {
        out.push(json!({
            "type": "audio", "fileId": a.file_id, "name": a.file_name,
            "mime": a.mime_type, "size": a.file_size, "duration": a.duration,
        }));
    }
    if let Some(v) = &m.video {
        out.push(json!({
            "type": "video", "fileId": v.file_id, "name": v.file_name,
            "mime": v.mime_type, "size": v.file_size, "duration": v.duration,
        }));
    }
    if let Some(a) = &m.animation {
        out.push(json!({
            "type": "animation", "fileId": a.file_id, "name": a.file_name,
            "mime": a.mime_type, "size": a.file_size,
        }));
    }
    if let Some(v) = &m.video_note {
        out.push(json!({
            "type": "video_note", "fileId": v.file_id, "mime": "video/mp4",
            "size": v.file_size, "duration": v.duration,
        }));
    }
    if let Some(s) = &m.sticker {
        out.push(json!({
            "type": "sticker", "fileId": s.file_id, "emoji": s.emoji,
            "size": s.file_size,
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
    let chat = m.chat.id;
    let line = line_of(chat, m.topic());
    let mut ev = base_event(kind, line, update_id, &m.chat);
    match (&m.from, &m.sender_chat) {
        (_, Some(c)) => {
            ev.from = format!("metro://telegram/chat/{}", c.id);
            ev.from_name = chat_name(c);
        }
        (Some(u), None) => {
            ev.from = user_uri(u);
            ev.from_name = Some(u.full_name());
        }
        (None, None) => ev.from = format!("metro://telegram/chat/{chat}"),
    }
    ev.text = m.text.clone().or_else(|| m.caption.clone());
    ev.message_id = Some(m.message_id.to_string());
    if let Some(r) = &m.reply_to_message {
        // In a forum every message "replies" to its topic's first message.
        if m.topic() != Some(r.message_id) {
            ev.reply_to = Some(r.message_id.to_string());
        }
    }
    let files = attachments(m);
    if !files.is_empty() {
        ev.attachments = Some(files);
    }
    if let Some(g) = &m.media_group_id {
        ev.extra.insert("mediaGroupId".into(), json!(g));
    }
    if kind == "edit" {
        if let Some(orig) = ids.metro(chat, m.message_id) {
            ev.extra.insert("originalId".into(), json!(orig.id));
        }
    }
    ev
}

fn reaction_event(update_id: u32, r: &Reaction, ids: &ids::Ids) -> Event {
    let chat = r.chat.id;
    let orig = ids.metro(chat, r.message_id);
    let line = orig
        .as_ref()
        .map(|o| o.line.clone())
        .unwrap_or_else(|| line_of(chat, None));
    let mut ev = base_event("react", line, update_id, &r.chat);
    match (&r.user, &r.actor_chat) {
        (Some(u), _) => {
            ev.from = user_uri(u);
            ev.from_name = Some(u.full_name());
        }
        (None, Some(c)) => {
            ev.from = format!("metro://telegram/chat/{}", c.id);
            ev.from_name = chat_name(c);
        }
        (None, None) => ev.from = format!("metro://telegram/chat/{chat}"),
    }
    ev.message_id = Some(r.message_id.to_string());
    ev.emoji = Some(
        r.new_reaction
            .iter()
            .filter_map(|t| t.emoji.as_deref())
            .collect(),
    );
    if let Some(o) = orig {
        ev.extra.insert("originalId".into(), json!(o.id));
    }
    ev
}

fn callback_event(update_id: u32, q: &Callback) -> Option<Event> {
    let msg = q.message.as_ref()?;
    let line = line_of(msg.chat.id, msg.topic());
    let mut ev = base_event("callback", line, update_id, &msg.chat);
    ev.from = user_uri(&q.from);
    ev.from_name = Some(q.from.full_name());
    ev.message_id = Some(msg.message_id.to_string());
    ev.text = Some(q.data.clone().unwrap_or_default());
    Some(ev)
}

/// Turns an update into what metro stores; `None` for updates that carry
/// nothing metro keeps (service messages, kinds it did not ask for).
pub fn map_update(u: &Update, ids: &ids::Ids) -> Option<Inbound> {
    let update_id = u.update_id;
    if let Some((m, edit)) = u
        .message
        .as_ref()
        .map(|m| (m, false))
        .or_else(|| u.edited_message.as_ref().map(|m| (m, true)))
    {
        let ev = message_event(if edit { "edit" } else { "inbound" }, update_id, m, ids);
        if ev.text.is_none() && ev.attachments.is_none() {
            return None;
        }
        return Some(Inbound {
            sender: m.from.as_ref().map(sender_of),
            private: m.chat.is_private(),
            message: !edit,
            record: (!edit).then_some(m.message_id),
            callback: None,
            event: ev,
        });
    }
    if let Some(r) = &u.message_reaction {
        return Some(Inbound {
            sender: r.user.as_ref().map(sender_of),
            private: r.chat.is_private(),
            message: false,
            record: None,
            callback: None,
            event: reaction_event(update_id, r, ids),
        });
    }
    let q = u.callback_query.as_ref()?;
    Some(Inbound {
        sender: Some(sender_of(&q.from)),
        private: q.message.as_ref().is_some_and(|m| m.chat.is_private()),
        message: false,
        record: None,
        callback: Some(CallbackQueryId(q.id.clone())),
        event: callback_event(update_id, q)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(v: Value) -> Update {
        // As metrod reads it.
        match super::super::update::read(v) {
            super::super::update::Read::Update(u) => *u,
            other => panic!("not readable: {other:?}"),
        }
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
