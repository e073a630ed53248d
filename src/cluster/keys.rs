//! Platform keys across nodes: one copy of each platform update in every
//! node's log. A chat station runs on one node at a time, but at a
//! takeover an update the old holder stored and had not yet published
//! (nor confirmed to the platform) reaches the new holder too, which
//! stores it under another id; the old holder's copy follows when it
//! publishes again. So before appending another node's station event the
//! consumer looks up its platform key — what its station's kind reads
//! back from it ([`StationKind::platform_key`]: Telegram's `updateId`,
//! Discord's message key) — and skips it when the local log already holds
//! an event with that key.
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
//! the server, the daemon or the stations (it asks the registered kinds).

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use serde::Deserialize;

use crate::proto::Event;
use crate::station::StationKind;
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

/// The platform keys of the newest events of the local log, oldest
/// forgotten first, and the offset up to which the log was read.
pub struct Known {
    /// The registered station kinds: an event's key is its station's
    /// kind's to say.
    kinds: Vec<Arc<dyn StationKind>>,
    set: HashSet<Box<str>>,
    order: VecDeque<Box<str>>,
    /// The log was read up to here (an entry boundary).
    read_to: u64,
}

impl Known {
    /// An empty set that asks `kinds` for keys (the log not read yet).
    pub fn new(kinds: Vec<Arc<dyn StationKind>>) -> Known {
        Known {
            kinds,
            set: HashSet::new(),
            order: VecDeque::new(),
            read_to: 0,
        }
    }

    /// The kind of `station`, when one is registered.
    fn kind(&self, station: &str) -> Option<&dyn StationKind> {
        self.kinds
            .iter()
            .find(|k| k.name() == station)
            .map(|k| k.as_ref())
    }

    /// The platform key of `event`, as its station's kind reads it.
    pub fn of_event(&self, event: &Event) -> Option<PlatformKey> {
        let kind = self.kind(&event.station)?;
        Some(PlatformKey {
            station: kind.name(),
            key: kind.platform_key(event)?,
        })
    }

    /// The platform key of a logged line (`None` when it is not an event,
    /// or its station has no kind here or gives it no key).
    pub fn of_json(&self, json: &[u8]) -> Option<PlatformKey> {
        // The station first (a cheap read), the whole event only for a
        // station registered here.
        #[derive(Deserialize)]
        struct Head<'a> {
            #[serde(default, borrow)]
            station: std::borrow::Cow<'a, str>,
        }
        let head = serde_json::from_slice::<Head>(json).ok()?;
        self.kind(&head.station)?;
        self.of_event(&serde_json::from_slice::<Event>(json).ok()?)
    }

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
    pub fn seed(log: &Log, bytes: u64, kinds: Vec<Arc<dyn StationKind>>) -> Known {
        let mut known = Known::new(kinds);
        known.read_to = log.end();
        let r = log.for_each_recent_entry_blocking(bytes, |end, json| {
            if let Some(k) = known.of_json(json) {
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
                        if self.kind(&e.meta.station).is_some() {
                            if let Some(k) = self.of_json(&e.json) {
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
    use crate::station::Station;

    /// A kind whose events' key is their `messageId`.
    struct Keyed;

    impl StationKind for Keyed {
        fn name(&self) -> &'static str {
            "keyed"
        }

        fn platform_key(&self, event: &Event) -> Option<String> {
            event.message_id.clone()
        }

        fn open(&self, _: &crate::station::StationCtx) -> std::io::Result<Arc<dyn Station>> {
            Err(std::io::Error::other("never opened"))
        }
    }

    fn known() -> Known {
        Known::new(vec![Arc::new(Keyed)])
    }

    #[test]
    fn an_event_s_key_is_its_station_kind_s() {
        let k = known();
        let line = |station: &str, mid: &str| {
            format!(
                r#"{{"id":"msg_1","ts":"t","station":"{station}","kind":"inbound","line":"metro://{station}/1","from":"metro://{station}/user/5","to":""{mid}}}"#
            )
        };
        let keyed = k.of_json(line("keyed", r#","messageId":"42""#).as_bytes());
        assert_eq!(
            keyed,
            Some(PlatformKey {
                station: "keyed",
                key: "42".into()
            })
        );
        assert_eq!(k.of_json(line("keyed", "").as_bytes()), None, "no key");
        assert_eq!(
            k.of_json(line("other", r#","messageId":"42""#).as_bytes()),
            None,
            "a station with no kind here has no keys"
        );
        assert_eq!(k.of_json(b"not json"), None);
        assert_eq!(k.of_json(br#"{"station":"keyed"}"#), None, "not an event");
        let ev = Event {
            station: "keyed".into(),
            kind: "inbound".into(),
            message_id: Some("42".into()),
            ..Event::default()
        };
        assert_eq!(k.of_event(&ev), keyed);
    }

    #[test]
    fn known_keys_are_bounded_and_forget_the_oldest() {
        let mut k = known();
        let key = |i: usize| PlatformKey {
            station: "keyed",
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
            station: "other",
            key: "10".into(),
        };
        assert!(!k.contains(&other), "keys of different stations differ");
    }
}
