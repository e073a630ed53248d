//! metroctl for people (issue 16): what each command prints on a terminal,
//! against a real metrod. `METRO_OUTPUT=human` forces the terminal form
//! with stdout piped (anstream then strips colors, so the text is exact);
//! one test runs metroctl under a real pseudo-terminal for the colors.

mod common;

use std::process::{Command, Output};

use common::*;
use serde_json::{json, Value};

const A: &str = "metro://claude/user/a";

fn human(d: &Daemon, args: &[&str]) -> Output {
    let mut cmd = metroctl(d, args);
    cmd.env("METRO_OUTPUT", "human").env_remove("NO_COLOR");
    run_ok(&mut cmd)
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn every_command_speaks_in_sentences_on_a_terminal() {
    let d = Daemon::start();
    // publish: the id and the offset, not JSON.
    let o = human(&d, &["publish", r#"{"line":"local/demo","text":"one"}"#]);
    let s = out(&o);
    assert!(
        s.starts_with("published msg_") && s.contains(" at offset "),
        "{s}"
    );
    assert!(!s.contains('{'), "{s}");

    // claim, send, edit, react, release: sentences naming what happened.
    let o = human(&d, &["claim", "telegram/42", "--as", A]);
    assert_eq!(out(&o), format!("claimed metro://telegram/42 → {A}\n"));
    let o = human(&d, &["send", "local/demo", "two", "--as", A]);
    let s = out(&o);
    assert!(
        s.starts_with("notified metro://local/demo · id msg_"),
        "{s}"
    );
    let id = s.trim().rsplit(' ').next().unwrap().to_string();
    let o = human(&d, &["edit", "local/demo", &id, "two!", "--as", A]);
    assert_eq!(out(&o), format!("edited {id} on metro://local/demo\n"));
    let o = human(&d, &["react", "local/demo", &id, "👍", "--from", A]);
    assert_eq!(
        out(&o),
        format!("reacted 👍 to {id} on metro://local/demo\n")
    );
    let o = human(&d, &["react", "local/demo", &id, "", "--as", A]);
    assert_eq!(
        out(&o),
        format!("cleared the reaction on {id} on metro://local/demo\n")
    );

    // hello: the daemon in one line, its ops in words.
    let o = human(&d, &["hello"]);
    let s = out(&o);
    let first = s.lines().next().unwrap();
    assert!(
        first.starts_with("metrod ") && first.contains(" · protocol 1 · state dir "),
        "{s}"
    );
    assert!(s.contains("24 ops: hello, publish, subscribe"), "{s}");

    // cursor: where it stands and how far behind.
    let o = human(&d, &["cursor", "--as", "metro://claude/user/b"]);
    let s = out(&o);
    assert!(
        s.starts_with("cursor metro://claude/user/b: offset 0 of "),
        "{s}"
    );
    assert!(s.contains(" behind (not stored yet"), "{s}");

    // webhook add and remove.
    let o = human(&d, &["webhook", "add", "github"]);
    let s = out(&o);
    assert!(s.starts_with("added webhook github (id "), "{s}");
    assert!(s.contains("\nPOST to http://127.0.0.1:"), "{s}");
    let hook = s
        .split("(id ")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap()
        .to_string();

    // tail: a header, whole kinds, the id reply/edit/react take, the
    // webhook's label instead of its id.
    let mut c = d.connect();
    publish(
        &mut c,
        json!({"line": format!("webhook/{hook}"), "kind": "webhook", "text": "push"}),
    );
    publish(
        &mut c,
        json!({"line": "local/demo", "kind": "callback", "text": "pressed"}),
    );
    let o = human(&d, &["tail", "--cursor", "t", "--since", "start"]);
    let s = out(&o);
    let lines: Vec<&str> = s.lines().collect();
    assert!(lines[0].starts_with("TIME (UTC)    KIND      LINE"), "{s}");
    assert!(
        lines[0].contains("  FROM  ") || lines[0].contains(" FROM "),
        "{s}"
    );
    assert!(
        lines[0].contains(" ID ") && lines[0].ends_with("TEXT"),
        "{s}"
    );
    assert_eq!(lines.len(), 1 + d.history().len(), "{s}");
    let row = |text: &str| -> String {
        lines
            .iter()
            .find(|l| l.ends_with(text))
            .unwrap_or_else(|| panic!("{text}: {s}"))
            .to_string()
    };
    assert!(row("push").contains("  webhook   webhook/github  "), "{s}");
    assert!(!s.contains(&hook), "the webhook's random id is shown: {s}");
    assert!(row("pressed").contains("  callback  local/demo"), "{s}");
    assert!(row("two!").contains(&id[..11]), "{s}");
    // --wide: metro's full ids.
    let o = human(
        &d,
        &["tail", "--cursor", "t2", "--since", "start", "--wide"],
    );
    assert!(out(&o).contains(&id), "{}", out(&o));

    // An empty tail says so on stderr, with the cursor's offset.
    let o = human(&d, &["tail", "--as", A]);
    let o2 = human(&d, &["tail", "--as", A]);
    assert!(out(&o2).is_empty(), "{}", out(&o2));
    let end = std::fs::metadata(d.history_path()).unwrap().len();
    assert_eq!(
        err(&o2),
        format!("no new events since your cursor (offset {end})\n"),
        "first tail: {}",
        out(&o)
    );

    // stats: durations and counts in words, cursors and config.
    let o = human(&d, &["stats"]);
    let s = out(&o);
    let first = s.lines().next().unwrap();
    let up = first
        .strip_prefix("up ")
        .and_then(|r| r.split(" · log ").next());
    assert!(
        up.is_some_and(|u| [" ms", " s", " min"].iter().any(|w| u.ends_with(w))),
        "{s}"
    );
    // The test's own connection may still be counted.
    assert!(
        first.contains(" · 1 connection · ") || first.contains(" · 2 connections · "),
        "{s}"
    );
    assert!(first.ends_with(" · 1 claim"), "{s}");
    assert!(s.contains("\nCURSOR "), "{s}");
    assert!(s.contains("\nclaude/user/a "), "{s}");
    assert!(s.contains("\nconfig "), "{s}");
    assert!(s.contains("  telegram: no token, 0 users allowed"), "{s}");

    // stations: a glyph and the status in words.
    let o = human(&d, &["stations"]);
    let s = out(&o);
    assert!(s.contains("✓  local "), "{s}");
    assert!(s.contains("·  telegram  disabled"), "{s}");

    // lines: short lines, when in words, the owner.
    let o = human(&d, &["lines"]);
    let s = out(&o);
    assert!(s.starts_with("LINE "), "{s}");
    let demo = s
        .lines()
        .find(|l| l.starts_with("local/demo "))
        .unwrap_or_else(|| panic!("{s}"));
    assert!(demo.contains(" ago"), "{s}");

    // webhook remove; history with a header.
    let o = human(&d, &["webhook", "remove", &hook]);
    assert_eq!(out(&o), format!("removed webhook {hook}\n"));
    let o = human(&d, &["history", "--limit", "2"]);
    let s = out(&o);
    assert!(s.starts_with("TIME (UTC)"), "{s}");
    assert_eq!(s.lines().count(), 3, "{s}");

    // Piped without METRO_OUTPUT: JSON, the same answers.
    let o = run_ok(&mut metroctl(&d, &["claim", "telegram/42", "--as", A]));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["owner"], json!(A));
}

/// `metroctl args` under a pseudo-terminal (python3's pty); everything the
/// terminal showed.
fn on_a_terminal(d: &Daemon, args: &[&str], no_color: bool) -> String {
    let script = r#"
import os, pty, sys
argv = sys.argv[1:]
pid, fd = pty.fork()
if pid == 0:
    os.execv(argv[0], argv)
seen = b""
while True:
    try:
        chunk = os.read(fd, 4096)
    except OSError:
        break
    if not chunk:
        break
    seen += chunk
_, status = os.waitpid(pid, 0)
sys.stdout.write(seen.decode(errors="replace"))
sys.exit(os.waitstatus_to_exitcode(status))
"#;
    let mut cmd = Command::new("python3");
    cmd.arg("-c")
        .arg(script)
        .arg(METROCTL)
        .arg("--socket")
        .arg(&d.socket)
        .args(args);
    cmd.env_remove("METRO_OUTPUT")
        .env_remove("CLICOLOR_FORCE")
        .env_remove("CLICOLOR");
    cmd.env("TERM", "xterm-256color");
    if no_color {
        cmd.env("NO_COLOR", "1");
    } else {
        cmd.env_remove("NO_COLOR");
    }
    let o = cmd.output().expect("python3");
    let screen = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{screen}\n{}", err(&o));
    screen
}

#[test]
fn colors_on_a_terminal_and_none_with_no_color() {
    let d = Daemon::start();
    let colored = on_a_terminal(&d, &["stations"], false);
    // A terminal gets the human table (not JSON), its glyphs in color.
    assert!(
        colored.contains("STATION") && !colored.contains('{'),
        "{colored:?}"
    );
    assert!(
        colored.contains("\u{1b}[32m✓"),
        "no green check: {colored:?}"
    );
    let plain = on_a_terminal(&d, &["stations"], true);
    assert!(
        plain.contains("STATION") && plain.contains('✓'),
        "{plain:?}"
    );
    assert!(
        !plain.contains('\u{1b}'),
        "NO_COLOR still colored: {plain:?}"
    );
    // A piped stdout never gets escapes, even with the human form forced.
    let o = human(&d, &["stations"]);
    assert!(!out(&o).contains('\u{1b}'), "{:?}", out(&o));
}

/// `metroctl doctor` on a terminal (forced), with nothing of this
/// machine's (config, service files, tunnels) in view.
fn doctor(d: &Daemon) -> (Option<i32>, String) {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = metroctl(d, &["doctor", "--config-dir"]);
    cmd.arg(home.path().join("cloudflared"))
        .env("HOME", home.path())
        .env("METRO_CONFIG", home.path().join("none.toml"))
        .env("METRO_OUTPUT", "human");
    let o = cmd.output().unwrap();
    (o.status.code(), format!("{}{}", out(&o), err(&o)))
}

#[test]
fn doctor_fixes_match_the_cause_and_sums_up_once() {
    // A port clash: the webhook listener could not bind.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let d = Daemon::start_with(&["--webhook-addr", &addr]);
    wait_station_status(&d, "webhook", "down", |s| s.starts_with("down"));
    let (code, said) = doctor(&d);
    assert_eq!(code, Some(1), "{said}");
    assert!(
        said.contains(&format!("(could not listen on {addr})")),
        "{said}"
    );
    assert!(!said.contains(&format!("listening on {addr}")), "{said}");
    assert!(said.contains("fix: free that port"), "{said}");
    assert!(said.contains("✗ station    webhook: down"), "{said}");
    // The summary once, on its own line, last.
    assert_eq!(said.matches("1 problem found").count(), 1, "{said}");
    assert!(said.ends_with("\n✗ 1 problem found\n"), "{said:?}");
    drop(d);

    // Telegram's API unreachable: a network fix, not a token one.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let env = [
        (
            "METRO_TELEGRAM_TOKEN",
            "123456:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ),
        ("METRO_TELEGRAM_API_URL", url.as_str()),
        ("METRO_TELEGRAM_ALLOW", "42"),
    ];
    let d = Daemon::start_env(&[], &env);
    wait_station_status(&d, "telegram", "unreachable", |s| {
        s.contains("cannot reach")
    });
    let (code, said) = doctor(&d);
    assert_eq!(code, Some(1), "{said}");
    let fix = said
        .lines()
        .skip_while(|l| !l.contains("telegram: down"))
        .nth(1)
        .unwrap_or_else(|| panic!("{said}"));
    assert!(fix.contains("fix: check this machine's network"), "{said}");
    assert!(!fix.contains("token"), "{said}");

    // All well: the summary once.
    let d = Daemon::start();
    let (code, said) = doctor(&d);
    assert_eq!(code, Some(0), "{said}");
    assert_eq!(said.matches("All is well").count(), 1, "{said}");
    assert!(
        said.ends_with("\n✓ All is well.\n") || said.contains("All is well ("),
        "{said:?}"
    );
}

#[test]
fn a_following_tail_says_what_it_follows_on_stderr() {
    let d = Daemon::start();
    let mut cmd = metroctl(&d, &["tail", "--follow", "--as", A]);
    cmd.env("METRO_OUTPUT", "human")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    // The end of a piped stdin stops a following tail (as Ctrl-C does).
    drop(child.stdin.take());
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(
        err(&o),
        "following the lines claude/user/a owns and those nobody owns (Ctrl-C to stop)\n"
    );
    assert!(out(&o).is_empty(), "{}", out(&o));
}
