//! Moving from the TypeScript metro (issue 12, part 5, daemon side): its
//! cursor files taken over, another process appending to `history.jsonl`
//! while metrod runs, `claims.json` edited by hand (and malformed at
//! startup), `metro://user` as "no identity", and `metrod --stdout`.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use common::*;
use serde_json::{json, Value};

/// A TypeScript-era log line (no `to`, `station` or `kind`).
fn ts_line(i: usize) -> String {
    format!(
        r#"{{"id":"ts_{i}","ts":"2025-03-01T10:00:0{}.000Z","line":"metro://telegram/100","from":"metro://telegram/user/9","text":"old {i}"}}"#,
        i % 10
    )
}

/// Waits until `f` holds (a condition, not a duration).
fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn stats(d: &Daemon) -> Value {
    d.connect().ok(json!({"op": "stats"}))
}

/// Appends `bytes` to `path` from another process (`sh`, `>>`: O_APPEND).
fn foreign_append(path: &Path, bytes: &str) {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("cat >> \"$1\"")
        .arg("sh")
        .arg(path)
        .stdin(Stdio::piped())
        .spawn()
        .expect("spawn sh");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(bytes.as_bytes())
        .expect("write to sh");
    assert!(child.wait().expect("wait sh").success());
}

#[test]
fn typescript_cursor_is_taken_over_by_its_identity() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    std::fs::create_dir_all(dir.join("cursors")).unwrap();
    let lines: Vec<String> = (0..4).map(ts_line).collect();
    let log = lines.iter().map(|l| format!("{l}\n")).collect::<String>();
    std::fs::write(dir.join("history.jsonl"), &log).unwrap();
    let end_of = |n: usize| lines[..n].iter().map(|l| l.len() + 1).sum::<usize>() as u64;
    // A's TypeScript cursor stands inside entry 2 (index 1): it resumes at
    // entry 3. B's stands at a boundary (after entry 3).
    std::fs::write(
        dir.join("cursors/claude-user-A"),
        (end_of(1) + 5).to_string(),
    )
    .unwrap();
    std::fs::write(dir.join("cursors/codex-user-B"), end_of(3).to_string()).unwrap();
    let d = Daemon::start_in(&dir, &[]);
    let mut c = d.connect();

    let q = c.ok(json!({"op": "cursor", "as": "metro://claude/user/A"}));
    assert_eq!(q["offset"], json!(end_of(2)), "{q}");
    assert_eq!(q["stored"], json!(true), "{q}");

    let sub = c.subscribe(json!({"as": "metro://codex/user/B", "follow": false}));
    let (events, _) = c.drain(&sub);
    assert_eq!(texts(&events), vec!["old 3"], "B resumes after entry 3");

    let sub = c.subscribe(json!({"as": "metro://claude/user/A", "follow": false}));
    let (events, end) = c.drain(&sub);
    assert_eq!(
        texts(&events),
        vec!["old 2", "old 3"],
        "A resumes at entry 3"
    );
    assert_eq!(events[0]["event"]["id"], json!("ts_2"));
    assert_eq!(end, end_of(4));

    // An identity without a TypeScript file starts from the beginning.
    let sub = c.subscribe(json!({"as": "metro://claude/user/C", "follow": false}));
    assert_eq!(c.drain(&sub).0.len(), 4);

    // Written in metrod's scheme; the old files are left as they were.
    let mine = dir.join("cursors/claude%2Fuser%2FA");
    wait_for("A's cursor in metrod's scheme", || {
        std::fs::read_to_string(&mine).is_ok_and(|t| t.trim().parse::<u64>().is_ok())
    });
    assert_eq!(
        std::fs::read_to_string(dir.join("cursors/claude-user-A")).unwrap(),
        (end_of(1) + 5).to_string()
    );
    drop(c);
    let mut d = d;
    d.stop();
    d.restart();
    let q = d
        .connect()
        .ok(json!({"op": "cursor", "as": "metro://claude/user/A"}));
    assert_eq!(
        q["offset"],
        json!(end_of(4)),
        "metrod's own cursor wins: {q}"
    );
}

