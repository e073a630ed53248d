//! Publishing this node's own events to the stream, driven by a durable
//! mark: `cluster-published` in the state dir holds the log offset up to
//! which the stream has acknowledged them.
//!
//! The publisher reads the local log from the mark, publishes each event
//! this node appended itself (no `node` field: replicas of other nodes'
//! events carry one) to `metro.events.<node>` with `Nats-Msg-Id` = its id,
//! waits for the stream's acknowledgements in order and moves the mark.
//! While the server is unreachable the mark stays, events wait in the log,
//! and publishing resumes from the mark when it returns: in log order, and
//! once by id (the stream drops a repeated `Nats-Msg-Id` within its
//! duplicate window; receivers skip ids they have). The mark is written at
//! most every [`MARK_EVERY`] and at shutdown: a crash repeats at most that
//! much, which the duplicate window absorbs.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::names;
use super::status::Status;
use crate::broker::Broker;

/// The mark's file in the state dir.
pub const MARK_FILE: &str = "cluster-published";
/// Least time between two writes of the mark.
const MARK_EVERY: Duration = Duration::from_millis(200);
/// Most publishes awaiting their acknowledgement at once.
const IN_FLIGHT: usize = 256;

#[derive(Deserialize)]
struct Head<'a> {
    #[serde(borrow, default)]
    id: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    node: Option<std::borrow::Cow<'a, str>>,
}

/// The mark on disk; a node joining for the first time starts at the
/// log's end (what it logged before joining stays local).
pub fn read_mark(dir: &Path, log_end: u64) -> std::io::Result<u64> {
    let path = dir.join(MARK_FILE);
    match crate::store::read_state(&path) {
        Ok(b) => {
            let text = String::from_utf8_lossy(&b);
            match text.trim().parse::<u64>() {
                Ok(n) => Ok(n.min(log_end)),
                Err(_) => {
                    tracing::warn!(
                        "{} does not hold an offset; publishing from the log's end",
                        path.display()
                    );
                    Ok(log_end)
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            crate::store::write_atomic(&path, log_end.to_string().as_bytes(), true)?;
            Ok(log_end)
        }
        Err(e) => Err(e),
    }
}

async fn write_mark(path: &Path, mark: u64) {
    let body = mark.to_string().into_bytes();
    if let Err(e) = crate::store::write_atomic_async(path.to_path_buf(), body, true).await {
        tracing::error!("cannot write {}: {e}", path.display());
    }
}

pub async fn run(
    broker: Arc<Broker>,
    js: async_nats::jetstream::Context,
    status: Arc<Status>,
    mut mark: u64,
    shutdown: CancellationToken,
) {
    let path: PathBuf = broker.state_dir.join(MARK_FILE);
    let subject = names::subject(&status.node);
    let mut end_rx = broker.log.watch_end();
    let mut saved = mark;
    let mut last_save = tokio::time::Instant::now();
    let mut backoff = Duration::from_millis(100);
    status.published_to.store(mark, Relaxed);
    loop {
        if shutdown.is_cancelled() {
            break;
        }
        if mark != saved && last_save.elapsed() >= MARK_EVERY {
            write_mark(&path, mark).await;
            saved = mark;
            last_save = tokio::time::Instant::now();
        }
        let end = *end_rx.borrow_and_update();
        if mark >= end {
            let wait = if mark != saved {
                MARK_EVERY
            } else {
                Duration::from_secs(3600)
            };
            tokio::select! {
                _ = end_rx.changed() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.cancelled() => break,
            }
            continue;
        }
        if !status.connected() {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = shutdown.cancelled() => break,
            }
            continue;
        }
        let oldest = broker.log.oldest();
        if mark < oldest {
            tracing::warn!(
                "cluster: events between offsets {mark} and {oldest} were deleted by retention before they were published"
            );
            mark = oldest;
        }
        let entries = match broker.log.read_from(mark, end).await {
            Ok(e) => e,
            Err(e) => {
                tracing::error!("cluster: cannot read the log at {mark}: {e}");
                status.error(format!("cannot read the log at {mark}: {e}"));
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.cancelled() => break,
                }
                continue;
            }
        };
        if entries.is_empty() {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = shutdown.cancelled() => break,
            }
            continue;
        }
        let batch = &entries[..entries.len().min(IN_FLIGHT)];
        match publish_batch(&js, &subject, mark, batch, &status).await {
            Ok(to) => {
                mark = to;
                backoff = Duration::from_millis(100);
            }
            Err((to, why)) => {
                mark = mark.max(to);
                tracing::warn!("cluster: publishing stopped at offset {mark}: {why}; retrying");
                status.error(format!("publishing stopped at offset {mark}: {why}"));
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.cancelled() => break,
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
        status.published_to.store(mark, Relaxed);
    }
    if mark != saved {
        write_mark(&path, mark).await;
    }
}

/// Publishes the own events among `entries` and waits for their
/// acknowledgements in order. Returns the offset reached; on a failure,
/// the offset reached before it and why.
async fn publish_batch(
    js: &async_nats::jetstream::Context,
    subject: &str,
    from: u64,
    entries: &[Arc<crate::store::log::Entry>],
    status: &Status,
) -> Result<u64, (u64, String)> {
    let mut acks = Vec::with_capacity(entries.len());
    for e in entries {
        let own = match serde_json::from_slice::<Head>(&e.json) {
            Ok(h) => match (h.id, h.node) {
                (Some(id), None) if !id.is_empty() => Some(id.into_owned()),
                _ => None,
            },
            Err(_) => None,
        };
        let Some(id) = own else {
            acks.push((e.end, None));
            continue;
        };
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, id.as_str());
        match js
            .publish_with_headers(subject.to_string(), headers, e.json.clone())
            .await
        {
            Ok(fut) => acks.push((e.end, Some(fut))),
            // Larger than the server's max_payload (1 MiB by default): it
            // would never go; it stays on this node, and publishing goes on.
            Err(err)
                if err.kind()
                    == async_nats::jetstream::context::PublishErrorKind::MaxPayloadExceeded =>
            {
                tracing::warn!(
                    "cluster: event {id} ({} bytes) is larger than the NATS server's max_payload: it stays on this node",
                    e.json.len()
                );
                status.too_large.fetch_add(1, Relaxed);
                acks.push((e.end, None));
            }
            Err(err) => {
                acks.push((e.end, None));
                // Everything sent before is awaited; this one is not.
                return finish(acks, from, status, Some(err.to_string())).await;
            }
        }
    }
    finish(acks, from, status, None).await
}

async fn finish(
    mut acks: Vec<(
        u64,
        Option<async_nats::jetstream::context::PublishAckFuture>,
    )>,
    start: u64,
    status: &Status,
    failed: Option<String>,
) -> Result<u64, (u64, String)> {
    // The last one was not sent when `failed`.
    let unsent = failed.as_ref().map(|_| acks.pop());
    let mut reached = start;
    for (end, fut) in acks {
        if let Some(fut) = fut {
            match fut.await {
                Ok(_) => {
                    status.published.fetch_add(1, Relaxed);
                }
                Err(e) => return Err((reached, e.to_string())),
            }
        }
        reached = end;
    }
    match (failed, unsent) {
        (Some(why), _) => Err((reached, why)),
        (None, _) => Ok(reached),
    }
}
