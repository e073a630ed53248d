//! The broker: the daemon's shared state (log, claims, cursors, lines) and
//! the live subscriptions fed from it.
//!
//! Must not import: `station`, `stations`, `server`, `service`, `daemon`
//! (it knows no station; the registry of stations sits above it).

pub mod outbox;
pub mod predicate;
pub mod subscription;

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::line::Platforms;
use crate::store::claims::Claims;
use crate::store::cursors::{Cursors, Repair};
use crate::store::dedupe::{self, Dedupe};
use crate::store::hops::HopIndex;
use crate::store::lines::LineIndex;
use crate::store::log::{FsyncPolicy, Log, LogOptions};
use subscription::SubState;

/// Default bound on the bytes of one subscription's unacked copies.
pub const DEFAULT_MAX_UNACKED_BYTES: usize = 1 << 20;
/// Default bound on subscriptions per connection.
pub const DEFAULT_MAX_SUBSCRIPTIONS: usize = 64;
/// Default bound on connections served at once.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

#[derive(Debug, Clone)]
pub struct BrokerOptions {
    /// Durability, ring, segments and retention of the log.
    pub log: LogOptions,
    /// Longest request line accepted.
    pub max_request: usize,
    /// Explicit-ack subscriptions pause at this many unacked events.
    pub max_unacked: usize,
    /// ... or once their unacked copies hold this many bytes.
    pub max_unacked_bytes: usize,
    /// Subscriptions one connection may hold at once.
    pub max_subscriptions: usize,
    /// Client connections served at once.
    pub max_connections: usize,
    /// The loop guard refuses an automatic answer past this many hops.
    pub max_hops: u32,
    /// How long an idempotency key is remembered.
    pub dedupe_window: Duration,
}

/// `--max-hops` unless told.
pub const DEFAULT_MAX_HOPS: u32 = 16;

impl Default for BrokerOptions {
    fn default() -> Self {
        BrokerOptions {
            log: LogOptions::default(),
            max_request: crate::proto::DEFAULT_MAX_REQUEST,
            max_unacked: 1024,
            max_unacked_bytes: DEFAULT_MAX_UNACKED_BYTES,
            max_subscriptions: DEFAULT_MAX_SUBSCRIPTIONS,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_hops: DEFAULT_MAX_HOPS,
            dedupe_window: dedupe::DEFAULT_WINDOW,
        }
    }
}

/// What opening the state found and repaired, for the startup log.
#[derive(Debug, Default)]
pub struct Startup {
    pub log_bytes: u64,
    pub cut_bytes: u64,
    pub cursor_repairs: Vec<Repair>,
}

/// What the broker shows of this node's cluster membership (`stats.cluster`).
/// A trait, so that the broker names no `cluster` module: the cluster sits
/// above the broker and hands itself in after [`Broker::open`].
pub trait ClusterView: Send + Sync {
    /// The `stats.cluster` object; `log_end` is the log's end offset.
    fn stats(&self, log_end: u64) -> serde_json::Value;
}

pub struct Broker {
    pub state_dir: PathBuf,
    pub opts: BrokerOptions,
    /// Shared with the stations ([`crate::station::StationCtx`]).
    pub log: Arc<Log>,
    pub claims: Claims,
    /// The stations whose lines are conversations on a platform (from the
    /// registered kinds); every other line is an agent's local line.
    pub platforms: Platforms,
    pub cursors: Arc<Cursors>,
    pub lines: Arc<Mutex<LineIndex>>,
    /// Hops of recent automatic answers (the loop guard).
    pub hops: Arc<Mutex<HopIndex>>,
    /// Recent idempotency keys.
    pub dedupe: Dedupe,
    /// Who the loop guard already stopped (agent, line, answered event):
    /// one notice each; the newest 1024.
    pub loop_notices: Mutex<crate::store::recent::Recent<String>>,
    pub started: Instant,
    pub connections: AtomicUsize,
    /// The config in force (tokens, allowlists): `stats.config`, the
    /// monitor's token. The daemon sets it after [`Broker::open`].
    pub config: Arc<crate::config::live::LiveConfig>,
    /// This node's cluster membership, when it has joined one (the daemon
    /// sets it after [`Broker::open`]).
    pub cluster: std::sync::OnceLock<Arc<dyn ClusterView>>,
    next_conn: AtomicU64,
    subs: Mutex<BTreeMap<(u64, String), Arc<SubState>>>,
}

/// Loop-guard notices remembered (so one stopped agent is told once).
const LOOP_NOTICES: usize = 1024;

/// Bytes at the end of the log read at startup to seed the `lines` index.
const LINES_SEED_BYTES: usize = 1 << 20;

