//! `since` as a time: a log with known `ts` (written before metrod starts,
//! partly in a rolled segment) and subscriptions from before, between and
//! after its events, over the real socket; a bad time; and metroctl's
//! `--since` forms (a duration, a time) on `tail` and `history`.

mod common;

use std::path::Path;

use common::*;
use serde_json::{json, Value};

/// `ts` of the fixture's event `i`: 2026-01-01T00:00Z plus `i` minutes.
fn ts(i: usize) -> String {
    format!("2026-01-01T{:02}:{:02}:00.000Z", i / 60, i % 60)
}

/// Writes 400 events one minute apart (about 100 KiB: enough for the
/// search to bisect before it scans): 0..200 in a rolled segment, 200..400 in
/// `history.jsonl`. Returns each event's start offset and the log end.
fn fixture(dir: &Path) -> (Vec<u64>, u64) {
    std::fs::create_dir_all(dir).unwrap();
    let mut files = [Vec::new(), Vec::new()];
    let mut starts = Vec::new();
    let mut pos = 0u64;
    for i in 0..400 {
        let line = json!({
            "id": format!("msg_{i:017x}"), "ts": ts(i), "station": "telegram",
            "kind": "inbound", "line": "metro://telegram/100",
            "from": "metro://telegram/user/1", "to": "metro://telegram/100",
            "text": format!("e{i}"),
        })
        .to_string()
            + "\n";
        starts.push(pos);
        pos += line.len() as u64;
        files[i / 200].extend_from_slice(line.as_bytes());
    }
    let seg_len = files[0].len();
    std::fs::write(dir.join("history.00000000000000000000.jsonl"), &files[0]).unwrap();
    std::fs::write(dir.join("history.base"), seg_len.to_string()).unwrap();
    std::fs::write(dir.join("history.jsonl"), &files[1]).unwrap();
    (starts, pos)
}

fn texts_from(c: &mut Client, since: &str) -> (u64, Vec<String>) {
    let a = c.ok(json!({"op": "subscribe", "since": since, "mode": "all"}));
    let sub = a["sub"].as_str().unwrap().to_string();
    let (frames, _) = c.drain(&sub);
    let texts = frames
        .iter()
        .map(|f| f["event"]["text"].as_str().unwrap_or("").to_string())
        .collect();
    (a["offset"].as_u64().unwrap(), texts)
}

fn e(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("e{i}")).collect()
}

#[test]
fn since_a_time_starts_at_the_first_event_at_or_after_it_across_segments() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    let (starts, end) = fixture(&dir);
    assert!(end > 64 << 10, "big enough to bisect: {end}");
    let d = Daemon::start_in(&dir, &[]);
    let mut c = d.connect();
    assert_eq!(c.ok(json!({"op": "stats"}))["segments"], json!(1));

    // Before everything: from the first event, through the segment and on.
    assert_eq!(texts_from(&mut c, "2025-12-31T23:00:00Z"), (0, e(0..400)));
    // Exactly an event's ts, in the segment; and in another zone.
    assert_eq!(texts_from(&mut c, &ts(7)), (starts[7], e(7..400)));
    assert_eq!(
        texts_from(&mut c, "2026-01-01T01:07:00+01:00"),
        (starts[7], e(7..400))
    );
    // Between two events: the next one.
    assert_eq!(
        texts_from(&mut c, "2026-01-01T00:07:30.5Z"),
        (starts[8], e(8..400))
    );
    // The last event of the segment, the first of the active file.
    assert_eq!(texts_from(&mut c, &ts(199)), (starts[199], e(199..400)));
    assert_eq!(
        texts_from(&mut c, "2026-01-01T03:19:00.001Z"),
        (starts[200], e(200..400))
    );
    assert_eq!(texts_from(&mut c, &ts(333)), (starts[333], e(333..400)));
    // After everything: the end, nothing delivered.
    assert_eq!(texts_from(&mut c, "2026-06-01T00:00:00Z"), (end, vec![]));

    // Events metrod writes now are found after the old ones.
    publish(
        &mut c,
        json!({"line": "metro://telegram/100", "text": "live"}),
    );
    assert_eq!(
        texts_from(&mut c, "2026-06-01T00:00:00Z"),
        (end, vec!["live".to_string()])
    );
    check_schema(&c, &d);
}

#[test]
fn a_bad_time_is_a_bad_request_that_says_what_since_takes() {
    let d = Daemon::start();
    let mut c = d.connect();
    for bad in ["2026-13-45T00:00:00Z", "yesterday", "2026-01-01", "-5"] {
        let err = c.err(json!({"op": "subscribe", "since": bad}), "bad_request");
        let msg = err["message"].as_str().unwrap();
        assert!(
            msg.contains("RFC 3339") && msg.contains(bad),
            "{bad}: {msg}"
        );
    }
    // The connection and the daemon are fine.
    c.ok(json!({"op": "hello"}));
}

fn lines_out(out: &std::process::Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

#[test]
fn metroctl_since_takes_offsets_words_durations_and_times() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    let (starts, _) = fixture(&dir);
    let d = Daemon::start_in(&dir, &[]);
    let mut c = d.connect();
    publish(
        &mut c,
        json!({"line": "metro://telegram/100", "text": "live"}),
    );
    let text = |v: &Value| v["text"].as_str().unwrap_or("").to_string();
    let tail = |since: &str| {
        let out = run_ok(&mut metroctl(
            &d,
            &["tail", "--all", "--json", "--since", since],
        ));
        lines_out(&out).iter().map(text).collect::<Vec<_>>()
    };
    // A duration: only the event written just now is that recent.
    assert_eq!(tail("10m"), vec!["live"]);
    assert_eq!(tail("1h 30m"), vec!["live"]);
    // A time, an offset, start.
    assert_eq!(tail(&ts(398)), ["e398", "e399", "live"]);
    assert_eq!(tail(&starts[399].to_string()), ["e399", "live"]);
    assert_eq!(tail("start").len(), 401);
    assert_eq!(tail("tail"), Vec::<String>::new());

    // history takes the same times and durations (newest first).
    let history = |since: &str| {
        let out = run_ok(&mut metroctl(&d, &["history", "--json", "--since", since]));
        lines_out(&out).iter().map(text).collect::<Vec<_>>()
    };
    assert_eq!(history("3d"), vec!["live"]);
    assert_eq!(history(&ts(398)), ["live", "e399", "e398"]);

    // A bad value says which forms there are.
    let out = metroctl(&d, &["tail", "--since", "soon"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--since") && err.contains("10m") && err.contains("RFC 3339"),
        "{err}"
    );
}
