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
//! - [`discord`]: a Discord bot (gateway in, REST out); disabled without a
//!   token, and then its ops answer `unavailable`.
//!
//! Shared by the chat stations: [`access`] (allowlist, pairing codes),
//! [`queue`] (per-conversation turns, rate limits, `retry_after`), [`ids`]
//! (metro ids ↔ platform message ids), [`text`] (splitting, buttons,
//! files), and here: [`Status`], [`Backoff`], [`append_retrying`],
//! [`Recent`], [`Sent`].

pub mod access;
pub mod discord;
pub mod ids;
pub mod queue;
pub mod telegram;
pub mod text;
pub mod webhook;

use std::collections::{HashSet, VecDeque};
use std::hash::Hash;
use std::time::Duration;

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::proto::WireError;

/// The rows of the `stations` answer, from the running stations.
pub fn all(
    webhook: Option<&webhook::Webhooks>,
    telegram: Option<&telegram::Telegram>,
    discord: Option<&discord::Discord>,
) -> Vec<Value> {
    let off = |name: &str, status: String| {
        json!({
            "name": name,
            "enabled": false,
            "status": status,
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
            None => off("telegram", no_token("telegram")),
        },
        match discord {
            Some(d) => d.station_row(),
            None => off("discord", no_token("discord")),
        },
        match webhook {
            Some(w) => w.station_row(),
            None => off(
                "webhook",
                "not available: this metrod runs no webhook listener".into(),
            ),
        },
    ]
}

/// Applies reloaded configs to chat station `name` (its section: `pick`):
/// the allowlist takes effect at once (`set_allow`); a token or URL that
/// differs from what the station `started` with is said in the log, since
/// it needs a restart.
pub async fn follow_config(
    name: &'static str,
    pick: fn(&crate::config::Config) -> &crate::config::StationConfig,
    started: crate::config::StationConfig,
    set_allow: impl Fn(crate::config::Allow),
    mut configs: tokio::sync::watch::Receiver<std::sync::Arc<crate::config::Config>>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            changed = configs.changed() => if changed.is_err() { return },
            _ = stop.cancelled() => return,
        }
        let cfg = configs.borrow_and_update().clone();
        let now = pick(&cfg);
        set_allow(now.allow.clone());
        if now.token != started.token
            || now.api_url != started.api_url
            || now.gateway_url != started.gateway_url
        {
            tracing::warn!(
                "{name}: the reloaded config changes the token or a URL; restart metrod to use it (the allowlist is already in force)"
            );
        }
    }
}

/// The status of a chat station that has no token.
pub fn no_token(station: &str) -> String {
    format!(
        "disabled: no bot token (set METRO_{}_TOKEN, or token in the [{station}] section of {})",
        station.to_uppercase(),
        crate::config::path().display()
    )
}

/// The answer to an op on a station this build does not run, or to an
/// outbound op on a webhook line.
pub fn unavailable(station: &str) -> WireError {
    match station {
        "webhook" => WireError::unavailable(
            "webhook lines are inbound only: metro cannot send, edit, react or download on them",
        ),
        "telegram" | "discord" => {
            WireError::unavailable(format!("the {station} station is {}", no_token(station)))
        }
        _ => WireError::unavailable(format!(
            "the {station} station is not available in this metrod build"
        )),
    }
}

/// What a `send` put on a platform: its message ids, in order (several
/// for a split text or an album), and the message it replied to.
#[derive(Debug, Clone, Default)]
pub struct Sent {
    pub message_ids: Vec<String>,
    pub reply_to: Option<String>,
}

/// A `send` that failed, with what had gone out before the failure.
#[derive(Debug)]
pub struct SendFailure {
    pub error: WireError,
    pub sent: Sent,
}

impl From<WireError> for SendFailure {
    fn from(error: WireError) -> Self {
        SendFailure {
            error,
            sent: Sent::default(),
        }
    }
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

/// Pauses between failed attempts: 1 s, doubling, at most 60 s.
#[derive(Debug, Default)]
pub struct Backoff(Option<Duration>);

impl Backoff {
    const FIRST: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(60);

