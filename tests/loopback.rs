//! Proves the station seam: a station written only in this file (an
//! in-memory "loopback" platform) is registered with metrod and sends,
//! edits and receives through it, with nothing changed outside this file
//! but the registration call (`metro::daemon::run_with`). Its inbound side
//! runs through the shared pipeline (`metro::station::ingest`), so a post
//! the platform delivers twice is stored once and counted.
//!
//! How the station gets into a metrod: a test crate cannot add a kind to
//! the `metrod` binary, so this test runs the daemon in-process through
//! the library — the same `daemon::run_with` that `metrod`'s `main` calls
//! (`run` is `run_with` with no extra kind) — on its own runtime thread,
//! with a temp state dir, and talks to it only over the real Unix socket
//! with the same `Client` as every other test. What differs from the
//! binary is only the process: no `main` (so no tracing setup and no
//! systemd activation), and it is stopped through `run_with`'s stop token
//! instead of SIGTERM.

mod common;

use std::any::Any;
use std::io;
use std::sync::{Arc, Mutex};

use clap::Parser;
use common::{publish, Client, PATIENCE};
use metro::proto::{self, Edit, Event, WireError};
use metro::station::core::StationCore;
use metro::station::ingest::{ingest, Arrival, Inlet, Outcome, Persist};
use metro::station::{Op, SendFailure, Sent, Station, StationCtx, StationKind};
use metro::store::log::Log;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The platform: rooms of messages, and what people post to the bot.
#[derive(Default)]
struct Platform {
    /// (room, message id, text), in order.
    messages: Mutex<Vec<(String, u64, String)>>,
    /// People's posts (post id, room, text), for the station's inbound
    /// task.
    posts: Mutex<Option<mpsc::UnboundedSender<Post>>>,
    inbox: Mutex<Option<mpsc::UnboundedReceiver<Post>>>,
}

impl Platform {
    fn new() -> Arc<Platform> {
        let (tx, rx) = mpsc::unbounded_channel();
        Arc::new(Platform {
            posts: Mutex::new(Some(tx)),
            inbox: Mutex::new(Some(rx)),
            ..Platform::default()
        })
    }

    /// A person's post `id` (`text` in `room`) reaches the bot; a
    /// platform may deliver the same post again.
    fn post(&self, id: u64, room: &str, text: &str) {
        let tx = self.posts.lock().unwrap();
        tx.as_ref()
            .unwrap()
            .send((id, room.to_string(), text.to_string()))
            .unwrap();
    }

    fn text_of(&self, id: u64) -> Option<String> {
        let m = self.messages.lock().unwrap();
        m.iter()
            .find(|(_, i, _)| *i == id)
            .map(|(_, _, t)| t.clone())
    }
}

struct LoopbackKind(Arc<Platform>);

/// Its `[loopback]` section of the config file, which it parses itself.
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LoopbackConfig {
    greeting: Option<String>,
}

fn section(config: &metro::config::Config) -> Result<LoopbackConfig, String> {
    match config.section("loopback") {
        None => Ok(LoopbackConfig::default()),
        Some(v) => v
            .clone()
            .try_into()
            .map_err(|e: toml::de::Error| e.message().to_string()),
    }
}

impl StationKind for LoopbackKind {
    fn name(&self) -> &'static str {
        "loopback"
    }

    fn section(&self) -> Option<&'static str> {
        Some("loopback")
    }

    fn check_config(&self, config: &metro::config::Config) -> Result<(), String> {
        section(config).map(|_| ())
    }

    fn check_line(&self, line: &str) -> Result<(), String> {
        let room = line.strip_prefix("metro://loopback/").unwrap_or("");
        if room.is_empty() || room.contains('/') {
            return Err("loopback lines are metro://loopback/<room>".into());
        }
        Ok(())
    }

    fn open(&self, ctx: &StationCtx) -> io::Result<Arc<dyn Station>> {
        let greeting = section(&ctx.current()).map_err(io::Error::other)?.greeting;
        Ok(Arc::new(Loopback {
            platform: self.0.clone(),
            ctx: ctx.clone(),
            greeting,
            core: StationCore::new("loopback", "", "ok", 64),
        }))
    }
}

type Post = (u64, String, String);

struct Loopback {
    platform: Arc<Platform>,
    ctx: StationCtx,
    /// From its config section.
    greeting: Option<String>,
    core: StationCore,
}

/// Its side of the shared inbound pipeline: no allowlist, nothing to do
/// once stored.
impl Inlet for Loopback {
    type Platform = ();

