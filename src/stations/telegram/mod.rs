//! The Telegram station: a bot (teloxide, Bot API) whose chats are lines
//! `metro://telegram/<chatId>[/<topicId>]`.
//!
//! - [`inbound`]: the daemon is the only `getUpdates` caller for its token.
//!   Each update becomes at most one event, appended (durable) before the
//!   next `getUpdates` offset confirms it to Telegram; an update seen again
//!   after a crash is recognised by its `updateId` and not stored twice.
//!   Polling that fails backs off and retries forever; [`Telegram::status`]
//!   says what is wrong in words.
//! - [`outbound`]: `send`, `edit`, `react`, `download` through the
//!   per-chat queue ([`crate::stations::queue`]): rate limits,
//!   `retry_after`, text split at 4096 characters, albums, buttons, and a
//!   plain-text resend when Telegram cannot parse the formatting.
//! - [`ids`]: metro event ids ↔ Telegram message ids, kept in
//!   `telegram-ids.jsonl`, so `messageId`/`replyTo` accept either.
//! - [`update`]: `getUpdates` answers, read with only the fields metro
//!   uses; an update that lacks one is skipped, the batch is kept.
//! - [`inlet`]: its side of the shared inbound pipeline
//!   ([`crate::station::ingest`]): dedupe by `updateId`, the allowlist and
//!   pairing codes, recording ids, answering button presses.
//!
//! Configured by `METRO_TELEGRAM_TOKEN` / `[telegram] token` (no token: the
//! station is disabled and telegram ops answer `unavailable`),
//! `METRO_TELEGRAM_API_URL` and `METRO_TELEGRAM_ALLOW` (see
//! [`crate::config`]).

pub mod ids;
pub mod inbound;
pub mod inlet;
pub mod kind;
pub mod lean;
pub mod map;
pub mod me;
pub mod outbound;
pub mod update;

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};
use teloxide::Bot;

use crate::config::StationConfig;
use crate::station::access::Access;
pub(crate) use crate::station::core::bump;
use crate::station::core::StationCore;
use crate::stations::queue::{Limits, Queue, Rate};
use crate::store::log::Log;

/// Telegram's own API, unless `METRO_TELEGRAM_API_URL` says otherwise.
pub const DEFAULT_API_URL: &str = "https://api.telegram.org";
/// Seconds a `getUpdates` long poll waits for news.
pub const POLL_TIMEOUT_SECS: u32 = 30;
/// Update ids remembered to recognise a resent update.
const RECENT_UPDATES: usize = 4096;
/// Bytes at the end of the log read at startup for recent update ids.
const SEED_BYTES: usize = 4 << 20;

/// Telegram's limits: about 30 messages a second for a bot, one a second
/// in a private chat and 20 a minute in a group (short bursts pass).
pub const GLOBAL_RATE: Rate = Rate {
    burst: 30,
    every: Duration::from_millis(34),
};
pub const PRIVATE_RATE: Rate = Rate {
    burst: 3,
    every: Duration::from_secs(1),
};
pub const GROUP_RATE: Rate = Rate {
    burst: 3,
    every: Duration::from_secs(3),
};
/// A call waits at most this long in total for `retry_after` pauses.
pub const MAX_RETRY_WAIT: Duration = Duration::from_secs(60);

/// Counters shown by `stats` besides the pipeline's
/// ([`crate::station::core::Counters`]: `received`, `blocked`,
/// `pairingReplies`, `duplicates` — updates seen again after a restart —,
/// `skipped` — updates that carry nothing metro stores —, `sent`).
#[derive(Debug, Default)]
pub struct Counters {
    /// Formatted texts Telegram could not parse, resent as plain text.
    pub plain_fallbacks: AtomicU64,
}

/// The running station.
pub struct Telegram {
    /// The log its events go to.
    pub(crate) log: Arc<Log>,
    /// The config section it was opened with (a change of token or URL
    /// restarts it).
    pub(crate) opened: StationConfig,
    pub(crate) bot: Bot,
    api_url: String,
    pub access: Access,
    pub(crate) ids: ids::Ids,
    pub(crate) queue: Queue,
    /// Status, the pipeline's counters, recent update ids (the newest
    /// [`RECENT_UPDATES`]), redaction of the token.
    pub core: StationCore,
    pub counters: Counters,
    bot_name: Mutex<Option<String>>,
    pub(crate) poll_timeout: u32,
}

