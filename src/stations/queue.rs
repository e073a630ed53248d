//! Outbound queue shared by the chat stations: one turn at a time per
//! conversation, rate limits per conversation and for the whole bot, and
//! retries when the platform says "retry after N seconds".
//!
//! - A [`Turn`] is a conversation's exclusive slot: calls made while holding
//!   it go out in order and nothing else reaches that conversation in
//!   between (a long reply split in three parts is not interleaved with
//!   another agent's message). Waiters get their turn in arrival order.
//! - Every call takes a token from the conversation's bucket and one from
//!   the global bucket first ([`Rate`]: a burst, then one call per period).
//! - A call that fails with [`Failure::RetryAfter`] pauses the conversation
//!   for that long and is made again, until the total wait would pass
//!   [`Limits::max_wait`]; then its error is returned.
//!
//! Nothing here knows Telegram: the station maps its errors to [`Failure`]
//! and picks the [`Rate`] of each conversation.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::OwnedMutexGuard;
use tokio::time::Instant;

/// A token bucket: `burst` calls at once, then one per `every`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub burst: u32,
    pub every: Duration,
}

/// The queue's limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// For the whole bot (all conversations together).
    pub global: Rate,
    /// The longest a call waits in total for retries before it gives up.
    pub max_wait: Duration,
}

/// How a call failed.
#[derive(Debug)]
pub enum Failure<E> {
    /// The platform asked to wait this long before the same call again.
    RetryAfter(Duration, E),
    /// Any other failure: not retried.
    Fatal(E),
}

/// One bucket, as a "generic cell rate": `tat` is the theoretical time of
/// the next call at the steady rate; a call may go up to `burst - 1`
/// periods ahead of it.
#[derive(Debug)]
struct Bucket {
    tat: Instant,
    paused_until: Option<Instant>,
}

impl Bucket {
    fn new() -> Bucket {
        Bucket {
            tat: Instant::now(),
            paused_until: None,
        }
    }

    /// No call before `until`.
    fn hold(&mut self, until: Instant) {
        self.paused_until = Some(self.paused_until.map_or(until, |p| p.max(until)));
    }

    /// Reserves the next call's slot; returns how long to wait for it.
    fn reserve(&mut self, rate: Rate, now: Instant) -> Duration {
        let slack = rate.every * rate.burst.saturating_sub(1);
        let mut tat = self.tat.max(now);
        let mut go = tat.checked_sub(slack).unwrap_or(now).max(now);
        if let Some(p) = self.paused_until {
            if p > now {
                go = go.max(p);
                tat = tat.max(p);
            } else {
                self.paused_until = None;
            }
        }
        self.tat = tat + rate.every;
        go.saturating_duration_since(now)
    }
}

/// The queue of one station.
pub struct Queue {
    limits: Limits,
    global: Mutex<Bucket>,
    conversations: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Bucket>>>>,
    retries: AtomicU64,
}

/// Conversations remembered while idle; past this, idle ones are forgotten
/// (their buckets start full again).
const MAX_IDLE_CONVERSATIONS: usize = 4096;

impl Queue {
    pub fn new(limits: Limits) -> Queue {
        Queue {
            limits,
            global: Mutex::new(Bucket::new()),
            conversations: Mutex::new(HashMap::new()),
            retries: AtomicU64::new(0),
        }
    }

    /// How many calls were made again after a "retry after".
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// Waits for `conversation`'s turn (first come, first served).
    pub async fn turn(&self, conversation: &str) -> Turn<'_> {
        let slot = {
            let mut convs = self
                .conversations
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if convs.len() > MAX_IDLE_CONVERSATIONS {
                convs.retain(|_, b| Arc::strong_count(b) > 1);
            }
            convs
                .entry(conversation.to_string())
                .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(Bucket::new())))
                .clone()
        };
        Turn {
            queue: self,
            bucket: slot.lock_owned().await,
        }
    }

    /// Holds every conversation for `d` (a platform's global limit).
    pub fn hold_all(&self, d: Duration) {
        let mut g = self
            .global
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        g.hold(Instant::now() + d);
    }

    fn global_wait(&self) -> Duration {
        let mut g = self
            .global
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        g.reserve(self.limits.global, Instant::now())
    }
}

