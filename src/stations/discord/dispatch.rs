//! What metro reads of a gateway dispatch or of a listed message (issue
//! 14, item 9): only the fields [`super::map`] uses; unknown ones are
//! ignored. serenity's `Message`, `Member` and interaction types require
//! much that metro never reads (`timestamp`, `tts`, `mentions`, `roles`,
//! `joined_at`, `application_id`, …); a payload that leaves it out is still
//! stored.
//!
//! The gateway thread hands every dispatch metro keeps to [`read`] as JSON
//! (serenity's own parse turned back into JSON, or — when serenity could
//! not read it — the raw `d` that serenity passes on as
//! `Event::Unknown`); listings (`fetch`, the read-back after READY) are
//! read as a list of JSON values, then each message with [`message`]. What
//! lacks a field metro needs is skipped and logged with its id and the
//! field, never a value.
//!
//! What each must contain: a message `id`, `channel_id`, `author.id` (for
//! a listing, `content`, `type`, `timestamp` and the rest are optional: no
//! `type` is a plain message, no `timestamp` the id's time); an attachment
//! `id`, `filename`, `url`; `MESSAGE_UPDATE` `id`, `channel_id` (an edit
//! also `content`, `edited_timestamp`, `author.id`); a reaction
//! `channel_id`, `message_id`, `emoji`; `INTERACTION_CREATE` `type` (a
//! button press, type 3, also `id`, `token`, `data.custom_id`,
//! `message.id`, `channel_id` or `channel.id`, `member.user.id` or
//! `user.id`).

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;
use serenity::all::{
    AttachmentId, ChannelId, GuildId, InteractionId, MessageId, ReactionType, Timestamp, UserId,
    WebhookId,
};

/// `type` of a plain message and of a reply.
pub const REGULAR: u64 = 0;
pub const REPLY: u64 = 19;
/// `type` of an interaction from a message component (a button).
pub const COMPONENT: u64 = 3;

/// The dispatches metro keeps.
pub const KINDS: [&str; 5] = [
    "MESSAGE_CREATE",
    "MESSAGE_UPDATE",
    "MESSAGE_REACTION_ADD",
    "MESSAGE_REACTION_REMOVE",
    "INTERACTION_CREATE",
];

/// A user (an author, a member's user, a presser).
#[derive(Debug, Clone, Deserialize)]
pub struct User {
    pub id: UserId,
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub global_name: Option<String>,
    #[serde(default)]
    pub bot: bool,
}

impl User {
    /// The name shown in Discord: the global name, else the user name.
    pub fn display_name(&self) -> &str {
        self.global_name.as_deref().unwrap_or(&self.username)
    }
}

/// A guild member: a nickname, and (in reactions and interactions) the
/// user.
#[derive(Debug, Clone, Deserialize)]
pub struct Member {
    #[serde(default)]
    pub user: Option<User>,
    #[serde(default)]
    pub nick: Option<String>,
}

/// The message a reply answers.
#[derive(Debug, Clone, Deserialize)]
pub struct Reference {
    #[serde(default)]
    pub message_id: Option<MessageId>,
}

/// A file of a message.
#[derive(Debug, Clone, Deserialize)]
pub struct Attachment {
    pub id: AttachmentId,
    pub filename: String,
    pub url: String,
    #[serde(default)]
    pub size: Option<u64>,
    #[serde(default)]
    pub content_type: Option<String>,
    #[serde(default)]
    pub width: Option<u32>,
    #[serde(default)]
    pub height: Option<u32>,
    #[serde(default)]
    pub duration_secs: Option<f64>,
}

/// A message (`MESSAGE_CREATE`, an entry of a listing).
#[derive(Debug, Clone, Deserialize)]
pub struct Message {
    pub id: MessageId,
    pub channel_id: ChannelId,
    pub author: User,
    #[serde(default)]
    pub content: String,
    #[serde(default, rename = "type")]
    pub kind: u64,
    #[serde(default)]
    pub message_reference: Option<Reference>,
    #[serde(default)]
    pub attachments: Vec<Attachment>,
    #[serde(default)]
    pub member: Option<Member>,
    #[serde(default)]
    pub guild_id: Option<GuildId>,
    #[serde(default)]
    pub webhook_id: Option<WebhookId>,
    #[serde(default)]
    pub timestamp: Option<Timestamp>,
    #[serde(default)]
    pub edited_timestamp: Option<Timestamp>,
}

