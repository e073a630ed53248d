//! Hardening (issue 14, item 8): metroctl refuses a socket served by
//! another user (SO_PEERCRED) before sending anything.
//!
//! The foreign listener runs as uid 65534 (setpriv) in a second copy of
//! this test binary (`listener_helper`, ignored unless asked for).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::process::{Command, Stdio};

use common::*;

#[test]
fn metroctl_refuses_a_socket_of_another_user() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to listen as another uid");
        return;
    }
    let setpriv = std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("setpriv"))
                .find(|p| p.exists())
        })
        .expect("setpriv (util-linux) is needed for this test");
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let shared = tmp.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    let sock = shared.join("metro.sock");
    let mut helper = Command::new(setpriv)
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", "listener_helper", "--ignored", "--nocapture"])
        .env("METRO_PEER_SOCKET", &sock)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(helper.stdout.take().unwrap());
    let mut read_until = |what: &str| -> String {
        let mut line = String::new();
        loop {
            line.clear();
            assert!(out.read_line(&mut line).unwrap() > 0, "helper ended");
            if line.starts_with(what) {
                return line.trim().to_string();
            }
        }
    };
    read_until("ready");
    let mut ctl = Command::new(METROCTL)
        .arg("--socket")
        .arg(&sock)
        .args(["webhook", "add", "ci", "--secret", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    ctl.stdin
        .take()
        .unwrap()
        .write_all(b"a-webhook-secret-0123456789\n")
        .unwrap();
    let done = ctl.wait_with_output().unwrap();
    assert!(!done.status.success());
    let err = String::from_utf8_lossy(&done.stderr);
    assert!(err.contains("served by uid 65534"), "{err}");
    assert_eq!(read_until("got "), "got 0 bytes");
    let _ = helper.wait();
}

/// A listener as another user: accepts one connection, reports how many
/// bytes it received before the peer closed.
#[test]
#[ignore]
fn listener_helper() {
    let Some(path) = std::env::var_os("METRO_PEER_SOCKET") else {
        return;
    };
    let l = UnixListener::bind(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();
    println!("ready");
    let (mut s, _) = l.accept().unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    println!("got {} bytes", got.len());
}
