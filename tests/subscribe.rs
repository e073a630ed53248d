//! Subscriptions over the real socket: every mode and filter against a mixed
//! stream, claims at delivery time, `since`, `follow`, `limit`, the three ack
//! modes, redelivery, and resuming from durable cursors.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const A: &str = "metro://claude/user/a";
const B: &str = "metro://codex/user/b";

/// Seven events on claimed, unclaimed, webhook and direct-message lines.
fn mixed(d: &Daemon) -> Client {
    let mut c = d.connect();
    c.ok(json!({"op": "claim", "line": "metro://telegram/100", "as": A}));
    c.ok(json!({"op": "claim", "line": "metro://telegram/200", "as": B}));
    c.ok(json!({"op": "claim", "line": "metro://telegram/400", "as": B}));
    for ev in [
        json!({"line": "metro://telegram/100", "text": "t1"}),
        json!({"line": "metro://telegram/200", "text": "t2"}),
        json!({"line": "metro://telegram/300", "text": "t3"}),
        json!({"line": "metro://discord/555", "text": "d1"}),
        json!({"line": "metro://webhook/hook1", "text": "w1"}),
        json!({"line": "metro://telegram/400", "text": "dm", "to": A}),
        json!({"line": "metro://telegram/300", "text": "e3", "kind": "edit"}),
    ] {
        publish(&mut c, ev);
    }
    c
}

#[test]
fn every_mode_and_filter_against_a_mixed_stream() {
    let d = Daemon::start();
    let mut c = mixed(&d);
    let cases: Vec<(Value, Vec<&str>)> = vec![
        (json!({}), vec!["t1", "t2", "t3", "d1", "w1", "dm", "e3"]),
        (json!({"mode": "unclaimed"}), vec!["t3", "d1", "w1", "e3"]),
        (json!({"as": A}), vec!["t1", "t3", "d1", "dm", "e3"]),
        (
            json!({"as": A, "includeWebhooks": true}),
            vec!["t1", "t3", "d1", "w1", "dm", "e3"],
        ),
        (json!({"as": A, "mode": "mine-only"}), vec!["t1", "dm"]),
        (json!({"as": B, "mode": "mine-only"}), vec!["t2", "dm"]),
        (
            json!({"as": A, "mode": "unclaimed"}),
            vec!["t3", "d1", "w1", "dm", "e3"],
        ),
        (
            json!({"as": A, "mode": "all"}),
            vec!["t1", "t2", "t3", "d1", "w1", "dm", "e3"],
        ),
        (
            json!({"as": A, "station": "telegram"}),
            vec!["t1", "t3", "dm", "e3"],
        ),
        (json!({"as": A, "kind": "edit"}), vec!["e3"]),
        (json!({"as": A, "chat": "telegram/300"}), vec!["t3", "e3"]),
        (json!({"station": "webhook"}), vec!["w1"]),
        (
            json!({"as": B, "mode": "mine-or-unclaimed", "chat": "metro://telegram/400"}),
            vec!["dm"],
        ),
    ];
    for (sub, want) in cases {
        assert_eq!(seen(&mut c, sub.clone()), want, "subscription {sub}");
    }
}

#[test]
fn claims_are_evaluated_at_delivery_time() {
    let d = Daemon::start();
    let mut a = d.connect();
    let mut other = d.connect();
    let sub = a.subscribe(json!({"as": A, "follow": true, "since": "tail"}));
    publish(&mut other, json!({"line": "telegram/300", "text": "free"}));
    assert_eq!(texts(&a.events(1)), ["free"]);
    other.ok(json!({"op": "claim", "line": "telegram/300", "as": B}));
    publish(&mut other, json!({"line": "telegram/300", "text": "taken"}));
    publish(
        &mut other,
        json!({"line": "telegram/301", "text": "elsewhere"}),
    );
    let f = a.frame();
    assert_eq!(f["event"]["text"], "elsewhere", "B's line must be skipped");
    assert_eq!(f["sub"], json!(sub));
    other.ok(json!({"op": "release", "line": "telegram/300"}));
    publish(
        &mut other,
        json!({"line": "telegram/300", "text": "free again"}),
    );
    assert_eq!(texts(&a.events(1)), ["free again"]);
    other.ok(json!({"op": "claim", "line": "telegram/300", "as": A}));
    let mine = a.subscribe(json!({"as": A, "mode": "mine-only", "follow": true, "since": "tail"}));
    publish(
        &mut other,
        json!({"line": "telegram/300", "text": "mine now"}),
    );
    let got: Vec<Value> = a.events(2);
    let subs: Vec<&str> = got.iter().map(|f| f["sub"].as_str().unwrap()).collect();
    assert!(subs.contains(&sub.as_str()) && subs.contains(&mine.as_str()));
    assert!(got.iter().all(|f| f["event"]["text"] == "mine now"));
}