impl Message {
    /// When it was sent: its `timestamp`, else its id's time.
    pub fn sent_at(&self) -> Timestamp {
        self.timestamp.unwrap_or_else(|| self.id.created_at())
    }
}

/// `MESSAGE_UPDATE`: a partial message (embeds unfolding, pins, edits).
#[derive(Debug, Clone, Deserialize)]
pub struct Update {
    pub id: MessageId,
    pub channel_id: ChannelId,
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default)]
    pub edited_timestamp: Option<Timestamp>,
    #[serde(default)]
    pub author: Option<User>,
    #[serde(default)]
    pub member: Option<Member>,
    #[serde(default)]
    pub webhook_id: Option<WebhookId>,
    #[serde(default)]
    pub attachments: Option<Vec<Attachment>>,
    #[serde(default)]
    pub guild_id: Option<GuildId>,
}

/// `MESSAGE_REACTION_ADD` / `_REMOVE`.
#[derive(Debug, Clone, Deserialize)]
pub struct Reaction {
    #[serde(default)]
    pub user_id: Option<UserId>,
    pub channel_id: ChannelId,
    pub message_id: MessageId,
    #[serde(default)]
    pub guild_id: Option<GuildId>,
    #[serde(default)]
    pub member: Option<Member>,
    pub emoji: ReactionType,
}

/// A button press (`INTERACTION_CREATE` of type 3), as read.
#[derive(Debug, Clone, Deserialize)]
struct RawPress {
    id: InteractionId,
    token: String,
    data: PressData,
    message: PressMessage,
    #[serde(default)]
    channel_id: Option<ChannelId>,
    #[serde(default)]
    channel: Option<PressChannel>,
    #[serde(default)]
    guild_id: Option<GuildId>,
    #[serde(default)]
    member: Option<Member>,
    #[serde(default)]
    user: Option<User>,
}

#[derive(Debug, Clone, Deserialize)]
struct PressData {
    custom_id: String,
}

#[derive(Debug, Clone, Deserialize)]
struct PressMessage {
    id: MessageId,
}

#[derive(Debug, Clone, Deserialize)]
struct PressChannel {
    id: ChannelId,
}

/// A button press: who pressed which button on which message.
#[derive(Debug, Clone)]
pub struct Press {
    pub id: InteractionId,
    pub token: String,
    pub custom_id: String,
    pub message_id: MessageId,
    pub channel_id: ChannelId,
    pub guild_id: Option<GuildId>,
    pub user: User,
    pub nick: Option<String>,
}

/// A dispatch metro keeps, read.
#[derive(Debug, Clone)]
pub enum Dispatch {
    Created(Box<Message>),
    Updated(Box<Update>),
    Reacted {
        reaction: Box<Reaction>,
        added: bool,
    },
    Pressed(Box<Press>),
    /// A kind metro does not keep (an interaction that is not a button).
    Other,
}

/// What was not readable: the payload's id when it has one, and the
/// field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    pub id: Option<String>,
    pub why: String,
}

fn id_of(v: &Value) -> Option<String> {
    match v.get("id")? {
        Value::String(s) if s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit()) => {
            Some(s.clone())
        }
        Value::Number(n) => n.as_u64().map(|n| n.to_string()),
        _ => None,
    }
}

fn decode<T: DeserializeOwned>(v: Value) -> Result<T, Unreadable> {
    let id = id_of(&v);
    crate::stations::lenient::decode(v).map_err(|why| Unreadable { id, why })
}

/// READY as metro reads it when serenity's strict `Ready` cannot: the
/// bot user (`user.id`; `user.username` optional) and, for the log, the
/// session id.
#[derive(Debug, Clone, Deserialize)]
pub struct Ready {
    pub user: User,
    #[serde(default)]
    pub session_id: Option<String>,
}

/// A READY's `d`.
pub fn ready(v: Value) -> Result<Ready, Unreadable> {
    decode(v)
}

