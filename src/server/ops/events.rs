//! `publish`, `history`, `fetch`: writing the log and reading it backwards.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;

use super::{guard, OpResult};
use crate::broker::Broker;
use crate::proto::{Event, Fetch, History, NewEvent, Publish, WireError};
use crate::station::Registry;
use crate::store::log::{AppendError, Appended, Meta};
use crate::{clock, fields, line};

/// History answers at most this many entries.
pub const MAX_HISTORY: u64 = 1000;
/// Fetch answers at most this many messages.
pub const MAX_FETCH: u64 = 100;

pub fn check_kind(kind: &str) -> Result<(), WireError> {
    if kind.is_empty()
        || kind.len() > 32
        || !kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    {
        return Err(WireError::bad_request(format!(
            "field `kind`: {kind:?} is not a kind (lowercase letters, digits, '-', '_')"
        )));
    }
    Ok(())
}

fn bad_line(field: &str, e: line::LineError) -> WireError {
    WireError::bad_request(format!("field `{field}`: {e}"))
}

/// Validates a publish and fills what the daemon defaults (`id` and `ts`
/// are minted by the log writer).
pub fn prepare_publish(stations: &Registry, p: Publish) -> Result<Event, WireError> {
    let n: NewEvent = p.event;
    let key = match (p.idempotency_key, n.idempotency_key) {
        (Some(a), Some(b)) if a != b => {
            return Err(WireError::bad_request(
                "`idempotencyKey` and `event.idempotencyKey` differ; send one",
            ))
        }
        (a, b) => a.or(b),
    };
    super::once::check_key(key.as_deref())?;
    let line = line::line(&n.line).map_err(|e| bad_line("event.line", e))?;
    stations
        .check_line(&line)
        .map_err(|e| bad_line("event.line", e))?;
    let kind = n.kind.unwrap_or_else(|| "inbound".into());
    check_kind(&kind).map_err(|e| WireError::bad_request(format!("event.{}", e.message)))?;
    let from = n
        .from
        .map(|f| line::identity(&f).map_err(|e| bad_line("event.from", e)))
        .transpose()?
        .flatten()
        .unwrap_or_else(|| crate::proto::ANONYMOUS.to_string());
    let to =
        n.to.map(|t| line::identity(&t).map_err(|e| bad_line("event.to", e)))
            .transpose()?
            .flatten()
            .unwrap_or_else(|| line.clone());
    let station = line::station_of(&line).to_string();
    // An event on a chat line (its kind names a platform: telegram,
    // discord) that did not come from its station says so:
    // only the station may speak for a person there (the permission relay
    // of `metroctl mcp` relies on it). A client cannot set or clear it.
    let mut extra = n.extra;
    extra.shift_remove("published");
    // Only metrod sets `node`, on other cluster nodes' events (src/cluster).
    extra.shift_remove("node");
    if stations.platform(&station).is_some() {
        extra.insert("published".into(), serde_json::Value::Bool(true));
    }
    Ok(Event {
        id: String::new(),
        ts: String::new(),
        station,
        kind,
        line,
        from,
        to,
        from_name: n.from_name,
        text: n.text,
        message_id: n.message_id,
        reply_to: n.reply_to,
        emoji: n.emoji,
        attachments: n.attachments,
        buttons: n.buttons,
        payload: n.payload,
        headers: n.headers,
        hops: 0,
        idempotency_key: key,
        extra,
    })
}

pub fn append_error(e: AppendError) -> WireError {
    match e {
        AppendError::Io(why) => WireError::internal(format!("the event was not stored: {why}")),
        AppendError::ShuttingDown => WireError::unavailable("metrod is shutting down"),
    }
}

/// Appends a prepared event: what people and services say has 0 hops; an
/// agent's event is checked by the loop guard. `alone`: the request is its
/// connection's only one (see [`crate::store::log::Log::append_boxed`]).
pub async fn publish(
    broker: Arc<Broker>,
    stations: Arc<Registry>,
    event: Box<Event>,
    alone: bool,
) -> Result<Appended, WireError> {
    let event = match ready(&broker, &stations, event) {
        Ok(event) => event,
        // Past the limit: the refusal (and its notice). Boxed: the check's
        // future is large, and a publish's future is held for every
        // request in flight; most publishes never get here.
        Err(mut event) => {
            event.hops = Box::pin(guard::check(
                &broker,
                &stations,
                &event.line,
                &event.from,
                event.reply_to.as_deref(),
                1,
            ))
            .await?;
            event
        }
    };
    broker
        .log
        .append_boxed(event, alone)
        .await
        .map_err(append_error)
}

