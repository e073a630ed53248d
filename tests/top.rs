//! `metroctl top`: the view of a real daemon in a known state, rendered
//! into ratatui's `TestBackend` from real answers and events; small
//! terminals; and the command itself under a pseudo-terminal (python3's
//! `pty`, with a small screen emulator), which must draw, follow, filter,
//! survive metrod starting late and restarting, quit on `q` with the
//! terminal restored,
//! and leave every cursor and claim as it found them.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use metro::client::top::{draw, model};
use ratatui::backend::TestBackend;
use ratatui::Terminal;
use serde_json::{json, Value};

fn render(view: &model::View, width: u16, height: u16) -> String {
    let mut t = Terminal::new(TestBackend::new(width, height)).unwrap();
    t.draw(|f| draw::draw(f, view)).unwrap();
    draw::text(t.backend().buffer())
}

/// The whitespace-separated cells of the first rendered row containing
/// every one of `needles`.
fn row<'a>(screen: &'a str, needles: &[&str]) -> Vec<&'a str> {
    screen
        .lines()
        .find(|l| needles.iter().all(|n| l.contains(n)))
        .unwrap_or_else(|| panic!("no row with {needles:?} in\n{screen}"))
        .split_whitespace()
        .filter(|c| *c != "│")
        .collect()
}

const OWNER: &str = "metro://claude/user/a";

/// Three events on telegram/100 (claimed by OWNER), one on the unclaimed
/// telegram/200, OWNER's subscription acking the first only, then OWNER's
/// own answer. Returns OWNER's client (its subscription stays live) and
/// the offset of the first event (OWNER's cursor).
fn known_state(d: &Daemon) -> (Client, u64) {
    let mut c = d.connect();
    let mut offsets = Vec::new();
    for text in ["one", "two", "three"] {
        let a = publish(
            &mut c,
            json!({"line": "metro://telegram/100", "from": "metro://telegram/user/7",
                   "lineName": "ops", "text": text}),
        );
        offsets.push(a["offset"].as_u64().unwrap());
    }
    publish(
        &mut c,
        json!({"line": "metro://telegram/200", "from": "metro://telegram/user/8", "text": "unclaimed line"}),
    );
    c.ok(json!({"op": "claim", "line": "metro://telegram/100", "as": OWNER}));
    let mut agent = d.connect();
    let sub = agent.subscribe(json!({"as": OWNER, "ack": "explicit", "follow": true}));
    let frames = agent.events(4);
    assert_eq!(
        texts(&frames),
        ["one", "two", "three", "unclaimed line"],
        "{frames:?}"
    );
    let a = agent.ok(json!({"op": "ack", "sub": sub, "offset": offsets[0]}));
    assert_eq!(a["cursor"], json!(offsets[0]));
    publish(
        &mut c,
        json!({"line": "metro://telegram/100", "from": OWNER, "kind": "outbound", "text": "on it"}),
    );
    (agent, offsets[0])
}

#[test]
fn the_view_of_a_daemon_in_a_known_state() {
    let d = Daemon::start();
    let (_agent, cursor) = known_state(&d);
    let mut c = d.connect();
    let snapshot = model::Snapshot {
        stats: c.ok(json!({"op": "stats"})),
        stations: c.ok(json!({"op": "stations"})),
        lines: c.ok(json!({"op": "lines"})),
        claims: c.ok(json!({"op": "claims"})),
    };
    // The subscription starts at the oldest cursor: OWNER's.
    let since = model::Top::start_offset(&snapshot.stats);
    assert_eq!(since, cursor);
    let end = snapshot.stats["logBytes"].as_u64().unwrap();

    let sub = c.subscribe(json!({"ack": "none", "since": since}));
    let (frames, _) = c.drain(&sub);
    assert_eq!(frames.len(), 4, "{frames:?}");
    // The view one second after the last event (ages and the sparkline
    // do not depend on how long the test took).
    let last = frames[3]["event"]["ts"].as_str().unwrap();
    let now = model::ts_ms(last).unwrap() + 1_000;

    let mut top = model::Top::new(None);
    top.snapshot(snapshot);
    let history = c.ok(json!({"op": "history", "limit": model::RECENT_EVENTS}));
    top.seed(history["entries"].as_array().unwrap(), now);
    top.subscribed(since, end);
    for f in &frames {
        top.event(f["offset"].as_u64().unwrap(), &f["event"], now);
    }

    let screen = render(&top.view(now), 110, 30);
    println!("{screen}");
    assert!(screen.starts_with("metro top · metrod up "), "{screen}");
    assert!(screen.contains(" · 1 claim · "), "{screen}");
    assert!(screen.contains(" Events/s, last minute: 5 "), "{screen}");
    let local = row(&screen, &["● local"]);
    assert_eq!(local[2], "ok", "{local:?}");
    assert!(screen.contains(" Lines (2) "), "{screen}");
    // telegram/100: two unread (two, three); "on it" is the owner's own.
    let claimed = row(&screen, &["telegram/100", "ops"]);
    assert_eq!(claimed[2], "claude/user/a", "{claimed:?}");
    assert_eq!(
        &claimed[claimed.len() - 3..],
        ["outbound", "4", "2"],
        "{claimed:?}"
    );
    let unclaimed = row(&screen, &["telegram/200"]);
    assert_eq!(
        &unclaimed[unclaimed.len() - 4..],
        ["ago", "inbound", "1", "-"],
        "{unclaimed:?}"
    );
    assert_eq!(unclaimed[1], "-", "no owner: {unclaimed:?}");
    // OWNER's subscription: four events (two, three, unclaimed line, on it)
    // and their bytes after its cursor, three unacked.
    let s = row(&screen, &["claude/user/a", "explicit"]);
    assert_eq!(s[2..5], ["mine-or-unclaimed", "explicit", "4"], "{s:?}");
    let lag = model::bytes(end - cursor);
    assert!(s.join(" ").contains(&format!(" 4 {lag} 3 ")), "{s:?} {lag}");
    // The newest events, oldest first, "one" from history only.
    let texts: Vec<&str> = screen
        .lines()
        .skip_while(|l| !l.contains("Newest events"))
        .filter_map(|l| {
            ["one", "two", "three", "unclaimed line", "on it"]
                .into_iter()
                .find(|t| l.contains(&format!(" {t} ")))
        })
        .collect();
    assert_eq!(
        texts,
        ["one", "two", "three", "unclaimed line", "on it"],
        "{screen}"
    );

    // The filter keeps one line and its events.
    for k in "/200".chars() {
        top.key(model::Key::Char(k));
    }
    top.key(model::Key::Enter);
    let filtered = render(&top.view(now), 110, 30);
    assert!(
        filtered.contains(" Lines (1 of 2, filter: 200) "),
        "{filtered}"
    );
    assert!(!filtered.contains("telegram/100"), "{filtered}");
    assert!(filtered.contains("unclaimed line"), "{filtered}");
}

