//! Gateway dispatches → metro events, without I/O: what a message, an
//! edit, a reaction or a button press becomes (kind, line, sender, text,
//! attachments, `replyTo`, the key that recognises it again).
//!
//! - `MESSAGE_CREATE` → `inbound` (text, attachments, `replyTo` from the
//!   reply's message reference); `MESSAGE_UPDATE` with an edit time →
//!   `edit` (linked to the stored original by `originalId`);
//!   `MESSAGE_REACTION_ADD` / `_REMOVE` → `react` (a removal has `emoji`
//!   `""` and says which one went in `removedEmoji`); a button press
//!   (`INTERACTION_CREATE`, message component) → `callback` with the
//!   button's id as `text`.
//!
//! Owns: the mapping. Must not import: `broker`, `server`, the log.

use serde_json::{json, Value};
use serenity::all::ChannelId;

use super::dispatch::{
    Attachment, Dispatch, Message, Press, Reaction, Update, User, REGULAR, REPLY,
};
use super::{line_of, Discord};
use crate::proto::Event;

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
    if m.kind == REPLY {
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
    matches!(m.kind, REGULAR | REPLY) && (!m.content.is_empty() || !m.attachments.is_empty())
}

pub(super) fn created(m: &Message) -> Option<Inbound> {
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

fn updated(u: &Update, dc: &Discord) -> Option<Inbound> {
    // Embeds unfolding and pins update a message too; only an edit has an
    // edit time and text.
    let (Some(text), Some(at), Some(author)) = (&u.content, &u.edited_timestamp, &u.author) else {
        return None;
    };
    let mut ev = base_event("edit", u.channel_id);
    let nick = u.member.as_ref().and_then(|p| p.nick.as_deref());
    let mut sender = sender_of(author, nick);
    sender.bot |= u.webhook_id.is_some();
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
    let member = r
        .member
        .as_ref()
        .and_then(|m| Some((m.user.as_ref()?, m.nick.as_deref())));
    let sender = match member {
        Some((u, nick)) => sender_of(u, nick),
        None => Sender {
            id: user.get(),
            name: user.to_string(),
            bot: false,
        },
    };
    ev.from = user_uri(user.get());
    if member.is_some() {
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

fn pressed(c: &Press) -> Inbound {
    let sender = sender_of(&c.user, c.nick.as_deref());
    let mut ev = base_event("callback", c.channel_id);
    ev.from = user_uri(sender.id);
    ev.from_name = Some(sender.name.clone());
    ev.message_id = Some(c.message_id.to_string());
    ev.text = Some(c.custom_id.clone());
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
        Dispatch::Created(m) => created(m),
        Dispatch::Updated(u) => updated(u, dc),
        Dispatch::Reacted { reaction, added } => reacted(reaction, *added, dc),
        Dispatch::Pressed(c) => Some(pressed(c)),
        Dispatch::Other => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(v: Value) -> Message {
        super::super::dispatch::message(v).expect("a message")
    }

    fn base(content: &str) -> Value {
        json!({
            "id": "1001", "channel_id": "42", "content": content,
            "author": {"id": "7", "username": "ann", "discriminator": "0000", "global_name": "Ann"},
            "timestamp": "2026-11-29T10:00:00.000000+00:00", "edited_timestamp": null,
            "tts": false, "mention_everyone": false, "mentions": [], "mention_roles": [],
            "attachments": [], "embeds": [], "pinned": false, "type": 0
        })
    }

    #[test]
    fn a_message_becomes_an_inbound_event_on_its_channel() {
        let mut v = base("deploy?");
        // A reply (type 19) names the message it answers.
        v["type"] = json!(19);
        v["message_reference"] = json!({"message_id": "999", "channel_id": "42"});
        let i = created(&msg(v)).expect("stored");
        assert_eq!(i.event.kind, "inbound");
        assert_eq!(i.event.line, "metro://discord/42");
        assert_eq!(i.event.from, "metro://discord/user/7");
        assert_eq!(i.event.text.as_deref(), Some("deploy?"));
        assert_eq!(i.event.message_id.as_deref(), Some("1001"));
        assert_eq!(i.event.reply_to.as_deref(), Some("999"));
        assert_eq!(i.sender.as_ref().map(|s| s.id), Some(7));
        assert_eq!(
            i.key.as_deref(),
            key_of("inbound", Some("1001"), None).as_deref()
        );
    }

    #[test]
    fn keys_tell_an_edit_from_its_message() {
        let first = key_of("inbound", Some("5"), None);
        let edit = key_of("edit", Some("5"), Some("2026-11-29T10:00:01Z"));
        assert!(first.is_some() && edit.is_some());
        assert_ne!(first, edit);
        assert_eq!(key_of("inbound", None, None), None);
    }

    #[test]
    fn a_system_message_is_not_stored() {
        let mut v = base("");
        v["type"] = json!(7); // member join
        assert!(created(&msg(v)).is_none());
    }
}
