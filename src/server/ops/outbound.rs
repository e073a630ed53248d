//! `send`, `edit`, `react`, `download`: outbound ops and the auto-claim rule.
//!
//! To a local agent line, `send` appends a `notify` event addressed to that
//! line (`to` = line), `edit` an `edit` event and `react` a `react` event.
//! On a telegram or discord line the station acts first (the message is in
//! the chat) and the op is then logged as its own event: `outbound`, `edit`
//! or `react`, with the platform's message id. Lines of stations that do not run
//! answer `unavailable`. The auto-claim rule is applied after the append; a
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
use crate::stations::discord::Discord;
use crate::stations::telegram::{ids::Rec, Telegram};
use crate::stations::{SendFailure, Sent};
use crate::store::claims::{ClaimOp, ClaimOutcome};
use crate::{fields, line, stations};

/// Where an outbound op goes.
enum Target {
    Local(String),
    Telegram(String, Arc<Telegram>),
    Discord(String, Arc<Discord>),
}

impl Target {
    fn line(&self) -> &str {
        match self {
            Target::Local(l) | Target::Telegram(l, _) | Target::Discord(l, _) => l,
        }
    }
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
        from: Option<&str>,
        target: &Target,
        (named, step): (Option<&str>, u32),
        key: &Option<String>,
    ) -> Result<Author, WireError> {
        let from = actor(from)?;
        let who = from.as_deref().unwrap_or(stations::ANONYMOUS);
        let hops = guard::check(broker, target.line(), who, named, step).await?;
        Ok(Author {
            from,
            hops,
            key: key.clone(),
        })
    }
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
    if station == "discord" {
        if let Some(d) = &broker.discord {
            return Ok(Target::Discord(line, d.clone()));
        }
    }
    if line::is_platform(station) {
        return Err(stations::unavailable(station));
    }
    Ok(Target::Local(line))
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
    if no_claim || line::is_local(line) {
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
            .unwrap_or_else(|| stations::ANONYMOUS.to_string()),
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

pub async fn send(broker: Arc<Broker>, s: Send) -> OpResult {
    let target = target(&broker, &s.line)?;
    let author = Author::of(
        &broker,
        s.from.as_deref(),
        &target,
        (s.reply_to.as_deref(), 1),
        &s.idempotency_key,
    )
    .await?;
    let line = match target {
        Target::Local(line) => line,
        Target::Telegram(line, tg) => {
            let r = tg.send(&broker.log, &line, &s).await;
            let record = |id: &str, ids: &Sent| {
                tg.ids.record(Rec {
                    id: id.to_string(),
                    line: line.clone(),
                    message_ids: ids
                        .message_ids
                        .iter()
                        .filter_map(|m| m.parse().ok())
                        .collect(),
                })
            };
            return send_platform(&broker, &line, author, s, "Telegram", r, record).await;
        }
        Target::Discord(line, dc) => {
            let r = dc.send(&broker.log, &line, &s).await;
            let record = |id: &str, ids: &Sent| {
                dc.record(crate::stations::ids::Rec {
                    id: id.to_string(),
                    line: line.clone(),
                    message_ids: ids.message_ids.clone(),
                })
            };
            return send_platform(&broker, &line, author, s, "Discord", r, record).await;
        }
    };
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

/// The metro id of a Telegram message, when known (`originalId`).
fn original(tg: &Telegram, line: &str, mid: i32) -> Option<String> {
    let (chat, _) = crate::stations::telegram::parse_line(line)?;
    tg.ids.metro(chat, mid).map(|r| r.id)
}

/// The metro id of a Discord message, when known (`originalId`).
fn original_dc(dc: &Discord, line: &str, mid: u64) -> Option<String> {
    let channel = crate::stations::discord::parse_line(line)?;
    dc.ids
        .metro(&channel.to_string(), &mid.to_string())
        .map(|r| r.id)
}

/// What an `edit` or `react` did: on which line, the message id for the
/// event, the metro id of the original (when known), and what the
/// platform already shows (for an error after the fact).
struct Done {
    line: String,
    message_id: String,
    original: Option<String>,
    shown: Option<&'static str>,
}

impl Done {
    fn local(line: String, message_id: &str) -> Done {
        Done {
            line,
            message_id: message_id.to_string(),
            original: None,
            shown: None,
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

pub async fn edit(broker: Arc<Broker>, e: Edit) -> OpResult {
    if e.message_id.is_empty() {
        return Err(WireError::bad_request("field `messageId` is empty"));
    }
    let target = target(&broker, &e.line)?;
    // An edit revises the message: its hops, not one more.
    let named = (Some(e.message_id.as_str()), 0);
    let author = Author::of(
        &broker,
        e.from.as_deref(),
        &target,
        named,
        &e.idempotency_key,
    )
    .await?;
    let buttons = e.buttons.as_ref();
    let done = match target {
        Target::Local(line) => Done::local(line, &e.message_id),
        Target::Telegram(line, tg) => {
            let mid = tg
                .edit(&broker.log, &line, &e.message_id, &e.text, buttons)
                .await?;
            Done {
                original: original(&tg, &line, mid),
                message_id: mid.to_string(),
                line,
                shown: Some("Telegram shows the edit"),
            }
        }
        Target::Discord(line, dc) => {
            let mid = dc
                .edit(&broker.log, &line, &e.message_id, &e.text, buttons)
                .await?;
            Done {
                original: original_dc(&dc, &line, mid),
                message_id: mid.to_string(),
                line,
                shown: Some("Discord shows the edit"),
            }
        }
    };
    let mut ev = done.event("edit", &author);
    ev.text = Some(e.text.clone());
    ev.buttons = e.buttons.clone();
    let a = append_sent(&broker, ev, done.shown.map(str::to_string)).await?;
    let claim = auto_claim(
        &broker,
        &done.line,
        author.from.as_deref(),
        e.no_claim.unwrap_or(false),
    )
    .await?;
    Ok(fields! { "id" => a.id, "offset" => a.offset, "claim" => claim })
}

pub async fn react(broker: Arc<Broker>, r: React) -> OpResult {
    if r.message_id.is_empty() {
        return Err(WireError::bad_request("field `messageId` is empty"));
    }
    let target = target(&broker, &r.line)?;
    let named = (Some(r.message_id.as_str()), 1);
    let author = Author::of(
        &broker,
        r.from.as_deref(),
        &target,
        named,
        &r.idempotency_key,
    )
    .await?;
    let done = match target {
        Target::Local(line) => Done::local(line, &r.message_id),
        Target::Telegram(line, tg) => {
            let mid = tg
                .react(&broker.log, &line, &r.message_id, &r.emoji)
                .await?;
            Done {
                original: original(&tg, &line, mid),
                message_id: mid.to_string(),
                line,
                shown: Some("Telegram shows the reaction"),
            }
        }
        Target::Discord(line, dc) => {
            let mid = dc
                .react(&broker.log, &line, &r.message_id, &r.emoji)
                .await?;
            Done {
                original: original_dc(&dc, &line, mid),
                message_id: mid.to_string(),
                line,
                shown: Some("Discord shows the reaction"),
            }
        }
    };
    let mut ev = done.event("react", &author);
    ev.emoji = Some(r.emoji.clone());
    let a = append_sent(&broker, ev, done.shown.map(str::to_string)).await?;
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
pub async fn download(broker: Arc<Broker>, d: Download) -> OpResult {
    match target(&broker, &d.line)? {
        Target::Telegram(line, tg) => {
            let files = tg
                .download(&broker.log, &line, &d.message_id, &d.out_dir)
                .await?;
            Ok(fields! { "files" => files })
        }
        Target::Discord(line, dc) => {
            let files = dc
                .download(&broker.log, &line, &d.message_id, &d.out_dir)
                .await?;
            Ok(fields! { "files" => files })
        }
        Target::Local(line) => Err(WireError::bad_request(format!(
            "{line} is a local agent line: it carries no platform files to download"
        ))),
    }
}
