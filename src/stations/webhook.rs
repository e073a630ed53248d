//! The webhook station: services that POST (GitHub, Intercom, any HTTP
//! sender) become `inbound` events on `metro://webhook/<id>` lines.
//!
//! - [`Webhooks`] owns the endpoints: `webhooks.json` in the state dir
//!   (`0600`, replaced atomically; it holds the secrets), read once at
//!   startup and served from an immutable snapshot. Changes (`webhookAdd`,
//!   `webhookRemove`) are serialized and answered once the file is written.
//! - Each delivery goes through the shared inbound pipeline
//!   ([`crate::station::ingest`]); its core ([`StationCore`]) remembers the
//!   newest [`RECENT_DELIVERIES`] delivery ids of all endpoints (seeded at
//!   startup from the end of the log only), so a sender's retry of a
//!   delivery that is already stored gets 202 without a second event.
//! - [`http`] is the listener: axum on `--webhook-addr` (`127.0.0.1:8787`),
//!   one route, `POST /hooks/<id>`; [`verify`] checks signatures.

pub mod http;
pub mod kind;
pub mod verify;

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::proto::WireError;
use crate::station::core::StationCore;
use crate::station::ingest::Inlet;
use crate::store::log::Log;

/// Where the listener binds unless told otherwise.
pub use crate::config::DEFAULT_WEBHOOK_ADDR as DEFAULT_ADDR;
/// Largest request body accepted, unless `--webhook-max-body` says otherwise.
pub const DEFAULT_MAX_BODY: usize = 1 << 20;
/// The endpoints file in the state dir.
pub const FILE: &str = "webhooks.json";
/// Delivery ids remembered, all endpoints together. A key is the endpoint
/// id, `/` and the delivery id (at most 227 bytes, held twice, with its
/// event id): at most about 4 MB.
pub const RECENT_DELIVERIES: usize = 8192;
/// Bytes at the end of the log read at startup for recent delivery ids.
const SEED_BYTES: usize = 4 << 20;
/// Longest label and secret accepted.
const MAX_LABEL: usize = 200;
const MAX_SECRET: usize = 1024;

/// `--webhook-addr`: a socket address, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenAddr {
    Off,
    At(SocketAddr),
}

impl FromStr for ListenAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.eq_ignore_ascii_case("off") {
            return Ok(ListenAddr::Off);
        }
        s.parse().map(ListenAddr::At).map_err(|_| {
            format!("{s:?} is not an address: expected ip:port (such as {DEFAULT_ADDR}) or off")
        })
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Off => write!(f, "off"),
            ListenAddr::At(a) => write!(f, "{a}"),
        }
    }
}

/// How the daemon runs the station.
#[derive(Debug, Clone)]
pub struct Config {
    pub addr: ListenAddr,
    pub max_body: usize,
    /// fsync `webhooks.json` when it is replaced.
    pub fsync: bool,
}

/// One endpoint as stored in `webhooks.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    pub id: String,
    pub label: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    pub created_at: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct StoredFile {
    endpoints: Vec<Endpoint>,
}

/// The listener's state, for `stations` and the URLs in answers.
#[derive(Debug, Clone)]
enum Listen {
    Off,
    Up(SocketAddr),
    Down { addr: SocketAddr, why: String },
}

/// The endpoints and the listener state of the webhook station.
pub struct Webhooks {
    path: PathBuf,
    fsync: bool,
    pub max_body: usize,
    listen: Listen,
    endpoints: ArcSwap<BTreeMap<String, Endpoint>>,
    /// Serializes changes to the endpoints (read, change, write, publish).
    change: tokio::sync::Mutex<()>,
    /// Its log, counters and recent delivery ids.
    log: Arc<Log>,
    core: StationCore,
}

impl Webhooks {
    /// Loads `webhooks.json` (missing → no endpoints; invalid → error),
    /// seeds recent delivery ids from the end of `log`, and binds the
    /// listener. A listener that cannot bind is reported (log, `stations`)
    /// but does not stop the daemon: the socket protocol works without it.
    pub fn open(
        state_dir: &Path,
        log: &Arc<Log>,
        cfg: &Config,
    ) -> io::Result<(Webhooks, Option<std::net::TcpListener>)> {
        let path = state_dir.join(FILE);
        let endpoints = load(&path)?;
        let core = StationCore::new("webhook", "", "ok", RECENT_DELIVERIES);
        seed_recent(log, &endpoints, &core)?;
        let (listen, listener) = match cfg.addr {
            ListenAddr::Off => (Listen::Off, None),
            ListenAddr::At(addr) => match bind(addr) {
                Ok(l) => {
                    let local = l.local_addr().unwrap_or(addr);
                    (Listen::Up(local), Some(l))
                }
                Err(e) => {
                    let why = format!("cannot listen on {addr}: {e}");
                    tracing::error!("webhook station down: {why}");
                    (Listen::Down { addr, why }, None)
                }
            },
        };
        Ok((
            Webhooks {
                path,
                fsync: cfg.fsync,
                max_body: cfg.max_body,
                listen,
                endpoints: ArcSwap::from_pointee(endpoints),
                change: tokio::sync::Mutex::new(()),
                log: log.clone(),
                core,
            },
            listener,
        ))
    }

