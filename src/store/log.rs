//! The event log, `history.jsonl`.
//!
//! - One writer thread owns the file. Appends from every connection and
//!   station arrive on one channel; the writer drains whatever is queued (a
//!   batch), mints `id` and `ts`, serializes each event once, writes the batch
//!   with one `write` and, under `--fsync always`, one `fdatasync`. Only then
//!   are the publishers answered and the entries made visible to readers.
//! - Visible entries go into a byte-bounded ring (`Arc<Entry>`: the JSON bytes
//!   plus the four fields the delivery predicate needs) and the committed end
//!   offset is published on a `watch` channel. Live subscribers wake on that
//!   and read the ring; a subscriber whose position has left the ring reads
//!   the file in chunks instead. Memory is bounded by the ring, whatever a
//!   subscriber does.
//! - Startup looks only at the end of the file: a torn last line (a crash in
//!   the middle of a write) is cut off and reported. The file is never
//!   scanned whole.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;
use thiserror::Error;
use tokio::sync::{mpsc, oneshot, watch};

use super::hops::HopIndex;
use super::lines::LineIndex;
use super::segments::{self, FileSet, Located, Segment};
use foreign::{Foreign, ForeignStats, Landing};

mod foreign;
use crate::proto::Event;

/// How appends are made durable before they are answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// One `fdatasync` per batch, before any publisher of the batch is answered.
    Always,
    /// Written to the OS before the answer; `fdatasync` at most this often.
    Interval(Duration),
    /// Written to the OS before the answer; the kernel decides when to sync.
    Never,
}

impl FromStr for FsyncPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "always" => Ok(FsyncPolicy::Always),
            "never" => Ok(FsyncPolicy::Never),
            other => match other.strip_prefix("interval:") {
                Some(ms) => match ms.parse::<u64>() {
                    Ok(ms) if ms > 0 => Ok(FsyncPolicy::Interval(Duration::from_millis(ms))),
                    _ => Err(format!(
                        "bad fsync interval {ms:?}: expected a positive number of milliseconds"
                    )),
                },
                None => Err(format!(
                    "bad fsync policy {other:?}: expected always, interval:<ms> or never"
                )),
            },
        }
    }
}

impl std::fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FsyncPolicy::Always => write!(f, "always"),
            FsyncPolicy::Interval(d) => write!(f, "interval:{}", d.as_millis()),
            FsyncPolicy::Never => write!(f, "never"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct LogOptions {
    pub fsync: FsyncPolicy,
    /// Bytes of recent entries kept in memory for live fan-out.
    pub ring_bytes: usize,
    /// `history.jsonl` is rolled into a segment once it holds this much.
    pub segment_bytes: u64,
    /// ... or once its first entry is this old.
    pub segment_age: Option<Duration>,
    /// Oldest segments are deleted while all files hold more than this.
    pub retain_bytes: Option<u64>,
    /// Segments whose newest entry is older than this are deleted.
    pub retain_age: Option<Duration>,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            fsync: FsyncPolicy::Always,
            ring_bytes: 8 << 20,
            segment_bytes: 64 << 20,
            segment_age: None,
            retain_bytes: None,
            retain_age: None,
        }
    }
}

/// The fields of an event the delivery predicate looks at, parsed once.
#[derive(Debug, Clone, Default)]
pub struct Meta {
    pub line: Box<str>,
    pub to: Box<str>,
    /// Who wrote it (`""` when a stored line has no `from`): a subscription
    /// is not fed its own identity's events (no echo).
    pub from: Box<str>,
    pub station: Box<str>,
    pub kind: Box<str>,
    /// False for a log line that is not an event object; such lines are
    /// passed over (the cursor moves past them) but never delivered.
    pub valid: bool,
}

#[derive(Deserialize)]
struct MetaRef<'a> {
    #[serde(borrow)]
    line: Cow<'a, str>,
    #[serde(borrow, default)]
    to: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    from: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    station: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    kind: Option<Cow<'a, str>>,
}

