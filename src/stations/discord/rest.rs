//! Discord's REST API, called through the station's queue.
//!
//! Paths come from serenity's [`Route`]s and answers are read into
//! serenity's models; the requests themselves are made here so that metro
//! sees every answer's status and headers. serenity 0.12 can send to a
//! base other than discord.com only with its rate limiter off, and then
//! it reports a 429 without its `retry_after`; metro's queue needs both:
//!
//! - `X-RateLimit-Remaining: 0` holds the channel for
//!   `X-RateLimit-Reset-After` seconds before its next call;
//! - a 429 holds the channel (or, with `"global": true`, every channel)
//!   for `retry_after` (body) / `Retry-After` (header) and the call is made
//!   again, up to [`super::MAX_RETRY_WAIT`] in total;
//! - any other refusal is an `upstream` error with Discord's own message
//!   (`not_found` for an unknown message or channel); a network failure is
//!   `unavailable`.

use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, AUTHORIZATION, USER_AGENT};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;
use serenity::http::Route;

use super::{bump, Discord, CHANNEL_RATE, DEFAULT_API_URL};
use crate::proto::{ErrorCode, WireError};
use crate::stations::queue::{Failure, Turn};

const AGENT: &str = concat!(
    "DiscordBot (https://github.com/metro, ",
    env!("CARGO_PKG_VERSION"),
    ") metro"
);

/// A file to upload with a message.
#[derive(Debug, Clone)]
pub struct Upload {
    pub name: String,
    pub data: Vec<u8>,
}

#[derive(Debug, Clone)]
pub enum Body {
    Empty,
    Json(Value),
    /// `payload_json` and the files as `files[0]`, `files[1]`, …
    Files(Value, Vec<Upload>),
}

/// One REST call.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: Method,
    pub url: String,
    pub query: Vec<(&'static str, String)>,
    pub body: Body,
    /// What the call does, for messages ("POST /channels/1/messages").
    pub what: String,
}

fn upstream(message: impl Into<String>) -> WireError {
    WireError::new(ErrorCode::Upstream, message)
}

fn header_secs(h: &HeaderMap, name: &str) -> Option<Duration> {
    let v: f64 = h.get(name)?.to_str().ok()?.trim().parse().ok()?;
    (v.is_finite() && v >= 0.0).then(|| Duration::from_secs_f64(v.min(3600.0)))
}

impl Discord {
    /// A request to `route` (serenity's path, on this station's base).
    pub(crate) fn req(&self, method: Method, route: Route<'_>) -> Req {
        let path = route.path();
        let url = match path.strip_prefix(DEFAULT_API_URL) {
            Some(rest) => format!("{}{rest}", self.api_url()),
            None => path.to_string(),
        };
        let mut short = path
            .split_once("/api/v10")
            .map_or(path.as_ref(), |(_, p)| p)
            .to_string();
        // An interaction's token answers for it: never in messages or logs.
        if let Some(rest) = short.strip_prefix("/interactions/") {
            let mut parts: Vec<&str> = rest.split('/').collect();
            if parts.len() > 1 {
                parts[1] = "<token>";
            }
            short = format!("/interactions/{}", parts.join("/"));
        }
        Req {
            what: format!("{method} {short}"),
            method,
            url,
            query: Vec::new(),
            body: Body::Empty,
        }
    }

    /// Makes `req` in `turn` (a channel's, usually): limits, holds and
    /// retries as described above. Answers the body.
    pub(crate) async fn call(&self, turn: &mut Turn<'_>, req: &Req) -> Result<Bytes, WireError> {
        let (body, hold) = turn.call(CHANNEL_RATE, || self.once(req)).await?;
        if let Some(d) = hold {
            turn.hold(d);
        }
        bump(&self.core.counters.sent);
        Ok(body)
    }

    /// [`Self::call`] in a turn of its own, read as `T`.
    pub(crate) async fn call_json<T: DeserializeOwned>(
        &self,
        conversation: &str,
        req: &Req,
    ) -> Result<T, WireError> {
        let mut turn = self.queue.turn(conversation).await;
        let body = self.call(&mut turn, req).await?;
        decode(req, &body)
    }