#[test]
fn since_start_tail_offset_and_follow_with_limit() {
    let d = Daemon::start();
    let mut c = d.connect();
    let offsets: Vec<u64> = (0..5)
        .map(|i| {
            publish(
                &mut c,
                json!({"line": "telegram/1", "text": format!("m{i}")}),
            )["offset"]
                .as_u64()
                .unwrap()
        })
        .collect();
    // Offsets are byte positions just after each entry, matching the file.
    let file_len = std::fs::metadata(d.history_path()).unwrap().len();
    assert_eq!(*offsets.last().unwrap(), file_len);

    let s = c.subscribe(json!({"since": "start"}));
    let (ev, end) = c.drain(&s);
    assert_eq!(texts(&ev), ["m0", "m1", "m2", "m3", "m4"]);
    assert_eq!(end, file_len);
    let frame_offsets: Vec<u64> = ev.iter().map(|f| f["offset"].as_u64().unwrap()).collect();
    assert_eq!(frame_offsets, offsets);

    let s = c.subscribe(json!({"since": offsets[2]}));
    let (ev, _) = c.drain(&s);
    assert_eq!(texts(&ev), ["m3", "m4"]);
    let s = c.subscribe(json!({"since": "0"}));
    assert_eq!(c.drain(&s).0.len(), 5, "a numeric string offset works too");

    let s = c.subscribe(json!({"since": "tail"}));
    let (ev, end) = c.drain(&s);
    assert!(ev.is_empty());
    assert_eq!(end, file_len);

    let s = c.subscribe(json!({"since": "start", "limit": 2}));
    let (ev, end) = c.drain(&s);
    assert_eq!(texts(&ev), ["m0", "m1"]);
    assert_eq!(end, offsets[1]);

    // follow: history first, then live events, then `end` at the limit.
    let mut p = d.connect();
    let s = c.subscribe(json!({"since": offsets[3], "follow": true, "limit": 3}));
    assert_eq!(texts(&c.events(1)), ["m4"]);
    publish(&mut p, json!({"line": "telegram/1", "text": "live1"}));
    publish(&mut p, json!({"line": "telegram/1", "text": "live2"}));
    publish(&mut p, json!({"line": "telegram/1", "text": "live3"}));
    let (ev, _) = c.drain(&s);
    assert_eq!(texts(&ev), ["live1", "live2"]);
}

fn wait_cursor(c: &mut Client, name: &str, want: u64) {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let got = cursor_of(c, name);
        if got == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "cursor {name} at {got}, expected {want}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn cursor_of(c: &mut Client, name: &str) -> u64 {
    let a = c.ok(json!({"op": "cursor", "as": name}));
    a["offset"].as_u64().unwrap()
}

