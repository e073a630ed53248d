//! Platform keys across nodes: one copy of each platform update in every
//! node's log. A chat station runs on one node at a time, but at a
//! takeover an update the old holder stored and had not yet published
//! (nor confirmed to the platform) reaches the new holder too, which
//! stores it under another id; the old holder's copy follows when it
//! publishes again. So before appending another node's station event the
//! consumer looks up its platform key — Telegram's `updateId`, Discord's
//! message key ([`crate::stations::discord::map::key_of`]) — and skips
//! it when the local log already holds an event with that key.
//!
//! [`Known`] holds the keys of the newest [`KNOWN_KEYS`] such events of
//! the local log, own and replicated (about 6 MiB at most: each key is
//! kept in the set and in the order of insertion): seeded at startup from
//! the log's last [`super::consume::SEED_BYTES`], then kept up by reading
//! whatever the log gained since (own station events, the replicas
//! appended) before each look-up. While the station runs on this node the
//! consumer also claims the key in the station's recent keys (see
//! [`super::consume`]).
//!
//! Owns: the key of a logged event and the bounded set. Must not import
//! the server or the daemon.

use std::collections::{HashSet, VecDeque};

use serde::Deserialize;

use crate::proto::Event;
use crate::store::log::Log;

/// Platform keys remembered.
pub const KNOWN_KEYS: usize = 32_768;

/// What recognises a platform event in any node's log: the station and
/// the key its inbound pipeline dedupes by (`core::StationCore`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformKey {
    pub station: &'static str,
    pub key: String,
}

impl PlatformKey {
    fn joined(&self) -> Box<str> {
        format!("{}\u{0}{}", self.station, self.key).into()
    }
}

/// The key of an event as the stations name it: a Telegram event with an
/// `updateId`; a Discord message or edit that came from Discord (agents'
/// own sends carry none). `None` for everything else.
fn key_of(
    station: &str,
    kind: &str,
    from: &str,
    update_id: Option<u64>,
    message_id: Option<&str>,
    edited_at: Option<&str>,
) -> Option<PlatformKey> {
    match station {
        "telegram" => {
            let u = u32::try_from(update_id?).ok()?;
            Some(PlatformKey {
                station: "telegram",
                key: crate::stations::telegram::update_key(u),
            })
        }
        "discord" if from.starts_with("metro://discord/") => Some(PlatformKey {
            station: "discord",
            key: crate::stations::discord::map::key_of(kind, message_id, edited_at)?,
        }),
        _ => None,
    }
}

/// The platform key of `event`.
pub fn of_event(event: &Event) -> Option<PlatformKey> {
    let str_of = |k: &str| event.extra.get(k).and_then(|v| v.as_str());
    key_of(
        &event.station,
        &event.kind,
        &event.from,
        event.extra.get("updateId").and_then(|v| v.as_u64()),
        event.message_id.as_deref(),
        str_of("editedAt"),
    )
}

/// The platform key of a logged line (`None` when it is not an event or
/// has none).
pub fn of_json(json: &[u8]) -> Option<PlatformKey> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Head {
        #[serde(default)]
        station: String,
        #[serde(default)]
        kind: String,
        #[serde(default)]
        from: String,
        #[serde(default)]
        update_id: Option<u64>,
        #[serde(default)]
        message_id: Option<String>,
        #[serde(default)]
        edited_at: Option<String>,
    }
    let h = serde_json::from_slice::<Head>(json).ok()?;
    key_of(
        &h.station,
        &h.kind,
        &h.from,
        h.update_id,
        h.message_id.as_deref(),
        h.edited_at.as_deref(),
    )
}

/// Whether a station's events can carry a platform key (a cheap filter
/// before parsing a line).
fn keyed_station(station: &str) -> bool {
    matches!(station, "telegram" | "discord")
}

/// The platform keys of the newest events of the local log, oldest
/// forgotten first, and the offset up to which the log was read.
#[derive(Default)]
pub struct Known {
    set: HashSet<Box<str>>,
    order: VecDeque<Box<str>>,
    /// The log was read up to here (an entry boundary).
    read_to: u64,
}

