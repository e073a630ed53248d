//! `send`, `edit`, `react`, `download`: outbound ops and the auto-claim rule.
//!
//! To a local agent line, `send` appends a `notify` event addressed to that
//! line (`to` = line), `edit` an `edit` event and `react` a `react` event.
//! Platform lines answer `unavailable` until their station exists.

use std::sync::Arc;

use serde_json::{json, Value};

use super::events::append_error;
use super::OpResult;
use crate::broker::Broker;
use crate::proto::{Download, Edit, Event, React, Send, WireError};
use crate::store::claims::{ClaimOp, ClaimOutcome};
use crate::{fields, line, stations};

/// Validates the target line and refuses platform stations.
fn local_line(raw: &str) -> Result<String, WireError> {
    let line = line::line(raw).map_err(|e| WireError::bad_request(format!("field `line`: {e}")))?;
    let station = line::station_of(&line);
    if line::is_platform(station) {
        return Err(stations::unavailable(station));
    }
    Ok(line)
}

fn actor(from: Option<&str>) -> Result<Option<String>, WireError> {
    from.map(|f| line::uri(f).map_err(|e| WireError::bad_request(format!("field `from`: {e}"))))
        .transpose()
}

/// The auto-claim rule: claim `line` for the actor when nobody owns it;
/// never overwrite another owner.
async fn auto_claim(
    broker: &Broker,
    line: &str,
    actor: Option<&str>,
    no_claim: bool,
) -> Result<&'static str, WireError> {
    let Some(who) = actor else { return Ok("off") };
    if no_claim {
        return Ok("off");
    }
    match broker
        .claims
        .apply(ClaimOp::Auto {
            line: line.to_string(),
            who: who.to_string(),
        })
        .await
    {
        Ok(ClaimOutcome::Auto(result)) => Ok(result),
        Ok(other) => Err(WireError::internal(format!(
            "unexpected claim outcome {other:?}"
        ))),
        Err(why) => Err(WireError::internal(format!(
            "the message was stored but the line could not be claimed: {why}"
        ))),
    }
}

fn event(kind: &str, line: &str, from: &Option<String>) -> Event {
    Event {
        station: line::station_of(line).to_string(),
        kind: kind.to_string(),
        line: line.to_string(),
        from: from
            .clone()
            .unwrap_or_else(|| stations::ANONYMOUS.to_string()),
        to: line.to_string(),
        ..Event::default()
    }
}

fn attachments(s: &Send) -> Option<Vec<Value>> {
    let mut v = Vec::new();
    for p in s.images.iter().flatten() {
        v.push(json!({ "type": "image", "path": p }));
    }
    for p in s.documents.iter().flatten() {
        v.push(json!({ "type": "document", "path": p }));
    }
    if let Some(p) = &s.voice {
        v.push(json!({ "type": "voice", "path": p }));
    }
    (!v.is_empty()).then_some(v)
}

pub async fn send(broker: Arc<Broker>, s: Send) -> OpResult {
    let line = local_line(&s.line)?;
    let from = actor(s.from.as_deref())?;
    let mut ev = event("notify", &line, &from);
    ev.text = Some(s.text.clone());
    ev.reply_to = s.reply_to.clone();
    ev.buttons = s.buttons.clone();
    ev.attachments = attachments(&s);
    let a = broker.log.append(ev).await.map_err(append_error)?;
    let claim = auto_claim(&broker, &line, from.as_deref(), s.no_claim.unwrap_or(false)).await?;
    Ok(fields! { "id" => a.id, "messageId" => a.id, "offset" => a.offset, "claim" => claim })
}

pub async fn edit(broker: Arc<Broker>, e: Edit) -> OpResult {
    let line = local_line(&e.line)?;
    let from = actor(e.from.as_deref())?;
    if e.message_id.is_empty() {
        return Err(WireError::bad_request("field `messageId` is empty"));
    }
    let mut ev = event("edit", &line, &from);
    ev.text = Some(e.text.clone());
    ev.message_id = Some(e.message_id.clone());
    ev.buttons = e.buttons.clone();
    let a = broker.log.append(ev).await.map_err(append_error)?;
    let claim = auto_claim(&broker, &line, from.as_deref(), e.no_claim.unwrap_or(false)).await?;
    Ok(fields! { "id" => a.id, "offset" => a.offset, "claim" => claim })
}

pub async fn react(broker: Arc<Broker>, r: React) -> OpResult {
    let line = local_line(&r.line)?;
    let from = actor(r.from.as_deref())?;
    if r.message_id.is_empty() {
        return Err(WireError::bad_request("field `messageId` is empty"));
    }
    let mut ev = event("react", &line, &from);
    ev.message_id = Some(r.message_id.clone());
    ev.emoji = Some(r.emoji.clone());
    let a = broker.log.append(ev).await.map_err(append_error)?;
    let claim = auto_claim(&broker, &line, from.as_deref(), r.no_claim.unwrap_or(false)).await?;
    Ok(fields! { "id" => a.id, "offset" => a.offset, "claim" => claim })
}

pub fn download(d: Download) -> OpResult {
    let line =
        line::line(&d.line).map_err(|e| WireError::bad_request(format!("field `line`: {e}")))?;
    let station = line::station_of(&line);
    if line::is_platform(station) {
        return Err(stations::unavailable(station));
    }
    Err(WireError::bad_request(format!(
        "{line} is a local agent line: it carries no platform files to download"
    )))
}
