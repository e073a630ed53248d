//! The Telegram station against a real daemon and a fake Bot API server
//! (tests/fake_telegram): updates become events only once durable and are
//! confirmed only then (also across kill -9), every update kind, access
//! control and pairing, every outbound op with its event and auto-claim,
//! the per-chat queue (retry_after, rate limits), the plain-text fallback,
//! polling failures in words, and the metroctl commands.

mod common;
mod fake_telegram;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use fake_telegram::*;
use serde_json::{json, Value};

const A: &str = "metro://claude/user/a";
const B: &str = "metro://codex/user/b";

fn start(fake: &Fake, allow: &str) -> Daemon {
    let env = fake.env(allow);
    let d = Daemon::start_env(&[], &env);
    fake.watch_log(d.history_path());
    d
}

/// The telegram events, oldest first, as the daemon serves them: only what
/// is committed. (`history.jsonl` on disk has a line before it is: the
/// writer advances the log end after its fdatasync, so an id read from the
/// file may not be known to the daemon yet.)
fn tg_events(d: &Daemon) -> Vec<Value> {
    let h = d
        .connect()
        .ok(json!({"op": "history", "station": "telegram", "limit": 1000}));
    let mut v = h["entries"].as_array().cloned().unwrap_or_default();
    assert!(v.len() < 1000, "more telegram events than one history page");
    v.reverse();
    v
}

fn with_update(d: &Daemon, id: i64) -> Vec<Value> {
    tg_events(d)
        .into_iter()
        .filter(|e| e["updateId"] == json!(id))
        .collect()
}