    async fn once(&self, req: &Req) -> Result<(Bytes, Option<Duration>), Failure<WireError>> {
        let mut b = self
            .http
            .request(req.method.clone(), &req.url)
            .header(AUTHORIZATION, &self.auth)
            .header(USER_AGENT, AGENT);
        if !req.query.is_empty() {
            b = b.query(&req.query);
        }
        b = match &req.body {
            Body::Empty => b,
            Body::Json(v) => b.json(v),
            Body::Files(payload, files) => {
                let mut form =
                    reqwest::multipart::Form::new().text("payload_json", payload.to_string());
                for (i, f) in files.iter().enumerate() {
                    let mut part =
                        reqwest::multipart::Part::bytes(f.data.clone()).file_name(f.name.clone());
                    if let Some(mime) = mime_of(&f.name) {
                        part = part.mime_str(mime).map_err(|e| {
                            Failure::Fatal(WireError::internal(format!("{}: {e}", req.what)))
                        })?;
                    }
                    form = form.part(format!("files[{i}]"), part);
                }
                b.multipart(form)
            }
        };
        let resp = b.send().await.map_err(|e| {
            Failure::Fatal(WireError::unavailable(self.redact(&format!(
                "cannot reach Discord ({}) for {}: {e}",
                self.api_url(),
                req.what
            ))))
        })?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.map_err(|e| {
            Failure::Fatal(WireError::unavailable(format!(
                "Discord's answer to {} broke off: {e}",
                req.what
            )))
        })?;
        let spent = headers
            .get("x-ratelimit-remaining")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() == "0");
        let hold = if spent {
            header_secs(&headers, "x-ratelimit-reset-after")
        } else {
            None
        };
        if status.is_success() {
            return Ok((body, hold));
        }
        let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if status == StatusCode::TOO_MANY_REQUESTS {
            let wait = json["retry_after"]
                .as_f64()
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(|s| Duration::from_secs_f64(s.min(3600.0)))
                .or_else(|| header_secs(&headers, "retry-after"))
                .unwrap_or(Duration::from_secs(1));
            let global = json["global"].as_bool().unwrap_or(false)
                || headers
                    .get("x-ratelimit-global")
                    .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
            if global {
                self.queue.hold_all(wait);
            }
            tracing::info!(
                "discord: rate limited on {} ({}); waiting {:.2} s",
                req.what,
                if global { "global" } else { "this route" },
                wait.as_secs_f64()
            );
            return Err(Failure::RetryAfter(
                wait,
                upstream(format!(
                    "Discord's rate limit: {} must wait {:.1} s, longer than metro waits",
                    req.what,
                    wait.as_secs_f64()
                )),
            ));
        }
        Err(Failure::Fatal(refusal(req, status, &json, &body)))
    }
}

/// The wire error for a refused call.
fn refusal(req: &Req, status: StatusCode, json: &Value, body: &[u8]) -> WireError {
    let message = json["message"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned());
    let code = json["code"].as_i64().unwrap_or(0);
    let details = match &json["errors"] {
        Value::Null => String::new(),
        e => format!(": {e}"),
    };
    let what = &req.what;
    match status.as_u16() {
        401 => upstream(format!(
            "Discord refused the bot token (401 Unauthorized) for {what}: check METRO_DISCORD_TOKEN or the [discord] token in the config file"
        )),
        403 => upstream(format!(
            "Discord refused {what}: {message} (403, code {code}); the bot lacks a permission in that channel"
        )),
        404 => WireError::not_found(format!(
            "Discord does not know that: {message} (404 on {what}, code {code})"
        )),
        s => upstream(format!(
            "Discord refused {what} ({s}): {message} (code {code}){details}"
        )),
    }
}

/// `body` read as `T`.
pub(crate) fn decode<T: DeserializeOwned>(req: &Req, body: &[u8]) -> Result<T, WireError> {
    serde_json::from_slice(body).map_err(|e| {
        upstream(format!(
            "Discord's answer to {} is not what the API documents ({e}); is METRO_DISCORD_API_URL right?",
            req.what
        ))
    })
}

/// A content type from a file name, for uploads.
fn mime_of(name: &str) -> Option<&'static str> {
    let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "pdf" => "application/pdf",
        "txt" | "md" | "log" => "text/plain",
        "json" => "application/json",
        "ogg" | "oga" => "audio/ogg",
        "mp3" => "audio/mpeg",
        "mp4" => "video/mp4",
        "zip" => "application/zip",
        _ => return None,
    })
}
