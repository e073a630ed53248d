//! The gateway connection: serenity's shard manager on a thread of its own.
//!
//! serenity's shard runner does the protocol: HELLO, IDENTIFY, heartbeats
//! and their acks, RESUME (with the session id and the last sequence
//! number, so Discord sends again what was dispatched while the connection
//! was down) after a drop or an op 7 RECONNECT, a fresh IDENTIFY after a
//! non-resumable INVALID SESSION. A failure serenity gives up on (a bad
//! token, intents the bot may not use) ends the shard manager; metro says
//! why in the station's status and starts a new one after a growing pause
//! (1 s … 60 s), forever. The gateway URL is `METRO_DISCORD_GATEWAY_URL`,
//! else Discord's answer to `GET /gateway` (through metro's REST queue, so
//! a failed lookup shows in the status instead of a silent fallback).
//!
//! Order: serenity hands each dispatch to a raw event handler in a task it
//! spawns per event. The shard runs on a current-thread runtime, whose
//! tasks run in the order they were spawned, and the handler's first step
//! (before any await) puts the event into a bounded queue: the queue holds
//! the dispatches in the order the gateway sent them, and
//! [`super::inbound`] stores them one at a time in that order. A queue that
//! stays full (the log cannot be written for a long time) drops dispatches
//! and counts them (`stats` → `dropped`), rather than growing without bound.
//!
//! Status: a watcher reads the shard's connection stage every second:
//! `ok` while connected, "down: disconnected from the Discord gateway since
//! …" once it has not been for a few seconds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reqwest::Method;
use serenity::all::{
    ConnectionStage, Context, Event, GatewayError, GatewayIntents, HttpBuilder, RawEventHandler,
    ShardManager, ShardManagerOptions,
};
use serenity::http::Route;
use serenity::prelude::TypeMap;
use std::sync::atomic::Ordering;
use tokio::sync::{mpsc, Mutex, RwLock};
use tokio_util::sync::CancellationToken;

use super::inbound::Feed;
use super::{bump, Discord};
use crate::stations::Backoff;
use crate::store::log::Log;

/// Dispatches waiting to be stored.
pub const QUEUE: usize = 10_000;
/// How long the shard may be between connections before the status says so.
const GRACE: Duration = Duration::from_secs(3);

/// What the bot listens to: messages and reactions in servers and DMs,
/// with their text (Message Content is a privileged intent: it must be
/// turned on in the developer portal).
pub fn intents() -> GatewayIntents {
    GatewayIntents::GUILDS
        | GatewayIntents::GUILD_MESSAGES
        | GatewayIntents::GUILD_MESSAGE_REACTIONS
        | GatewayIntents::DIRECT_MESSAGES
        | GatewayIntents::DIRECT_MESSAGE_REACTIONS
        | GatewayIntents::MESSAGE_CONTENT
}

/// Runs the station until shutdown: who the bot is, then the gateway
/// thread and the storing of its dispatches.
pub async fn run(log: Arc<Log>, dc: Arc<Discord>, shutdown: CancellationToken) {
    let mut backoff = Backoff::new();
    loop {
        let req = dc.req(Method::GET, Route::UserMe);
        let me = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = dc.call_json::<super::lean::BotUser>("@me", &req) => r,
        };
        match me {
            Ok(me) => {
                tracing::info!(
                    "discord: bot @{} (id {}) on {}",
                    me.username,
                    me.id,
                    dc.api_url()
                );
                dc.set_bot(me.id.get(), format!("@{}", me.username));
                break;
            }
            Err(e) => {
                let why = format!("down: {}", e.message);
                if !dc.status.retry_later(why, &mut backoff, &shutdown).await {
                    return;
                }
            }
        }
    }
    let (tx, rx) = mpsc::channel(QUEUE);
    let thread = {
        let dc = dc.clone();
        let stop = shutdown.clone();
        std::thread::Builder::new()
            .name("discord-gateway".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt.block_on(connect(dc, tx, stop)),
                    Err(e) => dc.set_status(format!("down: cannot start the gateway thread: {e}")),
                }
            })
    };
    let thread = match thread {
        Ok(t) => t,
        Err(e) => {
            dc.set_status(format!("down: cannot start the gateway thread: {e}"));
            return;
        }
    };
    super::inbound::consume(&log, &dc, rx, &shutdown).await;
    let _ = tokio::task::spawn_blocking(move || thread.join()).await;
}

/// Hands dispatches over, in order (see the module docs).
struct Forward {
    dc: Arc<Discord>,
    tx: mpsc::Sender<Feed>,
}

#[serenity::async_trait]
impl RawEventHandler for Forward {
    async fn raw_event(&self, _ctx: Context, ev: Event) {
        match &ev {
            Event::Ready(r) => {
                bump(&self.dc.counters.sessions);
                self.dc
                    .set_bot(r.ready.user.id.get(), format!("@{}", r.ready.user.name));
                tracing::info!(
                    "discord: gateway session started (READY, session {})",
                    r.ready.session_id
                );
                self.hand_over(Feed::Session);
                return;
            }
            Event::Resumed(_) => {
                bump(&self.dc.counters.resumes);
                tracing::info!("discord: gateway session resumed");
                return;
            }
            Event::MessageCreate(_)
            | Event::MessageUpdate(_)
            | Event::ReactionAdd(_)
            | Event::ReactionRemove(_)
            | Event::InteractionCreate(_) => {}
            _ => return,
        }
        self.hand_over(Feed::Dispatch(Box::new(ev)));
    }
}

