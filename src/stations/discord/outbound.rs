//! `send`, `edit`, `react`, `download` and `fetch` on discord lines.
//!
//! Every call goes through the station's queue ([`super::rest`]): one turn
//! per channel (a reply split in three parts is not interleaved with
//! another message), Discord's rate-limit headers and 429s honoured.
//!
//! `send`: a text over 2000 characters (counted in UTF-16 units, which is
//! never less than Discord's count) is split at the last paragraph break,
//! else line break, else space; images, documents and a voice file (as a
//! file: Discord's voice messages need a waveform metro does not make) ride
//! on the first message, 10 to a message; `buttons` become message
//! components under the last text part; `replyTo` makes the first message
//! a reply. Mentions of @everyone, @here and roles in agents' text do not
//! ping anyone; user mentions do.

use std::path::PathBuf;

use bytes::Bytes;
use reqwest::Method;
use serde_json::{json, Value};
use serenity::all::ReactionType;
use serenity::http::Route;

use super::lean::{self, Posted};
use super::rest::{decode, Body, Upload};
use super::{parse_line, Discord};
use crate::proto::{Send, WireError};
use crate::station::{SendFailure, Sent};
use crate::stations::text::{
    button_rows, check_send, create_new, existing_file, safe_name, split, units,
};
use crate::store::log::Log;

/// Longest message, in characters.
pub const MAX_TEXT: usize = 2000;
/// Files per message.
pub const MAX_FILES: usize = 10;
/// The largest file metro reads for an upload (Discord's own limit for a
/// bot is lower, 10 MiB in most servers; it answers 413 past it).
pub const MAX_UPLOAD: u64 = 25 << 20;
/// Buttons: 5 rows of 5; a button's id at most 100 characters, its label 80.
pub const MAX_ROWS: usize = 5;
pub const MAX_PER_ROW: usize = 5;
pub const MAX_CUSTOM_ID: usize = 100;
pub const MAX_LABEL: usize = 80;

fn channel_of(line: &str) -> Result<u64, WireError> {
    parse_line(line).ok_or_else(|| WireError::bad_request(format!("{line} is not a discord line")))
}

/// `buttons` → message components. Rows of buttons (`[[b, b], [b]]`) or
/// one row (`[b, b]`); a button is `"Yes"` (label and id), `{"text",
/// "data"}` (also `callbackData`) or `{"text", "url"}` (a link).
pub fn components(v: &Value) -> Result<Value, WireError> {
    let bad = |why: String| WireError::bad_request(format!("field `buttons`: {why}"));
    let rows = button_rows(v, button)?;
    if rows.len() > MAX_ROWS {
        return Err(bad(format!(
            "Discord allows {MAX_ROWS} rows of buttons, not {}",
            rows.len()
        )));
    }
    if let Some(row) = rows.iter().find(|r| r.len() > MAX_PER_ROW) {
        return Err(bad(format!(
            "Discord allows {MAX_PER_ROW} buttons in a row, not {}",
            row.len()
        )));
    }
    Ok(rows
        .into_iter()
        .map(|r| json!({"type": 1, "components": r}))
        .collect())
}

fn button(b: &Value) -> Result<Value, String> {
    let label = |t: &str| {
        if t.is_empty() || t.chars().count() > MAX_LABEL {
            Err(format!(
                "a button's text must be 1 to {MAX_LABEL} characters"
            ))
        } else {
            Ok(t.to_string())
        }
    };
    let id = |d: &str| {
        if d.is_empty() || d.chars().count() > MAX_CUSTOM_ID {
            Err(format!(
                "button data must be 1 to {MAX_CUSTOM_ID} characters, not {}",
                d.chars().count()
            ))
        } else {
            Ok(d.to_string())
        }
    };
    match b {
        Value::String(s) => Ok(json!({
            "type": 2, "style": 1, "label": label(s)?, "custom_id": id(s)?,
        })),
        Value::Object(o) => {
            let text = o
                .get("text")
                .and_then(Value::as_str)
                .ok_or("every button needs a non-empty \"text\"")?;
            let text = label(text)?;
            if let Some(url) = o.get("url").and_then(Value::as_str) {
                let url = url::Url::parse(url).map_err(|e| format!("url {url:?}: {e}"))?;
                return Ok(json!({"type": 2, "style": 5, "label": text, "url": url.as_str()}));
            }
            let data = o
                .get("data")
                .or_else(|| o.get("callbackData"))
                .and_then(Value::as_str)
                .unwrap_or(&text);
            Ok(json!({"type": 2, "style": 1, "label": text, "custom_id": id(data)?}))
        }
        other => Err(format!("a button is a string or an object, not {other}")),
    }
}

