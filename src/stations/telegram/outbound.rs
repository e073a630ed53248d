//! `send`, `edit`, `react`, `download` on telegram lines.
//!
//! Every Bot API call that reaches a chat goes through the station's queue
//! ([`crate::stations::queue`]): one turn per chat (a split reply is not
//! interleaved with another message), Telegram's rate limits (per chat:
//! [`super::PRIVATE_RATE`] or [`super::GROUP_RATE`]; per bot:
//! [`super::GLOBAL_RATE`]), and a 429's `retry_after` is waited out and the
//! call made again (up to [`super::MAX_RETRY_WAIT`] in total).
//!
//! Texts are sent with Telegram's (legacy) Markdown; if Telegram cannot
//! parse it ("can't parse entities"), the same text is sent again as plain
//! text instead of failing. A text over 4096 characters (UTF-16 units, as
//! Telegram counts) is split at the last paragraph break, else line break,
//! else space, before the limit. Files: one image or document is a photo
//! or document message, several are albums (at most 10 per album; images
//! and documents are separate albums, as Telegram requires); a voice file
//! is a voice message. The text rides as the caption of the first file when
//! it fits (1024) and there are no buttons; otherwise it follows the files
//! as its own message, the buttons under its last part.
//!
//! This module only talks to Telegram; [`crate::server::ops`] logs the
//! event and applies the auto-claim rule.

use std::path::{Path, PathBuf};

use serde_json::Value;
use teloxide::net::Download;
use teloxide::payloads::{
    EditMessageCaption, EditMessageText, GetFile, SendDocument, SendMediaGroup, SendMessage,
    SendPhoto, SendVoice, SetMessageReaction,
};
use teloxide::requests::{HasPayload, Output, Request};
use teloxide::types::{
    ChatId, FileId, InlineKeyboardButton, InlineKeyboardMarkup, InputFile, InputMedia,
    InputMediaDocument, InputMediaPhoto, MessageId, ParseMode, ReactionType, ReplyParameters,
    ThreadId,
};
use teloxide::{ApiError, RequestError};

use super::lean::{self, Anything, FilePath, Posted};
use super::{bump, parse_line, Telegram, GROUP_RATE, PRIVATE_RATE};
use crate::proto::{ErrorCode, Send, WireError};
use crate::station::{SendFailure, Sent};
use crate::stations::queue::{Failure, Rate, Turn};
use crate::stations::text::{button_rows, check_send, create_new, existing_file, safe_name};
pub use crate::stations::text::{find_in_log, split, units};
use crate::store::log::Log;

/// Telegram's legacy Markdown: lenient with what agents write (MarkdownV2
/// refuses every unescaped `.`, `!`, `-`, …, so nearly every reply would
/// fall back to plain text).
#[allow(deprecated)]
const FORMAT: ParseMode = ParseMode::Markdown;

/// Longest text message, in UTF-16 units.
pub const MAX_TEXT: usize = 4096;
/// Longest caption.
pub const MAX_CAPTION: usize = 1024;
/// Files per album.
pub const MAX_ALBUM: usize = 10;
/// Longest callback data of a button, in bytes.
pub const MAX_BUTTON_DATA: usize = 64;

fn upstream(message: impl Into<String>) -> WireError {
    WireError::new(ErrorCode::Upstream, message)
}

/// The wire error for a failed Bot API call.
pub fn wire_error(tg: &Telegram, method: &str, e: &RequestError) -> WireError {
    let text = tg.redact(&e.to_string());
    match e {
        RequestError::Network(_) => WireError::unavailable(format!(
            "cannot reach Telegram ({}) for {method}: {text}",
            tg.api_url()
        )),
        RequestError::RetryAfter(s) => upstream(format!(
            "Telegram's flood control: {method} must wait {} s, longer than metro waits",
            s.seconds()
        )),
        RequestError::Io(_) => WireError::bad_request(format!("{method}: {text}")),
        _ => upstream(format!("Telegram refused {method}: {text}")),
    }
}

