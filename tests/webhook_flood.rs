//! Hardening (issue 14, item 1): another local user who floods the webhook
//! port with half-open HTTP connections cannot starve metrod.
//!
//! The flood runs as uid 65534 (setpriv) in a second copy of this test
//! binary (`flood_helper`, ignored unless asked for), while metrod runs
//! with a 1,024 descriptor limit, a common service default.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const FLOOD: usize = 1100;

fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.exists())
    })
}

#[test]
fn half_open_http_connections_from_another_user_cannot_starve_metrod() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to run the flood as another uid");
        return;
    }
    let setpriv = which("setpriv").expect("setpriv (util-linux) is needed for this test");
    // metrod gets 1,024 descriptors (soft), as under many service managers.
    let (soft, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .expect("getrlimit");
    nix::sys::resource::setrlimit(
        nix::sys::resource::Resource::RLIMIT_NOFILE,
        1024.min(soft),
        hard,
    )
    .expect("setrlimit");
    let d = Daemon::start_with(&[
        "--webhook-header-timeout",
        "1s",
        "--webhook-body-timeout",
        "1s",
    ]);
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, soft, hard)
        .expect("setrlimit");
    let mut c = d.connect();
    let hook = c.ok(json!({"op": "webhookAdd", "label": "ci"}));
    let url = hook["url"].as_str().unwrap().to_string();
    let addr = url
        .strip_prefix("http://")
        .and_then(|r| r.split('/').next())
        .unwrap()
        .to_string();

    let mut flood = Command::new(setpriv)
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", "flood_helper", "--ignored", "--nocapture"])
        .env("METRO_FLOOD_ADDR", &addr)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(flood.stdout.take().unwrap());
    let mut said = |what: &str| -> String {
        let mut line = String::new();
        loop {
            line.clear();
            let n = out.read_line(&mut line).unwrap();
            assert!(n > 0, "flood helper ended before saying {what:?}");
            if line.starts_with(what) {
                return line.trim().to_string();
            }
        }
    };
    let held = said("held ");
    let n: usize = held["held ".len()..].parse().unwrap();
    assert_eq!(n, FLOOD, "{held}");
    // While the flood holds its connections, metrod answers on the socket.
    let mut other = d.connect();
    other.ok(json!({"op": "hello"}));
    // metrod closes every half-open connection (the header timeout).
    let closed = said("closed ");
    assert_eq!(closed, format!("closed {FLOOD}"));
    drop(flood.stdin.take());
    let _ = flood.wait();
    // A valid delivery afterwards is stored.
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    let path = url.split_once(&addr).unwrap().1;
    let body = r#"{"ok":"after the flood"}"#;
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    let h = other.ok(json!({"op": "history", "station": "webhook", "limit": 1}));
    assert_eq!(h["entries"][0]["payload"]["ok"], "after the flood", "{h}");
    other.ok(json!({"op": "hello"}));
}

/// The flood itself (run by the test above as another user): opens
/// [`FLOOD`] connections to `METRO_FLOOD_ADDR`, each sending half a request
/// line, says `held N`, then waits until metrod has closed each one and
/// says `closed N`; then holds on until its stdin closes.
#[test]
#[ignore]
fn flood_helper() {
    let Ok(addr) = std::env::var("METRO_FLOOD_ADDR") else {
        return;
    };
    let addr: SocketAddr = addr.parse().unwrap();
    let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .expect("getrlimit");
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard)
        .expect("setrlimit");
    let threads: Vec<_> = (0..20)
        .map(|_| {
            std::thread::spawn(move || {
                let mut held = Vec::new();
                for _ in 0..FLOOD / 20 {
                    let deadline = Instant::now() + PATIENCE * 2;
                    // A full backlog drops the SYN: try again until accepted.
                    let s = loop {
                        match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
                            Ok(s) => break s,
                            Err(e) => {
                                assert!(Instant::now() < deadline, "cannot connect: {e}");
                            }
                        }
                    };
                    let mut s = s;
                    let _ = s.write_all(b"POST /hooks/x HT");
                    held.push(s);
                }
                held
            })
        })
        .collect();
    let held: Vec<TcpStream> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    println!("held {}", held.len());
    let mut closed = 0;
    for mut s in held {
        s.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf) {
                Ok(0) => {
                    closed += 1;
                    break;
                }
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                    closed += 1;
                    break;
                }
                Err(_) => break,
            }
        }
    }
    println!("closed {closed}");
    let mut rest = String::new();
    let _ = std::io::stdin().read_line(&mut rest);
}
