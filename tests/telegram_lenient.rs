//! Hardening (issue 14, item 9): a Bot API server whose `getMe` answers
//! only `id`, `first_name` and `username` is good enough for metro.

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