impl Meta {
    pub fn of(event: &Event) -> Meta {
        Meta {
            line: event.line.as_str().into(),
            to: event.to.as_str().into(),
            from: event.from.as_str().into(),
            station: event.station.as_str().into(),
            kind: event.kind.as_str().into(),
            valid: true,
        }
    }

    /// Parses the predicate fields of a stored line. Lines written by the
    /// TypeScript metro may lack `to` or `station`: `to` defaults to `line`,
    /// `station` to the line's station, `kind` to `inbound`.
    pub fn parse(json: &[u8]) -> Meta {
        match serde_json::from_slice::<MetaRef>(json) {
            Ok(m) => {
                let station = match m.station {
                    Some(s) => s.into_owned().into_boxed_str(),
                    None => crate::line::station_of(&m.line).into(),
                };
                Meta {
                    to: m.to.as_deref().unwrap_or(&m.line).into(),
                    from: m.from.as_deref().unwrap_or("").into(),
                    line: m.line.into_owned().into_boxed_str(),
                    station,
                    kind: m.kind.as_deref().unwrap_or("inbound").into(),
                    valid: true,
                }
            }
            Err(_) => Meta::default(),
        }
    }
}

/// One committed log entry.
#[derive(Debug)]
pub struct Entry {
    /// Byte offset just after this entry's `\n`.
    pub end: u64,
    /// The event's JSON, without the trailing `\n`.
    pub json: Bytes,
    pub meta: Meta,
}

impl Entry {
    pub fn start(&self) -> u64 {
        self.end - self.json.len() as u64 - 1
    }
}

/// What a publisher is told once its event is durable.
#[derive(Debug, Clone)]
pub struct Appended {
    pub id: String,
    pub ts: String,
    pub offset: u64,
}

#[derive(Debug, Error, Clone)]
pub enum AppendError {
    #[error("could not write the log: {0}")]
    Io(String),
    #[error("the daemon is shutting down")]
    ShuttingDown,
}

// Appends travel by value: boxing would add an allocation per event.
#[allow(clippy::large_enum_variant)]
enum WriterMsg {
    Append(Pending),
    Shutdown(oneshot::Sender<()>),
}

struct Pending {
    event: Event,
    /// A replica of another node's event (src/cluster): its `id` and `ts`
    /// stay as that node minted them.
    keep_id: bool,
    reply: oneshot::Sender<Result<Appended, AppendError>>,
}

struct Ring {
    entries: VecDeque<Arc<Entry>>,
    bytes: usize,
    cap: usize,
}

/// Per-entry bookkeeping counted against the ring's budget besides the JSON.
const ENTRY_OVERHEAD: usize = 128;

impl Ring {
    fn push(&mut self, e: Arc<Entry>) {
        self.bytes += e.json.len() + ENTRY_OVERHEAD;
        self.entries.push_back(e);
        while self.bytes > self.cap && self.entries.len() > 1 {
            if let Some(old) = self.entries.pop_front() {
                self.bytes -= old.json.len() + ENTRY_OVERHEAD;
            }
        }
    }
}

struct Shared {
    ring: RwLock<Ring>,
    files: RwLock<FileSet>,
    lines: Arc<Mutex<LineIndex>>,
    hops: Arc<Mutex<HopIndex>>,
}

impl Shared {
    /// Runs `f` on the file set under its read lock (which only a roll or a
    /// retention pass takes for writing). Keep `f` free of I/O: take the
    /// `Arc<File>` you need and read after.
    fn with_files<R>(&self, f: impl FnOnce(&FileSet) -> R) -> io::Result<R> {
        self.files
            .read()
            .map(|files| f(&files))
            .map_err(|_| io::Error::other("log file set lock poisoned"))
    }
}

