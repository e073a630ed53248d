//! Fuzzing the request parser and the connection state machine with
//! proptest, from a fixed seed so the normal suite is repeatable.
//!
//! Long runs: `METRO_FUZZ_CASES=20000 METRO_FUZZ_SEED=$RANDOM cargo test --release --test fuzz`
//! (see docs/broker.md, "Fuzzing").

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::*;
use metro::stations::webhook::verify;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::{json, Map, Value};

fn cases(default: u32) -> u32 {
    std::env::var("METRO_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn runner(default_cases: u32) -> TestRunner {
    let seed: u64 = std::env::var("METRO_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x6d65_7472_6f21);
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let config = Config {
        cases: cases(default_cases),
        failure_persistence: None,
        ..Config::default()
    };
    TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes))
}

/// JSON values of every type, nested a little.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u32>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        "[ -~]{0,12}".prop_map(Value::String),
        "\\PC{0,8}".prop_map(Value::String),
        prop_oneof![
            Just("telegram/1"),
            Just("metro://telegram/-100/7"),
            Just("metro://discord/42"),
            Just("webhook/x1"),
            Just("metro://claude/user/a"),
            Just("codex/user/b"),
            Just("start"),
            Just("tail"),
            Just("cursor"),
            Just("all"),
            Just("unclaimed"),
            Just("mine-only"),
            Just("explicit"),
            Just("none"),
            Just("s1"),
            Just(""),
            Just("metro://"),
            Just("telegram/x"),
        ]
        .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(("[a-z]{1,6}", inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

const FIELDS: &[&str] = &[
    "line",
    "as",
    "text",
    "from",
    "to",
    "kind",
    "mode",
    "since",
    "follow",
    "limit",
    "ack",
    "ackWaitMs",
    "maxDeliver",
    "cursor",
    "sub",
    "offset",
    "ifFree",
    "ephemeral",
    "messageId",
    "emoji",
    "replyTo",
    "noClaim",
    "event",
    "chat",
    "station",
    "includeWebhooks",
    "echo",
    "label",
    "secret",
    "id",
    "outDir",
    "client",
];

/// A request-shaped object: a real or unknown op and a random subset of
/// fields with random values (an `event` is usually an object with a line).
fn request() -> impl Strategy<Value = Value> {
    let op = prop_oneof![
        4 => prop::sample::select(metro::proto::OPS).prop_map(|s| json!(s)),
        1 => json_value(),
    ];
    let fields = prop::collection::vec((prop::sample::select(FIELDS), json_value()), 0..6);
    let event = prop::option::of((json_value(), json_value()).prop_map(|(line, text)| {
        let line = if line.is_string() {
            line
        } else {
            json!("telegram/5")
        };
        json!({"line": line, "text": text})
    }));
    (op, fields, event, any::<u16>()).prop_map(|(op, fields, event, req)| {
        let mut m = Map::new();
        m.insert("op".into(), op);
        for (k, v) in fields {
            // Keep subscriptions finite and modest so sessions end.
            if k == "follow" {
                continue;
            }
            m.insert(k.to_string(), v);
        }
        if let Some(e) = event {
            m.insert("event".into(), e);
        }
        m.insert("req".into(), json!(req));
        Value::Object(m)
    })
}

#[test]
fn the_request_parser_never_panics_and_round_trips() {
    let mut runner = runner(3000);
    let strategy = prop_oneof![
        request().prop_map(|v| v.to_string().into_bytes()),
        prop::collection::vec(any::<u8>(), 0..300),
        (request(), any::<usize>(), any::<u8>()).prop_map(|(v, at, b)| {
            let mut bytes = v.to_string().into_bytes();
            let i = at % bytes.len().max(1);
            if !bytes.is_empty() {
                bytes[i] = b;
            }
            bytes
        }),
    ];
    runner
        .run(&strategy, |bytes| {
            match metro::proto::parse_request(&bytes) {
                Ok((req, parsed)) => {
                    // What parsed serializes back to something that parses
                    // to the same op.
                    let again = parsed.to_value(req.as_ref()).to_string();
                    let (_, twice) =
                        metro::proto::parse_request(again.as_bytes()).map_err(|e| {
                            TestCaseError::fail(format!("re-parse failed: {}", e.error))
                        })?;
                    prop_assert_eq!(
                        std::mem::discriminant(&parsed),
                        std::mem::discriminant(&twice)
                    );
                }
                Err(f) => {
                    prop_assert!(!f.error.message.is_empty());
                }
            }
            Ok(())
        })
        .expect("parser property");
}

/// One chunk of a session.
#[derive(Debug, Clone)]
enum Chunk {
    Request(Value),
    Garbage(Vec<u8>),
    Blank,
    /// A request split over two writes.
    Split(Value, usize),
}

fn session() -> impl Strategy<Value = (Vec<Chunk>, bool, bool)> {
    let chunk = prop_oneof![
        6 => request().prop_map(Chunk::Request),
        2 => prop::collection::vec(any::<u8>().prop_filter("no newline", |b| *b != b'\n'), 1..80).prop_map(Chunk::Garbage),
        1 => Just(Chunk::Blank),
        2 => (request(), any::<usize>()).prop_map(|(v, at)| Chunk::Split(v, at)),
    ];
    (
        prop::collection::vec(chunk, 1..12),
        any::<bool>(),
        prop::bool::weighted(0.15),
    )
}

#[test]
fn the_connection_state_machine_survives_random_sessions() {
    const MAX: usize = 4096;
    let d = Daemon::start_with(&["--max-request-bytes", "4096", "--fsync", "never"]);
    let mut runner = runner(48);
    runner
        .run(&session(), |(chunks, leave_mid_line, oversize)| {
            let s = UnixStream::connect(&d.socket).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            let mut w = s.try_clone().unwrap();
            let mut expected = 0usize;
            for ch in &chunks {
                match ch {
                    Chunk::Request(v) => {
                        w.write_all(format!("{v}\n").as_bytes()).unwrap();
                        expected += 1;
                    }
                    Chunk::Garbage(g) => {
                        w.write_all(g).unwrap();
                        w.write_all(b"\n").unwrap();
                        if !g.iter().all(|b| b.is_ascii_whitespace()) {
                            expected += 1;
                        }
                    }
                    Chunk::Blank => w.write_all(b"\r\n").unwrap(),
                    Chunk::Split(v, at) => {
                        let line = format!("{v}\n");
                        let at = at % line.len();
                        w.write_all(&line.as_bytes()[..at]).unwrap();
                        w.flush().unwrap();
                        std::thread::sleep(Duration::from_millis(1));
                        w.write_all(&line.as_bytes()[at..]).unwrap();
                        expected += 1;
                    }
                }
            }
            if oversize {
                // The connection ends here with too_large.
                let _ = w.write_all(&vec![b'x'; MAX + 10]);
                let _ = w.write_all(b"\n");
                expected += 1;
            } else if leave_mid_line {
                w.write_all(
                    b"{\"op\":\"publish\",\"event\":{\"line\":\"telegram/1\",\"text\":\"never",
                )
                .unwrap();
            }
            let _ = w.shutdown(std::net::Shutdown::Write);
            let mut answers = 0usize;
            let mut too_large = false;
            for line in BufReader::new(s).lines() {
                let Ok(line) = line else { break };
                let f: Value = serde_json::from_str(&line).map_err(|e| {
                    TestCaseError::fail(format!("daemon sent non-JSON {line:?}: {e}"))
                })?;
                if f.get("ok").is_some() {
                    answers += 1;
                    if f["error"]["code"] == "too_large" {
                        too_large = true;
                    }
                }
            }
            prop_assert_eq!(answers, expected, "one answer per complete line");
            prop_assert_eq!(too_large, oversize);
            // The daemon is alive and the log whole.
            let mut c = d.connect();
            c.ok(json!({"op": "hello"}));
            let raw = std::fs::read(d.history_path()).unwrap();
            prop_assert!(raw.is_empty() || raw.last() == Some(&b'\n'));
            let text = String::from_utf8(raw).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(!text.contains("never"), "a line left unterminated was run");
            for l in text.lines() {
                let v: Value = serde_json::from_str(l)
                    .map_err(|e| TestCaseError::fail(format!("torn log line: {e}")))?;
                prop_assert!(v["id"].is_string() && v["line"].is_string());
            }
            Ok(())
        })
        .expect("connection property");
}

/// A config file: mostly valid lines, keys and values scrambled, and one
/// line carrying a secret token somewhere.
fn config_text() -> impl Strategy<Value = String> {
    let line = prop_oneof![
        Just("[telegram]".to_string()),
        Just("[discord]".to_string()),
        Just("[telegram".to_string()),
        Just("allow = [\"1\", \"*\"]".to_string()),
        Just("api_url = \"http://127.0.0.1:1\"".to_string()),
        Just(format!("token = \"{FUZZ_TOKEN}\"")),
        Just(format!("token = {FUZZ_TOKEN}")),
        Just(format!("bot_token = \"{FUZZ_TOKEN}\"")),
        Just(format!("token = [\"{FUZZ_TOKEN}\"]")),
        Just(FUZZ_TOKEN.to_string()),
        "[ -~]{0,40}",
        "\\PC{0,20}",
    ];
    prop::collection::vec(line, 0..8).prop_map(|l| l.join("\n"))
}

const FUZZ_TOKEN: &str = "123456789:AAHfuzzSECRETfuzzSECRETfuzzSECRET12";

#[test]
fn the_config_parser_never_panics_and_never_quotes_a_value() {
    let mut runner = runner(2000);
    runner
        .run(&config_text(), |text| {
            if let Err(e) = metro::config::parse_text(&text) {
                prop_assert!(!e.contains("AAHfuzz"), "{e}");
                prop_assert!(e.starts_with("line "), "{e}");
            }
            Ok(())
        })
        .unwrap();
}

// ---- The webhook HTTP path ----

/// Where a fuzzed request goes: resolved against the daemon's endpoints.
#[derive(Debug, Clone)]
enum Target {
    Signed,
    Open,
    Unknown,
    Raw(String),
}

/// How the body is framed.
#[derive(Debug, Clone)]
enum Framing {
    Length,
    /// A `Content-Length` off by this much (or negative).
    WrongLength(i64),
    /// Two `Content-Length` headers that disagree.
    TwoLengths,
    /// Chunks of this many bytes.
    Chunked(usize),
    /// Chunked with a broken size line or no last chunk.
    BadChunked(String, bool),
    /// Both chunked and a length.
    Both,
    None,
}

/// The signature or token of a request.
#[derive(Debug, Clone)]
enum Credential {
    None,
    Valid,
    Wrong,
    Malformed(String),
    Bearer,
    BearerWrong(String),
}

#[derive(Debug, Clone)]
struct RawRequest {
    method: String,
    target: Target,
    version: String,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    body: Vec<u8>,
    framing: Framing,
    credential: Credential,
    lf_only: bool,
    /// (position, byte, 0 = replace, 1 = insert, 2 = delete)
    mutations: Vec<(prop::sample::Index, u8, u8)>,
    truncate: Option<prop::sample::Index>,
    /// Half-close after the request (the listener drops the connection
    /// at EOF: a sender that hangs up); else a second request follows
    /// with `connection: close` and the answers are read to the end.
    hang_up: bool,
}

const HOOK_SECRET: &str = "fuzz-secret-0123456789";

fn header() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
    let name = prop_oneof![
        Just("content-type"),
        Just("x-github-event"),
        Just("x-github-delivery"),
        Just("webhook-id"),
        Just("idempotency-key"),
        Just("user-agent"),
        Just("host"),
        Just("expect"),
        Just("connection"),
        Just("upgrade"),
        Just("transfer-encoding"),
        Just("content-encoding"),
        Just("x-hub-signature-256"),
        Just("authorization"),
    ]
    .prop_map(|s| s.as_bytes().to_vec());
    let value = prop_oneof![
        Just("application/json".to_string()),
        Just("text/plain; charset=utf-8".to_string()),
        Just("application/x-www-form-urlencoded".to_string()),
        Just("100-continue".to_string()),
        Just("close".to_string()),
        Just("keep-alive".to_string()),
        Just("h2c".to_string()),
        Just("gzip".to_string()),
        Just("chunked".to_string()),
        "[ -~]{0,40}",
        "\\PC{0,12}",
    ]
    .prop_map(String::into_bytes);
    prop_oneof![
        12 => (name, value),
        4 => ("[a-zA-Z0-9-]{1,24}".prop_map(String::into_bytes), "[ -~]{0,40}".prop_map(String::into_bytes)),
        1 => ("[!-~]{1,24}".prop_map(String::into_bytes), value_bytes()),
        1 => (prop::collection::vec(any::<u8>(), 0..16), value_bytes()),
    ]
}

fn value_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..32)
}

