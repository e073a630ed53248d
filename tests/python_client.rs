//! An agent that is not Rust: examples/agent.py, the example people start
//! from, speaks the protocol with Python's standard library only. Here it
//! answers Telegram messages through metrod (the fake Bot API records what
//! it sent), metrod is restarted under it, and every message is answered
//! exactly once. (The protocol checks the retired tests/clients/agent.py
//! made — modes and direct delivery, claim/ifFree/conflict, explicit acks
//! and the cursor, `mode` without `as` — live in subscribe.rs, ops.rs and
//! bad_input.rs.)

mod common;
mod fake_telegram;

use std::collections::HashMap;
use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use fake_telegram::{text_update, Fake};
use serde_json::{json, Value};

const AGENT: &str = "metro://claude/user/py-agent";

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn agent_subscribed(d: &Daemon) -> bool {
    let Some(mut c) = Client::try_connect(&d.socket).ok() else {
        return false;
    };
    c.try_request(json!({"op": "stats"})).is_some_and(|s| {
        s["subscriptions"]
            .as_array()
            .is_some_and(|subs| subs.iter().any(|s| s["as"] == AGENT))
    })
}

/// Telegram message ids the fake was asked to answer, in order.
fn replied_to(fake: &Fake) -> Vec<i64> {
    fake.calls("sendMessage")
        .iter()
        .map(|c| {
            c.params["reply_parameters"]["message_id"]
                .as_i64()
                .unwrap_or(-1)
        })
        .collect()
}

fn stop(child: &mut Child) -> (Option<i32>, String) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = wait_timeout(child, PATIENCE).expect("agent.py did not stop on Ctrl-C");
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status.code(), err)
}

#[test]
fn the_example_agent_answers_each_message_once_across_a_metrod_restart() {
    let fake = Fake::start();
    let env = fake.env("42");
    let mut d = Daemon::start_env(&[], &env);
    let mut agent = Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/agent.py"))
        .args(["--as", AGENT, "--socket"])
        .arg(&d.socket)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 is needed for this test (.ci/run installs it)");
    wait_for("agent.py to subscribe", || agent_subscribed(&d));

    let mut next_mid = 100;
    let mut say = |fake: &Fake, text: &str| {
        next_mid += 1;
        fake.push(text_update(next_mid, 42, 42, "Ann", text));
        next_mid
    };
    for t in ["one", "two", "three"] {
        say(&fake, t);
    }
    wait_for("three answers", || fake.calls("sendMessage").len() >= 3);

    // metrod goes away under the agent; what Ann says meanwhile waits at
    // Telegram, and the agent answers it once metrod is back.
    d.stop();
    say(&fake, "while you were out");
    d.restart();
    wait_for("agent.py to subscribe again", || agent_subscribed(&d));
    for t in ["four", "five"] {
        say(&fake, t);
    }
    // Answers come in log order: once the last is answered, a repeat of an
    // earlier one would already have been sent.
    let last = say(&fake, "last");
    wait_for("the last answer", || replied_to(&fake).contains(&last));

    let want: Vec<i64> = (101..=last).collect();
    let mut got = replied_to(&fake);
    got.sort();
    assert_eq!(got, want, "each message answered exactly once");
    let texts: Vec<String> = fake
        .calls("sendMessage")
        .iter()
        .map(|c| c.params["text"].as_str().unwrap_or("").to_string())
        .collect();
    for t in [
        "one",
        "two",
        "three",
        "while you were out",
        "four",
        "five",
        "last",
    ] {
        assert!(texts.contains(&format!("got it: {t}")), "{t}: {texts:?}");
    }
    // Everything answered was acknowledged: the cursor passes the last
    // message (the agent acks after metrod answered its send, and metrod
    // answers once the reply is in the log).
    let mut c = d.connect();
    let last_inbound_end = {
        let sub = c.subscribe(json!({"since": "start", "ack": "none"}));
        let (frames, _) = c.drain(&sub);
        frames
            .iter()
            .filter(|f| f["event"]["kind"] == "inbound")
            .map(|f| f["offset"].as_u64().unwrap())
            .max()
            .unwrap()
    };
    wait_for("the cursor past the last message", || {
        c.ok(json!({"op": "cursor", "as": AGENT}))["offset"]
            .as_u64()
            .is_some_and(|o| o >= last_inbound_end)
    });

    // The log agrees: one outbound reply per inbound message, from the agent.
    let log = d.history();
    let mut replies: HashMap<String, usize> = HashMap::new();
    for e in log.iter().filter(|e| e["kind"] == "outbound") {
        assert_eq!(e["from"], AGENT, "{e}");
        *replies
            .entry(e["replyTo"].as_str().unwrap_or("").to_string())
            .or_default() += 1;
    }
    let inbound: Vec<&Value> = log.iter().filter(|e| e["kind"] == "inbound").collect();
    assert_eq!(inbound.len(), want.len());
    for e in inbound {
        let mid = e["messageId"].as_str().unwrap();
        assert_eq!(replies.get(mid), Some(&1), "replies to {mid}: {replies:?}");
    }
    let (code, err) = stop(&mut agent);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        err.matches("metrod is gone").count(),
        1,
        "said so once: {err}"
    );
    assert!(err.contains("stopped"), "{err}");
}
