//! The writer thread and group commit: appends arrive on one channel; the
//! writer drains what is queued into a batch (waiting briefly only when
//! other publishers are on their way), mints `id` and `ts`, writes the batch
//! with one `write` (and one `fdatasync` under `--fsync always`), then makes
//! the entries visible (ring, indexes, committed end) and answers each
//! publisher. It also runs the timers: interval syncs, the idle foreign
//! check, age-based rolling and retention (`retention.rs`).
//!
//! A lone append skips the thread: when nothing is queued for the writer
//! thread and the writer is idle, the appending task commits its event
//! itself ([`Core::commit_here`]), saving the two thread wake-ups of the
//! hand-off (to the writer thread and back). Nothing can be passed that
//! way: an append queued earlier keeps every later one on the queue until
//! it is committed. Under `--fsync never` that is one `write`; under
//! `--fsync always` it is a `write` and an `fdatasync` on a runtime worker,
//! as Redis does on its one thread, allowed only for a publish that is its
//! client's only request, while the disk's last sync took under
//! [`FAST_SYNC`] and no batch of several is being gathered (see [`lone`]).
//! An append whose commit made a roll due is answered after the roll.
//!
//! Must not import the readers (`read.rs`) or anything above the store.

use std::fs::File;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};

use super::foreign::{self, Foreign, Landing};
use super::{AppendError, Appended, Entry, FsyncPolicy, LogOptions, Meta, Mint, Shared};
use crate::proto::Event;

pub(super) enum WriterMsg {
    Append(Pending),
    /// The appends of one connection's read, in order.
    AppendMany(Vec<Pending>),
    Shutdown(oneshot::Sender<()>),
}

pub(super) struct Pending {
    /// Boxed: an event is ≈ 650 bytes, and a queued append is moved into
    /// the channel, out of it and into the batch (profiled: `memmove` was
    /// the writer's largest cost after serializing).
    pub(super) event: Box<Event>,
    /// A replica of another node's event (src/cluster): its `id` and `ts`
    /// stay as that node minted them.
    pub(super) keep_id: bool,
    pub(super) reply: oneshot::Sender<Result<Appended, AppendError>>,
}

/// How often age-based rolling and retention are checked.
const HOUSEKEEPING: Duration = Duration::from_secs(1);
/// A batch smaller than this and than the previous batch, right after
/// another commit, waits [`GATHER`] once for more (not under `--fsync
/// always`, whose fdatasync already gathers). A lone publisher (previous
/// batch of one) never waits.
const SMALL_BATCH: usize = 64;
const BUSY: Duration = Duration::from_micros(80);
const GATHER: Duration = Duration::from_micros(50);
/// Most appends gathered into one batch (the last message taken may carry
/// it past this by the rest of one connection's group: ≤ 63 more, see
/// `server/connection.rs`).
const MAX_BATCH: usize = 4096;
/// Under `--fsync never`, an append within this time of the last commit is
/// never committed in place (see [`Core::commit_here`]).
const QUIET: Duration = Duration::from_micros(10);
/// Under `--fsync always`, an append is committed in place (its
/// `fdatasync` blocking a runtime worker) only while the last sync took
/// less than this: a slow or stalling disk leaves every sync to the writer
/// thread until it is fast again.
const FAST_SYNC: Duration = Duration::from_millis(1);
/// The longest a commit in place that made a roll due waits for the
/// writer thread's roll before it answers.
const ROLL_WAIT: Duration = Duration::from_secs(5);
/// Under `--fsync always`, after the thread's last batch held several
/// appends (publishers at once), an append waits this long after that
/// commit before it is committed in place again: a lone commit's
/// `fdatasync` would otherwise split their batches.
const GATHERING: Duration = Duration::from_millis(1);

/// The writer's state and what decides whether an append may be committed
/// in place.
pub(super) struct Core {
    writer: Mutex<Writer>,
    /// Appends handed to the writer thread and not yet committed or
    /// refused. Bumped before the send, lowered under the lock after the
    /// commit: while it is 0 under the lock, nothing older is waiting.
    queued: AtomicUsize,
    /// Which commits in place are allowed: `--fsync never` (a commit is
    /// one `write`) and `always` (a `write` and an `fdatasync`); not under
    /// `interval`, whose timer belongs to the thread.
    fsync: FsyncPolicy,
    /// Wakes the writer thread for a roll a commit in place left due (a
    /// roll syncs files: it never runs in a connection's task).
    roll_due: tokio::sync::Notify,
}

impl Core {
    pub(super) fn new(w: Writer) -> Core {
        let fsync = w.opts.fsync;
        Core {
            writer: Mutex::new(w),
            queued: AtomicUsize::new(0),
            fsync,
            roll_due: tokio::sync::Notify::new(),
        }
    }