#[test]
fn auto_ack_moves_the_cursor_past_written_and_filtered_events() {
    let d = Daemon::start();
    let mut c = d.connect();
    c.ok(json!({"op": "claim", "line": "telegram/2", "as": B}));
    let o1 = publish(&mut c, json!({"line": "telegram/1", "text": "one"}))["offset"]
        .as_u64()
        .unwrap();
    let o2 = publish(&mut c, json!({"line": "telegram/2", "text": "not mine"}))["offset"]
        .as_u64()
        .unwrap();
    let s = c.subscribe(json!({"as": A}));
    let (ev, end) = c.drain(&s);
    assert_eq!(texts(&ev), ["one"]);
    assert_eq!(ev[0]["offset"].as_u64(), Some(o1));
    assert_eq!(end, o2, "end is at the log's end");
    // A drained auto-ack cursor sits at its end frame (moved once the frame
    // was written, which may be a moment after the client read it).
    wait_cursor(&mut c, A, o2);
    // The next subscription resumes after it.
    let o3 = publish(&mut c, json!({"line": "telegram/1", "text": "three"}))["offset"]
        .as_u64()
        .unwrap();
    let s = c.subscribe(json!({"as": A}));
    let (ev, _) = c.drain(&s);
    assert_eq!(texts(&ev), ["three"]);
    wait_cursor(&mut c, A, o3);
}

#[test]
fn explicit_ack_holds_the_cursor_and_resends_on_reconnect() {
    let d = Daemon::start();
    let mut c = d.connect();
    let offs: Vec<u64> = (0..4)
        .map(|i| {
            publish(
                &mut c,
                json!({"line": "telegram/1", "text": format!("e{i}")}),
            )["offset"]
                .as_u64()
                .unwrap()
        })
        .collect();
    let mut agent = d.connect();
    let s = agent.subscribe(json!({"as": A, "ack": "explicit", "follow": true}));
    let ev = agent.events(4);
    assert_eq!(texts(&ev), ["e0", "e1", "e2", "e3"]);
    assert_eq!(cursor_of(&mut c, A), 0, "nothing acked yet");
    let a = agent.ok(json!({"op": "ack", "sub": s, "offset": offs[1]}));
    assert_eq!(a["cursor"].as_u64(), Some(offs[1]));
    assert_eq!(cursor_of(&mut c, A), offs[1]);
    drop(agent);
    // Reconnect: everything after the cursor comes again.
    let mut agent = d.connect();
    let s = agent.subscribe(json!({"as": A, "ack": "explicit"}));
    let (ev, _) = agent.drain(&s);
    assert_eq!(texts(&ev), ["e2", "e3"]);
    // Still ackable after `end`.
    let a = agent.ok(json!({"op": "ack", "sub": s, "offset": offs[3]}));
    assert_eq!(a["cursor"].as_u64(), Some(offs[3]));
    // Fully acked and ended: the subscription is gone.
    agent.err(
        json!({"op": "ack", "sub": s, "offset": offs[3]}),
        "not_found",
    );
}

#[test]
fn explicit_ack_redelivers_after_ack_wait() {
    let d = Daemon::start();
    let mut c = d.connect();
    let o = publish(&mut c, json!({"line": "telegram/1", "text": "ping"}))["offset"]
        .as_u64()
        .unwrap();
    let s = c.subscribe(json!({"as": A, "ack": "explicit", "follow": true, "ackWaitMs": 150}));
    let first = c.frame();
    assert!(first.get("redelivered").is_none());
    let again = c.frame();
    assert_eq!(again["redelivered"], json!(1), "{again}");
    assert_eq!(again["event"], first["event"]);
    assert_eq!(again["offset"].as_u64(), Some(o));
    let third = c.frame();
    assert_eq!(third["redelivered"], json!(2));
    c.ok(json!({"op": "ack", "sub": s, "offset": o}));
    // Drain anything sent before the ack landed, then expect silence.
    while let Some(f) = c.frame_within(Duration::from_millis(400)) {
        assert_eq!(
            f["offset"].as_u64(),
            Some(o),
            "only the acked event was pending: {f}"
        );
    }
    let stats = c.ok(json!({"op": "stats"}));
    let sub = &stats["subscriptions"][0];
    assert_eq!(sub["unacked"], json!(0));
    assert_eq!(sub["cursor"].as_u64(), Some(o));
}