    /// The address the listener is bound to, when it runs.
    pub fn listening(&self) -> Option<SocketAddr> {
        match self.listen {
            Listen::Up(a) => Some(a),
            _ => None,
        }
    }

    /// The endpoint with this id.
    pub fn get(&self, id: &str) -> Option<Endpoint> {
        self.endpoints.load().get(id).cloned()
    }

    fn url(&self, id: &str) -> Option<String> {
        self.listening()
            .map(|a| format!("http://{a}{}", endpoint_path(id)))
    }

    /// The `webhook` row of the `stations` answer.
    pub fn station_row(&self) -> Value {
        let endpoints = self.endpoints.load().len();
        let caps = json!(["inbound"]);
        match &self.listen {
            Listen::Up(a) => json!({
                "name": "webhook",
                "enabled": true,
                "status": "ok",
                "capabilities": caps,
                "listen": a.to_string(),
                "url": format!("http://{a}"),
                "endpoints": endpoints,
            }),
            Listen::Off => json!({
                "name": "webhook",
                "enabled": false,
                "status": "off: the HTTP listener is disabled (--webhook-addr off)",
                "capabilities": [],
                "listen": null,
                "url": null,
                "endpoints": endpoints,
            }),
            Listen::Down { addr, why } => json!({
                "name": "webhook",
                "enabled": true,
                "status": format!("down: {why}"),
                "capabilities": [],
                "listen": addr.to_string(),
                "url": null,
                "endpoints": endpoints,
            }),
        }
    }

    /// `webhookAdd`: a new endpoint with a random id, stored before the
    /// answer.
    pub async fn add(
        &self,
        label: &str,
        secret: Option<&str>,
    ) -> Result<Map<String, Value>, WireError> {
        check_label(label)?;
        if let Some(s) = secret {
            check_secret(s)?;
        }
        let _guard = self.change.lock().await;
        let mut next = (**self.endpoints.load()).clone();
        let id = loop {
            let id = new_id()?;
            if !next.contains_key(&id) {
                break id;
            }
        };
        let ep = Endpoint {
            id: id.clone(),
            label: label.to_string(),
            secret: secret.map(str::to_string),
            created_at: crate::clock::now(),
        };
        next.insert(id.clone(), ep);
        self.store(next, "the endpoint was not added").await?;
        Ok(crate::fields! {
            "id" => id,
            "path" => endpoint_path(&id),
            "url" => self.url(&id),
            "label" => label,
        })
    }

    /// `webhookList`: every endpoint, oldest first, never the secret.
    pub fn list(&self) -> Value {
        let snap = self.endpoints.load();
        let mut eps: Vec<&Endpoint> = snap.values().collect();
        eps.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        let rows: Vec<Value> = eps
            .into_iter()
            .map(|e| {
                json!({
                    "id": e.id,
                    "label": e.label,
                    "path": endpoint_path(&e.id),
                    "url": self.url(&e.id),
                    "hasSecret": e.secret.is_some(),
                    "createdAt": e.created_at,
                })
            })
            .collect();
        Value::Array(rows)
    }

    /// `webhookRemove`: false when there was no such endpoint.
    pub async fn remove(&self, id: &str) -> Result<bool, WireError> {
        let _guard = self.change.lock().await;
        let mut next = (**self.endpoints.load()).clone();
        if next.remove(id).is_none() {
            return Ok(false);
        }
        // Its remembered delivery ids age out with the bound: endpoint
        // ids are random and never come back.
        self.store(next, "the endpoint was not removed").await?;
        Ok(true)
    }

    /// Writes `next` to `webhooks.json`, then makes it current.
    async fn store(
        &self,
        next: BTreeMap<String, Endpoint>,
        not_done: &str,
    ) -> Result<(), WireError> {
        let file = StoredFile {
            endpoints: next.values().cloned().collect(),
        };
        crate::store::persist_json(&self.path, &file, self.fsync, not_done).await?;
        self.endpoints.store(Arc::new(next));
        Ok(())
    }

