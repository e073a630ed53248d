//! A fake Discord for the tests: the REST API (axum) and the WebSocket
//! gateway (tokio-tungstenite) on two 127.0.0.1 ports, run on their own
//! thread. metrod's serenity is pointed at them with
//! `METRO_DISCORD_API_URL` and `METRO_DISCORD_GATEWAY_URL`.
//!
//! REST, every route under `/api/v10` (wrong or missing
//! `Authorization: Bot <TOKEN>` answers 401, unknown routes 404):
//! - `GET /gateway` (no auth, like Discord), `GET /gateway/bot`,
//!   `GET /users/@me`;
//! - `POST /channels/{c}/messages` (JSON, or multipart with `payload_json`
//!   and `files[n]` parts): a full message object; uploads are served back
//!   under `<url>/cdn/attachments/{c}/{attachment}/{filename}`. Rate-limit
//!   headers on every answer; [`Fake::set_bucket`] makes the per-channel
//!   bucket strict and answers 429 beyond it;
//! - `PATCH`, `GET`, `DELETE /channels/{c}/messages/{m}`;
//!   `GET /channels/{c}/messages?limit&before&after&around` (newest first);
//! - `PUT`/`DELETE /channels/{c}/messages/{m}/reactions/{emoji}/@me`;
//! - `POST /channels/{c}/typing`, `POST /interactions/{id}/{token}/callback`.
//! - `GET /cdn/...` (no auth): uploads and [`Fake::add_file`] files.
//! - Scripted failures: [`Fake::fail_next`] (after the auth check; `/cdn`
//!   paths too).
//!
//! Gateway (v10, JSON text frames, no compression): HELLO on connect,
//! heartbeat ACKs, IDENTIFY → READY (close 4004 on a bad token, 4014 for
//! MESSAGE_CONTENT when [`Fake::refuse_privileged_intents`]), RESUME →
//! replay of the missed dispatches then RESUMED (op 9 for an unknown
//! session). Tests script dispatches ([`Fake::dispatch`]), disconnects,
//! session invalidation, op 7, and refused connections.
//!
//! A dispatched `MESSAGE_CREATE` also lands in its channel's history (as on
//! Discord, where a fetch returns what the gateway announced).

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Request, State};
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message as WsMessage;

pub const TOKEN: &str = "MTIzNDU2Nzg5MDEyMzQ1Njc4.GaBcDe.abcdefghijklmnopqrstuvwxyz0123456789AB";
pub const BOT_ID: u64 = 123456789012345678;
pub const BOT_NAME: &str = "metro-bot";
pub const APP_ID: u64 = 223456789012345678;
/// The MESSAGE_CONTENT privileged intent.
pub const MESSAGE_CONTENT: u64 = 1 << 15;
/// How long the `wait` helpers wait.
pub const PATIENCE: Duration = Duration::from_secs(15);

/// One REST call (or `/cdn` download) metrod made.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    /// Without the query, e.g. `/api/v10/channels/5/messages`.
    pub path: String,
    /// The raw query string (serenity sends `?&limit=50`, so `&limit=50`).
    pub query: String,
    /// The JSON body, or the parsed `payload_json` of a multipart body
    /// (plus its other text fields); `Null` if none.
    pub body: Value,
    /// Uploaded files: (field, file name as sent, size).
    pub files: Vec<(String, String, usize)>,
    /// Request headers, names lowercase.
    pub headers: Vec<(String, String)>,
    /// The status answered.
    pub status: u16,
    pub at: Instant,
}

