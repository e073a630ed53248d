//! metrod under a service manager: socket activation through
//! `systemd-socket-activate`, readiness through `NOTIFY_SOCKET`, config
//! reload on file change and on SIGHUP, a bad config at startup.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::svc::*;
use common::*;
use serde_json::json;

// ------------------------------------------------- activation and notify

#[test]
fn socket_activation_serves_the_passed_socket() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let sock = state.join("metro.sock");
    let err_path = tmp.path().join("stderr");
    let mut child = Command::new("systemd-socket-activate")
        .arg("-l")
        .arg(&sock)
        .args(["-E", "METRO_CONFIG", "-E", "METRO_WEBHOOK_ADDR"])
        .arg(METROD)
        .arg("--state-dir")
        .arg(&state)
        .env("METRO_CONFIG", tmp.path().join("none.toml"))
        .env("METRO_WEBHOOK_ADDR", "127.0.0.1:0")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("systemd-socket-activate (Debian package `systemd`; .ci/run installs it)");
    let stderr = || std::fs::read_to_string(&err_path).unwrap_or_default();
    // The activator binds the socket, then execs metrod on the first
    // connection, handing it over as fd 3.
    let deadline = Instant::now() + PATIENCE;
    let mut c = loop {
        if let Ok(c) = Client::try_connect(&sock) {
            break c;
        }
        assert!(Instant::now() < deadline, "no socket: {}", stderr());
        std::thread::sleep(Duration::from_millis(20));
    };
    let hello = c.ok(json!({"op": "hello"}));
    assert_eq!(hello["stateDir"], json!(state.to_str().unwrap()));
    publish(&mut c, json!({"line": "telegram/1", "text": "activated"}));
    let sub = c.subscribe(json!({"since": "start"}));
    let (events, _) = c.drain(&sub);
    assert_eq!(texts(&events), ["activated"]);
    // A second client on the same socket.
    Client::connect(&sock).ok(json!({"op": "stats"}));
    assert!(
        stderr().contains("socket activation: serving the socket systemd passed"),
        "{}",
        stderr()
    );
    assert_eq!(mode(&sock), 0o600, "tightened to 0600");
    drop(c);
    signal(child.id() as i32, nix::sys::signal::Signal::SIGTERM);
    let status = wait_timeout(&mut child, PATIENCE).expect("metrod did not stop");
    assert!(status.success(), "{status}: {}", stderr());
    // The socket belongs to the activator (systemd): metrod leaves it.
    assert!(sock.exists(), "the activated socket was removed");
}

#[test]
fn a_passed_descriptor_that_is_not_a_socket_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let file = tmp.path().join("plain");
    std::fs::write(&file, "x").unwrap();
    // LISTEN_PID must be metrod's pid: the shell's, which exec keeps.
    let out = Command::new("sh")
        .arg("-c")
        .arg(r#"export LISTEN_FDS=1 LISTEN_PID=$$; exec "$0" --state-dir "$1" 3<"$2""#)
        .arg(METROD)
        .arg(&state)
        .arg(&file)
        .env("METRO_CONFIG", tmp.path().join("none.toml"))
        .env("METRO_WEBHOOK_ADDR", "off")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the socket systemd passed (fd 3) is not a socket"),
        "{err}"
    );
}

/// Datagrams received on a test NOTIFY_SOCKET.
struct Notify {
    sock: UnixDatagram,
    path: PathBuf,
}

impl Notify {
    fn bind(dir: &Path) -> Notify {
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(PATIENCE)).unwrap();
        Notify { sock, path }
    }

    fn next(&self) -> String {
        let mut buf = [0u8; 4096];
        let n = self
            .sock
            .recv(&mut buf)
            .expect("a notification from metrod");
        String::from_utf8_lossy(&buf[..n]).to_string()
    }
}

#[test]
fn notify_socket_gets_ready_reloading_and_stopping() {
    let tmp = tempfile::tempdir().unwrap();
    let n = Notify::bind(tmp.path());
    let mut d = Daemon::start_in_env(
        &tmp.path().join("state"),
        &[],
        &[("NOTIFY_SOCKET", n.path.to_str().unwrap())],
    );
    let ready = n.next();
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    assert!(ready.contains("STATUS=serving"), "{ready:?}");

    signal(d.pid(), nix::sys::signal::Signal::SIGHUP);
    let reloading = n.next();
    assert!(
        reloading.lines().any(|l| l == "RELOADING=1"),
        "{reloading:?}"
    );
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading:?}");
    let again = n.next();
    assert!(again.lines().any(|l| l == "READY=1"), "{again:?}");
    d.connect().ok(json!({"op": "hello"}));

    signal(d.pid(), nix::sys::signal::Signal::SIGTERM);
    let stopping = n.next();
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping:?}");
    assert!(d.stop_after_signal().success());
}

// ---------------------------------------------------------------- reload

