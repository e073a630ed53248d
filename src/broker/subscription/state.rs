//! A subscription's state: where it is in the log, what it has delivered
//! and not had acknowledged, its cursor (the rules below), and what is due
//! for redelivery. Shared by its task ([`super::task`]), its connection
//! (acks, writes) and `stats`; behind a `std::sync::Mutex` held only for
//! short, non-async updates.
//!
//! Cursor rules (protocol.md `ack`):
//! - `auto`: the cursor moves to an event's offset once its frame has been
//!   written to the socket (the connection writer calls [`SubState::written`]);
//!   filtered-out events count as passed.
//! - `explicit`: the cursor is the start of the oldest delivered, unacked
//!   event, or the scanned position when nothing is unacked. At most
//!   `max_unacked` events are outstanding; then delivery pauses until an ack.
//! - `none`: the cursor never moves.
//!
//! Must not import: `server`, `station`, `stations` (nor the log's reads:
//! the task reads, the state only counts).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::broker::predicate::Filter;
use crate::proto::AckMode;
use crate::store::cursors::Cursors;
use crate::store::log::Entry;

#[derive(Debug, Clone)]
struct Unacked {
    entry: Arc<Entry>,
    first_delivered: Instant,
    delivered_at: Instant,
    /// Times sent before the latest delivery.
    redelivered: u32,
}

#[derive(Debug)]
struct Progress {
    /// Everything before this offset has been looked at.
    pos: u64,
    cursor: u64,
    delivered: u64,
    unacked: VecDeque<Unacked>,
    finished: bool,
}

/// The state of one subscription, shared by its task, its connection (acks,
/// writes) and `stats`.
pub struct SubState {
    pub conn: u64,
    pub id: String,
    pub filter: Filter,
    pub ack: AckMode,
    pub cursor_name: Option<String>,
    pub follow: bool,
    pub limit: Option<u64>,
    pub max_unacked: usize,
    /// Delivery also pauses once the unacked copies hold this many bytes
    /// (one event may pass it).
    pub max_unacked_bytes: usize,
    pub ack_wait: Duration,
    /// Deliveries (first one included) after which an unacked event is
    /// given up on and reported with a `system` event.
    pub max_deliver: Option<u32>,
    cursors: Arc<Cursors>,
    progress: Mutex<Progress>,
    pub(super) acked: Notify,
}

/// An event given up on after `maxDeliver` deliveries.
#[derive(Debug, Clone)]
pub struct GivenUp {
    pub entry: Arc<Entry>,
    pub deliveries: u32,
    pub unacked_for: Duration,
}

pub(super) struct Due {
    pub(super) resend: Vec<(Arc<Entry>, u32)>,
    pub(super) next: Option<Instant>,
    pub(super) given_up: Vec<GivenUp>,
}

/// A point-in-time view for `stats`.
#[derive(Debug, Clone)]
pub struct SubSnapshot {
    pub pos: u64,
    pub cursor: u64,
    pub delivered: u64,
    pub unacked: usize,
    pub oldest_unacked_ms: Option<u64>,
    pub finished: bool,
}

