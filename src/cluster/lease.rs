//! One poller per bot: a station that runs on one node at a time
//! ([`crate::station::StationKind::one_node`]: telegram, discord) runs on
//! the node that holds its lease, a key in the bucket `metro-leases` whose
//! age limit is the lease time (`[cluster] lease`, default 10 s).
//!
//! nats-server 2.9 has no per-key TTL, so the bucket's `max_age` is the
//! lease: a key not rewritten within it vanishes. For each such station
//! whose config is enabled here, a node keeps trying `create` (only if
//! absent) every quarter lease. The holder first waits until its consumer
//! has appended everything the stream holds (so the station, opened from
//! the log, knows what the old holder stored), then has the registry start
//! the station, and rewrites the key every third of a lease with `update`
//! at the revision it wrote last. A renewal counts from the moment it was
//! sent (the server's copy cannot be older); when none is confirmed within
//! the lease minus a quarter, or another node's write is found, the node
//! stops the station — before the key can vanish and another node take
//! it. A node whose config no longer enables the station, or that shuts
//! down, deletes the key after the station stopped, so another takes over
//! at once.
//!
//! Every node (enabled or not) reads the keys to know who holds each
//! station: the registry routes outbound ops there ([`super::rpc`]) and
//! `stations` and `stats.cluster.stations` show it.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::kv::{self, CreateErrorKind, UpdateErrorKind};
use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::names;
use super::status::Status;
use crate::station::{Gate, Registry, Station, StationKind};

/// A lease holder waits at most this many leases for its consumer to catch
/// up before it starts the station anyway (a warning says so).
const CATCH_UP_LEASES: u32 = 3;

/// The bucket's stream: one value per key, the lease as its age limit.
pub fn bucket_stream_config(lease: Duration) -> stream::Config {
    stream::Config {
        max_age: lease,
        ..super::claims::kv_stream_config(
            names::LEASES_BUCKET,
            "metro: station -> the node that runs it (leases)",
            1024,
            lease,
        )
    }
}

/// This node's leases: the registry's [`Gate`].
pub struct Leases {
    status: Arc<Status>,
    client: async_nats::Client,
    lease: Duration,
    /// Stations this node holds and may run.
    held: Mutex<HashSet<String>>,
}

impl Leases {
    pub fn new(status: Arc<Status>, client: async_nats::Client, lease: Duration) -> Leases {
        Leases {
            status,
            client,
            lease,
            held: Mutex::new(HashSet::new()),
        }
    }

    fn set_held(&self, station: &str, held: bool) {
        if let Ok(mut h) = self.held.lock() {
            if held {
                h.insert(station.to_string());
            } else {
                h.remove(station);
            }
        }
        if held {
            self.status
                .set_station(station, Some(self.status.node.clone()));
        }
    }
}

impl Gate for Leases {
    fn node(&self) -> &str {
        &self.status.node
    }

    fn holds(&self, station: &str) -> bool {
        self.held.lock().is_ok_and(|h| h.contains(station))
    }

    fn holder(&self, station: &str) -> Option<String> {
        self.status.station(station)
    }

    fn remote(&self, kind: &Arc<dyn StationKind>, node: &str) -> Arc<dyn Station> {
        Arc::new(super::rpc::Remote::new(
            kind.clone(),
            node.to_string(),
            self.client.clone(),
        ))
    }
}