/// A conversation's exclusive slot; dropping it lets the next one go.
pub struct Turn<'q> {
    queue: &'q Queue,
    bucket: OwnedMutexGuard<Bucket>,
}

impl Turn<'_> {
    /// Holds this conversation for `d`: its next call waits (the platform
    /// said its budget is spent until then).
    pub fn hold(&mut self, d: Duration) {
        self.bucket.hold(Instant::now() + d);
    }

    /// Makes `call` under the conversation's `rate` and the global one,
    /// again after each "retry after", within the queue's `max_wait`.
    pub async fn call<T, E, F, Fut>(&mut self, rate: Rate, mut call: F) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Failure<E>>>,
    {
        let mut waited = Duration::ZERO;
        loop {
            let wait = self.bucket.reserve(rate, Instant::now());
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            let wait = self.queue.global_wait();
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            match call().await {
                Ok(v) => return Ok(v),
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::RetryAfter(d, e)) => {
                    waited += d;
                    if waited > self.queue.limits.max_wait {
                        return Err(e);
                    }
                    self.queue.retries.fetch_add(1, Ordering::Relaxed);
                    self.bucket.hold(Instant::now() + d);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: Rate = Rate {
        burst: 1000,
        every: Duration::from_millis(1),
    };

    #[test]
    fn bucket_allows_a_burst_then_spaces_calls() {
        let rate = Rate {
            burst: 3,
            every: Duration::from_secs(1),
        };
        let mut b = Bucket::new();
        let now = Instant::now();
        let waits: Vec<u64> = (0..5)
            .map(|_| b.reserve(rate, now).as_millis() as u64)
            .collect();
        assert_eq!(waits, vec![0, 0, 0, 1000, 2000]);
        // After a quiet period the burst is back.
        let later = now + Duration::from_secs(60);
        assert_eq!(b.reserve(rate, later), Duration::ZERO);
        assert_eq!(b.reserve(rate, later), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_pauses_the_conversation_and_retries() {
        let q = Queue::new(Limits {
            global: FAST,
            max_wait: Duration::from_secs(10),
        });
        let mut turn = q.turn("a").await;
        let start = tokio::time::Instant::now();
        let mut calls = 0;
        let r: Result<u32, &str> = turn
            .call(FAST, || {
                calls += 1;
                let n = calls;
                async move {
                    if n < 3 {
                        Err(Failure::RetryAfter(Duration::from_secs(2), "flood"))
                    } else {
                        Ok(n)
                    }
                }
            })
            .await;
        assert_eq!(r, Ok(3));
        assert!(start.elapsed() >= Duration::from_secs(4));
        assert_eq!(q.retries(), 2);
        // Past max_wait the error comes back.
        let r: Result<(), &str> = turn
            .call(FAST, || async {
                Err(Failure::RetryAfter(Duration::from_secs(6), "flood"))
            })
            .await;
        assert_eq!(r, Err("flood"));
        let r: Result<(), &str> = turn
            .call(FAST, || async { Err(Failure::Fatal("no")) })
            .await;
        assert_eq!(r, Err("no"));
    }

    #[tokio::test(start_paused = true)]
    async fn turns_are_exclusive_per_conversation_only() {
        let q = Arc::new(Queue::new(Limits {
            global: FAST,
            max_wait: Duration::from_secs(1),
        }));
        let a = q.turn("a").await;
        // Another conversation is not held up.
        drop(q.turn("b").await);
        let q2 = q.clone();
        let waiter = tokio::spawn(async move {
            let _t = q2.turn("a").await;
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished());
        drop(a);
        waiter.await.unwrap();
    }
}