/// One message of a listing (or of `MESSAGE_CREATE`).
pub fn message(v: Value) -> Result<Message, Unreadable> {
    decode(v)
}

/// The `d` of a dispatch of kind `t` (one of [`KINDS`]).
pub fn read(t: &str, d: Value) -> Result<Dispatch, Unreadable> {
    Ok(match t {
        "MESSAGE_CREATE" => Dispatch::Created(Box::new(message(d)?)),
        "MESSAGE_UPDATE" => Dispatch::Updated(Box::new(decode(d)?)),
        "MESSAGE_REACTION_ADD" | "MESSAGE_REACTION_REMOVE" => Dispatch::Reacted {
            reaction: Box::new(decode(d)?),
            added: t == "MESSAGE_REACTION_ADD",
        },
        "INTERACTION_CREATE" => {
            #[derive(Deserialize)]
            struct Kind {
                #[serde(rename = "type")]
                kind: u64,
            }
            let id = id_of(&d);
            if decode::<Kind>(d.clone())?.kind != COMPONENT {
                return Ok(Dispatch::Other);
            }
            let p: RawPress = decode(d)?;
            let missing = |what: &str| Unreadable {
                id: id.clone(),
                why: format!("missing field {what} in the payload"),
            };
            let channel_id = p
                .channel_id
                .or(p.channel.map(|c| c.id))
                .ok_or_else(|| missing("`channel_id` (or `channel.id`)"))?;
            let nick = p.member.as_ref().and_then(|m| m.nick.clone());
            let user = p
                .member
                .and_then(|m| m.user)
                .or(p.user)
                .ok_or_else(|| missing("`member.user` (or `user`)"))?;
            Dispatch::Pressed(Box::new(Press {
                id: p.id,
                token: p.token,
                custom_id: p.data.custom_id,
                message_id: p.message.id,
                channel_id,
                guild_id: p.guild_id,
                user,
                nick,
            }))
        }
        _ => Dispatch::Other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_fewest_fields_make_a_message() {
        let m = message(json!({"id": "5", "channel_id": "42", "author": {"id": "7"}}))
            .expect("readable");
        assert_eq!(
            (m.id.get(), m.channel_id.get(), m.author.id.get()),
            (5, 42, 7)
        );
        assert_eq!((m.kind, m.content.as_str()), (REGULAR, ""));
        // No timestamp: the id's time.
        assert_eq!(m.sent_at(), m.id.created_at());
    }

    #[test]
    fn what_is_missing_is_named_with_the_id_and_no_value() {
        let e =
            message(json!({"id": "5", "channel_id": "42", "content": "secret words"})).unwrap_err();
        assert_eq!(e.id.as_deref(), Some("5"));
        assert_eq!(e.why, "missing field `author` in the payload");
        let e = message(json!({"id": "6", "channel_id": "42",
            "author": {"id": "7"}, "type": "secret words"}))
        .unwrap_err();
        assert_eq!(e.id.as_deref(), Some("6"));
        assert!(e.why.starts_with("type is not"), "{}", e.why);
        assert!(!e.why.contains("secret"), "{}", e.why);
    }

    #[test]
    fn a_press_needs_its_user_and_channel() {
        let press = json!({"id": "9", "type": 3, "token": "t", "data": {"custom_id": "yes"},
            "message": {"id": "5"}, "channel": {"id": "42"}, "member": {"user": {"id": "7"}}});
        let Ok(Dispatch::Pressed(p)) = read("INTERACTION_CREATE", press.clone()) else {
            panic!("a press")
        };
        assert_eq!((p.channel_id.get(), p.user.id.get()), (42, 7));
        let mut no_user = press;
        no_user.as_object_mut().unwrap().remove("member");
        let e = read("INTERACTION_CREATE", no_user).unwrap_err();
        assert_eq!(e.id.as_deref(), Some("9"));
        assert!(e.why.contains("`member.user` (or `user`)"), "{}", e.why);
        let command = json!({"id": "10", "type": 2});
        assert!(matches!(
            read("INTERACTION_CREATE", command),
            Ok(Dispatch::Other)
        ));
    }
}
