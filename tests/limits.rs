//! Hardening (issue 14): what one client can make metrod hold is bounded,
//! and the bounds answer `limit` without closing the connection.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::mpsc;
use std::time::Instant;

use common::*;
use serde_json::{json, Value};

/// What a misbehaving client may add to metrod's RSS, stated in
/// docs/broker.md ("Limits and threat model").
const CLIENT_RSS_BOUND_KIB: u64 = 64 * 1024;

fn proc_status_kib(pid: i32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// One stored event line (without its `\n`) whose text is `text_len` bytes.
fn event_line(i: usize, text_len: usize) -> String {
    format!(
        "{{\"id\":\"msg_{i}\",\"ts\":\"2026-01-01T00:00:00.000Z\",\"station\":\"telegram\",\"kind\":\"inbound\",\"line\":\"metro://telegram/1\",\"from\":\"metro://telegram/user/1\",\"to\":\"metro://telegram/1\",\"text\":\"{}\"}}",
        "y".repeat(text_len)
    )
}

/// Writes a log of about `total` bytes of ~50 KB events into `dir`; returns
/// the size of one event line.
fn write_big_log(dir: &Path, total: usize) -> usize {
    std::fs::create_dir_all(dir).unwrap();
    let mut f = std::io::BufWriter::new(std::fs::File::create(dir.join("history.jsonl")).unwrap());
    let mut written = 0;
    let mut i = 0;
    let mut size = 0;
    while written < total {
        let l = event_line(i, 50_000);
        size = l.len();
        f.write_all(l.as_bytes()).unwrap();
        f.write_all(b"\n").unwrap();
        written += l.len() + 1;
        i += 1;
    }
    f.flush().unwrap();
    size
}

fn raw(d: &Daemon) -> UnixStream {
    let s = UnixStream::connect(&d.socket).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s
}

#[test]
fn pipelined_history_on_sixteen_connections_that_never_read_stays_bounded() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    write_big_log(&dir, 50 << 20);
    let d = Daemon::start_in(&dir, &["--fsync", "never"]);
    let idle = proc_status_kib(d.pid(), "VmRSS:");

    // 16 connections each pipeline 16 requests for 1000 entries (all of a
    // 50 MB log) and read nothing.
    let mut conns: Vec<UnixStream> = (0..16).map(|_| raw(&d)).collect();
    for s in conns.iter_mut() {
        let mut batch = String::new();
        for req in 1..=16 {
            batch.push_str(&format!(
                "{{\"op\":\"history\",\"req\":{req},\"limit\":1000}}\n"
            ));
        }
        s.write_all(batch.as_bytes()).unwrap();
    }
    // Every connection's first answer is under way...
    for s in conns.iter_mut() {
        let mut first = [0u8; 1];
        s.read_exact(&mut first).unwrap();
        assert_eq!(&first, b"{");
    }
    // ...and metrod still answers another client at once.
    let mut other = d.connect();
    other.ok(json!({"op": "hello"}));
    // One answer, whole: 1 MiB of entries, marked truncated, and what the
    // schema says.
    let a = other.ok(json!({"op": "history", "limit": 1000}));
    let n = a["entries"].as_array().unwrap().len();
    assert!((1..1000).contains(&n), "{n} entries");
    assert_eq!(a["truncated"], true);
    let frames = schema_validator("frame");
    let last = other.received.last().unwrap();
    let errors: Vec<String> = frames
        .iter_errors(&serde_json::from_str::<Value>(last).unwrap())
        .map(|e| e.to_string().chars().take(300).collect())
        .collect();
    assert!(errors.is_empty(), "{errors:?}");

    // Now read everything: all 256 answers arrive, each a truncated ok.
    for s in conns.into_iter() {
        let mut r = BufReader::with_capacity(1 << 20, s);
        let mut answered = Vec::new();
        let mut line = Vec::new();
        for i in 0..16 {
            line.clear();
            r.read_until(b'\n', &mut line).unwrap();
            let text = if i == 0 {
                let mut t = b"{".to_vec();
                t.extend_from_slice(&line);
                t
            } else {
                line.clone()
            };
            let head = String::from_utf8_lossy(&text[..text.len().min(80)]).to_string();
            let req: u64 = head
                .strip_prefix("{\"req\":")
                .and_then(|h| h.split(',').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("not an answer: {head}"));
            assert!(
                head.contains("\"ok\":true,\"truncated\":true,\"entries\":["),
                "{head}"
            );
            assert!(text.len() < (1 << 20) + 64 * 1024, "{} bytes", text.len());
            answered.push(req);
        }
        answered.sort();
        assert_eq!(answered, (1..=16).collect::<Vec<u64>>());
    }
    let peak = proc_status_kib(d.pid(), "VmHWM:");
    eprintln!("idle {idle} KiB, peak {peak} KiB");
    assert!(
        peak.saturating_sub(idle) < CLIENT_RSS_BOUND_KIB,
        "metrod grew from {idle} KiB idle to a peak of {peak} KiB"
    );
    other.ok(json!({"op": "hello"}));
}

