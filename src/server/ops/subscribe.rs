//! `subscribe`, `ack`, `unsubscribe`, `cursor`.

use std::sync::Arc;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::{frame, OpResult, Reply};
use crate::broker::predicate::Filter;
use crate::broker::subscription::{self, SubState};
use crate::broker::Broker;
use crate::fields;
use crate::line;
use crate::proto::{
    Ack, AckMode, CursorQuery, ErrorCode, Mode, Since, Subscribe, Unsubscribe, WireError,
};
use crate::server::connection::Conn;

/// Redelivery delay for explicit acks when `ackWaitMs` is not given.
pub const DEFAULT_ACK_WAIT_MS: u64 = 30_000;

/// Longest durable cursor name accepted.
const MAX_CURSOR_NAME: usize = 200;

fn check_cursor_name(name: &str) -> Result<(), WireError> {
    if name.is_empty() || name.len() > MAX_CURSOR_NAME || name.chars().any(char::is_control) {
        return Err(WireError::bad_request(format!(
            "field `cursor`: a cursor name is 1 to {MAX_CURSOR_NAME} bytes without control characters"
        )));
    }
    // The name becomes a file name under cursors/: it must name a file.
    let file = crate::store::cursors::slug(name);
    if file.is_empty() || file == "." || file == ".." {
        return Err(WireError::bad_request(format!(
            "field `cursor`: {name:?} names no file (after `metro://` nothing is left); choose a name with some text"
        )));
    }
    Ok(())
}

pub(crate) struct Plan {
    pub(crate) filter: Filter,
    pub(crate) ack: AckMode,
    pub(crate) cursor_name: Option<String>,
    pub(crate) start: u64,
}

pub(crate) fn plan(broker: &Broker, s: &Subscribe) -> Result<Plan, WireError> {
    let as_ = s
        .as_
        .as_deref()
        .map(|a| line::identity(a).map_err(|e| WireError::bad_request(format!("field `as`: {e}"))))
        .transpose()?
        .flatten();
    let mode = s.mode.unwrap_or(if as_.is_some() {
        Mode::MineOrUnclaimed
    } else {
        Mode::All
    });
    if matches!(mode, Mode::MineOnly | Mode::MineOrUnclaimed) && as_.is_none() {
        return Err(WireError::bad_request(format!(
            "mode {} needs `as` (whose lines are \"mine\"?)",
            mode.as_str()
        )));
    }
    let chat = s
        .chat
        .as_deref()
        .map(|c| line::uri(c).map_err(|e| WireError::bad_request(format!("field `chat`: {e}"))))
        .transpose()?;
    if let Some(k) = &s.kind {
        super::events::check_kind(k)?;
    }
    if s.station.as_deref() == Some("") {
        return Err(WireError::bad_request("field `station` is empty"));
    }
    if s.ack_wait_ms == Some(0) {
        return Err(WireError::bad_request("field `ackWaitMs` must be positive"));
    }
    if s.max_deliver == Some(0) {
        return Err(WireError::bad_request(
            "field `maxDeliver` must be at least 1",
        ));
    }
    if s.limit == Some(0) {
        return Err(WireError::bad_request("field `limit` must be positive"));
    }
    if let Some(c) = &s.cursor {
        check_cursor_name(c)?;
    }
    let cursor_name = s.cursor.clone().or_else(|| as_.clone());
    let since = s.since.unwrap_or(if cursor_name.is_some() {
        Since::Cursor
    } else {
        Since::Start
    });
    let end = broker.log.end();
    let start = match since {
        Since::Start => 0,
        Since::Tail => end,
        Since::Cursor => match &cursor_name {
            Some(name) => broker.cursors.get(name).unwrap_or(0).min(end),
            None => {
                return Err(WireError::bad_request(
                    "since \"cursor\" needs `as` or `cursor` to name the cursor",
                ))
            }
        },
        Since::Offset(n) => {
            if n > end {
                return Err(WireError::bad_request(format!(
                    "since {n} is past the end of the log ({end})"
                )));
            }
            let boundary = n < broker.log.oldest()
                || broker
                    .log
                    .is_boundary(n)
                    .map_err(|e| WireError::internal(format!("could not read the log: {e}")))?;
            if !boundary {
                return Err(WireError::bad_request(format!(
                    "since {n} is not at an entry boundary (use 0, an `offset` from an event frame, or a stored cursor)"
                )));
            }
            n
        }
        // `subscribe` resolves a time off the runtime first; other callers
        // (none today) search here: bounded reads (store::log::seek).
        Since::Time(ms) => broker
            .log
            .offset_at_time(ms)
            .map_err(|e| WireError::internal(format!("could not read the log: {e}")))?,
    };
    Ok(Plan {
        filter: Filter {
            as_,
            mode,
            include_webhooks: s.include_webhooks.unwrap_or(false),
            chat,
            station: s.station.clone(),
            kind: s.kind.clone(),
            echo: s.echo.unwrap_or(false),
        },
        ack: s.ack.unwrap_or(AckMode::Auto),
        cursor_name,
        start,
    })
}