/// Where a backwards read goes: the file holding the byte before `before`,
/// and the oldest kept offset. `None`: nothing (more) to read.
fn back_target(files: &FileSet, end: u64, before: u64) -> Option<(Located, u64)> {
    let before = before.min(end);
    if before == 0 || before <= files.oldest() {
        return None;
    }
    files
        .locate(before - 1, end)
        .map(|loc| (loc, files.oldest()))
}

/// Handle to the log, shared by every connection and station.
pub struct Log {
    dir: PathBuf,
    shared: Arc<Shared>,
    tx: mpsc::Sender<WriterMsg>,
    end_rx: watch::Receiver<u64>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    foreign: Arc<ForeignStats>,
}

/// What [`Log::open`] found and repaired.
#[derive(Debug, Clone, Default)]
pub struct Recovery {
    /// Bytes of a torn last line that were cut off.
    pub cut_bytes: u64,
}

/// Largest chunk read from the file at once by catch-up readers.
const READ_CHUNK: usize = 256 << 10;
/// Most entries handed out by one ring or file read.
pub const MAX_ENTRIES_PER_READ: usize = 1024;
/// How often age-based rolling and retention are checked.
const HOUSEKEEPING: Duration = Duration::from_secs(1);
/// A batch smaller than this and than the previous batch, right after
/// another commit, waits [`GATHER`] once for more (not under `--fsync
/// always`, whose fdatasync already gathers). A lone publisher (previous
/// batch of one) never waits.
const SMALL_BATCH: usize = 64;
const BUSY: Duration = Duration::from_micros(80);
const GATHER: Duration = Duration::from_micros(50);
/// Most appends committed in one batch.
const MAX_BATCH: usize = 4096;
/// Appends waiting for the writer before publishers wait too.
const QUEUE: usize = 8192;

impl Log {
    /// Opens (creating) the log in `dir`, repairs a torn tail and starts the
    /// writer.
    pub fn open(
        dir: &Path,
        opts: LogOptions,
        lines: Arc<Mutex<LineIndex>>,
        hops: Arc<Mutex<HopIndex>>,
    ) -> io::Result<(Log, Recovery)> {
        let existed = dir.join(segments::ACTIVE).exists();
        let (segs, active_base) = segments::scan(dir)?;
        let mut file = segments::open_active(dir)?;
        if !existed {
            File::open(dir)?.sync_all()?;
        }
        let cut_bytes = cut_torn_tail(&mut file)?;
        let end = active_base + file.metadata()?.len();
        let files = FileSet {
            dir: dir.to_path_buf(),
            segments: segs,
            active_base,
            active: Arc::new(super::open_state(
                std::fs::OpenOptions::new().read(true),
                &dir.join(segments::ACTIVE),
            )?),
        };
        let last_ms = last_timestamp(&files, end);
        let shared = Arc::new(Shared {
            ring: RwLock::new(Ring {
                entries: VecDeque::new(),
                bytes: 0,
                cap: opts.ring_bytes.max(64 << 10),
            }),
            files: RwLock::new(files),
            lines,
            hops,
        });
        let (tx, rx) = mpsc::channel(QUEUE);
        let (end_tx, end_rx) = watch::channel(end);
        let mut w = Writer {
            file,
            pos: end,
            active_base,
            opened: std::time::Instant::now(),
            end_tx,
            shared: shared.clone(),
            opts,
            mint: Mint::new(last_ms),
            unsynced: false,
            last_sync: std::time::Instant::now(),
            last_commit: std::time::Instant::now(),
            last_batch: 0,
            broken: None,
            foreign: Foreign::default(),
        };
        let foreign = w.foreign.stats.clone();
        // Retention applies at startup too (the limits may have shrunk).
        w.retention();
        let handle = std::thread::Builder::new()
            .name("metro-log-writer".into())
            .spawn(move || writer_thread(w, rx))?;
        let log = Log {
            dir: dir.to_path_buf(),
            shared,
            tx,
            end_rx,
            writer: Mutex::new(Some(handle)),
            foreign,
        };
        Ok((log, Recovery { cut_bytes }))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The oldest offset still on disk (0 until retention deletes a
    /// segment).
    pub fn oldest(&self) -> u64 {
        self.shared.with_files(|f| f.oldest()).unwrap_or(0)
    }

    /// Rolled segments on disk and bytes in all files.
    pub fn disk_usage(&self) -> (usize, u64) {
        let end = self.end();
        self.shared
            .with_files(|f| (f.segments.len(), f.bytes(end)))
            .unwrap_or((0, 0))
    }

    /// Offset just after the last committed entry.
    pub fn end(&self) -> u64 {
        *self.end_rx.borrow()
    }

    /// What other writers of `history.jsonl` did: lines adopted, torn
    /// tails ended.
    pub fn foreign_stats(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.foreign.adopted_lines.load(Relaxed),
            self.foreign.ended_tails.load(Relaxed),
        )
    }

    /// A receiver that changes whenever entries are committed.
    pub fn watch_end(&self) -> watch::Receiver<u64> {
        self.end_rx.clone()
    }

    /// Appends one event (its `id` and `ts` are minted here) and waits until
    /// it is durable under the fsync policy.
    pub async fn append(&self, event: Event) -> Result<Appended, AppendError> {
        self.append_as(event, false).await
    }

    /// Appends another node's event as it is (cluster replication): its
    /// `id` and `ts` are kept, nothing is minted.
    pub async fn append_replica(&self, event: Event) -> Result<Appended, AppendError> {
        self.append_as(event, true).await
    }

    async fn append_as(&self, event: Event, keep_id: bool) -> Result<Appended, AppendError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(WriterMsg::Append(Pending {
                event,
                keep_id,
                reply,
            }))
            .await
            .map_err(|_| AppendError::ShuttingDown)?;
        rx.await.map_err(|_| AppendError::ShuttingDown)?
    }

