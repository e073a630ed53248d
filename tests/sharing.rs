//! Agents sharing one metrod (issue 12, parts 1 and 2), over the real
//! socket and through metroctl: a local line is never taken over (no
//! auto-claim, explicit claims by others are conflicts, old such claims in
//! claims.json are ignored, listed, reported by doctor and released), and a
//! subscription with an identity is not fed its own events (no echo).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Output;

use common::*;
use serde_json::{json, Value};

const ALICE: &str = "metro://claude/user/alice";
const BOB: &str = "metro://codex/user/bob";
const CAROL: &str = "metro://gemini/user/carol";

fn json_out(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// `metroctl tail` (no follow) as `who`, with `extra` arguments: the texts
/// it printed.
fn tail_texts(d: &Daemon, who: &str, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["tail", "--as", who, "--since", "start", "--json"];
    args.extend_from_slice(extra);
    let out = run_ok(&mut metroctl(d, &args));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            v["text"].as_str().unwrap_or("").to_string()
        })
        .collect()
}

#[test]
fn the_issue_reproduction_takes_no_line_over_and_leaks_nothing() {
    let d = Daemon::start();
    let send = |who: &str, line: &str, text: &str| -> Value {
        json_out(&run_ok(
            metroctl(&d, &["send", line, text]).env("METRO_AS", who),
        ))
    };
    assert_eq!(send(ALICE, BOB, "review PR 12?")["claim"], "off");
    assert_eq!(send(BOB, ALICE, "on it")["claim"], "off");
    assert_eq!(send(CAROL, ALICE, "private")["claim"], "off");
    let mut c = d.connect();
    let claims = c.ok(json!({"op": "claims"}));
    assert_eq!(claims["claims"], json!({}), "nobody owns anybody's line");
    assert_eq!(claims["ignored"], json!({}));

    // Each agent's tail (default mode, mine-or-unclaimed) gets what was
    // sent to it, and nothing sent to another agent.
    assert_eq!(tail_texts(&d, BOB, &[]), ["review PR 12?"]);
    assert_eq!(tail_texts(&d, ALICE, &[]), ["on it", "private"]);
    assert!(tail_texts(&d, CAROL, &[]).is_empty());
    // --strict (mine-only) likewise; a router (unclaimed) sees none of it.
    assert_eq!(tail_texts(&d, BOB, &["--strict"]), ["review PR 12?"]);
    assert!(seen(&mut c, json!({"mode": "unclaimed"})).is_empty());
    // `all` is the explicit way to see everything.
    assert_eq!(
        seen(&mut c, json!({"as": BOB, "mode": "all"})),
        ["review PR 12?", "private"],
        "bob's own words are not echoed, the rest is there"
    );
    check_schema(&c, &d);
}

#[test]
fn claiming_a_local_line_is_a_conflict_for_anyone_but_itself() {
    let d = Daemon::start();
    let mut c = d.connect();
    for extra in [
        json!({}),
        json!({"ifFree": true}),
        json!({"ephemeral": true}),
    ] {
        let mut req = json!({"op": "claim", "line": BOB, "as": ALICE});
        for (k, v) in extra.as_object().unwrap() {
            req[k] = v.clone();
        }
        let e = c.err(req, "conflict");
        assert_eq!(e["owner"], json!(BOB), "{e}");
        assert_eq!(e["line"], json!(BOB));
        let m = e["message"].as_str().unwrap();
        assert!(
            m.contains("local line") && m.contains("no other identity"),
            "{m}"
        );
    }
    // A line below an identity is its own identity.
    let s1 = "metro://codex/user/bob/s1";
    let e = c.err(json!({"op": "claim", "line": s1, "as": BOB}), "conflict");
    assert_eq!(e["owner"], json!(s1));
    // The line itself may claim itself; chat lines are claimed as before.
    let a = c.ok(json!({"op": "claim", "line": BOB, "as": BOB}));
    assert_eq!(a["owner"], json!(BOB));
    c.ok(json!({"op": "claim", "line": "telegram/9", "as": ALICE}));
    assert_eq!(
        c.ok(json!({"op": "claims"}))["claims"],
        json!({BOB: BOB, "metro://telegram/9": ALICE})
    );
    // metroctl says why.
    let out = metroctl(&d, &["claim", "codex/user/bob", "--as", ALICE])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("conflict") && err.contains("local line"),
        "{err}"
    );

    // bob/s1's events belong to bob/s1, not to bob.
    publish(
        &mut c,
        json!({"line": s1, "from": CAROL, "text": "for the session"}),
    );
    assert!(seen(&mut c, json!({"as": BOB})).is_empty());
    assert_eq!(seen(&mut c, json!({"as": s1})), ["for the session"]);
    assert_eq!(
        seen(&mut c, json!({"as": s1, "mode": "mine-only"})),
        ["for the session"]
    );
    check_schema(&c, &d);
}

