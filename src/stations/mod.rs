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
//! it), and here: [`Status`], [`Backoff`], [`append_retrying`],
//! [`Recent`]; the allowlist is the seam's ([`crate::station::access`]).
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
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::station::StationKind;
pub use crate::store::recent::Recent;

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