    /// Lets the writer commit what is queued, sync, and stop. Appends after
    /// this answer [`AppendError::ShuttingDown`].
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(WriterMsg::Shutdown(tx)).await.is_ok() {
            let _ = rx.await;
        }
        let handle = self.writer.lock().ok().and_then(|mut h| h.take());
        if let Some(h) = handle {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
    }

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

/// The `ts` of the last entry (so timestamps never go backwards across a
/// restart either), or 0.
fn last_timestamp(files: &FileSet, end: u64) -> i128 {
    #[derive(Deserialize)]
    struct Ts<'a> {
        #[serde(borrow)]
        ts: Cow<'a, str>,
    }
    let Some(target) = back_target(files, end, end) else {
        return 0;
    };
    let Ok((lines, _)) = read_back(target, end, 64 << 10) else {
        return 0;
    };
    lines
        .first()
        .and_then(|(_, json)| serde_json::from_slice::<Ts>(json).ok())
        .and_then(|t| crate::clock::parse_ms(&t.ts))
        .unwrap_or(0)
}

/// Cuts a last line without its `\n`. Reads backwards only as far as the
/// last `\n`.
fn cut_torn_tail(file: &mut File) -> io::Result<u64> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(0);
    }
    let mut last = [0u8; 1];
    file.read_exact_at(&mut last, len - 1)?;
    if last[0] == b'\n' {
        return Ok(0);
    }
    let (keep, _) = scan_back_for_newline(file, len)?;
    file.set_len(keep)?;
    file.sync_all()?;
    Ok(len - keep)
}

