//! proto/metro.schema.json describes real traffic: a session that uses every
//! op (and some errors) is recorded, and every line sent and received is
//! validated against the schema.

mod common;

use common::*;
use serde_json::{json, Value};

fn check(v: &jsonschema::Validator, what: &str, line: &str) {
    let value: Value = serde_json::from_str(line).unwrap();
    let errors: Vec<String> = v
        .iter_errors(&value)
        .map(|e| format!("{e} at {}", e.instance_path))
        .collect();
    assert!(
        errors.is_empty(),
        "{what} does not match the schema: {line}\n{}",
        errors.join("\n")
    );
}

#[test]
fn real_traffic_matches_the_schema() {
    let d = Daemon::start();
    let mut c = d.connect();
    let a = "metro://claude/user/a";
    c.ok(json!({"op": "hello", "client": "schema-test"}));
    publish(
        &mut c,
        json!({"line": "telegram/-100/5", "text": "hi", "fromName": "Ann", "lineName": "ops"}),
    );
    publish(
        &mut c,
        json!({"line": "webhook/gh1", "payload": {"action": "opened"}, "headers": {"x-github-event": "pull_request"}}),
    );
    let last = publish(
        &mut c,
        json!({"line": "discord/42", "kind": "react", "emoji": "👍", "messageId": "9", "to": a}),
    )["offset"]
        .clone();
    let s = c.subscribe(json!({"as": a, "ack": "explicit", "follow": true, "ackWaitMs": 100, "includeWebhooks": true}));
    let f = c.frame();
    let again = loop {
        let g = c.frame();
        if g.get("redelivered").is_some() {
            break g;
        }
    };
    assert!(again["redelivered"].as_u64().unwrap() >= 1);
    c.ok(json!({"op": "ack", "sub": s, "offset": f["offset"]}));
    c.ok(json!({"op": "ack", "sub": s, "offset": last}));
    c.ok(json!({"op": "unsubscribe", "sub": s}));
    let first = c;
    let mut c = d.connect();
    let s = c.subscribe(json!({"since": "start", "limit": 2, "mode": "all"}));
    c.drain(&s);
    let s = c.subscribe(json!({"since": "2000-01-01T00:00:00Z", "limit": 1, "mode": "all"}));
    c.drain(&s);
    c.ok(json!({"op": "claim", "line": "telegram/-100/5", "as": a, "ifFree": true}));
    c.err(json!({"op": "claim", "line": "telegram/-100/5", "as": "metro://codex/user/b", "ifFree": true}), "conflict");
    c.ok(json!({"op": "claim", "line": "telegram/7", "as": a, "ephemeral": true}));
    c.ok(json!({"op": "claims"}));
    c.ok(json!({"op": "release", "line": "telegram/7"}));
    let sent = c.ok(json!({"op": "send", "line": "codex/user/b", "text": "hello", "from": a, "images": ["/tmp/x.png"]}));
    c.ok(json!({"op": "edit", "line": "codex/user/b", "messageId": sent["id"], "text": "hello!", "from": a}));
    c.ok(json!({"op": "react", "line": "codex/user/b", "messageId": sent["id"], "emoji": "", "from": a}));
    c.err(
        json!({"op": "download", "line": "telegram/1", "messageId": "1", "outDir": "/tmp"}),
        "unavailable",
    );
    c.ok(json!({"op": "fetch", "line": "codex/user/b", "limit": 5}));
    c.ok(json!({"op": "history", "limit": 10, "text": "hel"}));
    c.ok(json!({"op": "lines"}));
    c.ok(json!({"op": "stations"}));
    let _sub = c.subscribe(json!({"as": a, "follow": true, "since": "tail"}));
    c.ok(json!({"op": "stats"}));
    c.ok(json!({"op": "cursor", "as": a}));
    let hook = c.ok(json!({"op": "webhookAdd", "label": "gh", "secret": "s"}));
    let plain = c.ok(json!({"op": "webhookAdd", "label": "plain"}));
    // A real delivery, so the log holds a webhook event too.
    let url = format!("{}{}", d.webhook_url(), plain["path"].as_str().unwrap());
    let status = reqwest::blocking::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("x-github-event", "push")
        .header("x-github-delivery", "d-1")
        .body(r#"{"ref":"refs/heads/main","repository":{"full_name":"o/r"}}"#)
        .send()
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 202);
    c.ok(json!({"op": "webhookList"}));
    c.ok(json!({"op": "webhookRemove", "id": hook["id"]}));
    c.ok(json!({"op": "webhookRemove", "id": "x"}));
    c.err(json!({"op": "webhookAdd", "label": ""}), "bad_request");
    c.err(json!({"op": "nope"}), "unknown_op");
    c.err(json!({"op": "ack", "sub": "s99", "offset": 0}), "not_found");
    c.err(
        json!({"op": "subscribe", "mode": "mine-only"}),
        "bad_request",
    );

    let requests = schema_validator("request");
    let frames = schema_validator("frame");
    let bad = ["nope", "\"mine-only\"", "s99", "\"label\":\"\""];
    let sent: Vec<&String> = first.sent.iter().chain(&c.sent).collect();
    let received: Vec<&String> = first.received.iter().chain(&c.received).collect();
    for line in sent {
        if bad.iter().any(|b| line.contains(b)) {
            continue;
        }
        check(&requests, "request", line);
    }
    assert!(received.len() > 30);
    for line in received {
        check(&frames, "frame", line);
    }
    // Every log line is an `event`.
    let events = schema_validator("event");
    for line in std::fs::read_to_string(d.history_path()).unwrap().lines() {
        check(&events, "event", line);
    }
    // And the schema is strict where the daemon is.
    for wrong in [
        json!({"op": "subscribe", "mode": "mine-only"}),
        json!({"op": "publish", "event": {"text": "no line"}}),
        json!({"op": "ack", "sub": "s1", "offset": "12"}),
        json!({"op": "claim", "line": "telegram/1"}),
    ] {
        assert!(!requests.is_valid(&wrong), "schema accepts {wrong}");
    }
    assert!(!frames.is_valid(&json!({"sub": "s1", "offset": 5})));
}
