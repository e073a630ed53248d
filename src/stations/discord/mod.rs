//! The Discord station: a bot (serenity 0.12) whose channels are lines
//! `metro://discord/<channelId>` (threads and DMs are channels too).
//!
//! - [`gateway`]: serenity's shard runner keeps the gateway connection
//!   (heartbeats, RESUME after a drop, a new IDENTIFY after an invalid
//!   session, retried forever) on a thread of its own; every dispatch is
//!   handed over in the order it arrived.
//! - [`dispatch`]: what metro reads of a dispatch or a listed message —
//!   only the fields it uses; one that lacks them is logged and skipped.
//! - [`inbound`]: dispatches → events (messages, edits, reactions, button
//!   presses), filtered by the allowlist, appended durably, one at a time.
//!   The bot's own messages never come back; other bots only when their id
//!   is listed by name. A new session first reads back what the known
//!   channels said since metro's newest stored message.
//! - [`rest`]: every REST call goes through the station's queue
//!   ([`crate::stations::queue`]): one turn per channel, Discord's
//!   `X-RateLimit-*` headers and 429 `retry_after` honoured by metro itself
//!   (serenity's own limiter only works against discord.com, and metro may
//!   be pointed at a proxy).
//! - [`outbound`]: `send`, `edit`, `react`, `download`, `fetch`.
//!
//! Configured by `METRO_DISCORD_TOKEN` / `[discord] token` (no token: the
//! station is disabled and discord ops answer `unavailable`),
//! `METRO_DISCORD_API_URL`, `METRO_DISCORD_GATEWAY_URL` and
//! `METRO_DISCORD_ALLOW` (see [`crate::config`]).

mod catch_up;
pub mod dispatch;
pub mod gateway;
pub mod inbound;
pub mod kind;
pub mod lean;
pub mod map;
pub mod outbound;
pub mod rest;

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::config::StationConfig;
use crate::station::access::Access;
pub(crate) use crate::station::core::bump;
use crate::station::core::StationCore;
use crate::stations::ids::Ids;
use crate::stations::queue::{Limits, Queue, Rate};
use crate::store::log::Log;

/// Discord's REST API, unless `METRO_DISCORD_API_URL` says otherwise.
pub const DEFAULT_API_URL: &str = "https://discord.com";
pub const IDS_FILE: &str = "discord-ids.jsonl";
/// Recent message keys remembered to recognise an event seen again.
const RECENT_EVENTS: usize = 4096;
/// Server channel names kept (one lookup each).
const MAX_CHANNEL_NAMES: usize = 10_000;
/// Bytes at the end of the log read at startup for recent message keys.
const SEED_BYTES: u64 = 4 << 20;

/// Discord's limits: 50 requests a second for a bot; about 5 messages
/// per 5 seconds in a channel (the headers say the exact budget, and
/// metro follows them).
pub const GLOBAL_RATE: Rate = Rate {
    burst: 50,
    every: Duration::from_millis(20),
};
pub const CHANNEL_RATE: Rate = Rate {
    burst: 5,
    every: Duration::from_secs(1),
};
/// A call waits at most this long in total for `retry_after` pauses.
pub const MAX_RETRY_WAIT: Duration = Duration::from_secs(60);

/// Counters shown by `stats` besides the pipeline's
/// ([`crate::station::core::Counters`]: `received`, `blocked`,
/// `pairingReplies`, `duplicates` — messages seen again after a resume or
/// a restart —, `skipped` — dispatches that carry nothing metro stores —,
/// `sent` — REST calls Discord accepted).
#[derive(Debug, Default)]
pub struct Counters {
    /// Messages from other bots not listed by id (not stored).
    pub bots: AtomicU64,
    /// The bot's own messages, edits and reactions coming back (not stored).
    pub own: AtomicU64,
    /// Messages read back after a new session and stored.
    pub caught_up: AtomicU64,
    /// Dispatches lost because the log could not keep up (see the log).
    pub dropped: AtomicU64,
    /// Gateway sessions started (IDENTIFY → READY) and resumed.
    pub sessions: AtomicU64,
    pub resumes: AtomicU64,
}

/// The running station.
pub struct Discord {
    /// The log its events go to.
    pub(crate) log: Arc<Log>,
    /// The config section it was opened with (a change of token or URL
    /// restarts it).
    pub(crate) opened: StationConfig,
    /// `Bot <token>`, the Authorization header.
    pub(crate) auth: String,
    api_url: String,
    pub(crate) gateway_url: Option<String>,
    pub(crate) http: reqwest::Client,
    pub access: Access,
    pub(crate) ids: Ids,
    pub(crate) queue: Queue,
    /// Status, the pipeline's counters, recent message keys (the newest
    /// [`RECENT_EVENTS`]), redaction of the token.
    pub core: StationCore,
    pub counters: Counters,
    /// The bot's user id (0 until known) and name.
    bot_id: AtomicU64,
    bot_name: Mutex<Option<String>>,
    /// Server channel names (`#name`), looked up once per channel; `None`
    /// while the lookup runs or after it failed.
    channel_names: Mutex<HashMap<u64, Option<String>>>,
    /// The newest message metro stored per channel (inbound or sent): where
    /// a catch-up after a new session starts reading.
    newest: Mutex<HashMap<u64, u64>>,
}