fn is_parse_error(e: &RequestError) -> bool {
    matches!(e, RequestError::Api(ApiError::CantParseEntities(_)))
}

/// The per-chat rate: private chats (positive ids) are faster than groups.
pub fn rate_of(chat: i64) -> Rate {
    if chat > 0 {
        PRIVATE_RATE
    } else {
        GROUP_RATE
    }
}

/// `buttons` → an inline keyboard. Rows of buttons (`[[b, b], [b]]`) or
/// one row (`[b, b]`); a button is `"Yes"` (text and data), `{"text",
/// "data"}` (also `callbackData`) or `{"text", "url"}`.
pub fn keyboard(v: &Value) -> Result<InlineKeyboardMarkup, WireError> {
    Ok(InlineKeyboardMarkup::new(button_rows(v, button)?))
}

fn button(b: &Value) -> Result<InlineKeyboardButton, String> {
    let check = |data: &str| {
        if data.is_empty() || data.len() > MAX_BUTTON_DATA {
            Err(format!(
                "button data must be 1 to {MAX_BUTTON_DATA} bytes, not {}",
                data.len()
            ))
        } else {
            Ok(())
        }
    };
    match b {
        Value::String(s) => {
            check(s)?;
            Ok(InlineKeyboardButton::callback(s.clone(), s.clone()))
        }
        Value::Object(o) => {
            let text = o
                .get("text")
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
                .ok_or("every button needs a non-empty \"text\"")?;
            if let Some(url) = o.get("url").and_then(Value::as_str) {
                let url = url::Url::parse(url).map_err(|e| format!("url {url:?}: {e}"))?;
                return Ok(InlineKeyboardButton::url(text.to_string(), url));
            }
            let data = o
                .get("data")
                .or_else(|| o.get("callbackData"))
                .and_then(Value::as_str)
                .unwrap_or(text);
            check(data)?;
            Ok(InlineKeyboardButton::callback(
                text.to_string(),
                data.to_string(),
            ))
        }
        other => Err(format!("a button is a string or an object, not {other}")),
    }
}

fn thread(topic: Option<i32>) -> Option<ThreadId> {
    topic.map(|t| ThreadId(MessageId(t)))
}

fn reply(m: Option<i32>) -> Option<ReplyParameters> {
    m.map(|m| ReplyParameters::new(MessageId(m)).allow_sending_without_reply())
}

impl Telegram {
    /// One Bot API call under the queue; counts what Telegram accepted.
    async fn call<R, F>(
        &self,
        turn: &mut Turn<'_>,
        rate: Rate,
        make: F,
    ) -> Result<Output<R>, RequestError>
    where
        F: Fn() -> R,
        R: Request<Err = RequestError>,
    {
        let out = turn
            .call(rate, || {
                let req = make();
                async move {
                    req.send().await.map_err(|e| match e {
                        RequestError::RetryAfter(s) => Failure::RetryAfter(s.duration(), e),
                        other => Failure::Fatal(other),
                    })
                }
            })
            .await?;
        bump(&self.core.counters.sent);
        Ok(out)
    }

    /// A call with formatting, made again without it when Telegram cannot
    /// parse the entities. `make(plain)` builds the request.
    async fn call_formatted<R, F>(
        &self,
        turn: &mut Turn<'_>,
        rate: Rate,
        make: F,
    ) -> Result<Output<R>, RequestError>
    where
        F: Fn(bool) -> R,
        R: Request<Err = RequestError>,
    {
        match self.call(turn, rate, || make(false)).await {
            Err(e) if is_parse_error(&e) => {
                bump(&self.counters.plain_fallbacks);
                tracing::info!(
                    "telegram: formatting refused ({}); sending it as plain text",
                    self.redact(&e.to_string())
                );
                self.call(turn, rate, || make(true)).await
            }
            other => other,
        }
    }

