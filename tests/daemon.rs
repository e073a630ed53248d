//! The daemon as a process: lock, permissions, clean shutdown, recovery at
//! startup, the TypeScript-era log, the peer uid check.

mod common;

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::process::{Command, Stdio};

use common::*;
use serde_json::{json, Value};

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn state_dir_socket_and_files_are_private() {
    let d = Daemon::start();
    let mut c = d.connect();
    publish(&mut c, json!({"line": "telegram/1", "text": "x"}));
    c.ok(json!({"op": "claim", "line": "telegram/1", "as": "metro://claude/user/a"}));
    assert_eq!(mode(&d.dir), 0o700);
    assert_eq!(mode(&d.socket), 0o600);
    assert_eq!(mode(&d.history_path()), 0o600);
    assert_eq!(mode(&d.dir.join("claims.json")), 0o600);
    assert_eq!(mode(&d.dir.join("metrod.lock")), 0o600);
}

#[test]
fn a_loose_state_dir_is_tightened() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let d = Daemon::start_in(&dir, &[]);
    assert_eq!(mode(&dir), 0o700);
    assert!(d.stderr().contains("setting it to 0700"), "{}", d.stderr());
}

#[test]
fn a_second_daemon_on_the_same_dir_is_refused() {
    let d = Daemon::start();
    let out = Command::new(METROD)
        .arg("--state-dir")
        .arg(&d.dir)
        .arg("--socket")
        .arg(d.dir.join("other.sock"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already running"), "{err}");
    assert!(
        err.contains(&d.pid().to_string()),
        "names the running pid: {err}"
    );
    // The first daemon is unharmed.
    d.connect().ok(json!({"op": "hello"}));
}

#[test]
fn a_socket_served_by_another_daemon_is_not_taken_over() {
    let tmp = tempfile::tempdir().unwrap();
    let sock = tmp.path().join("shared.sock");
    let first = Daemon::start_with(&["--socket", sock.to_str().unwrap()]);
    let out = Command::new(METROD)
        .arg("--state-dir")
        .arg(tmp.path().join("other"))
        .arg("--socket")
        .arg(&sock)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use by another running metrod"), "{err}");
    let mut c = Client::connect(&sock);
    let hello = c.ok(json!({"op": "hello"}));
    assert_eq!(hello["stateDir"], json!(first.dir.to_str().unwrap()));
}

#[test]
fn bad_flags_are_refused_with_a_message() {
    for args in [
        vec!["--fsync", "sometimes"],
        vec!["--fsync", "interval:0"],
        vec!["--max-request-bytes", "12"],
        vec!["--socket", &"/tmp/x".repeat(30)],
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let out = Command::new(METROD)
            .arg("--state-dir")
            .arg(tmp.path().join("s"))
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} accepted");
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!err.is_empty(), "{args:?}: no message");
    }
}

#[test]
fn sigterm_and_sigint_stop_cleanly() {
    for sig in [
        nix::sys::signal::Signal::SIGTERM,
        nix::sys::signal::Signal::SIGINT,
    ] {
        let mut d = Daemon::start();
        let mut c = d.connect();
        publish(&mut c, json!({"line": "telegram/1", "text": "kept"}));
        let s = c.subscribe(json!({"as": "metro://claude/user/a", "follow": true}));
        let f = c.frame();
        assert_eq!(f["sub"], json!(s));
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(d.pid()), sig).unwrap();
        // The connection is closed by the daemon.
        assert!(c.closed() || c.read_line().is_none());
        let status = d.stop_after_signal();
        assert!(status.success(), "{sig}: {status}");
        assert!(!d.socket.exists(), "socket removed");
        assert!(d.stderr().contains("shutting down"));
        // The cursor written by the auto-ack is on disk.
        let cur = std::fs::read_to_string(d.dir.join("cursors/claude%2Fuser%2Fa")).unwrap();
        assert_eq!(cur.trim(), f["offset"].to_string());
        d.restart();
        assert_eq!(d.history().len(), 1);
    }
}

