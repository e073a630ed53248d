//! Outbound ops from any node: `send` (and `reply`, a send with
//! `replyTo`), `edit`, `react`, `download` and a platform's `fetch` on a
//! line whose station runs
//! on another node travel as a NATS request to `metro.rpc.<node>`
//! ([`names::rpc_subject`]) and come back with that node's answer.
//!
//! [`Remote`] is the registry's stand-in for a station that runs
//! elsewhere: the op layer of the node that got the op does everything it
//! does for a local station (loop guard, idempotency key, the logged
//! event, auto-claim through the shared claims map); only the platform
//! call travels. [`serve`] answers on the owning node with the station
//! running there ([`Registry::local`]); its error (code, message, fields)
//! comes back unchanged. A `send` that put part of a message on the
//! platform comes back with those message ids, as locally.
//!
//! Request: `{"op", "line", "args"}` (`args`: the op's request object).
//! Answer: `{"ok": …}` or `{"error": {"code", "message", "extra"}, "sent"}`.
//! After a `send` is logged, `{"op": "record", "line", "id", "messageIds"}`
//! is published (no answer) so the owning station's id map learns it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::names;
use crate::proto::{self, Download, Edit, ErrorCode, React, WireError};
use crate::station::{Op, Registry, SendFailure, Sent, Station, StationKind};

/// How long a node waits for the owning node's answer. A Telegram send
/// may wait out a rate limit first.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(60);
/// Requests a node serves at once; more answer `unavailable`.
pub const MAX_IN_FLIGHT: usize = 64;

#[derive(Serialize, Deserialize)]
struct Request {
    op: String,
    line: String,
    #[serde(default)]
    args: Value,
}

#[derive(Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct WireSent {
    #[serde(default)]
    message_ids: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reply_to: Option<String>,
}

impl From<&Sent> for WireSent {
    fn from(s: &Sent) -> Self {
        WireSent {
            message_ids: s.message_ids.clone(),
            reply_to: s.reply_to.clone(),
        }
    }
}

