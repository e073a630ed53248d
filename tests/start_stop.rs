//! `metroctl start` / `metroctl stop` on a temp state dir: metrod runs
//! detached with its log in the state dir, answers, is found running a
//! second time, stops cleanly (its events kept, its socket gone), and a
//! metrod that cannot start is reported with the end of its log.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::*;
use serde_json::json;

struct Setup {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    socket: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        let socket = dir.join("metro.sock");
        Setup {
            _tmp: tmp,
            dir,
            socket,
        }
    }

    fn ctl(&self, args: &[&str]) -> Output {
        Command::new(METROCTL)
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .env("METRO_STATE_DIR", &self.dir)
            .env("METRO_WEBHOOK_ADDR", "127.0.0.1:0")
            .env("METRO_CONFIG", self.dir.with_extension("no-config.toml"))
            .env_remove("METRO_SOCKET")
            .env_remove("METRO_TELEGRAM_TOKEN")
            .env_remove("METRO_DISCORD_TOKEN")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("LISTEN_FDS")
            .stdin(Stdio::null())
            .output()
            .expect("run metroctl")
    }

    fn pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.dir.join("metrod.lock"))
            .ok()
            .and_then(|p| p.trim().parse().ok())
    }
}

/// Whatever a failed assertion leaves running is stopped.
impl Drop for Setup {
    fn drop(&mut self) {
        if Client::try_connect(&self.socket).is_ok() {
            if let Some(pid) = self.pid() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
        }
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn alive(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(')')
        .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
}

#[test]
fn start_runs_metrod_detached_and_stop_stops_it_cleanly() {
    let s = Setup::new();
    let out = s.ctl(&["start"]);
    assert!(out.status.success(), "{}", text(&out));
    let log = s.dir.join("metrod.log");
    assert!(
        text(&out).contains(&format!("log: {}", log.display())),
        "{}",
        text(&out)
    );
    let pid = s.pid().expect("metrod.lock holds the pid");
    assert!(alive(pid));
    assert!(log.exists());
    // It answers, in its own session (not the test's).
    let mut c = Client::connect(&s.socket);
    c.ok(json!({"op": "hello"}));
    let sid = nix::unistd::getsid(Some(nix::unistd::Pid::from_raw(pid))).unwrap();
    assert_eq!(sid.as_raw(), pid, "metrod leads its own session");
    publish(
        &mut c,
        json!({"line": "metro://telegram/1", "text": "kept"}),
    );
    drop(c);

    // A second start finds it.
    let out = s.ctl(&["start"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("already running (pid {pid}")),
        "{}",
        text(&out)
    );
    let out = s.ctl(&["--json", "start"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["already"], true);
    assert_eq!(v["pid"], pid);

    let out = s.ctl(&["stop"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains(&format!("metrod stopped (pid {pid})")));
    assert!(!s.socket.exists(), "the socket is gone");
    assert!(!alive(pid), "the process is gone");
    // A clean shutdown: the event is in the log, and metrod said why it stopped.
    let history = std::fs::read_to_string(s.dir.join("history.jsonl")).unwrap();
    assert!(history.contains("\"kept\""), "{history}");
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("SIGTERM"), "{logged}");

    let out = s.ctl(&["stop"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("not running"), "{}", text(&out));

    // And it starts again on the same state dir.
    let out = s.ctl(&["start"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(s.ctl(&["stop"]).status.success());
}

#[test]
fn a_metrod_that_cannot_start_is_reported_with_its_log() {
    let s = Setup::new();
    let out = s.ctl(&["start", "--", "--fsync", "sometimes"]);
    assert!(!out.status.success());
    let t = text(&out);
    assert!(t.contains("metrod exited at once"), "{t}");
    assert!(t.contains("sometimes"), "the log's end is quoted: {t}");
    assert!(!Path::new(&s.socket).exists());
}