#[test]
fn metro_user_means_no_identity() {
    let d = Daemon::start();
    let mut c = d.connect();
    c.ok(json!({"op": "claim", "line": "telegram/5", "as": "metro://claude/user/X"}));
    publish(
        &mut c,
        json!({"line": "telegram/5", "text": "claimed by X"}),
    );
    publish(&mut c, json!({"line": "telegram/6", "text": "free"}));
    // `as: metro://user` is no identity: mode all, no durable cursor.
    let sub = c.subscribe(json!({"as": "metro://user", "follow": false}));
    let (events, _) = c.drain(&sub);
    assert_eq!(texts(&events), vec!["claimed by X", "free"]);
    let st = stats(&d);
    assert!(
        st["cursors"].as_array().unwrap().is_empty(),
        "no cursor for no identity: {st}"
    );
    c.err(json!({"op": "cursor", "as": "metro://user"}), "bad_request");
    let e = c.err(
        json!({"op": "claim", "line": "telegram/6", "as": "user"}),
        "bad_request",
    );
    assert!(
        e["message"].as_str().unwrap().contains("no identity"),
        "{e}"
    );
    // `from: metro://user` is an anonymous sender, as without `from`.
    let a = publish(
        &mut c,
        json!({"line": "telegram/6", "text": "anon", "from": "metro://user"}),
    );
    let a2 = c.ok(json!({"op": "send", "line": "metro://claude/user/X", "text": "hi", "from": "metro://user"}));
    let h = d.history();
    let anon = h.iter().find(|e| e["id"] == a["id"]).unwrap();
    let sent = h.iter().find(|e| e["id"] == a2["id"]).unwrap();
    assert_eq!(anon["from"], json!("metro://local/anonymous"));
    assert_eq!(sent["from"], json!("metro://local/anonymous"));
    // metroctl: METRO_AS=metro://user acts as nobody (a cursor query needs
    // an identity, so it fails saying so).
    let out = metroctl(&d, &["cursor"])
        .env("METRO_AS", "metro://user")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let out = metroctl(&d, &["send", "metro://codex/user/Y", "from nobody"])
        .env("METRO_AS", "metro://user")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let last = d.history().pop().unwrap();
    assert_eq!(last["text"], json!("from nobody"));
    assert_eq!(last["from"], json!("metro://local/anonymous"), "{last}");
}

#[test]
fn stdout_mirrors_every_new_event() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("history.jsonl"), format!("{}\n", ts_line(0))).unwrap();
    let out_path = tmp.path().join("stdout");
    let socket = dir.join("metro.sock");
    let mut child = Command::new(METROD)
        .args(["--stdout", "--webhook-addr", "off", "--state-dir"])
        .arg(&dir)
        .env("METRO_CONFIG", tmp.path().join("none.toml"))
        .env_remove("METRO_TELEGRAM_TOKEN")
        .env_remove("METRO_DISCORD_TOKEN")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(tmp.path().join("stderr")).unwrap())
        .spawn()
        .unwrap();
    wait_for("metrod's socket", || Client::try_connect(&socket).is_ok());
    let mut c = Client::connect(&socket);
    for i in 0..3 {
        publish(
            &mut c,
            json!({"line": "telegram/1", "text": format!("new {i}")}),
        );
    }
    foreign_append(&dir.join("history.jsonl"), &format!("{}\n", ts_line(7)));
    wait_for("4 lines on stdout", || {
        std::fs::read_to_string(&out_path).is_ok_and(|t| t.lines().count() >= 4)
    });
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    assert!(wait_timeout(&mut child, PATIENCE)
        .expect("metrod stops")
        .success());
    let printed = std::fs::read_to_string(&out_path).unwrap();
    let history = std::fs::read_to_string(dir.join("history.jsonl")).unwrap();
    // Exactly the events appended while it ran, as stored: not the old one.
    let new: Vec<&str> = history.lines().skip(1).collect();
    assert_eq!(printed.lines().collect::<Vec<_>>(), new);
    assert!(printed.ends_with('\n'));
}

