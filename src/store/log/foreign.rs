//! Bytes in `history.jsonl` that metrod did not write: a TypeScript metro or
//! a script still appending to the file while metrod runs.
//!
//! The writer knows which bytes are its own: the file is opened `O_APPEND`,
//! so `history.jsonl`'s length must equal the end of metrod's last commit.
//! It compares the two (one `fstat`) before each commit and on a 50 ms tick
//! while idle, and after each write checks where its batch landed (the file
//! offset after an `O_APPEND` write). Anything else is foreign:
//!
//! - every complete foreign line is adopted as an entry at the offset where
//!   it stands — into the ring, the lines index and the committed end, so
//!   subscribers get it like any event — keeping its writer's `id` and `ts`;
//! - a foreign tail without its `\n` gets [`TORN_GRACE`] to complete; then
//!   (or before metrod's own next commit, which must not be glued to it)
//!   metrod ends it with a `\n`: the piece becomes a malformed line that
//!   readers pass over;
//! - one warning says what happened the first time; `stats` counts the rest.
//!
//! A roll renames `history.jsonl`; a writer that opened it just before
//! appends to the renamed segment. For [`ROLL_GRACE`] after a roll the
//! segment is watched too: bytes that land there are moved to the end of
//! the new `history.jsonl` (and adopted there), and the segment cut back.
//!
//! Memory: foreign bytes are read at most [`CHUNK`] at a time (more only for
//! a single line longer than that, as catch-up readers do).

use std::io::{self, Seek, Write};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{Entry, Meta, Writer};

/// How long a foreign line without its `\n` may stay incomplete.
pub const TORN_GRACE: Duration = Duration::from_millis(100);
/// How often an idle writer looks for foreign bytes.
pub const IDLE_CHECK: Duration = Duration::from_millis(50);
/// How long a rolled file is watched for late foreign bytes.
pub const ROLL_GRACE: Duration = Duration::from_secs(2);
/// Largest read of foreign bytes at once.
const CHUNK: usize = 1 << 20;

/// What foreign writers did since startup (for `stats`).
#[derive(Debug, Default)]
pub struct ForeignStats {
    /// Complete foreign lines adopted as entries.
    pub adopted_lines: AtomicU64,
    /// Foreign tails metrod ended with a `\n` after [`TORN_GRACE`].
    pub ended_tails: AtomicU64,
}

/// The writer's view of foreign bytes.
#[derive(Debug, Default)]
pub struct Foreign {
    /// A foreign tail without `\n`: the local offset where it starts, and
    /// when it was first seen.
    torn: Option<(u64, Instant)>,
    warned: bool,
    pub stats: Arc<ForeignStats>,
    /// The file rolled last, its length as a segment, and until when it is
    /// watched.
    rolled: Option<(std::fs::File, u64, Instant)>,
}

impl Foreign {
    /// Watches the file just rolled into a segment of `len` bytes.
    pub fn watch_rolled(&mut self, file: std::fs::File, len: u64) {
        self.rolled = Some((file, len, Instant::now() + ROLL_GRACE));
    }
}

/// Where a batch of metrod's landed, when that was not where expected.
pub enum Landing {
    /// At the expected offset (the common case).
    Expected,
    /// Foreign bytes came first; their complete lines are adopted and
    /// metrod's batch starts at global offset `start`. `torn`: the foreign
    /// bytes ended without `\n`, so this piece and metrod's first line of the
    /// batch make one malformed line.
    After { start: u64, torn: Option<Bytes> },
}

impl Writer {
    /// Adopts complete foreign lines past the committed end; ends a foreign
    /// tail without `\n` once it is older than [`TORN_GRACE`], or at once
    /// (after waiting out the grace) when `committing`: metrod is about to
    /// append and must start on a line boundary.
    pub(super) fn check_foreign(&mut self, committing: bool) {
        self.move_late_bytes();
        loop {
            let len = match self.file.metadata() {
                Ok(m) => m.len(),
                Err(e) => {
                    tracing::error!("cannot stat history.jsonl: {e}");
                    return;
                }
            };
            let local = self.pos - self.active_base;
            if len == local {
                self.foreign.torn = None;
                return;
            }
            if len < local {
                if !self.foreign.warned {
                    self.foreign.warned = true;
                    tracing::error!(
                        "history.jsonl is {len} bytes but metrod committed {local}: another process \
                         cut it; offsets will not match the file until metrod restarts"
                    );
                }
                return;
            }
            match self.adopt(local, len) {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => {
                    tracing::error!("cannot read foreign bytes of history.jsonl at {local}: {e}");
                    return;
                }
            }
            // A tail without `\n` remains.
            let now = Instant::now();
            let since = match self.foreign.torn {
                Some((start, at)) if start == local => at,
                _ => {
                    self.foreign.torn = Some((local, now));
                    now
                }
            };
            let waited = now.duration_since(since);
            if waited < TORN_GRACE {
                if !committing {
                    return;
                }
                std::thread::sleep((TORN_GRACE - waited).min(Duration::from_millis(5)));
                continue;
            }
            self.end_torn_tail(len);
        }
    }

