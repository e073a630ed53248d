//! The registry: the station kinds metrod runs, in the order they were
//! registered (the order of the `stations` rows), each with the station
//! running for it or the reason none runs.
//!
//! - A line goes to the kind of its name, else to the kind that
//!   [catches all](super::StationKind::catches_all) (`local`).
//! - One station can be started, stopped or restarted at runtime
//!   ([`Registry::start`], [`Registry::stop`], [`Registry::restart`]);
//!   [`Registry::follow`] does it when the config in force changes, so a new
//!   token restarts only that station, in place: the others, the
//!   connections and the subscriptions are not touched.
//!
//! - In a cluster, a station whose kind runs on [one node at a
//!   time](super::StationKind::one_node) opens only while this node holds
//!   its lease ([`Gate`], set by `cluster::lease`): one gate where a
//!   station is opened, none in the stations. While another node holds it,
//!   [`Registry::route`] hands out the gate's stand-in, whose outbound ops
//!   travel to that node.
//!
//! Locking: each slot's state is a `std::sync::Mutex`, held only to read
//! or swap the running station (never across an `.await`); a
//! `tokio::sync::Mutex` per slot serializes its start and stop, which do
//! wait (for the old inbound task to end).
//!
//! Owns: the slots. Must not import: `server`, `daemon`, `stations`.

use std::io;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{off_row, Reconfigured, Station, StationCtx, StationKind};
use crate::config::Config;
use crate::line;
use crate::proto::WireError;

/// How long a stopping station's inbound task may take to finish what it
/// is storing before it is aborted.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// The status of a one-node station while no node is known to hold its
/// lease.
const WAITING: &str = "waiting for its lease (docs/cluster.md)";

/// The answer to an op on a line its station kind refuses (`why`: the
/// kind's sentence).
fn bad_line(line: &str, why: String) -> WireError {
    WireError::bad_request(format!("field `line`: {}", line::invalid(line, why)))
}

/// A line's station, or why the op cannot go there.
pub type Route = Result<Arc<dyn Station>, WireError>;

/// A cluster's say over the stations that run on one node at a time
/// ([`StationKind::one_node`]); `cluster::lease` implements it. Without a
/// cluster there is no gate and every station runs where it is enabled.
pub trait Gate: Send + Sync + 'static {
    /// This node's name.
    fn node(&self) -> &str;
    /// Whether this node holds `station`'s lease (and may run it) now.
    fn holds(&self, station: &str) -> bool;
    /// The node that holds `station`'s lease, as last seen.
    fn holder(&self, station: &str) -> Option<String>;
    /// A stand-in for `kind`'s station running on `node`: its outbound ops
    /// travel there and come back with that node's answer.
    fn remote(&self, kind: &Arc<dyn StationKind>, node: &str) -> Arc<dyn Station>;
}

struct Running {
    station: Arc<dyn Station>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

struct Slot {
    kind: Arc<dyn StationKind>,
    /// The running station, or the status of its row when none runs.
    state: Mutex<Result<Arc<dyn Station>, String>>,
    /// The inbound task of the running station (taken by a stop).
    running: Mutex<Option<Running>>,
    /// One start or stop of this slot at a time.
    turn: tokio::sync::Mutex<()>,
}

impl Slot {
    fn station(&self) -> Result<Arc<dyn Station>, String> {
        match self.state.lock() {
            Ok(s) => s.clone(),
            Err(_) => Err("down: its state lock was poisoned".into()),
        }
    }

    fn set(&self, state: Result<Arc<dyn Station>, String>) {
        match self.state.lock() {
            Ok(mut s) => *s = state,
            Err(poisoned) => *poisoned.into_inner() = state,
        }
    }
}

/// The stations of one metrod.
pub struct Registry {
    ctx: StationCtx,
    slots: Vec<Slot>,
    /// Parent of every station's stop token: metrod's shutdown.
    shutdown: CancellationToken,
    /// The cluster's leases, when this node is in one.
    gate: OnceLock<Arc<dyn Gate>>,
}

impl Registry {
    /// A registry of `kinds` (none started yet); each station gets a clone
    /// of `ctx` and stops at the latest with `shutdown`.
    pub fn new(
        ctx: StationCtx,
        kinds: Vec<Arc<dyn StationKind>>,
        shutdown: CancellationToken,
    ) -> Registry {
        let slots = kinds
            .into_iter()
            .map(|kind| Slot {
                kind,
                state: Mutex::new(Err("not started".into())),
                running: Mutex::new(None),
                turn: tokio::sync::Mutex::new(()),
            })
            .collect();
        Registry {
            ctx,
            slots,
            shutdown,
            gate: OnceLock::new(),
        }
    }