#[test]
fn foreign_writer_lines_are_adopted_and_delivered() {
    let d = Daemon::start_with(&["--fsync", "never"]);
    let path = d.history_path();
    let mut c = d.connect();
    let mut follower = d.connect();
    let sub = follower.subscribe(json!({"since": "start", "follow": true}));
    publish(&mut c, json!({"line": "telegram/1", "text": "m0"}));
    // Another writer appends while metrod is idle...
    foreign_append(&path, &format!("{}\n{}\n", ts_line(1), ts_line(2)));
    // ... and between metrod's own appends.
    let mut want = vec!["m0".to_string(), "old 1".into(), "old 2".into()];
    for i in 3..8 {
        publish(
            &mut c,
            json!({"line": "telegram/1", "text": format!("m{i}")}),
        );
        foreign_append(&path, &format!("{}\n", ts_line(i)));
        want.push(format!("m{i}"));
        want.push(format!("old {i}"));
    }
    let frames = follower.events(want.len());
    assert!(frames.iter().all(|f| f["sub"] == json!(sub)));
    assert_eq!(texts(&frames), want);
    // Every offset handed out is the end of its line in the file, and the
    // adopted lines keep their writer's id and ts.
    let bytes = std::fs::read(&path).unwrap();
    for f in &frames {
        let end = f["offset"].as_u64().unwrap() as usize;
        assert_eq!(bytes[end - 1], b'\n', "offset {end} is a line end");
        let start = bytes[..end - 1]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        let stored: Value = serde_json::from_slice(&bytes[start..end - 1]).unwrap();
        assert_eq!(stored["id"], f["event"]["id"]);
    }
    assert_eq!(frames[1]["event"]["id"], json!("ts_1"));
    assert_eq!(frames[1]["event"]["ts"], json!("2025-03-01T10:00:01.000Z"));
    let st = stats(&d);
    assert_eq!(st["foreignWriter"]["adoptedLines"], json!(7), "{st}");
    assert_eq!(st["logBytes"], json!(bytes.len()), "{st}");
    // Indexed: `lines` knows the foreign line's conversation.
    let lines = c.ok(json!({"op": "lines"}));
    assert!(
        lines.to_string().contains("metro://telegram/100"),
        "{lines}"
    );
    let warnings = d
        .stderr()
        .matches("another process is appending to history.jsonl")
        .count();
    assert_eq!(warnings, 1, "one warning: {}", d.stderr());

    // A foreign tail without its newline: metrod ends it and carries on at
    // a line boundary; readers pass over the piece.
    foreign_append(&path, r#"{"id":"torn","line":"metro://tele"#);
    wait_for("the torn tail ended", || {
        stats(&d)["foreignWriter"]["endedTails"] == json!(1)
    });
    assert!(d.stderr().contains("metrod ended it"), "{}", d.stderr());
    publish(&mut c, json!({"line": "telegram/1", "text": "after torn"}));
    let f = follower.frame();
    assert_eq!(f["event"]["text"], json!("after torn"));
    let text = std::fs::read_to_string(&path).unwrap();
    let last: Vec<&str> = text.lines().rev().take(2).collect();
    assert!(last[0].contains("after torn"), "{last:?}");
    assert_eq!(last[1], r#"{"id":"torn","line":"metro://tele"#);
    // A reader from the start sees every event and not the piece.
    let sub = c.subscribe(json!({"since": "start", "follow": false}));
    let (all, end) = c.drain(&sub);
    assert_eq!(all.len(), want.len() + 1);
    assert_eq!(end, text.len() as u64);
}

#[test]
fn foreign_torn_tail_waits_for_completion_before_metrod_appends() {
    let d = Daemon::start();
    let path = d.history_path();
    let mut c = d.connect();
    // A writer that finishes its line: no torn piece, the line is adopted.
    let line = ts_line(1);
    let (head, tail) = line.split_at(20);
    foreign_append(&path, head);
    foreign_append(&path, &format!("{tail}\n"));
    publish(&mut c, json!({"line": "telegram/1", "text": "mine"}));
    let h = d.history();
    assert_eq!(h.len(), 2, "{h:?}");
    assert_eq!(h[0]["id"], json!("ts_1"));
    assert_eq!(h[1]["text"], json!("mine"));
    wait_for("adoption counted", || {
        stats(&d)["foreignWriter"]["adoptedLines"] == json!(1)
    });
    assert_eq!(stats(&d)["foreignWriter"]["endedTails"], json!(0));
}

#[test]
fn claims_json_hand_edits_are_picked_up_and_never_overwritten() {
    let d = Daemon::start();
    let file = d.dir.join("claims.json");
    let mut c = d.connect();
    c.ok(json!({"op": "claim", "line": "telegram/1", "as": "metro://claude/user/a"}));
    // A valid hand edit is put in force.
    std::fs::write(
        &file,
        r#"{"metro://telegram/1": "metro://claude/user/a", "metro://telegram/2": "metro://codex/user/b"}"#,
    )
    .unwrap();
    wait_for("the hand edit in force", || {
        c.ok(json!({"op": "claims"}))["claims"]["metro://telegram/2"]
            == json!("metro://codex/user/b")
    });
    assert_eq!(stats(&d)["claimsFile"]["reloads"], json!(1));
    // metrod's next write keeps it.
    c.ok(json!({"op": "claim", "line": "telegram/3", "as": "metro://claude/user/a"}));
    let on_disk: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(on_disk["metro://telegram/2"], json!("metro://codex/user/b"));
    assert_eq!(
        on_disk["metro://telegram/3"],
        json!("metro://claude/user/a")
    );

    // An invalid edit: logged, the map in force stays, nothing overwrites it.
    std::fs::write(&file, "{\"metro://telegram/1\": ").unwrap();
    wait_for("the invalid edit reported", || {
        stats(&d)["claimsFile"]["error"].is_string()
    });
    let claims = c.ok(json!({"op": "claims"}))["claims"].clone();
    assert_eq!(claims.as_object().unwrap().len(), 3, "{claims}");
    let e = c.err(
        json!({"op": "claim", "line": "telegram/4", "as": "metro://claude/user/a"}),
        "internal",
    );
    assert!(e["message"].as_str().unwrap().contains("hand edit"), "{e}");
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "{\"metro://telegram/1\": "
    );
    // Ephemeral claims need no write and still work.
    c.ok(json!({"op": "claim", "line": "telegram/5", "as": "metro://claude/user/a", "ephemeral": true}));
    let doctor = ctl_output(&d, &["doctor"]);
    let text = String::from_utf8_lossy(&doctor.stdout).to_string();
    assert!(
        text.contains("hand edit of claims.json is not valid"),
        "{text}"
    );
    assert!(d.stderr().contains("hand edit rejected"), "{}", d.stderr());

    // Fixed: in force again, and writes resume.
    std::fs::write(&file, r#"{"metro://telegram/9": "metro://codex/user/b"}"#).unwrap();
    wait_for("the fixed file in force", || {
        stats(&d)["claimsFile"]["error"].is_null()
    });
    let claims = c.ok(json!({"op": "claims"}))["claims"].clone();
    assert_eq!(claims["metro://telegram/9"], json!("metro://codex/user/b"));
    assert!(claims.get("metro://telegram/1").is_none(), "{claims}");
    assert_eq!(claims["metro://telegram/5"], json!("metro://claude/user/a"));
    c.ok(json!({"op": "claim", "line": "telegram/4", "as": "metro://claude/user/a"}));
    let on_disk: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(
        on_disk,
        json!({"metro://telegram/9": "metro://codex/user/b", "metro://telegram/4": "metro://claude/user/a"})
    );
}

#[test]
fn malformed_claims_json_at_startup_is_moved_aside() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("claims.json"), "not json at all").unwrap();
    let d = Daemon::start_in(&dir, &[]);
    let aside: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("claims.json.bad-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(
        std::fs::read_to_string(dir.join(&aside[0])).unwrap(),
        "not json at all"
    );
    let mut c = d.connect();
    assert_eq!(c.ok(json!({"op": "claims"}))["claims"], json!({}));
    let st = stats(&d);
    let moved = st["claimsFile"]["movedAside"].as_str().unwrap();
    assert!(moved.ends_with(&aside[0]), "{st}");
    assert!(d.stderr().contains("NO durable claims"), "{}", d.stderr());
    let doctor = ctl_output(&d, &["doctor"]);
    let text = String::from_utf8_lossy(&doctor.stdout).to_string();
    assert!(text.contains(&aside[0]), "{text}");
    // Claims work and are written afresh.
    c.ok(json!({"op": "claim", "line": "telegram/1", "as": "metro://claude/user/a"}));
    assert!(dir.join("claims.json").exists());
}

