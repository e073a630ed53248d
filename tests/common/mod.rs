//! Test harness: the real `metrod` binary on a temp state dir, and a
//! blocking JSON-lines client on the real socket.

#![allow(dead_code)]

pub mod svc;

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub const METROD: &str = env!("CARGO_BIN_EXE_metrod");
pub const METROCTL: &str = env!("CARGO_BIN_EXE_metroctl");

/// How long a test waits for something that should happen at once.
pub const PATIENCE: Duration = Duration::from_secs(15);

pub struct Daemon {
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub stderr_path: PathBuf,
    child: Option<Child>,
    _tmp: Option<tempfile::TempDir>,
    args: Vec<String>,
    /// Extra environment for metrod (kept across restarts).
    env: Vec<(String, String)>,
}

impl Daemon {
    /// A daemon on a fresh temp state dir.
    pub fn start() -> Daemon {
        Self::start_with(&[])
    }

    pub fn start_with(args: &[&str]) -> Daemon {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("state");
        let mut d = Self::start_in(&dir, args);
        d._tmp = Some(tmp);
        d
    }

    /// A daemon on a fresh temp state dir with extra environment.
    pub fn start_env<K: AsRef<str>, V: AsRef<str>>(args: &[&str], env: &[(K, V)]) -> Daemon {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("state");
        let mut d = Self::start_in_env(&dir, args, env);
        d._tmp = Some(tmp);
        d
    }

    /// A daemon on `dir` (which may hold state from an earlier daemon).
    pub fn start_in(dir: &Path, args: &[&str]) -> Daemon {
        Self::start_in_env::<&str, &str>(dir, args, &[])
    }

    /// Same, with extra environment variables for metrod.
    pub fn start_in_env<K: AsRef<str>, V: AsRef<str>>(
        dir: &Path,
        args: &[&str],
        env: &[(K, V)],
    ) -> Daemon {
        let socket = args
            .iter()
            .position(|a| *a == "--socket")
            .map(|i| PathBuf::from(args[i + 1]))
            .unwrap_or_else(|| dir.join("metro.sock"));
        let mut d = Daemon {
            dir: dir.to_path_buf(),
            socket,
            stderr_path: dir.with_extension(format!("stderr.{}", unique())),
            child: None,
            _tmp: None,
            args: args.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.as_ref().to_string(), v.as_ref().to_string()))
                .collect(),
        };
        d.spawn();
        d
    }

    fn spawn(&mut self) {
        let stderr = std::fs::File::create(&self.stderr_path).expect("stderr file");
        let child = Command::new(METROD)
            .arg("--state-dir")
            .arg(&self.dir)
            .args(&self.args)
            .env_remove("METRO_SOCKET")
            .env_remove("METRO_STATE_DIR")
            // Never the real 8787: each test daemon's webhook listener takes
            // a free port (`webhook_url` finds it); `--webhook-addr` wins.
            .env("METRO_WEBHOOK_ADDR", "127.0.0.1:0")
            // Never the developer's own config file (a missing file is an
            // empty config; `--config` wins) or bot token.
            .env("METRO_CONFIG", self.dir.with_extension("no-config.toml"))
            .env_remove("METRO_TELEGRAM_TOKEN")
            .env_remove("METRO_TELEGRAM_API_URL")
            .env_remove("METRO_TELEGRAM_ALLOW")
            // Not under a service manager unless a test says so.
            .env_remove("NOTIFY_SOCKET")
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn metrod");
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(mut c) = Client::try_connect(&self.socket) {
                if c.try_request(json!({"op": "hello"})).is_some() {
                    return;
                }
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("metrod exited early ({status}): {}", self.stderr());
                }
            }
            assert!(
                Instant::now() < deadline,
                "metrod not ready: {}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    pub fn connect(&self) -> Client {
        Client::connect(&self.socket)
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// `http://127.0.0.1:<port>` of the webhook listener, from `stations`.
    pub fn webhook_url(&self) -> String {
        let st = self.connect().ok(json!({"op": "stations"}));
        let row = st["stations"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["name"] == "webhook"))
            .cloned()
            .expect("a webhook row in stations");
        row["url"]
            .as_str()
            .unwrap_or_else(|| panic!("webhook listener not running: {row}"))
            .to_string()
    }

    pub fn history_path(&self) -> PathBuf {
        self.dir.join("history.jsonl")
    }

    pub fn history(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(self.history_path()).unwrap_or_default();
        text.split_terminator('\n')
            .map(|l| serde_json::from_str(l).expect("log line is JSON"))
            .collect()
    }

    /// SIGTERM and wait.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("daemon running");
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        wait_timeout(&mut child, PATIENCE).expect("metrod did not stop on SIGTERM")
    }

    /// Waits for a daemon that was sent a signal by the test itself.
    pub fn stop_after_signal(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("daemon running");
        wait_timeout(&mut child, PATIENCE).expect("metrod did not stop")
    }

    /// kill -9.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same dir (after `stop` or `kill9`).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the daemon first");
        self.spawn();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
        let _ = std::fs::remove_file(&self.stderr_path);
    }
}