#[test]
fn explicit_ack_pauses_at_max_unacked() {
    let d = Daemon::start_with(&["--max-unacked", "3"]);
    let mut c = d.connect();
    let offs: Vec<u64> = (0..5)
        .map(|i| {
            publish(
                &mut c,
                json!({"line": "telegram/1", "text": format!("p{i}")}),
            )["offset"]
                .as_u64()
                .unwrap()
        })
        .collect();
    let s = c.subscribe(
        json!({"ack": "explicit", "follow": true, "since": "start", "cursor": "pauser"}),
    );
    assert_eq!(texts(&c.events(3)), ["p0", "p1", "p2"]);
    assert!(
        c.frame_within(Duration::from_millis(300)).is_none(),
        "paused at 3 unacked"
    );
    let stats = c.ok(json!({"op": "stats"}));
    assert_eq!(stats["subscriptions"][0]["unacked"], json!(3));
    c.ok(json!({"op": "ack", "sub": s, "offset": offs[1]}));
    assert_eq!(texts(&c.events(2)), ["p3", "p4"]);
}

#[test]
fn ack_none_never_moves_the_cursor() {
    let d = Daemon::start();
    let mut c = d.connect();
    publish(&mut c, json!({"line": "telegram/1", "text": "x"}));
    let s = c.subscribe(json!({"as": A, "ack": "none"}));
    let (ev, end) = c.drain(&s);
    assert_eq!(ev.len(), 1);
    assert!(end > 0);
    assert_eq!(cursor_of(&mut c, A), 0);
    let a = c.ok(json!({"op": "cursor", "as": A}));
    assert_eq!(a["stored"], json!(false));
}

#[test]
fn cursors_survive_a_restart_and_named_cursors_are_separate() {
    let mut d = Daemon::start();
    let mut c = d.connect();
    for i in 0..3 {
        publish(
            &mut c,
            json!({"line": "telegram/1", "text": format!("r{i}")}),
        );
    }
    let s = c.subscribe(json!({"as": A, "limit": 2}));
    let (ev, end) = c.drain(&s);
    assert_eq!(texts(&ev), ["r0", "r1"]);
    let s = c.subscribe(json!({"cursor": "audit", "limit": 1}));
    assert_eq!(texts(&c.drain(&s).0), ["r0"]);
    drop(c);
    assert!(d.stop().success());
    let stored = std::fs::read_to_string(d.dir.join("cursors/claude%2Fuser%2Fa")).unwrap();
    assert_eq!(stored.trim().parse::<u64>().unwrap(), end);
    d.restart();
    let mut c = d.connect();
    let s = c.subscribe(json!({"as": A}));
    assert_eq!(texts(&c.drain(&s).0), ["r2"]);
    let s = c.subscribe(json!({"cursor": "audit"}));
    assert_eq!(texts(&c.drain(&s).0), ["r1", "r2"]);
}

#[test]
fn unsubscribe_stops_frames() {
    let d = Daemon::start();
    let mut c = d.connect();
    let s = c.subscribe(json!({"follow": true, "since": "tail"}));
    let mut p = d.connect();
    publish(&mut p, json!({"line": "telegram/1", "text": "before"}));
    assert_eq!(texts(&c.events(1)), ["before"]);
    let a = c.ok(json!({"op": "unsubscribe", "sub": s}));
    assert_eq!(a["sub"], json!(s));
    publish(&mut p, json!({"line": "telegram/1", "text": "after"}));
    assert!(c.frame_within(Duration::from_millis(300)).is_none());
    c.err(json!({"op": "unsubscribe", "sub": s}), "not_found");
}

