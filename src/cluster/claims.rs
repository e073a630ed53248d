//! One claims map for the cluster: the JetStream KV bucket `metro-claims`
//! (key: the line URI in base64url, value: the owner).
//!
//! - A durable claim change on a chat line is decided by the bucket:
//!   `claim` with `ifFree` and outbound auto-claims are a `create` (or an
//!   `update` at the revision read), so of two nodes racing for a line one
//!   wins and the other is answered `conflict`; a plain `claim` is a `put`;
//!   `release` a delete marker.
//! - Every node watches the bucket and applies each change to its own map
//!   (and so to its `claims.json`, the node's local snapshot). A change made
//!   here is answered once the watch has applied it, so a client that
//!   claims and then reads sees its claim.
//! - Ephemeral claims and claims of local (agent) lines stay on their node.
//! - A hand edit of `claims.json`, once in force here, is written to the
//!   bucket line by line as if claimed here.
//! - While the bucket is unreachable, durable claim changes are refused with
//!   an error saying so; the map in force keeps routing.
//! - At startup, a durable claim this node holds for a line the bucket has
//!   never seen is written there (a node joining with claims keeps them);
//!   anything the bucket knows wins.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use async_nats::jetstream::kv::{self, Operation};
use async_nats::jetstream::stream;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::names;
use super::status::Status;
use crate::broker::Broker;
use crate::line::{self, Platforms};
use crate::store::claims::{ClaimOp, ClaimOutcome, SharedClaims};

/// How long an answer waits for the watch to bring the change home.
const APPLIED_WAIT: Duration = Duration::from_secs(5);
/// Largest owner value accepted from the bucket (identities are short).
pub const MAX_VALUE: i32 = 1024;

pub struct SharedMap {
    status: Arc<Status>,
    /// Which lines are stations' (shared); local lines stay on the node.
    platforms: Platforms,
    kv: OnceLock<kv::Store>,
    /// The newest bucket revision the watch applied here.
    applied: watch::Sender<u64>,
}

impl SharedMap {
    pub fn new(status: Arc<Status>, platforms: Platforms) -> Arc<SharedMap> {
        Arc::new(SharedMap {
            status,
            platforms,
            kv: OnceLock::new(),
            applied: watch::channel(0).0,
        })
    }

    /// The bucket, when it can answer now: without a connection a request
    /// would only time out, so it fails at once.
    fn store(&self) -> Result<&kv::Store, String> {
        match self.kv.get() {
            Some(kv) if self.status.connected() => Ok(kv),
            _ => Err(format!(
                "the cluster's claims map cannot be reached (NATS: {}); try again later",
                self.status.connection()
            )),
        }
    }

    /// Waits until the watch has applied `revision` (bounded).
    async fn applied(&self, revision: u64) {
        let mut rx = self.applied.subscribe();
        let _ = tokio::time::timeout(APPLIED_WAIT, rx.wait_for(|r| *r >= revision)).await;
    }

    /// The owner the bucket holds for `key`, and the revision to update at
    /// (0: never written).
    async fn read(&self, kv: &kv::Store, key: &str) -> Result<(Option<String>, u64), String> {
        match kv.entry(key).await.map_err(unreachable)? {
            None => Ok((None, 0)),
            Some(e) if e.operation == Operation::Put => Ok((
                Some(String::from_utf8_lossy(&e.value).into_owned()),
                e.revision,
            )),
            Some(e) => Ok((None, e.revision)),
        }
    }

    /// Takes `line` for `who` if nobody owns it: `Ok(None)` when taken (or
    /// already `who`'s), `Ok(Some(owner))` when someone else owns it.
    async fn take_if_free(&self, line: &str, who: &str) -> Result<(Option<String>, bool), String> {
        let kv = self.store()?;
        let key = names::line_key(line);
        // A lost race is read again: the winner is named in the answer.
        for _ in 0..3 {
            let (owner, revision) = self.read(kv, &key).await?;
            match owner {
                Some(o) if o == who => return Ok((None, false)),
                Some(o) => return Ok((Some(o), false)),
                None => {
                    let value = Bytes::from(who.to_string());
                    let r = if revision == 0 {
                        kv.create(&key, value).await.map_err(|e| e.to_string())
                    } else {
                        kv.update(&key, value, revision)
                            .await
                            .map_err(|e| e.to_string())
                    };
                    match r {
                        Ok(rev) => {
                            self.applied(rev).await;
                            return Ok((None, true));
                        }
                        Err(why) if is_race(&why) => continue,
                        Err(why) => return Err(unreachable(why)),
                    }
                }
            }
        }
        Err("the line's claim changed three times while being taken; try again".into())
    }

