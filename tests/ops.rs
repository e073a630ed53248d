//! Every non-subscription op over the real socket.

mod common;

use common::*;
use serde_json::{json, Value};

const A: &str = "metro://claude/user/a";
const B: &str = "metro://codex/user/b";

#[test]
fn hello_names_protocol_and_ops() {
    let d = Daemon::start();
    let mut c = d.connect();
    let a = c.ok(json!({"op": "hello", "client": "test"}));
    assert_eq!(a["protocol"], json!(1));
    assert_eq!(a["server"], json!("metrod"));
    assert_eq!(a["version"], json!(env!("CARGO_PKG_VERSION")));
    let ops: Vec<&str> = a["ops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_str().unwrap())
        .collect();
    for op in [
        "publish",
        "subscribe",
        "ack",
        "claim",
        "send",
        "history",
        "stats",
        "cursor",
        "webhookAdd",
    ] {
        assert!(ops.contains(&op), "{op} missing from {ops:?}");
    }
    // A request without `req` is answered without one.
    c.send(&json!({"op": "hello"}));
    let f: Value = serde_json::from_str(&c.read_line().unwrap()).unwrap();
    assert_eq!(f["ok"], json!(true));
    assert!(f.get("req").is_none());
    // Any JSON value is echoed as `req`.
    c.send(&json!({"op": "hello", "req": {"n": [1, "two"]}}));
    let f: Value = serde_json::from_str(&c.read_line().unwrap()).unwrap();
    assert_eq!(f["req"], json!({"n": [1, "two"]}));
}

#[test]
fn publish_fills_defaults_and_the_log_holds_exactly_the_event() {
    let d = Daemon::start();
    let mut c = d.connect();
    let a = publish(
        &mut c,
        json!({"line": "telegram/-100/7", "text": "hi ✓", "fromName": "Ann", "custom": {"k": 1},
               "id": "msg_forged", "station": "discord"}),
    );
    let id = a["id"].as_str().unwrap();
    assert!(id.starts_with("msg_") && id != "msg_forged");
    let ts = a["ts"].as_str().unwrap();
    assert_eq!(ts.len(), 24, "RFC 3339 with milliseconds: {ts}");
    assert!(ts.ends_with('Z'));
    let log = d.history();
    assert_eq!(log.len(), 1);
    let ev = &log[0];
    assert_eq!(ev["id"], json!(id));
    assert_eq!(ev["ts"], json!(ts));
    assert_eq!(ev["station"], "telegram");
    assert_eq!(ev["kind"], "inbound");
    assert_eq!(ev["line"], "metro://telegram/-100/7");
    assert_eq!(ev["to"], "metro://telegram/-100/7");
    assert_eq!(ev["from"], "metro://local/anonymous");
    assert_eq!(ev["custom"], json!({"k": 1}), "unknown fields are kept");
    // The frame's event is byte-for-byte the log line.
    let s = c.subscribe(json!({"since": "start"}));
    c.drain(&s);
    let frame_line = c
        .received
        .iter()
        .find(|l| l.starts_with("{\"sub\":\"s1\",\"offset\":") && l.contains("\"event\""))
        .unwrap()
        .clone();
    let raw = std::fs::read_to_string(d.history_path()).unwrap();
    assert_eq!(
        frame_line,
        format!(
            "{{\"sub\":\"s1\",\"offset\":{},\"event\":{}}}",
            raw.len(),
            raw.trim_end()
        )
    );
    // Ids are unique and timestamps never go backwards.
    let mut last = String::new();
    let mut ids = std::collections::HashSet::new();
    for i in 0..200 {
        let a = publish(
            &mut c,
            json!({"line": "metro://codex/x", "text": i.to_string()}),
        );
        assert!(ids.insert(a["id"].as_str().unwrap().to_string()));
        let ts = a["ts"].as_str().unwrap().to_string();
        assert!(ts >= last);
        last = ts;
    }
}

#[test]
fn pipelined_publishes_are_all_answered_and_stored_once() {
    let d = Daemon::start();
    let mut c = d.connect();
    let mut batch = String::new();
    for i in 0..500 {
        batch.push_str(&format!("{{\"op\":\"publish\",\"req\":{i},\"event\":{{\"line\":\"telegram/1\",\"text\":\"{i}\"}}}}\n"));
    }
    c.send_raw(batch.as_bytes());
    let mut seen = vec![false; 500];
    for _ in 0..500 {
        let a: Value = serde_json::from_str(&c.read_line().unwrap()).unwrap();
        assert_eq!(a["ok"], json!(true), "{a}");
        seen[a["req"].as_u64().unwrap() as usize] = true;
    }
    assert!(seen.iter().all(|s| *s));
    let log = d.history();
    assert_eq!(log.len(), 500);
    let mut texts: Vec<u64> = log
        .iter()
        .map(|e| e["text"].as_str().unwrap().parse().unwrap())
        .collect();
    texts.sort();
    assert_eq!(texts, (0..500).collect::<Vec<u64>>());
}

/// A pipelining client's plain publishes are queued as one group per read,
/// before the connection reads on: whatever else the reads hold (other ops,
/// a bad line, a keyed publish, an agent's answer, blank lines, the last
/// line blank too), every request is answered once and the plain
/// publishes are stored in the order they were sent. (A keyed publish runs
/// concurrently with what follows it: it is stored once, anywhere.)
#[test]
fn publishes_read_together_are_stored_in_order_and_each_answered() {
    let d = Daemon::start_with(&["--fsync", "never"]);
    let mut c = d.connect();
    const N: u64 = 600;
    let mut batch = String::new();
    // Texts of the plain publishes, in send order; of the keyed ones.
    let mut plain: Vec<String> = Vec::new();
    let mut keyed: Vec<String> = Vec::new();
    let mut bad = Vec::new();
    let publish = |req: u64, extra: &str, event: &str| {
        format!("{{\"op\":\"publish\",\"req\":{req}{extra},\"event\":{{{event}}}}}\n")
    };
    for req in 1..=N {
        let text = format!("t{req}");
        let line = match req % 50 {
            7 => {
                bad.push(req);
                publish(req, "", &format!("\"text\":\"{text}\""))
            }
            13 => format!("{{\"op\":\"hello\",\"req\":{req}}}\n\n   \n"),
            21 => {
                keyed.push(text.clone());
                let key = format!(",\"idempotencyKey\":\"k{req}\"");
                publish(
                    req,
                    &key,
                    &format!("\"line\":\"telegram/1\",\"text\":\"{text}\""),
                )
            }
            33 => {
                plain.push(text.clone());
                let event = format!(
                    "\"line\":\"telegram/1\",\"from\":\"metro://claude/agent\",\"kind\":\"reply\",\"text\":\"{text}\""
                );
                publish(req, "", &event)
            }
            _ => {
                plain.push(text.clone());
                publish(
                    req,
                    "",
                    &format!("\"line\":\"telegram/1\",\"text\":\"{text}\""),
                )
            }
        };
        batch.push_str(&line);
    }
    batch.push_str("  \n");
    c.send_raw(batch.as_bytes());
    let mut seen = vec![false; N as usize + 1];
    let mut offsets = std::collections::HashMap::new();
    for _ in 0..N {
        let line = c.read_line().expect("every request is answered");
        let a: Value = serde_json::from_str(&line).unwrap();
        let req = a["req"].as_u64().unwrap();
        assert!(!seen[req as usize], "answered twice: {req}");
        seen[req as usize] = true;
        assert_eq!(a["ok"], json!(!bad.contains(&req)), "{a}");
        if let Some(off) = a["offset"].as_u64() {
            offsets.insert(format!("t{req}"), off);
        }
    }
    assert!(seen[1..].iter().all(|s| *s));
    let log = d.history();
    let texts: Vec<String> = log
        .iter()
        .map(|e| e["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(texts.len(), plain.len() + keyed.len());
    let stored_plain: Vec<&String> = texts.iter().filter(|t| !keyed.contains(t)).collect();
    let sent_plain: Vec<&String> = plain.iter().collect();
    assert_eq!(
        stored_plain, sent_plain,
        "plain publishes stored in the order sent"
    );
    for k in &keyed {
        assert_eq!(
            texts.iter().filter(|t| *t == k).count(),
            1,
            "{k} stored once"
        );
    }
    // Each answer names its own event's place in the log.
    let mut ends: Vec<u64> = Vec::new();
    let mut end = 0u64;
    let raw = std::fs::read(d.history_path()).unwrap();
    for line in raw.split_inclusive(|b| *b == b'\n') {
        end += line.len() as u64;
        ends.push(end);
    }
    for (text, end) in texts.iter().zip(ends) {
        assert_eq!(offsets[text], end, "offset answered for {text}");
    }
}

/// Answers go straight to the socket while nothing is queued, and through
/// the queue once the client stops reading: across the switch (a partial
/// write, the rest queued first) every answer arrives whole, once, and the
/// ones answered at once keep their order.
#[test]
fn answers_to_a_client_that_reads_late_arrive_whole_and_in_order() {
    let d = Daemon::start_with(&["--fsync", "never"]);
    let c = d.connect();
    let mut wr = c.stream().try_clone().unwrap();
    const N: u64 = 20_000;
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let mut batch = String::new();
        for req in 1..=N {
            if req % 10 == 0 {
                batch.push_str(&format!(
                    "{{\"op\":\"publish\",\"req\":{req},\"event\":{{\"line\":\"telegram/1\",\"text\":\"{req}\"}}}}\n"
                ));
            } else if req % 100 == 1 {
                // A large answer (the `req` is echoed), most likely to be
                // written in part.
                let pad = "p".repeat(60_000);
                batch.push_str(&format!("{{\"op\":\"hello\",\"req\":\"{req} {pad}\"}}\n"));
            } else {
                batch.push_str(&format!("{{\"op\":\"hello\",\"req\":{req}}}\n"));
            }
            if batch.len() > 4096 {
                wr.write_all(batch.as_bytes()).unwrap();
                batch.clear();
            }
        }
        wr.write_all(batch.as_bytes()).unwrap();
    });
    // Not reading for a while fills the socket: later answers are queued.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let mut c = c;
    let mut last_hello = 0;
    let mut seen = vec![false; N as usize + 1];
    for _ in 0..N {
        let line = c.read_line().expect("an answer");
        let a: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(a["ok"], json!(true), "{a}");
        let req = match &a["req"] {
            Value::String(big) => {
                let (n, pad) = big.split_once(' ').unwrap();
                assert_eq!(pad.len(), 60_000);
                n.parse::<u64>().unwrap()
            }
            small => small.as_u64().unwrap(),
        };
        assert!(!seen[req as usize], "answered twice: {req}");
        seen[req as usize] = true;
        if req % 10 != 0 {
            assert_eq!(a["server"], json!("metrod"), "{a}");
            assert!(req > last_hello, "hello {req} after {last_hello}");
            last_hello = req;
        }
    }
    writer.join().unwrap();
    assert!(seen[1..].iter().all(|s| *s));
    assert_eq!(d.history().len(), (N / 10) as usize);
}

#[test]
fn claims_last_writer_wins_if_free_release_and_persistence() {
    let mut d = Daemon::start();
    let mut c = d.connect();
    let a = c.ok(json!({"op": "claim", "line": "telegram/5", "as": A}));
    assert_eq!(
        (a["line"].as_str(), a["owner"].as_str(), &a["previous"]),
        (Some("metro://telegram/5"), Some(A), &Value::Null)
    );
    let a = c.ok(json!({"op": "claim", "line": "telegram/5", "as": B}));
    assert_eq!(
        (a["owner"].as_str(), a["previous"].as_str()),
        (Some(B), Some(A)),
        "last writer wins"
    );
    let e = c.err(
        json!({"op": "claim", "line": "telegram/5", "as": A, "ifFree": true}),
        "conflict",
    );
    assert_eq!(e["owner"], json!(B));
    let a = c.ok(json!({"op": "claim", "line": "telegram/5", "as": B, "ifFree": true}));
    assert_eq!(a["owner"], json!(B), "ifFree on one's own line is fine");
    c.ok(json!({"op": "claim", "line": "discord/9", "as": A}));
    let a = c.ok(json!({"op": "claims"}));
    assert_eq!(
        a["claims"],
        json!({"metro://discord/9": A, "metro://telegram/5": B})
    );
    // claims.json is the durable map, pretty and complete.
    let on_disk: Value =
        serde_json::from_slice(&std::fs::read(d.dir.join("claims.json")).unwrap()).unwrap();
    assert_eq!(on_disk, a["claims"]);
    let a = c.ok(json!({"op": "release", "line": "discord/9"}));
    assert_eq!(a["released"], json!(true));
    let a = c.ok(json!({"op": "release", "line": "discord/9"}));
    assert_eq!(a["released"], json!(false));
    drop(c);
    assert!(d.stop().success());
    d.restart();
    let mut c = d.connect();
    let a = c.ok(json!({"op": "claims"}));
    assert_eq!(a["claims"], json!({"metro://telegram/5": B}));
    // No temp file is left behind by the atomic replace.
    let leftovers: Vec<String> = std::fs::read_dir(&d.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn ephemeral_claims_vanish_with_their_connection_and_stay_off_disk() {
    let d = Daemon::start();
    let mut holder = d.connect();
    let mut other = d.connect();
    holder.ok(json!({"op": "claim", "line": "telegram/8", "as": A, "ephemeral": true}));
    other.ok(json!({"op": "claim", "line": "telegram/9", "as": A}));
    let a = other.ok(json!({"op": "claims"}));
    assert_eq!(a["claims"]["metro://telegram/8"], json!(A));
    assert_eq!(a["ephemeral"], json!(["metro://telegram/8"]));
    let on_disk: Value =
        serde_json::from_slice(&std::fs::read(d.dir.join("claims.json")).unwrap()).unwrap();
    assert_eq!(on_disk, json!({"metro://telegram/9": A}));
    drop(holder);
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let a = other.ok(json!({"op": "claims"}));
        if a["claims"].get("metro://telegram/8").is_none() {
            assert_eq!(a["claims"]["metro://telegram/9"], json!(A));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "ephemeral claim outlived its connection"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn send_to_a_local_line_notifies_it_and_never_claims_it() {
    let d = Daemon::start();
    let mut c = d.connect();
    let target = "metro://codex/user/b/thread1";
    let mut b = d.connect();
    let s =
        b.subscribe(json!({"as": target, "mode": "mine-only", "follow": true, "since": "tail"}));

    let a = c.ok(json!({"op": "send", "line": target, "text": "please review", "from": A}));
    assert_eq!(
        a["claim"],
        json!("off"),
        "a local line is never auto-claimed"
    );
    assert_eq!(a["messageId"], a["id"]);
    let f = b.frame();
    assert_eq!(f["sub"], json!(s));
    let ev = &f["event"];
    assert_eq!(
        (ev["kind"].as_str(), ev["to"].as_str(), ev["from"].as_str()),
        (Some("notify"), Some(target), Some(A))
    );
    assert_eq!(ev["id"], a["id"]);

    let a = c.ok(json!({"op": "send", "line": target, "text": "again", "from": A}));
    assert_eq!(a["claim"], json!("off"));
    let a = c.ok(json!({"op": "send", "line": target, "text": "me too", "from": B}));
    assert_eq!(a["claim"], json!("off"));
    let claims = c.ok(json!({"op": "claims"}));
    assert_eq!(claims["claims"], json!({}), "nobody took the line over");
    assert_eq!(texts(&b.events(2)), ["again", "me too"]);

    let a = c.ok(json!({"op": "send", "line": "claude/user/z", "text": "x"}));
    assert_eq!(a["claim"], json!("off"), "no actor, no claim");
    let a = c.ok(
        json!({"op": "send", "line": "claude/user/z", "text": "x", "from": B, "noClaim": true}),
    );
    assert_eq!(a["claim"], json!("off"));

    let a = c.ok(
        json!({"op": "edit", "line": target, "messageId": a["id"], "text": "fixed", "from": A}),
    );
    assert_eq!(a["claim"], json!("off"));
    let a = c
        .ok(json!({"op": "react", "line": target, "messageId": "msg_1", "emoji": "👍", "from": A}));
    assert_eq!(a["claim"], json!("off"));
    assert!(a["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(c.ok(json!({"op": "claims"}))["claims"], json!({}));
    let log = d.history();
    let kinds: Vec<&str> = log.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["notify", "notify", "notify", "notify", "notify", "edit", "react"]
    );
    assert_eq!(log[6]["emoji"], json!("👍"));
    assert_eq!(log[5]["text"], json!("fixed"));
}

#[test]
fn platform_station_ops_answer_unavailable() {
    let d = Daemon::start();
    let mut c = d.connect();
    for req in [
        json!({"op": "send", "line": "telegram/1", "text": "x", "from": A}),
        json!({"op": "send", "line": "discord/1", "text": "x"}),
        json!({"op": "edit", "line": "telegram/1", "messageId": "5", "text": "x"}),
        json!({"op": "react", "line": "discord/1", "messageId": "5", "emoji": "x"}),
        json!({"op": "download", "line": "telegram/1", "messageId": "5", "outDir": "/tmp"}),
        json!({"op": "fetch", "line": "discord/1"}),
        // Webhook lines are inbound only.
        json!({"op": "send", "line": "webhook/abc", "text": "x", "from": A}),
        json!({"op": "react", "line": "webhook/abc", "messageId": "5", "emoji": "x"}),
    ] {
        c.err(req, "unavailable");
    }
    // Nothing was logged and nothing claimed for the refused sends.
    assert!(d.history().is_empty());
    assert_eq!(c.ok(json!({"op": "claims"}))["claims"], json!({}));
    c.err(
        json!({"op": "download", "line": "claude/user/a", "messageId": "5", "outDir": "/tmp"}),
        "bad_request",
    );
    let st = c.ok(json!({"op": "stations"}));
    let names: Vec<&str> = st["stations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["local", "telegram", "discord", "webhook"]);
    assert_eq!(st["stations"][0]["enabled"], json!(true));
    assert_eq!(st["stations"][1]["enabled"], json!(false));
    assert_eq!(st["stations"][3]["enabled"], json!(true));
    assert_eq!(st["stations"][3]["status"], json!("ok"));
}

#[test]
fn history_reads_newest_first_with_filters() {
    let d = Daemon::start_with(&["--fsync", "never"]);
    let mut c = d.connect();
    // Enough bytes that a small `limit` must not read everything: 2 MB.
    let pad = "p".repeat(900);
    for i in 0..2000 {
        let line = if i % 2 == 0 {
            "telegram/1"
        } else {
            "discord/2"
        };
        publish(
            &mut c,
            json!({"line": line, "text": format!("n{i} {pad}"), "from": if i % 3 == 0 { A } else { B }}),
        );
    }
    publish(
        &mut c,
        json!({"line": "telegram/1", "text": "Needle in HAY", "kind": "edit"}),
    );
    let a = c.ok(json!({"op": "history", "limit": 3}));
    let e = a["entries"].as_array().unwrap();
    assert_eq!(e.len(), 3);
    assert_eq!(e[0]["text"], "Needle in HAY");
    assert!(e[1]["text"].as_str().unwrap().starts_with("n1999 "));
    assert!(e[2]["text"].as_str().unwrap().starts_with("n1998 "));
    let a = c.ok(json!({"op": "history"}));
    assert_eq!(a["entries"].as_array().unwrap().len(), 50, "default limit");
    let a = c.ok(json!({"op": "history", "text": "needle"}));
    assert_eq!(a["entries"].as_array().unwrap().len(), 1);
    let a = c.ok(json!({"op": "history", "line": "discord/2", "limit": 2}));
    let e = a["entries"].as_array().unwrap();
    assert!(e.iter().all(|x| x["line"] == "metro://discord/2"));
    assert!(e[0]["text"].as_str().unwrap().starts_with("n1999 "));
    let a = c.ok(json!({"op": "history", "kind": "edit"}));
    assert_eq!(a["entries"].as_array().unwrap().len(), 1);
    let a = c.ok(json!({"op": "history", "station": "discord", "from": A, "limit": 1000}));
    let e = a["entries"].as_array().unwrap();
    assert_eq!(e.len(), 333);
    assert!(e
        .iter()
        .all(|x| x["from"] == json!(A) && x["station"] == "discord"));
    // The whole log, in chunks, newest first: offsets line up, until the
    // answer holds 1 MiB (1000 entries of ~1.1 KB would pass it).
    let a = c.ok(json!({"op": "history", "limit": 1000, "station": "telegram"}));
    let e = a["entries"].as_array().unwrap();
    assert_eq!(a["truncated"], true);
    let bytes: usize = e.iter().map(|x| x.to_string().len() + 1).sum();
    assert!(
        bytes <= 1 << 20 && bytes > (1 << 20) - 2048,
        "{bytes} bytes"
    );
    assert_eq!(e[0]["text"], "Needle in HAY");
    for (k, x) in e.iter().enumerate().skip(1) {
        let want = format!("n{} ", 2000 - 2 * k);
        assert!(x["text"].as_str().unwrap().starts_with(&want), "{k}: {x}");
    }
    let a = c.ok(json!({"op": "history", "since": "2999-01-01T00:00:00Z"}));
    assert_eq!(a["entries"], json!([]));
    let a = c.ok(json!({"op": "history", "since": "2000-01-01T00:00:00Z", "limit": 5}));
    assert_eq!(a["entries"].as_array().unwrap().len(), 5);

    let a = c.ok(json!({"op": "fetch", "line": "telegram/1", "limit": 3}));
    let m = a["messages"].as_array().unwrap();
    assert!(
        m[0]["text"].as_str().unwrap().starts_with("n1996 "),
        "fetch is oldest first"
    );
    assert_eq!(m[2]["text"], "Needle in HAY");
}

#[test]
fn lines_stats_and_cursor() {
    let d = Daemon::start();
    let mut c = d.connect();
    publish(
        &mut c,
        json!({"line": "telegram/1", "text": "a", "lineName": "ops room"}),
    );
    publish(&mut c, json!({"line": "discord/2", "text": "b"}));
    c.ok(json!({"op": "claim", "line": "discord/2", "as": A}));
    let a = c.ok(json!({"op": "lines"}));
    let l = a["lines"].as_array().unwrap();
    assert_eq!(l.len(), 2);
    assert_eq!(l[0]["line"], "metro://discord/2", "most recent first");
    assert_eq!(l[0]["owner"], json!(A));
    assert_eq!(l[1]["name"], "ops room");
    assert_eq!(l[1]["station"], "telegram");
    assert_eq!(l[1]["owner"], Value::Null);

    let mut sub = d.connect();
    let s = sub.subscribe(json!({"as": A, "ack": "explicit", "follow": true, "since": "start"}));
    sub.events(2);
    let st = c.ok(json!({"op": "stats"}));
    let end = std::fs::metadata(d.history_path()).unwrap().len();
    assert_eq!(st["logBytes"].as_u64(), Some(end));
    assert_eq!(st["fsync"], "always");
    assert!(st["connections"].as_u64().unwrap() >= 2);
    let subs = st["subscriptions"].as_array().unwrap();
    assert_eq!(subs.len(), 1);
    let x = &subs[0];
    assert_eq!(
        (
            x["sub"].as_str(),
            x["as"].as_str(),
            x["mode"].as_str(),
            x["ack"].as_str()
        ),
        (
            Some(s.as_str()),
            Some(A),
            Some("mine-or-unclaimed"),
            Some("explicit")
        )
    );
    assert_eq!(x["unacked"], json!(2));
    assert_eq!(x["cursor"], json!(0));
    assert_eq!(x["lag"].as_u64(), Some(end));
    assert_eq!(x["offset"].as_u64(), Some(end));
    sub.ok(json!({"op": "ack", "sub": s, "offset": end}));
    let a = c.ok(json!({"op": "cursor", "as": A}));
    assert_eq!(a["offset"].as_u64(), Some(end));
    assert_eq!(a["stored"], json!(true));
    let st = c.ok(json!({"op": "stats"}));
    assert_eq!(st["subscriptions"][0]["lag"], json!(0));
}
