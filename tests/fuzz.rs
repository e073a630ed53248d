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
