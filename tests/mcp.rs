//! `metroctl mcp`, the Claude Code channel, driven as a subprocess over
//! stdio against a real metrod. The MCP client here is a small scripted
//! JSON-RPC client, independent of rmcp (the SDK the bridge is built on), so
//! a serialization slip in rmcp cannot hide behind the same SDK on both
//! sides, and every byte on the bridge's stdout is checked to be one MCP
//! message. It speaks protocol version 2025-06-18, as Claude Code does.

mod common;
mod fake_discord;
mod fake_telegram;

use std::collections::{HashSet, VecDeque};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const ME: &str = "metro://claude/user/me";
const OTHER: &str = "metro://codex/user/other";

/// One `metroctl mcp` process and the client side of its stdio.
struct Mcp {
    child: Child,
    stdin: Option<ChildStdin>,
    rx: mpsc::Receiver<Result<Value, String>>,
    next_id: u64,
    /// Notifications read while waiting for something else.
    notes: VecDeque<Value>,
    stderr_path: std::path::PathBuf,
}

impl Mcp {
    fn spawn(d: &Daemon, args: &[&str]) -> Mcp {
        let stderr_path = d.dir.with_file_name(format!(
            "mcp-stderr-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
        let mut cmd = metroctl(d, &["mcp"]);
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr);
        let mut child = cmd.spawn().expect("spawn metroctl mcp");
        let stdout = child.stdout.take().expect("stdout");
        let stdin = child.stdin.take();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let parsed = serde_json::from_str::<Value>(&line)
                    .ok()
                    .filter(|v| v["jsonrpc"] == "2.0")
                    .ok_or(line);
                if tx.send(parsed).is_err() {
                    break;
                }
            }
        });
        Mcp {
            child,
            stdin,
            rx,
            next_id: 1,
            notes: VecDeque::new(),
            stderr_path,
        }
    }

    /// Spawns and completes the handshake; returns the `initialize` result.
    fn start(d: &Daemon, args: &[&str]) -> (Mcp, Value) {
        let mut m = Mcp::spawn(d, args);
        let init = m.request(
            "initialize",
            json!({"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "metro-test", "version": "1"}}),
        );
        m.send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        (m, init)
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    fn send(&mut self, v: Value) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        let mut line = serde_json::to_vec(&v).unwrap();
        line.push(b'\n');
        stdin.write_all(&line).expect("write to bridge");
        stdin.flush().expect("flush to bridge");
    }

    /// Next message within `limit`; panics on a stdout line that is not MCP.
    fn next_within(&mut self, limit: Duration) -> Option<Value> {
        match self.rx.recv_timeout(limit) {
            Ok(Ok(v)) => Some(v),
            Ok(Err(line)) => panic!("stdout carried a line that is not an MCP message: {line:?}"),
            Err(_) => None,
        }
    }

    fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(msg) = self.next_within(left) else {
                panic!("no answer to {method}: {}", self.stderr());
            };
            if msg.get("id") == Some(&json!(id)) {
                assert!(msg.get("error").is_none(), "{method} failed: {msg}");
                return msg["result"].clone();
            }
            self.notes.push_back(msg);
        }
    }

    fn call(&mut self, tool: &str, args: Value) -> Value {
        self.request("tools/call", json!({"name": tool, "arguments": args}))
    }

    /// A tool call that must succeed; returns its text.
    fn call_ok(&mut self, tool: &str, args: Value) -> String {
        let r = self.call(tool, args);
        assert_ne!(r["isError"], true, "{tool} failed: {r}");
        r["content"][0]["text"].as_str().unwrap_or("").to_string()
    }

    /// A tool call that must fail; returns its text.
    fn call_err(&mut self, tool: &str, args: Value) -> String {
        let r = self.call(tool, args);
        assert_eq!(r["isError"], true, "{tool} should fail: {r}");
        r["content"][0]["text"].as_str().unwrap_or("").to_string()
    }

    /// The next notification with `method`, within PATIENCE.
    fn notification(&mut self, method: &str) -> Value {
        self.notification_within(method, PATIENCE)
            .unwrap_or_else(|| panic!("no {method} notification: {}", self.stderr()))
    }

    fn notification_within(&mut self, method: &str, limit: Duration) -> Option<Value> {
        if let Some(i) = self.notes.iter().position(|n| n["method"] == method) {
            return self.notes.remove(i).map(|n| n["params"].clone());
        }
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let msg = self.next_within(left)?;
            if msg["method"] == method {
                return Some(msg["params"].clone());
            }
            self.notes.push_back(msg);
        }
    }

    /// The next channel notification; never one of the session's own
    /// events (no echo: its replies and relay questions are not pushed back).
    fn channel(&mut self) -> Value {
        let n = self.notification("notifications/claude/channel");
        assert_ne!(
            n["meta"]["from"], ME,
            "the session's own event came back: {n}"
        );
        n
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Mcp {
    fn drop(&mut self) {
        self.kill9();
        let _ = std::fs::remove_file(&self.stderr_path);
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::SeqCst)
}

fn chat(line: &str, text: &str, mid: &str) -> Value {
    json!({"line": line, "from": "metro://telegram/user/7", "fromName": "Ann",
           "text": text, "messageId": mid})
}

#[test]
fn initialize_declares_the_channel_tools_and_instructions() {
    let d = Daemon::start();
    let (mut m, init) = Mcp::start(&d, &["--as", ME]);
    assert_eq!(init["serverInfo"]["name"], "metro");
    assert!(init["capabilities"]["tools"].is_object(), "{init}");
    assert_eq!(
        init["capabilities"]["experimental"]["claude/channel"],
        json!({})
    );
    assert!(init["capabilities"]["experimental"]
        .get("claude/channel/permission")
        .is_none());
    let instructions = init["instructions"].as_str().unwrap();
    for word in [
        "reply",
        "line",
        "messageId",
        "claim",
        "release",
        "own messages",
    ] {
        assert!(
            instructions.contains(word),
            "instructions lack {word}: {instructions}"
        );
    }
    let tools = m.request("tools/list", json!({}));
    let names: HashSet<&str> = tools["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            assert_eq!(t["inputSchema"]["type"], "object", "{t}");
            assert!(!t["description"].as_str().unwrap().is_empty());
            t["name"].as_str().unwrap()
        })
        .collect();
    let want: HashSet<&str> = [
        "reply", "send", "edit", "react", "download", "history", "claim", "release", "claims",
        "stations",
    ]
    .into();
    assert_eq!(names, want);
    let reply = tools["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "reply")
        .unwrap();
    assert_eq!(reply["inputSchema"]["required"], json!(["line", "text"]));

    let (_m2, init) = Mcp::start(&d, &["--as", ME, "--permission-relay"]);
    assert_eq!(
        init["capabilities"]["experimental"]["claude/channel/permission"],
        json!({})
    );
}

#[test]
fn nothing_is_pushed_before_initialized_then_events_arrive_as_notifications() {
    let d = Daemon::start_with(&[]);
    let mut c = d.connect();
    // Waiting before the bridge starts: delivered when it starts.
    publish(&mut c, chat("metro://telegram/42", "deploy?", "10"));
    let mut m = Mcp::spawn(&d, &["--as", ME, "--include-webhooks"]);
    m.request(
        "initialize",
        json!({"protocolVersion": "2025-06-18", "capabilities": {},
               "clientInfo": {"name": "metro-test", "version": "1"}}),
    );
    assert!(
        m.notification_within("notifications/claude/channel", Duration::from_millis(500))
            .is_none(),
        "pushed before notifications/initialized"
    );
    m.send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
    let n = m.channel();
    assert_eq!(n["content"], "deploy?");
    let meta = n["meta"].as_object().unwrap();
    assert_eq!(meta["line"], "metro://telegram/42");
    assert_eq!(meta["messageId"], "10");
    assert_eq!(meta["from"], "metro://telegram/user/7");
    assert_eq!(meta["fromName"], "Ann");
    assert_eq!(meta["kind"], "inbound");
    assert_eq!(meta["station"], "telegram");
    assert!(meta["id"].as_str().unwrap().starts_with("msg_"));
    assert!(meta["ts"].as_str().unwrap().ends_with('Z'));
    for (k, v) in meta {
        assert!(v.is_string(), "{k} is not a string: {v}");
        assert!(
            k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{k} is not identifier-safe"
        );
    }
    assert!(meta.get("replyTo").is_none(), "a key without a value: {n}");

    let line = "metro://telegram/42";
    publish(
        &mut c,
        json!({"line": line, "kind": "edit", "messageId": "10", "text": "deploy now?", "from": "metro://telegram/user/7"}),
    );
    assert_eq!(m.channel()["content"], "edited 10: deploy now?");
    publish(
        &mut c,
        json!({"line": line, "kind": "react", "messageId": "10", "emoji": "👍", "from": "metro://telegram/user/7"}),
    );
    assert_eq!(m.channel()["content"], "reacted 👍 to 10");
    publish(
        &mut c,
        json!({"line": line, "kind": "callback", "messageId": "11", "text": "approve", "from": "metro://telegram/user/7"}),
    );
    assert_eq!(m.channel()["content"], "pressed \"approve\" on 11");
    publish(
        &mut c,
        json!({"line": line, "text": "the log", "messageId": "12", "replyTo": "10",
        "lineName": "Ann", "from": "metro://telegram/user/7",
        "attachments": [{"type": "document", "name": "build.log", "size": 2048, "fileId": "f1"}]}),
    );
    let n = m.channel();
    assert_eq!(n["content"], "the log\n[document build.log, 2.0 KB]");
    assert_eq!(n["meta"]["replyTo"], "10");
    assert_eq!(n["meta"]["lineName"], "Ann");
    publish(
        &mut c,
        json!({"line": "metro://webhook/gh", "text": "push org/repo by ann", "from": "metro://webhook/gh"}),
    );
    let n = m.channel();
    assert_eq!(n["content"], "push org/repo by ann");
    assert_eq!(n["meta"]["station"], "webhook");
}

#[test]
fn a_bridge_killed_mid_burst_delivers_every_event_again_in_log_order() {
    let d = Daemon::start();
    let mut c = d.connect();
    let line = "metro://telegram/5";
    let (mut m, _) = Mcp::start(&d, &["--as", ME]);
    // The burst is published while the bridge pushes it, and the bridge is
    // killed part way through.
    let publisher = std::thread::spawn(move || {
        (0..1000)
            .map(|i| {
                let a = publish(
                    &mut c,
                    json!({"line": line, "text": format!("e{i}"), "from": "metro://telegram/user/5"}),
                );
                a["id"].as_str().unwrap().to_string()
            })
            .collect::<Vec<String>>()
    });
    let mut first: Vec<String> = Vec::new();
    while first.len() < 300 {
        let n = m.notification("notifications/claude/channel");
        first.push(n["meta"]["id"].as_str().unwrap().to_string());
    }
    m.kill9();
    // Whatever it wrote before dying also counts as seen.
    while let Ok(Ok(n)) = m.rx.try_recv() {
        if n["method"] == "notifications/claude/channel" {
            first.push(n["params"]["meta"]["id"].as_str().unwrap_or("").to_string());
        }
    }
    let ids = publisher.join().unwrap();
    let (mut m, _) = Mcp::start(&d, &["--as", ME]);
    let mut second: Vec<String> = Vec::new();
    let mut seen: HashSet<String> = first.iter().cloned().collect();
    while !ids.iter().all(|id| seen.contains(id)) {
        let n = m.notification("notifications/claude/channel");
        let id = n["meta"]["id"].as_str().unwrap().to_string();
        seen.insert(id.clone());
        second.push(id);
    }
    let order = |seen: &[String]| {
        let pos: Vec<usize> = seen
            .iter()
            .map(|id| ids.iter().position(|x| x == id).expect("a published id"))
            .collect();
        assert!(pos.windows(2).all(|w| w[0] < w[1]), "not in log order");
    };
    order(&first);
    order(&second);
    let all: HashSet<&String> = first.iter().chain(second.iter()).collect();
    for id in &ids {
        assert!(all.contains(id), "{id} never arrived");
    }
    // The second run resumed from the cursor, not from the start.
    assert!(
        second.len() < ids.len(),
        "replayed everything: {}",
        second.len()
    );
}

#[test]
fn every_tool_works_on_local_lines_and_a_claim_conflict_is_an_error_result() {
    let d = Daemon::start();
    let (mut m, _) = Mcp::start(&d, &["--as", ME]);
    let peer = "metro://codex/user/bob";
    // send / reply on a local line.
    let sent: Value =
        serde_json::from_str(&m.call_ok("send", json!({"line": peer, "text": "review PR 12?"})))
            .unwrap();
    let mid = sent["messageId"].as_str().unwrap().to_string();
    let reply: Value = serde_json::from_str(&m.call_ok(
        "reply",
        json!({"line": peer, "text": "and the tests", "messageId": mid}),
    ))
    .unwrap();
    assert!(reply["id"].as_str().unwrap().starts_with("msg_"));
    m.call_ok(
        "edit",
        json!({"line": peer, "messageId": mid, "text": "review PR 13?"}),
    );
    m.call_ok(
        "react",
        json!({"line": peer, "messageId": mid, "emoji": "👀"}),
    );
    let log = d.history();
    let mine: Vec<&Value> = log.iter().filter(|e| e["line"] == peer).collect();
    assert_eq!(mine.len(), 4, "{log:?}");
    assert!(mine.iter().all(|e| e["from"] == ME));
    assert_eq!(mine[1]["replyTo"], json!(mid));
    assert_eq!(mine[2]["kind"], "edit");
    assert_eq!(mine[3]["emoji"], "👀");

    // history: newest first, filtered by text.
    let h = m.call_ok("history", json!({"line": peer, "text": "PR 13"}));
    assert_eq!(h.lines().count(), 1, "{h}");
    assert!(h.contains("review PR 13?"));

    // claim / claims / release, and a conflict.
    let chat_line = "metro://telegram/77";
    m.call_ok("claim", json!({"line": chat_line}));
    assert!(m.call_ok("claims", json!({})).contains(ME));
    d.connect()
        .ok(json!({"op": "claim", "line": chat_line, "as": OTHER}));
    let e = m.call_err("claim", json!({"line": chat_line, "ifFree": true}));
    assert!(e.starts_with("conflict:"), "{e}");
    assert!(e.contains(OTHER), "{e}");
    let r: Value = serde_json::from_str(&m.call_ok("release", json!({"line": chat_line}))).unwrap();
    assert_eq!(r["released"], true);

    // A bad line comes back as the daemon's bad_request.
    let e = m.call_err("send", json!({"line": "http://x", "text": "hi"}));
    assert!(e.starts_with("bad_request:"), "{e}");
    // Missing arguments too.
    let e = m.call_err("edit", json!({"line": peer}));
    assert!(e.starts_with("bad_request:"), "{e}");
    // stations in words; download on a local line is the daemon's error.
    let s = m.call_ok("stations", json!({}));
    assert!(s.contains("local: ok"), "{s}");
    let e = m.call_err("download", json!({"line": peer, "messageId": mid}));
    assert!(e.starts_with("bad_request:"), "{e}");
}

#[test]
fn telegram_tools_go_through_the_station() {
    use fake_telegram::*;
    let fake = Fake::start();
    let env = fake.env("7");
    let d = Daemon::start_env(&[], &env);
    fake.watch_log(d.history_path());
    wait_station_status(&d, "telegram", "ok", |s| s == "ok");
    let (mut m, _) = Mcp::start(&d, &["--as", ME]);
    fake.push(text_update(10, 7, 7, "Ann", "deploy?"));
    let n = m.channel();
    assert_eq!(n["content"], "deploy?");
    let line = n["meta"]["line"].as_str().unwrap().to_string();
    let mid = n["meta"]["messageId"].as_str().unwrap().to_string();
    let answer: Value = serde_json::from_str(&m.call_ok(
        "reply",
        json!({"line": line, "text": "deploying", "messageId": mid, "buttons": ["Stop"]}),
    ))
    .unwrap();
    assert_eq!(answer["claim"], "claimed");
    let calls = fake.wait_calls("sendMessage", 1);
    assert_eq!(param(&calls[0].params, "text"), "deploying");
    let sent_id = answer["messageId"].as_str().unwrap().to_string();
    m.call_ok(
        "edit",
        json!({"line": line, "messageId": sent_id, "text": "deployed"}),
    );
    fake.wait_calls("editMessageText", 1);
    m.call_ok(
        "react",
        json!({"line": line, "messageId": mid, "emoji": "👍"}),
    );
    fake.wait_calls("setMessageReaction", 1);
    // download: a message with a file.
    fake.add_file("file-1", "docs/build.log", b"all green");
    fake.push(json!({"message": message(11, private(7, "Ann"), user(7, "Ann"),
        json!({"document": {"file_id": "file-1", "file_unique_id": "u1", "file_name": "build.log", "file_size": 9}}))}));
    let n = m.channel();
    assert!(
        n["content"]
            .as_str()
            .unwrap()
            .contains("[document build.log"),
        "{n}"
    );
    let out = tempfile::tempdir().unwrap();
    let files = m.call_ok(
        "download",
        json!({"line": line, "messageId": "11", "outDir": out.path().to_str().unwrap()}),
    );
    assert_eq!(std::fs::read(files.trim()).unwrap(), b"all green");
}

#[test]
fn discord_reply_goes_through_the_station() {
    use fake_discord::*;
    let fake = Fake::start();
    let env = fake.env("*");
    let d = Daemon::start_env(&[], &env);
    wait_station_status(&d, "discord", "ok", |s| s == "ok");
    let (mut m, _) = Mcp::start(&d, &["--as", ME]);
    let line = "metro://discord/4242";
    let answer: Value =
        serde_json::from_str(&m.call_ok("reply", json!({"line": line, "text": "hello discord"})))
            .unwrap();
    assert!(answer["messageId"].as_str().is_some(), "{answer}");
    let posts = fake.calls_to("POST", "/api/v10/channels/4242/messages");
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0].body["content"], "hello discord");
}