impl Forward {
    fn hand_over(&self, feed: Feed) {
        if let Err(e) = self.tx.try_send(feed) {
            bump(&self.dc.counters.dropped);
            tracing::error!(
                "discord: a dispatch was dropped: {QUEUE} dispatches are waiting for the log ({e})"
            );
        }
    }
}

/// The gateway's URL: `METRO_DISCORD_GATEWAY_URL`, else Discord's answer
/// to `GET /gateway`.
async fn gateway_url(dc: &Discord) -> Result<String, String> {
    if let Some(url) = &dc.gateway_url {
        return Ok(url.clone());
    }
    let req = dc.req(Method::GET, Route::Gateway);
    let g: serde_json::Value = dc
        .call_json("gateway", &req)
        .await
        .map_err(|e| format!("cannot look up the gateway: {}", e.message))?;
    match g["url"].as_str() {
        Some(u) if u.starts_with("ws://") || u.starts_with("wss://") => Ok(u.to_string()),
        _ => Err(format!(
            "Discord's gateway lookup answered no ws(s):// URL ({g}); set METRO_DISCORD_GATEWAY_URL"
        )),
    }
}

/// serenity's shard manager (one shard), again and again until shutdown.
async fn connect(dc: Arc<Discord>, tx: mpsc::Sender<Feed>, stop: CancellationToken) {
    let mut backoff = Backoff::new();
    loop {
        let sessions = dc.counters.sessions.load(Ordering::Relaxed);
        let why = match gateway_url(&dc).await {
            Err(why) => why,
            Ok(url) => {
                // serenity's Http only carries the token here (the
                // gateway asks nothing of REST); metro makes REST calls.
                let http = HttpBuilder::new(&dc.auth)
                    .proxy(dc.api_url())
                    .ratelimiter_disabled(true)
                    .build();
                let forward: Arc<dyn RawEventHandler> = Arc::new(Forward {
                    dc: dc.clone(),
                    tx: tx.clone(),
                });
                let (manager, mut ended) = ShardManager::new(ShardManagerOptions {
                    data: Arc::new(RwLock::new(TypeMap::new())),
                    event_handlers: Vec::new(),
                    raw_event_handlers: vec![forward],
                    shard_index: 0,
                    shard_init: 1,
                    shard_total: 1,
                    ws_url: Arc::new(Mutex::new(url.clone())),
                    http: Arc::new(http),
                    intents: intents(),
                    presence: None,
                });
                dc.set_status(format!("connecting to the Discord gateway ({url})"));
                let why = match manager.initialize() {
                    Err(e) => format!("the gateway failed: {e}"),
                    Ok(()) => {
                        let ended = tokio::select! {
                            r = ended.next() => r,
                            _ = watch(&dc, &manager, &url) => None,
                            _ = stop.cancelled() => {
                                manager.shutdown_all().await;
                                return;
                            }
                        };
                        match ended {
                            Some(Err(e)) => describe(&e),
                            _ => "the gateway connection ended".to_string(),
                        }
                    }
                };
                manager.shutdown_all().await;
                why
            }
        };
        if dc.counters.sessions.load(Ordering::Relaxed) != sessions {
            backoff.reset();
        }
        if !dc
            .status
            .retry_later(format!("down: {why}"), &mut backoff, &stop)
            .await
        {
            return;
        }
    }
}

/// Keeps the status in step with the shard's stage (never returns).
async fn watch(dc: &Discord, manager: &ShardManager, url: &str) {
    let mut down_since: Option<(Instant, String)> = None;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let stage = manager
            .runners
            .lock()
            .await
            .values()
            .next()
            .map(|r| r.stage);
        if stage == Some(ConnectionStage::Connected) {
            down_since = None;
            dc.set_status("ok");
            continue;
        }
        let (since, at) = down_since.get_or_insert_with(|| (Instant::now(), crate::clock::now()));
        if since.elapsed() >= GRACE {
            let doing = match stage {
                Some(ConnectionStage::Resuming) => "resuming the session",
                Some(ConnectionStage::Identifying | ConnectionStage::Handshake) => "identifying",
                _ => "reconnecting",
            };
            dc.set_status(format!(
                "down: disconnected from the Discord gateway ({url}) since {at}; {doing}"
            ));
        }
    }
}

/// What ended the shard manager, in words.
fn describe(e: &GatewayError) -> String {
    match e {
        GatewayError::InvalidAuthentication => {
            "Discord refused the bot token at the gateway (close 4004 Authentication failed): \
             check METRO_DISCORD_TOKEN or the [discord] token in the config file"
                .to_string()
        }
        GatewayError::DisallowedGatewayIntents => {
            "Discord refused the Message Content intent (close 4014 Disallowed intents): turn on \
             \"Message Content Intent\" under Bot → Privileged Gateway Intents in the Discord \
             developer portal"
                .to_string()
        }
        GatewayError::InvalidGatewayIntents => {
            "Discord says the requested gateway intents are invalid (close 4013)".to_string()
        }
        other => format!("the gateway failed: {other}"),
    }
}