#[test]
fn a_subscriber_far_behind_catches_up_from_the_file_in_order() {
    // A ring of 64 KiB holds a few hundred events; 3,000 force the file path.
    let d = Daemon::start_with(&["--ring-bytes", "65536", "--fsync", "never"]);
    let mut p = d.connect();
    let slow = d.connect();
    let mut slow = slow;
    let s = slow.subscribe(json!({"follow": true, "since": "tail"}));
    let body = "x".repeat(200);
    for i in 0..3000 {
        publish(
            &mut p,
            json!({"line": "telegram/1", "text": format!("{i} {body}")}),
        );
    }
    let mut last = 0;
    for i in 0..3000 {
        let f = slow.frame();
        assert_eq!(f["sub"], json!(s));
        let text = f["event"]["text"].as_str().unwrap();
        assert!(
            text.starts_with(&format!("{i} ")),
            "event {i} out of order: {text}"
        );
        let off = f["offset"].as_u64().unwrap();
        assert!(off > last);
        last = off;
    }
    assert_eq!(last, std::fs::metadata(d.history_path()).unwrap().len());
}

/// The number an event frame's text starts with.
fn number(f: &Value) -> usize {
    let text = f["event"]["text"].as_str().expect("text");
    text.split(' ')
        .next()
        .unwrap()
        .parse()
        .expect("numbered text")
}

fn signal(d: &Daemon, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(d.pid()), sig).expect("signal metrod");
}

#[test]
fn an_auto_ack_cursor_never_passes_a_frame_that_was_not_written() {
    let d = Daemon::start_with(&["--fsync", "never"]);
    // A subscriber that stops reading at once.
    let mut stalled = UnixStream::connect(&d.socket).unwrap();
    let sub = json!({"op": "subscribe", "req": 1, "as": A, "follow": true, "ack": "auto"});
    stalled.write_all(format!("{sub}\n").as_bytes()).unwrap();
    // About 3 MB of frames: far more than the socket's buffers and the
    // connection's 256 KiB outbox hold, so metrod's writer ends up blocked
    // in the middle of a write.
    const N: usize = 3000;
    let pad = "p".repeat(1000);
    let mut p = d.connect();
    let mut last_offset = 0;
    for i in 0..N {
        let a = publish(
            &mut p,
            json!({"line": "telegram/1", "text": format!("{i} {pad}")}),
        );
        last_offset = a["offset"].as_u64().unwrap();
    }
    // Wait until the cursor stops moving: the outbox is full and the writer
    // waits for the socket.
    let deadline = std::time::Instant::now() + PATIENCE;
    let mut cursor = cursor_of(&mut p, A);
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = cursor_of(&mut p, A);
        if now == cursor {
            break;
        }
        cursor = now;
        assert!(std::time::Instant::now() < deadline, "cursor never settled");
    }
    assert!(
        cursor < last_offset,
        "every frame fit in the buffers; the test needs more events"
    );
    // Freeze metrod, take every byte it wrote to the socket, hang up, and
    // let it go on: the write it was blocked in now fails.
    signal(&d, nix::sys::signal::Signal::SIGSTOP);
    stalled.set_nonblocking(true).unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match stalled.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("read: {e}"),
        }
    }
    drop(stalled);
    signal(&d, nix::sys::signal::Signal::SIGCONT);
    // Frames received in full (a cut last frame does not count).
    let complete = &got[..got.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1)];
    let frames: Vec<Value> = complete
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    assert_eq!(frames[0]["ok"], json!(true), "{}", frames[0]);
    let received: Vec<usize> = frames[1..].iter().map(number).collect();
    assert_eq!(received, (0..received.len()).collect::<Vec<_>>());
    assert!(received.len() < N);
    // Once the stalled subscription is gone, resume on the same cursor.
    let deadline = std::time::Instant::now() + PATIENCE;
    while !p.ok(json!({"op": "stats"}))["subscriptions"]
        .as_array()
        .unwrap()
        .is_empty()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "subscription not gone"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let s = p.subscribe(json!({"as": A}));
    let (ev, _) = p.drain(&s);
    let resumed: Vec<usize> = ev.iter().map(number).collect();
    let first = resumed.first().copied().unwrap_or(N);
    assert!(
        first <= received.len(),
        "events {}..{first} were skipped: the cursor passed frames the subscriber never received in full",
        received.len()
    );
    assert_eq!(
        resumed,
        (first..N).collect::<Vec<_>>(),
        "nothing skipped after the resume point"
    );
}
