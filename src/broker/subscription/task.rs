//! The task that feeds one subscription: it reads entries from its own
//! position — from the log's in-memory ring while it keeps up, from the
//! file when it has fallen behind — applies the predicate against the
//! claims snapshot of the moment, and queues frames (many per write) on its
//! connection's [`Outbox`]. When the outbox is full the task waits; it never
//! buffers more. While it waits the writer goes on, so a slow subscriber
//! simply falls back onto the file.
//!
//! Must not import: `server`, `station`, `stations`.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::redelivery::redeliver_due;
use super::state::SubState;
use crate::broker::outbox::Outbox;
use crate::broker::Broker;
use crate::proto::{self, AckMode};

/// Frames are flushed to the outbox once this many bytes are built.
const FLUSH_BYTES: usize = 64 << 10;

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