/// Waits until update `id` is committed to the log; returns its event.
fn logged(d: &Daemon, id: i64) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(e) = with_update(d, id).into_iter().next() {
            return e;
        }
        assert!(
            Instant::now() < deadline,
            "update {id} not logged: {}",
            d.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn station(d: &Daemon) -> Value {
    station_row(d, "telegram")
}

fn wait_status(d: &Daemon, what: &str, f: impl Fn(&str) -> bool) -> String {
    wait_station_status(d, "telegram", what, f)
}

fn counters(d: &Daemon) -> Value {
    station_counters(d, "telegram")
}

fn wait_counter(d: &Daemon, counter: &str, n: u64) {
    wait_station_counter(d, "telegram", counter, n)
}

fn conflict() -> Value {
    api_error(
        409,
        "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running",
    )
}

#[test]
fn an_update_is_stored_before_it_is_confirmed() {
    let fake = Fake::start();
    let d = start(&fake, "42");
    wait_status(&d, "ok", |s| s == "ok");
    let row = station(&d);
    assert_eq!(row["enabled"], true);
    assert_eq!(row["bot"], "@metro_test_bot");
    assert_eq!(row["apiUrl"], json!(fake.url));

    let u1 = fake.push(text_update(10, 42, 42, "Ann", "deploy status?"));
    let ev = logged(&d, u1);
    assert_eq!(ev["kind"], "inbound");
    assert_eq!(ev["line"], "metro://telegram/42");
    assert_eq!(ev["from"], "metro://telegram/user/42");
    assert_eq!(ev["to"], "metro://telegram/42");
    assert_eq!(ev["fromName"], "Ann");
    assert_eq!(ev["text"], "deploy status?");
    assert_eq!(ev["messageId"], "10");
    assert_eq!(ev["lineName"], "Ann");
    assert!(ev["id"].as_str().unwrap().starts_with("msg_"));

    let u2 = fake.push(text_update(11, 42, 42, "Ann", "and now?"));
    logged(&d, u2);
    fake.wait("both confirmed", PATIENCE, |f| f.pending().is_empty());
    let confirmations = fake.confirmations();
    assert!(!confirmations.is_empty());
    for c in &confirmations {
        assert!(c.all_logged, "confirmed before it was durable: {c:?}");
    }
    // It asked for reactions and button presses too, and long-polls.
    let polls = fake.calls("getUpdates");
    let p = &polls.last().unwrap().params;
    let allowed: Vec<&str> = p["allowed_updates"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for k in [
        "message",
        "edited_message",
        "message_reaction",
        "callback_query",
    ] {
        assert!(allowed.contains(&k), "{allowed:?}");
    }
    assert!(p["timeout"].as_u64().unwrap() >= 10);
    assert_eq!(counters(&d)["received"], 2);
    // Each stored once.
    assert_eq!(with_update(&d, u1).len(), 1);
    assert_eq!(with_update(&d, u2).len(), 1);
}

#[test]
fn kill_9_between_storing_and_confirming_stores_the_update_once() {
    let fake = Fake::start();
    let mut d = start(&fake, "42");
    wait_status(&d, "ok", |s| s == "ok");
    fake.freeze_confirmations(true);
    let id = fake.push(text_update(20, 42, 42, "Ann", "are you there?"));
    logged(&d, id);
    // The getUpdates that would confirm it is on its way and hangs: metrod
    // dies before Telegram hears about it.
    fake.wait("the confirming getUpdates", PATIENCE, |f| {
        f.calls("getUpdates")
            .iter()
            .any(|c| c.params["offset"].as_i64().is_some_and(|o| o > id))
    });
    d.kill9();
    fake.freeze_confirmations(false);
    assert_eq!(fake.pending(), vec![id], "nothing was confirmed");
    d.restart();
    fake.wait("the update confirmed", PATIENCE, |f| f.pending().is_empty());
    assert!(fake.handed_out(id) >= 2, "Telegram sent it again");
    assert_eq!(with_update(&d, id).len(), 1, "stored exactly once");
    assert_eq!(counters(&d)["duplicates"], 1);

    // kill -9 at arbitrary moments around receiving: never lost, never twice.
    for (i, delay) in [0u64, 5, 15, 40].into_iter().enumerate() {
        let id = fake.push(text_update(30 + i as i64, 42, 42, "Ann", &format!("n{i}")));
        std::thread::sleep(Duration::from_millis(delay));
        d.kill9();
        d.restart();
        logged(&d, id);
        fake.wait("confirmed", PATIENCE, |f| f.pending().is_empty());
        assert_eq!(
            with_update(&d, id).len(),
            1,
            "update {id} after kill at {delay} ms"
        );
    }
    for c in fake.confirmations() {
        assert!(c.all_logged, "confirmed before it was durable: {c:?}");
    }
}

#[test]
fn every_update_kind_becomes_its_event() {
    let fake = Fake::start();
    let d = start(&fake, "42,43");
    let ann = user(42, "Ann");
    let group = forum(-1002417735519, "infra");
    // A forum topic: every message there "replies" to the topic's root.
    let root = message(7, group.clone(), ann.clone(), json!({"text": "topic"}));
    let u = fake.push(
        json!({"message": message(9, group.clone(), ann.clone(), json!({
            "text": "in the topic", "message_thread_id": 7, "is_topic_message": true,
            "reply_to_message": root,
        }))}),
    );
    let topic = logged(&d, u);
    assert_eq!(topic["line"], "metro://telegram/-1002417735519/7");
    assert_eq!(topic["lineName"], "infra");
    assert!(topic.get("replyTo").is_none(), "{topic}");
    let replied = message(
        9,
        group.clone(),
        ann.clone(),
        json!({"text": "in the topic"}),
    );
    let u = fake.push(
        json!({"message": message(10, group.clone(), user(43, "Bo"), json!({
            "text": "replying", "message_thread_id": 7, "is_topic_message": true,
            "reply_to_message": replied,
        }))}),
    );
    let reply = logged(&d, u);
    assert_eq!(reply["replyTo"], "9");
    assert_eq!(reply["from"], "metro://telegram/user/43");

    // Files: photo (largest size), document, voice, video, sticker.
    let chat = private(42, "Ann");
    let u = fake.push(json!({"message": message(11, chat.clone(), ann.clone(), json!({
        "caption": "the graph",
        "photo": [
            {"file_id": "small", "file_unique_id": "s", "file_size": 10, "width": 90, "height": 60},
            {"file_id": "big", "file_unique_id": "b", "file_size": 900, "width": 1280, "height": 960},
        ],
    }))}));
    let photo = logged(&d, u);
    assert_eq!(photo["text"], "the graph");
    assert_eq!(
        photo["attachments"],
        json!([{"type": "image", "fileId": "big", "mime": "image/jpeg", "size": 900, "width": 1280, "height": 960}])
    );
    let u = fake.push(json!({"message": message(12, chat.clone(), ann.clone(), json!({
        "document": {"file_id": "doc1", "file_unique_id": "d", "file_name": "report.pdf", "mime_type": "application/pdf", "file_size": 3000},
    }))}));
    let doc = logged(&d, u);
    assert!(doc.get("text").is_none());
    assert_eq!(
        doc["attachments"],
        json!([{"type": "document", "fileId": "doc1", "name": "report.pdf", "mime": "application/pdf", "size": 3000}])
    );
    let u = fake.push(json!({"message": message(13, chat.clone(), ann.clone(), json!({
        "voice": {"file_id": "v1", "file_unique_id": "v", "duration": 4, "mime_type": "audio/ogg", "file_size": 5000},
    }))}));
    assert_eq!(logged(&d, u)["attachments"][0]["type"], "voice");
    let u = fake.push(json!({"message": message(14, chat.clone(), ann.clone(), json!({
        "video": {"file_id": "vid", "file_unique_id": "vi", "width": 640, "height": 480, "duration": 9, "file_name": "clip.mp4", "mime_type": "video/mp4", "file_size": 70000},
    }))}));
    assert_eq!(logged(&d, u)["attachments"][0]["name"], "clip.mp4");
    let u = fake.push(json!({"message": message(15, chat.clone(), ann.clone(), json!({
        "sticker": {"file_id": "st", "file_unique_id": "st", "type": "regular", "width": 512, "height": 512, "is_animated": false, "is_video": false, "emoji": "🔥", "file_size": 200},
    }))}));
    let sticker = logged(&d, u);
    assert_eq!(sticker["attachments"][0]["type"], "sticker");
    assert_eq!(sticker["attachments"][0]["emoji"], "🔥");

    // An edit, linked to the original.
    let first = logged(&d, fake.push(text_update(16, 42, 42, "Ann", "deploy at 5")));
    let u = fake.push(
        json!({"edited_message": message(16, chat.clone(), ann.clone(), json!({
            "text": "deploy at 6", "edit_date": 1_764_300_100,
        }))}),
    );
    let edit = logged(&d, u);
    assert_eq!(edit["kind"], "edit");
    assert_eq!(edit["messageId"], "16");
    assert_eq!(edit["text"], "deploy at 6");
    assert_eq!(edit["originalId"], first["id"]);

    // Reactions: set, then cleared.
    let u = fake.push(json!({"message_reaction": {
        "chat": chat.clone(), "message_id": 16, "user": ann.clone(), "date": 1_764_300_200,
        "old_reaction": [], "new_reaction": [{"type": "emoji", "emoji": "👍"}],
    }}));
    let react = logged(&d, u);
    assert_eq!(react["kind"], "react");
    assert_eq!(react["emoji"], "👍");
    assert_eq!(react["messageId"], "16");
    assert_eq!(react["originalId"], first["id"]);
    assert_eq!(react["line"], "metro://telegram/42");
    let u = fake.push(json!({"message_reaction": {
        "chat": chat.clone(), "message_id": 16, "user": ann.clone(), "date": 1_764_300_201,
        "old_reaction": [{"type": "emoji", "emoji": "👍"}], "new_reaction": [],
    }}));
    assert_eq!(logged(&d, u)["emoji"], "");

    // A button press: stored, then the callback query is answered.
    let u = fake.push(json!({"callback_query": {
        "id": "cbq-1", "from": ann.clone(), "chat_instance": "ci",
        "message": message(17, chat.clone(), bot_user(), json!({"text": "approve?"})),
        "data": "approve",
    }}));
    let cb = logged(&d, u);
    assert_eq!(cb["kind"], "callback");
    assert_eq!(cb["text"], "approve");
    assert_eq!(cb["messageId"], "17");
    assert_eq!(cb["from"], "metro://telegram/user/42");
    let answers = fake.wait_calls("answerCallbackQuery", 1);
    assert_eq!(answers[0].params["callback_query_id"], "cbq-1");

    // A service message carries nothing to store, but is confirmed.
    let u = fake.push(
        json!({"message": message(18, group.clone(), ann.clone(), json!({
            "new_chat_title": "infra-2",
        }))}),
    );
    fake.wait("service message confirmed", PATIENCE, |f| {
        !f.pending().contains(&u)
    });
    assert!(with_update(&d, u).is_empty());
    assert!(counters(&d)["skipped"].as_u64().unwrap() >= 1);

    // fetch serves the line from metro's log, oldest first.
    let f = d
        .connect()
        .ok(json!({"op": "fetch", "line": "telegram/42", "limit": 3}));
    let texts: Vec<&str> = f["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["kind"].as_str().unwrap())
        .collect();
    assert_eq!(texts, vec!["react", "react", "callback"]);
}

#[test]
fn strangers_are_blocked_counted_and_paired() {
    let fake = Fake::start();
    let mut d = start(&fake, "42");
    let before = logged(&d, fake.push(text_update(1, 42, 42, "Ann", "hi")));
    assert_eq!(before["text"], "hi");

    // A stranger in private: not stored, counted, one pairing reply.
    let u = fake.push(text_update(2, 99, 99, "Mallory", "run rm -rf / please"));
    fake.wait("blocked update confirmed", PATIENCE, |f| {
        !f.pending().contains(&u)
    });
    assert!(
        with_update(&d, u).is_empty(),
        "a stranger's message is never stored"
    );
    assert_eq!(counters(&d)["blocked"], 1);
    let replies = fake.wait_calls("sendMessage", 1);
    assert_eq!(replies[0].params["chat_id"], 99);
    let text = replies[0].params["text"].as_str().unwrap().to_string();
    let code = text
        .split("metroctl allow ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .expect("a code in the reply")
        .to_string();
    assert!(d.stderr().contains("blocked"), "{}", d.stderr());
    assert!(!d.stderr().contains(&code), "the code is never logged");
    assert!(
        !d.stderr().contains("rm -rf"),
        "blocked text is never logged"
    );

    // Writing again: counted, but no second reply.
    let u = fake.push(text_update(3, 99, 99, "Mallory", "hello??"));
    fake.wait("confirmed", PATIENCE, |f| !f.pending().contains(&u));
    wait_counter(&d, "blocked", 2);
    // In a group, and pressing a button: blocked, no pairing reply there.
    let u = fake.push(text_update(4, -1001, 99, "Mallory", "me too"));
    fake.wait("confirmed", PATIENCE, |f| !f.pending().contains(&u));
    fake.push(json!({"callback_query": {
        "id": "cbq-x", "from": user(99, "Mallory"), "chat_instance": "ci",
        "message": message(5, forum(-1001, "g"), bot_user(), json!({"text": "approve?"})),
        "data": "approve",
    }}));
    let answers = fake.wait_calls("answerCallbackQuery", 1);
    assert_eq!(answers[0].params["text"], "Not allowed.");
    wait_counter(&d, "blocked", 4);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(fake.calls("sendMessage").len(), 1, "one pairing reply only");
    assert_eq!(counters(&d)["pairingReplies"], 1);
    assert!(tg_events(&d)
        .iter()
        .all(|e| e["from"] != "metro://telegram/user/99"));

    // The owner sees who waits, never the code.
    let list = ctl_ok(&d, &["allow", "--list", "--json"]);
    assert!(
        list.contains("\"99\"") && list.contains("Mallory"),
        "{list}"
    );
    assert!(!list.contains(&code));
    let wrong = ctl_output(&d, &["allow", "ZZZZ-ZZZZ"]);
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("not_found"));

    // `metroctl allow <code>` admits them (any case, with or without dash).
    let out = ctl_ok(&d, &["allow", &code.to_lowercase()]);
    assert!(out.contains("99") && out.contains("Mallory"), "{out}");
    let ok = logged(&d, fake.push(text_update(6, 99, 99, "Mallory", "thanks")));
    assert_eq!(ok["from"], "metro://telegram/user/99");
    assert!(
        !ctl_output(&d, &["allow", &code]).status.success(),
        "a code works once"
    );

    // deny blocks them again (and the config's own users too), durably.
    let out = ctl_ok(&d, &["deny", "99"]);
    assert!(out.contains("\"wasAllowed\":true"), "{out}");
    let mut c = d.connect();
    let denied = c.ok(json!({"op": "deny", "userId": 42}));
    assert_eq!(denied["wasAllowed"], false, "42 came from the config");
    let l = c.ok(json!({"op": "allowList", "station": "telegram"}));
    assert_eq!(l["access"][0]["config"], json!(["42"]));
    assert_eq!(l["access"][0]["allowed"], json!([]));
    c.err(json!({"op": "allow", "code": "zzzz-zzzz"}), "not_found");
    c.err(json!({"op": "deny", "userId": ""}), "bad_request");
    // Discord has no token here: its list is unavailable; a station
    // without lists is a bad request.
    c.err(
        json!({"op": "allowList", "station": "discord"}),
        "unavailable",
    );
    c.err(
        json!({"op": "allowList", "station": "slack"}),
        "bad_request",
    );
    check_schema(&c, &d);
    drop(c);
    d.stop();
    d.restart();
    let u1 = fake.push(text_update(7, 99, 99, "Mallory", "again"));
    let u2 = fake.push(text_update(8, 42, 42, "Ann", "me?"));
    fake.wait("confirmed", PATIENCE, |f| {
        !f.pending().contains(&u1) && !f.pending().contains(&u2)
    });
    assert!(with_update(&d, u1).is_empty() && with_update(&d, u2).is_empty());
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        fake.calls("sendMessage").len(),
        1,
        "denied people get no code"
    );
    let table = ctl_ok(&d, &["allow", "--list"]);
    assert!(table.contains("denied"), "{table}");
    let mode = std::fs::metadata(d.dir.join("telegram-access.json"))
        .unwrap()
        .permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
}

#[test]
fn metroctl_no_claim_leaves_a_chat_line_unclaimed() {
    let fake = Fake::start();
    let d = start(&fake, "*");
    let send = |env: &[(&str, &str)], extra: &[&str]| -> Value {
        let mut args = vec!["send", "telegram/43", "hi"];
        args.extend_from_slice(extra);
        let mut cmd = metroctl(&d, &args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        serde_json::from_slice(&run_ok(&mut cmd).stdout).unwrap()
    };
    let s = send(&[("METRO_AS", A), ("METRO_NO_AUTO_CLAIM", "1")], &[]);
    assert_eq!(s["claim"], "off");
    let s = send(&[], &["--from", A, "--no-claim"]);
    assert_eq!(s["claim"], "off");
    let claims = d.connect().ok(json!({"op": "claims"}));
    assert_eq!(claims["claims"], json!({}));
    // Without either, the same send claims the line.
    let s = send(&[("METRO_AS", A)], &[]);
    assert_eq!(s["claim"], "claimed");
    assert_eq!(fake.calls("sendMessage").len(), 3);
}

#[test]
fn send_splits_replies_claims_and_logs_each_op() {
    let fake = Fake::start();
    let d = start(&fake, "*");
    let inbound = logged(
        &d,
        fake.push(text_update(77, 42, 42, "Ann", "long report please")),
    );
    let mut c = d.connect();
    let long = format!(
        "{}\n\n{}\n\n{}",
        "a".repeat(3000),
        "b".repeat(3000),
        "c".repeat(3000)
    );
    let sent = c.ok(json!({
        "op": "send", "line": "telegram/42", "text": long, "from": A,
        "replyTo": inbound["id"], "buttons": ["Ship it", {"text": "Docs", "url": "https://example.com/docs"}],
    }));
    assert_eq!(sent["claim"], "claimed");
    let calls = fake.calls("sendMessage");
    assert_eq!(calls.len(), 3);
    let texts: Vec<usize> = calls
        .iter()
        .map(|c| c.params["text"].as_str().unwrap().len())
        .collect();
    assert_eq!(texts, vec![3000, 3000, 3000]);
    assert_eq!(calls[0].params["parse_mode"], "Markdown");
    assert_eq!(
        calls[0].params["reply_parameters"]["message_id"], 77,
        "replyTo by metro id"
    );
    assert!(calls[1].params.get("reply_parameters").is_none());
    assert!(calls[0].params.get("reply_markup").is_none());
    assert_eq!(
        calls[2].params["reply_markup"]["inline_keyboard"][0][0]["callback_data"],
        "Ship it"
    );
    assert_eq!(
        calls[2].params["reply_markup"]["inline_keyboard"][0][1]["url"],
        "https://example.com/docs"
    );
    let ids = sent["messageIds"].as_array().unwrap().clone();
    assert_eq!(ids.len(), 3);
    assert_eq!(sent["messageId"], ids[0]);
    // The op is its own event.
    let ev = d
        .history()
        .into_iter()
        .find(|e| e["id"] == sent["id"])
        .unwrap();
    assert_eq!(ev["kind"], "outbound");
    assert_eq!(ev["station"], "telegram");
    assert_eq!(ev["from"], A);
    assert_eq!(ev["line"], "metro://telegram/42");
    assert_eq!(ev["messageId"], ids[0]);
    assert_eq!(ev["messageIds"], json!(ids));
    assert_eq!(ev["replyTo"], "77");
    assert_eq!(ev["text"], json!(long));

    // Another agent's send: the action happens, the claim stays A's.
    let other = c.ok(
        json!({"op": "send", "line": "telegram/42", "text": "me too", "from": B,
        "replyTo": "77"}),
    );
    assert_eq!(other["claim"], "skipped");
    assert_eq!(
        fake.calls("sendMessage")[3].params["reply_parameters"]["message_id"],
        77,
        "replyTo by Telegram id"
    );
    let off = c.ok(
        json!({"op": "send", "line": "telegram/42", "text": "quiet", "from": B, "noClaim": true}),
    );
    assert_eq!(off["claim"], "off");
    assert!(off.get("messageIds").is_none());

    // edit and react by metro id or Telegram id; "" clears.
    let e = c.ok(json!({"op": "edit", "line": "telegram/42", "messageId": sent["id"], "text": "*done*", "from": A,
        "buttons": [["OK"]]}));
    assert_eq!(e["claim"], "kept");
    let edits = fake.calls("editMessageText");
    assert_eq!(
        edits[0].params["message_id"].to_string(),
        ids[0].as_str().unwrap()
    );
    assert_eq!(edits[0].params["text"], "*done*");
    assert_eq!(
        edits[0].params["reply_markup"]["inline_keyboard"][0][0]["text"],
        "OK"
    );
    let r = c.ok(
        json!({"op": "react", "line": "telegram/42", "messageId": "77", "emoji": "👍", "from": A}),
    );
    c.ok(json!({"op": "react", "line": "telegram/42", "messageId": inbound["id"], "emoji": ""}));
    let reacts = fake.calls("setMessageReaction");
    assert_eq!(
        reacts[0].params["reaction"],
        json!([{"type": "emoji", "emoji": "👍"}])
    );
    assert_eq!(reacts[1].params["message_id"], 77);
    assert_eq!(reacts[1].params["reaction"], json!([]));
    let log = d.history();
    let edit_ev = log.iter().find(|x| x["id"] == e["id"]).unwrap();
    assert_eq!(edit_ev["kind"], "edit");
    assert_eq!(edit_ev["messageId"], ids[0]);
    assert_eq!(edit_ev["originalId"], sent["id"]);
    let react_ev = log.iter().find(|x| x["id"] == r["id"]).unwrap();
    assert_eq!(react_ev["kind"], "react");
    assert_eq!(react_ev["emoji"], "👍");
    assert_eq!(react_ev["originalId"], inbound["id"]);

    // Bad references and inputs.
    c.err(json!({"op": "edit", "line": "telegram/42", "messageId": "msg_0000000000000000", "text": "x"}), "not_found");
    c.err(
        json!({"op": "react", "line": "telegram/43", "messageId": sent["id"], "emoji": "👍"}),
        "bad_request",
    );
    c.err(
        json!({"op": "send", "line": "telegram/42", "text": ""}),
        "bad_request",
    );
    c.err(
        json!({"op": "send", "line": "telegram/42", "text": "x", "images": ["relative.png"]}),
        "bad_request",
    );
    c.err(
        json!({"op": "send", "line": "telegram/42", "text": "x", "buttons": {"no": 1}}),
        "bad_request",
    );
    c.ok(json!({"op": "stations"}));
    c.ok(json!({"op": "stats"}));
    check_schema(&c, &d);

    // The mapping survives a restart.
    let mut d = d;
    d.stop();
    // Without the log: the id map alone must know it.
    std::fs::write(d.history_path(), "").unwrap();
    d.restart();
    let mut c = d.connect();
    c.ok(json!({"op": "react", "line": "telegram/42", "messageId": sent["id"], "emoji": "🎉"}));
    let last = fake.calls("setMessageReaction").pop().unwrap();
    assert_eq!(
        last.params["message_id"].to_string(),
        ids[0].as_str().unwrap()
    );
}

#[test]
fn files_go_as_albums_voice_and_captions() {
    let fake = Fake::start();
    let d = start(&fake, "*");
    let tmp = tempfile::tempdir().unwrap();
    let path = |n: &str, bytes: &[u8]| {
        let p = tmp.path().join(n);
        std::fs::write(&p, bytes).unwrap();
        p.display().to_string()
    };
    let (i1, i2) = (path("a.png", b"png-a"), path("b.png", b"png-bb"));
    let doc = path("notes.txt", b"some notes");
    let voice = path("hello.ogg", b"OggS-voice");
    let mut c = d.connect();
    let a = c.ok(
        json!({"op": "send", "line": "telegram/-1002417735519/7", "text": "the *graphs*",
        "images": [i1, i2], "documents": [doc], "voice": voice, "from": A}),
    );
    let album = fake.calls("sendMediaGroup");
    assert_eq!(album.len(), 1);
    assert_eq!(album[0].files.len(), 2, "both images uploaded");
    assert_eq!(album[0].params["message_thread_id"], "7");
    let media = param(&album[0].params, "media");
    assert_eq!(media[0]["type"], "photo");
    assert_eq!(
        media[0]["caption"], "the *graphs*",
        "the text is the caption"
    );
    assert!(media[1].get("caption").is_none());
    let d1 = fake.calls("sendDocument");
    assert_eq!(d1.len(), 1);
    assert_eq!(d1[0].files[0].1, "notes.txt");
    assert!(d1[0].params.get("caption").is_none());
    let v = fake.calls("sendVoice");
    assert_eq!(v.len(), 1);
    assert!(fake.calls("sendMessage").is_empty(), "no separate text");
    assert_eq!(a["messageIds"].as_array().unwrap().len(), 4);
    let ev = d
        .history()
        .into_iter()
        .find(|e| e["id"] == a["id"])
        .unwrap();
    assert_eq!(
        ev["attachments"],
        json!([
            {"type": "image", "path": i1}, {"type": "image", "path": i2},
            {"type": "document", "path": doc}, {"type": "voice", "path": voice},
        ])
    );

    // With buttons the text is its own message, under the files.
    c.ok(
        json!({"op": "send", "line": "telegram/42", "text": "pick one",
        "images": [path("c.png", b"png-c")], "buttons": ["left", "right"]}),
    );
    let photo = fake.calls("sendPhoto");
    assert_eq!(photo.len(), 1);
    assert!(photo[0].params.get("caption").is_none());
    let text = fake.calls("sendMessage");
    assert_eq!(text[0].params["text"], "pick one");
    assert!(text[0].params["reply_markup"]["inline_keyboard"].is_array());

    // metroctl send --image/--document/--voice/--buttons, relative paths made absolute.
    let out = Command::new(METROCTL)
        .current_dir(tmp.path())
        .args(["--socket"])
        .arg(&d.socket)
        .args([
            "send",
            "telegram/42",
            "files",
            "--image",
            "a.png",
            "--document",
            "notes.txt",
            "--voice",
            "hello.ogg",
            "--buttons",
            "[\"ok\"]",
            "--no-claim",
        ])
        .env_remove("METRO_AS")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fake.calls("sendPhoto").len(), 2);
    assert_eq!(fake.calls("sendDocument").len(), 2);
    assert_eq!(fake.calls("sendVoice").len(), 2);
    let last = fake.calls("sendMessage").pop().unwrap();
    assert_eq!(last.params["text"], "files");
}

#[test]
fn download_saves_a_messages_files() {
    let fake = Fake::start();
    let d = start(&fake, "42");
    let chat = private(42, "Ann");
    let ann = user(42, "Ann");
    fake.add_file("big", "photos/file_1.jpg", b"JPEG-bytes");
    fake.add_file("doc1", "documents/file_2.pdf", b"%PDF-1.7");
    let photo = logged(&d, fake.push(json!({"message": message(11, chat.clone(), ann.clone(), json!({
        "photo": [{"file_id": "big", "file_unique_id": "b", "file_size": 10, "width": 100, "height": 100}],
    }))})));
    logged(&d, fake.push(json!({"message": message(12, chat.clone(), ann.clone(), json!({
        "document": {"file_id": "doc1", "file_unique_id": "d", "file_name": "../report.pdf", "file_size": 8},
    }))})));
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("in");
    let mut c = d.connect();
    let a = c.ok(
        json!({"op": "download", "line": "telegram/42", "messageId": photo["id"],
        "outDir": dir.display().to_string()}),
    );
    let files: Vec<String> = serde_json::from_value(a["files"].clone()).unwrap();
    assert_eq!(
        files,
        vec![dir.join("telegram-42-11-1.jpg").display().to_string()]
    );
    assert_eq!(std::fs::read(&files[0]).unwrap(), b"JPEG-bytes");
    assert_eq!(fake.calls("getFile")[0].params["file_id"], "big");
    // By Telegram id; a sender's path never leaves the directory; no overwrite.
    for want in ["report.pdf", "report (2).pdf"] {
        let a = c.ok(
            json!({"op": "download", "line": "telegram/42", "messageId": "12",
            "outDir": dir.display().to_string()}),
        );
        assert_eq!(a["files"], json!([dir.join(want).display().to_string()]));
    }
    // metroctl download, relative --out.
    let printed = Command::new(METROCTL)
        .current_dir(out.path())
        .arg("--socket")
        .arg(&d.socket)
        .args(["download", "telegram/42", "11", "--out", "via-ctl"])
        .output()
        .unwrap();
    assert!(
        printed.status.success(),
        "{}",
        String::from_utf8_lossy(&printed.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&printed.stdout).trim(),
        out.path()
            .join("via-ctl/telegram-42-11-1.jpg")
            .display()
            .to_string()
    );
    c.err(
        json!({"op": "download", "line": "telegram/42", "messageId": "999", "outDir": "/tmp"}),
        "not_found",
    );
    c.err(
        json!({"op": "download", "line": "telegram/42", "messageId": "11", "outDir": "rel"}),
        "bad_request",
    );
    c.err(json!({"op": "download", "line": "telegram/43", "messageId": photo["id"], "outDir": "/tmp"}), "bad_request");
}

#[test]
fn the_queue_honours_retry_after_and_rate_limits() {
    let fake = Fake::start();
    let d = start(&fake, "*");
    let mut c = d.connect();
    fake.fail_next(
        "sendMessage",
        1,
        429,
        json!({"ok": false, "error_code": 429, "description": "Too Many Requests: retry after 1",
               "parameters": {"retry_after": 1}}),
    );
    let a = c.ok(json!({"op": "send", "line": "telegram/42", "text": "patience"}));
    assert!(a["messageId"].is_string());
    let calls = fake.calls("sendMessage");
    assert_eq!(calls.len(), 2);
    let gap = calls[1].at - calls[0].at;
    assert!(gap >= Duration::from_millis(950), "retried after {gap:?}");
    assert_eq!(counters(&d)["retries"], 1);

    // Five at once to one private chat: a burst of 3, then one a second.
    for i in 0..5 {
        c.send(&json!({"op": "send", "req": format!("r{i}"), "line": "telegram/77", "text": format!("m{i}")}));
    }
    c.send(&json!({"op": "send", "req": "other", "line": "telegram/79", "text": "elsewhere"}));
    for r in ["r0", "r1", "r2", "r3", "r4", "other"] {
        let a = c.answer_to(&json!(r)).unwrap();
        assert_eq!(a["ok"], true, "{a}");
    }
    let to77: Vec<Call> = fake
        .calls("sendMessage")
        .into_iter()
        .filter(|c| c.params["chat_id"] == 77)
        .collect();
    assert_eq!(to77.len(), 5);
    let span = to77[4].at - to77[0].at;
    assert!(
        span >= Duration::from_millis(1800),
        "5 messages in {span:?}"
    );
    assert!(
        to77[2].at - to77[0].at < Duration::from_millis(900),
        "the burst"
    );
    // Another chat is not held up by that one.
    let to79 = fake
        .calls("sendMessage")
        .into_iter()
        .find(|c| c.params["chat_id"] == 79)
        .unwrap();
    assert!(to79.at < to77[4].at, "chat 79 waited for chat 77");

    // A flood wait longer than metro waits: upstream, nothing logged.
    fake.fail_next(
        "sendMessage",
        1,
        429,
        json!({"ok": false, "error_code": 429, "description": "Too Many Requests: retry after 600",
               "parameters": {"retry_after": 600}}),
    );
    let before = tg_events(&d).len();
    let e = c.err(
        json!({"op": "send", "line": "telegram/78", "text": "x"}),
        "upstream",
    );
    assert!(e["message"].as_str().unwrap().contains("600"), "{e}");
    assert_eq!(tg_events(&d).len(), before);
}

#[test]
fn unparsable_formatting_is_resent_as_plain_text() {
    let fake = Fake::start();
    let d = start(&fake, "*");
    fake.fail_next(
        "sendMessage",
        1,
        400,
        api_error(
            400,
            "Bad Request: can't parse entities: Can't find end of the entity starting at byte offset 4",
        ),
    );
    let mut c = d.connect();
    let a = c.ok(json!({"op": "send", "line": "telegram/42", "text": "see my_var_name"}));
    let calls = fake.calls("sendMessage");
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].params["parse_mode"], "Markdown");
    assert!(calls[1].params.get("parse_mode").is_none());
    assert_eq!(calls[1].params["text"], "see my_var_name");
    assert!(a["messageId"].is_string());
    assert_eq!(counters(&d)["plainFallbacks"], 1);
    // Other refusals are `upstream`, with Telegram's words.
    fake.fail_next(
        "sendMessage",
        1,
        400,
        api_error(400, "Bad Request: chat not found"),
    );
    let e = c.err(
        json!({"op": "send", "line": "telegram/5", "text": "x"}),
        "upstream",
    );
    assert!(
        e["message"].as_str().unwrap().contains("chat not found"),
        "{e}"
    );
}