    /// Puts the cluster's leases in charge of the stations that run on one
    /// node at a time (before any starts; once).
    pub fn set_gate(&self, gate: Arc<dyn Gate>) {
        let _ = self.gate.set(gate);
    }

    /// The names of the kinds that run on one node at a time.
    pub fn one_node(&self) -> Vec<&'static str> {
        self.slots
            .iter()
            .filter(|s| s.kind.one_node())
            .map(|s| s.kind.name())
            .collect()
    }

    /// Whether the config in force enables station `name` here.
    pub fn wanted(&self, name: &str) -> bool {
        self.slot(name)
            .is_some_and(|s| s.kind.enabled(&self.ctx.current()).is_ok())
    }

    /// Stops station `name` with `why` as its row's status (a lease lost).
    pub async fn stop_because(&self, name: &str, why: &str) -> bool {
        let Some(slot) = self.slot(name) else {
            return false;
        };
        let _turn = slot.turn.lock().await;
        stop_slot(slot, why).await
    }

    /// Why the slot may not run here now (its lease is elsewhere), if so.
    fn gated(&self, slot: &Slot) -> Option<String> {
        let gate = self.gate.get().filter(|_| slot.kind.one_node())?;
        let name = slot.kind.name();
        if gate.holds(name) {
            return None;
        }
        Some(match gate.holder(name) {
            Some(n) if n != gate.node() => format!("standby: runs on node {n}"),
            _ => format!("standby: {WAITING}"),
        })
    }

    /// The stand-in for the slot's station on the node that holds its
    /// lease, when another node does.
    fn remote(&self, slot: &Slot) -> Option<Arc<dyn Station>> {
        let gate = self.gate.get().filter(|_| slot.kind.one_node())?;
        let node = gate.holder(slot.kind.name())?;
        (node != gate.node() && !gate.holds(slot.kind.name()))
            .then(|| gate.remote(&slot.kind, &node))
    }

