//! The event log, `history.jsonl`: the handle every connection and station
//! shares ([`Log`]): opening (torn-tail repair, the writer's start), appends
//! and shutdown. The log's other concerns live in `log/`:
//!
//! - `entry.rs`: a committed entry, its predicate fields, the ring of recent
//!   entries;
//! - `read.rs`: readers (ring, file chunks, backwards, entry boundaries);
//! - `writer.rs`: the writer thread and group commit;
//! - `retention.rs`: rolling segments and deleting old ones;
//! - `mint.rs`: `id` and `ts` minting;
//! - `foreign.rs`: bytes other processes append.
//!
//! In short:
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
//!
//! This file must not import the server, broker or stations: the log knows
//! events (`proto::Event`) and files, nothing above them.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;
use tokio::sync::{mpsc, oneshot, watch};

use super::hops::HopIndex;
use super::lines::LineIndex;
use super::segments::{self, FileSet};
use crate::proto::Event;

mod entry;
mod foreign;
mod mint;
mod read;
mod retention;
mod seek;
mod writer;

use entry::Ring;
pub use entry::{Entry, Meta};
use foreign::{Foreign, ForeignStats};
use mint::Mint;
pub use read::MAX_ENTRIES_PER_READ;
use read::{back_target, read_back, scan_back_for_newline};
use writer::{writer_thread, Core, Pending, Writer, WriterMsg};

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

/// Handle to the log, shared by every connection and station.
pub struct Log {
    dir: PathBuf,
    shared: Arc<Shared>,
    tx: mpsc::Sender<WriterMsg>,
    end_rx: watch::Receiver<u64>,
    core: Arc<Core>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    foreign: Arc<ForeignStats>,
}

/// What [`Log::open`] found and repaired.
#[derive(Debug, Clone, Default)]
pub struct Recovery {
    /// Bytes of a torn last line that were cut off.
    pub cut_bytes: u64,
}

/// Messages (one append, or one connection's group of appends) waiting
/// for the writer before senders wait too.
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
            stopped: false,
            defer_roll: false,
            sync_cost: Duration::ZERO,
            rolls: watch::channel(0).0,
        };
        let foreign = w.foreign.stats.clone();
        // Retention applies at startup too (the limits may have shrunk).
        w.retention();
        let core = Arc::new(Core::new(w));
        let thread_core = core.clone();
        let handle = std::thread::Builder::new()
            .name("metro-log-writer".into())
            .spawn(move || writer_thread(thread_core, rx))?;
        let log = Log {
            dir: dir.to_path_buf(),
            shared,
            tx,
            end_rx,
            core,
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
    /// A lone append under `--fsync never` is committed right here (see
    /// `log/writer.rs`); the others go to the writer thread.
    pub async fn append(&self, event: Event) -> Result<Appended, AppendError> {
        self.append_as(Box::new(event), false, false).await
    }

    /// [`Log::append`] for an event already boxed (the publish op boxes it
    /// once, so its futures and the writer's queue move a pointer, not the
    /// event's ≈ 650 bytes). `alone`: the request is its client's only one,
    /// read after the connection waited for it; only such an append may
    /// wait for an `fdatasync` in place under `--fsync always` (a
    /// pipelining client's next requests would wait behind it unread).
    pub async fn append_boxed(
        &self,
        event: Box<Event>,
        alone: bool,
    ) -> Result<Appended, AppendError> {
        self.append_as(event, false, alone).await
    }

    /// Appends another node's event as it is (cluster replication): its
    /// `id` and `ts` are kept, nothing is minted.
    pub async fn append_replica(&self, event: Event) -> Result<Appended, AppendError> {
        self.append_as(Box::new(event), true, false).await
    }

    async fn append_as(
        &self,
        event: Box<Event>,
        keep_id: bool,
        alone: bool,
    ) -> Result<Appended, AppendError> {
        let event = match self.core.commit_here(event, keep_id, alone) {
            Ok(done) => return done.answer().await,
            Err(event) => event,
        };
        let (reply, rx) = oneshot::channel();
        let queued = self.core.enqueue();
        self.tx
            .send(WriterMsg::Append(Pending {
                event,
                keep_id,
                reply,
            }))
            .await
            .map_err(|_| AppendError::ShuttingDown)?;
        queued.sent();
        rx.await.map_err(|_| AppendError::ShuttingDown)?
    }

    /// Hands the events of one read of a pipelining connection (see
    /// `server/connection.rs`) to the writer thread as one message, never
    /// committed in place: one queue slot and one wake for all of them
    /// instead of one each. Once this returns they are queued, in this
    /// order, ahead of any append that starts later; each gets its own
    /// answer from [`Group::answers`], as with [`Log::append`]. Waits
    /// only while the writer's queue is full.
    pub async fn send_group(&self, events: Vec<Box<Event>>) -> Group {
        let mut answers = Vec::with_capacity(events.len());
        let pending: Vec<Pending> = events
            .into_iter()
            .map(|event| {
                let (reply, rx) = oneshot::channel();
                answers.push(rx);
                Pending {
                    event,
                    keep_id: false,
                    reply,
                }
            })
            .collect();
        let queued = self.core.enqueue_many(pending.len());
        // A refused send drops the senders: every answer is then
        // `ShuttingDown`. The wait for room is boxed: this future is part
        // of every connection's read loop, which an idle connection holds.
        let sent = match self.tx.try_send(WriterMsg::AppendMany(pending)) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(msg)) => Box::pin(self.tx.send(msg)).await.is_ok(),
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        };
        if sent {
            queued.sent();
        }
        Group(answers)
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
}

/// Appends queued by [`Log::send_group`], waiting for their answers.
pub struct Group(Vec<oneshot::Receiver<Result<Appended, AppendError>>>);

impl Group {
    /// Each append's answer, in the order they were sent.
    pub async fn answers(self) -> Vec<Result<Appended, AppendError>> {
        let mut out = Vec::with_capacity(self.0.len());
        for rx in self.0 {
            out.push(rx.await.unwrap_or(Err(AppendError::ShuttingDown)));
        }
        out
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

#[cfg(test)]
mod tests {
    use super::read::{read_back_in, read_entries};
    use super::segments::Located;
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