impl Known {
    pub fn contains(&self, k: &PlatformKey) -> bool {
        self.set.contains(&k.joined())
    }

    pub fn insert(&mut self, k: &PlatformKey) {
        let j = k.joined();
        if self.set.insert(j.clone()) {
            self.order.push_back(j);
            while self.order.len() > KNOWN_KEYS {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }

    /// How many keys it holds (at most [`KNOWN_KEYS`]).
    pub fn len(&self) -> usize {
        self.set.len()
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// The keys in the last `bytes` of `log` (a blocking read, at
    /// startup).
    pub fn seed(log: &Log, bytes: u64) -> Known {
        let mut known = Known {
            read_to: log.end(),
            ..Known::default()
        };
        let r = log.for_each_recent_entry_blocking(bytes, |end, json| {
            if let Some(k) = of_json(json) {
                known.insert(&k);
            }
            known.read_to = known.read_to.max(end);
        });
        if let Err(e) = r {
            tracing::warn!("cluster: could not read the log's end for platform keys: {e}");
        }
        known
    }

    /// Reads what the log gained since the last call: the keys of its
    /// station events.
    pub async fn catch_up(&mut self, log: &Log) {
        loop {
            let end = log.end();
            if self.read_to >= end {
                return;
            }
            match log.read_from(self.read_to, end).await {
                Ok(entries) if !entries.is_empty() => {
                    for e in &entries {
                        if keyed_station(&e.meta.station) {
                            if let Some(k) = of_json(&e.json) {
                                self.insert(&k);
                            }
                        }
                        self.read_to = e.end;
                    }
                }
                Ok(_) => return,
                Err(e) => {
                    // Retention took what was not read yet (or the file
                    // could not be read): go on from the end.
                    tracing::warn!(
                        "cluster: could not read the log from offset {} for platform keys: {e}",
                        self.read_to
                    );
                    self.read_to = end;
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_of_telegram_and_discord_events() {
        let tg = of_json(
            br#"{"id":"msg_1","station":"telegram","kind":"inbound","from":"metro://telegram/user/5","updateId":42}"#,
        );
        assert_eq!(
            tg,
            Some(PlatformKey {
                station: "telegram",
                key: "42".into()
            })
        );
        let dc = of_json(
            br#"{"id":"msg_2","station":"discord","kind":"inbound","from":"metro://discord/user/7","messageId":"99"}"#,
        );
        assert_eq!(dc.map(|k| k.key), Some("m:99".into()));
        // An agent's send on a Discord line is not a platform event.
        assert_eq!(
            of_json(
                br#"{"station":"discord","kind":"outbound","from":"metro://claude/user/1","messageId":"99"}"#
            ),
            None
        );
        assert_eq!(
            of_json(br#"{"station":"telegram","kind":"outbound"}"#),
            None
        );
        assert_eq!(of_json(b"not json"), None);
        let mut ev = Event {
            station: "telegram".into(),
            kind: "inbound".into(),
            ..Event::default()
        };
        ev.extra.insert("updateId".into(), json!(42));
        assert_eq!(of_event(&ev), tg);
    }

    #[test]
    fn known_keys_are_bounded_and_forget_the_oldest() {
        let mut k = Known::default();
        let key = |i: usize| PlatformKey {
            station: "telegram",
            key: i.to_string(),
        };
        for i in 0..KNOWN_KEYS + 10 {
            k.insert(&key(i));
        }
        assert_eq!(k.len(), KNOWN_KEYS);
        assert_eq!(k.order.len(), KNOWN_KEYS);
        assert!(!k.contains(&key(0)) && !k.contains(&key(9)));
        assert!(k.contains(&key(10)) && k.contains(&key(KNOWN_KEYS + 9)));
        k.insert(&key(10));
        assert_eq!(k.order.len(), KNOWN_KEYS, "a known key is not added twice");
        let other = PlatformKey {
            station: "discord",
            key: "10".into(),
        };
        assert!(!k.contains(&other), "keys of different stations differ");
    }
}
