//! One subscription: where it is in the log, what it has delivered and not
//! had acknowledged, and the task that feeds it.
//!
//! The task reads entries from its own position — from the log's in-memory
//! ring while it keeps up, from the file when it has fallen behind — applies
//! the predicate against the claims snapshot of the moment, and queues
//! frames (many per write) on its connection's [`Outbox`]. When the outbox is
//! full the task waits; it never buffers more. While it waits the writer
//! goes on, so a slow subscriber simply falls back onto the file.
//!
//! Cursor rules (protocol.md `ack`):
//! - `auto`: the cursor moves to an event's offset once its frame has been
//!   written to the socket (the connection writer calls [`SubState::written`]);
//!   filtered-out events count as passed.
//! - `explicit`: the cursor is the start of the oldest delivered, unacked
//!   event, or the scanned position when nothing is unacked. At most
//!   `max_unacked` events are outstanding; then delivery pauses until an ack.
//! - `none`: the cursor never moves.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::outbox::Outbox;
use super::predicate::Filter;
use super::Broker;
use crate::proto::{self, AckMode};
use crate::store::cursors::Cursors;
use crate::store::log::Entry;

/// Frames are flushed to the outbox once this many bytes are built.
const FLUSH_BYTES: usize = 64 << 10;

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
    acked: Notify,
}

/// An event given up on after `maxDeliver` deliveries.
#[derive(Debug, Clone)]
pub struct GivenUp {
    pub entry: Arc<Entry>,
    pub deliveries: u32,
    pub unacked_for: Duration,
}

struct Due {
    resend: Vec<(Arc<Entry>, u32)>,
    next: Option<Instant>,
    given_up: Vec<GivenUp>,
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

