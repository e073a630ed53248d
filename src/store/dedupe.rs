//! The dedupe window of idempotency keys: (identity, `idempotencyKey`) →
//! the first event of a `publish`, `send`, `edit` or `react`, for
//! `--dedupe-window` (10 minutes unless told).
//!
//! - A request being carried out holds an in-flight entry ([`Ticket`]): a
//!   concurrent request with the same key waits for it, then asks again.
//!   A request that fails drops its ticket and is forgotten (a retry may
//!   succeed); one that appended its event records it with
//!   [`Ticket::done`].
//! - Seeded at startup from the events of the last [`SEED_BYTES`] of the
//!   log that carry a key and are still inside the window, so a retry
//!   across a restart is recognised.
//! - Memory: at most [`CAP`] keys, oldest forgotten first (each at most
//!   [`MAX_KEY`] bytes of key and [`crate::line::MAX_LEN`] of identity:
//!   about 30 MB in the worst case, about 100 bytes a key in practice).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

/// Keys remembered at most.
pub const CAP: usize = 32_768;
/// Longest `idempotencyKey`, in bytes.
pub const MAX_KEY: usize = 128;
/// `--dedupe-window` unless told.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(600);
/// Bytes at the end of the log read at startup for keys (and hops).
pub const SEED_BYTES: u64 = 2 << 20;

/// The first event of a key: what a duplicate is answered with.
#[derive(Debug, Clone, PartialEq)]
pub struct First {
    pub id: String,
    /// The `messageId` the first answer gave (a `send`'s), if any.
    pub message_id: Option<String>,
    pub offset: u64,
    /// When it was stored (ms since the epoch): the window runs from here.
    pub at_ms: i128,
}

#[derive(Debug)]
enum State {
    Done(First),
    /// Being carried out; the receiver wakes when that ends.
    Pending(watch::Receiver<()>),
}

/// `identity` NUL `key`: one allocation, shared by the map and the order.
type Key = Arc<str>;

fn key_of(identity: &str, key: &str) -> Key {
    format!("{identity}\0{key}").into()
}

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<Key, (u64, State)>,
    order: VecDeque<(u64, Key)>,
    next: u64,
}

impl Inner {
    fn insert(&mut self, key: Key, state: State) -> u64 {
        self.next += 1;
        let seq = self.next;
        self.order.push_back((seq, key.clone()));
        self.map.insert(key, (seq, state));
        while self.order.len() > CAP {
            if let Some((s, old)) = self.order.pop_front() {
                if self.map.get(&old).is_some_and(|(cur, _)| *cur == s) {
                    self.map.remove(&old);
                }
            }
        }
        seq
    }

    /// Forgets expired keys at the old end.
    fn expire(&mut self, now_ms: i128, window_ms: i128) {
        while let Some((seq, key)) = self.order.front() {
            match self.map.get(key) {
                Some((cur, _)) if cur != seq => {}
                Some((_, State::Done(f))) if now_ms - f.at_ms > window_ms => {
                    self.map.remove(key);
                }
                None => {}
                Some(_) => return,
            }
            self.order.pop_front();
        }
    }
}

/// What [`Dedupe::begin`] decided.
pub enum Begin<'a> {
    /// Already done within the window: answer with this, do nothing.
    Duplicate(First),
    /// The same key is being carried out: wait, then ask again.
    Wait(watch::Receiver<()>),
    /// Ours to carry out.
    Mine(Ticket<'a>),
}

/// An in-flight key. Dropped without [`Ticket::done`], the key is
/// forgotten and whoever waits on it asks again.
pub struct Ticket<'a> {
    dedupe: &'a Dedupe,
    key: Key,
    seq: u64,
    finished: bool,
    _wake: watch::Sender<()>,
}

impl Ticket<'_> {
    /// The request appended `first`: remember it for the window.
    pub fn done(mut self, first: First) {
        self.finished = true;
        if let Ok(mut inner) = self.dedupe.inner.lock() {
            match inner.map.get_mut(&self.key) {
                Some((seq, state)) if *seq == self.seq => *state = State::Done(first),
                _ => {
                    inner.insert(self.key.clone(), State::Done(first));
                }
            }
        }
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        if let Ok(mut inner) = self.dedupe.inner.lock() {
            if inner
                .map
                .get(&self.key)
                .is_some_and(|(seq, _)| *seq == self.seq)
            {
                inner.map.remove(&self.key);
            }
        }
    }
}

#[derive(Debug)]
pub struct Dedupe {
    window_ms: i128,
    inner: Mutex<Inner>,
}

impl Dedupe {
    pub fn new(window: Duration) -> Dedupe {
        Dedupe {
            window_ms: window.as_millis() as i128,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Looks `key` of `identity` up, or marks it in flight.
    pub fn begin(&self, identity: &str, key: &str) -> Begin<'_> {
        let k = key_of(identity, key);
        let (wake, rx) = watch::channel(());
        let Ok(mut inner) = self.inner.lock() else {
            // A poisoned lock only loses deduplication, never a request.
            return Begin::Mine(Ticket {
                dedupe: self,
                key: k,
                seq: 0,
                finished: true,
                _wake: wake,
            });
        };
        let now = now_ms();
        inner.expire(now, self.window_ms);
        match inner.map.get(&k) {
            Some((_, State::Done(f))) if now - f.at_ms <= self.window_ms => {
                return Begin::Duplicate(f.clone())
            }
            Some((_, State::Pending(rx))) => return Begin::Wait(rx.clone()),
            _ => {}
        }
        let seq = inner.insert(k.clone(), State::Pending(rx));
        Begin::Mine(Ticket {
            dedupe: self,
            key: k,
            seq,
            finished: false,
            _wake: wake,
        })
    }

    /// Records a stored event that carries a key (startup seeding, oldest
    /// first); outside the window it is ignored.
    pub fn seed(&self, identity: &str, key: &str, first: First) {
        if now_ms() - first.at_ms > self.window_ms {
            return;
        }
        if let Ok(mut inner) = self.inner.lock() {
            inner.insert(key_of(identity, key), State::Done(first));
        }
    }

    /// Keys remembered now (done or in flight).
    pub fn len(&self) -> usize {
        self.inner.lock().map(|i| i.map.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub fn now_ms() -> i128 {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first(id: &str, at_ms: i128) -> First {
        First {
            id: id.into(),
            message_id: None,
            offset: 1,
            at_ms,
        }
    }

    #[test]
    fn in_flight_done_forgotten_expired_and_bounded() {
        let d = Dedupe::new(Duration::from_secs(60));
        let Begin::Mine(t) = d.begin("metro://a/b", "k") else {
            panic!("first is mine")
        };
        assert!(matches!(d.begin("metro://a/b", "k"), Begin::Wait(_)));
        assert!(matches!(d.begin("metro://a/c", "k"), Begin::Mine(_)));
        drop(t);
        // Failed: forgotten.
        let Begin::Mine(t) = d.begin("metro://a/b", "k") else {
            panic!("a failed key is forgotten")
        };
        t.done(first("msg_1", now_ms()));
        match d.begin("metro://a/b", "k") {
            Begin::Duplicate(f) => assert_eq!(f.id, "msg_1"),
            _ => panic!("done within the window is a duplicate"),
        }
        d.seed("metro://a/b", "old", first("msg_0", now_ms() - 61_000));
        assert!(matches!(d.begin("metro://a/b", "old"), Begin::Mine(_)));
        for i in 0..CAP + 5 {
            d.seed("metro://a/b", &i.to_string(), first("msg_x", now_ms()));
        }
        assert!(d.len() <= CAP);
    }
}
