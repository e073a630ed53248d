//! metroctl against a real daemon: every command, identity resolution,
//! the "not running" message, terminal sentences and `--json`, and `tail`:
//! killed it loses nothing; following, it stops cleanly on a signal or the
//! end of a piped stdin and survives a metrod restart.

mod common;
mod fake_telegram;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::time::{Duration, Instant};

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

    // Bad input from the command line: a clear error, non-zero exit. The
    // shape of a station's lines is its kind's (metroctl checks only the
    // URI syntax): the daemon answers with the kind's sentence, and
    // nothing is logged.
    let logged = d.history().len();
    let out = metroctl(&d, &["send", "telegram/abc", "x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("bad_request: field `line`: invalid line \"metro://telegram/abc\": telegram lines are metro://telegram/<chatId>[/<topicId>] with numeric ids"),
        "{e}"
    );
    assert_eq!(d.history().len(), logged);
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

#[test]
fn a_terminal_gets_the_typescript_sentences_and_json_on_request() {
    let fake = fake_telegram::Fake::start();
    let env = fake.env("42");
    let d = Daemon::start_env(&[], &env);
    let human = |args: &[&str]| -> Output {
        let mut cmd = metroctl(&d, args);
        cmd.env("METRO_OUTPUT", "human");
        run_ok(&mut cmd)
    };
    let stdout = |o: &Output| String::from_utf8_lossy(&o.stdout).into_owned();
    let stderr = |o: &Output| String::from_utf8_lossy(&o.stderr).into_owned();
    // A send by another identity: the TypeScript sentence, then the id
    // reply/edit/react take; the skipped auto-claim names the owner.
    let notified_but_not_claimed = |o: &Output| {
        let said = stdout(o);
        assert!(
            said.starts_with("notified metro://telegram/42 · id "),
            "{said}"
        );
        assert!(
            said.trim_end()
                .rsplit(' ')
                .next()
                .unwrap()
                .parse::<u64>()
                .is_ok(),
            "{said}"
        );
        assert_eq!(
            stderr(o),
            format!("auto-claim skipped: line owned by {A}\n")
        );
    };

    let o = human(&["claim", "telegram/42", "--as", A]);
    assert_eq!(stdout(&o), format!("claimed metro://telegram/42 → {A}\n"));
    // Another identity's send: notified, and the skipped auto-claim names
    // the owner on stderr.
    let o = human(&[
        "send",
        "telegram/42",
        "hello",
        "--from",
        "metro://codex/user/b",
    ]);
    notified_but_not_claimed(&o);
    fake.wait_calls("sendMessage", 1);
    // --json, before or after the subcommand, gives the answer's fields.
    let o = human(&["--json", "send", "telegram/42", "again", "--from", A]);
    let sent = json_out(&o);
    assert_eq!(sent["claim"], json!("kept"));
    assert!(sent["id"].as_str().unwrap().starts_with("msg_"));
    assert!(stderr(&o).is_empty(), "{}", stderr(&o));
    // reply is a send: the same sentence and the same note.
    let id = sent["id"].as_str().unwrap();
    let o = human(&[
        "reply",
        "telegram/42",
        id,
        "re",
        "--from",
        "metro://codex/user/b",
    ]);
    notified_but_not_claimed(&o);
    let o = human(&["release", "telegram/42"]);
    assert_eq!(stdout(&o), "released metro://telegram/42\n");
    let o = human(&["release", "telegram/42"]);
    assert_eq!(stdout(&o), "metro://telegram/42 was not claimed\n");
    let o = human(&["release", "telegram/42", "--json"]);
    assert_eq!(
        json_out(&o),
        json!({"line": "metro://telegram/42", "released": false})
    );
    let o = human(&["claim", "telegram/42", "--as", A, "--json"]);
    assert_eq!(json_out(&o)["owner"], json!(A));
    // Not a terminal (a pipe): JSON without asking.
    let o = run_ok(&mut metroctl(&d, &["release", "telegram/42"]));
    assert_eq!(json_out(&o)["released"], json!(true));
    // Every command that prints takes --json.
    for args in [
        &["hello", "--json"][..],
        &["claims", "--json"],
        &["lines", "--json"],
        &["stations", "--json"],
        &["stats", "--json"],
        &["history", "--json"],
        &["cursor", "--as", A, "--json"],
        &["tail", "--json", "--cursor", "j"],
        &["allow", "--list", "--json"],
        &["webhook", "list", "--json"],
    ] {
        let o = human(args);
        for l in stdout(&o).lines() {
            serde_json::from_str::<Value>(l)
                .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {l}"));
        }
    }
}