    fn store_cursor(&self, value: u64) {
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

    fn scanned(&self, pos: u64, delivered: u64) {
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

    fn delivered_explicit(&self, entry: &Arc<Entry>) {
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
    fn due(&self) -> Due {
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

    fn unacked_len(&self) -> usize {
        self.with(|p| p.unacked.len()).unwrap_or(0)
    }

    fn unacked_bytes(&self) -> usize {
        self.with(|p| p.unacked.iter().map(|u| u.entry.json.len()).sum())
            .unwrap_or(0)
    }

    /// Whether explicit delivery must wait for an ack.
    fn unacked_full(&self) -> bool {
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

    fn finish(&self) {
        self.with(|p| p.finished = true);
    }
}

/// Why a subscription task stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum Stopped {
    /// Sent its `end` frame.
    Ended,
    /// Unsubscribed, connection closed, or daemon stopping.
    Cancelled,
    /// The log could not be read.
    Failed,
}

/// Feeds one subscription until it ends, is cancelled, or its connection
/// goes away.
pub async fn run(
    broker: Arc<Broker>,
    st: Arc<SubState>,
    out: Outbox,
    start: u64,
    stop: CancellationToken,
) -> Stopped {
    let log = &broker.log;
    let mut end_rx = log.watch_end();
    let fixed_end = if st.follow { None } else { Some(log.end()) };
    let sub_json = serde_json::to_vec(&st.id).unwrap_or_else(|_| b"\"?\"".to_vec());
    let auto = st.ack == AckMode::Auto;
    let explicit = st.ack == AckMode::Explicit;
    let mut pos = start;
    let mut sent = 0u64;
    let mut buf: Vec<u8> = Vec::new();

    let stopped = loop {
        if stop.is_cancelled() {
            break Stopped::Cancelled;
        }
        // Explicit acks: send again what has waited too long for its ack.
        let next_due = if explicit {
            match redeliver_due(&broker, &st, &out, &sub_json).await {
                Ok(next) => next,
                Err(_) => return Stopped::Cancelled,
            }
        } else {
            None
        };
        let redelivery = async move {
            match next_due {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        if st.limit.is_some_and(|l| sent >= l) {
            break Stopped::Ended;
        }
        let committed = *end_rx.borrow_and_update();
        let until = fixed_end.unwrap_or(committed);
        if pos >= until {
            if fixed_end.is_some() {
                break Stopped::Ended;
            }
            tokio::select! {
                r = end_rx.changed() => if r.is_err() { break Stopped::Cancelled },
                _ = stop.cancelled() => break Stopped::Cancelled,
                _ = redelivery => {}
            }
            continue;
        }
        if explicit {
            let acked = st.acked.notified();
            tokio::pin!(acked);
            acked.as_mut().enable();
            if st.unacked_full() {
                tokio::select! {
                    _ = acked => {}
                    _ = stop.cancelled() => break Stopped::Cancelled,
                    _ = redelivery => {}
                }
                continue;
            }
        }
        // Retention deleted what this subscription still had to read: say
        // how much, and go on from the oldest kept event.
        let oldest = log.oldest();
        if pos < oldest {
            let frame = proto::gap_frame(&sub_json, pos, oldest);
            let advance = auto.then(|| (st.clone(), oldest));
            if out.send(frame, advance).await.is_err() {
                return Stopped::Cancelled;
            }
            tracing::warn!(sub = %st.id, from = pos, to = oldest, "subscriber missed events deleted by retention");
            pos = oldest;
            st.scanned(pos, 0);
            continue;
        }
        let entries = match log.read_from(pos, until).await {
            Ok(v) if !v.is_empty() => v,
            // Deleted between the check and the read: check again.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Ok(_) => {
                tracing::error!(sub = %st.id, pos, until, "log read returned nothing");
                break Stopped::Failed;
            }
            Err(e) => {
                tracing::error!(sub = %st.id, pos, "log read failed: {e}");
                break Stopped::Failed;
            }
        };
        let claims = broker.claims.snapshot();
        let mut delivered = 0u64;
        let (mut room, mut byte_room) = if explicit {
            (
                st.max_unacked.saturating_sub(st.unacked_len()),
                st.max_unacked_bytes.saturating_sub(st.unacked_bytes()),
            )
        } else {
            (usize::MAX, usize::MAX)
        };
        for e in &entries {
            if st.limit.is_some_and(|l| sent >= l) || room == 0 || byte_room == 0 {
                break;
            }
            if st.filter.matches(&e.meta, &claims) {
                proto::event_frame_head(&mut buf, &sub_json, e.end);
                buf.extend_from_slice(&e.json);
                buf.extend_from_slice(proto::EVENT_FRAME_TAIL);
                if explicit {
                    st.delivered_explicit(e);
                    room -= 1;
                    byte_room = byte_room.saturating_sub(e.json.len());
                }
                sent += 1;
                delivered += 1;
            }
            pos = e.end;
            if buf.len() >= FLUSH_BYTES {
                let advance = auto.then(|| (st.clone(), pos));
                if out.send(std::mem::take(&mut buf), advance).await.is_err() {
                    return Stopped::Cancelled;
                }
            }
        }
        if !buf.is_empty() || auto {
            let advance = auto.then(|| (st.clone(), pos));
            if out.send(std::mem::take(&mut buf), advance).await.is_err() {
                return Stopped::Cancelled;
            }
        }
        st.scanned(pos, delivered);
    };
    if stopped == Stopped::Ended {
        st.finish();
        let advance = auto.then(|| (st.clone(), pos));
        if out
            .send(proto::end_frame(&sub_json, pos), advance)
            .await
            .is_err()
        {
            return Stopped::Cancelled;
        }
        // After `end`, explicit acks still owe redeliveries until all is acked.
        while explicit && !st.done() {
            let acked = st.acked.notified();
            tokio::pin!(acked);
            acked.as_mut().enable();
            let next_due = match redeliver_due(&broker, &st, &out, &sub_json).await {
                Ok(next) => next,
                Err(_) => return Stopped::Cancelled,
            };
            if st.done() {
                break;
            }
            tokio::select! {
                _ = acked => {}
                _ = stop.cancelled() => return Stopped::Cancelled,
                _ = async {
                    match next_due {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                } => {}
            }
        }
    }
    stopped
}

/// Sends again, as redelivery frames, the unacked events whose `ackWaitMs`
/// has run out; returns when the next one will.
async fn redeliver_due(
    broker: &Broker,
    st: &Arc<SubState>,
    out: &Outbox,
    sub_json: &[u8],
) -> Result<Option<tokio::time::Instant>, super::outbox::Closed> {
    let Due {
        resend: due,
        next,
        given_up,
    } = st.due();
    for g in given_up {
        report_given_up(broker, st, g).await;
    }
    if !due.is_empty() {
        let mut buf = Vec::new();
        for (e, n) in &due {
            proto::event_frame_head(&mut buf, sub_json, e.end);
            buf.extend_from_slice(&e.json);
            buf.extend_from_slice(b",\"redelivered\":");
            buf.extend_from_slice(itoa::Buffer::new().format(*n).as_bytes());
            buf.extend_from_slice(proto::EVENT_FRAME_TAIL);
        }
        out.send(buf, None).await?;
    }
    Ok(next.map(tokio::time::Instant::from_std))
}

/// Appends a `kind: "system"` event on the line of an event nobody acked
/// after `maxDeliver` deliveries, so a router (`unclaimed`) can take the
/// conversation over.
async fn report_given_up(broker: &Broker, st: &SubState, g: GivenUp) {
    // A report nobody acknowledged is not reported again: that would feed
    // on itself.
    if &*g.entry.meta.kind == "system" {
        tracing::warn!(sub = %st.id, offset = g.entry.end, "gave up on an unacknowledged system event");
        return;
    }
    #[derive(serde::Deserialize)]
    struct Id {
        #[serde(default)]
        id: Option<String>,
    }
    let event_id = serde_json::from_slice::<Id>(&g.entry.json)
        .ok()
        .and_then(|i| i.id)
        .unwrap_or_default();
    let who = st.who();
    let secs = g.unacked_for.as_secs_f64();
    let line = g.entry.meta.line.to_string();
    let text = format!(
        "{who} left {event_id} unhandled for {secs:.1} s ({} deliveries, never acknowledged)",
        g.deliveries
    );
    tracing::warn!(sub = %st.id, "{text}");
    // The conversation must not stay stuck with an owner that does not
    // answer: release its claim, so the line is back in broadcast and an
    // `unclaimed` router sees this report.
    let mut released = false;
    if let Some(me) = &st.filter.as_ {
        let op = crate::store::claims::ClaimOp::ReleaseIfOwner {
            line: line.clone(),
            who: me.clone(),
        };
        released = matches!(
            broker.claims.apply(op).await,
            Ok(crate::store::claims::ClaimOutcome::Released(true))
        );
    }
    let event = crate::proto::Event {
        station: crate::line::station_of(&line).to_string(),
        kind: "system".into(),
        from: crate::proto::DAEMON.into(),
        to: line.clone(),
        line,
        text: Some(text),
        payload: Some(serde_json::json!({
            "reason": "maxDeliver",
            "identity": who,
            "eventId": event_id,
            "offset": g.entry.end,
            "deliveries": g.deliveries,
            "unackedMs": g.unacked_for.as_millis() as u64,
            "released": released,
        })),
        ..Default::default()
    };
    if let Err(e) = broker.log.append(event).await {
        tracing::error!("could not report an unhandled event: {e}");
    }
}