#[test]
fn unacked_copies_are_bounded_by_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    let size = write_big_log(&dir, 50 << 20);
    let d = Daemon::start_in(&dir, &["--fsync", "never"]);
    let idle = proc_status_kib(d.pid(), "VmRSS:");
    // Delivery pauses once the unacked copies hold 1 MiB (the default):
    // after exactly this many events of this size.
    let k = (1usize << 20).div_ceil(size) as u64;

    // Eight explicit subscriptions on one connection, read but never acked.
    let mut s = raw(&d);
    let mut batch = String::new();
    for req in 1..=8 {
        batch.push_str(&format!(
            "{{\"op\":\"subscribe\",\"req\":{req},\"since\":\"start\",\"ack\":\"explicit\"}}\n"
        ));
    }
    s.write_all(batch.as_bytes()).unwrap();
    let (tx, rx) = mpsc::channel::<(String, bool)>();
    let reader = s.try_clone().unwrap();
    reader.set_read_timeout(None).unwrap();
    std::thread::spawn(move || {
        let mut r = BufReader::new(reader);
        let mut line = String::new();
        while r.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
            let v: Value = serde_json::from_str(&line).unwrap();
            let sub = v["sub"].as_str().unwrap_or_default().to_string();
            if tx.send((sub, v.get("event").is_some())).is_err() {
                return;
            }
            line.clear();
        }
    });
    let mut events: std::collections::HashMap<String, u64> = Default::default();
    let deadline = Instant::now() + PATIENCE;
    while events.len() < 8 || events.values().any(|&n| n < k) {
        let left = deadline.saturating_duration_since(Instant::now());
        let (sub, is_event) = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("only {events:?} of {k} events each arrived"));
        if is_event {
            *events.entry(sub).or_default() += 1;
        }
    }
    let mut c = d.connect();
    let stats = c.ok(json!({"op": "stats"}));
    let end = stats["logBytes"].as_u64().unwrap();
    let subs = stats["subscriptions"].as_array().unwrap();
    assert_eq!(subs.len(), 8, "{stats}");
    for sub in subs {
        assert_eq!(sub["unacked"], k, "{sub}");
        assert!(sub["offset"].as_u64().unwrap() < end, "{sub}");
    }
    let now = proc_status_kib(d.pid(), "VmRSS:");
    assert!(
        now.saturating_sub(idle) < CLIENT_RSS_BOUND_KIB,
        "metrod grew from {idle} KiB idle to {now} KiB"
    );
    // Nothing more was delivered than the bound allows.
    while let Ok((sub, is_event)) = rx.try_recv() {
        if is_event {
            *events.entry(sub).or_default() += 1;
        }
    }
    assert!(events.values().all(|&n| n == k), "{events:?}");
    c.ok(json!({"op": "hello"}));
}

#[test]
fn subscriptions_per_connection_are_limited_and_the_connection_stays_open() {
    let d = Daemon::start_with(&["--max-subscriptions", "2"]);
    let mut c = d.connect();
    c.subscribe(json!({"follow": true}));
    let second = c.subscribe(json!({"follow": true}));
    let e = c.err(json!({"op": "subscribe", "follow": true}), "limit");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("--max-subscriptions"),
        "{e}"
    );
    c.ok(json!({"op": "hello"}));
    c.ok(json!({"op": "unsubscribe", "sub": second}));
    c.subscribe(json!({"follow": true}));
    check_schema(&c, &d);
}

#[test]
fn connections_past_the_limit_are_refused_with_limit() {
    let d = Daemon::start_with(&["--max-connections", "2"]);
    let mut a = d.connect();
    // The readiness probe's connection may still be closing: wait for it.
    let deadline = Instant::now() + PATIENCE;
    while a.ok(json!({"op": "stats"}))["connections"] != 1 {
        assert!(Instant::now() < deadline, "connections never dropped to 1");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let mut b = d.connect();
    b.ok(json!({"op": "hello"}));
    let mut third = d.connect();
    let line = third.read_line().expect("an answer before the close");
    let f: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(f["ok"], false, "{f}");
    assert_eq!(f["error"]["code"], "limit", "{f}");
    assert!(third.closed());
    check_schema(&third, &d);
    // The others are still served; once one leaves, a new one is admitted.
    a.ok(json!({"op": "hello"}));
    drop(b);
    let deadline = Instant::now() + PATIENCE;
    loop {
        let mut c = d.connect();
        if c.try_request(json!({"op": "hello"}))
            .is_some_and(|v| v["ok"] == true)
        {
            break;
        }
        assert!(Instant::now() < deadline, "no room after a client left");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
