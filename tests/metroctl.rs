//! metroctl against a real daemon: every command, identity resolution,
//! the "not running" message, and a killed `tail` that loses nothing.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Output, Stdio};

use common::*;
use serde_json::{json, Value};

const A: &str = "metro://claude/user/a";

fn json_out(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

fn json_lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[test]
fn not_running_names_the_socket_and_how_to_start() {
    let tmp = tempfile::tempdir().unwrap();
    let sock = tmp.path().join("none.sock");
    let out = Command::new(METROCTL)
        .arg("--socket")
        .arg(&sock)
        .arg("hello")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(sock.to_str().unwrap()), "{err}");
    assert!(err.contains("Start it with `metrod`"), "{err}");
    // METRO_SOCKET is honoured too.
    let out = Command::new(METROCTL)
        .env("METRO_SOCKET", &sock)
        .arg("stats")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains(sock.to_str().unwrap()));
}

#[test]
fn every_command_round_trips() {
    let d = Daemon::start();
    let hello = json_out(&run_ok(&mut metroctl(&d, &["hello"])));
    assert_eq!(hello["protocol"], json!(1));

    let p = json_out(&run_ok(&mut metroctl(
        &d,
        &["publish", r#"{"line":"telegram/5","text":"from a script"}"#],
    )));
    assert!(p["id"].as_str().unwrap().starts_with("msg_"));

    let claimed = json_out(&run_ok(&mut metroctl(
        &d,
        &["claim", "telegram/5", "--as", A],
    )));
    assert_eq!(claimed["owner"], json!(A));
    let out = metroctl(
        &d,
        &[
            "claim",
            "telegram/5",
            "--as",
            "metro://codex/user/b",
            "--if-free",
        ],
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("conflict"));
    let claims = json_out(&run_ok(&mut metroctl(&d, &["claims", "--json"])));
    assert_eq!(claims, json!({"metro://telegram/5": A}));

    // send: text from stdin, identity from METRO_AS.
    let mut child = metroctl(&d, &["send", "codex/user/b", "-"])
        .env("METRO_AS", A)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all("multi\nline ✓".as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let sent = json_out(&out);
    assert_eq!(
        sent["claim"],
        json!("off"),
        "an agent's line is never claimed"
    );
    // METRO_NO_AUTO_CLAIM=1 and --no-claim matter on chat lines only: see
    // tests/telegram.rs, metroctl_no_claim_leaves_a_chat_line_unclaimed.
    let s = json_out(&run_ok(&mut metroctl(
        &d,
        &["send", "codex/user/c", "hi", "--from", A],
    )));
    assert_eq!(s["claim"], json!("off"));

    let h = json_lines(&run_ok(&mut metroctl(
        &d,
        &["history", "--limit", "2", "--json"],
    )));
    assert_eq!(h.len(), 2);
    assert_eq!(h[0]["text"], "hi");
    let h = json_lines(&run_ok(&mut metroctl(&d, &["history", "--text", "MULTI"])));
    assert_eq!(h.len(), 1);
    assert_eq!(h[0]["text"], "multi\nline ✓");
    assert_eq!(h[0]["from"], json!(A));

    let lines = json_lines(&run_ok(&mut metroctl(&d, &["lines"])));
    assert!(lines
        .iter()
        .any(|l| l["line"] == "metro://telegram/5" && l["owner"] == json!(A)));
    let st = json_lines(&run_ok(&mut metroctl(&d, &["stations"])));
    assert_eq!(st[0]["name"], "local");
    let stats = json_out(&run_ok(&mut metroctl(&d, &["stats"])));
    assert!(stats["logBytes"].as_u64().unwrap() > 0);
    let released = json_out(&run_ok(&mut metroctl(&d, &["release", "telegram/5"])));
    assert_eq!(released["released"], json!(true));
    let cur = json_out(&run_ok(&mut metroctl(&d, &["cursor", "--as", A])));
    assert_eq!(cur["stored"], json!(false));

    // Bad input from the command line: a clear error, non-zero exit.
    let out = metroctl(&d, &["send", "telegram/abc", "x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("telegram lines are"));
    let out = metroctl(&d, &["publish", "{not json"]).output().unwrap();
    assert!(!out.status.success());
    let out = metroctl(&d, &["tail", "--since", "yesterday"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--since"));
}

#[test]
fn edit_and_react_from_the_command_line() {
    let d = Daemon::start();
    let sent = json_out(&run_ok(&mut metroctl(
        &d,
        &["send", "codex/user/b", "v1", "--from", A],
    )));
    let id = sent["id"].as_str().unwrap();
    let e = json_out(&run_ok(&mut metroctl(
        &d,
        &["edit", "codex/user/b", id, "v2", "--from", A],
    )));
    assert_eq!(e["claim"], json!("off"));
    let r = json_out(&run_ok(&mut metroctl(
        &d,
        &["react", "codex/user/b", id, "🎉", "--from", A],
    )));
    assert!(r["id"].is_string());
    let log = d.history();
    assert_eq!(log[1]["kind"], "edit");
    assert_eq!(log[1]["messageId"], json!(id));
    assert_eq!(log[2]["emoji"], "🎉");
}

#[test]
fn identity_comes_from_the_agent_environment() {
    let d = Daemon::start();
    let s = json_out(&run_ok(
        metroctl(&d, &["send", "codex/user/b", "x"])
            .env("CLAUDECODE", "1")
            .env("METRO_USER_ID", "org-7")
            .env("PATH", "/nonexistent"),
    ));
    assert_eq!(s["claim"], json!("off"));
    assert_eq!(d.history()[0]["from"], "metro://claude/user/org-7");
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("auth.json"),
        r#"{"tokens":{"account_id":"acct-9"}}"#,
    )
    .unwrap();
    run_ok(metroctl(&d, &["send", "claude/user/z", "y"]).env("CODEX_HOME", tmp.path()));
    assert_eq!(d.history()[1]["from"], "metro://codex/user/acct-9");
    // --as beats METRO_AS beats the environment.
    run_ok(
        metroctl(&d, &["send", "claude/user/z", "z", "--from", "metro://x/y"])
            .env("METRO_AS", A)
            .env("CLAUDECODE", "1"),
    );
    assert_eq!(d.history()[2]["from"], "metro://x/y");
    run_ok(
        metroctl(&d, &["send", "claude/user/z", "w"])
            .env("METRO_AS", A)
            .env("CLAUDECODE", "1"),
    );
    assert_eq!(d.history()[3]["from"], json!(A));
}

#[test]
fn tail_prints_exactly_the_events_and_moves_the_cursor() {
    let d = Daemon::start();
    let mut c = d.connect();
    publish(&mut c, json!({"line": "telegram/1", "text": "one"}));
    let end = publish(&mut c, json!({"line": "telegram/1", "text": "two"}))["offset"]
        .as_u64()
        .unwrap();
    let out = run_ok(&mut metroctl(&d, &["tail", "--as", A]));
    let printed = String::from_utf8(out.stdout).unwrap();
    let stored = std::fs::read_to_string(d.history_path()).unwrap();
    assert_eq!(
        printed, stored,
        "stdout is exactly the event objects, one per line"
    );
    assert_eq!(
        c.ok(json!({"op": "cursor", "as": A}))["offset"].as_u64(),
        Some(end)
    );
    // Nothing new: nothing printed.
    let out = run_ok(&mut metroctl(&d, &["tail", "--as", A]));
    assert!(out.stdout.is_empty());
    // Filters and --since/--limit pass through.
    let out = run_ok(&mut metroctl(
        &d,
        &[
            "tail", "--all", "--since", "start", "--limit", "1", "--cursor", "x",
        ],
    ));
    assert_eq!(json_lines(&out).len(), 1);
    let out = run_ok(&mut metroctl(
        &d,
        &[
            "tail",
            "--chat",
            "telegram/2",
            "--since",
            "start",
            "--cursor",
            "y",
        ],
    ));
    assert!(out.stdout.is_empty());
}

#[test]
fn a_killed_tail_resumes_with_nothing_lost_and_nothing_skipped() {
    let d = Daemon::start();
    let mut c = d.connect();
    let mut child = metroctl(&d, &["tail", "--as", A, "--follow"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    // Wait until the tail is subscribed.
    let deadline = std::time::Instant::now() + PATIENCE;
    while c.ok(json!({"op": "stats"}))["subscriptions"]
        .as_array()
        .unwrap()
        .is_empty()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "tail never subscribed"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    for i in 0..200 {
        publish(
            &mut c,
            json!({"line": "telegram/1", "text": format!("{i}")}),
        );
    }
    let mut first = Vec::new();
    for _ in 0..50 {
        let mut l = String::new();
        reader.read_line(&mut l).unwrap();
        first.push(l);
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // Whatever else it printed before it died.
    for l in reader.lines() {
        first.push(l.unwrap() + "\n");
    }
    for i in 200..260 {
        publish(
            &mut c,
            json!({"line": "telegram/1", "text": format!("{i}")}),
        );
    }
    let out = run_ok(&mut metroctl(&d, &["tail", "--as", A]));
    let second = String::from_utf8(out.stdout).unwrap();
    let n = |l: &str| -> usize {
        let v: Value = serde_json::from_str(l).unwrap();
        v["text"].as_str().unwrap().parse().unwrap()
    };
    let a: Vec<usize> = first.iter().map(|l| n(l)).collect();
    let b: Vec<usize> = second.lines().map(n).collect();
    assert_eq!(
        a,
        (0..a.len()).collect::<Vec<_>>(),
        "the first tail printed in order"
    );
    assert!(!b.is_empty());
    assert!(
        b[0] <= a.len(),
        "nothing skipped: resumed at {} after printing {}",
        b[0],
        a.len()
    );
    assert_eq!(
        b,
        (b[0]..260).collect::<Vec<_>>(),
        "the second tail printed the rest in order"
    );
}