#[test]
fn a_torn_last_line_is_cut_with_a_warning() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    std::fs::create_dir(&dir).unwrap();
    let good = "{\"id\":\"msg_1\",\"ts\":\"2026-01-01T00:00:00.000Z\",\"station\":\"telegram\",\"kind\":\"inbound\",\"line\":\"metro://telegram/1\",\"from\":\"metro://telegram/user/1\",\"to\":\"metro://telegram/1\",\"text\":\"whole\"}\n";
    std::fs::write(
        dir.join("history.jsonl"),
        format!("{good}{{\"id\":\"msg_2\",\"ts\":\"2026-01-01T00:00:01.0"),
    )
    .unwrap();
    let d = Daemon::start_in(&dir, &[]);
    assert!(d.stderr().contains("torn line"), "{}", d.stderr());
    assert_eq!(std::fs::read_to_string(d.history_path()).unwrap(), good);
    let mut c = d.connect();
    let a = publish(&mut c, json!({"line": "telegram/1", "text": "next"}));
    assert!(a["ts"].as_str().unwrap() > "2026-01-01");
    let s = c.subscribe(json!({"since": "start"}));
    assert_eq!(texts(&c.drain(&s).0), ["whole", "next"]);
}

#[test]
fn cursors_past_the_end_or_inside_an_entry_are_repaired() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    let mut d = Daemon::start_in(&dir, &[]);
    let mut c = d.connect();
    let o1 = publish(&mut c, json!({"line": "telegram/1", "text": "a"}))["offset"]
        .as_u64()
        .unwrap();
    let o2 = publish(&mut c, json!({"line": "telegram/1", "text": "b"}))["offset"]
        .as_u64()
        .unwrap();
    drop(c);
    assert!(d.stop().success());
    std::fs::write(dir.join("cursors/past"), format!("{}\n", o2 + 5000)).unwrap();
    std::fs::write(dir.join("cursors/inside"), format!("{}\n", o1 + 7)).unwrap();
    std::fs::write(dir.join("cursors/garbage"), "twelve\n").unwrap();
    d.restart();
    let err = d.stderr();
    assert!(
        err.contains("cursor past: past the end of the log"),
        "{err}"
    );
    assert!(err.contains("cursor inside: inside an entry"), "{err}");
    assert!(err.contains("cursor garbage: not a byte offset"), "{err}");
    let mut c = d.connect();
    assert_eq!(
        c.ok(json!({"op": "cursor", "cursor": "past"}))["offset"].as_u64(),
        Some(o2)
    );
    assert_eq!(
        c.ok(json!({"op": "cursor", "cursor": "inside"}))["offset"].as_u64(),
        Some(o1)
    );
    assert_eq!(
        c.ok(json!({"op": "cursor", "cursor": "garbage"}))["offset"].as_u64(),
        Some(0)
    );
    let s = c.subscribe(json!({"cursor": "inside"}));
    assert_eq!(texts(&c.drain(&s).0), ["b"]);
    // The repair was written back.
    assert_eq!(
        std::fs::read_to_string(dir.join("cursors/past"))
            .unwrap()
            .trim(),
        o2.to_string()
    );
}

/// A malformed claims.json is moved aside (tests/migrate.rs); one that
/// cannot be read at all still stops startup, naming it.
#[test]
fn an_unreadable_claims_file_stops_startup_with_its_name() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    std::fs::create_dir_all(dir.join("claims.json")).unwrap();
    let out = Command::new(METROD)
        .arg("--state-dir")
        .arg(&dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("claims.json"), "{err}");
}

