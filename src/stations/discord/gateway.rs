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
//! Reading: serenity parses each dispatch into its own strict types; one
//! it cannot read (a field metro does not need is missing) it still hands
//! over, as `Event::Unknown` with the raw payload. The handler turns
//! either back into JSON and reads it with only the fields metro uses
//! ([`super::dispatch`]); one that lacks those is logged by id and
//! skipped, and the gateway goes on. READY is read the same way: when
//! serenity cannot read it, metro reads the bot user from it (only
//! `user.id`), and the session runs, but serenity keeps no session id:
//! after a disconnect it identifies anew instead of resuming, and the
//! read-back after READY fetches what was missed. RESUMED carries nothing
//! metro reads.
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
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{mpsc, Mutex, RwLock};
use tokio_util::sync::CancellationToken;

use super::inbound::Feed;
use super::{bump, Discord};
use crate::stations::Backoff;

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
pub async fn run(dc: Arc<Discord>, shutdown: CancellationToken) {
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
                if !dc.core.retry_later(why, &mut backoff, &shutdown).await {
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
    super::inbound::consume(&dc, rx, &shutdown).await;
    let _ = tokio::task::spawn_blocking(move || thread.join()).await;
}

/// Hands dispatches over, in order (see the module docs).
struct Forward {
    dc: Arc<Discord>,
    tx: mpsc::Sender<Feed>,
    /// See [`Lenient`].
    lenient: Arc<Lenient>,
}

/// A session serenity did not see begin: after a READY only metro could
/// read, serenity's shard stays in its identifying stage although the
/// session runs. The watcher counts the shard connected while the newest
/// such READY (its number among sessions) came after the last time the
/// watcher saw the shard without a connection. A reconnect serenity's
/// manager is not told of (it learns stages late, see [`watch`]) goes
/// unseen: the status says ok from such a READY until the manager shows
/// the shard disconnected.
#[derive(Default)]
struct Lenient {
    /// The session number of the newest READY only metro read (0: none
    /// since the last strict READY).
    session: AtomicU64,
}

#[serenity::async_trait]
impl RawEventHandler for Forward {
    async fn raw_event(&self, _ctx: Context, ev: Event) {
        match &ev {
            Event::Ready(r) => {
                self.session_started(
                    r.ready.user.id.get(),
                    &r.ready.user.name,
                    &r.ready.session_id,
                );
                self.lenient.session.store(0, Ordering::Relaxed);
                return;
            }
            // A READY serenity's strict `Ready` cannot read: metro reads the
            // bot user from it. serenity's shard then keeps no session id,
            // so after a disconnect it identifies anew instead of resuming;
            // the read-back after READY fills that gap.
            Event::Unknown(u) if u.kind == "READY" => {
                match super::dispatch::ready(u.value.clone()) {
                    Ok(r) => {
                        let session = r.session_id.as_deref().unwrap_or("not given");
                        let n = self.session_started(r.user.id.get(), &r.user.username, session);
                        self.lenient.session.store(n, Ordering::Relaxed);
                        tracing::warn!(
                            "discord: serenity could not read READY; metro read the bot from it, and the gateway will identify anew instead of resuming after a disconnect"
                        );
                    }
                    Err(e) => {
                        bump(&self.dc.core.counters.skipped);
                        tracing::warn!(
                            "discord: READY is not readable ({}); waiting for the next session",
                            e.why
                        );
                    }
                }
                return;
            }
            Event::Resumed(_) => {
                bump(&self.dc.counters.resumes);
                tracing::info!("discord: gateway session resumed");
                return;
            }
            _ => {}
        }
        // Before any await: the order of hand-overs is the gateway's.
        let Some((t, d)) = raw(ev) else {
            return;
        };
        match super::dispatch::read(&t, d) {
            Ok(dispatch) => self.hand_over(Feed::Dispatch(Box::new(dispatch))),
            Err(e) => {
                bump(&self.dc.core.counters.skipped);
                tracing::warn!(
                    "discord: {t} {} is not readable ({}); skipped",
                    e.id.as_deref().unwrap_or("with no id"),
                    e.why
                );
            }
        }
    }
}

/// A dispatch metro keeps, as its kind and its JSON payload: serenity's
/// parse turned back into JSON, or the raw payload serenity could not
/// read. `None` for what metro does not keep.
fn raw(ev: Event) -> Option<(String, serde_json::Value)> {
    use serenity::all::Interaction;
    let json = |v: Result<serde_json::Value, serde_json::Error>| match v {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!("discord: a dispatch could not be turned back into JSON: {e}; skipped");
            None
        }
    };
    let (t, d) = match ev {
        Event::MessageCreate(m) => ("MESSAGE_CREATE", json(serde_json::to_value(&m.message))?),
        Event::MessageUpdate(u) => ("MESSAGE_UPDATE", json(serde_json::to_value(&u))?),
        Event::ReactionAdd(r) => (
            "MESSAGE_REACTION_ADD",
            json(serde_json::to_value(&r.reaction))?,
        ),
        Event::ReactionRemove(r) => (
            "MESSAGE_REACTION_REMOVE",
            json(serde_json::to_value(&r.reaction))?,
        ),
        Event::InteractionCreate(i) => match &i.interaction {
            // serenity writes a component interaction without its type.
            Interaction::Component(c) => {
                let mut v = json(serde_json::to_value(c))?;
                v["type"] = super::dispatch::COMPONENT.into();
                ("INTERACTION_CREATE", v)
            }
            // Not a button: only its type (metro keeps none of it).
            other => (
                "INTERACTION_CREATE",
                serde_json::json!({"type": u8::from(other.kind())}),
            ),
        },
        Event::Unknown(u) => {
            let t = super::dispatch::KINDS.iter().find(|k| **k == u.kind)?;
            tracing::debug!("discord: serenity could not read a {t}; reading it as metro does");
            (*t, u.value)
        }
        _ => return None,
    };
    Some((t.to_string(), d))
}

