//! Readers of the log: entries from the ring or from the file in chunks,
//! lines backwards, entry boundaries (for cursors), and the forward walk of
//! the recent tail used by startup seeding. Reads never block the writer
//! beyond the file set's read lock.
//!
//! Must not import the writer or retention: readers see only committed
//! entries (the ring, the files, the committed end).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::Bytes;

use super::segments::{FileSet, Located};
use super::{Entry, Log, Meta};

/// Where a backwards read goes: the file holding the byte before `before`,
/// and the oldest kept offset. `None`: nothing (more) to read.
pub(super) fn back_target(files: &FileSet, end: u64, before: u64) -> Option<(Located, u64)> {
    let before = before.min(end);
    if before == 0 || before <= files.oldest() {
        return None;
    }
    files
        .locate(before - 1, end)
        .map(|loc| (loc, files.oldest()))
}

/// Largest chunk read from the file at once by catch-up readers.
const READ_CHUNK: usize = 256 << 10;
/// Most entries handed out by one ring or file read.
pub const MAX_ENTRIES_PER_READ: usize = 1024;

impl Log {
    /// Entries starting at `pos` and ending at or before `until`, from the
    /// ring. `None` when `pos` is older than the ring (read the file).
    pub fn read_ring(&self, pos: u64, until: u64) -> Option<Vec<Arc<Entry>>> {
        let ring = self.shared.ring.read().ok()?;
        let first = ring.entries.front()?;
        if pos < first.start() {
            return None;
        }
        let idx = ring.entries.partition_point(|e| e.end <= pos);
        let out: Vec<Arc<Entry>> = ring
            .entries
            .range(idx..)
            .take_while(|e| e.end <= until)
            .take(MAX_ENTRIES_PER_READ)
            .cloned()
            .collect();
        Some(out)
    }