impl SubState {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        conn: u64,
        id: String,
        filter: Filter,
        ack: AckMode,
        cursor_name: Option<String>,
        follow: bool,
        limit: Option<u64>,
        max_unacked: usize,
        ack_wait: Duration,
        max_deliver: Option<u32>,
        cursors: Arc<Cursors>,
        start: u64,
    ) -> SubState {
        SubState {
            conn,
            id,
            filter,
            ack,
            cursor_name,
            follow,
            limit,
            max_unacked: max_unacked.max(1),
            max_unacked_bytes: usize::MAX,
            ack_wait,
            max_deliver,
            cursors,
            progress: Mutex::new(Progress {
                pos: start,
                cursor: start,
                delivered: 0,
                unacked: VecDeque::new(),
                finished: false,
            }),
            acked: Notify::new(),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Progress) -> R) -> Option<R> {
        self.progress.lock().ok().map(|mut p| f(&mut p))
    }

    pub(super) fn store_cursor(&self, value: u64) {
        if let Some(name) = &self.cursor_name {
            self.cursors.set(name, value);
        }
    }

    /// Frames up to `offset` were written to the socket (`ack: "auto"`).
    pub fn written(&self, offset: u64) {
        if self.ack != AckMode::Auto {
            return;
        }
        let moved = self.with(|p| {
            if offset > p.cursor {
                p.cursor = offset;
                true
            } else {
                false
            }
        });
        if moved == Some(true) {
            self.store_cursor(offset);
        }
    }

    fn explicit_cursor(p: &mut Progress) -> Option<u64> {
        let c = p.unacked.front().map(|u| u.entry.start()).unwrap_or(p.pos);
        if c > p.cursor {
            p.cursor = c;
            Some(c)
        } else {
            None
        }
    }

    pub(super) fn scanned(&self, pos: u64, delivered: u64) {
        let moved = self.with(|p| {
            p.pos = pos;
            p.delivered += delivered;
            if self.ack == AckMode::Explicit {
                Self::explicit_cursor(p)
            } else {
                None
            }
        });
        if let Some(Some(c)) = moved {
            self.store_cursor(c);
        }
    }

    pub(super) fn delivered_explicit(&self, entry: &Arc<Entry>) {
        // An entry read from the file shares its whole read buffer; keep an
        // own copy so held unacked events cost only their own bytes.
        let own = Arc::new(Entry {
            end: entry.end,
            json: bytes::Bytes::copy_from_slice(&entry.json),
            meta: entry.meta.clone(),
        });
        self.with(|p| {
            p.unacked.push_back(Unacked {
                entry: own,
                first_delivered: Instant::now(),
                delivered_at: Instant::now(),
                redelivered: 0,
            })
        });
    }

    /// Unacked events whose `ackWaitMs` has run out (marked as sent again
    /// now), and when the next one will.
    pub(super) fn due(&self) -> Due {
        let now = Instant::now();
        let (due, next, given_up, moved) = self
            .with(|p| {
                let mut due = Vec::new();
                let mut next: Option<Instant> = None;
                let mut given_up = Vec::new();
                // Past `maxDeliver`: stop sending, report, let the cursor pass.
                if let Some(max) = self.max_deliver {
                    p.unacked.retain(|u| {
                        let spent =
                            u.delivered_at + self.ack_wait <= now && u.redelivered + 1 >= max;
                        if spent {
                            given_up.push(GivenUp {
                                entry: u.entry.clone(),
                                deliveries: u.redelivered + 1,
                                unacked_for: now - u.first_delivered,
                            });
                        }
                        !spent
                    });
                }
                let moved = if given_up.is_empty() {
                    None
                } else {
                    Self::explicit_cursor(p)
                };
                for u in p.unacked.iter_mut() {
                    let deadline = u.delivered_at + self.ack_wait;
                    if deadline <= now {
                        u.redelivered += 1;
                        u.delivered_at = now;
                        due.push((u.entry.clone(), u.redelivered));
                        let again = now + self.ack_wait;
                        next = Some(next.map_or(again, |n| n.min(again)));
                    } else {
                        next = Some(next.map_or(deadline, |n| n.min(deadline)));
                    }
                }
                (due, next, given_up, moved)
            })
            .unwrap_or((Vec::new(), None, Vec::new(), None));
        if let Some(c) = moved {
            self.store_cursor(c);
        }
        if !given_up.is_empty() {
            self.acked.notify_one();
        }
        Due {
            resend: due,
            next,
            given_up,
        }
    }

    /// Who this subscription is, in words, for reports.
    pub fn who(&self) -> String {
        match (&self.filter.as_, &self.cursor_name) {
            (Some(a), _) => a.clone(),
            (None, Some(c)) => format!("cursor {c}"),
            (None, None) => format!("subscription {} of connection {}", self.id, self.conn),
        }
    }

    /// Bounds the bytes held for unacked events (default: unbounded).
    pub fn with_unacked_bytes(mut self, max: usize) -> SubState {
        self.max_unacked_bytes = max.max(1);
        self
    }

    pub(super) fn unacked_len(&self) -> usize {
        self.with(|p| p.unacked.len()).unwrap_or(0)
    }

    pub(super) fn unacked_bytes(&self) -> usize {
        self.with(|p| p.unacked.iter().map(|u| u.entry.json.len()).sum())
            .unwrap_or(0)
    }

    /// Whether explicit delivery must wait for an ack.
    pub(super) fn unacked_full(&self) -> bool {
        self.unacked_len() >= self.max_unacked || self.unacked_bytes() >= self.max_unacked_bytes
    }

    /// Acknowledges every event delivered up to `offset`; returns the cursor.
    pub fn ack(&self, offset: u64) -> u64 {
        let (cursor, moved) = self
            .with(|p| {
                if self.ack != AckMode::Explicit {
                    return (p.cursor, None);
                }
                while p.unacked.front().is_some_and(|u| u.entry.end <= offset) {
                    p.unacked.pop_front();
                }
                let moved = Self::explicit_cursor(p);
                (p.cursor, moved)
            })
            .unwrap_or((0, None));
        if let Some(c) = moved {
            self.store_cursor(c);
        }
        self.acked.notify_one();
        cursor
    }

    /// True once the subscription has ended and nothing is left to ack.
    pub fn done(&self) -> bool {
        self.with(|p| p.finished && p.unacked.is_empty())
            .unwrap_or(true)
    }

    pub fn snapshot(&self) -> SubSnapshot {
        self.with(|p| SubSnapshot {
            pos: p.pos,
            cursor: p.cursor,
            delivered: p.delivered,
            unacked: p.unacked.len(),
            oldest_unacked_ms: p
                .unacked
                .iter()
                .map(|u| u.first_delivered)
                .min()
                .map(|t| t.elapsed().as_millis() as u64),
            finished: p.finished,
        })
        .unwrap_or(SubSnapshot {
            pos: 0,
            cursor: 0,
            delivered: 0,
            unacked: 0,
            oldest_unacked_ms: None,
            finished: true,
        })
    }

    pub(super) fn finish(&self) {
        self.with(|p| p.finished = true);
    }
}
