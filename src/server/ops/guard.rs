//! The loop guard: the `hops` of what an agent writes, and the refusal of
//! an automatic answer past `--max-hops`.
//!
//! An agent's `publish`, `send` or `react` is one hop further than the
//! event it answers: the one its `replyTo` names (`react`: its
//! `messageId`), as a metro id or as a platform message id that the chat
//! station's id map knows. An `edit` revises a message rather than answers
//! it: it has the hops of the message it edits, so it is never refused.
//! Naming nothing: 0 hops. Events of people and services (the stations
//! of `Broker::platforms`: chat, webhook and any registered kind but
//! `local`, and `inbound` events published on their lines) have 0 hops, and so has an event the hop index does not
//! hold (it keeps only automatic answers, [`crate::store::hops`]): an
//! answer to it is hop 1.
//!
//! A request past the limit answers `loop`, and one `system` event on its
//! line says who was stopped. That notice carries the refused hop count, so
//! answering it is refused too, silently: one notice per agent, line and
//! answered event, however often the agent tries again.

use serde_json::json;

use super::events::append_error;
use crate::broker::Broker;
use crate::line;
use crate::proto::{ErrorCode, Event, WireError};
use crate::station::Registry;

/// The metro id of `named` on `line`: itself when it is one (`msg_…`), else
/// the event of that platform message, from the line's station.
fn metro_id(stations: &Registry, line: &str, named: &str) -> Option<String> {
    if named.starts_with("msg_") {
        return Some(named.to_string());
    }
    stations.route(line).ok()?.metro_id(line, named)
}

/// The hops of the event `named` (a `replyTo` or `messageId`) on `line`:
/// 0 when absent or not known.
pub fn named_hops(broker: &Broker, stations: &Registry, line: &str, named: Option<&str>) -> u32 {
    let Some(named) = named.map(str::trim).filter(|n| !n.is_empty()) else {
        return 0;
    };
    let Some(id) = metro_id(stations, line, named) else {
        return 0;
    };
    broker.hops.lock().map(|h| h.get(&id)).unwrap_or(0)
}

/// The hops of an event on `line` about the event `named`: `step` more
/// than it, 0 when it names nothing.
fn hops_of(
    broker: &Broker,
    stations: &Registry,
    line: &str,
    named: Option<&str>,
    step: u32,
) -> u32 {
    match named.map(str::trim).filter(|n| !n.is_empty()) {
        None => 0,
        Some(_) => named_hops(broker, stations, line, named).saturating_add(step),
    }
}

/// The hops an agent's answer `ev` gets, when they are within
/// `--max-hops`; `None` when [`check`] would refuse it (only that path
/// writes the notice and words the `loop` answer). Waits for nothing.
pub fn answer_hops(broker: &Broker, stations: &Registry, ev: &Event) -> Option<u32> {
    let hops = hops_of(broker, stations, &ev.line, ev.reply_to.as_deref(), 1);
    (hops <= broker.opts.max_hops).then_some(hops)
}

/// True for what a person or a service says: an `inbound` event on a
/// station's line (chat, webhook, any registered kind but `local`).
pub fn from_people(broker: &Broker, ev: &Event) -> bool {
    ev.kind == "inbound" && broker.platforms.is_platform(&ev.station)
}

/// The hops of `who`'s event on `line` about the event `named`: `step`
/// (1 for an answer, 0 for an edit) more than it. Past `--max-hops`: the
/// `loop` answer (after the notice on the line).
pub async fn check(
    broker: &Broker,
    stations: &Registry,
    line: &str,
    who: &str,
    named: Option<&str>,
    step: u32,
) -> Result<u32, WireError> {
    let named = named.map(str::trim).filter(|n| !n.is_empty());
    let hops = hops_of(broker, stations, line, named, step);
    let max = broker.opts.max_hops;
    if hops <= max {
        return Ok(hops);
    }
    let why = format!(
        "{who} was stopped by the loop guard: this answer would be hop {hops} of an exchange \
         between agents, and metrod allows {max} (--max-hops); a person's message on the line \
         starts a new count"
    );
    // Only at the limit itself: an answer to a notice (or to anything past
    // the limit) is refused without another notice.
    if hops == max.saturating_add(1) && first_notice(broker, who, line, named) {
        let mut ev = Event {
            station: line::station_of(line).to_string(),
            kind: "system".into(),
            line: line.to_string(),
            from: crate::proto::DAEMON.to_string(),
            to: line.to_string(),
            text: Some(why.clone()),
            hops,
            ..Event::default()
        };
        ev.extra.insert("stopped".into(), json!(who));
        if let Some(n) = named {
            ev.reply_to = Some(n.to_string());
        }
        broker.log.append(ev).await.map_err(append_error)?;
        tracing::warn!("{why} (line {line})");
    }
    Err(WireError::new(ErrorCode::Loop, why)
        .with("hops", hops)
        .with("maxHops", max))
}

/// True the first time `who` is stopped answering `named` on `line`.
fn first_notice(broker: &Broker, who: &str, line: &str, named: Option<&str>) -> bool {
    let key = format!("{who} {line} {}", named.unwrap_or(""));
    let Ok(mut told) = broker.loop_notices.lock() else {
        return true;
    };
    if told.contains(&key) {
        return false;
    }
    told.insert(key);
    true
}
