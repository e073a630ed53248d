//! A fake Telegram Bot API server for the tests: an HTTP server on
//! 127.0.0.1 that metrod's teloxide is pointed at with
//! `METRO_TELEGRAM_API_URL`.
//!
//! - `POST /bot<token>/<method>`: methods matched case-insensitively
//!   (teloxide calls `/bot<TOKEN>/SendMessage`); JSON, form or multipart
//!   parameters. A wrong token answers 401 like Telegram.
//! - `getUpdates` is a real long poll with `offset` semantics: updates
//!   below the offset are confirmed and gone; the others are answered again
//!   until confirmed; with none, the call waits up to `timeout` seconds.
//!   Each confirmation also records whether the confirmed updates were
//!   already in metrod's log at that moment.
//! - `GET /file/bot<token>/<path>`: file downloads (after `getFile`).
//! - Scripted failures: [`Fake::fail_next`] answers the next calls of a
//!   method with a status and a Telegram error body (429 with
//!   `retry_after`, 409, 5xx, "can't parse entities").
//! - [`Fake::freeze_confirmations`]: a `getUpdates` that would confirm
//!   something hangs forever instead, as if it never reached Telegram.

#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Map, Value};

pub const TOKEN: &str = "123456:TEST-token_abc";
pub const BOT_ID: i64 = 7_000_000_001;

/// One call metrod made.
#[derive(Debug, Clone)]
pub struct Call {
    /// Lowercase method name.
    pub method: String,
    pub params: Value,
    /// Uploaded files: (field, file name, size).
    pub files: Vec<(String, String, usize)>,
    pub at: Instant,
    /// The request's `Host` (tells apart metrods given different URLs of
    /// this server: `127.0.0.1:port`, `localhost:port`).
    pub host: String,
}

/// What a confirming `getUpdates` found.
#[derive(Debug, Clone)]
pub struct Confirmation {
    pub offset: i64,
    pub confirmed: Vec<i64>,
    /// Every confirmed update with a message-like payload was in the log.
    pub all_logged: bool,
}

#[derive(Default)]
struct Inner {
    next_update: i64,
    pending: VecDeque<Value>,
    calls: Vec<Call>,
    failures: HashMap<String, VecDeque<(u16, Value)>>,
    next_message: i64,
    files: HashMap<String, (String, Vec<u8>)>,
    freeze: bool,
    confirmations: Vec<Confirmation>,
    handed_out: Vec<i64>,
    /// Answers carry only what metro needs (issue 14, item 9).
    minimal: bool,
}

struct Shared {
    inner: Mutex<Inner>,
    news: tokio::sync::Notify,
    log: Mutex<Option<PathBuf>>,
}

