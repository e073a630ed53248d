//! The claims map: which identity owns which line.
//!
//! Readers (every delivery) load an immutable snapshot without a lock.
//! Changes go through one task that applies everything queued as a batch,
//! persists `claims.json` once for the batch (temp file, fsync, rename, fsync
//! of the directory) and only then publishes the new snapshot and answers.
//! Ephemeral claims live in memory only: they vanish with their connection
//! and with the daemon. Hand edits of `claims.json` (and a malformed file at
//! startup) are handled in [`disk`].
//!
//! A local line (an agent's line: [`Platforms::is_local`], the platform
//! stations handed in at [`Claims::open`]) belongs to the
//! identity it names: nobody else can claim it, and it is never auto-claimed.
//! Such claims found in `claims.json` (written by an older metro) are kept on
//! disk but ignored for routing until someone releases them.

mod disk;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, oneshot};

use crate::line::Platforms;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub who: String,
    /// The connection that holds an ephemeral claim.
    pub ephemeral: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct ClaimMap {
    /// Which lines are stations' (the others are local lines).
    platforms: Platforms,
    owners: HashMap<String, Owner>,
    /// Claims of a local line by another identity, found in `claims.json`:
    /// line -> claimant. Written back to the file, never used for routing,
    /// removed by `release`.
    ignored: BTreeMap<String, String>,
    /// Bumped by every change to the durable claims (what claims.json
    /// holds), so a batch knows whether the file must be written without
    /// comparing whole maps.
    durable_version: u64,
}

impl ClaimMap {
    /// An empty map; `platforms` says which lines are not local lines.
    pub fn new(platforms: Platforms) -> ClaimMap {
        ClaimMap {
            platforms,
            owners: HashMap::new(),
            ignored: BTreeMap::new(),
            durable_version: 0,
        }
    }

    /// Whether `line` (a full URI) is a local line: an agent's line, which
    /// belongs to the identity it names.
    pub fn is_local(&self, line: &str) -> bool {
        self.platforms.is_local(line)
    }

    pub fn owner(&self, line: &str) -> Option<&str> {
        self.owners.get(line).map(|o| o.who.as_str())
    }

    pub fn get(&self, line: &str) -> Option<&Owner> {
        self.owners.get(line)
    }

    pub fn len(&self) -> usize {
        self.owners.len()
    }

    pub fn is_empty(&self) -> bool {
        self.owners.is_empty()
    }

    /// The ignored claims (line, claimant), sorted by line.
    pub fn ignored(&self) -> impl Iterator<Item = (&str, &str)> {
        self.ignored.iter().map(|(l, w)| (l.as_str(), w.as_str()))
    }

    /// Every claim in force, sorted by line.
    pub fn iter_sorted(&self) -> Vec<(&str, &Owner)> {
        let mut v: Vec<(&str, &Owner)> = self.owners.iter().map(|(k, v)| (k.as_str(), v)).collect();
        v.sort_by(|a, b| a.0.cmp(b.0));
        v
    }

    /// What `claims.json` holds: the durable claims and the ignored ones.
    fn durable(&self) -> BTreeMap<&str, &str> {
        self.owners
            .iter()
            .filter(|(_, o)| o.ephemeral.is_none())
            .map(|(k, o)| (k.as_str(), o.who.as_str()))
            .chain(self.ignored())
            .collect()
    }

    /// Puts a claim read from `claims.json` in the map: a local line
    /// claimed by another identity goes to the ignored claims.
    fn load(&mut self, line: String, who: String) {
        if self.is_local(&line) && line != who {
            tracing::warn!(
                "claims.json: {who} claims the local line {line}; a local line belongs to the agent it names, so this claim is ignored (`metroctl release {line}` removes it)"
            );
            self.ignored.insert(line, who);
        } else {
            self.owners.insert(
                line,
                Owner {
                    who,
                    ephemeral: None,
                },
            );
        }
    }
}