#[test]
fn polling_failures_are_said_in_words_and_retried() {
    // 409: another poller.
    let fake = Fake::start();
    let d = start(&fake, "42");
    wait_status(&d, "ok", |s| s == "ok");
    fake.fail_next("getUpdates", 1000, 409, conflict());
    // The current long poll ends with the next update.
    fake.push(text_update(1, 42, 42, "Ann", "one"));
    let s = wait_status(&d, "409", |s| {
        s.contains("another program is polling this bot")
    });
    assert!(s.starts_with("down: "), "{s}");
    fake.clear_failures();
    let u = fake.push(text_update(2, 42, 42, "Ann", "two"));
    logged(&d, u);
    wait_status(&d, "ok again", |s| s == "ok");

    // 5xx: retried (teloxide itself waits 10 s after a 5xx). The poll in
    // flight ends with update 3; the one after it gets the 502.
    fake.fail_next("getUpdates", 1, 502, api_error(502, "Bad Gateway"));
    let u3 = fake.push(text_update(3, 42, 42, "Ann", "three"));
    logged(&d, u3);
    let deadline = Instant::now() + Duration::from_secs(40);
    while !d.stderr().contains("Bad Gateway") {
        assert!(Instant::now() < deadline, "no 502 seen: {}", d.stderr());
        std::thread::sleep(Duration::from_millis(50));
    }
    let u4 = fake.push(text_update(4, 42, 42, "Ann", "four"));
    let deadline = Instant::now() + Duration::from_secs(40);
    while with_update(&d, u4).is_empty() {
        assert!(Instant::now() < deadline, "not recovered: {}", d.stderr());
        std::thread::sleep(Duration::from_millis(50));
    }
    fake.wait("all confirmed", PATIENCE, |f| f.pending().is_empty());
    assert_eq!(with_update(&d, u3).len(), 1);

    // 401: a token Telegram refuses; never shown in the status.
    let d = Daemon::start_env(
        &[],
        &[
            ("METRO_TELEGRAM_TOKEN", "999:not-the-token"),
            ("METRO_TELEGRAM_API_URL", &fake.url),
        ],
    );
    let s = wait_status(&d, "401", |s| s.contains("refused the bot token"));
    assert!(!s.contains("not-the-token"), "{s}");
    // `metroctl doctor` says it too.
    let none = tempfile::tempdir().unwrap();
    let out = ctl_output(
        &d,
        &[
            "doctor",
            "--json",
            "--config-dir",
            &none.path().display().to_string(),
        ],
    );
    assert!(!out.status.success());
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let problems = report["problems"].to_string();
    assert!(
        problems.contains("telegram: down: Telegram refused the bot token"),
        "{report}"
    );

    // Network: nothing listens there; the token is not in the status either.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let d = Daemon::start_env(
        &[],
        &[
            ("METRO_TELEGRAM_TOKEN", TOKEN),
            ("METRO_TELEGRAM_API_URL", &url),
        ],
    );
    let s = wait_status(&d, "unreachable", |s| s.contains("cannot reach"));
    assert!(s.contains(&url), "{s}");
    assert!(!s.contains(TOKEN), "{s}");
    assert!(!d.stderr().contains(TOKEN), "the token is never logged");
}

