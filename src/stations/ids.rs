//! metro event ids ↔ platform message ids, for every chat station.
//!
//! Platforms name messages their own way (Telegram numbers them per chat,
//! Discord uses global snowflakes); metro names every event `msg_…`.
//! Agents may use either in `messageId` and `replyTo`, so each platform
//! event that has platform messages (inbound, and every `send`) is recorded
//! here: in memory (the newest [`MAX_IDS`]) and appended to
//! `<state dir>/<station>-ids.jsonl`, one `{"id","line","messageIds"}` per
//! line, read back at startup (and rewritten without its oldest lines when
//! it has grown past twice the bound). The file is a cache of what the log
//! says: a lookup that misses here falls back to the log itself.
//!
//! A message id is unique within a *scope* that the station derives from
//! the line (Telegram: the chat, so topics of one chat share it; Discord:
//! the channel). Ids are kept as strings; files written when Telegram's
//! were numbers still load.

use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Deserializer, Serialize};

/// Ids remembered in memory (and kept in the file after a compaction).
pub const MAX_IDS: usize = 100_000;

/// One event and its platform messages (several for a split text or an
/// album; the first is the one replies and reactions go to).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rec {
    pub id: String,
    pub line: String,
    #[serde(deserialize_with = "strings_or_numbers")]
    pub message_ids: Vec<String>,
}

fn strings_or_numbers<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Id {
        S(String),
        N(i64),
    }
    Ok(Vec::<Id>::deserialize(d)?
        .into_iter()
        .map(|i| match i {
            Id::S(s) => s,
            Id::N(n) => n.to_string(),
        })
        .collect())
}

/// The scope of a line's message ids (`None`: not this station's line).
pub type Scope = fn(&str) -> Option<String>;

struct Map {
    scope: Scope,
    by_metro: HashMap<String, Rec>,
    by_platform: HashMap<(String, String), String>,
    order: VecDeque<String>,
}

impl Map {
    fn insert(&mut self, rec: Rec) {
        let Some(scope) = (self.scope)(&rec.line) else {
            return;
        };
        for m in &rec.message_ids {
            self.by_platform
                .insert((scope.clone(), m.clone()), rec.id.clone());
        }
        if self.by_metro.insert(rec.id.clone(), rec.clone()).is_none() {
            self.order.push_back(rec.id);
        }
        while self.order.len() > MAX_IDS {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(r) = self.by_metro.remove(&old) {
                if let Some(scope) = (self.scope)(&r.line) {
                    for m in r.message_ids {
                        let key = (scope.clone(), m);
                        if self.by_platform.get(&key) == Some(&old) {
                            self.by_platform.remove(&key);
                        }
                    }
                }
            }
        }
    }
}

/// The id map of one station.
pub struct Ids {
    path: PathBuf,
    map: Mutex<Map>,
    file: Mutex<Option<File>>,
}