/// Waits for the relay's question on the fake Telegram; returns its call.
fn question(fake: &fake_telegram::Fake, n: usize) -> fake_telegram::Call {
    fake.wait_calls("sendMessage", n)
        .into_iter()
        .nth(n - 1)
        .unwrap()
}

#[test]
fn permission_relay_round_trip_through_telegram() {
    use fake_telegram::*;
    let fake = Fake::start();
    let env = fake.env("7");
    let d = Daemon::start_env(&[], &env);
    fake.watch_log(d.history_path());
    wait_station_status(&d, "telegram", "ok", |s| s == "ok");
    let (mut m, _) = Mcp::start(&d, &["--as", ME, "--permission-relay"]);
    // The approver line: where a chat message last arrived.
    fake.push(text_update(10, 7, 7, "Ann", "hi"));
    m.channel();

    // 1. A button press allows.
    m.send(
        json!({"jsonrpc": "2.0", "method": "notifications/claude/channel/permission_request",
        "params": {"request_id": "abcde", "tool_name": "Bash", "description": "run the tests",
                   "input_preview": "cargo test"}}),
    );
    let q = question(&fake, 1);
    let text = param(&q.params, "text");
    let text = text.as_str().unwrap();
    assert!(
        text.contains("Bash") && text.contains("cargo test") && text.contains("yes abcde"),
        "{text}"
    );
    let keyboard = &q.params["reply_markup"]["inline_keyboard"][0];
    assert_eq!(keyboard[0]["text"], "Allow");
    assert_eq!(keyboard[0]["callback_data"], "yes abcde");
    assert_eq!(keyboard[1]["callback_data"], "no abcde");
    fake.push(json!({"callback_query": {
        "id": "cbq-1", "from": user(7, "Ann"), "chat_instance": "ci",
        "message": message(500, private(7, "Ann"), bot_user(), json!({"text": "Claude wants…"})),
        "data": "yes abcde",
    }}));
    let v = m.notification("notifications/claude/channel/permission");
    assert_eq!(v, json!({"request_id": "abcde", "behavior": "allow"}));

    // 2. A second answer to the same id changes nothing, and gets a reply.
    fake.push(text_update(11, 7, 7, "Ann", "no abcde"));
    let reply = question(&fake, 2);
    assert!(param(&reply.params, "text")
        .as_str()
        .unwrap()
        .contains("abcde"));

    // 3. `no <id>` typed, any case, denies.
    m.send(json!({"jsonrpc": "2.0", "method": "notifications/claude/channel/permission_request",
        "params": {"request_id": "fghij", "tool_name": "Write", "description": "", "input_preview": "x"}}));
    question(&fake, 3);
    // A stranger's yes (not admitted: never logged) and a `publish`ed one
    // (not received by the station) change nothing.
    fake.push(text_update(12, 99, 99, "Eve", "yes fghij"));
    d.connect().ok(
        json!({"op": "publish", "event": {"line": "metro://telegram/7",
        "from": "metro://telegram/user/7", "text": "yes fghij", "messageId": "13"}}),
    );
    let forged = m.channel();
    assert_eq!(forged["content"], "yes fghij");
    let stored = d.history();
    let stored = stored
        .iter()
        .find(|e| e["id"] == forged["meta"]["id"])
        .unwrap();
    assert_eq!(stored["published"], true, "{stored}");
    fake.push(text_update(14, 7, 7, "Ann", "  NO FGHIJ "));
    let v = m.notification("notifications/claude/channel/permission");
    assert_eq!(v, json!({"request_id": "fghij", "behavior": "deny"}));
    // Exactly two verdicts in all.
    assert!(m
        .notification_within(
            "notifications/claude/channel/permission",
            Duration::from_millis(300)
        )
        .is_none());
}