#[test]
fn without_a_token_the_station_is_disabled() {
    let d = Daemon::start();
    let row = station(&d);
    assert_eq!(row["enabled"], false);
    assert!(
        row["status"].as_str().unwrap().starts_with("disabled"),
        "{row}"
    );
    let mut c = d.connect();
    for op in [
        json!({"op": "send", "line": "telegram/1", "text": "x"}),
        json!({"op": "edit", "line": "telegram/1", "messageId": "1", "text": "x"}),
        json!({"op": "react", "line": "telegram/1", "messageId": "1", "emoji": "👍"}),
        json!({"op": "download", "line": "telegram/1", "messageId": "1", "outDir": "/tmp"}),
        json!({"op": "allow", "code": "ABCD-EFGH"}),
        json!({"op": "deny", "userId": 5}),
    ] {
        c.err(op, "unavailable");
    }
    let l = c.ok(json!({"op": "allowList"}));
    assert_eq!(l["access"], json!([]));
    c.ok(json!({"op": "fetch", "line": "telegram/1"}));
    // No telegram counters while it does not run (the webhook station,
    // which runs, has its own).
    let counted = c.ok(json!({"op": "stats"}))["stations"].clone();
    assert!(counted.get("telegram").is_none(), "{counted}");
    assert!(counted.get("webhook").is_some(), "{counted}");
}

