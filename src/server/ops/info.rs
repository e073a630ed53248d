//! `hello`, `lines`, `stations`, `stats`.

use serde_json::{json, Value};

use super::OpResult;
use crate::broker::Broker;
use crate::fields;
use crate::proto::{Hello, OPS, PROTOCOL_VERSION};
use crate::station::Registry;

pub fn hello(broker: &Broker, conn: u64, h: Hello) -> OpResult {
    if let Some(client) = &h.client {
        tracing::debug!(conn, client = %client, "hello");
    }
    Ok(fields! {
        "protocol" => PROTOCOL_VERSION,
        "server" => "metrod",
        "version" => env!("CARGO_PKG_VERSION"),
        "ops" => OPS,
        "conn" => conn,
        "stateDir" => broker.state_dir.display().to_string(),
    })
}

pub fn lines(broker: &Broker) -> OpResult {
    let claims = broker.claims.snapshot();
    let list = match broker.lines.lock() {
        Ok(idx) => idx.list(),
        Err(_) => Vec::new(),
    };
    let rows: Vec<Value> = list
        .into_iter()
        .map(|(line, info)| {
            json!({
                "owner": claims.owner(&line),
                "line": line,
                "station": info.station,
                "name": info.name,
                "lastTs": info.last_ts,
                "lastKind": info.last_kind,
                "events": info.events,
            })
        })
        .collect();
    Ok(fields! { "lines" => rows })
}

pub fn stations(stations: &Registry) -> OpResult {
    Ok(fields! { "stations" => stations.rows() })
}

pub fn stats(broker: &Broker, stations: &Registry) -> OpResult {
    let end = broker.log.end();
    let subs: Vec<Value> = broker
        .subscriptions()
        .into_iter()
        .map(|st| {
            let s = st.snapshot();
            json!({
                "conn": st.conn,
                "sub": st.id,
                "as": st.filter.as_,
                "mode": st.filter.mode.as_str(),
                "ack": st.ack.as_str(),
                "follow": st.follow,
                "cursorName": st.cursor_name,
                "offset": s.pos,
                "cursor": s.cursor,
                "lag": end.saturating_sub(s.cursor),
                "delivered": s.delivered,
                "unacked": s.unacked,
                "oldestUnackedMs": s.oldest_unacked_ms,
                "finished": s.finished,
            })
        })
        .collect();
    let cursors: Vec<Value> = broker
        .cursors
        .all()
        .into_iter()
        .map(|(file, offset)| {
            json!({
                "name": crate::store::cursors::unslug(&file),
                "file": format!("cursors/{file}"),
                "offset": offset,
                "lag": end.saturating_sub(offset),
            })
        })
        .collect();
    let (segments, disk_bytes) = broker.log.disk_usage();
    Ok(fields! {
        "logBytes" => end,
        "oldestOffset" => broker.log.oldest(),
        "segments" => segments,
        "diskBytes" => disk_bytes,
        "uptimeMs" => broker.uptime().as_millis() as u64,
        "connections" => broker.connections.load(std::sync::atomic::Ordering::Relaxed),
        "fsync" => broker.opts.log.fsync.to_string(),
        "claims" => broker.claims.snapshot().len(),
        "subscriptions" => subs,
        "cursors" => cursors,
        "config" => broker.config.summary(),
        "stations" => stations.stats(),
        "claimsFile" => broker.claims.file_summary(),
        "foreignWriter" => foreign_writer(broker),
        "cluster" => broker.cluster.get().map(|c| c.stats(end)),
    })
}

/// What another process appending to `history.jsonl` did.
fn foreign_writer(broker: &Broker) -> Value {
    let (adopted, ended) = broker.log.foreign_stats();
    json!({"adoptedLines": adopted, "endedTails": ended})
}