    /// The `webhook` entry of `stats.stations`.
    pub fn stats(&self) -> Value {
        let c = self.core.counters.json();
        json!({
            "received": c.get("received"),
            "duplicates": c.get("duplicates"),
        })
    }
}

impl Inlet for Webhooks {
    type Platform = ();

    fn core(&self) -> &StationCore {
        &self.core
    }

    fn log(&self) -> &Log {
        &self.log
    }
}

/// The dedupe key of `delivery` on `endpoint`.
pub fn delivery_key(endpoint: &str, delivery: &str) -> String {
    format!("{endpoint}/{delivery}")
}

/// `/hooks/<id>`
pub fn endpoint_path(id: &str) -> String {
    format!("/hooks/{id}")
}

/// A listener bound now, so a busy port is known at startup.
fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let l = std::net::TcpListener::bind(addr)?;
    l.set_nonblocking(true)?;
    Ok(l)
}

fn load(path: &Path) -> io::Result<BTreeMap<String, Endpoint>> {
    let text = match crate::store::read_state(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("cannot read {}: {e}", path.display()),
            ))
        }
    };
    let file: StoredFile = serde_json::from_slice(&text).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} is not a webhook endpoints file ({e}); fix it or move it away",
                path.display()
            ),
        )
    })?;
    // It holds secrets: keep it to ourselves even if someone loosened it.
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                "{} was readable by others; setting it to 0600",
                path.display()
            );
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    Ok(file
        .endpoints
        .into_iter()
        .map(|e| (e.id.clone(), e))
        .collect())
}

/// Remembers the delivery ids of the webhook events in the last
/// [`SEED_BYTES`] of the log, for the endpoints that exist. Never reads
/// more of the log.
fn seed_recent(
    log: &Log,
    endpoints: &BTreeMap<String, Endpoint>,
    core: &StationCore,
) -> io::Result<()> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Seed {
        #[serde(default)]
        id: String,
        #[serde(default)]
        station: String,
        #[serde(default)]
        line: String,
        #[serde(default)]
        message_id: Option<String>,
    }
    if endpoints.is_empty() {
        return Ok(());
    }
    // Oldest first, so the bound keeps the newest.
    core.seed(log, SEED_BYTES as u64, |json| {
        let s = serde_json::from_slice::<Seed>(json).ok()?;
        let delivery = s.message_id.filter(|_| s.station == "webhook")?;
        let ep = s.line.strip_prefix("metro://webhook/")?;
        endpoints
            .contains_key(ep)
            .then(|| (delivery_key(ep, &delivery), s.id.clone()))
    })
}

fn check_label(label: &str) -> Result<(), WireError> {
    if label.trim().is_empty() {
        return Err(WireError::bad_request("field `label` is empty"));
    }
    if label.len() > MAX_LABEL || label.chars().any(char::is_control) {
        return Err(WireError::bad_request(format!(
            "field `label`: at most {MAX_LABEL} bytes, no control characters"
        )));
    }
    Ok(())
}

fn check_secret(secret: &str) -> Result<(), WireError> {
    if secret.is_empty() {
        return Err(WireError::bad_request(
            "field `secret` is empty; leave it out for an endpoint without verification",
        ));
    }
    if secret.len() > MAX_SECRET || secret.chars().any(char::is_control) {
        return Err(WireError::bad_request(format!(
            "field `secret`: at most {MAX_SECRET} bytes, no control characters"
        )));
    }
    Ok(())
}

/// 128 random bits, base32 (lowercase, no padding): 26 characters.
fn new_id() -> Result<String, WireError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)
        .map_err(|e| WireError::internal(format!("no randomness for an endpoint id: {e}")))?;
    Ok(base32(&bytes))
}

fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((acc >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (5 - bits)) & 31) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base32_matches_rfc_4648() {
        assert_eq!(base32(b"foobar"), "mzxw6ytboi");
        assert_eq!(base32(b"f"), "my");
        let id = new_id().unwrap();
        assert_eq!(id.len(), 26);
        let line = crate::line::line(&format!("webhook/{id}")).unwrap();
        assert!(kind::check_line(&line).is_ok());
        assert_ne!(id, new_id().unwrap());
    }

    #[test]
    fn listen_addr_parses() {
        assert_eq!("off".parse::<ListenAddr>(), Ok(ListenAddr::Off));
        assert_eq!(
            "127.0.0.1:0".parse::<ListenAddr>().unwrap().to_string(),
            "127.0.0.1:0"
        );
        assert!("localhost".parse::<ListenAddr>().is_err());
    }
}