    pub fn new() -> Backoff {
        Backoff(None)
    }

    pub fn reset(&mut self) {
        self.0 = None;
    }

    /// The pause to take now; the next one is twice as long.
    pub fn pause(&mut self) -> Duration {
        let d = self.0.unwrap_or(Self::FIRST);
        self.0 = Some((d * 2).min(Self::MAX));
        d
    }
}

/// Sleeps `d`; false when shutdown came first.
pub async fn pause(d: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = tokio::time::sleep(d) => true,
    }
}

/// A platform station's status in words (`ok`, `starting: …`, `down: …`).
/// Each change is logged once (`down…` at warn level), and the station's
/// secret (its token) never appears in it.
pub struct Status {
    station: &'static str,
    secret: String,
    text: std::sync::Mutex<String>,
}

impl Status {
    pub fn new(station: &'static str, secret: &str, initial: &str) -> Status {
        Status {
            station,
            secret: secret.to_string(),
            text: std::sync::Mutex::new(initial.to_string()),
        }
    }

    pub fn get(&self) -> String {
        self.text
            .lock()
            .map(|s| s.clone())
            .unwrap_or_else(|_| "unknown".into())
    }

    pub fn set(&self, s: impl Into<String>) {
        let s = self.redact(&s.into());
        if let Ok(mut st) = self.text.lock() {
            if *st != s {
                if s.starts_with("down") {
                    tracing::warn!("{} station {s}", self.station);
                } else {
                    tracing::info!("{} station {s}", self.station);
                }
                *st = s;
            }
        }
    }

    /// Says `why` (with the pause to come), then waits the next pause of
    /// `backoff`; false when shutdown came first.
    pub async fn retry_later(
        &self,
        why: impl std::fmt::Display,
        backoff: &mut Backoff,
        shutdown: &CancellationToken,
    ) -> bool {
        let d = backoff.pause();
        self.set(format!("{why}; retrying in {} s", d.as_secs()));
        pause(d, shutdown).await
    }

    /// `s` with the secret replaced by `<token>`.
    pub fn redact(&self, s: &str) -> String {
        if self.secret.is_empty() {
            return s.to_string();
        }
        s.replace(&self.secret, "<token>")
    }
}

/// Appends `ev`, again and again with a growing pause while the log cannot
/// be written (`failed` hears why and how long the pause is). `None` only
/// at shutdown: the caller leaves the platform's event unconfirmed.
pub async fn append_retrying(
    log: &crate::store::log::Log,
    ev: &crate::proto::Event,
    shutdown: &CancellationToken,
    failed: impl Fn(&str, Duration),
) -> Option<crate::store::log::Appended> {
    use crate::store::log::AppendError;
    let mut backoff = Backoff::new();
    loop {
        match log.append(ev.clone()).await {
            Ok(a) => return Some(a),
            Err(AppendError::ShuttingDown) => return None,
            Err(AppendError::Io(why)) => {
                let d = backoff.pause();
                failed(&why.to_string(), d);
                if !pause(d, shutdown).await {
                    return None;
                }
            }
        }
    }
}

/// The newest `cap` keys seen, to recognise an update or event the
/// platform sends again.
#[derive(Debug)]
pub struct Recent<T> {
    cap: usize,
    set: HashSet<T>,
    order: VecDeque<T>,
}

impl<T: Hash + Eq + Clone> Recent<T> {
    pub fn new(cap: usize) -> Recent<T> {
        Recent {
            cap,
            set: HashSet::new(),
            order: VecDeque::new(),
        }
    }

    pub fn contains(&self, key: &T) -> bool {
        self.set.contains(key)
    }

    pub fn len(&self) -> usize {
        self.set.len()
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    pub fn insert(&mut self, key: T) {
        if self.set.insert(key.clone()) {
            self.order.push_back(key);
            while self.order.len() > self.cap {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_is_bounded() {
        let mut r = Recent::new(100);
        for i in 0..110u32 {
            r.insert(i);
        }
        assert_eq!(r.len(), 100);
        assert!(!r.contains(&0));
        assert!(r.contains(&109));
    }
}
