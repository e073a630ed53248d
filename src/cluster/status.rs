//! What `stats` says about the cluster: the connection in words, nodes
//! seen, the unpublished backlog, the consumer's lag, the last error.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, OnceLock};

use serde_json::{json, Value};

/// Most node names remembered (a misbehaving publisher could invent many).
const MAX_NODES: usize = 256;

#[derive(Default)]
pub struct Status {
    pub node: String,
    /// The server URL(s) without credentials.
    pub url: String,
    pub client: OnceLock<async_nats::Client>,
    /// The stream and buckets exist (created or found).
    pub ready: AtomicBool,
    /// Log offset up to which this node's own events are in the stream.
    pub published_to: AtomicU64,
    /// Own events the stream acknowledged since startup.
    pub published: AtomicU64,
    /// Other nodes' events appended to the local log since startup.
    pub received: AtomicU64,
    /// Deliveries skipped: the log already had their id, or their platform
    /// update under another id.
    pub duplicates: AtomicU64,
    /// Own events larger than the server's `max_payload`: not published.
    pub too_large: AtomicU64,
    /// The consumer's lag: messages not yet delivered, and delivered but
    /// not acknowledged (refreshed every few seconds).
    pub pending: AtomicU64,
    pub ack_pending: AtomicU64,
    /// Node name → when its last event arrived.
    nodes: Mutex<BTreeMap<String, String>>,
    /// Station → the node that holds its lease (this one included).
    stations: Mutex<BTreeMap<String, String>>,
    last_error: Mutex<Option<(String, String)>>,
}

impl Status {
    pub fn new(node: String, url: String) -> Status {
        Status {
            node,
            url,
            ..Status::default()
        }
    }

    pub fn saw_node(&self, node: &str) {
        if let Ok(mut n) = self.nodes.lock() {
            if n.len() < MAX_NODES || n.contains_key(node) {
                n.insert(node.to_string(), crate::clock::now());
            }
        }
    }

    /// Who holds `station`'s lease now (`None`: nobody, or not known).
    pub fn set_station(&self, station: &str, node: Option<String>) {
        if let Ok(mut s) = self.stations.lock() {
            match node {
                Some(n) => {
                    s.insert(station.to_string(), n);
                }
                None => {
                    s.remove(station);
                }
            }
        }
    }

    /// The node that holds `station`'s lease, as last seen.
    pub fn station(&self, station: &str) -> Option<String> {
        self.stations.lock().ok()?.get(station).cloned()
    }

    /// Remembers a failure (logged by the caller); the newest one is shown.
    pub fn error(&self, what: impl Into<String>) {
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some((what.into(), crate::clock::now()));
        }
    }

    /// The connection to the NATS server in words.
    pub fn connection(&self) -> &'static str {
        match self.client.get().map(|c| c.connection_state()) {
            None => "starting",
            Some(async_nats::connection::State::Connected) => "connected",
            Some(async_nats::connection::State::Pending) => {
                "connecting (the server has not answered yet)"
            }
            Some(async_nats::connection::State::Disconnected) => {
                "disconnected (reconnecting; events wait in the local log)"
            }
        }
    }

    pub fn connected(&self) -> bool {
        matches!(
            self.client.get().map(|c| c.connection_state()),
            Some(async_nats::connection::State::Connected)
        )
    }

    /// `stats.cluster`.
    pub fn json(&self, log_end: u64) -> Value {
        let nodes = self.nodes.lock().map(|n| n.clone()).unwrap_or_default();
        let err = self.last_error.lock().ok().and_then(|e| e.clone());
        let stations = self.stations.lock().map(|s| s.clone()).unwrap_or_default();
        let published_to = self.published_to.load(Relaxed);
        json!({
            "node": self.node,
            "url": self.url,
            "connection": self.connection(),
            "ready": self.ready.load(Relaxed),
            "nodesSeen": nodes,
            "stations": stations,
            "unpublishedBytes": log_end.saturating_sub(published_to),
            "publishedTo": published_to,
            "published": self.published.load(Relaxed),
            "received": self.received.load(Relaxed),
            "duplicates": self.duplicates.load(Relaxed),
            "tooLarge": self.too_large.load(Relaxed),
            "consumerPending": self.pending.load(Relaxed),
            "consumerAckPending": self.ack_pending.load(Relaxed),
            "lastError": err.as_ref().map(|e| &e.0),
            "lastErrorAt": err.as_ref().map(|e| &e.1),
        })
    }
}

pub use crate::config::cluster::shown_url;

#[cfg(test)]
mod tests {
    #[test]
    fn urls_lose_their_credentials() {
        assert_eq!(
            super::shown_url("nats://u:secret@h:4222, tls://t0k@h2:4222"),
            "nats://h:4222,tls://h2:4222"
        );
        assert_eq!(super::shown_url("h:4222"), "h:4222");
    }
}
