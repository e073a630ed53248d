//! The Discord station against a real daemon and a fake Discord
//! (tests/fake_discord: REST on axum, a gateway on tokio-tungstenite):
//! every dispatch kind in order, the bot's own and other bots' messages,
//! access control and pairing, every outbound op with its event and
//! auto-claim, the id map across restarts, rate-limit headers and 429s,
//! gateway drops with RESUME and re-IDENTIFY, status in words, bad input,
//! and the metroctl commands.

mod common;
mod fake_discord;

use std::time::{Duration, Instant};

use common::{
    check_schema, ctl_ok, station_counters, station_row, wait_station_counter, wait_station_status,
    Client, Daemon,
};
use fake_discord::*;
use serde_json::{json, Value};

const A: &str = "metro://claude/user/a";
const B: &str = "metro://codex/user/b";
/// A server channel, its server, and a DM channel.
const CH: u64 = 1_184_011_225_150_619_740;
const GUILD: u64 = 1_184_011_225_150_619_700;
const DM: u64 = 1_184_011_225_150_619_999;
const ANN: u64 = 204_981_117_012_345_678;
const STRANGER: u64 = 99_000_000_000_000_099;
const OTHER_BOT: u64 = 77_000_000_000_000_077;

fn line(channel: u64) -> String {
    format!("metro://discord/{channel}")
}

fn start(fake: &Fake, allow: &str) -> Daemon {
    start_env(fake.env(allow))
}

fn start_env(env: Vec<(String, String)>) -> Daemon {
    Daemon::start_env(&[], &env)
}

/// The discord events, oldest first, as the daemon serves them (only what
/// is committed: an agent never sees an event before that).
fn dc_events(d: &Daemon) -> Vec<Value> {
    let h = d
        .connect()
        .ok(json!({"op": "history", "station": "discord", "limit": 1000}));
    let mut v = h["entries"].as_array().cloned().unwrap_or_default();
    v.reverse();
    v
}

