//! The push stream: one `follow` subscription with explicit acks, from the
//! identity's durable cursor; each event becomes one
//! `notifications/claude/channel` notification and is acked only once that
//! notification has been written and flushed to stdout (rmcp answers
//! `send_notification` after the transport's flush). A bridge killed in the
//! middle of a burst therefore gets every event it had not acked again.
//!
//! When metrod is not there, or goes away, the stream says so once on
//! stderr and reconnects with backoff, resuming from the cursor.
//!
//! TODO(lead): the `client` branch (issue 12, part 6) adds a reconnecting
//! subscription in src/client/ for `tail --follow`; once it lands this loop
//! should share it instead of keeping its own.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rmcp::model::{CustomNotification, ServerNotification};
use rmcp::{Peer, RoleServer};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::relay::{self, Relay};
use super::{content, tools};
use crate::proto::{self, Ack, Request, Subscribe};

/// First wait before reconnecting; doubled up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

pub const CHANNEL: &str = "notifications/claude/channel";
pub const PERMISSION: &str = "notifications/claude/channel/permission";

/// What the stream needs: where metrod is, what to subscribe to, who we are.
pub struct Stream {
    pub socket: PathBuf,
    /// The `subscribe` request.
    pub subscribe: Subscribe,
    pub me: String,
    pub relay: Option<Arc<Relay>>,
}

/// Why one connection's stream ended.
enum Ended {
    /// The MCP client is gone: stop.
    Client,
    /// metrod went away: reconnect.
    Daemon(String),
    /// metrod refused the subscription: retrying cannot help.
    Refused(String),
}

fn say(msg: &str) {
    eprintln!("metroctl mcp: {msg}");
}