/// Finds the offset just after the last `\n` before `offset` (0 if none).
/// Returns it and the number of bytes read.
fn scan_back_for_newline(file: &File, offset: u64) -> io::Result<(u64, u64)> {
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

fn read_entries(loc: &Located, pos: u64, until: u64) -> io::Result<Vec<Arc<Entry>>> {
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

fn read_back(
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
fn read_back_in(file: &File, before: u64, chunk: usize) -> io::Result<(Vec<(u64, Bytes)>, u64)> {
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

/// Mints ids (`msg_` + 11 hex digits of milliseconds + 6 of a per-process
/// random counter) and timestamps that never go backwards.
struct Mint {
    last_ms: i128,
    counter: u32,
    /// The formatted `ts` of `last_ms`: events of one millisecond share it.
    ts: String,
}

impl Mint {
    fn new(last_ms: i128) -> Mint {
        let mut seed = [0u8; 4];
        let _ = getrandom::fill(&mut seed);
        Mint {
            last_ms,
            counter: u32::from_le_bytes(seed),
            ts: String::new(),
        }
    }

    fn next(&mut self) -> (String, String) {
        let now = time::OffsetDateTime::now_utc();
        let ms = (now.unix_timestamp_nanos() / 1_000_000).max(self.last_ms);
        if ms != self.last_ms || self.ts.is_empty() {
            self.ts = crate::clock::format_ms(ms);
        }
        self.last_ms = ms;
        self.counter = self.counter.wrapping_add(1);
        let id = format!("msg_{:011x}{:06x}", ms as u64, self.counter & 0xff_ffff);
        (id, self.ts.clone())
    }
}

fn writer_thread(mut w: Writer, rx: mpsc::Receiver<WriterMsg>) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("log writer could not start: {e}");
            return;
        }
    };
    rt.block_on(w.run(rx));
}

struct Writer {
    file: File,
    pos: u64,
    /// Global offset of `history.jsonl`'s first byte.
    active_base: u64,
    /// When `history.jsonl` was opened (for rolling by age).
    opened: std::time::Instant,
    end_tx: watch::Sender<u64>,
    shared: Arc<Shared>,
    opts: LogOptions,
    mint: Mint,
    unsynced: bool,
    last_sync: std::time::Instant,
    last_commit: std::time::Instant,
    /// Appends in the last batch: how many publishers were active then.
    last_batch: usize,
    /// Set when the file could not be restored after a failed write: every
    /// later append is refused rather than risk a torn log.
    broken: Option<String>,
    /// Bytes other processes appended (see `log/foreign.rs`).
    foreign: Foreign,
}

impl Writer {
    async fn run(&mut self, mut rx: mpsc::Receiver<WriterMsg>) {
        let mut batch: Vec<Pending> = Vec::new();
        let mut shutdown = None;
        let timed = self.opts.segment_age.is_some() || self.opts.retain_age.is_some();
        let mut housekeeping = tokio::time::interval(HOUSEKEEPING);
        housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut idle_check = tokio::time::interval(foreign::IDLE_CHECK);
        idle_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let sync_at = match (self.opts.fsync, self.unsynced) {
                (FsyncPolicy::Interval(every), true) => {
                    Some(tokio::time::Instant::from_std(self.last_sync + every))
                }
                _ => None,
            };
            let msg = tokio::select! {
                m = rx.recv() => m,
                _ = async {
                    match sync_at {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                } => {
                    self.sync();
                    continue;
                }
                _ = idle_check.tick() => {
                    if self.broken.is_none() {
                        self.check_foreign(false);
                    }
                    continue;
                }
                _ = housekeeping.tick(), if timed => {
                    if self.opts.segment_age.is_some_and(|age| self.opened.elapsed() >= age)
                        && self.pos > self.active_base
                    {
                        self.roll();
                    }
                    self.retention();
                    continue;
                }
            };
            match msg {
                None => break,
                Some(WriterMsg::Shutdown(tx)) => {
                    shutdown = Some(tx);
                    break;
                }
                Some(WriterMsg::Append(p)) => batch.push(p),
            }
            // Under load without a per-batch fsync, batches would stay tiny
            // (the writer outruns the connections and pays a write and
            // the wake-ups per handful of events): when the last commit was
            // just now and carried more appends than are queued now (other
            // publishers are on their way), give them a moment to queue
            // more. A request that comes alone, as the last one did, is
            // committed at once: there is nothing to gather.
            let mut waited = false;
            loop {
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(WriterMsg::Append(p)) => batch.push(p),
                        Ok(WriterMsg::Shutdown(tx)) => {
                            shutdown = Some(tx);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                let busy = self.last_commit.elapsed() < BUSY;
                if waited
                    || shutdown.is_some()
                    || batch.len() >= SMALL_BATCH.min(self.last_batch)
                    || !busy
                    || self.opts.fsync == FsyncPolicy::Always
                {
                    break;
                }
                std::thread::sleep(GATHER);
                waited = true;
            }
            self.last_batch = batch.len();
            self.commit(&mut batch);
            self.last_commit = std::time::Instant::now();
            if shutdown.is_some() {
                break;
            }
        }
        rx.close();
        while let Ok(msg) = rx.try_recv() {
            match msg {
                WriterMsg::Append(p) => {
                    let _ = p.reply.send(Err(AppendError::ShuttingDown));
                }
                WriterMsg::Shutdown(tx) => {
                    let _ = tx.send(());
                }
            }
        }
        if self.opts.fsync != FsyncPolicy::Never || self.unsynced {
            self.sync();
        }
        if let Some(tx) = shutdown {
            let _ = tx.send(());
        }
    }

    fn sync(&mut self) {
        if let Err(e) = self.file.sync_data() {
            tracing::error!("fdatasync of the log failed: {e}");
        }
        self.unsynced = false;
        self.last_sync = std::time::Instant::now();
    }

    fn commit(&mut self, batch: &mut Vec<Pending>) {
        if let Some(why) = &self.broken {
            for p in batch.drain(..) {
                let _ = p.reply.send(Err(AppendError::Io(why.clone())));
            }
            return;
        }
        let mut buf = Vec::with_capacity(batch.len() * 384);
        let mut spans = Vec::with_capacity(batch.len());
        let mut kept = Vec::with_capacity(batch.len());
        for mut p in batch.drain(..) {
            if !p.keep_id {
                let (id, ts) = self.mint.next();
                p.event.id = id;
                p.event.ts = ts;
            }
            let start = buf.len();
            // Serializing an Event (strings and JSON values) does not fail;
            // if it ever did, that one event is refused, never half-written.
            if let Err(e) = serde_json::to_writer(&mut buf, &p.event) {
                buf.truncate(start);
                let _ = p
                    .reply
                    .send(Err(AppendError::Io(format!("cannot serialize: {e}"))));
                continue;
            }
            buf.push(b'\n');
            spans.push((start, buf.len()));
            kept.push(p);
        }
        *batch = kept;
        if batch.is_empty() {
            return;
        }
        // Another writer's bytes are adopted first; metrod never appends
        // after a foreign line that lacks its `\n`.
        self.check_foreign(true);
        let written = self.file.write_all(&buf).and_then(|()| {
            if self.opts.fsync == FsyncPolicy::Always {
                self.file.sync_data()
            } else {
                Ok(())
            }
        });
        if let Err(e) = written {
            let why = e.to_string();
            tracing::error!(
                offset = self.pos,
                "append of {} events failed: {why}",
                batch.len()
            );
            // Cut whatever part of the batch reached the file.
            let why = match self.file.set_len(self.pos) {
                Ok(()) => format!("{why}; nothing was written"),
                Err(e2) => {
                    let msg = format!(
                        "the log could not be cut back to offset {} after a failed write ({e2}); \
                         it may end in part of this batch, which a restart repairs; \
                         metrod refuses appends until then",
                        self.pos
                    );
                    tracing::error!("{msg}");
                    self.broken = Some(msg.clone());
                    format!("{why}; {msg}")
                }
            };
            for p in batch.drain(..) {
                let _ = p.reply.send(Err(AppendError::Io(why.clone())));
            }
            return;
        }
        if self.opts.fsync != FsyncPolicy::Always {
            self.unsynced = true;
        }
        let (base, torn) = match self.landing(buf.len()) {
            Landing::Expected => (self.pos, None),
            Landing::After { start, torn } => (start, torn),
        };
        self.pos = base + buf.len() as u64;
        let bytes = Bytes::from(buf);
        let mut entries: Vec<Arc<Entry>> = batch
            .iter()
            .zip(&spans)
            .map(|(p, &(s, e))| {
                Arc::new(Entry {
                    end: base + e as u64,
                    json: bytes.slice(s..e - 1),
                    meta: Meta::of(&p.event),
                })
            })
            .collect();
        // A foreign piece without `\n` glued to this batch's first line (a
        // race with another writer): that line is malformed, its event
        // refused.
        let refused = usize::from(torn.is_some());
        if let Some(torn) = torn {
            let first = batch.remove(0);
            let mut json = torn.to_vec();
            json.extend_from_slice(&entries[0].json);
            entries[0] = Arc::new(Entry {
                end: entries[0].end,
                json: Bytes::from(json),
                meta: Meta::default(),
            });
            let _ = first.reply.send(Err(AppendError::Io(
                "another process wrote a torn line into history.jsonl at the same moment; \
                 this event was not stored, send it again"
                    .into(),
            )));
        }
        if let Ok(mut ring) = self.shared.ring.write() {
            for e in &entries {
                ring.push(e.clone());
            }
        }
        if let Ok(mut lines) = self.shared.lines.lock() {
            for p in batch.iter() {
                lines.observe(&p.event);
            }
        }
        // Before the entries are visible: a reply must find its hops.
        if batch.iter().any(|p| p.event.hops > 0) {
            if let Ok(mut hops) = self.shared.hops.lock() {
                for p in batch.iter() {
                    hops.observe(&p.event);
                }
            }
        }
        self.end_tx.send_replace(self.pos);
        for (p, e) in batch.drain(..).zip(&entries[refused..]) {
            let _ = p.reply.send(Ok(Appended {
                id: p.event.id,
                ts: p.event.ts,
                offset: e.end,
            }));
        }
        if self.pos - self.active_base >= self.opts.segment_bytes {
            self.roll();
        }
    }

    /// Turns `history.jsonl` into the segment `history.<base>.jsonl` and
    /// starts a new, empty `history.jsonl`. On failure the current file
    /// simply stays active (and the roll is tried again later).
    fn roll(&mut self) {
        // Whatever another writer appended belongs to this file.
        self.check_foreign(true);
        let dir = match self.shared.with_files(|f| f.dir.clone()) {
            Ok(d) => d,
            Err(_) => return,
        };
        let base = self.active_base;
        let seg_path = dir.join(segments::segment_name(base));
        let renamed = std::fs::rename(dir.join(segments::ACTIVE), &seg_path);
        if renamed.is_ok() {
            // Bytes another writer appended by path until the rename are
            // this segment's (the handle still holds the renamed file).
            self.check_foreign(true);
        }
        let result = renamed.and_then(|()| -> io::Result<File> {
            self.file.sync_all()?;
            let fresh = segments::open_active(&dir)?;
            File::open(&dir)?.sync_all()?;
            crate::store::write_atomic(
                &dir.join(segments::BASE),
                self.pos.to_string().as_bytes(),
                true,
            )?;
            Ok(fresh)
        });
        let fresh = match result {
            Ok(f) => f,
            Err(e) => {
                tracing::error!("could not roll the log at offset {}: {e}", self.pos);
                // If the rename happened, history.jsonl may be missing:
                // reopen whatever is there so appends go on.
                if let Ok(f) = segments::open_active(&dir) {
                    self.file = f;
                }
                return;
            }
        };
        let reader = match super::open_state(
            std::fs::OpenOptions::new().read(true),
            &dir.join(segments::ACTIVE),
        ) {
            Ok(r) => Arc::new(r),
            Err(e) => {
                tracing::error!("could not open the new history.jsonl: {e}");
                return;
            }
        };
        let len = self.pos - base;
        if let Ok(mut files) = self.shared.files.write() {
            let old_active = std::mem::replace(&mut files.active, reader);
            files.segments.push(Segment {
                start: base,
                len,
                path: seg_path,
                file: old_active,
                modified: std::time::SystemTime::now(),
            });
            files.active_base = self.pos;
        }
        let old = std::mem::replace(&mut self.file, fresh);
        self.foreign.watch_rolled(old, len);
        self.active_base = self.pos;
        self.opened = std::time::Instant::now();
        tracing::info!(
            "rolled {len} bytes into segment {base}; history.jsonl starts at {}",
            self.pos
        );
        self.retention();
    }

    /// Deletes the oldest segments beyond `--retain-bytes` / `--retain-age`.
    /// The active file is never deleted.
    fn retention(&mut self) {
        if self.opts.retain_bytes.is_none() && self.opts.retain_age.is_none() {
            return;
        }
        let Ok(mut files) = self.shared.files.write() else {
            return;
        };
        let mut total = files.bytes(self.pos);
        while let Some(oldest) = files.segments.first() {
            let too_big = self.opts.retain_bytes.is_some_and(|max| total > max);
            let too_old = self
                .opts
                .retain_age
                .is_some_and(|age| oldest.modified.elapsed().is_ok_and(|elapsed| elapsed > age));
            if !too_big && !too_old {
                break;
            }
            let seg = files.segments.remove(0);
            total -= seg.len;
            match std::fs::remove_file(&seg.path) {
                Ok(()) => tracing::info!(
                    "retention deleted segment {} ({} bytes, offsets {}..{})",
                    seg.path.display(),
                    seg.len,
                    seg.start,
                    seg.end()
                ),
                Err(e) => tracing::error!("could not delete {}: {e}", seg.path.display()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fsync_policy_parses() {
        assert_eq!("always".parse::<FsyncPolicy>(), Ok(FsyncPolicy::Always));
        assert_eq!(
            "interval:250".parse::<FsyncPolicy>(),
            Ok(FsyncPolicy::Interval(Duration::from_millis(250)))
        );
        assert!("interval:0".parse::<FsyncPolicy>().is_err());
        assert!("sometimes".parse::<FsyncPolicy>().is_err());
    }

    #[test]
    fn torn_tail_is_cut_and_reads_go_both_ways() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.jsonl");
        std::fs::write(
            &path,
            b"{\"line\":\"metro://a/b\"}\n{\"line\":\"metro://a/c\"}\n{\"li",
        )
        .unwrap();
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        assert_eq!(cut_torn_tail(&mut f).unwrap(), 4);
        let len = f.metadata().unwrap().len();
        assert_eq!(len, 46);
        let loc = Located {
            file: Arc::new(f.try_clone().unwrap()),
            base: 1000,
            end: 1000 + len,
        };
        // Offsets are global: this file starts at 1000.
        let entries = read_entries(&loc, 1000, 1000 + len).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].end, 1023);
        assert_eq!(&*entries[1].meta.line, "metro://a/c");
        assert_eq!(&*entries[1].meta.to, "metro://a/c");
        let (back, next) = read_back_in(&f, len, 30).unwrap();
        let ends: Vec<u64> = back.iter().map(|(end, _)| *end).collect();
        assert_eq!(ends, vec![46, 23], "newest first");
        assert_eq!(&back[1].1[..], b"{\"line\":\"metro://a/b\"}");
        assert_eq!(next, 0);
        let (back, next) = read_back_in(&f, 23, 30).unwrap();
        assert_eq!((back.len(), next), (1, 0));
    }
}
