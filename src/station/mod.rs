//! The seam between the core and the stations.
//!
//! - [`Station`]: what a running station does — its inbound loop
//!   ([`Station::run`]), the outbound ops (`send`, `edit`, `react`,
//!   `download`, `fetch`; "not supported" unless it says otherwise), its
//!   row of `stations`, its counters, its allowlist, a config change.
//! - [`StationKind`]: how a station is opened — its name, the config it
//!   reads, whether that config enables it, the check of its lines (the
//!   shape of a station's lines is its kind's alone; [`platforms`] gives
//!   the broker which lines are stations' rather than agents').
//! - [`StationCtx`]: all a station gets — the log handle, the state dir,
//!   the fsync policy and a watch of the config in force. Never the broker
//!   or the server.
//! - [`Registry`]: the registered kinds in order, each with the station
//!   running for it (or why none runs); maps a line to its station; starts,
//!   stops and restarts one station at runtime (a changed token).
//! - [`access`]: the allowlist with pairing codes the chat stations share
//!   (the server's `allow`, `deny`, `allowList` reach it through
//!   [`Station::access`]).
//! - [`ingest`]: the one inbound pipeline (dedupe → screen → access gate
//!   → append → remember, count) every inbound station runs its platform
//!   events through; [`core`]: the [`core::StationCore`] it works on
//!   (status, counters, recent keys, redaction).
//!
//! Must not import: `server`, `daemon`, `service`, `monitor`, `stations`
//! (the kinds are handed to the registry by whoever builds it), `client`.
//! The dependency direction reads one way: `proto`, `line`, `config` ←
//! `store` ← `broker` ← `station` ← `stations/*` ← `server` ← `daemon`.

pub mod access;
pub mod core;
pub mod ingest;
mod registry;

use std::any::Any;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::proto::{self, Download, Edit, Event, React, WireError};
use crate::store::log::Log;

pub use registry::{Gate, Registry, Route};

/// All a station gets from the daemon.
#[derive(Clone)]
pub struct StationCtx {
    /// The event log: where inbound events are appended, where replies are
    /// looked up.
    pub log: Arc<Log>,
    /// The state dir, for the station's own files (`<name>-ids.jsonl` …).
    pub state_dir: PathBuf,
    /// Whether the station's files are synced after a write (`--fsync`
    /// other than `never`).
    pub fsync: bool,
    /// The config in force; a change is also handed to
    /// [`Station::reconfigure`] by the registry.
    pub config: watch::Receiver<Arc<Config>>,
}

impl StationCtx {
    /// The config in force now.
    pub fn current(&self) -> Arc<Config> {
        self.config.borrow().clone()
    }
}

/// An outbound op, for [`Station::supports`] and [`Station::refuse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Send,
    Edit,
    React,
    Download,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Send => "send",
            Op::Edit => "edit",
            Op::React => "react",
            Op::Download => "download",
        }
    }
}

/// What a `send` put on a platform: its message ids, in order (several
/// for a split text or an album), and the message it replied to.
#[derive(Debug, Clone, Default)]
pub struct Sent {
    pub message_ids: Vec<String>,
    pub reply_to: Option<String>,
}

/// A `send` that failed, with what had gone out before the failure.
#[derive(Debug)]
pub struct SendFailure {
    pub error: WireError,
    pub sent: Sent,
}

impl From<WireError> for SendFailure {
    fn from(error: WireError) -> Self {
        SendFailure {
            error,
            sent: Sent::default(),
        }
    }
}

/// What a config change did to a running station.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reconfigured {
    /// Nothing it reads changed, or the change is in force already (an
    /// allowlist).
    InPlace,
    /// It must be opened again with the new config (a token, a URL).
    Restart,
}

