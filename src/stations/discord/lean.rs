//! Discord answers read with only the fields metro uses (issue 14, item
//! 9): serenity's `Message` and `CurrentUser` require fields metro never
//! reads (`timestamp`, `tts`, `mentions`, `discriminator`, …); an API
//! server that leaves them out is still good enough. Unknown fields are
//! ignored.
//!
//! What each answer must contain: `GET /users/@me` `id` and `username`; a
//! created message `id`; a message read back for `download` its
//! `attachments` (`filename`, `url`), for `react ""` its `reactions` (`me`,
//! `emoji`). Edits, reactions and interaction answers are not read.

use serde::Deserialize;
use serenity::all::{MessageId, ReactionType, UserId};

/// The bot (`GET /users/@me`).
#[derive(Debug, Clone, Deserialize)]
pub struct BotUser {
    pub id: UserId,
    pub username: String,
}

/// A message metro sent: its id is all metro keeps.
#[derive(Debug, Clone, Deserialize)]
pub struct Posted {
    pub id: MessageId,
}

/// A message's files, for `download`.
#[derive(Debug, Clone, Deserialize)]
pub struct Files {
    #[serde(default)]
    pub attachments: Vec<File>,
}

/// One file of a message.
#[derive(Debug, Clone, Deserialize)]
pub struct File {
    pub filename: String,
    pub url: String,
}

/// A message's reactions, for `react ""` (which removes the bot's own).
#[derive(Debug, Clone, Deserialize)]
pub struct Reactions {
    #[serde(default)]
    pub reactions: Vec<Reaction>,
}

/// One reaction of a message.
#[derive(Debug, Clone, Deserialize)]
pub struct Reaction {
    #[serde(default)]
    pub me: bool,
    pub emoji: ReactionType,
}