impl Forward {
    /// A gateway session began (READY): the bot it is, counted, and the
    /// read-back after READY set off. Returns the session's number.
    fn session_started(&self, bot: u64, name: &str, session: &str) -> u64 {
        let n = self.dc.counters.sessions.fetch_add(1, Ordering::Relaxed) + 1;
        self.dc.set_bot(bot, format!("@{name}"));
        tracing::info!("discord: gateway session started (READY, session {session})");
        self.hand_over(Feed::Session);
        n
    }

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
                let lenient = Arc::new(Lenient::default());
                let forward: Arc<dyn RawEventHandler> = Arc::new(Forward {
                    dc: dc.clone(),
                    tx: tx.clone(),
                    lenient: lenient.clone(),
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
                            _ = watch(&dc, &manager, &url, &lenient) => None,
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
            .core
            .retry_later(format!("down: {why}"), &mut backoff, &stop)
            .await
        {
            return;
        }
    }
}

/// Keeps the status in step with the shard's stage (never returns).
async fn watch(dc: &Discord, manager: &ShardManager, url: &str, lenient: &Lenient) {
    let mut down_since: Option<(Instant, String)> = None;
    // Sessions up to this number had ended when the watcher last saw the
    // shard without a connection.
    let mut ended = 0;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        // Read before the stage: a READY between the two reads is newer.
        let sessions = dc.counters.sessions.load(Ordering::Relaxed);
        let runner = manager
            .runners
            .lock()
            .await
            .values()
            .next()
            .map(|r| (r.stage, r.latency.is_some()));
        let stage = runner.map(|r| r.0);
        // serenity tells its manager of a stage change made while reading
        // a frame or at a heartbeat ACK, not of one made while acting (the
        // IDENTIFY sent after HELLO): identifying may still show as
        // handshake, and until the first ACK (a latency) the stage is the
        // one the shard was created with.
        let told = runner.is_some_and(|r| r.1);
        let identifying = matches!(
            stage,
            Some(ConnectionStage::Identifying | ConnectionStage::Handshake)
        );
        if told && !identifying && stage != Some(ConnectionStage::Connected) {
            ended = sessions;
        }
        let lenient = (identifying || !told) && lenient.session.load(Ordering::Relaxed) > ended;
        if stage == Some(ConnectionStage::Connected) || lenient {
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

#[cfg(test)]
mod tests {
    use super::super::dispatch::{read, Dispatch};
    use super::*;
    use serde_json::{json, Value};
    use serenity::model::event::GatewayEvent;

    /// A dispatch frame as serenity's shard parses it.
    fn event(t: &str, d: Value) -> Event {
        let frame = json!({"op": 0, "s": 1, "t": t, "d": d});
        match serde_json::from_value::<GatewayEvent>(frame).expect("a frame") {
            GatewayEvent::Dispatch(_, ev) => ev,
            other => panic!("not a dispatch: {other:?}"),
        }
    }

    fn read_back(ev: Event) -> Dispatch {
        let (t, d) = raw(ev).expect("kept");
        read(&t, d).expect("readable")
    }

    fn user(id: &str, name: &str) -> Value {
        json!({"id": id, "username": name, "global_name": name, "discriminator": "0",
            "avatar": null, "bot": false})
    }

    fn member(user: Value) -> Value {
        json!({"user": user, "nick": "Annie", "roles": [], "deaf": false, "mute": false,
            "joined_at": "2024-01-01T00:00:00.000000+00:00", "flags": 0})
    }

    #[test]
    fn a_message_serenity_cannot_read_still_reaches_metro() {
        // No timestamp, tts, mentions, …: serenity's Message refuses it.
        let ev = event(
            "MESSAGE_CREATE",
            json!({"id": "5", "channel_id": "42", "author": {"id": "7"}, "content": "hi"}),
        );
        assert!(matches!(ev, Event::Unknown(_)), "{ev:?}");
        let Dispatch::Created(m) = read_back(ev) else {
            panic!("a message")
        };
        assert_eq!((m.id.get(), m.content.as_str()), (5, "hi"));
    }

    #[test]
    fn what_serenity_reads_is_read_back_the_same() {
        let ev = event(
            "MESSAGE_CREATE",
            json!({
                "id": "1001", "channel_id": "42", "guild_id": "9", "content": "deploy?",
                "author": user("7", "ann"), "member": {"nick": "Annie", "roles": [],
                    "joined_at": "2024-01-01T00:00:00.000000+00:00", "deaf": false, "mute": false},
                "timestamp": "2026-11-29T10:00:00.000000+00:00", "edited_timestamp": null,
                "tts": false, "mention_everyone": false, "mentions": [], "mention_roles": [],
                "attachments": [{"id": "77", "filename": "a.png", "size": 3, "url": "http://x/a.png",
                    "proxy_url": "http://x/a.png", "content_type": "image/png", "width": 2, "height": 1}],
                "embeds": [], "pinned": false, "type": 19,
                "message_reference": {"message_id": "999", "channel_id": "42"}
            }),
        );
        assert!(matches!(ev, Event::MessageCreate(_)), "{ev:?}");
        let Dispatch::Created(m) = read_back(ev) else {
            panic!("a message")
        };
        assert_eq!(m.kind, super::super::dispatch::REPLY);
        assert_eq!(m.guild_id.map(|g| g.get()), Some(9));
        assert_eq!(m.member.and_then(|p| p.nick).as_deref(), Some("Annie"));
        assert_eq!(
            m.message_reference
                .and_then(|r| r.message_id)
                .map(|i| i.get()),
            Some(999)
        );
        let a = &m.attachments[0];
        assert_eq!(
            (a.filename.as_str(), a.size, a.width),
            ("a.png", Some(3), Some(2))
        );

        let press = event(
            "INTERACTION_CREATE",
            json!({
                "id": "55", "application_id": "1", "type": 3, "token": "tok",
                "data": {"custom_id": "yes", "component_type": 2},
                "channel_id": "42", "channel": {"id": "42", "type": 0}, "guild_id": "9",
                "member": member(user("7", "ann")), "version": 1, "locale": "en-US",
                "message": {"id": "1001", "channel_id": "42", "author": user("8", "bot"),
                    "content": "ok?", "timestamp": "2026-11-29T10:00:00.000000+00:00",
                    "edited_timestamp": null, "tts": false, "mention_everyone": false,
                    "mentions": [], "mention_roles": [], "attachments": [], "embeds": [],
                    "pinned": false, "type": 0},
                "app_permissions": "0", "entitlements": [], "attachment_size_limit": 1
            }),
        );
        assert!(matches!(press, Event::InteractionCreate(_)), "{press:?}");
        let Dispatch::Pressed(p) = read_back(press) else {
            panic!("a press")
        };
        assert_eq!((p.custom_id.as_str(), p.token.as_str()), ("yes", "tok"));
        assert_eq!((p.user.id.get(), p.nick.as_deref()), (7, Some("Annie")));
        assert_eq!((p.message_id.get(), p.channel_id.get()), (1001, 42));

        let react = event(
            "MESSAGE_REACTION_ADD",
            json!({"user_id": "7", "channel_id": "42", "message_id": "1001", "guild_id": "9",
                "emoji": {"id": null, "name": "👍"}, "member": member(user("7", "ann")),
                "burst": false, "type": 0}),
        );
        assert!(matches!(react, Event::ReactionAdd(_)), "{react:?}");
        let Dispatch::Reacted { reaction, added } = read_back(react) else {
            panic!("a reaction")
        };
        assert!(added);
        assert_eq!(reaction.emoji.to_string(), "👍");
        assert_eq!(
            reaction.member.and_then(|m| m.user).map(|u| u.id.get()),
            Some(7)
        );
    }

    #[test]
    fn an_edit_serenity_reads_is_read_back_the_same() {
        let ev = event(
            "MESSAGE_UPDATE",
            json!({"id": "1001", "channel_id": "42", "guild_id": "9", "content": "deploy!",
                "edited_timestamp": "2026-11-29T10:00:01.000000+00:00",
                "author": user("7", "ann"), "attachments": []}),
        );
        assert!(matches!(ev, Event::MessageUpdate(_)), "{ev:?}");
        let Dispatch::Updated(u) = read_back(ev) else {
            panic!("an edit")
        };
        assert_eq!(u.content.as_deref(), Some("deploy!"));
        assert_eq!(u.author.map(|a| a.id.get()), Some(7));
        assert!(u.edited_timestamp.is_some() && u.webhook_id.is_none());
    }

    #[test]
    fn a_dispatch_without_what_metro_needs_is_not_read() {
        let ev = event(
            "MESSAGE_CREATE",
            json!({"id": "5", "content": "secret words"}),
        );
        let (t, d) = raw(ev).expect("kept");
        let e = read(&t, d).unwrap_err();
        assert_eq!(e.id.as_deref(), Some("5"));
        assert_eq!(e.why, "missing field `channel_id` in the payload");
    }
}
