//! metro event ids ↔ Telegram message ids.
//!
//! Telegram numbers messages per chat; metro names every event `msg_…`.
//! Agents may use either in `messageId` and `replyTo`, so each telegram
//! event that has Telegram messages (inbound, and every `send`) is recorded
//! here: in memory (the newest [`MAX_IDS`]) and appended to
//! `<state dir>/telegram-ids.jsonl`, one `{"id","line","messageIds"}` per
//! line, read back at startup (and rewritten without its oldest lines when
//! it has grown past twice the bound). The file is a cache of what the log
//! says: a lookup that misses here falls back to the log itself.

use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// Ids remembered in memory (and kept in the file after a compaction).
pub const MAX_IDS: usize = 100_000;
pub const FILE: &str = "telegram-ids.jsonl";

/// One event and its Telegram messages (several for a split text or an
/// album; the first is the one replies and reactions go to).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rec {
    pub id: String,
    pub line: String,
    pub message_ids: Vec<i32>,
}

impl Rec {
    pub fn chat(&self) -> Option<i64> {
        super::parse_line(&self.line).map(|(c, _)| c)
    }
}

#[derive(Default)]
struct Map {
    by_metro: HashMap<String, Rec>,
    by_telegram: HashMap<(i64, i32), String>,
    order: VecDeque<String>,
}

impl Map {
    fn insert(&mut self, rec: Rec) {
        let Some(chat) = rec.chat() else { return };
        for m in &rec.message_ids {
            self.by_telegram.insert((chat, *m), rec.id.clone());
        }
        if self.by_metro.insert(rec.id.clone(), rec.clone()).is_none() {
            self.order.push_back(rec.id);
        }
        while self.order.len() > MAX_IDS {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(r) = self.by_metro.remove(&old) {
                if let Some(chat) = r.chat() {
                    for m in r.message_ids {
                        if self.by_telegram.get(&(chat, m)) == Some(&old) {
                            self.by_telegram.remove(&(chat, m));
                        }
                    }
                }
            }
        }
    }
}

pub struct Ids {
    path: PathBuf,
    map: Mutex<Map>,
    file: Mutex<Option<File>>,
}

impl Ids {
    /// Loads the file (missing → empty; unparsable lines are skipped, a
    /// torn last line included).
    pub fn open(state_dir: &Path) -> io::Result<Ids> {
        let path = state_dir.join(FILE);
        let mut map = Map::default();
        let mut lines = 0usize;
        match std::fs::read(&path) {
            Ok(bytes) => {
                for line in bytes.split(|b| *b == b'\n') {
                    lines += 1;
                    if let Ok(rec) = serde_json::from_slice::<Rec>(line) {
                        map.insert(rec);
                    }
                }
                if bytes.last().is_some_and(|b| *b != b'\n') {
                    // A torn last line: end it, so the next record starts
                    // on a line of its own.
                    OpenOptions::new()
                        .append(true)
                        .open(&path)?
                        .write_all(b"\n")?;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("cannot read {}: {e}", path.display()),
                ))
            }
        }
        if lines > 2 * MAX_IDS {
            let mut body = Vec::new();
            for id in &map.order {
                if let Some(rec) = map.by_metro.get(id) {
                    serde_json::to_writer(&mut body, rec).map_err(io::Error::other)?;
                    body.push(b'\n');
                }
            }
            body.pop();
            crate::store::write_atomic(&path, &body, true)?;
        }
        Ok(Ids {
            path,
            map: Mutex::new(map),
            file: Mutex::new(None),
        })
    }

    /// Records `rec` in memory and in the file. A file that cannot be
    /// written only loses the cache (logged): the log still has the event.
    pub fn record(&self, rec: Rec) {
        if rec.message_ids.is_empty() {
            return;
        }
        let mut line = match serde_json::to_vec(&rec) {
            Ok(l) => l,
            Err(_) => return,
        };
        line.push(b'\n');
        if let Ok(mut m) = self.map.lock() {
            m.insert(rec);
        }
        let Ok(mut file) = self.file.lock() else {
            return;
        };
        if file.is_none() {
            match OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(&self.path)
            {
                Ok(f) => *file = Some(f),
                Err(e) => {
                    tracing::warn!("cannot open {}: {e}", self.path.display());
                    return;
                }
            }
        }
        if let Some(f) = file.as_mut() {
            if let Err(e) = f.write_all(&line) {
                tracing::warn!("cannot write {}: {e}", self.path.display());
                *file = None;
            }
        }
    }

    /// The Telegram messages of a metro event.
    pub fn telegram(&self, metro_id: &str) -> Option<Rec> {
        self.map.lock().ok()?.by_metro.get(metro_id).cloned()
    }

    /// The metro event of a Telegram message, with its line.
    pub fn metro(&self, chat: i64, message: i32) -> Option<Rec> {
        let m = self.map.lock().ok()?;
        let id = m.by_telegram.get(&(chat, message))?;
        m.by_metro.get(id).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_reopen_and_maps_both_ways() {
        let dir = tempfile::tempdir().unwrap();
        let ids = Ids::open(dir.path()).unwrap();
        ids.record(Rec {
            id: "msg_a".into(),
            line: "metro://telegram/-100/5".into(),
            message_ids: vec![10, 11],
        });
        ids.record(Rec {
            id: "msg_b".into(),
            line: "metro://telegram/7".into(),
            message_ids: vec![10],
        });
        drop(ids);
        // A torn last line (crash mid-write) is skipped.
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join(FILE))
            .unwrap();
        f.write_all(b"{\"id\":\"msg_c\",\"li").unwrap();
        let ids = Ids::open(dir.path()).unwrap();
        assert_eq!(ids.telegram("msg_a").unwrap().message_ids, vec![10, 11]);
        assert_eq!(ids.metro(-100, 11).unwrap().id, "msg_a");
        assert_eq!(ids.metro(7, 10).unwrap().id, "msg_b");
        assert!(ids.metro(7, 11).is_none());
        assert!(ids.telegram("msg_c").is_none());
    }
}
