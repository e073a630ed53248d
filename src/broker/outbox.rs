//! A connection's outgoing queue, bounded in bytes.
//!
//! Responses and subscription frames are queued here and written by the
//! connection's one writer task, which coalesces everything queued into one
//! socket write (an answer that finds nothing queued is written by its
//! connection's read loop itself, holding the whole budget meanwhile: see
//! [`Outbox::try_reserve_all`]). A sender waits when the queue holds more than
//! [`OUT_BUDGET`] bytes: a subscription whose client does not read stops
//! pulling from the log (and later catches up from the file), so a stalled
//! client costs the daemon at most this much memory. An answer that may be
//! large (`history`, `fetch`) first reserves the whole budget
//! ([`Outbox::reserve_all`]) and keeps it until it is written, so an answer
//! being built or waiting counts against the budget too.

use std::sync::Arc;

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use super::subscription::SubState;

/// Bytes a connection may have queued and not yet written.
pub const OUT_BUDGET: usize = 256 << 10;

/// One queued write: frame bytes, and the position an `ack: "auto"`
/// subscription's cursor moves to once they are written.
pub struct Outgoing {
    pub bytes: Vec<u8>,
    pub advance: Option<(Arc<SubState>, u64)>,
    _permit: OwnedSemaphorePermit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

#[derive(Clone)]
pub struct Outbox {
    tx: mpsc::UnboundedSender<Outgoing>,
    budget: Arc<Semaphore>,
}

impl Outbox {
    pub fn new() -> (Outbox, mpsc::UnboundedReceiver<Outgoing>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Outbox {
                tx,
                budget: Arc::new(Semaphore::new(OUT_BUDGET)),
            },
            rx,
        )
    }

    /// Queues `bytes`, waiting while the connection is over its budget.
    pub async fn send(
        &self,
        bytes: Vec<u8>,
        advance: Option<(Arc<SubState>, u64)>,
    ) -> Result<(), Closed> {
        let n = bytes.len().clamp(1, OUT_BUDGET) as u32;
        let permit = self
            .budget
            .clone()
            .acquire_many_owned(n)
            .await
            .map_err(|_| Closed)?;
        self.tx
            .send(Outgoing {
                bytes,
                advance,
                _permit: permit,
            })
            .map_err(|_| Closed)
    }

    /// Waits until nothing of this connection is queued and holds the whole
    /// budget; the answer built under it is queued with [`Outbox::send_in`].
    pub async fn reserve_all(&self) -> Result<Room, Closed> {
        let permit = self
            .budget
            .clone()
            .acquire_many_owned(OUT_BUDGET as u32)
            .await
            .map_err(|_| Closed)?;
        Ok(Room(permit))
    }

    /// The whole budget now, if nothing of this connection is queued, being
    /// written or being built in reserved room: its holder may write to the
    /// socket itself, in order (see `server/connection.rs`).
    pub fn try_reserve_all(&self) -> Option<Room> {
        self.budget
            .clone()
            .try_acquire_many_owned(OUT_BUDGET as u32)
            .ok()
            .map(Room)
    }

    /// Queues `bytes` in room reserved earlier (no further wait).
    pub fn send_in(&self, bytes: Vec<u8>, room: Room) -> Result<(), Closed> {
        self.tx
            .send(Outgoing {
                bytes,
                advance: None,
                _permit: room.0,
            })
            .map_err(|_| Closed)
    }

    /// A handle that can fail every waiting and later `send` (the socket is
    /// gone) without keeping the queue open, as a clone of the outbox would.
    pub fn closer(&self) -> Closer {
        Closer(self.budget.clone())
    }
}

/// The whole budget of a connection, held by one answer.
pub struct Room(OwnedSemaphorePermit);

pub struct Closer(Arc<Semaphore>);

impl Closer {
    pub fn close(&self) {
        self.0.close();
    }
}