impl From<WireSent> for Sent {
    fn from(s: WireSent) -> Self {
        Sent {
            message_ids: s.message_ids,
            reply_to: s.reply_to,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct WireErr {
    code: ErrorCode,
    message: String,
    #[serde(default)]
    extra: Map<String, Value>,
}

#[derive(Serialize, Deserialize)]
struct Answer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ok: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<WireErr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sent: Option<WireSent>,
}

fn failed(e: WireError, sent: Option<&Sent>) -> Answer {
    Answer {
        ok: None,
        error: Some(WireErr {
            code: e.code,
            message: e.message,
            extra: e.extra,
        }),
        sent: sent.map(WireSent::from),
    }
}

/// The stand-in for `kind`'s station running on `node`.
pub struct Remote {
    kind: Arc<dyn StationKind>,
    node: String,
    client: async_nats::Client,
}

impl Remote {
    pub fn new(kind: Arc<dyn StationKind>, node: String, client: async_nats::Client) -> Remote {
        Remote { kind, node, client }
    }

    /// Sends `op` to the owning node; its answer, or why there is none.
    async fn call(&self, op: &str, line: &str, args: Value) -> Result<Answer, WireError> {
        let req = Request {
            op: op.to_string(),
            line: line.to_string(),
            args,
        };
        let body = serde_json::to_vec(&req)
            .map_err(|e| WireError::internal(format!("cannot encode the request: {e}")))?;
        let name = self.kind.name();
        let node = &self.node;
        let request = async_nats::Request::new()
            .payload(Bytes::from(body))
            .timeout(Some(RPC_TIMEOUT));
        let msg = self
            .client
            .send_request(names::rpc_subject(node), request)
            .await
            .map_err(|e| {
                use async_nats::RequestErrorKind as K;
                match e.kind() {
                    K::TimedOut => WireError::unavailable(format!(
                        "the {name} station runs on node {node}, which did not answer within {} s; \
                         the {op} may or may not have happened",
                        RPC_TIMEOUT.as_secs(),
                    )),
                    K::NoResponders => WireError::unavailable(format!(
                        "the {name} station runs on node {node}, which does not answer (stopped or \
                         cut off?); another node takes the station over within the lease time"
                    )),
                    K::MaxPayloadExceeded => WireError::new(
                        ErrorCode::TooLarge,
                        format!(
                            "the {op} is larger than the NATS server carries (max_payload) to node \
                             {node}, which runs the {name} station"
                        ),
                    ),
                    _ => WireError::unavailable(format!(
                        "cannot reach node {node}, which runs the {name} station: {e}"
                    )),
                }
            })?;
        serde_json::from_slice::<Answer>(&msg.payload).map_err(|e| {
            WireError::internal(format!(
                "node {node} answered the {op} with something unreadable: {e}"
            ))
        })
    }

    /// The answer's value, or its error unchanged.
    fn value(a: Answer) -> Result<Value, WireError> {
        match (a.ok, a.error) {
            (Some(v), None) => Ok(v),
            (_, Some(e)) => Err(WireError {
                code: e.code,
                message: e.message,
                extra: e.extra,
            }),
            (None, None) => Err(WireError::internal("an empty answer from another node")),
        }
    }

    fn args<T: Serialize>(x: &T) -> Result<Value, WireError> {
        serde_json::to_value(x)
            .map_err(|e| WireError::internal(format!("cannot encode the request: {e}")))
    }

    fn message_id(v: Value) -> Result<String, WireError> {
        v["messageId"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| WireError::internal("another node's answer has no messageId"))
    }
}

#[async_trait::async_trait]
impl Station for Remote {
    fn name(&self) -> &str {
        self.kind.name()
    }

    fn platform(&self) -> Option<&'static str> {
        self.kind.platform()
    }

    /// The owning node refuses what its station does not serve.
    fn supports(&self, _op: Op) -> bool {
        true
    }

    async fn send(&self, line: &str, s: &proto::Send) -> Result<Sent, SendFailure> {
        let a = self.call(Op::Send.as_str(), line, Self::args(s)?).await?;
        match (a.ok, a.error) {
            (Some(v), None) => serde_json::from_value::<WireSent>(v)
                .map(Sent::from)
                .map_err(|e| {
                    WireError::internal(format!("another node's send answer is unreadable: {e}"))
                        .into()
                }),
            (_, Some(e)) => Err(SendFailure {
                error: WireError {
                    code: e.code,
                    message: e.message,
                    extra: e.extra,
                },
                sent: a.sent.map(Sent::from).unwrap_or_default(),
            }),
            (None, None) => Err(WireError::internal("an empty answer from another node").into()),
        }
    }

    async fn edit(&self, line: &str, e: &Edit) -> Result<String, WireError> {
        let v = Self::value(self.call(Op::Edit.as_str(), line, Self::args(e)?).await?)?;
        Self::message_id(v)
    }

    async fn react(&self, line: &str, r: &React) -> Result<String, WireError> {
        let v = Self::value(self.call(Op::React.as_str(), line, Self::args(r)?).await?)?;
        Self::message_id(v)
    }

    async fn download(&self, line: &str, d: &Download) -> Result<Vec<String>, WireError> {
        let v = Self::value(
            self.call(Op::Download.as_str(), line, Self::args(d)?)
                .await?,
        )?;
        serde_json::from_value(v["files"].clone())
            .map_err(|e| WireError::internal(format!("another node's files are unreadable: {e}")))
    }

    /// `fetch` from the platform's history, through the owning node;
    /// `None` when that station lets metro's log answer.
    async fn fetch(&self, line: &str, limit: u64) -> Option<Result<Vec<Bytes>, WireError>> {
        let answer = match self.call("fetch", line, json!({ "limit": limit })).await {
            Ok(a) => a,
            Err(e) => return Some(Err(e)),
        };
        let v = match Self::value(answer) {
            Ok(v) => v,
            Err(e) => return Some(Err(e)),
        };
        if v["log"] == json!(true) {
            return None;
        }
        let events: Result<Vec<String>, _> = serde_json::from_value(v["events"].clone());
        Some(
            events
                .map(|e| e.into_iter().map(Bytes::from).collect())
                .map_err(|e| {
                    WireError::internal(format!("another node's fetch answer is unreadable: {e}"))
                }),
        )
    }

    /// Tells the owning station the platform ids of a logged send (no
    /// answer awaited: the id map is a cache; the log is the truth).
    fn record(&self, id: &str, line: &str, sent: &Sent) {
        let body = json!({
            "op": "record",
            "line": line,
            "args": {"id": id, "messageIds": sent.message_ids, "replyTo": sent.reply_to},
        });
        let client = self.client.clone();
        let subject = names::rpc_subject(&self.node);
        tokio::spawn(async move {
            let _ = client.publish(subject, Bytes::from(body.to_string())).await;
        });
    }

    fn row(&self) -> Value {
        json!({
            "name": self.kind.name(),
            "enabled": false,
            "status": format!("standby: runs on node {}", self.node),
            "capabilities": [],
            "node": self.node,
        })
    }

    fn any(self: Arc<Self>) -> Arc<dyn std::any::Any + Send + Sync> {
        self
    }
}

/// Answers the outbound ops other nodes send to this one, until
/// `shutdown` (reconnects are the client's business: the subscription
/// survives them).
pub async fn serve(
    client: async_nats::Client,
    node: String,
    registry: Arc<Registry>,
    shutdown: CancellationToken,
) {
    let subject = names::rpc_subject(&node);
    let mut sub = loop {
        match client.subscribe(subject.clone()).await {
            Ok(s) => break s,
            Err(e) => {
                tracing::warn!("cluster: cannot subscribe to {subject}: {e}");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
        }
    };
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    loop {
        let msg = tokio::select! {
            m = sub.next() => m,
            _ = shutdown.cancelled() => return,
        };
        let Some(msg) = msg else { return };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            if let Some(reply) = msg.reply {
                let busy = failed(
                    WireError::unavailable(format!(
                        "node {node} is serving {MAX_IN_FLIGHT} ops for other nodes; try again"
                    )),
                    None,
                );
                let _ = client.publish(reply, encode(&busy)).await;
            }
            continue;
        };
        let client = client.clone();
        let registry = registry.clone();
        tokio::spawn(async move {
            let answer = answer(&registry, &msg.payload).await;
            if let (Some(reply), Some(answer)) = (msg.reply, answer) {
                let _ = client.publish(reply, encode(&answer)).await;
            }
            drop(permit);
        });
    }
}

fn encode(a: &Answer) -> Bytes {
    Bytes::from(serde_json::to_vec(a).unwrap_or_else(|_| b"{}".to_vec()))
}

fn parse<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, WireError> {
    serde_json::from_value(v).map_err(|e| WireError::bad_request(e.to_string()))
}

/// What the station running here answers (`None`: a `record`, which has
/// no answer).
async fn answer(registry: &Registry, payload: &[u8]) -> Option<Answer> {
    let req: Request = match serde_json::from_slice(payload) {
        Ok(r) => r,
        Err(e) => {
            return Some(failed(
                WireError::bad_request(format!("not a request from a metrod node: {e}")),
                None,
            ))
        }
    };
    let line = match crate::line::line(&req.line) {
        Ok(l) => l,
        Err(e) => {
            return Some(failed(
                WireError::bad_request(format!("field `line`: {e}")),
                None,
            ))
        }
    };
    let station = match registry.local(&line) {
        Ok(s) => s,
        Err(e) => return Some(failed(e, None)),
    };
    let ok = |v: Value| Answer {
        ok: Some(v),
        error: None,
        sent: None,
    };
    let result = match req.op.as_str() {
        "record" => {
            #[derive(Deserialize)]
            #[serde(rename_all = "camelCase")]
            struct Rec {
                id: String,
                #[serde(default)]
                message_ids: Vec<String>,
                #[serde(default)]
                reply_to: Option<String>,
            }
            if let Ok(r) = serde_json::from_value::<Rec>(req.args) {
                let sent = Sent {
                    message_ids: r.message_ids,
                    reply_to: r.reply_to,
                };
                station.record(&r.id, &line, &sent);
            }
            return None;
        }
        "send" => match parse::<proto::Send>(req.args) {
            Ok(_) if !station.supports(Op::Send) => Err(station.refuse(Op::Send, &line)),
            Ok(s) => match station.send(&line, &s).await {
                Ok(sent) => Ok(json!(WireSent::from(&sent))),
                Err(SendFailure { error, sent }) => return Some(failed(error, Some(&sent))),
            },
            Err(e) => Err(e),
        },
        "edit" => match parse::<Edit>(req.args) {
            Ok(e) if station.supports(Op::Edit) => station
                .edit(&line, &e)
                .await
                .map(|m| json!({ "messageId": m })),
            Ok(_) => Err(station.refuse(Op::Edit, &line)),
            Err(e) => Err(e),
        },
        "react" => match parse::<React>(req.args) {
            Ok(r) if station.supports(Op::React) => station
                .react(&line, &r)
                .await
                .map(|m| json!({ "messageId": m })),
            Ok(_) => Err(station.refuse(Op::React, &line)),
            Err(e) => Err(e),
        },
        "download" => match parse::<Download>(req.args) {
            Ok(d) if station.supports(Op::Download) => station
                .download(&line, &d)
                .await
                .map(|f| json!({ "files": f })),
            Ok(_) => Err(station.refuse(Op::Download, &line)),
            Err(e) => Err(e),
        },
        "fetch" => {
            let limit = req.args["limit"].as_u64().unwrap_or(0);
            match station.fetch(&line, limit).await {
                None => Ok(json!({ "log": true })),
                Some(Ok(events)) => Ok(json!({
                    "events": events
                        .iter()
                        .map(|e| String::from_utf8_lossy(e).into_owned())
                        .collect::<Vec<_>>()
                })),
                Some(Err(e)) => Err(e),
            }
        }
        other => Err(WireError::new(
            ErrorCode::UnknownOp,
            format!("unknown op {other:?} between nodes"),
        )),
    };
    Some(match result {
        Ok(v) => ok(v),
        Err(e) => failed(e, None),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_crosses_unchanged() {
        let e = WireError::new(ErrorCode::Conflict, "taken").with("owner", "metro://x/y");
        let a = failed(
            e,
            Some(&Sent {
                message_ids: vec!["7".into()],
                reply_to: None,
            }),
        );
        let back: Answer = serde_json::from_slice(&encode(&a)).unwrap();
        let err = Remote::value(back).unwrap_err();
        assert_eq!(err.code, ErrorCode::Conflict);
        assert_eq!(err.message, "taken");
        assert_eq!(err.extra["owner"], "metro://x/y");
        let a: Answer = serde_json::from_slice(&encode(&failed(
            WireError::unavailable("x"),
            Some(&Sent {
                message_ids: vec!["7".into()],
                reply_to: Some("3".into()),
            }),
        )))
        .unwrap();
        assert_eq!(a.sent.unwrap().message_ids, vec!["7".to_string()]);
    }
}
