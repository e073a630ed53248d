//! Hardening (issue 14, item 6): metrod never writes or reads through a
//! symbolic link planted in its state dir, says which path is a link, and
//! never prints a state file's contents; the config file must belong to
//! the daemon's user.

mod common;

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};

use common::*;
use serde_json::json;

const SECRET: &str = "TOP-SECRET-CONTENTS 4711";

/// Runs metrod on `dir` until it exits (it must refuse to start); one that
/// starts instead (its socket appears) is stopped and fails the test
/// rather than hanging it.
fn refused(dir: &Path) -> String {
    let mut child = Command::new(METROD)
        .arg("--state-dir")
        .arg(dir)
        .env("METRO_WEBHOOK_ADDR", "off")
        .env("METRO_CONFIG", dir.with_extension("no-config.toml"))
        .env_remove("NOTIFY_SOCKET")
        .env_remove("METRO_TELEGRAM_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + PATIENCE;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if dir.join("metro.sock").exists() || std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut err);
    }
    assert!(
        status.is_some_and(|s| !s.success()),
        "metrod started on a planted link: {err}"
    );
    err
}

#[test]
fn planted_links_in_the_state_dir_are_refused_and_never_written_through() {
    for name in ["metrod.lock", "history.jsonl", "history.base", "cursors"] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let target = tmp.path().join("elsewhere");
        if name == "cursors" {
            std::fs::create_dir(&target).unwrap();
        } else {
            std::fs::write(&target, SECRET).unwrap();
        }
        symlink(&target, dir.join(name)).unwrap();
        let err = refused(&dir);
        assert!(
            err.contains(&format!("{} is a symbolic link", dir.join(name).display())),
            "{name}: {err}"
        );
        assert!(!err.contains(SECRET), "{name}: contents printed: {err}");
        if name == "cursors" {
            assert_eq!(std::fs::read_dir(&target).unwrap().count(), 0, "{name}");
        } else {
            assert_eq!(std::fs::read_to_string(&target).unwrap(), SECRET, "{name}");
        }
    }
}

#[test]
fn a_planted_temp_file_link_is_replaced_not_written_through() {
    let d = Daemon::start();
    let target = d.dir.with_extension("target");
    std::fs::write(&target, SECRET).unwrap();
    symlink(&target, d.dir.join(".claims.json.tmp")).unwrap();
    std::fs::create_dir_all(d.dir.join("cursors")).unwrap();
    symlink(&target, d.dir.join("cursors/.c1.tmp")).unwrap();
    let mut c = d.connect();
    c.ok(json!({"op": "claim", "line": "telegram/1", "as": "metro://claude/user/a"}));
    assert_eq!(std::fs::read_to_string(&target).unwrap(), SECRET);
    let claims = std::fs::read_to_string(d.dir.join("claims.json")).unwrap();
    assert!(claims.contains("metro://telegram/1"), "{claims}");
    // A cursor written through the same kind of trap.
    publish(&mut c, json!({"line": "telegram/1", "text": "x"}));
    let s = c.subscribe(
        json!({"since": "start", "cursor": "c1", "as": "metro://claude/user/a", "mode": "all"}),
    );
    c.drain(&s);
    let deadline = std::time::Instant::now() + PATIENCE;
    while !d.dir.join("cursors/c1").exists() {
        assert!(std::time::Instant::now() < deadline, "cursor never written");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(std::fs::read_to_string(&target).unwrap(), SECRET);
}

#[test]
fn a_config_file_of_another_user_is_refused() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to chown the config to another uid");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("config.toml");
    std::fs::write(&cfg, "[telegram]\nallow = [\"1\"]\n").unwrap();
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(&cfg, Some(65534), Some(65534)).unwrap();
    let out = metrod_with_config(&tmp.path().join("state"), &cfg);
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("belongs to uid 65534"), "{err}");
}