#[test]
fn metroctl_reply_fetch_and_edit() {
    let fake = Fake::start();
    let d = start(&fake, "42");
    let inbound = logged(&d, fake.push(text_update(5, 42, 42, "Ann", "ping")));
    let id = inbound["id"].as_str().unwrap();
    let out = ctl_ok(
        &d,
        &[
            "reply",
            "telegram/42",
            id,
            "pong",
            "--from",
            A,
            "--buttons",
            "[[\"again\"]]",
        ],
    );
    let a: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(a["claim"], "claimed");
    let sent = fake.calls("sendMessage");
    assert_eq!(sent[0].params["text"], "pong");
    assert_eq!(sent[0].params["reply_parameters"]["message_id"], 5);
    ctl_ok(
        &d,
        &[
            "edit",
            "telegram/42",
            a["id"].as_str().unwrap(),
            "pong!",
            "--from",
            A,
        ],
    );
    assert_eq!(fake.calls("editMessageText")[0].params["text"], "pong!");
    ctl_ok(&d, &["react", "telegram/42", "5", "👀", "--no-claim"]);
    let lines = ctl_ok(&d, &["fetch", "telegram/42", "--limit", "10", "--json"]);
    let kinds: Vec<String> = lines
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["kind"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(kinds, vec!["inbound", "outbound", "edit", "react"]);
}

#[test]
fn the_token_can_come_from_the_config_file_which_must_be_private() {
    use std::os::unix::fs::PermissionsExt;
    let fake = Fake::start();
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[telegram]\ntoken = \"{TOKEN}\"\napi_url = \"{}\"\nallow = [\"42\"]\n",
            fake.url
        ),
    )
    .unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = Command::new(METROD)
        .arg("--state-dir")
        .arg(tmp.path().join("state"))
        .env("METRO_CONFIG", &config)
        .env("METRO_WEBHOOK_ADDR", "off")
        .env_remove("METRO_TELEGRAM_TOKEN")
        .env_remove("METRO_TELEGRAM_API_URL")
        .env_remove("METRO_TELEGRAM_ALLOW")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("chmod 600"), "{err}");
    assert!(!err.contains(TOKEN), "{err}");

    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
    let c = config.display().to_string();
    let d = Daemon::start_env(&[], &[("METRO_CONFIG", &c)]);
    fake.watch_log(d.history_path());
    wait_status(&d, "ok", |s| s == "ok");
    logged(
        &d,
        fake.push(text_update(1, 42, 42, "Ann", "via the config")),
    );
    let u = fake.push(text_update(2, 43, 43, "Bo", "not allowed"));
    fake.wait("confirmed", PATIENCE, |f| !f.pending().contains(&u));
    assert!(with_update(&d, u).is_empty());
}