fn subscribed_conns(c: &mut Client) -> Vec<Value> {
    c.ok(json!({"op": "stats"}))["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["conn"].clone())
        .collect()
}

/// A following tail with piped stdout; returns it once it is subscribed.
fn follow(d: &Daemon, args: &[&str], stdin: Stdio) -> (Child, BufReader<ChildStdout>) {
    let mut c = d.connect();
    let before = subscribed_conns(&mut c);
    let mut child = metroctl(d, args)
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let reader = BufReader::new(child.stdout.take().unwrap());
    let deadline = Instant::now() + PATIENCE;
    while subscribed_conns(&mut c)
        .iter()
        .all(|conn| before.contains(conn))
    {
        assert!(Instant::now() < deadline, "tail never subscribed");
        std::thread::sleep(Duration::from_millis(10));
    }
    (child, reader)
}

fn read_texts(r: &mut BufReader<ChildStdout>, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| {
            let mut l = String::new();
            r.read_line(&mut l).unwrap();
            let v: Value = serde_json::from_str(&l).unwrap_or_else(|e| panic!("{e}: {l:?}"));
            v["text"].as_str().unwrap().to_string()
        })
        .collect()
}

fn publish_texts(d: &Daemon, texts: &[&str]) -> u64 {
    let mut c = d.connect();
    let mut end = 0;
    for t in texts {
        end = publish(&mut c, json!({"line": "telegram/1", "text": t}))["offset"]
            .as_u64()
            .unwrap();
    }
    end
}

fn cursor_of(d: &Daemon, who: &str) -> u64 {
    d.connect().ok(json!({"op": "cursor", "as": who}))["offset"]
        .as_u64()
        .unwrap()
}

fn stderr_of(child: &mut Child) -> String {
    let mut s = String::new();
    child.stderr.take().unwrap().read_to_string(&mut s).unwrap();
    s
}

#[test]
fn a_following_tail_stops_cleanly_at_the_end_of_a_piped_stdin() {
    let d = Daemon::start();
    let (mut child, mut out) = follow(&d, &["tail", "--as", A, "--follow"], Stdio::piped());
    let end = publish_texts(&d, &["a", "b"]);
    assert_eq!(read_texts(&mut out, 2), ["a", "b"]);
    // The parent goes away: its end of the pipe closes.
    drop(child.stdin.take());
    let status = wait_timeout(&mut child, PATIENCE).expect("tail did not stop at EOF");
    assert!(status.success(), "{status}: {}", stderr_of(&mut child));
    assert_eq!(cursor_of(&d, A), end, "cursor flushed before exit");
}

#[test]
fn a_following_tail_stops_cleanly_on_sigint_and_sigterm() {
    let d = Daemon::start();
    for (sig, text) in [
        (nix::sys::signal::Signal::SIGTERM, "t"),
        (nix::sys::signal::Signal::SIGINT, "i"),
    ] {
        let (mut child, mut out) = follow(&d, &["tail", "--as", A, "--follow"], Stdio::null());
        let end = publish_texts(&d, &[text]);
        assert_eq!(read_texts(&mut out, 1), [text]);
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig).unwrap();
        let status = wait_timeout(&mut child, PATIENCE).expect("tail did not stop");
        assert_eq!(status.code(), Some(0), "{sig}: {}", stderr_of(&mut child));
        assert_eq!(cursor_of(&d, A), end, "{sig}: cursor flushed before exit");
    }
}