async fn upload(path: &str, field: &str) -> Result<Upload, WireError> {
    let p = existing_file(path, field)?;
    let size = tokio::fs::metadata(&p).await.map(|m| m.len()).unwrap_or(0);
    if size > MAX_UPLOAD {
        return Err(WireError::bad_request(format!(
            "field `{field}`: {path} is {} MiB; Discord takes files up to {} MiB from metro",
            size >> 20,
            MAX_UPLOAD >> 20
        )));
    }
    let data = tokio::fs::read(&p)
        .await
        .map_err(|e| WireError::bad_request(format!("field `{field}`: cannot read {path}: {e}")))?;
    let name = p
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(safe_name)
        .unwrap_or_else(|| "file".into());
    Ok(Upload { name, data })
}

/// The body of one message.
fn message_body(
    text: Option<&str>,
    reply_to: Option<u64>,
    buttons: Option<&Value>,
    files: &[Upload],
) -> Value {
    let mut b = json!({ "allowed_mentions": {"parse": ["users"], "replied_user": true} });
    if let Some(t) = text {
        b["content"] = json!(t);
    }
    if let Some(r) = reply_to {
        b["message_reference"] = json!({"message_id": r.to_string(), "fail_if_not_exists": false});
    }
    if let Some(c) = buttons {
        b["components"] = c.clone();
    }
    if !files.is_empty() {
        b["attachments"] = files
            .iter()
            .enumerate()
            .map(|(i, f)| json!({"id": i, "filename": f.name}))
            .collect();
    }
    b
}

impl Discord {
    /// A `messageId` / `replyTo` → the Discord message id in `channel`.
    /// Accepts a metro id (`msg_…`: the id map, else the log) or a
    /// snowflake.
    pub async fn resolve(
        &self,
        log: &Log,
        channel: u64,
        raw: &str,
        field: &str,
    ) -> Result<u64, WireError> {
        self.ids
            .resolve(log, "discord", &channel.to_string(), raw, field)
            .await
    }

    /// `send` to `line`.
    pub async fn send(&self, log: &Log, line: &str, s: &Send) -> Result<Sent, SendFailure> {
        let channel = channel_of(line)?;
        let mut files = Vec::new();
        for p in s.images.iter().flatten() {
            files.push(upload(p, "images").await?);
        }
        for p in s.documents.iter().flatten() {
            files.push(upload(p, "documents").await?);
        }
        if let Some(p) = &s.voice {
            files.push(upload(p, "voice").await?);
        }
        let buttons = s.buttons.as_ref().map(components).transpose()?;
        let text = s.text.as_str();
        check_send(text, !files.is_empty(), buttons.is_some())?;
        let reply_to = match &s.reply_to {
            Some(r) => Some(self.resolve(log, channel, r, "replyTo").await?),
            None => None,
        };
        let parts: Vec<&str> = if text.trim().is_empty() {
            Vec::new()
        } else {
            split(text, MAX_TEXT)
        };
        let chunks: Vec<&[Upload]> = files.chunks(MAX_FILES).collect();
        let n = parts.len().max(1) + chunks.len().saturating_sub(1);
        let last_text = parts.len().checked_sub(1);
        let mut sent = Sent {
            message_ids: Vec::new(),
            reply_to: reply_to.map(|r| r.to_string()),
        };
        let mut turn = self.queue.turn(&channel.to_string()).await;
        for i in 0..n {
            let part = parts.get(i).copied();
            let files: &[Upload] = match i {
                0 => chunks.first().copied().unwrap_or(&[]),
                _ if i >= parts.len().max(1) => chunks[i + 1 - parts.len().max(1)],
                _ => &[],
            };
            let body = message_body(
                part,
                if i == 0 { reply_to } else { None },
                if Some(i) == last_text {
                    buttons.as_ref()
                } else {
                    None
                },
                files,
            );
            let mut req = self.req(
                Method::POST,
                Route::ChannelMessages {
                    channel_id: channel.into(),
                },
            );
            req.body = if files.is_empty() {
                Body::Json(body)
            } else {
                Body::Files(body, files.to_vec())
            };
            let fail = |sent: &Sent, error: WireError| SendFailure {
                error,
                sent: sent.clone(),
            };
            let bytes = self
                .call(&mut turn, &req)
                .await
                .map_err(|e| fail(&sent, e))?;
            let m: Posted = decode(&req, &bytes).map_err(|e| fail(&sent, e))?;
            sent.message_ids.push(m.id.to_string());
        }
        Ok(sent)
    }