/// A running station. Each outbound op is "not supported" unless the
/// station says otherwise; the server checks [`Station::supports`] before
/// the loop guard, so a refused op never counts a hop or writes a notice.
#[async_trait::async_trait]
pub trait Station: Send + Sync + 'static {
    /// The station's name: the first segment of its lines
    /// (`metro://<name>/…`).
    fn name(&self) -> &str;

    /// Its inbound side (a poller, a gateway, a listener) until `stop`.
    async fn run(self: Arc<Self>, stop: CancellationToken) {
        stop.cancelled().await;
    }

    /// The platform in words ("Telegram") when the outbound ops act on a
    /// remote platform and are then logged as `outbound`/`edit`/`react`
    /// events carrying its message ids; `None` when the logged event is
    /// the message itself (`local`: a `notify` addressed to the line).
    fn platform(&self) -> Option<&'static str> {
        None
    }

    /// Whether it serves `op` on its lines.
    fn supports(&self, _op: Op) -> bool {
        false
    }

    /// The answer to an op it does not serve on `line`.
    fn refuse(&self, op: Op, _line: &str) -> WireError {
        WireError::unavailable(format!(
            "the {} station does not support {}",
            self.name(),
            op.as_str()
        ))
    }

    /// Puts `s` on the platform (`line` is valid and of this station).
    async fn send(&self, line: &str, _s: &proto::Send) -> Result<Sent, SendFailure> {
        Err(self.refuse(Op::Send, line).into())
    }

    /// Edits a message; the platform's id of the edited message.
    async fn edit(&self, line: &str, _e: &Edit) -> Result<String, WireError> {
        Err(self.refuse(Op::Edit, line))
    }

    /// Reacts to a message; the platform's id of that message.
    async fn react(&self, line: &str, _r: &React) -> Result<String, WireError> {
        Err(self.refuse(Op::React, line))
    }

    /// Saves a message's files; their paths.
    async fn download(&self, line: &str, _d: &Download) -> Result<Vec<String>, WireError> {
        Err(self.refuse(Op::Download, line))
    }

    /// `fetch` from the platform's own history (JSON events, oldest
    /// first); `None`: metro's log answers.
    async fn fetch(&self, _line: &str, _limit: u64) -> Option<Result<Vec<Bytes>, WireError>> {
        None
    }

    /// Remembers the platform ids of a logged `send` (metro id `id`).
    fn record(&self, _id: &str, _line: &str, _sent: &Sent) {}

    /// The metro id of platform message `message_id` on `line`, when known.
    fn metro_id(&self, _line: &str, _message_id: &str) -> Option<String> {
        None
    }

    /// Its row of the `stations` answer.
    fn row(&self) -> Value;

    /// Its entry in `stats.stations`, if it counts anything.
    fn stats(&self) -> Option<Value> {
        None
    }

    /// Its allowlist, when it has one (chat stations).
    fn access(&self) -> Option<&access::Access> {
        None
    }

    /// Its inbound pipeline's state, when its events carry platform keys
    /// (chat stations): a cluster's consumer claims a key in its recent
    /// keys before appending another node's copy of that platform event,
    /// so the station and the consumer never both store it.
    fn inbound_core(&self) -> Option<&core::StationCore> {
        None
    }

    /// A new config is in force: apply what can be applied in place, or
    /// ask to be opened again.
    fn reconfigure(&self, _config: &Config) -> Reconfigured {
        Reconfigured::InPlace
    }

    /// The station as `Any`, for the server ops that belong to one kind
    /// (`webhookAdd` …) to reach its own type.
    fn any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync>;
}

