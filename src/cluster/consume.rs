//! Receiving the other nodes' events: one durable pull consumer per node
//! (`metrod-<node>`) on the whole stream. Each event of another node is
//! appended to the local log as it is (its `id` and `ts` kept, `node`
//! added) and only then acknowledged, so a crash in between delivers it
//! again; the node's own events (same filter: nats-server 2.9 has one
//! filter subject per consumer) are acknowledged and passed over.
//!
//! A delivery whose id the log already holds is skipped. The ids are kept
//! in [`Seen`]: the newest [`SEEN_IDS`] ids of other nodes' events (about
//! 5 MiB at most), seeded at startup from the last [`SEED_BYTES`] of the
//! log. That suffices because a repeat only comes from a delivery that was
//! not acknowledged, and at most [`MAX_ACK_PENDING`] are unacknowledged at
//! once, or from a republish after a crash (at most the publisher's mark
//! interval of events).
//!
//! A station event of another node whose platform key (Telegram's
//! `updateId`, Discord's message key) the log already holds is skipped
//! too ([`super::keys`]): at a takeover the old and the new holder of a
//! chat station may each have stored one update. While the station runs
//! on this node, the key is first claimed in its recent keys
//! ([`StationCore::begin`]), so the station and this consumer never both
//! store one update; the copy kept is whichever reached the log first.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use futures_util::StreamExt;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::keys::{Known, PlatformKey};
use super::names;
use super::status::Status;
use crate::broker::Broker;
use crate::proto::Event;
use crate::station::core::{Claim, StationCore};
use crate::station::{Registry, Station};
use crate::store::log::AppendError;

/// Ids of other nodes' events remembered for skipping repeats.
pub const SEEN_IDS: usize = 65_536;
/// Bytes at the end of the log read at startup to seed [`Seen`].
pub const SEED_BYTES: u64 = 16 << 20;
/// Deliveries the server lets this node hold unacknowledged.
pub const MAX_ACK_PENDING: i64 = 1024;

/// A bounded set of recent ids, oldest dropped first.
#[derive(Default)]
pub struct Seen {
    set: HashSet<String>,
    order: VecDeque<String>,
}

impl Seen {
    pub fn contains(&self, id: &str) -> bool {
        self.set.contains(id)
    }