    /// The writer, also after a panic in a commit (the log is then refused
    /// for good rather than risk a torn file).
    fn lock(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(|poisoned| {
            let mut w = poisoned.into_inner();
            w.broken.get_or_insert_with(|| {
                "a commit of the log writer panicked; restart metrod".to_string()
            });
            w
        })
    }

    /// Commits `event` now, in the calling task, when that is allowed and
    /// the writer is idle with nothing queued (a lone append); else hands
    /// the event back for the writer thread.
    pub(super) fn commit_here(
        &self,
        event: Box<Event>,
        keep_id: bool,
        alone: bool,
    ) -> Result<InPlace, Box<Event>> {
        if matches!(self.fsync, FsyncPolicy::Interval(_))
            || self.queued.load(Ordering::Acquire) != 0
        {
            return Err(event);
        }
        let Ok(mut w) = self.writer.try_lock() else {
            return Err(event);
        };
        let lone = lone(
            self.fsync,
            alone,
            w.last_commit.elapsed(),
            w.last_batch,
            w.sync_cost,
        );
        if !lone || w.stopped || self.queued.load(Ordering::Acquire) != 0 || w.roll_is_due() {
            return Err(event);
        }
        let (reply, mut rx) = oneshot::channel();
        let mut batch = vec![Pending {
            event,
            keep_id,
            reply,
        }];
        // `last_batch` stays the thread's: a commit in place between two
        // batches of many publishers must not end their gathering.
        w.defer_roll = true;
        w.commit(&mut batch);
        w.defer_roll = false;
        w.last_commit = std::time::Instant::now();
        // Subscribed under the lock: the thread cannot roll before.
        let roll = w.roll_is_due().then(|| w.rolls.subscribe());
        drop(w);
        let answer = rx.try_recv().unwrap_or(Err(AppendError::ShuttingDown));
        Ok(match roll {
            Some(rolls) => {
                self.roll_due.notify_one();
                InPlace::AfterRoll(answer, rolls)
            }
            None => InPlace::Done(answer),
        })
    }

    /// Counts an append about to be sent to the writer thread; the count
    /// drops again if the returned guard is dropped before [`Queued::sent`].
    pub(super) fn enqueue(&self) -> Queued<'_> {
        self.enqueue_many(1)
    }

    /// [`Core::enqueue`] for `n` appends sent in one message.
    pub(super) fn enqueue_many(&self, n: usize) -> Queued<'_> {
        self.queued.fetch_add(n, Ordering::AcqRel);
        Queued(Some((&self.queued, n)))
    }
}

/// Whether an append that finds the writer idle and nothing queued may be
/// committed in place, given whether it is its client's only request
/// (`alone`), the time since the last commit, the size of the thread's last
/// batch and the last `fdatasync`'s duration.
fn lone(
    fsync: FsyncPolicy,
    alone: bool,
    since_commit: Duration,
    last_batch: usize,
    sync_cost: Duration,
) -> bool {
    match fsync {
        // A commit just now means appends are coming back to back (a
        // pipelining connection, or many publishers): leave them to the
        // writer thread, which batches them.
        FsyncPolicy::Never => since_commit >= QUIET,
        // Only a client's only request: a pipelining client's next ones
        // would wait unread behind the sync instead of joining a batch. The
        // sync gathers whoever arrives meanwhile; a lone commit between the
        // thread's batches of many would halve them. And a slow disk never
        // blocks a runtime worker.
        FsyncPolicy::Always => {
            alone && sync_cost < FAST_SYNC && (last_batch <= 1 || since_commit >= GATHERING)
        }
        // The interval sync is the thread's timer.
        FsyncPolicy::Interval(_) => false,
    }
}

/// An append committed in place.
pub(super) enum InPlace {
    Done(Result<Appended, AppendError>),
    /// Its commit made a roll due, left to the writer thread: answered once
    /// the roll count moves (as the thread answers a batch after its roll).
    AfterRoll(Result<Appended, AppendError>, watch::Receiver<u64>),
}

impl InPlace {
    pub(super) async fn answer(self) -> Result<Appended, AppendError> {
        match self {
            InPlace::Done(answer) => answer,
            InPlace::AfterRoll(answer, mut rolls) => {
                // The event is stored either way: a writer thread that is
                // gone (an error) or a roll that takes very long only cost
                // the order of answer and roll, never the answer.
                let _ = tokio::time::timeout(ROLL_WAIT, rolls.changed()).await;
                answer
            }
        }
    }
}

/// Appends counted in [`Core::queued`] on their way to the writer thread.
pub(super) struct Queued<'a>(Option<(&'a AtomicUsize, usize)>);

