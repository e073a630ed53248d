//! The config applied live, through the real metrod and the fake Telegram
//! and Discord servers: a changed token or API URL in the config file
//! restarts only that station, in place; the other station, the
//! connections and the subscriptions are not touched and keep receiving.

mod common;
mod fake_discord;
mod fake_telegram;

use std::path::Path;
use std::time::{Duration, Instant};

use common::svc::write_config;
use common::{station_counters, station_row, Client, Daemon, PATIENCE};
use serde_json::{json, Value};

/// A DM channel of the fake Discord.
const DM: u64 = 1_184_011_225_150_619_999;

fn config(tg_url: Option<&str>, dc: &fake_discord::Fake) -> String {
    let mut body = String::new();
    if let Some(url) = tg_url {
        body.push_str(&format!(
            "[telegram]\ntoken = \"{}\"\napi_url = \"{url}\"\nallow = [\"*\"]\n\n",
            fake_telegram::TOKEN
        ));
    }
    body.push_str(&format!(
        "[discord]\ntoken = \"{}\"\napi_url = \"{}\"\ngateway_url = \"{}\"\nallow = [\"*\"]\n",
        fake_discord::TOKEN,
        dc.url,
        dc.gateway_url
    ));
    body
}

fn start(cfg: &Path, body: &str) -> Daemon {
    write_config(cfg, body, 0o600);
    Daemon::start_with(&["--config", cfg.to_str().unwrap()])
}

/// Reads frames until an event `f` picks arrives on `sub` (other frames,
/// of events published meanwhile, are passed over).
fn event_on(c: &mut Client, sub: &str, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        assert!(Instant::now() < deadline, "{what}: never delivered");
        let Some(frame) = c.frame_within(PATIENCE) else {
            panic!("{what}: the subscriber's connection gave nothing");
        };
        assert_eq!(frame["sub"], json!(sub), "{frame}");
        if f(&frame["event"]) {
            return frame["event"].clone();
        }
    }
}

fn wait_row(d: &Daemon, name: &str, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let row = station_row(d, name);
        if f(&row) {
            return row;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {name} row stays {row}\n{}",
            d.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_changed_api_url_or_token_restarts_only_that_station() {
    let tg1 = fake_telegram::Fake::start();
    let tg2 = fake_telegram::Fake::start();
    let dc = fake_discord::Fake::start();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("config.toml");
    let d = start(&cfg, &config(Some(&tg1.url), &dc));
    wait_row(&d, "telegram", "first start", |r| {
        r["apiUrl"] == json!(tg1.url) && r["status"] == json!("ok")
    });
    dc.wait_ready(1);

    // One subscriber, connected before any change, for the whole test.
    let mut sub = d.connect();
    let s = sub.subscribe(json!({"follow": true, "since": "tail"}));
    let first = tg1.push(fake_telegram::text_update(10, 42, 42, "Ann", "before"));
    event_on(&mut sub, &s, "telegram before", |e| {
        e["text"] == json!("before")
    });

    // A new API URL in the file: telegram is opened again on it.
    write_config(&cfg, &config(Some(&tg2.url), &dc), 0o600);
    wait_row(&d, "telegram", "new API URL", |r| {
        r["apiUrl"] == json!(tg2.url) && r["status"] == json!("ok")
    });
    // Both fakes number updates from the same start: an update whose id
    // the log already holds is passed over as a resend by the reopened
    // station (as it must), so one more update goes first.
    let again = tg2.push(fake_telegram::text_update(11, 42, 42, "Ann", "again"));
    assert_eq!(again, first, "the fakes number updates alike");
    tg2.push(fake_telegram::text_update(12, 42, 42, "Ann", "after"));
    event_on(&mut sub, &s, "telegram after", |e| {
        e["text"] == json!("after")
    });

    // Discord was not restarted: still its first session, and it stores.
    assert_eq!(dc.identifies().len(), 1, "discord identified again");
    assert_eq!(station_counters(&d, "discord")["sessions"], json!(1));
    dc.dispatch(
        "MESSAGE_CREATE",
        fake_discord::message(DM, 4001, fake_discord::user(5, "bo", false), "discord too"),
    );
    event_on(&mut sub, &s, "discord", |e| {
        e["text"] == json!("discord too")
    });

    // The token removed: telegram is disabled, its ops say so.
    write_config(&cfg, &config(None, &dc), 0o600);
    let row = wait_row(&d, "telegram", "token removed", |r| {
        r["enabled"] == json!(false)
    });
    assert!(
        row["status"].as_str().unwrap().contains("no bot token"),
        "{row}"
    );
    let err = d.connect().err(
        json!({"op": "send", "line": "metro://telegram/42", "text": "hi"}),
        "unavailable",
    );
    assert!(
        err["message"].as_str().unwrap().contains("no bot token"),
        "{err}"
    );

    // And the subscriber never lost its connection: a local event arrives.
    common::publish(
        &mut d.connect(),
        json!({"line": "metro://claude/user/a", "text": "still here"}),
    );
    event_on(&mut sub, &s, "local", |e| e["text"] == json!("still here"));
    assert_eq!(dc.identifies().len(), 1, "discord identified again");
}
