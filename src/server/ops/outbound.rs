//! `send`, `edit`, `react`, `download`: outbound ops and the auto-claim rule.
//!
//! To a local agent line, `send` appends a `notify` event addressed to that
//! line (`to` = line), `edit` an `edit` event and `react` a `react` event.
//! On a telegram line the station acts first (the message is in the chat)
//! and the op is then logged as its own event: `outbound`, `edit` or
//! `react`, with Telegram's message id. Lines of stations that do not run
//! answer `unavailable`. The auto-claim rule is applied after the append.

use std::sync::Arc;

use serde_json::{json, Value};

use super::events::append_error;
use super::OpResult;
use crate::broker::Broker;
use crate::proto::{Download, Edit, Event, React, Send, WireError};
use crate::stations::telegram::{ids::Rec, outbound::SendFailure, Telegram};
use crate::store::claims::{ClaimOp, ClaimOutcome};
use crate::{fields, line, stations};

/// Where an outbound op goes.
enum Target {
    Local(String),
    Telegram(String, Arc<Telegram>),
}

/// Validates the target line; platform stations that do not run (and
/// webhook lines, inbound only) answer `unavailable`.
fn target(broker: &Broker, raw: &str) -> Result<Target, WireError> {
    let line = line::line(raw).map_err(|e| WireError::bad_request(format!("field `line`: {e}")))?;
    let station = line::station_of(&line);
    if station == "telegram" {
        if let Some(t) = &broker.telegram {
            return Ok(Target::Telegram(line, t.clone()));
        }
    }
    if line::is_platform(station) {
        return Err(stations::unavailable(station));
    }
    Ok(Target::Local(line))
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
    let from = actor(s.from.as_deref())?;
    let line = match target(&broker, &s.line)? {
        Target::Local(line) => line,
        Target::Telegram(line, tg) => return send_telegram(&broker, &tg, line, from, s).await,
    };
    let mut ev = event("notify", &line, &from);
    ev.text = Some(s.text.clone());
    ev.reply_to = s.reply_to.clone();
    ev.buttons = s.buttons.clone();
    ev.attachments = attachments(&s);
    let a = broker.log.append(ev).await.map_err(append_error)?;
    let claim = auto_claim(&broker, &line, from.as_deref(), s.no_claim.unwrap_or(false)).await?;
    Ok(fields! { "id" => a.id, "messageId" => a.id, "offset" => a.offset, "claim" => claim })
}

/// The Telegram ids as the log and answers carry them.
fn id_strings(ids: &[i32]) -> Vec<String> {
    ids.iter().map(i32::to_string).collect()
}

/// Appends the event of an op; `shown`: what the platform already shows
/// (so a failed append says the action itself happened).
async fn append_sent(
    broker: &Broker,
    ev: Event,
    shown: Option<&str>,
) -> Result<crate::store::log::Appended, WireError> {
    broker.log.append(ev).await.map_err(|e| {
        let mut w = append_error(e);
        if let Some(shown) = shown {
            w.message = format!("Telegram shows {shown}, but {}", w.message);
        }
        w
    })
}

async fn send_telegram(
    broker: &Broker,
    tg: &Telegram,
    line: String,
    from: Option<String>,
    s: Send,
) -> OpResult {
    let mut ev = event("outbound", &line, &from);
    if !s.text.is_empty() {
        ev.text = Some(s.text.clone());
    }
    ev.buttons = s.buttons.clone();
    ev.attachments = attachments(&s);
    let (delivered, failure) = match tg.send(&broker.log, &line, &s).await {
        Ok(d) => (d, None),
        Err(SendFailure { error, delivered }) if delivered.message_ids.is_empty() => {
            return Err(error)
        }
        Err(SendFailure { error, delivered }) => (delivered, Some(error)),
    };
    let ids = id_strings(&delivered.message_ids);
    ev.message_id = ids.first().cloned();
    ev.reply_to = delivered.reply_to.map(|r| r.to_string());
    if ids.len() > 1 {
        ev.extra.insert("messageIds".into(), json!(ids));
    }
    if let Some(f) = &failure {
        // Part of it is in the chat: log that part, and say what failed.
        ev.extra.insert("incomplete".into(), json!(f.message));
    }
    let shown = format!("message {}", ids.join(", "));
    let a = append_sent(broker, ev, Some(&shown)).await?;
    tg.ids.record(Rec {
        id: a.id.clone(),
        line: line.clone(),
        message_ids: delivered.message_ids.clone(),
    });
    let claim = auto_claim(broker, &line, from.as_deref(), s.no_claim.unwrap_or(false)).await?;
    if let Some(f) = failure {
        return Err(f
            .with("id", a.id)
            .with("messageIds", ids)
            .with("claim", claim));
    }
    let mut out = fields! {
        "id" => a.id,
        "messageId" => ids.first(),
        "offset" => a.offset,
        "claim" => claim,
    };
    if ids.len() > 1 {
        out.insert("messageIds".into(), json!(ids));
    }
    Ok(out)
}