    pub fn insert(&mut self, id: String) {
        if self.set.insert(id.clone()) {
            self.order.push_back(id);
            while self.order.len() > SEEN_IDS {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }

    /// The ids of replicas (lines with `node`) in the log's last bytes.
    pub fn seed(broker: &Broker) -> Seen {
        #[derive(Deserialize)]
        struct Head {
            #[serde(default)]
            id: String,
            #[serde(default)]
            node: Option<serde::de::IgnoredAny>,
        }
        let mut seen = Seen::default();
        let r = broker.log.for_each_recent_blocking(SEED_BYTES, |json| {
            if let Ok(h) = serde_json::from_slice::<Head>(json) {
                if h.node.is_some() && !h.id.is_empty() {
                    seen.insert(h.id);
                }
            }
        });
        if let Err(e) = r {
            tracing::warn!("cluster: could not read the log's end for known ids: {e}");
        }
        seen
    }
}

/// What the consumer knows of the local log, to skip repeats.
pub struct Replicas {
    /// Ids of replicated events.
    pub seen: Seen,
    /// Platform keys of station events, own and replicated.
    pub known: Known,
    /// The registry, once the cluster leads it (the running stations'
    /// recent keys).
    pub registry: Arc<OnceLock<Weak<Registry>>>,
}

/// A platform key claimed in a running station's recent keys: forgotten
/// again unless stored (also when dropped mid-way).
struct Claimed {
    station: Arc<dyn Station>,
    key: String,
    done: Option<tokio::sync::watch::Sender<()>>,
}

impl Claimed {
    fn core(&self) -> Option<&StationCore> {
        self.station.inbound_core()
    }

    fn stored(mut self, id: &str) {
        if let (Some(done), Some(core)) = (self.done.take(), self.station.inbound_core()) {
            core.finish(&self.key, Some(id), done);
        }
    }
}

impl Drop for Claimed {
    fn drop(&mut self) {
        if let Some(done) = self.done.take() {
            if let Some(core) = self.core() {
                core.finish(&self.key, None, done);
            }
        }
    }
}

/// What to do with a replica that has a platform key.
enum Decision {
    /// The log holds that platform event already.
    Skip,
    /// Append it (holding the station's claim, if it runs here).
    Append(Option<Claimed>),
    /// Shutting down.
    Stop,
}

/// Looks `key` up in the log's keys and, when its station runs here, claims
/// it in the station's recent keys (waiting while the station stores it).
async fn decide(
    broker: &Broker,
    replicas: &mut Replicas,
    key: &PlatformKey,
    shutdown: &CancellationToken,
) -> Decision {
    replicas.known.catch_up(&broker.log).await;
    if replicas.known.contains(key) {
        return Decision::Skip;
    }
    let station = replicas
        .registry
        .get()
        .and_then(Weak::upgrade)
        .and_then(|r| r.get(key.station));
    let Some(station) = station else {
        return Decision::Append(None);
    };
    loop {
        let Some(core) = station.inbound_core() else {
            return Decision::Append(None);
        };
        match core.begin(&key.key) {
            Claim::Duplicate(_) => return Decision::Skip,
            Claim::Wait(mut rx) => {
                tokio::select! {
                    _ = shutdown.cancelled() => return Decision::Stop,
                    _ = async { while rx.changed().await.is_ok() {} } => {}
                }
            }
            Claim::Mine(done) => {
                return Decision::Append(Some(Claimed {
                    station: station.clone(),
                    key: key.key.clone(),
                    done: Some(done),
                }))
            }
        }
    }
}

pub async fn run(
    broker: Arc<Broker>,
    js: async_nats::jetstream::Context,
    status: Arc<Status>,
    mut replicas: Replicas,
    shutdown: CancellationToken,
) {
    let name = names::consumer(&status.node);
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        match consume(&broker, &js, &status, &name, &mut replicas, &shutdown).await {
            Ok(()) => return,
            Err(why) => {
                if !shutdown.is_cancelled() {
                    tracing::warn!("cluster: the consumer stopped: {why}; starting it again");
                    status.error(format!("consumer: {why}"));
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// The consumer's settings (created if missing, found otherwise).
pub fn consumer_config(name: &str) -> pull::Config {
    pull::Config {
        durable_name: Some(name.to_string()),
        description: Some("metrod: other nodes' events into this node's log".into()),
        filter_subject: format!("{}>", names::SUBJECT_PREFIX),
        deliver_policy: DeliverPolicy::All,
        ack_policy: AckPolicy::Explicit,
        ack_wait: Duration::from_secs(30),
        max_ack_pending: MAX_ACK_PENDING,
        ..Default::default()
    }
}

async fn consume(
    broker: &Broker,
    js: &async_nats::jetstream::Context,
    status: &Status,
    name: &str,
    replicas: &mut Replicas,
    shutdown: &CancellationToken,
) -> Result<(), String> {
    let stream = js
        .get_stream(names::STREAM)
        .await
        .map_err(|e| e.to_string())?;
    let consumer: async_nats::jetstream::consumer::Consumer<pull::Config> = stream
        .get_or_create_consumer(name, consumer_config(name))
        .await
        .map_err(|e| e.to_string())?;
    let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
    loop {
        let msg = tokio::select! {
            m = messages.next() => m,
            _ = shutdown.cancelled() => return Ok(()),
        };
        let msg = match msg {
            None => return Err("the message stream ended".into()),
            Some(Err(e)) => return Err(e.to_string()),
            Some(Ok(m)) => m,
        };
        let Some(node) = names::node_of_subject(msg.subject.as_str()) else {
            tracing::warn!(
                "cluster: passing over a message on {} (not a node's subject)",
                msg.subject
            );
            let _ = msg.ack().await;
            continue;
        };
        if node == status.node {
            let _ = msg.ack().await;
            continue;
        }
        status.saw_node(&node);
        let mut event: Event = match serde_json::from_slice(&msg.payload) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(
                    "cluster: passing over an event from {node} that is not an event object: {e}"
                );
                let _ = msg.ack().await;
                continue;
            }
        };
        if crate::line::line(&event.line).is_err() {
            tracing::warn!(
                "cluster: passing over an event from {node} whose line is not a line URI"
            );
            let _ = msg.ack().await;
            continue;
        }
        if event.id.is_empty() || replicas.seen.contains(&event.id) {
            status.duplicates.fetch_add(1, Relaxed);
            let _ = msg.ack().await;
            continue;
        }
        let key = replicas.known.of_event(&event);
        let claimed = match &key {
            None => None,
            Some(k) => match decide(broker, replicas, k, shutdown).await {
                Decision::Stop => return Ok(()),
                Decision::Skip => {
                    tracing::info!(
                        "cluster: {node}'s event {} is a {} event this log already holds \
                         (key {}): not stored twice",
                        event.id,
                        k.station,
                        k.key
                    );
                    replicas.seen.insert(event.id);
                    status.duplicates.fetch_add(1, Relaxed);
                    let _ = msg.ack().await;
                    continue;
                }
                Decision::Append(claimed) => claimed,
            },
        };
        event
            .extra
            .insert("node".into(), serde_json::Value::String(node));
        let id = event.id.clone();
        match broker.log.append_replica(event).await {
            Ok(_) => {
                if let Some(c) = claimed {
                    c.stored(&id);
                }
                if let Some(k) = &key {
                    replicas.known.insert(k);
                }
                replicas.seen.insert(id);
                status.received.fetch_add(1, Relaxed);
                // An acknowledgement that is lost brings the event again,
                // which `seen` skips.
                let _ = msg.ack().await;
            }
            Err(AppendError::ShuttingDown) => return Ok(()),
            Err(AppendError::Io(why)) => {
                // Not acknowledged: the server delivers it again.
                return Err(format!("cannot append to the local log: {why}"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_ids_are_bounded_and_forget_the_oldest() {
        let mut s = Seen::default();
        for i in 0..SEEN_IDS + 10 {
            s.insert(format!("msg_{i}"));
        }
        assert_eq!(s.set.len(), SEEN_IDS);
        assert_eq!(s.order.len(), SEEN_IDS);
        assert!(!s.contains("msg_0") && !s.contains("msg_9"));
        assert!(s.contains("msg_10") && s.contains(&format!("msg_{}", SEEN_IDS + 9)));
        s.insert("msg_10".into());
        assert_eq!(s.order.len(), SEEN_IDS, "a known id is not added twice");
    }
}