    /// Entries from `pos` (an entry boundary) up to at most `until`, read
    /// from the file that holds `pos`: one chunk, complete lines only.
    /// `pos` older than the oldest kept offset is an error of kind
    /// `NotFound` (check [`Log::oldest`] first).
    pub async fn read_file(&self, pos: u64, until: u64) -> io::Result<Vec<Arc<Entry>>> {
        let loc = self
            .shared
            .with_files(|f| f.locate(pos, until))?
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("offset {pos} was deleted by retention"),
                )
            })?;
        tokio::task::spawn_blocking(move || read_entries(&loc, pos, until))
            .await
            .map_err(io::Error::other)?
    }

    /// Entries from `pos`, from the ring when it still holds them, else from
    /// the file.
    pub async fn read_from(&self, pos: u64, until: u64) -> io::Result<Vec<Arc<Entry>>> {
        if pos >= until {
            return Ok(Vec::new());
        }
        match self.read_ring(pos, until) {
            Some(v) if !v.is_empty() => Ok(v),
            _ => self.read_file(pos, until).await,
        }
    }

    /// True when `offset` is at an entry boundary of the kept log: the start
    /// of a file, or just after a committed entry's `\n`.
    pub fn is_boundary(&self, offset: u64) -> io::Result<bool> {
        let end = self.end();
        if offset > end {
            return Ok(false);
        }
        let (start, loc) = self.shared.with_files(|files| {
            let start = offset == 0 || files.is_file_start(offset);
            (
                start,
                if start {
                    None
                } else {
                    files.locate(offset - 1, end)
                },
            )
        })?;
        if start {
            return Ok(true);
        }
        let Some(loc) = loc else {
            return Ok(false);
        };
        let mut b = [0u8; 1];
        loc.file.read_exact_at(&mut b, offset - 1 - loc.base)?;
        Ok(b[0] == b'\n')
    }

    /// The entry boundary at or before `offset` (for repairing cursors);
    /// never before the oldest kept offset.
    pub fn boundary_at_or_before(&self, offset: u64) -> io::Result<u64> {
        let end = self.end();
        let offset = offset.min(end);
        let (oldest, at_start, loc) = self.shared.with_files(|files| {
            let oldest = files.oldest();
            let at_start = offset <= oldest || files.is_file_start(offset);
            let loc = if at_start {
                None
            } else {
                files.locate(offset - 1, end)
            };
            (oldest, at_start, loc)
        })?;
        if at_start {
            return Ok(offset.max(oldest));
        }
        let Some(loc) = loc else {
            return Ok(oldest);
        };
        let (start, _) = scan_back_for_newline(&loc.file, offset - loc.base)?;
        Ok(loc.base + start)
    }

    /// The entry boundary at or after `offset` (for cursors written by the
    /// TypeScript metro): the end of the entry `offset` falls in, or the log
    /// end.
    pub fn boundary_at_or_after(&self, offset: u64) -> io::Result<u64> {
        let end = self.end();
        if offset >= end {
            return Ok(end);
        }
        if self.is_boundary(offset)? {
            return Ok(offset);
        }
        let Some(loc) = self.shared.with_files(|f| f.locate(offset, end))? else {
            return Ok(self.oldest());
        };
        let mut pos = offset;
        let mut buf = vec![0u8; 64 << 10];
        while pos < loc.end {
            let n = buf.len().min((loc.end - pos) as usize);
            loc.file.read_exact_at(&mut buf[..n], pos - loc.base)?;
            if let Some(i) = buf[..n].iter().position(|&b| b == b'\n') {
                return Ok(pos + i as u64 + 1);
            }
            pos += n as u64;
        }
        Ok(loc.end)
    }

    /// The entry boundary where events of time `ms` (milliseconds since the
    /// epoch) start: the first entry with `ts >= ms`, or the log end. A
    /// binary search over byte offsets ([`super::seek`] says how and what it
    /// relies on): O(log n) small reads.
    pub fn offset_at_time(&self, ms: i128) -> io::Result<u64> {
        let end = self.end();
        let parts = self.shared.with_files(|files| {
            let mut parts: Vec<Located> = files
                .segments
                .iter()
                .map(|s| Located {
                    file: s.file.clone(),
                    base: s.start,
                    end: s.end(),
                })
                .collect();
            parts.push(Located {
                file: files.active.clone(),
                base: files.active_base,
                end,
            });
            parts
        })?;
        super::seek::first_at_or_after(&parts, ms)
    }

    /// Complete lines ending at or before `before`, newest first, reading
    /// backwards about `chunk` bytes within one file. Returns the lines
    /// (without `\n`, with their end offsets) and the offset where the next
    /// call should continue (0 when nothing older is kept).
    pub async fn read_back(
        &self,
        before: u64,
        chunk: usize,
    ) -> io::Result<(Vec<(u64, Bytes)>, u64)> {
        let end = self.end();
        let Some(target) = self.shared.with_files(|f| back_target(f, end, before))? else {
            return Ok((Vec::new(), 0));
        };
        tokio::task::spawn_blocking(move || read_back(target, before, chunk))
            .await
            .map_err(io::Error::other)?
    }

    /// Calls `f` with each line of about the last `bytes` of the log, oldest
    /// first, reading forward one chunk at a time (startup seeding: memory
    /// stays at one chunk whatever `bytes` is).
    pub fn for_each_recent_blocking(&self, bytes: u64, mut f: impl FnMut(&[u8])) -> io::Result<()> {
        self.for_each_recent_entry_blocking(bytes, |_, json| f(json))
    }

    /// [`Log::for_each_recent_blocking`], with each line's end offset.
    pub fn for_each_recent_entry_blocking(
        &self,
        bytes: u64,
        mut f: impl FnMut(u64, &[u8]),
    ) -> io::Result<()> {
        let end = self.end();
        let mut pos = self.boundary_at_or_before(end.saturating_sub(bytes))?;
        while pos < end {
            let Some(loc) = self.shared.with_files(|files| files.locate(pos, end))? else {
                break;
            };
            let entries = read_entries(&loc, pos, end)?;
            let Some(last) = entries.last() else { break };
            pos = last.end;
            for e in &entries {
                f(e.end, &e.json);
            }
        }
        Ok(())
    }
}

/// Finds the offset just after the last `\n` before `offset` (0 if none).
/// Returns it and the number of bytes read.
pub(super) fn scan_back_for_newline(file: &File, offset: u64) -> io::Result<(u64, u64)> {
    let mut hi = offset;
    let mut read = 0u64;
    let mut buf = vec![0u8; 64 << 10];
    while hi > 0 {
        let lo = hi.saturating_sub(buf.len() as u64);
        let n = (hi - lo) as usize;
        file.read_exact_at(&mut buf[..n], lo)?;
        read += n as u64;
        if let Some(i) = buf[..n].iter().rposition(|&b| b == b'\n') {
            return Ok((lo + i as u64 + 1, read));
        }
        hi = lo;
    }
    Ok((0, read))
}

