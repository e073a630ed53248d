//! `metroctl status` (alias `whoami`) against a real metrod: who you act as
//! and why (`--as`, `$METRO_AS`, Claude Code, Codex, nobody), the daemon,
//! stations, claims and cursor; JSON when piped, sentences with
//! `METRO_OUTPUT=human`; exit 3 and still the identity when metrod is down.

mod common;

use common::*;
use serde_json::{json, Value};

const A: &str = "metro://claude/user/ana";

fn status(d: &Daemon, args: &[&str], env: &[(&str, &str)]) -> (Value, std::process::Output) {
    let mut cmd = metroctl(d, &[&["status"], args].concat());
    cmd.envs(env.iter().copied());
    let out = cmd.output().unwrap();
    let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (v, out)
}

#[test]
fn status_says_who_you_are_why_and_where_you_stand() {
    let d = Daemon::start();
    let mut c = d.connect();
    c.ok(json!({"op": "claim", "line": "metro://telegram/100", "as": A}));
    c.ok(json!({"op": "claim", "line": "metro://telegram/200", "as": "metro://codex/user/bo"}));
    publish(
        &mut c,
        json!({"line": "metro://telegram/100", "text": "one"}),
    );

    // Piped: JSON. --as decides.
    let (v, out) = status(&d, &["--as", A], &[]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(v["as"], A);
    assert_eq!(v["asFrom"], "--as");
    assert_eq!(v["daemon"]["running"], true);
    assert_eq!(v["daemon"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(
        v["daemon"]["stateDir"].as_str().unwrap(),
        d.dir.display().to_string()
    );
    assert_eq!(v["daemon"]["pid"], json!(d.pid()));
    assert!(v["daemon"]["uptimeMs"].as_u64().is_some());
    let words: Vec<(String, String)> = v["stations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().into(),
                s["word"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(words.contains(&("local".into(), "ok".into())), "{words:?}");
    assert!(
        words.contains(&("telegram".into(), "off".into())),
        "{words:?}"
    );
    assert_eq!(v["claims"], json!(["metro://telegram/100"]));
    // No cursor yet: the whole log is ahead.
    let end = c.ok(json!({"op": "cursor", "as": A}))["end"]
        .as_u64()
        .unwrap();
    assert_eq!(v["cursor"]["stored"], false);
    assert_eq!(v["cursor"]["behind"], json!(end));

    // After a tail has read everything, the cursor is up to date.
    ctl_ok(&d, &["tail", "--as", A, "--all"]);
    let (v, _) = status(&d, &[], &[("METRO_AS", A)]);
    assert_eq!(v["asFrom"], "$METRO_AS");
    assert_eq!(v["cursor"]["stored"], true);
    assert_eq!(v["cursor"]["behind"], 0);
    publish(
        &mut c,
        json!({"line": "metro://telegram/300", "text": "two"}),
    );
    let (v, _) = status(&d, &[], &[("METRO_AS", A)]);
    let end2 = c.ok(json!({"op": "cursor", "as": A}))["end"]
        .as_u64()
        .unwrap();
    assert_eq!(v["cursor"]["behind"], json!(end2 - end));

    // Claude Code and Codex environments, and nobody.
    let (v, _) = status(&d, &[], &[("CLAUDECODE", "1"), ("METRO_USER_ID", "u1")]);
    assert_eq!(v["as"], "metro://claude/user/u1");
    let why = v["asFrom"].as_str().unwrap();
    assert!(
        why.contains("Claude Code") && why.contains("$METRO_USER_ID"),
        "{why}"
    );
    let (v, _) = status(
        &d,
        &[],
        &[("CODEX_HOME", "/nonexistent"), ("METRO_USER_ID", "u2")],
    );
    assert_eq!(v["as"], "metro://codex/user/u2");
    assert!(v["asFrom"].as_str().unwrap().starts_with("Codex"));
    let (v, out) = status(&d, &[], &[]);
    assert!(out.status.success());
    assert_eq!(v["as"], Value::Null);
    assert!(v["asFrom"].as_str().unwrap().starts_with("nothing"));
    assert!(v.get("cursor").is_none() && v.get("claims").is_none());

    // The whoami alias, in sentences.
    let mut cmd = metroctl(&d, &["whoami", "--as", A]);
    let out = run_ok(cmd.env("METRO_OUTPUT", "human"));
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        format!("as        {A}  (from --as)"),
        format!("state     {}", d.dir.display()),
        "local ok".into(),
        "telegram off".into(),
        "claims    metro://telegram/100".into(),
        "bytes behind the log end".into(),
    ] {
        assert!(text.contains(&want), "{want:?} in:\n{text}");
    }
    assert!(text.contains(&format!("pid {}", d.pid())), "{text}");
}

#[test]
fn status_with_metrod_down_still_says_who_you_are_and_exits_3() {
    let mut d = Daemon::start();
    d.stop();
    let (v, out) = status(&d, &["--as", A], &[]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_eq!(v["as"], A);
    assert_eq!(v["daemon"]["running"], false);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("metrod is not running"), "{err}");
    let mut cmd = metroctl(&d, &["status", "--as", A]);
    let out = cmd.env("METRO_OUTPUT", "human").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("metrod    not running"), "{text}");
}