/// Opens the station when `cfg` has a token: the id map, the access list,
/// recent update ids from the end of `log`. `None` without a token.
pub fn open(
    state_dir: &Path,
    log: &Arc<Log>,
    cfg: &StationConfig,
    fsync: bool,
) -> io::Result<Option<Arc<Telegram>>> {
    let Some(token) = cfg.token.clone().filter(|t| !t.trim().is_empty()) else {
        return Ok(None);
    };
    let api_url = cfg
        .api_url
        .clone()
        .unwrap_or_else(|| DEFAULT_API_URL.to_string());
    let url = url::Url::parse(&api_url).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("the Telegram API URL {api_url:?} is not a URL: {e}"),
        )
    })?;
    let client = teloxide::net::default_reqwest_settings()
        .timeout(Duration::from_secs(u64::from(POLL_TIMEOUT_SECS) + 15))
        .build()
        .map_err(|e| io::Error::other(format!("cannot build the HTTP client: {e}")))?;
    let bot = Bot::with_client(token.clone(), client).set_api_url(url);
    let access = Access::open(state_dir, "telegram", cfg.allow.clone(), fsync)?;
    let ids = ids::Ids::open(state_dir)?;
    let core = StationCore::new(
        "telegram",
        &token,
        "starting: asking Telegram who this bot is (getMe)",
        RECENT_UPDATES,
    );
    seed_recent(log, &core)?;
    Ok(Some(Arc::new(Telegram {
        log: log.clone(),
        opened: cfg.clone(),
        bot,
        api_url: api_url.trim_end_matches('/').to_string(),
        access,
        ids,
        queue: Queue::new(Limits {
            global: GLOBAL_RATE,
            max_wait: MAX_RETRY_WAIT,
        }),
        core,
        counters: Counters::default(),
        bot_name: Mutex::new(None),
        poll_timeout: POLL_TIMEOUT_SECS,
    })))
}

/// The dedupe key of update `u`.
pub(crate) fn update_key(u: u32) -> String {
    u.to_string()
}

/// Remembers the update ids of the telegram events in the last
/// [`SEED_BYTES`] of the log.
fn seed_recent(log: &Log, core: &StationCore) -> io::Result<()> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Seed {
        #[serde(default)]
        id: String,
        #[serde(default)]
        station: String,
        #[serde(default)]
        update_id: Option<u32>,
    }
    core.seed(log, SEED_BYTES as u64, |json| {
        let s = serde_json::from_slice::<Seed>(json).ok()?;
        let u = s.update_id.filter(|_| s.station == "telegram")?;
        Some((update_key(u), s.id))
    })
}

impl Telegram {
    pub fn status(&self) -> String {
        self.core.status()
    }

    pub(crate) fn set_status(&self, s: impl Into<String>) {
        self.core.set_status(s);
    }

    pub(crate) fn set_bot_name(&self, name: Option<String>) {
        if let Ok(mut n) = self.bot_name.lock() {
            *n = name;
        }
    }

    pub fn api_url(&self) -> &str {
        &self.api_url
    }

    /// Hides the token in text that may quote a request URL.
    pub(crate) fn redact(&self, s: &str) -> String {
        self.core.redact(s)
    }

    /// The `telegram` row of `stations`.
    pub fn station_row(&self) -> Value {
        json!({
            "name": "telegram",
            "enabled": true,
            "status": self.status(),
            "capabilities": ["inbound", "send", "edit", "react", "download", "fetch"],
            "bot": self.bot_name.lock().ok().and_then(|n| n.clone()),
            "apiUrl": self.api_url,
        })
    }

    /// The `telegram` entry of `stats.stations`.
    pub fn stats(&self) -> Value {
        let mut m = self.core.counters.json();
        m.insert("retries".into(), json!(self.queue.retries()));
        m.insert(
            "plainFallbacks".into(),
            json!(self.counters.plain_fallbacks.load(Ordering::Relaxed)),
        );
        Value::Object(m)
    }
}

/// `metro://telegram/<chat>[/<topic>]`
pub fn line_of(chat: i64, topic: Option<i32>) -> String {
    match topic {
        Some(t) => format!("metro://telegram/{chat}/{t}"),
        None => format!("metro://telegram/{chat}"),
    }
}

/// The chat and topic of a (validated) telegram line.
pub fn parse_line(line: &str) -> Option<(i64, Option<i32>)> {
    let rest = line.strip_prefix("metro://telegram/")?;
    let mut parts = rest.split('/');
    let chat = parts.next()?.parse().ok()?;
    let topic = match parts.next() {
        Some(t) => Some(t.parse().ok()?),
        None => None,
    };
    if parts.next().is_some() {
        return None;
    }
    Some((chat, topic))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip() {
        assert_eq!(line_of(-100, Some(7)), "metro://telegram/-100/7");
        assert_eq!(parse_line("metro://telegram/-100/7"), Some((-100, Some(7))));
        assert_eq!(parse_line("metro://telegram/42"), Some((42, None)));
        assert_eq!(parse_line("metro://telegram/x"), None);
        assert_eq!(parse_line("metro://discord/1"), None);
    }
}