/// The token without a `Bot ` prefix someone pasted along.
fn bare_token(t: &str) -> &str {
    let t = t.trim();
    t.strip_prefix("Bot ").unwrap_or(t).trim()
}

/// Opens the station when `cfg` has a token: the id map, the access list,
/// recent message keys from the end of `log`. `None` without a token.
pub fn open(
    state_dir: &Path,
    log: &Arc<Log>,
    cfg: &StationConfig,
    fsync: bool,
) -> io::Result<Option<Arc<Discord>>> {
    let Some(token) = cfg
        .token
        .as_deref()
        .map(bare_token)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
    else {
        return Ok(None);
    };
    let api_url = cfg
        .api_url
        .clone()
        .unwrap_or_else(|| DEFAULT_API_URL.to_string())
        .trim_end_matches('/')
        .to_string();
    let bad = |what: &str, url: &str, why: String| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("the Discord {what} {url:?} is not usable: {why}"),
        )
    };
    let parsed = url::Url::parse(&api_url).map_err(|e| bad("API URL", &api_url, e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(bad("API URL", &api_url, "it must be http(s)://".into()));
    }
    if let Some(g) = &cfg.gateway_url {
        let parsed = url::Url::parse(g).map_err(|e| bad("gateway URL", g, e.to_string()))?;
        if !matches!(parsed.scheme(), "ws" | "wss") {
            return Err(bad("gateway URL", g, "it must be ws(s)://".into()));
        }
    }
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| io::Error::other(format!("cannot build the HTTP client: {e}")))?;
    let access = Access::open(state_dir, "discord", cfg.allow.clone(), fsync)?;
    let ids = Ids::open(state_dir, IDS_FILE, channel_scope)?;
    let core = StationCore::new(
        "discord",
        &token,
        "starting: asking Discord who this bot is (GET /users/@me)",
        RECENT_EVENTS,
    );
    let newest = seed(log, &core)?;
    Ok(Some(Arc::new(Discord {
        log: log.clone(),
        opened: cfg.clone(),
        auth: format!("Bot {token}"),
        api_url,
        gateway_url: cfg.gateway_url.clone(),
        http,
        access,
        ids,
        queue: Queue::new(Limits {
            global: GLOBAL_RATE,
            max_wait: MAX_RETRY_WAIT,
        }),
        core,
        counters: Counters::default(),
        bot_id: AtomicU64::new(0),
        bot_name: Mutex::new(None),
        newest: Mutex::new(newest),
        channel_names: Mutex::new(HashMap::new()),
    })))
}

/// From the discord events in the last [`SEED_BYTES`] of the log: the
/// keys ([`map::key_of`]) of what came from Discord (remembered in
/// `core`), and the newest message per channel.
fn seed(log: &Log, core: &StationCore) -> io::Result<HashMap<u64, u64>> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Seed {
        #[serde(default)]
        id: String,
        #[serde(default)]
        station: String,
        #[serde(default)]
        kind: String,
        #[serde(default)]
        line: String,
        #[serde(default)]
        message_id: Option<String>,
        #[serde(default)]
        message_ids: Vec<String>,
        #[serde(default)]
        edited_at: Option<String>,
        #[serde(default)]
        from: String,
    }
    let mut newest = HashMap::new();
    core.seed(log, SEED_BYTES, |json| {
        let s = serde_json::from_slice::<Seed>(json).ok()?;
        if s.station != "discord" {
            return None;
        }
        if matches!(s.kind.as_str(), "inbound" | "outbound") {
            if let Some(channel) = parse_line(&s.line) {
                let ids = s.message_ids.iter().chain(s.message_id.iter());
                for m in ids.filter_map(|m| m.parse::<u64>().ok()) {
                    note_newest(&mut newest, channel, m);
                }
            }
        }
        // Only what came from Discord (agents' own sends are not).
        if !s.from.starts_with("metro://discord/") {
            return None;
        }
        let key = map::key_of(&s.kind, s.message_id.as_deref(), s.edited_at.as_deref())?;
        Some((key, s.id))
    })?;
    Ok(newest)
}

fn note_newest(newest: &mut HashMap<u64, u64>, channel: u64, message: u64) {
    let e = newest.entry(channel).or_insert(message);
    *e = (*e).max(message);
}

fn channel_scope(line: &str) -> Option<String> {
    parse_line(line).map(|c| c.to_string())
}

impl Discord {
    pub fn status(&self) -> String {
        self.core.status()
    }

    pub(crate) fn set_status(&self, s: impl Into<String>) {
        self.core.set_status(s);
    }

