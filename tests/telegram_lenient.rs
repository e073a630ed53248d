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
