//! The monitor (docs/monitor.md) against a real metrod: auth, `/api/state`
//! and its paging, the SSE stream (live, resumed with `Last-Event-ID`,
//! bounded when the browser stalls), and off without a token.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use reqwest::blocking::Client as Http;
use serde_json::{json, Value};

const TOKEN: &str = "0123456789abcdef-monitor-token";

fn monitored(args: &[&str]) -> Daemon {
    Daemon::start_env(
        args,
        &[("METRO_MONITOR_TOKEN", TOKEN), ("METRO_LOG", "debug")],
    )
}

fn http() -> Http {
    Http::builder().timeout(None).build().unwrap()
}

fn get(url: &str, auth: Option<&str>) -> reqwest::blocking::Response {
    let mut r = http().get(url);
    if let Some(t) = auth {
        r = r.header("authorization", format!("Bearer {t}"));
    }
    r.send().expect("GET")
}

/// `/api/state?<query>` with the right token.
fn state(d: &Daemon, query: &str) -> Value {
    let r = get(
        &format!("{}/api/state?{query}", d.webhook_url()),
        Some(TOKEN),
    );
    assert_eq!(r.status(), 200);
    r.json().expect("JSON state")
}

#[test]
fn monitor_off_without_a_token() {
    let d = Daemon::start();
    let base = d.webhook_url();
    for path in ["/", "/api/state", "/api/tail"] {
        let r = get(&format!("{base}{path}"), Some(TOKEN));
        assert_eq!(r.status(), 404, "{path}");
        let v: Value = r.json().unwrap();
        assert!(v["error"].as_str().unwrap().contains("/hooks/"), "{v}");
    }
}

#[test]
fn every_api_request_needs_the_token() {
    let d = monitored(&[]);
    let base = d.webhook_url();
    let bare_401 = |r: reqwest::blocking::Response| {
        assert_eq!(r.status(), 401);
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
        assert!(r.text().unwrap().is_empty(), "a 401 says nothing else");
    };
    for path in ["/api/state", "/api/tail", "/api/nothing"] {
        bare_401(get(&format!("{base}{path}"), None));
        bare_401(get(&format!("{base}{path}"), Some("wrong")));
        bare_401(get(&format!("{base}{path}"), Some(&format!("{TOKEN}x"))));
    }
    // `?token=` is for the stream only.
    bare_401(get(&format!("{base}/api/state?token={TOKEN}"), None));
    bare_401(get(&format!("{base}/api/tail?token=wrong"), None));
    let r = get(&format!("{base}/api/state"), Some(TOKEN));
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    assert!(r.headers().get("access-control-allow-origin").is_none());
    let r = get(&format!("{base}/api/tail?token={TOKEN}"), None);
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    drop(r);
    let r = get(&format!("{base}/api/tail"), Some(TOKEN));
    assert_eq!(r.status(), 200);
    drop(r);
    let r = get(&format!("{base}/api/nothing"), Some(TOKEN));
    assert_eq!(r.status(), 404);
    // The page needs no token (it holds no data and asks for it).
    let r = get(&format!("{base}/"), None);
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(r.text().unwrap().contains("/api/tail"));
    // Read-only.
    let r = http()
        .post(format!("{base}/api/state"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 405);
    // Webhooks are untouched.
    let r = http().post(format!("{base}/hooks/nope")).send().unwrap();
    assert_eq!(r.status(), 404);
    // The token is never logged, though metrod logs at debug.
    assert!(!d.stderr().contains(TOKEN), "{}", d.stderr());
}

#[test]
fn cors_only_for_configured_origins() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("config.toml");
    std::fs::write(
        &cfg,
        format!("[monitor]\ntoken = \"{TOKEN}\"\norigins = [\"https://phone.example\"]\n"),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o600)).unwrap();
    let d = Daemon::start_with(&["--config", cfg.to_str().unwrap()]);
    let url = format!("{}/api/state", d.webhook_url());
    let with_origin = |o: &str| {
        http()
            .get(&url)
            .header("authorization", format!("Bearer {TOKEN}"))
            .header("origin", o)
            .send()
            .unwrap()
    };
    let r = with_origin("https://phone.example");
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://phone.example"
    );
    let r = with_origin("https://evil.example");
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("access-control-allow-origin").is_none());
    let r = http()
        .request(reqwest::Method::OPTIONS, &url)
        .header("origin", "https://phone.example")
        .send()
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(r.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .contains("authorization"));
}