#[test]
fn old_claims_of_local_lines_are_ignored_listed_reported_and_released() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let claims_path = dir.join("claims.json");
    // What the TypeScript metro left after "cross-user sends auto-claim".
    std::fs::write(
        &claims_path,
        serde_json::to_vec(&json!({ALICE: BOB, "metro://telegram/5": BOB})).unwrap(),
    )
    .unwrap();
    let d = Daemon::start_in(&dir, &[]);
    assert!(
        d.stderr()
            .contains("claims the local line metro://claude/user/alice"),
        "{}",
        d.stderr()
    );
    let mut c = d.connect();
    let a = c.ok(json!({"op": "claims"}));
    assert_eq!(a["claims"], json!({"metro://telegram/5": BOB}));
    assert_eq!(a["ignored"][ALICE]["owner"], json!(BOB));
    let note = a["ignored"][ALICE]["note"].as_str().unwrap();
    assert!(note.starts_with("local line"), "{note}");
    assert!(
        note.contains("metroctl release metro://claude/user/alice"),
        "{note}"
    );

    // Ignored for routing: carol's note to alice does not reach bob; the
    // claim in force on telegram/5 still routes.
    publish(
        &mut c,
        json!({"line": ALICE, "from": CAROL, "text": "private"}),
    );
    publish(&mut c, json!({"line": "telegram/5", "text": "chat"}));
    assert_eq!(seen(&mut c, json!({"as": BOB})), ["chat"]);
    assert_eq!(seen(&mut c, json!({"as": ALICE})), ["private"]);

    // Kept on disk, also when claims.json is written again.
    c.ok(json!({"op": "claim", "line": "telegram/6", "as": CAROL}));
    let on_disk =
        || -> Value { serde_json::from_slice(&std::fs::read(&claims_path).unwrap()).unwrap() };
    assert_eq!(
        on_disk(),
        json!({ALICE: BOB, "metro://telegram/5": BOB, "metro://telegram/6": CAROL})
    );

    // metroctl claims lists it apart; doctor warns with the command.
    let out = run_ok(&mut metroctl(&d, &["claims"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ignored: metro://claude/user/alice"), "{err}");
    let home = tempfile::tempdir().unwrap();
    let sock = d.socket.to_str().unwrap().to_string();
    let doctor = || -> Value {
        let out = common::svc::ctl(home.path(), &["--socket", &sock, "doctor", "--json"])
            .output()
            .unwrap();
        json_out(&out)
    };
    let r = doctor();
    let warned = r["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .find(|w| w.starts_with("claims:"))
        .unwrap_or_else(|| panic!("no claims warning: {r:#}"))
        .to_string();
    assert!(
        warned.contains(BOB)
            && warned.contains(ALICE)
            && warned.contains("`metroctl release metro://claude/user/alice`"),
        "{warned}"
    );

    // That command removes it, from the map and from the file.
    let out = run_ok(&mut metroctl(&d, &["release", "metro://claude/user/alice"]));
    assert_eq!(json_out(&out)["released"], json!(true));
    assert_eq!(c.ok(json!({"op": "claims"}))["ignored"], json!({}));
    assert_eq!(
        on_disk(),
        json!({"metro://telegram/5": BOB, "metro://telegram/6": CAROL})
    );
    let r = doctor();
    assert!(
        !r["warnings"].to_string().contains("claims:"),
        "{:#}",
        r["warnings"]
    );
    let claims_check = r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["area"] == "claims")
        .cloned()
        .unwrap();
    assert_eq!(claims_check["status"], "ok");
    check_schema(&c, &d);
}

/// Events from A and from B on an unclaimed line, a line A owns, and
/// addressed to A.
fn stream(c: &mut Client) {
    const A: &str = ALICE;
    c.ok(json!({"op": "claim", "line": "telegram/2", "as": A}));
    for ev in [
        json!({"line": "telegram/1", "from": A, "text": "a1"}),
        json!({"line": "telegram/1", "from": BOB, "text": "b1"}),
        json!({"line": "telegram/2", "from": A, "text": "a2"}),
        json!({"line": "telegram/2", "from": BOB, "text": "b2"}),
        json!({"line": "telegram/3", "from": BOB, "to": A, "text": "b-dm"}),
        json!({"line": "telegram/3", "from": A, "to": A, "text": "a-dm"}),
    ] {
        publish(c, ev);
    }
}

#[test]
fn no_echo_in_any_mode_unless_asked() {
    let d = Daemon::start();
    let mut c = d.connect();
    stream(&mut c);
    let all = vec!["a1", "b1", "a2", "b2", "b-dm", "a-dm"];
    let cases: Vec<(Value, Vec<&str>, Vec<&str>)> = vec![
        // (subscription, without echo, with echo)
        (
            json!({"as": ALICE}),
            vec!["b1", "b2", "b-dm"],
            vec!["a1", "b1", "a2", "b2", "b-dm", "a-dm"],
        ),
        (
            json!({"as": ALICE, "mode": "mine-only"}),
            vec!["b2", "b-dm"],
            vec!["a2", "b2", "b-dm", "a-dm"],
        ),
        (
            json!({"as": ALICE, "mode": "unclaimed"}),
            vec!["b1", "b-dm"],
            vec!["a1", "b1", "b-dm", "a-dm"],
        ),
        (
            json!({"as": ALICE, "mode": "all"}),
            vec!["b1", "b2", "b-dm"],
            all.clone(),
        ),
        // Without an identity nothing changes.
        (json!({}), all.clone(), all.clone()),
        (
            json!({"mode": "unclaimed"}),
            vec!["a1", "b1", "b-dm", "a-dm"],
            vec!["a1", "b1", "b-dm", "a-dm"],
        ),
    ];
    for (sub, without, with) in cases {
        assert_eq!(seen(&mut c, sub.clone()), without, "subscription {sub}");
        let mut echo = sub.clone();
        echo["echo"] = json!(true);
        assert_eq!(seen(&mut c, echo.clone()), with, "subscription {echo}");
        let mut off = sub.clone();
        off["echo"] = json!(false);
        assert_eq!(seen(&mut c, off.clone()), without, "subscription {off}");
    }

    // Live: alice's own event is skipped, the next one arrives.
    let mut a = d.connect();
    let s = a.subscribe(json!({"as": ALICE, "follow": true, "since": "tail"}));
    publish(
        &mut c,
        json!({"line": "telegram/1", "from": ALICE, "text": "mine"}),
    );
    publish(
        &mut c,
        json!({"line": "telegram/1", "from": BOB, "text": "theirs"}),
    );
    let f = a.frame();
    assert_eq!(
        (f["sub"].as_str(), f["event"]["text"].as_str()),
        (Some(s.as_str()), Some("theirs"))
    );
    check_schema(&c, &d);
}

/// The stored cursor of `name`, once it reaches `want` (or the deadline).
fn cursor_reaches(c: &mut Client, name: &str, want: u64) -> u64 {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let at = c.ok(json!({"op": "cursor", "cursor": name}))["offset"]
            .as_u64()
            .unwrap();
        if at >= want || std::time::Instant::now() > deadline {
            return at;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn cursors_move_past_events_left_out_as_echo() {
    let d = Daemon::start();
    let mut c = d.connect();
    publish(
        &mut c,
        json!({"line": "telegram/1", "from": BOB, "text": "b"}),
    );
    // The log ends with alice's own events: only by passing them can a
    // cursor reach its end.
    publish(
        &mut c,
        json!({"line": "telegram/1", "from": ALICE, "text": "a1"}),
    );
    let end = publish(
        &mut c,
        json!({"line": "telegram/1", "from": ALICE, "text": "a2"}),
    )["offset"]
        .as_u64()
        .unwrap();
    for ack in ["auto", "explicit"] {
        let name = format!("alice-{ack}");
        let s = c.subscribe(json!({"as": ALICE, "since": "start", "ack": ack, "cursor": name}));
        let (events, at) = c.drain(&s);
        assert_eq!(texts(&events), ["b"], "{ack}");
        assert_eq!(at, end);
        if ack == "explicit" {
            c.ok(json!({"op": "ack", "sub": s, "offset": events[0]["offset"]}));
        }
        assert_eq!(cursor_reaches(&mut c, &name, end), end, "{ack} cursor");
    }
}

#[test]
fn metroctl_tail_hides_own_events_unless_echo() {
    let d = Daemon::start();
    let mut c = d.connect();
    publish(
        &mut c,
        json!({"line": "telegram/1", "from": ALICE, "text": "mine"}),
    );
    publish(
        &mut c,
        json!({"line": "telegram/1", "from": BOB, "text": "theirs"}),
    );
    assert_eq!(tail_texts(&d, ALICE, &["--cursor", "t1"]), ["theirs"]);
    assert_eq!(
        tail_texts(&d, ALICE, &["--cursor", "t2", "--echo"]),
        ["mine", "theirs"]
    );
    // Without an identity --echo changes nothing.
    let out = run_ok(&mut metroctl(
        &d,
        &[
            "tail", "--all", "--since", "start", "--json", "--echo", "--cursor", "t3",
        ],
    ));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2);
}