#[test]
fn small_terminals_degrade() {
    let mut top = model::Top::new(None);
    top.snapshot(model::Snapshot {
        stats: json!({"uptimeMs": 1000, "connections": 1, "claims": 0, "logBytes": 0, "subscriptions": []}),
        stations: json!({"stations": [{"name": "local", "status": "ok"}]}),
        lines: json!({"lines": [{"line": "metro://telegram/5", "events": 1}]}),
        claims: json!({"claims": {}}),
    });
    let tiny = render(&top.view(0), 36, 6);
    assert_eq!(tiny.lines().next(), Some("terminal too small (need 40x8)"));
    assert_eq!(tiny.trim_end().lines().count(), 1, "{tiny}");
    // Between the two: the focused pane only; tab moves on.
    let medium = render(&top.view(0), 60, 12);
    assert!(medium.contains(" Lines (1) "), "{medium}");
    assert!(medium.contains("telegram/5"), "{medium}");
    assert!(!medium.contains("Subscriptions"), "{medium}");
    assert!(
        medium.contains("tab next pane (80x24 shows all)"),
        "{medium}"
    );
    top.key(model::Key::Tab);
    let next = render(&top.view(0), 60, 12);
    assert!(next.contains(" Subscriptions (0) "), "{next}");
    assert!(!next.contains("Lines"), "{next}");
}