/// The metro id of a Telegram message, when known (`originalId`).
fn original(tg: &Telegram, line: &str, mid: i32) -> Option<String> {
    let (chat, _) = crate::stations::telegram::parse_line(line)?;
    tg.ids.metro(chat, mid).map(|r| r.id)
}

pub async fn edit(broker: Arc<Broker>, e: Edit) -> OpResult {
    let from = actor(e.from.as_deref())?;
    if e.message_id.is_empty() {
        return Err(WireError::bad_request("field `messageId` is empty"));
    }
    let mut ev;
    let mut platform = false;
    let line = match target(&broker, &e.line)? {
        Target::Local(line) => {
            ev = event("edit", &line, &from);
            ev.message_id = Some(e.message_id.clone());
            line
        }
        Target::Telegram(line, tg) => {
            let mid = tg
                .edit(
                    &broker.log,
                    &line,
                    &e.message_id,
                    &e.text,
                    e.buttons.as_ref(),
                )
                .await?;
            ev = event("edit", &line, &from);
            platform = true;
            ev.message_id = Some(mid.to_string());
            if let Some(o) = original(&tg, &line, mid) {
                ev.extra.insert("originalId".into(), json!(o));
            }
            line
        }
    };
    ev.text = Some(e.text.clone());
    ev.buttons = e.buttons.clone();
    let a = append_sent(&broker, ev, platform.then_some("the edit")).await?;
    let claim = auto_claim(&broker, &line, from.as_deref(), e.no_claim.unwrap_or(false)).await?;
    Ok(fields! { "id" => a.id, "offset" => a.offset, "claim" => claim })
}

pub async fn react(broker: Arc<Broker>, r: React) -> OpResult {
    let from = actor(r.from.as_deref())?;
    if r.message_id.is_empty() {
        return Err(WireError::bad_request("field `messageId` is empty"));
    }
    let mut ev;
    let mut platform = false;
    let line = match target(&broker, &r.line)? {
        Target::Local(line) => {
            ev = event("react", &line, &from);
            ev.message_id = Some(r.message_id.clone());
            line
        }
        Target::Telegram(line, tg) => {
            let mid = tg
                .react(&broker.log, &line, &r.message_id, &r.emoji)
                .await?;
            ev = event("react", &line, &from);
            platform = true;
            ev.message_id = Some(mid.to_string());
            if let Some(o) = original(&tg, &line, mid) {
                ev.extra.insert("originalId".into(), json!(o));
            }
            line
        }
    };
    ev.emoji = Some(r.emoji.clone());
    let a = append_sent(&broker, ev, platform.then_some("the reaction")).await?;
    let claim = auto_claim(&broker, &line, from.as_deref(), r.no_claim.unwrap_or(false)).await?;
    Ok(fields! { "id" => a.id, "offset" => a.offset, "claim" => claim })
}

/// `download`: the files of a platform message into `outDir`. Answer:
/// `files` (the saved paths).
pub async fn download(broker: Arc<Broker>, d: Download) -> OpResult {
    match target(&broker, &d.line)? {
        Target::Telegram(line, tg) => {
            let files = tg
                .download(&broker.log, &line, &d.message_id, &d.out_dir)
                .await?;
            Ok(fields! { "files" => files })
        }
        Target::Local(line) => Err(WireError::bad_request(format!(
            "{line} is a local agent line: it carries no platform files to download"
        ))),
    }
}