/// Holds (or waits for, or watches) station `name`'s lease until
/// `shutdown`.
pub async fn hold(
    leases: Arc<Leases>,
    registry: Arc<Registry>,
    js: jetstream::Context,
    name: &'static str,
    shutdown: CancellationToken,
) {
    let lease = leases.lease;
    let Some(kv) = bucket(&js, &leases.status, lease, &shutdown).await else {
        return;
    };
    let key = names::encode_node(name);
    let me = leases.status.node.clone();
    let poll = lease / 4;
    let margin = lease / 4;
    let renew_every = lease / 3;
    // The revision this node wrote last and when that write was sent.
    let mut held: Option<(u64, Instant)> = None;
    // When the next renewal is due.
    let mut next_renew = Instant::now();
    let mut took_at = Instant::now();
    let mut started = false;
    loop {
        let now = Instant::now();
        match held {
            None => {
                if registry.wanted(name) {
                    let sent = Instant::now();
                    match tokio::time::timeout(poll, kv.create(&key, Bytes::from(me.clone()))).await
                    {
                        Ok(Ok(rev)) => {
                            tracing::info!("cluster: took the lease of the {name} station");
                            held = Some((rev, sent));
                            next_renew = sent + renew_every;
                            took_at = sent;
                            started = false;
                            leases.status.set_station(name, Some(me.clone()));
                        }
                        Ok(Err(e)) if e.kind() == CreateErrorKind::AlreadyExists => {
                            // Written by this node (a create that timed out
                            // here but landed, or this node before a
                            // restart): taken back at the revision seen.
                            if let Some(rev) = learn(&kv, &key, name, &leases.status).await {
                                let sent = Instant::now();
                                let put = kv.update(&key, Bytes::from(me.clone()), rev);
                                if let Ok(Ok(rev)) = tokio::time::timeout(poll, put).await {
                                    tracing::info!(
                                        "cluster: took back this node's lease of the {name} station"
                                    );
                                    held = Some((rev, sent));
                                    next_renew = sent + renew_every;
                                    took_at = sent;
                                    started = false;
                                }
                            }
                        }
                        Ok(Err(e)) => {
                            tracing::debug!("cluster: lease of {name}: {e}");
                            learn(&kv, &key, name, &leases.status).await;
                        }
                        Err(_) => {}
                    }
                } else {
                    learn(&kv, &key, name, &leases.status).await;
                }
            }
            Some((rev, confirmed)) => {
                let deadline = confirmed + lease - margin;
                if shutdown.is_cancelled() || !registry.wanted(name) {
                    // Stopped first, then freed: never two pollers.
                    leases.set_held(name, false);
                    registry.stop_because(name, "stopped").await;
                    let _ = tokio::time::timeout(poll, kv.delete_expect_revision(&key, Some(rev)))
                        .await;
                    leases.status.set_station(name, None);
                    held = None;
                    tracing::info!("cluster: gave up the lease of the {name} station");
                    if shutdown.is_cancelled() {
                        return;
                    }
                    continue;
                }
                if now >= deadline {
                    lose(
                        &leases,
                        &registry,
                        name,
                        "standby: its lease could not be renewed in time (NATS unreachable?); \
                         another node may take it over",
                    )
                    .await;
                    held = None;
                    continue;
                }
                if now >= next_renew {
                    let sent = Instant::now();
                    // A failed write is tried again soon; a good one a
                    // third of a lease later.
                    next_renew = sent + lease / 10;
                    let budget = deadline.saturating_duration_since(sent);
                    match tokio::time::timeout(
                        budget,
                        kv.update(&key, Bytes::from(me.clone()), rev),
                    )
                    .await
                    {
                        Ok(Ok(r)) => {
                            held = Some((r, sent));
                            next_renew = sent + renew_every;
                        }
                        Ok(Err(e)) if e.kind() == UpdateErrorKind::WrongLastRevision => {
                            lose(
                                &leases,
                                &registry,
                                name,
                                "standby: another node took its lease over",
                            )
                            .await;
                            held = None;
                            continue;
                        }
                        Ok(Err(e)) => {
                            tracing::warn!("cluster: cannot renew the lease of {name}: {e}");
                            leases.status.error(format!("lease of {name}: {e}"));
                        }
                        Err(_) => {}
                    }
                }
                if !started {
                    let waited = took_at.elapsed();
                    // Never past the renewal deadline.
                    let budget = deadline.saturating_duration_since(Instant::now()).min(poll);
                    let caught_up = tokio::time::timeout(budget, caught_up(&js, &leases.status))
                        .await
                        .unwrap_or(false);
                    if caught_up || waited > lease * CATCH_UP_LEASES {
                        if !caught_up {
                            tracing::warn!(
                                "cluster: starting the {name} station before the consumer caught up \
                                 (waited {} s)",
                                waited.as_secs()
                            );
                        }
                        leases.set_held(name, true);
                        // Once: a station that cannot open says why in its
                        // row; a config change starts it again.
                        started = true;
                        if registry.start(name).await {
                            tracing::info!("cluster: runs the {name} station");
                        }
                    }
                }
            }
        }
        // Until the next renewal (never past its deadline), or a poll.
        let now = Instant::now();
        let nap = match held {
            Some((_, confirmed)) => {
                let renew = next_renew.saturating_duration_since(now);
                let left = (confirmed + lease - margin).saturating_duration_since(now);
                let nap = renew.min(left);
                if started {
                    nap
                } else {
                    nap.min(poll)
                }
            }
            None => poll,
        };
        tokio::select! {
            _ = tokio::time::sleep(nap) => {}
            _ = shutdown.cancelled() => {
                if held.is_none() {
                    return;
                }
            }
        }
    }
}