#[test]
fn null_or_file_stdin_does_not_stop_a_following_tail() {
    let d = Daemon::start();
    let file = tempfile::NamedTempFile::new().unwrap();
    for (i, stdin) in [Stdio::null(), Stdio::from(file.reopen().unwrap())]
        .into_iter()
        .enumerate()
    {
        let cursor = format!("c{i}");
        let (mut child, mut out) = follow(
            &d,
            &["tail", "--cursor", &cursor, "--since", "tail", "--follow"],
            stdin,
        );
        // Its stdin was at end of file from the start; it still prints
        // what comes after it subscribed, and keeps running.
        publish_texts(&d, &["later"]);
        assert_eq!(read_texts(&mut out, 1), ["later"]);
        assert!(child.try_wait().unwrap().is_none(), "tail exited");
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

#[test]
fn limit_zero_means_no_limit() {
    let d = Daemon::start();
    publish_texts(&d, &["1", "2", "3"]);
    let out = run_ok(&mut metroctl(
        &d,
        &[
            "tail", "--all", "--since", "start", "--limit", "0", "--cursor", "z",
        ],
    ));
    assert_eq!(json_lines(&out).len(), 3);
}

#[test]
fn a_following_tail_survives_a_metrod_restart() {
    let mut d = Daemon::start();
    let (mut child, mut out) = follow(&d, &["tail", "--as", A, "--follow"], Stdio::null());
    publish_texts(&d, &["1", "2"]);
    assert_eq!(read_texts(&mut out, 2), ["1", "2"]);
    for round in 0..2 {
        d.stop();
        d.restart();
        let t: Vec<String> = (0..3).map(|i| format!("r{round}-{i}")).collect();
        let refs: Vec<&str> = t.iter().map(String::as_str).collect();
        let end = publish_texts(&d, &refs);
        assert_eq!(
            read_texts(&mut out, 3),
            t,
            "resumed where it was, no repeats"
        );
        if round == 1 {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            )
            .unwrap();
            let status = wait_timeout(&mut child, PATIENCE).expect("tail did not stop");
            let err = stderr_of(&mut child);
            assert!(status.success(), "{status}: {err}");
            assert_eq!(
                err.matches("lost metrod").count(),
                2,
                "said so once per restart: {err}"
            );
            assert_eq!(cursor_of(&d, A), end);
        }
    }
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert!(rest.is_empty(), "nothing printed twice: {rest}");
}

#[test]
fn no_reconnect_exits_when_metrod_goes_away() {
    let mut d = Daemon::start();
    let (mut child, _out) = follow(
        &d,
        &["tail", "--as", A, "--follow", "--no-reconnect"],
        Stdio::null(),
    );
    d.stop();
    let status = wait_timeout(&mut child, PATIENCE).expect("tail did not exit");
    assert!(!status.success());
    assert!(stderr_of(&mut child).contains("metrod closed the connection"));
}

#[test]
fn commands_that_change_this_machine_print_one_json_object_with_json() {
    let d = Daemon::start();
    let tmp = tempfile::tempdir().unwrap();
    let p = |name: &str| tmp.path().join(name).to_str().unwrap().to_string();
    let (units, config, cf) = (p("units"), p("config.toml"), p("cf"));
    let install = [
        "service",
        "install",
        "--manager",
        "systemd",
        "--dir",
        &units,
    ];
    let mut args = install.to_vec();
    args.extend(["--metrod", METROD, "--allow-cargo-target", "--json"]);
    let o = json_out(&run_ok(&mut metroctl(&d, &args)));
    let files = o["files"].as_array().unwrap();
    assert!(!files.is_empty(), "{o}");
    assert!(files.iter().all(|f| f["action"] == "wrote"), "{o}");
    assert!(o["command"]
        .as_str()
        .unwrap()
        .contains("systemctl --user enable"));
    // Again: nothing changed, no command.
    let o = json_out(&run_ok(&mut metroctl(&d, &args)));
    assert!(o["files"]
        .as_array()
        .unwrap()
        .iter()
        .all(|f| f["action"] == "unchanged"));
    assert_eq!(o["command"], Value::Null);
    let o = json_out(&run_ok(&mut metroctl(
        &d,
        &[
            "service",
            "uninstall",
            "--manager",
            "systemd",
            "--dir",
            &units,
            "--json",
        ],
    )));
    assert_eq!(o["removed"].as_array().unwrap().len(), files.len(), "{o}");

    let o = json_out(&run_ok(&mut metroctl(
        &d,
        &[
            "setup",
            "--config",
            &config,
            "--allow-telegram",
            "42",
            "--json",
        ],
    )));
    assert_eq!(
        (o["config"].as_str(), &o["written"]),
        (Some(config.as_str()), &json!(true))
    );
    assert!(o["telegram"].as_str().unwrap().contains("allow"), "{o}");
    assert!(o["metrod"].is_string(), "{o}");

    let o = json_out(&run_ok(&mut metroctl(
        &d,
        &[
            "tunnel",
            "setup",
            "metro",
            "hooks.example.com",
            "--config-dir",
            &cf,
            "--json",
        ],
    )));
    assert_eq!(o["url"], "https://hooks.example.com/hooks/<id>");
    assert_eq!(o["next"].as_array().unwrap().len(), 3);
    assert!(std::path::Path::new(o["config"].as_str().unwrap()).exists());
}

#[test]
fn mistakes_are_told_in_the_users_terms() {
    let d = Daemon::start();
    let fails = |args: &[&str]| -> String {
        let o = ctl_output(&d, args);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(
            o.stdout.is_empty(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stdout)
        );
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    // An event without a line: the event needs one, said about the JSON
    // the user wrote (no wrapper field, no column).
    let e = fails(&["publish", r#"{"text":"x"}"#]);
    assert!(e.contains("the event needs a `line`"), "{e}");
    assert!(e.contains("local/demo"), "{e}");
    assert!(!e.contains("column") && !e.contains("field event"), "{e}");
    // Not JSON, not an object, a wrong field type.
    let e = fails(&["publish", "hello"]);
    assert!(e.contains("publish needs an event as a JSON object"), "{e}");
    let e = fails(&["publish", "[1]"]);
    assert!(e.contains("not [1]"), "{e}");
    let e = fails(&["publish", r#"{"line":"local/demo","text":5}"#]);
    assert!(e.contains("the event's field `text`"), "{e}");
    let e = fails(&["publish", r#"{"line":"telegram/x","text":"x"}"#]);
    assert!(e.contains("telegram lines are"), "{e}");
    // A line without a station: what a line starts with.
    for args in [
        &["claim", "42", "--as", A][..],
        &["send", "42", "hi"],
        &["release", "42"],
    ] {
        let e = fails(args);
        assert!(
            e.contains("a line starts with a station name"),
            "{args:?}: {e}"
        );
        assert!(
            e.contains("telegram/<chatId>") && e.contains("discord/<channelId>"),
            "{e}"
        );
    }
    // Nothing reached the log.
    assert!(d.history().is_empty());
    // A good event still goes through.
    let o = run_ok(&mut metroctl(
        &d,
        &["publish", r#"{"line":"local/demo","text":"x"}"#],
    ));
    assert!(json_out(&o)["id"].as_str().unwrap().starts_with("msg_"));
}