#[derive(Debug, Clone)]
pub enum ClaimOp {
    /// Last writer wins, unless `if_free` and someone else owns the line.
    Claim {
        line: String,
        who: String,
        if_free: bool,
        ephemeral: Option<u64>,
    },
    Release {
        line: String,
    },
    /// Release only if `who` owns the line.
    ReleaseIfOwner {
        line: String,
        who: String,
    },
    /// Outbound auto-claim: take the line only when nobody owns it.
    Auto {
        line: String,
        who: String,
    },
    /// A connection closed: drop its ephemeral claims.
    DropConnection(u64),
    /// `claims.json` may have been edited by hand: read it (see [`disk`]).
    Reload,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    Claimed {
        owner: String,
        previous: Option<String>,
    },
    Conflict {
        owner: String,
    },
    Released(bool),
    /// Auto-claim result: `claimed`, `kept` (already ours) or `skipped`.
    Auto(&'static str),
    Dropped(usize),
}

type Reply = oneshot::Sender<Result<ClaimOutcome, String>>;

/// Most claim changes applied (and written) at once.
const MAX_BATCH: usize = 1024;
/// Least time between two writes of claims.json under a stream of changes.
const WRITE_GAP: std::time::Duration = std::time::Duration::from_millis(5);

pub struct Claims {
    snap: Arc<ArcSwap<ClaimMap>>,
    tx: mpsc::Sender<(ClaimOp, Reply)>,
    status: disk::SharedStatus,
    shared: Shared,
}

/// A claims map shared with other metrod nodes (src/cluster/claims.rs):
/// the changes it [`takes`](SharedClaims::takes) are decided there and
/// come back through [`Claims::apply_local`]; hand edits of `claims.json`
/// are handed to it once in force here.
pub trait SharedClaims: Send + Sync {
    fn takes(&self, op: &ClaimOp) -> bool;
    fn apply(
        &self,
        op: ClaimOp,
    ) -> Pin<Box<dyn Future<Output = Result<ClaimOutcome, String>> + Send + '_>>;
    /// The durable claims before and after a hand edit.
    fn hand_edit(&self, before: BTreeMap<String, String>, after: BTreeMap<String, String>);
}

type Shared = Arc<OnceLock<Arc<dyn SharedClaims>>>;

impl Claims {
    /// Loads `claims.json` (missing is empty; malformed is moved aside and
    /// empty; unreadable is an error the daemon refuses to start on), starts
    /// the change task and the look for hand edits.
    pub fn open(path: &Path, fsync: bool, platforms: Platforms) -> io::Result<Claims> {
        let status = disk::SharedStatus::default();
        let (parsed, known) = disk::load(path, &status)?;
        let mut map = ClaimMap::new(platforms);
        for (line, who) in parsed {
            map.load(line, who);
        }
        let snap = Arc::new(ArcSwap::from_pointee(map));
        let (tx, rx) = mpsc::channel(4096);
        let shared: Shared = Arc::default();
        let task = ClaimTask {
            shared: shared.clone(),
            path: path.to_path_buf(),
            fsync,
            snap: snap.clone(),
            known,
            status: status.clone(),
            invalid: None,
        };
        tokio::spawn(task.run(rx));
        // Hand edits are looked for every disk::POLL, in order with the
        // other ops (the task stats the file; it reads it only if changed).
        let weak = tx.downgrade();
        tokio::spawn(async move {
            let mut poll = tokio::time::interval(disk::POLL);
            poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                poll.tick().await;
                let Some(tx) = weak.upgrade() else { return };
                let (reply, _) = oneshot::channel();
                if tx.send((ClaimOp::Reload, reply)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Claims {
            snap,
            tx,
            status,
            shared,
        })
    }

    /// Joins a shared claims map (once; later calls are ignored).
    pub fn share(&self, shared: Arc<dyn SharedClaims>) {
        let _ = self.shared.set(shared);
    }

    /// `stats.claimsFile`: a malformed file moved aside at startup, an
    /// invalid hand edit not in force, hand edits put in force.
    pub fn file_summary(&self) -> serde_json::Value {
        disk::summary(&self.status)
    }

    /// The current claims, without a lock.
    pub fn snapshot(&self) -> Arc<ClaimMap> {
        self.snap.load_full()
    }

    pub async fn apply(&self, op: ClaimOp) -> Result<ClaimOutcome, String> {
        if let Some(shared) = self.shared.get() {
            if shared.takes(&op) {
                return shared.apply(op).await;
            }
        }
        self.apply_local(op).await
    }

    /// Applies `op` to this node's map only (what a shared map decided).
    pub async fn apply_local(&self, op: ClaimOp) -> Result<ClaimOutcome, String> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send((op, reply))
            .await
            .map_err(|_| "claims are shutting down".to_string())?;
        rx.await
            .map_err(|_| "claims are shutting down".to_string())?
    }
}

struct ClaimTask {
    shared: Shared,
    path: PathBuf,
    fsync: bool,
    snap: Arc<ArcSwap<ClaimMap>>,
    /// The file as metrod last wrote or read it.
    known: Option<disk::Stamp>,
    status: disk::SharedStatus,
    /// An invalid hand edit on disk: durable changes are refused until it is
    /// fixed (it is never overwritten).
    invalid: Option<String>,
}

impl ClaimTask {
    async fn run(mut self, mut rx: mpsc::Receiver<(ClaimOp, Reply)>) {
        let mut batch = Vec::new();
        let mut last_write = tokio::time::Instant::now() - WRITE_GAP;
        while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
            // Under a stream of claim changes, write claims.json at most
            // once per WRITE_GAP: the ops that arrive meanwhile join this
            // batch (one clone, one write, one fsync for all of them).
            let may_write = batch
                .iter()
                .any(|(op, _)| !matches!(op, ClaimOp::DropConnection(_) | ClaimOp::Reload));
            if may_write && last_write.elapsed() < WRITE_GAP {
                tokio::time::sleep_until(last_write + WRITE_GAP).await;
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(item) => batch.push(item),
                        Err(_) => break,
                    }
                }
            }
            self.read_hand_edit();
            let (reloads, ops): (Vec<_>, Vec<_>) = batch
                .drain(..)
                .partition(|(op, _)| matches!(op, ClaimOp::Reload));
            batch = ops;
            for (_, reply) in reloads {
                let _ = reply.send(Ok(ClaimOutcome::Dropped(0)));
            }
            if batch.is_empty() {
                continue;
            }
            let current = self.snap.load_full();
            let mut next = (*current).clone();
            let outcomes: Vec<ClaimOutcome> =
                batch.iter().map(|(op, _)| apply(&mut next, op)).collect();
            let persist = next.durable_version != current.durable_version;
            if persist {
                last_write = tokio::time::Instant::now();
            }
            let result = if let (true, Some(why)) = (persist, &self.invalid) {
                Err(io::Error::other(format!(
                    "it holds a hand edit that is not valid and is not overwritten ({why}); fix it"
                )))
            } else if persist {
                let body = match serde_json::to_vec_pretty(&next.durable()) {
                    Ok(b) => b,
                    Err(e) => {
                        let why = e.to_string();
                        for (_, reply) in batch.drain(..) {
                            let _ = reply.send(Err(why.clone()));
                        }
                        continue;
                    }
                };
                let path = self.path.clone();
                let fsync = self.fsync;
                super::write_atomic_async(path, body, fsync).await
            } else {
                Ok(())
            };
            if persist && result.is_ok() {
                self.known = disk::Stamp::of(&self.path);
            }
            match result {
                Ok(()) => {
                    self.snap.store(Arc::new(next));
                    for ((_, reply), outcome) in batch.drain(..).zip(outcomes) {
                        let _ = reply.send(Ok(outcome));
                    }
                }
                Err(e) => {
                    let why = format!("could not write {}: {e}", self.path.display());
                    tracing::error!("{why}");
                    // Ops that leave the durable map as it is (ephemeral
                    // claims, dropping a closed connection's claims, no-op
                    // releases) need no write: they still take effect.
                    let mut partial = (*current).clone();
                    for (op, reply) in batch.drain(..) {
                        let mut trial = partial.clone();
                        let outcome = apply(&mut trial, &op);
                        if trial.durable_version == partial.durable_version {
                            partial = trial;
                            let _ = reply.send(Ok(outcome));
                        } else {
                            let _ = reply.send(Err(why.clone()));
                        }
                    }
                    self.snap.store(Arc::new(partial));
                }
            }
        }
    }
}