    async fn decide(&self, op: ClaimOp) -> Result<ClaimOutcome, String> {
        match op {
            ClaimOp::Claim {
                line,
                who,
                if_free: true,
                ..
            } => match self.take_if_free(&line, &who).await? {
                (Some(owner), _) => Ok(ClaimOutcome::Conflict { owner }),
                (None, took) => Ok(ClaimOutcome::Claimed {
                    previous: (!took).then(|| who.clone()),
                    owner: who,
                }),
            },
            ClaimOp::Claim { line, who, .. } => {
                let kv = self.store()?;
                let key = names::line_key(&line);
                let (previous, _) = self.read(kv, &key).await?;
                let rev = kv
                    .put(&key, Bytes::from(who.clone()))
                    .await
                    .map_err(unreachable)?;
                self.applied(rev).await;
                Ok(ClaimOutcome::Claimed {
                    owner: who,
                    previous,
                })
            }
            // The message went out already: an unreachable map leaves the
            // line as it is rather than turn the answer into an error.
            ClaimOp::Auto { line, who } => match self.take_if_free(&line, &who).await {
                Ok((Some(_), _)) => Ok(ClaimOutcome::Auto("skipped")),
                Ok((None, true)) => Ok(ClaimOutcome::Auto("claimed")),
                Ok((None, false)) => Ok(ClaimOutcome::Auto("kept")),
                Err(why) => {
                    tracing::warn!("cluster: {line} was not auto-claimed: {why}");
                    Ok(ClaimOutcome::Auto("skipped"))
                }
            },
            ClaimOp::Release { line } => {
                let kv = self.store()?;
                let key = names::line_key(&line);
                let (owner, _) = self.read(kv, &key).await?;
                if owner.is_none() {
                    return Ok(ClaimOutcome::Released(false));
                }
                kv.delete(&key).await.map_err(unreachable)?;
                self.settle(kv, &key).await;
                Ok(ClaimOutcome::Released(true))
            }
            ClaimOp::ReleaseIfOwner { line, who } => {
                let kv = self.store()?;
                let key = names::line_key(&line);
                let (owner, revision) = self.read(kv, &key).await?;
                if owner.as_deref() != Some(who.as_str()) {
                    return Ok(ClaimOutcome::Released(false));
                }
                match kv.delete_expect_revision(&key, Some(revision)).await {
                    Ok(()) => {
                        self.settle(kv, &key).await;
                        Ok(ClaimOutcome::Released(true))
                    }
                    Err(e) if is_race(&e.to_string()) => Ok(ClaimOutcome::Released(false)),
                    Err(e) => Err(unreachable(e)),
                }
            }
            other => Err(format!("{other:?} is not a shared claim change")),
        }
    }

    /// A delete does not return its revision: wait for the one now current.
    async fn settle(&self, kv: &kv::Store, key: &str) {
        if let Ok(Some(e)) = kv.entry(key).await {
            self.applied(e.revision).await;
        }
    }
}

fn unreachable(e: impl std::fmt::Display) -> String {
    format!("the cluster's claims map did not answer ({e})")
}

/// A create or update that lost to another writer.
fn is_race(why: &str) -> bool {
    let w = why.to_ascii_lowercase();
    w.contains("wrong last sequence") || w.contains("already exists") || w.contains("10071")
}

/// A chat line's durable claim: shared. Local lines and ephemeral claims
/// stay on the node.
fn is_shared(platforms: &Platforms, op: &ClaimOp) -> bool {
    match op {
        ClaimOp::Claim {
            line, ephemeral, ..
        } => ephemeral.is_none() && !platforms.is_local(line),
        ClaimOp::Release { line }
        | ClaimOp::ReleaseIfOwner { line, .. }
        | ClaimOp::Auto { line, .. } => !platforms.is_local(line),
        ClaimOp::DropConnection(_) | ClaimOp::Reload => false,
    }
}

impl SharedClaims for SharedMap {
    fn takes(&self, op: &ClaimOp) -> bool {
        is_shared(&self.platforms, op)
    }

    fn apply(
        &self,
        op: ClaimOp,
    ) -> Pin<Box<dyn Future<Output = Result<ClaimOutcome, String>> + Send + '_>> {
        Box::pin(self.decide(op))
    }

    fn hand_edit(&self, before: BTreeMap<String, String>, after: BTreeMap<String, String>) {
        let Some(kv) = self.kv.get().cloned() else {
            tracing::warn!(
                "cluster: a hand edit of claims.json is in force on this node only: the claims map is not reachable"
            );
            return;
        };
        let platforms = self.platforms.clone();
        tokio::spawn(async move {
            for (line, who) in &after {
                if platforms.is_local(line) || before.get(line) == Some(who) {
                    continue;
                }
                if let Err(e) = kv
                    .put(names::line_key(line), Bytes::from(who.clone()))
                    .await
                {
                    tracing::error!("cluster: hand edit: could not claim {line} for {who}: {e}");
                }
            }
            for line in before.keys() {
                if platforms.is_local(line) || after.contains_key(line) {
                    continue;
                }
                if let Err(e) = kv.delete(names::line_key(line)).await {
                    tracing::error!("cluster: hand edit: could not release {line}: {e}");
                }
            }
        });
    }
}