pub fn wait_timeout(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed) + std::process::id() as u64 * 1_000_000
}

/// A blocking protocol client. Frames that arrive while it waits for an
/// answer are kept for [`Client::frame`].
pub struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    next_req: u64,
    backlog: VecDeque<Value>,
    /// Every line received, for schema checks.
    pub received: Vec<String>,
    /// Every line sent.
    pub sent: Vec<String>,
}

impl Client {
    pub fn try_connect(path: &Path) -> std::io::Result<Client> {
        let s = UnixStream::connect(path)?;
        s.set_read_timeout(Some(PATIENCE))?;
        Ok(Client {
            reader: BufReader::new(s.try_clone()?),
            writer: s,
            next_req: 1,
            backlog: VecDeque::new(),
            received: Vec::new(),
            sent: Vec::new(),
        })
    }

    pub fn connect(path: &Path) -> Client {
        Self::try_connect(path).expect("connect to metrod")
    }

    pub fn stream(&self) -> &UnixStream {
        &self.writer
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("write to socket");
    }

    /// Sends without panicking; false when the daemon is gone.
    pub fn try_send(&mut self, v: &Value) -> bool {
        let line = format!("{v}\n");
        self.writer.write_all(line.as_bytes()).is_ok()
    }

    pub fn send(&mut self, v: &Value) {
        let line = serde_json::to_string(v).expect("json");
        self.sent.push(line.clone());
        self.send_raw(format!("{line}\n").as_bytes());
    }