/// Stops the station after its lease is lost (not renewed in time, or
/// taken).
async fn lose(leases: &Leases, registry: &Registry, name: &str, why: &str) {
    leases.set_held(name, false);
    leases.status.set_station(name, None);
    tracing::warn!("cluster: the {name} station stops: {why}");
    registry.stop_because(name, why).await;
}

/// Records who holds the key now (nobody when it is absent); the key's
/// revision when this node's name is in it.
async fn learn(kv: &kv::Store, key: &str, name: &str, status: &Status) -> Option<u64> {
    let Ok(Ok(entry)) = tokio::time::timeout(Duration::from_secs(2), kv.entry(key)).await else {
        return None;
    };
    let entry = entry.filter(|e| e.operation == kv::Operation::Put);
    let revision = entry.as_ref().map(|e| e.revision);
    let holder = entry.and_then(|e| String::from_utf8(e.value.to_vec()).ok());
    let mine = holder.as_deref() == Some(status.node.as_str());
    status.set_station(name, holder);
    revision.filter(|_| mine)
}

/// Whether this node's consumer has appended everything the stream holds.
async fn caught_up(js: &jetstream::Context, status: &Status) -> bool {
    let Ok(stream) = js.get_stream_no_info(names::STREAM).await else {
        return false;
    };
    match stream.consumer_info(&names::consumer(&status.node)).await {
        Ok(info) => info.num_pending == 0 && info.num_ack_pending == 0,
        Err(_) => false,
    }
}

/// The leases bucket, created if missing (its age limit set to this
/// node's lease), once the server answers.
async fn bucket(
    js: &jetstream::Context,
    status: &Status,
    lease: Duration,
    shutdown: &CancellationToken,
) -> Option<kv::Store> {
    let mut backoff = Duration::from_millis(100);
    loop {
        match open_bucket(js, lease).await {
            Ok(kv) => return Some(kv),
            Err(why) => {
                status.error(why.clone());
                tracing::debug!("cluster: {why}");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.cancelled() => return None,
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

async fn open_bucket(js: &jetstream::Context, lease: Duration) -> Result<kv::Store, String> {
    let cfg = bucket_stream_config(lease);
    let mut stream = js
        .get_or_create_stream(cfg.clone())
        .await
        .map_err(|e| format!("cannot create or find bucket {}: {e}", names::LEASES_BUCKET))?;
    let info = stream.info().await.map_err(|e| e.to_string())?;
    if info.config.max_age != lease {
        tracing::warn!(
            "cluster: bucket {} had a lease of {} ms; now {} ms (every node should use the same)",
            names::LEASES_BUCKET,
            info.config.max_age.as_millis(),
            lease.as_millis()
        );
        js.update_stream(cfg)
            .await
            .map_err(|e| format!("cannot set the lease of {}: {e}", names::LEASES_BUCKET))?;
    }
    js.get_key_value(names::LEASES_BUCKET)
        .await
        .map_err(|e| format!("cannot open bucket {}: {e}", names::LEASES_BUCKET))
}
