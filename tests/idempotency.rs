//! Idempotency keys against a real daemon and a fake Telegram: a repeated
//! key answers the first event and does nothing, concurrent repeats go
//! through once, failures are not remembered, bad keys are refused, and
//! `metroctl` retries with the same key when metrod dies between the
//! append and the answer — one message on Telegram after the restart.

mod common;
mod fake_telegram;

use std::io::{BufRead, BufReader};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::mpsc;

use common::*;
use fake_telegram::*;
use serde_json::{json, Value};

const A: &str = "metro://claude/user/a";
const B: &str = "metro://codex/user/b";

fn start(fake: &Fake, args: &[&str]) -> Daemon {
    let env = fake.env("42");
    let d = Daemon::start_env(args, &env);
    fake.watch_log(d.history_path());
    d
}

fn outbound(d: &Daemon) -> Vec<Value> {
    d.history()
        .into_iter()
        .filter(|e| e["kind"] == "outbound")
        .collect()
}

#[test]
fn a_repeated_key_answers_the_first_event_and_does_nothing() {
    let d = Daemon::start();
    let mut c = d.connect();
    let send = json!({"op": "send", "line": "codex/user/b", "text": "hi", "from": A, "noClaim": true, "idempotencyKey": "k1"});
    let first = c.ok(send.clone());
    assert!(first.get("duplicate").is_none());
    let again = c.ok(send.clone());
    assert_eq!(again["duplicate"], true, "{again}");
    assert_eq!(again["id"], first["id"]);
    assert_eq!(again["messageId"], first["messageId"]);
    assert_eq!(again["offset"], first["offset"]);
    let log = d.history();
    assert_eq!(log.len(), 1, "nothing appended for the duplicate");
    assert_eq!(log[0]["idempotencyKey"], "k1");

    // The key belongs to an identity: another one's is a new request.
    let other = c.ok(json!({"op": "send", "line": "codex/user/b", "text": "hi", "from": B, "noClaim": true, "idempotencyKey": "k1"}));
    assert!(other.get("duplicate").is_none());
    // edit and react; publish by `event.from` (either place for the key).
    let e = json!({"op": "edit", "line": "codex/user/b", "messageId": first["id"], "text": "hi!", "from": A, "idempotencyKey": "k2"});
    let e1 = c.ok(e.clone());
    assert_eq!(c.ok(e)["id"], e1["id"]);
    let r = json!({"op": "react", "line": "codex/user/b", "messageId": first["id"], "emoji": "👍", "from": A, "idempotencyKey": "k3"});
    let r1 = c.ok(r.clone());
    assert_eq!(c.ok(r)["duplicate"], true);
    let p1 = c.ok(json!({"op": "publish", "idempotencyKey": "p", "event": {"line": "claude/user/a", "from": B, "text": "x"}}));
    let p2 = c.ok(json!({"op": "publish", "event": {"line": "claude/user/a", "from": B, "text": "x", "idempotencyKey": "p"}}));
    assert_eq!(p2["duplicate"], true);
    assert_eq!(p2["id"], p1["id"]);
    let ids: Vec<Value> = d.history().iter().map(|e| e["id"].clone()).collect();
    assert_eq!(
        ids,
        vec![
            first["id"].clone(),
            other["id"].clone(),
            e1["id"].clone(),
            r1["id"].clone(),
            p1["id"].clone()
        ]
    );

    // Keys must be 1 to 128 bytes (a connection of its own: these
    // requests are outside the schema on purpose).
    let mut bad = d.connect();
    let long = "k".repeat(129);
    bad.err(
        json!({"op": "send", "line": "codex/user/b", "text": "x", "idempotencyKey": long}),
        "bad_request",
    );
    bad.err(json!({"op": "react", "line": "codex/user/b", "messageId": first["id"], "emoji": "x", "idempotencyKey": ""}), "bad_request");
    bad.err(json!({"op": "publish", "idempotencyKey": "a", "event": {"line": "claude/user/a", "idempotencyKey": "b"}}), "bad_request");
    bad.err(
        json!({"op": "send", "line": "codex/user/b", "text": "x", "idempotencyKey": 7}),
        "bad_request",
    );
    c.ok(json!({"op": "send", "line": "codex/user/b", "text": "x", "idempotencyKey": "k".repeat(128)}));
    check_schema(&c, &d);
}