/// Warns once per corrupt line, however many readers pass over it.
fn warn_corrupt(offset: u64) {
    static WARNED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let prev = WARNED.fetch_max(offset + 1, std::sync::atomic::Ordering::Relaxed);
    if prev < offset + 1 {
        tracing::warn!(offset, "log line is not an event object; passing over it");
    }
}

pub(super) fn read_entries(loc: &Located, pos: u64, until: u64) -> io::Result<Vec<Arc<Entry>>> {
    // Entries never span files: read no further than this one's end.
    let until = until.min(loc.end);
    let file = &loc.file;
    let mut want = READ_CHUNK.min((until - pos) as usize);
    loop {
        let mut buf = vec![0u8; want];
        file.read_exact_at(&mut buf, pos - loc.base)?;
        let Some(last_nl) = buf.iter().rposition(|&b| b == b'\n') else {
            if pos + (want as u64) >= until {
                // The committed region always ends with `\n`; reaching here
                // means `pos` was not an entry boundary.
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "log region has no complete line",
                ));
            }
            // A line longer than the chunk: read more.
            want = (want * 2).min((until - pos) as usize);
            continue;
        };
        buf.truncate(last_nl + 1);
        let bytes = Bytes::from(buf);
        let mut out = Vec::new();
        let mut start = 0usize;
        while start < bytes.len() && out.len() < MAX_ENTRIES_PER_READ {
            let nl = match bytes[start..].iter().position(|&b| b == b'\n') {
                Some(i) => start + i,
                None => break,
            };
            let json = bytes.slice(start..nl);
            let meta = Meta::parse(&json);
            if !meta.valid {
                warn_corrupt(pos + start as u64);
            }
            out.push(Arc::new(Entry {
                end: pos + nl as u64 + 1,
                json,
                meta,
            }));
            start = nl + 1;
        }
        return Ok(out);
    }
}

pub(super) fn read_back(
    (loc, oldest): (Located, u64),
    before: u64,
    chunk: usize,
) -> io::Result<(Vec<(u64, Bytes)>, u64)> {
    let before = before.min(loc.end);
    let (lines, next) = read_back_in(&loc.file, before - loc.base, chunk)?;
    let lines = lines.into_iter().map(|(e, b)| (loc.base + e, b)).collect();
    let next = loc.base + next;
    // At the start of the oldest kept file there is nothing further back.
    let next = if next <= oldest { 0 } else { next };
    Ok((lines, next))
}

/// [`read_back`] within one file, with offsets local to it.
pub(super) fn read_back_in(
    file: &File,
    before: u64,
    chunk: usize,
) -> io::Result<(Vec<(u64, Bytes)>, u64)> {
    if before == 0 {
        return Ok((Vec::new(), 0));
    }
    let mut want = chunk.max(4096) as u64;
    loop {
        let lo = before.saturating_sub(want);
        let mut buf = vec![0u8; (before - lo) as usize];
        file.read_exact_at(&mut buf, lo)?;
        // Lines are complete from the first `\n` in the chunk on, or from the
        // chunk's start when it is the file's start.
        let first = if lo == 0 {
            0
        } else {
            match buf.iter().position(|&b| b == b'\n') {
                Some(i) if i + 1 < buf.len() || lo == 0 => i + 1,
                _ => {
                    want *= 2;
                    continue;
                }
            }
        };
        let bytes = Bytes::from(buf);
        let mut out = Vec::new();
        let mut end = bytes.len();
        // bytes[end-1] is the `\n` of the newest line.
        while end > first {
            let line_end = end - 1;
            let line_start = bytes[first..line_end]
                .iter()
                .rposition(|&b| b == b'\n')
                .map(|i| first + i + 1)
                .unwrap_or(first);
            out.push((lo + end as u64, bytes.slice(line_start..line_end)));
            end = line_start;
        }
        return Ok((out, lo + first as u64));
    }
}