    /// A `messageId` / `replyTo` → the Telegram message id in `chat`.
    /// Accepts a metro id (`msg_…`: the id map, else the log) or a
    /// Telegram id.
    pub async fn resolve(
        &self,
        log: &Log,
        chat: i64,
        raw: &str,
        field: &str,
    ) -> Result<i32, WireError> {
        self.ids.resolve(log, chat, raw, field).await
    }

    /// `send` to `line`.
    pub async fn send(&self, log: &Log, line: &str, s: &Send) -> Result<Sent, SendFailure> {
        let (chat, topic) = parse_line(line)
            .ok_or_else(|| WireError::bad_request(format!("{line} is not a telegram line")))?;
        let images = s
            .images
            .iter()
            .flatten()
            .map(|p| existing_file(p, "images"))
            .collect::<Result<Vec<_>, _>>()?;
        let documents = s
            .documents
            .iter()
            .flatten()
            .map(|p| existing_file(p, "documents"))
            .collect::<Result<Vec<_>, _>>()?;
        let voice = s
            .voice
            .as_deref()
            .map(|p| existing_file(p, "voice"))
            .transpose()?;
        let markup = s.buttons.as_ref().map(keyboard).transpose()?;
        let text = s.text.as_str();
        let has_files = !images.is_empty() || !documents.is_empty() || voice.is_some();
        check_send(text, has_files, markup.is_some())?;
        let reply_to = match &s.reply_to {
            Some(r) => Some(self.resolve(log, chat, r, "replyTo").await?),
            None => None,
        };
        let rate = rate_of(chat);
        let mut turn = self.queue.turn(&chat.to_string()).await;
        let mut out = Sent {
            message_ids: Vec::new(),
            reply_to: reply_to.map(|r| r.to_string()),
        };
        let fail = |out: &Sent, method: &str, e: RequestError| SendFailure {
            error: wire_error(self, method, &e),
            sent: out.clone(),
        };
        let use_caption =
            has_files && markup.is_none() && !text.trim().is_empty() && units(text) <= MAX_CAPTION;
        let mut caption = use_caption.then(|| text.to_string());
        let mut reply_next = reply_to;

        for (files, photo) in [(&images, true), (&documents, false)] {
            for chunk in files.chunks(MAX_ALBUM) {
                if let [one] = chunk {
                    let cap = caption.take();
                    let rp = reply_next.take();
                    let m: Posted = if photo {
                        self.call_formatted(&mut turn, rate, |plain| {
                            let mut r = lean::multipart(
                                &self.bot,
                                SendPhoto::new(ChatId(chat), InputFile::file(one)),
                            );
                            r.payload_mut().message_thread_id = thread(topic);
                            r.payload_mut().reply_parameters = reply(rp);
                            if let Some(c) = &cap {
                                r.payload_mut().caption = Some(c.clone());
                                r.payload_mut().parse_mode = (!plain).then_some(FORMAT);
                            }
                            r
                        })
                        .await
                        .map_err(|e| fail(&out, "sendPhoto", e))?
                    } else {
                        self.call_formatted(&mut turn, rate, |plain| {
                            let mut r = lean::multipart(
                                &self.bot,
                                SendDocument::new(ChatId(chat), InputFile::file(one)),
                            );
                            r.payload_mut().message_thread_id = thread(topic);
                            r.payload_mut().reply_parameters = reply(rp);
                            if let Some(c) = &cap {
                                r.payload_mut().caption = Some(c.clone());
                                r.payload_mut().parse_mode = (!plain).then_some(FORMAT);
                            }
                            r
                        })
                        .await
                        .map_err(|e| fail(&out, "sendDocument", e))?
                    };
                    out.message_ids.push(m.message_id.to_string());
                } else {
                    let cap = caption.take();
                    let rp = reply_next.take();
                    let sent: Vec<Posted> = self
                        .call_formatted(&mut turn, rate, |plain| {
                            let media = chunk.iter().enumerate().map(|(i, p)| {
                                let c = if i == 0 { cap.clone() } else { None };
                                let pm = c.as_ref().and((!plain).then_some(FORMAT));
                                if photo {
                                    let mut m = InputMediaPhoto::new(InputFile::file(p));
                                    m.caption = c;
                                    m.parse_mode = pm;
                                    InputMedia::Photo(m)
                                } else {
                                    let mut m = InputMediaDocument::new(InputFile::file(p));
                                    m.caption = c;
                                    m.parse_mode = pm;
                                    InputMedia::Document(m)
                                }
                            });
                            let mut r = lean::multipart(
                                &self.bot,
                                SendMediaGroup::new(ChatId(chat), media),
                            );
                            r.payload_mut().message_thread_id = thread(topic);
                            r.payload_mut().reply_parameters = reply(rp);
                            r
                        })
                        .await
                        .map_err(|e| fail(&out, "sendMediaGroup", e))?;
                    out.message_ids
                        .extend(sent.iter().map(|m| m.message_id.to_string()));
                }
            }
        }
        if let Some(v) = &voice {
            let cap = caption.take();
            let rp = reply_next.take();
            let m = self
                .call_formatted(&mut turn, rate, |plain| {
                    let mut r = lean::multipart::<_, Posted>(
                        &self.bot,
                        SendVoice::new(ChatId(chat), InputFile::file(v)),
                    );
                    r.payload_mut().message_thread_id = thread(topic);
                    r.payload_mut().reply_parameters = reply(rp);
                    if let Some(c) = &cap {
                        r.payload_mut().caption = Some(c.clone());
                        r.payload_mut().parse_mode = (!plain).then_some(FORMAT);
                    }
                    r
                })
                .await
                .map_err(|e| fail(&out, "sendVoice", e))?;
            out.message_ids.push(m.message_id.to_string());
        }
        if !use_caption && !text.trim().is_empty() {
            let parts = split(text, MAX_TEXT);
            let last = parts.len() - 1;
            for (i, part) in parts.into_iter().enumerate() {
                let rp = reply_next.take();
                let kb = if i == last { markup.clone() } else { None };
                let m = self
                    .call_formatted(&mut turn, rate, |plain| {
                        let mut r = lean::json::<_, Posted>(
                            &self.bot,
                            SendMessage::new(ChatId(chat), part),
                        );
                        r.payload_mut().message_thread_id = thread(topic);
                        r.payload_mut().reply_parameters = reply(rp);
                        r.payload_mut().parse_mode = (!plain).then_some(FORMAT);
                        r.payload_mut().reply_markup = kb.clone().map(Into::into);
                        r
                    })
                    .await
                    .map_err(|e| fail(&out, "sendMessage", e))?;
                out.message_ids.push(m.message_id.to_string());
            }
        }
        Ok(out)
    }