fn raw_request() -> impl Strategy<Value = RawRequest> {
    let method = prop_oneof![
        8 => Just("POST".to_string()),
        1 => Just("GET".to_string()),
        1 => Just("PUT".to_string()),
        1 => Just("HEAD".to_string()),
        1 => Just("OPTIONS".to_string()),
        1 => "[!-~]{0,10}",
    ];
    let target = prop_oneof![
        4 => Just(Target::Signed),
        3 => Just(Target::Open),
        1 => Just(Target::Unknown),
        1 => prop_oneof![
            Just("/".to_string()),
            Just("/hooks/".to_string()),
            Just("/hooks/../hooks".to_string()),
            Just("*".to_string()),
            Just("http://127.0.0.1/hooks/x".to_string()),
            "/[!-~]{0,40}",
            "[ -~]{0,20}",
            Just(format!("/{}", "a".repeat(9000))),
        ]
        .prop_map(Target::Raw),
    ];
    let version = prop_oneof![
        16 => Just("HTTP/1.1".to_string()),
        2 => Just("HTTP/1.0".to_string()),
        1 => Just("HTTP/2.0".to_string()),
        1 => Just("HTTP/0.9".to_string()),
        1 => "[ -~]{0,10}",
    ];
    let body = prop_oneof![
        4 => json_value().prop_map(|v| v.to_string().into_bytes()),
        2 => "\\PC{0,200}".prop_map(String::into_bytes),
        2 => prop::collection::vec(any::<u8>(), 0..600),
        1 => Just(vec![b'['; 5000]),
        1 => Just(Vec::new()),
    ];
    let framing = prop_oneof![
        10 => Just(Framing::Length),
        1 => (-8i64..8).prop_map(Framing::WrongLength),
        1 => Just(Framing::TwoLengths),
        4 => (1usize..64).prop_map(Framing::Chunked),
        1 => ("[ -~]{0,12}", any::<bool>()).prop_map(|(s, end)| Framing::BadChunked(s, end)),
        1 => Just(Framing::Both),
        1 => Just(Framing::None),
    ];
    let credential = prop_oneof![
        4 => Just(Credential::Valid),
        2 => Just(Credential::None),
        1 => Just(Credential::Wrong),
        1 => "[ -~]{0,80}".prop_map(Credential::Malformed),
        2 => Just(Credential::Bearer),
        1 => "[ -~]{0,30}".prop_map(Credential::BearerWrong),
    ];
    let mutations = prop_oneof![
        8 => Just(Vec::new()),
        1 => prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..6),
    ];
    let truncate = prop_oneof![8 => Just(None), 1 => any::<prop::sample::Index>().prop_map(Some)];
    (
        method,
        target,
        version,
        prop::collection::vec(header(), 0..5),
        body,
        framing,
        credential,
        prop::bool::weighted(0.1),
        mutations,
        truncate,
        any::<bool>(),
    )
        .prop_map(
            |(
                method,
                target,
                version,
                headers,
                body,
                framing,
                credential,
                lf_only,
                mutations,
                truncate,
                hang_up,
            )| {
                RawRequest {
                    method,
                    target,
                    version,
                    headers,
                    body,
                    framing,
                    credential,
                    lf_only,
                    mutations,
                    truncate,
                    hang_up,
                }
            },
        )
}

