//! The monitor page in a real browser: headless Chromium (Debian's
//! `chromium`, which .ci/run installs) driven through the DevTools protocol
//! against a real metrod. The test types the token into the page, sees a
//! station's status, publishes over the socket and sees the event appear;
//! a screenshot is kept at target/tmp/monitor-page.png.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const TOKEN: &str = "browser-test-token-7f3a";

/// Chromium's own start-up can be slow on a loaded machine.
const BROWSER_PATIENCE: Duration = Duration::from_secs(60);

struct Chromium {
    child: Child,
    _profile: tempfile::TempDir,
    port: u16,
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chromium_binary() -> PathBuf {
    for name in ["chromium", "chromium-browser"] {
        for dir in ["/usr/bin", "/usr/local/bin"] {
            let p = Path::new(dir).join(name);
            if p.exists() {
                return p;
            }
        }
    }
    panic!("no chromium found: install Debian's chromium (apt-get install chromium; .ci/run does)");
}

impl Chromium {
    fn start() -> Chromium {
        let profile = tempfile::tempdir().unwrap();
        let child = Command::new(chromium_binary())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--window-size=1280,900",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromium");
        // Chromium writes the port it took into the profile.
        let file = profile.path().join("DevToolsActivePort");
        let deadline = Instant::now() + BROWSER_PATIENCE;
        let port = loop {
            if let Some(p) = std::fs::read_to_string(&file)
                .ok()
                .and_then(|s| s.lines().next().and_then(|l| l.trim().parse().ok()))
            {
                break p;
            }
            assert!(
                Instant::now() < deadline,
                "chromium did not open its DevTools port"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        Chromium {
            child,
            _profile: profile,
            port,
        }
    }
}

/// The DevTools WebSocket of the first page of the Chromium on `port`.
fn page_socket(port: u16) -> String {
    {
        let deadline = Instant::now() + BROWSER_PATIENCE;
        loop {
            let list: Option<Value> =
                reqwest::blocking::get(format!("http://127.0.0.1:{port}/json/list"))
                    .ok()
                    .and_then(|r| r.json().ok());
            if let Some(ws) = list.as_ref().and_then(|l| {
                l.as_array()?.iter().find(|t| t["type"] == "page")?["webSocketDebuggerUrl"]
                    .as_str()
                    .map(String::from)
            }) {
                return ws;
            }
            assert!(Instant::now() < deadline, "no page target: {list:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A DevTools protocol session on one page.
struct Page {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next: u64,
}

impl Page {
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        self.ws
            .send(Message::Text(msg))
            .await
            .expect("devtools send");
        loop {
            let m = tokio::time::timeout(BROWSER_PATIENCE, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("no answer to {method}"))
                .expect("devtools open")
                .expect("devtools message");
            let Message::Text(t) = m else { continue };
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["id"] == json!(id) {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    /// Evaluates `expr` in the page; returns its value.
    async fn eval(&mut self, expr: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expr, "returnByValue": true}),
            )
            .await;
        r["result"]["value"].clone()
    }

    /// Waits until `expr` is true in the page.
    async fn wait_for(&mut self, what: &str, expr: &str) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if self.eval(expr).await == json!(true) {
                return;
            }
            if Instant::now() > deadline {
                let body = self
                    .eval("document.body ? document.body.innerText : ''")
                    .await;
                panic!("the page never showed {what}; it shows:\n{body}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_stations_and_live_events() {
    let d = tokio::task::spawn_blocking(|| {
        let d = Daemon::start_env(&[], &[("METRO_MONITOR_TOKEN", TOKEN)]);
        publish(
            &mut d.connect(),
            json!({"line": "telegram/5", "text": "an older event", "fromName": "ann"}),
        );
        d
    })
    .await
    .unwrap();
    let base = tokio::task::spawn_blocking({
        let sock = d.socket.clone();
        move || {
            let mut c = Client::connect(&sock);
            let st = c.ok(json!({"op": "stations"}));
            st["stations"]
                .as_array()
                .and_then(|a| a.iter().find(|s| s["name"] == "webhook"))
                .and_then(|r| r["url"].as_str())
                .expect("webhook listener url")
                .to_string()
        }
    })
    .await
    .unwrap();
    let chromium = tokio::task::spawn_blocking(Chromium::start).await.unwrap();
    let port = chromium.port;
    let ws_url = tokio::task::spawn_blocking(move || page_socket(port))
        .await
        .unwrap();
    let (ws, _) = tokio_tungstenite::connect_async(ws_url.as_str())
        .await
        .expect("devtools websocket");
    let mut page = Page { ws, next: 0 };
    page.call("Page.enable", json!({})).await;
    page.call("Runtime.enable", json!({})).await;
    page.call("Page.navigate", json!({"url": format!("{base}/")}))
        .await;
    page.wait_for(
        "the token prompt",
        "!!document.getElementById('token') && !document.getElementById('login').classList.contains('hidden')",
    )
    .await;
    // Type the token as a person would, and press Enter.
    page.eval("document.getElementById('token').focus()").await;
    page.call("Input.insertText", json!({"text": TOKEN})).await;
    for kind in ["keyDown", "keyUp"] {
        page.call(
            "Input.dispatchKeyEvent",
            json!({"type": kind, "key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13, "text": "\r"}),
        )
        .await;
    }
    page.wait_for(
        "the live stream",
        "document.getElementById('conn').textContent === 'live'",
    )
    .await;
    page.wait_for(
        "the webhook station's status",
        "(() => { const r = document.querySelector('#stations tr[data-station=\"webhook\"]'); return !!r && r.cells[1].textContent === 'ok'; })()",
    )
    .await;
    page.wait_for(
        "the older event from /api/state",
        "document.getElementById('events').textContent.includes('an older event')",
    )
    .await;
    assert_eq!(
        page.eval("sessionStorage.getItem('metro-monitor-token')")
            .await,
        json!(TOKEN),
        "the token is kept for the tab"
    );
    assert_eq!(
        page.eval("location.href.includes('token')").await,
        json!(false),
        "the token is not in the page's address"
    );
    // An event published over the socket appears at the top of the list.
    let sock = d.socket.clone();
    tokio::task::spawn_blocking(move || {
        publish(
            &mut Client::connect(&sock),
            json!({"line": "telegram/5", "text": "hello from the socket", "fromName": "bo"}),
        );
    })
    .await
    .unwrap();
    page.wait_for(
        "the published event",
        "document.querySelector('#events li .text') && document.querySelector('#events li .text').textContent === 'hello from the socket'",
    )
    .await;
    // The lines table knows the line.
    page.wait_for(
        "the line",
        "document.getElementById('lines').textContent.includes('metro://telegram/5')",
    )
    .await;
    let shot = page
        .call("Page.captureScreenshot", json!({"format": "png"}))
        .await;
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot["data"].as_str().expect("screenshot data"))
        .expect("base64 png");
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("monitor-page.png");
    std::fs::write(&out, &png).expect("keep the screenshot");
    eprintln!("screenshot: {}", out.display());
    drop(page);
    drop(chromium);
    tokio::task::spawn_blocking(move || drop(d)).await.unwrap();
}