    /// `edit`: the text (or, for a message with a file, the caption) and
    /// the buttons. Answers the Telegram message id.
    pub async fn edit(
        &self,
        log: &Log,
        line: &str,
        message_id: &str,
        text: &str,
        buttons: Option<&Value>,
    ) -> Result<i32, WireError> {
        let (chat, _) = parse_line(line)
            .ok_or_else(|| WireError::bad_request(format!("{line} is not a telegram line")))?;
        if text.trim().is_empty() {
            return Err(WireError::bad_request("field `text` is empty"));
        }
        if units(text) > MAX_TEXT {
            return Err(WireError::bad_request(format!(
                "field `text`: longer than Telegram's {MAX_TEXT} characters; an edit cannot be split"
            )));
        }
        let markup = buttons.map(keyboard).transpose()?;
        let mid = self.resolve(log, chat, message_id, "messageId").await?;
        let rate = rate_of(chat);
        let mut turn = self.queue.turn(&chat.to_string()).await;
        let r = self
            .call_formatted(&mut turn, rate, |plain| {
                let mut r = lean::json::<_, Anything>(
                    &self.bot,
                    EditMessageText::new(ChatId(chat), MessageId(mid), text),
                );
                r.payload_mut().parse_mode = (!plain).then_some(FORMAT);
                r.payload_mut().reply_markup = markup.clone();
                r
            })
            .await;
        match r {
            Ok(_) => Ok(mid),
            Err(RequestError::Api(ApiError::Unknown(t)))
                if t.contains("no text in the message to edit") && units(text) <= MAX_CAPTION =>
            {
                self.call_formatted(&mut turn, rate, |plain| {
                    let mut r = lean::json::<_, Anything>(
                        &self.bot,
                        EditMessageCaption::new(ChatId(chat), MessageId(mid)),
                    );
                    r.payload_mut().caption = Some(text.to_string());
                    r.payload_mut().parse_mode = (!plain).then_some(FORMAT);
                    r.payload_mut().reply_markup = markup.clone();
                    r
                })
                .await
                .map(|_| mid)
                .map_err(|e| wire_error(self, "editMessageCaption", &e))
            }
            Err(e) => Err(wire_error(self, "editMessageText", &e)),
        }
    }