#[test]
fn concurrent_repeats_go_through_once_and_failures_are_forgotten() {
    let fake = Fake::start();
    let d = start(&fake, &[]);
    // Five connections send the same key at once: one sendMessage.
    let mut clients: Vec<Client> = (0..5).map(|_| d.connect()).collect();
    for c in clients.iter_mut() {
        c.send(&json!({"op": "send", "req": 1, "line": "telegram/42", "text": "once", "from": A, "idempotencyKey": "same"}));
    }
    let answers: Vec<Value> = clients
        .iter_mut()
        .map(|c| c.answer_to(&json!(1)).expect("an answer"))
        .collect();
    assert!(answers.iter().all(|a| a["ok"] == true), "{answers:?}");
    assert!(answers.iter().all(|a| a["id"] == answers[0]["id"]));
    let dups = answers.iter().filter(|a| a["duplicate"] == true).count();
    assert_eq!(dups, 4, "{answers:?}");
    assert_eq!(fake.calls("sendMessage").len(), 1);
    assert_eq!(outbound(&d).len(), 1);

    // A failed send is not remembered: the retry goes out.
    fake.fail_next(
        "sendMessage",
        1,
        400,
        api_error(400, "Bad Request: chat not found"),
    );
    let mut c = d.connect();
    let req = json!({"op": "send", "line": "telegram/42", "text": "retry me", "from": A, "idempotencyKey": "flaky"});
    c.err(req.clone(), "upstream");
    let ok = c.ok(req.clone());
    assert!(ok.get("duplicate").is_none(), "{ok}");
    assert_eq!(c.ok(req)["duplicate"], true);
    let texts: Vec<String> = fake
        .calls("sendMessage")
        .iter()
        .map(|c| param(&c.params, "text").as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        texts,
        vec!["once", "retry me", "retry me"],
        "the failed call, then one retry"
    );
    assert_eq!(outbound(&d).len(), 2);
}

/// A socket between metroctl and metrod that withholds the answer on its
/// first connection, as if metrod had died between the append and the
/// answer; later connections pass through.
struct Proxy {
    path: PathBuf,
    withheld: mpsc::Receiver<String>,
    release: mpsc::Sender<()>,
}

fn pipe(mut from: UnixStream, mut to: UnixStream) {
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(std::net::Shutdown::Write);
    });
}

fn proxy(dir: &std::path::Path, upstream: PathBuf) -> Proxy {
    let path = dir.join("proxy.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let (wtx, withheld) = mpsc::channel();
    let (release, rrx) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        let (client, _) = listener.accept().unwrap();
        let up = UnixStream::connect(&upstream).unwrap();
        pipe(client.try_clone().unwrap(), up.try_clone().unwrap());
        let mut answer = String::new();
        BufReader::new(up).read_line(&mut answer).unwrap();
        wtx.send(answer).unwrap();
        let _ = rrx.recv();
        // The connection drops without the answer.
        let _ = client.shutdown(std::net::Shutdown::Both);
        for conn in listener.incoming() {
            let Ok(client) = conn else { return };
            let up = UnixStream::connect(&upstream).unwrap();
            pipe(client.try_clone().unwrap(), up.try_clone().unwrap());
            pipe(up, client);
        }
    });
    Proxy {
        path,
        withheld,
        release,
    }
}

#[test]
fn metroctl_retries_with_its_key_across_a_kill_between_append_and_answer() {
    let fake = Fake::start();
    let mut d = start(&fake, &[]);
    let tmp = tempfile::tempdir().unwrap();
    let p = proxy(tmp.path(), d.socket.clone());
    let mut ctl = std::process::Command::new(METROCTL);
    ctl.arg("--socket")
        .arg(&p.path)
        .args(["send", "telegram/42", "deployed", "--from", A])
        .env_remove("METRO_AS")
        .env_remove("METRO_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = ctl.spawn().unwrap();

    // metrod sent to Telegram, appended, answered; the answer is lost.
    let answer: Value = serde_json::from_str(&p.withheld.recv_timeout(PATIENCE).unwrap()).unwrap();
    assert_eq!(answer["ok"], true, "{answer}");
    assert_eq!(fake.calls("sendMessage").len(), 1);
    let logged = outbound(&d);
    assert_eq!(logged.len(), 1);
    let key = logged[0]["idempotencyKey"]
        .as_str()
        .expect("metroctl sent a key");
    assert!(key.starts_with("metroctl-"), "{key}");
    d.kill9();
    d.restart();
    p.release.send(()).unwrap();

    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("same idempotency key"), "{stderr}");
    let retried: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(retried["duplicate"], true, "{retried}");
    assert_eq!(retried["id"], answer["id"]);
    assert_eq!(retried["messageId"], answer["messageId"]);
    assert_eq!(retried["offset"], answer["offset"]);
    // One message on Telegram, one event in the log.
    assert_eq!(fake.calls("sendMessage").len(), 1);
    assert_eq!(outbound(&d).len(), 1);

    // Without a drop, each invocation is its own request.
    run_ok(&mut metroctl(
        &d,
        &["send", "telegram/42", "deployed", "--from", A],
    ));
    assert_eq!(fake.calls("sendMessage").len(), 2);
    let keys: Vec<Value> = outbound(&d)
        .iter()
        .map(|e| e["idempotencyKey"].clone())
        .collect();
    assert_ne!(keys[0], keys[1]);

    // metroctl publish keeps a key the event carries, and sends one.
    let ev = r#"{"line":"claude/user/a","text":"once","idempotencyKey":"mine"}"#;
    let first: Value =
        serde_json::from_slice(&run_ok(&mut metroctl(&d, &["publish", ev])).stdout).unwrap();
    let again: Value =
        serde_json::from_slice(&run_ok(&mut metroctl(&d, &["publish", ev])).stdout).unwrap();
    assert_eq!(again["duplicate"], true, "{again}");
    assert_eq!(again["id"], first["id"]);
    let own = d
        .history()
        .into_iter()
        .filter(|e| e["text"] == "once" && e["line"] == "metro://claude/user/a")
        .count();
    assert_eq!(own, 1);
}
