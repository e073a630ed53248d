//! `getUpdates` answers read with only the fields metro uses (issue 14,
//! item 9): teloxide's `Update` requires much that metro never reads
//! (`date`, `file_unique_id`, `is_bot`, …), so a Bot API server that
//! leaves it out would lose the update. Unknown fields are ignored.
//!
//! The batch is read as a list of JSON values first, then each update on
//! its own ([`read`]): an update that lacks what metro needs is skipped
//! with its `update_id` in the log (never its text), and the rest of the
//! batch is kept.
//!
//! What an update must contain: `update_id`; a message (`message`,
//! `edited_message`) `message_id` and `chat.id`; a file its `file_id`; a
//! reaction (`message_reaction`) `chat.id` and `message_id`; a button
//! press (`callback_query`) `id` and `from.id`; any user `id`. Everything
//! else is optional (a user without `first_name` is named "").

use serde::Deserialize;
use serde_json::Value;

/// One update: at most one of its kinds is set (none: a kind metro does
/// not keep).
#[derive(Debug, Clone, Deserialize)]
pub struct Update {
    pub update_id: u32,
    #[serde(default)]
    pub message: Option<Message>,
    #[serde(default)]
    pub edited_message: Option<Message>,
    #[serde(default)]
    pub message_reaction: Option<Reaction>,
    #[serde(default)]
    pub callback_query: Option<Callback>,
}

/// A chat (a private one with a person, a group, a channel).
#[derive(Debug, Clone, Deserialize)]
pub struct Chat {
    pub id: i64,
    /// `private`, `group`, `supergroup`, `channel`; absent: not private.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub first_name: Option<String>,
    #[serde(default)]
    pub last_name: Option<String>,
}

impl Chat {
    pub fn is_private(&self) -> bool {
        self.kind.as_deref() == Some("private")
    }
}

/// A person or a bot.
#[derive(Debug, Clone, Deserialize)]
pub struct User {
    pub id: u64,
    #[serde(default)]
    pub first_name: String,
    #[serde(default)]
    pub last_name: Option<String>,
}

impl User {
    /// First and last name.
    pub fn full_name(&self) -> String {
        match &self.last_name {
            Some(l) => format!("{} {l}", self.first_name),
            None => self.first_name.clone(),
        }
    }
}

/// The message a reply answers: its id is all metro keeps.
#[derive(Debug, Clone, Deserialize)]
pub struct Replied {
    pub message_id: i32,
}

/// A message (new or edited).
#[derive(Debug, Clone, Deserialize)]
pub struct Message {
    pub message_id: i32,
    pub chat: Chat,
    #[serde(default)]
    pub from: Option<User>,
    /// Sent on behalf of a chat (a channel, an anonymous admin).
    #[serde(default)]
    pub sender_chat: Option<Chat>,
    #[serde(default)]
    pub is_topic_message: bool,
    #[serde(default)]
    pub message_thread_id: Option<i32>,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub caption: Option<String>,
    #[serde(default)]
    pub reply_to_message: Option<Replied>,
    #[serde(default)]
    pub media_group_id: Option<String>,
    #[serde(default)]
    pub photo: Option<Vec<Photo>>,
    #[serde(default)]
    pub document: Option<Media>,
    #[serde(default)]
    pub voice: Option<Media>,
    #[serde(default)]
    pub audio: Option<Media>,
    #[serde(default)]
    pub video: Option<Media>,
    #[serde(default)]
    pub animation: Option<Media>,
    #[serde(default)]
    pub video_note: Option<Media>,
    #[serde(default)]
    pub sticker: Option<Sticker>,
}

impl Message {
    /// The topic of a forum message (not the reply thread of a plain
    /// group).
    pub fn topic(&self) -> Option<i32> {
        if self.is_topic_message {
            self.message_thread_id
        } else {
            None
        }
    }
}

/// One size of a photo.
#[derive(Debug, Clone, Deserialize)]
pub struct Photo {
    pub file_id: String,
    #[serde(default)]
    pub file_size: Option<u64>,
    #[serde(default)]
    pub width: Option<u32>,
    #[serde(default)]
    pub height: Option<u32>,
}