/// A prepared event that may be appended with others of its connection's
/// read ([`crate::store::log::Log::send_group`]): its hops set, within
/// the loop guard's limit. An event the guard refuses comes back, for
/// [`publish`] to refuse with its notice.
pub fn ready(
    broker: &Broker,
    stations: &Registry,
    mut event: Box<Event>,
) -> Result<Box<Event>, Box<Event>> {
    if !guard::from_people(broker, &event) {
        match guard::answer_hops(broker, stations, &event) {
            Some(hops) => event.hops = hops,
            None => return Err(event),
        }
    }
    Ok(event)
}

/// A publish's answer fields, for the paths that take an [`OpResult`] (an
/// idempotent publish); the plain path writes them straight into its frame
/// ([`crate::proto::published_frame`]).
pub fn published(a: Result<Appended, WireError>) -> OpResult {
    a.map(|a| fields! { "id" => a.id, "ts" => a.ts, "offset" => a.offset })
}

/// Filters for reading the log backwards.
#[derive(Default)]
struct Query {
    line: Option<String>,
    station: Option<String>,
    kind: Option<String>,
    from: Option<String>,
    text: Option<String>,
    since_ms: Option<i128>,
}

#[derive(serde::Deserialize)]
struct Probe<'a> {
    #[serde(borrow, default)]
    from: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    text: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    ts: Option<std::borrow::Cow<'a, str>>,
}

enum Verdict {
    Take,
    Skip,
    /// Older than `since`: nothing further back can match.
    Stop,
}

impl Query {
    fn judge(&self, json: &[u8]) -> Verdict {
        let meta = Meta::parse(json);
        if !meta.valid {
            return Verdict::Skip;
        }
        let probe: Probe = match serde_json::from_slice(json) {
            Ok(p) => p,
            Err(_) => return Verdict::Skip,
        };
        if let Some(since) = self.since_ms {
            match probe.ts.as_deref().and_then(clock::parse_ms) {
                Some(ts) if ts < since => return Verdict::Stop,
                _ => {}
            }
        }
        let ok = self.line.as_deref().is_none_or(|l| l == &*meta.line)
            && self.station.as_deref().is_none_or(|s| s == &*meta.station)
            && self.kind.as_deref().is_none_or(|k| k == &*meta.kind)
            && self
                .from
                .as_deref()
                .is_none_or(|f| probe.from.as_deref() == Some(f))
            && self.text.as_deref().is_none_or(|t| {
                probe
                    .text
                    .as_deref()
                    .is_some_and(|x| x.to_lowercase().contains(t))
            });
        if ok {
            Verdict::Take
        } else {
            Verdict::Skip
        }
    }
}

/// Most bytes of entries in one `history` or `fetch` answer (one entry is
/// always included, however large): what a client that never reads can
/// make metrod hold per connection.
pub const MAX_ANSWER_BYTES: usize = 1 << 20;
/// Largest chunk read backwards from the log at once.
const MAX_SCAN_CHUNK: usize = 1 << 20;
/// `history`/`fetch` answers being read from the log at once, daemon-wide.
const MAX_SCANS: usize = 4;
static SCANS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_SCANS);

/// The entries of an answer, and whether [`MAX_ANSWER_BYTES`] cut it short
/// of `limit`.
#[derive(Debug, Default)]
pub struct Entries {
    pub list: Vec<Bytes>,
    pub truncated: bool,
}

impl Entries {
    /// Keeps entries in order until the next one would pass
    /// [`MAX_ANSWER_BYTES`].
    pub fn capped(all: Vec<Bytes>) -> Entries {
        let mut out = Entries::default();
        let mut size = 0;
        for e in all {
            if !out.push(e, &mut size) {
                break;
            }
        }
        out
    }

    /// Adds `e` unless it would pass the answer's byte bound (then marks the
    /// answer truncated and returns false).
    fn push(&mut self, e: Bytes, size: &mut usize) -> bool {
        if !self.list.is_empty() && *size + e.len() > MAX_ANSWER_BYTES {
            self.truncated = true;
            return false;
        }
        *size += e.len() + 1;
        self.list.push(e);
        true
    }
}

