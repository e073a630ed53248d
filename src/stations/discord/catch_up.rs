//! The read-back after READY: Discord does not dispatch again what was
//! said while metro had no session, so the channels metro knows are read
//! back first (the newest stored message on) and what is new goes through
//! the same checks and into the log, oldest first, before any live
//! dispatch that followed READY.
//!
//! Must not import: `broker`, `server`.

use std::sync::Arc;

use reqwest::Method;
use serde_json::{json, Value};
use serenity::http::Route;
use tokio_util::sync::CancellationToken;

use super::dispatch::Message;
use super::inbound::store;
use super::map::created;
use super::{bump, Discord};
use crate::station::ingest::Outcome;

/// Messages read back per request, and requests per channel.
pub const CATCH_UP_PAGE: usize = 100;
pub const CATCH_UP_PAGES: usize = 10;
/// Channels read back after a new session (the most recently active).
pub const CATCH_UP_CHANNELS: usize = 50;

/// After a new session (metrod started, or Discord could not resume):
/// Discord does not send again what was said meanwhile, so the channels
/// metro has stored messages of are read back from the newest stored one
/// on (the [`CATCH_UP_CHANNELS`] most recently active, up to
/// [`CATCH_UP_PAGES`] × [`CATCH_UP_PAGE`] messages each), and what is new
/// goes through the same checks and into the log, oldest first, marked
/// `caughtUp: true`, before any live dispatch that followed READY. What
/// the live stream then brings again is recognised and not stored twice.
/// False only at shutdown.
pub(super) async fn catch_up(dc: &Arc<Discord>, shutdown: &CancellationToken) -> bool {
    for (channel, newest) in dc.newest_per_channel().into_iter().take(CATCH_UP_CHANNELS) {
        let mut after = newest;
        for page in 1..=CATCH_UP_PAGES {
            let Some(messages) = read_after(dc, channel, after, shutdown).await else {
                return false;
            };
            let Ok(Listing {
                messages,
                entries,
                newest,
            }) = messages
            else {
                break;
            };
            let full = entries >= CATCH_UP_PAGE;
            let from = after;
            // An unreadable entry is skipped, but read past all the same.
            after = after.max(newest);
            for m in messages.iter().filter(|m| m.id.get() > from) {
                after = after.max(m.id.get());
                let Some(mut inbound) = created(m) else {
                    continue;
                };
                // Old news: no pairing reply to a message from before.
                inbound.message = false;
                inbound.event.extra.insert("caughtUp".into(), json!(true));
                match store(dc, inbound, shutdown).await {
                    Outcome::Stored(_) => bump(&dc.counters.caught_up),
                    Outcome::NotStored(_) => return false,
                    _ => {}
                }
            }
            if !full {
                break;
            }
            if page == CATCH_UP_PAGES {
                tracing::warn!(
                    "discord: channel {channel} had more than {} messages while metro was not connected; the newer ones are not stored (fetch reads them)",
                    CATCH_UP_PAGE * CATCH_UP_PAGES
                );
            }
        }
    }
    true
}

/// A page of a channel's messages, read with only the fields metro uses.
pub(super) struct Listing {
    /// The readable messages, oldest first.
    pub messages: Vec<Message>,
    /// Entries in Discord's answer, readable or not.
    pub entries: usize,
    /// The newest id in the answer, readable or not (0: none).
    pub newest: u64,
}

/// Reads each entry of a message listing on its own: one that lacks what
/// metro needs is logged by id and skipped (docs/broker.md, "Limits and
/// threat model"), the others are kept.
pub(super) fn listing(channel: u64, entries: Vec<Value>) -> Listing {
    let count = entries.len();
    let mut newest = 0;
    let mut messages = Vec::with_capacity(count);
    for v in entries {
        match super::dispatch::message(v) {
            Ok(m) => {
                newest = newest.max(m.id.get());
                messages.push(m);
            }
            Err(e) => {
                if let Some(id) = e.id.as_deref().and_then(|i| i.parse::<u64>().ok()) {
                    newest = newest.max(id);
                }
                tracing::warn!(
                    "discord: message {} of channel {channel} is not readable ({}); skipped",
                    e.id.as_deref().unwrap_or("with no id"),
                    e.why
                );
            }
        }
    }
    messages.sort_by_key(|m| m.id);
    Listing {
        messages,
        entries: count,
        newest,
    }
}

/// The messages of `channel` after `after`, oldest first; `None` at
/// shutdown, `Err` when Discord would not say (logged).
async fn read_after(
    dc: &Discord,
    channel: u64,
    after: u64,
    shutdown: &CancellationToken,
) -> Option<Result<Listing, ()>> {
    let mut req = dc.req(
        Method::GET,
        Route::ChannelMessages {
            channel_id: channel.into(),
        },
    );
    req.query.push(("after", after.to_string()));
    req.query.push(("limit", CATCH_UP_PAGE.to_string()));
    let conversation = channel.to_string();
    let got = tokio::select! {
        _ = shutdown.cancelled() => return None,
        r = dc.call_json::<Vec<Value>>(&conversation, &req) => r,
    };
    Some(match got {
        Ok(entries) => Ok(listing(channel, entries)),
        Err(e) => {
            tracing::warn!(
                "discord: could not read back channel {channel} after a new session: {}",
                e.message
            );
            Err(())
        }
    })
}