#[test]
fn top_refuses_without_a_terminal() {
    let d = Daemon::start();
    let out = ctl_output(&d, &["top"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("top needs a terminal"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = ctl_output(&d, &["--json", "top"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("has no JSON form"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every cursor file and claims.json, as bytes.
fn durable_state(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir.join("cursors"))
        .map(|rd| {
            rd.map(|e| {
                let e = e.unwrap();
                (
                    format!("cursors/{}", e.file_name().to_string_lossy()),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect()
        })
        .unwrap_or_default();
    files.push((
        "claims.json".into(),
        std::fs::read(dir.join("claims.json")).unwrap_or_default(),
    ));
    files.sort();
    files
}

/// Drives `metroctl top` on a pseudo-terminal of 110x32. The screen is
/// rebuilt from everything top wrote (cursor moves, erases, text).
const PTY_SCRIPT: &str = r#"
import json, os, pty, re, select, signal, socket, struct, subprocess, sys, termios, fcntl, time
ctl, metrod, state, sock, config = sys.argv[1:6]
ROWS, COLS = 32, 110
pid, fd = pty.fork()
if pid == 0:
    fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLS, 0, 0))
    os.environ["TERM"] = "xterm-256color"
    os.execv(ctl, [ctl, "--socket", sock, "top"])
raw = b""
TOKEN = re.compile(r"\x1b\[([?0-9;]*)([A-Za-z@])|\x1b\][^\x07]*\x07|\x1b[()][0-9A-Za-z]|\x1b[=>78]|([^\x1b])", re.S)
def screen():
    grid = [[" "] * COLS for _ in range(ROWS)]
    y = x = 0
    for m in TOKEN.finditer(raw.decode(errors="replace")):
        params, cmd, ch = m.group(1), m.group(2), m.group(3)
        if ch is not None:
            if ch == "\r": x = 0
            elif ch == "\n": y = min(y + 1, ROWS - 1)
            elif ch >= " " and x < COLS:
                grid[y][x] = ch; x += 1
        elif cmd == "H":
            p = [int(v) if v else 1 for v in (params or "1;1").split(";")] + [1]
            y, x = min(p[0], ROWS) - 1, min(p[1], COLS) - 1
        elif cmd == "J" and params in ("2", "3"):
            grid = [[" "] * COLS for _ in range(ROWS)]
        elif cmd == "K":
            for i in range(x, COLS): grid[y][i] = " "
    return "\n".join("".join(r).rstrip() for r in grid)
def pump(t):
    global raw
    if select.select([fd], [], [], t)[0]:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            chunk = b""
        if not chunk:
            return False
        raw += chunk
    return True
def until(what, test):
    end = time.time() + 15
    while not test(screen()):
        if time.time() > end or not pump(0.1):
            sys.stdout.write(screen()); sys.exit("timeout or end waiting for " + what)
def shows(text):
    until(repr(text), lambda s: text in s)
def lflag():
    return termios.tcgetattr(fd)[3]

# metrod is not running yet: top says so and keeps trying.
shows("metrod not running")
env = dict(os.environ, METRO_WEBHOOK_ADDR="127.0.0.1:0", METRO_CONFIG=config)
def start():
    return subprocess.Popen([metrod, "--state-dir", state], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
def publish(text):
    end = time.time() + 15
    while True:
        try:
            c = socket.socket(socket.AF_UNIX); c.connect(sock); break
        except OSError:
            if time.time() > end: sys.exit("metrod did not come up")
            time.sleep(0.05)
    c.sendall(json.dumps({"op": "publish", "req": 1, "event": {"line": "metro://telegram/300", "from": "metro://telegram/user/9", "text": text}}).encode() + b"\n")
    c.recv(65536); c.close()
daemon = start()
try:
    shows("metrod up")
    shows(" Lines (2) ")
    shows(" three ")
    if lflag() & (termios.ECHO | termios.ICANON):
        sys.exit("top runs without raw mode")
    publish("pty hello")
    shows("pty hello")
    shows(" Lines (3) ")
    os.write(fd, b"/telegram/300")
    shows("filter lines: telegram/300")
    os.write(fd, b"\r")
    shows(" Lines (1 of 3, filter: telegram/300) ")
    until("telegram/100 gone", lambda s: "telegram/100" not in s and "pty hello" in s)
    # metrod goes away and comes back: top says so, then follows again.
    daemon.send_signal(signal.SIGTERM); daemon.wait(15)
    until("metrod gone", lambda s: "metrod not running" in s or "metrod went away" in s)
    daemon = start()
    shows("metrod up")
    publish("back again")
    shows("back again")
    os.write(fd, b"q")
    while pump(1):
        pass
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    restored = lflag() & termios.ECHO and lflag() & termios.ICANON
    tail = raw[raw.rfind(b"\x1b[?1049h"):]
    print(screen())
    if code != 0: sys.exit("top exited with %d" % code)
    if not restored: sys.exit("raw mode left on")
    if b"\x1b[?1049l" not in tail or b"\x1b[?25h" not in tail:
        sys.exit("alternate screen not left or cursor not shown: %r" % raw[-200:])
finally:
    daemon.send_signal(signal.SIGTERM)
    daemon.wait(15)
"#;

#[test]
fn top_under_a_pseudo_terminal() {
    let mut d = Daemon::start();
    let (agent, _) = known_state(&d);
    drop(agent);
    d.stop();
    let before = durable_state(&d.dir);
    assert!(
        before.iter().any(|(f, _)| f.starts_with("cursors/")),
        "the known state has a cursor: {before:?}"
    );
    let mut cmd = Command::new("python3");
    cmd.arg("-c")
        .arg(PTY_SCRIPT)
        .arg(METROCTL)
        .arg(METROD)
        .arg(&d.dir)
        .arg(&d.socket)
        .arg(d.dir.with_extension("no-config.toml"));
    for v in [
        "METRO_AS",
        "METRO_SOCKET",
        "METRO_STATE_DIR",
        "METRO_TELEGRAM_TOKEN",
        "METRO_DISCORD_TOKEN",
        "CLAUDECODE",
        "CODEX_HOME",
        "METRO_USER_ID",
        "NOTIFY_SOCKET",
    ] {
        cmd.env_remove(v);
    }
    let out = cmd.output().expect("python3");
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{screen}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(screen.contains("pty hello"), "{screen}");
    // top moved no cursor and claimed nothing (its metrod has stopped and
    // flushed what it had).
    assert_eq!(durable_state(&d.dir), before);
    d.restart();
    let claims: Value = d.connect().ok(json!({"op": "claims"}));
    assert_eq!(
        claims["claims"],
        json!({"metro://telegram/100": OWNER}),
        "{claims}"
    );
}
