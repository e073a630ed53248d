//! Bad input gets a clear error and loses nothing: every case over a real
//! socket, each followed by proof that the connection (or at least the
//! daemon) still works and the log is intact.

mod common;

use std::io::Write;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

fn raw_answer(c: &mut Client, bytes: &[u8]) -> Value {
    c.send_raw(bytes);
    let line = c.read_line().expect("an answer");
    serde_json::from_str(&line).expect("answer is JSON")
}

fn assert_code(v: &Value, code: &str) {
    assert_eq!(v["ok"], json!(false), "{v}");
    assert_eq!(v["error"]["code"], json!(code), "{v}");
    assert!(
        !v["error"]["message"].as_str().unwrap_or("").is_empty(),
        "{v}"
    );
}

#[test]
fn malformed_lines_get_bad_request_and_the_connection_stays_open() {
    let d = Daemon::start();
    let mut c = d.connect();
    for bad in [
        &b"not json\n"[..],
        b"{\"op\":\"hello\"\n",
        b"[1,2,3]\n",
        b"42\n",
        b"\"hello\"\n",
        b"null\n",
        b"{}\n",
        b"{\"op\":7}\n",
        b"{\"op\":null}\n",
        b"{\"op\":\"publish\"}\n",
        b"{\"op\":\"publish\",\"event\":\"text\"}\n",
        b"{\"op\":\"publish\",\"event\":{\"line\":5}}\n",
        b"{\"op\":\"publish\",\"event\":{\"text\":\"no line\"}}\n",
        b"{\"op\":\"publish\",\"event\":{\"line\":\"telegram/1\",\"text\":5}}\n",
        b"{\"op\":\"publish\",\"event\":{\"line\":\"telegram/1\",\"attachments\":{}}}\n",
        b"\xff\xfe{\"op\":\"hello\"}\n",
        b"{\"op\":\"hello\",\"client\":\"\xc3\x28\"}\n",
    ] {
        let v = raw_answer(&mut c, bad);
        assert_code(&v, "bad_request");
    }
    // Deep nesting is refused, not a stack overflow.
    let deep = format!(
        "{{\"op\":\"publish\",\"event\":{{\"line\":\"telegram/1\",\"payload\":{}{}}}}}\n",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    assert_code(&raw_answer(&mut c, deep.as_bytes()), "bad_request");
    // `req` is echoed even when the rest is wrong.
    let v = raw_answer(
        &mut c,
        b"{\"op\":\"ack\",\"req\":\"r1\",\"sub\":5,\"offset\":0}\n",
    );
    assert_code(&v, "bad_request");
    assert_eq!(v["req"], json!("r1"));
    assert!(
        v["error"]["message"].as_str().unwrap().contains("sub"),
        "names the field: {v}"
    );
    // Unknown op.
    let v = raw_answer(&mut c, b"{\"op\":\"teleport\",\"req\":9}\n");
    assert_code(&v, "unknown_op");
    assert_eq!(v["req"], json!(9));
    // Blank lines are ignored; CRLF is accepted.
    let v = raw_answer(&mut c, b"\n\n   \n{\"op\":\"hello\",\"req\":1}\r\n");
    assert_eq!(v["ok"], json!(true), "{v}");
    c.ok(json!({"op": "hello"}));
    assert!(d.history().is_empty(), "nothing bad reached the log");
}

#[test]
fn wrong_field_values_are_bad_requests() {
    let d = Daemon::start();
    let mut c = d.connect();
    let o1 = publish(&mut c, json!({"line": "telegram/1", "text": "one"}))["offset"]
        .as_u64()
        .unwrap();
    let cases = [
        json!({"op": "publish", "event": {"line": "metro://telegram/abc"}}),
        json!({"op": "publish", "event": {"line": "metro://"}}),
        json!({"op": "publish", "event": {"line": "metro://claude//x"}}),
        json!({"op": "publish", "event": {"line": "http://telegram/1"}}),
        json!({"op": "publish", "event": {"line": "telegram/1", "kind": "In Bound"}}),
        json!({"op": "publish", "event": {"line": "telegram/1", "from": "not a uri"}}),
        json!({"op": "publish", "event": {"line": "telegram/1", "to": ""}}),
        json!({"op": "claim", "line": "discord/abc", "as": "metro://claude/user/a"}),
        json!({"op": "claim", "line": "telegram/1", "as": "me"}),
        json!({"op": "claim", "line": "telegram/1"}),
        json!({"op": "send", "line": "nope", "text": "x"}),
        json!({"op": "send", "line": "claude/user/a", "text": "x", "from": "a b"}),
        json!({"op": "subscribe", "mode": "mine-only"}),
        json!({"op": "subscribe", "mode": "mine-or-unclaimed"}),
        json!({"op": "subscribe", "mode": "everything"}),
        json!({"op": "subscribe", "follow": "yes"}),
        json!({"op": "subscribe", "limit": -1}),
        json!({"op": "subscribe", "limit": 0}),
        json!({"op": "subscribe", "since": "yesterday"}),
        json!({"op": "subscribe", "since": o1 + 1000}),
        json!({"op": "subscribe", "since": o1 - 3}),
        json!({"op": "subscribe", "since": "cursor"}),
        json!({"op": "subscribe", "chat": "telegram/x y"}),
        json!({"op": "subscribe", "as": "metro://claude/user/a", "ack": "sometimes"}),
        json!({"op": "subscribe", "ackWaitMs": 0}),
        json!({"op": "ack", "sub": "s1", "offset": -5}),
        json!({"op": "history", "limit": 0}),
        json!({"op": "history", "limit": 100000}),
        json!({"op": "history", "since": "last tuesday"}),
        json!({"op": "history", "line": "metro://"}),
        json!({"op": "fetch", "line": "telegram/1", "limit": 1000}),
        json!({"op": "cursor"}),
        json!({"op": "cursor", "cursor": ""}),
        json!({"op": "edit", "line": "claude/user/a", "messageId": "", "text": "x"}),
    ];
    for req in cases {
        c.err(req, "bad_request");
    }
    // Ack of an unknown sub, and of an offset past the end.
    c.err(json!({"op": "ack", "sub": "s99", "offset": 0}), "not_found");
    let s = c.subscribe(json!({"follow": true, "since": "tail"}));
    c.err(
        json!({"op": "ack", "sub": s, "offset": o1 + 1}),
        "bad_request",
    );
    // Nothing above reached the log.
    assert_eq!(d.history().len(), 1);
    c.ok(json!({"op": "hello"}));
}

#[test]
fn an_oversized_line_gets_too_large_and_the_connection_is_closed() {
    let d = Daemon::start_with(&["--max-request-bytes", "4096"]);
    let mut c = d.connect();
    let big = format!(
        "{{\"op\":\"publish\",\"event\":{{\"line\":\"telegram/1\",\"text\":\"{}\"}}}}\n",
        "x".repeat(10_000)
    );
    c.send_raw(big.as_bytes());
    let v: Value = serde_json::from_str(&c.read_line().expect("too_large answer")).unwrap();
    assert_code(&v, "too_large");
    assert!(c.closed(), "the connection is closed after too_large");
    // A line just under the limit is fine on a new connection.
    let mut c = d.connect();
    let text = "y".repeat(3900);
    publish(&mut c, json!({"line": "telegram/1", "text": text}));
    assert_eq!(d.history().len(), 1);
}

#[test]
fn the_default_limit_is_one_mebibyte() {
    let d = Daemon::start();
    let mut c = d.connect();
    let text = "z".repeat((1 << 20) - 200);
    publish(&mut c, json!({"line": "telegram/1", "text": text}));
    let big = format!(
        "{{\"op\":\"hello\",\"client\":\"{}\"}}\n",
        "x".repeat(1 << 20)
    );
    c.send_raw(big.as_bytes());
    let v: Value = serde_json::from_str(&c.read_line().unwrap()).unwrap();
    assert_code(&v, "too_large");
    assert_eq!(d.history().len(), 1);
}

#[test]
fn a_client_that_leaves_mid_line_executes_nothing() {
    let d = Daemon::start();
    {
        let mut c = d.connect();
        c.send_raw(b"{\"op\":\"publish\",\"event\":{\"line\":\"telegram/1\",\"text\":\"half");
        // dropped here: the connection closes mid-line
    }
    {
        let mut c = d.connect();
        c.send_raw(b"{\"op\":\"publish\",\"event\":{\"line\":\"telegram/1\",\"text\":\"whole\"}}");
        c.stream().shutdown(std::net::Shutdown::Write).unwrap();
        assert!(
            c.read_line().is_none(),
            "no answer for an unterminated line"
        );
    }
    let mut c = d.connect();
    publish(&mut c, json!({"line": "telegram/1", "text": "after"}));
    let log = d.history();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0]["text"], "after");
    let raw = std::fs::read(d.history_path()).unwrap();
    assert_eq!(raw.last(), Some(&b'\n'));
}