    /// Reads one line; `None` on EOF or timeout.
    pub fn read_line(&mut self) -> Option<String> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) => {
                self.received.push(line.trim_end().to_string());
                Some(line)
            }
        }
    }

    fn read_value(&mut self) -> Option<Value> {
        let line = self.read_line()?;
        Some(serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad frame {line:?}: {e}")))
    }

    /// Sends `v` with a fresh `req` and returns its answer.
    pub fn request(&mut self, v: Value) -> Value {
        self.try_request(v).expect("no answer from metrod")
    }

    pub fn try_request(&mut self, mut v: Value) -> Option<Value> {
        let req = self.next_req;
        self.next_req += 1;
        v["req"] = json!(req);
        self.send(&v);
        self.answer_to(&json!(req))
    }

    /// Waits for the answer whose `req` is `req`, keeping other frames.
    pub fn answer_to(&mut self, req: &Value) -> Option<Value> {
        if let Some(i) = self
            .backlog
            .iter()
            .position(|f| f.get("req") == Some(req) && f.get("ok").is_some())
        {
            return self.backlog.remove(i);
        }
        loop {
            let f = self.read_value()?;
            if f.get("req") == Some(req) && f.get("ok").is_some() {
                return Some(f);
            }
            self.backlog.push_back(f);
        }
    }

    /// An answer that must be ok.
    pub fn ok(&mut self, v: Value) -> Value {
        let what = v.to_string();
        let a = self.request(v);
        assert_eq!(a["ok"], json!(true), "{what} -> {a}");
        a
    }

    /// An answer that must be an error with `code`; returns the error.
    pub fn err(&mut self, v: Value, code: &str) -> Value {
        let what = v.to_string();
        let a = self.request(v);
        assert_eq!(a["ok"], json!(false), "{what} -> {a}");
        assert_eq!(a["error"]["code"], json!(code), "{what} -> {a}");
        assert!(a["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
        a["error"].clone()
    }

    /// The next frame that is not an answer.
    pub fn frame(&mut self) -> Value {
        self.try_frame().expect("expected a frame from metrod")
    }

    pub fn try_frame(&mut self) -> Option<Value> {
        if let Some(i) = self.backlog.iter().position(|f| f.get("ok").is_none()) {
            return self.backlog.remove(i);
        }
        loop {
            let f = self.read_value()?;
            if f.get("ok").is_none() {
                return Some(f);
            }
            self.backlog.push_back(f);
        }
    }

    /// Waits `d` for a frame; `None` if none came.
    pub fn frame_within(&mut self, d: Duration) -> Option<Value> {
        if let Some(i) = self.backlog.iter().position(|f| f.get("ok").is_none()) {
            return self.backlog.remove(i);
        }
        self.writer.set_read_timeout(Some(d)).ok()?;
        let f = self.try_frame();
        self.writer.set_read_timeout(Some(PATIENCE)).ok()?;
        f
    }

    /// Subscribes; returns the sub id.
    pub fn subscribe(&mut self, mut v: Value) -> String {
        v["op"] = json!("subscribe");
        let a = self.ok(v);
        a["sub"].as_str().expect("sub id").to_string()
    }

    /// Event frames of a non-follow subscription up to its `end`; returns
    /// them and the end offset.
    pub fn drain(&mut self, sub: &str) -> (Vec<Value>, u64) {
        let mut events = Vec::new();
        loop {
            let f = self.frame();
            assert_eq!(f["sub"], json!(sub), "frame of another sub: {f}");
            if f["end"] == json!(true) {
                return (events, f["offset"].as_u64().expect("end offset"));
            }
            events.push(f);
        }
    }

    /// `n` event frames.
    pub fn events(&mut self, n: usize) -> Vec<Value> {
        (0..n).map(|_| self.frame()).collect()
    }

    /// True when the daemon closed the connection.
    pub fn closed(&mut self) -> bool {
        // A close with unread input in the daemon's queue arrives as a reset.
        let mut buf = [0u8; 1];
        match self.reader.read(&mut buf) {
            Ok(0) => true,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
            Ok(_) => false,
        }
    }
}

/// Publishes `event`; returns the answer.
pub fn publish(c: &mut Client, event: Value) -> Value {
    c.ok(json!({"op": "publish", "event": event}))
}

/// The texts a non-follow subscription delivers from the start (no acks).
pub fn seen(c: &mut Client, sub: Value) -> Vec<String> {
    let mut sub = sub;
    sub["since"] = json!("start");
    sub["ack"] = json!("none");
    let id = c.subscribe(sub);
    let (events, _) = c.drain(&id);
    texts(&events)
}

/// Runs metrod on `state` with the config file `cfg` until it exits (for a
/// config it refuses): no webhook listener, not under a service manager.
/// A metrod that accepts the config is stopped once its socket appears
/// (its status then has no exit code), so a test fails instead of hanging.
pub fn metrod_with_config(state: &Path, cfg: &Path) -> std::process::Output {
    let mut child = Command::new(METROD)
        .arg("--state-dir")
        .arg(state)
        .arg("--config")
        .arg(cfg)
        .env("METRO_WEBHOOK_ADDR", "off")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run metrod");
    let deadline = Instant::now() + PATIENCE;
    while child.try_wait().expect("wait for metrod").is_none() {
        if state.join("metro.sock").exists() || Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().expect("metrod's output")
}

/// The `text` of each event frame.
pub fn texts(frames: &[Value]) -> Vec<String> {
    frames
        .iter()
        .map(|f| f["event"]["text"].as_str().unwrap_or("").to_string())
        .collect()
}

/// `metroctl --socket <d's socket> args…`, with the identity and socket
/// variables of the test's own environment removed.
pub fn metroctl(d: &Daemon, args: &[&str]) -> Command {
    let mut c = Command::new(METROCTL);
    c.arg("--socket").arg(&d.socket).args(args);
    for v in [
        "METRO_AS",
        "METRO_NO_AUTO_CLAIM",
        "CLAUDECODE",
        "CODEX_HOME",
        "METRO_CODEX_RC",
        "METRO_USER_ID",
        "METRO_SOCKET",
    ] {
        c.env_remove(v);
    }
    c.stdin(Stdio::null());
    c
}

/// Runs a command that must succeed; returns its output.
pub fn run_ok(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().expect("run command");
    assert!(
        out.status.success(),
        "command failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Bytes a process has read so far (`rchar` of /proc/<pid>/io).
pub fn bytes_read(pid: i32) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).expect("/proc/<pid>/io");
    io.lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .and_then(|v| v.trim().parse().ok())
        .expect("rchar in /proc/<pid>/io")
}

/// A validator for one `$defs` entry of proto/metro.schema.json.
pub fn schema_validator(def: &str) -> jsonschema::Validator {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/proto/metro.schema.json"
    ))
    .expect("read the schema");
    let mut s: Value = serde_json::from_str(&text).expect("schema is JSON");
    s.as_object_mut().expect("an object").remove("anyOf");
    s["$ref"] = json!(format!("#/$defs/{def}"));
    jsonschema::validator_for(&s).expect("schema compiles")
}

/// Every line `c` sent and received, and every event in `d`'s log, is
/// what the schema says.
pub fn check_schema(c: &Client, d: &Daemon) {
    let requests = schema_validator("request");
    let frames = schema_validator("frame");
    let events = schema_validator("event");
    for (v, lines, what) in [
        (&requests, &c.sent, "request"),
        (&frames, &c.received, "frame"),
    ] {
        for l in lines {
            let value: Value = serde_json::from_str(l).expect("JSON");
            let errors: Vec<String> = v.iter_errors(&value).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "{what} {l}: {errors:?}");
        }
    }
    for l in std::fs::read_to_string(d.history_path())
        .expect("read the log")
        .lines()
    {
        let value: Value = serde_json::from_str(l).expect("JSON");
        assert!(events.is_valid(&value), "event {l}");
    }
}

