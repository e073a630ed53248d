//! [`StationCore`]: what every inbound station keeps the same way — its
//! status in words (each change logged once, its secret never shown), the
//! counters the inbound pipeline ([`super::ingest`]) keeps, and its recent
//! keys (the dedupe set: what is already in the log, bounded, seeded from
//! the end of the log at open); plus the pauses its loops take
//! ([`Backoff`], [`pause`]).
//!
//! Locking: the status and the keys are each behind a `std::sync::Mutex`
//! held only to read or change them (never across an `.await`); the
//! counters are atomics.
//!
//! Owns: the status, the counters, the keys. Must not import: `broker`,
//! `server`, `stations`.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::store::log::Log;

/// Pauses between failed attempts: 1 s, doubling, at most 60 s.
#[derive(Debug, Default)]
pub struct Backoff(Option<Duration>);

impl Backoff {
    const FIRST: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(60);

    pub fn new() -> Backoff {
        Backoff(None)
    }

    pub fn reset(&mut self) {
        self.0 = None;
    }

    /// The pause to take now; the next one is twice as long.
    pub fn pause(&mut self) -> Duration {
        let d = self.0.unwrap_or(Self::FIRST);
        self.0 = Some((d * 2).min(Self::MAX));
        d
    }
}

/// Sleeps `d`; false when shutdown came first.
pub async fn pause(d: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = tokio::time::sleep(d) => true,
    }
}

/// The counters of the inbound pipeline (`stats.stations.<name>`), and
/// `sent` for the station's outbound calls. What only one station counts
/// (Discord's `own`, Telegram's `plainFallbacks`) it keeps itself.
#[derive(Debug, Default)]
pub struct Counters {
    /// Events appended.
    pub received: AtomicU64,
    /// Arrivals from senders not admitted (not stored, not delivered).
    pub blocked: AtomicU64,
    /// Pairing codes sent to strangers.
    pub pairing_replies: AtomicU64,
    /// Arrivals whose key is already in the log (not stored twice).
    pub duplicates: AtomicU64,
    /// Platform events that carry nothing metro stores.
    pub skipped: AtomicU64,
    /// Outbound calls the platform accepted.
    pub sent: AtomicU64,
}

/// Adds one.
pub fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    /// The six counters, named as on the wire.
    pub fn json(&self) -> Map<String, Value> {
        let n = |a: &AtomicU64| json!(a.load(Ordering::Relaxed));
        let mut m = Map::new();
        m.insert("received".into(), n(&self.received));
        m.insert("blocked".into(), n(&self.blocked));
        m.insert("pairingReplies".into(), n(&self.pairing_replies));
        m.insert("duplicates".into(), n(&self.duplicates));
        m.insert("skipped".into(), n(&self.skipped));
        m.insert("sent".into(), n(&self.sent));
        m
    }
}

/// What a key is known as.
#[derive(Debug, Clone)]
enum Seen {
    /// In the log as this event id.
    Stored(String),
    /// Being stored right now; the receiver wakes when that is decided.
    Pending(watch::Receiver<()>),
}

/// The newest `cap` keys, oldest forgotten first. A key forgotten
/// because it was not stored (blocked, failed) leaves a stale entry in
/// `order` that does not count against `cap`, so arrivals that are never
/// stored cannot push stored keys out; `order` is compacted past `2 × cap`.
#[derive(Debug)]
struct Keys {
    cap: usize,
    order: VecDeque<(u64, String)>,
    seen: HashMap<String, (u64, Seen)>,
    next: u64,
}

impl Keys {
    fn live(&self, seq: u64, key: &str) -> bool {
        self.seen.get(key).is_some_and(|(s, _)| *s == seq)
    }

    fn insert(&mut self, key: &str, state: Seen) {
        self.next += 1;
        self.order.push_back((self.next, key.to_string()));
        self.seen.insert(key.to_string(), (self.next, state));
        while self.seen.len() > self.cap {
            let Some((seq, old)) = self.order.pop_front() else {
                break;
            };
            if self.live(seq, &old) {
                self.seen.remove(&old);
            }
        }
        if self.order.len() > 2 * self.cap {
            let order = std::mem::take(&mut self.order);
            self.order = order
                .into_iter()
                .filter(|(seq, k)| self.live(*seq, k))
                .collect();
        }
    }
}

/// What [`StationCore::begin`] decided about a key.
#[derive(Debug)]
pub enum Claim {
    /// Already in the log as this event id.
    Duplicate(String),
    /// Another arrival with the same key is being stored: wait, then ask
    /// again.
    Wait(watch::Receiver<()>),
    /// Ours to store; end with [`StationCore::finish`].
    Mine(watch::Sender<()>),
}

/// The shared state of one inbound station.
pub struct StationCore {
    name: &'static str,
    secret: String,
    status: Mutex<String>,
    pub counters: Counters,
    keys: Mutex<Keys>,
}

