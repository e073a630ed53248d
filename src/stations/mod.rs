//! Stations: where events come from and where outbound ops go.
//!
//! This build has the `local` station only: lines of local agents
//! (`metro://claude/…`, `metro://codex/…`, any station name that is not a
//! platform). `send`, `edit` and `react` to such a line append a `notify`,
//! `edit` or `react` event addressed to it. The platform stations
//! (`telegram`, `discord`, `webhook`) are listed as not available: their ops
//! answer `unavailable`.

use serde_json::{json, Value};

use crate::proto::WireError;

/// One row of the `stations` answer.
pub fn all() -> Vec<Value> {
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
        missing("telegram"),
        missing("discord"),
        missing("webhook"),
    ]
}

/// The answer to an op on a station this build does not run.
pub fn unavailable(station: &str) -> WireError {
    WireError::unavailable(format!(
        "the {station} station is not available in this metrod build"
    ))
}

/// `from` of the events the daemon writes itself (`kind: "system"`).
pub const DAEMON: &str = "metro://local/metrod";

/// Identity used as `from` when an op names no actor.
pub const ANONYMOUS: &str = "metro://local/anonymous";