    /// The registered kinds' names, in order.
    pub fn names(&self) -> Vec<&'static str> {
        self.slots.iter().map(|s| s.kind.name()).collect()
    }

    /// The config sections the registered kinds read.
    pub fn sections(&self) -> Vec<&'static str> {
        self.slots.iter().filter_map(|s| s.kind.section()).collect()
    }

    fn slot(&self, name: &str) -> Option<&Slot> {
        self.slots.iter().find(|s| s.kind.name() == name)
    }

    /// The kind that takes `line` (a full URI): the one of its name, else
    /// the one that catches all.
    fn slot_of(&self, line: &str) -> Option<&Slot> {
        self.slot(line::station_of(line))
            .or_else(|| self.slots.iter().find(|s| s.kind.catches_all()))
    }

    /// Checks `line` (a full URI, already [`line::line`]) against the
    /// shape its station kind gives its lines
    /// ([`StationKind::check_line`]), whether or not the station runs.
    pub fn check_line(&self, line: &str) -> Result<(), line::LineError> {
        match self.slot_of(line) {
            Some(slot) => slot
                .kind
                .check_line(line)
                .map_err(|why| line::invalid(line, why)),
            None => Ok(()),
        }
    }

    /// What station `name`'s kind says its platform is (`Telegram`), if
    /// it has one: people speak on its lines.
    pub fn platform(&self, name: &str) -> Option<&'static str> {
        self.slot(name)?.kind.platform()
    }

    /// Opens and starts every station its config enables (startup: an
    /// error names the station and stops metrod).
    pub async fn start_all(&self) -> io::Result<()> {
        for slot in &self.slots {
            let _turn = slot.turn.lock().await;
            self.open(slot).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot open the {} station: {e}", slot.kind.name()),
                )
            })?;
        }
        Ok(())
    }

    /// Starts station `name` if its config enables it and it does not run;
    /// true when it runs afterwards. An open that fails leaves it down
    /// (its row says why).
    pub async fn start(&self, name: &str) -> bool {
        let Some(slot) = self.slot(name) else {
            return false;
        };
        let _turn = slot.turn.lock().await;
        self.start_slot(slot)
    }

    /// Stops station `name` (its inbound task ends; ops on its lines answer
    /// `unavailable` until it is started again). True if it ran.
    pub async fn stop(&self, name: &str) -> bool {
        let Some(slot) = self.slot(name) else {
            return false;
        };
        let _turn = slot.turn.lock().await;
        stop_slot(slot, "stopped").await
    }

    /// Stops station `name` and opens it again with the config in force.
    pub async fn restart(&self, name: &str) -> bool {
        let Some(slot) = self.slot(name) else {
            return false;
        };
        let _turn = slot.turn.lock().await;
        stop_slot(slot, "restarting").await;
        self.start_slot(slot)
    }

    fn start_slot(&self, slot: &Slot) -> bool {
        if slot.station().is_ok() {
            return true;
        }
        match self.open(slot) {
            Ok(running) => running,
            Err(e) => {
                let why = format!("down: cannot open it: {e}");
                tracing::error!("{} station {why}", slot.kind.name());
                slot.set(Err(why));
                false
            }
        }
    }

    /// Opens the slot's station when the config in force enables it and
    /// spawns its inbound task; Ok(false): disabled (the status says why).
    fn open(&self, slot: &Slot) -> io::Result<bool> {
        let config = self.ctx.current();
        if let Err(why) = slot.kind.enabled(&config) {
            slot.set(Err(why));
            return Ok(false);
        }
        if self.shutdown.is_cancelled() {
            slot.set(Err("stopped".into()));
            return Ok(false);
        }
        if let Some(why) = self.gated(slot) {
            slot.set(Err(why));
            return Ok(false);
        }
        let station = slot.kind.open(&self.ctx)?;
        let stop = self.shutdown.child_token();
        let task = tokio::spawn(station.clone().run(stop.clone()));
        if let Ok(mut r) = slot.running.lock() {
            *r = Some(Running {
                station: station.clone(),
                stop,
                task,
            });
        }
        slot.set(Ok(station));
        Ok(true)
    }

    /// The station of `line` (already a valid line URI): the one running
    /// here, else (in a cluster) the stand-in for the node that runs it.
    pub fn route(&self, line: &str) -> Route {
        self.find(line, true)
    }

    /// The station of `line` running on this node (what a cluster's
    /// request from another node is answered with).
    pub fn local(&self, line: &str) -> Route {
        self.find(line, false)
    }

    fn find(&self, line: &str, remote: bool) -> Route {
        let Some(slot) = self.slot_of(line) else {
            return Err(WireError::unavailable(format!(
                "the {} station is not available in this metrod build",
                line::station_of(line)
            )));
        };
        slot.kind
            .check_line(line)
            .map_err(|why| bad_line(line, why))?;
        slot.station().or_else(|why| {
            remote
                .then(|| self.remote(slot))
                .flatten()
                .ok_or_else(|| slot.kind.unavailable(&why))
        })
    }

    /// `fetch` on `line` from its platform, when its kind
    /// [fetches](StationKind::fetches) (in a cluster, through the node that
    /// runs the station); `None`: metro's log answers.
    pub async fn fetch(&self, line: &str, limit: u64) -> Option<Result<Vec<Bytes>, WireError>> {
        let slot = self.slot(line::station_of(line))?;
        if !slot.kind.fetches() {
            return None;
        }
        if let Err(why) = slot.kind.check_line(line) {
            return Some(Err(bad_line(line, why)));
        }
        // Here, else (in a cluster) on the node that runs it.
        let st = match slot.station() {
            Ok(st) => st,
            Err(why) => match self.remote(slot) {
                Some(remote) => remote,
                None => return Some(Err(slot.kind.unavailable(&why))),
            },
        };
        st.fetch(line, limit).await
    }

    /// The running station `name`.
    pub fn get(&self, name: &str) -> Option<Arc<dyn Station>> {
        self.slot(name)?.station().ok()
    }

    /// The running stations, in order.
    pub fn running(&self) -> Vec<Arc<dyn Station>> {
        self.slots.iter().filter_map(|s| s.station().ok()).collect()
    }

    /// Whether `name` is a registered kind, and the status of its row when
    /// it does not run.
    pub fn why_off(&self, name: &str) -> Option<Result<(), WireError>> {
        let slot = self.slot(name)?;
        Some(
            slot.station()
                .map(|_| ())
                .map_err(|why| slot.kind.unavailable(&why)),
        )
    }

    /// The rows of the `stations` answer; in a cluster, a station that
    /// runs on one node at a time says which (`node`).
    pub fn rows(&self) -> Vec<Value> {
        self.slots
            .iter()
            .map(|s| {
                let mut row = match s.station() {
                    Ok(st) => st.row(),
                    Err(why) => {
                        // Who runs it now; a lease lost keeps saying why
                        // until another node is seen holding it.
                        let why = match self.gated(s) {
                            Some(standby)
                                if s.kind.enabled(&self.ctx.current()).is_ok()
                                    && !(why.starts_with("standby")
                                        && standby.ends_with(WAITING)) =>
                            {
                                standby
                            }
                            _ => why,
                        };
                        off_row(s.kind.name(), &why)
                    }
                };
                if let Some(o) = row.as_object_mut() {
                    o.insert("chat".into(), s.kind.chat().into());
                }
                if let Some(gate) = self.gate.get().filter(|_| s.kind.one_node()) {
                    let node = if gate.holds(s.kind.name()) {
                        Some(gate.node().to_string())
                    } else {
                        gate.holder(s.kind.name())
                    };
                    if let Some(o) = row.as_object_mut() {
                        o.insert("node".into(), node.into());
                    }
                }
                row
            })
            .collect()
    }

    /// `stats.stations`: the counters of the running stations that count.
    pub fn stats(&self) -> Value {
        let mut m = serde_json::Map::new();
        for st in self.running() {
            if let Some(v) = st.stats() {
                m.insert(st.name().to_string(), v);
            }
        }
        Value::Object(m)
    }

    /// Applies each config put in force to the stations, until shutdown:
    /// a station that can take it in place does; one that needs to be
    /// opened again (a token, a URL) is restarted alone; one the new
    /// config enables is started, one it disables is stopped.
    pub async fn follow(self: Arc<Self>) {
        let mut configs = self.ctx.config.clone();
        loop {
            tokio::select! {
                changed = configs.changed() => if changed.is_err() { return },
                _ = self.shutdown.cancelled() => return,
            }
            let config = configs.borrow_and_update().clone();
            for slot in &self.slots {
                self.apply(slot, &config).await;
            }
        }
    }

    async fn apply(&self, slot: &Slot, config: &Config) {
        let _turn = slot.turn.lock().await;
        let name = slot.kind.name();
        match (slot.station(), slot.kind.enabled(config)) {
            (Ok(st), Ok(())) => {
                if st.reconfigure(config) == Reconfigured::Restart {
                    tracing::info!("{name} station: the config changed; restarting it");
                    stop_slot(slot, "restarting").await;
                    self.start_slot(slot);
                }
            }
            (Ok(_), Err(why)) => {
                tracing::info!("{name} station: the config disables it; stopping it");
                stop_slot(slot, &why).await;
            }
            (Err(_), Ok(())) => {
                tracing::info!("{name} station: the config enables it; starting it");
                self.start_slot(slot);
            }
            (Err(_), Err(why)) => slot.set(Err(why)),
        }
    }

    /// Stops every station (metrod's shutdown has been signalled), each
    /// given [`STOP_GRACE`] to finish what it is storing.
    pub async fn shutdown(&self) {
        for slot in &self.slots {
            let _turn = slot.turn.lock().await;
            stop_slot(slot, "stopped").await;
        }
    }
}

/// Stops the slot's station: cancels its inbound task and waits for it.
async fn stop_slot(slot: &Slot, why: &str) -> bool {
    slot.set(Err(why.to_string()));
    let running = slot.running.lock().ok().and_then(|mut r| r.take());
    let Some(Running {
        station,
        stop,
        task,
    }) = running
    else {
        return false;
    };
    stop.cancel();
    let abort = task.abort_handle();
    if tokio::time::timeout(STOP_GRACE, task).await.is_err() {
        tracing::warn!(
            "{} station did not stop within {} s; aborted",
            station.name(),
            STOP_GRACE.as_secs()
        );
        abort.abort();
    }
    true
}
