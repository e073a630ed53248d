//! Segments and retention: global offsets across rolls, history and replay
//! across files, a roll interrupted by a crash, deletion by size and age,
//! and the `gap` frame for a subscriber whose cursor was deleted.

mod common;

use std::process::Command;

use common::*;
use serde_json::{json, Value};

fn segment_files(d: &Daemon) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(&d.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("history.0"))
        .collect();
    v.sort();
    v
}

fn fill(c: &mut Client, from: usize, n: usize) -> Vec<u64> {
    let pad = "s".repeat(200);
    (from..from + n)
        .map(|i| {
            publish(
                c,
                json!({"line": "telegram/1", "text": format!("{i} {pad}")}),
            )["offset"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

/// The global offset where `history.jsonl` starts (`history.base`).
fn read_base(d: &Daemon) -> u64 {
    match std::fs::read_to_string(d.dir.join("history.base")) {
        Ok(s) => s.trim().parse().unwrap(),
        Err(_) => 0,
    }
}

/// The start offsets of the rolled segments on disk, oldest first.
fn segment_starts(d: &Daemon) -> Vec<u64> {
    segment_files(d)
        .iter()
        .map(|s| {
            s.trim_start_matches("history.")
                .trim_end_matches(".jsonl")
                .parse()
                .unwrap()
        })
        .collect()
}

/// The number an event's text starts with.
fn number(e: &Value) -> usize {
    e["text"]
        .as_str()
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// The number of an event frame's event.
fn index(f: &Value) -> usize {
    number(&f["event"])
}

#[test]
fn offsets_stay_global_across_rolls_and_restarts() {
    let mut d = Daemon::start_with(&["--segment-bytes", "8192", "--fsync", "never"]);
    let mut c = d.connect();
    let offs = fill(&mut c, 0, 200);
    // The entry that fills the active file is answered before its roll:
    // wait until the last roll (known from the offsets) has written
    // history.base, its final step.
    let mut rolled_at = 0;
    for o in &offs {
        if o - rolled_at >= 8192 {
            rolled_at = *o;
        }
    }
    let deadline = std::time::Instant::now() + PATIENCE;
    while read_base(&d) != rolled_at {
        assert!(
            std::time::Instant::now() < deadline,
            "never rolled at {rolled_at}"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let segs = segment_files(&d);
    assert!(segs.len() >= 5, "rolled into segments: {segs:?}");
    // Each segment is named by its first global offset, which is an offset
    // some publish answered (the end of the entry before it).
    for s in &segs {
        let start: u64 = s
            .trim_start_matches("history.")
            .trim_end_matches(".jsonl")
            .parse()
            .unwrap();
        assert!(start == 0 || offs.contains(&start), "{s}");
    }
    let active = std::fs::metadata(d.history_path()).unwrap().len();
    assert!(active < 8192 + 300);
    let base: u64 = std::fs::read_to_string(d.dir.join("history.base"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(base + active, *offs.last().unwrap());

    // Replay from the start crosses every file, in order, with the offsets
    // the publishers were given.
    let s = c.subscribe(json!({"since": "start"}));
    let (ev, end) = c.drain(&s);
    assert_eq!(
        ev.iter().map(index).collect::<Vec<_>>(),
        (0..200).collect::<Vec<_>>()
    );
    assert_eq!(
        ev.iter()
            .map(|f| f["offset"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        offs
    );
    assert_eq!(end, *offs.last().unwrap());
    // Start in the middle of an old segment.
    let s = c.subscribe(json!({"since": offs[49]}));
    assert_eq!(index(&c.drain(&s).0[0]), 50);
    c.err(
        json!({"op": "subscribe", "since": offs[49] + 3}),
        "bad_request",
    );
    // history reads backwards across files.
    let h = c.ok(json!({"op": "history", "limit": 1000}));
    let got: Vec<usize> = h["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(number)
        .collect();
    assert_eq!(got, (0..200).rev().collect::<Vec<_>>());
    // A cursor written before later rolls still means the same event.
    let s = c.subscribe(json!({"cursor": "early", "limit": 30}));
    c.drain(&s);
    fill(&mut c, 200, 100);
    drop(c);
    assert!(d.stop().success());
    d.restart();
    let mut c = d.connect();
    let s = c.subscribe(json!({"cursor": "early", "limit": 1}));
    assert_eq!(index(&c.drain(&s).0[0]), 30);
    let a = publish(&mut c, json!({"line": "telegram/1", "text": "300 x"}));
    let st = c.ok(json!({"op": "stats"}));
    assert_eq!(st["logBytes"], a["offset"]);
    assert_eq!(st["oldestOffset"], json!(0));
    assert!(st["segments"].as_u64().unwrap() >= 8);
}

#[test]
fn a_roll_cut_short_by_a_crash_is_repaired() {
    let mut d = Daemon::start_with(&["--segment-bytes", "8192"]);
    let mut c = d.connect();
    let offs = fill(&mut c, 0, 50);
    drop(c);
    d.kill9();
    // Crash after the rename, before history.jsonl was recreated and
    // history.base written.
    let active_base: u64 = std::fs::read_to_string(d.dir.join("history.base"))
        .map(|s| s.trim().parse().unwrap())
        .unwrap_or(0);
    std::fs::rename(
        d.history_path(),
        d.dir.join(format!("history.{active_base:020}.jsonl")),
    )
    .unwrap();
    d.restart();
    let mut c = d.connect();
    let st = c.ok(json!({"op": "stats"}));
    assert_eq!(st["logBytes"].as_u64(), Some(*offs.last().unwrap()));
    let a = fill(&mut c, 50, 1);
    assert!(a[0] > *offs.last().unwrap());
    let s = c.subscribe(json!({"since": "start"}));
    assert_eq!(
        c.drain(&s).0.iter().map(index).collect::<Vec<_>>(),
        (0..51).collect::<Vec<_>>()
    );
}

#[test]
fn retention_by_size_deletes_old_segments_and_reports_the_gap() {
    let d = Daemon::start_with(&[
        "--segment-bytes",
        "8192",
        "--retain-bytes",
        "32K",
        "--fsync",
        "never",
    ]);
    let mut c = d.connect();
    let mut offs = fill(&mut c, 0, 20);
    // A durable cursor in what will be deleted.
    let s = c.subscribe(json!({"cursor": "slow", "limit": 5}));
    c.drain(&s);
    let slow_at = offs[4];
    // After every roll, retention keeps exactly the newest segments that fit
    // in the limit: no more (the limit holds) and no fewer (adding back the
    // newest deleted segment would break it).
    let limit = 32 * 1024;
    let mut rolled: Vec<(u64, u64)> = Vec::new(); // every segment rolled: (start, len)
                                                  // An answer follows the roll its append made due: the first 20 entries
                                                  // (≈ 8.3 KB) already rolled once.
    let mut base = read_base(&d);
    assert!(
        base > 0 && base < 2 * 8192,
        "one roll in the first fill: {base}"
    );
    rolled.push((0, base));
    let (mut checked, mut after_deletion) = (0, 0);
    for i in 20..420 {
        let prev = *offs.last().unwrap();
        let o = fill(&mut c, i, 1)[0];
        offs.push(o);
        // The entry before this one filled the active file: its roll and
        // the retention after it finished before this one was written (and
        // this one, only a few hundred bytes in, rolls nothing).
        if prev - base < 8192 {
            continue;
        }
        rolled.push((base, prev - base));
        base = prev;
        assert_eq!(read_base(&d), base, "rolled at the entry that filled it");
        let kept = segment_files(&d);
        let starts = segment_starts(&d);
        let kept_bytes: u64 = starts
            .iter()
            .map(|st| {
                rolled
                    .iter()
                    .find(|r| r.0 == *st)
                    .expect("a rolled segment")
                    .1
            })
            .sum();
        assert!(kept_bytes <= limit, "more than the limit kept: {kept:?}");
        let first = rolled
            .iter()
            .position(|r| r.0 == starts[0])
            .expect("oldest kept segment was rolled");
        if first > 0 {
            assert!(
                kept_bytes + rolled[first - 1].1 > limit,
                "segment {} was deleted although it fit in the limit (kept {kept_bytes} bytes)",
                rolled[first - 1].0
            );
            after_deletion += 1;
        }
        for (name, start) in kept.iter().zip(&starts) {
            let len = std::fs::metadata(d.dir.join(name)).unwrap().len();
            assert_eq!(Some(&(*start, len)), rolled.iter().find(|r| r.0 == *start));
        }
        assert_eq!(
            starts,
            rolled[first..].iter().map(|r| r.0).collect::<Vec<_>>()
        );
        let st = c.ok(json!({"op": "stats"}));
        assert_eq!(st["oldestOffset"].as_u64(), Some(starts[0]));
        assert_eq!(
            st["diskBytes"].as_u64(),
            Some(kept_bytes + (o - base)),
            "segments plus the active file"
        );
        checked += 1;
    }
    assert!(checked >= 5, "only {checked} rolls seen");
    assert!(
        after_deletion >= 3,
        "only {after_deletion} rolls deleted anything"
    );
    let st = c.ok(json!({"op": "stats"}));
    let oldest = st["oldestOffset"].as_u64().unwrap();
    assert!(oldest > slow_at, "old segments deleted: oldest {oldest}");
    assert!(st["diskBytes"].as_u64().unwrap() <= 32 * 1024 + 8192 + 300);
    // The slow subscriber learns what it missed, then goes on.
    let s = c.subscribe(json!({"cursor": "slow", "limit": 2}));
    let gap = c.frame();
    assert_eq!(gap["gap"], json!(true), "{gap}");
    assert_eq!(gap["sub"], json!(s));
    assert_eq!(gap["from"].as_u64(), Some(slow_at));
    assert_eq!(gap["offset"].as_u64(), Some(oldest));
    assert_eq!(gap["missed"].as_u64(), Some(oldest - slow_at));
    let (ev, _) = c.drain(&s);
    assert!(ev[0]["offset"].as_u64().unwrap() > oldest);
    // Segments start where an entry ended: the oldest kept event is the one
    // after the entry whose answer was `oldest`.
    let kept = offs
        .iter()
        .position(|o| *o == oldest)
        .expect("oldest is an entry boundary")
        + 1;
    assert_eq!(index(&ev[0]), kept, "resumes at the oldest kept event");
    // `since` an offset that was deleted behaves the same.
    let s = c.subscribe(json!({"since": 0, "limit": 1}));
    assert_eq!(c.frame()["gap"], json!(true));
    c.drain(&s);
    // history stops at the oldest kept event.
    let h = c.ok(json!({"op": "history", "limit": 1000}));
    assert!(h["entries"].as_array().unwrap().len() < 420);
}

#[test]
fn retention_by_age_and_rolling_by_age() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    let mut d = Daemon::start_in(&dir, &["--segment-bytes", "8192"]);
    let mut c = d.connect();
    fill(&mut c, 0, 100);
    drop(c);
    assert!(d.stop().success());
    let segs = segment_files(&d);
    assert!(segs.len() >= 2);
    // Age the two oldest segments.
    for s in &segs[..2] {
        let ok = Command::new("touch")
            .args(["-d", "3 days ago"])
            .arg(dir.join(s))
            .status()
            .unwrap();
        assert!(ok.success());
    }
    let mut d = Daemon::start_in(
        &dir,
        &[
            "--segment-bytes",
            "8192",
            "--retain-age",
            "2d",
            "--segment-age",
            "1s",
        ],
    );
    let left = segment_files(&d);
    assert_eq!(
        left,
        segs[2..].to_vec(),
        "segments older than 2 days deleted at startup"
    );
    assert!(d.stderr().contains("retention deleted segment"));
    // The oldest segment that had to stay (younger than 2 days) is where
    // the log now starts.
    let oldest_kept: u64 = segs[2]
        .trim_start_matches("history.")
        .trim_end_matches(".jsonl")
        .parse()
        .unwrap();
    let st = d.connect().ok(json!({"op": "stats"}));
    assert_eq!(st["oldestOffset"].as_u64(), Some(oldest_kept));
    // --segment-age rolls a non-empty active file once it is old enough.
    let mut c = d.connect();
    fill(&mut c, 100, 1);
    let deadline = std::time::Instant::now() + PATIENCE;
    // (Absent for a moment during the roll: renamed, not yet recreated.)
    while std::fs::metadata(d.history_path()).map_or(1, |m| m.len()) > 0 {
        assert!(std::time::Instant::now() < deadline, "not rolled by age");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // One more entry: the writer stores it only after the roll and the
    // retention that follows it are done. The new segment is young, and so
    // are the ones kept at startup: nothing more is deleted.
    fill(&mut c, 101, 1);
    let now = segment_files(&d);
    assert_eq!(now.len(), left.len() + 1, "{now:?}");
    assert_eq!(now[..left.len()], left[..]);
    let st = c.ok(json!({"op": "stats"}));
    assert_eq!(st["oldestOffset"].as_u64(), Some(oldest_kept));
    let s = c.subscribe(json!({"since": "start"}));
    let (ev, _) = c.drain(&s);
    assert_eq!(index(ev.last().unwrap()), 101);
    d.kill9();
}

#[test]
fn bad_retention_flags_are_refused() {
    for args in [
        vec!["--segment-bytes", "12"],
        vec!["--segment-bytes", "lots"],
        vec!["--retain-bytes", "-5"],
        vec!["--retain-age", "soon"],
        vec!["--segment-age", "0s"],
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let out = Command::new(METROD)
            .arg("--state-dir")
            .arg(tmp.path().join("s"))
            .args(&args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} accepted");
        assert!(!out.stderr.is_empty());
    }
}