#[test]
fn config_reloads_when_the_file_changes_and_keeps_the_old_one_when_bad() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg_dir = tmp.path().join("cfg");
    std::fs::create_dir(&cfg_dir).unwrap();
    let cfg = cfg_dir.join("config.toml");
    let d = Daemon::start_in(
        &tmp.path().join("state"),
        &["--config", cfg.to_str().unwrap()],
    );
    let c = stats_config(&d);
    assert_eq!(c["path"], json!(cfg.to_str().unwrap()));
    assert_eq!(c["telegram"]["token"], json!(false));
    assert!(c["loadedAt"].is_string());
    assert_eq!(c["reloads"], json!(0));

    // A new file appears: loaded.
    write_config(&cfg, &config_body(TG, &["42"]), 0o600);
    let c = wait_config(&d, "new file", |c| c["telegram"]["token"] == json!(true));
    assert_eq!(c["telegram"]["allow"], json!(1));
    assert_eq!(c["reloads"], json!(1));
    assert!(c["error"].is_null());

    // Not TOML: rejected, the old config stays.
    write_config(&cfg, "[telegram\ntoken = ", 0o600);
    let c = wait_config(&d, "bad file", |c| c["error"].is_string());
    assert!(
        c["error"]
            .as_str()
            .unwrap()
            .contains("not a valid metro config"),
        "{c}"
    );
    assert_eq!(c["telegram"]["token"], json!(true));
    assert_eq!(c["telegram"]["allow"], json!(1));

    // Readable by others: rejected too, with the fix.
    write_config(&cfg, &config_body(TG2, &["42", "43"]), 0o644);
    let c = wait_config(&d, "open file", |c| {
        c["error"]
            .as_str()
            .is_some_and(|e| e.contains("readable or writable by others"))
    });
    assert!(c["error"].as_str().unwrap().contains("chmod 600"));
    assert_eq!(c["telegram"]["allow"], json!(1));

    // Fixed in place (a chmod is a change too): loaded.
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o600)).unwrap();
    let c = wait_config(&d, "fixed file", |c| c["telegram"]["allow"] == json!(2));
    assert!(c["error"].is_null(), "{c}");
    assert_eq!(c["reloads"], json!(2));

    let log = d.stderr();
    assert!(log.contains("config reloaded from"), "{log}");
    assert!(log.contains("telegram token set"), "{log}");
    assert!(log.contains("telegram token changed"), "{log}");
    assert!(log.contains("config change rejected"), "{log}");
    assert!(!log.contains(TG_SECRET), "a token was logged: {log}");
}

#[test]
fn config_reloads_on_sighup() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("config.toml");
    write_config(&cfg, &config_body(TG, &["1"]), 0o600);
    let d = Daemon::start_in(
        &tmp.path().join("state"),
        &["--config", cfg.to_str().unwrap(), "--no-config-watch"],
    );
    assert_eq!(stats_config(&d)["telegram"]["allow"], json!(1));

    write_config(&cfg, &config_body(TG, &["1", "2", "3"]), 0o600);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        stats_config(&d)["telegram"]["allow"],
        json!(1),
        "not watched: nothing happens before SIGHUP"
    );
    signal(d.pid(), nix::sys::signal::Signal::SIGHUP);
    let c = wait_config(&d, "SIGHUP", |c| c["telegram"]["allow"] == json!(3));
    assert_eq!(c["reloads"], json!(1));

    std::fs::write(&cfg, "[telegram]\ntokn = 1\n").unwrap();
    signal(d.pid(), nix::sys::signal::Signal::SIGHUP);
    let c = wait_config(&d, "bad SIGHUP", |c| c["error"].is_string());
    assert_eq!(c["telegram"]["allow"], json!(3), "old config kept");
    assert!(d.stderr().contains("SIGHUP: reloading the config"));
    // Still serving.
    d.connect().ok(json!({"op": "hello"}));
}

#[test]
fn metrod_refuses_to_start_on_a_bad_config() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("config.toml");
    let start = || metrod_with_config(&tmp.path().join("state"), &cfg);
    write_config(&cfg, &config_body(TG, &["1"]), 0o644);
    let out = start();
    assert_eq!(out.status.code(), Some(78), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("chmod 600 {}", cfg.display())),
        "{err}"
    );
    assert!(!err.contains(TG_SECRET));

    write_config(&cfg, "[telegram\n", 0o600);
    let out = start();
    assert_eq!(out.status.code(), Some(78), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not a valid metro config"), "{err}");
    assert!(err.contains("does not start"), "{err}");
}

#[test]
fn a_config_dir_that_appears_later_is_watched() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("later/metro/config.toml");
    let d = Daemon::start_in(
        &tmp.path().join("state"),
        &["--config", cfg.to_str().unwrap()],
    );
    assert_eq!(stats_config(&d)["telegram"]["token"], json!(false));
    std::fs::create_dir_all(cfg.parent().unwrap()).unwrap();
    write_config(&cfg, &config_body(TG, &["5"]), 0o600);
    // Looked for every 2 s, then watched.
    let c = wait_config(&d, "dir appeared", |c| {
        c["telegram"]["token"] == json!(true)
    });
    assert!(c["error"].is_null());
    write_config(&cfg, &config_body(TG, &["5", "6"]), 0o600);
    wait_config(&d, "watched now", |c| c["telegram"]["allow"] == json!(2));
}