#[test]
fn a_typescript_era_history_loads_and_replays_unchanged() {
    let fixture = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/ts-history.jsonl"
    ))
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    std::fs::DirBuilder::new().mode(0o700).create(&dir).unwrap();
    std::fs::write(dir.join("history.jsonl"), &fixture).unwrap();
    let d = Daemon::start_in(&dir, &[]);
    assert!(!d.stderr().contains("WARN"), "{}", d.stderr());
    let mut c = d.connect();
    let s = c.subscribe(json!({"since": "start"}));
    let (events, end) = c.drain(&s);
    assert_eq!(end as usize, fixture.len());
    let lines: Vec<&str> = fixture.split_terminator('\n').collect();
    assert_eq!(events.len(), lines.len());
    // Each event frame carries the stored line byte for byte.
    let frames: Vec<&String> = c
        .received
        .iter()
        .filter(|l| l.contains(",\"event\":"))
        .collect();
    let mut offset = 0;
    for (frame, line) in frames.iter().zip(&lines) {
        offset += line.len() + 1;
        assert_eq!(
            **frame,
            format!("{{\"sub\":\"{s}\",\"offset\":{offset},\"event\":{line}}}")
        );
    }
    // The file is untouched, and new events follow it.
    publish(&mut c, json!({"line": "telegram/1", "text": "rust era"}));
    let now = std::fs::read_to_string(d.history_path()).unwrap();
    assert!(now.starts_with(&fixture));
    let h = c.ok(json!({"op": "history", "limit": 2}));
    assert_eq!(h["entries"][0]["text"], "rust era");
    let last: Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert_eq!(h["entries"][1], last);
    // Personal modes apply to the old events too.
    let first: Value = serde_json::from_str(lines[0]).unwrap();
    let line = first["line"].as_str().unwrap();
    c.ok(json!({"op": "claim", "line": line, "as": "metro://codex/user/other"}));
    let s = c.subscribe(json!({"as": "metro://claude/user/me", "since": "start"}));
    let (mine, _) = c.drain(&s);
    assert!(mine.iter().all(|f| f["event"]["line"] != json!(line)
        || f["event"]["to"] == json!("metro://claude/user/me")));
    let names = c.ok(json!({"op": "lines"}));
    assert!(
        names["lines"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["name"].is_string()),
        "lineName seeds `lines`"
    );
}

#[test]
fn startup_reads_only_the_end_of_a_large_log() {
    // 64 MiB of history: startup must not read it (checked with the kernel's
    // own count of bytes the process read, /proc/<pid>/io rchar).
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    std::fs::create_dir(&dir).unwrap();
    let line = format!(
        "{{\"id\":\"msg_x\",\"ts\":\"2026-01-01T00:00:00.000Z\",\"station\":\"telegram\",\"kind\":\"inbound\",\"line\":\"metro://telegram/1\",\"from\":\"metro://telegram/user/1\",\"to\":\"metro://telegram/1\",\"text\":\"{}\"}}\n",
        "y".repeat(800)
    );
    let mut big = String::with_capacity(64 << 20);
    while big.len() < 64 << 20 {
        big.push_str(&line);
    }
    std::fs::write(dir.join("history.jsonl"), &big).unwrap();
    drop(big);
    let d = Daemon::start_in(&dir, &[]);
    let rchar = bytes_read(d.pid());
    assert!(
        rchar < 4 << 20,
        "startup read {rchar} bytes of a 64 MiB log"
    );
    let mut c = d.connect();
    let h = c.ok(json!({"op": "history", "limit": 1}));
    assert_eq!(h["entries"][0]["id"], "msg_x");
}

#[test]
fn a_foreign_uid_is_refused() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to connect as another uid");
        return;
    }
    let Ok(setpriv) = which("setpriv") else {
        panic!("setpriv (util-linux) is needed for this test");
    };
    let d = Daemon::start();
    // Let another user reach the socket at all: only the uid check remains.
    // (The state dir and its temp parent only; /tmp is open already.)
    for p in [d.dir.clone(), d.dir.parent().unwrap().to_path_buf()] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o711)).unwrap();
    }
    std::fs::set_permissions(&d.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = Command::new(setpriv)
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            METROCTL,
            "--socket",
        ])
        .arg(&d.socket)
        .arg("hello")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("unauthorized"), "{stderr}");
    let log = d.stderr();
    assert!(
        log.contains("refused a connection from another user"),
        "{log}"
    );
    // The owner is still served.
    d.connect().ok(json!({"op": "hello"}));
}

fn which(name: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join(name))
                .find(|p| p.exists())
        })
        .ok_or(())
}