impl ClaimTask {
    /// Puts a valid hand edit of `claims.json` in force (ephemeral claims
    /// stay); logs an invalid one once and keeps the map in force.
    fn read_hand_edit(&mut self) {
        match disk::check(&self.path, self.known) {
            disk::OnDisk::Unchanged => {}
            disk::OnDisk::Edited(parsed, stamp) => {
                let current = self.snap.load_full();
                let mut next = ClaimMap {
                    platforms: current.platforms.clone(),
                    owners: current
                        .owners
                        .iter()
                        .filter(|(_, o)| o.ephemeral.is_some())
                        .map(|(k, o)| (k.clone(), o.clone()))
                        .collect(),
                    ignored: BTreeMap::new(),
                    durable_version: current.durable_version + 1,
                };
                let n = parsed.len();
                for (line, who) in parsed {
                    // An ephemeral claim on the line stays in force.
                    if !next.owners.contains_key(&line) {
                        next.load(line, who);
                    }
                }
                self.known = stamp;
                self.invalid = None;
                if let Ok(mut s) = self.status.lock() {
                    s.reloads += 1;
                    s.error = None;
                }
                if let Some(shared) = self.shared.get() {
                    let owned = |m: &ClaimMap| {
                        m.durable()
                            .into_iter()
                            .map(|(l, w)| (l.to_string(), w.to_string()))
                            .collect()
                    };
                    shared.hand_edit(owned(&current), owned(&next));
                }
                self.snap.store(Arc::new(next));
                tracing::info!(
                    "{} was edited by hand: its {n} claims are now in force",
                    self.path.display()
                );
            }
            disk::OnDisk::Invalid(why) => {
                if self.invalid.as_deref() != Some(why.as_str()) {
                    tracing::error!(
                        "hand edit rejected: {why}; the claims in force stay, and metrod will not \
                         write claims.json until it is fixed"
                    );
                    if let Ok(mut s) = self.status.lock() {
                        s.error = Some((why.clone(), crate::clock::now()));
                    }
                    self.invalid = Some(why);
                }
            }
        }
    }
}