#[test]
fn foreign_lines_stay_in_order_across_segment_rolls() {
    let mut d = Daemon::start_with(&["--segment-bytes", "4096", "--fsync", "never"]);
    let path = d.history_path();
    let mut c = d.connect();
    let pad = "p".repeat(300);
    let mut want = Vec::new();
    for i in 0..30 {
        publish(
            &mut c,
            json!({"line": "telegram/1", "text": format!("m{i} {pad}")}),
        );
        want.push(format!("m{i} {pad}"));
        if i % 3 == 0 {
            // Appended by path, as a script or the TypeScript metro does.
            foreign_append(&path, &format!("{}\n", ts_line(i)));
            want.push(format!("old {i}"));
        }
    }
    let segments = std::fs::read_dir(&d.dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("history.0")
        })
        .count();
    assert!(segments >= 2, "the log rolled ({segments} segments)");
    let check = |c: &mut Client| {
        let sub = c.subscribe(json!({"since": "start", "follow": false}));
        let (all, _) = c.drain(&sub);
        assert_eq!(texts(&all), want);
    };
    check(&mut c);
    assert_eq!(
        stats(&d)["foreignWriter"]["adoptedLines"],
        json!(10),
        "{}",
        d.stderr()
    );
    // The same after a restart: the adopted lines are part of the log.
    drop(c);
    d.stop();
    d.restart();
    check(&mut d.connect());
}