impl Ids {
    /// Loads `state_dir/file` (missing → empty; unparsable lines are
    /// skipped, a torn last line included).
    pub fn open(state_dir: &Path, file: &str, scope: Scope) -> io::Result<Ids> {
        let path = state_dir.join(file);
        let mut map = Map {
            scope,
            by_metro: HashMap::new(),
            by_platform: HashMap::new(),
            order: VecDeque::new(),
        };
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

    /// The platform messages of a metro event.
    pub fn platform(&self, metro_id: &str) -> Option<Rec> {
        self.map.lock().ok()?.by_metro.get(metro_id).cloned()
    }

    /// The platform messages of metro event `id`: from the map, else from
    /// the log (`station`'s events; an event on another kind of line is a
    /// bad request).
    pub async fn find(
        &self,
        log: &crate::store::log::Log,
        id: &str,
        station: &str,
    ) -> Result<Option<Rec>, crate::proto::WireError> {
        if let Some(rec) = self.platform(id) {
            return Ok(Some(rec));
        }
        let Some(e) = crate::stations::text::find_in_log(log, id, |e| e["id"] == id).await? else {
            return Ok(None);
        };
        let line = e["line"].as_str().unwrap_or_default().to_string();
        let scope = self.map.lock().map(|m| m.scope).ok();
        if scope.and_then(|f| f(&line)).is_none() {
            return Err(crate::proto::WireError::bad_request(format!(
                "{id} is a message on {line}, not on a {station} line"
            )));
        }
        let mut message_ids: Vec<String> = e["messageIds"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m.as_str().map(str::to_string))
            .collect();
        if message_ids.is_empty() {
            if let Some(m) = e["messageId"].as_str() {
                message_ids.push(m.to_string());
            }
        }
        Ok(Some(Rec {
            id: id.to_string(),
            line,
            message_ids,
        }))
    }

    /// A `messageId` or `replyTo` (field `field`) → `station`'s message id
    /// in `scope` (a chat, a channel): a metro id (`msg_…`: the map, then
    /// the log) of a message there, or the platform's own positive id.
    pub async fn resolve<T>(
        &self,
        log: &crate::store::log::Log,
        station: &str,
        scope: &str,
        raw: &str,
        field: &str,
    ) -> Result<T, crate::proto::WireError>
    where
        T: std::str::FromStr + PartialOrd + From<u8>,
    {
        use crate::proto::WireError;
        let raw = raw.trim();
        let positive = |s: &str| s.parse::<T>().ok().filter(|n| *n > T::from(0));
        if !raw.starts_with("msg_") {
            return positive(raw).ok_or_else(|| {
                WireError::bad_request(format!(
                    "field `{field}`: {raw:?} is neither a metro id (msg_…) nor a {station} message id"
                ))
            });
        }
        let rec = self.find(log, raw, station).await?.ok_or_else(|| {
            WireError::not_found(format!(
                "field `{field}`: no {station} message is known as {raw}"
            ))
        })?;
        let theirs = self.map.lock().ok().and_then(|m| (m.scope)(&rec.line));
        if theirs.as_deref() != Some(scope) {
            return Err(WireError::bad_request(format!(
                "field `{field}`: {raw} is a message on {}, not in this conversation",
                rec.line
            )));
        }
        rec.message_ids
            .first()
            .and_then(|m| positive(m))
            .ok_or_else(|| {
                WireError::not_found(format!("field `{field}`: {raw} has no {station} message"))
            })
    }

    /// The metro event of platform message `message` in `scope`.
    pub fn metro(&self, scope: &str, message: &str) -> Option<Rec> {
        let m = self.map.lock().ok()?;
        let id = m
            .by_platform
            .get(&(scope.to_string(), message.to_string()))?;
        m.by_metro.get(id).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(line: &str) -> Option<String> {
        line.strip_prefix("metro://discord/").map(str::to_string)
    }

    #[test]
    fn survives_reopen_maps_both_ways_and_reads_numeric_ids() {
        let dir = tempfile::tempdir().unwrap();
        let ids = Ids::open(dir.path(), "discord-ids.jsonl", channel).unwrap();
        ids.record(Rec {
            id: "msg_a".into(),
            line: "metro://discord/5".into(),
            message_ids: vec!["10".into(), "11".into()],
        });
        drop(ids);
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join("discord-ids.jsonl"))
            .unwrap();
        // Numbers, as Telegram's file had them; then a torn line.
        f.write_all(b"{\"id\":\"msg_b\",\"line\":\"metro://discord/7\",\"messageIds\":[10]}\n{\"id\":\"msg_c\",\"li")
            .unwrap();
        let ids = Ids::open(dir.path(), "discord-ids.jsonl", channel).unwrap();
        assert_eq!(ids.platform("msg_a").unwrap().message_ids, ["10", "11"]);
        assert_eq!(ids.metro("5", "11").unwrap().id, "msg_a");
        assert_eq!(ids.metro("7", "10").unwrap().id, "msg_b");
        assert!(ids.metro("7", "11").is_none());
        assert!(ids.platform("msg_c").is_none());
    }
}
