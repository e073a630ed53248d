//! Hardening (issue 14, item 9): Discord REST answers with only the fields
//! metro uses are good enough (tests/fake_discord `minimal_answers`):
//! `GET /users/@me` only `id` and `username`, a created or edited message
//! only `id`, a message read back only `id`, `attachments` and
//! `reactions`, READY only `user` (`id`, `username`) and `session_id`
//! (serenity cannot read that one; metro does). Gateway dispatches and message listings (`fetch`, the
//! read-back after READY) with only the fields metro reads are stored;
//! one that lacks such a field is logged by id and skipped, and the rest
//! goes on.

mod common;
mod fake_discord;

use common::*;
use fake_discord::*;
use serde_json::{json, Value};

const CH: u64 = 1_184_011_225_150_619_740;
const GUILD: u64 = 1_184_011_225_150_619_700;
const ANN: u64 = 204_981_117_012_345_678;

#[test]
fn minimal_answers_to_every_call_are_enough() {
    let fake = Fake::start();
    fake.minimal_answers(true);
    let env = fake.env("*");
    let d = Daemon::start_env(&[], &env);
    fake.wait_ready(1);
    wait_station_status(&d, "discord", "ok", |s| s == "ok");
    assert_eq!(station_row(&d, "discord")["bot"], format!("@{BOT_NAME}"));
    // The session runs on a READY serenity could not read.
    let log = d.stderr();
    assert!(log.contains("serenity could not read READY"), "{log}");
    let line = format!("metro://discord/{CH}");
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("n.txt");
    std::fs::write(&file, b"notes").unwrap();
    let mut c = d.connect();
    let from = "metro://claude/user/a";
    let sent = c.ok(
        json!({"op": "send", "line": line, "text": "hi", "from": from,
        "documents": [file.display().to_string()]}),
    );
    let mid = sent["messageId"]
        .as_str()
        .expect("a message id")
        .to_string();
    assert_eq!(fake.messages(CH).len(), 1, "{sent}");
    c.ok(json!({"op": "edit", "line": line, "messageId": sent["id"], "text": "hi!", "from": from}));
    c.ok(json!({"op": "react", "line": line, "messageId": mid, "emoji": "👀", "from": from}));
    assert_eq!(fake.reactions(CH, mid.parse().unwrap()), ["👀"]);
    // `""` reads the message back to find the bot's own reactions.
    c.ok(json!({"op": "react", "line": line, "messageId": mid, "emoji": "", "from": from}));
    assert!(fake.reactions(CH, mid.parse().unwrap()).is_empty());
    // download reads the message back for its files.
    let dir = tmp.path().join("in");
    let got = c.ok(json!({"op": "download", "line": line, "messageId": mid,
        "outDir": dir.display().to_string()}));
    assert_eq!(
        got["files"],
        json!([dir.join("n.txt").display().to_string()])
    );
    assert_eq!(std::fs::read(dir.join("n.txt")).unwrap(), b"notes");
    // Inbound still works alongside.
    let author = user(ANN, "ann", false);
    fake.dispatch(
        "MESSAGE_CREATE",
        with(
            message(CH, 6001, author.clone(), "hello"),
            json!({"guild_id": GUILD.to_string(), "member": member(author)}),
        ),
    );
    let deadline = std::time::Instant::now() + common::PATIENCE;
    while !d.history().iter().any(|e| e["messageId"] == "6001") {
        assert!(std::time::Instant::now() < deadline, "{}", d.stderr());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let kinds: Vec<String> = d
        .history()
        .iter()
        .filter_map(|e| e["kind"].as_str().map(str::to_string))
        .collect();
    assert_eq!(kinds, ["outbound", "edit", "react", "react", "inbound"]);
}

const EDITED: &str = "2026-11-29T10:00:01.000000+00:00";

/// Waits until the log holds an event with `messageId` `mid` and kind
/// `kind`; returns it.
fn stored(d: &Daemon, kind: &str, mid: &str) -> Value {
    let deadline = std::time::Instant::now() + common::PATIENCE;
    loop {
        if let Some(e) = d
            .history()
            .into_iter()
            .find(|e| e["kind"] == kind && e["messageId"] == mid)
        {
            return e;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no {kind} {mid}: {:?}\n{}",
            d.history(),
            d.stderr()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A message with only what metro reads: no `timestamp`, `tts`,
/// `mentions`, `type`, …; an author with only an `id`.
fn bare_message(id: u64, content: &str) -> Value {
    json!({"id": id.to_string(), "channel_id": CH.to_string(),
        "author": {"id": ANN.to_string()}, "content": content})
}

/// Every dispatch metro keeps, with only the fields it reads, and one
/// without an author between them: the good ones are stored in order, the
/// bad one is logged by id (not its text) and skipped, and the gateway
/// session goes on.
#[test]
fn dispatches_with_only_the_fields_metro_reads_are_stored() {
    let fake = Fake::start();
    let env = fake.env("*");
    let d = Daemon::start_env(&[], &env);
    fake.wait_ready(1);
    wait_station_status(&d, "discord", "ok", |s| s == "ok");
    let ch = CH.to_string();
    fake.dispatch(
        "MESSAGE_CREATE",
        with(
            bare_message(7001, "hello"),
            json!({"guild_id": GUILD.to_string()}),
        ),
    );
    fake.dispatch(
        "MESSAGE_CREATE",
        json!({"id": "7002", "channel_id": ch, "content": "sesame-4711"}),
    );
    fake.dispatch(
        "MESSAGE_UPDATE",
        json!({"id": "7001", "channel_id": ch, "content": "hello!", "edited_timestamp": EDITED,
            "author": {"id": ANN.to_string()}}),
    );
    fake.dispatch(
        "MESSAGE_REACTION_ADD",
        json!({"user_id": ANN.to_string(), "channel_id": ch, "message_id": "7001",
            "emoji": {"name": "👍"}}),
    );
    fake.dispatch(
        "INTERACTION_CREATE",
        json!({"id": "8001", "type": 3, "token": "tok-8001", "data": {"custom_id": "yes"},
            "message": {"id": "7001"}, "channel_id": ch, "user": {"id": ANN.to_string()}}),
    );
    fake.dispatch("MESSAGE_CREATE", bare_message(7003, "after"));
    stored(&d, "inbound", "7003");
    let first = stored(&d, "inbound", "7001");
    assert_eq!(first["text"], "hello");
    assert_eq!(first["line"], format!("metro://discord/{CH}"));
    assert_eq!(first["from"], format!("metro://discord/user/{ANN}"));
    assert_eq!(first["guildId"], GUILD.to_string());
    let edit = stored(&d, "edit", "7001");
    assert_eq!(edit["text"], "hello!");
    assert_eq!(edit["originalId"], first["id"]);
    assert_eq!(stored(&d, "react", "7001")["emoji"], "👍");
    let press = stored(&d, "callback", "7001");
    assert_eq!(press["text"], "yes");
    let kinds: Vec<String> = d
        .history()
        .iter()
        .filter_map(|e| e["kind"].as_str().map(str::to_string))
        .collect();
    assert_eq!(kinds, ["inbound", "edit", "react", "callback", "inbound"]);
    // The press is acknowledged once stored.
    fake.wait_calls("POST", "/api/v10/interactions/8001/tok-8001/callback", 1);
    let log = d.stderr();
    assert!(
        log.contains("MESSAGE_CREATE 7002 is not readable (missing field `author` in the payload)"),
        "{log}"
    );
    assert!(!log.contains("sesame"), "{log}");
    // One session throughout: the bad dispatch did not cost the gateway.
    assert_eq!(fake.readies(), 1);
    assert!(station_counters(&d, "discord")["skipped"].as_u64() >= Some(1));
    check_schema(&d.connect(), &d);
}

/// `fetch` and the read-back after READY read a listing entry by entry:
/// entries with only what metro reads are used (no `timestamp`: the id's
/// time), one without an author is logged by id and skipped, the rest of
/// the page is kept.
#[test]
fn an_unreadable_listed_message_is_skipped_and_the_rest_kept() {
    let fake = Fake::start();
    let env = fake.env("*");
    let mut d = Daemon::start_env(&[], &env);
    fake.wait_ready(1);
    wait_station_status(&d, "discord", "ok", |s| s == "ok");
    let bad = |id: u64| json!({"id": id.to_string(), "channel_id": CH.to_string(), "content": "sesame-4711"});
    fake.add_message(CH, bare_message(5001, "first"));
    fake.add_message(CH, bad(5002));
    fake.add_message(CH, bare_message(5003, "third"));
    let mut c = d.connect();
    let line = format!("metro://discord/{CH}");
    let f = c.ok(json!({"op": "fetch", "line": line, "limit": 10}));
    let msgs = f["messages"].as_array().expect("messages");
    let mids: Vec<&str> = msgs
        .iter()
        .filter_map(|m| m["messageId"].as_str())
        .collect();
    assert_eq!(mids, ["5001", "5003"], "{f}");
    assert_eq!(msgs[1]["text"], "third");
    assert!(
        msgs[1]["ts"]
            .as_str()
            .is_some_and(|t| t.starts_with("2015-01-01")),
        "{f}"
    );
    let log = d.stderr();
    assert!(
        log.contains(&format!(
            "message 5002 of channel {CH} is not readable (missing field `author` in the payload)"
        )),
        "{log}"
    );
    check_schema(&c, &d);

    // The read-back after READY: metro knows the channel from 6001.
    fake.dispatch("MESSAGE_CREATE", bare_message(6001, "known"));
    stored(&d, "inbound", "6001");
    d.stop();
    fake.add_message(CH, bare_message(6002, "while away"));
    fake.add_message(CH, bad(6003));
    fake.add_message(CH, bare_message(6004, "also while away"));
    d.restart();
    fake.wait_ready(2);
    assert_eq!(stored(&d, "inbound", "6002")["caughtUp"], true);
    assert_eq!(stored(&d, "inbound", "6004")["caughtUp"], true);
    assert!(d.history().iter().all(|e| e["messageId"] != "6003"));
    assert!(!d.stderr().contains("sesame"), "{}", d.stderr());
    assert!(
        d.stderr()
            .contains(&format!("message 6003 of channel {CH} is not readable")),
        "{}",
        d.stderr()
    );
    // Live traffic goes on after the read-back.
    fake.dispatch("MESSAGE_CREATE", bare_message(6005, "live"));
    stored(&d, "inbound", "6005");
}