/// How a station is opened.
pub trait StationKind: Send + Sync + 'static {
    /// The name of its lines and of its row.
    fn name(&self) -> &'static str;

    /// The config section it reads (`[telegram]`), if any: a section no
    /// registered kind names (and the core does not declare) is refused.
    fn section(&self) -> Option<&'static str> {
        None
    }

    /// Parses and checks its section of `config` (one that is not a field
    /// of `Config` is `config.section(name)`, as written); `Err` says what
    /// is wrong without quoting a value. A config it refuses is not put in
    /// force (at startup metrod does not start on it).
    fn check_config(&self, _config: &Config) -> Result<(), String> {
        Ok(())
    }

    /// Whether `config` enables it: `Err` says why not (the status of its
    /// row, e.g. "disabled: no bot token …").
    fn enabled(&self, _config: &Config) -> Result<(), String> {
        Ok(())
    }

    /// Checks a line of this station (a full URI, `metro://<name>/…`)
    /// beyond the URI syntax; `Err` is the sentence a user sees, saying
    /// what its lines look like ("telegram lines are …"). The registry
    /// applies it to the line an op acts on (`send`, `edit`, `react`,
    /// `download`, `claim`, `publish`, a `fetch` that asks the platform),
    /// whether or not the station runs; filters (`chat`, `history`'s
    /// `line`) take any URI. metroctl checks only the URI syntax and shows
    /// this answer.
    fn check_line(&self, _line: &str) -> Result<(), String> {
        Ok(())
    }

    /// Whether `fetch` on its lines asks the platform (which keeps the
    /// history) rather than metro's log; then, while it does not run,
    /// `fetch` answers `unavailable`.
    fn fetches(&self) -> bool {
        false
    }

    /// Takes the lines of stations no other kind registered (`local`).
    fn catches_all(&self) -> bool {
        false
    }

    /// Runs on one node of a cluster at a time (a bot token has one
    /// poller, one gateway): the registry opens it only while this node
    /// holds its lease (docs/cluster.md).
    fn one_node(&self) -> bool {
        false
    }

    /// What its stations' [`Station::platform`] says, known before one
    /// runs here (a cluster's stand-in for a station on another node).
    fn platform(&self) -> Option<&'static str> {
        None
    }

    /// Its lines are chats where people write: an `inbound` or `callback`
    /// event the station made (not `published` by an agent) is a person's
    /// message, and `send` takes `buttons`. Said as `chat` in its
    /// `stations` row; `metroctl mcp`'s permission relay asks its
    /// questions there and takes answers only from such stations.
    fn chat(&self) -> bool {
        false
    }

    /// The key its inbound pipeline dedupes a platform event by
    /// ([`core::StationCore`]), read back from `event`, one of this
    /// station's events as logged; `None` for an event that did not come
    /// from the platform (an agent's send) or that the station does not
    /// recognise again. A cluster's consumer skips another node's copy of
    /// an event whose key the local log holds already: at a takeover the
    /// old and the new holder of a one-node station may each have stored
    /// one update.
    fn platform_key(&self, _event: &Event) -> Option<String> {
        None
    }

    /// Opens the station (files, seeds from the log). Called only when
    /// [`StationKind::enabled`]; an error at startup stops metrod.
    fn open(&self, ctx: &StationCtx) -> io::Result<Arc<dyn Station>>;

    /// The answer to an op on its lines while it does not run (`why`: the
    /// status of its row).
    fn unavailable(&self, why: &str) -> WireError {
        WireError::unavailable(format!("the {} station is {why}", self.name()))
    }
}

/// The stations whose lines are conversations on a platform: every kind
/// but the one that [catches all](StationKind::catches_all) (`local`).
/// Known from the kinds alone, before any station opens (metrod hands it
/// to the broker before it reads `claims.json`).
pub fn platforms(kinds: &[Arc<dyn StationKind>]) -> crate::line::Platforms {
    crate::line::Platforms::new(kinds.iter().filter(|k| !k.catches_all()).map(|k| k.name()))
}

/// Checks `config` against `kinds`: every section is the core's or a
/// kind's ([`Config::check_sections`]), and each kind accepts its own
/// ([`StationKind::check_config`]).
pub fn check_config(kinds: &[Arc<dyn StationKind>], config: &Config) -> Result<(), String> {
    let sections: Vec<&str> = kinds.iter().filter_map(|k| k.section()).collect();
    config.check_sections(&sections)?;
    for k in kinds {
        k.check_config(config)
            .map_err(|e| format!("[{}] {e}", k.section().unwrap_or(k.name())))?;
    }
    Ok(())
}

/// The row of a station that does not run.
pub fn off_row(name: &str, status: &str) -> Value {
    json!({
        "name": name,
        "enabled": false,
        "status": status,
        "capabilities": [],
    })
}

/// The status of a chat station that has no token.
pub fn no_token(station: &str) -> String {
    format!(
        "disabled: no bot token (set METRO_{}_TOKEN, or token in the [{station}] section of {})",
        station.to_uppercase(),
        crate::config::path().display()
    )
}