    /// `edit`: the text (and the buttons, when given). Answers the Discord
    /// message id.
    pub async fn edit(
        &self,
        log: &Log,
        line: &str,
        message_id: &str,
        text: &str,
        buttons: Option<&Value>,
    ) -> Result<u64, WireError> {
        let channel = channel_of(line)?;
        if text.trim().is_empty() {
            return Err(WireError::bad_request("field `text` is empty"));
        }
        if units(text) > MAX_TEXT {
            return Err(WireError::bad_request(format!(
                "field `text`: longer than Discord's {MAX_TEXT} characters; an edit cannot be split"
            )));
        }
        let buttons = buttons.map(components).transpose()?;
        let mid = self.resolve(log, channel, message_id, "messageId").await?;
        let mut body = json!({ "content": text, "allowed_mentions": {"parse": ["users"]} });
        if let Some(c) = buttons {
            body["components"] = c;
        }
        let mut req = self.req(
            Method::PATCH,
            Route::ChannelMessage {
                channel_id: channel.into(),
                message_id: mid.into(),
            },
        );
        req.body = Body::Json(body);
        let mut turn = self.queue.turn(&channel.to_string()).await;
        self.call(&mut turn, &req).await?;
        Ok(mid)
    }

    /// `react`: adds the bot's reaction; `""` removes the bot's reactions.
    pub async fn react(
        &self,
        log: &Log,
        line: &str,
        message_id: &str,
        emoji: &str,
    ) -> Result<u64, WireError> {
        let channel = channel_of(line)?;
        let mid = self.resolve(log, channel, message_id, "messageId").await?;
        let emoji = emoji.trim();
        let mut turn = self.queue.turn(&channel.to_string()).await;
        let mine: Vec<ReactionType> = if emoji.is_empty() {
            let req = self.req(
                Method::GET,
                Route::ChannelMessage {
                    channel_id: channel.into(),
                    message_id: mid.into(),
                },
            );
            let m: lean::Reactions = decode(&req, &self.call(&mut turn, &req).await?)?;
            m.reactions
                .into_iter()
                .filter(|r| r.me)
                .map(|r| r.emoji)
                .collect()
        } else {
            vec![ReactionType::try_from(emoji).map_err(|e| {
                WireError::bad_request(format!(
                    "field `emoji`: {emoji:?} is not an emoji Discord knows ({e})"
                ))
            })?]
        };
        let method = if emoji.is_empty() {
            Method::DELETE
        } else {
            Method::PUT
        };
        for r in mine {
            let data = r.as_data();
            let req = self.req(
                method.clone(),
                Route::ChannelMessageReactionMe {
                    channel_id: channel.into(),
                    message_id: mid.into(),
                    reaction: &data,
                },
            );
            self.call(&mut turn, &req).await?;
        }
        Ok(mid)
    }

    /// The files of message `mid` of `channel`, from Discord.
    async fn files(&self, channel: u64, mid: u64) -> Result<lean::Files, WireError> {
        let req = self.req(
            Method::GET,
            Route::ChannelMessage {
                channel_id: channel.into(),
                message_id: mid.into(),
            },
        );
        self.call_json(&channel.to_string(), &req).await
    }

    /// `download`: the attachments of a message into `out_dir`. The
    /// message is read from Discord, so the file URLs are fresh (Discord's
    /// expire).
    pub async fn download(
        &self,
        log: &Log,
        line: &str,
        message_id: &str,
        out_dir: &str,
    ) -> Result<Vec<String>, WireError> {
        let channel = channel_of(line)?;
        let dir = PathBuf::from(out_dir);
        if !dir.is_absolute() {
            return Err(WireError::bad_request(format!(
                "field `outDir`: {out_dir:?} is not an absolute path"
            )));
        }
        let mid = self.resolve(log, channel, message_id, "messageId").await?;
        let m = self.files(channel, mid).await?;
        if m.attachments.is_empty() {
            return Err(WireError::bad_request(format!(
                "message {message_id} has no files to download"
            )));
        }
        tokio::fs::create_dir_all(&dir).await.map_err(|e| {
            WireError::bad_request(format!("field `outDir`: cannot create {out_dir}: {e}"))
        })?;
        let mut saved = Vec::new();
        for (i, a) in m.attachments.iter().enumerate() {
            let name = safe_name(&a.filename)
                .unwrap_or_else(|| format!("discord-{channel}-{mid}-{}", i + 1));
            let (path, mut dst) = create_new(&dir, &name).await.map_err(|e| {
                WireError::internal(format!("cannot create a file in {out_dir}: {e}"))
            })?;
            if let Err(e) = self.fetch_file(&a.url, &mut dst).await {
                drop(dst);
                let _ = tokio::fs::remove_file(&path).await;
                return Err(e);
            }
            saved.push(path.display().to_string());
        }
        Ok(saved)
    }