impl StationCore {
    /// `name` in log lines, `secret` (a token) never shown in its status
    /// or anything it [redacts](StationCore::redact), `initial` status,
    /// and the bound of its recent keys (`cap`).
    pub fn new(name: &'static str, secret: &str, initial: &str, cap: usize) -> StationCore {
        StationCore {
            name,
            secret: secret.to_string(),
            status: Mutex::new(initial.to_string()),
            counters: Counters::default(),
            keys: Mutex::new(Keys {
                cap: cap.max(1),
                order: VecDeque::new(),
                seen: HashMap::new(),
                next: 0,
            }),
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The status in words (`ok`, `starting: …`, `down: …`).
    pub fn status(&self) -> String {
        self.status
            .lock()
            .map(|s| s.clone())
            .unwrap_or_else(|_| "unknown".into())
    }

    /// Sets the status (secret redacted); a change is logged once, `down…`
    /// at warn level.
    pub fn set_status(&self, s: impl Into<String>) {
        let s = self.redact(&s.into());
        if let Ok(mut st) = self.status.lock() {
            if *st != s {
                if s.starts_with("down") {
                    tracing::warn!("{} station {s}", self.name);
                } else {
                    tracing::info!("{} station {s}", self.name);
                }
                *st = s;
            }
        }
    }

    /// Says `why` (with the pause to come), then waits the next pause of
    /// `backoff`; false when shutdown came first.
    pub async fn retry_later(
        &self,
        why: impl std::fmt::Display,
        backoff: &mut Backoff,
        shutdown: &CancellationToken,
    ) -> bool {
        let d = backoff.pause();
        self.set_status(format!("{why}; retrying in {} s", d.as_secs()));
        pause(d, shutdown).await
    }

    /// `s` with the secret replaced by `<token>`.
    pub fn redact(&self, s: &str) -> String {
        if self.secret.is_empty() {
            return s.to_string();
        }
        s.replace(&self.secret, "<token>")
    }

    /// Notes that `key` is in the log as event `id` (seeding at open).
    pub fn remember(&self, key: &str, id: &str) {
        if let Ok(mut k) = self.keys.lock() {
            k.insert(key, Seen::Stored(id.to_string()));
        }
    }

    /// Seeds the recent keys from the events in the last `bytes` of `log`
    /// (oldest first, so the bound keeps the newest): `key_of` reads one
    /// event's JSON and gives its key and event id, if it has one. Run
    /// once, at open, off the async runtime's hot path (a blocking read).
    pub fn seed(
        &self,
        log: &Log,
        bytes: u64,
        mut key_of: impl FnMut(&[u8]) -> Option<(String, String)>,
    ) -> std::io::Result<()> {
        log.for_each_recent_blocking(bytes, |json| {
            if let Some((key, id)) = key_of(json) {
                self.remember(&key, &id);
            }
        })
    }

    /// Whether `key` is known to be in the log.
    pub fn seen(&self, key: &str) -> bool {
        self.keys
            .lock()
            .is_ok_and(|k| matches!(k.seen.get(key), Some((_, Seen::Stored(_)))))
    }

    /// Looks `key` up, or marks it as being stored.
    pub fn begin(&self, key: &str) -> Claim {
        let Ok(mut k) = self.keys.lock() else {
            // A poisoned lock only loses deduplication, never an event.
            return Claim::Mine(watch::channel(()).0);
        };
        match k.seen.get(key) {
            Some((_, Seen::Stored(id))) => Claim::Duplicate(id.clone()),
            Some((_, Seen::Pending(rx))) => Claim::Wait(rx.clone()),
            None => {
                let (tx, rx) = watch::channel(());
                k.insert(key, Seen::Pending(rx));
                Claim::Mine(tx)
            }
        }
    }

    /// Records how a key begun with [`StationCore::begin`] ended (`stored`:
    /// its event id; `None`: not stored, forgotten), then wakes whoever
    /// waits on it.
    pub fn finish(&self, key: &str, stored: Option<&str>, done: watch::Sender<()>) {
        if let Ok(mut k) = self.keys.lock() {
            match stored {
                Some(id) => match k.seen.get_mut(key) {
                    Some((_, state)) => *state = Seen::Stored(id.to_string()),
                    None => k.insert(key, Seen::Stored(id.to_string())),
                },
                None => {
                    k.seen.remove(key);
                }
            }
        }
        drop(done);
    }

    /// How many keys it holds (at most its bound).
    pub fn keys(&self) -> usize {
        self.keys.lock().map(|k| k.seen.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_bounded_and_keep_the_newest() {
        let core = StationCore::new("t", "", "ok", 100);
        for i in 0..110 {
            core.remember(&format!("d{i}"), &format!("msg_{i}"));
        }
        assert_eq!(core.keys(), 100);
        assert!(!core.seen("d0"));
        assert!(core.seen("d109"));
        assert!(matches!(core.begin("d109"), Claim::Duplicate(id) if id == "msg_109"));
    }

    #[test]
    fn keys_never_stored_do_not_push_out_stored_ones() {
        let core = StationCore::new("t", "", "ok", 10);
        core.remember("stored", "msg_1");
        for i in 0..1000 {
            let Claim::Mine(done) = core.begin(&format!("blocked{i}")) else {
                panic!("new key")
            };
            core.finish(&format!("blocked{i}"), None, done);
        }
        assert!(core.seen("stored"));
        assert_eq!(core.keys(), 1);
        let order = core.keys.lock().unwrap().order.len();
        assert!(order <= 21, "{order}");
    }

    #[tokio::test]
    async fn a_pending_key_makes_the_second_wait_and_is_forgotten_if_not_stored() {
        let core = StationCore::new("t", "", "ok", 10);
        let Claim::Mine(done) = core.begin("k") else {
            panic!("first claim")
        };
        let Claim::Wait(mut rx) = core.begin("k") else {
            panic!("second claim must wait")
        };
        assert!(!core.seen("k"));
        core.finish("k", None, done);
        assert!(rx.changed().await.is_err(), "woken when decided");
        let Claim::Mine(done) = core.begin("k") else {
            panic!("a key not stored can be stored again")
        };
        core.finish("k", Some("msg_1"), done);
        assert!(core.seen("k"));
    }

    #[test]
    fn the_secret_never_shows() {
        let core = StationCore::new("t", "123:abc", "starting", 10);
        core.set_status("down: GET https://x/bot123:abc/getMe failed");
        assert_eq!(core.status(), "down: GET https://x/bot<token>/getMe failed");
        assert_eq!(core.redact("no secret"), "no secret");
    }
}