    pub(crate) fn set_bot(&self, id: u64, name: String) {
        self.bot_id.store(id, Ordering::Relaxed);
        if let Ok(mut n) = self.bot_name.lock() {
            *n = Some(name);
        }
    }

    /// The bot's own user id (0 until known).
    pub fn bot_id(&self) -> u64 {
        self.bot_id.load(Ordering::Relaxed)
    }

    pub fn api_url(&self) -> &str {
        &self.api_url
    }

    /// Hides the token in text that may quote it.
    pub(crate) fn redact(&self, s: &str) -> String {
        self.core.redact(s)
    }

    /// Records a stored message (its metro id ↔ snowflakes) and notes it
    /// as the channel's newest.
    pub(crate) fn record(&self, rec: crate::stations::ids::Rec) {
        if let Some(channel) = parse_line(&rec.line) {
            if let Ok(mut n) = self.newest.lock() {
                for m in rec.message_ids.iter().filter_map(|m| m.parse().ok()) {
                    note_newest(&mut n, channel, m);
                }
            }
        }
        self.ids.record(rec);
    }

    /// The channels metro has stored messages of, newest activity first,
    /// with the newest message stored.
    pub(crate) fn newest_per_channel(&self) -> Vec<(u64, u64)> {
        let mut v: Vec<(u64, u64)> = self
            .newest
            .lock()
            .map(|n| n.iter().map(|(c, m)| (*c, *m)).collect())
            .unwrap_or_default();
        // Snowflakes grow with time.
        v.sort_by_key(|(_, newest)| std::cmp::Reverse(*newest));
        v
    }

    /// The name of server channel `channel` for `lines` (`#name`), when
    /// known. The first time a channel is asked about, its name is looked
    /// up in the background (`GET /channels/{id}`), so later events carry
    /// it; a failed lookup is not tried again until metrod restarts.
    pub(crate) fn channel_name(self: &Arc<Self>, channel: u64) -> Option<String> {
        let mut names = self.channel_names.lock().ok()?;
        if let Some(known) = names.get(&channel) {
            return known.clone();
        }
        if names.len() >= MAX_CHANNEL_NAMES {
            return None;
        }
        names.insert(channel, None);
        let dc = self.clone();
        tokio::spawn(async move {
            let req = dc.req(
                reqwest::Method::GET,
                serenity::http::Route::Channel {
                    channel_id: channel.into(),
                },
            );
            match dc
                .call_json::<Value>(&format!("channel {channel}"), &req)
                .await
            {
                Ok(c) => {
                    if let Some(name) = c["name"].as_str() {
                        if let Ok(mut names) = dc.channel_names.lock() {
                            names.insert(channel, Some(format!("#{name}")));
                        }
                    }
                }
                Err(e) => tracing::debug!("discord: no name for channel {channel}: {}", e.message),
            }
        });
        None
    }

    /// The `discord` row of `stations`.
    pub fn station_row(&self) -> Value {
        json!({
            "name": "discord",
            "enabled": true,
            "status": self.status(),
            "capabilities": ["inbound", "send", "edit", "react", "download", "fetch"],
            "bot": self.bot_name.lock().ok().and_then(|n| n.clone()),
            "apiUrl": self.api_url,
            "gatewayUrl": self.gateway_url,
        })
    }

    /// The `discord` entry of `stats.stations`.
    pub fn stats(&self) -> Value {
        let c = &self.counters;
        let n = |a: &AtomicU64| json!(a.load(Ordering::Relaxed));
        let mut m = self.core.counters.json();
        for (k, v) in [
            ("bots", n(&c.bots)),
            ("own", n(&c.own)),
            ("dropped", n(&c.dropped)),
            ("caughtUp", n(&c.caught_up)),
            ("retries", json!(self.queue.retries())),
            ("sessions", n(&c.sessions)),
            ("resumes", n(&c.resumes)),
        ] {
            m.insert(k.into(), v);
        }
        Value::Object(m)
    }
}

/// `metro://discord/<channel>`
pub fn line_of(channel: u64) -> String {
    format!("metro://discord/{channel}")
}

/// The channel of a (validated) discord line.
pub fn parse_line(line: &str) -> Option<u64> {
    let rest = line.strip_prefix("metro://discord/")?;
    let id: u64 = rest.parse().ok()?;
    (id > 0).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip() {
        assert_eq!(line_of(42), "metro://discord/42");
        assert_eq!(parse_line("metro://discord/42"), Some(42));
        assert_eq!(parse_line("metro://discord/0"), None);
        assert_eq!(parse_line("metro://discord/x"), None);
        assert_eq!(parse_line("metro://discord/1/2"), None);
        assert_eq!(parse_line("metro://telegram/1"), None);
    }

    #[test]
    fn pasted_prefixes_are_dropped() {
        assert_eq!(bare_token(" Bot abc.def.ghi \n"), "abc.def.ghi");
        assert_eq!(bare_token("abc"), "abc");
    }
}
