//! Hardening (issue 14, item 9): Discord REST answers with only the fields
//! metro uses are good enough (tests/fake_discord `minimal_answers`):
//! `GET /users/@me` only `id` and `username`, a created or edited message
//! only `id`, a message read back only `id`, `attachments` and
//! `reactions`.

mod common;
mod fake_discord;

use common::*;
use fake_discord::*;
use serde_json::json;

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
