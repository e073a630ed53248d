//! Hardening (issue 14, item 9): a Bot API server whose `getMe` answers
//! only `id`, `first_name` and `username` is good enough for metro, and so
//! are updates with only the fields metro reads; an update that lacks one
//! is skipped without costing its batch or stalling the poller.

mod common;
mod fake_telegram;

use common::*;
use fake_telegram::*;
use serde_json::json;

#[test]
fn a_minimal_get_me_answer_brings_the_station_up() {
    let fake = Fake::start();
    fake.fail_next(
        "getMe",
        1,
        200,
        json!({"ok": true, "result": {"id": 7, "first_name": "Tiny", "username": "tiny_bot"}}),
    );
    let env = fake.env("*");
    let d = Daemon::start_env(&[], &env);
    wait_station_status(&d, "telegram", "ok", |s| s == "ok");
    let row = station_row(&d, "telegram");
    assert_eq!(row["bot"], "@tiny_bot", "{row}");
    assert!(
        d.stderr().contains("telegram: bot @tiny_bot (id 7)"),
        "{}",
        d.stderr()
    );
}

/// Every Bot API answer metro reads, as small as it can be: a sent message
/// is only `{"message_id"}`, an edit `true`, `getFile` only `file_path`.
/// Text, files (album, document, voice), edit, react and download all work.
#[test]
fn minimal_answers_to_every_call_are_enough() {
    let fake = Fake::start();
    fake.minimal_answers(true);
    let env = fake.env("*");
    let d = Daemon::start_env(&[], &env);
    wait_station_status(&d, "telegram", "ok", |s| s == "ok");
    let tmp = tempfile::tempdir().unwrap();
    let path = |n: &str, bytes: &[u8]| {
        let p = tmp.path().join(n);
        std::fs::write(&p, bytes).unwrap();
        p.display().to_string()
    };
    let mut c = d.connect();
    let from = "metro://claude/user/a";
    let text = c.ok(json!({"op": "send", "line": "telegram/42", "text": "hi", "from": from}));
    assert_eq!(text["messageId"], "501", "{text}");
    let files = c.ok(json!({"op": "send", "line": "telegram/42", "text": "files",
        "images": [path("a.png", b"a"), path("b.png", b"b")],
        "documents": [path("n.txt", b"n")], "voice": path("v.ogg", b"v"), "from": from}));
    assert_eq!(
        files["messageIds"],
        json!(["502", "503", "504", "505"]),
        "{files}"
    );
    let edited = c.ok(
        json!({"op": "edit", "line": "telegram/42", "messageId": text["id"],
        "text": "hi!", "from": from}),
    );
    assert_eq!(fake.calls("editMessageText").len(), 1, "{edited}");
    c.ok(
        json!({"op": "react", "line": "telegram/42", "messageId": "501", "emoji": "👀",
        "from": from}),
    );
    assert_eq!(fake.calls("setMessageReaction").len(), 1);

    fake.add_file("doc1", "documents/file_2.pdf", b"%PDF-1.7");
    let id = fake.push(
        json!({"message": message(11, private(42, "Ann"), user(42, "Ann"), json!({
            "document": {"file_id": "doc1", "file_unique_id": "d", "file_name": "r.pdf"},
        }))}),
    );
    let deadline = std::time::Instant::now() + PATIENCE;
    while !d.history().iter().any(|e| e["updateId"] == json!(id)) {
        assert!(std::time::Instant::now() < deadline, "{}", d.stderr());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let dir = tmp.path().join("in");
    let got = c.ok(
        json!({"op": "download", "line": "telegram/42", "messageId": "11",
        "outDir": dir.display().to_string()}),
    );
    assert_eq!(
        got["files"],
        json!([dir.join("r.pdf").display().to_string()])
    );
    assert_eq!(std::fs::read(dir.join("r.pdf")).unwrap(), b"%PDF-1.7");
    let kinds: Vec<String> = d
        .history()
        .iter()
        .filter_map(|e| e["kind"].as_str().map(str::to_string))
        .collect();
    assert_eq!(kinds, ["outbound", "outbound", "edit", "react", "inbound"]);
}

/// Waits until every update id in `ids` is in `d`'s log.
fn wait_updates(d: &Daemon, ids: &[i64]) {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let h = d.history();
        if ids
            .iter()
            .all(|id| h.iter().any(|e| e["updateId"] == json!(id)))
        {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "updates {ids:?} not all stored: {h:?}\n{}",
            d.stderr()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Updates with only what metro reads: no `date`, no `chat.type`, no
/// `is_bot`, a document with only `file_id`, a reaction and a button press
/// with their bare bones. Each becomes its event.
#[test]
fn updates_with_only_the_fields_metro_reads_are_stored() {
    let fake = Fake::start();
    let chat = json!({"id": 42});
    let ann = json!({"id": 42});
    let ids = [
        fake.push(json!({"message": {"message_id": 11, "chat": chat, "text": "hello"}})),
        fake.push(json!({"edited_message": {"message_id": 11, "chat": chat, "text": "hello!"}})),
        fake.push(
            json!({"message": {"message_id": 12, "chat": chat, "from": ann,
            "document": {"file_id": "doc1"}}}),
        ),
        fake.push(
            json!({"message_reaction": {"chat": chat, "message_id": 11, "user": ann,
            "new_reaction": [{"type": "emoji", "emoji": "👍"}]}}),
        ),
        fake.push(json!({"callback_query": {"id": "cb1", "from": ann,
            "message": {"message_id": 11, "chat": chat}, "data": "yes"}})),
    ];
    let env = fake.env("*");
    let d = Daemon::start_env(&[], &env);
    wait_updates(&d, &ids);
    let h = d.history();
    let by_id = |id: i64| {
        h.iter()
            .find(|e| e["updateId"] == json!(id))
            .cloned()
            .expect("stored")
    };
    let first = by_id(ids[0]);
    assert_eq!(first["kind"], "inbound", "{first}");
    assert_eq!(first["line"], "metro://telegram/42");
    assert_eq!(first["text"], "hello");
    assert_eq!(first["from"], "metro://telegram/chat/42");
    let edit = by_id(ids[1]);
    assert_eq!(
        (edit["kind"].as_str(), edit["text"].as_str()),
        (Some("edit"), Some("hello!"))
    );
    assert_eq!(edit["originalId"], first["id"], "{edit}");
    let doc = by_id(ids[2]);
    assert_eq!(doc["from"], "metro://telegram/user/42");
    assert_eq!(
        doc["attachments"],
        json!([{"type": "document", "fileId": "doc1"}]),
        "{doc}"
    );
    let react = by_id(ids[3]);
    assert_eq!(
        (react["kind"].as_str(), react["emoji"].as_str()),
        (Some("react"), Some("👍"))
    );
    let press = by_id(ids[4]);
    assert_eq!(
        (press["kind"].as_str(), press["text"].as_str()),
        (Some("callback"), Some("yes"))
    );
    // The press is answered once stored, and every update is confirmed.
    let answered = fake.wait_calls("answerCallbackQuery", 1);
    assert_eq!(answered[0].params["callback_query_id"], "cb1");
    fake.wait("every update confirmed", PATIENCE, |f| {
        f.pending().is_empty()
    });
    check_schema(&d.connect(), &d);
}

/// One update that lacks what metro needs, between two good ones in the
/// same batch: the good ones are stored, the bad one is skipped with its
/// id in the log (not its text), the offset moves past all three and
/// polling goes on.
#[test]
fn an_unreadable_update_is_skipped_and_its_batch_kept() {
    let fake = Fake::start();
    let good = |mid: i64, text: &str| json!({"message": {"message_id": mid, "chat": {"id": 42}, "text": text}});
    // Pushed before metrod starts: its first getUpdates gets all three.
    let before = fake.push(good(11, "before"));
    let bad = fake.push(json!({"message": {"message_id": 12,
        "chat": {"id": "sesame-open-4711"}, "text": "the bad one"}}));
    let after = fake.push(good(13, "after"));
    let env = fake.env("*");
    let d = Daemon::start_env(&[], &env);
    wait_updates(&d, &[before, after]);
    fake.wait("the batch confirmed", PATIENCE, |f| f.pending().is_empty());
    let offsets: Vec<i64> = fake.confirmations().iter().map(|c| c.offset).collect();
    assert!(offsets.iter().any(|o| *o > after), "{offsets:?}");
    assert_eq!(fake.handed_out(bad), 1, "the bad update came again");
    let log = d.stderr();
    assert!(
        log.contains(&format!(
            "update {bad} is not readable (message.chat.id is not i64)"
        )),
        "{log}"
    );
    assert!(
        !log.contains("sesame") && !log.contains("the bad one"),
        "{log}"
    );
    assert!(d.history().iter().all(|e| e["updateId"] != json!(bad)));
    assert!(station_counters(&d, "telegram")["skipped"].as_u64() >= Some(1));
    // Polling goes on.
    let next = fake.push(good(14, "next"));
    wait_updates(&d, &[next]);
    let texts: Vec<String> = d
        .history()
        .iter()
        .filter_map(|e| e["text"].as_str().map(str::to_string))
        .collect();
    assert_eq!(texts, ["before", "after", "next"]);
}

/// An update without an `update_id` cannot be confirmed: metro says so in
/// the status and asks again after a pause (not at once, forever); a good
/// update that follows is stored and confirms past it.
#[test]
fn an_update_without_an_id_is_said_and_polling_goes_on() {
    let fake = Fake::start();
    fake.push_raw(json!({"message": {"message_id": 11, "chat": {"id": 42}, "text": "no id"}}));
    let env = fake.env("*");
    let d = Daemon::start_env(&[], &env);
    let status = wait_station_status(&d, "telegram", "the id-less update said", |s| {
        s.contains("without a usable update_id")
    });
    assert!(status.starts_with("down:"), "{status}");
    assert!(
        d.stderr().contains(
            "update with no update_id is not readable (missing field `update_id` in the payload)"
        ),
        "{}",
        d.stderr()
    );
    let good =
        fake.push(json!({"message": {"message_id": 12, "chat": {"id": 42}, "text": "good"}}));
    wait_updates(&d, &[good]);
    fake.wait("everything confirmed", PATIENCE, |f| f.pending().is_empty());
    wait_station_status(&d, "telegram", "ok", |s| s == "ok");
    assert!(d.history().iter().all(|e| e["text"] != "no id"));
}