impl Call {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

struct Failure {
    method: String,
    prefix: String,
    left: usize,
    status: u16,
    body: Value,
    headers: Vec<(String, String)>,
}

struct Bucket {
    limit: u32,
    window: Duration,
    enforced: bool,
}

struct Session {
    seq: u64,
    /// (seq, event name, frame) of every dispatch, READY included.
    events: Vec<(u64, String, String)>,
}

enum Out {
    Text(String),
    Close(u16, String),
    Drop,
}

struct Conn {
    tx: mpsc::UnboundedSender<Out>,
    /// The session this connection identified or resumed.
    session: Option<String>,
}

struct Inner {
    // REST
    calls: Vec<Call>,
    failures: Vec<Failure>,
    /// Channel histories in arrival order.
    channels: HashMap<u64, Vec<Value>>,
    /// The bot's reactions per (channel, message), in order.
    reactions: HashMap<(u64, u64), Vec<String>>,
    /// `/cdn/...` path → (content type, bytes).
    files: HashMap<String, (String, Vec<u8>)>,
    /// Channel objects served by `GET /channels/{c}`.
    channel_objects: HashMap<u64, Value>,
    next_message: u64,
    next_attachment: u64,
    bucket: Bucket,
    /// Per channel: window start, POSTs in the window.
    windows: HashMap<u64, (Instant, u32)>,
    rate_limited: usize,
    /// REST answers carry only what metro needs (issue 14, item 9).
    minimal: bool,
    // Gateway
    heartbeat_ms: u64,
    refuse_privileged: bool,
    refuse_identify: bool,
    refuse_connections: bool,
    sessions: HashMap<String, Session>,
    current: Option<String>,
    conns: HashMap<u64, Conn>,
    next_conn: u64,
    connections: usize,
    heartbeats: usize,
    identifies: Vec<Value>,
    resumes: Vec<Value>,
    readies: usize,
    resumed: usize,
    received: Vec<Value>,
    next_session: u64,
}

struct Shared {
    inner: Mutex<Inner>,
    url: String,
    gateway_url: String,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct Fake {
    /// REST base, `http://127.0.0.1:<port>` (routes are under `/api/v10`).
    pub url: String,
    /// `ws://127.0.0.1:<port>`.
    pub gateway_url: String,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Fake {
    pub fn start() -> Fake {
        let rest = std::net::TcpListener::bind("127.0.0.1:0").expect("bind fake rest");
        rest.set_nonblocking(true).expect("nonblocking");
        let gw = std::net::TcpListener::bind("127.0.0.1:0").expect("bind fake gateway");
        gw.set_nonblocking(true).expect("nonblocking");
        let url = format!("http://{}", rest.local_addr().expect("addr"));
        let gateway_url = format!("ws://{}", gw.local_addr().expect("addr"));
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                calls: Vec::new(),
                failures: Vec::new(),
                channels: HashMap::new(),
                reactions: HashMap::new(),
                files: HashMap::new(),
                channel_objects: HashMap::new(),
                next_message: 900_000_000_000_000_000,
                next_attachment: 800_000_000_000_000_000,
                bucket: Bucket {
                    limit: 50,
                    window: Duration::from_secs(1),
                    enforced: false,
                },
                windows: HashMap::new(),
                rate_limited: 0,
                minimal: false,
                heartbeat_ms: 1000,
                refuse_privileged: false,
                refuse_identify: false,
                refuse_connections: false,
                sessions: HashMap::new(),
                current: None,
                conns: HashMap::new(),
                next_conn: 0,
                connections: 0,
                heartbeats: 0,
                identifies: Vec::new(),
                resumes: Vec::new(),
                readies: 0,
                resumed: 0,
                received: Vec::new(),
                next_session: 0,
            }),
            url: url.clone(),
            gateway_url: gateway_url.clone(),
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = Router::new()
            .fallback(rest_handler)
            .layer(DefaultBodyLimit::max(64 << 20))
            .with_state(shared.clone());
        let gw_shared = shared.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let rest = tokio::net::TcpListener::from_std(rest).expect("listener");
                let gw = tokio::net::TcpListener::from_std(gw).expect("listener");
                tokio::select! {
                    _ = axum::serve(rest, app) => {}
                    _ = gateway_accept(gw_shared, gw) => {}
                    _ = stopped => {}
                }
            });
        });
        Fake {
            url,
            gateway_url,
            shared,
            stop: Some(stop),
        }
    }

    /// The environment that points metrod at this fake.
    pub fn env(&self, allow: &str) -> Vec<(String, String)> {
        let mut env = self.env_without_gateway(allow);
        env.push(("METRO_DISCORD_GATEWAY_URL".into(), self.gateway_url.clone()));
        env
    }

    /// Like [`Fake::env`] without the gateway URL: the client asks
    /// `GET /api/v10/gateway` for it.
    pub fn env_without_gateway(&self, allow: &str) -> Vec<(String, String)> {
        vec![
            ("METRO_DISCORD_TOKEN".into(), TOKEN.into()),
            ("METRO_DISCORD_API_URL".into(), self.url.clone()),
            ("METRO_DISCORD_ALLOW".into(), allow.into()),
        ]
    }

    /// Like [`Fake::env`] with another token (which both halves refuse).
    pub fn env_with_token(&self, token: &str, allow: &str) -> Vec<(String, String)> {
        let mut env = self.env(allow);
        env[0].1 = token.into();
        env
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.shared.lock())
    }

    /// Waits until `f` holds (or panics after `limit`).
    pub fn wait(&self, what: &str, limit: Duration, f: impl Fn(&Fake) -> bool) {
        let deadline = Instant::now() + limit;
        while !f(self) {
            assert!(
                Instant::now() < deadline,
                "timed out after {limit:?} waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    // ---- REST ----

    /// Every call so far (REST and `/cdn`), in order.
    pub fn calls(&self) -> Vec<Call> {
        self.with(|i| i.calls.clone())
    }

    /// Calls with this method (case-insensitive) whose path starts with
    /// `path_prefix` (e.g. `/api/v10/channels/5/messages`).
    pub fn calls_to(&self, method: &str, path_prefix: &str) -> Vec<Call> {
        let m = method.to_uppercase();
        self.with(|i| {
            i.calls
                .iter()
                .filter(|c| c.method == m && c.path.starts_with(path_prefix))
                .cloned()
                .collect()
        })
    }

    /// Waits (15 s) for at least `n` such calls; returns them all.
    pub fn wait_calls(&self, method: &str, path_prefix: &str, n: usize) -> Vec<Call> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let calls = self.calls_to(method, path_prefix);
            if calls.len() >= n {
                return calls;
            }
            if Instant::now() >= deadline {
                let seen: Vec<String> = self
                    .calls()
                    .iter()
                    .map(|c| format!("{} {} -> {}", c.method, c.path, c.status))
                    .collect();
                panic!(
                    "timed out waiting for {n} {method} {path_prefix}* calls (got {}); all calls: {seen:#?}",
                    calls.len()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The next `n` calls with this method whose path starts with
    /// `path_prefix` answer `status`, `body` and `headers` instead.
    pub fn fail_next(
        &self,
        method: &str,
        path_prefix: &str,
        n: usize,
        status: u16,
        body: Value,
        headers: Vec<(String, String)>,
    ) {
        self.with(|i| {
            i.failures.push(Failure {
                method: method.to_uppercase(),
                prefix: path_prefix.into(),
                left: n,
                status,
                body,
                headers,
            })
        });
    }

    pub fn clear_failures(&self) {
        self.with(|i| i.failures.clear());
    }

    /// Makes the per-channel bucket of message POSTs `limit` per `window`,
    /// enforced: a POST beyond it answers 429.
    pub fn set_bucket(&self, limit: u32, window: Duration) {
        self.with(|i| {
            i.bucket = Bucket {
                limit,
                window,
                enforced: true,
            };
            i.windows.clear();
        });
    }

    /// How many 429s were answered (bucket or scripted).
    pub fn rate_limited(&self) -> usize {
        self.with(|i| i.rate_limited)
    }

    /// Serves a guild text channel named `name` at `GET /channels/{c}`.
    pub fn add_channel(&self, channel: u64, guild: u64, name: &str) {
        let c = json!({
            "id": channel.to_string(), "type": 0, "guild_id": guild.to_string(),
            "name": name, "position": 0, "permission_overwrites": [], "nsfw": false,
            "topic": null, "last_message_id": null, "rate_limit_per_user": 0,
            "parent_id": null, "flags": 0,
        });
        self.with(|i| {
            i.channel_objects.insert(channel, c);
        });
    }

    /// Adds a message (e.g. from [`message`]) to a channel's history.
    /// A message with the same id is replaced.
    pub fn add_message(&self, channel: u64, message: Value) {
        self.with(|i| store_message(i, channel, message));
    }

    /// Serves `bytes` at `url_path` (e.g. `/cdn/attachments/1/2/a.png`),
    /// without auth, for attachments in seeded messages.
    pub fn add_file(&self, url_path: &str, bytes: &[u8]) {
        let ct = content_type_for(url_path);
        self.with(|i| {
            i.files.insert(url_path.into(), (ct, bytes.to_vec()));
        });
    }

    /// A channel's history, oldest first (by id).
    pub fn messages(&self, channel: u64) -> Vec<Value> {
        self.with(|i| {
            let mut v = i.channels.get(&channel).cloned().unwrap_or_default();
            v.sort_by_key(id_of);
            v
        })
    }

    /// One stored message, with the bot's reactions.
    pub fn message_by_id(&self, channel: u64, message: u64) -> Option<Value> {
        self.with(|i| find_message(i, channel, message).map(|m| decorate(i, channel, m)))
    }

    /// The bot's current reactions on a message (decoded, e.g. "👍").
    pub fn reactions(&self, channel: u64, message: u64) -> Vec<String> {
        self.with(|i| {
            i.reactions
                .get(&(channel, message))
                .cloned()
                .unwrap_or_default()
        })
    }

    // ---- Gateway ----

    /// The HELLO heartbeat interval for connections accepted from now on
    /// (default 1000 ms); one whose connect already returned keeps its own.
    pub fn set_heartbeat_interval(&self, ms: u64) {
        self.with(|i| i.heartbeat_ms = ms);
    }

    /// While on, an IDENTIFY asking for MESSAGE_CONTENT is closed with 4014.
    pub fn refuse_privileged_intents(&self, on: bool) {
        self.with(|i| i.refuse_privileged = on);
    }

    /// While on, every IDENTIFY is closed with 4004, as if the token had
    /// been revoked after REST accepted it.
    pub fn refuse_identify(&self, on: bool) {
        self.with(|i| i.refuse_identify = on);
    }

    /// While on, REST answers carry only what metro needs: `GET
    /// /users/@me` only `id` and `username`; a created or edited message
    /// only `id`; a message read back only `id`, `attachments` (`filename`,
    /// `url`) and `reactions` (`me`, `emoji`). Listings stay full.
    pub fn minimal_answers(&self, on: bool) {
        self.with(|i| i.minimal = on);
    }

    /// While on, gateway TCP connections are accepted and dropped at once.
    pub fn refuse_connections(&self, on: bool) {
        self.with(|i| i.refuse_connections = on);
    }

    /// Queues a dispatch on the current session (waiting up to 15 s for
    /// one): sent at once on a live connection, else replayed on RESUME.
    /// Returns its sequence number.
    pub fn dispatch(&self, t: &str, d: Value) -> u64 {
        self.wait("a gateway session (IDENTIFY)", PATIENCE, |f| {
            f.with(|i| i.current.is_some())
        });
        self.with(|i| {
            let sid = i.current.clone().expect("session");
            push_dispatch(i, &sid, t, d)
        })
    }

    /// Closes every open gateway connection: `Some(code)` with a close frame
    /// (4000 "Unknown error" is resumable), `None` abruptly (TCP reset, no
    /// close frame). Sessions stay resumable.
    pub fn disconnect(&self, code: Option<u16>) {
        self.with(|i| {
            for (_, c) in i.conns.drain() {
                let _ = c.tx.send(match code {
                    Some(code) => Out::Close(code, close_reason(code).into()),
                    None => Out::Drop,
                });
            }
        });
    }

    /// Sends op 9 INVALID SESSION with `d: resumable` on the live
    /// connection(s); when not resumable the session is forgotten.
    pub fn invalidate_session(&self, resumable: bool) {
        self.with(|i| {
            let frame = json!({"op": 9, "d": resumable, "s": null, "t": null}).to_string();
            let current = i.current.clone();
            for c in i.conns.values_mut() {
                if c.session.is_some() && c.session == current {
                    let _ = c.tx.send(Out::Text(frame.clone()));
                    if !resumable {
                        c.session = None;
                    }
                }
            }
            if !resumable {
                if let Some(sid) = current {
                    i.sessions.remove(&sid);
                }
                i.current = None;
            }
        });
    }

    /// Sends op 7 RECONNECT on the open connection(s).
    pub fn send_reconnect(&self) {
        self.with(|i| {
            let frame = json!({"op": 7, "d": null, "s": null, "t": null}).to_string();
            for c in i.conns.values() {
                let _ = c.tx.send(Out::Text(frame.clone()));
            }
        });
    }

    /// Successful WebSocket handshakes so far.
    pub fn connections(&self) -> usize {
        self.with(|i| i.connections)
    }

    /// A connection is open and has identified or resumed.
    pub fn live(&self) -> bool {
        self.with(|i| i.conns.values().any(|c| c.session.is_some()))
    }

    pub fn heartbeats(&self) -> usize {
        self.with(|i| i.heartbeats)
    }

    /// The `d` of every IDENTIFY received.
    pub fn identifies(&self) -> Vec<Value> {
        self.with(|i| i.identifies.clone())
    }

    /// The `d` of every RESUME received.
    pub fn resumes(&self) -> Vec<Value> {
        self.with(|i| i.resumes.clone())
    }

    pub fn readies(&self) -> usize {
        self.with(|i| i.readies)
    }

    pub fn resumed(&self) -> usize {
        self.with(|i| i.resumed)
    }

    /// Waits (15 s) until READY + RESUMED sent in total reach `n`.
    pub fn wait_ready(&self, n: usize) {
        let deadline = Instant::now() + PATIENCE;
        while self.readies() + self.resumed() < n {
            if Instant::now() >= deadline {
                let (conns, ids, res, hb, last) = self.with(|i| {
                    (
                        i.connections,
                        i.identifies.len(),
                        i.resumes.len(),
                        i.heartbeats,
                        i.received.iter().rev().take(5).cloned().collect::<Vec<_>>(),
                    )
                });
                panic!(
                    "timed out waiting for {n} READY/RESUMED (readies {}, resumed {}, connections {conns}, identifies {ids}, resumes {res}, heartbeats {hb}); last frames received: {last:#?}",
                    self.readies(),
                    self.resumed()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The current session's id, if any.
    pub fn session_id(&self) -> Option<String> {
        self.with(|i| i.current.clone())
    }

    /// The last sequence number of the current session (0 if none).
    pub fn last_seq(&self) -> u64 {
        self.with(|i| {
            i.current
                .as_ref()
                .and_then(|s| i.sessions.get(s))
                .map_or(0, |s| s.seq)
        })
    }

    /// Every frame received on the gateway, parsed (tokens included).
    pub fn gateway_received(&self) -> Vec<Value> {
        self.with(|i| i.received.clone())
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

// ---- Payload builders ----

/// A user object as Discord sends it in messages and events.
pub fn user(id: u64, name: &str, bot: bool) -> Value {
    json!({
        "id": id.to_string(),
        "username": name,
        "global_name": name,
        "discriminator": "0",
        "avatar": null,
        "avatar_decoration_data": null,
        "banner": null,
        "accent_color": null,
        "bot": bot,
        "public_flags": 0,
        "clan": null,
        "primary_guild": null,
        "collectibles": null,
    })
}

/// The bot user (as in messages and READY).
pub fn bot_user() -> Value {
    user(BOT_ID, BOT_NAME, true)
}

/// The bot user as `GET /users/@me` answers it.
pub fn bot_user_full() -> Value {
    with(
        bot_user(),
        json!({
            "global_name": null,
            "flags": 0,
            "mfa_enabled": false,
            "verified": true,
            "email": null,
            "locale": "en-US",
            "premium_type": 0,
            "bio": "",
        }),
    )
}

/// A guild member object (`member` of reactions and interactions; for a
/// message's `member`, Discord leaves `user` out, which serenity accepts).
pub fn member(user: Value) -> Value {
    json!({
        "user": user,
        "nick": null,
        "avatar": null,
        "banner": null,
        "roles": [],
        "joined_at": "2024-01-01T00:00:00.000000+00:00",
        "premium_since": null,
        "deaf": false,
        "mute": false,
        "flags": 0,
        "pending": false,
        "communication_disabled_until": null,
    })
}

/// A full message object (a DM unless `guild_id` is added with [`with`]),
/// for `MESSAGE_CREATE` and [`Fake::add_message`].
pub fn message(channel: u64, id: u64, author: Value, content: &str) -> Value {
    json!({
        "id": id.to_string(),
        "channel_id": channel.to_string(),
        "author": author,
        "content": content,
        "timestamp": now_ts(),
        "edited_timestamp": null,
        "tts": false,
        "mention_everyone": false,
        "mentions": [],
        "mention_roles": [],
        "attachments": [],
        "embeds": [],
        "pinned": false,
        "type": 0,
        "flags": 0,
        "components": [],
    })
}

/// `v` with the keys of `extra` set (objects only).
pub fn with(mut v: Value, extra: Value) -> Value {
    if let (Some(m), Value::Object(e)) = (v.as_object_mut(), extra) {
        m.extend(e);
    }
    v
}

/// An attachment object.
pub fn attachment(id: u64, filename: &str, size: u64, url: &str, content_type: &str) -> Value {
    json!({
        "id": id.to_string(),
        "filename": filename,
        "size": size,
        "url": url,
        "proxy_url": url,
        "content_type": content_type,
    })
}

/// `MESSAGE_REACTION_ADD`'s `d` (with `member` in a guild).
pub fn reaction_add(
    channel: u64,
    message: u64,
    user_id: u64,
    emoji: &str,
    guild: Option<u64>,
) -> Value {
    let mut r = reaction_remove(channel, message, user_id, emoji, guild);
    r["burst_colors"] = json!([]);
    if guild.is_some() {
        r["member"] = member(user(user_id, &format!("user{user_id}"), false));
    }
    r
}

/// `MESSAGE_REACTION_REMOVE`'s `d`.
pub fn reaction_remove(
    channel: u64,
    message: u64,
    user_id: u64,
    emoji: &str,
    guild: Option<u64>,
) -> Value {
    let mut r = json!({
        "user_id": user_id.to_string(),
        "channel_id": channel.to_string(),
        "message_id": message.to_string(),
        "emoji": emoji_json(emoji),
        "burst": false,
        "type": 0,
    });
    if let Some(g) = guild {
        r["guild_id"] = json!(g.to_string());
    }
    r
}

/// `INTERACTION_CREATE`'s `d` for a button press (type 3, component 2).
pub fn button_interaction(
    id: u64,
    token: &str,
    channel: u64,
    message: Value,
    user: Value,
    custom_id: &str,
    guild: Option<u64>,
) -> Value {
    let mut i = json!({
        "id": id.to_string(),
        "application_id": APP_ID.to_string(),
        "type": 3,
        "data": {"custom_id": custom_id, "component_type": 2},
        "channel_id": channel.to_string(),
        "channel": {"id": channel.to_string(), "type": if guild.is_some() { 0 } else { 1 }},
        "token": token,
        "version": 1,
        "message": message,
        "app_permissions": "2248473465835073",
        "locale": "en-US",
        "entitlements": [],
        "attachment_size_limit": 10_485_760,
    });
    match guild {
        Some(g) => {
            let mut m = member(user);
            m["permissions"] = json!("2248473465835073");
            i["guild_id"] = json!(g.to_string());
            i["guild_locale"] = json!("en-US");
            i["member"] = m;
            i["authorizing_integration_owners"] = json!({"0": g.to_string()});
            i["context"] = json!(0);
        }
        None => {
            i["user"] = user;
            i["authorizing_integration_owners"] = json!({"0": "0"});
            i["context"] = json!(1);
        }
    }
    i
}

// ---- Helpers ----

fn now_ts() -> String {
    let f = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]+00:00"
    );
    time::OffsetDateTime::now_utc()
        .format(&f)
        .expect("timestamp")
}

/// A snowflake from `"123"` or `123`.
fn snowflake(v: &Value) -> Option<u64> {
    match v {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

fn id_of(v: &Value) -> u64 {
    snowflake(&v["id"]).unwrap_or(0)
}

fn emoji_json(emoji: &str) -> Value {
    // Custom emoji as Discord's route form `name:id`.
    match emoji.rsplit_once(':') {
        Some((name, id)) if !name.is_empty() && id.parse::<u64>().is_ok() => {
            json!({"id": id, "name": name})
        }
        _ => json!({"id": null, "name": emoji}),
    }
}

fn emoji_key(e: &Value) -> String {
    match snowflake(&e["id"]) {
        Some(id) => format!("{}:{id}", e["name"].as_str().unwrap_or("")),
        None => e["name"].as_str().unwrap_or("").to_string(),
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut k = 0;
    while k < b.len() {
        if b[k] == b'%' && k + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[k + 1]), hex(b[k + 2])) {
                out.push((h * 16 + l) as u8);
                k += 3;
                continue;
            }
        }
        out.push(b[k]);
        k += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn content_type_for(name: &str) -> String {
    let ext = name.rsplit('.').next().unwrap_or("").to_lowercase();
    match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "txt" | "log" => "text/plain; charset=utf-8",
        "md" => "text/markdown; charset=utf-8",
        "json" => "application/json; charset=utf-8",
        "pdf" => "application/pdf",
        "ogg" => "audio/ogg",
        "mp3" => "audio/mpeg",
        "mp4" => "video/mp4",
        "zip" => "application/zip",
        _ => "application/octet-stream",
    }
    .into()
}

/// Discord's file name clean-up: only `[A-Za-z0-9._-]` stays.
fn clean_filename(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() {
        "unknown".into()
    } else {
        s
    }
}

fn close_reason(code: u16) -> &'static str {
    match code {
        4000 => "Unknown error",
        4001 => "Unknown opcode.",
        4002 => "Error while decoding payload.",
        4003 => "Not authenticated.",
        4004 => "Authentication failed.",
        4005 => "Already authenticated.",
        4007 => "Invalid seq.",
        4008 => "Rate limited.",
        4009 => "Session timed out.",
        4010 => "Invalid shard.",
        4011 => "Sharding required.",
        4012 => "Invalid API version.",
        4013 => "Invalid intent(s).",
        4014 => "Disallowed intent(s).",
        _ => "",
    }
}

fn store_message(i: &mut Inner, channel: u64, message: Value) {
    let id = id_of(&message);
    let h = i.channels.entry(channel).or_default();
    match h.iter_mut().find(|m| id_of(m) == id) {
        Some(m) => *m = message,
        None => h.push(message),
    }
}

fn find_message(i: &Inner, channel: u64, message: u64) -> Option<Value> {
    i.channels
        .get(&channel)?
        .iter()
        .find(|m| id_of(m) == message)
        .cloned()
}

/// A stored message with the bot's reactions merged into `reactions`.
fn decorate(i: &Inner, channel: u64, mut m: Value) -> Value {
    let mine = i
        .reactions
        .get(&(channel, id_of(&m)))
        .cloned()
        .unwrap_or_default();
    let mut list: Vec<Value> = m["reactions"].as_array().cloned().unwrap_or_default();
    for e in mine {
        match list.iter_mut().find(|r| emoji_key(&r["emoji"]) == e) {
            Some(r) => {
                if r["me"] != json!(true) {
                    r["me"] = json!(true);
                    let n = r["count"].as_u64().unwrap_or(0) + 1;
                    r["count"] = json!(n);
                    r["count_details"] = json!({"burst": 0, "normal": n});
                }
            }
            None => list.push(json!({
                "count": 1,
                "count_details": {"burst": 0, "normal": 1},
                "me": true,
                "me_burst": false,
                "burst_me": false,
                "burst_count": 0,
                "emoji": emoji_json(&e),
                "burst_colors": [],
            })),
        }
    }
    if !list.is_empty() {
        m["reactions"] = Value::Array(list);
    }
    m
}

// ---- Gateway ----

async fn gateway_accept(shared: Arc<Shared>, l: tokio::net::TcpListener) {
    loop {
        let Ok((stream, _)) = l.accept().await else {
            continue;
        };
        // The HELLO interval is fixed here, at accept, before the handshake
        // the client's connect waits for: a `set_heartbeat_interval` after
        // connect returned applies to the next connection only.
        let heartbeat_ms = {
            let i = shared.lock();
            if i.refuse_connections {
                drop(stream);
                continue;
            }
            i.heartbeat_ms
        };
        tokio::spawn(gateway_conn(shared.clone(), stream, heartbeat_ms));
    }
}

fn send(i: &Inner, conn: u64, out: Out) {
    if let Some(c) = i.conns.get(&conn) {
        let _ = c.tx.send(out);
    }
}

fn frame(op: u8, d: Value) -> String {
    json!({"op": op, "d": d, "s": null, "t": null}).to_string()
}

/// Appends a dispatch to a session and sends it to the connections
/// attached to it.
fn push_dispatch(i: &mut Inner, sid: &str, t: &str, d: Value) -> u64 {
    if t == "MESSAGE_CREATE" {
        if let Some(ch) = snowflake(&d["channel_id"]) {
            store_message(i, ch, d.clone());
        }
    }
    let Some(s) = i.sessions.get_mut(sid) else {
        return 0;
    };
    s.seq += 1;
    let seq = s.seq;
    let text = json!({"op": 0, "d": d, "s": seq, "t": t}).to_string();
    s.events.push((seq, t.to_string(), text.clone()));
    for c in i.conns.values() {
        if c.session.as_deref() == Some(sid) {
            let _ = c.tx.send(Out::Text(text.clone()));
        }
    }
    seq
}

fn token_ok(t: &Value) -> bool {
    match t.as_str() {
        Some(t) => t == TOKEN || t.strip_prefix("Bot ") == Some(TOKEN),
        None => false,
    }
}

async fn gateway_conn(shared: Arc<Shared>, stream: tokio::net::TcpStream, heartbeat_ms: u64) {
    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let id = {
        let mut i = shared.lock();
        i.connections += 1;
        i.next_conn += 1;
        let id = i.next_conn;
        let hello = frame(10, json!({"heartbeat_interval": heartbeat_ms}));
        let _ = tx.send(Out::Text(hello));
        i.conns.insert(id, Conn { tx, session: None });
        id
    };
    loop {
        tokio::select! {
            out = rx.recv() => match out {
                Some(Out::Text(t)) => {
                    if ws.send(WsMessage::Text(t)).await.is_err() {
                        break;
                    }
                }
                Some(Out::Close(code, reason)) => {
                    let _ = ws
                        .send(WsMessage::Close(Some(CloseFrame {
                            code: CloseCode::from(code),
                            reason: reason.into(),
                        })))
                        .await;
                    break;
                }
                Some(Out::Drop) | None => {
                    let _ = ws.get_ref().set_zero_linger();
                    break;
                }
            },
            msg = ws.next() => match msg {
                Some(Ok(WsMessage::Text(t))) => on_frame(&shared, id, &t),
                Some(Ok(WsMessage::Close(_))) => {
                    // tungstenite queued the close reply; send it.
                    let _ = ws.flush().await;
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            },
        }
    }
    shared.lock().conns.remove(&id);
}

fn on_frame(shared: &Shared, conn: u64, text: &str) {
    let mut guard = shared.lock();
    let i = &mut *guard;
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        i.received.push(Value::String(text.into()));
        send(i, conn, Out::Close(4002, close_reason(4002).into()));
        i.conns.remove(&conn);
        return;
    };
    i.received.push(v.clone());
    let d = v["d"].clone();
    match v["op"].as_u64() {
        Some(1) => {
            i.heartbeats += 1;
            send(i, conn, Out::Text(frame(11, Value::Null)));
        }
        Some(2) => {
            i.identifies.push(d.clone());
            let refuse = if !token_ok(&d["token"]) || i.refuse_identify {
                Some(4004)
            } else if i.conns.get(&conn).is_some_and(|c| c.session.is_some()) {
                Some(4005)
            } else if i.refuse_privileged
                && d["intents"].as_u64().unwrap_or(0) & MESSAGE_CONTENT != 0
            {
                Some(4014)
            } else {
                None
            };
            if let Some(code) = refuse {
                send(i, conn, Out::Close(code, close_reason(code).into()));
                i.conns.remove(&conn);
                return;
            }
            i.next_session += 1;
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let sid = format!(
                "{:016x}{:08x}",
                i.next_session.wrapping_mul(0x9E37_79B9_7F4A_7C15),
                nanos
            );
            i.sessions.insert(
                sid.clone(),
                Session {
                    seq: 0,
                    events: Vec::new(),
                },
            );
            i.current = Some(sid.clone());
            if let Some(c) = i.conns.get_mut(&conn) {
                c.session = Some(sid.clone());
            }
            let shard = if d["shard"].is_array() {
                d["shard"].clone()
            } else {
                json!([0, 1])
            };
            // A minimal READY (what some Discord-compatible servers send):
            // serenity's strict `Ready` cannot read it.
            let ready = if i.minimal {
                json!({"user": {"id": BOT_ID.to_string(), "username": BOT_NAME}, "session_id": sid})
            } else {
                json!({
                    "v": 10,
                    "user": with(bot_user(), json!({"flags": 0, "mfa_enabled": false, "verified": true, "email": null})),
                    "guilds": [],
                    "session_id": sid,
                    "session_type": "normal",
                    "resume_gateway_url": shared.gateway_url,
                    "application": {"id": APP_ID.to_string(), "flags": 0},
                    "shard": shard,
                    "private_channels": [],
                    "presences": [],
                    "relationships": [],
                    "guild_join_requests": [],
                    "geo_ordered_rtc_regions": ["us-east"],
                    "user_settings": {},
                    "auth": {},
                    "_trace": ["[\"fake-discord\"]"],
                })
            };
            push_dispatch(i, &sid, "READY", ready);
            i.readies += 1;
        }
        Some(6) => {
            i.resumes.push(d.clone());
            if !token_ok(&d["token"]) {
                send(i, conn, Out::Close(4004, close_reason(4004).into()));
                i.conns.remove(&conn);
                return;
            }
            let sid = d["session_id"].as_str().unwrap_or("").to_string();
            let after = d["seq"].as_u64().unwrap_or(0);
            let Some(s) = i.sessions.get(&sid) else {
                send(i, conn, Out::Text(frame(9, json!(false))));
                return;
            };
            let replay: Vec<String> = s
                .events
                .iter()
                .filter(|(seq, t, _)| *seq > after && t != "RESUMED")
                .map(|(_, _, f)| f.clone())
                .collect();
            for f in replay {
                send(i, conn, Out::Text(f));
            }
            // The session moves to this connection.
            for (cid, c) in i.conns.iter_mut() {
                if *cid == conn {
                    c.session = Some(sid.clone());
                } else if c.session.as_deref() == Some(sid.as_str()) {
                    c.session = None;
                }
            }
            i.current = Some(sid.clone());
            push_dispatch(
                i,
                &sid,
                "RESUMED",
                json!({"_trace": ["[\"fake-discord\"]"]}),
            );
            i.resumed += 1;
        }
        _ => {}
    }
}

// ---- REST ----

struct Upload {
    field: String,
    filename: String,
    content_type: Option<String>,
    bytes: Vec<u8>,
}

struct Answer {
    status: u16,
    body: Option<Value>,
    raw: Option<(String, Vec<u8>)>,
    headers: Vec<(String, String)>,
}

impl Answer {
    fn json(status: u16, body: Value) -> Answer {
        Answer {
            status,
            body: Some(body),
            raw: None,
            headers: Vec::new(),
        }
    }

    fn empty(status: u16) -> Answer {
        Answer {
            status,
            body: None,
            raw: None,
            headers: Vec::new(),
        }
    }

    fn error(status: u16, message: &str, code: u32) -> Answer {
        Answer::json(status, json!({"message": message, "code": code}))
    }

    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = match (self.body, self.raw) {
            (Some(b), _) => (
                status,
                [(header::CONTENT_TYPE, "application/json")],
                b.to_string(),
            )
                .into_response(),
            (None, Some((ct, bytes))) => {
                (status, [(header::CONTENT_TYPE, ct)], bytes).into_response()
            }
            (None, None) => status.into_response(),
        };
        for (k, v) in self.headers {
            if let (Ok(k), Ok(v)) = (
                HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(&v),
            ) {
                resp.headers_mut().append(k, v);
            }
        }
        resp
    }
}

async fn read_body(req: Request) -> (Value, Vec<Upload>) {
    let ct = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if ct.starts_with("multipart/form-data") {
        let mut fields = Map::new();
        let mut payload = None;
        let mut files = Vec::new();
        if let Ok(mut mp) = Multipart::from_request(req, &()).await {
            while let Ok(Some(field)) = mp.next_field().await {
                let name = field.name().unwrap_or("").to_string();
                let filename = field.file_name().map(str::to_string);
                let content_type = field.content_type().map(str::to_string);
                let bytes = field.bytes().await.unwrap_or_default().to_vec();
                if filename.is_some() || name.starts_with("files[") || name == "file" {
                    files.push(Upload {
                        filename: filename.unwrap_or_else(|| name.clone()),
                        field: name,
                        content_type,
                        bytes,
                    });
                } else if name == "payload_json" {
                    payload = serde_json::from_slice::<Value>(&bytes).ok();
                } else {
                    let text = String::from_utf8_lossy(&bytes).into_owned();
                    fields.insert(name, Value::String(text));
                }
            }
        }
        let body = match payload {
            Some(Value::Object(mut p)) => {
                for (k, v) in fields {
                    p.entry(k).or_insert(v);
                }
                Value::Object(p)
            }
            Some(other) => other,
            None if fields.is_empty() => Value::Null,
            None => Value::Object(fields),
        };
        return (body, files);
    }
    let bytes = axum::body::to_bytes(req.into_body(), 64 << 20)
        .await
        .unwrap_or_default();
    if bytes.is_empty() {
        return (Value::Null, Vec::new());
    }
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (body, Vec::new())
}

async fn rest_handler(State(s): State<Arc<Shared>>, req: Request) -> Response {
    let at = Instant::now();
    let method = req.method().as_str().to_uppercase();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_lowercase(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let (body, uploads) = read_body(req).await;
    let mut i = s.lock();
    let answer = route(
        &s, &mut i, &method, &path, &query, &headers, &body, &uploads,
    );
    if answer.status == 429 {
        i.rate_limited += 1;
    }
    i.calls.push(Call {
        method,
        path,
        query,
        body,
        files: uploads
            .iter()
            .map(|u| (u.field.clone(), u.filename.clone(), u.bytes.len()))
            .collect(),
        headers,
        status: answer.status,
        at,
    });
    drop(i);
    answer.into_response()
}

#[allow(clippy::too_many_arguments)]
fn route(
    s: &Shared,
    i: &mut Inner,
    method: &str,
    path: &str,
    query: &str,
    headers: &[(String, String)],
    body: &Value,
    uploads: &[Upload],
) -> Answer {
    if path.starts_with("/cdn/") {
        if let Some(a) = scripted(i, method, path) {
            return a;
        }
        if method != "GET" {
            return Answer::error(405, "405: Method Not Allowed", 0);
        }
        let decoded = percent_decode(path);
        return match i.files.get(path).or_else(|| i.files.get(&decoded)) {
            Some((ct, bytes)) => Answer {
                status: 200,
                body: None,
                raw: Some((ct.clone(), bytes.clone())),
                headers: Vec::new(),
            },
            None => Answer::error(404, "404: Not Found", 0),
        };
    }
    let Some(rest) = path.strip_prefix("/api/v10/") else {
        return Answer::error(404, "404: Not Found", 0);
    };
    let segs: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    let public = method == "GET" && segs == ["gateway"];
    let auth = headers
        .iter()
        .find(|(k, _)| k == "authorization")
        .map(|(_, v)| v.as_str());
    if !public && auth != Some(format!("Bot {TOKEN}").as_str()) {
        return Answer::error(401, "401: Unauthorized", 0);
    }
    if let Some(a) = scripted(i, method, path) {
        return a;
    }
    let id = |k: usize| segs.get(k).and_then(|x| x.parse::<u64>().ok());
    match (method, segs.as_slice()) {
        ("GET", ["gateway"]) => Answer::json(200, json!({"url": s.gateway_url})),
        ("GET", ["gateway", "bot"]) => Answer::json(
            200,
            json!({
                "url": s.gateway_url,
                "shards": 1,
                "session_start_limit": {"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1},
            }),
        ),
        ("GET", ["users", "@me"]) if i.minimal => {
            Answer::json(200, json!({"id": BOT_ID.to_string(), "username": BOT_NAME}))
        }
        ("GET", ["users", "@me"]) => Answer::json(200, bot_user_full()),
        ("POST", ["channels", _, "messages"]) => match id(1) {
            Some(ch) => {
                let a = create_message(s, i, ch, body, uploads);
                minimal_id(i, a)
            }
            None => Answer::error(404, "Unknown Channel", 10003),
        },
        ("GET", ["channels", _, "messages"]) => match id(1) {
            Some(ch) => list_messages(i, ch, query),
            None => Answer::error(404, "Unknown Channel", 10003),
        },
        ("GET", ["channels", _, "messages", _]) => match (id(1), id(3)) {
            (Some(ch), Some(m)) => match find_message(i, ch, m) {
                Some(msg) if i.minimal => Answer::json(200, bare(decorate(i, ch, msg))),
                Some(msg) => Answer::json(200, decorate(i, ch, msg)),
                None => unknown_message(),
            },
            _ => unknown_message(),
        },
        ("PATCH", ["channels", _, "messages", _]) => match (id(1), id(3)) {
            (Some(ch), Some(m)) => {
                let a = edit_message(s, i, ch, m, body, uploads);
                minimal_id(i, a)
            }
            _ => unknown_message(),
        },
        ("DELETE", ["channels", _, "messages", _]) => match (id(1), id(3)) {
            (Some(ch), Some(m)) if find_message(i, ch, m).is_some() => {
                if let Some(h) = i.channels.get_mut(&ch) {
                    h.retain(|x| id_of(x) != m);
                }
                Answer::empty(204)
            }
            _ => unknown_message(),
        },
        ("PUT" | "DELETE", ["channels", _, "messages", _, "reactions", emoji, "@me"]) => {
            match (id(1), id(3)) {
                (Some(ch), Some(m)) if find_message(i, ch, m).is_some() => {
                    let e = percent_decode(emoji);
                    let mine = i.reactions.entry((ch, m)).or_default();
                    if method == "PUT" {
                        if !mine.contains(&e) {
                            mine.push(e);
                        }
                    } else {
                        mine.retain(|x| *x != e);
                    }
                    Answer::empty(204)
                }
                _ => unknown_message(),
            }
        }
        ("POST", ["channels", _, "typing"]) => Answer::empty(204),
        ("GET", ["channels", _]) => match id(1).and_then(|c| i.channel_objects.get(&c)) {
            Some(c) => Answer::json(200, c.clone()),
            None => Answer::error(404, "Unknown Channel", 10003),
        },
        ("POST", ["interactions", _, _, "callback"]) => Answer::empty(204),
        _ => Answer::error(404, "404: Not Found", 0),
    }
}

/// A message answer cut to its `id` when answers are minimal.
fn minimal_id(i: &Inner, mut a: Answer) -> Answer {
    if i.minimal && a.status == 200 {
        if let Some(b) = &a.body {
            a.body = Some(json!({"id": b["id"]}));
        }
    }
    a
}

/// A message read back with only `id`, `attachments` (`filename`, `url`)
/// and `reactions` (`me`, `emoji`).
fn bare(m: Value) -> Value {
    let files: Vec<Value> = m["attachments"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| json!({"filename": a["filename"], "url": a["url"]}))
        .collect();
    let reactions: Vec<Value> = m["reactions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| json!({"me": r["me"], "emoji": r["emoji"]}))
        .collect();
    json!({"id": m["id"], "attachments": files, "reactions": reactions})
}

/// The scripted answer for this call, if one is due.
fn scripted(i: &mut Inner, method: &str, path: &str) -> Option<Answer> {
    let f = i
        .failures
        .iter_mut()
        .find(|f| f.left > 0 && f.method == method && path.starts_with(&f.prefix))?;
    f.left -= 1;
    let a = Answer {
        status: f.status,
        body: Some(f.body.clone()),
        raw: None,
        headers: f.headers.clone(),
    };
    i.failures.retain(|f| f.left > 0);
    Some(a)
}

fn unknown_message() -> Answer {
    Answer::error(404, "Unknown Message", 10008)
}

fn epoch_secs(at: SystemTime) -> f64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Takes one POST from the channel's bucket: rate-limit headers, or a 429.
fn take_bucket(i: &mut Inner, channel: u64) -> Result<Vec<(String, String)>, Box<Answer>> {
    let now = Instant::now();
    let (limit, window, enforced) = (i.bucket.limit, i.bucket.window, i.bucket.enforced);
    let w = i.windows.entry(channel).or_insert((now, 0));
    if now >= w.0 + window {
        *w = (now, 0);
    }
    let left = (w.0 + window).saturating_duration_since(now);
    let reset = format!("{:.3}", epoch_secs(SystemTime::now() + left));
    let reset_after = format!("{:.3}", left.as_secs_f64());
    let bucket = "f4k3d15c0rdb0cket".to_string();
    if enforced && w.1 >= limit {
        let retry = left.as_secs_f64();
        let mut a = Answer::json(
            429,
            json!({"message": "You are being rate limited.", "retry_after": (retry * 1000.0).round() / 1000.0, "global": false}),
        );
        a.headers = vec![
            ("Retry-After".into(), (retry.ceil() as u64).to_string()),
            ("X-RateLimit-Limit".into(), limit.to_string()),
            ("X-RateLimit-Remaining".into(), "0".into()),
            ("X-RateLimit-Reset".into(), reset),
            ("X-RateLimit-Reset-After".into(), reset_after),
            ("X-RateLimit-Bucket".into(), bucket),
            ("X-RateLimit-Scope".into(), "user".into()),
        ];
        return Err(Box::new(a));
    }
    w.1 += 1;
    Ok(vec![
        ("X-RateLimit-Limit".into(), limit.to_string()),
        (
            "X-RateLimit-Remaining".into(),
            limit.saturating_sub(w.1).to_string(),
        ),
        ("X-RateLimit-Reset".into(), reset),
        ("X-RateLimit-Reset-After".into(), reset_after),
        ("X-RateLimit-Bucket".into(), bucket),
    ])
}

/// Stores uploads; returns their attachment objects.
fn store_uploads(
    s: &Shared,
    i: &mut Inner,
    channel: u64,
    body: &Value,
    uploads: &[Upload],
) -> Vec<Value> {
    let described: Vec<Value> = body["attachments"].as_array().cloned().unwrap_or_default();
    let mut out = Vec::new();
    for u in uploads {
        i.next_attachment += 1;
        let aid = i.next_attachment;
        let name = clean_filename(&u.filename);
        let path = format!("/cdn/attachments/{channel}/{aid}/{name}");
        let ct = u
            .content_type
            .clone()
            .unwrap_or_else(|| content_type_for(&name));
        let url = format!("{}{path}", s.url);
        let mut a = attachment(aid, &name, u.bytes.len() as u64, &url, &ct);
        // `files[n]` pairs with the payload's attachment `{"id": n, ...}`.
        let n = u
            .field
            .strip_prefix("files[")
            .and_then(|x| x.strip_suffix(']'))
            .and_then(|x| x.parse::<u64>().ok());
        if let Some(d) = described
            .iter()
            .find(|d| n.is_some() && snowflake(&d["id"]) == n)
        {
            if let Some(desc) = d["description"].as_str() {
                a["description"] = json!(desc);
            }
        }
        i.files.insert(path, (ct, u.bytes.clone()));
        out.push(a);
    }
    out
}

fn create_message(
    s: &Shared,
    i: &mut Inner,
    channel: u64,
    body: &Value,
    uploads: &[Upload],
) -> Answer {
    let rl = match take_bucket(i, channel) {
        Ok(h) => h,
        Err(a) => return *a,
    };
    let content = body["content"].as_str().unwrap_or("");
    if content.chars().count() > 2000 {
        let mut a = Answer::json(
            400,
            json!({"message": "Invalid Form Body", "code": 50035, "errors": {"content": {"_errors": [{"code": "BASE_TYPE_MAX_LENGTH", "message": "Must be 2000 or fewer in length."}]}}}),
        );
        a.headers = rl;
        return a;
    }
    i.next_message += 1;
    let id = i.next_message;
    let mut m = message(channel, id, bot_user(), content);
    m["attachments"] = json!(store_uploads(s, i, channel, body, uploads));
    for k in ["components", "embeds"] {
        if body[k].is_array() {
            m[k] = body[k].clone();
        }
    }
    for k in ["tts", "flags", "nonce"] {
        if !body[k].is_null() {
            m[k] = body[k].clone();
        }
    }
    if body["message_reference"].is_object() {
        let mut r = body["message_reference"].clone();
        if r["channel_id"].is_null() {
            r["channel_id"] = json!(channel.to_string());
        }
        if r["type"].is_null() {
            r["type"] = json!(0);
        }
        if let Some(rid) = snowflake(&r["message_id"]) {
            r["message_id"] = json!(rid.to_string());
            let rch = snowflake(&r["channel_id"]).unwrap_or(channel);
            if let Some(orig) = find_message(i, rch, rid) {
                m["referenced_message"] = orig;
            }
        }
        m["message_reference"] = r;
        m["type"] = json!(19);
    }
    store_message(i, channel, m.clone());
    let mut a = Answer::json(200, m);
    a.headers = rl;
    a
}

fn edit_message(
    s: &Shared,
    i: &mut Inner,
    channel: u64,
    message: u64,
    body: &Value,
    uploads: &[Upload],
) -> Answer {
    let Some(mut m) = find_message(i, channel, message) else {
        return unknown_message();
    };
    if let Some(o) = body.as_object() {
        for k in ["content", "components", "embeds", "flags"] {
            if let Some(v) = o.get(k) {
                m[k] = match (k, v) {
                    ("content", Value::Null) => json!(""),
                    ("components" | "embeds", Value::Null) => json!([]),
                    _ => v.clone(),
                };
            }
        }
        if let Some(keep) = o.get("attachments").and_then(Value::as_array) {
            let keep: Vec<u64> = keep.iter().filter_map(|a| snowflake(&a["id"])).collect();
            let old = m["attachments"].as_array().cloned().unwrap_or_default();
            m["attachments"] = json!(old
                .into_iter()
                .filter(|a| keep.contains(&id_of(a)))
                .collect::<Vec<_>>());
        }
    }
    if !uploads.is_empty() {
        let new = store_uploads(s, i, channel, body, uploads);
        if let Some(list) = m["attachments"].as_array_mut() {
            list.extend(new);
        }
    }
    m["edited_timestamp"] = json!(now_ts());
    store_message(i, channel, m.clone());
    Answer::json(200, decorate(i, channel, m))
}

fn list_messages(i: &Inner, channel: u64, query: &str) -> Answer {
    let mut limit = 50usize;
    let (mut before, mut after, mut around) = (None, None, None);
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        let n = v.parse::<u64>();
        match (k.as_ref(), n) {
            ("limit", Ok(n)) if (1..=100).contains(&n) => limit = n as usize,
            ("limit", _) => {
                return Answer::json(
                    400,
                    json!({"message": "Invalid Form Body", "code": 50035, "errors": {"limit": {"_errors": [{"code": "NUMBER_TYPE_MAX", "message": "Int value should be between 1 and 100."}]}}}),
                )
            }
            ("before", Ok(n)) => before = Some(n),
            ("after", Ok(n)) => after = Some(n),
            ("around", Ok(n)) => around = Some(n),
            _ => {}
        }
    }
    let mut all = i.channels.get(&channel).cloned().unwrap_or_default();
    all.sort_by_key(id_of); // oldest first
    let picked: Vec<Value> = if let Some(b) = before {
        let older: Vec<Value> = all.into_iter().filter(|m| id_of(m) < b).collect();
        let skip = older.len().saturating_sub(limit);
        older.into_iter().skip(skip).collect()
    } else if let Some(a) = after {
        all.into_iter()
            .filter(|m| id_of(m) > a)
            .take(limit)
            .collect()
    } else if let Some(c) = around {
        let pos = all.iter().position(|m| id_of(m) >= c).unwrap_or(all.len());
        let start = pos.saturating_sub(limit / 2);
        all.into_iter().skip(start).take(limit).collect()
    } else {
        let skip = all.len().saturating_sub(limit);
        all.into_iter().skip(skip).collect()
    };
    let out: Vec<Value> = picked
        .into_iter()
        .rev()
        .map(|m| decorate(i, channel, m))
        .collect();
    Answer::json(200, Value::Array(out))
}