/// The bytes of `r` as sent to the listener.
fn encode(r: &RawRequest, signed: &str, open: &str) -> Vec<u8> {
    let eol: &[u8] = if r.lf_only { b"\n" } else { b"\r\n" };
    let target = match &r.target {
        Target::Signed => format!("/hooks/{signed}"),
        Target::Open => format!("/hooks/{open}"),
        Target::Unknown => "/hooks/wh_0000000000000000".to_string(),
        Target::Raw(t) => t.clone(),
    };
    let mut out = Vec::new();
    out.extend_from_slice(format!("{} {target} {}", r.method, r.version).as_bytes());
    out.extend_from_slice(eol);
    let mut head = |k: &[u8], v: &[u8]| {
        out.extend_from_slice(k);
        out.extend_from_slice(b": ");
        out.extend_from_slice(v);
        out.extend_from_slice(eol);
    };
    head(b"host", b"127.0.0.1");
    for (k, v) in &r.headers {
        head(k, v);
    }
    let sig = verify::sign(HOOK_SECRET, &r.body);
    match &r.credential {
        Credential::None => {}
        Credential::Valid => head(b"x-hub-signature-256", sig.as_bytes()),
        Credential::Wrong => head(
            b"x-hub-signature-256",
            verify::sign("not the secret", &r.body).as_bytes(),
        ),
        Credential::Malformed(s) => head(b"x-hub-signature-256", s.as_bytes()),
        Credential::Bearer => head(b"authorization", format!("Bearer {HOOK_SECRET}").as_bytes()),
        Credential::BearerWrong(s) => head(b"authorization", format!("Bearer {s}").as_bytes()),
    }
    let n = r.body.len();
    let mut body = r.body.clone();
    let chunked = |size: usize| {
        let mut b = Vec::new();
        for c in r.body.chunks(size.max(1)) {
            b.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
            b.extend_from_slice(c);
            b.extend_from_slice(b"\r\n");
        }
        b.extend_from_slice(b"0\r\n\r\n");
        b
    };
    match &r.framing {
        Framing::Length => head(b"content-length", n.to_string().as_bytes()),
        Framing::WrongLength(d) => head(b"content-length", (n as i64 + d).to_string().as_bytes()),
        Framing::TwoLengths => {
            head(b"content-length", n.to_string().as_bytes());
            head(b"content-length", (n + 1).to_string().as_bytes());
        }
        Framing::Chunked(size) => {
            head(b"transfer-encoding", b"chunked");
            body = chunked(*size);
        }
        Framing::BadChunked(size_line, end) => {
            head(b"transfer-encoding", b"chunked");
            body = format!("{size_line}\r\n").into_bytes();
            body.extend_from_slice(&r.body);
            if *end {
                body.extend_from_slice(b"\r\n0\r\n\r\n");
            }
        }
        Framing::Both => {
            head(b"transfer-encoding", b"chunked");
            head(b"content-length", n.to_string().as_bytes());
            body = chunked(16);
        }
        Framing::None => {}
    }
    out.extend_from_slice(eol);
    out.extend_from_slice(&body);
    for (at, byte, op) in &r.mutations {
        if out.is_empty() {
            break;
        }
        let i = at.index(out.len());
        match op {
            0 => out[i] = *byte,
            1 => out.insert(i, *byte),
            _ => {
                out.remove(i);
            }
        }
    }
    if let Some(t) = &r.truncate {
        let keep = t.index(out.len() + 1);
        out.truncate(keep);
    }
    out
}

