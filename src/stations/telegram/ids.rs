//! metro event ids ↔ Telegram message ids: the shared id map
//! ([`crate::stations::ids`]) in `telegram-ids.jsonl`, scoped by chat
//! (Telegram numbers messages per chat; the topics of a forum share the
//! chat's numbering), with Telegram's numeric ids.

use std::io;
use std::path::Path;

use crate::stations::ids as shared;

pub const FILE: &str = "telegram-ids.jsonl";

/// One event and its Telegram messages (several for a split text or an
/// album; the first is the one replies and reactions go to).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rec {
    pub id: String,
    pub line: String,
    pub message_ids: Vec<i32>,
}

impl Rec {
    pub fn chat(&self) -> Option<i64> {
        super::parse_line(&self.line).map(|(c, _)| c)
    }

    fn from_shared(r: shared::Rec) -> Rec {
        Rec {
            message_ids: r
                .message_ids
                .iter()
                .filter_map(|m| m.parse().ok())
                .collect(),
            id: r.id,
            line: r.line,
        }
    }
}

fn chat_scope(line: &str) -> Option<String> {
    super::parse_line(line).map(|(c, _)| c.to_string())
}

pub struct Ids(shared::Ids);

impl Ids {
    pub fn open(state_dir: &Path) -> io::Result<Ids> {
        shared::Ids::open(state_dir, FILE, chat_scope).map(Ids)
    }

    pub fn record(&self, rec: Rec) {
        self.0.record(shared::Rec {
            id: rec.id,
            line: rec.line,
            message_ids: rec.message_ids.iter().map(i32::to_string).collect(),
        });
    }

    /// The Telegram messages of a metro event.
    pub fn telegram(&self, metro_id: &str) -> Option<Rec> {
        self.0.platform(metro_id).map(Rec::from_shared)
    }

    /// A `messageId` / `replyTo` → the Telegram message id in `chat`.
    pub async fn resolve(
        &self,
        log: &crate::store::log::Log,
        chat: i64,
        raw: &str,
        field: &str,
    ) -> Result<i32, crate::proto::WireError> {
        self.0
            .resolve(log, "telegram", &chat.to_string(), raw, field)
            .await
    }

    /// The metro event of a Telegram message, with its line.
    pub fn metro(&self, chat: i64, message: i32) -> Option<Rec> {
        self.0
            .metro(&chat.to_string(), &message.to_string())
            .map(Rec::from_shared)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_share_their_chat_numbering() {
        let dir = tempfile::tempdir().unwrap();
        let ids = Ids::open(dir.path()).unwrap();
        ids.record(Rec {
            id: "msg_a".into(),
            line: "metro://telegram/-100/5".into(),
            message_ids: vec![10, 11],
        });
        drop(ids);
        let ids = Ids::open(dir.path()).unwrap();
        assert_eq!(ids.telegram("msg_a").unwrap().message_ids, vec![10, 11]);
        assert_eq!(ids.metro(-100, 11).unwrap().id, "msg_a");
        assert!(ids.metro(-100, 12).is_none());
    }
}