impl Broker {
    /// Opens the state in `state_dir` (which the caller has locked), with
    /// `platforms` the stations whose lines are not local lines (claims,
    /// the delivery predicate, the loop guard). Must run inside a tokio
    /// runtime.
    pub fn open(
        state_dir: &Path,
        opts: BrokerOptions,
        platforms: Platforms,
    ) -> io::Result<(Broker, Startup)> {
        let lines = Arc::new(Mutex::new(LineIndex::default()));
        let hops = Arc::new(Mutex::new(HopIndex::default()));
        let (log, recovery) = Log::open(state_dir, opts.log.clone(), lines.clone(), hops.clone())?;
        // Seed `lines` from the newest megabyte only.
        if let Ok(mut idx) = lines.lock() {
            log.for_each_recent_blocking(LINES_SEED_BYTES as u64, |json| idx.observe_json(json))?;
        }
        let dedupe = Dedupe::new(opts.dedupe_window);
        seed_recent(&log, &hops, &dedupe)?;
        let fsync = opts.log.fsync != FsyncPolicy::Never;
        let (cursors, repairs) = Cursors::open(&state_dir.join("cursors"), &log, fsync)?;
        let claims = Claims::open(&state_dir.join("claims.json"), fsync, platforms.clone())?;
        let startup = Startup {
            log_bytes: log.end(),
            cut_bytes: recovery.cut_bytes,
            cursor_repairs: repairs,
        };
        Ok((
            Broker {
                state_dir: state_dir.to_path_buf(),
                opts,
                log: Arc::new(log),
                claims,
                platforms,
                cursors: Arc::new(cursors),
                lines,
                hops,
                dedupe,
                loop_notices: Mutex::new(crate::store::recent::Recent::new(LOOP_NOTICES)),
                started: Instant::now(),
                connections: AtomicUsize::new(0),
                config: Arc::new(crate::config::live::LiveConfig::unloaded(
                    crate::config::path(),
                )),
                cluster: std::sync::OnceLock::new(),
                next_conn: AtomicU64::new(1),
                subs: Mutex::new(BTreeMap::new()),
            },
            startup,
        ))
    }

    pub fn next_connection_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    pub fn register(&self, st: Arc<SubState>) {
        if let Ok(mut subs) = self.subs.lock() {
            subs.insert((st.conn, st.id.clone()), st);
        }
    }

    pub fn unregister(&self, conn: u64, id: &str) {
        if let Ok(mut subs) = self.subs.lock() {
            subs.remove(&(conn, id.to_string()));
        }
    }

    /// Live subscriptions, by connection then id.
    pub fn subscriptions(&self) -> Vec<Arc<SubState>> {
        match self.subs.lock() {
            Ok(subs) => subs.values().cloned().collect(),
            Err(_) => Vec::new(),
        }
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Writes cursors now (shutdown).
    pub fn flush_cursors(&self) -> io::Result<()> {
        self.cursors.flush()
    }
}

/// Seeds the hop index and the dedupe window from the last
/// [`dedupe::SEED_BYTES`] of the log, in one forward pass (never more of
/// the log).
fn seed_recent(log: &Log, hops: &Mutex<HopIndex>, dedupe: &Dedupe) -> io::Result<()> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Seen {
        #[serde(default)]
        id: String,
        #[serde(default)]
        ts: String,
        #[serde(default)]
        kind: String,
        #[serde(default)]
        from: String,
        #[serde(default)]
        message_id: Option<String>,
        #[serde(default)]
        idempotency_key: Option<String>,
    }
    let Ok(mut hops) = hops.lock() else {
        return Ok(());
    };
    log.for_each_recent_entry_blocking(dedupe::SEED_BYTES, |end, json| {
        // Most events have neither: skip them without parsing.
        let has = |what: &[u8]| json.windows(what.len()).any(|w| w == what);
        if !has(b"\"hops\"") && !has(b"\"idempotencyKey\"") {
            return;
        }
        hops.observe_json(json);
        let Ok(s) = serde_json::from_slice::<Seen>(json) else {
            return;
        };
        let (Some(key), Some(at_ms)) = (&s.idempotency_key, crate::clock::parse_ms(&s.ts)) else {
            return;
        };
        // What the first answer said as `messageId`: a send's.
        let message_id = match s.kind.as_str() {
            "outbound" => s.message_id.clone(),
            "notify" => Some(s.id.clone()),
            _ => None,
        };
        dedupe.seed(
            &s.from,
            key,
            dedupe::First {
                id: s.id,
                message_id,
                offset: end,
                at_ms,
            },
        );
    })
}