impl Queued<'_> {
    /// The writer thread has it: it lowers the count after the commit.
    pub(super) fn sent(mut self) {
        self.0 = None;
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        if let Some((q, n)) = self.0 {
            q.fetch_sub(n, Ordering::AcqRel);
        }
    }
}

pub(super) fn writer_thread(core: Arc<Core>, rx: mpsc::Receiver<WriterMsg>) {
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
    rt.block_on(run(&core, rx));
}

pub(super) struct Writer {
    pub(super) file: File,
    pub(super) pos: u64,
    /// Global offset of `history.jsonl`'s first byte.
    pub(super) active_base: u64,
    /// When `history.jsonl` was opened (for rolling by age).
    pub(super) opened: std::time::Instant,
    pub(super) end_tx: watch::Sender<u64>,
    pub(super) shared: Arc<Shared>,
    pub(super) opts: LogOptions,
    pub(super) mint: Mint,
    pub(super) unsynced: bool,
    pub(super) last_sync: std::time::Instant,
    pub(super) last_commit: std::time::Instant,
    /// Appends in the last batch: how many publishers were active then.
    pub(super) last_batch: usize,
    /// Set when the file could not be restored after a failed write: every
    /// later append is refused rather than risk a torn log.
    pub(super) broken: Option<String>,
    /// Bytes other processes appended (see `log/foreign.rs`).
    pub(super) foreign: Foreign,
    /// Set when the writer thread has stopped: no more commits in place.
    pub(super) stopped: bool,
    /// Set during a commit in place: a roll it makes due is left to the
    /// writer thread.
    pub(super) defer_roll: bool,
    /// How long the last `fdatasync` of a batch took (`--fsync always`).
    pub(super) sync_cost: Duration,
    /// Rolls tried so far (see [`Writer::roll`]).
    pub(super) rolls: watch::Sender<u64>,
}

async fn run(core: &Core, mut rx: mpsc::Receiver<WriterMsg>) {
    let mut batch: Vec<Pending> = Vec::new();
    let mut shutdown = None;
    let (timed, fsync) = {
        let w = core.lock();
        (
            w.opts.segment_age.is_some() || w.opts.retain_age.is_some(),
            w.opts.fsync,
        )
    };
    let mut housekeeping = tokio::time::interval(HOUSEKEEPING);
    housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut idle_check = tokio::time::interval(foreign::IDLE_CHECK);
    idle_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let sync_at = {
            let w = core.lock();
            match (fsync, w.unsynced) {
                (FsyncPolicy::Interval(every), true) => {
                    Some(tokio::time::Instant::from_std(w.last_sync + every))
                }
                _ => None,
            }
        };
        let msg = tokio::select! {
            m = rx.recv() => m,
            _ = async {
                match sync_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => {
                core.lock().sync();
                continue;
            }
            _ = idle_check.tick() => {
                let mut w = core.lock();
                if w.broken.is_none() {
                    w.check_foreign(false);
                }
                continue;
            }
            _ = core.roll_due.notified() => {
                let mut w = core.lock();
                if w.roll_is_due() {
                    w.roll();
                }
                continue;
            }
            _ = housekeeping.tick(), if timed => {
                let mut w = core.lock();
                if w.opts.segment_age.is_some_and(|age| w.opened.elapsed() >= age)
                    && w.pos > w.active_base
                {
                    w.roll();
                }
                w.retention();
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
            Some(WriterMsg::AppendMany(ps)) => batch.extend(ps),
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
                    Ok(WriterMsg::AppendMany(ps)) => batch.extend(ps),
                    Ok(WriterMsg::Shutdown(tx)) => {
                        shutdown = Some(tx);
                        break;
                    }
                    Err(_) => break,
                }
            }
            let (busy, last_batch) = {
                let w = core.lock();
                (w.last_commit.elapsed() < BUSY, w.last_batch)
            };
            if waited
                || shutdown.is_some()
                || batch.len() >= SMALL_BATCH.min(last_batch)
                || !busy
                || fsync == FsyncPolicy::Always
            {
                break;
            }
            std::thread::sleep(GATHER);
            waited = true;
        }
        let n = batch.len();
        let mut w = core.lock();
        // A roll a commit in place left due comes first: these appends go
        // into the new file, as they would have after a roll by the thread.
        if w.roll_is_due() {
            w.roll();
        }
        w.last_batch = n;
        w.commit(&mut batch);
        w.last_commit = std::time::Instant::now();
        core.queued.fetch_sub(n, Ordering::AcqRel);
        drop(w);
        if shutdown.is_some() {
            break;
        }
    }
    let mut w = core.lock();
    w.stopped = true;
    rx.close();
    while let Ok(msg) = rx.try_recv() {
        match msg {
            WriterMsg::Append(p) => {
                core.queued.fetch_sub(1, Ordering::AcqRel);
                let _ = p.reply.send(Err(AppendError::ShuttingDown));
            }
            WriterMsg::AppendMany(ps) => {
                core.queued.fetch_sub(ps.len(), Ordering::AcqRel);
                for p in ps {
                    let _ = p.reply.send(Err(AppendError::ShuttingDown));
                }
            }
            WriterMsg::Shutdown(tx) => {
                let _ = tx.send(());
            }
        }
    }
    // A commit in place just before the stop may have made a roll due: its
    // publisher waits for the roll (see [`InPlace::AfterRoll`]).
    if w.roll_is_due() && w.broken.is_none() {
        w.roll();
    }
    if fsync != FsyncPolicy::Never || w.unsynced {
        w.sync();
    }
    drop(w);
    if let Some(tx) = shutdown {
        let _ = tx.send(());
    }
}

