//! Clusters (issue 18, docs/cluster.md): metrod nodes on several machines
//! share one stream of events and one claims map through a NATS JetStream
//! server. With no `[cluster]` in the config and no `--cluster`, nothing
//! here runs.
//!
//! - [`config`]: the `[cluster]` table and the client's connect options.
//! - [`names`]: subjects, consumer and bucket names, KV keys.
//! - [`publish`]: this node's own events into the stream, from a durable
//!   "published up to" mark.
//! - [`consume`]: the other nodes' events into this node's log.
//! - [`keys`]: platform keys, so a platform update is in each log once.
//! - [`claims`]: the claims map as a KV bucket.
//! - [`lease`]: one node at a time runs each chat station (one poller per
//!   bot), through leases in a KV bucket.
//! - [`rpc`]: outbound ops on a station another node runs travel there.
//! - [`status`]: what `stats` shows.
//!
//! [`join`] connects (retrying forever in the background: the node works
//! locally meanwhile), creates the stream and the bucket if missing, then
//! starts the publisher, the consumer, the claims watch and the status
//! refresh. [`Cluster::lead`] then puts the leases in charge of the
//! registry's one-node stations and answers other nodes' outbound ops.

pub mod claims;
pub mod consume;
pub mod keys;
pub mod lease;
pub mod names;
pub mod publish;
pub mod rpc;
pub mod status;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::broker::Broker;
pub use crate::config::cluster::ClusterConfig;
use crate::station::{Registry, StationKind};
use status::Status;

/// How long the stream keeps events: a node away longer misses the older
/// ones.
pub const STREAM_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);
/// Within this window the stream drops a repeated `Nats-Msg-Id`.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(10 * 60);
/// Largest event accepted by the stream (the protocol's request limit is
/// lower).
pub const MAX_EVENT: i32 = 8 << 20;

/// A node's membership: its status and the tasks that do the work.
pub struct Cluster {
    pub status: Arc<Status>,
    shutdown: CancellationToken,
    task: tokio::sync::Mutex<Option<JoinHandle<()>>>,
    client: async_nats::Client,
    lease: Duration,
    /// The lease holders and the answering of other nodes' ops.
    leading: std::sync::Mutex<Vec<JoinHandle<()>>>,
    /// The registry, once [`Cluster::lead`] has it: the consumer claims a
    /// platform key in the running station's recent keys.
    registry: Arc<OnceLock<Weak<Registry>>>,
}

impl crate::broker::ClusterView for Cluster {
    /// `stats.cluster`.
    fn stats(&self, log_end: u64) -> serde_json::Value {
        self.status.json(log_end)
    }
}

impl Cluster {
    /// Puts this node's leases in charge of `registry`'s stations that run
    /// on one node at a time (before they start: they then start only
    /// where the lease is held) and answers the outbound ops other nodes
    /// send for the stations running here.
    pub fn lead(&self, registry: &Arc<Registry>) {
        let leases = Arc::new(lease::Leases::new(
            self.status.clone(),
            self.client.clone(),
            self.lease,
        ));
        registry.set_gate(leases.clone());
        let _ = self.registry.set(Arc::downgrade(registry));
        let js = jetstream::new(self.client.clone());
        let mut tasks: Vec<JoinHandle<()>> = registry
            .one_node()
            .into_iter()
            .map(|name| {
                tokio::spawn(lease::hold(
                    leases.clone(),
                    registry.clone(),
                    js.clone(),
                    name,
                    self.shutdown.clone(),
                ))
            })
            .collect();
        tasks.push(tokio::spawn(rpc::serve(
            self.client.clone(),
            self.status.node.clone(),
            registry.clone(),
            self.shutdown.clone(),
        )));
        if let Ok(mut l) = self.leading.lock() {
            l.extend(tasks);
        }
    }

    /// Stops the tasks: the publisher writes its mark, the consumer stops
    /// between two events. Call before the log shuts down.
    pub async fn stop(&self) {
        self.shutdown.cancel();
        let leading: Vec<_> = self
            .leading
            .lock()
            .map(|mut l| l.drain(..).collect())
            .unwrap_or_default();
        for t in leading {
            // A held lease is given up (deleted) so another node takes
            // the station over at once.
            if tokio::time::timeout(Duration::from_secs(5), t)
                .await
                .is_err()
            {
                tracing::warn!("cluster: a lease task did not stop within 5 s");
            }
        }
        if let Some(t) = self.task.lock().await.take() {
            if tokio::time::timeout(Duration::from_secs(5), t)
                .await
                .is_err()
            {
                tracing::warn!("cluster: tasks did not stop within 5 s");
            }
        }
    }
}

/// The stream's settings.
pub fn stream_config() -> stream::Config {
    stream::Config {
        name: names::STREAM.into(),
        description: Some("metro: every node's own events, metro.events.<node>".into()),
        subjects: vec![format!("{}>", names::SUBJECT_PREFIX)],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        max_age: STREAM_MAX_AGE,
        duplicate_window: DUPLICATE_WINDOW,
        max_message_size: MAX_EVENT,
        ..Default::default()
    }
}

