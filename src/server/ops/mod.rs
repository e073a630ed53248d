//! Request handlers, one file per group of ops, dispatched from one `match`.

mod access;
pub(crate) mod claims;
mod events;
mod guard;
pub(crate) mod info;
mod once;
mod outbound;
pub(crate) mod subscribe;
mod webhooks;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::connection::Conn;
use crate::proto::{error_frame, ok_frame, parse_request, published_frame, Request, WireError};

/// A boxed answer-to-be.
pub type Pending = Pin<Box<dyn Future<Output = Answer> + Send + 'static>>;

/// A finished answer frame, with the room it was built in when it reserved
/// the connection's whole budget first (large answers do).
pub struct Answer {
    pub bytes: Vec<u8>,
    pub room: Option<crate::broker::outbox::Room>,
    /// How many requests `bytes` answers (a group of publishes: several).
    pub requests: usize,
}

/// How a request is answered.
pub enum Reply {
    /// The answer frame, ready now.
    Now(Vec<u8>),
    /// The answer comes later; meanwhile the connection reads on.
    Later(Pending),
    /// The handler queued its answer itself (subscribe: the answer must
    /// precede the subscription's first event frame).
    Sent,
    /// A plain publish of a pipelining client, checked and ready to
    /// append: the connection queues it together with the other publishes
    /// of the same read before it reads on ([`group_answers`]).
    Append(Option<Value>, Box<crate::proto::Event>),
}

pub type OpResult = Result<Map<String, Value>, WireError>;

pub fn frame(req: Option<&Value>, result: OpResult) -> Vec<u8> {
    match result {
        Ok(fields) => ok_frame(req, fields),
        Err(e) => error_frame(req, &e),
    }
}

fn now(req: Option<Value>, result: OpResult) -> Reply {
    Reply::Now(frame(req.as_ref(), result))
}

fn later<F>(req: Option<Value>, fut: F) -> Reply
where
    F: Future<Output = OpResult> + Send + 'static,
{
    Reply::Later(Box::pin(async move {
        Answer {
            bytes: frame(req.as_ref(), fut.await),
            room: None,
            requests: 1,
        }
    }))
}

/// A publish's answer, written straight from what the log answered (no
/// field map is built for the commonest answer).
fn later_published<F>(req: Option<Value>, fut: F) -> Reply
where
    F: Future<Output = Result<crate::store::log::Appended, WireError>> + Send + 'static,
{
    Reply::Later(published_answer(req, fut))
}

/// The answer of one publish, written when its append is answered.
fn published_answer<F>(req: Option<Value>, fut: F) -> Pending
where
    F: Future<Output = Result<crate::store::log::Appended, WireError>> + Send + 'static,
{
    Box::pin(async move {
        Answer {
            bytes: publish_frame(req.as_ref(), fut.await),
            room: None,
            requests: 1,
        }
    })
}

/// A publish's answer frame: where its event landed, or why it did not.
fn publish_frame(
    req: Option<&Value>,
    result: Result<crate::store::log::Appended, WireError>,
) -> Vec<u8> {
    match result {
        Ok(a) => published_frame(req, &a.id, &a.ts, a.offset),
        Err(e) => error_frame(req, &e),
    }
}

/// The answers of publishes queued as one group ([`Reply::Append`],
/// `Log::send_group`): one buffer of frames, in the order of `reqs`.
pub fn group_answers(reqs: Vec<Option<Value>>, group: crate::store::log::Group) -> Pending {
    Box::pin(async move {
        let answers = group.answers().await;
        let requests = reqs.len();
        let mut bytes = Vec::with_capacity(requests * 96);
        for (req, answer) in reqs.iter().zip(answers) {
            let answer = answer.map_err(events::append_error);
            bytes.extend_from_slice(&publish_frame(req.as_ref(), answer));
        }
        Answer {
            bytes,
            room: None,
            requests,
        }
    })
}

