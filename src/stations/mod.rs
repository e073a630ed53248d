//! Stations: where events come from and where outbound ops go.
//!
//! - `local`: lines of local agents (`metro://claude/…`, `metro://codex/…`,
//!   any station name that is not a platform). `send`, `edit` and `react` to
//!   such a line append a `notify`, `edit` or `react` event addressed to it.
//! - [`webhook`]: HTTP senders become `inbound` events on
//!   `metro://webhook/<id>` lines. Inbound only: outbound ops on its lines
//!   answer `unavailable`.
//! - [`telegram`]: a Telegram bot (long polling in, Bot API out); disabled
//!   without a token, and then its ops answer `unavailable`.
//! - `discord`: listed as not available; its ops answer `unavailable`.
//!
//! Shared by the chat stations: [`access`] (allowlist, pairing codes) and
//! [`queue`] (per-conversation turns, rate limits, `retry_after`).

pub mod access;
pub mod queue;
pub mod telegram;
pub mod webhook;

use serde_json::{json, Value};

use crate::proto::WireError;

/// The rows of the `stations` answer, from the running stations.
pub fn all(
    webhook: Option<&webhook::Webhooks>,
    telegram: Option<&telegram::Telegram>,
) -> Vec<Value> {
    let missing = |name: &str| {
        json!({
            "name": name,
            "enabled": false,
            "status": format!("not available: this metrod build has no {name} station yet"),
            "capabilities": [],
        })
    };
    vec![
        json!({
            "name": "local",
            "enabled": true,
            "status": "ok",
            "capabilities": ["send", "edit", "react", "fetch"],
        }),
        match telegram {
            Some(t) => t.station_row(),
            None => telegram::disabled_row(),
        },
        missing("discord"),
        match webhook {
            Some(w) => w.station_row(),
            None => missing("webhook"),
        },
    ]
}

/// The answer to an op on a station this build does not run, or to an
/// outbound op on a webhook line.
pub fn unavailable(station: &str) -> WireError {
    if station == "webhook" {
        return WireError::unavailable(
            "webhook lines are inbound only: metro cannot send, edit, react or download on them",
        );
    }
    if station == "telegram" {
        return WireError::unavailable(format!(
            "the telegram station is {}",
            telegram::disabled_reason()
        ));
    }
    WireError::unavailable(format!(
        "the {station} station is not available in this metrod build"
    ))
}

/// `from` of the events the daemon writes itself (`kind: "system"`).
pub const DAEMON: &str = "metro://local/metrod";

/// Identity used as `from` when an op names no actor.
pub const ANONYMOUS: &str = "metro://local/anonymous";

/// Replaces a station's state file (`path`) with `value` as pretty JSON,
/// atomically; a failure becomes an `internal` answer starting with
/// `not_done` ("the endpoint was not added", …) and is logged.
pub async fn persist_json<T: serde::Serialize>(
    path: &std::path::Path,
    value: &T,
    fsync: bool,
    not_done: &str,
) -> Result<(), WireError> {
    let body = serde_json::to_vec_pretty(value)
        .map_err(|e| WireError::internal(format!("{not_done}: {e}")))?;
    if let Err(e) = crate::store::write_atomic_async(path.to_path_buf(), body, fsync).await {
        let why = format!("{not_done}: could not write {}: {e}", path.display());
        tracing::error!("{why}");
        return Err(WireError::internal(why));
    }
    Ok(())
}