    /// Writes an attachment into `dst`, as it arrives (CDN URLs carry their
    /// own signature: no token is sent).
    async fn fetch_file(&self, url: &str, dst: &mut tokio::fs::File) -> Result<(), WireError> {
        use tokio::io::AsyncWriteExt;
        let upstream = |why: String| WireError::new(crate::proto::ErrorCode::Upstream, why);
        let mut resp = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| WireError::unavailable(format!("cannot download {url}: {e}")))?;
        if !resp.status().is_success() {
            return Err(upstream(format!(
                "Discord refused the download of {url} ({})",
                resp.status()
            )));
        }
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| upstream(format!("the download of {url} broke off: {e}")))?
        {
            dst.write_all(&chunk)
                .await
                .map_err(|e| WireError::internal(format!("cannot write a download: {e}")))?;
        }
        dst.flush()
            .await
            .map_err(|e| WireError::internal(format!("cannot write a download: {e}")))
    }

    /// `fetch`: the newest `limit` messages of the channel, from Discord,
    /// oldest first, each shaped like an event (`id`: the metro id when
    /// metro stored the message; `ts`: Discord's time).
    pub async fn fetch(&self, line: &str, limit: u64) -> Result<Vec<Bytes>, WireError> {
        let channel = channel_of(line)?;
        let mut req = self.req(
            Method::GET,
            Route::ChannelMessages {
                channel_id: channel.into(),
            },
        );
        req.query.push(("limit", limit.to_string()));
        let entries: Vec<Value> = self.call_json(&channel.to_string(), &req).await?;
        let messages = super::catch_up::listing(channel, entries).messages;
        let mut out = Vec::with_capacity(messages.len());
        for m in &messages {
            let mut ev = super::map::message_event("inbound", m);
            if m.author.id.get() == self.bot_id() {
                ev.kind = "outbound".into();
            }
            let sent = m.sent_at();
            ev.ts = sent.to_rfc3339().unwrap_or_else(|| sent.to_string());
            if let Some(at) = m.edited_timestamp {
                ev.extra.insert("editedAt".into(), json!(at.to_string()));
            }
            let mut v = serde_json::to_value(&ev)
                .map_err(|e| WireError::internal(format!("cannot encode a message: {e}")))?;
            match self.ids.metro(&channel.to_string(), &m.id.to_string()) {
                Some(rec) => v["id"] = json!(rec.id),
                None => {
                    if let Some(o) = v.as_object_mut() {
                        o.remove("id");
                    }
                }
            }
            out.push(Bytes::from(v.to_string()));
        }
        Ok(out)
    }
}

/// A plain message from the station itself (the pairing reply): through
/// the queue, not logged.
pub async fn notice(dc: &Discord, channel: u64, text: &str) -> Result<(), WireError> {
    let mut req = dc.req(
        Method::POST,
        Route::ChannelMessages {
            channel_id: channel.into(),
        },
    );
    req.body = Body::Json(message_body(Some(text), None, None, &[]));
    let mut turn = dc.queue.turn(&channel.to_string()).await;
    dc.call(&mut turn, &req).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_from_json() {
        let c = components(&json!(["Yes", {"text": "No", "data": "n"}])).unwrap();
        assert_eq!(c[0]["type"], 1);
        assert_eq!(c[0]["components"][1]["custom_id"], "n");
        let c =
            components(&json!([["a"], [{"text": "site", "url": "https://example.com"}]])).unwrap();
        assert_eq!(c.as_array().unwrap().len(), 2);
        assert_eq!(c[1]["components"][0]["style"], 5);
        assert!(components(&json!({"text": "x"})).is_err());
        assert!(components(&json!([])).is_err());
        assert!(components(&json!(["a", "b", "c", "d", "e", "f"])).is_err());
        assert!(components(&json!([["a"], ["b"], ["c"], ["d"], ["e"], ["f"]])).is_err());
        assert!(components(&json!([{"text": "x", "data": "d".repeat(101)}])).is_err());
    }

    #[test]
    fn bodies_reply_once_and_list_files() {
        let files = vec![Upload {
            name: "a.png".into(),
            data: vec![1],
        }];
        let b = message_body(Some("hi"), Some(5), None, &files);
        assert_eq!(b["message_reference"]["message_id"], "5");
        assert_eq!(b["attachments"][0]["filename"], "a.png");
        assert_eq!(b["allowed_mentions"]["parse"], json!(["users"]));
        let b = message_body(None, None, None, &[]);
        assert!(b.get("content").is_none());
    }
}