    /// `react`: sets the bot's reaction (`""` clears it).
    pub async fn react(
        &self,
        log: &Log,
        line: &str,
        message_id: &str,
        emoji: &str,
    ) -> Result<i32, WireError> {
        let (chat, _) = parse_line(line)
            .ok_or_else(|| WireError::bad_request(format!("{line} is not a telegram line")))?;
        let mid = self.resolve(log, chat, message_id, "messageId").await?;
        let reaction: Vec<ReactionType> = if emoji.is_empty() {
            Vec::new()
        } else {
            vec![ReactionType::Emoji {
                emoji: emoji.to_string(),
            }]
        };
        let rate = rate_of(chat);
        let mut turn = self.queue.turn(&chat.to_string()).await;
        self.call(&mut turn, rate, || {
            let mut r = lean::json::<_, Anything>(
                &self.bot,
                SetMessageReaction::new(ChatId(chat), MessageId(mid)),
            );
            r.payload_mut().reaction = Some(reaction.clone());
            r
        })
        .await
        .map_err(|e| wire_error(self, "setMessageReaction", &e))?;
        Ok(mid)
    }

    /// `download`: the files of a stored message into `out_dir`. The Bot
    /// API cannot look a message up, so its file ids come from metro's log.
    pub async fn download(
        &self,
        log: &Log,
        line: &str,
        message_id: &str,
        out_dir: &str,
    ) -> Result<Vec<String>, WireError> {
        let (chat, _) = parse_line(line)
            .ok_or_else(|| WireError::bad_request(format!("{line} is not a telegram line")))?;
        let dir = PathBuf::from(out_dir);
        if !dir.is_absolute() {
            return Err(WireError::bad_request(format!(
                "field `outDir`: {out_dir:?} is not an absolute path"
            )));
        }
        let raw = message_id.trim();
        let event = if raw.starts_with("msg_") {
            find_in_log(log, raw, |e| e["id"] == raw).await?
        } else {
            let mid = self.resolve(log, chat, raw, "messageId").await?.to_string();
            let needle = format!("\"messageId\":\"{mid}\"");
            find_in_log(log, &needle, |e| {
                e["station"] == "telegram"
                    && e["messageId"] == mid.as_str()
                    && e["line"].as_str().and_then(parse_line).map(|(c, _)| c) == Some(chat)
                    && has_files(e)
            })
            .await?
        };
        let Some(event) = event else {
            return Err(WireError::not_found(format!(
                "no message {raw} in chat {chat} in metro's log"
            )));
        };
        if event["line"].as_str().and_then(parse_line).map(|(c, _)| c) != Some(chat) {
            return Err(WireError::bad_request(format!(
                "{raw} is on {}, not in chat {chat}",
                event["line"]
            )));
        }
        let files: Vec<&Value> = event["attachments"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["fileId"].is_string())
            .collect();
        if files.is_empty() {
            return Err(WireError::bad_request(format!(
                "message {raw} has no files to download"
            )));
        }
        tokio::fs::create_dir_all(&dir).await.map_err(|e| {
            WireError::bad_request(format!("field `outDir`: cannot create {out_dir}: {e}"))
        })?;
        let mid = event["messageId"].as_str().unwrap_or("file").to_string();
        let mut saved = Vec::new();
        for (i, a) in files.iter().enumerate() {
            let file_id = a["fileId"].as_str().unwrap_or_default().to_string();
            let file: FilePath = lean::json(&self.bot, GetFile::new(FileId(file_id)))
                .await
                .map_err(|e| wire_error(self, "getFile", &e))?;
            let Some(file_path) = file.file_path else {
                return Err(WireError::new(
                    ErrorCode::Upstream,
                    format!(
                        "Telegram gave no path for file {} of message {raw} (bots cannot download files over 20 MB)",
                        i + 1
                    ),
                ));
            };
            let name = a["name"].as_str().and_then(safe_name).unwrap_or_else(|| {
                let ext = Path::new(&file_path)
                    .extension()
                    .and_then(|e| e.to_str())
                    .map(|e| format!(".{e}"))
                    .unwrap_or_default();
                format!("telegram-{chat}-{mid}-{}{ext}", i + 1)
            });
            let (path, mut dst) = create_new(&dir, &name).await.map_err(|e| {
                WireError::internal(format!("cannot create a file in {out_dir}: {e}"))
            })?;
            if let Err(e) = self.bot.download_file(&file_path, &mut dst).await {
                drop(dst);
                let _ = tokio::fs::remove_file(&path).await;
                return Err(WireError::new(
                    ErrorCode::Upstream,
                    format!(
                        "could not download {} from Telegram: {}",
                        file_path,
                        self.redact(&e.to_string())
                    ),
                ));
            }
            use tokio::io::AsyncWriteExt;
            dst.flush().await.map_err(|e| {
                WireError::internal(format!("cannot write {}: {e}", path.display()))
            })?;
            saved.push(path.display().to_string());
        }
        Ok(saved)
    }
}