/// Runs until the MCP client goes away.
pub async fn run(stream: Arc<Stream>, peer: Peer<RoleServer>) {
    let mut backoff = MIN_BACKOFF;
    let mut down = false;
    loop {
        match UnixStream::connect(&stream.socket).await {
            Ok(conn) => {
                if let Err(e) = crate::client::conn::check_peer(&conn, &stream.socket) {
                    say(&format!("nothing will be pushed: {e}"));
                    return;
                }
                if down {
                    say("metrod is back; resuming from the cursor");
                }
                match session(&stream, &peer, conn).await {
                    Ended::Client => return,
                    Ended::Refused(why) => {
                        say(&format!(
                            "metrod refused the subscription, nothing will be pushed: {why}"
                        ));
                        return;
                    }
                    Ended::Daemon(why) => {
                        say(&format!("lost metrod ({why}); reconnecting"));
                        down = true;
                        backoff = MIN_BACKOFF;
                    }
                }
            }
            Err(e) => {
                if !down {
                    say(&format!(
                        "metrod is not running ({}: {e}); retrying until it is",
                        stream.socket.display()
                    ));
                    down = true;
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn write_frame(
    w: &mut tokio::net::unix::OwnedWriteHalf,
    request: &Request,
    req: u64,
) -> std::io::Result<()> {
    let mut line = crate::client::conn::request_line(request, req)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    line.push(b'\n');
    w.write_all(&line).await
}

async fn notify(peer: &Peer<RoleServer>, method: &str, params: Value) -> bool {
    peer.send_notification(ServerNotification::CustomNotification(
        CustomNotification::new(method, Some(params)),
    ))
    .await
    .is_ok()
}

/// Reads metrod's next line into `line`; its end or a read error ends the
/// session.
async fn next_line(
    reader: &mut BufReader<tokio::net::unix::OwnedReadHalf>,
    line: &mut String,
) -> Result<(), Ended> {
    line.clear();
    match reader.read_line(line).await {
        Ok(0) => Err(Ended::Daemon("metrod closed the connection".into())),
        Ok(_) => Ok(()),
        Err(e) => Err(Ended::Daemon(e.to_string())),
    }
}

async fn session(stream: &Stream, peer: &Peer<RoleServer>, conn: UnixStream) -> Ended {
    let (r, mut w) = conn.into_split();
    let mut reader = BufReader::new(r);
    let mut line = String::new();
    if let Some(relay) = &stream.relay {
        // Which stations are chats, before any event can be an answer.
        if let Err(e) = write_frame(&mut w, &Request::Stations, 0).await {
            return Ended::Daemon(e.to_string());
        }
        loop {
            if let Err(end) = next_line(&mut reader, &mut line).await {
                return end;
            }
            let Ok(frame) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if frame["req"] != json!(0) {
                continue;
            }
            if frame["ok"] == json!(true) {
                relay.learn_stations(&frame["stations"]);
            } else {
                say(&format!(
                    "metrod did not list its stations ({}); no chat answers permission requests",
                    frame["error"]
                ));
            }
            break;
        }
    }
    let subscribe = Request::Subscribe(stream.subscribe.clone());
    if let Err(e) = write_frame(&mut w, &subscribe, 1).await {
        return Ended::Daemon(e.to_string());
    }
    let mut next_req: u64 = 2;
    let mut sub: Option<String> = None;
    loop {
        if let Err(end) = next_line(&mut reader, &mut line).await {
            return end;
        }
        let frame: Value = match serde_json::from_str(&line) {
            Ok(f) => f,
            Err(e) => {
                say(&format!("metrod sent a line that is not JSON: {e}"));
                continue;
            }
        };
        if frame.get("ok").is_some() {
            if frame["req"] == json!(1) {
                if frame["ok"] == json!(true) {
                    sub = frame["sub"].as_str().map(String::from);
                } else {
                    return Ended::Refused(format!(
                        "{}: {}",
                        frame["error"]["code"].as_str().unwrap_or("?"),
                        frame["error"]["message"].as_str().unwrap_or("")
                    ));
                }
            } else if frame["ok"] == json!(false) {
                say(&format!("ack refused: {}", frame["error"]));
            }
            continue;
        }
        let Some(sub_id) = sub.as_deref() else {
            continue;
        };
        if frame["sub"].as_str() != Some(sub_id) {
            continue;
        }
        if frame["gap"] == json!(true) {
            say(&format!(
                "{} bytes of history were deleted by retention before this session read them; resuming at offset {}",
                frame["missed"], frame["offset"]
            ));
            continue;
        }
        let Some(offset) = frame["offset"].as_u64() else {
            continue;
        };
        if frame["end"] == json!(true) {
            continue;
        }
        let event = &frame["event"];
        if !deliver(stream, peer, event).await {
            return Ended::Client;
        }
        // One ack per burst, once nothing more is waiting: it covers every
        // event notified before this one.
        if reader.buffer().is_empty() {
            let ack = Request::Ack(Ack {
                sub: sub_id.to_string(),
                offset,
            });
            let req = next_req;
            next_req += 1;
            if let Err(e) = write_frame(&mut w, &ack, req).await {
                return Ended::Daemon(e.to_string());
            }
        }
    }
}

/// Hands one event to the session; false when the client is gone.
async fn deliver(stream: &Stream, peer: &Peer<RoleServer>, event: &Value) -> bool {
    if let Some(relay) = &stream.relay {
        match relay.on_event(event) {
            relay::Answer::None => {}
            relay::Answer::Verdict {
                request_id,
                behavior,
            } => {
                let params = json!({"request_id": request_id, "behavior": behavior});
                return notify(peer, PERMISSION, params).await;
            }
            relay::Answer::Stale { request_id } => {
                let reply = Request::Send(proto::Send {
                    line: event["line"].as_str().unwrap_or_default().to_string(),
                    from: Some(stream.me.clone()),
                    text: format!("No permission request {request_id} is waiting (unknown or already answered)."),
                    no_claim: Some(true),
                    reply_to: event["messageId"].as_str().map(String::from),
                    ..Default::default()
                });
                let socket = stream.socket.clone();
                tokio::task::spawn_blocking(move || {
                    if let Err(e) = tools::call_blocking(&socket, reply) {
                        say(&format!(
                            "could not answer a stale approval: {}",
                            tools::error_text(&e)
                        ));
                    }
                });
                return true;
            }
        }
    }
    notify(peer, CHANNEL, content::channel_params(event)).await
}
