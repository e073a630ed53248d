//! Where a time starts in the log: the entry boundary for `subscribe` with
//! `since` an RFC 3339 time, found with O(log n) small reads, never a scan
//! of the whole log.
//!
//! The rule it relies on: `ts` does not decrease in log order. metrod's
//! writer mints every `ts` as `max(now, last ts)` (a clock stepped back
//! repeats the last millisecond), seeded at startup from the last entry, so
//! what metrod writes is ordered across restarts, segments and clock steps.
//! Lines another process appended (adopted with their own `ts`, see
//! `foreign`), a TypeScript-era log or a hand-edited file may break it; then
//! the answer is still a boundary where `ts` crosses the time (the entry
//! before it, if any, is older; the entry at it is not), just not
//! necessarily the first such one.
//!
//! How: the kept files (segments, then the active file) are one range of
//! global offsets. The search keeps `lo` (a line start; lines before it are
//! older) and `hi` (a line start or the end; the line at it is not older).
//! It probes the middle: seeks there, resyncs to the next line start (or,
//! when no line starts between the middle and `hi`, the previous one), reads
//! that line's `ts` and moves one bound. Lines without a readable `ts` are
//! passed over like readers pass over them. Once the bounds are [`SCAN`]
//! bytes apart it reads the lines between them in order.

use std::borrow::Cow;
use std::io;
use std::os::unix::fs::FileExt;

use serde::Deserialize;

use super::super::segments::Located;

/// Bounds closer than this are read line by line.
const SCAN: u64 = 16 << 10;
/// First read when looking for the end of a line (doubled for longer lines).
const PROBE: usize = 4096;

/// The first entry boundary whose line has `ts >= ms` (see the module
/// comment for what "first" means), or the end of the log. `parts`: the
/// kept files, oldest first, contiguous.
pub(super) fn first_at_or_after(parts: &[Located], ms: i128) -> io::Result<u64> {
    let (Some(first), Some(last)) = (parts.first(), parts.last()) else {
        return Ok(0);
    };
    let mut lo = first.base;
    let mut hi = last.end;
    while hi - lo > SCAN {
        let mid = lo + (hi - lo) / 2;
        let mut s = next_start(part(parts, mid)?, mid)?;
        if s >= hi {
            s = prev_start(part(parts, mid)?, mid)?;
            if s <= lo {
                // One line holds all of [lo, hi).
                break;
            }
        }
        match dated(parts, s, hi)? {
            // Only lines without `ts` from s to hi: starting at s delivers
            // the same as starting at hi.
            None => hi = s,
            Some((_, _, ts)) if ts >= ms => hi = s,
            Some((_, end, _)) => lo = end,
        }
    }
    Ok(match dated_from(parts, lo, hi, ms)? {
        Some(s) => s,
        None => hi,
    })
}

/// The file holding global offset `pos`.
fn part(parts: &[Located], pos: u64) -> io::Result<&Located> {
    let i = parts.partition_point(|p| p.end <= pos);
    parts
        .get(i)
        .filter(|p| p.base <= pos)
        .ok_or_else(|| io::Error::other(format!("offset {pos} is in no log file")))
}

/// The first line with a `ts` starting in `[s, hi)`: its start, end and
/// `ts`.
fn dated(parts: &[Located], mut s: u64, hi: u64) -> io::Result<Option<(u64, u64, i128)>> {
    while s < hi {
        let (end, ts) = line_at(part(parts, s)?, s)?;
        if let Some(ts) = ts {
            return Ok(Some((s, end, ts)));
        }
        s = end;
    }
    Ok(None)
}

/// The first line starting in `[s, hi)` with `ts >= ms`.
fn dated_from(parts: &[Located], mut s: u64, hi: u64, ms: i128) -> io::Result<Option<u64>> {
    while let Some((start, end, ts)) = dated(parts, s, hi)? {
        if ts >= ms {
            return Ok(Some(start));
        }
        s = end;
    }
    Ok(None)
}

/// The first line start at or after `pos` in `p` (its end when none).
fn next_start(p: &Located, pos: u64) -> io::Result<u64> {
    if pos <= p.base {
        return Ok(p.base);
    }
    // A line starts at pos if the byte before it ends one.
    let mut at = pos - 1;
    let mut buf = vec![0u8; PROBE];
    while at < p.end {
        let n = buf.len().min((p.end - at) as usize);
        p.file.read_exact_at(&mut buf[..n], at - p.base)?;
        if let Some(i) = buf[..n].iter().position(|&b| b == b'\n') {
            return Ok(at + i as u64 + 1);
        }
        at += n as u64;
    }
    Ok(p.end)
}

/// The last line start at or before `pos` in `p`.
fn prev_start(p: &Located, pos: u64) -> io::Result<u64> {
    let (local, _) = super::scan_back_for_newline(&p.file, pos - p.base)?;
    Ok(p.base + local)
}