    /// Bytes appended to the segment rolled last (by a writer that opened
    /// `history.jsonl` before the rename) go to the end of the active file,
    /// where they are adopted, and the segment is cut back to its length.
    /// A tail without `\n` is waited for until [`ROLL_GRACE`] ends.
    fn move_late_bytes(&mut self) {
        let Some((old, len, until)) = &self.foreign.rolled else {
            return;
        };
        let expired = Instant::now() >= *until;
        let now = old.metadata().map(|m| m.len()).unwrap_or(*len);
        if now > *len {
            let mut late = vec![0u8; (now - len) as usize];
            let read = old.read_exact_at(&mut late, *len);
            let complete = late.last() == Some(&b'\n');
            if read.is_ok() && (complete || expired) {
                if !complete {
                    late.push(b'\n');
                }
                let moved = self.file.write_all(&late).and_then(|()| old.set_len(*len));
                match moved {
                    Ok(()) => tracing::warn!(
                        "{} bytes another process appended to history.jsonl as metrod rolled it \
                         were moved from the segment to the new history.jsonl",
                        late.len()
                    ),
                    Err(e) => tracing::error!(
                        "cannot move bytes appended to a rolled segment to history.jsonl: {e}"
                    ),
                }
            }
        }
        if expired {
            self.foreign.rolled = None;
        }
    }

    /// Adopts the complete lines in `[local, len)` (local offsets), at most
    /// one chunk. True when something was adopted.
    fn adopt(&mut self, local: u64, len: u64) -> io::Result<bool> {
        let mut want = CHUNK.min((len - local) as usize);
        let buf = loop {
            let mut buf = vec![0u8; want];
            self.file.read_exact_at(&mut buf, local)?;
            match buf.iter().rposition(|&b| b == b'\n') {
                Some(i) => {
                    buf.truncate(i + 1);
                    break buf;
                }
                None if local + (want as u64) < len => {
                    want = (want * 2).min((len - local) as usize)
                }
                None => return Ok(false),
            }
        };
        self.adopted(local, buf);
        Ok(true)
    }

    /// Adopts the complete lines of `buf` read at `local`: warns the first
    /// time and counts the events among them, then makes them visible (so a
    /// subscriber that got them finds the warning and the count).
    fn adopted(&mut self, local: u64, buf: Vec<u8>) {
        let entries = self.entries_of(local, buf);
        let n = entries.iter().filter(|e| e.meta.valid).count() as u64;
        if !self.foreign.warned {
            self.foreign.warned = true;
            tracing::warn!(
                offset = self.active_base + local,
                "another process is appending to history.jsonl while metrod runs (a TypeScript metro \
                 or a script): metrod adopts its complete lines as events at the offsets where they \
                 stand, keeping their id and ts (so those may go backwards); stop the other writer"
            );
        } else {
            tracing::debug!(
                "adopted {n} foreign lines at offset {}",
                self.active_base + local
            );
        }
        self.foreign
            .stats
            .adopted_lines
            .fetch_add(n, Ordering::Relaxed);
        self.commit_read(entries);
    }

    /// The complete lines of `buf`, read at local offset `local`, as
    /// entries (a line that is not an event object is one readers pass
    /// over).
    fn entries_of(&self, local: u64, buf: Vec<u8>) -> Vec<Arc<Entry>> {
        let base = self.active_base + local;
        let bytes = Bytes::from(buf);
        let mut entries = Vec::new();
        let mut start = 0usize;
        while let Some(i) = bytes[start..].iter().position(|&b| b == b'\n') {
            let json = bytes.slice(start..start + i);
            let meta = Meta::parse(&json);
            entries.push(Arc::new(Entry {
                end: base + (start + i + 1) as u64,
                json,
                meta,
            }));
            start += i + 1;
        }
        entries
    }

    /// Makes adopted entries committed: lines and hop indexes, ring, end.
    fn commit_read(&mut self, entries: Vec<Arc<Entry>>) {
        let Some(last) = entries.last() else { return };
        let end = last.end;
        if let Ok(mut lines) = self.shared.lines.lock() {
            for e in entries.iter().filter(|e| e.meta.valid) {
                lines.observe_json(&e.json);
            }
        }
        // Before the entries are visible, as for metrod's own: an answer to
        // an adopted event finds its hops.
        if let Ok(mut hops) = self.shared.hops.lock() {
            for e in entries.iter().filter(|e| e.meta.valid) {
                hops.observe_json(&e.json);
            }
        }
        if let Ok(mut ring) = self.shared.ring.write() {
            for e in &entries {
                ring.push(e.clone());
            }
        }
        self.pos = end;
        if self.opts.fsync != super::FsyncPolicy::Always {
            self.unsynced = true;
        }
        self.end_tx.send_replace(self.pos);
    }

