//! Stations: where events come from and where outbound ops go. Each is a
//! folder behind the seam ([`crate::station`]): a kind the registry opens,
//! a `Station` the server reaches only through the registry.
//!
//! - [`local`]: lines of local agents (`metro://claude/…`, `metro://codex/…`,
//!   any station name that is not a platform). `send`, `edit` and `react` to
//!   such a line append a `notify`, `edit` or `react` event addressed to it.
//! - [`webhook`]: HTTP senders become `inbound` events on
//!   `metro://webhook/<id>` lines. Inbound only: outbound ops on its lines
//!   answer `unavailable`.
//! - [`telegram`]: a Telegram bot (long polling in, Bot API out); disabled
//!   without a token, and then its ops answer `unavailable`.
//! - [`discord`]: a Discord bot (gateway in, REST out); disabled without a
//!   token, and then its ops answer `unavailable`.
//!
//! Shared by the chat stations: [`queue`] (per-conversation turns, rate
//! limits, `retry_after`), [`ids`] (metro ids ↔ platform message ids),
//! [`text`] (splitting, buttons, files), [`lenient`] (platform payloads
//! read with only the fields used, what is missing named without quoting
//! it). The inbound pipeline, the status, counters and recent keys are the
//! seam's ([`crate::station::ingest`], [`crate::station::core`]), as is
//! the allowlist ([`crate::station::access`]).
//!
//! Must not import: `broker`, `server`, `service`, `monitor`, `daemon`.

pub mod discord;
pub mod ids;
pub mod lenient;
pub mod local;
pub mod queue;
pub mod telegram;
pub mod text;
pub mod webhook;

use std::sync::Arc;

pub use crate::station::core::{pause, Backoff};
use crate::station::StationKind;

/// The kinds a stock metrod registers, in the order of the `stations`
/// rows: `local`, `telegram`, `discord`, then `webhook` (whose options are
/// metrod's flags, so the daemon builds it).
pub fn builtin(webhook: webhook::kind::WebhookKind) -> Vec<Arc<dyn StationKind>> {
    vec![
        Arc::new(local::LocalKind),
        Arc::new(telegram::kind::TelegramKind),
        Arc::new(discord::kind::DiscordKind),
        Arc::new(webhook),
    ]
}