/// Joins the cluster `cfg` names (checked by the caller; `kinds` are the
/// registered station kinds, which read platform keys): connects in the
/// background and shares `broker`'s claims. Errors only for settings that
/// cannot work (a credentials file that cannot be read).
pub async fn join(
    broker: &Arc<Broker>,
    cfg: &ClusterConfig,
    kinds: Vec<Arc<dyn StationKind>>,
) -> Result<Arc<Cluster>, String> {
    cfg.check()?;
    let url = cfg.url.clone().unwrap_or_default();
    let node = cfg.node_name();
    let status = Arc::new(Status::new(node.clone(), status::shown_url(&url)));
    let log_end = broker.log.end();
    let mark = publish::read_mark(&broker.state_dir, log_end)
        .map_err(|e| format!("cannot read or write {}: {e}", publish::MARK_FILE))?;
    let (seen, known) = {
        let b = broker.clone();
        tokio::task::spawn_blocking(move || {
            (
                consume::Seen::seed(&b),
                keys::Known::seed(&b.log, consume::SEED_BYTES, kinds),
            )
        })
        .await
        .map_err(|e| e.to_string())?
    };
    let registry = Arc::new(OnceLock::new());
    let options = cfg.connect_options().await?;
    let client = options
        .connect(url.as_str())
        .await
        .map_err(|e| format!("[cluster] url: {e}"))?;
    let _ = status.client.set(client.clone());
    let lease = cfg.lease_time()?;
    let shared = claims::SharedMap::new(status.clone(), broker.platforms.clone());
    broker.claims.share(shared.clone());
    let shutdown = CancellationToken::new();
    let js = jetstream::new(client.clone());
    let task = tokio::spawn(run(
        broker.clone(),
        js,
        status.clone(),
        shared,
        mark,
        consume::Replicas {
            seen,
            known,
            registry: registry.clone(),
        },
        shutdown.clone(),
    ));
    tracing::info!(
        "cluster: node {node} joining through {} (published up to offset {mark})",
        status.url
    );
    Ok(Arc::new(Cluster {
        status,
        shutdown,
        task: tokio::sync::Mutex::new(Some(task)),
        client,
        lease,
        leading: std::sync::Mutex::new(Vec::new()),
        registry,
    }))
}

async fn run(
    broker: Arc<Broker>,
    js: jetstream::Context,
    status: Arc<Status>,
    shared: Arc<claims::SharedMap>,
    mark: u64,
    replicas: consume::Replicas,
    shutdown: CancellationToken,
) {
    // The stream and the bucket, created if missing, once the server
    // answers.
    let mut backoff = Duration::from_millis(100);
    let kv = loop {
        match setup(&js).await {
            Ok(kv) => break kv,
            Err(why) => {
                status.error(why.clone());
                tracing::debug!("cluster: setup: {why}");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.cancelled() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    };
    status.ready.store(true, Relaxed);
    tracing::info!(
        "cluster: stream {} and bucket {} ready",
        names::STREAM,
        names::CLAIMS_BUCKET
    );
    let tasks = [
        tokio::spawn(publish::run(
            broker.clone(),
            js.clone(),
            status.clone(),
            mark,
            shutdown.clone(),
        )),
        tokio::spawn(consume::run(
            broker.clone(),
            js.clone(),
            status.clone(),
            replicas,
            shutdown.clone(),
        )),
        tokio::spawn(claims::run(
            Arc::downgrade(&broker),
            shared,
            kv,
            status.clone(),
            shutdown.clone(),
        )),
        tokio::spawn(refresh(js, status, shutdown)),
    ];
    drop(broker);
    for t in tasks {
        let _ = t.await;
    }
}

async fn setup(js: &jetstream::Context) -> Result<async_nats::jetstream::kv::Store, String> {
    js.get_or_create_stream(stream_config())
        .await
        .map_err(|e| format!("cannot create or find stream {}: {e}", names::STREAM))?;
    js.get_or_create_stream(claims::bucket_stream_config())
        .await
        .map_err(|e| format!("cannot create or find bucket {}: {e}", names::CLAIMS_BUCKET))?;
    js.get_key_value(names::CLAIMS_BUCKET)
        .await
        .map_err(|e| format!("cannot open bucket {}: {e}", names::CLAIMS_BUCKET))
}

/// Refreshes the consumer's lag every 2 s.
async fn refresh(js: jetstream::Context, status: Arc<Status>, shutdown: CancellationToken) {
    let name = names::consumer(&status.node);
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        if !status.connected() {
            continue;
        }
        let Ok(stream) = js.get_stream_no_info(names::STREAM).await else {
            continue;
        };
        if let Ok(info) = stream.consumer_info(&name).await {
            status.pending.store(info.num_pending, Relaxed);
            status
                .ack_pending
                .store(info.num_ack_pending as u64, Relaxed);
        }
    }
}