pub async fn subscribe(conn: &Arc<Conn>, req: Option<Value>, mut s: Subscribe) -> Reply {
    let broker = conn.broker.clone();
    // A time becomes the offset where it starts: a few reads of the log, on
    // the blocking pool.
    if let Some(Since::Time(ms)) = s.since {
        let b = broker.clone();
        let found = tokio::task::spawn_blocking(move || b.log.offset_at_time(ms))
            .await
            .map_err(std::io::Error::other)
            .and_then(|r| r);
        match found {
            Ok(offset) => s.since = Some(Since::Offset(offset)),
            Err(e) => {
                let err = WireError::internal(format!("could not read the log: {e}"));
                return Reply::Now(frame(req.as_ref(), Err(err)));
            }
        }
    }
    let plan = match plan(&broker, &s) {
        Ok(p) => p,
        Err(e) => return Reply::Now(frame(req.as_ref(), Err(e))),
    };
    if conn.sub_count() >= broker.opts.max_subscriptions {
        let err = WireError::new(
            ErrorCode::Limit,
            format!(
                "this connection already has {} subscriptions (--max-subscriptions); unsubscribe one first",
                broker.opts.max_subscriptions
            ),
        );
        return Reply::Now(frame(req.as_ref(), Err(err)));
    }
    let id = conn.next_sub_id();
    let st = Arc::new(
        SubState::new(
            conn.id,
            id.clone(),
            plan.filter,
            plan.ack,
            plan.cursor_name,
            s.follow.unwrap_or(false),
            s.limit,
            broker.opts.max_unacked,
            std::time::Duration::from_millis(s.ack_wait_ms.unwrap_or(DEFAULT_ACK_WAIT_MS)),
            s.max_deliver,
            broker.cursors.clone(),
            plan.start,
        )
        .with_unacked_bytes(broker.opts.max_unacked_bytes),
    );
    let answer = frame(
        req.as_ref(),
        Ok(fields! { "sub" => id, "offset" => plan.start }),
    );
    if conn.out.send(answer, None).await.is_err() {
        return Reply::Sent;
    }
    let cancel = conn.stop.child_token();
    conn.add_sub(st.clone(), cancel.clone());
    let task_conn = conn.clone();
    conn.spawn(run(task_conn, st, plan.start, cancel));
    Reply::Sent
}

async fn run(conn: Arc<Conn>, st: Arc<SubState>, start: u64, cancel: CancellationToken) {
    let stopped = subscription::run(
        conn.broker.clone(),
        st.clone(),
        conn.out.clone(),
        start,
        cancel,
    )
    .await;
    match stopped {
        // The log could not be read: close the connection rather than leave
        // the client waiting on a subscription that will never move; it
        // reconnects and resumes from its cursor.
        subscription::Stopped::Failed => conn.stop.cancel(),
        subscription::Stopped::Ended if st.done() => {
            conn.remove_sub(&st.id);
        }
        _ => {}
    }
}

pub fn ack(conn: &Conn, a: Ack) -> OpResult {
    let st = conn.sub(&a.sub).ok_or_else(|| {
        WireError::not_found(format!("no subscription {:?} on this connection", a.sub))
    })?;
    let end = conn.broker.log.end();
    if a.offset > end {
        return Err(WireError::bad_request(format!(
            "offset {} is past the end of the log ({end})",
            a.offset
        )));
    }
    let cursor = st.ack(a.offset);
    if st.done() {
        conn.remove_sub(&a.sub);
    }
    Ok(fields! { "sub" => a.sub, "cursor" => cursor })
}

pub fn unsubscribe(conn: &Conn, u: Unsubscribe) -> OpResult {
    if conn.remove_sub(&u.sub) {
        Ok(fields! { "sub" => u.sub })
    } else {
        Err(WireError::not_found(format!(
            "no subscription {:?} on this connection",
            u.sub
        )))
    }
}

pub fn cursor(broker: &Broker, c: CursorQuery) -> OpResult {
    let as_ = c
        .as_
        .as_deref()
        .map(|a| line::identity(a).map_err(|e| WireError::bad_request(format!("field `as`: {e}"))))
        .transpose()?
        .flatten();
    let name = match (c.cursor, as_) {
        (Some(name), _) => {
            check_cursor_name(&name)?;
            name
        }
        (None, Some(a)) => a,
        (None, None) => {
            return Err(WireError::bad_request(format!(
                "cursor needs `as` (an identity; {} means none) or `cursor`",
                line::NO_IDENTITY
            )))
        }
    };
    let stored = broker.cursors.get(&name);
    Ok(fields! {
        "cursor" => name,
        "offset" => stored.unwrap_or(0),
        "stored" => stored.is_some(),
        "end" => broker.log.end(),
    })
}
