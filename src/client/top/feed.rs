//! What `metroctl top` hears from metrod, on two threads that send
//! [`Msg`]s to the terminal loop: the poller asks `stats`, `stations`,
//! `lines` and `claims` once a second; the reader seeds the events pane
//! with `history` and follows the log with a subscription that has no
//! identity and no cursor name and `ack: "none"`, so it moves no cursor and
//! claims nothing. Both survive metrod going away: they say so
//! ([`Msg::Down`]) and connect again.

use std::path::{Path, PathBuf};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use super::model::{Snapshot, Top, RECENT_EVENTS};
use crate::client::conn::Connection;
use crate::client::follow::{Follow, Item, StopReason, Stopper};
use crate::client::CliError;
use crate::proto::{self, AckMode, Request, Since};

/// How often the poller asks, and how long a thread waits before it
/// connects again.
pub const PERIOD: Duration = Duration::from_secs(1);

/// Why [`follow_once`] returned.
enum Ended {
    /// top is gone.
    Gone,
    /// [`Restart::now`] was called.
    Restart,
}

/// Asks the subscription to start over (from the oldest cursor in reach):
/// holds the [`Stopper`] of the current one.
#[derive(Clone, Default)]
pub struct Restart(Arc<Mutex<Option<Stopper>>>);

impl Restart {
    /// Never blocks: the stop is handed over by a short-lived thread, as
    /// the subscription's channel may be full while its thread waits for
    /// the terminal loop, the caller.
    pub fn now(&self) {
        let stopper = self.0.lock().ok().and_then(|s| s.clone());
        if let Some(s) = stopper {
            let _ = std::thread::Builder::new()
                .name("metroctl-top-restart".into())
                .spawn(move || s.stop(StopReason::Asked));
        }
    }

    fn watch(&self, stopper: Option<Stopper>) {
        if let Ok(mut s) = self.0.lock() {
            *s = stopper;
        }
    }
}

pub enum Msg {
    Snapshot(Box<Snapshot>),
    /// The subscription starts (again) at `.0`; `.1` was the log end when
    /// `history` was asked.
    Subscribed(u64, u64),
    /// A `history` answer's entries, newest first.
    Seed(Vec<Value>),
    Event(u64, Value),
    Gap(u64),
    Down(String),
    /// A signal asks top to end.
    Stop,
}

/// What the person reads when metrod cannot be reached.
fn down(e: &CliError) -> String {
    match e {
        CliError::NotRunning { socket, cause } => format!(
            "metrod not running ({}: {cause}); retrying every second",
            socket.display()
        ),
        other => format!("metrod went away ({other}); retrying every second"),
    }
}

fn snapshot(conn: &mut Connection) -> Result<Snapshot, CliError> {
    Ok(Snapshot {
        stats: conn.call(&Request::Stats)?,
        stations: conn.call(&Request::Stations)?,
        lines: conn.call(&Request::Lines)?,
        claims: conn.call(&Request::Claims)?,
    })
}

/// Starts both threads; they end when the receiver is gone.
pub fn start(socket: &Path, tx: SyncSender<Msg>) -> Result<Restart, CliError> {
    let restart = Restart::default();
    let (s, t) = (socket.to_path_buf(), tx.clone());
    std::thread::Builder::new()
        .name("metroctl-top-poll".into())
        .spawn(move || poll(s, t))
        .map_err(CliError::Io)?;
    let (s, r) = (socket.to_path_buf(), restart.clone());
    std::thread::Builder::new()
        .name("metroctl-top-follow".into())
        .spawn(move || follow(s, tx, r))
        .map_err(CliError::Io)?;
    Ok(restart)
}

fn poll(socket: PathBuf, tx: SyncSender<Msg>) {
    let mut conn: Option<Connection> = None;
    loop {
        let result = match conn.as_mut() {
            Some(c) => snapshot(c),
            None => Connection::open(&socket).and_then(|mut c| {
                let s = snapshot(&mut c);
                conn = Some(c);
                s
            }),
        };
        let msg = match result {
            Ok(s) => Msg::Snapshot(Box::new(s)),
            Err(e) => {
                conn = None;
                Msg::Down(down(&e))
            }
        };
        if tx.send(msg).is_err() {
            return;
        }
        std::thread::sleep(PERIOD);
    }
}

/// One subscription from a fresh start: `stats` for where to start,
/// `history` for the events pane, then the events until metrod refuses to
/// go on (a reconnect inside [`Follow`] resumes where it stopped).
fn follow_once(socket: &Path, tx: &SyncSender<Msg>, restart: &Restart) -> Result<Ended, CliError> {
    let mut conn = Connection::open(socket)?;
    let stats = conn.call(&Request::Stats)?;
    let since = Top::start_offset(&stats);
    let end = stats["logBytes"].as_u64().unwrap_or(since);
    let history = conn.call(&Request::History(proto::History {
        limit: Some(RECENT_EVENTS as u64),
        ..Default::default()
    }))?;
    drop(conn);
    let request = proto::Subscribe {
        follow: Some(true),
        ack: Some(AckMode::None),
        since: Some(Since::Offset(since)),
        ..Default::default()
    };
    let mut sub = Follow::open(socket, request, true)?;
    restart.watch(Some(sub.stopper()));
    let entries = match history {
        Value::Object(mut m) => match m.remove("entries") {
            Some(Value::Array(a)) => a,
            _ => Vec::new(),
        },
        _ => Vec::new(),
    };
    for msg in [Msg::Subscribed(since, end), Msg::Seed(entries)] {
        if tx.send(msg).is_err() {
            return Ok(Ended::Gone);
        }
    }
    loop {
        let msg = match sub.next_item()? {
            Item::Event { offset, event } => Msg::Event(offset, event),
            Item::Gap { offset, .. } => Msg::Gap(offset),
            Item::Lost { cause } => Msg::Down(format!("metrod went away ({cause}); reconnecting")),
            Item::Stop(StopReason::Asked) => return Ok(Ended::Restart),
            Item::End { .. } | Item::Stop(_) => return Ok(Ended::Gone),
            Item::Resumed { .. } | Item::AckRefused(_) => continue,
        };
        if tx.send(msg).is_err() {
            return Ok(Ended::Gone);
        }
    }
}

fn follow(socket: PathBuf, tx: SyncSender<Msg>, restart: Restart) {
    loop {
        let e = match follow_once(&socket, &tx, &restart) {
            Ok(Ended::Restart) => continue,
            // top is gone (or the subscription ended, which a follow
            // without a limit does not).
            Ok(Ended::Gone) => return,
            Err(e) => e,
        };
        if tx.send(Msg::Down(down(&e))).is_err() {
            return;
        }
        std::thread::sleep(PERIOD);
    }
}