impl Writer {
    /// `history.jsonl` holds `--segment-bytes` or more: roll it.
    pub(super) fn roll_is_due(&self) -> bool {
        self.pos - self.active_base >= self.opts.segment_bytes
    }

    pub(super) fn sync(&mut self) {
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
                let started = std::time::Instant::now();
                let synced = self.file.sync_data();
                self.sync_cost = started.elapsed();
                synced
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
        let mut entries: Vec<Arc<Entry>> = Vec::with_capacity(batch.len());
        // A foreign piece without `\n` glued to this batch's first line (a
        // race with another writer): that line is malformed, its event
        // refused.
        let refused = usize::from(torn.is_some());
        if let Some(torn) = torn {
            let first = batch.remove(0);
            let (s, e) = spans[0];
            let mut json = torn.to_vec();
            json.extend_from_slice(&bytes[s..e - 1]);
            entries.push(Arc::new(Entry {
                end: base + e as u64,
                json: Bytes::from(json),
                meta: Meta::default(),
            }));
            let _ = first.reply.send(Err(AppendError::Io(
                "another process wrote a torn line into history.jsonl at the same moment; \
                 this event was not stored, send it again"
                    .into(),
            )));
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
        // The predicate fields move from the events into the entries: the
        // answers need only `id` and `ts`.
        for (p, &(s, e)) in batch.iter_mut().zip(&spans[refused..]) {
            entries.push(Arc::new(Entry {
                end: base + e as u64,
                json: bytes.slice(s..e - 1),
                meta: Meta::take(&mut p.event),
            }));
        }
        if let Ok(mut ring) = self.shared.ring.write() {
            for e in &entries {
                ring.push(e.clone());
            }
        }
        self.end_tx.send_replace(self.pos);
        // The publishers hear back after the roll their batch made due, so
        // `stats` asked after an answer sees the new segment.
        if self.roll_is_due() && !self.defer_roll {
            self.roll();
        }
        for (p, e) in batch.drain(..).zip(&entries[refused..]) {
            let _ = p.reply.send(Ok(Appended {
                id: p.event.id,
                ts: p.event.ts,
                offset: e.end,
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const US: Duration = Duration::from_micros(1);

    #[test]
    fn fsync_never_commits_in_place_unless_appends_come_back_to_back() {
        // A write never waits for the disk: also a pipelining client's.
        assert!(lone(FsyncPolicy::Never, false, 50 * US, 40, Duration::ZERO));
        assert!(!lone(FsyncPolicy::Never, true, 2 * US, 1, Duration::ZERO));
    }

    #[test]
    fn fsync_always_commits_in_place_only_fast_and_between_lone_commits() {
        let always = FsyncPolicy::Always;
        // A lone publisher on a fast disk.
        assert!(lone(always, true, 200 * US, 0, 150 * US));
        assert!(lone(always, true, 200 * US, 1, 150 * US));
        // A slow or stalling disk: never on a runtime worker.
        assert!(!lone(always, true, 10 * MS, 1, 3 * MS));
        assert!(!lone(always, true, 10 * MS, 0, FAST_SYNC));
        // Right after a batch of several: the thread gathers them.
        assert!(!lone(always, true, 300 * US, 40, 150 * US));
        // ... until the burst is over.
        assert!(lone(always, true, 2 * MS, 40, 150 * US));
        // A pipelining client's request: never.
        assert!(!lone(always, false, 2 * MS, 0, 150 * US));
    }

    #[test]
    fn fsync_interval_never_commits_in_place() {
        let every = FsyncPolicy::Interval(Duration::from_millis(100));
        assert!(!lone(
            every,
            true,
            Duration::from_secs(5),
            0,
            Duration::ZERO
        ));
    }
}