#[test]
fn a_half_closed_client_still_gets_its_answers_and_a_finite_subscription() {
    let d = Daemon::start();
    let mut p = d.connect();
    publish(&mut p, json!({"line": "telegram/1", "text": "a"}));
    let mut c = d.connect();
    c.send_raw(b"{\"op\":\"hello\",\"req\":1}\n{\"op\":\"subscribe\",\"req\":2,\"since\":\"start\"}\n{\"op\":\"subscribe\",\"req\":3,\"follow\":true}\n");
    c.stream().shutdown(std::net::Shutdown::Write).unwrap();
    let mut lines = Vec::new();
    while let Some(l) = c.read_line() {
        lines.push(serde_json::from_str::<Value>(&l).unwrap());
    }
    assert_eq!(lines[0]["req"], json!(1));
    assert!(lines.iter().any(|f| f["event"]["text"] == "a"));
    assert!(lines
        .iter()
        .any(|f| f["end"] == json!(true) && f["sub"] == "s1"));
    assert!(lines
        .iter()
        .any(|f| f["req"] == json!(3) && f["ok"] == json!(true)));
}

#[test]
fn a_client_that_never_reads_blocks_nobody() {
    let d = Daemon::start_with(&["--fsync", "never"]);
    // A subscriber that never reads, and a pipelining client that never reads
    // its answers.
    let mut stalled = d.connect();
    stalled.subscribe(json!({"follow": true, "since": "start"}));
    let deaf = d.connect();
    let mut flood = String::new();
    for _ in 0..20_000 {
        flood.push_str("{\"op\":\"stats\"}\n");
    }
    let deaf_stream = deaf.stream().try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let mut s = deaf_stream;
        s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.write_all(flood.as_bytes());
    });
    let mut p = d.connect();
    let mut live = d.connect();
    let s = live.subscribe(json!({"follow": true, "since": "tail"}));
    let text = "q".repeat(1000);
    for i in 0..5000 {
        publish(
            &mut p,
            json!({"line": "telegram/1", "text": format!("{i} {text}")}),
        );
        if i % 500 == 0 {
            // The live subscriber keeps up while the others are stuck.
            let f = live.frame();
            assert_eq!(f["sub"], json!(s));
        }
    }
    let mut got = 10;
    while got < 5000 {
        live.frame();
        got += 1;
    }
    let _ = writer.join();
    let st = p.ok(json!({"op": "stats"}));
    assert!(st["logBytes"].as_u64().unwrap() > 5_000_000);
    drop(deaf);
}