    fn core(&self) -> &StationCore {
        &self.core
    }

    fn log(&self) -> &Log {
        &self.ctx.log
    }
}

fn room(line: &str) -> String {
    line.trim_start_matches("metro://loopback/").to_string()
}

#[async_trait::async_trait]
impl Station for Loopback {
    fn name(&self) -> &str {
        "loopback"
    }

    /// Each post becomes one `inbound` event in the log, once.
    async fn run(self: Arc<Self>, stop: CancellationToken) {
        let Some(mut inbox) = self.platform.inbox.lock().unwrap().take() else {
            return;
        };
        loop {
            let (id, room, text) = tokio::select! {
                _ = stop.cancelled() => return,
                p = inbox.recv() => match p { Some(p) => p, None => return },
            };
            let line = format!("metro://loopback/{room}");
            let ev = Event {
                station: "loopback".into(),
                kind: "inbound".into(),
                line: line.clone(),
                from: "metro://loopback/user/ann".into(),
                to: line,
                text: Some(text),
                ..Event::default()
            };
            let a = Arrival {
                event: ev,
                key: Some(id.to_string()),
                sender: None,
                offer: false,
                platform: (),
            };
            if let Outcome::NotStored(_) = ingest(&self, a, Persist::UntilStored, &stop).await {
                return;
            }
        }
    }

    fn platform(&self) -> Option<&'static str> {
        Some("Loopback")
    }

    fn supports(&self, op: Op) -> bool {
        matches!(op, Op::Send | Op::Edit)
    }

    async fn send(&self, line: &str, s: &proto::Send) -> Result<Sent, SendFailure> {
        let mut m = self.platform.messages.lock().unwrap();
        let id = m.len() as u64 + 1;
        m.push((room(line), id, s.text.clone()));
        Ok(Sent {
            message_ids: vec![id.to_string()],
            reply_to: s.reply_to.clone(),
        })
    }

    async fn edit(&self, line: &str, e: &Edit) -> Result<String, WireError> {
        let mut m = self.platform.messages.lock().unwrap();
        let msg = m
            .iter_mut()
            .find(|(r, i, _)| *r == room(line) && i.to_string() == e.message_id)
            .ok_or_else(|| WireError::not_found("no such loopback message"))?;
        msg.2 = e.text.clone();
        Ok(msg.1.to_string())
    }

    fn row(&self) -> Value {
        json!({
            "name": "loopback",
            "enabled": true,
            "status": "ok",
            "capabilities": ["inbound", "send", "edit"],
            "greeting": self.greeting,
        })
    }

    fn stats(&self) -> Option<Value> {
        Some(Value::Object(self.core.counters.json()))
    }

    fn any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }
}

/// metrod in this process, with the loopback kind registered.
struct InProcess {
    socket: std::path::PathBuf,
    stop: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
    _tmp: tempfile::TempDir,
}

/// metrod's arguments on `tmp`, with the config file `config` (written
/// `0600`).
fn args(tmp: &std::path::Path, config: &str) -> metro::daemon::Args {
    use std::os::unix::fs::PermissionsExt;
    let state = tmp.join("state");
    let cfg = tmp.join("config.toml");
    std::fs::write(&cfg, config).unwrap();
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o600)).unwrap();
    metro::daemon::Args::parse_from([
        "metrod",
        "--state-dir",
        state.to_str().unwrap(),
        "--webhook-addr",
        "127.0.0.1:0",
        "--config",
        cfg.to_str().unwrap(),
        "--no-config-watch",
    ])
}

/// Why metrod with the loopback kind does not start on `config`.
fn start_error(config: &str) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let args = args(tmp.path(), config);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let kinds: Vec<Arc<dyn StationKind>> = vec![Arc::new(LoopbackKind(Platform::new()))];
    let stop = CancellationToken::new();
    // Stops it at once, should it start after all.
    stop.cancel();
    match rt.block_on(metro::daemon::run_with(args, kinds, stop)) {
        Ok(()) => panic!("metrod started on {config:?}"),
        Err(e) => e.to_string(),
    }
}