impl ClaimMap {
    /// The durable owner of a line, if its claim is durable.
    fn durable_owner(o: Option<&Owner>) -> Option<&str> {
        o.filter(|o| o.ephemeral.is_none()).map(|o| o.who.as_str())
    }

    fn set(&mut self, line: &str, owner: Owner) {
        let new = Self::durable_owner(Some(&owner)).map(str::to_string);
        let old = self.owners.insert(line.to_string(), owner);
        let unignored = self.ignored.remove(line).is_some();
        if unignored || Self::durable_owner(old.as_ref()) != new.as_deref() {
            self.durable_version += 1;
        }
    }

    /// Removes the claim on `line`, in force or ignored.
    fn remove(&mut self, line: &str) -> bool {
        let old = self.owners.remove(line);
        let unignored = self.ignored.remove(line).is_some();
        if unignored || Self::durable_owner(old.as_ref()).is_some() {
            self.durable_version += 1;
        }
        old.is_some() || unignored
    }
}

fn apply(map: &mut ClaimMap, op: &ClaimOp) -> ClaimOutcome {
    match op {
        ClaimOp::Claim {
            line,
            who,
            if_free,
            ephemeral,
        } => {
            // A local line belongs to the identity it names.
            if map.is_local(line) && line != who {
                return ClaimOutcome::Conflict {
                    owner: line.clone(),
                };
            }
            let previous = map.owners.get(line).map(|o| o.who.clone());
            if *if_free {
                if let Some(owner) = &previous {
                    if owner != who {
                        return ClaimOutcome::Conflict {
                            owner: owner.clone(),
                        };
                    }
                }
            }
            map.set(
                line,
                Owner {
                    who: who.clone(),
                    ephemeral: *ephemeral,
                },
            );
            ClaimOutcome::Claimed {
                owner: who.clone(),
                previous,
            }
        }
        ClaimOp::Release { line } => ClaimOutcome::Released(map.remove(line)),
        ClaimOp::ReleaseIfOwner { line, who } => {
            if map.owners.get(line).is_some_and(|o| &o.who == who) {
                ClaimOutcome::Released(map.remove(line))
            } else {
                ClaimOutcome::Released(false)
            }
        }
        ClaimOp::Auto { line, .. } if map.is_local(line) => ClaimOutcome::Auto("off"),
        ClaimOp::Auto { line, who } => match map.owners.get(line) {
            None => {
                map.set(
                    line,
                    Owner {
                        who: who.clone(),
                        ephemeral: None,
                    },
                );
                ClaimOutcome::Auto("claimed")
            }
            Some(o) if &o.who == who => ClaimOutcome::Auto("kept"),
            Some(_) => ClaimOutcome::Auto("skipped"),
        },
        // Handled by the task before a batch applies.
        ClaimOp::Reload => ClaimOutcome::Dropped(0),
        ClaimOp::DropConnection(conn) => {
            // Only ephemeral claims go: the durable version stays.
            let before = map.owners.len();
            map.owners.retain(|_, o| o.ephemeral != Some(*conn));
            ClaimOutcome::Dropped(before - map.owners.len())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat_map() -> ClaimMap {
        ClaimMap::new(Platforms::new(["telegram", "discord", "webhook"]))
    }

    #[test]
    fn claim_rules() {
        let mut m = chat_map();
        let claim = |line: &str, who: &str, if_free| ClaimOp::Claim {
            line: line.into(),
            who: who.into(),
            if_free,
            ephemeral: None,
        };
        assert_eq!(
            apply(&mut m, &claim("metro://telegram/1", "a", false)),
            ClaimOutcome::Claimed {
                owner: "a".into(),
                previous: None
            }
        );
        assert_eq!(
            apply(&mut m, &claim("metro://telegram/1", "b", true)),
            ClaimOutcome::Conflict { owner: "a".into() }
        );
        assert_eq!(
            apply(&mut m, &claim("metro://telegram/1", "b", false)),
            ClaimOutcome::Claimed {
                owner: "b".into(),
                previous: Some("a".into())
            }
        );
        let auto = |who: &str| ClaimOp::Auto {
            line: "metro://telegram/1".into(),
            who: who.into(),
        };
        assert_eq!(apply(&mut m, &auto("b")), ClaimOutcome::Auto("kept"));
        assert_eq!(apply(&mut m, &auto("a")), ClaimOutcome::Auto("skipped"));
        assert_eq!(
            apply(
                &mut m,
                &ClaimOp::Release {
                    line: "metro://telegram/1".into()
                }
            ),
            ClaimOutcome::Released(true)
        );
        assert_eq!(apply(&mut m, &auto("a")), ClaimOutcome::Auto("claimed"));
        assert_eq!(
            apply(
                &mut m,
                &ClaimOp::Release {
                    line: "metro://telegram/2".into()
                }
            ),
            ClaimOutcome::Released(false)
        );
    }

    #[test]
    fn local_lines_belong_to_the_identity_they_name() {
        let mut m = chat_map();
        let bob = "metro://codex/user/bob";
        let alice = "metro://claude/user/alice";
        let claim = |line: &str, who: &str| ClaimOp::Claim {
            line: line.into(),
            who: who.into(),
            if_free: false,
            ephemeral: None,
        };
        assert_eq!(
            apply(&mut m, &claim(bob, alice)),
            ClaimOutcome::Conflict { owner: bob.into() }
        );
        // A line below an identity is its own identity.
        let sub = "metro://codex/user/bob/s1";
        assert_eq!(
            apply(&mut m, &claim(sub, bob)),
            ClaimOutcome::Conflict { owner: sub.into() }
        );
        let auto = ClaimOp::Auto {
            line: bob.into(),
            who: alice.into(),
        };
        assert_eq!(apply(&mut m, &auto), ClaimOutcome::Auto("off"));
        assert!(m.is_empty());
        assert!(matches!(
            apply(&mut m, &claim(bob, bob)),
            ClaimOutcome::Claimed { .. }
        ));

        // Loaded from an older claims.json: kept for the file, not in force.
        let mut m = chat_map();
        m.load(bob.into(), alice.into());
        m.load("metro://telegram/5".into(), alice.into());
        assert_eq!(m.owner(bob), None);
        assert_eq!(m.ignored().collect::<Vec<_>>(), [(bob, alice)]);
        assert_eq!(m.durable().len(), 2);
        let v = m.durable_version;
        assert_eq!(
            apply(&mut m, &ClaimOp::Release { line: bob.into() }),
            ClaimOutcome::Released(true)
        );
        assert!(m.durable_version > v, "the release must be written");
        assert_eq!(m.ignored().count(), 0);
        assert_eq!(m.durable().len(), 1);
    }
}