#[test]
fn state_shows_claims_lines_stations_subscriptions_and_pages_events() {
    let d = monitored(&[]);
    let mut c = d.connect();
    let agent = "metro://claude/user/agent1";
    let mut offsets = Vec::new();
    for i in 1..=7 {
        let line = if i % 2 == 0 {
            "telegram/2"
        } else {
            "telegram/1"
        };
        let a = publish(&mut c, json!({"line": line, "text": format!("e{i}")}));
        offsets.push(a["offset"].as_u64().unwrap());
    }
    c.ok(json!({"op": "claim", "line": "telegram/1", "as": agent}));
    // An agent holding its line's events unacknowledged.
    let mut a = d.connect();
    let sub = a.subscribe(json!({"as": agent, "mode": "mine-only", "ack": "explicit", "follow": true, "since": "start"}));
    let f = a.frame();
    assert_eq!(f["sub"], json!(sub));

    let s = state(&d, "limit=3");
    assert_eq!(s["version"], json!(env!("CARGO_PKG_VERSION")));
    assert!(s["uptimeMs"].as_u64().is_some());
    assert_eq!(s["logBytes"], json!(offsets[6]));
    assert_eq!(s["claims"]["metro://telegram/1"], json!(agent));
    let lines = s["lines"].as_array().unwrap();
    let l1 = lines
        .iter()
        .find(|l| l["line"] == "metro://telegram/1")
        .expect("line 1");
    assert_eq!(l1["owner"], json!(agent));
    assert_eq!(l1["events"], json!(4));
    assert!(l1["lastTs"].as_str().is_some());
    let l2 = lines
        .iter()
        .find(|l| l["line"] == "metro://telegram/2")
        .expect("line 2");
    assert_eq!(l2["owner"], Value::Null);
    let webhook = s["stations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|st| st["name"] == "webhook")
        .expect("webhook station");
    assert_eq!(webhook["status"], json!("ok"));
    let subs = s["subscriptions"].as_array().unwrap();
    let mine = subs
        .iter()
        .find(|x| x["sub"] == json!(sub))
        .expect("the agent's subscription");
    assert_eq!(mine["as"], json!(agent));
    assert_eq!(
        mine["unacked"],
        json!(4),
        "the 4 events of its line, none acked"
    );
    assert!(mine["lag"].as_u64().unwrap() > 0);

    // Newest first, three a page, with offsets; `next` pages back.
    let texts = |s: &Value| -> Vec<String> {
        s["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["event"]["text"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(texts(&s), ["e7", "e6", "e5"]);
    assert_eq!(s["events"][0]["offset"], json!(offsets[6]));
    let next = s["next"].as_u64().expect("a next page");
    assert_eq!(next, offsets[3]);
    let s2 = state(&d, &format!("limit=3&before={next}"));
    assert_eq!(texts(&s2), ["e4", "e3", "e2"]);
    let s3 = state(&d, &format!("limit=3&before={}", s2["next"]));
    assert_eq!(texts(&s3), ["e1"]);
    assert_eq!(s3["next"], Value::Null);
    assert_eq!(texts(&state(&d, "")).len(), 7);

    // Bad paging is refused clearly.
    let base = d.webhook_url();
    for q in [
        "limit=0",
        "limit=501",
        "limit=x",
        "before=5",
        "before=99999999",
    ] {
        let r = get(&format!("{base}/api/state?{q}"), Some(TOKEN));
        assert_eq!(r.status(), 400, "{q}");
        let v: Value = r.json().unwrap();
        assert!(!v["error"].as_str().unwrap().is_empty());
    }
}

/// One SSE message: its `id`, `event` type and `data`.
#[derive(Debug, Default, Clone)]
struct Sse {
    id: Option<String>,
    event: Option<String>,
    data: String,
}

/// Reads a stream's messages on a thread; they arrive on the channel.
fn sse_reader(r: reqwest::blocking::Response) -> mpsc::Receiver<Sse> {
    assert_eq!(r.status(), 200);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut msg = Sse::default();
        let mut any = false;
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { return };
            if line.is_empty() {
                if any && tx.send(std::mem::take(&mut msg)).is_err() {
                    return;
                }
                any = false;
                continue;
            }
            if let Some(v) = line.strip_prefix("id: ") {
                msg.id = Some(v.into());
            } else if let Some(v) = line.strip_prefix("event: ") {
                msg.event = Some(v.into());
            } else if let Some(v) = line.strip_prefix("data: ") {
                msg.data.push_str(v);
            } else {
                continue;
            }
            any = true;
        }
    });
    rx
}