/// The line starting at `start` in `p`: its end (after the `\n`) and its
/// `ts`, if it has a readable one.
fn line_at(p: &Located, start: u64) -> io::Result<(u64, Option<i128>)> {
    #[derive(Deserialize)]
    struct Ts<'a> {
        #[serde(borrow)]
        ts: Cow<'a, str>,
    }
    let left = (p.end - start) as usize;
    let mut want = PROBE.min(left);
    loop {
        let mut buf = vec![0u8; want];
        p.file.read_exact_at(&mut buf, start - p.base)?;
        let nl = buf.iter().position(|&b| b == b'\n');
        if nl.is_none() && want < left {
            want = (want * 2).min(left);
            continue;
        }
        let len = nl.unwrap_or(want);
        let ts = serde_json::from_slice::<Ts>(&buf[..len])
            .ok()
            .and_then(|t| crate::clock::parse_ms(&t.ts));
        return Ok((start + len as u64 + u64::from(nl.is_some()), ts));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Writes `lines` (each a `ts` in ms, `None` for a line without one,
    /// padded to about `pad` bytes) into files of `per_file` lines; returns
    /// the parts and each line's start offset.
    fn log(
        dir: &std::path::Path,
        lines: &[Option<i128>],
        per_file: usize,
        pad: usize,
    ) -> (Vec<Located>, Vec<u64>) {
        let mut parts = Vec::new();
        let mut starts = Vec::new();
        let mut base = 1000u64; // offsets are global: the log starts at 1000
        for (i, chunk) in lines.chunks(per_file).enumerate() {
            let mut bytes = Vec::new();
            for ts in chunk {
                starts.push(base + bytes.len() as u64);
                let line = match ts {
                    Some(ms) => format!(
                        "{{\"id\":\"x\",\"ts\":\"{}\",\"text\":\"{}\"}}\n",
                        crate::clock::format_ms(*ms),
                        "y".repeat(pad)
                    ),
                    None => format!("not json {}\n", "z".repeat(pad)),
                };
                bytes.extend_from_slice(line.as_bytes());
            }
            let path = dir.join(format!("part{i}"));
            std::fs::write(&path, &bytes).unwrap();
            let len = bytes.len() as u64;
            parts.push(Located {
                file: Arc::new(std::fs::File::open(&path).unwrap()),
                base,
                end: base + len,
            });
            base += len;
        }
        (parts, starts)
    }

    #[test]
    fn finds_the_first_line_at_or_after_a_time_across_files() {
        let dir = tempfile::tempdir().unwrap();
        // 3000 lines, ts 10 ms apart with runs of equal ts, in 7 files.
        let ts: Vec<Option<i128>> = (0..3000).map(|i| Some(1_000_000 + (i / 3) * 10)).collect();
        let (parts, starts) = log(dir.path(), &ts, 450, 60);
        let end = parts.last().unwrap().end;
        assert!(end - 1000 > 20 * SCAN, "big enough to search: {end}");
        // Before everything, exactly on a run, between two runs, after all.
        assert_eq!(first_at_or_after(&parts, 0).unwrap(), starts[0]);
        assert_eq!(first_at_or_after(&parts, 1_000_000).unwrap(), starts[0]);
        assert_eq!(first_at_or_after(&parts, 1_005_000).unwrap(), starts[1500]);
        assert_eq!(first_at_or_after(&parts, 1_005_005).unwrap(), starts[1503]);
        assert_eq!(first_at_or_after(&parts, 1_001_500).unwrap(), starts[450]);
        assert_eq!(first_at_or_after(&parts, 2_000_000).unwrap(), end);
        // Every run start, to cover file edges.
        for i in (0..3000).step_by(3) {
            let ms = 1_000_000 + (i as i128 / 3) * 10;
            assert_eq!(first_at_or_after(&parts, ms).unwrap(), starts[i], "ts {ms}");
        }
    }

    #[test]
    fn lines_without_ts_are_passed_over_and_long_lines_are_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let mut ts: Vec<Option<i128>> = (0..400).map(|i| Some(i * 1000)).collect();
        for i in (5..400).step_by(7) {
            ts[i] = None;
        }
        // Lines of ~5 KiB: longer than a probe read.
        let (parts, starts) = log(dir.path(), &ts, 130, 5000);
        let end = parts.last().unwrap().end;
        let start = |i: usize| starts.get(i).copied().unwrap_or(end);
        for ms in ts.iter().flatten().flat_map(|ms| [*ms, ms + 1]) {
            // The first dated line at or after ms; only lines without ts may
            // stand between the answer and it.
            let first = ts.iter().position(|t| t.is_some_and(|t| t >= ms));
            let want = first.map(start).unwrap_or(end);
            let older = ts[..first.unwrap_or(ts.len())]
                .iter()
                .rposition(Option::is_some)
                .map(|k| start(k + 1))
                .unwrap_or(start(0));
            let got = first_at_or_after(&parts, ms).unwrap();
            assert!(
                older <= got && got <= want,
                "ts {ms}: {got} in {older}..={want}"
            );
            assert!(starts.contains(&got) || got == end, "a line start");
        }
    }

    #[test]
    fn an_empty_log_or_one_line() {
        assert_eq!(first_at_or_after(&[], 5).unwrap(), 0);
        let dir = tempfile::tempdir().unwrap();
        let (parts, starts) = log(dir.path(), &[Some(7)], 10, 100_000);
        assert_eq!(first_at_or_after(&parts, 7).unwrap(), starts[0]);
        assert_eq!(first_at_or_after(&parts, 8).unwrap(), parts[0].end);
    }

    #[test]
    fn a_log_whose_ts_goes_backwards_still_gets_a_crossing() {
        let dir = tempfile::tempdir().unwrap();
        // Ordered, then a foreign writer's older lines, then ordered again.
        let mut ts: Vec<Option<i128>> = (0..1000).map(|i| Some(i * 10)).collect();
        for (k, t) in ts.iter_mut().enumerate().skip(600).take(50) {
            *t = Some((k as i128 - 600) * 10);
        }
        let (parts, starts) = log(dir.path(), &ts, 300, 60);
        let got = first_at_or_after(&parts, 3000).unwrap();
        let i = starts.iter().position(|s| *s == got).expect("a line start");
        assert!(ts[i].unwrap() >= 3000);
        assert!(i == 0 || ts[i - 1].unwrap() < 3000, "a crossing at {i}");
    }
}