    /// Ends the foreign tail that stands at the end of the file with `\n`.
    fn end_torn_tail(&mut self, len: u64) {
        let local = self.pos - self.active_base;
        if let Err(e) = self.file.write_all(b"\n") {
            tracing::error!("cannot end a foreign torn line in history.jsonl: {e}");
            return;
        }
        self.foreign.torn = None;
        tracing::warn!(
            offset = self.active_base + local,
            "a foreign line of {} bytes stayed without its newline for {} ms: metrod ended it; \
             it is a malformed line that readers pass over",
            len - local,
            TORN_GRACE.as_millis()
        );
        self.foreign
            .stats
            .ended_tails
            .fetch_add(1, Ordering::Relaxed);
    }

    /// After a write of `written` bytes: where did the batch land? Foreign
    /// bytes that slipped in since [`Writer::check_foreign`] are adopted
    /// here.
    pub(super) fn landing(&mut self, written: usize) -> Landing {
        let local = self.pos - self.active_base;
        let landed_end = match self.file.stream_position() {
            Ok(p) => p,
            Err(_) => return Landing::Expected,
        };
        let landed_start = landed_end.saturating_sub(written as u64);
        if landed_start <= local {
            return Landing::Expected;
        }
        let mut foreign = vec![0u8; (landed_start - local) as usize];
        if let Err(e) = self.file.read_exact_at(&mut foreign, local) {
            tracing::error!("cannot read foreign bytes of history.jsonl at {local}: {e}");
        }
        let complete = foreign
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        let torn = Bytes::from(foreign.split_off(complete));
        if !foreign.is_empty() {
            self.adopted(local, foreign);
        }
        let torn = (!torn.is_empty()).then(|| {
            tracing::warn!(
                offset = self.pos,
                "a foreign line without newline landed just before metrod's write: the two make \
                 one malformed line; metrod refuses that one event (its publisher may retry)"
            );
            self.foreign
                .stats
                .ended_tails
                .fetch_add(1, Ordering::Relaxed);
            torn
        });
        Landing::After {
            start: self.active_base + landed_start,
            torn,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::io::Write;
    use std::sync::{Mutex, RwLock};

    use super::super::{segments, FileSet, LogOptions, Mint, Ring, Shared};
    use super::*;

    fn writer(dir: &std::path::Path) -> (Writer, tokio::sync::watch::Receiver<u64>) {
        let file = segments::open_active(dir).unwrap();
        let (end_tx, end_rx) = tokio::sync::watch::channel(0);
        let shared = Arc::new(Shared {
            ring: RwLock::new(Ring {
                entries: VecDeque::new(),
                bytes: 0,
                cap: 1 << 20,
            }),
            files: RwLock::new(FileSet {
                dir: dir.to_path_buf(),
                segments: Vec::new(),
                active_base: 0,
                active: Arc::new(std::fs::File::open(dir.join(segments::ACTIVE)).unwrap()),
            }),
            lines: Arc::new(Mutex::new(Default::default())),
            hops: Arc::new(Mutex::new(Default::default())),
        });
        let w = Writer {
            file,
            pos: 0,
            active_base: 0,
            opened: Instant::now(),
            end_tx,
            shared,
            opts: LogOptions::default(),
            mint: Mint::new(0),
            unsynced: false,
            last_sync: Instant::now(),
            last_commit: Instant::now(),
            last_batch: 0,
            broken: None,
            foreign: Foreign::default(),
            stopped: false,
            defer_roll: false,
            sync_cost: std::time::Duration::ZERO,
            rolls: tokio::sync::watch::channel(0).0,
        };
        (w, end_rx)
    }

    /// Foreign bytes that slip in between the check and metrod's write: the
    /// complete line is adopted before the batch, the torn piece is handed
    /// back (it and the batch's first line make one malformed line).
    #[test]
    fn a_write_landing_after_foreign_bytes_is_placed_after_them() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, end_rx) = writer(dir.path());
        let foreign = b"{\"id\":\"f1\",\"line\":\"metro://a/b\"}\n{\"id\":\"to";
        let mut other = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join(segments::ACTIVE))
            .unwrap();
        other.write_all(foreign).unwrap();
        let mine = b"{\"line\":\"metro://a/c\"}\n";
        w.file.write_all(mine).unwrap();
        match w.landing(mine.len()) {
            Landing::After { start, torn } => {
                assert_eq!(start, foreign.len() as u64);
                assert_eq!(torn.as_deref(), Some(&b"{\"id\":\"to"[..]));
            }
            Landing::Expected => panic!("the foreign bytes were not seen"),
        }
        let first_line = foreign.iter().position(|&b| b == b'\n').unwrap() as u64 + 1;
        assert_eq!(w.pos, first_line, "the complete foreign line is committed");
        assert_eq!(*end_rx.borrow(), first_line);
        assert_eq!(w.foreign.stats.adopted_lines.load(Ordering::Relaxed), 1);
        let ring = w.shared.ring.read().unwrap();
        assert_eq!(ring.entries.len(), 1);
        assert_eq!(&*ring.entries[0].meta.line, "metro://a/b");
        // Nothing foreign: the batch is where it was expected.
        drop(ring);
        w.pos = w.file.metadata().unwrap().len();
        w.file.write_all(mine).unwrap();
        assert!(matches!(w.landing(mine.len()), Landing::Expected));
    }
}