fn next_event(rx: &mpsc::Receiver<Sse>) -> (u64, Value) {
    let m = rx.recv_timeout(PATIENCE).expect("an SSE event in time");
    assert_eq!(m.event, None, "{m:?}");
    let id = m.id.as_deref().expect("an id").parse().expect("offset id");
    (id, serde_json::from_str(&m.data).expect("event JSON"))
}

fn tail(d: &Daemon, query: &str, last_id: Option<u64>) -> mpsc::Receiver<Sse> {
    let mut r = http()
        .get(format!("{}/api/tail?{query}", d.webhook_url()))
        .header("authorization", format!("Bearer {TOKEN}"));
    if let Some(id) = last_id {
        r = r.header("last-event-id", id.to_string());
    }
    sse_reader(r.send().unwrap())
}

/// Waits until the monitor's subscription is registered (the stream is
/// live); returns its row from `stats`.
fn monitor_sub(c: &mut Client) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let s = c.ok(json!({"op": "stats"}));
        if let Some(row) = s["subscriptions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["sub"].as_str().unwrap().starts_with("monitor-"))
        {
            return row.clone();
        }
        assert!(Instant::now() < deadline, "no monitor subscription: {s}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn stream_delivers_live_and_resumes_without_gaps() {
    let d = monitored(&[]);
    let mut c = d.connect();
    publish(&mut c, json!({"line": "telegram/1", "text": "before"}));
    let agent = "metro://claude/user/watcher";
    // From the end by default, with tail's filters.
    let rx = tail(&d, &format!("as={agent}&mode=all"), None);
    let row = monitor_sub(&mut c);
    assert_eq!(row["ack"], json!("none"));
    let a = publish(&mut c, json!({"line": "telegram/1", "text": "live one"}));
    let (id, ev) = next_event(&rx);
    assert_eq!(
        ev["text"],
        json!("live one"),
        "not `before`: the stream starts at the end"
    );
    assert_eq!(id, a["offset"].as_u64().unwrap());
    drop(rx);
    // Published while the browser is away.
    let mut missed = Vec::new();
    for i in 0..5 {
        let a = publish(
            &mut c,
            json!({"line": "telegram/1", "text": format!("away {i}")}),
        );
        missed.push(a["offset"].as_u64().unwrap());
    }
    let rx = tail(&d, &format!("as={agent}&mode=all"), Some(id));
    for (i, want) in missed.iter().enumerate() {
        let (got, ev) = next_event(&rx);
        assert_eq!(ev["text"], json!(format!("away {i}")));
        assert_eq!(got, *want);
    }
    let a = publish(&mut c, json!({"line": "telegram/1", "text": "after"}));
    let (got, ev) = next_event(&rx);
    assert_eq!(
        (got, ev["text"].clone()),
        (a["offset"].as_u64().unwrap(), json!("after"))
    );
    // It moved no cursor and claimed nothing.
    let cur = c.ok(json!({"op": "cursor", "as": agent}));
    assert_eq!(cur["stored"], json!(false));
    let claims = c.ok(json!({"op": "claims"}));
    assert_eq!(claims["claims"], json!({}));

    // Filters: `station` and `since`.
    publish(&mut c, json!({"line": "discord/9", "text": "on discord"}));
    let rx = tail(&d, "station=discord&since=start", None);
    let (_, ev) = next_event(&rx);
    assert_eq!(ev["text"], json!("on discord"));
    // Bad filters are refused with a reason.
    for q in [
        "mode=sideways",
        "since=yesterday",
        "mode=mine-only",
        "since=3",
    ] {
        let r = get(&format!("{}/api/tail?{q}", d.webhook_url()), Some(TOKEN));
        assert_eq!(r.status(), 400, "{q}");
        let v: Value = r.json().unwrap();
        assert!(!v["error"].as_str().unwrap().is_empty());
    }
}

fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[test]
fn a_stalled_browser_is_bounded() {
    let d = monitored(&["--ring-bytes", "1048576"]);
    let mut c = d.connect();
    let big = "x".repeat(8 << 10);
    let publish_mib = |c: &mut Client, mib: usize| {
        for _ in 0..mib * 128 {
            publish(c, json!({"line": "telegram/1", "text": big}));
        }
    };
    // Warm up: the ring and the allocator reach their working size.
    publish_mib(&mut c, 4);
    // A browser that asks for the stream and never reads it.
    let addr = d.webhook_url().trim_start_matches("http://").to_string();
    let mut stalled = TcpStream::connect(&addr).unwrap();
    write!(
        stalled,
        "GET /api/tail?since=start HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
    )
    .unwrap();
    monitor_sub(&mut c);
    let before = rss_kib(d.pid());
    publish_mib(&mut c, 24);
    let row = monitor_sub(&mut c);
    let end = c.ok(json!({"op": "stats"}))["logBytes"].as_u64().unwrap();
    let pos = row["offset"].as_u64().unwrap();
    // The subscription stopped reading the log when its outbox filled.
    assert!(
        end - pos > 16 << 20,
        "the stalled stream read on: at {pos} of {end}"
    );
    let after = rss_kib(d.pid());
    eprintln!("stalled stream at {pos} of {end}; metrod {before} KiB -> {after} KiB");
    assert!(
        after < before + 16 * 1024,
        "metrod grew from {before} KiB to {after} KiB for a stalled stream"
    );
    drop(stalled);
}

#[test]
fn setup_makes_a_token_the_running_daemon_takes() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("metro/config.toml");
    let cfg_s = cfg.to_str().unwrap().to_string();
    let d = Daemon::start_with(&["--config", &cfg_s]);
    let url = format!("{}/api/state", d.webhook_url());
    assert_eq!(get(&url, Some("anything")).status(), 404, "off at first");
    let out = run_ok(&mut metroctl(
        &d,
        &["setup", "--monitor", "--config", &cfg_s],
    ));
    let stdout = String::from_utf8(out.stdout).unwrap();
    // Printed once: 64 hex digits, the only place it is shown.
    let token: String = stdout
        .split_whitespace()
        .find(|w| w.len() == 64 && w.bytes().all(|b| b.is_ascii_hexdigit()))
        .unwrap_or_else(|| panic!("a 256-bit token in: {stdout}"))
        .to_string();
    assert_eq!(stdout.matches(&token).count(), 1, "{stdout}");
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(&cfg).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert!(std::fs::read_to_string(&cfg).unwrap().contains(&token));
    // metrod reloads the file on its own; the token then opens the API.
    let deadline = Instant::now() + PATIENCE;
    while get(&url, Some(&token)).status() != 200 {
        assert!(Instant::now() < deadline, "metrod never took the token");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(get(&url, Some("wrong")).status(), 401);
    // A second run masks it; --monitor-off turns the monitor off again.
    let out = run_ok(&mut metroctl(
        &d,
        &["setup", "--allow-telegram", "1", "--config", &cfg_s],
    ));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        !stdout.contains(&token) && stdout.contains("monitor   on"),
        "{stdout}"
    );
    run_ok(&mut metroctl(
        &d,
        &["setup", "--monitor-off", "--config", &cfg_s],
    ));
    while get(&url, Some(&token)).status() != 404 {
        assert!(
            Instant::now() < deadline,
            "metrod never turned the monitor off"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!d.stderr().contains(&token));
}

#[test]
fn an_open_stream_ends_cleanly_at_shutdown() {
    let mut d = monitored(&[]);
    let rx = tail(&d, "", None);
    let mut c = d.connect();
    monitor_sub(&mut c);
    drop(c);
    let status = d.stop();
    assert!(status.success(), "{status}: {}", d.stderr());
    // The stream ended with the daemon instead of holding its shutdown.
    assert!(!d.stderr().contains("did not finish"), "{}", d.stderr());
    let deadline = Instant::now() + PATIENCE;
    loop {
        match rx.recv_timeout(PATIENCE) {
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Ok(_) => assert!(Instant::now() < deadline, "the stream went on"),
            Err(mpsc::RecvTimeoutError::Timeout) => panic!("the stream stayed open"),
        }
    }
}