fn has_files(e: &Value) -> bool {
    e["attachments"]
        .as_array()
        .is_some_and(|a| a.iter().any(|x| x["fileId"].is_string()))
}

/// A plain message from the station itself (the pairing reply): through
/// the queue, not logged.
pub async fn notice(tg: &Telegram, chat: i64, text: &str) -> Result<(), WireError> {
    let mut turn = tg.queue.turn(&chat.to_string()).await;
    tg.call(&mut turn, rate_of(chat), || {
        lean::json::<_, Posted>(&tg.bot, SendMessage::new(ChatId(chat), text))
    })
    .await
    .map(|_| ())
    .map_err(|e| wire_error(tg, "sendMessage", &e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keyboards_from_json() {
        let k = keyboard(&json!(["Yes", {"text": "No", "data": "n"}])).unwrap();
        assert_eq!(k.inline_keyboard.len(), 1);
        assert_eq!(k.inline_keyboard[0].len(), 2);
        let k = keyboard(&json!([["a", "b"], [{"text": "site", "url": "https://example.com"}]]))
            .unwrap();
        assert_eq!(k.inline_keyboard.len(), 2);
        assert!(keyboard(&json!({"text": "x"})).is_err());
        assert!(keyboard(&json!([])).is_err());
        assert!(keyboard(&json!([{"data": "x"}])).is_err());
        assert!(keyboard(&json!(["x".repeat(65)])).is_err());
    }
}
