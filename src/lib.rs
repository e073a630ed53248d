//! metro: a local broker that lets several AI coding agents share one stream
//! of chat and webhook events.
//!
//! `metrod` owns an append-only event log (`history.jsonl`) and a claims map
//! (`claims.json`) and serves protocol v1 (JSON lines) on a Unix socket;
//! `metroctl` is its thin client. The data path reads top to bottom:
//!
//! - [`proto`]: the wire types shared by daemon and clients — requests (one
//!   variant per op), the event object, error codes, frame builders.
//! - [`line`]: line URIs (`metro://telegram/-100/42`): the grammar, the
//!   short form, and [`line::Platforms`], the stations whose lines are not
//!   agents' (built from the registered kinds; each kind checks the shape
//!   of its own lines).
//! - [`store`]: what is on disk — [`store::log`] (one writer, group commit,
//!   recovery, ring of recent entries, chunked reads), [`store::claims`]
//!   (snapshot + atomic `claims.json`), [`store::cursors`] (coalesced durable
//!   cursors), [`store::lines`] (recently seen conversations),
//!   [`store::hops`] and [`store::dedupe`] (the loop guard's hop index and
//!   the window of idempotency keys).
//! - [`broker`]: subscriptions — the delivery predicate, the per-subscription
//!   task that reads live from memory or catches up from the file, acks, and
//!   the byte-bounded per-connection outbox.
//! - [`server`]: the socket (bind `0600`, peer uid check), one task per
//!   connection (framing, in-flight requests, coalesced writes), and
//!   [`server::ops`], one file per group of ops.
//! - [`station`]: the seam between the core and the stations — the
//!   `Station` trait (inbound loop, send/edit/react/download/fetch, row,
//!   counters, allowlist, reconfigure), `StationKind` (how one is opened),
//!   `StationCtx` (the log handle, state dir, fsync policy, a config watch:
//!   all a station gets) and the `Registry` (line → station; start, stop,
//!   restart one at runtime; follows the config); [`station::access`], the
//!   allowlist with pairing codes; [`station::ingest`], the one inbound
//!   pipeline, and [`station::core`], the status, counters and recent keys
//!   it works on.
//! - [`stations`]: one folder per station behind that seam: local agent
//!   lines; [`stations::webhook`] — endpoints (`webhooks.json`) and the
//!   HTTP listener that turns each verified POST into one logged event;
//!   [`stations::telegram`] — the bot's long-poll loop (an update is
//!   confirmed only once its event is durable) and its outbound calls;
//!   [`stations::discord`] — serenity's gateway on its own thread, the
//!   ordered storing of its dispatches, REST through metro's queue;
//!   [`stations::queue`] and [`stations::ids`], the per-chat outbound
//!   queue and the id map the chat stations share.
//! - [`monitor`]: the read-only HTTP window for browsers on the webhook
//!   listener — `/api/state`, the SSE stream `/api/tail` (a subscription
//!   like any other) and the embedded page at `/`, behind a bearer token.
//! - [`cluster`]: several metrod nodes joined through NATS JetStream —
//!   one stream of events, one claims map (off unless configured).
//! - [`daemon`]: `metrod` — lock, open, serve, clean shutdown.
//! - [`service`]: running under a service manager — systemd socket
//!   activation and readiness notices, reloading the config.
//! - [`client`]: `metroctl` — one file per command group.
//! - [`config`]: the config file (station tokens, allowlists) and
//!   [`config::live`], the config in force.
//!
//! Dependencies run one way (docs/broker.md §1a; `scripts/module-cycles.py`
//! checks it): `proto`, `line`, `config` ← `store` ← `broker` ← `station`
//! ← `stations` ← `server` ← `daemon`.
//! - [`paths`], [`clock`]: default locations, timestamps.

pub mod broker;
pub mod client;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod daemon;
pub mod line;
pub mod monitor;
pub mod paths;
pub mod proto;
pub mod server;
pub mod service;
pub mod station;
pub mod stations;
pub mod store;
