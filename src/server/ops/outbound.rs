//! `send`, `edit`, `react`, `download`: outbound ops and the auto-claim rule.
//!
//! The line's station comes from the registry ([`crate::station`]); this
//! file never names one. When the station has no platform (`local`),
//! `send` appends a `notify` event addressed to the line (`to` = line),
//! `edit` an `edit` event and `react` a `react` event. On a platform
//! (Telegram, Discord) the station acts first (the message is in the chat)
//! and the op is then logged as its own event: `outbound`, `edit` or
//! `react`, with the platform's message id. Lines of stations that do not
//! run, or do not serve the op, answer before the loop guard. The auto-claim rule is applied after the append; a
//! local line is never auto-claimed (`claim: "off"`): it belongs to the agent
//! it names, and the event's `to` reaches that agent directly. Before
//! anything is sent, the loop guard ([`super::guard`]) gives the op's
//! `hops` or refuses it.

use std::sync::Arc;

use serde_json::{json, Value};

use super::events::append_error;
use super::{guard, OpResult};
use crate::broker::Broker;
use crate::proto::{Download, Edit, Event, React, Send, WireError};
use crate::station::{Op, Registry, SendFailure, Sent, Station};
use crate::store::claims::{ClaimOp, ClaimOutcome};
use crate::{fields, line};

/// Where an outbound op goes: its line and that line's station.
struct Target {
    line: String,
    station: Arc<dyn Station>,
}

/// Who writes an op's event: its actor, the hops the loop guard gave it,
/// and the client's idempotency key.
struct Author {
    from: Option<String>,
    hops: u32,
    key: Option<String>,
}

impl Author {
    /// Checks the actor and asks the loop guard about an event `step`
    /// hops after `named` on `target`'s line.
    async fn of(
        broker: &Broker,
        stations: &Registry,
        from: Option<&str>,
        line: &str,
        (named, step): (Option<&str>, u32),
        key: &Option<String>,
    ) -> Result<Author, WireError> {
        let from = actor(from)?;
        let who = from.as_deref().unwrap_or(crate::proto::ANONYMOUS);
        let hops = guard::check(broker, stations, line, who, named, step).await?;
        Ok(Author {
            from,
            hops,
            key: key.clone(),
        })
    }
}

/// Validates the target line and finds its station; a station that does
/// not run (or does not serve `op`: webhook lines are inbound only)
/// answers here, before the loop guard.
fn target(stations: &Registry, raw: &str, op: Op) -> Result<Target, WireError> {
    let line = line::line(raw).map_err(|e| WireError::bad_request(format!("field `line`: {e}")))?;
    let station = stations.route(&line)?;
    if !station.supports(op) {
        return Err(station.refuse(op, &line));
    }
    Ok(Target { line, station })
}

/// The actor of an op: its `from`, checked and in full form;
/// `metro://user` is no actor.
pub(super) fn actor(from: Option<&str>) -> Result<Option<String>, WireError> {
    from.map(|f| {
        line::identity(f).map_err(|e| WireError::bad_request(format!("field `from`: {e}")))
    })
    .transpose()
    .map(Option::flatten)
}