/// Newest-first matching entries, reading backwards from the end in chunks,
/// so a small `limit` never reads the whole file. Each entry kept is copied
/// out of its read chunk, so an answer holds only its own bytes.
async fn scan_back(broker: &Broker, q: &Query, limit: usize) -> Result<Entries, WireError> {
    let _turn = SCANS
        .acquire()
        .await
        .map_err(|_| WireError::internal("the log scanner is closed"))?;
    let mut out = Entries::default();
    let mut size = 0;
    let mut before = broker.log.end();
    let mut chunk = 64 << 10;
    while before > 0 && out.list.len() < limit {
        let (lines, next) = broker
            .log
            .read_back(before, chunk)
            .await
            .map_err(|e| WireError::internal(format!("could not read the log: {e}")))?;
        for (_, json) in lines {
            match q.judge(&json) {
                Verdict::Take => {
                    if !out.push(Bytes::copy_from_slice(&json), &mut size) {
                        return Ok(out);
                    }
                    if out.list.len() >= limit {
                        break;
                    }
                }
                Verdict::Skip => {}
                Verdict::Stop => return Ok(out),
            }
        }
        before = next;
        chunk = (chunk * 2).min(MAX_SCAN_CHUNK);
    }
    Ok(out)
}

/// `{"req":…,"ok":true,"<key>":[<entry>,…]}\n` with every entry exactly as
/// stored in the log, and `"truncated":true` when the byte bound cut it.
pub fn entries_frame(req: Option<&Value>, key: &str, answer: &Entries) -> Vec<u8> {
    let entries = &answer.list;
    let mut out = Vec::with_capacity(80 + entries.iter().map(|e| e.len() + 1).sum::<usize>());
    out.push(b'{');
    if let Some(req) = req {
        out.extend_from_slice(b"\"req\":");
        out.extend_from_slice(&serde_json::to_vec(req).unwrap_or_else(|_| b"null".to_vec()));
        out.push(b',');
    }
    out.extend_from_slice(b"\"ok\":true,");
    if answer.truncated {
        out.extend_from_slice(b"\"truncated\":true,");
    }
    out.extend_from_slice(&serde_json::to_vec(key).unwrap_or_default());
    out.extend_from_slice(b":[");
    for (i, e) in entries.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(e);
    }
    out.extend_from_slice(b"]}\n");
    out
}

fn opt_line(field: &str, v: Option<String>) -> Result<Option<String>, WireError> {
    // Filters accept any well-formed URI: a log may hold lines older
    // versions wrote in other shapes, and they must stay searchable.
    v.map(|l| line::uri(&l).map_err(|e| bad_line(field, e)))
        .transpose()
}

pub async fn history(broker: Arc<Broker>, h: History) -> Result<Entries, WireError> {
    let limit = h.limit.unwrap_or(50);
    if limit == 0 || limit > MAX_HISTORY {
        return Err(WireError::bad_request(format!(
            "field `limit` must be between 1 and {MAX_HISTORY}"
        )));
    }
    let since_ms = match &h.since {
        Some(s) => Some(clock::parse_ms(s).ok_or_else(|| {
            WireError::bad_request(format!(
                "field `since`: {s:?} is not an RFC 3339 time (e.g. 2026-11-28T03:00:00Z)"
            ))
        })?),
        None => None,
    };
    if let Some(k) = &h.kind {
        check_kind(k)?;
    }
    let q = Query {
        line: opt_line("line", h.line)?,
        station: h.station,
        kind: h.kind,
        from: h
            .from
            .map(|f| line::uri(&f).map_err(|e| bad_line("from", e)))
            .transpose()?,
        text: h.text.map(|t| t.to_lowercase()),
        since_ms,
    };
    scan_back(&broker, &q, limit as usize).await
}

pub async fn fetch(
    broker: Arc<Broker>,
    stations: Arc<Registry>,
    f: Fetch,
) -> Result<Entries, WireError> {
    let line = line::uri(&f.line).map_err(|e| bad_line("line", e))?;
    let limit = f.limit.unwrap_or(20);
    if limit == 0 || limit > MAX_FETCH {
        return Err(WireError::bad_request(format!(
            "field `limit` must be between 1 and {MAX_FETCH}"
        )));
    }
    // A station that keeps the history (Discord) is asked: metro's log
    // only has what arrived while metrod ran.
    if let Some(fetched) = stations.fetch(&line, limit).await {
        return fetched.map(Entries::capped);
    }
    let q = Query {
        line: Some(line),
        ..Query::default()
    };
    let mut entries = scan_back(&broker, &q, limit as usize).await?;
    entries.list.reverse();
    Ok(entries)
}