/// Waits until the log holds an event that `f` picks; returns it.
fn logged(d: &Daemon, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(e) = dc_events(d).into_iter().find(&f) {
            return e;
        }
        assert!(
            Instant::now() < deadline,
            "{what} never logged: {}",
            d.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn with_message(d: &Daemon, kind: &str, mid: u64) -> Value {
    logged(d, &format!("{kind} {mid}"), |e| {
        e["kind"] == kind && e["messageId"].as_str() == Some(mid.to_string().as_str())
    })
}

fn station(d: &Daemon) -> Value {
    station_row(d, "discord")
}

fn wait_status(d: &Daemon, what: &str, f: impl Fn(&str) -> bool) -> String {
    wait_station_status(d, "discord", what, f)
}

fn counters(d: &Daemon) -> Value {
    station_counters(d, "discord")
}

fn wait_counter(d: &Daemon, counter: &str, n: u64) {
    wait_station_counter(d, "discord", counter, n)
}

/// A daemon connected to the fake's gateway.
fn ready(fake: &Fake, allow: &str) -> Daemon {
    let d = start(fake, allow);
    fake.wait_ready(1);
    wait_status(&d, "ok", |s| s == "ok");
    d
}

fn ann() -> Value {
    user(ANN, "ann", false)
}

/// A message from `author` in the server channel.
fn guild_message(id: u64, author: Value, content: &str) -> Value {
    let m = message(CH, id, author.clone(), content);
    with(
        m,
        json!({"guild_id": GUILD.to_string(), "member": with(member(author), json!({"nick": "Annie"}))}),
    )
}

#[test]
fn every_dispatch_kind_becomes_one_event_in_order() {
    let fake = Fake::start();
    let d = ready(&fake, &ANN.to_string());
    let row = station(&d);
    assert_eq!(row["enabled"], true);
    assert_eq!(row["bot"], format!("@{BOT_NAME}"));
    assert_eq!(row["apiUrl"], json!(fake.url));
    // The gateway was asked for what metro needs, Message Content included.
    let intents = fake.identifies()[0]["intents"].as_u64().unwrap();
    assert_ne!(intents & MESSAGE_CONTENT, 0);
    // METRO_DISCORD_GATEWAY_URL skips the lookup.
    assert!(fake.calls_to("GET", "/api/v10/gateway").is_empty());

    fake.add_channel(CH, GUILD, "deploys");
    let mut sub = d.connect();
    sub.subscribe(json!({"op": "subscribe", "as": A, "follow": true, "since": "tail"}));

    // A message with a file, in a server channel.
    let url = format!("{}/cdn/attachments/{CH}/5/report.pdf", fake.url);
    fake.add_file(
        &format!("/cdn/attachments/{CH}/5/report.pdf"),
        b"%PDF-1.4 fake",
    );
    fake.dispatch(
        "MESSAGE_CREATE",
        with(
            guild_message(1001, ann(), "deploy status?"),
            json!({"attachments": [attachment(5, "report.pdf", 13, &url, "application/pdf")]}),
        ),
    );
    // A reply to it, an edit of it, reactions, a button press.
    fake.dispatch(
        "MESSAGE_CREATE",
        with(
            guild_message(1002, ann(), "and the logs"),
            json!({"type": 19, "message_reference": {"message_id": "1001", "channel_id": CH.to_string(), "guild_id": GUILD.to_string()}}),
        ),
    );
    let edited = with(
        guild_message(1001, ann(), "deploy status? (prod)"),
        json!({"edited_timestamp": "2026-11-28T06:00:00.000000+00:00"}),
    );
    fake.dispatch("MESSAGE_UPDATE", edited);
    // An update that is not an edit (an embed unfolding) is not stored.
    fake.dispatch(
        "MESSAGE_UPDATE",
        json!({"id": "1002", "channel_id": CH.to_string(), "guild_id": GUILD.to_string(), "embeds": []}),
    );
    fake.dispatch(
        "MESSAGE_REACTION_ADD",
        reaction_add(CH, 1001, ANN, "👍", Some(GUILD)),
    );
    fake.dispatch(
        "MESSAGE_REACTION_REMOVE",
        reaction_remove(CH, 1001, ANN, "👍", Some(GUILD)),
    );
    let bot_msg = message(CH, 1003, bot_user(), "pick one");
    fake.dispatch(
        "INTERACTION_CREATE",
        button_interaction(555, "tok-555", CH, bot_msg, ann(), "deploy", Some(GUILD)),
    );

    let frames = sub.events(6);
    let evs: Vec<&Value> = frames.iter().map(|f| &f["event"]).collect();
    let kinds: Vec<&str> = evs.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["inbound", "inbound", "edit", "react", "react", "callback"],
        "{evs:?}"
    );
    for e in &evs {
        assert_eq!(e["station"], "discord");
        assert_eq!(e["line"], line(CH));
        assert_eq!(e["to"], line(CH));
        assert_eq!(e["from"], format!("metro://discord/user/{ANN}"));
        assert_eq!(e["guildId"], GUILD.to_string());
    }
    let first = evs[0];
    assert_eq!(first["text"], "deploy status?");
    assert_eq!(first["fromName"], "Annie", "the server nickname");
    assert_eq!(first["messageId"], "1001");
    assert_eq!(first["attachments"][0]["type"], "document");
    assert_eq!(first["attachments"][0]["name"], "report.pdf");
    assert_eq!(first["attachments"][0]["url"], url);
    assert_eq!(evs[1]["replyTo"], "1001");
    assert_eq!(evs[2]["text"], "deploy status? (prod)");
    assert_eq!(evs[2]["originalId"], first["id"]);
    assert!(evs[2]["editedAt"]
        .as_str()
        .unwrap()
        .starts_with("2026-11-28T06:00:00"));
    assert_eq!(evs[3]["emoji"], "👍");
    assert_eq!(evs[3]["originalId"], first["id"]);
    assert_eq!(evs[4]["emoji"], "");
    assert_eq!(evs[4]["removedEmoji"], "👍");
    assert_eq!(evs[5]["text"], "deploy");
    assert_eq!(evs[5]["messageId"], "1003");
    assert_eq!(evs[5]["interactionId"], "555");
    // The press is acknowledged (deferred update) once stored.
    let acks = fake.wait_calls("POST", "/api/v10/interactions/555/tok-555/callback", 1);
    assert_eq!(acks[0].body["type"], 6);
    assert_eq!(counters(&d)["received"], 6);
    // An acknowledgement Discord refuses is logged, without the
    // interaction's token.
    fake.fail_next(
        "POST",
        "/api/v10/interactions/557/",
        1,
        500,
        json!({"message": "oops", "code": 0}),
        vec![],
    );
    let bot_msg = message(CH, 1004, bot_user(), "pick again");
    fake.dispatch(
        "INTERACTION_CREATE",
        button_interaction(557, "tok-secret-557", CH, bot_msg, ann(), "x", Some(GUILD)),
    );
    let deadline = Instant::now() + PATIENCE;
    while !d.stderr().contains("not acknowledged") {
        assert!(Instant::now() < deadline, "no warning: {}", d.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(d.stderr().contains("/interactions/557/<token>/callback"));
    assert!(!d.stderr().contains("tok-secret-557"));
    assert_eq!(counters(&d)["received"], 7);
    assert!(counters(&d)["skipped"].as_u64().unwrap() >= 1);

    // Many messages and edits back to back keep their order in the log.
    for i in 0..40u64 {
        fake.dispatch(
            "MESSAGE_CREATE",
            guild_message(2000 + i, ann(), &format!("m{i}")),
        );
        fake.dispatch(
            "MESSAGE_UPDATE",
            with(
                guild_message(2000 + i, ann(), &format!("m{i} edited")),
                json!({"edited_timestamp": "2026-11-28T06:01:00.000000+00:00"}),
            ),
        );
    }
    with_message(&d, "edit", 2039);
    let tail: Vec<String> = dc_events(&d)
        .iter()
        .filter(|e| e["messageId"].as_str().unwrap_or("").starts_with('2'))
        .map(|e| e["text"].as_str().unwrap_or("").to_string())
        .collect();
    let want: Vec<String> = (0..40)
        .flat_map(|i| [format!("m{i}"), format!("m{i} edited")])
        .collect();
    assert_eq!(tail, want);
    // The channel's name was looked up once, and `lines` shows it.
    let path = format!("/api/v10/channels/{CH}");
    let lookups = fake
        .calls_to("GET", &path)
        .into_iter()
        .filter(|c| c.path == path)
        .count();
    assert_eq!(lookups, 1);
    assert_eq!(dc_events(&d).last().unwrap()["lineName"], "#deploys");
    let lines = d.connect().ok(json!({"op": "lines"}));
    let row = lines["lines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["line"] == line(CH))
        .cloned()
        .expect("the channel in lines");
    assert_eq!(row["name"], "#deploys");
    for e in dc_events(&d)
        .iter()
        .filter(|e| e["kind"] == "edit" && e["messageId"].as_str().unwrap_or("").starts_with('2'))
    {
        assert!(
            e["originalId"].is_string(),
            "edit without its original: {e}"
        );
    }
    check_schema(&sub, &d);
}

#[test]
fn own_messages_never_come_back_and_bots_need_their_id_listed() {
    let fake = Fake::start();
    let mut d = ready(&fake, "*");
    // The bot's own message, edit and reaction.
    fake.dispatch(
        "MESSAGE_CREATE",
        message(DM, 3001, bot_user(), "hi from me"),
    );
    fake.dispatch(
        "MESSAGE_REACTION_ADD",
        reaction_add(DM, 3001, BOT_ID, "✅", None),
    );
    // Another bot, and a webhook, with `*` in force.
    let other = user(OTHER_BOT, "ci-bot", true);
    fake.dispatch(
        "MESSAGE_CREATE",
        guild_message(3002, other.clone(), "build green"),
    );
    fake.dispatch(
        "MESSAGE_CREATE",
        with(
            guild_message(3003, user(55, "hook", false), "from a webhook"),
            json!({"webhook_id": "66"}),
        ),
    );
    // A human, so we know the ones before were handled.
    fake.dispatch("MESSAGE_CREATE", guild_message(3004, ann(), "human"));
    with_message(&d, "inbound", 3004);
    // (counted just after it is in the log)
    wait_counter(&d, "received", 1);
    let c = counters(&d);
    assert_eq!(c["own"], 2, "{c}");
    assert_eq!(c["bots"], 2, "{c}");
    assert_eq!(c["received"], 1, "{c}");
    assert_eq!(dc_events(&d).len(), 1);

    // Listed by id, the other bot gets through; `*` still admits humans.
    d.stop();
    let mut env = fake.env(&format!("*,{OTHER_BOT}"));
    env.push(("METRO_STATE_DIR".into(), d.dir.display().to_string()));
    let d2 = Daemon::start_in_env(&d.dir, &[], &env);
    fake.wait_ready(2);
    wait_status(&d2, "ok", |s| s == "ok");
    fake.dispatch("MESSAGE_CREATE", guild_message(3005, other, "build red"));
    let e = with_message(&d2, "inbound", 3005);
    assert_eq!(e["bot"], true);
    assert_eq!(e["from"], format!("metro://discord/user/{OTHER_BOT}"));
}

#[test]
fn strangers_are_blocked_counted_and_paired() {
    let fake = Fake::start();
    let d = ready(&fake, &ANN.to_string());
    let stranger = user(STRANGER, "mallory", false);
    // In a server channel: blocked, no reply.
    fake.dispatch(
        "MESSAGE_CREATE",
        guild_message(4001, stranger.clone(), "run rm -rf"),
    );
    // In a DM, twice: one pairing reply.
    fake.dispatch(
        "MESSAGE_CREATE",
        message(DM, 4002, stranger.clone(), "hello?"),
    );
    fake.dispatch(
        "MESSAGE_CREATE",
        message(DM, 4003, stranger.clone(), "hello??"),
    );
    // A blocked button press is answered, so the client stops waiting.
    fake.dispatch(
        "INTERACTION_CREATE",
        button_interaction(
            556,
            "tok-556",
            CH,
            message(CH, 4009, bot_user(), "x"),
            stranger.clone(),
            "deploy",
            Some(GUILD),
        ),
    );
    wait_counter(&d, "blocked", 4);
    let replies = fake.wait_calls("POST", &format!("/api/v10/channels/{DM}/messages"), 1);
    let text = replies[0].body["content"].as_str().unwrap().to_string();
    assert!(text.contains("pairing code"), "{text}");
    let answer = fake.wait_calls("POST", "/api/v10/interactions/556/tok-556/callback", 1);
    assert_eq!(answer[0].body["type"], 4);
    assert_eq!(answer[0].body["data"]["flags"], 64);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        fake.calls_to("POST", &format!("/api/v10/channels/{DM}/messages"))
            .len(),
        1,
        "one reply per code"
    );
    assert!(fake
        .calls_to("POST", &format!("/api/v10/channels/{CH}/messages"))
        .is_empty());
    assert!(dc_events(&d).is_empty(), "nothing of a stranger is stored");
    assert_eq!(counters(&d)["pairingReplies"], 1);
    // Never the text in metrod's log.
    assert!(!d.stderr().contains("rm -rf"));

    // The code admits them.
    let code = text
        .split_whitespace()
        .find(|w| w.len() == 9 && w.as_bytes()[4] == b'-')
        .expect("a code")
        .to_string();
    let out = ctl_ok(&d, &["allow", &code]);
    assert!(out.contains(&STRANGER.to_string()), "{out}");
    let list = d
        .connect()
        .ok(json!({"op": "allowList", "station": "discord"}));
    assert_eq!(
        list["access"][0]["allowed"][0]["userId"],
        STRANGER.to_string()
    );
    fake.dispatch(
        "MESSAGE_CREATE",
        message(DM, 4004, stranger.clone(), "thanks"),
    );
    let e = with_message(&d, "inbound", 4004);
    assert_eq!(e["lineName"], "mallory");
    // deny blocks them again.
    ctl_ok(&d, &["deny", &STRANGER.to_string(), "--station", "discord"]);
    fake.dispatch("MESSAGE_CREATE", message(DM, 4005, stranger, "again"));
    wait_counter(&d, "blocked", 5);
    assert_eq!(dc_events(&d).len(), 1);
}

fn send_ok(c: &mut Client, v: Value) -> Value {
    c.ok(v)
}

#[test]
fn send_splits_files_buttons_replies_and_logs_each_op() {
    let fake = Fake::start();
    let d = ready(&fake, &ANN.to_string());
    fake.dispatch(
        "MESSAGE_CREATE",
        guild_message(5001, ann(), "report please"),
    );
    let inbound = with_message(&d, "inbound", 5001);
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("a.png");
    std::fs::write(&png, b"\x89PNG fake").unwrap();
    let pdf = dir.path().join("r.pdf");
    std::fs::write(&pdf, b"%PDF fake").unwrap();
    let long = format!("{}\n\n{}", "a".repeat(1500), "b".repeat(1500));

    let mut c = d.connect();
    let r = send_ok(
        &mut c,
        json!({"op": "send", "line": line(CH), "from": A, "text": long,
               "replyTo": inbound["id"], "images": [png], "documents": [pdf],
               "buttons": [["Deploy", {"text": "Docs", "url": "https://example.com/docs"}]]}),
    );
    assert_eq!(r["claim"], "claimed");
    let ids = r["messageIds"].as_array().unwrap().clone();
    assert_eq!(ids.len(), 2, "{r}");
    assert_eq!(r["messageId"], ids[0]);
    let posts = fake.calls_to("POST", &format!("/api/v10/channels/{CH}/messages"));
    assert_eq!(posts.len(), 2);
    // The first part carries the files and the reply; the last the buttons.
    assert_eq!(posts[0].body["content"], "a".repeat(1500));
    assert_eq!(posts[0].body["message_reference"]["message_id"], "5001");
    assert_eq!(posts[0].files.len(), 2);
    assert_eq!(posts[0].files[0].1, "a.png");
    assert!(posts[0].body.get("components").is_none());
    assert_eq!(posts[1].body["content"], "b".repeat(1500));
    assert_eq!(
        posts[1].body["components"][0]["components"][0]["custom_id"],
        "Deploy"
    );
    assert_eq!(
        posts[1].body["components"][0]["components"][1]["url"],
        "https://example.com/docs"
    );
    assert_eq!(posts[1].body["allowed_mentions"]["parse"], json!(["users"]));
    let out = logged(&d, "the outbound event", |e| e["kind"] == "outbound");
    assert_eq!(out["from"], A);
    assert_eq!(out["messageIds"], json!(ids));
    assert_eq!(out["replyTo"], "5001");
    assert_eq!(out["id"], r["id"]);

    // The metro id of the sent message works for edit and react; the
    // snowflake too.
    let e = c.ok(
        json!({"op": "edit", "line": line(CH), "from": B, "messageId": r["id"], "text": "fixed"}),
    );
    assert_eq!(e["claim"], "skipped", "a owns the line");
    let first: u64 = ids[0].as_str().unwrap().parse().unwrap();
    let patched = fake.wait_calls(
        "PATCH",
        &format!("/api/v10/channels/{CH}/messages/{first}"),
        1,
    );
    assert_eq!(patched[0].body["content"], "fixed");
    let ev = logged(&d, "the edit", |e| e["kind"] == "edit" && e["from"] == B);
    assert_eq!(ev["originalId"], r["id"]);
    c.ok(json!({"op": "react", "line": line(CH), "from": A, "messageId": "5001", "emoji": "👍"}));
    assert_eq!(fake.reactions(CH, 5001), ["👍"]);
    c.ok(json!({"op": "react", "line": line(CH), "from": A, "messageId": inbound["id"], "emoji": ""}));
    assert!(
        fake.reactions(CH, 5001).is_empty(),
        "the bot's reaction went"
    );
    let reacts: Vec<Value> = dc_events(&d)
        .into_iter()
        .filter(|e| e["kind"] == "react" && e["from"] == A)
        .collect();
    assert_eq!(reacts.len(), 2);
    assert_eq!(reacts[1]["emoji"], "");
    assert_eq!(reacts[1]["originalId"], inbound["id"]);

    // The bot's own message never comes back as an inbound event.
    let before = dc_events(&d).len();
    fake.dispatch("MESSAGE_CREATE", fake.messages(CH).last().unwrap().clone());
    wait_counter(&d, "own", 1);
    assert_eq!(dc_events(&d).len(), before);

    // Files only, more than 10: two messages.
    let many: Vec<String> = (0..12)
        .map(|i| {
            let p = dir.path().join(format!("f{i}.txt"));
            std::fs::write(&p, format!("file {i}")).unwrap();
            p.display().to_string()
        })
        .collect();
    let r = c.ok(json!({"op": "send", "line": line(CH), "text": "", "documents": many}));
    assert_eq!(r["messageIds"].as_array().unwrap().len(), 2);
    let posts = fake.calls_to("POST", &format!("/api/v10/channels/{CH}/messages"));
    let n = posts.len();
    assert_eq!(posts[n - 2].files.len(), 10);
    assert_eq!(posts[n - 1].files.len(), 2);
    check_schema(&c, &d);
}

#[test]
fn download_fetch_and_ids_survive_a_restart() {
    let fake = Fake::start();
    let mut d = ready(&fake, &ANN.to_string());
    let url = format!("{}/cdn/attachments/{CH}/7/notes.txt", fake.url);
    fake.add_file(&format!("/cdn/attachments/{CH}/7/notes.txt"), b"the notes");
    let msg = with(
        guild_message(6001, ann(), "see attached"),
        json!({"attachments": [
            attachment(7, "notes.txt", 9, &url, "text/plain"),
            attachment(8, "../../etc/passwd", 9, &url, "text/plain"),
        ]}),
    );
    fake.dispatch("MESSAGE_CREATE", msg);
    let inbound = with_message(&d, "inbound", 6001);
    let out = tempfile::tempdir().unwrap();
    let mut c = d.connect();
    let r = c.ok(
        json!({"op": "download", "line": line(CH), "messageId": inbound["id"],
                        "outDir": out.path()}),
    );
    let files: Vec<String> = r["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_string())
        .collect();
    assert_eq!(files.len(), 2);
    assert_eq!(std::fs::read(&files[0]).unwrap(), b"the notes");
    assert!(files[0].ends_with("/notes.txt"));
    // A sender's name never leaves the directory.
    assert!(files[1].starts_with(&out.path().display().to_string()));
    assert!(files[1].ends_with("/passwd"));
    // Again: no overwrite.
    let r = c.ok(
        json!({"op": "download", "line": line(CH), "messageId": "6001",
                        "outDir": out.path()}),
    );
    assert!(r["files"][0].as_str().unwrap().ends_with("notes (2).txt"));
    // The file server fails: an error, and no half file left behind.
    let fresh = tempfile::tempdir().unwrap();
    fake.fail_next("GET", "/cdn/", 1, 404, json!({"message": "gone"}), vec![]);
    let e = c.err(
        json!({"op": "download", "line": line(CH), "messageId": "6001", "outDir": fresh.path()}),
        "upstream",
    );
    assert!(e["message"].as_str().unwrap().contains("404"), "{e}");
    assert_eq!(std::fs::read_dir(fresh.path()).unwrap().count(), 0);

    // fetch reads Discord's history (newest `limit`, oldest first).
    fake.add_message(
        CH,
        message(CH, 5990, user(31, "old", false), "before metro"),
    );
    let sent = c.ok(json!({"op": "send", "line": line(CH), "from": A, "text": "on it"}));
    let f = c.ok(json!({"op": "fetch", "line": line(CH), "limit": 3}));
    let msgs = f["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 3, "{f}");
    let mids: Vec<&str> = msgs
        .iter()
        .map(|m| m["messageId"].as_str().unwrap())
        .collect();
    assert_eq!(&mids[..2], ["5990", "6001"]);
    assert!(
        msgs[0].get("id").is_none(),
        "never stored by metro: {}",
        msgs[0]
    );
    assert_eq!(msgs[1]["id"], inbound["id"]);
    assert_eq!(msgs[2]["id"], sent["id"]);
    assert_eq!(msgs[2]["kind"], "outbound");
    assert_eq!(msgs[0]["from"], "metro://discord/user/31");
    let path = format!("/api/v10/channels/{CH}/messages");
    let list = fake.calls_to("GET", &path);
    let q = &list
        .iter()
        .find(|c| c.path == path)
        .expect("a history read")
        .query;
    assert!(q.contains("limit=3"), "{q}");
    check_schema(&c, &d);
    drop(c);

    // After a restart the metro ids still resolve (the id map), and a
    // message Discord sends again is not stored twice (seeded from the log).
    d.stop();
    d.restart();
    fake.wait_ready(2);
    wait_status(&d, "ok", |s| s == "ok");
    let mut c = d.connect();
    c.ok(json!({"op": "send", "line": line(CH), "text": "re", "replyTo": inbound["id"]}));
    let last = fake.calls_to("POST", &format!("/api/v10/channels/{CH}/messages"));
    assert_eq!(
        last.last().unwrap().body["message_reference"]["message_id"],
        "6001"
    );
    c.ok(json!({"op": "edit", "line": line(CH), "messageId": sent["id"], "text": "done"}));
    fake.dispatch("MESSAGE_CREATE", guild_message(6001, ann(), "see attached"));
    fake.dispatch("MESSAGE_CREATE", guild_message(6002, ann(), "new"));
    with_message(&d, "inbound", 6002);
    assert_eq!(counters(&d)["duplicates"], 1);
    let copies = dc_events(&d)
        .into_iter()
        .filter(|e| e["kind"] == "inbound" && e["messageId"] == "6001")
        .count();
    assert_eq!(copies, 1);
}

#[test]
fn rate_limit_headers_and_429_are_honoured() {
    let fake = Fake::start();
    let d = ready(&fake, "*");
    let mut c = d.connect();
    // Discord's bucket: 2 messages a second in a channel, enforced.
    fake.set_bucket(2, Duration::from_millis(1000));
    let start = Instant::now();
    for i in 0..5 {
        c.ok(json!({"op": "send", "line": line(CH), "text": format!("m{i}")}));
    }
    assert_eq!(
        fake.rate_limited(),
        0,
        "metro waits for the reset the headers announce"
    );
    assert!(start.elapsed() >= Duration::from_millis(1000));
    assert_eq!(fake.messages(CH).len(), 5);

    // A 429 is waited out and the call made again.
    fake.set_bucket(50, Duration::from_millis(1000));
    let limited =
        json!({"message": "You are being rate limited.", "retry_after": 0.4, "global": false});
    fake.fail_next(
        "POST",
        &format!("/api/v10/channels/{CH}/messages"),
        2,
        429,
        limited,
        vec![("retry-after".into(), "1".into())],
    );
    let t = Instant::now();
    let r = c.ok(json!({"op": "send", "line": line(CH), "text": "after the limit"}));
    assert!(
        t.elapsed() >= Duration::from_millis(800),
        "waited twice 0.4 s"
    );
    assert!(r["messageId"].is_string());
    assert_eq!(counters(&d)["retries"], 2);
    // A global 429 holds every channel.
    fake.fail_next(
        "POST",
        &format!("/api/v10/channels/{DM}/messages"),
        1,
        429,
        json!({"message": "You are being rate limited.", "retry_after": 0.5, "global": true}),
        vec![],
    );
    let other = std::thread::spawn({
        let mut c2 = d.connect();
        move || c2.ok(json!({"op": "send", "line": line(DM), "text": "dm"}))
    });
    let dm_path = format!("/api/v10/channels/{DM}/messages");
    let limited_at = fake
        .wait_calls("POST", &dm_path, 1)
        .into_iter()
        .find(|c| c.status == 429)
        .expect("the 429")
        .at;
    // Once metro has taken the 429 in (its retry is counted just after the
    // hold is set; a send made before that cannot know of it), a channel
    // that sent nothing yet (its own budget is full) waits out the global
    // hold too.
    wait_counter(&d, "retries", 3);
    const QUIET: u64 = 1_184_011_225_150_610_001;
    c.ok(json!({"op": "send", "line": line(QUIET), "text": "held"}));
    other.join().unwrap();
    let ch_path = format!("/api/v10/channels/{QUIET}/messages");
    let held = fake
        .calls_to("POST", &ch_path)
        .into_iter()
        .filter(|c| c.path == ch_path && c.at > limited_at)
        .map(|c| c.at)
        .min()
        .expect("the send on the other channel");
    assert!(
        held.duration_since(limited_at) >= Duration::from_millis(450),
        "the other channel went {:?} after a global 429 of 0.5 s",
        held.duration_since(limited_at)
    );
    // Longer than metro waits: an upstream error, nothing logged.
    let before = d.history().len();
    fake.fail_next(
        "POST",
        &format!("/api/v10/channels/{CH}/messages"),
        1,
        429,
        json!({"message": "You are being rate limited.", "retry_after": 300.0, "global": false}),
        vec![],
    );
    let e = c.err(
        json!({"op": "send", "line": line(CH), "text": "too soon"}),
        "upstream",
    );
    assert!(e["message"].as_str().unwrap().contains("rate limit"), "{e}");
    assert_eq!(d.history().len(), before);
    // Other refusals carry Discord's own words.
    fake.fail_next(
        "POST",
        &format!("/api/v10/channels/{CH}/messages"),
        1,
        403,
        json!({"message": "Missing Permissions", "code": 50013}),
        vec![],
    );
    let e = c.err(
        json!({"op": "send", "line": line(CH), "text": "x"}),
        "upstream",
    );
    assert!(e["message"]
        .as_str()
        .unwrap()
        .contains("Missing Permissions"));
    let e = c.err(
        json!({"op": "edit", "line": line(CH), "messageId": "42", "text": "x"}),
        "not_found",
    );
    assert!(
        e["message"].as_str().unwrap().contains("Unknown Message"),
        "{e}"
    );
}

#[test]
fn a_dropped_gateway_resumes_and_nothing_is_lost_or_doubled() {
    let fake = Fake::start();
    let d = ready(&fake, "*");
    fake.dispatch("MESSAGE_CREATE", guild_message(7001, ann(), "before"));
    with_message(&d, "inbound", 7001);
    let session = fake.session_id().expect("a session");

    // A close Discord allows resuming: what is dispatched meanwhile comes
    // with the RESUME's replay.
    fake.disconnect(Some(4000));
    fake.dispatch("MESSAGE_CREATE", guild_message(7002, ann(), "during 1"));
    fake.dispatch("MESSAGE_CREATE", guild_message(7003, ann(), "during 2"));
    fake.wait("a resume", PATIENCE, |f| f.resumed() >= 1);
    let resume = &fake.resumes()[0];
    assert_eq!(resume["session_id"], json!(session));
    assert!(resume["seq"].as_u64().unwrap() >= 2, "{resume}");
    with_message(&d, "inbound", 7003);
    wait_counter(&d, "resumes", 1);

    // The TCP connection breaks without a close frame: the missed
    // heartbeat ack shows it, and the session resumes again.
    fake.disconnect(None);
    fake.dispatch("MESSAGE_CREATE", guild_message(7004, ann(), "during 3"));
    with_message(&d, "inbound", 7004);

    // op 7 RECONNECT: resume too.
    fake.send_reconnect();
    fake.wait("a third resume", PATIENCE, |f| f.resumed() >= 3);
    fake.dispatch("MESSAGE_CREATE", guild_message(7005, ann(), "after op 7"));
    with_message(&d, "inbound", 7005);
    assert_eq!(
        fake.identifies().len(),
        1,
        "all of that resumed one session"
    );

    // An invalid session that cannot be resumed: a new IDENTIFY.
    fake.invalidate_session(false);
    fake.wait("a new session", Duration::from_secs(30), |f| {
        f.identifies().len() >= 2 && f.readies() >= 2
    });
    fake.dispatch("MESSAGE_CREATE", guild_message(7006, ann(), "new session"));
    with_message(&d, "inbound", 7006);
    wait_status(&d, "ok", |s| s == "ok");
    wait_counter(&d, "sessions", 2);

    let mids: Vec<String> = dc_events(&d)
        .iter()
        .map(|e| e["messageId"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(mids, ["7001", "7002", "7003", "7004", "7005", "7006"]);
    assert!(fake.heartbeats() > 0);
}

#[test]
fn status_says_what_is_wrong_in_words() {
    // A wrong token: REST says 401.
    let fake = Fake::start();
    let d = start_env(fake.env_with_token("bad.token.here", "*"));
    let s = wait_status(&d, "about the token", |s| s.contains("token"));
    assert!(s.starts_with("down: Discord refused the bot token"), "{s}");
    assert!(!s.contains("bad.token.here") && !d.stderr().contains("bad.token.here"));
    drop(d);

    // The Message Content intent is not allowed for this bot.
    let fake = Fake::start();
    fake.refuse_privileged_intents(true);
    let d = start(&fake, "*");
    let s = wait_status(&d, "about the intent", |s| s.contains("Message Content"));
    assert!(s.contains("4014") && s.contains("developer portal"), "{s}");
    // Allowed again: the next client gets through.
    fake.refuse_privileged_intents(false);
    wait_status(&d, "ok", |s| s == "ok");
    drop(d);

    // REST takes the token but the gateway refuses it (4004).
    let fake = Fake::start();
    fake.refuse_identify(true);
    let d = start(&fake, "*");
    let s = wait_status(&d, "about the gateway token", |s| s.contains("4004"));
    assert!(s.contains("refused the bot token at the gateway"), "{s}");
    fake.refuse_identify(false);
    wait_status(&d, "ok", |s| s == "ok");
    drop(d);

    // The gateway goes away: "disconnected since …", then back to ok.
    let fake = Fake::start();
    let d = ready(&fake, "*");
    fake.refuse_connections(true);
    fake.disconnect(Some(4000));
    let s = wait_status(&d, "disconnected", |s| s.contains("disconnected"));
    assert!(s.contains(&fake.gateway_url) && s.contains("since"), "{s}");
    fake.refuse_connections(false);
    wait_status(&d, "ok again", |s| s == "ok");
    fake.dispatch("MESSAGE_CREATE", guild_message(8001, ann(), "back"));
    with_message(&d, "inbound", 8001);

    // Without METRO_DISCORD_GATEWAY_URL the gateway is looked up; a failed
    // lookup is said, and retried.
    let fake = Fake::start();
    fake.fail_next(
        "GET",
        "/api/v10/gateway",
        1,
        502,
        json!({"message": "Bad Gateway", "code": 0}),
        vec![],
    );
    let d = start_env(fake.env_without_gateway("*"));
    let s = wait_status(&d, "about the lookup", |s| {
        s.contains("look up the gateway")
    });
    assert!(s.contains("502"), "{s}");
    fake.wait_ready(1);
    wait_status(&d, "ok", |s| s == "ok");
    assert!(!fake.calls_to("GET", "/api/v10/gateway").is_empty());
}

#[test]
fn without_a_token_discord_is_disabled_and_bad_urls_stop_metrod() {
    let d = Daemon::start();
    let row = station(&d);
    assert_eq!(row["enabled"], false);
    assert!(row["status"]
        .as_str()
        .unwrap()
        .contains("METRO_DISCORD_TOKEN"));
    let mut c = d.connect();
    let l = line(CH);
    for op in [
        json!({"op": "send", "line": l, "text": "x"}),
        json!({"op": "edit", "line": l, "messageId": "1", "text": "x"}),
        json!({"op": "react", "line": l, "messageId": "1", "emoji": "👍"}),
        json!({"op": "download", "line": l, "messageId": "1", "outDir": "/tmp"}),
        json!({"op": "fetch", "line": l}),
        json!({"op": "allowList", "station": "discord"}),
        json!({"op": "deny", "userId": "5", "station": "discord"}),
    ] {
        c.err(op, "unavailable");
    }
    drop(c);
    drop(d);

    for (key, value, says) in [
        ("METRO_DISCORD_API_URL", "not a url", "Discord API URL"),
        ("METRO_DISCORD_API_URL", "ftp://example.com", "http(s)"),
        ("METRO_DISCORD_GATEWAY_URL", "http://127.0.0.1:1", "ws(s)"),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let out = std::process::Command::new(common::METROD)
            .args(["--state-dir"])
            .arg(tmp.path().join("s"))
            .env("METRO_DISCORD_TOKEN", TOKEN)
            .env("METRO_CONFIG", tmp.path().join("none.toml"))
            .env(key, value)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{key}={value} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{key}={value}: {err}");
        assert!(!err.contains(TOKEN), "the token leaked: {err}");
    }
}

#[test]
fn bad_requests_get_clear_errors_and_change_nothing() {
    let fake = Fake::start();
    let d = ready(&fake, "*");
    fake.dispatch("MESSAGE_CREATE", guild_message(9001, ann(), "hi"));
    let inbound = with_message(&d, "inbound", 9001);
    fake.dispatch("MESSAGE_CREATE", message(DM, 9002, ann(), "dm"));
    let in_dm = with_message(&d, "inbound", 9002);
    let mut c = d.connect();
    let l = line(CH);
    let before = d.history().len();
    let posts = fake.calls_to("POST", "/api/v10/channels").len();
    let too_many_rows: Vec<Value> = (0..6).map(|i| json!([format!("b{i}")])).collect();
    let tmp = tempfile::tempdir().unwrap();
    let huge = tmp.path().join("huge.bin");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(26 << 20)
        .unwrap();
    for (req, code) in [
        (json!({"op": "send", "line": l, "text": ""}), "bad_request"),
        (
            json!({"op": "send", "line": l, "text": "x", "buttons": {"a": 1}}),
            "bad_request",
        ),
        (
            json!({"op": "send", "line": l, "text": "x", "buttons": too_many_rows}),
            "bad_request",
        ),
        (
            json!({"op": "send", "line": l, "text": "x", "buttons": [{"text": "x", "data": "d".repeat(101)}]}),
            "bad_request",
        ),
        (
            json!({"op": "send", "line": l, "text": "", "buttons": ["a"], "documents": ["/etc/hostname"]}),
            "bad_request",
        ),
        (
            json!({"op": "send", "line": l, "text": "x", "images": ["relative.png"]}),
            "bad_request",
        ),
        (
            json!({"op": "send", "line": l, "text": "x", "images": ["/no/such/file.png"]}),
            "bad_request",
        ),
        (
            json!({"op": "send", "line": l, "text": "x", "documents": [huge]}),
            "bad_request",
        ),
        (
            json!({"op": "send", "line": l, "text": "x", "replyTo": "not-an-id"}),
            "bad_request",
        ),
        (
            json!({"op": "send", "line": l, "text": "x", "replyTo": "msg_nothing"}),
            "not_found",
        ),
        // A metro id of another channel.
        (
            json!({"op": "send", "line": l, "text": "x", "replyTo": in_dm["id"]}),
            "bad_request",
        ),
        (
            json!({"op": "edit", "line": l, "messageId": inbound["id"], "text": "x".repeat(2001)}),
            "bad_request",
        ),
        (
            json!({"op": "edit", "line": l, "messageId": inbound["id"], "text": " "}),
            "bad_request",
        ),
        (
            json!({"op": "react", "line": l, "messageId": "-5", "emoji": "👍"}),
            "bad_request",
        ),
        (
            json!({"op": "download", "line": l, "messageId": "9001", "outDir": "rel/dir"}),
            "bad_request",
        ),
        (
            json!({"op": "download", "line": l, "messageId": "9001", "outDir": "/tmp/x"}),
            "bad_request",
        ),
        (
            json!({"op": "react", "line": l, "messageId": "9001", "emoji": "<:x:0>"}),
            "bad_request",
        ),
        (
            json!({"op": "react", "line": l, "messageId": "9001", "emoji": "<:half"}),
            "bad_request",
        ),
        (json!({"op": "fetch", "line": l, "limit": 0}), "bad_request"),
        (
            json!({"op": "fetch", "line": l, "limit": 101}),
            "bad_request",
        ),
        (
            json!({"op": "fetch", "line": "metro://discord/abc"}),
            "bad_request",
        ),
        (
            json!({"op": "send", "line": "discord/0x1", "text": "x"}),
            "bad_request",
        ),
        (
            json!({"op": "allowList", "station": "slack"}),
            "bad_request",
        ),
    ] {
        c.err(req, code);
    }
    assert_eq!(d.history().len(), before, "no event for a refused op");
    // An event published on a discord line by a local client, with a
    // message id Discord never gives: a clear answer, no crash.
    for bogus in ["0", "abc", "-1"] {
        let p =
            c.ok(json!({"op": "publish", "event": {"line": l, "messageId": bogus, "text": "x"}}));
        c.err(
            json!({"op": "send", "line": l, "text": "x", "replyTo": p["id"]}),
            "not_found",
        );
        c.err(
            json!({"op": "react", "line": l, "messageId": p["id"], "emoji": "👍"}),
            "not_found",
        );
    }
    assert_eq!(
        fake.calls_to("POST", "/api/v10/channels").len(),
        posts,
        "nothing reached Discord"
    );
    // An emoji Discord does not know: its own words.
    fake.fail_next(
        "PUT",
        &format!("/api/v10/channels/{CH}/messages/9001/reactions"),
        1,
        400,
        json!({"message": "Unknown Emoji", "code": 10014}),
        vec![],
    );
    let e = c.err(
        json!({"op": "react", "line": l, "messageId": "9001", "emoji": "notanemoji"}),
        "upstream",
    );
    assert!(
        e["message"].as_str().unwrap().contains("Unknown Emoji"),
        "{e}"
    );
    // Discord unreachable for REST: unavailable, in words.
    let down = Fake::start();
    let mut env = down.env("*");
    drop(down);
    env.retain(|(k, _)| k != "METRO_DISCORD_GATEWAY_URL");
    let d2 = start_env(env);
    let mut c2 = d2.connect();
    let e = c2.err(json!({"op": "send", "line": l, "text": "x"}), "unavailable");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("cannot reach Discord"),
        "{e}"
    );
}

#[test]
fn metroctl_speaks_discord() {
    let fake = Fake::start();
    let d = ready(&fake, "*");
    fake.dispatch("MESSAGE_CREATE", guild_message(9501, ann(), "question?"));
    let inbound = with_message(&d, "inbound", 9501);
    let short = format!("discord/{CH}");
    let id = inbound["id"].as_str().unwrap();
    ctl_ok(
        &d,
        &[
            "reply",
            &short,
            id,
            "the answer",
            "--from",
            A,
            "--buttons",
            r#"["Thanks"]"#,
        ],
    );
    let post = fake.wait_calls("POST", &format!("/api/v10/channels/{CH}/messages"), 1);
    assert_eq!(post[0].body["content"], "the answer");
    assert_eq!(post[0].body["message_reference"]["message_id"], "9501");
    assert_eq!(
        post[0].body["components"][0]["components"][0]["label"],
        "Thanks"
    );
    let claims = d.connect().ok(json!({"op": "claims"}));
    assert_eq!(claims["claims"][line(CH)], A);
    ctl_ok(&d, &["react", &short, "9501", "🎉", "--from", A]);
    assert_eq!(fake.reactions(CH, 9501), ["🎉"]);
    let out = ctl_ok(&d, &["fetch", &short, "--limit", "2", "--json"]);
    let rows: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["messageId"], "9501");
    assert_eq!(rows[1]["kind"], "outbound");
    let out = ctl_ok(&d, &["stations"]);
    assert!(
        out.contains("discord") && out.contains(&format!("@{BOT_NAME}")),
        "{out}"
    );
    let out = ctl_ok(&d, &["allow", "--list", "--station", "discord"]);
    assert!(out.contains("discord"), "{out}");
}

#[test]
fn the_config_file_configures_discord_and_a_reload_changes_the_allowlist() {
    use std::os::unix::fs::PermissionsExt;
    let fake = Fake::start();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("config.toml");
    let body = |allow: &[u64]| {
        let ids: Vec<String> = allow.iter().map(|a| format!("\"{a}\"")).collect();
        format!(
            "[discord]\ntoken = \"{TOKEN}\"\napi_url = \"{}\"\ngateway_url = \"{}\"\nallow = [{}]\n",
            fake.url,
            fake.gateway_url,
            ids.join(", ")
        )
    };
    let write = |text: String| {
        let next = tmp.path().join("config.toml.new");
        std::fs::write(&next, text).unwrap();
        std::fs::set_permissions(&next, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::rename(&next, &cfg).unwrap();
    };
    write(body(&[ANN]));
    let d = Daemon::start_in(
        &tmp.path().join("state"),
        &["--config", cfg.to_str().unwrap()],
    );
    fake.wait_ready(1);
    wait_status(&d, "ok", |s| s == "ok");
    let stranger = user(STRANGER, "mallory", false);
    fake.dispatch(
        "MESSAGE_CREATE",
        guild_message(9701, stranger.clone(), "one"),
    );
    wait_counter(&d, "blocked", 1);

    write(body(&[ANN, STRANGER]));
    let deadline = Instant::now() + PATIENCE;
    while d.connect().ok(json!({"op": "stats"}))["config"]["reloads"] != json!(1) {
        assert!(Instant::now() < deadline, "no reload: {}", d.stderr());
        std::thread::sleep(Duration::from_millis(50));
    }
    fake.dispatch("MESSAGE_CREATE", guild_message(9702, stranger, "two"));
    with_message(&d, "inbound", 9702);
    assert_eq!(dc_events(&d).len(), 1);

    // A gateway URL that is not ws(s):// is refused; the old config stays.
    write(body(&[ANN, STRANGER]).replace("ws://", "http://"));
    let deadline = Instant::now() + PATIENCE;
    loop {
        let c = d.connect().ok(json!({"op": "stats"}))["config"].clone();
        if let Some(e) = c["error"].as_str() {
            assert!(e.contains("[discord] gateway_url"), "{e}");
            break;
        }
        assert!(Instant::now() < deadline, "not refused: {c}");
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_status(&d, "still ok", |s| s == "ok");
    assert!(!d.stderr().contains(TOKEN), "the token was logged");
}

#[test]
fn a_new_session_reads_back_what_was_said_while_metro_was_away() {
    let fake = Fake::start();
    let mut d = ready(&fake, &ANN.to_string());
    fake.dispatch("MESSAGE_CREATE", guild_message(10001, ann(), "before"));
    fake.dispatch("MESSAGE_CREATE", message(DM, 10002, ann(), "dm before"));
    with_message(&d, "inbound", 10002);
    d.stop();

    // Said while metrod was down: Discord will not dispatch these again.
    fake.add_message(CH, guild_message(10003, ann(), "while away"));
    fake.add_message(CH, message(CH, 10004, bot_user(), "the bot's own"));
    fake.add_message(
        CH,
        guild_message(10005, user(STRANGER, "mallory", false), "stranger"),
    );
    fake.add_message(DM, message(DM, 10006, ann(), "dm while away"));
    d.restart();
    fake.wait_ready(2);
    with_message(&d, "inbound", 10003);
    with_message(&d, "inbound", 10006);
    // Live traffic after READY comes after the catch-up; a message the
    // live stream brings again is not stored twice.
    fake.dispatch("MESSAGE_CREATE", guild_message(10003, ann(), "while away"));
    fake.dispatch("MESSAGE_CREATE", guild_message(10007, ann(), "live"));
    with_message(&d, "inbound", 10007);
    let evs = dc_events(&d);
    let mids: Vec<&str> = evs
        .iter()
        .map(|e| e["messageId"].as_str().unwrap())
        .collect();
    // The DM had the newest activity, so it is read back first.
    assert_eq!(mids, ["10001", "10002", "10006", "10003", "10007"]);
    assert_eq!(evs[2]["caughtUp"], true);
    assert_eq!(evs[3]["caughtUp"], true);
    assert!(evs[4].get("caughtUp").is_none());
    let c = counters(&d);
    assert_eq!(c["caughtUp"], 2, "{c}");
    assert_eq!(c["own"], 1, "{c}");
    assert_eq!(c["blocked"], 1, "{c}");
    assert_eq!(c["duplicates"], 1, "{c}");
    // No pairing reply to an old message.
    assert!(fake
        .calls_to("POST", &format!("/api/v10/channels/{CH}/messages"))
        .is_empty());
    let reads = fake.calls_to("GET", &format!("/api/v10/channels/{CH}/messages"));
    assert!(
        reads.iter().any(|r| r.query.contains("after=10001")),
        "{reads:?}"
    );
}

#[test]
fn the_read_back_pages_through_a_busy_channel() {
    let fake = Fake::start();
    let mut d = ready(&fake, "*");
    fake.dispatch("MESSAGE_CREATE", guild_message(20000, ann(), "first"));
    with_message(&d, "inbound", 20000);
    d.stop();
    for i in 1..=150u64 {
        fake.add_message(CH, guild_message(20000 + i, ann(), &format!("away {i}")));
    }
    d.restart();
    fake.wait_ready(2);
    with_message(&d, "inbound", 20150);
    let mids: Vec<u64> = dc_events(&d)
        .iter()
        .map(|e| e["messageId"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(mids, (20000..=20150).collect::<Vec<u64>>());
    let path = format!("/api/v10/channels/{CH}/messages");
    let pages: Vec<String> = fake
        .calls_to("GET", &path)
        .into_iter()
        .filter(|c| c.path == path)
        .map(|c| c.query)
        .collect();
    assert_eq!(pages.len(), 2, "{pages:?}");
    assert!(
        pages[0].contains("after=20000") && pages[1].contains("after=20100"),
        "{pages:?}"
    );
}

#[test]
fn kill_9_while_messages_flow_loses_nothing_and_doubles_nothing() {
    let fake = Fake::start();
    let mut d = ready(&fake, "*");
    fake.dispatch("MESSAGE_CREATE", guild_message(30000, ann(), "start"));
    with_message(&d, "inbound", 30000);
    for i in 1..=60u64 {
        fake.dispatch(
            "MESSAGE_CREATE",
            guild_message(30000 + i, ann(), &format!("m{i}")),
        );
        if i == 30 {
            // Some of the burst is stored, some is in flight, some unsent.
            d.kill9();
        }
    }
    d.restart();
    fake.wait_ready(2);
    with_message(&d, "inbound", 30060);
    let mids: Vec<u64> = dc_events(&d)
        .iter()
        .map(|e| e["messageId"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(mids, (30000..=30060).collect::<Vec<u64>>());
    // What was said after the kill came back through the read-back.
    let caught = counters(&d)["caughtUp"].as_u64().unwrap();
    assert!(caught >= 30, "caught up {caught}");
    // The log is whole: every line parses.
    for l in std::fs::read_to_string(d.history_path()).unwrap().lines() {
        serde_json::from_str::<Value>(l).expect("a whole line");
    }
}

/// The shared pipeline's order (docs/broker.md §1a): a message already in
/// the log is recognised before the allowlist is asked, so a resend from a
/// sender denied since is a duplicate — not blocked again, not logged as
/// blocked — and a new message from them is blocked.
#[test]
fn a_resend_of_a_stored_message_is_a_duplicate_even_after_its_sender_is_denied() {
    let fake = Fake::start();
    let d = ready(&fake, &ANN.to_string());
    fake.dispatch("MESSAGE_CREATE", guild_message(12001, ann(), "hello"));
    with_message(&d, "inbound", 12001);
    d.connect()
        .ok(json!({"op": "deny", "userId": ANN.to_string(), "station": "discord"}));
    fake.dispatch("MESSAGE_CREATE", guild_message(12001, ann(), "hello"));
    fake.dispatch("MESSAGE_CREATE", guild_message(12002, ann(), "after"));
    // Dispatches are stored in order: 12001 was decided before 12002.
    wait_counter(&d, "blocked", 1);
    let c = counters(&d);
    assert_eq!(c["duplicates"], 1, "{c}");
    assert_eq!(c["blocked"], 1, "{c}");
    assert_eq!(c["received"], 1, "{c}");
    assert_eq!(dc_events(&d).len(), 1);
}