/// A document, voice note, audio, video, animation or video note.
#[derive(Debug, Clone, Deserialize)]
pub struct Media {
    pub file_id: String,
    #[serde(default)]
    pub file_name: Option<String>,
    #[serde(default)]
    pub mime_type: Option<String>,
    #[serde(default)]
    pub file_size: Option<u64>,
    #[serde(default)]
    pub duration: Option<u32>,
}

/// A sticker.
#[derive(Debug, Clone, Deserialize)]
pub struct Sticker {
    pub file_id: String,
    #[serde(default)]
    pub emoji: Option<String>,
    #[serde(default)]
    pub file_size: Option<u64>,
}

/// A change of the reactions on a message.
#[derive(Debug, Clone, Deserialize)]
pub struct Reaction {
    pub chat: Chat,
    pub message_id: i32,
    #[serde(default)]
    pub user: Option<User>,
    /// Reacted on behalf of a chat (anonymous).
    #[serde(default)]
    pub actor_chat: Option<Chat>,
    #[serde(default)]
    pub new_reaction: Vec<ReactionType>,
}

/// One reaction: an emoji, or a custom or paid one (no `emoji`).
#[derive(Debug, Clone, Deserialize)]
pub struct ReactionType {
    #[serde(default)]
    pub emoji: Option<String>,
}

/// A button press.
#[derive(Debug, Clone, Deserialize)]
pub struct Callback {
    pub id: String,
    pub from: User,
    /// The message with the button (absent for inline-mode messages).
    #[serde(default)]
    pub message: Option<Pressed>,
    #[serde(default)]
    pub data: Option<String>,
}

/// The message a button was pressed on (accessible or not).
#[derive(Debug, Clone, Deserialize)]
pub struct Pressed {
    pub message_id: i32,
    pub chat: Chat,
    #[serde(default)]
    pub is_topic_message: bool,
    #[serde(default)]
    pub message_thread_id: Option<i32>,
}

impl Pressed {
    pub fn topic(&self) -> Option<i32> {
        if self.is_topic_message {
            self.message_thread_id
        } else {
            None
        }
    }
}

/// One entry of a `getUpdates` answer.
#[derive(Debug)]
pub enum Read {
    /// Readable: map and store it.
    Update(Box<Update>),
    /// Not readable; its `update_id` when it has one (the offset moves
    /// past it all the same).
    Unreadable { update_id: Option<u32>, why: String },
}

/// Reads one entry of a `getUpdates` answer. The reason for an unreadable
/// one names the field and what was expected, never a value of the update.
pub fn read(v: Value) -> Read {
    let update_id = v
        .get("update_id")
        .and_then(Value::as_u64)
        .and_then(|i| u32::try_from(i).ok());
    match crate::stations::lenient::decode::<Update>(v) {
        Ok(u) => Read::Update(Box::new(u)),
        Err(why) => Read::Unreadable { update_id, why },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_fewest_fields_are_enough() {
        let v =
            json!({"update_id": 5, "message": {"message_id": 1, "chat": {"id": 9}, "text": "hi"}});
        let Read::Update(u) = read(v) else {
            panic!("readable")
        };
        let m = u.message.expect("a message");
        assert_eq!((m.message_id, m.chat.id), (1, 9));
        assert!(!m.chat.is_private());
    }

    #[test]
    fn a_missing_chat_is_unreadable_and_keeps_its_id() {
        let v = json!({"update_id": 6, "message": {"message_id": 1, "text": "secret words"}});
        match read(v) {
            Read::Unreadable { update_id, why } => {
                assert_eq!(update_id, Some(6));
                assert_eq!(why, "missing field `chat` in message");
            }
            Read::Update(u) => panic!("read {u:?}"),
        }
    }

    #[test]
    fn a_wrong_type_is_named_without_its_value() {
        let v =
            json!({"update_id": 7, "message": {"message_id": 1, "chat": {"id": "secret words"}}});
        match read(v) {
            Read::Unreadable { update_id, why } => {
                assert_eq!(update_id, Some(7));
                assert_eq!(why, "message.chat.id is not i64");
            }
            Read::Update(u) => panic!("read {u:?}"),
        }
    }
}