impl InProcess {
    fn start(platform: Arc<Platform>, config: &str) -> InProcess {
        let tmp = tempfile::tempdir().unwrap();
        let socket = tmp.path().join("state").join("metro.sock");
        let args = args(tmp.path(), config);
        let stop = CancellationToken::new();
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                let kinds: Vec<Arc<dyn StationKind>> = vec![Arc::new(LoopbackKind(platform))];
                rt.block_on(metro::daemon::run_with(args, kinds, stop))
                    .expect("metrod in process");
            })
        };
        let deadline = std::time::Instant::now() + PATIENCE;
        while Client::try_connect(&socket).is_err() {
            assert!(std::time::Instant::now() < deadline, "metrod not ready");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        InProcess {
            socket,
            stop,
            thread: Some(thread),
            _tmp: tmp,
        }
    }

    fn connect(&self) -> Client {
        Client::connect(&self.socket)
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

const LINE: &str = "metro://loopback/lobby";
const AGENT: &str = "metro://claude/user/a";

#[test]
fn a_station_written_outside_the_crate_sends_edits_and_receives() {
    let platform = Platform::new();
    let d = InProcess::start(platform.clone(), "[loopback]\ngreeting = \"hello\"\n");
    let mut c = d.connect();

    // Listed like the built-in stations, after them.
    let rows = c.ok(json!({"op": "stations"}))["stations"].clone();
    let names: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["local", "telegram", "discord", "webhook", "loopback"]
    );
    // It read its own section of the config file.
    assert_eq!(rows[4]["greeting"], json!("hello"));
    // `chat` comes from each kind, running or not (telegram and discord
    // have no token here): the loopback kind does not say it is one.
    let chat: Vec<bool> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["chat"].as_bool().expect("every row says chat"))
        .collect();
    assert_eq!(chat, [false, true, true, false, false]);

    let mut sub = d.connect();
    let s = sub.subscribe(json!({"follow": true, "since": "tail"}));

    // Receive: a person's post is one inbound event on its line.
    platform.post(7, "lobby", "hello agents");
    let f = sub.frame();
    assert_eq!(f["sub"], json!(s));
    assert_eq!(f["event"]["kind"], json!("inbound"));
    assert_eq!(f["event"]["station"], json!("loopback"));
    assert_eq!(f["event"]["line"], json!(LINE));
    assert_eq!(f["event"]["text"], json!("hello agents"));

    // Send: on the platform first, then logged as `outbound` with its id.
    let a = c.ok(json!({"op": "send", "line": LINE, "text": "hi Ann", "from": AGENT}));
    assert_eq!(a["messageId"], json!("1"));
    assert_eq!(platform.text_of(1).as_deref(), Some("hi Ann"));
    let f = sub.frame();
    assert_eq!(f["event"]["kind"], json!("outbound"));
    assert_eq!(f["event"]["messageId"], json!("1"));
    assert_eq!(f["event"]["id"], a["id"]);
    assert_eq!(f["event"]["from"], json!(AGENT));

    // Edit: by platform id; the event names the original's metro id only
    // when the station knows it (this one keeps no id map).
    c.ok(json!({"op": "edit", "line": LINE, "messageId": "1", "text": "hi Ann!", "from": AGENT}));
    assert_eq!(platform.text_of(1).as_deref(), Some("hi Ann!"));
    let f = sub.frame();
    assert_eq!(f["event"]["kind"], json!("edit"));
    assert_eq!(f["event"]["messageId"], json!("1"));
    assert_eq!(f["event"]["text"], json!("hi Ann!"));
    // The station's own error goes to the client as is.
    c.err(
        json!({"op": "edit", "line": LINE, "messageId": "9", "text": "x", "from": AGENT}),
        "not_found",
    );

    // What it does not support is refused before anything is logged.
    let e = c.err(
        json!({"op": "react", "line": LINE, "messageId": "1", "emoji": "👍", "from": AGENT}),
        "unavailable",
    );
    assert!(e["message"].as_str().unwrap().contains("loopback"), "{e}");
    // Its line check is applied to its lines.
    c.err(
        json!({"op": "send", "line": "metro://loopback/a/b", "text": "x"}),
        "bad_request",
    );

    // The platform delivers post 7 again: the pipeline knows it is in the
    // log and counts it instead of storing it twice.
    platform.post(7, "lobby", "hello agents");
    let deadline = std::time::Instant::now() + PATIENCE;
    let counted = loop {
        let s = c.ok(json!({"op": "stats"}))["stations"]["loopback"].clone();
        if s["duplicates"] == json!(1) {
            break s;
        }
        assert!(std::time::Instant::now() < deadline, "not counted: {s}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(counted["received"], json!(1), "{counted}");

    // Nothing else reached the log in between: the next frame is this one.
    publish(&mut c, json!({"line": AGENT, "text": "marker"}));
    assert_eq!(sub.frame()["event"]["text"], json!("marker"));
}

/// The config's sections come from the registered kinds: `[loopback]` is
/// known once its kind is registered, the kind parses it (and refuses what
/// it does not know), and an unknown section names the known ones.
#[test]
fn a_registered_kind_brings_its_config_section() {
    let e = start_error("[loopback]\ngreting = \"typo\"\n");
    assert!(e.contains("[loopback]") && e.contains("greting"), "{e}");
    let e = start_error("[slack]\ntoken = \"xoxb-1\"\n");
    assert!(e.contains("unknown section [slack]"), "{e}");
    assert!(
        e.contains("[telegram], [discord], [loopback], [monitor], [cluster]"),
        "{e}"
    );
    assert!(!e.contains("xoxb"), "{e}");
}

/// The hops of the event `id`, from the frames of `sub` (in order).
fn hops_of(sub: &mut Client, id: &Value) -> u64 {
    loop {
        let f = sub.frame();
        if &f["event"]["id"] == id {
            return f["event"].get("hops").and_then(Value::as_u64).unwrap_or(0);
        }
    }
}

/// A registered kind's lines are station lines, as the built-in
/// platforms' are (the set comes from the registered kinds, not from a
/// list of names): an agent's send claims one, another identity may claim
/// it, an `inbound` event on it is a person's (0 hops: it starts a new
/// count for the loop guard). An agent's own line is none of these. Its
/// kind's line check answers for it, in every op that names a line.
#[test]
fn a_registered_kinds_lines_are_station_lines() {
    const B: &str = "metro://codex/user/b";
    let d = InProcess::start(Platform::new(), "");
    let mut c = d.connect();
    let mut sub = d.connect();
    sub.subscribe(json!({"follow": true, "since": "tail"}));

    // Auto-claim: on the free station line, not on an agent's line.
    let a = c.ok(json!({"op": "send", "line": LINE, "text": "hi", "from": AGENT}));
    assert_eq!(a["claim"], json!("claimed"), "{a}");
    let l = c.ok(json!({"op": "send", "line": B, "text": "hi", "from": AGENT}));
    assert_eq!(l["claim"], json!("off"), "{l}");
    let owners = c.ok(json!({"op": "claims"}));
    assert_eq!(owners["claims"][LINE], json!(AGENT), "{owners}");
    // Another identity may take the station line over; an agent's line
    // belongs to the agent it names.
    let cl = c.ok(json!({"op": "claim", "line": LINE, "as": B}));
    assert_eq!(cl["previous"], json!(AGENT), "{cl}");
    let e = c.err(json!({"op": "claim", "line": B, "as": AGENT}), "conflict");
    assert!(
        e["message"].as_str().unwrap().contains("is a local line"),
        "{e}"
    );

    // The loop guard: an agent's answer is hop 1; an `inbound` event on
    // the station line answering it is a person's (0 hops), the same on
    // an agent's line is hop 2.
    let first = publish(
        &mut c,
        json!({"line": B, "kind": "notify", "from": AGENT, "text": "q"}),
    );
    let answer = publish(
        &mut c,
        json!({"line": B, "kind": "notify", "from": AGENT, "text": "a",
               "replyTo": first["id"]}),
    );
    let person = publish(
        &mut c,
        json!({"line": LINE, "kind": "inbound", "from": "loopback/user/ann",
               "text": "p", "replyTo": answer["id"]}),
    );
    let agent = publish(
        &mut c,
        json!({"line": B, "kind": "inbound", "from": AGENT, "text": "x",
               "replyTo": answer["id"]}),
    );
    assert_eq!(hops_of(&mut sub, &answer["id"]), 1);
    assert_eq!(hops_of(&mut sub, &person["id"]), 0);
    assert_eq!(hops_of(&mut sub, &agent["id"]), 2);

    // Its kind's sentence, wherever a line is the target of an op.
    for req in [
        json!({"op": "send", "line": "loopback/a/b", "text": "x"}),
        json!({"op": "claim", "line": "loopback/a/b", "as": AGENT}),
        json!({"op": "publish", "event": {"line": "loopback/a/b", "text": "x"}}),
    ] {
        let e = c.err(req.clone(), "bad_request");
        assert!(
            e["message"]
                .as_str()
                .unwrap()
                .contains("loopback lines are metro://loopback/<room>"),
            "{req}: {e}"
        );
    }
}