/// `metroctl args…` against `d`, run to the end.
pub fn ctl_output(d: &Daemon, args: &[&str]) -> std::process::Output {
    metroctl(d, args).output().expect("run metroctl")
}

/// `metroctl args…` that must succeed; its stdout.
pub fn ctl_ok(d: &Daemon, args: &[&str]) -> String {
    let out = ctl_output(d, args);
    assert!(
        out.status.success(),
        "metroctl {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The `stations` row of station `name`.
pub fn station_row(d: &Daemon, name: &str) -> Value {
    let st = d.connect().ok(json!({"op": "stations"}));
    st["stations"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == name))
        .cloned()
        .unwrap_or_else(|| panic!("no {name} row in {st}"))
}

/// Waits (up to 40 s) until station `name`'s status satisfies `f`.
pub fn wait_station_status(d: &Daemon, name: &str, what: &str, f: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let s = station_row(d, name)["status"]
            .as_str()
            .unwrap_or("")
            .to_string();
        if f(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "{name} status never {what}; last {s:?}: {}",
            d.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Station `name`'s counters in `stats`.
pub fn station_counters(d: &Daemon, name: &str) -> Value {
    d.connect().ok(json!({"op": "stats"}))["stations"][name].clone()
}

/// Waits until counter `counter` of station `name` reaches `n`.
pub fn wait_station_counter(d: &Daemon, name: &str, counter: &str, n: u64) {
    let deadline = Instant::now() + PATIENCE;
    while station_counters(d, name)[counter].as_u64().unwrap_or(0) < n {
        assert!(
            Instant::now() < deadline,
            "{name} {counter} never reached {n}: {}",
            station_counters(d, name)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