/// The bucket's stream, as a KV bucket's stream is made (history 1, file
/// storage, rollups, direct gets). Made by hand: async-nats's
/// `create_key_value` first reads the account info, whose answer from
/// nats-server 2.9 it does not parse.
pub fn bucket_stream_config() -> stream::Config {
    kv_stream_config(
        names::CLAIMS_BUCKET,
        "metro: line -> owner, shared by the metrod nodes",
        MAX_VALUE,
        Duration::from_secs(120),
    )
}

/// The stream of KV bucket `bucket` as nats-server makes one: one value
/// per key, values up to `max_value` bytes, file storage, rollups, direct
/// gets, a duplicate window of `window`.
pub(super) fn kv_stream_config(
    bucket: &str,
    description: &str,
    max_value: i32,
    window: Duration,
) -> stream::Config {
    stream::Config {
        name: format!("KV_{bucket}"),
        description: Some(description.into()),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        max_message_size: max_value,
        storage: stream::StorageType::File,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        num_replicas: 1,
        discard: stream::DiscardPolicy::New,
        duplicate_window: window,
        ..Default::default()
    }
}

/// Puts the bucket to use: pushes the claims only this node knows, then
/// watches the bucket until shutdown, applying every change here.
pub async fn run(
    broker: Weak<Broker>,
    map: Arc<SharedMap>,
    store: kv::Store,
    status: Arc<Status>,
    shutdown: CancellationToken,
) {
    let _ = map.kv.set(store.clone());
    if let Some(b) = broker.upgrade() {
        push_local(&b, &store).await;
    }
    loop {
        if let Err(why) = watch_once(&broker, &map, &store, &shutdown).await {
            if shutdown.is_cancelled() {
                return;
            }
            tracing::warn!("cluster: the claims watch stopped: {why}; starting it again");
            status.error(format!("claims watch: {why}"));
        } else {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

async fn push_local(broker: &Broker, store: &kv::Store) {
    let snap = broker.claims.snapshot();
    for (line, owner) in snap.iter_sorted() {
        if owner.ephemeral.is_some() || broker.platforms.is_local(line) {
            continue;
        }
        let key = names::line_key(line);
        match store.entry(&key).await {
            Ok(None) => {
                if let Err(e) = store.create(&key, Bytes::from(owner.who.clone())).await {
                    tracing::debug!("cluster: {line} was claimed meanwhile: {e}");
                }
            }
            Ok(Some(_)) => {}
            Err(e) => {
                tracing::warn!("cluster: cannot read the claims map: {e}");
                return;
            }
        }
    }
}

async fn watch_once(
    broker: &Weak<Broker>,
    map: &SharedMap,
    store: &kv::Store,
    shutdown: &CancellationToken,
) -> Result<(), String> {
    let mut watch = store
        .watch_with_history(">")
        .await
        .map_err(|e| e.to_string())?;
    loop {
        let entry = tokio::select! {
            e = watch.next() => e,
            _ = shutdown.cancelled() => return Ok(()),
        };
        let entry = match entry {
            None => return Err("the watch ended".into()),
            Some(Err(e)) => return Err(e.to_string()),
            Some(Ok(e)) => e,
        };
        let Some(broker) = broker.upgrade() else {
            return Ok(());
        };
        let Some(line) = names::key_line(&entry.key).filter(|l| line::line(l).is_ok()) else {
            tracing::warn!(
                "cluster: passing over claims key {:?}: not a line",
                entry.key
            );
            continue;
        };
        let op = match entry.operation {
            Operation::Put => {
                let who = String::from_utf8_lossy(&entry.value).into_owned();
                if !matches!(line::identity(&who), Ok(Some(_))) {
                    tracing::warn!(
                        "cluster: passing over the claim of {line}: its owner is not an identity"
                    );
                    continue;
                }
                ClaimOp::Claim {
                    line,
                    who,
                    if_free: false,
                    ephemeral: None,
                }
            }
            Operation::Delete | Operation::Purge => ClaimOp::Release { line },
        };
        if let Err(e) = broker.claims.apply_local(op).await {
            tracing::error!("cluster: a shared claim change could not be applied here: {e}");
        }
        map.applied.send_modify(|r| *r = (*r).max(entry.revision));
    }
}