/// Sends `bytes` on a fresh connection, half-closes it if `hang_up`, and
/// reads until the listener closes; the answer, if any.
fn exchange(addr: &str, bytes: &[u8], hang_up: bool) -> Result<Vec<u8>, TestCaseError> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr)
        .map_err(|e| TestCaseError::fail(format!("connect to the webhook port: {e}")))?;
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    // The listener may answer and close before reading everything (413,
    // 400): a failed write is part of the game.
    let _ = s.write_all(bytes);
    if hang_up {
        let _ = s.shutdown(std::net::Shutdown::Write);
    }
    let mut answer = Vec::new();
    match s.read_to_end(&mut answer) {
        Ok(_) => Ok(answer),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(answer),
        Err(e) => Err(TestCaseError::fail(format!(
            "the listener neither answered nor closed within {PATIENCE:?}: {e}"
        ))),
    }
}

#[test]
fn the_webhook_listener_survives_random_http_requests() {
    let d = Daemon::start_with(&[
        "--fsync",
        "never",
        "--webhook-max-body",
        "4096",
        "--webhook-header-timeout",
        "1s",
        "--webhook-body-timeout",
        "1s",
    ]);
    let mut c = d.connect();
    let signed = c.ok(json!({"op": "webhookAdd", "label": "signed", "secret": HOOK_SECRET}));
    let open = c.ok(json!({"op": "webhookAdd", "label": "open"}));
    let (signed, open) = (
        signed["id"].as_str().unwrap().to_string(),
        open["id"].as_str().unwrap().to_string(),
    );
    let addr = d.webhook_url().strip_prefix("http://").unwrap().to_string();
    let c = std::cell::RefCell::new(c);
    let read_to = std::cell::Cell::new(0usize);
    let round = std::cell::Cell::new(0u64);
    let mut runner = runner(200);
    runner
        .run(&raw_request(), |r| {
            let mut bytes = encode(&r, &signed, &open);
            if !r.hang_up {
                bytes.extend_from_slice(b"GET /end HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
            }
            let answer = exchange(&addr, &bytes, r.hang_up)?;
                        prop_assert!(
                answer.is_empty() || answer.starts_with(b"HTTP/1."),
                "not an HTTP/1 answer: {:?}",
                String::from_utf8_lossy(&answer[..answer.len().min(80)])
            );
            // The daemon still answers on its socket.
            c.borrow_mut().ok(json!({"op": "hello"}));
            // A valid signed delivery afterwards is stored exactly once.
            round.set(round.get() + 1);
            let mark = format!("fuzz-check-{}", round.get());
            let body = json!({"check": mark}).to_string();
            let check = format!(
                "POST /hooks/{signed} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
                 x-github-delivery: {mark}\r\nx-hub-signature-256: {}\r\ncontent-length: {}\r\n\
                 connection: close\r\n\r\n{body}",
                verify::sign(HOOK_SECRET, body.as_bytes()),
                body.len()
            );
            let answer = exchange(&addr, check.as_bytes(), false)?;
            prop_assert!(
                answer.starts_with(b"HTTP/1.1 202"),
                "the check delivery: {}",
                String::from_utf8_lossy(&answer)
            );
            // The log is whole: every line since the last case parses.
            let new = {
                use std::io::{Read, Seek, SeekFrom};
                let mut f = std::fs::File::open(d.history_path()).unwrap();
                if f.metadata().unwrap().len() < read_to.get() as u64 {
                    read_to.set(0); // rolled
                }
                f.seek(SeekFrom::Start(read_to.get() as u64)).unwrap();
                let mut new = Vec::new();
                f.read_to_end(&mut new).unwrap();
                new
            };
            prop_assert!(new.is_empty() || new.last() == Some(&b'\n'), "torn log tail");
            let text = std::str::from_utf8(&new).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let mut stored = 0;
            for l in text.lines() {
                let v: Value = serde_json::from_str(l)
                    .map_err(|e| TestCaseError::fail(format!("torn log line: {e}: {l:?}")))?;
                prop_assert!(v["id"].is_string() && v["line"].is_string());
                if v["payload"]["check"] == mark.as_str() {
                    stored += 1;
                }
            }
            prop_assert_eq!(stored, 1, "the check delivery {} stored once", mark);
            read_to.set(read_to.get() + new.len());
            Ok(())
        })
        .expect("webhook property");
    // The listener is still there for a normal client.
    assert!(d.webhook_url().starts_with("http://"));
}