/// A `history`/`fetch` answer: it waits for the connection's whole output
/// budget before reading the log, so answers being built or waiting never
/// pile up on a client that does not read.
fn later_entries<F>(conn: &Conn, req: Option<Value>, key: &'static str, fut: F) -> Reply
where
    F: Future<Output = Result<events::Entries, WireError>> + Send + 'static,
{
    let out = conn.out.clone();
    Reply::Later(Box::pin(async move {
        let room = out.reserve_all().await.ok();
        let bytes = match fut.await {
            Ok(entries) => events::entries_frame(req.as_ref(), key, &entries),
            Err(e) => error_frame(req.as_ref(), &e),
        };
        Answer {
            bytes,
            room,
            requests: 1,
        }
    }))
}

/// Runs one request line. `alone`: the client sent nothing else and has
/// nothing else in flight (see `connection.rs`'s `Reader`).
pub async fn dispatch(conn: &Arc<Conn>, line: &[u8], alone: bool) -> Reply {
    let (req, request) = match parse_request(line) {
        Ok(r) => r,
        Err(fail) => return Reply::Now(error_frame(fail.req.as_ref(), &fail.error)),
    };
    // Borrowed: both are shared by every connection, and a clone per
    // request moves their reference counts between the cores (profiled:
    // ≈ 5 % of the daemon's CPU at 16 × 64); an op that keeps them clones.
    let broker = &conn.broker;
    let stations = &conn.stations;
    match request {
        Request::Hello(h) => now(req, info::hello(broker, conn.id, h)),
        Request::Publish(p) => match events::prepare_publish(stations, p).map(Box::new) {
            // The hot path: without a key, nothing is copied or wrapped.
            Ok(event) => match event.idempotency_key.clone() {
                // A pipelined one may join the other publishes of its read.
                None if !alone => match events::ready(broker, stations, event) {
                    Ok(event) => Reply::Append(req, event),
                    Err(event) => later_published(
                        req,
                        events::publish(broker.clone(), stations.clone(), event, alone),
                    ),
                },
                None => later_published(
                    req,
                    events::publish(broker.clone(), stations.clone(), event, alone),
                ),
                key => {
                    let who = event.from.clone();
                    let op = futures_util::FutureExt::map(
                        events::publish(broker.clone(), stations.clone(), event, alone),
                        events::published,
                    );
                    later(req, once::once(broker.clone(), who, key, Box::pin(op)))
                }
            },
            Err(e) => now(req, Err(e)),
        },
        Request::History(h) => {
            later_entries(conn, req, "entries", events::history(broker.clone(), h))
        }
        Request::Fetch(f) => later_entries(
            conn,
            req,
            "messages",
            events::fetch(broker.clone(), stations.clone(), f),
        ),
        Request::Subscribe(s) => subscribe::subscribe(conn, req, s).await,
        Request::Ack(a) => now(req, subscribe::ack(conn, a)),
        Request::Unsubscribe(u) => now(req, subscribe::unsubscribe(conn, u)),
        Request::Cursor(c) => now(req, subscribe::cursor(broker, c)),
        Request::Claim(c) => later(
            req,
            claims::claim(broker.clone(), stations.clone(), conn.id, c),
        ),
        Request::Release(r) => later(req, claims::release(broker.clone(), r)),
        Request::Claims => now(req, claims::list(broker)),
        Request::Send(s) => {
            let (who, key) = (once::identity(s.from.as_deref()), s.idempotency_key.clone());
            let op = outbound::send(broker.clone(), stations.clone(), s);
            later(req, once::once(broker.clone(), who, key, Box::pin(op)))
        }
        Request::Edit(e) => {
            let (who, key) = (once::identity(e.from.as_deref()), e.idempotency_key.clone());
            let op = outbound::edit(broker.clone(), stations.clone(), e);
            later(req, once::once(broker.clone(), who, key, Box::pin(op)))
        }
        Request::React(r) => {
            let (who, key) = (once::identity(r.from.as_deref()), r.idempotency_key.clone());
            let op = outbound::react(broker.clone(), stations.clone(), r);
            later(req, once::once(broker.clone(), who, key, Box::pin(op)))
        }
        Request::Download(d) => later(req, outbound::download(stations.clone(), d)),
        Request::Lines => now(req, info::lines(broker)),
        Request::Stations => now(req, info::stations(stations)),
        Request::Stats => now(req, info::stats(broker, stations)),
        Request::WebhookAdd(a) => later(req, webhooks::add(stations.clone(), a)),
        Request::WebhookList => now(req, webhooks::list(stations)),
        Request::WebhookRemove(r) => later(req, webhooks::remove(stations.clone(), r)),
        Request::Allow(a) => later(req, access::allow(stations.clone(), a)),
        Request::Deny(d) => later(req, access::deny(stations.clone(), d)),
        Request::AllowList(q) => now(req, access::list(stations, q)),
    }
}