/// The auto-claim rule: claim `line` for the actor when nobody owns it;
/// never overwrite another owner, never claim a local line (it belongs to
/// the agent it names).
async fn auto_claim(
    broker: &Broker,
    line: &str,
    actor: Option<&str>,
    no_claim: bool,
) -> Result<&'static str, WireError> {
    let Some(who) = actor else { return Ok("off") };
    if no_claim || broker.platforms.is_local(line) {
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

fn event(kind: &str, line: &str, author: &Author) -> Event {
    Event {
        station: line::station_of(line).to_string(),
        kind: kind.to_string(),
        line: line.to_string(),
        from: author
            .from
            .clone()
            .unwrap_or_else(|| crate::proto::ANONYMOUS.to_string()),
        to: line.to_string(),
        hops: author.hops,
        idempotency_key: author.key.clone(),
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

pub async fn send(broker: Arc<Broker>, stations: Arc<Registry>, s: Send) -> OpResult {
    let Target { line, station } = target(&stations, &s.line, Op::Send)?;
    let author = Author::of(
        &broker,
        &stations,
        s.from.as_deref(),
        &line,
        (s.reply_to.as_deref(), 1),
        &s.idempotency_key,
    )
    .await?;
    if let Some(platform) = station.platform() {
        let r = station.send(&line, &s).await;
        let record = |id: &str, ids: &Sent| station.record(id, &line, ids);
        return send_platform(&broker, &line, author, s, platform, r, record).await;
    }
    // The event is the message (a local line): nothing was sent anywhere.
    station.send(&line, &s).await.map_err(|f| f.error)?;
    let mut ev = event("notify", &line, &author);
    ev.text = Some(s.text.clone());
    ev.reply_to = s.reply_to.clone();
    ev.buttons = s.buttons.clone();
    ev.attachments = attachments(&s);
    let a = broker.log.append(ev).await.map_err(append_error)?;
    let from = author.from.as_deref();
    let claim = auto_claim(&broker, &line, from, s.no_claim.unwrap_or(false)).await?;
    Ok(fields! { "id" => a.id, "messageId" => a.id, "offset" => a.offset, "claim" => claim })
}

/// Appends the event of an op; `shown`: what the platform already shows
/// (so a failed append says the action itself happened).
async fn append_sent(
    broker: &Broker,
    ev: Event,
    shown: Option<String>,
) -> Result<crate::store::log::Appended, WireError> {
    broker.log.append(ev).await.map_err(|e| {
        let mut w = append_error(e);
        if let Some(shown) = shown {
            w.message = format!("{shown}, but {}", w.message);
        }
        w
    })
}

/// Logs a platform `send` (`result`: what the station did), records its
/// ids (`record`) and applies the auto-claim rule.
async fn send_platform(
    broker: &Broker,
    line: &str,
    author: Author,
    s: Send,
    platform: &str,
    result: Result<Sent, SendFailure>,
    record: impl FnOnce(&str, &Sent),
) -> OpResult {
    let mut ev = event("outbound", line, &author);
    if !s.text.is_empty() {
        ev.text = Some(s.text.clone());
    }
    ev.buttons = s.buttons.clone();
    ev.attachments = attachments(&s);
    let (sent, failure) = match result {
        Ok(d) => (d, None),
        Err(SendFailure { error, sent }) if sent.message_ids.is_empty() => return Err(error),
        Err(SendFailure { error, sent }) => (sent, Some(error)),
    };
    let ids = sent.message_ids.clone();
    ev.message_id = ids.first().cloned();
    ev.reply_to = sent.reply_to.clone();
    if ids.len() > 1 {
        ev.extra.insert("messageIds".into(), json!(ids));
    }
    if let Some(f) = &failure {
        // Part of it is in the chat: log that part, and say what failed.
        ev.extra.insert("incomplete".into(), json!(f.message));
    }
    let shown = format!("{platform} shows message {}", ids.join(", "));
    let a = append_sent(broker, ev, Some(shown)).await?;
    record(&a.id, &sent);
    let from = author.from.as_deref();
    let claim = auto_claim(broker, line, from, s.no_claim.unwrap_or(false)).await?;
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

/// What an `edit` or `react` did: on which line, the message id for the
/// event, the metro id of the original (when known), and what the
/// platform already shows (for an error after the fact).
struct Done {
    line: String,
    message_id: String,
    original: Option<String>,
    shown: Option<String>,
}

impl Done {
    /// What `station` answered for an edit or react (`message_id`: the
    /// platform's id of the message); `what`: "edit", "reaction".
    fn of(station: &dyn Station, line: String, message_id: String, what: &str) -> Done {
        match station.platform() {
            Some(platform) => Done {
                original: station.metro_id(&line, &message_id),
                shown: Some(format!("{platform} shows the {what}")),
                message_id,
                line,
            },
            None => Done {
                line,
                message_id,
                original: None,
                shown: None,
            },
        }
    }

    fn event(&self, kind: &str, author: &Author) -> Event {
        let mut ev = event(kind, &self.line, author);
        ev.message_id = Some(self.message_id.clone());
        if let Some(o) = &self.original {
            ev.extra.insert("originalId".into(), json!(o));
        }
        ev
    }
}

pub async fn edit(broker: Arc<Broker>, stations: Arc<Registry>, e: Edit) -> OpResult {
    if e.message_id.is_empty() {
        return Err(WireError::bad_request("field `messageId` is empty"));
    }
    let Target { line, station } = target(&stations, &e.line, Op::Edit)?;
    // An edit revises the message: its hops, not one more.
    let named = (Some(e.message_id.as_str()), 0);
    let author = Author::of(
        &broker,
        &stations,
        e.from.as_deref(),
        &line,
        named,
        &e.idempotency_key,
    )
    .await?;
    let mid = station.edit(&line, &e).await?;
    let done = Done::of(station.as_ref(), line, mid, "edit");
    let mut ev = done.event("edit", &author);
    ev.text = Some(e.text.clone());
    ev.buttons = e.buttons.clone();
    let a = append_sent(&broker, ev, done.shown.clone()).await?;
    let claim = auto_claim(
        &broker,
        &done.line,
        author.from.as_deref(),
        e.no_claim.unwrap_or(false),
    )
    .await?;
    Ok(fields! { "id" => a.id, "offset" => a.offset, "claim" => claim })
}

pub async fn react(broker: Arc<Broker>, stations: Arc<Registry>, r: React) -> OpResult {
    if r.message_id.is_empty() {
        return Err(WireError::bad_request("field `messageId` is empty"));
    }
    let Target { line, station } = target(&stations, &r.line, Op::React)?;
    let named = (Some(r.message_id.as_str()), 1);
    let author = Author::of(
        &broker,
        &stations,
        r.from.as_deref(),
        &line,
        named,
        &r.idempotency_key,
    )
    .await?;
    let mid = station.react(&line, &r).await?;
    let done = Done::of(station.as_ref(), line, mid, "reaction");
    let mut ev = done.event("react", &author);
    ev.emoji = Some(r.emoji.clone());
    let a = append_sent(&broker, ev, done.shown.clone()).await?;
    let claim = auto_claim(
        &broker,
        &done.line,
        author.from.as_deref(),
        r.no_claim.unwrap_or(false),
    )
    .await?;
    Ok(fields! { "id" => a.id, "offset" => a.offset, "claim" => claim })
}

/// `download`: the files of a platform message into `outDir`. Answer:
/// `files` (the saved paths).
pub async fn download(stations: Arc<Registry>, d: Download) -> OpResult {
    let Target { line, station } = target(&stations, &d.line, Op::Download)?;
    let files = station.download(&line, &d).await?;
    Ok(fields! { "files" => files })
}