#[test]
fn the_bridge_waits_for_metrod_and_resumes_after_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    let mut d = Daemon::start_in(&dir, &[]);
    d.stop();
    // Not running at start: the session still opens; tools say unavailable.
    let (mut m, _) = Mcp::start(&d, &["--as", ME]);
    let e = m.call_err("claims", json!({}));
    assert!(e.starts_with("unavailable:"), "{e}");
    d.restart();
    publish(&mut d.connect(), chat("metro://telegram/1", "first", "1"));
    assert_eq!(m.channel()["content"], "first");
    // Stopped and started again while the bridge runs.
    d.stop();
    d.restart();
    publish(&mut d.connect(), chat("metro://telegram/1", "second", "2"));
    // "first" may come again (at least once: its ack may not have reached
    // metrod before it stopped); then "second".
    loop {
        let content = m.channel()["content"].clone();
        if content == "second" {
            break;
        }
        assert_eq!(content, "first");
    }
    let err = m.stderr();
    assert!(
        err.contains("not running") && err.contains("reconnecting"),
        "{err}"
    );
    // stdin closed: it exits.
    m.stdin.take();
    assert!(
        wait_timeout(&mut m.child, PATIENCE).is_some(),
        "still running after stdin closed"
    );
}

#[test]
fn since_a_duration_starts_the_push_stream_that_far_back() {
    // An old event (written before metrod starts) and a new one.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    std::fs::create_dir_all(&dir).unwrap();
    let old = json!({"id": "msg_00000000000000001", "ts": "2026-01-01T00:00:00.000Z",
        "station": "telegram", "kind": "inbound", "line": "metro://telegram/42",
        "from": "metro://telegram/user/7", "to": "metro://telegram/42", "text": "old"});
    std::fs::write(dir.join("history.jsonl"), format!("{old}\n")).unwrap();
    let d = Daemon::start_in(&dir, &[]);
    let mut c = d.connect();
    publish(&mut c, chat("metro://telegram/42", "new", "2"));
    let (mut m, _) = Mcp::start(&d, &["--as", ME, "--since", "1h"]);
    assert_eq!(m.channel()["content"], "new");
    // Without --since the cursor (none yet: the start) decides.
    drop(m);
    let (mut m, _) = Mcp::start(&d, &["--as", "metro://claude/user/other"]);
    assert_eq!(m.channel()["content"], "old");
}