pub struct Fake {
    pub url: String,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Fake {
    pub fn start() -> Fake {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind fake");
        listener.set_nonblocking(true).expect("nonblocking");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                next_update: 1000,
                next_message: 500,
                ..Inner::default()
            }),
            news: tokio::sync::Notify::new(),
            log: Mutex::new(None),
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = Router::new()
            .route("/{bot}/{method}", post(method))
            .route("/file/{bot}/{*path}", get(file))
            .with_state(shared.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let l = tokio::net::TcpListener::from_std(listener).expect("listener");
                tokio::select! {
                    _ = axum::serve(l, app) => {}
                    _ = stopped => {}
                }
            });
        });
        Fake {
            url,
            shared,
            stop: Some(stop),
        }
    }

    /// The environment that points metrod at this server.
    pub fn env(&self, allow: &str) -> Vec<(String, String)> {
        vec![
            ("METRO_TELEGRAM_TOKEN".into(), TOKEN.into()),
            ("METRO_TELEGRAM_API_URL".into(), self.url.clone()),
            ("METRO_TELEGRAM_ALLOW".into(), allow.into()),
        ]
    }

    /// metrod's log, for checking confirmations against it.
    pub fn watch_log(&self, path: PathBuf) {
        *self.shared.log.lock().unwrap() = Some(path);
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.shared.inner.lock().unwrap())
    }

    /// Queues an update (`kind` is e.g. `{"message": {...}}`); returns its id.
    pub fn push(&self, kind: Value) -> i64 {
        let id = self.with(|i| {
            i.next_update += 1;
            let id = i.next_update;
            let mut u = kind;
            u["update_id"] = json!(id);
            i.pending.push_back(u);
            id
        });
        self.shared.news.notify_waiters();
        id
    }

    /// Queues `update` exactly as given (no `update_id` is added): it is
    /// handed out until a confirming `getUpdates` with any offset.
    pub fn push_raw(&self, update: Value) {
        self.with(|i| i.pending.push_back(update));
        self.shared.news.notify_waiters();
    }

    /// The next `n` calls of `method` answer `status` with `body`.
    pub fn fail_next(&self, method: &str, n: usize, status: u16, body: Value) {
        self.with(|i| {
            let q = i.failures.entry(method.to_lowercase()).or_default();
            for _ in 0..n {
                q.push_back((status, body.clone()));
            }
        });
    }

    pub fn clear_failures(&self) {
        self.with(|i| i.failures.clear());
    }

    /// A file `getFile` and the download route serve.
    pub fn add_file(&self, file_id: &str, path: &str, bytes: &[u8]) {
        self.with(|i| {
            i.files
                .insert(file_id.into(), (path.into(), bytes.to_vec()));
        });
    }

    /// Answers with the fewest fields the Bot API can give: `getMe` only
    /// `id`, `first_name`, `username`; a sent message only `message_id`;
    /// an edit `true`; `getFile` only `file_path`.
    pub fn minimal_answers(&self, on: bool) {
        self.shared.inner.lock().unwrap().minimal = on;
    }

    pub fn freeze_confirmations(&self, on: bool) {
        self.with(|i| i.freeze = on);
    }

    pub fn calls(&self, method: &str) -> Vec<Call> {
        let m = method.to_lowercase();
        self.with(|i| i.calls.iter().filter(|c| c.method == m).cloned().collect())
    }

    pub fn all_calls(&self) -> Vec<Call> {
        self.with(|i| i.calls.clone())
    }

    /// Updates handed out but not confirmed yet.
    pub fn pending(&self) -> Vec<i64> {
        self.with(|i| {
            i.pending
                .iter()
                .filter_map(|u| u["update_id"].as_i64())
                .collect()
        })
    }

    pub fn confirmations(&self) -> Vec<Confirmation> {
        self.with(|i| i.confirmations.clone())
    }

    /// How often update `id` was handed to metrod.
    pub fn handed_out(&self, id: i64) -> usize {
        self.with(|i| i.handed_out.iter().filter(|x| **x == id).count())
    }

    /// Waits until `f` holds (or panics after `limit`).
    pub fn wait(&self, what: &str, limit: Duration, f: impl Fn(&Fake) -> bool) {
        let deadline = Instant::now() + limit;
        while !f(self) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for at least `n` calls of `method`; returns them.
    pub fn wait_calls(&self, method: &str, n: usize) -> Vec<Call> {
        self.wait(
            &format!("{n} {method} calls"),
            Duration::from_secs(20),
            |f| f.calls(method).len() >= n,
        );
        self.calls(method)
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

fn ok(result: Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        json!({"ok": true, "result": result}).to_string(),
    )
        .into_response()
}

pub fn api_error(code: u16, description: &str) -> Value {
    json!({"ok": false, "error_code": code, "description": description})
}

fn fail(status: u16, body: Value) -> Response {
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// Parameters and uploaded files of a request, whatever its encoding.
async fn params(req: Request) -> (Value, Vec<(String, String, usize)>) {
    let ct = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if ct.starts_with("multipart/form-data") {
        let mut m = Map::new();
        let mut files = Vec::new();
        if let Ok(mut mp) = Multipart::from_request(req, &()).await {
            while let Ok(Some(field)) = mp.next_field().await {
                let name = field.name().unwrap_or("").to_string();
                let file_name = field.file_name().map(str::to_string);
                let bytes = field.bytes().await.unwrap_or_default();
                match file_name {
                    Some(f) => files.push((name, f, bytes.len())),
                    None => {
                        let text = String::from_utf8_lossy(&bytes).to_string();
                        m.insert(name, Value::String(text));
                    }
                }
            }
        }
        return (Value::Object(m), files);
    }
    let body: Bytes = axum::body::to_bytes(req.into_body(), 16 << 20)
        .await
        .unwrap_or_default();
    if body.is_empty() {
        return (json!({}), Vec::new());
    }
    if ct.starts_with("application/x-www-form-urlencoded") {
        let m: Map<String, Value> = String::from_utf8_lossy(&body)
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
            .collect();
        return (Value::Object(m), Vec::new());
    }
    (
        serde_json::from_slice(&body).unwrap_or(json!({})),
        Vec::new(),
    )
}

/// A parameter that may be a JSON value or (multipart) a string of JSON.
pub fn param(p: &Value, key: &str) -> Value {
    match &p[key] {
        Value::String(s) => serde_json::from_str(s).unwrap_or(Value::String(s.clone())),
        v => v.clone(),
    }
}

fn int(p: &Value, key: &str) -> Option<i64> {
    match param(p, key) {
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

pub fn bot_user() -> Value {
    json!({"id": BOT_ID, "is_bot": true, "first_name": "Metro", "username": "metro_test_bot"})
}

pub fn chat_json(id: i64) -> Value {
    if id > 0 {
        json!({"id": id, "type": "private", "first_name": "Someone"})
    } else {
        json!({"id": id, "type": "supergroup", "title": "Group", "is_forum": true})
    }
}

fn sent_message(i: &mut Inner, chat: i64, text: &str) -> Value {
    i.next_message += 1;
    if i.minimal {
        return json!({"message_id": i.next_message});
    }
    json!({
        "message_id": i.next_message,
        "date": 1_764_300_000,
        "chat": chat_json(chat),
        "from": bot_user(),
        "text": text,
    })
}

async fn method(
    State(s): State<Arc<Shared>>,
    Path((bot, method)): Path<(String, String)>,
    req: Request,
) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let (p, files) = params(req).await;
    let m = method.to_lowercase();
    let scripted = {
        let mut i = s.inner.lock().unwrap();
        i.calls.push(Call {
            method: m.clone(),
            params: p.clone(),
            files,
            at: Instant::now(),
            host,
        });
        if bot != format!("bot{TOKEN}") {
            return fail(401, api_error(401, "Unauthorized"));
        }
        i.failures.get_mut(&m).and_then(VecDeque::pop_front)
    };
    if let Some((status, body)) = scripted {
        return fail(status, body);
    }
    let minimal = s.inner.lock().unwrap().minimal;
    match m.as_str() {
        "getme" if minimal => {
            ok(json!({"id": BOT_ID, "first_name": "Metro", "username": "metro_test_bot"}))
        }
        "editmessagetext" | "editmessagecaption" if minimal => ok(json!(true)),
        "getme" => {
            let mut me = bot_user();
            for k in [
                "can_join_groups",
                "can_read_all_group_messages",
                "supports_inline_queries",
                "can_connect_to_business",
                "has_main_web_app",
            ] {
                me[k] = json!(false);
            }
            ok(me)
        }
        "getupdates" => get_updates(&s, &p).await,
        "sendmessage" | "sendphoto" | "senddocument" | "sendvoice" => {
            let chat = int(&p, "chat_id").unwrap_or(0);
            let text = p["text"]
                .as_str()
                .or(p["caption"].as_str())
                .unwrap_or("")
                .to_string();
            let mut i = s.inner.lock().unwrap();
            ok(sent_message(&mut i, chat, &text))
        }
        "sendmediagroup" => {
            let chat = int(&p, "chat_id").unwrap_or(0);
            let n = param(&p, "media").as_array().map(Vec::len).unwrap_or(0);
            let mut i = s.inner.lock().unwrap();
            let msgs: Vec<Value> = (0..n).map(|_| sent_message(&mut i, chat, "")).collect();
            ok(json!(msgs))
        }
        "editmessagetext" | "editmessagecaption" => {
            let chat = int(&p, "chat_id").unwrap_or(0);
            let mid = int(&p, "message_id").unwrap_or(0);
            let text = p["text"].as_str().or(p["caption"].as_str()).unwrap_or("");
            let mut msg = {
                let mut i = s.inner.lock().unwrap();
                sent_message(&mut i, chat, text)
            };
            msg["message_id"] = json!(mid);
            msg["edit_date"] = json!(1_764_300_001);
            ok(msg)
        }
        "setmessagereaction" | "answercallbackquery" | "deletewebhook" => ok(json!(true)),
        "getfile" => {
            let id = p["file_id"].as_str().unwrap_or("").to_string();
            let i = s.inner.lock().unwrap();
            match i.files.get(&id) {
                Some((path, _)) if minimal => ok(json!({"file_path": path})),
                Some((path, bytes)) => ok(json!({
                    "file_id": id, "file_unique_id": format!("u{id}"),
                    "file_size": bytes.len(), "file_path": path,
                })),
                None => fail(400, api_error(400, "Bad Request: invalid file id")),
            }
        }
        _ => fail(404, api_error(404, "Not Found: method not found")),
    }
}

async fn get_updates(s: &Arc<Shared>, p: &Value) -> Response {
    let timeout = Duration::from_secs(int(p, "timeout").unwrap_or(0).max(0) as u64);
    if let Some(offset) = int(p, "offset") {
        let frozen = {
            let i = s.inner.lock().unwrap();
            i.freeze
                && i.pending
                    .iter()
                    .any(|u| u["update_id"].as_i64().is_some_and(|id| id < offset))
        };
        if frozen {
            // As if this request never reached Telegram.
            std::future::pending::<()>().await;
        }
        let log = s
            .log
            .lock()
            .unwrap()
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok());
        let mut i = s.inner.lock().unwrap();
        let confirmed: Vec<i64> = i
            .pending
            .iter()
            .filter_map(|u| u["update_id"].as_i64())
            .filter(|id| *id < offset)
            .collect();
        if !confirmed.is_empty() {
            let all_logged = match &log {
                Some(text) => confirmed.iter().all(|id| {
                    text.lines().any(|l| {
                        serde_json::from_str::<Value>(l)
                            .is_ok_and(|e| e["updateId"].as_i64() == Some(*id))
                    })
                }),
                None => false,
            };
            i.confirmations.push(Confirmation {
                offset,
                confirmed: confirmed.clone(),
                all_logged,
            });
        }
        i.pending
            .retain(|u| u["update_id"].as_i64().is_some_and(|id| id >= offset));
    }
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let notified = s.news.notified();
        {
            let mut i = s.inner.lock().unwrap();
            if !i.pending.is_empty() {
                let out: Vec<Value> = i.pending.iter().take(100).cloned().collect();
                let ids: Vec<i64> = out.iter().filter_map(|u| u["update_id"].as_i64()).collect();
                i.handed_out.extend(ids);
                return ok(json!(out));
            }
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return ok(json!([]));
        }
    }
}

async fn file(State(s): State<Arc<Shared>>, Path((bot, path)): Path<(String, String)>) -> Response {
    if bot != format!("bot{TOKEN}") {
        return fail(401, api_error(401, "Unauthorized"));
    }
    let i = s.inner.lock().unwrap();
    match i.files.values().find(|(p, _)| *p == path) {
        Some((_, bytes)) => (StatusCode::OK, bytes.clone()).into_response(),
        None => fail(404, api_error(404, "Not Found")),
    }
}

// Update builders, shaped like Telegram's.

pub fn user(id: i64, first: &str) -> Value {
    json!({"id": id, "is_bot": false, "first_name": first, "username": format!("{}_u", first.to_lowercase())})
}

pub fn private(id: i64, first: &str) -> Value {
    json!({"id": id, "type": "private", "first_name": first})
}

pub fn forum(id: i64, title: &str) -> Value {
    json!({"id": id, "type": "supergroup", "title": title, "is_forum": true})
}

pub fn message(mid: i64, chat: Value, from: Value, fields: Value) -> Value {
    let mut m = json!({"message_id": mid, "date": 1_764_300_000, "chat": chat, "from": from});
    if let (Some(m), Value::Object(f)) = (m.as_object_mut(), fields) {
        m.extend(f);
    }
    m
}

/// `{"message": message(...)}`
pub fn text_update(mid: i64, chat: i64, from: i64, name: &str, text: &str) -> Value {
    let c = if chat > 0 {
        private(chat, name)
    } else {
        forum(chat, "Group")
    };
    json!({"message": message(mid, c, user(from, name), json!({"text": text}))})
}
